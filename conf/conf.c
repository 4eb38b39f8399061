/*
 * The configuration (see conf.h): one table describes every key, and the
 * file parser, -o options, conf_copy() and conf_free() are all driven by it.
 *
 * inih 55 as Debian builds it calls the handler without a line number, so the
 * file is fed to ini_parse_stream() through our own line reader, which counts
 * lines (one reader call is exactly one line), rejects lines inih would split
 * silently (longer than its buffer), and checks section headers, for which
 * inih calls no handler at all.
 *
 * The SOURCE argument is parsed in conf_source.c, single values (sizes,
 * durations, booleans, ...) in conf_values.c.
 */
#include "conf/conf.h"
#include "conf/conf_private.h"

#include <ctype.h>
#include <errno.h>
#include <ini.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#define KIB 1024ULL
#define MIB (1024ULL * KIB)
#define SEC_MS 1000ULL
#define DAY_MS (86400ULL * SEC_MS)
/* Timer values beyond a year are typos, and keep ms -> ns conversions far from overflow. */
#define MAX_MS (365ULL * DAY_MS)

enum key_kind {
	K_NAME,		/* 1..255 printable non-space bytes */
	K_HOST,		/* non-empty, no spaces or control characters */
	K_SECRET,	/* any string, never echoed; empty unsets */
	K_PATH,		/* absolute path; empty unsets */
	K_SOCKET,	/* absolute path that fits sun_path; empty unsets */
	K_SIZE,		/* bytes, uint64_t */
	K_MS,		/* duration in ms, uint64_t */
	K_SECONDS,	/* duration in whole seconds, uint64_t */
	K_UINT,		/* plain number, unsigned or uint64_t */
	K_OCTAL,	/* file mode, unsigned */
	K_BOOL,
	K_ENUM,		/* int-sized enum */
};

struct enum_name {
	const char *name;
	int value;
};

struct conf_key {
	const char *section;
	const char *name;
	enum key_kind kind;
	size_t off;
	size_t size;
	uint64_t min, max;
	const char *range;		/* what a value out of [min, max] is told */
	const struct enum_name *enums;	/* K_ENUM, terminated by a NULL name */
};

static const struct enum_name backend_names[] = {
	{ "fs", CONF_BACKEND_FS }, { "redis", CONF_BACKEND_REDIS }, { NULL, 0 }
};
static const struct enum_name compression_names[] = {
	{ "zstd", CONF_COMPRESSION_ZSTD }, { "none", CONF_COMPRESSION_NONE }, { NULL, 0 }
};
static const struct enum_name level_names[] = {
	{ "debug", NLOG_DEBUG }, { "info", NLOG_INFO }, { "warn", NLOG_WARN },
	{ "warning", NLOG_WARN }, { "error", NLOG_ERROR }, { NULL, 0 }
};
static const struct enum_name format_names[] = {
	{ "json", CONF_LOG_JSON }, { "text", CONF_LOG_TEXT }, { "auto", CONF_LOG_AUTO }, { NULL, 0 }
};

_Static_assert(sizeof(enum conf_backend) == sizeof(int) &&
		       sizeof(enum conf_compression) == sizeof(int) &&
		       sizeof(enum log_level) == sizeof(int) &&
		       sizeof(enum conf_log_format) == sizeof(int),
	       "K_ENUM stores an int");

#define F(field) offsetof(struct conf, field), sizeof(((struct conf *)0)->field)
#define KEY(sec, name, kind, field) { sec, name, kind, F(field), 0, UINT64_MAX, NULL, NULL }
#define RANGED(sec, name, kind, field, lo, hi, text) \
	{ sec, name, kind, F(field), lo, hi, text, NULL }
#define ENUM(sec, name, field, names) { sec, name, K_ENUM, F(field), 0, 0, NULL, names }

