/*
 * Names and directories: lookup, the namespace operations (mkdir, create's
 * siblings, unlink, rmdir, rename) and directory listings.
 *
 * A listing is a snapshot taken at opendir (and again when a reader rewinds
 * to offset 0), so offsets stay stable while keys come and go: the offset of
 * an entry is its index in the snapshot plus one.
 */
#include "fs/fs_int.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h> /* RENAME_NOREPLACE */
#include <stdlib.h>
#include <string.h>

/* The directory handle kept in fi->fh. */
struct fs_dirh {
	struct fs_handle h;	/* first: fi->fh points at both */
	pthread_mutex_t lock;	/* readers of one handle may race on rewinds */
	fuse_ino_t ino;
	struct fs_dent *ents;	/* lock */
	size_t n;		/* lock */
	struct kv_dirent *kv_ents; /* lock; owns the names of store entries */
	size_t kv_n;		/* lock */
	bool read;		/* lock: a listing has been served from this snapshot */
};

struct fs_dent {
	const char *name;
	fuse_ino_t ino;
	mode_t mode;
};

void fs_op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct fs *fs = fs_of(req);
	struct fuse_entry_param e;
	struct kv_attr a;
	fuse_ino_t vino;
	int ret;

	ret = fs_check_name(name);
	if (ret) {
		fs_reply_err(req, ret);
		return;
	}
	if (fs_in_tags(parent)) {
		fs_tags_lookup(req, parent, name);
		return;
	}
	if (parent == FS_INO_TX) {
		ret = kv_tx_root(fs->kv, name, &a);
		fs_reply_entry(req, ret, &a);
		return;
	}
	vino = fs_virt_ino(parent, name);
	if (vino) {
		fs_virt_entry(fs, vino, &e);
		fuse_reply_entry(req, &e);
		return;
	}
	if (fs_is_virt(parent)) {
		fs_reply_err(req, -ENOENT);
		return;
	}
	ret = kv_lookup(fs->kv, parent, name, &a);
	/* Close-to-open: another mount may have just made it. */
	if (ret == -ENOENT && fs->o.close_to_open && !kv_refresh(fs->kv, parent, name, 0))
		ret = kv_lookup(fs->kv, parent, name, &a);
	if (ret == -ENOENT) {
		/*
		 * Every change to the store passes through this kernel, or is
		 * invalidated by the store's sync thread when another mount
		 * makes it, so a negative answer may be cached like a
		 * positive one (not in a transaction's view, which shows the
		 * store through it).
		 */
		memset(&e, 0, sizeof(e));
		e.entry_timeout = kv_is_tx_id(parent) ? 0 : fs->entry_timeout;
		fuse_reply_entry(req, &e);
		return;
	}
	fs_reply_entry(req, ret, &a);
}

int fs_new_owner(fuse_req_t req, fuse_ino_t parent, bool is_dir, uint32_t *mode, uint32_t *uid,
		 uint32_t *gid)
{
	const struct fuse_ctx *ctx = fuse_req_ctx(req);
	struct kv_attr pa;
	int ret;

	ret = kv_getattr(fs_of(req)->kv, parent, &pa);
	if (ret)
		return ret;
	*uid = ctx->uid;
	*gid = ctx->gid;
	if (pa.mode & S_ISGID) {
		*gid = pa.gid;
		if (is_dir)
			*mode |= S_ISGID;
	}
	return 0;
}

void fs_op_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode)
{
	struct kv_attr a;
	uint32_t m = mode & 07777, uid, gid;
	int ret;

	if (fs_in_tags(parent)) {
		fs_tags_mkdir(req, parent, name);
		return;
	}
	/* mkdir .nadb/tx/NAME begins a transaction. */
	if (parent == FS_INO_TX) {
		ret = kv_tx_begin(fs_of(req)->kv, name, &a);
		fs_reply_entry(req, ret, &a);
		return;
	}
	ret = fs_virt_check_create(fs_of(req), parent, name);
	if (!ret)
		ret = kv_check_name(name);
	if (!ret)
		ret = fs_new_owner(req, parent, true, &m, &uid, &gid);
	if (!ret)
		ret = kv_mkdir(fs_of(req)->kv, parent, name, m, uid, gid, &a);
	fs_reply_entry(req, ret, &a);
}

