/*
 * Backups, continued (see test_backup.h): a failure while a backup is
 * written (the index, its directory, the archive's rename) leaves the
 * backups as they were, and nothing behind.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "store/backup.h"
#include "store/kv_internal.h"
#include "tests/fault_shim.h"
#include "tests/test_backup.h"
/* The whole of a file (malloc'd, NUL-terminated), or NULL. */
static char *slurp(const char *path)
{
	FILE *fp = fopen(path, "r");
	char *buf = NULL;
	size_t len = 0;

	if (!fp)
		return NULL;
	buf = calloc(1, 1 << 16);
	if (buf)
		len = fread(buf, 1, (1 << 16) - 1, fp);
	fclose(fp);
	if (buf)
		buf[len] = '\0';
	return buf;
}

/* After a failed index update: the index is byte for byte what it was, reads
 * back as the list of ids want (comma-separated), and no temp file is left. */
static void check_index(struct fx *f, const char *before, const char *want)
{
	char path[256], ids[256] = "", *now;
	struct kv_backup_info *list;
	size_t n;

	snprintf(path, sizeof(path), "%s/index.json", f->dir);
	now = slurp(path);
	assert_non_null(now);
	assert_string_equal(now, before);
	free(now);
	assert_int_equal(kv_backup_list(KV(f), &list, &n, f->err, sizeof(f->err)), 0);
	for (size_t i = 0; i < n; i++)
		snprintf(ids + strlen(ids), sizeof(ids) - strlen(ids), "%s%s", i ? "," : "",
			 list[i].id);
	free(list);
	assert_string_equal(ids, want);
	snprintf(path, sizeof(path), "%s/.index.json.tmp", f->dir);
	assert_int_equal(access(path, F_OK), -1);
}

/*
 * index.json is replaced, never rewritten in place: a write, fsync or
 * rename that fails while a create or a prune updates it leaves the previous
 * index intact and readable, and a temp file left half-written (as a crash
 * leaves it) is not read and is replaced by the next update.
 */
void test_index_never_half_written(void **state)
{
	static const struct {
		int op, err;
		bool short_write;
	} faults[] = {
		{ F_WRITE, EIO, true }, /* a short write, then EIO */
		{ F_WRITE, ENOSPC, false },
		{ F_FSYNC, EIO, false },
		{ F_RENAME, EIO, false },
	};
	struct fx *f = *state;
	struct kv_store *kv = KV(f);
	struct kv_backup_info info;
	char path[256], id[32], *before;
	size_t nremoved;
	char *removed;
	FILE *fp;

	put_str(kv, "k", "v");
	assert_int_equal(kv_backup_create(kv, "one", NULL, &info, f->err, sizeof(f->err)), 0);
	snprintf(path, sizeof(path), "%s/index.json", f->dir);
	before = slurp(path);
	assert_non_null(before);
	for (size_t i = 0; i < sizeof(faults) / sizeof(faults[0]); i++) {
		snprintf(id, sizeof(id), "two-%zu", i);
		fault_arm(faults[i].op, "index.json", faults[i].err, 0, -1, faults[i].short_write);
		assert_int_equal(kv_backup_create(kv, id, NULL, &info, f->err, sizeof(f->err)),
				 -faults[i].err);
		assert_true(fault_hits() > 0);
		fault_clear();
		assert_non_null(strstr(f->err, "index.json"));
		check_index(f, before, "one");
	}
	/* prune rewrites the index before it removes archives: a failure
	 * there removes nothing. */
	put_str(kv, "k", "w");
	assert_int_equal(kv_backup_create(kv, "three", NULL, &info, f->err, sizeof(f->err)), 0);
	free(before);
	before = slurp(path);
	fault_arm(F_RENAME, "index.json", EIO, 0, -1, false);
	assert_int_equal(kv_backup_prune(kv, 1, &removed, &nremoved, f->err, sizeof(f->err)),
			 -EIO);
	assert_true(fault_hits() > 0);
	fault_clear();
	check_index(f, before, "one,three");
	snprintf(path, sizeof(path), "%s/one.tar.zst", f->dir);
	assert_int_equal(access(path, F_OK), 0);
	/* A half-written temp file from a crash is ignored, then replaced. */
	snprintf(path, sizeof(path), "%s/.index.json.tmp", f->dir);
	assert_non_null(fp = fopen(path, "w"));
	fputs("{\"version\":1,\"backups\":[{\"id\":\"ha", fp);
	fclose(fp);
	assert_int_equal(kv_backup_verify(kv, "three", &info, f->err, sizeof(f->err)), 0);
	assert_int_equal(kv_backup_create(kv, "four", NULL, &info, f->err, sizeof(f->err)), 0);
	free(before);
	snprintf(path, sizeof(path), "%s/index.json", f->dir);
	before = slurp(path);
	check_index(f, before, "one,three,four");
	free(before);
}

