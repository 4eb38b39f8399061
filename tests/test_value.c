/*
 * Unit tests of store/value.c: chunked values, holes, truncation, snapshots and their copy on
 * write, memory use of small values, all-or-nothing writes when memory runs out, and a snapshot
 * read and freed by another thread while the original is written.
 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "store/value.h"
#include "store/zhint.h"

#define CH ((uint64_t)KV_CHUNK_SIZE)

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define UNDER_SANITIZER 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define UNDER_SANITIZER 1
#endif
#endif

static uint64_t rng_state;

static uint64_t rnd(void)
{
	uint64_t z = (rng_state += 0x9e3779b97f4a7c15ULL);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

static uint64_t rnd_below(uint64_t n)
{
	return n ? rnd() % n : 0;
}

/* A seed from NADB_TEST_SEED or the fixed default, printed so that a failure can be replayed. */
static uint64_t test_seed(const char *what, uint64_t dflt)
{
	const char *env = getenv("NADB_TEST_SEED");
	uint64_t seed = env ? strtoull(env, NULL, 0) : dflt;

	printf("# %s: seed %llu\n", what, (unsigned long long)seed);
	return seed;
}

static void fill_pattern(unsigned char *buf, size_t len, uint64_t salt)
{
	for (size_t i = 0; i < len; i++)
		buf[i] = (unsigned char)((i * 131 + salt * 7 + (i >> 8)) % 251 + 1);
}

/* The whole value equals ref[0..len). */
static void assert_value_is(const struct kv_value *v, const unsigned char *ref, size_t len)
{
	unsigned char *buf = malloc(len + 1);

	assert_non_null(buf);
	assert_int_equal(kv_value_size(v), len);
	assert_int_equal(kv_value_read(v, buf, len + 1, 0), len);
	assert_memory_equal(buf, ref, len);
	free(buf);
}

static bool all_zero(const unsigned char *buf, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (buf[i])
			return false;
	return true;
}

static void test_empty_and_small(void **state)
{
	struct kv_value *v = kv_value_new();
	unsigned char buf[16];

	(void)state;
	assert_non_null(v);
	assert_int_equal(kv_value_size(v), 0);
	assert_int_equal(kv_value_mem(v), 0);
	assert_int_equal(kv_value_read(v, buf, sizeof(buf), 0), 0);
	assert_int_equal(kv_value_read(v, buf, sizeof(buf), 12345), 0);
	assert_int_equal(kv_value_write(v, "", 0, 1000), 0);
	assert_int_equal(kv_value_size(v), 0);

	assert_int_equal(kv_value_write(v, "hello", 5, 0), 0);
	assert_int_equal(kv_value_size(v), 5);
	assert_int_equal(kv_value_read(v, buf, sizeof(buf), 0), 5);
	assert_memory_equal(buf, "hello", 5);
	assert_int_equal(kv_value_read(v, buf, sizeof(buf), 3), 2);
	assert_memory_equal(buf, "lo", 2);
	assert_int_equal(kv_value_read(v, buf, sizeof(buf), 5), 0);
	assert_int_equal(kv_value_write(v, "J", 1, 0), 0);
	assert_int_equal(kv_value_read(v, buf, 5, 0), 5);
	assert_memory_equal(buf, "Jello", 5);
	kv_value_free(v);
	kv_value_free(NULL);

	v = kv_value_from_buf("abc", 3);
	assert_non_null(v);
	assert_value_is(v, (const unsigned char *)"abc", 3);
	kv_value_free(v);
	v = kv_value_from_buf(NULL, 0);
	assert_non_null(v);
	assert_int_equal(kv_value_size(v), 0);
	kv_value_free(v);
}

