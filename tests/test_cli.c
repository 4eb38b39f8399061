/*
 * The nadbfs command line and daemon life cycle (spec sections 1 and 10):
 * --help/--version, refusals with clear messages and a non-zero exit,
 * daemonized mode returning only once the mount is usable, the fstab and
 * mount.fuse3 forms, ignored mount options, config files and SIGHUP.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>

#include <jansson.h>

#include "mnt.h"

static void assert_no_sanitizer(const char *out)
{
	if (strstr(out, "AddressSanitizer") || strstr(out, "LeakSanitizer") ||
	    strstr(out, "runtime error"))
		fail_msg("sanitizer report in the output:\n%s", out);
}

static void assert_mentions(const char *out, const char *what)
{
	if (!strstr(out, what))
		fail_msg("the message does not mention \"%s\":\n%s", what, out);
}

/*
 * Runs nadbfs in the foreground with argv and requires it to exit non-zero
 * without mounting; returns what it printed (malloc'd).
 */
static char *expect_refusal(struct mnt *m, const char *const *argv)
{
	int st = 0, r;
	char *out;

	mnt_init(m);
	mnt_spawn_argv(m, argv);
	r = mnt_wait_mounted(m, 10000, &st);
	if (r == 0)
		fail_msg("nadbfs mounted %s despite bad input (%s ...)", m->dir, argv[0]);
	if (r == -ETIMEDOUT)
		fail_msg("nadbfs neither mounted nor exited within 10 s (%s ...)", argv[0]);
	out = mnt_log_text(m);
	if (!WIFEXITED(st) || WEXITSTATUS(st) == 0)
		fail_msg("nadbfs on bad input: wait status 0x%x, want a non-zero exit; output:\n%s",
			 st, out);
	if (!*out)
		fail_msg("nadbfs refused bad input without saying why");
	assert_no_sanitizer(out);
	return out;
}

static void test_help(void **state)
{
	struct mnt *m = *state;
	char *out = NULL;

	mnt_init(m);
	assert_int_equal(run_cmd_out(&out, "%s --help", shq(m, nadbfs_bin())), 0);
	if (!strcasestr(out, "usage"))
		fail_msg("--help prints no usage line:\n%s", out);
	assert_mentions(out, "-o");
	if (!strcasestr(out, "mountpoint"))
		fail_msg("--help does not name the MOUNTPOINT argument:\n%s", out);
	free(out);
	assert_int_equal(run_cmd_out(&out, "%s -h", shq(m, nadbfs_bin())), 0);
	if (!strcasestr(out, "usage"))
		fail_msg("-h prints no usage line:\n%s", out);
	free(out);
}

/* The version meson.build declares. */
static char *project_version(void)
{
	const char *root = getenv("NADBFS_SOURCE_ROOT");
	char *path, *text, *p, *end, *v;

	if (!root)
		fail_msg("NADBFS_SOURCE_ROOT is not set");
	assert_true(asprintf(&path, "%s/meson.build", root) > 0);
	text = read_file(path, NULL);
	if (!text)
		fail_msg("%s: %s", path, strerror(errno));
	p = strstr(text, "version:");
	assert_non_null(p);
	p = strchr(p, '\'');
	assert_non_null(p);
	end = strchr(++p, '\'');
	assert_non_null(end);
	v = strndup(p, (size_t)(end - p));
	free(text);
	free(path);
	return v;
}

static void test_version(void **state)
{
	struct mnt *m = *state;
	char *out = NULL, *v = project_version();

	mnt_init(m);
	assert_int_equal(run_cmd_out(&out, "%s --version", shq(m, nadbfs_bin())), 0);
	assert_mentions(out, v);
	free(out);
	free(v);
}

static void test_bad_options_refused(void **state)
{
	struct mnt *m = *state;
	char *out;

	mnt_init(m);
	{
		const char *argv[] = { "-f", "-o", "no_such_option=1", m->data, m->dir, NULL };

		out = expect_refusal(m, argv);
		assert_mentions(out, "no_such_option");
		free(out);
	}
	{
		const char *argv[] = { "-f", "-o", "flush_interval=soon", m->data, m->dir, NULL };

		out = expect_refusal(m, argv);
		assert_mentions(out, "flush_interval");
		free(out);
	}
	{
		const char *argv[] = { "-f", "--no-such-flag", m->data, m->dir, NULL };

		out = expect_refusal(m, argv);
		assert_mentions(out, "no-such-flag");
		free(out);
	}
	/* Without -f the refusal comes before daemonizing: the command itself fails. */
	assert_int_not_equal(run_cmd_out(&out, "%s -o no_such_option=1 %s %s", shq(m, nadbfs_bin()),
					 m->data, m->dir), 0);
	assert_mentions(out, "no_such_option");
	free(out);
	assert_false(is_mounted(m->dir, NULL, 0, NULL, 0));
}

