/*
 * The model's namespace and the comparison of the mount with it (model.h).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
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

#include "model.h"

void note(struct model *md, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(md->history[md->step % HISTORY], sizeof(md->history[0]), fmt, ap);
	va_end(ap);
}

void mismatch(struct model *md, const char *fmt, ...)
{
	char what[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	print_error("model: mismatch at step %ld: %s\nmodel: last operations:\n", md->step, what);
	for (long s = md->step - HISTORY + 1; s <= md->step; s++)
		if (s >= 0)
			print_error("  %6ld %s\n", s, md->history[s % HISTORY]);
	fail_msg("model: replay with NADBFS_MODEL_SEED=%llu NADBFS_MODEL_STEPS=%ld%s",
		 (unsigned long long)md->seed, md->step + 1,
		 mnt_default_backend() == MNT_BACKEND_REDIS ? " NADBFS_TEST_BACKEND=redis" : "");
}

/* --- The model's namespace --- */

int find(const struct model *md, const char *path)
{
	for (int i = 0; i < md->ne; i++)
		if (!strcmp(md->e[i].path, path))
			return i;
	return -1;
}

bool is_under(const char *path, const char *dir)
{
	size_t n = strlen(dir);

	return !strncmp(path, dir, n) && path[n] == '/';
}

bool has_children(const struct model *md, const char *dir)
{
	for (int i = 0; i < md->ne; i++)
		if (is_under(md->e[i].path, dir))
			return true;
	return false;
}

int depth(const char *path)
{
	int d = 1;

	for (; *path; path++)
		d += *path == '/';
	return d;
}

void unref(struct node *n)
{
	if (--n->refs == 0) {
		free(n->data);
		free(n);
	}
}

struct node *new_node(bool dir)
{
	struct node *n = calloc(1, sizeof(*n));

	assert_non_null(n);
	n->dir = dir;
	n->refs = 1;
	return n;
}

void drop_entry(struct model *md, int i)
{
	unref(md->e[i].n);
	md->e[i] = md->e[--md->ne];
}

/*
 * A path for an operation: usually below an existing directory (so that the
 * interesting errors come from the target, not a missing parent), with a
 * name from a small pool so that names collide often.
 */
const char *mpath(struct model *md, const char *rel)
{
	return mnt_path(md->m, "%s", rel);
}

/* The syscall's outcome as an errno (0 on success). */
int outcome(long ret)
{
	return ret == -1 ? errno : 0;
}

void expect(struct model *md, const char *what, int want, int got)
{
	if (want)
		md->refused++;
	else
		md->succeeded++;
	if (want != got)
		mismatch(md, "%s: got %s, model says %s", what,
			 got ? strerrorname_np(got) : "success",
			 want ? strerrorname_np(want) : "success");
}

/* --- Comparing the mount with the model --- */

static void check_bytes(struct model *md, const char *what, const struct node *n,
			const uint8_t *got, size_t len)
{
	if (len != n->len)
		mismatch(md, "%s: %zu bytes, model has %zu", what, len, n->len);
	for (size_t i = 0; i < len; i++)
		if (got[i] != n->data[i])
			mismatch(md, "%s: byte %zu is %#x, model has %#x", what, i, got[i],
				 n->data[i]);
}

static void check_xattrs(struct model *md, const char *rel, const struct node *n)
{
	const char *p = mpath(md, rel);
	char list[1024];
	ssize_t len = llistxattr(p, list, sizeof(list));
	int count = 0;

	if (len < 0)
		mismatch(md, "listxattr %s: %s", rel, strerrorname_np(errno));
	for (ssize_t off = 0; off < len; off += (ssize_t)strlen(list + off) + 1) {
		int i;

		for (i = 0; i < n->nxa && strcmp(n->xa[i].name, list + off); i++)
			;
		if (i == n->nxa)
			mismatch(md, "%s has xattr %s, the model does not", rel, list + off);
		count++;
	}
	if (count != n->nxa)
		mismatch(md, "%s lists %d xattrs, model has %d", rel, count, n->nxa);
	for (int i = 0; i < n->nxa; i++) {
		uint8_t v[128];
		ssize_t vl = lgetxattr(p, n->xa[i].name, v, sizeof(v));

		if (vl < 0)
			mismatch(md, "getxattr %s %s: %s", rel, n->xa[i].name,
				 strerrorname_np(errno));
		if ((size_t)vl != n->xa[i].len || memcmp(v, n->xa[i].val, n->xa[i].len))
			mismatch(md, "%s: xattr %s differs from the model", rel, n->xa[i].name);
	}
}

