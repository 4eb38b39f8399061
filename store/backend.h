/*
 * The backend interface: where records and values are made durable. The store
 * talks to every backend through this vtable and never branches on which one
 * runs; what differs is declared in struct kv_backend_caps.
 *
 * Records are stored by permanent id (never reused): a record is a key or a
 * directory; (parent id, name) places it in the tree. Values are stored under
 * (id, value version), never under the key's text, so no key can name a path
 * outside the backend's own storage.
 *
 * Threads: commit() is called by one thread at a time (the flusher); pread(),
 * read_value() and statfs() may run concurrently with it and with each other.
 * Return convention: 0 (or a byte count) on success, a negative errno.
 */
#ifndef NADB_STORE_BACKEND_H
#define NADB_STORE_BACKEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "store/value.h"

#define KV_ROOT_ID 1u
#define KV_NAME_MAX 255u
#define KV_KEY_MAX 1024u
#define KV_XATTRS_MAX (64u * 1024u)

enum kv_encoding { KV_ENC_NONE = 0, KV_ENC_ZSTD = 1 };

/* One record: what the backend keeps about a key or a directory. The store
 * embeds one per key in memory: the 8-byte fields come first and the small
 * ones last, so that no padding is wasted (128 bytes). */
struct kv_meta {
	uint64_t id;		/* permanent; KV_ROOT_ID for the root */
	uint64_t parent;	/* 0 for the root */
	char *name;		/* owned; 1..255 bytes, no '/' or NUL; "" for the root */
	int64_t atime_ns, mtime_ns, ctime_ns, btime_ns; /* since the epoch */
	int64_t expires_ms;	/* absolute unix time in ms; 0 = never */
	uint64_t size;		/* logical size of the value */
	/* Where the value is stored; written by commit() for a PUT with a value. */
	uint64_t vver;		/* 0 = nothing stored (an empty value) */
	uint64_t stored_size;	/* bytes in the backend (after compression) */
	char **tags;		/* owned; sorted, unique */
	void *xattrs;		/* owned; custom user.* xattrs in the store's encoding */
	uint32_t mode;		/* S_IFREG or S_IFDIR | permission bits */
	uint32_t uid, gid;
	uint32_t ntags;
	uint32_t xattrs_len;	/* <= KV_XATTRS_MAX */
	uint8_t encoding;	/* enum kv_encoding */
};

/* Frees the owned fields and zeroes them; the struct itself is the caller's. */
void kv_meta_clear(struct kv_meta *m);
/* Deep copy into dst (which is overwritten, not freed). 0 or -ENOMEM. */
int kv_meta_copy(struct kv_meta *dst, const struct kv_meta *src);

/*
 * Binary encoding of a record, shared by the backends (journal records,
 * snapshots, Redis hashes). Little-endian, versioned, self-delimiting.
 * kv_meta_encode appends to *buf (realloc'ed; *len and *cap updated).
 * kv_meta_decode reads one record from data[0..len): -EINVAL when malformed
 * (bounds, name rules, sizes), never reads past len; *used = bytes consumed.
 */
int kv_meta_encode(const struct kv_meta *m, uint8_t **buf, size_t *len, size_t *cap);
int kv_meta_decode(const uint8_t *data, size_t len, struct kv_meta *m, size_t *used);

/* The tag rules (spec section 4) on tag[0..len): 1..255 bytes of
 * [A-Za-z0-9_.:@=-], no leading '-', not "." or "..". */
bool kv_tag_name_ok(const char *tag, size_t len);

enum kv_op_type { KV_OP_PUT = 1, KV_OP_DEL = 2 };


