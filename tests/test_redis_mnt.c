/*
 * Mount-level tests of the Redis backend: `nadbfs -f redis+unix:///SOCK MNT`
 * on a private redis-server, used with real syscalls; a mount that cannot
 * reach Redis or is refused by it fails with a clear message; the password
 * comes from the configuration file and never shows. The other mount-level
 * suites run on Redis too with NADBFS_TEST_BACKEND=redis (tests/mnt.h).
 */
#include <errno.h>
#include <pthread.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "tests/mnt.h"
#include "tests/redis_server.h"

static struct mnt *redis_mnt(void **state)
{
	struct mnt *m = *state;

	m->backend = MNT_BACKEND_REDIS;
	return m;
}

static void test_smoke(void **state)
{
	struct mnt *m = redis_mnt(state);
	char fstype[64], source[512], *keys, *line, *save = NULL;
	struct statvfs sv;
	size_t n = 0;

	mnt_start(m, NULL);
	assert_true(is_mounted(m->dir, fstype, sizeof(fstype), source, sizeof(source)));
	assert_string_equal(fstype, "fuse.nadbfs");
	assert_string_equal(source, m->source);

	ASSERT_SYS(mkdir(mnt_path(m, "users"), 0755));
	ASSERT_SYS(mkdir(mnt_path(m, "users/42"), 0755));
	put_str(mnt_path(m, "users/42/profile"), "hello redis\n");
	put_str(mnt_path(m, "gone"), "bye");
	assert_file_str(mnt_path(m, "users/42/profile"), "hello redis\n");
	ASSERT_SYS(rename(mnt_path(m, "users/42/profile"), mnt_path(m, "users/42/renamed")));
	ASSERT_ERRNO(open(mnt_path(m, "users/42/profile"), O_RDONLY), ENOENT);
	ASSERT_SYS(rename(mnt_path(m, "users"), mnt_path(m, "people")));
	ASSERT_SYS(unlink(mnt_path(m, "gone")));
	{
		/* A value large enough to be uploaded in pieces. */
		size_t len = 3u << 20;
		char *big = malloc(len);

		assert_non_null(big);
		for (size_t i = 0; i < len; i++)
			big[i] = (char)(i * 7 + i / 4096);
		put_file(mnt_path(m, "big"), big, len);
		mnt_restart(m, NULL);
		assert_file(mnt_path(m, "big"), big, len);
		free(big);
	}
	assert_file_str(mnt_path(m, "people/42/renamed"), "hello redis\n");
	ASSERT_ERRNO(open(mnt_path(m, "gone"), O_RDONLY), ENOENT);
	ASSERT_ERRNO(open(mnt_path(m, "users/42/renamed"), O_RDONLY), ENOENT);
	ASSERT_SYS(statvfs(m->dir, &sv));
	assert_true(sv.f_blocks > 0);
	mnt_stop(m);

	/* Everything the daemon wrote is inside the store's hash tag. */
	keys = redis_cli(m->redis, "--scan --pattern '*'");
	assert_non_null(keys);
	for (line = strtok_r(keys, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		if (strncmp(line, "{nadb:default:default}:", 23))
			fail_msg("key outside the store's hash tag: %s", line);
		n++;
	}
	free(keys);
	assert_true(n > 5);
}

/* Runs nadbfs to completion (it must fail at once) and returns its output. */
static char *mount_fails(struct mnt *m, const char *const *argv)
{
	int st = 0;
	char *log;

	mnt_spawn_argv(m, argv);
	if (mnt_wait_mounted(m, 10000, &st) != 1)
		fail_msg("nadbfs mounted or hung, expected it to fail");
	log = mnt_log_text(m);
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 1) {
		print_error("%s\n", log);
		fail_msg("nadbfs: want exit status 1, got 0x%x", st);
	}
	return log;
}

static void test_unreachable_refused(void **state)
{
	struct mnt *m = *state;
	const char *src;
	char *log;

	m->backend = MNT_BACKEND_FS;
	mnt_init(m);
	src = mnt_str(m, "redis+unix://%s/no.sock", m->root);
	{
		const char *argv[] = { "-f", src, m->dir, NULL };

		log = mount_fails(m, argv);
	}
	if (!strstr(log, "nadbfs: cannot connect to redis unix:") ||
	    !strstr(log, "no.sock: no such file or directory"))
		fail_msg("unexpected message: %s", log);
	free(log);
	{
		const char *argv[] = { "-f", "redis://127.0.0.1:1/0", m->dir, NULL };

		log = mount_fails(m, argv);
	}
	if (!strstr(log, "nadbfs: cannot connect to redis 127.0.0.1:1: connection refused"))
		fail_msg("unexpected message: %s", log);
	free(log);
	assert_false(is_mounted(m->dir, NULL, 0, NULL, 0));
}