static void check_bad_config(struct mnt *m, const char *name, const char *text, int line)
{
	const char *conf = mnt_str(m, "%s/%s", m->root, name);
	const char *opt = mnt_str(m, "config=%s", conf);
	const char *argv[] = { "-f", "-o", opt, m->data, m->dir, NULL };
	char *out;

	put_str(conf, text);
	out = expect_refusal(m, argv);
	assert_mentions(out, mnt_str(m, "%s:%d:", conf, line));
	free(out);
}

static void test_bad_config_refused(void **state)
{
	struct mnt *m = *state;
	char *out = NULL;

	mnt_init(m);
	check_bad_config(m, "key.conf", "[store]\nflush_interval = 1s\nno_such_key = 1\n", 3);
	check_bad_config(m, "section.conf", "# comment\n[no_such_section]\n", 2);
	check_bad_config(m, "value.conf", "[store]\nbuffer_size = lots\n", 2);
	check_bad_config(m, "syntax.conf", "[store]\n\nthis is not ini\n", 3);
	/* A missing file is refused too. */
	{
		const char *argv[] = { "-f", "-o", mnt_str(m, "config=%s/absent.conf", m->root),
				       m->data, m->dir, NULL };

		out = expect_refusal(m, argv);
		assert_mentions(out, "absent.conf");
		free(out);
	}
	/* Daemonized: the command fails and says where. */
	assert_int_not_equal(run_cmd_out(&out, "%s -o config=%s/key.conf %s %s",
					 shq(m, nadbfs_bin()), m->root, m->data, m->dir), 0);
	assert_mentions(out, mnt_str(m, "%s/key.conf:3:", m->root));
	free(out);
}

static void test_missing_mountpoint_refused(void **state)
{
	struct mnt *m = *state;
	char *out;

	mnt_init(m);
	{
		const char *argv[] = { "-f", m->data, NULL };

		out = expect_refusal(m, argv);
		free(out);
	}
	{
		const char *argv[] = { "-f", NULL };

		out = expect_refusal(m, argv);
		free(out);
	}
	{
		const char *missing = mnt_str(m, "%s/no-such-dir", m->root);
		const char *argv[] = { "-f", m->data, missing, NULL };

		out = expect_refusal(m, argv);
		assert_mentions(out, "no-such-dir");
		free(out);
	}
}

static void test_source_regular_file_refused(void **state)
{
	struct mnt *m = *state;
	const char *file;
	char *out;

	mnt_init(m);
	file = mnt_str(m, "%s/plain-file", m->root);
	put_str(file, "not a directory");
	{
		const char *argv[] = { "-f", file, m->dir, NULL };

		out = expect_refusal(m, argv);
		assert_mentions(out, "plain-file");
		free(out);
	}
	assert_file_str(file, "not a directory");
}

/* After a daemonized start returned: mounted as fuse.nadbfs of data, and usable at once. */
static void check_daemon_ready(struct mnt *m)
{
	char type[64] = "", source[PATH_MAX] = "";
	pid_t pid;

	if (!is_mounted(m->dir, type, sizeof(type), source, sizeof(source)))
		fail_msg("nadbfs returned before %s was mounted", m->dir);
	assert_string_equal(type, "fuse.nadbfs");
	assert_string_equal(source, m->data);
	put_str(mnt_path(m, "ready"), "yes");
	assert_file_str(mnt_path(m, "ready"), "yes");
	pid = find_pid_by_arg(m->data);
	if (!pid)
		fail_msg("no nadbfs process serving %s", m->dir);
	/* The subreaper made the daemon our child: mnt_stop can check its exit. */
	mnt_adopt(m, pid);
	mnt_stop(m);
}

static void test_daemonized_ready_on_return(void **state)
{
	struct mnt *m = *state;
	char *out = NULL;

	mnt_init(m);
	assert_int_equal(run_cmd_out(&out, "%s -o log_file=%s %s %s", shq(m, nadbfs_bin()), m->log,
				     m->data, m->dir), 0);
	assert_no_sanitizer(out);
	free(out);
	check_daemon_ready(m);
}

static void test_fstab_argument_order(void **state)
{
	struct mnt *m = *state;

	mnt_init(m);
	assert_int_equal(run_cmd("%s %s %s -o log_file=%s", shq(m, nadbfs_bin()), m->data, m->dir,
				 m->log), 0);
	check_daemon_ready(m);
}

static void test_ignored_mount_options(void **state)
{
	struct mnt *m = *state;

	mnt_start(m, "_netdev,nofail,noauto,x-systemd.automount,x-systemd.device-timeout=10,"
		     "dev,suid");
	put_str(mnt_path(m, "k"), "v");
	assert_file_str(mnt_path(m, "k"), "v");
	mnt_stop(m);
}

