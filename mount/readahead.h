/*
 * Raises the kernel's read-ahead on a just-mounted nadbfs (readahead.c says
 * why), from a thread of its own, once the session loop answered INIT.
 * Return convention: 0 or a negative errno (only for the thread's start;
 * a read-ahead that cannot be raised is logged at debug level and left).
 * nadbfs_readahead_stop joins the thread; call it after the session loop
 * ended and the mount is gone, or the thread may still wait for an answer.
 */
#ifndef NADB_MOUNT_READAHEAD_H
#define NADB_MOUNT_READAHEAD_H

#include <pthread.h>
#include <stdbool.h>

/* What nadbfs sets: the most one READ carries (fs.c, FS_MAX_WRITE). */
#define NADBFS_READAHEAD_KB 1024

struct nadbfs_readahead {
	const char *mountpoint; /* borrowed: must outlive the thread */
	unsigned kb;
	pthread_t tid;
	bool running;
};

int nadbfs_readahead_start(struct nadbfs_readahead *r, const char *mountpoint, unsigned kb);
void nadbfs_readahead_stop(struct nadbfs_readahead *r);

#endif
