/*
 * The --wrap shim of tests/fault_shim.h. The test and the store's flusher
 * thread both call it, so the fault is under a mutex. Matching a file by the
 * path behind its descriptor (/proc/self/fd) keeps a fault on, say,
 * snapshot.tmp from also hitting the journal, whatever order the backend
 * writes them in.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#include "fault_shim.h"

ssize_t __real_write(int fd, const void *buf, size_t len);
/* With _FILE_OFFSET_BITS=64 (meson's default) the library calls the 64-bit names. */
ssize_t __real_pwrite64(int fd, const void *buf, size_t len, off_t off);
ssize_t __real_pwritev64(int fd, const struct iovec *iov, int cnt, off_t off);
int __real_fsync(int fd);
int __real_fdatasync(int fd);
int __real_openat64(int dirfd, const char *path, int flags, ...);
int __real_rename(const char *from, const char *to);
int __real_renameat(int fromfd, const char *from, int tofd, const char *to);
int __real_renameat2(int fromfd, const char *from, int tofd, const char *to, unsigned flags);

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct {
	int ops, err, skip, count, hits;
	bool short_write;
	char file[128];
} f;

void fault_arm(int ops, const char *file, int err, int skip, int count, bool short_write)
{
	pthread_mutex_lock(&lock);
	f.ops = ops;
	f.err = err;
	f.skip = skip;
	f.count = count;
	f.hits = 0;
	f.short_write = short_write;
	snprintf(f.file, sizeof(f.file), "%s", file ? file : "");
	pthread_mutex_unlock(&lock);
}

void fault_clear(void)
{
	pthread_mutex_lock(&lock);
	f.ops = 0;
	pthread_mutex_unlock(&lock);
}

int fault_hits(void)
{
	int n;

	pthread_mutex_lock(&lock);
	n = f.hits;
	pthread_mutex_unlock(&lock);
	return n;
}

static struct {
	void (*fn)(void *arg, const char *from, const char *to);
	void *arg;
	bool after;
	char file[128];
} rh;

void fault_rename_hook(const char *file, bool after,
		       void (*fn)(void *arg, const char *from, const char *to), void *arg)
{
	pthread_mutex_lock(&lock);
	rh.fn = fn;
	rh.arg = arg;
	rh.after = after;
	snprintf(rh.file, sizeof(rh.file), "%s", file ? file : "");
	pthread_mutex_unlock(&lock);
}

/* The rename hook, if one is set for this moment and this target. */
static void rename_hook(bool after, const char *from, const char *to)
{
	void (*fn)(void *arg, const char *from, const char *to) = NULL;
	void *arg = NULL;

	pthread_mutex_lock(&lock);
	if (rh.fn && rh.after == after && (!rh.file[0] || strstr(to, rh.file))) {
		fn = rh.fn;
		arg = rh.arg;
	}
	pthread_mutex_unlock(&lock);
	if (fn)
		fn(arg, from, to);
}

/* Does this call fail? names: what it concerns (up to two paths). */
static bool hit(int op, const char *a, const char *b)
{
	bool r = false;

	pthread_mutex_lock(&lock);
	if (!(f.ops & op) || f.count == 0)
		goto out;
	if (f.file[0] && !(a && strstr(a, f.file)) && !(b && strstr(b, f.file)))
		goto out;
	if (f.skip > 0) {
		f.skip--;
		goto out;
	}
	if (f.count > 0)
		f.count--;
	f.hits++;
	r = true;
out:
	pthread_mutex_unlock(&lock);
	return r;
}

static bool hit_fd(int op, int fd)
{
	char link[64], path[PATH_MAX];
	ssize_t n;

	if (!(__atomic_load_n(&f.ops, __ATOMIC_RELAXED) & op))
		return false;
	snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
	n = readlink(link, path, sizeof(path) - 1);
	path[n < 0 ? 0 : n] = '\0';
	return hit(op, path, NULL);
}

static bool shorten(void)
{
	bool s;

	pthread_mutex_lock(&lock);
	s = f.short_write;
	pthread_mutex_unlock(&lock);
	return s;
}

ssize_t __wrap_write(int fd, const void *buf, size_t len)
{
	if (len && hit_fd(F_WRITE, fd)) {
		if (shorten() && (len > 1 || !f.err))
			return __real_write(fd, buf, len > 1 ? len / 2 : len);
		errno = __atomic_load_n(&f.err, __ATOMIC_RELAXED);
		return -1;
	}
	return __real_write(fd, buf, len);
}

