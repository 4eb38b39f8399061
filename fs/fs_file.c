/*
 * Open files. A handle carries no state of its own but a page cache token
 * (FS_FH_BEGIN below): the store counts opens per key, so an unlinked key
 * stays readable and writable through its handles until the last release.
 *
 * Writes go through to the store (no writeback cache), so a write is
 * visible to every reader as soon as write(2) returns. The kernel keeps a
 * key's cached pages across opens (keep_cache) only while the store knows
 * them current (kv_cache_begin); otherwise the open drops them, so a file
 * opened after any change reads the current value.
 *
 * A write-only open gets direct I/O. Through the page cache the kernel
 * would ask for security.capability (GETXATTR, its check for privileges to
 * drop) before every write(2): one round trip more for each `echo >` or
 * create+write. With direct I/O it leaves that to the filesystem instead
 * (fs_op_write), and a write-only descriptor can be neither read nor
 * mmap'ed, so nothing is lost by bypassing the cache; Linux drops cached
 * pages of the range a direct write covers. What such a handle wrote is
 * put into the page cache after its release (fs_push.c), as a cached write
 * would have left it there.
 */
#include "fs/fs_int.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>

/* Write-only opens get direct I/O (see above). A WRITE request carries the
 * open flags but not the reply's direct_io, hence this one test for both. */
static bool direct_io_for(const struct fuse_file_info *fi)
{
	return (fi->flags & O_ACCMODE) == O_WRONLY;
}

/*
 * A handle's fh: 0, or FS_FH_BEGIN and the token of kv_cache_begin when its
 * open dropped the kernel's pages. The kernel drops them after the answer,
 * in the opener's context, before open(2) returns; so the first READ
 * through the handle shows they are gone, and starts the cache period
 * (kv_cache_confirm) unless the value changed since the open.
 */
#define FS_FH_BEGIN (1ULL << 63)

/* keep_cache only while a cache period runs (kv_cache_begin). */
static void setup_handle(struct fs *fs, fuse_ino_t ino, struct fuse_file_info *fi)
{
	uint64_t token = 0;
	int cached;

	fi->direct_io = direct_io_for(fi);
	/* A push under way decides what the cache holds: wait for it first. */
	fs_push_wait(fs, ino);
	cached = kv_cache_begin(fs->kv, ino, &token);
	fi->keep_cache = cached == 1;
	/* What a write-only handle writes ends any period it would start. */
	fi->fh = cached == 0 && !fi->direct_io ? FS_FH_BEGIN | token : 0;
	/* FOPEN_NOFLUSH (Linux 5.16+): close(2) has nothing to wait for here
	 * (fs_op_flush), so spare it the FLUSH round trip; older kernels
	 * ignore the flag and still send it. Not with close_to_open, where
	 * close is what makes the file durable and visible to other mounts. */
	fi->noflush = !fs->o.close_to_open;
}

void fs_op_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
		  struct fuse_file_info *fi)
{
	struct fs *fs = fs_of(req);
	struct fuse_entry_param e;
	struct kv_attr a;
	uint32_t m = mode & 07777, uid, gid;
	bool trunc = fi->flags & O_TRUNC;
	int ret;

	ret = fs_virt_check_create(fs_of(req), parent, name);
	if (!ret)
		ret = kv_check_name(name);
	if (!ret)
		ret = fs_new_owner(req, parent, false, &m, &uid, &gid);
	if (!ret)
		ret = kv_create(fs->kv, parent, name, m, uid, gid, fi->flags & O_EXCL, &a);
	if (ret)
		goto out_err;
	/* Without O_EXCL the key may have existed (made meanwhile by someone
	 * else). A push must not grow the file past a truncation. */
	if (trunc && a.size)
		fs_push_wait(fs, a.id);
	ret = kv_open_file(fs->kv, a.id, trunc && a.size);
	if (ret)
		goto out_err;
	if (trunc && a.size) {
		ret = kv_getattr(fs->kv, a.id, &a);
		if (ret)
			goto out_release;
	}
	setup_handle(fs, a.id, fi);
	fs_fill_entry(fs, &a, &e);
	/* An interrupted opener never sends release: drop its open here. */
	if (fuse_reply_create(req, &e, fi))
		kv_release_file(fs->kv, a.id);
	return;

out_release:
	kv_release_file(fs->kv, a.id);
out_err:
	fs_reply_err(req, ret);
}