static void test_chunk_boundaries(void **state)
{
	const size_t len = 3 * CH + 100, off = CH - 50, total = off + len;
	unsigned char *ref = calloc(1, total), *buf = malloc(total);
	struct kv_value *v = kv_value_new();
	static const size_t wins[][2] = {
		{ 0, 10 }, { CH - 60, 20 }, { CH - 1, 2 }, { CH, 1 }, { 2 * CH - 3, CH + 6 },
		{ 0, 4 * CH }, { 3 * CH + 10, 1000 }, { 4 * CH - 1, 100 },
	};

	(void)state;
	assert_non_null(ref);
	assert_non_null(buf);
	assert_non_null(v);
	fill_pattern(ref + off, len, 1);
	assert_int_equal(kv_value_write(v, ref + off, len, off), 0);
	assert_value_is(v, ref, total);
	for (size_t i = 0; i < sizeof(wins) / sizeof(wins[0]); i++) {
		size_t wo = wins[i][0], wl = wins[i][1];
		size_t want = wo >= total ? 0 : (wl < total - wo ? wl : total - wo);

		assert_int_equal(kv_value_read(v, buf, wl, wo), want);
		assert_memory_equal(buf, ref + wo, want);
	}

	/* Overwrite across two boundaries in the middle. */
	fill_pattern(ref + CH - 7, CH + 14, 2);
	assert_int_equal(kv_value_write(v, ref + CH - 7, CH + 14, CH - 7), 0);
	assert_value_is(v, ref, total);
	kv_value_free(v);
	free(buf);
	free(ref);
}

static void test_holes(void **state)
{
	struct kv_value *v = kv_value_new();
	const uint64_t off = 5 * CH + 7;
	unsigned char *buf = malloc(off + 10);

	(void)state;
	assert_non_null(v);
	assert_non_null(buf);
	assert_int_equal(kv_value_write(v, "0123456789", 10, off), 0);
	assert_int_equal(kv_value_size(v), off + 10);
	assert_int_equal(kv_value_read(v, buf, off + 10, 0), off + 10);
	assert_true(all_zero(buf, off));
	assert_memory_equal(buf + off, "0123456789", 10);
	/* Only the chunk written costs memory, and only a small piece of it. */
	assert_true(kv_value_mem(v) > 0);
	assert_true(kv_value_mem(v) < 1024);

	/* A write into a hole before the end. */
	assert_int_equal(kv_value_write(v, "xy", 2, 2 * CH - 1), 0);
	assert_int_equal(kv_value_read(v, buf, off + 10, 0), off + 10);
	assert_true(all_zero(buf, 2 * CH - 1));
	assert_memory_equal(buf + 2 * CH - 1, "xy", 2);
	assert_true(all_zero(buf + 2 * CH + 1, off - 2 * CH - 1));
	assert_memory_equal(buf + off, "0123456789", 10);
	kv_value_free(v);
	free(buf);
}

static void test_sparse_far(void **state)
{
	const uint64_t off = (1ULL << 30) + 3;
	struct kv_value *v = kv_value_new();
	unsigned char buf[100];

	(void)state;
	assert_non_null(v);
	assert_int_equal(kv_value_write(v, "far", 3, off), 0);
	assert_int_equal(kv_value_size(v), off + 3);
	assert_true(kv_value_mem(v) < 1024);
	assert_int_equal(kv_value_read(v, buf, sizeof(buf), off - 50), 53);
	assert_true(all_zero(buf, 50));
	assert_memory_equal(buf + 50, "far", 3);
	assert_int_equal(kv_value_read(v, buf, sizeof(buf), 12345678), sizeof(buf));
	assert_true(all_zero(buf, sizeof(buf)));
	assert_int_equal(kv_value_read(v, buf, sizeof(buf), off + 3), 0);
	kv_value_free(v);
}

static void test_truncate(void **state)
{
	const size_t len = 200 * 1024, cut = 70000;
	unsigned char *ref = malloc(len), *buf = malloc(len);
	struct kv_value *v, *snap;

	(void)state;
	assert_non_null(ref);
	assert_non_null(buf);
	fill_pattern(ref, len, 3);
	v = kv_value_from_buf(ref, len);
	assert_non_null(v);

	assert_int_equal(kv_value_truncate(v, cut), 0);
	assert_int_equal(kv_value_size(v), cut);
	assert_true(kv_value_mem(v) < 2 * CH);
	assert_int_equal(kv_value_read(v, buf, len, 0), cut);
	assert_memory_equal(buf, ref, cut);
	assert_int_equal(kv_value_truncate(v, len), 0);
	assert_int_equal(kv_value_size(v), len);
	assert_int_equal(kv_value_read(v, buf, len, 0), len);
	assert_memory_equal(buf, ref, cut);
	assert_true(all_zero(buf + cut, len - cut));

	/* A write past the end after a cut must not resurrect the cut bytes either. */
	assert_int_equal(kv_value_truncate(v, 10), 0);
	assert_int_equal(kv_value_write(v, "Z", 1, CH + 5), 0);
	assert_int_equal(kv_value_read(v, buf, len, 0), CH + 6);
	assert_memory_equal(buf, ref, 10);
	assert_true(all_zero(buf + 10, CH + 5 - 10));
	assert_int_equal(buf[CH + 5], 'Z');

	/* Cutting inside a chunk shared with a snapshot leaves the snapshot whole. */
	assert_int_equal(kv_value_write(v, ref, len, 0), 0);
	snap = kv_value_snapshot(v);
	assert_non_null(snap);
	assert_int_equal(kv_value_truncate(v, 100), 0);
	assert_int_equal(kv_value_truncate(v, len), 0);
	assert_int_equal(kv_value_read(v, buf, len, 0), len);
	assert_memory_equal(buf, ref, 100);
	assert_true(all_zero(buf + 100, len - 100));
	assert_value_is(snap, ref, len);

	assert_int_equal(kv_value_truncate(v, 0), 0);
	assert_int_equal(kv_value_size(v), 0);
	assert_int_equal(kv_value_mem(v), 0);
	assert_int_equal(kv_value_truncate(v, 3 * CH), 0);
	assert_int_equal(kv_value_mem(v), 0);
	assert_int_equal(kv_value_read(v, buf, len, 0), 3 * CH);
	assert_true(all_zero(buf, 3 * CH));
	kv_value_free(snap);
	kv_value_free(v);
	free(buf);
	free(ref);
}

