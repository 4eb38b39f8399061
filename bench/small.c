/*
 * Small-file workloads: create+write+close, open+read+close, stat (cold and
 * warm), setxattr/getxattr, unlink of many 1 KiB files, and an `ls -l` of a
 * large directory. Each runs against every filesystem under test; names
 * are resolved relative to a directory descriptor so that only the file's
 * own component is looked up, as a program working in its directory would.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "bench.h"

#define SMALL_SIZE 1024
#define XATTR_NAME "user.bench"
#define XATTR_LEN 32

struct thr {
	pthread_t tid;
	int i, n, ret;
	int (*fn)(int i, int n, void *arg);
	void *arg;
	pthread_barrier_t *bar;
};

static void *thr_main(void *p)
{
	struct thr *t = p;

	pthread_barrier_wait(t->bar);
	t->ret = t->fn(t->i, t->n, t->arg);
	return NULL;
}

double run_threads(int n, int (*fn)(int i, int n, void *arg), void *arg)
{
	struct thr *t = xcalloc((size_t)n, sizeof(*t));
	pthread_barrier_t bar;
	double t0, dt;
	int bad = 0;

	pthread_barrier_init(&bar, NULL, (unsigned)n + 1);
	for (int i = 0; i < n; i++) {
		t[i] = (struct thr){ .i = i, .n = n, .fn = fn, .arg = arg, .bar = &bar };
		if (pthread_create(&t[i].tid, NULL, thr_main, &t[i]))
			die("pthread_create failed");
	}
	/* Before the release: the main thread may run late on 2 CPUs. */
	t0 = now_s();
	pthread_barrier_wait(&bar);
	for (int i = 0; i < n; i++) {
		pthread_join(t[i].tid, NULL);
		if (t[i].ret)
			bad = t[i].ret;
	}
	dt = now_s() - t0;
	pthread_barrier_destroy(&bar);
	free(t);
	return bad ? NAN : dt;
}

void fill_random(void *buf, size_t len, uint64_t seed)
{
	uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
	unsigned char *p = buf;

	for (size_t i = 0; i < len; i += 8) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		memcpy(p + i, &x, len - i < 8 ? len - i : 8);
	}
}

enum small_op { OP_CREATE, OP_READ, OP_STAT, OP_SETX, OP_GETX, OP_UNLINK, OP_MKNOD };

static const char *const op_names[] = { "create", "read", "stat", "setxattr", "getxattr",
					"unlink", "mknod" };

struct small_ctx {
	int dirfd;
	const char *dir;
	int files;
	enum small_op op;
	const char *where; /* for messages */
	const unsigned char *data;
};

