/*
 * The control directory .nadb/ and nadbctl: stats as one JSON object taken
 * at open, metrics in Prometheus text format, ctl sessions (reply from its
 * start whatever the offset, then EOF; one session per descriptor), errors
 * for bad commands, file modes. nadbctl itself is tested in test_ctl_cli.c
 * (test_ctl.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <regex.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>
#include <dirent.h>
#include <sys/wait.h>

#include <jansson.h>

#include "test_ctl.h"

const char *nadbctl(void)
{
	return nadbctl_bin();
}

json_t *read_stats(struct mnt *m)
{
	size_t len;
	char *text = read_file(mnt_path(m, ".nadb/stats"), &len);
	json_error_t err;
	json_t *o = json_loadb(text, len, 0, &err);

	if (!o)
		fail_msg("stats is not JSON: %s: %s", err.text, text);
	free(text);
	return o;
}

json_int_t stat_int(json_t *o, const char *path)
{
	char key[64], *dot;
	json_t *v = o;

	snprintf(key, sizeof(key), "%s", path);
	for (char *k = key; k; k = dot ? dot + 1 : NULL) {
		dot = strchr(k, '.');
		if (dot)
			*dot = '\0';
		v = json_object_get(v, k);
		if (!v)
			fail_msg("stats has no %s", path);
	}
	assert_true(json_is_integer(v));
	return json_integer_value(v);
}

static void test_stats_is_a_snapshot_at_open(void **state)
{
	struct mnt *m = *state;
	json_t *o;
	int fd;
	char buf[4096];
	ssize_t n;

	mnt_start(m, "flush_interval=1h");
	put_str(mnt_path(m, "a"), "1");
	put_str(mnt_path(m, "b"), "2");
	ASSERT_SYS(mkdir(mnt_path(m, "d"), 0755));
	o = read_stats(m);
	assert_int_equal(stat_int(o, "keys"), 2);
	assert_int_equal(stat_int(o, "dirs"), 1);
	assert_true(stat_int(o, "buffer.keys") >= 3);
	assert_true(json_is_string(json_object_get(o, "version")));
	json_decref(o);
	/* Opened before the change: shows the state at open. */
	fd = open(mnt_path(m, ".nadb/stats"), O_RDONLY);
	assert_true(fd >= 0);
	put_str(mnt_path(m, "c"), "3");
	n = read(fd, buf, sizeof(buf) - 1);
	assert_true(n > 0);
	close(fd);
	buf[n] = 0;
	o = json_loads(buf, 0, NULL);
	assert_non_null(o);
	assert_int_equal(stat_int(o, "keys"), 2);
	json_decref(o);
	o = read_stats(m);
	assert_int_equal(stat_int(o, "keys"), 3);
	json_decref(o);
	mnt_stop(m);
}

/*
 * The kernel may never send the RELEASE of a file closed just before an
 * unmount: it aborts the connection instead. The daemon must free what such
 * handles hold (under the sanitizers a leak makes its exit status 1, which
 * mnt_stop fails on). Aborting through fusectl, mounted in the test's own
 * directory, makes the lost releases certain rather than a race.
 */
static void test_handles_freed_when_releases_never_come(void **state)
{
	struct mnt *m = *state;
	int fds[4], status;
	char buf[64], ctl[4096];
	struct stat st;
	DIR *dir;

	mnt_start(m, NULL);
	snprintf(ctl, sizeof(ctl), "%s/fusectl", m->root);
	put_str(mnt_path(m, "k"), "v");
	ASSERT_SYS(stat(m->dir, &st));
	fds[0] = open(mnt_path(m, ".nadb/stats"), O_RDONLY);
	fds[1] = open(mnt_path(m, ".nadb/metrics"), O_RDONLY);
	fds[2] = open(mnt_path(m, ".nadb/ctl"), O_RDWR);
	for (int i = 0; i < 3; i++)
		assert_true(fds[i] >= 0);
	assert_true(read(fds[0], buf, sizeof(buf)) > 0);
	assert_int_equal(write(fds[2], "flush\n", 6), 6);
	dir = opendir(m->dir);
	assert_non_null(dir);
	assert_non_null(readdir(dir));
	fds[3] = open(mnt_path(m, "k"), O_RDONLY);
	assert_true(fds[3] >= 0);

	ASSERT_SYS(mkdir(ctl, 0700));
	ASSERT_SYS(mount("fusectl", ctl, "fusectl", 0, NULL));
	put_str(mnt_str(m, "%s/%u/abort", ctl, minor(st.st_dev)), "1");
	ASSERT_SYS(umount(ctl));
	/* The daemon sees the connection gone and ends by itself. */
	assert_int_equal(wait_pid(m->pid, 120000, &status), 0);
	m->pid = 0;
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	for (int i = 0; i < 4; i++)
		close(fds[i]);
	closedir(dir);
	assert_int_equal(run_cmd("fusermount3 -u %s", shq(m, m->dir)), 0);
}

