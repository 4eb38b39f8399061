/*
 * The Redis backend's layout version (store/backend_redis_format.c): records
 * are strings whose index the scripts decode, a store of the older layout
 * (records as hashes) is converted at open, and a newer layout is refused.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cmocka.h>
#include <hiredis/hiredis.h>

#include "store/backend.h"
#include "tests/test_backend_redis.h"

#define T "{nadb:default:default}:"

/* A command with binary arguments (%b), which redis-cli cannot pass:
 * straight through hiredis; the reply's type. */
static int raw(const char *fmt, ...)
{
	redisContext *c = redisConnectUnix(srv.sock);
	redisReply *rep;
	va_list ap;
	int type;

	assert_non_null(c);
	assert_int_equal(c->err, 0);
	va_start(ap, fmt);
	rep = redisvCommand(c, fmt, ap);
	va_end(ap);
	assert_non_null(rep);
	if (rep->type == REDIS_REPLY_ERROR)
		fail_msg("%s: %s", fmt, rep->str);
	type = rep->type;
	freeReplyObject(rep);
	redisFree(c);
	return type;
}

/* The record of a plain file, as kv_meta_encode writes it. */
static uint8_t *record(uint64_t id, uint64_t parent, const char *name, char **tags,
		       uint32_t ntags, uint64_t vver, size_t *len)
{
	struct kv_meta m = { .id = id, .parent = parent, .name = (char *)name,
			     .mode = S_IFREG | 0644, .tags = tags, .ntags = ntags,
			     .vver = vver, .size = vver ? 1 : 0, .stored_size = vver ? 1 : 0 };
	uint8_t *buf = NULL;
	size_t cap = 0;

	*len = 0;
	assert_int_equal(kv_meta_encode(&m, &buf, len, &cap), 0);
	return buf;
}

/* A PUT of plain file id in the root, named name, with tags. */
static struct kv_op put_op(uint64_t id, const char *name, char **tags, uint32_t ntags)
{
	struct kv_op op;

	memset(&op, 0, sizeof(op));
	op.type = KV_OP_PUT;
	op.meta.id = id;
	op.meta.parent = KV_ROOT_ID;
	op.meta.name = (char *)name;
	op.meta.mode = S_IFREG | 0644;
	op.meta.tags = tags;
	op.meta.ntags = ntags;
	return op;
}

/* Makes record id a hash as layout 1 kept it (m and its index p, n, t, v),
 * keeping its expiry. */
static void to_layout_1(uint64_t id, const char *name, const char *tags)
{
	char key[64], vver[24];
	long long ttl;
	uint8_t *rec;
	size_t len;
	char *tagv[1] = { (char *)tags };
	uint64_t v;

	snprintf(key, sizeof(key), T "r:%llu", (unsigned long long)id);
	ttl = cli_int("PTTL %s", key);
	/* The value version, from the record this test's commit wrote. */
	{
		redisContext *c = redisConnectUnix(srv.sock);
		redisReply *rep = redisCommand(c, "GET %s", key);

		assert_non_null(rep);
		assert_int_equal(rep->type, REDIS_REPLY_STRING);
		assert_true(rep->len >= 85);
		v = 0;
		for (int i = 7; i >= 0; i--)
			v = v << 8 | (uint8_t)rep->str[77 + i];
		freeReplyObject(rep);
		redisFree(c);
	}
	snprintf(vver, sizeof(vver), "%llu", (unsigned long long)v);
	rec = record(id, KV_ROOT_ID, name, tagv, tags[0] ? 1 : 0, v, &len);
	raw("DEL %s", key);
	raw("HSET %s m %b p 1 n %s t %s v %s", key, rec, len, name, tags, vver);
	if (ttl > 0)
		raw("PEXPIRE %s %lld", key, ttl);
	free(rec);
}

/* A new store is of layout 2; its records are strings, decoded exactly by
 * the scripts even with ids past 2^53 (where a Lua number is no longer an
 * exact integer): a move out of such a directory leaves no entry behind. */
