/*
 * backup create: the snapshot (one hold of kv->lock, see backup.c) and the
 * archive, written as a temporary file and renamed into place only once it
 * is complete and durable; then the index.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <xxhash.h>

#include "store/backup_int.h"
#include "store/kv_internal.h"
#include "util/log.h"

/* One record of the snapshot. */
struct snap {
	char *path;
	struct kv_meta m;	/* a copy; vver & co. name the stored value */
	struct kv_value *v;	/* in-memory content, or NULL: read m from the backend */
	bool dir;
};

struct snapshot {
	struct snap *items;
	size_t n, cap;
	char **declared;
	size_t ndeclared;
	int64_t started_ms;
};

static void snapshot_free(struct snapshot *s)
{
	for (size_t i = 0; i < s->n; i++) {
		free(s->items[i].path);
		kv_meta_clear(&s->items[i].m);
		kv_value_free(s->items[i].v);
	}
	free(s->items);
	for (size_t i = 0; i < s->ndeclared; i++)
		free(s->declared[i]);
	free(s->declared);
}

/* With kv->lock held: n (not past its deadline) into s. */
static int snap_add(struct snapshot *s, const struct kv_node *n)
{
	char path[KV_KEY_MAX + 1];
	struct snap *it;
	ssize_t len;

	if (s->n == s->cap) {
		size_t cap = s->cap ? 2 * s->cap : 256;
		struct snap *p = realloc(s->items, cap * sizeof(*p));

		if (!p)
			return -ENOMEM;
		s->items = p;
		s->cap = cap;
	}
	/* The root has no path of its own: "". */
	len = n->parent ? kv_node_path(n, path, sizeof(path)) : 0;
	if (len < 0)
		return (int)len;
	path[len] = '\0';
	it = &s->items[s->n];
	memset(it, 0, sizeof(*it));
	it->dir = S_ISDIR(n->m.mode);
	it->path = strdup(path);
	if (!it->path)
		return -ENOMEM;
	if (kv_node_meta_copy(&it->m, n)) {
		free(it->path);
		return -ENOMEM;
	}
	/* In memory, the value is the current one (dirty or clean); otherwise
	 * m.vver names it in the backend, kept there by the pin. */
	if (n->value && !(it->v = kv_value_snapshot(n->value))) {
		free(it->path);
		kv_meta_clear(&it->m);
		return -ENOMEM;
	}
	s->n++;
	return 0;
}

/* With kv->lock held: every live record, depth first. */
static int snap_tree(struct kv_store *kv, struct snapshot *s)
{
	int64_t now = kv_now_ms();
	struct kv_node **stack;
	size_t top = 0;
	int ret = 0;

	stack = malloc((kv->nkeys + kv->ndirs + 2) * sizeof(*stack));
	if (!stack)
		return -ENOMEM;
	stack[top++] = kv->root;
	while (top && !ret) {
		struct kv_node *n = stack[--top], *c;

		/* Past its deadline a key is gone, even before the sweeper. */
		if (!S_ISDIR(n->m.mode) && kv_node_expired(n, now))
			continue;
		ret = snap_add(s, n);
		if (!n->children)
			continue;
		for (size_t i = 0; (c = htab_next(n->children, &i));)
			stack[top++] = c;
	}
	free(stack);
	return ret;
}

static int copy_declared(struct kv_store *kv, struct snapshot *s)
{
	char **tags = kv_node_tags(kv->root);
	uint32_t ntags = kv_node_ntags(kv->root);

	s->declared = calloc(ntags + 1, sizeof(char *));
	if (!s->declared)
		return -ENOMEM;
	for (; s->ndeclared < ntags; s->ndeclared++)
		if (!(s->declared[s->ndeclared] = strdup(tags[s->ndeclared])))
			return -ENOMEM;
	return 0;
}

static int hash_piece(const void *data, size_t len, void *arg)
{
	XXH3_64bits_update(arg, data, len);
	return 0;
}

static uint64_t value_sum(const struct kv_value *v)
{
	XXH3_state_t *h = XXH3_createState();
	uint64_t sum;

	XXH3_64bits_reset(h);
	kv_value_foreach(v, hash_piece, h);
	sum = XXH3_64bits_digest(h);
	XXH3_freeState(h);
	return sum;
}

