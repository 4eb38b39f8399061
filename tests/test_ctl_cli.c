/*
 * nadbctl (see test_ctl.h): its output and exit status, --json, and the
 * configuration reload it and SIGHUP trigger.
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "test_ctl.h"

void test_nadbctl(void **state)
{
	struct mnt *m = *state;
	char *out = NULL;
	json_t *o;

	mnt_start(m, "flush_interval=1h");
	put_str(mnt_path(m, "k"), "v");
	assert_int_equal(run_cmd_out(&out, "%s -m %s flush", nadbctl(), shq(m, m->dir)), 0);
	assert_string_equal(out, "ok\n");
	free(out);
	assert_int_equal(run_cmd_out(&out, "cd %s && %s stats --json", shq(m, m->dir), nadbctl()),
			 0);
	o = json_loads(out, 0, NULL);
	assert_non_null(o);
	assert_int_equal(stat_int(o, "keys"), 1);
	assert_int_equal(stat_int(o, "buffer.keys"), 0); /* flushed */
	json_decref(o);
	free(out);
	assert_int_equal(run_cmd_out(&out, "%s -m %s stats", nadbctl(), shq(m, m->dir)), 0);
	assert_non_null(strstr(out, "keys: 1\n"));
	free(out);
	assert_int_equal(run_cmd_out(&out, "%s -m %s frobnicate", nadbctl(), shq(m, m->dir)), 1);
	assert_non_null(strstr(out, "unknown command 'frobnicate'"));
	free(out);
	assert_int_equal(run_cmd_out(&out, "%s -m %s flush", nadbctl(), shq(m, m->root)), 1);
	assert_non_null(strstr(out, "is not a nadbfs mount"));
	free(out);
	assert_int_equal(run_cmd("%s --help >/dev/null", nadbctl()), 0);
	mnt_stop(m);
}

static bool wait_flushed(struct mnt *m, int deadline_ms)
{
	int64_t until = now_ms() + deadline_ms;

	while (now_ms() < until) {
		json_t *o = read_stats(m);
		json_int_t keys = stat_int(o, "buffer.keys");

		json_decref(o);
		if (keys == 0)
			return true;
		struct timespec ts = { 0, 20 * 1000000 };
		nanosleep(&ts, NULL);
	}
	return false;
}

/* SIGHUP and the ctl command re-read the configuration; a bad one is
 * refused with its FILE:LINE message and changes nothing; the daemon lives
 * on either way. */
void test_reload(void **state)
{
	struct mnt *m = *state;
	const char *conf;
	char *out = NULL;

	mnt_init(m);
	conf = mnt_str(m, "%s/kv.conf", m->root);
	put_str(conf, "[store]\nflush_interval = 1h\n");
	mnt_start(m, mnt_str(m, "config=%s", conf));
	put_str(mnt_path(m, "a"), "1");
	assert_false(wait_flushed(m, 300)); /* an hour away */
	put_str(conf, "[store]\nflush_interval = 50ms\n");
	ASSERT_SYS(kill(m->pid, SIGHUP));
	assert_true(wait_flushed(m, 5000));

	put_str(conf, "[store]\nflush_interval = 1h\nbogus = 1\n");
	assert_int_equal(run_cmd_out(&out, "%s -m %s reload", nadbctl(), shq(m, m->dir)), 1);
	assert_non_null(strstr(out, "kv.conf:3: unknown key 'bogus'"));
	free(out);
	ASSERT_SYS(kill(m->pid, SIGHUP)); /* refused the same way, and survived */
	put_str(mnt_path(m, "b"), "2");
	assert_true(wait_flushed(m, 5000)); /* still 50ms: nothing changed */

	put_str(conf, "[store]\nflush_interval = 1h\n");
	assert_int_equal(run_cmd_out(&out, "%s -m %s reload", nadbctl(), shq(m, m->dir)), 0);
	assert_string_equal(out, "ok\n");
	free(out);
	mnt_stop(m);
}

