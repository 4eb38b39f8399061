/*
 * The Redis backend, continued (see test_backend_redis.h): a transaction's
 * check and reservation (backend_redis_tx.c), and tag listings and queries
 * by set operations (backend_redis_query.c).
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
#include <unistd.h>

#include <cmocka.h>

#include "store/backend_redis.h"
#include "tests/test_backend_redis.h"

/* The record of id as the backend has it, encoded (what a mount holds of
 * it once clean), with its ctime and atime moved by dctime and datime. */
static void record_of(struct kv_backend *b, uint64_t id, int64_t dctime, int64_t datime,
		      uint8_t **rec, size_t *len)
{
	struct kv_change c;
	size_t cap = 0;

	*rec = NULL;
	*len = 0;
	assert_int_equal(b->ops->fetch(b, &id, 1, &c), 0);
	assert_false(c.gone);
	c.meta.ctime_ns += dctime;
	c.meta.atime_ns += datime;
	assert_int_equal(kv_meta_encode(&c.meta, rec, len, &cap), 0);
	kv_changes_clear(&c, 1);
}

/*
 * A transaction's check and reservation (spec 6a): a record changed since
 * the mount last saw it, or a name taken, refuses it and reserves nothing;
 * once reserved, another mount's commits of those records and names wait
 * (-EAGAIN, nothing written) while the reserving mount's own pass, until
 * release or the deadline.
 */
void test_transaction_reservations(void **state)
{
	struct kv_backend *a, *b;
	struct kv_expect e[2] = { { .id = 30 }, { .parent = KV_ROOT_ID, .name = "new" } };
	struct kv_expect bad_name[] = { { .parent = KV_ROOT_ID, .name = "taken" } };
	struct kv_expect dead_dir[] = { { .parent = 999, .name = "x" } };
	uint64_t va = 0, vb = 0;
	uint8_t *rec, *stale;
	size_t len, stale_len, bad = 99;
	int64_t give_up;
	int ret;

	(void)state;
	a = xload(NULL);
	b = xload(NULL);
	assert_int_equal(put_key(a, 30, KV_ROOT_ID, "k", "", 0, "v1", &va), 0);
	assert_int_equal(put_key(b, 31, KV_ROOT_ID, "taken", "", 0, "t", NULL), 0);

	/* Changed since: refused, with the index of what failed. */
	record_of(a, 30, 1, 0, &stale, &stale_len);
	e[0].rec = stale;
	e[0].reclen = stale_len;
	assert_int_equal(a->ops->reserve(a, e, 2, 1, 60000, &bad), -ESTALE);
	assert_int_equal(bad, 0);
	assert_int_equal(a->ops->reserve(a, bad_name, 1, 1, 60000, &bad), -ESTALE);
	assert_int_equal(a->ops->reserve(a, dead_dir, 1, 1, 60000, &bad), -ESTALE);
	assert_cli("EXISTS %s", "{nadb:default:default}:txl", "0");

	/* Only the atime differs: the same record. */
	record_of(a, 30, 0, 12345, &rec, &len);
	e[0].rec = rec;
	e[0].reclen = len;
	assert_int_equal(a->ops->reserve(a, e, 2, 1, 60000, &bad), 0);
	assert_cli("HLEN %s", "{nadb:default:default}:txl", "2");
	/* The hash lasts as long as its last reservation. */
	assert_true(cli_int("PTTL %s", "{nadb:default:default}:txl") > 50000);
	/* Another commit of the same mount is refused too, and cannot
	 * release what the first holds. */
	assert_int_equal(a->ops->reserve(a, e, 1, 2, 60000, &bad), -ESTALE);
	assert_int_equal(a->ops->release(a, e, 2, 2), 0);
	assert_cli("HLEN %s", "{nadb:default:default}:txl", "2");
	/* b waits for both the record and the name; what its refused batch
	 * wrote first is gone again. */
	assert_int_equal(put_key(b, 30, KV_ROOT_ID, "k", "", 0, "v2", &vb), -EAGAIN);
	assert_int_equal(put_key(b, 32, KV_ROOT_ID, "new", "", 0, "x", NULL), -EAGAIN);
	assert_cli("EXISTS %s", "{nadb:default:default}:r:32", "0");
	assert_cli("HGET %s k", "{nadb:default:default}:d:1", "30");
	/* Nor does an uploaded value stay behind. */
	{
		char *big = malloc(100 * 1024 + 1);
		char *keys;

		assert_non_null(big);
		memset(big, 'b', 100 * 1024);
		big[100 * 1024] = '\0';
		assert_int_equal(put_key(b, 30, KV_ROOT_ID, "k", "", 0, big, &vb), -EAGAIN);
		free(big);
		keys = cli("--scan --pattern %s", "'*tmp*'");
		assert_string_equal(keys, "");
		free(keys);
	}
	/* An O_EXCL create or mkdir on b cannot claim the name either. */
	assert_int_equal(b->ops->claim_name(b, KV_ROOT_ID, "new", 33), -EEXIST);
	/* b sees a reservation as a conflict too. */
	assert_int_equal(b->ops->reserve(b, e, 1, 1, 60000, &bad), -ESTALE);
	/* a's own commit passes. */
	assert_int_equal(put_key(a, 30, KV_ROOT_ID, "k", "", 0, "v3", &va), 0);
	assert_int_equal(a->ops->release(a, e, 2, 1), 0);
	assert_cli("EXISTS %s", "{nadb:default:default}:txl", "0");
	assert_int_equal(put_key(b, 32, KV_ROOT_ID, "new", "", 0, "x", NULL), 0);
	free(rec);

	/* Never released (the mount died): it lapses at its deadline. */
	record_of(a, 30, 0, 0, &rec, &len);
	e[0].rec = rec;
	e[0].reclen = len;
	assert_int_equal(a->ops->reserve(a, e, 1, 1, 200, &bad), 0);
	assert_int_equal(put_key(b, 30, KV_ROOT_ID, "k", "", 0, "v4", &vb), -EAGAIN);
	give_up = wall_ms() + 10000;
	while ((ret = put_key(b, 30, KV_ROOT_ID, "k", "", 0, "v4", &vb)) == -EAGAIN &&
	       wall_ms() < give_up)
		;
	assert_int_equal(ret, 0);
	free(rec);
	free(stale);
	kv_backend_close(b);
	kv_backend_close(a);
}

