/*
 * nadbctl tx: begin, commit, abort and list go to .nadb/ctl; apply runs a
 * JSON-lines batch as one transaction. The whole file is read and checked
 * first (a bad line rejects the batch before anything starts); then the
 * operations are done with plain file calls inside .nadb/tx/NAME/, and the
 * transaction is committed, or aborted on the first failure. It is begun
 * with --session in a ctl descriptor held open until the end: if nadbctl
 * dies before the commit (killed, whatever the signal), the kernel closes
 * that descriptor and the daemon aborts the transaction.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "mount/nadbctl.h"
#include "mount/tx_batch.h"

static const char *str_field(json_t *o, const char *name)
{
	json_t *v = json_object_get(o, name);

	return json_is_string(v) ? json_string_value(v) : NULL;
}

/* Reads and checks every line of file; 0, or 1 with a message printed. */
static int read_batch(const char *file, struct tx_batch_op **out, size_t *count)
{
	FILE *f = strcmp(file, "-") ? fopen(file, "r") : stdin;
	char err[512];
	int ret;

	if (!f) {
		fprintf(stderr, "nadbctl: cannot open %s: %s\n", file, strerror(errno));
		return 1;
	}
	ret = tx_batch_read(f, out, count, err, sizeof(err));
	if (f != stdin)
		fclose(f);
	if (ret) {
		fprintf(stderr, "nadbctl: %s:%s\n", file, err);
		return 1;
	}
	return 0;
}

/* root/key into buf: 0, or -ENAMETOOLONG. */
static int join(char *buf, size_t len, const char *root, const char *key)
{
	int n = snprintf(buf, len, "%s/%s", root, key);

	return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

/* mkdir -p of key's parent directories inside the transaction at root. */
static int make_parents(const char *root, const char *key)
{
	char path[PATH_MAX];
	char *slash;

	if (join(path, sizeof(path), root, key))
		return -ENAMETOOLONG;
	for (slash = path + strlen(root) + 1; (slash = strchr(slash, '/')); slash++) {
		*slash = '\0';
		if (mkdir(path, 0755) && errno != EEXIST)
			return -errno;
		*slash = '/';
	}
	return 0;
}

static int set_attr_str(const char *path, const char *name, const char *v)
{
	return setxattr(path, name, v, strlen(v), 0) ? -errno : 0;
}

static bool tag_in(json_t *tags, const char *t, size_t len)
{
	size_t i;
	json_t *e;

	json_array_foreach (tags, i, e)
		if (json_string_length(e) == len && !memcmp(json_string_value(e), t, len))
			return true;
	return false;
}

/* The key's tag list ("a,b", what user.tags holds) into *out (malloc'd):
 * 0 or -errno. A key without tags has an empty list. */
static int get_tags(const char *path, char **out)
{
	ssize_t len = getxattr(path, "user.tags", NULL, 0);
	char *buf;

	if (len < 0 && errno != ENODATA)
		return -errno;
	buf = malloc(len > 0 ? (size_t)len + 1 : 1);
	if (!buf)
		return -ENOMEM;
	/* Only this batch works in its transaction, so the list does not
	 * grow between the two calls; if it did, ERANGE aborts the batch. */
	if (len > 0 && (len = getxattr(path, "user.tags", buf, (size_t)len)) < 0) {
		free(buf);
		return -errno;
	}
	buf[len > 0 ? len : 0] = '\0';
	*out = buf;
	return 0;
}

/* Sets user.tags to the list cur plus (add) or minus (!add) the tags in the
 * array tags (each checked by tx_batch_tag_ok, so none holds a comma). */
static int write_tags(const char *path, const char *cur, json_t *tags, bool add)
{
	size_t i, n = 0, cap = strlen(cur) + 1;
	const char *p;
	char *list;
	json_t *e;
	int ret;

	json_array_foreach (tags, i, e)
		cap += json_string_length(e) + 1;
	list = malloc(cap);
	if (!list)
		return -ENOMEM;
	for (p = cur; *p; p += strcspn(p, ",") + (p[strcspn(p, ",")] == ',')) {
		size_t len = strcspn(p, ",");

		if (len && (add || !tag_in(tags, p, len)))
			n += (size_t)sprintf(list + n, n ? ",%.*s" : "%.*s", (int)len, p);
	}
	/* The daemon sorts the list and drops duplicates. */
	json_array_foreach (tags, i, e)
		if (add)
			n += (size_t)sprintf(list + n, n ? ",%s" : "%s", json_string_value(e));
	list[n] = '\0';
	ret = set_attr_str(path, "user.tags", list);
	free(list);
	return ret;
}

/* tag (add) or untag (!add): the key's tags plus or minus the array's. */
static int edit_tags(const char *path, json_t *tags, bool add)
{
	char *cur = NULL;
	int ret = get_tags(path, &cur);

	if (ret)
		return ret;
	ret = write_tags(path, cur, tags, add);
	free(cur);
	return ret;
}

static int write_value(const char *path, const struct tx_batch_op *op)
{
	const char *v = op->value;
	size_t done = 0;
	int fd, ret = 0;

	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		return -errno;
	while (done < op->value_len) {
		ssize_t w = write(fd, v + done, op->value_len - done);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0) {
			ret = w < 0 ? -errno : -EIO;
			break;
		}
		done += (size_t)w;
	}
	if (close(fd) && !ret)
		ret = -errno;
	return ret;
}

