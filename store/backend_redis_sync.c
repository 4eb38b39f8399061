/*
 * Several mounts of one store on one Redis (spec section 9): the change log
 * every commit appends to (T:log, written by the commit script), read back
 * by each mount's sync thread; record ids reserved in blocks so that mounts
 * never hand out the same id; names claimed before an O_EXCL create or a
 * mkdir is committed, so that exactly one mount wins.
 *
 * The log is a capped stream (about 10 000 entries). Each entry carries a
 * sequence number from T:logseq: a reader that sees a jump (it fell behind
 * the cap) or lost its connection cannot know what it missed, and says so
 * with -ESTALE; the store then reloads every record.
 *
 * Also here: the sweep of T:exp, which removes from every index the records
 * Redis expired by itself, run on schedule by the store and at once when a
 * keyspace notification says one of the store's records expired.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sys/random.h>
#include <time.h>

#include "store/backend_redis.h"
#include "util/log.h"

/* How long a claimed name waits for its record's commit before another
 * mount may take it over: far beyond any flush, short enough that a mount
 * that died after claiming does not block the name for long. */
#define CLAIM_TTL_MS "600000"
#define LOG_BATCH 1000

static int64_t kv_redis_wall_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int kv_redis_sync_init(struct kv_redis *r)
{
	uint64_t v = 0;

	if (getrandom(&v, sizeof(v), 0) != (ssize_t)sizeof(v))
		return -EIO;
	snprintf(r->mount_id, sizeof(r->mount_id), "%016" PRIx64, v);
	strcpy(r->log_pos, "0-0");
	return 0;
}

void kv_redis_sync_close(struct kv_redis *r)
{
	if (r->log_c)
		redisFree(r->log_c);
	r->log_c = NULL;
	if (r->notify_c)
		redisFree(r->notify_c);
	r->notify_c = NULL;
}

/* How often a server without expired-key notifications is asked again
 * (an administrator may turn them on). */
#define NOTIFY_RECHECK_MS 60000

/*
 * Subscribes to expired-key events when the server publishes them
 * (notify-keyspace-events with E and x, or A). Nothing is configured on
 * the server: that is the administrator's choice; the T:exp sweep works
 * without it.
 */
static void notify_open(struct kv_redis *r)
{
	char err[512], chan[64];
	redisContext *c = NULL;
	redisReply *rep;
	bool on = false;

	if (r->notify_c || kv_redis_mono_ms() < r->notify_check_ms)
		return;
	r->notify_check_ms = kv_redis_mono_ms() + NOTIFY_RECHECK_MS;
	if (kv_redis_connect(r, &c, err, sizeof(err)))
		return;
	rep = redisCommand(c, "CONFIG GET notify-keyspace-events");
	if (rep && rep->type == REDIS_REPLY_ARRAY && rep->elements == 2 &&
	    rep->element[1]->type == REDIS_REPLY_STRING) {
		const char *v = rep->element[1]->str;

		on = strchr(v, 'E') && (strchr(v, 'x') || strchr(v, 'A'));
	}
	freeReplyObject(rep);
	if (!on) {
		redisFree(c);
		return;
	}
	snprintf(chan, sizeof(chan), "__keyevent@%u__:expired", r->database);
	rep = redisCommand(c, "SUBSCRIBE %s", chan);
	if (!rep || rep->type != REDIS_REPLY_ARRAY) {
		freeReplyObject(rep);
		redisFree(c);
		return;
	}
	freeReplyObject(rep);
	r->notify_c = c;
	NLOG(NLOG_INFO, "ttl", "using redis keyspace notifications of expired keys",
	     LF_STR("server", r->where));
}

