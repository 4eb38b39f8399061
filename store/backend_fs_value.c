/*
 * The filesystem backend's value files: writing a version as a chunk map
 * plus the chunks that changed, and removing versions (superseded, reclaimed
 * after a backup, or left by a crash). The format is in backend_fs.h;
 * reading is in backend_fs_read.c.
 *
 * Why chunks: a value written in pieces (a large file copied in, an append
 * log) is flushed many times while it grows. Writing each flushed version
 * whole made that O(size^2); sharing unchanged chunks between versions makes
 * a flush cost what changed since the last one. A chunk is shared only when
 * the in-memory chunk still carries the tag (id, index, version) that this
 * backend gave it and the version the record names now lists that very
 * chunk file: anything else is rewritten, so a stale tag costs a write,
 * never a wrong byte.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <xxhash.h>
#include <zstd.h>

#include "store/backend_fs.h"
#include "store/zhint.h"
#include "util/log.h"

#define ZSTD_LEVEL 3

static const unsigned char zeros[KV_CHUNK_SIZE];

void kv_fs_value_name(char *buf, uint64_t id, uint64_t vver)
{
	snprintf(buf, KV_FS_NAME_MAX, "%02x/%" PRIx64 ".%" PRIx64, (unsigned int)(id & 0xff), id,
		 vver);
}

void kv_fs_chunk_name(char *buf, uint64_t id, uint64_t cver, size_t idx)
{
	snprintf(buf, KV_FS_NAME_MAX, "%02x/%" PRIx64 ".%" PRIx64 ".%zx",
		 (unsigned int)(id & 0xff), id, cver, idx);
}

/* XX of a name "XX/..." made by kv_fs_value_name or kv_fs_chunk_name. */
static unsigned int valdir_of(const char *name)
{
	return (unsigned int)strtoul((char[3]){ name[0], name[1], '\0' }, NULL, 16);
}