static bool tags_equal(const struct kv_meta *a, const struct kv_meta *b)
{
	if (a->ntags != b->ntags)
		return false;
	for (uint32_t i = 0; i < a->ntags; i++)
		if (strcmp(a->tags[i], b->tags[i]))
			return false;
	return true;
}

/* Did nothing that a backup records change since the parent's entry? */
static bool unchanged(const struct kv_bk_ent *old, const struct kv_meta *m, uint64_t sum)
{
	const struct kv_meta *o = &old->m;

	return old->sum == sum && o->size == m->size && o->mode == m->mode && o->uid == m->uid &&
	       o->gid == m->gid && o->atime_ns == m->atime_ns && o->mtime_ns == m->mtime_ns &&
	       o->ctime_ns == m->ctime_ns && o->btime_ns == m->btime_ns &&
	       o->expires_ms == m->expires_ms && tags_equal(o, m) &&
	       o->xattrs_len == m->xattrs_len &&
	       (!m->xattrs_len || !memcmp(o->xattrs, m->xattrs, m->xattrs_len));
}

/* The value of a snapshot item: its in-memory copy, or read by reference. */
static int item_value(struct kv_store *kv, struct snap *it, struct kv_value **out)
{
	struct kv_meta ref = { 0 };

	if (it->v) {
		*out = it->v;
		it->v = NULL;
		return 0;
	}
	if (!it->m.vver) {
		*out = kv_value_new();
		return *out ? 0 : -ENOMEM;
	}
	ref.id = it->m.id;
	ref.size = it->m.size;
	ref.vver = it->m.vver;
	ref.stored_size = it->m.stored_size;
	ref.encoding = it->m.encoding;
	kv_may_block();
	return kv->backend->ops->read_value(kv->backend, &ref, out);
}

static int ent_from(struct kv_bk_ent *e, const struct snap *it)
{
	memset(e, 0, sizeof(*e));
	e->file = -1;
	e->path = strdup(it->path);
	if (!e->path || kv_meta_copy(&e->m, &it->m))
		return -ENOMEM;
	free(e->m.name);
	e->m.name = NULL;
	return 0;
}

static int snap_path_cmp(const void *a, const void *b)
{
	return strcmp(((const struct snap *)a)->path, ((const struct snap *)b)->path);
}

/* Fills mf from the snapshot and writes the values into w. */
static int write_values(struct kv_store *kv, struct snapshot *s, const struct kv_bk_state *base,
			struct kv_bk_manifest *mf, struct kv_bk_writer *w, char *err,
			size_t errlen)
{
	size_t nk = 0, nd = 0;
	int ret;

	for (size_t i = 0; i < s->n; i++)
		s->items[i].dir ? nd++ : nk++;
	mf->keys = calloc(nk + 1, sizeof(*mf->keys));
	mf->dirs = calloc(nd + 1, sizeof(*mf->dirs));
	if (!mf->keys || !mf->dirs)
		return -ENOMEM;
	mf->total_keys = nk;
	for (size_t i = 0; i < s->n; i++) {
		struct snap *it = &s->items[i];
		struct kv_value *v = NULL;
		struct kv_bk_ent *old, *e;
		char name[40];
		uint64_t sum;

		if (it->dir) {
			ret = ent_from(&mf->dirs[mf->ndirs++], it);
			if (ret)
				return ret;
			continue;
		}
		ret = item_value(kv, it, &v);
		if (ret) {
			snprintf(err, errlen, "cannot read the value of %s: %s", it->path,
				 strerror(-ret));
			return ret;
		}
		sum = value_sum(v);
		atomic_fetch_add(&kv->backup_progress.keys, 1);
		atomic_fetch_add(&kv->backup_progress.bytes, kv_value_size(v));
		old = base ? kv_bk_state_find(base, it->path) : NULL;
		if (old && unchanged(old, &it->m, sum)) {
			kv_value_free(v);
			continue;
		}
		e = &mf->keys[mf->nkeys++];
		ret = ent_from(e, it);
		e->sum = sum;
		e->file = (int64_t)mf->nkeys - 1;
		e->m.size = kv_value_size(v);
		snprintf(name, sizeof(name), "values/%" PRId64, e->file);
		if (!ret)
			ret = kv_bk_writer_add(w, name, v, NULL, 0, err, errlen);
		mf->bytes += kv_value_size(v);
		kv_value_free(v);
		if (ret)
			return ret;
	}
	if (!base)
		return 0;
	/* Keys of the parent's state that are gone now. */
	qsort(s->items, s->n, sizeof(*s->items), snap_path_cmp);
	mf->deleted = calloc(base->n + 1, sizeof(char *));
	if (!mf->deleted)
		return -ENOMEM;
	for (size_t i = 0; i < base->n; i++) {
		struct snap key = { .path = base->keys[i]->path };
		struct snap *hit = bsearch(&key, s->items, s->n, sizeof(*s->items), snap_path_cmp);

		if (hit && !hit->dir)
			continue;
		if (!(mf->deleted[mf->ndeleted] = strdup(key.path)))
			return -ENOMEM;
		mf->ndeleted++;
	}
	return 0;
}

