/*
 * Transactions' life cycle (begin, list, abort, free) and commit: validate
 * every staged change against the store as it is now, then apply all of
 * them without dropping kv->lock.
 *
 * Atomicity comes from the flusher: it snapshots everything dirty at one
 * instant under kv->lock and commits that snapshot as one backend write (one
 * journal record, one Redis script). Since the whole transaction is applied
 * within one hold of the lock, every snapshot holds all of it or none of it,
 * for readers as across a crash.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "store/sync.h"
#include "store/tx.h"
#include "util/log.h"

#define TX_NAME_MAX 128

bool kv_is_tx_id(uint64_t id)
{
	return (id & KV_TX_ID_BIT) && id < (KV_TX_ID_BIT << 1);
}

static int check_tx_name(const char *name)
{
	size_t len = strlen(name);

	if (len == 0 || len > TX_NAME_MAX || name[0] == '.')
		return -EINVAL;
	if (strspn(name, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-") !=
	    len)
		return -EINVAL;
	return 0;
}

struct kv_txn *kv_tx_find(struct kv_store *kv, const char *name)
{
	for (struct kv_txn *tx = kv->txs; tx; tx = tx->next)
		if (!tx->doomed && !strcmp(tx->name, name))
			return tx;
	return NULL;
}

void kv_tx_reap(struct kv_store *kv)
{
	struct kv_txn *tx = kv->txs, *next;

	for (; tx; tx = next) {
		next = tx->next;
		if (tx->doomed && !tx->users && !tx->committing) {
			kv_tx_free(kv, tx);
			kv->tx_aborted++;
		}
	}
}

void kv_tx_free(struct kv_store *kv, struct kv_txn *tx)
{
	struct kv_txn **pp;

	for (pp = &kv->txs; *pp && *pp != tx; pp = &(*pp)->next)
		;
	if (*pp)
		*pp = tx->next;
	while (tx->nodes) {
		struct kv_txnode *t = tx->nodes;

		tx->nodes = t->next;
		if (!t->dead)
			htab_remove(&kv->by_id, &t->n);
		if (t->n.children) {
			htab_destroy(t->n.children);
			free(t->n.children);
		}
		kv_value_free(t->n.value);
		kv_node_meta_clear(&t->n);
		free(t->n.aux);
		kv_node_free(kv, t->made);
		free(t);
	}
	free(tx->name);
	free(tx);
}

void kv_tx_destroy_all(struct kv_store *kv)
{
	while (kv->txs)
		kv_tx_free(kv, kv->txs);
}

/* A key's path in the view, for messages: "a/b/c". */
static void view_path(const struct kv_txnode *t, char *buf, size_t len)
{
	const struct kv_node *chain[KV_KEY_MAX / 2 + 1];
	size_t depth = 0, pos = 0;

	for (const struct kv_node *n = &t->n; n->parent && depth < KV_KEY_MAX / 2 + 1;
	     n = n->parent)
		chain[depth++] = n;
	buf[0] = '\0';
	while (depth--)
		pos += (size_t)snprintf(buf + pos, pos < len ? len - pos : 0, "%s%s",
					chain[depth]->m.name, depth ? "/" : "");
}

int kv_tx_conflict(const struct kv_txnode *t, const char *why, char *msg, size_t len)
{
	char path[KV_KEY_MAX + 1];

	view_path(t, path, sizeof(path));
	snprintf(msg, len, "conflict: %s was %s outside the transaction after it first saw it",
		 path, why);
	return -ESTALE;
}

static bool changed_below(const struct kv_txnode *d)
{
	struct kv_node *c;

	for (size_t i = 0; d->n.children && (c = htab_next(d->n.children, &i));) {
		const struct kv_txnode *t = kv_txnode_of(c);

		if (t->state != TXN_UNCHANGED || (S_ISDIR(c->m.mode) && changed_below(t)))
			return true;
	}
	return false;
}

/*
 * A record of the tree, as commit sees it: without expiring anything, so
 * that validate and apply see the same records (validate refuses a base
 * past its deadline instead).
 */
