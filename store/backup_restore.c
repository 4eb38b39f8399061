/*
 * backup restore: verifies every archive of the chain first (a damaged one
 * changes nothing), then applies the chain's final state through the store's
 * own operations, so the mount stays coherent: directories, then each
 * archive's winning values in archive order (a second read of each archive,
 * every value checked again against the verified manifest), then directory
 * metadata deepest first (creating entries moves their times) and declared
 * tags. Every record touched gets its kernel cache entry invalidated.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "store/backup_int.h"
#include "store/kv_internal.h"
#include "util/log.h"

struct restore {
	struct kv_store *kv;
	const struct kv_bk_manifest *last;	/* the backup restored: its dirs */
	int64_t now_ms;
	uint64_t restored;
};

/* Sets what a backup records on id; with kv->lock taken here. */
static int set_meta(struct kv_store *kv, uint64_t id, const struct kv_meta *w, bool key)
{
	struct kv_node *n;
	char **tags = NULL;
	void *x = NULL;
	int ret = 0;

	if (key && w->ntags) {
		tags = calloc(w->ntags, sizeof(*tags));
		for (uint32_t i = 0; tags && i < w->ntags; i++)
			if (!(tags[i] = strdup(w->tags[i]))) {
				kv_tags_free_list(tags, i);
				tags = NULL;
			}
		if (!tags)
			return -ENOMEM;
	}
	if (w->xattrs_len && !(x = malloc(w->xattrs_len))) {
		kv_tags_free_list(tags, w->ntags);
		return -ENOMEM;
	}
	if (x)
		memcpy(x, w->xattrs, w->xattrs_len);
	pthread_mutex_lock(&kv->lock);
	n = kv_node_live(kv, id);
	if (!n) {
		ret = -ENOENT;
		goto out_unlock;
	}
	if (key) {
		ret = kv_node_set_tags(kv, n, tags, w->ntags);
		if (ret)
			goto out_unlock;
		tags = NULL;
		ret = kv_set_deadline(kv, n, w->expires_ms);
		if (ret)
			goto out_unlock;
	}
	ret = kv_node_put_xattrs(n, x, w->xattrs_len);
	if (ret)
		goto out_unlock;
	x = NULL;
	n->m.mode = (n->m.mode & S_IFMT) | (w->mode & 07777);
	n->m.uid = w->uid;
	n->m.gid = w->gid;
	n->m.atime_ns = w->atime_ns;
	n->m.mtime_ns = w->mtime_ns;
	n->m.ctime_ns = w->ctime_ns;
	n->m.btime_ns = w->btime_ns;
	kv_mark_dirty(kv, n);
	if (n->parent)
		kv_queue_inval(kv, n->parent->m.id, n->m.name, n->m.id);
out_unlock:
	pthread_mutex_unlock(&kv->lock);
	kv_tags_free_list(tags, tags ? w->ntags : 0);
	free(x);
	return ret;
}

/* Removes a key or an empty directory, and has the kernel forget it. */
static int remove_one(struct kv_store *kv, uint64_t parent, const char *name, uint64_t id,
		      bool dir)
{
	int ret = dir ? kv_rmdir(kv, parent, name) : kv_unlink(kv, parent, name);

	if (!ret) {
		pthread_mutex_lock(&kv->lock);
		kv_queue_inval(kv, parent, name, id);
		pthread_mutex_unlock(&kv->lock);
	}
	return ret;
}

static int remove_tree(struct kv_store *kv, uint64_t parent, const char *name, int depth);

/* Empties directory id (recursively). */
static int empty_dir(struct kv_store *kv, uint64_t id, int depth)
{
	struct kv_dirent *ents;
	size_t n;
	int ret;

	if (depth > (int)KV_KEY_MAX)
		return -ELOOP;
	ret = kv_readdir(kv, id, &ents, &n);
	if (ret)
		return ret;
	for (size_t i = 0; i < n && !ret; i++)
		ret = remove_tree(kv, id, ents[i].name, depth + 1);
	kv_dirents_free(ents, n);
	return ret;
}

static int remove_tree(struct kv_store *kv, uint64_t parent, const char *name, int depth)
{
	struct kv_attr a;
	int ret = kv_lookup(kv, parent, name, &a);

	if (ret)
		return ret == -ENOENT ? 0 : ret;
	if (!S_ISDIR(a.mode))
		return remove_one(kv, parent, name, a.id, false);
	ret = empty_dir(kv, a.id, depth);
	return ret ? ret : remove_one(kv, parent, name, a.id, true);
}

static const struct kv_bk_ent *find_dir(const struct kv_bk_manifest *mf, const char *path)
{
	for (size_t i = 0; i < mf->ndirs; i++)
		if (!strcmp(mf->dirs[i].path, path))
			return &mf->dirs[i];
	return NULL;
}

/* The directory at path[0..len), made (with its parents) if missing; a key
 * in the way is removed. */