void check_path(struct model *md, const char *rel)
{
	int i = find(md, rel);
	const char *p = mpath(md, rel);
	struct stat st;
	int ret = outcome(lstat(p, &st));

	if (i < 0) {
		if (ret != ENOENT)
			mismatch(md, "%s exists (%s), the model has no such entry", rel,
				 ret ? strerrorname_np(ret) : "stat succeeds");
		return;
	}
	if (ret)
		mismatch(md, "stat %s: %s", rel, strerrorname_np(ret));
	if (!!S_ISDIR(st.st_mode) != md->e[i].n->dir ||
	    !(S_ISDIR(st.st_mode) || S_ISREG(st.st_mode)))
		mismatch(md, "%s has mode %o, model has a %s", rel, st.st_mode,
			 md->e[i].n->dir ? "directory" : "file");
	if (!md->e[i].n->dir) {
		int fd = open(p, O_RDONLY | O_CLOEXEC);
		ssize_t r;
		size_t len = 0;

		if ((uint64_t)st.st_size != md->e[i].n->len)
			mismatch(md, "%s: size %lld, model has %zu", rel, (long long)st.st_size,
				 md->e[i].n->len);
		if (fd < 0)
			mismatch(md, "open %s: %s", rel, strerrorname_np(errno));
		while ((r = read(fd, md->got + len, sizeof(md->got) - len)) > 0)
			len += (size_t)r;
		close(fd);
		if (r < 0)
			mismatch(md, "read %s: %s", rel, strerrorname_np(errno));
		check_bytes(md, rel, md->e[i].n, md->got, len);
	}
	check_xattrs(md, rel, md->e[i].n);
}

void check_handles(struct model *md)
{
	for (int i = 0; i < md->nh; i++) {
		struct node *n = md->h[i].n;
		struct stat st;
		ssize_t r;

		if (fstat(md->h[i].fd, &st))
			mismatch(md, "fstat of handle %d: %s", i, strerrorname_np(errno));
		if ((uint64_t)st.st_size != n->len)
			mismatch(md, "handle %d: size %lld, model has %zu", i,
				 (long long)st.st_size, n->len);
		r = pread(md->h[i].fd, md->got, sizeof(md->got), 0);
		if (r < 0)
			mismatch(md, "pread of handle %d: %s", i, strerrorname_np(errno));
		check_bytes(md, "a handle's content", n, md->got, (size_t)r);
	}
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Directory rel ("" for the root): its names are the model's, recursively. */
static void check_tree(struct model *md, const char *rel)
{
	char *got[MAX_ENTRIES + 8], *want[MAX_ENTRIES];
	int ng = 0, nw = 0;
	struct dirent *de;
	DIR *d = opendir(*rel ? mpath(md, rel) : md->m->dir);

	if (!d)
		mismatch(md, "opendir %s: %s", *rel ? rel : "/", strerrorname_np(errno));
	while ((de = readdir(d))) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..") ||
		    (!*rel && (!strcmp(de->d_name, "tags") || !strcmp(de->d_name, ".nadb"))))
			continue;
		if (ng == MAX_ENTRIES + 8)
			mismatch(md, "%s lists too many entries", rel);
		got[ng++] = strdup(de->d_name);
	}
	closedir(d);
	for (int i = 0; i < md->ne; i++) {
		const char *p = md->e[i].path, *slash = strrchr(p, '/');

		if ((!*rel && !slash) ||
		    (*rel && slash && is_under(p, rel) && !strchr(p + strlen(rel) + 1, '/')))
			want[nw++] = strdup(slash ? slash + 1 : p);
	}
	qsort(got, (size_t)ng, sizeof(*got), cmp_str);
	qsort(want, (size_t)nw, sizeof(*want), cmp_str);
	for (int i = 0; i < ng || i < nw; i++)
		if (i >= ng || i >= nw || strcmp(got[i], want[i]))
			mismatch(md, "directory /%s lists %s where the model has %s", rel,
				 i < ng ? got[i] : "(nothing)", i < nw ? want[i] : "(nothing)");
	for (int i = 0; i < nw; i++) {
		char child[64];

		snprintf(child, sizeof(child), "%s%s%s", rel, *rel ? "/" : "", want[i]);
		check_path(md, child);
		if (md->e[find(md, child)].n->dir)
			check_tree(md, child);
	}
	for (int i = 0; i < ng; i++)
		free(got[i]);
	for (int i = 0; i < nw; i++)
		free(want[i]);
}

void check_all(struct model *md)
{
	check_tree(md, "");
	check_handles(md);
	md->full_checks++;
}
