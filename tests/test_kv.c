/*
 * Store engine tests against an in-memory backend with fault injection:
 * buffering, flush races, durability waits, tree operations, name limits.
 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <cmocka.h>

#include "store/kv.h"
#include "tests/mem_backend.h"

#ifndef RENAME_NOREPLACE
#define RENAME_NOREPLACE (1 << 0)
#endif

struct fx {
	struct mem_state s;
	struct kv_options o;
	struct kv_store *kv;
};

static struct kv_store *reopen(struct fx *f)
{
	char err[256] = "";
	int ret;

	f->o.backend_instance = mem_backend_new(&f->s);
	ret = kv_open(&f->o, &f->kv, err, sizeof(err));
	if (ret)
		fail_msg("kv_open: %s (%d)", err, ret);
	assert_int_equal(kv_start(f->kv), 0);
	return f->kv;
}

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));

	mem_state_init(&f->s);
	f->o.buffer_size = 1 << 20;
	f->o.flush_interval_ms = 60000; /* only explicit flushes, unless a test says */
	f->o.backend_timeout_ms = 5000;
	f->o.max_value_size = 4 << 20;
	reopen(f);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;

	mem_gate_open(&f->s);
	f->s.fail_commit = 0;
	assert_int_equal(kv_close(f->kv), 0);
	mem_state_destroy(&f->s);
	free(f);
	return 0;
}

static uint64_t mkfile(struct kv_store *kv, uint64_t dir, const char *name, const char *data)
{
	struct kv_attr a;

	assert_int_equal(kv_create(kv, dir, name, 0644, 0, 0, true, &a), 0);
	if (data)
		assert_int_equal(kv_write(kv, a.id, data, strlen(data), 0), (ssize_t)strlen(data));
	return a.id;
}

static uint64_t mkdir_(struct kv_store *kv, uint64_t dir, const char *name)
{
	struct kv_attr a;

	assert_int_equal(kv_mkdir(kv, dir, name, 0755, 0, 0, &a), 0);
	return a.id;
}

static void assert_content(struct kv_store *kv, uint64_t id, const char *want)
{
	char buf[4096];
	ssize_t n = kv_read(kv, id, buf, sizeof(buf), 0);

	assert_int_equal(n, (ssize_t)strlen(want));
	assert_memory_equal(buf, want, strlen(want));
}

static void *flush_thread(void *kv)
{
	kv_flush(kv);
	return NULL;
}

static void test_write_read_flush_reopen(void **state)
{
	struct fx *f = *state;
	uint64_t d = mkdir_(f->kv, KV_ROOT_ID, "users");
	uint64_t id = mkfile(f->kv, d, "42", "hello");
	char *c;

	assert_content(f->kv, id, "hello");
	assert_null(mem_find(&f->s, d, "42")); /* buffered, not yet in the backend */
	assert_int_equal(kv_flush(f->kv), 0);
	c = mem_value_str(&f->s, d, "42");
	assert_string_equal(c, "hello");
	free(c);
	assert_int_equal(kv_close(f->kv), 0);
	reopen(f);
	struct kv_attr a;
	assert_int_equal(kv_lookup(f->kv, KV_ROOT_ID, "users", &a), 0);
	assert_int_equal(kv_lookup(f->kv, a.id, "42", &a), 0);
	assert_int_equal(a.size, 5);
	assert_content(f->kv, a.id, "hello");
}

static void test_close_flushes_everything(void **state)
{
	struct fx *f = *state;
	uint64_t id = mkfile(f->kv, KV_ROOT_ID, "k", "buffered only");
	char *c;

	(void)id;
	assert_int_equal(kv_close(f->kv), 0);
	c = mem_value_str(&f->s, KV_ROOT_ID, "k");
	assert_non_null(c);
	assert_string_equal(c, "buffered only");
	free(c);
	reopen(f);
}

/* A write that lands while an older snapshot is being committed must not be
 * undone by that commit: the key stays dirty and the next flush writes it. */
static void test_overwrite_racing_flush(void **state)
{
	struct fx *f = *state;
	uint64_t id = mkfile(f->kv, KV_ROOT_ID, "k", "old");
	char *c;

	mem_gate_close(&f->s);
	pthread_t t;
	pthread_create(&t, NULL, flush_thread, f->kv);
	mem_wait_in_commit(&f->s);
	assert_int_equal(kv_write(f->kv, id, "NEW", 3, 0), 3);
	assert_content(f->kv, id, "NEW"); /* reads see the newest bytes meanwhile */
	mem_gate_open(&f->s);
	pthread_join(t, NULL);
	c = mem_value_str(&f->s, KV_ROOT_ID, "k");
	assert_string_equal(c, "old");
	free(c);
	assert_content(f->kv, id, "NEW");
	assert_int_equal(kv_fsync(f->kv, id), 0);
	c = mem_value_str(&f->s, KV_ROOT_ID, "k");
	assert_string_equal(c, "NEW");
	free(c);
}

