/*
 * Backups of a store (spec section 7): one compressed tar archive per backup
 * in the store's backup directory, holding the values as values/N and a
 * manifest.json that records every key's path, value checksum (XXH3-64),
 * tags, TTL deadline, mode, owner, times and custom xattrs, every directory,
 * the declared tags, and for an incremental backup its parent and the keys
 * deleted since. index.json in the same directory lists the backups.
 *
 * Return convention: 0 on success, a negative errno; err then holds a
 * one-line message for the user. Threads: safe from any thread; backup
 * operations of one store run one at a time (list excepted), and never hold
 * the store lock for more than the instant of the snapshot. Stores sharing a
 * backup directory (in this process or others) are kept apart by flock on
 * its .lock file: create and prune exclusively, verify and restore shared;
 * a command that cannot take it within backend_timeout fails with -EBUSY.
 * list reads index.json, which is only ever replaced whole, without it.
 */
#ifndef NADB_STORE_BACKUP_H
#define NADB_STORE_BACKUP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "store/kv.h"

#define KV_BACKUP_ID_MAX 128u

struct kv_backup_info {
	char id[KV_BACKUP_ID_MAX + 1];
	char parent[KV_BACKUP_ID_MAX + 1];	/* "" for a full backup */
	char file[KV_BACKUP_ID_MAX + 16];	/* the archive's name in the directory */
	int64_t started_ms, finished_ms;	/* the window the snapshot spans (unix ms) */
	uint64_t keys;		/* keys in the restored state of this backup */
	uint64_t stored;	/* keys whose value this archive holds */
	uint64_t deleted;	/* keys deleted since the parent */
	uint64_t bytes;		/* value bytes this archive holds */
	uint64_t archive_size;
};

/* [A-Za-z0-9._-]{1,128}, not starting with '.': 0 or -EINVAL. */
int kv_backup_check_id(const char *id);

/*
 * Takes a consistent snapshot of the store (buffered writes included) and
 * writes it as backup id (NULL: the UTC time, with -2, -3, ... appended if
 * taken). parent: NULL for a full backup, else only what changed since that
 * backup's state is stored. On success *info describes the new backup.
 */
int kv_backup_create(struct kv_store *kv, const char *id, const char *parent,
		     struct kv_backup_info *info, char *err, size_t errlen);
/* The backups in index.json, oldest first; free *out. */
int kv_backup_list(struct kv_store *kv, struct kv_backup_info **out, size_t *n, char *err,
		   size_t errlen);
/* Reads the whole archive of id and checks every checksum: 0, -EBADMSG
 * (damaged: err says where), -ENOENT. */
int kv_backup_verify(struct kv_store *kv, const char *id, struct kv_backup_info *info,
		     char *err, size_t errlen);
/*
 * Restores the state of backup id (its chain replayed parent first) into the
 * store, after verifying every archive of the chain (nothing changes if one
 * is damaged). clear: first removes every key and directory not in that
 * state. *restored = keys written.
 */
int kv_backup_restore(struct kv_store *kv, const char *id, bool clear, uint64_t *restored,
		      char *err, size_t errlen);
/* Keeps the keep newest backups and every ancestor they need; removes the
 * rest. *removed (malloc'd, NUL-separated ids, may be NULL) and *nremoved. */
int kv_backup_prune(struct kv_store *kv, unsigned keep, char **removed, size_t *nremoved,
		    char *err, size_t errlen);

#endif
