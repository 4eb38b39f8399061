/*
 * FUSE operations core: the session's init, attributes, statfs, extended
 * attributes, the reply helpers every handler uses, and the operation table.
 */
#include "fs/fs_int.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>

#include "util/log.h"

/*
 * Large writes cost one round trip per MiB instead of one per 128 KiB;
 * libfuse 3.14 caps it to its own buffer and tells the kernel max_pages.
 */
#define FS_MAX_WRITE (1u << 20)

/*
 * statfs: the store has no inode table that could run out, so free inodes
 * are reported as plenty; f_files - f_ffree (what df -i shows as used) is
 * then exactly the number of keys.
 */
#define FS_FREE_INODES (1ULL << 32)

void fs_reply_err(fuse_req_t req, int err)
{
	/*
	 * A positive value is a bug in a caller. ENOSYS would make the kernel
	 * stop sending this operation for the life of the mount, so it never
	 * reaches the kernel from a store error.
	 */
	if (err > 0 || err == -ENOSYS) {
		log_msg(NLOG_ERROR, "fs", "unexpected result %d, answering EIO", err);
		err = -EIO;
	}
	fuse_reply_err(req, -err);
}

static void ns_to_timespec(int64_t ns, struct timespec *ts)
{
	ts->tv_sec = ns / 1000000000;
	ts->tv_nsec = ns % 1000000000;
	if (ts->tv_nsec < 0) {
		ts->tv_nsec += 1000000000;
		ts->tv_sec--;
	}
}

void fs_attr_to_stat(const struct kv_attr *a, struct stat *st)
{
	memset(st, 0, sizeof(*st));
	st->st_ino = a->id;
	st->st_mode = a->mode;
	st->st_nlink = a->nlink;
	/* The reserved directories are subdirectories of the root like any other. */
	if (a->id == FUSE_ROOT_ID)
		st->st_nlink += fs_virt_count(FUSE_ROOT_ID);
	st->st_uid = a->uid;
	st->st_gid = a->gid;
	st->st_size = (off_t)a->size;
	st->st_blksize = 4096;
	st->st_blocks = (blkcnt_t)((a->size + 511) / 512);
	ns_to_timespec(a->atime_ns, &st->st_atim);
	ns_to_timespec(a->mtime_ns, &st->st_mtim);
	ns_to_timespec(a->ctime_ns, &st->st_ctim);
}

/* A transaction's view shows the store through it, which changes without
 * telling the kernel: no caching there. */
double fs_attr_timeout(const struct fs *fs, uint64_t ino)
{
	return kv_is_tx_id(ino) ? 0 : fs->attr_timeout;
}

void fs_fill_entry(const struct fs *fs, const struct kv_attr *a, struct fuse_entry_param *e)
{
	memset(e, 0, sizeof(*e));
	e->ino = a->id;
	/* Ids are never reused, so one generation serves the whole life of a store. */
	e->generation = 1;
	e->attr_timeout = fs_attr_timeout(fs, a->id);
	e->entry_timeout = fs_attr_timeout(fs, a->id);
	if (!kv_is_tx_id(a->id))
		e->entry_timeout = fs->entry_timeout;
	fs_attr_to_stat(a, &e->attr);
}

void fs_reply_entry(fuse_req_t req, int err, const struct kv_attr *a)
{
	struct fuse_entry_param e;

	if (err) {
		fs_reply_err(req, err);
		return;
	}
	fs_fill_entry(fs_of(req), a, &e);
	fuse_reply_entry(req, &e);
}

int fs_check_name(const char *name)
{
	size_t len = strlen(name);

	/* FUSE passes names up to 1024 bytes; a key component stops at 255. */
	if (len > KV_NAME_MAX)
		return -ENAMETOOLONG;
	if (len == 0)
		return -EINVAL;
	return 0;
}

