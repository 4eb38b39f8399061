/*
 * Mount-test helpers that need no daemon (see mnt.h): shell quoting, whole
 * files on real syscalls, shell commands with a deadline and tree snapshots.
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>

#include "mnt.h"

#define CMD_TIMEOUT_MS 120000

const char *shq(struct mnt *m, const char *s)
{
	size_t n = 3;
	char *q, *p;
	const char *r;

	for (const char *c = s; *c; c++)
		n += *c == '\'' ? 4 : 1;
	q = malloc(n);
	assert_non_null(q);
	p = q;
	*p++ = '\'';
	for (const char *c = s; *c; c++) {
		if (*c == '\'') {
			memcpy(p, "'\\''", 4);
			p += 4;
		} else {
			*p++ = *c;
		}
	}
	*p++ = '\'';
	*p = '\0';
	r = mnt_str(m, "%s", q);
	free(q);
	return r;
}

int write_file(const char *path, const void *data, size_t len)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	const char *p = data;
	int err = 0;

	if (fd < 0)
		return -errno;
	while (len) {
		ssize_t n = write(fd, p, len);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			err = -errno;
			break;
		}
		p += n;
		len -= (size_t)n;
	}
	if (close(fd) && !err)
		err = -errno;
	return err;
}

void *read_file(const char *path, size_t *len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	size_t cap = 4096, n = 0;
	char *buf;

	if (fd < 0)
		return NULL;
	buf = malloc(cap + 1);
	assert_non_null(buf);
	for (;;) {
		ssize_t r;

		if (n == cap) {
			cap *= 2;
			buf = realloc(buf, cap + 1);
			assert_non_null(buf);
		}
		r = read(fd, buf + n, cap - n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			int e = errno;

			free(buf);
			close(fd);
			errno = e;
			return NULL;
		}
		if (r == 0)
			break;
		n += (size_t)r;
	}
	close(fd);
	buf[n] = '\0';
	if (len)
		*len = n;
	return buf;
}

static int run_vcmd(char **out, const char *fmt, va_list ap)
{
	char *cmd;
	int mfd, st = 0, r;
	pid_t pid;

	if (vasprintf(&cmd, fmt, ap) < 0)
		fail_msg("vasprintf failed");
	/* A memfd, not a pipe: a daemon that keeps our stdout must not hang the test. */
	mfd = memfd_create("nadbfs-test-out", MFD_CLOEXEC);
	assert_true(mfd >= 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		int in = open("/dev/null", O_RDONLY);

		dup2(in, 0);
		dup2(mfd, 1);
		dup2(mfd, 2);
		close_range(3, ~0U, 0);
		execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
		_exit(127);
	}
	r = wait_pid(pid, CMD_TIMEOUT_MS, &st);
	if (r == -ETIMEDOUT) {
		kill(pid, SIGKILL);
		waitpid(pid, NULL, 0);
		close(mfd);
		fail_msg("command still running after %d ms: %s", CMD_TIMEOUT_MS, cmd);
	}
	assert_int_equal(r, 0);
	if (out) {
		off_t len = lseek(mfd, 0, SEEK_END);
		char *buf;

		assert_true(len >= 0);
		buf = malloc((size_t)len + 1);
		assert_non_null(buf);
		assert_int_equal(pread(mfd, buf, (size_t)len, 0), len);
		buf[len] = '\0';
		*out = buf;
	}
	close(mfd);
	free(cmd);
	if (WIFEXITED(st))
		return WEXITSTATUS(st);
	return 128 + WTERMSIG(st);
}

int run_cmd(const char *fmt, ...)
{
	va_list ap;
	int r;

	va_start(ap, fmt);
	r = run_vcmd(NULL, fmt, ap);
	va_end(ap);
	return r;
}

int run_cmd_out(char **out, const char *fmt, ...)
{
	va_list ap;
	int r;

	va_start(ap, fmt);
	r = run_vcmd(out, fmt, ap);
	va_end(ap);
	return r;
}

void put_file(const char *path, const void *data, size_t len)
{
	int r = write_file(path, data, len);

	if (r)
		fail_msg("writing %zu bytes to %s: %s", len, path, strerrorname_np(-r));
}

void put_str(const char *path, const char *s)
{
	put_file(path, s, strlen(s));
}

