/*
 * Several mounts of one store (spec section 9): the sync thread applies
 * what other mounts committed to this mount's tree, and ids are handed out
 * from blocks reserved in the backend so that two mounts never create two
 * records with one id.
 *
 * The thread waits on the backend's change log (changes()), fetches the
 * current records of the ids it names (fetch()) without kv->lock, then
 * applies them under kv->lock (sync_apply.c): new records are inserted,
 * moved or renamed ones are moved, changed ones get their metadata (tags
 * re-indexed, deadline re-indexed, a cached value dropped when its version
 * changed), removed or expired ones leave the tree. The kernel is then told, from
 * this thread (never a FUSE request's), through the store's expiry
 * callback, which drops the cached entries and attributes of exactly those
 * names and inodes.
 *
 * Conflict rule: a record this mount changed and has not flushed yet (on
 * the dirty list or in flight) is not touched by a remote change; its id
 * stays pending and is fetched again once it is clean, so the mount ends
 * up with whatever Redis holds after both commits (the last one wins).
 *
 * When the log cannot say what was missed (it was trimmed past us, or the
 * connection dropped), every record is reloaded and the tree reconciled.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "store/sync.h"
#include "util/log.h"

#define ID_BLOCK 65536u
#define WAIT_MS 250
#define BUSY_WAIT_MS 50

void kv_changes_clear(struct kv_change *c, size_t n)
{
	for (size_t i = 0; c && i < n; i++)
		if (!c[i].gone)
			kv_meta_clear(&c[i].meta);
}

static bool shared(const struct kv_store *kv)
{
	const struct kv_backend_ops *ops = kv->backend->ops;

	return kv->sync && ops->caps.shared && ops->changes && ops->fetch && ops->reserve_ids;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/* --- ids --- */

static int reserve(struct kv_store *kv, uint64_t *first, uint64_t *last)
{
	uint64_t f;
	int ret = kv->backend->ops->reserve_ids(kv->backend, ID_BLOCK, &f);

	if (ret)
		return ret;
	*last = f + ID_BLOCK - 1;
	/* A new store's first block would include the root's id. */
	*first = f > KV_ROOT_ID ? f : KV_ROOT_ID + 1;
	return 0;
}

int kv_sync_open(struct kv_store *kv, char *err, size_t errlen)
{
	struct kv_sync *s = kv->sync;
	uint64_t first, last;
	int ret;

	if (!shared(kv))
		return 0;
	ret = reserve(kv, &first, &last);
	if (ret) {
		snprintf(err, errlen, "cannot reserve record ids: %s", strerror(-ret));
		return ret;
	}
	pthread_mutex_lock(&kv->lock);
	s->ids_shared = true;
	kv->max_id = first - 1;
	s->id_end = last;
	pthread_mutex_unlock(&kv->lock);
	return 0;
}

int kv_sync_next_id(struct kv_store *kv, uint64_t *id)
{
	struct kv_sync *s = kv->sync;

	if (!s || !s->ids_shared) {
		*id = kv->max_id + 1;
		return 0;
	}
	if (kv->max_id >= s->id_end && s->next_first) {
		kv->max_id = s->next_first - 1;
		s->id_end = s->next_last;
		s->next_first = s->next_last = 0;
	}
	if (kv->max_id >= s->id_end)
		return -ENOSPC; /* the sync thread is fetching more */
	*id = kv->max_id + 1;
	return 0;
}

/* Without kv->lock: a spare block before this one runs out. */
static void refill_ids(struct kv_store *kv)
{
	struct kv_sync *s = kv->sync;
	uint64_t first, last;
	bool want;

	pthread_mutex_lock(&kv->lock);
	want = !s->next_first &&
	       (kv->max_id >= s->id_end || s->id_end - kv->max_id < ID_BLOCK / 2);
	pthread_mutex_unlock(&kv->lock);
	if (!want || reserve(kv, &first, &last))
		return;
	pthread_mutex_lock(&kv->lock);
	s->next_first = first;
	s->next_last = last;
	pthread_mutex_unlock(&kv->lock);
}

