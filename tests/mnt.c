/*
 * Mount-level test harness (see mnt.h).
 *
 * Processes are started with fork+exec rather than posix_spawn because the
 * child must close every inherited descriptor: a daemon that inherits a
 * test's open file on its own mount could never be unmounted cleanly.
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <mntent.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <dirent.h>
#include <cmocka.h>

#include <jansson.h>

#include "mnt.h"
#include "redis_server.h"

/* Under valgrind (NADBFS_VALGRIND) the daemon is some 20 times slower. */
#define MOUNT_TIMEOUT_MS (valgrind_on() ? 120000 : 10000)
#define EXIT_TIMEOUT_MS (valgrind_on() ? 180000 : 30000)
#define FUSERMOUNT "fusermount3"

/*
 * NADBFS_VALGRIND=1 runs every daemon under `valgrind -q --leak-check=full
 * --error-exitcode=99` (plus $NADBFS_VALGRIND_OPTS, split at blanks): an
 * error or a leak makes the daemon exit 99, which mnt_stop fails on, and
 * with -q anything valgrind prints ("==PID== ...") is a finding, which
 * mnt_check_log fails on (also after a SIGKILL, whose exit status nobody
 * checks).
 */
static bool valgrind_on(void)
{
	const char *v = getenv("NADBFS_VALGRIND");

	return v && *v && strcmp(v, "0");
}

struct mnt_alloc {
	struct mnt_alloc *next;
	char s[];
};

/*
 * Daemons and mountpoints alive right now, so that a test program killed by
 * the test runner's timeout (SIGTERM) or exiting early leaves no daemon and
 * no dead mount behind. Read from a signal handler: plain arrays only.
 */
#define MAX_LIVE 16
static volatile pid_t live_pid[MAX_LIVE];
static char live_dir[MAX_LIVE][PATH_MAX];
static bool handlers_installed;

int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* A short pause inside a polling loop that has its own deadline. */
static void poll_pause(void)
{
	struct timespec ts = { 0, 5 * 1000 * 1000 };

	nanosleep(&ts, NULL);
}

static void lazy_unmount_raw(const char *dir)
{
	pid_t p = fork();

	if (p == 0) {
		int fd = open("/dev/null", O_RDWR);

		dup2(fd, 1);
		dup2(fd, 2);
		execlp(FUSERMOUNT, FUSERMOUNT, "-u", "-z", "-q", dir, (char *)NULL);
		_exit(127);
	}
	if (p > 0)
		waitpid(p, NULL, 0);
}

static void kill_all_live(void)
{
	for (int i = 0; i < MAX_LIVE; i++) {
		if (live_pid[i] > 0) {
			kill(live_pid[i], SIGKILL);
			waitpid(live_pid[i], NULL, 0);
			live_pid[i] = 0;
		}
		if (live_dir[i][0]) {
			lazy_unmount_raw(live_dir[i]);
			live_dir[i][0] = '\0';
		}
	}
}

static void on_fatal_signal(int sig)
{
	kill_all_live();
	signal(sig, SIG_DFL);
	raise(sig);
}

static void install_handlers(void)
{
	if (handlers_installed)
		return;
	handlers_installed = true;
	atexit(kill_all_live);
	signal(SIGTERM, on_fatal_signal);
	signal(SIGINT, on_fatal_signal);
	signal(SIGHUP, on_fatal_signal);
	/* A test writing to a dead daemon's pipe must see EPIPE, not die. */
	signal(SIGPIPE, SIG_IGN);
}

static void live_add(pid_t pid, const char *dir)
{
	install_handlers();
	for (int i = 0; i < MAX_LIVE; i++) {
		if (live_pid[i] == 0 && !live_dir[i][0]) {
			snprintf(live_dir[i], PATH_MAX, "%s", dir);
			live_pid[i] = pid;
			return;
		}
	}
}

