/*
 * systemd: the units pass systemd-analyze verify with no complaint, and the
 * daemon speaks the notify protocol: READY=1 only once the mount is live,
 * STOPPING=1 when it stops.
 */
#include <errno.h>
#include <stdbool.h>
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

/* Every value of key in the unit text (one per line, "" after the last),
 * joined by '\n'; "" when absent. Owned by m. */
static const char *unit_values(struct mnt *m, const char *text, const char *key)
{
	size_t klen = strlen(key);
	const char *out = "";

	for (const char *l = text; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL) {
		const char *end = strchr(l, '\n');
		int len = end ? (int)(end - l) : (int)strlen(l);

		if (strncmp(l, key, klen) == 0 && l[klen] == '=')
			out = mnt_str(m, "%s%.*s\n", out, len - (int)klen - 1, l + klen + 1);
	}
	return out;
}

static bool truthy(const char *v)
{
	return *v && strcmp(v, "no\n") && strcmp(v, "false\n") && strcmp(v, "0\n") &&
	       strcmp(v, "off\n") && strcmp(v, "\n");
}

/*
 * The installed service unit has what the daemon's life cycle needs:
 * Type=notify with the daemon in the foreground, ExecReload sending SIGHUP,
 * Restart=on-failure, time to flush on stop, /dev/fuse allowed, and no
 * option that puts the daemon in a mount namespace of its own (the mount
 * would be invisible outside it).
 */
static void test_installed_unit_properties(void **state)
{
	struct mnt *m = *state;
	static const char *const private_ns[] = {
		"PrivateTmp", "ProtectSystem", "ProtectHome", "PrivateDevices", "PrivateMounts",
		"MountFlags", "ReadOnlyPaths", "ReadWritePaths", "InaccessiblePaths",
		"ExecPaths", "NoExecPaths", "TemporaryFileSystem", "BindPaths",
		"BindReadOnlyPaths", "ProtectKernelTunables", "ProtectKernelModules",
		"ProtectKernelLogs", "ProtectControlGroups", "ProtectProc", "ProcSubset",
		"RootDirectory", "RootImage", "PrivateUsers", "PrivateIPC", "ProtectHostname",
		"MountImages", "ExtensionImages", "NetworkNamespacePath",
	};
	const char *build = getenv("NADBFS_BUILD_ROOT");
	const char *dest, *v;
	char *text, *path = NULL;

	assert_non_null(build);
	mnt_init(m);
	dest = mnt_str(m, "%s/inst", m->root);
	assert_int_equal(run_cmd("meson install -C %s --no-rebuild --quiet --destdir %s "
				 ">/dev/null",
				 shq(m, build), shq(m, dest)),
			 0);
	assert_int_equal(run_cmd_out(&path, "find %s -name 'nadbfs@.service' -printf %%p",
				     shq(m, dest)),
			 0);
	if (!path[0])
		fail_msg("meson install put no nadbfs@.service under %s", dest);
	text = read_file(path, NULL);
	assert_non_null(text);
	free(path);

	assert_string_equal(unit_values(m, text, "Type"), "notify\n");
	v = unit_values(m, text, "ExecStart");
	if (!strstr(v, "/nadbfs -f ") || !strstr(v, "config=/etc/nadbfs/%i.conf"))
		fail_msg("ExecStart must run nadbfs -f with the instance's config: %s", v);
	v = unit_values(m, text, "ExecReload");
	if (!strstr(v, "kill -HUP $MAINPID") && !strstr(v, "kill -s HUP $MAINPID"))
		fail_msg("ExecReload must send SIGHUP to the daemon: %s", v);
	assert_string_equal(unit_values(m, text, "Restart"), "on-failure\n");
	v = unit_values(m, text, "NotifyAccess");
	assert_true(!*v || !strcmp(v, "main\n") || !strcmp(v, "all\n"));
	/* Longer than backend_timeout's default, so a stop can flush. */
	v = unit_values(m, text, "TimeoutStopSec");
	assert_true(!strcmp(v, "infinity\n") || atoi(v) > 30);
	for (size_t i = 0; i < sizeof(private_ns) / sizeof(private_ns[0]); i++) {
		v = unit_values(m, text, private_ns[i]);
		if (truthy(v))
			fail_msg("%s=%s puts the daemon in its own mount namespace", private_ns[i],
				 v);
	}
	v = unit_values(m, text, "DevicePolicy");
	if (!strcmp(v, "closed\n") || !strcmp(v, "strict\n"))
		if (!strstr(unit_values(m, text, "DeviceAllow"), "/dev/fuse rw"))
			fail_msg("DevicePolicy=%s without DeviceAllow=/dev/fuse rw", v);
	free(text);
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
		T(test_installed_unit_properties),
		T(test_notify_ready_after_mount_then_stopping),
	};

	return cmocka_run_group_tests_name("systemd", tests, NULL, NULL);
}