/* The default id: the UTC time, then -2, -3, ... while taken. */
static int pick_id(const char *dir, char *id, size_t len, const char *want, char *err,
		   size_t errlen)
{
	char path[4096], base[32];
	time_t t = time(NULL);
	struct tm tm;

	if (want) {
		snprintf(id, len, "%s", want);
		if (kv_bk_archive_path(dir, id, path, sizeof(path)) == 0) {
			snprintf(err, errlen, "backup %s exists", id);
			return -EEXIST;
		}
		return 0;
	}
	gmtime_r(&t, &tm);
	strftime(base, sizeof(base), "%Y%m%dT%H%M%SZ", &tm);
	snprintf(id, len, "%s", base);
	for (int k = 2; kv_bk_archive_path(dir, id, path, sizeof(path)) == 0; k++) {
		if (k > 100000)
			return -EEXIST;
		snprintf(id, len, "%s-%d", base, k);
	}
	return 0;
}

/* Nothing is read by reference any more: the flusher may reclaim. */
static void unpin(struct kv_store *kv, bool *pinned)
{
	if (!*pinned)
		return;
	*pinned = false;
	pthread_mutex_lock(&kv->lock);
	kv_backup_unpin(kv);
	pthread_mutex_unlock(&kv->lock);
}

/*
 * Removes path if it is still the file open as fd, never another's: fd is
 * kept open until then, so its inode number cannot be reused meanwhile.
 */
static void unlink_made(const char *path, int fd)
{
	struct stat st, made;

	if (fstat(fd, &made) == 0 && lstat(path, &st) == 0 && st.st_dev == made.st_dev &&
	    st.st_ino == made.st_ino && unlink(path) && errno != ENOENT)
		NLOG(NLOG_WARN, "backup", "cannot remove the archive of a failed backup",
		     LF_STR("file", path), LF_STR("error", strerror(errno)));
}

/*
 * tmp into place as final, never replacing a file there (a backup of that
 * id made meanwhile by a process that does not take the lock): -EEXIST.
 * A filesystem without RENAME_NOREPLACE gets a hard link, which never
 * replaces either, then the temporary name goes.
 */
static int rename_noreplace(const char *tmp, const char *final)
{
	if (renameat2(AT_FDCWD, tmp, AT_FDCWD, final, RENAME_NOREPLACE) == 0)
		return 0;
	if (errno != EINVAL && errno != ENOSYS)
		return -errno;
	if (link(tmp, final))
		return -errno;
	unlink(tmp);
	return 0;
}

/* Writes the archive of mf/snapshot as dir/id.tar.zst, durably; *afd: the
 * archive, open (close it). Releases the snapshot's pin once the values are
 * read. */
