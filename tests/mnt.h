/*
 * Mount-level test harness: starts the real daemon ($NADBFS_BIN) on a
 * private temporary tree, waits until the mount answers, stops it and checks
 * that it exited cleanly, and removes the tree afterwards.
 *
 * Every path a test touches lives under m->root (mkdtemp in /tmp). Every
 * process the harness starts is remembered by pid and only ever signalled by
 * that pid. Functions named mnt_* fail the current cmocka test (fail_msg) on
 * error unless they return a status; helpers outside the mnt_ prefix return
 * 0 / -errno or a status so that tests can assert on errors themselves.
 *
 * Strings returned as const char * (mnt_path, mnt_str, shq) belong to the
 * struct mnt and are freed by mnt_cleanup().
 *
 * mnt.c runs the daemon; mnt_util.c has the helpers that need none: shq,
 * whole files, run_cmd, tree_snapshot. Tests link both.
 */
#ifndef NADB_TESTS_MNT_H
#define NADB_TESTS_MNT_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct mnt_alloc;
struct redis_server;

/*
 * Which backend a mount uses. MNT_BACKEND_DEFAULT follows the environment:
 * NADBFS_TEST_BACKEND=redis runs the mount-level tests on a private
 * redis-server (tests/redis_server.h), anything else (or unset) on the
 * filesystem backend; that is how one suite runs on both backends.
 */
enum mnt_backend { MNT_BACKEND_DEFAULT = 0, MNT_BACKEND_FS, MNT_BACKEND_REDIS };

struct mnt {
	enum mnt_backend backend; /* set before mnt_init; resolved by it */
	char *root;	/* mkdtemp("/tmp/nadbfs-t-XXXXXX"), realpath'd */
	char *data;	/* root/data: SOURCE of the filesystem backend */
	char *source;	/* what mnt_spawn passes as SOURCE: data, or redis+unix:///SOCKET */
	struct redis_server *redis; /* the Redis backend's server (owned with the root) */
	char *dir;	/* root/mnt: the mountpoint */
	char *log;	/* root/daemon.log: the daemon's stdout and stderr */
	pid_t pid;	/* the running daemon, 0 when none */
	off_t log_off;	/* where the current daemon's output starts in log */
	bool owns_root;	/* false for a second mountpoint sharing another's tree */
	bool redis_aof;	/* set before mnt_init: the server keeps an fsync'ed AOF */
	/* Set by a test that makes the backend fail on purpose: error-level
	 * lines are then expected (sanitizer reports still fail). */
	bool errors_expected;
	struct mnt_alloc *allocs;
};

/* $NADBFS_BIN; fails the test loudly when it is not set. */
const char *nadbfs_bin(void);
/* $NADBCTL_BIN, likewise. */
const char *nadbctl_bin(void);

/* Creates root, data's parent, the mountpoint and, for the Redis backend,
 * starts its server; no daemon. Idempotent. */
void mnt_init(struct mnt *m);
/*
 * A second mountpoint over the same data: shares other's root and data,
 * gets its own mountpoint root/NAME and log root/NAME.log. Its cleanup leaves
 * the tree to other's.
 */
void mnt_init_shared(struct mnt *m, const struct mnt *other, const char *name);

/* mnt_init + `$NADBFS_BIN -f [-o OPTS] source dir`, then waits until mounted. */
void mnt_start(struct mnt *m, const char *opts);
/* Starts the daemon, does not wait. argv without the program name; NULL-ended. */
void mnt_spawn_argv(struct mnt *m, const char *const *argv);
void mnt_spawn(struct mnt *m, const char *opts);
/*
 * Waits up to timeout_ms for dir to be mounted and answering: 0 once it is,
 * 1 if the daemon exited first (*status set, pid cleared), -ETIMEDOUT.
 */
int mnt_wait_mounted(struct mnt *m, int timeout_ms, int *status);
/* As above but fails the test with the daemon's log on anything but 0. */
void mnt_wait_mounted_or_fail(struct mnt *m);

/* Clean unmount of the current daemon, then a new one over the same data. */
void mnt_restart(struct mnt *m, const char *opts);
/*
 * `fusermount3 -u dir`, waits (30 s) for the daemon, requires exit status 0
 * and a log without sanitizer reports or error-level lines.
 */
void mnt_stop(struct mnt *m);
/* Sends sig (SIGTERM, SIGINT), then the same checks as mnt_stop, and that
 * the daemon unmounted itself. */
void mnt_stop_signal(struct mnt *m, int sig);
/* Waits for a daemon unmounted by other means; the same checks as mnt_stop. */
void mnt_wait_clean_exit(struct mnt *m);
/* SIGKILL, reap, `fusermount3 -u -z dir`. */
void mnt_kill(struct mnt *m);
/* Kills a daemon still running, detaches every mount under root, rm -rf. */
void mnt_cleanup(struct mnt *m);

