/*
 * nadbctl: a thin client of a mount's control files. Commands go through
 * .nadb/ctl (one session per run); stats reads .nadb/stats; query lists
 * tags/EXPR and reads each entry's link; tx is in nadbctl_tx.c.
 *
 * Exit status: 0 on success, 1 with a message on stderr on any failure;
 * with --json, a failure also prints one object on stdout (fail()).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "mount/nadbctl.h"
#include "nadbfs-config.h"

static const char usage[] =
	"usage: nadbctl [-m MOUNTPOINT] COMMAND\n"
	"\n"
	"commands:\n"
	"  stats [--json]   the mount's figures (buffer, flushes, TTL, ...)\n"
	"  flush [--json]   make every buffered write durable now\n"
	"  sweep [--json]   expire every key past its deadline now\n"
	"  reload [--json]  re-read the configuration (as SIGHUP does)\n"
	"  tx begin|commit|abort NAME, tx list\n"
	"                   transactions (also: mkdir/rmdir .nadb/tx/NAME)\n"
	"  tx apply FILE    run a JSON-lines batch (- for stdin) as one transaction\n"
	"  query EXPR [--page N] [--page-size N] [--json]\n"
	"                   the keys a tag or query names (tags/EXPR: a+b AND, a,b OR,\n"
	"                   -a NOT), sorted, one page (default 1, of 100 keys)\n"
	"  backup create [--incremental-from ID] [ID]\n"
	"                   a consistent snapshot into backup_dir (default id: the UTC\n"
	"                   time); with --incremental-from only the changes since ID\n"
	"  backup list [--json]\n"
	"  backup verify ID recompute every checksum of ID and the backups it needs\n"
	"  backup restore ID [--clear]\n"
	"                   restore ID (its chain, oldest first); --clear first removes\n"
	"                   every key and directory the backup does not have\n"
	"  backup prune --keep N\n"
	"                   keep the N newest backups and the ones they need\n"
	"\n"
	"-m MOUNTPOINT      the nadbfs mount (default: the one containing the current\n"
	"                   directory)\n"
	"--help, --version\n";

/* Under --json: the command a failure is reported for ("flush", "backup
 * list"; NULL while it is not known yet). */
static bool json_mode;
static const char *json_command;

/*
 * A JSON string of s: jansson refuses text that is not UTF-8 (a reply or a
 * key may hold any byte), so each byte of an invalid sequence becomes
 * U+FFFD instead of losing the whole object. NULL only without memory.
 */
static json_t *json_text(const char *s)
{
	size_t len = strlen(s), o = 0;
	json_t *v = json_stringn(s, len);
	char *buf;

	if (v || !(buf = malloc(3 * len + 1)))
		return v;
	for (size_t i = 0; i < len;) {
		unsigned char c = (unsigned char)s[i];
		size_t n = c < 0x80 ? 1 : (c & 0xe0) == 0xc0 ? 2 : (c & 0xf0) == 0xe0 ? 3 :
					  (c & 0xf8) == 0xf0 ? 4 : 0;
		json_t *one = n && i + n <= len ? json_stringn(s + i, n) : NULL;

		if (one) {
			memcpy(buf + o, s + i, n);
			o += n;
			i += n;
			json_decref(one);
		} else {
			memcpy(buf + o, "\xef\xbf\xbd", 3);
			o += 3;
			i++;
		}
	}
	v = json_stringn(buf, o);
	free(buf);
	return v;
}

/* Prints one compact JSON value and a newline on stdout; 0 or -1. */
static int print_json(json_t *o)
{
	int ret = o && !json_dumpf(o, stdout, JSON_COMPACT) && putchar('\n') != EOF ? 0 : -1;

	json_decref(o);
	return fflush(stdout) || ret ? -1 : 0;
}

/*
 * Reports a failure: "nadbctl: MSG" on stderr, and under --json also
 * {"command":..., "ok":false, "error":MSG} on stdout, the shape of an error
 * reply, so that every outcome of a --json command is one object.
 */