static void test_metrics_parse(void **state)
{
	struct mnt *m = *state;
	regex_t sample, comment;
	char *text, *line, *save = NULL;
	int samples = 0;

	mnt_start(m, NULL);
	put_str(mnt_path(m, "a"), "1");
	assert_int_equal(regcomp(&sample,
				 "^nadbfs_[a-z0-9_]+(\\{[a-z]+=\"[a-z0-9._-]+\"(,[a-z]+=\"[a-z0-9._-]+\")*"
				 "\\})? ([0-9]+(\\.[0-9]+)?|NaN)$",
				 REG_EXTENDED),
			 0);
	assert_int_equal(regcomp(&comment, "^# (HELP|TYPE) nadbfs_[a-z0-9_]+ .+$", REG_EXTENDED), 0);
	text = read_file(mnt_path(m, ".nadb/metrics"), NULL);
	assert_non_null(strstr(text, "\nnadbfs_keys 1\n"));
	for (line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		if (line[0] == '#') {
			char name[128], type[32];

			if (regexec(&comment, line, 0, NULL, 0))
				fail_msg("bad metrics comment: %s", line);
			/* The Prometheus naming rule: _total is a counter's
			 * suffix, and only a counter's. */
			if (sscanf(line, "# TYPE %127s %31s", name, type) == 2) {
				size_t n = strlen(name);
				bool total = n > 6 && !strcmp(name + n - 6, "_total");

				if (total != !strcmp(type, "counter"))
					fail_msg("metric %s is a %s: _total is for counters only",
						 name, type);
			}
		} else if (regexec(&sample, line, 0, NULL, 0)) {
			fail_msg("bad metrics sample: %s", line);
		} else {
			samples++;
		}
	}
	assert_true(samples >= 8);
	free(text);
	regfree(&sample);
	regfree(&comment);
	mnt_stop(m);
}

/*
 * The metric of each stats figure ("ops.*" stands for every operation,
 * labelled op). A figure added to stats without a metric fails the test.
 */
static const struct {
	const char *figure, *metric;
} stats_metrics[] = {
	{ "keys", "nadbfs_keys" },
	{ "dirs", "nadbfs_dirs" },
	{ "buffer.keys", "nadbfs_buffer_keys" },
	{ "buffer.bytes", "nadbfs_buffer_bytes" },
	{ "buffer.dirty_bytes", "nadbfs_buffer_dirty_bytes" },
	{ "flushes.count", "nadbfs_flushes_total" },
	{ "flushes.failures", "nadbfs_flush_failures_total" },
	{ "flushes.last_duration_ms", "nadbfs_flush_last_duration_seconds" },
	{ "flushes.backlog", "nadbfs_flush_backlog" },
	{ "flushes.backlog_age_ms", "nadbfs_flush_backlog_age_seconds" },
	{ "ttl.pending", "nadbfs_ttl_pending" },
	{ "ttl.expired", "nadbfs_ttl_expired_total" },
	{ "tags.count", "nadbfs_tags" },
	{ "tags.entries", "nadbfs_tag_entries" },
	{ "query_cache.entries", "nadbfs_query_cache_entries" },
	{ "query_cache.hits", "nadbfs_query_cache_hits_total" },
	{ "query_cache.misses", "nadbfs_query_cache_misses_total" },
	{ "query_cache.hit_rate", "nadbfs_query_cache_hit_ratio" },
	{ "query_cache.backend", "nadbfs_query_backend_total" },
	{ "query_cache.backend_fallbacks", "nadbfs_query_backend_fallbacks_total" },
	{ "transactions.active", "nadbfs_tx_active" },
	{ "transactions.committed", "nadbfs_tx_committed_total" },
	{ "transactions.aborted", "nadbfs_tx_aborted_total" },
	{ "transactions.conflicted", "nadbfs_tx_conflicted_total" },
	{ "transactions.staged_bytes", "nadbfs_tx_staged_bytes" },
	{ "ops.*.count", "nadbfs_op_requests_total" },
	{ "ops.*.p50_ms", "nadbfs_op_latency_p50_seconds" },
	{ "ops.*.p99_ms", "nadbfs_op_latency_p99_seconds" },
	{ "backend.name", "nadbfs_build_info" },
	{ "backend.healthy", "nadbfs_backend_healthy" },
	/* The reason's text: healthy is 0 exactly when there is one. */
	{ "backend.last_error", "nadbfs_backend_healthy" },
	{ "backend.connected", "nadbfs_backend_connected" },
	{ "backend.reconnects", "nadbfs_backend_reconnects_total" },
	{ "backend.rtt_ms", "nadbfs_backend_rtt_seconds" },
	{ "backend.spill_replayed", "nadbfs_backend_spill_replayed" },
	{ "uptime_s", "nadbfs_uptime_seconds" },
	{ "version", "nadbfs_build_info" },
	{ "kernel_cache.attr_timeout_s", "nadbfs_kernel_attr_timeout_seconds" },
	{ "kernel_cache.entry_timeout_s", "nadbfs_kernel_entry_timeout_seconds" },
	{ "kernel_cache.pushed", "nadbfs_kernel_pushed_total" },
	{ "backup.running", "nadbfs_backup_running" },
	{ "backup.keys", "nadbfs_backup_keys" },
	{ "backup.keys_total", "nadbfs_backup_keys_expected" },
	{ "backup.bytes", "nadbfs_backup_bytes" },
	{ "backup.bytes_total", "nadbfs_backup_bytes_expected" },
};

