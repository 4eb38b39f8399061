/*
 * The reserved root directories: tags/ (tag listings and queries) and .nadb/
 * (control files, transactions). They are served by fs/ itself and never
 * reach the store as keys, so no key can ever take their names.
 *
 * .nadb/ holds the control files (fs_ctl.c); fs_tags.c answers for what is
 * inside tags/. Nothing else can be created inside them, and neither they
 * nor their contents can be removed or renamed, since a rename across them
 * would turn a key into something else.
 */
#include "fs/fs_int.h"

#include <errno.h>
#include <string.h>

struct virt_entry {
	fuse_ino_t parent;
	const char *name;
	fuse_ino_t ino;
	mode_t mode;
};

/* In the order their directories list them. */
static const struct virt_entry virt[] = {
	{ FUSE_ROOT_ID, ".nadb", FS_INO_NADB, S_IFDIR | 0700 },
	{ FUSE_ROOT_ID, "tags", FS_INO_TAGS, S_IFDIR | 0755 },
	{ FS_INO_NADB, "ctl", FS_INO_CTL, S_IFREG | 0600 },
	{ FS_INO_NADB, "metrics", FS_INO_METRICS, S_IFREG | 0400 },
	{ FS_INO_NADB, "stats", FS_INO_STATS, S_IFREG | 0400 },
	{ FS_INO_NADB, "tx", FS_INO_TX, S_IFDIR | 0700 },
};

#define NVIRT (sizeof(virt) / sizeof(virt[0]))

static const struct virt_entry *virt_by_ino(fuse_ino_t ino)
{
	for (size_t i = 0; i < NVIRT; i++)
		if (virt[i].ino == ino)
			return &virt[i];
	return NULL;
}

fuse_ino_t fs_virt_ino(fuse_ino_t parent, const char *name)
{
	for (size_t i = 0; i < NVIRT; i++)
		if (virt[i].parent == parent && strcmp(virt[i].name, name) == 0)
			return virt[i].ino;
	return 0;
}

/*
 * .nadb/ and what is in it belong to the mounting user (the modes in the
 * table); ctl_mode opens them to others: ctl gets ctl_mode itself, the
 * read-only files its read bits, the directories search (and, for tx/,
 * write) to the classes ctl_mode lets in.
 */
static mode_t virt_mode(const struct fs *fs, const struct virt_entry *v)
{
	mode_t cm = fs->o.ctl_mode ? fs->o.ctl_mode & 0777 : 0600, grant = 0;

	for (int shift = 0; shift <= 3; shift += 3)
		if (cm & (07 << shift))
			grant |= (cm & (02 << shift)) ? (07 << shift) : (05 << shift);
	switch (v->ino) {
	case FS_INO_CTL:
		return S_IFREG | cm;
	case FS_INO_STATS:
	case FS_INO_METRICS:
		return v->mode | (cm & 0044);
	case FS_INO_NADB:
		return v->mode | (grant & 0055);
	case FS_INO_TX:
		return v->mode | grant;
	default:
		return v->mode;
	}
}

void fs_virt_stat(const struct fs *fs, fuse_ino_t ino, struct stat *st)
{
	const struct virt_entry *v = virt_by_ino(ino);

	memset(st, 0, sizeof(*st));
	st->st_ino = ino;
	st->st_mode = v ? virt_mode(fs, v) : S_IFDIR | 0500;
	st->st_nlink = v && S_ISREG(v->mode) ? 1 : 2;
	st->st_uid = fs->o.uid;
	st->st_gid = fs->o.gid;
	st->st_blksize = 4096;
	st->st_atim = st->st_mtim = st->st_ctim = fs->started;
}

void fs_virt_entry(const struct fs *fs, fuse_ino_t ino, struct fuse_entry_param *e)
{
	memset(e, 0, sizeof(*e));
	e->ino = ino;
	e->generation = 1;
	e->attr_timeout = fs->attr_timeout;
	e->entry_timeout = fs->entry_timeout;
	fs_virt_stat(fs, ino, &e->attr);
}

size_t fs_virt_count(fuse_ino_t dir)
{
	size_t n = 0;

	for (size_t i = 0; i < NVIRT; i++)
		n += virt[i].parent == dir;
	return n;
}

void fs_virt_get(fuse_ino_t dir, size_t i, const char **name, fuse_ino_t *ino, mode_t *mode)
{
	for (size_t k = 0; k < NVIRT; k++) {
		if (virt[k].parent != dir || i--)
			continue;
		*name = virt[k].name;
		*ino = virt[k].ino;
		*mode = virt[k].mode;
		return;
	}
}

/* The root of a transaction's view stands for the mount's root: a key
 * there must not take a reserved name, which it would have once committed. */
static bool reserved_here(struct fs *fs, fuse_ino_t parent, const char *name)
{
	struct kv_attr a;

	if (fs_virt_ino(parent, name))
		return true;
	return kv_is_tx_id(parent) && fs_virt_ino(FUSE_ROOT_ID, name) &&
	       kv_getattr(fs->kv, parent, &a) == 0 && a.parent == 0;
}

int fs_virt_check_create(struct fs *fs, fuse_ino_t parent, const char *name)
{
	if (reserved_here(fs, parent, name))
		return -EEXIST;
	if (fs_is_virt(parent))
		return -EPERM;
	return 0;
}

int fs_virt_check_remove(fuse_ino_t parent, const char *name)
{
	if (fs_virt_ino(parent, name))
		return -EPERM;
	/* Nothing else exists inside them. */
	if (fs_is_virt(parent))
		return -ENOENT;
	return 0;
}

int fs_virt_check_rename(struct fs *fs, fuse_ino_t parent, const char *name,
			 fuse_ino_t newparent, const char *newname)
{
	/* Between tag directories, EXDEV: mv then falls back to ln -s in
	 * the target and rm in the source, which moves the tag. */
	if (fs_is_tagdir(parent) && fs_is_tagdir(newparent))
		return -EXDEV;
	if (fs_is_virt(parent) || fs_is_virt(newparent))
		return -EPERM;
	if (fs_virt_ino(parent, name) || reserved_here(fs, newparent, newname))
		return -EPERM;
	return 0;
}
