/*
 * The Redis backend: the backend contract against a real redis-server that
 * this test starts on a private unix socket, then what only Redis has: the
 * key layout inside one hash tag, connection and password errors, a server
 * that goes away and comes back, native expiry (PEXPIREAT) and the indexes
 * (directory entries, tag sets) that follow every change.
 */
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "store/backend.h"
#include "tests/backend_contract.h"
#include "tests/redis_server.h"
#include "tests/test_backend_redis.h"

struct redis_server srv;

struct redis_ctx {
	const char *prefix, *db, *ns;
	const char *password;
	uint64_t timeout_ms;
	char err[512];		/* the last open's message */
};

static struct redis_ctx ctx;

void set_command_timeout(uint64_t ms)
{
	ctx.timeout_ms = ms;
}

static void flushall(void)
{
	char *out = redis_cli(&srv, "FLUSHALL");

	assert_non_null(out);
	free(out);
}

static int r_create(void *c)
{
	struct redis_ctx *x = c;

	memset(x, 0, sizeof(*x));
	x->prefix = "nadb";
	x->db = "default";
	x->ns = "default";
	x->timeout_ms = 2000;
	flushall();
	return 0;
}

static int open_with(struct redis_ctx *x, const char *sock, bool compress, struct kv_backend **out)
{
	struct kv_backend_params p = {
		.db = x->db,
		.ns = x->ns,
		.compression = compress ? KV_ENC_ZSTD : KV_ENC_NONE,
		.compression_min_size = 1024,
		.redis_socket = sock,
		.redis_password = x->password,
		.redis_timeout_ms = x->timeout_ms,
		.redis_pool_size = 3,
		.redis_key_prefix = x->prefix,
	};

	x->err[0] = '\0';
	return kv_redis_open(&p, out, x->err, sizeof(x->err));
}

static int r_open(void *c, bool compress, struct kv_backend **out)
{
	struct redis_ctx *x = c;
	int ret = open_with(x, srv.sock, compress, out);

	if (ret)
		fprintf(stderr, "kv_redis_open: %s\n", x->err);
	return ret;
}

static void r_destroy(void *c)
{
	(void)c;
	if (srv.pid > 0)
		flushall();
}

static int setup(void **state)
{
	(void)state;
	if (srv.pid <= 0 && redis_server_resume(&srv))
		return -1;
	return r_create(&ctx) ? -1 : 0;
}

static int teardown(void **state)
{
	(void)state;
	r_destroy(&ctx);
	return 0;
}

/* --- Helpers --- */

static struct kv_backend *xopen(void)
{
	struct kv_backend *b = NULL;

	assert_int_equal(r_open(&ctx, true, &b), 0);
	return b;
}

struct kv_backend *xload(size_t *n)
{
	struct kv_backend *b = xopen();
	uint64_t max_id;
	size_t count = 0;

	assert_int_equal(b->ops->load(b, contract_count, &count, &max_id), 0);
	if (n)
		*n = count;
	return b;
}

int redis_open_err(struct kv_backend **out, const char *want)
{
	int ret = open_with(&ctx, srv.sock, false, out);

	if (!strstr(ctx.err, want))
		fail_msg("kv_redis_open: \"%s\", want \"%s\" in it", ctx.err, want);
	return ret;
}