/* Fails unless the metrics text has a sample of name (with label if given). */
static void assert_sample(const char *metrics, const char *figure, const char *name,
			  const char *label)
{
	char want[256];

	snprintf(want, sizeof(want), "\n%s%s", name, label ? label : "");
	for (const char *p = strstr(metrics, want); p; p = strstr(p + 1, want)) {
		char next = p[strlen(want)];

		if (next == ' ' || (!label && next == '{') || (label && next == ','))
			return;
	}
	fail_msg("stats figure %s: no sample %s%s in metrics", figure, name, label ? label : "");
}

static void check_figures(const char *metrics, json_t *o, const char *prefix)
{
	const char *key;
	json_t *v;

	json_object_foreach(o, key, v) {
		char path[128], label[128] = "";
		const char *metric = NULL;

		if (!strcmp(prefix, "ops.")) {
			/* Every operation: its figures, labelled by its name. */
			snprintf(label, sizeof(label), "{op=\"%s\"", key);
			snprintf(path, sizeof(path), "ops.*.");
		} else {
			snprintf(path, sizeof(path), "%s%s", prefix, key);
		}
		if (json_is_object(v)) {
			if (!label[0])
				strcat(path, ".");
			if (label[0]) {
				const char *k2;
				json_t *v2;

				json_object_foreach(v, k2, v2) {
					char p2[160];

					snprintf(p2, sizeof(p2), "%s%s", path, k2);
					metric = NULL;
					for (size_t i = 0; i < sizeof(stats_metrics) /
								   sizeof(stats_metrics[0]);
					     i++)
						if (!strcmp(stats_metrics[i].figure, p2))
							metric = stats_metrics[i].metric;
					if (!metric)
						fail_msg("stats figure %s has no metric", p2);
					strcat(label, "}");
					assert_sample(metrics, p2, metric, label);
					label[strlen(label) - 1] = '\0';
				}
			} else {
				check_figures(metrics, v, path);
			}
			continue;
		}
		for (size_t i = 0; i < sizeof(stats_metrics) / sizeof(stats_metrics[0]); i++)
			if (!strcmp(stats_metrics[i].figure, path))
				metric = stats_metrics[i].metric;
		if (!metric)
			fail_msg("stats figure %s has no metric", path);
		assert_sample(metrics, path, metric, NULL);
	}
}

