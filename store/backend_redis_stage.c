/*
 * A commit's staging marker. A commit sends the writes that need no
 * decision (new value versions, the hashes of records never sent before)
 * as plain commands ahead of its script, outside any transaction, so that
 * Redis runs them while the daemon still prepares the rest of the batch.
 * Nothing refers to those keys until the script publishes them, but if the
 * script never runs (the daemon dies, the connection breaks, a write is
 * refused) they would stay in Redis for good. So before the first of them
 * the commit records what it is about to write:
 *
 *	T:up			sorted set, marker -> when it was made (ms)
 *	T:up:<marker>		string, the keys: "<id>:<vver>" for a value
 *				(T:v:<id>:<vver>), "<id>" for a record's hashes
 *				(T:r:<id>, T:i:<id>), space-separated
 *
 * with marker = "<mount id>:<n>". The script removes the marker as soon as
 * the batch is decided (backend_redis_script.c); from then on those keys
 * are its own to keep or undo. A commit that fails before its script
 * removes what it wrote at once (kv_redis_unstage); what no one removed is
 * removed by any mount's expiry sweep once the marker is an hour old
 * (KV_REDIS_LUA_UNSTAGE): by then no commit still waits to publish it.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "store/backend_redis.h"

static const char unstage_script[] =
	"local P = ARGV[1]\n"
	KV_REDIS_LUA_UNSTAGE
	"unstage(ARGV[2])\n"
	"return 1\n";

int kv_redis_stage(struct kv_redis *r, redisContext *c, const char *keys, size_t len,
		   char marker[KV_REDIS_MARKER_MAX])
{
	char *zk = kv_redis_key(r, "up"), *sk, when[24];
	struct timespec ts;
	int ret = 0;

	snprintf(marker, KV_REDIS_MARKER_MAX, "%s:%" PRIu64, r->mount_id,
		 __atomic_add_fetch(&r->stage_seq, 1, __ATOMIC_RELAXED));
	sk = kv_redis_key(r, "up:%s", marker);
	if (!zk || !sk) {
		ret = -ENOMEM;
		goto out;
	}
	clock_gettime(CLOCK_REALTIME, &ts);
	snprintf(when, sizeof(when), "%" PRId64,
		 (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000);
	{
		const char *set[] = { "SET", sk, keys };
		size_t setl[] = { 3, strlen(sk), len };
		const char *zadd[] = { "ZADD", zk, when, marker };

		/* The list first: a marker is never there without it. */
		if (redisAppendCommandArgv(c, 3, set, setl) != REDIS_OK ||
		    redisAppendCommandArgv(c, 4, zadd, NULL) != REDIS_OK) {
			ret = kv_redis_error(r, c, NULL, "commit staging");
			goto out;
		}
	}
	for (int i = 0; i < 2; i++) {
		redisReply *rep = NULL;

		if (redisGetReply(c, (void **)&rep) != REDIS_OK) {
			ret = kv_redis_error(r, c, NULL, "commit staging");
			goto out;
		}
		if (!ret && rep->type == REDIS_REPLY_ERROR)
			ret = kv_redis_error(r, c, rep, "commit staging");
		freeReplyObject(rep);
	}
out:
	free(zk);
	free(sk);
	return ret;
}

int kv_redis_unstage(struct kv_redis *r, redisContext *c, const char *marker)
{
	const char *argv[] = { "EVAL", unstage_script, "1", NULL, r->tag, marker };
	char *zk = kv_redis_key(r, "up");
	redisReply *rep;
	int ret = 0;

	if (!zk)
		return -ENOMEM;
	argv[3] = zk;
	rep = redisCommandArgv(c, 6, argv, NULL);
	if (!rep || rep->type == REDIS_REPLY_ERROR)
		ret = kv_redis_error(r, c, rep, "commit cleanup");
	freeReplyObject(rep);
	free(zk);
	return ret;
}
