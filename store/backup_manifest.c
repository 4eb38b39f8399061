/*
 * The backup manifest (manifest.json): built from and parsed into struct
 * kv_bk_manifest with jansson. Parsing trusts nothing: every path, name,
 * tag, size and xattr blob is checked as the store would check it, so a
 * crafted manifest cannot put anything into the store that it would refuse.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <jansson.h>

#include "store/backup_int.h"
#include "store/tags.h"

#define VALUES "values/"


static void ent_free(struct kv_bk_ent *e)
{
	free(e->path);
	kv_meta_clear(&e->m);
}

void kv_bk_manifest_free(struct kv_bk_manifest *mf)
{
	if (!mf)
		return;
	free(mf->id);
	free(mf->parent);
	for (size_t i = 0; i < mf->nkeys; i++)
		ent_free(&mf->keys[i]);
	free(mf->keys);
	for (size_t i = 0; i < mf->ndirs; i++)
		ent_free(&mf->dirs[i]);
	free(mf->dirs);
	for (size_t i = 0; i < mf->ndeleted; i++)
		free(mf->deleted[i]);
	free(mf->deleted);
	for (size_t i = 0; i < mf->ndeclared; i++)
		free(mf->declared[i]);
	free(mf->declared);
	free(mf->by_file);
	memset(mf, 0, sizeof(*mf));
}

static char *hex(const void *data, size_t len)
{
	static const char digits[] = "0123456789abcdef";
	const uint8_t *p = data;
	char *out = malloc(2 * len + 1);

	if (!out)
		return NULL;
	for (size_t i = 0; i < len; i++) {
		out[2 * i] = digits[p[i] >> 4];
		out[2 * i + 1] = digits[p[i] & 15];
	}
	out[2 * len] = '\0';
	return out;
}

static int unhex_digit(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

static int unhex(const char *s, uint8_t **out, size_t *len)
{
	size_t n = strlen(s);

	*out = NULL;
	if (n % 2)
		return -EINVAL;
	*out = malloc(n / 2 + 1);
	if (!*out)
		return -ENOMEM;
	for (size_t i = 0; i < n / 2; i++) {
		int hi = unhex_digit(s[2 * i]), lo = unhex_digit(s[2 * i + 1]);

		if (hi < 0 || lo < 0) {
			free(*out);
			*out = NULL;
			return -EINVAL;
		}
		(*out)[i] = (uint8_t)(hi << 4 | lo);
	}
	*len = n / 2;
	return 0;
}

/* A path as JSON: "path" when it is UTF-8, else "path_hex" (keys are bytes). */
static int set_path(json_t *o, const char *key, const char *path)
{
	json_t *s = json_string(path);
	char name[32];

	if (s)
		return json_object_set_new(o, key, s);
	snprintf(name, sizeof(name), "%s_hex", key);
	char *h = hex(path, strlen(path));

	if (!h)
		return -1;
	int r = json_object_set_new(o, name, json_string(h));

	free(h);
	return r;
}

static json_t *tags_json(char *const *tags, size_t n)
{
	json_t *a = json_array();

	for (size_t i = 0; a && i < n; i++)
		if (json_array_append_new(a, json_string(tags[i]))) {
			json_decref(a);
			return NULL;
		}
	return a;
}

static json_t *ent_json(const struct kv_bk_ent *e, bool key)
{
	const struct kv_meta *m = &e->m;
	json_t *o = json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I}", "mode", (json_int_t)m->mode,
			      "uid", (json_int_t)m->uid, "gid", (json_int_t)m->gid, "atime_ns",
			      (json_int_t)m->atime_ns, "mtime_ns", (json_int_t)m->mtime_ns,
			      "ctime_ns", (json_int_t)m->ctime_ns, "btime_ns",
			      (json_int_t)m->btime_ns);
	char sum[17];
	int r = 0;

	if (!o)
		return NULL;
	r |= set_path(o, "path", e->path);
	if (key) {
		snprintf(sum, sizeof(sum), "%016" PRIx64, e->sum);
		r |= json_object_set_new(o, "size", json_integer((json_int_t)m->size));
		r |= json_object_set_new(o, "xxh3", json_string(sum));
		r |= json_object_set_new(o, "expires_ms", json_integer(m->expires_ms));
		r |= json_object_set_new(o, "tags", tags_json(m->tags, m->ntags));
		if (e->file >= 0) {
			char file[40];

			snprintf(file, sizeof(file), VALUES "%" PRId64, e->file);
			r |= json_object_set_new(o, "file", json_string(file));
		}
	}
	if (m->xattrs_len) {
		char *h = hex(m->xattrs, m->xattrs_len);

		r |= h ? json_object_set_new(o, "xattrs_hex", json_string(h)) : -1;
		free(h);
	}
	if (r) {
		json_decref(o);
		return NULL;
	}
	return o;
}