/* Without waiting: did one of this store's records expire in Redis? */
static bool notify_poll(struct kv_redis *r)
{
	struct pollfd pfd;
	bool ours = false;
	void *rep;

	notify_open(r);
	if (!r->notify_c)
		return false;
	pfd.fd = r->notify_c->fd;
	pfd.events = POLLIN;
	if (poll(&pfd, 1, 0) <= 0)
		return false;
	if (redisBufferRead(r->notify_c) != REDIS_OK)
		goto out_drop;
	for (;;) {
		redisReply *m;

		rep = NULL;
		if (redisGetReplyFromReader(r->notify_c, &rep) != REDIS_OK)
			goto out_drop;
		if (!rep)
			break;
		m = rep;
		/* ["message", channel, key]: a record key of this store. */
		if (m->type == REDIS_REPLY_ARRAY && m->elements == 3 &&
		    m->element[2]->type == REDIS_REPLY_STRING &&
		    m->element[2]->len > r->taglen + 2 &&
		    !memcmp(m->element[2]->str, r->tag, r->taglen) &&
		    !memcmp(m->element[2]->str + r->taglen, "r:", 2))
			ours = true;
		freeReplyObject(rep);
	}
	return ours;

out_drop:
	redisFree(r->notify_c);
	r->notify_c = NULL;
	r->notify_check_ms = 0;
	return true; /* something may have expired meanwhile */
}

static bool field_u64(const redisReply *e, uint64_t *out)
{
	char buf[24];

	if (e->type != REDIS_REPLY_STRING || e->len == 0 || e->len >= sizeof(buf))
		return false;
	memcpy(buf, e->str, e->len);
	buf[e->len] = '\0';
	*out = strtoull(buf, NULL, 10);
	return true;
}

/* An entry [id, [field, value, ...]]: its seq, and the value of field. */
static const redisReply *entry_field(const redisReply *e, const char *field)
{
	const redisReply *kv;

	if (e->type != REDIS_REPLY_ARRAY || e->elements != 2 ||
	    e->element[1]->type != REDIS_REPLY_ARRAY)
		return NULL;
	kv = e->element[1];
	for (size_t i = 0; i + 1 < kv->elements; i += 2)
		if (kv->element[i]->type == REDIS_REPLY_STRING &&
		    kv->element[i]->len == strlen(field) &&
		    !memcmp(kv->element[i]->str, field, kv->element[i]->len))
			return kv->element[i + 1];
	return NULL;
}

static bool entry_pos(const redisReply *e, char *pos, size_t len)
{
	if (e->type != REDIS_REPLY_ARRAY || e->elements != 2 ||
	    e->element[0]->type != REDIS_REPLY_STRING || e->element[0]->len >= len)
		return false;
	memcpy(pos, e->element[0]->str, e->element[0]->len);
	pos[e->element[0]->len] = '\0';
	return true;
}

int kv_redis_log_mark(struct kv_redis *r, redisContext *c)
{
	char *key = kv_redis_key(r, "log");
	redisReply *rep;
	const redisReply *seq;
	int ret = 0;

	if (!key)
		return -ENOMEM;
	rep = redisCommand(c, "XREVRANGE %s + - COUNT 1", key);
	free(key);
	if (!rep || rep->type != REDIS_REPLY_ARRAY) {
		ret = kv_redis_error(r, c, rep, "load");
		freeReplyObject(rep);
		return ret;
	}
	strcpy(r->log_pos, "0-0");
	r->log_seq = 0;
	if (rep->elements == 1) {
		seq = entry_field(rep->element[0], "seq");
		if (!seq || !field_u64(seq, &r->log_seq) ||
		    !entry_pos(rep->element[0], r->log_pos, sizeof(r->log_pos)))
			ret = -EIO;
	}
	r->log_lost = false;
	freeReplyObject(rep);
	return ret;
}

