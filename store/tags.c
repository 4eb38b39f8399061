/*
 * The tag index: tag -> member keys, kept in step with every key's tag list
 * (see store/tags.h for the invariants), plus the tags made with mkdir.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "store/kv_internal.h"

int kv_tag_check(const char *tag)
{
	return kv_tag_name_ok(tag, strlen(tag)) ? 0 : -EINVAL;
}

static uint64_t tag_hash(const void *item)
{
	const struct kv_tag *t = item;

	return htab_hash_bytes(t->name, strlen(t->name), 0);
}

static bool tag_match(const void *item, const void *key)
{
	return strcmp(((const struct kv_tag *)item)->name, key) == 0;
}

struct kv_tag *kv_tag_find(struct kv_store *kv, const char *name)
{
	return htab_find(&kv->tags.by_name, htab_hash_bytes(name, strlen(name), 0), name);
}

uint64_t kv_tag_gen(struct kv_store *kv, const char *name)
{
	struct kv_tag *t = kv_tag_find(kv, name);

	return t ? t->gen : 0;
}

static int str_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

bool kv_node_has_tag(const struct kv_node *n, const char *tag)
{
	return kv_node_ntags(n) &&
	       bsearch(&tag, kv_node_tags(n), kv_node_ntags(n), sizeof(char *), str_cmp);
}

static struct kv_tag *tag_get_or_make(struct kv_store *kv, const char *name)
{
	struct kv_tag *t = kv_tag_find(kv, name);

	if (t)
		return t;
	t = calloc(1, sizeof(*t));
	if (!t)
		return NULL;
	t->name = strdup(name);
	if (!t->name)
		goto out_free;
	htab_init(&t->members, kv_node_id_hash, kv_node_id_match);
	/* Filled in the order of the id index or of a snapshot (htab.h). */
	htab_set_seed(&t->members, 0xc2b2ae3d27d4eb4full);
	t->gen = ++kv->tags.clock;
	if (htab_insert(&kv->tags.by_name, t))
		goto out_free_name;
	return t;

out_free_name:
	free(t->name);
out_free:
	free(t);
	return NULL;
}

static void tag_free(struct kv_tag *t)
{
	htab_destroy(&t->members);
	free(t->name);
	free(t);
}

/* A tag nobody carries and nobody declared disappears. */
static void tag_maybe_drop(struct kv_store *kv, struct kv_tag *t)
{
	if (htab_count(&t->members) || t->declared || t->held)
		return;
	htab_remove(&kv->tags.by_name, t);
	tag_free(t);
}

static void tag_del_member(struct kv_store *kv, const char *name, struct kv_node *n)
{
	struct kv_tag *t = kv_tag_find(kv, name);

	if (!t || !htab_remove(&t->members, n))
		return;
	kv->tags.entries--;
	t->gen = ++kv->tags.clock;
	tag_maybe_drop(kv, t);
}

static int tag_add_member(struct kv_store *kv, const char *name, struct kv_node *n)
{
	struct kv_tag *t = tag_get_or_make(kv, name);
	int ret;

	if (!t)
		return -ENOMEM;
	ret = htab_insert(&t->members, n);
	if (ret) {
		tag_maybe_drop(kv, t);
		return ret;
	}
	kv->tags.entries++;
	t->gen = ++kv->tags.clock;
	return 0;
}

struct kv_tag *kv_tag_hold(struct kv_store *kv, const char *name)
{
	struct kv_tag *t = tag_get_or_make(kv, name);

	if (!t)
		return NULL;
	if (htab_reserve(&t->members, (size_t)t->held + 1)) {
		tag_maybe_drop(kv, t); /* made just now */
		return NULL;
	}
	t->held++;
	return t;
}

void kv_tag_release(struct kv_store *kv, struct kv_tag *t)
{
	t->held = 0;
	tag_maybe_drop(kv, t);
}

static bool node_indexed(const struct kv_node *n)
{
	return !S_ISDIR(n->m.mode) && !(n->flags & (KV_NODE_DELETED | KV_NODE_STAGED));
}

int kv_tags_index_node(struct kv_store *kv, struct kv_node *n)
{
	for (uint32_t i = 0; i < kv_node_ntags(n); i++) {
		int ret = tag_add_member(kv, kv_node_tags(n)[i], n);

		if (ret) {
			while (i--)
				tag_del_member(kv, kv_node_tags(n)[i], n);
			return ret;
		}
	}
	return 0;
}

void kv_tags_unindex_node(struct kv_store *kv, struct kv_node *n)
{
	for (uint32_t i = 0; i < kv_node_ntags(n); i++)
		tag_del_member(kv, kv_node_tags(n)[i], n);
}

void kv_tags_free_list(char **tags, uint32_t n)
{
	for (uint32_t i = 0; i < n; i++)
		free(tags[i]);
	free(tags);
}

/* n's list is tags now (the old one is the caller's); n->aux exists when
 * ntags does. */
