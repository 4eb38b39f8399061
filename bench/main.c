/*
 * nadbfs-bench: options, the three filesystems under test, the run, and the
 * result table (see bench.h).
 */
#include <errno.h>
#include <getopt.h>
#include <libgen.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"

#define MAX_ROWS 64

struct row {
	const char *name;
	const char *unit;
	double v[NFS];
	char note[256];
	enum target_kind tk;
	double tgt;
	const struct row *ref;
	double base;
	const char *base_label;
};

static struct row rows[MAX_ROWS];
static int nrows;

static const char *const workloads[] = { "create", "read",  "stat",  "xattr", "unlink",
					 "ls",	   "seq",   "mixed", "flush", "redis",
					 "tags",   "mount", NULL };

static const char usage[] =
	"usage: nadbfs-bench [--quick] [--repeat N] [--only WORKLOAD[,...]] [--nadbfs PATH]\n"
	"\n"
	"Runs each workload against tmpfs, bindfs over tmpfs and nadbfs (data on tmpfs)\n"
	"and prints one table with the ratios and the targets of issue 8. Needs root\n"
	"(it mounts tmpfs), /dev/fuse, fusermount3 and bindfs; redis-server and\n"
	"redis-benchmark for the Redis baseline. Everything it mounts and starts lives\n"
	"under a fresh /tmp/nadbfs-bench-XXXXXX and is removed at exit or on SIGINT.\n"
	"\n"
	"  --quick        small sizes (about a minute), for development\n"
	"  --repeat N     run create..flush N times, keep each figure's best\n"
	"  --only LIST    workloads: create read stat xattr unlink ls seq mixed flush\n"
	"                 redis tags mount\n"
	"  --nadbfs PATH  the daemon (default: ../mount/nadbfs next to this program)\n";

bool selected(const struct bench *b, const char *name)
{
	const char *p = b->only;
	size_t n = strlen(name);

	if (!p)
		return true;
	while (*p) {
		size_t len = strcspn(p, ",");

		if (len == n && !strncmp(p, name, n))
			return true;
		p += len;
		if (*p == ',')
			p++;
	}
	return false;
}

struct row *row_add(const char *name, const char *unit)
{
	struct row *r;

	/* A repeated workload finds its rows again (--repeat). */
	for (int i = 0; i < nrows; i++)
		if (!strcmp(rows[i].name, name))
			return &rows[i];
	if (nrows == MAX_ROWS)
		die("too many rows");
	r = &rows[nrows++];
	r->name = name;
	r->unit = unit;
	for (int k = 0; k < NFS; k++)
		r->v[k] = NAN;
	r->base = NAN;
	return r;
}

/* Keeps the best of repeated passes: the fastest rate, the shortest time. */
void row_set(struct row *r, enum fs_kind k, double v)
{
	bool lower_better = !strcmp(r->unit, "s");

	if (isnan(r->v[k]) || (lower_better ? v < r->v[k] : v > r->v[k]))
		r->v[k] = v;
}

void row_note(struct row *r, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(r->note, sizeof(r->note), fmt, ap);
	va_end(ap);
}

/* A baseline measured again (--repeat) keeps its best too, so that the
 * ratio compares best with best. */
void row_base(struct row *r, double v, const char *label)
{
	if (isnan(r->base) || v > r->base)
		r->base = v;
	r->base_label = label;
}

double row_best_base(const struct row *r)
{
	return r->base;
}

double row_value(const struct row *r, enum fs_kind k)
{
	return r->v[k];
}

void row_target(struct row *r, enum target_kind kind, double tgt, const struct row *ref)
{
	r->tk = kind;
	r->tgt = tgt;
	r->ref = ref;
}

static void fmt_val(char *buf, size_t len, double v)
{
	if (isnan(v))
		snprintf(buf, len, "-");
	else if (fabs(v) >= 100)
		snprintf(buf, len, "%.0f", v);
	else if (fabs(v) >= 10)
		snprintf(buf, len, "%.1f", v);
	else
		snprintf(buf, len, "%.2f", v);
}