static void test_delete_racing_flush(void **state)
{
	struct fx *f = *state;

	mkfile(f->kv, KV_ROOT_ID, "gone", "data");
	mem_gate_close(&f->s);
	pthread_t t;
	pthread_create(&t, NULL, flush_thread, f->kv);
	mem_wait_in_commit(&f->s);
	assert_int_equal(kv_unlink(f->kv, KV_ROOT_ID, "gone"), 0);
	mem_gate_open(&f->s);
	pthread_join(t, NULL);
	assert_non_null(mem_find(&f->s, KV_ROOT_ID, "gone")); /* the earlier snapshot */
	assert_int_equal(kv_flush(f->kv), 0);
	assert_null(mem_find(&f->s, KV_ROOT_ID, "gone")); /* the delete is not undone */
	assert_int_equal(kv_close(f->kv), 0);
	reopen(f);
	struct kv_attr a;
	assert_int_equal(kv_lookup(f->kv, KV_ROOT_ID, "gone", &a), -ENOENT);
}

static void test_create_delete_before_flush_costs_nothing(void **state)
{
	struct fx *f = *state;

	assert_int_equal(kv_flush(f->kv), 0);
	unsigned before = f->s.commits;
	mkfile(f->kv, KV_ROOT_ID, "tmp", "x");
	assert_int_equal(kv_unlink(f->kv, KV_ROOT_ID, "tmp"), 0);
	assert_int_equal(kv_flush(f->kv), 0);
	/* Only the root's new mtime is committed, no record for "tmp". */
	assert_int_equal(f->s.commits, before + 1);
	assert_int_equal(f->s.last_nops, 1);
	assert_null(mem_find(&f->s, KV_ROOT_ID, "tmp"));
}

/* The store reopened with a short backend_timeout, and a new key in it. */
static uint64_t file_after_short_timeout(struct fx *f, const char *name, const char *content)
{
	kv_close(f->kv);
	f->o.backend_timeout_ms = 200;
	reopen(f);
	return mkfile(f->kv, KV_ROOT_ID, name, content);
}

static void test_fsync_eio_when_backend_down_then_recovers(void **state)
{
	struct fx *f = *state;
	uint64_t id;
	char *c;

	id = file_after_short_timeout(f, "k", "precious");
	f->s.fail_commit = -EIO;
	assert_int_equal(kv_fsync(f->kv, id), -EIO);
	assert_content(f->kv, id, "precious"); /* nothing dropped */
	f->s.fail_commit = 0;
	assert_int_equal(kv_fsync(f->kv, id), 0);
	c = mem_value_str(&f->s, KV_ROOT_ID, "k");
	assert_string_equal(c, "precious");
	free(c);
}

/* A batch the backend refused whole (-EAGAIN: another mount's transaction
 * holds a record) did not carry its records: a new key is still sent as
 * never sent, while after a failure (-EIO) it may have landed in part. */
static void test_refused_batch_leaves_records_unsent(void **state)
{
	struct fx *f = *state;
	uint64_t id;

	id = file_after_short_timeout(f, "k", "v");
	f->s.fail_commit = -EAGAIN;
	assert_int_equal(kv_fsync(f->kv, id), -EIO);
	assert_int_equal(f->s.never_sent_puts, 1);
	f->s.fail_commit = 0;
	assert_int_equal(kv_fsync(f->kv, id), 0);
	assert_int_equal(f->s.never_sent_puts, 1);
	assert_int_equal(f->s.uncertain_puts, 0);

	id = mkfile(f->kv, KV_ROOT_ID, "k2", "v");
	f->s.fail_commit = -EIO;
	assert_int_equal(kv_fsync(f->kv, id), -EIO);
	f->s.fail_commit = 0;
	assert_int_equal(kv_fsync(f->kv, id), 0);
	assert_int_equal(f->s.never_sent_puts, 0);
	assert_int_equal(f->s.uncertain_puts, 1);
}