/* .nadb/metrics has the same figures as .nadb/stats (README). */
static void test_metrics_cover_stats(void **state)
{
	struct mnt *m = *state;
	char *text, want[256];
	json_t *o;

	mnt_start(m, NULL);
	put_str(mnt_path(m, "a"), "1");
	o = read_stats(m);
	text = read_file(mnt_path(m, ".nadb/metrics"), NULL);
	assert_non_null(text);
	check_figures(text, o, "");
	/* The build_info labels carry the strings. */
	snprintf(want, sizeof(want), "\nnadbfs_build_info{version=\"%s\",backend=\"%s\"} 1\n",
		 json_string_value(json_object_get(o, "version")),
		 json_string_value(json_object_get(json_object_get(o, "backend"), "name")));
	assert_non_null(strstr(text, want));
	free(text);
	json_decref(o);
	mnt_stop(m);
}

/* Per-operation counts and latencies, backend health, and op timings in a
 * debug log. */
static void test_op_figures(void **state)
{
	struct mnt *m = *state;
	json_t *o, *create;
	char *text;

	mnt_start(m, "log_level=debug");
	for (int i = 0; i < 5; i++)
		put_str(mnt_path(m, "k%d", i), "v");
	o = read_stats(m);
	create = json_object_get(json_object_get(o, "ops"), "create");
	assert_non_null(create);
	assert_int_equal(json_integer_value(json_object_get(create, "count")), 5);
	assert_true(json_real_value(json_object_get(create, "p50_ms")) > 0);
	assert_true(json_real_value(json_object_get(create, "p99_ms")) >=
		    json_real_value(json_object_get(create, "p50_ms")));
	assert_true(stat_int(o, "ops.write.count") >= 5);
	assert_true(json_is_true(json_object_get(json_object_get(o, "backend"), "healthy")));
	assert_string_equal(json_string_value(json_object_get(json_object_get(o, "backend"),
							      "name")),
			    m->backend == MNT_BACKEND_REDIS ? "redis" : "fs");
	json_decref(o);
	text = read_file(mnt_path(m, ".nadb/metrics"), NULL);
	assert_non_null(strstr(text, "\nnadbfs_op_requests_total{op=\"create\"} 5\n"));
	assert_non_null(strstr(text, "\nnadbfs_backend_healthy 1\n"));
	free(text);
	text = mnt_log_text(m);
	assert_non_null(strstr(text, "\"msg\":\"operation\",\"op\":\"create\",\"duration_ms\":"));
	free(text);
	mnt_stop(m);
}

/* .nadb/ is the mounting user's; ctl_mode opens it to others (allow_other). */
static void test_ctl_mode(void **state)
{
	struct mnt *m = *state;
	const char *as_nobody = "setpriv --reuid=65534 --regid=65534 --clear-groups";

	mnt_start(m, NULL);
	assert_int_equal(mnt_mode(m, ".nadb"), 0700);
	assert_int_equal(mnt_mode(m, ".nadb/ctl"), 0600);
	assert_int_equal(mnt_mode(m, ".nadb/stats"), 0400);
	assert_int_equal(mnt_mode(m, ".nadb/tx"), 0700);
	mnt_stop(m);
	mnt_start(m, "allow_other,ctl_mode=0666");
	ASSERT_SYS(chmod(m->root, 0755));
	assert_int_equal(mnt_mode(m, ".nadb"), 0755);
	assert_int_equal(mnt_mode(m, ".nadb/ctl"), 0666);
	assert_int_equal(mnt_mode(m, ".nadb/stats"), 0444);
	assert_int_equal(mnt_mode(m, ".nadb/tx"), 0777);
	assert_int_equal(run_cmd("%s cat %s >/dev/null", as_nobody,
				 shq(m, mnt_path(m, ".nadb/stats"))),
			 0);
	assert_int_equal(run_cmd("%s %s -m %s flush >/dev/null", as_nobody, nadbctl(),
				 shq(m, m->dir)),
			 0);
	mnt_stop(m);
	/* Without it, another user is kept out. */
	mnt_start(m, "allow_other");
	assert_int_not_equal(run_cmd("%s cat %s >/dev/null 2>&1", as_nobody,
				     shq(m, mnt_path(m, ".nadb/stats"))),
			     0);
	mnt_stop(m);
}

