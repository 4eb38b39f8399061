/*
 * Private to store/: the in-memory tree and the write-back buffer.
 *
 * Lock order: kv->lock is the only store lock. It guards every field of
 * struct kv_store marked [L] and every field of every struct kv_node. It is
 * never held across a backend call: the flusher snapshots under the lock,
 * commits without it, then applies the result under it again; readers copy a
 * value reference under the lock and read the backend without it.
 */
#ifndef NADB_STORE_KV_INTERNAL_H
#define NADB_STORE_KV_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "store/backend.h"
#include "store/htab.h"
#include "store/kv.h"
#include "store/tags.h"
#include "store/value.h"

/* How far the running backup command is; atomics, read by kv_get_stats. */
enum kv_bk_op { KV_BK_NONE, KV_BK_CREATE, KV_BK_VERIFY, KV_BK_RESTORE };
struct kv_bk_progress {
	_Atomic int op;			/* enum kv_bk_op */
	_Atomic uint64_t keys, keys_total, bytes, bytes_total;
};

enum kv_node_flags {
	/* The value changed since the last snapshot taken by the flusher. */
	KV_NODE_VALUE_DIRTY = 1 << 0,
	/* Removed from the tree; a DEL is owed to the backend if COMMITTED. */
	KV_NODE_DELETED = 1 << 1,
	/* The backend has a record for this id. */
	KV_NODE_COMMITTED = 1 << 2,
	/* Part of the batch the flusher is committing: must not be freed. */
	KV_NODE_INFLIGHT = 1 << 3,
	/* On kv->dirty (changed since the flusher last took it, or a DEL is owed). */
	KV_NODE_ON_DIRTY = 1 << 4,
	/* A transaction's staged node (tx.c): never flushed, indexed or swept. */
	KV_NODE_STAGED = 1 << 5,
	/* Some commit (or spill) carried this id, whatever its outcome: the
	 * backend may have a record for it (kv_op.never_sent). */
	KV_NODE_SENT = 1 << 6,
	/* ON_DIRTY, but off the list: no aux record could be made for its
	 * links (out of memory). The flusher lists it before it takes a batch
	 * (kv_dirty_relist, kv->nunlisted). */
	KV_NODE_UNLISTED = 1 << 7,
	/* A transaction's commit reserved this node's aux record before its
	 * first change (tx_commit.c): kept while empty, so that what the
	 * commit then puts into it cannot fail. Only while kv->lock is held. */
	KV_NODE_AUX_HELD = 1 << 8,
	/* The kernel's cached pages of the value, if any, are current: a
	 * cache period runs (kv_cache.c). */
	KV_NODE_CACHE_OK = 1 << 9,
	/* The kernel may hold pages of the value (read or pushed since the
	 * last invalidation): a change must invalidate them (kv_cache.c). */
	KV_NODE_KPAGES = 1 << 10,
};

/*
 * What most keys never have, in one allocation made when first needed and
 * freed once empty again (kv_node_aux_trim): at a million keys, every byte
 * of struct kv_node costs a megabyte of the daemon's memory (issue #8).
 * The dirty-list links live here too, so a clean node carries none.
 */
struct kv_node_aux {
	char **tags;			/* owned; sorted, unique */
	void *xattrs;			/* owned; custom user.* xattrs, encoded */
	int64_t expires_ms;		/* absolute unix time in ms; 0 = never */
	/* On kv->dirty while KV_NODE_ON_DIRTY and not KV_NODE_UNLISTED. */
	struct kv_node *dirty_prev, *dirty_next;
	uint64_t dirty_bytes;		/* bytes written since the last snapshot */
	uint32_t ntags;
	uint32_t xattrs_len;		/* <= KV_XATTRS_MAX */
	uint32_t nsubdirs;		/* child directories, for nlink */
};

/* A node's own part of struct kv_meta: the fields every record has, named
 * as there (kv_node_meta_view and kv_node_meta_copy give the whole record;
 * tags, xattrs and the deadline are in the aux record). */
struct kv_node_meta {
	uint64_t id;
	uint64_t parent;
	char *name;		/* inline after the node, or owned (kv_node_name_inline) */
	int64_t atime_ns, mtime_ns, ctime_ns, btime_ns;
	uint64_t size;
	uint64_t vver;
	uint64_t stored_size;
	uint32_t mode;
	uint32_t uid, gid;
	uint8_t encoding;
};

