/*
 * Tags on the mount, with the real tools: setfattr/getfattr on user.tags,
 * tags/ listings, symlink entries read through with cat, rm and ln -s to
 * untag and tag, mkdir/rmdir of tags, query directories, persistence, and
 * listings that follow every change at once even with long kernel caches.
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
#include <jansson.h>

#include "mnt.h"

/* Long kernel caches: anything stale would show. */
#define CACHED "entry_timeout=60s,attr_timeout=60s"

static void tag(struct mnt *m, const char *key, const char *tags)
{
	assert_int_equal(run_cmd("setfattr -n user.tags -v %s %s", shq(m, tags),
				 shq(m, mnt_path(m, "%s", key))),
			 0);
}

static const char *tags_of(struct mnt *m, const char *key)
{
	char buf[256];
	ssize_t n = getxattr(mnt_path(m, "%s", key), "user.tags", buf, sizeof(buf) - 1);

	if (n < 0)
		return errno == ENODATA ? "" : "E";
	buf[n] = '\0';
	return mnt_str(m, "%s", buf);
}

static void test_tags_with_the_tools(void **state)
{
	struct mnt *m = *state;
	char *out = NULL, link[128];
	struct stat st, kst;
	ssize_t n;

	mnt_start(m, CACHED);
	ASSERT_SYS(mkdir(mnt_path(m, "users"), 0755));
	ASSERT_SYS(mkdir(mnt_path(m, "users/42"), 0755));
	put_str(mnt_path(m, "users/42/profile"), "alice\n");
	put_str(mnt_path(m, "other"), "bob\n");
	tag(m, "users/42/profile", "red,blue");
	tag(m, "other", "red");
	assert_int_equal(run_cmd_out(&out, "getfattr --absolute-names --only-values -n "
					   "user.tags %s",
				     shq(m, mnt_path(m, "users/42/profile"))),
			 0);
	assert_string_equal(out, "blue,red");
	free(out);
	assert_string_equal(tags_of(m, "other"), "red");
	/* getfattr -d shows both names; user.xdg.tags is the same list. */
	assert_int_equal(run_cmd_out(&out, "getfattr -d --absolute-names %s",
				     shq(m, mnt_path(m, "other"))),
			 0);
	assert_non_null(strstr(out, "user.tags=\"red\""));
	assert_non_null(strstr(out, "user.xdg.tags=\"red\""));
	free(out);
	assert_string_equal(mnt_ls(m, "tags"), "blue,red");
	assert_string_equal(mnt_ls(m, "tags/red"), "other,users%2F42%2Fprofile");
	assert_string_equal(mnt_ls(m, "tags/blue"), "users%2F42%2Fprofile");
	/* Entries are symlinks by relative path; cat reads the value. */
	n = readlink(mnt_path(m, "tags/red/users%%2F42%%2Fprofile"), link, sizeof(link));
	assert_int_equal(n, strlen("../../users/42/profile"));
	assert_memory_equal(link, "../../users/42/profile", (size_t)n);
	assert_int_equal(run_cmd_out(&out, "cat %s",
				     shq(m, mnt_path(m, "tags/red/users%%2F42%%2Fprofile"))),
			 0);
	assert_string_equal(out, "alice\n");
	free(out);
	/* ls -l: a symlink, size = target length, times = the key's. */
	ASSERT_SYS(lstat(mnt_path(m, "tags/red/other"), &st));
	ASSERT_SYS(stat(mnt_path(m, "other"), &kst));
	assert_true(S_ISLNK(st.st_mode));
	assert_int_equal(st.st_size, strlen("../../other"));
	assert_int_equal(st.st_mtim.tv_sec, kst.st_mtim.tv_sec);
	assert_int_equal(st.st_mtim.tv_nsec, kst.st_mtim.tv_nsec);
	assert_int_equal(run_cmd_out(&out, "ls -l %s", shq(m, mnt_path(m, "tags/red"))), 0);
	assert_non_null(strstr(out, "other -> ../../other"));
	free(out);
	/* Only %25 and %2F are escapes. */
	ASSERT_ERRNO(lstat(mnt_path(m, "tags/red/users%%2f42%%2fprofile"), &st), ENOENT);
	ASSERT_ERRNO(lstat(mnt_path(m, "tags/red/%%41"), &st), ENOENT);
	mnt_stop(m);
}

