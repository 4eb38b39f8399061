/*
 * The filesystem backend: the backend contract, then what only a local
 * directory has: torn and corrupt journals, the lock, store identities,
 * compaction and crashes in the middle of it, leftover files, failed writes,
 * and never a file outside the data directory.
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
#include "util/log.h"

struct fs_ctx {
	char root[64];		/* mkdtemp; everything of a test lives below it */
	char data[128];		/* root/data: the data directory */
	const char *db, *ns;
	uint64_t lock_ms;
	char err[256];		/* the last open's message */
};

static struct fs_ctx ctx;

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

static int fs_open_as(struct fs_ctx *x, const char *db, const char *ns, bool compress,
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

static int setup(void **state)
{
	(void)state;
	return fs_create(&ctx) ? -1 : 0;
}

static int teardown(void **state)
{
	(void)state;
	fs_destroy(&ctx);
	return 0;
}

/* --- Helpers --- */

static char *store_file(const char *rel)
{
	static char buf[1024];

	snprintf(buf, sizeof(buf), "%s/stores/default/default/%s", ctx.data, rel);
	return buf;
}

static bool exists(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0;
}

static off_t file_size(const char *path)
{
	struct stat st;

	assert_int_equal(stat(path, &st), 0);
	return st.st_size;
}

static struct kv_backend *xopen(void)
{
	struct kv_backend *b = NULL;

	assert_int_equal(fs_open(&ctx, true, &b), 0);
	return b;
}

/* Opens and loads; returns the handle and the record count. */
static struct kv_backend *xload(size_t *n, uint64_t *max_id)
{
	struct kv_backend *b = xopen();
	uint64_t mid;

	*n = 0;
	assert_int_equal(b->ops->load(b, contract_count, n, max_id ? max_id : &mid), 0);
	return b;
}

static void key(struct kv_meta *m, uint64_t id)
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

static void capture_log(void)
{
	int fd;

	strcpy(logpath, "/tmp/nadbfs-backend-log-XXXXXX");
	fd = mkstemp(logpath);
	assert_true(fd >= 0);
	close(fd);
	assert_int_equal(log_open(logpath, false), 0);
}

/* Stops capturing; true if the log holds needle. */
static bool release_log(const char *needle)
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
static void flip(const char *path, off_t off)
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

static size_t count_files(const char *dir)
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

/* --- Leftovers, failures, containment --- */

static void touch(const char *path)
{
	int fd = open(path, O_WRONLY | O_CREAT, 0600);

	assert_true(fd >= 0);
	assert_int_equal(write(fd, "junk", 4), 4);
	close(fd);
}

static void test_stray_files_removed(void **state)
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
static void test_torn_file_of_next_version(void **state)
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

static void test_damaged_value_files(void **state)
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

static void test_load_required_once(void **state)
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

static void test_failed_commits_leave_nothing(void **state)
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

static void test_nothing_outside_data_dir(void **state)
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