char *kv_bk_manifest_dump(const struct kv_bk_manifest *mf)
{
	json_t *keys = json_array(), *dirs = json_array(), *del = json_array(), *o = NULL;
	char *text = NULL;
	int r = !keys || !dirs || !del;

	for (size_t i = 0; !r && i < mf->nkeys; i++)
		r = json_array_append_new(keys, ent_json(&mf->keys[i], true));
	for (size_t i = 0; !r && i < mf->ndirs; i++)
		r = json_array_append_new(dirs, ent_json(&mf->dirs[i], false));
	for (size_t i = 0; !r && i < mf->ndeleted; i++) {
		json_t *d = json_object();

		r = !d || set_path(d, "path", mf->deleted[i]) || json_array_append_new(del, d);
	}
	if (!r)
		o = json_pack("{s:s, s:i, s:s, s:s?, s:I, s:I, s:s, s:I, s:I, s:o, s:o, s:o, s:o}",
			      "format", "nadbfs-backup", "version", KV_BK_FORMAT, "id", mf->id,
			      "parent", mf->parent, "started_ms", (json_int_t)mf->started_ms,
			      "finished_ms", (json_int_t)mf->finished_ms, "checksum", "xxh3-64",
			      "total_keys", (json_int_t)mf->total_keys, "bytes",
			      (json_int_t)mf->bytes, "declared_tags",
			      tags_json(mf->declared, mf->ndeclared), "dirs", dirs, "keys", keys,
			      "deleted", del);
	else {
		json_decref(keys);
		json_decref(dirs);
		json_decref(del);
	}
	if (o)
		text = json_dumps(o, JSON_INDENT(1) | JSON_PRESERVE_ORDER);
	json_decref(o);
	return text;
}

/* A key path: components valid, whole at most KV_KEY_MAX; "" only if root_ok. */
static bool path_ok(const char *p, bool root_ok)
{
	size_t len = strlen(p);

	if (!len)
		return root_ok;
	if (len > KV_KEY_MAX)
		return false;
	for (const char *c = p; c;) {
		const char *slash = strchr(c, '/');
		size_t n = slash ? (size_t)(slash - c) : strlen(c);
		char name[KV_NAME_MAX + 1];

		if (n == 0 || n > KV_NAME_MAX)
			return false;
		memcpy(name, c, n);
		name[n] = '\0';
		if (kv_check_name(name))
			return false;
		c = slash ? slash + 1 : NULL;
	}
	return true;
}

static char *get_path(json_t *o, bool root_ok)
{
	const char *s = json_string_value(json_object_get(o, "path"));
	const char *h = json_string_value(json_object_get(o, "path_hex"));
	char *out = NULL;

	if (s) {
		out = strdup(s);
	} else if (h) {
		uint8_t *raw;
		size_t len;

		if (unhex(h, &raw, &len) || memchr(raw, 0, len)) {
			free(raw);
			return NULL;
		}
		raw[len] = '\0';
		out = (char *)raw;
	}
	if (out && !path_ok(out, root_ok)) {
		free(out);
		return NULL;
	}
	return out;
}

static int get_int(json_t *o, const char *key, int64_t min, int64_t max, int64_t *out)
{
	json_t *v = json_object_get(o, key);

	if (!json_is_integer(v) || json_integer_value(v) < min || json_integer_value(v) > max)
		return -EINVAL;
	*out = json_integer_value(v);
	return 0;
}

