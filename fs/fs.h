/*
 * The FUSE side of nadbfs: maps the kernel's low-level requests onto the
 * store (store/kv.h). Inode numbers are record ids, which never change and
 * are never reused, so the lookup count needs no bookkeeping.
 *
 * Ownership: fs_new() borrows kv, which must outlive the struct fs and every
 * FUSE session that uses it; fs_free() does not close the store.
 * Threads: the operations run on any number of FUSE worker threads at once;
 * struct fs is read-only after fs_new() apart from its own locked state.
 * Return convention: 0 or a negative errno.
 *
 * Use: pass fs_lowlevel_ops() (with sizeof(struct fuse_lowlevel_ops)) and the
 * struct fs as userdata to fuse_session_new(). This header needs no FUSE
 * headers, so callers choose their own FUSE_USE_VERSION.
 */
#ifndef NADB_FS_FS_H
#define NADB_FS_FS_H

#include <stdbool.h>
#include <stdint.h>

struct fs;
struct kv_store;
struct fuse_lowlevel_ops;

struct fs_options {
	double attr_timeout;	/* seconds the kernel may cache attributes */
	double entry_timeout;	/* seconds the kernel may cache names */
	bool allow_other;	/* the mount is shared with other users */
	uint32_t ctl_mode;	/* permission bits of .nadb/ctl; 0 means 0600 */
	uint32_t uid, gid;	/* the mounting user: owns the reserved directories */
	/* close() of a file opened for writing flushes it; open and a name
	 * not found ask the backend first (kv_refresh): NFS-like
	 * close-to-open between several mounts of a shared store. */
	bool close_to_open;
	/* The session loop's threads at most (fs_loop_run; 0 means 1). With one, nothing
	 * is pushed into the page cache: an open waiting for a push that
	 * waits for a READ would wait for the only thread (fs_push.c). */
	unsigned max_threads;
	/* The ctl command "reload": 0, or a negative errno with the reason in
	 * msg. NULL: the command answers that reload is not available. */
	int (*reload)(void *arg, char *msg, size_t len);
	void *reload_arg;
};

int fs_new(struct kv_store *kv, const struct fs_options *o, struct fs **out);
/*
 * Answers every write still waiting for buffer space (waiting at most
 * backend_timeout each) and stops the thread that holds them. Call it once
 * the session loop has returned and before the session is destroyed: a reply
 * needs the session. fs_free calls it too.
 */
void fs_drain(struct fs *fs);
/*
 * For the session loop (fs_loop_run's may_end): true once nothing the
 * filesystem has under way needs requests answered to finish. From the
 * first call on, it starts no such work.
 */
bool fs_push_may_end(void *fs);
/*
 * Connects the filesystem to its session once there is one, so that keys
 * expiring in the store drop the kernel's cached entries and attributes.
 */
struct fuse_session;
void fs_attach(struct fs *fs, struct fuse_session *se);
/* New attribute and entry timeouts (seconds) for the replies from now on
 * (a reload); what the kernel cached keeps its old timeout. */
void fs_set_timeouts(struct fs *fs, double attr_timeout, double entry_timeout);
/* NULL is fine. */
void fs_free(struct fs *fs);

const struct fuse_lowlevel_ops *fs_lowlevel_ops(void);

#endif
