/*
 * Bulk workloads: sequential write and read of one large file, a mixed
 * workload of concurrent writers and readers on overlapping keys, and flush
 * throughput to each nadbfs backend (with redis-benchmark as the Redis
 * baseline).
 */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "bench.h"

#define MIB (1024 * 1024)
#define POOL_BLOCKS 32 /* distinct 1 MiB blocks: repeats lie beyond zstd's window */
#define MIXED_SIZE 4096
#define FLUSH_VALUE 1024
/* What a pass that takes new memory touches first (env_warm_memory). */
#define WARM_BYTES ((size_t)1024 * MIB)

static double seq_write(const char *path, size_t bytes, const unsigned char *pool)
{
	double t0 = now_s();
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);

	if (fd < 0) {
		warnx_("create %s: %s", path, strerror(errno));
		return NAN;
	}
	for (size_t i = 0; i < bytes / MIB; i++) {
		if (write(fd, pool + (i % POOL_BLOCKS) * MIB, MIB) != MIB) {
			warnx_("write %s: %s", path, strerror(errno));
			close(fd);
			return NAN;
		}
	}
	if (close(fd)) {
		warnx_("close %s: %s", path, strerror(errno));
		return NAN;
	}
	return (double)bytes / MIB / (now_s() - t0);
}

static double seq_read(const char *path, size_t bytes, unsigned char *buf)
{
	double t0 = now_s();
	size_t total = 0;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t n;

	if (fd < 0) {
		warnx_("open %s: %s", path, strerror(errno));
		return NAN;
	}
	while ((n = read(fd, buf, MIB)) > 0)
		total += (size_t)n;
	close(fd);
	if (n < 0 || total != bytes) {
		warnx_("read %s: %zu bytes of %zu (%s)", path, total, bytes,
		       n < 0 ? strerror(errno) : "short");
		return NAN;
	}
	return (double)bytes / MIB / (now_s() - t0);
}

void bench_seq(struct bench *b)
{
	struct row *rw, *rr;
	unsigned char *pool, *buf;

	if (!selected(b, "seq"))
		return;
	rw = row_add(xasprintf("sequential write %zu MiB (1 MiB writes)", b->sz.seq_bytes / MIB),
		     "MiB/s");
	rr = row_add(xasprintf("sequential read %zu MiB (1 MiB reads)", b->sz.seq_bytes / MIB),
		     "MiB/s");
	row_target(rw, TGT_VS_BINDFS, 1.0, NULL);
	row_target(rr, TGT_VS_BINDFS, 1.0, NULL);
	pool = xcalloc(POOL_BLOCKS, MIB);
	buf = xcalloc(1, MIB);
	fill_random(pool, (size_t)POOL_BLOCKS * MIB, 2);
	for (int k = 0; k < NFS; k++) {
		char *path = xasprintf("%s/seq.bin", b->fs[k].dir);
		double v;

		fprintf(stderr, "  sequential on %s\n", b->fs[k].name);
		/*
		 * Enough for both passes: nadbfs holds up to three copies (its
		 * buffer, the backend's and the page cache). Not again between
		 * them: the pause would let nadbfs's flush of the file finish
		 * before the read, which the baselines have no use for.
		 */
		env_warm_memory(WARM_BYTES);
		v = seq_write(path, b->sz.seq_bytes, pool);
		row_set(rw, k, v);
		if (!isnan(v))
			row_set(rr, k, seq_read(path, b->sz.seq_bytes, buf));
		unlink(path);
		free(path);
	}
	free(pool);
	free(buf);
}

struct mixed_ctx {
	int dirfd;
	int keys;
	double secs;
	long ops[4];
	const unsigned char *data;
};

