/*
 * The races of the page cache pushes (fs/fs_push.c), made to happen: the
 * daemon under test is $NADBFS_RACE_BIN, nadbfs with each push held between
 * its copy of a value and its store into the kernel's page cache, and again
 * between the store and its second look at the value
 * (tests/push_race_shim.c). The test makes the racing change or read while
 * a push is held, and checks that no reader ever gets the value the push
 * copied once a newer one was written. test_page_cache.c has the same
 * rules run at full speed, where these windows are rarely hit.
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
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "mnt.h"

/* Each hold of the shim. Two holds of one push stay well below the 2 s an
 * open waits for a push at most (fs_push.c, FS_PUSH_WAIT_MS). */
#define RACE_HOLD_MS "400"

/* $NADBFS_BIN as meson set it, put back after each test. */
static char *normal_bin;

/* Starts the race daemon on m, its markers in m->root/race. */
static void race_start(struct mnt *m)
{
	const char *bin = getenv("NADBFS_RACE_BIN");

	if (!bin || access(bin, X_OK))
		fail_msg("NADBFS_RACE_BIN is not an executable: run through `meson test`");
	mnt_init(m);
	ASSERT_SYS(mkdir(mnt_str(m, "%s/race", m->root), 0755));
	/* The daemon inherits these; the harness reads NADBFS_BIN when it
	 * spawns. */
	ASSERT_SYS(setenv("NADBFS_RACE_DIR", mnt_str(m, "%s/race", m->root), 1));
	ASSERT_SYS(setenv("NADBFS_RACE_MS", RACE_HOLD_MS, 1));
	ASSERT_SYS(setenv("NADBFS_BIN", bin, 1));
	/* No flush meanwhile: a pushed value must still be in memory when its
	 * push comes, however long the holds before it took. */
	mnt_start(m, "flush_interval=1h");
}

static int race_setup(void **state)
{
	free(normal_bin);
	normal_bin = strdup(nadbfs_bin());
	return normal_bin ? mnt_setup(state) : -1;
}

/* Also after a failed test: the next one gets the normal daemon back. */
static int race_teardown(void **state)
{
	setenv("NADBFS_BIN", normal_bin, 1);
	unsetenv("NADBFS_RACE_DIR");
	unsetenv("NADBFS_RACE_MS");
	return mnt_teardown(state);
}

static uint64_t ino_of(const char *path)
{
	struct stat st;

	ASSERT_SYS(stat(path, &st));
	return st.st_ino;
}

static bool marked(struct mnt *m, const char *what, uint64_t ino, int k)
{
	return !access(mnt_str(m, "%s/race/%s.%llu.%d", m->root, what, (unsigned long long)ino, k),
		       F_OK);
}

/* Waits until the push of ino reached the point what (its k-th push), or
 * the push of other (its first) did, whichever comes first. */
static void wait_mark(struct mnt *m, const char *what, uint64_t ino, int k, uint64_t other)
{
	for (int64_t deadline = now_ms() + 10000;; usleep(1000)) {
		if (marked(m, what, ino, k) || (other && marked(m, "copied", other, 1)))
			return;
		if (now_ms() > deadline)
			fail_msg("no push of inode %llu reached \"%s\"", (unsigned long long)ino,
				 what);
	}
}

static void assert_pread(int fd, const char *want)
{
	char buf[64];
	ssize_t n;

	ASSERT_SYS(n = pread(fd, buf, sizeof(buf) - 1, 0));
	buf[n] = '\0';
	assert_string_equal(buf, want);
}

/*
 * An open waits for a push of its key under way. Here the push of "one!" is
 * held after its copy while a writer overwrites the value with "two!" and a
 * reader opens; if neither open waited, the store would put "one!" into the
 * page cache behind both, and the reader would read it from there. (Same
 * length: the store then fills the page completely, so the kernel keeps it.)
 */
static void test_open_waits_for_push(void **state)
{
	struct mnt *m = *state;
	const char *p;
	uint64_t ino;
	int r, w;

	race_start(m);
	p = mnt_path(m, "k");
	put_str(p, "one!");
	ino = ino_of(p);
	wait_mark(m, "copied", ino, 1, 0);
	/* Not O_TRUNC: a truncating open waits for the push on that account
	 * too (fs_file.c), and this test is about the wait of every open. */
	ASSERT_SYS(w = open(p, O_WRONLY | O_CLOEXEC));
	assert_int_equal(pwrite(w, "two!", 4, 0), 4);
	ASSERT_SYS(close(w));
	ASSERT_SYS(r = open(p, O_RDONLY | O_CLOEXEC));
	wait_mark(m, "stored", ino, 1, 0);
	assert_pread(r, "two!");
	ASSERT_SYS(close(r));
	assert_file_str(p, "two!");
	mnt_stop(m);
}

/*
 * A push skips a key with a handle open. The push of k waits behind the
 * held push of a while k is opened read-write; if it went ahead, it would
 * copy "one!", and store it after the handle wrote "two!" through the page
 * cache, which the handle would then read back. z, queued after k, tells
 * that k's push is over when k's never reaches the shim.
 */
static void test_push_skips_open_key(void **state)
{
	struct mnt *m = *state;
	const char *a, *k, *z;
	uint64_t ino_k, ino_z;
	int h;

	race_start(m);
	a = mnt_path(m, "a");
	k = mnt_path(m, "k");
	z = mnt_path(m, "z");
	put_str(a, "aaaa");
	wait_mark(m, "copied", ino_of(a), 1, 0);
	put_str(k, "one!");
	put_str(z, "zzzz");
	ino_k = ino_of(k);
	ino_z = ino_of(z);
	ASSERT_SYS(h = open(k, O_RDWR | O_CLOEXEC));
	wait_mark(m, "copied", ino_k, 1, ino_z);
	assert_int_equal(pwrite(h, "two!", 4, 0), 4);
	wait_mark(m, "stored", ino_k, 1, ino_z);
	assert_pread(h, "two!");
	ASSERT_SYS(close(h));
	assert_file_str(k, "two!");
	mnt_stop(m);
}

#define T(f) cmocka_unit_test_setup_teardown(f, race_setup, race_teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		T(test_open_waits_for_push),
		T(test_push_skips_open_key),
	};

	int failed;

	umask(022);
	failed = cmocka_run_group_tests(tests, NULL, NULL);
	free(normal_bin);
	return failed;
}
