/*
 * Tags on a store that several mounts share (two mountpoints on one private
 * redis-server, tests/pair.h): a retag, an expiry and a declared tag made
 * through one mount are seen through the other; listings and queries are
 * evaluated by Redis's tag sets and stay exact with unflushed changes.
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "tests/pair.h"

static void test_retag_and_expiry(void **state)
{
	struct pair *p = start_pair(state, OPTS);
	char buf[256];
	ssize_t n = -1;

	put_str(mnt_path(&p->a, "t"), "tagged\n");
	await_file(mnt_path(&p->b, "t"), "tagged\n");
	ASSERT_ERRNO(getxattr(mnt_path(&p->b, "t"), "user.tags", buf, sizeof(buf)), ENODATA);
	ASSERT_SYS(setxattr(mnt_path(&p->a, "t"), "user.tags", "red,blue", 8, 0));
	for (int64_t deadline = now_ms() + CATCH_UP_MS;;) {
		n = getxattr(mnt_path(&p->b, "t"), "user.tags", buf, sizeof(buf) - 1);
		if (n == 8 && !memcmp(buf, "blue,red", 8))
			break;
		if (now_ms() > deadline)
			fail_msg("tags not seen through the other mount");
		usleep(10000);
	}
	await_listed(mnt_path(&p->b, "tags/red"), "t", true);
	ASSERT_SYS(setxattr(mnt_path(&p->b, "t"), "user.tags", "blue", 4, 0));
	await_listed(mnt_path(&p->a, "tags"), "red", false);

	/* A TTL set through a expires the key through b as well. */
	put_str(mnt_path(&p->a, "brief"), "soon gone\n");
	await_file(mnt_path(&p->b, "brief"), "soon gone\n");
	ASSERT_SYS(setxattr(mnt_path(&p->a, "brief"), "user.ttl", "1", 1, 0));
	for (int64_t deadline = now_ms() + CATCH_UP_MS;;) {
		n = getxattr(mnt_path(&p->b, "brief"), "user.ttl", buf, sizeof(buf) - 1);
		if (n > 0)
			break;
		if (now_ms() > deadline)
			fail_msg("the TTL is not seen through the other mount");
		usleep(10000);
	}
	await_file(mnt_path(&p->b, "brief"), NULL);
	await_listed(p->b.dir, "brief", false);
	await_file(mnt_path(&p->a, "brief"), NULL);
	stop_pair(p);
}

/* query_cache.<field> of the mount's .nadb/stats. */
static long long query_stat(struct mnt *m, const char *field)
{
	char *text = read_file(mnt_path(m, ".nadb/stats"), NULL);
	json_t *o, *v;
	long long n;

	assert_non_null(text);
	o = json_loads(text, 0, NULL);
	free(text);
	assert_non_null(o);
	v = json_object_get(json_object_get(o, "query_cache"), field);
	assert_true(json_is_integer(v));
	n = json_integer_value(v);
	json_decref(o);
	return n;
}

/*
 * Tag listings and queries are evaluated by Redis (the stats count them),
 * see what Redis's tag sets hold ahead of the change log, and stay exact
 * with this mount's unflushed changes (b never flushes on its own).
 */