static void test_buffer_full_writer_waits_then_eio(void **state)
{
	struct fx *f = *state;
	char *chunk = calloc(1, 64 << 10);
	uint64_t id;
	int i;
	ssize_t r = 0;

	kv_close(f->kv);
	f->o.buffer_size = 256 << 10;
	f->o.backend_timeout_ms = 200;
	reopen(f);
	id = mkfile(f->kv, KV_ROOT_ID, "big", NULL);
	f->s.fail_commit = -EIO; /* the flusher cannot make room */
	for (i = 0; i < 64; i++) {
		r = kv_write(f->kv, id, chunk, 64 << 10, (uint64_t)i << 16);
		if (r < 0)
			break;
	}
	assert_int_equal(r, -EIO);
	assert_true(i >= 3 && i <= 5); /* stopped once the buffer was full */
	f->s.fail_commit = 0;
	/* With the backend back, writes far beyond the buffer size go through. */
	for (i = 0; i < 64; i++)
		assert_int_equal(kv_write(f->kv, id, chunk, 64 << 10, (uint64_t)i << 16), 64 << 10);
	assert_int_equal(kv_fsync(f->kv, id), 0);
	assert_int_equal(mem_find(&f->s, KV_ROOT_ID, "big")->m.size, 64u << 16);
	free(chunk);
}

static void test_dir_rename_is_one_small_change(void **state)
{
	struct fx *f = *state;
	uint64_t a = mkdir_(f->kv, KV_ROOT_ID, "a");
	char name[16];
	struct kv_attr at;

	for (int i = 0; i < 100; i++) {
		snprintf(name, sizeof(name), "k%d", i);
		mkfile(f->kv, a, name, name);
	}
	assert_int_equal(kv_flush(f->kv), 0);
	assert_int_equal(kv_rename(f->kv, KV_ROOT_ID, "a", KV_ROOT_ID, "b", 0), 0);
	assert_int_equal(kv_flush(f->kv), 0);
	assert_int_equal(f->s.last_nops, 2); /* the directory and the root */
	assert_int_equal(f->s.puts_with_value, 0);
	assert_int_equal(kv_lookup(f->kv, KV_ROOT_ID, "a", &at), -ENOENT);
	assert_int_equal(kv_lookup(f->kv, KV_ROOT_ID, "b", &at), 0);
	assert_int_equal(kv_lookup(f->kv, at.id, "k7", &at), 0);
	assert_content(f->kv, at.id, "k7");
}

static void test_rename_errors(void **state)
{
	struct fx *f = *state;
	uint64_t a = mkdir_(f->kv, KV_ROOT_ID, "a");
	uint64_t sub = mkdir_(f->kv, a, "sub");
	uint64_t full = mkdir_(f->kv, KV_ROOT_ID, "full");

	mkfile(f->kv, full, "x", "x");
	mkfile(f->kv, KV_ROOT_ID, "f", "f");
	mkfile(f->kv, KV_ROOT_ID, "g", "g");
	assert_int_equal(kv_rename(f->kv, KV_ROOT_ID, "a", sub, "a2", 0), -EINVAL);
	assert_int_equal(kv_rename(f->kv, KV_ROOT_ID, "a", KV_ROOT_ID, "full", 0), -ENOTEMPTY);
	assert_int_equal(kv_rename(f->kv, KV_ROOT_ID, "f", KV_ROOT_ID, "a", 0), -EISDIR);
	assert_int_equal(kv_rename(f->kv, KV_ROOT_ID, "a", KV_ROOT_ID, "f", 0), -ENOTDIR);
	assert_int_equal(kv_rename(f->kv, KV_ROOT_ID, "f", KV_ROOT_ID, "g", RENAME_NOREPLACE),
			 -EEXIST);
	assert_int_equal(kv_rename(f->kv, KV_ROOT_ID, "nope", KV_ROOT_ID, "z", 0), -ENOENT);
	/* Replacing a file takes the victim away. */
	assert_int_equal(kv_rename(f->kv, KV_ROOT_ID, "f", KV_ROOT_ID, "g", 0), 0);
	struct kv_attr at;
	assert_int_equal(kv_lookup(f->kv, KV_ROOT_ID, "g", &at), 0);
	assert_content(f->kv, at.id, "f");
	assert_int_equal(kv_lookup(f->kv, KV_ROOT_ID, "f", &at), -ENOENT);
	(void)sub;
}

