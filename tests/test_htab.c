/*
 * Unit tests of store/htab.c: lookups, growth, tombstones and their reuse and purge, iteration,
 * a randomized comparison with a flat reference, tables whose hashes all collide, and a seeded
 * table filled in another table's order.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <xxhash.h>

#include "store/htab.h"

struct item {
	uint64_t key;
	int seen;
};

static uint64_t item_hash(const void *item)
{
	return htab_hash_u64(((const struct item *)item)->key);
}

/* Every item in one probe chain. */
static uint64_t const_hash(const void *item)
{
	(void)item;
	return 0;
}

/* Consecutive keys in consecutive slots: long clusters. */
static uint64_t ident_hash(const void *item)
{
	return ((const struct item *)item)->key;
}

static bool item_match(const void *item, const void *key)
{
	return ((const struct item *)item)->key == *(const uint64_t *)key;
}

static struct item *find(const struct htab *t, uint64_t key)
{
	struct item probe = { .key = key };

	return htab_find(t, t->item_hash(&probe), &key);
}

static struct item *make_items(size_t n)
{
	struct item *items = calloc(n, sizeof(*items));

	assert_non_null(items);
	for (size_t i = 0; i < n; i++)
		items[i].key = i * 7919 + 13;
	return items;
}

static void check_invariants(const struct htab *t)
{
	size_t live = 0, used = 0;

	if (!t->cap) {
		assert_int_equal(t->count, 0);
		return;
	}
	assert_true((t->cap & (t->cap - 1)) == 0);
	assert_true(t->cap >= 8);
	for (size_t i = 0; i < t->cap; i++) {
		if (t->slots[i])
			used++;
		if (t->slots[i] && htab_next(t, &(size_t){ i }) == t->slots[i])
			live++;
	}
	assert_int_equal(live, t->count);
	assert_int_equal(used, t->used);
	assert_true(t->used * 10 <= t->cap * 7);
}

static void test_empty(void **state)
{
	struct htab t;
	struct item a = { .key = 1 };
	size_t pos = 0;

	(void)state;
	htab_init(&t, item_hash, item_match);
	assert_int_equal(htab_count(&t), 0);
	assert_null(find(&t, 1));
	assert_false(htab_remove(&t, &a));
	assert_null(htab_next(&t, &pos));
	htab_destroy(&t);
	htab_destroy(&t);
}

static void test_basic(void **state)
{
	struct item a = { .key = 1 }, b = { .key = 2 }, c = { .key = 3 }, a2 = { .key = 1 };
	struct htab t;

	(void)state;
	htab_init(&t, item_hash, item_match);
	assert_int_equal(htab_insert(&t, &a), 0);
	assert_int_equal(htab_insert(&t, &b), 0);
	assert_int_equal(htab_count(&t), 2);
	assert_ptr_equal(find(&t, 1), &a);
	assert_ptr_equal(find(&t, 2), &b);
	assert_null(find(&t, 3));
	/* Removal goes by pointer: an equal key elsewhere is not the item. */
	assert_false(htab_remove(&t, &a2));
	assert_false(htab_remove(&t, &c));
	assert_true(htab_remove(&t, &a));
	assert_false(htab_remove(&t, &a));
	assert_null(find(&t, 1));
	assert_ptr_equal(find(&t, 2), &b);
	assert_int_equal(htab_count(&t), 1);
	assert_int_equal(htab_insert(&t, &a2), 0);
	assert_ptr_equal(find(&t, 1), &a2);
	check_invariants(&t);
	htab_destroy(&t);
}