static json_int_t getattrs(struct mnt *m)
{
	json_t *o = read_stats(m);
	json_int_t n = stat_int(o, "ops.getattr.count");

	json_decref(o);
	return n;
}

/* A reload changes the timeouts of the replies from then on: with 60 s the
 * kernel keeps a key's attributes, with 0 it asks at every stat. */
void test_reload_applies_timeouts(void **state)
{
	struct mnt *m = *state;
	const char *conf;
	struct stat st;
	json_int_t before;
	char *out = NULL;

	mnt_init(m);
	conf = mnt_str(m, "%s/kv.conf", m->root);
	/* coherence_delay: on Redis it caps the kernel's timeouts. */
	put_str(conf, "[mount]\nattr_timeout = 60s\nentry_timeout = 60s\ncoherence_delay = 60s\n");
	mnt_start(m, mnt_str(m, "config=%s", conf));
	/* Directories: no write or release in flight that could drop the
	 * kernel's attributes on its own. */
	ASSERT_SYS(mkdir(mnt_path(m, "k"), 0755));
	ASSERT_SYS(stat(mnt_path(m, "k"), &st));
	before = getattrs(m);
	for (int i = 0; i < 5; i++)
		ASSERT_SYS(stat(mnt_path(m, "k"), &st));
	assert_int_equal(getattrs(m), before);
	put_str(conf, "[mount]\nattr_timeout = 0\nentry_timeout = 0\n");
	assert_int_equal(run_cmd_out(&out, "%s -m %s reload", nadbctl(), shq(m, m->dir)), 0);
	free(out);
	/* The cached entry keeps its 60 s: look through a new name. */
	ASSERT_SYS(mkdir(mnt_path(m, "j"), 0755));
	ASSERT_SYS(stat(mnt_path(m, "j"), &st));
	before = getattrs(m);
	for (int i = 0; i < 5; i++)
		ASSERT_SYS(stat(mnt_path(m, "j"), &st));
	assert_true(getattrs(m) >= before + 5);
	mnt_stop(m);
}

static double stat_real(json_t *o, const char *obj, const char *key)
{
	json_t *v = json_object_get(json_object_get(o, obj), key);

	if (!json_is_real(v))
		fail_msg("stats has no %s.%s", obj, key);
	return json_real_value(v);
}

/*
 * On a store several mounts share (Redis), the kernel may keep attributes
 * and entries no longer than coherence_delay, whatever attr_timeout and
 * entry_timeout say: that bounds a stale answer an invalidation raced. On
 * the filesystem backend the timeouts stand as configured. The stats show
 * the very values every reply carries, after a reload too.
 */
void test_coherence_delay_caps_kernel_cache(void **state)
{
	struct mnt *m = *state;
	const char *conf;
	char *out = NULL;
	bool redis;
	json_t *o;

	mnt_init(m);
	redis = m->backend == MNT_BACKEND_REDIS;
	conf = mnt_str(m, "%s/kv.conf", m->root);
	put_str(conf, "[mount]\nattr_timeout = 60s\nentry_timeout = 2s\ncoherence_delay = 300ms\n");
	mnt_start(m, mnt_str(m, "config=%s", conf));
	o = read_stats(m);
	assert_true(stat_real(o, "kernel_cache", "attr_timeout_s") == (redis ? 0.3 : 60.0));
	assert_true(stat_real(o, "kernel_cache", "entry_timeout_s") == (redis ? 0.3 : 2.0));
	json_decref(o);
	put_str(conf, "[mount]\nattr_timeout = 60s\nentry_timeout = 100ms\ncoherence_delay = 5s\n");
	assert_int_equal(run_cmd_out(&out, "%s -m %s reload", nadbctl(), shq(m, m->dir)), 0);
	free(out);
	o = read_stats(m);
	assert_true(stat_real(o, "kernel_cache", "attr_timeout_s") == (redis ? 5.0 : 60.0));
	assert_true(stat_real(o, "kernel_cache", "entry_timeout_s") == 0.1);
	json_decref(o);
	mnt_stop(m);
}

