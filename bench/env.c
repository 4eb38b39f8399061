/*
 * The benchmark's environment: temporary tree, tmpfs mounts, child
 * processes, and their cleanup on every path out (normal exit, die(),
 * SIGINT/SIGTERM/SIGHUP). See bench.h.
 *
 * The registry is plain static arrays so the signal handler can walk it.
 * Children are started with fork+exec (not posix_spawn) to close every
 * inherited descriptor: a daemon holding a file of its own mount open could
 * never be unmounted.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"

#define MAX_REG 32

static char reg_root[PATH_MAX];
static char reg_tmpfs[MAX_REG][PATH_MAX];
static char reg_fuse[MAX_REG][PATH_MAX];
static volatile pid_t reg_pid[MAX_REG];
static volatile sig_atomic_t cleaning;

double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/*
 * This machine is a VM whose balloon device reports free memory to the host
 * (virtio-balloon free page reporting, in 2 MiB blocks): a block the guest
 * freed and left alone for a moment goes back to the host, and the next
 * touch of it faults in the host. Touching 1 GiB took 1.7 s the first time
 * and 0.49 s right after; a 256 MiB read into fresh page cache ran at
 * 477 MB/s, and at 1.5 GB/s right after such a touch. Which filesystem
 * meets that memory was an accident of order, so each pass that fills a lot
 * of memory starts here: the kernel hands out recently freed pages first,
 * reported ones last.
 */
void env_warm_memory(size_t bytes)
{
	void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);

	if (p == MAP_FAILED)
		warnx_("cannot warm %zu MiB of memory: %s", bytes >> 20, strerror(errno));
	else
		munmap(p, bytes);
}

static void sleep_s(double s)
{
	struct timespec ts = { (time_t)s, (long)((s - (double)(time_t)s) * 1e9) };

	nanosleep(&ts, NULL);
}