/*
 * Only regular files exist: mknod(S_IFREG) makes an empty key as on any
 * filesystem, every other type is refused.
 */
void fs_op_mknod(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, dev_t rdev)
{
	struct kv_attr a;
	uint32_t m = mode & 07777, uid, gid;
	int ret;

	(void)rdev;
	ret = fs_virt_check_create(fs_of(req), parent, name);
	if (!ret && (mode & S_IFMT) != S_IFREG && (mode & S_IFMT) != 0)
		ret = -EPERM;
	if (!ret)
		ret = kv_check_name(name);
	if (!ret)
		ret = fs_new_owner(req, parent, false, &m, &uid, &gid);
	if (!ret)
		ret = kv_create(fs_of(req)->kv, parent, name, m, uid, gid, true, &a);
	fs_reply_entry(req, ret, &a);
}

/* Keys are regular files; a symlink into a tag directory tags the key its
 * name names, whatever it points to. */
void fs_op_symlink(fuse_req_t req, const char *link, fuse_ino_t parent, const char *name)
{
	int ret;

	(void)link;
	if (fs_in_tags(parent)) {
		fs_tags_symlink(req, parent, name);
		return;
	}
	ret = fs_virt_check_create(fs_of(req), parent, name);
	fs_reply_err(req, ret ? ret : -EPERM);
}

void fs_op_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char *newname)
{
	int ret = fs_virt_check_create(fs_of(req), newparent, newname);

	(void)ino;
	fs_reply_err(req, ret ? ret : -EPERM);
}

void fs_op_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	int ret;

	if (fs_in_tags(parent)) {
		fs_tags_unlink(req, parent, name);
		return;
	}
	ret = fs_virt_check_remove(parent, name);

	if (!ret)
		ret = fs_check_name(name);
	if (!ret)
		ret = kv_unlink(fs_of(req)->kv, parent, name);
	fs_reply_err(req, ret);
}

void fs_op_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	int ret;

	if (fs_in_tags(parent)) {
		fs_tags_rmdir(req, parent, name);
		return;
	}
	/* rmdir .nadb/tx/NAME aborts it, whatever it holds. */
	if (parent == FS_INO_TX) {
		fs_reply_err(req, kv_tx_abort(fs_of(req)->kv, name));
		return;
	}
	ret = fs_virt_check_remove(parent, name);

	if (!ret)
		ret = fs_check_name(name);
	if (!ret)
		ret = kv_rmdir(fs_of(req)->kv, parent, name);
	fs_reply_err(req, ret);
}

void fs_op_rename(fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent,
		  const char *newname, unsigned int flags)
{
	int ret = 0;

	/*
	 * EINVAL, not ENOSYS, for an exchange: ENOSYS would make the kernel
	 * refuse every rename with flags afterwards, RENAME_NOREPLACE included.
	 */
	if (flags & ~(unsigned)RENAME_NOREPLACE)
		ret = -EINVAL;
	if (!ret)
		ret = fs_virt_check_rename(fs_of(req), parent, name, newparent, newname);
	if (!ret)
		ret = fs_check_name(name);
	if (!ret)
		ret = kv_check_name(newname);
	if (!ret)
		ret = kv_rename(fs_of(req)->kv, parent, name, newparent, newname, flags);
	fs_reply_err(req, ret);
}