static const struct conf_key keys[] = {
	ENUM("store", "backend", backend, backend_names),
	KEY("store", "data_dir", K_PATH, data_dir),
	KEY("store", "db", K_NAME, db),
	KEY("store", "namespace", K_NAME, ns),
	RANGED("store", "buffer_size", K_SIZE, buffer_size, 64 * KIB, INT64_MAX,
	       "must be at least 64K"),
	RANGED("store", "flush_interval", K_MS, flush_interval_ms, 10, MAX_MS,
	       "must be between 10ms and 365d"),
	RANGED("store", "backend_timeout", K_MS, backend_timeout_ms, 1, MAX_MS,
	       "must be between 1ms and 365d"),
	RANGED("store", "max_value_size", K_SIZE, max_value_size, 1, INT64_MAX,
	       "must be at least 1 byte"),
	ENUM("store", "compression", compression, compression_names),
	RANGED("store", "compression_min_size", K_SIZE, compression_min_size, 0, INT64_MAX,
	       "is too large"),
	RANGED("store", "default_ttl", K_SECONDS, default_ttl_s, 0, 100 * 365 * 86400ULL,
	       "must be at most 100 years"),
	RANGED("store", "ttl_sweep", K_MS, ttl_sweep_ms, 10, MAX_MS,
	       "must be between 10ms and 365d"),
	RANGED("store", "query_cache_size", K_UINT, query_cache_size, 0, 1ULL << 30,
	       "must be at most 1073741824 entries"),
	RANGED("store", "tx_max_bytes", K_SIZE, tx_max_bytes, 1, INT64_MAX,
	       "must be at least 1 byte"),
	KEY("store", "backup_dir", K_PATH, backup_dir),
	KEY("store", "close_to_open", K_BOOL, close_to_open),

	KEY("redis", "host", K_HOST, redis_host),
	RANGED("redis", "port", K_UINT, redis_port, 1, 65535, "must be between 1 and 65535"),
	KEY("redis", "socket", K_SOCKET, redis_socket),
	RANGED("redis", "database", K_UINT, redis_database, 0, INT32_MAX,
	       "must be between 0 and 2147483647"),
	KEY("redis", "password", K_SECRET, redis_password),
	RANGED("redis", "timeout", K_MS, redis_timeout_ms, 1, MAX_MS,
	       "must be between 1ms and 365d"),
	RANGED("redis", "pool_size", K_UINT, redis_pool_size, 0, 1024,
	       "must be between 0 and 1024"),
	KEY("redis", "key_prefix", K_NAME, redis_key_prefix),
	KEY("redis", "spill_dir", K_PATH, redis_spill_dir),

	KEY("mount", "allow_other", K_BOOL, allow_other),
	RANGED("mount", "attr_timeout", K_MS, attr_timeout_ms, 0, MAX_MS, "must be at most 365d"),
	RANGED("mount", "entry_timeout", K_MS, entry_timeout_ms, 0, MAX_MS,
	       "must be at most 365d"),
	RANGED("mount", "max_threads", K_UINT, max_threads, 1, 1024,
	       "must be between 1 and 1024"),
	RANGED("mount", "ctl_mode", K_OCTAL, ctl_mode, 0, 0777, "must be between 0 and 0777"),
	RANGED("mount", "coherence_delay", K_MS, coherence_delay_ms, 0, MAX_MS,
	       "must be at most 365d"),

	ENUM("log", "level", log_level, level_names),
	ENUM("log", "format", log_format, format_names),
	KEY("log", "file", K_PATH, log_file),
};

#define NKEYS (sizeof(keys) / sizeof(keys[0]))

static const char *const sections[] = { "store", "redis", "mount", "log" };

static bool is_string_kind(enum key_kind k)
{
	return k == K_NAME || k == K_HOST || k == K_SECRET || k == K_PATH || k == K_SOCKET;
}

static char **str_field(struct conf *c, const struct conf_key *k)
{
	return (char **)((char *)c + k->off);
}

