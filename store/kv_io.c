/*
 * Values and attributes of single records: open/release, read, write,
 * setattr, fsync. The lock is dropped around every backend read; whatever
 * was looked up before is looked up again afterwards.
 */
#include <errno.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "store/tx.h"

/* A node reachable by id: in the tree, or removed but still open. */
struct kv_node *kv_node_live(struct kv_store *kv, uint64_t id)
{
	struct kv_node *n = kv_node_get(kv, id);

	/* Past its deadline a key is gone, as if unlinked, for every caller. */
	if (n && kv_node_expired(n, kv_now_ms())) {
		kv_expire(kv, n);
		n = kv_node_get(kv, id);
	}

	if (!n || ((n->flags & KV_NODE_DELETED) && !n->open_count))
		return NULL;
	return n;
}

/* A reference to a stored value that outlives the lock: only the fields a
 * backend reads, none of the owned pointers. */
static struct kv_meta value_ref(const struct kv_node *n)
{
	struct kv_meta ref = { 0 };

	ref.id = n->m.id;
	ref.size = n->m.size;
	ref.vver = n->m.vver;
	ref.stored_size = n->m.stored_size;
	ref.encoding = n->m.encoding;
	return ref;
}

/*
 * Tries of a read whose value version was superseded (flushed over) between
 * the copy of its reference and the backend read; each try reads the newer
 * one. Only a reader starved of CPU while flushes land back to back needs
 * more than one: after a few it yields, so that it is not preempted in the
 * middle of its read every time, and past the bound it gets EIO.
 */
#define READ_TRIES 64
#define READ_TRIES_BEFORE_YIELD 8

static void superseded(int tries)
{
	if (tries >= READ_TRIES_BEFORE_YIELD)
		sched_yield();
}

int kv_load_value(struct kv_store *kv, uint64_t id)
{
	for (int tries = 0; tries < READ_TRIES; tries++) {
		struct kv_node *n = kv_node_live(kv, id);
		struct kv_value *v = NULL;
		struct kv_meta ref;
		int ret;

		if (!n)
			return -ENOENT;
		if (n->value)
			return 0;
		if (!n->m.vver) {
			v = kv_value_new();
			if (!v)
				return -ENOMEM;
			kv_value_account(kv, n, v);
			return 0;
		}
		ref = value_ref(n);
		pthread_mutex_unlock(&kv->lock);
		if (!kv->backend->ops->caps.local_reads || ref.size > KV_INLINE_READ_MAX)
			kv_may_block();
		ret = kv->backend->ops->read_value(kv->backend, &ref, &v);
		/* Superseded by another mount: fetch its record first. */
		if (ret == -ESTALE) {
			kv_refresh(kv, 0, NULL, id);
			superseded(tries + 1);
		}
		pthread_mutex_lock(&kv->lock);
		if (ret == -ESTALE)
			continue;
		if (ret)
			return ret;
		n = kv_node_live(kv, id);
		if (n && !n->value && n->m.vver == ref.vver) {
			kv_value_account(kv, n, v);
			return 0;
		}
		kv_value_free(v);
	}
	return -EIO;
}

/* The value is no longer needed in memory once it is committed and closed. */
void kv_maybe_drop_value(struct kv_store *kv, struct kv_node *n)
{
	if (n->value && !n->open_count &&
	    !(n->flags & (KV_NODE_VALUE_DIRTY | KV_NODE_INFLIGHT)))
		kv_value_account(kv, n, NULL);
}

/* Records a change of n's value: dirty unless n has left the tree. */
void kv_value_changed(struct kv_store *kv, struct kv_node *n, uint64_t bytes)
{
	int64_t now = kv_now_ns();

	kv_cache_end(kv, n, true);
	n->m.size = kv_value_size(n->value);
	n->m.mtime_ns = n->m.ctime_ns = now;
	if (n->flags & KV_NODE_DELETED)
		return;
	n->flags |= KV_NODE_VALUE_DIRTY;
	/* Listed first, so that the bytes find its aux record. */
	kv_mark_dirty(kv, n);
	kv_add_dirty_bytes(kv, n, bytes);
	if (kv->dirty_bytes >= kv->opts.buffer_size / 2)
		pthread_cond_signal(&kv->flush_cond);
}