void warnx_(const char *fmt, ...)
{
	va_list ap;

	fputs("nadbfs-bench: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

void die(const char *fmt, ...)
{
	va_list ap;

	fputs("nadbfs-bench: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(1); /* atexit runs env_cleanup */
}

char *xasprintf(const char *fmt, ...)
{
	va_list ap;
	char *s;
	int n;

	va_start(ap, fmt);
	n = vasprintf(&s, fmt, ap);
	va_end(ap);
	if (n < 0)
		die("out of memory");
	return s;
}

void *xcalloc(size_t n, size_t sz)
{
	void *p = calloc(n, sz);

	if (!p)
		die("out of memory");
	return p;
}

static void reg_add(char (*tab)[PATH_MAX], const char *path)
{
	for (int i = 0; i < MAX_REG; i++) {
		if (!tab[i][0]) {
			snprintf(tab[i], PATH_MAX, "%s", path);
			return;
		}
	}
	die("too many mounts registered");
}

static void reg_del(char (*tab)[PATH_MAX], const char *path)
{
	for (int i = MAX_REG - 1; i >= 0; i--) {
		if (!strcmp(tab[i], path)) {
			tab[i][0] = '\0';
			return;
		}
	}
}

static void pid_add(pid_t pid)
{
	for (int i = 0; i < MAX_REG; i++) {
		if (reg_pid[i] == 0) {
			reg_pid[i] = pid;
			return;
		}
	}
}

static void pid_del(pid_t pid)
{
	for (int i = 0; i < MAX_REG; i++)
		if (reg_pid[i] == pid)
			reg_pid[i] = 0;
}

/* waitpid with a deadline: 1 and *status when pid exited, 0 on timeout. */
static int wait_for(pid_t pid, double timeout_s, int *status)
{
	double end = now_s() + timeout_s;

	for (;;) {
		pid_t r = waitpid(pid, status, WNOHANG);

		if (r == pid || (r < 0 && errno == ECHILD))
			return 1;
		if (now_s() > end)
			return 0;
		sleep_s(0.002);
	}
}

static int run_quiet(const char *prog, const char *a1, const char *a2, const char *a3)
{
	int st = 0;
	pid_t p = fork();

	if (p == 0) {
		int fd = open("/dev/null", O_RDWR);

		dup2(fd, 0);
		dup2(fd, 1);
		dup2(fd, 2);
		execlp(prog, prog, a1, a2, a3, (char *)NULL);
		_exit(127);
	}
	if (p < 0)
		return -1;
	if (!wait_for(p, 30, &st)) {
		kill(p, SIGKILL);
		waitpid(p, &st, 0);
		return -1;
	}
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)ftw;
	if (flag == FTW_DP)
		rmdir(path);
	else
		unlink(path);
	return 0;
}

void env_cleanup(void)
{
	if (cleaning)
		return;
	cleaning = 1;
	/* FUSE mounts first: nadbfs keeps its data on one of the tmpfs mounts. */
	for (int i = MAX_REG - 1; i >= 0; i--)
		if (reg_fuse[i][0])
			run_quiet("fusermount3", "-u", "-z", reg_fuse[i]);
	for (int i = 0; i < MAX_REG; i++) {
		pid_t p = reg_pid[i];
		int st;

		if (p <= 0)
			continue;
		if (!wait_for(p, 20, &st)) {
			kill(p, SIGTERM);
			if (!wait_for(p, 10, &st)) {
				kill(p, SIGKILL);
				waitpid(p, &st, 0);
			}
		}
		reg_pid[i] = 0;
	}
	for (int i = MAX_REG - 1; i >= 0; i--) {
		if (reg_fuse[i][0]) {
			rmdir(reg_fuse[i]);
			reg_fuse[i][0] = '\0';
		}
	}
	for (int i = MAX_REG - 1; i >= 0; i--) {
		if (reg_tmpfs[i][0]) {
			if (umount2(reg_tmpfs[i], 0))
				umount2(reg_tmpfs[i], MNT_DETACH);
			rmdir(reg_tmpfs[i]);
			reg_tmpfs[i][0] = '\0';
		}
	}
	/* FTW_MOUNT: never walk into anything that is still mounted. */
	if (reg_root[0])
		nftw(reg_root, rm_entry, 16, FTW_DEPTH | FTW_PHYS | FTW_MOUNT);
	reg_root[0] = '\0';
}

static void on_signal(int sig)
{
	static const char msg[] = "\nnadbfs-bench: interrupted, cleaning up\n";

	(void)!write(2, msg, sizeof(msg) - 1);
	env_cleanup();
	signal(sig, SIG_DFL);
	raise(sig);
}

void env_init(struct bench *b)
{
	char tmpl[] = "/tmp/nadbfs-bench-XXXXXX";
	struct sigaction sa = { .sa_handler = on_signal };

	if (!mkdtemp(tmpl))
		die("mkdtemp %s: %s", tmpl, strerror(errno));
	b->root = strdup(tmpl);
	snprintf(reg_root, sizeof(reg_root), "%s", tmpl);
	atexit(env_cleanup);
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
}

void env_mount_tmpfs(const char *dir)
{
	if (mkdir(dir, 0755) && errno != EEXIST)
		die("mkdir %s: %s", dir, strerror(errno));
	if (mount("tmpfs", dir, "tmpfs", 0, "mode=0755"))
		die("mount -t tmpfs on %s: %s (the benchmark needs root)", dir, strerror(errno));
	reg_add(reg_tmpfs, dir);
}

pid_t env_spawn(char *const argv[], const char *log, const char *mountpoint)
{
	pid_t ppid = getpid();
	pid_t p;

	if (mountpoint) {
		if (mkdir(mountpoint, 0755) && errno != EEXIST)
			die("mkdir %s: %s", mountpoint, strerror(errno));
		reg_add(reg_fuse, mountpoint);
	}
	fflush(NULL);
	p = fork();
	if (p < 0)
		die("fork: %s", strerror(errno));
	if (p == 0) {
		int in = open("/dev/null", O_RDONLY);
		int out = open(log ? log : "/dev/null", O_WRONLY | O_CREAT | O_APPEND, 0644);

		prctl(PR_SET_PDEATHSIG, SIGTERM);
		if (getppid() != ppid)
			_exit(1);
		dup2(in, 0);
		dup2(out, 1);
		dup2(out, 2);
		closefrom(3);
		signal(SIGPIPE, SIG_DFL);
		signal(SIGINT, SIG_DFL);
		signal(SIGTERM, SIG_DFL);
		signal(SIGHUP, SIG_DFL);
		execvp(argv[0], argv);
		dprintf(2, "exec %s: %s\n", argv[0], strerror(errno));
		_exit(127);
	}
	pid_add(p);
	return p;
}

void print_log_tail(const char *log)
{
	char buf[4096];
	int fd = open(log, O_RDONLY);
	off_t end;
	ssize_t n;

	if (fd < 0)
		return;
	end = lseek(fd, 0, SEEK_END);
	lseek(fd, end > (off_t)sizeof(buf) - 1 ? end - (off_t)sizeof(buf) + 1 : 0, SEEK_SET);
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n > 0) {
		buf[n] = '\0';
		fprintf(stderr, "--- last lines of %s ---\n%s\n---\n", log, buf);
	}
}

static int wait_mounted(const char *dir, pid_t pid, const char *log, double timeout_s,
			bool quiet)
{
	char parent[PATH_MAX];
	double end = now_s() + timeout_s;
	struct stat sp, sd;
	int st;

	snprintf(parent, sizeof(parent), "%s/..", dir);
	if (stat(parent, &sp))
		return -1;
	for (;;) {
		if (waitpid(pid, &st, WNOHANG) == pid) {
			pid_del(pid);
			if (quiet)
				return -1;
			warnx_("daemon for %s exited (status %d) before mounting", dir,
			       WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st));
			if (log)
				print_log_tail(log);
			return -1;
		}
		if (!stat(dir, &sd) && sd.st_dev != sp.st_dev)
			return 0;
		if (now_s() > end) {
			warnx_("%s not mounted after %.0f s", dir, timeout_s);
			return -1;
		}
		sleep_s(0.001);
	}
}

