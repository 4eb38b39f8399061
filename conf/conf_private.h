/*
 * Private to conf/: helpers that conf.c (keys, files, -o options) and
 * conf_source.c (SOURCE) share, so that both check values the same way and
 * word their messages alike. Not installed and not included outside conf/.
 * They have external linkage in a library linked into the daemon with every
 * other module, hence the conf_ prefix on names as generic as these.
 */
#ifndef NADB_CONF_PRIVATE_H
#define NADB_CONF_PRIVATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* sun_path holds 108 bytes including the terminating NUL. */
#define MAX_SOCKET_PATH 107

/* snprintf into err; does nothing when the caller passed no buffer. */
void conf_fmt_err(char *err, size_t errlen, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* s with control characters replaced and long text cut, for a one-line message. */
const char *conf_quote_value(const char *s, char *buf, size_t buflen);
/* A whole decimal number. 0, -EINVAL or -ERANGE. */
int conf_parse_uint(const char *s, uint64_t *out);
/* An octal mode up to 07777. 0, -EINVAL or -ERANGE. */
int conf_parse_octal(const char *s, uint64_t *out);
/* 1-255 printable bytes without spaces (db and namespace names). */
bool conf_valid_name(const char *s);
/* Non-empty, at most 255 bytes, no spaces, control characters or '/'. */
bool conf_valid_host(const char *s);

#endif