struct kv_op {
	enum kv_op_type type;
	/* PUT: the whole new record. DEL: only meta.id matters. */
	struct kv_meta meta;
	/* PUT: new content to store (commit sets meta.vver, stored_size,
	 * encoding), or NULL to keep the value meta.vver already names. */
	const struct kv_value *value;
	/* The stored value version this op makes obsolete (0 = none); the backend
	 * may reclaim it once the commit is durable. */
	uint64_t old_vver;
	/* PUT: no commit ever carried this id before (not even one that failed
	 * or timed out) and no name was claimed for it (claim_name), so the
	 * backend cannot have a record or a claim for it and may skip looking
	 * for one. false is always safe. */
	bool never_sent;
	/* PUT: a commit carried this id but none has succeeded yet, so it may
	 * have landed in part (a timed-out command the server ran later): a
	 * backend that writes some of a record outside its atomic step must not
	 * take what it finds as complete. false for a record once committed. */
	bool uncertain;
	/* PUT of the root, whose tag list is the declared tags (mkdir tags/X):
	 * that list as this mount last committed or fetched it (has_base), so
	 * that a backend several mounts share applies this mount's adds and
	 * removes to what the others declared instead of replacing the list.
	 * Without a base (a spilled batch replayed) the list replaces. */
	bool has_base;
	uint32_t nbase_tags;
	char **base_tags;	/* owned; sorted, unique */
	/* PUT, on a backend several mounts share: rather than take its name
	 * from another mount's record, the op gives way (is left out whole
	 * and yielded set) to a directory with entries, as rename(2) over one
	 * fails, and, when another mount removed this record, to any live
	 * record: the name was given up, and whoever took it since is newer.
	 * false: the name is taken (a spilled batch replayed before the
	 * load, which moves a directory losing its entry to lost+found). */
	bool may_yield;
	/* PUT: this mount holds the record as committed (it read it from
	 * the backend, or a commit of it succeeded), so a backend several
	 * mounts share that finds no record can tell that another mount
	 * removed it. false is always safe. */
	bool was_committed;
	/* Set by commit (which otherwise succeeds): the op gave way to the
	 * holder of its name and left nothing in the backend; the store moves
	 * the record elsewhere and commits it again. */
	bool yielded;
};

struct kv_backend_caps {
	bool native_ttl;	/* the backend expires records by itself */
	bool shared;		/* other mounts may change the same store */
	/* Reads are local file reads (microseconds): the store makes small
	 * ones inline, without telling its block hook (kv_set_block_hook). */
	bool local_reads;
};

struct kv_backend_statfs {
	uint64_t bsize, blocks, bfree, bavail; /* space where values live */
};

/* How a networked backend's connection is doing (stats, metrics). */
struct kv_backend_health {
	bool connected;		/* the last request got an answer */
	uint64_t reconnects;	/* connections made after the first one */
	int64_t rtt_ms;		/* round trip of the last timed request; -1: none yet */
};

struct kv_backend;

/*
 * A tag query as the store parses it (tag_query.c), in disjunctive normal
 * form: the OR of terms f[term_end[t-1] .. term_end[t]) (term 0 starts at
 * 0), each the AND of its factors, a factor being a tag or, with neg, its
 * complement. Every term has at least one positive factor, so no term is
 * "all records". Tags follow kv_tag_name_ok.
 */
struct kv_query_factor {
	const char *tag;
	bool neg;
};

struct kv_query_expr {
	const struct kv_query_factor *f;
	size_t nf;
	const size_t *term_end;
	size_t nterms;
};

/* The current state of a record another mount may have changed. */
struct kv_change {
	uint64_t id;
	bool gone;		/* no record any more (deleted, expired) */
	struct kv_meta meta;	/* unless gone; owned */
};

/*
 * What a transaction expects of the backend when it commits (spec 6a): a
 * record as this mount last committed or loaded it, or a name it creates
 * still free.
 */
struct kv_expect {
	uint64_t id;		/* the record; 0: a name */
	const uint8_t *rec;	/* with id: its encoding (kv_meta_encode) */
	size_t reclen;
	uint64_t parent;	/* without id: (parent, name) is free, parent alive */
	const char *name;
};

/* Called once per live record by load(); a non-zero return stops the load. */
typedef int (*kv_load_fn)(const struct kv_meta *m, void *arg);

