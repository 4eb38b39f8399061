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

#endif
