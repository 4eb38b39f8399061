/*
 * Private to store/backup*.c: the manifest in memory and the archive reader
 * and writer (backup_archive.c, the only libarchive user), the restore
 * (backup_restore.c) and what backup.c shares with it.
 */
#ifndef NADB_STORE_BACKUP_INT_H
#define NADB_STORE_BACKUP_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "store/backend.h"
#include "store/backup.h"
#include "store/value.h"

#define KV_BK_FORMAT 1

/* One key or directory of a manifest. */
struct kv_bk_ent {
	char *path;		/* "a/b/c"; "" for the root */
	/* mode, uid, gid, times, expires_ms, size, tags, xattrs; name unused */
	struct kv_meta m;
	uint64_t sum;		/* XXH3-64 of the value (keys) */
	int64_t file;		/* N of values/N in this archive; -1: none */
	bool win;		/* restore: this entry is the one to restore */
};

struct kv_bk_manifest {
	char *id, *parent;	/* parent NULL for a full backup */
	int64_t started_ms, finished_ms;
	uint64_t total_keys;	/* keys in this backup's whole state */
	uint64_t bytes;		/* value bytes in this archive */
	struct kv_bk_ent *keys;	/* changed (or all, when full) keys */
	size_t nkeys;
	struct kv_bk_ent *dirs;	/* every directory, the root first */
	size_t ndirs;
	char **deleted;		/* paths deleted since the parent */
	size_t ndeleted;
	char **declared;	/* tags made with mkdir */
	size_t ndeclared;
	struct kv_bk_ent **by_file; /* values/N -> its key entry */
	size_t nfiles;
};

void kv_bk_manifest_free(struct kv_bk_manifest *mf);
/* backup_manifest.c: the manifest as JSON text (malloc'd), for the archive;
 * and back, every field checked (-EBADMSG with err). */
char *kv_bk_manifest_dump(const struct kv_bk_manifest *mf);
int kv_bk_manifest_parse(const char *text, size_t len, struct kv_bk_manifest *mf, char *err,
			 size_t errlen);

/* The writer: values/N entries, then the manifest, into a new file. */
struct kv_bk_writer;
int kv_bk_writer_open(int fd, struct kv_bk_writer **out, char *err, size_t errlen);
int kv_bk_writer_add(struct kv_bk_writer *w, const char *name, const struct kv_value *v,
		     const void *buf, size_t len, char *err, size_t errlen);
/* Ends the archive and frees w (also on error). */
int kv_bk_writer_close(struct kv_bk_writer *w, char *err, size_t errlen);

/*
 * Reads the archive at path and checks it whole: every values/N against the
 * manifest's checksum and size, the manifest against manifest.xxh3, no entry
 * missing or unknown, the archive complete. want: NULL on a first read (the
 * manifest is parsed into *out); or the manifest a first read gave, and fn
 * is then called for every value, already checked, in archive order (the
 * value is fn's to keep or free). -EBADMSG with err for a damaged archive.
 */
typedef int (*kv_bk_value_fn)(void *arg, struct kv_bk_ent *e, struct kv_value *v);
struct kv_bk_progress;
/* pg (NULL: none) counts the archive bytes read and the values seen. */
int kv_bk_read(const char *path, const struct kv_bk_manifest *want, kv_bk_value_fn fn,
	       void *arg, struct kv_bk_manifest *out, struct kv_bk_progress *pg, char *err,
	       size_t errlen);
/* Starts (op != 0: counters zeroed) or ends (op 0) a progress report. */
void kv_bk_progress_start(struct kv_bk_progress *pg, int op);

/* backup.c */
/*
 * The lock of the backup directory between processes: flock on dir/.lock
 * (0600; a leading dot, so never an id). Exclusive for whatever writes the
 * directory or index.json (create, prune), shared for what reads archives
 * (verify, restore), so a prune never removes an archive being read. Waits
 * at most timeout_ms, then -EBUSY with err. Never called with kv->lock
 * held. make_dir: creates dir (0700) first, made_dir says it did. A shared
 * lock of a directory that is missing, read-only or not writable is no
 * lock (fd -1) and 0.
 */
#define KV_BK_LOCKFILE ".lock"
struct kv_bk_lock {
	int fd;
	bool made_dir;
};
int kv_bk_lock(const char *dir, bool exclusive, bool make_dir, uint64_t timeout_ms,
	       struct kv_bk_lock *lk, char *err, size_t errlen);
/* remove_dir: after a failure, the lock file and the directory go too if
 * this lock made the directory and it is otherwise empty. */
void kv_bk_unlock(const char *dir, struct kv_bk_lock *lk, bool remove_dir);
/* The archive of id in dir ("dir/id.tar.zst"): 0 or -ENOENT. */
int kv_bk_archive_path(const char *dir, const char *id, char *out, size_t len);
/* Reads and verifies the chain ending at id, oldest first. */
int kv_bk_load_chain(const char *dir, const char *id, struct kv_bk_manifest **out, size_t *n,
		     struct kv_bk_progress *pg, char *err, size_t errlen);
void kv_bk_chain_free(struct kv_bk_manifest *chain, size_t n);
/* index.json: read (missing = empty), replace atomically. */
int kv_bk_index_read(const char *dir, struct kv_backup_info **out, size_t *n, char *err,
		     size_t errlen);
int kv_bk_index_write(const char *dir, const struct kv_backup_info *v, size_t n, char *err,
		      size_t errlen);
/* info from a manifest and its archive's path. */
void kv_bk_info_from(struct kv_backup_info *b, const struct kv_bk_manifest *mf,
		     const char *path);

/* The state a chain leaves: its keys (sorted by path, pointing into the
 * chain's manifests) after replaying every increment. */
struct kv_bk_state {
	struct kv_bk_ent **keys;
	size_t n;
};
int kv_bk_state_build(struct kv_bk_manifest *chain, size_t n, struct kv_bk_state *st);
void kv_bk_state_free(struct kv_bk_state *st);
struct kv_bk_ent *kv_bk_state_find(const struct kv_bk_state *st, const char *path);

#endif