static int write_archive(struct kv_store *kv, const char *dir, struct snapshot *s,
			 const struct kv_bk_state *base, struct kv_bk_manifest *mf, char *final,
			 size_t flen, int *afd, char *err, size_t errlen)
{
	char tmp[4096], sum[20];
	struct kv_bk_writer *w;
	bool pinned = true;
	char *text = NULL;
	int fd, ret;

	/* A leading dot: never an id, so never taken for an archive. With
	 * the lock held, one left there is a crashed create's. */
	snprintf(tmp, sizeof(tmp), "%s/.%s.tmp", dir, mf->id);
	unlink(tmp);
	fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0) {
		ret = -errno;
		snprintf(err, errlen, "cannot create %s: %s", tmp, strerror(errno));
		unpin(kv, &pinned);
		return ret;
	}
	ret = kv_bk_writer_open(fd, &w, err, errlen);
	if (ret)
		goto out_unlink;
	ret = write_values(kv, s, base, mf, w, err, errlen);
	unpin(kv, &pinned);
	mf->finished_ms = kv_now_ms();
	if (!ret && !(text = kv_bk_manifest_dump(mf)))
		ret = -ENOMEM;
	if (!ret)
		ret = kv_bk_writer_add(w, "manifest.json", NULL, text, strlen(text), err, errlen);
	if (!ret) {
		snprintf(sum, sizeof(sum), "%016" PRIx64 "\n", XXH3_64bits(text, strlen(text)));
		ret = kv_bk_writer_add(w, "manifest.xxh3", NULL, sum, strlen(sum), err, errlen);
	}
	free(text);
	int cret = kv_bk_writer_close(w, ret ? NULL : err, ret ? 0 : errlen);

	ret = ret ? ret : cret;
	if (ret)
		goto out_unlink;
	if (fsync(fd)) {
		ret = -errno;
		snprintf(err, errlen, "cannot write %s: %s", tmp, strerror(errno));
		goto out_unlink;
	}
	snprintf(final, flen, "%s/%s.tar.zst", dir, mf->id);
	ret = rename_noreplace(tmp, final);
	if (ret == -EEXIST) {
		snprintf(err, errlen, "backup %s exists", mf->id);
		goto out_unlink;
	}
	if (ret) {
		snprintf(err, errlen, "cannot rename %s to %s: %s", tmp, final, strerror(-ret));
		goto out_unlink;
	}
	int fdd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

	if (fdd >= 0) {
		if (fsync(fdd)) {
			ret = -errno;
			snprintf(err, errlen, "cannot write %s: %s", dir, strerror(errno));
		}
		close(fdd);
	}
	/* Not known durable: no archive, so a retry of this id is not refused. */
	if (ret) {
		unlink_made(final, fd);
		close(fd);
		return ret;
	}
	*afd = fd;
	return 0;

out_unlink:
	unpin(kv, &pinned);
	unlink_made(tmp, fd);
	close(fd);
	return ret;
}

/*
 * A create that failed after its archive went into place: the archive goes,
 * or a retry of the id would be refused as existing while no index lists it.
 * If index.json was renamed into place before the failure (its directory's
 * fsync failed), it names the archive: put back the list without it. The
 * directory's lock is held: the index is this create's to rewrite, and the
 * archive is removed only if it is still the file this create made.
 */
static void undo_create(const char *dir, const char *id, const char *archive,
			int afd)
{
	struct kv_backup_info *v;
	char err[512];
	size_t n, k = 0;

	unlink_made(archive, afd);
	if (kv_bk_index_read(dir, &v, &n, err, sizeof(err)))
		return;
	for (size_t i = 0; i < n; i++)
		if (strcmp(v[i].id, id))
			v[k++] = v[i];
	if (k < n && kv_bk_index_write(dir, v, k, err, sizeof(err)))
		NLOG(NLOG_WARN, "backup", "cannot remove a failed backup from the index",
		     LF_STR("id", id), LF_STR("error", err));
	free(v);
}

int kv_backup_create(struct kv_store *kv, const char *id, const char *parent,
		     struct kv_backup_info *info, char *err, size_t errlen)
{
	struct kv_backup_info *idx = NULL;
	struct kv_bk_manifest *chain = NULL, mf = { 0 };
	struct kv_bk_state base = { 0 };
	struct snapshot s = { 0 };
	const char *dir = kv->backup_dir;
	char newid[KV_BACKUP_ID_MAX + 1], final[4096];
	size_t nchain = 0, nidx = 0;
	struct kv_bk_lock lk;
	int afd = -1;
	int ret;