void fs_op_init(void *userdata, struct fuse_conn_info *conn)
{
	(void)userdata;

	/*
	 * The writeback cache would hold dirty pages past the flush bound and
	 * hide EFBIG/EIO from write(2): it stays off whatever libfuse's default.
	 * Suid/sgid clearing is the kernel's for cached writes and ours for
	 * direct ones (fs_op_write); ACLs are left to the kernel.
	 */
	conn->want &= ~(unsigned)(FUSE_CAP_WRITEBACK_CACHE | FUSE_CAP_HANDLE_KILLPRIV |
				  FUSE_CAP_POSIX_ACL);
	/* open(O_TRUNC) then reaches the store as one step instead of open + setattr. */
	if (conn->capable & FUSE_CAP_ATOMIC_O_TRUNC)
		conn->want |= FUSE_CAP_ATOMIC_O_TRUNC;
	if (conn->capable & FUSE_CAP_READDIRPLUS)
		conn->want |= FUSE_CAP_READDIRPLUS;
	if (conn->capable & FUSE_CAP_READDIRPLUS_AUTO)
		conn->want |= FUSE_CAP_READDIRPLUS_AUTO;
	if (conn->capable & FUSE_CAP_PARALLEL_DIROPS)
		conn->want |= FUSE_CAP_PARALLEL_DIROPS;
	/* fs_loop.c reads the device with plain non-blocking reads. */
	conn->want &= ~(unsigned)FUSE_CAP_SPLICE_READ;
	/*
	 * The kernel keeps a key's pages across opens only while the store
	 * knows them current (kv_cache.c), and is told of every change it did
	 * not make itself. Its own guess (drop the pages whenever fresh
	 * attributes show a new mtime) would drop the pages of every file
	 * just written: the write's reply leaves the cached mtime stale.
	 */
	conn->want &= ~(unsigned)FUSE_CAP_AUTO_INVAL_DATA;
	conn->max_write = FS_MAX_WRITE;
	/* Times are kept in nanoseconds. */
	conn->time_gran = 1;
	log_msg(NLOG_DEBUG, "fs", "fuse connection: protocol %u.%u, max_write %u",
		conn->proto_major, conn->proto_minor, conn->max_write);
}

void fs_op_destroy(void *userdata)
{
	(void)userdata;
	/* The store is flushed and closed by the daemon once the loop ends. */
	log_msg(NLOG_DEBUG, "fs", "fuse session destroyed");
}

/* Ids are permanent and nothing is kept per lookup of a record: only tag
 * directories, known by their expression, are counted. */
void fs_op_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
	if (fs_is_tagdir(ino))
		fs_tags_forget(fs_of(req), ino, nlookup);
	fuse_reply_none(req);
}

void fs_op_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data *forgets)
{
	for (size_t i = 0; i < count; i++)
		if (fs_is_tagdir(forgets[i].ino))
			fs_tags_forget(fs_of(req), forgets[i].ino, forgets[i].nlookup);
	fuse_reply_none(req);
}

void fs_op_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct fs *fs = fs_of(req);
	struct kv_attr a;
	struct stat st;
	int ret;

	(void)fi;
	if (fs_is_tagdir(ino) || fs_is_link(ino)) {
		ret = fs_tags_getattr(fs, ino, &st);
		if (ret)
			fs_reply_err(req, ret);
		else
			fuse_reply_attr(req, &st, 0); /* see fs_tags.c on caching */
		return;
	} else if (fs_is_virt(ino)) {
		fs_virt_stat(fs, ino, &st);
	} else {
		ret = kv_getattr(fs->kv, ino, &a);
		if (ret) {
			fs_reply_err(req, ret);
			return;
		}
		fs_attr_to_stat(&a, &st);
	}
	fuse_reply_attr(req, &st, fs_attr_timeout(fs, ino));
}

static int64_t timespec_to_ns(const struct timespec *ts)
{
	return (int64_t)ts->tv_sec * 1000000000 + ts->tv_nsec;
}

/* ftruncate (fi != NULL) and truncate take the same path: handles carry no state. */
void fs_op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set,
		   struct fuse_file_info *fi)
{
	struct fs *fs = fs_of(req);
	struct kv_setattr sa = { 0 };
	struct kv_attr a;
	struct stat st;
	int ret;