static void test_ctl_sessions(void **state)
{
	struct mnt *m = *state;
	char *out = NULL, buf[256];
	int a, b;
	ssize_t n;

	mnt_start(m, "flush_interval=1h");
	put_str(mnt_path(m, "k"), "durable after flush");
	/* The shell idiom of the spec. */
	assert_int_equal(run_cmd_out(&out, "exec 3<>%s; echo flush >&3; cat <&3",
				     shq(m, mnt_path(m, ".nadb/ctl"))),
			 0);
	assert_string_equal(out, "ok\n");
	free(out);
	/* Write, seek to 0, read; and two sessions keep their own replies. */
	a = open(mnt_path(m, ".nadb/ctl"), O_RDWR);
	b = open(mnt_path(m, ".nadb/ctl"), O_RDWR);
	assert_true(a >= 0 && b >= 0);
	assert_int_equal(write(a, "sweep\n", 6), 6);
	assert_int_equal(write(b, "nonsense\n", 9), 9);
	assert_int_equal(lseek(a, 0, SEEK_SET), 0);
	n = read(a, buf, sizeof(buf) - 1);
	assert_int_equal(n, 3);
	assert_memory_equal(buf, "ok\n", 3);
	assert_int_equal(read(a, buf, sizeof(buf)), 0); /* then end of file */
	n = read(b, buf, sizeof(buf) - 1);
	assert_true(n > 0);
	buf[n] = 0;
	assert_true(strncmp(buf, "error: unknown command 'nonsense'", 33) == 0);
	assert_int_equal(write(b, "flush\nsweep\n", 12), 12);
	n = read(b, buf, sizeof(buf) - 1);
	buf[n > 0 ? n : 0] = 0;
	assert_true(strncmp(buf, "error: ", 7) == 0);
	close(a);
	close(b);
	/* flush made it durable: it survives SIGKILL. */
	mnt_kill(m);
	mnt_start(m, NULL);
	assert_file_str(mnt_path(m, "k"), "durable after flush");
	mnt_stop(m);
}

static void test_control_files_are_protected(void **state)
{
	struct mnt *m = *state;
	struct stat st;

	mnt_start(m, NULL);
	ASSERT_SYS(stat(mnt_path(m, ".nadb/ctl"), &st));
	assert_int_equal(st.st_mode & 07777, 0600);
	ASSERT_SYS(stat(mnt_path(m, ".nadb/stats"), &st));
	assert_int_equal(st.st_mode & 07777, 0400);
	ASSERT_ERRNO(unlink(mnt_path(m, ".nadb/stats")), EPERM);
	ASSERT_ERRNO(rename(mnt_path(m, ".nadb/ctl"), mnt_path(m, "ctl")), EPERM);
	ASSERT_ERRNO(lstat(mnt_path(m, "ctl"), &st), ENOENT);
	ASSERT_ERRNO(open(mnt_path(m, ".nadb/new"), O_CREAT | O_WRONLY, 0644), EPERM);
	mnt_stop(m);
}

static double stat_num(json_t *o, const char *obj, const char *key)
{
	json_t *v = json_object_get(obj ? json_object_get(o, obj) : o, key);

	if (!json_is_number(v))
		fail_msg("stats has no number %s%s%s", obj ? obj : "", obj ? "." : "", key);
	return json_number_value(v);
}

/*
 * The figures move as they should: dirty bytes before a flush and none
 * after, the flush counted and timed, an expired key counted by a sweep,
 * tags and memberships counted, uptime growing.
 */
