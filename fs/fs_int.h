/*
 * Private to fs/: the shared state of the FUSE operations and the helpers the
 * files of this folder share. Operation handlers are named fs_op_<op> and
 * live in the file of their responsibility: fs.c (attributes, statfs, xattrs,
 * session), fs_dir.c (names and directory listings), fs_file.c (open files),
 * fs_virt.c (the reserved root directories tags/ and .nadb/).
 *
 * Every handler replies exactly once. Store calls return 0 or a negative
 * errno; fs_reply_err() is the one place where the sign is flipped for FUSE.
 */
#ifndef NADB_FS_FS_INT_H
#define NADB_FS_FS_INT_H

#define FUSE_USE_VERSION 314

#include <fuse_lowlevel.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/stat.h>
#include <time.h>

#include "fs/fs.h"
#include "store/htab.h"
#include "store/kv.h"

_Static_assert(KV_ROOT_ID == FUSE_ROOT_ID, "the store's root must be FUSE's root inode");

/*
 * Inode numbers, told apart by their two top bits: 00 store records (ids,
 * which never get that far), 01 entries of tag directories (the key's id
 * with FS_INO_LINK_BIT), 10 the reserved directories and control files,
 * 11 tag and query directories (fs_tags.c).
 */
#define FS_INO_LINK_BIT (1ULL << 62)
#define FS_INO_TAGDIR_BIT (3ULL << 62)
#define FS_INO_VIRT_BASE (1ULL << 63)
#define FS_INO_TAGS (FS_INO_VIRT_BASE + 1)
#define FS_INO_NADB (FS_INO_VIRT_BASE + 2)
#define FS_INO_TX (FS_INO_VIRT_BASE + 3)	/* .nadb/tx */
#define FS_INO_STATS (FS_INO_VIRT_BASE + 16)	/* .nadb/stats */
#define FS_INO_METRICS (FS_INO_VIRT_BASE + 17)	/* .nadb/metrics */
#define FS_INO_CTL (FS_INO_VIRT_BASE + 18)	/* .nadb/ctl */

struct fs_dirh;
struct fs_deferred;

/* The operations timed per request (fs_opstats.c), as X(id, name). */
#define FS_OPS(X)                                                                              \
	X(FS_OP_LOOKUP, "lookup") X(FS_OP_GETATTR, "getattr") X(FS_OP_SETATTR, "setattr")      \
	X(FS_OP_READLINK, "readlink") X(FS_OP_MKNOD, "mknod") X(FS_OP_MKDIR, "mkdir")          \
	X(FS_OP_UNLINK, "unlink") X(FS_OP_RMDIR, "rmdir") X(FS_OP_SYMLINK, "symlink")          \
	X(FS_OP_RENAME, "rename") X(FS_OP_LINK, "link") X(FS_OP_CREATE, "create")              \
	X(FS_OP_OPEN, "open") X(FS_OP_READ, "read") X(FS_OP_WRITE, "write")                    \
	X(FS_OP_FLUSH, "flush") X(FS_OP_RELEASE, "release") X(FS_OP_FSYNC, "fsync")            \
	X(FS_OP_OPENDIR, "opendir") X(FS_OP_READDIR, "readdir")                                \
	X(FS_OP_READDIRPLUS, "readdirplus") X(FS_OP_RELEASEDIR, "releasedir")                  \
	X(FS_OP_FSYNCDIR, "fsyncdir") X(FS_OP_STATFS, "statfs") X(FS_OP_SETXATTR, "setxattr")  \
	X(FS_OP_GETXATTR, "getxattr") X(FS_OP_LISTXATTR, "listxattr")                          \
	X(FS_OP_REMOVEXATTR, "removexattr")

enum fs_op {
#define FS_OP_ENUM(id, name) id,
	FS_OPS(FS_OP_ENUM)
#undef FS_OP_ENUM
	FS_OP_COUNT
};

/* Four buckets per power of two of microseconds, up to about an hour. */
#define FS_LAT_BUCKETS 128

struct fs_opstat {
	_Atomic uint64_t count;
	_Atomic uint64_t buckets[FS_LAT_BUCKETS];
};

/*
 * The head of every handle kept in fi->fh (a directory listing, a control
 * file session). The kernel may never send the RELEASE of a file closed just
 * before an unmount: it aborts the connection instead. So every handle is on
 * one list and fs_free() frees what is left.
 */
struct fs_handle {
	struct fs_handle *prev, *next; /* fs->handles_lock */
	void (*free)(struct fs_handle *h);
};