static void test_tag_queries_by_redis(void **state)
{
	struct pair *p = *state;
	struct mnt *a = &p->a, *b = &p->b;
	const char *id4;
	long long q0;

	a->backend = MNT_BACKEND_REDIS;
	mnt_start(a, OPTS);
	mnt_init_shared(b, a, "mnt2");
	mnt_start(b, "flush_interval=1h");
	put_str(mnt_path(a, "k1"), "1\n");
	put_str(mnt_path(a, "k2"), "2\n");
	put_str(mnt_path(a, "k3"), "3\n");
	put_str(mnt_path(a, "k4"), "4\n");
	ASSERT_SYS(setxattr(mnt_path(a, "k1"), "user.tags", "red,blue", 8, 0));
	ASSERT_SYS(setxattr(mnt_path(a, "k2"), "user.tags", "red", 3, 0));
	ASSERT_SYS(setxattr(mnt_path(a, "k3"), "user.tags", "blue", 4, 0));
	ASSERT_SYS(setxattr(mnt_path(a, "k4"), "user.tags", "green", 5, 0));
	flush_mount(a, "k1");
	await_names(b, "tags/red", "k1,k2");
	await_names(b, "tags/green", "k4");
	await_names(b, "tags/blue", "k1,k3");

	q0 = query_stat(b, "backend");
	/* SINTER, SDIFF, SUNION. */
	assert_string_equal(mnt_ls(b, "tags/red+blue"), "k1");
	assert_string_equal(mnt_ls(b, "tags/red+-blue"), "k2");
	assert_string_equal(mnt_ls(b, "tags/red,green"), "k1,k2,k4");
	assert_string_equal(mnt_ls(b, "tags/blue+-red,green"), "k3,k4");
	assert_string_equal(mnt_ls(b, "tags/red+nosuch"), "");
	assert_true(query_stat(b, "backend") >= q0 + 5);
	assert_int_equal(query_stat(b, "backend_fallbacks"), 0);
	/* Every listed entry can be looked up and read through. */
	assert_file_str(mnt_path(b, "tags/red+blue/k1"), "1\n");

	/* Another mount retags and flushes: b's listings follow. */
	ASSERT_SYS(setxattr(mnt_path(a, "k3"), "user.tags", "blue,red", 8, 0));
	flush_mount(a, "k3");
	await_names(b, "tags/red", "k1,k2,k3");
	await_names(b, "tags/red+blue", "k1,k3");

	/* A tag set changed in Redis itself, with no change log entry: only
	 * an evaluation by Redis can see it (b's own index says k4 is green
	 * only), and a query b never asked before does. */
	id4 = rcli(a, "HGET " TT "d:1 %s", "k4");
	assert_true(*id4);
	rcli(a, "SADD " TT "t:red %s", id4);
	assert_string_equal(mnt_ls(b, "tags/green+red"), "k4");
	assert_file_str(mnt_path(b, "tags/green+red/k4"), "4\n");
	rcli(a, "SREM " TT "t:red %s", id4);

	/* Unflushed changes on b: a retag, a new key, a delete. Redis still
	 * has the old sets; b's listings are exact all the same. */
	q0 = query_stat(b, "backend");
	ASSERT_SYS(setxattr(mnt_path(b, "k2"), "user.tags", "blue", 4, 0));
	put_str(mnt_path(b, "k5"), "5\n");
	ASSERT_SYS(setxattr(mnt_path(b, "k5"), "user.tags", "green,red", 9, 0));
	ASSERT_SYS(unlink(mnt_path(b, "k1")));
	assert_string_equal(rcli(a, "SCARD " TT "t:red%s", ""), "3");
	assert_string_equal(rcli(a, "EXISTS " TT "t:blue%s", ""), "1");
	assert_string_equal(mnt_ls(b, "tags/red"), "k3,k5");
	assert_string_equal(mnt_ls(b, "tags/red+blue"), "k3");
	assert_string_equal(mnt_ls(b, "tags/blue+-red"), "k2");
	assert_string_equal(mnt_ls(b, "tags/red+green"), "k5");
	assert_string_equal(mnt_ls(b, "tags/green,blue"), "k2,k3,k4,k5");
	assert_file_str(mnt_path(b, "tags/red+green/k5"), "5\n");
	assert_true(query_stat(b, "backend") >= q0 + 5);
	assert_int_equal(query_stat(b, "backend_fallbacks"), 0);
	/* Redis still had k1 and k2 in red: the unflushed state won. */
	assert_string_equal(rcli(a, "SCARD " TT "t:red%s", ""), "3");

	/* Once b flushes, a sees the same. */
	flush_mount(b, "k5");
	await_names(a, "tags/red", "k3,k5");
	await_names(a, "tags/blue+-red", "k2");
	stop_pair(p);
}

