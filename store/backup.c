/*
 * Backups: ids, the backup directory and its index.json, create (the
 * snapshot), list, verify and prune. The archive format is in
 * backup_archive.c, restore in backup_restore.c.
 *
 * The snapshot is taken in one hold of kv->lock: metadata copies of every
 * record, copy-on-write snapshots of values in memory, and for values only
 * in the backend their (id, vver) reference, read after the lock is dropped.
 * A pin (kv_backup_pin) keeps those versions in the backend meanwhile even
 * if the flusher commits newer ones, so the backup is the store at one
 * instant without stopping writers for longer than the copy.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <xxhash.h>

#include "store/backup_int.h"
#include "store/kv_internal.h"
#include "util/log.h"

#define INDEX "index.json"

int kv_backup_check_id(const char *id)
{
	size_t len = id ? strlen(id) : 0;

	if (len == 0 || len > KV_BACKUP_ID_MAX || id[0] == '.')
		return -EINVAL;
	for (const char *p = id; *p; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
		      (*p >= '0' && *p <= '9') || *p == '.' || *p == '_' || *p == '-'))
			return -EINVAL;
	return 0;
}

static int bad_id(const char *id, char *err, size_t errlen)
{
	snprintf(err, errlen, "bad backup id '%.140s': ids are 1 to 128 of [A-Za-z0-9._-], "
		 "not starting with '.' (names, not paths)", id ? id : "");
	return -EINVAL;
}

static const char *backup_dir(struct kv_store *kv, char *err, size_t errlen)
{
	if (!kv->backup_dir)
		snprintf(err, errlen, "no backup directory: set backup_dir (there is no local "
			 "data directory to hold backups/)");
	return kv->backup_dir;
}

static int fsync_dir(const char *dir)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC), ret = 0;

	if (fd < 0)
		return -errno;
	if (fsync(fd))
		ret = -errno;
	close(fd);
	return ret;
}

int kv_bk_archive_path(const char *dir, const char *id, char *out, size_t len)
{
	struct stat st;

	snprintf(out, len, "%s/%s.tar.zst", dir, id);
	return stat(out, &st) == 0 ? 0 : -ENOENT;
}

/* --- the lock between processes ------------------------------------------- */

/*
 * kv->backup_lock orders the backup commands of one store; stores of other
 * processes (or other stores of this one) sharing the backup directory are
 * kept apart by flock(2) on its lock file. flock locks belong to the open
 * file description, so two stores of one process exclude each other too.
 */
int kv_bk_lock(const char *dir, bool exclusive, bool make_dir, uint64_t timeout_ms,
	       struct kv_bk_lock *lk, char *err, size_t errlen)
{
	int64_t deadline = kv_mono_ms() + (int64_t)timeout_ms;
	long pause_ms = 1;
	int remade = 0;
	char path[4096];

	lk->fd = -1;
	lk->made_dir = false;
	snprintf(path, sizeof(path), "%s/" KV_BK_LOCKFILE, dir);
	for (;;) {
		struct stat held, named;
		int fd;

		if (make_dir) {
			if (mkdir(dir, 0700) == 0) {
				lk->made_dir = true;
			} else if (errno != EEXIST) {
				int ret = -errno;

				snprintf(err, errlen, "cannot create the backup directory %s: %s",
					 dir, strerror(errno));
				return ret;
			}
		}
		fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
		if (fd < 0 && !exclusive && (errno == EROFS || errno == EACCES || errno == ENOENT))
			fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
		/* A reader of a directory that is missing, read-only or not
		 * ours to write: no writer of ours can change it either. */
		if (fd < 0 && !exclusive && (errno == EROFS || errno == EACCES || errno == ENOENT))
			return 0;
		/* The directory went between mkdir and open: a failed first
		 * backup of another store removed it. Make it again, a few
		 * times: what stays missing after mkdir said it exists (a
		 * dangling symlink) is an error, not a race to spin on. */
		if (fd < 0 && make_dir && errno == ENOENT && ++remade < 4 &&
		    kv_mono_ms() < deadline)
			continue;
		if (fd < 0) {
			int ret = -errno;

			snprintf(err, errlen, "cannot open the lock file %s: %s", path,
				 strerror(errno));
			return ret;
		}
		if (flock(fd, (exclusive ? LOCK_EX : LOCK_SH) | LOCK_NB) == 0) {
			/* Still the file of that name? A failed first backup
			 * removes it (and its directory) while holding it:
			 * then again, with the file there now. */
			if (fstat(fd, &held) == 0 && lstat(path, &named) == 0 &&
			    held.st_dev == named.st_dev && held.st_ino == named.st_ino) {
				lk->fd = fd;
				return 0;
			}
		} else if (errno != EWOULDBLOCK) {
			int ret = -errno;

			snprintf(err, errlen, "cannot lock %s: %s", path, strerror(errno));
			close(fd);
			return ret;
		}
		close(fd);
		int64_t left = deadline - kv_mono_ms();

		if (left <= 0) {
			snprintf(err, errlen, "the backup directory %s is in use by another "
				 "process (a backup, restore or prune of a store sharing it): "
				 "gave up waiting for %s after %" PRIu64 " ms", dir, path,
				 timeout_ms);
			return -EBUSY;
		}
		/* flock has no timed wait: poll, backing off to 50 ms. */
		if (pause_ms > left)
			pause_ms = (long)left;
		nanosleep(&(struct timespec){ pause_ms / 1000, (pause_ms % 1000) * 1000000L },
			  NULL);
		pause_ms = pause_ms * 2 > 50 ? 50 : pause_ms * 2;
	}
}

