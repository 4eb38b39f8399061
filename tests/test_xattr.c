/*
 * Extended attributes in the store: custom user.* names, the read-only
 * user.nadb.* names, limits and persistence, against the in-memory backend.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <cmocka.h>

#include "store/kv.h"
#include "tests/mem_backend.h"

struct fx {
	struct mem_state s;
	struct kv_options o;
	struct kv_store *kv;
	uint64_t id;
};

static void reopen(struct fx *f)
{
	char err[256];

	f->o.backend_instance = mem_backend_new(&f->s);
	assert_int_equal(kv_open(&f->o, &f->kv, err, sizeof(err)), 0);
	assert_int_equal(kv_start(f->kv), 0);
}

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));
	struct kv_attr a;

	mem_state_init(&f->s);
	f->o.buffer_size = 1 << 20;
	f->o.flush_interval_ms = 60000;
	f->o.backend_timeout_ms = 5000;
	f->o.max_value_size = 1 << 20;
	reopen(f);
	assert_int_equal(kv_create(f->kv, KV_ROOT_ID, "k", 0644, 0, 0, true, &a), 0);
	assert_int_equal(kv_write(f->kv, a.id, "value", 5, 0), 5);
	f->id = a.id;
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

static void test_set_get_list_remove(void **state)
{
	struct fx *f = *state;
	char buf[64];

	assert_int_equal(kv_setxattr(f->kv, f->id, "user.b", "2", 1, 0), 0);
	assert_int_equal(kv_setxattr(f->kv, f->id, "user.a", "a\0b", 3, 0), 0);
	assert_int_equal(kv_getxattr(f->kv, f->id, "user.a", NULL, 0), 3);
	assert_int_equal(kv_getxattr(f->kv, f->id, "user.a", buf, sizeof(buf)), 3);
	assert_memory_equal(buf, "a\0b", 3);
	assert_int_equal(kv_getxattr(f->kv, f->id, "user.a", buf, 2), -ERANGE);
	/* Listed sorted, NUL-separated; user.nadb.* are not listed. */
	assert_int_equal(kv_listxattr(f->kv, f->id, NULL, 0), 14);
	assert_int_equal(kv_listxattr(f->kv, f->id, buf, sizeof(buf)), 14);
	assert_memory_equal(buf, "user.a\0user.b\0", 14);
	assert_int_equal(kv_listxattr(f->kv, f->id, buf, 5), -ERANGE);
	/* Replace keeps one entry. */
	assert_int_equal(kv_setxattr(f->kv, f->id, "user.a", "new", 3, 0), 0);
	assert_int_equal(kv_listxattr(f->kv, f->id, NULL, 0), 14);
	assert_int_equal(kv_removexattr(f->kv, f->id, "user.a"), 0);
	assert_int_equal(kv_getxattr(f->kv, f->id, "user.a", buf, sizeof(buf)), -ENODATA);
	assert_int_equal(kv_removexattr(f->kv, f->id, "user.a"), -ENODATA);
	assert_int_equal(kv_listxattr(f->kv, f->id, buf, sizeof(buf)), 7);
	assert_memory_equal(buf, "user.b\0", 7);
	/* An empty value is a value. */
	assert_int_equal(kv_setxattr(f->kv, f->id, "user.empty", NULL, 0, 0), 0);
	assert_int_equal(kv_getxattr(f->kv, f->id, "user.empty", buf, sizeof(buf)), 0);
}

static void test_create_replace_flags(void **state)
{
	struct fx *f = *state;

	assert_int_equal(kv_setxattr(f->kv, f->id, "user.x", "1", 1, KV_XATTR_REPLACE), -ENODATA);
	assert_int_equal(kv_setxattr(f->kv, f->id, "user.x", "1", 1, KV_XATTR_CREATE), 0);
	assert_int_equal(kv_setxattr(f->kv, f->id, "user.x", "2", 1, KV_XATTR_CREATE), -EEXIST);
	assert_int_equal(kv_setxattr(f->kv, f->id, "user.x", "3", 1, KV_XATTR_REPLACE), 0);
	char c;
	assert_int_equal(kv_getxattr(f->kv, f->id, "user.x", &c, 1), 1);
	assert_int_equal(c, '3');
}