static struct kv_node *base_of(struct kv_store *kv, const struct kv_txnode *t)
{
	struct kv_node *b = t->base ? kv_node_get(kv, t->base) : NULL;

	return b && !(b->flags & KV_NODE_DELETED) ? b : NULL;
}

/* Length of the key a child called name of a key prefix long would have. */
static size_t child_len(size_t prefix, const char *name)
{
	return prefix + (prefix ? 1 : 0) + strlen(name);
}

/*
 * Every change of directory d's subtree still applies to store directory s
 * (NULL: d is made by the transaction), whose key is prefix bytes long: the
 * records it changes are where and as they were when it first saw them,
 * alive at now, and no name it creates is taken or too long.
 */
static int validate(struct kv_store *kv, const struct kv_txnode *d, struct kv_node *s,
		    size_t prefix, int64_t now, char *msg, size_t len)
{
	struct kv_node *c;
	int ret = 0;

	for (size_t i = 0; !ret && d->n.children && (c = htab_next(d->n.children, &i));) {
		const struct kv_txnode *t = kv_txnode_of(c);
		struct kv_node *b = base_of(kv, t);
		size_t klen = child_len(prefix, c->m.name);
		bool moved = !b || b->parent != s || strcmp(b->m.name, c->m.name);

		if (t->state != TXN_UNCHANGED && b && kv_node_expired(b, now))
			return kv_tx_conflict(t, "expired", msg, len);
		switch (t->state) {
		case TXN_UNCHANGED:
			if (!S_ISDIR(c->m.mode) || !changed_below(t))
				break;
			if (moved)
				return kv_tx_conflict(t, "removed or moved", msg, len);
			ret = validate(kv, t, b, klen, now, msg, len);
			break;
		case TXN_MODIFIED:
		case TXN_WHITEOUT:
			if (moved)
				return kv_tx_conflict(t, "removed or moved", msg, len);
			if (b->version != t->base_version)
				return kv_tx_conflict(t, "changed", msg, len);
			if (S_ISDIR(c->m.mode))
				ret = validate(kv, t, b, klen, now, msg, len);
			break;
		case TXN_CREATED:
			if (s && kv_child_get(s, c->m.name))
				return kv_tx_conflict(t, "created", msg, len);
			/* A rename outside may have made the path longer. */
			if (klen > KV_KEY_MAX) {
				snprintf(msg, len, "%s: the key would be longer than %u bytes",
					 c->m.name, KV_KEY_MAX);
				return -ENAMETOOLONG;
			}
			if (S_ISDIR(c->m.mode))
				ret = validate(kv, t, NULL, klen, now, msg, len);
			break;
		}
	}
	return ret;
}

/* --- prepare: every allocation the apply needs, before its first change ---
 *
 * Applying a transaction must not stop part way (spec 6a: all or nothing),
 * and short of memory anything that allocates could. So prepare() makes,
 * before anything in the store changes, all the apply will put things in:
 * an aux record held (KV_NODE_AUX_HELD) on every node that takes xattrs,
 * tags, a deadline, a place on the dirty list or a new subdirectory; the
 * records the transaction creates, with their ids (t->made); room in by_id
 * and in each directory table that gains entries; every tag a key will
 * carry, held with room for its new members; room for the new deadlines.
 * What it makes holds nothing a reader sees (empty aux records and tables,
 * tags held but without members, which nobody can list while the lock is
 * held), and unprepare() takes it back.
 */

struct prep {
	struct kv_tag **tags; /* held, each once */
	size_t ntags;
};

static int hold_aux(struct kv_node *n)
{
	if (!kv_node_aux(n))
		return -ENOMEM;
	n->flags |= KV_NODE_AUX_HELD;
	return 0;
}

static void unhold_aux(struct kv_node *n)
{
	if (!(n->flags & KV_NODE_AUX_HELD))
		return;
	n->flags &= ~KV_NODE_AUX_HELD;
	kv_node_aux_trim(n);
}

