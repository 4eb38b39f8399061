/*
 * The filesystem backend's value files: values/<xx>/<id>.<vver>, written once
 * under a fresh version and never modified, so a reader that opened one sees
 * one whole version even while a commit replaces it. Compressed values are
 * single zstd frames with a content checksum; the encoding is recorded in the
 * metadata, never guessed from the bytes.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <zstd.h>

#include "store/backend_fs.h"
#include "util/log.h"

#define ZSTD_LEVEL 3
#define READ_BUF ((size_t)128 * 1024)

void kv_fs_value_name(char *buf, uint64_t id, uint64_t vver)
{
	snprintf(buf, KV_FS_NAME_MAX, "%02x/%" PRIx64 ".%" PRIx64, (unsigned int)(id & 0xff), id,
		 vver);
}

static void tmp_name(char *buf, uint64_t id, uint64_t vver)
{
	snprintf(buf, KV_FS_NAME_MAX, "%02x/.tmp-%" PRIx64 "-%" PRIx64, (unsigned int)(id & 0xff),
		 id, vver);
}

int kv_fs_pwrite_all(int fd, const void *data, size_t len, uint64_t off)
{
	const uint8_t *p = data;

	while (len) {
		ssize_t n = pwrite(fd, p, len, (off_t)off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			return -EIO;
		p += n;
		len -= (size_t)n;
		off += (uint64_t)n;
	}
	return 0;
}

struct raw_writer {
	int fd;
	uint64_t off;
};

static int raw_piece(const void *data, size_t len, void *arg)
{
	struct raw_writer *w = arg;
	int ret = kv_fs_pwrite_all(w->fd, data, len, w->off);

	w->off += len;
	return ret;
}

/* Gave up compressing: the output would not be smaller than the input. */
#define NO_GAIN 1

struct zwriter {
	ZSTD_CCtx *cctx;
	int fd;
	uint64_t off, limit;
	ZSTD_outBuffer out;
};

static int zflush(struct zwriter *z)
{
	int ret;

	if (z->off + z->out.pos >= z->limit)
		return NO_GAIN;
	ret = kv_fs_pwrite_all(z->fd, z->out.dst, z->out.pos, z->off);
	z->off += z->out.pos;
	z->out.pos = 0;
	return ret;
}

static int zcompress(struct zwriter *z, const void *data, size_t len, ZSTD_EndDirective mode)
{
	ZSTD_inBuffer in = { data, len, 0 };
	size_t left;
	int ret;

	do {
		left = ZSTD_compressStream2(z->cctx, &z->out, &in, mode);
		if (ZSTD_isError(left)) {
			log_msg(NLOG_ERROR, "store", "backend_fs: zstd compression failed: %s",
				ZSTD_getErrorName(left));
			return -EIO;
		}
		if (z->out.pos == z->out.size || (mode == ZSTD_e_end && z->out.pos)) {
			ret = zflush(z);
			if (ret)
				return ret;
		}
	} while (mode == ZSTD_e_end ? left != 0 : in.pos < in.size);
	return 0;
}

static int zpiece(const void *data, size_t len, void *arg)
{
	return zcompress(arg, data, len, ZSTD_e_continue);
}

/* Writes v compressed into fd; NO_GAIN when that does not save a byte. */
static int write_zstd(struct kv_fs *fs, int fd, const struct kv_value *v, uint64_t *stored)
{
	struct zwriter z = { .fd = fd, .limit = kv_value_size(v) };
	size_t r;
	int ret;

	if (!fs->cctx) {
		fs->cctx = ZSTD_createCCtx();
		if (!fs->cctx)
			return -ENOMEM;
	}
	z.cctx = fs->cctx;
	ZSTD_CCtx_reset(z.cctx, ZSTD_reset_session_and_parameters);
	r = ZSTD_CCtx_setParameter(z.cctx, ZSTD_c_compressionLevel, ZSTD_LEVEL);
	if (!ZSTD_isError(r))
		r = ZSTD_CCtx_setParameter(z.cctx, ZSTD_c_checksumFlag, 1);
	if (!ZSTD_isError(r))
		r = ZSTD_CCtx_setPledgedSrcSize(z.cctx, kv_value_size(v));
	if (ZSTD_isError(r)) {
		log_msg(NLOG_ERROR, "store", "backend_fs: cannot set up zstd: %s",
			ZSTD_getErrorName(r));
		return -EIO;
	}
	z.out.size = ZSTD_CStreamOutSize();
	z.out.dst = malloc(z.out.size);
	if (!z.out.dst)
		return -ENOMEM;
	ret = kv_value_foreach(v, zpiece, &z);
	if (!ret)
		ret = zcompress(&z, NULL, 0, ZSTD_e_end);
	free(z.out.dst);
	*stored = z.off;
	return ret;
}

