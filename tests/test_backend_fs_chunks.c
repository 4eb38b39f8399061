/*
 * The filesystem backend's chunked values (format 2): a flush rewrites only
 * the chunks that changed, superseded versions lose only the chunks nobody
 * shares, a version kept for a backup stays whole until reclaim(), the
 * open-time sweep removes chunk files no live map names, and a format 1
 * store is refused with a message that says what to do.
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
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

#include "store/backend_fs.h"
#include "store/journal.h"
#include "util/log.h"

#define ID 0x42u
#define SIZE (3u * KV_CHUNK_SIZE + 1000u)

static char root[64], data[128];

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static int setup(void **state)
{
	(void)state;
	strcpy(root, "/tmp/nadbfs-chunks-XXXXXX");
	if (!mkdtemp(root))
		return -1;
	snprintf(data, sizeof(data), "%s/data", root);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	nftw(root, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
	return 0;
}

static int count(const struct kv_meta *m, void *arg)
{
	(void)m;
	(*(int *)arg)++;
	return 0;
}

static char logpath[64];

/* The log goes to a file until log_has() reads it back. */
static void capture_start(void)
{
	int fd;

	strcpy(logpath, "/tmp/nadbfs-chunks-log-XXXXXX");
	fd = mkstemp(logpath);
	assert_true(fd >= 0);
	close(fd);
	assert_int_equal(log_open(logpath, false), 0);
}

static bool log_has(const char *needle)
{
	char buf[8192];
	ssize_t n;
	int fd;

	log_open(NULL, false);
	fd = open(logpath, O_RDONLY);
	assert_true(fd >= 0);
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	unlink(logpath);
	buf[n > 0 ? n : 0] = '\0';
	return strstr(buf, needle) != NULL;
}

static struct kv_backend *open_load(bool compress)
{
	struct kv_backend_params p = {
		.data_dir = data, .db = "default", .ns = "default",
		.compression = compress ? KV_ENC_ZSTD : KV_ENC_NONE,
		.compression_min_size = 1024, .lock_timeout_ms = 300,
	};
	struct kv_backend *b = NULL;
	char err[256];
	uint64_t max_id;

	assert_int_equal(kv_fs_open(&p, &b, err, sizeof(err)), 0);
	assert_int_equal(b->ops->load(b, count, &(int){ 0 }, &max_id), 0);
	return b;
}

static char *value_path(const char *name)
{
	static char buf[512];

	snprintf(buf, sizeof(buf), "%s/stores/default/default/values/%s", data, name);
	return buf;
}

static size_t files_in(void)
{
	char cmd[600];
	size_t n = 0;
	FILE *f;

	snprintf(cmd, sizeof(cmd), "find '%s' -type f | wc -l", value_path(""));
	f = popen(cmd, "r");
	assert_non_null(f);
	assert_int_equal(fscanf(f, "%zu", &n), 1);
	pclose(f);
	return n;
}

static bool chunk_exists(uint64_t cver, size_t idx)
{
	char name[KV_FS_NAME_MAX];
	struct stat st;

	kv_fs_chunk_name(name, ID, cver, idx);
	return stat(value_path(name), &st) == 0;
}

/* Commits v as the value of ID; m carries the previous version in, the new
 * one out. */
static void put(struct kv_backend *b, struct kv_meta *m, const struct kv_value *v,
		uint64_t old_vver)
{
	struct kv_op op = { .type = KV_OP_PUT, .meta = *m, .value = v, .old_vver = old_vver };

	op.meta.size = kv_value_size(v);
	assert_int_equal(b->ops->commit(b, &op, 1), 0);
	*m = op.meta;
}

static void check(struct kv_backend *b, const struct kv_meta *m, const struct kv_value *want)
{
	uint8_t *a = malloc(SIZE), *c = malloc(SIZE);
	struct kv_value *got = NULL;

	assert_non_null(a);
	assert_non_null(c);
	assert_int_equal(kv_value_read(want, a, SIZE, 0), SIZE);
	assert_int_equal(b->ops->pread(b, m, c, SIZE, 0), SIZE);
	assert_memory_equal(a, c, SIZE);
	assert_int_equal(b->ops->read_value(b, m, &got), 0);
	assert_int_equal(kv_value_read(got, c, SIZE, 0), SIZE);
	assert_memory_equal(a, c, SIZE);
	kv_value_free(got);
	free(a);
	free(c);
}

