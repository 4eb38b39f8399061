/*
 * Crash loop (issue 9): writer threads write, rename, retag, change TTLs and
 * fsync self-describing values; the daemon is SIGKILLed at a random moment,
 * remounted with no repair, and everything is checked against what the
 * writers know was durable. Also, where the machine has loop devices, the
 * same with the data directory on an ext4 that is shut down mid-flush
 * (EXT4_IOC_SHUTDOWN, as a power cut looks to the filesystem).
 *
 * Each writer owns its keys, so the test knows each key's state without
 * locks: per key, what was attempted and what is known durable (a floor that
 * can only rise), for the value generation, the tag generation, the TTL
 * generation and the key's name (every key toggles between NAME.a and
 * NAME.b by rename).
 *
 *   NADBFS_CRASH_ITERATIONS=N   kills (default 100; the ext4 variant:
 *                               NADBFS_CRASH_EXT4_ITERATIONS, default 30;
 *                               NADBFS_CRASH_EXT4=0 leaves it out)
 *   NADBFS_CRASH_TRACE=1        prints every operation (to find a failure's history)
 *   NADBFS_CRASH_SEED=S         replays a run (the seed is printed)
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "crash_state.h"
#include "mnt.h"

#ifndef EXT4_IOC_SHUTDOWN
#define EXT4_IOC_SHUTDOWN _IOR('X', 125, uint32_t)
#endif
#define EXT4_GOING_FLAGS_NOLOGFLUSH 0x2 /* what a power cut leaves: no journal flush */

#define WRITERS 3
#define OPTS "flush_interval=30ms"

struct writer {
	pthread_t thread;
	struct mnt *m;
	struct cs_key *keys;
	atomic_int *ops;
	atomic_bool *killed;
	bool ext4;		/* the kill is an ext4 shutdown first */
	atomic_bool stop;
	unsigned seed;
	int err;		/* first error seen before the kill */
	char what[96];
	long ok_ops;
	long raced;		/* fsyncs that succeeded after the cut began */
};

static void set_err(struct writer *w, int err, const char *op, const struct cs_key *k)
{
	if (!atomic_load(w->killed) && !w->err) {
		w->err = err;
		snprintf(w->what, sizeof(w->what), "%s %s", op, k ? k->name : "/");
	}
}

/*
 * Whether an fsync that just succeeded proves durability. After a SIGKILL
 * it always does. An ext4 shutdown is different: an fsync already inside
 * ext4 when the filesystem is cut off can return 0 for a journal
 * transaction the abort dropped (ext4_sync_file checks for the shutdown
 * only on entry; jbd2_complete_transaction returns 0 for a transaction no
 * longer running). After a real power cut no process sees such a reply, so
 * only an fsync that returned before the cut began counts: killed is set
 * before the shutdown ioctl, and read here after the fsync returned.
 */
static bool fsync_counts(struct writer *w)
{
	if (!w->ext4 || !atomic_load(w->killed))
		return true;
	w->raced++;
	return false;
}

/* Everything this writer did before a successful fsync is durable. */
static void all_durable(struct writer *w)
{
	if (!fsync_counts(w))
		return;
	for (int i = 0; i < CS_KEYS; i++)
		cs_mark_durable(&w->keys[i]);
}

static int do_fsync_key(struct writer *w, struct cs_key *k)
{
	char path[PATH_MAX];
	int fd;

	cs_path(w->m->dir, k, k->loc, path, sizeof(path));
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (fsync(fd)) {
		int e = -errno;

		close(fd);
		return e;
	}
	close(fd);
	/* Only this key: fsync of a clean key returns at once, flushing nothing. */
	if (fsync_counts(w))
		cs_mark_durable(k);
	return 0;
}

static bool trace;

