/*
 * The backup tests, in three files: test_backup.c (round trips, chains,
 * damage, ids, pruning), test_backup_faults.c (failures while a backup
 * is written) and test_backup_lock.c (stores sharing a backup directory),
 * sharing the fixture and these helpers.
 */
#ifndef NADB_TESTS_TEST_BACKUP_H
#define NADB_TESTS_TEST_BACKUP_H

#include <stddef.h>
#include <stdint.h>

#include "tests/mem_backend.h"

struct fx {
	struct mem_store st;
	char root[64];
	char dir[128];		/* backup_dir */
	char err[512];
};

struct kv_store *KV(struct fx *f);
/* The id of path ("a/b"), or 0. */
uint64_t find(struct kv_store *kv, const char *path);
void put_str(struct kv_store *kv, const char *path, const char *s);
void assert_str(struct kv_store *kv, const char *path, const char *s);
/* The names in dir but "." and "..", sorted, comma-separated ("" when it
 * is missing). */
void dir_names(const char *dir, char *out, size_t len);

void test_index_never_half_written(void **state);
void test_failed_create_leaves_nothing(void **state);
void test_lock_concurrent_creates(void **state);
void test_lock_processes(void **state);
void test_lock_held_elsewhere(void **state);
/* The other process of test_lock_processes: main's, given --lock-child. */
int lock_child(const char *dir, const char *owner);
void test_lock_never_replaces(void **state);
void test_lock_dangling_dir(void **state);

#endif
