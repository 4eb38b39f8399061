/*
 * The SOURCE argument (see conf_set_source() in conf.h): a directory for the
 * fs backend or a redis:// / redis+unix:// URL. It is parsed apart from the
 * key table because a URL sets several keys at once and may carry a password,
 * which no message is allowed to echo.
 */
#include "conf/conf.h"
#include "conf/conf_private.h"

#include <ctype.h>
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

/*
 * SOURCE as it may appear in a message: whatever precedes the last '@' of a
 * URL is a password (or meant to be one), so it is replaced.
 */
static const char *redact_source(const char *source, char *buf, size_t buflen)
{
	const char *scheme_end = strstr(source, "://");
	const char *at = strrchr(source, '@');
	char tmp[160];

	if (scheme_end && at && at > scheme_end) {
		snprintf(tmp, sizeof(tmp), "%.*s://***%s", (int)(scheme_end - source), source, at);
		return conf_quote_value(tmp, buf, buflen);
	}
	return conf_quote_value(source, buf, buflen);
}

static int hexval(char ch)
{
	if (ch >= '0' && ch <= '9')
		return ch - '0';
	ch = (char)tolower((unsigned char)ch);
	if (ch >= 'a' && ch <= 'f')
		return ch - 'a' + 10;
	return -1;
}

/* Decodes %XX escapes of s[0..n) into a new string; NULL on a bad escape or NUL. */
static char *percent_decode(const char *s, size_t n, int *rc)
{
	char *out = malloc(n + 1);
	size_t i, o = 0;
	int hi, lo;

	*rc = -ENOMEM;
	if (!out)
		return NULL;
	*rc = -EINVAL;
	for (i = 0; i < n; i++) {
		if (s[i] != '%') {
			out[o++] = s[i];
			continue;
		}
		if (i + 2 >= n)
			goto out_free;
		hi = hexval(s[i + 1]);
		lo = hexval(s[i + 2]);
		if (hi < 0 || lo < 0 || (hi == 0 && lo == 0))
			goto out_free;
		out[o++] = (char)(hi * 16 + lo);
		i += 2;
	}
	out[o] = '\0';
	*rc = 0;
	return out;
out_free:
	free(out);
	return NULL;
}

/* The parts of a Redis SOURCE; NULL/absent parts keep the current values. */
struct redis_source {
	char *host;
	char *socket;
	char *password;
	bool has_port, has_db;
	unsigned port, db;
};

static int parse_db(const char *s, unsigned *out)
{
	uint64_t v;

	if (conf_parse_uint(s, &v) || v > INT32_MAX)
		return -EINVAL;
	*out = (unsigned)v;
	return 0;
}

/* redis://[:PASSWORD@]HOST[:PORT][/DB] */
static int parse_redis_tcp(const char *rest, struct redis_source *rs, const char **why)
{
	const char *at = strrchr(rest, '@'), *host, *p, *host_end;
	uint64_t port;
	int rc;

	if (at) {
		if (rest[0] != ':') {
			*why = "user names are not supported, use redis://:PASSWORD@HOST";
			return -EINVAL;
		}
		if (at == rest + 1) {
			*why = "empty password";
			return -EINVAL;
		}
		rs->password = percent_decode(rest + 1, (size_t)(at - rest - 1), &rc);
		if (!rs->password) {
			*why = "bad %-escape in the password";
			return rc;
		}
		rest = at + 1;
	}
	host = rest;
	if (*host == '[') {
		/* An IPv6 address: [::1]:6379 */
		host_end = strchr(host, ']');
		if (!host_end || host_end == host + 1) {
			*why = "bad IPv6 address, expected [ADDRESS]";
			return -EINVAL;
		}
		p = host_end + 1;
		host++;
	} else {
		host_end = host + strcspn(host, ":/?#");
		p = host_end;
	}
	if (host_end == host) {
		*why = "missing host";
		return -EINVAL;
	}
	rs->host = strndup(host, (size_t)(host_end - host));
	if (!rs->host)
		return -ENOMEM;
	if (!conf_valid_host(rs->host) || strpbrk(rs->host, "?#[]@")) {
		*why = "bad host";
		return -EINVAL;
	}
	if (*p == ':') {
		char num[8];
		size_t n = strcspn(p + 1, "/?#");

		if (n == 0 || n >= sizeof(num)) {
			*why = "bad port, expected 1 to 65535";
			return -EINVAL;
		}
		memcpy(num, p + 1, n);
		num[n] = '\0';
		if (conf_parse_uint(num, &port) || port < 1 || port > 65535) {
			*why = "bad port, expected 1 to 65535";
			return -EINVAL;
		}
		rs->port = (unsigned)port;
		rs->has_port = true;
		p += 1 + n;
	}
	if (*p == '/') {
		p++;
		/* "redis://host/" names the default database. */
		if (*p) {
			if (parse_db(p, &rs->db)) {
				*why = "bad database number after '/'";
				return -EINVAL;
			}
			rs->has_db = true;
		}
		return 0;
	}
	if (*p) {
		*why = *p == '?' ? "query parameters are not supported with redis://"
				 : "unexpected text after the host";
		return -EINVAL;
	}
	return 0;
}

