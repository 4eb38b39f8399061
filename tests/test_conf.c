/*
 * conf/: defaults, every key, the example file, and every kind of bad value
 * in a file (exact FILE:LINE messages, struct unchanged).
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

static void test_defaults(void **state)
{
	struct conf c;

	(void)state;
	conf_init(&c);
	assert_int_equal(c.backend, CONF_BACKEND_FS);
	assert_null(c.data_dir);
	assert_string_equal(c.db, "default");
	assert_string_equal(c.ns, "default");
	assert_int_equal(c.buffer_size, 8 << 20);
	assert_int_equal(c.flush_interval_ms, 1000);
	assert_int_equal(c.backend_timeout_ms, 30000);
	assert_int_equal(c.max_value_size, 256 << 20);
	assert_int_equal(c.compression, CONF_COMPRESSION_ZSTD);
	assert_int_equal(c.compression_min_size, 1024);
	assert_int_equal(c.default_ttl_s, 0);
	assert_int_equal(c.ttl_sweep_ms, 1000);
	assert_int_equal(c.query_cache_size, 10000);
	assert_int_equal(c.tx_max_bytes, 64 << 20);
	assert_null(c.backup_dir);
	assert_false(c.close_to_open);
	assert_string_equal(c.redis_host, "127.0.0.1");
	assert_int_equal(c.redis_port, 6379);
	assert_null(c.redis_socket);
	assert_int_equal(c.redis_database, 0);
	assert_null(c.redis_password);
	assert_int_equal(c.redis_timeout_ms, 2000);
	assert_int_equal(c.redis_pool_size, 0);
	assert_string_equal(c.redis_key_prefix, "nadb");
	assert_false(c.allow_other);
	assert_int_equal(c.attr_timeout_ms, 1000);
	assert_int_equal(c.entry_timeout_ms, 1000);
	assert_int_equal(c.max_threads, 16);
	assert_int_equal(c.ctl_mode, 0600);
	assert_int_equal(c.coherence_delay_ms, 1000);
	assert_int_equal(c.log_level, NLOG_INFO);
	assert_int_equal(c.log_format, CONF_LOG_AUTO);
	assert_null(c.log_file);
	conf_free(&c);
	conf_free(&c); /* fields were reset: a second free is harmless */
	conf_free(NULL);
}

static void test_copy_is_deep(void **state)
{
	struct conf a, b;

	(void)state;
	init_custom(&a);
	assert_int_equal(conf_copy(&b, &a), 0);
	assert_conf_equal(&a, &b);
	assert_ptr_not_equal(a.db, b.db);
	assert_ptr_not_equal(a.redis_password, b.redis_password);
	conf_free(&a);
	assert_string_equal(b.db, "mydb");
	assert_string_equal(b.log_file, "/var/log/n.log");
	conf_free(&b);
}