static void test_name_limits(void **state)
{
	struct fx *f = *state;
	char name[300];
	struct kv_attr at;
	uint64_t dir = KV_ROOT_ID;

	memset(name, 'n', sizeof(name));
	name[255] = 0;
	assert_int_equal(kv_create(f->kv, KV_ROOT_ID, name, 0644, 0, 0, true, &at), 0);
	name[255] = 'n';
	name[256] = 0;
	assert_int_equal(kv_create(f->kv, KV_ROOT_ID, name, 0644, 0, 0, true, &at),
			 -ENAMETOOLONG);
	assert_int_equal(kv_create(f->kv, KV_ROOT_ID, "a/b", 0644, 0, 0, true, &at), -EINVAL);
	/* Three levels of 255 bytes and one of 1: "A/B/C/q" is 769 bytes. */
	for (int lvl = 0; lvl < 3; lvl++) {
		memset(name, 'a' + lvl, 255);
		name[255] = 0;
		dir = mkdir_(f->kv, dir, name);
	}
	uint64_t d4 = mkdir_(f->kv, dir, "q");
	memset(name, 'z', 255);
	name[254] = 0; /* 769 + 1 + 254 = 1024: the longest key */
	assert_int_equal(kv_create(f->kv, d4, name, 0644, 0, 0, true, &at), 0);
	name[254] = 'z';
	name[255] = 0; /* 1025 */
	assert_int_equal(kv_create(f->kv, d4, name, 0644, 0, 0, true, &at), -ENAMETOOLONG);
	/* A short key whose directory moves deeper past the limit. */
	uint64_t m = mkdir_(f->kv, KV_ROOT_ID, "m");
	mkfile(f->kv, m, name, "x"); /* "m/" + 255 */
	assert_int_equal(kv_rename(f->kv, KV_ROOT_ID, "m", dir, "mm", 0), -ENAMETOOLONG);
	assert_int_equal(kv_lookup(f->kv, KV_ROOT_ID, "m", &at), 0);
}

static void test_unlinked_open_file(void **state)
{
	struct fx *f = *state;
	uint64_t id = mkfile(f->kv, KV_ROOT_ID, "k", "still here");
	struct kv_attr at;

	assert_int_equal(kv_flush(f->kv), 0);
	assert_int_equal(kv_open_file(f->kv, id, false), 0);
	assert_int_equal(kv_unlink(f->kv, KV_ROOT_ID, "k"), 0);
	assert_int_equal(kv_flush(f->kv), 0);
	assert_null(mem_find(&f->s, KV_ROOT_ID, "k"));
	assert_content(f->kv, id, "still here");
	assert_int_equal(kv_write(f->kv, id, "STILL", 5, 0), 5);
	assert_content(f->kv, id, "STILL here");
	assert_int_equal(kv_getattr(f->kv, id, &at), 0);
	assert_int_equal(at.nlink, 0);
	kv_release_file(f->kv, id);
	assert_int_equal(kv_getattr(f->kv, id, &at), -ENOENT);
	assert_int_equal(kv_flush(f->kv), 0);
	assert_null(mem_find(&f->s, KV_ROOT_ID, "k"));
}

static void test_truncate_and_efbig(void **state)
{
	struct fx *f = *state;
	uint64_t id = mkfile(f->kv, KV_ROOT_ID, "k", "abcdef");
	struct kv_setattr sa = { .mask = KV_SET_SIZE, .size = 3 };
	struct kv_attr at;
	char buf[16];

	assert_int_equal(kv_setattr(f->kv, id, &sa, &at), 0);
	assert_content(f->kv, id, "abc");
	sa.size = 6;
	assert_int_equal(kv_setattr(f->kv, id, &sa, &at), 0);
	assert_int_equal(kv_read(f->kv, id, buf, sizeof(buf), 0), 6);
	assert_memory_equal(buf, "abc\0\0\0", 6);
	sa.size = f->o.max_value_size + 1;
	assert_int_equal(kv_setattr(f->kv, id, &sa, &at), -EFBIG);
	assert_int_equal(kv_write(f->kv, id, "x", 1, f->o.max_value_size), -EFBIG);
	/* Crossing the limit: a short write of what fits (POSIX). */
	assert_int_equal(kv_write(f->kv, id, "xyz", 3, f->o.max_value_size - 1), 1);
	assert_int_equal(kv_getattr(f->kv, id, &at), 0);
	assert_int_equal(at.size, f->o.max_value_size);
	sa.size = 6;
	assert_int_equal(kv_setattr(f->kv, id, &sa, &at), 0);
	assert_int_equal(kv_getattr(f->kv, id, &at), 0);
	assert_int_equal(at.size, 6);
	/* A clean, committed value is truncated from the backend's copy. */
	assert_int_equal(kv_flush(f->kv), 0);
	sa.size = 2;
	assert_int_equal(kv_setattr(f->kv, id, &sa, &at), 0);
	assert_content(f->kv, id, "ab");
}