void conf_fmt_err(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (!err || errlen == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

/*
 * A value as it may appear inside a one-line message: -o values can hold
 * anything, and an error message is no place for a newline or 4 KiB of text.
 */
const char *conf_quote_value(const char *s, char *buf, size_t buflen)
{
	size_t i, o = 0;

	for (i = 0; s[i] && o + 4 < buflen; i++)
		buf[o++] = ((unsigned char)s[i] < 0x20 || s[i] == 0x7f) ? '?' : s[i];
	if (s[i]) {
		memcpy(buf + o, "...", 3);
		o += 3;
	}
	buf[o] = '\0';
	return buf;
}

static char *xstrdup(const char *s)
{
	char *p = strdup(s);

	if (!p)
		abort();
	return p;
}

/* --- setting one key ------------------------------------------------------ */

static const struct conf_key *find_key(const char *section, const char *name)
{
	size_t i;

	for (i = 0; i < NKEYS; i++)
		if (strcmp(keys[i].section, section) == 0 && strcmp(keys[i].name, name) == 0)
			return &keys[i];
	return NULL;
}

static bool known_section(const char *section)
{
	size_t i;

	for (i = 0; i < sizeof(sections) / sizeof(sections[0]); i++)
		if (strcmp(sections[i], section) == 0)
			return true;
	return false;
}

static const char *expected(const struct conf_key *k)
{
	switch (k->kind) {
	case K_NAME:
		return "must be 1 to 255 printable characters without spaces";
	case K_HOST:
		return "expected a host name or address";
	case K_PATH:
		return "must be an absolute path";
	case K_SOCKET:
		return "must be an absolute path of at most 107 bytes";
	case K_SIZE:
		return "expected a size such as 64K, 8M or 1G";
	case K_MS:
		return "expected a duration such as 200ms, 1s, 2m, 1h or 1d";
	case K_SECONDS:
		return "expected a whole number of seconds such as 0, 30, 2h or 1d";
	case K_UINT:
		return "expected a whole number";
	case K_OCTAL:
		return "expected an octal mode such as 0600";
	case K_BOOL:
		return "expected yes, no, true, false, on, off, 1 or 0";
	default:
		return "bad value";
	}
}

/* The names of an enum key, for its error message. */
static const char *enum_choices(const struct conf_key *k, char *buf, size_t buflen)
{
	size_t o = (size_t)snprintf(buf, buflen, "expected one of");
	int i;

	for (i = 0; k->enums[i].name && o < buflen; i++)
		o += (size_t)snprintf(buf + o, buflen - o, "%s %s", i ? "," : "", k->enums[i].name);
	return buf;
}

/*
 * Applies value to one key. Parses completely before storing, so a failure
 * changes nothing. relative_ok: a relative path is taken against the working
 * directory (-o options) instead of refused (files, which must not depend on
 * where the daemon was started).
 */
static int set_key(struct conf *c, const struct conf_key *k, const char *value, bool relative_ok,
		   char *err, size_t errlen)
{
	char qbuf[80], ebuf[160];
	const char *why;
	uint64_t v = 0;
	char *s = NULL;
	bool b = false;
	unsigned u;
	int rc = 0, i;

	if (!value) {
		conf_fmt_err(err, errlen, "missing value for %s in section [%s]", k->name,
			     k->section);
		return -EINVAL;
	}
	why = expected(k);
	switch (k->kind) {
	case K_NAME:
		rc = conf_valid_name(value) ? 0 : -EINVAL;
		break;
	case K_HOST:
		rc = conf_valid_host(value) ? 0 : -EINVAL;
		break;
	case K_SECRET:
		break;
	case K_PATH:
	case K_SOCKET:
		if (!*value)
			break;
		if (value[0] != '/' && !relative_ok) {
			rc = -EINVAL;
			break;
		}
		rc = conf_absolute_path(value, &s);
		if (rc == -ENOMEM)
			return rc;
		if (rc == -ENAMETOOLONG)
			why = "path too long";
		else if (rc)
			why = strerror(-rc);
		else if (k->kind == K_SOCKET && strlen(s) > MAX_SOCKET_PATH)
			rc = -ENAMETOOLONG;
		break;
	case K_SIZE:
		rc = conf_parse_size(value, &v);
		break;
	case K_MS:
		rc = conf_parse_duration_ms(value, &v);
		break;
	case K_SECONDS:
		rc = conf_parse_duration_ms(value, &v);
		if (!rc && v % SEC_MS)
			rc = -EINVAL;
		v /= SEC_MS;
		break;
	case K_UINT:
		rc = conf_parse_uint(value, &v);
		break;
	case K_OCTAL:
		rc = conf_parse_octal(value, &v);
		break;
	case K_BOOL:
		rc = conf_parse_bool(value, &b);
		break;
	case K_ENUM:
		rc = -EINVAL;
		why = enum_choices(k, ebuf, sizeof(ebuf));
		for (i = 0; k->enums[i].name; i++) {
			if (strcasecmp(value, k->enums[i].name) == 0) {
				v = (uint64_t)k->enums[i].value;
				rc = 0;
				break;
			}
		}
		break;
	}
	/* Overflow while parsing: the range text might even point the wrong way. */
	if (rc == -ERANGE)
		why = "is too large";
	if (!rc && k->range && (v < k->min || v > k->max)) {
		rc = -ERANGE;
		why = k->range;
	}
	if (rc) {
		free(s);
		if (k->kind == K_SECRET)
			conf_fmt_err(err, errlen, "bad value for %s in section [%s]: %s", k->name,
				     k->section, why);
		else
			conf_fmt_err(err, errlen, "bad value '%s' for %s in section [%s]: %s",
				     conf_quote_value(value, qbuf, sizeof(qbuf)), k->name,
				     k->section, why);
		return rc;
	}

	if (is_string_kind(k->kind)) {
		/* An empty optional string unsets it; names and hosts never get here empty. */
		if (!s && *value && !(s = strdup(value)))
			return -ENOMEM;
		free(*str_field(c, k));
		*str_field(c, k) = s;
	} else if (k->kind == K_BOOL) {
		memcpy((char *)c + k->off, &b, sizeof(b));
	} else if (k->kind == K_ENUM) {
		i = (int)v;
		memcpy((char *)c + k->off, &i, sizeof(i));
	} else if (k->size == sizeof(uint64_t)) {
		memcpy((char *)c + k->off, &v, sizeof(v));
	} else {
		u = (unsigned)v;
		memcpy((char *)c + k->off, &u, sizeof(u));
	}
	return 0;
}

int conf_set(struct conf *c, const char *section, const char *key, const char *value,
	     char *err, size_t errlen)
{
	const struct conf_key *k;
	char qbuf[80], sbuf[80];

	if (!key)
		return -EINVAL;
	if (!section || !*section) {
		conf_fmt_err(err, errlen, "key '%s' is outside of any section",
			     conf_quote_value(key, qbuf, sizeof(qbuf)));
		return -EINVAL;
	}
	if (!known_section(section)) {
		conf_fmt_err(err, errlen, "unknown section [%s]",
			     conf_quote_value(section, sbuf, sizeof(sbuf)));
		return -EINVAL;
	}
	k = find_key(section, key);
	if (!k) {
		conf_fmt_err(err, errlen, "unknown key '%s' in section [%s]",
			     conf_quote_value(key, qbuf, sizeof(qbuf)), section);
		return -EINVAL;
	}
	return set_key(c, k, value, false, err, errlen);
}

/* --- whole structs ---------------------------------------------------------- */

void conf_init(struct conf *c)
{
	*c = (struct conf){
		.backend = CONF_BACKEND_FS,
		.db = xstrdup("default"),
		.ns = xstrdup("default"),
		.buffer_size = 8 * MIB,
		.flush_interval_ms = SEC_MS,
		.backend_timeout_ms = 30 * SEC_MS,
		.max_value_size = 256 * MIB,
		.compression = CONF_COMPRESSION_ZSTD,
		.compression_min_size = KIB,
		.default_ttl_s = 0,
		.ttl_sweep_ms = SEC_MS,
		.query_cache_size = 10000,
		.tx_max_bytes = 64 * MIB,
		.close_to_open = false,
		.redis_host = xstrdup("127.0.0.1"),
		.redis_port = 6379,
		.redis_database = 0,
		.redis_timeout_ms = 2 * SEC_MS,
		.redis_pool_size = 0,
		.redis_key_prefix = xstrdup("nadb"),
		.allow_other = false,
		.attr_timeout_ms = SEC_MS,
		.entry_timeout_ms = SEC_MS,
		.max_threads = 16,
		.ctl_mode = 0600,
		.coherence_delay_ms = SEC_MS,
		.log_level = NLOG_INFO,
		.log_format = CONF_LOG_AUTO,
	};
}

void conf_free(struct conf *c)
{
	size_t i;

	if (!c)
		return;
	for (i = 0; i < NKEYS; i++) {
		if (is_string_kind(keys[i].kind)) {
			free(*str_field(c, &keys[i]));
			*str_field(c, &keys[i]) = NULL;
		}
	}
}

int conf_copy(struct conf *dst, const struct conf *src)
{
	char **f;
	size_t i;

	*dst = *src;
	for (i = 0; i < NKEYS; i++) {
		if (!is_string_kind(keys[i].kind))
			continue;
		f = str_field(dst, &keys[i]);
		if (*f && !(*f = strdup(*f))) {
			/* Forget the pointers still shared with src before freeing ours. */
			for (; i < NKEYS; i++)
				if (is_string_kind(keys[i].kind))
					*str_field(dst, &keys[i]) = NULL;
			conf_free(dst);
			return -ENOMEM;
		}
	}
	return 0;
}

/* Replaces *c by *next, which it takes over. */
static void conf_swap_in(struct conf *c, struct conf *next)
{
	conf_free(c);
	*c = *next;
}

/* --- files ---------------------------------------------------------------- */

struct file_state {
	FILE *f;
	struct conf *c;
	char *buf;		/* getline's buffer */
	size_t cap;
	int lineno;		/* lines handed out so far = inih's line number */
	int err_line;		/* first error we found, 0 = none */
	int err;
	int read_errno;
	bool stop;
	char msg[320];
};

static void file_fail(struct file_state *st, int err, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void file_fail(struct file_state *st, int err, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(st->msg, sizeof(st->msg), fmt, ap);
	va_end(ap);
	st->err = err;
	st->err_line = st->lineno;
	st->stop = true;
}

static char *file_reader(char *str, int num, void *stream)
{
	struct file_state *st = stream;
	char name[80], qbuf[80];
	ssize_t n;
	size_t len;
	char *p, *end;

	if (st->stop)
		return NULL;
	errno = 0;
	n = getline(&st->buf, &st->cap, st->f);
	if (n < 0) {
		if (ferror(st->f))
			st->read_errno = errno ? errno : EIO;
		return NULL;
	}
	st->lineno++;
	len = (size_t)n;
	if (len && st->buf[len - 1] == '\n')
		st->buf[--len] = '\0';
	if (memchr(st->buf, '\0', len)) {
		file_fail(st, -EINVAL, "line contains a NUL byte");
		return NULL;
	}
	/* inih cuts longer lines and parses the rest as a line of its own. */
	if (num < 1 || len + 1 > (size_t)num) {
		file_fail(st, -EINVAL, "line longer than %d bytes", num);
		return NULL;
	}
	p = st->buf;
	if (st->lineno == 1 && strncmp(p, "\xef\xbb\xbf", 3) == 0)
		p += 3;
	/*
	 * Leading blanks would make inih treat the line as a continuation of
	 * the previous key's value: an indented key would silently become part
	 * of another key's value.
	 */
	while (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\f' || *p == '\v')
		p++;
	if (*p == '[' && (end = strchr(p + 1, ']')) != NULL) {
		len = (size_t)(end - p - 1);
		if (len >= sizeof(name))
			len = sizeof(name) - 1;
		memcpy(name, p + 1, len);
		name[len] = '\0';
		if (!known_section(name)) {
			file_fail(st, -EINVAL, "unknown section [%s]",
				  conf_quote_value(name, qbuf, sizeof(qbuf)));
			return NULL;
		}
	}
	memcpy(str, p, strlen(p) + 1);
	return str;
}

static int file_handler(void *user, const char *section, const char *name, const char *value)
{
	struct file_state *st = user;
	char msg[sizeof(st->msg)];
	int rc;

	if (st->stop)
		return 0;
	rc = conf_set(st->c, section, name, value, msg, sizeof(msg));
	if (rc) {
		file_fail(st, rc, "%s", msg);
		return 0;
	}
	return 1;
}

int conf_load_file(struct conf *c, const char *path, char *err, size_t errlen)
{
	struct file_state st = { 0 };
	struct conf next;
	struct stat sb;
	int rc;

	if (!path)
		return -EINVAL;
	st.f = fopen(path, "re");
	if (!st.f) {
		rc = -errno;
		conf_fmt_err(err, errlen, "%s: cannot read: %s", path, strerror(-rc));
		return rc;
	}
	/* fopen() opens a directory for reading; reading it then fails. Say so plainly. */
	if (fstat(fileno(st.f), &sb) == 0 && S_ISDIR(sb.st_mode)) {
		rc = -EISDIR;
		conf_fmt_err(err, errlen, "%s: cannot read: %s", path, strerror(EISDIR));
		goto out_close;
	}
	rc = conf_copy(&next, c);
	if (rc)
		goto out_close;
	st.c = &next;

	rc = ini_parse_stream(file_reader, &st, file_handler, &st);
	if (rc > 0 && (!st.err_line || rc < st.err_line)) {
		/* inih's own complaint: no '=' or ':', or a '[' without ']'. */
		conf_fmt_err(err, errlen, "%s:%d: syntax error: expected [section] or key = value",
			     path, rc);
		rc = -EINVAL;
	} else if (st.err_line) {
		conf_fmt_err(err, errlen, "%s:%d: %s", path, st.err_line, st.msg);
		rc = st.err;
	} else if (st.read_errno) {
		conf_fmt_err(err, errlen, "%s: cannot read: %s", path, strerror(st.read_errno));
		rc = -st.read_errno;
	} else if (rc < 0) {
		conf_fmt_err(err, errlen, "%s: out of memory", path);
		rc = -ENOMEM;
	}
	if (rc)
		conf_free(&next);
	else
		conf_swap_in(c, &next);
	free(st.buf);
out_close:
	fclose(st.f);
	return rc;
}

/* --- -o options ----------------------------------------------------------- */

/* The keys a -o NAME names (at most two are looked for): SECTION_KEY, or a
 * bare key, which must name one key only. */
static size_t match_option(const char *name, const struct conf_key *found[2])
{
	size_t n = 0;

	for (size_t i = 0; i < NKEYS && n < 2; i++) {
		const struct conf_key *k = &keys[i];
		size_t slen = strlen(k->section);

		if ((strncmp(name, k->section, slen) == 0 && name[slen] == '_' &&
		     strcmp(name + slen + 1, k->name) == 0) ||
		    strcmp(name, k->name) == 0)
			found[n++] = k;
	}
	return n;
}

bool conf_option_is_path(const char *name)
{
	const struct conf_key *found[2] = { NULL, NULL };

	return match_option(name, found) == 1 &&
	       (found[0]->kind == K_PATH || found[0]->kind == K_SOCKET);
}

int conf_set_option(struct conf *c, const char *name, const char *value, char *err,
		    size_t errlen)
{
	const struct conf_key *found[2] = { NULL, NULL };
	char qbuf[80], msg[320];
	size_t n;
	int rc;

	if (!name || !*name) {
		conf_fmt_err(err, errlen, "option: empty name");
		return -EINVAL;
	}
	conf_quote_value(name, qbuf, sizeof(qbuf));
	n = match_option(name, found);
	if (n == 0) {
		conf_fmt_err(err, errlen, "option %s: unknown option", qbuf);
		return -ENOENT;
	}
	if (n > 1) {
		conf_fmt_err(err, errlen, "option %s: ambiguous, use %s_%s or %s_%s", qbuf,
			     found[0]->section, found[0]->name, found[1]->section, found[1]->name);
		return -EINVAL;
	}
	/* A bare flag (-o allow_other) switches a boolean on, as FUSE options do. */
	if (!value && found[0]->kind == K_BOOL)
		value = "yes";
	rc = set_key(c, found[0], value, true, msg, sizeof(msg));
	if (rc)
		conf_fmt_err(err, errlen, "option %s: %s", qbuf, msg);
	return rc;
}