void kv_bk_unlock(const char *dir, struct kv_bk_lock *lk, bool remove_dir)
{
	char path[4096];

	if (remove_dir && lk->made_dir && lk->fd >= 0) {
		/* Removed while held: a waiter that then gets the lock of the
		 * unlinked file sees it is not the named one and starts over. */
		snprintf(path, sizeof(path), "%s/" KV_BK_LOCKFILE, dir);
		unlink(path);
		/* Only succeeds when empty: what a failed first backup leaves. */
		rmdir(dir);
	}
	if (lk->fd >= 0)
		close(lk->fd);
	lk->fd = -1;
}

/* --- index.json ----------------------------------------------------------- */

static json_t *info_json(const struct kv_backup_info *b)
{
	return json_pack("{s:s, s:s?, s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:I}", "id", b->id,
			 "parent", b->parent[0] ? b->parent : NULL, "file", b->file,
			 "started_ms", (json_int_t)b->started_ms, "finished_ms",
			 (json_int_t)b->finished_ms, "keys", (json_int_t)b->keys, "stored",
			 (json_int_t)b->stored, "deleted", (json_int_t)b->deleted, "bytes",
			 (json_int_t)b->bytes, "archive_size", (json_int_t)b->archive_size);
}

static uint64_t jint(json_t *o, const char *key)
{
	json_int_t v = json_integer_value(json_object_get(o, key));

	return v > 0 ? (uint64_t)v : 0;
}

/* The index's backups, oldest first; a missing index is an empty list. */
int kv_bk_index_read(const char *dir, struct kv_backup_info **out, size_t *n, char *err,
		      size_t errlen)
{
	char path[4096];
	json_error_t jerr;
	json_t *o, *a;
	struct kv_backup_info *v;

	*out = NULL;
	*n = 0;
	snprintf(path, sizeof(path), "%s/" INDEX, dir);
	o = json_load_file(path, 0, &jerr);
	if (!o) {
		if (access(path, F_OK) && errno == ENOENT)
			return 0;
		snprintf(err, errlen, "%s is damaged: %s", path, jerr.text);
		return -EBADMSG;
	}
	a = json_object_get(o, "backups");
	v = calloc(json_array_size(a) + 1, sizeof(*v));
	if (!v) {
		json_decref(o);
		return -ENOMEM;
	}
	for (size_t i = 0; i < json_array_size(a); i++) {
		json_t *b = json_array_get(a, i);
		const char *id = json_string_value(json_object_get(b, "id"));
		const char *parent = json_string_value(json_object_get(b, "parent"));
		const char *file = json_string_value(json_object_get(b, "file"));
		struct kv_backup_info *x = &v[*n];

		if (kv_backup_check_id(id) || (parent && kv_backup_check_id(parent)) || !file ||
		    strlen(file) >= sizeof(x->file) || strchr(file, '/'))
			continue; /* not ours to interpret: skip, never follow */
		snprintf(x->id, sizeof(x->id), "%s", id);
		snprintf(x->parent, sizeof(x->parent), "%s", parent ? parent : "");
		snprintf(x->file, sizeof(x->file), "%s", file);
		x->started_ms = (int64_t)jint(b, "started_ms");
		x->finished_ms = (int64_t)jint(b, "finished_ms");
		x->keys = jint(b, "keys");
		x->stored = jint(b, "stored");
		x->deleted = jint(b, "deleted");
		x->bytes = jint(b, "bytes");
		x->archive_size = jint(b, "archive_size");
		(*n)++;
	}
	json_decref(o);
	*out = v;
	return 0;
}