/* The record a created t becomes, out of the tree until apply places it. */
static int make_record(struct kv_store *kv, struct kv_txnode *t)
{
	struct kv_node *n = kv_node_new_named(t->n.m.name);
	int ret;

	if (!n)
		return -ENOMEM;
	ret = kv_sync_next_id(kv, &n->m.id);
	if (!ret)
		ret = hold_aux(n);
	if (ret) {
		kv_node_free(kv, n);
		return ret;
	}
	/* So that the next one gets another id. An id a failed commit took is
	 * not used again, as after a failed create: a gap is harmless. */
	kv->max_id = n->m.id;
	n->m.mode = t->n.m.mode;
	n->m.uid = t->n.m.uid;
	n->m.gid = t->n.m.gid;
	t->made = n;
	return 0;
}

/* Room in the store directory d's records land in for the n it gains. */
static int make_room(struct kv_store *kv, struct kv_txnode *d, size_t n)
{
	struct kv_node *dir = d->state == TXN_CREATED ? d->made : base_of(kv, d);

	if (!dir)
		return 0;  /* nothing lands there: validate() saw to it */
	if (hold_aux(dir)) /* nlink counts subdirectories in it */
		return -ENOMEM;
	return kv_dir_reserve(dir, n);
}

/* The staged tags of t, a key, held; p->tags has room for all of them. */
static int hold_tags(struct kv_store *kv, const struct kv_txnode *t, struct prep *p)
{
	for (uint32_t i = 0; i < kv_node_ntags(&t->n); i++) {
		struct kv_tag *tag = kv_tag_hold(kv, kv_node_tags(&t->n)[i]);

		if (!tag)
			return -ENOMEM;
		if (tag->held == 1)
			p->tags[p->ntags++] = tag;
	}
	return 0;
}

/* Takes back what prepare() made and apply() did not use. */
static void unprepare(struct kv_store *kv, struct kv_txn *tx, struct prep *p)
{
	for (struct kv_txnode *t = tx->nodes; t; t = t->next) {
		struct kv_node *b = t->dead ? NULL : base_of(kv, t);

		if (b)
			unhold_aux(b);
		kv_node_free(kv, t->made);
		t->made = NULL;
	}
	for (size_t i = 0; i < p->ntags; i++)
		kv_tag_release(kv, p->tags[i]);
	free(p->tags);
	p->tags = NULL;
	p->ntags = 0;
}

static int prepare(struct kv_store *kv, struct kv_txn *tx, struct prep *p)
{
	size_t ntags = 0, made = 0, deadlines = 0;
	struct kv_txnode *t;
	int ret = 0;

	for (t = tx->nodes; t; t = t->next)
		if (!t->dead && !S_ISDIR(t->n.m.mode))
			ntags += kv_node_ntags(&t->n);
	p->tags = calloc(ntags ? ntags : 1, sizeof(*p->tags));
	if (!p->tags)
		return -ENOMEM;
	p->ntags = 0;
	/* The records that change or are made. */
	for (t = tx->nodes; t && !ret; t = t->next) {
		if (t->dead || (t->state != TXN_MODIFIED && t->state != TXN_CREATED))
			continue;
		ret = t->state == TXN_CREATED ? make_record(kv, t) : hold_aux(base_of(kv, t));
		if (ret || S_ISDIR(t->n.m.mode))
			continue;
		ret = hold_tags(kv, t, p);
		deadlines += kv_node_expires(&t->n) != 0;
	}
	/* The directories that gain entries (all records are made by now). */
	for (t = tx->nodes; t && !ret; t = t->next) {
		struct kv_node *c;
		size_t n = 0;

		if (t->dead || t->state == TXN_WHITEOUT || !t->n.children)
			continue;
		for (size_t i = 0; (c = htab_next(t->n.children, &i));)
			n += kv_txnode_of(c)->state == TXN_CREATED;
		if (n)
			ret = make_room(kv, t, n);
		made += n;
	}
	if (!ret)
		ret = htab_reserve(&kv->by_id, made);
	if (!ret)
		ret = kv_deadline_reserve(kv, deadlines);
	if (ret)
		unprepare(kv, tx, p);
	return ret;
}

/* --- apply: cannot fail once prepared ------------------------------------- */

/* The kernel may cache the entry and attributes a commit changes: tell it,
 * through the sweeper thread (never from the request handling the commit). */
