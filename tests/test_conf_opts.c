/*
 * conf/: -o options, the SOURCE argument, and the size, duration and boolean
 * parsers.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "conf/conf.h"

#include "tests/conf_helpers.h"

static void test_options(void **state)
{
	char err[512], cwd[PATH_MAX], want[PATH_MAX + 16];
	struct conf c, orig;
	size_t i;

	(void)state;
	conf_init(&c);
	assert_int_equal(conf_set_option(&c, "flush_interval", "200ms", err, sizeof(err)), 0);
	assert_int_equal(c.flush_interval_ms, 200);
	assert_int_equal(conf_set_option(&c, "buffer_size", "32M", err, sizeof(err)), 0);
	assert_int_equal(c.buffer_size, 32 << 20);
	assert_int_equal(conf_set_option(&c, "db", "d1", err, sizeof(err)), 0);
	assert_string_equal(c.db, "d1");
	assert_int_equal(conf_set_option(&c, "namespace", "n1", err, sizeof(err)), 0);
	assert_string_equal(c.ns, "n1");
	assert_int_equal(conf_set_option(&c, "store_namespace", "n2", err, sizeof(err)), 0);
	assert_string_equal(c.ns, "n2");
	assert_int_equal(conf_set_option(&c, "store_db", "d2", err, sizeof(err)), 0);
	assert_string_equal(c.db, "d2");
	assert_int_equal(conf_set_option(&c, "log_level", "debug", err, sizeof(err)), 0);
	assert_int_equal(c.log_level, NLOG_DEBUG);
	assert_int_equal(conf_set_option(&c, "log_format", "text", err, sizeof(err)), 0);
	assert_int_equal(c.log_format, CONF_LOG_TEXT);
	assert_int_equal(conf_set_option(&c, "redis_host", "::1", err, sizeof(err)), 0);
	assert_string_equal(c.redis_host, "::1");
	assert_int_equal(conf_set_option(&c, "redis_port", "6390", err, sizeof(err)), 0);
	assert_int_equal(c.redis_port, 6390);
	assert_int_equal(conf_set_option(&c, "redis_password", "pw", err, sizeof(err)), 0);
	assert_string_equal(c.redis_password, "pw");
	assert_int_equal(conf_set_option(&c, "mount_max_threads", "4", err, sizeof(err)), 0);
	assert_int_equal(c.max_threads, 4);
	/* "timeout" exists only in [redis]. */
	assert_int_equal(conf_set_option(&c, "timeout", "3s", err, sizeof(err)), 0);
	assert_int_equal(c.redis_timeout_ms, 3000);
	/* A flag without a value switches a boolean on; other keys need one. */
	assert_int_equal(conf_set_option(&c, "allow_other", NULL, err, sizeof(err)), 0);
	assert_true(c.allow_other);
	assert_int_equal(conf_set_option(&c, "mount_allow_other", "no", err, sizeof(err)), 0);
	assert_false(c.allow_other);
	/* A relative log file is taken against the working directory here. */
	assert_int_equal(conf_set_option(&c, "log_file", "./x.log", err, sizeof(err)), 0);
	assert_non_null(getcwd(cwd, sizeof(cwd)));
	snprintf(want, sizeof(want), "%s/x.log", strcmp(cwd, "/") ? cwd : "");
	assert_string_equal(c.log_file, want);

	/* Every key is reachable as SECTION_KEY. */
	for (i = 0; i < sizeof(all_keys) / sizeof(all_keys[0]); i++) {
		char opt[64];
		const char *colon = strchr(all_keys[i], ':');

		snprintf(opt, sizeof(opt), "%.*s_%s", (int)(colon - all_keys[i]), all_keys[i],
			 colon + 1);
		assert_int_equal(conf_set_option(&c, opt, NULL, err, sizeof(err)) == -ENOENT, 0);
	}

	assert_int_equal(conf_copy(&orig, &c), 0);
	assert_int_equal(conf_set_option(&c, "flush_intervall", "1s", err, sizeof(err)), -ENOENT);
	assert_string_equal(err, "option flush_intervall: unknown option");
	assert_int_equal(conf_set_option(&c, "mount_flush_interval", "1s", err, sizeof(err)),
			 -ENOENT);
	assert_string_equal(err, "option mount_flush_interval: unknown option");
	assert_int_equal(conf_set_option(&c, "store_", "1s", err, sizeof(err)), -ENOENT);
	assert_int_equal(conf_set_option(&c, "", "1s", err, sizeof(err)), -EINVAL);
	assert_int_equal(conf_set_option(&c, NULL, "1s", err, sizeof(err)), -EINVAL);
	assert_int_equal(conf_set_option(&c, "config", "/etc/x", err, sizeof(err)), -ENOENT);
	assert_int_equal(conf_set_option(&c, "flush_interval", "fast", err, sizeof(err)), -EINVAL);
	assert_string_equal(err,
			    "option flush_interval: bad value 'fast' for flush_interval in "
			    "section [store]: expected a duration such as 200ms, 1s, 2m, 1h or 1d");
	assert_int_equal(conf_set_option(&c, "flush_interval", NULL, err, sizeof(err)), -EINVAL);
	assert_string_equal(err, "option flush_interval: missing value for flush_interval in "
				 "section [store]");
	assert_int_equal(conf_set_option(&c, "redis_port", "0", err, sizeof(err)), -ERANGE);
	assert_int_equal(conf_set_option(&c, "store_db", "bad name", err, sizeof(err)), -EINVAL);
	/* A control character in a value does not split the message. */
	assert_int_equal(conf_set_option(&c, "log_level", "x\ny", err, sizeof(err)), -EINVAL);
	assert_null(strchr(err, '\n'));
	assert_conf_equal(&c, &orig);
	conf_free(&c);
	conf_free(&orig);
}

