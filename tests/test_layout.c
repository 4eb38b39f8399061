/*
 * Module boundaries (architecture.md): data flows mount -> fs -> store ->
 * backend; only fs/ and mount/ see FUSE, only store/ sees hiredis, only conf/
 * sees inih, only store/ sees libarchive, and util/ depends on no module.
 * Each rule greps the sources.
 */
#include <dirent.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

/* Counts lines of files in dir (.c/.h) that include something starting
 * with one of the prefixes; prints each offence. */
static int offences(const char *dir, const char *const *prefixes)
{
	const char *root = getenv("NADBFS_SOURCE_ROOT");
	char path[4096], line[1024];
	struct dirent *de;
	DIR *d;
	int count = 0;

	assert_non_null(root);
	snprintf(path, sizeof(path), "%s/%s", root, dir);
	d = opendir(path);
	assert_non_null(d);
	while ((de = readdir(d))) {
		size_t len = strlen(de->d_name);
		FILE *f;

		if (len < 3 || (strcmp(de->d_name + len - 2, ".c") && strcmp(de->d_name + len - 2, ".h")))
			continue;
		snprintf(path, sizeof(path), "%s/%s/%s", root, dir, de->d_name);
		f = fopen(path, "r");
		assert_non_null(f);
		for (int ln = 1; fgets(line, sizeof(line), f); ln++) {
			char *p = line, *inc;

			while (*p == ' ' || *p == '\t')
				p++;
			if (*p != '#')
				continue;
			inc = strstr(p, "include");
			if (!inc)
				continue;
			inc += strlen("include");
			while (*inc == ' ' || *inc == '\t')
				inc++;
			if (*inc != '<' && *inc != '"')
				continue;
			inc++;
			for (const char *const *pre = prefixes; *pre; pre++) {
				if (strncmp(inc, *pre, strlen(*pre)) == 0) {
					printf("%s/%s:%d: includes %s", dir, de->d_name, ln, inc);
					count++;
				}
			}
		}
		fclose(f);
	}
	closedir(d);
	return count;
}

static const char *const fuse[] = { "fuse", NULL };
static const char *const hiredis[] = { "hiredis", NULL };
static const char *const inih[] = { "ini.h", NULL };

static void test_store_is_fuse_free(void **state)
{
	static const char *const up[] = { "fuse", "fs/", "conf/", "mount/", "ini.h", NULL };

	(void)state;
	assert_int_equal(offences("store", up), 0);
}

static void test_only_store_uses_hiredis(void **state)
{
	(void)state;
	assert_int_equal(offences("fs", hiredis) + offences("conf", hiredis) +
				 offences("mount", hiredis) + offences("util", hiredis),
			 0);
}

static void test_only_conf_uses_inih(void **state)
{
	(void)state;
	assert_int_equal(offences("fs", inih) + offences("store", inih) +
				 offences("mount", inih) + offences("util", inih),
			 0);
}

/* libarchive is for backup archives: store/ only (backup_archive.c). */
static void test_only_store_uses_libarchive(void **state)
{
	static const char *const archive[] = { "archive.h", "archive_entry.h", NULL };

	(void)state;
	assert_int_equal(offences("fs", archive) + offences("conf", archive) +
				 offences("mount", archive) + offences("util", archive),
			 0);
}

static void test_fs_does_not_know_backends_or_conf(void **state)
{
	static const char *const up[] = { "conf/", "mount/", "store/backend_", "store/kv_internal",
					  "store/journal", NULL };

	(void)state;
	assert_int_equal(offences("fs", up), 0);
}

static void test_conf_and_util_know_no_module(void **state)
{
	static const char *const conf_up[] = { "fs/", "store/", "mount/", "fuse", NULL };
	static const char *const util_up[] = { "fs/", "store/", "mount/", "conf/", "fuse", NULL };

	(void)state;
	assert_int_equal(offences("conf", conf_up) + offences("util", util_up), 0);
	assert_int_equal(offences("conf", fuse), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_store_is_fuse_free),
		cmocka_unit_test(test_only_store_uses_hiredis),
		cmocka_unit_test(test_only_conf_uses_inih),
		cmocka_unit_test(test_only_store_uses_libarchive),
		cmocka_unit_test(test_fs_does_not_know_backends_or_conf),
		cmocka_unit_test(test_conf_and_util_know_no_module),
	};

	return cmocka_run_group_tests_name("layout", tests, NULL, NULL);
}
