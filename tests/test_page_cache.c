/*
 * The kernel's page cache of values (spec section 2, README "Page cache"),
 * through the real daemon: what a write-only handle wrote is put into the
 * cache after its release, so the next open reads it without a READ
 * request; every change made after that, through any kind of handle, is
 * what the next open reads (close-to-open), including changes that race
 * with the push.
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
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>
#include <cmocka.h>
#include <jansson.h>

#include "mnt.h"

/* How many requests of op the daemon has answered (.nadb/stats). */
static long long op_count(struct mnt *m, const char *op)
{
	/* One read(2) of a direct I/O file: one READ per call, always. */
	size_t cap = 1 << 20;
	char *text = malloc(cap);
	json_error_t err;
	json_t *root, *n;
	long long v;
	ssize_t len;
	int fd;

	assert_non_null(text);
	ASSERT_SYS(fd = open(mnt_path(m, ".nadb/stats"), O_RDONLY | O_CLOEXEC));
	ASSERT_SYS(len = read(fd, text, cap));
	ASSERT_SYS(close(fd));
	assert_true((size_t)len < cap);
	root = json_loadb(text, (size_t)len, 0, &err);
	if (!root)
		fail_msg(".nadb/stats: %s", err.text);
	n = json_object_get(json_object_get(json_object_get(root, "ops"), op), "count");
	assert_true(json_is_integer(n));
	v = json_integer_value(n);
	json_decref(root);
	free(text);
	return v;
}

/* Values the daemon stored into the page cache (.nadb/stats). */
static long long kernel_pushed(struct mnt *m)
{
	size_t len;
	char *text = read_file(mnt_path(m, ".nadb/stats"), &len);
	json_error_t err;
	json_t *root;
	long long v;

	assert_non_null(text);
	root = json_loadb(text, len, 0, &err);
	if (!root)
		fail_msg(".nadb/stats: %s", err.text);
	v = json_integer_value(json_object_get(json_object_get(root, "kernel_cache"), "pushed"));
	json_decref(root);
	free(text);
	return v;
}

/* READs the daemon answered while fn ran; op_count's own reads of the
 * stats file are counted too, so one empty measurement is taken off. */
static long long reads_during(struct mnt *m, void (*fn)(void *), void *arg)
{
	long long a = op_count(m, "read"), b = op_count(m, "read"), c;

	fn(arg);
	c = op_count(m, "read");
	return (c - b) - (b - a);
}

/* Is the first page of path in the page cache? mincore(2) of a mapping
 * that was never touched asks the cache without reading anything. */
static bool cached(const char *path)
{
	long pg = sysconf(_SC_PAGESIZE);
	unsigned char vec = 0;
	struct stat st;
	void *p;
	int fd;

	ASSERT_SYS(fd = open(path, O_RDONLY | O_CLOEXEC));
	ASSERT_SYS(fstat(fd, &st));
	if (!st.st_size) {
		close(fd);
		return false;
	}
	p = mmap(NULL, (size_t)pg, PROT_READ, MAP_SHARED, fd, 0);
	assert_true(p != MAP_FAILED);
	ASSERT_SYS(mincore(p, (size_t)pg, &vec));
	munmap(p, (size_t)pg);
	close(fd);
	return vec & 1;
}

/* Reads path (which must hold want) until its pages stay cached: the
 * first read after a change fills pages the daemon may drop once more
 * before it lets the kernel keep them. */
static void warm(const char *path, const char *want)
{
	for (int64_t deadline = now_ms() + 5000;;) {
		assert_file_str(path, want);
		if (cached(path))
			return;
		if (now_ms() > deadline)
			fail_msg("%s never stayed in the page cache", path);
		usleep(1000);
	}
}

struct expect {
	const char *path, *want;
};

static void check_file(void *arg)
{
	struct expect *e = arg;

	assert_file_str(e->path, e->want);
}

static void test_written_value_is_read_from_cache(void **state)
{
	struct mnt *m = *state;
	struct expect e;

	mnt_start(m, NULL);
	e.path = mnt_path(m, "k");
	e.want = "a value written through a write-only handle\n";
	put_str(e.path, e.want);
	/* Waited for without opening the key: a push skips keys held open. */
	for (int64_t deadline = now_ms() + 5000; kernel_pushed(m) < 1; usleep(1000))
		if (now_ms() > deadline)
			fail_msg("the written value was never pushed");
	assert_true(cached(e.path));
	assert_int_equal(reads_during(m, check_file, &e), 0);
	assert_int_equal(reads_during(m, check_file, &e), 0);

	/* A value too big to push is read from the store, and then kept:
	 * nothing changed it. */
	char *big = malloc(200 * 1024 + 1);

	memset(big, 'b', 200 * 1024);
	big[200 * 1024] = '\0';
	e.path = mnt_path(m, "big");
	e.want = big;
	put_str(e.path, big);
	assert_true(reads_during(m, check_file, &e) > 0);
	warm(e.path, e.want);
	assert_int_equal(reads_during(m, check_file, &e), 0);
	free(big);
	mnt_stop(m);
}

