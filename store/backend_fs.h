/*
 * The filesystem backend's private interface, shared by its files:
 * backend_fs.c (open, lock, layout, commit), backend_fs_meta.c (load,
 * snapshot, compaction) and backend_fs_value.c (value files).
 *
 * Layout of one store, below DATA/stores/<db>/<ns>/ (each name percent-encoded):
 *
 *	lock			flock()ed by the owning daemon, holds its pid
 *	meta/snapshot		every live record as of journal generation G
 *	meta/journal.<N>	commits after the snapshot, N = G+1, G+2, ...
 *	values/<xx>/<id>.<vver>	the chunk map of one stored value version (hex; xx = id & 0xff)
 *	values/<xx>/<id>.<cver>.<i>  chunk i of that id, written by the commit of version cver
 *
 * Locking: the flock makes one process the owner. Inside it, commit() (and
 * load() before it) run on one thread at a time and own every mutable field
 * of struct kv_fs; pread(), read_value() and statfs() read only fields that
 * are fixed after open (the directory fds, the paths), so they need no lock.
 */
#ifndef NADB_STORE_BACKEND_FS_H
#define NADB_STORE_BACKEND_FS_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "store/backend.h"

struct journal;
struct ZSTD_CCtx_s;

/* Record types of the journal and the snapshot (store/journal.h framing). */
enum {
	FS_REC_JHEADER = 1,	/* journal: "nadbjrnl", u32 version, u64 generation */
	/* journal: u32 count, then per op u8 PUT + record or u8 DEL + u64 id */
	FS_REC_BATCH = 2,
	FS_REC_SHEADER = 3,	/* snapshot: "nadbsnap", u32 version, u64 gen, max_id, max_vver */
	FS_REC_SRECORDS = 4,	/* snapshot: encoded records back to back */
	FS_REC_SEND = 5,	/* snapshot: u64 record count; the last record */
};

/* 2: values as chunk maps + chunk files (1 stored each value whole). */
#define FS_FORMAT_VERSION 2u

struct kv_fs {
	struct kv_backend base;
	/* Fixed after open. */
	char *data_dir;		/* as given, for messages */
	char *path;		/* the store's directory */
	int dirfd, metafd, valfd, lockfd;
	/*
	 * values/XX for each XX, opened once with O_NOFOLLOW and kept (-1 until
	 * first use): no path under values/ is resolved again, so a symlink
	 * planted there cannot send a value write outside the data directory.
	 * Set once by whichever thread opens it first (readers run on FUSE
	 * workers, writes on the committing thread).
	 */
	_Atomic int valdirs[256];
	enum kv_encoding compression;
	uint64_t compression_min_size;

	/* Owned by the committing thread. */
	bool loaded;
	bool valdir_durable[256];	/* values/XX's own entry is known on disk */
	struct journal *j;	/* meta/journal.<cur_gen>; takes new commits */
	uint64_t snap_gen;	/* the snapshot holds journals <= this (0: no snapshot) */
	uint64_t cur_gen;
	uint64_t snap_size;	/* bytes, for the compaction threshold */
	uint64_t compact_hold;	/* after a failed rotation: no new try below this journal size */
	uint64_t max_id;	/* highest id ever committed */
	uint64_t next_vver;	/* never reused: every commit of a value takes a new one */
	struct ZSTD_CCtx_s *cctx;
	uint8_t *zbuf;		/* a chunk being compressed: input, then output */
	uint8_t *jbuf;		/* the batch being encoded, kept between commits */
	size_t jcap;
};

/* An (id, vver) pair that load() found live; the sweep keeps those files. */
struct kv_fs_live {
	uint64_t id, vver;
};

/* backend_fs.c */
/* Lists meta/: the journal generations (sorted; the caller frees them) and
 * whether a snapshot exists; removes a snapshot.tmp left by a crash. */
int kv_fs_list_meta(struct kv_fs *fs, bool *snapshot, uint64_t **gens, size_t *ngens);

/* backend_fs_meta.c */
int kv_fs_load(struct kv_backend *b, kv_load_fn fn, void *arg, uint64_t *max_id);
/* Rotates the journal and folds the old ones into a new snapshot. Failures
 * are logged and leave a loadable store; the return value is informative. */
int kv_fs_compact(struct kv_fs *fs);
bool kv_fs_should_compact(const struct kv_fs *fs);