/* --- on demand: close-to-open and claims --- */

int kv_refresh(struct kv_store *kv, uint64_t parent, const char *name, uint64_t id)
{
	const struct kv_backend_ops *ops = kv->backend->ops;
	struct kv_change c[3];
	struct kv_sync_notes ns = { 0 };
	uint64_t ids[3], *busy_ids = NULL, rid;
	size_t n = 0, nbusy = 0;
	int ret;

	/* A transaction's view is local: nothing to bring up to date. */
	if (!shared(kv) || !ops->lookup_name || kv_is_tx_id(id) || kv_is_tx_id(parent))
		return 0;
	if (id)
		ids[n++] = id;
	if (name) {
		struct kv_node *dir, *local;

		ret = ops->lookup_name(kv->backend, parent, name, &rid);
		if (ret && ret != -ENOENT)
			return ret;
		if (!ret && rid != id)
			ids[n++] = rid;
		/* What this mount has there may be gone. */
		pthread_mutex_lock(&kv->lock);
		dir = kv_node_get(kv, parent);
		local = dir && dir->children ? kv_child_get(dir, name) : NULL;
		if (local && local->m.id != id && (ret || local->m.id != rid))
			ids[n++] = local->m.id;
		pthread_mutex_unlock(&kv->lock);
	}
	if (!n)
		return 0;
	ret = ops->fetch(kv->backend, ids, n, c);
	if (ret)
		return ret;
	pthread_mutex_lock(&kv->lock);
	kv_sync_apply(kv, c, n, &ns, &busy_ids, &nbusy);
	pthread_mutex_unlock(&kv->lock);
	kv_changes_clear(c, n);
	/* A FUSE request's thread must not send invalidations: the sync
	 * thread sends them when the same change comes through the log. */
	for (size_t i = 0; i < ns.n; i++)
		free(ns.v[i].name);
	free(ns.v);
	free(busy_ids);
	return 0;
}

/* Does the backend's entry (parent, name) name a record this mount has
 * removed from that name (deleted, or renamed away) and not yet flushed? */
static bool held_by_own_pending_change(struct kv_store *kv, uint64_t parent, const char *name)
{
	struct kv_node *n;
	uint64_t holder = 0;
	bool pending;

	if (!kv->backend->ops->lookup_name ||
	    kv->backend->ops->lookup_name(kv->backend, parent, name, &holder) || !holder)
		return false;
	pthread_mutex_lock(&kv->lock);
	n = kv_node_get(kv, holder);
	pending = n && ((n->flags & KV_NODE_DELETED) || !n->parent ||
			n->parent->m.id != parent || strcmp(n->m.name, name));
	pthread_mutex_unlock(&kv->lock);
	return pending;
}

int kv_sync_claim(struct kv_store *kv, uint64_t parent, const char *name, uint64_t *id,
		  bool *claimed)
{
	struct kv_node *dir;
	uint64_t nid = 0;
	int ret = 0;

	*id = 0;
	*claimed = false;
	if (!shared(kv) || !kv->backend->ops->claim_name || kv_check_name(name))
		return 0;
	pthread_mutex_lock(&kv->lock);
	dir = kv_node_get(kv, parent);
	/* What the tree can answer, the create itself answers. */
	if (dir && S_ISDIR(dir->m.mode) && !(dir->flags & KV_NODE_DELETED) &&
	    !(dir->children && kv_child_get(dir, name)))
		ret = kv_sync_next_id(kv, &nid);
	if (nid)
		kv->max_id = nid;
	pthread_mutex_unlock(&kv->lock);
	if (ret || !nid)
		return ret;
	ret = kv->backend->ops->claim_name(kv->backend, parent, name, nid);
	if (ret == -EEXIST && held_by_own_pending_change(kv, parent, name)) {
		/* Our own removal or rename, not flushed yet, still holds
		 * the name: once it is, the name is free for this create. */
		ret = kv_flush(kv);
		if (!ret)
			ret = kv->backend->ops->claim_name(kv->backend, parent, name, nid);
	}
	if (ret == -EEXIST) {
		/* Show the winner's entry to whoever looks next. */
		kv_refresh(kv, parent, name, 0);
		return -EEXIST;
	}
	*id = nid;
	/* A claim that failed may still have landed (a timed-out command
	 * the server ran): the record is then treated as one a commit may
	 * have carried, never as new (kv_op.never_sent), so the commit
	 * settles whatever claim there is. */
	*claimed = true;
	if (ret)
		NLOG(NLOG_DEBUG, "sync", "cannot claim a name in the backend; the create is "
		     "atomic within this mount only", LF_STR("error", strerror(-ret)));
	return 0;
}

