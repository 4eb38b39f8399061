/*
 * tags/: one directory per tag or query expression, whose entries are
 * symlinks to the keys (spec section 4). The store resolves everything
 * (store/tag_query.c); this file maps it onto inodes and replies.
 *
 * Inodes. A tag or query directory is numbered by a hash of its expression
 * (so readdir and lookup agree without allocating anything) and kept in a
 * table while the kernel holds a lookup reference, since the kernel names a
 * directory by its inode alone. An entry is numbered by its key's id with
 * FS_INO_LINK_BIT set: one symlink inode per key, shared by every directory
 * that lists it, which is right because every listing sits at the same depth
 * and the link text is the same.
 *
 * Caching. Everything under tags/ is answered with zero entry and attribute
 * timeouts, and negative lookups are not cached. Any change (a tag set, a
 * key renamed, deleted or expired, another mount's change) can alter many
 * listings at once; with zero timeouts the kernel asks again at each access
 * instead of showing a stale one, at the cost of one round trip per path
 * component under tags/. Listings are never cached by the kernel.
 */
#include "fs/fs_int.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "store/htab.h"

/* "../../": from tags/EXPR/ back to the mount's root. */
#define LINK_UP	    "../../"
#define LINK_UP_LEN (sizeof(LINK_UP) - 1)

struct fs_tagdir {
	fuse_ino_t ino;
	uint64_t nlookup; /* fs->tagdirs_lock */
	bool query;
	char expr[];
};

static uint64_t dir_ino_hash(const void *item)
{
	return htab_hash_u64(((const struct fs_tagdir *)item)->ino);
}

static bool dir_ino_match(const void *item, const void *key)
{
	return ((const struct fs_tagdir *)item)->ino == *(const fuse_ino_t *)key;
}

void fs_tags_init(struct fs *fs)
{
	pthread_mutex_init(&fs->tagdirs_lock, NULL);
	htab_init(&fs->tagdirs, dir_ino_hash, dir_ino_match);
}

void fs_tags_free(struct fs *fs)
{
	struct fs_tagdir *d;

	for (size_t i = 0; (d = htab_next(&fs->tagdirs, &i));)
		free(d);
	htab_destroy(&fs->tagdirs);
	pthread_mutex_destroy(&fs->tagdirs_lock);
}

static struct fs_tagdir *dir_find(struct fs *fs, fuse_ino_t ino)
{
	return htab_find(&fs->tagdirs, htab_hash_u64(ino), &ino);
}

/* The inode a directory named expr has when nothing collides with it. */
static fuse_ino_t dir_ino_of(const char *expr)
{
	return FS_INO_TAGDIR_BIT | (XXH64(expr, strlen(expr), 0) & ~FS_INO_TAGDIR_BIT);
}

/*
 * Takes one lookup reference on the directory expr, entering it in the table
 * if needed. The next free number after its hash settles a collision, so two
 * expressions never share an inode while both are known to the kernel.
 */
static int dir_ref(struct fs *fs, const char *expr, bool query, fuse_ino_t *out)
{
	fuse_ino_t ino = dir_ino_of(expr);
	struct fs_tagdir *d;
	size_t len = strlen(expr);
	int ret = 0;

	pthread_mutex_lock(&fs->tagdirs_lock);
	while ((d = dir_find(fs, ino)) && strcmp(d->expr, expr))
		ino = FS_INO_TAGDIR_BIT | ((ino + 1) & ~FS_INO_TAGDIR_BIT);
	if (!d) {
		d = calloc(1, sizeof(*d) + len + 1);
		if (!d) {
			ret = -ENOMEM;
			goto out;
		}
		d->ino = ino;
		d->query = query;
		memcpy(d->expr, expr, len + 1);
		ret = htab_insert(&fs->tagdirs, d);
		if (ret) {
			free(d);
			goto out;
		}
	}
	d->nlookup++;
	*out = ino;
out:
	pthread_mutex_unlock(&fs->tagdirs_lock);
	return ret;
}

void fs_tags_forget(struct fs *fs, fuse_ino_t ino, uint64_t nlookup)
{
	struct fs_tagdir *d;

	pthread_mutex_lock(&fs->tagdirs_lock);
	d = dir_find(fs, ino);
	if (d) {
		d->nlookup = nlookup < d->nlookup ? d->nlookup - nlookup : 0;
		if (!d->nlookup) {
			htab_remove(&fs->tagdirs, d);
			free(d);
		}
	}
	pthread_mutex_unlock(&fs->tagdirs_lock);
}

