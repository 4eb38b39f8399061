/*
 * The Redis backend: opening a store (connection check, script, key
 * prefix), loading its records, reading values, statfs. Commits are in
 * backend_redis_commit.c, connections in backend_redis_conn.c, value
 * encoding in backend_redis_value.c; backend_redis.h has the key layout.
 */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <zstd.h>

#include "store/backend_redis.h"
#include "util/log.h"

/* Ids asked for per SSCAN step and per pipelined batch of HGETs. */
#define LOAD_BATCH 1000
#define DEFAULT_POOL 4
#define DEFAULT_TIMEOUT_MS 2000
#define BSIZE 4096

static const struct kv_backend_ops redis_ops;

/*
 * One part of the hash tag: bytes outside [A-Za-z0-9_-] become %XX, so the
 * parts' separator ':' and the tag's braces never appear raw and the
 * mapping from (prefix, db, ns) to the tag is injective.
 */
static int encode_ident(const char *s, char **out)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t len = strlen(s), o = 0;
	char *d;

	if (!*s)
		return -EINVAL;
	d = malloc(3 * len + 1);
	if (!d)
		return -ENOMEM;
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		bool plain = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
			     (*p >= '0' && *p <= '9') || *p == '_' || *p == '-';

		if (plain) {
			d[o++] = (char)*p;
		} else {
			d[o++] = '%';
			d[o++] = hex[*p >> 4];
			d[o++] = hex[*p & 15];
		}
	}
	d[o] = '\0';
	*out = d;
	return 0;
}

static void redis_close(struct kv_backend *b)
{
	struct kv_redis *r = (struct kv_redis *)b;

	if (!r)
		return;
	kv_redis_sync_close(r);
	if (r->conns)
		kv_redis_pool_destroy(r);
	ZSTD_freeCCtx(r->cctx);
	free(r->zbuf);
	if (r->password) {
		/* Not left in freed memory. */
		explicit_bzero(r->password, strlen(r->password));
		free(r->password);
	}
	free(r->host);
	free(r->socket);
	free(r->where);
	free(r->tag);
	free(r);
}

/* "key:value\r\n" lines of an INFO reply: the value of key, or NULL. */
static const char *info_field(const char *info, const char *key, size_t *len)
{
	size_t klen = strlen(key);

	for (const char *p = info; p && *p;) {
		if (!strncmp(p, key, klen) && p[klen] == ':') {
			const char *v = p + klen + 1;

			*len = strcspn(v, "\r\n");
			return v;
		}
		p = strchr(p, '\n');
		if (p)
			p++;
	}
	return NULL;
}

static uint64_t info_u64(const char *info, const char *key)
{
	size_t len;
	const char *v = info_field(info, key, &len);

	return v ? strtoull(v, NULL, 10) : 0;
}

/* Spec section 9: a policy that evicts keys would lose data silently. */
static void check_eviction(struct kv_redis *r, redisContext *c)
{
	redisReply *rep = redisCommand(c, "INFO memory");
	const char *v;
	size_t len;

	if (!rep || rep->type != REDIS_REPLY_STRING) {
		freeReplyObject(rep);
		return;
	}
	v = info_field(rep->str, "maxmemory_policy", &len);
	if (v && !(len == 10 && !strncmp(v, "noeviction", 10)))
		NLOG(NLOG_WARN, "backend",
		     "redis may evict keys when it is full: set maxmemory-policy noeviction",
		     LF_STR("server", r->where), LF_STR("maxmemory_policy", v));
	freeReplyObject(rep);
}

