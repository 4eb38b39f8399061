/*
 * Records a load cannot place in the tree go to lost+found, never away.
 *
 * Why: a store's commits are whole-tree snapshots, so on the filesystem
 * backend such a record means damage; on Redis it can also be the
 * transient result of two mounts racing (a directory removed by one while
 * the other writes into it, see store/sync.c), which the other mount
 * repairs moments later. Deleting what cannot be placed would turn either
 * into lost data. Instead each such record, with everything below it, is
 * moved into the root's "lost+found" directory (made on demand, mode 0700,
 * owned like the root; "lost+found.N" when a key holds that name), named
 * "ID-NAME" (ID is its record id, which is also its inode number), or "ID"
 * when that would not be a valid name or key. The move is an ordinary
 * change: committed by the flush at open, and announced to other mounts.
 *
 * Three cases: the parent is missing or not a directory, the name is
 * invalid or taken by another record (link_tree in kv_open.c leaves these
 * out of the tree), and cycles of parents (found here: one member is cut
 * from its parent and recovered, which brings the others back to the root).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "store/kv_internal.h"
#include "store/sync.h"
#include "util/log.h"

#define LOST_FOUND "lost+found"

/* The directory recovered records go to, made if missing. */
static int lost_found(struct kv_store *kv, struct kv_node **out)
{
	char name[32];

	for (unsigned i = 0; i < 1000; i++) {
		struct kv_node *d;

		if (i)
			snprintf(name, sizeof(name), LOST_FOUND ".%u", i);
		else
			snprintf(name, sizeof(name), LOST_FOUND);
		d = kv_child_get(kv->root, name);
		if (d && S_ISDIR(d->m.mode)) {
			*out = d;
			return 0;
		}
		if (!d)
			return kv_node_create(kv, kv->root, name, S_IFDIR | 0700, kv->opts.root_uid,
					      kv->opts.root_gid, out);
	}
	return -EEXIST;
}

/* Would n, named name in lf, give keys within KV_KEY_MAX? */
static bool fits(const struct kv_node *lf, const struct kv_node *n, const char *name)
{
	size_t below = kv_subtree_max_len(n);

	return kv_key_len(lf) + 1 + strlen(name) + (below ? 1 + below : 0) <= KV_KEY_MAX;
}

/* A free name for n in lf ("" if none). */
static void pick_name(const struct kv_node *lf, const struct kv_node *n, char *name, size_t size)
{
	unsigned long long id = (unsigned long long)n->m.id;

	/* Never cut short: a longer one is ID alone. */
	if ((size_t)snprintf(name, size, "%llu-%s", id, n->m.name ? n->m.name : "") < size &&
	    !kv_check_name(name) && !kv_child_get((struct kv_node *)lf, name) && fits(lf, n, name))
		return;
	for (unsigned i = 0; i < 1000; i++) {
		if (i)
			snprintf(name, size, "%llu.%u", id, i);
		else
			snprintf(name, size, "%llu", id);
		if (!kv_child_get((struct kv_node *)lf, name))
			return;
	}
	name[0] = '\0';
}

/*
 * Moves n (out of the tree; what is below it stays linked to it) into lf.
 * A subtree too deep to fit there is split: its entries are recovered one
 * by one, each shorter than n by at least a name. counted: n is already
 * in kv->nkeys/ndirs.
 */
static int recover_one(struct kv_store *kv, struct kv_node *lf, struct kv_node *n, bool counted)
{
	char name[KV_NAME_MAX + 1];
	char *dup;
	int ret;

	pick_name(lf, n, name, sizeof(name));
	if (name[0] && !fits(lf, n, name) && n->children) {
		size_t k = htab_count(n->children), j = 0;
		struct kv_node **kids = malloc((k ? k : 1) * sizeof(*kids)), *c;

		if (!kids)
			return -ENOMEM;
		for (size_t i = 0; (c = htab_next(n->children, &i));)
			kids[j++] = c;
		for (size_t i = 0; i < j; i++)
			kv_node_detach(kids[i]);
		ret = 0;
		for (size_t i = 0; !ret && i < j; i++)
			ret = recover_one(kv, lf, kids[i], true);
		if (ret) {
			free(kids);
			return ret;
		}
		free(kids);
		pick_name(lf, n, name, sizeof(name));
	}
	if (!name[0])
		return -EEXIST;
	log_msg(NLOG_WARN, "store",
		"record %" PRIu64 " cannot be placed in the tree (parent %" PRIu64 ", name \"%s\"); "
		"moved to %s/%s", n->m.id, n->m.parent, n->m.name ? n->m.name : "", lf->m.name,
		name);
	dup = strdup(name);
	if (!dup)
		return -ENOMEM;
	if (!kv_node_name_inline(n))
		free(n->m.name);
	n->m.name = dup;
	ret = kv_node_attach(lf, n);
	if (ret)
		return ret;
	if (!counted) {
		if (S_ISDIR(n->m.mode))
			kv->ndirs++;
		else
			kv->nkeys++;
	}
	kv_mark_dirty(kv, n);
	kv_dir_touch(kv, lf, kv_now_ns());
	return 0;
}