static void test_password_from_config(void **state)
{
	struct mnt *m = *state;
	struct redis_server srv;
	const char *conf, *src;
	char *log;

	m->backend = MNT_BACKEND_FS;
	mnt_init(m);
	assert_int_equal(redis_server_start(&srv, "pw-Sekrit"), 0);
	src = mnt_str(m, "redis+unix://%s", srv.sock);

	conf = mnt_str(m, "%s/wrong.conf", m->root);
	put_str(conf, "[redis]\npassword = nope-Sekrit\n");
	{
		const char *argv[] = { "-f", "-o", mnt_str(m, "config=%s", conf), src, m->dir,
				       NULL };

		log = mount_fails(m, argv);
	}
	if (!strstr(log, "redis rejected the password") || strstr(log, "nope-Sekrit"))
		fail_msg("unexpected message: %s", log);
	free(log);

	conf = mnt_str(m, "%s/right.conf", m->root);
	put_str(conf, "[redis]\npassword = pw-Sekrit\n[log]\nlevel = debug\n");
	{
		const char *argv[] = { "-f", "-o", mnt_str(m, "config=%s", conf), src, m->dir,
				       NULL };

		mnt_spawn_argv(m, argv);
	}
	mnt_wait_mounted_or_fail(m);
	put_str(mnt_path(m, "k"), "v");
	mnt_stop(m);
	log = mnt_log_text(m);
	assert_null(strstr(log, "pw-Sekrit"));
	free(log);
	redis_server_stop(&srv);
}

#define WRITERS 32

struct writer {
	struct mnt *m;
	int idx;
	int err;
};

/* Each writer: its own key, written in pieces and fsync'ed (a commit per
 * fsync, from many FUSE workers sharing the connection pool). */
static void *writer_main(void *arg)
{
	struct writer *w = arg;
	char buf[4096], path[4096];
	int fd;

	/* Not mnt_path: its arena is not for threads. */
	snprintf(path, sizeof(path), "%s/w%02d", w->m->dir, w->idx);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);

	if (fd < 0) {
		w->err = errno;
		return NULL;
	}
	for (int i = 0; i < 16 && !w->err; i++) {
		memset(buf, 'a' + (w->idx + i) % 26, sizeof(buf));
		if (write(fd, buf, sizeof(buf)) != (ssize_t)sizeof(buf) || fsync(fd))
			w->err = errno ? errno : EIO;
	}
	if (close(fd) && !w->err)
		w->err = errno;
	return NULL;
}

static void test_concurrent_writers(void **state)
{
	struct mnt *m = redis_mnt(state);
	struct writer w[WRITERS];
	pthread_t t[WRITERS];
	char want[16 * 4096];

	mnt_start(m, "max_threads=16");
	/* The pool is sized to the FUSE workers, plus one each for the
	 * flusher and the sweeper (README, Redis backend). */
	{
		char *log = mnt_log_text(m);

		if (!strstr(log, "\"msg\":\"connected to redis\"") ||
		    !strstr(log, "\"pool_size\":18"))
			fail_msg("no pool of 18 connections for 16 workers in the log:\n%s", log);
		free(log);
	}
	for (int i = 0; i < WRITERS; i++) {
		w[i] = (struct writer){ .m = m, .idx = i };
		assert_int_equal(pthread_create(&t[i], NULL, writer_main, &w[i]), 0);
	}
	for (int i = 0; i < WRITERS; i++) {
		pthread_join(t[i], NULL);
		if (w[i].err)
			fail_msg("writer %d: %s", i, strerror(w[i].err));
	}
	mnt_restart(m, NULL);
	for (int i = 0; i < WRITERS; i++) {
		for (int k = 0; k < 16; k++)
			memset(want + k * 4096, 'a' + (i + k) % 26, 4096);
		assert_file(mnt_path(m, "w%02d", i), want, sizeof(want));
	}
	mnt_stop(m);
}

/* A name removed and made again before the removal is flushed: the
 * cross-mount claim must not take our own pending removal for a rival. */