static int add_ids(const redisReply *v, uint64_t **ids, size_t *n, size_t *cap)
{
	const char *p = v->str, *end = v->str + v->len;

	while (p < end) {
		uint64_t id = 0;

		while (p < end && *p == ' ')
			p++;
		if (p == end)
			break;
		while (p < end && *p >= '0' && *p <= '9')
			id = id * 10 + (uint64_t)(*p++ - '0');
		while (p < end && *p != ' ')
			p++;
		if (!id)
			continue;
		if (*n == *cap) {
			size_t c = *cap ? 2 * *cap : 64;
			uint64_t *m = realloc(*ids, c * sizeof(*m));

			if (!m)
				return -ENOMEM;
			*ids = m;
			*cap = c;
		}
		(*ids)[(*n)++] = id;
	}
	return 0;
}

int kv_redis_changes(struct kv_backend *b, int64_t wait_ms, uint64_t **ids_out, size_t *n_out)
{
	struct kv_redis *r = (struct kv_redis *)b;
	char err[512], block[24], count[24], *key;
	const redisReply *entries;
	redisReply *rep;
	uint64_t *ids = NULL;
	size_t n = 0, cap = 0;
	int ret = 0;

	*ids_out = NULL;
	*n_out = 0;
	if (!r->log_c) {
		/* Commands of this connection block for wait_ms: its timeout
		 * must be longer. */
		ret = kv_redis_connect(r, &r->log_c, err, sizeof(err));
		if (ret) {
			r->log_c = NULL;
			return -EIO;
		}
	}
	/* Until a load() marks a new position. */
	if (r->log_lost)
		return -ESTALE;
	/* An expired record of this store: its indexes go now, and the
	 * sweep's log entry tells every mount. */
	if (notify_poll(r)) {
		size_t swept;

		kv_redis_sweep(b, kv_redis_wall_ms(), 1000, &swept);
	}
	if (wait_ms >= (int64_t)r->timeout_ms / 2)
		wait_ms = (int64_t)r->timeout_ms / 2;
	snprintf(block, sizeof(block), "%" PRId64, wait_ms > 0 ? wait_ms : 1);
	snprintf(count, sizeof(count), "%d", LOG_BATCH);
	key = kv_redis_key(r, "log");
	if (!key)
		return -ENOMEM;
	{
		const char *argv[] = { "XREAD", "COUNT", count, "BLOCK", block, "STREAMS", key,
				       r->log_pos };

		rep = redisCommandArgv(r->log_c, 8, argv, NULL);
	}
	free(key);
	if (!rep || (rep->type != REDIS_REPLY_NIL && rep->type != REDIS_REPLY_ARRAY)) {
		ret = kv_redis_error(r, r->log_c, rep, "change log");
		freeReplyObject(rep);
		redisFree(r->log_c);
		r->log_c = NULL;
		/* Whatever was committed meanwhile is unknown. */
		r->log_lost = true;
		return ret;
	}
	if (rep->type == REDIS_REPLY_NIL || rep->elements != 1 ||
	    rep->element[0]->type != REDIS_REPLY_ARRAY || rep->element[0]->elements != 2) {
		freeReplyObject(rep);
		return 0;
	}
	entries = rep->element[0]->element[1];
	for (size_t i = 0; !ret && entries->type == REDIS_REPLY_ARRAY && i < entries->elements;
	     i++) {
		const redisReply *e = entries->element[i], *seqr = entry_field(e, "seq");
		const redisReply *by = entry_field(e, "by"), *idsr = entry_field(e, "ids");
		uint64_t seq;

		if (!seqr || !by || !idsr || !field_u64(seqr, &seq) ||
		    !entry_pos(e, r->log_pos, sizeof(r->log_pos))) {
			ret = -ESTALE;
			break;
		}
		if (seq != r->log_seq + 1)
			ret = -ESTALE;
		r->log_seq = seq;
		if (by->type == REDIS_REPLY_STRING && by->len == 16 &&
		    !memcmp(by->str, r->mount_id, 16))
			continue;
		if (idsr->type == REDIS_REPLY_STRING && !ret)
			ret = add_ids(idsr, &ids, &n, &cap);
	}
	freeReplyObject(rep);
	kv_redis_ok(r);
	if (ret) {
		if (ret == -ESTALE)
			NLOG(NLOG_WARN, "sync", "change log has a gap: reloading every record",
			     LF_STR("server", r->where));
		free(ids);
		return ret;
	}
	*ids_out = ids;
	*n_out = n;
	return 0;
}