	if (!dir) {
		snprintf(err, errlen, "no backup directory: set backup_dir (there is no local "
			 "data directory to hold backups/)");
		return -EINVAL;
	}
	if (id && kv_backup_check_id(id)) {
		snprintf(err, errlen, "bad backup id '%.140s': ids are 1 to 128 of "
			 "[A-Za-z0-9._-], not starting with '.' (names, not paths)", id);
		return -EINVAL;
	}
	if (parent && kv_backup_check_id(parent)) {
		snprintf(err, errlen, "bad parent backup id '%.140s'", parent);
		return -EINVAL;
	}
	pthread_mutex_lock(&kv->backup_lock);
	/* Exclusive from the id's choice to the index's update: a create or a
	 * prune of a store sharing the directory waits (kv->lock not held). */
	ret = kv_bk_lock(dir, true, true, kv->opts.backend_timeout_ms, &lk, err, errlen);
	if (ret)
		goto out_unlock;
	ret = pick_id(dir, newid, sizeof(newid), id, err, errlen);
	if (ret)
		goto out_free;
	if (parent) {
		/* An increment on a damaged chain would be worthless. */
		ret = kv_bk_load_chain(dir, parent, &chain, &nchain, NULL, err, errlen);
		if (!ret)
			ret = kv_bk_state_build(chain, nchain, &base);
		if (ret)
			goto out_free;
	}
	mf.id = strdup(newid);
	mf.parent = parent ? strdup(parent) : NULL;
	if (!mf.id || (parent && !mf.parent)) {
		ret = -ENOMEM;
		goto out_free;
	}

	pthread_mutex_lock(&kv->lock);
	s.started_ms = kv_now_ms();
	ret = snap_tree(kv, &s);
	if (!ret)
		ret = copy_declared(kv, &s);
	if (!ret)
		kv_backup_pin(kv);
	pthread_mutex_unlock(&kv->lock);
	if (ret) {
		snprintf(err, errlen, "cannot take the snapshot: %s", strerror(-ret));
		goto out_free;
	}
	kv_bk_progress_start(&kv->backup_progress, KV_BK_CREATE);
	for (size_t i = 0; i < s.n; i++)
		if (!s.items[i].dir) {
			atomic_fetch_add(&kv->backup_progress.keys_total, 1);
			atomic_fetch_add(&kv->backup_progress.bytes_total, s.items[i].m.size);
		}
	mf.started_ms = s.started_ms;
	mf.declared = s.declared;
	mf.ndeclared = s.ndeclared;
	s.declared = NULL;
	s.ndeclared = 0;
	ret = write_archive(kv, dir, &s, parent ? &base : NULL, &mf, final, sizeof(final), &afd,
			    err, errlen);
	kv_bk_progress_start(&kv->backup_progress, KV_BK_NONE);
	if (ret)
		goto out_free;
	kv_bk_info_from(info, &mf, final);
	ret = kv_bk_index_read(dir, &idx, &nidx, err, errlen);
	if (!ret) {
		struct kv_backup_info *v = realloc(idx, (nidx + 1) * sizeof(*v));

		if (v)
			idx = v;
		else
			ret = -ENOMEM;
	}
	if (!ret) {
		/* An entry whose archive was removed by hand names this id no more. */
		for (size_t i = 0; i < nidx; i++)
			if (!strcmp(idx[i].id, info->id)) {
				memmove(&idx[i], &idx[i + 1], (nidx - i - 1) * sizeof(*idx));
				nidx--;
				break;
			}
		idx[nidx++] = *info;
		ret = kv_bk_index_write(dir, idx, nidx, err, errlen);
	}
	if (ret)
		undo_create(dir, newid, final, afd);
	else
		NLOG(NLOG_INFO, "backup", "backup created", LF_STR("id", newid),
		     LF_INT("keys", mf.total_keys), LF_INT("stored", mf.nkeys),
		     LF_INT("duration_ms", mf.finished_ms - mf.started_ms));
out_free:
	/* A failed first backup leaves no directory behind. */
	if (afd >= 0)
		close(afd);
	kv_bk_unlock(dir, &lk, ret != 0);
	free(idx);
	snapshot_free(&s);
	kv_bk_manifest_free(&mf);
	kv_bk_state_free(&base);
	kv_bk_chain_free(chain, nchain);
out_unlock:
	pthread_mutex_unlock(&kv->backup_lock);
	return ret;
}