static int str_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* A list of valid tags, sorted and unique as kv_meta wants it. */
static int get_tags(json_t *a, char ***out, size_t *n)
{
	size_t k = 0, len = json_array_size(a);
	char **tags;

	*out = NULL;
	*n = 0;
	if (!json_is_array(a) || len > KV_TAGS_DECLARED_MAX)
		return -EINVAL;
	if (!len)
		return 0;
	tags = calloc(len, sizeof(*tags));
	if (!tags)
		return -ENOMEM;
	for (size_t i = 0; i < len; i++) {
		const char *t = json_string_value(json_array_get(a, i));

		if (!t || !kv_tag_name_ok(t, strlen(t)) || !(tags[k] = strdup(t)))
			goto out_bad;
		k++;
	}
	qsort(tags, k, sizeof(*tags), str_cmp);
	for (size_t i = 1; i < k; i++)
		if (!strcmp(tags[i - 1], tags[i]))
			goto out_bad;
	*out = tags;
	*n = k;
	return 0;

out_bad:
	while (k--)
		free(tags[k]);
	free(tags);
	return -EINVAL;
}

/* The store's xattr blob: entries [u8 name length > 0][name][u32 LE value
 * length][value] filling it exactly (kv_xattr.c); a restore must not bring
 * in one the store would choke on. */
static bool xattrs_ok(const uint8_t *b, size_t len)
{
	size_t p = 0;

	while (p < len) {
		if (b[p] == 0 || len - p - 1 < (size_t)b[p] + 4)
			return false;
		p += 1 + b[p];
		uint32_t vlen = (uint32_t)b[p] | (uint32_t)b[p + 1] << 8 |
				(uint32_t)b[p + 2] << 16 | (uint32_t)b[p + 3] << 24;

		p += 4;
		if (len - p < vlen)
			return false;
		p += vlen;
	}
	return true;
}

static int parse_ent(json_t *o, bool key, struct kv_bk_ent *e, size_t *nfiles, size_t nkeys)
{
	struct kv_meta *m = &e->m;
	int64_t v[8];
	size_t ntags = 0;
	const char *x;
	int ret = -EINVAL;

	e->file = -1;
	e->path = get_path(o, !key);
	if (!e->path || get_int(o, "mode", 0, UINT32_MAX, &v[0]) ||
	    get_int(o, "uid", 0, UINT32_MAX, &v[1]) || get_int(o, "gid", 0, UINT32_MAX, &v[2]) ||
	    get_int(o, "atime_ns", INT64_MIN, INT64_MAX, &v[3]) ||
	    get_int(o, "mtime_ns", INT64_MIN, INT64_MAX, &v[4]) ||
	    get_int(o, "ctime_ns", INT64_MIN, INT64_MAX, &v[5]) ||
	    get_int(o, "btime_ns", INT64_MIN, INT64_MAX, &v[6]))
		return ret;
	m->mode = (uint32_t)v[0];
	if ((key && !S_ISREG(m->mode)) || (!key && !S_ISDIR(m->mode)))
		return ret;
	m->uid = (uint32_t)v[1];
	m->gid = (uint32_t)v[2];
	m->atime_ns = v[3];
	m->mtime_ns = v[4];
	m->ctime_ns = v[5];
	m->btime_ns = v[6];
	x = json_string_value(json_object_get(o, "xattrs_hex"));
	if (x) {
		size_t len;

		if (unhex(x, (uint8_t **)&m->xattrs, &len) || len > KV_XATTRS_MAX || !len ||
		    !xattrs_ok(m->xattrs, len))
			return ret;
		m->xattrs_len = (uint32_t)len;
	}
	if (!key)
		return 0;
	const char *sum = json_string_value(json_object_get(o, "xxh3"));
	const char *file = json_string_value(json_object_get(o, "file"));
	char *end;

	if (get_int(o, "size", 0, INT64_MAX, &v[0]) ||
	    get_int(o, "expires_ms", 0, INT64_MAX, &v[1]) || !sum || strlen(sum) != 16)
		return ret;
	m->size = (uint64_t)v[0];
	m->expires_ms = v[1];
	errno = 0;
	e->sum = strtoull(sum, &end, 16);
	if (*end || errno)
		return ret;
	ret = get_tags(json_object_get(o, "tags"), &m->tags, &ntags);
	if (ret)
		return ret;
	if (ntags > KV_TAGS_PER_KEY)
		return -EINVAL;
	m->ntags = (uint32_t)ntags;
	if (file) {
		if (strncmp(file, VALUES, strlen(VALUES)))
			return -EINVAL;
		errno = 0;
		e->file = (int64_t)strtoull(file + strlen(VALUES), &end, 10);
		if (*end || errno || e->file < 0 || (size_t)e->file >= nkeys)
			return -EINVAL;
		if ((size_t)e->file + 1 > *nfiles)
			*nfiles = (size_t)e->file + 1;
	}
	return 0;
}