static void note(struct kv_store *kv, uint64_t parent, const char *name, uint64_t id)
{
	kv_queue_inval(kv, parent, name, id);
	kv_queue_inval(kv, 0, "", parent);
}

/* The staged metadata (and value) of t become b's. Nothing here can fail
 * (prepare() made b's aux record, the tags and the deadline's room); a
 * failure would be a bug in prepare(), reported but not undone. */
static void apply_node(struct kv_store *kv, struct kv_txnode *t, struct kv_node *b)
{
	struct kv_node *sn = &t->n;
	const struct kv_node_meta *m = &sn->m;
	int ret;

	if (t->has_value) {
		uint64_t size = kv_value_size(t->n.value);

		kv_value_account(kv, b, t->n.value);
		t->n.value = NULL;
		t->has_value = false;
		kv_value_changed(kv, b, size ? size : 1);
	}
	ret = kv_node_put_xattrs(b, sn->aux ? sn->aux->xattrs : NULL, kv_node_xattrs_len(sn));
	if (!ret && sn->aux) {
		sn->aux->xattrs = NULL;
		sn->aux->xattrs_len = 0;
	}
	b->m.mode = m->mode;
	b->m.uid = m->uid;
	b->m.gid = m->gid;
	b->m.atime_ns = m->atime_ns;
	b->m.mtime_ns = m->mtime_ns;
	b->m.ctime_ns = kv_now_ns();
	b->m.btime_ns = m->btime_ns;
	if (!S_ISDIR(b->m.mode)) {
		int tret = kv_node_set_tags(kv, b, kv_node_tags(sn), kv_node_ntags(sn));

		if (!tret && sn->aux) {
			sn->aux->tags = NULL;
			sn->aux->ntags = 0;
		}
		ret = ret ? ret : tret;
		tret = kv_set_deadline(kv, b, kv_node_expires(sn));
		ret = ret ? ret : tret;
	}
	kv_mark_dirty(kv, b);
	if (ret)
		NLOG(NLOG_ERROR, "tx", "a prepared commit step failed; the key is applied in part",
		     LF_INT("id", b->m.id), LF_STR("error", strerror(-ret)));
}

/*
 * Applies d's subtree to store directory s. Removals come after the
 * subtree below them (a directory is empty by then), creations before it.
 */
static void apply(struct kv_store *kv, struct kv_txnode *d, struct kv_node *s)
{
	struct kv_node *c, *b, *n;

	for (size_t i = 0; d->n.children && (c = htab_next(d->n.children, &i));) {
		struct kv_txnode *t = kv_txnode_of(c);

		b = base_of(kv, t);
		if (t->state != TXN_UNCHANGED)
			note(kv, s->m.id, c->m.name, b ? b->m.id : 0);
		switch (t->state) {
		case TXN_UNCHANGED:
			if (S_ISDIR(c->m.mode) && b)
				apply(kv, t, b);
			break;
		case TXN_MODIFIED:
			apply_node(kv, t, b);
			if (S_ISDIR(c->m.mode))
				apply(kv, t, b);
			break;
		case TXN_CREATED:
			n = t->made;
			t->made = NULL;
			/* Cannot fail: by_id and s have room, s its aux record. */
			if (kv_node_link_new(kv, s, n, kv_now_ns())) {
				NLOG(NLOG_ERROR, "tx",
				     "a prepared record found no room; not created",
				     LF_STR("name", c->m.name));
				kv_node_free(kv, n);
				break;
			}
			apply_node(kv, t, n);
			if (S_ISDIR(c->m.mode))
				apply(kv, t, n);
			/* unprepare() cannot find it any more. */
			unhold_aux(n);
			break;
		case TXN_WHITEOUT:
			if (S_ISDIR(c->m.mode))
				apply(kv, t, b);
			kv_node_remove(kv, b);
			kv_dir_touch(kv, s, kv_now_ns());
			break;
		}
	}
}

/* Keys the transaction removes that are open somewhere keep their bytes for
 * those handles (as kv_unlink does): load them now, while the lock may still
 * be dropped. 1 when the lock was dropped (look again), 0 when none needs
 * it, or a negative errno. */
