/*
 * Structured logging: one JSON object per line (or a text line for humans),
 * with ts, level, component, msg and typed fields.
 *
 * Thread-safe: every function may be called from any thread; a line is written
 * with one write(2) so lines from different threads never interleave.
 * Never pass a value's content or a secret as a field.
 *
 * Rate limiting: a warning or error whose (component, msg) pair was already
 * logged LOG_RATELIMIT_BURST times in the current window of
 * LOG_RATELIMIT_WINDOW_MS is dropped and counted, so that a failing backend
 * cannot flood the journal. The window of a pair starts at its first line;
 * at the first log call after it ends (whichever pair or level that call has),
 * or at log_open()/log_close(), one line with the same component and the
 * highest level among the dropped ones says
 *   msg "repeated messages suppressed", suppressed N, repeated_msg "<msg>",
 *   window_ms W
 * Fields play no part in the identity of a line: callers put what varies
 * (key, error) in fields or in the printf arguments of log_msg(), which make
 * different messages. Debug and info lines are never limited. The limiter
 * keeps LOG_RATELIMIT_SLOTS pairs; when a new pair needs a slot the pair seen
 * least recently is forgotten (its pending count is reported first).
 */
#ifndef NADB_UTIL_LOG_H
#define NADB_UTIL_LOG_H

#include <stdarg.h>
#include <stddef.h>
#include <stdbool.h>

enum log_level { NLOG_DEBUG, NLOG_INFO, NLOG_WARN, NLOG_ERROR };

enum log_format { LOG_FORMAT_JSON, LOG_FORMAT_TEXT };

enum log_field_type { LOG_FIELD_STR, LOG_FIELD_INT, LOG_FIELD_DBL };

struct log_field {
	const char *name;
	enum log_field_type type;
	union {
		const char *s;
		long long i;
		double d;
	};
};

#define LF_STR(n, v) ((struct log_field){ .name = (n), .type = LOG_FIELD_STR, .s = (v) })
#define LF_INT(n, v) ((struct log_field){ .name = (n), .type = LOG_FIELD_INT, .i = (long long)(v) })
#define LF_DBL(n, v) ((struct log_field){ .name = (n), .type = LOG_FIELD_DBL, .d = (double)(v) })

/*
 * Where lines go. file == NULL and use_syslog == false: stderr.
 * Returns 0 or a negative errno (the file could not be opened); on error the
 * previous destination stays in force.
 */
int log_open(const char *file, bool use_syslog);
void log_close(void);
void log_set_level(enum log_level level);
enum log_level log_get_level(void);
void log_set_format(enum log_format format);
/* Parses "debug", "info", "warn"/"warning", "error". 0 or -EINVAL. */
int log_parse_level(const char *s, enum log_level *out);

/* A message built with printf formatting, no extra fields. */
void log_msg(enum log_level level, const char *component, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
void log_vmsg(enum log_level level, const char *component, const char *fmt, va_list ap);

/* A fixed message with typed fields: log_fields(NLOG_WARN, "store", "x", f, n). */
void log_fields(enum log_level level, const char *component, const char *msg,
		const struct log_field *fields, size_t nfields);

#define LOG_RATELIMIT_BURST 10
#define LOG_RATELIMIT_WINDOW_MS 10000
#define LOG_RATELIMIT_SLOTS 64

/*
 * For tests: sets the burst (0 turns limiting off) and the window, and the
 * clock that measures it (milliseconds, monotonic; NULL = CLOCK_MONOTONIC).
 * Pending counts are reported first and every pair is forgotten.
 * The daemon never calls it: the defaults above hold.
 */
void log_ratelimit_configure(unsigned burst, unsigned long long window_ms,
			     unsigned long long (*clock_ms)(void));

#define NLOG(level, component, msg, ...)                                                      \
	log_fields((level), (component), (msg), (const struct log_field[]){ __VA_ARGS__ },    \
		   sizeof((const struct log_field[]){ __VA_ARGS__ }) / sizeof(struct log_field))

#endif
