/*
 * Durability (spec sections 1 and 2): fsync'd values survive SIGKILL, nothing
 * is ever torn or mixed, fsync on the root flushes everything, the buffer is
 * bounded, and the data directory lock hands a store from one daemon to the
 * next.
 *
 * Every value carries a header naming its key, generation, length and a
 * checksum of its body, and the body is a pattern derived from key and
 * generation: a torn, truncated or mixed value cannot pass for a real one.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sched.h>
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
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>

#include "mnt.h"

#define HDR_MAX 96

static struct mnt *up(void **state, const char *opts)
{
	struct mnt *m = *state;

	mnt_start(m, opts);
	return m;
}

static void pattern(char *buf, size_t len, const char *key, unsigned gen)
{
	uint64_t x = fnv1a(key, strlen(key)) ^ ((uint64_t)gen * 0x9e3779b97f4a7c15ULL) ^ len;

	for (size_t i = 0; i < len; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		buf[i] = (char)(x >> 32);
	}
}

/* The value of key at generation gen (gen >= 1), total length about len. */
static char *make_value(const char *key, unsigned gen, size_t len, size_t *out_len)
{
	char hdr[HDR_MAX + 256];
	size_t body_len = len > HDR_MAX ? len - HDR_MAX : 16, hl;
	char *v;

	v = malloc(sizeof(hdr) + body_len);
	assert_non_null(v);
	pattern(v + sizeof(hdr), body_len, key, gen);
	hl = (size_t)snprintf(hdr, sizeof(hdr), "NADBT %s %u %zu %016llx\n", key, gen, body_len,
			      (unsigned long long)fnv1a(v + sizeof(hdr), body_len));
	memcpy(v, hdr, hl);
	memmove(v + hl, v + sizeof(hdr), body_len);
	*out_len = hl + body_len;
	return v;
}

enum { V_ABSENT = -1, V_EMPTY = 0, V_TORN = -2 };

/* The generation stored under path, or V_ABSENT / V_EMPTY / V_TORN (why in *why). */
static long read_gen(const char *path, const char *key, char *why, size_t whylen)
{
	char name[512], *v, *body, *expect;
	unsigned gen;
	size_t len, body_len;
	unsigned long long sum;
	long r = V_TORN;

	v = read_file(path, &len);
	if (!v) {
		if (errno == ENOENT)
			return V_ABSENT;
		fail_msg("reading %s: %s", path, strerrorname_np(errno));
	}
	if (len == 0) {
		free(v);
		return V_EMPTY;
	}
	body = memchr(v, '\n', len < HDR_MAX + 256 ? len : HDR_MAX + 256);
	if (!body || sscanf(v, "NADBT %511s %u %zu %llx\n", name, &gen, &body_len, &sum) != 4) {
		snprintf(why, whylen, "no valid header (%zu bytes)", len);
		goto out;
	}
	body++;
	if (strcmp(name, key)) {
		snprintf(why, whylen, "holds key %.60s's value", name);
		goto out;
	}
	if ((size_t)(v + len - body) != body_len) {
		snprintf(why, whylen, "generation %u: %zu body bytes, header says %zu", gen,
			 (size_t)(v + len - body), body_len);
		goto out;
	}
	expect = malloc(body_len);
	pattern(expect, body_len, key, gen);
	if (fnv1a(body, body_len) != sum || memcmp(body, expect, body_len))
		snprintf(why, whylen, "generation %u: body does not match its header", gen);
	else
		r = gen;
	free(expect);
out:
	free(v);
	return r;
}

/* What the test knows about one key across crashes. */
struct key_state {
	char name[32];
	unsigned attempted;	/* highest generation whose write was started */
	unsigned floor;		/* fsync'd, or seen after a remount: it can never go back */
	bool floor_present;	/* the key is known durable (possibly empty) */
};

/* Checks one key after a crash against what it can legitimately be, and
 * moves its floor to what is there now. */
static void verify_key(struct mnt *m, struct key_state *k)
{
	char why[160] = "";
	long g = read_gen(mnt_path(m, "%s", k->name), k->name, why, sizeof(why));

	if (g == V_TORN)
		fail_msg("key %s is torn or mixed: %s", k->name, why);
	if (g == V_ABSENT) {
		if (k->floor_present)
			fail_msg("key %s is gone; generation %u was durable", k->name, k->floor);
		return;
	}
	if (g == V_EMPTY) {
		/* Only the moment between open(O_TRUNC) and write of a later value. */
		if (k->attempted <= k->floor && k->floor > 0)
			fail_msg("key %s is empty; generation %u was durable and nothing newer "
				 "was written", k->name, k->floor);
	} else if ((unsigned)g < k->floor || (unsigned)g > k->attempted) {
		fail_msg("key %s holds generation %ld; durable was %u, last written %u", k->name,
			 g, k->floor, k->attempted);
	}
	k->floor = g > 0 ? (unsigned)g : 0;
	k->floor_present = true;
}

