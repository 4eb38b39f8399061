/*
 * Shared by the conf tests: a private temporary directory for config files,
 * and comparisons of whole configurations.
 */
#ifndef NADB_TESTS_CONF_HELPERS_H
#define NADB_TESTS_CONF_HELPERS_H

#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "conf/conf.h"

static char tmpdir[] = "/tmp/nadbfs-test-conf-XXXXXX";
static char path_buf[PATH_MAX];
static int nfiles;

/* Writes a file in tmpdir; returns its path (valid until the next call). */
static inline const char *write_conf_n(const char *text, size_t len)
{
	FILE *f;

	snprintf(path_buf, sizeof(path_buf), "%s/f%d.conf", tmpdir, nfiles++);
	f = fopen(path_buf, "w");
	assert_non_null(f);
	assert_int_equal(fwrite(text, 1, len, f), len);
	assert_int_equal(fclose(f), 0);
	return path_buf;
}

static inline const char *write_conf(const char *text)
{
	return write_conf_n(text, strlen(text));
}

static inline int group_setup(void **state)
{
	(void)state;
	return mkdtemp(tmpdir) ? 0 : -1;
}

static inline int group_teardown(void **state)
{
	char p[PATH_MAX];
	int i;

	(void)state;
	for (i = 0; i < nfiles; i++) {
		snprintf(p, sizeof(p), "%s/f%d.conf", tmpdir, i);
		unlink(p);
	}
	snprintf(p, sizeof(p), "%s/adir", tmpdir);
	rmdir(p);
	return rmdir(tmpdir);
}

static inline void assert_str_eq_or_null(const char *a, const char *b)
{
	if (!a || !b)
		assert_ptr_equal(a, b);
	else
		assert_string_equal(a, b);
}

static inline void assert_conf_equal(const struct conf *a, const struct conf *b)
{
	assert_int_equal(a->backend, b->backend);
	assert_str_eq_or_null(a->data_dir, b->data_dir);
	assert_str_eq_or_null(a->db, b->db);
	assert_str_eq_or_null(a->ns, b->ns);
	assert_int_equal(a->buffer_size, b->buffer_size);
	assert_int_equal(a->flush_interval_ms, b->flush_interval_ms);
	assert_int_equal(a->backend_timeout_ms, b->backend_timeout_ms);
	assert_int_equal(a->max_value_size, b->max_value_size);
	assert_int_equal(a->compression, b->compression);
	assert_int_equal(a->compression_min_size, b->compression_min_size);
	assert_int_equal(a->default_ttl_s, b->default_ttl_s);
	assert_int_equal(a->ttl_sweep_ms, b->ttl_sweep_ms);
	assert_int_equal(a->query_cache_size, b->query_cache_size);
	assert_int_equal(a->tx_max_bytes, b->tx_max_bytes);
	assert_str_eq_or_null(a->backup_dir, b->backup_dir);
	assert_int_equal(a->close_to_open, b->close_to_open);
	assert_str_eq_or_null(a->redis_host, b->redis_host);
	assert_int_equal(a->redis_port, b->redis_port);
	assert_str_eq_or_null(a->redis_socket, b->redis_socket);
	assert_int_equal(a->redis_database, b->redis_database);
	assert_str_eq_or_null(a->redis_password, b->redis_password);
	assert_int_equal(a->redis_timeout_ms, b->redis_timeout_ms);
	assert_int_equal(a->redis_pool_size, b->redis_pool_size);
	assert_str_eq_or_null(a->redis_key_prefix, b->redis_key_prefix);
	assert_int_equal(a->allow_other, b->allow_other);
	assert_int_equal(a->attr_timeout_ms, b->attr_timeout_ms);
	assert_int_equal(a->entry_timeout_ms, b->entry_timeout_ms);
	assert_int_equal(a->max_threads, b->max_threads);
	assert_int_equal(a->ctl_mode, b->ctl_mode);
	assert_int_equal(a->coherence_delay_ms, b->coherence_delay_ms);
	assert_int_equal(a->log_level, b->log_level);
	assert_int_equal(a->log_format, b->log_format);
	assert_str_eq_or_null(a->log_file, b->log_file);
}

/* A configuration far from the defaults, so "unchanged" means something. */
static inline void init_custom(struct conf *c)
{
	char err[256];

	conf_init(c);
	assert_int_equal(conf_set(c, "store", "db", "mydb", err, sizeof(err)), 0);
	assert_int_equal(conf_set(c, "store", "buffer_size", "32M", err, sizeof(err)), 0);
	assert_int_equal(conf_set(c, "store", "data_dir", "/srv/data", err, sizeof(err)), 0);
	assert_int_equal(conf_set(c, "redis", "password", "s3cret", err, sizeof(err)), 0);
	assert_int_equal(conf_set(c, "redis", "port", "7000", err, sizeof(err)), 0);
	assert_int_equal(conf_set(c, "mount", "ctl_mode", "0640", err, sizeof(err)), 0);
	assert_int_equal(conf_set(c, "log", "file", "/var/log/n.log", err, sizeof(err)), 0);
}


/* Every key of every section, as SECTION:KEY. */
static const char *const all_keys[] = {
	"store:backend", "store:data_dir", "store:db", "store:namespace", "store:buffer_size",
	"store:flush_interval", "store:backend_timeout", "store:max_value_size",
	"store:compression", "store:compression_min_size", "store:default_ttl", "store:ttl_sweep",
	"store:query_cache_size", "store:tx_max_bytes", "store:backup_dir", "store:close_to_open",
	"redis:host", "redis:port", "redis:socket", "redis:database", "redis:password",
	"redis:timeout", "redis:pool_size", "redis:key_prefix", "mount:allow_other",
	"mount:attr_timeout", "mount:entry_timeout", "mount:max_threads", "mount:ctl_mode",
	"mount:coherence_delay", "log:level", "log:format", "log:file",
};

#endif
