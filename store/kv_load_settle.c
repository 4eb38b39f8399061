/*
 * A store other mounts change while this one loads is not read at one
 * instant (Redis: SSCAN of the id set, then the records): a record may name
 * a directory made or moved in after the scan passed it, and two records may
 * hold one name because one of them was removed or renamed meanwhile (an
 * rmdir and mkdir of a name, mv a b; mv c a). Before anything goes to
 * lost+found (kv_recover.c), the records involved are fetched as the backend
 * has them now: missing directories are added, records gone leave, records
 * moved take their new place, round after round while anything changes.
 * Only what still has no place is
 * a real orphan. What changes after that comes through the change log,
 * which the mount reads from a point taken before the load.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "store/kv_internal.h"

/* Each round evicts one level of a subtree removed meanwhile (what was
 * below a record that is gone is fetched in the next), so the rounds go on
 * while something changes, up to one more than the deepest possible key
 * (a key of KV_KEY_MAX bytes has at most half as many levels). */
#define ROUNDS (KV_KEY_MAX / 2 + 1)

struct settle {
	struct kv_store *kv;
	struct kv_node **v;	/* the records without a place */
	size_t n, cap;
};

static int keep(struct settle *s, struct kv_node *x)
{
	if (s->n == s->cap) {
		size_t cap = s->cap ? 2 * s->cap : 16;
		struct kv_node **v = realloc(s->v, cap * sizeof(*v));

		if (!v)
			return -ENOMEM;
		s->v = v;
		s->cap = cap;
	}
	s->v[s->n++] = x;
	return 0;
}

/* Takes x, linked, out of the tree; it goes back on the list. */
static int unplace(struct settle *s, struct kv_node *x)
{
	kv_node_detach(x);
	if (S_ISDIR(x->m.mode))
		s->kv->ndirs--;
	else
		s->kv->nkeys--;
	return keep(s, x);
}

/* x is gone from the backend: it leaves, what was below it is placed anew. */
static int evict(struct settle *s, struct kv_node *x)
{
	struct kv_node *c;
	int ret = 0;

	if (x->parent) {
		kv_node_detach(x);
		if (S_ISDIR(x->m.mode))
			s->kv->ndirs--;
		else
			s->kv->nkeys--;
	}
	for (size_t i = 0; i < s->n; i++)
		if (s->v[i] == x)
			s->v[i--] = s->v[--s->n];
	while (!ret && x->children && (c = htab_next(x->children, &(size_t){ 0 })))
		ret = unplace(s, c);
	if (kv_node_expires(x))
		kv_set_deadline(s->kv, x, 0);
	kv_node_free(s->kv, x);
	return ret;
}

/* x's place is now parent/name: out of the tree until linked again. */
static int move(struct settle *s, struct kv_node *x, const struct kv_meta *m)
{
	char *name;
	bool listed = !x->parent;

	if (x->m.parent == m->parent && !strcmp(x->m.name, m->name))
		return 0;
	name = strdup(m->name);
	if (!name)
		return -ENOMEM;
	if (x->parent)
		kv_node_detach(x);
	if (!kv_node_name_inline(x))
		free(x->m.name);
	x->m.name = name;
	x->m.parent = m->parent;
	if (listed)
		return 0;
	if (S_ISDIR(x->m.mode))
		s->kv->ndirs--;
	else
		s->kv->nkeys--;
	return keep(s, x);
}

/* The ids to look at: each unplaced record, its directory when missing,
 * and the record holding its name. */
static uint64_t *wanted(struct settle *s, size_t *k)
{
	uint64_t *ids = malloc((3 * s->n + 1) * sizeof(*ids));

	*k = 0;
	for (size_t i = 0; ids && i < s->n; i++) {
		struct kv_node *x = s->v[i], *p = kv_node_get(s->kv, x->m.parent), *h;

		ids[(*k)++] = x->m.id;
		if (!p)
			ids[(*k)++] = x->m.parent;
		else if (S_ISDIR(p->m.mode) && (h = kv_child_get(p, x->m.name)))
			ids[(*k)++] = h->m.id;
	}
	return ids;
}

/* One look at the backend; *changed: something moved, left or came. */
static int round_once(struct settle *s, bool *changed)
{
	const struct kv_backend_ops *ops = s->kv->backend->ops;
	struct kv_change *c;
	size_t k;
	uint64_t *ids = wanted(s, &k);
	int ret;

	*changed = false;
	c = calloc(k ? k : 1, sizeof(*c));
	if (!ids || !c) {
		free(ids);
		free(c);
		return -ENOMEM;
	}
	/* Without the backend, lost+found keeps what has no place. */
	ret = ops->fetch(s->kv->backend, ids, k, c) ? 1 : 0;
	for (size_t i = 0; !ret && i < k; i++) {
		struct kv_node *x = kv_node_get(s->kv, c[i].id);

		if (c[i].gone) {
			if (x) {
				ret = evict(s, x);
				*changed = true;
			}
		} else if (!x) {
			ret = kv_load_record(&c[i].meta, s->kv);
			x = ret ? NULL : kv_node_get(s->kv, c[i].id);
			if (x)
				ret = keep(s, x);
			*changed = true;
		} else if (x->m.parent != c[i].meta.parent || strcmp(x->m.name, c[i].meta.name)) {
			ret = move(s, x, &c[i].meta);
			*changed = true;
		}
	}
	kv_changes_clear(c, k);
	free(c);
	free(ids);
	return ret < 0 ? ret : 0;
}

/* Links what has a place now, until nothing more does. */
static int relink(struct settle *s)
{
	for (bool linked = true; linked;) {
		size_t kept = 0;

		linked = false;
		for (size_t i = 0; i < s->n; i++) {
			int ret = kv_try_link(s->kv, s->v[i]);

			if (ret < 0)
				return ret;
			if (ret)
				linked = true;
			else
				s->v[kept++] = s->v[i];
		}
		s->n = kept;
	}
	return 0;
}

int kv_load_settle(struct kv_store *kv, struct kv_node ***orphans, size_t *n)
{
	const struct kv_backend_ops *ops = kv->backend->ops;
	struct settle s = { kv, *orphans, *n, *n };
	/* Records fetched here may come from id blocks other mounts reserved
	 * after this one's: they must not move this mount's own next id. */
	uint64_t max_id = kv->max_id;
	bool changed = true;
	int ret = 0;

	if (!ops->caps.shared || !ops->fetch)
		return 0;
	for (unsigned r = 0; r < ROUNDS && s.n && changed && !ret; r++) {
		ret = round_once(&s, &changed);
		if (!ret)
			ret = relink(&s);
	}
	kv->max_id = max_id;
	*orphans = s.v;
	*n = s.n;
	return ret;
}
