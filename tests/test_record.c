/*
 * Records: copy, clear, and the binary encoding (round trips, every bound,
 * truncated and random input).
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

#include <cmocka.h>

#include "store/backend.h"

static char *xstrdup(const char *s)
{
	char *d = strdup(s);

	assert_non_null(d);
	return d;
}

/* A record with every field set to something distinctive. */
static void make_full(struct kv_meta *m)
{
	static const uint8_t xattrs[] = { 0, 1, 2, 0xff, 0, 'a' };

	memset(m, 0, sizeof(*m));
	m->id = 0x0102030405060708ull;
	m->parent = 0x1112131415161718ull;
	m->name = xstrdup("profile \xc3\xa9\x01");
	m->mode = S_IFREG | 0640;
	m->uid = 1000;
	m->gid = 0xfffffffe;
	m->atime_ns = -1;
	m->mtime_ns = INT64_MAX;
	m->ctime_ns = INT64_MIN;
	m->btime_ns = 1700000000123456789ll;
	m->expires_ms = 1700000000123ll;
	m->size = UINT64_MAX;
	m->vver = 77;
	m->stored_size = 12345;
	m->encoding = KV_ENC_ZSTD;
	m->ntags = 3;
	m->tags = calloc(3, sizeof(char *));
	assert_non_null(m->tags);
	m->tags[0] = xstrdup("a");
	m->tags[1] = xstrdup("color:red");
	m->tags[2] = xstrdup("v1.2");
	m->xattrs_len = sizeof(xattrs);
	m->xattrs = malloc(sizeof(xattrs));
	assert_non_null(m->xattrs);
	memcpy(m->xattrs, xattrs, sizeof(xattrs));
}

static void assert_meta_equal(const struct kv_meta *a, const struct kv_meta *b)
{
	assert_int_equal(a->id, b->id);
	assert_int_equal(a->parent, b->parent);
	assert_string_equal(a->name ? a->name : "", b->name ? b->name : "");
	assert_int_equal(a->mode, b->mode);
	assert_int_equal(a->uid, b->uid);
	assert_int_equal(a->gid, b->gid);
	assert_true(a->atime_ns == b->atime_ns);
	assert_true(a->mtime_ns == b->mtime_ns);
	assert_true(a->ctime_ns == b->ctime_ns);
	assert_true(a->btime_ns == b->btime_ns);
	assert_true(a->expires_ms == b->expires_ms);
	assert_true(a->size == b->size);
	assert_int_equal(a->vver, b->vver);
	assert_int_equal(a->stored_size, b->stored_size);
	assert_int_equal(a->encoding, b->encoding);
	assert_int_equal(a->ntags, b->ntags);
	for (uint32_t i = 0; i < a->ntags; i++)
		assert_string_equal(a->tags[i], b->tags[i]);
	assert_int_equal(a->xattrs_len, b->xattrs_len);
	if (a->xattrs_len)
		assert_memory_equal(a->xattrs, b->xattrs, a->xattrs_len);
}

static void encode_ok(const struct kv_meta *m, uint8_t **buf, size_t *len, size_t *cap)
{
	assert_int_equal(kv_meta_encode(m, buf, len, cap), 0);
}

static void test_roundtrip_full(void **state)
{
	struct kv_meta m, d;
	uint8_t *buf = NULL;
	size_t len = 0, cap = 0, used = 0;

	(void)state;
	make_full(&m);
	encode_ok(&m, &buf, &len, &cap);
	assert_int_equal(kv_meta_decode(buf, len, &d, &used), 0);
	assert_int_equal(used, len);
	assert_meta_equal(&m, &d);
	kv_meta_clear(&m);
	kv_meta_clear(&d);
	free(buf);
}

static void test_roundtrip_minimal_and_root(void **state)
{
	struct kv_meta root = { .id = KV_ROOT_ID, .mode = S_IFDIR | 0755 };
	struct kv_meta key = { .id = 2, .parent = KV_ROOT_ID, .mode = S_IFREG };
	struct kv_meta d;
	uint8_t *buf = NULL;
	size_t len = 0, cap = 0, used = 0, first;

	(void)state;
	/* The root alone may have an empty (or NULL) name. */
	encode_ok(&root, &buf, &len, &cap);
	first = len;
	key.name = "k";
	encode_ok(&key, &buf, &len, &cap);

	/* Back to back: each decode consumes exactly one record. */
	assert_int_equal(kv_meta_decode(buf, len, &d, &used), 0);
	assert_int_equal(used, first);
	assert_int_equal(d.id, KV_ROOT_ID);
	assert_string_equal(d.name, "");
	assert_null(d.tags);
	assert_null(d.xattrs);
	kv_meta_clear(&d);
	assert_int_equal(kv_meta_decode(buf + first, len - first, &d, &used), 0);
	assert_int_equal(used, len - first);
	assert_meta_equal(&key, &d);
	kv_meta_clear(&d);
	free(buf);
}