static void set_list(struct kv_node *n, char **tags, uint32_t ntags)
{
	if (!n->aux) {
		free(tags);	/* an empty list */
		return;
	}
	n->aux->tags = ntags ? tags : NULL;
	n->aux->ntags = ntags;
	if (!ntags)
		free(tags);
}

int kv_node_set_tags(struct kv_store *kv, struct kv_node *n, char **tags, uint32_t ntags)
{
	char **old = kv_node_tags(n);
	uint32_t nold = kv_node_ntags(n);
	int ret = 0;

	/* Where the new list goes, made before anything changes. */
	if (ntags && !kv_node_aux(n))
		return -ENOMEM;
	if (node_indexed(n)) {
		/* Add the new memberships first, so a failure can be undone. */
		uint32_t i;

		for (i = 0; i < ntags; i++) {
			if (kv_node_has_tag(n, tags[i]))
				continue;
			ret = tag_add_member(kv, tags[i], n);
			if (ret)
				break;
		}
		if (ret) {
			while (i--)
				if (!kv_node_has_tag(n, tags[i]))
					tag_del_member(kv, tags[i], n);
			return ret;
		}
		set_list(n, tags, ntags);
		for (i = 0; i < nold; i++)
			if (!kv_node_has_tag(n, old[i]))
				tag_del_member(kv, old[i], n);
	} else {
		set_list(n, tags, ntags);
	}
	kv_tags_free_list(old, nold);
	kv_node_aux_trim(n);
	n->m.ctime_ns = kv_now_ns();
	/* Metadata only: tagging never rewrites the value. */
	if (!(n->flags & KV_NODE_DELETED))
		kv_mark_dirty(kv, n);
	return 0;
}

int kv_tags_parse_list(const char *v, size_t len, char ***out, uint32_t *n)
{
	char **tags = NULL;
	uint32_t count = 0, k = 0;
	size_t start = 0;
	int ret = 0;

	*out = NULL;
	*n = 0;
	if (len == 0)
		return 0;
	if (memchr(v, '\0', len))
		return -EINVAL;
	for (size_t i = 0; i < len; i++)
		count += v[i] == ',';
	if (++count > KV_TAGS_PER_KEY)
		return -ENOSPC;
	tags = calloc(count, sizeof(*tags));
	if (!tags)
		return -ENOMEM;
	for (size_t i = 0; i <= len; i++) {
		if (i < len && v[i] != ',')
			continue;
		tags[k] = strndup(v + start, i - start);
		if (!tags[k]) {
			ret = -ENOMEM;
			goto out_free;
		}
		ret = kv_tag_check(tags[k++]);
		if (ret)
			goto out_free;
		start = i + 1;
	}
	qsort(tags, k, sizeof(*tags), str_cmp);
	/* A tag named twice is carried once. */
	count = 0;
	for (uint32_t i = 0; i < k; i++) {
		if (count && !strcmp(tags[count - 1], tags[i]))
			free(tags[i]);
		else
			tags[count++] = tags[i];
	}
	*out = tags;
	*n = count;
	return 0;

out_free:
	kv_tags_free_list(tags, k);
	return ret;
}

/* --- declared tags: the root record's tag list ----------------------------- */

int kv_tags_edit(char *const *tags, uint32_t n, const char *tag, bool add, char ***out,
		 uint32_t *nout)
{
	char **list = calloc(n + 1, sizeof(*list));
	uint32_t k = 0;

	if (!list)
		return -ENOMEM;
	for (uint32_t i = 0; i < n; i++) {
		if (!add && !strcmp(tags[i], tag))
			continue;
		if (!(list[k] = strdup(tags[i])))
			goto out_free;
		k++;
	}
	if (add) {
		if (!(list[k] = strdup(tag)))
			goto out_free;
		k++;
		qsort(list, k, sizeof(*list), str_cmp);
	}
	*out = list;
	*nout = k;
	return 0;

out_free:
	kv_tags_free_list(list, k);
	return -ENOMEM;
}

int kv_tags_copy_list(char *const *tags, uint32_t n, char ***out)
{
	char **list;

	*out = NULL;
	if (!n)
		return 0;
	list = calloc(n, sizeof(*list));
	if (!list)
		return -ENOMEM;
	for (uint32_t i = 0; i < n; i++) {
		if (!(list[i] = strdup(tags[i]))) {
			kv_tags_free_list(list, i);
			return -ENOMEM;
		}
	}
	*out = list;
	return 0;
}

void kv_tags_decl_base_set(struct kv_store *kv, char *const *tags, uint32_t n)
{
	struct kv_tag_index *x = &kv->tags;

	kv_tags_free_list(x->decl_base, x->ndecl_base);
	x->ndecl_base = 0;
	x->decl_base_ok = !kv_tags_copy_list(tags, n, &x->decl_base);
	if (x->decl_base_ok)
		x->ndecl_base = n;
}

