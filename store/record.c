/*
 * Records: the owned fields of struct kv_meta and their binary encoding.
 *
 * Wire format, version 1, little-endian, self-delimiting:
 *
 *	u8  version (1)
 *	u64 id, parent
 *	u32 mode, uid, gid
 *	i64 atime_ns, mtime_ns, ctime_ns, btime_ns, expires_ms
 *	u64 size, vver, stored_size
 *	u8  encoding
 *	u8  name length (0..255), name bytes
 *	u16 tag count (0..1024), per tag: u8 length (1..255), bytes
 *	u32 xattrs length (0..KV_XATTRS_MAX), bytes
 *
 * The encoder checks the same rules as the decoder: a record that could not
 * be read back must never reach a journal, or the whole store would stop
 * loading because of it.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "store/backend.h"

#define REC_VERSION 1u
#define REC_TAGS_MAX 65535u
#define REC_TAG_MAX 255u
/* Bytes before the name: version, the numeric fields, encoding. */
#define REC_FIXED (1 + 2 * 8 + 3 * 4 + 5 * 8 + 3 * 8 + 1)

void kv_meta_clear(struct kv_meta *m)
{
	if (!m)
		return;
	free(m->name);
	for (uint32_t i = 0; i < m->ntags; i++)
		free(m->tags[i]);
	free(m->tags);
	free(m->xattrs);
	memset(m, 0, sizeof(*m));
}

int kv_meta_copy(struct kv_meta *dst, const struct kv_meta *src)
{
	struct kv_meta m = *src;

	m.name = NULL;
	m.tags = NULL;
	m.ntags = 0;
	m.xattrs = NULL;
	m.xattrs_len = 0;

	if (src->name) {
		m.name = strdup(src->name);
		if (!m.name)
			goto out_nomem;
	}
	if (src->ntags) {
		m.tags = calloc(src->ntags, sizeof(*m.tags));
		if (!m.tags)
			goto out_nomem;
		for (uint32_t i = 0; i < src->ntags; i++) {
			m.tags[i] = strdup(src->tags[i]);
			if (!m.tags[i])
				goto out_nomem;
			/* Counted as it goes so that clearing frees exactly these. */
			m.ntags = i + 1;
		}
	}
	if (src->xattrs_len) {
		m.xattrs = malloc(src->xattrs_len);
		if (!m.xattrs)
			goto out_nomem;
		memcpy(m.xattrs, src->xattrs, src->xattrs_len);
		m.xattrs_len = src->xattrs_len;
	}
	*dst = m;
	return 0;

out_nomem:
	kv_meta_clear(&m);
	return -ENOMEM;
}

static bool name_ok(const char *name, size_t len, uint64_t id)
{
	if (len > KV_NAME_MAX)
		return false;
	if (len == 0)
		return id == KV_ROOT_ID;
	if (memchr(name, '/', len) || memchr(name, '\0', len))
		return false;
	/* They would alias the directory itself or its parent. */
	if ((len == 1 && name[0] == '.') || (len == 2 && name[0] == '.' && name[1] == '.'))
		return false;
	return true;
}

bool kv_tag_name_ok(const char *tag, size_t len)
{
	static const char ok[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.:@=-";

	if (len == 0 || len > REC_TAG_MAX || tag[0] == '-')
		return false;
	if ((len == 1 && tag[0] == '.') || (len == 2 && tag[0] == '.' && tag[1] == '.'))
		return false;
	/* The set excludes '/', ',' and '+', so a tag is always a valid file
	 * name and never reads as a query. */
	for (size_t i = 0; i < len; i++)
		if (!tag[i] || !memchr(ok, tag[i], sizeof(ok) - 1))
			return false;
	return true;
}

static bool tag_ok(const char *tag, size_t len)
{
	return kv_tag_name_ok(tag, len);
}

/* Sorted and unique, as the store keeps them; a < b by bytes. */
static bool tags_ordered(const char *a, size_t alen, const char *b, size_t blen)
{
	int c = memcmp(a, b, alen < blen ? alen : blen);

	return c < 0 || (c == 0 && alen < blen);
}

static int meta_check(const struct kv_meta *m)
{
	const char *name = m->name ? m->name : "";

	if (m->id == 0 || !name_ok(name, strlen(name), m->id))
		return -EINVAL;
	if (m->encoding > KV_ENC_ZSTD)
		return -EINVAL;
	if (m->ntags > REC_TAGS_MAX || (m->ntags && !m->tags))
		return -EINVAL;
	for (uint32_t i = 0; i < m->ntags; i++) {
		size_t len;

		if (!m->tags[i])
			return -EINVAL;
		len = strlen(m->tags[i]);
		if (!tag_ok(m->tags[i], len))
			return -EINVAL;
		if (i && !tags_ordered(m->tags[i - 1], strlen(m->tags[i - 1]), m->tags[i], len))
			return -EINVAL;
	}
	if (m->xattrs_len > KV_XATTRS_MAX || (m->xattrs_len && !m->xattrs))
		return -EINVAL;
	return 0;
}

static uint8_t *put_u8(uint8_t *p, uint8_t v)
{
	*p = v;
	return p + 1;
}

static uint8_t *put_u16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
	return p + 2;
}