static void test_snapshot_isolation(void **state)
{
	const size_t len = 3 * CH + 500;
	unsigned char *ref = malloc(len), *ref2 = malloc(len);
	struct kv_value *v, *s1, *s2;

	(void)state;
	assert_non_null(ref);
	assert_non_null(ref2);
	fill_pattern(ref, len, 4);
	memcpy(ref2, ref, len);
	v = kv_value_from_buf(ref, len);
	assert_non_null(v);

	/* Write to the original: the snapshot keeps the old bytes. Free the snapshot first. */
	s1 = kv_value_snapshot(v);
	assert_non_null(s1);
	assert_int_equal(kv_value_mem(s1), kv_value_mem(v));
	assert_int_equal(kv_value_write(v, "ORIGINAL", 8, CH - 4), 0);
	memcpy(ref2 + CH - 4, "ORIGINAL", 8);
	assert_int_equal(kv_value_write(v, "tail", 4, len), 0);
	assert_value_is(s1, ref, len);
	kv_value_free(s1);
	assert_int_equal(kv_value_size(v), len + 4);
	assert_int_equal(kv_value_truncate(v, len), 0);
	assert_value_is(v, ref2, len);

	/* Write to the snapshot: the original keeps its bytes. Free the original first. */
	s2 = kv_value_snapshot(v);
	assert_non_null(s2);
	assert_int_equal(kv_value_write(s2, "SNAP", 4, 2 * CH - 2), 0);
	assert_int_equal(kv_value_truncate(s2, CH + 1), 0);
	assert_value_is(v, ref2, len);
	kv_value_free(v);
	assert_value_is(s2, ref2, CH + 1);
	kv_value_free(s2);

	/* Snapshot of a snapshot, of an empty value, and of a value with holes. */
	v = kv_value_new();
	s1 = kv_value_snapshot(v);
	assert_non_null(s1);
	assert_int_equal(kv_value_size(s1), 0);
	kv_value_free(s1);
	assert_int_equal(kv_value_write(v, "h", 1, 4 * CH), 0);
	s1 = kv_value_snapshot(v);
	s2 = kv_value_snapshot(s1);
	assert_non_null(s2);
	kv_value_free(s1);
	assert_int_equal(kv_value_write(v, "i", 1, 4 * CH), 0);
	assert_int_equal(kv_value_size(s2), 4 * CH + 1);
	{
		unsigned char c;

		assert_int_equal(kv_value_read(s2, &c, 1, 4 * CH), 1);
		assert_int_equal(c, 'h');
		assert_int_equal(kv_value_read(v, &c, 1, 4 * CH), 1);
		assert_int_equal(c, 'i');
	}
	kv_value_free(s2);
	kv_value_free(v);
	free(ref2);
	free(ref);
}

struct collect {
	unsigned char *buf;
	size_t len, cap, pieces;
	size_t stop_after;		/* 0 = never */
};

static int collect_piece(const void *data, size_t len, void *arg)
{
	struct collect *c = arg;

	assert_true(len > 0);
	assert_true(len <= KV_CHUNK_SIZE);
	assert_true(c->len + len <= c->cap);
	memcpy(c->buf + c->len, data, len);
	c->len += len;
	c->pieces++;
	if (c->stop_after && c->pieces == c->stop_after)
		return -42;
	return 0;
}