/* Fills d with a fresh snapshot; on error d is left as it was. */
static int dirh_snapshot(struct fs *fs, struct fs_dirh *d)
{
	struct kv_dirent *kv_ents = NULL;
	struct fs_dent *ents;
	size_t kv_n = 0, n = 0, nvirt = 0;
	int ret;

	if (fs_in_tags(d->ino))
		ret = fs_tags_list(fs, d->ino, &kv_ents, &kv_n);
	else if (d->ino == FS_INO_TX)
		ret = kv_tx_list(fs->kv, &kv_ents, &kv_n);
	else if (!fs_is_virt(d->ino))
		ret = kv_readdir(fs->kv, d->ino, &kv_ents, &kv_n);
	else
		ret = 0;
	if (ret)
		return ret;
	nvirt = fs_virt_count(d->ino);
	ents = calloc(2 + nvirt + kv_n, sizeof(*ents));
	if (!ents) {
		kv_dirents_free(kv_ents, kv_n);
		return -ENOMEM;
	}
	uint64_t up = FUSE_ROOT_ID;
	struct kv_attr self;

	if (fs_is_tagdir(d->ino))
		up = FS_INO_TAGS;
	else if (!fs_is_virt(d->ino) && d->ino != FUSE_ROOT_ID &&
		 kv_getattr(fs->kv, d->ino, &self) == 0)
		up = self.parent ? self.parent : kv_is_tx_id(d->ino) ? FS_INO_TX : up;
	ents[n++] = (struct fs_dent){ ".", d->ino, S_IFDIR };
	ents[n++] = (struct fs_dent){ "..", up, S_IFDIR };
	for (size_t i = 0; i < nvirt; i++) {
		mode_t mode;

		fs_virt_get(d->ino, i, &ents[n].name, &ents[n].ino, &mode);
		ents[n].mode = mode;
		n++;
	}
	for (size_t i = 0; i < kv_n; i++) {
		/* The store never holds the reserved names; shadow them if it did. */
		if (nvirt && fs_virt_ino(FUSE_ROOT_ID, kv_ents[i].name))
			continue;
		ents[n++] = (struct fs_dent){ kv_ents[i].name, kv_ents[i].id, kv_ents[i].mode };
	}
	free(d->ents);
	kv_dirents_free(d->kv_ents, d->kv_n);
	d->ents = ents;
	d->n = n;
	d->kv_ents = kv_ents;
	d->kv_n = kv_n;
	d->read = false;
	return 0;
}

static void dirh_free(struct fs_handle *h)
{
	struct fs_dirh *d = (struct fs_dirh *)h;

	free(d->ents);
	kv_dirents_free(d->kv_ents, d->kv_n);
	pthread_mutex_destroy(&d->lock);
	free(d);
}

void fs_op_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct fs *fs = fs_of(req);
	struct fs_dirh *d;
	int ret;

	d = calloc(1, sizeof(*d));
	if (!d) {
		fs_reply_err(req, -ENOMEM);
		return;
	}
	pthread_mutex_init(&d->lock, NULL);
	d->ino = ino;
	ret = dirh_snapshot(fs, d);
	if (ret) {
		dirh_free(&d->h);
		fs_reply_err(req, ret);
		return;
	}
	fi->fh = (uintptr_t)d;
	fs_handle_link(fs, &d->h, dirh_free);
	if (fuse_reply_open(req, fi)) /* interrupted: no releasedir will come */
		fs_handle_release(fs, &d->h);
}

/* Attributes of one listed entry for readdirplus: 0, or -ENOENT if it is gone. */
static int dent_entry(struct fs *fs, fuse_ino_t dir, const struct fs_dent *de,
		      struct fuse_entry_param *e)
{
	struct kv_attr a;
	int ret;

	if (strcmp(de->name, ".") == 0 || strcmp(de->name, "..") == 0) {
		/* The kernel takes no reference on these: type and number only. */
		memset(e, 0, sizeof(*e));
		e->attr.st_ino = de->ino;
		e->attr.st_mode = de->mode;
		return 0;
	}
	if (fs_in_tags(dir))
		return fs_tags_entry(fs, dir, de->name, e);
	if (fs_is_virt(de->ino)) {
		fs_virt_entry(fs, de->ino, e);
		return 0;
	}
	/* By name, as a lookup: the kernel caches this entry like a lookup's
	 * answer, and since the snapshot the name may have been renamed
	 * away (which would bring it back for entry_timeout) or over. */
	ret = kv_lookup(fs->kv, dir, de->name, &a);
	if (ret)
		return ret;
	fs_fill_entry(fs, &a, e);
	return 0;
}

