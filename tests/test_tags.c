/*
 * The tag index and query engine of the store (store/tags.c, tag_names.c,
 * tag_query.c) against the in-memory backend: user.tags, tag directories,
 * entry names, queries and their cache, persistence.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <cmocka.h>

#include "store/kv.h"
#include "tests/mem_backend.h"

static int setup(void **state)
{
	struct mem_store *f = malloc(sizeof(*f));

	mem_store_open(f, true);
	*state = f;
	return 0;
}

/* No sweeper: only exact expiry on access can hide an expired key. */
static int setup_nostart(void **state)
{
	struct mem_store *f = malloc(sizeof(*f));

	mem_store_open(f, false);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	mem_store_close(*state);
	free(*state);
	return 0;
}

/* Makes the key at path (creating its directories) and returns its id. */
static uint64_t mkkey(struct mem_store *f, const char *path)
{
	char buf[1100], *comp, *save = NULL, *next;
	uint64_t parent = KV_ROOT_ID;
	struct kv_attr a;

	snprintf(buf, sizeof(buf), "%s", path);
	for (comp = strtok_r(buf, "/", &save); comp; comp = next) {
		next = strtok_r(NULL, "/", &save);
		if (next) {
			int ret = kv_mkdir(f->kv, parent, comp, 0755, 0, 0, &a);

			if (ret == -EEXIST)
				ret = kv_lookup(f->kv, parent, comp, &a);
			assert_int_equal(ret, 0);
		} else {
			assert_int_equal(kv_create(f->kv, parent, comp, 0644, 0, 0, true, &a), 0);
			assert_int_equal(kv_write(f->kv, a.id, "v", 1, 0), 1);
		}
		parent = a.id;
	}
	return parent;
}

static void set_tags(struct mem_store *f, uint64_t id, const char *v)
{
	assert_int_equal(kv_setxattr(f->kv, id, "user.tags", v, strlen(v), 0), 0);
}

/* The tags of id as user.tags reads them, "" when it has none. */
static const char *tags_of(struct mem_store *f, uint64_t id, const char *name)
{
	static char buf[512];
	ssize_t n = kv_getxattr(f->kv, id, name, buf, sizeof(buf) - 1);

	if (n == -ENODATA)
		n = 0;
	assert_true(n >= 0);
	buf[n] = '\0';
	return buf;
}

/* The sorted entry names of a tag or query directory, comma-joined; or the
 * error as "E<errno>". */
static const char *listing(struct mem_store *f, const char *expr)
{
	static char out[4096];
	struct kv_dirent *ents;
	size_t n;
	int ret = kv_tag_readdir(f->kv, expr, &ents, &n);

	if (ret) {
		snprintf(out, sizeof(out), "E%d", -ret);
		return out;
	}
	/* Simple insertion sort: listings in tests are short. */
	for (size_t i = 1; i < n; i++)
		for (size_t j = i; j > 0 && strcmp(ents[j - 1].name, ents[j].name) > 0; j--) {
			struct kv_dirent t = ents[j];

			ents[j] = ents[j - 1];
			ents[j - 1] = t;
		}
	out[0] = '\0';
	for (size_t i = 0; i < n; i++) {
		assert_int_equal(ents[i].mode, S_IFLNK);
		strcat(out, i ? "," : "");
		strcat(out, ents[i].name);
	}
	kv_dirents_free(ents, n);
	return out;
}

static bool tag_listed(struct mem_store *f, const char *tag)
{
	struct kv_dirent *ents;
	size_t n;
	bool found = false;

	assert_int_equal(kv_tag_list(f->kv, &ents, &n), 0);
	for (size_t i = 0; i < n; i++)
		found |= !strcmp(ents[i].name, tag);
	kv_dirents_free(ents, n);
	return found;
}

static void test_tag_name_rules(void **state)
{
	static const char *const good[] = { "a", "color:red", "v1.2", "a@b=c", "x-y", "_", "..." };
	static const char *const bad[] = { "", "-a", ".", "..", "a b", "a,b", "a+b", "a/b", "é",
					   "a\n" };
	char big[300];

	(void)state;
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
		assert_int_equal(kv_tag_check(good[i]), 0);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_int_equal(kv_tag_check(bad[i]), -EINVAL);
	memset(big, 'a', 255);
	big[255] = '\0';
	assert_int_equal(kv_tag_check(big), 0);
	big[255] = 'a';
	big[256] = '\0';
	assert_int_equal(kv_tag_check(big), -EINVAL);
}

