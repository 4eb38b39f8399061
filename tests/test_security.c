/*
 * Security (issue 9): no key, tag, xattr, transaction or backup name makes
 * the daemon touch a path outside its data and backup directories, not even
 * through symlinks planted in the data directory; without allow_other
 * another user cannot use the mount; .nadb/ is private; the Redis password
 * is never in the daemon's argv, its log, .nadb/stats or /proc/self/mounts.
 *
 * "Outside" is checked with snapshots taken before and after: of a canary
 * tree root/outside (where every ../ trick below points), of the names at
 * the top of the test's root, and of anything named *nadbevil* in the root
 * or in the directories above it that a name could reach (outside_state).
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>
#include <cmocka.h>

#include "mnt.h"
#include "redis_server.h"

/*
 * The canary tree, the top of root, any *nadbevil* two levels into root, and
 * any *nadbevil* where a ../ or absolute name can land above root: root's
 * parent (/tmp) and its outside/. Only those two directories above root are
 * listed, never walked: a walk of /tmp enters the trees of tests running
 * beside this one and their live mounts, and a directory of theirs held open
 * makes their umount(2) fail with EBUSY (and their keys show up here).
 */
static char *outside_state(struct mnt *m)
{
	char *snap = tree_snapshot(mnt_str(m, "%s/outside", m->root)), *top = NULL, *in = NULL,
	     *above = NULL, *all;
	const char *root = shq(m, m->root);

	run_cmd_out(&top, "ls -a %s", root);
	run_cmd_out(&in, "find %s -maxdepth 2 -name '*nadbevil*' 2>/dev/null", root);
	run_cmd_out(&above, "ls -1d %s/../*nadbevil* %s/../outside/*nadbevil* 2>/dev/null", root,
		    root);
	assert_true(asprintf(&all, "%s\n--\n%s\n--\n%s\n--\n%s", snap, top, in, above) > 0);
	free(snap);
	free(top);
	free(in);
	free(above);
	return all;
}

static void make_outside(struct mnt *m)
{
	mnt_init(m);
	ASSERT_SYS(mkdir(mnt_str(m, "%s/outside", m->root), 0755));
	put_str(mnt_str(m, "%s/outside/canary", m->root), "untouched");
}

/* Writes one command to .nadb/ctl; the reply does not matter here. */
static void ctl(struct mnt *m, const char *cmd)
{
	int fd = open(mnt_path(m, ".nadb/ctl"), O_RDWR | O_CLOEXEC);
	char buf[512];

	ASSERT_SYS(fd);
	if (write(fd, cmd, strlen(cmd)) >= 0)
		(void)!pread(fd, buf, sizeof(buf), 0);
	close(fd);
}

static void test_names_stay_inside(void **state)
{
	struct mnt *m = *state;
	static const char *const names[] = {
		"..%2F..%2Foutside%2Fnadbevil", "%2F..%2Fnadbevil", "..%2F", "%2e%2e",
		"...", ". .", "a\\..\\nadbevil", "%252F..%252Fnadbevil", "-nadbevil",
	};
	char longname[256], *before, *after;

	make_outside(m);
	mnt_start(m, NULL);
	/* After the start: data/ and daemon.log are the daemon's own. */
	before = outside_state(m);
	memset(longname, 'x', 255);
	longname[255] = '\0';
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		const char *p = mnt_path(m, "%s", names[i]);

		put_str(p, "v");
		/* Tag, xattr and TTL values shaped like paths go nowhere either. */
		ASSERT_ERRNO(setxattr(p, "user.tags", "../../nadbevil", 14, 0), EINVAL);
		ASSERT_SYS(setxattr(p, "user.x/../../nadbevil", "../../outside", 13, 0));
		ASSERT_SYS(setxattr(p, "user.tags", "nadbevil.", 9, 0));
		ASSERT_ERRNO(setxattr(p, "user.ttl", "../1", 4, 0), EINVAL);
		ASSERT_ERRNO(mkdir(mnt_path(m, "tags/..%%2Fnadbevil"), 0755), EINVAL);
		ASSERT_SYS(rename(p, mnt_path(m, "%s.moved", names[i])));
	}
	put_str(mnt_path(m, "%s", longname), "long");
	ASSERT_ERRNO(open(mnt_path(m, "%sy", longname), O_CREAT | O_WRONLY, 0644), ENAMETOOLONG);
	ASSERT_SYS(mkdir(mnt_path(m, "d"), 0755));
	put_str(mnt_path(m, "d/%s", longname), "deep");
	/* Transactions and backups named like paths. */
	static const char *const cmds[] = {
		"tx begin ../../outside/nadbevil\n", "tx begin ..\n", "tx begin a/b\n",
		"tx begin %2F..%2Fnadbevil\n", "tx commit ../../outside/canary\n",
		"tx abort ../..\n", "backup create ../../outside/nadbevil\n",
		"backup create ..\n", "backup create /tmp/nadbevil\n",
		"backup verify ../../outside\n", "backup restore ../../outside\n",
		"backup restore /tmp\n", "backup prune ../../outside\n",
		"backup create %2F..%2F..%2Fnadbevil\n",
	};
	for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++)
		ctl(m, cmds[i]);
	mnt_restart(m, NULL);
	assert_file_str(mnt_path(m, "d/%s", longname), "deep");
	mnt_stop(m);
	after = outside_state(m);
	assert_string_equal(after, before);
	free(before);
	free(after);
}