/* flush, sweep and reload with --json: one JSON object, also for an error;
 * --help lists the commands. */
void test_nadbctl_json(void **state)
{
	struct mnt *m = *state;
	static const char *const cmds[] = { "flush", "sweep", "reload" };
	const char *conf;
	char *out = NULL;
	json_t *o;

	mnt_init(m);
	conf = mnt_str(m, "%s/kv.conf", m->root);
	put_str(conf, "");
	mnt_start(m, mnt_str(m, "config=%s", conf));
	for (size_t i = 0; i < 3; i++) {
		assert_int_equal(run_cmd_out(&out, "%s -m %s %s --json", nadbctl(),
					     shq(m, m->dir), cmds[i]),
				 0);
		o = json_loads(out, 0, NULL);
		if (!o)
			fail_msg("nadbctl %s --json printed no JSON: %s", cmds[i], out);
		assert_string_equal(json_string_value(json_object_get(o, "command")), cmds[i]);
		assert_true(json_is_true(json_object_get(o, "ok")));
		assert_true(json_is_string(json_object_get(o, "reply")));
		json_decref(o);
		free(out);
	}
	put_str(conf, "bogus\n");
	assert_int_equal(run_cmd_out(&out, "%s -m %s reload --json 2>/dev/null", nadbctl(),
				     shq(m, m->dir)),
			 1);
	o = json_loads(out, 0, NULL);
	if (!o)
		fail_msg("nadbctl reload --json printed no JSON on error: %s", out);
	assert_true(json_is_false(json_object_get(o, "ok")));
	assert_non_null(strstr(json_string_value(json_object_get(o, "error")), "kv.conf:1"));
	json_decref(o);
	free(out);
	assert_int_equal(run_cmd_out(&out, "%s --help", nadbctl()), 0);
	assert_non_null(strstr(out, "usage: nadbctl"));
	for (const char *const *c = (const char *const[]){ "stats", "flush", "sweep", "reload",
							   "query", "tx begin", "backup create",
							   NULL };
	     *c; c++)
		if (!strstr(out, *c))
			fail_msg("nadbctl --help does not list %s:\n%s", *c, out);
	free(out);
	mnt_stop(m);
}

/*
 * A reload applies the log level and buffer_size at once: debug lines
 * appear, and a buffer now too small for what is dirty is flushed without
 * waiting for the hour-long interval. ctl_mode needs a remount: a warning
 * says so at every reload while the file differs from the mode in force,
 * and the mode stays.
 */
void test_reload_live(void **state)
{
	struct mnt *m = *state;
	static const char ctl_mode_warning[] = "reload: ctl_mode changes at the next mount";
	size_t len = 256 * 1024;
	char *value = mnt_malloc(m, len);
	const char *conf;

	memset(value, 'v', len);
	mnt_init(m);
	conf = mnt_str(m, "%s/kv.conf", m->root);
	put_str(conf, "[store]\nflush_interval = 1h\nbuffer_size = 64M\ncompression = none\n");
	mnt_start(m, mnt_str(m, "config=%s", conf));
	put_file(mnt_path(m, "a"), value, len);
	assert_false(wait_flushed(m, 300)); /* 256K: far below half of 64M */
	assert_int_equal(mnt_log_lines(m, "debug", NULL), 0);

	put_str(conf, "[store]\nflush_interval = 1h\nbuffer_size = 64K\ncompression = none\n"
		      "[log]\nlevel = debug\n[mount]\nctl_mode = 0640\n");
	assert_int_equal(run_cmd("%s -m %s reload >/dev/null", nadbctl(), shq(m, m->dir)), 0);
	assert_true(wait_flushed(m, 10000));
	put_str(mnt_path(m, "b"), "1");
	assert_true(mnt_log_lines(m, "debug", NULL) > 0);
	assert_int_equal(mnt_log_lines(m, "warn", ctl_mode_warning), 1);
	assert_int_equal(mnt_mode(m, ".nadb/ctl"), 0600);
	/* Still not in force: the next reload compares with 0600 and warns again. */
	assert_int_equal(run_cmd("%s -m %s reload >/dev/null", nadbctl(), shq(m, m->dir)), 0);
	assert_int_equal(mnt_log_lines(m, "warn", ctl_mode_warning), 2);
	assert_int_equal(mnt_mode(m, ".nadb/ctl"), 0600);
	/* Back to the value in force: nothing to warn about. */
	put_str(conf, "[store]\nflush_interval = 1h\nbuffer_size = 64K\ncompression = none\n"
		      "[log]\nlevel = debug\n");
	assert_int_equal(run_cmd("%s -m %s reload >/dev/null", nadbctl(), shq(m, m->dir)), 0);
	assert_int_equal(mnt_log_lines(m, "warn", ctl_mode_warning), 2);
	mnt_stop(m);
}

