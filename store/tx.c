/*
 * Transactions: the staged view (see store/tx.h for the model). Every
 * function here works under kv->lock; the view's directories are
 * materialized from the store as they are looked at, and a node is copied
 * up (its metadata, then its value) only when the transaction changes it.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "store/tx.h"

struct kv_node *kv_tx_base(struct kv_store *kv, const struct kv_txnode *t)
{
	struct kv_node *b = t->base ? kv_node_live(kv, t->base) : NULL;

	return b && !(b->flags & KV_NODE_DELETED) ? b : NULL;
}

static bool is_dir(const struct kv_txnode *t)
{
	return S_ISDIR(t->n.m.mode);
}

/* A live staged node by id. */
static struct kv_txnode *txnode_get(struct kv_store *kv, uint64_t id)
{
	struct kv_txnode *t = kv_txnode_of(kv_node_get(kv, id));

	return t && !t->dead && t->state != TXN_WHITEOUT ? t : NULL;
}

struct kv_txnode *kv_txnode_new(struct kv_store *kv, struct kv_txn *tx, struct kv_txnode *parent,
				const char *name, uint32_t mode)
{
	struct kv_txnode *t = calloc(1, sizeof(*t));

	if (!t)
		return NULL;
	t->n.m.name = strdup(name);
	if (!t->n.m.name)
		goto out_free;
	t->n.m.id = KV_TX_ID_BIT | ++kv->tx_serial;
	t->n.m.mode = mode;
	t->n.flags = KV_NODE_STAGED;
	t->tx = tx;
	if (htab_insert(&kv->by_id, &t->n))
		goto out_free_name;
	if (parent && kv_node_attach(&parent->n, &t->n)) {
		htab_remove(&kv->by_id, &t->n);
		goto out_free_name;
	}
	t->next = tx->nodes;
	tx->nodes = t;
	return t;

out_free_name:
	free(t->n.m.name);
out_free:
	free(t);
	return NULL;
}

/* Takes t out of the view (and by_id); its memory goes with the transaction. */
static void txnode_drop(struct kv_store *kv, struct kv_txnode *t)
{
	struct kv_node *dir = t->n.parent;

	if (dir) {
		htab_remove(dir->children, &t->n);
		if (is_dir(t))
			kv_node_subdir_gone(dir);
		t->n.parent = NULL;
	}
	htab_remove(&kv->by_id, &t->n);
	if (t->has_value)
		t->tx->staged_bytes -= kv_value_size(t->n.value);
	t->dead = true;
}

/* --- the view ------------------------------------------------------------ */

/* The store directory whose entries show through t, if any. */
static struct kv_node *view_base(struct kv_store *kv, struct kv_txnode *t)
{
	if (t->state != TXN_UNCHANGED && t->state != TXN_MODIFIED)
		return NULL;
	return kv_tx_base(kv, t);
}

/* The staged node of name in dir (a whiteout included), materializing an
 * entry of the store that shows through; NULL if there is none. */
static struct kv_txnode *child(struct kv_store *kv, struct kv_txnode *dir, const char *name,
			       int *err)
{
	struct kv_txnode *c = kv_txnode_of(kv_child_get(&dir->n, name));
	struct kv_node *b, *bc;

	*err = 0;
	/* An untouched node whose record went away outside shows what is
	 * there now instead (nothing, or a record made since). */
	if (c && c->state == TXN_UNCHANGED && !kv_tx_base(kv, c) &&
	    !(c->n.children && htab_count(c->n.children))) {
		txnode_drop(kv, c);
		c = NULL;
	}
	b = c ? NULL : view_base(kv, dir);
	if (c || !b || !(bc = kv_live_child(kv, b, name)))
		return c;
	c = kv_txnode_new(kv, dir->tx, dir, name, bc->m.mode);
	if (!c) {
		*err = -ENOMEM;
		return NULL;
	}
	c->base = bc->m.id;
	/* "First saw it": later changes outside make a commit of a change
	 * to it a conflict. */
	c->base_version = bc->version;
	c->state = TXN_UNCHANGED;
	return c;
}