/* --- the thread --- */

static int fetch_apply(struct kv_store *kv, uint64_t **pending, size_t *npending)
{
	struct kv_change *c = NULL;
	struct kv_sync_notes ns = { 0 };
	uint64_t *ids = *pending, *still = NULL;
	size_t n = *npending, nstill = 0;
	int ret;

	*pending = NULL;
	*npending = 0;
	/* Unique, so each record is fetched once. */
	qsort(ids, n, sizeof(*ids), cmp_u64);
	{
		size_t k = 0;

		for (size_t i = 0; i < n; i++)
			if (!k || ids[k - 1] != ids[i])
				ids[k++] = ids[i];
		n = k;
	}
	c = calloc(n ? n : 1, sizeof(*c));
	if (!c) {
		*pending = ids;
		*npending = n;
		return -ENOMEM;
	}
	ret = kv->backend->ops->fetch(kv->backend, ids, n, c);
	if (ret) {
		free(c);
		*pending = ids;
		*npending = n;
		return ret;
	}
	pthread_mutex_lock(&kv->lock);
	kv_sync_apply(kv, c, n, &ns, &still, &nstill);
	pthread_mutex_unlock(&kv->lock);
	kv_changes_clear(c, n);
	free(c);
	free(ids);
	kv_sync_send_notes(kv, &ns);
	free(ns.v);
	*pending = still;
	*npending = nstill;
	return 0;
}

struct loaded {
	uint64_t *ids;
	size_t n, cap;
};

static int collect(const struct kv_meta *m, void *arg)
{
	struct loaded *l = arg;

	if (l->n == l->cap) {
		size_t cap = l->cap ? 2 * l->cap : 1024;
		uint64_t *v = realloc(l->ids, cap * sizeof(*v));

		if (!v)
			return -ENOMEM;
		l->ids = v;
		l->cap = cap;
	}
	l->ids[l->n++] = m->id;
	return 0;
}

/*
 * The log lost track: every id the backend has, and every id this mount
 * has committed that the backend lacks, become pending. The records are
 * then fetched like any change (a second read, but no second code path).
 */
static int reload(struct kv_store *kv, uint64_t **pending, size_t *npending)
{
	struct loaded l = { 0 };
	uint64_t max_id;
	struct kv_node *n;
	size_t k;
	int ret = kv->backend->ops->load(kv->backend, collect, &l, &max_id);

	if (ret) {
		free(l.ids);
		return ret;
	}
	qsort(l.ids, l.n, sizeof(*l.ids), cmp_u64);
	pthread_mutex_lock(&kv->lock);
	k = l.n;
	for (size_t i = 0; (n = htab_next(&kv->by_id, &i));) {
		struct kv_meta view;

		if (!(n->flags & KV_NODE_COMMITTED) ||
		    bsearch(&n->m.id, l.ids, k, sizeof(*l.ids), cmp_u64))
			continue;
		kv_node_meta_view(n, &view);
		if (collect(&view, &l)) {
			ret = -ENOMEM;
			break;
		}
	}
	pthread_mutex_unlock(&kv->lock);
	if (!ret) {
		uint64_t *v = realloc(*pending, (*npending + l.n) * sizeof(*v));

		if (!v) {
			ret = -ENOMEM;
		} else {
			memcpy(v + *npending, l.ids, l.n * sizeof(*v));
			*pending = v;
			*npending += l.n;
		}
	}
	free(l.ids);
	if (!ret)
		NLOG(NLOG_INFO, "sync", "reloaded every record after losing the change log",
		     LF_INT("records", *npending));
	return ret;
}

