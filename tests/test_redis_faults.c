/*
 * Redis going away under a mount: the private redis-server (with an AOF
 * fsync'ed on every write, so what it acknowledged survives SIGKILL) is
 * killed and started again on the same socket while the mount is used.
 * Nothing written is lost, fsync fails with EIO while Redis is down and
 * succeeds once it is back, a full buffer makes writers fail with EIO after
 * backend_timeout instead of hanging, reconnects show in .nadb/stats, and an
 * unmount while Redis is down saves the buffer to a spill file that the next
 * mount replays. A paused server (SIGSTOP: slow, not gone) gives the same
 * outcome through command timeouts, never a hang.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
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
#include <jansson.h>

#include "tests/mnt.h"
#include "tests/redis_server.h"

/* backend_timeout is 1 s here; anything longer than this is a hang. */
#define HANG_MS 6000

static struct mnt *faulty_mnt(void **state)
{
	struct mnt *m = *state;

	m->backend = MNT_BACKEND_REDIS;
	m->redis_aof = true;
	m->errors_expected = true;
	return m;
}

static void pause_ms(int ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000 };

	nanosleep(&ts, NULL);
}

/* Writes s to path and fsyncs: 0, or the errno of the first failure. */
static int put_fsync(const char *path, const char *s)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644), err = 0;

	if (fd < 0)
		return errno;
	if (write(fd, s, strlen(s)) != (ssize_t)strlen(s))
		err = errno ? errno : EIO;
	if (!err && fsync(fd))
		err = errno;
	if (close(fd) && !err)
		err = errno;
	return err;
}

static json_t *stats(struct mnt *m)
{
	size_t len;
	char *text = read_file(mnt_path(m, ".nadb/stats"), &len);
	json_t *o;

	if (!text)
		fail_msg(".nadb/stats: %s", strerror(errno));
	o = json_loadb(text, len, 0, NULL);
	free(text);
	assert_non_null(o);
	return o;
}

static void test_fsync_eio_then_recovers(void **state)
{
	struct mnt *m = faulty_mnt(state);
	int64_t t0;
	int fd, err;
	json_t *o, *be;

	mnt_start(m, "backend_timeout=1s,flush_interval=100ms");
	assert_int_equal(put_fsync(mnt_path(m, "before"), "acknowledged\n"), 0);
	redis_server_kill(m->redis);

	/* Buffered writes go on while Redis is down... */
	put_str(mnt_path(m, "buffered"), "kept in the buffer\n");
	assert_file_str(mnt_path(m, "buffered"), "kept in the buffer\n");
	/* ...and fsync fails, within backend_timeout, not forever. */
	fd = open(mnt_path(m, "synced"), O_WRONLY | O_CREAT | O_TRUNC, 0644);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, "late\n", 5), 5);
	t0 = now_ms();
	ASSERT_ERRNO(fsync(fd), EIO);
	assert_true(now_ms() - t0 < HANG_MS);
	o = stats(m);
	be = json_object_get(o, "backend");
	assert_false(json_is_true(json_object_get(be, "connected")));
	json_decref(o);

	assert_int_equal(redis_server_resume(m->redis), 0);
	/* The same descriptor: fsync succeeds once Redis answers again. */
	for (t0 = now_ms(); (err = fsync(fd) ? errno : 0) != 0;) {
		assert_int_equal(err, EIO);
		if (now_ms() - t0 > 20000)
			fail_msg("fsync still fails 20 s after redis came back");
	}
	assert_int_equal(close(fd), 0);
	o = stats(m);
	be = json_object_get(o, "backend");
	assert_true(json_is_true(json_object_get(be, "connected")));
	assert_true(json_integer_value(json_object_get(be, "reconnects")) >= 1);
	json_decref(o);
	{
		char *met = read_file(mnt_path(m, ".nadb/metrics"), NULL);

		assert_non_null(met);
		assert_non_null(strstr(met, "nadbfs_backend_connected 1\n"));
		assert_null(strstr(met, "nadbfs_backend_reconnects_total 0\n"));
		free(met);
	}

	/* Everything reached the server that came back. */
	mnt_restart(m, NULL);
	assert_file_str(mnt_path(m, "before"), "acknowledged\n");
	assert_file_str(mnt_path(m, "buffered"), "kept in the buffer\n");
	assert_file_str(mnt_path(m, "synced"), "late\n");
	mnt_stop(m);
}

/*
 * Redis made slow rather than gone: the server is paused (SIGSTOP), so
 * commands time out instead of failing at once. Writes go on into the
 * buffer, fsync fails with EIO within backend_timeout, and once the server
 * runs again the same fsync succeeds and everything is there.
 */