/* Never values in logs, not even at debug level with libfuse's trace. */
void test_no_values_in_logs(void **state)
{
	struct mnt *m = *state;
	static const char secret[] = "V4lue-N0t-F0r-L0gs-7f3a9c";
	char *text;

	mnt_start(m, "debug,log_level=debug,compression=none");
	put_str(mnt_path(m, "k"), secret);
	assert_int_equal(run_cmd("setfattr -n user.note -v %s %s", secret,
				 shq(m, mnt_path(m, "k"))),
			 0);
	assert_int_equal(run_cmd("%s -m %s flush >/dev/null", nadbctl(), shq(m, m->dir)), 0);
	assert_file_str(mnt_path(m, "k"), secret);
	mnt_stop(m);
	text = read_file(m->log, NULL);
	assert_non_null(text);
	/* The log did record the work (or the check proves nothing). */
	assert_non_null(strstr(text, "\"level\":\"debug\""));
	assert_non_null(strstr(text, "\"op\":\"write\""));
	if (strstr(text, secret) || strstr(text, "V4lue"))
		fail_msg("a value reached the log:\n%s", text);
	free(text);
}


static const char as_nobody[] = "setpriv --reuid=65534 --regid=65534 --clear-groups";

/*
 * Runs `[as] nadbctl ARGS` (stderr to errpath) and returns what it printed
 * on stdout, which must be exactly one JSON object (json_loads refuses
 * anything after the first value); the exit status must be want.
 */
static json_t *json_outcome(struct mnt *m, int want, const char *errpath, const char *as,
			    const char *args)
{
	char *out = NULL;
	json_error_t jerr;
	json_t *o;
	int st = run_cmd_out(&out, "%s %s %s 2>%s", as, nadbctl(), args, shq(m, errpath));

	if (st != want)
		fail_msg("nadbctl %s: exit status %d, want %d: %s", args, st, want, out);
	o = json_loads(out, 0, &jerr);
	if (!json_is_object(o))
		fail_msg("nadbctl %s printed not one JSON object (%s): '%s'", args, jerr.text,
			 out);
	free(out);
	return o;
}

/* A failure object of command cmd whose error mentions what; the message is
 * on stderr too (as received: there a byte that is not UTF-8 stays, so only
 * what's ASCII start is looked for). */
