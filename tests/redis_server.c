/*
 * A private redis-server for tests (see redis_server.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "tests/redis_server.h"

#define START_TIMEOUT_MS 10000
#define STOP_TIMEOUT_MS 10000

/* Servers alive now, killed at exit if a failed test never stopped them. */
#define MAX_SERVERS 8
static pid_t live[MAX_SERVERS];
static bool atexit_done;

static void kill_live(void)
{
	for (int i = 0; i < MAX_SERVERS; i++) {
		if (live[i] > 0) {
			kill(live[i], SIGKILL);
			waitpid(live[i], NULL, 0);
			live[i] = 0;
		}
	}
}

static void live_set(pid_t old, pid_t pid)
{
	if (!atexit_done) {
		atexit(kill_live);
		atexit_done = true;
	}
	for (int i = 0; i < MAX_SERVERS; i++) {
		if (live[i] == old) {
			live[i] = pid;
			return;
		}
	}
}

static int64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void pause_ms(int ms)
{
	struct timespec ts = { 0, (long)ms * 1000000 };

	nanosleep(&ts, NULL);
}

static const char *server_bin(void)
{
	const char *bin = getenv("NADBFS_REDIS_SERVER");

	return bin && *bin ? bin : "redis-server";
}

/* One PING on the socket: true when the server answers (+PONG, or -NOAUTH
 * when it wants a password: it is up either way). */
static bool answers(const char *sock)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	char buf[64];
	ssize_t n;
	bool ok = false;
	int fd;

	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return false;
	if (strlen(sock) >= sizeof(sa.sun_path)) {
		close(fd);
		return false;
	}
	memcpy(sa.sun_path, sock, strlen(sock) + 1);
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 &&
	    write(fd, "PING\r\n", 6) == 6) {
		struct timeval tv = { 1, 0 };

		setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
		n = read(fd, buf, sizeof(buf) - 1);
		if (n > 0) {
			buf[n] = '\0';
			ok = !strncmp(buf, "+PONG", 5) || !strncmp(buf, "-NOAUTH", 7);
		}
	}
	close(fd);
	return ok;
}

static int spawn(struct redis_server *s)
{
	char log[128], port[16];
	const char *argv[28];
	int n = 0;
	pid_t pid;

	snprintf(log, sizeof(log), "%s/redis.log", s->dir);
	argv[n++] = server_bin();
	snprintf(port, sizeof(port), "%u", s->port);
	argv[n++] = "--port";
	argv[n++] = port;
	if (s->port) {
		argv[n++] = "--bind";
		argv[n++] = "127.0.0.1";
	}
	argv[n++] = "--save";
	argv[n++] = "";
	argv[n++] = "--appendonly";
	argv[n++] = s->aof ? "yes" : "no";
	if (s->aof) {
		argv[n++] = "--appendfsync";
		argv[n++] = "always";
	}
	argv[n++] = "--unixsocket";
	argv[n++] = s->sock;
	argv[n++] = "--unixsocketperm";
	argv[n++] = "700";
	argv[n++] = "--daemonize";
	argv[n++] = "no";
	argv[n++] = "--dir";
	argv[n++] = s->dir;
	argv[n++] = "--logfile";
	argv[n++] = log;
	/* Spec section 9: SCAN only, never KEYS (it blocks the server for
	 * the whole keyspace). Any KEYS of nadbfs then fails its test. */
	argv[n++] = "--rename-command";
	argv[n++] = "KEYS";
	argv[n++] = "";
	if (s->password[0]) {
		argv[n++] = "--requirepass";
		argv[n++] = s->password;
	}
	argv[n] = NULL;

	pid = fork();
	if (pid < 0)
		return -errno;
	if (pid == 0) {
		int null = open("/dev/null", O_RDWR);

		/* Never outlives a test program killed by a timeout. */
		prctl(PR_SET_PDEATHSIG, SIGTERM);

		if (null >= 0) {
			dup2(null, 0);
			dup2(null, 1);
		}
		/* A descriptor the test holds open on a mount would keep that
		 * mount busy for as long as the server runs. */
		close_range(3, ~0U, 0);
		execvp(argv[0], (char *const *)argv);
		fprintf(stderr, "cannot run %s: %s (install redis-server, or set "
			"NADBFS_REDIS_SERVER)\n", argv[0], strerror(errno));
		_exit(127);
	}
	live_set(0, pid);
	s->pid = pid;

	for (int64_t deadline = mono_ms() + START_TIMEOUT_MS;;) {
		int st;

		if (waitpid(pid, &st, WNOHANG) == pid) {
			live_set(pid, 0);
			s->pid = 0;
			fprintf(stderr, "redis-server exited before it answered (status 0x%x); "
				"see %s\n", st, log);
			return WIFEXITED(st) && WEXITSTATUS(st) == 127 ? -ENOENT : -EIO;
		}
		if (answers(s->sock))
			return 0;
		if (mono_ms() > deadline) {
			fprintf(stderr, "redis-server did not answer PING within %d ms\n",
				START_TIMEOUT_MS);
			redis_server_halt(s);
			return -ETIMEDOUT;
		}
		pause_ms(5);
	}
}

