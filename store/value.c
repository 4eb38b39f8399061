/*
 * Values as arrays of reference-counted chunks (see value.h).
 *
 * Invariants:
 * - nchunks == ceil(size / KV_CHUNK_SIZE); slots in [nchunks, cap_chunks) are NULL.
 * - A NULL slot is a hole; a chunk's bytes past its cap read as zeros, so any chunk may be
 *   allocated short of KV_CHUNK_SIZE, not only the last one.
 * - Every allocated byte at or past the value's size is zero, so growing the size (truncate up,
 *   or a write past the end) needs no clearing.
 * - A chunk whose reference count is 1 belongs to this value alone and may be changed in place
 *   (even reallocated); a shared one is copied first. Only the value's owner can take a new
 *   reference to a chunk it holds alone (by snapshotting under its lock), so once it reads a
 *   count of 1 no other thread can reach that chunk.
 */
#include <errno.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "store/value.h"

struct kv_chunk {
	atomic_uint ref;
	uint32_t cap;			/* bytes allocated in data, <= KV_CHUNK_SIZE */
	struct kv_chunk_tag tag;	/* where a backend stored these bytes (value.h) */
	unsigned char data[];
};

struct kv_value {
	uint64_t size;
	size_t nchunks;
	size_t cap_chunks;
	struct kv_chunk **chunks;	/* nchunks used, NULL = hole */
};

/* Holes are handed out as this; large enough for any one piece. */
static const unsigned char zero_chunk[KV_CHUNK_SIZE];

#define SMALL_CAP 64u
/* Sizes and offsets reach us as off_t; a value larger than that could not be read back. */
#define VALUE_MAX_SIZE ((uint64_t)INT64_MAX)

static size_t chunks_for(uint64_t size)
{
	return size / KV_CHUNK_SIZE + (size % KV_CHUNK_SIZE != 0);
}

/*
 * An allocation size for need bytes: at most a quarter more than asked for (so a small value
 * stays small), in few distinct sizes (so that malloc's size classes fit).
 */
static uint32_t round_cap(uint32_t need)
{
	uint32_t p = SMALL_CAP, step;

	if (need <= SMALL_CAP)
		return SMALL_CAP;
	while (p * 2 <= need)
		p *= 2;
	step = p / 4;
	need = (need + step - 1) / step * step;
	return need < KV_CHUNK_SIZE ? need : KV_CHUNK_SIZE;
}

/* The cap for a chunk that already holds cap bytes and must hold need: grow by at least half so
 * that a run of small appends costs amortized O(1) copying. */
static uint32_t grow_cap(uint32_t cap, uint32_t need)
{
	uint32_t want = cap + cap / 2;

	if (want < need)
		want = need;
	return round_cap(want);
}

static struct kv_chunk *chunk_alloc(uint32_t cap)
{
	struct kv_chunk *c = malloc(sizeof(*c) + cap);

	if (!c)
		return NULL;
	atomic_init(&c->ref, 1);
	c->cap = cap;
	c->tag = (struct kv_chunk_tag){ 0 };
	return c;
}

static void chunk_put(struct kv_chunk *c)
{
	/* The release half orders this holder's reads before the last holder's free or the
	 * original's in-place write; the acquire half orders everybody's reads before our free. */
	if (c && atomic_fetch_sub_explicit(&c->ref, 1, memory_order_acq_rel) == 1)
		free(c);
}

static bool chunk_unique(struct kv_chunk *c)
{
	/* Acquire pairs with the release in chunk_put(): a snapshot holder that has just dropped
	 * the chunk has finished reading it before we write. */
	return atomic_load_explicit(&c->ref, memory_order_acquire) == 1;
}

/*
 * A private chunk of cap bytes holding old's bytes (old may be NULL, a hole) everywhere except
 * [a, b), which the caller is about to overwrite, and zeros past old's cap.
 */
static struct kv_chunk *chunk_clone(const struct kv_chunk *old, uint32_t cap, uint32_t a,
				    uint32_t b)
{
	struct kv_chunk *c = chunk_alloc(cap);
	uint32_t have = old ? old->cap : 0, n;

	if (!c)
		return NULL;
	/* Head [0, a) */
	n = a < have ? a : have;
	memcpy(c->data, old ? old->data : zero_chunk, n);
	memset(c->data + n, 0, a - n);
	/* Tail [b, cap) */
	if (b < cap) {
		n = b < have ? (have < cap ? have : cap) - b : 0;
		if (n)
			memcpy(c->data + b, old->data + b, n);
		memset(c->data + b + n, 0, cap - b - n);
	}
	return c;
}

/* Makes room for want chunk slots; the new ones are NULL. */
static int reserve(struct kv_value *v, size_t want)
{
	struct kv_chunk **chunks;
	size_t cap;

	if (want <= v->cap_chunks)
		return 0;
	if (want > SIZE_MAX / sizeof(*chunks) / 2)
		return -EFBIG;
	cap = v->cap_chunks ? v->cap_chunks * 2 : 4;
	if (cap < want)
		cap = want;
	chunks = realloc(v->chunks, cap * sizeof(*chunks));
	if (!chunks)
		return -ENOMEM;
	memset(chunks + v->cap_chunks, 0, (cap - v->cap_chunks) * sizeof(*chunks));
	v->chunks = chunks;
	v->cap_chunks = cap;
	return 0;
}

