/*
 * The version of a store's Redis layout, T:fmt, checked at every open.
 *
 * Version 2 (2026-11-25) keeps a record as a string, T:r:<id> = the
 * record. Version 1, which has no T:fmt, kept it as a hash: field m the
 * record, and p, n, t, v its index, which the record holds anyway. The
 * hash cost Redis three times the time and memory of the string (see
 * send_plain in backend_redis_commit.c). A version 1 store is converted
 * at its first open by this version, in steps of LOAD_STEP records, each
 * one script (so no client sees a record half converted), before anything
 * else reads it; then T:fmt is set. The conversion is idempotent: mounts
 * opening the store at once may both run it, and one interrupted is run
 * again by the next open. A mount of the old version still running writes
 * hashes for the records it creates: whatever reads a record takes a hash
 * for what it is (the scripts read field m: KV_REDIS_LUA_RECORD; load and
 * fetch convert it on sight, kv_redis_convert_ids), and the next rewrite
 * makes it a string. That mount's own rewrites fail (WRONGTYPE).
 *
 * A layout this code does not know is refused, with a message, at open
 * and by every commit script: a mount of this version still running when
 * a newer one converts the store stops writing to it.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/backend_redis.h"
#include "util/log.h"

#define LAYOUT "2"
#define LOAD_STEP 1000

/*
 * KEYS[1] T:ids; ARGV[1] the key prefix, then record ids, or '' alone for
 * the records that staging markers list (written ahead of a script that
 * has not run yet, so in no T:ids). Returns how many were converted. A
 * hash without a record is deleted: nothing can read it.
 */
static const char convert_script[] =
	"local P, n = ARGV[1], 0\n"
	"local function conv(x)\n"
	"  local k = P..'r:'..x\n"
	"  if redis.call('TYPE', k).ok ~= 'hash' then return end\n"
	"  local m, ttl = redis.call('HGET', k, 'm'), redis.call('PTTL', k)\n"
	"  redis.call('DEL', k)\n"
	"  if m then\n"
	"    redis.call('SET', k, m)\n"
	"    if ttl > 0 then redis.call('PEXPIRE', k, ttl) end\n"
	"  end\n"
	"  n = n + 1\n"
	"end\n"
	"if ARGV[2] == '' then\n"
	"  for _, mk in ipairs(redis.call('ZRANGE', P..'up', 0, -1)) do\n"
	"    for x in string.gmatch(redis.call('GET', P..'up:'..mk) or '', '%S+') do\n"
	"      if not string.find(x, ':', 1, true) then conv(x) end\n"
	"    end\n"
	"  end\n"
	"else\n"
	"  for i = 2, #ARGV do conv(ARGV[i]) end\n"
	"end\n"
	"return n\n";

/* Runs the conversion on argv[4..argc) (ids, or '' for the markers'):
 * adds the count to *n; 0 or a negative errno, with the reason in err. */
static int convert(struct kv_redis *r, redisContext *c, const char **argv, size_t argc,
		   long long *n, char *err, size_t errlen)
{
	redisReply *rep = redisCommandArgv(c, (int)argc, argv, NULL);
	int ret = 0;

	if (!rep || rep->type != REDIS_REPLY_INTEGER) {
		snprintf(err, errlen, "redis %s: cannot convert the store to layout " LAYOUT ": %s",
			 r->where, rep && rep->type == REDIS_REPLY_ERROR ? rep->str
			 : c->errstr[0] ? c->errstr : "unexpected reply");
		ret = kv_redis_error(r, c, rep, "layout conversion");
	} else {
		*n += rep->integer;
	}
	freeReplyObject(rep);
	return ret;
}

