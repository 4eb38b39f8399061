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
 *	values/<xx>/<id>.<vver>	one file per stored value version (hex; xx = id & 0xff)
 *
 * Locking: the flock makes one process the owner. Inside it, commit() (and
 * load() before it) run on one thread at a time and own every mutable field
 * of struct kv_fs; pread(), read_value() and statfs() read only fields that
 * are fixed after open (the directory fds, the paths), so they need no lock.
 */
#ifndef NADB_STORE_BACKEND_FS_H
#define NADB_STORE_BACKEND_FS_H

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

#define FS_FORMAT_VERSION 1u

struct kv_fs {
	struct kv_backend base;
	/* Fixed after open. */
	char *data_dir;		/* as given, for messages */
	char *path;		/* the store's directory */
	int dirfd, metafd, valfd, lockfd;
	enum kv_encoding compression;
	uint64_t compression_min_size;

	/* Owned by the committing thread. */
	bool loaded;
	struct journal *j;	/* meta/journal.<cur_gen>; takes new commits */
	uint64_t snap_gen;	/* the snapshot holds journals <= this (0: no snapshot) */
	uint64_t cur_gen;
	uint64_t snap_size;	/* bytes, for the compaction threshold */
	uint64_t compact_hold;	/* after a failed rotation: no new try below this journal size */
	uint64_t max_id;	/* highest id ever committed */
	uint64_t next_vver;	/* never reused: every commit of a value takes a new one */
	struct ZSTD_CCtx_s *cctx;
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

/* backend_fs_value.c */
/* "xx/<id>.<vver>" relative to valfd; buf holds at least KV_FS_NAME_MAX. */
#define KV_FS_NAME_MAX 64
/* Writes all of data at off, retrying short writes and EINTR. 0 or -errno. */
int kv_fs_pwrite_all(int fd, const void *data, size_t len, uint64_t off);
void kv_fs_value_name(char *buf, uint64_t id, uint64_t vver);
/* Writes v durably as values/xx/<id>.<vver> (temp file, fsync, rename); the
 * caller fsyncs the directory. *new_dir: values/xx was created. */
int kv_fs_value_write(struct kv_fs *fs, uint64_t id, uint64_t vver, const struct kv_value *v,
		      uint64_t *stored_size, uint8_t *encoding, bool *new_dir);
/* Removes a value file; a missing one is fine. */
int kv_fs_value_unlink(struct kv_fs *fs, uint64_t id, uint64_t vver);
/* Removes temp files and value files no live record names. live is sorted by id. */
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