static void test_ids_never_reused(void **state)
{
	struct fx *f = *state;
	uint64_t a = mkfile(f->kv, KV_ROOT_ID, "a", "1");
	struct kv_attr at;

	assert_int_equal(kv_flush(f->kv), 0);
	assert_int_equal(kv_unlink(f->kv, KV_ROOT_ID, "a"), 0);
	assert_int_equal(kv_close(f->kv), 0);
	reopen(f);
	assert_int_equal(kv_create(f->kv, KV_ROOT_ID, "b", 0644, 0, 0, true, &at), 0);
	assert_true(at.id > a);
}

/*
 * Records a load cannot place (parent missing or not a directory, name
 * invalid or taken) go to lost+found as ID-NAME, or ID when that is no
 * valid name, with what is below them; the move is committed at open and
 * nothing is deleted. A key holding the name lost+found gives lost+found.1.
 */
static void test_unplaceable_records_recovered(void **state)
{
	struct fx *f = *state;
	struct kv_meta orphan = { .id = 999, .parent = 555, .name = "lost", .mode = S_IFDIR | 0755 };
	struct kv_meta below = { .id = 1000, .parent = 999, .name = "k", .mode = S_IFREG | 0644 };
	struct kv_meta twin = { .id = 1001, .parent = KV_ROOT_ID, .name = "a", .mode = S_IFREG };
	struct kv_meta bad = { .id = 1002, .parent = KV_ROOT_ID, .name = "b/c", .mode = S_IFREG };
	struct kv_meta infile = { .id = 1003, .parent = 1001, .name = "x", .mode = S_IFREG };
	uint64_t a = mkfile(f->kv, KV_ROOT_ID, "a", "alpha");
	struct kv_attr lf, at;
	struct kv_stats st;
	char other[32];

	mkfile(f->kv, KV_ROOT_ID, "lost+found", "a key, not the directory");
	assert_int_equal(kv_close(f->kv), 0);
	/* The twin sorts either side of a: whichever links first keeps "a". */
	mem_put_raw(&f->s, &orphan);
	mem_put_raw(&f->s, &below);
	mem_put_raw(&f->s, &twin);
	mem_put_raw(&f->s, &bad);
	mem_put_raw(&f->s, &infile);
	reopen(f);
	assert_int_equal(kv_lookup(f->kv, KV_ROOT_ID, "lost+found.1", &lf), 0);
	assert_true(S_ISDIR(lf.mode));
	assert_int_equal(lf.mode & 07777, 0700);
	assert_int_equal(kv_lookup(f->kv, lf.id, "999-lost", &at), 0);
	assert_int_equal(kv_lookup(f->kv, at.id, "k", &at), 0);
	assert_int_equal(at.id, 1000);
	assert_int_equal(kv_lookup(f->kv, lf.id, "1002", &at), 0);
	assert_int_equal(kv_lookup(f->kv, lf.id, "1003-x", &at), 0);
	assert_int_equal(kv_lookup(f->kv, KV_ROOT_ID, "a", &at), 0);
	assert_true(at.id == a || at.id == 1001);
	snprintf(other, sizeof(other), "%llu-a", (unsigned long long)(at.id == a ? 1001 : a));
	assert_int_equal(kv_lookup(f->kv, lf.id, other, &at), 0);
	assert_true(at.id == a || at.id == 1001);
	assert_content(f->kv, a, "alpha");
	kv_get_stats(f->kv, &st);
	assert_int_equal(st.keys, 6);
	assert_int_equal(st.dirs, 2);
	/* Committed at open: the backend has every record in its new place. */
	assert_int_equal(mem_find_id(&f->s, 999)->m.parent, lf.id);
	assert_int_equal(mem_find_id(&f->s, 1002)->m.parent, lf.id);
	assert_non_null(mem_find(&f->s, lf.id, "999-lost"));
	reopen(f);
	assert_int_equal(kv_lookup(f->kv, KV_ROOT_ID, "lost+found.1", &at), 0);
	assert_int_equal(at.id, lf.id);
	assert_int_equal(kv_lookup(f->kv, KV_ROOT_ID, "lost+found.2", &at), -ENOENT);
	kv_get_stats(f->kv, &st);
	assert_int_equal(st.keys, 6);
}

/*
 * On a store other mounts share, a load that did not see a directory (made
 * after its scan passed) fetches it before anything goes to lost+found:
 * n/sub/k is placed as it is, n fetched.
 */
