/*
 * Tag lists and query expressions. The input's first part (up to "\n--\n")
 * is a user.tags value: kv_tags_parse_list must give a sorted, unique list
 * of valid tags or an error, and setting it on a key must read back as that
 * list. Every line of the second part is a tags/ directory name: query
 * parsing and evaluation (kv_tag_dir, kv_tag_readdir, twice so that the
 * second answer comes from the query cache), checked against a plain
 * reference evaluation over the store's few keys, and entry lookups (each
 * listed entry, and the line itself as an entry name).
 */
#include <errno.h>
#include <stdbool.h>

#include "store/kv.h"
#include "store/tags.h"
#include "tests/mem_backend.h"
#include "fuzz/fuzz.h"

#define NKEYS 6

static struct mem_store f;
static uint64_t ids[NKEYS];
/* Tags each key starts every input with; key 0's change with the input. */
static const char *const start_tags[NKEYS] = { "a,b", "a", "b,c", "x.y,a", "t-1,c", "" };
static const char *const paths[NKEYS][2] = {
	{ NULL, "k0" },	  { NULL, "k1" }, { "d", "k2" },
	{ "d", "k%2F3" }, { NULL, "k4" }, { NULL, "k5" },
};

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	struct kv_attr d, a;

	(void)argc;
	(void)argv;
	fuzz_quiet();
	mem_store_open(&f, false);
	FUZZ_CHECK(kv_mkdir(f.kv, KV_ROOT_ID, "d", 0755, 0, 0, &d) == 0);
	for (int i = 0; i < NKEYS; i++) {
		uint64_t parent = paths[i][0] ? d.id : KV_ROOT_ID;

		FUZZ_CHECK(kv_create(f.kv, parent, paths[i][1], 0644, 0, 0, true, &a) == 0);
		ids[i] = a.id;
	}
	FUZZ_CHECK(kv_tag_mkdir(f.kv, "declared") == 0);
	return 0;
}

static void set_tags(int k, const char *v, size_t len)
{
	FUZZ_CHECK(kv_setxattr(f.kv, ids[k], "user.tags", v, len, 0) == 0);
}

/* The list kv_tags_parse_list made, joined as user.tags reads it. */
static char *join(char **tags, uint32_t n)
{
	size_t len = 1;
	char *s;

	for (uint32_t i = 0; i < n; i++)
		len += strlen(tags[i]) + 1;
	s = calloc(1, len);
	FUZZ_CHECK(s);
	for (uint32_t i = 0; i < n; i++) {
		if (i)
			strcat(s, ",");
		strcat(s, tags[i]);
	}
	return s;
}

static void check_list(const uint8_t *data, size_t size)
{
	char **tags, *want, got[300 * 1024];
	uint32_t n;
	ssize_t glen;
	int ret = kv_tags_parse_list((const char *)data, size, &tags, &n);

	FUZZ_CHECK(ret == 0 || ret == -EINVAL || ret == -ENOSPC);
	if (ret) {
		/* The same verdict through the xattr, and nothing changed. */
		FUZZ_CHECK(kv_setxattr(f.kv, ids[0], "user.tags", data, size, 0) < 0);
		glen = kv_getxattr(f.kv, ids[0], "user.tags", got, sizeof(got));
		FUZZ_CHECK(glen == 3 && !memcmp(got, "a,b", 3));
		return;
	}
	for (uint32_t i = 0; i < n; i++) {
		FUZZ_CHECK(kv_tag_name_ok(tags[i], strlen(tags[i])));
		if (i)
			FUZZ_CHECK(strcmp(tags[i - 1], tags[i]) < 0);
	}
	want = join(tags, n);
	kv_tags_free_list(tags, n);
	FUZZ_CHECK(kv_setxattr(f.kv, ids[0], "user.tags", data, size, 0) == 0);
	glen = kv_getxattr(f.kv, ids[0], "user.tags", got, sizeof(got));
	if (n == 0)
		FUZZ_CHECK(glen == -ENODATA);
	else
		FUZZ_CHECK(glen == (ssize_t)strlen(want) && !memcmp(got, want, (size_t)glen));
	free(want);
}