/* As child(), but NULL for a whiteout too. */
static struct kv_txnode *visible(struct kv_store *kv, struct kv_txnode *dir, const char *name,
				 int *err)
{
	struct kv_txnode *c = child(kv, dir, name, err);

	return c && c->state != TXN_WHITEOUT ? c : NULL;
}

void kv_txnode_attr(struct kv_store *kv, struct kv_txnode *t, struct kv_attr *a)
{
	struct kv_node *b = t->state == TXN_UNCHANGED ? kv_tx_base(kv, t) : NULL;

	kv_fill_attr(b ? b : &t->n, a);
	a->id = t->n.m.id;
	a->parent = t->n.parent ? t->n.parent->m.id : 0;
}

/* Staging into tx is allowed (not while it commits, which may drop the
 * lock and must apply what it checked). */
static int stageable(const struct kv_txn *tx)
{
	if (tx->doomed)
		return -ENOENT;
	return tx->committing ? -EBUSY : 0;
}

/* t's metadata becomes a copy of src's, ctime set to ctime, but for its
 * name, id and parent. 0 or -ENOMEM (t unchanged). */
static int restage_meta(struct kv_store *kv, struct kv_txnode *t, const struct kv_node *src,
			int64_t ctime)
{
	struct kv_meta m, view;

	kv_node_meta_view(src, &view);
	view.name = NULL;
	if (kv_meta_copy(&m, &view))
		return -ENOMEM;
	m.name = t->n.m.name;
	m.id = t->n.m.id;
	m.parent = t->n.m.parent;
	m.ctime_ns = ctime;
	/* The deadline's place is made first, so that nothing fails after. */
	if ((m.expires_ms && !kv_node_aux(&t->n)) || kv_node_meta_take(&t->n, &m)) {
		m.name = NULL;
		kv_meta_clear(&m);
		kv_node_aux_trim(&t->n);
		return -ENOMEM;
	}
	return kv_set_deadline(kv, &t->n, view.expires_ms);
}

/* Gives t its own copy of base's metadata: MODIFIED from now on. Every
 * change of a staged key's metadata comes through here, and every first
 * change of its content. */
static int copy_up_meta(struct kv_store *kv, struct kv_txnode *t)
{
	struct kv_node *b;

	if (stageable(t->tx))
		return -EBUSY;
	if (t->state != TXN_UNCHANGED)
		return 0;
	b = kv_tx_base(kv, t);
	if (!b)
		return -ENOENT;
	if (restage_meta(kv, t, b, b->m.ctime_ns))
		return -ENOMEM;
	t->state = TXN_MODIFIED;
	return 0;
}

/* Gives t an empty staged value, as truncation to 0 does: no need to load
 * the one it replaces. */
static int stage_empty(struct kv_store *kv, struct kv_txnode *t)
{
	struct kv_value *v;
	int ret = copy_up_meta(kv, t);

	if (ret)
		return ret;
	v = kv_value_new();
	if (!v)
		return -ENOMEM;
	if (t->has_value)
		t->tx->staged_bytes -= kv_value_size(t->n.value);
	kv_value_free(t->n.value);
	t->n.value = v;
	t->has_value = true;
	t->n.m.size = 0;
	t->n.m.mtime_ns = t->n.m.ctime_ns = kv_now_ns();
	return 0;
}

/* Gives t a staged copy of its value (copy on write: chunks are shared). May
 * drop the lock to load base's value; t stays valid (users), but whatever
 * else the caller looked up must be looked up again. */
