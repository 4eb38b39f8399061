/*
 * The filesystem backend's files: leftovers of crashed commits removed at
 * open (or replaced when the sweep missed one), damaged value files, a store
 * loaded once, failed commits that leave nothing behind, and never a file
 * outside the data directory. Run by test_backend_fs.c.
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "store/backend_fs.h"
#include "tests/backend_contract.h"
#include "tests/test_backend_fs.h"

static void touch(const char *path)
{
	int fd = open(path, O_WRONLY | O_CREAT, 0600);

	assert_true(fd >= 0);
	assert_int_equal(write(fd, "junk", 4), 4);
	close(fd);
}

void test_stray_files_removed(void **state)
{
	struct kv_backend *b;
	uint64_t vver;
	size_t n;
	char live[64], path[128];

	(void)state;
	b = xload(&n, NULL);
	vver = contract_put(b, 0x105, 10, 'v', 0);
	kv_backend_close(b);
	kv_fs_value_name(live, 0x105, vver);
	snprintf(path, sizeof(path), "values/%s", live);
	assert_true(exists(store_file(path)));

	/* A crashed commit's temp file and its renamed but unjournaled file,
	 * in an existing and a new directory; a file nobody knows stays. */
	mkdir(store_file("values/07"), 0700);
	touch(store_file("values/05/.tmp-105-99"));
	touch(store_file("values/07/.tmp-7-98"));
	touch(store_file("values/05/105.99"));
	touch(store_file("values/07/7.98"));
	touch(store_file("values/05/README"));

	b = xload(&n, NULL);
	assert_int_equal(n, 1);
	kv_backend_close(b);
	assert_false(exists(store_file("values/05/.tmp-105-99")));
	assert_false(exists(store_file("values/07/.tmp-7-98")));
	assert_false(exists(store_file("values/05/105.99")));
	assert_false(exists(store_file("values/07/7.98")));
	assert_true(exists(store_file("values/05/README")));
	assert_true(exists(store_file(path)));
	assert_false(exists(store_file("meta/snapshot.tmp")));
}

/*
 * Value files are written under their final name, so a crash mid-commit can
 * leave a torn file of exactly the version the next commit hands out again
 * (version numbers continue from the last committed one). The sweep at open
 * removes it first: the next commit of that version is created, not refused,
 * and reads back whole, also after a reopen; a file the sweep missed is
 * replaced.
 */
void test_torn_file_of_next_version(void **state)
{
	struct kv_meta m = { 0 };
	struct kv_value *v = NULL;
	struct kv_backend *b;
	uint64_t vver, next;
	char name[64], path[128];
	size_t n;

	(void)state;
	b = xload(&n, NULL);
	vver = contract_put(b, 0x105, 10, 'v', 0);
	kv_backend_close(b);
	kv_fs_value_name(name, 0x105, vver + 1);
	snprintf(path, sizeof(path), "values/%s", name);
	touch(store_file(path));

	b = xload(&n, NULL);
	assert_false(exists(store_file(path)));
	next = contract_put(b, 0x105, 3000, 'w', vver);
	assert_int_equal(next, vver + 1);
	kv_backend_close(b);

	b = xopen();
	assert_true(contract_load_has(b, 0x105, &m));
	assert_int_equal(m.vver, next);
	assert_int_equal(b->ops->read_value(b, &m, &v), 0);
	assert_int_equal(kv_value_size(v), 3000);
	for (uint64_t off = 0; off < 3000; off++) {
		uint8_t c;

		assert_int_equal(kv_value_read(v, &c, 1, off), 1);
		assert_int_equal(c, 'w');
	}
	kv_value_free(v);

	/* One the sweep missed (it could not remove it, say) is replaced
	 * when its version comes: the commit goes through. */
	kv_fs_value_name(name, 0x105, next + 1);
	snprintf(path, sizeof(path), "values/%s", name);
	touch(store_file(path));
	assert_int_equal(contract_put(b, 0x105, 20, 'x', next), next + 1);
	kv_backend_close(b);
	b = xopen();
	assert_true(contract_load_has(b, 0x105, &m));
	assert_int_equal(m.vver, next + 1);
	assert_int_equal(b->ops->read_value(b, &m, &v), 0);
	assert_int_equal(kv_value_size(v), 20);
	kv_value_free(v);
	kv_backend_close(b);
}

