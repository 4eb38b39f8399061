/*
 * A value: a byte string held as an array of fixed-size, reference-counted
 * chunks, so that taking a snapshot for the flusher costs O(chunks) and a
 * later write copies only the chunks it touches (copy on write). A missing
 * chunk reads as zeros (a hole), so truncating up is free.
 *
 * Locking: a struct kv_value is not thread-safe; its owner serializes access
 * (the store lock). Chunk reference counts are atomic, so a snapshot may be
 * read and freed by another thread without that lock while the original keeps
 * being written.
 * Return convention: 0 (or a byte count) on success, a negative errno.
 */
#ifndef NADB_STORE_VALUE_H
#define NADB_STORE_VALUE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define KV_CHUNK_SIZE (64u * 1024u)

struct kv_value;

/* An empty value, or NULL on ENOMEM. */
struct kv_value *kv_value_new(void);
/* A value holding a copy of buf[0..len), or NULL on ENOMEM. */
struct kv_value *kv_value_from_buf(const void *buf, size_t len);
/* NULL is fine. */
void kv_value_free(struct kv_value *v);
/* An independent value with the same bytes, sharing chunks; NULL on ENOMEM. */
struct kv_value *kv_value_snapshot(const struct kv_value *v);

uint64_t kv_value_size(const struct kv_value *v);
/* Bytes of chunk memory this value references (shared chunks included). */
uint64_t kv_value_mem(const struct kv_value *v);

/* Copies up to len bytes from off; returns the count (0 at or past the end). */
ssize_t kv_value_read(const struct kv_value *v, void *buf, size_t len, uint64_t off);
/* Writes len bytes at off, extending with zeros as needed. 0 or -ENOMEM. */
int kv_value_write(struct kv_value *v, const void *buf, size_t len, uint64_t off);
/* Sets the size, dropping bytes past it or adding zeros. 0 or -ENOMEM. */
int kv_value_truncate(struct kv_value *v, uint64_t size);

/*
 * Calls fn for each consecutive piece of the value in order (holes are
 * passed as zero-filled memory). Stops at and returns the first non-zero
 * result of fn; 0 when every piece was visited.
 */
typedef int (*kv_value_piece_fn)(const void *data, size_t len, void *arg);
int kv_value_foreach(const struct kv_value *v, kv_value_piece_fn fn, void *arg);

/*
 * Chunk-level access, for a backend that stores a value chunk by chunk and
 * rewrites only what changed since its last commit. A chunk's tag says where
 * a backend already stored exactly these bytes (its own naming: the key's
 * id, the chunk's index, a version); a chunk starts untagged and loses its
 * tag whenever its bytes change in place, and a copied chunk is untagged, so
 * a tag that still matches what the backend's current record names is proof
 * that the stored chunk holds these bytes.
 *
 * The tag of a shared chunk may be set through any value holding it (the
 * flusher sets it through its snapshot while the owner keeps the value):
 * only the owner changes bytes in place, and only after every other holder
 * let go, so nobody reads a tag while it is set.
 */
struct kv_chunk_tag {
	uint64_t id, ver;	/* ver 0: not stored anywhere */
	uint32_t idx;
};

size_t kv_value_nchunks(const struct kv_value *v);
/* Chunk i (< nchunks): its bytes (*data NULL for a hole) of which *have are
 * held; the chunk's length in the value is returned, bytes past *have are
 * zeros. */
size_t kv_value_chunk(const struct kv_value *v, size_t i, const void **data, size_t *have);
/* Chunk i's tag; false (and *t zeroed) for a hole or an untagged chunk. */
bool kv_value_chunk_tag(const struct kv_value *v, size_t i, struct kv_chunk_tag *t);
/* Tags chunk i if it is not a hole. */
void kv_value_set_chunk_tag(const struct kv_value *v, size_t i, const struct kv_chunk_tag *t);

#endif