void assert_file(const char *path, const void *want, size_t len)
{
	size_t n, i;
	char *got = read_file(path, &n);
	const unsigned char *w = want;

	if (!got)
		fail_msg("reading %s: %s", path, strerrorname_np(errno));
	for (i = 0; i < n && i < len; i++)
		if ((unsigned char)got[i] != w[i])
			break;
	if (n != len || i < len) {
		unsigned g = i < n ? (unsigned char)got[i] : 0;

		free(got);
		if (i < n && i < len)
			fail_msg("%s: byte %zu is 0x%02x, want 0x%02x (size %zu, want %zu)", path,
				 i, g, w[i], n, len);
		fail_msg("%s: size %zu, want %zu (equal up to byte %zu)", path, n, len, i);
	}
	free(got);
}

void assert_file_str(const char *path, const char *want)
{
	assert_file(path, want, strlen(want));
}

uint64_t fnv1a(const void *p, size_t n)
{
	const unsigned char *c = p;
	uint64_t h = 14695981039346656037ULL;

	while (n--) {
		h ^= *c++;
		h *= 1099511628211ULL;
	}
	return h;
}

/* nftw has no callback argument. */
static struct {
	char **lines;
	size_t n, cap;
	size_t base;
} snap;

static int snap_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	const char *rel = path + snap.base;
	char esc[4 * PATH_MAX], *e = esc;
	uint64_t h = 0;
	char *line;

	if (ftw->level == 0)
		return FTW_CONTINUE;
	if (ftw->level == 1 && (!strcmp(rel, "/tags") || !strcmp(rel, "/.nadb")))
		return FTW_SKIP_SUBTREE;
	if (flag == FTW_NS || flag == FTW_DNR)
		fail_msg("snapshot: cannot stat or read %s", path);
	for (const unsigned char *c = (const unsigned char *)rel; *c; c++) {
		if (*c > 0x20 && *c < 0x7f && *c != '\\')
			*e++ = (char)*c;
		else
			e += sprintf(e, "\\x%02x", *c);
	}
	*e = '\0';
	if (S_ISREG(st->st_mode)) {
		size_t len;
		char *data = read_file(path, &len);

		if (!data)
			fail_msg("snapshot: reading %s: %s", path, strerrorname_np(errno));
		h = fnv1a(data, len);
		free(data);
	}
	if (asprintf(&line, "%s type=%o mode=%o uid=%u gid=%u size=%lld mtime=%lld.%09ld hash=%016llx",
		     esc, (unsigned)(st->st_mode & S_IFMT), (unsigned)(st->st_mode & 07777),
		     (unsigned)st->st_uid, (unsigned)st->st_gid,
		     S_ISREG(st->st_mode) ? (long long)st->st_size : 0LL,
		     (long long)st->st_mtim.tv_sec, st->st_mtim.tv_nsec, (unsigned long long)h) < 0)
		fail_msg("snapshot: asprintf failed");
	if (snap.n == snap.cap) {
		snap.cap = snap.cap ? snap.cap * 2 : 256;
		snap.lines = realloc(snap.lines, snap.cap * sizeof(*snap.lines));
		assert_non_null(snap.lines);
	}
	snap.lines[snap.n++] = line;
	return FTW_CONTINUE;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

mode_t mnt_mode(struct mnt *m, const char *path)
{
	struct stat st;

	ASSERT_SYS(stat(mnt_path(m, "%s", path), &st));
	return st.st_mode & 07777;
}

const char *mnt_ls(struct mnt *m, const char *dir)
{
	char *out = NULL, *p;
	const char *ret;

	if (run_cmd_out(&out, "ls -1 %s 2>&1", shq(m, mnt_path(m, "%s", dir)))) {
		free(out);
		return "E";
	}
	for (p = out; *p; p++)
		if (*p == '\n')
			*p = p[1] ? ',' : '\0';
	ret = mnt_str(m, "%s", out);
	free(out);
	return ret;
}

char *tree_snapshot(const char *dir)
{
	size_t total = 1;
	char *out, *p;

	memset(&snap, 0, sizeof(snap));
	snap.base = strlen(dir);
	if (nftw(dir, snap_one, 32, FTW_PHYS | FTW_MOUNT | FTW_ACTIONRETVAL) < 0)
		fail_msg("snapshot of %s: %s", dir, strerrorname_np(errno));
	qsort(snap.lines, snap.n, sizeof(*snap.lines), cmp_str);
	for (size_t i = 0; i < snap.n; i++)
		total += strlen(snap.lines[i]) + 1;
	out = p = malloc(total);
	assert_non_null(out);
	for (size_t i = 0; i < snap.n; i++) {
		p = stpcpy(p, snap.lines[i]);
		*p++ = '\n';
		free(snap.lines[i]);
	}
	*p = '\0';
	free(snap.lines);
	memset(&snap, 0, sizeof(snap));
	return out;
}