static int setup_params(struct kv_redis *r, const struct kv_backend_params *p, char *err,
			size_t errlen)
{
	char *eprefix = NULL, *edb = NULL, *ens = NULL;
	const char *prefix = p->redis_key_prefix ? p->redis_key_prefix : "nadb";
	int ret;

	ret = encode_ident(prefix, &eprefix);
	if (!ret)
		ret = encode_ident(p->db ? p->db : "", &edb);
	if (!ret)
		ret = encode_ident(p->ns ? p->ns : "", &ens);
	if (ret == -EINVAL)
		snprintf(err, errlen,
			 "invalid store name (key prefix \"%s\", db \"%s\", namespace \"%s\"): "
			 "empty", prefix, p->db ? p->db : "", p->ns ? p->ns : "");
	if (!ret && asprintf(&r->tag, "{%s:%s:%s}:", eprefix, edb, ens) < 0) {
		r->tag = NULL;
		ret = -ENOMEM;
	}
	free(eprefix);
	free(edb);
	free(ens);
	if (ret)
		return ret;
	r->taglen = strlen(r->tag);
	r->port = p->redis_port ? p->redis_port : 6379;
	r->database = p->redis_database;
	r->timeout_ms = p->redis_timeout_ms ? p->redis_timeout_ms : DEFAULT_TIMEOUT_MS;
	r->compression = p->compression;
	r->compression_min_size = p->compression_min_size;
	if (p->redis_socket && *p->redis_socket) {
		r->socket = strdup(p->redis_socket);
		if (r->socket && asprintf(&r->where, "unix:%s", r->socket) < 0)
			r->where = NULL;
	} else {
		r->host = strdup(p->redis_host && *p->redis_host ? p->redis_host : "127.0.0.1");
		if (r->host && asprintf(&r->where, "%s:%u", r->host, r->port) < 0)
			r->where = NULL;
	}
	if (p->redis_password && *p->redis_password) {
		r->password = strdup(p->redis_password);
		if (!r->password)
			return -ENOMEM;
	}
	return r->where ? 0 : -ENOMEM;
}

int kv_redis_open(const struct kv_backend_params *p, struct kv_backend **out, char *err,
		  size_t errlen)
{
	struct kv_redis *r;
	redisContext *c = NULL;
	redisReply *rep;
	int ret;

	/*
	 * hiredis writes with write(2): a server that closed the connection
	 * would kill the process with SIGPIPE instead of failing the call.
	 * Ignored unless the program has its own handler (nadbfs's libfuse
	 * handlers ignore it too).
	 */
	{
		struct sigaction old;

		if (sigaction(SIGPIPE, NULL, &old) == 0 && old.sa_handler == SIG_DFL &&
		    !(old.sa_flags & SA_SIGINFO))
			signal(SIGPIPE, SIG_IGN);
	}
	r = calloc(1, sizeof(*r));
	if (!r)
		return -ENOMEM;
	r->base.ops = &redis_ops;
	ret = setup_params(r, p, err, errlen);
	if (ret)
		goto out_close;
	ret = kv_redis_pool_init(r, p->redis_pool_size ? p->redis_pool_size : DEFAULT_POOL);
	if (!ret)
		ret = kv_redis_sync_init(r);
	if (ret)
		goto out_close;
	/* The first connection now: a mount must fail at once, with the
	 * reason, when Redis is unreachable or refuses us. */
	ret = kv_redis_connect(r, &c, err, errlen);
	if (ret)
		goto out_close;
	rep = redisCommand(c, "SCRIPT LOAD %s", kv_redis_script);
	if (!rep || rep->type != REDIS_REPLY_STRING || rep->len != 40) {
		snprintf(err, errlen, "redis %s cannot load the commit script: %s", r->where,
			 rep && rep->type == REDIS_REPLY_ERROR ? rep->str
			 : c->errstr[0] ? c->errstr : "unexpected reply");
		freeReplyObject(rep);
		redisFree(c);
		ret = -EIO;
		goto out_close;
	}
	memcpy(r->script_sha, rep->str, 40);
	r->script_sha[40] = '\0';
	freeReplyObject(rep);
	/* Before anything reads the store: its layout may need converting. */
	ret = kv_redis_format(r, c, err, errlen);
	if (ret) {
		redisFree(c);
		goto out_close;
	}
	check_eviction(r, c);
	r->conns[0].c = c;
	r->connected_once = true;
	NLOG(NLOG_INFO, "backend", "connected to redis", LF_STR("server", r->where),
	     LF_INT("database", r->database), LF_STR("key_prefix", r->tag),
	     LF_INT("pool_size", r->nconns));
	*out = &r->base;
	return 0;

out_close:
	if (ret == -ENOMEM && !err[0])
		snprintf(err, errlen, "out of memory");
	redis_close(&r->base);
	return ret;
}

