/*
 * Structured logging (see log.h).
 *
 * Locking: log_lock protects dest_fd, dest_owned and dest_syslog, and is held
 * across the write(2) or syslog(3) of a line so that a concurrent log_open()
 * can never close the descriptor under a writer and lines of different threads
 * never interleave. The level and the format are atomics read without the lock:
 * a filtered-out message must cost one load, not a lock round trip.
 */
#include "util/log.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static int dest_fd = STDERR_FILENO;	/* log_lock */
static bool dest_owned;			/* log_lock: dest_fd is ours to close */
static bool dest_syslog;		/* log_lock */

static _Atomic int min_level = NLOG_INFO;
static _Atomic int out_format = LOG_FORMAT_JSON;

static const char *const level_names[] = { "debug", "info", "warn", "error" };
static const int level_prio[] = { LOG_DEBUG, LOG_INFO, LOG_WARNING, LOG_ERR };

/* Keys of every line; a field with one of these names is renamed "_name". */
static const char *const reserved_keys[] = { "ts", "level", "component", "msg" };

/* A growable string; on allocation failure it stays failed and drops appends. */
struct sbuf {
	char *p;
	size_t len;
	size_t cap;
	bool failed;
};

static void sb_reserve(struct sbuf *b, size_t more)
{
	size_t cap;
	char *p;

	if (b->failed || b->len + more + 1 <= b->cap)
		return;
	cap = b->cap ? b->cap : 256;
	while (cap < b->len + more + 1)
		cap *= 2;
	p = realloc(b->p, cap);
	if (!p) {
		b->failed = true;
		return;
	}
	b->p = p;
	b->cap = cap;
}

static void sb_putn(struct sbuf *b, const char *s, size_t n)
{
	sb_reserve(b, n);
	if (b->failed)
		return;
	memcpy(b->p + b->len, s, n);
	b->len += n;
	b->p[b->len] = '\0';
}

static void sb_puts(struct sbuf *b, const char *s)
{
	sb_putn(b, s, strlen(s));
}

static void sb_printf(struct sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(struct sbuf *b, const char *fmt, ...)
{
	char tmp[64];
	va_list ap;
	int n;

	/* Only used for numbers and timestamps, which always fit. */
	va_start(ap, fmt);
	n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
	va_end(ap);
	if (n > 0)
		sb_putn(b, tmp, (size_t)n < sizeof(tmp) ? (size_t)n : sizeof(tmp) - 1);
}

/* Length of the valid UTF-8 sequence at s (n bytes left), or 0 if invalid. */
static size_t utf8_seq_len(const unsigned char *s, size_t n)
{
	size_t len, i;
	uint32_t cp;

	if (s[0] < 0x80)
		return 1;
	if (s[0] >= 0xc2 && s[0] <= 0xdf) {
		len = 2;
		cp = s[0] & 0x1f;
	} else if (s[0] >= 0xe0 && s[0] <= 0xef) {
		len = 3;
		cp = s[0] & 0x0f;
	} else if (s[0] >= 0xf0 && s[0] <= 0xf4) {
		len = 4;
		cp = s[0] & 0x07;
	} else {
		return 0;
	}
	if (n < len)
		return 0;
	for (i = 1; i < len; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		cp = (cp << 6) | (s[i] & 0x3f);
	}
	if ((len == 3 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) ||
	    (len == 4 && (cp < 0x10000 || cp > 0x10ffff)))
		return 0;
	return len;
}

/*
 * Copies s into b keeping it one printable line: key names and messages may
 * hold any byte, and jansson refuses invalid UTF-8 while a raw newline would
 * split a text line. Bad bytes become a visible \xNN, so nothing is lost.
 * With text == false, control characters are left to jansson's escaping.
 */
static void sb_put_clean(struct sbuf *b, const char *s, size_t n, bool text)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t i = 0, len;

	while (i < n) {
		len = utf8_seq_len(p + i, n - i);
		if (len == 0 || (text && (p[i] < 0x20 || p[i] == 0x7f))) {
			sb_printf(b, "\\x%02x", p[i]);
			i++;
			continue;
		}
		sb_putn(b, s + i, len);
		i += len;
	}
}