static void __attribute__((format(printf, 1, 2))) fail(const char *fmt, ...)
{
	char msg[2048];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	fprintf(stderr, "nadbctl: %s\n", msg);
	if (json_mode)
		print_json(json_pack("{s:s?, s:b, s:o}", "command", json_command, "ok", 0, "error",
				     json_text(msg)));
}

/* Reads fd to its end into a NUL-terminated buffer. */
static char *read_all(int fd)
{
	size_t len = 0, cap = 4096;
	char *buf = malloc(cap);
	ssize_t n;

	while (buf && (n = read(fd, buf + len, cap - len - 1)) > 0) {
		len += (size_t)n;
		if (cap - len < 2) {
			char *b = realloc(buf, cap *= 2);

			if (!b) {
				free(buf);
				return NULL;
			}
			buf = b;
		}
	}
	if (buf && n < 0) {
		free(buf);
		return NULL;
	}
	if (buf)
		buf[len] = '\0';
	return buf;
}

/* The mount containing dir: the nearest ancestor with .nadb/ctl. */
static int find_mount(char *out, size_t len)
{
	char path[PATH_MAX], probe[PATH_MAX + 16];
	struct stat st;

	if (!getcwd(path, sizeof(path)))
		return -errno;
	for (;;) {
		snprintf(probe, sizeof(probe), "%s/.nadb/ctl", path);
		if (stat(probe, &st) == 0) {
			snprintf(out, len, "%s", path);
			return 0;
		}
		char *slash = strrchr(path, '/');

		if (!slash || slash == path)
			return -ENOENT;
		*slash = '\0';
	}
}

static int open_control(const char *mnt, const char *file, int flags)
{
	char path[PATH_MAX + 16];
	int fd;

	snprintf(path, sizeof(path), "%s/.nadb/%s", mnt, file);
	fd = open(path, flags | O_CLOEXEC);
	if (fd < 0)
		fail("%s is not a nadbfs mount (cannot open %s: %s)", mnt,
			path, strerror(errno));
	return fd;
}

/* Progress of a long backup command, on a terminal only: the daemon's
 * figures in .nadb/stats ("backup"), polled while the command runs. */
struct progress {
	const char *mnt;
	atomic_bool stop;
	pthread_t thread;
};

/* The one running, stopped (its line cleared) before a reply is printed. */
static struct progress *progress_running;

static double mono_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void *progress_main(void *arg)
{
	struct progress *p = arg;
	double start = mono_s();
	char path[PATH_MAX + 16];
	bool shown = false;

	snprintf(path, sizeof(path), "%s/.nadb/stats", p->mnt);
	while (!atomic_load(&p->stop)) {
		struct timespec nap = { 0, 50 * 1000000 };
		json_t *o, *b;
		char *text;
		int fd;

		for (int i = 0; i < 5 && !atomic_load(&p->stop); i++)
			nanosleep(&nap, NULL);
		fd = open(path, O_RDONLY | O_CLOEXEC);
		if (fd < 0)
			continue;
		text = read_all(fd);
		close(fd);
		o = text ? json_loads(text, 0, NULL) : NULL;
		free(text);
		b = json_object_get(o, "backup");
		if (b && json_is_string(json_object_get(b, "running")) && !atomic_load(&p->stop)) {
			double keys = (double)json_integer_value(json_object_get(b, "keys"));
			double ktot = (double)json_integer_value(json_object_get(b, "keys_total"));
			double bytes = (double)json_integer_value(json_object_get(b, "bytes"));
			double btot = (double)json_integer_value(json_object_get(b, "bytes_total"));
			double el = mono_s() - start, rate = el > 0 ? bytes / el : 0;

			fprintf(stderr, "\r\033[K%s: %.0f", json_string_value(json_object_get(
								      b, "running")), keys);
			if (ktot > 0)
				fprintf(stderr, "/%.0f", ktot);
			fprintf(stderr, " keys, %.1f/%.1f MiB, %.1f MiB/s", bytes / 1048576,
				btot / 1048576, rate / 1048576);
			if (rate > 0 && btot > bytes)
				fprintf(stderr, ", %.0f s left", (btot - bytes) / rate);
			shown = true;
		}
		json_decref(o);
	}
	if (shown)
		fputs("\r\033[K", stderr);
	return NULL;
}

