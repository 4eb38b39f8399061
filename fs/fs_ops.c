/*
 * The operation table handed to libfuse. Every request handler is wrapped in
 * a trampoline that times it (fs_opstats.c); the handlers themselves live in
 * the file of their responsibility (see fs_int.h).
 *
 * The trampoline reads struct fs before calling the handler: once a handler
 * has replied, req is gone.
 */
#include "fs/fs_int.h"

#define TIMED(name, OP, params, args)                                                          \
	static void timed_##name params                                                        \
	{                                                                                      \
		struct fs *fs_ = fs_of(req);                                                   \
		int64_t t0_ = fs_op_start();                                                   \
		fs_op_##name args;                                                             \
		fs_op_done(fs_, OP, t0_);                                                      \
	}

typedef struct fuse_file_info fi_t;

TIMED(lookup, FS_OP_LOOKUP, (fuse_req_t req, fuse_ino_t p, const char *n), (req, p, n))
TIMED(getattr, FS_OP_GETATTR, (fuse_req_t req, fuse_ino_t i, fi_t *fi), (req, i, fi))
TIMED(setattr, FS_OP_SETATTR, (fuse_req_t req, fuse_ino_t i, struct stat *a, int s, fi_t *fi),
      (req, i, a, s, fi))
TIMED(readlink, FS_OP_READLINK, (fuse_req_t req, fuse_ino_t i), (req, i))
TIMED(mknod, FS_OP_MKNOD, (fuse_req_t req, fuse_ino_t p, const char *n, mode_t m, dev_t d),
      (req, p, n, m, d))
TIMED(mkdir, FS_OP_MKDIR, (fuse_req_t req, fuse_ino_t p, const char *n, mode_t m),
      (req, p, n, m))
TIMED(unlink, FS_OP_UNLINK, (fuse_req_t req, fuse_ino_t p, const char *n), (req, p, n))
TIMED(rmdir, FS_OP_RMDIR, (fuse_req_t req, fuse_ino_t p, const char *n), (req, p, n))
TIMED(symlink, FS_OP_SYMLINK, (fuse_req_t req, const char *l, fuse_ino_t p, const char *n),
      (req, l, p, n))
TIMED(rename, FS_OP_RENAME,
      (fuse_req_t req, fuse_ino_t p, const char *n, fuse_ino_t np, const char *nn, unsigned f),
      (req, p, n, np, nn, f))
TIMED(link, FS_OP_LINK, (fuse_req_t req, fuse_ino_t i, fuse_ino_t np, const char *nn),
      (req, i, np, nn))
TIMED(create, FS_OP_CREATE, (fuse_req_t req, fuse_ino_t p, const char *n, mode_t m, fi_t *fi),
      (req, p, n, m, fi))
TIMED(open, FS_OP_OPEN, (fuse_req_t req, fuse_ino_t i, fi_t *fi), (req, i, fi))
TIMED(read, FS_OP_READ, (fuse_req_t req, fuse_ino_t i, size_t s, off_t o, fi_t *fi),
      (req, i, s, o, fi))
TIMED(write, FS_OP_WRITE,
      (fuse_req_t req, fuse_ino_t i, const char *b, size_t s, off_t o, fi_t *fi),
      (req, i, b, s, o, fi))
TIMED(flush, FS_OP_FLUSH, (fuse_req_t req, fuse_ino_t i, fi_t *fi), (req, i, fi))
TIMED(release, FS_OP_RELEASE, (fuse_req_t req, fuse_ino_t i, fi_t *fi), (req, i, fi))
TIMED(fsync, FS_OP_FSYNC, (fuse_req_t req, fuse_ino_t i, int d, fi_t *fi), (req, i, d, fi))
TIMED(opendir, FS_OP_OPENDIR, (fuse_req_t req, fuse_ino_t i, fi_t *fi), (req, i, fi))
TIMED(readdir, FS_OP_READDIR, (fuse_req_t req, fuse_ino_t i, size_t s, off_t o, fi_t *fi),
      (req, i, s, o, fi))
TIMED(readdirplus, FS_OP_READDIRPLUS,
      (fuse_req_t req, fuse_ino_t i, size_t s, off_t o, fi_t *fi), (req, i, s, o, fi))
TIMED(releasedir, FS_OP_RELEASEDIR, (fuse_req_t req, fuse_ino_t i, fi_t *fi), (req, i, fi))
TIMED(fsyncdir, FS_OP_FSYNCDIR, (fuse_req_t req, fuse_ino_t i, int d, fi_t *fi),
      (req, i, d, fi))
TIMED(statfs, FS_OP_STATFS, (fuse_req_t req, fuse_ino_t i), (req, i))
TIMED(setxattr, FS_OP_SETXATTR,
      (fuse_req_t req, fuse_ino_t i, const char *n, const char *v, size_t s, int f),
      (req, i, n, v, s, f))
TIMED(getxattr, FS_OP_GETXATTR, (fuse_req_t req, fuse_ino_t i, const char *n, size_t s),
      (req, i, n, s))
TIMED(listxattr, FS_OP_LISTXATTR, (fuse_req_t req, fuse_ino_t i, size_t s), (req, i, s))
TIMED(removexattr, FS_OP_REMOVEXATTR, (fuse_req_t req, fuse_ino_t i, const char *n),
      (req, i, n))

/*
 * No access(): the mount always uses default_permissions, so the kernel
 * checks modes itself. Locks are left to the kernel (local to this mount).
 * forget needs no timing: it has no reply to wait for.
 */
static const struct fuse_lowlevel_ops fs_ops = {
	.init = fs_op_init,
	.destroy = fs_op_destroy,
	.lookup = timed_lookup,
	.forget = fs_op_forget,
	.forget_multi = fs_op_forget_multi,
	.getattr = timed_getattr,
	.setattr = timed_setattr,
	.readlink = timed_readlink,
	.mknod = timed_mknod,
	.mkdir = timed_mkdir,
	.unlink = timed_unlink,
	.rmdir = timed_rmdir,
	.symlink = timed_symlink,
	.rename = timed_rename,
	.link = timed_link,
	.create = timed_create,
	.open = timed_open,
	.read = timed_read,
	.write = timed_write,
	.flush = timed_flush,
	.release = timed_release,
	.fsync = timed_fsync,
	.opendir = timed_opendir,
	.readdir = timed_readdir,
	.readdirplus = timed_readdirplus,
	.releasedir = timed_releasedir,
	.fsyncdir = timed_fsyncdir,
	.statfs = timed_statfs,
	.setxattr = timed_setxattr,
	.getxattr = timed_getxattr,
	.listxattr = timed_listxattr,
	.removexattr = timed_removexattr,
};

const struct fuse_lowlevel_ops *fs_lowlevel_ops(void)
{
	return &fs_ops;
}
