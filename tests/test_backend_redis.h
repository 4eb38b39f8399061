/*
 * The Redis backend's own tests, in three files: test_backend_redis.c (the
 * fixture, layout, connection, expiry, indexes), test_backend_redis_ops.c
 * (transactions' reservations and tag queries) and
 * test_backend_redis_layout.c (the layout's version), sharing these helpers.
 */
#ifndef NADB_TESTS_TEST_BACKEND_REDIS_H
#define NADB_TESTS_TEST_BACKEND_REDIS_H

#include <stdint.h>

#include "store/backend.h"
#include "tests/redis_server.h"

/* The test's private redis-server. */
extern struct redis_server srv;
/* The command timeout of backends opened from now on. */
void set_command_timeout(uint64_t ms);

/* A fresh backend over the test's store, loaded (*n: records seen). */
struct kv_backend *xload(size_t *n);
int64_t wall_ms(void);
/* Opens the test's store expecting want in the error message: the result. */
int redis_open_err(struct kv_backend **out, const char *want);
/* A key under parent with tags (comma-separated, sorted, "" for none). */
int put_key(struct kv_backend *b, uint64_t id, uint64_t parent, const char *name,
	    const char *tags, int64_t expires_ms, const char *data, uint64_t *vver);
int del_key(struct kv_backend *b, uint64_t id, uint64_t vver);
/* redis-cli output, trimmed of its last newline; the caller frees it. */
char *cli(const char *fmt, const char *arg);
void assert_cli(const char *fmt, const char *arg, const char *want);
long long cli_int(const char *fmt, const char *arg);

void test_transaction_reservations(void **state);
void test_query_set_operations(void **state);
void test_dir_delete_keeps_foreign_entries(void **state);
void test_staged_writes(void **state);
void test_script_refuses_swept_batch(void **state);
void test_pipeline_survives_a_busy_server(void **state);
void test_records_are_strings(void **state);
void test_uncertain_put_completes(void **state);
void test_layout_1_converted(void **state);
void test_newer_layout_refused(void **state);
void test_stray_hash_records_read(void **state);
void test_commit_refused_on_newer_layout(void **state);
void test_index_decoded_exactly(void **state);
void test_conversion_resumes(void **state);

#endif