static struct kv_value *random_value(void)
{
	uint8_t *buf = malloc(SIZE);
	struct kv_value *v;
	uint32_t r = 7;

	assert_non_null(buf);
	for (size_t i = 0; i < SIZE; i++) {
		r ^= r << 13;
		r ^= r >> 17;
		r ^= r << 5;
		buf[i] = (uint8_t)r;
	}
	v = kv_value_from_buf(buf, SIZE);
	assert_non_null(v);
	free(buf);
	return v;
}

static void test_only_changed_chunks_written(void **state)
{
	static char name[] = "k";
	struct kv_meta m = { .id = ID, .parent = KV_ROOT_ID, .name = name, .mode = S_IFREG | 0644 };
	struct kv_backend *b = open_load(true);
	struct kv_value *v = random_value();
	uint64_t v1, v2, v3;

	(void)state;
	put(b, &m, v, 0);
	v1 = m.vver;
	assert_int_equal(files_in(), 1 + 4);
	assert_int_equal(m.stored_size, SIZE);

	/* One byte of chunk 1 changes: one chunk file and a map are written,
	 * the old map and the old chunk 1 go, the rest is shared. */
	assert_int_equal(kv_value_write(v, "x", 1, KV_CHUNK_SIZE + 5), 0);
	put(b, &m, v, v1);
	v2 = m.vver;
	assert_int_equal(files_in(), 1 + 4);
	assert_true(chunk_exists(v1, 0) && chunk_exists(v2, 1) && chunk_exists(v1, 2));
	assert_false(chunk_exists(v1, 1));
	check(b, &m, v);

	/* A backup pins v2 (old_vver 0): chunk 3 changes, v2 stays whole. */
	{
		struct kv_meta old = m;

		assert_int_equal(kv_value_write(v, "y", 1, 3 * KV_CHUNK_SIZE), 0);
		put(b, &m, v, 0);
		v3 = m.vver;
		assert_int_equal(files_in(), 2 + 5);
		assert_int_equal(b->ops->reclaim(b, &(const uint64_t[2]){ ID, v2 }, 1), 0);
		assert_int_equal(files_in(), 1 + 4);
		assert_true(chunk_exists(v1, 0) && chunk_exists(v2, 1) && chunk_exists(v3, 3));
		assert_int_equal(b->ops->pread(b, &old, &(char){ 0 }, 1, 0), -ESTALE);
		check(b, &m, v);
	}

	/* Truncated to one chunk: stored inline, every chunk file goes. */
	assert_int_equal(kv_value_truncate(v, 100), 0);
	put(b, &m, v, v3);
	assert_int_equal(files_in(), 1);
	kv_backend_close(b);

	/* A stray chunk file (a crash after it was written) goes at open. */
	{
		char cname[KV_FS_NAME_MAX];
		int fd;

		kv_fs_chunk_name(cname, ID, m.vver + 100, 2);
		fd = open(value_path(cname), O_WRONLY | O_CREAT, 0600);
		assert_true(fd >= 0);
		close(fd);
		assert_int_equal(files_in(), 2);
		b = open_load(false);
		assert_int_equal(files_in(), 1);
		kv_backend_close(b);
	}
	kv_value_free(v);
}

/* A live map that cannot be read keeps the chunks that might be its at
 * open, but never a chunk of a later version than the record names: that
 * one is a crash's leftover (and would stand in the way of that version's
 * commit). */