static void test_every_key(void **state)
{
	static const char text[] =
		"; every key, none at its default\n"
		"[store]\n"
		"backend = redis\n"
		"data_dir = /var/lib/kv\n"
		"db = app1\n"
		"namespace = tenant:7\n"
		"buffer_size = 16MiB\n"
		"flush_interval = 200ms\n"
		"backend_timeout = 2m\n"
		"max_value_size = 1G\n"
		"compression = none\n"
		"compression_min_size = 4kb\n"
		"default_ttl = 1d\n"
		"ttl_sweep = 500ms\n"
		"query_cache_size = 0\n"
		"tx_max_bytes = 1T\n"
		"backup_dir = /var/backups/kv\n"
		"close_to_open = yes\n"
		"[redis]\n"
		"host = redis.example.org\n"
		"port = 6380\n"
		"socket = /run/redis/redis.sock\n"
		"database = 3\n"
		"password = p@ss:w0rd=x\n"
		"timeout = 5\n"
		"pool_size = 8\n"
		"key_prefix = nadbfs-test\n"
		"[mount]\n"
		"allow_other = on\n"
		"attr_timeout = 0\n"
		"entry_timeout = 3s\n"
		"max_threads = 64\n"
		"ctl_mode = 660\n"
		"coherence_delay = 1h\n"
		"[log]\n"
		"level = warning\n"
		"format = text\n"
		"file = /var/log/nadbfs.log\n";
	char err[256] = "";
	struct conf c;

	(void)state;
	conf_init(&c);
	assert_int_equal(conf_load_file(&c, write_conf(text), err, sizeof(err)), 0);
	assert_string_equal(err, "");
	assert_int_equal(c.backend, CONF_BACKEND_REDIS);
	assert_string_equal(c.data_dir, "/var/lib/kv");
	assert_string_equal(c.db, "app1");
	assert_string_equal(c.ns, "tenant:7");
	assert_int_equal(c.buffer_size, 16ULL << 20);
	assert_int_equal(c.flush_interval_ms, 200);
	assert_int_equal(c.backend_timeout_ms, 120000);
	assert_int_equal(c.max_value_size, 1ULL << 30);
	assert_int_equal(c.compression, CONF_COMPRESSION_NONE);
	assert_int_equal(c.compression_min_size, 4096);
	assert_int_equal(c.default_ttl_s, 86400);
	assert_int_equal(c.ttl_sweep_ms, 500);
	assert_int_equal(c.query_cache_size, 0);
	assert_int_equal(c.tx_max_bytes, 1ULL << 40);
	assert_string_equal(c.backup_dir, "/var/backups/kv");
	assert_true(c.close_to_open);
	assert_string_equal(c.redis_host, "redis.example.org");
	assert_int_equal(c.redis_port, 6380);
	assert_string_equal(c.redis_socket, "/run/redis/redis.sock");
	assert_int_equal(c.redis_database, 3);
	assert_string_equal(c.redis_password, "p@ss:w0rd=x");
	assert_int_equal(c.redis_timeout_ms, 5000);
	assert_int_equal(c.redis_pool_size, 8);
	assert_string_equal(c.redis_key_prefix, "nadbfs-test");
	assert_true(c.allow_other);
	assert_int_equal(c.attr_timeout_ms, 0);
	assert_int_equal(c.entry_timeout_ms, 3000);
	assert_int_equal(c.max_threads, 64);
	assert_int_equal(c.ctl_mode, 0660);
	assert_int_equal(c.coherence_delay_ms, 3600000);
	assert_int_equal(c.log_level, NLOG_WARN);
	assert_int_equal(c.log_format, CONF_LOG_TEXT);
	assert_string_equal(c.log_file, "/var/log/nadbfs.log");

	/* An empty value unsets an optional key; the rest stays. */
	assert_int_equal(conf_load_file(&c, write_conf("[redis]\npassword =\nsocket=\n"), err,
					sizeof(err)),
			 0);
	assert_null(c.redis_password);
	assert_null(c.redis_socket);
	assert_string_equal(c.redis_host, "redis.example.org");
	conf_free(&c);
}

static char *read_all(const char *path)
{
	FILE *f = fopen(path, "r");
	char *buf;
	long n;

	assert_non_null(f);
	assert_int_equal(fseek(f, 0, SEEK_END), 0);
	n = ftell(f);
	rewind(f);
	buf = calloc(1, (size_t)n + 1);
	assert_non_null(buf);
	assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
	fclose(f);
	return buf;
}

static void test_example_file(void **state)
{
	const char *root = getenv("NADBFS_SOURCE_ROOT");
	char path[PATH_MAX], err[256] = "", needle[64], *text, *p, *q;
	struct conf c, defaults;
	size_t i;

	(void)state;
	if (!root) {
		print_message("NADBFS_SOURCE_ROOT is not set; run through meson test\n");
		skip();
	}
	snprintf(path, sizeof(path), "%s/conf/nadbfs.conf.example", root);
	conf_init(&c);
	conf_init(&defaults);
	assert_int_equal(conf_load_file(&c, path, err, sizeof(err)), 0);
	assert_conf_equal(&c, &defaults);

	/* Every key is documented, in its section, as a commented-out line. */
	text = read_all(path);
	for (i = 0; i < sizeof(all_keys) / sizeof(all_keys[0]); i++) {
		const char *colon = strchr(all_keys[i], ':');
		char section[20];

		snprintf(section, sizeof(section), "\n[%.*s]\n", (int)(colon - all_keys[i]),
			 all_keys[i]);
		snprintf(needle, sizeof(needle), "\n;%s =", colon + 1);
		p = strstr(text, section);
		assert_non_null(p);
		q = strstr(p, needle);
		if (!q)
			fail_msg("%s is not documented in the example", all_keys[i]);
		/* ...and before the next section starts. */
		p = strchr(p + strlen(section), '[');
		while (p && p[-1] != '\n')
			p = strchr(p + 1, '[');
		assert_true(!p || q < p);
	}

	/* The example values themselves are valid once uncommented. */
	for (p = text; (p = strstr(p, "\n;")) != NULL; p++)
		p[1] = ' ';
	assert_int_equal(conf_load_file(&c, write_conf(text), err, sizeof(err)), 0);
	assert_string_equal(c.data_dir, "/var/lib/nadbfs");
	assert_string_equal(c.redis_socket, "/run/redis/redis.sock");
	free(text);
	conf_free(&c);
	conf_free(&defaults);
}