/* 144 bytes on LP64, so that with a short inline name a key fits a 160-byte
 * malloc chunk. */
struct kv_node {
	/* Current metadata. m.vver/stored_size/encoding name the last committed
	 * value, which is the current one whenever value == NULL. */
	struct kv_node_meta m;
	struct kv_node *parent;		/* NULL for the root and detached nodes */
	struct htab *children;		/* directories only: name -> node */
	/* In-memory content: dirty data, or a clean copy kept while open. */
	struct kv_value *value;
	uint64_t version;		/* bumped by every change */
	struct kv_node_aux *aux;	/* NULL while it would be empty */
	uint32_t open_count;		/* open file handles */
	uint32_t flags;			/* enum kv_node_flags */
};

#if UINTPTR_MAX == UINT64_MAX
_Static_assert(sizeof(struct kv_node) <= 144, "a key's node outgrew its malloc chunk (issue #8)");
#endif

static inline char **kv_node_tags(const struct kv_node *n)
{
	return n->aux ? n->aux->tags : NULL;
}

static inline uint32_t kv_node_ntags(const struct kv_node *n)
{
	return n->aux ? n->aux->ntags : 0;
}

static inline const void *kv_node_xattrs(const struct kv_node *n)
{
	return n->aux ? n->aux->xattrs : NULL;
}

static inline uint32_t kv_node_xattrs_len(const struct kv_node *n)
{
	return n->aux ? n->aux->xattrs_len : 0;
}

static inline int64_t kv_node_expires(const struct kv_node *n)
{
	return n->aux ? n->aux->expires_ms : 0;
}

static inline uint32_t kv_node_nsubdirs(const struct kv_node *n)
{
	return n->aux ? n->aux->nsubdirs : 0;
}

static inline uint64_t kv_node_dirty_bytes(const struct kv_node *n)
{
	return n->aux ? n->aux->dirty_bytes : 0;
}

void kv_node_aux_trim(struct kv_node *n);
/* A child directory of dir left it. The aux record stays until dir's next
 * trim (a directory whose entries changed is dirty, and kv_dirty_unlink
 * trims), so that putting the child back, as a failed move does, needs no
 * memory. */
static inline void kv_node_subdir_gone(struct kv_node *dir)
{
	dir->aux->nsubdirs--;
}

/* n's aux record, made if missing; NULL when out of memory. */
struct kv_node_aux *kv_node_aux(struct kv_node *n);
/* Frees n's aux record if it holds nothing (call after clearing a field). */
void kv_node_aux_trim(struct kv_node *n);
/* Replaces n's xattrs with the owned buffer given (freed at once when len
 * is 0), freeing the old one: 0, or -ENOMEM with nothing changed (the
 * buffer not taken). Tags go through kv_node_set_tags (tags.h), which
 * indexes them. */
int kv_node_put_xattrs(struct kv_node *n, void *xattrs, uint32_t len);
/* The whole record of n, borrowing n's strings: valid while kv->lock is
 * held and n unchanged; never kv_meta_clear'ed. */
void kv_node_meta_view(const struct kv_node *n, struct kv_meta *m);
/* The whole record of n as an owned copy: 0 or -ENOMEM. */
int kv_node_meta_copy(struct kv_meta *dst, const struct kv_node *n);
/* Moves m's fields (name, tags, xattrs owned) into n, whose old ones are
 * freed, and zeroes m; m->expires_ms is not taken (kv_set_deadline indexes
 * it). -ENOMEM leaves both unchanged. */
int kv_node_meta_take(struct kv_node *n, struct kv_meta *m);

struct kv_store {
	struct kv_options opts;		/* immutable after open (strings copied) */
	char *data_dir, *db, *ns;	/* owned copies behind opts.params */
	struct kv_backend *backend;

	pthread_mutex_t lock;
	pthread_cond_t flush_cond;	/* wakes the flusher */
	pthread_cond_t done_cond;	/* a flush finished, or buffer space freed */

	struct htab by_id;		/* [L] id -> node, detached open nodes included */
	struct kv_node *root;		/* [L] */
	uint64_t max_id;		/* [L] highest id ever used */
	uint64_t nkeys, ndirs;		/* [L] */

