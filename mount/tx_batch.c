/*
 * nadbctl tx apply's batch format (see tx_batch.h): one JSON object per
 * line, {"op": put|delete|mkdir|rmdir|tags|ttl|rename|xattr, "key": ..., and
 * the fields that op needs}; blank lines are skipped.
 */
#include "mount/tx_batch.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

#define KEY_MAX 1024

bool tx_batch_key_ok(const char *k)
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

const char *tx_batch_check(struct tx_batch_op *op)
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
	if (!op->key || !tx_batch_key_ok(op->key))
		return "\"key\" must be a relative key path without empty, . or .. parts";
	if (!strcmp(op->op, "put") && !str_field(o, "value"))
		return "put needs a \"value\" string";
	v = json_object_get(o, "tags");
	if ((!strcmp(op->op, "tags") || v) && !json_is_string(v))
		return "\"tags\" must be a string like \"a,b\"";
	v = json_object_get(o, "ttl");
	if ((!strcmp(op->op, "ttl") || v) && !(json_is_integer(v) && json_integer_value(v) >= 0))
		return "\"ttl\" must be an integer of seconds (0 removes it)";
	if (!strcmp(op->op, "rename") &&
	    (!str_field(o, "to") || !tx_batch_key_ok(str_field(o, "to"))))
		return "rename needs a \"to\" key";
	if (!strcmp(op->op, "xattr") &&
	    (!str_field(o, "name") || strncmp(str_field(o, "name"), "user.", 5) ||
	     !str_field(o, "value")))
		return "xattr needs a \"name\" (user.*) and a \"value\" string";
	return NULL;
}

void tx_batch_free(struct tx_batch_op *ops, size_t count)
{
	while (ops && count--)
		json_decref(ops[count].o);
	free(ops);
}

int tx_batch_read(FILE *f, struct tx_batch_op **out, size_t *count, char *err, size_t errlen)
{
	struct tx_batch_op *ops = NULL;
	size_t n = 0, cap = 0, linecap = 0;
	char *line = NULL;
	unsigned lineno = 0;
	ssize_t len;
	int ret = 0;

	while (!ret && (len = getline(&line, &linecap, f)) >= 0) {
		json_error_t jerr;
		const char *why;

		lineno++;
		if (strspn(line, " \t\r\n") == (size_t)len)
			continue;
		if (n == cap) {
			struct tx_batch_op *no = realloc(ops, (cap ? 2 * cap : 64) * sizeof(*ops));

			if (!no) {
				snprintf(err, errlen, "%u: out of memory", lineno);
				ret = -ENOMEM;
				break;
			}
			ops = no;
			cap = cap ? 2 * cap : 64;
		}
		ops[n] = (struct tx_batch_op){ .line = lineno };
		ops[n].o = json_loadb(line, (size_t)len, 0, &jerr);
		if (!ops[n].o) {
			snprintf(err, errlen, "%u: not JSON: %s", lineno, jerr.text);
			ret = -EINVAL;
		} else if ((why = tx_batch_check(&ops[n++]))) {
			snprintf(err, errlen, "%u: %s", lineno, why);
			ret = -EINVAL;
		}
	}
	if (!ret && ferror(f)) {
		snprintf(err, errlen, " read error");
		ret = -EIO;
	}
	free(line);
	/* The leading blank: callers print "FILE:" then err, as for line errors. */
	if (!ret && !n) {
		snprintf(err, errlen, " no operations");
		ret = -EINVAL;
	}
	if (ret) {
		tx_batch_free(ops, n);
		return ret;
	}
	*out = ops;
	*count = n;
	return 0;
}