struct bad_case {
	const char *section;
	const char *key;
	const char *value;
	int rc;
	const char *why;
	const char *shown;	/* the value as the message shows it, if shortened */
};

static const struct bad_case bad_cases[] = {
	{ "store", "backend", "ftp", -EINVAL, "expected one of fs, redis", NULL },
	{ "store", "data_dir", "relative/dir", -EINVAL, "must be an absolute path", NULL },
	{ "store", "db", "a b", -EINVAL, "must be 1 to 255 printable characters without spaces",
	  NULL },
	{ "store", "namespace", "caf\xc3\xa9", -EINVAL,
	  "must be 1 to 255 printable characters without spaces", NULL },
	{ "store", "buffer_size", "63K", -ERANGE, "must be at least 64K", NULL },
	{ "store", "buffer_size", "8X", -EINVAL, "expected a size such as 64K, 8M or 1G", NULL },
	{ "store", "buffer_size", "-1", -EINVAL, "expected a size such as 64K, 8M or 1G", NULL },
	{ "store", "buffer_size", "1.5M", -EINVAL, "expected a size such as 64K, 8M or 1G", NULL },
	{ "store", "buffer_size", "99999999999999999999", -ERANGE, "is too large", NULL },
	{ "store", "buffer_size", "16777216T", -ERANGE, "is too large", NULL },
	{ "store", "flush_interval", "9ms", -ERANGE, "must be between 10ms and 365d", NULL },
	{ "store", "flush_interval", "0", -ERANGE, "must be between 10ms and 365d", NULL },
	{ "store", "flush_interval", "366d", -ERANGE, "must be between 10ms and 365d", NULL },
	{ "store", "flush_interval", "1.5s", -EINVAL,
	  "expected a duration such as 200ms, 1s, 2m, 1h or 1d", NULL },
	{ "store", "backend_timeout", "0s", -ERANGE, "must be between 1ms and 365d", NULL },
	{ "store", "max_value_size", "0", -ERANGE, "must be at least 1 byte", NULL },
	{ "store", "compression", "lz4", -EINVAL, "expected one of zstd, none", NULL },
	{ "store", "compression_min_size", "small", -EINVAL,
	  "expected a size such as 64K, 8M or 1G", NULL },
	{ "store", "default_ttl", "1500ms", -EINVAL,
	  "expected a whole number of seconds such as 0, 30, 2h or 1d", NULL },
	{ "store", "default_ttl", "-5", -EINVAL,
	  "expected a whole number of seconds such as 0, 30, 2h or 1d", NULL },
	{ "store", "ttl_sweep", "0", -ERANGE, "must be between 10ms and 365d", NULL },
	{ "store", "query_cache_size", "10K", -EINVAL, "expected a whole number", NULL },
	{ "store", "query_cache_size", "1073741825", -ERANGE, "must be at most 1073741824 entries",
	  NULL },
	{ "store", "tx_max_bytes", "0", -ERANGE, "must be at least 1 byte", NULL },
	{ "store", "backup_dir", "backups", -EINVAL, "must be an absolute path", NULL },
	{ "store", "close_to_open", "maybe", -EINVAL,
	  "expected yes, no, true, false, on, off, 1 or 0", NULL },
	{ "redis", "host", "", -EINVAL, "expected a host name or address", NULL },
	{ "redis", "host", "a b", -EINVAL, "expected a host name or address", NULL },
	{ "redis", "port", "0", -ERANGE, "must be between 1 and 65535", NULL },
	{ "redis", "port", "65536", -ERANGE, "must be between 1 and 65535", NULL },
	{ "redis", "port", "-1", -EINVAL, "expected a whole number", NULL },
	{ "redis", "port", "80x", -EINVAL, "expected a whole number", NULL },
	{ "redis", "port", "999999999999999999999", -ERANGE, "is too large", NULL },
	{ "redis", "socket", "redis.sock", -EINVAL, "must be an absolute path of at most 107 bytes",
	  NULL },
	{ "redis", "socket",
	  "/run/xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
	  "xxxxxxxxxxxxxxxxxxxxxxxxxxxx",
	  -ENAMETOOLONG, "must be an absolute path of at most 107 bytes",
	  "/run/xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx..." },
	{ "redis", "database", "-1", -EINVAL, "expected a whole number", NULL },
	{ "redis", "database", "2147483648", -ERANGE, "must be between 0 and 2147483647", NULL },
	{ "redis", "timeout", "0", -ERANGE, "must be between 1ms and 365d", NULL },
	{ "redis", "pool_size", "1025", -ERANGE, "must be between 0 and 1024", NULL },
	{ "redis", "key_prefix", "", -EINVAL,
	  "must be 1 to 255 printable characters without spaces", NULL },
	{ "mount", "allow_other", "2", -EINVAL, "expected yes, no, true, false, on, off, 1 or 0",
	  NULL },
	{ "mount", "attr_timeout", "1y", -EINVAL,
	  "expected a duration such as 200ms, 1s, 2m, 1h or 1d", NULL },
	{ "mount", "entry_timeout", "", -EINVAL,
	  "expected a duration such as 200ms, 1s, 2m, 1h or 1d", NULL },
	{ "mount", "max_threads", "0", -ERANGE, "must be between 1 and 1024", NULL },
	{ "mount", "max_threads", "1025", -ERANGE, "must be between 1 and 1024", NULL },
	{ "mount", "ctl_mode", "0800", -EINVAL, "expected an octal mode such as 0600", NULL },
	{ "mount", "ctl_mode", "0x1ff", -EINVAL, "expected an octal mode such as 0600", NULL },
	{ "mount", "ctl_mode", "-600", -EINVAL, "expected an octal mode such as 0600", NULL },
	{ "mount", "ctl_mode", "01000", -ERANGE, "must be between 0 and 0777", NULL },
	{ "mount", "coherence_delay", "soon", -EINVAL,
	  "expected a duration such as 200ms, 1s, 2m, 1h or 1d", NULL },
	{ "log", "level", "verbose", -EINVAL, "expected one of debug, info, warn, warning, error",
	  NULL },
	{ "log", "format", "xml", -EINVAL, "expected one of json, text, auto", NULL },
	{ "log", "file", "nadbfs.log", -EINVAL, "must be an absolute path", NULL },
};

