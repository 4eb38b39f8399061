/*
 * Private to the nadbfs program: the command line (mount/cli.c) and the
 * daemon's life cycle (mount/nadbfs.c).
 */
#ifndef NADB_MOUNT_NADBFS_H
#define NADB_MOUNT_NADBFS_H

#include <stdbool.h>
#include <stddef.h>

struct conf;

struct nadbfs_cli {
	bool foreground;	/* -f */
	bool debug;		/* -d or -o debug: debug logs and libfuse's request trace */
	const char *source;	/* borrowed from argv, or source_abs */
	char *source_abs;	/* owned: set by nadbfs_cli_make_absolute() */
	const char *mountpoint;	/* borrowed from argv, or mountpoint_abs */
	char *mountpoint_abs;	/* owned: set by nadbfs_cli_make_absolute() */
	char **opts;		/* every -o item, split and unescaped, in order */
	size_t nopts;
};

/* What the options leave for libfuse, besides what the daemon always sets. */
struct nadbfs_fuse_opts {
	char *extra;		/* comma-separated FUSE mount options, or NULL */
	char *fsname;		/* fsname= given by the user, or NULL */
	bool read_only;
};

/* nadbfs_cli_parse() results besides 0. */
enum { NADBFS_CLI_ERROR = 1, NADBFS_CLI_DONE = 2 };

/*
 * Parses argv. NADBFS_CLI_DONE: --help or --version was printed (exit 0);
 * NADBFS_CLI_ERROR: a message was printed (exit 1).
 */
int nadbfs_cli_parse(int argc, char **argv, struct nadbfs_cli *cli);
void nadbfs_cli_free(struct nadbfs_cli *cli);

/*
 * Makes the mountpoint and every config=FILE absolute, once the mountpoint
 * is known to exist: libfuse unmounts by the path it mounted, not always
 * from our working directory (a daemon goes to /), and a reload re-reads
 * the files from wherever it runs. A config file that cannot be resolved is
 * left as given, for its loader to report. 0 or -errno.
 */
int nadbfs_cli_make_absolute(struct nadbfs_cli *cli);

/*
 * Builds the configuration in its layers: every config=FILE, then SOURCE,
 * then the other -o options in order. FUSE mount options land in fo.
 * 0, or NADBFS_CLI_ERROR with the reason in msg ("FILE:LINE: message",
 * "unknown option 'x'", ...); the caller prints or logs it. Also used to
 * rebuild the configuration on reload.
 */
int nadbfs_cli_apply(const struct nadbfs_cli *cli, struct conf *c, struct nadbfs_fuse_opts *fo,
		     char *msg, size_t msglen);
void nadbfs_fuse_opts_free(struct nadbfs_fuse_opts *fo);

/* SOURCE as /proc/mounts shows it: a Redis URL loses its password (malloc'd). */
char *nadbfs_public_source(const char *source);

#endif