/*
 * Symlinks planted in the data directory where value subdirectories go:
 * the daemon may fail, but must not write through them.
 */
static void test_symlinks_in_data_dir(void **state)
{
	struct mnt *m = *state;
	char *before, *after, *vals = NULL;

	if (mnt_default_backend() == MNT_BACKEND_REDIS)
		skip();
	make_outside(m);
	mnt_start(m, NULL);
	put_str(mnt_path(m, "first"), "v");
	mnt_stop(m);
	run_cmd_out(&vals, "find %s -type d -name values", shq(m, m->data));
	vals[strcspn(vals, "\n")] = '\0';
	assert_true(vals[0] == '/');
	/* Every value subdirectory not made yet is a link to the canary tree. */
	for (int i = 0; i < 256; i++) {
		const char *p = mnt_str(m, "%s/%02x", vals, i);

		if (access(p, F_OK))
			ASSERT_SYS(symlink(mnt_str(m, "%s/outside", m->root), p));
	}
	free(vals);
	before = outside_state(m);
	mnt_start(m, "backend_timeout=1s");
	m->errors_expected = true;
	for (int i = 0; i < 32; i++)
		put_str(mnt_path(m, "k%d", i), "nadbevil");
	/* The values cannot land anywhere: fsync says so, and the log why. */
	{
		int fd = open(mnt_path(m, "k31"), O_WRONLY | O_CLOEXEC);
		char *log;

		ASSERT_SYS(fd);
		assert_int_equal(fsync(fd), -1);
		assert_int_equal(errno, EIO);
		close(fd);
		log = mnt_log_text(m);
		assert_non_null(strstr(log, "is not a directory"));
		free(log);
	}
	mnt_kill(m);
	after = outside_state(m);
	assert_string_equal(after, before);
	free(before);
	free(after);
}

static void test_other_users_kept_out(void **state)
{
	struct mnt *m = *state;
	struct stat st;
	char *out = NULL;
	int r;

	make_outside(m);
	mnt_start(m, NULL);
	put_str(mnt_path(m, "k"), "secret");
	ASSERT_SYS(chmod(mnt_path(m, "k"), 0644));
	/* So that only the mount itself can stop nobody. */
	ASSERT_SYS(chmod(m->root, 0755));
	ASSERT_SYS(chmod(mnt_str(m, "%s/outside/canary", m->root), 0644));
	r = run_cmd("setpriv --reuid=65534 --regid=65534 --clear-groups cat %s",
		    shq(m, mnt_str(m, "%s/outside/canary", m->root)));
	assert_int_equal(r, 0); /* the same path shape is readable off the mount */
	r = run_cmd_out(&out, "setpriv --reuid=65534 --regid=65534 --clear-groups cat %s",
			shq(m, mnt_path(m, "k")));
	if (r == 0 || !strstr(out, "ermission denied"))
		fail_msg("another user read the mount without allow_other: %d %s", r, out);
	free(out);
	/* .nadb/ is private, ctl too. */
	ASSERT_SYS(stat(mnt_path(m, ".nadb"), &st));
	assert_int_equal(st.st_mode & 07777, 0700);
	ASSERT_SYS(stat(mnt_path(m, ".nadb/ctl"), &st));
	assert_int_equal(st.st_mode & 0077, 0);
	ASSERT_SYS(stat(mnt_path(m, ".nadb/stats"), &st));
	assert_int_equal(st.st_mode & 0077, 0);
	ASSERT_SYS(chmod(m->root, 0700));
	mnt_stop(m);
}