static uint8_t *put_u32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
	return p + 4;
}

static uint8_t *put_u64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
	return p + 8;
}

static uint8_t *put_bytes(uint8_t *p, const void *src, size_t len)
{
	if (len)
		memcpy(p, src, len);
	return p + len;
}

int kv_meta_encode(const struct kv_meta *m, uint8_t **buf, size_t *len, size_t *cap)
{
	const char *name = m->name ? m->name : "";
	size_t need = REC_FIXED + 1 + strlen(name) + 2 + 4 + m->xattrs_len;
	uint8_t *p;
	int ret;

	ret = meta_check(m);
	if (ret)
		return ret;
	for (uint32_t i = 0; i < m->ntags; i++)
		need += 1 + strlen(m->tags[i]);

	if (*cap - *len < need) {
		size_t ncap = *cap ? *cap : 256;
		uint8_t *nbuf;

		while (ncap - *len < need)
			ncap *= 2;
		nbuf = realloc(*buf, ncap);
		if (!nbuf)
			return -ENOMEM;
		*buf = nbuf;
		*cap = ncap;
	}

	p = *buf + *len;
	p = put_u8(p, REC_VERSION);
	p = put_u64(p, m->id);
	p = put_u64(p, m->parent);
	p = put_u32(p, m->mode);
	p = put_u32(p, m->uid);
	p = put_u32(p, m->gid);
	p = put_u64(p, (uint64_t)m->atime_ns);
	p = put_u64(p, (uint64_t)m->mtime_ns);
	p = put_u64(p, (uint64_t)m->ctime_ns);
	p = put_u64(p, (uint64_t)m->btime_ns);
	p = put_u64(p, (uint64_t)m->expires_ms);
	p = put_u64(p, m->size);
	p = put_u64(p, m->vver);
	p = put_u64(p, m->stored_size);
	p = put_u8(p, m->encoding);
	p = put_u8(p, (uint8_t)strlen(name));
	p = put_bytes(p, name, strlen(name));
	p = put_u16(p, (uint16_t)m->ntags);
	for (uint32_t i = 0; i < m->ntags; i++) {
		size_t tlen = strlen(m->tags[i]);

		p = put_u8(p, (uint8_t)tlen);
		p = put_bytes(p, m->tags[i], tlen);
	}
	p = put_u32(p, m->xattrs_len);
	p = put_bytes(p, m->xattrs, m->xattrs_len);
	*len = (size_t)(p - *buf);
	return 0;
}

/* A bounds-checked reader: every get fails once the input is exhausted. */
struct rd {
	const uint8_t *p;
	size_t left;
};

static bool take(struct rd *r, size_t n, const uint8_t **out)
{
	if (r->left < n)
		return false;
	*out = r->p;
	r->p += n;
	r->left -= n;
	return true;
}

static bool get_u8(struct rd *r, uint8_t *v)
{
	const uint8_t *p;

	if (!take(r, 1, &p))
		return false;
	*v = p[0];
	return true;
}

static bool get_u16(struct rd *r, uint16_t *v)
{
	const uint8_t *p;

	if (!take(r, 2, &p))
		return false;
	*v = (uint16_t)(p[0] | (p[1] << 8));
	return true;
}

