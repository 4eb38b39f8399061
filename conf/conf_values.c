/*
 * Single configuration values: sizes, durations, booleans, numbers, modes,
 * names, hosts and paths. Shared by the key table (conf.c) and SOURCE
 * (conf_source.c), so that every place reads a value the same way.
 */
#include "conf/conf.h"
#include "conf/conf_private.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#define SEC_MS 1000ULL
#define DAY_MS (86400ULL * SEC_MS)

/* Leading decimal digits of s into *out; *end after them. -EINVAL: no digit. */
static int parse_digits(const char *s, uint64_t *out, const char **end, bool *overflow)
{
	uint64_t v = 0;
	const char *p = s;

	*overflow = false;
	if (!isdigit((unsigned char)*p))
		return -EINVAL;
	for (; isdigit((unsigned char)*p); p++) {
		if (v > (UINT64_MAX - (uint64_t)(*p - '0')) / 10)
			*overflow = true;
		else
			v = v * 10 + (uint64_t)(*p - '0');
	}
	*out = v;
	*end = p;
	return 0;
}

static int mul_checked(uint64_t v, uint64_t mul, bool overflow, uint64_t *out)
{
	if (overflow || (mul && v > UINT64_MAX / mul))
		return -ERANGE;
	*out = v * mul;
	return 0;
}

int conf_parse_size(const char *s, uint64_t *out)
{
	static const char units[] = "kmgt";
	const char *end, *u;
	uint64_t v, mul = 1;
	bool overflow;

	if (!s || parse_digits(s, &v, &end, &overflow))
		return -EINVAL;
	if (*end && (u = strchr(units, tolower((unsigned char)*end))) != NULL) {
		mul = 1ULL << (10 * (u - units + 1));
		end++;
		/* 8M, 8MB and 8MiB all mean 8 MiB. */
		if (strcasecmp(end, "ib") == 0)
			end += 2;
	}
	if (strcasecmp(end, "b") == 0)
		end++;
	if (*end)
		return -EINVAL;
	return mul_checked(v, mul, overflow, out);
}

int conf_parse_duration_ms(const char *s, uint64_t *out)
{
	static const struct {
		const char *unit;
		uint64_t ms;
	} units[] = {
		{ "", SEC_MS },	 { "ms", 1 },		 { "s", SEC_MS },   { "m", 60 * SEC_MS },
		{ "h", 3600 * SEC_MS }, { "d", DAY_MS },
	};
	const char *end;
	uint64_t v;
	bool overflow;
	size_t i;

	if (!s || parse_digits(s, &v, &end, &overflow))
		return -EINVAL;
	for (i = 0; i < sizeof(units) / sizeof(units[0]); i++)
		if (strcasecmp(end, units[i].unit) == 0)
			return mul_checked(v, units[i].ms, overflow, out);
	return -EINVAL;
}

int conf_parse_bool(const char *s, bool *out)
{
	static const char *const yes[] = { "yes", "true", "on", "1" };
	static const char *const no[] = { "no", "false", "off", "0" };
	size_t i;

	if (!s)
		return -EINVAL;
	for (i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
		if (strcasecmp(s, yes[i]) == 0) {
			*out = true;
			return 0;
		}
		if (strcasecmp(s, no[i]) == 0) {
			*out = false;
			return 0;
		}
	}
	return -EINVAL;
}

int conf_parse_uint(const char *s, uint64_t *out)
{
	const char *end;
	bool overflow;

	if (parse_digits(s, out, &end, &overflow) || *end)
		return -EINVAL;
	return overflow ? -ERANGE : 0;
}

int conf_parse_octal(const char *s, uint64_t *out)
{
	uint64_t v = 0;

	if (!*s)
		return -EINVAL;
	for (; *s; s++) {
		if (*s < '0' || *s > '7')
			return -EINVAL;
		if (v > 07777)
			return -ERANGE;
		v = v * 8 + (uint64_t)(*s - '0');
	}
	*out = v;
	return 0;
}

bool conf_valid_name(const char *s)
{
	size_t n = strlen(s), i;

	if (n < 1 || n > 255)
		return false;
	for (i = 0; i < n; i++)
		if ((unsigned char)s[i] <= 0x20 || (unsigned char)s[i] >= 0x7f)
			return false;
	return true;
}

bool conf_valid_host(const char *s)
{
	if (!*s || strlen(s) > 255)
		return false;
	for (; *s; s++)
		if ((unsigned char)*s <= 0x20 || *s == 0x7f || *s == '/')
			return false;
	return true;
}

/* A path made absolute against the working directory, without touching the file. */
int conf_absolute_path(const char *path, char **out)
{
	char cwd[PATH_MAX];
	size_t len;

	if (path[0] == '/') {
		*out = strdup(path);
	} else {
		if (!getcwd(cwd, sizeof(cwd)))
			return -errno;
		while (path[0] == '.' && path[1] == '/')
			path += 2;
		len = strlen(cwd);
		if (asprintf(out, "%s%s%s", cwd, len > 1 ? "/" : "",
			     strcmp(path, ".") ? path : "") < 0)
			*out = NULL;
	}
	if (!*out)
		return -ENOMEM;
	/* A trailing slash names the same directory; drop it so paths compare equal. */
	len = strlen(*out);
	while (len > 1 && (*out)[len - 1] == '/')
		(*out)[--len] = '\0';
	if (len >= PATH_MAX) {
		free(*out);
		*out = NULL;
		return -ENAMETOOLONG;
	}
	return 0;
}
