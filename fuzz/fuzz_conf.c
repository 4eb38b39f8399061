/*
 * The configuration file parser (conf_load_file: inih behind our own line
 * reader) on arbitrary bytes, given as a file through a memfd; after a "\n--\n"
 * separator, the rest goes to conf_set_source (the SOURCE argument, URLs with
 * passwords and %-escapes) and line by line to conf_set_option (-o NAME=VALUE).
 * Properties: no crash or leak, all-or-nothing (a failed load leaves the
 * struct as it was), a message on every failure.
 */
#include <errno.h>
#include <stdbool.h>
#include <sys/mman.h>
#include <unistd.h>

#include "conf/conf.h"
#include "fuzz/fuzz.h"

static int memfd = -1;
static char memfd_path[64];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	fuzz_quiet();
	memfd = memfd_create("nadbfs-fuzz-conf", MFD_CLOEXEC);
	FUZZ_CHECK(memfd >= 0);
	snprintf(memfd_path, sizeof(memfd_path), "/proc/self/fd/%d", memfd);
	return 0;
}

/* Two confs are equal in the fields a failed call must not touch. */
static bool same(const struct conf *a, const struct conf *b)
{
#define STREQ(f) ((!a->f && !b->f) || (a->f && b->f && !strcmp(a->f, b->f)))
	return a->backend == b->backend && STREQ(data_dir) && STREQ(db) && STREQ(ns) &&
	       a->buffer_size == b->buffer_size && a->flush_interval_ms == b->flush_interval_ms &&
	       STREQ(redis_host) && a->redis_port == b->redis_port && STREQ(redis_socket) &&
	       STREQ(redis_password) && a->redis_database == b->redis_database &&
	       a->max_threads == b->max_threads && a->log_level == b->log_level && STREQ(log_file);
#undef STREQ
}

static void check_failure(int ret, const struct conf *c, const struct conf *before, const char *err)
{
	if (!ret)
		return;
	FUZZ_CHECK(ret < 0);
	FUZZ_CHECK(same(c, before));
	FUZZ_CHECK(err[0] != '\0');
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const uint8_t *file, *rest;
	size_t flen, rlen;
	struct conf c, before;
	char err[512];
	int ret;

	fuzz_split(data, size, &file, &flen, &rest, &rlen);
	FUZZ_CHECK(ftruncate(memfd, 0) == 0);
	FUZZ_CHECK(pwrite(memfd, file, flen, 0) == (ssize_t)flen);

	conf_init(&c);
	conf_init(&before);
	err[0] = '\0';
	ret = conf_load_file(&c, memfd_path, err, sizeof(err));
	check_failure(ret, &c, &before, err);

	if (rlen) {
		char *s = fuzz_strndup(rest, rlen), *line, *save = NULL;

		conf_free(&before);
		FUZZ_CHECK(conf_copy(&before, &c) == 0);
		err[0] = '\0';
		ret = conf_set_source(&c, s, err, sizeof(err));
		check_failure(ret, &c, &before, err);
		for (line = strtok_r(s, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
			char *eq = strchr(line, '=');

			if (!eq)
				continue;
			*eq = '\0';
			conf_free(&before);
			FUZZ_CHECK(conf_copy(&before, &c) == 0);
			err[0] = '\0';
			ret = conf_set_option(&c, line, eq + 1, err, sizeof(err));
			check_failure(ret, &c, &before, err);
		}
		free(s);
	}
	conf_free(&before);
	conf_free(&c);
	return 0;
}
