/*
 * Several mounts of one store (spec section 9): the sync thread applies
 * what other mounts committed to this mount's tree, and ids are handed out
 * from blocks reserved in the backend so that two mounts never create two
 * records with one id.
 *
 * The thread waits on the backend's change log (changes()), fetches the
 * current records of the ids it names (fetch()) without kv->lock, then
 * applies them under kv->lock: new records are inserted, moved or renamed
 * ones are moved, changed ones get their metadata (tags re-indexed,
 * deadline re-indexed, a cached value dropped when its version changed),
 * removed or expired ones leave the tree. The kernel is then told, from
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
	want = !s->next_first && s->id_end - kv->max_id < ID_BLOCK / 2;
	pthread_mutex_unlock(&kv->lock);
	if (!want || reserve(kv, &first, &last))
		return;
	pthread_mutex_lock(&kv->lock);
	s->next_first = first;
	s->next_last = last;
	pthread_mutex_unlock(&kv->lock);
}

/* --- applying changes --- */

struct note {
	uint64_t parent, id;
	char *name;
};

struct notes {
	struct note *v;
	size_t n, cap;
};

static void note(struct notes *ns, const struct kv_node *n)
{
	const struct kv_node *p = n->parent;

	if (ns->n == ns->cap) {
		size_t cap = ns->cap ? 2 * ns->cap : 16;
		struct note *v = realloc(ns->v, cap * sizeof(*v));

		if (!v)
			return; /* the kernel keeps its cache until attr_timeout */
		ns->v = v;
		ns->cap = cap;
	}
	ns->v[ns->n].parent = p ? p->m.id : 0;
	ns->v[ns->n].id = n->m.id;
	ns->v[ns->n].name = strdup(n->m.name ? n->m.name : "");
	if (ns->v[ns->n].name)
		ns->n++;
}

static bool busy(const struct kv_node *n)
{
	return n->flags & (KV_NODE_ON_DIRTY | KV_NODE_INFLIGHT | KV_NODE_DELETED);
}

static bool is_dir(const struct kv_node *n)
{
	return S_ISDIR(n->m.mode);
}

static bool placed(const struct kv_store *kv, const struct kv_node *n)
{
	return n == kv->root || n->parent;
}

/* Takes n out of its directory, nothing else (it is about to move). */
static void unhook(struct kv_store *kv, struct kv_node *n, struct notes *ns)
{
	if (!n->parent)
		return;
	note(ns, n);
	if (!is_dir(n))
		kv_tags_unindex_node(kv, n);
	htab_remove(n->parent->children, n);
	if (is_dir(n))
		n->parent->nsubdirs--;
	n->parent = NULL;
}