static int copy_up_value(struct kv_store *kv, struct kv_txnode *t)
{
	struct kv_txn *tx = t->tx;
	struct kv_value *v;
	struct kv_node *b;
	int ret;

	if (t->has_value)
		return 0;
	ret = copy_up_meta(kv, t);
	if (ret)
		return ret;
	tx->users++;
	ret = kv_load_value(kv, t->base);
	tx->users--;
	if (t->dead || t->has_value)
		return t->dead ? -ENOENT : 0;
	b = kv_tx_base(kv, t);
	if (ret || !b)
		return ret ? ret : -ENOENT;
	if (tx->staged_bytes + b->m.size > kv->opts.tx_max_bytes)
		return -EFBIG;
	v = kv_value_snapshot(b->value);
	kv_maybe_drop_value(kv, b);
	if (!v)
		return -ENOMEM;
	t->n.value = v;
	t->n.m.size = kv_value_size(v);
	t->has_value = true;
	tx->staged_bytes += t->n.m.size;
	return 0;
}

/* The staged key id names: -ENOENT, -EISDIR. */
static int file_of(struct kv_store *kv, uint64_t id, struct kv_txnode **out)
{
	struct kv_txnode *t = txnode_get(kv, id);

	if (!t)
		return -ENOENT;
	if (is_dir(t))
		return -EISDIR;
	*out = t;
	return 0;
}

static int dir_of(struct kv_store *kv, uint64_t id, struct kv_txnode **out)
{
	struct kv_txnode *d = txnode_get(kv, id);

	if (!d)
		return -ENOENT;
	if (!is_dir(d))
		return -ENOTDIR;
	*out = d;
	return 0;
}

int kv_tx_lookup(struct kv_store *kv, uint64_t parent, const char *name, struct kv_attr *out)
{
	struct kv_txnode *d, *c;
	int ret;

	pthread_mutex_lock(&kv->lock);
	ret = dir_of(kv, parent, &d);
	if (!ret) {
		c = visible(kv, d, name, &ret);
		if (c && c->state == TXN_UNCHANGED && !kv_tx_base(kv, c))
			c = NULL; /* removed outside meanwhile */
		if (c)
			kv_txnode_attr(kv, c, out);
		else if (!ret)
			ret = -ENOENT;
	}
	pthread_mutex_unlock(&kv->lock);
	return ret;
}

int kv_tx_getattr(struct kv_store *kv, uint64_t id, struct kv_attr *out)
{
	struct kv_txnode *t;
	int ret = 0;

	pthread_mutex_lock(&kv->lock);
	t = txnode_get(kv, id);
	if (!t || (t->state == TXN_UNCHANGED && !kv_tx_base(kv, t)))
		ret = -ENOENT;
	else
		kv_txnode_attr(kv, t, out);
	pthread_mutex_unlock(&kv->lock);
	return ret;
}

/* A staged value's new size, within the limits; the lock is held. */
static int resize(struct kv_store *kv, struct kv_txnode *t, uint64_t size)
{
	uint64_t old = kv_value_size(t->n.value);

	if (size > kv->opts.max_value_size)
		return -EFBIG;
	if (size > old && t->tx->staged_bytes + (size - old) > kv->opts.tx_max_bytes)
		return -EFBIG;
	if (kv_value_truncate(t->n.value, size))
		return -ENOMEM;
	t->tx->staged_bytes = t->tx->staged_bytes + size - old;
	t->n.m.size = size;
	t->n.m.mtime_ns = t->n.m.ctime_ns = kv_now_ns();
	return 0;
}

int kv_tx_setattr(struct kv_store *kv, uint64_t id, const struct kv_setattr *sa,
		  struct kv_attr *out)
{
	struct kv_txnode *t;
	int64_t now = kv_now_ns();
	int ret;