/*
 * A create that fails once its archive is in place (index.json not written,
 * or written but its directory not synced) leaves the backup directory as it
 * was, so the same id can be created next; the first backup's failure does
 * not even leave the directory it made.
 */
void test_failed_create_leaves_nothing(void **state)
{
	static const struct {
		int op, err, skip;
		const char *file, *msg;
	} faults[] = {
		{ F_WRITE, ENOSPC, 0, "index.json", "index.json" },
		{ F_FSYNC, EIO, 0, "index.json", "index.json" },
		{ F_RENAME, EIO, 0, "index.json", "index.json" },
		/* The directory's fsyncs: after the archive's rename (the
		 * archive's own fsync comes first), then after index.json's
		 * (the archive's, the directory's, index.json's first). */
		{ F_FSYNC, EIO, 1, "/backups", "backups" },
		{ F_FSYNC, EIO, 3, "/backups", "index.json" },
	};
	struct fx *f = *state;
	struct kv_store *kv = KV(f);
	struct kv_backup_info info;
	char path[256], id[32], names[1024], now[1024], *before, *after;

	put_str(kv, "k", "v");
	fault_arm(F_RENAME, "index.json", EIO, 0, -1, false);
	assert_int_equal(kv_backup_create(kv, "first", NULL, &info, f->err, sizeof(f->err)),
			 -EIO);
	fault_clear();
	assert_int_equal(access(f->dir, F_OK), -1);
	assert_int_equal(kv_backup_create(kv, "first", NULL, &info, f->err, sizeof(f->err)), 0);
	snprintf(path, sizeof(path), "%s/index.json", f->dir);
	for (size_t i = 0; i < sizeof(faults) / sizeof(faults[0]); i++) {
		snprintf(id, sizeof(id), "two-%zu", i);
		before = slurp(path);
		dir_names(f->dir, names, sizeof(names));
		fault_arm(faults[i].op, faults[i].file, faults[i].err, faults[i].skip, 1, false);
		assert_int_equal(kv_backup_create(kv, id, NULL, &info, f->err, sizeof(f->err)),
				 -faults[i].err);
		assert_int_equal(fault_hits(), 1);
		fault_clear();
		assert_non_null(strstr(f->err, faults[i].msg));
		dir_names(f->dir, now, sizeof(now));
		assert_string_equal(now, names);
		after = slurp(path);
		assert_non_null(after);
		assert_string_equal(after, before);
		free(after);
		free(before);
		assert_int_equal(kv_backup_create(kv, id, NULL, &info, f->err, sizeof(f->err)), 0);
		assert_int_equal(kv_backup_verify(kv, id, &info, f->err, sizeof(f->err)), 0);
	}
	dir_names(f->dir, names, sizeof(names));
	assert_string_equal(names, ".lock,first.tar.zst,index.json,two-0.tar.zst,two-1.tar.zst,"
				   "two-2.tar.zst,two-3.tar.zst,two-4.tar.zst");
}