/* A directory to put first in PATH, holding nadbfs for mount.fuse3 to find. */
static const char *helper_path(struct mnt *m)
{
	const char *bin = mnt_str(m, "%s/bin", m->root);

	ASSERT_SYS(mkdir(bin, 0755));
	ASSERT_SYS(symlink(nadbfs_bin(), mnt_str(m, "%s/nadbfs", bin)));
	return bin;
}

static void test_mount_fuse3_helper(void **state)
{
	struct mnt *m = *state;
	char *out = NULL;
	int r;

	mnt_init(m);
	r = run_cmd_out(&out, "PATH=%s:$PATH mount.fuse3 %s %s -t nadbfs -o log_file=%s,_netdev,"
			"nofail,x-systemd.automount", helper_path(m), m->data, m->dir, m->log);
	if (r)
		fail_msg("mount.fuse3: exit status %d:\n%s", r, out);
	free(out);
	check_daemon_ready(m);
}

/*
 * mount(8) runs its helpers with PATH removed, so mount.fuse3 only finds
 * nadbfs in the default PATH. A private mount namespace lends it one: our bin
 * directory bound over /usr/local/sbin, seen by nothing outside. The mount
 * lives in that namespace too: the checks run there, and so does the unmount.
 */
static void test_mount_t_fuse_nadbfs(void **state)
{
	struct mnt *m = *state;
	const char *conf;
	char *out = NULL;
	pid_t pid;
	int r;

	mnt_init(m);
	/* The fstab form: a config file, and the words only mount(8) and
	 * systemd care about. The file's settings show on the mount. */
	conf = mnt_str(m, "%s/kv.conf", m->root);
	put_str(conf, mnt_str(m, "[mount]\nctl_mode = 0640\n[log]\nfile = %s\n", m->log));
	r = run_cmd_out(&out, "unshare -m --propagation private sh -ec '"
			"mount --bind %s /usr/local/sbin; "
			"mount -t fuse.nadbfs %s %s -o config=%s,_netdev,nofail; "
			"grep \"^%s %s fuse.nadbfs \" /proc/mounts; "
			"test \"$(stat -c %%a %s/.nadb/ctl)\" = 640; "
			"echo hello > %s/k; test \"$(cat %s/k)\" = hello'",
			helper_path(m), m->data, m->dir, conf, m->data, m->dir, m->dir, m->dir,
			m->dir);
	if (r && strstr(out, "unshare: "))
		skip();
	if (r)
		fail_msg("mount -t fuse.nadbfs in a private namespace: exit status %d:\n%s", r, out);
	free(out);
	pid = find_pid_by_arg(m->data);
	if (!pid)
		fail_msg("no nadbfs process serving %s", m->data);
	mnt_adopt(m, pid);
	assert_int_equal(run_cmd("nsenter -t %d -m fusermount3 -u %s", (int)pid, m->dir), 0);
	mnt_wait_clean_exit(m);
}

static void test_config_file_and_override(void **state)
{
	struct mnt *m = *state;
	const char *conf, *opt;
	char big[3000];
	int fd;

	mnt_init(m);
	conf = mnt_str(m, "%s/ok.conf", m->root);
	put_str(conf, "; a valid file\n[store]\nmax_value_size = 1K\n\n[log]\nlevel = info\n");
	memset(big, 'b', sizeof(big));
	/* The file's limit applies... */
	mnt_start(m, mnt_str(m, "config=%s", conf));
	ASSERT_SYS(fd = open(mnt_path(m, "k"), O_WRONLY | O_CREAT | O_CLOEXEC, 0644));
	/* What fits, then EFBIG (POSIX for a size limit). */
	assert_int_equal(write(fd, big, 1500), 1024);
	ASSERT_ERRNO(write(fd, big, 1), EFBIG);
	ASSERT_SYS(close(fd));
	mnt_stop(m);
	/* ...and -o wins over it, whatever the order. */
	opt = mnt_str(m, "max_value_size=2K,config=%s", conf);
	mnt_start(m, opt);
	put_file(mnt_path(m, "k"), big, 1500);
	assert_file(mnt_path(m, "k"), big, 1500);
	ASSERT_SYS(fd = open(mnt_path(m, "k2"), O_WRONLY | O_CREAT | O_CLOEXEC, 0644));
	assert_int_equal(write(fd, big, 3000), 2048);
	ASSERT_ERRNO(write(fd, big, 1), EFBIG);
	ASSERT_SYS(close(fd));
	mnt_stop(m);
}