/*
 * Each bad value, on line 5 of a file whose line 3 is valid: the message is
 * exact, and neither line 3 nor anything else reaches the struct.
 */
static void test_bad_values(void **state)
{
	char text[512], want[PATH_MAX + 512], err[PATH_MAX + 512], path[PATH_MAX];
	struct conf c, orig;
	size_t i;
	int rc;

	(void)state;
	init_custom(&c);
	assert_int_equal(conf_copy(&orig, &c), 0);
	for (i = 0; i < sizeof(bad_cases) / sizeof(bad_cases[0]); i++) {
		const struct bad_case *b = &bad_cases[i];

		snprintf(text, sizeof(text),
			 "# line 1\n[store]\nbuffer_size = 16M\n"
			 "[%s]\n%s = %s\n[log]\nlevel = debug\n",
			 b->section, b->key, b->value);
		snprintf(path, sizeof(path), "%s", write_conf(text));
		snprintf(want, sizeof(want), "%s:5: bad value '%s' for %s in section [%s]: %s",
			 path, b->shown ? b->shown : b->value, b->key, b->section, b->why);
		err[0] = '\0';
		rc = conf_load_file(&c, path, err, sizeof(err));
		if (rc != b->rc || strcmp(err, want) != 0)
			fail_msg("case %zu: rc %d (want %d)\n got: %s\nwant: %s", i, rc, b->rc, err,
				 want);
		assert_conf_equal(&c, &orig);

		/* conf_set says the same without the position, and changes nothing too. */
		rc = conf_set(&c, b->section, b->key, b->value, err, sizeof(err));
		assert_int_equal(rc, b->rc);
		assert_string_equal(err, strstr(want, ":5: ") + 4);
		assert_conf_equal(&c, &orig);
	}
	conf_free(&c);
	conf_free(&orig);
}