/* --- Load --- */

/* Ids seen so far: SSCAN may return an element more than once. */
struct idset {
	uint64_t *slot;		/* 0 = empty (no record has id 0) */
	size_t cap, n;
};

static int idset_add(struct idset *s, uint64_t id, bool *added)
{
	if (2 * (s->n + 1) > s->cap) {
		size_t cap = s->cap ? 2 * s->cap : 4096;
		uint64_t *slot = calloc(cap, sizeof(*slot));

		if (!slot)
			return -ENOMEM;
		for (size_t i = 0; i < s->cap; i++) {
			size_t h;

			if (!s->slot[i])
				continue;
			for (h = (s->slot[i] * 0x9E3779B97F4A7C15ull) & (cap - 1); slot[h];
			     h = (h + 1) & (cap - 1))
				;
			slot[h] = s->slot[i];
		}
		free(s->slot);
		s->slot = slot;
		s->cap = cap;
	}
	for (size_t h = (id * 0x9E3779B97F4A7C15ull) & (s->cap - 1);; h = (h + 1) & (s->cap - 1)) {
		if (s->slot[h] == id) {
			*added = false;
			return 0;
		}
		if (!s->slot[h]) {
			s->slot[h] = id;
			s->n++;
			*added = true;
			return 0;
		}
	}
}

static bool parse_id(const char *s, size_t len, uint64_t *out)
{
	uint64_t v = 0;

	if (len == 0 || len > 20)
		return false;
	for (size_t i = 0; i < len; i++) {
		if (s[i] < '0' || s[i] > '9' || v > (UINT64_MAX - 9) / 10)
			return false;
		v = v * 10 + (uint64_t)(s[i] - '0');
	}
	*out = v;
	return v != 0;
}

struct load_state {
	struct kv_redis *r;
	redisContext *c;
	kv_load_fn fn;
	void *arg;
	struct idset seen;
	uint64_t *gone;		/* listed ids whose record Redis expired */
	size_t ngone, gonecap;
	int stop;		/* fn's non-zero result */
	uint64_t *redo;		/* ids of the batch held as hashes */
	size_t nredo;
	bool no_redo;		/* reading them again: a hash is an error */
};

