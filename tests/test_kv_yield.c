/*
 * A commit that gives way (kv_op.yielded: on Redis, another mount's record
 * holds the name; store/flusher.c gave_way): nothing of the op counts as
 * committed, the record moves into lost+found with what is below it, and
 * the flush that follows at once commits it there; a wait for the flush
 * (kv_flush) returns only then. The in-memory backend gives way for a name
 * the test picks (mem_state.yield_name).
 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <cmocka.h>

#include "tests/mem_backend.h"

static int setup(void **state)
{
	struct mem_store *f = calloc(1, sizeof(*f));

	mem_store_open(f, true);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct mem_store *f = *state;

	/* A test that failed half way may leave the gate closed. */
	f->s.gate_after_yield = false;
	mem_gate_open(&f->s);
	mem_store_close(f);
	free(f);
	return 0;
}

/* d with d/k holding "value", none of it flushed yet. */
static void make_tree(struct mem_store *f, struct kv_attr *d, struct kv_attr *k)
{
	assert_int_equal(kv_mkdir(f->kv, KV_ROOT_ID, "d", 0755, 0, 0, d), 0);
	assert_int_equal(kv_create(f->kv, d->id, "k", 0644, 0, 0, true, k), 0);
	assert_int_equal(kv_write(f->kv, k->id, "value", 5, 0), 5);
}

static void *flush_thread(void *arg)
{
	return (void *)(intptr_t)kv_flush(arg);
}

static void test_gives_way_to_lost_found(void **state)
{
	struct mem_store *f = *state;
	struct kv_attr d, k, lf, got;
	struct kv_stats st;
	char name[64];
	char *v;

	struct timespec until;
	pthread_t t;
	void *ret;

	make_tree(f, &d, &k);
	f->s.yield_name = "d";
	f->s.gate_after_yield = true;
	assert_int_equal(pthread_create(&t, NULL, flush_thread, f->kv), 0);
	/* The commit after the one that gave way: the flush waits for it (a
	 * flush that returned early would do so at once, not 200 ms later). */
	mem_wait_in_commit(&f->s);
	assert_int_equal(f->s.yields, 1);
	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_nsec += 200000000;
	if (until.tv_nsec >= 1000000000) {
		until.tv_sec++;
		until.tv_nsec -= 1000000000;
	}
	assert_int_equal(pthread_timedjoin_np(t, &ret, &until), ETIMEDOUT);
	mem_gate_open(&f->s);
	assert_int_equal(pthread_join(t, &ret), 0);
	assert_int_equal((intptr_t)ret, 0);
	snprintf(name, sizeof(name), "%llu-d", (unsigned long long)d.id);
	/* Here: d moved, with k, and nothing is owed any more. */
	assert_int_equal(kv_lookup(f->kv, KV_ROOT_ID, "d", &got), -ENOENT);
	assert_int_equal(kv_lookup(f->kv, KV_ROOT_ID, "lost+found", &lf), 0);
	assert_int_equal(kv_lookup(f->kv, lf.id, name, &got), 0);
	assert_int_equal(got.id, d.id);
	assert_int_equal(kv_lookup(f->kv, d.id, "k", &got), 0);
	kv_get_stats(f->kv, &st);
	assert_int_equal(st.dirty_bytes, 0);
	assert_int_equal(st.buffer_keys, 0);
	assert_int_equal(st.keys, 1);
	assert_int_equal(st.dirs, 2);
	/* The backend: d only where it moved, k with its value. */
	assert_null(mem_find(&f->s, KV_ROOT_ID, "d"));
	assert_non_null(mem_find(&f->s, lf.id, name));
	v = mem_value_str(&f->s, d.id, "k");
	assert_string_equal(v, "value");
	free(v);
	mem_store_reopen(f, true);
	assert_int_equal(kv_lookup(f->kv, lf.id, name, &got), 0);
	assert_int_equal(got.id, d.id);
}

/* Renamed while its commit was under way: it no longer has the name it
 * gave away, so it stays where it is, and its next commit carries it. */
static void test_renamed_meanwhile_stays(void **state)
{
	struct mem_store *f = *state;
	struct kv_attr d, k, got;
	pthread_t t;
	void *ret;

	make_tree(f, &d, &k);
	f->s.yield_name = "d";
	mem_gate_close(&f->s);
	assert_int_equal(pthread_create(&t, NULL, flush_thread, f->kv), 0);
	mem_wait_in_commit(&f->s);
	assert_int_equal(kv_rename(f->kv, KV_ROOT_ID, "d", KV_ROOT_ID, "e", 0), 0);
	mem_gate_open(&f->s);
	assert_int_equal(pthread_join(t, &ret), 0);
	assert_int_equal((intptr_t)ret, 0);
	assert_int_equal(kv_flush(f->kv), 0);
	assert_int_equal(f->s.yields, 1);
	assert_int_equal(kv_lookup(f->kv, KV_ROOT_ID, "lost+found", &got), -ENOENT);
	assert_int_equal(kv_lookup(f->kv, KV_ROOT_ID, "e", &got), 0);
	assert_int_equal(got.id, d.id);
	assert_non_null(mem_find(&f->s, KV_ROOT_ID, "e"));
	assert_null(mem_find(&f->s, KV_ROOT_ID, "d"));
}

/* lost+found itself gives way (another mount made its own): it cannot go
 * into itself, so it takes another name where it is. */
static void test_lost_found_gives_way_in_place(void **state)
{
	struct mem_store *f = *state;
	struct kv_attr lf, k, got;
	char name[64];
	char *v;

	assert_int_equal(kv_mkdir(f->kv, KV_ROOT_ID, "lost+found", 0700, 0, 0, &lf), 0);
	assert_int_equal(kv_create(f->kv, lf.id, "k", 0644, 0, 0, true, &k), 0);
	assert_int_equal(kv_write(f->kv, k.id, "kept", 4, 0), 4);
	f->s.yield_name = "lost+found";
	assert_int_equal(kv_flush(f->kv), 0);
	assert_int_equal(f->s.yields, 1);
	snprintf(name, sizeof(name), "%llu-lost+found", (unsigned long long)lf.id);
	assert_int_equal(kv_lookup(f->kv, KV_ROOT_ID, name, &got), 0);
	assert_int_equal(got.id, lf.id);
	assert_int_equal(kv_lookup(f->kv, KV_ROOT_ID, "lost+found", &got), -ENOENT);
	v = mem_value_str(&f->s, lf.id, "k");
	assert_string_equal(v, "kept");
	free(v);
	assert_non_null(mem_find(&f->s, KV_ROOT_ID, name));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_gives_way_to_lost_found, setup, teardown),
		cmocka_unit_test_setup_teardown(test_renamed_meanwhile_stays, setup, teardown),
		cmocka_unit_test_setup_teardown(test_lost_found_gives_way_in_place, setup,
						teardown),
	};

	return cmocka_run_group_tests_name("a commit that gives way", tests, NULL, NULL);
}