static void live_forget_pid(pid_t pid)
{
	for (int i = 0; i < MAX_LIVE; i++)
		if (live_pid[i] == pid)
			live_pid[i] = 0;
}

static void live_forget_dir(const char *dir)
{
	for (int i = 0; i < MAX_LIVE; i++)
		if (live_pid[i] == 0 && !strcmp(live_dir[i], dir))
			live_dir[i][0] = '\0';
}

static const char *bin_from_env(const char *var, const char *prog)
{
	const char *bin = getenv(var);

	if (!bin || !*bin)
		fail_msg("%s is not set: run the mount tests through `meson test`, "
			 "or export %s=/path/to/build/mount/%s", var, var, prog);
	if (access(bin, X_OK))
		fail_msg("%s=%s is not executable: %s", var, bin, strerror(errno));
	return bin;
}

const char *nadbfs_bin(void)
{
	return bin_from_env("NADBFS_BIN", "nadbfs");
}

const char *nadbctl_bin(void)
{
	return bin_from_env("NADBCTL_BIN", "nadbctl");
}

static char *xstrdup(const char *s)
{
	char *d = strdup(s);

	assert_non_null(d);
	return d;
}

static char *xasprintf(const char *fmt, ...)
{
	va_list ap;
	char *s;
	int n;

	va_start(ap, fmt);
	n = vasprintf(&s, fmt, ap);
	va_end(ap);
	assert_true(n >= 0);
	return s;
}

/* Tests call mnt_path() and mnt_str() from several threads of their own,
 * so the arena's list is pushed under a lock (a lost push leaks, and the
 * sanitizer build fails on the leak). */
static pthread_mutex_t arena_lock = PTHREAD_MUTEX_INITIALIZER;

void *mnt_malloc(struct mnt *m, size_t len)
{
	struct mnt_alloc *a = calloc(1, sizeof(*a) + len);

	assert_non_null(a);
	pthread_mutex_lock(&arena_lock);
	a->next = m->allocs;
	m->allocs = a;
	pthread_mutex_unlock(&arena_lock);
	return a->s;
}

static const char *arena_vadd(struct mnt *m, const char *fmt, va_list ap)
{
	char *s, *d;
	int n = vasprintf(&s, fmt, ap);

	assert_true(n >= 0);
	d = mnt_malloc(m, (size_t)n + 1);
	memcpy(d, s, (size_t)n + 1);
	free(s);
	return d;
}

const char *mnt_str(struct mnt *m, const char *fmt, ...)
{
	va_list ap;
	const char *s;

	va_start(ap, fmt);
	s = arena_vadd(m, fmt, ap);
	va_end(ap);
	return s;
}

const char *mnt_path(struct mnt *m, const char *fmt, ...)
{
	va_list ap;
	char *rel;
	const char *s;
	int n;

	va_start(ap, fmt);
	n = vasprintf(&rel, fmt, ap);
	va_end(ap);
	assert_true(n >= 0);
	s = mnt_str(m, "%s/%s", m->dir, rel);
	free(rel);
	return s;
}

void mnt_init(struct mnt *m)
{
	char tmpl[] = "/tmp/nadbfs-t-XXXXXX";
	char real[PATH_MAX];

	if (m->root)
		return;
	if (!mkdtemp(tmpl))
		fail_msg("mkdtemp: %s", strerror(errno));
	/* Mount points are compared with /proc/self/mounts, which has real paths. */
	if (!realpath(tmpl, real))
		fail_msg("realpath %s: %s", tmpl, strerror(errno));
	m->root = xstrdup(real);
	m->owns_root = true;
	m->data = xasprintf("%s/data", m->root);
	m->dir = xasprintf("%s/mnt", m->root);
	m->log = xasprintf("%s/daemon.log", m->root);
	if (mkdir(m->dir, 0755))
		fail_msg("mkdir %s: %s", m->dir, strerror(errno));
	if (m->backend == MNT_BACKEND_DEFAULT)
		m->backend = mnt_default_backend();
	if (m->backend == MNT_BACKEND_REDIS) {
		int ret;

		m->redis = calloc(1, sizeof(*m->redis));
		assert_non_null(m->redis);
		ret = m->redis_aof ? redis_server_start_aof(m->redis)
				   : redis_server_start(m->redis, NULL);
		if (ret)
			fail_msg("cannot start redis-server for a mount on the redis backend: %s",
				 strerror(-ret));
		m->source = xasprintf("redis+unix://%s", m->redis->sock);
	} else {
		m->source = xstrdup(m->data);
	}
}