static bool has_tag(int k, const char *tag, size_t len)
{
	char buf[300 * 1024], *p, *save = NULL;
	ssize_t n = kv_getxattr(f.kv, ids[k], "user.tags", buf, sizeof(buf) - 1);

	if (n < 0)
		return false;
	buf[n] = '\0';
	for (p = strtok_r(buf, ",", &save); p; p = strtok_r(NULL, ",", &save))
		if (strlen(p) == len && !memcmp(p, tag, len))
			return true;
	return false;
}

/*
 * The reference: the keys of expr as a bitmask, or -1 where the directory
 * must not exist. OR of AND-terms; every term has a positive factor; a lone
 * tag must exist (in use or declared).
 */
static int reference(const char *expr)
{
	size_t len = strlen(expr), nfactors = 0;
	const char *t = expr;
	bool any_tag = false;
	int set = 0;

	if (!len || len > KV_NAME_MAX)
		return -1;
	for (;;) {
		size_t tlen = strcspn(t, ",");
		const char *fp = t;
		int term = (1 << NKEYS) - 1;
		bool positive = false;

		for (;;) {
			size_t flen = strcspn(fp, "+,");
			bool neg = flen && fp[0] == '-';
			int members = 0;

			if (!kv_tag_name_ok(fp + neg, flen - neg))
				return -1;
			for (int k = 0; k < NKEYS; k++)
				if (has_tag(k, fp + neg, flen - neg))
					members |= 1 << k;
			any_tag = members || (flen - neg == 8 && !memcmp(fp + neg, "declared", 8));
			term &= neg ? ~members : members;
			positive |= !neg;
			nfactors++;
			if (fp[flen] != '+')
				break;
			fp += flen + 1;
		}
		if (!positive)
			return -1;
		set |= term;
		if (t[tlen] != ',')
			break;
		t += tlen + 1;
	}
	if (nfactors == 1 && expr[0] != '-' && !any_tag)
		return -1;
	return set;
}

static void check_query(const char *expr)
{
	struct kv_dirent *ents;
	struct kv_attr a;
	size_t n;
	bool is_query;
	int want = reference(expr), got, ret;

	ret = kv_tag_dir(f.kv, expr, &is_query);
	FUZZ_CHECK(ret == 0 || ret == -ENOENT);
	FUZZ_CHECK((ret == 0) == (want >= 0));
	for (int round = 0; round < 2; round++) {
		ret = kv_tag_readdir(f.kv, expr, &ents, &n);
		FUZZ_CHECK(ret == 0 || ret == -ENOENT);
		FUZZ_CHECK((ret == 0) == (want >= 0));
		if (ret)
			break;
		got = 0;
		for (size_t i = 0; i < n; i++) {
			for (int k = 0; k < NKEYS; k++)
				if (ents[i].id == ids[k])
					got |= 1 << k;
			FUZZ_CHECK(kv_tag_lookup(f.kv, expr, ents[i].name, &a) == 0);
			FUZZ_CHECK(a.id == ents[i].id);
		}
		FUZZ_CHECK(got == want && n == (size_t)__builtin_popcount((unsigned)want));
		kv_dirents_free(ents, n);
	}
	ret = kv_tag_lookup(f.kv, expr, expr, &a);
	FUZZ_CHECK(ret == 0 || ret == -ENOENT);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const uint8_t *list, *queries;
	size_t llen, qlen;
	char *q, *line, *save = NULL;

	fuzz_split(data, size, &list, &llen, &queries, &qlen);
	for (int k = 0; k < NKEYS; k++)
		set_tags(k, start_tags[k], strlen(start_tags[k]));
	check_list(list, llen);
	q = fuzz_strndup(queries, qlen);
	/* Each query twice: once against the tags the list left on key 0, once
	 * after they changed back, so a stale cache entry shows. */
	for (line = strtok_r(q, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		check_query(line);
		set_tags(0, start_tags[0], strlen(start_tags[0]));
		check_query(line);
		FUZZ_CHECK(kv_setxattr(f.kv, ids[0], "user.tags", list, llen, 0) <= 0);
	}
	free(q);
	return 0;
}
