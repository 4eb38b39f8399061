/*
 * Extended attributes of a record: custom user.* names stored with it (in
 * kv_meta.xattrs, persisted by every backend like the rest of the record),
 * and the read-only user.nadb.* names computed from its metadata.
 *
 * The blob is a sequence of entries [u8 name length][name][u32 value length
 * LE][value], sorted by name, at most KV_XATTRS_MAX bytes in all. It is
 * replaced as a whole on every change, so a change is all or nothing.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "store/tx.h"

#define META_PREFIX "user.nadb."

struct xentry {
	const char *name;
	size_t name_len;
	const uint8_t *value;
	uint32_t value_len;
	size_t off, len;	/* the entry's place in the blob */
};

/* Next entry at *pos; 1 when found, 0 at the end, -EIO if the blob is bad
 * (a damaged record must not crash the daemon). */
static int next_entry(const uint8_t *b, size_t len, size_t *pos, struct xentry *e)
{
	size_t p = *pos;

	if (p == len)
		return 0;
	if (len - p < 1 || len - p - 1 < (size_t)b[p] + 4 || b[p] == 0)
		return -EIO;
	e->off = p;
	e->name_len = b[p];
	e->name = (const char *)b + p + 1;
	p += 1 + e->name_len;
	e->value_len = (uint32_t)b[p] | (uint32_t)b[p + 1] << 8 | (uint32_t)b[p + 2] << 16 |
		       (uint32_t)b[p + 3] << 24;
	p += 4;
	if (len - p < e->value_len)
		return -EIO;
	e->value = b + p;
	p += e->value_len;
	e->len = p - e->off;
	*pos = p;
	return 1;
}

static int name_cmp(const struct xentry *e, const char *name, size_t len)
{
	int c = memcmp(e->name, name, e->name_len < len ? e->name_len : len);

	if (c)
		return c;
	return (e->name_len > len) - (e->name_len < len);
}

/* Finds name: 1 and *e when present; 0 with e->off = insertion point. */
static int find_entry(const struct kv_node *n, const char *name, struct xentry *e)
{
	size_t pos = 0, len = strlen(name);
	int ret;

	while ((ret = next_entry(kv_node_xattrs(n), kv_node_xattrs_len(n), &pos, e)) == 1) {
		int c = name_cmp(e, name, len);

		if (c == 0)
			return 1;
		if (c > 0) {
			pos = e->off; /* insert before the first greater name */
			break;
		}
	}
	if (ret < 0)
		return ret;
	e->off = pos;
	e->len = 0;
	return 0;
}

static ssize_t copy_out(const void *src, size_t len, void *buf, size_t size);

#define TTL_NAME "user.ttl"
/* How close to a committed deadline a TTL change is flushed at once (see
 * deadline_near): the flush itself must land before it. */
#define TTL_NEAR_MS 5000
/* Deadlines beyond this many seconds from now are refused: they would
 * overflow the millisecond arithmetic long before they could matter. */
#define TTL_MAX_S (100ull * 365 * 24 * 3600)

#define TAGS_NAME "user.tags"
#define XDG_TAGS_NAME "user.xdg.tags"

/* The key's tag list under its two names (tags.c owns the meaning). */
static bool is_tags(const char *name)
{
	return !strcmp(name, TAGS_NAME) || !strcmp(name, XDG_TAGS_NAME);
}

/*
 * Whether a change of one of a key's computed attributes (user.ttl,
 * user.tags) may go ahead: they exist on keys only, and honour
 * XATTR_CREATE/REPLACE like stored ones. present: n has the attribute now.
 */
static int key_attr_check(const struct kv_node *n, bool present, bool remove, int flags)
{
	if (!n)
		return -ENOENT;
	if (S_ISDIR(n->m.mode))
		return -ENOTSUP;
	if ((remove || (flags & KV_XATTR_REPLACE)) && !present)
		return -ENODATA;
	if (!remove && (flags & KV_XATTR_CREATE) && present)
		return -EEXIST;
	return 0;
}

/* A TTL is a plain positive decimal integer of seconds: no sign, no spaces. */
static int parse_ttl(const char *v, size_t len, uint64_t *out)
{
	uint64_t secs = 0;

	if (len == 0 || len > 20)
		return -EINVAL;
	for (size_t i = 0; i < len; i++) {
		if (v[i] < '0' || v[i] > '9')
			return -EINVAL;
		secs = secs * 10 + (uint64_t)(v[i] - '0');
		if (secs > TTL_MAX_S)
			return -EINVAL;
	}
	if (secs == 0)
		return -EINVAL;
	*out = secs;
	return 0;
}