struct kv_value *kv_value_new(void)
{
	return calloc(1, sizeof(struct kv_value));
}

struct kv_value *kv_value_from_buf(const void *buf, size_t len)
{
	struct kv_value *v = kv_value_new();

	if (v && kv_value_write(v, buf, len, 0)) {
		kv_value_free(v);
		return NULL;
	}
	return v;
}

void kv_value_free(struct kv_value *v)
{
	if (!v)
		return;
	for (size_t i = 0; i < v->nchunks; i++)
		chunk_put(v->chunks[i]);
	free(v->chunks);
	free(v);
}

struct kv_value *kv_value_snapshot(const struct kv_value *v)
{
	struct kv_value *s = kv_value_new();

	if (!s)
		return NULL;
	if (v->nchunks) {
		s->chunks = malloc(v->nchunks * sizeof(*s->chunks));
		if (!s->chunks) {
			free(s);
			return NULL;
		}
		for (size_t i = 0; i < v->nchunks; i++) {
			struct kv_chunk *c = v->chunks[i];

			/* Relaxed is enough: the new reference is published to other threads
			 * only through whatever hands them the snapshot. */
			if (c)
				atomic_fetch_add_explicit(&c->ref, 1, memory_order_relaxed);
			s->chunks[i] = c;
		}
	}
	s->size = v->size;
	s->nchunks = s->cap_chunks = v->nchunks;
	return s;
}

uint64_t kv_value_size(const struct kv_value *v)
{
	return v->size;
}

uint64_t kv_value_mem(const struct kv_value *v)
{
	uint64_t mem = 0;

	for (size_t i = 0; i < v->nchunks; i++)
		if (v->chunks[i])
			mem += sizeof(struct kv_chunk) + v->chunks[i]->cap;
	return mem;
}

ssize_t kv_value_read(const struct kv_value *v, void *buf, size_t len, uint64_t off)
{
	unsigned char *out = buf;
	size_t done = 0;

	if (off >= v->size)
		return 0;
	if (len > v->size - off)
		len = v->size - off;
	if (len > SSIZE_MAX)
		len = SSIZE_MAX;
	while (done < len) {
		const struct kv_chunk *c = v->chunks[off / KV_CHUNK_SIZE];
		uint32_t pos = off % KV_CHUNK_SIZE;
		size_t n = KV_CHUNK_SIZE - pos, have = 0;

		if (n > len - done)
			n = len - done;
		if (c && pos < c->cap)
			have = c->cap - pos < n ? c->cap - pos : n;
		if (have)
			memcpy(out + done, c->data + pos, have);
		memset(out + done + have, 0, n - have);
		done += n;
		off += n;
	}
	return done;
}

/*
 * Writes in two passes so that running out of memory leaves the value as it was: the first
 * allocates everything (private copies of shared chunks, chunks for holes, in-place growth of
 * private ones, none of which changes the bytes the value holds), the second cannot fail.
 */
int kv_value_write(struct kv_value *v, const void *buf, size_t len, uint64_t off)
{
	struct kv_chunk *stack[8], **fresh = stack;
	const unsigned char *in = buf;
	size_t first, last, n, i;
	uint64_t end;
	int ret;

	if (!len)
		return 0;
	if (off > VALUE_MAX_SIZE || len > VALUE_MAX_SIZE - off)
		return -EFBIG;
	end = off + len;
	ret = reserve(v, chunks_for(end));
	if (ret)
		return ret;
	first = off / KV_CHUNK_SIZE;
	last = (end - 1) / KV_CHUNK_SIZE;
	n = last - first + 1;
	if (n > sizeof(stack) / sizeof(stack[0])) {
		fresh = malloc(n * sizeof(*fresh));
		if (!fresh)
			return -ENOMEM;
	}

	for (i = 0; i < n; i++) {
		struct kv_chunk *c = v->chunks[first + i];
		uint32_t a = i == 0 ? off % KV_CHUNK_SIZE : 0;
		uint32_t b = first + i == last ? (end - 1) % KV_CHUNK_SIZE + 1 : KV_CHUNK_SIZE;

		fresh[i] = NULL;
		if (c && chunk_unique(c)) {
			uint32_t cap = c->cap;
			struct kv_chunk *g;

			if (b <= cap)
				continue;
			cap = grow_cap(cap, b);
			g = realloc(c, sizeof(*c) + cap);
			if (!g)
				goto out_free_fresh;
			memset(g->data + g->cap, 0, cap - g->cap);
			g->cap = cap;
			v->chunks[first + i] = g;
			continue;
		}
		if (!c)
			fresh[i] = chunk_clone(NULL, round_cap(b), a, b);
		else
			fresh[i] = chunk_clone(c, b > c->cap ? round_cap(b) : c->cap, a, b);
		if (!fresh[i])
			goto out_free_fresh;
	}

	for (i = 0; i < n; i++) {
		uint32_t a = i == 0 ? off % KV_CHUNK_SIZE : 0;
		uint32_t b = first + i == last ? (end - 1) % KV_CHUNK_SIZE + 1 : KV_CHUNK_SIZE;

		if (fresh[i]) {
			chunk_put(v->chunks[first + i]);
			v->chunks[first + i] = fresh[i];
		}
		memcpy(v->chunks[first + i]->data + a, in, b - a);
		v->chunks[first + i]->tag.ver = 0;
		in += b - a;
	}
	if (end > v->size) {
		v->size = end;
		v->nchunks = last + 1;
	}
	if (fresh != stack)
		free(fresh);
	return 0;

out_free_fresh:
	while (i--)
		free(fresh[i]);
	if (fresh != stack)
		free(fresh);
	return -ENOMEM;
}