/* The expression of directory ino, copied into buf. */
static int dir_expr(struct fs *fs, fuse_ino_t ino, char buf[KV_NAME_MAX + 1], bool *query)
{
	struct fs_tagdir *d;
	int ret = -ENOENT;

	pthread_mutex_lock(&fs->tagdirs_lock);
	d = dir_find(fs, ino);
	if (d) {
		strcpy(buf, d->expr);
		*query = d->query;
		ret = 0;
	}
	pthread_mutex_unlock(&fs->tagdirs_lock);
	return ret;
}

static void dir_stat(const struct fs *fs, fuse_ino_t ino, bool query, struct stat *st)
{
	memset(st, 0, sizeof(*st));
	st->st_ino = ino;
	/* Queries are read-only; a tag takes ln -s and rm. */
	st->st_mode = S_IFDIR | (query ? 0555 : 0755);
	st->st_nlink = 2;
	st->st_uid = fs->o.uid;
	st->st_gid = fs->o.gid;
	st->st_blksize = 4096;
	st->st_atim = st->st_mtim = st->st_ctim = fs->started;
}

/* The symlink standing for key a: its size is the length of its text. */
static int link_stat(struct fs *fs, const struct kv_attr *a, struct stat *st)
{
	char path[KV_KEY_MAX + 1];
	ssize_t len = kv_key_path(fs->kv, a->id, path, sizeof(path));

	if (len < 0)
		return (int)len;
	fs_attr_to_stat(a, st);
	st->st_ino = FS_INO_LINK_BIT | a->id;
	st->st_mode = S_IFLNK | 0777;
	st->st_nlink = 1;
	st->st_size = (off_t)(LINK_UP_LEN + (size_t)len);
	st->st_blocks = 0;
	return 0;
}

static void zero_timeouts(struct fuse_entry_param *e)
{
	e->attr_timeout = 0;
	e->entry_timeout = 0;
}

/* Entry for the directory expr under tags/, with a lookup reference taken. */
static int dir_entry(struct fs *fs, const char *expr, struct fuse_entry_param *e)
{
	fuse_ino_t ino;
	bool query;
	int ret = kv_tag_dir(fs->kv, expr, &query);

	if (!ret)
		ret = dir_ref(fs, expr, query, &ino);
	if (ret)
		return ret;
	memset(e, 0, sizeof(*e));
	e->ino = ino;
	e->generation = 1;
	dir_stat(fs, ino, query, &e->attr);
	zero_timeouts(e);
	return 0;
}

static int link_entry(struct fs *fs, const struct kv_attr *a, struct fuse_entry_param *e)
{
	memset(e, 0, sizeof(*e));
	e->ino = FS_INO_LINK_BIT | a->id;
	e->generation = 1;
	zero_timeouts(e);
	return link_stat(fs, a, &e->attr);
}

int fs_tags_entry(struct fs *fs, fuse_ino_t parent, const char *name, struct fuse_entry_param *e)
{
	char expr[KV_NAME_MAX + 1];
	struct kv_attr a;
	bool query;
	int ret;

	if (parent == FS_INO_TAGS)
		return dir_entry(fs, name, e);
	ret = dir_expr(fs, parent, expr, &query);
	if (!ret)
		ret = kv_tag_lookup(fs->kv, expr, name, &a);
	if (!ret)
		ret = link_entry(fs, &a, e);
	return ret;
}

/* An entry replied to the kernel holds a reference, unless the reply failed. */
static void reply_entry(struct fs *fs, fuse_req_t req, int ret, struct fuse_entry_param *e)
{
	if (ret) {
		fs_reply_err(req, ret);
		return;
	}
	if (fuse_reply_entry(req, e) && fs_is_tagdir(e->ino))
		fs_tags_forget(fs, e->ino, 1);
}

void fs_tags_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct fs *fs = fs_of(req);
	struct fuse_entry_param e;

	reply_entry(fs, req, fs_tags_entry(fs, parent, name, &e), &e);
}

int fs_tags_getattr(struct fs *fs, fuse_ino_t ino, struct stat *st)
{
	char expr[KV_NAME_MAX + 1];
	struct kv_attr a;
	bool query;
	int ret;

	if (fs_is_tagdir(ino)) {
		ret = dir_expr(fs, ino, expr, &query);
		if (!ret)
			dir_stat(fs, ino, query, st);
		return ret;
	}
	ret = kv_getattr(fs->kv, ino & ~FS_INO_LINK_BIT, &a);
	return ret ? ret : link_stat(fs, &a, st);
}

/*
 * An entry's owner and times are its key's. mv and cp -a across tag
 * directories set them to what they already are, which succeeds; any real
 * change is refused (chown or touch the key itself).
 */