/* user.ttl: seconds left, rounded up. Keys only. */
static ssize_t get_ttl(const struct kv_node *n, void *buf, size_t size)
{
	char v[32];
	int64_t left;

	if (S_ISDIR(n->m.mode))
		return -ENOTSUP;
	if (!kv_node_expires(n))
		return -ENODATA;
	left = kv_node_expires(n) - kv_now_ms();
	snprintf(v, sizeof(v), "%lld", (long long)(left <= 1000 ? 1 : (left + 999) / 1000));
	return copy_out(v, strlen(v), buf, size);
}

/*
 * A committed deadline (old) that a store with native expiry (Redis) would
 * reach before the next flush carries the new one: Redis would drop the
 * value meanwhile, and this mount no longer holds it. Moving a deadline
 * that close flushes at once, not after flush_interval.
 */
static bool deadline_near(struct kv_store *kv, const struct kv_node *n, int64_t old)
{
	return old && (n->flags & KV_NODE_COMMITTED) && kv->backend->ops->caps.native_ttl &&
	       old - kv_now_ms() < (int64_t)kv->opts.flush_interval_ms + TTL_NEAR_MS;
}

static int change_ttl(struct kv_store *kv, uint64_t id, const void *value, size_t len,
		      bool remove, int flags)
{
	struct kv_node *n;
	uint64_t secs = 0;
	int64_t old = 0;
	int ret = 0;

	if (!remove) {
		ret = parse_ttl(value, len, &secs);
		if (ret)
			return ret;
	}
	pthread_mutex_lock(&kv->lock);
	n = kv_node_live(kv, id);
	ret = key_attr_check(n, n && kv_node_expires(n), remove, flags);
	if (!ret) {
		old = kv_node_expires(n);
		ret = kv_set_deadline(kv, n, remove ? 0 : kv_now_ms() + (int64_t)secs * 1000);
	}
	if (!ret) {
		n->m.ctime_ns = kv_now_ns();
		/* Metadata only: a TTL never rewrites the value. */
		if (!(n->flags & KV_NODE_DELETED)) {
			kv_mark_dirty(kv, n);
			if (deadline_near(kv, n, old))
				kv_flush_soon(kv);
		}
	}
	pthread_mutex_unlock(&kv->lock);
	return ret;
}

/* user.tags: "a,b,c" in sorted order; keys only; absent while untagged. */
static ssize_t get_tags(const struct kv_node *n, void *buf, size_t size)
{
	size_t need = 0, pos = 0;

	if (S_ISDIR(n->m.mode))
		return -ENOTSUP;
	if (!kv_node_ntags(n))
		return -ENODATA;
	for (uint32_t i = 0; i < kv_node_ntags(n); i++)
		need += strlen(kv_node_tags(n)[i]) + (i ? 1 : 0);
	if (size == 0)
		return (ssize_t)need;
	if (size < need)
		return -ERANGE;
	for (uint32_t i = 0; i < kv_node_ntags(n); i++) {
		size_t l = strlen(kv_node_tags(n)[i]);

		if (i)
			((char *)buf)[pos++] = ',';
		memcpy((char *)buf + pos, kv_node_tags(n)[i], l);
		pos += l;
	}
	return (ssize_t)need;
}

static int change_tags(struct kv_store *kv, uint64_t id, const void *value, size_t len,
		       bool remove, int flags)
{
	struct kv_node *n;
	char **tags = NULL;
	uint32_t ntags = 0;
	int ret = 0;

	/* Parsed before the lock: a bad list changes nothing. */
	if (!remove) {
		ret = kv_tags_parse_list(value, len, &tags, &ntags);
		if (ret)
			return ret;
	}
	pthread_mutex_lock(&kv->lock);
	n = kv_node_live(kv, id);
	ret = key_attr_check(n, n && kv_node_ntags(n), remove, flags);
	if (!ret)
		ret = kv_node_set_tags(kv, n, tags, ntags);
	pthread_mutex_unlock(&kv->lock);
	if (ret)
		kv_tags_free_list(tags, ntags);
	return ret;
}

static int check_name(const char *name)
{
	size_t len = strlen(name);

	if (strncmp(name, "user.", 5) != 0 || is_tags(name))
		return -ENOTSUP;
	if (len > KV_NAME_MAX)
		return -ERANGE;
	if (len == 5)
		return -EINVAL;
	return 0;
}