static int load_removed_open(struct kv_store *kv, struct kv_txn *tx)
{
	for (struct kv_txnode *t = tx->nodes; t; t = t->next) {
		struct kv_node *b;
		int ret;

		if (t->dead || t->state != TXN_WHITEOUT || !(b = kv_tx_base(kv, t)))
			continue;
		if (!b->open_count || b->value || !b->m.vver || S_ISDIR(b->m.mode))
			continue;
		tx->users++;
		ret = kv_load_value(kv, b->m.id);
		tx->users--;
		/* Removed or expired outside while the lock was dropped (found
		 * by test_stress): nothing to keep; look again, and validate()
		 * calls it a conflict. */
		if (ret == -ENOENT)
			ret = 0;
		return ret ? ret : 1;
	}
	return 0;
}

int kv_tx_check(struct kv_store *kv, struct kv_txn *tx, char *msg, size_t msglen)
{
	struct kv_txnode *root = tx->root;

	/* The root's own attributes are rarely staged (chmod or an xattr on
	 * it); when they are, any change of its entries outside conflicts. */
	if (root->state == TXN_MODIFIED && kv->root->version != root->base_version)
		return kv_tx_conflict(root, "changed", msg, msglen);
	return validate(kv, root, kv->root, 0, kv_now_ms(), msg, msglen);
}

static int tx_apply(struct kv_store *kv, struct kv_txn *tx, char *msg, size_t msglen, bool *changed)
{
	struct kv_txnode *root = tx->root;
	struct prep p = { 0 };
	int ret;

	*changed = false;
	/* Each round loads one more value: it ends. */
	while ((ret = load_removed_open(kv, tx)) == 1)
		;
	if (ret) {
		snprintf(msg, msglen, "cannot keep the bytes of a removed key: %s", strerror(-ret));
		return ret;
	}
	ret = kv_tx_check(kv, tx, msg, msglen);
	if (ret)
		return ret;
	/* Refused here, nothing has changed: the transaction stays, to be
	 * committed again or aborted. */
	ret = prepare(kv, tx, &p);
	if (ret) {
		snprintf(msg, msglen, "nothing applied: %s", strerror(-ret));
		return ret;
	}
	*changed = true;
	if (root->state == TXN_MODIFIED)
		apply_node(kv, root, kv->root);
	apply(kv, root, kv->root);
	unprepare(kv, tx, &p);
	return 0;
}

int kv_tx_commit(struct kv_store *kv, const char *name, char *msg, size_t msglen)
{
	struct kv_tx_hold hold = { 0 };
	struct kv_txn *tx;
	bool changed = false;
	int ret;

	msg[0] = '\0';
	pthread_mutex_lock(&kv->lock);
	tx = kv_tx_find(kv, name);
	if (!tx) {
		snprintf(msg, msglen, "no transaction '%s'", name);
		ret = -ENOENT;
		goto out;
	}
	if (tx->users || tx->committing) {
		snprintf(msg, msglen, "transaction '%s' is in use", name);
		ret = -EBUSY;
		goto out;
	}
	/* From here the lock may be dropped: nothing more gets staged. */
	tx->committing = true;
	/* On a shared backend, also against what other mounts committed. */
	ret = kv_tx_reserve(kv, tx, &hold, msg, msglen);
	if (!ret)
		ret = tx_apply(kv, tx, msg, msglen, &changed);
	if (ret == -ESTALE) {
		kv->tx_conflicted++;
		NLOG(NLOG_INFO, "tx", "commit refused", LF_STR("tx", name), LF_STR("error", msg));
	}
	/* Refused before any change: the transaction stays, to be looked at
	 * and aborted. */
	if (!changed) {
		tx->committing = false;
		goto out;
	}
	kv_tx_free(kv, tx);
	if (ret)
		goto out;
	kv->tx_committed++;
	ret = kv_wait_flushed(kv);
	if (ret)
		snprintf(msg, msglen, "applied, but not yet durable: %s", strerror(-ret));
out:
	pthread_mutex_unlock(&kv->lock);
	/* Applied but not durable: the reservations still guard the retries
	 * of its flush until they lapse. */
	kv_tx_release(kv, &hold, !(changed && ret));
	/* Readers who cached what changed see the commit on return. */
	if (changed)
		kv_wait_invals(kv, 5000);
	return ret;
}

