/*
 * The kernel's read-ahead on the mount. A FUSE connection starts with the
 * read-ahead of a new device, 128 KiB, which its INIT reply may lower but
 * not raise, so a sequential read cost a READ round trip per 128 KiB though
 * a READ can carry 1 MiB (max_pages follows max_write, fs.c). Once INIT is
 * answered, root may raise it through the mount's device in sysfs. Reading
 * a just-written 256 MiB file, alternating: 1.4-1.5 GB/s with 2,050 READs
 * at 128 KiB, 2.5-2.7 GB/s with 258 at 1 MiB. The price: the kernel's first
 * window of a file, and what a page fault of an mmap reads around it, grow
 * with the setting too (a fault in a 16 MiB mapping reads 1 MiB, not 128 KiB).
 *
 * It runs on the session loop's thread right after it answered INIT
 * (fs_loop.h, after_init), and finds the device in /proc/self/mountinfo:
 * a stat of the mountpoint from here would be a request this very thread
 * has to answer.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mount/readahead.h"
#include "util/log.h"

/* mountinfo escapes space, tab, newline and backslash as \ooo. */
static void unescape(char *s)
{
	char *d = s;

	for (; *s; s++) {
		if (s[0] == '\\' && s[1] >= '0' && s[1] <= '3' && s[2] >= '0' && s[2] <= '7' &&
		    s[3] >= '0' && s[3] <= '7') {
			*d++ = (char)((s[1] - '0') * 64 + (s[2] - '0') * 8 + (s[3] - '0'));
			s += 3;
		} else {
			*d++ = *s;
		}
	}
	*d = '\0';
}

/*
 * "MAJ:MIN" of the last (topmost) nadbfs mount on mountpoint, into dev;
 * 0 or -ENOENT. A mountinfo line: ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS
 * [OPTIONAL...] - FSTYPE SOURCE SUPEROPTS.
 */
static int find_device(const char *mountpoint, char *dev, size_t len)
{
	FILE *f = fopen("/proc/self/mountinfo", "re");
	char *line = NULL, *save, *mm, *mp, *t;
	size_t cap = 0;
	int ret = -ENOENT;

	if (!f)
		return -errno;
	while (getline(&line, &cap, f) > 0) {
		if (!strtok_r(line, " ", &save) || !strtok_r(NULL, " ", &save) ||
		    !(mm = strtok_r(NULL, " ", &save)) || !strtok_r(NULL, " ", &save) ||
		    !(mp = strtok_r(NULL, " ", &save)))
			continue;
		while ((t = strtok_r(NULL, " ", &save)) && strcmp(t, "-"))
			;
		if (!t || !(t = strtok_r(NULL, " ", &save)) || strcmp(t, "fuse.nadbfs"))
			continue;
		unescape(mp);
		if (!strcmp(mp, mountpoint)) {
			snprintf(dev, len, "%s", mm);
			ret = 0;
		}
	}
	free(line);
	fclose(f);
	return ret;
}

void nadbfs_raise_readahead(void *arg)
{
	const struct nadbfs_readahead *r = arg;
	char dev[32], path[96], val[16];
	int fd, len, ret;

	ret = find_device(r->mountpoint, dev, sizeof(dev));
	if (!ret) {
		snprintf(path, sizeof(path), "/sys/class/bdi/%s/read_ahead_kb", dev);
		len = snprintf(val, sizeof(val), "%u\n", r->kb);
		fd = open(path, O_WRONLY | O_CLOEXEC);
		if (fd < 0 || write(fd, val, (size_t)len) != len)
			ret = -errno;
		if (fd >= 0)
			close(fd);
	}
	/* Only root may write there; others keep the kernel's 128 KiB. */
	if (ret)
		NLOG(NLOG_DEBUG, "fs", "read-ahead left at the kernel's",
		     LF_STR("error", strerror(-ret)));
	else
		NLOG(NLOG_DEBUG, "fs", "read-ahead raised", LF_INT("kib", r->kb));
}