static void expect_file_error(const char *text, int want_rc, int line, const char *msg)
{
	char want[PATH_MAX + 512], err[PATH_MAX + 512] = "", path[PATH_MAX];
	struct conf c, orig;

	init_custom(&c);
	assert_int_equal(conf_copy(&orig, &c), 0);
	snprintf(path, sizeof(path), "%s", write_conf(text));
	if (line)
		snprintf(want, sizeof(want), "%s:%d: %s", path, line, msg);
	else
		snprintf(want, sizeof(want), "%s: %s", path, msg);
	assert_int_equal(conf_load_file(&c, path, err, sizeof(err)), want_rc);
	assert_string_equal(err, want);
	assert_conf_equal(&c, &orig);
	conf_free(&c);
	conf_free(&orig);
}

static void test_unknown_names(void **state)
{
	(void)state;
	expect_file_error("[store]\nbuffer_size = 16M\n\n\n\n\nflush_intervall = 2s\n", -EINVAL, 7,
			  "unknown key 'flush_intervall' in section [store]");
	/* A key of another section is unknown where it is. */
	expect_file_error("[redis]\nlevel = debug\n", -EINVAL, 2,
			  "unknown key 'level' in section [redis]");
	expect_file_error("[store]\ndb = x\n[stor]\ndb = y\n", -EINVAL, 3,
			  "unknown section [stor]");
	/* Even without keys in it, and whatever case. */
	expect_file_error("[Store]\n", -EINVAL, 1, "unknown section [Store]");
	expect_file_error("[log]\nlevel = info\n[ log ]\n", -EINVAL, 3, "unknown section [ log ]");
	expect_file_error("; top\ndb = x\n[store]\n", -EINVAL, 2,
			  "key 'db' is outside of any section");
}

static void test_syntax_errors(void **state)
{
	(void)state;
	expect_file_error("[store]\ndb = x\nthis is not a key\n", -EINVAL, 3,
			  "syntax error: expected [section] or key = value");
	expect_file_error("[store\ndb = x\n", -EINVAL, 1,
			  "syntax error: expected [section] or key = value");
	/* A syntax error before a bad value is the one reported. */
	expect_file_error("[store]\nnonsense\nbuffer_size = 1\n", -EINVAL, 2,
			  "syntax error: expected [section] or key = value");
	expect_file_error("[store]\nbuffer_size = 1\nnonsense\n", -ERANGE, 2,
			  "bad value '1' for buffer_size in section [store]: must be at least 64K");
}

static void test_nul_byte(void **state)
{
	static const char text[] = "[store]\ndb = a\0b\n";
	char err[PATH_MAX + 64], want[PATH_MAX + 64], path[PATH_MAX];
	struct conf c;

	(void)state;
	conf_init(&c);
	snprintf(path, sizeof(path), "%s", write_conf_n(text, sizeof(text) - 1));
	snprintf(want, sizeof(want), "%s:2: line contains a NUL byte", path);
	assert_int_equal(conf_load_file(&c, path, err, sizeof(err)), -EINVAL);
	assert_string_equal(err, want);
	assert_string_equal(c.db, "default");
	conf_free(&c);
}