static void test_setting_tags_keeps_the_value_and_mtime(void **state)
{
	struct mnt *m = *state;
	struct stat before, after;

	mnt_start(m, NULL);
	put_str(mnt_path(m, "k"), "value");
	ASSERT_SYS(stat(mnt_path(m, "k"), &before));
	tag(m, "k", "a");
	ASSERT_SYS(stat(mnt_path(m, "k"), &after));
	assert_int_equal(before.st_mtim.tv_nsec, after.st_mtim.tv_nsec);
	assert_int_equal(before.st_mtim.tv_sec, after.st_mtim.tv_sec);
	assert_true(after.st_ctim.tv_sec > before.st_ctim.tv_sec ||
		    after.st_ctim.tv_nsec != before.st_ctim.tv_nsec);
	assert_file_str(mnt_path(m, "k"), "value");
	mnt_stop(m);
}

static void test_bad_tags_and_where_tags_do_not_apply(void **state)
{
	struct mnt *m = *state;

	mnt_start(m, NULL);
	put_str(mnt_path(m, "k"), "v");
	tag(m, "k", "keep");
	ASSERT_ERRNO(setxattr(mnt_path(m, "k"), "user.tags", "a b", 3, 0), EINVAL);
	ASSERT_ERRNO(setxattr(mnt_path(m, "k"), "user.tags", "-a", 2, 0), EINVAL);
	ASSERT_ERRNO(setxattr(mnt_path(m, "k"), "user.tags", "a,,b", 4, 0), EINVAL);
	ASSERT_ERRNO(setxattr(mnt_path(m, "k"), "user.xdg.tags", "a/b", 3, 0), EINVAL);
	assert_int_not_equal(run_cmd("setfattr -n user.tags -v 'x y' %s 2>/dev/null",
				     shq(m, mnt_path(m, "k"))),
			     0);
	assert_string_equal(tags_of(m, "k"), "keep");
	assert_string_equal(mnt_ls(m, "tags"), "keep");
	/* Directories, tags/ and its entries carry none. */
	ASSERT_SYS(mkdir(mnt_path(m, "d"), 0755));
	ASSERT_ERRNO(setxattr(mnt_path(m, "d"), "user.tags", "a", 1, 0), ENOTSUP);
	/* The kernel itself refuses user.* names on symlinks, with EPERM. */
	ASSERT_ERRNO(lsetxattr(mnt_path(m, "tags/keep/k"), "user.tags", "a", 1, 0), EPERM);
	ASSERT_ERRNO(setxattr(mnt_path(m, "tags/keep"), "user.tags", "a", 1, 0), ENOTSUP);
	ASSERT_ERRNO(setxattr(mnt_path(m, "tags"), "user.ttl", "5", 1, 0), ENOTSUP);
	/* "" clears. */
	tag(m, "k", "");
	assert_string_equal(tags_of(m, "k"), "");
	assert_string_equal(mnt_ls(m, "tags"), "");
	mnt_stop(m);
}