/* backend_fs_value.c, backend_fs_read.c: values. A stored version is a chunk
 * map file values/xx/<id>.<vver> (header, one entry per KV_CHUNK_SIZE chunk):
 *
 *	"nadbval2" | u32 nchunks | u64 size | u32 XXH32(header with 0 here + entries)
 *	entries:   u64 cver | u32 stored | u8 encoding | u8 inline | u16 0
 *	then, when the value is a single chunk, that chunk's bytes (inline = 1)
 *
 * A multi-chunk value's chunk i lives in values/xx/<id>.<cver>.<i> (cver 0: a
 * hole, zeros), written by the commit that made version cver and shared by
 * every later version of the id that did not change it: a flush writes only
 * the chunks that changed. Encoding per chunk: raw, or one zstd frame with a
 * checksum. A file is written once, under its final name, before any record
 * names its version, and never changed after. */
#define FS_MAP_HDR 24u
#define FS_MAP_ENT 16u
struct kv_fs_ent {
	uint64_t cver;		/* 0: a hole */
	uint32_t stored;	/* bytes in the file (after compression) */
	uint8_t enc;		/* enum kv_encoding */
	uint8_t inl;		/* the bytes follow the map (single-chunk values) */
};
struct kv_fs_map {
	uint64_t size;
	uint32_t n;
	struct kv_fs_ent *e;	/* n entries, owned */
	uint32_t inl_off;	/* where the inline bytes start in the map file */
};
/* KV_CHUNK_SIZE bytes, or the last chunk's remainder. */
uint32_t kv_fs_chunk_len(uint64_t size, size_t i);
/* "xx/<id>.<vver>" relative to valfd; buf holds at least KV_FS_NAME_MAX. */
#define KV_FS_NAME_MAX 64
/* Writes all of data at off, retrying short writes and EINTR. 0 or -errno. */
int kv_fs_pwrite_all(int fd, const void *data, size_t len, uint64_t off);
void kv_fs_value_name(char *buf, uint64_t id, uint64_t vver);
void kv_fs_chunk_name(char *buf, uint64_t id, uint64_t cver, size_t idx);
/* The descriptor of values/XX (XX = id & 0xff), made first if create (then
 * *made is set: the caller syncs values/). Owned by fs; -errno. */
int kv_fs_valdir(struct kv_fs *fs, unsigned int xx, bool create, bool *made);
/* openat and unlinkat of a name from kv_fs_value_name or kv_fs_chunk_name,
 * never following a symlink; -errno (open: the descriptor). */
int kv_fs_val_open(struct kv_fs *fs, const char *name, int flags);
int kv_fs_val_unlink(struct kv_fs *fs, const char *name);
/* Reads and checks the map of (id, vver): -ESTALE when it is gone, -EIO when
 * damaged. *fdp (if not NULL) receives the open map file, for inline bytes. */
int kv_fs_map_read(struct kv_fs *fs, uint64_t id, uint64_t vver, struct kv_fs_map *map, int *fdp);
void kv_fs_map_free(struct kv_fs_map *map);
/*
 * Writes v durably as version vver of id (changed chunks, then the map:
 * each created under its final name and fsync'ed); the caller fsyncs the
 * directory before the journal names the version.
 * prev_vver: the version the record names now (0: none); its chunks that
 * are tagged as unchanged are shared, not rewritten. *map receives the new
 * map (for undo and for dropping prev). *new_dir: values/xx was created.
 */
int kv_fs_value_write(struct kv_fs *fs, uint64_t id, uint64_t prev_vver, uint64_t vver,
		      const struct kv_value *v, struct kv_fs_map *map, uint64_t *stored_size,
		      uint8_t *encoding, bool *new_dir);
/* Removes the files of version vver written by its own commit (a failed one). */
void kv_fs_value_undo(struct kv_fs *fs, uint64_t id, uint64_t vver, const struct kv_fs_map *map);
/* Removes version vver of id: its map and its chunks, except those keep (the
 * version replacing it, or NULL) still names. A missing file is fine. */
int kv_fs_value_drop(struct kv_fs *fs, uint64_t id, uint64_t vver, const struct kv_fs_map *keep);
/* As drop, keeping the chunks that any other map of id on disk names (a
 * version kept for a backup shares chunks with the current one). */
int kv_fs_value_reclaim(struct kv_fs *fs, uint64_t id, uint64_t vver);
/* Removes temp files, maps no live record names, and chunks no live map
 * names. live is sorted by id. */
void kv_fs_value_sweep(struct kv_fs *fs, const struct kv_fs_live *live, size_t nlive);
ssize_t kv_fs_pread(struct kv_backend *b, const struct kv_meta *m, void *buf, size_t len,
		    uint64_t off);
int kv_fs_read_value(struct kv_backend *b, const struct kv_meta *m, struct kv_value **out);

/* Test hooks. */
/* Journal size that triggers compaction, at least; the snapshot's size
 * raises it (default 8 MiB). Not thread-safe: set it before opening. */
void kv_fs_set_compact_threshold(uint64_t bytes);
/* The store's directory (DATA/stores/<db>/<ns>). */
const char *kv_fs_store_path(const struct kv_backend *b);

#endif