static void test_long_lines(void **state)
{
	char text[1024], line[256], err[256];
	struct conf c;

	(void)state;
	/* 199 bytes plus the newline: the longest line accepted. */
	memset(line, 'x', 198);
	line[0] = '#';
	line[198] = '\0';
	snprintf(text, sizeof(text), "[store]\n%sy\ndb = ok\n", line);
	conf_init(&c);
	assert_int_equal(conf_load_file(&c, write_conf(text), err, sizeof(err)), 0);
	assert_string_equal(c.db, "ok");
	/* Also without a final newline. */
	snprintf(text, sizeof(text), "[store]\ndb = ok2\n%sy", line);
	assert_int_equal(conf_load_file(&c, write_conf(text), err, sizeof(err)), 0);
	assert_string_equal(c.db, "ok2");
	conf_free(&c);

	/* One more byte is refused, not cut in two. */
	snprintf(text, sizeof(text), "[store]\ndb = x\n%syz\n", line);
	expect_file_error(text, -EINVAL, 3, "line longer than 200 bytes");
	snprintf(text, sizeof(text), "[store]\ndb = x\n%syz", line);
	expect_file_error(text, -EINVAL, 3, "line longer than 200 bytes");
	/* A value whose tail would otherwise be read as a line of its own. */
	memset(line, 'a', 230);
	line[230] = '\0';
	snprintf(text, sizeof(text), "[store]\nnamespace = %s\n", line);
	expect_file_error(text, -EINVAL, 2, "line longer than 200 bytes");
}

static void test_empty_and_missing(void **state)
{
	char err[PATH_MAX + 64], want[PATH_MAX + 64], path[PATH_MAX];
	struct conf c, orig;

	(void)state;
	init_custom(&c);
	assert_int_equal(conf_copy(&orig, &c), 0);
	assert_int_equal(conf_load_file(&c, write_conf(""), err, sizeof(err)), 0);
	assert_conf_equal(&c, &orig);
	assert_int_equal(conf_load_file(&c, write_conf("\n; only\n# comments\n\n[store]\n[log]\n"),
					err, sizeof(err)),
			 0);
	assert_conf_equal(&c, &orig);

	snprintf(path, sizeof(path), "%s/missing.conf", tmpdir);
	snprintf(want, sizeof(want), "%s: cannot read: No such file or directory", path);
	assert_int_equal(conf_load_file(&c, path, err, sizeof(err)), -ENOENT);
	assert_string_equal(err, want);
	assert_conf_equal(&c, &orig);

	snprintf(want, sizeof(want), "%s: cannot read: Is a directory", tmpdir);
	assert_int_equal(conf_load_file(&c, tmpdir, err, sizeof(err)), -EISDIR);
	assert_string_equal(err, want);

	if (geteuid() != 0) {
		snprintf(path, sizeof(path), "%s", write_conf("[store]\n"));
		assert_int_equal(chmod(path, 0), 0);
		snprintf(want, sizeof(want), "%s: cannot read: Permission denied", path);
		assert_int_equal(conf_load_file(&c, path, err, sizeof(err)), -EACCES);
		assert_string_equal(err, want);
	}
	assert_conf_equal(&c, &orig);
	conf_free(&c);
	conf_free(&orig);
}

static void test_file_syntax_details(void **state)
{
	char err[256] = "";
	struct conf c;

	(void)state;
	conf_init(&c);
	/* Indented keys are keys (not continuations), CRLF and a BOM are fine,
	 * inline comments after " ;" are dropped, and the last duplicate wins. */
	assert_int_equal(conf_load_file(&c,
					write_conf("\xef\xbb\xbf[store]\r\n"
						   "buffer_size = 1M\r\n"
						   "    flush_interval = 2s\r\n"
						   "\tdb = first ; a comment\n"
						   "db = second\n"
						   "namespace: ns1\n"
						   "  [log]\n"
						   "level = DEBUG\n"),
					err, sizeof(err)),
			 0);
	assert_string_equal(err, "");
	assert_int_equal(c.buffer_size, 1 << 20);
	assert_int_equal(c.flush_interval_ms, 2000);
	assert_string_equal(c.db, "second");
	assert_string_equal(c.ns, "ns1");
	assert_int_equal(c.log_level, NLOG_DEBUG);
	conf_free(&c);

	/* Without the indentation fix the second line would extend the first key's value. */
	expect_file_error("[store]\nbuffer_size = 1M\n  flush_interval = 5ms\n", -ERANGE, 3,
			  "bad value '5ms' for flush_interval in section [store]: "
			  "must be between 10ms and 365d");
}