/* redis+unix:///PATH[?db=N] */
static int parse_redis_unix(const char *rest, struct redis_source *rs, const char **why)
{
	const char *q = strchr(rest, '?');
	size_t n = q ? (size_t)(q - rest) : strlen(rest);

	if (rest[0] != '/') {
		*why = "expected redis+unix:///PATH (an absolute path, no host)";
		return -EINVAL;
	}
	if (n > MAX_SOCKET_PATH) {
		*why = "socket path longer than 107 bytes";
		return -ENAMETOOLONG;
	}
	if (n == 1) {
		*why = "missing socket path";
		return -EINVAL;
	}
	rs->socket = strndup(rest, n);
	if (!rs->socket)
		return -ENOMEM;
	if (q) {
		if (strncmp(q + 1, "db=", 3) != 0 || parse_db(q + 4, &rs->db)) {
			*why = "bad query, expected ?db=N";
			return -EINVAL;
		}
		rs->has_db = true;
	}
	return 0;
}

static int source_dir(const char *source, char **out, const char **why)
{
	char *real;
	struct stat sb;
	int rc;

	real = realpath(source, NULL);
	if (!real) {
		rc = -errno;
		if (rc != -ENOENT) {
			*why = strerror(-rc);
			return rc;
		}
		/* Not there yet: the backend creates it at mount. */
		rc = conf_absolute_path(source, out);
		if (rc)
			*why = rc == -ENAMETOOLONG ? "path too long" : strerror(-rc);
		return rc;
	}
	if (stat(real, &sb) == 0 && !S_ISDIR(sb.st_mode)) {
		free(real);
		*why = "not a directory";
		return -ENOTDIR;
	}
	*out = real;
	return 0;
}

int conf_set_source(struct conf *c, const char *source, char *err, size_t errlen)
{
	struct redis_source rs = { 0 };
	const char *why = NULL;
	char qbuf[128], *dir = NULL;
	size_t scheme_len;
	int rc;

	if (!source || !*source) {
		conf_fmt_err(err, errlen, "source: empty");
		return -EINVAL;
	}
	scheme_len = strspn(source, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
				    "0123456789+.-");
	if (scheme_len && isalpha((unsigned char)source[0]) &&
	    strncmp(source + scheme_len, "://", 3) == 0) {
		if (scheme_len == 5 && strncasecmp(source, "redis", 5) == 0) {
			rc = parse_redis_tcp(source + 8, &rs, &why);
		} else if (scheme_len == 10 && strncasecmp(source, "redis+unix", 10) == 0) {
			rc = parse_redis_unix(source + 13, &rs, &why);
		} else {
			rc = -EINVAL;
			why = "unsupported URL scheme, expected redis:// or redis+unix://";
		}
		if (rc)
			goto out_fail;
		/*
		 * Parts the URL leaves out keep what the file said (the password
		 * is better kept there than in argv); TCP and socket exclude
		 * each other.
		 */
		c->backend = CONF_BACKEND_REDIS;
		if (rs.socket) {
			free(c->redis_socket);
			c->redis_socket = rs.socket;
		} else {
			free(c->redis_host);
			c->redis_host = rs.host;
			free(c->redis_socket);
			c->redis_socket = NULL;
		}
		if (rs.password) {
			free(c->redis_password);
			c->redis_password = rs.password;
		}
		if (rs.has_port)
			c->redis_port = rs.port;
		if (rs.has_db)
			c->redis_database = rs.db;
		return 0;
	}

	rc = source_dir(source, &dir, &why);
	if (rc)
		goto out_fail;
	c->backend = CONF_BACKEND_FS;
	free(c->data_dir);
	c->data_dir = dir;
	return 0;

out_fail:
	free(rs.host);
	free(rs.socket);
	free(rs.password);
	if (rc == -ENOMEM && !why)
		why = strerror(ENOMEM);
	conf_fmt_err(err, errlen, "%s: %s", redact_source(source, qbuf, sizeof(qbuf)), why);
	return rc;
}
