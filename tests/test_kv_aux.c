/*
 * A node's aux record (store/kv_internal.h): made only while needed, gone
 * again when empty, and a change made while none can be allocated still
 * reaches the backend (the UNLISTED path). calloc is wrapped so that the
 * aux record's allocation can be made to fail.
 */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <cmocka.h>

#include "store/kv_internal.h"
#include "tests/mem_backend.h"

void *__real_calloc(size_t nmemb, size_t size);
void *__wrap_calloc(size_t nmemb, size_t size);

static atomic_bool fail_aux;

void *__wrap_calloc(size_t nmemb, size_t size)
{
	if (atomic_load(&fail_aux) && nmemb == 1 && size == sizeof(struct kv_node_aux)) {
		errno = ENOMEM;
		return NULL;
	}
	return __real_calloc(nmemb, size);
}

struct fx {
	struct mem_state s;
	struct kv_options o;
	struct kv_store *kv;
};

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));
	char err[256] = "";

	mem_state_init(&f->s);
	f->o.buffer_size = 1 << 20;
	f->o.flush_interval_ms = 60000; /* only explicit flushes */
	f->o.backend_timeout_ms = 5000;
	f->o.max_value_size = 4 << 20;
	f->o.backend_instance = mem_backend_new(&f->s);
	if (kv_open(&f->o, &f->kv, err, sizeof(err)))
		fail_msg("kv_open: %s", err);
	assert_int_equal(kv_start(f->kv), 0);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;

	atomic_store(&fail_aux, false);
	assert_int_equal(kv_close(f->kv), 0);
	mem_state_destroy(&f->s);
	free(f);
	return 0;
}

static uint64_t mkfile(struct kv_store *kv, uint64_t dir, const char *name)
{
	struct kv_attr a;

	assert_int_equal(kv_create(kv, dir, name, 0644, 0, 0, true, &a), 0);
	return a.id;
}

/* Whether id's node has an aux record now. */
static bool has_aux(struct kv_store *kv, uint64_t id)
{
	bool has;

	pthread_mutex_lock(&kv->lock);
	has = kv_node_get(kv, id)->aux != NULL;
	pthread_mutex_unlock(&kv->lock);
	return has;
}

static void test_clean_key_has_none(void **state)
{
	struct fx *f = *state;
	uint64_t id = mkfile(f->kv, KV_ROOT_ID, "a");

	assert_true(has_aux(f->kv, id)); /* dirty: its list links */
	assert_int_equal(kv_write(f->kv, id, "hello", 5, 0), 5);
	assert_int_equal(kv_flush(f->kv), 0);
	assert_false(has_aux(f->kv, id));
	/* An xattr needs one, its removal frees it. */
	assert_int_equal(kv_setxattr(f->kv, id, "user.color", "red", 3, 0), 0);
	assert_int_equal(kv_flush(f->kv), 0);
	assert_true(has_aux(f->kv, id));
	assert_int_equal(kv_removexattr(f->kv, id, "user.color"), 0);
	assert_int_equal(kv_flush(f->kv), 0);
	assert_false(has_aux(f->kv, id));
	/* So does a deadline. */
	assert_int_equal(kv_setxattr(f->kv, id, "user.ttl", "3600", 4, 0), 0);
	assert_int_equal(kv_flush(f->kv), 0);
	assert_true(has_aux(f->kv, id));
	assert_int_equal(kv_removexattr(f->kv, id, "user.ttl"), 0);
	assert_int_equal(kv_flush(f->kv), 0);
	assert_false(has_aux(f->kv, id));
}

static void test_subdirs_counted(void **state)
{
	struct fx *f = *state;
	struct kv_attr d, s, a;

	assert_int_equal(kv_mkdir(f->kv, KV_ROOT_ID, "d", 0755, 0, 0, &d), 0);
	assert_int_equal(kv_mkdir(f->kv, d.id, "s", 0755, 0, 0, &s), 0);
	assert_int_equal(kv_getattr(f->kv, d.id, &a), 0);
	assert_int_equal(a.nlink, 3);
	assert_int_equal(kv_rename(f->kv, d.id, "s", KV_ROOT_ID, "s", 0), 0);
	assert_int_equal(kv_getattr(f->kv, d.id, &a), 0);
	assert_int_equal(a.nlink, 2);
	assert_int_equal(kv_getattr(f->kv, KV_ROOT_ID, &a), 0);
	assert_int_equal(a.nlink, 4);
	assert_int_equal(kv_flush(f->kv), 0);
	assert_false(has_aux(f->kv, d.id));
	assert_int_equal(kv_rmdir(f->kv, KV_ROOT_ID, "s"), 0);
	assert_int_equal(kv_getattr(f->kv, KV_ROOT_ID, &a), 0);
	assert_int_equal(a.nlink, 3);
}

