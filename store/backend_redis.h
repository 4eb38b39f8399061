/*
 * The Redis backend's private interface, shared by its files:
 * backend_redis.c (open, load, reads, statfs), backend_redis_commit.c (the
 * commit), backend_redis_script.c (its Lua script), backend_redis_stage.c
 * (what a commit writes ahead of its script), backend_redis_tx.c
 * (transactions' reservations), backend_redis_conn.c (the connection pool
 * and error translation), backend_redis_sync.c (change log, id blocks, name claims,
 * expiry sweep: several mounts), backend_redis_query.c (tag queries by set
 * operations), backend_redis_decl.c (declared tags) and backend_redis_value.c
 * (value encoding), backend_redis_format.c (the layout's version).
 * These are the only files that include hiredis.
 *
 * Layout of one store: every key starts with the hash tag
 * T = "{PREFIX:DB:NS}" (each part percent-encoded: bytes outside
 * [A-Za-z0-9_-] become %XX, so ':', '{', '}' and '%' never appear raw and
 * ("a:b", "c") cannot collide with ("a", "b:c")), so that a whole store
 * lives in one Redis Cluster slot. Ids and value versions are decimal.
 *
 *	T:fmt			the layout's version, "2" (backend_redis_format.c)
 *	T:r:<id>		string, the record (kv_meta_encode), which says
 *				what it is indexed under (the scripts decode
 *				it: KV_REDIS_LUA_DROP); PEXPIREAT at the
 *				record's deadline
 *	T:i:<id>		hash, the record's index, only for a record
 *				with a deadline: p = parent, n = name, t = tags
 *				(NUL-joined), v = value version; kept without
 *				expiry, so that a record Redis expired on its
 *				own can still be unindexed
 *	T:v:<id>:<vver>		string, the stored value bytes; same deadline
 *	T:ids			set of live ids (SSCAN at load)
 *	T:maxid			highest id ever committed
 *	T:vver			counter of value versions (INCRBY per commit)
 *	T:d:<parent id>		hash, name -> id (directory entries)
 *	T:t:<tag>		set of ids carrying the tag
 *	T:exp			sorted set, id scored by its deadline (ms)
 *	T:tmp:<vver>		a large value being uploaded in pieces; renamed
 *				to T:v:... by the commit script, expires after an
 *				hour if the commit never happens
 *	T:qtmp:<n>		a query's AND-term, made and deleted inside the
 *				query script (backend_redis_query.c)
 *	T:c:<id>		"parent/name": a name claimed for a record not
 *				committed yet (O_EXCL create, mkdir); expires
 *	T:log			stream: one entry per commit, fields seq, by
 *				(the mount's id), ids (space-separated)
 *	T:logseq		counter of T:log entries, to notice a gap
 *	T:decl			set of the declared tags, and "" (see
 *				backend_redis_decl.c)
 *	T:up, T:up:<marker>	what commits wrote ahead of their script and
 *				have not settled yet (backend_redis_stage.c)
 *
 * Threads: commit() runs on one thread at a time; load(), pread(),
 * read_value() and statfs() may run concurrently with it. Each takes its own
 * pooled connection for the duration of the call, so hiredis contexts are
 * never shared between threads.
 */
#ifndef NADB_STORE_BACKEND_REDIS_H
#define NADB_STORE_BACKEND_REDIS_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include <hiredis/hiredis.h>

#include "store/backend.h"

struct ZSTD_CCtx_s;

/* One pooled connection: used by one thread between get and put. */
struct kv_redis_conn {
	redisContext *c;	/* NULL: not connected (connects on next get) */
	bool busy;		/* pool lock */
};

struct kv_redis {
	struct kv_backend base;
	/* Fixed after open. */
	char *host, *socket, *password; /* password: never logged */
	unsigned port, database;
	uint64_t timeout_ms;
	char *where;		/* "127.0.0.1:6379" or "unix:/path", for messages */
	char *tag;		/* "{PREFIX:DB:NS}:", the prefix of every key */
	size_t taglen;
	enum kv_encoding compression;
	uint64_t compression_min_size;

