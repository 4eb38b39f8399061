/*
 * TTL in the store: user.ttl set/get/remove and its bad values, exact expiry
 * on access, the sweeper (and its callback) with no access at all, deadlines
 * kept across rewrite, rename and reopen, default_ttl.
 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <cmocka.h>

#include "store/kv.h"
#include "tests/mem_backend.h"

struct fx {
	struct mem_state s;
	struct kv_options o;
	struct kv_store *kv;
	atomic_int expired_calls;
	uint64_t expired_parent, expired_id;
	char expired_name[64];
};

static void on_expire(void *arg, uint64_t parent, const char *name, uint64_t id)
{
	struct fx *f = arg;

	f->expired_parent = parent;
	f->expired_id = id;
	snprintf(f->expired_name, sizeof(f->expired_name), "%s", name);
	atomic_fetch_add(&f->expired_calls, 1);
}

static void reopen(struct fx *f)
{
	char err[256];

	f->o.backend_instance = mem_backend_new(&f->s);
	assert_int_equal(kv_open(&f->o, &f->kv, err, sizeof(err)), 0);
	kv_set_expire_fn(f->kv, on_expire, f);
	assert_int_equal(kv_start(f->kv), 0);
}

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));

	mem_state_init(&f->s);
	f->o.buffer_size = 1 << 20;
	f->o.flush_interval_ms = 60000;
	f->o.backend_timeout_ms = 5000;
	f->o.max_value_size = 1 << 20;
	f->o.ttl_sweep_ms = 1000;
	reopen(f);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;

	assert_int_equal(kv_close(f->kv), 0);
	mem_state_destroy(&f->s);
	free(f);
	return 0;
}

static uint64_t mkkey(struct fx *f, const char *name)
{
	struct kv_attr a;

	assert_int_equal(kv_create(f->kv, KV_ROOT_ID, name, 0644, 0, 0, true, &a), 0);
	assert_int_equal(kv_write(f->kv, a.id, "value", 5, 0), 5);
	return a.id;
}

/* user.ttl as a number, or the negative errno. */
static long ttl_of(struct fx *f, uint64_t id)
{
	char buf[32];
	ssize_t n = kv_getxattr(f->kv, id, "user.ttl", buf, sizeof(buf) - 1);

	if (n < 0)
		return n;
	buf[n] = 0;
	return strtol(buf, NULL, 10);
}

static void set_ttl(struct fx *f, uint64_t id, const char *v, int want)
{
	assert_int_equal(kv_setxattr(f->kv, id, "user.ttl", v, strlen(v), 0), want);
}

static void test_set_get_remove(void **state)
{
	struct fx *f = *state;
	uint64_t id = mkkey(f, "k");
	char list[64];

	assert_int_equal(ttl_of(f, id), -ENODATA);
	set_ttl(f, id, "100", 0);
	assert_int_equal(ttl_of(f, id), 100); /* rounded up: never 99 right after */
	assert_int_equal(kv_listxattr(f->kv, id, list, sizeof(list)), 9);
	assert_string_equal(list, "user.ttl");
	assert_true(kv_getxattr(f->kv, id, "user.nadb.expires", list, sizeof(list)) == 30);
	assert_int_equal(kv_removexattr(f->kv, id, "user.ttl"), 0);
	assert_int_equal(ttl_of(f, id), -ENODATA);
	assert_int_equal(kv_removexattr(f->kv, id, "user.ttl"), -ENODATA);
	assert_int_equal(kv_getxattr(f->kv, id, "user.nadb.expires", list, sizeof(list)),
			 -ENODATA);
	assert_int_equal(kv_listxattr(f->kv, id, list, sizeof(list)), 0);
}

static void test_bad_values_change_nothing(void **state)
{
	struct fx *f = *state;
	uint64_t id = mkkey(f, "k");
	const char *bad[] = { "0", "-1", "+5", "abc", "1.5", "", " 5", "5 ", "5\n", "0x10",
			      "99999999999999999999", "4000000000" };
	struct kv_attr a;

	set_ttl(f, id, "100", 0);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		set_ttl(f, id, bad[i], -EINVAL);
	assert_int_equal(ttl_of(f, id), 100);
	assert_int_equal(kv_mkdir(f->kv, KV_ROOT_ID, "d", 0755, 0, 0, &a), 0);
	set_ttl(f, a.id, "5", -ENOTSUP);
	assert_int_equal(ttl_of(f, a.id), -ENOTSUP);
}