ssize_t __wrap_pwrite64(int fd, const void *buf, size_t len, off_t off)
{
	if (len && hit_fd(F_WRITE, fd)) {
		if (shorten() && (len > 1 || !f.err))
			return __real_pwrite64(fd, buf, len > 1 ? len / 2 : len, off);
		errno = __atomic_load_n(&f.err, __ATOMIC_RELAXED);
		return -1;
	}
	return __real_pwrite64(fd, buf, len, off);
}

ssize_t __wrap_pwritev64(int fd, const struct iovec *iov, int cnt, off_t off)
{
	if (cnt > 0 && hit_fd(F_WRITE, fd)) {
		/* Half of the first buffer: a record cut inside its frame. */
		if (shorten() && (iov[0].iov_len > 1 || !f.err))
			return __real_pwrite64(fd, iov[0].iov_base,
					       iov[0].iov_len > 1 ? iov[0].iov_len / 2 : 1, off);
		errno = __atomic_load_n(&f.err, __ATOMIC_RELAXED);
		return -1;
	}
	return __real_pwritev64(fd, iov, cnt, off);
}

int __wrap_fsync(int fd)
{
	if (hit_fd(F_FSYNC, fd)) {
		errno = __atomic_load_n(&f.err, __ATOMIC_RELAXED);
		return -1;
	}
	return __real_fsync(fd);
}

int __wrap_fdatasync(int fd)
{
	if (hit_fd(F_FSYNC, fd)) {
		errno = __atomic_load_n(&f.err, __ATOMIC_RELAXED);
		return -1;
	}
	return __real_fdatasync(fd);
}

int __wrap_rename(const char *from, const char *to)
{
	rename_hook(false, from, to);
	if (hit(F_RENAME, from, to)) {
		errno = __atomic_load_n(&f.err, __ATOMIC_RELAXED);
		return -1;
	}
	int ret = __real_rename(from, to);

	if (ret == 0)
		rename_hook(true, from, to);
	return ret;
}

int __wrap_renameat(int fromfd, const char *from, int tofd, const char *to)
{
	rename_hook(false, from, to);
	if (hit(F_RENAME, from, to)) {
		errno = __atomic_load_n(&f.err, __ATOMIC_RELAXED);
		return -1;
	}
	int ret = __real_renameat(fromfd, from, tofd, to);

	if (ret == 0)
		rename_hook(true, from, to);
	return ret;
}

int __wrap_renameat2(int fromfd, const char *from, int tofd, const char *to, unsigned flags)
{
	rename_hook(false, from, to);
	if (hit(F_RENAME, from, to)) {
		errno = __atomic_load_n(&f.err, __ATOMIC_RELAXED);
		return -1;
	}
	int ret = __real_renameat2(fromfd, from, tofd, to, flags);

	if (ret == 0)
		rename_hook(true, from, to);
	return ret;
}

/* Creations only: the path is the directory's joined with the name. */
int __wrap_openat64(int dirfd, const char *path, int flags, ...)
{
	mode_t mode = 0;

	/* As glibc reads it: __O_TMPFILE includes O_DIRECTORY. */
	if ((flags & O_CREAT) || (flags & __O_TMPFILE) == __O_TMPFILE) {
		va_list ap;

		va_start(ap, flags);
		mode = va_arg(ap, mode_t);
		va_end(ap);
	}
	if ((flags & O_CREAT) && (__atomic_load_n(&f.ops, __ATOMIC_RELAXED) & F_CREATE)) {
		char link[64], dir[PATH_MAX], full[2 * PATH_MAX];
		ssize_t n = -1;

		if (dirfd != AT_FDCWD) {
			snprintf(link, sizeof(link), "/proc/self/fd/%d", dirfd);
			n = readlink(link, dir, sizeof(dir) - 1);
		}
		dir[n < 0 ? 0 : n] = '\0';
		snprintf(full, sizeof(full), "%s/%s", dir, path);
		if (hit(F_CREATE, full, NULL)) {
			errno = __atomic_load_n(&f.err, __ATOMIC_RELAXED);
			return -1;
		}
	}
	return __real_openat64(dirfd, path, flags, mode);
}