/* Fetches and reports the records of ids[0..n) with one pipelined round. */
static int load_batch(struct load_state *ls, const uint64_t *ids, size_t n)
{
	size_t sent = 0;
	int ret = 0;

	for (; sent < n; sent++) {
		char key[128];
		const char *argv[] = { "GET", key };

		snprintf(key, sizeof(key), "%sr:%" PRIu64, ls->r->tag, ids[sent]);
		if (redisAppendCommandArgv(ls->c, 2, argv, NULL) != REDIS_OK)
			return kv_redis_error(ls->r, ls->c, NULL, "load");
		if (ids[sent] == KV_ROOT_ID && (ret = kv_redis_decl_append(ls->r, ls->c)))
			return ret;
	}
	for (size_t i = 0; i < n; i++) {
		redisReply *rep = NULL, *decl = NULL;
		struct kv_meta m;
		size_t used;
		int dret;

		if (redisGetReply(ls->c, (void **)&rep) != REDIS_OK ||
		    (ids[i] == KV_ROOT_ID && redisGetReply(ls->c, (void **)&decl) != REDIS_OK)) {
			freeReplyObject(rep);
			return kv_redis_error(ls->r, ls->c, NULL, "load");
		}
		if (ret || ls->stop) {
			/* Drained so the connection stays usable. */
			freeReplyObject(rep);
			freeReplyObject(decl);
			continue;
		}
		if (KV_REDIS_WRONGTYPE(rep) && !ls->no_redo && ls->nredo < LOAD_BATCH) {
			/* A hash: read again once converted, below. */
			ls->redo[ls->nredo++] = ids[i];
		} else if (rep->type == REDIS_REPLY_NIL) {
			if (ls->ngone == ls->gonecap) {
				size_t cap = ls->gonecap ? 2 * ls->gonecap : 64;
				uint64_t *g = realloc(ls->gone, cap * sizeof(*g));

				if (!g) {
					ret = -ENOMEM;
					freeReplyObject(rep);
					freeReplyObject(decl);
					continue;
				}
				ls->gone = g;
				ls->gonecap = cap;
			}
			ls->gone[ls->ngone++] = ids[i];
		} else if (rep->type != REDIS_REPLY_STRING) {
			ret = kv_redis_error(ls->r, ls->c, rep, "load");
		} else {
			dret = kv_meta_decode((const uint8_t *)rep->str, rep->len, &m, &used);
			if (dret || used != rep->len || m.id != ids[i]) {
				if (!dret)
					kv_meta_clear(&m);
				NLOG(NLOG_ERROR, "backend", "malformed record in redis",
				     LF_STR("server", ls->r->where), LF_INT("id", ids[i]));
				ret = -EIO;
			} else if (decl && (ret = kv_redis_decl_apply(ls->r, ls->c, decl, &m))) {
				kv_meta_clear(&m);
			} else {
				ls->stop = ls->fn(&m, ls->arg);
				kv_meta_clear(&m);
			}
		}
		freeReplyObject(rep);
		freeReplyObject(decl);
	}
	if (!ret && !ls->stop && ls->nredo) {
		/* Records an older nadbfs wrote as hashes after the store was
		 * converted (backend_redis_format.c): converted, read again. */
		size_t k = ls->nredo;
		uint64_t *again = malloc(k * sizeof(*again));

		if (!again)
			return -ENOMEM;
		memcpy(again, ls->redo, k * sizeof(*again));
		ls->nredo = 0;
		ret = kv_redis_convert_ids(ls->r, ls->c, again, k);
		if (!ret) {
			ls->no_redo = true;
			ret = load_batch(ls, again, k);
			ls->no_redo = false;
		}
		free(again);
	}
	return ret;
}

/* Unindexes records Redis expired by itself while no daemon ran: the same
 * DEL the store sends for an expired key. */
static void collect_gone(struct kv_redis *r, const uint64_t *gone, size_t n)
{
	struct kv_op *ops = calloc(n, sizeof(*ops));

	if (!ops)
		return;
	for (size_t i = 0; i < n; i++) {
		ops[i].type = KV_OP_DEL;
		ops[i].meta.id = gone[i];
	}
	if (kv_redis_commit(&r->base, ops, n) == 0)
		NLOG(NLOG_INFO, "backend", "unindexed records redis expired",
		     LF_STR("server", r->where), LF_INT("count", n));
	free(ops);
}