static void test_limits_change_nothing(void **state)
{
	struct fx *f = *state;
	char name[300] = "user.";
	char *big = calloc(1, 64 << 10);

	memset(name + 5, 'n', 250);
	name[255] = 0;
	assert_int_equal(kv_setxattr(f->kv, f->id, name, "v", 1, 0), 0);
	name[255] = 'n';
	name[256] = 0;
	assert_int_equal(kv_setxattr(f->kv, f->id, name, "v", 1, 0), -ERANGE);
	/* All names and values of a key: at most 64 KiB. */
	assert_int_equal(kv_setxattr(f->kv, f->id, "user.big", big, 60 << 10, 0), 0);
	assert_int_equal(kv_setxattr(f->kv, f->id, "user.more", big, 8 << 10, 0), -ENOSPC);
	assert_int_equal(kv_getxattr(f->kv, f->id, "user.more", NULL, 0), -ENODATA);
	assert_int_equal(kv_getxattr(f->kv, f->id, "user.big", NULL, 0), 60 << 10);
	free(big);
}

static void test_namespaces_and_reserved_names(void **state)
{
	struct fx *f = *state;
	char buf[64];

	assert_int_equal(kv_setxattr(f->kv, f->id, "trusted.x", "1", 1, 0), -ENOTSUP);
	assert_int_equal(kv_getxattr(f->kv, f->id, "security.capability", buf, 64), -ENOTSUP);
	/* The tag list, not a custom name: a bad tag is refused (test_tags.c). */
	assert_int_equal(kv_setxattr(f->kv, f->id, "user.tags", "a b", 3, 0), -EINVAL);
	assert_int_equal(kv_setxattr(f->kv, f->id, "user.xdg.tags", "a b", 3, 0), -EINVAL);
	assert_int_equal(kv_setxattr(f->kv, f->id, "user.nadb.size", "1", 1, 0), -EPERM);
	assert_int_equal(kv_removexattr(f->kv, f->id, "user.nadb.created"), -EPERM);
	assert_int_equal(kv_getxattr(f->kv, f->id, "user.nadb.expires", buf, 64), -ENODATA);
}

static void test_metadata_values(void **state)
{
	struct fx *f = *state;
	char buf[64];
	ssize_t n;

	n = kv_getxattr(f->kv, f->id, "user.nadb.size", buf, sizeof(buf));
	assert_int_equal(n, 1);
	assert_memory_equal(buf, "5", 1);
	n = kv_getxattr(f->kv, f->id, "user.nadb.compressed", buf, sizeof(buf));
	assert_int_equal(n, 2);
	assert_memory_equal(buf, "no", 2);
	n = kv_getxattr(f->kv, f->id, "user.nadb.created", buf, sizeof(buf) - 1);
	assert_int_equal(n, 30); /* 2026-11-24T16:30:04.562332180Z */
	buf[n] = 0;
	assert_int_equal(buf[4], '-');
	assert_int_equal(buf[10], 'T');
	assert_int_equal(buf[19], '.');
	assert_int_equal(buf[29], 'Z');
}

static void test_persisted_without_rewriting_the_value(void **state)
{
	struct fx *f = *state;
	char buf[16];

	assert_int_equal(kv_flush(f->kv), 0);
	assert_int_equal(kv_setxattr(f->kv, f->id, "user.c", "hi", 2, 0), 0);
	assert_int_equal(kv_flush(f->kv), 0);
	assert_int_equal(f->s.puts_with_value, 0);
	assert_int_equal(kv_close(f->kv), 0);
	reopen(f);
	assert_int_equal(kv_getxattr(f->kv, f->id, "user.c", buf, sizeof(buf)), 2);
	assert_memory_equal(buf, "hi", 2);
	assert_int_equal(kv_read(f->kv, f->id, buf, sizeof(buf), 0), 5);
	assert_memory_equal(buf, "value", 5);
}

static void test_directories_take_xattrs(void **state)
{
	struct fx *f = *state;
	struct kv_attr a;
	char buf[8];

	assert_int_equal(kv_mkdir(f->kv, KV_ROOT_ID, "d", 0755, 0, 0, &a), 0);
	assert_int_equal(kv_setxattr(f->kv, a.id, "user.note", "dir", 3, 0), 0);
	assert_int_equal(kv_getxattr(f->kv, a.id, "user.note", buf, sizeof(buf)), 3);
	assert_int_equal(kv_getxattr(f->kv, 987654, "user.note", buf, sizeof(buf)), -ENOENT);
}

/* An oversized replacement fails and leaves the old value in place. */
static void test_enospc_on_replace_keeps_old_value(void **state)
{
	struct fx *f = *state;
	char *big = calloc(1, 64 << 10);
	char buf[4];

	assert_int_equal(kv_setxattr(f->kv, f->id, "user.a", "old", 3, 0), 0);
	assert_int_equal(kv_setxattr(f->kv, f->id, "user.a", big, 64 << 10, 0), -ENOSPC);
	assert_int_equal(kv_getxattr(f->kv, f->id, "user.a", buf, sizeof(buf)), 3);
	assert_memory_equal(buf, "old", 3);
	assert_int_equal(kv_listxattr(f->kv, f->id, NULL, 0), 7);
	free(big);
}