void test_damaged_value_files(void **state)
{
	struct kv_meta text = { 0 }, zeros = { 0 };
	struct kv_value *v = NULL;
	struct kv_backend *b;
	char name[64], path[128], buf[64];
	size_t n;

	(void)state;
	b = xload(&n, NULL);
	contract_put(b, 2, 100000, 't', 0);
	contract_put(b, 3, 5000, 0, 0);
	kv_backend_close(b);
	b = xopen();
	assert_true(contract_load_has(b, 2, &text));
	kv_backend_close(b);
	b = xopen();
	assert_true(contract_load_has(b, 3, &zeros));
	assert_int_equal(text.encoding, KV_ENC_ZSTD);

	capture_log();
	/* A flipped byte in a compressed chunk: zstd's checksum sees it. */
	kv_fs_chunk_name(name, 2, text.vver, 1);
	snprintf(path, sizeof(path), "values/%s", name);
	flip(store_file(path), file_size(store_file(path)) / 2);
	assert_int_equal(b->ops->read_value(b, &text, &v), -EIO);
	assert_int_equal(b->ops->pread(b, &text, buf, sizeof(buf), 90000), -EIO);
	/* A frame cut short. */
	assert_int_equal(truncate(store_file(path), file_size(store_file(path)) / 2), 0);
	assert_int_equal(b->ops->read_value(b, &text, &v), -EIO);
	assert_int_equal(b->ops->pread(b, &text, buf, sizeof(buf), 90000), -EIO);
	/* The other chunk still reads. */
	assert_int_equal(b->ops->pread(b, &text, buf, sizeof(buf), 100), sizeof(buf));
	/* A flipped byte in a chunk map: its checksum sees it. */
	kv_fs_value_name(name, 2, text.vver);
	snprintf(path, sizeof(path), "values/%s", name);
	flip(store_file(path), 30);
	assert_int_equal(b->ops->pread(b, &text, buf, sizeof(buf), 100), -EIO);
	/* A truncated map (single chunk, inline). */
	kv_fs_value_name(name, 3, zeros.vver);
	snprintf(path, sizeof(path), "values/%s", name);
	assert_int_equal(truncate(store_file(path), 30), 0);
	assert_int_equal(b->ops->pread(b, &zeros, buf, sizeof(buf), 0), -EIO);
	/* A missing one reads as superseded. */
	assert_int_equal(unlink(store_file(path)), 0);
	assert_int_equal(b->ops->pread(b, &zeros, buf, sizeof(buf), 0), -ESTALE);
	assert_int_equal(b->ops->read_value(b, &zeros, &v), -ESTALE);
	assert_null(v);
	assert_true(release_log("is corrupt"));
	kv_backend_close(b);
}

void test_load_required_once(void **state)
{
	struct kv_op op = { .type = KV_OP_PUT };
	struct kv_backend *b;
	uint64_t mid;
	size_t n = 0;

	(void)state;
	b = xopen();
	key(&op.meta, 2);
	assert_int_equal(b->ops->commit(b, &op, 1), -EINVAL);
	assert_int_equal(b->ops->load(b, contract_count, &n, &mid), 0);
	assert_int_equal(b->ops->load(b, contract_count, &n, &mid), -EINVAL);
	assert_int_equal(b->ops->commit(b, &op, 1), 0);
	/* A DEL of id 0 or a value whose size disagrees is refused. */
	op.type = KV_OP_DEL;
	op.meta.id = 0;
	assert_int_equal(b->ops->commit(b, &op, 1), -EINVAL);
	kv_backend_close(b);
}

/* Writes past RLIMIT_FSIZE fail with EFBIG: a failing disk without mocks. */
static void limit_file_size(rlim_t max)
{
	struct rlimit rl;

	assert_int_equal(getrlimit(RLIMIT_FSIZE, &rl), 0);
	rl.rlim_cur = max;
	assert_int_equal(setrlimit(RLIMIT_FSIZE, &rl), 0);
}