enum mnt_backend mnt_default_backend(void)
{
	const char *b = getenv("NADBFS_TEST_BACKEND");

	return b && !strcmp(b, "redis") ? MNT_BACKEND_REDIS : MNT_BACKEND_FS;
}

void mnt_init_shared(struct mnt *m, const struct mnt *other, const char *name)
{
	memset(m, 0, sizeof(*m));
	m->backend = other->backend;
	m->root = xstrdup(other->root);
	m->data = xstrdup(other->data);
	m->source = xstrdup(other->source);
	/* Not owned: the other mount's cleanup stops it. */
	m->redis = other->redis;
	m->dir = xasprintf("%s/%s", other->root, name);
	m->log = xasprintf("%s/%s.log", other->root, name);
	m->owns_root = false;
	if (mkdir(m->dir, 0755))
		fail_msg("mkdir %s: %s", m->dir, strerror(errno));
}

static off_t file_size(const char *path)
{
	struct stat st;

	return stat(path, &st) ? 0 : st.st_size;
}

void mnt_spawn_argv(struct mnt *m, const char *const *argv)
{
	const char *bin = nadbfs_bin(), *bin_path = bin;
	const char *args[64];
	size_t n = 0;
	pid_t pid;

	assert_int_equal(m->pid, 0);
	if (valgrind_on()) {
		static char opts[1024];
		const char *o = getenv("NADBFS_VALGRIND_OPTS");
		char *save = NULL;

		args[n++] = "valgrind";
		args[n++] = "-q";
		args[n++] = "--leak-check=full";
		args[n++] = "--error-exitcode=99";
		snprintf(opts, sizeof(opts), "%s", o ? o : "");
		for (char *t = strtok_r(opts, " \t", &save); t && n < 24;
		     t = strtok_r(NULL, " \t", &save))
			args[n++] = t;
		bin_path = "valgrind";
	}
	args[n++] = bin;
	for (; *argv && n < 63; argv++)
		args[n++] = *argv;
	args[n] = NULL;

	m->log_off = file_size(m->log);
	pid = fork();
	if (pid < 0)
		fail_msg("fork: %s", strerror(errno));
	if (pid == 0) {
		int in = open("/dev/null", O_RDONLY);
		int out = open(m->log, O_WRONLY | O_CREAT | O_APPEND, 0644);

		if (in < 0 || out < 0)
			_exit(126);
		dup2(in, 0);
		dup2(out, 1);
		dup2(out, 2);
		close_range(3, ~0U, 0);
		/* Relative paths the daemon might write land in the test's tree. */
		if (chdir(m->root))
			_exit(126);
		execvp(bin_path, (char *const *)args);
		_exit(127);
	}
	m->pid = pid;
	live_add(pid, m->dir);
}

void mnt_spawn(struct mnt *m, const char *opts)
{
	mnt_init(m);
	/* A Redis mount spills into the test's root, never into the
	 * default /var/lib/nadbfs/spill (which another run may have left
	 * files in), unless the test chooses a place itself. */
	if (m->backend == MNT_BACKEND_REDIS && !(opts && strstr(opts, "redis_spill_dir=")))
		opts = opts && *opts ? mnt_str(m, "%s,redis_spill_dir=%s/spill", opts, m->root)
				     : mnt_str(m, "redis_spill_dir=%s/spill", m->root);
	if (opts && *opts) {
		const char *argv[] = { "-f", "-o", opts, m->source, m->dir, NULL };

		mnt_spawn_argv(m, argv);
	} else {
		const char *argv[] = { "-f", m->source, m->dir, NULL };

		mnt_spawn_argv(m, argv);
	}
}