/*
 * Records past their deadline leave the backend's indexes too (a backend
 * with native expiry drops only the records): at least every ttl_sweep, by
 * every mount (the first one to get there does it). The local sweeper
 * expires this mount's own copy at the same deadline; this also catches
 * records no running mount had time to expire.
 */
static void sweep_backend(struct kv_store *kv, int64_t *next)
{
	int64_t now = kv_mono_ms(), every;
	size_t n;

	if (!kv->backend->ops->sweep || now < *next)
		return;
	pthread_mutex_lock(&kv->lock);
	every = (int64_t)kv->opts.ttl_sweep_ms;
	pthread_mutex_unlock(&kv->lock);
	*next = now + (every > 0 ? every : 1000);
	/* Batches of 1000, so one script never blocks Redis for long. */
	while (!kv->backend->ops->sweep(kv->backend, kv_now_ms(), 1000, &n) && n == 1000)
		;
}

static bool stopping(struct kv_store *kv)
{
	bool stop;

	pthread_mutex_lock(&kv->lock);
	stop = kv->sync->stop;
	pthread_mutex_unlock(&kv->lock);
	return stop;
}

static void *sync_main(void *arg)
{
	struct kv_store *kv = arg;
	uint64_t *pending = NULL;
	size_t npending = 0;
	bool stale = false;
	int64_t backoff = 0, next_sweep = 0;

	while (!stopping(kv)) {
		uint64_t *ids = NULL;
		size_t n = 0;
		int ret;

		refill_ids(kv);
		sweep_backend(kv, &next_sweep);
		if (stale) {
			ret = reload(kv, &pending, &npending);
			stale = ret != 0;
		} else {
			ret = kv->backend->ops->changes(kv->backend,
							npending ? BUSY_WAIT_MS : WAIT_MS, &ids,
							&n);
			if (ret == -ESTALE) {
				stale = true;
				continue;
			}
		}
		if (!ret && n) {
			uint64_t *v = realloc(pending, (npending + n) * sizeof(*v));

			if (v) {
				memcpy(v + npending, ids, n * sizeof(*v));
				pending = v;
				npending += n;
			} else {
				stale = true; /* forgot some: start over */
			}
		}
		free(ids);
		if (!ret && npending)
			ret = fetch_apply(kv, &pending, &npending);
		if (ret) {
			/* The backend is away: the pool reconnects with its own
			 * backoff; this only keeps the thread from spinning. */
			struct timespec ts;

			backoff = backoff ? (backoff * 2 > 1000 ? 1000 : backoff * 2) : 50;
			ts.tv_sec = 0;
			ts.tv_nsec = backoff * 1000000;
			nanosleep(&ts, NULL);
		} else {
			backoff = 0;
		}
	}
	free(pending);
	return NULL;
}

int kv_sync_start(struct kv_store *kv)
{
	int ret;

	if (!shared(kv))
		return 0;
	ret = pthread_create(&kv->sync->thread, NULL, sync_main, kv);
	if (ret)
		return -ret;
	kv->sync->running = true;
	return 0;
}

void kv_sync_stop(struct kv_store *kv)
{
	if (!kv->sync || !kv->sync->running)
		return;
	pthread_mutex_lock(&kv->lock);
	kv->sync->stop = true;
	pthread_mutex_unlock(&kv->lock);
	pthread_join(kv->sync->thread, NULL);
	kv->sync->running = false;
}