	pthread_mutex_lock(&kv->lock);
	t = txnode_get(kv, id);
	ret = t ? copy_up_meta(kv, t) : -ENOENT;
	if (!ret && (sa->mask & KV_SET_SIZE)) {
		if (is_dir(t))
			ret = -EISDIR;
		else if (sa->size == 0)
			ret = stage_empty(kv, t);
		else if (!(ret = copy_up_value(kv, t)))
			ret = txnode_get(kv, id) == t ? resize(kv, t, sa->size) : -ENOENT;
	}
	if (ret)
		goto out;
	if (!kv_meta_setattr(&t->n.m, sa, now) && (sa->mask & KV_SET_SIZE))
		t->n.m.ctime_ns = now;
	kv_txnode_attr(kv, t, out);
out:
	pthread_mutex_unlock(&kv->lock);
	return ret;
}

/* Length of t's key in the view ("" for the root). */
static size_t view_len(const struct kv_txnode *t)
{
	size_t len = 0;

	for (const struct kv_node *n = &t->n; n->parent; n = n->parent)
		len += strlen(n->m.name) + (n->parent->parent ? 1 : 0);
	return len;
}

/* The longest key below directory d, relative to it ("a/b" for d/a/b). */
static size_t subtree_len(const struct kv_txnode *d)
{
	struct kv_node *c;
	size_t max = 0;

	for (size_t i = 0; d->n.children && (c = htab_next(d->n.children, &i));) {
		size_t len = 1 + strlen(c->m.name);

		if (S_ISDIR(c->m.mode))
			len += subtree_len(kv_txnode_of(c));
		if (len > max)
			max = len;
	}
	return max;
}

/* Fresh metadata for a node made (or made again) in the transaction. */
static int fresh(struct kv_store *kv, struct kv_txnode *t, uint32_t mode, uint32_t uid,
		 uint32_t gid)
{
	int64_t now = kv_now_ns();
	char *name = t->n.m.name;
	uint64_t id = t->n.m.id, parent = t->n.m.parent;

	t->n.m.name = NULL;
	kv_node_meta_clear(&t->n);
	memset(&t->n.m, 0, sizeof(t->n.m));
	t->n.m.name = name;
	t->n.m.id = id;
	t->n.m.parent = parent;
	t->n.m.mode = mode;
	t->n.m.uid = uid;
	t->n.m.gid = gid;
	t->n.m.atime_ns = t->n.m.mtime_ns = t->n.m.ctime_ns = t->n.m.btime_ns = now;
	if (S_ISDIR(mode))
		return 0;
	if (kv->opts.default_ttl_s &&
	    kv_set_deadline(kv, &t->n, kv_now_ms() + (int64_t)kv->opts.default_ttl_s * 1000))
		return -ENOMEM;
	if (t->has_value)
		t->tx->staged_bytes -= kv_value_size(t->n.value);
	kv_value_free(t->n.value);
	t->n.value = kv_value_new();
	t->has_value = t->n.value != NULL;
	return t->has_value ? 0 : -ENOMEM;
}

int kv_tx_make(struct kv_store *kv, uint64_t parent, const char *name, uint32_t mode, uint32_t uid,
	       uint32_t gid, bool excl, bool dir, struct kv_attr *out)
{
	uint32_t type = dir ? S_IFDIR : S_IFREG;
	struct kv_txnode *d, *c;
	int ret;

	ret = kv_check_name(name);
	if (ret)
		return ret;
	pthread_mutex_lock(&kv->lock);
	ret = dir_of(kv, parent, &d);
	if (!ret)
		ret = stageable(d->tx);
	if (ret)
		goto out;
	c = child(kv, d, name, &ret);
	if (ret)
		goto out;
	/* As outside: no key longer than KV_KEY_MAX (the commit checks again,
	 * since a rename outside can lengthen the path). */
	if ((!c || c->state == TXN_WHITEOUT) &&
	    view_len(d) + (d->n.parent ? 1 : 0) + strlen(name) > KV_KEY_MAX) {
		ret = -ENAMETOOLONG;
		goto out;
	}
	if (c && c->state != TXN_WHITEOUT) {
		if (excl || dir)
			ret = -EEXIST;
		else if (is_dir(c))
			ret = -EISDIR;
		else
			kv_txnode_attr(kv, c, out);
		goto out;
	}
	if (c) {
		/* Made again after a removal: the same record, all new. A
		 * file becoming a directory (or back) in one transaction
		 * would need the removal applied first. */
		if ((c->n.m.mode & S_IFMT) != type) {
			ret = -EBUSY;
			goto out;
		}
		c->state = TXN_MODIFIED;
	} else {
		c = kv_txnode_new(kv, d->tx, d, name, type);
		if (!c) {
			ret = -ENOMEM;
			goto out;
		}
		c->state = TXN_CREATED;
	}
	ret = fresh(kv, c, type | (mode & 07777), uid, gid);
	if (!ret)
		kv_txnode_attr(kv, c, out);
out:
	pthread_mutex_unlock(&kv->lock);
	return ret;
}

