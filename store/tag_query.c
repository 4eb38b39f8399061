/*
 * Tag and query directories: parsing of expressions ("a+b,-c" forms), their
 * evaluation over the tag index, the LRU cache of results, and the
 * operations on entries (list, look up, tag, untag).
 *
 * An AND-term is evaluated by walking the members of its smallest positive
 * tag and testing each against the term's other tags in the key's own sorted
 * list, so a query costs O(members of its positive tags), never O(keys).
 * All of it runs under kv->lock, except the round trip to a backend that
 * evaluates queries itself (Redis: set operations on its tag sets); its
 * answer is then corrected with this mount's unflushed changes
 * (remote_evaluate).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "store/kv_internal.h"

/* Every factor takes at least two bytes of a 255-byte name ("a+"). */
#define Q_MAX_FACTORS (KV_NAME_MAX / 2 + 1)

struct query {
	char buf[KV_NAME_MAX + 1];
	/* The AST the backend's query op takes too (tags point into buf). */
	struct kv_query_factor f[Q_MAX_FACTORS];
	size_t nf;
	size_t term_end[Q_MAX_FACTORS]; /* term t is f[term_end[t-1] .. term_end[t]) */
	size_t nterms;
	bool plain; /* one positive tag and nothing else */
};

/* 0, or -ENOENT for anything that is not a well-formed expression. */
static int parse(const char *expr, struct query *q)
{
	size_t len = strlen(expr);
	char *p, *term_save = NULL;
	bool positive = false;

	if (len == 0 || len > KV_NAME_MAX)
		return -ENOENT;
	memcpy(q->buf, expr, len + 1);
	q->nf = q->nterms = 0;
	/* strsep, not strtok: "a,,b" and "a+" must fail, not skip the gap. */
	term_save = q->buf;
	while ((p = strsep(&term_save, ","))) {
		char *f;

		positive = false;
		while ((f = strsep(&p, "+"))) {
			bool neg = f[0] == '-';

			if (kv_tag_check(f + neg))
				return -ENOENT;
			q->f[q->nf++] = (struct kv_query_factor){ f + neg, neg };
			positive |= !neg;
		}
		/* A pure negation would be O(all keys): it names nothing. */
		if (!positive)
			return -ENOENT;
		q->term_end[q->nterms++] = q->nf;
	}
	q->plain = q->nf == 1;
	return 0;
}

static size_t term_start(const struct query *q, size_t t)
{
	return t ? q->term_end[t - 1] : 0;
}

static bool term_match(const struct query *q, size_t t, const struct kv_node *n)
{
	for (size_t i = term_start(q, t); i < q->term_end[t]; i++)
		if (kv_node_has_tag(n, q->f[i].tag) == q->f[i].neg)
			return false;
	return true;
}

static bool query_match(const struct query *q, const struct kv_node *n)
{
	for (size_t t = 0; t < q->nterms; t++)
		if (term_match(q, t, n))
			return true;
	return false;
}

static int id_cmp(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return (x > y) - (x < y);
}

/* Sorts ids[0..n) and drops repeats: the new count. */
static size_t sort_unique(uint64_t *ids, size_t n)
{
	size_t k = 0;

	if (n)
		qsort(ids, n, sizeof(*ids), id_cmp);
	for (size_t i = 0; i < n; i++)
		if (!k || ids[k - 1] != ids[i])
			ids[k++] = ids[i];
	return k;
}

/* Changed here since the last flush that completed: what the backend holds
 * of it is out of date (a batch being committed counts: it may or may not
 * have landed when the backend answers). */
static bool node_unflushed(const struct kv_node *n)
{
	return n->flags & (KV_NODE_ON_DIRTY | KV_NODE_INFLIGHT);
}

/* The ids of the keys matching q, sorted and unique (caller frees); with
 * unflushed_only, only those of keys changed here and not flushed yet. */
