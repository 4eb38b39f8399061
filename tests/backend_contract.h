/*
 * The backend contract: what every backend (store/backend.h) must do, as a
 * cmocka suite parametrised by a factory, so the same tests run against the
 * filesystem backend and, with its own factory, the Redis backend.
 */
#ifndef NADB_TESTS_BACKEND_CONTRACT_H
#define NADB_TESTS_BACKEND_CONTRACT_H

#include <stdbool.h>

#include "store/backend.h"

struct contract_backend {
	const char *name;
	void *ctx;
	/* Before each test: makes a new, empty store. 0 or a negative errno. */
	int (*create)(void *ctx);
	/*
	 * Opens a handle on that store (called again after kv_backend_close to
	 * test what persists). compress: zstd for values of 1 KiB and more;
	 * otherwise no compression.
	 */
	int (*open)(void *ctx, bool compress, struct kv_backend **out);
	/* After each test (handles are closed by then): removes the store and
	 * everything it holds. */
	void (*close_and_destroy)(void *ctx);
};

/* Runs the suite; returns the number of failed tests. */
int backend_contract_run(const struct contract_backend *cb);

/*
 * Helpers for a backend's own tests, built on the vtable only. They fail the
 * running cmocka test on any unexpected result.
 */

/* A kv_load_fn that counts records into the size_t at arg. */
int contract_count(const struct kv_meta *m, void *arg);
/* Commits a PUT of key id (parent root, name "k<id>") with len bytes of c,
 * replacing stored version old_vver; returns the new vver. */
uint64_t contract_put(struct kv_backend *b, uint64_t id, size_t len, char c, uint64_t old_vver);
/* Loads b (once per handle) and tells whether id is live; *out (may be NULL)
 * gets its record without the owned fields, enough to read its value. */
bool contract_load_has(struct kv_backend *b, uint64_t id, struct kv_meta *out);

/* A scripted history of puts, rewrites and deletes over ids 2..N-1. */
enum { CONTRACT_MODEL_N = 400 };
struct contract_model {
	bool live[CONTRACT_MODEL_N];
	uint64_t len[CONTRACT_MODEL_N];
	char c[CONTRACT_MODEL_N];
	uint64_t vver[CONTRACT_MODEL_N];
	/* Filled by a load: how each value is stored. */
	uint64_t stored[CONTRACT_MODEL_N];
	uint8_t enc[CONTRACT_MODEL_N];
};
/* Runs rounds of single-op commits on b, recording the expected state. */
void contract_churn(struct kv_backend *b, struct contract_model *md, int rounds);
/* Loads b (once per handle) and compares with md, reading every value. */
void contract_check_model(struct kv_backend *b, const struct contract_model *md);

#endif