static void test_source_paths(void **state)
{
	char err[512], want[PATH_MAX + 64], dir[PATH_MAX], cwd[PATH_MAX];
	struct conf c, orig;

	(void)state;
	init_custom(&c);
	c.backend = CONF_BACKEND_REDIS;
	snprintf(dir, sizeof(dir), "%s/adir", tmpdir);
	assert_int_equal(mkdir(dir, 0700), 0);

	/* An existing directory is resolved. */
	snprintf(want, sizeof(want), "%s/./adir/../adir/", tmpdir);
	assert_int_equal(conf_set_source(&c, want, err, sizeof(err)), 0);
	assert_int_equal(c.backend, CONF_BACKEND_FS);
	assert_string_equal(c.data_dir, dir);

	/* A missing one is made absolute, not created. */
	assert_non_null(getcwd(cwd, sizeof(cwd)));
	assert_int_equal(conf_set_source(&c, "no-such-dir-nadbfs-test/", err, sizeof(err)), 0);
	snprintf(want, sizeof(want), "%s/no-such-dir-nadbfs-test", strcmp(cwd, "/") ? cwd : "");
	assert_string_equal(c.data_dir, want);
	assert_int_equal(access("no-such-dir-nadbfs-test", F_OK), -1);
	assert_int_equal(conf_set_source(&c, "/nonexistent-nadbfs/kv", err, sizeof(err)), 0);
	assert_string_equal(c.data_dir, "/nonexistent-nadbfs/kv");

	assert_int_equal(conf_copy(&orig, &c), 0);
	/* A file is not a directory. */
	snprintf(want, sizeof(want), "%s", write_conf("x"));
	assert_int_equal(conf_set_source(&c, want, err, sizeof(err)), -ENOTDIR);
	strcat(want, ": not a directory");
	assert_string_equal(err, want);
	assert_int_equal(conf_set_source(&c, "", err, sizeof(err)), -EINVAL);
	assert_string_equal(err, "source: empty");
	assert_int_equal(conf_set_source(&c, NULL, err, sizeof(err)), -EINVAL);
	assert_conf_equal(&c, &orig);
	conf_free(&c);
	conf_free(&orig);
}

static void test_source_redis(void **state)
{
	char err[512];
	struct conf c;

	(void)state;
	init_custom(&c);
	assert_int_equal(conf_set(&c, "redis", "socket", "/run/r.sock", err, sizeof(err)), 0);
	assert_int_equal(conf_set(&c, "redis", "database", "5", err, sizeof(err)), 0);

	/* Only the host: port, database and password keep what the file said. */
	assert_int_equal(conf_set_source(&c, "redis://cache.local", err, sizeof(err)), 0);
	assert_int_equal(c.backend, CONF_BACKEND_REDIS);
	assert_string_equal(c.redis_host, "cache.local");
	assert_int_equal(c.redis_port, 7000);
	assert_int_equal(c.redis_database, 5);
	assert_string_equal(c.redis_password, "s3cret");
	assert_null(c.redis_socket);
	/* The data directory is not the backend's business any more, but stays. */
	assert_string_equal(c.data_dir, "/srv/data");

	assert_int_equal(conf_set_source(&c, "redis://:pa%40ss@10.0.0.5:6380/3", err, sizeof(err)),
			 0);
	assert_string_equal(c.redis_host, "10.0.0.5");
	assert_int_equal(c.redis_port, 6380);
	assert_int_equal(c.redis_database, 3);
	assert_string_equal(c.redis_password, "pa@ss");
	/* The last '@' ends the password. */
	assert_int_equal(conf_set_source(&c, "REDIS://:a@b/c:d@[::1]:6381/", err, sizeof(err)), 0);
	assert_string_equal(c.redis_password, "a@b/c:d");
	assert_string_equal(c.redis_host, "::1");
	assert_int_equal(c.redis_port, 6381);
	assert_int_equal(c.redis_database, 3);

	assert_int_equal(conf_set_source(&c, "redis+unix:///var/run/redis.sock?db=2", err,
					 sizeof(err)),
			 0);
	assert_string_equal(c.redis_socket, "/var/run/redis.sock");
	assert_int_equal(c.redis_database, 2);
	assert_int_equal(conf_set_source(&c, "redis+unix:///tmp/r.sock", err, sizeof(err)), 0);
	assert_string_equal(c.redis_socket, "/tmp/r.sock");
	assert_int_equal(c.redis_database, 2);

	/* Switching back to a directory. */
	assert_int_equal(conf_set_source(&c, "/srv/other", err, sizeof(err)), 0);
	assert_int_equal(c.backend, CONF_BACKEND_FS);
	assert_string_equal(c.data_dir, "/srv/other");
	conf_free(&c);
}

