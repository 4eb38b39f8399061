/*
 * Fault injection in the filesystem backend (issue 9), through the store:
 * write, pwrite(v), fsync, fdatasync, rename(at) and the creation of value
 * files fail with EIO or ENOSPC, or write short (tests/fault_shim.c, linked
 * with -Wl,--wrap=). The store
 * must report the failure (kv_flush and kv_fsync give -EIO, the stats show
 * it), keep every buffered byte readable, lose nothing it acknowledged, and
 * recover by itself once the fault is lifted: the next flush succeeds and a
 * reopened store has everything. Journal and snapshot writes cut off
 * mid-way must leave a store that opens with all committed data.
 */
#include <errno.h>
#include <ftw.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "store/backend_fs.h"
#include "store/kv.h"
#include "tests/fault_shim.h"

#define BIG (200 * 1024)

struct fx {
	char root[64];
	char data[128];
	struct kv_options o;
	struct kv_store *kv;
	char *big;
};

static int total_faults;

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st, (void)flag, (void)ftw;
	return remove(path);
}

/* kv_close with a fault still there fails or writes a spill file (the
 * next open replays it): either way it may not lose anything. */
static int close_kv(struct fx *f)
{
	int r = kv_close(f->kv);

	f->kv = NULL;
	return r;
}

static void reopen(struct fx *f)
{
	char err[256] = "";
	int ret = kv_open(&f->o, &f->kv, err, sizeof(err));

	if (ret)
		fail_msg("kv_open: %s (%s)", err, strerror(-ret));
	assert_int_equal(kv_start(f->kv), 0);
}

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));

	strcpy(f->root, "/tmp/nadbfs-faults-XXXXXX");
	if (!f || !mkdtemp(f->root))
		return -1;
	snprintf(f->data, sizeof(f->data), "%s/data", f->root);
	f->o.backend = KV_BACKEND_FS;
	f->o.params.data_dir = f->data;
	f->o.params.db = "default";
	f->o.params.ns = "default";
	f->o.params.lock_timeout_ms = 1000;
	f->o.buffer_size = 16 << 20;
	f->o.flush_interval_ms = 3600 * 1000; /* only the test's flushes */
	/* How long kv_flush waits for a failing backend before its EIO. */
	f->o.backend_timeout_ms = 400;
	f->o.max_value_size = 4 << 20;
	/* No spill file: with none, the filesystem backend uses none (a spill
	 * directory set for it would be its own bug report, see the README). */
	f->big = malloc(BIG);
	for (size_t i = 0; i < BIG; i++)
		f->big[i] = (char)(i * 131 + i / 7);
	kv_fs_set_compact_threshold(8u << 20);
	reopen(f);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;

	fault_clear();
	if (f->kv)
		kv_close(f->kv);
	nftw(f->root, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
	free(f->big);
	free(f);
	return 0;
}

static uint64_t put(struct kv_store *kv, const char *name, const void *data, size_t len)
{
	struct kv_attr a;
	int r = kv_lookup(kv, KV_ROOT_ID, name, &a);

	if (r == -ENOENT)
		assert_int_equal(kv_create(kv, KV_ROOT_ID, name, 0644, 0, 0, false, &a), 0);
	else
		assert_int_equal(r, 0);
	assert_int_equal(kv_open_file(kv, a.id, true), 0);
	assert_int_equal(kv_write(kv, a.id, data, len, 0), (ssize_t)len);
	kv_release_file(kv, a.id);
	return a.id;
}

/* name's value is data (len bytes); NULL: the key must not exist. */
static void check(struct kv_store *kv, const char *name, const void *data, size_t len)
{
	struct kv_attr a;
	char *buf;
	int r = kv_lookup(kv, KV_ROOT_ID, name, &a);

	if (!data) {
		assert_int_equal(r, -ENOENT);
		return;
	}
	if (r)
		fail_msg("key %s: lookup %s", name, strerror(-r));
	buf = malloc(len + 1);
	assert_int_equal(kv_read(kv, a.id, buf, len + 1, 0), (ssize_t)len);
	if (memcmp(buf, data, len))
		fail_msg("key %s: wrong bytes", name);
	free(buf);
}

