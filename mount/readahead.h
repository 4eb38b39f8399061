/*
 * Raises the kernel's read-ahead on a just-mounted nadbfs (readahead.c says
 * why). nadbfs_raise_readahead is the session loop's after_init hook
 * (fs/fs_loop.h) with a struct nadbfs_readahead as its argument; a
 * read-ahead that cannot be raised (not root, say) is logged at debug level
 * and left as it was.
 */
#ifndef NADB_MOUNT_READAHEAD_H
#define NADB_MOUNT_READAHEAD_H

/* What nadbfs sets: the most one READ carries (fs.c, FS_MAX_WRITE). */
#define NADBFS_READAHEAD_KB 1024

struct nadbfs_readahead {
	const char *mountpoint; /* absolute, as mounted; borrowed */
	unsigned kb;
};

void nadbfs_raise_readahead(void *arg);

#endif