static void fmt_ratio(char *buf, size_t len, double a, double b)
{
	if (isnan(a) || isnan(b) || b == 0)
		snprintf(buf, len, "-");
	else
		snprintf(buf, len, "%.2fx", a / b);
}

/* The target text, and whether it was met: 1 ok, 0 missed, -1 not measured. */
static int eval_target(const struct row *r, char *txt, size_t len, double *measured)
{
	double n = r->v[FS_NADBFS];

	*measured = NAN;
	switch (r->tk) {
	case TGT_NONE:
		txt[0] = '\0';
		return -1;
	case TGT_VS_TMPFS:
		snprintf(txt, len, ">= %.1fx tmpfs", r->tgt);
		*measured = n / r->v[FS_TMPFS];
		break;
	case TGT_VS_BINDFS:
		snprintf(txt, len, ">= %.1fx bindfs", r->tgt);
		*measured = n / r->v[FS_BINDFS];
		break;
	case TGT_AT_MOST:
		snprintf(txt, len, "<= %g %s", r->tgt, r->unit);
		*measured = n;
		if (isnan(n))
			return -1;
		return n <= r->tgt;
	case TGT_VS_ROW:
		*measured = n / r->ref->v[FS_NADBFS];
		snprintf(txt, len, ">= %.1fx smaller store", r->tgt);
		if (!isnan(*measured))
			snprintf(txt, len, ">= %.1fx smaller store: %.2fx", r->tgt, *measured);
		break;
	case TGT_VS_BASE:
		*measured = n / r->base;
		snprintf(txt, len, ">= %.1fx %s", r->tgt, r->base_label);
		if (!isnan(*measured))
			snprintf(txt, len, ">= %.1fx %s: %.2fx", r->tgt, r->base_label, *measured);
		break;
	}
	if (isnan(*measured))
		return -1;
	return *measured >= r->tgt;
}

static void print_table(const struct bench *b)
{
	char date[32], t[16], bi[16], n[16], rt[16], rb[16], tg[64];
	struct utsname u;
	time_t now = time(NULL);
	int missed = 0;

	strftime(date, sizeof(date), "%Y-%m-%d %H:%M", localtime(&now));
	uname(&u);
	printf("\nnadbfs-bench%s, %s, Linux %s, %ld CPUs", b->quick ? " --quick" : "", date,
	       u.release, sysconf(_SC_NPROCESSORS_ONLN));
	if (b->repeat > 1)
		printf(", best of %d passes (create to flush)", b->repeat);
	printf("\n");
	printf("%-46s %-10s %10s %10s %10s %8s %9s  %s\n", "workload", "unit", "tmpfs", "bindfs",
	       "nadbfs", "n/tmpfs", "n/bindfs", "target");
	for (int i = 0; i < nrows; i++) {
		const struct row *r = &rows[i];
		double m;
		int ok;

		fmt_val(t, sizeof(t), r->v[FS_TMPFS]);
		fmt_val(bi, sizeof(bi), r->v[FS_BINDFS]);
		fmt_val(n, sizeof(n), r->v[FS_NADBFS]);
		if (isnan(r->v[FS_NADBFS]) && r->note[0])
			snprintf(n, sizeof(n), "n/a");
		fmt_ratio(rt, sizeof(rt), r->v[FS_NADBFS], r->v[FS_TMPFS]);
		fmt_ratio(rb, sizeof(rb), r->v[FS_NADBFS], r->v[FS_BINDFS]);
		ok = eval_target(r, tg, sizeof(tg), &m);
		printf("%-46s %-10s %10s %10s %10s %8s %9s  %s%s%s%s%s\n", r->name, r->unit, t, bi,
		       n, rt, rb, tg, ok == 1 ? " ok" : ok == 0 ? " MISSED" : "",
		       r->tk != TGT_NONE && ok == -1 && !r->note[0] ? " n/a" : "", r->note[0] ? "  " : "",
		       r->note);
		missed += ok == 0;
	}
	printf("\n%d target%s missed\n", missed, missed == 1 ? "" : "s");
	for (int i = 0; i < nrows; i++) {
		const struct row *r = &rows[i];
		double m;

		if (eval_target(r, tg, sizeof(tg), &m) != 0)
			continue;
		if (r->tk == TGT_AT_MOST)
			printf("  MISSED %s: %.3g %s, target %s (%.0f%% over)\n", r->name, m,
			       r->unit, tg, (m / r->tgt - 1) * 100);
		else
			printf("  MISSED %s: %.2fx, target %s (%.0f%% short)\n", r->name, m, tg,
			       (1 - m / r->tgt) * 100);
	}
}

