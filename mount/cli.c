/*
 * The nadbfs command line: `nadbfs [-f] [-d] [-o OPTS] SOURCE MOUNTPOINT`,
 * also in the order mount.fuse3 uses (`nadbfs SOURCE MOUNTPOINT -o OPTS`).
 *
 * Parsed by hand rather than with fuse_opt_parse: the -o list mixes
 * configuration keys, FUSE mount options and fstab-only words, and each
 * kind needs its own treatment and its own error message.
 */
#define FUSE_USE_VERSION 314

#include <errno.h>
#include <fuse_lowlevel.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "conf/conf.h"
#include "mount/nadbfs.h"
#include "nadbfs-config.h"

static const char usage_text[] =
	"usage: nadbfs [-f] [-d] [-o OPT[,OPT...]] SOURCE MOUNTPOINT\n"
	"       nadbfs SOURCE MOUNTPOINT -o OPT[,OPT...]    (the form fstab and mount.fuse3 use)\n"
	"       nadbfs --help | --version\n";

static const char help_text[] =
	"\n"
	"Mounts a nadb key-value store: every key is a file below MOUNTPOINT.\n"
	"\n"
	"SOURCE       a directory (the filesystem backend; created if missing), or\n"
	"             redis://[:PASSWORD@]HOST[:PORT][/DB] or redis+unix:///PATH[?db=N]\n"
	"MOUNTPOINT   an existing directory\n"
	"\n"
	"  -f              stay in the foreground (logs go to stderr)\n"
	"  -d              like -f, with debug logs and a trace of every FUSE request\n"
	"  -o OPT[,OPT]    options, below; may be repeated\n"
	"  -h, --help      print this help\n"
	"  -V, --version   print the versions of nadbfs and libfuse\n"
	"\n"
	"Options:\n"
	"  config=FILE     read an INI configuration file first (see nadbfs(8) and\n"
	"                  nadbfs.conf.example); SOURCE and the other -o options win over it\n"
	"  NAME=VALUE      any configuration key, named KEY or SECTION_KEY:\n"
	"    [store]  backend data_dir db namespace buffer_size flush_interval\n"
	"             backend_timeout max_value_size compression compression_min_size\n"
	"             default_ttl ttl_sweep query_cache_size tx_max_bytes backup_dir\n"
	"             close_to_open\n"
	"    [redis]  redis_host redis_port redis_socket redis_database redis_password\n"
	"             redis_timeout redis_pool_size redis_key_prefix redis_spill_dir\n"
	"    [mount]  allow_other attr_timeout entry_timeout max_threads ctl_mode\n"
	"             coherence_delay\n"
	"    [log]    log_level log_format log_file\n"
	"             e.g. -o flush_interval=200ms,log_level=debug\n"
	"  debug           same as -d\n"
	"  allow_other     let other users use the mount (needs user_allow_other in\n"
	"                  /etc/fuse.conf when not mounted by root)\n"
	"  ro, rw          read-only or read-write mount (rw is the default)\n"
	"  allow_root, auto_unmount, noatime, atime, sync, async, dirsync, exec,\n"
	"  noexec, nodev, nosuid, max_read=N, fsname=NAME\n"
	"                  FUSE mount options, passed to the kernel\n"
	"  _netdev, nofail, auto, noauto, defaults, user, users, nouser, dev, suid,\n"
	"  relatime, strictatime, nodiratime, x-*, comment=*\n"
	"                  accepted for fstab and ignored\n"
	"\n"
	"Signals: SIGTERM, SIGINT or an unmount flush every buffered write, then the\n"
	"daemon exits; SIGHUP asks for a configuration reload and never exits.\n";

/* fstab words that mean something to mount(8) or systemd, not to us. */
static const char *const ignored_opts[] = {
	"_netdev", "nofail", "auto", "noauto", "defaults", "user", "users", "nouser",
	"dev", "suid", "relatime", "norelatime", "strictatime", "nostrictatime",
	"nodiratime", "diratime", "lazytime", "nolazytime",
};