static int evaluate(struct kv_store *kv, const struct query *q, bool unflushed_only, uint64_t **out,
		    size_t *count)
{
	uint64_t *ids = NULL;
	size_t n = 0, cap = 0;

	for (size_t t = 0; t < q->nterms; t++) {
		struct kv_tag *smallest = NULL;
		struct kv_node *node;

		for (size_t i = term_start(q, t); i < q->term_end[t]; i++) {
			struct kv_tag *tag;

			if (q->f[i].neg)
				continue;
			tag = kv_tag_find(kv, q->f[i].tag);
			if (!tag) {
				smallest = NULL; /* an unknown tag: an empty term */
				break;
			}
			if (!smallest || htab_count(&tag->members) < htab_count(&smallest->members))
				smallest = tag;
		}
		if (!smallest)
			continue;
		for (size_t i = 0; (node = htab_next(&smallest->members, &i));) {
			if (unflushed_only && !node_unflushed(node))
				continue;
			if (!term_match(q, t, node))
				continue;
			if (n == cap) {
				size_t ncap = cap ? 2 * cap : 64;
				uint64_t *nids = realloc(ids, ncap * sizeof(*ids));

				if (!nids) {
					free(ids);
					return -ENOMEM;
				}
				ids = nids;
				cap = ncap;
			}
			ids[n++] = node->m.id;
		}
	}
	*out = ids;
	*count = sort_unique(ids, n);
	return 0;
}

/*
 * q evaluated by the backend (its query op) and made exact for this mount:
 * (the backend's ids - ids of keys changed or removed here and not flushed
 * - ids this mount does not know) + the unflushed keys here that match q by
 * the local index. An id the backend has but this mount does not know yet
 * (another mount's commit the change log has not brought) is left out: it
 * appears once sync.c applies that commit, which also renews the tags'
 * generations. A clean key whose tags another mount changed is answered as
 * the backend has it, which is the newer state.
 *
 * Called and returns with kv->lock held; drops it for the round trip (never
 * held across a backend call). gens[i] gets q->f[i]'s generation from before
 * the round trip: a change during it makes the cached result stale at once.
 * A flush that completes during the round trip makes keys clean whose
 * commit the answer may predate: the round trip is tried again, and after a
 * second such race -EAGAIN tells the caller to use the local index.
 */
static int remote_evaluate(struct kv_store *kv, const struct query *q, uint64_t *gens,
			   uint64_t **out, size_t *count)
{
	struct kv_backend *b = kv->backend;
	const struct kv_query_expr e = { q->f, q->nf, q->term_end, q->nterms };
	uint64_t *rids = NULL, *loc = NULL, *ids;
	size_t rn = 0, ln = 0, k = 0;
	int ret = -EAGAIN;

	for (int tries = 0; tries < 2 && ret == -EAGAIN; tries++) {
		uint64_t flushes = kv->flushes;

		for (size_t i = 0; i < q->nf; i++)
			gens[i] = kv_tag_gen(kv, q->f[i].tag);
		free(rids);
		rids = NULL;
		rn = 0;
		pthread_mutex_unlock(&kv->lock);
		/* A network round trip: the FUSE loop hands its other requests
		 * to another thread meanwhile, as for a backend read. */
		kv_may_block();
		ret = b->ops->query(b, &e, &rids, &rn);
		pthread_mutex_lock(&kv->lock);
		if (!ret && kv->flushes != flushes)
			ret = -EAGAIN;
	}
	if (!ret)
		ret = evaluate(kv, q, true, &loc, &ln);
	if (ret)
		goto out_free;
	ids = malloc((rn + ln + 1) * sizeof(*ids));
	if (!ids) {
		ret = -ENOMEM;
		goto out_free;
	}
	for (size_t i = 0; i < rn; i++) {
		struct kv_node *n = kv_node_get(kv, rids[i]);

		if (n && !(n->flags & (KV_NODE_DELETED | KV_NODE_STAGED)) && !node_unflushed(n) &&
		    n->parent && !S_ISDIR(n->m.mode))
			ids[k++] = rids[i];
	}
	if (ln)
		memcpy(ids + k, loc, ln * sizeof(*ids));
	*out = ids;
	*count = sort_unique(ids, k + ln);
out_free:
	free(rids);
	free(loc);
	return ret;
}

/* --- the cache ----------------------------------------------------------- */

struct qc_dep {
	char *tag;
	uint64_t gen; /* 0: the tag did not exist */
};

struct qc_ent {
	struct qc_ent *prev, *next; /* LRU order, most recent first */
	char *expr;
	uint64_t *ids;
	size_t nids;
	size_t ndeps;
	struct qc_dep deps[];
};

struct kv_qcache {
	struct htab by_expr; /* struct qc_ent * */
	struct qc_ent *head, *tail;
};

static uint64_t ent_hash(const void *item)
{
	const struct qc_ent *e = item;

	return htab_hash_bytes(e->expr, strlen(e->expr), 0);
}