static int redis_load(struct kv_backend *b, kv_load_fn fn, void *arg, uint64_t *max_id)
{
	struct kv_redis *r = (struct kv_redis *)b;
	struct load_state ls = { .r = r, .fn = fn, .arg = arg };
	struct kv_redis_conn *conn;
	char *idskey = NULL, *maxkey = NULL, cursor[32] = "0";
	uint64_t *ids = NULL;
	redisReply *rep = NULL;
	int ret;

	ret = kv_redis_get(r, &conn);
	if (ret)
		return ret;
	ls.c = conn->c;
	idskey = kv_redis_key(r, "ids");
	maxkey = kv_redis_key(r, "maxid");
	ids = malloc(LOAD_BATCH * 4 * sizeof(*ids));
	ls.redo = malloc(LOAD_BATCH * sizeof(*ls.redo));
	if (!idskey || !maxkey || !ids || !ls.redo) {
		ret = -ENOMEM;
		goto out;
	}
	/* Before the first record: what changes after this is reported by
	 * changes() (some twice, which is harmless). */
	ret = kv_redis_log_mark(r, conn->c);
	if (ret)
		goto out;
	rep = redisCommand(conn->c, "GET %s", maxkey);
	if (!rep || (rep->type != REDIS_REPLY_NIL && rep->type != REDIS_REPLY_STRING)) {
		ret = kv_redis_error(r, conn->c, rep, "load");
		goto out;
	}
	*max_id = 0;
	if (rep->type == REDIS_REPLY_STRING && !parse_id(rep->str, rep->len, max_id)) {
		NLOG(NLOG_ERROR, "backend", "malformed id counter in redis",
		     LF_STR("server", r->where));
		ret = -EIO;
		goto out;
	}
	do {
		size_t k = 0;
		redisReply *list;

		freeReplyObject(rep);
		rep = redisCommand(conn->c, "SSCAN %s %s COUNT %d", idskey, cursor, LOAD_BATCH);
		if (!rep || rep->type != REDIS_REPLY_ARRAY || rep->elements != 2 ||
		    rep->element[0]->type != REDIS_REPLY_STRING ||
		    rep->element[1]->type != REDIS_REPLY_ARRAY ||
		    rep->element[0]->len >= sizeof(cursor)) {
			ret = kv_redis_error(r, conn->c, rep, "load");
			goto out;
		}
		memcpy(cursor, rep->element[0]->str, rep->element[0]->len);
		cursor[rep->element[0]->len] = '\0';
		list = rep->element[1];
		/* COUNT is a hint: a step may return more; taken in slices. */
		for (size_t i = 0; i < list->elements && !ret && !ls.stop; i++) {
			redisReply *e = list->element[i];
			uint64_t id;
			bool added;

			if (e->type != REDIS_REPLY_STRING || !parse_id(e->str, e->len, &id)) {
				NLOG(NLOG_WARN, "backend", "ignoring a malformed id in redis",
				     LF_STR("server", r->where));
				continue;
			}
			ret = idset_add(&ls.seen, id, &added);
			if (ret || !added)
				continue;
			ids[k++] = id;
			if (k == LOAD_BATCH) {
				ret = load_batch(&ls, ids, k);
				k = 0;
			}
		}
		if (!ret && !ls.stop && k)
			ret = load_batch(&ls, ids, k);
	} while (!ret && !ls.stop && strcmp(cursor, "0"));
	if (!ret && ls.stop)
		ret = ls.stop;

out:
	freeReplyObject(rep);
	kv_redis_put(r, conn, ret != 0 && ret != ls.stop);
	if (!ret) {
		kv_redis_ok(r);
		if (ls.ngone)
			collect_gone(r, ls.gone, ls.ngone);
	}
	free(ls.seen.slot);
	free(ls.gone);
	free(ls.redo);
	free(ids);
	free(idskey);
	free(maxkey);
	return ret;
}

/* --- Reads --- */

static char *value_key(const struct kv_redis *r, const struct kv_meta *m)
{
	return kv_redis_key(r, "v:%" PRIu64 ":%" PRIu64, m->id, m->vver);
}

/* The whole stored string m names: -ESTALE when gone, -EIO when it does not
 * have the size the record says. */
static int get_stored(struct kv_redis *r, const struct kv_meta *m, redisReply **out)
{
	struct kv_redis_conn *conn;
	char *key = value_key(r, m);
	redisReply *rep;
	int ret = 0;

	if (!key)
		return -ENOMEM;
	ret = kv_redis_get(r, &conn);
	if (ret) {
		free(key);
		return ret;
	}
	rep = redisCommand(conn->c, "GET %s", key);
	if (!rep || (rep->type != REDIS_REPLY_NIL && rep->type != REDIS_REPLY_STRING)) {
		ret = kv_redis_error(r, conn->c, rep, "read");
		kv_redis_put(r, conn, true);
		freeReplyObject(rep);
		free(key);
		return ret;
	}
	kv_redis_put(r, conn, false);
	if (rep->type == REDIS_REPLY_NIL) {
		ret = -ESTALE;
	} else if (rep->len != m->stored_size) {
		NLOG(NLOG_ERROR, "backend", "stored value has the wrong size",
		     LF_STR("server", r->where), LF_INT("id", m->id), LF_INT("vver", m->vver),
		     LF_INT("bytes", rep->len), LF_INT("want", m->stored_size));
		ret = -EIO;
	}
	free(key);
	if (ret) {
		freeReplyObject(rep);
		return ret;
	}
	*out = rep;
	return 0;
}