/* secret is in none of /proc/mounts, m's stats and, once m is stopped,
 * its log. */
static void assert_secret_not_shown(struct mnt *m, const char *secret)
{
	const char *where[] = { "/proc/self/mounts", mnt_path(m, ".nadb/stats") };
	char *text;

	for (size_t i = 0; i < sizeof(where) / sizeof(where[0]); i++) {
		text = read_file(where[i], NULL);
		assert_non_null(text);
		if (strstr(text, secret))
			fail_msg("%s shows the password", where[i]);
		free(text);
	}
	mnt_stop(m);
	text = mnt_log_text(m);
	if (strstr(text, secret))
		fail_msg("the log shows the password");
	free(text);
}

/*
 * A write by a user without CAP_FSETID drops set-user-ID, and set-group-ID
 * where group execute is set, as on any Linux filesystem: through the page
 * cache (read-write opens) the kernel does it, with direct I/O (write-only
 * opens) the daemon does. Root keeps the bits.
 */
static void test_write_drops_setid_bits(void **state)
{
	struct mnt *m = *state;
	const char *as_nobody = "setpriv --reuid=65534 --regid=65534 --clear-groups";

	mnt_start(m, "allow_other,attr_timeout=60s");
	ASSERT_SYS(chmod(m->root, 0755));
	for (int i = 0; i < 4; i++) {
		put_str(mnt_path(m, "k%d", i), "v");
		ASSERT_SYS(chmod(mnt_path(m, "k%d", i), i == 2 ? 06767 : 06777));
	}
	/* Write-only (direct I/O) and read-write (page cache) opens. */
	assert_int_equal(run_cmd("%s sh -c 'echo x >> %s'", as_nobody, shq(m, mnt_path(m, "k0"))),
			 0);
	assert_int_equal(run_cmd("%s sh -c 'echo x 1<> %s'", as_nobody, shq(m, mnt_path(m, "k1"))),
			 0);
	/* Without group execute, set-group-ID stays (it marks mandatory locking). */
	assert_int_equal(run_cmd("%s sh -c 'echo x >> %s'", as_nobody, shq(m, mnt_path(m, "k2"))),
			 0);
	put_str(mnt_path(m, "k3"), "root writes");
	assert_int_equal(mnt_mode(m, "k0"), 0777);
	assert_int_equal(mnt_mode(m, "k1"), 0777);
	assert_int_equal(mnt_mode(m, "k2"), 02767);
	assert_int_equal(mnt_mode(m, "k3"), 06777);
	/* And it is what the store keeps. */
	mnt_restart(m, "allow_other,attr_timeout=60s,suid");
	/*
	 * exec(2) right after such a write must not run set-user-ID: the
	 * kernel's cached mode (kept for attr_timeout) has to go with the bits.
	 * A set-user-ID root copy of id(1), appended to by nobody and run at
	 * once, says whose it runs as.
	 */
	{
		char *out = NULL;

		assert_int_equal(run_cmd("cp /usr/bin/id %s", shq(m, mnt_path(m, "idprog"))), 0);
		ASSERT_SYS(chmod(mnt_path(m, "idprog"), 04777));
		assert_int_equal(mnt_mode(m, "idprog"), 04777);
		assert_int_equal(run_cmd_out(&out, "%s sh -c 'echo >> %s && %s -u'", as_nobody,
					     shq(m, mnt_path(m, "idprog")),
					     shq(m, mnt_path(m, "idprog"))),
				 0);
		assert_string_equal(out, "65534\n");
		free(out);
	}
	assert_int_equal(mnt_mode(m, "k0"), 0777);
	assert_int_equal(mnt_mode(m, "k2"), 02767);
	assert_file_str(mnt_path(m, "k0"), "vx\n");
	ASSERT_SYS(chmod(m->root, 0700));
	mnt_stop(m);
}

