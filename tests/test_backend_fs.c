/*
 * The filesystem backend: the backend contract, then what only a local
 * directory has: torn and corrupt journals, the lock, store identities,
 * compaction and crashes in the middle of it; leftover files, failed writes
 * and never a file outside the data directory are in test_backend_fs_files.c.
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
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
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "store/backend_fs.h"
#include "tests/backend_contract.h"
#include "tests/test_backend_fs.h"
#include "util/log.h"

struct fs_ctx ctx;

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static void rm_rf(const char *path)
{
	nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static int fs_create(void *c)
{
	struct fs_ctx *x = c;

	strcpy(x->root, "/tmp/nadbfs-backend-XXXXXX");
	if (!mkdtemp(x->root))
		return -errno;
	snprintf(x->data, sizeof(x->data), "%s/data", x->root);
	x->db = "default";
	x->ns = "default";
	x->lock_ms = 300;
	kv_fs_set_compact_threshold(8u << 20);
	return 0;
}

int fs_open_as(struct fs_ctx *x, const char *db, const char *ns, bool compress,
		      uint64_t lock_ms, struct kv_backend **out)
{
	struct kv_backend_params p = {
		.data_dir = x->data,
		.db = db,
		.ns = ns,
		.compression = compress ? KV_ENC_ZSTD : KV_ENC_NONE,
		.compression_min_size = 1024,
		.lock_timeout_ms = lock_ms,
	};

	x->err[0] = '\0';
	return kv_fs_open(&p, out, x->err, sizeof(x->err));
}

static int fs_open(void *c, bool compress, struct kv_backend **out)
{
	struct fs_ctx *x = c;
	int ret = fs_open_as(x, x->db, x->ns, compress, x->lock_ms, out);

	if (ret)
		fprintf(stderr, "kv_fs_open: %s\n", x->err);
	return ret;
}

static void fs_destroy(void *c)
{
	struct fs_ctx *x = c;

	rm_rf(x->root);
	kv_fs_set_compact_threshold(8u << 20);
}

int setup(void **state)
{
	(void)state;
	return fs_create(&ctx) ? -1 : 0;
}

int teardown(void **state)
{
	(void)state;
	fs_destroy(&ctx);
	return 0;
}

/* --- Helpers --- */

char *store_file(const char *rel)
{
	static char buf[1024];

	snprintf(buf, sizeof(buf), "%s/stores/default/default/%s", ctx.data, rel);
	return buf;
}

bool exists(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0;
}

off_t file_size(const char *path)
{
	struct stat st;

	assert_int_equal(stat(path, &st), 0);
	return st.st_size;
}

struct kv_backend *xopen(void)
{
	struct kv_backend *b = NULL;

	assert_int_equal(fs_open(&ctx, true, &b), 0);
	return b;
}

/* Opens and loads; returns the handle and the record count. */
struct kv_backend *xload(size_t *n, uint64_t *max_id)
{
	struct kv_backend *b = xopen();
	uint64_t mid;

	*n = 0;
	assert_int_equal(b->ops->load(b, contract_count, n, max_id ? max_id : &mid), 0);
	return b;
}

void key(struct kv_meta *m, uint64_t id)
{
	static char name[32];

	memset(m, 0, sizeof(*m));
	snprintf(name, sizeof(name), "k%llu", (unsigned long long)id);
	m->id = id;
	m->parent = KV_ROOT_ID;
	m->name = name;
	m->mode = S_IFREG | 0644;
	m->mtime_ns = (int64_t)id;
}

/* Three commits of ids 2, 3, 4; returns the journal's size after each. */
static void three_commits(off_t sizes[3])
{
	struct kv_backend *b = xload(&(size_t){ 0 }, NULL);

	for (int i = 0; i < 3; i++) {
		contract_put(b, 2 + (uint64_t)i, 100, 'a', 0);
		sizes[i] = file_size(store_file("meta/journal.1"));
	}
	kv_backend_close(b);
}

static char logpath[64];

void capture_log(void)
{
	int fd;

	strcpy(logpath, "/tmp/nadbfs-backend-log-XXXXXX");
	fd = mkstemp(logpath);
	assert_true(fd >= 0);
	close(fd);
	assert_int_equal(log_open(logpath, false), 0);
}

/* Stops capturing; true if the log holds needle. */
bool release_log(const char *needle)
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

/* --- Journal damage --- */

static void test_torn_tail_truncated(void **state)
{
	struct kv_backend *b;
	off_t sizes[3];
	size_t n;

	(void)state;
	three_commits(sizes);
	assert_int_equal(truncate(store_file("meta/journal.1"), sizes[2] - 3), 0);

	capture_log();
	b = xload(&n, NULL);
	assert_true(release_log("torn tail"));
	assert_int_equal(n, 2);
	/* Cut back to the last complete record, and usable again. */
	assert_int_equal(file_size(store_file("meta/journal.1")), sizes[1]);
	contract_put(b, 9, 10, 'z', 0);
	kv_backend_close(b);
	b = xload(&n, NULL);
	assert_int_equal(n, 3);
	kv_backend_close(b);
}