struct fault_case {
	const char *what;
	int ops;
	const char *file;
	int err;
	bool short_write;
};

/* The cycle every fault goes through: fail, report, keep, recover, reopen. */
static void fault_cycle(struct fx *f, const struct fault_case *c)
{
	struct kv_attr a;
	struct kv_stats st;
	int r;

	put(f->kv, "a", "a1", 2);
	assert_int_equal(kv_flush(f->kv), 0);

	fault_arm(c->ops, c->file, c->err, 0, -1, c->short_write);
	put(f->kv, "a", "a2", 2);
	put(f->kv, "b", f->big, BIG);
	assert_int_equal(kv_lookup(f->kv, KV_ROOT_ID, "b", &a), 0);
	r = kv_flush(f->kv);
	if (c->short_write && !c->err) {
		/* A short write is no error: the backend writes the rest. */
		assert_int_equal(r, 0);
	} else {
		if (r != -EIO)
			fail_msg("%s: kv_flush gave %d, want -EIO", c->what, r);
		assert_int_equal(kv_fsync(f->kv, a.id), -EIO);
		kv_get_stats(f->kv, &st);
		assert_true(st.flush_failures > 0);
		assert_int_not_equal(st.backend_error, 0);
		/* Nothing acknowledged is dropped: the buffer still has it all. */
		check(f->kv, "a", "a2", 2);
		check(f->kv, "b", f->big, BIG);
	}
	if (fault_hits() == 0)
		fail_msg("%s: the fault never hit", c->what);
	total_faults += fault_hits();
	fault_clear();
	/* Recovery needs nobody: the retrying flusher gets through. */
	f->o.backend_timeout_ms = 10000;
	kv_reconfigure(f->kv, &f->o);
	r = kv_flush(f->kv);
	if (r)
		fail_msg("%s: kv_flush after the fault was lifted: %s", c->what, strerror(-r));
	kv_get_stats(f->kv, &st);
	assert_int_equal(st.backend_error, 0);
	assert_int_equal(close_kv(f), 0);
	reopen(f);
	check(f->kv, "a", "a2", 2);
	check(f->kv, "b", f->big, BIG);
}

static const struct fault_case cases[] = {
	{ "value file write EIO", F_WRITE, "/values/", EIO, false },
	{ "value file write ENOSPC", F_WRITE, "/values/", ENOSPC, false },
	{ "journal write EIO", F_WRITE, "/journal.", EIO, false },
	{ "journal write ENOSPC", F_WRITE, "/journal.", ENOSPC, false },
	{ "journal cut short then ENOSPC", F_WRITE, "/journal.", ENOSPC, true },
	{ "every fsync EIO", F_FSYNC, NULL, EIO, false },
	{ "journal fdatasync EIO", F_FSYNC, "/journal.", EIO, false },
	{ "value fsync EIO", F_FSYNC, "/values/", EIO, false },
	{ "value file create EIO", F_CREATE, "/values/", EIO, false },
	{ "value file create ENOSPC", F_CREATE, "/values/", ENOSPC, false },
	{ "short writes everywhere", F_WRITE, NULL, 0, true },
};

static void test_each_fault(void **state)
{
	struct fx *f = *state;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		print_message("fault: %s\n", cases[i].what);
		f->o.backend_timeout_ms = 400;
		kv_reconfigure(f->kv, &f->o);
		fault_cycle(f, &cases[i]);
	}
}

/*
 * The daemon dies while the fault lasts (kv_close cannot flush: it says so):
 * what was committed before is all there at the next open, and the open
 * needs no repair.
 */
