/*
 * The nadb store: a tree of records (keys and directories) addressed by
 * permanent id, with a bounded write-back buffer flushed to a backend by a
 * background thread. FUSE-free: fs/ maps syscalls onto this API.
 *
 * Return convention: 0 (or a byte count) on success, a negative errno.
 * Threads: every function is safe to call from any thread. Internally one
 * store lock guards the tree and the buffer; it is never held across a
 * backend call. Functions that may wait (kv_write when the buffer is full,
 * kv_fsync, kv_flush) wait at most backend_timeout, then return -EIO.
 */
#ifndef NADB_STORE_KV_H
#define NADB_STORE_KV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "store/backend.h"

struct kv_store;

#define KV_SPILL_DIR_DEFAULT "/var/lib/nadbfs/spill"

enum kv_backend_kind { KV_BACKEND_FS, KV_BACKEND_REDIS };

struct kv_options {
	enum kv_backend_kind backend;
	struct kv_backend_params params;
	uint64_t buffer_size;		/* dirty bytes before writers wait */
	uint64_t flush_interval_ms;	/* oldest dirty data is flushed within this */
	uint64_t backend_timeout_ms;	/* waits give up with -EIO after this */
	uint64_t max_value_size;	/* -EFBIG beyond */
	uint32_t root_uid, root_gid;	/* owner of a new store's root directory */
	uint64_t default_ttl_s;		/* TTL of new keys; 0 = none */
	uint64_t ttl_sweep_ms;		/* the sweeper runs at least this often */
	uint64_t query_cache_size;	/* cached query results; 0 disables */
	uint64_t tx_max_bytes;		/* staged bytes a transaction may hold */
	/* Where backups go; NULL: backups/ in params.data_dir, if there is one
	 * (otherwise backup commands fail with a message saying so). */
	const char *backup_dir;
	/* Where buffered writes go when the backend is unreachable at close
	 * (store/spill.c): used for the Redis backend, or for any backend when
	 * set; NULL = KV_SPILL_DIR_DEFAULT. */
	const char *spill_dir;
	/* If set, kv_open uses this opened backend instead of opening one
	 * (tests inject a fake this way); kv_open owns it from then on, even
	 * when it fails. */
	struct kv_backend *backend_instance;
};

/* Attributes of a record as fs/ needs them. */
struct kv_attr {
	uint64_t id;
	uint64_t parent;	/* 0 for the root and for removed keys */
	uint32_t mode, uid, gid, nlink;
	uint64_t size;
	int64_t atime_ns, mtime_ns, ctime_ns, btime_ns;
};

/* Which fields of struct kv_setattr apply. */
enum {
	KV_SET_MODE = 1 << 0,
	KV_SET_UID = 1 << 1,
	KV_SET_GID = 1 << 2,
	KV_SET_SIZE = 1 << 3,
	KV_SET_ATIME = 1 << 4,
	KV_SET_MTIME = 1 << 5,
	KV_SET_ATIME_NOW = 1 << 6,
	KV_SET_MTIME_NOW = 1 << 7,
	/* Drop set-user-ID, and set-group-ID where group execute is set, as a
	 * write by a caller without CAP_FSETID does; nothing changes (not
	 * even ctime) when neither is set. */
	KV_SET_KILL_SUIDGID = 1 << 8,
};

struct kv_setattr {
	unsigned mask;
	uint32_t mode;		/* permission bits only */
	uint32_t uid, gid;
	uint64_t size;
	int64_t atime_ns, mtime_ns;
};

struct kv_dirent {
	uint64_t id;
	uint32_t mode;
	char *name;		/* owned by the array */
};

/*
 * Called by the sweeper thread (never a caller of this API, never with a
 * store lock held) for each key or directory that expired, and by the sync
 * thread for each entry another mount changed (its old and its new place;
 * parent 0 for the root), so that the filesystem can drop kernel caches of
 * (parent, name) and of id (name "" asks for id only). Commits of
 * transactions and restores of backups report what they changed here too.
 */
typedef void (*kv_expire_fn)(void *arg, uint64_t parent, const char *name, uint64_t id);
/* Sets the expiry callback, or removes it (NULL): then returns only once a
 * call in progress has finished, so its argument may be freed after. */
void kv_set_expire_fn(struct kv_store *kv, kv_expire_fn fn, void *arg);
/* Expires everything past its deadline now (the ctl command "sweep"). */
int kv_sweep(struct kv_store *kv);