/*
 * Gives every entry of the store that shows through directory d its staged
 * node, so that d's staged children are its whole view. Names are copied
 * first: a lookup may expire an entry and change the store's table under
 * the walk. The lock stays held.
 */
static int materialize_all(struct kv_store *kv, struct kv_txnode *d)
{
	struct kv_node *b = view_base(kv, d), *bc;
	char **names;
	size_t nb = 0;
	int ret = 0;

	if (!b || !b->children)
		return 0;
	names = calloc(htab_count(b->children) + 1, sizeof(*names));
	if (!names)
		return -ENOMEM;
	for (size_t i = 0; !ret && (bc = htab_next(b->children, &i));)
		if (!(names[nb++] = strdup(bc->m.name)))
			ret = -ENOMEM;
	for (size_t i = 0; !ret && i < nb; i++)
		child(kv, d, names[i], &ret);
	for (size_t i = 0; i < nb; i++)
		free(names[i]);
	free(names);
	return ret;
}

/* Is c, a staged child, an entry of its directory's view? */
static bool shown(struct kv_store *kv, struct kv_txnode *c)
{
	return c->state != TXN_WHITEOUT && (c->state != TXN_UNCHANGED || kv_tx_base(kv, c));
}

/* Is directory d's view empty? With the lock held throughout. */
static int view_empty(struct kv_store *kv, struct kv_txnode *d, bool *empty)
{
	struct kv_node *c;
	int ret = materialize_all(kv, d);

	*empty = true;
	for (size_t i = 0; !ret && d->n.children && (c = htab_next(d->n.children, &i));)
		if (shown(kv, kv_txnode_of(c)))
			*empty = false;
	return ret;
}

/* Takes c out of the view: a whiteout over a record, or nothing at all. */
static void remove_node(struct kv_store *kv, struct kv_txnode *c)
{
	if (!c->base) {
		txnode_drop(kv, c);
		return;
	}
	if (c->has_value)
		c->tx->staged_bytes -= kv_value_size(c->n.value);
	kv_value_free(c->n.value);
	c->n.value = NULL;
	c->has_value = false;
	c->state = TXN_WHITEOUT;
}

int kv_tx_remove(struct kv_store *kv, uint64_t parent, const char *name, bool want_dir)
{
	struct kv_txnode *d, *c;
	bool empty = true;
	int ret;

	pthread_mutex_lock(&kv->lock);
	ret = dir_of(kv, parent, &d);
	if (!ret)
		ret = stageable(d->tx);
	if (ret)
		goto out;
	c = visible(kv, d, name, &ret);
	if (!c) {
		ret = ret ? ret : -ENOENT;
		goto out;
	}
	if (want_dir != is_dir(c)) {
		ret = want_dir ? -ENOTDIR : -EISDIR;
		goto out;
	}
	if (want_dir) {
		ret = view_empty(kv, c, &empty);
		if (!ret && !empty)
			ret = -ENOTEMPTY;
		if (ret)
			goto out;
	}
	remove_node(kv, c);
out:
	pthread_mutex_unlock(&kv->lock);
	return ret;
}