/* Removes a clean node the backend no longer has, without owing a DEL. */
static void drop_node(struct kv_store *kv, struct kv_node *n, struct notes *ns)
{
	note(ns, n);
	n->flags &= ~KV_NODE_COMMITTED;
	kv_node_remove(kv, n);
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

struct item {
	struct kv_change *c;
	struct kv_node *n;	/* the node (new ones not in the tree yet) */
	bool fresh, done;
};

struct batch {
	struct item *it;
	size_t n;
	uint64_t *ids;		/* sorted ids of items not done */
	size_t nids;
};

static bool in_batch(const struct batch *b, uint64_t id)
{
	return bsearch(&id, b->ids, b->nids, sizeof(id), cmp_u64) != NULL;
}

static bool changed_elsewhere(const struct kv_meta *a, const struct kv_meta *b)
{
	return a->ctime_ns != b->ctime_ns || a->mtime_ns != b->mtime_ns ||
	       a->parent != b->parent || a->vver != b->vver || a->size != b->size ||
	       a->mode != b->mode || a->uid != b->uid || a->gid != b->gid ||
	       strcmp(a->name ? a->name : "", b->name ? b->name : "");
}

/* Replaces n's metadata (n is out of the tree) with m. */
static int take_meta(struct kv_store *kv, struct kv_node *n, const struct kv_meta *m)
{
	struct kv_meta copy;
	int64_t exp;

	if (kv_meta_copy(&copy, m))
		return -ENOMEM;
	exp = copy.expires_ms;
	copy.expires_ms = n->m.expires_ms;
	/* A cached clean value of another version is stale now. */
	if (n->value && (n->m.vver != copy.vver || n->m.size != copy.size))
		kv_value_account(kv, n, NULL);
	/* Another version of the record (ctime moves with every change of a
	 * record, atime alone is none) is a change like any other: a
	 * transaction that saw the record before conflicts with it
	 * (tx_commit.c). n is clean, so no flush is racing. A fetch of what
	 * this mount holds already is no change. */
	if (changed_elsewhere(&n->m, &copy))
		n->version++;
	kv_node_meta_clear(n); /* the name may live inside n */
	n->m = copy;
	n->flags |= KV_NODE_COMMITTED;
	return kv_set_deadline(kv, n, exp);
}

/* One try at an upsert: 1 done, 0 not yet (its parent or its name's holder
 * comes later in the batch). */
static int apply_put(struct kv_store *kv, struct batch *b, struct item *it, struct notes *ns)
{
	const struct kv_meta *m = &it->c->meta;
	struct kv_node *n = it->n, *p, *occ;

	if (m->id == KV_ROOT_ID || !m->parent) {
		/* The root never moves; its tags are the declared tags,
		 * which stay as this mount loaded them. */
		if (n == kv->root) {
			char **tags = n->m.tags;
			uint32_t ntags = n->m.ntags;

			n->m.tags = NULL;
			n->m.ntags = 0;
			if (!take_meta(kv, n, m)) {
				kv_tags_free_list(n->m.tags, n->m.ntags);
				n->m.tags = tags;
				n->m.ntags = ntags;
			} else {
				n->m.tags = tags;
				n->m.ntags = ntags;
			}
			n->m.parent = 0;
			note(ns, n);
		}
		return 1;
	}
	p = kv_node_get(kv, m->parent);
	if (!p || !is_dir(p) || (p->flags & KV_NODE_DELETED) || !placed(kv, p))
		return 0;
	for (struct kv_node *q = p; q; q = q->parent)
		if (q == n)
			return 0; /* below itself until its parent moves */
	occ = kv_child_get(p, m->name);
	if (occ && occ != n) {
		if (busy(occ))
			return 1; /* local wins; the flush settles it */
		if (in_batch(b, occ->m.id))
			return 0;
		/* The name went to this record in the backend. */
		if (is_dir(occ) && occ->children && htab_count(occ->children))
			return 0;
		drop_node(kv, occ, ns);
	}
	unhook(kv, n, ns);
	if (take_meta(kv, n, m) || kv_node_attach(p, n))
		return -ENOMEM;
	if (!is_dir(n))
		kv_tags_index_node(kv, n);
	if (it->fresh) {
		if (is_dir(n))
			kv->ndirs++;
		else
			kv->nkeys++;
		it->fresh = false;
	}
	note(ns, n);
	return 1;
}

/* A removal: 1 done, 0 not yet (a directory whose entries leave later). */
static int apply_gone(struct kv_store *kv, struct item *it, struct notes *ns)
{
	struct kv_node *n = it->n;

	if (n == kv->root)
		return 1;
	if (is_dir(n) && n->children && htab_count(n->children))
		return 0;
	if (!n->parent) {
		/* Not in the tree: nothing the kernel can see. */
		return 1;
	}
	drop_node(kv, n, ns);
	return 1;
}

/*
 * Does directory d keep an entry this mount means to keep: anything but a
 * file the same changes remove (gone[0..ngone), sorted) that holds no value
 * of its own here? Such a file's commit is refused by the backend (its value went with
 * the removal), so it goes too.
 */
/* The ids c[0..n) removes, sorted; NULL without memory. */
static uint64_t *gone_ids(const struct kv_change *c, size_t n, size_t *k)
{
	uint64_t *v = malloc((n ? n : 1) * sizeof(*v));

	*k = 0;
	for (size_t i = 0; v && i < n; i++)
		if (c[i].gone)
			v[(*k)++] = c[i].id;
	if (v)
		qsort(v, *k, sizeof(*v), cmp_u64);
	return v;
}

static bool has_survivor(const struct kv_node *d, const uint64_t *gone, size_t ngone)
{
	struct kv_node *x;

	for (size_t i = 0; d->children && (x = htab_next(d->children, &i));)
		if (is_dir(x) || (x->flags & KV_NODE_VALUE_DIRTY) ||
		    !bsearch(&x->m.id, gone, ngone, sizeof(*gone), cmp_u64))
			return true;
	return false;
}

/* Marks n and everything below it for the next flush. */
static void mark_subtree(struct kv_store *kv, struct kv_node *n)
{
	struct kv_node *c;

	kv_mark_dirty(kv, n);
	for (size_t i = 0; n->children && (c = htab_next(n->children, &i));)
		mark_subtree(kv, c);
}

/*
 * Another mount removed directory d, empty as it saw it, while this mount
 * has entries in it (made after that mount last looked, or not flushed
 * yet). The entries win, as an rmdir of a non-empty directory fails: d is
 * committed again as a record the backend may have lost (sent, not
 * committed: the commit rebuilds its index and entry), and so is every
 * record below it, so that mounts which dropped them as orphans when their
 * directory was gone fetch them again.
 */
static void recreate(struct kv_store *kv, struct kv_node *d)
{
	NLOG(NLOG_WARN, "sync", "a directory another mount removed still has entries here: "
	     "committing it again", LF_INT("id", d->m.id), LF_STR("name", d->m.name));
	d->flags = (d->flags & ~KV_NODE_COMMITTED) | KV_NODE_SENT;
	mark_subtree(kv, d);
}

static void push_id(uint64_t **ids, size_t *n, uint64_t id)
{
	uint64_t *v = realloc(*ids, (*n + 1) * sizeof(*v));

	/* Without memory the id is not fetched again: the record shows once
	 * it changes again, or at the next reload. */
	if (v) {
		v[(*n)++] = id;
		*ids = v;
	}
}

static int cmp_item(const void *a, const void *b)
{
	uint64_t x = (*(struct item *const *)a)->c->id, y = (*(struct item *const *)b)->c->id;

	return x < y ? -1 : x > y;
}

/*
 * A new record not placed because its directory is one this mount removed
 * or changed and has not committed yet, or is such a new record itself, is
 * fetched again with the busy ones: that directory may come back (the
 * commit script keeps a directory another mount filled meanwhile, and
 * announces it with what is below it), and then the record has a place.
 */
static void requeue_waiting(struct kv_store *kv, struct batch *b, uint64_t **busy_ids,
			    size_t *nbusy)
{
	struct item **w = malloc((b->n ? b->n : 1) * sizeof(*w));
	bool *wait = calloc(b->n ? b->n : 1, sizeof(*wait));
	size_t k = 0;

	if (!w || !wait)
		goto out;
	for (size_t i = 0; i < b->n; i++)
		if (b->it[i].fresh && !b->it[i].done && !b->it[i].c->gone)
			w[k++] = &b->it[i];
	qsort(w, k, sizeof(*w), cmp_item);
	/* Parents first or not: until nothing more is found. */
	for (bool more = true; more;) {
		more = false;
		for (size_t j = 0; j < k; j++) {
			struct kv_change key = { .id = w[j]->c->meta.parent };
			struct item ki = { .c = &key }, *kp = &ki, **found;
			struct kv_node *p = kv_node_get(kv, key.id);

			if (wait[j] || !p)
				continue;
			found = bsearch(&kp, w, k, sizeof(*w), cmp_item);
			/* Flushed or not, but not merely kept for open handles:
			 * that could last, and re-fetching costs a round trip
			 * every BUSY_WAIT_MS. */
			if (found ? !wait[found - w] :
				    !(p->flags & (KV_NODE_ON_DIRTY | KV_NODE_INFLIGHT)))
				continue;
			wait[j] = true;
			more = true;
			push_id(busy_ids, nbusy, w[j]->c->id);
		}
	}
out:
	free(w);
	free(wait);
}

/*
 * With kv->lock held: applies c[0..n). Ids of records this mount holds
 * dirty are appended to *busy_ids (fetched again later).
 */
static void apply(struct kv_store *kv, struct kv_change *c, size_t n, struct notes *ns,
		  uint64_t **busy_ids, size_t *nbusy)
{
	struct batch b = { calloc(n ? n : 1, sizeof(*b.it)), 0,
			   calloc(n ? n : 1, sizeof(uint64_t)), 0 };
	uint64_t *gone = NULL;
	size_t ngone = 0;
	bool progress = true;

	if (!b.it || !b.ids)
		goto out;
	for (size_t i = 0; i < n; i++) {
		struct kv_node *node = kv_node_get(kv, c[i].id);
		struct item *it = &b.it[b.n];

		/* A transaction's staged node is never a record of the backend. */
		if (node && (node->flags & KV_NODE_STAGED))
			continue;
		if (node && (node->flags & KV_NODE_DELETED) &&
		    !(node->flags & (KV_NODE_ON_DIRTY | KV_NODE_INFLIGHT)))
			continue; /* removed here, kept only for open handles */
		if (node && busy(node)) {
			push_id(busy_ids, nbusy, c[i].id);
			continue;
		}
		if (!node && c[i].gone)
			continue;
		if (!node) {
			node = kv_node_new_named("");
			if (!node)
				continue;
			node->m.id = c[i].id;
			if (htab_insert(&kv->by_id, node)) {
				free(node);
				continue;
			}
			it->fresh = true;
		}
		it->c = &c[i];
		it->n = node;
		b.n++;
	}
	while (progress) {
		progress = false;
		b.nids = 0;
		for (size_t i = 0; i < b.n; i++)
			if (!b.it[i].done)
				b.ids[b.nids++] = b.it[i].c->id;
		qsort(b.ids, b.nids, sizeof(*b.ids), cmp_u64);
		for (size_t i = 0; i < b.n; i++) {
			struct item *it = &b.it[i];
			int r;

			if (it->done)
				continue;
			r = it->c->gone ? apply_gone(kv, it, ns) : apply_put(kv, &b, it, ns);
			if (r) {
				it->done = true;
				progress = true;
			}
		}
	}
	for (size_t i = 0; i < b.n; i++) {
		struct item *it = &b.it[i];

		/* A removal still not done: a directory with entries left. If
		 * they only wait to go too, the directory is looked at again
		 * once they have. */
		if (!it->done && it->c->gone && it->n->parent) {
			if (!gone)
				gone = gone_ids(c, n, &ngone);
			if (!gone || has_survivor(it->n, gone, ngone))
				recreate(kv, it->n);
			else
				push_id(busy_ids, nbusy, it->c->id);
		}
	}
	requeue_waiting(kv, &b, busy_ids, nbusy);
	for (size_t i = 0; i < b.n; i++) {
		/* Never placed (an orphan in the backend): not kept. */
		if (b.it[i].fresh && !b.it[i].n->parent) {
			if (b.it[i].n->m.expires_ms)
				kv_set_deadline(kv, b.it[i].n, 0);
			kv_node_free(kv, b.it[i].n);
		}
	}
out:
	free(gone);
	free(b.it);
	free(b.ids);
}

/* Tells the filesystem; without kv->lock. */
static void send_notes(struct kv_store *kv, struct notes *ns)
{
	pthread_mutex_lock(&kv->notify_lock);
	for (size_t i = 0; i < ns->n; i++) {
		if (kv->on_expire)
			kv->on_expire(kv->on_expire_arg, ns->v[i].parent, ns->v[i].name,
				      ns->v[i].id);
		free(ns->v[i].name);
	}
	pthread_mutex_unlock(&kv->notify_lock);
	ns->n = 0;
}

/* --- on demand: close-to-open and claims --- */

int kv_refresh(struct kv_store *kv, uint64_t parent, const char *name, uint64_t id)
{
	const struct kv_backend_ops *ops = kv->backend->ops;
	struct kv_change c[3];
	struct notes ns = { 0 };
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
	apply(kv, c, n, &ns, &busy_ids, &nbusy);
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
	*claimed = ret == 0;
	if (ret)
		NLOG(NLOG_DEBUG, "sync", "cannot claim a name in the backend; the create is "
		     "atomic within this mount only", LF_STR("error", strerror(-ret)));
	return 0;
}

/* --- the thread --- */

static int fetch_apply(struct kv_store *kv, uint64_t **pending, size_t *npending)
{
	struct kv_change *c = NULL;
	struct notes ns = { 0 };
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
	apply(kv, c, n, &ns, &still, &nstill);
	pthread_mutex_unlock(&kv->lock);
	kv_changes_clear(c, n);
	free(c);
	free(ids);
	send_notes(kv, &ns);
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
		if (!(n->flags & KV_NODE_COMMITTED) ||
		    bsearch(&n->m.id, l.ids, k, sizeof(*l.ids), cmp_u64))
			continue;
		if (collect(&n->m, &l)) {
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