static void test_user_tags_set_get_clear(void **state)
{
	struct mem_store *f = *state;
	uint64_t id = mkkey(f, "k");
	char buf[64];

	set_tags(f, id, "red,blue,red");
	assert_string_equal(tags_of(f, id, "user.tags"), "blue,red");
	assert_string_equal(tags_of(f, id, "user.xdg.tags"), "blue,red");
	assert_int_equal(kv_getxattr(f->kv, id, "user.tags", NULL, 0), 8);
	assert_int_equal(kv_getxattr(f->kv, id, "user.tags", buf, 3), -ERANGE);
	/* Listed with the key's other names while it has tags. */
	assert_int_equal(kv_listxattr(f->kv, id, buf, sizeof(buf)), 24);
	assert_memory_equal(buf, "user.tags\0user.xdg.tags\0", 24);
	/* The alias sets the same list. */
	assert_int_equal(kv_setxattr(f->kv, id, "user.xdg.tags", "green", 5, 0), 0);
	assert_string_equal(tags_of(f, id, "user.tags"), "green");
	/* "" clears; then the name is absent and not listed. */
	assert_int_equal(kv_setxattr(f->kv, id, "user.tags", "", 0, 0), 0);
	assert_int_equal(kv_getxattr(f->kv, id, "user.tags", buf, sizeof(buf)), -ENODATA);
	assert_int_equal(kv_listxattr(f->kv, id, NULL, 0), 0);
	assert_false(tag_listed(f, "green"));
	/* removexattr clears too; create/replace flags as for any xattr. */
	set_tags(f, id, "a");
	assert_int_equal(kv_setxattr(f->kv, id, "user.tags", "b", 1, KV_XATTR_CREATE), -EEXIST);
	assert_int_equal(kv_removexattr(f->kv, id, "user.tags"), 0);
	assert_int_equal(kv_removexattr(f->kv, id, "user.tags"), -ENODATA);
	assert_int_equal(kv_setxattr(f->kv, id, "user.tags", "b", 1, KV_XATTR_REPLACE), -ENODATA);
}

static void test_bad_tags_change_nothing(void **state)
{
	struct mem_store *f = *state;
	uint64_t id = mkkey(f, "k");
	static const char *const bad[] = { "a,,b", ",a", "a,", "a b", "-x", "a,..", "a+b" };
	struct kv_attr dir;

	set_tags(f, id, "keep");
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_int_equal(kv_setxattr(f->kv, id, "user.tags", bad[i], strlen(bad[i]), 0),
				 -EINVAL);
	assert_int_equal(kv_setxattr(f->kv, id, "user.tags", "a\0b", 3, 0), -EINVAL);
	assert_string_equal(tags_of(f, id, "user.tags"), "keep");
	assert_string_equal(listing(f, "keep"), "k");
	/* Directories carry no tags. */
	assert_int_equal(kv_mkdir(f->kv, KV_ROOT_ID, "d", 0755, 0, 0, &dir), 0);
	assert_int_equal(kv_setxattr(f->kv, dir.id, "user.tags", "a", 1, 0), -ENOTSUP);
	assert_int_equal(kv_getxattr(f->kv, dir.id, "user.tags", NULL, 0), -ENOTSUP);
}

static void test_too_many_tags(void **state)
{
	struct mem_store *f = *state;
	uint64_t id = mkkey(f, "k");
	size_t cap = 1025 * 6;
	char *v = malloc(cap), *p = v;

	for (int i = 0; i < 1025; i++)
		p += sprintf(p, "%s%d", i ? "," : "", i);
	assert_int_equal(kv_setxattr(f->kv, id, "user.tags", v, strlen(v), 0), -ENOSPC);
	/* 1024 fit. */
	*strrchr(v, ',') = '\0';
	assert_int_equal(kv_setxattr(f->kv, id, "user.tags", v, strlen(v), 0), 0);
	free(v);
}