static char *default_nadbfs(void)
{
	char exe[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);

	if (n <= 0)
		return NULL;
	exe[n] = '\0';
	return xasprintf("%s/../mount/nadbfs", dirname(exe));
}

static bool in_path(const char *prog)
{
	char *path = getenv("PATH") ? strdup(getenv("PATH")) : strdup("/usr/bin:/bin");
	bool found = false;

	for (char *s, *d = strtok_r(path, ":", &s); d && !found; d = strtok_r(NULL, ":", &s)) {
		char *p = xasprintf("%s/%s", d, prog);

		found = access(p, X_OK) == 0;
		free(p);
	}
	free(path);
	return found;
}

static void set_sizes(struct bench *b)
{
	if (b->quick)
		b->sz = (struct sizes){ .files = 1000,
					.ls_keys = 10000,
					.seq_bytes = 32ull << 20,
					.mixed_s = 1,
					.mixed_keys = 200,
					.flush_keys = 2000,
					.store_dirs_small = 2,
					.store_dirs_big = 20,
					.redis_requests = 50000 };
	else
		b->sz = (struct sizes){ .files = 10000,
					.ls_keys = 100000,
					.seq_bytes = 256ull << 20,
					.mixed_s = 5,
					.mixed_keys = 1000,
					.flush_keys = 20000,
					.store_dirs_small = 10,
					.store_dirs_big = 1000,
					.redis_requests = 1000000 };
}

static void parse_args(struct bench *b, int argc, char **argv)
{
	static const struct option opts[] = { { "quick", no_argument, NULL, 'q' },
					      { "only", required_argument, NULL, 'o' },
					      { "nadbfs", required_argument, NULL, 'n' },
					      { "repeat", required_argument, NULL, 'r' },
					      { "help", no_argument, NULL, 'h' },
					      { 0 } };
	int c;

	while ((c = getopt_long(argc, argv, "qo:n:r:h", opts, NULL)) != -1) {
		switch (c) {
		case 'q':
			b->quick = true;
			break;
		case 'o':
			b->only = optarg;
			break;
		case 'n':
			b->nadbfs_bin = realpath(optarg, NULL);
			if (!b->nadbfs_bin)
				die("--nadbfs %s: %s", optarg, strerror(errno));
			break;
		case 'r':
			b->repeat = atoi(optarg);
			if (b->repeat < 1 || b->repeat > 100)
				die("--repeat %s: want 1..100", optarg);
			break;
		case 'h':
			fputs(usage, stdout);
			exit(0);
		default:
			fputs(usage, stderr);
			exit(2);
		}
	}
	if (optind < argc) {
		fprintf(stderr, "nadbfs-bench: unexpected argument '%s'\n%s", argv[optind], usage);
		exit(2);
	}
	if (b->only) {
		for (const char *p = b->only; *p;) {
			size_t len = strcspn(p, ",");
			bool known = false;

			for (int i = 0; workloads[i]; i++)
				known |= strlen(workloads[i]) == len && !strncmp(workloads[i], p, len);
			if (!known)
				die("--only: unknown workload '%.*s'\n%s", (int)len, p, usage);
			p += len + (p[len] == ',');
		}
	}
	if (!b->nadbfs_bin)
		b->nadbfs_bin = default_nadbfs();
	if (!b->nadbfs_bin || access(b->nadbfs_bin, X_OK))
		die("cannot find the nadbfs daemon (%s); build it or give --nadbfs PATH",
		    b->nadbfs_bin ? b->nadbfs_bin : "?");
}

