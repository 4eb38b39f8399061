/*
 * Concurrency stress on the mount: 32 threads of mixed operations on a small
 * set of overlapping names, so that they collide all the time: create, write
 * at offsets, read, truncate, rename (keys and directories), unlink,
 * mkdir/rmdir, user.* xattrs, user.tags, user.ttl (some expire during the
 * run), listings of tags/ and directories, fsync, stat, ctl flush and now
 * and then a transaction under .nadb/tx committed through .nadb/ctl.
 *
 * Checked: no call fails with an errno that a race cannot explain (each
 * operation has its own list: ENOENT, EEXIST, ENOTEMPTY, ENODATA, ...), no
 * byte read is anything but zero (a hole) or the byte every writer puts at
 * that offset, the daemon stays up, and afterwards: every key is readable
 * with exactly its size in bytes, every tags/ listing equals the keys whose
 * user.tags name it, the same tree after a remount, a clean unmount and no
 * sanitizer report in the daemon's log (tests/mnt.c).
 *
 *   NADBFS_STRESS_SECONDS (default 15)  how long the threads run
 *   NADBFS_STRESS_SEED                  replays one seed's per-thread operation
 *                                       sequences (the interleaving is the
 *                                       scheduler's)
 *   NADBFS_STRESS_THREADS (default 32)
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "mnt.h"

#define MAX_THREADS 64
#define NDIRS	    3 /* d0..d2, each may hold s (a subdirectory) and keys */
#define NKEYS	    4 /* k0..k3 at the root and in each directory */
#define MAX_OFF	    (160 * 1024)
#define MAX_LEN	    (64 * 1024)
#define MAX_REPORTS 20

static const char *const tag_names[] = { "red", "blue", "green" };
#define NTAGS 3

/* The byte every writer puts at offset off: never 0, so holes show. */
static inline unsigned char pat(uint64_t off)
{
	return (unsigned char)(off % 251 + 1);
}

enum op {
	OP_WRITE_NEW,
	OP_PWRITE,
	OP_READ,
	OP_TRUNCATE,
	OP_RENAME,
	OP_RENAME_DIR,
	OP_UNLINK,
	OP_MKDIR,
	OP_RMDIR,
	OP_XATTR,
	OP_TAGS,
	OP_TTL,
	OP_LIST_TAGS,
	OP_LIST_DIR,
	OP_FSYNC,
	OP_STAT,
	OP_TX,
	OP_FLUSH,
	OP_COUNT
};
static const char *const op_names[OP_COUNT] = { "write_new", "pwrite",	   "read",   "truncate",
						"rename",    "rename_dir", "unlink", "mkdir",
						"rmdir",     "xattr",	   "tags",   "ttl",
						"list_tags", "list_dir",   "fsync",  "stat",
						"tx",	     "flush" };
/* Relative weights. */
static const int op_weight[OP_COUNT] = { 10, 14, 12, 4, 8, 2, 5, 4, 3, 4, 6, 2, 3, 3, 3, 8, 1, 1 };

struct stress {
	struct mnt *m;
	uint64_t seed;
	int64_t deadline_ms;
	int nthreads;
	pthread_mutex_t lock;
	int reports; /* lock */
	atomic_long unexpected;
	atomic_long ok[OP_COUNT], refused[OP_COUNT];
	atomic_long tx_commits, tx_conflicts, bad_bytes, estale;
};

struct worker {
	struct stress *s;
	int idx;
	uint64_t rng;
	pthread_t thread;
	char *buf;
};

