/*
 * Backups on a real mount, driven with nadbctl and the usual tools: create
 * (buffered writes included), list (also --json), verify, restore with and
 * without --clear (values, tags, TTL, modes, times, xattrs, empty dirs and
 * declared tags come back), incremental backups, tar reading the archive,
 * bad ids, a damaged archive refused with nothing changed, prune.
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
#include <unistd.h>
#include <cmocka.h>

#include <jansson.h>

#include "mnt.h"

/* Runs nadbctl -m MOUNT ARGS; returns its status, output in *out. */
static int ctl(struct mnt *m, char **out, const char *args)
{
	return run_cmd_out(out, "%s -m %s %s", nadbctl_bin(), shq(m, m->dir), args);
}

/*
 * Where backups go: backups/ in the data directory by default; a Redis
 * store has none, so those mounts name one in the test's tree.
 */
static const char *bkdir(struct mnt *m)
{
	mnt_init(m);
	return m->backend == MNT_BACKEND_REDIS ? mnt_str(m, "%s/backups", m->root) :
						   mnt_str(m, "%s/backups", m->data);
}

static void start(struct mnt *m, const char *opts)
{
	mnt_init(m);
	if (m->backend != MNT_BACKEND_REDIS)
		mnt_start(m, opts);
	else
		mnt_start(m, mnt_str(m, "%s%sbackup_dir=%s", opts ? opts : "", opts ? "," : "",
				     bkdir(m)));
}

static void ctl_ok(struct mnt *m, const char *args)
{
	char *out = NULL;

	if (ctl(m, &out, args))
		fail_msg("nadbctl %s failed: %s", args, out);
	free(out);
}

static char *xattr(struct mnt *m, const char *name, const char *path)
{
	char *out = NULL;

	if (run_cmd_out(&out, "getfattr --absolute-names --only-values -n %s %s 2>&1", name,
			shq(m, mnt_path(m, "%s", path))))
		fail_msg("getfattr %s %s: %s", name, path, out);
	return out;
}

static void test_round_trip(void **state)
{
	struct mnt *m = *state;
	struct stat st;
	char *out = NULL;
	json_t *j;
	json_error_t jerr;

	start(m, "flush_interval=1h"); /* everything stays in the buffer */
	put_str(mnt_path(m, "a"), "alpha");
	ASSERT_SYS(mkdir(mnt_path(m, "d"), 0755));
	put_str(mnt_path(m, "d/b"), "beta");
	ASSERT_SYS(chmod(mnt_path(m, "d/b"), 0600));
	assert_int_equal(run_cmd("setfattr -n user.tags -v red,blue %s", shq(m, mnt_path(m, "d/b"))),
			 0);
	assert_int_equal(run_cmd("setfattr -n user.ttl -v 3600 %s", shq(m, mnt_path(m, "d/b"))),
			 0);
	assert_int_equal(run_cmd("setfattr -n user.note -v hi %s", shq(m, mnt_path(m, "a"))), 0);
	assert_int_equal(run_cmd("touch -m -d '2001-02-03 04:05:06.789' %s",
				 shq(m, mnt_path(m, "a"))), 0);
	ASSERT_SYS(mkdir(mnt_path(m, "empty"), 0700));
	ASSERT_SYS(mkdir(mnt_path(m, "tags/planned"), 0755));

	assert_int_equal(ctl(m, &out, "backup create full"), 0);
	assert_non_null(strstr(out, "ok full\n"));
	assert_non_null(strstr(out, "keys: 2\n"));
	free(out);
	assert_int_equal(ctl(m, &out, "backup list"), 0);
	assert_non_null(strstr(out, "ok 1 backup\nfull "));
	free(out);
	assert_int_equal(ctl(m, &out, "backup list --json"), 0);
	j = json_loads(out, 0, &jerr);
	if (!j)
		fail_msg("list --json is not JSON: %s", out);
	assert_string_equal(json_string_value(json_object_get(json_array_get(j, 0), "id")),
			    "full");
	json_decref(j);
	free(out);
	assert_int_equal(ctl(m, &out, "backup verify full"), 0);
	assert_non_null(strstr(out, "ok full verified"));
	free(out);
	/* A tar archive any tar reads, values by number, no key text in names. */
	assert_int_equal(run_cmd_out(&out, "tar -tf %s/full.tar.zst", shq(m, bkdir(m))), 0);
	assert_non_null(strstr(out, "manifest.json\n"));
	assert_non_null(strstr(out, "values/0\n"));
	free(out);
	assert_int_equal(run_cmd_out(&out, "tar -xOf %s/full.tar.zst manifest.json",
				     shq(m, bkdir(m))),
			 0);
	assert_non_null(strstr(out, "\"d/b\""));
	free(out);

	/* Change all of it. */
	ASSERT_SYS(unlink(mnt_path(m, "a")));
	put_str(mnt_path(m, "d/b"), "changed");
	ASSERT_SYS(chmod(mnt_path(m, "d/b"), 0644));
	assert_int_equal(run_cmd("setfattr -x user.tags %s", shq(m, mnt_path(m, "d/b"))), 0);
	assert_int_equal(run_cmd("setfattr -x user.ttl %s", shq(m, mnt_path(m, "d/b"))), 0);
	ASSERT_SYS(rmdir(mnt_path(m, "empty")));
	ASSERT_SYS(rmdir(mnt_path(m, "tags/planned")));
	put_str(mnt_path(m, "x"), "new");
	ASSERT_SYS(mkdir(mnt_path(m, "newdir"), 0755));

	/* Without --clear: what the backup has comes back, the rest stays. */
	if (ctl(m, &out, "backup restore full"))
		fail_msg("restore: %s", out);
	assert_non_null(strstr(out, "ok 2 keys restored from full"));
	free(out);
	assert_file_str(mnt_path(m, "a"), "alpha");
	assert_file_str(mnt_path(m, "x"), "new");
	/* --clear: exactly the backup. */
	ctl_ok(m, "backup restore full --clear");
	ASSERT_ERRNO(stat(mnt_path(m, "x"), &st), ENOENT);
	ASSERT_ERRNO(stat(mnt_path(m, "newdir"), &st), ENOENT);
	assert_file_str(mnt_path(m, "a"), "alpha");
	assert_file_str(mnt_path(m, "d/b"), "beta");
	ASSERT_SYS(stat(mnt_path(m, "d/b"), &st));
	assert_int_equal(st.st_mode & 07777, 0600);
	ASSERT_SYS(stat(mnt_path(m, "a"), &st));
	assert_int_equal(st.st_mtim.tv_nsec, 789000000);
	ASSERT_SYS(stat(mnt_path(m, "empty"), &st));
	assert_int_equal(st.st_mode & 07777, 0700);
	ASSERT_SYS(stat(mnt_path(m, "tags/planned"), &st));
	ASSERT_SYS(stat(mnt_path(m, "tags/red"), &st));
	out = xattr(m, "user.tags", "d/b");
	assert_string_equal(out, "blue,red");
	free(out);
	out = xattr(m, "user.ttl", "d/b");
	assert_true(atoi(out) > 3500 && atoi(out) <= 3600);
	free(out);
	out = xattr(m, "user.note", "a");
	assert_string_equal(out, "hi");
	free(out);

	/* Still there after a remount: the restore went through the store. */
	mnt_restart(m, "flush_interval=1h");
	assert_file_str(mnt_path(m, "d/b"), "beta");
	mnt_stop(m);
}