static void progress_stop(void)
{
	if (!progress_running)
		return;
	atomic_store(&progress_running->stop, true);
	pthread_join(progress_running->thread, NULL);
	progress_running = NULL;
}

static bool reply_ok(const char *reply)
{
	return strncmp(reply, "ok", 2) == 0 &&
	       (reply[2] == '\n' || reply[2] == ' ' || !reply[2]);
}

/* Sends cmd in the ctl session fd and reads its whole reply (malloc'd): 0,
 * or 1 after printing why. */
static int ctl_send(int fd, const char *cmd, char **reply)
{
	size_t len = strlen(cmd);
	char *line = malloc(len + 2);
	int status = 1;

	if (!line) {
		fail("out of memory");
		return 1;
	}
	memcpy(line, cmd, len);
	line[len] = '\n';
	if (write(fd, line, len + 1) != (ssize_t)(len + 1)) {
		fail("cannot send '%s': %s", cmd, strerror(errno));
		goto out;
	}
	*reply = read_all(fd);
	progress_stop();
	if (!*reply) {
		fail("cannot read the reply to '%s': %s", cmd, strerror(errno));
		goto out;
	}
	status = 0;
out:
	free(line);
	return status;
}

/* cmd in a session of its own. */
static int ctl_roundtrip(const char *mnt, const char *cmd, char **reply)
{
	int fd = open_control(mnt, "ctl", O_RDWR);
	int status;

	if (fd < 0)
		return 1;
	status = ctl_send(fd, cmd, reply);
	close(fd);
	return status;
}

int ctl_session_open(const char *mnt)
{
	return open_control(mnt, "ctl", O_RDWR);
}

int ctl_session_command(int fd, const char *cmd, bool quiet)
{
	char *reply;
	int status = 1;

	if (ctl_send(fd, cmd, &reply))
		return 1;
	if (reply_ok(reply)) {
		if (!quiet)
			fputs(reply, stdout);
		status = 0;
	} else {
		fprintf(stderr, "nadbctl: %s", reply);
	}
	free(reply);
	return status;
}

/* Runs cmd in .nadb/ctl, in a session of its own; prints the reply and
 * returns the exit status. */
static int run_command_opt(const char *mnt, const char *cmd, bool quiet)
{
	int fd = open_control(mnt, "ctl", O_RDWR);
	int status;

	if (fd < 0)
		return 1;
	status = ctl_session_command(fd, cmd, quiet);
	close(fd);
	return status;
}

/* The reply's text after its "ok" and the blank or newline that follows. */
static const char *reply_text(const char *reply)
{
	return reply[2] == ' ' || reply[2] == '\n' ? reply + 3 : reply + 2;
}

/*
 * cmd with --json: {"command":..., "ok":true, "reply":...} on stdout, the
 * reply's text after "ok" without its newline; or, through fail(),
 * "ok":false with "error" (the text after "error: "), also on stderr for
 * whoever reads it there.
 */
static int run_command_json(const char *mnt, const char *cmd)
{
	char *reply, *end;
	int status = 1;

	if (ctl_roundtrip(mnt, cmd, &reply))
		return 1;
	end = reply + strlen(reply);
	if (end > reply && end[-1] == '\n')
		*--end = '\0';
	if (!reply_ok(reply))
		fail("%s", strncmp(reply, "error: ", 7) == 0 ? reply + 7 : reply);
	else if (print_json(json_pack("{s:s, s:b, s:o}", "command", cmd, "ok", 1, "reply",
				      json_text(reply_text(reply)))))
		fail("cannot print the reply to '%s': %s", cmd, strerror(errno));
	else
		status = 0;
	free(reply);
	return status;
}

/* A command whose "ok" reply carries a JSON document on its next lines
 * (backup list --json): that document, checked, or one failure object. */