static void test_load_fetches_missing_parents(void **state)
{
	struct fx *f = *state;
	uint64_t n = mkdir_(f->kv, KV_ROOT_ID, "n"), sub = mkdir_(f->kv, n, "sub");
	uint64_t k = mkfile(f->kv, sub, "k", "v");
	struct kv_attr at;

	assert_int_equal(kv_close(f->kv), 0);
	f->s.shared = true;
	f->s.load_skip = n;
	reopen(f);
	assert_int_equal(kv_lookup(f->kv, KV_ROOT_ID, "lost+found", &at), -ENOENT);
	assert_int_equal(kv_lookup(f->kv, KV_ROOT_ID, "n", &at), 0);
	assert_int_equal(at.id, n);
	assert_int_equal(kv_lookup(f->kv, n, "sub", &at), 0);
	assert_int_equal(kv_lookup(f->kv, sub, "k", &at), 0);
	assert_int_equal(at.id, k);
	assert_content(f->kv, k, "v");
	/* Without fetch (not shared): the same store recovers instead. */
	assert_int_equal(kv_close(f->kv), 0);
	f->s.shared = false;
	reopen(f);
	assert_int_equal(kv_lookup(f->kv, KV_ROOT_ID, "lost+found", &at), 0);
}

/*
 * On a shared store, a load that read records as they were before another
 * mount removed or moved them (here: a removed directory "a" next to its
 * new one, and "h", since renamed "h2", next to the record renamed "h"
 * after it) sees them as they are now before anything goes to lost+found:
 * nothing does, the removed one is not brought back.
 */
static void test_load_settles_contested_names(void **state)
{
	struct fx *f = *state;
	uint64_t a2 = mkdir_(f->kv, KV_ROOT_ID, "a");
	uint64_t h = mkfile(f->kv, KV_ROOT_ID, "h2", "was h");
	uint64_t d = mkfile(f->kv, KV_ROOT_ID, "h", "was d");
	struct kv_meta stale[2] = {
		{ .id = 999, .parent = KV_ROOT_ID, .name = "a", .mode = S_IFDIR | 0755 },
		{ .id = h, .parent = KV_ROOT_ID, .name = "h", .mode = S_IFREG | 0644 },
	};
	struct kv_attr at;

	mkfile(f->kv, a2, "k", "in the new a");
	assert_int_equal(kv_close(f->kv), 0);
	f->s.shared = true;
	f->s.load_stale = stale;
	f->s.nload_stale = 2;
	reopen(f);
	assert_int_equal(kv_lookup(f->kv, KV_ROOT_ID, "lost+found", &at), -ENOENT);
	assert_int_equal(kv_lookup(f->kv, KV_ROOT_ID, "a", &at), 0);
	assert_int_equal(at.id, a2);
	assert_int_equal(kv_getattr(f->kv, 999, &at), -ENOENT);
	assert_int_equal(kv_lookup(f->kv, KV_ROOT_ID, "h", &at), 0);
	assert_int_equal(at.id, d);
	assert_int_equal(kv_lookup(f->kv, KV_ROOT_ID, "h2", &at), 0);
	assert_int_equal(at.id, h);
	assert_null(mem_find_id(&f->s, 999));
	f->s.load_stale = NULL;
	f->s.nload_stale = 0;
}

/*
 * A load that read a deep subtree another mount has since removed whole
 * (rm -r), its top already gone when the scan got there: the subtree
 * leaves level by level, however deep, and nothing of it is recovered into
 * lost+found (which the flush at open would bring back as live records).
 */
static void test_load_settles_deep_removal(void **state)
{
	struct fx *f = *state;
	struct kv_meta stale[12];
	char names[12][8];
	struct kv_attr at;

	for (int i = 0; i < 12; i++) {
		snprintf(names[i], sizeof(names[i]), "l%d", i);
		stale[i] = (struct kv_meta){ .id = 901 + i, .parent = 900 + i, .name = names[i],
					     .mode = i < 11 ? S_IFDIR | 0755 : S_IFREG | 0644 };
	}
	assert_int_equal(kv_close(f->kv), 0);
	f->s.shared = true;
	f->s.load_stale = stale;
	f->s.nload_stale = 12;
	reopen(f);
	assert_int_equal(kv_lookup(f->kv, KV_ROOT_ID, "lost+found", &at), -ENOENT);
	for (int i = 0; i < 12; i++) {
		assert_int_equal(kv_getattr(f->kv, 901 + i, &at), -ENOENT);
		assert_null(mem_find_id(&f->s, 901 + i));
	}
	f->s.load_stale = NULL;
	f->s.nload_stale = 0;
}