static void run_many(htab_item_hash_fn hash, size_t n)
{
	struct item *items = make_items(n);
	struct htab t;
	size_t last_cap = 0;

	htab_init(&t, hash, item_match);
	for (size_t i = 0; i < n; i++) {
		assert_int_equal(htab_insert(&t, &items[i]), 0);
		assert_true(t.cap >= last_cap);
		last_cap = t.cap;
	}
	assert_int_equal(htab_count(&t), n);
	check_invariants(&t);
	/* Grown by doubling only as far as needed: at most twice the 70% bound. */
	assert_true(t.cap <= 4 * n);
	for (size_t i = 0; i < n; i++)
		assert_ptr_equal(find(&t, items[i].key), &items[i]);
	assert_null(find(&t, 5));
	for (size_t i = 0; i < n; i += 2)
		assert_true(htab_remove(&t, &items[i]));
	for (size_t i = 0; i < n; i++)
		assert_ptr_equal(find(&t, items[i].key), i % 2 ? &items[i] : NULL);
	assert_int_equal(htab_count(&t), n / 2);
	check_invariants(&t);
	htab_destroy(&t);
	free(items);
}

static void test_many(void **state)
{
	(void)state;
	run_many(item_hash, 100000);
	run_many(ident_hash, 20000);
}

static void test_colliding(void **state)
{
	(void)state;
	run_many(const_hash, 300);
}

static void test_tombstones(void **state)
{
	struct item *items = make_items(8), extra = { .key = 999 };
	struct htab t;

	(void)state;
	htab_init(&t, const_hash, item_match);
	for (int i = 0; i < 5; i++)
		assert_int_equal(htab_insert(&t, &items[i]), 0);
	assert_int_equal(t.cap, 8);
	for (int i = 0; i < 5; i++)
		assert_ptr_equal(t.slots[i], &items[i]);

	/* A removal inside the chain leaves a tombstone: the chain must stay walkable. */
	assert_true(htab_remove(&t, &items[1]));
	assert_int_equal(t.used, 5);
	assert_int_equal(t.count, 4);
	assert_non_null(t.slots[1]);
	assert_ptr_not_equal(t.slots[1], &items[1]);
	for (int i = 2; i < 5; i++)
		assert_ptr_equal(find(&t, items[i].key), &items[i]);

	/* The next insert takes the tombstone, at no cost in load and without a rehash. */
	assert_int_equal(htab_insert(&t, &extra), 0);
	assert_ptr_equal(t.slots[1], &extra);
	assert_int_equal(t.used, 5);
	assert_int_equal(t.cap, 8);
	assert_ptr_equal(find(&t, 999), &extra);

	/* Removing the end of the chain empties it and the tombstones just before it. */
	assert_true(htab_remove(&t, &items[2]));
	assert_true(htab_remove(&t, &items[3]));
	assert_int_equal(t.used, 5);
	assert_true(htab_remove(&t, &items[4]));
	assert_int_equal(t.used, 2);
	assert_null(t.slots[2]);
	assert_null(t.slots[3]);
	assert_null(t.slots[4]);
	assert_ptr_equal(find(&t, items[0].key), &items[0]);
	assert_ptr_equal(find(&t, 999), &extra);
	check_invariants(&t);
	htab_destroy(&t);
	free(items);
}

/* Insert/remove churn over few live items must not grow the table: rehashes purge tombstones
 * at the same size instead. */
static void test_churn_purges(void **state)
{
	struct item *items = make_items(20000);
	struct htab t;
	size_t max_cap = 0;

	(void)state;
	htab_init(&t, item_hash, item_match);
	for (size_t i = 0; i < 20000; i++) {
		assert_int_equal(htab_insert(&t, &items[i]), 0);
		if (i >= 3)
			assert_true(htab_remove(&t, &items[i - 3]));
		if (t.cap > max_cap)
			max_cap = t.cap;
		assert_true(t.used * 10 <= t.cap * 7);
	}
	assert_int_equal(htab_count(&t), 3);
	assert_int_equal(max_cap, 8);
	for (size_t i = 19997; i < 20000; i++)
		assert_ptr_equal(find(&t, items[i].key), &items[i]);
	check_invariants(&t);
	htab_destroy(&t);
	free(items);
}

