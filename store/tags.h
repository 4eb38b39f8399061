/*
 * Private to store/: the tag index and the query cache (spec section 4).
 *
 * Every key in the tree is a member of each tag in its kv_meta.tags (sorted,
 * unique). The index maps a tag to the set of its member nodes, so listing a
 * tag costs O(its members). Tags made with mkdir ("declared") stay while
 * empty; they are persisted as the root record's tag list, since directories
 * never carry tags of their own.
 *
 * Locking: everything here is guarded by kv->lock (the store's only lock);
 * every function below expects it held.
 *
 * Cache validity: each tag carries a generation drawn from one store-wide
 * clock and renewed by every change of its member set, and a cached query
 * remembers the generations of the tags it read (0 for a tag that did not
 * exist). An entry is used only if all of them are unchanged, which is
 * exactly "no tag involved changed"; a tag deleted and made again gets a new
 * generation, never an old one.
 */
#ifndef NADB_STORE_TAGS_H
#define NADB_STORE_TAGS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "store/htab.h"

struct kv_store;
struct kv_node;

/* A key carries at most this many tags; the store at most this many declared. */
#define KV_TAGS_PER_KEY	     1024u
#define KV_TAGS_DECLARED_MAX 65535u

struct kv_tag {
	char *name;	     /* owned */
	struct htab members; /* struct kv_node *, by id */
	uint64_t gen;	     /* renewed by every membership change */
	bool declared;	     /* made with mkdir: kept while empty */
	/* Members a transaction's commit may add (kv_tag_hold): kept while
	 * empty, its member table sized for them. */
	uint32_t held;
};

struct kv_qcache;

struct kv_tag_index {
	struct htab by_name; /* struct kv_tag * */
	uint64_t clock;	     /* last generation handed out */
	uint64_t entries;    /* (tag, key) memberships */
	struct kv_qcache *cache;
	uint64_t cache_max; /* entries; 0 disables the cache */
	uint64_t hits, misses;
	/* Misses answered by the backend's query op, and those that fell back
	 * to the local index because the backend failed. */
	uint64_t backend_queries, backend_fallbacks;
	/* The declared tags as the backend had them when this mount last
	 * committed or fetched the root: what a root PUT carries as its base
	 * (kv_op.base_tags). decl_base_ok is false after a copy failed: the
	 * next root PUT then replaces the whole list. */
	char **decl_base;
	uint32_t ndecl_base;
	bool decl_base_ok;
};

int kv_tags_init(struct kv_store *kv, uint64_t cache_max);
void kv_tags_destroy(struct kv_store *kv);
/* Rebuilds the index from the loaded tree (at open). */
int kv_tags_load(struct kv_store *kv);

struct kv_tag *kv_tag_find(struct kv_store *kv, const char *name);
/* The generation of a tag, 0 if it does not exist. */
uint64_t kv_tag_gen(struct kv_store *kv, const char *name);
/* Does n carry tag? Binary search in its sorted list. */
bool kv_node_has_tag(const struct kv_node *n, const char *tag);

/* A key entered or left the tree: its tags follow it into/out of the index. */
int kv_tags_index_node(struct kv_store *kv, struct kv_node *n);
void kv_tags_unindex_node(struct kv_store *kv, struct kv_node *n);
/*
 * Replaces n's tags with tags[0..ntags) (sorted, unique, valid; ownership of
 * the array and strings passes to n on success). Updates the index, ctime
 * and the dirty list. -ENOMEM leaves everything as it was.
 */
int kv_node_set_tags(struct kv_store *kv, struct kv_node *n, char **tags, uint32_t ntags);
/*
 * A transaction's commit, before its first change, for each tag a key of it
 * will carry: the tag, made if missing, is held (kept even while empty, as
 * other keys of the commit leave it) and its member table has room for
 * every member held, so that kv_node_set_tags adding them needs no memory
 * (given the node's aux record). NULL when out of memory, nothing changed.
 */
struct kv_tag *kv_tag_hold(struct kv_store *kv, const char *name);
/* Ends every hold of t; t goes if nobody carries or declared it. */
void kv_tag_release(struct kv_store *kv, struct kv_tag *t);

/* Entry names (tag_names.c). */
/* n's path from the root into buf: its length, -ENOENT (not in the tree),
 * -ERANGE. */
ssize_t kv_node_path(const struct kv_node *n, char *buf, size_t size);
/* The entry name of the key at path[0..len). */
void kv_entry_name(const char *path, size_t len, char out[256]);
int kv_node_entry_name(const struct kv_node *n, char out[256]);
/* A long name: only a scan of candidates can tell which key it names. */
bool kv_entry_is_hashed(const char *entry);
/* The key a (not hashed) entry name names, or NULL. May expire keys. */
struct kv_node *kv_entry_resolve(struct kv_store *kv, const char *entry);

/* Query cache (tag_query.c). */
int kv_qcache_new(struct kv_qcache **out);
void kv_qcache_free(struct kv_qcache *c);
void kv_qcache_trim(struct kv_store *kv);
size_t kv_qcache_count(const struct kv_qcache *c);

/* Sorted, unique tag list from "a,b,c" (the user.tags format); -EINVAL on a
 * bad tag or an empty item, -ENOSPC past KV_TAGS_PER_KEY. "" gives 0 tags. */
int kv_tags_parse_list(const char *v, size_t len, char ***out, uint32_t *n);
void kv_tags_free_list(char **tags, uint32_t n);
/* A copy of tags[0..n) (NULL when n is 0). 0 or -ENOMEM. */
int kv_tags_copy_list(char *const *tags, uint32_t n, char ***out);
/* The declared tags the backend has now (decl_base) are tags[0..n). */
void kv_tags_decl_base_set(struct kv_store *kv, char *const *tags, uint32_t n);
/* Another mount changed the declared tags: the root's list was old[0..nold)
 * and is now what the backend holds; the tags follow, and it is the base. */
void kv_tags_declared_follow(struct kv_store *kv, char *const *old, uint32_t nold);
/* A copy of tags[0..n) with tag added (kept sorted) or removed. -ENOMEM. */
int kv_tags_edit(char *const *tags, uint32_t n, const char *tag, bool add, char ***out,
		 uint32_t *nout);

#endif