/* Writes generation ++k->attempted of k, fsync'd when asked. 0 or -errno. */
static int write_gen(struct mnt *m, struct key_state *k, size_t len, bool sync)
{
	size_t vlen;
	unsigned gen = ++k->attempted;
	char *v = make_value(k->name, gen, len, &vlen);
	char path[PATH_MAX];
	int fd, err = 0;

	/* Not mnt_path(): writer threads must not share its arena. */
	snprintf(path, sizeof(path), "%s/%s", m->dir, k->name);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0) {
		err = -errno;
		goto out;
	}
	errno = 0;
	if (write(fd, v, vlen) != (ssize_t)vlen)
		err = errno ? -errno : -EIO;
	if (!err && sync) {
		if (fsync(fd))
			err = -errno;
		else
			k->floor = gen, k->floor_present = true;
	}
	if (close(fd) && !err)
		err = -errno;
out:
	free(v);
	return err;
}

static void test_fsynced_values_survive_sigkill(void **state)
{
	/* No timed flush during the test: only fsync makes anything durable. */
	struct mnt *m = up(state, "flush_interval=1h");
	struct key_state keys[200];

	memset(keys, 0, sizeof(keys));
	for (int d = 0; d < 10; d++)
		ASSERT_SYS(mkdir(mnt_path(m, "d%d", d), 0755));
	for (int i = 0; i < 200; i++) {
		snprintf(keys[i].name, sizeof(keys[i].name), "d%d/key%03d", i % 10, i);
		assert_int_equal(write_gen(m, &keys[i], 100 + (size_t)i * 150, true), 0);
	}
	/* A third overwritten with fsync, a third overwritten without. */
	for (int i = 0; i < 200; i++) {
		if (i % 3 == 0)
			assert_int_equal(write_gen(m, &keys[i], 5000 + (size_t)i, true), 0);
		else if (i % 3 == 1)
			assert_int_equal(write_gen(m, &keys[i], 7000 + (size_t)i, false), 0);
	}
	mnt_kill(m);
	mnt_start(m, NULL);
	for (int i = 0; i < 200; i++) {
		verify_key(m, &keys[i]);
		if (i % 3 == 0 && keys[i].floor != 2)
			fail_msg("key %s: fsync'd generation 2 lost", keys[i].name);
	}
	mnt_stop(m);
}

#define WRITERS 4
#define KEYS_PER_WRITER 25

struct writer {
	pthread_t thread;
	struct mnt *m;
	struct key_state *keys;
	atomic_int *fsyncs;
	atomic_bool *killed;
	atomic_bool stop;
	unsigned seed;
	int err;		/* first error seen before the kill */
	char err_key[32];
};

static void *writer_main(void *arg)
{
	struct writer *w = arg;

	while (!atomic_load(&w->stop)) {
		struct key_state *k = &w->keys[rand_r(&w->seed) % KEYS_PER_WRITER];
		bool sync = rand_r(&w->seed) % 3 == 0;
		int r = write_gen(w->m, k, 1 + rand_r(&w->seed) % 16000, sync);

		if (r) {
			if (!atomic_load(w->killed) && !w->err) {
				w->err = r;
				snprintf(w->err_key, sizeof(w->err_key), "%s", k->name);
			}
			break;
		}
		if (sync)
			atomic_fetch_add(w->fsyncs, 1);
	}
	return NULL;
}

