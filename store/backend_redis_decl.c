/*
 * Declared tags (mkdir tags/X with no key carrying X) on a Redis store that
 * several mounts share. The store keeps them as the root record's tag list,
 * which every mount rewrites whole whenever something at the top level
 * changes; in Redis they live in a set of their own, T:decl, that a commit
 * changes tag by tag: a root PUT carries the list as this mount last
 * committed or fetched it (kv_op.base_tags), and the commit script adds what
 * this mount added and removes what it removed, so what another mount
 * declared meanwhile stays. Where the set then differs from this mount's
 * list, the script tells every mount to fetch the root again, and a fetch
 * of the root takes its tag list from the set.
 *
 * T:decl always holds the empty string too (no tag can be empty): a store
 * whose set is missing was written before the set existed, and its first
 * commit that changes a declared tag seeds the set from the root's list.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "store/backend_redis.h"
#include "util/log.h"

_Static_assert(KV_ROOT_ID == 1, "the scripts name the root '1'");

/* The record format's bound on a tag list (and the store's on declared
 * tags). */
#define DECL_MAX 65535u

static void free_list(char **tags, uint32_t n)
{
	for (uint32_t i = 0; i < n; i++)
		free(tags[i]);
	free(tags);
}

/* tags[0..n) NUL-joined after a one-byte prefix (none if prefix is 0). */
static char *join(char prefix, char *const *tags, uint32_t n, size_t *len)
{
	size_t cap = 2, k = 0;
	char *s;

	for (uint32_t i = 0; i < n; i++)
		cap += strlen(tags[i]) + 1;
	s = malloc(cap);
	if (!s)
		return NULL;
	if (prefix)
		s[k++] = prefix;
	for (uint32_t i = 0; i < n; i++) {
		size_t l = strlen(tags[i]);

		if (i)
			s[k++] = '\0';
		memcpy(s + k, tags[i], l);
		k += l;
	}
	s[k] = '\0';
	*len = k;
	return s;
}

static bool same_list(char *const *a, uint32_t na, char *const *b, uint32_t nb)
{
	if (na != nb)
		return false;
	for (uint32_t i = 0; i < na; i++)
		if (strcmp(a[i], b[i]))
			return false;
	return true;
}

int kv_redis_decl_args(const struct kv_op *ops, size_t n, char **want, size_t *wantlen,
		       char **base, size_t *baselen)
{
	const struct kv_op *root = NULL;

	*want = *base = NULL;
	*wantlen = *baselen = 0;
	for (size_t i = 0; i < n; i++)
		if (ops[i].type == KV_OP_PUT && ops[i].meta.id == KV_ROOT_ID)
			root = &ops[i];
	/* Nothing declared or undeclared since this mount last agreed with
	 * Redis: the set is not looked at. */
	if (!root || (root->has_base && same_list(root->meta.tags, root->meta.ntags,
						  root->base_tags, root->nbase_tags)))
		return 0;
	*want = join(root->has_base ? 'd' : 'r', root->meta.tags, root->meta.ntags, wantlen);
	*base = join(0, root->base_tags, root->has_base ? root->nbase_tags : 0, baselen);
	if (!*want || !*base) {
		free(*want);
		free(*base);
		*want = *base = NULL;
		return -ENOMEM;
	}
	return 0;
}

int kv_redis_decl_append(struct kv_redis *r, redisContext *c)
{
	char key[128];
	const char *argv[] = { "SMEMBERS", key };

	snprintf(key, sizeof(key), "%sdecl", r->tag);
	if (redisAppendCommandArgv(c, 2, argv, NULL) != REDIS_OK)
		return kv_redis_error(r, c, NULL, "declared tags");
	return 0;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

int kv_redis_decl_apply(struct kv_redis *r, redisContext *c, const redisReply *rep,
			struct kv_meta *m)
{
	bool seeded = false;
	uint32_t k = 0;
	char **tags;

	if (rep->type != REDIS_REPLY_ARRAY)
		return kv_redis_error(r, c, rep, "declared tags");
	for (size_t i = 0; i < rep->elements; i++)
		if (rep->element[i]->type == REDIS_REPLY_STRING && !rep->element[i]->len)
			seeded = true;
	/* A store from before the set: the record's own list stands. */
	if (!seeded)
		return 0;
	tags = calloc(rep->elements + 1, sizeof(*tags));
	if (!tags)
		return -ENOMEM;
	for (size_t i = 0; i < rep->elements; i++) {
		const redisReply *e = rep->element[i];

		if (e->type != REDIS_REPLY_STRING || !e->len)
			continue;
		/* Only what this version would accept itself: a bad member
		 * would make every later commit of the root fail. */
		if (!kv_tag_name_ok(e->str, e->len) || memchr(e->str, '\0', e->len))
			continue;
		if (k == DECL_MAX) {
			NLOG(NLOG_WARN, "backend", "too many declared tags: some are not shown",
			     LF_STR("server", r->where), LF_INT("max", DECL_MAX));
			break;
		}
		tags[k] = strndup(e->str, e->len);
		if (!tags[k]) {
			free_list(tags, k);
			return -ENOMEM;
		}
		k++;
	}
	qsort(tags, k, sizeof(*tags), cmp_str);
	free_list(m->tags, m->ntags);
	m->tags = tags;
	m->ntags = k;
	return 0;
}
