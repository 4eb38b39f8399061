/* Two mounts of one store on one private redis-server: see pair.h. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "tests/pair.h"
#include "tests/redis_server.h"

int pair_setup(void **state)
{
	struct pair *p = calloc(1, sizeof(*p));

	*state = p;
	return p ? 0 : -1;
}

int pair_teardown(void **state)
{
	struct pair *p = *state;

	if (p) {
		/* b first: it does not own the tree or the server. */
		mnt_cleanup(&p->b);
		mnt_cleanup(&p->a);
		free(p);
	}
	return 0;
}

struct pair *start_pair(void **state, const char *opts)
{
	struct pair *p = *state;

	p->a.backend = MNT_BACKEND_REDIS;
	mnt_start(&p->a, opts);
	mnt_init_shared(&p->b, &p->a, "mnt2");
	mnt_start(&p->b, opts);
	return p;
}

void stop_pair(struct pair *p)
{
	mnt_stop(&p->b);
	mnt_stop(&p->a);
}

void await_flushing(struct pair *p, const char *path, const char *want)
{
	int64_t deadline = now_ms() + CATCH_UP_MS;
	char *got = NULL;

	for (;;) {
		if (p && p->a.pid > 0)
			flush_all(&p->a);
		if (p && p->b.pid > 0)
			flush_all(&p->b);
		got = read_file(path, NULL);
		if (want ? got && !strcmp(got, want) : !got && errno == ENOENT)
			break;
		if (now_ms() > deadline)
			fail_msg("%s: want %s, have %s (%s)", path, want ? want : "no file",
				 got ? got : "nothing", got ? "" : strerror(errno));
		free(got);
		usleep(10000);
	}
	free(got);
}

void await_file(const char *path, const char *want)
{
	await_flushing(NULL, path, want);
}

bool listed(const char *dir, const char *name)
{
	char *out = NULL, line[300];
	bool found;

	/* One name per line, between newlines. */
	run_cmd_out(&out, "echo; ls -1a '%s'", dir);
	snprintf(line, sizeof(line), "\n%s\n", name);
	found = out && strstr(out, line);
	free(out);
	return found;
}

void await_listed(const char *dir, const char *name, bool want)
{
	int64_t deadline = now_ms() + CATCH_UP_MS;

	while (listed(dir, name) != want) {
		if (now_ms() > deadline)
			fail_msg("%s: %s still %s", dir, name, want ? "missing" : "listed");
		usleep(10000);
	}
}

void await_names(struct mnt *m, const char *dir, const char *want)
{
	int64_t deadline = now_ms() + CATCH_UP_MS;

	while (strcmp(mnt_ls(m, dir), want)) {
		if (now_ms() > deadline)
			fail_msg("%s: %s, want %s", dir, mnt_ls(m, dir), want);
		usleep(10000);
	}
}

void flush_all(struct mnt *m)
{
	assert_int_equal(run_cmd("%s -m '%s' flush >/dev/null", nadbctl_bin(), m->dir), 0);
}

void flush_mount(struct mnt *m, const char *key)
{
	int fd = open(mnt_path(m, "%s", key), O_RDONLY);

	ASSERT_SYS(fd);
	ASSERT_SYS(fsync(fd));
	close(fd);
}

const char *rcli(struct mnt *m, const char *fmt, const char *arg)
{
	char *out = redis_cli(m->redis, fmt, arg);
	const char *ret;

	assert_non_null(out);
	out[strcspn(out, "\r\n")] = '\0';
	ret = mnt_str(m, "%s", out);
	free(out);
	return ret;
}