static int parse_list(json_t *a, bool key, struct kv_bk_ent **out, size_t *n, size_t *nfiles)
{
	size_t len = json_array_size(a);
	int ret;

	if (!json_is_array(a))
		return -EINVAL;
	*out = calloc(len ? len : 1, sizeof(**out));
	if (!*out)
		return -ENOMEM;
	for (*n = 0; *n < len; (*n)++) {
		ret = parse_ent(json_array_get(a, *n), key, &(*out)[*n], nfiles, len);
		if (ret) {
			(*n)++; /* so that the partial entry is freed */
			return ret;
		}
	}
	return 0;
}

int kv_bk_manifest_parse(const char *text, size_t len, struct kv_bk_manifest *mf, char *err,
			 size_t errlen)
{
	json_error_t jerr;
	json_t *o = json_loadb(text, len, 0, &jerr), *a;
	const char *id, *parent;
	int64_t v;
	int ret = -EBADMSG;

	memset(mf, 0, sizeof(*mf));
	if (!o) {
		snprintf(err, errlen, "manifest.json is not JSON (line %d: %s)", jerr.line,
			 jerr.text);
		return ret;
	}
	id = json_string_value(json_object_get(o, "id"));
	parent = json_string_value(json_object_get(o, "parent"));
	if (get_int(o, "version", 1, 1, &v) || !id || kv_backup_check_id(id) ||
	    (parent && kv_backup_check_id(parent))) {
		snprintf(err, errlen, "manifest.json has no valid format version, id or parent");
		goto out;
	}
	mf->id = strdup(id);
	mf->parent = parent ? strdup(parent) : NULL;
	if (!mf->id || (parent && !mf->parent) ||
	    get_int(o, "started_ms", 0, INT64_MAX, &mf->started_ms) ||
	    get_int(o, "finished_ms", 0, INT64_MAX, &mf->finished_ms) ||
	    get_int(o, "total_keys", 0, INT64_MAX, &v)) {
		snprintf(err, errlen, "manifest.json lacks its time window or key count");
		goto out;
	}
	mf->total_keys = (uint64_t)v;
	if (parse_list(json_object_get(o, "keys"), true, &mf->keys, &mf->nkeys, &mf->nfiles) ||
	    parse_list(json_object_get(o, "dirs"), false, &mf->dirs, &mf->ndirs, &mf->nfiles) ||
	    get_tags(json_object_get(o, "declared_tags"), &mf->declared, &mf->ndeclared)) {
		snprintf(err, errlen, "manifest.json has a malformed key, directory or tag");
		goto out;
	}
	a = json_object_get(o, "deleted");
	mf->deleted = calloc(json_array_size(a) + 1, sizeof(char *));
	if (!json_is_array(a) || !mf->deleted) {
		snprintf(err, errlen, "manifest.json has no list of deleted keys");
		goto out;
	}
	for (size_t i = 0; i < json_array_size(a); i++) {
		mf->deleted[i] = get_path(json_array_get(a, i), false);
		if (!mf->deleted[i]) {
			snprintf(err, errlen, "manifest.json names a malformed deleted key");
			goto out;
		}
		mf->ndeleted++;
	}
	mf->by_file = calloc(mf->nfiles + 1, sizeof(*mf->by_file));
	if (!mf->by_file)
		goto out;
	for (size_t i = 0; i < mf->nkeys; i++) {
		struct kv_bk_ent *e = &mf->keys[i];

		if (e->file < 0)
			continue;
		if (mf->by_file[e->file]) {
			snprintf(err, errlen, "manifest.json names one value file twice");
			goto out;
		}
		mf->by_file[e->file] = e;
	}
	ret = 0;
out:
	json_decref(o);
	if (ret)
		kv_bk_manifest_free(mf);
	return ret;
}

