/*
 * nadbctl tx apply's batch format (see tx_batch.h and spec section 8): one
 * JSON object per line, {"op": ..., "key": ..., and the fields that op
 * takes}; blank lines are skipped. The spec's ops are set, del, tag, untag
 * and ttl; put and delete are older names of set and del, and mkdir, rmdir,
 * rename and xattr are extensions. A field an op does not take is an error,
 * so a misspelt one ("tll") is not silently ignored.
 */
#include "mount/tx_batch.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

#include "mount/base64.h"

#define KEY_MAX 1024
#define TAG_MAX 255

/* Fields beyond "op" and "key"; F_VALUE is "value" or "value_b64". */
enum { F_VALUE = 1, F_TAGS = 2, F_TTL = 4, F_TO = 8, F_NAME = 16 };

static const struct op_desc {
	const char *name, *canon;
	unsigned need, allow; /* allow includes need */
} ops_known[] = {
	{ "set", "set", F_VALUE, F_VALUE | F_TAGS | F_TTL },
	{ "put", "set", F_VALUE, F_VALUE | F_TAGS | F_TTL },
	{ "del", "del", 0, 0 },
	{ "delete", "del", 0, 0 },
	{ "tag", "tag", F_TAGS, F_TAGS },
	{ "untag", "untag", F_TAGS, F_TAGS },
	{ "ttl", "ttl", F_TTL, F_TTL },
	{ "mkdir", "mkdir", 0, 0 },
	{ "rmdir", "rmdir", 0, 0 },
	{ "rename", "rename", F_TO, F_TO },
	{ "xattr", "xattr", F_NAME | F_VALUE, F_NAME | F_VALUE },
};

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

bool tx_batch_tag_ok(const char *t)
{
	static const char ok[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
				 "0123456789_.:@=-";
	size_t len = strlen(t);

	if (!len || len > TAG_MAX || t[0] == '-' || !strcmp(t, ".") || !strcmp(t, ".."))
		return false;
	return strspn(t, ok) == len;
}

static const char *str_field(json_t *o, const char *name)
{
	json_t *v = json_object_get(o, name);

	return json_is_string(v) ? json_string_value(v) : NULL;
}

static unsigned field_bit(const char *name)
{
	if (!strcmp(name, "value") || !strcmp(name, "value_b64"))
		return F_VALUE;
	if (!strcmp(name, "tags"))
		return F_TAGS;
	if (!strcmp(name, "ttl"))
		return F_TTL;
	if (!strcmp(name, "to"))
		return F_TO;
	if (!strcmp(name, "name"))
		return F_NAME;
	return 0;
}

/* The op's value from "value" (text) or "value_b64" (decoded): NULL or why
 * not. */
static const char *check_value(struct tx_batch_op *op)
{
	json_t *v = json_object_get(op->o, "value"), *b = json_object_get(op->o, "value_b64");
	ssize_t n;

	if (v && b)
		return "give \"value\" or \"value_b64\", not both";
	if (v) {
		if (!json_is_string(v))
			return "\"value\" must be a string";
		op->value = json_string_value(v);
		op->value_len = json_string_length(v);
		return NULL;
	}
	if (!json_is_string(b))
		return "\"value_b64\" must be a string";
	/* +1: malloc(0) may return NULL for an empty value. */
	op->b64 = malloc(b64_max_decoded(json_string_length(b)) + 1);
	if (!op->b64)
		return "out of memory";
	n = b64_decode(json_string_value(b), json_string_length(b), op->b64);
	if (n < 0)
		return "\"value_b64\" is not valid base64 (standard alphabet, padded with =)";
	op->value = op->b64;
	op->value_len = (size_t)n;
	return NULL;
}

static const char *check_tags(json_t *tags)
{
	size_t i;
	json_t *t;

	if (!json_is_array(tags))
		return "\"tags\" must be an array of tag strings, like [\"a\",\"b\"]";
	json_array_foreach (tags, i, t) {
		if (!json_is_string(t))
			return "\"tags\" must be an array of tag strings, like [\"a\",\"b\"]";
		if (!tx_batch_tag_ok(json_string_value(t)))
			return "a tag is 1-255 of [A-Za-z0-9_.:@=-], not starting with -, "
			       "not . or ..";
	}
	return NULL;
}

const char *tx_batch_check(struct tx_batch_op *op, char *why, size_t whylen)
{
	const struct op_desc *d = NULL;
	json_t *o = op->o, *v;
	const char *name, *bad;
	unsigned have = 0;
	size_t i;

	if (!json_is_object(o))
		return "not a JSON object";
	op->op = str_field(o, "op");
	op->key = str_field(o, "key");
	if (!op->op)
		return "no \"op\" string";
	for (i = 0; i < sizeof(ops_known) / sizeof(ops_known[0]); i++)
		if (!strcmp(ops_known[i].name, op->op))
			d = &ops_known[i];
	if (!d)
		return "unknown op (set, del, tag, untag, ttl; also put, delete, mkdir, rmdir, "
		       "rename, xattr)";
	op->op = d->canon;
	if (!op->key || !tx_batch_key_ok(op->key))
		return "\"key\" must be a relative key path without empty, . or .. parts";
	json_object_foreach (o, name, v) {
		unsigned bit = field_bit(name);

		if (!strcmp(name, "op") || !strcmp(name, "key"))
			continue;
		if (!(bit & d->allow)) {
			snprintf(why, whylen, "%s takes no \"%.40s\" field", d->canon, name);
			return why;
		}
		have |= bit;
	}
	if ((d->need & F_VALUE) && !(have & F_VALUE))
		return "needs a \"value\" string or a \"value_b64\" base64 string";
	if ((d->need & F_TAGS) && !(have & F_TAGS))
		return "needs \"tags\", an array of tag strings";
	if ((d->need & F_TTL) && !(have & F_TTL))
		return "needs \"ttl\", an integer of seconds";
	if ((have & F_VALUE) && (bad = check_value(op)))
		return bad;
	if ((have & F_TAGS) && (bad = check_tags(json_object_get(o, "tags"))))
		return bad;
	v = json_object_get(o, "ttl");
	if ((have & F_TTL) && !(json_is_integer(v) && json_integer_value(v) >= 0))
		return "\"ttl\" must be an integer of seconds (0 removes it)";
	if ((d->need & F_TO) && (!str_field(o, "to") || !tx_batch_key_ok(str_field(o, "to"))))
		return "rename needs a \"to\" key";
	if ((d->need & F_NAME) &&
	    (!str_field(o, "name") || strncmp(str_field(o, "name"), "user.", 5)))
		return "xattr needs a \"name\" (user.*)";
	return NULL;
}

void tx_batch_free(struct tx_batch_op *ops, size_t count)
{
	while (ops && count--) {
		json_decref(ops[count].o);
		free(ops[count].b64);
	}
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
		char whybuf[128];
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
		/* A field given twice would silently lose one of its values. */
		ops[n].o = json_loadb(line, (size_t)len, JSON_REJECT_DUPLICATES, &jerr);
		if (!ops[n].o) {
			snprintf(err, errlen, "%u: not JSON: %s", lineno, jerr.text);
			ret = -EINVAL;
		} else if ((why = tx_batch_check(&ops[n++], whybuf, sizeof(whybuf)))) {
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