static void test_kill_cycles_with_writers(void **state)
{
	struct mnt *m = up(state, "flush_interval=50ms");
	struct key_state keys[WRITERS * KEYS_PER_WRITER];
	struct writer w[WRITERS];
	atomic_int fsyncs;
	atomic_bool killed;

	memset(keys, 0, sizeof(keys));
	for (int i = 0; i < WRITERS * KEYS_PER_WRITER; i++)
		snprintf(keys[i].name, sizeof(keys[i].name), "w%d-k%02d", i / KEYS_PER_WRITER,
			 i % KEYS_PER_WRITER);
	for (int cycle = 0; cycle < 5; cycle++) {
		int64_t deadline = now_ms() + 30000;

		atomic_init(&fsyncs, 0);
		atomic_init(&killed, false);
		for (int t = 0; t < WRITERS; t++) {
			w[t] = (struct writer){ .m = m, .keys = &keys[t * KEYS_PER_WRITER],
						.fsyncs = &fsyncs, .killed = &killed,
						.seed = (unsigned)(cycle * 100 + t) };
			atomic_init(&w[t].stop, false);
			assert_int_equal(pthread_create(&w[t].thread, NULL, writer_main, &w[t]), 0);
		}
		/* Kill in the middle of real traffic: once enough fsyncs have returned. */
		while (atomic_load(&fsyncs) < 60 && now_ms() < deadline)
			sched_yield();
		atomic_store(&killed, true);
		assert_int_equal(kill(m->pid, SIGKILL), 0);
		/* Join before detaching the mount, so no writer ever lands below it. */
		for (int t = 0; t < WRITERS; t++) {
			atomic_store(&w[t].stop, true);
			pthread_join(w[t].thread, NULL);
		}
		mnt_kill(m);
		for (int t = 0; t < WRITERS; t++)
			if (w[t].err)
				fail_msg("cycle %d: writing %s before the kill: %s", cycle,
					 w[t].err_key, strerrorname_np(-w[t].err));
		if (atomic_load(&fsyncs) < 60)
			fail_msg("cycle %d: only %d fsyncs in 30 s", cycle, atomic_load(&fsyncs));
		mnt_start(m, "flush_interval=50ms");
		for (int i = 0; i < WRITERS * KEYS_PER_WRITER; i++)
			verify_key(m, &keys[i]);
	}
	mnt_stop(m);
}

static void test_fsync_root_dir_flushes_everything(void **state)
{
	struct mnt *m = up(state, "flush_interval=1h");
	char *before, *after;
	int fd;

	for (int d = 0; d < 5; d++) {
		ASSERT_SYS(mkdir(mnt_path(m, "dir%d", d), 0755));
		for (int i = 0; i < 20; i++) {
			size_t len;
			char *v = make_value(mnt_str(m, "dir%d/k%d", d, i), 1, 50 + 97 * i, &len);

			put_file(mnt_path(m, "dir%d/k%d", d, i), v, len);
			free(v);
		}
	}
	/* Namespace changes are part of "everything". */
	ASSERT_SYS(rename(mnt_path(m, "dir1"), mnt_path(m, "dir1-renamed")));
	ASSERT_SYS(unlink(mnt_path(m, "dir2/k3")));
	ASSERT_SYS(chmod(mnt_path(m, "dir3/k4"), 0600));
	before = tree_snapshot(m->dir);
	ASSERT_SYS(fd = open(m->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC));
	ASSERT_SYS(fsync(fd));
	ASSERT_SYS(close(fd));
	mnt_kill(m);
	mnt_start(m, NULL);
	after = tree_snapshot(m->dir);
	assert_string_equal(after, before);
	free(before);
	free(after);
	mnt_stop(m);
}

static bool log_mentions_lock(const struct mnt *m)
{
	char *log = mnt_log_text(m);
	bool hit = strcasestr(log, "lock") || strcasestr(log, "in use");

	if (!hit)
		print_error("second daemon's output:\n%s\n", log);
	free(log);
	return hit;
}

static void test_second_daemon_refused_while_first_runs(void **state)
{
	struct mnt *m = up(state, NULL);
	struct mnt m2;
	int64_t t0;
	int st = 0, r;

	/* Two mounts of one Redis store share it by design (spec section 9). */
	if (m->redis) {
		mnt_stop(m);
		skip();
	}
	put_str(mnt_path(m, "k"), "first");
	mnt_init_shared(&m2, m, "mnt2");
	t0 = now_ms();
	mnt_spawn(&m2, NULL);
	/* The spec's lock wait is 30 s; allow some slack for a loaded machine. */
	r = mnt_wait_mounted(&m2, 45000, &st);
	if (r == 0)
		fail_msg("a second daemon mounted %s while the first serves the same data", m2.dir);
	if (r == -ETIMEDOUT)
		fail_msg("the second daemon neither mounted nor gave up within 45 s");
	print_message("second daemon gave up after %lld ms\n", (long long)(now_ms() - t0));
	if (!WIFEXITED(st) || WEXITSTATUS(st) == 0)
		fail_msg("second daemon: wait status 0x%x, want a non-zero exit", st);
	if (!log_mentions_lock(&m2))
		fail_msg("the second daemon's message does not mention the lock");
	assert_false(is_mounted(m2.dir, NULL, 0, NULL, 0));
	mnt_cleanup(&m2);
	/* The first one is untouched. */
	assert_file_str(mnt_path(m, "k"), "first");
	put_str(mnt_path(m, "k2"), "still works");
	mnt_restart(m, NULL);
	assert_file_str(mnt_path(m, "k2"), "still works");
	mnt_stop(m);
}

