/*
 * Whether a value is worth handing to zstd: the byte distribution of a
 * sample (the whole value up to ZHINT_SAMPLE bytes, else evenly spaced
 * 16-byte windows adding up to about that) says when the bytes look random
 * (encrypted, already compressed, random test data). zstd cannot shrink
 * those, and trying costs more than everything else a flush does with a
 * small value (perf: half of the daemon's time in a flush of 1 KiB random
 * values). The same early abort as btrfs's compression heuristic, reduced to
 * the entropy test: a sample whose Shannon entropy passes 7.5 bits per byte
 * is not tried. What it misses (random bytes repeated, which only matches
 * could shrink) is stored as it is, which is never wrong.
 *
 * Locking: none; a hint is the caller's.
 */
#ifndef NADB_STORE_ZHINT_H
#define NADB_STORE_ZHINT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define ZHINT_SAMPLE 8192u

struct kv_zhint {
	uint32_t count[256];
	size_t seen;		/* bytes sampled */
	uint64_t total;		/* size of what is sampled */
	uint64_t pos;		/* offset of the next byte passed in */
};

/* Starts a hint for size bytes, to be passed in order. */
void kv_zhint_init(struct kv_zhint *h, uint64_t size);
/* The next len bytes (data NULL: zeros). Fits kv_value_piece_fn's shape. */
int kv_zhint_add(const void *data, size_t len, void *h);
/* False when the sample looks random: compression would not pay. */
bool kv_zhint_try(const struct kv_zhint *h);

#endif
