/*
 * The configuration: an INI file (inih), then SOURCE, then -o options, each
 * layer overriding the previous one, all into one plain struct with defaults.
 *
 * Return convention: 0 or a negative errno. Functions that take err/errlen
 * write a one-line human message there on failure: "FILE:LINE: message" for
 * file errors, "option NAME: message" for -o options, "SOURCE: message" for
 * the source argument. On failure the struct is left exactly as it was.
 * Not thread-safe: callers serialize (the daemon swaps whole structs on reload).
 */
#ifndef NADB_CONF_H
#define NADB_CONF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util/log.h"

enum conf_backend { CONF_BACKEND_FS, CONF_BACKEND_REDIS };
enum conf_compression { CONF_COMPRESSION_NONE, CONF_COMPRESSION_ZSTD };
enum conf_log_format { CONF_LOG_AUTO, CONF_LOG_JSON, CONF_LOG_TEXT };

struct conf {
	/* [store] */
	enum conf_backend backend;	/* fs */
	char *data_dir;			/* NULL until SOURCE or the file names it */
	char *db;			/* "default" */
	char *ns;			/* "namespace" key; "default" */
	uint64_t buffer_size;		/* bytes; 8M */
	uint64_t flush_interval_ms;	/* 1s */
	uint64_t backend_timeout_ms;	/* 30s */
	uint64_t max_value_size;	/* bytes; 256M */
	enum conf_compression compression; /* zstd */
	uint64_t compression_min_size;	/* bytes; 1K */
	uint64_t default_ttl_s;		/* 0 = keys never expire */
	uint64_t ttl_sweep_ms;		/* 1s */
	uint64_t query_cache_size;	/* entries; 10000 */
	uint64_t tx_max_bytes;		/* 64M */
	char *backup_dir;		/* NULL: backups/ in the data directory */
	bool close_to_open;		/* no */

	/* [redis] */
	char *redis_host;		/* "127.0.0.1" */
	unsigned redis_port;		/* 6379 */
	char *redis_socket;		/* NULL */
	unsigned redis_database;	/* 0 */
	char *redis_password;		/* NULL; never logged */
	uint64_t redis_timeout_ms;	/* 2s */
	unsigned redis_pool_size;	/* 0 = max_threads */
	char *redis_key_prefix;		/* "nadb" */
	char *redis_spill_dir;		/* NULL: /var/lib/nadbfs/spill */

	/* [mount] */
	bool allow_other;		/* no */
	uint64_t attr_timeout_ms;	/* 1s */
	uint64_t entry_timeout_ms;	/* 1s */
	unsigned max_threads;		/* 16 */
	unsigned ctl_mode;		/* 0600 */
	uint64_t coherence_delay_ms;	/* 1s */

	/* [log] */
	enum log_level log_level;	/* info */
	enum conf_log_format log_format; /* auto: json unless stderr is a terminal */
	char *log_file;			/* NULL: stderr in the foreground, else syslog */
};

/* Fills every field with its default. Cannot fail except on ENOMEM (aborts). */
void conf_init(struct conf *c);
/* Frees owned strings; the struct may be conf_init'ed again. NULL is fine. */
void conf_free(struct conf *c);
/* Deep copy; 0 or -ENOMEM. */
int conf_copy(struct conf *dst, const struct conf *src);

/* Applies an INI file over c. All-or-nothing. */
int conf_load_file(struct conf *c, const char *path, char *err, size_t errlen);
/* Applies one "key = value" of a section, as the file parser does. */
int conf_set(struct conf *c, const char *section, const char *key, const char *value,
	     char *err, size_t errlen);
/*
 * Applies a -o NAME=VALUE option. NAME is a key unique across sections
 * ("flush_interval", "allow_other") or SECTION_KEY ("log_level",
 * "redis_host", "store_db"). -ENOENT with a message for an unknown name.
 */
int conf_set_option(struct conf *c, const char *name, const char *value, char *err,
		    size_t errlen);
/* Does -o NAME name a path (made absolute against the working directory)? */
bool conf_option_is_path(const char *name);
/*
 * path made absolute against the working directory, without touching the
 * file; *out is malloc'ed. 0, -ENOMEM, -ENAMETOOLONG or a getcwd() error.
 */
int conf_absolute_path(const char *path, char **out);
/*
 * Applies the SOURCE argument: a directory path (backend fs, data_dir made
 * absolute), redis://[:PASSWORD@]HOST[:PORT][/DB] or
 * redis+unix:///PATH[?db=N] (backend redis).
 */
int conf_set_source(struct conf *c, const char *source, char *err, size_t errlen);

/* "8M", "1K", "1024", "2G" (binary multiples) -> bytes. 0 or -EINVAL/-ERANGE. */
int conf_parse_size(const char *s, uint64_t *out);
/* "200ms", "1s", "2m", "1h", bare number = seconds -> milliseconds. */
int conf_parse_duration_ms(const char *s, uint64_t *out);
/* "yes/no/true/false/on/off/1/0". */
int conf_parse_bool(const char *s, bool *out);

#endif