static void test_copy_and_clear(void **state)
{
	struct kv_meta m, c;

	(void)state;
	make_full(&m);
	memset(&c, 0xa5, sizeof(c));	/* overwritten, not freed */
	assert_int_equal(kv_meta_copy(&c, &m), 0);
	assert_meta_equal(&m, &c);
	assert_ptr_not_equal(c.name, m.name);
	assert_ptr_not_equal(c.tags, m.tags);
	assert_ptr_not_equal(c.tags[0], m.tags[0]);
	assert_ptr_not_equal(c.xattrs, m.xattrs);
	kv_meta_clear(&m);
	assert_null(m.name);
	assert_int_equal(m.ntags, 0);
	/* The copy is independent of the original. */
	assert_string_equal(c.tags[2], "v1.2");
	kv_meta_clear(&c);
	kv_meta_clear(&c);
	kv_meta_clear(NULL);
}

static void test_encode_rejects(void **state)
{
	char longname[KV_NAME_MAX + 2];
	char longtag[257];
	char *tags[2];
	struct kv_meta m = { .id = 5, .parent = 1, .mode = S_IFREG };
	uint8_t *buf = NULL;
	size_t len = 0, cap = 0;

	(void)state;
	m.name = "";
	assert_int_equal(kv_meta_encode(&m, &buf, &len, &cap), -EINVAL);
	m.name = NULL;
	assert_int_equal(kv_meta_encode(&m, &buf, &len, &cap), -EINVAL);
	m.name = "a/b";
	assert_int_equal(kv_meta_encode(&m, &buf, &len, &cap), -EINVAL);
	m.name = ".";
	assert_int_equal(kv_meta_encode(&m, &buf, &len, &cap), -EINVAL);
	m.name = "..";
	assert_int_equal(kv_meta_encode(&m, &buf, &len, &cap), -EINVAL);

	memset(longname, 'x', sizeof(longname));
	longname[KV_NAME_MAX] = '\0';
	m.name = longname;
	assert_int_equal(kv_meta_encode(&m, &buf, &len, &cap), 0);
	longname[KV_NAME_MAX] = 'x';
	longname[KV_NAME_MAX + 1] = '\0';
	assert_int_equal(kv_meta_encode(&m, &buf, &len, &cap), -EINVAL);
	m.name = "ok";

	m.id = 0;
	assert_int_equal(kv_meta_encode(&m, &buf, &len, &cap), -EINVAL);
	m.id = 5;
	m.encoding = 2;
	assert_int_equal(kv_meta_encode(&m, &buf, &len, &cap), -EINVAL);
	m.encoding = 0;

	/* Tags: sorted, unique, 1..255 bytes. */
	m.tags = tags;
	m.ntags = 2;
	tags[0] = "b";
	tags[1] = "a";
	assert_int_equal(kv_meta_encode(&m, &buf, &len, &cap), -EINVAL);
	tags[0] = "a";
	tags[1] = "a";
	assert_int_equal(kv_meta_encode(&m, &buf, &len, &cap), -EINVAL);
	tags[1] = "";
	assert_int_equal(kv_meta_encode(&m, &buf, &len, &cap), -EINVAL);
	memset(longtag, 't', sizeof(longtag));
	longtag[255] = '\0';
	tags[1] = longtag;
	assert_int_equal(kv_meta_encode(&m, &buf, &len, &cap), 0);
	longtag[255] = 't';
	longtag[256] = '\0';
	assert_int_equal(kv_meta_encode(&m, &buf, &len, &cap), -EINVAL);
	m.ntags = 1025;
	assert_int_equal(kv_meta_encode(&m, &buf, &len, &cap), -EINVAL);
	m.ntags = 0;
	m.tags = NULL;

	m.xattrs_len = KV_XATTRS_MAX + 1;
	m.xattrs = calloc(1, m.xattrs_len);
	assert_int_equal(kv_meta_encode(&m, &buf, &len, &cap), -EINVAL);
	m.xattrs_len = KV_XATTRS_MAX;
	assert_int_equal(kv_meta_encode(&m, &buf, &len, &cap), 0);
	free(m.xattrs);
	free(buf);
}

static void test_many_tags(void **state)
{
	struct kv_meta m = { .id = 9, .parent = 1, .mode = S_IFREG }, d;
	uint8_t *buf = NULL;
	size_t len = 0, cap = 0, used;

	(void)state;
	m.name = xstrdup("k");
	m.ntags = 1024;
	m.tags = calloc(m.ntags, sizeof(char *));
	assert_non_null(m.tags);
	for (uint32_t i = 0; i < m.ntags; i++) {
		m.tags[i] = malloc(16);
		assert_non_null(m.tags[i]);
		snprintf(m.tags[i], 16, "t%04u", i);
	}
	encode_ok(&m, &buf, &len, &cap);
	assert_int_equal(kv_meta_decode(buf, len, &d, &used), 0);
	assert_meta_equal(&m, &d);
	kv_meta_clear(&d);
	kv_meta_clear(&m);
	free(buf);
}

