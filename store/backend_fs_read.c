/*
 * Reading the filesystem backend's values: chunk maps and chunks (format in
 * backend_fs.h). Every file is immutable once in place, so a reader that
 * opened one sees the bytes of one version even while a commit replaces it;
 * a file that is gone means the version was superseded (-ESTALE, the store
 * re-reads its record and tries again).
 *
 * Runs on any thread, concurrently with commit(): touches only what is fixed
 * after open.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <xxhash.h>
#include <zstd.h>

#include "store/backend_fs.h"
#include "store/zstd_ctx.h"
#include "util/log.h"

/* One read covers the map of any value up to ~250 chunks, or a small
 * value's map and bytes together. */
#define FIRST_READ 4096u

static uint64_t get_le(const uint8_t *p, int n)
{
	uint64_t v = 0;

	for (int i = n - 1; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
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

static int corrupt(struct kv_fs *fs, uint64_t id, uint64_t vver, const char *why)
{
	log_msg(NLOG_ERROR, "store", "value %" PRIx64 ".%" PRIx64 " in %s is corrupt: %s", id,
		vver, fs->path, why);
	return -EIO;
}

void kv_fs_map_free(struct kv_fs_map *map)
{
	free(map->e);
	map->e = NULL;
	map->n = 0;
}

/* Parses and checks header and entries in buf[0..len). */
static int parse_map(struct kv_fs *fs, uint64_t id, uint64_t vver, uint8_t *buf, size_t len,
		     struct kv_fs_map *map)
{
	uint32_t sum = (uint32_t)get_le(buf + 20, 4);
	size_t want = FS_MAP_HDR + (size_t)map->n * FS_MAP_ENT;

	if (len < want)
		return corrupt(fs, id, vver, "map cut short");
	memset(buf + 20, 0, 4);
	if (XXH32(buf, want, 0) != sum)
		return corrupt(fs, id, vver, "map checksum mismatch");
	map->e = calloc(map->n ? map->n : 1, sizeof(*map->e));
	if (!map->e)
		return -ENOMEM;
	for (uint32_t i = 0; i < map->n; i++) {
		const uint8_t *p = buf + FS_MAP_HDR + (size_t)i * FS_MAP_ENT;
		struct kv_fs_ent *e = &map->e[i];
		uint32_t clen = kv_fs_chunk_len(map->size, i);

		e->cver = get_le(p, 8);
		e->stored = (uint32_t)get_le(p + 8, 4);
		e->enc = p[12];
		e->inl = p[13];
		if (e->enc > KV_ENC_ZSTD || e->inl > 1 || (e->inl && (map->n != 1 || e->cver != vver)) ||
		    (e->enc == KV_ENC_NONE && e->cver && e->stored != clen) ||
		    e->stored > ZSTD_compressBound(KV_CHUNK_SIZE)) {
			kv_fs_map_free(map);
			return corrupt(fs, id, vver, "bad chunk entry");
		}
	}
	map->inl_off = (uint32_t)want;
	return 0;
}

/* kv_fs_map_read, keeping the file's first FIRST_READ bytes in first
 * (*got of them): a small value's bytes come with its map. */
static int map_read(struct kv_fs *fs, uint64_t id, uint64_t vver, struct kv_fs_map *map, int *fdp,
		    uint8_t *first, ssize_t *gotp)
{
	char name[KV_FS_NAME_MAX];
	uint8_t *buf = first;
	size_t want;
	ssize_t got;
	int fd, ret;

	*map = (struct kv_fs_map){ 0 };
	kv_fs_value_name(name, id, vver);
	fd = kv_fs_val_open(fs, name, O_RDONLY);
	if (fd < 0)
		return fd == -ENOENT ? -ESTALE : fd;
	/* One pread: a short count is the end of a regular file. */
	do
		got = pread(fd, first, FIRST_READ, 0);
	while (got < 0 && errno == EINTR);
	if (got < 0)
		got = -errno;
	*gotp = got;
	if (got < 0) {
		ret = (int)got;
		goto out_close;
	}
	if ((size_t)got < FS_MAP_HDR || memcmp(first, "nadbval2", 8)) {
		ret = corrupt(fs, id, vver, "not a chunk map");
		goto out_close;
	}
	map->n = (uint32_t)get_le(first + 8, 4);
	map->size = get_le(first + 12, 8);
	/* Bounds before allocating: the count must match the size. */
	if (map->size == 0 || map->n != (map->size + KV_CHUNK_SIZE - 1) / KV_CHUNK_SIZE) {
		ret = corrupt(fs, id, vver, "chunk count does not match the size");
		goto out_close;
	}
	want = FS_MAP_HDR + (size_t)map->n * FS_MAP_ENT;
	if (want > (size_t)got) {
		ssize_t more;

		if ((size_t)got < FIRST_READ) {
			ret = corrupt(fs, id, vver, "map cut short");
			goto out_close;
		}
		buf = malloc(want);
		if (!buf) {
			ret = -ENOMEM;
			goto out_close;
		}
		memcpy(buf, first, (size_t)got);
		more = pread_full(fd, buf + got, want - (size_t)got, (uint64_t)got);
		if (more < 0) {
			ret = (int)more;
			goto out_free;
		}
		got += more;
	}
	ret = parse_map(fs, id, vver, buf, (size_t)got, map);
out_free:
	if (buf != first)
		free(buf);
out_close:
	if (ret || !fdp)
		close(fd);
	else
		*fdp = fd;
	if (ret)
		kv_fs_map_free(map);
	return ret;
}

int kv_fs_map_read(struct kv_fs *fs, uint64_t id, uint64_t vver, struct kv_fs_map *map, int *fdp)
{
	uint8_t first[FIRST_READ];
	ssize_t got;

	return map_read(fs, id, vver, map, fdp, first, &got);
}

/* The decoded bytes of chunk i of map into out (kv_fs_chunk_len bytes): from
 * the inline bytes (mapfd) or its chunk file. -ESTALE when the file is gone. */
static int read_chunk(struct kv_fs *fs, uint64_t id, uint64_t vver, const struct kv_fs_map *map,
		      int mapfd, size_t i, uint8_t *out, uint8_t *zin)
{
	const struct kv_fs_ent *e = &map->e[i];
	uint32_t len = kv_fs_chunk_len(map->size, i);
	char name[KV_FS_NAME_MAX];
	uint64_t off = 0;
	ssize_t got;
	size_t r;
	int fd = mapfd;

	if (!e->cver) {
		memset(out, 0, len);
		return 0;
	}
	if (e->inl) {
		off = map->inl_off;
	} else {
		kv_fs_chunk_name(name, id, e->cver, i);
		fd = kv_fs_val_open(fs, name, O_RDONLY);
		if (fd < 0)
			return fd == -ENOENT ? -ESTALE : fd;
	}
	got = pread_full(fd, e->enc == KV_ENC_NONE ? out : zin, e->stored, off);
	if (fd != mapfd)
		close(fd);
	if (got < 0)
		return (int)got;
	if ((size_t)got != e->stored)
		return corrupt(fs, id, vver, "chunk cut short");
	if (e->enc == KV_ENC_NONE)
		return 0;
	{
		ZSTD_DCtx *d = kv_zstd_dctx();

		if (!d)
			return -ENOMEM;
		r = ZSTD_decompressDCtx(d, out, len, zin, e->stored);
		kv_zstd_dctx_done(d);
	}
	if (ZSTD_isError(r) || r != len)
		return corrupt(fs, id, vver, "chunk does not decode");
	return 0;
}

ssize_t kv_fs_pread(struct kv_backend *b, const struct kv_meta *m, void *buf, size_t len,
		    uint64_t off)
{
	struct kv_fs *fs = (struct kv_fs *)b;
	struct kv_fs_map map;
	uint8_t *tmp = NULL, *out = buf, first[FIRST_READ];
	size_t done = 0;
	ssize_t got;
	int mapfd = -1, ret;

	if (!m->vver || off >= m->size || len == 0)
		return 0;
	if (len > m->size - off)
		len = (size_t)(m->size - off);
	if (len > SSIZE_MAX)
		len = SSIZE_MAX;
	ret = map_read(fs, m->id, m->vver, &map, &mapfd, first, &got);
	if (ret)
		return ret;
	if (map.size != m->size) {
		ret = corrupt(fs, m->id, m->vver, "size differs from its record");
		goto out_free;
	}
	if (map.n == 1 && map.e[0].inl && map.e[0].enc == KV_ENC_NONE &&
	    map.inl_off + map.e[0].stored <= FIRST_READ) {
		/* Already read with the map, unless the file is short. */
		if ((uint64_t)got != map.inl_off + map.e[0].stored) {
			ret = corrupt(fs, m->id, m->vver, "chunk cut short");
			goto out_free;
		}
		memcpy(out, first + map.inl_off + off, len);
		done = len;
	}
	while (done < len) {
		size_t i = (size_t)((off + done) / KV_CHUNK_SIZE);
		uint32_t pos = (uint32_t)((off + done) % KV_CHUNK_SIZE);
		uint32_t clen = kv_fs_chunk_len(map.size, i);
		size_t n = clen - pos < len - done ? clen - pos : len - done;
		const struct kv_fs_ent *e = &map.e[i];

		if (e->cver && e->enc == KV_ENC_NONE) {
			/* Raw bytes straight into the caller's buffer. */
			char name[KV_FS_NAME_MAX];
			int fd = mapfd;
			ssize_t got;

			if (!e->inl) {
				kv_fs_chunk_name(name, m->id, e->cver, i);
				fd = kv_fs_val_open(fs, name, O_RDONLY);
				if (fd < 0) {
					ret = fd == -ENOENT ? -ESTALE : fd;
					goto out_free;
				}
			}
			got = pread_full(fd, out + done, n, (e->inl ? map.inl_off : 0) + pos);
			if (fd != mapfd)
				close(fd);
			if (got >= 0 && (size_t)got != n)
				got = corrupt(fs, m->id, m->vver, "chunk cut short");
			if (got < 0) {
				ret = (int)got;
				goto out_free;
			}
		} else if (!e->cver) {
			memset(out + done, 0, n);
		} else {
			if (!tmp) {
				tmp = malloc(KV_CHUNK_SIZE + ZSTD_compressBound(KV_CHUNK_SIZE));
				if (!tmp) {
					ret = -ENOMEM;
					goto out_free;
				}
			}
			ret = read_chunk(fs, m->id, m->vver, &map, mapfd, i, tmp,
					 tmp + KV_CHUNK_SIZE);
			if (ret)
				goto out_free;
			memcpy(out + done, tmp + pos, n);
		}
		done += n;
	}
out_free:
	free(tmp);
	close(mapfd);
	kv_fs_map_free(&map);
	return ret ? ret : (ssize_t)done;
}

int kv_fs_read_value(struct kv_backend *b, const struct kv_meta *m, struct kv_value **out)
{
	struct kv_fs *fs = (struct kv_fs *)b;
	struct kv_fs_map map = { 0 };
	struct kv_value *v;
	uint8_t *tmp = NULL;
	int mapfd = -1, ret;

	v = kv_value_new();
	if (!v)
		return -ENOMEM;
	if (!m->vver || !m->size) {
		*out = v;
		return 0;
	}
	ret = kv_fs_map_read(fs, m->id, m->vver, &map, &mapfd);
	if (ret)
		goto out_free;
	ret = map.size != m->size ? corrupt(fs, m->id, m->vver, "size differs from its record") :
				    0;
	tmp = malloc(KV_CHUNK_SIZE + ZSTD_compressBound(KV_CHUNK_SIZE));
	if (!ret && !tmp)
		ret = -ENOMEM;
	for (size_t i = 0; !ret && i < map.n; i++) {
		/* Tagged with where they are stored, so that a later flush of
		 * this value rewrites only the chunks that change. */
		struct kv_chunk_tag t = { m->id, map.e[i].cver, (uint32_t)i };
		uint32_t len = kv_fs_chunk_len(map.size, i);

		if (!map.e[i].cver)
			continue;
		ret = read_chunk(fs, m->id, m->vver, &map, mapfd, i, tmp, tmp + KV_CHUNK_SIZE);
		if (!ret)
			ret = kv_value_write(v, tmp, len, (uint64_t)i * KV_CHUNK_SIZE);
		if (!ret && !map.e[i].inl)
			kv_value_set_chunk_tag(v, i, &t);
	}
	if (!ret)
		ret = kv_value_truncate(v, map.size);
out_free:
	free(tmp);
	if (mapfd >= 0)
		close(mapfd);
	kv_fs_map_free(&map);
	if (ret) {
		kv_value_free(v);
		return ret;
	}
	*out = v;
	return 0;
}