static int run_command_json_doc(const char *mnt, const char *cmd)
{
	json_error_t jerr;
	char *reply;
	json_t *doc;
	int status = 1;

	if (ctl_roundtrip(mnt, cmd, &reply))
		return 1;
	if (!reply_ok(reply)) {
		size_t n = strlen(reply);

		if (n && reply[n - 1] == '\n')
			reply[n - 1] = '\0';
		fail("%s", strncmp(reply, "error: ", 7) == 0 ? reply + 7 : reply);
	} else if (!(doc = json_loads(strchr(reply, '\n') ? strchr(reply, '\n') + 1 : "", 0,
				      &jerr))) {
		fail("the reply to '%s' is not JSON: %s", cmd, jerr.text);
	} else if (print_json(doc)) {
		fail("cannot print the reply to '%s': %s", cmd, strerror(errno));
	} else {
		status = 0;
	}
	free(reply);
	return status;
}

int ctl_command(const char *mnt, const char *cmd, bool quiet)
{
	return run_command_opt(mnt, cmd, quiet);
}

static int run_command(const char *mnt, const char *cmd)
{
	return run_command_opt(mnt, cmd, false);
}

/* backup ...: the arguments checked enough for a clear message here, then
 * passed on as one ctl line. */
static int backup(const char *mnt, char **args, int n, int as_json)
{
	char line[1024] = "backup";
	const char *sub = n ? args[0] : "";

	if (!n || (strcmp(sub, "create") && strcmp(sub, "list") && strcmp(sub, "verify") &&
		   strcmp(sub, "restore") && strcmp(sub, "prune"))) {
		fail("backup needs one of create, list, verify, restore, "
				"prune");
		return 1;
	}
	if ((!strcmp(sub, "verify") || !strcmp(sub, "restore")) && n < 2) {
		fail("backup %s needs a backup id", sub);
		return 1;
	}
	for (int i = 0; i < n; i++) {
		if (!*args[i] || strpbrk(args[i], " \t\n\r")) {
			fail("bad argument '%s' (no spaces in backup ids)",
				args[i]);
			return 1;
		}
		if (strlen(line) + strlen(args[i]) + 2 > sizeof(line)) {
			fail("arguments too long");
			return 1;
		}
		strcat(line, " ");
		strcat(line, args[i]);
	}
	if (as_json && !strcmp(sub, "list")) {
		strcat(line, " --json");
		return run_command_json_doc(mnt, line);
	}
	if (as_json) {
		fail("--json is for backup list");
		return 1;
	}
	if (strcmp(sub, "list") && strcmp(sub, "prune") && isatty(STDERR_FILENO)) {
		struct progress p = { .mnt = mnt };
		int status;

		if (pthread_create(&p.thread, NULL, progress_main, &p) == 0)
			progress_running = &p;
		status = run_command(mnt, line);
		progress_stop();
		return status;
	}
	return run_command(mnt, line);
}

/* Prints a JSON object as "a.b: value" lines, for humans. */
static void print_flat(const char *prefix, json_t *o)
{
	const char *key;
	json_t *v;

	json_object_foreach(o, key, v) {
		char name[256];

		snprintf(name, sizeof(name), "%s%s%s", prefix, *prefix ? "." : "", key);
		if (json_is_object(v)) {
			print_flat(name, v);
		} else {
			char *text = json_dumps(v, JSON_ENCODE_ANY);

			printf("%s: %s\n", name, text ? text : "?");
			free(text);
		}
	}
}

static int stats(const char *mnt, int as_json)
{
	int fd = open_control(mnt, "stats", O_RDONLY);
	json_error_t jerr;
	char *text;
	json_t *o;

	if (fd < 0)
		return 1;
	text = read_all(fd);
	close(fd);
	if (!text) {
		fail("cannot read %s/.nadb/stats: %s", mnt, strerror(errno));
		return 1;
	}
	o = json_loads(text, 0, &jerr);
	if (!o) {
		fail("%s/.nadb/stats is not JSON: %s", mnt, jerr.text);
		free(text);
		return 1;
	}
	if (as_json)
		fputs(text, stdout);
	else
		print_flat("", o);
	json_decref(o);
	free(text);
	return 0;
}