static bool get_u32(struct rd *r, uint32_t *v)
{
	const uint8_t *p;

	if (!take(r, 4, &p))
		return false;
	*v = 0;
	for (int i = 0; i < 4; i++)
		*v |= (uint32_t)p[i] << (8 * i);
	return true;
}

static bool get_u64(struct rd *r, uint64_t *v)
{
	const uint8_t *p;

	if (!take(r, 8, &p))
		return false;
	*v = 0;
	for (int i = 0; i < 8; i++)
		*v |= (uint64_t)p[i] << (8 * i);
	return true;
}

static bool get_i64(struct rd *r, int64_t *v)
{
	uint64_t u;

	if (!get_u64(r, &u))
		return false;
	*v = (int64_t)u;
	return true;
}

/* A NUL-terminated copy of len bytes. */
static char *dup_str(const uint8_t *p, size_t len)
{
	char *s = malloc(len + 1);

	if (s) {
		memcpy(s, p, len);
		s[len] = '\0';
	}
	return s;
}

int kv_meta_decode(const uint8_t *data, size_t len, struct kv_meta *out, size_t *used)
{
	struct rd r = { .p = data, .left = len };
	struct kv_meta m = { 0 };
	const uint8_t *p, *prev = NULL;
	uint8_t version, nlen, tlen, prev_len = 0;
	uint16_t ntags;
	int ret = -EINVAL;

	if (!get_u8(&r, &version) || version != REC_VERSION)
		return -EINVAL;
	if (!get_u64(&r, &m.id) || !get_u64(&r, &m.parent) || !get_u32(&r, &m.mode) ||
	    !get_u32(&r, &m.uid) || !get_u32(&r, &m.gid) || !get_i64(&r, &m.atime_ns) ||
	    !get_i64(&r, &m.mtime_ns) || !get_i64(&r, &m.ctime_ns) ||
	    !get_i64(&r, &m.btime_ns) || !get_i64(&r, &m.expires_ms) || !get_u64(&r, &m.size) ||
	    !get_u64(&r, &m.vver) || !get_u64(&r, &m.stored_size) || !get_u8(&r, &m.encoding))
		return -EINVAL;
	if (m.id == 0 || m.encoding > KV_ENC_ZSTD)
		return -EINVAL;

	if (!get_u8(&r, &nlen) || !take(&r, nlen, &p) || !name_ok((const char *)p, nlen, m.id))
		return -EINVAL;
	m.name = dup_str(p, nlen);
	if (!m.name)
		return -ENOMEM;

	if (!get_u16(&r, &ntags))
		goto out_clear;
	/* Each tag takes at least two bytes: refuse a count the input cannot
	 * hold before allocating for it. */
	if ((size_t)ntags * 2 > r.left)
		goto out_clear;
	if (ntags) {
		m.tags = calloc(ntags, sizeof(*m.tags));
		if (!m.tags) {
			ret = -ENOMEM;
			goto out_clear;
		}
	}
	for (uint16_t i = 0; i < ntags; i++) {
		if (!get_u8(&r, &tlen) || !take(&r, tlen, &p) || !tag_ok((const char *)p, tlen))
			goto out_clear;
		if (prev && !tags_ordered((const char *)prev, prev_len, (const char *)p, tlen))
			goto out_clear;
		m.tags[i] = dup_str(p, tlen);
		if (!m.tags[i]) {
			ret = -ENOMEM;
			goto out_clear;
		}
		m.ntags = i + 1u;
		prev = p;
		prev_len = tlen;
	}

	if (!get_u32(&r, &m.xattrs_len) || m.xattrs_len > KV_XATTRS_MAX)
		goto out_clear_len;
	if (!take(&r, m.xattrs_len, &p))
		goto out_clear_len;
	if (m.xattrs_len) {
		m.xattrs = malloc(m.xattrs_len);
		if (!m.xattrs) {
			ret = -ENOMEM;
			goto out_clear_len;
		}
		memcpy(m.xattrs, p, m.xattrs_len);
	}

	*out = m;
	if (used)
		*used = len - r.left;
	return 0;

out_clear_len:
	/* xattrs_len was read but nothing was allocated for it. */
	m.xattrs_len = 0;
out_clear:
	kv_meta_clear(&m);
	return ret;
}
