/*
 * Parsing of what is written to .nadb/ctl, apart from running it: FUSE-free
 * so that the fuzz target (fuzz/fuzz_ctl.c) and unit tests reach it without a
 * mount. fs_ctl.c runs the parsed command.
 *
 * Return convention: 0, or -EINVAL with the reply line for the writer
 * ("error: ...\n") in err. Pure: no locks, no allocation.
 */
#ifndef NADB_FS_CTL_CMD_H
#define NADB_FS_CTL_CMD_H

#include <stdbool.h>
#include <stddef.h>

enum fs_ctl_verb {
	FS_CTL_FLUSH,
	FS_CTL_SWEEP,
	FS_CTL_RELOAD,
	FS_CTL_TX_LIST,
	FS_CTL_TX_BEGIN,
	FS_CTL_TX_COMMIT,
	FS_CTL_TX_ABORT,
	FS_CTL_BACKUP,
};

/* A tx name is at most 255 bytes here; the store checks the real rules. */
struct fs_ctl_cmd {
	enum fs_ctl_verb verb;
	char name[256]; /* FS_CTL_TX_BEGIN/COMMIT/ABORT */
	/* FS_CTL_TX_BEGIN with --session: the transaction belongs to the
	 * descriptor it was begun through, and is aborted when that is closed
	 * (by its process, or by the kernel when the process dies) uncommitted. */
	bool session;
	/* FS_CTL_BACKUP: the rest of the line after "backup" (its own
	 * parser, fs_ctl_backup.c, checks it), "" or starting with a blank. */
	char args[1024];
};

/* One write(2) of size bytes: a single command line, its '\n' optional. */
int fs_ctl_parse(const char *buf, size_t size, struct fs_ctl_cmd *out, char *err, size_t errlen);

#endif
