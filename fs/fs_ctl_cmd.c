/*
 * The .nadb/ctl command language (see fs_ctl_cmd.h):
 *	flush | sweep | reload | tx list | tx begin NAME [--session] |
 *	tx commit|abort NAME | backup ...
 * Words are separated by blanks; anything else is an error reply.
 */
#include "fs/fs_ctl_cmd.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

static int fail(char *err, size_t errlen, const char *what, const char *arg, size_t arglen)
{
	/* The writer's bytes are echoed cut and with control characters
	 * replaced, so a reply is always one readable line. */
	char shown[64];
	size_t n = arglen < sizeof(shown) - 1 ? arglen : sizeof(shown) - 1;

	for (size_t i = 0; i < n; i++)
		shown[i] = (unsigned char)arg[i] < 0x20 || arg[i] == 0x7f ? '?' : arg[i];
	shown[n] = '\0';
	snprintf(err, errlen, what, shown);
	return -EINVAL;
}

/* The next blank-separated word of s[*pos..len): its start and length, 0 at the end. */
static size_t word(const char *s, size_t len, size_t *pos, const char **start)
{
	size_t i = *pos, n;

	while (i < len && (s[i] == ' ' || s[i] == '\t'))
		i++;
	*start = s + i;
	for (n = 0; i + n < len && s[i + n] != ' ' && s[i + n] != '\t'; n++)
		;
	*pos = i + n;
	return n;
}

static bool is(const char *w, size_t n, const char *lit)
{
	return n == strlen(lit) && !memcmp(w, lit, n);
}

int fs_ctl_parse(const char *buf, size_t size, struct fs_ctl_cmd *out, char *err, size_t errlen)
{
	const char *w, *w2, *w3, *w4;
	size_t pos = 0, n, n2, n3, n4;

	if (size && buf[size - 1] == '\n')
		size--;
	if (memchr(buf, '\n', size) || memchr(buf, '\0', size))
		return fail(err, errlen, "error: one command line per write%s\n", "", 0);
	n = word(buf, size, &pos, &w);
	if (!n)
		return fail(err, errlen, "error: empty command%s\n", "", 0);
	if (is(w, n, "backup")) {
		if (size - pos >= sizeof(out->args))
			return fail(err, errlen, "error: backup: arguments too long%s\n", "", 0);
		memcpy(out->args, buf + pos, size - pos);
		out->args[size - pos] = '\0';
		out->verb = FS_CTL_BACKUP;
		return 0;
	}
	if (!is(w, n, "tx")) {
		if (word(buf, size, &pos, &w2) == 0) {
			if (is(w, n, "flush") || is(w, n, "sweep") || is(w, n, "reload")) {
				out->verb = is(w, n, "flush")	? FS_CTL_FLUSH
					    : is(w, n, "sweep") ? FS_CTL_SWEEP
								: FS_CTL_RELOAD;
				return 0;
			}
		}
		return fail(err, errlen,
			    "error: unknown command '%s' (commands: flush, sweep, reload, tx, backup)\n",
			    buf, size);
	}
	n = word(buf, size, &pos, &w);
	n2 = word(buf, size, &pos, &w2);
	n3 = word(buf, size, &pos, &w3);
	n4 = word(buf, size, &pos, &w4);
	out->session = n3 && is(w, n, "begin") && is(w3, n3, "--session");
	if (n4 || (n3 && !out->session) || !n || (!n2 && !is(w, n, "list")) ||
	    (n2 && is(w, n, "list")) || n2 > 255)
		return fail(err, errlen,
			    "error: usage: tx begin NAME [--session], tx commit|abort NAME, or tx "
			    "list%s\n",
			    "", 0);
	if (is(w, n, "list")) {
		out->verb = FS_CTL_TX_LIST;
		return 0;
	}
	if (is(w, n, "begin"))
		out->verb = FS_CTL_TX_BEGIN;
	else if (is(w, n, "commit"))
		out->verb = FS_CTL_TX_COMMIT;
	else if (is(w, n, "abort"))
		out->verb = FS_CTL_TX_ABORT;
	else
		return fail(err, errlen,
			    "error: unknown tx command '%s' (begin, commit, abort, list)\n", w, n);
	memcpy(out->name, w2, n2);
	out->name[n2] = '\0';
	return 0;
}