static void test_paused_server(void **state)
{
	struct mnt *m = faulty_mnt(state);
	int64_t t0;
	int fd, err;

	mnt_start(m, "backend_timeout=1s,flush_interval=100ms");
	assert_int_equal(put_fsync(mnt_path(m, "before"), "acknowledged\n"), 0);
	assert_int_equal(kill(m->redis->pid, SIGSTOP), 0);

	t0 = now_ms();
	put_str(mnt_path(m, "buffered"), "kept in the buffer\n");
	assert_file_str(mnt_path(m, "buffered"), "kept in the buffer\n");
	assert_true(now_ms() - t0 < HANG_MS);
	/* A value only Redis holds: EIO once the command times out, no hang. */
	t0 = now_ms();
	fd = open(mnt_path(m, "before"), O_RDONLY);
	assert_true(fd >= 0);
	{
		char buf[64];

		assert_int_equal(read(fd, buf, sizeof(buf)), -1);
		assert_int_equal(errno, EIO);
	}
	close(fd);
	assert_true(now_ms() - t0 < HANG_MS);
	fd = open(mnt_path(m, "synced"), O_WRONLY | O_CREAT | O_TRUNC, 0644);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, "late\n", 5), 5);
	t0 = now_ms();
	err = fsync(fd) ? errno : 0;
	assert_int_equal(err, EIO);
	assert_true(now_ms() - t0 < HANG_MS);
	/* The timed-out commit carried "buffered" too, and the paused server
	 * still runs it once it goes on: removing the key now must still
	 * send a DEL, or it comes back. First the batch must have failed
	 * (not only the fsync that waited for it). */
	for (t0 = now_ms();; pause_ms(10)) {
		json_t *o = stats(m);
		json_int_t failures = json_integer_value(
			json_object_get(json_object_get(o, "flushes"), "failures"));

		json_decref(o);
		if (failures > 0)
			break;
		if (now_ms() - t0 > HANG_MS)
			fail_msg("no flush failed while redis was paused");
	}
	assert_int_equal(unlink(mnt_path(m, "buffered")), 0);
	assert_int_equal(kill(m->redis->pid, SIGCONT), 0);

	for (t0 = now_ms(); (err = fsync(fd) ? errno : 0) != 0;) {
		assert_int_equal(err, EIO);
		if (now_ms() - t0 > 20000)
			fail_msg("fsync still fails 20 s after redis went on");
	}
	assert_int_equal(close(fd), 0);
	mnt_restart(m, NULL);
	assert_file_str(mnt_path(m, "before"), "acknowledged\n");
	assert_file_str(mnt_path(m, "synced"), "late\n");
	ASSERT_ERRNO(access(mnt_path(m, "buffered"), F_OK), ENOENT);
	mnt_stop(m);
}

#define WRITERS 8

struct writer {
	struct mnt *m;
	int idx;
	volatile int *stop;
	int written;		/* keys 0..written-1 were written and closed */
	int acked;		/* of those, how many fsync succeeded */
	int err;		/* an unexpected failure */
};

static void content(char *buf, size_t len, int w, int i)
{
	snprintf(buf, len, "writer %d key %d %0*d\n", w, i, (i * 37 + w) % 300, 0);
}

static void *writer_main(void *arg)
{
	struct writer *w = arg;
	char buf[512];

	for (int i = 0; !*w->stop && i < 100000; i++) {
		int e;

		char path[4096];

		/* Not mnt_path: its arena is not for threads. */
		snprintf(path, sizeof(path), "%s/w%d-%d", w->m->dir, w->idx, i);
		content(buf, sizeof(buf), w->idx, i);
		e = put_fsync(path, buf);
		if (e && e != EIO) {
			w->err = e;
			return NULL;
		}
		/* EIO comes from fsync only: the write and close were taken. */
		w->written = i + 1;
		if (!e)
			w->acked++;
	}
	return NULL;
}

static void test_kill_while_writing(void **state)
{
	struct mnt *m = faulty_mnt(state);
	struct writer w[WRITERS];
	pthread_t t[WRITERS];
	volatile int stop = 0;
	int acked_before = 0, acked = 0;

	mnt_start(m, "backend_timeout=1s,flush_interval=100ms");
	for (int i = 0; i < WRITERS; i++) {
		w[i] = (struct writer){ .m = m, .idx = i, .stop = &stop };
		assert_int_equal(pthread_create(&t[i], NULL, writer_main, &w[i]), 0);
	}
	/* Let them get going, kill Redis under them, bring it back. */
	for (int64_t t0 = now_ms(); acked_before < 2 * WRITERS && now_ms() - t0 < 10000;) {
		acked_before = 0;
		for (int i = 0; i < WRITERS; i++)
			acked_before += w[i].acked;
	}
	redis_server_kill(m->redis);
	pause_ms(1500);
	assert_int_equal(redis_server_resume(m->redis), 0);
	pause_ms(1500);
	stop = 1;
	for (int i = 0; i < WRITERS; i++) {
		pthread_join(t[i], NULL);
		if (w[i].err)
			fail_msg("writer %d: %s", i, strerror(w[i].err));
		acked += w[i].acked;
	}
	assert_true(acked > acked_before);

	/* Every key written (fsync'ed or only closed) is in Redis. */
	mnt_restart(m, NULL);
	for (int i = 0; i < WRITERS; i++) {
		for (int k = 0; k < w[i].written; k++) {
			char buf[512];

			content(buf, sizeof(buf), i, k);
			assert_file_str(mnt_path(m, "w%d-%d", i, k), buf);
		}
	}
	mnt_stop(m);
}