int64_t wall_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* A key under parent with tags (comma-separated, sorted, "" for none). */
int put_key(struct kv_backend *b, uint64_t id, uint64_t parent, const char *name,
		   const char *tags, int64_t expires_ms, const char *data, uint64_t *vver)
{
	struct kv_op op = { .type = KV_OP_PUT, .old_vver = vver ? *vver : 0 };
	char *tagbuf = strdup(tags), *save = NULL;
	char *tagv[8];
	struct kv_value *v = NULL;
	int ret;

	assert_non_null(tagbuf);
	op.meta.id = id;
	op.meta.parent = parent;
	op.meta.name = (char *)name;
	op.meta.mode = S_IFREG | 0644;
	op.meta.expires_ms = expires_ms;
	for (char *t = strtok_r(tagbuf, ",", &save); t; t = strtok_r(NULL, ",", &save))
		tagv[op.meta.ntags++] = t;
	op.meta.tags = tagv;
	if (data) {
		v = kv_value_from_buf(data, strlen(data));
		assert_non_null(v);
		op.meta.size = strlen(data);
		op.value = v;
	} else if (vver) {
		op.meta.vver = *vver;
		op.meta.size = 5;
		op.meta.stored_size = 5;
	}
	ret = b->ops->commit(b, &op, 1);
	if (!ret && vver)
		*vver = op.meta.vver;
	kv_value_free(v);
	free(tagbuf);
	return ret;
}

int del_key(struct kv_backend *b, uint64_t id, uint64_t vver)
{
	struct kv_op op = { .type = KV_OP_DEL, .meta.id = id, .old_vver = vver };

	return b->ops->commit(b, &op, 1);
}

/* redis-cli output, trimmed of its last newline; the caller frees it. */
char *cli(const char *fmt, const char *arg)
{
	char *out = redis_cli(&srv, fmt, arg);
	size_t len;

	assert_non_null(out);
	len = strlen(out);
	while (len && (out[len - 1] == '\n' || out[len - 1] == '\r'))
		out[--len] = '\0';
	return out;
}

void assert_cli(const char *fmt, const char *arg, const char *want)
{
	char *out = cli(fmt, arg);

	if (strcmp(out, want))
		fail_msg("redis-cli %s (%s): got \"%s\", want \"%s\"", fmt, arg, out, want);
	free(out);
}

long long cli_int(const char *fmt, const char *arg)
{
	char *out = cli(fmt, arg);
	long long v = strtoll(out, NULL, 10);

	free(out);
	return v;
}

/* --- Tests --- */

/* Every key of a store starts with its hash tag; two stores whose names
 * would collide if joined naively get different tags. */