	struct kv_node *dirty_head, *dirty_tail; /* [L] oldest first */
	uint64_t ndirty;		/* [L] ON_DIRTY nodes, unlisted ones included */
	uint64_t nunlisted;		/* [L] ON_DIRTY nodes off the list (UNLISTED) */
	uint64_t unlisted_bytes;	/* [L] dirty bytes of nodes without an aux */
	int64_t dirty_since_ms;		/* [L] monotonic time the list became non-empty */
	uint64_t dirty_bytes;		/* [L] written since their node's last snapshot */
	uint64_t inflight_bytes;	/* [L] dirty bytes inside the committing batch */
	uint64_t buffer_bytes;		/* [L] memory of in-memory values */

	uint64_t flush_req;		/* [L] flush requests made (a generation) */
	uint64_t flush_done;		/* [L] requests satisfied by completed flushes */
	uint64_t flushes, flush_failures, last_flush_ms; /* [L] */
	int last_flush_error;		/* [L] 0 after a successful flush */

	/* TTL (ttl.c): a min-heap of deadlines, checked lazily against the
	 * node's current deadline, so changing a TTL is O(log n) and a sweep
	 * costs what expires. */
	struct kv_deadline *heap;	/* [L] */
	size_t heap_len, heap_cap;	/* [L] */
	struct kv_expired_ent *gone;	/* [L] expired, kernel not told yet */
	size_t gone_len, gone_cap;	/* [L] */
	bool gone_sending;		/* [L] the sweeper is sending a taken list */
	uint64_t ttl_expired;		/* [L] keys expired since mount */
	uint64_t ttl_live;		/* [L] records in the tree with a deadline */
	/* notify_lock: held while the callback runs, so that unregistering it
	 * (NULL) waits for a call in progress. Never taken with kv->lock held. */
	pthread_mutex_t notify_lock;
	kv_expire_fn on_expire;		/* notify_lock */
	void *on_expire_arg;		/* notify_lock */
	pthread_cond_t sweep_cond;	/* wakes the sweeper */
	pthread_cond_t inval_cond;	/* the sweeper sent what was queued, or stopped */
	pthread_t sweeper;
	bool sweeper_running;

	struct kv_tag_index tags;	/* [L] tags.c, tag_query.c */
	struct kv_txn *txs;		/* [L] open transactions (tx.c) */
	uint64_t tx_serial;		/* [L] last staged node number */
	uint64_t tx_committed, tx_aborted, tx_conflicted; /* [L] */
	uint64_t tx_owner_seq;		/* [L] commits that reserved in the backend */

	/* Backups (backup.c): while backup_pins > 0 a backup is reading stored
	 * value versions by reference, so the flusher must not let the backend
	 * delete superseded ones: it passes old_vver = 0 and keeps {id, vver}
	 * here, handed to backend reclaim() once the last pin is released. */
	uint32_t backup_pins;		/* [L] */
	uint64_t (*deferred)[2];	/* [L] */
	size_t ndeferred, deferred_cap;	/* [L] */
	/* Serializes backup operations (create, restore, prune) of this store;
	 * taken before kv->lock, never while holding it. */
	pthread_mutex_t backup_lock;
	char *backup_dir;		/* immutable after open; NULL: none known */
	struct kv_bk_progress backup_progress;

	/* sync.h: spill file and multi-mount coherence; NULL when unused. */
	struct kv_sync *sync;
	uint64_t spilled;		/* [L] records replayed from a spill file */

	pthread_t flusher;
	bool flusher_running;		/* set/cleared by kv_start/kv_close only */
	bool stopping;			/* [L] */
};

int64_t kv_now_ns(void);
/* Local reads up to this size are not worth handing the FUSE loop over. */
#define KV_INLINE_READ_MAX ((uint64_t)1 << 20)
/* Before a call that may block for long: tells the hook (kv_set_block_hook). */
void kv_may_block(void);
int64_t kv_mono_ms(void);

uint64_t kv_node_id_hash(const void *item);
bool kv_node_id_match(const void *item, const void *key);
/* A zeroed node whose name is stored right after it, in the same allocation
 * (one malloc less per key: its overhead was ~28 bytes of a short name's). */
struct kv_node *kv_node_new_named(const char *name);
/* Whether n's name is that inline copy (a rename or a staged node has its
 * own allocation). */
static inline bool kv_node_name_inline(const struct kv_node *n)
{
	return n->m.name == (const char *)(n + 1);
}
/* Frees n's owned metadata (an inline name is not freed); its aux record
 * goes too unless it holds more (dirty links, nsubdirs): a node about to be
 * freed frees n->aux itself. */