/* Every listed record, then the markers' ones. */
static int convert_all(struct kv_redis *r, redisContext *c, const char *idskey, long long *n,
		       char *err, size_t errlen)
{
	const char **argv = malloc((LOAD_STEP + 6) * sizeof(*argv));
	char cursor[32] = "0";
	redisReply *rep = NULL;
	int ret = 0;

	if (!argv)
		return -ENOMEM;
	argv[0] = "EVAL";
	argv[1] = convert_script;
	argv[2] = "1";
	argv[3] = idskey;
	argv[4] = r->tag;
	do {
		redisReply *list;
		size_t k = 5;

		rep = redisCommand(c, "SSCAN %s %s COUNT %d", idskey, cursor, LOAD_STEP);
		if (!rep || rep->type != REDIS_REPLY_ARRAY || rep->elements != 2 ||
		    rep->element[0]->type != REDIS_REPLY_STRING ||
		    rep->element[1]->type != REDIS_REPLY_ARRAY ||
		    rep->element[0]->len >= sizeof(cursor)) {
			snprintf(err, errlen, "redis %s: cannot list the store's records: %s",
				 r->where, rep && rep->type == REDIS_REPLY_ERROR ? rep->str
				 : c->errstr[0] ? c->errstr : "unexpected reply");
			ret = kv_redis_error(r, c, rep, "layout conversion");
			freeReplyObject(rep);
			break;
		}
		memcpy(cursor, rep->element[0]->str, rep->element[0]->len);
		cursor[rep->element[0]->len] = '\0';
		list = rep->element[1];
		/* COUNT is a hint: a step may return more; taken in slices. */
		for (size_t i = 0; i < list->elements && !ret; i++) {
			if (list->element[i]->type == REDIS_REPLY_STRING)
				argv[k++] = list->element[i]->str;
			if (k == LOAD_STEP + 5 || (i + 1 == list->elements && k > 5)) {
				ret = convert(r, c, argv, k, n, err, errlen);
				k = 5;
			}
		}
		freeReplyObject(rep);
		rep = NULL;
	} while (!ret && strcmp(cursor, "0"));
	if (!ret) {
		argv[5] = "";
		ret = convert(r, c, argv, 6, n, err, errlen);
	}
	free(argv);
	return ret;
}

int kv_redis_convert_ids(struct kv_redis *r, redisContext *c, const uint64_t *ids, size_t n)
{
	const char **argv = malloc((n + 5) * sizeof(*argv));
	char (*num)[24] = malloc(n * sizeof(*num));
	char *idskey = kv_redis_key(r, "ids"), err[256];
	long long done = 0;
	int ret = -ENOMEM;

	if (argv && num && idskey) {
		argv[0] = "EVAL";
		argv[1] = convert_script;
		argv[2] = "1";
		argv[3] = idskey;
		argv[4] = r->tag;
		for (size_t i = 0; i < n; i++) {
			snprintf(num[i], sizeof(num[i]), "%" PRIu64, ids[i]);
			argv[5 + i] = num[i];
		}
		ret = convert(r, c, argv, n + 5, &done, err, sizeof(err));
	}
	if (!ret && done)
		NLOG(NLOG_WARN, "backend",
		     "converted records an older nadbfs wrote after the store's conversion",
		     LF_STR("server", r->where), LF_INT("records", done));
	free(argv);
	free(num);
	free(idskey);
	return ret;
}

int kv_redis_format(struct kv_redis *r, redisContext *c, char *err, size_t errlen)
{
	char *fk = kv_redis_key(r, "fmt"), *idskey = kv_redis_key(r, "ids");
	redisReply *rep = NULL;
	long long n = 0;
	int ret = -ENOMEM;

	if (!fk || !idskey)
		goto out;
	rep = redisCommand(c, "GET %s", fk);
	if (!rep || (rep->type != REDIS_REPLY_NIL && rep->type != REDIS_REPLY_STRING)) {
		snprintf(err, errlen, "redis %s: cannot read the store's layout version: %s",
			 r->where, rep && rep->type == REDIS_REPLY_ERROR ? rep->str
			 : c->errstr[0] ? c->errstr : "unexpected reply");
		ret = kv_redis_error(r, c, rep, "layout check");
		goto out;
	}
	if (rep->type == REDIS_REPLY_STRING) {
		ret = 0;
		if (strcmp(rep->str, LAYOUT)) {
			/* The tag without the ':' that ends the prefix. */
			snprintf(err, errlen,
				 "redis %s: the store %.*s has layout version %.16s, which this "
				 "nadbfs does not know (it reads version " LAYOUT ")%s",
				 r->where, (int)(strlen(r->tag) - 1), r->tag, rep->str,
				 strtol(rep->str, NULL, 10) > 2 ? ": written by a newer nadbfs?"
								 : "");
			ret = -EPROTO;
		}
		goto out;
	}
	ret = convert_all(r, c, idskey, &n, err, errlen);
	if (ret)
		goto out;
	freeReplyObject(rep);
	rep = redisCommand(c, "SET %s %s", fk, LAYOUT);
	if (!rep || rep->type == REDIS_REPLY_ERROR) {
		snprintf(err, errlen, "redis %s: cannot record the store's layout version: %s",
			 r->where, rep && rep->type == REDIS_REPLY_ERROR ? rep->str
			 : c->errstr[0] ? c->errstr : "unexpected reply");
		ret = kv_redis_error(r, c, rep, "layout check");
		goto out;
	}
	if (n)
		NLOG(NLOG_INFO, "backend", "converted the store's records to layout " LAYOUT,
		     LF_STR("server", r->where), LF_INT("records", n));
out:
	freeReplyObject(rep);
	free(fk);
	free(idskey);
	return ret;
}
