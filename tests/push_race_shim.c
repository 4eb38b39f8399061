/*
 * The daemon of the page cache race tests (tests/test_push_race.c): nadbfs
 * linked with -Wl,--wrap=fuse_lowlevel_notify_store, so that every push
 * (fs/fs_push.c) can be held at two points while a test makes the change
 * or the read the push must not race with:
 *
 *   - after the push copied the value and started its cache period, before
 *     the store: the shim creates DIR/copied.INO.K and sleeps;
 *   - after the store, before the push checks the value once more: it
 *     creates DIR/stored.INO.K and sleeps again.
 *
 * K counts the stores of inode INO from 1. DIR is $NADBFS_RACE_DIR and each
 * pause $NADBFS_RACE_MS milliseconds; without NADBFS_RACE_DIR the shim only
 * stores. The installed daemon has no such hook.
 */
#define FUSE_USE_VERSION 314
#include <fcntl.h>
#include <fuse_lowlevel.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

/* The wrapped function's own declaration checks these against libfuse's. */
int __real_fuse_lowlevel_notify_store(struct fuse_session *se, fuse_ino_t ino, off_t offset,
				      struct fuse_bufvec *bufv, enum fuse_buf_copy_flags flags);
int __wrap_fuse_lowlevel_notify_store(struct fuse_session *se, fuse_ino_t ino, off_t offset,
				      struct fuse_bufvec *bufv, enum fuse_buf_copy_flags flags);

/* Stores per inode, for K; pushes run on one thread, but cheap to be safe. */
#define RACE_SLOTS 64
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct {
	fuse_ino_t ino;
	unsigned count;
} slots[RACE_SLOTS];

static unsigned next_count(fuse_ino_t ino)
{
	unsigned k = 0;

	pthread_mutex_lock(&lock);
	for (int i = 0; i < RACE_SLOTS; i++)
		if (slots[i].ino == ino || !slots[i].ino) {
			slots[i].ino = ino;
			k = ++slots[i].count;
			break;
		}
	pthread_mutex_unlock(&lock);
	return k;
}

/* Creates DIR/what.INO.K, then pauses. */
static void mark(const char *dir, const char *what, fuse_ino_t ino, unsigned k)
{
	const char *ms = getenv("NADBFS_RACE_MS");
	long pause = ms ? strtol(ms, NULL, 10) : 0;
	struct timespec ts = { .tv_sec = pause / 1000, .tv_nsec = pause % 1000 * 1000000L };
	char path[PATH_MAX];
	int fd;

	snprintf(path, sizeof(path), "%s/%s.%llu.%u", dir, what, (unsigned long long)ino, k);
	fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
	if (fd >= 0)
		close(fd);
	while (nanosleep(&ts, &ts))
		;
}

int __wrap_fuse_lowlevel_notify_store(struct fuse_session *se, fuse_ino_t ino, off_t offset,
				      struct fuse_bufvec *bufv, enum fuse_buf_copy_flags flags)
{
	const char *dir = getenv("NADBFS_RACE_DIR");
	unsigned k;
	int ret;

	if (!dir)
		return __real_fuse_lowlevel_notify_store(se, ino, offset, bufv, flags);
	k = next_count(ino);
	mark(dir, "copied", ino, k);
	ret = __real_fuse_lowlevel_notify_store(se, ino, offset, bufv, flags);
	mark(dir, "stored", ino, k);
	return ret;
}
