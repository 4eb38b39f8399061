/*
 * nadbctl tx apply's JSON-lines batches (mount/tx_batch.c), read from a
 * memory stream. Properties: no crash or leak; an accepted batch has at
 * least one operation, each with a known op and a key that stays below the
 * mount (relative, no "." or ".." parts), and a rename's target likewise;
 * a set or xattr has its value (value_b64 decoded), and every tag in a
 * "tags" array follows the tag rules (so a joined "a,b" list is
 * unambiguous); a refused batch says on which line and why.
 */
#include <errno.h>
#include <stdbool.h>

#include "mount/tx_batch.h"
#include "fuzz/fuzz.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	return 0;
}

/* What the batch runner will join below the transaction's root. */
static bool stays_below(const char *k)
{
	const char *p = k;

	if (!*k || *k == '/')
		return false;
	while (*p) {
		size_t n = strcspn(p, "/");

		if (n == 0 || (n == 1 && p[0] == '.') || (n == 2 && !strncmp(p, "..", 2)))
			return false;
		p += n + (p[n] == '/');
	}
	return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct tx_batch_op *ops;
	size_t n;
	char err[512];
	FILE *f;
	int ret;

	if (!size)
		return 0;
	f = fmemopen((void *)data, size, "r");
	FUZZ_CHECK(f);
	err[0] = '\0';
	ret = tx_batch_read(f, &ops, &n, err, sizeof(err));
	fclose(f);
	FUZZ_CHECK(ret == 0 || ret == -EINVAL || ret == -ENOMEM);
	if (ret) {
		FUZZ_CHECK(err[0] != '\0');
		return 0;
	}
	FUZZ_CHECK(n > 0);
	for (size_t i = 0; i < n; i++) {
		json_t *to = json_object_get(ops[i].o, "to");

		FUZZ_CHECK(ops[i].op && ops[i].key && stays_below(ops[i].key));
		FUZZ_CHECK(strlen(ops[i].key) <= 1024);
		json_t *tags = json_object_get(ops[i].o, "tags"), *t;
		size_t j;

		if (!strcmp(ops[i].op, "rename"))
			FUZZ_CHECK(json_is_string(to) && stays_below(json_string_value(to)));
		if (!strcmp(ops[i].op, "set") || !strcmp(ops[i].op, "xattr"))
			FUZZ_CHECK(ops[i].value != NULL);
		else
			FUZZ_CHECK(ops[i].value == NULL);
		FUZZ_CHECK(!tags || json_is_array(tags));
		json_array_foreach (tags, j, t)
			FUZZ_CHECK(json_is_string(t) && tx_batch_tag_ok(json_string_value(t)) &&
				   !strchr(json_string_value(t), ','));
	}
	tx_batch_free(ops, n);
	return 0;
}