/* Writes waiting for buffer space off the FUSE workers (fs_defer.c). */
struct fs_defer {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct fs_deferred *head, *tail;	/* lock */
	pthread_t thread;
	bool started, stopping;			/* lock */
};

/* Values on their way into the kernel's page cache (fs_push.c). */
struct fs_push_ent;
struct fs_push {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct fs_push_ent *ents;	/* lock: waiting */
	size_t n, cap;			/* lock */
	pthread_t thread;
	bool started;			/* lock */
	bool closed;			/* lock: the session is ending */
	bool busy;			/* lock: a batch is under way */
	uint64_t busy_id;		/* lock: the key being pushed, or 0 */
	atomic_ullong pushed;		/* values stored into the page cache */
};

struct fs {
	struct kv_store *kv;	/* borrowed */
	struct fs_options o;	/* read-only, but for the timeouts below */
	/* o.attr_timeout and o.entry_timeout as a reload may change them. */
	_Atomic double attr_timeout, entry_timeout;
	struct timespec started; /* times of the reserved directories */
	pthread_mutex_t handles_lock;
	struct fs_handle *handles; /* handles_lock: every open handle */
	struct fs_defer defer;
	struct fs_push push;
	/* The store's threads' kernel notifications (fs_on_expire): how many
	 * are under way, and whether the session is ending (fs_push_may_end). */
	atomic_int notifying;
	atomic_bool notify_closed;
	struct fuse_session *se;	/* set by fs_attach before the loop runs */
	/* Tag and query directories the kernel holds (fs_tags.c). Never
	 * held while calling the store. */
	pthread_mutex_t tagdirs_lock;
	struct htab tagdirs;	/* tagdirs_lock: struct fs_tagdir by ino */
	struct fs_opstat opstats[FS_OP_COUNT]; /* atomics, no lock */
};

static inline struct fs *fs_of(fuse_req_t req)
{
	return fuse_req_userdata(req);
}

/* fs_opstats.c */
const char *fs_op_name(enum fs_op op);
/* A monotonic start time for fs_op_done. */
int64_t fs_op_start(void);
/* Records one request of op that started at start_ns. */
void fs_op_done(struct fs *fs, enum fs_op op, int64_t start_ns);
struct fs_op_summary {
	uint64_t count;
	double p50_ms, p99_ms;
};
void fs_op_summary(struct fs *fs, enum fs_op op, struct fs_op_summary *out);

/* fs.c */
void fs_op_init(void *userdata, struct fuse_conn_info *conn);
void fs_op_destroy(void *userdata);
void fs_op_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup);
void fs_op_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data *forgets);
void fs_op_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);
void fs_op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set,
		   struct fuse_file_info *fi);
void fs_op_statfs(fuse_req_t req, fuse_ino_t ino);
void fs_op_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name, const char *value,
		    size_t size, int flags);
void fs_op_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size);
void fs_op_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size);
void fs_op_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name);
/* Replies err (0 or a negative errno) to req. */
void fs_reply_err(fuse_req_t req, int err);
void fs_attr_to_stat(const struct kv_attr *a, struct stat *st);
void fs_fill_entry(const struct fs *fs, const struct kv_attr *a, struct fuse_entry_param *e);
double fs_attr_timeout(const struct fs *fs, uint64_t ino);

/* fs_push.c */
/* Queues the push of id's value into the kernel's page cache. */
void fs_push_queue(struct fs *fs, uint64_t id);
/* Returns once no push of id is under way (or after a bound). */
void fs_push_wait(struct fs *fs, uint64_t id);
/* Stops the thread; no push starts after. */
void fs_push_stop(struct fs *fs);

/* fs_defer.c */
/* Queues a write that found the buffer full; its reply comes later. */
int fs_defer_write(struct fs *fs, fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size,
		   uint64_t off);
/* Replies an entry for a, or err if err is non-zero. */
void fs_reply_entry(fuse_req_t req, int err, const struct kv_attr *a);
/* A name the kernel sends for a new or existing entry: 1..255 bytes. */
int fs_check_name(const char *name);