static int small_one(struct small_ctx *c, const char *name, int idx)
{
	unsigned char buf[4096];
	char path[PATH_MAX];
	struct stat st;
	int fd;

	errno = 0;
	switch (c->op) {
	case OP_CREATE:
		fd = openat(c->dirfd, name, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
		if (fd < 0)
			return -errno;
		if (write(fd, c->data + (idx % 64) * 16, SMALL_SIZE) != SMALL_SIZE) {
			int e = errno ? -errno : -EIO;

			close(fd);
			return e;
		}
		return close(fd) ? -errno : 0;
	case OP_READ:
		fd = openat(c->dirfd, name, O_RDONLY | O_CLOEXEC);
		if (fd < 0)
			return -errno;
		if (read(fd, buf, sizeof(buf)) != SMALL_SIZE) {
			int e = errno ? -errno : -EIO;

			close(fd);
			return e;
		}
		return close(fd) ? -errno : 0;
	case OP_STAT:
		return fstatat(c->dirfd, name, &st, 0) ? -errno
		       : st.st_size == SMALL_SIZE ? 0 : -EIO;
	case OP_SETX:
		/* No setxattrat(2) before Linux 6.13: the full path. */
		snprintf(path, sizeof(path), "%s/%s", c->dir, name);
		snprintf((char *)buf, sizeof(buf), "value-%026d", idx);
		return setxattr(path, XATTR_NAME, buf, XATTR_LEN, 0) ? -errno : 0;
	case OP_GETX:
		snprintf(path, sizeof(path), "%s/%s", c->dir, name);
		return getxattr(path, XATTR_NAME, buf, sizeof(buf)) == XATTR_LEN ? 0
		       : errno ? -errno : -EIO;
	case OP_UNLINK:
		return unlinkat(c->dirfd, name, 0) ? -errno : 0;
	case OP_MKNOD:
		return mknodat(c->dirfd, name, S_IFREG | 0644, 0) ? -errno : 0;
	}
	return -EINVAL;
}

static int small_worker(int i, int n, void *arg)
{
	struct small_ctx *c = arg;
	char name[32];

	for (int k = i; k < c->files; k += n) {
		int ret;

		snprintf(name, sizeof(name), "f%06d", k);
		ret = small_one(c, name, k);
		if (ret) {
			warnx_("%s %s/%s: %s", op_names[c->op], c->where, name, strerror(-ret));
			return ret;
		}
	}
	return 0;
}

/* Runs op on files f000000.. in dir with nthreads: operations per second or NAN. */
static double small_run(const char *dir, int files, enum small_op op, int nthreads,
			const unsigned char *data)
{
	struct small_ctx c = { .dir = dir, .files = files, .op = op, .where = dir, .data = data };
	double dt;

	c.dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (c.dirfd < 0) {
		warnx_("open %s: %s", dir, strerror(errno));
		return NAN;
	}
	dt = run_threads(nthreads, small_worker, &c);
	close(c.dirfd);
	return isnan(dt) ? NAN : files / dt;
}

static char *mkdir_in(const char *base, const char *name)
{
	char *d = xasprintf("%s/%s", base, name);

	if (mkdir(d, 0755) && errno != EEXIST)
		warnx_("mkdir %s: %s", d, strerror(errno));
	return d;
}

void bench_small(struct bench *b)
{
	bool want_create = selected(b, "create"), want_read = selected(b, "read");
	bool want_stat = selected(b, "stat"), want_x = selected(b, "xattr");
	bool want_unlink = selected(b, "unlink");
	struct row *r_c1 = NULL, *r_c4 = NULL, *r_r1 = NULL, *r_r4 = NULL, *r_sc = NULL,
		   *r_sw = NULL, *r_xs = NULL, *r_xg = NULL, *r_u1 = NULL, *r_u4 = NULL;
	int nf = b->sz.files;
	unsigned char *data;

	if (!want_create && !want_read && !want_stat && !want_x && !want_unlink)
		return;
	data = xcalloc(1, SMALL_SIZE + 64 * 16);
	fill_random(data, SMALL_SIZE + 64 * 16, 1);
	if (want_create) {
		r_c1 = row_add(xasprintf("create+write+close %dx1KiB, 1 thread", nf), "files/s");
		r_c4 = row_add(xasprintf("create+write+close %dx1KiB, 4 threads", nf), "files/s");
		row_target(r_c1, TGT_VS_BINDFS, 1.5, NULL);
		row_target(r_c4, TGT_VS_BINDFS, 1.5, NULL);
	}
	if (want_read) {
		r_r1 = row_add("open+read+close 1 KiB, 1 thread", "files/s");
		r_r4 = row_add("open+read+close 1 KiB, 4 threads", "files/s");
		row_target(r_r1, TGT_VS_BINDFS, 1.5, NULL);
		row_target(r_r4, TGT_VS_BINDFS, 1.5, NULL);
	}
	if (want_stat) {
		r_sc = row_add("stat cold (first, right after write)", "stats/s");
		r_sw = row_add("stat warm (second)", "stats/s");
		row_target(r_sc, TGT_VS_BINDFS, 1.0, NULL);
		row_target(r_sw, TGT_VS_TMPFS, 0.9, NULL);
	}
	if (want_x) {
		r_xs = row_add("setxattr user.bench (32 B)", "ops/s");
		r_xg = row_add("getxattr user.bench", "ops/s");
	}
	if (want_unlink) {
		r_u1 = row_add("unlink, 1 thread", "files/s");
		r_u4 = row_add("unlink, 4 threads", "files/s");
		row_target(r_u1, TGT_VS_BINDFS, 1.5, NULL);
		row_target(r_u4, TGT_VS_BINDFS, 1.5, NULL);
	}
	for (int k = 0; k < NFS; k++) {
		char *base = mkdir_in(b->fs[k].dir, "small");
		char *s1 = mkdir_in(base, "s1"), *s4 = mkdir_in(base, "s4");
		double v;

		fprintf(stderr, "  small files on %s\n", b->fs[k].name);
		v = small_run(s1, nf, OP_CREATE, 1, data);
		if (r_c1)
			row_set(r_c1, k, v);
		if (want_stat) {
			row_set(r_sc, k, small_run(s1, nf, OP_STAT, 1, data));
			row_set(r_sw, k, small_run(s1, nf, OP_STAT, 1, data));
		}
		if (want_read)
			row_set(r_r1, k, small_run(s1, nf, OP_READ, 1, data));
		if (want_x) {
			v = small_run(s1, nf, OP_SETX, 1, data);
			row_set(r_xs, k, v);
			row_set(r_xg, k, isnan(v) ? NAN : small_run(s1, nf, OP_GETX, 1, data));
		}
		if (want_create || want_read || want_unlink) {
			v = small_run(s4, nf, OP_CREATE, 4, data);
			if (r_c4)
				row_set(r_c4, k, v);
			if (want_read)
				row_set(r_r4, k, small_run(s4, nf, OP_READ, 4, data));
		}
		v = small_run(s1, nf, OP_UNLINK, 1, data);
		if (r_u1)
			row_set(r_u1, k, v);
		if (want_create || want_read || want_unlink) {
			v = small_run(s4, nf, OP_UNLINK, 4, data);
			if (r_u4)
				row_set(r_u4, k, v);
		}
		rmdir(s1);
		rmdir(s4);
		rmdir(base);
		free(s1);
		free(s4);
		free(base);
	}
	free(data);
}

/* readdir + lstat of every entry, as `ls -l` does: entries per second. */
static double ls_l(const char *dir, int expect)
{
	struct dirent *de;
	struct stat st;
	double t0 = now_s(), dt;
	int n = 0;
	DIR *d = opendir(dir);

	if (!d) {
		warnx_("opendir %s: %s", dir, strerror(errno));
		return NAN;
	}
	while ((de = readdir(d))) {
		if (de->d_name[0] == '.')
			continue;
		if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW)) {
			warnx_("lstat %s/%s: %s", dir, de->d_name, strerror(errno));
			closedir(d);
			return NAN;
		}
		n++;
	}
	closedir(d);
	dt = now_s() - t0;
	if (n != expect) {
		warnx_("ls -l %s: %d entries, expected %d", dir, n, expect);
		return NAN;
	}
	return n / dt;
}

void bench_ls(struct bench *b)
{
	struct row *r_mk, *r_ls;
	int n = b->sz.ls_keys;

	if (!selected(b, "ls"))
		return;
	r_mk = row_add(xasprintf("mknod empty file, 4 threads (ls setup)"), "files/s");
	r_ls = row_add(xasprintf("ls -l (readdir+lstat) of %d keys", n), "entries/s");
	for (int k = 0; k < NFS; k++) {
		char *dir = mkdir_in(b->fs[k].dir, "ls");
		double v;

		fprintf(stderr, "  ls -l on %s\n", b->fs[k].name);
		v = small_run(dir, n, OP_MKNOD, 4, NULL);
		row_set(r_mk, k, v);
		if (!isnan(v))
			row_set(r_ls, k, ls_l(dir, n));
		small_run(dir, n, OP_UNLINK, 4, NULL);
		rmdir(dir);
		free(dir);
	}
}