static void test_recreate_before_flush(void **state)
{
	struct mnt *m = redis_mnt(state);
	int fd;

	mnt_start(m, "flush_interval=1h");
	ASSERT_SYS(mkdir(mnt_path(m, "d"), 0755));
	put_str(mnt_path(m, "k"), "1");
	ASSERT_SYS(fd = open(mnt_path(m, "."), O_RDONLY | O_DIRECTORY));
	ASSERT_SYS(fsync(fd)); /* both names are in Redis now */
	close(fd);
	ASSERT_SYS(rmdir(mnt_path(m, "d")));
	ASSERT_SYS(unlink(mnt_path(m, "k")));
	ASSERT_SYS(mkdir(mnt_path(m, "d"), 0755));
	ASSERT_SYS(fd = open(mnt_path(m, "k"), O_CREAT | O_EXCL | O_WRONLY, 0644));
	close(fd);
	/* Renamed away, not flushed: the old name is free here too. */
	ASSERT_SYS(rename(mnt_path(m, "d"), mnt_path(m, "e")));
	ASSERT_SYS(mkdir(mnt_path(m, "d"), 0755));
	mnt_stop(m);
}

/* redis-cli's answer as a number. */
static long long cli_num(struct mnt *m, const char *fmt, const char *arg)
{
	char *out = redis_cli(m->redis, fmt, arg);
	long long v;

	assert_non_null(out);
	v = strtoll(out, NULL, 10);
	free(out);
	return v;
}

/*
 * A TTL moved close to the deadline Redis holds (its native expiry) is
 * flushed at once, not after flush_interval (1 h here): it reaches Redis
 * before the old deadline, or Redis would drop the value this mount no
 * longer holds.
 */
static void test_ttl_moved_before_native_expiry(void **state)
{
	struct mnt *m = redis_mnt(state);
	int64_t old_deadline;
	char key[96], *id;

	mnt_start(m, "flush_interval=1h");
	put_str(mnt_path(m, "k"), "still here");
	assert_int_equal(run_cmd("setfattr -n user.ttl -v 4 %s", shq(m, mnt_path(m, "k"))), 0);
	old_deadline = now_ms() + 4000;
	assert_int_equal(run_cmd("%s -m '%s' flush >/dev/null", nadbctl_bin(), m->dir), 0);
	id = redis_cli(m->redis, "HGET {nadb:default:default}:d:1 %s", "k");
	assert_non_null(id);
	id[strcspn(id, "\r\n")] = '\0';
	snprintf(key, sizeof(key), "{nadb:default:default}:r:%s", id);
	free(id);
	assert_true(cli_num(m, "PTTL %s", key) > 0);

	assert_int_equal(run_cmd("setfattr -n user.ttl -v 600 %s", shq(m, mnt_path(m, "k"))), 0);
	while (cli_num(m, "PTTL %s", key) < 100000) {
		if (now_ms() > old_deadline)
			fail_msg("the new TTL did not reach Redis before the old deadline");
		usleep(10000);
	}
	assert_file_str(mnt_path(m, "k"), "still here");
	mnt_stop(m);
}

#define T(f) cmocka_unit_test_setup_teardown(f, mnt_setup, mnt_teardown)

/*
 * Spec section 9: a Redis that may evict keys under memory pressure would
 * lose data silently, so the mount warns once; with noeviction (the test
 * server's default) it says nothing.
 */
static void test_eviction_policy_warns(void **state)
{
	struct mnt *m = redis_mnt(state);
	const char *what = "set maxmemory-policy noeviction";

	mnt_start(m, NULL);
	assert_int_equal(mnt_log_lines(m, "warn", what), 0);
	mnt_stop(m);
	free(redis_cli(m->redis, "CONFIG SET maxmemory-policy allkeys-lru"));
	mnt_start(m, NULL);
	assert_int_equal(mnt_log_lines(m, "warn", what), 1);
	put_str(mnt_path(m, "k"), "kept\n");
	mnt_stop(m);
	free(redis_cli(m->redis, "CONFIG SET maxmemory-policy noeviction"));
	mnt_start(m, NULL);
	assert_int_equal(mnt_log_lines(m, "warn", what), 0);
	assert_file_str(mnt_path(m, "k"), "kept\n");
	mnt_stop(m);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		T(test_smoke),
		T(test_unreachable_refused),
		T(test_password_from_config),
		T(test_concurrent_writers),
		T(test_recreate_before_flush),
		T(test_ttl_moved_before_native_expiry),
		T(test_eviction_policy_warns),
	};

	return cmocka_run_group_tests_name("redis mount", tests, NULL, NULL);
}
