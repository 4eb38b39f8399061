/*
 * TTL: keys with a deadline. Expiry is exact on access (every lookup of a key
 * past its deadline expires it on the spot) and swept in the background by a
 * thread that sleeps until the next deadline, or ttl_sweep at most. Deadlines
 * are absolute unix times in ms, stored with the record, so they survive a
 * remount or a crash unchanged.
 *
 * The sweeper is also the thread that tells the filesystem about expired
 * keys, so that kernel caches are dropped from a thread that serves no FUSE
 * request (sending an invalidation from one can deadlock).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "store/kv_internal.h"
#include "util/log.h"

struct kv_deadline {
	int64_t at;
	uint64_t id;
};

struct kv_expired_ent {
	uint64_t parent, id;
	char *name;
};

int64_t kv_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void heap_swap(struct kv_deadline *h, size_t a, size_t b)
{
	struct kv_deadline t = h[a];

	h[a] = h[b];
	h[b] = t;
}

static void sift_down(struct kv_deadline *h, size_t n, size_t i)
{
	for (;;) {
		size_t l = 2 * i + 1, r = l + 1, m = i;

		if (l < n && h[l].at < h[m].at)
			m = l;
		if (r < n && h[r].at < h[m].at)
			m = r;
		if (m == i)
			return;
		heap_swap(h, i, m);
		i = m;
	}
}

/*
 * Drops the entries that no longer match their record's deadline (changed,
 * removed, or the record gone), so that the heap stays within twice the
 * number of live deadlines however often TTLs are rewritten.
 */
static void heap_compact(struct kv_store *kv)
{
	size_t k = 0;

	for (size_t i = 0; i < kv->heap_len; i++) {
		struct kv_node *n = kv_node_get(kv, kv->heap[i].id);

		if (n && !(n->flags & KV_NODE_DELETED) && kv_node_expires(n) == kv->heap[i].at)
			kv->heap[k++] = kv->heap[i];
	}
	kv->heap_len = k;
	for (size_t i = k / 2; i-- > 0;)
		sift_down(kv->heap, k, i);
}

static int heap_push(struct kv_store *kv, int64_t at, uint64_t id)
{
	size_t i;

	if (kv->heap_len >= 64 && kv->heap_len > 2 * kv->ttl_live)
		heap_compact(kv);

	if (kv->heap_len == kv->heap_cap) {
		size_t cap = kv->heap_cap ? kv->heap_cap * 2 : 64;
		struct kv_deadline *h = realloc(kv->heap, cap * sizeof(*h));

		if (!h)
			return -ENOMEM;
		kv->heap = h;
		kv->heap_cap = cap;
	}
	i = kv->heap_len++;
	kv->heap[i] = (struct kv_deadline){ at, id };
	while (i && kv->heap[(i - 1) / 2].at > kv->heap[i].at) {
		heap_swap(kv->heap, i, (i - 1) / 2);
		i = (i - 1) / 2;
	}
	return 0;
}

static void heap_pop(struct kv_store *kv)
{
	size_t n = --kv->heap_len;

	kv->heap[0] = kv->heap[n];
	sift_down(kv->heap, n, 0);
}

int kv_deadline_reserve(struct kv_store *kv, size_t more)
{
	struct kv_deadline *h;

	/* heap_push only grows a full heap, and compacting only shrinks it. */
	if (kv->heap_cap - kv->heap_len >= more)
		return 0;
	h = realloc(kv->heap, (kv->heap_len + more) * sizeof(*h));
	if (!h)
		return -ENOMEM;
	kv->heap = h;
	kv->heap_cap = kv->heap_len + more;
	return 0;
}

/* n's deadline field (in its aux record) is at_ms: 0 or -ENOMEM. */
static int put_deadline(struct kv_node *n, int64_t at_ms)
{
	if (at_ms && !kv_node_aux(n))
		return -ENOMEM;
	if (n->aux) {
		n->aux->expires_ms = at_ms;
		kv_node_aux_trim(n);
	}
	return 0;
}

