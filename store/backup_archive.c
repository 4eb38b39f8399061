/*
 * Backup archives: a tar stream (zstd, else gzip) of values/N entries, then
 * manifest.json, then manifest.xxh3 (the manifest's own checksum, so that a
 * flipped bit in it is caught like one in a value). The manifest comes last
 * because it holds every value's checksum, known only once the values were
 * read; readers therefore take two passes when they need both (verify, then
 * apply). The only libarchive user.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <archive.h>
#include <archive_entry.h>
#include <jansson.h>
#include <xxhash.h>

#include "store/backup_int.h"
#include "store/tags.h"

#define MANIFEST "manifest.json"
#define MANIFEST_SUM "manifest.xxh3"
#define VALUES "values/"

/* --- manifest ----------------------------------------------------------- */

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
			if (raw)
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

static int parse_ent(json_t *o, bool key, struct kv_bk_ent *e, size_t *nfiles)
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

		if (unhex(x, (uint8_t **)&m->xattrs, &len) || len > KV_XATTRS_MAX || !len)
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
		if (*end || errno || e->file < 0 || e->file > 1000000000)
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
		ret = parse_ent(json_array_get(a, *n), key, &(*out)[*n], nfiles);
		if (ret) {
			(*n)++; /* so that the partial entry is freed */
			return ret;
		}
	}
	return 0;
}