static void assert_failure_as(struct mnt *m, const char *as, const char *args, const char *cmd,
			      const char *what)
{
	const char *errpath = mnt_str(m, "%s/stderr", m->root);
	json_t *o = json_outcome(m, 1, errpath, as, args);
	const char *err = json_string_value(json_object_get(o, "error"));
	size_t ascii = 0;
	char *text;

	while (what[ascii] && (unsigned char)what[ascii] < 0x80)
		ascii++;
	assert_true(json_is_false(json_object_get(o, "ok")));
	if (cmd)
		assert_string_equal(json_string_value(json_object_get(o, "command")), cmd);
	if (!err || !strstr(err, what))
		fail_msg("nadbctl %s: error '%s' does not say '%s'", args, err ? err : "(none)",
			 what);
	text = read_file(errpath, NULL);
	assert_non_null(text);
	if (!strstr(text, "nadbctl: ") || !memmem(text, strlen(text), what, ascii))
		fail_msg("nadbctl %s: stderr does not say '%s': %s", args, what, text);
	free(text);
	json_decref(o);
}

static void assert_failure(struct mnt *m, const char *args, const char *cmd, const char *what)
{
	assert_failure_as(m, "", args, cmd, what);
}

/*
 * With --json every outcome is one JSON object on stdout, also when the
 * mount cannot be opened (not a mount, missing, not permitted), when the
 * arguments are wrong, and when the daemon's reply is not UTF-8; the exit
 * status stays 1 and the message is on stderr as well.
 */
void test_nadbctl_json_failures(void **state)
{
	struct mnt *m = *state;
	static const char *const cmds[] = { "stats", "flush", "sweep", "reload",
					    "backup list" };
	const char *conf, *missing, *errpath;
	json_t *o;

	mnt_init(m);
	conf = mnt_str(m, "%s/kv.conf", m->root);
	put_str(conf, "");
	mnt_start(m, mnt_str(m, "config=%s", conf));
	/* Searchable by anyone: the mount itself refuses the other user. */
	ASSERT_SYS(chmod(m->root, 0755));
	missing = mnt_str(m, "%s/missing", m->root);
	for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++) {
		assert_failure(m, mnt_str(m, "-m %s %s --json", shq(m, m->root), cmds[i]), cmds[i],
			       "is not a nadbfs mount");
		assert_failure(m, mnt_str(m, "--json -m %s %s", shq(m, missing), cmds[i]), cmds[i],
			       "No such file or directory");
		/* Another user, without allow_other: the kernel refuses. */
		assert_failure_as(m, as_nobody,
				  mnt_str(m, "-m %s %s --json", shq(m, m->dir), cmds[i]), cmds[i],
				  "Permission denied");
	}
	assert_failure(m, mnt_str(m, "-m %s query nokey --json", shq(m, missing)), "query",
		       "is not a nadbfs mount");
	assert_failure(m, mnt_str(m, "-m %s query nokey --json", shq(m, m->root)), "query",
		       "is not a nadbfs mount");
	assert_failure(m, mnt_str(m, "-m %s query nokey --json", shq(m, m->dir)), "query",
		       "no tag or query 'nokey'");
	assert_failure(m, mnt_str(m, "-m %s query --page 0 k --json", shq(m, m->dir)), "query",
		       "--page takes a positive number");
	assert_failure(m, mnt_str(m, "-m %s backup create --json", shq(m, m->dir)),
		       "backup create", "--json is for backup list");
	assert_failure(m, mnt_str(m, "-m %s frobnicate --json", shq(m, m->dir)), "frobnicate",
		       "unknown command 'frobnicate'");
	assert_failure(m, "--json", NULL, "no command given");
	/* The daemon's reply quotes a key of the file that is not UTF-8. */
	put_str(conf, "[store]\nbogus\xff = 1\n");
	assert_failure(m, mnt_str(m, "-m %s reload --json", shq(m, m->dir)), "reload",
		       "unknown key 'bogus\xef\xbf\xbd'");
	put_str(conf, "");
	/* And the successes are still objects (backup list: its array). */
	errpath = mnt_str(m, "%s/stderr", m->root);
	o = json_outcome(m, 0, errpath, "", mnt_str(m, "-m %s sweep --json", shq(m, m->dir)));
	assert_true(json_is_true(json_object_get(o, "ok")));
	json_decref(o);
	mnt_stop(m);
}
