/*
 * Private to store/: what keeps a store safe and coherent when its backend
 * is shared or unreliable (the Redis backend).
 *
 * spill.c: buffered writes that cannot reach the backend at close go to a
 * spill file; the next open of the same store replays it first.
 * sync.c: a thread that applies other mounts' changes to the tree and hands
 * out record ids reserved in the backend.
 *
 * Locks: struct kv_sync's fields say which lock guards them; kv->lock is
 * never held across a backend call (kv_internal.h).
 */
#ifndef NADB_STORE_SYNC_H
#define NADB_STORE_SYNC_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "store/kv_internal.h"

struct kv_sync {
	char *spill_dir;	/* fixed after open */
	char *spill_prefix;	/* "<16 hex digits of the store identity>." */
	char *identity;		/* the store identity, written into spill files */
	size_t identity_len;

	/* sync.c. Ids: with a shared backend, new records take ids from a
	 * block reserved in the backend, (kv->max_id, id_end]; the next block
	 * is fetched ahead by the sync thread. */
	bool ids_shared;	/* fixed after open */
	uint64_t id_end;	/* kv->lock */
	uint64_t next_first, next_last; /* kv->lock; 0: none yet */
	bool stop;		/* kv->lock */
	pthread_t thread;
	bool running;		/* kv_start/kv_close only */
};

/* spill.c */
/*
 * Called by kv_open once the backend is open and before it is loaded: sets
 * up kv->sync and replays every spill file of this store into the backend
 * (oldest first), deleting each once committed. o is the caller's options
 * (the backend parameters name the store). 0, or a negative errno with a
 * message in err.
 */
int kv_spill_open(struct kv_store *kv, const struct kv_options *o, char *err, size_t errlen);
/* Called by kv_close when the final flush failed: writes every dirty record
 * to a new spill file (fsync'ed). 0 once saved. */
int kv_spill_save(struct kv_store *kv);
void kv_sync_free(struct kv_store *kv);

/* sync_apply.c: what the kernel must be told, collected under kv->lock. */
struct kv_sync_note {
	uint64_t parent, id;
	char *name;
};

struct kv_sync_notes {
	struct kv_sync_note *v;
	size_t n, cap;
};

/*
 * With kv->lock held: applies the changes c[0..n) (fetched records, or
 * removals) to the tree; notes what the kernel must drop. Ids of records
 * this mount holds dirty, and of records waiting for a directory it has
 * not committed yet, are appended to *busy_ids (fetched again later).
 */
void kv_sync_apply(struct kv_store *kv, struct kv_change *c, size_t n, struct kv_sync_notes *ns,
		   uint64_t **busy_ids, size_t *nbusy);
/* Without kv->lock: tells the filesystem, and empties ns (its names). */
void kv_sync_send_notes(struct kv_store *kv, struct kv_sync_notes *ns);
/* kv_recover.c */
/*
 * With kv->lock held: n's commit gave way to another mount's record
 * holding its name (kv_op.yielded). n moves into lost+found ("ID-NAME", as
 * a load recovers what it cannot place; into its own directory under that
 * name when n is lost+found or above it) with everything below it, all
 * marked for the next flush so that the other mounts, which may have
 * dropped its entries as orphans, fetch them again; the kernel is told by
 * the sweeper thread (kv_queue_inval: the flusher, which a request may be
 * waiting for, must not wait for the kernel). 0, or a negative errno with
 * n left where it was.
 */
int kv_recover_displaced(struct kv_store *kv, struct kv_node *n);

/* sync.c */
/* After load: reserves the first block of ids when the backend is shared. */
int kv_sync_open(struct kv_store *kv, char *err, size_t errlen);
/* With kv->lock held: the id for a new record (kv->max_id becomes it once
 * used). -ENOSPC while the next block is being reserved. */
int kv_sync_next_id(struct kv_store *kv, uint64_t *id);
/*
 * Without kv->lock, before an O_EXCL create or a mkdir of (parent, name):
 * with a shared backend, reserves an id and claims the name for it in the
 * backend. 0 with *id (0: no claim needed, use kv_sync_next_id) and
 * *claimed; -EEXIST when another mount holds the name (its record is then
 * fetched). When the backend cannot be reached the create goes on, atomic
 * within this mount only; *claimed is still true, as the claim may have
 * landed (the caller flags the record as sent, kv_op.never_sent).
 */
int kv_sync_claim(struct kv_store *kv, uint64_t parent, const char *name, uint64_t *id,
		  bool *claimed);
int kv_sync_start(struct kv_store *kv);
void kv_sync_stop(struct kv_store *kv);

/* Fills out's backend health fields, without kv->lock. */
void kv_backend_health_stats(struct kv_store *kv, struct kv_stats *out);

#endif
