/*
 * A transaction's commit is all or nothing also when memory runs out
 * (spec 6a): the allocators are wrapped (-Wl,--wrap) so that the Nth
 * allocation the committing thread makes fails, for N = 1, 2, ... until a
 * commit makes fewer than N. After every failed commit the store must be
 * exactly as before it (values, xattrs, tags, tag listings, deadlines,
 * directory entries, times, versions) and the transaction still there, so
 * that committing it again gives the same result as a commit that never
 * failed.
 *
 * Only the test's own thread counts: the flusher and the sweeper allocate
 * when they please, which would make the Nth allocation a matter of luck.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <cmocka.h>

#include "store/kv_internal.h"
#include "tests/mem_backend.h"

void *__real_malloc(size_t size);
void *__real_calloc(size_t nmemb, size_t size);
void *__real_realloc(void *p, size_t size);
char *__real_strdup(const char *s);
char *__real_strndup(const char *s, size_t n);
void *__wrap_malloc(size_t size);
void *__wrap_calloc(size_t nmemb, size_t size);
void *__wrap_realloc(void *p, size_t size);
char *__wrap_strdup(const char *s);
char *__wrap_strndup(const char *s, size_t n);

/* While armed: allocations made so far, and the one that fails (0: none). */
static _Thread_local bool armed, fired;
static _Thread_local long counted, fail_at;
/* What the last commit said. */
static char last_msg[256];

static bool fail_now(void)
{
	if (!armed)
		return false;
	if (++counted != fail_at)
		return false;
	fired = true;
	errno = ENOMEM;
	return true;
}

void *__wrap_malloc(size_t size)
{
	return fail_now() ? NULL : __real_malloc(size);
}

void *__wrap_calloc(size_t nmemb, size_t size)
{
	return fail_now() ? NULL : __real_calloc(nmemb, size);
}

void *__wrap_realloc(void *p, size_t size)
{
	return fail_now() ? NULL : __real_realloc(p, size);
}

char *__wrap_strdup(const char *s)
{
	return fail_now() ? NULL : __real_strdup(s);
}

char *__wrap_strndup(const char *s, size_t n)
{
	return fail_now() ? NULL : __real_strndup(s, n);
}

/* --- the store as text ----------------------------------------------------- */

struct text {
	char *s;
	size_t len, cap;
};

static void say(struct text *t, const char *fmt, ...)
{
	va_list ap;
	int n;

	for (;;) {
		va_start(ap, fmt);
		n = vsnprintf(t->s + t->len, t->cap - t->len, fmt, ap);
		va_end(ap);
		assert_true(n >= 0);
		if (t->len + (size_t)n < t->cap)
			break;
		t->cap = (t->cap + (size_t)n) * 2 + 256;
		t->s = realloc(t->s, t->cap);
		assert_non_null(t->s);
	}
	t->len += (size_t)n;
}