/* The ids matching expr by the backend's query op, sorted, comma-joined.
 * expr is the store's syntax ("a+-b,c"), split here into the DNF the store's
 * parser hands the backend; the test trusts it to be well formed. */
static char *query(struct kv_backend *b, const char *expr, int *err)
{
	struct kv_query_factor f[32];
	size_t ends[32], nf = 0, nt = 0, n = 0, len = 0;
	char *copy = strdup(expr), *term, *tsave = NULL, *out;
	uint64_t *ids = NULL;
	int ret;

	assert_non_null(copy);
	for (term = strtok_r(copy, ",", &tsave); term; term = strtok_r(NULL, ",", &tsave)) {
		char *fsave = NULL;

		for (char *x = strtok_r(term, "+", &fsave); x; x = strtok_r(NULL, "+", &fsave))
			f[nf++] = (struct kv_query_factor){ x + (x[0] == '-'), x[0] == '-' };
		ends[nt++] = nf;
	}
	{
		struct kv_query_expr e = { f, nf, ends, nt };

		assert_non_null(b->ops->query);
		ret = b->ops->query(b, &e, &ids, &n);
	}
	free(copy);
	if (err)
		*err = ret;
	if (ret)
		return NULL;
	out = calloc(1, 21 * n + 1);
	assert_non_null(out);
	/* Sorted and unique: a set's SSCAN may repeat a member. */
	for (size_t i = 1; i < n; i++)
		for (size_t j = i; j > 0 && ids[j - 1] > ids[j]; j--) {
			uint64_t t = ids[j];

			ids[j] = ids[j - 1];
			ids[j - 1] = t;
		}
	for (size_t i = 0; i < n; i++)
		if (!i || ids[i] != ids[i - 1])
			len += (size_t)sprintf(out + len, "%s%llu", len ? "," : "",
					       (unsigned long long)ids[i]);
	free(ids);
	return out;
}