/* --- life cycle ---------------------------------------------------------- */

int kv_tx_begin(struct kv_store *kv, const char *name, struct kv_attr *root)
{
	struct kv_txn *tx;
	int ret = check_tx_name(name);

	if (ret)
		return ret;
	pthread_mutex_lock(&kv->lock);
	if (kv_tx_find(kv, name)) {
		ret = -EEXIST;
		goto out;
	}
	tx = calloc(1, sizeof(*tx));
	if (!tx || !(tx->name = strdup(name))) {
		free(tx);
		ret = -ENOMEM;
		goto out;
	}
	tx->root = kv_txnode_new(kv, tx, NULL, name, kv->root->m.mode);
	if (!tx->root) {
		kv_tx_free(kv, tx);
		ret = -ENOMEM;
		goto out;
	}
	tx->root->base = KV_ROOT_ID;
	tx->root->state = TXN_UNCHANGED;
	tx->root->base_version = kv->root->version;
	tx->next = kv->txs;
	kv->txs = tx;
	kv_txnode_attr(kv, tx->root, root);
out:
	pthread_mutex_unlock(&kv->lock);
	return ret;
}

int kv_tx_root(struct kv_store *kv, const char *name, struct kv_attr *root)
{
	struct kv_txn *tx;

	pthread_mutex_lock(&kv->lock);
	tx = kv_tx_find(kv, name);
	if (tx)
		kv_txnode_attr(kv, tx->root, root);
	pthread_mutex_unlock(&kv->lock);
	return tx ? 0 : -ENOENT;
}

int kv_tx_list(struct kv_store *kv, struct kv_dirent **out, size_t *n)
{
	struct kv_dirent *ents;
	size_t k = 0, count = 0;
	int ret = 0;

	pthread_mutex_lock(&kv->lock);
	for (struct kv_txn *tx = kv->txs; tx; tx = tx->next)
		count++;
	ents = calloc(count + 1, sizeof(*ents));
	for (struct kv_txn *tx = kv->txs; ents && tx; tx = tx->next) {
		if (tx->doomed)
			continue;
		ents[k].id = tx->root->n.m.id;
		ents[k].mode = S_IFDIR;
		if (!(ents[k].name = strdup(tx->name))) {
			kv_dirents_free(ents, k);
			ents = NULL;
			break;
		}
		k++;
	}
	if (!ents)
		ret = -ENOMEM;
	else {
		*out = ents;
		*n = k;
	}
	pthread_mutex_unlock(&kv->lock);
	return ret;
}

/* root_id 0: whichever transaction is called name. when_idle: one in use
 * is doomed (see kv_tx_abort_id) rather than refused. */
static int tx_abort(struct kv_store *kv, const char *name, uint64_t root_id, bool when_idle)
{
	struct kv_txn *tx;
	int ret = 0;

	pthread_mutex_lock(&kv->lock);
	tx = kv_tx_find(kv, name);
	if (!tx || (root_id && tx->root->n.m.id != root_id)) {
		ret = -ENOENT;
	} else if (tx->users || tx->committing) {
		/* A commit may drop the lock (tx_shared.c) while it holds tx,
		 * and a load of a value counts itself in users. */
		if (!when_idle) {
			ret = -EBUSY;
		} else {
			tx->doomed = true;
			/* A commit under way decides: if it succeeds, it
			 * stands, and saying "aborted" would be a lie. */
			if (tx->committing)
				ret = -EINPROGRESS;
		}
	} else {
		kv_tx_free(kv, tx);
		kv->tx_aborted++;
	}
	pthread_mutex_unlock(&kv->lock);
	return ret;
}

int kv_tx_abort(struct kv_store *kv, const char *name)
{
	return tx_abort(kv, name, 0, false);
}

int kv_tx_abort_id(struct kv_store *kv, const char *name, uint64_t root_id)
{
	return tx_abort(kv, name, root_id, true);
}
