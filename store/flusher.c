/*
 * The write-back buffer's flusher. Every flush takes all dirty records at one
 * instant under the lock (metadata copies and copy-on-write value snapshots),
 * commits them as one backend batch without the lock, then applies the
 * result. Because a batch is everything dirty at one instant, the backend
 * always holds the whole tree as it was at some flush: a crash can lose the
 * changes after the last flush, never leave a child without its parent, a
 * rename half done, or a value torn.
 *
 * Per-record versions make a racing change safe: a record changed while its
 * snapshot was being committed stays dirty for the next flush, so a flush can
 * never undo a newer write or delete.
 *
 * Only one thread runs kv_flush_once at a time: the flusher thread, or the
 * opener/closer while no flusher runs.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "store/kv_internal.h"
#include "store/sync.h"
#include "util/log.h"

struct batch_ent {
	struct kv_node *node;
	uint64_t version;	/* node->version when snapshotted */
	uint64_t dirty_bytes;	/* moved from the node into inflight_bytes */
	uint64_t kept_vver;	/* superseded version kept for a backup's pin */
	bool was_sent;		/* KV_NODE_SENT before this batch */
};

/* With the lock held: op would make a stored version obsolete while a backup
 * may still read it; keep it until the pin goes (recorded if the commit
 * succeeds, since on failure that version stays current). */
static void keep_if_pinned(struct kv_store *kv, struct kv_op *op, struct batch_ent *e)
{
	e->kept_vver = 0;
	if (!kv->backup_pins || !op->old_vver)
		return;
	e->kept_vver = op->old_vver;
	op->old_vver = 0;
}

static void defer_reclaim(struct kv_store *kv, uint64_t id, uint64_t vver)
{
	if (kv->ndeferred == kv->deferred_cap) {
		size_t cap = kv->deferred_cap ? kv->deferred_cap * 2 : 64;
		uint64_t(*d)[2] = realloc(kv->deferred, cap * sizeof(*d));

		/* Without memory only space is lost: the backend's open-time
		 * sweep removes value versions no record names. */
		if (!d)
			return;
		kv->deferred = d;
		kv->deferred_cap = cap;
	}
	kv->deferred[kv->ndeferred][0] = id;
	kv->deferred[kv->ndeferred][1] = vver;
	kv->ndeferred++;
}

void kv_backup_pin(struct kv_store *kv)
{
	kv->backup_pins++;
}

void kv_backup_unpin(struct kv_store *kv)
{
	if (--kv->backup_pins == 0 && kv->ndeferred)
		pthread_cond_signal(&kv->flush_cond);
}

static bool reclaim_due(const struct kv_store *kv)
{
	return !kv->backup_pins && kv->ndeferred && kv->backend->ops->reclaim;
}

/* Hands the deferred versions to the backend once nothing pins them. Called
 * from kv_flush_once (one thread at a time, like commit) with the lock held,
 * which it drops around the backend call; before the flush counts as done,
 * so that kv_flush after the last unpin returns with them reclaimed. */
static void reclaim_deferred(struct kv_store *kv)
{
	uint64_t(*refs)[2];
	size_t n;
	int ret;

	if (!reclaim_due(kv))
		return;
	refs = kv->deferred;
	n = kv->ndeferred;
	kv->deferred = NULL;
	kv->ndeferred = kv->deferred_cap = 0;
	pthread_mutex_unlock(&kv->lock);
	ret = kv->backend->ops->reclaim(kv->backend, (const uint64_t(*)[2])refs, n);
	if (ret)
		NLOG(NLOG_WARN, "sync", "cannot reclaim value versions kept for a backup",
		     LF_INT("count", n), LF_STR("error", strerror(-ret)));
	free(refs);
	pthread_mutex_lock(&kv->lock);
}