/* Threads 0 and 1 rewrite random keys, 2 and 3 read random keys, for secs. */
static int mixed_worker(int i, int n, void *arg)
{
	struct mixed_ctx *c = arg;
	unsigned char buf[MIXED_SIZE];
	uint64_t x = 0x2545F4914F6CDD1Dull * (uint64_t)(i + 1);
	double end = now_s() + c->secs;
	bool writer = i < n / 2;
	char name[32] = "";
	long ops = 0;
	int fd = -1;

	while (now_s() < end) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		snprintf(name, sizeof(name), "m%05d", (int)(x % (uint64_t)c->keys));
		if (writer) {
			fd = openat(c->dirfd, name, O_WRONLY | O_TRUNC | O_CLOEXEC);
			if (fd < 0 || write(fd, c->data + (x % 64) * 16, MIXED_SIZE) != MIXED_SIZE)
				goto fail;
		} else {
			/* A key caught between O_TRUNC and its write may be empty. */
			fd = openat(c->dirfd, name, O_RDONLY | O_CLOEXEC);
			if (fd < 0 || read(fd, buf, sizeof(buf)) < 0)
				goto fail;
		}
		if (close(fd)) {
			fd = -1;
			goto fail;
		}
		ops++;
	}
	c->ops[i] = ops;
	return 0;
fail:
	warnx_("mixed %s %s: %s", writer ? "write" : "read", name, strerror(errno));
	if (fd >= 0)
		close(fd);
	return -EIO;
}

void bench_mixed(struct bench *b)
{
	struct row *rw, *rr;
	unsigned char *data;

	if (!selected(b, "mixed"))
		return;
	rw = row_add(xasprintf("mixed %.0f s, %d keys of 4 KiB: 2 writers", b->sz.mixed_s,
			       b->sz.mixed_keys),
		     "writes/s");
	rr = row_add("mixed, same time: 2 readers", "reads/s");
	data = xcalloc(1, MIXED_SIZE + 64 * 16);
	fill_random(data, MIXED_SIZE + 64 * 16, 3);
	for (int k = 0; k < NFS; k++) {
		char *dir = xasprintf("%s/mixed", b->fs[k].dir);
		struct mixed_ctx c = { .keys = b->sz.mixed_keys, .secs = b->sz.mixed_s,
				       .data = data };
		bool ok = true;
		double dt;

		fprintf(stderr, "  mixed on %s\n", b->fs[k].name);
		mkdir(dir, 0755);
		c.dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		for (int i = 0; ok && i < c.keys; i++) {
			char name[32];
			int fd;

			snprintf(name, sizeof(name), "m%05d", i);
			fd = openat(c.dirfd, name, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
			ok = fd >= 0 && write(fd, data, MIXED_SIZE) == MIXED_SIZE;
			if (fd >= 0)
				close(fd);
		}
		if (!ok)
			warnx_("mixed: cannot create the keys in %s: %s", dir, strerror(errno));
		dt = ok ? run_threads(4, mixed_worker, &c) : NAN;
		if (!isnan(dt)) {
			row_set(rw, k, (double)(c.ops[0] + c.ops[1]) / dt);
			row_set(rr, k, (double)(c.ops[2] + c.ops[3]) / dt);
		}
		for (int i = 0; i < c.keys; i++) {
			char name[32];

			snprintf(name, sizeof(name), "m%05d", i);
			unlinkat(c.dirfd, name, 0);
		}
		close(c.dirfd);
		rmdir(dir);
		free(dir);
	}
	free(data);
}

/* --- flush throughput, per backend --- */

struct flush_ctx {
	int dirfd;
	int keys;
	const unsigned char *data;
};

static int flush_writer(int i, int n, void *arg)
{
	struct flush_ctx *c = arg;
	char name[32];

	for (int k = i; k < c->keys; k += n) {
		int fd;

		snprintf(name, sizeof(name), "d%02d/k%06d", k % 16, k);
		fd = openat(c->dirfd, name, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
		if (fd < 0 || write(fd, c->data + (k % 64) * 16, FLUSH_VALUE) != FLUSH_VALUE) {
			warnx_("flush setup: write %s: %s", name, strerror(errno));
			if (fd >= 0)
				close(fd);
			return -EIO;
		}
		close(fd);
	}
	return 0;
}

/* The ctl command `flush` through .nadb/ctl: 0 once the reply is "ok". */
static int ctl_flush(const char *mnt)
{
	char *path = xasprintf("%s/.nadb/ctl", mnt);
	char reply[256] = "";
	int fd = open(path, O_RDWR | O_CLOEXEC);
	ssize_t n;

	free(path);
	if (fd < 0) {
		warnx_("open %s/.nadb/ctl: %s", mnt, strerror(errno));
		return -1;
	}
	if (write(fd, "flush\n", 6) != 6) {
		warnx_("ctl flush: %s", strerror(errno));
		close(fd);
		return -1;
	}
	n = pread(fd, reply, sizeof(reply) - 1, 0);
	close(fd);
	if (n < 2 || strncmp(reply, "ok", 2)) {
		warnx_("ctl flush replied: %s", n > 0 ? reply : "nothing");
		return -1;
	}
	return 0;
}

/*
 * Mounts nadbfs on source with flushing held back, writes the keys, and
 * times one `flush`: keys per second, NAN if it failed, and *mounted false
 * if the daemon would not mount source at all (backend not available).
 */
/* CPU seconds pid has used so far (user + system), NAN if unknown. */
static double proc_cpu_s(pid_t pid)
{
	char path[64], buf[1024], *p;
	unsigned long utime, stime;
	FILE *f;
	size_t n;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	f = fopen(path, "r");
	if (!f)
		return NAN;
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	/* Fields 14 and 15, counted after the command name's closing paren. */
	p = strrchr(buf, ')');
	if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &utime,
			 &stime) != 2)
		return NAN;
	return (double)(utime + stime) / (double)sysconf(_SC_CLK_TCK);
}