static int cmp_ent(const void *a, const void *b)
{
	return strcmp(((const struct kv_dirent *)a)->name, ((const struct kv_dirent *)b)->name);
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

struct snap_ctx {
	struct mem_store *f;
	int64_t t0; /* deadlines are shown as seconds after it */
	bool exact; /* times, versions and buffer counters too */
};

static void dump_node(struct snap_ctx *c, uint64_t id, const char *path, struct text *t)
{
	struct kv_store *kv = c->f->kv;
	struct kv_attr a;
	char names[1024], val[256], *list[32];
	size_t nn = 0;
	ssize_t len;
	int64_t at;
	uint64_t version;

	assert_int_equal(kv_getattr(kv, id, &a), 0);
	pthread_mutex_lock(&kv->lock);
	at = kv_node_expires(kv_node_get(kv, id));
	version = kv_node_get(kv, id)->version;
	pthread_mutex_unlock(&kv->lock);
	say(t, "%s %s %04o uid=%u size=%llu", path, S_ISDIR(a.mode) ? "dir" : "key",
	    (unsigned)(a.mode & 07777), a.uid, (unsigned long long)a.size);
	if (at)
		say(t, " ttl=%lld", (long long)((at - c->t0 + 500) / 1000));
	if (c->exact)
		say(t, " mtime=%lld ctime=%lld version=%llu", (long long)a.mtime_ns,
		    (long long)a.ctime_ns, (unsigned long long)version);
	if (!S_ISDIR(a.mode)) {
		len = kv_read(kv, id, val, sizeof(val) - 1, 0);
		assert_true(len >= 0);
		val[len] = '\0';
		say(t, " value=\"%s\"", val);
	}
	len = kv_listxattr(kv, id, names, sizeof(names));
	assert_true(len >= 0);
	for (size_t p = 0; p < (size_t)len; p += strlen(names + p) + 1)
		list[nn++] = names + p;
	qsort(list, nn, sizeof(*list), cmp_str);
	for (size_t i = 0; i < nn; i++) {
		/* user.ttl is seconds left, rounded: shown by ttl= above. */
		if (!strcmp(list[i], "user.ttl")) {
			say(t, " [user.ttl]");
			continue;
		}
		len = kv_getxattr(kv, id, list[i], val, sizeof(val) - 1);
		assert_true(len >= 0);
		val[len] = '\0';
		say(t, " [%s=%s]", list[i], val);
	}
	say(t, "\n");
}

static void dump_dir(struct snap_ctx *c, uint64_t id, const char *path, struct text *t)
{
	struct kv_dirent *ents;
	size_t n;

	dump_node(c, id, path, t);
	assert_int_equal(kv_readdir(c->f->kv, id, &ents, &n), 0);
	qsort(ents, n, sizeof(*ents), cmp_ent);
	for (size_t i = 0; i < n; i++) {
		char sub[512];

		if (!strcmp(ents[i].name, ".") || !strcmp(ents[i].name, ".."))
			continue;
		snprintf(sub, sizeof(sub), "%s/%s", path, ents[i].name);
		if (S_ISDIR(ents[i].mode))
			dump_dir(c, ents[i].id, sub, t);
		else
			dump_node(c, ents[i].id, sub, t);
	}
	kv_dirents_free(ents, n);
}

/* Everything a user can see of the store, plus the counters behind it. */
static char *snapshot(struct snap_ctx *c)
{
	struct kv_store *kv = c->f->kv;
	struct kv_dirent *tags, *keys;
	struct text t = { 0 };
	size_t nt, nk;

	dump_dir(c, KV_ROOT_ID, "", &t);
	assert_int_equal(kv_tag_list(kv, &tags, &nt), 0);
	qsort(tags, nt, sizeof(*tags), cmp_ent);
	for (size_t i = 0; i < nt; i++) {
		say(&t, "tags/%s:", tags[i].name);
		assert_int_equal(kv_tag_readdir(kv, tags[i].name, &keys, &nk), 0);
		qsort(keys, nk, sizeof(*keys), cmp_ent);
		for (size_t k = 0; k < nk; k++)
			say(&t, " %s", keys[k].name);
		kv_dirents_free(keys, nk);
		say(&t, "\n");
	}
	kv_dirents_free(tags, nt);
	pthread_mutex_lock(&kv->lock);
	say(&t, "keys=%llu dirs=%llu ttl_live=%llu tag_entries=%llu\n",
	    (unsigned long long)kv->nkeys, (unsigned long long)kv->ndirs,
	    (unsigned long long)kv->ttl_live, (unsigned long long)kv->tags.entries);
	if (c->exact)
		say(&t, "dirty=%llu unlisted=%llu dirty_bytes=%llu buffer_bytes=%llu commits=%u\n",
		    (unsigned long long)kv->ndirty, (unsigned long long)kv->nunlisted,
		    (unsigned long long)kv->dirty_bytes, (unsigned long long)kv->buffer_bytes,
		    c->f->s.commits);
	pthread_mutex_unlock(&kv->lock);
	return t.s;
}

/* --- the scenario ----------------------------------------------------------- */

static uint64_t id_of(struct mem_store *f, uint64_t dir, const char *name)
{
	struct kv_attr a;

	assert_int_equal(kv_lookup(f->kv, dir, name, &a), 0);
	return a.id;
}

static uint64_t put(struct mem_store *f, uint64_t dir, const char *name, const char *value)
{
	return mem_store_put(f, dir, name, value);
}

static void xset(struct mem_store *f, uint64_t id, const char *name, const char *value)
{
	assert_int_equal(kv_setxattr(f->kv, id, name, value, strlen(value), 0), 0);
}

/*
 * A store of a few keys, and a transaction "t" that changes values, xattrs,
 * tags and deadlines of existing keys, creates keys and a directory with a
 * key in it, and removes a key. c's tag "mv" goes with it while a takes it
 * (a tag emptied and filled again within one commit); "old" goes.
 */
static void scenario(struct mem_store *f)
{
	struct kv_attr a;
	uint64_t b, c, d, e, root, nd;

	mem_store_open(f, true);
	f->o.tx_max_bytes = 1 << 20;
	mem_store_reopen(f, true);
	put(f, KV_ROOT_ID, "a", "va");
	b = put(f, KV_ROOT_ID, "b", "vb");
	xset(f, b, "user.tags", "keep,old");
	xset(f, b, "user.note", "n0");
	c = put(f, KV_ROOT_ID, "c", "vc");
	xset(f, c, "user.tags", "mv,old");
	xset(f, c, "user.ttl", "500");
	assert_int_equal(kv_mkdir(f->kv, KV_ROOT_ID, "d", 0755, 0, 0, &a), 0);
	d = a.id;
	e = put(f, d, "e", "ve");
	xset(f, e, "user.ttl", "600");
	assert_int_equal(kv_flush(f->kv), 0);

	assert_int_equal(kv_tx_begin(f->kv, "t", &a), 0);
	root = a.id;
	put(f, root, "a", "A2");
	xset(f, id_of(f, root, "a"), "user.color", "blue");
	xset(f, id_of(f, root, "a"), "user.tags", "red,blue,mv");
	xset(f, id_of(f, root, "a"), "user.ttl", "3600");
	xset(f, id_of(f, root, "b"), "user.tags", "keep,new");
	xset(f, id_of(f, root, "b"), "user.note", "n1");
	put(f, id_of(f, root, "d"), "e", "E2");
	xset(f, id_of(f, id_of(f, root, "d"), "e"), "user.tags", "green");
	xset(f, id_of(f, id_of(f, root, "d"), "e"), "user.ttl", "7200");
	put(f, root, "n1", "N1");
	xset(f, id_of(f, root, "n1"), "user.tags", "red,fresh");
	xset(f, id_of(f, root, "n1"), "user.k", "v");
	xset(f, id_of(f, root, "n1"), "user.ttl", "100");
	assert_int_equal(kv_mkdir(f->kv, root, "nd", 0700, 0, 0, &a), 0);
	nd = a.id;
	put(f, nd, "x", "X");
	xset(f, id_of(f, nd, "x"), "user.tags", "fresh");
	assert_int_equal(kv_unlink(f->kv, root, "c"), 0);
}

static bool tx_listed(struct mem_store *f)
{
	struct kv_dirent *ents;
	size_t n;
	bool found = false;

	assert_int_equal(kv_tx_list(f->kv, &ents, &n), 0);
	for (size_t i = 0; i < n; i++)
		found |= !strcmp(ents[i].name, "t");
	kv_dirents_free(ents, n);
	return found;
}

/* Commits "t" with the fail_at-th allocation failing (0: none). */
static int commit_failing(struct mem_store *f, long at, bool *hit, long *allocs)
{
	int ret;

	counted = 0;
	fired = false;
	fail_at = at;
	armed = true;
	ret = kv_tx_commit(f->kv, "t", last_msg, sizeof(last_msg));
	armed = false;
	*hit = fired;
	*allocs = counted;
	return ret;
}

static void test_commit_all_or_nothing_when_memory_runs_out(void **state)
{
	struct mem_store f;
	struct snap_ctx c = { .f = &f };
	char *expected, *before, *after;
	long allocs, failures = 0, n;
	bool hit;

	(void)state;
	/* What a commit that never fails gives. */
	c.t0 = kv_now_ms();
	scenario(&f);
	assert_int_equal(commit_failing(&f, 0, &hit, &allocs), 0);
	assert_true(allocs > 0); /* the wrappers do see the store's allocations */
	expected = snapshot(&c);
	assert_string_equal(
		expected,
		" dir 0755 uid=0 size=0\n"
		"/a key 0644 uid=0 size=2 ttl=3600 value=\"A2\" [user.color=blue]"
		" [user.tags=blue,mv,red] [user.ttl] [user.xdg.tags=blue,mv,red]\n"
		"/b key 0644 uid=0 size=2 value=\"vb\" [user.note=n1] [user.tags=keep,new]"
		" [user.xdg.tags=keep,new]\n"
		"/d dir 0755 uid=0 size=0\n"
		"/d/e key 0644 uid=0 size=2 ttl=7200 value=\"E2\" [user.tags=green]"
		" [user.ttl] [user.xdg.tags=green]\n"
		"/n1 key 0644 uid=0 size=2 ttl=100 value=\"N1\" [user.k=v]"
		" [user.tags=fresh,red] [user.ttl] [user.xdg.tags=fresh,red]\n"
		"/nd dir 0700 uid=0 size=0\n"
		"/nd/x key 0644 uid=0 size=1 value=\"X\" [user.tags=fresh]"
		" [user.xdg.tags=fresh]\n"
		"tags/blue: a\n"
		"tags/fresh: n1 nd%2Fx\n"
		"tags/green: d%2Fe\n"
		"tags/keep: b\n"
		"tags/mv: a\n"
		"tags/new: b\n"
		"tags/red: a n1\n"
		"keys=5 dirs=2 ttl_live=3 tag_entries=9\n");
	mem_store_close(&f);

	for (n = 1; n < 100000; n++) {
		int ret;

		c.t0 = kv_now_ms();
		scenario(&f);
		c.exact = true;
		before = snapshot(&c);
		ret = commit_failing(&f, n, &hit, &allocs);
		if (!hit) {
			/* Every allocation of the commit has had its turn. */
			assert_int_equal(ret, 0);
			c.exact = false;
			after = snapshot(&c);
			assert_string_equal(after, expected);
			free(before);
			free(after);
			mem_store_close(&f);
			break;
		}
		if (ret) {
			failures++;
			assert_int_equal(ret, -ENOMEM);
			/* Nothing changed, and the transaction is still there... */
			after = snapshot(&c);
			assert_string_equal(after, before);
			assert_true(tx_listed(&f));
			assert_non_null(strstr(last_msg, "nothing applied"));
			free(after);
			/* ... to be committed again, with the same result. */
			assert_int_equal(commit_failing(&f, 0, &hit, &allocs), 0);
		}
		/* A commit that got past the failure (one it can do without). */
		c.exact = false;
		after = snapshot(&c);
		assert_string_equal(after, expected);
		assert_false(tx_listed(&f));
		free(before);
		free(after);
		mem_store_close(&f);
	}
	print_message("%ld allocation points tried, %ld commits refused whole\n", n, failures);
	assert_true(failures > 0);
	free(expected);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_commit_all_or_nothing_when_memory_runs_out),
	};

	return cmocka_run_group_tests_name("tx_mem", tests, NULL, NULL);
}
