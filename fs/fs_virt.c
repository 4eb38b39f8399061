/*
 * The reserved root directories: tags/ (tag listings and queries) and .nadb/
 * (control files, transactions). They are served by fs/ itself and never
 * reach the store as keys, so no key can ever take their names.
 *
 * Both are empty for now; later changes fill them. Until then nothing can be
 * created inside them, and neither they nor their contents can be removed or
 * renamed, since a rename across them would turn a key into something else.
 */
#include "fs/fs_int.h"

#include <errno.h>
#include <string.h>

struct virt_dir {
	const char *name;
	fuse_ino_t ino;
	mode_t mode;
};

/* In the order the root lists them. */
static const struct virt_dir virt_dirs[] = {
	{ ".nadb", FS_INO_NADB, S_IFDIR | 0700 },
	{ "tags", FS_INO_TAGS, S_IFDIR | 0755 },
};

#define NVIRT (sizeof(virt_dirs) / sizeof(virt_dirs[0]))

static const struct virt_dir *virt_by_ino(fuse_ino_t ino)
{
	for (size_t i = 0; i < NVIRT; i++)
		if (virt_dirs[i].ino == ino)
			return &virt_dirs[i];
	return NULL;
}

fuse_ino_t fs_virt_ino(fuse_ino_t parent, const char *name)
{
	if (parent != FUSE_ROOT_ID)
		return 0;
	for (size_t i = 0; i < NVIRT; i++)
		if (strcmp(virt_dirs[i].name, name) == 0)
			return virt_dirs[i].ino;
	return 0;
}

void fs_virt_stat(const struct fs *fs, fuse_ino_t ino, struct stat *st)
{
	const struct virt_dir *v = virt_by_ino(ino);

	memset(st, 0, sizeof(*st));
	st->st_ino = ino;
	st->st_mode = v ? v->mode : S_IFDIR | 0500;
	st->st_nlink = 2;
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
	e->attr_timeout = fs->o.attr_timeout;
	e->entry_timeout = fs->o.entry_timeout;
	fs_virt_stat(fs, ino, &e->attr);
}

size_t fs_virt_root_count(void)
{
	return NVIRT;
}

void fs_virt_root_get(size_t i, const char **name, fuse_ino_t *ino)
{
	*name = virt_dirs[i].name;
	*ino = virt_dirs[i].ino;
}

int fs_virt_check_create(fuse_ino_t parent, const char *name)
{
	if (fs_virt_ino(parent, name))
		return -EEXIST;
	if (fs_is_virt(parent))
		return -EPERM;
	return 0;
}

int fs_virt_check_remove(fuse_ino_t parent, const char *name)
{
	if (fs_virt_ino(parent, name))
		return -EPERM;
	/* They are empty: nothing inside to remove. */
	if (fs_is_virt(parent))
		return -ENOENT;
	return 0;
}

int fs_virt_check_rename(fuse_ino_t parent, const char *name, fuse_ino_t newparent,
			 const char *newname)
{
	if (fs_is_virt(parent) || fs_is_virt(newparent))
		return -EPERM;
	if (fs_virt_ino(parent, name) || fs_virt_ino(newparent, newname))
		return -EPERM;
	return 0;
}