void test_records_are_strings(void **state)
{
	const uint64_t big = (1ull << 60) + 3;
	char dk[64];
	struct kv_backend *b;
	uint64_t vver = 0;

	(void)state;
	b = xload(NULL);
	assert_cli("GET %s", T "fmt", "2");
	assert_int_equal(put_key(b, 5, big, "a", "red", 0, "v1", &vver), 0);
	assert_cli("TYPE %s", T "r:5", "string");
	snprintf(dk, sizeof(dk), T "d:%llu", (unsigned long long)big);
	assert_cli("HGET %s a", dk, "5");
	assert_int_equal(put_key(b, 5, KV_ROOT_ID, "b", "blue", 0, "v2", &vver), 0);
	assert_cli("EXISTS %s", dk, "0");
	assert_cli("EXISTS %s", T "t:red", "0");
	assert_cli("HGET " T "d:1 %s", "b", "5");
	assert_cli("SMEMBERS %s", T "t:blue", "5");
	assert_int_equal(del_key(b, 5, vver), 0);
	assert_cli("EXISTS %s", T "d:1", "0");
	assert_cli("EXISTS %s", T "t:blue", "0");
	kv_backend_close(b);
}

/*
 * A record whose first commit failed after its plain writes (the record is
 * there, the script's work is not: no entry, no tags, not in T:ids) is
 * completed by the retry, which the store marks uncertain ('U'), instead of
 * being taken as known with its tags already indexed.
 */
void test_uncertain_put_completes(void **state)
{
	char *tags[] = { "t1" };
	struct kv_op op;
	struct kv_backend *b;
	uint8_t *rec;
	size_t len;

	(void)state;
	b = xload(NULL);
	rec = record(50, KV_ROOT_ID, "half", tags, 1, 0, &len);
	raw("SET " T "r:50 %b", rec, len);
	free(rec);
	op = put_op(50, "half", tags, 1);
	op.uncertain = true;
	assert_int_equal(b->ops->commit(b, &op, 1), 0);
	assert_cli("HGET " T "d:1 %s", "half", "50");
	assert_cli("SISMEMBER " T "t:t1 %s", "50", "1");
	assert_cli("SISMEMBER " T "ids %s", "50", "1");
	kv_backend_close(b);
}

/*
 * A store of layout 1 (no T:fmt, records as hashes holding their index) is
 * converted at open: records become strings with their expiry kept, the
 * staged ones too, and the indexes follow a rename, a retag and a delete
 * as before.
 */
void test_layout_1_converted(void **state)
{
	struct kv_backend *b;
	uint64_t v60 = 0, v61 = 0;
	size_t n = 0, len;
	uint8_t *rec;

	(void)state;
	b = xload(NULL);
	assert_int_equal(put_key(b, 60, KV_ROOT_ID, "old", "red", 0, "v", &v60), 0);
	assert_int_equal(put_key(b, 61, KV_ROOT_ID, "ttl", "", wall_ms() + 600000, "w", &v61), 0);
	kv_backend_close(b);
	to_layout_1(60, "old", "red");
	to_layout_1(61, "ttl", "");
	/* A record staged by a commit whose script never ran. */
	rec = record(62, KV_ROOT_ID, "staged", NULL, 0, 0, &len);
	raw("HSET " T "r:62 m %b p 1 n staged t %s v 0", rec, len, "");
	free(rec);
	raw("SET " T "up:x:1 %s", "62");
	raw("ZADD " T "up %s x:1", "1");
	raw("DEL %s", T "fmt");
	assert_cli("TYPE %s", T "r:61", "hash");

	b = xload(&n);
	assert_int_equal(n, 2);
	assert_cli("GET %s", T "fmt", "2");
	assert_cli("TYPE %s", T "r:60", "string");
	assert_cli("TYPE %s", T "r:61", "string");
	assert_cli("TYPE %s", T "r:62", "string");
	assert_true(cli_int("PTTL %s", T "r:61") > 500000);
	assert_int_equal(cli_int("PTTL %s", T "r:60"), -1);

	assert_int_equal(put_key(b, 60, KV_ROOT_ID, "renamed", "blue", 0, NULL, &v60), 0);
	assert_cli("HGET " T "d:1 %s", "old", "");
	assert_cli("HGET " T "d:1 %s", "renamed", "60");
	assert_cli("EXISTS %s", T "t:red", "0");
	assert_cli("SMEMBERS %s", T "t:blue", "60");
	assert_int_equal(del_key(b, 61, v61), 0);
	assert_cli("HGET " T "d:1 %s", "ttl", "");
	assert_cli("EXISTS " T "r:61 %s", T "i:61", "0");
	kv_backend_close(b);

	/* Converted once: a second open finds layout 2 and changes nothing. */
	b = xload(&n);
	assert_int_equal(n, 1);
	assert_cli("TYPE %s", T "r:60", "string");
	kv_backend_close(b);
}