/* A recovered subtree too deep to fit under lost+found (keys are at most
 * KV_KEY_MAX bytes) is recovered entry by entry, each one level shorter. */
static void test_deep_orphan_split(void **state)
{
	struct fx *f = *state;
	char names[4][253];
	struct kv_meta top = { .id = 2000, .parent = 555, .name = "deep", .mode = S_IFDIR | 0755 };
	struct kv_attr lf, at;
	struct kv_dirent *ents;
	size_t n;

	assert_int_equal(kv_close(f->kv), 0);
	mem_put_raw(&f->s, &top);
	/* 2000/xxx/yyy/zzz/www: 4 names of 252 bytes, 1011 bytes below 2000. */
	for (int i = 0; i < 4; i++) {
		struct kv_meta m = { .id = 2001 + i, .parent = 2000 + i, .name = names[i],
				     .mode = i < 3 ? S_IFDIR | 0755 : S_IFREG | 0644 };

		memset(names[i], 'w' + i, 252);
		names[i][252] = '\0';
		mem_put_raw(&f->s, &m);
	}
	reopen(f);
	assert_int_equal(kv_lookup(f->kv, KV_ROOT_ID, "lost+found", &lf), 0);
	assert_int_equal(kv_lookup(f->kv, lf.id, "2000-deep", &at), 0);
	assert_int_equal(kv_readdir(f->kv, at.id, &ents, &n), 0);
	assert_int_equal(n, 0);
	kv_dirents_free(ents, n);
	/* "2001-www...": longer than a name may be. */
	assert_int_equal(kv_lookup(f->kv, lf.id, "2001", &at), 0);
	for (int i = 1; i < 4; i++) {
		assert_int_equal(kv_lookup(f->kv, at.id, names[i], &at), 0);
		assert_int_equal(at.id, 2001 + i);
	}
}

static void test_metadata_persisted(void **state)
{
	struct fx *f = *state;
	uint64_t id = mkfile(f->kv, KV_ROOT_ID, "k", "v");
	struct kv_setattr sa = { .mask = KV_SET_MODE | KV_SET_UID | KV_SET_GID | KV_SET_MTIME |
					 KV_SET_ATIME,
				 .mode = 0600, .uid = 7, .gid = 8,
				 .atime_ns = 1000000001, .mtime_ns = 2000000002 };
	struct kv_attr at;

	assert_int_equal(kv_setattr(f->kv, id, &sa, &at), 0);
	assert_int_equal(kv_close(f->kv), 0);
	reopen(f);
	assert_int_equal(kv_getattr(f->kv, id, &at), 0);
	assert_int_equal(at.mode, S_IFREG | 0600);
	assert_int_equal(at.uid, 7);
	assert_int_equal(at.gid, 8);
	assert_int_equal(at.atime_ns, 1000000001);
	assert_int_equal(at.mtime_ns, 2000000002);
}

static void test_rmdir_and_readdir(void **state)
{
	struct fx *f = *state;
	uint64_t d = mkdir_(f->kv, KV_ROOT_ID, "d");
	struct kv_dirent *ents;
	size_t n;

	mkfile(f->kv, d, "x", "1");
	mkfile(f->kv, d, "y", "2");
	assert_int_equal(kv_rmdir(f->kv, KV_ROOT_ID, "d"), -ENOTEMPTY);
	assert_int_equal(kv_readdir(f->kv, d, &ents, &n), 0);
	assert_int_equal(n, 2);
	assert_true((!strcmp(ents[0].name, "x") && !strcmp(ents[1].name, "y")) ||
		    (!strcmp(ents[0].name, "y") && !strcmp(ents[1].name, "x")));
	kv_dirents_free(ents, n);
	assert_int_equal(kv_unlink(f->kv, d, "x"), 0);
	assert_int_equal(kv_unlink(f->kv, d, "y"), 0);
	assert_int_equal(kv_rmdir(f->kv, KV_ROOT_ID, "d"), 0);
	assert_int_equal(kv_unlink(f->kv, KV_ROOT_ID, "d"), -ENOENT);
}

static void test_flush_by_age(void **state)
{
	struct fx *f = *state;

	kv_close(f->kv);
	f->o.flush_interval_ms = 50;
	reopen(f);
	mkfile(f->kv, KV_ROOT_ID, "aged", "v");
	/* The flusher commits it by itself: wait for that condition. */
	bool found = false;

	for (int i = 0; i < 500 && !found; i++) {
		struct timespec ts = { 0, 10 * 1000000 };

		pthread_mutex_lock(&f->s.lock);
		found = mem_find(&f->s, KV_ROOT_ID, "aged") != NULL;
		pthread_mutex_unlock(&f->s.lock);
		if (!found)
			nanosleep(&ts, NULL);
	}
	assert_true(found);
}