void kv_node_meta_clear(struct kv_node *n);

/* With kv->lock held. */
struct kv_node *kv_child_get(struct kv_node *dir, const char *name);
/* Takes n out of the tree (unlink/rmdir/expiry); frees it unless a handle,
 * the flusher or an owed DEL still needs it. */
void kv_node_remove(struct kv_store *kv, struct kv_node *n);
/* A directory's entries changed: its mtime and ctime move. */
void kv_dir_touch(struct kv_store *kv, struct kv_node *dir, int64_t now);

/* ttl.c, all with kv->lock held unless said otherwise */
int64_t kv_now_ms(void);
static inline bool kv_node_expired(const struct kv_node *n, int64_t now_ms)
{
	/* A staged deadline takes effect when its transaction commits. */
	int64_t at = kv_node_expires(n);

	return at && now_ms >= at && !(n->flags & KV_NODE_STAGED);
}
/* Removes an expired n from the tree, as if unlinked, and queues the kernel
 * cache invalidation for the sweeper thread to send. */
void kv_expire(struct kv_store *kv, struct kv_node *n);
/* The child called name unless it has expired (then it is expired now). */
struct kv_node *kv_live_child(struct kv_store *kv, struct kv_node *dir, const char *name);
/* Sets n's deadline (0: never) and indexes it for the sweeper. */
int kv_set_deadline(struct kv_store *kv, struct kv_node *n, int64_t at_ms);
/* Room for more deadlines in the index: that many kv_set_deadline calls
 * on nodes that have an aux record cannot fail. 0 or -ENOMEM. */
int kv_deadline_reserve(struct kv_store *kv, size_t more);
int kv_sweeper_start(struct kv_store *kv);
void kv_sweeper_stop(struct kv_store *kv);
void kv_ttl_destroy(struct kv_store *kv);
int kv_node_attach(struct kv_node *dir, struct kv_node *n);
struct kv_node *kv_node_get(struct kv_store *kv, uint64_t id);
void kv_mark_dirty(struct kv_store *kv, struct kv_node *n);
/* bytes more of n's value are dirty (counted in n and kv->dirty_bytes). */
void kv_add_dirty_bytes(struct kv_store *kv, struct kv_node *n, uint64_t bytes);
/* n's dirty bytes no longer count (n removed, or its bytes snapshotted):
 * returns how many they were. */
uint64_t kv_take_dirty_bytes(struct kv_store *kv, struct kv_node *n);
/* Lists the UNLISTED nodes (flusher, before taking a batch): 0 or -ENOMEM. */
int kv_dirty_relist(struct kv_store *kv);
/* Takes n off the dirty list (it must be on it). */
void kv_dirty_unlink(struct kv_store *kv, struct kv_node *n);
void kv_node_free(struct kv_store *kv, struct kv_node *n);
void kv_fill_attr(const struct kv_node *n, struct kv_attr *a);
/* The node id names if it is in the tree, or removed but still open; NULL
 * otherwise. A key past its deadline is expired here. */
struct kv_node *kv_node_live(struct kv_store *kv, uint64_t id);
/* Brings the committed value of id into memory (n->value), if not there.
 * Drops kv->lock around the backend read; returns with it held. */
int kv_load_value(struct kv_store *kv, uint64_t id);
void kv_value_account(struct kv_store *kv, struct kv_node *n, struct kv_value *newval);
/* n's value changed by bytes: size, times, dirty bookkeeping. */
void kv_value_changed(struct kv_store *kv, struct kv_node *n, uint64_t bytes);
/* Drops n's in-memory value if nothing needs it (closed, clean). */
void kv_maybe_drop_value(struct kv_store *kv, struct kv_node *n);
/* Room for more entries in dir (its table made if missing, which changes
 * nothing seen): that many kv_node_attach calls cannot fail, given dir's
 * aux record when one of them is a directory. 0 or -ENOMEM. */
int kv_dir_reserve(struct kv_node *dir, size_t more);
/* Takes n out of its directory (nothing else changes). */
void kv_node_detach(struct kv_node *n);
/* Length of the key naming n (its path below the root, no leading '/'). */
size_t kv_key_len(const struct kv_node *n);
/* The longest key below dir, relative to dir ("a/b" for dir/a/b). */
size_t kv_subtree_max_len(const struct kv_node *dir);
/* kv_recover.c: moves the records a load could not place (orphans[0..n),
 * out of the tree) and cycles of parents into lost+found. */