static void test_iteration(void **state)
{
	const size_t n = 5000;
	struct item *items = make_items(n), *it;
	struct htab t;
	size_t visited = 0;

	(void)state;
	htab_init(&t, item_hash, item_match);
	for (size_t i = 0; i < n; i++)
		assert_int_equal(htab_insert(&t, &items[i]), 0);
	for (size_t i = 0; i < n; i += 3)
		assert_true(htab_remove(&t, &items[i]));
	for (size_t i = 0; (it = htab_next(&t, &i));) {
		it->seen++;
		visited++;
	}
	assert_int_equal(visited, htab_count(&t));
	for (size_t i = 0; i < n; i++)
		assert_int_equal(items[i].seen, i % 3 ? 1 : 0);
	htab_destroy(&t);
	free(items);
}

static uint64_t rng_state;

static uint64_t rnd(void)
{
	uint64_t z = (rng_state += 0x9e3779b97f4a7c15ULL);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

static void run_random(htab_item_hash_fn hash, size_t nkeys, int ops)
{
	struct item *items = calloc(nkeys, sizeof(*items)), *it;
	bool *present = calloc(nkeys, sizeof(*present));
	size_t count = 0;
	struct htab t;

	assert_non_null(items);
	assert_non_null(present);
	for (size_t i = 0; i < nkeys; i++)
		items[i].key = i;
	htab_init(&t, hash, item_match);
	for (int op = 0; op < ops; op++) {
		size_t k = rnd() % nkeys;

		switch (rnd() % 4) {
		case 0:
		case 1:
			if (present[k])
				break;
			assert_int_equal(htab_insert(&t, &items[k]), 0);
			present[k] = true;
			count++;
			break;
		case 2:
			assert_int_equal(htab_remove(&t, &items[k]), present[k]);
			if (present[k])
				count--;
			present[k] = false;
			break;
		default:
			assert_ptr_equal(find(&t, k), present[k] ? &items[k] : NULL);
		}
		assert_int_equal(htab_count(&t), count);
		if (op % 1000 == 0) {
			check_invariants(&t);
			for (size_t i = 0; (it = htab_next(&t, &i));)
				assert_true(present[it->key]);
			for (size_t i = 0; i < nkeys; i++)
				assert_ptr_equal(find(&t, i), present[i] ? &items[i] : NULL);
		}
	}
	htab_destroy(&t);
	free(present);
	free(items);
}

static void test_random(void **state)
{
	const char *env = getenv("NADB_TEST_SEED");
	uint64_t seed = env ? strtoull(env, NULL, 0) : 4242;

	(void)state;
	printf("# random htab ops: seed %llu\n", (unsigned long long)seed);
	rng_state = seed;
	run_random(item_hash, 2000, 200000);
	run_random(ident_hash, 3000, 100000);
	run_random(const_hash, 64, 20000);
}

static void test_hash_functions(void **state)
{
	static const char text[] = "nadbfs";
	unsigned buckets[256] = { 0 };

	(void)state;
	assert_true(htab_hash_bytes(text, 6, 0) == XXH3_64bits_withSeed(text, 6, 0));
	assert_true(htab_hash_bytes(text, 6, 0) == htab_hash_bytes("nadbfs!", 6, 0));
	assert_true(htab_hash_bytes(text, 6, 0) != htab_hash_bytes(text, 6, 1));
	assert_true(htab_hash_bytes(text, 6, 0) != htab_hash_bytes(text, 5, 0));
	assert_true(htab_hash_u64(1) != htab_hash_u64(2));

	/* Sequential ids spread evenly over the low bits a table indexes by. */
	for (uint64_t i = 0; i < 256 * 64; i++)
		buckets[htab_hash_u64(i) & 255]++;
	for (int i = 0; i < 256; i++)
		assert_true(buckets[i] > 32 && buckets[i] < 96);
}

/* After htab_reserve(t, n), n inserts (with removals between them) keep the slot array: a
 * transaction's commit counts on them needing no memory. */
/* The longest run of occupied slots. */
static size_t longest_run(const struct htab *t)
{
	size_t run = 0, best = 0;

	for (size_t i = 0; i < 2 * t->cap; i++) {
		run = t->slots[i % t->cap] ? run + 1 : 0;
		if (run > best)
			best = run;
	}
	return best < t->cap ? best : t->cap;
}

/*
 * A table filled in the slot order of another table with the same hash (a
 * snapshot written in the order of one id map, loaded into another): its
 * items crowd the low slots while it is smaller than the other. With its own
 * seed the clusters stay short; the longest run is also checked on the way,
 * before each doubling.
 */
static size_t refill_longest_run(uint64_t seed)
{
	const size_t n = 300000;
	struct item *items = calloc(n, sizeof(*items)), *it;
	struct htab a, b;
	size_t worst = 0, k = 0;

	/* Ids as the store numbers them. */
	assert_non_null(items);
	for (size_t i = 0; i < n; i++)
		items[i].key = i + 2;
	htab_init(&a, item_hash, item_match);
	htab_init(&b, item_hash, item_match);
	htab_set_seed(&b, seed);
	for (size_t i = 0; i < n; i++)
		assert_int_equal(htab_insert(&a, &items[i]), 0);
	for (size_t pos = 0; (it = htab_next(&a, &pos));) {
		/* Just before b would grow: as full as it gets. */
		if (b.cap && (b.used + 2) * 10 > b.cap * 7) {
			size_t r = longest_run(&b);

			worst = r > worst ? r : worst;
		}
		assert_int_equal(htab_insert(&b, it), 0);
		k++;
	}
	assert_int_equal(k, n);
	for (size_t i = 0; i < n; i += 997)
		assert_ptr_equal(find(&b, items[i].key), &items[i]);
	check_invariants(&b);
	htab_destroy(&a);
	htab_destroy(&b);
	free(items);
	return worst;
}

static void test_seeded_refill(void **state)
{
	size_t same = refill_longest_run(0), seeded = refill_longest_run(0x9e3779b97f4a7c15ull);

	(void)state;
	print_message("longest run: %zu slots with the other table's order, %zu with a seed\n",
		      same, seeded);
	assert_true(seeded < 1000);
	assert_true(same > 10 * seeded);
}

static void test_reserve(void **state)
{
	struct item *items = make_items(300);
	struct htab t;

	(void)state;
	htab_init(&t, item_hash, item_match);
	assert_int_equal(htab_reserve(&t, 0), 0);
	assert_null(t.slots);
	for (size_t base = 0; base < 300; base += 100) {
		void **slots;

		assert_int_equal(htab_reserve(&t, 100), 0);
		slots = t.slots;
		assert_non_null(slots);
		for (size_t i = base; i < base + 100; i++) {
			assert_int_equal(htab_insert(&t, &items[i]), 0);
			/* A removal and an insert again: a tombstone reused or a slot taken. */
			if (i % 7 == 0) {
				assert_true(htab_remove(&t, &items[i]));
				assert_int_equal(htab_insert(&t, &items[i]), 0);
			}
			assert_ptr_equal(t.slots, slots);
		}
		/* Room that is there already costs nothing. */
		assert_int_equal(htab_reserve(&t, 1), 0);
	}
	assert_int_equal(htab_count(&t), 300);
	for (size_t i = 0; i < 300; i++)
		assert_ptr_equal(find(&t, items[i].key), &items[i]);
	htab_destroy(&t);
	free(items);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_empty),
		cmocka_unit_test(test_basic),
		cmocka_unit_test(test_many),
		cmocka_unit_test(test_colliding),
		cmocka_unit_test(test_tombstones),
		cmocka_unit_test(test_churn_purges),
		cmocka_unit_test(test_iteration),
		cmocka_unit_test(test_random),
		cmocka_unit_test(test_hash_functions),
		cmocka_unit_test(test_reserve),
		cmocka_unit_test(test_seeded_refill),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
