/*
 * What the filesystem backend's tests share (test_backend_fs.c, which runs
 * them, and test_backend_fs_files.c): the test's data directory and the
 * helpers that open it.
 */
#ifndef NADB_TESTS_TEST_BACKEND_FS_H
#define NADB_TESTS_TEST_BACKEND_FS_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "store/backend.h"

struct fs_ctx {
	char root[64];		/* mkdtemp; everything of a test lives below it */
	char data[128];		/* root/data: the data directory */
	const char *db, *ns;
	uint64_t lock_ms;
	char err[256];		/* the last open's message */
};

extern struct fs_ctx ctx;

int fs_open_as(struct fs_ctx *x, const char *db, const char *ns, bool compress,
	       uint64_t lock_ms, struct kv_backend **out);
/* cmocka setup and teardown: a fresh data directory, removed after. */
int setup(void **state);
int teardown(void **state);
/* A path under the default store's directory (a static buffer). */
char *store_file(const char *rel);
bool exists(const char *path);
off_t file_size(const char *path);
/* Opens the store (compressed values); fails the test on error. */
struct kv_backend *xopen(void);
/* Opens and loads; returns the handle and the record count. */
struct kv_backend *xload(size_t *n, uint64_t *max_id);
/* A key's record: id, in the root, named "k<id>". */
void key(struct kv_meta *m, uint64_t id);
/* Captures the log into a file until release_log, which tells whether it
 * holds needle. */
void capture_log(void);
bool release_log(const char *needle);
/* Flips one bit of the byte at off. */
void flip(const char *path, off_t off);
/* Regular files below dir. */
size_t count_files(const char *dir);

/* test_backend_fs_files.c */
void test_stray_files_removed(void **state);
void test_torn_file_of_next_version(void **state);
void test_damaged_value_files(void **state);
void test_load_required_once(void **state);
void test_failed_commits_leave_nothing(void **state);
void test_nothing_outside_data_dir(void **state);

#endif
