/*
 * Applying what other mounts committed (sync.c fetches it) to this mount's
 * tree: new records inserted, moved or renamed ones moved, changed ones
 * given their metadata (tags and deadline re-indexed, a cached value of
 * another version dropped), removed ones taken out; then the kernel is told
 * (kv_sync_send_notes). See sync.c for the conflict rule.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "store/sync.h"
#include "util/log.h"

static void note_entry(struct kv_sync_notes *ns, uint64_t parent, const char *name, uint64_t id)
{
	if (ns->n == ns->cap) {
		size_t cap = ns->cap ? 2 * ns->cap : 16;
		struct kv_sync_note *v = realloc(ns->v, cap * sizeof(*v));

		if (!v)
			return; /* the kernel keeps its cache until attr_timeout */
		ns->v = v;
		ns->cap = cap;
	}
	ns->v[ns->n].parent = parent;
	ns->v[ns->n].id = id;
	ns->v[ns->n].name = strdup(name ? name : "");
	if (ns->v[ns->n].name)
		ns->n++;
}

/* The note ends the kernel's cache period of n (kv_cache.c): its
 * invalidation goes out with the others (kv_sync_send_notes). */
static void note(struct kv_sync_notes *ns, struct kv_node *n)
{
	n->flags &= ~(KV_NODE_CACHE_OK | KV_NODE_KPAGES);
	note_entry(ns, n->parent ? n->parent->m.id : 0, n->m.name, n->m.id);
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
static void unhook(struct kv_store *kv, struct kv_node *n, struct kv_sync_notes *ns)
{
	if (!n->parent)
		return;
	note(ns, n);
	if (!is_dir(n))
		kv_tags_unindex_node(kv, n);
	htab_remove(n->parent->children, n);
	if (is_dir(n))
		kv_node_subdir_gone(n->parent);
	n->parent = NULL;
}

/* Removes a clean node the backend no longer has, without owing a DEL. */
static void drop_node(struct kv_store *kv, struct kv_node *n, struct kv_sync_notes *ns)
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
	bool held;		/* its name is a busy node's here: fetched again */
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
	struct kv_meta copy, cur;
	int64_t exp = m->expires_ms;
	bool changed;

	if (kv_meta_copy(&copy, m))
		return -ENOMEM;
	/* A cached clean value of another version is stale now. */
	if (n->value && (n->m.vver != copy.vver || n->m.size != copy.size))
		kv_value_account(kv, n, NULL);
	/* Another version of the record (ctime moves with every change of a
	 * record, atime alone is none) is a change like any other: a
	 * transaction that saw the record before conflicts with it
	 * (tx_commit.c). n is clean, so no flush is racing. A fetch of what
	 * this mount holds already is no change. */
	kv_node_meta_view(n, &cur);
	changed = changed_elsewhere(&cur, &copy);
	if (kv_node_meta_take(n, &copy)) {
		kv_meta_clear(&copy);
		return -ENOMEM;
	}
	if (changed)
		n->version++;
	n->flags |= KV_NODE_COMMITTED;
	return kv_set_deadline(kv, n, exp);
}

/* One try at an upsert: 1 done, 0 not yet (its parent or its name's holder
 * comes later in the batch). */
static int apply_put(struct kv_store *kv, struct batch *b, struct item *it, struct kv_sync_notes *ns)
{
	const struct kv_meta *m = &it->c->meta;
	struct kv_node *n = it->n, *p, *occ;

	if (m->id == KV_ROOT_ID || !m->parent) {
		/* The root never moves; its tags are the declared tags, as
		 * the backend holds them (the root is clean here: nothing this
		 * mount declared waits for a flush). */
		if (n == kv->root) {
			char **old;
			uint32_t nold = kv_node_ntags(n);

			if (!kv_tags_copy_list(kv_node_tags(n), nold, &old) &&
			    !take_meta(kv, n, m)) {
				kv_tags_declared_follow(kv, old, nold);
				kv_tags_free_list(old, nold);
			} else if (old) {
				kv_tags_free_list(old, nold);
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
		/* This mount's flush settles it: occ takes the name, or gives
		 * way (kv_op.may_yield) and moves to lost+found, and then this
		 * record (with what waits for it) is placed when fetched
		 * again. */
		if (busy(occ)) {
			it->held = true;
			return 0;
		}
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
static int apply_gone(struct kv_store *kv, struct item *it, struct kv_sync_notes *ns)
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

/*
 * Does directory d keep an entry this mount means to keep: anything but a
 * file the same changes remove (gone[0..ngone), sorted) that holds no new
 * value of its own here? Such a file's commit is refused by the backend
 * (its value went with the removal, or it had none), so it goes too.
 */
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
 * committed again (its index gone, the commit rebuilds it and d's entry),
 * and so is every record below it, so that mounts which dropped them as
 * orphans when their directory was gone fetch them again. If another
 * mount's record took d's name meanwhile, that commit gives way to it
 * (kv_op.may_yield) and d moves to lost+found (kv_recover_displaced): the
 * name was given up.
 */
static void recreate(struct kv_store *kv, struct kv_node *d)
{
	NLOG(NLOG_WARN, "sync", "a directory another mount removed still has entries here: "
	     "committing it again", LF_INT("id", d->m.id), LF_STR("name", d->m.name));
	mark_subtree(kv, d);
}

/* Appends id to *ids, which only ever grows here: its capacity is the
 * next power of two from *n (16 at least). */
static void push_id(uint64_t **ids, size_t *n, uint64_t id)
{
	if (*n < 16 ? *n == 0 : !(*n & (*n - 1))) {
		uint64_t *v = realloc(*ids, (*n < 16 ? 16 : 2 * *n) * sizeof(*v));

		/* Without memory the id is not fetched again: the record
		 * shows once it changes again, or at the next reload. */
		if (!v)
			return;
		*ids = v;
	}
	(*ids)[(*n)++] = id;
}

static int cmp_item(const void *a, const void *b)
{
	uint64_t x = (*(struct item *const *)a)->c->id, y = (*(struct item *const *)b)->c->id;

	return x < y ? -1 : x > y;
}

/*
 * A new record not placed because its directory is one this mount removed
 * or changed and has not committed yet, or is such a new record itself,
 * or because its name is a busy node's here (held), is fetched again with
 * the busy ones: that directory may come back (the
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
	for (size_t j = 0; j < k; j++)
		wait[j] = w[j]->held; /* kv_sync_apply fetches those again */
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

void kv_sync_apply(struct kv_store *kv, struct kv_change *c, size_t n, struct kv_sync_notes *ns,
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

		if (!it->done && it->held)
			push_id(busy_ids, nbusy, it->c->id);
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
			if (kv_node_expires(b.it[i].n))
				kv_set_deadline(kv, b.it[i].n, 0);
			kv_node_free(kv, b.it[i].n);
		}
	}
out:
	free(gone);
	free(b.it);
	free(b.ids);
}

void kv_sync_send_notes(struct kv_store *kv, struct kv_sync_notes *ns)
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