static void test_conf_set_direct(void **state)
{
	char err[512], name[300];
	struct conf c;

	(void)state;
	conf_init(&c);
	assert_int_equal(conf_set(&c, "nope", "db", "x", err, sizeof(err)), -EINVAL);
	assert_string_equal(err, "unknown section [nope]");
	assert_int_equal(conf_set(&c, NULL, "db", "x", err, sizeof(err)), -EINVAL);
	assert_string_equal(err, "key 'db' is outside of any section");
	assert_int_equal(conf_set(&c, "store", "db", NULL, err, sizeof(err)), -EINVAL);
	assert_string_equal(err, "missing value for db in section [store]");

	/* Names: 255 bytes fit, 256 do not; too long for a file line, so here. */
	memset(name, 'n', 255);
	name[255] = '\0';
	assert_int_equal(conf_set(&c, "store", "namespace", name, err, sizeof(err)), 0);
	assert_int_equal(strlen(c.ns), 255);
	strcat(name, "n");
	assert_int_equal(conf_set(&c, "store", "namespace", name, err, sizeof(err)), -EINVAL);
	assert_int_equal(strlen(c.ns), 255);
	/* A long value is shortened in the message. */
	assert_non_null(strstr(err, "...' for namespace in section [store]: must be 1 to 255"));
	assert_true(strlen(err) < 200);

	/* A password is never echoed, even in an error. */
	assert_int_equal(conf_set(&c, "redis", "password", "hunter2", err, sizeof(err)), 0);
	assert_string_equal(c.redis_password, "hunter2");
	/* Limits are inclusive. */
	assert_int_equal(conf_set(&c, "store", "buffer_size", "64K", err, sizeof(err)), 0);
	assert_int_equal(conf_set(&c, "store", "flush_interval", "10ms", err, sizeof(err)), 0);
	assert_int_equal(conf_set(&c, "store", "flush_interval", "365d", err, sizeof(err)), 0);
	assert_int_equal(conf_set(&c, "redis", "port", "65535", err, sizeof(err)), 0);
	assert_int_equal(conf_set(&c, "mount", "max_threads", "1024", err, sizeof(err)), 0);
	assert_int_equal(conf_set(&c, "mount", "ctl_mode", "0777", err, sizeof(err)), 0);
	assert_int_equal(c.ctl_mode, 0777);
	assert_int_equal(conf_set(&c, "mount", "ctl_mode", "0", err, sizeof(err)), 0);
	assert_int_equal(c.ctl_mode, 0);
	assert_int_equal(conf_set(&c, "store", "default_ttl", "0", err, sizeof(err)), 0);
	assert_int_equal(c.default_ttl_s, 0);
	assert_int_equal(conf_set(&c, "store", "default_ttl", "90000ms", err, sizeof(err)), 0);
	assert_int_equal(c.default_ttl_s, 90);
	assert_int_equal(conf_set(&c, "store", "backend", "REDIS", err, sizeof(err)), 0);
	assert_int_equal(c.backend, CONF_BACKEND_REDIS);
	assert_int_equal(conf_set(&c, "log", "format", "auto", err, sizeof(err)), 0);
	assert_int_equal(c.log_format, CONF_LOG_AUTO);
	/* No err buffer is fine. */
	assert_int_equal(conf_set(&c, "store", "db", "", NULL, 0), -EINVAL);
	conf_free(&c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_defaults),
		cmocka_unit_test(test_copy_is_deep),
		cmocka_unit_test(test_every_key),
		cmocka_unit_test(test_example_file),
		cmocka_unit_test(test_bad_values),
		cmocka_unit_test(test_unknown_names),
		cmocka_unit_test(test_syntax_errors),
		cmocka_unit_test(test_nul_byte),
		cmocka_unit_test(test_long_lines),
		cmocka_unit_test(test_empty_and_missing),
		cmocka_unit_test(test_file_syntax_details),
		cmocka_unit_test(test_conf_set_direct),
	};

	return cmocka_run_group_tests_name("conf", tests, group_setup, group_teardown);
}