/* fs_virt.c */
/* Not a store record: served by fs/ itself. */
static inline bool fs_is_virt(fuse_ino_t ino)
{
	return ino >= FS_INO_LINK_BIT;
}
static inline bool fs_is_tagdir(fuse_ino_t ino)
{
	return (ino & FS_INO_TAGDIR_BIT) == FS_INO_TAGDIR_BIT;
}
static inline bool fs_is_link(fuse_ino_t ino)
{
	return (ino & FS_INO_TAGDIR_BIT) == FS_INO_LINK_BIT;
}
/* tags/ or a directory inside it: fs_tags.c answers for its entries. */
static inline bool fs_in_tags(fuse_ino_t ino)
{
	return ino == FS_INO_TAGS || fs_is_tagdir(ino);
}
/* The reserved directory parent/name names, or 0. */
fuse_ino_t fs_virt_ino(fuse_ino_t parent, const char *name);
void fs_virt_stat(const struct fs *fs, fuse_ino_t ino, struct stat *st);
void fs_virt_entry(const struct fs *fs, fuse_ino_t ino, struct fuse_entry_param *e);
/* How many reserved entries the directory dir lists, and the i-th one. */
size_t fs_virt_count(fuse_ino_t dir);
void fs_virt_get(fuse_ino_t dir, size_t i, const char **name, fuse_ino_t *ino, mode_t *mode);

/* fs_ctl.c: the files of .nadb/ */
bool fs_ctl_is_file(fuse_ino_t ino);
void fs_ctl_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);
void fs_ctl_read(fuse_req_t req, struct fuse_file_info *fi, size_t size, off_t off);
void fs_ctl_write(fuse_req_t req, struct fuse_file_info *fi, const char *buf, size_t size);
void fs_ctl_release(struct fs *fs, struct fuse_file_info *fi);
/* fs_ctl_backup.c: runs "backup ARGS" (args: the text after "backup"); the
 * reply (malloc'd, *len bytes), or NULL without memory. */
char *fs_ctl_backup(struct fs *fs, const char *args, size_t *len);
/* Policy for the namespace operations, before the store is asked: 0 or -errno. */
int fs_virt_check_create(struct fs *fs, fuse_ino_t parent, const char *name);
int fs_virt_check_remove(fuse_ino_t parent, const char *name);
int fs_virt_check_rename(struct fs *fs, fuse_ino_t parent, const char *name,
			 fuse_ino_t newparent, const char *newname);

/* fs_tags.c: the directories of tags/ and their symlinks */
void fs_tags_init(struct fs *fs);
void fs_tags_free(struct fs *fs);
/* The entry name in directory parent (tags/ or a tag dir); a directory
 * entry holds a lookup reference, to be dropped with fs_tags_forget. */
int fs_tags_entry(struct fs *fs, fuse_ino_t parent, const char *name, struct fuse_entry_param *e);
void fs_tags_forget(struct fs *fs, fuse_ino_t ino, uint64_t nlookup);
int fs_tags_getattr(struct fs *fs, fuse_ino_t ino, struct stat *st);
/* The entries of directory ino, with their inode numbers in id. */
int fs_tags_list(struct fs *fs, fuse_ino_t ino, struct kv_dirent **out, size_t *n);
void fs_tags_lookup(fuse_req_t req, fuse_ino_t parent, const char *name);
void fs_tags_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name);
void fs_tags_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name);
void fs_tags_symlink(fuse_req_t req, fuse_ino_t parent, const char *name);
void fs_tags_unlink(fuse_req_t req, fuse_ino_t parent, const char *name);
void fs_op_readlink(fuse_req_t req, fuse_ino_t ino);
void fs_tags_setattr(fuse_req_t req, fuse_ino_t ino, const struct stat *attr, int to_set);

/* fs_dir.c */
void fs_op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name);
void fs_op_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode);
void fs_op_mknod(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, dev_t rdev);
void fs_op_symlink(fuse_req_t req, const char *link, fuse_ino_t parent, const char *name);
void fs_op_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char *newname);
void fs_op_unlink(fuse_req_t req, fuse_ino_t parent, const char *name);
void fs_op_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name);
void fs_op_rename(fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent,
		  const char *newname, unsigned int flags);
void fs_op_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);
void fs_op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		   struct fuse_file_info *fi);
void fs_op_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		       struct fuse_file_info *fi);
void fs_op_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);
void fs_op_fsyncdir(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi);
/* Puts h, freed by free_fn, on the list of open handles. */
void fs_handle_link(struct fs *fs, struct fs_handle *h, void (*free_fn)(struct fs_handle *h));
/* Takes h off the list and frees it. */
void fs_handle_release(struct fs *fs, struct fs_handle *h);
/* Owner of a new entry in parent: the caller, with the group of a set-gid
 * parent (which new directories inherit, as on ext4). */
int fs_new_owner(fuse_req_t req, fuse_ino_t parent, bool is_dir, uint32_t *mode, uint32_t *uid,
		 uint32_t *gid);

/* fs_file.c */
void fs_op_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
		  struct fuse_file_info *fi);
void fs_op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);
void fs_op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		struct fuse_file_info *fi);
void fs_op_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off,
		 struct fuse_file_info *fi);
void fs_op_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);
void fs_op_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);
void fs_op_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi);

#endif
