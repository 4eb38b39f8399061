/*
 * A transaction's commit on a store other mounts share (Redis): a change
 * another mount committed and this mount has not heard of yet must refuse
 * the commit as a local one does (spec 6a). Before anything is applied,
 * the records the transaction changes and the names it creates are checked
 * against the backend and reserved there in one step (backend op reserve):
 * until the commit carrying the transaction is durable, no other mount can
 * write them, so nothing slips in between the check and that commit.
 *
 * The check compares each record as this mount holds it with the backend's,
 * so those records are made clean first (a flush): what this mount holds of
 * a clean record is what it committed or loaded.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/tx.h"
#include "util/log.h"

/* Rounds of "flush, look again" before giving up on records that keep
 * changing locally (each change is a local conflict anyway). */
#define FLUSH_ROUNDS 3
/*
 * How long reservations last if never released: long enough for the flush
 * that carries the transaction (milliseconds, plus the time to send its
 * staged bytes at a modest 16 MiB/s), short because a mount killed during
 * a commit holds up other mounts' writes of those keys until then.
 */
#define HOLD_MS 3000
#define HOLD_BYTES_PER_MS (16 * 1024)

static bool changes_record(const struct kv_txnode *t)
{
	return !t->dead && (t->state == TXN_MODIFIED || t->state == TXN_WHITEOUT);
}

/* The store directory a created node lands in, or NULL when its parent is
 * made by the transaction too (then its name is free by construction). */
static struct kv_node *landing_dir(struct kv_store *kv, const struct kv_txnode *t)
{
	const struct kv_txnode *p = kv_txnode_of(t->n.parent);

	if (!p || p->state == TXN_CREATED || p->state == TXN_WHITEOUT)
		return NULL;
	return kv_tx_base(kv, p);
}

/* Must the store flush before the backend can be asked? Yes while a
 * record the transaction changes is not clean, and, in the first round,
 * when it creates names and anything is dirty: a name this mount freed
 * before the commit and has not flushed yet would still be taken in the
 * backend. (What other writers dirty later is no reason to wait again.) */
static bool flush_first(struct kv_store *kv, const struct kv_txn *tx, bool first)
{
	for (const struct kv_txnode *t = tx->nodes; t; t = t->next) {
		const struct kv_node *b = changes_record(t) ? kv_tx_base(kv, t) : NULL;

		if (b && (b->flags & (KV_NODE_ON_DIRTY | KV_NODE_INFLIGHT)))
			return true;
		if (first && !t->dead && t->state == TXN_CREATED && kv->ndirty)
			return true;
	}
	return false;
}

void kv_tx_hold_free(struct kv_tx_hold *h)
{
	for (size_t i = 0; i < h->n; i++) {
		free((void *)h->e[i].rec);
		free((void *)h->e[i].name);
	}
	free(h->e);
	free(h->t);
	memset(h, 0, sizeof(*h));
}

/* e[n] is filled in: keep it, with the node it is for (at most one per
 * node, so the arrays sized by the node count hold them all). */
static void hold_add(struct kv_tx_hold *h, struct kv_txnode *t)
{
	h->t[h->n++] = t;
}

/* With the lock held: what the transaction expects of the backend. */
static int collect(struct kv_store *kv, struct kv_txn *tx, struct kv_tx_hold *h)
{
	size_t cap = 0;
	int ret = 0;

	for (struct kv_txnode *t = tx->nodes; t; t = t->next)
		cap++;
	h->e = calloc(cap ? cap : 1, sizeof(*h->e));
	h->t = calloc(cap ? cap : 1, sizeof(*h->t));
	if (!h->e || !h->t)
		return -ENOMEM;
	for (struct kv_txnode *t = tx->nodes; t && !ret; t = t->next) {
		struct kv_expect *e = &h->e[h->n];
		struct kv_node *b;

		if (changes_record(t)) {
			uint8_t *rec = NULL;
			size_t len = 0, rcap = 0;
			struct kv_meta view;

			/* The root is no record other mounts replace. */
			b = kv_tx_base(kv, t);
			if (!b || b == kv->root)
				continue;
			kv_node_meta_view(b, &view);
			ret = kv_meta_encode(&view, &rec, &len, &rcap);
			if (ret)
				break;
			e->id = b->m.id;
			e->rec = rec;
			e->reclen = len;
			hold_add(h, t);
		} else if (!t->dead && t->state == TXN_CREATED && (b = landing_dir(kv, t))) {
			e->parent = b->m.id;
			e->name = strdup(t->n.m.name);
			if (!e->name)
				ret = -ENOMEM;
			else
				hold_add(h, t);
		}
	}
	return ret;
}

int kv_tx_reserve(struct kv_store *kv, struct kv_txn *tx, struct kv_tx_hold *h, char *msg,
		  size_t msglen)
{
	const struct kv_backend_ops *ops = kv->backend->ops;
	int64_t hold_ms = HOLD_MS + (int64_t)(tx->staged_bytes / HOLD_BYTES_PER_MS);
	size_t bad = 0;
	int ret;

	if (!ops->caps.shared || !ops->reserve)
		return 0;
	for (int round = 0;; round++) {
		ret = kv_tx_check(kv, tx, msg, msglen);
		if (ret || !flush_first(kv, tx, round == 0))
			break;
		if (round == FLUSH_ROUNDS) {
			snprintf(msg, msglen, "keys of the transaction keep changing; try again");
			return -EBUSY;
		}
		tx->users++;
		ret = kv_wait_flushed(kv);
		tx->users--;
		if (ret) {
			snprintf(msg, msglen, "cannot flush before checking the backend: %s",
				 strerror(-ret));
			return ret;
		}
	}
	if (ret)
		return ret;
	ret = collect(kv, tx, h);
	if (ret) {
		kv_tx_hold_free(h);
		snprintf(msg, msglen, "%s", strerror(-ret));
		return ret;
	}
	h->owner = ++kv->tx_owner_seq;
	tx->users++;
	pthread_mutex_unlock(&kv->lock);
	ret = ops->reserve(kv->backend, h->e, h->n, h->owner, hold_ms, &bad);
	pthread_mutex_lock(&kv->lock);
	tx->users--;
	if (ret == -ESTALE && bad < h->n)
		kv_tx_conflict(h->t[bad],
			       h->e[bad].id ? "changed through another mount" :
					      "created through another mount",
			       msg, msglen);
	else if (ret)
		snprintf(msg, msglen, "cannot check the transaction with the backend: %s",
			 strerror(-ret));
	if (ret) {
		kv_tx_hold_free(h);
		return ret;
	}
	/* The nodes go with the transaction, before the release. */
	free(h->t);
	h->t = NULL;
	return 0;
}

void kv_tx_release(struct kv_store *kv, struct kv_tx_hold *h, bool now)
{
	int ret;

	if (!h->n || !now) {
		kv_tx_hold_free(h);
		return;
	}
	ret = kv->backend->ops->release(kv->backend, h->e, h->n, h->owner);
	/* Not fatal: the reservations lapse at their deadline. */
	if (ret)
		NLOG(NLOG_INFO, "tx", "reservations not released; they lapse by themselves",
		     LF_STR("error", strerror(-ret)));
	kv_tx_hold_free(h);
}