/*
 * The first mount at path (or, with prefix, anywhere below it) in
 * /proc/self/mounts, whose escapes getmntent undoes. Fills what is asked.
 */
static bool find_mount(const char *path, bool prefix, char *found, char *fstype, size_t fslen,
		       char *source, size_t srclen)
{
	FILE *f = setmntent("/proc/self/mounts", "re");
	size_t n = strlen(path);
	struct mntent *e;
	bool hit = false;

	if (!f)
		fail_msg("/proc/self/mounts: %s", strerror(errno));
	while (!hit && (e = getmntent(f))) {
		if (prefix)
			hit = !strncmp(e->mnt_dir, path, n) && (!e->mnt_dir[n] || e->mnt_dir[n] == '/');
		else
			hit = !strcmp(e->mnt_dir, path);
		if (!hit)
			continue;
		if (found)
			snprintf(found, PATH_MAX, "%s", e->mnt_dir);
		if (fstype)
			snprintf(fstype, fslen, "%s", e->mnt_type);
		if (source)
			snprintf(source, srclen, "%s", e->mnt_fsname);
	}
	endmntent(f);
	return hit;
}

bool is_mounted(const char *path, char *fstype, size_t fslen, char *source, size_t srclen)
{
	return find_mount(path, false, NULL, fstype, fslen, source, srclen);
}

int wait_pid(pid_t pid, int timeout_ms, int *status)
{
	int64_t deadline = now_ms() + timeout_ms;
	int st;

	for (;;) {
		pid_t r = waitpid(pid, &st, WNOHANG);

		if (r == pid) {
			if (status)
				*status = st;
			live_forget_pid(pid);
			return 0;
		}
		if (r < 0 && errno != EINTR)
			return -errno;
		if (now_ms() > deadline)
			return -ETIMEDOUT;
		poll_pause();
	}
}

char *mnt_log_text(const struct mnt *m)
{
	size_t len;
	char *all = read_file(m->log, &len);
	char *s;

	if (!all)
		return xstrdup("");
	if ((size_t)m->log_off > len)
		s = xstrdup("");
	else
		s = xstrdup(all + m->log_off);
	free(all);
	return s;
}

