/*
 * Open addressing with linear probing over a power-of-two slot array (see htab.h).
 *
 * The table keeps at least 30% of its slots empty (NULL), counting tombstones as used, so every
 * probe ends at an empty slot. Slots hold only item pointers: no hash is cached, so a probe calls
 * match() on each live item it passes, and a rehash calls item_hash() on each live item.
 */
#include <errno.h>
#include <stdlib.h>
#include <xxhash.h>

#include "store/htab.h"

/* Its address marks a deleted slot; no item can live there. */
static char htab_tombstone_sentinel;
#define HTAB_TOMBSTONE ((void *)&htab_tombstone_sentinel)

#define HTAB_MIN_CAP 8

static bool is_live(const void *slot)
{
	return slot && slot != HTAB_TOMBSTONE;
}

/* Would taking one more empty slot pass the 70% load? */
static bool over_load(size_t used, size_t cap)
{
	return (used + 1) * 10 > cap * 7;
}

void htab_init(struct htab *t, htab_item_hash_fn item_hash, htab_match_fn match)
{
	t->slots = NULL;
	t->cap = 0;
	t->count = 0;
	t->used = 0;
	t->item_hash = item_hash;
	t->match = match;
	t->seed = 0;
}

void htab_set_seed(struct htab *t, uint64_t seed)
{
	t->seed = seed;
}

/* The slot an item of this hash is looked for from. */
static size_t home(uint64_t seed, uint64_t hash, size_t mask)
{
	return (seed ? htab_hash_u64(hash ^ seed) : hash) & mask;
}

void htab_destroy(struct htab *t)
{
	free(t->slots);
	t->slots = NULL;
	t->cap = t->count = t->used = 0;
}

void *htab_find(const struct htab *t, uint64_t hash, const void *key)
{
	size_t mask = t->cap - 1, i;

	if (!t->cap)
		return NULL;
	for (i = home(t->seed, hash, mask); t->slots[i]; i = (i + 1) & mask)
		if (t->slots[i] != HTAB_TOMBSTONE && t->match(t->slots[i], key))
			return t->slots[i];
	return NULL;
}

/* The first empty or deleted slot on item's probe path. */
static size_t free_slot(void **slots, size_t cap, uint64_t seed, uint64_t hash)
{
	size_t mask = cap - 1, i;

	for (i = home(seed, hash, mask); is_live(slots[i]); i = (i + 1) & mask)
		;
	return i;
}

/*
 * Moves the live items into a fresh array, dropping tombstones. Doubles the size only when the
 * live items (plus the more about to come) would fill more than half of it: rehashing at 70%
 * into a table that stays nearly that full would rehash again after a few inserts.
 */
static int rehash(struct htab *t, size_t more)
{
	size_t cap = t->cap < HTAB_MIN_CAP ? HTAB_MIN_CAP : t->cap;
	void **slots;

	while (t->count + more > cap / 2) {
		if (cap > SIZE_MAX / 2 / sizeof(*slots))
			return -ENOMEM;
		cap *= 2;
	}
	slots = calloc(cap, sizeof(*slots));
	if (!slots)
		return -ENOMEM;
	for (size_t i = 0; i < t->cap; i++) {
		void *item = t->slots[i];

		if (is_live(item))
			slots[free_slot(slots, cap, t->seed, t->item_hash(item))] = item;
	}
	free(t->slots);
	t->slots = slots;
	t->cap = cap;
	t->used = t->count;
	return 0;
}

int htab_insert(struct htab *t, void *item)
{
	uint64_t hash = t->item_hash(item);
	size_t i = 0; /* set on every path; the compiler cannot see it */
	int ret;

	if (t->cap) {
		i = free_slot(t->slots, t->cap, t->seed, hash);
		/* The key is not present, so the first tombstone on the path is as good as any
		 * later slot, and reusing it costs no load. */
		if (t->slots[i] == HTAB_TOMBSTONE)
			goto out_place;
	}
	if (!t->cap || over_load(t->used, t->cap)) {
		ret = rehash(t, 1);
		if (ret)
			return ret;
		i = free_slot(t->slots, t->cap, t->seed, hash);
	}
	t->used++;
out_place:
	t->slots[i] = item;
	t->count++;
	return 0;
}

int htab_reserve(struct htab *t, size_t more)
{
	/* An insert takes an empty slot at most (one on a tombstone takes
	 * none): after more of them used is at most used + more. */
	if (!more || (t->cap && !over_load(t->used + more - 1, t->cap)))
		return 0;
	return rehash(t, more);
}

bool htab_remove(struct htab *t, void *item)
{
	size_t mask = t->cap - 1, i;

	if (!t->cap)
		return false;
	for (i = home(t->seed, t->item_hash(item), mask); t->slots[i]; i = (i + 1) & mask) {
		if (t->slots[i] != item)
			continue;
		t->count--;
		/*
		 * Before an empty slot no probe path needs this one, nor the tombstones just
		 * before it: empty them all so that tables with churn rehash less often.
		 */
		if (t->slots[(i + 1) & mask]) {
			t->slots[i] = HTAB_TOMBSTONE;
			return true;
		}
		do {
			t->slots[i] = NULL;
			t->used--;
			i = (i - 1) & mask;
		} while (t->slots[i] == HTAB_TOMBSTONE);
		return true;
	}
	return false;
}

void *htab_next(const struct htab *t, size_t *pos)
{
	for (size_t i = *pos; i < t->cap; i++) {
		if (is_live(t->slots[i])) {
			*pos = i + 1;
			return t->slots[i];
		}
	}
	*pos = t->cap;
	return NULL;
}

uint64_t htab_hash_bytes(const void *data, size_t len, uint64_t seed)
{
	return XXH3_64bits_withSeed(data, len, seed);
}

/* splitmix64's finalizer: a bijection in which every input bit flips about half the output bits,
 * so sequential ids spread over the low bits the table indexes by. */
uint64_t htab_hash_u64(uint64_t x)
{
	x ^= x >> 30;
	x *= 0xbf58476d1ce4e5b9ULL;
	x ^= x >> 27;
	x *= 0x94d049bb133111ebULL;
	x ^= x >> 31;
	return x;
}