static uint64_t rnd(struct worker *w)
{
	/* splitmix64 */
	uint64_t z = (w->rng += 0x9e3779b97f4a7c15ULL);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

static unsigned rn(struct worker *w, unsigned n)
{
	return (unsigned)(rnd(w) % n);
}

static void report(struct stress *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void report(struct stress *s, const char *fmt, ...)
{
	va_list ap;

	atomic_fetch_add(&s->unexpected, 1);
	pthread_mutex_lock(&s->lock);
	if (s->reports++ < MAX_REPORTS) {
		va_start(ap, fmt);
		vfprintf(stdout, fmt, ap);
		va_end(ap);
		fputc('\n', stdout);
		fflush(stdout);
	}
	pthread_mutex_unlock(&s->lock);
}

/* Is e in the 0-terminated list? */
static bool in_list(int e, const int *list)
{
	for (; *list; list++)
		if (*list == e)
			return true;
	return false;
}

/*
 * Accounts a call's result: ok when r != -1, refused when errno is one the
 * races of this test explain, else a report. Returns whether it succeeded.
 */
static bool check(struct worker *w, enum op op, long r, const int *allowed, const char *what,
		  const char *path)
{
	int e = errno;

	if (r != -1) {
		atomic_fetch_add(&w->s->ok[op], 1);
		return true;
	}
	if (in_list(e, allowed)) {
		atomic_fetch_add(&w->s->refused[op], 1);
	} else if (e == ESTALE && strstr(path + strlen(w->s->m->dir), "/d")) {
		/*
		 * The kernel's, not the daemon's: a lookup answered with a
		 * directory whose dentry is still elsewhere (a rename of it
		 * is being replied to) cannot move that dentry while the
		 * rename holds s_vfs_rename_mutex, so d_splice_alias() gives
		 * ESTALE. Only paths through the renamed directories dN.
		 */
		atomic_fetch_add(&w->s->refused[op], 1);
		atomic_fetch_add(&w->s->estale, 1);
	} else {
		report(w->s, "thread %d: %s: %s %s: %s", w->idx, op_names[op], what, path,
		       strerrorname_np(e));
	}
	errno = e;
	return false;
}

static const int E_NOENT[] = { ENOENT, 0 };
static const int E_WRITE[] = { ENOENT, 0 };
static const int E_RENAME[] = { ENOENT, ENOTEMPTY, EEXIST, 0 };
static const int E_MKDIR[] = { ENOENT, EEXIST, 0 };
static const int E_RMDIR[] = { ENOENT, ENOTEMPTY, 0 };
static const int E_XATTR[] = { ENOENT, ENODATA, 0 };

/* A key path: kN at the root or dD/kN. */
static void key_path(struct worker *w, char *out, size_t len)
{
	unsigned d = rn(w, NDIRS + 1), k = rn(w, NKEYS);

	if (d == NDIRS)
		snprintf(out, len, "%s/k%u", w->s->m->dir, k);
	else
		snprintf(out, len, "%s/d%u/k%u", w->s->m->dir, d, k);
}

static void dir_path(struct worker *w, char *out, size_t len)
{
	unsigned d = rn(w, NDIRS);

	if (rn(w, 3) == 0)
		snprintf(out, len, "%s/d%u/s", w->s->m->dir, d);
	else
		snprintf(out, len, "%s/d%u", w->s->m->dir, d);
}

static void fill(char *buf, uint64_t off, size_t len)
{
	for (size_t i = 0; i < len; i++)
		buf[i] = (char)pat(off + i);
}

/* Counts the bytes of buf (read at off) that are neither a hole nor the pattern. */
static long bad_in(const char *buf, uint64_t off, size_t len)
{
	long bad = 0;

	for (size_t i = 0; i < len; i++)
		if (buf[i] && (unsigned char)buf[i] != pat(off + i))
			bad++;
	return bad;
}

static void do_write(struct worker *w, const char *p, bool fresh)
{
	int flags = O_WRONLY | O_CREAT | (fresh ? O_TRUNC : 0);
	enum op op = fresh ? OP_WRITE_NEW : OP_PWRITE;
	uint64_t off = fresh ? 0 : rn(w, MAX_OFF);
	size_t len = 1 + rn(w, MAX_LEN);
	int fd = open(p, flags, 0644);
	ssize_t n;

	if (!check(w, op, fd, E_WRITE, "open", p))
		return;
	fill(w->buf, off, len);
	n = pwrite(fd, w->buf, len, (off_t)off);
	if (n >= 0 && (size_t)n != len)
		report(w->s, "thread %d: short write %zd of %zu at %llu to %s", w->idx, n, len,
		       (unsigned long long)off, p);
	check(w, op, n, E_NOENT, "pwrite", p);
	if (rn(w, 8) == 0)
		check(w, op, fsync(fd), E_NOENT, "fsync", p);
	check(w, op, close(fd), E_NOENT, "close", p);
}

static void do_read(struct worker *w, const char *p)
{
	int fd = open(p, O_RDONLY);
	uint64_t off = 0;
	ssize_t n;

	if (!check(w, OP_READ, fd, E_NOENT, "open", p))
		return;
	if (rn(w, 2))
		off = rn(w, MAX_OFF);
	while ((n = pread(fd, w->buf, MAX_LEN, (off_t)off)) > 0) {
		long bad = bad_in(w->buf, off, (size_t)n);

		if (bad) {
			atomic_fetch_add(&w->s->bad_bytes, bad);
			report(w->s,
			       "thread %d: read %s: %ld bytes of %zd at %llu are neither 0 "
			       "nor the pattern",
			       w->idx, p, bad, n, (unsigned long long)off);
		}
		off += (uint64_t)n;
	}
	check(w, OP_READ, n, E_NOENT, "pread", p);
	close(fd);
}

static void do_list(struct worker *w, enum op op, const char *p)
{
	DIR *d = opendir(p);
	struct dirent *e;

	if (!check(w, op, d ? 0 : -1, E_NOENT, "opendir", p))
		return;
	errno = 0;
	while ((e = readdir(d))) {
		/* Entries of a tag directory are links: read one now and then. */
		if (op == OP_LIST_TAGS && e->d_type == DT_LNK && rn(w, 4) == 0) {
			char q[PATH_MAX + 300], l[PATH_MAX];

			snprintf(q, sizeof(q), "%s/%s", p, e->d_name);
			check(w, op, readlink(q, l, sizeof(l)), E_NOENT, "readlink", q);
		}
		errno = 0;
	}
	check(w, op, errno ? -1 : 0, E_NOENT, "readdir", p);
	closedir(d);
}

static void do_tags(struct worker *w, const char *p)
{
	char v[64] = "";
	unsigned mask = rn(w, 1u << NTAGS);

	for (unsigned i = 0; i < NTAGS; i++) {
		if (!(mask & (1u << i)))
			continue;
		if (*v)
			strcat(v, ",");
		strcat(v, tag_names[i]);
	}
	if (rn(w, 3) == 0) {
		char got[256];

		check(w, OP_TAGS, getxattr(p, "user.tags", got, sizeof(got)), E_XATTR,
		      "getxattr user.tags", p);
	} else {
		check(w, OP_TAGS, setxattr(p, "user.tags", v, strlen(v), 0), E_NOENT,
		      "setxattr user.tags", p);
	}
}

static void do_xattr(struct worker *w, const char *p)
{
	char v[32], got[64];
	int n = snprintf(v, sizeof(v), "t%d-%llu", w->idx, (unsigned long long)rn(w, 1000));

	switch (rn(w, 4)) {
	case 0:
		check(w, OP_XATTR, removexattr(p, "user.note"), E_XATTR, "removexattr", p);
		break;
	case 1:
		check(w, OP_XATTR, getxattr(p, "user.note", got, sizeof(got)), E_XATTR, "getxattr",
		      p);
		break;
	case 2:
		check(w, OP_XATTR, listxattr(p, got, sizeof(got)),
		      (const int[]){ ENOENT, ERANGE, 0 }, "listxattr", p);
		break;
	default:
		check(w, OP_XATTR, setxattr(p, "user.note", v, (size_t)n, 0), E_NOENT, "setxattr",
		      p);
	}
}

static void do_ttl(struct worker *w, const char *p)
{
	/* Most TTLs outlast the run; some expire during it. */
	static const char *const ttls[] = { "1", "2", "3600", "3600" };
	char got[32];

	switch (rn(w, 4)) {
	case 0:
		check(w, OP_TTL, removexattr(p, "user.ttl"), E_XATTR, "removexattr user.ttl", p);
		break;
	case 1:
		check(w, OP_TTL, getxattr(p, "user.ttl", got, sizeof(got)), E_XATTR,
		      "getxattr user.ttl", p);
		break;
	default: {
		const char *t = ttls[rn(w, 4)];

		check(w, OP_TTL, setxattr(p, "user.ttl", t, strlen(t), 0), E_NOENT,
		      "setxattr user.ttl", p);
	}
	}
}

/* One ctl command on its own session: 0 and the reply's first line in out. */
static int ctl(const char *mntdir, const char *cmd, char *out, size_t len)
{
	char p[PATH_MAX];
	ssize_t n;
	int fd;

	snprintf(p, sizeof(p), "%s/.nadb/ctl", mntdir);
	fd = open(p, O_RDWR);
	if (fd < 0)
		return -1;
	if (write(fd, cmd, strlen(cmd)) < 0) {
		int e = errno;

		close(fd);
		errno = e;
		return -1;
	}
	n = pread(fd, out, len - 1, 0);
	close(fd);
	if (n < 0)
		return -1;
	out[n] = '\0';
	out[strcspn(out, "\n")] = '\0';
	return 0;
}

/*
 * A transaction: writes, an unlink and tags staged under .nadb/tx/NAME, then
 * committed; a conflict (other threads change the same keys all the time) is
 * a refusal and the transaction is aborted.
 */
static void do_tx(struct worker *w, uint64_t serial)
{
	const char *mdir = w->s->m->dir;
	char name[64], tdir[PATH_MAX], p[PATH_MAX + 64], cmd[128], reply[512];
	static const int E_TX[] = { ENOENT, EEXIST, ENOTEMPTY, 0 };
	int n = 1 + (int)rn(w, 3);

	snprintf(name, sizeof(name), "s%d-%llu", w->idx, (unsigned long long)serial);
	snprintf(tdir, sizeof(tdir), "%s/.nadb/tx/%s", mdir, name);
	if (!check(w, OP_TX, mkdir(tdir, 0700), (const int[]){ 0 }, "mkdir", tdir))
		return;
	for (int i = 0; i < n; i++) {
		unsigned d = rn(w, NDIRS + 1), k = rn(w, NKEYS);
		int fd;

		if (d == NDIRS)
			snprintf(p, sizeof(p), "%s/k%u", tdir, k);
		else
			snprintf(p, sizeof(p), "%s/d%u/k%u", tdir, d, k);
		switch (rn(w, 4)) {
		case 0:
			check(w, OP_TX, unlink(p), E_TX, "unlink", p);
			break;
		case 1:
			check(w, OP_TX, setxattr(p, "user.tags", "blue", 4, 0), E_TX, "setxattr",
			      p);
			break;
		default: {
			size_t len = 1 + rn(w, 8192);

			fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0644);
			if (!check(w, OP_TX, fd, E_TX, "open", p))
				break;
			fill(w->buf, 0, len);
			check(w, OP_TX, write(fd, w->buf, len), E_TX, "write", p);
			check(w, OP_TX, close(fd), E_TX, "close", p);
		}
		}
	}
	snprintf(cmd, sizeof(cmd), "tx %s %s\n", rn(w, 6) ? "commit" : "abort", name);
	if (!check(w, OP_TX, ctl(mdir, cmd, reply, sizeof(reply)), (const int[]){ 0 }, cmd, ""))
		return;
	if (!strcmp(reply, "ok")) {
		if (cmd[3] == 'c')
			atomic_fetch_add(&w->s->tx_commits, 1);
		return;
	}
	if (strncmp(reply, "error: conflict", 15)) {
		report(w->s, "thread %d: %s-> %s", w->idx, cmd, reply);
		return;
	}
	atomic_fetch_add(&w->s->tx_conflicts, 1);
	/* A refused commit leaves the transaction open: abort it. */
	check(w, OP_TX, rmdir(tdir), (const int[]){ 0 }, "rmdir", tdir);
}

static enum op pick(struct worker *w)
{
	int total = 0, r;

	for (int i = 0; i < OP_COUNT; i++)
		total += op_weight[i];
	r = (int)rn(w, (unsigned)total);
	for (int i = 0; i < OP_COUNT; i++) {
		if (r < op_weight[i])
			return (enum op)i;
		r -= op_weight[i];
	}
	return OP_STAT;
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	const char *mdir = w->s->m->dir;
	char p[PATH_MAX], q[PATH_MAX], reply[256];
	uint64_t serial = 0;
	struct stat st;

	while (now_ms() < w->s->deadline_ms) {
		enum op op = pick(w);

		switch (op) {
		case OP_WRITE_NEW:
		case OP_PWRITE:
			key_path(w, p, sizeof(p));
			do_write(w, p, op == OP_WRITE_NEW);
			break;
		case OP_READ:
			key_path(w, p, sizeof(p));
			do_read(w, p);
			break;
		case OP_TRUNCATE:
			key_path(w, p, sizeof(p));
			check(w, op, truncate(p, rn(w, MAX_OFF)), E_NOENT, "truncate", p);
			break;
		case OP_RENAME:
			key_path(w, p, sizeof(p));
			key_path(w, q, sizeof(q));
			check(w, op, rename(p, q), E_NOENT, "rename", p);
			break;
		case OP_RENAME_DIR:
			dir_path(w, p, sizeof(p));
			snprintf(q, sizeof(q), "%s/d%u%s", mdir, rn(w, NDIRS),
				 strchr(p + strlen(mdir) + 1, '/') ? "/s" : "");
			/* dD onto its own dD/s would be EINVAL: only same depths. */
			check(w, op, rename(p, q), E_RENAME, "rename", p);
			break;
		case OP_UNLINK:
			key_path(w, p, sizeof(p));
			check(w, op, unlink(p), E_NOENT, "unlink", p);
			break;
		case OP_MKDIR:
			dir_path(w, p, sizeof(p));
			check(w, op, mkdir(p, 0755), E_MKDIR, "mkdir", p);
			break;
		case OP_RMDIR:
			dir_path(w, p, sizeof(p));
			check(w, op, rmdir(p), E_RMDIR, "rmdir", p);
			break;
		case OP_XATTR:
			key_path(w, p, sizeof(p));
			do_xattr(w, p);
			break;
		case OP_TAGS:
			key_path(w, p, sizeof(p));
			do_tags(w, p);
			break;
		case OP_TTL:
			key_path(w, p, sizeof(p));
			do_ttl(w, p);
			break;
		case OP_LIST_TAGS:
			if (rn(w, 3) == 0)
				snprintf(p, sizeof(p), "%s/tags", mdir);
			else if (rn(w, 3) == 0)
				snprintf(p, sizeof(p), "%s/tags/red+blue,green", mdir);
			else
				snprintf(p, sizeof(p), "%s/tags/%s", mdir, tag_names[rn(w, NTAGS)]);
			do_list(w, op, p);
			break;
		case OP_LIST_DIR:
			if (rn(w, 4) == 0)
				snprintf(p, sizeof(p), "%s", mdir);
			else
				dir_path(w, p, sizeof(p));
			do_list(w, op, p);
			break;
		case OP_FSYNC: {
			int fd;

			key_path(w, p, sizeof(p));
			fd = open(p, O_WRONLY);
			if (check(w, op, fd, E_NOENT, "open", p)) {
				check(w, op, fsync(fd), E_NOENT, "fsync", p);
				close(fd);
			}
			break;
		}
		case OP_STAT:
			if (rn(w, 4) == 0)
				dir_path(w, p, sizeof(p));
			else
				key_path(w, p, sizeof(p));
			check(w, op, stat(p, &st), E_NOENT, "stat", p);
			break;
		case OP_TX:
			do_tx(w, serial++);
			break;
		case OP_FLUSH:
			if (check(w, op, ctl(mdir, "flush\n", reply, sizeof(reply)),
				  (const int[]){ 0 }, "ctl", "flush") &&
			    strcmp(reply, "ok"))
				report(w->s, "thread %d: flush -> %s", w->idx, reply);
			break;
		case OP_COUNT:
			break;
		}
	}
	return NULL;
}

/* ---- the final consistency check ---- */

struct seen {
	char *names[NTAGS][64]; /* escaped key paths per tag */
	int n[NTAGS];
	int keys;
	long bytes;
};

static int tag_index(const char *t)
{
	for (int i = 0; i < NTAGS; i++)
		if (!strcmp(t, tag_names[i]))
			return i;
	return -1;
}

static void check_key(const char *mdir, const char *rel, struct seen *sn)
{
	char p[PATH_MAX], tags[256], esc[PATH_MAX * 3], *e = esc;
	struct stat st;
	size_t len;
	ssize_t n;
	char *data;

	if (snprintf(p, sizeof(p), "%s/%s", mdir, rel) >= (int)sizeof(p))
		fail_msg("path too long: %s", rel);
	if (stat(p, &st))
		fail_msg("stat %s: %s", p, strerrorname_np(errno));
	data = read_file(p, &len);
	if (!data)
		fail_msg("read %s: %s", p, strerrorname_np(errno));
	if ((off_t)len != st.st_size)
		fail_msg("%s: read %zu bytes, size %lld", rel, len, (long long)st.st_size);
	if (bad_in(data, 0, len))
		fail_msg("%s: %ld bytes are neither 0 nor the pattern", rel, bad_in(data, 0, len));
	free(data);
	sn->keys++;
	sn->bytes += (long)len;

	n = getxattr(p, "user.tags", tags, sizeof(tags) - 1);
	if (n < 0 && errno != ENODATA)
		fail_msg("getxattr user.tags %s: %s", p, strerrorname_np(errno));
	if (n < 0)
		return;
	tags[n] = '\0';
	for (const char *c = rel; *c; c++) {
		if (*c == '%')
			e = stpcpy(e, "%25");
		else if (*c == '/')
			e = stpcpy(e, "%2F");
		else
			*e++ = *c;
	}
	*e = '\0';
	for (char *save = NULL, *t = strtok_r(tags, ",", &save); t;
	     t = strtok_r(NULL, ",", &save)) {
		int i = tag_index(t);

		if (i < 0)
			fail_msg("%s has tag %s, which nobody set", rel, t);
		assert_true(sn->n[i] < 64);
		sn->names[i][sn->n[i]++] = strdup(esc);
	}
}

static void walk(const char *mdir, const char *rel, struct seen *sn)
{
	char p[PATH_MAX];
	DIR *d;
	struct dirent *e;

	snprintf(p, sizeof(p), "%s/%s", mdir, rel);
	d = opendir(p);
	if (!d)
		fail_msg("opendir %s: %s", p, strerrorname_np(errno));
	while ((e = readdir(d))) {
		char sub[PATH_MAX];
		struct stat st;

		if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
			continue;
		if (!*rel && (!strcmp(e->d_name, "tags") || !strcmp(e->d_name, ".nadb")))
			continue;
		if (snprintf(sub, sizeof(sub), "%s%s%s", rel, *rel ? "/" : "", e->d_name) >=
			    (int)sizeof(sub) ||
		    snprintf(p, sizeof(p), "%s/%s", mdir, sub) >= (int)sizeof(p))
			fail_msg("path too long: %s/%s", rel, e->d_name);
		if (lstat(p, &st))
			fail_msg("lstat %s (listed): %s", p, strerrorname_np(errno));
		if (S_ISDIR(st.st_mode))
			walk(mdir, sub, sn);
		else if (S_ISREG(st.st_mode))
			check_key(mdir, sub, sn);
		else
			fail_msg("%s: mode 0%o", p, st.st_mode);
	}
	closedir(d);
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Every tags/T listing is exactly the keys whose user.tags name T. */
static void check_tags(const char *mdir, struct seen *sn)
{
	for (int i = 0; i < NTAGS; i++) {
		char p[PATH_MAX], *got[64];
		int ngot = 0;
		DIR *d;
		struct dirent *e;

		snprintf(p, sizeof(p), "%s/tags/%s", mdir, tag_names[i]);
		d = opendir(p);
		if (!d && errno == ENOENT && sn->n[i] == 0)
			continue;
		if (!d)
			fail_msg("opendir %s: %s (%d keys carry the tag)", p,
				 strerrorname_np(errno), sn->n[i]);
		while ((e = readdir(d))) {
			if (e->d_name[0] == '.')
				continue;
			assert_true(ngot < 64);
			got[ngot++] = strdup(e->d_name);
		}
		closedir(d);
		qsort(got, (size_t)ngot, sizeof(*got), cmp_str);
		qsort(sn->names[i], (size_t)sn->n[i], sizeof(char *), cmp_str);
		for (int j = 0; j < ngot || j < sn->n[i]; j++) {
			const char *g = j < ngot ? got[j] : "(none)";
			const char *want = j < sn->n[i] ? sn->names[i][j] : "(none)";

			if (strcmp(g, want))
				fail_msg(
					"tags/%s lists %d entries, %d keys carry it; entry %d: %s, "
					"want %s",
					tag_names[i], ngot, sn->n[i], j, g, want);
		}
		for (int j = 0; j < ngot; j++)
			free(got[j]);
	}
}

static void seen_free(struct seen *sn)
{
	for (int i = 0; i < NTAGS; i++)
		for (int j = 0; j < sn->n[i]; j++)
			free(sn->names[i][j]);
	memset(sn, 0, sizeof(*sn));
}

static void consistency(struct mnt *m, const char *when)
{
	struct seen sn;

	memset(&sn, 0, sizeof(sn));
	walk(m->dir, "", &sn);
	check_tags(m->dir, &sn);
	print_message("stress: %s: %d keys, %ld bytes, tagged red %d, blue %d, green %d: "
		      "consistent\n",
		      when, sn.keys, sn.bytes, sn.n[0], sn.n[1], sn.n[2]);
	seen_free(&sn);
}

static long env_long(const char *name, long def)
{
	const char *v = getenv(name);

	return v && *v ? strtol(v, NULL, 0) : def;
}

static void test_stress(void **state)
{
	static struct stress s;
	static struct worker w[MAX_THREADS];
	struct mnt *m = *state;
	long seconds = env_long("NADBFS_STRESS_SECONDS", 15);
	long total_ok = 0, total_refused = 0;
	char reply[256], *before, *after;
	int64_t t0;

	memset(&s, 0, sizeof(s));
	pthread_mutex_init(&s.lock, NULL);
	s.m = m;
	s.nthreads = (int)env_long("NADBFS_STRESS_THREADS", 32);
	if (s.nthreads < 1 || s.nthreads > MAX_THREADS)
		fail_msg("NADBFS_STRESS_THREADS must be 1..%d", MAX_THREADS);
	s.seed = (uint64_t)env_long("NADBFS_STRESS_SEED", 0);
	if (!getenv("NADBFS_STRESS_SEED"))
		s.seed = (uint64_t)time(NULL) * 1000003u ^ (uint64_t)getpid();
	print_message("stress: seed %llu, %d threads, %ld s, %s backend (replay: "
		      "NADBFS_STRESS_SEED=%llu)\n",
		      (unsigned long long)s.seed, s.nthreads, seconds,
		      mnt_default_backend() == MNT_BACKEND_REDIS ? "redis" : "fs",
		      (unsigned long long)s.seed);

	/* Short flush and sweep intervals: flushes and expiry race the calls. */
	mnt_start(m, "flush_interval=20ms,ttl_sweep=1s");
	for (int d = 0; d < NDIRS; d++)
		ASSERT_SYS(mkdir(mnt_path(m, "d%d", d), 0755));

	t0 = now_ms();
	s.deadline_ms = t0 + seconds * 1000;
	for (int i = 0; i < s.nthreads; i++) {
		w[i].s = &s;
		w[i].idx = i;
		w[i].rng = s.seed * 0x100000001b3ULL + (uint64_t)i;
		w[i].buf = malloc(MAX_LEN);
		assert_non_null(w[i].buf);
		assert_int_equal(pthread_create(&w[i].thread, NULL, worker_main, &w[i]), 0);
	}
	for (int i = 0; i < s.nthreads; i++) {
		pthread_join(w[i].thread, NULL);
		free(w[i].buf);
	}
	for (int i = 0; i < OP_COUNT; i++) {
		print_message("stress:   %-10s %8ld ok %8ld refused by a race\n", op_names[i],
			      atomic_load(&s.ok[i]), atomic_load(&s.refused[i]));
		total_ok += atomic_load(&s.ok[i]);
		total_refused += atomic_load(&s.refused[i]);
	}
	print_message("stress: %ld calls succeeded, %ld refused by a race, %ld unexpected in "
		      "%.1f s; %ld transactions committed, %ld conflicts; %ld ESTALE from "
		      "concurrent directory renames\n",
		      total_ok, total_refused, atomic_load(&s.unexpected),
		      (double)(now_ms() - t0) / 1000.0, atomic_load(&s.tx_commits),
		      atomic_load(&s.tx_conflicts), atomic_load(&s.estale));
	if (kill(m->pid, 0))
		fail_msg("the daemon died during the run");
	if (atomic_load(&s.unexpected))
		fail_msg("%ld unexpected results (first %d above); seed %llu",
			 atomic_load(&s.unexpected), MAX_REPORTS, (unsigned long long)s.seed);

	/* Let the short TTLs run out and expire them, so nothing vanishes
	 * between the two checks. */
	sleep(2);
	assert_int_equal(ctl(m->dir, "sweep\n", reply, sizeof(reply)), 0);
	assert_string_equal(reply, "ok");
	assert_int_equal(ctl(m->dir, "flush\n", reply, sizeof(reply)), 0);
	assert_string_equal(reply, "ok");
	consistency(m, "after the run");
	before = tree_snapshot(m->dir);
	mnt_restart(m, NULL);
	consistency(m, "after a remount");
	after = tree_snapshot(m->dir);
	if (strcmp(before, after)) {
		print_error("before the remount:\n%s\nafter:\n%s\n", before, after);
		fail_msg("the tree changed across the remount");
	}
	free(before);
	free(after);
	mnt_stop(m);
	pthread_mutex_destroy(&s.lock);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_stress, mnt_setup, mnt_teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
