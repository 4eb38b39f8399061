/*
 * nadbfs-bench: measures nadbfs against tmpfs (the physical limit) and
 * bindfs over tmpfs (a real FUSE filesystem from Debian) on the same machine
 * in the same run, and prints one table with the ratios and the targets of
 * issue 8.
 *
 * env.c owns everything the program starts: the temporary tree, the tmpfs
 * mounts, the FUSE daemons (nadbfs, bindfs) and redis-server. Each is
 * registered the moment it exists and undone by env_cleanup(), which also
 * runs at exit and from SIGINT/SIGTERM/SIGHUP. Processes are only ever
 * signalled by the pid we got from fork().
 *
 * small.c has the small-file workloads (create, read, stat, xattr, unlink,
 * ls -l), bulk.c the sequential, mixed, flush and Redis ones, store.c the
 * large-store ones (tag listing, mount time, daemon memory). main.c parses
 * options, runs the selection and prints the table.
 *
 * Measurement functions return a rate (or seconds, bytes) as a double, NAN
 * when the workload failed; they print the reason on stderr and never exit.
 */
#ifndef NADB_BENCH_H
#define NADB_BENCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

enum fs_kind { FS_TMPFS, FS_BINDFS, FS_NADBFS, NFS };

/* One filesystem under test: its mount root and, for FUSE, its daemon. */
struct fsut {
	const char *name;
	char *dir;  /* where workloads run */
	pid_t pid;  /* the FUSE daemon, 0 for tmpfs */
};

struct sizes {
	int files;	     /* small files per run (10,000) */
	int ls_keys;	     /* entries of the ls -l directory (100,000) */
	size_t seq_bytes;    /* sequential file (256 MiB) */
	double mixed_s;	     /* mixed workload duration */
	int mixed_keys;	     /* keys the mixed workload overlaps on */
	int flush_keys;	     /* keys written before the timed flush */
	int store_dirs_small; /* 1000 keys each: the 10,000-key store */
	int store_dirs_big;   /* 1000 keys each: the 1,000,000-key store */
	int redis_requests;  /* redis-benchmark -n */
};

struct bench {
	bool quick;
	int repeat;	  /* passes of the create..flush workloads, best kept */
	const char *only; /* comma-separated workload names, NULL = all */
	char *nadbfs_bin;
	char *root;	  /* mkdtemp("/tmp/nadbfs-bench-XXXXXX") */
	struct sizes sz;
	struct fsut fs[NFS];
};

/* --- env.c --- */
double now_s(void); /* CLOCK_MONOTONIC seconds */
void warnx_(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void *xcalloc(size_t n, size_t sz);

/* Temporary tree, signal handlers, atexit(env_cleanup). */
void env_init(struct bench *b);
/* mkdir path (0755) and mount a tmpfs on it; registered for cleanup. */
void env_mount_tmpfs(const char *dir);
/* Touches and frees bytes of memory, so a pass that follows gets pages the
 * host backs (env.c says why). */
void env_warm_memory(size_t bytes);
/*
 * fork+exec argv (NULL-ended, argv[0] looked up in PATH) with stdin
 * /dev/null and stdout+stderr appended to log; the child gets
 * PR_SET_PDEATHSIG(SIGTERM). mountpoint (may be NULL) is the FUSE mount it
 * will make, unmounted at cleanup.
 */
pid_t env_spawn(char *const argv[], const char *log, const char *mountpoint);
/*
 * Waits until dir is a mount point (its st_dev differs from its parent's) and
 * answers stat: 0, or -1 if pid exited first (its log tail is printed) or
 * after timeout_s.
 */
int env_wait_mounted(const char *dir, pid_t pid, const char *log, double timeout_s);
/* `fusermount3 -u dir`, then waits for pid: its exit status, -1 on timeout. */
int env_unmount_fuse(const char *dir, pid_t pid, double timeout_s);
/* Stops a non-FUSE child (SIGTERM, then SIGKILL) and reaps it. */
void env_stop_pid(pid_t pid);
/* Runs argv, stdout into *out (malloc'd, may be NULL): exit status or -1. */
int env_run_capture(char *const argv[], char **out, double timeout_s);
/* Everything registered, in reverse; idempotent, async-signal-tolerant. */
void env_cleanup(void);
/* VmRSS of pid in bytes, -1 if unreadable. */
long long proc_rss(pid_t pid);
/* Prints the last lines of a daemon log on stderr. */
void print_log_tail(const char *log);

/*
 * Starts nadbfs -f [-o opts] data mnt and waits until mounted: pid or -1
 * (with the daemon's log tail on stderr unless quiet).
 */
pid_t nadbfs_start(struct bench *b, const char *data, const char *mnt, const char *opts,
		   const char *log, bool quiet);
/* Clean unmount: 0 if the daemon exited 0. */
int nadbfs_stop(const char *mnt, pid_t pid, const char *log);

/* --- main.c --- */
bool selected(const struct bench *b, const char *name);

/* A table row. Values NAN = not measured; note explains an n/a. */
enum target_kind {
	TGT_NONE,
	TGT_VS_TMPFS,  /* nadbfs/tmpfs >= tgt */
	TGT_VS_BINDFS, /* nadbfs/bindfs >= tgt */
	TGT_AT_MOST,   /* nadbfs value <= tgt */
	TGT_VS_ROW,    /* nadbfs value / ref row's nadbfs value >= tgt */
	TGT_VS_BASE,   /* nadbfs value / the row's own baseline (row_base) >= tgt */
};

struct row;
struct row *row_add(const char *name, const char *unit);
void row_set(struct row *r, enum fs_kind k, double v);
void row_note(struct row *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* A baseline measured outside the three filesystems (redis-benchmark). */
void row_base(struct row *r, double v, const char *label);
/* The best baseline so far: what a TGT_VS_BASE ratio divides by. */
double row_best_base(const struct row *r);
/* The row's figure for k so far (the best pass's), NAN if none. */
double row_value(const struct row *r, enum fs_kind k);
void row_target(struct row *r, enum target_kind kind, double tgt, const struct row *ref);

/* --- threads (small.c) --- */
/* Runs fn(i, arg) in n threads started together; wall seconds, NAN if one failed. */
double run_threads(int n, int (*fn)(int i, int n, void *arg), void *arg);
/* Fills buf with xorshift bytes (incompressible: zstd gains nothing). */
void fill_random(void *buf, size_t len, uint64_t seed);

/* --- workloads --- */
void bench_small(struct bench *b);
void bench_ls(struct bench *b);
void bench_seq(struct bench *b);
void bench_mixed(struct bench *b);
void bench_flush(struct bench *b);
void bench_store(struct bench *b);

#endif