/* The records of ids[0..n) into out; with convert, a record held as a hash
 * (an older nadbfs wrote it: backend_redis_format.c) is converted and read
 * again. */
static int fetch(struct kv_redis *r, const uint64_t *ids, size_t n, struct kv_change *out,
		 bool convert)
{
	struct kv_redis_conn *conn;
	size_t *redo = NULL, nredo = 0;
	int ret = 0;

	memset(out, 0, n * sizeof(*out));
	if (!n)
		return 0;
	if (convert && !(redo = malloc(n * sizeof(*redo))))
		return -ENOMEM;
	ret = kv_redis_get(r, &conn);
	if (ret) {
		free(redo);
		return ret;
	}
	for (size_t i = 0; i < n; i++) {
		char key[128];
		const char *argv[] = { "GET", key };

		snprintf(key, sizeof(key), "%sr:%" PRIu64, r->tag, ids[i]);
		if (redisAppendCommandArgv(conn->c, 2, argv, NULL) != REDIS_OK ||
		    (ids[i] == KV_ROOT_ID && kv_redis_decl_append(r, conn->c))) {
			ret = kv_redis_error(r, conn->c, NULL, "fetch");
			kv_redis_put(r, conn, true);
			free(redo);
			return ret;
		}
	}
	for (size_t i = 0; i < n; i++) {
		redisReply *rep = NULL, *decl = NULL;
		size_t used;

		if (redisGetReply(conn->c, (void **)&rep) != REDIS_OK ||
		    (ids[i] == KV_ROOT_ID && redisGetReply(conn->c, (void **)&decl) != REDIS_OK)) {
			freeReplyObject(rep);
			ret = kv_redis_error(r, conn->c, NULL, "fetch");
			kv_redis_put(r, conn, true);
			kv_changes_clear(out, i);
			free(redo);
			return ret;
		}
		out[i].id = ids[i];
		if (ret) {
			/* Drained so the connection stays usable. */
		} else if (redo && KV_REDIS_WRONGTYPE(rep)) {
			redo[nredo++] = i;
		} else if (rep->type == REDIS_REPLY_NIL) {
			out[i].gone = true;
		} else if (rep->type != REDIS_REPLY_STRING) {
			ret = kv_redis_error(r, conn->c, rep, "fetch");
		} else if (kv_meta_decode((const uint8_t *)rep->str, rep->len, &out[i].meta,
					  &used) || used != rep->len || out[i].meta.id != ids[i]) {
			NLOG(NLOG_ERROR, "backend", "malformed record in redis",
			     LF_STR("server", r->where), LF_INT("id", ids[i]));
			ret = -EIO;
		} else if (decl) {
			ret = kv_redis_decl_apply(r, conn->c, decl, &out[i].meta);
		}
		freeReplyObject(rep);
		freeReplyObject(decl);
	}
	if (!ret && nredo) {
		uint64_t *again = malloc(nredo * sizeof(*again));

		for (size_t j = 0; again && j < nredo; j++)
			again[j] = ids[redo[j]];
		ret = again ? kv_redis_convert_ids(r, conn->c, again, nredo) : -ENOMEM;
		free(again);
	}
	kv_redis_put(r, conn, conn->c->err != 0);
	for (size_t j = 0; !ret && j < nredo; j++)
		ret = fetch(r, &ids[redo[j]], 1, &out[redo[j]], false);
	free(redo);
	if (ret) {
		kv_changes_clear(out, n);
		return ret;
	}
	kv_redis_ok(r);
	return 0;
}

int kv_redis_fetch(struct kv_backend *b, const uint64_t *ids, size_t n, struct kv_change *out)
{
	return fetch((struct kv_redis *)b, ids, n, out, true);
}