static void assert_query(struct kv_backend *b, const char *expr, const char *want)
{
	int err = 0;
	char *got = query(b, expr, &err);

	if (err)
		fail_msg("query %s: %s", expr, strerror(-err));
	if (strcmp(got, want))
		fail_msg("query %s: got \"%s\", want \"%s\"", expr, got, want);
	free(got);
}

/* Listings and queries by set operations on the tag sets (SSCAN, SINTER,
 * SUNION, SDIFF), in pages for a big set, leaving no temporary key. */
void test_query_set_operations(void **state)
{
	struct kv_backend *b;
	long long keys;
	int err = 0;

	(void)state;
	set_command_timeout(500);
	b = xload(NULL);
	assert_int_equal(put_key(b, 10, KV_ROOT_ID, "a", "blue,red", 0, "v", NULL), 0);
	assert_int_equal(put_key(b, 11, KV_ROOT_ID, "b", "red", 0, "v", NULL), 0);
	assert_int_equal(put_key(b, 12, KV_ROOT_ID, "c", "blue,green", 0, "v", NULL), 0);
	assert_int_equal(put_key(b, 13, KV_ROOT_ID, "d", "green,red", 0, "v", NULL), 0);
	assert_int_equal(put_key(b, 14, KV_ROOT_ID, "e", "green", 0, "v", NULL), 0);
	keys = cli_int("DBSIZE%s", "");

	/* A single tag by SSCAN, the rest by SINTER, SUNION and SDIFF. */
	assert_query(b, "red", "10,11,13");
	assert_query(b, "red+blue", "10");
	assert_query(b, "red+blue+green", "");
	assert_query(b, "red,green", "10,11,12,13,14");
	assert_query(b, "red+-blue", "11,13");
	assert_query(b, "green+-red+-blue", "14");
	assert_query(b, "-blue+red", "11,13");
	assert_query(b, "red+green,blue+-red", "12,13");
	assert_query(b, "red+red", "10,11,13");
	/* An unknown tag is an empty set, wherever it stands. */
	assert_query(b, "nosuch", "");
	assert_query(b, "red+nosuch", "");
	assert_query(b, "nosuch,blue", "10,12");
	assert_query(b, "red+-nosuch", "10,11,13");
	/* The temporary keys went with the script that made them. */
	assert_int_equal(cli_int("DBSIZE%s", ""), keys);
	assert_cli("EXISTS %s", "{nadb:default:default}:qtmp:0", "0");

	/* Commits move ids between the sets the queries read. */
	assert_int_equal(put_key(b, 11, KV_ROOT_ID, "b", "blue,red", 0, "w", NULL), 0);
	assert_int_equal(del_key(b, 10, 0), 0);
	assert_query(b, "red+blue", "11");
	assert_query(b, "red", "11,13");

	/* A set larger than an SSCAN page comes whole, in pages. */
	{
		enum { BIG = 2500 };
		struct kv_op *ops = calloc(BIG, sizeof(*ops));
		char *names = calloc(BIG, 8), *odd[2] = { "big", "odd" }, *even[1] = { "big" };
		char *got, *p;
		size_t count = 0;

		assert_non_null(ops);
		assert_non_null(names);
		for (size_t i = 0; i < BIG; i++) {
			snprintf(names + 8 * i, 8, "k%zu", i);
			ops[i].type = KV_OP_PUT;
			ops[i].meta.id = 1000 + i;
			ops[i].meta.parent = KV_ROOT_ID;
			ops[i].meta.name = names + 8 * i;
			ops[i].meta.mode = S_IFREG | 0644;
			ops[i].meta.tags = i % 2 ? odd : even;
			ops[i].meta.ntags = i % 2 ? 2 : 1;
		}
		assert_int_equal(b->ops->commit(b, ops, BIG), 0);
		free(ops);
		free(names);
		got = query(b, "big", NULL);
		assert_non_null(got);
		for (p = got; *p; p++)
			count += *p == ',';
		assert_int_equal(count + 1, BIG);
		assert_true(!strncmp(got, "1000,1001,", 10));
		free(got);
		got = query(b, "big+-odd", NULL);
		assert_non_null(got);
		count = 0;
		for (p = got; *p; p++)
			count += *p == ',';
		assert_int_equal(count + 1, BIG / 2);
		assert_true(!strncmp(got, "1000,1002,", 10));
		free(got);
	}

	/* Down: an error the store can fall back from, for either form. */
	redis_server_halt(&srv);
	assert_null(query(b, "red", &err));
	assert_int_equal(err, -EIO);
	assert_null(query(b, "red+blue", &err));
	assert_int_equal(err, -EIO);
	assert_int_equal(redis_server_resume(&srv), 0);
	kv_backend_close(b);
}