struct kv_stats {
	uint64_t keys, dirs;
	uint64_t buffer_keys, buffer_bytes, dirty_bytes;
	uint64_t flushes, flush_failures, last_flush_ms;
	/* Age of the oldest change not yet durable (0 when none is owed): how
	 * far behind the flusher is, whatever the number of records. */
	uint64_t backlog_age_ms;
	uint64_t ttl_pending, ttl_expired;
	uint64_t tags;			/* tags in use or declared */
	uint64_t tag_entries;		/* (tag, key) memberships */
	uint64_t query_hits, query_misses, query_cached;
	/* Misses evaluated by the backend (Redis set operations), and those
	 * that fell back to the local index because the backend failed. */
	uint64_t query_backend, query_backend_fallbacks;
	uint64_t tx_active, tx_committed, tx_aborted, tx_conflicted;
	uint64_t tx_staged_bytes;	/* held by the open transactions together */
	const char *backend;		/* its name: "fs", "redis" */
	int backend_error;		/* of the last flush: 0, or a negative errno */
	/* The backup command running, if any, and how far it is (keys and
	 * bytes; the totals may grow while a chain is being read). */
	const char *backup_op;		/* "create", "verify", "restore" or NULL */
	uint64_t backup_keys, backup_keys_total, backup_bytes, backup_bytes_total;
	/* Connection health (backend health op); a backend without one is
	 * "connected" while its flushes succeed, never reconnects. */
	bool backend_connected;
	uint64_t backend_reconnects;
	int64_t backend_rtt_ms;		/* -1: not measured */
	uint64_t spilled;		/* records replayed from a spill file at open */
};

/*
 * Opens the backend (for fs: takes its lock, waiting up to lock_timeout_ms),
 * loads every record and makes the root if the store is new. Starts no
 * thread, so the caller may fork afterwards. err gets a one-line message.
 */
int kv_open(const struct kv_options *o, struct kv_store **out, char *err, size_t errlen);
/* Starts the flusher and sweeper threads. */
int kv_start(struct kv_store *kv);
/*
 * Applies new values of the settings that may change while mounted:
 * buffer_size, flush_interval_ms, backend_timeout_ms, max_value_size,
 * default_ttl_s, ttl_sweep_ms, query_cache_size, tx_max_bytes (the rest of o is
 * ignored). The threads see them at once.
 */
void kv_reconfigure(struct kv_store *kv, const struct kv_options *o);
/*
 * Flushes everything, stops the threads, closes the backend and frees kv.
 * Returns the final flush's result: non-zero means buffered data could not
 * be made durable. NULL is fine.
 */
int kv_close(struct kv_store *kv);

/* Validates a name component: -EINVAL (empty, '/', ".", ".."), -ENAMETOOLONG. */
int kv_check_name(const char *name);

int kv_lookup(struct kv_store *kv, uint64_t parent, const char *name, struct kv_attr *out);
int kv_getattr(struct kv_store *kv, uint64_t id, struct kv_attr *out);
int kv_setattr(struct kv_store *kv, uint64_t id, const struct kv_setattr *sa, struct kv_attr *out);
/* KV_SET_KILL_SUIDGID for a write: costs a lookup only when no such bit is
 * set (nothing is staged in a transaction then). *killed: bits were cleared. */
int kv_kill_suidgid(struct kv_store *kv, uint64_t id, bool *killed);

/* mode: permission bits. -EEXIST, -ENOENT (parent), -ENOTDIR, -ENAMETOOLONG
 * (component > 255 or whole key > 1024 bytes), -EINVAL. */
int kv_mkdir(struct kv_store *kv, uint64_t parent, const char *name, uint32_t mode, uint32_t uid,
	     uint32_t gid, struct kv_attr *out);
/* Creates an empty key; with excl false an existing key is returned as is
 * (-EISDIR if it is a directory). */
int kv_create(struct kv_store *kv, uint64_t parent, const char *name, uint32_t mode, uint32_t uid,
	      uint32_t gid, bool excl, struct kv_attr *out);
int kv_unlink(struct kv_store *kv, uint64_t parent, const char *name);
int kv_rmdir(struct kv_store *kv, uint64_t parent, const char *name);
/* flags: 0 or RENAME_NOREPLACE (RENAME_EXCHANGE: -EINVAL). A directory moves
 * with everything below it in one step. -EINVAL moving a directory into
 * itself, -ENOTEMPTY/-EISDIR/-ENOTDIR as rename(2). */
int kv_rename(struct kv_store *kv, uint64_t parent, const char *name, uint64_t newparent,
	      const char *newname, unsigned flags);

/*
 * Open files. kv_open_file counts a handle on a key (so an unlinked key stays
 * readable and writable through it until the last kv_release_file); trunc
 * empties the value.
 */
int kv_open_file(struct kv_store *kv, uint64_t id, bool trunc);
void kv_release_file(struct kv_store *kv, uint64_t id);