static void check_foreach(const struct kv_value *v)
{
	size_t size = kv_value_size(v);
	struct collect c = { .buf = malloc(size + 1), .cap = size };
	unsigned char *ref = malloc(size + 1);

	assert_non_null(c.buf);
	assert_non_null(ref);
	assert_int_equal(kv_value_foreach(v, collect_piece, &c), 0);
	assert_int_equal(c.len, size);
	assert_int_equal(kv_value_read(v, ref, size, 0), size);
	assert_memory_equal(c.buf, ref, size);
	free(ref);
	free(c.buf);
}

static void test_foreach(void **state)
{
	struct kv_value *v = kv_value_new();
	unsigned char pat[3000];
	struct collect c = { 0 };

	(void)state;
	assert_non_null(v);
	assert_int_equal(kv_value_foreach(v, collect_piece, &c), 0);
	assert_int_equal(c.pieces, 0);

	fill_pattern(pat, sizeof(pat), 5);
	assert_int_equal(kv_value_write(v, pat, sizeof(pat), 0), 0);
	check_foreach(v);
	/* A hole, a short chunk in the middle, a chunk cut short. */
	assert_int_equal(kv_value_write(v, pat, sizeof(pat), 3 * CH - 1000), 0);
	assert_int_equal(kv_value_write(v, pat, 100, 5 * CH + 10), 0);
	check_foreach(v);
	assert_int_equal(kv_value_truncate(v, 7 * CH + 3), 0);
	check_foreach(v);
	assert_int_equal(kv_value_truncate(v, 3 * CH - 999), 0);
	check_foreach(v);

	c.buf = malloc(kv_value_size(v));
	c.cap = kv_value_size(v);
	c.stop_after = 2;
	assert_non_null(c.buf);
	assert_int_equal(kv_value_foreach(v, collect_piece, &c), -42);
	assert_int_equal(c.pieces, 2);
	free(c.buf);
	kv_value_free(v);
}

static void test_small_memory(void **state)
{
	unsigned char pat[1024];
	struct kv_value *v;

	(void)state;
	fill_pattern(pat, sizeof(pat), 6);
	v = kv_value_from_buf(pat, sizeof(pat));
	assert_non_null(v);
	printf("# 1 KiB value uses %llu bytes\n", (unsigned long long)kv_value_mem(v));
	assert_true(kv_value_mem(v) < 4096);
	kv_value_free(v);

	/* Byte-by-byte appends grow the chunk without jumping to a full one. */
	v = kv_value_new();
	assert_non_null(v);
	for (size_t i = 0; i < sizeof(pat); i++)
		assert_int_equal(kv_value_write(v, pat + i, 1, i), 0);
	assert_true(kv_value_mem(v) < 4096);
	assert_value_is(v, pat, sizeof(pat));
	/* A full-sized value of one chunk costs about one chunk. */
	assert_int_equal(kv_value_write(v, pat, 1, CH - 1), 0);
	assert_true(kv_value_mem(v) >= CH);
	assert_true(kv_value_mem(v) < CH + 64);
	/* Cutting it back gives the memory back. */
	assert_int_equal(kv_value_truncate(v, 10), 0);
	assert_true(kv_value_mem(v) < 4096);
	assert_value_is(v, pat, 10);
	kv_value_free(v);
}

static void test_overflow(void **state)
{
	struct kv_value *v = kv_value_from_buf("abc", 3);

	(void)state;
	assert_non_null(v);
	assert_int_equal(kv_value_write(v, "x", 1, UINT64_MAX), -EFBIG);
	assert_int_equal(kv_value_write(v, "xyz", 3, UINT64_MAX - 1), -EFBIG);
	assert_int_equal(kv_value_write(v, "x", 1, (uint64_t)INT64_MAX), -EFBIG);
	assert_int_equal(kv_value_write(v, "xy", SIZE_MAX, 10), -EFBIG);
	assert_int_equal(kv_value_truncate(v, UINT64_MAX), -EFBIG);
	assert_int_equal(kv_value_truncate(v, (uint64_t)INT64_MAX + 1), -EFBIG);
	assert_value_is(v, (const unsigned char *)"abc", 3);
	kv_value_free(v);
}

