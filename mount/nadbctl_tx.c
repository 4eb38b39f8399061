/*
 * nadbctl tx: begin, commit, abort and list go to .nadb/ctl; apply runs a
 * JSON-lines batch as one transaction. The whole file is read and checked
 * first (a bad line rejects the batch before anything starts); then the
 * operations are done with plain file calls inside .nadb/tx/NAME/, and the
 * transaction is committed, or aborted on the first failure.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "mount/nadbctl.h"

#define KEY_MAX 1024

struct op {
	json_t *o; /* the line's object */
	unsigned line;
	const char *op, *key;
};

/* A key names a file below the mount: relative, no empty, "." or ".." parts. */
static bool key_ok(const char *k)
{
	size_t len = strlen(k);
	const char *p = k;

	if (!len || len > KEY_MAX || k[0] == '/' || k[len - 1] == '/')
		return false;
	while (*p) {
		size_t n = strcspn(p, "/");

		if (n == 0 || n > 255 || (n == 1 && p[0] == '.') ||
		    (n == 2 && p[0] == '.' && p[1] == '.'))
			return false;
		p += n + (p[n] == '/');
	}
	return true;
}

static const char *str_field(json_t *o, const char *name)
{
	json_t *v = json_object_get(o, name);

	return json_is_string(v) ? json_string_value(v) : NULL;
}

/* Checks one line's object; NULL if fine, else what is wrong. */
static const char *check_op(struct op *op)
{
	static const char *const known[] = { "put", "delete", "mkdir", "rmdir", "tags",
					     "ttl", "rename", "xattr", NULL };
	json_t *o = op->o, *v;
	size_t i;

	if (!json_is_object(o))
		return "not a JSON object";
	op->op = str_field(o, "op");
	op->key = str_field(o, "key");
	if (!op->op)
		return "no \"op\" string";
	for (i = 0; known[i] && strcmp(known[i], op->op); i++)
		;
	if (!known[i])
		return "unknown op (put, delete, mkdir, rmdir, tags, ttl, rename, xattr)";
	if (!op->key || !key_ok(op->key))
		return "\"key\" must be a relative key path without empty, . or .. parts";
	if (!strcmp(op->op, "put") && !str_field(o, "value"))
		return "put needs a \"value\" string";
	v = json_object_get(o, "tags");
	if ((!strcmp(op->op, "tags") || v) && !json_is_string(v))
		return "\"tags\" must be a string like \"a,b\"";
	v = json_object_get(o, "ttl");
	if ((!strcmp(op->op, "ttl") || v) && !(json_is_integer(v) && json_integer_value(v) >= 0))
		return "\"ttl\" must be an integer of seconds (0 removes it)";
	if (!strcmp(op->op, "rename") && (!str_field(o, "to") || !key_ok(str_field(o, "to"))))
		return "rename needs a \"to\" key";
	if (!strcmp(op->op, "xattr") &&
	    (!str_field(o, "name") || strncmp(str_field(o, "name"), "user.", 5) ||
	     !str_field(o, "value")))
		return "xattr needs a \"name\" (user.*) and a \"value\" string";
	return NULL;
}