int kv_redis_reserve_ids(struct kv_backend *b, uint64_t count, uint64_t *first)
{
	struct kv_redis *r = (struct kv_redis *)b;
	struct kv_redis_conn *conn;
	char num[24], *key = kv_redis_key(r, "maxid");
	redisReply *rep;
	int ret;

	if (!key)
		return -ENOMEM;
	ret = kv_redis_get(r, &conn);
	if (ret) {
		free(key);
		return ret;
	}
	snprintf(num, sizeof(num), "%" PRIu64, count);
	{
		/* T:maxid is "highest id ever used": the commit script only
		 * ever raises it, so a reserved block is never handed out
		 * again. */
		const char *argv[] = { "INCRBY", key, num };

		rep = redisCommandArgv(conn->c, 3, argv, NULL);
	}
	free(key);
	if (!rep || rep->type != REDIS_REPLY_INTEGER || rep->integer < (long long)count) {
		ret = kv_redis_error(r, conn->c, rep, "reserve ids");
		kv_redis_put(r, conn, true);
		freeReplyObject(rep);
		return ret;
	}
	*first = (uint64_t)rep->integer - count + 1;
	freeReplyObject(rep);
	kv_redis_put(r, conn, false);
	kv_redis_ok(r);
	return 0;
}

/* KEYS[1] the directory hash; ARGV[1] prefix, [2] name, [3] id, [4] parent,
 * [5] claim TTL, [6] mount id. A name held by an indexed record or a live
 * claim stays, and so does one another mount's transaction reserved
 * (backend_redis_tx.c); one left by a claim that expired or a record
 * removed is taken. */
static const char claim_script[] =
	"local P, name, id = ARGV[1], ARGV[2], ARGV[3]\n"
	KV_REDIS_LUA_TXL
	"local who = live(redis.call('HGET', P..'txl', 'n'..ARGV[4]..'/'..name), server_ms())\n"
	"if who and who ~= ARGV[6] then return 0 end\n"
	"local cur = redis.call('HGET', KEYS[1], name)\n"
	"if cur and cur ~= id and (redis.call('EXISTS', P..'r:'..cur, P..'i:'..cur) > 0 or\n"
	"    redis.call('EXISTS', P..'c:'..cur) == 1) then return 0 end\n"
	"redis.call('HSET', KEYS[1], name, id)\n"
	"redis.call('SET', P..'c:'..id, ARGV[4]..'/'..name, 'PX', ARGV[5])\n"
	"return 1\n";

int kv_redis_claim_name(struct kv_backend *b, uint64_t parent, const char *name, uint64_t id)
{
	struct kv_redis *r = (struct kv_redis *)b;
	struct kv_redis_conn *conn;
	char sid[24], sparent[24], *dk = kv_redis_key(r, "d:%" PRIu64, parent);
	redisReply *rep;
	int ret;

	if (!dk)
		return -ENOMEM;
	ret = kv_redis_get(r, &conn);
	if (ret) {
		free(dk);
		return ret;
	}
	snprintf(sid, sizeof(sid), "%" PRIu64, id);
	snprintf(sparent, sizeof(sparent), "%" PRIu64, parent);
	{
		const char *argv[] = { "EVAL", claim_script, "1", dk, r->tag, name, sid, sparent,
				       CLAIM_TTL_MS, r->mount_id };

		rep = redisCommandArgv(conn->c, 10, argv, NULL);
	}
	free(dk);
	if (!rep || rep->type != REDIS_REPLY_INTEGER) {
		ret = kv_redis_error(r, conn->c, rep, "claim");
		kv_redis_put(r, conn, true);
		freeReplyObject(rep);
		return ret;
	}
	ret = rep->integer ? 0 : -EEXIST;
	freeReplyObject(rep);
	kv_redis_put(r, conn, false);
	kv_redis_ok(r);
	return ret;
}

