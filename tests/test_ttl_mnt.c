/*
 * TTL and permissions on the mount, with the real tools: setfattr/getfattr
 * on user.ttl, expiry seen by stat and ls at once even with long kernel cache
 * timeouts, deadlines kept across rewrite, rename and SIGKILL, default_ttl,
 * and modes enforced for other users (default_permissions, allow_other).
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
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "mnt.h"

static long ttl_of(struct mnt *m, const char *key)
{
	char buf[32];
	ssize_t n = getxattr(mnt_path(m, "%s", key), "user.ttl", buf, sizeof(buf) - 1);

	if (n < 0)
		return -errno;
	buf[n] = 0;
	return strtol(buf, NULL, 10);
}

/* Waits (deadline ms) until path is gone; true if it went. */
static bool wait_gone(const char *path, int deadline_ms)
{
	int64_t until = now_ms() + deadline_ms;
	struct stat st;

	while (now_ms() < until) {
		if (stat(path, &st) && errno == ENOENT)
			return true;
		struct timespec ts = { 0, 20 * 1000000 };
		nanosleep(&ts, NULL);
	}
	return false;
}

static void test_ttl_with_the_tools(void **state)
{
	struct mnt *m = *state;
	char *out = NULL;

	mnt_start(m, NULL);
	put_str(mnt_path(m, "k"), "v");
	assert_int_equal(run_cmd("setfattr -n user.ttl -v 100 %s", shq(m, mnt_path(m, "k"))), 0);
	assert_int_equal(run_cmd_out(&out, "getfattr --absolute-names --only-values -n %s %s",
				     "user.ttl", shq(m, mnt_path(m, "k"))),
			 0);
	assert_string_equal(out, "100");
	free(out);
	/* Bad values: refused, nothing changed. */
	assert_int_not_equal(run_cmd("setfattr -n user.ttl -v 0 %s 2>/dev/null",
				     shq(m, mnt_path(m, "k"))), 0);
	assert_int_not_equal(run_cmd("setfattr -n user.ttl -v -5 %s 2>/dev/null",
				     shq(m, mnt_path(m, "k"))), 0);
	assert_int_not_equal(run_cmd("setfattr -n user.ttl -v soon %s 2>/dev/null",
				     shq(m, mnt_path(m, "k"))), 0);
	assert_int_equal(ttl_of(m, "k"), 100);
	ASSERT_ERRNO(setxattr(mnt_path(m, "k"), "user.nadb.expires", "1", 1, 0), EPERM);
	assert_true(getxattr(mnt_path(m, "k"), "user.nadb.expires", NULL, 0) > 0);
	/* Rewriting and renaming keep it. */
	put_str(mnt_path(m, "k"), "rewritten");
	ASSERT_SYS(rename(mnt_path(m, "k"), mnt_path(m, "k2")));
	assert_true(ttl_of(m, "k2") >= 99);
	/* setfattr -x makes the key permanent again. */
	assert_int_equal(run_cmd("setfattr -x user.ttl %s", shq(m, mnt_path(m, "k2"))), 0);
	assert_int_equal(ttl_of(m, "k2"), -ENODATA);
	ASSERT_SYS(mkdir(mnt_path(m, "d"), 0755));
	ASSERT_ERRNO(setxattr(mnt_path(m, "d"), "user.ttl", "5", 1, 0), ENOTSUP);
	mnt_stop(m);
}

/* Long kernel cache timeouts: only an invalidation can make stat and ls
 * agree with the store right after the deadline. */
static void test_expiry_reaches_kernel_caches(void **state)
{
	struct mnt *m = *state;
	char *out = NULL;
	struct stat st;

	mnt_start(m, "entry_timeout=60s,attr_timeout=60s");
	ASSERT_SYS(mkdir(mnt_path(m, "d"), 0755));
	put_str(mnt_path(m, "d/short"), "v");
	put_str(mnt_path(m, "d/stays"), "v");
	ASSERT_SYS(setxattr(mnt_path(m, "d/short"), "user.ttl", "1", 1, 0));
	ASSERT_SYS(stat(mnt_path(m, "d/short"), &st)); /* now in the kernel's caches */
	assert_int_equal(run_cmd_out(&out, "ls %s", shq(m, mnt_path(m, "d"))), 0);
	assert_string_equal(out, "short\nstays\n");
	free(out);
	/* Nothing touches the store: the kernel must be told. */
	assert_true(wait_gone(mnt_path(m, "d/short"), 5000));
	assert_int_equal(run_cmd_out(&out, "ls %s", shq(m, mnt_path(m, "d"))), 0);
	assert_string_equal(out, "stays\n");
	free(out);
	mnt_restart(m, NULL);
	ASSERT_ERRNO(stat(mnt_path(m, "d/short"), &st), ENOENT);
	assert_file_str(mnt_path(m, "d/stays"), "v");
	mnt_stop(m);
}

static void test_deadline_survives_sigkill(void **state)
{
	struct mnt *m = *state;
	int fd;

	mnt_start(m, "flush_interval=1h");
	put_str(mnt_path(m, "k"), "v");
	ASSERT_SYS(setxattr(mnt_path(m, "k"), "user.ttl", "300", 3, 0));
	fd = open(mnt_path(m, "k"), O_RDONLY);
	assert_true(fd >= 0);
	ASSERT_SYS(fsync(fd));
	close(fd);
	mnt_kill(m);
	mnt_start(m, NULL);
	assert_true(ttl_of(m, "k") > 290 && ttl_of(m, "k") <= 300);
	mnt_stop(m);
}

static void test_default_ttl_applies_to_new_keys(void **state)
{
	struct mnt *m = *state;

	mnt_start(m, "default_ttl=120");
	put_str(mnt_path(m, "new"), "v");
	assert_true(ttl_of(m, "new") > 115 && ttl_of(m, "new") <= 120);
	mnt_stop(m);
}

static void test_modes_enforced_for_other_users(void **state)
{
	struct mnt *m = *state;
	const char *as_nobody = "setpriv --reuid=65534 --regid=65534 --clear-groups";

	mnt_start(m, "allow_other");
	/* Our private temp tree must be traversable for the other user. */
	ASSERT_SYS(chmod(m->root, 0755));
	put_str(mnt_path(m, "mine"), "secret");
	ASSERT_SYS(chmod(mnt_path(m, "mine"), 0644));
	assert_int_equal(run_cmd("%s cat %s >/dev/null", as_nobody, shq(m, mnt_path(m, "mine"))),
			 0);
	assert_int_not_equal(run_cmd("%s sh -c 'echo x >> %s' 2>/dev/null", as_nobody,
				     shq(m, mnt_path(m, "mine"))),
			     0);
	ASSERT_SYS(chmod(mnt_path(m, "mine"), 0600));
	assert_int_not_equal(run_cmd("%s cat %s >/dev/null 2>&1", as_nobody,
				     shq(m, mnt_path(m, "mine"))),
			     0);
	assert_int_not_equal(run_cmd("%s touch %s 2>/dev/null", as_nobody,
				     shq(m, mnt_path(m, "new"))),
			     0);
	assert_file_str(mnt_path(m, "mine"), "secret");
	mnt_stop(m);
}

#define T(f) cmocka_unit_test_setup_teardown(f, mnt_setup, mnt_teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		T(test_ttl_with_the_tools),
		T(test_expiry_reaches_kernel_caches),
		T(test_deadline_survives_sigkill),
		T(test_default_ttl_applies_to_new_keys),
		T(test_modes_enforced_for_other_users),
	};

	return cmocka_run_group_tests_name("ttl_mnt", tests, NULL, NULL);
}
