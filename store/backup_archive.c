/*
 * Backup archives: a zstd-compressed tar stream of values/N entries, then
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

#include <fcntl.h>
#include <unistd.h>

#include <archive.h>
#include <archive_entry.h>
#include <xxhash.h>
#include <zstd.h>

#include "store/backup_int.h"
#include "store/kv_internal.h"

#define MANIFEST "manifest.json"
#define MANIFEST_SUM "manifest.xxh3"
#define VALUES "values/"

/* --- writer ------------------------------------------------------------- */

/*
 * The tar stream is compressed here with libzstd rather than by libarchive's
 * zstd filter: that filter writes frames without a content checksum, so a
 * flipped bit in tar padding or the end-of-archive blocks went unnoticed.
 * With ZSTD_c_checksumFlag every byte of the stream is covered, and `tar`
 * (through zstd) reads the file as usual.
 */
struct kv_bk_writer {
	struct archive *a;
	struct archive_entry *e;
	int fd;
	ZSTD_CCtx *z;
	XXH3_state_t *h;	/* of every byte written, for the trailer */
	uint8_t out[64 * 1024];
};

/*
 * The file ends with a zstd skippable frame holding XXH3-64 of every byte
 * before it: decoders (and so `tar`) skip it, and it catches the rare flip
 * that leaves the decompressed bytes unchanged (a match offset inside a run
 * of zeros, the window size): nothing in a damaged file goes unreported.
 */
#define TRAILER_MAGIC 0x184D2A5Eu
#define TRAILER_LEN 16u