/* Is a inside the subtree of d (or d itself)? */
static bool inside(const struct kv_node *a, const struct kv_node *d)
{
	for (; a; a = a->parent)
		if (a == d)
			return true;
	return false;
}

/* A directory made in the transaction moves as a whole; only onto a name
 * that has nothing staged. */
static int move_dir(struct kv_txnode *s, struct kv_txnode *nd, const char *newname)
{
	char *name;

	if (s->base)
		return -EXDEV; /* mv falls back to copying */
	if (kv_child_get(&nd->n, newname))
		return -EXDEV;
	if (inside(&nd->n, &s->n))
		return -EINVAL;
	struct kv_node *old = s->n.parent;
	char *oldname = s->n.m.name;
	int ret;

	name = strdup(newname);
	if (!name)
		return -ENOMEM;
	htab_remove(old->children, &s->n);
	kv_node_subdir_gone(old);
	s->n.m.name = name;
	ret = kv_node_attach(&nd->n, &s->n);
	if (ret) {
		/* Back where it was: the slot it left is still free, and a
		 * table never shrinks, so this cannot fail. */
		s->n.m.name = oldname;
		kv_node_attach(old, &s->n);
		free(name);
		return ret;
	}
	free(oldname);
	return 0;
}

/* A file moves as its content and metadata: staged at the target name,
 * removed at the source. */
static int move_file(struct kv_store *kv, struct kv_txnode *s, struct kv_txnode *nd,
		     const char *newname, struct kv_txnode *t)
{
	/* The caller copied s's value up. */
	if (!t && !(t = kv_txnode_new(kv, s->tx, nd, newname, S_IFREG)))
		return -ENOMEM;
	if (restage_meta(kv, t, &s->n, kv_now_ns()))
		return -ENOMEM;
	if (t->has_value)
		t->tx->staged_bytes -= kv_value_size(t->n.value);
	kv_value_free(t->n.value);
	t->n.value = s->n.value;
	t->has_value = true;
	s->n.value = NULL;
	s->has_value = false;
	t->state = t->base ? TXN_MODIFIED : TXN_CREATED;
	remove_node(kv, s);
	return 0;
}

int kv_tx_rename(struct kv_store *kv, uint64_t parent, const char *name, uint64_t newparent,
		 const char *newname, unsigned flags)
{
	struct kv_txnode *d, *nd, *s, *t;
	bool empty = true;
	int ret;

	if (!kv_is_tx_id(parent) || !kv_is_tx_id(newparent))
		return -EXDEV;
	pthread_mutex_lock(&kv->lock);
	/* Copying a file's value up may drop the lock: then everything is
	 * looked up again, and the second round has nothing left to load. */
	for (;;) {
		ret = dir_of(kv, parent, &d);
		if (!ret)
			ret = dir_of(kv, newparent, &nd);
		if (!ret && d->tx != nd->tx)
			ret = -EXDEV;
		if (!ret)
			ret = stageable(d->tx);
		if (ret)
			goto out;
		s = visible(kv, d, name, &ret);
		if (!s) {
			ret = ret ? ret : -ENOENT;
			goto out;
		}
		if (is_dir(s) || s->has_value)
			break;
		ret = copy_up_value(kv, s);
		if (ret)
			goto out;
	}
	t = child(kv, nd, newname, &ret);
	if (ret || s == t)
		goto out;
	if (view_len(nd) + (nd->n.parent ? 1 : 0) + strlen(newname) +
		    (is_dir(s) ? subtree_len(s) : 0) >
	    KV_KEY_MAX) {
		ret = -ENAMETOOLONG;
		goto out;
	}
	if (t && t->state != TXN_WHITEOUT) {
		if (flags)
			ret = -EEXIST;
		else if (is_dir(s) != is_dir(t))
			ret = is_dir(t) ? -EISDIR : -ENOTDIR;
		else if (is_dir(t) && !(ret = view_empty(kv, t, &empty)))
			ret = empty ? -EXDEV : -ENOTEMPTY;
		if (ret)
			goto out;
	} else if (t && (t->n.m.mode & S_IFMT) != (s->n.m.mode & S_IFMT)) {
		ret = -EBUSY;
		goto out;
	}
	ret = is_dir(s) ? move_dir(s, nd, newname) : move_file(kv, s, nd, newname, t);
out:
	pthread_mutex_unlock(&kv->lock);
	return ret;
}