static void test_stats_figures_move(void **state)
{
	struct mnt *m = *state;
	size_t big = 8u << 20;
	char *value = mnt_malloc(m, big), *out = NULL, *text, *line;
	json_int_t flushes, expired;
	double up;
	json_t *o;
	int fd;

	mnt_start(m, "flush_interval=1h,buffer_size=64M,compression=zstd,ttl_sweep=1h");
	/* Incompressible, so that zstd's attempt and the write take a while. */
	fd = open("/dev/urandom", O_RDONLY);
	assert_true(fd >= 0);
	assert_int_equal(read(fd, value, big), (ssize_t)big);
	close(fd);
	o = read_stats(m);
	flushes = stat_int(o, "flushes.count");
	assert_int_equal(stat_int(o, "buffer.dirty_bytes"), 0);
	up = stat_num(o, NULL, "uptime_s");
	assert_true(up > 0);
	json_decref(o);

	put_file(mnt_path(m, "big"), value, big);
	o = read_stats(m);
	assert_true(stat_int(o, "buffer.dirty_bytes") >= (json_int_t)big);
	assert_true(stat_int(o, "flushes.backlog") >= 1);
	assert_true(stat_int(o, "buffer.bytes") >= (json_int_t)big);
	assert_true(stat_num(o, NULL, "uptime_s") > up);
	json_decref(o);
	/* The backlog's age grows while nothing flushes (an hour away), in
	 * the stats and the metrics alike. */
	for (int64_t until = now_ms() + 10000;; ) {
		json_int_t age;

		o = read_stats(m);
		age = stat_int(o, "flushes.backlog_age_ms");
		json_decref(o);
		if (age >= 200)
			break;
		if (now_ms() > until)
			fail_msg("flushes.backlog_age_ms stays at %lld", (long long)age);
		struct timespec ts = { 0, 20 * 1000000 };
		nanosleep(&ts, NULL);
	}
	text = read_file(mnt_path(m, ".nadb/metrics"), NULL);
	assert_non_null(text);
	line = strstr(text, "\nnadbfs_flush_backlog_age_seconds ");
	assert_non_null(line);
	assert_true(strtod(strchr(line + 1, ' '), NULL) >= 0.2);
	free(text);
	assert_int_equal(run_cmd("%s -m %s flush >/dev/null", nadbctl(), shq(m, m->dir)), 0);
	o = read_stats(m);
	assert_int_equal(stat_int(o, "buffer.dirty_bytes"), 0);
	assert_int_equal(stat_int(o, "flushes.backlog_age_ms"), 0);
	assert_int_equal(stat_int(o, "flushes.backlog"), 0);
	assert_true(stat_int(o, "flushes.count") > flushes);
	assert_true(stat_int(o, "flushes.last_duration_ms") >= 1);
	json_decref(o);

	/* Tags: two tags, three memberships. */
	put_str(mnt_path(m, "t1"), "x");
	put_str(mnt_path(m, "t2"), "x");
	o = read_stats(m);
	assert_int_equal(stat_int(o, "tags.count"), 0);
	assert_int_equal(stat_int(o, "tags.entries"), 0);
	json_decref(o);
	assert_int_equal(run_cmd("setfattr -n user.tags -v red,blue %s && "
				 "setfattr -n user.tags -v red %s",
				 shq(m, mnt_path(m, "t1")), shq(m, mnt_path(m, "t2"))),
			 0);
	o = read_stats(m);
	assert_int_equal(stat_int(o, "tags.count"), 2);
	assert_int_equal(stat_int(o, "tags.entries"), 3);
	json_decref(o);

	/* TTL: the sweeper sleeps an hour; nadbctl sweep expires the key. */
	o = read_stats(m);
	expired = stat_int(o, "ttl.expired");
	json_decref(o);
	put_str(mnt_path(m, "short"), "x");
	assert_int_equal(run_cmd("setfattr -n user.ttl -v 1 %s", shq(m, mnt_path(m, "short"))), 0);
	o = read_stats(m);
	assert_int_equal(stat_int(o, "ttl.pending"), 1);
	json_decref(o);
	for (int64_t until = now_ms() + 10000;; ) {
		assert_int_equal(run_cmd_out(&out, "%s -m %s sweep", nadbctl(), shq(m, m->dir)),
				 0);
		assert_string_equal(out, "ok\n");
		free(out);
		o = read_stats(m);
		if (stat_int(o, "ttl.expired") == expired + 1) {
			assert_int_equal(stat_int(o, "ttl.pending"), 0);
			json_decref(o);
			break;
		}
		json_decref(o);
		if (now_ms() > until)
			fail_msg("ttl.expired did not count the key past its deadline");
		struct timespec ts = { 0, 50 * 1000000 };
		nanosleep(&ts, NULL);
	}
	mnt_stop(m);
}

#define T(f) cmocka_unit_test_setup_teardown(f, mnt_setup, mnt_teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		T(test_stats_is_a_snapshot_at_open),
		T(test_handles_freed_when_releases_never_come),
		T(test_metrics_parse),
		T(test_op_figures),
		T(test_ctl_mode),
		T(test_reload_applies_timeouts),
		T(test_coherence_delay_caps_kernel_cache),
		T(test_ctl_sessions),
		T(test_control_files_are_protected),
		T(test_nadbctl),
		T(test_reload),
		T(test_metrics_cover_stats),
		T(test_stats_figures_move),
		T(test_nadbctl_json),
		T(test_nadbctl_json_failures),
		T(test_reload_live),
		T(test_no_values_in_logs),
	};

	return cmocka_run_group_tests_name("ctl", tests, NULL, NULL);
}