static void test_expired_on_access(void **state)
{
	struct fx *f = *state;
	struct kv_meta m = { .id = 500, .parent = KV_ROOT_ID, .name = "old",
			     .mode = S_IFREG | 0644, .expires_ms = 1000 /* 1970 */ };
	struct kv_attr a;
	char buf[8];

	assert_int_equal(kv_close(f->kv), 0);
	mem_put_raw(&f->s, &m);
	reopen(f);
	assert_int_equal(kv_lookup(f->kv, KV_ROOT_ID, "old", &a), -ENOENT);
	assert_int_equal(kv_getattr(f->kv, 500, &a), -ENOENT);
	assert_int_equal(kv_read(f->kv, 500, buf, sizeof(buf), 0), -ENOENT);
	assert_int_equal(kv_flush(f->kv), 0);
	assert_null(mem_find_id(&f->s, 500)); /* and gone from the backend */
}

static void test_sweeper_expires_untouched_keys(void **state)
{
	struct fx *f = *state;
	struct timespec now;

	assert_int_equal(kv_close(f->kv), 0);
	clock_gettime(CLOCK_REALTIME, &now);
	struct kv_meta m = { .id = 600, .parent = KV_ROOT_ID, .name = "soon",
			     .mode = S_IFREG | 0644,
			     .expires_ms = now.tv_sec * 1000 + now.tv_nsec / 1000000 + 300 };
	mem_put_raw(&f->s, &m);
	f->o.ttl_sweep_ms = 60000; /* the deadline, not the period, must wake it */
	reopen(f);
	/* Nothing touches the key: wait for the sweeper's callback. */
	for (int i = 0; i < 500 && !atomic_load(&f->expired_calls); i++) {
		struct timespec ts = { 0, 10 * 1000000 };

		nanosleep(&ts, NULL);
	}
	assert_int_equal(atomic_load(&f->expired_calls), 1);
	assert_int_equal(f->expired_parent, KV_ROOT_ID);
	assert_int_equal(f->expired_id, 600);
	assert_string_equal(f->expired_name, "soon");
	assert_int_equal(kv_flush(f->kv), 0);
	pthread_mutex_lock(&f->s.lock);
	assert_null(mem_find_id(&f->s, 600));
	pthread_mutex_unlock(&f->s.lock);
}

static void test_kept_across_rewrite_rename_reopen(void **state)
{
	struct fx *f = *state;
	uint64_t id = mkkey(f, "k");
	struct kv_attr a;
	char before[40], after[40];

	set_ttl(f, id, "1000", 0);
	assert_int_equal(kv_getxattr(f->kv, id, "user.nadb.expires", before, sizeof(before)), 30);
	assert_int_equal(kv_open_file(f->kv, id, true), 0);
	assert_int_equal(kv_write(f->kv, id, "rewritten", 9, 0), 9);
	kv_release_file(f->kv, id);
	assert_int_equal(kv_rename(f->kv, KV_ROOT_ID, "k", KV_ROOT_ID, "k2", 0), 0);
	assert_int_equal(kv_close(f->kv), 0);
	reopen(f);
	assert_int_equal(kv_lookup(f->kv, KV_ROOT_ID, "k2", &a), 0);
	assert_int_equal(kv_getxattr(f->kv, a.id, "user.nadb.expires", after, sizeof(after)), 30);
	assert_memory_equal(before, after, 30);
	assert_true(ttl_of(f, a.id) > 990 && ttl_of(f, a.id) <= 1000);
}

static void test_ttl_never_rewrites_the_value(void **state)
{
	struct fx *f = *state;
	uint64_t id = mkkey(f, "k");

	assert_int_equal(kv_flush(f->kv), 0);
	set_ttl(f, id, "60", 0);
	assert_int_equal(kv_flush(f->kv), 0);
	assert_int_equal(f->s.puts_with_value, 0);
	assert_int_equal(mem_find_id(&f->s, id)->m.expires_ms != 0, 1);
}

static void test_default_ttl(void **state)
{
	struct fx *f = *state;
	struct kv_attr a;

	assert_int_equal(kv_close(f->kv), 0);
	f->o.default_ttl_s = 50;
	reopen(f);
	assert_int_equal(kv_create(f->kv, KV_ROOT_ID, "new", 0644, 0, 0, true, &a), 0);
	assert_int_equal(ttl_of(f, a.id), 50);
	assert_int_equal(kv_mkdir(f->kv, KV_ROOT_ID, "dir", 0755, 0, 0, &a), 0);
	assert_int_equal(ttl_of(f, a.id), -ENOTSUP); /* keys only */
}

/* An open key that expires keeps its bytes for its handles, as after unlink;
 * the DEL waits for the last release. */
