/*
 * Values as the Redis backend stores them: the bytes as they are, or one
 * zstd frame with a content checksum when that is smaller (the same
 * encoding as the filesystem backend's value files, so the two backends'
 * records mean the same thing). The encoding is recorded in the metadata,
 * never guessed from the bytes.
 *
 * A value is flattened into one buffer to be sent: Redis takes a string in
 * pieces anyway (APPEND), but compression needs to know the result's size
 * before choosing it, and the store's values are bounded by max_value_size.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <zstd.h>

#include "store/backend_redis.h"
#include "store/zhint.h"
#include "store/zstd_ctx.h"
#include "util/log.h"

#define ZSTD_LEVEL 3

struct flat {
	uint8_t *p;
	size_t len;
};

static int flat_piece(const void *data, size_t len, void *arg)
{
	struct flat *f = arg;

	memcpy(f->p + f->len, data, len);
	f->len += len;
	return 0;
}

struct zsink {
	ZSTD_CCtx *cctx;
	ZSTD_outBuffer out;	/* dst sized to the input: no gain means stop */
	bool full;
};

static int zpiece_mode(struct zsink *z, const void *data, size_t len, ZSTD_EndDirective mode)
{
	ZSTD_inBuffer in = { data, len, 0 };
	size_t left;

	do {
		if (z->out.pos == z->out.size) {
			z->full = true;
			return 1;
		}
		left = ZSTD_compressStream2(z->cctx, &z->out, &in, mode);
		if (ZSTD_isError(left)) {
			log_msg(NLOG_ERROR, "store", "backend_redis: zstd compression failed: %s",
				ZSTD_getErrorName(left));
			return -EIO;
		}
	} while (mode == ZSTD_e_end ? left != 0 : in.pos < in.size);
	return 0;
}

static int zpiece(const void *data, size_t len, void *arg)
{
	return zpiece_mode(arg, data, len, ZSTD_e_continue);
}

/* 0 and *len when compressed into dst[0..cap) saved something; 1 when not. */
static int compress_into(struct kv_redis *r, const struct kv_value *v, uint8_t *dst, size_t cap,
			 size_t *len)
{
	struct zsink z = { .out = { dst, cap, 0 } };
	size_t rc;
	int ret;

	/* The parameters are set once per context: a flush compresses each of
	 * its values with it, and only the session is reset between them. */
	rc = 0;
	if (!r->cctx) {
		r->cctx = ZSTD_createCCtx();
		if (!r->cctx)
			return -ENOMEM;
		rc = ZSTD_CCtx_setParameter(r->cctx, ZSTD_c_compressionLevel, ZSTD_LEVEL);
		if (!ZSTD_isError(rc))
			rc = ZSTD_CCtx_setParameter(r->cctx, ZSTD_c_checksumFlag, 1);
		if (ZSTD_isError(rc)) {
			ZSTD_freeCCtx(r->cctx);
			r->cctx = NULL;
		}
	}
	z.cctx = r->cctx;
	if (!ZSTD_isError(rc))
		rc = ZSTD_CCtx_reset(z.cctx, ZSTD_reset_session_only);
	if (!ZSTD_isError(rc))
		rc = ZSTD_CCtx_setPledgedSrcSize(z.cctx, kv_value_size(v));
	if (ZSTD_isError(rc)) {
		log_msg(NLOG_ERROR, "store", "backend_redis: cannot set up zstd: %s",
			ZSTD_getErrorName(rc));
		return -EIO;
	}
	ret = kv_value_foreach(v, zpiece, &z);
	if (!ret)
		ret = zpiece_mode(&z, NULL, 0, ZSTD_e_end);
	if (ret < 0)
		return ret;
	/* Equal size is no gain either: the plain bytes are cheaper to read. */
	if (ret || z.full || z.out.pos >= cap)
		return 1;
	*len = z.out.pos;
	return 0;
}

/* Scratch output kept for compression attempts up to this size: most
 * attempts of small values fail (random or already compressed bytes), and
 * a fresh buffer per attempt costs page faults, not just a malloc. */
#define ZBUF_KEEP (256u * 1024u)

/* Where compression of size bytes writes: the scratch buffer, or NULL. */
static uint8_t *scratch(struct kv_redis *r, size_t size)
{
	if (size > ZBUF_KEEP)
		return NULL;
	if (r->zbuf_cap < size) {
		uint8_t *p = realloc(r->zbuf, ZBUF_KEEP);

		if (!p)
			return NULL;
		r->zbuf = p;
		r->zbuf_cap = ZBUF_KEEP;
	}
	return r->zbuf;
}