static void pwrite_at(const char *path, int flags, const char *s, off_t off)
{
	int fd;

	ASSERT_SYS(fd = open(path, flags | O_CLOEXEC));
	assert_int_equal(pwrite(fd, s, strlen(s), off), (ssize_t)strlen(s));
	ASSERT_SYS(close(fd));
}

/* Each change lands while the old value is cached; the next open reads it. */
static void test_changes_reach_the_next_open(void **state)
{
	struct mnt *m = *state;
	const char *p;

	mnt_start(m, NULL);
	p = mnt_path(m, "k");
	put_str(p, "version one\n");
	warm(p, "version one\n");
	put_str(p, "version two\n"); /* same length */
	warm(p, "version two\n");
	pwrite_at(p, O_WRONLY, "TWO", 8);
	warm(p, "version TWO\n");
	pwrite_at(p, O_RDWR, "2", 8); /* through the page cache */
	warm(p, "version 2WO\n");
	ASSERT_SYS(truncate(p, 7));
	warm(p, "version");
	pwrite_at(p, O_RDWR | O_TRUNC, "fresh", 0);
	warm(p, "fresh");
	pwrite_at(p, O_WRONLY | O_APPEND, " tail", 0);
	assert_file_str(p, "fresh tail");
	mnt_stop(m);
}

/* A handle opened before a write through another one sees the write. */
static void test_open_reader_sees_later_write(void **state)
{
	struct mnt *m = *state;
	const char *p;
	char buf[64];
	int r;

	mnt_start(m, NULL);
	p = mnt_path(m, "k");
	put_str(p, "before\n");
	warm(p, "before\n");
	ASSERT_SYS(r = open(p, O_RDONLY | O_CLOEXEC));
	assert_int_equal(pread(r, buf, sizeof(buf), 0), 7);
	assert_memory_equal(buf, "before\n", 7);
	pwrite_at(p, O_WRONLY, "AFTER", 0);
	assert_int_equal(pread(r, buf, sizeof(buf), 0), 7);
	assert_memory_equal(buf, "AFTERe\n", 7);
	ASSERT_SYS(close(r));
	mnt_stop(m);
}

/*
 * Rewrites back to back, each read right after its close: the push of one
 * version races with the write of the next, and with the open that reads
 * it. The open must never get a pushed value older than itself.
 */
static void test_close_to_open_while_pushing(void **state)
{
	struct mnt *m = *state;
	char want[32], got[32];
	const char *p;

	mnt_start(m, NULL);
	p = mnt_path(m, "k");
	for (int i = 0; i < 3000; i++) {
		size_t len;
		char *s;

		snprintf(want, sizeof(want), "version %06d\n", i);
		put_str(p, want);
		s = read_file(p, &len);
		assert_non_null(s);
		snprintf(got, sizeof(got), "%.*s", (int)(len < 31 ? len : 31), s);
		free(s);
		if (strcmp(got, want))
			fail_msg("round %d read \"%s\"", i, got);
	}
	mnt_stop(m);
}

/*
 * Two rewrites back to back: the push of the first may copy its value
 * before the second write and store it after, behind the kernel's own
 * invalidation of the written range. A handle open all along must not
 * keep reading that older value: the push invalidates what it stored.
 */
static void test_late_push_is_not_kept(void **state)
{
	struct mnt *m = *state;
	char want[32], got[32];
	const char *p;
	int r;

	mnt_start(m, NULL);
	p = mnt_path(m, "k");
	put_str(p, "opened once     \n");
	ASSERT_SYS(r = open(p, O_RDONLY | O_CLOEXEC));
	for (int i = 0; i < 1000; i++) {
		ssize_t n;

		snprintf(want, sizeof(want), "first  %09d\n", i);
		put_str(p, want);
		snprintf(want, sizeof(want), "second %09d\n", i);
		put_str(p, want);
		for (int64_t deadline = now_ms() + 5000;; usleep(1000)) {
			ASSERT_SYS(n = pread(r, got, sizeof(got) - 1, 0));
			got[n] = '\0';
			if (!strcmp(got, want))
				break;
			if (now_ms() > deadline)
				fail_msg("round %d: the open handle still reads \"%s\"", i, got);
		}
	}
	ASSERT_SYS(close(r));
	mnt_stop(m);
}