static int manifest_parse(const char *text, size_t len, struct kv_bk_manifest *mf, char *err,
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

/* --- writer ------------------------------------------------------------- */

struct kv_bk_writer {
	struct archive *a;
	struct archive_entry *e;
};

int kv_bk_writer_open(int fd, bool *zstd, struct kv_bk_writer **out, char *err, size_t errlen)
{
	struct kv_bk_writer *w = calloc(1, sizeof(*w));

	if (!w)
		return -ENOMEM;
	w->a = archive_write_new();
	w->e = archive_entry_new();
	if (!w->a || !w->e)
		goto out_free;
	/* zstd if this libarchive has it (and can run it), else gzip. */
	*zstd = archive_write_add_filter_zstd(w->a) == ARCHIVE_OK;
	if (!*zstd && archive_write_add_filter_gzip(w->a) != ARCHIVE_OK)
		goto out_err;
	if (archive_write_set_format_pax_restricted(w->a) != ARCHIVE_OK ||
	    archive_write_open_fd(w->a, fd) != ARCHIVE_OK)
		goto out_err;
	*out = w;
	return 0;

out_err:
	snprintf(err, errlen, "cannot start the archive: %s", archive_error_string(w->a));
out_free:
	archive_entry_free(w->e);
	archive_write_free(w->a);
	free(w);
	return -EIO;
}

static int write_piece(const void *data, size_t len, void *arg)
{
	struct archive *a = arg;

	return archive_write_data(a, data, len) == (la_ssize_t)len ? 0 : -EIO;
}

int kv_bk_writer_add(struct kv_bk_writer *w, const char *name, const struct kv_value *v,
		     const void *buf, size_t len, char *err, size_t errlen)
{
	int ret;

	archive_entry_clear(w->e);
	archive_entry_set_pathname(w->e, name);
	archive_entry_set_filetype(w->e, AE_IFREG);
	archive_entry_set_perm(w->e, 0600);
	archive_entry_set_mtime(w->e, time(NULL), 0);
	archive_entry_set_size(w->e, v ? (la_int64_t)kv_value_size(v) : (la_int64_t)len);
	if (archive_write_header(w->a, w->e) != ARCHIVE_OK)
		goto out_err;
	if (v)
		ret = kv_value_foreach(v, write_piece, w->a);
	else
		ret = len ? write_piece(buf, len, w->a) : 0;
	if (ret || archive_write_finish_entry(w->a) != ARCHIVE_OK)
		goto out_err;
	return 0;

out_err:
	snprintf(err, errlen, "cannot write %s into the archive: %s", name,
		 archive_error_string(w->a));
	return -EIO;
}

int kv_bk_writer_close(struct kv_bk_writer *w, char *err, size_t errlen)
{
	int ret = 0;

	if (archive_write_close(w->a) != ARCHIVE_OK) {
		snprintf(err, errlen, "cannot finish the archive: %s", archive_error_string(w->a));
		ret = -EIO;
	}
	archive_entry_free(w->e);
	archive_write_free(w->a);
	free(w);
	return ret;
}

/* --- reader ------------------------------------------------------------- */

struct seen {
	uint64_t sum, size;
	bool present;
};

/* Reads the current entry whole: hashes it, and keeps it in *v if v. */
static int read_entry(struct archive *a, XXH3_state_t *h, struct kv_value **v, uint64_t *size,
		      char **text, size_t text_max)
{
	char buf[64 * 1024];
	la_ssize_t n;
	int ret = 0;

	*size = 0;
	XXH3_64bits_reset(h);
	while ((n = archive_read_data(a, buf, sizeof(buf))) > 0) {
		XXH3_64bits_update(h, buf, (size_t)n);
		if (v && !ret)
			ret = kv_value_write(*v, buf, (size_t)n, *size);
		if (text) {
			if (*size + (uint64_t)n > text_max)
				return -EFBIG;
			char *t = realloc(*text, *size + (size_t)n + 1);

			if (!t)
				return -ENOMEM;
			*text = t;
			memcpy(t + *size, buf, (size_t)n);
		}
		*size += (uint64_t)n;
	}
	if (n < 0)
		return -EBADMSG;
	if (text && *text)
		(*text)[*size] = '\0';
	return ret;
}

int kv_bk_read(const char *path, const struct kv_bk_manifest *want, kv_bk_value_fn fn,
	       void *arg, struct kv_bk_manifest *out, char *err, size_t errlen)
{
	struct archive *a = archive_read_new();
	struct archive_entry *ae;
	XXH3_state_t *h = XXH3_createState();
	struct seen *seen = NULL;
	size_t nseen = 0;
	char *mtext = NULL, *sumtext = NULL;
	uint64_t msize = 0, msum = 0;
	struct kv_bk_manifest mf = { 0 };
	int r, ret = -EBADMSG;

	if (!a || !h) {
		ret = -ENOMEM;
		goto out;
	}
	archive_read_support_filter_all(a);
	archive_read_support_format_tar(a);
	if (archive_read_open_filename(a, path, 64 * 1024) != ARCHIVE_OK) {
		snprintf(err, errlen, "cannot read %s: %s", path, archive_error_string(a));
		ret = archive_errno(a) == ENOENT ? -ENOENT : -EBADMSG;
		goto out;
	}
	while ((r = archive_read_next_header(a, &ae)) == ARCHIVE_OK || r == ARCHIVE_WARN) {
		const char *name = archive_entry_pathname(ae);
		uint64_t size;
		char *end;

		if (name && !strncmp(name, VALUES, strlen(VALUES)) && !mtext) {
			unsigned long long k;
			struct kv_value *v = NULL;
			struct kv_bk_ent *e = NULL;

			errno = 0;
			k = strtoull(name + strlen(VALUES), &end, 10);
			if (*end || errno || k > 1000000000ull) {
				snprintf(err, errlen, "%s: unexpected entry %s", path, name);
				goto out;
			}
			if (want) {
				e = k < want->nfiles ? want->by_file[k] : NULL;
				if (!e) {
					snprintf(err, errlen, "%s: %s is not in the manifest", path,
						 name);
					goto out;
				}
				if (fn && !(v = kv_value_new())) {
					ret = -ENOMEM;
					goto out;
				}
			}
			if (k >= nseen) {
				size_t cap = k + 1 > 2 * nseen ? k + 1 : 2 * nseen;
				struct seen *s = realloc(seen, cap * sizeof(*s));

				if (!s) {
					kv_value_free(v);
					ret = -ENOMEM;
					goto out;
				}
				memset(s + nseen, 0, (cap - nseen) * sizeof(*s));
				seen = s;
				nseen = cap;
			}
			ret = read_entry(a, h, v ? &v : NULL, &size, NULL, 0);
			if (ret || seen[k].present) {
				kv_value_free(v);
				snprintf(err, errlen, "%s: %s is %s", path, name,
					 ret == -ENOMEM ? "too large for memory"
					 : ret ? "damaged" : "there twice");
				ret = ret == -ENOMEM ? ret : -EBADMSG;
				goto out;
			}
			ret = -EBADMSG;
			seen[k] = (struct seen){ XXH3_64bits_digest(h), size, true };
			if (e && (e->sum != seen[k].sum || e->m.size != size)) {
				kv_value_free(v);
				snprintf(err, errlen, "%s: %s does not match its checksum", path,
					 name);
				goto out;
			}
			if (e && fn) {
				int fr = fn(arg, e, v);

				if (fr) {
					ret = fr;
					snprintf(err, errlen, "cannot restore a value: %s",
						 strerror(-fr));
					goto out;
				}
			}
		} else if (name && !strcmp(name, MANIFEST) && !mtext) {
			if (read_entry(a, h, NULL, &msize, &mtext, 1u << 30) || !mtext) {
				snprintf(err, errlen, "%s: manifest.json is damaged", path);
				goto out;
			}
			msum = XXH3_64bits_digest(h);
		} else if (name && !strcmp(name, MANIFEST_SUM) && mtext && !sumtext) {
			if (read_entry(a, h, NULL, &size, &sumtext, 64) || !sumtext) {
				snprintf(err, errlen, "%s: manifest.xxh3 is damaged", path);
				goto out;
			}
		} else {
			snprintf(err, errlen, "%s: unexpected entry %s", path, name ? name : "?");
			goto out;
		}
	}
	if (r != ARCHIVE_EOF) {
		snprintf(err, errlen, "%s is damaged or truncated: %s", path,
			 archive_error_string(a) ? archive_error_string(a) : "read error");
		goto out;
	}
	if (!mtext || !sumtext) {
		snprintf(err, errlen, "%s is truncated: no %s", path,
			 mtext ? MANIFEST_SUM : MANIFEST);
		goto out;
	}
	char expect[20];

	snprintf(expect, sizeof(expect), "%016" PRIx64 "\n", msum);
	if (strcmp(sumtext, expect)) {
		snprintf(err, errlen, "%s: manifest.json does not match its checksum", path);
		goto out;
	}
	if (want)
		goto out_ok;
	ret = manifest_parse(mtext, msize, &mf, err, errlen);
	if (ret)
		goto out;
	ret = -EBADMSG;
	for (size_t k = 0; k < mf.nfiles; k++) {
		const struct kv_bk_ent *e = mf.by_file[k];

		if (!e)
			continue;
		if (k >= nseen || !seen[k].present) {
			snprintf(err, errlen, "%s: values/%zu is missing", path, k);
			goto out;
		}
		if (seen[k].sum != e->sum || seen[k].size != e->m.size) {
			snprintf(err, errlen, "%s: values/%zu does not match its checksum", path, k);
			goto out;
		}
	}
	for (size_t k = 0; k < nseen; k++)
		if (seen[k].present && (k >= mf.nfiles || !mf.by_file[k])) {
			snprintf(err, errlen, "%s: values/%zu is not in the manifest", path, k);
			goto out;
		}
	*out = mf;
	memset(&mf, 0, sizeof(mf));
out_ok:
	ret = 0;
out:
	kv_bk_manifest_free(&mf);
	free(mtext);
	free(sumtext);
	free(seen);
	XXH3_freeState(h);
	archive_read_free(a);
	return ret;
}
