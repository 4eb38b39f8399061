/*
 * A backend that cannot take data: the store's value directories are made
 * immutable, so every flush fails until they are writable again. Writers then
 * wait for buffer space without taking the FUSE workers from readers, fsync
 * fails with EIO after backend_timeout, and nothing acknowledged is lost
 * once the backend works again.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "mnt.h"
#include "redis_server.h"

#define WRITERS 8
#define CHUNK (64 * 1024)
#define CHUNKS 16

/* Sets or clears the immutable flag of one directory. */
static void set_immutable(const char *path, bool on)
{
	int fd = open(path, O_RDONLY | O_DIRECTORY);
	int flags;

	if (fd < 0 || ioctl(fd, FS_IOC_GETFLAGS, &flags))
		fail_msg("%s: %s", path, strerror(errno));
	flags = on ? flags | FS_IMMUTABLE_FL : flags & ~FS_IMMUTABLE_FL;
	if (ioctl(fd, FS_IOC_SETFLAGS, &flags))
		fail_msg("cannot %s the immutable flag of %s: %s (the tests' /tmp must be a "
			 "filesystem with chattr support, e.g. ext4)",
			 on ? "set" : "clear", path, strerror(errno));
	close(fd);
}

/*
 * Stalls the backend, or lets it go: with the store's value directories
 * immutable, no new value file can be created, so every flush that carries a
 * value fails (and is retried) until they are writable again. Only the
 * test's own data directory is touched.
 */
static void backend_stall(struct mnt *m, bool stalled)
{
	const char *values;
	struct dirent *de;
	DIR *d;

	/*
	 * On Redis: a memory limit below what it uses, with the default
	 * noeviction policy, refuses every write (OOM) and still serves reads,
	 * as the immutable directories do for the filesystem backend.
	 */
	if (m->redis) {
		char *out = redis_cli(m->redis, "CONFIG SET maxmemory %s", stalled ? "1" : "0");

		assert_non_null(out);
		free(out);
		return;
	}
	values = mnt_str(m, "%s/stores/default/default/values", m->data);
	d = opendir(values);

	if (!d)
		fail_msg("%s: %s", values, strerror(errno));
	if (stalled)
		set_immutable(values, true);
	while ((de = readdir(d)))
		if (de->d_name[0] != '.')
			set_immutable(mnt_str(m, "%s/%s", values, de->d_name), stalled);
	closedir(d);
	if (!stalled)
		set_immutable(values, false);
}

static void fsync_root(struct mnt *m)
{
	int fd = open(m->dir, O_RDONLY | O_DIRECTORY);

	assert_true(fd >= 0);
	assert_int_equal(fsync(fd), 0);
	close(fd);
}

struct writer {
	struct mnt *m;
	int idx;
	atomic_long *written;
	int result;		/* 0, or the errno of the failed call */
};

static void fill(char *buf, int idx, int chunk)
{
	for (int i = 0; i < CHUNK; i++)
		buf[i] = (char)(idx * 31 + chunk * 7 + i);
}

static void *writer_main(void *arg)
{
	struct writer *w = arg;
	char *buf = malloc(CHUNK);
	int fd = open(mnt_path(w->m, "w%d", w->idx), O_WRONLY | O_CREAT | O_TRUNC, 0644);

	w->result = fd < 0 ? errno : 0;
	for (int c = 0; c < CHUNKS && !w->result; c++) {
		fill(buf, w->idx, c);
		if (write(fd, buf, CHUNK) != CHUNK)
			w->result = errno ? errno : EIO;
		else
			atomic_fetch_add(w->written, CHUNK);
	}
	if (fd >= 0 && close(fd))
		w->result = errno;
	free(buf);
	return NULL;
}

struct reader {
	struct mnt *m;
	atomic_bool done;
};

/* What other users of the mount do meanwhile: stat, read, list. */
static void *reader_main(void *arg)
{
	struct reader *r = arg;
	struct stat st;

	for (int i = 0; i < 20; i++) {
		assert_int_equal(stat(mnt_path(r->m, "r"), &st), 0);
		assert_file_str(mnt_path(r->m, "r"), "readable");
		assert_int_equal(run_cmd("ls -la %s >/dev/null", shq(r->m, r->m->dir)), 0);
	}
	atomic_store(&r->done, true);
	return NULL;
}