int kv_fs_value_write(struct kv_fs *fs, uint64_t id, uint64_t vver, const struct kv_value *v,
		      uint64_t *stored_size, uint8_t *encoding, bool *new_dir)
{
	char tmp[KV_FS_NAME_MAX], final[KV_FS_NAME_MAX];
	uint64_t size = kv_value_size(v);
	struct raw_writer w;
	int fd, ret = NO_GAIN;

	tmp_name(tmp, id, vver);
	kv_fs_value_name(final, id, vver);
	fd = openat(fs->valfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0 && errno == ENOENT) {
		char dir[3] = { final[0], final[1], '\0' };

		if (mkdirat(fs->valfd, dir, 0700) && errno != EEXIST)
			goto out_err;
		*new_dir = true;
		fd = openat(fs->valfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	}
	if (fd < 0)
		goto out_err;

	if (fs->compression == KV_ENC_ZSTD && size >= fs->compression_min_size) {
		ret = write_zstd(fs, fd, v, stored_size);
		if (!ret)
			*encoding = KV_ENC_ZSTD;
	}
	if (ret == NO_GAIN) {
		/* Whatever compressed bytes got out are overwritten, then cut. */
		w = (struct raw_writer){ .fd = fd };
		ret = kv_value_foreach(v, raw_piece, &w);
		if (!ret && ftruncate(fd, (off_t)size))
			ret = -errno;
		*stored_size = size;
		*encoding = KV_ENC_NONE;
	}
	if (!ret && fsync(fd))
		ret = -errno;
	if (close(fd) && !ret)
		ret = -errno;
	if (!ret && renameat(fs->valfd, tmp, fs->valfd, final))
		ret = -errno;
	if (ret) {
		unlinkat(fs->valfd, tmp, 0);
		log_msg(NLOG_ERROR, "store", "cannot write %s/values/%s: %s", fs->path, final,
			strerror(-ret));
	}
	return ret;

out_err:
	ret = -errno;
	log_msg(NLOG_ERROR, "store", "cannot create %s/values/%s: %s", fs->path, tmp,
		strerror(-ret));
	return ret;
}

int kv_fs_value_unlink(struct kv_fs *fs, uint64_t id, uint64_t vver)
{
	char name[KV_FS_NAME_MAX];

	kv_fs_value_name(name, id, vver);
	if (unlinkat(fs->valfd, name, 0) && errno != ENOENT) {
		/* Only space is lost; the next open's sweep retries. */
		log_msg(NLOG_WARN, "store", "cannot remove %s/values/%s: %s", fs->path, name,
			strerror(errno));
		return -errno;
	}
	return 0;
}

static bool parse_hex(const char *s, size_t len, uint64_t *out)
{
	uint64_t v = 0;

	if (len == 0 || len > 16)
		return false;
	for (size_t i = 0; i < len; i++) {
		char c = s[i];
		int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;

		if (d < 0)
			return false;
		v = v << 4 | (uint64_t)d;
	}
	*out = v;
	return true;
}

static bool is_live(const struct kv_fs_live *live, size_t n, uint64_t id, uint64_t vver)
{
	size_t lo = 0, hi = n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (live[mid].id == id)
			return live[mid].vver == vver;
		if (live[mid].id < id)
			lo = mid + 1;
		else
			hi = mid;
	}
	return false;
}

/* Whether values/<xx>/<name> is garbage: a temp file of an interrupted
 * commit, or a version no record names (a commit that crashed before its
 * journal record, or an unlink that did not happen). Unknown names stay. */