static bool ent_match(const void *item, const void *key)
{
	return strcmp(((const struct qc_ent *)item)->expr, key) == 0;
}

int kv_qcache_new(struct kv_qcache **out)
{
	struct kv_qcache *c = calloc(1, sizeof(*c));

	if (!c)
		return -ENOMEM;
	htab_init(&c->by_expr, ent_hash, ent_match);
	*out = c;
	return 0;
}

static void ent_free(struct qc_ent *e)
{
	for (size_t i = 0; i < e->ndeps; i++)
		free(e->deps[i].tag);
	free(e->ids);
	free(e->expr);
	free(e);
}

static void lru_unlink(struct kv_qcache *c, struct qc_ent *e)
{
	if (e->prev)
		e->prev->next = e->next;
	else
		c->head = e->next;
	if (e->next)
		e->next->prev = e->prev;
	else
		c->tail = e->prev;
	e->prev = e->next = NULL;
}

static void lru_push(struct kv_qcache *c, struct qc_ent *e)
{
	e->prev = NULL;
	e->next = c->head;
	if (c->head)
		c->head->prev = e;
	c->head = e;
	if (!c->tail)
		c->tail = e;
}

static void ent_drop(struct kv_qcache *c, struct qc_ent *e)
{
	lru_unlink(c, e);
	htab_remove(&c->by_expr, e);
	ent_free(e);
}

void kv_qcache_free(struct kv_qcache *c)
{
	if (!c)
		return;
	while (c->head)
		ent_drop(c, c->head);
	htab_destroy(&c->by_expr);
	free(c);
}

size_t kv_qcache_count(const struct kv_qcache *c)
{
	return c ? htab_count(&c->by_expr) : 0;
}

void kv_qcache_trim(struct kv_store *kv)
{
	struct kv_qcache *c = kv->tags.cache;

	while (c->tail && htab_count(&c->by_expr) > kv->tags.cache_max)
		ent_drop(c, c->tail);
}

static bool ent_valid(struct kv_store *kv, const struct qc_ent *e)
{
	for (size_t i = 0; i < e->ndeps; i++)
		if (kv_tag_gen(kv, e->deps[i].tag) != e->deps[i].gen)
			return false;
	return true;
}

/*
 * Caches ids for expr (taking ownership of ids), valid while q->f[i]'s
 * generation is gens[i] (NULL: the current ones); on -ENOMEM ids stay the
 * caller's.
 */
static int cache_store(struct kv_store *kv, const char *expr, const struct query *q,
		       const uint64_t *gens, uint64_t *ids, size_t nids)
{
	struct kv_qcache *c = kv->tags.cache;
	struct qc_ent *e, *old;

	/* Another thread may have stored expr while the lock was dropped. */
	old = htab_find(&c->by_expr, htab_hash_bytes(expr, strlen(expr), 0), expr);
	if (old)
		ent_drop(c, old);
	e = calloc(1, sizeof(*e) + q->nf * sizeof(e->deps[0]));
	if (!e || !(e->expr = strdup(expr)))
		goto out_free;
	for (size_t i = 0; i < q->nf; i++) {
		bool seen = false;

		for (size_t j = 0; j < e->ndeps && !seen; j++)
			seen = !strcmp(e->deps[j].tag, q->f[i].tag);
		if (seen)
			continue;
		e->deps[e->ndeps].gen = gens ? gens[i] : kv_tag_gen(kv, q->f[i].tag);
		if (!(e->deps[e->ndeps].tag = strdup(q->f[i].tag)))
			goto out_free;
		e->ndeps++;
	}
	if (htab_insert(&c->by_expr, e))
		goto out_free;
	e->ids = ids;
	e->nids = nids;
	lru_push(c, e);
	kv_qcache_trim(kv);
	return 0;

out_free:
	if (e)
		ent_free(e);
	return -ENOMEM;
}

/*
 * The result of a query: *ids points into the cache (valid while kv->lock is
 * held) or, with *owned set, to an array the caller frees. With a backend
 * that evaluates queries, a miss drops kv->lock for the round trip; a
 * backend error falls back to the local index, which is exact for this
 * mount, and is counted.
 */