/* ARGV[1] prefix, [2] now (ms), [3] limit. Announced as "sweeper", so
 * every mount, the sweeping one included, drops the records it still has.
 * Also removes what commits that never ran their script left (a few stale
 * staging markers per sweep: backend_redis_stage.c). */
static const char sweep_script[] =
	"local P = ARGV[1]\n"
	KV_REDIS_LUA_DROP
	KV_REDIS_LUA_UNSTAGE
	"local due = redis.call('ZRANGEBYSCORE', P..'exp', '-inf', ARGV[2], 'LIMIT', 0, ARGV[3])\n"
	"for _, x in ipairs(due) do drop(x) end\n"
	"announce('sweeper')\n"
	/* The server's clock, as the markers' dates (kv_redis_stage). */
	"local tm = redis.call('TIME')\n"
	"local stale = tonumber(tm[1]) * 1000 + math.floor(tonumber(tm[2]) / 1000) - " KV_REDIS_STAGE_STALE_MS "\n"
	"for _, mk in ipairs(redis.call('ZRANGEBYSCORE', P..'up', '-inf', stale, 'LIMIT', 0, 10)) do\n"
	"  unstage(mk)\n"
	"end\n"
	"return #due\n";

int kv_redis_sweep(struct kv_backend *b, int64_t now_ms, size_t limit, size_t *n)
{
	struct kv_redis *r = (struct kv_redis *)b;
	struct kv_redis_conn *conn;
	char now[24], lim[24], *key = kv_redis_key(r, "exp");
	redisReply *rep;
	int ret;

	*n = 0;
	if (!key)
		return -ENOMEM;
	ret = kv_redis_get(r, &conn);
	if (ret) {
		free(key);
		return ret;
	}
	snprintf(now, sizeof(now), "%" PRId64, now_ms);
	snprintf(lim, sizeof(lim), "%zu", limit);
	{
		const char *argv[] = { "EVAL", sweep_script, "1", key, r->tag, now, lim };

		rep = redisCommandArgv(conn->c, 7, argv, NULL);
	}
	free(key);
	if (!rep || rep->type != REDIS_REPLY_INTEGER) {
		ret = kv_redis_error(r, conn->c, rep, "sweep");
		kv_redis_put(r, conn, !rep || rep->type != REDIS_REPLY_ERROR);
		freeReplyObject(rep);
		return ret;
	}
	*n = (size_t)rep->integer;
	freeReplyObject(rep);
	kv_redis_put(r, conn, false);
	kv_redis_ok(r);
	if (*n)
		NLOG(NLOG_DEBUG, "ttl", "unindexed expired records in redis",
		     LF_STR("server", r->where), LF_INT("count", *n));
	return 0;
}

int kv_redis_lookup_name(struct kv_backend *b, uint64_t parent, const char *name, uint64_t *id)
{
	struct kv_redis *r = (struct kv_redis *)b;
	struct kv_redis_conn *conn;
	char *dk = kv_redis_key(r, "d:%" PRIu64, parent);
	redisReply *rep;
	int ret;

	if (!dk)
		return -ENOMEM;
	ret = kv_redis_get(r, &conn);
	if (ret) {
		free(dk);
		return ret;
	}
	{
		const char *argv[] = { "HGET", dk, name };

		rep = redisCommandArgv(conn->c, 3, argv, NULL);
	}
	free(dk);
	if (!rep || (rep->type != REDIS_REPLY_NIL && rep->type != REDIS_REPLY_STRING)) {
		ret = kv_redis_error(r, conn->c, rep, "lookup");
		kv_redis_put(r, conn, true);
		freeReplyObject(rep);
		return ret;
	}
	kv_redis_put(r, conn, false);
	ret = -ENOENT;
	if (rep->type == REDIS_REPLY_STRING) {
		uint64_t v;

		if (field_u64(rep, &v) && v) {
			*id = v;
			ret = 0;
		}
	}
	freeReplyObject(rep);
	return ret;
}