static void test_sighup_does_not_exit(void **state)
{
	struct mnt *m = *state;
	const char *conf;

	mnt_init(m);
	conf = mnt_str(m, "%s/ok.conf", m->root);
	put_str(conf, "[store]\nflush_interval = 1s\n");
	mnt_start(m, mnt_str(m, "config=%s", conf));
	put_str(mnt_path(m, "before"), "1");
	for (int i = 0; i < 3; i++) {
		assert_int_equal(kill(m->pid, SIGHUP), 0);
		put_str(mnt_path(m, "after%d", i), "2");
		assert_file_str(mnt_path(m, "after%d", i), "2");
	}
	assert_file_str(mnt_path(m, "before"), "1");
	/* Exit status 0 here also rules out a death by SIGHUP. */
	mnt_stop(m);
}

/*
 * -o debug (libfuse's spelling) and -d: debug-level lines, libfuse's
 * request trace among them, and every line still JSON.
 */
static void test_debug_option(void **state)
{
	struct mnt *m = *state;
	const char *const argv[] = { "-d", "-o", "log_format=json", NULL, NULL, NULL };
	const char **av = (const char **)argv;
	char *text;

	mnt_start(m, "debug");
	put_str(mnt_path(m, "k"), "v");
	assert_true(mnt_log_lines(m, "debug", NULL) > 0);
	text = mnt_log_text(m);
	/* libfuse's own trace, through the daemon's logger. */
	assert_non_null(strstr(text, "\"msg\":\"unique: "));
	free(text);
	mnt_stop(m);
	assert_int_equal(mnt_log_lines(m, "error", NULL), 0);

	av[3] = m->source;
	av[4] = m->dir;
	mnt_spawn_argv(m, argv);
	mnt_wait_mounted_or_fail(m);
	assert_file_str(mnt_path(m, "k"), "v");
	assert_true(mnt_log_lines(m, "debug", NULL) > 0);
	mnt_stop(m);
}

/*
 * Relative SOURCE, MOUNTPOINT and config file (the daemon starts in the
 * test's tree): SIGTERM must still unmount, not leave the mount stale,
 * and flush; a daemonized reload must still find the config file.
 */
static void test_relative_paths(void **state)
{
	struct mnt *m = *state;
	const char *argv[] = { "-f", "-o", "config=kv.conf", NULL, "mnt", NULL };
	bool fs;

	mnt_init(m);
	fs = m->backend != MNT_BACKEND_REDIS;
	argv[3] = fs ? "data" : m->source;
	put_str(mnt_str(m, "%s/kv.conf", m->root), "[store]\nflush_interval = 1h\n");
	mnt_spawn_argv(m, argv);
	mnt_wait_mounted_or_fail(m);
	put_str(mnt_path(m, "k"), "kept");
	mnt_stop_signal(m, SIGTERM);
	mnt_start(m, NULL);
	assert_file_str(mnt_path(m, "k"), "kept");
	mnt_stop(m);

	/* Daemonized, the daemon works from /: a reload re-reads the file,
	 * and takes SOURCE and the paths among the options as they were
	 * meant, so nothing seems changed (fsname= only marks the daemon as
	 * this test's). */
	assert_int_equal(run_cmd("cd %s && %s -o config=kv.conf,log_file=daemon.log,backup_dir=bk,"
				 "fsname=%s %s mnt",
				 shq(m, m->root), shq(m, nadbfs_bin()), shq(m, m->root),
				 shq(m, fs ? "data" : m->source)),
			 0);
	mnt_adopt(m, find_pid_by_arg(m->root));
	assert_true(m->pid > 0);
	assert_int_equal(run_cmd("%s -m %s reload >/dev/null", nadbctl_bin(), shq(m, m->dir)), 0);
	mnt_stop(m);
	assert_int_equal(mnt_log_lines(m, "warn", "at the next mount"), 0);
	assert_int_equal(mnt_log_lines(m, NULL, "configuration reloaded"), 1);
}

/* Also ends daemonized leftovers: found by our unique tree in their argv. */
static int cli_teardown(void **state)
{
	struct mnt *m = *state;

	for (int i = 0; m && m->root && i < 8; i++) {
		pid_t pid = find_pid_by_arg(m->root);

		if (!pid || pid == m->pid)
			break;
		kill(pid, SIGKILL);
		wait_pid(pid, 10000, NULL);
	}
	return mnt_teardown(state);
}

#define T(f) cmocka_unit_test_setup_teardown(f, mnt_setup, cli_teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		T(test_help),
		T(test_version),
		T(test_bad_options_refused),
		T(test_bad_config_refused),
		T(test_missing_mountpoint_refused),
		T(test_source_regular_file_refused),
		T(test_daemonized_ready_on_return),
		T(test_fstab_argument_order),
		T(test_ignored_mount_options),
		T(test_mount_fuse3_helper),
		T(test_mount_t_fuse_nadbfs),
		T(test_config_file_and_override),
		T(test_sighup_does_not_exit),
		T(test_debug_option),
		T(test_relative_paths),
	};

	umask(022);
	mnt_subreaper();
	return cmocka_run_group_tests(tests, NULL, NULL);
}