int kv_fs_valdir(struct kv_fs *fs, unsigned int xx, bool create, bool *made)
{
	char dir[3];
	int fd = fs->valdirs[xx & 0xff], expected = -1;

	if (fd >= 0)
		return fd;
	snprintf(dir, sizeof(dir), "%02x", xx & 0xff);
	fd = openat(fs->valfd, dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0 && errno == ENOENT && create) {
		if (mkdirat(fs->valfd, dir, 0700) && errno != EEXIST)
			return -errno;
		if (made)
			*made = true;
		fd = openat(fs->valfd, dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	}
	if (fd < 0) {
		/* ELOOP or ENOTDIR: something else was put where a directory must be. */
		if (errno != ENOENT)
			log_msg(NLOG_ERROR, "store", "%s/values/%s is not a directory: %s",
				fs->path, dir, strerror(errno));
		return errno == ELOOP ? -ENOTDIR : -errno;
	}
	/* Another thread may have opened it meanwhile: keep the first. */
	if (!atomic_compare_exchange_strong(&fs->valdirs[xx & 0xff], &expected, fd)) {
		close(fd);
		fd = expected;
	}
	return fd;
}

int kv_fs_val_open(struct kv_fs *fs, const char *name, int flags)
{
	int dfd = kv_fs_valdir(fs, valdir_of(name), false, NULL);
	int fd;

	if (dfd < 0)
		return dfd;
	fd = openat(dfd, name + 3, flags | O_NOFOLLOW | O_CLOEXEC);
	return fd < 0 ? -errno : fd;
}

int kv_fs_val_unlink(struct kv_fs *fs, const char *name)
{
	int dfd = kv_fs_valdir(fs, valdir_of(name), false, NULL);

	if (dfd < 0)
		return dfd;
	return unlinkat(dfd, name + 3, 0) ? -errno : 0;
}

uint32_t kv_fs_chunk_len(uint64_t size, size_t i)
{
	uint64_t left = size - (uint64_t)i * KV_CHUNK_SIZE;

	return left < KV_CHUNK_SIZE ? (uint32_t)left : KV_CHUNK_SIZE;
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

static int create(int dfd, const char *name)
{
	return openat(dfd, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
}

/*
 * Durably creates values/<final> holding the pieces: written under its final
 * name, then fsync'ed (the directory entries are synced once per batch, by
 * the caller, before the journal names the version). No temporary name and
 * rename: a name is unique per version and chunk (id, version, index), and
 * only a journal record makes a version live, which comes after this. So a
 * crash part-way leaves at most a file that no record names, which the sweep
 * at open removes before any version number is handed out again (one it
 * could not remove is replaced here); a failure here removes it at once. The rename was a quarter of a flush's time
 * (perf, 20,000 keys of 1 KiB on tmpfs).
 */
static int write_file(struct kv_fs *fs, const char *final, const struct iovec *iov, int niov,
		      bool *new_dir)
{
	const char *base = final + 3;
	uint64_t off = 0;
	int dfd, fd, ret = 0;

	dfd = kv_fs_valdir(fs, valdir_of(final), true, new_dir);
	fd = dfd < 0 ? dfd : create(dfd, base);
	if (dfd >= 0 && fd < 0 && errno == EEXIST) {
		/* Left by a crash and missed by the sweep (it could not remove
		 * it): no record can name a version this process has just
		 * numbered, so the file is garbage. */
		log_msg(NLOG_WARN, "store", "replacing %s/values/%s, left over from an "
			"unfinished commit", fs->path, final);
		fd = unlinkat(dfd, base, 0) ? -1 : create(dfd, base);
	}
	if (fd < 0) {
		ret = dfd < 0 ? dfd : -errno;
		log_msg(NLOG_ERROR, "store", "cannot create %s/values/%s: %s", fs->path, final,
			strerror(-ret));
		return ret;
	}
	/* One pwritev for the usual case; piece by piece after a short one. */
	{
		size_t total = 0;
		ssize_t n;

		for (int i = 0; i < niov; i++)
			total += iov[i].iov_len;
		do
			n = pwritev(fd, iov, niov, 0);
		while (n < 0 && errno == EINTR);
		if (n < 0)
			ret = -errno;
		else if ((size_t)n < total)
			for (int i = 0; i < niov && !ret; i++) {
				size_t have = (size_t)n > off + iov[i].iov_len ? iov[i].iov_len :
					      (size_t)n > off ? (size_t)n - off : 0;

				ret = kv_fs_pwrite_all(fd, (const uint8_t *)iov[i].iov_base + have,
						       iov[i].iov_len - have, off + have);
				off += iov[i].iov_len;
			}
	}
	if (!ret && fsync(fd))
		ret = -errno;
	if (close(fd) && !ret)
		ret = -errno;
	if (ret) {
		unlinkat(dfd, base, 0);
		log_msg(NLOG_ERROR, "store", "cannot write %s/values/%s: %s", fs->path, final,
			strerror(-ret));
	}
	return ret;
}

/* Do the chunk's bytes (have of them, zeros after) not look random? */
static bool worth_trying(const void *data, size_t have, uint32_t len)
{
	struct kv_zhint h;

	kv_zhint_init(&h, len);
	kv_zhint_add(data, have, &h);
	kv_zhint_add(NULL, len - have, &h);
	return kv_zhint_try(&h);
}

/*
 * The bytes to store for one chunk (len bytes, have of them in data, zeros
 * after): compressed into fs->zbuf when asked and it saves space, else the
 * raw pieces. Fills iov (2 slots, *niov used) and the entry's stored size and encoding.
 */
static int encode_chunk(struct kv_fs *fs, const void *data, size_t have, uint32_t len,
			bool compress, struct iovec *iov, int *niov, struct kv_fs_ent *e)
{
	size_t bound = ZSTD_compressBound(KV_CHUNK_SIZE), r;

	e->enc = KV_ENC_NONE;
	e->stored = len;
	iov[0] = (struct iovec){ (void *)data, have };
	iov[1] = (struct iovec){ (void *)zeros, len - have };
	*niov = 2;
	if (!compress)
		return 0;
	if (!worth_trying(data, have, len))
		return 0;
	if (!fs->cctx) {
		fs->cctx = ZSTD_createCCtx();
		if (!fs->cctx)
			return -ENOMEM;
		r = ZSTD_CCtx_setParameter(fs->cctx, ZSTD_c_compressionLevel, ZSTD_LEVEL);
		if (!ZSTD_isError(r))
			r = ZSTD_CCtx_setParameter(fs->cctx, ZSTD_c_checksumFlag, 1);
		if (ZSTD_isError(r)) {
			log_msg(NLOG_ERROR, "store", "backend_fs: cannot set up zstd: %s",
				ZSTD_getErrorName(r));
			ZSTD_freeCCtx(fs->cctx);
			fs->cctx = NULL;
			return -EIO;
		}
	}
	if (!fs->zbuf) {
		fs->zbuf = malloc(KV_CHUNK_SIZE + bound);
		if (!fs->zbuf)
			return -ENOMEM;
	}
	if (have < len) {
		memcpy(fs->zbuf, data, have);
		memset(fs->zbuf + have, 0, len - have);
		data = fs->zbuf;
	}
	r = ZSTD_compress2(fs->cctx, fs->zbuf + KV_CHUNK_SIZE, bound, data, len);
	if (ZSTD_isError(r)) {
		log_msg(NLOG_ERROR, "store", "backend_fs: zstd compression failed: %s",
			ZSTD_getErrorName(r));
		return -EIO;
	}
	if (r >= len)
		return 0; /* does not pay: iov still holds the raw pieces */
	e->enc = KV_ENC_ZSTD;
	e->stored = (uint32_t)r;
	iov[0] = (struct iovec){ fs->zbuf + KV_CHUNK_SIZE, r };
	*niov = 1;
	return 0;
}

static void put_le(uint8_t *p, uint64_t v, int n)
{
	for (int i = 0; i < n; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

/* Header and entries of map, in a buffer of FS_MAP_HDR + n * FS_MAP_ENT. */
static void encode_map(const struct kv_fs_map *map, uint8_t *buf)
{
	size_t len = FS_MAP_HDR + (size_t)map->n * FS_MAP_ENT;

	memcpy(buf, "nadbval2", 8);
	put_le(buf + 8, map->n, 4);
	put_le(buf + 12, map->size, 8);
	put_le(buf + 20, 0, 4);
	for (uint32_t i = 0; i < map->n; i++) {
		uint8_t *p = buf + FS_MAP_HDR + (size_t)i * FS_MAP_ENT;

		put_le(p, map->e[i].cver, 8);
		put_le(p + 8, map->e[i].stored, 4);
		p[12] = map->e[i].enc;
		p[13] = map->e[i].inl;
		p[14] = p[15] = 0;
	}
	put_le(buf + 20, XXH32(buf, len, 0), 4);
}

/* Whether chunk i of v is the chunk file prev lists for index i. */
static bool chunk_unchanged(const struct kv_value *v, size_t i, uint64_t id, uint32_t len,
			    const struct kv_fs_map *prev)
{
	struct kv_chunk_tag t;

	if (!prev || i >= prev->n || !kv_value_chunk_tag(v, i, &t))
		return false;
	return t.id == id && t.idx == i && t.ver == prev->e[i].cver && !prev->e[i].inl &&
	       kv_fs_chunk_len(prev->size, i) == len;
}

int kv_fs_value_write(struct kv_fs *fs, uint64_t id, uint64_t prev_vver, uint64_t vver,
		      const struct kv_value *v, struct kv_fs_map *map, uint64_t *stored_size,
		      uint8_t *encoding, bool *new_dir)
{
	struct kv_fs_map prev = { 0 }, *pp = NULL;
	uint64_t size = kv_value_size(v), total = 0;
	bool compress = fs->compression == KV_ENC_ZSTD && size >= fs->compression_min_size;
	char name[KV_FS_NAME_MAX];
	struct iovec iov[3];
	uint8_t *mbuf = NULL;
	size_t n = kv_value_nchunks(v), mlen;
	int niov, ret = 0;

	*map = (struct kv_fs_map){ .size = size, .n = (uint32_t)n };
	map->e = calloc(n ? n : 1, sizeof(*map->e));
	if (!map->e)
		return -ENOMEM;
	/* Only a multi-chunk value can share chunks with the version before. */
	if (n > 1 && prev_vver && kv_fs_map_read(fs, id, prev_vver, &prev, NULL) == 0)
		pp = &prev;
	*encoding = KV_ENC_NONE;

	for (size_t i = 0; i < n && n > 1; i++) {
		struct kv_fs_ent *e = &map->e[i];
		struct kv_chunk_tag t = { id, vver, (uint32_t)i };
		const void *data;
		size_t have;
		uint32_t len = (uint32_t)kv_value_chunk(v, i, &data, &have);

		if (chunk_unchanged(v, i, id, len, pp)) {
			*e = pp->e[i];
		} else if (data) {
			ret = encode_chunk(fs, data, have, len, compress, iov, &niov, e);
			if (!ret) {
				kv_fs_chunk_name(name, id, vver, i);
				ret = write_file(fs, name, iov, niov, new_dir);
			}
			if (ret)
				goto out_undo;
			e->cver = vver;
			kv_value_set_chunk_tag(v, i, &t);
		}
		total += e->stored;
		if (e->enc != KV_ENC_NONE)
			*encoding = e->enc;
	}

	mlen = FS_MAP_HDR + n * FS_MAP_ENT;
	mbuf = malloc(mlen);
	if (!mbuf) {
		ret = -ENOMEM;
		goto out_undo;
	}
	niov = 1;
	if (n == 1) {
		const void *data;
		size_t have;
		uint32_t len = (uint32_t)kv_value_chunk(v, 0, &data, &have);

		ret = encode_chunk(fs, data ? data : zeros, data ? have : len, len, compress,
				   iov + 1, &niov, &map->e[0]);
		if (ret)
			goto out_undo;
		map->e[0].cver = vver;
		map->e[0].inl = 1;
		total = map->e[0].stored;
		*encoding = map->e[0].enc;
		niov++;
	}
	encode_map(map, mbuf);
	iov[0] = (struct iovec){ mbuf, mlen };
	kv_fs_value_name(name, id, vver);
	ret = write_file(fs, name, iov, niov, new_dir);
	if (ret)
		goto out_undo;
	*stored_size = total;
	free(mbuf);
	kv_fs_map_free(&prev);
	return 0;

out_undo:
	kv_fs_value_undo(fs, id, vver, map);
	kv_fs_map_free(map);
	free(mbuf);
	kv_fs_map_free(&prev);
	return ret;
}

static void unlink_value_file(struct kv_fs *fs, const char *name)
{
	int ret = kv_fs_val_unlink(fs, name);

	if (ret && ret != -ENOENT)
		/* Only space is lost; the next open's sweep retries. */
		log_msg(NLOG_WARN, "store", "cannot remove %s/values/%s: %s", fs->path, name,
			strerror(-ret));
}

void kv_fs_value_undo(struct kv_fs *fs, uint64_t id, uint64_t vver, const struct kv_fs_map *map)
{
	char name[KV_FS_NAME_MAX];

	for (uint32_t i = 0; map->e && i < map->n; i++) {
		if (map->e[i].cver != vver || map->e[i].inl)
			continue;
		kv_fs_chunk_name(name, id, vver, i);
		unlink_value_file(fs, name);
	}
	kv_fs_value_name(name, id, vver);
	unlink_value_file(fs, name);
}

/* Drops version vver's map and its chunks, except where keep[i] is set. */
static int drop_except(struct kv_fs *fs, uint64_t id, uint64_t vver, const struct kv_fs_map *old,
		       const bool *keep)
{
	char name[KV_FS_NAME_MAX];
	int ret;

	for (uint32_t i = 0; i < old->n; i++) {
		if (!old->e[i].cver || old->e[i].inl || (keep && keep[i]))
			continue;
		kv_fs_chunk_name(name, id, old->e[i].cver, i);
		unlink_value_file(fs, name);
	}
	/* The map last: while it exists, a sweep keeps what it names. */
	kv_fs_value_name(name, id, vver);
	ret = kv_fs_val_unlink(fs, name);
	if (ret && ret != -ENOENT) {
		log_msg(NLOG_WARN, "store", "cannot remove %s/values/%s: %s", fs->path, name,
			strerror(-ret));
		return ret;
	}
	return 0;
}

/* Marks in keep[] the chunks of old that other also names. */
static void mark_shared(const struct kv_fs_map *old, const struct kv_fs_map *other, bool *keep)
{
	for (uint32_t i = 0; i < old->n && i < other->n; i++)
		if (old->e[i].cver && !other->e[i].inl && other->e[i].cver == old->e[i].cver)
			keep[i] = true;
}

int kv_fs_value_drop(struct kv_fs *fs, uint64_t id, uint64_t vver, const struct kv_fs_map *keep)
{
	struct kv_fs_map old = { 0 };
	bool *kept = NULL;
	int ret;

	ret = kv_fs_map_read(fs, id, vver, &old, NULL);
	if (ret == -ESTALE)
		return 0;
	if (ret) {
		/* Unreadable: drop the map alone; the chunks go at the next sweep. */
		old = (struct kv_fs_map){ 0 };
	}
	if (keep && old.n) {
		kept = calloc(old.n, sizeof(*kept));
		if (!kept) {
			kv_fs_map_free(&old);
			return -ENOMEM;
		}
		mark_shared(&old, keep, kept);
	}
	ret = drop_except(fs, id, vver, &old, kept);
	free(kept);
	kv_fs_map_free(&old);
	return ret;
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

/* Parses "<id>.<ver>" (a map: *idx = -1) or "<id>.<cver>.<idx>" (a chunk). */
static bool parse_value_name(const char *name, uint64_t *id, uint64_t *ver, int64_t *idx)
{
	const char *d1 = strchr(name, '.'), *d2;
	uint64_t i;

	if (!d1 || !parse_hex(name, (size_t)(d1 - name), id))
		return false;
	d2 = strchr(d1 + 1, '.');
	*idx = -1;
	if (!d2)
		return parse_hex(d1 + 1, strlen(d1 + 1), ver);
	if (!parse_hex(d1 + 1, (size_t)(d2 - d1 - 1), ver) ||
	    !parse_hex(d2 + 1, strlen(d2 + 1), &i) || i > INT64_MAX)
		return false;
	*idx = (int64_t)i;
	return true;
}

int kv_fs_value_reclaim(struct kv_fs *fs, uint64_t id, uint64_t vver)
{
	struct kv_fs_map old = { 0 };
	struct dirent *de;
	bool *keep;
	DIR *d;
	int fd, ret;

	ret = kv_fs_map_read(fs, id, vver, &old, NULL);
	if (ret == -ESTALE)
		return 0;
	if (ret || !old.n)
		return drop_except(fs, id, vver, &old, NULL);
	keep = calloc(old.n, sizeof(*keep));
	if (!keep) {
		kv_fs_map_free(&old);
		return -ENOMEM;
	}
	/* Every other map of this id on disk: the current version and those
	 * still kept for a backup. */
	/* A descriptor of its own (fdopendir takes it, and its offset), on
	 * the directory already opened without following links. */
	fd = kv_fs_valdir(fs, id & 0xff, false, NULL);
	fd = fd < 0 ? fd : openat(fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	d = fd < 0 ? NULL : fdopendir(fd);
	if (!d) {
		/* Unsure what is shared: keep every chunk, the sweep decides. */
		if (fd >= 0)
			close(fd);
		memset(keep, 1, old.n * sizeof(*keep));
	}
	while (d && (de = readdir(d))) {
		struct kv_fs_map other;
		uint64_t oid, over;
		int64_t idx;

		if (!parse_value_name(de->d_name, &oid, &over, &idx) || oid != id || idx >= 0 ||
		    over == vver)
			continue;
		if (kv_fs_map_read(fs, id, over, &other, NULL)) {
			memset(keep, 1, old.n * sizeof(*keep));
			continue;
		}
		mark_shared(&old, &other, keep);
		kv_fs_map_free(&other);
	}
	if (d)
		closedir(d);
	ret = drop_except(fs, id, vver, &old, keep);
	free(keep);
	kv_fs_map_free(&old);
	return ret;
}

static const struct kv_fs_live *find_live(const struct kv_fs_live *live, size_t n, uint64_t id)
{
	size_t lo = 0, hi = n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (live[mid].id == id)
			return &live[mid];
		if (live[mid].id < id)
			lo = mid + 1;
		else
			hi = mid;
	}
	return NULL;
}

struct chunk_file {
	uint64_t id, cver;
	size_t idx;
	char name[KV_FS_NAME_MAX];
};

static int cmp_chunk_file(const void *a, const void *b)
{
	const struct chunk_file *x = a, *y = b;

	return x->id < y->id ? -1 : x->id > y->id;
}

/* The chunk files of one directory whose id is live: kept if the live map
 * names them. Read once per id (sorted), so a large value costs one map. */
static unsigned long sweep_chunks(struct kv_fs *fs, int dfd, struct chunk_file *c, size_t n,
				  const struct kv_fs_live *live, size_t nlive)
{
	struct kv_fs_map map = { 0 };
	uint64_t map_id = 0;
	unsigned long removed = 0;
	int mret = -1;

	if (!n)
		return 0;
	qsort(c, n, sizeof(*c), cmp_chunk_file);
	for (size_t i = 0; i < n; i++) {
		const struct kv_fs_live *l = find_live(live, nlive, c[i].id);

		if (!l)
			goto remove;
		if (c[i].id != map_id || mret) {
			kv_fs_map_free(&map);
			map_id = c[i].id;
			mret = kv_fs_map_read(fs, l->id, l->vver, &map, NULL);
		}
		/* A live map that cannot be read: keep what might be its, which
		 * is never a chunk of a later version than the map's. */
		if (mret ? c[i].cver <= l->vver :
			   (c[i].idx < map.n && map.e[c[i].idx].cver == c[i].cver &&
			    !map.e[c[i].idx].inl))
			continue;
remove:
		if (unlinkat(dfd, c[i].name, 0) == 0)
			removed++;
	}
	kv_fs_map_free(&map);
	return removed;
}

void kv_fs_value_sweep(struct kv_fs *fs, const struct kv_fs_live *live, size_t nlive)
{
	unsigned long removed = 0;

	for (unsigned int xx = 0; xx < 256; xx++) {
		struct chunk_file *chunks = NULL;
		size_t nchunks = 0, cap = 0;
		struct dirent *de;
		char dir[3];
		DIR *d;
		int fd;

		snprintf(dir, sizeof(dir), "%02x", xx);
		fd = openat(fs->valfd, dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (fd < 0) {
			if (errno != ENOENT)
				log_msg(NLOG_WARN, "store", "cannot sweep %s/values/%s: %s",
					fs->path, dir, strerror(errno));
			continue;
		}
		d = fdopendir(fd);
		if (!d) {
			close(fd);
			continue;
		}
		while ((de = readdir(d))) {
			const struct kv_fs_live *l;
			uint64_t id, ver;
			int64_t idx;

			if (strncmp(de->d_name, ".tmp-", 5)) {
				if (!parse_value_name(de->d_name, &id, &ver, &idx))
					continue; /* unknown names stay */
				if ((id & 0xff) == xx && idx >= 0 &&
				    strlen(de->d_name) < KV_FS_NAME_MAX) {
					if (nchunks == cap) {
						size_t nc = cap ? 2 * cap : 64;
						struct chunk_file *p =
							realloc(chunks, nc * sizeof(*p));

						if (!p)
							continue; /* kept: no memory to judge */
						chunks = p;
						cap = nc;
					}
					chunks[nchunks].id = id;
					chunks[nchunks].cver = ver;
					chunks[nchunks].idx = (size_t)idx;
					strcpy(chunks[nchunks].name, de->d_name);
					nchunks++;
					continue;
				}
				l = find_live(live, nlive, id);
				if (idx < 0 && (id & 0xff) == xx && l && l->vver == ver)
					continue;
			}
			if (unlinkat(dirfd(d), de->d_name, 0) == 0)
				removed++;
			else if (errno != ENOENT)
				log_msg(NLOG_WARN, "store", "cannot remove %s/values/%s/%s: %s",
					fs->path, dir, de->d_name, strerror(errno));
		}
		removed += sweep_chunks(fs, dirfd(d), chunks, nchunks, live, nlive);
		free(chunks);
		closedir(d);
	}
	if (removed)
		NLOG(NLOG_INFO, "store", "removed unreferenced value files",
		     LF_STR("dir", fs->path), LF_INT("count", removed));
}