static void test_entry_names_escape_and_resolve(void **state)
{
	struct mem_store *f = *state;
	uint64_t a = mkkey(f, "users/42/profile"), b = mkkey(f, "100%/x"), c;
	char path[64];
	struct kv_attr at;

	set_tags(f, a, "t");
	set_tags(f, b, "t");
	assert_string_equal(listing(f, "t"), "100%25%2Fx,users%2F42%2Fprofile");
	assert_int_equal(kv_tag_lookup(f->kv, "t", "users%2F42%2Fprofile", &at), 0);
	assert_int_equal(at.id, a);
	assert_int_equal(kv_tag_lookup(f->kv, "t", "100%25%2Fx", &at), 0);
	assert_int_equal(at.id, b);
	/* Only %25 and %2F are escapes. */
	assert_int_equal(kv_tag_lookup(f->kv, "t", "users%2f42%2fprofile", &at), -ENOENT);
	assert_int_equal(kv_tag_lookup(f->kv, "t", "100%%2Fx", &at), -ENOENT);
	assert_int_equal(kv_tag_lookup(f->kv, "t", "users%2F42", &at), -ENOENT); /* a dir */
	/* A key that exists but does not carry the tag is not in its directory. */
	c = mkkey(f, "plain");
	assert_int_equal(kv_tag_lookup(f->kv, "t", "plain", &at), -ENOENT);
	assert_int_equal(kv_key_path(f->kv, a, path, sizeof(path)), 16);
	assert_string_equal(path, "users/42/profile");
	assert_int_equal(kv_key_path(f->kv, a, path, 10), -ERANGE);
	(void)c;
}

static void test_long_entry_names_are_hashed(void **state)
{
	struct mem_store *f = *state;
	char key[400], name[256];
	struct kv_dirent *ents;
	struct kv_attr at;
	size_t n;
	uint64_t id;

	/* 3 levels of 120 bytes: 362 bytes, longer once escaped. */
	memset(key, 'x', sizeof(key));
	key[120] = key[241] = '/';
	key[362] = '\0';
	id = mkkey(f, key);
	set_tags(f, id, "long");
	assert_int_equal(kv_tag_readdir(f->kv, "long", &ents, &n), 0);
	assert_int_equal(n, 1);
	assert_int_equal(strlen(ents[0].name), 255);
	assert_memory_equal(ents[0].name, key, 120);
	assert_memory_equal(ents[0].name + 120, "%2F", 3);
	assert_int_equal(ents[0].name[238], '~');
	snprintf(name, sizeof(name), "%s", ents[0].name);
	kv_dirents_free(ents, n);
	assert_int_equal(kv_tag_lookup(f->kv, "long", name, &at), 0);
	assert_int_equal(at.id, id);
	/* A wrong hash names nothing; untagging by the long name works. */
	name[254] = name[254] == '0' ? '1' : '0';
	assert_int_equal(kv_tag_lookup(f->kv, "long", name, &at), -ENOENT);
	name[254] = name[254] == '0' ? '1' : '0';
	assert_int_equal(kv_tag_unlink(f->kv, "long", name), 0);
	assert_string_equal(tags_of(f, id, "user.tags"), "");
}

static void test_removal_rename_recreate(void **state)
{
	struct mem_store *f = *state;
	uint64_t id = mkkey(f, "d/k");
	struct kv_attr d;

	set_tags(f, id, "red");
	assert_true(tag_listed(f, "red"));
	assert_int_equal(kv_lookup(f->kv, KV_ROOT_ID, "d", &d), 0);
	assert_int_equal(kv_rename(f->kv, d.id, "k", KV_ROOT_ID, "moved", 0), 0);
	assert_string_equal(listing(f, "red"), "moved");
	/* Re-created under the same name: a new key, without the old tags. */
	assert_int_equal(kv_unlink(f->kv, KV_ROOT_ID, "moved"), 0);
	assert_string_equal(listing(f, "red"), "E2");
	assert_false(tag_listed(f, "red"));
	mkkey(f, "moved");
	assert_string_equal(listing(f, "red"), "E2");
}