static void test_rm_untags_and_ln_tags(void **state)
{
	struct mnt *m = *state;
	struct stat st;

	mnt_start(m, CACHED);
	ASSERT_SYS(mkdir(mnt_path(m, "d"), 0755));
	put_str(mnt_path(m, "d/k"), "data");
	put_str(mnt_path(m, "j"), "more");
	tag(m, "d/k", "red,blue");
	assert_int_equal(run_cmd("rm %s", shq(m, mnt_path(m, "tags/red/d%%2Fk"))), 0);
	assert_string_equal(tags_of(m, "d/k"), "blue");
	assert_file_str(mnt_path(m, "d/k"), "data");
	ASSERT_ERRNO(lstat(mnt_path(m, "tags/red"), &st), ENOENT); /* lost its last key */
	/* ln -s ANYTHING tags/T/ENTRY tags the key ENTRY names. */
	assert_int_equal(run_cmd("ln -s whatever %s", shq(m, mnt_path(m, "tags/blue/j"))), 0);
	assert_string_equal(tags_of(m, "j"), "blue");
	assert_string_equal(mnt_ls(m, "tags/blue"), "d%2Fk,j");
	ASSERT_ERRNO(symlink("x", mnt_path(m, "tags/blue/missing")), ENOENT);
	ASSERT_ERRNO(symlink("x", mnt_path(m, "tags/blue/d")), ENOENT); /* a directory */
	/* Nothing else can be made in tags/. */
	ASSERT_ERRNO(open(mnt_path(m, "tags/blue/new"), O_CREAT | O_WRONLY, 0644), EPERM);
	ASSERT_ERRNO(symlink("x", mnt_path(m, "tags/x")), EPERM);
	/* mv between tag directories moves the tag. */
	ASSERT_SYS(mkdir(mnt_path(m, "tags/green"), 0755));
	assert_int_equal(run_cmd("mv %s %s/", shq(m, mnt_path(m, "tags/blue/j")),
				 shq(m, mnt_path(m, "tags/green"))),
			 0);
	assert_string_equal(tags_of(m, "j"), "green");
	/* Anything else across tags/ is refused and moves nothing. */
	ASSERT_ERRNO(rename(mnt_path(m, "tags/green/j"), mnt_path(m, "j2")), EPERM);
	ASSERT_ERRNO(rename(mnt_path(m, "j"), mnt_path(m, "tags/green/j2")), EPERM);
	ASSERT_ERRNO(rename(mnt_path(m, "tags/green"), mnt_path(m, "tags/blue2")), EPERM);
	assert_string_equal(tags_of(m, "j"), "green");
	/* rm -rf tags only untags: every value stays. */
	assert_int_not_equal(run_cmd("rm -rf %s 2>/dev/null", shq(m, mnt_path(m, "tags"))), 0);
	assert_string_equal(tags_of(m, "d/k"), "");
	assert_string_equal(tags_of(m, "j"), "");
	assert_file_str(mnt_path(m, "d/k"), "data");
	assert_file_str(mnt_path(m, "j"), "more");
	assert_string_equal(mnt_ls(m, "tags"), "");
	mnt_stop(m);
}

static void test_mkdir_rmdir_and_remount(void **state)
{
	struct mnt *m = *state;
	struct stat st;

	mnt_start(m, NULL);
	ASSERT_SYS(mkdir(mnt_path(m, "tags/empty"), 0755));
	ASSERT_ERRNO(mkdir(mnt_path(m, "tags/empty"), 0755), EEXIST);
	ASSERT_ERRNO(mkdir(mnt_path(m, "tags/a b"), 0755), EINVAL);
	/* A query directory exists already, as far as mkdir can tell. */
	ASSERT_ERRNO(mkdir(mnt_path(m, "tags/empty+x"), 0755), EEXIST);
	ASSERT_ERRNO(mkdir(mnt_path(m, "tags/empty/sub"), 0755), EPERM);
	put_str(mnt_path(m, "k"), "v");
	tag(m, "k", "used,empty");
	ASSERT_ERRNO(rmdir(mnt_path(m, "tags/empty")), ENOTEMPTY);
	tag(m, "k", "used");
	assert_string_equal(mnt_ls(m, "tags"), "empty,used");
	mnt_restart(m, NULL);
	assert_string_equal(mnt_ls(m, "tags"), "empty,used");
	assert_string_equal(mnt_ls(m, "tags/used"), "k");
	assert_string_equal(tags_of(m, "k"), "used");
	ASSERT_SYS(rmdir(mnt_path(m, "tags/empty")));
	ASSERT_ERRNO(lstat(mnt_path(m, "tags/empty"), &st), ENOENT);
	ASSERT_ERRNO(rmdir(mnt_path(m, "tags/empty")), ENOENT);
	mnt_restart(m, NULL);
	assert_string_equal(mnt_ls(m, "tags"), "used");
	mnt_stop(m);
}