static int query_ids(struct kv_store *kv, const char *expr, const struct query *q, uint64_t **ids,
		     size_t *n, bool *owned)
{
	struct kv_qcache *c = kv->tags.cache;
	struct qc_ent *e = NULL;
	uint64_t gens[Q_MAX_FACTORS], *gensp = NULL;
	int ret = -EAGAIN;

	if (kv->tags.cache_max)
		e = htab_find(&c->by_expr, htab_hash_bytes(expr, strlen(expr), 0), expr);
	if (e && ent_valid(kv, e)) {
		kv->tags.hits++;
		lru_unlink(c, e);
		lru_push(c, e);
		*ids = e->ids;
		*n = e->nids;
		*owned = false;
		return 0;
	}
	kv->tags.misses++;
	if (e)
		ent_drop(c, e);
	if (kv->backend->ops->query) {
		ret = remote_evaluate(kv, q, gens, ids, n);
		if (!ret) {
			kv->tags.backend_queries++;
			gensp = gens;
		} else if (ret != -EAGAIN) {
			/* The backend already logged why (rate-limited); a
			 * listing must not fail because it is down. */
			kv->tags.backend_fallbacks++;
		}
	}
	if (ret)
		ret = evaluate(kv, q, false, ids, n);
	if (ret)
		return ret;
	*owned = !kv->tags.cache_max || cache_store(kv, expr, q, gensp, *ids, *n) != 0;
	return 0;
}

/* --- the operations ------------------------------------------------------ */

/*
 * The members of a directory's listing, as nodes (caller frees the array).
 * A plain tag is listed from the local index unless the backend evaluates
 * queries: then it goes through the cache and the backend like any query
 * (so the lock may be dropped meanwhile), and only its existence is the
 * local index's to say.
 */
static int dir_nodes(struct kv_store *kv, const char *expr, const struct query *q,
		     struct kv_node ***out, size_t *count)
{
	struct kv_node **nodes;
	size_t k = 0;

	if (q->plain && kv->backend->ops->query && !kv_tag_find(kv, q->f[0].tag))
		return -ENOENT;
	if (q->plain && !kv->backend->ops->query) {
		struct kv_tag *t = kv_tag_find(kv, q->f[0].tag);
		struct kv_node *n;

		if (!t)
			return -ENOENT;
		nodes = malloc((htab_count(&t->members) + 1) * sizeof(*nodes));
		if (!nodes)
			return -ENOMEM;
		for (size_t i = 0; (n = htab_next(&t->members, &i));)
			nodes[k++] = n;
	} else {
		uint64_t *ids;
		size_t nids;
		bool owned;
		int ret = query_ids(kv, expr, q, &ids, &nids, &owned);

		if (ret)
			return ret;
		nodes = malloc((nids + 1) * sizeof(*nodes));
		for (size_t i = 0; nodes && i < nids; i++) {
			struct kv_node *n = kv_node_get(kv, ids[i]);

			/* A valid result only names keys in the tree. */
			if (n && !(n->flags & (KV_NODE_DELETED | KV_NODE_STAGED)) && n->parent)
				nodes[k++] = n;
		}
		if (owned)
			free(ids);
		if (!nodes)
			return -ENOMEM;
	}
	*out = nodes;
	*count = k;
	return 0;
}

/* Keeps the live nodes in place and expires the others: a key past its
 * deadline is gone from every listing at once, even before the sweeper. */
static size_t drop_expired(struct kv_store *kv, struct kv_node **nodes, size_t n)
{
	int64_t now = kv_now_ms();
	size_t k = 0, j = n;

	for (size_t i = 0; i < n; i++) {
		if (kv_node_expired(nodes[i], now))
			nodes[--j] = nodes[i]; /* j > i: i was read already */
		else
			nodes[k++] = nodes[i];
	}
	/* Expiring changes the index, so only after the walk over it. */
	for (size_t i = j; i < n; i++)
		kv_expire(kv, nodes[i]);
	return k;
}

int kv_tag_dir(struct kv_store *kv, const char *expr, bool *is_query)
{
	struct query q;
	int ret = parse(expr, &q);

	if (ret)
		return ret;
	*is_query = !q.plain;
	if (!q.plain)
		return 0;
	pthread_mutex_lock(&kv->lock);
	ret = kv_tag_find(kv, q.f[0].tag) ? 0 : -ENOENT;
	pthread_mutex_unlock(&kv->lock);
	return ret;
}