int kv_tx_open(struct kv_store *kv, uint64_t id, bool trunc)
{
	struct kv_txnode *t;
	int ret = 0;

	pthread_mutex_lock(&kv->lock);
	ret = file_of(kv, id, &t);
	if (!ret && trunc)
		ret = stage_empty(kv, t);
	pthread_mutex_unlock(&kv->lock);
	return ret;
}

ssize_t kv_tx_read(struct kv_store *kv, uint64_t id, void *buf, size_t len, uint64_t off)
{
	struct kv_txnode *t;
	uint64_t base = 0;
	ssize_t ret = 0;

	pthread_mutex_lock(&kv->lock);
	ret = file_of(kv, id, &t);
	if (!ret && t->has_value)
		ret = kv_value_read(t->n.value, buf, len, off);
	else if (!ret)
		base = t->base;
	pthread_mutex_unlock(&kv->lock);
	/* Unchanged content: read it where it is. */
	return base ? kv_read(kv, base, buf, len, off) : ret;
}

ssize_t kv_tx_write(struct kv_store *kv, uint64_t id, const void *buf, size_t len, uint64_t off)
{
	struct kv_txnode *t;
	ssize_t ret;

	pthread_mutex_lock(&kv->lock);
	ret = file_of(kv, id, &t);
	if (!ret)
		ret = stageable(t->tx);
	if (!ret)
		ret = kv_clamp_write(kv->opts.max_value_size, off, &len);
	if (!ret)
		ret = copy_up_value(kv, t);
	if (!ret && off + len > t->n.m.size)
		ret = resize(kv, t, off + len);
	if (!ret)
		ret = kv_value_write(t->n.value, buf, len, off);
	if (!ret) {
		t->n.m.mtime_ns = t->n.m.ctime_ns = kv_now_ns();
		ret = (ssize_t)len;
	}
	pthread_mutex_unlock(&kv->lock);
	return ret;
}

int kv_tx_readdir(struct kv_store *kv, uint64_t id, struct kv_dirent **out, size_t *count)
{
	struct kv_dirent *ents = NULL;
	struct kv_txnode *d, *c;
	size_t k = 0;
	int ret;

	pthread_mutex_lock(&kv->lock);
	ret = dir_of(kv, id, &d);
	if (!ret)
		ret = materialize_all(kv, d);
	if (ret)
		goto out;
	ents = calloc((d->n.children ? htab_count(d->n.children) : 0) + 1, sizeof(*ents));
	if (!ents) {
		ret = -ENOMEM;
		goto out;
	}
	for (size_t i = 0; d->n.children && (c = kv_txnode_of(htab_next(d->n.children, &i)));) {
		if (!shown(kv, c))
			continue;
		ents[k].id = c->n.m.id;
		ents[k].mode = c->n.m.mode & S_IFMT;
		if (!(ents[k].name = strdup(c->n.m.name))) {
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
	return ret;
}

int kv_tx_xattr_target(struct kv_store *kv, uint64_t id, bool change, uint64_t *out)
{
	struct kv_txnode *t;
	int ret = 0;

	pthread_mutex_lock(&kv->lock);
	t = txnode_get(kv, id);
	if (!t)
		ret = -ENOENT;
	else if (change)
		ret = copy_up_meta(kv, t);
	if (!ret)
		*out = !change && t->state == TXN_UNCHANGED ? t->base : id;
	pthread_mutex_unlock(&kv->lock);
	return ret;
}