/* A layout newer than this code knows is refused at open, untouched. */
void test_newer_layout_refused(void **state)
{
	struct kv_backend *b = NULL;

	(void)state;
	b = xload(NULL);
	assert_int_equal(put_key(b, 70, KV_ROOT_ID, "k", "", 0, "v", NULL), 0);
	kv_backend_close(b);
	raw("SET %s 3", T "fmt");
	b = NULL;
	assert_int_equal(redis_open_err(&b, "has layout version 3, which this nadbfs does not know"),
			 -EPROTO);
	assert_null(b);
	assert_cli("GET %s", T "fmt", "3");
	assert_cli("TYPE %s", T "r:70", "string");
}

/* Layout-1 hash record id (name "s<id>" in the root, value version vver)
 * with its entry, membership and value, as an older nadbfs writes them. */
static void stray_record(uint64_t id, uint64_t vver)
{
	char name[24];
	uint8_t *rec;
	size_t len;

	snprintf(name, sizeof(name), "s%llu", (unsigned long long)id);
	rec = record(id, KV_ROOT_ID, name, NULL, 0, vver, &len);
	raw("HSET " T "r:%llu m %b p 1 n %s t %s v %llu", (unsigned long long)id, rec, len, name,
	    "", (unsigned long long)vver);
	raw("HSET " T "d:1 %s %llu", name, (unsigned long long)id);
	raw("SADD " T "ids %llu", (unsigned long long)id);
	raw("SET " T "v:%llu:%llu x", (unsigned long long)id, (unsigned long long)vver);
	free(rec);
}

/*
 * An older nadbfs still running after the conversion writes the records it
 * creates as hashes: a load and a fetch read them (and convert them), and
 * a commit that rewrites or moves one reads its index from the hash.
 */
void test_stray_hash_records_read(void **state)
{
	struct kv_change ch;
	struct kv_backend *b;
	uint64_t id = 81, vver = 7;
	size_t n = 0;

	(void)state;
	b = xload(NULL);
	kv_backend_close(b);
	stray_record(80, 5);
	stray_record(81, 6);
	stray_record(82, 7);
	b = xload(&n);
	assert_int_equal(n, 3);
	assert_cli("TYPE %s", T "r:80", "string");
	assert_cli("TYPE %s", T "r:81", "string");

	raw("DEL " T "r:81");
	stray_record(81, 6);
	assert_int_equal(b->ops->fetch(b, &id, 1, &ch), 0);
	assert_false(ch.gone);
	assert_string_equal(ch.meta.name, "s81");
	kv_changes_clear(&ch, 1);
	assert_cli("TYPE %s", T "r:81", "string");

	raw("DEL " T "r:82");
	stray_record(82, 7);
	assert_int_equal(put_key(b, 82, KV_ROOT_ID, "moved", "", 0, "v2", &vver), 0);
	assert_cli("HGET " T "d:1 %s", "s82", "");
	assert_cli("HGET " T "d:1 %s", "moved", "82");
	assert_cli("EXISTS %s", T "v:82:7", "0");
	assert_cli("TYPE %s", T "r:82", "string");
	kv_backend_close(b);
}

/* A commit finds the store converted to a layout it does not know (a newer
 * nadbfs did it meanwhile): it writes nothing. */