/* Reads and checks every line of file; 0, or 1 with a message printed. */
static int read_batch(const char *file, struct op **out, size_t *count)
{
	FILE *f = strcmp(file, "-") ? fopen(file, "r") : stdin;
	struct op *ops = NULL;
	size_t n = 0, cap = 0, linecap = 0;
	char *line = NULL;
	unsigned lineno = 0;
	ssize_t len;
	int status = 0;

	if (!f) {
		fprintf(stderr, "nadbctl: cannot open %s: %s\n", file, strerror(errno));
		return 1;
	}
	while (!status && (len = getline(&line, &linecap, f)) >= 0) {
		json_error_t jerr;
		const char *why;

		lineno++;
		if (strspn(line, " \t\r\n") == (size_t)len)
			continue;
		if (n == cap) {
			struct op *no = realloc(ops, (cap = cap ? 2 * cap : 64) * sizeof(*ops));

			if (!no) {
				fprintf(stderr, "nadbctl: out of memory\n");
				status = 1;
				break;
			}
			ops = no;
		}
		ops[n] = (struct op){ .line = lineno };
		ops[n].o = json_loadb(line, (size_t)len, 0, &jerr);
		if (!ops[n].o) {
			fprintf(stderr, "nadbctl: %s:%u: not JSON: %s\n", file, lineno, jerr.text);
			status = 1;
		} else if ((why = check_op(&ops[n++]))) {
			fprintf(stderr, "nadbctl: %s:%u: %s\n", file, lineno, why);
			status = 1;
		}
	}
	free(line);
	if (f != stdin)
		fclose(f);
	if (!status && !n) {
		fprintf(stderr, "nadbctl: %s: no operations\n", file);
		status = 1;
	}
	if (status) {
		while (n--)
			json_decref(ops[n].o);
		free(ops);
		return 1;
	}
	*out = ops;
	*count = n;
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

/* One operation inside the transaction rooted at root: 0 or -errno. */
static int run_op(const char *root, const struct op *op)
{
	char path[PATH_MAX], to[PATH_MAX], num[32];
	json_t *tags = json_object_get(op->o, "tags"), *ttl = json_object_get(op->o, "ttl");
	int ret = 0, fd;

	if (join(path, sizeof(path), root, op->key))
		return -ENAMETOOLONG;
	if (!strcmp(op->op, "put") || !strcmp(op->op, "mkdir") || !strcmp(op->op, "rename"))
		ret = make_parents(root,
				   !strcmp(op->op, "rename") ? str_field(op->o, "to") : op->key);
	if (ret)
		return ret;
	if (!strcmp(op->op, "put")) {
		const char *v = str_field(op->o, "value");
		size_t len = strlen(v);

		fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
		if (fd < 0)
			return -errno;
		if (write(fd, v, len) != (ssize_t)len)
			ret = errno ? -errno : -EIO;
		if (close(fd) && !ret)
			ret = -errno;
	} else if (!strcmp(op->op, "delete")) {
		ret = unlink(path) ? -errno : 0;
	} else if (!strcmp(op->op, "mkdir")) {
		ret = mkdir(path, 0755) ? -errno : 0;
	} else if (!strcmp(op->op, "rmdir")) {
		ret = rmdir(path) ? -errno : 0;
	} else if (!strcmp(op->op, "rename")) {
		ret = join(to, sizeof(to), root, str_field(op->o, "to"));
		if (!ret)
			ret = rename(path, to) ? -errno : 0;
	} else if (!strcmp(op->op, "xattr")) {
		ret = set_attr_str(path, str_field(op->o, "name"), str_field(op->o, "value"));
	}
	if (!ret && tags)
		ret = set_attr_str(path, "user.tags", json_string_value(tags));
	if (!ret && ttl && json_integer_value(ttl)) {
		snprintf(num, sizeof(num), "%lld", (long long)json_integer_value(ttl));
		ret = set_attr_str(path, "user.ttl", num);
	} else if (!ret && ttl && removexattr(path, "user.ttl") && errno != ENODATA) {
		ret = -errno;
	}
	return ret;
}

static int apply(const char *mnt, const char *file)
{
	char name[64], cmd[128], root[PATH_MAX];
	struct op *ops;
	size_t n, i;
	int status = 1;

	if (read_batch(file, &ops, &n))
		return 1;
	snprintf(name, sizeof(name), "apply-%ld-%ld", (long)getpid(), (long)time(NULL));
	snprintf(cmd, sizeof(cmd), "tx begin %s", name);
	if (ctl_command(mnt, cmd, true))
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
	status = ctl_command(mnt, cmd, true) || i != n;
	if (!status)
		printf("ok %zu operations\n", n);
out:
	for (i = 0; i < n; i++)
		json_decref(ops[i].o);
	free(ops);
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