/* With the lock held: n needs nothing more from the buffer. */
static void node_settle(struct kv_store *kv, struct kv_node *n)
{
	if (n->flags & (KV_NODE_ON_DIRTY | KV_NODE_INFLIGHT) || n->open_count)
		return;
	if (n->flags & KV_NODE_DELETED)
		kv_node_free(kv, n);
	else if (n->value && !(n->flags & KV_NODE_VALUE_DIRTY))
		kv_value_account(kv, n, NULL);
}

/* With the lock held: fills ops/ents from the dirty list; returns the count
 * or -ENOMEM. */
static ssize_t take_batch(struct kv_store *kv, struct kv_op *ops, struct batch_ent *ents)
{
	struct kv_node *n, *next;
	size_t k = 0;
	int ret = kv_dirty_relist(kv);

	if (ret)
		return ret;
	for (n = kv->dirty_head; n; n = next) {
		struct kv_op *op = &ops[k];

		next = n->aux->dirty_next;
		if ((n->flags & KV_NODE_DELETED) &&
		    !(n->flags & (KV_NODE_COMMITTED | KV_NODE_SENT))) {
			/* Removed before any commit carried it. */
			kv_dirty_unlink(kv, n);
			node_settle(kv, n);
			continue;
		}
		if ((n->flags & KV_NODE_DELETED) && n->open_count && !n->value && n->m.vver) {
			/* Removed (by expiry) while open, its value not in memory:
			 * the DEL would take the bytes the handles still read.
			 * It waits for the last release. */
			continue;
		}
		if (n->flags & KV_NODE_DELETED) {
			op->type = KV_OP_DEL;
			op->meta.id = n->m.id;
			op->old_vver = n->m.vver;
			keep_if_pinned(kv, op, &ents[k]);
		} else {
			op->type = KV_OP_PUT;
			if (kv_node_meta_copy(&op->meta, n))
				return -ENOMEM;
			if (n == kv->root && kv->tags.decl_base_ok) {
				if (kv_tags_copy_list(kv->tags.decl_base, kv->tags.ndecl_base,
						      &op->base_tags)) {
					kv_meta_clear(&op->meta);
					return -ENOMEM;
				}
				op->nbase_tags = kv->tags.ndecl_base;
				op->has_base = true;
			}
			op->may_yield = true;
			op->was_committed = n->flags & KV_NODE_COMMITTED;
			op->never_sent = !(n->flags & (KV_NODE_COMMITTED | KV_NODE_SENT));
			op->uncertain = (n->flags & (KV_NODE_COMMITTED | KV_NODE_SENT)) ==
					KV_NODE_SENT;
			if (n->flags & KV_NODE_VALUE_DIRTY) {
				op->value = kv_value_snapshot(n->value);
				if (!op->value) {
					kv_meta_clear(&op->meta);
					kv_tags_free_list(op->base_tags, op->nbase_tags);
					op->base_tags = NULL;
					return -ENOMEM;
				}
				op->old_vver = n->m.vver;
				keep_if_pinned(kv, op, &ents[k]);
				n->flags &= ~KV_NODE_VALUE_DIRTY;
			}
		}
		ents[k].node = n;
		ents[k].was_sent = n->flags & KV_NODE_SENT;
		ents[k].version = n->version;
		ents[k].dirty_bytes = kv_take_dirty_bytes(kv, n);
		kv->inflight_bytes += ents[k].dirty_bytes;
		n->flags |= KV_NODE_INFLIGHT | KV_NODE_SENT;
		k++;
	}
	return (ssize_t)k;
}

/*
 * With the lock held: the backend left op out, another mount's record
 * holding its name (kv_op.yielded). Everything stays owed, as after a
 * failed commit (the backend removed what the op had written), and the
 * record moves to lost+found unless it has left that name meanwhile.
 */