/* Flags libfuse passes to the kernel as they are. */
static const char *const fuse_flag_opts[] = {
	"allow_root", "auto_unmount", "noatime", "atime", "sync", "async", "dirsync",
	"exec", "noexec", "nodev", "nosuid", "default_permissions",
};

static bool in_list(const char *name, const char *const *list, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(name, list[i]) == 0)
			return true;
	return false;
}

#define IN_LIST(name, list) in_list((name), (list), sizeof(list) / sizeof((list)[0]))

static int add_opt(struct nadbfs_cli *cli, const char *s, size_t len)
{
	char **opts = realloc(cli->opts, (cli->nopts + 1) * sizeof(*opts));
	size_t j = 0;
	char *d;

	if (!opts)
		return -ENOMEM;
	cli->opts = opts;
	d = malloc(len + 1);
	if (!d)
		return -ENOMEM;
	/* "\," keeps a comma inside an item, as libfuse's own -o parser does. */
	for (size_t i = 0; i < len; i++) {
		if (s[i] == '\\' && i + 1 < len)
			i++;
		d[j++] = s[i];
	}
	d[j] = '\0';
	cli->opts[cli->nopts++] = d;
	return 0;
}

/* Splits one -o argument on unescaped commas; empty items are dropped. */
static int split_opts(struct nadbfs_cli *cli, const char *arg)
{
	const char *start = arg, *p = arg;
	int ret;

	for (;; p++) {
		if (*p == '\\' && p[1]) {
			p++;
			continue;
		}
		if (*p != ',' && *p != '\0')
			continue;
		if (p > start) {
			ret = add_opt(cli, start, (size_t)(p - start));
			if (ret)
				return ret;
		}
		if (*p == '\0')
			return 0;
		start = p + 1;
	}
}

static void print_version(void)
{
	printf("nadbfs %s\nlibfuse %s\n", NADBFS_VERSION, fuse_pkgversion());
}

int nadbfs_cli_parse(int argc, char **argv, struct nadbfs_cli *cli)
{
	const char *pos[2];
	size_t npos = 0;
	bool only_pos = false;

	memset(cli, 0, sizeof(*cli));
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];

		if (only_pos || a[0] != '-' || a[1] == '\0') {
			if (npos == 2) {
				fprintf(stderr, "nadbfs: unexpected argument '%s'\n%s", a, usage_text);
				return NADBFS_CLI_ERROR;
			}
			pos[npos++] = a;
		} else if (strcmp(a, "--") == 0) {
			only_pos = true;
		} else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
			printf("%s%s", usage_text, help_text);
			return NADBFS_CLI_DONE;
		} else if (strcmp(a, "-V") == 0 || strcmp(a, "--version") == 0) {
			print_version();
			return NADBFS_CLI_DONE;
		} else if (strncmp(a, "-o", 2) == 0) {
			const char *list = a[2] ? a + 2 : argv[++i];

			if (!list) {
				fprintf(stderr, "nadbfs: option -o needs an argument\n%s", usage_text);
				return NADBFS_CLI_ERROR;
			}
			if (split_opts(cli, list)) {
				fprintf(stderr, "nadbfs: %s\n", strerror(ENOMEM));
				return NADBFS_CLI_ERROR;
			}
		} else if (a[1] != '-' && strspn(a + 1, "fd") == strlen(a + 1)) {
			/* -f, -d and their combinations (-fd). */
			if (strchr(a, 'f'))
				cli->foreground = true;
			if (strchr(a, 'd'))
				cli->debug = true;
		} else {
			fprintf(stderr, "nadbfs: unknown option '%s'\n%s", a, usage_text);
			return NADBFS_CLI_ERROR;
		}
	}
	if (npos < 2) {
		fprintf(stderr, "nadbfs: missing %s\n%s", npos ? "MOUNTPOINT" : "SOURCE and MOUNTPOINT",
			usage_text);
		return NADBFS_CLI_ERROR;
	}
	cli->source = pos[0];
	cli->mountpoint = pos[1];
	/* -o debug is libfuse's spelling of -d: it must also mean the
	 * foreground, so it is settled here rather than with the other -o
	 * items, which only reach the configuration. */
	for (size_t i = 0; i < cli->nopts; i++)
		if (strcmp(cli->opts[i], "debug") == 0)
			cli->debug = true;
	if (cli->debug)
		cli->foreground = true;
	return 0;
}

