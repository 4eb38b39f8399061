/*
 * Structured logging (see log.h).
 *
 * Locking: log_lock protects dest_fd, dest_owned and dest_syslog, and is held
 * across the write(2) or syslog(3) of a line so that a concurrent log_open()
 * can never close the descriptor under a writer and lines of different threads
 * never interleave. The level and the format are atomics read without the lock:
 * a filtered-out message must cost one load, not a lock round trip.
 *
 * The rate limiter's table is protected by rl_lock. Lock order: rl_lock, then
 * log_lock (a summary line is written while rl_lock is held, so that it
 * cannot be overtaken by a later count of the same pair).
 */
#include "util/log.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
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

/* Formats and writes one line; the level is valid and already filtered. */
static void emit_line(enum log_level level, const char *component, const char *msg,
		      const struct log_field *fields, size_t nfields)
{
	char ts[40], fallback[160];
	const char *lvl;
	char *line;

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
}

/* --- rate limiting of repeated warnings and errors (see log.h) ------------- */

/*
 * One (component, msg) pair. The texts are kept, cut if long, because the
 * summary may be written at a call about another pair; the 64-bit hash of the
 * whole texts tells apart pairs whose kept prefixes agree.
 */
struct rl_entry {
	uint64_t hash;			/* 0: free slot */
	unsigned long long start_ms;	/* the window began here */
	unsigned long long last_ms;	/* latest line of the pair, for eviction */
	unsigned count;			/* lines of the pair in this window */
	unsigned suppressed;		/* of which dropped and not yet reported */
	int level;			/* highest level among the dropped ones */
	bool null_component, null_msg;
	char component[32];
	char msg[128];
};

typedef unsigned long long (*rl_clock_fn)(void);

static pthread_mutex_t rl_lock = PTHREAD_MUTEX_INITIALIZER;
static struct rl_entry rl_table[LOG_RATELIMIT_SLOTS];	/* rl_lock */
static unsigned rl_burst = LOG_RATELIMIT_BURST;		/* rl_lock */
static unsigned long long rl_window_ms = LOG_RATELIMIT_WINDOW_MS; /* rl_lock */
/*
 * Earliest end of a window with dropped lines, ULLONG_MAX if none: written
 * under rl_lock, read without it so that calls with nothing to report (info
 * lines above all) pay one load instead of a lock round trip.
 */
static _Atomic unsigned long long rl_deadline = ULLONG_MAX;
static _Atomic rl_clock_fn rl_clock;

static unsigned long long rl_monotonic_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (unsigned long long)ts.tv_sec * 1000ULL + (unsigned long long)ts.tv_nsec / 1000000;
}

static unsigned long long rl_now(void)
{
	rl_clock_fn fn = atomic_load_explicit(&rl_clock, memory_order_acquire);

	return fn ? fn() : rl_monotonic_ms();
}

/* FNV-1a over both texts; a NULL differs from "" through its own marker byte. */
static uint64_t rl_hash(const char *component, const char *msg)
{
	const char *parts[2] = { component, msg };
	uint64_t h = 0xcbf29ce484222325ULL;
	const unsigned char *p;
	int i;

	for (i = 0; i < 2; i++) {
		h = (h ^ (parts[i] ? 0x01u : 0x02u)) * 0x100000001b3ULL;
		for (p = (const unsigned char *)parts[i]; p && *p; p++)
			h = (h ^ *p) * 0x100000001b3ULL;
	}
	return h ? h : 1;
}

/* Copies s into a kept text, ending a cut one with "..." so readers see it was cut. */
static void rl_keep(char *dst, size_t size, const char *s)
{
	size_t n = s ? strlen(s) : 0;

	if (n < size) {
		memcpy(dst, s ? s : "", n + 1);
		return;
	}
	memcpy(dst, s, size - 4);
	memcpy(dst + size - 4, "...", 4);
}

static bool rl_same(const struct rl_entry *e, uint64_t hash, const char *component,
		    const char *msg)
{
	return e->hash == hash && e->null_component == !component && e->null_msg == !msg &&
	       strncmp(e->component, component ? component : "", sizeof(e->component) - 4) == 0 &&
	       strncmp(e->msg, msg ? msg : "", sizeof(e->msg) - 4) == 0;
}

/* Called with rl_lock held: writes the summary of e's dropped lines, if any. */
static void rl_report_locked(struct rl_entry *e)
{
	unsigned n = e->suppressed;

	if (n == 0)
		return;
	e->suppressed = 0;
	/* The level may have been raised since: the summary obeys it like any line. */
	if (e->level < atomic_load_explicit(&min_level, memory_order_relaxed))
		return;
	emit_line((enum log_level)e->level, e->null_component ? NULL : e->component,
		  "repeated messages suppressed",
		  (const struct log_field[]){ LF_INT("suppressed", n),
					      LF_STR("repeated_msg", e->null_msg ? NULL : e->msg),
					      LF_INT("window_ms", rl_window_ms) },
		  3);
}