static void format_ts(char *out, size_t outlen)
{
	struct timespec now;
	struct tm tm;
	size_t n;

	clock_gettime(CLOCK_REALTIME, &now);
	gmtime_r(&now.tv_sec, &tm);
	n = strftime(out, outlen, "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(out + n, outlen - n, ".%03ldZ", now.tv_nsec / 1000000);
}

/* A JSON string for any C string: NULL is null, bad bytes are escaped. */
static json_t *json_clean_string(const char *s)
{
	struct sbuf b = { 0 };
	json_t *j;

	if (!s)
		return json_null();
	sb_put_clean(&b, s, strlen(s), false);
	if (b.failed) {
		free(b.p);
		return NULL;
	}
	j = json_stringn_nocheck(b.p ? b.p : "", b.len);
	free(b.p);
	return j;
}

static bool is_reserved(const char *name)
{
	size_t i;

	for (i = 0; i < sizeof(reserved_keys) / sizeof(reserved_keys[0]); i++)
		if (strcmp(name, reserved_keys[i]) == 0)
			return true;
	return false;
}

static json_t *field_value(const struct log_field *f)
{
	switch (f->type) {
	case LOG_FIELD_STR:
		return json_clean_string(f->s);
	case LOG_FIELD_INT:
		return json_integer(f->i);
	case LOG_FIELD_DBL:
		/* JSON has no NaN or infinity. */
		if (!isfinite(f->d))
			return json_string(isnan(f->d) ? "nan" : f->d > 0 ? "inf" : "-inf");
		return json_real(f->d);
	}
	return json_null();
}

/* Returns a malloc'ed line ending in '\n', or NULL on allocation failure. */
static char *build_json(const char *ts, const char *level, const char *component,
			const char *msg, const struct log_field *fields, size_t nfields)
{
	json_t *obj = json_object();
	struct sbuf key = { 0 };
	char *out = NULL, *line;
	size_t i, n;

	if (!obj)
		return NULL;
	if (json_object_set_new(obj, "ts", json_string(ts)) ||
	    json_object_set_new(obj, "level", json_string(level)) ||
	    json_object_set_new(obj, "component", json_clean_string(component)) ||
	    json_object_set_new(obj, "msg", json_clean_string(msg)))
		goto out_put;
	for (i = 0; i < nfields; i++) {
		const char *name = fields[i].name ? fields[i].name : "null";

		key.len = 0;
		if (is_reserved(name))
			sb_puts(&key, "_");
		sb_put_clean(&key, name, strlen(name), false);
		if (key.failed)
			goto out_put;
		if (json_object_set_new_nocheck(obj, key.p, field_value(&fields[i])))
			goto out_put;
	}
	out = json_dumps(obj, JSON_COMPACT);
	if (!out)
		goto out_put;
	n = strlen(out);
	line = realloc(out, n + 2);
	if (!line) {
		free(out);
		out = NULL;
		goto out_put;
	}
	out = line;
	out[n] = '\n';
	out[n + 1] = '\0';
out_put:
	free(key.p);
	json_decref(obj);
	return out;
}

/* A text value is quoted when it would otherwise not read back as one token. */
static void text_value(struct sbuf *b, const char *s)
{
	size_t run;

	if (!s) {
		sb_puts(b, "null");
		return;
	}
	if (*s && !strpbrk(s, " \t\"=\\") && strcmp(s, "null") != 0) {
		sb_put_clean(b, s, strlen(s), true);
		return;
	}
	sb_putn(b, "\"", 1);
	while (*s) {
		if (*s == '"' || *s == '\\') {
			sb_putn(b, "\\", 1);
			sb_putn(b, s++, 1);
			continue;
		}
		run = strcspn(s, "\"\\");
		sb_put_clean(b, s, run, true);
		s += run;
	}
	sb_putn(b, "\"", 1);
}

static void text_token(struct sbuf *b, const char *s)
{
	if (!s)
		s = "null";
	sb_put_clean(b, s, strlen(s), true);
}

static char *build_text(const char *ts, const char *level, const char *component,
			const char *msg, const struct log_field *fields, size_t nfields)
{
	struct sbuf b = { 0 };
	size_t i;

	sb_puts(&b, ts);
	sb_putn(&b, " ", 1);
	sb_puts(&b, level);
	sb_putn(&b, " ", 1);
	text_token(&b, component);
	sb_putn(&b, ": ", 2);
	text_token(&b, msg);
	for (i = 0; i < nfields; i++) {
		const struct log_field *f = &fields[i];

		sb_putn(&b, " ", 1);
		text_token(&b, f->name);
		sb_putn(&b, "=", 1);
		switch (f->type) {
		case LOG_FIELD_STR:
			text_value(&b, f->s);
			break;
		case LOG_FIELD_INT:
			sb_printf(&b, "%lld", f->i);
			break;
		case LOG_FIELD_DBL:
			sb_printf(&b, "%g", f->d);
			break;
		default:
			sb_puts(&b, "null");
			break;
		}
	}
	sb_putn(&b, "\n", 1);
	if (b.failed) {
		free(b.p);
		return NULL;
	}
	return b.p;
}

/* Called with log_lock held. */
static void emit_locked(enum log_level level, const char *line, size_t len)
{
	ssize_t n;

	if (dest_syslog) {
		/* syslog adds its own line end. */
		syslog(level_prio[level], "%.*s", (int)(len - 1), line);
		return;
	}
	/*
	 * One write(2) per line; a short write (a signal, a full disk) is
	 * finished under the lock so that no other line lands in between.
	 */
	while (len > 0) {
		n = write(dest_fd, line, len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return;
		}
		line += n;
		len -= (size_t)n;
	}
}

void log_fields(enum log_level level, const char *component, const char *msg,
		const struct log_field *fields, size_t nfields)
{
	char ts[40], fallback[160];
	const char *lvl;
	char *line;
	int saved_errno = errno;

	if ((unsigned)level > NLOG_ERROR)
		level = NLOG_ERROR;
	if ((int)level < atomic_load_explicit(&min_level, memory_order_relaxed))
		return;
	if (!fields)
		nfields = 0;
	lvl = level_names[level];
	format_ts(ts, sizeof(ts));
	if (atomic_load_explicit(&out_format, memory_order_relaxed) == LOG_FORMAT_TEXT)
		line = build_text(ts, lvl, component, msg, fields, nfields);
	else
		line = build_json(ts, lvl, component, msg, fields, nfields);

	pthread_mutex_lock(&log_lock);
	if (line) {
		emit_locked(level, line, strlen(line));
	} else {
		/* Out of memory: still say that something was lost. */
		snprintf(fallback, sizeof(fallback),
			 "{\"ts\":\"%s\",\"level\":\"%s\",\"component\":\"log\","
			 "\"msg\":\"log line dropped: out of memory\"}\n",
			 ts, lvl);
		emit_locked(level, fallback, strlen(fallback));
	}
	pthread_mutex_unlock(&log_lock);
	free(line);
	/* Logging an error must not clobber the errno the caller reports next. */
	errno = saved_errno;
}

void log_vmsg(enum log_level level, const char *component, const char *fmt, va_list ap)
{
	char *msg = NULL;

	if ((unsigned)level > NLOG_ERROR)
		level = NLOG_ERROR;
	if ((int)level < atomic_load_explicit(&min_level, memory_order_relaxed))
		return;
	if (!fmt) {
		log_fields(level, component, NULL, NULL, 0);
		return;
	}
	if (vasprintf(&msg, fmt, ap) < 0)
		msg = NULL;
	log_fields(level, component, msg ? msg : fmt, NULL, 0);
	free(msg);
}

void log_msg(enum log_level level, const char *component, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_vmsg(level, component, fmt, ap);
	va_end(ap);
}

int log_open(const char *file, bool use_syslog)
{
	int fd = -1, old_fd;
	bool old_owned, old_syslog;

	/* A file wins over syslog: "the log file if configured, else syslog". */
	if (file) {
		fd = open(file, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOCTTY, 0640);
		if (fd < 0)
			return -errno;
		use_syslog = false;
	}
	if (use_syslog)
		openlog("nadbfs", LOG_PID, LOG_DAEMON);

	pthread_mutex_lock(&log_lock);
	old_fd = dest_fd;
	old_owned = dest_owned;
	old_syslog = dest_syslog;
	dest_fd = fd >= 0 ? fd : STDERR_FILENO;
	dest_owned = fd >= 0;
	dest_syslog = use_syslog;
	pthread_mutex_unlock(&log_lock);

	if (old_owned)
		close(old_fd);
	if (old_syslog && !use_syslog)
		closelog();
	return 0;
}

void log_close(void)
{
	log_open(NULL, false);
}

void log_set_level(enum log_level level)
{
	if ((unsigned)level > NLOG_ERROR)
		level = NLOG_ERROR;
	atomic_store_explicit(&min_level, (int)level, memory_order_relaxed);
}

enum log_level log_get_level(void)
{
	return (enum log_level)atomic_load_explicit(&min_level, memory_order_relaxed);
}

void log_set_format(enum log_format format)
{
	atomic_store_explicit(&out_format, format == LOG_FORMAT_TEXT ? LOG_FORMAT_TEXT
								   : LOG_FORMAT_JSON,
			      memory_order_relaxed);
}

int log_parse_level(const char *s, enum log_level *out)
{
	static const struct {
		const char *name;
		enum log_level level;
	} names[] = {
		{ "debug", NLOG_DEBUG }, { "info", NLOG_INFO },	  { "warn", NLOG_WARN },
		{ "warning", NLOG_WARN }, { "error", NLOG_ERROR },
	};
	size_t i;

	if (!s)
		return -EINVAL;
	for (i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		if (strcasecmp(s, names[i].name) == 0) {
			*out = names[i].level;
			return 0;
		}
	}
	return -EINVAL;
}