int mnt_log_lines(const struct mnt *m, const char *level, const char *what)
{
	char *text = mnt_log_text(m), *save = NULL;
	int n = 0;

	for (char *l = strtok_r(text, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
		json_t *o = json_loads(l, 0, NULL);
		const char *lv, *msg;

		if (!json_is_object(o))
			fail_msg("a log line is not a JSON object: %s", l);
		lv = json_string_value(json_object_get(o, "level"));
		msg = json_string_value(json_object_get(o, "msg"));
		n += (!level || !strcmp(lv ?: "", level)) && (!what || strstr(msg ?: "", what));
		json_decref(o);
	}
	free(text);
	return n;
}

/* The whole output: print_error() cuts long messages, and a sanitizer
 * report is long. */
static void print_output(const char *title, const char *log)
{
	fflush(stdout);
	fprintf(stdout, "%s:\n", title);
	fwrite(log, 1, strlen(log), stdout);
	fputc('\n', stdout);
	fflush(stdout);
}

static const char *status_str(int st, char *buf, size_t len)
{
	if (WIFEXITED(st))
		snprintf(buf, len, "exit status %d", WEXITSTATUS(st));
	else if (WIFSIGNALED(st))
		snprintf(buf, len, "killed by signal %d (%s)", WTERMSIG(st),
			 strsignal(WTERMSIG(st)));
	else
		snprintf(buf, len, "wait status 0x%x", st);
	return buf;
}

int mnt_wait_mounted(struct mnt *m, int timeout_ms, int *status)
{
	int64_t deadline = now_ms() + timeout_ms;
	struct stat st;

	for (;;) {
		if (m->pid > 0) {
			int s;
			pid_t r = waitpid(m->pid, &s, WNOHANG);

			if (r == m->pid) {
				live_forget_pid(m->pid);
				m->pid = 0;
				if (status)
					*status = s;
				return 1;
			}
		}
		if (is_mounted(m->dir, NULL, 0, NULL, 0)) {
			/* Mounted; the first stat waits until the session loop serves. */
			if (stat(m->dir, &st))
				fail_msg("stat %s after mount: %s", m->dir, strerror(errno));
			return 0;
		}
		if (now_ms() > deadline)
			return -ETIMEDOUT;
		poll_pause();
	}
}

void mnt_wait_mounted_or_fail(struct mnt *m)
{
	int st = 0, r = mnt_wait_mounted(m, MOUNT_TIMEOUT_MS, &st);
	char buf[64], *log;

	if (r == 0)
		return;
	log = mnt_log_text(m);
	if (r == 1)
		print_output("daemon output", log);
	else
		print_output("daemon output so far", log);
	free(log);
	if (r == 1)
		fail_msg("nadbfs exited before %s was mounted: %s", m->dir,
			 status_str(st, buf, sizeof(buf)));
	fail_msg("%s not mounted within %d ms", m->dir, MOUNT_TIMEOUT_MS);
}

void mnt_start(struct mnt *m, const char *opts)
{
	mnt_spawn(m, opts);
	mnt_wait_mounted_or_fail(m);
}

/* "==PID== ...": valgrind's, which with -q prints only findings. */
static bool is_valgrind_line(const char *line, size_t len)
{
	size_t i = 2;

	if (len < 5 || line[0] != '=' || line[1] != '=')
		return false;
	while (i < len && line[i] >= '0' && line[i] <= '9')
		i++;
	return i > 2 && i + 1 < len && line[i] == '=' && line[i + 1] == '=';
}

static bool log_line_is_error(const char *line, size_t len)
{
	if (is_valgrind_line(line, len))
		return true;
	static const char *const bad[] = { "AddressSanitizer", "LeakSanitizer", "runtime error",
					   "ThreadSanitizer", "\"level\":\"error\"",
					   "\"level\": \"error\"" };

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		if (memmem(line, len, bad[i], strlen(bad[i])))
			return true;
	return false;
}

/*
 * A daemon line is one JSON object with ts (RFC 3339 UTC), level,
 * component and msg (spec section 11), or a "nadbfs: " line the program
 * prints for whoever ran it. NULL when fine, else why not.
 */
static const char *log_line_problem(const char *line, size_t len)
{
	static const char *const levels[] = { "debug", "info", "warn", "error", NULL };
	static const char *const comps[] = { "fs", "store", "backend", "sync", "ttl", "tx",
					     "backup", "conf", NULL };
	const char *ts, *level, *comp, *msg;
	const char *problem = NULL;
	json_t *o;

	if (len >= 8 && strncmp(line, "nadbfs: ", 8) == 0)
		return NULL;
	o = json_loadb(line, len, 0, NULL);
	if (!o || !json_is_object(o)) {
		json_decref(o);
		return "not a JSON object";
	}
	ts = json_string_value(json_object_get(o, "ts"));
	level = json_string_value(json_object_get(o, "level"));
	comp = json_string_value(json_object_get(o, "component"));
	msg = json_string_value(json_object_get(o, "msg"));
	if (!ts || strlen(ts) < 20 || ts[10] != 'T' || ts[strlen(ts) - 1] != 'Z')
		problem = "no RFC 3339 UTC ts";
	else if (!msg)
		problem = "no msg";
	if (!problem) {
		problem = "unknown level";
		for (size_t i = 0; level && levels[i]; i++)
			if (!strcmp(level, levels[i]))
				problem = NULL;
	}
	if (!problem) {
		problem = "unknown component";
		for (size_t i = 0; comp && comps[i]; i++)
			if (!strcmp(comp, comps[i]))
				problem = NULL;
	}
	json_decref(o);
	return problem;
}

void mnt_check_log(struct mnt *m)
{
	char *log = mnt_log_text(m);
	const char *p = log;
	bool bad = false;

	while (*p) {
		const char *nl = strchr(p, '\n');
		size_t len = nl ? (size_t)(nl - p) : strlen(p);

		const char *problem = len ? log_line_problem(p, len) : NULL;

		if (log_line_is_error(p, len) &&
		    !(m->errors_expected && !memmem(p, len, "Sanitizer", 9) &&
		      !is_valgrind_line(p, len) && !memmem(p, len, "runtime error", 13))) {
			print_error("daemon log: %.*s\n", (int)len, p);
			bad = true;
		} else if (problem) {
			print_error("daemon log line (%s): %.*s\n", problem, (int)len, p);
			bad = true;
		}
		p += len + (nl ? 1 : 0);
	}
	free(log);
	if (bad)
		fail_msg("the daemon logged errors or sanitizer reports (%s)", m->log);
}

static void check_exit(struct mnt *m, pid_t pid, int how_r, int st, const char *what)
{
	char buf[64];

	if (how_r == -ETIMEDOUT) {
		/* Leave m->pid set: cleanup kills it. */
		fail_msg("nadbfs (pid %d) still running %d ms after %s", pid, EXIT_TIMEOUT_MS,
			 what);
	}
	m->pid = 0;
	if (how_r)
		fail_msg("waiting for nadbfs (pid %d): %s", pid, strerror(-how_r));
	if (!WIFEXITED(st) || WEXITSTATUS(st)) {
		char *log = mnt_log_text(m);

		print_output("daemon output", log);
		free(log);
		fail_msg("nadbfs after %s: %s, want exit status 0", what,
			 status_str(st, buf, sizeof(buf)));
	}
	mnt_check_log(m);
}

void mnt_stop(struct mnt *m)
{
	int64_t deadline = now_ms() + EXIT_TIMEOUT_MS;
	pid_t pid = m->pid;
	char *out = NULL;
	int r, st = 0;

	assert_true(pid > 0);
	/* EBUSY can outlive a close() for a moment (release is asynchronous). */
	for (;;) {
		free(out);
		out = NULL;
		r = run_cmd_out(&out, FUSERMOUNT " -u '%s'", m->dir);
		if (r == 0 || now_ms() > deadline || !strstr(out, "busy"))
			break;
		poll_pause();
	}
	if (r) {
		print_error("%s", out);
		free(out);
		fail_msg(FUSERMOUNT " -u %s: exit status %d", m->dir, r);
	}
	free(out);
	live_forget_dir(m->dir);
	r = wait_pid(pid, EXIT_TIMEOUT_MS, &st);
	check_exit(m, pid, r, st, "fusermount3 -u");
}

void mnt_wait_clean_exit(struct mnt *m)
{
	pid_t pid = m->pid;
	int st = 0, r;

	assert_true(pid > 0);
	r = wait_pid(pid, EXIT_TIMEOUT_MS, &st);
	check_exit(m, pid, r, st, "its unmount");
	live_forget_dir(m->dir);
}

void mnt_stop_signal(struct mnt *m, int sig)
{
	pid_t pid = m->pid;
	int r, st = 0;

	assert_true(pid > 0);
	assert_int_equal(kill(pid, sig), 0);
	r = wait_pid(pid, EXIT_TIMEOUT_MS, &st);
	check_exit(m, pid, r, st, strsignal(sig));
	if (is_mounted(m->dir, NULL, 0, NULL, 0))
		fail_msg("%s still mounted after nadbfs exited on %s", m->dir, strsignal(sig));
	live_forget_dir(m->dir);
}

void mnt_kill(struct mnt *m)
{
	pid_t pid = m->pid;
	int st;

	assert_true(pid > 0);
	assert_int_equal(kill(pid, SIGKILL), 0);
	if (wait_pid(pid, EXIT_TIMEOUT_MS, &st))
		fail_msg("nadbfs (pid %d) did not die on SIGKILL", pid);
	m->pid = 0;
	assert_int_equal(run_cmd(FUSERMOUNT " -u -z '%s'", m->dir), 0);
	live_forget_dir(m->dir);
}

void mnt_restart(struct mnt *m, const char *opts)
{
	mnt_stop(m);
	mnt_start(m, opts);
}

void mnt_adopt(struct mnt *m, pid_t pid)
{
	m->pid = pid;
	live_add(pid, m->dir);
}

void mnt_subreaper(void)
{
	if (prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0))
		fail_msg("PR_SET_CHILD_SUBREAPER: %s", strerror(errno));
}