static void test_source_bad_urls(void **state)
{
	static const struct {
		const char *src;
		const char *msg;
	} bad[] = {
		{ "redis://", "redis://: missing host" },
		{ "redis://host:0", "redis://host:0: bad port, expected 1 to 65535" },
		{ "redis://host:65536", "redis://host:65536: bad port, expected 1 to 65535" },
		{ "redis://host:", "redis://host:: bad port, expected 1 to 65535" },
		{ "redis://host:6x/1", "redis://host:6x/1: bad port, expected 1 to 65535" },
		{ "redis://host/x", "redis://host/x: bad database number after '/'" },
		{ "redis://host/-1", "redis://host/-1: bad database number after '/'" },
		{ "redis://host/1/2", "redis://host/1/2: bad database number after '/'" },
		{ "redis://host?db=1", "redis://host?db=1: query parameters are not supported with "
				       "redis://" },
		{ "redis://[::1", "redis://[::1: bad IPv6 address, expected [ADDRESS]" },
		{ "redis://[::1]x", "redis://[::1]x: unexpected text after the host" },
		{ "redis://user:topsecret@host", "redis://***@host: user names are not supported, "
						 "use redis://:PASSWORD@HOST" },
		{ "redis://:@host", "redis://***@host: empty password" },
		{ "redis://:top%4secret@host", "redis://***@host: bad %-escape in the password" },
		{ "redis://:topsecret@", "redis://***@: missing host" },
		{ "redis://:topsecret@h:99999",
		  "redis://***@h:99999: bad port, expected 1 to 65535" },
		{ "redis+unix://host/x.sock",
		  "redis+unix://host/x.sock: expected redis+unix:///PATH "
		  "(an absolute path, no host)" },
		{ "redis+unix:///", "redis+unix:///: missing socket path" },
		{ "redis+unix:///r.sock?db=x",
		  "redis+unix:///r.sock?db=x: bad query, expected ?db=N" },
		{ "redis+unix:///r.sock?timeout=1", "redis+unix:///r.sock?timeout=1: bad query, "
						    "expected ?db=N" },
		{ "rediss://host", "rediss://host: unsupported URL scheme, expected redis:// or "
				   "redis+unix://" },
		{ "http://host/x", "http://host/x: unsupported URL scheme, expected redis:// or "
				   "redis+unix://" },
	};
	char err[512], longsock[160];
	struct conf c, orig;
	size_t i;
	int rc;

	(void)state;
	init_custom(&c);
	assert_int_equal(conf_copy(&orig, &c), 0);
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err[0] = '\0';
		rc = conf_set_source(&c, bad[i].src, err, sizeof(err));
		if (rc >= 0 || strcmp(err, bad[i].msg) != 0)
			fail_msg("%s: rc %d, got '%s', want '%s'", bad[i].src, rc, err, bad[i].msg);
		assert_null(strstr(err, "secret"));
		assert_conf_equal(&c, &orig);
	}
	/* A socket path must fit sun_path. */
	snprintf(longsock, sizeof(longsock), "redis+unix:///%0120d", 0);
	assert_int_equal(conf_set_source(&c, longsock, err, sizeof(err)), -ENAMETOOLONG);
	assert_conf_equal(&c, &orig);
	conf_free(&c);
	conf_free(&orig);
}