/* Replaces index.json atomically: temp file, fsync, rename, fsync dir. */
int kv_bk_index_write(const char *dir, const struct kv_backup_info *v, size_t n, char *err,
		       size_t errlen)
{
	char tmp[4096], path[4096];
	json_t *a = json_array(), *o;
	int fd, ret = 0;

	for (size_t i = 0; a && i < n; i++)
		json_array_append_new(a, info_json(&v[i]));
	o = json_pack("{s:i, s:o}", "version", KV_BK_FORMAT, "backups", a);
	if (!o)
		return -ENOMEM;
	snprintf(tmp, sizeof(tmp), "%s/." INDEX ".tmp", dir);
	snprintf(path, sizeof(path), "%s/" INDEX, dir);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0 || json_dumpfd(o, fd, JSON_INDENT(1) | JSON_PRESERVE_ORDER) ||
	    write(fd, "\n", 1) != 1 || fsync(fd))
		ret = -errno ? -errno : -EIO;
	if (fd >= 0 && close(fd) && !ret)
		ret = -errno;
	if (!ret && rename(tmp, path))
		ret = -errno;
	if (!ret)
		ret = fsync_dir(dir);
	if (ret) {
		unlink(tmp);
		snprintf(err, errlen, "cannot update %s: %s", path, strerror(-ret));
	}
	json_decref(o);
	return ret;
}

/* --- chains and states ---------------------------------------------------- */

void kv_bk_chain_free(struct kv_bk_manifest *chain, size_t n)
{
	for (size_t i = 0; chain && i < n; i++)
		kv_bk_manifest_free(&chain[i]);
	free(chain);
}

int kv_bk_load_chain(const char *dir, const char *id, struct kv_bk_manifest **out, size_t *n,
		     struct kv_bk_progress *pg, char *err, size_t errlen)
{
	struct kv_bk_manifest *chain = NULL;
	size_t k = 0;
	char path[4096];
	int ret = 0;

	for (const char *cur = id; cur;) {
		struct kv_bk_manifest *c;

		if (k == 256) {
			snprintf(err, errlen, "backup %s: chain longer than 256 backups (a loop?)",
				 id);
			ret = -ELOOP;
			goto out_free;
		}
		if (kv_bk_archive_path(dir, cur, path, sizeof(path))) {
			snprintf(err, errlen, k ? "backup %s needs backup %s, which is missing"
						: "no backup %s%.0s in %s",
				 id, cur, dir);
			ret = -ENOENT;
			goto out_free;
		}
		c = realloc(chain, (k + 1) * sizeof(*chain));
		if (!c) {
			ret = -ENOMEM;
			goto out_free;
		}
		chain = c;
		ret = kv_bk_read(path, NULL, NULL, NULL, &chain[k], pg, err, errlen);
		if (ret)
			goto out_free;
		k++;
		if (strcmp(chain[k - 1].id, cur)) {
			snprintf(err, errlen, "%s: its manifest names backup %s", path,
				 chain[k - 1].id);
			ret = -EBADMSG;
			goto out_free;
		}
		cur = chain[k - 1].parent;
	}
	/* Oldest first, as they replay. */
	for (size_t i = 0; i < k / 2; i++) {
		struct kv_bk_manifest t = chain[i];

		chain[i] = chain[k - 1 - i];
		chain[k - 1 - i] = t;
	}
	*out = chain;
	*n = k;
	return 0;

out_free:
	kv_bk_chain_free(chain, k);
	return ret;
}

struct tagged {
	struct kv_bk_ent *e;
	size_t seq;
};