static void test_query_directories(void **state)
{
	struct mnt *m = *state;
	static const char *const bad[] = { "tags/-user", "tags/user,-active", "tags/user+",
					   "tags/,user", "tags/user++active", "tags/ghost" };
	struct stat st;

	mnt_start(m, CACHED);
	put_str(mnt_path(m, "1"), "one");
	put_str(mnt_path(m, "2"), "two");
	put_str(mnt_path(m, "3"), "three");
	tag(m, "1", "user,active");
	tag(m, "2", "user,inactive");
	tag(m, "3", "admin");
	assert_string_equal(mnt_ls(m, "tags/user+active"), "1");
	assert_string_equal(mnt_ls(m, "tags/user,admin"), "1,2,3");
	assert_string_equal(mnt_ls(m, "tags/user+-inactive"), "1");
	assert_string_equal(mnt_ls(m, "tags/user+active,admin"), "1,3");
	assert_string_equal(mnt_ls(m, "tags/user+ghost"), "");
	assert_file_str(mnt_path(m, "tags/user+active/1"), "one");
	/* Resolved on lookup, never listed. */
	assert_string_equal(mnt_ls(m, "tags"), "active,admin,inactive,user");
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		ASSERT_ERRNO(stat(mnt_path(m, "%s", bad[i]), &st), ENOENT);
	/* Read-only. */
	ASSERT_SYS(stat(mnt_path(m, "tags/user+active"), &st));
	assert_int_equal(st.st_mode & 0777, 0555);
	ASSERT_ERRNO(unlink(mnt_path(m, "tags/user+active/1")), EPERM);
	ASSERT_ERRNO(symlink("x", mnt_path(m, "tags/user+active/3")), EPERM);
	ASSERT_ERRNO(rmdir(mnt_path(m, "tags/user+active")), EPERM);
	/* A change to a tag involved shows at once (the cache is invalidated). */
	tag(m, "2", "user,active");
	assert_string_equal(mnt_ls(m, "tags/user+active"), "1,2");
	assert_string_equal(mnt_ls(m, "tags/user+-inactive"), "1,2");
	mnt_stop(m);
}

/* The tag count and the query cache's figures in .nadb/stats. */
static void test_stats(void **state)
{
	struct mnt *m = *state;
	json_t *o, *qc;
	char *text;

	mnt_start(m, NULL);
	put_str(mnt_path(m, "1"), "one");
	tag(m, "1", "a,b");
	ASSERT_SYS(mkdir(mnt_path(m, "tags/c"), 0755));
	assert_string_equal(mnt_ls(m, "tags/a+b"), "1");
	assert_string_equal(mnt_ls(m, "tags/a+b"), "1");
	text = read_file(mnt_path(m, ".nadb/stats"), NULL);
	assert_non_null(text);
	o = json_loads(text, 0, NULL);
	free(text);
	assert_non_null(o);
	assert_int_equal(json_integer_value(json_object_get(json_object_get(o, "tags"), "count")), 3);
	assert_int_equal(json_integer_value(json_object_get(json_object_get(o, "tags"), "entries")),
			 2);
	qc = json_object_get(o, "query_cache");
	assert_int_equal(json_integer_value(json_object_get(qc, "misses")), 1);
	assert_int_equal(json_integer_value(json_object_get(qc, "hits")), 1);
	assert_int_equal(json_integer_value(json_object_get(qc, "entries")), 1);
	assert_true(json_real_value(json_object_get(qc, "hit_rate")) == 0.5);
	json_decref(o);
	mnt_stop(m);
}