/*
 * The kernel's page cache of a value (kv_cache.c). kv_cache_begin says
 * whether a cache period runs, i.e. whether the kernel's pages of id are
 * current (1) or not (0, with a token), or -ENOENT; a change of the value
 * ends the period and queues the key's invalidation (kv_set_expire_fn).
 * kv_cache_copy copies a value still in memory (-EAGAIN if not, -EFBIG
 * past cap) with a token. Once the pages are dropped, or hold that copy,
 * kv_cache_confirm starts a period if nothing changed since the token was
 * taken (-ESTALE otherwise).
 */
int kv_cache_begin(struct kv_store *kv, uint64_t id, uint64_t *token);
/* Waits (without kv->lock) up to timeout_ms until the sweeper has sent
 * every invalidation queued so far: 0 or -ETIMEDOUT. */
int kv_wait_invals(struct kv_store *kv, int timeout_ms);
ssize_t kv_cache_copy(struct kv_store *kv, uint64_t id, void *buf, size_t cap, uint64_t *token);
int kv_cache_confirm(struct kv_store *kv, uint64_t id, uint64_t token);
ssize_t kv_read(struct kv_store *kv, uint64_t id, void *buf, size_t len, uint64_t off);
/* Waits while the buffer is full; -EFBIG past max_value_size. */
ssize_t kv_write(struct kv_store *kv, uint64_t id, const void *buf, size_t len, uint64_t off);
/* As kv_write, but -EWOULDBLOCK instead of waiting for buffer space: a
 * caller that must not block (a FUSE worker) hands the write to a thread of
 * its own and calls kv_write there. */
ssize_t kv_write_try(struct kv_store *kv, uint64_t id, const void *buf, size_t len, uint64_t off);

/* Durable on return: this key (and what it depends on, e.g. its parent). */
int kv_fsync(struct kv_store *kv, uint64_t id);
/* Durable on return: everything written before the call. */
int kv_flush(struct kv_store *kv);

/* A snapshot of a directory's entries; free with kv_dirents_free. */
int kv_readdir(struct kv_store *kv, uint64_t id, struct kv_dirent **out, size_t *n);
void kv_dirents_free(struct kv_dirent *ents, size_t n);

/*
 * Extended attributes. Custom "user.*" names (1..255 bytes; all of a record's
 * names and values at most 64 KiB: -ENOSPC) are stored with the record.
 * "user.nadb.created|updated|size|stored_size|compressed" are read-only
 * (-EPERM on change) and not listed, as is "user.nadb.expires" (the deadline,
 * -ENODATA without one). "user.ttl" (keys only, -ENOTSUP on directories):
 * seconds left, rounded up; set with a positive decimal integer of seconds
 * (-EINVAL otherwise, nothing changed); removed to make the key permanent.
 * "user.tags" and its alias "user.xdg.tags" (keys only): the key's tags,
 * sorted and comma-separated; set replaces them all ("" clears), -EINVAL for
 * a bad tag, -ENOSPC past 1024 tags; absent (-ENODATA) and not listed while
 * the key has none.
 * Other namespaces: -ENOTSUP. get/list: size 0 returns the length needed,
 * a smaller buffer -ERANGE; a missing name -ENODATA.
 */
enum { KV_XATTR_CREATE = 1, KV_XATTR_REPLACE = 2 };
int kv_setxattr(struct kv_store *kv, uint64_t id, const char *name, const void *value,
		size_t len, int flags);
ssize_t kv_getxattr(struct kv_store *kv, uint64_t id, const char *name, void *buf, size_t size);
ssize_t kv_listxattr(struct kv_store *kv, uint64_t id, char *buf, size_t size);
int kv_removexattr(struct kv_store *kv, uint64_t id, const char *name);

/*
 * Tags (spec section 4). A tag is 1..255 bytes of [A-Za-z0-9_.:@=-], not
 * starting with '-', and not "." or "..". Only keys carry tags.
 *
 * Directories under tags/ are named by an expression: a tag, or a query
 * "a+b" (AND), "a,b" (OR), "-a" (NOT one term), "a+b,c" = (a AND b) OR c;
 * every AND-term needs a positive tag. A malformed expression, a pure
 * negation and a lone unknown tag name nothing: -ENOENT. An unknown tag
 * inside a query is an empty set.
 *
 * An entry of such a directory is named by the key's path with '%' -> "%25"
 * and '/' -> "%2F"; past 255 bytes by its first 238 bytes, '~' and 16 hex
 * digits of XXH64 of the path.
 */
int kv_tag_check(const char *tag);
/* Does expr name a directory under tags/? 0, or -ENOENT. *is_query: not a
 * plain tag (its entries are read-only). */