int kv_tag_readdir(struct kv_store *kv, const char *expr, struct kv_dirent **out, size_t *count)
{
	struct kv_dirent *ents = NULL;
	struct kv_node **nodes = NULL;
	size_t n = 0, k = 0;
	struct query q;
	int ret = parse(expr, &q);

	if (ret)
		return ret;
	pthread_mutex_lock(&kv->lock);
	ret = dir_nodes(kv, expr, &q, &nodes, &n);
	if (ret)
		goto out;
	n = drop_expired(kv, nodes, n);
	ents = calloc(n + 1, sizeof(*ents));
	if (!ents) {
		ret = -ENOMEM;
		goto out;
	}
	for (size_t i = 0; i < n; i++) {
		char name[KV_NAME_MAX + 1];

		if (kv_node_entry_name(nodes[i], name))
			continue;
		ents[k].id = nodes[i]->m.id;
		ents[k].mode = S_IFLNK;
		if (!(ents[k].name = strdup(name))) {
			kv_dirents_free(ents, k);
			ret = -ENOMEM;
			goto out;
		}
		k++;
	}
	*out = ents;
	*count = k;
out:
	pthread_mutex_unlock(&kv->lock);
	free(nodes);
	return ret;
}

/*
 * The key entry names in directory q, or NULL. With listed, a key the
 * listing has although its local tags do not match (another mount retagged
 * it, and the backend's answer is ahead of the change log) is found too, so
 * that every listed entry can be looked up; a retag acts on local tags only.
 * May drop kv->lock (dir_nodes).
 */
static struct kv_node *find_entry(struct kv_store *kv, const char *expr, const struct query *q,
				  const char *entry, bool listed)
{
	struct kv_node *n = kv_entry_resolve(kv, entry), *found = NULL;
	struct kv_node **nodes;
	uint64_t id = 0;
	size_t count;

	if (n && query_match(q, n))
		return n;
	if (n && listed && kv->backend->ops->query)
		id = n->m.id; /* n may go while the lock is dropped: by id */
	if ((!id && !kv_entry_is_hashed(entry)) || dir_nodes(kv, expr, q, &nodes, &count))
		return NULL;
	count = drop_expired(kv, nodes, count);
	for (size_t i = 0; i < count && !found; i++) {
		char name[KV_NAME_MAX + 1];

		if (id ? nodes[i]->m.id == id
		       : !kv_node_entry_name(nodes[i], name) && !strcmp(name, entry))
			found = nodes[i];
	}
	free(nodes);
	return found;
}

int kv_tag_lookup(struct kv_store *kv, const char *expr, const char *entry, struct kv_attr *out)
{
	struct kv_node *n;
	struct query q;
	int ret = parse(expr, &q);

	if (ret)
		return ret;
	pthread_mutex_lock(&kv->lock);
	n = find_entry(kv, expr, &q, entry, true);
	if (n)
		kv_fill_attr(n, out);
	pthread_mutex_unlock(&kv->lock);
	return n ? 0 : -ENOENT;
}

/* Adds or removes one tag of the key entry names. */
static int retag(struct kv_store *kv, const char *tag, const char *entry, bool add,
		 struct kv_attr *out)
{
	struct kv_node *n;
	struct query q;
	char **tags;
	uint32_t ntags;
	int ret;

	/* Query directories are read-only. */
	if (kv_tag_check(tag))
		return -EPERM;
	parse(tag, &q);
	pthread_mutex_lock(&kv->lock);
	/* A long (hashed) name can only be found among the tag's members,
	 * so a key is tagged by a long name with setfattr instead. */
	n = add ? kv_entry_resolve(kv, entry) : find_entry(kv, tag, &q, entry, false);
	if (!n) {
		ret = -ENOENT;
		goto out;
	}
	if (add && kv_node_has_tag(n, tag)) {
		ret = -EEXIST;
		goto out;
	}
	if (add && kv_node_ntags(n) >= KV_TAGS_PER_KEY) {
		ret = -ENOSPC;
		goto out;
	}
	ret = kv_tags_edit(kv_node_tags(n), kv_node_ntags(n), tag, add, &tags, &ntags);
	if (ret)
		goto out;
	ret = kv_node_set_tags(kv, n, tags, ntags);
	if (ret)
		kv_tags_free_list(tags, ntags);
	else if (out)
		kv_fill_attr(n, out);
out:
	pthread_mutex_unlock(&kv->lock);
	return ret;
}

int kv_tag_link(struct kv_store *kv, const char *tag, const char *entry, struct kv_attr *out)
{
	return retag(kv, tag, entry, true, out);
}

int kv_tag_unlink(struct kv_store *kv, const char *tag, const char *entry)
{
	return retag(kv, tag, entry, false, NULL);
}
