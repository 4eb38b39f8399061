/*
 * A randomized model checker (issue 9): random sequences of create, write at
 * offsets, truncate, rename, unlink, mkdir, rmdir, user.* xattrs, reads,
 * reopened handles and remounts, applied both to the mount and to a plain
 * in-memory model (paths -> nodes holding bytes, xattrs and a type), with
 * the errno of every call predicted by the model. After each step the
 * entries it touched and every open handle are compared byte for byte, and
 * the whole tree (names, types, sizes, bytes, xattrs) after every
 * NADBFS_MODEL_FULL steps (default 1: every step) and after each remount.
 *
 * The model keeps nodes apart from names, as inodes are: a handle stays on
 * its node through renames, and a node unlinked or renamed over while open
 * stays readable and writable through the handle.
 *
 * Seeded and replayable: NADBFS_MODEL_SEED (default: time and pid),
 * NADBFS_MODEL_STEPS (default 3000). A mismatch fails with the step, the
 * last operations and the command line that replays it.
 */
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

static const char *const names[] = { "a", "b", "c", "d", "e" };

static uint64_t rnd(struct model *md)
{
	uint64_t z = (md->rng += 0x9e3779b97f4a7c15ULL);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

static size_t below(struct model *md, size_t n)
{
	return n ? (size_t)(rnd(md) % n) : 0;
}

static void pick_path(struct model *md, char *out, size_t len)
{
	int dirs[MAX_ENTRIES + 1], nd = 0;

	dirs[nd++] = -1;
	for (int i = 0; i < md->ne; i++)
		if (md->e[i].n->dir && depth(md->e[i].path) < MAX_DEPTH)
			dirs[nd++] = i;
	int d = dirs[below(md, (size_t)nd)];
	const char *name = names[below(md, sizeof(names) / sizeof(names[0]))];

	if (d < 0)
		snprintf(out, len, "%s", name);
	else
		snprintf(out, len, "%s/%s", md->e[d].path, name);
}

/* An existing entry most of the time, else any path. */
static void pick_existing(struct model *md, char *out, size_t len)
{
	if (md->ne && below(md, 5))
		snprintf(out, len, "%s", md->e[below(md, (size_t)md->ne)].path);
	else
		pick_path(md, out, len);
}

/* --- Operations: each runs on the mount and on the model --- */

static void fill(struct model *md, uint8_t *p, size_t len)
{
	uint64_t x = rnd(md);

	for (size_t i = 0; i < len; i++) {
		if (!(i & 7))
			x = rnd(md);
		p[i] = (uint8_t)(x >> (8 * (i & 7)));
	}
}

/* The model's truncate: growing adds zeros, as a sparse file reads. */
static void node_truncate(struct node *n, size_t len)
{
	if (len > n->len) {
		n->data = realloc(n->data, len);
		assert_non_null(n->data);
		memset(n->data + n->len, 0, len - n->len);
	}
	n->len = len;
}

/* A write past the end leaves a hole of zeros; an empty one changes nothing. */
static void node_write(struct node *n, const uint8_t *p, size_t len, size_t off)
{
	if (!len)
		return;
	if (off + len > n->len)
		node_truncate(n, off + len);
	memcpy(n->data + off, p, len);
}

static size_t pick_len(struct model *md)
{
	switch (below(md, 8)) {
	case 0:
		return 0;
	case 1:
		return 1 + below(md, 70000);
	default:
		return 1 + below(md, 5000);
	}
}

static size_t pick_off(struct model *md, size_t size)
{
	switch (below(md, 6)) {
	case 0:
		return 0;
	case 1:
		/* Around the store's 64 KiB chunk boundary. */
		return 65536 - 100 + below(md, 200);
	default:
		return below(md, size + 4096);
	}
}

static void op_create(struct model *md)
{
	char rel[64];
	int i, fd, want, got;

	pick_path(md, rel, sizeof(rel));
	i = find(md, rel);
	want = i >= 0 && md->e[i].n->dir ? EISDIR : 0;
	note(md, "create %s", rel);
	fd = open(mpath(md, rel), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
	got = outcome(fd);
	expect(md, "create", want, got);
	if (got)
		return;
	if (i < 0) {
		if (md->ne == MAX_ENTRIES) {
			/* The model is full: take the name back. */
			close(fd);
			ASSERT_SYS(unlink(mpath(md, rel)));
			return;
		}
		i = md->ne++;
		snprintf(md->e[i].path, sizeof(md->e[i].path), "%s", rel);
		md->e[i].n = new_node(false);
	}
	if (md->nh < MAX_HANDLES && below(md, 2)) {
		md->h[md->nh++] = (struct handle){ fd, md->e[i].n };
		md->e[i].n->refs++;
	} else {
		ASSERT_SYS(close(fd));
	}
	check_path(md, rel);
}

static void op_write(struct model *md)
{
	size_t len = pick_len(md), off;
	struct node *n;
	ssize_t r;

	if (md->nh && below(md, 3)) {
		int h = (int)below(md, (size_t)md->nh);

		n = md->h[h].n;
		off = pick_off(md, n->len);
		if (off + len > MAX_SIZE)
			len = off > MAX_SIZE ? 0 : MAX_SIZE - off;
		fill(md, md->buf, len);
		note(md, "pwrite handle %d: %zu bytes at %zu", h, len, off);
		r = pwrite(md->h[h].fd, md->buf, len, (off_t)off);
	} else {
		char rel[64];
		int i, fd;

		pick_existing(md, rel, sizeof(rel));
		i = find(md, rel);
		note(md, "write %s", rel);
		fd = open(mpath(md, rel), O_WRONLY | O_CLOEXEC);
		expect(md, "open for writing",
		       i < 0		 ? ENOENT
		       : md->e[i].n->dir ? EISDIR
					 : 0,
		       outcome(fd));
		if (fd < 0)
			return;
		n = md->e[i].n;
		off = pick_off(md, n->len);
		if (off + len > MAX_SIZE)
			len = off > MAX_SIZE ? 0 : MAX_SIZE - off;
		fill(md, md->buf, len);
		note(md, "write %s: %zu bytes at %zu", rel, len, off);
		r = pwrite(fd, md->buf, len, (off_t)off);
		if (close(fd))
			mismatch(md, "close after write: %s", strerrorname_np(errno));
	}
	if (r != (ssize_t)len)
		mismatch(md, "pwrite returned %zd (%s), want %zu", r,
			 r < 0 ? strerrorname_np(errno) : "short", len);
	node_write(n, md->buf, len, off);
}

static void op_truncate(struct model *md)
{
	size_t len;

	if (md->nh && below(md, 3)) {
		int h = (int)below(md, (size_t)md->nh);

		len = pick_off(md, md->h[h].n->len);
		note(md, "ftruncate handle %d to %zu", h, len);
		expect(md, "ftruncate", 0, outcome(ftruncate(md->h[h].fd, (off_t)len)));
		node_truncate(md->h[h].n, len);
	} else {
		char rel[64];
		int i, want;

		pick_existing(md, rel, sizeof(rel));
		i = find(md, rel);
		len = pick_off(md, i >= 0 ? md->e[i].n->len : 0);
		want = i < 0 ? ENOENT : md->e[i].n->dir ? EISDIR : 0;
		note(md, "truncate %s to %zu", rel, len);
		expect(md, "truncate", want, outcome(truncate(mpath(md, rel), (off_t)len)));
		if (!want)
			node_truncate(md->e[i].n, len);
		check_path(md, rel);
	}
}

static void op_mkdir(struct model *md)
{
	char rel[64];
	int i, want;

	pick_path(md, rel, sizeof(rel));
	i = find(md, rel);
	want = i >= 0 ? EEXIST : 0;
	if (!want && md->ne == MAX_ENTRIES)
		return;
	note(md, "mkdir %s", rel);
	expect(md, "mkdir", want, outcome(mkdir(mpath(md, rel), 0755)));
	if (!want) {
		i = md->ne++;
		snprintf(md->e[i].path, sizeof(md->e[i].path), "%s", rel);
		md->e[i].n = new_node(true);
	}
	check_path(md, rel);
}

static void op_unlink(struct model *md, bool dir)
{
	char rel[64];
	int i, want;

	pick_existing(md, rel, sizeof(rel));
	i = find(md, rel);
	if (i < 0)
		want = ENOENT;
	else if (dir)
		want = !md->e[i].n->dir ? ENOTDIR : has_children(md, rel) ? ENOTEMPTY : 0;
	else
		want = md->e[i].n->dir ? EISDIR : 0;
	note(md, "%s %s", dir ? "rmdir" : "unlink", rel);
	expect(md, dir ? "rmdir" : "unlink", want,
	       outcome(dir ? rmdir(mpath(md, rel)) : unlink(mpath(md, rel))));
	if (!want)
		drop_entry(md, i);
	check_path(md, rel);
}

static void op_rename(struct model *md)
{
	char from[64], to[64];
	int s, d, want = 0;

	pick_existing(md, from, sizeof(from));
	pick_path(md, to, sizeof(to));
	s = find(md, from);
	d = find(md, to);
	/* In the order the kernel checks (do_renameat2, then vfs_rename). */
	if (s < 0)
		want = ENOENT;
	else if (is_under(to, from))
		want = EINVAL;
	else if (d >= 0 && is_under(from, to))
		want = ENOTEMPTY; /* the target is an ancestor of the source */
	else if (d >= 0 && d != s && md->e[s].n->dir && !md->e[d].n->dir)
		want = ENOTDIR;
	else if (d >= 0 && d != s && !md->e[s].n->dir && md->e[d].n->dir)
		want = EISDIR;
	else if (d >= 0 && d != s && md->e[d].n->dir && has_children(md, to))
		want = ENOTEMPTY;
	if (!want && s != d)
		for (int i = 0; i < md->ne; i++)
			if (is_under(md->e[i].path, from) &&
			    depth(to) + depth(md->e[i].path) - depth(from) > MAX_DEPTH)
				return; /* deeper than the model's paths go */
	note(md, "rename %s -> %s", from, to);
	expect(md, "rename", want, outcome(rename(mpath(md, from), mpath(md, to))));
	if (!want && s != d) {
		size_t flen = strlen(from);

		if (d >= 0) {
			drop_entry(md, d);
			s = find(md, from);
		}
		for (int i = 0; i < md->ne; i++) {
			char moved[128];

			if (i != s && !is_under(md->e[i].path, from))
				continue;
			snprintf(moved, sizeof(moved), "%s%s", to, md->e[i].path + flen);
			if (strlen(moved) >= sizeof(md->e[i].path))
				fail_msg("model: path too long: %s", moved);
			strcpy(md->e[i].path, moved);
		}
	}
	check_path(md, from);
	check_path(md, to);
}

static void op_xattr(struct model *md)
{
	char rel[64], name[16];
	uint8_t val[64];
	int i, k, want;
	size_t len;
	struct node *n;

	pick_existing(md, rel, sizeof(rel));
	i = find(md, rel);
	snprintf(name, sizeof(name), "user.x%d", (int)below(md, 5));
	n = i >= 0 ? md->e[i].n : NULL;
	for (k = 0; n && k < n->nxa && strcmp(n->xa[k].name, name); k++)
		;
	switch (below(md, 4)) {
	case 0: /* remove */
		want = !n ? ENOENT : k == n->nxa ? ENODATA : 0;
		note(md, "removexattr %s %s", rel, name);
		expect(md, "removexattr", want, outcome(lremovexattr(mpath(md, rel), name)));
		if (!want)
			n->xa[k] = n->xa[--n->nxa];
		break;
	case 1: { /* get */
		ssize_t r;

		want = !n ? ENOENT : k == n->nxa ? ENODATA : 0;
		note(md, "getxattr %s %s", rel, name);
		r = lgetxattr(mpath(md, rel), name, val, sizeof(val));
		expect(md, "getxattr", want, outcome(r));
		if (!want && ((size_t)r != n->xa[k].len || memcmp(val, n->xa[k].val, (size_t)r)))
			mismatch(md, "getxattr %s %s: value differs from the model", rel, name);
		break;
	}
	default: /* set */
		len = below(md, sizeof(val) + 1);
		fill(md, val, len);
		want = !n ? ENOENT : (k == n->nxa && n->nxa == MAX_XATTRS) ? -1 : 0;
		if (want < 0)
			return; /* the model holds MAX_XATTRS names */
		note(md, "setxattr %s %s (%zu bytes)", rel, name, len);
		expect(md, "setxattr", want, outcome(lsetxattr(mpath(md, rel), name, val, len, 0)));
		if (want)
			break;
		if (k == n->nxa)
			n->nxa++;
		snprintf(n->xa[k].name, sizeof(n->xa[k].name), "%s", name);
		memcpy(n->xa[k].val, val, len);
		n->xa[k].len = len;
	}
	check_path(md, rel);
}

static void op_read(struct model *md)
{
	if (md->nh && below(md, 2)) {
		int h = (int)below(md, (size_t)md->nh);
		struct node *n = md->h[h].n;
		size_t off = pick_off(md, n->len), len = pick_len(md), want;
		ssize_t r;

		note(md, "pread handle %d: %zu bytes at %zu", h, len, off);
		r = pread(md->h[h].fd, md->got, len, (off_t)off);
		want = off >= n->len ? 0 : len < n->len - off ? len : n->len - off;
		if (r != (ssize_t)want || (want && memcmp(md->got, n->data + off, want)))
			mismatch(md, "pread of handle %d: %zd bytes (%s), model has %zu", h, r,
				 r < 0 ? strerrorname_np(errno) : "data compared", want);
		return;
	}
	char rel[64];

	pick_existing(md, rel, sizeof(rel));
	note(md, "read %s", rel);
	check_path(md, rel);
}

static void close_handle(struct model *md, int h)
{
	if (close(md->h[h].fd))
		mismatch(md, "close of handle %d: %s", h, strerrorname_np(errno));
	unref(md->h[h].n);
	md->h[h] = md->h[--md->nh];
}

/* Closes a handle, or opens one on a file. */
static void op_reopen(struct model *md)
{
	char rel[64];
	int i, fd;

	if (md->nh && (md->nh == MAX_HANDLES || below(md, 2))) {
		int h = (int)below(md, (size_t)md->nh);

		note(md, "close handle %d", h);
		close_handle(md, h);
		return;
	}
	pick_existing(md, rel, sizeof(rel));
	i = find(md, rel);
	if (i < 0 || md->e[i].n->dir)
		return;
	note(md, "open %s as handle %d", rel, md->nh);
	fd = open(mpath(md, rel), O_RDWR | O_CLOEXEC);
	expect(md, "open", 0, outcome(fd));
	md->h[md->nh++] = (struct handle){ fd, md->e[i].n };
	md->e[i].n->refs++;
}

static void op_remount(struct model *md)
{
	note(md, "remount");
	while (md->nh)
		close_handle(md, 0);
	mnt_restart(md->m, "flush_interval=50ms");
	md->remounts++;
	check_all(md);
}

static void run_model(struct model *md, long full_every)
{
	for (md->step = 0; md->step < md->steps; md->step++) {
		unsigned r = (unsigned)below(md, 1000);

		note(md, "(nothing to do)");

		if (r < 120)
			op_create(md);
		else if (r < 330)
			op_write(md);
		else if (r < 400)
			op_truncate(md);
		else if (r < 480)
			op_mkdir(md);
		else if (r < 560)
			op_rename(md);
		else if (r < 620)
			op_unlink(md, false);
		else if (r < 660)
			op_unlink(md, true);
		else if (r < 800)
			op_xattr(md);
		else if (r < 900)
			op_read(md);
		else if (r < 998)
			op_reopen(md);
		else
			op_remount(md);
		check_handles(md);
		if (full_every && md->step % full_every == full_every - 1)
			check_all(md);
	}
	check_all(md);
}

static long env_long(const char *name, long def)
{
	const char *v = getenv(name);

	return v && *v ? strtol(v, NULL, 0) : def;
}

static void test_model(void **state)
{
	static struct model md;
	int64_t t0 = now_ms();

	memset(&md, 0, sizeof(md));
	md.m = *state;
	md.seed = (uint64_t)env_long("NADBFS_MODEL_SEED", 0);
	if (!getenv("NADBFS_MODEL_SEED"))
		md.seed = (uint64_t)time(NULL) * 1000003u ^ (uint64_t)getpid();
	md.rng = md.seed;
	md.steps = env_long("NADBFS_MODEL_STEPS", 3000);
	print_message("model: seed %llu, %ld steps, %s backend (replay: NADBFS_MODEL_SEED=%llu)\n",
		      (unsigned long long)md.seed, md.steps,
		      mnt_default_backend() == MNT_BACKEND_REDIS ? "redis" : "fs",
		      (unsigned long long)md.seed);
	mnt_start(md.m, "flush_interval=50ms");
	run_model(&md, env_long("NADBFS_MODEL_FULL", 1));
	while (md.nh)
		close_handle(&md, 0);
	/* What was flushed and reloaded must be the same tree. */
	op_remount(&md);
	mnt_stop(md.m);
	print_message("model: %ld steps (%ld calls succeeded, %ld failed as predicted, %ld "
		      "remounts, %ld full comparisons) in %.1f s, no mismatch\n",
		      md.steps, md.succeeded, md.refused, md.remounts, md.full_checks,
		      (double)(now_ms() - t0) / 1000.0);
	while (md.ne)
		drop_entry(&md, md.ne - 1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_model, mnt_setup, mnt_teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