static void test_unreadable_map_sweep(void **state)
{
	static char name[] = "k";
	struct kv_meta m = { .id = ID, .parent = KV_ROOT_ID, .name = name, .mode = S_IFREG | 0644 };
	struct kv_backend *b = open_load(false);
	struct kv_value *v = random_value();
	char mname[KV_FS_NAME_MAX], cname[KV_FS_NAME_MAX];
	int fd;

	(void)state;
	put(b, &m, v, 0);
	kv_backend_close(b);
	assert_int_equal(files_in(), 1 + 4);
	kv_fs_value_name(mname, ID, m.vver);
	fd = open(value_path(mname), O_WRONLY);
	assert_true(fd >= 0);
	assert_int_equal(pwrite(fd, "XXXXXXXX", 8, 0), 8);
	close(fd);
	kv_fs_chunk_name(cname, ID, m.vver + 1, 0);
	fd = open(value_path(cname), O_WRONLY | O_CREAT, 0600);
	assert_true(fd >= 0);
	close(fd);
	assert_int_equal(files_in(), 1 + 4 + 1);

	b = open_load(false);
	assert_int_equal(files_in(), 1 + 4);
	assert_int_equal(access(value_path(cname), F_OK), -1);
	kv_backend_close(b);
	kv_value_free(v);
}

/* A value read back is tagged: rewriting one chunk of it after a reopen
 * still writes one chunk. */
static void test_read_value_keeps_sharing(void **state)
{
	static char name[] = "k";
	struct kv_meta m = { .id = ID, .parent = KV_ROOT_ID, .name = name, .mode = S_IFREG | 0644 };
	struct kv_backend *b = open_load(false);
	struct kv_value *v = random_value(), *back = NULL;
	uint64_t v1;

	(void)state;
	put(b, &m, v, 0);
	v1 = m.vver;
	kv_backend_close(b);
	b = open_load(false);
	assert_int_equal(b->ops->read_value(b, &m, &back), 0);
	assert_int_equal(kv_value_write(back, "z", 1, 2 * KV_CHUNK_SIZE), 0);
	assert_int_equal(kv_value_write(v, "z", 1, 2 * KV_CHUNK_SIZE), 0);
	put(b, &m, back, v1);
	assert_true(chunk_exists(v1, 0) && chunk_exists(v1, 1) && chunk_exists(m.vver, 2));
	assert_int_equal(files_in(), 1 + 4);
	check(b, &m, v);
	kv_backend_close(b);
	kv_value_free(back);
	kv_value_free(v);
}

static void test_format_1_refused(void **state)
{
	struct kv_backend_params p = {
		.data_dir = data, .db = "default", .ns = "default", .lock_timeout_ms = 300,
	};
	static const uint8_t hdr[] = { 'n', 'a', 'd', 'b', 'j', 'r', 'n', 'l', 1, 0, 0, 0,
				       1, 0, 0, 0, 0, 0, 0, 0 };
	struct kv_backend *b = open_load(false);
	char path[600], err[256];
	uint64_t max_id;
	int fd;

	(void)state;
	kv_backend_close(b);
	/* A journal as format 1 wrote it: a framed header record with version 1. */
	snprintf(path, sizeof(path), "%s/stores/default/default/meta/journal.1", data);
	fd = open(path, O_WRONLY | O_TRUNC);
	assert_true(fd >= 0);
	{
		uint8_t rec[JOURNAL_HDR_SIZE + sizeof(hdr)];

		journal_frame(rec, FS_REC_JHEADER, hdr, sizeof(hdr));
		memcpy(rec + JOURNAL_HDR_SIZE, hdr, sizeof(hdr));
		assert_int_equal(write(fd, rec, sizeof(rec)), (ssize_t)sizeof(rec));
	}
	close(fd);
	assert_int_equal(kv_fs_open(&p, &b, err, sizeof(err)), 0);
	capture_start();
	assert_int_equal(b->ops->load(b, count, &(int){ 0 }, &max_id), -EIO);
	assert_true(log_has("format version 1, written by an older nadbfs"));
	kv_backend_close(b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_only_changed_chunks_written, setup, teardown),
		cmocka_unit_test_setup_teardown(test_read_value_keeps_sharing, setup, teardown),
		cmocka_unit_test_setup_teardown(test_unreadable_map_sweep, setup, teardown),
		cmocka_unit_test_setup_teardown(test_format_1_refused, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