static void test_keys_in_one_hash_tag(void **state)
{
	struct contract_model *md = calloc(1, sizeof(*md));
	struct kv_backend *b, *b2;
	uint64_t v1 = 0;
	char *keys, *line, *save = NULL;
	size_t n = 0;

	(void)state;
	assert_non_null(md);
	ctx.prefix = "p{x}";
	ctx.db = "a:b";
	ctx.ns = "c";
	b = xload(NULL);
	contract_churn(b, md, 2);
	kv_backend_close(b);
	b = xopen();
	contract_check_model(b, md);
	/* Beyond the model's ids. */
	assert_int_equal(put_key(b, 500, KV_ROOT_ID, "tagged", "blue,red", wall_ms() + 600000,
				 "hello", &v1), 0);
	kv_backend_close(b);

	ctx.db = "a";
	ctx.ns = "b:c";
	b2 = xload(&n);
	assert_int_equal(n, 0);
	assert_int_equal(put_key(b2, 2, KV_ROOT_ID, "other", "", 0, "x", NULL), 0);
	kv_backend_close(b2);

	keys = cli("--scan --pattern %s", "'*'");
	n = 0;
	for (line = strtok_r(keys, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		bool one = !strncmp(line, "{p%7Bx%7D:a%3Ab:c}:", 19);
		bool two = !strncmp(line, "{p%7Bx%7D:a:b%3Ac}:", 19);

		if (!one && !two)
			fail_msg("key outside the stores' hash tags: %s", line);
		n++;
	}
	free(keys);
	assert_true(n > 10);
	/* The indexes of the first store. */
	assert_cli("SMEMBERS %s", "'{p%7Bx%7D:a%3Ab:c}:t:red'", "500");
	assert_cli("HGET %s tagged", "'{p%7Bx%7D:a%3Ab:c}:d:1'", "500");
	assert_cli("SISMEMBER %s 500", "'{p%7Bx%7D:a%3Ab:c}:ids'", "1");
	assert_cli("EXISTS %s", "'{p%7Bx%7D:a%3Ab:c}:maxid'", "1");
	/* Nothing left of uploads (2 MiB values go through temp keys). */
	keys = cli("--scan --pattern %s", "'*:tmp:*'");
	assert_string_equal(keys, "");
	free(keys);

	free(md);
}

static void test_unreachable_server(void **state)
{
	struct kv_backend_params p = { .db = "d", .ns = "n", .redis_host = "127.0.0.1",
				       .redis_port = 1, .redis_timeout_ms = 1000 };
	struct kv_backend *b = NULL;
	char err[512], want[256];

	(void)state;
	assert_int_equal(kv_redis_open(&p, &b, err, sizeof(err)), -EIO);
	assert_null(b);
	assert_string_equal(err, "cannot connect to redis 127.0.0.1:1: connection refused");

	snprintf(want, sizeof(want), "%s/nothing.sock", srv.dir);
	assert_int_not_equal(open_with(&ctx, want, false, &b), 0);
	assert_null(b);
	snprintf(want, sizeof(want), "cannot connect to redis unix:%s/nothing.sock: "
		 "no such file or directory", srv.dir);
	assert_string_equal(ctx.err, want);
}

static void test_password(void **state)
{
	struct redis_server sec;
	struct kv_backend *b = NULL;

	(void)state;
	assert_int_equal(redis_server_start(&sec, "s3cret pw"), 0);
	ctx.password = "wrong";
	assert_int_not_equal(open_with(&ctx, sec.sock, false, &b), 0);
	assert_null(b);
	assert_non_null(strstr(ctx.err, "redis rejected the password"));
	assert_null(strstr(ctx.err, "wrong"));

	ctx.password = NULL;
	assert_int_not_equal(open_with(&ctx, sec.sock, false, &b), 0);
	assert_non_null(strstr(ctx.err, "requires a password"));

	ctx.password = "s3cret pw";
	assert_int_equal(open_with(&ctx, sec.sock, false, &b), 0);
	assert_int_equal(put_key(b, 2, KV_ROOT_ID, "k", "", 0, "v", NULL), 0);
	kv_backend_close(b);
	redis_server_stop(&sec);
}

/* The server goes away: calls fail with EIO (no hang past the timeout);
 * it comes back: the pool reconnects and everything works again. */
static void test_server_restart(void **state)
{
	struct kv_backend_statfs sf;
	struct kv_meta m;
	struct kv_backend *b;
	uint64_t vver = 0;
	uint8_t buf[8];
	size_t n;

	(void)state;
	ctx.timeout_ms = 500;
	b = xload(NULL);
	assert_int_equal(put_key(b, 2, KV_ROOT_ID, "k", "", 0, "hello", &vver), 0);

	redis_server_halt(&srv);
	assert_int_equal(put_key(b, 3, KV_ROOT_ID, "k3", "", 0, "x", NULL), -EIO);
	memset(&m, 0, sizeof(m));
	m.id = 2;
	m.vver = vver;
	m.size = m.stored_size = 5;
	assert_int_equal(b->ops->pread(b, &m, buf, 5, 0), -EIO);
	assert_int_equal(b->ops->statfs(b, &sf), -EIO);

	/* Stopped rather than gone: a command times out. */
	assert_int_equal(redis_server_resume(&srv), 0);
	kill(srv.pid, SIGSTOP);
	assert_int_equal(b->ops->statfs(b, &sf), -EIO);
	kill(srv.pid, SIGCONT);

	/* Back (empty: the test server keeps nothing on disk); reconnects
	 * wait out a backoff of at most a second. */
	{
		int64_t until = wall_ms() + 5000;
		int ret;

		while ((ret = put_key(b, 3, KV_ROOT_ID, "k3", "", 0, "x", NULL)) == -EIO &&
		       wall_ms() < until)
			usleep(20000);
		assert_int_equal(ret, 0);
	}
	assert_int_equal(b->ops->statfs(b, &sf), 0);
	kv_backend_close(b);
	b = xload(&n);
	assert_int_equal(n, 1);
	kv_backend_close(b);
}

/* A deadline gives both keys a PEXPIREAT; removing it makes them persist; a
 * deadline already past at commit is left to the store. */
static void test_ttl_pexpireat(void **state)
{
	struct kv_backend *b;
	uint64_t vver = 0, old;
	char okey[128];
	int64_t dl;
	char vkey[128];
	size_t n;

	(void)state;
	b = xload(NULL);
	dl = wall_ms() + 60000;
	assert_int_equal(put_key(b, 7, KV_ROOT_ID, "k", "t", dl, "hello", &vver), 0);
	snprintf(vkey, sizeof(vkey), "{nadb:default:default}:v:7:%llu",
		 (unsigned long long)vver);
	assert_true(cli_int("PTTL %s", "{nadb:default:default}:r:7") > 50000);
	assert_true(cli_int("PTTL %s", vkey) > 50000);
	assert_true(cli_int("ZSCORE {nadb:default:default}:exp %s", "7") > 0);

	/* A rewrite that keeps the deadline (as user.ttl keeps it): the new
	 * value version expires with the record, at the same moment. */
	old = vver;
	assert_int_equal(put_key(b, 7, KV_ROOT_ID, "k", "t", dl, "hello again", &vver), 0);
	assert_true(vver != old);
	snprintf(vkey, sizeof(vkey), "{nadb:default:default}:v:7:%llu",
		 (unsigned long long)vver);
	assert_int_equal(cli_int("PEXPIRETIME %s", "{nadb:default:default}:r:7"), dl);
	assert_int_equal(cli_int("PEXPIRETIME %s", vkey), dl);
	assert_int_equal(cli_int("ZSCORE {nadb:default:default}:exp %s", "7"), dl);
	snprintf(okey, sizeof(okey), "{nadb:default:default}:v:7:%llu", (unsigned long long)old);
	assert_int_equal(cli_int("EXISTS %s", okey), 0);

	/* Metadata only, no deadline. */
	assert_int_equal(put_key(b, 7, KV_ROOT_ID, "k", "t", 0, NULL, &vver), 0);
	assert_int_equal(cli_int("PTTL %s", "{nadb:default:default}:r:7"), -1);
	assert_int_equal(cli_int("PTTL %s", vkey), -1);
	assert_cli("ZSCORE {nadb:default:default}:exp %s", "7", "");

	/* In the past: kept, with its deadline, until the store deletes it. */
	assert_int_equal(put_key(b, 8, KV_ROOT_ID, "old", "", 1000, "x", NULL), 0);
	assert_int_equal(cli_int("PTTL %s", "{nadb:default:default}:r:8"), -1);
	kv_backend_close(b);
	b = xload(&n);
	assert_int_equal(n, 2);
	kv_backend_close(b);
}

/* Redis expires a key by itself (no daemon running): the next load does
 * not report it and removes it from every index. */
static void test_native_expiry_unindexed(void **state)
{
	struct kv_backend *b;
	int64_t deadline;
	size_t n;

	(void)state;
	b = xload(NULL);
	assert_int_equal(put_key(b, 9, KV_ROOT_ID, "short", "blue", wall_ms() + 200, "bye",
				 NULL), 0);
	assert_int_equal(put_key(b, 10, KV_ROOT_ID, "long", "blue", 0, "stay", NULL), 0);
	kv_backend_close(b);
	deadline = wall_ms() + 5000;
	while (cli_int("EXISTS %s", "{nadb:default:default}:r:9") && wall_ms() < deadline)
		usleep(20000);
	assert_int_equal(cli_int("EXISTS %s", "{nadb:default:default}:r:9"), 0);

	b = xload(&n);
	assert_int_equal(n, 1);
	kv_backend_close(b);
	assert_cli("SMEMBERS %s", "{nadb:default:default}:t:blue", "10");
	assert_cli("HGET {nadb:default:default}:d:1 %s", "short", "");
	assert_cli("SISMEMBER {nadb:default:default}:ids %s", "9", "0");
	assert_cli("ZSCORE {nadb:default:default}:exp %s", "9", "");
}

/* A running daemon's sweep of T:exp unindexes what Redis expired, and
 * announces it in the change log for every mount. */
static void test_sweep_unindexes(void **state)
{
	struct kv_backend *b, *other;
	uint64_t *ids = NULL;
	int64_t deadline;
	size_t n = 0;

	(void)state;
	b = xload(NULL);
	other = xload(NULL);
	assert_int_equal(put_key(b, 9, KV_ROOT_ID, "short", "blue", wall_ms() + 200, "bye",
				 NULL), 0);
	assert_int_equal(put_key(b, 10, KV_ROOT_ID, "long", "blue", 0, "stay", NULL), 0);
	/* The other mount hears of both commits; the first mount of neither. */
	assert_int_equal(other->ops->changes(other, 100, &ids, &n), 0);
	assert_int_equal(n, 2);
	free(ids);
	assert_int_equal(b->ops->changes(b, 10, &ids, &n), 0);
	assert_int_equal(n, 0);
	free(ids);

	assert_int_equal(b->ops->sweep(b, wall_ms(), 1000, &n), 0);
	assert_int_equal(n, 0);
	deadline = wall_ms() + 5000;
	while (cli_int("EXISTS %s", "{nadb:default:default}:r:9") && wall_ms() < deadline)
		usleep(20000);
	assert_int_equal(b->ops->sweep(b, wall_ms(), 1000, &n), 0);
	assert_int_equal(n, 1);
	assert_cli("SMEMBERS %s", "{nadb:default:default}:t:blue", "10");
	assert_cli("HGET {nadb:default:default}:d:1 %s", "short", "");
	assert_cli("SISMEMBER {nadb:default:default}:ids %s", "9", "0");
	assert_cli("ZSCORE {nadb:default:default}:exp %s", "9", "");
	/* Both mounts hear of the sweep, the sweeping one too. */
	assert_int_equal(b->ops->changes(b, 100, &ids, &n), 0);
	assert_int_equal(n, 1);
	assert_int_equal(ids[0], 9);
	free(ids);
	assert_int_equal(other->ops->changes(other, 100, &ids, &n), 0);
	assert_int_equal(n, 1);
	free(ids);
	kv_backend_close(other);
	kv_backend_close(b);
}

/* With keyspace notifications on, an expired record leaves its indexes as
 * soon as its event arrives, before any scheduled sweep. */
static void test_expiry_notifications(void **state)
{
	struct kv_backend *b;
	uint64_t *ids = NULL;
	int64_t deadline;
	size_t n = 0;
	char *out;

	(void)state;
	out = cli("CONFIG SET notify-keyspace-events %s", "Ex");
	free(out);
	b = xload(NULL);
	/* The first call subscribes. */
	assert_int_equal(b->ops->changes(b, 10, &ids, &n), 0);
	free(ids);
	assert_int_equal(put_key(b, 9, KV_ROOT_ID, "short", "blue", wall_ms() + 200, "bye",
				 NULL), 0);
	deadline = wall_ms() + 5000;
	while (cli_int("SISMEMBER {nadb:default:default}:t:blue %s", "9") &&
	       wall_ms() < deadline) {
		/* Redis expires keys lazily or in its cycle: touch it. */
		free(cli("EXISTS %s", "{nadb:default:default}:r:9"));
		assert_int_equal(b->ops->changes(b, 50, &ids, &n), 0);
		free(ids);
	}
	assert_cli("SISMEMBER {nadb:default:default}:t:blue %s", "9", "0");
	assert_cli("HGET {nadb:default:default}:d:1 %s", "short", "");
	kv_backend_close(b);
	out = cli("CONFIG SET notify-keyspace-events %s", "''");
	free(out);
}

/* Claims: one winner per name; a record's DEL releases its claim; a
 * record of another mount on the name keeps it. */
static void test_claims(void **state)
{
	struct kv_backend *b, *other;
	uint64_t id = 0;

	(void)state;
	b = xload(NULL);
	other = xload(NULL);
	assert_int_equal(b->ops->claim_name(b, KV_ROOT_ID, "n", 20), 0);
	assert_int_equal(other->ops->claim_name(other, KV_ROOT_ID, "n", 21), -EEXIST);
	assert_int_equal(b->ops->lookup_name(b, KV_ROOT_ID, "n", &id), 0);
	assert_int_equal(id, 20);
	/* Given up before it was ever committed. */
	assert_int_equal(del_key(b, 20, 0), 0);
	assert_int_equal(b->ops->lookup_name(b, KV_ROOT_ID, "n", &id), -ENOENT);
	assert_int_equal(other->ops->claim_name(other, KV_ROOT_ID, "n", 21), 0);
	assert_int_equal(put_key(other, 21, KV_ROOT_ID, "n", "", 0, "v", NULL), 0);
	assert_cli("EXISTS %s", "{nadb:default:default}:c:21", "0");
	assert_int_equal(b->ops->claim_name(b, KV_ROOT_ID, "n", 22), -EEXIST);
	kv_backend_close(other);
	kv_backend_close(b);
}

/* A batch of records no commit carried before (kv_op.never_sent): their
 * entries and tags are written per directory and tag, yet a name another
 * record holds is still taken from it and a claim is still settled. */
static void test_never_sent_batch(void **state)
{
	static const char *names[] = { "f1", "f2", "taken", "c" };
	char *tags[] = { "t1" };
	struct kv_op ops[4];
	struct kv_value *v[4];
	struct kv_backend *b;

	(void)state;
	b = xload(NULL);
	assert_int_equal(put_key(b, 40, KV_ROOT_ID, "taken", "", 0, "rival", NULL), 0);
	assert_int_equal(b->ops->claim_name(b, KV_ROOT_ID, "c", 33), 0);
	memset(ops, 0, sizeof(ops));
	for (int i = 0; i < 4; i++) {
		v[i] = kv_value_from_buf("val", 3);
		assert_non_null(v[i]);
		ops[i].type = KV_OP_PUT;
		/* A record whose name was claimed is never "never sent"
		 * (kv_sync_claim): its claim is settled by its commit. */
		ops[i].never_sent = i != 3;
		ops[i].uncertain = i == 3;
		ops[i].may_yield = i == 1 || i == 2; /* compact ops (the script) */
		ops[i].meta.id = (uint64_t)(30 + i);
		ops[i].meta.parent = KV_ROOT_ID;
		ops[i].meta.name = (char *)names[i];
		ops[i].meta.mode = S_IFREG | 0644;
		ops[i].meta.size = 3;
		ops[i].meta.tags = tags;
		ops[i].meta.ntags = i < 2 ? 1 : 0;
		ops[i].value = v[i];
	}
	assert_int_equal(b->ops->commit(b, ops, 4), 0);
	for (int i = 0; i < 4; i++)
		kv_value_free(v[i]);
	assert_cli("HGET {nadb:default:default}:d:1 %s", "f1", "30");
	assert_cli("HGET {nadb:default:default}:d:1 %s", "f2", "31");
	assert_cli("HGET {nadb:default:default}:d:1 %s", "taken", "32");
	assert_cli("HGET {nadb:default:default}:d:1 %s", "c", "33");
	assert_cli("EXISTS %s", "{nadb:default:default}:c:33", "0");
	assert_cli("EXISTS %s", "{nadb:default:default}:r:40", "0");
	assert_cli("SISMEMBER {nadb:default:default}:ids %s", "40", "0");
	assert_cli("SCARD %s", "{nadb:default:default}:t:t1", "2");
	assert_cli("SISMEMBER {nadb:default:default}:t:t1 %s", "31", "1");
	assert_cli("TYPE %s", "{nadb:default:default}:r:31", "string");
	kv_backend_close(b);
}

/* Directory entries and tag sets follow a record through retag, move and
 * delete, in the same atomic commit. */
static void test_indexes_follow(void **state)
{
	struct kv_backend *b;
	uint64_t vver = 0;

	(void)state;
	b = xload(NULL);
	assert_int_equal(put_key(b, 5, KV_ROOT_ID, "a", "red,x", 0, "v1", &vver), 0);
	assert_cli("SMEMBERS %s", "{nadb:default:default}:t:red", "5");
	assert_cli("HGET {nadb:default:default}:d:1 %s", "a", "5");

	/* Retag and rename into another directory. */
	assert_int_equal(put_key(b, 5, 77, "b", "blue,x", 0, "v2", &vver), 0);
	assert_cli("EXISTS %s", "{nadb:default:default}:t:red", "0");
	assert_cli("SMEMBERS %s", "{nadb:default:default}:t:blue", "5");
	assert_cli("SMEMBERS %s", "{nadb:default:default}:t:x", "5");
	assert_cli("HGET {nadb:default:default}:d:1 %s", "a", "");
	assert_cli("HGET {nadb:default:default}:d:77 %s", "b", "5");

	/* Same name and tags, new value: the indexes the script skips stay
	 * exact and the superseded value goes. */
	{
		uint64_t before = vver;
		char vkey[128];

		assert_int_equal(put_key(b, 5, 77, "b", "blue,x", 0, "v3", &vver), 0);
		snprintf(vkey, sizeof(vkey), "{nadb:default:default}:v:5:%llu",
			 (unsigned long long)before);
		assert_cli("EXISTS %s", vkey, "0");
		assert_cli("SMEMBERS %s", "{nadb:default:default}:t:blue", "5");
		assert_cli("HGET {nadb:default:default}:d:77 %s", "b", "5");
		/* The index is in the record: no T:i without a deadline. */
		assert_cli("TYPE %s", "{nadb:default:default}:r:5", "string");
		assert_cli("EXISTS %s", "{nadb:default:default}:i:5", "0");
	}
	/* An entry that another record took meanwhile is taken back even
	 * though the record did not move. */
	free(redis_cli(&srv, "HSET {nadb:default:default}:d:77 b %s", "99"));
	assert_int_equal(put_key(b, 5, 77, "b", "blue,x", 0, NULL, &vver), 0);
	assert_cli("HGET {nadb:default:default}:d:77 %s", "b", "5");
	/* A deadline, then a new value without one: nothing keeps a TTL. */
	assert_int_equal(put_key(b, 5, 77, "b", "blue,x", wall_ms() + 60000, NULL, &vver), 0);
	assert_true(cli_int("PTTL %s", "{nadb:default:default}:r:5") > 50000);
	/* With a deadline, the index has a copy that outlives the record. */
	assert_cli("HGET {nadb:default:default}:i:5 %s", "n", "b");
	assert_int_equal(cli_int("PTTL %s", "{nadb:default:default}:i:5"), -1);
	assert_int_equal(put_key(b, 5, 77, "b", "blue,x", 0, "v4", &vver), 0);
	assert_int_equal(cli_int("PTTL %s", "{nadb:default:default}:r:5"), -1);
	assert_cli("EXISTS %s", "{nadb:default:default}:i:5", "0");
	assert_cli("ZSCORE {nadb:default:default}:exp %s", "5", "");
	/* A value too large to ride in the script comes through a temporary
	 * key with a TTL of its own, which the commit takes off. */
	{
		char *big = malloc(100000), vkey[128];

		assert_non_null(big);
		/* Incompressible, so that it stays that large. */
		uint32_t x = 1;

		for (int i = 0; i < 99999; i++) {
			x = x * 1103515245u + 12345u;
			big[i] = (char)('!' + (x >> 16) % 89);
		}
		big[99999] = '\0';
		assert_int_equal(put_key(b, 5, 77, "b", "blue,x", 0, big, &vver), 0);
		free(big);
		snprintf(vkey, sizeof(vkey), "{nadb:default:default}:v:5:%llu",
			 (unsigned long long)vver);
		assert_int_equal(cli_int("PTTL %s", vkey), -1);
	}

	assert_int_equal(del_key(b, 5, vver), 0);
	assert_cli("EXISTS %s", "{nadb:default:default}:t:blue", "0");
	assert_cli("EXISTS %s", "{nadb:default:default}:d:77", "0");
	assert_cli("SCARD %s", "{nadb:default:default}:ids", "0");
	/* Only the counters, the layout version and the change log are left. */
	assert_cli("DBSIZE%s", "", "5");
	assert_cli("GET %s", "{nadb:default:default}:fmt", "2");
	assert_cli("EXISTS %s", "{nadb:default:default}:maxid", "1");
	assert_cli("EXISTS %s", "{nadb:default:default}:vver", "1");
	assert_cli("EXISTS %s", "{nadb:default:default}:log", "1");
	assert_cli("EXISTS %s", "{nadb:default:default}:logseq", "1");
	kv_backend_close(b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_keys_in_one_hash_tag, setup, teardown),
		cmocka_unit_test_setup_teardown(test_unreachable_server, setup, teardown),
		cmocka_unit_test_setup_teardown(test_password, setup, teardown),
		cmocka_unit_test_setup_teardown(test_server_restart, setup, teardown),
		cmocka_unit_test_setup_teardown(test_ttl_pexpireat, setup, teardown),
		cmocka_unit_test_setup_teardown(test_native_expiry_unindexed, setup, teardown),
		cmocka_unit_test_setup_teardown(test_indexes_follow, setup, teardown),
		cmocka_unit_test_setup_teardown(test_sweep_unindexes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_claims, setup, teardown),
		cmocka_unit_test_setup_teardown(test_transaction_reservations, setup, teardown),
		cmocka_unit_test_setup_teardown(test_never_sent_batch, setup, teardown),
		cmocka_unit_test_setup_teardown(test_expiry_notifications, setup, teardown),
		cmocka_unit_test_setup_teardown(test_query_set_operations, setup, teardown),
		cmocka_unit_test_setup_teardown(test_dir_delete_keeps_foreign_entries, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_staged_writes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_script_refuses_swept_batch, setup, teardown),
		cmocka_unit_test_setup_teardown(test_pipeline_survives_a_busy_server, setup, teardown),
		cmocka_unit_test_setup_teardown(test_records_are_strings, setup, teardown),
		cmocka_unit_test_setup_teardown(test_uncertain_put_completes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_layout_1_converted, setup, teardown),
		cmocka_unit_test_setup_teardown(test_newer_layout_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_stray_hash_records_read, setup, teardown),
		cmocka_unit_test_setup_teardown(test_commit_refused_on_newer_layout, setup, teardown),
		cmocka_unit_test_setup_teardown(test_index_decoded_exactly, setup, teardown),
		cmocka_unit_test_setup_teardown(test_conversion_resumes, setup, teardown),
	};
	struct contract_backend rb = {
		.name = "redis",
		.ctx = &ctx,
		.create = r_create,
		.open = r_open,
		.close_and_destroy = r_destroy,
	};
	int failed, ret;

	ret = redis_server_start(&srv, NULL);
	if (ret) {
		/* Not a skip: the Redis backend is part of what must work. */
		printf("[  FAILED  ] 1 test(s), listed below:\n[  FAILED  ] cannot start "
		       "redis-server: %s\n", strerror(-ret));
		return 1;
	}
	failed = backend_contract_run(&rb);
	failed += cmocka_run_group_tests_name("backend redis", tests, NULL, NULL);
	redis_server_stop(&srv);
	return failed ? 1 : 0;
}