int env_wait_mounted(const char *dir, pid_t pid, const char *log, double timeout_s)
{
	return wait_mounted(dir, pid, log, timeout_s, false);
}

/* After a failed start: whatever state dir and pid are in, undo both. */
static void abort_mount(const char *dir, pid_t pid)
{
	int st;

	run_quiet("fusermount3", "-u", "-z", dir);
	reg_del(reg_fuse, dir);
	if (!wait_for(pid, 0, &st)) {
		kill(pid, SIGTERM);
		if (!wait_for(pid, 10, &st)) {
			kill(pid, SIGKILL);
			waitpid(pid, &st, 0);
		}
	}
	pid_del(pid);
}

int env_unmount_fuse(const char *dir, pid_t pid, double timeout_s)
{
	int st = 0;

	if (run_quiet("fusermount3", "-u", dir, NULL) != 0) {
		warnx_("fusermount3 -u %s failed; detaching lazily", dir);
		run_quiet("fusermount3", "-u", "-z", dir);
	}
	reg_del(reg_fuse, dir);
	if (!wait_for(pid, timeout_s, &st)) {
		warnx_("daemon %d did not exit within %.0f s after unmount", (int)pid, timeout_s);
		kill(pid, SIGKILL);
		waitpid(pid, &st, 0);
		pid_del(pid);
		return -1;
	}
	pid_del(pid);
	if (WIFEXITED(st))
		return WEXITSTATUS(st);
	return 128 + WTERMSIG(st);
}

void env_stop_pid(pid_t pid)
{
	int st;

	kill(pid, SIGTERM);
	if (!wait_for(pid, 10, &st)) {
		kill(pid, SIGKILL);
		waitpid(pid, &st, 0);
	}
	pid_del(pid);
}

int env_run_capture(char *const argv[], char **out, double timeout_s)
{
	int fds[2], st = 0;
	size_t len = 0, cap = 4096;
	char *buf = xcalloc(1, cap);
	double end = now_s() + timeout_s;
	pid_t p;

	if (pipe(fds))
		die("pipe: %s", strerror(errno));
	fflush(NULL);
	p = fork();
	if (p < 0)
		die("fork: %s", strerror(errno));
	if (p == 0) {
		int in = open("/dev/null", O_RDONLY);

		prctl(PR_SET_PDEATHSIG, SIGKILL);
		dup2(in, 0);
		dup2(fds[1], 1);
		dup2(fds[1], 2);
		closefrom(3);
		execvp(argv[0], argv);
		_exit(127);
	}
	pid_add(p);
	close(fds[1]);
	fcntl(fds[0], F_SETFL, O_NONBLOCK);
	for (;;) {
		ssize_t n;

		if (len + 1 >= cap) {
			cap *= 2;
			buf = realloc(buf, cap);
			if (!buf)
				die("out of memory");
		}
		n = read(fds[0], buf + len, cap - len - 1);
		if (n > 0) {
			len += (size_t)n;
			continue;
		}
		if (n == 0)
			break;
		if (errno != EAGAIN && errno != EINTR)
			break;
		if (now_s() > end) {
			kill(p, SIGKILL);
			break;
		}
		sleep_s(0.01);
	}
	close(fds[0]);
	buf[len] = '\0';
	waitpid(p, &st, 0);
	pid_del(p);
	if (out)
		*out = buf;
	else
		free(buf);
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

long long proc_rss(pid_t pid)
{
	char path[64], line[256];
	long long kb = -1;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	f = fopen(path, "r");
	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "VmRSS: %lld kB", &kb) == 1)
			break;
	fclose(f);
	return kb < 0 ? -1 : kb * 1024;
}

pid_t nadbfs_start(struct bench *b, const char *data, const char *mnt, const char *opts,
		   const char *log, bool quiet)
{
	char *argv[8];
	int n = 0;
	pid_t p;

	argv[n++] = b->nadbfs_bin;
	argv[n++] = "-f";
	if (opts && *opts) {
		argv[n++] = "-o";
		argv[n++] = (char *)opts;
	}
	argv[n++] = (char *)data;
	argv[n++] = (char *)mnt;
	argv[n] = NULL;
	p = env_spawn(argv, log, mnt);
	if (wait_mounted(mnt, p, log, 120, quiet)) {
		abort_mount(mnt, p);
		return -1;
	}
	return p;
}

int nadbfs_stop(const char *mnt, pid_t pid, const char *log)
{
	int st = env_unmount_fuse(mnt, pid, 300);

	if (st != 0) {
		warnx_("nadbfs on %s exited with status %d", mnt, st);
		print_log_tail(log);
	}
	return st;
}