	(void)fi;
	if (fs_is_link(ino)) {
		fs_tags_setattr(req, ino, attr, to_set);
		return;
	}
	if (fs_is_virt(ino)) {
		fs_reply_err(req, -EPERM);
		return;
	}
	if (to_set & FUSE_SET_ATTR_MODE) {
		sa.mask |= KV_SET_MODE;
		sa.mode = attr->st_mode & 07777;
	}
	if (to_set & FUSE_SET_ATTR_UID) {
		sa.mask |= KV_SET_UID;
		sa.uid = attr->st_uid;
	}
	if (to_set & FUSE_SET_ATTR_GID) {
		sa.mask |= KV_SET_GID;
		sa.gid = attr->st_gid;
	}
	if (to_set & FUSE_SET_ATTR_SIZE) {
		if (attr->st_size < 0) {
			fs_reply_err(req, -EINVAL);
			return;
		}
		sa.mask |= KV_SET_SIZE;
		sa.size = (uint64_t)attr->st_size;
	}
	/* The kernel sends ATIME together with ATIME_NOW for UTIME_NOW. */
	if (to_set & FUSE_SET_ATTR_ATIME_NOW) {
		sa.mask |= KV_SET_ATIME_NOW;
	} else if (to_set & FUSE_SET_ATTR_ATIME) {
		sa.mask |= KV_SET_ATIME;
		sa.atime_ns = timespec_to_ns(&attr->st_atim);
	}
	if (to_set & FUSE_SET_ATTR_MTIME_NOW) {
		sa.mask |= KV_SET_MTIME_NOW;
	} else if (to_set & FUSE_SET_ATTR_MTIME) {
		sa.mask |= KV_SET_MTIME;
		sa.mtime_ns = timespec_to_ns(&attr->st_mtim);
	}
	/* FUSE_SET_ATTR_CTIME needs nothing: the store sets ctime on any change. */
	/* A push stores the size of the value it copied into the kernel's
	 * inode: the reply's size must come after any push that copied before
	 * the change (after the change, a push copies the new size). */
	if ((sa.mask & KV_SET_SIZE) && !fs_is_virt(ino))
		fs_push_wait(fs, ino);
	ret = kv_setattr(fs->kv, ino, &sa, &a);
	if ((sa.mask & KV_SET_SIZE) && !fs_is_virt(ino))
		fs_push_wait(fs, ino);
	if (ret) {
		fs_reply_err(req, ret);
		return;
	}
	fs_attr_to_stat(&a, &st);
	fuse_reply_attr(req, &st, fs->attr_timeout);
}

void fs_op_statfs(fuse_req_t req, fuse_ino_t ino)
{
	struct fs *fs = fs_of(req);
	struct kv_backend_statfs space = { 0 };
	struct statvfs sv;
	uint64_t keys = 0;
	int ret;

	(void)ino;
	ret = kv_statfs(fs->kv, &space, &keys);
	if (ret) {
		fs_reply_err(req, ret);
		return;
	}
	memset(&sv, 0, sizeof(sv));
	sv.f_bsize = space.bsize ? space.bsize : 4096;
	sv.f_frsize = sv.f_bsize;
	sv.f_blocks = space.blocks;
	sv.f_bfree = space.bfree;
	sv.f_bavail = space.bavail;
	sv.f_files = keys + FS_FREE_INODES;
	sv.f_ffree = FS_FREE_INODES;
	sv.f_favail = FS_FREE_INODES;
	sv.f_namemax = KV_NAME_MAX;
	fuse_reply_statfs(req, &sv);
}

/*
 * Extended attributes live in the store (custom user.* and the read-only
 * user.nadb.*); every other namespace answers ENOTSUP here at once, which
 * keeps the kernel's security.capability probe before each write cheap.
 * The virtual directories have none.
 */
static int xattr_target(fuse_ino_t ino, const char *name)
{
	if (name && strncmp(name, "user.", 5) != 0)
		return -ENOTSUP;
	if (fs_is_virt(ino))
		return -ENOTSUP;
	return 0;
}

/* Replies to getxattr/listxattr: a length when asked for one, else bytes. */
static void reply_xattr(fuse_req_t req, ssize_t ret, const char *buf, size_t size)
{
	if (ret < 0)
		fs_reply_err(req, (int)ret);
	else if (size == 0)
		fuse_reply_xattr(req, (size_t)ret);
	else
		fuse_reply_buf(req, buf, (size_t)ret);
}

void fs_op_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name, const char *value,
		    size_t size, int flags)
{
	int ret = xattr_target(ino, name);

	if (!ret)
		ret = kv_setxattr(fs_of(req)->kv, ino, name, value, size, flags);
	fs_reply_err(req, ret);
}

void fs_op_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size)
{
	char *buf = NULL;
	ssize_t ret = xattr_target(ino, name);

	if (!ret && size && !(buf = malloc(size)))
		ret = -ENOMEM;
	if (!ret)
		ret = kv_getxattr(fs_of(req)->kv, ino, name, buf, size);
	reply_xattr(req, ret, buf, size);
	free(buf);
}

void fs_op_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size)
{
	char *buf = NULL;
	ssize_t ret = 0;

	if (fs_is_virt(ino)) {
		reply_xattr(req, 0, NULL, size);
		return;
	}
	if (size && !(buf = malloc(size)))
		ret = -ENOMEM;
	if (!ret)
		ret = kv_listxattr(fs_of(req)->kv, ino, buf, size);
	reply_xattr(req, ret, buf, size);
	free(buf);
}