int kv_tag_dir(struct kv_store *kv, const char *expr, bool *is_query);
/* Every tag in use or declared, as kv_dirents (id 0, mode S_IFDIR). */
int kv_tag_list(struct kv_store *kv, struct kv_dirent **out, size_t *n);
/* mkdir tags/T: -EEXIST, -EINVAL (bad name), -ENOSPC (too many declared). */
int kv_tag_mkdir(struct kv_store *kv, const char *tag);
/* rmdir tags/T: -ENOTEMPTY while keys carry it, -ENOENT. */
int kv_tag_rmdir(struct kv_store *kv, const char *tag);
/* The keys a directory lists: id = the key's id, mode S_IFLNK, name = the
 * entry name. -ENOENT as for kv_tag_dir. */
int kv_tag_readdir(struct kv_store *kv, const char *expr, struct kv_dirent **out, size_t *n);
/* The key entry names in directory expr, if it is listed there. */
int kv_tag_lookup(struct kv_store *kv, const char *expr, const char *entry, struct kv_attr *out);
/* ln -s / rm in tags/TAG/: tags or untags the key entry names (never its
 * data). -ENOENT if no such key (or, untagging, it does not carry tag). */
int kv_tag_link(struct kv_store *kv, const char *tag, const char *entry, struct kv_attr *out);
int kv_tag_unlink(struct kv_store *kv, const char *tag, const char *entry);
/* The key's path from the root ("a/b/c"), NUL-terminated; its length, or
 * -ENOENT (removed), -ERANGE (size too small). */
ssize_t kv_key_path(struct kv_store *kv, uint64_t id, char *buf, size_t size);

/*
 * Transactions (spec section 6a). A transaction is a view of the whole store
 * overlaid with its own staged changes, rooted at a directory whose id
 * kv_tx_begin/kv_tx_root return. The view's records have their own ids
 * (kv_is_tx_id), and every function of this API works on them: changes made
 * there are staged, invisible elsewhere, until kv_tx_commit applies all of
 * them at once (one flush batch: one backend write) or kv_tx_abort drops
 * them. Commit refuses, changing nothing, when a key or directory the
 * transaction changed was changed outside after the transaction first saw
 * it (optimistic concurrency on record versions): -ESTALE, with the key in
 * msg. Staged data is bounded by tx_max_bytes (-EFBIG). Directories that
 * exist outside the transaction cannot be renamed inside it (-EXDEV: mv
 * then copies), nor can a name change between file and directory (-EBUSY).
 * Names: 1..128 bytes of [A-Za-z0-9._-], not starting with '.' (-EINVAL).
 */
bool kv_is_tx_id(uint64_t id);
int kv_tx_begin(struct kv_store *kv, const char *name, struct kv_attr *root);
int kv_tx_root(struct kv_store *kv, const char *name, struct kv_attr *root);
/* Open transactions: id = the root's id, mode S_IFDIR, name. */
int kv_tx_list(struct kv_store *kv, struct kv_dirent **out, size_t *n);
int kv_tx_abort(struct kv_store *kv, const char *name);
/* As kv_tx_abort, but only the transaction that kv_tx_begin gave root id
 * root_id (root->id), never another of the same name begun since (-ENOENT),
 * and without waiting: one in use or being committed is dropped from view
 * at once (its name is free, nothing more is staged into it) and freed once
 * idle, by the sweeper (within ttl_sweep). -EINPROGRESS when a commit of it
 * is under way: that commit decides (if it succeeds, it stands; if not, the
 * transaction is freed as above). */
int kv_tx_abort_id(struct kv_store *kv, const char *name, uint64_t root_id);
/* Applies and waits until durable: 0; -ESTALE (conflict), -ENAMETOOLONG,
 * -ENOENT, -EBUSY (in use), -EIO (applied but not yet durable); msg says
 * which and why. Every entry the commit changed has been reported to the
 * expiry callback (kv_set_expire_fn) by the time it returns, so that kernel
 * caches drop them. */
int kv_tx_commit(struct kv_store *kv, const char *name, char *msg, size_t msglen);

/*
 * Shared backends (close-to-open): brings the record id (if non-zero) and
 * the entry (parent, name) (if name is set) up to date with the backend now,
 * so that an open right after another mount's close sees its data. One or
 * two round trips, without the store lock; kernel caches are dropped by the
 * sync thread as usual. 0 (also for a backend that is not shared), or a
 * negative errno (the caller may go on with what it has).
 */
int kv_refresh(struct kv_store *kv, uint64_t parent, const char *name, uint64_t id);

int kv_statfs(struct kv_store *kv, struct kv_backend_statfs *space, uint64_t *keys);
void kv_get_stats(struct kv_store *kv, struct kv_stats *out);

/*
 * A function the store calls on the calling thread right before it may block
 * for long (a backend read, waiting for the flusher), so that an event loop
 * can let another thread take over meanwhile. Process-wide; NULL: none.
 */
void kv_set_block_hook(void (*fn)(void));

#endif