static void test_full_buffer_eio(void **state)
{
	struct mnt *m = faulty_mnt(state);
	static char chunk[16384];
	int64_t t0;
	int fd, err = 0;
	ssize_t n = 0;

	mnt_start(m, "backend_timeout=1s,buffer_size=64K");
	put_str(mnt_path(m, "old"), "committed\n");
	assert_int_equal(put_fsync(mnt_path(m, "old"), "committed\n"), 0);
	redis_server_kill(m->redis);
	memset(chunk, 'x', sizeof(chunk));
	fd = open(mnt_path(m, "big"), O_WRONLY | O_CREAT | O_TRUNC, 0644);
	assert_true(fd >= 0);
	t0 = now_ms();
	/* The buffer takes 64K, then the writer waits backend_timeout. */
	for (int i = 0; i < 64 && !err; i++) {
		n = write(fd, chunk, sizeof(chunk));
		if (n < 0)
			err = errno;
	}
	assert_int_equal(err, EIO);
	assert_true(now_ms() - t0 < 64 * HANG_MS / 8);
	/* The mount still answers meanwhile. */
	{
		struct stat st;

		ASSERT_SYS(stat(mnt_path(m, "old"), &st));
	}
	close(fd);
	assert_int_equal(redis_server_resume(m->redis), 0);
	mnt_stop(m);
}

static size_t count_spills(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	size_t n = 0;

	if (!d)
		return 0;
	while ((e = readdir(d)))
		if (strstr(e->d_name, ".spill"))
			n++;
	closedir(d);
	return n;
}

static void test_spill_on_unmount(void **state)
{
	struct mnt *m = faulty_mnt(state);
	const char *spill, *opts;
	json_t *o;
	char *log;

	mnt_init(m);
	spill = mnt_str(m, "%s/spill", m->root);
	opts = mnt_str(m, "backend_timeout=1s,flush_interval=100ms,redis_spill_dir=%s", spill);
	mnt_start(m, opts);
	ASSERT_SYS(mkdir(mnt_path(m, "dir"), 0755));
	ASSERT_SYS(mkdir(mnt_path(m, "tags/old"), 0755));
	assert_int_equal(put_fsync(mnt_path(m, "dir/kept"), "v1\n"), 0);
	assert_int_equal(put_fsync(mnt_path(m, "doomed"), "bye\n"), 0);
	redis_server_kill(m->redis);

	/* While Redis is down: a rewrite, a new key, a rename, a delete, a
	 * declared tag. */
	put_str(mnt_path(m, "dir/kept"), "v2, while redis was down\n");
	put_str(mnt_path(m, "new"), "new key\n");
	ASSERT_SYS(rename(mnt_path(m, "dir"), mnt_path(m, "moved")));
	ASSERT_SYS(unlink(mnt_path(m, "doomed")));
	ASSERT_SYS(mkdir(mnt_path(m, "tags/spilled"), 0755));
	mnt_stop(m);
	log = mnt_log_text(m);
	assert_non_null(strstr(log, "saved to a spill file"));
	free(log);
	assert_int_equal(count_spills(spill), 1);

	assert_int_equal(redis_server_resume(m->redis), 0);
	/* Another mount declares a tag before the replay: the replay adds
	 * what this mount declared and leaves that one. */
	free(redis_cli(m->redis, "SADD {nadb:default:default}:decl %s", "other"));
	mnt_start(m, opts);
	assert_int_equal(count_spills(spill), 0);
	assert_string_equal(mnt_ls(m, "tags"), "old,other,spilled");
	assert_file_str(mnt_path(m, "moved/kept"), "v2, while redis was down\n");
	assert_file_str(mnt_path(m, "new"), "new key\n");
	ASSERT_ERRNO(open(mnt_path(m, "doomed"), O_RDONLY), ENOENT);
	ASSERT_ERRNO(open(mnt_path(m, "dir/kept"), O_RDONLY), ENOENT);
	o = stats(m);
	assert_true(json_integer_value(json_object_get(json_object_get(o, "backend"),
						       "spill_replayed")) >= 4);
	json_decref(o);
	mnt_stop(m);
}