void nadbfs_cli_free(struct nadbfs_cli *cli)
{
	if (!cli)
		return;
	for (size_t i = 0; i < cli->nopts; i++)
		free(cli->opts[i]);
	free(cli->opts);
	cli->opts = NULL;
	cli->nopts = 0;
	free(cli->mountpoint_abs);
	cli->mountpoint_abs = NULL;
	free(cli->source_abs);
	cli->source_abs = NULL;
}

int nadbfs_cli_make_absolute(struct nadbfs_cli *cli)
{
	char *abs = realpath(cli->mountpoint, NULL);

	if (!abs)
		return -errno;
	free(cli->mountpoint_abs);
	cli->mountpoint_abs = abs;
	cli->mountpoint = abs;
	/* A data directory (not a URL) may not exist yet: joined, not
	 * resolved. */
	if (cli->source && cli->source[0] != '/' && !strstr(cli->source, "://")) {
		char *src;
		int ret = conf_absolute_path(cli->source, &src);

		if (ret)
			return ret;
		free(cli->source_abs);
		cli->source_abs = src;
		cli->source = src;
	}
	for (size_t i = 0; i < cli->nopts; i++) {
		const char *eq = strchr(cli->opts[i], '=');
		char *name, *file = NULL, *opt;
		int ret = 0;

		if (!eq || eq[1] == '/' || !eq[1])
			continue;
		name = strndup(cli->opts[i], (size_t)(eq - cli->opts[i]));
		if (!name)
			return -ENOMEM;
		/* config= names an existing file; the other paths (log_file,
		 * backup_dir, ...) may not exist yet. */
		if (!strcmp(name, "config"))
			file = realpath(eq + 1, NULL);
		else if (conf_option_is_path(name))
			ret = conf_absolute_path(eq + 1, &file);
		if (ret || !file) {
			free(name);
			if (ret)
				return ret;
			continue;
		}
		ret = asprintf(&opt, "%s=%s", name, file);
		free(name);
		free(file);
		if (ret < 0)
			return -ENOMEM;
		free(cli->opts[i]);
		cli->opts[i] = opt;
	}
	return 0;
}

/* Appends name to a comma-separated list, escaping commas and backslashes. */
static int list_add(char **list, const char *name)
{
	size_t old = *list ? strlen(*list) : 0, n = 0;
	char *s;

	for (const char *p = name; *p; p++)
		n += (*p == ',' || *p == '\\') ? 2 : 1;
	s = realloc(*list, old + 1 + n + 1);
	if (!s)
		return -ENOMEM;
	*list = s;
	s += old;
	if (old)
		*s++ = ',';
	for (const char *p = name; *p; p++) {
		if (*p == ',' || *p == '\\')
			*s++ = '\\';
		*s++ = *p;
	}
	*s = '\0';
	return 0;
}

static bool is_ignored(const char *name)
{
	/* x-systemd.*, x-gvfs-* and the like are userspace-only by convention. */
	if (strncmp(name, "x-", 2) == 0 || strncmp(name, "comment=", 8) == 0)
		return true;
	return IN_LIST(name, ignored_opts);
}