#define KT "{nadb:default:default}:"

static int commit_dir(struct kv_backend *b, uint64_t id, uint64_t parent, const char *name)
{
	struct kv_op op = { .type = KV_OP_PUT };

	op.meta.id = id;
	op.meta.parent = parent;
	op.meta.name = (char *)name;
	op.meta.mode = S_IFDIR | 0755;
	return b->ops->commit(b, &op, 1);
}

/* The ids of the last log entry if every mount is to fetch them ("*"). */
static char *refetched(void)
{
	char *last = cli("XREVRANGE " KT "log + - COUNT %s", "1"), *ids;

	ids = strstr(last, "\nby\n*\nids\n");
	ids = strdup(ids ? ids + strlen("\nby\n*\nids\n") : "");
	free(last);
	assert_non_null(ids);
	return ids;
}

static int cmp_ull(const void *a, const void *b)
{
	unsigned long long x = *(const unsigned long long *)a, y = *(const unsigned long long *)b;

	return (x > y) - (x < y);
}

/* The last entry's ids, in increasing order (the script's order is that
 * of a Lua table), are want's. */
static void assert_refetched(const char *want)
{
	char *ids = refetched(), *p = ids, got[256] = "";
	unsigned long long v[32];
	size_t n = 0, len = 0;

	while (*p && n < 32) {
		v[n++] = strtoull(p, &p, 10);
		while (*p == ' ')
			p++;
	}
	qsort(v, n, sizeof(v[0]), cmp_ull);
	for (size_t i = 0; i < n; i++)
		len += (size_t)snprintf(got + len, sizeof(got) - len, "%s%llu", i ? " " : "", v[i]);
	assert_string_equal(got, want);
	free(ids);
}

/*
 * A DEL of a directory whose entries in Redis name records or claims the
 * batch does not carry (another mount made them after the deleting mount
 * last looked) is not applied, nor that of a directory above it in the same
 * batch, whatever the order, and every mount is told (by "*") to fetch them
 * and what is below them. A whole tree deleted in one batch goes, in any
 * order; an entry whose record is gone keeps nothing. A PUT without a value
 * of a record another mount deleted, with its value, is not applied.
 */