/* Sets n's size; with kv->lock held, which it may drop. */
static int set_size(struct kv_store *kv, uint64_t id, uint64_t size)
{
	struct kv_node *n;
	uint64_t old;
	int ret;

	if (size > kv->opts.max_value_size)
		return -EFBIG;
	n = kv_node_live(kv, id);
	if (!n)
		return -ENOENT;
	if (S_ISDIR(n->m.mode))
		return -EISDIR;
	old = n->m.size;
	if (size == 0) {
		struct kv_value *v = kv_value_new();

		if (!v)
			return -ENOMEM;
		kv_value_account(kv, n, v);
	} else {
		ret = kv_load_value(kv, id);
		if (ret)
			return ret;
		/* The lock was dropped: the key may have expired meanwhile. */
		n = kv_node_live(kv, id);
		if (!n || !n->value)
			return -ENOENT;
		old = kv_value_size(n->value);
		kv->buffer_bytes -= old;
		ret = kv_value_truncate(n->value, size);
		kv->buffer_bytes += kv_value_size(n->value);
		if (ret)
			return ret;
	}
	kv_value_changed(kv, n, size > old ? size - old : old - size);
	return 0;
}

int kv_open_file(struct kv_store *kv, uint64_t id, bool trunc)
{
	if (kv_is_tx_id(id))
		return kv_tx_open(kv, id, trunc);
	struct kv_node *n;
	int ret = 0;

	pthread_mutex_lock(&kv->lock);
	n = kv_node_live(kv, id);
	if (!n)
		ret = -ENOENT;
	else if (S_ISDIR(n->m.mode))
		ret = -EISDIR;
	else if (trunc && n->m.size)
		ret = set_size(kv, id, 0);
	if (!ret) {
		/* set_size may have dropped the lock. */
		n = kv_node_live(kv, id);
		if (n)
			n->open_count++;
		else
			ret = -ENOENT;
	}
	pthread_mutex_unlock(&kv->lock);
	return ret;
}

void kv_release_file(struct kv_store *kv, uint64_t id)
{
	/* Staged nodes live as long as their transaction. */
	if (kv_is_tx_id(id))
		return;
	struct kv_node *n;

	pthread_mutex_lock(&kv->lock);
	n = kv_node_get(kv, id);
	if (n && n->open_count && --n->open_count == 0) {
		if ((n->flags & KV_NODE_DELETED) &&
		    !(n->flags & (KV_NODE_ON_DIRTY | KV_NODE_INFLIGHT)))
			kv_node_free(kv, n);
		else
			kv_maybe_drop_value(kv, n);
	}
	pthread_mutex_unlock(&kv->lock);
}

ssize_t kv_read(struct kv_store *kv, uint64_t id, void *buf, size_t len, uint64_t off)
{
	if (kv_is_tx_id(id))
		return kv_tx_read(kv, id, buf, len, off);
	for (int tries = 0; tries < READ_TRIES; superseded(++tries)) {
		struct kv_node *n;
		struct kv_meta ref;
		ssize_t ret;

		pthread_mutex_lock(&kv->lock);
		n = kv_node_live(kv, id);
		/* What is read may be cached by the kernel (kv_cache.c). */
		if (n)
			n->flags |= KV_NODE_KPAGES;
		if (!n) {
			ret = -ENOENT;
		} else if (S_ISDIR(n->m.mode)) {
			ret = -EISDIR;
		} else if (!n->value && n->m.encoding != KV_ENC_NONE && n->open_count) {
			/* A compressed value is decoded once per open, not once
			 * per read call. */
			ret = kv_load_value(kv, id);
			pthread_mutex_unlock(&kv->lock);
			if (ret)
				return ret;
			continue;
		} else if (n->value) {
			ret = kv_value_read(n->value, buf, len, off);
		} else if (off >= n->m.size || !n->m.vver) {
			ret = 0;
		} else {
			ref = value_ref(n);
			if (len > n->m.size - off)
				len = n->m.size - off;
			pthread_mutex_unlock(&kv->lock);
			if (!kv->backend->ops->caps.local_reads || len > KV_INLINE_READ_MAX)
				kv_may_block();
			ret = kv->backend->ops->pread(kv->backend, &ref, buf, len, off);
			/* Superseded, maybe by another mount (kv_refresh: shared
			 * backends only): the next try reads the current one. */
			if (ret == -ESTALE) {
				kv_refresh(kv, 0, NULL, id);
				continue;
			}
			return ret;
		}
		pthread_mutex_unlock(&kv->lock);
		return ret;
	}
	return -EIO;
}

