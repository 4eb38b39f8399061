/*
 * The store: opening and closing, the tree of records and its namespace
 * operations (lookup, create, mkdir, unlink, rmdir, rename, setattr).
 * Reads and writes of values are in kv_io.c, the flusher in flusher.c.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "store/sync.h"
#include "store/tx.h"
#include "util/log.h"

#ifndef RENAME_NOREPLACE
#define RENAME_NOREPLACE (1 << 0)
#endif

static void (*_Atomic block_hook)(void);

void kv_set_block_hook(void (*fn)(void))
{
	atomic_store(&block_hook, fn);
}

void kv_may_block(void)
{
	void (*fn)(void) = atomic_load(&block_hook);

	if (fn)
		fn();
}

int64_t kv_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int64_t kv_mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

uint64_t kv_node_id_hash(const void *item)
{
	return htab_hash_u64(((const struct kv_node *)item)->m.id);
}

bool kv_node_id_match(const void *item, const void *key)
{
	return ((const struct kv_node *)item)->m.id == *(const uint64_t *)key;
}

static uint64_t name_hash(const char *name)
{
	return htab_hash_bytes(name, strlen(name), 0);
}

static uint64_t node_name_hash(const void *item)
{
	return name_hash(((const struct kv_node *)item)->m.name);
}

static bool node_name_match(const void *item, const void *key)
{
	return strcmp(((const struct kv_node *)item)->m.name, key) == 0;
}

struct kv_node *kv_node_get(struct kv_store *kv, uint64_t id)
{
	return htab_find(&kv->by_id, htab_hash_u64(id), &id);
}

struct kv_node *kv_child_get(struct kv_node *dir, const char *name)
{
	if (!dir->children)
		return NULL;
	return htab_find(dir->children, name_hash(name), name);
}

static bool is_dir(const struct kv_node *n)
{
	return S_ISDIR(n->m.mode);
}

int kv_check_name(const char *name)
{
	size_t len = strlen(name);

	if (len == 0 || strchr(name, '/') || strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
		return -EINVAL;
	if (len > KV_NAME_MAX)
		return -ENAMETOOLONG;
	return 0;
}

/* Length of the key naming n: its path below the root, without a leading '/'. */
size_t kv_key_len(const struct kv_node *n)
{
	size_t len = 0;

	for (; n && n->parent; n = n->parent)
		len += strlen(n->m.name) + (n->parent->parent ? 1 : 0);
	return len;
}

/* Length a child called name of dir would have as a key. */
static size_t child_key_len(const struct kv_node *dir, const char *name)
{
	size_t base = kv_key_len(dir);

	return base + (base ? 1 : 0) + strlen(name);
}

/* The longest key below dir, relative to dir ("a/b" for dir/a/b). */
size_t kv_subtree_max_len(const struct kv_node *dir)
{
	struct kv_node *c;
	size_t max = 0;

	if (!dir->children)
		return 0;
	for (size_t i = 0; (c = htab_next(dir->children, &i));) {
		size_t len = strlen(c->m.name);

		if (is_dir(c) && c->children && htab_count(c->children))
			len += 1 + kv_subtree_max_len(c);
		if (len > max)
			max = len;
	}
	return max;
}

static void expire_children(struct kv_store *kv, struct kv_node *dir);

void kv_value_account(struct kv_store *kv, struct kv_node *n, struct kv_value *newval)
{
	if (n->value)
		kv->buffer_bytes -= kv_value_size(n->value);
	kv_value_free(n->value);
	n->value = newval;
	if (newval)
		kv->buffer_bytes += kv_value_size(newval);
}

void kv_node_free(struct kv_store *kv, struct kv_node *n)
{
	if (!n)
		return;
	htab_remove(&kv->by_id, n);
	kv_value_account(kv, n, NULL);
	if (n->children) {
		htab_destroy(n->children);
		free(n->children);
	}
	kv_node_meta_clear(n);
	/* Bytes written and never committed leave the buffer's total with
	 * the node (those of unlisted nodes may have been credited to it). */
	if (n->aux)
		kv->dirty_bytes -= n->aux->dirty_bytes;
	free(n->aux);
	free(n);
}