void test_dir_delete_keeps_foreign_entries(void **state)
{
	struct kv_backend *b = xload(NULL);
	struct kv_op del2[2] = { { .type = KV_OP_DEL, .meta.id = 2 },
				 { .type = KV_OP_DEL, .meta.id = 3 } };
	struct kv_op rmr[2] = { { .type = KV_OP_DEL, .meta.id = 5 },
				{ .type = KV_OP_DEL, .meta.id = 6 } };
	struct kv_op rm4[4] = { { .type = KV_OP_DEL, .meta.id = 21 },
				{ .type = KV_OP_DEL, .meta.id = 22 },
				{ .type = KV_OP_DEL, .meta.id = 23 },
				{ .type = KV_OP_DEL, .meta.id = 20 } };
	uint64_t vver = 0;
	char vkey[64];

	(void)state;
	assert_int_equal(commit_dir(b, 2, 1, "d"), 0);
	assert_int_equal(put_key(b, 3, 2, "k", "", 0, "v", NULL), 0);

	/* d alone: kept, announced to every mount with what is in it. */
	assert_int_equal(del_key(b, 2, 0), 0);
	assert_int_equal(cli_int("EXISTS %s", KT "r:2"), 1);
	assert_int_equal(cli_int("SISMEMBER " KT "ids %s", "2"), 1);
	assert_cli("HGET " KT "d:1 %s", "d", "2");
	assert_refetched("2 3");

	/* d and k in one batch, the directory first: both go. */
	assert_int_equal(b->ops->commit(b, del2, 2), 0);
	assert_int_equal(cli_int("EXISTS %s", KT "r:2"), 0);
	assert_int_equal(cli_int("EXISTS %s", KT "r:3"), 0);
	assert_int_equal(cli_int("HEXISTS " KT "d:1 %s", "d"), 0);

	/* An entry left by a record that is gone keeps nothing. */
	assert_int_equal(commit_dir(b, 4, 1, "e"), 0);
	assert_cli("HSET " KT "d:4 ghost %s", "999", "1");
	assert_int_equal(del_key(b, 4, 0), 0);
	assert_int_equal(cli_int("EXISTS %s", KT "r:4"), 0);
	assert_int_equal(cli_int("HEXISTS " KT "d:1 %s", "e"), 0);

	/* p/q/x, x another mount's: deleting p and q in one batch, p first,
	 * keeps both. */
	assert_int_equal(commit_dir(b, 5, 1, "p"), 0);
	assert_int_equal(commit_dir(b, 6, 5, "q"), 0);
	assert_int_equal(put_key(b, 7, 6, "x", "", 0, "x", NULL), 0);
	assert_int_equal(b->ops->commit(b, rmr, 2), 0);
	assert_cli("HGET " KT "d:1 %s", "p", "5");
	assert_cli("HGET " KT "d:5 %s", "q", "6");
	assert_refetched("5 6 7");

	/* Deleted with its value by another mount, then changed here without
	 * a new value (a chmod): the deletion stands. */
	assert_int_equal(put_key(b, 8, 1, "m", "", 0, "data", &vver), 0);
	assert_int_equal(del_key(b, 8, vver), 0);
	assert_int_equal(put_key(b, 8, 1, "m", "", 0, NULL, &vver), 0);
	assert_int_equal(cli_int("EXISTS %s", KT "r:8"), 0);
	assert_int_equal(cli_int("HEXISTS " KT "d:1 %s", "m"), 0);
	assert_int_equal(cli_int("SISMEMBER " KT "ids %s", "8"), 0);
	assert_refetched("8");

	/* The same while a backup of the deleting mount pinned the value
	 * (its DEL leaves the value, old_vver 0, reclaimed after the backup):
	 * the deletion stands all the same, or the key would come back
	 * without a value once the backup ends. */
	vver = 0;
	assert_int_equal(put_key(b, 9, 1, "m2", "", 0, "data", &vver), 0);
	assert_int_equal(del_key(b, 9, 0), 0);
	snprintf(vkey, sizeof(vkey), KT "v:9:%llu", (unsigned long long)vver);
	assert_int_equal(cli_int("EXISTS %s", vkey), 1);
	assert_int_equal(put_key(b, 9, 1, "m2", "", 0, NULL, &vver), 0);
	assert_int_equal(cli_int("EXISTS %s", KT "r:9"), 0);
	assert_int_equal(cli_int("HEXISTS " KT "d:1 %s", "m2"), 0);
	assert_int_equal(cli_int("SISMEMBER " KT "ids %s", "9"), 0);
	assert_refetched("9");

	/* big/{f1,f2,sub/x}, x another mount's; rm -r of big in one batch
	 * deletes f1 and f2 but keeps sub and big: only those and x are to be
	 * fetched, not the files this batch deleted. */
	assert_int_equal(commit_dir(b, 20, 1, "big"), 0);
	assert_int_equal(put_key(b, 21, 20, "f1", "", 0, "1", NULL), 0);
	assert_int_equal(put_key(b, 22, 20, "f2", "", 0, "2", NULL), 0);
	assert_int_equal(commit_dir(b, 23, 20, "sub"), 0);
	assert_int_equal(put_key(b, 24, 23, "x", "", 0, "x", NULL), 0);
	assert_int_equal(b->ops->commit(b, rm4, 4), 0);
	assert_int_equal(cli_int("EXISTS %s", KT "r:21"), 0);
	assert_int_equal(cli_int("EXISTS %s", KT "r:20"), 1);
	assert_refetched("20 23 24");
	b->ops->close(b);
}