static int str_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The keys of directory tags/EXPR, read through their links; sorted. */
static int query_keys(const char *mnt, const char *expr, char ***out, size_t *n)
{
	char dir[PATH_MAX], target[8192];
	size_t cap = 0, k = 0;
	char **keys = NULL;
	struct dirent *de;
	DIR *d;

	if (!*expr || strchr(expr, '/')) {
		fail("'%s' is not a tag or query expression", expr);
		return 1;
	}
	/* A directory that is no mount has no tags/ either: say which. */
	snprintf(dir, sizeof(dir), "%s/.nadb", mnt);
	if (access(dir, F_OK)) {
		fail("%s is not a nadbfs mount (cannot open %s: %s)", mnt, dir, strerror(errno));
		return 1;
	}
	snprintf(dir, sizeof(dir), "%s/tags/%s", mnt, expr);
	d = opendir(dir);
	if (!d) {
		if (errno == ENOENT)
			fail("no tag or query '%s' (an unknown tag, or a "
					"malformed expression)", expr);
		else
			fail("cannot list %s: %s", dir, strerror(errno));
		return 1;
	}
	while ((de = readdir(d))) {
		ssize_t len;

		if (de->d_name[0] == '.')
			continue;
		len = readlinkat(dirfd(d), de->d_name, target, sizeof(target) - 1);
		/* Gone since the listing (deleted, untagged, expired): skip it. */
		if (len < 0 || len < 6)
			continue;
		target[len] = '\0';
		if (k == cap) {
			char **nk = realloc(keys, (cap = cap ? 2 * cap : 64) * sizeof(*keys));

			if (!nk)
				goto out_nomem;
			keys = nk;
		}
		/* "../../PATH": the key's path from the mount's root. */
		if (!(keys[k] = strdup(target + 6)))
			goto out_nomem;
		k++;
	}
	closedir(d);
	if (k)
		qsort(keys, k, sizeof(*keys), str_cmp);
	*out = keys;
	*n = k;
	return 0;

out_nomem:
	closedir(d);
	while (k--)
		free(keys[k]);
	free(keys);
	fail("out of memory");
	return 1;
}

static int query(const char *mnt, const char *expr, unsigned long page, unsigned long size,
		 int as_json)
{
	char **keys;
	size_t n, first, last;
	json_t *o, *arr;
	int status = 0;

	if (query_keys(mnt, expr, &keys, &n))
		return 1;
	first = (page - 1) * size < n ? (page - 1) * size : n;
	last = n - first < size ? n : first + size;
	if (as_json) {
		arr = json_array();
		for (size_t i = first; arr && i < last; i++)
			if (json_array_append_new(arr, json_text(keys[i]))) {
				json_decref(arr);
				arr = NULL;
			}
		o = arr ? json_pack("{s:o, s:I, s:I, s:I, s:I, s:o}", "query", json_text(expr),
				    "total", (json_int_t)n, "page", (json_int_t)page, "page_size",
				    (json_int_t)size, "pages", (json_int_t)((n + size - 1) / size),
				    "keys", arr) :
			    NULL;
		if (!o || print_json(o)) {
			fail(o ? "cannot print the keys" : "out of memory");
			status = 1;
		}
	} else {
		for (size_t i = first; i < last; i++)
			puts(keys[i]);
	}
	for (size_t i = 0; i < n; i++)
		free(keys[i]);
	free(keys);
	return status;
}