/* A loopback port free now, picked by the kernel from the ephemeral range
 * (checked anyway never to be Redis's default port). */
static unsigned free_port(void)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(sa);
	unsigned port = 0;
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd < 0)
		return 0;
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 &&
	    getsockname(fd, (struct sockaddr *)&sa, &len) == 0)
		port = ntohs(sa.sin_port);
	close(fd);
	return port;
}

static int start(struct redis_server *s, const char *password, bool aof, bool tcp)
{
	memset(s, 0, sizeof(*s));
	s->aof = aof;
	if (tcp) {
		s->port = free_port();
		if (!s->port || s->port == 6379)
			return -EADDRNOTAVAIL;
	}
	strcpy(s->dir, "/tmp/nadbfs-redis-XXXXXX");
	if (!mkdtemp(s->dir)) {
		int e = errno;

		fprintf(stderr, "mkdtemp: %s\n", strerror(e));
		s->dir[0] = '\0';
		return -e;
	}
	snprintf(s->sock, sizeof(s->sock), "%s/redis.sock", s->dir);
	if (password)
		snprintf(s->password, sizeof(s->password), "%s", password);
	return spawn(s);
}

int redis_server_start(struct redis_server *s, const char *password)
{
	return start(s, password, false, false);
}

int redis_server_start_tcp(struct redis_server *s, const char *password)
{
	int ret = start(s, password, false, true);

	/* The port is free when picked, not necessarily when Redis binds it:
	 * another process may take it in between, and Redis exits. */
	for (int tries = 1; tries < 5 && ret == -EIO; tries++) {
		redis_server_stop(s);
		ret = start(s, password, false, true);
	}
	return ret;
}

int redis_server_start_aof(struct redis_server *s)
{
	return start(s, NULL, true, false);
}

void redis_server_kill(struct redis_server *s)
{
	if (s->pid <= 0)
		return;
	kill(s->pid, SIGKILL);
	waitpid(s->pid, NULL, 0);
	live_set(s->pid, 0);
	s->pid = 0;
}

void redis_server_halt(struct redis_server *s)
{
	int64_t deadline = mono_ms() + STOP_TIMEOUT_MS;
	pid_t pid = s->pid;

	if (pid <= 0)
		return;
	kill(pid, SIGCONT);	/* a test may have stopped it */
	kill(pid, SIGTERM);
	while (waitpid(pid, NULL, WNOHANG) != pid) {
		if (mono_ms() > deadline) {
			kill(pid, SIGKILL);
			waitpid(pid, NULL, 0);
			break;
		}
		pause_ms(5);
	}
	live_set(pid, 0);
	s->pid = 0;
}

int redis_server_resume(struct redis_server *s)
{
	if (s->pid > 0)
		return 0;
	unlink(s->sock);
	return spawn(s);
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	remove(path);
	return 0;
}

void redis_server_stop(struct redis_server *s)
{
	redis_server_halt(s);
	if (s->dir[0])
		nftw(s->dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
	s->dir[0] = '\0';
}

char *redis_cli(const struct redis_server *s, const char *fmt, ...)
{
	char *args, *cmd, *out = NULL;
	size_t len = 0, cap = 0;
	va_list ap;
	FILE *f;
	int n;

	va_start(ap, fmt);
	n = vasprintf(&args, fmt, ap);
	va_end(ap);
	if (n < 0)
		return NULL;
	n = asprintf(&cmd, "redis-cli -s '%s' %s%s%s --raw %s 2>&1", s->sock,
		     s->password[0] ? "--no-auth-warning -a '" : "", s->password,
		     s->password[0] ? "'" : "", args);
	free(args);
	if (n < 0)
		return NULL;
	f = popen(cmd, "r");
	free(cmd);
	if (!f)
		return NULL;
	for (;;) {
		size_t got;

		if (cap - len < 4096) {
			char *p = realloc(out, cap + 65536);

			if (!p)
				break;
			out = p;
			cap += 65536;
		}
		got = fread(out + len, 1, cap - len - 1, f);
		if (!got)
			break;
		len += got;
	}
	if (out)
		out[len] = '\0';
	if (pclose(f) != 0) {
		free(out);
		return NULL;
	}
	return out;
}
