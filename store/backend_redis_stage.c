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
 *	T:up			sorted set, marker -> when it was made (ms, on
 *				the server's clock)
 *	T:up:<marker>		string, the keys: "<id>:<vver>" for a value
 *				(T:v:<id>:<vver>), "<id>" for a record's hashes
 *				(T:r:<id>, T:i:<id>), space-separated
 *
 * with marker = "<mount id>:<n>". The script removes the marker as soon as
 * the batch is decided (backend_redis_script.c); from then on those keys
 * are its own to keep or undo. A commit that fails before its script
 * removes what it wrote at once (kv_redis_unstage); what no one removed is
 * removed by any mount's expiry sweep once the marker is an hour old
 * (KV_REDIS_LUA_UNSTAGE): by then no commit still waits to publish it, and
 * one that does finds its marker gone and publishes nothing (the script
 * refuses the batch).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/backend_redis.h"

/* KEYS[1] T:up, KEYS[2] T:up:<marker>; ARGV[1] the list, [2] the marker.
 * Dated by the server's clock, which the sweep reads too: the mounts'
 * clocks may disagree by more than the hour a marker is given. */
static const char stage_script[] =
	"local t = redis.call('TIME')\n"
	"redis.call('SET', KEYS[2], ARGV[1])\n"
	"redis.call('ZADD', KEYS[1], tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000), ARGV[2])\n"
	"return 1\n";

static const char unstage_script[] =
	"local P = ARGV[1]\n"
	KV_REDIS_LUA_UNSTAGE
	"unstage(ARGV[2])\n"
	"return 1\n";

int kv_redis_stage(struct kv_redis *r, redisContext *c, const char *keys, size_t len,
		   char marker[KV_REDIS_MARKER_MAX])
{
	char *zk = kv_redis_key(r, "up"), *sk;
	int ret = 0;

	snprintf(marker, KV_REDIS_MARKER_MAX, "%s:%" PRIu64, r->mount_id,
		 __atomic_add_fetch(&r->stage_seq, 1, __ATOMIC_RELAXED));
	sk = kv_redis_key(r, "up:%s", marker);
	if (!zk || !sk) {
		ret = -ENOMEM;
		goto out;
	}
	{
		const char *argv[] = { "EVAL", stage_script, "2", zk, sk, keys, marker };
		size_t lens[] = { 4, strlen(stage_script), 1, strlen(zk), strlen(sk), len,
				  strlen(marker) };
		redisReply *rep = redisCommandArgv(c, 7, argv, lens);

		if (!rep || rep->type == REDIS_REPLY_ERROR)
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