void test_commit_refused_on_newer_layout(void **state)
{
	struct kv_backend *b;

	(void)state;
	b = xload(NULL);
	raw("SET %s 3", T "fmt");
	assert_true(put_key(b, 85, KV_ROOT_ID, "late", "", 0, "v", NULL) < 0);
	assert_cli("EXISTS %s", T "r:85", "0");
	assert_cli("HGET " T "d:1 %s", "late", "");
	assert_cli("SISMEMBER " T "ids %s", "85", "0");
	kv_backend_close(b);
}

/* The value version the script decodes from the record is the one it
 * deletes when the record is rewritten, whatever version the store
 * believes it superseded; and a record of more than 255 tags is unindexed
 * from every one (their count is a u16). */
void test_index_decoded_exactly(void **state)
{
	char *tags[300], vkey[64], tk[64];
	struct kv_value *v;
	struct kv_op op;
	struct kv_backend *b;
	uint64_t vver = 0;

	(void)state;
	b = xload(NULL);
	assert_int_equal(put_key(b, 90, KV_ROOT_ID, "k", "", 0, "v1", &vver), 0);
	snprintf(vkey, sizeof(vkey), T "v:90:%llu", (unsigned long long)vver);
	assert_cli("EXISTS %s", vkey, "1");
	vver = 999999;
	assert_int_equal(put_key(b, 90, KV_ROOT_ID, "k", "", 0, "v2", &vver), 0);
	assert_cli("EXISTS %s", vkey, "0");

	for (int i = 0; i < 300; i++)
		assert_true(asprintf(&tags[i], "t%03d", i) > 0);
	v = kv_value_from_buf("x", 1);
	op = put_op(91, "many", tags, 300);
	op.meta.size = 1;
	op.value = v;
	assert_int_equal(b->ops->commit(b, &op, 1), 0);
	kv_value_free(v);
	assert_cli("SISMEMBER " T "t:t299 %s", "91", "1");
	assert_int_equal(put_key(b, 91, KV_ROOT_ID, "many", "one", 0, NULL, NULL), 0);
	for (int i = 0; i < 300; i++) {
		snprintf(tk, sizeof(tk), T "t:%s", tags[i]);
		assert_cli("EXISTS %s", tk, "0");
		free(tags[i]);
	}
	assert_cli("SMEMBERS %s", T "t:one", "91");
	kv_backend_close(b);
}

/* A conversion that fails part way (here at a damaged staging marker)
 * leaves the version unset, so the next open converts what is left; every
 * page of T:ids is converted, not only the first. */
void test_conversion_resumes(void **state)
{
	struct kv_backend *b = NULL;
	size_t n = 0;

	(void)state;
	for (uint64_t id = 100; id < 1600; id++) {
		char name[24];
		uint8_t *rec;
		size_t len;

		snprintf(name, sizeof(name), "n%llu", (unsigned long long)id);
		rec = record(id, KV_ROOT_ID, name, NULL, 0, 0, &len);
		raw("HSET " T "r:%llu m %b p 1 n %s t %s v 0", (unsigned long long)id, rec, len,
		    name, "");
		raw("SADD " T "ids %llu", (unsigned long long)id);
		free(rec);
	}
	raw("HSET " T "up:x:2 %s %s", "not", "a-list");
	raw("ZADD " T "up %s x:2", "1");
	assert_int_not_equal(redis_open_err(&b, "cannot convert the store to layout 2"), 0);
	assert_null(b);
	assert_cli("EXISTS %s", T "fmt", "0");
	assert_cli("TYPE %s", T "r:1599", "string");
	raw("DEL " T "up:x:2");
	raw("ZREM " T "up %s", "x:2");
	/* One more of layout 1, for the open that resumes. */
	{
		uint8_t *rec;
		size_t len;

		rec = record(1599, KV_ROOT_ID, "n1599", NULL, 0, 0, &len);
		raw("DEL " T "r:1599");
		raw("HSET " T "r:1599 m %b p 1 n n1599 t %s v 0", rec, len, "");
		free(rec);
	}
	b = xload(&n);
	assert_int_equal(n, 1500);
	assert_cli("GET %s", T "fmt", "2");
	assert_cli("TYPE %s", T "r:100", "string");
	assert_cli("TYPE %s", T "r:1599", "string");
	kv_backend_close(b);
}