/* Links n under dir by its name. */
int kv_node_attach(struct kv_node *dir, struct kv_node *n)
{
	int ret;

	/* nlink's count of subdirectories lives in dir's aux record. */
	if (is_dir(n) && !kv_node_aux(dir))
		return -ENOMEM;
	if (!dir->children) {
		dir->children = malloc(sizeof(*dir->children));
		if (!dir->children) {
			ret = -ENOMEM;
			goto out_trim;
		}
		htab_init(dir->children, node_name_hash, node_name_match);
	}
	ret = htab_insert(dir->children, n);
	if (ret)
		goto out_trim;
	n->parent = dir;
	n->m.parent = dir->m.id;
	if (is_dir(n))
		dir->aux->nsubdirs++;
	return 0;

out_trim:
	kv_node_aux_trim(dir);
	return ret;
}

int kv_dir_reserve(struct kv_node *dir, size_t more)
{
	if (!dir->children) {
		dir->children = malloc(sizeof(*dir->children));
		if (!dir->children)
			return -ENOMEM;
		htab_init(dir->children, node_name_hash, node_name_match);
	}
	return htab_reserve(dir->children, more);
}

void kv_node_detach(struct kv_node *n)
{
	struct kv_node *dir = n->parent;

	htab_remove(dir->children, n);
	if (is_dir(n))
		kv_node_subdir_gone(dir);
	n->parent = NULL;
}

void kv_fill_attr(const struct kv_node *n, struct kv_attr *a)
{
	a->id = n->m.id;
	a->parent = n->parent ? n->parent->m.id : 0;
	a->mode = n->m.mode;
	a->uid = n->m.uid;
	a->gid = n->m.gid;
	if (is_dir(n))
		a->nlink = 2 + kv_node_nsubdirs(n);
	else
		a->nlink = (n->flags & KV_NODE_DELETED) ? 0 : 1;
	a->size = n->m.size;
	a->atime_ns = n->m.atime_ns;
	a->mtime_ns = n->m.mtime_ns;
	a->ctime_ns = n->m.ctime_ns;
	a->btime_ns = n->m.btime_ns;
}

/* A directory's entries changed: its mtime and ctime move (POSIX). */
void kv_dir_touch(struct kv_store *kv, struct kv_node *dir, int64_t now)
{
	dir->m.mtime_ns = dir->m.ctime_ns = now;
	kv_mark_dirty(kv, dir);
}

/* Takes n out of the tree; frees it unless a handle, the flusher or an owed
 * DEL still needs it. */
void kv_node_remove(struct kv_store *kv, struct kv_node *n)
{
	/* Its deadline leaves with it (the heap entry goes stale). */
	if (kv_node_expires(n)) {
		kv->ttl_live--;
		n->aux->expires_ms = 0;
		kv_node_aux_trim(n);
	}
	/* Gone from every tag and query directory at once. */
	if (!is_dir(n))
		kv_tags_unindex_node(kv, n);
	kv_node_detach(n);
	n->flags |= KV_NODE_DELETED;
	if (is_dir(n))
		kv->ndirs--;
	else
		kv->nkeys--;
	/* An in-flight PUT may be about to create the record, and one that
	 * failed may have landed all the same (a timed-out command Redis ran
	 * later): then a DEL is owed too. */
	if (n->flags & (KV_NODE_COMMITTED | KV_NODE_INFLIGHT | KV_NODE_SENT)) {
		/* Writes through an open handle no longer reach the backend:
		 * their bytes must not hold buffer space either. */
		kv_take_dirty_bytes(kv, n);
		kv_mark_dirty(kv, n);
		return;
	}
	/* Never sent: nothing to delete in the backend. */
	if (n->flags & KV_NODE_ON_DIRTY) {
		kv_dirty_unlink(kv, n);
		kv_take_dirty_bytes(kv, n);
	}
	if (!n->open_count && !(n->flags & KV_NODE_INFLIGHT))
		kv_node_free(kv, n);
}

/* --- namespace operations ------------------------------------------------ */

/* The directory id names, or an error. */
static int get_dir(struct kv_store *kv, uint64_t id, struct kv_node **out)
{
	struct kv_node *n = kv_node_get(kv, id);

	if (!n || (n->flags & KV_NODE_DELETED))
		return -ENOENT;
	if (!is_dir(n))
		return -ENOTDIR;
	*out = n;
	return 0;
}

