/*
 * Names and bad input at the mount (spec sections 2 and 12): length limits,
 * the reserved root names, arbitrary bytes in names, the value size limit,
 * and that nothing is ever written outside the data directory.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>
#include <cmocka.h>

#include "mnt.h"

static struct mnt *up(void **state, const char *opts)
{
	struct mnt *m = *state;

	mnt_start(m, opts);
	return m;
}

/* A string of n copies of c, in m's arena. */
static const char *rep(struct mnt *m, char c, size_t n)
{
	char *s = malloc(n + 1);
	const char *r;

	memset(s, c, n);
	s[n] = '\0';
	r = mnt_str(m, "%s", s);
	free(s);
	return r;
}

static int cmp_names(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* dir's entries but "." and "..", sorted; the caller frees each and the array. */
static char **names_in(const char *dir, size_t *n)
{
	DIR *d = opendir(dir);
	char **v = NULL;
	struct dirent *e;

	if (!d)
		fail_msg("opendir %s: %s", dir, strerrorname_np(errno));
	*n = 0;
	while ((e = readdir(d))) {
		if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
			continue;
		v = realloc(v, (*n + 1) * sizeof(*v));
		v[(*n)++] = strdup(e->d_name);
	}
	closedir(d);
	qsort(v, *n, sizeof(*v), cmp_names);
	return v;
}

static void assert_names(const char *dir, const char *const *want, size_t nwant)
{
	const char **w = malloc(nwant * sizeof(*w));
	size_t n;
	char **got = names_in(dir, &n);

	memcpy(w, want, nwant * sizeof(*w));
	qsort(w, nwant, sizeof(*w), cmp_names);
	if (n != nwant)
		fail_msg("%s lists %zu entries, want %zu", dir, n, nwant);
	for (size_t i = 0; i < n; i++)
		if (strcmp(got[i], w[i]))
			fail_msg("%s: entry %zu is \"%s\", want \"%s\"", dir, i, got[i], w[i]);
	for (size_t i = 0; i < n; i++)
		free(got[i]);
	free(got);
	free(w);
}

static void test_component_length(void **state)
{
	struct mnt *m = up(state, NULL);
	const char *n255 = rep(m, 'a', 255), *n256 = rep(m, 'b', 256);
	const char *d255 = rep(m, 'd', 255);
	struct stat st;
	int fd;

	put_str(mnt_path(m, "%s", n255), "ok");
	assert_file_str(mnt_path(m, "%s", n255), "ok");
	ASSERT_SYS(mkdir(mnt_path(m, "%s", d255), 0755));
	ASSERT_ERRNO(fd = open(mnt_path(m, "%s", n256), O_WRONLY | O_CREAT | O_CLOEXEC, 0644),
		     ENAMETOOLONG);
	ASSERT_ERRNO(mkdir(mnt_path(m, "%s", n256), 0755), ENAMETOOLONG);
	ASSERT_ERRNO(rename(mnt_path(m, "%s", n255), mnt_path(m, "%s", n256)), ENAMETOOLONG);
	ASSERT_ERRNO(stat(mnt_path(m, "%s", n256), &st), ENAMETOOLONG);
	assert_file_str(mnt_path(m, "%s", n255), "ok");
	{
		const char *want[] = { ".nadb", "tags", n255, d255 };

		assert_names(m->dir, want, 4);
	}
	mnt_stop(m);
}

/*
 * Four directories of 250 bytes make a prefix of 4 * 251 = 1004 bytes, so a
 * file name of 20 bytes makes a key of exactly 1024.
 */
static const char *deep_dir(struct mnt *m)
{
	return mnt_str(m, "%s/%s/%s/%s", rep(m, '1', 250), rep(m, '2', 250), rep(m, '3', 250),
		       rep(m, '4', 250));
}

static void make_deep(struct mnt *m)
{
	const char *d = deep_dir(m);

	for (int i = 1; i <= 4; i++)
		ASSERT_SYS(mkdir(mnt_path(m, "%.*s", i * 251 - 1, d), 0755));
	assert_int_equal(strlen(d) + 1 + 20, 1024);
}

static void test_key_length(void **state)
{
	struct mnt *m = up(state, NULL);
	const char *d;
	int fd;

	make_deep(m);
	d = deep_dir(m);
	put_str(mnt_path(m, "%s/%s", d, rep(m, 'k', 20)), "1024");
	assert_file_str(mnt_path(m, "%s/%s", d, rep(m, 'k', 20)), "1024");
	ASSERT_ERRNO(fd = open(mnt_path(m, "%s/%s", d, rep(m, 'x', 21)),
			       O_WRONLY | O_CREAT | O_CLOEXEC, 0644),
		     ENAMETOOLONG);
	/* A rename that would make a key of 1025 bytes is refused the same way. */
	put_str(mnt_path(m, "short"), "s");
	ASSERT_ERRNO(rename(mnt_path(m, "short"), mnt_path(m, "%s/%s", d, rep(m, 'y', 21))),
		     ENAMETOOLONG);
	assert_file_str(mnt_path(m, "short"), "s");
	{
		const char *want[] = { rep(m, 'k', 20) };

		assert_names(mnt_path(m, "%s", d), want, 1);
	}
	mnt_stop(m);
}

static void test_dir_rename_past_key_limit(void **state)
{
	struct mnt *m = up(state, NULL);
	const char *d, *key, *longer = rep(m, 'L', 251), *same = rep(m, 'S', 250);
	struct stat st;

	make_deep(m);
	d = deep_dir(m);
	key = mnt_str(m, "%s/%s", d, rep(m, 'k', 20));
	put_str(mnt_path(m, "%s", key), "deep value");
	/* Renaming the top directory one byte longer would make that key 1025 bytes. */
	ASSERT_ERRNO(rename(mnt_path(m, "%s", rep(m, '1', 250)), mnt_path(m, "%s", longer)),
		     ENAMETOOLONG);
	ASSERT_ERRNO(stat(mnt_path(m, "%s", longer), &st), ENOENT);
	assert_file_str(mnt_path(m, "%s", key), "deep value");
	{
		const char *want[] = { ".nadb", "tags", rep(m, '1', 250) };

		assert_names(m->dir, want, 3);
	}
	/* The same length is fine, and the key moves with its directory. */
	ASSERT_SYS(rename(mnt_path(m, "%s", rep(m, '1', 250)), mnt_path(m, "%s", same)));
	assert_file_str(mnt_path(m, "%s%s", same, key + 250), "deep value");
	mnt_restart(m, NULL);
	assert_file_str(mnt_path(m, "%s%s", same, key + 250), "deep value");
	mnt_stop(m);
}

static void test_reserved_names_create(void **state)
{
	struct mnt *m = up(state, NULL);
	int fd;

	ASSERT_ERRNO(mkdir(mnt_path(m, "tags"), 0755), EEXIST);
	ASSERT_ERRNO(mkdir(mnt_path(m, ".nadb"), 0755), EEXIST);
	ASSERT_ERRNO(fd = open(mnt_path(m, ".nadb"), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC,
			       0644),
		     EEXIST);
	ASSERT_ERRNO(fd = open(mnt_path(m, "tags"), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC,
			       0644),
		     EEXIST);
	/* Reserved at the root only: below it they are ordinary names. */
	ASSERT_SYS(mkdir(mnt_path(m, "sub"), 0755));
	ASSERT_SYS(mkdir(mnt_path(m, "sub/tags"), 0755));
	put_str(mnt_path(m, "sub/.nadb"), "plain key");
	assert_file_str(mnt_path(m, "sub/.nadb"), "plain key");
	{
		const char *want[] = { ".nadb", "tags" };

		assert_names(mnt_path(m, "sub"), want, 2);
	}
	mnt_stop(m);
}

static void test_reserved_names_remove_and_rename(void **state)
{
	struct mnt *m = up(state, NULL);
	struct stat st;

	ASSERT_ERRNO(rmdir(mnt_path(m, "tags")), EPERM);
	ASSERT_ERRNO(rmdir(mnt_path(m, ".nadb")), EPERM);
	ASSERT_ERRNO(rename(mnt_path(m, "tags"), mnt_path(m, "t2")), EPERM);
	ASSERT_ERRNO(rename(mnt_path(m, ".nadb"), mnt_path(m, "n2")), EPERM);
	/*
	 * Onto them: a directory source reaches the filesystem (for a file the
	 * kernel itself answers EISDIR before asking it).
	 */
	ASSERT_SYS(mkdir(mnt_path(m, "d"), 0755));
	ASSERT_ERRNO(rename(mnt_path(m, "d"), mnt_path(m, "tags")), EPERM);
	ASSERT_ERRNO(rename(mnt_path(m, "d"), mnt_path(m, ".nadb")), EPERM);
	ASSERT_SYS(stat(mnt_path(m, "d"), &st));
	ASSERT_SYS(stat(mnt_path(m, ".nadb"), &st));
	assert_true(S_ISDIR(st.st_mode));
	{
		const char *want[] = { ".nadb", "tags", "d" };

		assert_names(m->dir, want, 3);
	}
	mnt_stop(m);
}

static void test_renames_across_reserved_dirs(void **state)
{
	struct mnt *m = up(state, NULL);
	struct stat st;

	put_str(mnt_path(m, "k"), "v");
	ASSERT_SYS(mkdir(mnt_path(m, "d"), 0755));
	/* Into tags/ and .nadb/. */
	ASSERT_ERRNO(rename(mnt_path(m, "k"), mnt_path(m, "tags/k")), EPERM);
	ASSERT_ERRNO(rename(mnt_path(m, "k"), mnt_path(m, ".nadb/k")), EPERM);
	ASSERT_ERRNO(rename(mnt_path(m, "d"), mnt_path(m, ".nadb/d")), EPERM);
	ASSERT_ERRNO(rename(mnt_path(m, "d"), mnt_path(m, "tags/d")), EPERM);
	/*
	 * Renames out of .nadb/ are checked with its files in test_ctl.c, out
	 * of tags/ in test_tags_mnt.c. Nothing moved.
	 */
	assert_file_str(mnt_path(m, "k"), "v");
	ASSERT_SYS(stat(mnt_path(m, "d"), &st));
	ASSERT_ERRNO(lstat(mnt_path(m, "tags/k"), &st), ENOENT);
	ASSERT_ERRNO(lstat(mnt_path(m, ".nadb/k"), &st), ENOENT);
	mnt_stop(m);
}

static const char *const odd_names[] = {
	"with space", " leading", "trailing ", "new\nline", "tab\there", "\r\n",
	"\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0b\x0c\x0e\x0f\x10\x11\x12\x13\x14\x15\x16\x17"
	"\x18\x19\x1a\x1b\x1c\x1d\x1e\x1f",
	"\x7f", "\xff", "\xff\xfe\x80", "utf8-\xe6\x97\xa5\xe6\x9c\xac-\xc3\xb1-\xe2\x82\xac",
	"100%", "%", "%25", "%2F", "%2f", "a%2Fb", "..%2F..%2Fescape", "%00", "colon:name",
	":", "a=b@c", "-dash", "~tilde", "back\\slash", "quote'\"", "star*?[]", "...", ".hidden",
	"#hash", "$HOME", "{brace}", "tags ", ".nadb2", "Tags", "x",
};

#define N_ODD (sizeof(odd_names) / sizeof(odd_names[0]))

static void check_odd_names(struct mnt *m)
{
	const char *want[N_ODD + 3];

	for (size_t i = 0; i < N_ODD; i++) {
		want[i] = odd_names[i];
		assert_file_str(mnt_path(m, "%s", odd_names[i]), odd_names[i]);
	}
	want[N_ODD] = ".nadb";
	want[N_ODD + 1] = "tags";
	want[N_ODD + 2] = "dir\nwith newline";
	assert_names(m->dir, want, N_ODD + 3);
	assert_file_str(mnt_path(m, "dir\nwith newline/\xff key"), "inner");
}

static void test_names_with_any_byte(void **state)
{
	struct mnt *m = up(state, NULL);
	char *out = NULL;

	for (size_t i = 0; i < N_ODD; i++)
		put_str(mnt_path(m, "%s", odd_names[i]), odd_names[i]);
	ASSERT_SYS(mkdir(mnt_path(m, "dir\nwith newline"), 0755));
	put_str(mnt_path(m, "dir\nwith newline/\xff key"), "inner");
	check_odd_names(m);
	/* The tools cope too: one shell glob reaches every key. */
	assert_int_equal(run_cmd_out(&out, "cat %s/with* %s/%%25", shq(m, m->dir),
				     shq(m, m->dir)), 0);
	assert_string_equal(out, "with space%25");
	free(out);
	mnt_restart(m, NULL);
	check_odd_names(m);
	/* Renames keep arbitrary bytes as they are. */
	ASSERT_SYS(rename(mnt_path(m, "%s", odd_names[3]), mnt_path(m, "renamed\x01\xff")));
	assert_file_str(mnt_path(m, "renamed\x01\xff"), odd_names[3]);
	mnt_stop(m);
}

static void test_value_size_limit(void **state)
{
	struct mnt *m = up(state, "max_value_size=1M");
	const size_t max = 1024 * 1024;
	const char *k = mnt_path(m, "k"), *c = mnt_path(m, "crossing");
	char *buf = mnt_malloc(m, max + 1);
	struct stat st;
	ssize_t n;
	int fd;

	/* Writes that start at or past the limit fail and change nothing. */
	put_str(k, "previous");
	ASSERT_SYS(fd = open(k, O_WRONLY | O_CLOEXEC));
	ASSERT_ERRNO(pwrite(fd, "0123456789", 10, max), EFBIG);
	ASSERT_ERRNO(pwrite(fd, "0123456789", 10, 5 * max), EFBIG);
	ASSERT_ERRNO(ftruncate(fd, max + 1), EFBIG);
	ASSERT_SYS(close(fd));
	assert_file_str(k, "previous");
	ASSERT_ERRNO(truncate(k, max + 1), EFBIG);
	assert_file_str(k, "previous");

	/*
	 * A write that crosses the limit writes only what fits, as POSIX has it
	 * for a file size limit, and the next one fails: never a byte beyond.
	 * Write-only opens (direct I/O: one request) and read-write ones (the
	 * page cache splits the write) alike.
	 */
	for (int mode = 0; mode < 2; mode++) {
		put_str(c, "previous");
		ASSERT_SYS(fd = open(c, (mode ? O_RDWR : O_WRONLY) | O_CLOEXEC));
		n = pwrite(fd, "0123456789abcdefghij", 20, max - 10);
		assert_int_equal(n, 10);
		ASSERT_ERRNO(pwrite(fd, "j", 1, max), EFBIG);
		ASSERT_SYS(stat(c, &st));
		assert_int_equal(st.st_size, max);
		ASSERT_SYS(close(fd));
	}

	/* Exactly the limit is fine. */
	memset(buf, 'm', max);
	put_file(mnt_path(m, "max"), buf, max);
	assert_file(mnt_path(m, "max"), buf, max);

	/* One write(2) past the limit ends in EFBIG; whatever landed stays within it. */
	assert_int_equal(write_file(mnt_path(m, "over"), buf, max + 1), -EFBIG);
	ASSERT_SYS(stat(mnt_path(m, "over"), &st));
	assert_true(st.st_size <= (off_t)max);

	mnt_restart(m, "max_value_size=1M");
	assert_file_str(k, "previous");
	assert_file(mnt_path(m, "max"), buf, max);
	mnt_stop(m);
}

/* Every path below root but inside data/, sorted, one per line (nftw has no argument). */
static char *outside[256];
static size_t n_outside;
static size_t root_len;

static int note_outside(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	const char *rel = path + root_len;

	(void)st;
	(void)flag;
	if (ftw->level == 0)
		return FTW_CONTINUE;
	if (n_outside == 256)
		return FTW_STOP;
	outside[n_outside++] = strdup(rel);
	return !strcmp(rel, "/data") ? FTW_SKIP_SUBTREE : FTW_CONTINUE;
}

static char *paths_outside_data(struct mnt *m)
{
	size_t len = 1;
	char *r, *p;

	root_len = strlen(m->root);
	n_outside = 0;
	/* FTW_MOUNT: the mount's own contents are not "outside". */
	assert_int_equal(nftw(m->root, note_outside, 16, FTW_PHYS | FTW_MOUNT | FTW_ACTIONRETVAL),
			 0);
	qsort(outside, n_outside, sizeof(outside[0]), cmp_names);
	for (size_t i = 0; i < n_outside; i++)
		len += strlen(outside[i]) + 1;
	r = p = malloc(len);
	*p = '\0';
	for (size_t i = 0; i < n_outside; i++) {
		p = stpcpy(p, outside[i]);
		*p++ = '\n';
		*p = '\0';
		free(outside[i]);
	}
	return r;
}

static void test_nothing_written_outside_data_dir(void **state)
{
	struct mnt *m = *state;
	const char *hostile[] = { "..%2F..%2Fescape", "%2e%2e", "..\\..", "data", "mnt",
				  "daemon.log", "tags2", ".nadb.lock" };
	size_t big = 3 * 1024 * 1024;
	char *buf, *before, *after;

	mnt_init(m);
	buf = mnt_malloc(m, big);
	before = paths_outside_data(m);
	assert_string_equal(before, "/mnt\n");
	free(before);

	mnt_start(m, "flush_interval=100ms");
	memset(buf, 'z', big);
	for (size_t i = 0; i < sizeof(hostile) / sizeof(hostile[0]); i++) {
		ASSERT_SYS(mkdir(mnt_path(m, "%s", hostile[i]), 0755));
		put_str(mnt_path(m, "%s/%s", hostile[i], hostile[i]), hostile[i]);
		put_file(mnt_path(m, "%s/big", hostile[i]), buf, big);
	}
	ASSERT_SYS(rename(mnt_path(m, "data"), mnt_path(m, "data-moved")));
	ASSERT_SYS(unlink(mnt_path(m, "mnt/big")));
	mnt_restart(m, NULL);
	put_str(mnt_path(m, "after-restart"), "x");
	mnt_kill(m);
	mnt_start(m, NULL);
	assert_file(mnt_path(m, "data-moved/big"), buf, big);
	mnt_stop(m);
	after = paths_outside_data(m);
	/* On Redis nothing at all is written locally but the log. */
	assert_string_equal(after, m->redis ? "/daemon.log\n/mnt\n"
					    : "/daemon.log\n/data\n/mnt\n");
	free(after);

	/* Extended attributes are stored somewhere too: hostile keys and names. */
	mnt_start(m, NULL);
	ASSERT_SYS(mkdir(mnt_path(m, "xa"), 0755));
	for (size_t i = 0; i < sizeof(hostile) / sizeof(hostile[0]); i++) {
		char name[64];

		put_str(mnt_path(m, "xa/%s", hostile[i]), "v");
		snprintf(name, sizeof(name), "user.%s", hostile[i]);
		ASSERT_SYS(setxattr(mnt_path(m, "xa/%s", hostile[i]), name, "y", 1, 0));
	}
	mnt_stop(m);
	after = paths_outside_data(m);
	/* On Redis nothing at all is written locally but the log. */
	assert_string_equal(after, m->redis ? "/daemon.log\n/mnt\n"
					    : "/daemon.log\n/data\n/mnt\n");
	free(after);
}

#define T(f) cmocka_unit_test_setup_teardown(f, mnt_setup, mnt_teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		T(test_component_length),
		T(test_key_length),
		T(test_dir_rename_past_key_limit),
		T(test_reserved_names_create),
		T(test_reserved_names_remove_and_rename),
		T(test_renames_across_reserved_dirs),
		T(test_names_with_any_byte),
		T(test_value_size_limit),
		T(test_nothing_written_outside_data_dir),
	};

	umask(022);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