static int gave_way(struct kv_store *kv, const struct kv_op *op, const struct batch_ent *e)
{
	struct kv_node *n = e->node;
	int ret;

	if (op->value)
		n->flags |= KV_NODE_VALUE_DIRTY;
	if (!e->was_sent)
		n->flags &= ~KV_NODE_SENT;
	if (n->flags & KV_NODE_DELETED)
		return 0;
	kv_add_dirty_bytes(kv, n, e->dirty_bytes);
	if (!n->parent || n->parent->m.id != op->meta.parent || !n->m.name ||
	    strcmp(n->m.name, op->meta.name))
		return 0;
	ret = kv_recover_displaced(kv, n);
	/* Left where it is, it gives way again at every flush, which fails
	 * (and backs off) until memory or a rename lets it move. */
	if (ret)
		NLOG(NLOG_ERROR, "sync", "cannot move a record that gave its name away",
		     LF_INT("id", n->m.id), LF_STR("error", strerror(-ret)));
	return ret;
}

/* With the lock held: records the outcome of the batch in the tree; the
 * number of ops that gave way (kv_op.yielded), and in *stuck of those
 * that could not move. */
static size_t apply_batch(struct kv_store *kv, struct kv_op *ops, struct batch_ent *ents,
			  size_t k, int result, size_t *stuck)
{
	size_t yielded = 0;

	for (size_t i = 0; i < k; i++) {
		struct kv_node *n = ents[i].node;
		struct kv_op *op = &ops[i];

		n->flags &= ~KV_NODE_INFLIGHT;
		kv->inflight_bytes -= ents[i].dirty_bytes;
		if (!result && op->type == KV_OP_PUT && op->yielded) {
			*stuck += gave_way(kv, op, &ents[i]) != 0;
			yielded++;
			continue;
		}
		if (result) {
			/* Everything stays owed; the next flush retries. */
			if (op->value)
				n->flags |= KV_NODE_VALUE_DIRTY;
			/* Refused whole before anything was written (another
			 * mount's transaction, backend_redis_tx.c): this batch
			 * did not carry the record after all. */
			if (result == -EAGAIN && !ents[i].was_sent)
				n->flags &= ~KV_NODE_SENT;
			if (!(n->flags & KV_NODE_DELETED))
				kv_add_dirty_bytes(kv, n, ents[i].dirty_bytes);
			continue;
		}
		/* As the backend would have deleted it, had no backup pinned it
		 * (same test as backend_fs's). */
		if (ents[i].kept_vver &&
		    !(op->type == KV_OP_PUT && ents[i].kept_vver == op->meta.vver))
			defer_reclaim(kv, op->meta.id, ents[i].kept_vver);
		if (op->type == KV_OP_DEL) {
			n->flags &= ~KV_NODE_COMMITTED;
			n->m.vver = 0;
		} else {
			n->flags |= KV_NODE_COMMITTED;
			/* What the backend has now, as far as this mount knows. */
			if (n == kv->root)
				kv_tags_decl_base_set(kv, op->meta.tags, op->meta.ntags);
			if (op->value) {
				n->m.vver = op->meta.vver;
				n->m.stored_size = op->meta.stored_size;
				n->m.encoding = op->meta.encoding;
			}
		}
		/* A DEL owed by a removal during this commit keeps it listed. */
		if (n->version == ents[i].version &&
		    (op->type == KV_OP_DEL || !(n->flags & KV_NODE_DELETED)))
			kv_dirty_unlink(kv, n);
		node_settle(kv, n);
	}
	return yielded;
}

static void free_ops(struct kv_op *ops, size_t k)
{
	for (size_t i = 0; i < k; i++) {
		kv_meta_clear(&ops[i].meta);
		kv_tags_free_list(ops[i].base_tags, ops[i].nbase_tags);
		kv_value_free((struct kv_value *)ops[i].value);
	}
	free(ops);
}

static int backend_commit(void *arg, struct kv_op *ops, size_t n)
{
	struct kv_backend *b = arg;

	return b->ops->commit(b, ops, n);
}

int kv_flush_once(struct kv_store *kv)
{
	return kv_flush_once_via(kv, backend_commit, kv->backend);
}