	/* The pool. lock protects every conn's busy flag and the fields below;
	 * a conn's c belongs to the thread that marked it busy. */
	pthread_mutex_t lock;
	pthread_cond_t freed;
	struct kv_redis_conn *conns;
	unsigned nconns;
	int64_t last_err_log_ms;	/* lock: rate limit of error lines */
	unsigned long errors_quiet;	/* lock: errors not logged since */
	bool down;			/* lock: the last attempt failed */
	uint64_t reconnects;		/* lock: connections made after the first */
	bool connected_once;		/* lock */
	/* lock: after a failed connect, none is tried before this (monotonic
	 * ms), so a down server costs callers no connect timeout each. */
	int64_t next_connect_ms;
	int64_t backoff_ms;		/* lock: 0 while connects succeed */
	int64_t rtt_ms;			/* lock: last timed round trip; -1 none */

	char mount_id[17];	/* fixed after open: this mount in T:log */
	uint64_t stage_seq;	/* atomic: the last staging marker's number */

	/* The change log reader: owned by the thread calling changes() and
	 * load() (one at a time: the opener, then the store's sync thread). */
	redisContext *log_c;	/* its own connection, not a pooled one */
	char log_pos[48];	/* last T:log entry id seen */
	uint64_t log_seq;	/* its seq */
	bool log_lost;		/* entries may have been missed: next changes() says so */
	/* Keyspace notifications of expired keys, where the server has them
	 * on: a subscribed connection, polled by changes() (same owner). */
	redisContext *notify_c;
	int64_t notify_check_ms; /* next look at notify-keyspace-events */

	/* Owned by the committing thread. */
	char script_sha[41];
	struct ZSTD_CCtx_s *cctx;
	uint8_t *zbuf;		/* compression's scratch output, zbuf_cap bytes */
	size_t zbuf_cap;
};

/* backend_redis_conn.c */
/*
 * Connects, authenticates and selects the database. 0, or a negative errno
 * with a one-line message in err (no password in it).
 */
int kv_redis_connect(struct kv_redis *r, redisContext **out, char *err, size_t errlen);
/* Takes a connection (connecting if needed; waits while all are busy). 0 or
 * -EIO (logged). */
int kv_redis_get(struct kv_redis *r, struct kv_redis_conn **out);
/* Gives it back; failed: the context is broken or in an unknown state, so it
 * is freed and the next user reconnects. */
void kv_redis_put(struct kv_redis *r, struct kv_redis_conn *conn, bool failed);
int kv_redis_pool_init(struct kv_redis *r, unsigned size);
void kv_redis_pool_destroy(struct kv_redis *r);
/*
 * Error translation, at the call site: what went wrong with c (or with
 * reply, when it is an error reply), as a negative errno, logged with detail
 * (rate-limited). what names the operation ("commit", "load").
 */
int kv_redis_error(struct kv_redis *r, redisContext *c, const redisReply *reply,
		   const char *what);
/* Marks the server as answering again after errors (logs the recovery). */
void kv_redis_ok(struct kv_redis *r);
/* Records the round trip of a request that just answered (stats). */
void kv_redis_rtt(struct kv_redis *r, int64_t ms);
/* The backend's health op. */
void kv_redis_health(struct kv_backend *b, struct kv_backend_health *out);
int64_t kv_redis_mono_ms(void);

/*
 * A pipeline on one connection (backend_redis_pipe.c): commands appended
 * go out in non-blocking pieces while more are built; their replies are
 * read by kv_redis_pipe_drain. Before any other hiredis call on c,
 * kv_redis_pipe_drain (a call that reads a reply would otherwise take one
 * the pipeline is owed); only redisGetReply of the pipeline's own replies,
 * in order, may follow kv_redis_pipe_flush instead. When done with c,
 * kv_redis_pipe_done.
 */
struct kv_redis_pipe {
	struct kv_redis *r;
	redisContext *c;
	const char *what;	/* names the operation in errors */
	size_t pending;		/* replies owed */
	size_t sent;		/* head of c->obuf already written */
	size_t tried;		/* c->obuf's length at the last send */
};
void kv_redis_pipe_init(struct kv_redis_pipe *p, struct kv_redis *r, redisContext *c,
			const char *what);
/* 0 or a negative errno (logged): the command could not be queued or
 * the connection failed. */
int kv_redis_pipe_append(struct kv_redis_pipe *p, int argc, const char **argv,
			 const size_t *lens);
/* Sends everything queued, waiting as needed (the buffer keeps its
 * memory, where hiredis's own write would free it). 0 or an error. */