/* Both mounts list want in tags/. */
static void await_tags(struct pair *p, const char *want)
{
	await_names(&p->a, "tags", want);
	await_names(&p->b, "tags", want);
}

/*
 * Declared tags (mkdir tags/X) are shared: each mount's mkdir and rmdir
 * reach the other, also when both changed the list before either flushed
 * (each commit adds and removes its own, T:decl), and a fresh mount loads
 * them. A store whose set is missing (written before it existed) keeps the
 * root record's list, from which the set is seeded on the next change.
 */
static void test_declared_tags_shared(void **state)
{
	struct pair *p = start_pair(state, OPTS_MANUAL);
	struct mnt *a = &p->a, *b = &p->b;

	/* Both declare before either flushes: neither list wins whole. */
	ASSERT_SYS(mkdir(mnt_path(a, "tags/red"), 0755));
	ASSERT_SYS(mkdir(mnt_path(b, "tags/blue"), 0755));
	put_str(mnt_path(a, "ka"), "a");
	put_str(mnt_path(b, "kb"), "b");
	flush_all(a);
	flush_all(b);
	await_tags(p, "blue,red");
	assert_string_equal(rcli(a, "SISMEMBER " TT "decl %s", "red"), "1");
	assert_string_equal(rcli(a, "SISMEMBER " TT "decl %s", "blue"), "1");
	/* The root is in no tag set: its tags are not a key's. */
	assert_string_equal(rcli(a, "EXISTS " TT "t:red%s", ""), "0");

	/* One removes, the other declares, both unflushed. */
	ASSERT_SYS(rmdir(mnt_path(a, "tags/red")));
	ASSERT_SYS(mkdir(mnt_path(b, "tags/green"), 0755));
	flush_all(b);
	flush_all(a);
	await_tags(p, "blue,green");

	/* A tag a key carries stays when its declaration goes elsewhere. */
	ASSERT_SYS(setxattr(mnt_path(a, "ka"), "user.tags", "blue", 4, 0));
	flush_all(a);
	await_names(b, "tags/blue", "ka");
	ASSERT_SYS(rmdir(mnt_path(b, "tags/green")));
	ASSERT_ERRNO(rmdir(mnt_path(b, "tags/blue")), ENOTEMPTY);
	flush_all(b);
	await_tags(p, "blue");

	/* A fresh mount loads what both declared. */
	ASSERT_SYS(mkdir(mnt_path(b, "tags/cyan"), 0755));
	flush_all(b);
	await_tags(p, "blue,cyan");
	mnt_stop(b);
	mnt_stop(a);
	mnt_start(a, OPTS_MANUAL);
	assert_string_equal(mnt_ls(a, "tags"), "blue,cyan");

	/* Without the set, the root record's list stands; the next change
	 * seeds the set with it. */
	rcli(a, "DEL " TT "decl%s", "");
	mnt_stop(a);
	mnt_start(a, OPTS_MANUAL);
	assert_string_equal(mnt_ls(a, "tags"), "blue,cyan");
	ASSERT_SYS(mkdir(mnt_path(a, "tags/mauve"), 0755));
	flush_all(a);
	assert_string_equal(rcli(a, "SCARD " TT "decl%s", ""), "4");
	mnt_stop(a);
	mnt_start(a, OPTS_MANUAL);
	assert_string_equal(mnt_ls(a, "tags"), "blue,cyan,mauve");
}

#define T(f) cmocka_unit_test_setup_teardown(f, pair_setup, pair_teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		T(test_retag_and_expiry),
		T(test_tag_queries_by_redis),
		T(test_declared_tags_shared),
	};

	if (getenv("TF")) cmocka_set_test_filter(getenv("TF"));
	return cmocka_run_group_tests_name("redis tags", tests, NULL, NULL);
}