/* One batch; *yielded: how many of its ops gave way (and moved). */
static int flush_round(struct kv_store *kv, kv_commit_fn commit, void *arg, size_t *yielded)
{
	struct kv_op *ops = NULL;
	struct batch_ent *ents = NULL;
	size_t stuck = 0;
	uint64_t gen;
	int64_t start, started_ms;
	ssize_t k = 0;
	int ret = 0;

	pthread_mutex_lock(&kv->lock);
	gen = kv->flush_req;
	started_ms = kv_mono_ms();
	if (kv->ndirty) {
		ops = calloc(kv->ndirty, sizeof(*ops));
		ents = calloc(kv->ndirty, sizeof(*ents));
		if (!ops || !ents) {
			ret = -ENOMEM;
			goto out_unlock;
		}
		k = take_batch(kv, ops, ents);
		if (k < 0) {
			/* Undo the snapshots taken so far. */
			ret = (int)k;
			k = 0;
			for (size_t i = 0; ents[i].node; i++)
				k = (ssize_t)i + 1;
			apply_batch(kv, ops, ents, (size_t)k, ret, &stuck);
			goto out_unlock;
		}
	}
	pthread_mutex_unlock(&kv->lock);

	start = kv_mono_ms();
	if (k > 0)
		ret = commit(arg, ops, (size_t)k);

	pthread_mutex_lock(&kv->lock);
	*yielded = apply_batch(kv, ops, ents, (size_t)k, ret, &stuck);
	/* A record that can neither have its name nor move is durable nowhere:
	 * the flush failed (and the flusher backs off instead of offering it
	 * again at once). */
	if (stuck)
		ret = -EEXIST;
	if (k > 0) {
		kv->last_flush_ms = (uint64_t)(kv_mono_ms() - start);
		/* -EAGAIN: waiting for another mount's transaction, no failure. */
		if (ret && ret != -EAGAIN)
			kv->flush_failures++;
		else
			kv->flushes++;
	}
	/* What is still dirty changed after this batch was taken. */
	if (kv->ndirty)
		kv->dirty_since_ms = ret ? kv->dirty_since_ms : started_ms;
	if (!ret)
		reclaim_deferred(kv);
out_unlock:
	/* What gave way is durable nowhere yet: only the round that commits
	 * it answers those waiting. */
	if (!ret && !*yielded && gen > kv->flush_done)
		kv->flush_done = gen;
	if (ret != -EAGAIN)
		kv->last_flush_error = ret;
	pthread_cond_broadcast(&kv->done_cond);
	pthread_mutex_unlock(&kv->lock);
	free_ops(ops, k > 0 ? (size_t)k : 0);
	free(ents);
	if (ret == -EAGAIN)
		NLOG(NLOG_INFO, "sync", "flush waits for another mount's transaction",
		     LF_INT("records", k));
	else if (ret)
		NLOG(NLOG_WARN, "sync", "flush failed; will retry", LF_INT("records", k),
		     LF_STR("error", strerror(-ret)));
	return ret;
}

/*
 * What gave way moved and is owed again: the rounds that follow at once
 * commit it, so that no flush (the one at close included) returns with it
 * durable nowhere. One that gives way at every new name too is left for
 * the next flush (-EAGAIN: the flusher retries).
 */
int kv_flush_once_via(struct kv_store *kv, kv_commit_fn commit, void *arg)
{
	for (int round = 0;; round++) {
		size_t yielded = 0;
		int ret = flush_round(kv, commit, arg, &yielded);

		if (ret || !yielded)
			return ret;
		if (round == 7)
			return -EAGAIN;
	}
}

static void deadline_ts(struct timespec *ts, int64_t mono_ms)
{
	ts->tv_sec = mono_ms / 1000;
	ts->tv_nsec = (mono_ms % 1000) * 1000000;
}

/* With the lock held: is there a reason to flush now? */
static bool flush_due(struct kv_store *kv, int64_t now)
{
	if (kv->flush_req > kv->flush_done || reclaim_due(kv))
		return true;
	if (!kv->ndirty)
		return false;
	return kv->dirty_bytes >= kv->opts.buffer_size / 2 ||
	       now - kv->dirty_since_ms >= (int64_t)kv->opts.flush_interval_ms;
}