static void test_redis_password_never_shown(void **state)
{
	struct mnt *m = *state;
	struct redis_server srv;
	const char *conf;
	char *text;
	size_t len;

	if (mnt_default_backend() != MNT_BACKEND_REDIS)
		skip();
	m->backend = MNT_BACKEND_FS; /* our own server, with a password */
	mnt_init(m);
	assert_int_equal(redis_server_start(&srv, "pw-Sekrit9"), 0);
	conf = mnt_str(m, "%s/nadbfs.conf", m->root);
	put_str(conf, "[redis]\npassword = pw-Sekrit9\n[log]\nlevel = debug\n");
	ASSERT_SYS(chmod(conf, 0600));
	{
		const char *argv[] = { "-f", "-o", mnt_str(m, "config=%s", conf),
				       mnt_str(m, "redis+unix://%s", srv.sock), m->dir, NULL };

		mnt_spawn_argv(m, argv);
	}
	mnt_wait_mounted_or_fail(m);
	put_str(mnt_path(m, "k"), "v");
	text = read_file(mnt_str(m, "/proc/%d/cmdline", (int)m->pid), &len);
	assert_non_null(text);
	for (size_t i = 0; i < len; i++)
		text[i] = text[i] ? text[i] : ' ';
	assert_null(strstr(text, "Sekrit9"));
	free(text);
	assert_secret_not_shown(m, "Sekrit9");
	redis_server_stop(&srv);
}

/* Where it should not be, in the redis:// URL itself: /proc/mounts, the
 * stats and the log still never show it. */
static void test_redis_password_in_url_never_shown(void **state)
{
	struct mnt *m = *state;
	struct redis_server srv;
	const char *url, *shown;
	char *text;
	size_t len;

	if (mnt_default_backend() != MNT_BACKEND_REDIS)
		skip();
	m->backend = MNT_BACKEND_FS; /* our own server, with a password, on TCP */
	mnt_init(m);
	assert_int_equal(redis_server_start_tcp(&srv, "pw-Url5ecret"), 0);
	url = mnt_str(m, "redis://:pw-Url5ecret@127.0.0.1:%u/3", srv.port);
	{
		const char *argv[] = { "-f", "-o", "log_level=debug", url, m->dir, NULL };

		mnt_spawn_argv(m, argv);
	}
	mnt_wait_mounted_or_fail(m);
	put_str(mnt_path(m, "k"), "v");
	/* The key reaches the server's database 3: the URL was used whole. */
	assert_int_equal(run_cmd("%s -m %s flush >/dev/null", nadbctl_bin(), shq(m, m->dir)), 0);
	text = redis_cli(&srv, "-a pw-Url5ecret --no-auth-warning -n 3 DBSIZE");
	assert_non_null(text);
	assert_true(atoi(text) > 0);
	free(text);
	text = read_file("/proc/self/mounts", &len);
	assert_non_null(text);
	assert_null(strstr(text, "Url5ecret"));
	shown = mnt_str(m, "redis://127.0.0.1:%u/3 %s fuse.nadbfs ", srv.port, m->dir);
	if (!strstr(text, shown))
		fail_msg("/proc/mounts does not show \"%s\":\n%s", shown, text);
	free(text);
	assert_secret_not_shown(m, "Url5ecret");
	redis_server_stop(&srv);
}

#define T(f) cmocka_unit_test_setup_teardown(f, mnt_setup, mnt_teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		T(test_names_stay_inside),
		T(test_symlinks_in_data_dir),
		T(test_other_users_kept_out),
		T(test_write_drops_setid_bits),
		T(test_redis_password_never_shown),
		T(test_redis_password_in_url_never_shown),
	};

	umask(022);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