static int redis_read_value(struct kv_backend *b, const struct kv_meta *m, struct kv_value **out)
{
	struct kv_redis *r = (struct kv_redis *)b;
	redisReply *rep = NULL;
	int ret;

	if (!m->vver || !m->size) {
		*out = kv_value_new();
		return *out ? 0 : -ENOMEM;
	}
	ret = get_stored(r, m, &rep);
	if (ret)
		return ret;
	ret = kv_redis_decode_value(m, (const uint8_t *)rep->str, rep->len, out);
	if (ret == -EIO)
		NLOG(NLOG_ERROR, "backend", "stored value does not decode",
		     LF_STR("server", r->where), LF_INT("id", m->id), LF_INT("vver", m->vver));
	freeReplyObject(rep);
	return ret;
}

/* Plain values: STRLEN and GETRANGE in one round trip. The string never
 * changes once written, only disappears, so a short range means it went. */
static ssize_t pread_plain(struct kv_redis *r, const struct kv_meta *m, void *buf, size_t len,
			   uint64_t off)
{
	struct kv_redis_conn *conn;
	char *key = value_key(r, m), from[24], to[24];
	const char *strlen_argv[] = { "STRLEN", key };
	const char *range_argv[] = { "GETRANGE", key, from, to };
	redisReply *rep[2] = { NULL, NULL };
	ssize_t ret;
	int i;

	if (!key)
		return -ENOMEM;
	ret = kv_redis_get(r, &conn);
	if (ret) {
		free(key);
		return ret;
	}
	snprintf(from, sizeof(from), "%" PRIu64, off);
	snprintf(to, sizeof(to), "%" PRIu64, off + len - 1);
	if (redisAppendCommandArgv(conn->c, 2, strlen_argv, NULL) != REDIS_OK ||
	    redisAppendCommandArgv(conn->c, 4, range_argv, NULL) != REDIS_OK)
		goto out_err;
	for (i = 0; i < 2; i++)
		if (redisGetReply(conn->c, (void **)&rep[i]) != REDIS_OK)
			goto out_err;
	if (rep[0]->type != REDIS_REPLY_INTEGER || rep[1]->type != REDIS_REPLY_STRING) {
		ret = kv_redis_error(r, conn->c,
				     rep[0]->type != REDIS_REPLY_INTEGER ? rep[0] : rep[1], "read");
		kv_redis_put(r, conn, true);
		goto out_free;
	}
	kv_redis_put(r, conn, false);
	if (rep[0]->integer == 0) {
		ret = -ESTALE;
	} else if ((uint64_t)rep[0]->integer != m->stored_size) {
		NLOG(NLOG_ERROR, "backend", "stored value has the wrong size",
		     LF_STR("server", r->where), LF_INT("id", m->id), LF_INT("vver", m->vver),
		     LF_INT("bytes", rep[0]->integer), LF_INT("want", m->stored_size));
		ret = -EIO;
	} else if (rep[1]->len != len) {
		ret = -ESTALE;
	} else {
		memcpy(buf, rep[1]->str, len);
		ret = (ssize_t)len;
	}
	goto out_free;

out_err:
	ret = kv_redis_error(r, conn->c, NULL, "read");
	kv_redis_put(r, conn, true);
out_free:
	freeReplyObject(rep[0]);
	freeReplyObject(rep[1]);
	free(key);
	return ret;
}