static void *flusher_main(void *arg)
{
	struct kv_store *kv = arg;
	int64_t backoff_ms = 0, retry_at = 0;

	pthread_mutex_lock(&kv->lock);
	while (!kv->stopping) {
		int64_t now = kv_mono_ms();
		struct timespec ts;

		if (now < retry_at || !flush_due(kv, now)) {
			int64_t wake = now + 1000;

			if (now < retry_at)
				wake = retry_at;
			else if (kv->ndirty)
				wake = kv->dirty_since_ms + (int64_t)kv->opts.flush_interval_ms;
			deadline_ts(&ts, wake);
			pthread_cond_timedwait(&kv->flush_cond, &kv->lock, &ts);
			continue;
		}
		pthread_mutex_unlock(&kv->lock);
		int ret = kv_flush_once(kv);
		pthread_mutex_lock(&kv->lock);
		if (ret) {
			/* Back off while the backend fails, up to 5 s; a wait for
			 * another mount's transaction, which ends in milliseconds
			 * (or seconds if that mount died), up to 0.5 s. */
			int64_t cap = ret == -EAGAIN ? 500 : 5000;

			backoff_ms = backoff_ms ? backoff_ms * 2 : 50;
			if (backoff_ms > cap)
				backoff_ms = cap;
			retry_at = kv_mono_ms() + backoff_ms;
		} else {
			backoff_ms = retry_at = 0;
		}
	}
	pthread_mutex_unlock(&kv->lock);
	return NULL;
}

int kv_flusher_start(struct kv_store *kv)
{
	int ret = pthread_create(&kv->flusher, NULL, flusher_main, kv);

	if (ret)
		return -ret;
	kv->flusher_running = true;
	return 0;
}

void kv_flusher_stop(struct kv_store *kv)
{
	if (!kv->flusher_running)
		return;
	pthread_mutex_lock(&kv->lock);
	kv->stopping = true;
	pthread_cond_signal(&kv->flush_cond);
	pthread_mutex_unlock(&kv->lock);
	pthread_join(kv->flusher, NULL);
	kv->flusher_running = false;
}

/* With the lock held: waits on done_cond until cond holds or the deadline. */
static int wait_until(struct kv_store *kv, bool (*cond)(struct kv_store *, uint64_t), uint64_t arg)
{
	int64_t deadline = kv_mono_ms() + (int64_t)kv->opts.backend_timeout_ms;
	struct timespec ts;

	deadline_ts(&ts, deadline);
	if (!cond(kv, arg))
		kv_may_block();
	while (!cond(kv, arg)) {
		if (!kv->flusher_running) {
			/* Before kv_start or after kv_close's stop: flush here. */
			pthread_mutex_unlock(&kv->lock);
			int ret = kv_flush_once(kv);
			pthread_mutex_lock(&kv->lock);
			if (ret)
				return -EIO;
			continue;
		}
		pthread_cond_signal(&kv->flush_cond);
		if (pthread_cond_timedwait(&kv->done_cond, &kv->lock, &ts) == ETIMEDOUT &&
		    !cond(kv, arg))
			return -EIO;
	}
	return 0;
}

static bool flushed(struct kv_store *kv, uint64_t target)
{
	return kv->flush_done >= target;
}

void kv_flush_soon(struct kv_store *kv)
{
	kv->flush_req++;
	pthread_cond_signal(&kv->flush_cond);
}

int kv_wait_flushed(struct kv_store *kv)
{
	return wait_until(kv, flushed, ++kv->flush_req);
}

static bool has_room(struct kv_store *kv, uint64_t unused)
{
	(void)unused;
	return kv->dirty_bytes + kv->inflight_bytes < kv->opts.buffer_size;
}

int kv_buffer_room(struct kv_store *kv)
{
	if (has_room(kv, 0))
		return 0;
	pthread_cond_signal(&kv->flush_cond);
	return -EWOULDBLOCK;
}

int kv_wait_buffer(struct kv_store *kv)
{
	return wait_until(kv, has_room, 0);
}