/*
 * A push copies the value and then stores it, growing the kernel's idea of
 * the file's size to the copy's; an O_APPEND write takes its offset from
 * that size. A truncation between the copy and the store must still leave
 * the append at the real end (no hole of zeros).
 */
static void test_append_after_truncate_while_pushing(void **state)
{
	struct mnt *m = *state;
	const char *p;

	mnt_start(m, NULL);
	p = mnt_path(m, "k");
	for (int i = 0; i < 2000; i++) {
		put_str(p, "a value long enough to leave a hole if appended after\n");
		if (i % 2)
			ASSERT_SYS(truncate(p, 0));
		else
			close(open(p, O_WRONLY | O_TRUNC | O_CLOEXEC));
		pwrite_at(p, O_WRONLY | O_APPEND, "x", 0);
		assert_file_str(p, "x");
	}
	mnt_stop(m);
}

/*
 * A mount with one thread pushes nothing (fs_push.c): an open that waits
 * for a push held up by a READ would wait for the one thread that could
 * answer it. Each new value is read from the store, once.
 */
static void test_single_thread_mount_does_not_push(void **state)
{
	struct mnt *m = *state;
	struct expect e[20];

	mnt_start(m, "max_threads=1");
	for (int i = 0; i < 20; i++) {
		e[i].path = mnt_path(m, "k%d", i);
		e[i].want = mnt_str(m, "value %d\n", i);
		put_str(e[i].path, e[i].want);
	}
	for (int i = 0; i < 20; i++) {
		assert_true(reads_during(m, check_file, &e[i]) > 0);
		warm(e[i].path, e[i].want);
		assert_int_equal(reads_during(m, check_file, &e[i]), 0);
	}
	assert_int_equal(kernel_pushed(m), 0);
	mnt_stop(m);
}

struct seq_read {
	const char *path;
	const unsigned char *want;
	size_t len;
};

/* Reads the whole file in 1 MiB read(2)s through a fresh descriptor. */
static void read_sequentially(void *arg)
{
	struct seq_read *r = arg;
	size_t chunk = 1 << 20, off = 0;
	unsigned char *buf = malloc(chunk);
	ssize_t n;
	int fd;

	assert_non_null(buf);
	ASSERT_SYS(fd = open(r->path, O_RDONLY | O_CLOEXEC));
	while ((n = read(fd, buf, chunk)) > 0) {
		assert_true(off + (size_t)n <= r->len);
		assert_memory_equal(buf, r->want + off, (size_t)n);
		off += (size_t)n;
	}
	ASSERT_SYS(n);
	ASSERT_SYS(close(fd));
	assert_int_equal(off, r->len);
	free(buf);
}

/*
 * The mount reads ahead 1 MiB, what one READ carries (mount/readahead.c,
 * run as root as the tests are): a sequential read of 4 MiB costs about 4
 * READs, not the 32 of the kernel's default 128 KiB.
 */
static void test_sequential_read_ahead(void **state)
{
	struct mnt *m = *state;
	size_t len = 4 << 20;
	unsigned char *data = malloc(len);
	struct seq_read r = { .want = data, .len = len };
	const char *ra;
	struct stat st;

	if (geteuid()) {
		free(data);
		skip(); /* the daemon can raise it only as root */
	}
	assert_non_null(data);
	for (size_t i = 0; i < len; i++)
		data[i] = (unsigned char)(i * 7 + i / 4096);
	mnt_start(m, NULL);
	ASSERT_SYS(stat(m->dir, &st));
	ra = mnt_str(m, "/sys/class/bdi/%u:%u/read_ahead_kb", major(st.st_dev), minor(st.st_dev));
	for (int64_t deadline = now_ms() + 5000;; usleep(1000)) {
		size_t n;
		char *v = read_file(ra, &n);
		bool raised = v && n == 5 && !memcmp(v, "1024\n", 5);

		free(v);
		if (raised)
			break;
		if (now_ms() > deadline)
			fail_msg("%s never became 1024", ra);
	}
	r.path = mnt_path(m, "big");
	put_file(r.path, data, len);
	long long reads = reads_during(m, read_sequentially, &r);

	if (reads < 1 || reads > 8)
		fail_msg("a sequential read of 4 MiB took %lld READs", reads);
	free(data);
	mnt_stop(m);
}

#define T(f) cmocka_unit_test_setup_teardown(f, mnt_setup, mnt_teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		T(test_written_value_is_read_from_cache),
		T(test_changes_reach_the_next_open),
		T(test_open_reader_sees_later_write),
		T(test_close_to_open_while_pushing),
		T(test_late_push_is_not_kept),
		T(test_append_after_truncate_while_pushing),
		T(test_single_thread_mount_does_not_push),
		T(test_sequential_read_ahead),
	};

	umask(022);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