/* Copies src[0..len) out as getxattr(2) does: size 0 asks for the length. */
static ssize_t copy_out(const void *src, size_t len, void *buf, size_t size)
{
	if (size == 0)
		return (ssize_t)len;
	if (size < len)
		return -ERANGE;
	memcpy(buf, src, len);
	return (ssize_t)len;
}

static void rfc3339(int64_t ns, char *out, size_t len)
{
	time_t secs = (time_t)(ns / 1000000000);
	struct tm tm;

	gmtime_r(&secs, &tm);
	/* Nanoseconds keep the precision stat(2) shows. */
	snprintf(out, len, "%04d-%02d-%02dT%02d:%02d:%02d.%09dZ", tm.tm_year + 1900, tm.tm_mon + 1,
		 tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(ns % 1000000000));
}

/* The read-only user.nadb.* attributes. */
static ssize_t get_meta(const struct kv_node *n, const char *name, void *buf, size_t size)
{
	const char *what = name + strlen(META_PREFIX);
	char v[64];

	if (!strcmp(what, "created"))
		rfc3339(n->m.btime_ns, v, sizeof(v));
	else if (!strcmp(what, "updated"))
		rfc3339(n->m.mtime_ns, v, sizeof(v));
	else if (!strcmp(what, "size"))
		snprintf(v, sizeof(v), "%llu", (unsigned long long)n->m.size);
	else if (!strcmp(what, "stored_size"))
		/* A value not flushed yet is stored as is, for all we know. */
		snprintf(v, sizeof(v), "%llu",
			 (unsigned long long)((n->flags & KV_NODE_VALUE_DIRTY) || !n->m.vver ?
						      n->m.size :
						      n->m.stored_size));
	else if (!strcmp(what, "compressed"))
		snprintf(v, sizeof(v), "%s",
			 n->m.encoding != KV_ENC_NONE && !(n->flags & KV_NODE_VALUE_DIRTY) ? "yes" :
											      "no");
	else if (!strcmp(what, "expires") && kv_node_expires(n))
		rfc3339(kv_node_expires(n) * 1000000, v, sizeof(v));
	else
		return -ENODATA;
	return copy_out(v, strlen(v), buf, size);
}

ssize_t kv_getxattr(struct kv_store *kv, uint64_t id, const char *name, void *buf, size_t size)
{
	if (kv_is_tx_id(id) && kv_tx_xattr_target(kv, id, false, &id))
		return -ENOENT;
	struct kv_node *n;
	struct xentry e;
	ssize_t ret;

	if (strncmp(name, "user.", 5) != 0)
		return -ENOTSUP;
	pthread_mutex_lock(&kv->lock);
	n = kv_node_live(kv, id);
	if (!n)
		ret = -ENOENT;
	else if (is_tags(name))
		ret = get_tags(n, buf, size);
	else if (!strncmp(name, META_PREFIX, strlen(META_PREFIX)))
		ret = get_meta(n, name, buf, size);
	else if (!strcmp(name, TTL_NAME))
		ret = get_ttl(n, buf, size);
	else if ((ret = find_entry(n, name, &e)) == 1)
		ret = copy_out(e.value, e.value_len, buf, size);
	else if (ret == 0)
		ret = -ENODATA;
	pthread_mutex_unlock(&kv->lock);
	return ret;
}

ssize_t kv_listxattr(struct kv_store *kv, uint64_t id, char *buf, size_t size)
{
	if (kv_is_tx_id(id) && kv_tx_xattr_target(kv, id, false, &id))
		return -ENOENT;
	struct kv_node *n;
	struct xentry e;
	size_t pos = 0, need = 0;
	ssize_t ret;

	pthread_mutex_lock(&kv->lock);
	n = kv_node_live(kv, id);
	if (!n) {
		ret = -ENOENT;
		goto out;
	}
	/* In the order getfattr -d prints them: the computed names first. */
	for (int k = 0; k < 3; k++) {
		static const char *const names[] = { TAGS_NAME, XDG_TAGS_NAME, TTL_NAME };
		bool has = k < 2 ? kv_node_ntags(n) != 0 : kv_node_expires(n) != 0;
		size_t l = strlen(names[k]) + 1;

		if (!has || S_ISDIR(n->m.mode))
			continue;
		if (size && need + l > size) {
			ret = -ERANGE;
			goto out;
		}
		if (size)
			memcpy(buf + need, names[k], l);
		need += l;
	}
	while ((ret = next_entry(kv_node_xattrs(n), kv_node_xattrs_len(n), &pos, &e)) == 1) {
		if (size && need + e.name_len + 1 > size) {
			ret = -ERANGE;
			goto out;
		}
		if (size) {
			memcpy(buf + need, e.name, e.name_len);
			buf[need + e.name_len] = '\0';
		}
		need += e.name_len + 1;
	}
	if (ret == 0)
		ret = (ssize_t)need;
out:
	pthread_mutex_unlock(&kv->lock);
	return ret;
}