/* stored_size is the logical size until the value is flushed, then what the
 * backend holds; updated follows mtime. */
static void test_stored_size_and_updated(void **state)
{
	struct fx *f = *state;
	struct kv_attr a;
	char buf[64];
	ssize_t n;

	n = kv_getxattr(f->kv, f->id, "user.nadb.stored_size", buf, sizeof(buf));
	assert_int_equal(n, 1);
	assert_memory_equal(buf, "5", 1);
	assert_int_equal(kv_flush(f->kv), 0);
	n = kv_getxattr(f->kv, f->id, "user.nadb.stored_size", buf, sizeof(buf));
	assert_int_equal(n, 1);
	assert_memory_equal(buf, "5", 1); /* the mem backend stores as is */
	assert_int_equal(kv_getattr(f->kv, f->id, &a), 0);
	n = kv_getxattr(f->kv, f->id, "user.nadb.updated", buf, sizeof(buf) - 1);
	assert_int_equal(n, 30);
	buf[n] = 0;
	snprintf(buf + 40, 12, "%09lld", (long long)(a.mtime_ns % 1000000000));
	assert_memory_equal(buf + 20, buf + 40, 9);
	/* Not listed, and a too small buffer is -ERANGE as for any name. */
	assert_int_equal(kv_getxattr(f->kv, f->id, "user.nadb.updated", buf, 10), -ERANGE);
	assert_int_equal(kv_getxattr(f->kv, f->id, "user.nadb.nosuch", buf, 10), -ENODATA);
}

/* A damaged blob from the backend is refused with EIO, never read past. */
static void test_corrupt_blob_is_eio(void **state)
{
	struct fx *f = *state;
	static const uint8_t bad[] = { 6, 'u', 's', 'e', 'r', '.', 'a', 0xff, 0xff, 0, 0, 'x' };
	struct mem_rec *r;
	char buf[16];

	assert_int_equal(kv_close(f->kv), 0);
	r = mem_find_id(&f->s, f->id);
	assert_non_null(r);
	free(r->m.xattrs);
	r->m.xattrs = malloc(sizeof(bad));
	memcpy(r->m.xattrs, bad, sizeof(bad));
	r->m.xattrs_len = sizeof(bad);
	reopen(f);
	assert_int_equal(kv_getxattr(f->kv, f->id, "user.a", buf, sizeof(buf)), -EIO);
	assert_int_equal(kv_listxattr(f->kv, f->id, buf, sizeof(buf)), -EIO);
	assert_int_equal(kv_setxattr(f->kv, f->id, "user.b", "1", 1, 0), -EIO);
	/* The computed names still answer. */
	assert_int_equal(kv_getxattr(f->kv, f->id, "user.nadb.size", buf, sizeof(buf)), 1);
}

/* An unlinked key still open keeps answering; nothing is owed to the backend. */
static void test_removed_but_open_key(void **state)
{
	struct fx *f = *state;
	char buf[4];

	assert_int_equal(kv_flush(f->kv), 0);
	assert_int_equal(kv_open_file(f->kv, f->id, false), 0);
	assert_int_equal(kv_unlink(f->kv, KV_ROOT_ID, "k"), 0);
	assert_int_equal(kv_flush(f->kv), 0);
	assert_int_equal(kv_setxattr(f->kv, f->id, "user.a", "1", 1, 0), 0);
	assert_int_equal(kv_getxattr(f->kv, f->id, "user.a", buf, sizeof(buf)), 1);
	assert_int_equal(kv_flush(f->kv), 0);
	assert_null(mem_find_id(&f->s, f->id));
	kv_release_file(f->kv, f->id);
	assert_int_equal(kv_getxattr(f->kv, f->id, "user.a", buf, sizeof(buf)), -ENOENT);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_set_get_list_remove, setup, teardown),
		cmocka_unit_test_setup_teardown(test_create_replace_flags, setup, teardown),
		cmocka_unit_test_setup_teardown(test_limits_change_nothing, setup, teardown),
		cmocka_unit_test_setup_teardown(test_namespaces_and_reserved_names, setup, teardown),
		cmocka_unit_test_setup_teardown(test_metadata_values, setup, teardown),
		cmocka_unit_test_setup_teardown(test_persisted_without_rewriting_the_value, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_directories_take_xattrs, setup, teardown),
		cmocka_unit_test_setup_teardown(test_enospc_on_replace_keeps_old_value, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_stored_size_and_updated, setup, teardown),
		cmocka_unit_test_setup_teardown(test_corrupt_blob_is_eio, setup, teardown),
		cmocka_unit_test_setup_teardown(test_removed_but_open_key, setup, teardown),
	};

	return cmocka_run_group_tests_name("xattr", tests, NULL, NULL);
}