/* With 60 s kernel caches, every change through the mount shows at once. */
static void test_listings_follow_every_change(void **state)
{
	struct mnt *m = *state;
	char link[64];
	struct stat st;
	ssize_t n;

	mnt_start(m, CACHED);
	ASSERT_SYS(mkdir(mnt_path(m, "d"), 0755));
	put_str(mnt_path(m, "d/k"), "v1");
	tag(m, "d/k", "t");
	assert_string_equal(mnt_ls(m, "tags/t"), "d%2Fk");
	ASSERT_SYS(lstat(mnt_path(m, "tags/t/d%%2Fk"), &st));
	/* Rename: the entry's name and its link follow. */
	ASSERT_SYS(rename(mnt_path(m, "d/k"), mnt_path(m, "moved")));
	assert_string_equal(mnt_ls(m, "tags/t"), "moved");
	ASSERT_ERRNO(lstat(mnt_path(m, "tags/t/d%%2Fk"), &st), ENOENT);
	n = readlink(mnt_path(m, "tags/t/moved"), link, sizeof(link));
	assert_int_equal(n, 11);
	assert_memory_equal(link, "../../moved", 11);
	/* Rename of a whole directory moves its keys' entries. */
	ASSERT_SYS(rename(mnt_path(m, "moved"), mnt_path(m, "d/k")));
	ASSERT_SYS(rename(mnt_path(m, "d"), mnt_path(m, "e")));
	assert_string_equal(mnt_ls(m, "tags/t"), "e%2Fk");
	assert_file_str(mnt_path(m, "tags/t/e%%2Fk"), "v1");
	/* Delete: gone from the listing, the entry, and the tag itself. */
	ASSERT_SYS(unlink(mnt_path(m, "e/k")));
	ASSERT_ERRNO(lstat(mnt_path(m, "tags/t/e%%2Fk"), &st), ENOENT);
	ASSERT_ERRNO(lstat(mnt_path(m, "tags/t"), &st), ENOENT);
	assert_string_equal(mnt_ls(m, "tags"), "");
	/* Re-created under the same name: a new key, untagged. */
	put_str(mnt_path(m, "e/k"), "v2");
	assert_string_equal(tags_of(m, "e/k"), "");
	ASSERT_ERRNO(lstat(mnt_path(m, "tags/t/e%%2Fk"), &st), ENOENT);
	/* Retag: leaves one directory, enters another. */
	tag(m, "e/k", "a");
	assert_file_str(mnt_path(m, "tags/a/e%%2Fk"), "v2");
	tag(m, "e/k", "b");
	ASSERT_ERRNO(lstat(mnt_path(m, "tags/a/e%%2Fk"), &st), ENOENT);
	assert_string_equal(mnt_ls(m, "tags/b"), "e%2Fk");
	mnt_stop(m);
}

static void test_expired_keys_leave_their_tags(void **state)
{
	struct mnt *m = *state;
	struct stat st;
	int64_t until;

	mnt_start(m, CACHED ",ttl_sweep=1h");
	put_str(mnt_path(m, "brief"), "v");
	put_str(mnt_path(m, "stays"), "v");
	tag(m, "brief", "t");
	tag(m, "stays", "t");
	assert_string_equal(mnt_ls(m, "tags/t+t"), "brief,stays");
	ASSERT_SYS(setxattr(mnt_path(m, "brief"), "user.ttl", "1", 1, 0));
	until = now_ms() + 5000;
	while (lstat(mnt_path(m, "tags/t/brief"), &st) == 0 && now_ms() < until) {
		struct timespec ts = { 0, 20 * 1000000 };

		nanosleep(&ts, NULL);
	}
	ASSERT_ERRNO(lstat(mnt_path(m, "tags/t/brief"), &st), ENOENT);
	assert_string_equal(mnt_ls(m, "tags/t"), "stays");
	assert_string_equal(mnt_ls(m, "tags/t+t"), "stays");
	mnt_stop(m);
}

static void test_long_key_names(void **state)
{
	struct mnt *m = *state;
	char comp[201], *out = NULL;
	const char *key;

	mnt_start(m, NULL);
	memset(comp, 'x', 200);
	comp[200] = '\0';
	ASSERT_SYS(mkdir(mnt_path(m, "%s", comp), 0755));
	key = mnt_str(m, "%s/%s", comp, comp);
	put_str(mnt_path(m, "%s", key), "deep");
	tag(m, key, "long");
	/* 403 bytes escaped: 238 of them, '~' and 16 hex digits. */
	assert_int_equal(run_cmd_out(&out, "cat %s/*", shq(m, mnt_path(m, "tags/long"))), 0);
	assert_string_equal(out, "deep");
	free(out);
	assert_int_equal(strlen(mnt_ls(m, "tags/long")), 255);
	assert_int_equal(mnt_ls(m, "tags/long")[238], '~');
	assert_int_equal(run_cmd("rm %s/*", shq(m, mnt_path(m, "tags/long"))), 0);
	assert_string_equal(tags_of(m, key), "");
	mnt_stop(m);
}