static void append_bytes(const char *path, int byte, size_t len)
{
	char buf[256];
	int fd = open(path, O_WRONLY | O_APPEND);

	assert_true(fd >= 0 && len <= sizeof(buf));
	memset(buf, byte, len);
	assert_int_equal(write(fd, buf, len), (ssize_t)len);
	close(fd);
}

static void test_garbage_tail_dropped(void **state)
{
	static const struct { int byte; size_t len; } tails[] = {
		{ 0xff, 5 }, { 0xff, 100 }, { 0, 4 }, { 0, 200 }, { 0x01, 30 },
	};
	struct kv_backend *b;
	off_t sizes[3];
	size_t n;

	(void)state;
	three_commits(sizes);
	for (size_t i = 0; i < sizeof(tails) / sizeof(tails[0]); i++) {
		append_bytes(store_file("meta/journal.1"), tails[i].byte, tails[i].len);
		capture_log();
		b = xload(&n, NULL);
		assert_true(release_log("torn tail"));
		assert_int_equal(n, 3);
		assert_int_equal(file_size(store_file("meta/journal.1")), sizes[2]);
		kv_backend_close(b);
	}
}

/* Flips one byte of the journal at off. */
void flip(const char *path, off_t off)
{
	uint8_t c;
	int fd = open(path, O_RDWR);

	assert_true(fd >= 0);
	assert_int_equal(pread(fd, &c, 1, off), 1);
	c ^= 0x40;
	assert_int_equal(pwrite(fd, &c, 1, off), 1);
	close(fd);
}

static void test_corruption_in_middle(void **state)
{
	struct kv_backend *b;
	off_t sizes[3];
	uint64_t mid;
	size_t n = 0;

	(void)state;
	three_commits(sizes);
	/* Inside the first commit's record, with two more after it. */
	flip(store_file("meta/journal.1"), sizes[0] - 20);
	capture_log();
	b = xopen();
	assert_int_equal(b->ops->load(b, contract_count, &n, &mid), -EIO);
	assert_true(release_log("corrupt"));
	kv_backend_close(b);
	/* Nothing was cut away: the damage is for a human to look at. */
	assert_int_equal(file_size(store_file("meta/journal.1")), sizes[2]);
}

/* A lost journal generation and a damaged snapshot stop the load. */
static void test_corrupt_snapshot_and_missing_journal(void **state)
{
	struct kv_backend *b;
	char from[1100] = "", to[1100] = "", name[32];
	uint64_t mid;
	size_t n = 0;

	(void)state;
	kv_fs_set_compact_threshold(512);
	b = xload(&n, NULL);
	for (uint64_t id = 2; id < 40; id++)
		contract_put(b, id, 50, 'x', 0);
	kv_backend_close(b);
	assert_true(exists(store_file("meta/snapshot")));
	b = xload(&n, NULL);
	assert_int_equal(n, 38);
	kv_backend_close(b);

	/* A journal generation missing: the current journal renamed one up. */
	for (int g = 1; g < 100 && !*from; g++) {
		snprintf(name, sizeof(name), "meta/journal.%d", g);
		if (!exists(store_file(name)))
			continue;
		snprintf(from, sizeof(from), "%s", store_file(name));
		snprintf(name, sizeof(name), "meta/journal.%d", g + 1);
		snprintf(to, sizeof(to), "%s", store_file(name));
	}
	assert_int_equal(rename(from, to), 0);
	capture_log();
	b = xopen();
	assert_int_equal(b->ops->load(b, contract_count, &n, &mid), -EIO);
	assert_true(release_log("is missing"));
	kv_backend_close(b);
	assert_int_equal(rename(to, from), 0);

	/* A damaged snapshot is never taken for a torn tail. */
	flip(store_file("meta/snapshot"), file_size(store_file("meta/snapshot")) - 30);
	capture_log();
	b = xopen();
	assert_int_equal(b->ops->load(b, contract_count, &n, &mid), -EIO);
	assert_true(release_log("snapshot is corrupt"));
	kv_backend_close(b);
}

/* --- Lock and identity --- */

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void test_lock_times_out(void **state)
{
	struct kv_backend *a, *b = NULL;
	char pid[32];
	int64_t t0;

	(void)state;
	a = xopen();
	t0 = now_ms();
	assert_int_equal(fs_open_as(&ctx, "default", "default", false, 300, &b), -EBUSY);
	assert_true(now_ms() - t0 >= 290);
	assert_null(b);
	snprintf(pid, sizeof(pid), "(pid %ld)", (long)getpid());
	assert_non_null(strstr(ctx.err, "is in use by another nadbfs"));
	assert_non_null(strstr(ctx.err, pid));
	assert_non_null(strstr(ctx.err, "gave up after 0.3 s"));
	assert_non_null(strstr(ctx.err, ctx.data));
	kv_backend_close(a);
	assert_int_equal(fs_open_as(&ctx, "default", "default", false, 300, &b), 0);
	kv_backend_close(b);
}

