/*
 * nadbctl: a thin client of a mount's control files. Commands go through
 * .nadb/ctl (one session per run); stats reads .nadb/stats.
 *
 * Exit status: 0 on success, 1 with a message on stderr on any failure.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "nadbfs-config.h"

static const char usage[] =
	"usage: nadbctl [-m MOUNTPOINT] COMMAND\n"
	"\n"
	"commands:\n"
	"  stats [--json]   the mount's figures (buffer, flushes, TTL, ...)\n"
	"  flush            make every buffered write durable now\n"
	"  sweep            expire every key past its deadline now\n"
	"  reload           re-read the configuration (as SIGHUP does)\n"
	"\n"
	"-m MOUNTPOINT      the nadbfs mount (default: the one containing the current\n"
	"                   directory)\n"
	"--help, --version\n";

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
		fprintf(stderr, "nadbctl: %s is not a nadbfs mount (cannot open %s: %s)\n", mnt,
			path, strerror(errno));
	return fd;
}

static int run_command(const char *mnt, const char *cmd)
{
	int fd = open_control(mnt, "ctl", O_RDWR);
	size_t len = strlen(cmd);
	char *line, *reply;
	int status = 1;

	if (fd < 0)
		return 1;
	line = malloc(len + 2);
	if (!line) {
		close(fd);
		return 1;
	}
	memcpy(line, cmd, len);
	line[len] = '\n';
	if (write(fd, line, len + 1) != (ssize_t)(len + 1)) {
		fprintf(stderr, "nadbctl: cannot send '%s': %s\n", cmd, strerror(errno));
		goto out;
	}
	reply = read_all(fd);
	if (!reply) {
		fprintf(stderr, "nadbctl: cannot read the reply to '%s': %s\n", cmd,
			strerror(errno));
		goto out;
	}
	if (strncmp(reply, "ok", 2) == 0 && (reply[2] == '\n' || reply[2] == ' ' || !reply[2])) {
		fputs(reply, stdout);
		status = 0;
	} else {
		fprintf(stderr, "nadbctl: %s", reply);
	}
	free(reply);
out:
	free(line);
	close(fd);
	return status;
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
		fprintf(stderr, "nadbctl: cannot read %s/.nadb/stats: %s\n", mnt, strerror(errno));
		return 1;
	}
	o = json_loads(text, 0, &jerr);
	if (!o) {
		fprintf(stderr, "nadbctl: %s/.nadb/stats is not JSON: %s\n", mnt, jerr.text);
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

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ "json", no_argument, NULL, 'j' },
		{ NULL, 0, NULL, 0 },
	};
	char mnt[PATH_MAX];
	const char *cmd;
	int c, as_json = 0;

	mnt[0] = '\0';
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
			fputs(usage, stderr);
			return 1;
		}
	}
	if (optind >= argc) {
		fprintf(stderr, "nadbctl: no command given\n%s", usage);
		return 1;
	}
	cmd = argv[optind++];
	for (; optind < argc; optind++) {
		if (!strcmp(argv[optind], "--json")) {
			as_json = 1;
			continue;
		}
		fprintf(stderr, "nadbctl: unexpected argument '%s'\n", argv[optind]);
		return 1;
	}
	if (!mnt[0] && find_mount(mnt, sizeof(mnt))) {
		fprintf(stderr, "nadbctl: not inside a nadbfs mount; give one with -m\n");
		return 1;
	}
	if (!strcmp(cmd, "stats"))
		return stats(mnt, as_json);
	if (!strcmp(cmd, "flush") || !strcmp(cmd, "sweep") || !strcmp(cmd, "reload"))
		return run_command(mnt, cmd);
	fprintf(stderr, "nadbctl: unknown command '%s'\n%s", cmd, usage);
	return 1;
}