static void test_rename_over_a_tagged_key(void **state)
{
	struct mem_store *f = *state;
	uint64_t a = mkkey(f, "a"), b = mkkey(f, "b");

	set_tags(f, a, "x");
	set_tags(f, b, "y");
	assert_int_equal(kv_rename(f->kv, KV_ROOT_ID, "a", KV_ROOT_ID, "b", 0), 0);
	assert_string_equal(listing(f, "x"), "b");
	assert_string_equal(listing(f, "y"), "E2");
}

static void test_mkdir_rmdir_and_persistence(void **state)
{
	struct mem_store *f = *state;
	uint64_t id = mkkey(f, "k");

	assert_int_equal(kv_tag_mkdir(f->kv, "empty"), 0);
	assert_int_equal(kv_tag_mkdir(f->kv, "empty"), -EEXIST);
	assert_int_equal(kv_tag_mkdir(f->kv, "a+b"), -EINVAL);
	assert_string_equal(listing(f, "empty"), "");
	set_tags(f, id, "used,empty");
	assert_int_equal(kv_tag_mkdir(f->kv, "used"), -EEXIST);
	assert_int_equal(kv_tag_rmdir(f->kv, "empty"), -ENOTEMPTY);
	assert_int_equal(kv_tag_rmdir(f->kv, "nope"), -ENOENT);
	/* A declared tag outlives its last key; an undeclared one does not. */
	set_tags(f, id, "");
	assert_true(tag_listed(f, "empty"));
	assert_false(tag_listed(f, "used"));
	set_tags(f, id, "kept");
	mem_store_reopen(f, true);
	assert_true(tag_listed(f, "empty"));
	assert_true(tag_listed(f, "kept"));
	assert_string_equal(listing(f, "kept"), "k");
	assert_string_equal(tags_of(f, id, "user.tags"), "kept");
	assert_int_equal(kv_tag_rmdir(f->kv, "empty"), 0);
	assert_false(tag_listed(f, "empty"));
	mem_store_reopen(f, true);
	assert_false(tag_listed(f, "empty"));
}

static void test_tagging_never_rewrites_the_value(void **state)
{
	struct mem_store *f = *state;
	uint64_t id = mkkey(f, "k");

	assert_int_equal(kv_flush(f->kv), 0);
	set_tags(f, id, "a,b");
	assert_int_equal(kv_flush(f->kv), 0);
	assert_int_equal(f->s.puts_with_value, 0);
	assert_int_equal(mem_find_id(&f->s, id)->m.ntags, 2);
}

static void test_queries(void **state)
{
	struct mem_store *f = *state;
	bool q;

	set_tags(f, mkkey(f, "1"), "user,active");
	set_tags(f, mkkey(f, "2"), "user,inactive");
	set_tags(f, mkkey(f, "3"), "user");
	set_tags(f, mkkey(f, "4"), "admin,active");
	assert_string_equal(listing(f, "user+active"), "1");
	assert_string_equal(listing(f, "active+user"), "1");
	assert_string_equal(listing(f, "user+-inactive"), "1,3");
	assert_string_equal(listing(f, "admin,inactive"), "2,4");
	assert_string_equal(listing(f, "user+active,admin"), "1,4");
	assert_string_equal(listing(f, "active,active+user"), "1,4"); /* no duplicates */
	/* An unknown tag inside a query is an empty set... */
	assert_string_equal(listing(f, "user+ghost"), "");
	assert_string_equal(listing(f, "ghost,admin"), "4");
	assert_string_equal(listing(f, "user+-ghost"), "1,2,3");
	assert_int_equal(kv_tag_dir(f->kv, "user+ghost", &q), 0);
	assert_true(q);
	/* ... but alone it names nothing. */
	assert_int_equal(kv_tag_dir(f->kv, "ghost", &q), -ENOENT);
	assert_int_equal(kv_tag_dir(f->kv, "user", &q), 0);
	assert_false(q);
}

static void test_malformed_queries(void **state)
{
	struct mem_store *f = *state;
	static const char *const bad[] = { "-user", "user,-active", "user+", "+user", ",user",
					   "user,", "user++active", "user,,admin", "--user",
					   "user+a b", "user+.", "" };
	bool q;

	set_tags(f, mkkey(f, "1"), "user,active");
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(kv_tag_dir(f->kv, bad[i], &q), -ENOENT);
		assert_string_equal(listing(f, bad[i]), "E2");
	}
}