/* A commit of new records (kv_op.never_sent) with values, and a deadline
 * unless expires_ms is 0. */
static int commit_new(struct kv_backend *b, uint64_t first, int n, bool compact,
		      int64_t expires_ms)
{
	struct kv_op ops[4];
	struct kv_value *v[4];
	char names[4][8];
	int ret;

	assert_true(n <= 4);
	memset(ops, 0, sizeof(ops));
	for (int i = 0; i < n; i++) {
		snprintf(names[i], sizeof(names[i]), "s%d", (int)(first + (uint64_t)i));
		v[i] = kv_value_from_buf("value", 5);
		assert_non_null(v[i]);
		ops[i].type = KV_OP_PUT;
		ops[i].never_sent = true;
		ops[i].may_yield = compact;
		ops[i].meta.id = first + (uint64_t)i;
		ops[i].meta.parent = KV_ROOT_ID;
		ops[i].meta.name = names[i];
		ops[i].meta.mode = S_IFREG | 0644;
		ops[i].meta.size = 5;
		ops[i].meta.expires_ms = expires_ms;
		ops[i].value = v[i];
	}
	ret = b->ops->commit(b, ops, (size_t)n);
	for (int i = 0; i < n; i++)
		kv_value_free(v[i]);
	return ret;
}

static void assert_nothing_staged(void)
{
	char *keys = cli("--scan --pattern %s", "'" KT "up*'");

	assert_string_equal(keys, "");
	free(keys);
}

/*
 * What a commit writes ahead of its script (backend_redis_stage.c): listed
 * under a marker that the script removes, removed with its writes when a
 * plain write fails (the script is then never sent), and removed by the
 * sweep when a commit left it behind an hour ago.
 */