static int one_op(struct writer *w)
{
	struct cs_key *k = &w->keys[rand_r(&w->seed) % CS_KEYS];
	unsigned r = rand_r(&w->seed) % 100;
	char path[PATH_MAX], to[PATH_MAX], v[64];
	int ret = 0, fd;

	if (trace)
		fprintf(stderr, "op %u %s loc %d v %u/%u t %u/%u x %u/%u\n", r, k->name, k->loc,
			k->vfloor, k->vatt, k->tfloor, k->tatt, k->xfloor, k->xatt);

	cs_path(w->m->dir, k, k->loc, path, sizeof(path));
	if (!k->exists || r < 45) {
		size_t len = 1 + rand_r(&w->seed) % (rand_r(&w->seed) % 8 ? 12000 : 150000);

		bool synced;

		ret = cs_write(path, k, len, rand_r(&w->seed) % 4 == 0, &synced);
		if (synced && fsync_counts(w))
			cs_mark_durable(k);
		if (ret)
			set_err(w, ret, "write", k);
		return ret;
	}
	if (r < 60) {
		cs_path(w->m->dir, k, !k->loc, to, sizeof(to));
		if (rename(path, to)) {
			set_err(w, -errno, "rename", k);
			return -1;
		}
		k->loc = !k->loc;
		k->loc_durable = false;
	} else if (r < 75) {
		unsigned g = ++k->tatt;

		cs_tags(g, v, sizeof(v));
		if (setxattr(path, "user.tags", v, strlen(v), 0)) {
			set_err(w, -errno, "setxattr user.tags", k);
			return -1;
		}
		k->tcur = g;
	} else if (r < 88) {
		unsigned g = ++k->xatt;
		long long ttl = cs_ttl(g);

		if (ttl) {
			snprintf(v, sizeof(v), "%lld", ttl);
			ret = setxattr(path, "user.ttl", v, strlen(v), 0);
		} else {
			ret = removexattr(path, "user.ttl");
			if (ret && errno == ENODATA)
				ret = 0;
		}
		if (ret) {
			set_err(w, -errno, "user.ttl", k);
			return -1;
		}
		k->xcur = g;
	} else if (r < 95) {
		if ((ret = do_fsync_key(w, k)))
			set_err(w, ret, "fsync", k);
		return ret;
	} else {
		fd = open(w->m->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (fd < 0 || fsync(fd)) {
			set_err(w, -errno, "fsync of the root", NULL);
			if (fd >= 0)
				close(fd);
			return -1;
		}
		close(fd);
		all_durable(w);
	}
	return 0;
}

static void *writer_main(void *arg)
{
	struct writer *w = arg;

	while (!atomic_load(&w->stop)) {
		if (one_op(w))
			break;
		w->ok_ops++;
		atomic_fetch_add(w->ops, 1);
	}
	return NULL;
}

struct loop {
	struct mnt *m;
	struct cs_key keys[WRITERS * CS_KEYS];
	unsigned long long seed;
	int iterations;
	bool ext4;		/* data dir on a loop-mounted ext4, shut down instead of a kill */
	const char *ext4_dir;
	long total_ops, total_raced;
};

static int env_int(const char *name, int dflt)
{
	const char *s = getenv(name);

	return s && *s ? atoi(s) : dflt;
}

/* Cuts the ext4 under the data directory off as a power cut would. */
static void ext4_shutdown(const char *dir)
{
	uint32_t flags = EXT4_GOING_FLAGS_NOLOGFLUSH;
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

	if (fd < 0 || ioctl(fd, EXT4_IOC_SHUTDOWN, &flags))
		fail_msg("EXT4_IOC_SHUTDOWN on %s: %s", dir, strerrorname_np(errno));
	close(fd);
}

static void one_iteration(struct loop *L, int it)
{
	struct mnt *m = L->m;
	struct writer w[WRITERS];
	atomic_int ops;
	atomic_bool killed;
	unsigned rs = (unsigned)(L->seed * 7919 + (unsigned long long)it);
	int target = 5 + rand_r(&rs) % 400;
	int64_t deadline = now_ms() + 20000;

	cs_set_context("iteration %d of seed %llu", it, L->seed);
	atomic_init(&ops, 0);
	atomic_init(&killed, false);
	for (int t = 0; t < WRITERS; t++) {
		w[t] = (struct writer){ .m = m, .keys = &L->keys[t * CS_KEYS], .ops = &ops,
					.killed = &killed, .ext4 = L->ext4,
					.seed = rs * 31 + (unsigned)t };
		atomic_init(&w[t].stop, false);
		assert_int_equal(pthread_create(&w[t].thread, NULL, writer_main, &w[t]), 0);
	}
	/* The random moment: after a seeded number of operations, plus jitter. */
	while (atomic_load(&ops) < target && now_ms() < deadline)
		sched_yield();
	for (unsigned j = rand_r(&rs) % 50000; j > 0; j--)
		__asm__ volatile("" ::: "memory");
	atomic_store(&killed, true);
	if (L->ext4) {
		ext4_shutdown(L->ext4_dir);
		/* Let the daemon meet the dead filesystem mid-flush before the kill. */
		for (int i = rand_r(&rs) % 4; i > 0; i--)
			sched_yield();
	}
	assert_int_equal(kill(m->pid, SIGKILL), 0);
	for (int t = 0; t < WRITERS; t++) {
		atomic_store(&w[t].stop, true);
		pthread_join(w[t].thread, NULL);
	}
	mnt_kill(m);
	for (int t = 0; t < WRITERS; t++) {
		if (w[t].err)
			fail_msg("%s: %s before the kill: %s", cs_context(), w[t].what,
				 strerrorname_np(-w[t].err));
		L->total_ops += w[t].ok_ops;
		L->total_raced += w[t].raced;
	}
	if (atomic_load(&ops) < target)
		fail_msg("%s: only %d operations in 20 s", cs_context(), atomic_load(&ops));
	if (L->ext4) {
		/* Unmount and mount again: ext4 replays its journal, nothing else. */
		if (run_cmd("umount %s && mount -o loop %s %s", shq(m, L->ext4_dir),
			    shq(m, mnt_str(m, "%s/ext4.img", m->root)), shq(m, L->ext4_dir)))
			fail_msg("%s: cannot remount the ext4 image", cs_context());
	}
	m->errors_expected = false;
	/* The mount must come up every time, with no repair. */
	mnt_start(m, OPTS);
	if (L->ext4)
		m->errors_expected = true;
	cs_verify(m->dir, L->keys, WRITERS * CS_KEYS);
}

static void run_loop(struct loop *L)
{
	struct mnt *m = L->m;
	const char *s = getenv("NADBFS_CRASH_SEED");
	int64_t t0 = now_ms();
	long checked0 = cs_checked();

	trace = getenv("NADBFS_CRASH_TRACE") != NULL;
	L->seed = s && *s ? strtoull(s, NULL, 0)
			  : (unsigned long long)time(NULL) ^ ((unsigned long long)getpid() << 16);
	print_message("crash loop: %d iterations, seed %llu (replay: NADBFS_CRASH_SEED=%llu)\n",
		      L->iterations, L->seed, L->seed);
	cs_init_keys(L->keys, WRITERS);
	mnt_start(m, OPTS);
	if (L->ext4)
		m->errors_expected = true;
	for (int t = 0; t < WRITERS; t++)
		ASSERT_SYS(mkdir(mnt_path(m, "w%d", t), 0755));
	{
		int fd = open(m->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

		ASSERT_SYS(fd);
		ASSERT_SYS(fsync(fd));
		close(fd);
	}
	for (int it = 0; it < L->iterations; it++)
		one_iteration(L, it);
	m->errors_expected = false;
	mnt_stop(m);
	print_message("crash loop: %d kills survived, %ld operations, %ld fsync'd or flushed "
		      "states checked, %ld fsyncs that returned after the cut began not counted, "
		      "in %lld ms\n",
		      L->iterations, L->total_ops, cs_checked() - checked0, L->total_raced,
		      (long long)(now_ms() - t0));
}

static void test_crash_loop(void **state)
{
	struct loop L = { .m = *state, .iterations = env_int("NADBFS_CRASH_ITERATIONS", 100) };

	run_loop(&L);
}

/* Can this machine loop-mount an ext4? Missing pieces skip, never fail. */
static bool ext4_available(struct mnt *m, const char *img, const char *dir)
{
	if (run_cmd("command -v mkfs.ext4 && command -v losetup && losetup -f") != 0)
		return false;
	if (run_cmd("truncate -s 256M %s && mkfs.ext4 -q -F %s", shq(m, img), shq(m, img)))
		return false;
	return run_cmd("mount -o loop %s %s", shq(m, img), shq(m, dir)) == 0;
}

static void test_crash_loop_ext4_shutdown(void **state)
{
	struct loop L = { .m = *state, .ext4 = true,
			  .iterations = env_int("NADBFS_CRASH_EXT4_ITERATIONS", 30) };
	struct mnt *m = L.m;

	/* The Redis backend keeps no data directory: nothing to cut off. */
	if (mnt_default_backend() == MNT_BACKEND_REDIS)
		skip();
	if (getenv("NADBFS_CRASH_EXT4") && !strcmp(getenv("NADBFS_CRASH_EXT4"), "0")) {
		print_message("ext4 shutdown variant left out (NADBFS_CRASH_EXT4=0)\n");
		skip();
	}
	mnt_init(m);
	L.ext4_dir = m->data;
	mkdir(m->data, 0700);
	if (!ext4_available(m, mnt_str(m, "%s/ext4.img", m->root), m->data)) {
		print_message("no loop device or mkfs.ext4 here: ext4 shutdown variant skipped\n");
		skip();
	}
	run_loop(&L);
	/* mnt_cleanup detaches it lazily too; this frees the loop device at once. */
	if (run_cmd("umount %s", shq(m, m->data)))
		fail_msg("cannot unmount the ext4 image");
}

#define T(f) cmocka_unit_test_setup_teardown(f, mnt_setup, mnt_teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		T(test_crash_loop),
		T(test_crash_loop_ext4_shutdown),
	};

	umask(022);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