void test_failed_commits_leave_nothing(void **state)
{
	enum { N = 40 };
	struct kv_op ops[N];
	struct kv_backend *b;
	struct rlimit saved;
	uint64_t vver2;
	off_t jsize;
	size_t n, files;
	char *x = malloc(KV_XATTRS_MAX);

	(void)state;
	assert_non_null(x);
	memset(x, 'x', KV_XATTRS_MAX);
	signal(SIGXFSZ, SIG_IGN);
	assert_int_equal(getrlimit(RLIMIT_FSIZE, &saved), 0);
	b = xload(&n, NULL);
	vver2 = contract_put(b, 2, 100, 'a', 0);
	jsize = file_size(store_file("meta/journal.1"));
	files = count_files(store_file("values"));

	/* A value larger than the limit fails while it is written. */
	capture_log();
	limit_file_size(32 * 1024);
	{
		struct kv_op op[2] = { { .type = KV_OP_PUT }, { .type = KV_OP_PUT } };
		char *big = malloc(200000);
		struct kv_value *v;
		uint32_t r = 1;

		/* Random bytes: zstd cannot shrink them below the limit. */
		assert_non_null(big);
		for (int i = 0; i < 200000; i++) {
			r ^= r << 13;
			r ^= r >> 17;
			r ^= r << 5;
			big[i] = (char)r;
		}
		v = kv_value_from_buf(big, 200000);
		key(&op[0].meta, 3);
		op[0].meta.size = 200000;
		op[0].value = v;
		/* A metadata-only op after the failing one keeps its value. */
		key(&op[1].meta, 2);
		op[1].meta.size = 100;
		op[1].meta.vver = vver2;
		assert_int_equal(b->ops->commit(b, op, 2), -EFBIG);
		assert_int_equal(op[0].meta.vver, 0);
		assert_int_equal(op[1].meta.vver, vver2);
		kv_value_free(v);
		free(big);
	}
	assert_int_equal(count_files(store_file("values")), files);

	/* A journal record larger than what the limit leaves: a short write. */
	limit_file_size((rlim_t)jsize + 100000);
	for (int i = 0; i < N; i++) {
		memset(&ops[i], 0, sizeof(ops[i]));
		ops[i].type = KV_OP_PUT;
		key(&ops[i].meta, 10 + (uint64_t)i);
		ops[i].meta.xattrs = x;
		ops[i].meta.xattrs_len = KV_XATTRS_MAX;
	}
	assert_int_equal(b->ops->commit(b, ops, N), -EFBIG);
	assert_int_equal(file_size(store_file("meta/journal.1")), jsize);
	assert_int_equal(setrlimit(RLIMIT_FSIZE, &saved), 0);
	assert_true(release_log("cannot append"));

	/* Still usable, and nothing of the failed commits ever appears. */
	contract_put(b, 4, 10, 'c', 0);
	kv_backend_close(b);
	b = xload(&n, NULL);
	assert_int_equal(n, 2);
	kv_backend_close(b);
	b = xopen();
	assert_false(contract_load_has(b, 10, NULL));
	kv_backend_close(b);
	free(x);
}

static int walk_root(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	if (ftw->level == 0)
		return 0;
	/* The only thing directly below the test's root is the data dir. */
	if (strncmp(path, ctx.data, strlen(ctx.data)) != 0) {
		fprintf(stderr, "unexpected file outside the data directory: %s\n", path);
		return 1;
	}
	return 0;
}

void test_nothing_outside_data_dir(void **state)
{
	struct contract_model *md = calloc(1, sizeof(*md));
	struct kv_backend *b, *c;
	size_t n;

	(void)state;
	assert_non_null(md);
	kv_fs_set_compact_threshold(4096);
	b = xload(&n, NULL);
	contract_churn(b, md, 2);
	kv_backend_close(b);
	assert_int_equal(fs_open_as(&ctx, "../..", "/etc", true, 300, &c), 0);
	assert_int_equal(c->ops->load(c, contract_count, &n, &(uint64_t){ 0 }), 0);
	contract_put(c, 2, 5000, 'q', 0);
	kv_backend_close(c);
	b = xopen();
	contract_check_model(b, md);
	kv_backend_close(b);
	assert_int_equal(nftw(ctx.root, walk_root, 16, FTW_PHYS), 0);
	free(md);
}

