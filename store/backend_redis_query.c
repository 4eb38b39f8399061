/*
 * Tag listings and queries evaluated by Redis on the tag sets the commit
 * script maintains (T:t:<tag>, one set of record ids per tag): a single tag
 * is read with SSCAN in pages, so a huge set never becomes one huge reply
 * that blocks the server; any other expression runs as one script, so the
 * whole evaluation is one round trip and sees one state of the store.
 *
 * The script is given the expression as the store parsed it (DNF, see
 * struct kv_query_expr): each AND-term is SINTERSTOREd into a temporary key
 * and its negated tags are taken away with SDIFFSTORE; the terms are joined
 * with SUNION. The temporary keys live inside the store's hash tag (so the
 * script stays in one cluster slot) and are deleted by the same script, so
 * no other client ever sees them. Every key the script touches is passed in
 * KEYS, as Redis Cluster wants.
 *
 * The answer knows only what is committed: the store corrects it with its
 * unflushed changes (tag_query.c).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/backend_redis.h"

/* Members asked for per SSCAN step. */
#define SCAN_COUNT "1000"

/*
 * KEYS[1..nf]: the factors' tag sets, in order; KEYS[nf+1..nf+nterms]: one
 * temporary key per term. ARGV[1] nf, [2] nterms, [2+i] '+' or '-' for
 * factor i, [2+nf+t] the end of term t (its last factor's index).
 * A term with one positive tag and nothing else needs no temporary key.
 */
static const char query_script[] =
	"local nf, nt = tonumber(ARGV[1]), tonumber(ARGV[2])\n"
	"local sets, tmps, first = {}, {}, 1\n"
	"for t = 1, nt do\n"
	"  local last = tonumber(ARGV[2 + nf + t])\n"
	"  local pos, neg = {}, {}\n"
	"  for i = first, last do\n"
	"    if ARGV[2 + i] == '-' then neg[#neg + 1] = KEYS[i] else pos[#pos + 1] = KEYS[i] end\n"
	"  end\n"
	"  if #pos == 1 and #neg == 0 then\n"
	"    sets[#sets + 1] = pos[1]\n"
	"  else\n"
	"    local tmp = KEYS[nf + t]\n"
	"    redis.call('SINTERSTORE', tmp, unpack(pos))\n"
	"    if #neg > 0 then redis.call('SDIFFSTORE', tmp, tmp, unpack(neg)) end\n"
	"    sets[#sets + 1] = tmp\n"
	"    tmps[#tmps + 1] = tmp\n"
	"  end\n"
	"  first = last + 1\n"
	"end\n"
	"local out = redis.call('SUNION', unpack(sets))\n"
	"if #tmps > 0 then redis.call('DEL', unpack(tmps)) end\n"
	"return out\n";

struct idvec {
	uint64_t *v;
	size_t n, cap;
};

/* Appends the decimal ids of an array reply; anything else in it is a
 * reply this code does not understand: -EIO. */
static int add_members(struct idvec *out, const redisReply *arr)
{
	if (arr->type != REDIS_REPLY_ARRAY)
		return -EIO;
	if (out->n + arr->elements > out->cap) {
		size_t cap = out->cap ? out->cap : 64;
		uint64_t *v;

		while (cap < out->n + arr->elements)
			cap *= 2;
		v = realloc(out->v, cap * sizeof(*v));
		if (!v)
			return -ENOMEM;
		out->v = v;
		out->cap = cap;
	}
	for (size_t i = 0; i < arr->elements; i++) {
		const redisReply *e = arr->element[i];
		char *end;

		if (e->type != REDIS_REPLY_STRING || e->len == 0 || e->len > 20)
			return -EIO;
		out->v[out->n++] = strtoull(e->str, &end, 10);
		if (end != e->str + e->len)
			return -EIO;
	}
	return 0;
}