/* Random operations against a flat buffer, with snapshots checked against copies of it. */
#define RAND_MAX_SIZE (10 * CH + 777)
#define RAND_SNAPS 4

struct saved_snap {
	struct kv_value *v;
	unsigned char *ref;
	size_t len;
};

static void check_window(const struct kv_value *v, const unsigned char *ref, size_t size,
			 unsigned char *buf)
{
	uint64_t off = rnd_below(size + 100), len = rnd_below(3 * CH);
	size_t want = off >= size ? 0 : (len < size - off ? len : size - off);

	assert_int_equal(kv_value_read(v, buf, len, off), want);
	if (want)
		assert_memory_equal(buf, ref + off, want);
}

static void test_random_ops(void **state)
{
	unsigned char *ref = calloc(1, RAND_MAX_SIZE), *buf = malloc(3 * CH), *src = malloc(3 * CH);
	struct saved_snap snaps[RAND_SNAPS] = { 0 };
	struct kv_value *v = kv_value_new();
	size_t size = 0;
	int ops = 6000;

	(void)state;
	assert_non_null(ref);
	assert_non_null(buf);
	assert_non_null(src);
	assert_non_null(v);
	rng_state = test_seed("random value ops", 20240611);
	for (int op = 0; op < ops; op++) {
		unsigned kind = (unsigned)rnd_below(100);

		if (kind < 45) {
			/* Mostly short writes, sometimes long ones, often near chunk edges. */
			uint64_t len = 1 + (rnd_below(4) ? rnd_below(5000) : rnd_below(3 * CH - 1));
			uint64_t off = rnd_below(4) ? rnd_below(RAND_MAX_SIZE)
						    : rnd_below(11) * CH - rnd_below(40);

			if (off > RAND_MAX_SIZE)
				off = 0;
			if (off + len > RAND_MAX_SIZE)
				len = RAND_MAX_SIZE - off;
			fill_pattern(src, len, op);
			assert_int_equal(kv_value_write(v, src, len, off), 0);
			if (len) {
				memcpy(ref + off, src, len);
				if (off + len > size)
					size = off + len;
			}
		} else if (kind < 55) {
			uint64_t ns = rnd_below(3) ? rnd_below(RAND_MAX_SIZE + 1)
						   : rnd_below(size + 1);

			assert_int_equal(kv_value_truncate(v, ns), 0);
			if (ns < size)
				memset(ref + ns, 0, size - ns);
			size = ns;
		} else if (kind < 85) {
			check_window(v, ref, size, buf);
		} else if (kind < 95) {
			struct saved_snap *s = &snaps[rnd_below(RAND_SNAPS)];

			if (s->v) {
				assert_value_is(s->v, s->ref, s->len);
				kv_value_free(s->v);
				free(s->ref);
				s->v = NULL;
				s->ref = NULL;
			} else {
				s->v = kv_value_snapshot(v);
				s->ref = malloc(size + 1);
				assert_non_null(s->v);
				assert_non_null(s->ref);
				memcpy(s->ref, ref, size);
				s->len = size;
			}
		} else {
			check_foreach(v);
			assert_true(kv_value_mem(v) <=
				    (size / CH + 1) * (CH + 64));
		}
		assert_int_equal(kv_value_size(v), size);
	}
	assert_value_is(v, ref, size);
	for (int i = 0; i < RAND_SNAPS; i++) {
		if (snaps[i].v)
			assert_value_is(snaps[i].v, snaps[i].ref, snaps[i].len);
		kv_value_free(snaps[i].v);
		free(snaps[i].ref);
	}
	kv_value_free(v);
	free(src);
	free(buf);
	free(ref);
}

/*
 * Runs out of address space in a child (RLIMIT_AS) while writing over chunks shared with
 * snapshots, and checks after each write that it was applied fully or not at all.
 */
