/*
 * Hand-written because the packaged decoders at hand are lenient (OpenSSL's
 * EVP_DecodeBlock skips whitespace and keeps padding bytes, GLib's skips
 * invalid characters), and a value that decodes to different bytes than the
 * user meant must be an error here.
 */
#include "mount/base64.h"

#include <errno.h>

static int sextet(char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == '/')
		return 63;
	return -1;
}

ssize_t b64_decode(const char *in, size_t len, unsigned char *out)
{
	size_t i, o = 0;

	if (len % 4)
		return -EINVAL;
	for (i = 0; i < len; i += 4) {
		unsigned long acc = 0;
		int pad = 0, j;

		/* '=' only closes the last group; anywhere else sextet() refuses it. */
		if (i + 4 == len && in[i + 3] == '=')
			pad = in[i + 2] == '=' ? 2 : 1;
		for (j = 0; j < 4 - pad; j++) {
			int v = sextet(in[i + j]);

			if (v < 0)
				return -EINVAL;
			acc = acc << 6 | (unsigned long)v;
		}
		acc <<= 6 * pad;
		/* The bits the padding leaves over must be zero: otherwise two
		 * encodings would decode to the same bytes. */
		if (acc & ((1UL << (8 * pad)) - 1))
			return -EINVAL;
		for (j = 0; j < 3 - pad; j++)
			out[o++] = (unsigned char)(acc >> (16 - 8 * j));
	}
	return (ssize_t)o;
}