/* Every proper prefix of a valid record is malformed. */
static void test_decode_truncated(void **state)
{
	struct kv_meta m, d;
	uint8_t *buf = NULL, *copy;
	size_t len = 0, cap = 0, used;

	(void)state;
	make_full(&m);
	encode_ok(&m, &buf, &len, &cap);
	for (size_t n = 0; n < len; n++) {
		/* An exact-size heap copy lets the sanitizer catch overreads. */
		copy = malloc(n ? n : 1);
		assert_non_null(copy);
		memcpy(copy, buf, n);
		assert_int_equal(kv_meta_decode(copy, n, &d, &used), -EINVAL);
		free(copy);
	}
	kv_meta_clear(&m);
	free(buf);
}

/* Patches a byte of a valid encoding and expects a rejection. */
static void expect_patch_rejected(const uint8_t *buf, size_t len, size_t at, uint8_t v)
{
	uint8_t *copy = malloc(len);
	struct kv_meta d;
	size_t used;

	assert_non_null(copy);
	memcpy(copy, buf, len);
	copy[at] = v;
	assert_int_equal(kv_meta_decode(copy, len, &d, &used), -EINVAL);
	free(copy);
}

static void test_decode_rejects_fields(void **state)
{
	struct kv_meta m = { .id = 3, .parent = 1, .name = "ab", .mode = S_IFREG };
	char *tags[] = { "x", "y" };
	uint8_t *buf = NULL;
	size_t len = 0, cap = 0;
	/* Offsets into the encoding, from the layout in store/record.c. */
	const size_t id_at = 1, enc_at = 93, nlen_at = 94, name_at = 95;
	const size_t ntags_at = name_at + 2, tag0_at = ntags_at + 2;

	(void)state;
	m.tags = tags;
	m.ntags = 2;
	encode_ok(&m, &buf, &len, &cap);
	assert_int_equal(buf[nlen_at], 2);

	expect_patch_rejected(buf, len, 0, 2);			/* unknown version */
	expect_patch_rejected(buf, len, id_at, 0);		/* id 0 */
	expect_patch_rejected(buf, len, enc_at, 7);		/* unknown encoding */
	expect_patch_rejected(buf, len, name_at, '/');		/* '/' in the name */
	expect_patch_rejected(buf, len, name_at + 1, '\0');	/* NUL in the name */
	expect_patch_rejected(buf, len, nlen_at, 0);		/* empty name, not root */
	expect_patch_rejected(buf, len, ntags_at + 1, 0x04);	/* 1026 tags */
	expect_patch_rejected(buf, len, tag0_at, 0);		/* empty tag */
	expect_patch_rejected(buf, len, tag0_at + 1, 'z');	/* unsorted tags */
	expect_patch_rejected(buf, len, tag0_at + 1, 'y');	/* duplicate tags */
	expect_patch_rejected(buf, len, len - 1, 0x01);		/* xattrs 16 MiB */
	expect_patch_rejected(buf, len, len - 4, 0x01);		/* xattrs past the end */
	free(buf);
}

/* Random bytes and random mutations of valid records: never a crash, and a
 * success consumes no more than it was given. */
static void test_decode_garbage(void **state)
{
	struct kv_meta m, d;
	uint8_t *buf = NULL, *copy;
	size_t len = 0, cap = 0, used;
	unsigned int seed = 12345;

	(void)state;
	make_full(&m);
	encode_ok(&m, &buf, &len, &cap);
	copy = malloc(len);
	assert_non_null(copy);
	for (int iter = 0; iter < 20000; iter++) {
		size_t n = (size_t)rand_r(&seed) % (len + 1);
		int ret;

		memcpy(copy, buf, len);
		if (iter % 2) {
			for (size_t i = 0; i < n; i++)
				copy[i] = (uint8_t)rand_r(&seed);
			n = len;
		} else {
			for (int k = 0; k < 3; k++)
				copy[(size_t)rand_r(&seed) % len] = (uint8_t)rand_r(&seed);
		}
		ret = kv_meta_decode(copy, n, &d, &used);
		if (ret == 0) {
			assert_true(used <= n);
			kv_meta_clear(&d);
		} else {
			assert_int_equal(ret, -EINVAL);
		}
	}
	free(copy);
	kv_meta_clear(&m);
	free(buf);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_roundtrip_full),
		cmocka_unit_test(test_roundtrip_minimal_and_root),
		cmocka_unit_test(test_copy_and_clear),
		cmocka_unit_test(test_encode_rejects),
		cmocka_unit_test(test_many_tags),
		cmocka_unit_test(test_decode_truncated),
		cmocka_unit_test(test_decode_rejects_fields),
		cmocka_unit_test(test_decode_garbage),
	};

	return cmocka_run_group_tests_name("record", tests, NULL, NULL);
}