struct kv_backend_ops {
	const char *name;
	struct kv_backend_caps caps;
	/* Stops everything and frees b. NULL-safe at the call site (kv_backend_close). */
	void (*close)(struct kv_backend *b);
	/* Every live record, parents not necessarily before children; *max_id is
	 * the highest id ever committed (deleted ones included), so ids are never
	 * reused. */
	int (*load)(struct kv_backend *b, kv_load_fn fn, void *arg, uint64_t *max_id);
	/* Applies ops atomically (all or nothing, also across a crash) and
	 * durably: on return 0 every op survives power loss. Each id appears at
	 * most once in ops. On error nothing was applied; -EAGAIN (another
	 * mount's transaction holds a record or name, see reserve) also says
	 * that nothing of the batch stayed in the backend, as if never sent.
	 * Ops that set yielded on success are the exception to all of ops. */
	int (*commit)(struct kv_backend *b, struct kv_op *ops, size_t n);
	/* Reads stored bytes of the value m names (m->vver, encoding, size).
	 * -ESTALE when that version no longer exists (superseded): the caller
	 * re-reads its metadata and tries again. */
	ssize_t (*pread)(struct kv_backend *b, const struct kv_meta *m, void *buf, size_t len,
			 uint64_t off);
	/* The whole value m names, decoded. -ESTALE as for pread. */
	int (*read_value)(struct kv_backend *b, const struct kv_meta *m, struct kv_value **out);
	int (*statfs)(struct kv_backend *b, struct kv_backend_statfs *out);
	/* Optional: the store's threads start, in the process that will serve
	 * (after the daemon forked): e.g. record the owner's pid. */
	void (*started)(struct kv_backend *b);
	/*
	 * Optional: deletes stored value versions refs[i] = {id, vver} that no
	 * record names any more (commits made while a backup was reading them
	 * passed old_vver = 0 instead). Called by the flusher's thread, never
	 * concurrently with commit(). A version already gone is not an error.
	 * NULL: the store keeps the list (an open-time sweep may reclaim them).
	 */
	int (*reclaim)(struct kv_backend *b, const uint64_t (*refs)[2], size_t n);
	/* Optional: connection health; must not wait for the network. */
	void (*health)(struct kv_backend *b, struct kv_backend_health *out);

	/*
	 * Shared backends (caps.shared) only; called by the store's sync
	 * thread, one call at a time, concurrently with everything else.
	 *
	 * changes: waits up to wait_ms for commits made by other mounts since
	 * the last call (the first call: since load() began) and returns the
	 * ids they touched (*ids malloc'd, possibly with repeats; *n = 0 on a
	 * timeout). -ESTALE: some changes may have been missed (the change log
	 * was trimmed past us, or the connection was lost): the caller must
	 * reload every record. -EIO: the backend cannot be reached now.
	 */
	int (*changes)(struct kv_backend *b, int64_t wait_ms, uint64_t **ids, size_t *n);
	/* The current records of ids[0..n) into out[0..n) (free with
	 * kv_changes_clear), gone when none. */
	int (*fetch)(struct kv_backend *b, const uint64_t *ids, size_t n, struct kv_change *out);
	/* Reserves count record ids no other mount will use:
	 * [*first, *first + count). */
	int (*reserve_ids)(struct kv_backend *b, uint64_t count, uint64_t *first);
	/*
	 * Claims the name (parent, name) for the new record id across mounts,
	 * before that record is committed: 0, or -EEXIST when a record (or
	 * another mount's fresh claim) holds the name. A commit of the record
	 * makes the claim an ordinary entry; a DEL of id releases it.
	 */
	int (*claim_name)(struct kv_backend *b, uint64_t parent, const char *name, uint64_t id);
	/* The id the committed entry (parent, name) names: 0 or -ENOENT. */
	int (*lookup_name)(struct kv_backend *b, uint64_t parent, const char *name, uint64_t *id);
	/*
	 * Removes from every index (directory, tags, ids) up to limit records
	 * whose deadline is at or before now_ms, which a backend with native
	 * expiry (caps.native_ttl) drops by themselves but not from its
	 * indexes; every mount hears of them through changes(). *n: how many.
	 */
	int (*sweep)(struct kv_backend *b, int64_t now_ms, size_t limit, size_t *n);