static ssize_t redis_pread(struct kv_backend *b, const struct kv_meta *m, void *buf, size_t len,
			   uint64_t off)
{
	struct kv_redis *r = (struct kv_redis *)b;
	struct kv_value *v = NULL;
	ssize_t ret;

	if (!m->vver || off >= m->size || len == 0)
		return 0;
	if (len > m->size - off)
		len = (size_t)(m->size - off);
	if (len > SSIZE_MAX)
		len = SSIZE_MAX;
	if (m->encoding == KV_ENC_NONE)
		return pread_plain(r, m, buf, len, off);
	/* Compressed: decoded whole, like the filesystem backend; the store
	 * keeps an open compressed value in memory instead. */
	ret = redis_read_value(b, m, &v);
	if (ret)
		return ret;
	ret = kv_value_read(v, buf, len, off);
	kv_value_free(v);
	return ret;
}

/*
 * Redis has no disk space to report: its memory stands for it. With a
 * maxmemory limit, that is the size and what is left below it is free;
 * without one, the server machine's memory (total_system_memory) is the
 * size and what Redis has not used of it is free.
 */
static int redis_statfs(struct kv_backend *b, struct kv_backend_statfs *out)
{
	struct kv_redis *r = (struct kv_redis *)b;
	struct kv_redis_conn *conn;
	uint64_t used, total;
	redisReply *rep;
	int ret;

	ret = kv_redis_get(r, &conn);
	if (ret)
		return ret;
	rep = redisCommand(conn->c, "INFO memory");
	if (!rep || rep->type != REDIS_REPLY_STRING) {
		ret = kv_redis_error(r, conn->c, rep, "statfs");
		kv_redis_put(r, conn, true);
		freeReplyObject(rep);
		return ret;
	}
	kv_redis_put(r, conn, false);
	used = info_u64(rep->str, "used_memory");
	total = info_u64(rep->str, "maxmemory");
	if (!total)
		total = info_u64(rep->str, "total_system_memory");
	freeReplyObject(rep);
	if (total < used)
		total = used;
	out->bsize = BSIZE;
	out->blocks = total / BSIZE;
	out->bfree = (total - used) / BSIZE;
	out->bavail = out->bfree;
	return 0;
}

/* Superseded value versions a backup kept alive: one pipelined UNLINK each. */
static int redis_reclaim(struct kv_backend *b, const uint64_t (*refs)[2], size_t n)
{
	struct kv_redis *r = (struct kv_redis *)b;
	struct kv_redis_conn *conn;
	size_t sent = 0;
	int ret;

	ret = kv_redis_get(r, &conn);
	if (ret)
		return ret;
	for (; sent < n; sent++) {
		char *key = kv_redis_key(r, "v:%" PRIu64 ":%" PRIu64, refs[sent][0], refs[sent][1]);

		if (!key || redisAppendCommand(conn->c, "UNLINK %s", key) != REDIS_OK) {
			free(key);
			ret = -ENOMEM;
			break;
		}
		free(key);
	}
	for (size_t i = 0; i < sent; i++) {
		redisReply *rep = NULL;

		if (redisGetReply(conn->c, (void **)&rep) != REDIS_OK || !rep ||
		    rep->type == REDIS_REPLY_ERROR) {
			ret = kv_redis_error(r, conn->c, rep, "reclaim");
			freeReplyObject(rep);
			/* The connection is out of step with its replies now. */
			kv_redis_put(r, conn, true);
			return ret;
		}
		freeReplyObject(rep);
	}
	kv_redis_put(r, conn, ret != 0);
	return ret;
}

static const struct kv_backend_ops redis_ops = {
	.name = "redis",
	.caps = { .native_ttl = true, .shared = true },
	.close = redis_close,
	.load = redis_load,
	.commit = kv_redis_commit,
	.pread = redis_pread,
	.read_value = redis_read_value,
	.statfs = redis_statfs,
	.reclaim = redis_reclaim,
	.health = kv_redis_health,
	.changes = kv_redis_changes,
	.fetch = kv_redis_fetch,
	.reserve_ids = kv_redis_reserve_ids,
	.claim_name = kv_redis_claim_name,
	.reserve = kv_redis_reserve,
	.release = kv_redis_release,
	.lookup_name = kv_redis_lookup_name,
	.sweep = kv_redis_sweep,
	.query = kv_redis_query,
};