/* One -o item other than config=: 0 or NADBFS_CLI_ERROR after printing why. */
static int apply_one(const char *opt, struct conf *c, struct nadbfs_fuse_opts *fo, char *msg,
		     size_t msglen)
{
	char name[128], err[512];
	const char *eq = strchr(opt, '='), *value = eq ? eq + 1 : NULL;
	size_t nlen = eq ? (size_t)(eq - opt) : strlen(opt);
	int ret;

	/* debug was taken by nadbfs_cli_parse(). */
	if (is_ignored(opt) || strcmp(opt, "debug") == 0)
		return 0;
	if (strcmp(opt, "ro") == 0) {
		fo->read_only = true;
		return 0;
	}
	if (strcmp(opt, "rw") == 0) {
		fo->read_only = false;
		return 0;
	}
	if (IN_LIST(opt, fuse_flag_opts) || strncmp(opt, "max_read=", 9) == 0) {
		if (list_add(&fo->extra, opt))
			goto out_nomem;
		return 0;
	}
	if (strncmp(opt, "fsname=", 7) == 0) {
		free(fo->fsname);
		fo->fsname = strdup(opt + 7);
		if (!fo->fsname)
			goto out_nomem;
		return 0;
	}
	if (nlen >= sizeof(name) || nlen == 0) {
		snprintf(msg, msglen, "unknown option '%s'", opt);
		return NADBFS_CLI_ERROR;
	}
	memcpy(name, opt, nlen);
	name[nlen] = '\0';
	ret = conf_set_option(c, name, value, err, sizeof(err));
	if (ret == -ENOENT) {
		snprintf(msg, msglen, "unknown option '%s'", name);
		return NADBFS_CLI_ERROR;
	}
	if (ret) {
		snprintf(msg, msglen, "%s", err);
		return NADBFS_CLI_ERROR;
	}
	return 0;

out_nomem:
	snprintf(msg, msglen, "%s", strerror(ENOMEM));
	return NADBFS_CLI_ERROR;
}

int nadbfs_cli_apply(const struct nadbfs_cli *cli, struct conf *c, struct nadbfs_fuse_opts *fo,
		     char *msg, size_t msglen)
{
	char err[512];
	int ret;

	memset(fo, 0, sizeof(*fo));
	/* The file is the bottom layer wherever config= stands in the list. */
	for (size_t i = 0; i < cli->nopts; i++) {
		const char *opt = cli->opts[i];

		if (strncmp(opt, "config", 6) != 0 || (opt[6] != '=' && opt[6] != '\0'))
			continue;
		if (opt[6] == '\0' || opt[7] == '\0') {
			snprintf(msg, msglen, "option config needs a file name (config=FILE)");
			return NADBFS_CLI_ERROR;
		}
		ret = conf_load_file(c, opt + 7, err, sizeof(err));
		if (ret) {
			snprintf(msg, msglen, "%s", err);
			return NADBFS_CLI_ERROR;
		}
	}
	ret = conf_set_source(c, cli->source, err, sizeof(err));
	if (ret) {
		snprintf(msg, msglen, "%s", err);
		return NADBFS_CLI_ERROR;
	}
	for (size_t i = 0; i < cli->nopts; i++) {
		const char *opt = cli->opts[i];

		if (strncmp(opt, "config=", 7) == 0)
			continue;
		ret = apply_one(opt, c, fo, msg, msglen);
		if (ret)
			return ret;
	}
	return 0;
}

void nadbfs_fuse_opts_free(struct nadbfs_fuse_opts *fo)
{
	if (!fo)
		return;
	free(fo->extra);
	free(fo->fsname);
	memset(fo, 0, sizeof(*fo));
}

char *nadbfs_public_source(const char *source)
{
	const char *scheme_end = strstr(source, "://");
	const char *host, *at, *slash;
	char *out;

	if (!scheme_end || strncasecmp(source, "redis", 5) != 0)
		return strdup(source);
	/* The user information of a URL ends at the last '@' before the path. */
	host = scheme_end + 3;
	slash = strchr(host, '/');
	at = NULL;
	for (const char *p = host; *p && (!slash || p < slash); p++)
		if (*p == '@')
			at = p;
	if (!at)
		out = strdup(source);
	else if (asprintf(&out, "%.*s%s", (int)(host - source), source, at + 1) < 0)
		out = NULL;
	if (out) {
		/* A password in the query string goes too, with the rest of it. */
		char *q = strchr(out, '?');

		if (q && strstr(q, "pass"))
			*q = '\0';
	}
	return out;
}