static void test_incremental_errors_prune(void **state)
{
	struct mnt *m = *state;
	char *out = NULL, path[4096];
	struct stat st;
	int fd;
	unsigned char c;

	start(m, NULL);
	put_str(mnt_path(m, "k1"), "one");
	put_str(mnt_path(m, "k2"), "two");
	ctl_ok(m, "backup create base");
	ASSERT_SYS(unlink(mnt_path(m, "k2")));
	put_str(mnt_path(m, "k3"), "three");
	assert_int_equal(ctl(m, &out, "backup create --incremental-from base inc"), 0);
	assert_non_null(strstr(out, "parent: base\n"));
	assert_non_null(strstr(out, "stored: 1\n"));
	assert_non_null(strstr(out, "deleted: 1\n"));
	free(out);
	/* Default ids: the UTC time, never twice the same. */
	ctl_ok(m, "backup create");
	ctl_ok(m, "backup create");
	assert_int_equal(ctl(m, &out, "backup list"), 0);
	assert_non_null(strstr(out, "ok 4 backups\n"));
	assert_non_null(strstr(out, "inc "));
	free(out);

	put_str(mnt_path(m, "k2"), "back again");
	ASSERT_SYS(unlink(mnt_path(m, "k1")));
	ctl_ok(m, "backup restore inc --clear");
	assert_file_str(mnt_path(m, "k1"), "one");
	assert_file_str(mnt_path(m, "k3"), "three");
	ASSERT_ERRNO(stat(mnt_path(m, "k2"), &st), ENOENT);

	/* Names, not paths. */
	assert_int_equal(ctl(m, &out, "backup create ../escape"), 1);
	assert_non_null(strstr(out, "bad backup id"));
	free(out);
	assert_int_equal(ctl(m, &out, "backup restore a/b"), 1);
	assert_non_null(strstr(out, "bad backup id"));
	free(out);
	assert_int_equal(ctl(m, &out, "backup verify nosuch"), 1);
	assert_non_null(strstr(out, "no backup nosuch"));
	free(out);
	assert_int_equal(ctl(m, &out, "backup frob"), 1);
	free(out);
	assert_int_equal(ctl(m, &out, "backup prune --keep 0"), 1);
	free(out);

	/* A flipped byte: refused, nothing changed. */
	snprintf(path, sizeof(path), "%s/base.tar.zst", bkdir(m));
	fd = open(path, O_RDWR);
	assert_true(fd >= 0);
	ASSERT_SYS(fstat(fd, &st));
	assert_int_equal(pread(fd, &c, 1, st.st_size / 2), 1);
	c ^= 0x01;
	assert_int_equal(pwrite(fd, &c, 1, st.st_size / 2), 1);
	close(fd);
	put_str(mnt_path(m, "k1"), "after");
	assert_int_equal(ctl(m, &out, "backup verify inc"), 1);
	assert_non_null(strstr(out, "base.tar.zst"));
	free(out);
	assert_int_equal(ctl(m, &out, "backup restore inc --clear"), 1);
	free(out);
	assert_file_str(mnt_path(m, "k1"), "after");
	assert_file_str(mnt_path(m, "k3"), "three");

	/* prune --keep 1 keeps the newest; the chain base <- inc goes. */
	assert_int_equal(ctl(m, &out, "backup prune --keep 1"), 0);
	assert_non_null(strstr(out, "ok 3 removed\n"));
	assert_non_null(strstr(out, "removed: base\n"));
	free(out);
	assert_int_equal(ctl(m, &out, "backup list"), 0);
	assert_non_null(strstr(out, "ok 1 backup\n"));
	free(out);
	assert_int_equal(run_cmd("test -e %s/base.tar.zst", shq(m, bkdir(m))), 1);
	mnt_stop(m);
}

#define T(f) cmocka_unit_test_setup_teardown(f, mnt_setup, mnt_teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		T(test_round_trip),
		T(test_incremental_errors_prune),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