void test_staged_writes(void **state)
{
	struct kv_backend *b;
	size_t n;
	char when[32];

	(void)state;
	b = xload(NULL);
	/* Committed, compact ops and others: no marker stays. */
	assert_int_equal(commit_new(b, 100, 2, true, 0), 0);
	assert_int_equal(commit_new(b, 102, 2, false, 0), 0);
	assert_cli("HGET " KT "d:1 %s", "s101", "101");
	assert_cli("HGET " KT "d:1 %s", "s103", "103");
	assert_nothing_staged();

	/* A plain write refused (the key of a record's index copy is of
	 * another type): the commit fails, the script never runs, and what it
	 * wrote is gone. */
	assert_cli("SET " KT "i:111 %s", "in-the-way", "OK");
	assert_int_equal(cli_int("GET " KT "vver%s", ""), 4);
	assert_true(commit_new(b, 110, 2, true, wall_ms() + 600000) < 0);
	assert_int_equal(cli_int("EXISTS " KT "r:110 " KT "i:110 " KT "r:111 %s", KT "v:110:5"),
			 0);
	assert_int_equal(cli_int("EXISTS %s", KT "v:111:6"), 0);
	assert_int_equal(cli_int("HEXISTS " KT "d:1 %s", "s110"), 0);
	assert_nothing_staged();
	/* i:111 went too: the marker lists it as the commit's own. */
	assert_int_equal(cli_int("EXISTS %s", KT "i:111"), 0);

	/* Left behind: the sweep removes an hour-old marker's writes, except
	 * the hashes of a record that a later commit published, and leaves a
	 * recent marker alone. */
	assert_cli("SET " KT "up:dead:1 %s", "'120 120:900 121 121:901'", "OK");
	snprintf(when, sizeof(when), "%lld", (long long)(wall_ms() - 3600 * 1000 - 1));
	assert_cli("ZADD " KT "up %s dead:1", when, "1");
	assert_cli("SET " KT "up:live:1 %s", "'130 130:902'", "OK");
	snprintf(when, sizeof(when), "%lld", (long long)wall_ms());
	assert_cli("ZADD " KT "up %s live:1", when, "1");
	assert_cli("MSET " KT "v:120:900 a " KT "v:121:901 b " KT "v:130:902 %s", "c", "OK");
	assert_cli("SET " KT "r:120 %s", "x", "OK");
	assert_cli("HSET " KT "i:120 p %s", "1", "1");
	assert_int_equal(put_key(b, 121, KV_ROOT_ID, "published", "", 0, "v", NULL), 0);
	assert_int_equal(b->ops->sweep(b, wall_ms(), 1000, &n), 0);
	assert_int_equal(cli_int("EXISTS " KT "v:120:900 " KT "v:121:901 " KT "r:120 %s",
				 KT "i:120"), 0);
	assert_int_equal(cli_int("EXISTS %s", KT "r:121"), 1);
	assert_int_equal(cli_int("EXISTS " KT "up:dead:1 %s", KT "v:130:902"), 1);
	assert_cli("ZRANGE " KT "up 0 %s", "-1", "live:1");
	b->ops->close(b);
}

/* Runs the commit script on one compact op (id 200, "k200" in the root,
 * value version 7) whose writes were staged under marker. Its reply. */
static char *script_with_marker(const char *sha, const char *marker)
{
	char cmd[512];

	assert_cli("SET " KT "v:200:7 %s", "x", "OK");
	assert_cli("SET " KT "r:200 %s", "x", "OK");
	snprintf(cmd, sizeof(cmd),
		 "EVALSHA %s 1 " KT "ids " KT " %lld 200 0123456789abcdef '' '' '%s' 1 "
		 "200 1 k200 '' 7", sha, (long long)wall_ms(), marker);
	return cli("%s", cmd);
}

/* The script publishes nothing of a batch whose marker is gone: a sweep
 * took it, with the writes it listed (the marker's age is read on the
 * mounts' clocks, so a clock an hour ahead could do that early). */
void test_script_refuses_swept_batch(void **state)
{
	char path[] = "/tmp/nadbfs-script-XXXXXX", when[32], *sha, *out;
	int fd;

	(void)state;
	fd = mkstemp(path);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, kv_redis_script, strlen(kv_redis_script)),
			 (ssize_t)strlen(kv_redis_script));
	close(fd);
	sha = cli("-x SCRIPT LOAD < %s", path);
	unlink(path);
	assert_int_equal(strlen(sha), 40);

	out = script_with_marker(sha, "gone:1");
	assert_non_null(strstr(out, "swept"));
	free(out);
	assert_int_equal(cli_int("EXISTS " KT "v:200:7 %s", KT "r:200"), 0);
	assert_int_equal(cli_int("HEXISTS " KT "d:1 %s", "k200"), 0);

	/* The same batch with its marker in place is published, and the
	 * marker goes. */
	assert_cli("SET " KT "up:here:1 %s", "'200 200:7'", "OK");
	snprintf(when, sizeof(when), "%lld", (long long)wall_ms());
	assert_cli("ZADD " KT "up %s here:1", when, "1");
	out = script_with_marker(sha, "here:1");
	free(out);
	assert_cli("HGET " KT "d:1 %s", "k200", "200");
	assert_int_equal(cli_int("SISMEMBER " KT "ids %s", "200"), 1);
	assert_int_equal(cli_int("EXISTS " KT "v:200:7 %s", KT "r:200"), 2);
	assert_nothing_staged();
	free(sha);
}