	/*
	 * Optional: the ids of the committed records matching e, evaluated by
	 * the backend on its own tag index (*ids malloc'd, in any order,
	 * possibly with repeats; *n may be 0). It knows nothing of the
	 * store's unflushed changes: the store corrects the result with them
	 * (tag_query.c). May run on any thread, concurrently with everything
	 * else. NULL: the store evaluates queries on its own index.
	 */
	int (*query)(struct kv_backend *b, const struct kv_query_expr *e, uint64_t **ids,
		     size_t *n);

	/*
	 * Optional, for a transaction about to be applied by this mount:
	 * checks every e[i] (the record is still as rec says, its atime
	 * aside; the name is still free and its parent alive) and, only if
	 * all hold, reserves them (and the parents of the names) for this
	 * mount's commit owner until release() or ttl_ms: meanwhile another
	 * mount's commit that writes a reserved record or name fails with
	 * -EAGAIN (its flusher retries), and its claim of a reserved name
	 * with -EEXIST. -ESTALE with *bad = i when e[i] does not hold, or is
	 * reserved by another mount or another owner of this one: nothing
	 * reserved. Checked and reserved in one atomic step. owner tells
	 * this mount's concurrent commits apart.
	 */
	int (*reserve)(struct kv_backend *b, const struct kv_expect *e, size_t n, uint64_t owner,
		       int64_t ttl_ms, size_t *bad);
	/* Drops what owner reserved of e[0..n). */
	int (*release)(struct kv_backend *b, const struct kv_expect *e, size_t n, uint64_t owner);
};

/* Frees what fetch() put in c[0..n). */
void kv_changes_clear(struct kv_change *c, size_t n);

/* Every backend's handle starts with this. */
struct kv_backend {
	const struct kv_backend_ops *ops;
};

struct kv_backend_params {
	const char *data_dir;		/* fs: the data directory (created if missing) */
	const char *db;			/* store identity, with ns */
	const char *ns;
	enum kv_encoding compression;
	uint64_t compression_min_size;	/* values smaller than this are stored as is */
	uint64_t lock_timeout_ms;	/* fs: how long to wait for another daemon's lock */
	/* redis: the server (socket wins over host/port when set). */
	const char *redis_host;		/* NULL: 127.0.0.1 */
	unsigned redis_port;		/* 0: 6379 */
	const char *redis_socket;	/* unix socket path, or NULL */
	const char *redis_password;	/* NULL: no AUTH; never logged */
	unsigned redis_database;	/* SELECT */
	uint64_t redis_timeout_ms;	/* connect and command timeout; 0: 2 s */
	unsigned redis_pool_size;	/* connections; 0: 4 */
	const char *redis_key_prefix;	/* NULL: "nadb" */
};

/*
 * The filesystem backend (store/backend_fs.c). On failure err holds a
 * one-line message ("data directory /x is in use by nadbfs (pid 12); gave up
 * after 30 s").
 */
int kv_fs_open(const struct kv_backend_params *p, struct kv_backend **out, char *err,
	       size_t errlen);

/*
 * The Redis backend (store/backend_redis.c), the same records by id in one
 * Redis hash-tag. On failure err holds a one-line message ("cannot connect
 * to redis 127.0.0.1:6399: connection refused", "redis rejected the
 * password"). The password is never logged nor put in err.
 */
int kv_redis_open(const struct kv_backend_params *p, struct kv_backend **out, char *err,
		  size_t errlen);

static inline void kv_backend_close(struct kv_backend *b)
{
	if (b)
		b->ops->close(b);
}

#endif