static int tagged_cmp(const void *a, const void *b)
{
	const struct tagged *x = a, *y = b;
	int c = strcmp(x->e->path, y->e->path);

	return c ? c : (x->seq > y->seq) - (x->seq < y->seq);
}

static int path_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static int ent_cmp(const void *a, const void *b)
{
	return strcmp((*(struct kv_bk_ent *const *)a)->path, (*(struct kv_bk_ent *const *)b)->path);
}

int kv_bk_state_build(struct kv_bk_manifest *chain, size_t n, struct kv_bk_state *st)
{
	memset(st, 0, sizeof(*st));
	for (size_t i = 0; i < n; i++) {
		struct kv_bk_manifest *mf = &chain[i];
		size_t total = st->n + mf->nkeys, k = 0;
		struct tagged *t = calloc(total + 1, sizeof(*t));
		char **del = calloc(mf->ndeleted + 1, sizeof(*del));

		if (!t || !del) {
			free(t);
			free(del);
			kv_bk_state_free(st);
			return -ENOMEM;
		}
		memcpy(del, mf->deleted, mf->ndeleted * sizeof(*del));
		qsort(del, mf->ndeleted, sizeof(*del), path_cmp);
		/* What the parent state keeps, unless deleted since... */
		for (size_t j = 0; j < st->n; j++)
			if (!bsearch(&st->keys[j]->path, del, mf->ndeleted, sizeof(*del), path_cmp))
				t[k++] = (struct tagged){ st->keys[j], 0 };
		/* ...then this backup's keys, which win over it. */
		for (size_t j = 0; j < mf->nkeys; j++)
			t[k++] = (struct tagged){ &mf->keys[j], 1 };
		qsort(t, k, sizeof(*t), tagged_cmp);
		st->n = 0;
		free(st->keys);
		st->keys = calloc(k + 1, sizeof(*st->keys));
		if (!st->keys) {
			free(t);
			free(del);
			return -ENOMEM;
		}
		for (size_t j = 0; j < k; j++) {
			if (j + 1 < k && !strcmp(t[j].e->path, t[j + 1].e->path))
				continue;
			st->keys[st->n++] = t[j].e;
		}
		free(t);
		free(del);
	}
	for (size_t i = 0; i < n; i++)
		for (size_t j = 0; j < chain[i].nkeys; j++)
			chain[i].keys[j].win = false;
	for (size_t j = 0; j < st->n; j++)
		st->keys[j]->win = true;
	return 0;
}

void kv_bk_state_free(struct kv_bk_state *st)
{
	free(st->keys);
	memset(st, 0, sizeof(*st));
}

struct kv_bk_ent *kv_bk_state_find(const struct kv_bk_state *st, const char *path)
{
	struct kv_bk_ent key = { .path = (char *)path }, *kp = &key, **hit;

	hit = bsearch(&kp, st->keys, st->n, sizeof(*st->keys), ent_cmp);
	return hit ? *hit : NULL;
}

void kv_bk_info_from(struct kv_backup_info *b, const struct kv_bk_manifest *mf,
		      const char *path)
{
	struct stat st;
	const char *base = strrchr(path, '/');

	memset(b, 0, sizeof(*b));
	snprintf(b->id, sizeof(b->id), "%s", mf->id);
	snprintf(b->parent, sizeof(b->parent), "%s", mf->parent ? mf->parent : "");
	snprintf(b->file, sizeof(b->file), "%s", base ? base + 1 : path);
	b->started_ms = mf->started_ms;
	b->finished_ms = mf->finished_ms;
	b->keys = mf->total_keys;
	b->stored = mf->nkeys;
	b->deleted = mf->ndeleted;
	b->bytes = mf->bytes;
	if (stat(path, &st) == 0)
		b->archive_size = (uint64_t)st.st_size;
}

/* --- list, verify, prune -------------------------------------------------- */

int kv_backup_list(struct kv_store *kv, struct kv_backup_info **out, size_t *n, char *err,
		   size_t errlen)
{
	const char *dir = backup_dir(kv, err, errlen);

	*out = NULL;
	*n = 0;
	return dir ? kv_bk_index_read(dir, out, n, err, errlen) : -EINVAL;
}