static void test_damaged_spill_refused(void **state)
{
	struct mnt *m = faulty_mnt(state);
	const char *spill, *opts, *file = NULL;
	struct dirent *e;
	DIR *d;
	char *log;
	int st = 0;

	mnt_init(m);
	spill = mnt_str(m, "%s/spill", m->root);
	opts = mnt_str(m, "backend_timeout=1s,redis_spill_dir=%s", spill);
	mnt_start(m, opts);
	put_str(mnt_path(m, "k"), "v\n");
	redis_server_kill(m->redis);
	put_str(mnt_path(m, "k"), "v2\n");
	mnt_stop(m);
	assert_int_equal(redis_server_resume(m->redis), 0);

	d = opendir(spill);
	assert_non_null(d);
	while ((e = readdir(d)))
		if (strstr(e->d_name, ".spill"))
			file = mnt_str(m, "%s/%s", spill, e->d_name);
	closedir(d);
	assert_non_null(file);
	{
		/* One flipped byte in the middle. */
		size_t len;
		char *data = read_file(file, &len);

		assert_non_null(data);
		data[len / 2] ^= 0x20;
		assert_int_equal(write_file(file, data, len), 0);
		free(data);
	}
	mnt_spawn(m, opts);
	if (mnt_wait_mounted(m, 10000, &st) != 1)
		fail_msg("nadbfs mounted over a damaged spill file");
	log = mnt_log_text(m);
	if (!strstr(log, "cannot read the spill file") || !strstr(log, "damaged"))
		fail_msg("unexpected message: %s", log);
	free(log);
	/* The file is left for the administrator. */
	assert_int_equal(count_spills(spill), 1);
}

static long long query_stat(struct mnt *m, const char *field)
{
	json_t *o = stats(m);
	long long n = json_integer_value(json_object_get(json_object_get(o, "query_cache"), field));

	json_decref(o);
	return n;
}

/* Tag listings and queries never fail because Redis is down: the local
 * index answers them, exactly, and the stats count each fallback; once
 * Redis is back it evaluates them again. */
static void test_queries_fall_back(void **state)
{
	struct mnt *m = faulty_mnt(state);
	long long q;
	int64_t t0;

	mnt_start(m, "backend_timeout=1s,flush_interval=100ms");
	put_str(mnt_path(m, "k1"), "1\n");
	put_str(mnt_path(m, "k2"), "2\n");
	ASSERT_SYS(setxattr(mnt_path(m, "k1"), "user.tags", "blue,red", 8, 0));
	ASSERT_SYS(setxattr(mnt_path(m, "k2"), "user.tags", "red", 3, 0));
	assert_int_equal(put_fsync(mnt_path(m, "k0"), "0\n"), 0);
	q = query_stat(m, "backend");
	assert_string_equal(mnt_ls(m, "tags/red+blue"), "k1");
	assert_true(query_stat(m, "backend") > q);
	assert_int_equal(query_stat(m, "backend_fallbacks"), 0);

	redis_server_kill(m->redis);
	put_str(mnt_path(m, "k3"), "3\n");
	ASSERT_SYS(setxattr(mnt_path(m, "k3"), "user.tags", "blue,red", 8, 0));
	t0 = now_ms();
	assert_string_equal(mnt_ls(m, "tags/red+blue"), "k1,k3");
	assert_string_equal(mnt_ls(m, "tags/red"), "k1,k2,k3");
	assert_string_equal(mnt_ls(m, "tags/red+-blue"), "k2");
	assert_true(now_ms() - t0 < HANG_MS);
	assert_true(query_stat(m, "backend_fallbacks") >= 3);

	assert_int_equal(redis_server_resume(m->redis), 0);
	q = query_stat(m, "backend");
	/* Each query not seen since is evaluated again; reconnecting waits
	 * out the backoff. */
	for (int i = 0; query_stat(m, "backend") == q; i++) {
		char dir[32];

		snprintf(dir, sizeof(dir), "tags/red+-nosuch%d", i);
		assert_string_equal(mnt_ls(m, dir), "k1,k2,k3");
		if (now_ms() - t0 > 20000)
			fail_msg("queries still not evaluated by redis 20 s after it came back");
		pause_ms(50);
	}
	mnt_stop(m);
}

#define T(f) cmocka_unit_test_setup_teardown(f, mnt_setup, mnt_teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		T(test_fsync_eio_then_recovers),
		T(test_paused_server),
		T(test_kill_while_writing),
		T(test_full_buffer_eio),
		T(test_spill_on_unmount),
		T(test_damaged_spill_refused),
		T(test_queries_fall_back),
	};

	return cmocka_run_group_tests_name("redis faults", tests, NULL, NULL);
}