void fs_op_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name)
{
	int ret = xattr_target(ino, name);

	if (!ret)
		ret = kv_removexattr(fs_of(req)->kv, ino, name);
	fs_reply_err(req, ret);
}

int fs_new(struct kv_store *kv, const struct fs_options *o, struct fs **out)
{
	struct fs *fs;

	if (!kv || !o || o->attr_timeout < 0 || o->entry_timeout < 0)
		return -EINVAL;
	fs = calloc(1, sizeof(*fs));
	if (!fs)
		return -ENOMEM;
	fs->kv = kv;
	fs->o = *o;
	fs->attr_timeout = o->attr_timeout;
	fs->entry_timeout = o->entry_timeout;
	pthread_mutex_init(&fs->handles_lock, NULL);
	pthread_mutex_init(&fs->defer.lock, NULL);
	pthread_cond_init(&fs->defer.cond, NULL);
	pthread_mutex_init(&fs->push.lock, NULL);
	pthread_cond_init(&fs->push.cond, NULL);
	fs_tags_init(fs);
	clock_gettime(CLOCK_REALTIME, &fs->started);
	*out = fs;
	return 0;
}

/*
 * Runs on the store's sweeper thread (expired keys) or its sync thread
 * (records another mount changed), which serve no FUSE request: sending an
 * invalidation from a request handler could deadlock with the kernel.
 */
static void fs_on_expire(void *arg, uint64_t parent, const char *name, uint64_t id)
{
	struct fs *fs = arg;

	/* Counted first, then the check: fs_push_may_end sets notify_closed,
	 * then reads the count, so one of the two sees the other. Once the
	 * session is ending no request is answered, and an invalidation that
	 * waits for a page a READ holds would never return. */
	atomic_fetch_add(&fs->notifying, 1);
	if (!atomic_load(&fs->notify_closed)) {
		/* -ENOENT only means the kernel had nothing cached: nothing to
		 * drop. The root has no entry (parent 0). */
		if (parent && name[0])
			fuse_lowlevel_notify_inval_entry(fs->se, parent, name, strlen(name));
		fuse_lowlevel_notify_inval_inode(fs->se, id, 0, 0);
	}
	atomic_fetch_sub(&fs->notifying, 1);
}

void fs_set_timeouts(struct fs *fs, double attr_timeout, double entry_timeout)
{
	if (attr_timeout >= 0)
		fs->attr_timeout = attr_timeout;
	if (entry_timeout >= 0)
		fs->entry_timeout = entry_timeout;
}

void fs_attach(struct fs *fs, struct fuse_session *se)
{
	fs->se = se;
	kv_set_expire_fn(fs->kv, fs_on_expire, fs);
}

void fs_handle_link(struct fs *fs, struct fs_handle *h, void (*free_fn)(struct fs_handle *h))
{
	h->free = free_fn;
	pthread_mutex_lock(&fs->handles_lock);
	h->prev = NULL;
	h->next = fs->handles;
	if (fs->handles)
		fs->handles->prev = h;
	fs->handles = h;
	pthread_mutex_unlock(&fs->handles_lock);
}

void fs_handle_release(struct fs *fs, struct fs_handle *h)
{
	if (!h)
		return;
	pthread_mutex_lock(&fs->handles_lock);
	if (h->prev)
		h->prev->next = h->next;
	else
		fs->handles = h->next;
	if (h->next)
		h->next->prev = h->prev;
	pthread_mutex_unlock(&fs->handles_lock);
	h->free(h);
}

/* Frees the handles the kernel never released; the loop has returned. */
static void handles_free_all(struct fs *fs)
{
	struct fs_handle *h, *next;

	pthread_mutex_lock(&fs->handles_lock);
	for (h = fs->handles; h; h = next) {
		next = h->next;
		h->free(h);
	}
	fs->handles = NULL;
	pthread_mutex_unlock(&fs->handles_lock);
}

void fs_free(struct fs *fs)
{
	if (!fs)
		return;
	fs_drain(fs);
	handles_free_all(fs);
	fs_tags_free(fs);
	pthread_mutex_destroy(&fs->handles_lock);
	pthread_mutex_destroy(&fs->defer.lock);
	pthread_cond_destroy(&fs->defer.cond);
	pthread_mutex_destroy(&fs->push.lock);
	pthread_cond_destroy(&fs->push.cond);
	free(fs);
}