int kv_backup_verify(struct kv_store *kv, const char *id, struct kv_backup_info *info,
		     char *err, size_t errlen)
{
	const char *dir = backup_dir(kv, err, errlen);
	struct kv_bk_manifest *chain;
	struct kv_bk_lock lk;
	char path[4096];
	size_t n;
	int ret;

	if (!dir)
		return -EINVAL;
	if (kv_backup_check_id(id))
		return bad_id(id, err, errlen);
	/* The whole chain: a backup is only as good as what it needs. */
	pthread_mutex_lock(&kv->backup_lock);
	/* Shared: verifies of stores sharing the directory run together, a
	 * create or prune waits (a prune would remove what is being read). */
	ret = kv_bk_lock(dir, false, false, kv->opts.backend_timeout_ms, &lk, err, errlen);
	if (!ret) {
		kv_bk_progress_start(&kv->backup_progress, KV_BK_VERIFY);
		ret = kv_bk_load_chain(dir, id, &chain, &n, &kv->backup_progress, err, errlen);
		kv_bk_progress_start(&kv->backup_progress, KV_BK_NONE);
		kv_bk_unlock(dir, &lk, false);
	}
	pthread_mutex_unlock(&kv->backup_lock);
	if (ret)
		return ret;
	kv_bk_archive_path(dir, id, path, sizeof(path));
	kv_bk_info_from(info, &chain[n - 1], path);
	kv_bk_chain_free(chain, n);
	return 0;
}

int kv_backup_prune(struct kv_store *kv, unsigned keep, char **removed, size_t *nremoved,
		    char *err, size_t errlen)
{
	const char *dir = backup_dir(kv, err, errlen);
	struct kv_backup_info *v;
	struct kv_bk_lock lk;
	size_t n, k = 0, len = 0;
	bool *kept;
	char path[4096];
	int ret;

	*removed = NULL;
	*nremoved = 0;
	if (!dir)
		return -EINVAL;
	if (keep == 0) {
		snprintf(err, errlen, "prune --keep needs at least 1");
		return -EINVAL;
	}
	pthread_mutex_lock(&kv->backup_lock);
	ret = kv_bk_lock(dir, true, false, kv->opts.backend_timeout_ms, &lk, err, errlen);
	if (ret == -ENOENT) {
		ret = 0;	/* no directory: no backup to prune */
		goto out_unlock;
	}
	if (ret)
		goto out_unlock;
	ret = kv_bk_index_read(dir, &v, &n, err, errlen);
	if (ret)
		goto out_release;
	kept = calloc(n + 1, sizeof(*kept));
	*removed = calloc(n + 1, KV_BACKUP_ID_MAX + 1);
	if (!kept || !*removed) {
		ret = -ENOMEM;
		goto out_free;
	}
	/* The keep newest, and every ancestor a kept one needs. */
	for (size_t i = n > keep ? n - keep : 0; i < n; i++) {
		for (size_t j = i, hops = 0; hops <= n && !kept[j]; hops++) {
			kept[j] = true;
			size_t p = 0;

			while (p < n && (!v[j].parent[0] || strcmp(v[p].id, v[j].parent)))
				p++;
			if (p == n)
				break;
			j = p;
		}
	}
	for (size_t i = 0; i < n; i++)
		if (kept[i])
			v[k++] = v[i];
		else
			len += (size_t)sprintf(*removed + len, "%s", v[i].id) + 1;
	if (k < n) {
		/* The index first: a crash then leaves an unlisted file, never
		 * a listed backup without its archive. */
		ret = kv_bk_index_write(dir, v, k, err, errlen);
		if (ret)
			goto out_free;
		for (const char *id = *removed; id < *removed + len; id += strlen(id) + 1) {
			if (kv_bk_archive_path(dir, id, path, sizeof(path)) == 0 && unlink(path))
				NLOG(NLOG_WARN, "backup", "cannot remove a pruned archive",
				     LF_STR("file", path), LF_STR("error", strerror(errno)));
			(*nremoved)++;
		}
		fsync_dir(dir);
	}
out_free:
	free(kept);
	free(v);
out_release:
	kv_bk_unlock(dir, &lk, false);
out_unlock:
	pthread_mutex_unlock(&kv->backup_lock);
	if (ret || !*nremoved) {
		free(*removed);
		*removed = NULL;
	}
	return ret;
}