int kv_recover_records(struct kv_store *kv, struct kv_node **orphans, size_t n);
/* kv_open.c: a loaded record into the id index (a kv_load_fn; arg: kv). */
int kv_load_record(const struct kv_meta *m, void *arg);
/* Links n under its parent: 1, 0 if it has no place there, or -ENOMEM. */
int kv_try_link(struct kv_store *kv, struct kv_node *n);
/* kv_load_settle.c: on a store other mounts share, what the load could not
 * place, checked against the backend now (*orphans[0..*n) is updated). */
int kv_load_settle(struct kv_store *kv, struct kv_node ***orphans, size_t *n);
/* mkdir/create's common part: a new node under dir, dirty, dir touched. */
int kv_node_create(struct kv_store *kv, struct kv_node *dir, const char *name, uint32_t mode,
		   uint32_t uid, uint32_t gid, struct kv_node **out);
/* kv_node_create's second half: n, a new node with its id (not yet in
 * by_id), goes under dir, dirty, dir touched. -ENOMEM only if by_id or
 * dir's table must grow, or dir needs an aux record for nlink (a commit
 * reserves all of them first). */
int kv_node_link_new(struct kv_store *kv, struct kv_node *dir, struct kv_node *n, int64_t now);

/* tx.c: with kv->lock held */
void kv_tx_destroy_all(struct kv_store *kv);
/* Frees the transactions aborted while in use that are idle now (the
 * sweeper calls it on every pass). */
void kv_tx_reap(struct kv_store *kv);

/* Queues a kernel cache invalidation of (parent, name) and of id for the
 * sweeper thread to send (ttl.c), as expiry does; with kv->lock held. */
void kv_queue_inval(struct kv_store *kv, uint64_t parent, const char *name, uint64_t id);
/* With the lock held: ends n's cache period, if one runs, and with notify
 * queues the invalidation of its pages (kv_cache.c). */
void kv_cache_end(struct kv_store *kv, struct kv_node *n, bool notify);
/*
 * A write of *len bytes at off under the size limit max, as POSIX has it for
 * a file size limit: one that starts past the limit (or at it, with bytes to
 * write) fails with -EFBIG; one that crosses it is cut to what fits (a short
 * write, and the caller's next write gets -EFBIG). 0 or -EFBIG.
 */
static inline int kv_clamp_write(uint64_t max, uint64_t off, size_t *len)
{
	if (off > max || (off == max && *len))
		return -EFBIG;
	if (*len > max - off)
		*len = (size_t)(max - off);
	return 0;
}

/* Applies sa's metadata fields (all but the size) to m at time now, ctime
 * included; false when nothing changed. */
bool kv_meta_setattr(struct kv_node_meta *m, const struct kv_setattr *sa, int64_t now);

/* flusher.c */
/* Backups: pin/unpin stored value versions (see backup_pins); with kv->lock
 * held. Unpinning the last wakes the flusher to reclaim what was deferred. */
void kv_backup_pin(struct kv_store *kv);
void kv_backup_unpin(struct kv_store *kv);
int kv_flusher_start(struct kv_store *kv);
void kv_flusher_stop(struct kv_store *kv);
/* One flush of everything dirty now; called by the flusher thread, or by
 * kv_open/kv_close when no flusher runs. Takes and releases kv->lock. */
int kv_flush_once(struct kv_store *kv);
/* The same, with commit in place of the backend's (the spill file). */
typedef int (*kv_commit_fn)(void *arg, struct kv_op *ops, size_t n);
int kv_flush_once_via(struct kv_store *kv, kv_commit_fn commit, void *arg);
/* Waits, with kv->lock held, until every change made before the call is
 * durable; -EIO after backend_timeout. */
/* Asks the flusher for a flush now, without waiting for it. With kv->lock held. */
void kv_flush_soon(struct kv_store *kv);
int kv_wait_flushed(struct kv_store *kv);
/* Waits, with kv->lock held, for buffer space; -EIO after backend_timeout. */
int kv_wait_buffer(struct kv_store *kv);
/* With kv->lock held: 0 if the buffer has room, else -EWOULDBLOCK (and the
 * flusher is woken). */
int kv_buffer_room(struct kv_store *kv);

#endif