static int ensure_dir(struct restore *r, const char *path, size_t len, uint64_t *out)
{
	uint64_t id = KV_ROOT_ID;
	size_t pos = 0;
	char name[KV_NAME_MAX + 1], sub[KV_KEY_MAX + 1];
	int ret;

	while (pos < len) {
		const char *slash = memchr(path + pos, '/', len - pos);
		size_t end = slash ? (size_t)(slash - path) : len;
		struct kv_attr a;

		memcpy(name, path + pos, end - pos);
		name[end - pos] = '\0';
		ret = kv_lookup(r->kv, id, name, &a);
		if (!ret && !S_ISDIR(a.mode)) {
			ret = remove_one(r->kv, id, name, a.id, false);
			if (ret)
				return ret;
			ret = -ENOENT;
		}
		if (ret == -ENOENT) {
			const struct kv_bk_ent *d;

			memcpy(sub, path, end);
			sub[end] = '\0';
			d = find_dir(r->last, sub);
			ret = kv_mkdir(r->kv, id, name, d ? d->m.mode & 07777 : 0755,
				       d ? d->m.uid : r->kv->opts.root_uid,
				       d ? d->m.gid : r->kv->opts.root_gid, &a);
		}
		if (ret)
			return ret;
		id = a.id;
		pos = end + 1;
	}
	*out = id;
	return 0;
}

static int write_piece(const void *data, size_t len, void *arg)
{
	void **ctx = arg;
	struct kv_store *kv = ctx[0];
	uint64_t id = *(uint64_t *)ctx[1], *off = ctx[2];
	ssize_t n = kv_write(kv, id, data, len, *off);

	if (n < 0)
		return (int)n;
	/* Short only at max_value_size, lowered since the backup was made. */
	if ((size_t)n != len)
		return -EFBIG;
	*off += len;
	return 0;
}

/* Called for every value of an archive of the chain, in archive order. */
static int put_key(void *arg, struct kv_bk_ent *e, struct kv_value *v)
{
	struct restore *r = arg;
	const char *slash = strrchr(e->path, '/');
	const char *name = slash ? slash + 1 : e->path;
	uint64_t dir, off = 0;
	struct kv_attr a;
	void *ctx[3];
	int ret;

	if (!e->win || (e->m.expires_ms && e->m.expires_ms <= r->now_ms)) {
		kv_value_free(v);
		return 0;
	}
	ret = ensure_dir(r, e->path, slash ? (size_t)(slash - e->path) : 0, &dir);
	if (!ret && kv_lookup(r->kv, dir, name, &a) == 0 && S_ISDIR(a.mode))
		ret = remove_tree(r->kv, dir, name, 0);
	if (!ret)
		ret = kv_create(r->kv, dir, name, e->m.mode & 07777, e->m.uid, e->m.gid, false,
				&a);
	if (!ret)
		ret = kv_open_file(r->kv, a.id, true);
	if (!ret) {
		ctx[0] = r->kv;
		ctx[1] = &a.id;
		ctx[2] = &off;
		ret = kv_value_foreach(v, write_piece, ctx);
		kv_release_file(r->kv, a.id);
	}
	kv_value_free(v);
	if (!ret)
		ret = set_meta(r->kv, a.id, &e->m, true);
	if (ret) {
		NLOG(NLOG_ERROR, "backup", "cannot restore a key", LF_STR("error", strerror(-ret)));
		return ret;
	}
	r->restored++;
	return 0;
}

static bool is_ancestor(const char *dir, const struct kv_bk_state *st)
{
	size_t len = strlen(dir);

	for (size_t i = 0; i < st->n; i++)
		if (!strncmp(st->keys[i]->path, dir, len) && st->keys[i]->path[len] == '/')
			return true;
	return false;
}

/* --clear: removes every key and directory below id that the state lacks. */
static int clear_other(struct restore *r, const struct kv_bk_state *st, uint64_t id,
		       const char *path, int depth)
{
	struct kv_dirent *ents;
	char sub[KV_KEY_MAX + 1];
	size_t n;
	int ret;

	if (depth > (int)KV_KEY_MAX)
		return -ELOOP;
	ret = kv_readdir(r->kv, id, &ents, &n);
	if (ret)
		return ret;
	for (size_t i = 0; i < n && !ret; i++) {
		const struct kv_bk_ent *e;

		if ((size_t)snprintf(sub, sizeof(sub), "%s%s%s", path, *path ? "/" : "",
				     ents[i].name) >= sizeof(sub))
			continue;
		if (!S_ISDIR(ents[i].mode)) {
			e = kv_bk_state_find(st, sub);
			if (!e || (e->m.expires_ms && e->m.expires_ms <= r->now_ms))
				ret = remove_one(r->kv, id, ents[i].name, ents[i].id, false);
			continue;
		}
		ret = clear_other(r, st, ents[i].id, sub, depth + 1);
		if (!ret && !find_dir(r->last, sub) && !is_ancestor(sub, st))
			ret = remove_one(r->kv, id, ents[i].name, ents[i].id, true);
	}
	kv_dirents_free(ents, n);
	return ret == -ENOENT ? 0 : ret;
}