/*
 * A pipeline far larger than the socket holds (backend_redis_pipe.c), sent
 * while another client keeps the server busy: the non-blocking sends stop
 * part way into commands and the buffer is cut and resent; past the hold
 * limit the sender waits. Every command must arrive whole and in order:
 * each key ends with the value written last, and every reply is OK.
 */
void test_pipeline_survives_a_busy_server(void **state)
{
	static const char busy[] = "local t0 = redis.call('TIME')\n"
				   "local s = t0[1] * 1000000 + t0[2]\n"
				   "repeat local t = redis.call('TIME')\n"
				   "until t[1] * 1000000 + t[2] - s > 200000\n"
				   "return 1";
	struct kv_backend *b = xload(NULL);
	struct kv_redis *r = (struct kv_redis *)b;
	struct kv_redis_conn *conn;
	struct kv_redis_pipe pp;
	redisContext *other = redisConnectUnix(srv.sock);
	redisReply *rep;
	char *val = malloc(3000), key[32];
	int done = 0, rounds = 4, keys = 1000;

	(void)state;
	assert_non_null(val);
	assert_non_null(other);
	assert_int_equal(other->err, 0);
	/* The busy script goes out first, without waiting for its reply. */
	assert_int_equal(redisAppendCommand(other, "EVAL %s 0", busy), REDIS_OK);
	while (!done)
		assert_int_equal(redisBufferWrite(other, &done), REDIS_OK);

	assert_int_equal(kv_redis_get(r, &conn), 0);
	kv_redis_pipe_init(&pp, r, conn->c, "test");
	/* 4 rounds of 1000 keys of ~3000 bytes: 12 MB, 3 times the hold;
	 * values of odd lengths so that cuts fall anywhere in a command. */
	for (int round = 0; round < rounds; round++) {
		for (int k = 0; k < keys; k++) {
			size_t len = 2000 + (size_t)((k * 7 + round * 13) % 997);
			const char *argv[] = { "SET", key, val };
			size_t lens[] = { 3, 0, len };

			snprintf(key, sizeof(key), "pipe:%d", k);
			lens[1] = strlen(key);
			memset(val, 'a' + round, len);
			snprintf(val, 24, "%d/%d/%zu:", round, k, len);
			assert_int_equal(kv_redis_pipe_append(&pp, 3, argv, lens), 0);
		}
	}
	assert_int_equal(pp.pending, (size_t)(rounds * keys));
	assert_int_equal(kv_redis_pipe_drain(&pp), 0);
	assert_int_equal(pp.pending, 0);
	kv_redis_pipe_done(&pp);
	kv_redis_put(r, conn, false);

	assert_int_equal(redisGetReply(other, (void **)&rep), REDIS_OK);
	assert_int_equal(rep->type, REDIS_REPLY_INTEGER);
	freeReplyObject(rep);
	redisFree(other);

	/* Each key holds its last round's value, whole (checked by the
	 * server, every key). */
	assert_int_equal(cli_int("EVAL \"local good = 0\n"
				 "for k = 0, 999 do\n"
				 "  local len = 2000 + (k * 7 + 3 * 13) %% 997\n"
				 "  local v = redis.call('GET', 'pipe:' .. k)\n"
				 "  local head = '3/' .. k .. '/' .. len .. ':'\n"
				 "  if v and #v == len and v:sub(1, #head) == head and\n"
				 "     v:sub(-1) == 'd' then good = good + 1 end\n"
				 "end\n"
				 "return good\" 0%s", ""),
			 keys);
	free(val);
	b->ops->close(b);
}
