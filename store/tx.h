/*
 * Private to store/: transactions (tx.c: the staged view; tx_commit.c:
 * validation and application).
 *
 * A transaction's view is a tree of staged nodes, materialized lazily as it
 * is looked at. Each staged node is a struct kv_node (flag KV_NODE_STAGED,
 * an id with KV_TX_ID_BIT, in kv->by_id) so that the generic code can work
 * on it (xattrs, tags, attributes), never flushed, indexed or swept. A
 * staged node shows a record of the store (base) or one made in the
 * transaction:
 *
 *   UNCHANGED  shows base as it is now (reads go to base)
 *   MODIFIED   base with staged metadata, and a staged value if has_value
 *   CREATED    made in the transaction (base 0)
 *   WHITEOUT   base removed in the transaction
 *
 * A directory's view is its staged children, plus, for UNCHANGED and
 * MODIFIED directories, base's children that have no staged node yet.
 *
 * Locking: kv->lock guards all of it. A call that must drop the lock while
 * using a transaction (to load a value) counts itself in users, and commit
 * and abort refuse (-EBUSY) while users is not 0, so nothing is freed under
 * it.
 */
#ifndef NADB_STORE_TX_H
#define NADB_STORE_TX_H

#include "store/kv_internal.h"

#define KV_TX_ID_BIT (1ULL << 61)

enum kv_txn_state { TXN_UNCHANGED, TXN_MODIFIED, TXN_CREATED, TXN_WHITEOUT };

struct kv_txn;

struct kv_txnode {
	struct kv_node n; /* first: by_id and the generic code see this */
	struct kv_txn *tx;
	struct kv_txnode *next; /* every node of tx, for commit and free */
	uint64_t base;		/* the record shown; 0 if made in the transaction */
	uint64_t base_version;	/* base's version when the transaction first saw it */
	uint8_t state;		/* enum kv_txn_state */
	bool has_value;		/* n.value is the staged content */
	bool dead;		/* dropped from the view; freed with tx */
	/* CREATED, while a commit runs: the record it will put in the tree,
	 * made before the commit's first change (tx_commit.c). */
	struct kv_node *made;
};

struct kv_txn {
	struct kv_txn *next;
	char *name;
	struct kv_txnode *root; /* shows the store's root */
	struct kv_txnode *nodes;
	uint64_t staged_bytes;
	unsigned users;
	/* Commit has begun (and may drop the lock): nothing more is staged. */
	bool committing;
	/* Aborted while in use: out of view, freed by kv_tx_reap once idle. */
	bool doomed;
};

static inline struct kv_txnode *kv_txnode_of(struct kv_node *n)
{
	return n && (n->flags & KV_NODE_STAGED) ? (struct kv_txnode *)n : NULL;
}

struct kv_txn *kv_tx_find(struct kv_store *kv, const char *name);
/* Base of t if it is still a record of the tree, else NULL. */
struct kv_node *kv_tx_base(struct kv_store *kv, const struct kv_txnode *t);
/* A staged node named name in parent (NULL: a root), UNCHANGED, base 0. */
struct kv_txnode *kv_txnode_new(struct kv_store *kv, struct kv_txn *tx, struct kv_txnode *parent,
				const char *name, uint32_t mode);
/* t's attributes as the view shows them (base's while t is unchanged). */
void kv_txnode_attr(struct kv_store *kv, struct kv_txnode *t, struct kv_attr *a);
/* Frees tx and its staged nodes (values handed to the store excepted). */
void kv_tx_free(struct kv_store *kv, struct kv_txn *tx);

/* tx_commit.c: with the lock held, every staged change of tx still applies
 * to the store (0), or a conflict (-ESTALE) or another refusal with msg. */
int kv_tx_check(struct kv_store *kv, struct kv_txn *tx, char *msg, size_t msglen);
/* msg says t's key was why outside the transaction; returns -ESTALE. */
int kv_tx_conflict(const struct kv_txnode *t, const char *why, char *msg, size_t len);

/* tx_shared.c: a commit on a backend other mounts share. */
struct kv_tx_hold {
	struct kv_expect *e;	/* reserved in the backend */
	struct kv_txnode **t;	/* e[i] is for t[i]; only while the check runs */
	size_t n;
	uint64_t owner;		/* this commit among the mount's */
};
/* With the lock held (dropped and taken again; tx counted in users
 * meanwhile): makes the records tx changes clean, checks them and the names
 * it creates against the backend and reserves them (h, for kv_tx_release).
 * 0 at once when the backend is not shared; otherwise as kv_tx_check, or
 * the backend's error, with msg. */
int kv_tx_reserve(struct kv_store *kv, struct kv_txn *tx, struct kv_tx_hold *h, char *msg,
		  size_t msglen);
/* Without the lock: ends h's reservations (now, or, !now, when they
 * lapse) and frees h. */
void kv_tx_release(struct kv_store *kv, struct kv_tx_hold *h, bool now);
void kv_tx_hold_free(struct kv_tx_hold *h);

/* The staged side of the public API (tx.c), each taking kv->lock. */
int kv_tx_lookup(struct kv_store *kv, uint64_t parent, const char *name, struct kv_attr *out);
int kv_tx_getattr(struct kv_store *kv, uint64_t id, struct kv_attr *out);
int kv_tx_setattr(struct kv_store *kv, uint64_t id, const struct kv_setattr *sa,
		  struct kv_attr *out);
int kv_tx_make(struct kv_store *kv, uint64_t parent, const char *name, uint32_t mode, uint32_t uid,
	       uint32_t gid, bool excl, bool dir, struct kv_attr *out);
int kv_tx_remove(struct kv_store *kv, uint64_t parent, const char *name, bool dir);
int kv_tx_rename(struct kv_store *kv, uint64_t parent, const char *name, uint64_t newparent,
		 const char *newname, unsigned flags);
int kv_tx_open(struct kv_store *kv, uint64_t id, bool trunc);
ssize_t kv_tx_read(struct kv_store *kv, uint64_t id, void *buf, size_t len, uint64_t off);
ssize_t kv_tx_write(struct kv_store *kv, uint64_t id, const void *buf, size_t len, uint64_t off);
int kv_tx_readdir(struct kv_store *kv, uint64_t id, struct kv_dirent **out, size_t *n);
/* The id an xattr call works on: base for a read of an unchanged node, the
 * staged node (its metadata copied up first) for a change. */
int kv_tx_xattr_target(struct kv_store *kv, uint64_t id, bool change, uint64_t *out);

#endif