/* Keys per second of one flush of keys fresh 1 KiB values through source;
 * *server_cpu (unless NULL) gets the CPU seconds server_pid used meanwhile. */
static double flush_rate(struct bench *b, const char *source, const char *tag, int keys,
			 bool quiet, bool *mounted, pid_t server_pid, double *server_cpu)
{
	char *mnt = xasprintf("%s/flush-%s", b->root, tag);
	char *log = xasprintf("%s/nadbfs-flush-%s.log", b->root, tag);
	unsigned char *data = xcalloc(1, FLUSH_VALUE + 64 * 16);
	struct flush_ctx c = { .keys = keys, .data = data };
	double rate = NAN, t0;
	pid_t pid;

	fill_random(data, FLUSH_VALUE + 64 * 16, 4);
	pid = nadbfs_start(b, source, mnt, "flush_interval=1h,buffer_size=2048M", log, quiet);
	*mounted = pid > 0;
	if (pid <= 0)
		goto out;
	c.dirfd = open(mnt, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	for (int d = 0; d < 16; d++) {
		char name[8];

		snprintf(name, sizeof(name), "d%02d", d);
		mkdirat(c.dirfd, name, 0755);
	}
	/* The daemon and the backend (tmpfs, or redis-server) take new
	 * memory. Before the writes, not between them and the flush: the
	 * pause would let the page cache pushes of the written values finish
	 * before the flush, which they otherwise slow down. */
	env_warm_memory(WARM_BYTES);
	if (!isnan(run_threads(4, flush_writer, &c))) {
		double cpu0 = server_pid ? proc_cpu_s(server_pid) : NAN;

		t0 = now_s();
		if (!ctl_flush(mnt))
			rate = keys / (now_s() - t0);
		if (server_cpu)
			*server_cpu = proc_cpu_s(server_pid) - cpu0;
	}
	close(c.dirfd);
	nadbfs_stop(mnt, pid, log);
out:
	free(data);
	free(mnt);
	free(log);
	return rate;
}

/* redis-server on a private unix socket (never a TCP port): its pid, or 0. */
static pid_t redis_start(struct bench *b, const char *sock)
{
	char *log = xasprintf("%s/redis.log", b->root);
	char *argv[] = { "redis-server", "--port", "0", "--unixsocket", (char *)sock,
			 "--unixsocketperm", "700", "--save", "", "--appendonly", "no",
			 "--dir", b->root, NULL };
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	double end = now_s() + 10;
	pid_t pid = env_spawn(argv, log, NULL);

	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", sock);
	while (now_s() < end) {
		int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		int ok = connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0;

		close(fd);
		if (ok) {
			free(log);
			return pid;
		}
		usleep(10000);
	}
	warnx_("redis-server did not start");
	print_log_tail(log);
	env_stop_pid(pid);
	free(log);
	return 0;
}

/* redis-benchmark -P 16 -d 1024 SET rate on sock, NAN on failure; *cpu:
 * the CPU seconds redis-server (pid) used meanwhile. distinct: with -r
 * 1000000, SETs of a million distinct keys, as a flush writes distinct
 * keys; without it (the command as issue 5 writes it) every SET
 * overwrites the one key "key:__rand_int__". */
static double redis_baseline(struct bench *b, const char *sock, pid_t pid, bool distinct,
			     double *cpu)
{
	char n[24];
	char *out = NULL, *p, *last = NULL;
	char *argv[] = { "redis-benchmark", "-s", (char *)sock, "-P", "16", "-d", "1024",
			 "-t", "set", "-n", n, "-q", "-r", "1000000", NULL };
	double v = NAN;

	if (!distinct)
		argv[12] = NULL;

	snprintf(n, sizeof(n), "%d", b->sz.redis_requests);
	/* As before a flush: redis-server takes new memory. */
	env_warm_memory(WARM_BYTES);
	*cpu = proc_cpu_s(pid);
	if (env_run_capture(argv, &out, 300) == 0) {
		*cpu = proc_cpu_s(pid) - *cpu;
		for (p = out; (p = strstr(p, "SET: ")); p += 5)
			last = p;
		if (last && strstr(last, "requests per second"))
			v = strtod(last + 5, NULL);
	}
	if (isnan(v))
		warnx_("redis-benchmark failed: %s", out ? out : "");
	free(out);
	return v;
}

void bench_flush(struct bench *b)
{
	if (selected(b, "flush")) {
		struct row *r = row_add(xasprintf("flush %d keys of 1 KiB to fs backend",
						  b->sz.flush_keys),
					"keys/s");
		char *src = xasprintf("%s/data/flush", b->root);
		bool mounted;

		fprintf(stderr, "  flush to the filesystem backend\n");
		row_set(r, FS_NADBFS, flush_rate(b, src, "fs", b->sz.flush_keys, false, &mounted, 0, NULL));
		free(src);
	}
	if (selected(b, "redis")) {
		struct row *r = row_add(xasprintf("flush %d keys of 1 KiB to Redis backend",
						  b->sz.flush_keys),
					"keys/s");
		char *sock = xasprintf("%s/redis.sock", b->root);
		char *src = xasprintf("redis+unix://%s", sock);
		pid_t rpid = 0;
		double base = NAN, v = NAN, base_cpu = NAN, flush_cpu = NAN, one_cpu;
		/* The best pass of the one-key baseline, as row_base keeps the other's. */
		static double one_key = NAN;
		bool mounted = false;

		fprintf(stderr, "  flush to the Redis backend\n");
		if (access("/usr/bin/redis-server", X_OK) || access("/usr/bin/redis-benchmark", X_OK))
			row_note(r, "n/a (redis-server/redis-benchmark not installed: see bench/deps)");
		else if (!(rpid = redis_start(b, sock)))
			row_note(r, "n/a (redis-server did not start)");
		if (rpid) {
			base = redis_baseline(b, sock, rpid, true, &base_cpu);
			v = flush_rate(b, src, "redis", b->sz.flush_keys, true, &mounted, rpid,
				       &flush_cpu);
			/* After the flush, which it would not disturb anyway (it
			 * leaves one key more). */
			double one = redis_baseline(b, sock, rpid, false, &one_cpu);

			if (isnan(one_key) || one > one_key)
				one_key = one;
			row_set(r, FS_NADBFS, v);
			row_base(r, base, "redis-benchmark");
			row_target(r, TGT_VS_BASE, 0.3, NULL);
			if (!mounted)
				row_note(r, "n/a (redis backend not available); "
					    "redis-benchmark -P 16 -d 1024 SET: %.0f/s", base);
			else
				/* The baseline the ratio divides by (the best pass,
				 * as the flush's figure is), and what bounds the
				 * ratio: Redis's own CPU per key written, against
				 * per SET of the baseline (this pass's). */
				row_note(r,
					 "redis-benchmark -P 16 -d 1024 -t set -r 1000000: %.0f SET/s; "
					 "redis-server CPU: %.1f us per key flushed, %.1f us per SET; "
					 "without -r (one key overwritten): %.0f SET/s, flush %.2fx of it",
					 row_best_base(r), flush_cpu * 1e6 / b->sz.flush_keys,
					 base_cpu * 1e6 / b->sz.redis_requests, one_key,
					 row_value(r, FS_NADBFS) / one_key);
			env_stop_pid(rpid);
		}
		free(sock);
		free(src);
	}
}
