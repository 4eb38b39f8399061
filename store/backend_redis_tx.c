/*
 * The Redis backend's side of a transaction's commit (spec 6a): one script
 * checks what the transaction expects of the records and names it changes
 * and, only if everything holds, reserves them for this mount in T:txl
 * (field -> "<mount id>:<owner> <deadline ms>", r<id> for a record,
 * n<parent>/<name> for a name). The commit script refuses a batch of
 * another mount that writes a reserved record or name (NADBLOCKED, -EAGAIN:
 * its flusher retries), and the claim script a claim of a reserved name, so
 * nothing another mount commits can slip in between this check and the
 * commit that carries the transaction; this mount's own commits pass. A reservation ends with release() after that commit, or at
 * its deadline if this mount dies first. Deadlines use Redis's clock
 * (TIME), which every mount shares.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/backend_redis.h"

/* Record bytes [30, 37] are atime (store/record.c), which reads change
 * without making the record another version. */
#define LUA_SAME_RECORD                                                                    \
	"local function same(m, rec)\n"                                                    \
	"  return m and #m >= 37 and string.sub(m, 1, 29) == string.sub(rec, 1, 29) and\n" \
	"         string.sub(m, 38) == string.sub(rec, 38)\n"                              \
	"end\n"

/* KEYS[1] T:txl; ARGV[1] prefix, [2] owner ("<mount id>:<n>"), [3] TTL
 * (ms), then per expectation id ('0' for a name), parent, name, record.
 * The hash expires with its last deadline, so reservations of a mount that
 * died do not outlive it. */
static const char reserve_script[] =
	"local P, owner, ttl = ARGV[1], ARGV[2], tonumber(ARGV[3])\n"
	KV_REDIS_LUA_TXL
	KV_REDIS_LUA_RECORD
	LUA_SAME_RECORD
	"local now = server_ms()\n"
	"local n, fields = (#ARGV - 3) / 4, {}\n"
	"for i = 0, n - 1 do\n"
	"  local b = 3 + i * 4\n"
	"  local id, parent, name = ARGV[b+1], ARGV[b+2], ARGV[b+3]\n"
	"  local f = id ~= '0' and 'r'..id or 'n'..parent..'/'..name\n"
	"  local v = redis.call('HGET', KEYS[1], f)\n"
	"  local bad = live(v, now) and string.match(v, '^(%S+) ') ~= owner\n"
	"  if not bad and id ~= '0' then\n"
	"    bad = not same(record(id), ARGV[b+4])\n"
	"  elseif not bad then\n"
	/* Taken, unless by a record removed since or a claim that lapsed
	 * (as the claim script sees it); or its directory is gone. */
	"    local cur = redis.call('HGET', P..'d:'..parent, name)\n"
	"    bad = (cur and (redis.call('EXISTS', P..'r:'..cur, P..'i:'..cur) > 0 or\n"
	"                    redis.call('EXISTS', P..'c:'..cur) == 1)) or\n"
	"          (parent ~= '1' and redis.call('EXISTS', P..'r:'..parent, P..'i:'..parent) == 0)\n"
	"  end\n"
	"  if bad then return redis.status_reply('NADBCONFLICT '..i) end\n"
	"  fields[#fields+1] = f\n"
	"end\n"
	"local v = owner..' '..(now + ttl)\n"
	"for _, f in ipairs(fields) do redis.call('HSET', KEYS[1], f, v) end\n"
	"if redis.call('PTTL', KEYS[1]) < ttl then redis.call('PEXPIRE', KEYS[1], ttl) end\n"
	"return redis.status_reply('OK')\n";

/* KEYS[1] T:txl; ARGV[1] owner, then the fields. */
static const char release_script[] =
	"local mine = ARGV[1]..' '\n"
	"for i = 2, #ARGV do\n"
	"  local v = redis.call('HGET', KEYS[1], ARGV[i])\n"
	"  if v and string.sub(v, 1, #mine) == mine then redis.call('HDEL', KEYS[1], ARGV[i]) end\n"
	"end\n"
	"return redis.status_reply('OK')\n";

/* Arguments per expectation of reserve_script. */
#define EXP_ARGS 4

struct exp_args {
	const char **argv;
	size_t *lens;
	char (*num)[2][24];
	char **fields;
};

static void exp_args_free(struct exp_args *a, size_t n)
{
	for (size_t i = 0; a->fields && i < n; i++)
		free(a->fields[i]);
	free(a->fields);
	free(a->argv);
	free(a->lens);
	free(a->num);
}

/* Sends script with KEYS[1] = T:txl, the header hdr[0..nhdr) and, per
 * expectation, its EXP_ARGS arguments (full) or its field (!full). */