int kv_lookup(struct kv_store *kv, uint64_t parent, const char *name, struct kv_attr *out)
{
	if (kv_is_tx_id(parent))
		return kv_tx_lookup(kv, parent, name, out);
	struct kv_node *dir, *n;
	int ret;

	pthread_mutex_lock(&kv->lock);
	ret = get_dir(kv, parent, &dir);
	if (ret)
		goto out;
	n = kv_live_child(kv, dir, name);
	if (!n) {
		ret = strlen(name) > KV_NAME_MAX ? -ENAMETOOLONG : -ENOENT;
		goto out;
	}
	kv_fill_attr(n, out);
out:
	pthread_mutex_unlock(&kv->lock);
	return ret;
}

int kv_getattr(struct kv_store *kv, uint64_t id, struct kv_attr *out)
{
	if (kv_is_tx_id(id))
		return kv_tx_getattr(kv, id, out);
	struct kv_node *n;
	int ret = 0;

	pthread_mutex_lock(&kv->lock);
	n = kv_node_get(kv, id);
	if (n && kv_node_expired(n, kv_now_ms()))
		kv_expire(kv, n);
	n = kv_node_get(kv, id);
	if (!n || ((n->flags & KV_NODE_DELETED) && !n->open_count))
		ret = -ENOENT;
	else
		kv_fill_attr(n, out);
	pthread_mutex_unlock(&kv->lock);
	return ret;
}

/* Common part of mkdir and create: a new node under dir. */
static int node_create(struct kv_store *kv, struct kv_node *dir, const char *name, uint32_t mode,
		       uint32_t uid, uint32_t gid, uint64_t id, struct kv_node **out)
{
	struct kv_node *n;
	int64_t now = kv_now_ns();
	int ret;

	ret = kv_check_name(name);
	if (ret)
		return ret;
	if (child_key_len(dir, name) > KV_KEY_MAX)
		return -ENAMETOOLONG;
	n = kv_node_new_named(name);
	if (!n)
		return -ENOMEM;
	/* id: one reserved with a claim on the name (sync.h), or 0. */
	n->m.id = id;
	ret = id ? 0 : kv_sync_next_id(kv, &n->m.id);
	if (ret) {
		kv_node_meta_clear(n);
		free(n);
		return ret;
	}
	n->m.mode = mode;
	n->m.uid = uid;
	n->m.gid = gid;
	ret = kv_node_link_new(kv, dir, n, now);
	if (ret) {
		kv_node_meta_clear(n);
		free(n);
		return ret;
	}
	*out = n;
	return 0;
}

int kv_node_link_new(struct kv_store *kv, struct kv_node *dir, struct kv_node *n, int64_t now)
{
	int ret;

	n->m.atime_ns = n->m.mtime_ns = n->m.ctime_ns = n->m.btime_ns = now;
	ret = htab_insert(&kv->by_id, n);
	if (ret)
		return ret;
	ret = kv_node_attach(dir, n);
	if (ret) {
		htab_remove(&kv->by_id, n);
		return ret;
	}
	if (n->m.id > kv->max_id)
		kv->max_id = n->m.id;
	if (is_dir(n))
		kv->ndirs++;
	else
		kv->nkeys++;
	kv_mark_dirty(kv, n);
	kv_dir_touch(kv, dir, now);
	return 0;
}

int kv_node_create(struct kv_store *kv, struct kv_node *dir, const char *name, uint32_t mode,
		   uint32_t uid, uint32_t gid, struct kv_node **out)
{
	return node_create(kv, dir, name, mode, uid, gid, 0, out);
}

int kv_mkdir(struct kv_store *kv, uint64_t parent, const char *name, uint32_t mode, uint32_t uid,
	     uint32_t gid, struct kv_attr *out)
{
	if (kv_is_tx_id(parent))
		return kv_tx_make(kv, parent, name, mode, uid, gid, true, true, out);
	struct kv_node *dir, *n;
	uint64_t id = 0;
	bool claimed = false;
	int ret;

	/* Shared backends: the name is claimed across mounts first. */
	ret = kv_sync_claim(kv, parent, name, &id, &claimed);
	if (ret)
		return ret;
	pthread_mutex_lock(&kv->lock);
	ret = get_dir(kv, parent, &dir);
	if (ret)
		goto out;
	if (kv_live_child(kv, dir, name)) {
		ret = -EEXIST;
		goto out;
	}
	ret = node_create(kv, dir, name, S_IFDIR | (mode & 07777), uid, gid, id, &n);
	if (!ret && claimed)
		n->flags |= KV_NODE_SENT; /* a DEL releases the claim */
	if (!ret)
		kv_fill_attr(n, out);
out:
	pthread_mutex_unlock(&kv->lock);
	return ret;
}