static void test_expired_open_key_keeps_its_bytes(void **state)
{
	struct fx *f = *state;
	uint64_t id = mkkey(f, "k");
	struct kv_attr a;
	char buf[16];
	int64_t until;

	assert_int_equal(kv_flush(f->kv), 0);
	kv_close(f->kv);
	reopen(f); /* the value is only in the backend now */
	assert_int_equal(kv_open_file(f->kv, id, false), 0);
	set_ttl(f, id, "1", 0);
	until = time(NULL) + 5;
	while (kv_lookup(f->kv, KV_ROOT_ID, "k", &a) == 0 && time(NULL) < until) {
		struct timespec ts = { 0, 20 * 1000000 };

		nanosleep(&ts, NULL);
	}
	assert_int_equal(kv_lookup(f->kv, KV_ROOT_ID, "k", &a), -ENOENT);
	assert_int_equal(kv_flush(f->kv), 0);
	assert_int_equal(kv_read(f->kv, id, buf, sizeof(buf), 0), 5);
	assert_memory_equal(buf, "value", 5);
	kv_release_file(f->kv, id);
	assert_int_equal(kv_flush(f->kv), 0);
	assert_null(mem_find_id(&f->s, id));
}

/* Records that cannot reach the root (below a record whose parent is
 * missing, or in a cycle of parents) are recovered into lost+found with
 * their deadlines, and nothing is deleted from the backend. */
static void test_unreachable_records_recovered(void **state)
{
	struct fx *f = *state;
	struct kv_meta lost = { .id = 800, .parent = 999, .name = "lost", .mode = S_IFDIR | 0755 };
	struct kv_meta child = { .id = 801, .parent = 800, .name = "c", .mode = S_IFREG | 0644,
				 .expires_ms = 4000000000000 };
	struct kv_meta c1 = { .id = 810, .parent = 811, .name = "a", .mode = S_IFDIR | 0755 };
	struct kv_meta c2 = { .id = 811, .parent = 810, .name = "b", .mode = S_IFDIR | 0755 };
	struct kv_attr lf, at;
	struct kv_stats st;

	assert_int_equal(kv_close(f->kv), 0);
	mem_put_raw(&f->s, &lost);
	mem_put_raw(&f->s, &child);
	mem_put_raw(&f->s, &c1);
	mem_put_raw(&f->s, &c2);
	reopen(f);
	kv_get_stats(f->kv, &st);
	assert_int_equal(st.keys, 1);
	assert_int_equal(st.dirs, 4);
	assert_int_equal(st.ttl_pending, 1);
	assert_int_equal(kv_lookup(f->kv, KV_ROOT_ID, "lost+found", &lf), 0);
	assert_int_equal(kv_lookup(f->kv, lf.id, "800-lost", &at), 0);
	assert_int_equal(kv_lookup(f->kv, at.id, "c", &at), 0);
	assert_int_equal(at.id, 801);
	/* The cycle is cut at one of its two members. */
	if (kv_lookup(f->kv, lf.id, "810-a", &at) == 0)
		assert_int_equal(kv_lookup(f->kv, at.id, "b", &at), 0);
	else
		assert_int_equal(kv_lookup(f->kv, lf.id, "811-b", &at), 0);
	assert_int_equal(kv_flush(f->kv), 0);
	assert_int_equal(mem_find_id(&f->s, 800)->m.parent, lf.id);
	assert_int_equal(mem_find_id(&f->s, 801)->m.parent, 800);
	assert_int_equal(mem_find_id(&f->s, 801)->m.expires_ms, 4000000000000);
	assert_non_null(mem_find_id(&f->s, 810));
	assert_non_null(mem_find_id(&f->s, 811));
}

static void test_ttl_flags_and_pending_count(void **state)
{
	struct fx *f = *state;
	uint64_t id = mkkey(f, "k");
	struct kv_stats st;

	assert_int_equal(kv_setxattr(f->kv, id, "user.ttl", "5", 1, KV_XATTR_REPLACE), -ENODATA);
	assert_int_equal(kv_setxattr(f->kv, id, "user.ttl", "5", 1, KV_XATTR_CREATE), 0);
	assert_int_equal(kv_setxattr(f->kv, id, "user.ttl", "6", 1, KV_XATTR_CREATE), -EEXIST);
	for (int i = 0; i < 200; i++)
		set_ttl(f, id, "100", 0);
	kv_get_stats(f->kv, &st);
	assert_int_equal(st.ttl_pending, 1);
	assert_int_equal(kv_unlink(f->kv, KV_ROOT_ID, "k"), 0);
	kv_get_stats(f->kv, &st);
	assert_int_equal(st.ttl_pending, 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_set_get_remove, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bad_values_change_nothing, setup, teardown),
		cmocka_unit_test_setup_teardown(test_expired_on_access, setup, teardown),
		cmocka_unit_test_setup_teardown(test_sweeper_expires_untouched_keys, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_kept_across_rewrite_rename_reopen, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_ttl_never_rewrites_the_value, setup, teardown),
		cmocka_unit_test_setup_teardown(test_default_ttl, setup, teardown),
		cmocka_unit_test_setup_teardown(test_expired_open_key_keeps_its_bytes, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_unreachable_records_recovered, setup, teardown),
		cmocka_unit_test_setup_teardown(test_ttl_flags_and_pending_count, setup, teardown),
	};

	return cmocka_run_group_tests_name("ttl", tests, NULL, NULL);
}
