/*
 * An open-addressing hash table of pointers to caller-owned items, with the
 * hash and the key comparison supplied by the caller. It stores one pointer
 * per slot and nothing else, so an index costs ~8-12 bytes per item.
 *
 * Locking: none inside; the owner serializes access.
 * Return convention: 0 or a negative errno.
 */
#ifndef NADB_STORE_HTAB_H
#define NADB_STORE_HTAB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Hash of an item already in the table (must equal the hash of its key). */
typedef uint64_t (*htab_item_hash_fn)(const void *item);
/* Does item have this key? */
typedef bool (*htab_match_fn)(const void *item, const void *key);

struct htab {
	void **slots;		/* NULL = empty, HTAB_TOMBSTONE = deleted */
	size_t cap;		/* power of two, or 0 */
	size_t count;		/* live items */
	size_t used;		/* live items + tombstones */
	htab_item_hash_fn item_hash;
	htab_match_fn match;
	uint64_t seed;		/* 0, or mixed into every hash (htab_set_seed) */
};

void htab_init(struct htab *t, htab_item_hash_fn item_hash, htab_match_fn match);
/*
 * Gives an empty table its own slot order: each hash is mixed with seed
 * before it picks a slot. For a table filled in the iteration order of
 * another table with the same hash (the store's id index loaded from a
 * snapshot written in the order of the backend's id map): inserted in slot
 * order, items crowd the low slots of a table still smaller than the
 * other, and linear probing made clusters of tens of thousands of slots
 * (a 1,000,000-key store took 5.6 s to load instead of 1.4 s).
 */
void htab_set_seed(struct htab *t, uint64_t seed);
void htab_destroy(struct htab *t);	/* frees slots, not the items */
/* The item matching key (whose hash is hash), or NULL. */
void *htab_find(const struct htab *t, uint64_t hash, const void *key);
/* Inserts item (its key must not be present). 0 or -ENOMEM. */
int htab_insert(struct htab *t, void *item);
/* Makes room so that the next more inserts need no memory (removals
 * between them are fine). 0 or -ENOMEM, the table unchanged. */
int htab_reserve(struct htab *t, size_t more);
/* Removes this exact item pointer; true if it was there. */
bool htab_remove(struct htab *t, void *item);
static inline size_t htab_count(const struct htab *t) { return t->count; }

/* Iteration: for (size_t i = 0; (item = htab_next(t, &i)); ) ... (no changes meanwhile). */
void *htab_next(const struct htab *t, size_t *pos);

/* A good 64-bit hash of bytes (xxhash) and of a 64-bit integer. */
uint64_t htab_hash_bytes(const void *data, size_t len, uint64_t seed);
uint64_t htab_hash_u64(uint64_t x);

#endif
