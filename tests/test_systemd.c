/*
 * systemd: the units pass systemd-analyze verify with no complaint, and the
 * daemon speaks the notify protocol: READY=1 only once the mount is live,
 * STOPPING=1 when it stops.
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#include <cmocka.h>

#include "mnt.h"

/* A unit under test: the built file, with ExecStart's daemon replaced by the
 * one just built (verify checks that the program exists). */
static void verify_unit(struct mnt *m, const char *src, const char *name)
{
	char *out = NULL;
	const char *dir = mnt_str(m, "%s/units", m->root);

	assert_int_equal(run_cmd("mkdir -p %s && sed 's|^ExecStart=[^ ]*/nadbfs |ExecStart=%s |' "
				 "%s > %s/%s",
				 shq(m, dir), nadbfs_bin(), shq(m, src), shq(m, dir), name),
			 0);
	assert_int_equal(run_cmd_out(&out, "systemd-analyze verify --man=no %s/%s", shq(m, dir),
				     name),
			 0);
	if (out[0])
		fail_msg("systemd-analyze verify %s: %s", name, out);
	free(out);
}

static void test_units_verify(void **state)
{
	struct mnt *m = *state;
	const char *build = getenv("NADBFS_BUILD_ROOT");
	const char *srcdir = getenv("NADBFS_SOURCE_ROOT");

	assert_non_null(build);
	assert_non_null(srcdir);
	mnt_init(m);
	verify_unit(m, mnt_str(m, "%s/systemd/nadbfs@.service", build), "nadbfs@kv.service");
	verify_unit(m, mnt_str(m, "%s/systemd/srv-kv.mount", srcdir), "srv-kv.mount");
}

/* The next datagram on fd within timeout_ms, or NULL. */
static char *recv_msg(int fd, char *buf, size_t len, int timeout_ms)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };
	ssize_t n;

	if (poll(&p, 1, timeout_ms) != 1)
		return NULL;
	n = recv(fd, buf, len - 1, 0);
	if (n < 0)
		return NULL;
	buf[n] = '\0';
	return buf;
}

static void test_notify_ready_after_mount_then_stopping(void **state)
{
	struct mnt *m = *state;
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	char buf[512], *msg;
	int fd;

	mnt_init(m);
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/notify.sock", m->root);
	fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	assert_true(fd >= 0);
	ASSERT_SYS(bind(fd, (struct sockaddr *)&sa, sizeof(sa)));
	setenv("NOTIFY_SOCKET", sa.sun_path, 1);
	mnt_spawn(m, NULL);
	unsetenv("NOTIFY_SOCKET");
	msg = recv_msg(fd, buf, sizeof(buf), 10000);
	assert_non_null(msg);
	assert_non_null(strstr(msg, "READY=1"));
	/* Ready means usable: the mount is there and answers at once. */
	assert_true(is_mounted(m->dir, NULL, 0, NULL, 0));
	put_str(mnt_path(m, "k"), "v");
	assert_file_str(mnt_path(m, "k"), "v");
	mnt_wait_mounted_or_fail(m);
	/* Stops, unmounts, exits 0; the datagram waits in the socket. */
	mnt_stop_signal(m, SIGTERM);
	msg = recv_msg(fd, buf, sizeof(buf), 10000);
	assert_non_null(msg);
	assert_non_null(strstr(msg, "STOPPING=1"));
	close(fd);
}

#define T(f) cmocka_unit_test_setup_teardown(f, mnt_setup, mnt_teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		T(test_units_verify),
		T(test_notify_ready_after_mount_then_stopping),
	};

	return cmocka_run_group_tests_name("systemd", tests, NULL, NULL);
}