int kv_create(struct kv_store *kv, uint64_t parent, const char *name, uint32_t mode, uint32_t uid,
	      uint32_t gid, bool excl, struct kv_attr *out)
{
	if (kv_is_tx_id(parent))
		return kv_tx_make(kv, parent, name, mode, uid, gid, excl, false, out);
	struct kv_node *dir, *n;
	uint64_t id = 0;
	bool claimed = false;
	int ret;

	if (excl) {
		ret = kv_sync_claim(kv, parent, name, &id, &claimed);
		if (ret)
			return ret;
	}
	pthread_mutex_lock(&kv->lock);
	ret = get_dir(kv, parent, &dir);
	if (ret)
		goto out;
	n = kv_live_child(kv, dir, name);
	if (n) {
		if (excl)
			ret = -EEXIST;
		else if (is_dir(n))
			ret = -EISDIR;
		else
			kv_fill_attr(n, out);
		goto out;
	}
	ret = node_create(kv, dir, name, S_IFREG | (mode & 07777), uid, gid, id, &n);
	if (!ret && claimed)
		n->flags |= KV_NODE_SENT; /* a DEL releases the claim */
	if (!ret && kv->opts.default_ttl_s) {
		ret = kv_set_deadline(kv, n,
				      kv_now_ms() + (int64_t)kv->opts.default_ttl_s * 1000);
		if (ret) /* no key without the TTL it should have */
			kv_node_remove(kv, n);
	}
	if (!ret)
		kv_fill_attr(n, out);
out:
	pthread_mutex_unlock(&kv->lock);
	return ret;
}

/* Before a key leaves the tree while open: its committed value will be
 * deleted with the record, so bring it into memory for the open handles.
 * May drop and retake the lock. */
static int keep_value_for_handles(struct kv_store *kv, uint64_t id)
{
	struct kv_node *n = kv_node_get(kv, id);

	if (!n || !n->open_count)
		return 0;
	return kv_load_value(kv, id);
}

static int remove_entry(struct kv_store *kv, uint64_t parent, const char *name, bool want_dir)
{
	struct kv_node *dir, *n;
	int ret;

	pthread_mutex_lock(&kv->lock);
	ret = get_dir(kv, parent, &dir);
	if (ret)
		goto out;
	n = kv_live_child(kv, dir, name);
	if (!n) {
		ret = -ENOENT;
		goto out;
	}
	if (want_dir && !is_dir(n)) {
		ret = -ENOTDIR;
		goto out;
	}
	if (!want_dir && is_dir(n)) {
		ret = -EISDIR;
		goto out;
	}
	if (want_dir)
		expire_children(kv, n);
	if (want_dir && n->children && htab_count(n->children)) {
		ret = -ENOTEMPTY;
		goto out;
	}
	if (!want_dir) {
		uint64_t id = n->m.id;

		ret = keep_value_for_handles(kv, id);
		if (ret)
			goto out;
		/* The lock was dropped: look the entry up again. */
		ret = get_dir(kv, parent, &dir);
		if (ret)
			goto out;
		n = kv_live_child(kv, dir, name);
		if (!n || n->m.id != id) {
			ret = -ENOENT;
			goto out;
		}
	}
	kv_node_remove(kv, n);
	kv_dir_touch(kv, dir, kv_now_ns());
out:
	pthread_mutex_unlock(&kv->lock);
	return ret;
}

int kv_unlink(struct kv_store *kv, uint64_t parent, const char *name)
{
	if (kv_is_tx_id(parent))
		return kv_tx_remove(kv, parent, name, false);
	return remove_entry(kv, parent, name, false);
}

int kv_rmdir(struct kv_store *kv, uint64_t parent, const char *name)
{
	if (kv_is_tx_id(parent))
		return kv_tx_remove(kv, parent, name, true);
	return remove_entry(kv, parent, name, true);
}

/* Checks a rename of n to (dst, newname), replacing victim (or NULL). */
static int check_rename(struct kv_node *n, struct kv_node *dst, const char *newname,
			struct kv_node *victim, unsigned flags)
{
	int ret = kv_check_name(newname);