static void test_nadbctl_query(void **state)
{
	struct mnt *m = *state;
	char *out = NULL;
	json_t *o;

	mnt_start(m, NULL);
	ASSERT_SYS(mkdir(mnt_path(m, "d"), 0755));
	for (int i = 0; i < 5; i++) {
		put_str(mnt_path(m, "d/k%d", i), "v");
		tag(m, mnt_str(m, "d/k%d", i), i % 2 ? "odd,n" : "even,n");
	}
	assert_int_equal(run_cmd_out(&out, "%s -m %s query odd", nadbctl_bin(), shq(m, m->dir)),
			 0);
	assert_string_equal(out, "d/k1\nd/k3\n");
	free(out);
	/* Pages of a sorted listing. */
	assert_int_equal(run_cmd_out(&out, "%s -m %s query n+-odd --page 2 --page-size 2",
				     nadbctl_bin(), shq(m, m->dir)),
			 0);
	assert_string_equal(out, "d/k4\n");
	free(out);
	assert_int_equal(run_cmd_out(&out, "cd %s && %s query even,odd --json --page-size 3",
				     shq(m, m->dir), nadbctl_bin()),
			 0);
	o = json_loads(out, 0, NULL);
	free(out);
	assert_non_null(o);
	assert_int_equal(json_integer_value(json_object_get(o, "total")), 5);
	assert_int_equal(json_integer_value(json_object_get(o, "pages")), 2);
	assert_int_equal(json_array_size(json_object_get(o, "keys")), 3);
	assert_string_equal(json_string_value(json_array_get(json_object_get(o, "keys"), 0)),
			    "d/k0");
	json_decref(o);
	/* Bad input: a message and exit 1. */
	assert_int_equal(run_cmd_out(&out, "%s -m %s query 'a,,b'", nadbctl_bin(), shq(m, m->dir)),
			 1);
	assert_non_null(strstr(out, "no tag or query 'a,,b'"));
	free(out);
	assert_int_equal(run_cmd_out(&out, "%s -m %s query odd --page 0", nadbctl_bin(),
				     shq(m, m->dir)),
			 1);
	assert_non_null(strstr(out, "--page takes a positive number"));
	free(out);
	assert_int_equal(run_cmd_out(&out, "%s -m %s query", nadbctl_bin(), shq(m, m->dir)), 1);
	assert_non_null(strstr(out, "query needs an expression"));
	free(out);
	mnt_stop(m);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_tags_with_the_tools, mnt_setup, mnt_teardown),
		cmocka_unit_test_setup_teardown(test_setting_tags_keeps_the_value_and_mtime,
						mnt_setup, mnt_teardown),
		cmocka_unit_test_setup_teardown(test_bad_tags_and_where_tags_do_not_apply,
						mnt_setup, mnt_teardown),
		cmocka_unit_test_setup_teardown(test_rm_untags_and_ln_tags, mnt_setup,
						mnt_teardown),
		cmocka_unit_test_setup_teardown(test_mkdir_rmdir_and_remount, mnt_setup,
						mnt_teardown),
		cmocka_unit_test_setup_teardown(test_query_directories, mnt_setup, mnt_teardown),
		cmocka_unit_test_setup_teardown(test_stats, mnt_setup, mnt_teardown),
		cmocka_unit_test_setup_teardown(test_nadbctl_query, mnt_setup, mnt_teardown),
		cmocka_unit_test_setup_teardown(test_listings_follow_every_change, mnt_setup,
						mnt_teardown),
		cmocka_unit_test_setup_teardown(test_expired_keys_leave_their_tags, mnt_setup,
						mnt_teardown),
		cmocka_unit_test_setup_teardown(test_long_key_names, mnt_setup, mnt_teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