static int enomem_child(void)
{
	const size_t len = 32 * CH;
	unsigned char *ref = malloc(len), *buf = malloc(len), *src = malloc(len);
	struct kv_value *v, *snaps[256];
	size_t nsnaps = 0, enomem = 0, ok = 0;
	struct rlimit rl;
	long pages;
	FILE *f;

	if (!ref || !buf || !src)
		return 10;
	fill_pattern(ref, len, 7);
	v = kv_value_from_buf(ref, len);
	if (!v)
		return 11;
	f = fopen("/proc/self/statm", "r");
	if (!f || fscanf(f, "%ld", &pages) != 1)
		return 12;
	fclose(f);
	rl.rlim_cur = rl.rlim_max = (rlim_t)pages * sysconf(_SC_PAGESIZE) + 24 * CH;
	if (setrlimit(RLIMIT_AS, &rl))
		return 13;
	for (int i = 0; i < 200 && nsnaps < 256; i++) {
		size_t off = (size_t)rnd_below(len / 2), wl = len / 2 - 1000 + rnd_below(1000);
		struct kv_value *s = kv_value_snapshot(v);
		int ret;

		if (s)
			snaps[nsnaps++] = s;
		fill_pattern(src, wl, i + 100);
		ret = kv_value_write(v, src, wl, off);
		if (ret == 0) {
			memcpy(ref + off, src, wl);
			ok++;
		} else if (ret == -ENOMEM) {
			enomem++;
		} else {
			return 14;
		}
		if (kv_value_read(v, buf, len, 0) != (ssize_t)len || memcmp(buf, ref, len))
			return 15;
		/* Free the oldest snapshot now and then so that some writes succeed again. */
		if (ret && nsnaps) {
			kv_value_free(snaps[0]);
			memmove(snaps, snaps + 1, --nsnaps * sizeof(*snaps));
		}
	}
	printf("# under RLIMIT_AS: %zu writes applied, %zu refused with ENOMEM\n", ok, enomem);
	if (!enomem || !ok)
		return 16;
	return 0;
}

static void test_enomem_all_or_nothing(void **state)
{
	int status;
	pid_t pid;

	(void)state;
#ifdef UNDER_SANITIZER
	skip();
#endif
	rng_state = 99;
	fflush(stdout);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		int code = enomem_child();

		fflush(stdout);
		_exit(code);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
}

/*
 * One thread owns the value and writes it under a mutex, handing snapshots over a small queue;
 * the other checks each snapshot against a checksum taken when it was made, then frees it.
 */
#define QLEN 8

struct shared {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct kv_value *q[QLEN];
	uint64_t qsum[QLEN];
	size_t head, tail;
	bool done;
	int bad;
};

static int sum_piece(const void *data, size_t len, void *arg)
{
	uint64_t *h = arg;
	const unsigned char *p = data;

	for (size_t i = 0; i < len; i++)
		*h = (*h ^ p[i]) * 0x100000001b3ULL;
	return 0;
}

static uint64_t value_sum(const struct kv_value *v)
{
	uint64_t h = 0xcbf29ce484222325ULL ^ kv_value_size(v);

	kv_value_foreach(v, sum_piece, &h);
	return h;
}

static void *reader_thread(void *arg)
{
	struct shared *sh = arg;
	unsigned char buf[4096];

	for (;;) {
		struct kv_value *s;
		uint64_t sum;

		pthread_mutex_lock(&sh->lock);
		while (sh->head == sh->tail && !sh->done)
			pthread_cond_wait(&sh->cond, &sh->lock);
		if (sh->head == sh->tail) {
			pthread_mutex_unlock(&sh->lock);
			break;
		}
		s = sh->q[sh->head % QLEN];
		sum = sh->qsum[sh->head % QLEN];
		sh->head++;
		pthread_cond_broadcast(&sh->cond);
		pthread_mutex_unlock(&sh->lock);

		/* Outside the lock, while the owner keeps writing. */
		if (value_sum(s) != sum)
			sh->bad++;
		for (uint64_t off = 0; off < kv_value_size(s); off += 3 * sizeof(buf))
			if (kv_value_read(s, buf, sizeof(buf), off) <= 0)
				sh->bad++;
		kv_value_free(s);
	}
	return NULL;
}