/*
 * Called with rl_lock held: reports every pair whose window ended by now
 * (all of them with everything = true) and recomputes rl_deadline.
 */
static void rl_flush_locked(unsigned long long now, bool everything)
{
	unsigned long long next = ULLONG_MAX, end;
	struct rl_entry *e;

	for (e = rl_table; e < rl_table + LOG_RATELIMIT_SLOTS; e++) {
		if (!e->hash || !e->suppressed)
			continue;
		end = e->start_ms + rl_window_ms;
		if (everything || now >= end) {
			rl_report_locked(e);
			/* Ended: the next line of the pair opens a new window. */
			if (now >= end)
				e->hash = 0;
		} else if (end < next) {
			next = end;
		}
	}
	atomic_store_explicit(&rl_deadline, next, memory_order_relaxed);
}

/* Called with rl_lock held: the slot of a pair, a new one if it has none. */
static struct rl_entry *rl_slot_locked(uint64_t hash, const char *component, const char *msg,
				       unsigned long long now)
{
	struct rl_entry *e, *victim = NULL;

	for (e = rl_table; e < rl_table + LOG_RATELIMIT_SLOTS; e++) {
		if (e->hash && rl_same(e, hash, component, msg))
			return e;
		if (!victim || (victim->hash && (!e->hash || e->last_ms < victim->last_ms)))
			victim = e;
	}
	/* A forgotten pair's count is reported, never lost. */
	if (victim->hash)
		rl_report_locked(victim);
	*victim = (struct rl_entry){ .hash = hash, .start_ms = now, .level = NLOG_DEBUG,
				     .null_component = !component, .null_msg = !msg };
	rl_keep(victim->component, sizeof(victim->component), component);
	rl_keep(victim->msg, sizeof(victim->msg), msg);
	return victim;
}

/*
 * Whether a line that passed the level filter is to be written; writes the
 * summaries that are due first, so that they precede it.
 */
static bool ratelimit_pass(enum log_level level, const char *component, const char *msg)
{
	unsigned long long now = rl_now(), end;
	uint64_t hash;
	struct rl_entry *e;
	bool pass = true;

	if (level < NLOG_WARN && now < atomic_load_explicit(&rl_deadline, memory_order_relaxed))
		return true;
	hash = level >= NLOG_WARN ? rl_hash(component, msg) : 0;
	pthread_mutex_lock(&rl_lock);
	if (now >= atomic_load_explicit(&rl_deadline, memory_order_relaxed))
		rl_flush_locked(now, false);
	if (level < NLOG_WARN || rl_burst == 0)
		goto out_unlock;
	e = rl_slot_locked(hash, component, msg, now);
	/* A clock set back by a test counts as a new window as well. */
	if (now >= e->start_ms + rl_window_ms || now < e->start_ms) {
		rl_report_locked(e);
		e->start_ms = now;
		e->count = 0;
	}
	e->last_ms = now;
	if (++e->count <= rl_burst)
		goto out_unlock;
	if (e->count > rl_burst + 1)
		e->count = rl_burst + 1;	/* no wrap-around after 4 G lines */
	pass = false;
	e->suppressed++;
	if ((int)level > e->level)
		e->level = (int)level;
	end = e->start_ms + rl_window_ms;
	if (end < atomic_load_explicit(&rl_deadline, memory_order_relaxed))
		atomic_store_explicit(&rl_deadline, end, memory_order_relaxed);
out_unlock:
	pthread_mutex_unlock(&rl_lock);
	return pass;
}

/* Reports every pending count now: before the destination changes, and at exit. */
static void ratelimit_flush_all(void)
{
	pthread_mutex_lock(&rl_lock);
	rl_flush_locked(rl_now(), true);
	pthread_mutex_unlock(&rl_lock);
}

void log_ratelimit_configure(unsigned burst, unsigned long long window_ms,
			     unsigned long long (*clock_ms)(void))
{
	pthread_mutex_lock(&rl_lock);
	rl_flush_locked(rl_now(), true);
	memset(rl_table, 0, sizeof(rl_table));
	rl_burst = burst;
	rl_window_ms = window_ms;
	atomic_store_explicit(&rl_clock, clock_ms, memory_order_release);
	atomic_store_explicit(&rl_deadline, ULLONG_MAX, memory_order_relaxed);
	pthread_mutex_unlock(&rl_lock);
}

void log_fields(enum log_level level, const char *component, const char *msg,
		const struct log_field *fields, size_t nfields)
{
	int saved_errno = errno;

	if ((unsigned)level > NLOG_ERROR)
		level = NLOG_ERROR;
	if ((int)level < atomic_load_explicit(&min_level, memory_order_relaxed))
		return;
	if (!fields)
		nfields = 0;
	if (ratelimit_pass(level, component, msg))
		emit_line(level, component, msg, fields, nfields);
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
	/* Counts of dropped lines belong with the lines, in the old destination. */
	ratelimit_flush_all();

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