	if (ret)
		return ret;
	if (flags & ~(unsigned)RENAME_NOREPLACE)
		return -EINVAL;
	if (!n->parent)
		return -EBUSY;
	/* A directory cannot move below itself. */
	for (struct kv_node *p = dst; p; p = p->parent)
		if (p == n)
			return -EINVAL;
	if (victim) {
		if (flags & RENAME_NOREPLACE)
			return -EEXIST;
		if (is_dir(n) && !is_dir(victim))
			return -ENOTDIR;
		if (!is_dir(n) && is_dir(victim))
			return -EISDIR;
		if (is_dir(victim) && victim->children && htab_count(victim->children))
			return -ENOTEMPTY;
	}
	if (child_key_len(dst, newname) > KV_KEY_MAX)
		return -ENAMETOOLONG;
	if (is_dir(n) && child_key_len(dst, newname) > kv_key_len(n)) {
		size_t below = kv_subtree_max_len(n);

		if (below && child_key_len(dst, newname) + 1 + below > KV_KEY_MAX)
			return -ENAMETOOLONG;
	}
	return 0;
}

int kv_rename(struct kv_store *kv, uint64_t parent, const char *name, uint64_t newparent,
	      const char *newname, unsigned flags)
{
	if (kv_is_tx_id(parent) || kv_is_tx_id(newparent))
		return kv_tx_rename(kv, parent, name, newparent, newname, flags);
	struct kv_node *src, *dst, *n, *victim;
	char *dupname;
	int64_t now;
	int ret;

	pthread_mutex_lock(&kv->lock);
	ret = get_dir(kv, parent, &src);
	if (!ret)
		ret = get_dir(kv, newparent, &dst);
	if (ret)
		goto out;
	n = kv_live_child(kv, src, name);
	if (!n) {
		ret = -ENOENT;
		goto out;
	}
	victim = kv_live_child(kv, dst, newname);
	if (victim == n)
		goto out;
	if (victim && is_dir(victim))
		expire_children(kv, victim);
	ret = check_rename(n, dst, newname, victim, flags);
	if (ret)
		goto out;
	if (victim && !is_dir(victim)) {
		uint64_t vid = victim->m.id, nid = n->m.id;

		ret = keep_value_for_handles(kv, vid);
		if (ret)
			goto out;
		/* The lock was dropped: everything may have moved. */
		if (get_dir(kv, parent, &src) || get_dir(kv, newparent, &dst) ||
		    !(n = kv_live_child(kv, src, name)) || n->m.id != nid) {
			ret = -ENOENT;
			goto out;
		}
		victim = kv_live_child(kv, dst, newname);
		if (victim && victim->m.id != vid) {
			ret = -EAGAIN;
			goto out;
		}
		ret = check_rename(n, dst, newname, victim, flags);
		if (ret)
			goto out;
	}
	dupname = strdup(newname);
	if (!dupname) {
		ret = -ENOMEM;
		goto out;
	}
	now = kv_now_ns();
	if (victim) {
		kv_node_remove(kv, victim);
	}
	kv_node_detach(n);
	if (!kv_node_name_inline(n))
		free(n->m.name);
	n->m.name = dupname;
	ret = kv_node_attach(dst, n);
	if (ret) {
		/* Only a failed table growth gets here; the entry is kept
		 * under its old parent rather than lost. */
		kv_node_attach(src, n);
		goto out;
	}
	n->m.ctime_ns = now;
	kv_mark_dirty(kv, n);
	kv_dir_touch(kv, src, now);
	if (dst != src)
		kv_dir_touch(kv, dst, now);
out:
	pthread_mutex_unlock(&kv->lock);
	return ret;
}

/* Expires the children of dir past their deadline, so a listing never shows
 * one. Collected first: expiring changes the table being walked. */
static void expire_children(struct kv_store *kv, struct kv_node *dir)
{
	int64_t now = kv_now_ms();
	struct kv_node *c, **due = NULL;
	size_t n = 0, cap = 0;

	if (!dir->children)
		return;
	for (size_t i = 0; (c = htab_next(dir->children, &i));) {
		if (!kv_node_expired(c, now))
			continue;
		if (n == cap) {
			struct kv_node **d = realloc(due, (cap = cap ? cap * 2 : 8) * sizeof(*d));

			if (!d)
				break; /* the sweeper gets the rest */
			due = d;
		}
		due[n++] = c;
	}
	for (size_t i = 0; i < n; i++)
		kv_expire(kv, due[i]);
	free(due);
}