static void *close_later(void *arg)
{
	usleep(200 * 1000);
	kv_backend_close(arg);
	return NULL;
}

static void test_lock_waits_for_owner(void **state)
{
	struct kv_backend *a, *b = NULL;
	pthread_t t;
	int64_t t0;

	(void)state;
	a = xopen();
	t0 = now_ms();
	assert_int_equal(pthread_create(&t, NULL, close_later, a), 0);
	assert_int_equal(fs_open_as(&ctx, "default", "default", false, 10000, &b), 0);
	assert_true(now_ms() - t0 >= 150);
	pthread_join(t, NULL);
	kv_backend_close(b);
}

static void test_identities_are_separate(void **state)
{
	struct kv_backend *a = NULL, *b = NULL;
	uint64_t mid;
	size_t n;
	char path[512];

	(void)state;
	assert_int_equal(fs_open_as(&ctx, "x:y", "z", false, 300, &a), 0);
	assert_int_equal(fs_open_as(&ctx, "x", "y:z", false, 300, &b), 0);
	n = 0;
	assert_int_equal(a->ops->load(a, contract_count, &n, &mid), 0);
	assert_int_equal(b->ops->load(b, contract_count, &n, &mid), 0);
	contract_put(a, 2, 10, 'a', 0);
	contract_put(b, 3, 10, 'b', 0);
	contract_put(b, 4, 10, 'b', 0);
	kv_backend_close(a);
	kv_backend_close(b);

	assert_int_equal(fs_open_as(&ctx, "x:y", "z", false, 300, &a), 0);
	assert_true(contract_load_has(a, 2, NULL));
	kv_backend_close(a);
	assert_int_equal(fs_open_as(&ctx, "x:y", "z", false, 300, &a), 0);
	assert_false(contract_load_has(a, 3, NULL));
	kv_backend_close(a);
	assert_int_equal(fs_open_as(&ctx, "x", "y:z", false, 300, &b), 0);
	n = 0;
	assert_int_equal(b->ops->load(b, contract_count, &n, &mid), 0);
	assert_int_equal(n, 2);
	kv_backend_close(b);

	snprintf(path, sizeof(path), "%s/stores/x%%3Ay/z/meta", ctx.data);
	assert_true(exists(path));
	snprintf(path, sizeof(path), "%s/stores/x/y%%3Az/meta", ctx.data);
	assert_true(exists(path));
	/* Names that could climb out are encoded too. */
	assert_int_equal(fs_open_as(&ctx, "..", "../..", false, 300, &a), 0);
	kv_backend_close(a);
	snprintf(path, sizeof(path), "%s/stores/%%2E%%2E/%%2E%%2E%%2F%%2E%%2E/lock", ctx.data);
	assert_true(exists(path));
	assert_int_equal(fs_open_as(&ctx, "", "z", false, 300, &a), -EINVAL);
	assert_int_not_equal(ctx.err[0], '\0');
}

/* --- Compaction --- */

size_t count_files(const char *dir)
{
	char cmd[1200];
	size_t n = 0;
	FILE *f;

	snprintf(cmd, sizeof(cmd), "find '%s' -type f | wc -l", dir);
	f = popen(cmd, "r");
	assert_non_null(f);
	assert_int_equal(fscanf(f, "%zu", &n), 1);
	pclose(f);
	return n;
}

static size_t live_values(const struct contract_model *md)
{
	size_t n = 0;

	for (int id = 2; id < CONTRACT_MODEL_N; id++)
		n += md->live[id] && md->len[id] > 0;
	return n;
}

static void test_compaction_keeps_everything(void **state)
{
	struct contract_model *md = calloc(1, sizeof(*md));
	struct kv_backend *b;
	size_t n;

	(void)state;
	assert_non_null(md);
	kv_fs_set_compact_threshold(16 * 1024);
	b = xload(&n, NULL);
	contract_churn(b, md, 6);
	kv_backend_close(b);

	/* Compaction happened, several times, and cleaned up after itself. */
	assert_true(exists(store_file("meta/snapshot")));
	assert_false(exists(store_file("meta/journal.1")));
	assert_false(exists(store_file("meta/snapshot.tmp")));
	assert_int_equal(count_files(store_file("meta")), 2);
	/* Every superseded or deleted value file is gone. */
	assert_int_equal(count_files(store_file("values")), live_values(md));

	b = xopen();
	contract_check_model(b, md);
	contract_churn(b, md, 2);
	kv_backend_close(b);
	/* With compaction off, the journal alone carries the rest. */
	kv_fs_set_compact_threshold(1ull << 40);
	b = xopen();
	contract_check_model(b, md);
	contract_churn(b, md, 1);
	kv_backend_close(b);
	b = xopen();
	contract_check_model(b, md);
	kv_backend_close(b);
	free(md);
}