int kv_set_deadline(struct kv_store *kv, struct kv_node *n, int64_t at_ms)
{
	/* Staged: indexed for the sweeper only once committed. Removed (an
	 * unlinked key still open): nothing left to expire or count. */
	if (n->flags & (KV_NODE_STAGED | KV_NODE_DELETED))
		return put_deadline(n, at_ms);
	/* The old entry stays in the heap and is ignored when it surfaces:
	 * it no longer matches the node's deadline. */
	if (at_ms) {
		/* The aux record first: a heap entry without a deadline is harmless. */
		int ret = !kv_node_aux(n) ? -ENOMEM : heap_push(kv, at_ms, n->m.id);

		if (ret) {
			kv_node_aux_trim(n);
			return ret;
		}
		if (kv->heap[0].id == n->m.id)
			pthread_cond_signal(&kv->sweep_cond);
	}
	if (!kv_node_expires(n) && at_ms)
		kv->ttl_live++;
	else if (kv_node_expires(n) && !at_ms)
		kv->ttl_live--;
	return put_deadline(n, at_ms);
}

void kv_queue_inval(struct kv_store *kv, uint64_t parent, const char *name, uint64_t id)
{
	struct kv_node *n = kv_node_get(kv, id);
	struct kv_expired_ent *e;

	/* The invalidation ends the kernel's cache period (kv_cache.c). */
	if (n)
		kv_cache_end(kv, n, false);

	if (kv->gone_len == kv->gone_cap) {
		size_t cap = kv->gone_cap ? kv->gone_cap * 2 : 16;
		struct kv_expired_ent *g = realloc(kv->gone, cap * sizeof(*g));

		if (g) {
			kv->gone = g;
			kv->gone_cap = cap;
		}
	}
	/* Without memory for the note the change still happens; only the
	 * kernel's cache keeps the old state until attr_timeout. */
	if (kv->gone_len < kv->gone_cap) {
		e = &kv->gone[kv->gone_len];
		e->name = strdup(name);
		if (e->name) {
			e->parent = parent;
			e->id = id;
			kv->gone_len++;
		}
	}
	pthread_cond_signal(&kv->sweep_cond);
}

void kv_expire(struct kv_store *kv, struct kv_node *n)
{
	struct kv_node *dir = n->parent;

	if (!dir || (n->flags & KV_NODE_DELETED))
		return;
	kv_queue_inval(kv, dir->m.id, n->m.name, n->m.id);
	NLOG(NLOG_DEBUG, "ttl", "key expired", LF_INT("id", n->m.id));
	kv->ttl_expired++;
	kv_node_remove(kv, n);
	kv_dir_touch(kv, dir, kv_now_ns());
	pthread_cond_signal(&kv->sweep_cond);
}

struct kv_node *kv_live_child(struct kv_store *kv, struct kv_node *dir, const char *name)
{
	struct kv_node *n = kv_child_get(dir, name);

	if (n && kv_node_expired(n, kv_now_ms())) {
		kv_expire(kv, n);
		return NULL;
	}
	return n;
}

/* Expires what is due; with the lock held. */
static void sweep_locked(struct kv_store *kv)
{
	int64_t now = kv_now_ms();

	while (kv->heap_len && kv->heap[0].at <= now) {
		struct kv_deadline d = kv->heap[0];
		struct kv_node *n;

		heap_pop(kv);
		n = kv_node_get(kv, d.id);
		if (n && kv_node_expires(n) == d.at && !(n->flags & KV_NODE_DELETED))
			kv_expire(kv, n);
	}
}

/* Tells the filesystem what expired; takes and drops the lock. */
static void notify_gone(struct kv_store *kv)
{
	struct kv_expired_ent *g;
	size_t n;

	pthread_mutex_lock(&kv->lock);
	g = kv->gone;
	n = kv->gone_len;
	kv->gone = NULL;
	kv->gone_len = kv->gone_cap = 0;
	kv->gone_sending = true;
	pthread_mutex_unlock(&kv->lock);
	pthread_mutex_lock(&kv->notify_lock);
	for (size_t i = 0; i < n; i++) {
		if (kv->on_expire)
			kv->on_expire(kv->on_expire_arg, g[i].parent, g[i].name, g[i].id);
		free(g[i].name);
	}
	pthread_mutex_unlock(&kv->notify_lock);
	free(g);
	pthread_mutex_lock(&kv->lock);
	kv->gone_sending = false;
	pthread_cond_broadcast(&kv->inval_cond);
	pthread_mutex_unlock(&kv->lock);
}