static void test_query_lookup_and_readonly(void **state)
{
	struct mem_store *f = *state;
	uint64_t id = mkkey(f, "k");
	struct kv_attr a;

	set_tags(f, id, "a,b");
	assert_int_equal(kv_tag_lookup(f->kv, "a+b", "k", &a), 0);
	assert_int_equal(a.id, id);
	assert_int_equal(kv_tag_lookup(f->kv, "a+-b", "k", &a), -ENOENT);
	assert_int_equal(kv_tag_link(f->kv, "a+b", "k", &a), -EPERM);
	assert_int_equal(kv_tag_unlink(f->kv, "a,b", "k"), -EPERM);
}

static void test_link_and_unlink_entries(void **state)
{
	struct mem_store *f = *state;
	uint64_t id = mkkey(f, "dir/k");
	struct kv_attr a;
	char buf[8];

	assert_int_equal(kv_tag_link(f->kv, "t", "dir%2Fk", &a), 0);
	assert_int_equal(a.id, id);
	assert_int_equal(kv_tag_link(f->kv, "t", "dir%2Fk", &a), -EEXIST);
	assert_int_equal(kv_tag_link(f->kv, "t", "dir%2Fmissing", &a), -ENOENT);
	assert_int_equal(kv_tag_link(f->kv, "t", "dir", &a), -ENOENT); /* not a key */
	assert_string_equal(tags_of(f, id, "user.tags"), "t");
	assert_int_equal(kv_tag_unlink(f->kv, "t", "dir%2Fk"), 0);
	assert_int_equal(kv_tag_unlink(f->kv, "t", "dir%2Fk"), -ENOENT);
	assert_string_equal(tags_of(f, id, "user.tags"), "");
	/* Untagging never touches the data. */
	assert_int_equal(kv_read(f->kv, id, buf, sizeof(buf), 0), 1);
}

static void test_query_cache_hits_and_invalidation(void **state)
{
	struct mem_store *f = *state;
	uint64_t k1 = mkkey(f, "1"), k2 = mkkey(f, "2"), k3 = mkkey(f, "3");
	struct kv_stats st;

	set_tags(f, k1, "a,b");
	set_tags(f, k2, "a");
	set_tags(f, k3, "other");
	assert_string_equal(listing(f, "a+b"), "1");
	assert_string_equal(listing(f, "a+b"), "1");
	kv_get_stats(f->kv, &st);
	assert_int_equal(st.query_misses, 1);
	assert_int_equal(st.query_hits, 1);
	assert_int_equal(st.query_cached, 1);
	assert_int_equal(st.tags, 3);
	assert_int_equal(st.tag_entries, 4);
	/* A tag the query does not involve: still a hit. */
	set_tags(f, k3, "other,more");
	assert_string_equal(listing(f, "a+b"), "1");
	kv_get_stats(f->kv, &st);
	assert_int_equal(st.query_hits, 2);
	/* A tag it involves: recomputed, with the new answer. */
	set_tags(f, k2, "a,b");
	assert_string_equal(listing(f, "a+b"), "1,2");
	kv_get_stats(f->kv, &st);
	assert_int_equal(st.query_misses, 2);
	/* A negated tag that did not exist yet is involved too. */
	assert_string_equal(listing(f, "a+-c"), "1,2");
	set_tags(f, k1, "a,b,c");
	assert_string_equal(listing(f, "a+-c"), "2");
	/* Deleting a member invalidates. */
	assert_int_equal(kv_unlink(f->kv, KV_ROOT_ID, "2"), 0);
	assert_string_equal(listing(f, "a+b"), "1");
}