/* Replaces the entry at e (e->len bytes, 0 for an insertion) with name =
 * value, or removes it when value is NULL; with the lock held. */
static int splice_blob(struct kv_store *kv, struct kv_node *n, const struct xentry *e,
		       const char *name, const void *value, size_t vlen)
{
	size_t nlen = strlen(name), add = value ? 1 + nlen + 4 + vlen : 0;
	size_t len = kv_node_xattrs_len(n) - e->len + add;
	const uint8_t *old = kv_node_xattrs(n);
	uint8_t *b, *p;

	if (len > KV_XATTRS_MAX)
		return -ENOSPC;
	b = malloc(len ? len : 1);
	if (!b)
		return -ENOMEM;
	/* The blob is NULL while a record has no xattrs: copy only bytes that exist. */
	if (old)
		memcpy(b, old, e->off);
	p = b + e->off;
	if (value) {
		*p++ = (uint8_t)nlen;
		memcpy(p, name, nlen);
		p += nlen;
		for (int i = 0; i < 4; i++)
			*p++ = (uint8_t)(vlen >> (8 * i));
		if (vlen)
			memcpy(p, value, vlen);
		p += vlen;
	}
	if (old)
		memcpy(p, old + e->off + e->len, kv_node_xattrs_len(n) - e->off - e->len);
	/* Takes b (freed at once when empty). */
	if (kv_node_put_xattrs(n, b, (uint32_t)len)) {
		free(b);
		return -ENOMEM;
	}
	n->m.ctime_ns = kv_now_ns();
	/* Metadata only: setting an xattr never rewrites the value. */
	if (!(n->flags & KV_NODE_DELETED))
		kv_mark_dirty(kv, n);
	return 0;
}

static int change(struct kv_store *kv, uint64_t id, const char *name, const void *value,
		  size_t vlen, int flags)
{
	struct kv_node *n;
	struct xentry e;
	int ret;

	if (!strncmp(name, META_PREFIX, strlen(META_PREFIX)))
		return -EPERM;
	ret = check_name(name);
	if (ret)
		return ret;
	if (value && vlen > KV_XATTRS_MAX)
		return -ENOSPC;
	pthread_mutex_lock(&kv->lock);
	n = kv_node_live(kv, id);
	if (!n) {
		ret = -ENOENT;
		goto out;
	}
	ret = find_entry(n, name, &e);
	if (ret < 0)
		goto out;
	if (ret == 1 && value && (flags & KV_XATTR_CREATE))
		ret = -EEXIST;
	else if (ret == 0 && (!value || (flags & KV_XATTR_REPLACE)))
		ret = -ENODATA;
	else
		ret = splice_blob(kv, n, &e, name, value, vlen);
out:
	pthread_mutex_unlock(&kv->lock);
	return ret;
}

int kv_setxattr(struct kv_store *kv, uint64_t id, const char *name, const void *value,
		size_t len, int flags)
{
	int ret;

	/* In a transaction: the staged copy takes the change. */
	if (kv_is_tx_id(id) && (ret = kv_tx_xattr_target(kv, id, true, &id)))
		return ret;
	if (!strcmp(name, TTL_NAME))
		return change_ttl(kv, id, value, len, false, flags);
	if (is_tags(name))
		return change_tags(kv, id, value, len, false, flags);
	return change(kv, id, name, value ? value : "", len, flags);
}

int kv_removexattr(struct kv_store *kv, uint64_t id, const char *name)
{
	int ret;

	if (kv_is_tx_id(id) && (ret = kv_tx_xattr_target(kv, id, true, &id)))
		return ret;
	if (!strcmp(name, TTL_NAME))
		return change_ttl(kv, id, NULL, 0, true, 0);
	if (is_tags(name))
		return change_tags(kv, id, NULL, 0, true, 0);
	return change(kv, id, name, NULL, 0, 0);
}