static void test_reads_work_while_writers_wait(void **state)
{
	struct mnt *m = *state;
	struct writer w[WRITERS];
	pthread_t wt[WRITERS], rt;
	struct reader r = { .m = m };
	atomic_long written = 0;
	struct timespec deadline;
	char *buf = malloc(CHUNK);

	/* Fewer workers than writers: without hand-over they would all block. */
	mnt_start(m, "buffer_size=256K,flush_interval=50ms,backend_timeout=120s,max_threads=4");
	put_str(mnt_path(m, "r"), "readable");
	fsync_root(m);
	backend_stall(m, true);
	for (int i = 0; i < WRITERS; i++) {
		w[i] = (struct writer){ .m = m, .idx = i, .written = &written };
		pthread_create(&wt[i], NULL, writer_main, &w[i]);
	}
	/* The buffer is full once this much was taken and nothing flushes. */
	int64_t until = now_ms() + 30000;
	while (atomic_load(&written) < 256 * 1024 && now_ms() < until)
		sched_yield();
	assert_true(atomic_load(&written) >= 256 * 1024);
	assert_true(atomic_load(&written) < (long)WRITERS * CHUNKS * CHUNK);

	pthread_create(&rt, NULL, reader_main, &r);
	clock_gettime(CLOCK_REALTIME, &deadline);
	deadline.tv_sec += 20; /* far below backend_timeout */
	if (pthread_timedjoin_np(rt, NULL, &deadline) != 0) {
		backend_stall(m, false);
		pthread_join(rt, NULL);
		fail_msg("reads waited behind writers stalled on a full buffer");
	}
	assert_true(atomic_load(&r.done));

	backend_stall(m, false);
	for (int i = 0; i < WRITERS; i++) {
		pthread_join(wt[i], NULL);
		assert_int_equal(w[i].result, 0);
	}
	fsync_root(m);
	mnt_kill(m); /* what was fsync'd must be there without a clean stop */
	mnt_start(m, NULL);
	for (int i = 0; i < WRITERS; i++) {
		size_t len;
		char *got = read_file(mnt_path(m, "w%d", i), &len);

		assert_int_equal(len, (size_t)CHUNKS * CHUNK);
		for (int c = 0; c < CHUNKS; c++) {
			fill(buf, i, c);
			assert_memory_equal(got + (size_t)c * CHUNK, buf, CHUNK);
		}
		free(got);
	}
	free(buf);
	mnt_stop(m);
}

static void test_fsync_eio_then_recovers(void **state)
{
	struct mnt *m = *state;
	int fd;

	mnt_start(m, "flush_interval=50ms,backend_timeout=1s");
	backend_stall(m, true);
	put_str(mnt_path(m, "k"), "precious");
	fd = open(mnt_path(m, "k"), O_RDWR);
	assert_true(fd >= 0);
	errno = 0;
	assert_int_equal(fsync(fd), -1);
	assert_int_equal(errno, EIO);
	assert_file_str(mnt_path(m, "k"), "precious"); /* still there, still buffered */
	backend_stall(m, false);
	assert_int_equal(fsync(fd), 0);
	close(fd);
	mnt_kill(m);
	mnt_start(m, NULL);
	assert_file_str(mnt_path(m, "k"), "precious");
	mnt_stop(m);
}

struct syncer {
	struct mnt *m;
	int idx, result;
};

static void *syncer_main(void *arg)
{
	struct syncer *y = arg;
	int fd = open(mnt_path(y->m, "s%d", y->idx), O_RDWR);

	y->result = fd < 0 || fsync(fd) ? errno : 0;
	if (fd >= 0)
		close(fd);
	return NULL;
}

/* The session loop hands requests that wait (fsync on a stalled backend)
 * to other threads: everything else keeps being answered meanwhile. */
static void test_reads_work_while_fsync_waits(void **state)
{
	struct mnt *m = *state;
	struct syncer y[2];
	pthread_t yt[2], rt;
	struct reader r = { .m = m };
	struct timespec deadline;

	mnt_start(m, "flush_interval=50ms,backend_timeout=8s,max_threads=4");
	put_str(mnt_path(m, "r"), "readable");
	fsync_root(m);
	backend_stall(m, true);
	for (int i = 0; i < 2; i++) {
		put_str(mnt_path(m, "s%d", i), "waiting");
		y[i] = (struct syncer){ .m = m, .idx = i };
		pthread_create(&yt[i], NULL, syncer_main, &y[i]);
	}
	usleep(200 * 1000);
	pthread_create(&rt, NULL, reader_main, &r);
	clock_gettime(CLOCK_REALTIME, &deadline);
	deadline.tv_sec += 6; /* below backend_timeout */
	if (pthread_timedjoin_np(rt, NULL, &deadline) != 0) {
		backend_stall(m, false);
		pthread_join(rt, NULL);
		fail_msg("requests waited behind an fsync on a stalled backend");
	}
	assert_true(atomic_load(&r.done));
	backend_stall(m, false);
	for (int i = 0; i < 2; i++) {
		pthread_join(yt[i], NULL);
		/* EIO if the backend came back after backend_timeout. */
		assert_true(y[i].result == 0 || y[i].result == EIO);
	}
	/* The stall logged errors on purpose: no clean-log check. */
	mnt_kill(m);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_reads_work_while_writers_wait, mnt_setup,
						mnt_teardown),
		cmocka_unit_test_setup_teardown(test_fsync_eio_then_recovers, mnt_setup,
						mnt_teardown),
		cmocka_unit_test_setup_teardown(test_reads_work_while_fsync_waits, mnt_setup,
						mnt_teardown),
	};

	return cmocka_run_group_tests_name("stall", tests, NULL, NULL);
}