void fs_tags_setattr(fuse_req_t req, fuse_ino_t ino, const struct stat *attr, int to_set)
{
	struct fs *fs = fs_of(req);
	struct stat st;
	int ret = fs_tags_getattr(fs, ino, &st);

	if (ret)
		goto out_err;
	ret = -EPERM;
	if ((to_set & (FUSE_SET_ATTR_MODE | FUSE_SET_ATTR_SIZE | FUSE_SET_ATTR_ATIME_NOW |
		       FUSE_SET_ATTR_MTIME_NOW)) ||
	    ((to_set & FUSE_SET_ATTR_UID) && attr->st_uid != st.st_uid) ||
	    ((to_set & FUSE_SET_ATTR_GID) && attr->st_gid != st.st_gid) ||
	    ((to_set & FUSE_SET_ATTR_ATIME) && (attr->st_atim.tv_sec != st.st_atim.tv_sec ||
						attr->st_atim.tv_nsec != st.st_atim.tv_nsec)) ||
	    ((to_set & FUSE_SET_ATTR_MTIME) && (attr->st_mtim.tv_sec != st.st_mtim.tv_sec ||
						attr->st_mtim.tv_nsec != st.st_mtim.tv_nsec)))
		goto out_err;
	fuse_reply_attr(req, &st, 0);
	return;

out_err:
	fs_reply_err(req, ret);
}

void fs_op_readlink(fuse_req_t req, fuse_ino_t ino)
{
	char text[LINK_UP_LEN + KV_KEY_MAX + 1] = LINK_UP;
	ssize_t len;

	if (!fs_is_link(ino)) {
		fs_reply_err(req, -EINVAL);
		return;
	}
	len = kv_key_path(fs_of(req)->kv, ino & ~FS_INO_LINK_BIT, text + LINK_UP_LEN,
			  sizeof(text) - LINK_UP_LEN);
	if (len < 0)
		fs_reply_err(req, (int)len);
	else
		fuse_reply_readlink(req, text);
}

int fs_tags_list(struct fs *fs, fuse_ino_t ino, struct kv_dirent **out, size_t *n)
{
	char expr[KV_NAME_MAX + 1];
	bool query;
	int ret;

	if (ino == FS_INO_TAGS) {
		ret = kv_tag_list(fs->kv, out, n);
		for (size_t i = 0; !ret && i < *n; i++)
			(*out)[i].id = dir_ino_of((*out)[i].name);
		return ret;
	}
	ret = dir_expr(fs, ino, expr, &query);
	if (!ret)
		ret = kv_tag_readdir(fs->kv, expr, out, n);
	for (size_t i = 0; !ret && i < *n; i++)
		(*out)[i].id |= FS_INO_LINK_BIT;
	return ret;
}

void fs_tags_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct fs *fs = fs_of(req);
	struct fuse_entry_param e;
	int ret = parent == FS_INO_TAGS ? 0 : -EPERM;

	if (!ret)
		ret = kv_tag_mkdir(fs->kv, name);
	if (!ret)
		ret = dir_entry(fs, name, &e);
	reply_entry(fs, req, ret, &e);
}

void fs_tags_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	bool query;
	int ret = parent == FS_INO_TAGS ? 0 : -ENOTDIR;

	if (!ret)
		ret = kv_tag_dir(fs_of(req)->kv, name, &query);
	/* A query is not a thing that can be removed. */
	if (!ret && query)
		ret = -EPERM;
	if (!ret)
		ret = kv_tag_rmdir(fs_of(req)->kv, name);
	fs_reply_err(req, ret);
}

void fs_tags_symlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct fs *fs = fs_of(req);
	char expr[KV_NAME_MAX + 1];
	struct fuse_entry_param e;
	struct kv_attr a;
	bool query = false;
	int ret = parent == FS_INO_TAGS ? -EPERM : dir_expr(fs, parent, expr, &query);

	if (!ret && query)
		ret = -EPERM;
	if (!ret)
		ret = kv_tag_link(fs->kv, expr, name, &a);
	if (!ret)
		ret = link_entry(fs, &a, &e);
	reply_entry(fs, req, ret, &e);
}

void fs_tags_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct fs *fs = fs_of(req);
	char expr[KV_NAME_MAX + 1];
	bool query = false;
	int ret = parent == FS_INO_TAGS ? -EISDIR : dir_expr(fs, parent, expr, &query);

	if (!ret && query)
		ret = -EPERM;
	if (!ret)
		ret = kv_tag_unlink(fs->kv, expr, name);
	fs_reply_err(req, ret);
}
