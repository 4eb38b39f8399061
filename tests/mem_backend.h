/*
 * An in-memory backend for store unit tests, with fault injection: commits
 * can be made to fail or to block until released, and the committed state
 * survives kv_close so a test can reopen the same store.
 */
#ifndef NADB_TESTS_MEM_BACKEND_H
#define NADB_TESTS_MEM_BACKEND_H

#include <pthread.h>
#include "store/backend.h"

struct mem_rec {
	struct kv_meta m;
	struct kv_value *value;	/* committed content, NULL when empty */
};

/* A superseded value version the store asked to keep (old_vver = 0). */
struct mem_old {
	uint64_t id, vver;
	struct kv_value *value;
};

struct mem_state {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct mem_rec *recs;
	size_t nrecs, cap;
	uint64_t max_id, next_vver;
	int fail_commit;	/* a negative errno commit() returns, or 0 */
	bool gate_closed;	/* commit() blocks while set ... */
	bool in_commit;		/* ... and says it is blocked here */
	unsigned commits;	/* successful commits */
	size_t last_nops;	/* ops in the last commit */
	unsigned puts_with_value; /* in the last commit */
	/* PUTs flagged never_sent / uncertain in the last commit() call,
	 * failed ones included. */
	unsigned never_sent_puts, uncertain_puts;
	struct mem_old *olds;	/* kept versions, until reclaim() */
	size_t nolds, olds_cap;
	size_t reclaimed;	/* versions freed by reclaim() */
	/* Set before the backend is made: it says other mounts share the
	 * store (caps.shared) and offers reserve()/release(), which count
	 * their calls and let the test act, without the store's lock, from
	 * inside reserve: its return is reserve()'s (-ESTALE: *bad = 0). */
	bool shared;
	int (*on_reserve)(void *arg, const struct kv_expect *e, size_t n);
	void *on_reserve_arg;
	unsigned reserves, releases;
	/* Shared only: fetch() gives records by id; load() leaves this one
	 * out, as a scan that passed its place before another mount made it,
	 * and gives these older versions of records (or of records since
	 * removed) instead, as a scan that read them before another mount
	 * moved or removed them. */
	uint64_t load_skip;
	const struct kv_meta *load_stale;
	size_t nload_stale;
	/* A PUT that may give way and is named this gives way (kv_op.yielded),
	 * as to another mount's record holding its name; yields counts them.
	 * gate_after_yield: a commit in which one gave way closes the gate
	 * (the next commit blocks until mem_gate_open). */
	const char *yield_name;
	unsigned yields;
	bool gate_after_yield;
};

void mem_state_init(struct mem_state *s);
void mem_state_destroy(struct mem_state *s);
/* A backend handle over s (s must outlive it). */
struct kv_backend *mem_backend_new(struct mem_state *s);
/* The committed record with this parent and name, or NULL. */
struct mem_rec *mem_find(struct mem_state *s, uint64_t parent, const char *name);
struct mem_rec *mem_find_id(struct mem_state *s, uint64_t id);
/* The committed value of the record parent/name as a string (test values
 * are small; the caller frees it), or NULL if there is no such record. */
char *mem_value_str(struct mem_state *s, uint64_t parent, const char *name);
/* Adds a record directly, as if committed earlier. */
void mem_put_raw(struct mem_state *s, const struct kv_meta *m);
/* Gate: close, wait until a commit is blocked in it, open. */
void mem_gate_close(struct mem_state *s);
void mem_wait_in_commit(struct mem_state *s);
void mem_gate_open(struct mem_state *s);

/*
 * A store over the in-memory backend that a test can close and reopen on the
 * same committed state (the fixture the store tests share).
 */
#include "store/kv.h"

struct mem_store {
	struct mem_state s;
	struct kv_options o;	/* sensible defaults; change them before a reopen */
	struct kv_store *kv;
};

/* Initialises f with default options and opens it (threads started if start). */
void mem_store_open(struct mem_store *f, bool start);
/* Closes f's store (asserting a clean final flush) and opens it again. */
void mem_store_reopen(struct mem_store *f, bool start);
/* Closes the store and frees the state. */
void mem_store_close(struct mem_store *f);
/* Writes value to the key name in dir (created if needed); its id. */
uint64_t mem_store_put(struct mem_store *f, uint64_t dir, const char *name, const char *value);

#endif