static int run(struct kv_redis *r, const char *script, const char *const *hdr, int nhdr,
	       const struct kv_expect *e, size_t n, bool full, redisReply **out)
{
	struct kv_redis_conn *conn;
	struct exp_args a = { 0 };
	size_t argc = 4 + (size_t)nhdr + n * (full ? EXP_ARGS : 1), k = 0;
	char *key = kv_redis_key(r, "txl");
	int ret = -ENOMEM;

	a.argv = calloc(argc, sizeof(*a.argv));
	a.lens = calloc(argc, sizeof(*a.lens));
	a.num = calloc(n ? n : 1, sizeof(*a.num));
	a.fields = calloc(n ? n : 1, sizeof(*a.fields));
	if (!key || !a.argv || !a.lens || !a.num || !a.fields || argc > INT32_MAX)
		goto out;
	a.argv[k++] = "EVAL";
	a.argv[k++] = script;
	a.argv[k++] = "1";
	a.argv[k++] = key;
	for (int i = 0; i < nhdr; i++)
		a.argv[k++] = hdr[i];
	for (size_t i = 0; i < k; i++)
		a.lens[i] = strlen(a.argv[i]);
	for (size_t i = 0; i < n; i++) {
		snprintf(a.num[i][0], sizeof(a.num[i][0]), "%" PRIu64, e[i].id);
		snprintf(a.num[i][1], sizeof(a.num[i][1]), "%" PRIu64, e[i].parent);
		if (!full) {
			size_t len = 2 + 24 + (e[i].id ? 0 : strlen(e[i].name) + 1);

			a.fields[i] = malloc(len);
			if (!a.fields[i])
				goto out;
			if (e[i].id)
				snprintf(a.fields[i], len, "r%s", a.num[i][0]);
			else
				snprintf(a.fields[i], len, "n%s/%s", a.num[i][1], e[i].name);
			a.argv[k] = a.fields[i];
			a.lens[k] = strlen(a.fields[i]);
			k++;
			continue;
		}
		a.argv[k] = a.num[i][0];
		a.lens[k] = strlen(a.num[i][0]);
		k++;
		a.argv[k] = a.num[i][1];
		a.lens[k] = strlen(a.num[i][1]);
		k++;
		a.argv[k] = e[i].id ? "" : e[i].name;
		a.lens[k] = strlen(a.argv[k]);
		k++;
		a.argv[k] = e[i].id ? (const char *)e[i].rec : "";
		a.lens[k] = e[i].id ? e[i].reclen : 0;
		k++;
	}
	ret = kv_redis_get(r, &conn);
	if (ret)
		goto out;
	*out = redisCommandArgv(conn->c, (int)k, a.argv, a.lens);
	if (!*out || (*out)->type != REDIS_REPLY_STATUS) {
		ret = kv_redis_error(r, conn->c, *out, full ? "transaction check" :
							      "transaction release");
		kv_redis_put(r, conn, !*out || (*out)->type != REDIS_REPLY_ERROR);
		freeReplyObject(*out);
		*out = NULL;
		goto out;
	}
	kv_redis_put(r, conn, false);
	kv_redis_ok(r);
	ret = 0;
out:
	exp_args_free(&a, n);
	free(key);
	return ret;
}

/* "<mount id>:<owner>" into buf (64 bytes). */
static void owner_str(const struct kv_redis *r, uint64_t owner, char *buf)
{
	snprintf(buf, 64, "%s:%" PRIu64, r->mount_id, owner);
}

int kv_redis_reserve(struct kv_backend *b, const struct kv_expect *e, size_t n, uint64_t owner,
		     int64_t ttl_ms, size_t *bad)
{
	struct kv_redis *r = (struct kv_redis *)b;
	char ttl[24], who[64];
	const char *hdr[] = { r->tag, who, ttl };
	redisReply *rep = NULL;
	int ret;

	if (n == 0)
		return 0;
	for (size_t i = 0; i < n; i++)
		if (e[i].id ? !e[i].rec : !e[i].name)
			return -EINVAL;
	snprintf(ttl, sizeof(ttl), "%" PRId64, ttl_ms > 0 ? ttl_ms : 1);
	owner_str(r, owner, who);
	ret = run(r, reserve_script, hdr, 3, e, n, true, &rep);
	if (ret)
		return ret;
	/* A status reply, so that no error path of the connection sees it. */
	if (!strncmp(rep->str, "NADBCONFLICT ", 13)) {
		*bad = strtoull(rep->str + 13, NULL, 10);
		ret = *bad < n ? -ESTALE : -EIO;
	}
	freeReplyObject(rep);
	return ret;
}

int kv_redis_release(struct kv_backend *b, const struct kv_expect *e, size_t n, uint64_t owner)
{
	struct kv_redis *r = (struct kv_redis *)b;
	char who[64];
	const char *hdr[] = { who };
	redisReply *rep = NULL;
	int ret;

	if (n == 0)
		return 0;
	owner_str(r, owner, who);
	ret = run(r, release_script, hdr, 1, e, n, false, &rep);
	freeReplyObject(rep);
	return ret;
}
