/*
 * Per-operation counts and latencies: each FUSE request is timed from the
 * moment its handler starts to the moment it returns (a write that waits for
 * buffer space is counted when it is handed to the deferred-write thread).
 *
 * Latencies go into a log-linear histogram per operation: four buckets per
 * power of two of microseconds, so a percentile is known within 19 % and
 * recording one is two relaxed atomic increments, without a lock. p50 and p99
 * are read from the histogram when stats or metrics are opened.
 *
 * Operations slower than FS_SLOW_OP_MS are logged at warning level (the
 * logger rate-limits repeats); at debug level every operation is logged with
 * its duration.
 */
#include "fs/fs_int.h"

#include <stdatomic.h>
#include <string.h>
#include <time.h>

#include "util/log.h"

#define FS_SLOW_OP_MS 1000

static const char *const op_names[FS_OP_COUNT] = {
#define FS_OP_NAME(id, name) [id] = name,
	FS_OPS(FS_OP_NAME)
#undef FS_OP_NAME
};

const char *fs_op_name(enum fs_op op)
{
	return op_names[op];
}

int64_t fs_op_start(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Bucket of a latency in µs: 4 * floor(log2) plus the next two bits. */
static unsigned bucket_of(uint64_t us)
{
	unsigned lg, b;

	if (us < 4)
		return (unsigned)us;
	lg = 63u - (unsigned)__builtin_clzll(us);
	b = 4 * (lg - 1) + (unsigned)((us >> (lg - 2)) & 3);
	return b < FS_LAT_BUCKETS ? b : FS_LAT_BUCKETS - 1;
}

/* The middle of a bucket, in µs (the inverse of bucket_of). */
static double bucket_mid(unsigned b)
{
	unsigned lg;
	double lo, width;

	if (b < 4)
		return b + 0.5;
	lg = b / 4 + 1;
	width = (double)(1ull << (lg - 2));
	lo = (double)(1ull << lg) + (b % 4) * width;
	return lo + width / 2;
}

void fs_op_done(struct fs *fs, enum fs_op op, int64_t start_ns)
{
	struct fs_opstat *s = &fs->opstats[op];
	int64_t ns = fs_op_start() - start_ns;
	uint64_t us = ns > 0 ? (uint64_t)ns / 1000 : 0;

	atomic_fetch_add_explicit(&s->count, 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&s->buckets[bucket_of(us)], 1, memory_order_relaxed);
	if (us >= FS_SLOW_OP_MS * 1000)
		NLOG(NLOG_WARN, "fs", "slow operation", LF_STR("op", op_names[op]),
		     LF_DBL("duration_ms", (double)ns / 1e6));
	else if (log_get_level() == NLOG_DEBUG)
		NLOG(NLOG_DEBUG, "fs", "operation", LF_STR("op", op_names[op]),
		     LF_DBL("duration_ms", (double)ns / 1e6));
}

void fs_op_summary(struct fs *fs, enum fs_op op, struct fs_op_summary *out)
{
	struct fs_opstat *s = &fs->opstats[op];
	uint64_t counts[FS_LAT_BUCKETS], total = 0, seen = 0;
	bool have50 = false;

	memset(out, 0, sizeof(*out));
	for (unsigned b = 0; b < FS_LAT_BUCKETS; b++) {
		counts[b] = atomic_load_explicit(&s->buckets[b], memory_order_relaxed);
		total += counts[b];
	}
	out->count = total;
	for (unsigned b = 0; b < FS_LAT_BUCKETS && total; b++) {
		seen += counts[b];
		if (!have50 && seen * 2 >= total) {
			out->p50_ms = bucket_mid(b) / 1000;
			have50 = true;
		}
		if (seen * 100 >= total * 99) {
			out->p99_ms = bucket_mid(b) / 1000;
			break;
		}
	}
}