static void put_le32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t get_le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static int write_all(int fd, const uint8_t *p, size_t len)
{
	while (len) {
		ssize_t n = write(fd, p, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

static int zpump(struct archive *a, struct kv_bk_writer *w, const void *buf, size_t len,
		 ZSTD_EndDirective mode)
{
	ZSTD_inBuffer in = { buf, len, 0 };
	size_t left;

	do {
		ZSTD_outBuffer out = { w->out, sizeof(w->out), 0 };
		int ret;

		left = ZSTD_compressStream2(w->z, &out, &in, mode);
		if (ZSTD_isError(left)) {
			archive_set_error(a, EIO, "zstd: %s", ZSTD_getErrorName(left));
			return -1;
		}
		XXH3_64bits_update(w->h, w->out, out.pos);
		ret = write_all(w->fd, w->out, out.pos);
		if (ret) {
			archive_set_error(a, -ret, "%s", strerror(-ret));
			return -1;
		}
	} while (mode == ZSTD_e_end ? left != 0 : in.pos < in.size);
	return 0;
}

static la_ssize_t zwrite_cb(struct archive *a, void *arg, const void *buf, size_t len)
{
	return zpump(a, arg, buf, len, ZSTD_e_continue) ? -1 : (la_ssize_t)len;
}

static int zclose_cb(struct archive *a, void *arg)
{
	return zpump(a, arg, NULL, 0, ZSTD_e_end) ? ARCHIVE_FATAL : ARCHIVE_OK;
}

int kv_bk_writer_open(int fd, struct kv_bk_writer **out, char *err, size_t errlen)
{
	struct kv_bk_writer *w = calloc(1, sizeof(*w));

	if (!w)
		return -ENOMEM;
	w->fd = fd;
	w->a = archive_write_new();
	w->e = archive_entry_new();
	w->z = ZSTD_createCCtx();
	w->h = XXH3_createState();
	if (!w->a || !w->e || !w->z || !w->h)
		goto out_free;
	XXH3_64bits_reset(w->h);
	if (ZSTD_isError(ZSTD_CCtx_setParameter(w->z, ZSTD_c_checksumFlag, 1)) ||
	    ZSTD_isError(ZSTD_CCtx_setParameter(w->z, ZSTD_c_compressionLevel, 3)))
		goto out_free;
	if (archive_write_set_format_pax_restricted(w->a) != ARCHIVE_OK ||
	    archive_write_open(w->a, w, NULL, zwrite_cb, zclose_cb) != ARCHIVE_OK) {
		snprintf(err, errlen, "cannot start the archive: %s", archive_error_string(w->a));
		goto out_free;
	}
	*out = w;
	return 0;

out_free:
	ZSTD_freeCCtx(w->z);
	XXH3_freeState(w->h);
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

	uint8_t trailer[TRAILER_LEN];
	uint64_t sum;

	if (archive_write_close(w->a) != ARCHIVE_OK) {
		snprintf(err, errlen, "cannot finish the archive: %s", archive_error_string(w->a));
		ret = -EIO;
	}
	if (!ret) {
		sum = XXH3_64bits_digest(w->h);
		put_le32(trailer, TRAILER_MAGIC);
		put_le32(trailer + 4, 8);
		put_le32(trailer + 8, (uint32_t)sum);
		put_le32(trailer + 12, (uint32_t)(sum >> 32));
		ret = write_all(w->fd, trailer, sizeof(trailer));
		if (ret)
			snprintf(err, errlen, "cannot finish the archive: %s", strerror(-ret));
	}
	archive_entry_free(w->e);
	archive_write_free(w->a);
	ZSTD_freeCCtx(w->z);
	XXH3_freeState(w->h);
	free(w);
	return ret;
}

/* --- reader ------------------------------------------------------------- */

struct seen {
	uint64_t sum, size;
	bool present;
};

/* The decompressing side: libarchive parses tar from what this hands it. */
struct zreader {
	int fd;
	ZSTD_DCtx *z;
	XXH3_state_t *h;	/* of the raw bytes before the trailer */
	uint64_t size, pos;	/* the file's size; raw bytes read so far */
	struct kv_bk_progress *pg;
	uint8_t trailer[TRAILER_LEN];
	ZSTD_inBuffer in;
	size_t frame_left;	/* ZSTD_decompressStream's last hint: 0 at a frame's end */
	bool eof;
	uint8_t ibuf[64 * 1024];
	uint8_t obuf[128 * 1024];
};

/* Raw bytes just read into ibuf: hashed up to the trailer, which is kept. */
static void raw_account(struct zreader *r, size_t n)
{
	uint64_t from = r->pos, to = r->pos + n, body_end = r->size - TRAILER_LEN;

	if (from < body_end)
		XXH3_64bits_update(r->h, r->ibuf, (size_t)((to < body_end ? to : body_end) - from));
	for (uint64_t p = from > body_end ? from : body_end; p < to && p < r->size; p++)
		r->trailer[p - body_end] = r->ibuf[p - from];
	r->pos = to;
	if (r->pg)
		atomic_fetch_add(&r->pg->bytes, n);
}

static la_ssize_t zread_cb(struct archive *a, void *arg, const void **buf)
{
	struct zreader *r = arg;

	for (;;) {
		ZSTD_outBuffer out = { r->obuf, sizeof(r->obuf), 0 };
		size_t ret;

		if (r->in.pos == r->in.size && !r->eof) {
			ssize_t n = read(r->fd, r->ibuf, sizeof(r->ibuf));

			if (n < 0) {
				archive_set_error(a, errno, "%s", strerror(errno));
				return -1;
			}
			r->eof = n == 0;
			r->in = (ZSTD_inBuffer){ r->ibuf, (size_t)n, 0 };
			raw_account(r, (size_t)n);
		}
		if (r->in.pos == r->in.size && r->eof) {
			if (r->frame_left) {
				archive_set_error(a, EBADMSG, "truncated (the zstd frame ends early)");
				return -1;
			}
			return 0;
		}
		ret = ZSTD_decompressStream(r->z, &out, &r->in);
		if (ZSTD_isError(ret)) {
			archive_set_error(a, EBADMSG, "zstd: %s", ZSTD_getErrorName(ret));
			return -1;
		}
		r->frame_left = ret;
		if (out.pos) {
			*buf = r->obuf;
			return (la_ssize_t)out.pos;
		}
	}
}

/* After the tar end: the rest of the stream must decompress too, up to and
 * including the frame's checksum, which covers every byte. */
static int zdrain(struct archive *a, struct zreader *r)
{
	const void *buf;
	la_ssize_t n;

	while ((n = zread_cb(a, r, &buf)) > 0)
		;
	if (n < 0)
		return -EBADMSG;
	uint64_t sum = XXH3_64bits_digest(r->h);

	if (r->pos != r->size || get_le32(r->trailer) != TRAILER_MAGIC ||
	    get_le32(r->trailer + 4) != 8 || get_le32(r->trailer + 8) != (uint32_t)sum ||
	    get_le32(r->trailer + 12) != (uint32_t)(sum >> 32)) {
		archive_set_error(a, EBADMSG, "the whole-file checksum does not match");
		return -EBADMSG;
	}
	return 0;
}

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

void kv_bk_progress_start(struct kv_bk_progress *pg, int op)
{
	if (op) {
		atomic_store(&pg->keys, 0);
		atomic_store(&pg->keys_total, 0);
		atomic_store(&pg->bytes, 0);
		atomic_store(&pg->bytes_total, 0);
	}
	atomic_store(&pg->op, op);
}

int kv_bk_read(const char *path, const struct kv_bk_manifest *want, kv_bk_value_fn fn,
	       void *arg, struct kv_bk_manifest *out, struct kv_bk_progress *pg, char *err,
	       size_t errlen)
{
	struct archive *a = archive_read_new();
	struct zreader *zr = NULL;
	struct stat st;
	struct archive_entry *ae;
	XXH3_state_t *h = XXH3_createState();
	struct seen *seen = NULL;
	size_t nseen = 0, nvalues = 0;
	char *mtext = NULL, *sumtext = NULL;
	uint64_t msize = 0, msum = 0;
	struct kv_bk_manifest mf = { 0 };
	int r, ret = -EBADMSG;

	if (!a || !h) {
		ret = -ENOMEM;
		goto out;
	}
	zr = calloc(1, sizeof(*zr));
	if (zr)
		zr->fd = -1;
	if (!zr || !(zr->z = ZSTD_createDCtx())) {
		ret = -ENOMEM;
		goto out;
	}
	zr->fd = open(path, O_RDONLY | O_CLOEXEC);
	if (zr->fd < 0 || fstat(zr->fd, &st)) {
		ret = -errno;
		snprintf(err, errlen, "cannot read %s: %s", path, strerror(errno));
		goto out;
	}
	zr->size = (uint64_t)st.st_size;
	zr->pg = pg;
	if (pg)
		atomic_fetch_add(&pg->bytes_total, zr->size);
	if (zr->size < TRAILER_LEN || !(zr->h = XXH3_createState())) {
		snprintf(err, errlen, "%s is truncated", path);
		goto out;
	}
	XXH3_64bits_reset(zr->h);
	archive_read_support_filter_none(a);
	archive_read_support_format_tar(a);
	if (archive_read_open(a, zr, NULL, zread_cb, NULL) != ARCHIVE_OK) {
		snprintf(err, errlen, "%s is damaged: %s", path, archive_error_string(a));
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
			/* Written as values/0, values/1, ...: anything else is
			 * damage (and never makes us allocate for a huge N). */
			if (*end || errno || k != nvalues) {
				snprintf(err, errlen, "%s: unexpected entry %s", path, name);
				goto out;
			}
			nvalues++;
			if (pg)
				atomic_fetch_add(&pg->keys, 1);
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
	if (r != ARCHIVE_EOF || zdrain(a, zr)) {
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
	ret = kv_bk_manifest_parse(mtext, msize, &mf, err, errlen);
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
	if (zr) {
		if (zr->fd >= 0)
			close(zr->fd);
		XXH3_freeState(zr->h);
		ZSTD_freeDCtx(zr->z);
		free(zr);
	}
	return ret;
}