/* Clears the bytes of the last kept chunk past the new size, so that a later growth reads them
 * as zeros. 0 or -ENOMEM with nothing changed. */
static int clear_tail(struct kv_value *v, size_t idx, uint32_t tail)
{
	struct kv_chunk *c = v->chunks[idx], *t;

	if (!c || tail >= c->cap)
		return 0;
	if (!chunk_unique(c)) {
		uint32_t cap = round_cap(tail);

		/* Keep [0, tail), treat the rest as overwritten, then clear it. */
		t = chunk_clone(c, cap, tail, cap);
		if (!t)
			return -ENOMEM;
		memset(t->data + tail, 0, cap - tail);
		chunk_put(c);
		v->chunks[idx] = t;
		return 0;
	}
	/* Give back memory when most of the chunk goes; a failed shrink only costs memory. */
	if (round_cap(tail) <= c->cap / 2) {
		uint32_t cap = round_cap(tail);

		t = realloc(c, sizeof(*c) + cap);
		if (t) {
			t->cap = cap;
			v->chunks[idx] = c = t;
		}
	}
	memset(c->data + tail, 0, c->cap - tail);
	c->tag.ver = 0;
	return 0;
}

int kv_value_truncate(struct kv_value *v, uint64_t size)
{
	size_t keep;
	int ret;

	if (size > VALUE_MAX_SIZE)
		return -EFBIG;
	keep = chunks_for(size);

	if (size >= v->size) {
		ret = reserve(v, keep);
		if (ret)
			return ret;
		v->size = size;
		v->nchunks = keep;
		return 0;
	}
	if (size % KV_CHUNK_SIZE) {
		ret = clear_tail(v, keep - 1, size % KV_CHUNK_SIZE);
		if (ret)
			return ret;
	}
	for (size_t i = keep; i < v->nchunks; i++) {
		chunk_put(v->chunks[i]);
		v->chunks[i] = NULL;
	}
	v->size = size;
	v->nchunks = keep;
	/* A value truncated to (nearly) nothing should not keep a large slot array. */
	if (!keep) {
		free(v->chunks);
		v->chunks = NULL;
		v->cap_chunks = 0;
	} else if (keep < v->cap_chunks / 4) {
		struct kv_chunk **chunks = realloc(v->chunks, keep * sizeof(*chunks));

		if (chunks) {
			v->chunks = chunks;
			v->cap_chunks = keep;
		}
	}
	return 0;
}

int kv_value_foreach(const struct kv_value *v, kv_value_piece_fn fn, void *arg)
{
	for (size_t i = 0; i < v->nchunks; i++) {
		const struct kv_chunk *c = v->chunks[i];
		uint64_t left = v->size - (uint64_t)i * KV_CHUNK_SIZE;
		size_t n = left < KV_CHUNK_SIZE ? left : KV_CHUNK_SIZE, have = 0;
		int ret;

		if (c) {
			have = c->cap < n ? c->cap : n;
			ret = fn(c->data, have, arg);
			if (ret)
				return ret;
		}
		if (n > have) {
			ret = fn(zero_chunk, n - have, arg);
			if (ret)
				return ret;
		}
	}
	return 0;
}

size_t kv_value_nchunks(const struct kv_value *v)
{
	return v->nchunks;
}

size_t kv_value_chunk(const struct kv_value *v, size_t i, const void **data, size_t *have)
{
	const struct kv_chunk *c = v->chunks[i];
	uint64_t left = v->size - (uint64_t)i * KV_CHUNK_SIZE;
	size_t n = left < KV_CHUNK_SIZE ? left : KV_CHUNK_SIZE;

	*data = c ? c->data : NULL;
	*have = c ? (c->cap < n ? c->cap : n) : 0;
	return n;
}

bool kv_value_chunk_tag(const struct kv_value *v, size_t i, struct kv_chunk_tag *t)
{
	const struct kv_chunk *c = v->chunks[i];

	*t = c ? c->tag : (struct kv_chunk_tag){ 0 };
	return t->ver != 0;
}

void kv_value_set_chunk_tag(const struct kv_value *v, size_t i, const struct kv_chunk_tag *t)
{
	if (v->chunks[i])
		v->chunks[i]->tag = *t;
}