/* The three filesystems: tmpfs, bindfs over its own tmpfs, nadbfs on a tmpfs data dir. */
static void setup_fs(struct bench *b)
{
	char *bsrc = xasprintf("%s/bindfs-src", b->root);
	char *blog = xasprintf("%s/bindfs.log", b->root);
	char *data = xasprintf("%s/data", b->root);
	char *ndata = xasprintf("%s/data/main", b->root);
	char *nlog = xasprintf("%s/nadbfs-main.log", b->root);
	char *bargv[] = { "bindfs", "-f", bsrc, NULL, NULL };

	b->fs[FS_TMPFS] = (struct fsut){ "tmpfs", xasprintf("%s/tmpfs", b->root), 0 };
	b->fs[FS_BINDFS] = (struct fsut){ "bindfs", xasprintf("%s/bindfs", b->root), 0 };
	b->fs[FS_NADBFS] = (struct fsut){ "nadbfs", xasprintf("%s/nadbfs", b->root), 0 };
	env_mount_tmpfs(b->fs[FS_TMPFS].dir);
	env_mount_tmpfs(bsrc);
	env_mount_tmpfs(data);
	bargv[3] = b->fs[FS_BINDFS].dir;
	b->fs[FS_BINDFS].pid = env_spawn(bargv, blog, b->fs[FS_BINDFS].dir);
	if (env_wait_mounted(b->fs[FS_BINDFS].dir, b->fs[FS_BINDFS].pid, blog, 30))
		die("bindfs did not mount");
	b->fs[FS_NADBFS].pid = nadbfs_start(b, ndata, b->fs[FS_NADBFS].dir, NULL, nlog, false);
	if (b->fs[FS_NADBFS].pid < 0)
		die("nadbfs did not mount");
}

static void teardown_fs(struct bench *b)
{
	char *nlog = xasprintf("%s/nadbfs-main.log", b->root);

	if (nadbfs_stop(b->fs[FS_NADBFS].dir, b->fs[FS_NADBFS].pid, nlog))
		warnx_("the main nadbfs mount did not exit cleanly");
	if (env_unmount_fuse(b->fs[FS_BINDFS].dir, b->fs[FS_BINDFS].pid, 30))
		warnx_("bindfs did not exit cleanly");
	free(nlog);
}

int main(int argc, char **argv)
{
	struct bench b = { .repeat = 1 };
	double t0 = now_s();

	setvbuf(stdout, NULL, _IOLBF, 0);
	parse_args(&b, argc, argv);
	set_sizes(&b);
	if (geteuid() != 0)
		die("needs root: it mounts tmpfs file systems");
	if (!in_path("fusermount3"))
		die("fusermount3 not found: apt-get install fuse3");
	if (!in_path("bindfs"))
		die("bindfs not found: apt-get install bindfs (see bench/deps)");
	env_init(&b);
	fprintf(stderr, "nadbfs-bench: working in %s with %s\n", b.root, b.nadbfs_bin);
	setup_fs(&b);
	for (int i = 0; i < b.repeat; i++) {
		if (b.repeat > 1)
			fprintf(stderr, "pass %d of %d\n", i + 1, b.repeat);
		bench_small(&b);
		bench_ls(&b);
		bench_seq(&b);
		bench_mixed(&b);
	}
	teardown_fs(&b);
	for (int i = 0; i < b.repeat; i++)
		bench_flush(&b);
	bench_store(&b);
	print_table(&b);
	printf("total run time %.0f s\n", now_s() - t0);
	env_cleanup();
	return 0;
}