static void test_journal_cut_midway_then_crash(void **state)
{
	struct fx *f = *state;

	put(f->kv, "a", "a1", 2);
	put(f->kv, "c", f->big, BIG);
	assert_int_equal(kv_flush(f->kv), 0);
	/* Every journal write halved: the record is cut inside its frame,
	 * then the last byte fails. */
	fault_arm(F_WRITE, "/journal.", ENOSPC, 0, -1, true);
	put(f->kv, "a", "a2", 2);
	put(f->kv, "b", "b1", 2);
	assert_int_equal(kv_flush(f->kv), -EIO);
	/* The process ends with the fault: kv_close says it lost the buffer. */
	assert_int_not_equal(close_kv(f), 0);
	total_faults += fault_hits();
	fault_clear();
	reopen(f);
	check(f->kv, "a", "a1", 2);
	check(f->kv, "b", NULL, 0);
	check(f->kv, "c", f->big, BIG);
	/* And the store takes new commits on the same journal. */
	put(f->kv, "b", "b2", 2);
	assert_int_equal(close_kv(f), 0);
	reopen(f);
	check(f->kv, "b", "b2", 2);
}

/* The same with the journal's fdatasync failing, so the undo fails too. */
static void test_journal_sync_fails_then_crash(void **state)
{
	struct fx *f = *state;
	struct kv_attr a;
	char buf[8];
	ssize_t n;

	put(f->kv, "a", "a1", 2);
	assert_int_equal(kv_flush(f->kv), 0);
	fault_arm(F_FSYNC, "/journal.", EIO, 0, -1, false);
	put(f->kv, "a", "a2", 2);
	assert_int_equal(kv_flush(f->kv), -EIO);
	assert_int_not_equal(close_kv(f), 0);
	total_faults += fault_hits();
	fault_clear();
	reopen(f);
	/* Never acknowledged: either is right (the commit may be whole in the
	 * journal), but nothing else. */
	assert_int_equal(kv_lookup(f->kv, KV_ROOT_ID, "a", &a), 0);
	n = kv_read(f->kv, a.id, buf, sizeof(buf), 0);
	assert_int_equal(n, 2);
	assert_true(!memcmp(buf, "a1", 2) || !memcmp(buf, "a2", 2));
}

/* Compaction writes a snapshot; cut off anywhere, the store still opens. */
static void test_snapshot_faults(void **state)
{
	struct fx *f = *state;
	static const struct fault_case snap[] = {
		{ "snapshot write ENOSPC", F_WRITE, "snapshot.tmp", ENOSPC, false },
		{ "snapshot cut short then EIO", F_WRITE, "snapshot.tmp", EIO, true },
		{ "snapshot fsync EIO", F_FSYNC, "snapshot.tmp", EIO, false },
		{ "snapshot rename EIO", F_RENAME, "snapshot", EIO, false },
	};
	char name[32], val[64];
	int round = 0;

	/* Compaction after (nearly) every commit. */
	kv_fs_set_compact_threshold(1024);
	for (size_t i = 0; i < sizeof(snap) / sizeof(snap[0]); i++) {
		print_message("fault: %s\n", snap[i].what);
		fault_arm(snap[i].ops, snap[i].file, snap[i].err, 0, -1, snap[i].short_write);
		for (int k = 0; k < 40; k++, round++) {
			snprintf(name, sizeof(name), "k%02d", k);
			snprintf(val, sizeof(val), "round %d key %d", round, k);
			put(f->kv, name, val, strlen(val));
			/* A failed compaction never fails the commit before it. */
			assert_int_equal(kv_flush(f->kv), 0);
		}
		if (fault_hits() == 0)
			fail_msg("%s: the fault never hit", snap[i].what);
		total_faults += fault_hits();
		/* Closing and opening with the fault still there: the open's own
		 * compaction fails too, and the store opens all the same. */
		assert_int_equal(close_kv(f), 0);
		reopen(f);
		for (int k = 0; k < 40; k++) {
			snprintf(name, sizeof(name), "k%02d", k);
			snprintf(val, sizeof(val), "round %d key %d", round - 40 + k, k);
			check(f->kv, name, val, strlen(val));
		}
		fault_clear();
	}
	kv_fs_set_compact_threshold(8u << 20);
}

static void test_report(void **state)
{
	(void)state;
	print_message("faults injected: %d, nothing acknowledged lost\n", total_faults);
}

#define T(t) cmocka_unit_test_setup_teardown(t, setup, teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		T(test_each_fault),
		T(test_journal_cut_midway_then_crash),
		T(test_journal_sync_fails_then_crash),
		T(test_snapshot_faults),
		cmocka_unit_test(test_report),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