void fs_op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct fs *fs = fs_of(req);
	int ret;

	if (fs_ctl_is_file(ino)) {
		fs_ctl_open(req, ino, fi);
		return;
	}
	if (fs_is_virt(ino)) {
		fs_reply_err(req, -EISDIR);
		return;
	}
	/* Another mount's close came before this open: see what it wrote. A
	 * failure leaves what this mount has, as when the backend is away. */
	if (fs->o.close_to_open)
		kv_refresh(fs->kv, 0, NULL, ino);
	/* With FUSE_CAP_ATOMIC_O_TRUNC the kernel leaves truncation to open.
	 * A push must not grow the file past it. */
	if (fi->flags & O_TRUNC)
		fs_push_wait(fs, ino);
	ret = kv_open_file(fs->kv, ino, fi->flags & O_TRUNC);
	if (ret) {
		fs_reply_err(req, ret);
		return;
	}
	setup_handle(fs, ino, fi);
	if (fuse_reply_open(req, fi))
		kv_release_file(fs->kv, ino);
}

void fs_op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		struct fuse_file_info *fi)
{
	struct fs *fs = fs_of(req);
	ssize_t n;
	char *buf;

	if (fs_ctl_is_file(ino)) {
		fs_ctl_read(req, fi, size, off);
		return;
	}
	if (off < 0) {
		fs_reply_err(req, -EINVAL);
		return;
	}
	if (fi->fh & FS_FH_BEGIN)
		kv_cache_confirm(fs->kv, ino, fi->fh & ~FS_FH_BEGIN);
	buf = malloc(size ? size : 1);
	if (!buf) {
		fs_reply_err(req, -ENOMEM);
		return;
	}
	n = kv_read(fs->kv, ino, buf, size, (uint64_t)off);
	if (n < 0)
		fs_reply_err(req, (int)n);
	else
		fuse_reply_buf(req, buf, (size_t)n);
	free(buf);
}

void fs_op_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off,
		 struct fuse_file_info *fi)
{
	ssize_t n;

	if (fs_ctl_is_file(ino)) {
		fs_ctl_write(req, fi, buf, size);
		return;
	}
	if (off < 0) {
		fs_reply_err(req, -EINVAL);
		return;
	}
	/* What the kernel does for callers without CAP_FSETID before a cached
	 * write, done here for direct I/O (libfuse 3.14 does not pass on
	 * FUSE_WRITE_KILL_SUIDGID; root is taken to hold CAP_FSETID). The
	 * kernel's cached mode must go at once: exec(2) and permission checks
	 * read it without asking while attr_timeout lasts. Attributes only
	 * (offset -1): no page or inode lock is taken, so this is safe from
	 * inside a request. */
	if (direct_io_for(fi) && fuse_req_ctx(req)->uid != 0) {
		bool killed;
		int ret = kv_kill_suidgid(fs_of(req)->kv, ino, &killed);

		if (ret) {
			fs_reply_err(req, ret);
			return;
		}
		if (killed)
			fuse_lowlevel_notify_inval_inode(fs_of(req)->se, ino, -1, 0);
	}
	n = kv_write_try(fs_of(req)->kv, ino, buf, size, (uint64_t)off);
	if (n == -EWOULDBLOCK) {
		/* The buffer is full: wait off the worker, reply from there. */
		n = fs_defer_write(fs_of(req), req, ino, buf, size, (uint64_t)off);
		if (!n)
			return;
	}
	if (n < 0)
		fs_reply_err(req, (int)n);
	else
		fuse_reply_write(req, (size_t)n);
}

/*
 * close(2) only queues the value for the next flush (the durability bound is
 * flush_interval), so there is nothing to wait for here, unless
 * close_to_open asks close to make the file durable (and so visible to the
 * other mounts) before it returns, as NFS does.
 */
void fs_op_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct fs *fs = fs_of(req);
	int ret = 0;

	/* The request carries no open flags: a key with nothing buffered
	 * costs nothing here. */
	(void)fi;
	if (fs->o.close_to_open && !fs_is_virt(ino) && !fs_ctl_is_file(ino))
		ret = kv_fsync(fs->kv, ino);
	fs_reply_err(req, ret == -ENOENT ? 0 : ret);
}

void fs_op_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct fs *fs = fs_of(req);

	if (fs_ctl_is_file(ino)) {
		fs_ctl_release(fs, fi);
	} else {
		kv_release_file(fs->kv, ino);
		if (direct_io_for(fi) && !fs_is_virt(ino) && fs->o.max_threads > 1)
			fs_push_queue(fs, ino);
	}
	fs_reply_err(req, 0);
}

/* Returns once this key is durable in the backend; -EIO after backend_timeout. */
void fs_op_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
	(void)datasync;
	(void)fi;
	fs_reply_err(req, fs_is_virt(ino) ? 0 : kv_fsync(fs_of(req)->kv, ino));
}