/* A positive decimal count for an option; 0 and an error message otherwise. */
static unsigned long count_arg(const char *opt, const char *v)
{
	char *end;
	unsigned long x;

	errno = 0;
	x = v && *v >= '0' && *v <= '9' ? strtoul(v, &end, 10) : 0;
	if (!v || errno || *end || x == 0 || x > 1000000000ul) {
		fail("%s takes a positive number, not '%s'", opt,
			v ? v : "");
		return 0;
	}
	return x;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ "json", no_argument, NULL, 'j' },
		{ NULL, 0, NULL, 0 },
	};
	char mnt[PATH_MAX], what[64];
	const char *cmd, *arg = NULL;
	unsigned long page = 1, page_size = 100;
	int c, as_json = 0;

	mnt[0] = '\0';
	/* --json anywhere: a failure found before it is read (a bad option,
	 * a missing mount) is reported as an object too. */
	for (int i = 1; i < argc; i++)
		json_mode = json_mode || !strcmp(argv[i], "--json");
	opterr = 0;
	while ((c = getopt_long(argc, argv, "+m:h", opts, NULL)) != -1) {
		switch (c) {
		case 'm':
			snprintf(mnt, sizeof(mnt), "%s", optarg);
			break;
		case 'h':
			fputs(usage, stdout);
			return 0;
		case 'V':
			printf("nadbctl %s\n", NADBFS_VERSION);
			return 0;
		case 'j':
			as_json = 1;
			break;
		default:
			if (optopt == 'm')
				fail("-m needs a mountpoint");
			else if (optopt)
				fail("unknown option '-%c'", optopt);
			else
				fail("unknown option '%s'", argv[optind - 1]);
			fputs(usage, stderr);
			return 1;
		}
	}
	if (optind >= argc) {
		fail("no command given");
		fputs(usage, stderr);
		return 1;
	}
	cmd = argv[optind++];
	json_command = cmd;
	for (int i = optind; !strcmp(cmd, "backup") && i < argc; i++) {
		if (strcmp(argv[i], "--json")) {
			snprintf(what, sizeof(what), "backup %s", argv[i]);
			json_command = what;
			break;
		}
	}
	if (!strcmp(cmd, "tx")) {
		/* tx has no --json: text only. */
		json_mode = false;
		if (!mnt[0] && find_mount(mnt, sizeof(mnt))) {
			fail("not inside a nadbfs mount; give one with -m");
			return 1;
		}
		return ctl_tx(mnt, argc - optind, argv + optind);
	}
	if (!strcmp(cmd, "backup")) {
		/* Its own arguments, checked there; --json anywhere. */
		char **rest = argv + optind;
		int n = 0;

		for (int i = optind; i < argc; i++) {
			if (!strcmp(argv[i], "--json"))
				as_json = 1;
			else
				rest[n++] = argv[i];
		}
		if (!mnt[0] && find_mount(mnt, sizeof(mnt))) {
			fail("not inside a nadbfs mount; give one with -m");
			return 1;
		}
		return backup(mnt, rest, n, as_json);
	}
	for (; optind < argc; optind++) {
		const char *a = argv[optind];

		if (!strcmp(a, "--json")) {
			as_json = 1;
		} else if (!strcmp(cmd, "query") && (!strcmp(a, "--page") ||
						     !strcmp(a, "--page-size"))) {
			unsigned long v = count_arg(a, argv[optind + 1]);

			if (!v)
				return 1;
			*(!strcmp(a, "--page") ? &page : &page_size) = v;
			optind++;
		} else if (!strcmp(cmd, "query") && !arg) {
			arg = a;
		} else {
			fail("unexpected argument '%s'", a);
			return 1;
		}
	}
	if (!strcmp(cmd, "query") && !arg) {
		fail("query needs an expression (a tag, a+b, a,b, a+-b)");
		return 1;
	}
	if (!mnt[0] && find_mount(mnt, sizeof(mnt))) {
		fail("not inside a nadbfs mount; give one with -m");
		return 1;
	}
	if (!strcmp(cmd, "stats"))
		return stats(mnt, as_json);
	if (!strcmp(cmd, "query"))
		return query(mnt, arg, page, page_size, as_json);
	if (!strcmp(cmd, "flush") || !strcmp(cmd, "sweep") || !strcmp(cmd, "reload"))
		return as_json ? run_command_json(mnt, cmd) : ctl_command(mnt, cmd, false);
	fail("unknown command '%s'", cmd);
	fputs(usage, stderr);
	return 1;
}