/* One tag: SSCAN pages until the cursor comes back to 0. */
static int scan_tag(struct kv_redis *r, redisContext *c, const char *tag, struct idvec *out)
{
	char *key = kv_redis_key(r, "t:%s", tag), cursor[24] = "0";
	int ret = 0;

	if (!key)
		return -ENOMEM;
	do {
		const char *argv[] = { "SSCAN", key, cursor, "COUNT", SCAN_COUNT };
		redisReply *rep = redisCommandArgv(c, 5, argv, NULL);

		if (!rep || rep->type != REDIS_REPLY_ARRAY || rep->elements != 2 ||
		    rep->element[0]->type != REDIS_REPLY_STRING ||
		    rep->element[0]->len >= sizeof(cursor)) {
			ret = kv_redis_error(r, c, rep, "query");
			freeReplyObject(rep);
			/* Tell a reply we could not read from a broken link. */
			ret = ret ? ret : -EIO;
			break;
		}
		memcpy(cursor, rep->element[0]->str, rep->element[0]->len);
		cursor[rep->element[0]->len] = '\0';
		ret = add_members(out, rep->element[1]);
		freeReplyObject(rep);
	} while (!ret && strcmp(cursor, "0") != 0);
	free(key);
	return ret;
}

/* Anything else: the script, one round trip. */
static int run_script(struct kv_redis *r, redisContext *c, const struct kv_query_expr *e,
		      struct idvec *out)
{
	/* EVAL, script, numkeys, keys (nf + nterms), nf, nterms, signs, ends. */
	size_t nkeys = e->nf + e->nterms, argc = 3 + nkeys + 2 + e->nf + e->nterms;
	const char **argv = calloc(argc, sizeof(*argv));
	char **own = calloc(nkeys + 3 + e->nterms, sizeof(*own));
	size_t a = 0, o = 0;
	redisReply *rep;
	int ret = -ENOMEM;

	if (!argv || !own)
		goto out_free;
	argv[a++] = "EVAL";
	argv[a++] = query_script;
	if (asprintf(&own[o], "%zu", nkeys) < 0)
		goto out_free;
	argv[a++] = own[o++];
	for (size_t i = 0; i < e->nf; i++) {
		if (!(own[o] = kv_redis_key(r, "t:%s", e->f[i].tag)))
			goto out_free;
		argv[a++] = own[o++];
	}
	/* Inside the hash tag, and named so that no record key can be it. */
	for (size_t t = 0; t < e->nterms; t++) {
		if (!(own[o] = kv_redis_key(r, "qtmp:%zu", t)))
			goto out_free;
		argv[a++] = own[o++];
	}
	if (asprintf(&own[o], "%zu", e->nf) < 0)
		goto out_free;
	argv[a++] = own[o++];
	if (asprintf(&own[o], "%zu", e->nterms) < 0)
		goto out_free;
	argv[a++] = own[o++];
	for (size_t i = 0; i < e->nf; i++)
		argv[a++] = e->f[i].neg ? "-" : "+";
	for (size_t t = 0; t < e->nterms; t++) {
		/* Lua counts from 1: the end index is the last factor's. */
		if (asprintf(&own[o], "%zu", e->term_end[t]) < 0)
			goto out_free;
		argv[a++] = own[o++];
	}
	rep = redisCommandArgv(c, (int)a, argv, NULL);
	if (!rep || rep->type != REDIS_REPLY_ARRAY) {
		ret = kv_redis_error(r, c, rep, "query");
		ret = ret ? ret : -EIO;
	} else {
		ret = add_members(out, rep);
	}
	freeReplyObject(rep);
out_free:
	for (size_t i = 0; own && i < o; i++)
		free(own[i]);
	free(own);
	free(argv);
	return ret;
}

int kv_redis_query(struct kv_backend *b, const struct kv_query_expr *e, uint64_t **ids, size_t *n)
{
	struct kv_redis *r = (struct kv_redis *)b;
	struct kv_redis_conn *conn;
	struct idvec out = { 0 };
	int ret;

	if (!e->nf || !e->nterms)
		return -EINVAL;
	ret = kv_redis_get(r, &conn);
	if (ret)
		return ret;
	if (e->nf == 1 && !e->f[0].neg)
		ret = scan_tag(r, conn->c, e->f[0].tag, &out);
	else
		ret = run_script(r, conn->c, e, &out);
	/* Our own -ENOMEM leaves the link usable; hiredis's (c->err set,
	 * REDIS_ERR_OOM) does not, nor does any other error. */
	kv_redis_put(r, conn, !conn->c || conn->c->err || (ret && ret != -ENOMEM));
	if (ret) {
		free(out.v);
		return ret;
	}
	kv_redis_ok(r);
	*ids = out.v;
	*n = out.n;
	return 0;
}