static bool worth_trying(const struct kv_value *v, uint64_t size)
{
	struct kv_zhint h;

	kv_zhint_init(&h, size);
	kv_value_foreach(v, kv_zhint_add, &h);
	return kv_zhint_try(&h);
}

int kv_redis_encode_value(struct kv_redis *r, const struct kv_value *v, struct kv_redis_blob *b)
{
	uint64_t size = kv_value_size(v);
	const void *chunk;
	size_t have;
	struct flat f;
	int ret;

	memset(b, 0, sizeof(*b));
	if (size > SIZE_MAX - 1)
		return -EFBIG;
	if (r->compression == KV_ENC_ZSTD && size >= r->compression_min_size && size &&
	    worth_trying(v, size)) {
		uint8_t *dst = scratch(r, (size_t)size);
		uint8_t *own = dst ? NULL : malloc((size_t)size);

		if (!dst && !own)
			return -ENOMEM;
		ret = compress_into(r, v, dst ? dst : own, (size_t)size, &f.len);
		if (ret == 0 && dst) {
			/* Saved something: only now is the result copied out. */
			own = malloc(f.len ? f.len : 1);
			if (!own)
				return -ENOMEM;
			memcpy(own, dst, f.len);
		}
		if (ret == 0) {
			b->data = b->buf = own;
			b->len = f.len;
			b->encoding = KV_ENC_ZSTD;
			return 0;
		}
		free(own);
		if (ret < 0)
			return ret;
	}
	b->encoding = KV_ENC_NONE;
	if (kv_value_nchunks(v) == 1 && kv_value_chunk(v, 0, &chunk, &have) == size &&
	    chunk && have == size) {
		b->data = chunk;
		b->len = (size_t)size;
		return 0;
	}
	f.p = malloc(size ? (size_t)size : 1);
	if (!f.p)
		return -ENOMEM;
	f.len = 0;
	kv_value_foreach(v, flat_piece, &f);
	b->data = b->buf = f.p;
	b->len = f.len;
	return 0;
}

void kv_redis_blob_free(struct kv_redis_blob *b)
{
	free(b->buf);
	memset(b, 0, sizeof(*b));
}

int kv_redis_decode_value(const struct kv_meta *m, const uint8_t *data, size_t len,
			  struct kv_value **out)
{
	ZSTD_DCtx *dctx;
	ZSTD_inBuffer in = { data, len, 0 };
	uint8_t *buf;
	size_t bufsize = ZSTD_DStreamOutSize(), rc = 1;
	uint64_t got = 0;
	struct kv_value *v;
	int ret = 0;

	if (m->encoding == KV_ENC_NONE) {
		if (len != m->size)
			return -EIO;
		v = kv_value_from_buf(data, len);
		if (!v)
			return -ENOMEM;
		*out = v;
		return 0;
	}
	if (m->encoding != KV_ENC_ZSTD)
		return -EIO;
	v = kv_value_new();
	dctx = kv_zstd_dctx();
	buf = malloc(bufsize);
	if (!v || !dctx || !buf) {
		ret = -ENOMEM;
		goto out_free;
	}
	while (in.pos < in.size || rc != 0) {
		ZSTD_outBuffer o = { buf, bufsize, 0 };
		size_t before = in.pos;

		rc = ZSTD_decompressStream(dctx, &o, &in);
		if (ZSTD_isError(rc) || o.pos > m->size - got) {
			ret = -EIO;
			break;
		}
		if (o.pos) {
			ret = kv_value_write(v, buf, o.pos, got);
			if (ret)
				break;
			got += o.pos;
		}
		/* A frame cut short: no input left and no progress. */
		if (rc != 0 && !o.pos && in.pos == before && in.pos == in.size) {
			ret = -EIO;
			break;
		}
		/* Bytes after the frame's end are not ours. */
		if (rc == 0 && in.pos < in.size) {
			ret = -EIO;
			break;
		}
	}
	if (!ret && got != m->size)
		ret = -EIO;
out_free:
	free(buf);
	kv_zstd_dctx_done(dctx);
	if (ret) {
		kv_value_free(v);
		return ret;
	}
	*out = v;
	return 0;
}