int kv_readdir(struct kv_store *kv, uint64_t id, struct kv_dirent **out, size_t *count)
{
	if (kv_is_tx_id(id))
		return kv_tx_readdir(kv, id, out, count);
	struct kv_node *dir, *c;
	struct kv_dirent *ents = NULL;
	size_t n = 0;
	int ret;

	pthread_mutex_lock(&kv->lock);
	ret = get_dir(kv, id, &dir);
	if (ret)
		goto out;
	expire_children(kv, dir);
	if (dir->children && htab_count(dir->children)) {
		ents = calloc(htab_count(dir->children), sizeof(*ents));
		if (!ents) {
			ret = -ENOMEM;
			goto out;
		}
		for (size_t i = 0; (c = htab_next(dir->children, &i));) {
			ents[n].name = strdup(c->m.name);
			if (!ents[n].name) {
				ret = -ENOMEM;
				break;
			}
			ents[n].id = c->m.id;
			ents[n].mode = c->m.mode;
			n++;
		}
	}
out:
	pthread_mutex_unlock(&kv->lock);
	if (ret) {
		kv_dirents_free(ents, n);
		return ret;
	}
	*out = ents;
	*count = n;
	return 0;
}

void kv_dirents_free(struct kv_dirent *ents, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(ents[i].name);
	free(ents);
}

int kv_statfs(struct kv_store *kv, struct kv_backend_statfs *space, uint64_t *keys)
{
	int ret = kv->backend->ops->statfs(kv->backend, space);

	pthread_mutex_lock(&kv->lock);
	*keys = kv->nkeys;
	pthread_mutex_unlock(&kv->lock);
	return ret;
}

void kv_get_stats(struct kv_store *kv, struct kv_stats *out)
{
	pthread_mutex_lock(&kv->lock);
	out->keys = kv->nkeys;
	out->dirs = kv->ndirs;
	out->buffer_keys = kv->ndirty;
	out->buffer_bytes = kv->buffer_bytes;
	out->dirty_bytes = kv->dirty_bytes + kv->inflight_bytes;
	out->flushes = kv->flushes;
	out->flush_failures = kv->flush_failures;
	out->last_flush_ms = kv->last_flush_ms;
	/* Records stay on the dirty list while their flush is in flight, and
	 * dirty_since_ms is when the oldest of them changed (reset to a
	 * successful flush's start for what changed during it). */
	out->backlog_age_ms = kv->ndirty ? (uint64_t)(kv_mono_ms() - kv->dirty_since_ms) : 0;
	out->ttl_pending = kv->ttl_live;
	out->ttl_expired = kv->ttl_expired;
	out->tx_active = 0;
	out->tx_staged_bytes = 0;
	/* An aborted one still in use is not active, but holds its bytes
	 * until the sweeper frees it. */
	for (struct kv_txn *tx = kv->txs; tx; tx = tx->next) {
		out->tx_active += !tx->doomed;
		out->tx_staged_bytes += tx->staged_bytes;
	}
	out->tx_committed = kv->tx_committed;
	out->tx_aborted = kv->tx_aborted;
	out->tx_conflicted = kv->tx_conflicted;
	out->tags = htab_count(&kv->tags.by_name);
	out->tag_entries = kv->tags.entries;
	out->query_hits = kv->tags.hits;
	out->query_misses = kv->tags.misses;
	out->query_cached = kv_qcache_count(kv->tags.cache);
	out->query_backend = kv->tags.backend_queries;
	out->query_backend_fallbacks = kv->tags.backend_fallbacks;
	out->backend = kv->backend->ops->name;
	out->backend_error = kv->last_flush_error;
	out->spilled = kv->spilled;
	pthread_mutex_unlock(&kv->lock);
	static const char *const ops[] = { NULL, "create", "verify", "restore" };
	struct kv_bk_progress *pg = &kv->backup_progress;
	int op = atomic_load(&pg->op);

	out->backup_op = op > 0 && op < 4 ? ops[op] : NULL;
	out->backup_keys = atomic_load(&pg->keys);
	out->backup_keys_total = atomic_load(&pg->keys_total);
	out->backup_bytes = atomic_load(&pg->bytes);
	out->backup_bytes_total = atomic_load(&pg->bytes_total);
	kv_backend_health_stats(kv, out);
}
