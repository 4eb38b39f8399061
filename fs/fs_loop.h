/*
 * The FUSE session loop of nadbfs (fs/fs_loop.c): one leader thread reads
 * and answers requests, followers take over when a request may block, up to
 * max_threads. Returns when the session ends (unmount, or a signal marked it
 * exited and hooks->may_end, if given, agrees): 0, or a negative errno when
 * reading the device failed. Every thread it started has returned by then.
 * Needs no FUSE header.
 */
#ifndef NADB_FS_FS_LOOP_H
#define NADB_FS_FS_LOOP_H

#include <stdbool.h>

struct fuse_session;

/* Gives the leader's role away before this thread blocks; a no-op on
 * threads that are not the loop's leader. */
void fs_loop_may_block(void);

/*
 * What the caller adds to the loop; any member may be NULL.
 * after_init: called once, on the thread that answered INIT, right after
 * the answer (the kernel applies an INIT reply while it is written, so the
 * connection's settings are final then). It must not wait for a request.
 */
struct fs_loop_hooks {
	bool (*may_end)(void *arg);
	void *may_end_arg;
	void (*after_init)(void *arg);
	void *after_init_arg;
};

int fs_loop_run(struct fuse_session *se, unsigned max_threads, const struct fs_loop_hooks *hooks);

#endif