static void test_query_cache_is_bounded(void **state)
{
	struct mem_store *f = *state;
	struct kv_options o = f->o;
	struct kv_stats st;

	set_tags(f, mkkey(f, "1"), "a,b,c");
	assert_string_equal(listing(f, "a+b"), "1");
	assert_string_equal(listing(f, "a+c"), "1");
	assert_string_equal(listing(f, "b+c"), "1");
	kv_get_stats(f->kv, &st);
	assert_int_equal(st.query_cached, 3);
	o.query_cache_size = 2;
	kv_reconfigure(f->kv, &o);
	kv_get_stats(f->kv, &st);
	assert_int_equal(st.query_cached, 2);
	/* The least recently used one ("a+b") went. */
	assert_string_equal(listing(f, "b+c"), "1");
	assert_string_equal(listing(f, "a+c"), "1");
	kv_get_stats(f->kv, &st);
	assert_int_equal(st.query_hits, 2);
	assert_string_equal(listing(f, "a+b"), "1");
	kv_get_stats(f->kv, &st);
	assert_int_equal(st.query_misses, 4);
	/* 0 disables it. */
	o.query_cache_size = 0;
	kv_reconfigure(f->kv, &o);
	assert_string_equal(listing(f, "a+b"), "1");
	kv_get_stats(f->kv, &st);
	assert_int_equal(st.query_cached, 0);
}

/* Without the sweeper, a key past its deadline is still gone from every
 * listing and lookup at once. */
static void test_expired_keys_leave_tags_on_access(void **state)
{
	struct mem_store *f = *state;
	struct timespec now;
	struct kv_attr a;
	char *tags[] = { "t" };
	int64_t deadline;

	assert_int_equal(kv_close(f->kv), 0);
	clock_gettime(CLOCK_REALTIME, &now);
	deadline = now.tv_sec * 1000 + now.tv_nsec / 1000000 + 200;
	struct kv_meta m = { .id = 700, .parent = KV_ROOT_ID, .name = "soon",
			     .mode = S_IFREG | 0644, .expires_ms = deadline, .tags = tags,
			     .ntags = 1 };
	struct kv_meta m2 = { .id = 701, .parent = KV_ROOT_ID, .name = "stays",
			      .mode = S_IFREG | 0644, .tags = tags, .ntags = 1 };
	mem_put_raw(&f->s, &m);
	mem_put_raw(&f->s, &m2);
	f->o.backend_instance = mem_backend_new(&f->s);
	{
		char err[256];

		assert_int_equal(kv_open(&f->o, &f->kv, err, sizeof(err)), 0);
	}
	assert_string_equal(listing(f, "t"), "soon,stays");
	assert_string_equal(listing(f, "t+t"), "soon,stays");
	/* The deadline is a wall-clock time: wait until it has passed. */
	do {
		struct timespec ts = { 0, 20 * 1000000 };

		nanosleep(&ts, NULL);
		clock_gettime(CLOCK_REALTIME, &now);
	} while (now.tv_sec * 1000 + now.tv_nsec / 1000000 <= deadline);
	assert_int_equal(kv_tag_lookup(f->kv, "t", "soon", &a), -ENOENT);
	assert_string_equal(listing(f, "t"), "stays");
	assert_string_equal(listing(f, "t+t"), "stays");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_tag_name_rules),
		cmocka_unit_test_setup_teardown(test_user_tags_set_get_clear, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bad_tags_change_nothing, setup, teardown),
		cmocka_unit_test_setup_teardown(test_too_many_tags, setup, teardown),
		cmocka_unit_test_setup_teardown(test_entry_names_escape_and_resolve, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_long_entry_names_are_hashed, setup, teardown),
		cmocka_unit_test_setup_teardown(test_removal_rename_recreate, setup, teardown),
		cmocka_unit_test_setup_teardown(test_rename_over_a_tagged_key, setup, teardown),
		cmocka_unit_test_setup_teardown(test_mkdir_rmdir_and_persistence, setup, teardown),
		cmocka_unit_test_setup_teardown(test_tagging_never_rewrites_the_value, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_queries, setup, teardown),
		cmocka_unit_test_setup_teardown(test_malformed_queries, setup, teardown),
		cmocka_unit_test_setup_teardown(test_query_lookup_and_readonly, setup, teardown),
		cmocka_unit_test_setup_teardown(test_link_and_unlink_entries, setup, teardown),
		cmocka_unit_test_setup_teardown(test_query_cache_hits_and_invalidation, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_query_cache_is_bounded, setup, teardown),
		cmocka_unit_test_setup_teardown(test_expired_keys_leave_tags_on_access,
						setup_nostart, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