/* Fails the test if the current daemon's log shows a sanitizer or an error. */
void mnt_check_log(struct mnt *m);
/* The current daemon's output so far (malloc'd, NUL-terminated). */
char *mnt_log_text(const struct mnt *m);
/*
 * How many lines of the current daemon's output are at level (NULL: any)
 * with msg containing what (NULL: any). Fails the test on a line that is not
 * one JSON object, so it also checks that the log is JSON lines.
 */
int mnt_log_lines(const struct mnt *m, const char *level, const char *what);
/* Adopts a daemon that is not our child yet (daemonized mode, see
 * mnt_subreaper()); mnt_stop then works on it. */
void mnt_adopt(struct mnt *m, pid_t pid);

/* Waits up to timeout_ms for pid (a child) to exit: 0 and *status, or -ETIMEDOUT. */
int wait_pid(pid_t pid, int timeout_ms, int *status);
/* Makes this process the reaper of its orphaned descendants (daemonized nadbfs). */
void mnt_subreaper(void);
/* First pid whose command line mentions needle (excluding ourselves), or 0. */
pid_t find_pid_by_arg(const char *needle);

/* Is path a mount point? Optionally its type and source as /proc/self/mounts has them. */
bool is_mounted(const char *path, char *fstype, size_t fslen, char *source, size_t srclen);

/* Arena strings: "root/mnt/<fmt>", any printf string, a shell-quoted copy. */
const char *mnt_path(struct mnt *m, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
const char *mnt_str(struct mnt *m, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
const char *shq(struct mnt *m, const char *s);
/* Zeroed memory freed by mnt_cleanup, also when an assertion fails first. */
void *mnt_malloc(struct mnt *m, size_t len);

/* Whole-file helpers on real syscalls: 0 or -errno; read_file returns NULL
 * with errno set, the buffer is NUL-terminated past *len. */
int write_file(const char *path, const void *data, size_t len);
void *read_file(const char *path, size_t *len);

/* The same, failing the test on error; assert_file shows the first difference. */
void put_file(const char *path, const void *data, size_t len);
void put_str(const char *path, const char *s);
void assert_file(const char *path, const void *want, size_t len);
void assert_file_str(const char *path, const char *want);

/*
 * Everything below dir (tags/ and .nadb/ at its top excepted), one sorted
 * line per entry: escaped path, type, mode, uid, gid, size, mtime in ns and a
 * hash of the bytes. Two snapshots compare equal iff the trees do.
 */
/* The permission bits (07777) of a path in the mount. */
mode_t mnt_mode(struct mnt *m, const char *path);
/* The names `ls -1 DIR` (a path in the mount) prints, comma-joined ("" when
 * empty, "E" when ls fails); owned by m. */
const char *mnt_ls(struct mnt *m, const char *dir);
char *tree_snapshot(const char *dir);
uint64_t fnv1a(const void *p, size_t n);

/*
 * `call` must succeed (not return -1); `call` must fail with errno err.
 * Both print the call's text and errno names on failure.
 */
#define ASSERT_SYS(call)                                                                      \
	do {                                                                                   \
		errno = 0;                                                                     \
		if ((long)(call) == -1)                                                        \
			fail_msg("%s failed: %s", #call, strerrorname_np(errno));              \
	} while (0)
#define ASSERT_ERRNO(call, err)                                                               \
	do {                                                                                   \
		long r_;                                                                       \
		errno = 0;                                                                     \
		r_ = (long)(call);                                                             \
		if (r_ != -1 || errno != (err))                                                \
			fail_msg("%s: got %ld (%s), want -1 (%s)", #call, r_,                  \
				 r_ == -1 ? strerrorname_np(errno) : "success",                \
				 strerrorname_np(err));                                        \
	} while (0)

/*
 * Runs `/bin/sh -c CMD` (stdin /dev/null) and returns its exit status (128+N
 * if killed by signal N). run_cmd_out also returns stdout+stderr in *out
 * (malloc'd). A command still running after 120 s is killed and fails the test.
 */
int run_cmd(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
int run_cmd_out(char **out, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* The backend tests run on: MNT_BACKEND_FS or MNT_BACKEND_REDIS. */
enum mnt_backend mnt_default_backend(void);

/* Monotonic milliseconds, for deadlines. */
int64_t now_ms(void);

/*
 * cmocka fixtures: *state becomes a zeroed struct mnt (tests call mnt_start
 * with their options); teardown kills what is left and removes the tree, also
 * after a failed assertion.
 */
int mnt_setup(void **state);
int mnt_teardown(void **state);

#endif
