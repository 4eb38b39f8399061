/*
 * Strict base64 decoding for nadbctl tx apply's "value_b64" (RFC 4648
 * section 4: standard alphabet, padded). Strict so that a mangled value
 * (a line break, a URL-safe alphabet, a truncated copy) is refused rather
 * than silently decoded into different bytes.
 *
 * Return convention: the decoded length, or -EINVAL. Thread-safe.
 */
#ifndef NADB_MOUNT_BASE64_H
#define NADB_MOUNT_BASE64_H

#include <stddef.h>
#include <sys/types.h>

/* Bytes that decoding len characters can produce at most. */
static inline size_t b64_max_decoded(size_t len)
{
	return len / 4 * 3;
}

/* Decodes in[0..len) into out (room for b64_max_decoded(len) bytes). */
ssize_t b64_decode(const char *in, size_t len, unsigned char *out);

#endif