/*
 * n lost its name to the record that holds it in the tree, while the
 * backend's entry may name n (on Redis the last commit takes the entry, the
 * load keeps whichever record it links first): the holder is committed
 * again, so that its entry is its own once n has moved.
 */
static void reassert_holder(struct kv_store *kv, const struct kv_node *n)
{
	struct kv_node *p = kv_node_get(kv, n->m.parent), *holder;

	if (!p || !S_ISDIR(p->m.mode) || kv_check_name(n->m.name))
		return;
	holder = kv_child_get(p, n->m.name);
	if (holder)
		kv_mark_dirty(kv, holder);
}

/* Marks n and everything below it for the next flush. */
static void mark_subtree(struct kv_store *kv, struct kv_node *n)
{
	struct kv_node *c;

	kv_mark_dirty(kv, n);
	for (size_t i = 0; n->children && (c = htab_next(n->children, &i));)
		mark_subtree(kv, c);
}

int kv_recover_displaced(struct kv_store *kv, struct kv_node *n)
{
	struct kv_node *lf, *p = n->parent;
	char name[KV_NAME_MAX + 1], *dup, *old = n->m.name;
	bool own = !kv_node_name_inline(n);
	int64_t now = kv_now_ns();
	int ret;

	if (!p)
		return -EINVAL;
	/* lost+found itself, or a directory above it (another mount made its
	 * own lost+found), or none to be had: another name where it is. */
	if (lost_found(kv, &lf))
		lf = p;
	for (struct kv_node *q = lf; q; q = q->parent)
		if (q == n)
			lf = p;
	pick_name(lf, n, name, sizeof(name));
	if (!name[0] || !fits(lf, n, name))
		return -ENAMETOOLONG;
	dup = strdup(name);
	if (!dup)
		return -ENOMEM;
	kv_queue_inval(kv, p->m.id, old, n->m.id);
	kv_node_detach(n);
	n->m.name = dup;
	ret = kv_node_attach(lf, n);
	if (ret) {
		/* Only a failed table growth gets here (as in kv_rename). */
		n->m.name = old;
		free(dup);
		kv_node_attach(p, n);
		return ret;
	}
	log_msg(NLOG_WARN, "store",
		"record %" PRIu64 " (\"%s\" in directory %" PRIu64 ") gave its name to another "
		"mount's record; moved to %s/%s", n->m.id, old ? old : "", p->m.id, lf->m.name,
		name);
	if (own)
		free(old);
	kv_queue_inval(kv, lf->parent ? lf->parent->m.id : 0, lf->m.name, lf->m.id);
	n->m.ctime_ns = now;
	mark_subtree(kv, n);
	kv_dir_touch(kv, p, now);
	kv_dir_touch(kv, lf, now);
	return 0;
}

/* Does n reach the root through its parents? *top: where the walk ended. */
static bool reaches_root(const struct kv_store *kv, struct kv_node *n, struct kv_node **top)
{
	/* A key of KV_KEY_MAX bytes has at most KV_KEY_MAX / 2 levels. */
	for (unsigned depth = 0; n && n != kv->root; depth++) {
		if (depth > KV_KEY_MAX || !n->parent) {
			*top = n;
			return false;
		}
		n = n->parent;
	}
	return n == kv->root;
}

int kv_recover_records(struct kv_store *kv, struct kv_node **orphans, size_t n)
{
	struct kv_node *lf = NULL, *node, *top, **stray;
	size_t nstray = 0, cap = htab_count(&kv->by_id);
	int ret = 0;

	for (size_t i = 0; !ret && i < n; i++) {
		ret = lf ? 0 : lost_found(kv, &lf);
		if (!ret)
			reassert_holder(kv, orphans[i]);
		if (!ret)
			ret = recover_one(kv, lf, orphans[i], false);
	}
	if (ret)
		return ret;
	/* What is left out of reach is in a cycle of parents or below one.
	 * Listed first: making lost+found changes the id index. */
	stray = malloc((cap ? cap : 1) * sizeof(*stray));
	if (!stray)
		return -ENOMEM;
	for (size_t i = 0; (node = htab_next(&kv->by_id, &i));)
		if (node != kv->root && !(node->flags & KV_NODE_DELETED) &&
		    !reaches_root(kv, node, &top))
			stray[nstray++] = node;
	for (size_t i = 0; !ret && i < nstray; i++) {
		/* Cutting one member of a cycle brings the rest back. */
		if (reaches_root(kv, stray[i], &top))
			continue;
		ret = lf ? 0 : lost_found(kv, &lf);
		if (!ret) {
			if (top->parent)
				kv_node_detach(top);
			ret = recover_one(kv, lf, top, true);
		}
	}
	free(stray);
	return ret;
}