static bool is_garbage(const char *name, unsigned int xx, const struct kv_fs_live *live,
		       size_t nlive)
{
	const char *dot = strchr(name, '.');
	uint64_t id, vver;

	if (!strncmp(name, ".tmp-", 5))
		return true;
	if (!dot || !parse_hex(name, (size_t)(dot - name), &id) ||
	    !parse_hex(dot + 1, strlen(dot + 1), &vver))
		return false;
	return (id & 0xff) != xx || !is_live(live, nlive, id, vver);
}

void kv_fs_value_sweep(struct kv_fs *fs, const struct kv_fs_live *live, size_t nlive)
{
	unsigned long removed = 0;

	for (unsigned int xx = 0; xx < 256; xx++) {
		struct dirent *de;
		char dir[3];
		DIR *d;
		int fd;

		snprintf(dir, sizeof(dir), "%02x", xx);
		fd = openat(fs->valfd, dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (fd < 0)
			continue;
		d = fdopendir(fd);
		if (!d) {
			close(fd);
			continue;
		}
		while ((de = readdir(d))) {
			if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
				continue;
			if (!is_garbage(de->d_name, xx, live, nlive))
				continue;
			if (unlinkat(dirfd(d), de->d_name, 0) == 0)
				removed++;
			else if (errno != ENOENT)
				log_msg(NLOG_WARN, "store", "cannot remove %s/values/%s/%s: %s",
					fs->path, dir, de->d_name, strerror(errno));
		}
		closedir(d);
	}
	if (removed)
		NLOG(NLOG_INFO, "store", "removed unreferenced value files",
		     LF_STR("dir", fs->path), LF_INT("count", removed));
}

/* Opens the stored file m names; -ESTALE when that version is gone. */
static int open_value(struct kv_fs *fs, const struct kv_meta *m)
{
	char name[KV_FS_NAME_MAX];
	struct stat st;
	int fd;

	kv_fs_value_name(name, m->id, m->vver);
	fd = openat(fs->valfd, name, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return errno == ENOENT ? -ESTALE : -errno;
	if (fstat(fd, &st)) {
		close(fd);
		return -errno;
	}
	if ((uint64_t)st.st_size != m->stored_size ||
	    (m->encoding == KV_ENC_NONE && m->stored_size != m->size)) {
		log_msg(NLOG_ERROR, "store",
			"%s/values/%s has %lld bytes; its record says %" PRIu64, fs->path, name,
			(long long)st.st_size, m->stored_size);
		close(fd);
		return -EIO;
	}
	return fd;
}

static ssize_t pread_full(int fd, void *buf, size_t len, uint64_t off)
{
	size_t done = 0;

	while (done < len) {
		ssize_t n = pread(fd, (uint8_t *)buf + done, len - done, (off_t)(off + done));

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			break;
		done += (size_t)n;
	}
	return (ssize_t)done;
}

/* Called with each decoded piece, in order, at its offset in the value;
 * a non-zero return stops decoding (and is returned). */
typedef int (*piece_fn)(const uint8_t *data, size_t len, uint64_t off, void *arg);

/* Positive: the consumer has all it wants. */
#define ENOUGH 1

/* Decodes the whole stored value (or until fn says ENOUGH), checking that it
 * has exactly m->size bytes. */
static int decode_value(struct kv_fs *fs, int fd, const struct kv_meta *m, piece_fn fn, void *arg)
{
	ZSTD_DCtx *dctx = NULL;
	ZSTD_inBuffer in = { NULL, 0, 0 };
	uint8_t *inbuf = NULL, *outbuf = NULL;
	uint64_t in_off = 0, out_off = 0;
	size_t outsize = ZSTD_DStreamOutSize(), r = 1;
	int ret = 0;

	inbuf = malloc(READ_BUF);
	if (m->encoding == KV_ENC_NONE) {
		if (!inbuf)
			return -ENOMEM;
		while (!ret && out_off < m->size) {
			ssize_t n = pread_full(fd, inbuf, READ_BUF, out_off);

			if (n <= 0) {
				ret = n < 0 ? (int)n : -EIO;
				break;
			}
			ret = fn(inbuf, (size_t)n, out_off, arg);
			out_off += (uint64_t)n;
		}
		goto out_free;
	}

	dctx = ZSTD_createDCtx();
	outbuf = malloc(outsize);
	if (!inbuf || !dctx || !outbuf) {
		ret = -ENOMEM;
		goto out_free;
	}
	in.src = inbuf;
	while (!ret) {
		ZSTD_outBuffer out = { outbuf, outsize, 0 };

		if (in.pos == in.size) {
			/* r == 0: the last call ended a frame (checksum matched). */
			if (in_off == m->stored_size && r == 0)
				break;
			if (in_off < m->stored_size) {
				ssize_t n = pread_full(fd, inbuf, READ_BUF, in_off);

				if (n <= 0) {
					ret = n < 0 ? (int)n : -EIO;
					break;
				}
				in.size = (size_t)n;
				in.pos = 0;
				in_off += (uint64_t)n;
			}
		}
		r = ZSTD_decompressStream(dctx, &out, &in);
		if (ZSTD_isError(r) || out.pos > m->size - out_off) {
			ret = -EIO;
			break;
		}
		if (out.pos)
			ret = fn(outbuf, out.pos, out_off, arg);
		out_off += out.pos;
		/* Output may still be pending after the last input byte; with
		 * neither input nor progress left, the frame was cut short. */
		if (r != 0 && !out.pos && in.pos == in.size && in_off == m->stored_size)
			ret = -EIO;
	}
	if (!ret && out_off != m->size)
		ret = -EIO;
out_free:
	if (ret == ENOUGH)
		ret = 0;
	else if (!ret && out_off != m->size)
		ret = -EIO;
	if (ret == -EIO)
		log_msg(NLOG_ERROR, "store", "value %" PRIx64 ".%" PRIx64 " in %s is corrupt",
			m->id, m->vver, fs->path);
	ZSTD_freeDCtx(dctx);
	free(outbuf);
	free(inbuf);
	return ret;
}

struct range {
	uint8_t *buf;
	uint64_t off, len, got;
};

static int copy_range(const uint8_t *data, size_t len, uint64_t off, void *arg)
{
	struct range *rg = arg;
	uint64_t end = rg->off + rg->len;

	if (off + len > rg->off && off < end) {
		uint64_t from = off > rg->off ? off : rg->off;
		uint64_t to = off + len < end ? off + len : end;

		memcpy(rg->buf + (from - rg->off), data + (from - off), to - from);
		rg->got = to - rg->off;
	}
	return off + len >= end ? ENOUGH : 0;
}

ssize_t kv_fs_pread(struct kv_backend *b, const struct kv_meta *m, void *buf, size_t len,
		    uint64_t off)
{
	struct kv_fs *fs = (struct kv_fs *)b;
	struct range rg = { .buf = buf, .off = off };
	ssize_t ret;
	int fd;

	if (!m->vver || off >= m->size || len == 0)
		return 0;
	if (len > m->size - off)
		len = (size_t)(m->size - off);
	if (len > SSIZE_MAX)
		len = SSIZE_MAX;
	fd = open_value(fs, m);
	if (fd < 0)
		return fd;
	if (m->encoding == KV_ENC_NONE) {
		ret = pread_full(fd, buf, len, off);
	} else {
		/* Decoded from the start each time: the store keeps a
		 * compressed value in memory while it is open instead. */
		rg.len = len;
		ret = decode_value(fs, fd, m, copy_range, &rg);
		if (!ret)
			ret = (ssize_t)rg.got;
	}
	close(fd);
	return ret;
}

static int append_piece(const uint8_t *data, size_t len, uint64_t off, void *arg)
{
	return kv_value_write(arg, data, len, off);
}

int kv_fs_read_value(struct kv_backend *b, const struct kv_meta *m, struct kv_value **out)
{
	struct kv_fs *fs = (struct kv_fs *)b;
	struct kv_value *v;
	int fd, ret;

	v = kv_value_new();
	if (!v)
		return -ENOMEM;
	if (!m->vver || !m->size) {
		*out = v;
		return 0;
	}
	fd = open_value(fs, m);
	if (fd < 0) {
		kv_value_free(v);
		return fd;
	}
	ret = decode_value(fs, fd, m, append_piece, v);
	close(fd);
	if (ret) {
		kv_value_free(v);
		return ret;
	}
	*out = v;
	return 0;
}