struct worker {
	struct kv_store *kv;
	int idx;
};

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	char name[32], val[64];
	struct kv_attr at;

	for (int i = 0; i < 300; i++) {
		snprintf(name, sizeof(name), "w%d-%d", w->idx, i % 20);
		snprintf(val, sizeof(val), "%s=%d", name, i);
		if (kv_create(w->kv, KV_ROOT_ID, name, 0644, 0, 0, false, &at))
			continue;
		kv_open_file(w->kv, at.id, true);
		kv_write(w->kv, at.id, val, strlen(val), 0);
		kv_release_file(w->kv, at.id);
		if (i % 7 == 0)
			kv_fsync(w->kv, at.id);
		if (i % 11 == 0)
			kv_unlink(w->kv, KV_ROOT_ID, name);
	}
	return NULL;
}

static void test_concurrent_writers_match_after_reopen(void **state)
{
	struct fx *f = *state;
	pthread_t t[4];
	struct worker w[4];
	struct kv_dirent *ents;
	size_t n;

	kv_close(f->kv);
	f->o.flush_interval_ms = 5;
	reopen(f);
	for (int i = 0; i < 4; i++) {
		w[i] = (struct worker){ f->kv, i };
		pthread_create(&t[i], NULL, worker_main, &w[i]);
	}
	for (int i = 0; i < 4; i++)
		pthread_join(t[i], NULL);
	/* What the store shows is exactly what the backend has after close. */
	assert_int_equal(kv_readdir(f->kv, KV_ROOT_ID, &ents, &n), 0);
	char **vals = calloc(n, sizeof(char *));
	for (size_t i = 0; i < n; i++) {
		vals[i] = calloc(1, 64);
		kv_read(f->kv, ents[i].id, vals[i], 63, 0);
	}
	assert_int_equal(kv_close(f->kv), 0);
	assert_int_equal(f->s.nrecs, n + 1);
	for (size_t i = 0; i < n; i++) {
		char *c = mem_value_str(&f->s, KV_ROOT_ID, ents[i].name);
		assert_non_null(c);
		assert_string_equal(c, vals[i]);
		free(c);
		free(vals[i]);
	}
	free(vals);
	kv_dirents_free(ents, n);
	reopen(f);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_write_read_flush_reopen, setup, teardown),
		cmocka_unit_test_setup_teardown(test_close_flushes_everything, setup, teardown),
		cmocka_unit_test_setup_teardown(test_overwrite_racing_flush, setup, teardown),
		cmocka_unit_test_setup_teardown(test_delete_racing_flush, setup, teardown),
		cmocka_unit_test_setup_teardown(test_create_delete_before_flush_costs_nothing,
						setup, teardown),
		cmocka_unit_test_setup_teardown(test_fsync_eio_when_backend_down_then_recovers,
						setup, teardown),
		cmocka_unit_test_setup_teardown(test_refused_batch_leaves_records_unsent, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_buffer_full_writer_waits_then_eio, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_dir_rename_is_one_small_change, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_rename_errors, setup, teardown),
		cmocka_unit_test_setup_teardown(test_name_limits, setup, teardown),
		cmocka_unit_test_setup_teardown(test_unlinked_open_file, setup, teardown),
		cmocka_unit_test_setup_teardown(test_truncate_and_efbig, setup, teardown),
		cmocka_unit_test_setup_teardown(test_ids_never_reused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_deep_orphan_split, setup, teardown),
		cmocka_unit_test_setup_teardown(test_load_fetches_missing_parents, setup, teardown),
		cmocka_unit_test_setup_teardown(test_load_settles_contested_names, setup, teardown),
		cmocka_unit_test_setup_teardown(test_load_settles_deep_removal, setup, teardown),
		cmocka_unit_test_setup_teardown(test_unplaceable_records_recovered, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_metadata_persisted, setup, teardown),
		cmocka_unit_test_setup_teardown(test_rmdir_and_readdir, setup, teardown),
		cmocka_unit_test_setup_teardown(test_flush_by_age, setup, teardown),
		cmocka_unit_test_setup_teardown(test_concurrent_writers_match_after_reopen, setup,
						teardown),
	};

	return cmocka_run_group_tests_name("kv", tests, NULL, NULL);
}