static void test_change_without_aux_still_flushed(void **state)
{
	struct fx *f = *state;
	uint64_t id = mkfile(f->kv, KV_ROOT_ID, "a");
	struct kv_stats st;
	char *c;

	assert_int_equal(kv_flush(f->kv), 0);
	assert_false(has_aux(f->kv, id));
	atomic_store(&fail_aux, true);
	assert_int_equal(kv_write(f->kv, id, "world!", 6, 0), 6);
	mkfile(f->kv, KV_ROOT_ID, "b");
	/* Made and removed before any flush: nothing owed for it. */
	mkfile(f->kv, KV_ROOT_ID, "c");
	assert_int_equal(kv_unlink(f->kv, KV_ROOT_ID, "c"), 0);
	pthread_mutex_lock(&f->kv->lock);
	assert_true(kv_node_get(f->kv, id)->flags & KV_NODE_UNLISTED);
	assert_int_equal(f->kv->nunlisted, 3); /* a, b and the root */
	assert_null(f->kv->dirty_head);
	pthread_mutex_unlock(&f->kv->lock);
	kv_get_stats(f->kv, &st);
	assert_int_equal(st.dirty_bytes, 6);
	atomic_store(&fail_aux, false);

	assert_int_equal(kv_flush(f->kv), 0);
	c = mem_value_str(&f->s, KV_ROOT_ID, "a");
	assert_string_equal(c, "world!");
	free(c);
	assert_non_null(mem_find(&f->s, KV_ROOT_ID, "b"));
	assert_null(mem_find(&f->s, KV_ROOT_ID, "c"));
	pthread_mutex_lock(&f->kv->lock);
	assert_int_equal(f->kv->nunlisted, 0);
	assert_int_equal(f->kv->ndirty, 0);
	assert_int_equal(f->kv->unlisted_bytes, 0);
	pthread_mutex_unlock(&f->kv->lock);
	kv_get_stats(f->kv, &st);
	assert_int_equal(st.dirty_bytes, 0);
	assert_false(has_aux(f->kv, id));
}

static void test_unlisted_removed_before_flush(void **state)
{
	struct fx *f = *state;
	struct kv_stats st;

	assert_int_equal(kv_flush(f->kv), 0);
	atomic_store(&fail_aux, true);
	uint64_t id = mkfile(f->kv, KV_ROOT_ID, "t");

	assert_int_equal(kv_write(f->kv, id, "abc", 3, 0), 3);
	assert_int_equal(kv_unlink(f->kv, KV_ROOT_ID, "t"), 0);
	atomic_store(&fail_aux, false);
	/* The root stays unlisted (its mtime moved), then is listed. */
	assert_int_equal(kv_flush(f->kv), 0);
	kv_get_stats(f->kv, &st);
	assert_int_equal(st.dirty_bytes, 0);
	assert_null(mem_find(&f->s, KV_ROOT_ID, "t"));
	pthread_mutex_lock(&f->kv->lock);
	assert_int_equal(f->kv->nunlisted, 0);
	assert_int_equal(f->kv->ndirty, 0);
	pthread_mutex_unlock(&f->kv->lock);
}

static void *flush_main(void *arg)
{
	return (void *)(intptr_t)kv_flush(arg);
}

/*
 * Bytes written while no aux record could hold them are credited to the
 * oldest dirty node once the flusher lists their nodes again. When that node
 * is then freed without a commit (removed before any commit carried it:
 * here its only commit was refused whole, -EAGAIN, so it was never sent),
 * its bytes leave the store's total with it, or the total would stay too
 * high for good and hold back writes as a full buffer.
 */
static void test_unlisted_bytes_leave_with_their_node(void **state)
{
	struct fx *f = *state;
	uint64_t y = mkfile(f->kv, KV_ROOT_ID, "y"), x;
	struct kv_stats st;
	pthread_t t;
	void *ret;

	assert_int_equal(kv_flush(f->kv), 0);
	x = mkfile(f->kv, KV_ROOT_ID, "x");
	mem_gate_close(&f->s);
	assert_int_equal(pthread_create(&t, NULL, flush_main, f->kv), 0);
	mem_wait_in_commit(&f->s);
	/* x (and the root) are in flight; that commit is refused whole. */
	f->s.fail_commit = -EAGAIN;
	assert_int_equal(kv_unlink(f->kv, KV_ROOT_ID, "x"), 0);
	atomic_store(&fail_aux, true);
	assert_int_equal(kv_write(f->kv, y, "0123456789", 10, 0), 10);
	mem_gate_open(&f->s);
	for (bool back = false; !back; sched_yield()) {
		pthread_mutex_lock(&f->kv->lock);
		back = !(kv_node_get(f->kv, x)->flags & (KV_NODE_INFLIGHT | KV_NODE_SENT));
		if (back) {
			/* Refused, so never sent: removed before any commit. */
			assert_false(kv_node_get(f->kv, x)->flags & KV_NODE_COMMITTED);
			assert_true(kv_node_get(f->kv, y)->flags & KV_NODE_UNLISTED);
			f->s.fail_commit = 0;
			atomic_store(&fail_aux, false);
		}
		pthread_mutex_unlock(&f->kv->lock);
	}
	assert_int_equal(pthread_join(t, &ret), 0);
	assert_int_equal(kv_flush(f->kv), 0);
	kv_get_stats(f->kv, &st);
	assert_int_equal(st.dirty_bytes, 0);
	assert_int_equal(st.buffer_keys, 0);
	assert_null(mem_find(&f->s, KV_ROOT_ID, "x"));
	assert_non_null(mem_find(&f->s, KV_ROOT_ID, "y"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_clean_key_has_none, setup, teardown),
		cmocka_unit_test_setup_teardown(test_subdirs_counted, setup, teardown),
		cmocka_unit_test_setup_teardown(test_change_without_aux_still_flushed, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_unlisted_removed_before_flush, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_unlisted_bytes_leave_with_their_node, setup,
						teardown),
	};

	return cmocka_run_group_tests_name("kv_aux", tests, NULL, NULL);
}