int kv_wait_invals(struct kv_store *kv, int timeout_ms)
{
	struct timespec ts;
	int ret = 0;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	ts.tv_sec += timeout_ms / 1000;
	ts.tv_nsec += (long)(timeout_ms % 1000) * 1000000;
	if (ts.tv_nsec >= 1000000000) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000;
	}
	pthread_mutex_lock(&kv->lock);
	while (!ret && kv->sweeper_running && !kv->stopping && (kv->gone_len || kv->gone_sending)) {
		pthread_cond_signal(&kv->sweep_cond);
		if (pthread_cond_timedwait(&kv->inval_cond, &kv->lock, &ts) == ETIMEDOUT)
			ret = -ETIMEDOUT;
	}
	pthread_mutex_unlock(&kv->lock);
	return ret;
}

int kv_sweep(struct kv_store *kv)
{
	pthread_mutex_lock(&kv->lock);
	sweep_locked(kv);
	pthread_cond_signal(&kv->sweep_cond);
	pthread_mutex_unlock(&kv->lock);
	return 0;
}

static void *sweeper_main(void *arg)
{
	struct kv_store *kv = arg;

	pthread_mutex_lock(&kv->lock);
	while (!kv->stopping) {
		int64_t now, wait_ms = (int64_t)kv->opts.ttl_sweep_ms;
		struct timespec ts;

		sweep_locked(kv);
		kv_tx_reap(kv);
		if (kv->gone_len) {
			pthread_mutex_unlock(&kv->lock);
			notify_gone(kv);
			pthread_mutex_lock(&kv->lock);
			continue;
		}
		now = kv_now_ms();
		if (kv->heap_len && kv->heap[0].at - now < wait_ms)
			wait_ms = kv->heap[0].at - now;
		if (wait_ms < 1)
			wait_ms = 1;
		clock_gettime(CLOCK_MONOTONIC, &ts);
		ts.tv_sec += wait_ms / 1000;
		ts.tv_nsec += (wait_ms % 1000) * 1000000;
		if (ts.tv_nsec >= 1000000000) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000;
		}
		pthread_cond_timedwait(&kv->sweep_cond, &kv->lock, &ts);
	}
	pthread_cond_broadcast(&kv->inval_cond);
	pthread_mutex_unlock(&kv->lock);
	return NULL;
}

void kv_set_expire_fn(struct kv_store *kv, kv_expire_fn fn, void *arg)
{
	pthread_mutex_lock(&kv->notify_lock);
	kv->on_expire = fn;
	kv->on_expire_arg = arg;
	pthread_mutex_unlock(&kv->notify_lock);
}

int kv_sweeper_start(struct kv_store *kv)
{
	int ret;

	if (!kv->opts.ttl_sweep_ms)
		kv->opts.ttl_sweep_ms = 1000;
	ret = pthread_create(&kv->sweeper, NULL, sweeper_main, kv);
	if (ret)
		return -ret;
	kv->sweeper_running = true;
	return 0;
}

void kv_sweeper_stop(struct kv_store *kv)
{
	if (!kv->sweeper_running)
		return;
	pthread_mutex_lock(&kv->lock);
	kv->stopping = true;
	pthread_cond_signal(&kv->sweep_cond);
	pthread_mutex_unlock(&kv->lock);
	pthread_join(kv->sweeper, NULL);
	kv->sweeper_running = false;
}

void kv_ttl_destroy(struct kv_store *kv)
{
	for (size_t i = 0; i < kv->gone_len; i++)
		free(kv->gone[i].name);
	free(kv->gone);
	free(kv->heap);
}