static void test_parse_size(void **state)
{
	static const struct {
		const char *s;
		int rc;
		uint64_t v;
	} cases[] = {
		{ "0", 0, 0 },
		{ "1", 0, 1 },
		{ "1024", 0, 1024 },
		{ "1B", 0, 1 },
		{ "1b", 0, 1 },
		{ "1K", 0, 1024 },
		{ "1k", 0, 1024 },
		{ "1KB", 0, 1024 },
		{ "1KiB", 0, 1024 },
		{ "1kib", 0, 1024 },
		{ "8M", 0, 8ULL << 20 },
		{ "8mb", 0, 8ULL << 20 },
		{ "2G", 0, 2ULL << 30 },
		{ "3TiB", 0, 3ULL << 40 },
		{ "16777215T", 0, 16777215ULL << 40 },
		{ "18446744073709551615", 0, UINT64_MAX },
		{ "18446744073709551616", -ERANGE, 0 },
		{ "16777216T", -ERANGE, 0 },
		{ "99999999999999999999999K", -ERANGE, 0 },
		{ "", -EINVAL, 0 },
		{ "K", -EINVAL, 0 },
		{ "-1", -EINVAL, 0 },
		{ "+1", -EINVAL, 0 },
		{ " 1", -EINVAL, 0 },
		{ "1 ", -EINVAL, 0 },
		{ "1 K", -EINVAL, 0 },
		{ "1X", -EINVAL, 0 },
		{ "1KX", -EINVAL, 0 },
		{ "1iB", -EINVAL, 0 },
		{ "1KBB", -EINVAL, 0 },
		{ "1P", -EINVAL, 0 },
		{ "1.5M", -EINVAL, 0 },
		{ "0x10", -EINVAL, 0 },
		{ "99999999999999999999999X", -EINVAL, 0 },
	};
	uint64_t v;
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		v = 12345;
		if (conf_parse_size(cases[i].s, &v) != cases[i].rc)
			fail_msg("'%s': want rc %d", cases[i].s, cases[i].rc);
		assert_int_equal(v, cases[i].rc ? 12345 : cases[i].v);
	}
	assert_int_equal(conf_parse_size(NULL, &v), -EINVAL);
}

static void test_parse_duration(void **state)
{
	static const struct {
		const char *s;
		int rc;
		uint64_t v;
	} cases[] = {
		{ "0", 0, 0 },
		{ "5", 0, 5000 },
		{ "200ms", 0, 200 },
		{ "1500ms", 0, 1500 },
		{ "1s", 0, 1000 },
		{ "2m", 0, 120000 },
		{ "1h", 0, 3600000 },
		{ "1d", 0, 86400000 },
		{ "10S", 0, 10000 },
		{ "0ms", 0, 0 },
		{ "18446744073709551615ms", 0, UINT64_MAX },
		{ "18446744073709551615", -ERANGE, 0 },
		{ "213503982334d", 0, 213503982334ULL * 86400000ULL },
		{ "213503982335d", -ERANGE, 0 },
		{ "", -EINVAL, 0 },
		{ "s", -EINVAL, 0 },
		{ "ms", -EINVAL, 0 },
		{ "-1s", -EINVAL, 0 },
		{ "+1s", -EINVAL, 0 },
		{ "1.5s", -EINVAL, 0 },
		{ "1x", -EINVAL, 0 },
		{ "1sec", -EINVAL, 0 },
		{ "1 s", -EINVAL, 0 },
		{ "1s ", -EINVAL, 0 },
		{ "1w", -EINVAL, 0 },
		{ "1y", -EINVAL, 0 },
	};
	uint64_t v;
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		v = 777;
		if (conf_parse_duration_ms(cases[i].s, &v) != cases[i].rc)
			fail_msg("'%s': want rc %d", cases[i].s, cases[i].rc);
		assert_int_equal(v, cases[i].rc ? 777 : cases[i].v);
	}
	assert_int_equal(conf_parse_duration_ms(NULL, &v), -EINVAL);
}

static void test_parse_bool(void **state)
{
	static const char *const yes[] = { "yes", "YES", "true", "True", "on", "1" };
	static const char *const no[] = { "no", "No", "false", "FALSE", "off", "0" };
	static const char *const bad[] = { "", "y", "n", "2", "yes ", " no", "enable", "01" };
	size_t i;
	bool b;

	(void)state;
	for (i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
		b = false;
		assert_int_equal(conf_parse_bool(yes[i], &b), 0);
		assert_true(b);
	}
	for (i = 0; i < sizeof(no) / sizeof(no[0]); i++) {
		b = true;
		assert_int_equal(conf_parse_bool(no[i], &b), 0);
		assert_false(b);
	}
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		b = true;
		assert_int_equal(conf_parse_bool(bad[i], &b), -EINVAL);
		assert_true(b);
	}
	assert_int_equal(conf_parse_bool(NULL, &b), -EINVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_options),
		cmocka_unit_test(test_source_paths),
		cmocka_unit_test(test_source_redis),
		cmocka_unit_test(test_source_bad_urls),
		cmocka_unit_test(test_parse_size),
		cmocka_unit_test(test_parse_duration),
		cmocka_unit_test(test_parse_bool),
	};

	return cmocka_run_group_tests_name("conf_opts", tests, group_setup, group_teardown);
}