void kv_tags_declared_follow(struct kv_store *kv, char *const *old, uint32_t nold)
{
	struct kv_node *root = kv->root;
	struct kv_tag *t;

	for (uint32_t i = 0; i < nold; i++) {
		if (kv_node_has_tag(root, old[i]) || !(t = kv_tag_find(kv, old[i])))
			continue;
		t->declared = false;
		tag_maybe_drop(kv, t);
	}
	/* A tag the index cannot make now (ENOMEM) is still in the list and
	 * comes back at the next mount. */
	for (uint32_t i = 0; i < kv_node_ntags(root); i++)
		if ((t = tag_get_or_make(kv, kv_node_tags(root)[i])))
			t->declared = true;
	kv_tags_decl_base_set(kv, kv_node_tags(root), kv_node_ntags(root));
}

/* The root is a directory: the index ignores its list, which holds the
 * declared tags. */
static int root_tags_change(struct kv_store *kv, const char *tag, bool add)
{
	struct kv_node *root = kv->root;
	char **tags;
	uint32_t n;
	int ret = kv_tags_edit(kv_node_tags(root), kv_node_ntags(root), tag, add, &tags, &n);

	if (ret)
		return ret;
	ret = kv_node_set_tags(kv, root, tags, n);
	if (ret)
		kv_tags_free_list(tags, n);
	return ret;
}

int kv_tag_mkdir(struct kv_store *kv, const char *tag)
{
	struct kv_tag *t;
	int ret = kv_tag_check(tag);

	if (ret)
		return ret;
	pthread_mutex_lock(&kv->lock);
	t = kv_tag_find(kv, tag);
	if (t && (t->declared || htab_count(&t->members))) {
		ret = -EEXIST;
		goto out;
	}
	if (kv_node_ntags(kv->root) >= KV_TAGS_DECLARED_MAX) {
		ret = -ENOSPC;
		goto out;
	}
	t = tag_get_or_make(kv, tag);
	if (!t) {
		ret = -ENOMEM;
		goto out;
	}
	t->declared = true;
	ret = root_tags_change(kv, tag, true);
	if (ret) {
		t->declared = false;
		tag_maybe_drop(kv, t);
	}
out:
	pthread_mutex_unlock(&kv->lock);
	return ret;
}

int kv_tag_rmdir(struct kv_store *kv, const char *tag)
{
	struct kv_tag *t;
	int ret = 0;

	pthread_mutex_lock(&kv->lock);
	t = kv_tag_find(kv, tag);
	if (!t)
		ret = -ENOENT;
	else if (htab_count(&t->members))
		ret = -ENOTEMPTY;
	else if (t->declared)
		ret = root_tags_change(kv, tag, false);
	if (!ret && t) {
		t->declared = false;
		tag_maybe_drop(kv, t);
	}
	pthread_mutex_unlock(&kv->lock);
	return ret;
}

int kv_tag_list(struct kv_store *kv, struct kv_dirent **out, size_t *n)
{
	struct kv_dirent *ents;
	struct kv_tag *t;
	size_t k = 0;
	int ret = 0;

	pthread_mutex_lock(&kv->lock);
	ents = calloc(htab_count(&kv->tags.by_name) + 1, sizeof(*ents));
	if (!ents) {
		ret = -ENOMEM;
		goto out;
	}
	for (size_t i = 0; (t = htab_next(&kv->tags.by_name, &i));) {
		ents[k].mode = S_IFDIR;
		ents[k].name = strdup(t->name);
		if (!ents[k].name) {
			kv_dirents_free(ents, k);
			ret = -ENOMEM;
			goto out;
		}
		k++;
	}
	*out = ents;
	*n = k;
out:
	pthread_mutex_unlock(&kv->lock);
	return ret;
}

/* --- life cycle ------------------------------------------------------------ */

int kv_tags_init(struct kv_store *kv, uint64_t cache_max)
{
	htab_init(&kv->tags.by_name, tag_hash, tag_match);
	kv->tags.cache_max = cache_max;
	return kv_qcache_new(&kv->tags.cache);
}

int kv_tags_load(struct kv_store *kv)
{
	struct kv_node *n;
	int ret;

	for (size_t i = 0; (n = htab_next(&kv->by_id, &i));) {
		if (!node_indexed(n))
			continue;
		ret = kv_tags_index_node(kv, n);
		if (ret)
			return ret;
	}
	for (uint32_t i = 0; kv->root && i < kv_node_ntags(kv->root); i++) {
		struct kv_tag *t = tag_get_or_make(kv, kv_node_tags(kv->root)[i]);

		if (!t)
			return -ENOMEM;
		t->declared = true;
	}
	if (kv->root)
		kv_tags_decl_base_set(kv, kv_node_tags(kv->root), kv_node_ntags(kv->root));
	return 0;
}

void kv_tags_destroy(struct kv_store *kv)
{
	struct kv_tag *t;

	for (size_t i = 0; (t = htab_next(&kv->tags.by_name, &i));)
		tag_free(t);
	htab_destroy(&kv->tags.by_name);
	kv_qcache_free(kv->tags.cache);
	kv->tags.cache = NULL;
	kv_tags_free_list(kv->tags.decl_base, kv->tags.ndecl_base);
	kv->tags.decl_base = NULL;
	kv->tags.ndecl_base = 0;
}