static void do_readdir(fuse_req_t req, size_t size, off_t off, struct fuse_file_info *fi,
		       bool plus)
{
	struct fs *fs = fs_of(req);
	struct fs_dirh *d = (struct fs_dirh *)(uintptr_t)fi->fh;
	/* Tag directories listed with readdirplus hold a lookup reference
	 * each; if the reply never reaches the kernel, they are dropped. */
	fuse_ino_t *refs = NULL;
	size_t pos = 0, nrefs = 0;
	char *buf;
	int ret = 0;

	buf = malloc(size ? size : 1);
	if (!buf) {
		fs_reply_err(req, -ENOMEM);
		return;
	}
	pthread_mutex_lock(&d->lock);
	/* A rewind (rewinddir, or a second pass) sees the directory as it is now. */
	if (off == 0 && d->read) {
		ret = dirh_snapshot(fs, d);
		if (ret)
			goto out_unlock;
	}
	for (size_t i = off < 0 ? 0 : (size_t)off; i < d->n; i++) {
		const struct fs_dent *de = &d->ents[i];
		size_t len;

		if (plus) {
			struct fuse_entry_param e;

			/* Removed since the snapshot: leave it out. */
			if (dent_entry(fs, d->ino, de, &e))
				continue;
			len = fuse_add_direntry_plus(req, buf + pos, size - pos, de->name, &e,
						     (off_t)(i + 1));
			if (fs_is_tagdir(e.ino)) {
				if (len <= size - pos && !refs)
					refs = malloc((d->n - i) * sizeof(*refs));
				/* Left for the next call (or not to be remembered):
				 * the kernel takes no reference. */
				if (len > size - pos || !refs) {
					fs_tags_forget(fs, e.ino, 1);
					break;
				}
				refs[nrefs++] = e.ino;
			}
		} else {
			struct stat st = { .st_ino = de->ino, .st_mode = de->mode & S_IFMT };

			len = fuse_add_direntry(req, buf + pos, size - pos, de->name, &st,
						(off_t)(i + 1));
		}
		if (len > size - pos)
			break;
		pos += len;
	}
	d->read = true;
out_unlock:
	pthread_mutex_unlock(&d->lock);
	if (ret)
		fs_reply_err(req, ret);
	else if (fuse_reply_buf(req, buf, pos))
		for (size_t i = 0; i < nrefs; i++)
			fs_tags_forget(fs, refs[i], 1);
	free(refs);
	free(buf);
}

void fs_op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		   struct fuse_file_info *fi)
{
	(void)ino;
	do_readdir(req, size, off, fi, false);
}

void fs_op_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		       struct fuse_file_info *fi)
{
	(void)ino;
	do_readdir(req, size, off, fi, true);
}

void fs_op_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct fs_dirh *d = (struct fs_dirh *)(uintptr_t)fi->fh;

	(void)ino;
	fs_handle_release(fs_of(req), &d->h);
	fs_reply_err(req, 0);
}

/*
 * fsync on the mount's root is the documented way to flush everything, since
 * sync(1) never reaches a FUSE daemon. Elsewhere it makes that directory's
 * own record durable.
 */
void fs_op_fsyncdir(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
	struct fs *fs = fs_of(req);
	int ret = 0;

	(void)datasync;
	(void)fi;
	if (ino == FUSE_ROOT_ID)
		ret = kv_flush(fs->kv);
	else if (!fs_is_virt(ino))
		ret = kv_fsync(fs->kv, ino);
	fs_reply_err(req, ret);
}