static int lookup_path(struct kv_store *kv, const char *path, struct kv_attr *a)
{
	char name[KV_NAME_MAX + 1];
	uint64_t id = KV_ROOT_ID;

	if (!*path)
		return kv_getattr(kv, KV_ROOT_ID, a);
	for (const char *p = path; p;) {
		const char *slash = strchr(p, '/');
		size_t n = slash ? (size_t)(slash - p) : strlen(p);
		int ret;

		memcpy(name, p, n);
		name[n] = '\0';
		ret = kv_lookup(kv, id, name, a);
		if (ret)
			return ret;
		id = a->id;
		p = slash ? slash + 1 : NULL;
	}
	return 0;
}

/* Directories: made first (parents before children: the list is depth
 * first), their metadata set last, children before parents. */
static int apply_dirs(struct restore *r, bool meta)
{
	const struct kv_bk_manifest *mf = r->last;
	int ret = 0;

	for (size_t k = 0; k < mf->ndirs && !ret; k++) {
		const struct kv_bk_ent *d = &mf->dirs[meta ? mf->ndirs - 1 - k : k];
		struct kv_attr a;
		uint64_t id;

		if (!meta) {
			ret = ensure_dir(r, d->path, strlen(d->path), &id);
			continue;
		}
		ret = lookup_path(r->kv, d->path, &a);
		if (!ret)
			ret = set_meta(r->kv, a.id, &d->m, false);
	}
	return ret;
}

int kv_backup_restore(struct kv_store *kv, const char *id, bool clear, uint64_t *restored,
		      char *err, size_t errlen)
{
	struct kv_bk_manifest *chain = NULL;
	struct kv_bk_state st = { 0 };
	struct restore r = { .kv = kv };
	const char *dir = kv->backup_dir;
	struct kv_bk_lock lk;
	char path[4096];
	size_t n = 0;
	int ret;

	*restored = 0;
	err[0] = '\0';
	if (!dir) {
		snprintf(err, errlen, "no backup directory: set backup_dir (there is no local "
			 "data directory to hold backups/)");
		return -EINVAL;
	}
	if (kv_backup_check_id(id)) {
		snprintf(err, errlen, "bad backup id '%.140s': ids are 1 to 128 of "
			 "[A-Za-z0-9._-], not starting with '.' (names, not paths)", id);
		return -EINVAL;
	}
	pthread_mutex_lock(&kv->backup_lock);
	/* Shared, held until every archive of the chain is read twice (checked,
	 * then applied): a prune or a create waits, restores of stores sharing
	 * the directory run together. */
	ret = kv_bk_lock(dir, false, false, kv->opts.backend_timeout_ms, &lk, err, errlen);
	if (ret) {
		pthread_mutex_unlock(&kv->backup_lock);
		return ret;
	}
	/* Every archive whole and every checksum right, before any change. */
	kv_bk_progress_start(&kv->backup_progress, KV_BK_RESTORE);
	ret = kv_bk_load_chain(dir, id, &chain, &n, &kv->backup_progress, err, errlen);
	if (ret)
		goto out_unlock;
	ret = kv_bk_state_build(chain, n, &st);
	if (ret)
		goto out_free;
	r.last = &chain[n - 1];
	r.now_ms = kv_now_ms();
	if (clear) {
		ret = clear_other(&r, &st, KV_ROOT_ID, "", 0);
		if (ret) {
			snprintf(err, errlen, "cannot clear the store: %s", strerror(-ret));
			goto out_free;
		}
	}
	ret = apply_dirs(&r, false);
	if (ret) {
		snprintf(err, errlen, "cannot restore the directories: %s", strerror(-ret));
		goto out_free;
	}
	for (size_t i = 0; i < n && !ret; i++) {
		if (kv_bk_archive_path(dir, chain[i].id, path, sizeof(path))) {
			snprintf(err, errlen, "backup %s vanished during the restore", chain[i].id);
			ret = -ENOENT;
			break;
		}
		ret = kv_bk_read(path, &chain[i], put_key, &r, NULL, &kv->backup_progress, err,
				 errlen);
	}
	if (!ret)
		ret = apply_dirs(&r, true);
	for (size_t i = 0; !ret && i < r.last->ndeclared; i++) {
		ret = kv_tag_mkdir(kv, r.last->declared[i]);
		if (ret == -EEXIST)
			ret = 0;
	}
	if (ret && !*err)
		snprintf(err, errlen, "restore failed part-way: %s", strerror(-ret));
	/* The reply should find the kernel's caches already told. */
	kv_wait_invals(kv, 5000);
	*restored = r.restored;
	NLOG(ret ? NLOG_ERROR : NLOG_INFO, "backup", ret ? "restore failed" : "backup restored",
	     LF_STR("id", id), LF_INT("keys", r.restored));
out_free:
	kv_bk_state_free(&st);
	kv_bk_chain_free(chain, n);
out_unlock:
	kv_bk_progress_start(&kv->backup_progress, KV_BK_NONE);
	kv_bk_unlock(dir, &lk, false);
	pthread_mutex_unlock(&kv->backup_lock);
	return ret;
}