static int set_ttl(const char *path, json_int_t ttl)
{
	char num[32];

	if (!ttl)
		return removexattr(path, "user.ttl") && errno != ENODATA ? -errno : 0;
	snprintf(num, sizeof(num), "%lld", (long long)ttl);
	return set_attr_str(path, "user.ttl", num);
}

/* One operation inside the transaction rooted at root: 0 or -errno. */
static int run_op(const char *root, const struct tx_batch_op *op)
{
	char path[PATH_MAX], to[PATH_MAX];
	json_t *tags = json_object_get(op->o, "tags"), *ttl = json_object_get(op->o, "ttl");
	int ret = 0;

	if (join(path, sizeof(path), root, op->key))
		return -ENAMETOOLONG;
	if (!strcmp(op->op, "set") || !strcmp(op->op, "mkdir") || !strcmp(op->op, "rename"))
		ret = make_parents(root,
				   !strcmp(op->op, "rename") ? str_field(op->o, "to") : op->key);
	if (ret)
		return ret;
	if (!strcmp(op->op, "set")) {
		ret = write_value(path, op);
		if (!ret && tags)
			ret = write_tags(path, "", tags, true); /* replaces them */
		if (!ret && ttl)
			ret = set_ttl(path, json_integer_value(ttl));
	} else if (!strcmp(op->op, "del")) {
		ret = unlink(path) ? -errno : 0;
	} else if (!strcmp(op->op, "tag") || !strcmp(op->op, "untag")) {
		ret = edit_tags(path, tags, !strcmp(op->op, "tag"));
	} else if (!strcmp(op->op, "ttl")) {
		ret = set_ttl(path, json_integer_value(ttl));
	} else if (!strcmp(op->op, "mkdir")) {
		ret = mkdir(path, 0755) ? -errno : 0;
	} else if (!strcmp(op->op, "rmdir")) {
		ret = rmdir(path) ? -errno : 0;
	} else if (!strcmp(op->op, "rename")) {
		ret = join(to, sizeof(to), root, str_field(op->o, "to"));
		if (!ret)
			ret = rename(path, to) ? -errno : 0;
	} else if (!strcmp(op->op, "xattr")) {
		ret = setxattr(path, str_field(op->o, "name"), op->value, op->value_len, 0) ?
			      -errno :
			      0;
	}
	return ret;
}

static int apply(const char *mnt, const char *file)
{
	char name[64], cmd[128], root[PATH_MAX];
	struct tx_batch_op *ops;
	size_t n, i;
	int status = 1, fd;

	if (read_batch(file, &ops, &n))
		return 1;
	fd = ctl_session_open(mnt);
	if (fd < 0)
		goto out;
	snprintf(name, sizeof(name), "apply-%ld-%ld", (long)getpid(), (long)time(NULL));
	snprintf(cmd, sizeof(cmd), "tx begin %s --session", name);
	if (ctl_session_command(fd, cmd, true))
		goto out;
	if (snprintf(root, sizeof(root), "%s/.nadb/tx/%s", mnt, name) >= (int)sizeof(root)) {
		fprintf(stderr, "nadbctl: %s: path too long\n", mnt);
		goto out;
	}
	for (i = 0; i < n; i++) {
		int ret = run_op(root, &ops[i]);

		if (ret) {
			fprintf(stderr, "nadbctl: %s:%u: %s %s: %s; nothing applied\n", file,
				ops[i].line, ops[i].op, ops[i].key, strerror(-ret));
			break;
		}
	}
	snprintf(cmd, sizeof(cmd), "tx %s %s", i == n ? "commit" : "abort", name);
	status = ctl_session_command(fd, cmd, true) || i != n;
	/* A refused commit (a conflict) leaves the transaction open: it
	 * must not outlive the batch (closing fd would abort it too). */
	if (status && i == n) {
		snprintf(cmd, sizeof(cmd), "tx abort %s", name);
		ctl_session_command(fd, cmd, true);
	}
	if (!status)
		printf("ok %zu operations\n", n);
out:
	if (fd >= 0)
		close(fd);
	tx_batch_free(ops, n);
	return status;
}

int ctl_tx(const char *mnt, int argc, char **argv)
{
	char cmd[512];

	if (argc == 1 && !strcmp(argv[0], "list"))
		return ctl_command(mnt, "tx list", false);
	if (argc == 2 && !strcmp(argv[0], "apply"))
		return apply(mnt, argv[1]);
	if (argc == 2 && (!strcmp(argv[0], "begin") || !strcmp(argv[0], "commit") ||
			  !strcmp(argv[0], "abort"))) {
		snprintf(cmd, sizeof(cmd), "tx %s %s", argv[0], argv[1]);
		return ctl_command(mnt, cmd, false);
	}
	fprintf(stderr, "nadbctl: usage: nadbctl tx begin|commit|abort NAME | list | apply FILE\n");
	return 1;
}
