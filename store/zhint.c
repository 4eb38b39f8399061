/*
 * The sample for kv_zhint_try (see zhint.h).
 */
#include <math.h>
#include <pthread.h>
#include <string.h>

#include "store/zhint.h"

#define WINDOW 16u
/* Below this many sampled bytes the estimate is too low for random bytes
 * to pass the threshold (512 random bytes: about 7.64 bits). */
#define MIN_SEEN 512u
#define RANDOM_BITS 7.5

/* c * log2(c) for every count a sample can reach: a log2 per distinct
 * byte value was a third of the daemon's time in a flush of 1 KiB values
 * (perf), more than the counting. */
#define XLOGX_MAX (ZHINT_SAMPLE + 4 * WINDOW)
static double xlogx[XLOGX_MAX + 1];
static pthread_once_t xlogx_once = PTHREAD_ONCE_INIT;

static void xlogx_init(void)
{
	for (uint32_t c = 1; c <= XLOGX_MAX; c++)
		xlogx[c] = c * log2(c);
}

void kv_zhint_init(struct kv_zhint *h, uint64_t size)
{
	memset(h, 0, sizeof(*h));
	h->total = size;
}

/* The stride between windows: every byte of a small value. Odd, so that
 * the windows do not all fall at the same offset of fixed-size records
 * (value and chunk sizes are mostly powers of two). */
static uint64_t stride(const struct kv_zhint *h)
{
	if (h->total <= ZHINT_SAMPLE)
		return WINDOW;
	return h->total / (ZHINT_SAMPLE / WINDOW) | 1;
}

/* Counts len bytes of p (NULL: zeros). */
static void count(struct kv_zhint *h, const uint8_t *p, size_t len)
{
	if (p)
		for (size_t i = 0; i < len; i++)
			h->count[p[i]]++;
	else
		h->count[0] += (uint32_t)len;
	h->seen += len;
}

int kv_zhint_add(const void *data, size_t len, void *arg)
{
	struct kv_zhint *h = arg;
	const uint8_t *p = data;
	uint64_t step = stride(h);

	if (step == WINDOW) {
		/* A small value: every byte. */
		count(h, p, len);
		h->pos += len;
		return 0;
	}
	while (len) {
		uint64_t in = h->pos % step;
		size_t skip;

		if (in < WINDOW) {
			skip = WINDOW - in < len ? (size_t)(WINDOW - in) : len;
			count(h, p, skip);
		} else {
			skip = step - in < len ? (size_t)(step - in) : len;
		}
		h->pos += skip;
		if (p)
			p += skip;
		len -= skip;
	}
	return 0;
}

bool kv_zhint_try(const struct kv_zhint *h)
{
	double sum = 0;

	if (h->seen < MIN_SEEN)
		return true;
	pthread_once(&xlogx_once, xlogx_init);
	for (int i = 0; i < 256; i++)
		sum += h->count[i] <= XLOGX_MAX ? xlogx[h->count[i]] :
						  h->count[i] * log2(h->count[i]);
	/* H = log2(n) - (1/n) * sum(c * log2(c)) */
	return log2((double)h->seen) - sum / (double)h->seen <= RANDOM_BITS;
}