int kv_redis_pipe_flush(struct kv_redis_pipe *p);
/* Reads every pending reply: 0, or the first error (the rest drained). */
int kv_redis_pipe_drain(struct kv_redis_pipe *p);
void kv_redis_pipe_sync(struct kv_redis_pipe *p);
void kv_redis_pipe_done(struct kv_redis_pipe *p);

/* backend_redis_format.c: checks the store's layout version at open and
 * converts an older layout. 0, or a negative errno with the reason in err. */
int kv_redis_format(struct kv_redis *r, redisContext *c, char *err, size_t errlen);
/* Converts records ids[0..n) that are hashes (an older nadbfs still
 * running wrote them) to strings: 0 or a negative errno. */
int kv_redis_convert_ids(struct kv_redis *r, redisContext *c, const uint64_t *ids, size_t n);
/* A reply that says the key holds a hash (or another type) where a string
 * was read. */
#define KV_REDIS_WRONGTYPE(rep) \
	((rep)->type == REDIS_REPLY_ERROR && !strncmp((rep)->str, "WRONGTYPE", 9))

/* Builds "T:<fmt>" into a malloc'd string; NULL on ENOMEM. */
char *kv_redis_key(const struct kv_redis *r, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/*
 * Lua, with P the key prefix in scope: record(x), the record of id x or
 * false; a hash that an older nadbfs wrote (backend_redis_format.c) is
 * read as it kept it, in field m.
 */
#define KV_REDIS_LUA_RECORD \
	"local function record(x)\n" \
	"  local k = P..'r:'..x\n" \
	"  local m = redis.pcall('GET', k)\n" \
	"  if type(m) == 'table' and m.err then m = redis.call('HGET', k, 'm') end\n" \
	"  return m\n" \
	"end\n"

/*
 * Lua shared by the commit and sweep scripts, with P the key prefix in
 * scope: split(s) (NUL-separated), unclaim(id[, claim already read, false
 * when none]), unindex(id, old), index(x) (p, n, t, v: parent, name, tags
 * NUL-joined and value version, decoded from the record T:r:<x>, or read
 * from its copy T:i:<x> when Redis expired the record), record_tags(m)
 * (a record's tags, a list), indexed(x),
 * drop(x) (removes record x from every index, appends x to touched), and
 * announce(by) (one T:log entry with the touched ids).
 *
 * record_index reads record v1 (store/record.c) at fixed 1-based offsets:
 * version byte 1, parent u64 LE at 10-17, vver at 78-85, the name's length
 * at 95 and its bytes from 96, then a u16 tag count and the tags (u8 length
 * + bytes); 101 bytes at least (empty name, no tags, no xattrs). u64()
 * turns 8 bytes into decimal exactly, in base-10^7 limbs: a Lua number
 * holds integers exactly only up to 2^53. The root's tags are the declared
 * ones, in no tag set: its index has none (the commit passes it none).
 */
#define KV_REDIS_LUA_DROP \
	KV_REDIS_LUA_RECORD \
	"local function split(s)\n" \
	"  local t = {}\n" \
	"  for x in string.gmatch(s, '[^%z]+') do t[#t+1] = x end\n" \
	"  return t\n" \
	"end\n" \
	"local touched = {}\n" \
	"local function unclaim(id, c)\n" \
	"  if c == nil then c = redis.call('GET', P..'c:'..id) end\n" \
	"  if not c then return end\n" \
	"  local cp, cn = string.match(c, '^(%d+)/(.*)$')\n" \
	"  if cp and redis.call('HGET', P..'d:'..cp, cn) == id then\n" \
	"    redis.call('HDEL', P..'d:'..cp, cn)\n" \
	"  end\n" \
	"  redis.call('DEL', P..'c:'..id)\n" \
	"end\n" \
	"local function unindex(id, old)\n" \
	"  if not old[1] then return end\n" \
	"  local dk = P..'d:'..old[1]\n" \
	"  if redis.call('HGET', dk, old[2]) == id then redis.call('HDEL', dk, old[2]) end\n" \
	"  for _, tg in ipairs(split(old[3] or '')) do redis.call('SREM', P..'t:'..tg, id) end\n" \
	"end\n" \
	"local function u64(s, i)\n" \
	"  local d1, d2, d3 = 0, 0, 0\n" \
	"  for k = i + 7, i, -1 do\n" \
	"    local v = d1 * 256 + string.byte(s, k)\n" \
	"    d1 = v % 10000000\n" \
	"    v = d2 * 256 + (v - d1) / 10000000\n" \
	"    d2 = v % 10000000\n" \
	"    d3 = d3 * 256 + (v - d2) / 10000000\n" \
	"  end\n" \
	"  if d3 > 0 then return string.format('%d%07d%07d', d3, d2, d1) end\n" \
	"  if d2 > 0 then return string.format('%d%07d', d2, d1) end\n" \
	"  return string.format('%d', d1)\n" \
	"end\n" \
	"local function record_tags(m)\n" \
	"  local nl = string.byte(m, 95)\n" \
	"  local t, at = {}, 98 + nl\n" \
	"  for j = 1, string.byte(m, 96 + nl) + 256 * string.byte(m, 97 + nl) do\n" \
	"    local tl = string.byte(m, at)\n" \
	"    t[j] = string.sub(m, at + 1, at + tl)\n" \
	"    at = at + 1 + tl\n" \
	"  end\n" \
	"  return t\n" \
	"end\n" \
	"local function record_index(x, m)\n" \
	"  if #m < 101 or string.byte(m, 1) ~= 1 then return {} end\n" \
	"  local nl = string.byte(m, 95)\n" \
	"  local tags = x == '1' and '' or table.concat(record_tags(m), '\\0')\n" \
	"  return {u64(m, 10), string.sub(m, 96, 95 + nl), tags, u64(m, 78)}\n" \
	"end\n" \
	"local function index(x)\n" \
	"  local m = record(x)\n" \
	"  if m then return record_index(x, m) end\n" \
	"  return redis.call('HMGET', P..'i:'..x, 'p', 'n', 't', 'v')\n" \
	"end\n" \
	"local function indexed(x)\n" \
	"  return redis.call('EXISTS', P..'r:'..x, P..'i:'..x) > 0\n" \
	"end\n" \
	"local function drop(x)\n" \
	"  local o = index(x)\n" \
	"  unindex(x, o)\n" \
	"  if o[4] and o[4] ~= '0' then redis.call('DEL', P..'v:'..x..':'..o[4]) end\n" \
	"  unclaim(x)\n" \
	"  redis.call('DEL', P..'r:'..x, P..'i:'..x)\n" \
	"  redis.call('SREM', P..'ids', x)\n" \
	"  redis.call('ZREM', P..'exp', x)\n" \
	"  touched[#touched+1] = x\n" \
	"end\n" \
	"local function announce(by)\n" \
	"  if by == '' or #touched == 0 then return end\n" \
	"  local seq = redis.call('INCR', P..'logseq')\n" \
	"  redis.call('XADD', P..'log', 'MAXLEN', '~', '10000', '*', 'seq', seq, 'by', by,\n" \
	"             'ids', table.concat(touched, ' '))\n" \
	"end\n"

/* backend_redis_stage.c: a commit's staging marker */
#define KV_REDIS_MARKER_MAX 48
/*
 * Records, before a commit writes anything ahead of its script, the keys it
 * is about to write (keys: "<id>:<vver>" and "<id>" tokens, space-separated,
 * len bytes) under a new marker, copied to marker. 0 or an errno (logged).
 */
int kv_redis_stage(struct kv_redis *r, redisContext *c, const char *keys, size_t len,
		   char marker[KV_REDIS_MARKER_MAX]);
/* Removes what the commit of marker wrote, and the marker: for a commit
 * that fails before its script ran. 0 or an errno (logged). */
int kv_redis_unstage(struct kv_redis *r, redisContext *c, const char *marker);
/* Lua, with P in scope: unstage(marker) removes the keys a marker lists
 * (a record's hashes only while its id is in no commit: not in T:ids) and
 * the marker. The sweep does that for markers this old (ms). */
#define KV_REDIS_STAGE_STALE_MS "3600000"
#define KV_REDIS_LUA_UNSTAGE \
	"local function unstage(mk)\n" \
	"  local lk = P..'up:'..mk\n" \
	"  for t in string.gmatch(redis.call('GET', lk) or '', '%S+') do\n" \
	"    local id, v = string.match(t, '^(%d+):(%d+)$')\n" \
	"    if id then redis.call('DEL', P..'v:'..id..':'..v)\n" \
	"    elseif redis.call('SISMEMBER', P..'ids', t) == 0 then\n" \
	"      redis.call('DEL', P..'r:'..t, P..'i:'..t)\n" \
	"    end\n" \
	"  end\n" \
	"  redis.call('DEL', lk)\n" \
	"  redis.call('ZREM', P..'up', mk)\n" \
	"end\n"

/* backend_redis_decl.c: declared tags shared by mounts (T:decl) */
/*
 * The commit script's two declared-tag arguments for a batch: want = 'd'
 * (apply the differences from base) or 'r' (no base: replace) and the root
 * PUT's list, base = the list it started from; both NUL-joined, malloc'd.
 * Both NULL (empty arguments) when the batch changes no declared tag.
 * 0 or -ENOMEM.
 */
int kv_redis_decl_args(const struct kv_op *ops, size_t n, char **want, size_t *wantlen,
		       char **base, size_t *baselen);
/* Pipelines the read of T:decl after the root's record... */
int kv_redis_decl_append(struct kv_redis *r, redisContext *c);
/* ...and, with its reply, makes m (the root's record) carry the declared
 * tags as the set holds them. 0, -ENOMEM or an error reply's errno. */
int kv_redis_decl_apply(struct kv_redis *r, redisContext *c, const redisReply *rep,
			struct kv_meta *m);

/* backend_redis_script.c: the commit script's text (sent by its text:
 * Redis finds it compiled by its digest). */
extern const char kv_redis_script[];
/* backend_redis_commit.c */
int kv_redis_commit(struct kv_backend *b, struct kv_op *ops, size_t n);

/* backend_redis_sync.c: several mounts of one store */
/* Sets a fresh mount id. */
int kv_redis_sync_init(struct kv_redis *r);
void kv_redis_sync_close(struct kv_redis *r);
/* Called by load() on its connection before it reads any record: changes()
 * reports what is committed after this point. */
int kv_redis_log_mark(struct kv_redis *r, redisContext *c);
int kv_redis_changes(struct kv_backend *b, int64_t wait_ms, uint64_t **ids, size_t *n);
int kv_redis_fetch(struct kv_backend *b, const uint64_t *ids, size_t n, struct kv_change *out);
int kv_redis_reserve_ids(struct kv_backend *b, uint64_t count, uint64_t *first);
int kv_redis_claim_name(struct kv_backend *b, uint64_t parent, const char *name, uint64_t id);
int kv_redis_lookup_name(struct kv_backend *b, uint64_t parent, const char *name, uint64_t *id);
int kv_redis_sweep(struct kv_backend *b, int64_t now_ms, size_t limit, size_t *n);

/* backend_redis_tx.c: a transaction's check and reservation (spec 6a). */
int kv_redis_reserve(struct kv_backend *b, const struct kv_expect *e, size_t n, uint64_t owner,
		     int64_t ttl_ms, size_t *bad);
int kv_redis_release(struct kv_backend *b, const struct kv_expect *e, size_t n, uint64_t owner);
/* Lua: live(v, now) is the mount id of a T:txl value whose deadline is
 * after now, else nil. */
#define KV_REDIS_LUA_TXL \
	"local function live(v, now)\n" \
	"  local who, dl = string.match(v or '', '^([^: ]+):%S* (%d+)$')\n" \
	"  if who and tonumber(dl) > now then return who end\n" \
	"end\n" \
	"local function server_ms()\n" \
	"  local t = redis.call('TIME')\n" \
	"  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n" \
	"end\n"

/* backend_redis_query.c: tag listings and queries by set operations on
 * the T:t:<tag> sets (the backend's query op). */
int kv_redis_query(struct kv_backend *b, const struct kv_query_expr *e, uint64_t **ids, size_t *n);

/* backend_redis_value.c */
/* A value as it is sent: flat bytes (compressed or not). */
struct kv_redis_blob {
	const uint8_t *data;
	size_t len;
	uint8_t *buf;		/* data when owned; NULL when data is v's own chunk */
	uint8_t encoding;
};
/* Encodes v per the store's compression settings into b. A value held in
 * one chunk and sent as it is is not copied: b then points into v, which
 * must outlive it. kv_redis_blob_free releases what b owns. */
int kv_redis_encode_value(struct kv_redis *r, const struct kv_value *v, struct kv_redis_blob *b);
void kv_redis_blob_free(struct kv_redis_blob *b);
/* Decodes stored bytes per m (encoding, size) into a new value. -EIO when
 * they do not decode to exactly m->size bytes. */
int kv_redis_decode_value(const struct kv_meta *m, const uint8_t *data, size_t len,
			  struct kv_value **out);

#endif