static void test_threads(void **state)
{
	struct shared sh = { .lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER };
	unsigned char src[6000];
	struct kv_value *v = kv_value_new();
	pthread_t t;

	(void)state;
	assert_non_null(v);
	rng_state = test_seed("value threads", 7);
	assert_int_equal(pthread_create(&t, NULL, reader_thread, &sh), 0);
	for (int i = 0; i < 3000; i++) {
		uint64_t off = rnd_below(6 * CH), len = 1 + rnd_below(sizeof(src));

		fill_pattern(src, len, i);
		pthread_mutex_lock(&sh.lock);
		if (rnd_below(10) == 0)
			assert_int_equal(kv_value_truncate(v, rnd_below(6 * CH)), 0);
		else
			assert_int_equal(kv_value_write(v, src, len, off), 0);
		if (i % 4 == 0) {
			while (sh.tail - sh.head == QLEN)
				pthread_cond_wait(&sh.cond, &sh.lock);
			sh.q[sh.tail % QLEN] = kv_value_snapshot(v);
			assert_non_null(sh.q[sh.tail % QLEN]);
			sh.qsum[sh.tail % QLEN] = value_sum(v);
			sh.tail++;
			pthread_cond_broadcast(&sh.cond);
		}
		pthread_mutex_unlock(&sh.lock);
	}
	pthread_mutex_lock(&sh.lock);
	sh.done = true;
	pthread_cond_broadcast(&sh.cond);
	pthread_mutex_unlock(&sh.lock);
	assert_int_equal(pthread_join(t, NULL), 0);
	assert_int_equal(sh.bad, 0);
	kv_value_free(v);
}

/* xorshift64: bytes with no pattern, the same every run. */
static void fill_noise(uint8_t *p, size_t n, uint64_t seed)
{
	for (size_t i = 0; i < n; i++) {
		seed ^= seed << 13;
		seed ^= seed >> 7;
		seed ^= seed << 17;
		p[i] = (uint8_t)seed;
	}
}

static bool hint_for(const uint8_t *p, size_t n)
{
	struct kv_zhint h;

	kv_zhint_init(&h, n);
	/* In uneven pieces, as a value's chunks or holes come. */
	for (size_t off = 0; off < n;) {
		size_t len = n - off < 777 ? n - off : 777;

		kv_zhint_add(p + off, len, &h);
		off += len;
	}
	return kv_zhint_try(&h);
}

/*
 * The compression hint: random bytes (small, or large and sampled) are not
 * tried; text, base64 and hex of random bytes, sparse data, and values too
 * small to judge are.
 */
static void test_compression_hint(void **state)
{
	size_t big = 4u << 20;
	uint8_t *p = malloc(big), *q = malloc(big);
	struct kv_zhint h;

	(void)state;
	assert_non_null(p);
	assert_non_null(q);
	fill_noise(p, big, 88172645463325252ull);
	assert_false(hint_for(p, 1024));
	assert_false(hint_for(p, 100000));
	assert_false(hint_for(p, big));
	assert_true(hint_for(p, 300)); /* too few bytes to tell */
	/* Half noise, half zeros (a hole). */
	kv_zhint_init(&h, 2048);
	kv_zhint_add(p, 1024, &h);
	kv_zhint_add(NULL, 1024, &h);
	assert_true(kv_zhint_try(&h));
	/* Hex and base64 alphabets over the same noise: 4 and 6 bits. */
	for (size_t i = 0; i < big; i++)
		q[i] = (uint8_t)"0123456789abcdef"[p[i] & 15];
	assert_true(hint_for(q, 1024));
	assert_true(hint_for(q, big));
	for (size_t i = 0; i < big; i++)
		q[i] = (uint8_t)"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
			[p[i] & 63];
	assert_true(hint_for(q, 4096));
	for (size_t i = 0; i < big; i++)
		q[i] = (uint8_t)"the quick brown fox jumps over the lazy dog. "[i % 45];
	assert_true(hint_for(q, 1024));
	assert_true(hint_for(q, big));
	/* Records of 16 random bytes and 48 zeros (zstd shrinks them to a
	 * quarter): windows at one offset of each record would see noise. */
	fill_noise(q, 65536, 7);
	for (size_t i = 0; i < 65536; i++)
		if (i % 64 >= 16)
			q[i] = 0;
	assert_true(hint_for(q, 65536));
	/* Mostly noise with a large zero run at the end of a sampled value:
	 * the windows reach the end too. */
	memset(p + big / 2, 0, big / 2);
	assert_true(hint_for(p, big));
	free(p);
	free(q);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_empty_and_small),
		cmocka_unit_test(test_chunk_boundaries),
		cmocka_unit_test(test_holes),
		cmocka_unit_test(test_sparse_far),
		cmocka_unit_test(test_truncate),
		cmocka_unit_test(test_snapshot_isolation),
		cmocka_unit_test(test_foreach),
		cmocka_unit_test(test_small_memory),
		cmocka_unit_test(test_overflow),
		cmocka_unit_test(test_random_ops),
		cmocka_unit_test(test_enomem_all_or_nothing),
		cmocka_unit_test(test_threads),
		cmocka_unit_test(test_compression_hint),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