static void copy_file(const char *from, const char *to)
{
	char cmd[2300];

	snprintf(cmd, sizeof(cmd), "cp '%s' '%s'", from, to);
	assert_int_equal(system(cmd), 0);
}

/*
 * Crash states of a compaction, made from real files: journal.1 is kept
 * aside, a compaction at open folds it into snapshot (generation 1), later
 * commits go to journal.2; then journal.1 is put back.
 */
static void test_crash_mid_compaction(void **state)
{
	struct contract_model *md = calloc(1, sizeof(*md));
	char j1[1100], saved[1100];
	struct kv_backend *b;
	size_t n;
	int fd;

	(void)state;
	assert_non_null(md);
	kv_fs_set_compact_threshold(1ull << 40);
	b = xload(&n, NULL);
	contract_churn(b, md, 2);
	kv_backend_close(b);
	snprintf(j1, sizeof(j1), "%s", store_file("meta/journal.1"));
	snprintf(saved, sizeof(saved), "%s/journal.1.saved", ctx.root);
	copy_file(j1, saved);
	kv_fs_set_compact_threshold(1024);
	b = xload(&n, NULL);		/* compacts at open */
	kv_fs_set_compact_threshold(1ull << 40);
	assert_false(exists(j1));
	assert_true(exists(store_file("meta/journal.2")));
	contract_churn(b, md, 1);
	kv_backend_close(b);

	/* Between steps 3 and 4: the new snapshot in place and the journal it
	 * includes still there. Replaying that journal after journal.2 would
	 * undo journal.2's deletes: it must be ignored, then removed. */
	copy_file(saved, j1);
	b = xopen();
	contract_check_model(b, md);
	kv_backend_close(b);
	assert_false(exists(j1));

	/* During step 2: the old snapshot (here: none), a partial
	 * snapshot.tmp, both journals. */
	assert_int_equal(unlink(store_file("meta/snapshot")), 0);
	copy_file(saved, j1);
	fd = open(store_file("meta/snapshot.tmp"), O_WRONLY | O_CREAT, 0600);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, "nadbsnap partial", 16), 16);
	close(fd);
	b = xopen();
	contract_check_model(b, md);
	kv_backend_close(b);
	/* That load finished the compaction, and what it left loads the same. */
	assert_false(exists(j1));
	assert_false(exists(store_file("meta/snapshot.tmp")));
	assert_true(exists(store_file("meta/snapshot")));
	assert_int_equal(count_files(store_file("meta")), 2);
	b = xopen();
	contract_check_model(b, md);
	kv_backend_close(b);
	free(md);
}

int main(void)
{
	const struct contract_backend fs = {
		.name = "fs",
		.ctx = &ctx,
		.create = fs_create,
		.open = fs_open,
		.close_and_destroy = fs_destroy,
	};
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_torn_tail_truncated, setup, teardown),
		cmocka_unit_test_setup_teardown(test_garbage_tail_dropped, setup, teardown),
		cmocka_unit_test_setup_teardown(test_corruption_in_middle, setup, teardown),
		cmocka_unit_test_setup_teardown(test_corrupt_snapshot_and_missing_journal, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_lock_times_out, setup, teardown),
		cmocka_unit_test_setup_teardown(test_lock_waits_for_owner, setup, teardown),
		cmocka_unit_test_setup_teardown(test_identities_are_separate, setup, teardown),
		cmocka_unit_test_setup_teardown(test_compaction_keeps_everything, setup, teardown),
		cmocka_unit_test_setup_teardown(test_crash_mid_compaction, setup, teardown),
		cmocka_unit_test_setup_teardown(test_torn_file_of_next_version, setup, teardown),
		cmocka_unit_test_setup_teardown(test_stray_files_removed, setup, teardown),
		cmocka_unit_test_setup_teardown(test_damaged_value_files, setup, teardown),
		cmocka_unit_test_setup_teardown(test_load_required_once, setup, teardown),
		cmocka_unit_test_setup_teardown(test_failed_commits_leave_nothing, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_nothing_outside_data_dir, setup, teardown),
	};
	int failed;

	/* Only warnings and errors: the tests provoke many on purpose. */
	log_set_level(NLOG_WARN);
	failed = backend_contract_run(&fs);
	failed += cmocka_run_group_tests_name("backend_fs", tests, NULL, NULL);
	return failed;
}