pid_t find_pid_by_arg(const char *needle)
{
	DIR *d = opendir("/proc");
	struct dirent *e;
	pid_t found = 0, self = getpid();

	assert_non_null(d);
	while (!found && (e = readdir(d))) {
		char path[64], buf[8192];
		pid_t pid = (pid_t)atoi(e->d_name);
		ssize_t n;
		int fd;

		if (pid <= 0 || pid == self)
			continue;
		snprintf(path, sizeof(path), "/proc/%d/cmdline", pid);
		fd = open(path, O_RDONLY | O_CLOEXEC);
		if (fd < 0)
			continue;
		n = read(fd, buf, sizeof(buf) - 1);
		close(fd);
		if (n <= 0)
			continue;
		for (ssize_t i = 0; i < n; i++)
			if (!buf[i])
				buf[i] = ' ';
		buf[n] = '\0';
		if (strstr(buf, needle))
			found = pid;
	}
	closedir(d);
	return found;
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)ftw;
	if (flag == FTW_DP)
		rmdir(path);
	else
		unlink(path);
	/* Keep going: remove as much as possible. */
	return 0;
}

void mnt_cleanup(struct mnt *m)
{
	struct mnt_alloc *a, *next;

	if (m->pid > 0) {
		kill(m->pid, SIGKILL);
		wait_pid(m->pid, EXIT_TIMEOUT_MS, NULL);
		m->pid = 0;
	}
	if (m->dir && is_mounted(m->dir, NULL, 0, NULL, 0))
		lazy_unmount_raw(m->dir);
	if (m->dir)
		live_forget_dir(m->dir);
	if (m->root && m->owns_root) {
		/* Never recurse into something still mounted below root. */
		char found[PATH_MAX];

		for (int i = 0; i < 16 && find_mount(m->root, true, found, NULL, 0, NULL, 0); i++)
			lazy_unmount_raw(found);
		/* FTW_MOUNT: even then, never cross into another filesystem. */
		nftw(m->root, rm_one, 32, FTW_DEPTH | FTW_PHYS | FTW_MOUNT);
		/* After the daemon: it never sees its server vanish first. */
		if (m->redis) {
			redis_server_stop(m->redis);
			free(m->redis);
		}
	}
	m->redis = NULL;
	for (a = m->allocs; a; a = next) {
		next = a->next;
		free(a);
	}
	free(m->root);
	free(m->data);
	free(m->source);
	free(m->dir);
	free(m->log);
	memset(m, 0, sizeof(*m));
}

int mnt_setup(void **state)
{
	struct mnt *m = calloc(1, sizeof(*m));

	if (!m)
		return -1;
	/* No mount here: a failing setup gets no teardown in cmocka, so anything
	 * that can fail (and leave a daemon behind) happens in the test body. */
	*state = m;
	return 0;
}

int mnt_teardown(void **state)
{
	struct mnt *m = *state;

	if (m) {
		mnt_cleanup(m);
		free(m);
	}
	*state = NULL;
	return 0;
}