static ssize_t do_write(struct kv_store *kv, uint64_t id, const void *buf, size_t len,
			uint64_t off, bool may_wait)
{
	if (kv_is_tx_id(id))
		return kv_tx_write(kv, id, buf, len, off);
	struct kv_node *n;
	uint64_t old;
	ssize_t ret;

	pthread_mutex_lock(&kv->lock);
	/* Under the lock: a reload may change the limit. */
	ret = kv_clamp_write(kv->opts.max_value_size, off, &len);
	if (ret)
		goto out;
	n = kv_node_live(kv, id);
	if (!n) {
		ret = -ENOENT;
		goto out;
	}
	if (S_ISDIR(n->m.mode)) {
		ret = -EISDIR;
		goto out;
	}
	if (!(n->flags & KV_NODE_DELETED)) {
		ret = may_wait ? kv_wait_buffer(kv) : kv_buffer_room(kv);
		if (ret)
			goto out;
	}
	ret = kv_load_value(kv, id);
	if (ret)
		goto out;
	n = kv_node_live(kv, id);
	if (!n) {
		ret = -ENOENT;
		goto out;
	}
	old = kv_value_size(n->value);
	ret = kv_value_write(n->value, buf, len, off);
	kv->buffer_bytes += kv_value_size(n->value) - old;
	if (ret)
		goto out;
	kv_value_changed(kv, n, len);
	ret = (ssize_t)len;
out:
	pthread_mutex_unlock(&kv->lock);
	return ret;
}

ssize_t kv_write(struct kv_store *kv, uint64_t id, const void *buf, size_t len, uint64_t off)
{
	return do_write(kv, id, buf, len, off, true);
}

ssize_t kv_write_try(struct kv_store *kv, uint64_t id, const void *buf, size_t len, uint64_t off)
{
	return do_write(kv, id, buf, len, off, false);
}

bool kv_meta_setattr(struct kv_node_meta *m, const struct kv_setattr *sa, int64_t now)
{
	bool changed = sa->mask & ~(unsigned)(KV_SET_SIZE | KV_SET_KILL_SUIDGID);

	if (sa->mask & KV_SET_MODE)
		m->mode = (m->mode & S_IFMT) | (sa->mode & 07777);
	if (sa->mask & KV_SET_UID)
		m->uid = sa->uid;
	if (sa->mask & KV_SET_GID)
		m->gid = sa->gid;
	if (sa->mask & KV_SET_ATIME)
		m->atime_ns = sa->atime_ns;
	if (sa->mask & KV_SET_ATIME_NOW)
		m->atime_ns = now;
	if (sa->mask & KV_SET_MTIME)
		m->mtime_ns = sa->mtime_ns;
	if (sa->mask & KV_SET_MTIME_NOW)
		m->mtime_ns = now;
	if (sa->mask & KV_SET_KILL_SUIDGID) {
		uint32_t kill = S_ISUID | (m->mode & S_IXGRP ? S_ISGID : 0);

		if (m->mode & kill) {
			m->mode &= ~kill;
			changed = true;
		}
	}
	if (changed)
		m->ctime_ns = now;
	return changed;
}

int kv_setattr(struct kv_store *kv, uint64_t id, const struct kv_setattr *sa, struct kv_attr *out)
{
	if (kv_is_tx_id(id))
		return kv_tx_setattr(kv, id, sa, out);
	struct kv_node *n;
	int64_t now = kv_now_ns();
	int ret = 0;

	pthread_mutex_lock(&kv->lock);
	if (sa->mask & KV_SET_SIZE) {
		ret = set_size(kv, id, sa->size);
		if (ret)
			goto out;
	}
	n = kv_node_live(kv, id);
	if (!n) {
		ret = -ENOENT;
		goto out;
	}
	if (kv_meta_setattr(&n->m, sa, now) && !(n->flags & KV_NODE_DELETED))
		kv_mark_dirty(kv, n);
	kv_fill_attr(n, out);
out:
	pthread_mutex_unlock(&kv->lock);
	return ret;
}

int kv_kill_suidgid(struct kv_store *kv, uint64_t id, bool *killed)
{
	struct kv_setattr sa = { .mask = KV_SET_KILL_SUIDGID };
	struct kv_attr a;
	int ret = kv_getattr(kv, id, &a);

	*killed = false;
	if (ret || !(a.mode & (S_ISUID | S_ISGID)))
		return ret;
	/* KV_SET_KILL_SUIDGID looks again under the lock. */
	ret = kv_setattr(kv, id, &sa, &a);
	*killed = !ret;
	return ret;
}

int kv_fsync(struct kv_store *kv, uint64_t id)
{
	/* Staged data becomes durable when its transaction commits. */
	if (kv_is_tx_id(id))
		return 0;
	struct kv_node *n;
	int ret = 0;

	pthread_mutex_lock(&kv->lock);
	n = kv_node_live(kv, id);
	if (!n)
		ret = -ENOENT;
	else if (n->flags & (KV_NODE_ON_DIRTY | KV_NODE_INFLIGHT))
		ret = kv_wait_flushed(kv);
	pthread_mutex_unlock(&kv->lock);
	return ret;
}

int kv_flush(struct kv_store *kv)
{
	int ret;

	pthread_mutex_lock(&kv->lock);
	ret = kv_wait_flushed(kv);
	pthread_mutex_unlock(&kv->lock);
	return ret;
}