static void test_second_daemon_takes_over_after_unmount(void **state)
{
	/* Plenty to flush at unmount, so the first daemon is still busy after umount. */
	struct mnt *m = up(state, "flush_interval=1h");
	const size_t len = 256 * 1024;
	struct mnt m2;
	char *v = mnt_malloc(m, len);

	for (int i = 0; i < 64; i++) {
		memset(v, 'a' + i % 26, len);
		put_file(mnt_path(m, "k%02d", i), v, len);
	}
	mnt_init_shared(&m2, m, "mnt2");
	mnt_spawn(&m2, m->redis ? "coherence_delay=100ms" : NULL);
	if (m->redis) {
		/* Two mounts of one Redis store share it (spec section 9):
		 * the second one mounts at once, and what the first flushes
		 * at unmount reaches it through the change log. */
		mnt_wait_mounted_or_fail(&m2);
		mnt_stop(m);
		for (int i = 0; i < 64; i++) {
			const char *k = mnt_str(&m2, "%s/k%02d", m2.dir, i);
			int64_t until = now_ms() + 10000;
			size_t got = 0;
			char *data;

			memset(v, 'a' + i % 26, len);
			while ((!(data = read_file(k, &got)) || got != len || memcmp(data, v, len)) &&
			       now_ms() < until) {
				free(data);
				usleep(20000);
			}
			free(data);
			assert_file(k, v, len);
		}
		mnt_stop(&m2);
		mnt_cleanup(&m2);
		return;
	}
	assert_false(is_mounted(m2.dir, NULL, 0, NULL, 0));
	mnt_stop(m);
	mnt_wait_mounted_or_fail(&m2);
	for (int i = 0; i < 64; i++) {
		memset(v, 'a' + i % 26, len);
		assert_file(mnt_str(&m2, "%s/k%02d", m2.dir, i), v, len);
	}
	mnt_stop(&m2);
	mnt_cleanup(&m2);
}

#define BIG_KEYS 80
#define BIG_LEN (256 * 1024)

static void write_big_keys(struct mnt *m)
{
	for (int i = 0; i < BIG_KEYS; i++) {
		size_t len;
		char *v = make_value(mnt_str(m, "big%02d", i), 1, BIG_LEN, &len);

		put_file(mnt_path(m, "big%02d", i), v, len);
		free(v);
	}
}

static void test_full_buffer_makes_writers_wait(void **state)
{
	struct mnt *m = up(state, "buffer_size=1M,flush_interval=1h");

	write_big_keys(m);
	mnt_restart(m, NULL);
	for (int i = 0; i < BIG_KEYS; i++) {
		char why[160];
		const char *k = mnt_str(m, "big%02d", i);

		if (read_gen(mnt_path(m, "%s", k), k, why, sizeof(why)) != 1)
			fail_msg("key %s lost or damaged after a clean remount (%s)", k, why);
	}
	mnt_stop(m);
}

static void test_buffer_bound_limits_crash_loss(void **state)
{
	struct mnt *m = up(state, "buffer_size=1M,flush_interval=1h");
	size_t present = 0;

	write_big_keys(m);
	mnt_kill(m);
	mnt_start(m, NULL);
	for (int i = 0; i < BIG_KEYS; i++) {
		char why[160] = "";
		const char *k = mnt_str(m, "big%02d", i);
		long g = read_gen(mnt_path(m, "%s", k), k, why, sizeof(why));

		if (g == V_TORN)
			fail_msg("key %s is torn: %s", k, why);
		present += g == 1;
	}
	/*
	 * With no timed flush, only buffer pressure flushed: what is lost must
	 * fit in the buffer (1 MiB) plus one flush in flight and one value.
	 */
	if ((BIG_KEYS - present) * BIG_LEN > 2 * 1024 * 1024 + BIG_LEN)
		fail_msg("%zu of %d keys (%zu KiB) lost on SIGKILL with buffer_size=1M",
			 BIG_KEYS - present, BIG_KEYS, (BIG_KEYS - present) * BIG_LEN / 1024);
	mnt_stop(m);
}

#define T(f) cmocka_unit_test_setup_teardown(f, mnt_setup, mnt_teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		T(test_fsynced_values_survive_sigkill),
		T(test_kill_cycles_with_writers),
		T(test_fsync_root_dir_flushes_everything),
		T(test_full_buffer_makes_writers_wait),
		T(test_buffer_bound_limits_crash_loss),
		T(test_second_daemon_takes_over_after_unmount),
		T(test_second_daemon_refused_while_first_runs),
	};

	umask(022);
	if (getenv("TF")) cmocka_set_test_filter(getenv("TF"));
	return cmocka_run_group_tests(tests, NULL, NULL);
}
