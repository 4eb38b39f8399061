/*
 * The backend contract suite (see backend_contract.h): records and values
 * survive a reopen bit for bit, commits are atomic, ids are never reused,
 * superseded values read as -ESTALE (unless kept for a backup, until
 * reclaim()), compression is recorded and reversible.
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

#include "tests/backend_contract.h"

#define MiB (1024u * 1024u)

static const struct contract_backend *cur;

/* --- Helpers --- */

static struct kv_backend *open_b(bool compress)
{
	struct kv_backend *b = NULL;

	assert_int_equal(cur->open(cur->ctx, compress, &b), 0);
	assert_non_null(b);
	return b;
}

struct loaded {
	struct kv_meta *m;
	size_t n, cap;
};

static int collect(const struct kv_meta *m, void *arg)
{
	struct loaded *l = arg;

	if (l->n == l->cap) {
		l->cap = l->cap ? 2 * l->cap : 16;
		l->m = realloc(l->m, l->cap * sizeof(*l->m));
		assert_non_null(l->m);
	}
	assert_int_equal(kv_meta_copy(&l->m[l->n], m), 0);
	l->n++;
	return 0;
}

static void loaded_free(struct loaded *l)
{
	for (size_t i = 0; i < l->n; i++)
		kv_meta_clear(&l->m[i]);
	free(l->m);
	memset(l, 0, sizeof(*l));
}

static const struct kv_meta *find(const struct loaded *l, uint64_t id)
{
	const struct kv_meta *hit = NULL;

	for (size_t i = 0; i < l->n; i++) {
		if (l->m[i].id == id) {
			assert_null(hit);	/* each record once */
			hit = &l->m[i];
		}
	}
	return hit;
}

/* Opens, loads into l, and returns the open handle. */
static struct kv_backend *open_load(bool compress, struct loaded *l, uint64_t *max_id)
{
	struct kv_backend *b = open_b(compress);
	uint64_t mid = 0;

	memset(l, 0, sizeof(*l));
	assert_int_equal(b->ops->load(b, collect, l, &mid), 0);
	if (max_id)
		*max_id = mid;
	return b;
}

static char *xstrdup(const char *s)
{
	char *d = strdup(s);

	assert_non_null(d);
	return d;
}

/* A key record with every field set; tags and xattrs depend on id. */
static void make_key(struct kv_meta *m, uint64_t id, const char *name)
{
	memset(m, 0, sizeof(*m));
	m->id = id;
	m->parent = KV_ROOT_ID;
	m->name = xstrdup(name);
	m->mode = S_IFREG | 0640;
	m->uid = 1000 + (uint32_t)id;
	m->gid = 100;
	m->atime_ns = 1700000000000000001ll + (int64_t)id;
	m->mtime_ns = 1700000000000000002ll;
	m->ctime_ns = -3;
	m->btime_ns = 1600000000999999999ll;
	m->expires_ms = (int64_t)id * 1000;
	m->ntags = 2;
	m->tags = calloc(2, sizeof(char *));
	assert_non_null(m->tags);
	m->tags[0] = xstrdup("blue");
	m->tags[1] = xstrdup(id % 2 ? "color:red" : "v1.2");
	m->xattrs_len = 5;
	m->xattrs = malloc(5);
	assert_non_null(m->xattrs);
	memcpy(m->xattrs, "a\0b\0c", 5);
}

static void assert_meta_equal(const struct kv_meta *a, const struct kv_meta *b)
{
	assert_int_equal(a->id, b->id);
	assert_int_equal(a->parent, b->parent);
	assert_string_equal(a->name ? a->name : "", b->name ? b->name : "");
	assert_int_equal(a->mode, b->mode);
	assert_int_equal(a->uid, b->uid);
	assert_int_equal(a->gid, b->gid);
	assert_true(a->atime_ns == b->atime_ns);
	assert_true(a->mtime_ns == b->mtime_ns);
	assert_true(a->ctime_ns == b->ctime_ns);
	assert_true(a->btime_ns == b->btime_ns);
	assert_true(a->expires_ms == b->expires_ms);
	assert_int_equal(a->size, b->size);
	assert_int_equal(a->vver, b->vver);
	assert_int_equal(a->stored_size, b->stored_size);
	assert_int_equal(a->encoding, b->encoding);
	assert_int_equal(a->ntags, b->ntags);
	for (uint32_t i = 0; i < a->ntags; i++)
		assert_string_equal(a->tags[i], b->tags[i]);
	assert_int_equal(a->xattrs_len, b->xattrs_len);
	if (a->xattrs_len)
		assert_memory_equal(a->xattrs, b->xattrs, a->xattrs_len);
}

enum fill { FILL_RANDOM, FILL_TEXT, FILL_NULS };

static uint8_t *make_bytes(size_t len, enum fill kind, uint32_t seed)
{
	static const char text[] = "the quick brown fox jumps over the lazy dog; ";
	uint8_t *p = malloc(len ? len : 1);
	uint32_t x = seed * 2654435761u + 1;

	assert_non_null(p);
	for (size_t i = 0; i < len; i++) {
		x ^= x << 13;
		x ^= x >> 17;
		x ^= x << 5;
		switch (kind) {
		case FILL_RANDOM:
			p[i] = (uint8_t)x;
			break;
		case FILL_TEXT:
			p[i] = (uint8_t)text[i % (sizeof(text) - 1)];
			break;
		case FILL_NULS:
			p[i] = (x & 3) ? 0 : (uint8_t)(x >> 8);
			break;
		}
	}
	return p;
}

/* Commits a PUT of m with data (NULL: metadata only); m takes the stored
 * version the backend chose. */
static int put(struct kv_backend *b, struct kv_meta *m, const uint8_t *data, size_t len,
	       uint64_t old_vver)
{
	struct kv_op op = { .type = KV_OP_PUT, .old_vver = old_vver };
	struct kv_value *v = NULL;
	int ret;

	if (data) {
		v = kv_value_from_buf(data, len);
		assert_non_null(v);
		m->size = len;
	}
	op.meta = *m;
	op.value = v;
	ret = b->ops->commit(b, &op, 1);
	if (!ret) {
		m->vver = op.meta.vver;
		m->stored_size = op.meta.stored_size;
		m->encoding = op.meta.encoding;
	}
	kv_value_free(v);
	return ret;
}

static int del(struct kv_backend *b, uint64_t id, uint64_t old_vver)
{
	struct kv_op op = { .type = KV_OP_DEL, .meta.id = id, .old_vver = old_vver };

	return b->ops->commit(b, &op, 1);
}

/* Reads the value m names both ways and compares it with data. */
static void check_value(struct kv_backend *b, const struct kv_meta *m, const uint8_t *data,
			size_t len)
{
	const struct { uint64_t off, len; } cuts[] = {
		{ 0, len }, { 0, 1 }, { len / 3, 4097 }, { len ? len - 1 : 0, 10 },
		{ len / 2, 65536 * 3 + 7 }, { len, 5 }, { len + 100, 5 },
	};
	struct kv_value *v = NULL;
	uint8_t *buf;

	assert_int_equal(b->ops->read_value(b, m, &v), 0);
	assert_int_equal(kv_value_size(v), len);
	buf = malloc(len + 1);
	assert_non_null(buf);
	assert_int_equal(kv_value_read(v, buf, len, 0), (ssize_t)len);
	if (len)
		assert_memory_equal(buf, data, len);
	kv_value_free(v);

	for (size_t i = 0; i < sizeof(cuts) / sizeof(cuts[0]); i++) {
		uint64_t off = cuts[i].off, want = 0;
		size_t n = cuts[i].len;
		uint8_t *p;
		ssize_t got;

		if (off < len)
			want = len - off < n ? len - off : n;
		p = malloc(n ? n : 1);
		assert_non_null(p);
		got = b->ops->pread(b, m, p, n, off);
		assert_int_equal(got, (ssize_t)want);
		if (want)
			assert_memory_equal(p, data + off, want);
		free(p);
	}
	free(buf);
}

/* --- Helpers shared with the backends' own tests --- */

int contract_count(const struct kv_meta *m, void *arg)
{
	(void)m;
	(*(size_t *)arg)++;
	return 0;
}

uint64_t contract_put(struct kv_backend *b, uint64_t id, size_t len, char c, uint64_t old_vver)
{
	struct kv_op op = { .type = KV_OP_PUT, .old_vver = old_vver };
	char *buf = malloc(len + 1), name[32];
	struct kv_value *v;

	assert_non_null(buf);
	memset(buf, c, len);
	v = kv_value_from_buf(buf, len);
	assert_non_null(v);
	snprintf(name, sizeof(name), "k%llu", (unsigned long long)id);
	op.meta.id = id;
	op.meta.parent = KV_ROOT_ID;
	op.meta.name = name;
	op.meta.mode = S_IFREG | 0644;
	op.meta.mtime_ns = (int64_t)id;
	op.meta.size = len;
	op.value = v;
	assert_int_equal(b->ops->commit(b, &op, 1), 0);
	kv_value_free(v);
	free(buf);
	return op.meta.vver;
}

struct probe {
	uint64_t id;
	bool found;
	struct kv_meta m;
};

static int probe_rec(const struct kv_meta *m, void *arg)
{
	struct probe *p = arg;

	if (m->id == p->id) {
		assert_false(p->found);
		p->found = true;
		p->m = *m;
		p->m.name = NULL;
		p->m.tags = NULL;
		p->m.ntags = 0;
		p->m.xattrs = NULL;
		p->m.xattrs_len = 0;
	}
	return 0;
}

bool contract_load_has(struct kv_backend *b, uint64_t id, struct kv_meta *out)
{
	struct probe p = { .id = id };
	uint64_t max_id;

	assert_int_equal(b->ops->load(b, probe_rec, &p, &max_id), 0);
	if (out)
		*out = p.m;
	return p.found;
}

void contract_churn(struct kv_backend *b, struct contract_model *md, int rounds)
{
	for (int r = 0; r < rounds; r++) {
		for (uint64_t id = 2; id < CONTRACT_MODEL_N; id += 1 + (uint64_t)r % 3) {
			if (md->live[id] && (id + (uint64_t)r) % 5 == 0) {
				assert_int_equal(del(b, id, md->vver[id]), 0);
				md->live[id] = false;
				continue;
			}
			md->len[id] = (id * 7 + (uint64_t)r) % 3000;
			md->c[id] = (char)('a' + (id + (uint64_t)r) % 26);
			md->vver[id] = contract_put(b, id, md->len[id], md->c[id],
						    md->live[id] ? md->vver[id] : 0);
			md->live[id] = true;
		}
	}
}

static int model_rec(const struct kv_meta *m, void *arg)
{
	struct contract_model *seen = arg;

	assert_true(m->id < CONTRACT_MODEL_N);
	assert_false(seen->live[m->id]);
	seen->live[m->id] = true;
	seen->len[m->id] = m->size;
	seen->vver[m->id] = m->vver;
	seen->stored[m->id] = m->stored_size;
	seen->enc[m->id] = m->encoding;
	return 0;
}

void contract_check_model(struct kv_backend *b, const struct contract_model *md)
{
	struct contract_model *seen = calloc(1, sizeof(*seen));
	char want[3000], got[3000];
	uint64_t max_id;

	assert_non_null(seen);
	assert_int_equal(b->ops->load(b, model_rec, seen, &max_id), 0);
	for (uint64_t id = 2; id < CONTRACT_MODEL_N; id++) {
		struct kv_meta m = { .id = id };
		struct kv_value *v = NULL;

		assert_int_equal(seen->live[id], md->live[id]);
		if (md->live[id] || md->vver[id])
			assert_true(max_id >= id);
		if (!md->live[id])
			continue;
		assert_int_equal(seen->len[id], md->len[id]);
		assert_int_equal(seen->vver[id], md->vver[id]);
		m.vver = seen->vver[id];
		m.size = seen->len[id];
		m.stored_size = seen->stored[id];
		m.encoding = seen->enc[id];
		assert_int_equal(b->ops->read_value(b, &m, &v), 0);
		assert_int_equal(kv_value_size(v), md->len[id]);
		assert_int_equal(kv_value_read(v, got, sizeof(got), 0), (ssize_t)md->len[id]);
		memset(want, md->c[id], md->len[id]);
		assert_memory_equal(got, want, md->len[id]);
		kv_value_free(v);
	}
	free(seen);
}

/* --- Tests --- */

static void test_empty_store(void **state)
{
	struct kv_backend_statfs sf;
	struct kv_backend *b;
	struct loaded l;
	uint64_t max_id = 99;

	(void)state;
	b = open_load(false, &l, &max_id);
	assert_int_equal(l.n, 0);
	assert_int_equal(max_id, 0);
	assert_int_equal(b->ops->statfs(b, &sf), 0);
	assert_true(sf.bsize > 0);
	kv_backend_close(b);
	loaded_free(&l);
	/* Still empty after a reopen. */
	b = open_load(false, &l, &max_id);
	assert_int_equal(l.n, 0);
	kv_backend_close(b);
	loaded_free(&l);
}

/* Every kind of value, every field of metadata, back after a reopen. */
static void roundtrip(bool compress)
{
	static const struct { size_t len; enum fill kind; } vals[] = {
		{ 0, FILL_RANDOM },	  { 1, FILL_RANDOM },	    { 1, FILL_NULS },
		{ 1000, FILL_NULS },	  { 4096, FILL_TEXT },	    { 65536, FILL_RANDOM },
		{ 65537, FILL_NULS },	  { MiB + 3, FILL_RANDOM }, { MiB + 5, FILL_TEXT },
		{ 2 * MiB, FILL_NULS },
	};
	const size_t n = sizeof(vals) / sizeof(vals[0]);
	struct kv_meta metas[10], root = { .id = KV_ROOT_ID, .mode = S_IFDIR | 0755 };
	uint8_t *data[10];
	struct kv_backend *b;
	struct loaded l;
	uint64_t max_id;

	b = open_load(compress, &l, NULL);
	loaded_free(&l);
	root.name = xstrdup("");
	root.mtime_ns = 42;
	assert_int_equal(put(b, &root, NULL, 0, 0), 0);
	for (size_t i = 0; i < n; i++) {
		char name[32];

		snprintf(name, sizeof(name), "key %zu\xff", i);
		make_key(&metas[i], 10 + i, name);
		data[i] = make_bytes(vals[i].len, vals[i].kind, (uint32_t)i);
		assert_int_equal(put(b, &metas[i], data[i], vals[i].len, 0), 0);
		/* An empty value is stored as nothing. */
		assert_true((metas[i].vver == 0) == (vals[i].len == 0));
		check_value(b, &metas[i], data[i], vals[i].len);
	}
	kv_backend_close(b);

	b = open_load(compress, &l, &max_id);
	assert_int_equal(l.n, n + 1);
	assert_true(max_id >= 10 + n - 1);
	assert_meta_equal(find(&l, KV_ROOT_ID), &root);
	for (size_t i = 0; i < n; i++) {
		const struct kv_meta *m = find(&l, 10 + i);

		assert_non_null(m);
		assert_meta_equal(m, &metas[i]);
		check_value(b, m, data[i], vals[i].len);
		kv_meta_clear(&metas[i]);
		free(data[i]);
	}
	kv_meta_clear(&root);
	kv_backend_close(b);
	loaded_free(&l);
}

static void test_roundtrip_plain(void **state)
{
	(void)state;
	roundtrip(false);
}

static void test_roundtrip_compressed(void **state)
{
	(void)state;
	roundtrip(true);
}

static void test_metadata_only_put_keeps_value(void **state)
{
	struct kv_backend *b;
	struct kv_meta m;
	struct loaded l;
	uint8_t *data = make_bytes(5000, FILL_RANDOM, 7);

	(void)state;
	b = open_load(false, &l, NULL);
	loaded_free(&l);
	make_key(&m, 5, "k");
	assert_int_equal(put(b, &m, data, 5000, 0), 0);
	m.mode = S_IFREG | 0600;
	m.expires_ms = 0;
	free(m.name);
	m.name = xstrdup("renamed");
	assert_int_equal(put(b, &m, NULL, 0, 0), 0);
	check_value(b, &m, data, 5000);
	kv_backend_close(b);

	b = open_load(false, &l, NULL);
	assert_int_equal(l.n, 1);
	assert_meta_equal(&l.m[0], &m);
	check_value(b, &l.m[0], data, 5000);
	kv_backend_close(b);
	loaded_free(&l);
	kv_meta_clear(&m);
	free(data);
}

static void test_delete(void **state)
{
	struct kv_backend *b;
	struct kv_meta a, c;
	struct loaded l;
	uint8_t *data = make_bytes(3000, FILL_TEXT, 1);

	(void)state;
	b = open_load(false, &l, NULL);
	loaded_free(&l);
	make_key(&a, 2, "a");
	make_key(&c, 3, "c");
	assert_int_equal(put(b, &a, data, 3000, 0), 0);
	assert_int_equal(put(b, &c, data, 100, 0), 0);
	assert_int_equal(del(b, 2, a.vver), 0);
	/* The deleted value is gone at once. */
	assert_int_equal(b->ops->pread(b, &a, data, 10, 0), -ESTALE);
	kv_backend_close(b);

	b = open_load(false, &l, NULL);
	assert_int_equal(l.n, 1);
	assert_null(find(&l, 2));
	assert_meta_equal(find(&l, 3), &c);
	check_value(b, &c, data, 100);
	kv_backend_close(b);
	loaded_free(&l);
	kv_meta_clear(&a);
	kv_meta_clear(&c);
	free(data);
}

/* One commit of many PUTs and DELs: all of it, and a bad op spoils all of it. */
static void test_batch_atomic(void **state)
{
	enum { N = 300 };
	struct kv_op *ops = calloc(N, sizeof(*ops));
	struct kv_meta bad;
	struct kv_backend *b;
	struct loaded l;
	uint64_t max_id;
	uint8_t *data = make_bytes(2048, FILL_RANDOM, 3);

	(void)state;
	assert_non_null(ops);
	b = open_load(false, &l, NULL);
	loaded_free(&l);
	for (size_t i = 0; i < N; i++) {
		char name[16];

		snprintf(name, sizeof(name), "k%zu", i);
		ops[i].type = KV_OP_PUT;
		make_key(&ops[i].meta, 100 + i, name);
		ops[i].meta.size = i % 7 == 0 ? 0 : 100 + i;
		ops[i].value = kv_value_from_buf(data, ops[i].meta.size);
		assert_non_null(ops[i].value);
	}
	assert_int_equal(b->ops->commit(b, ops, N), 0);

	/* The second batch deletes every third key and rewrites the rest,
	 * except one op that is malformed: nothing of it may apply. */
	for (size_t i = 0; i < N; i++) {
		kv_value_free((struct kv_value *)ops[i].value);
		ops[i].value = NULL;
		if (i % 3 == 0) {
			ops[i].type = KV_OP_DEL;
			ops[i].old_vver = ops[i].meta.vver;
		} else {
			ops[i].meta.mode = S_IFREG | 0444;
		}
	}
	make_key(&bad, 99, "x");
	free(bad.name);
	bad.name = xstrdup("a/b");
	kv_meta_clear(&ops[N - 1].meta);
	ops[N - 1].type = KV_OP_PUT;
	ops[N - 1].meta = bad;
	assert_int_not_equal(b->ops->commit(b, ops, N), 0);
	kv_backend_close(b);

	b = open_load(false, &l, &max_id);
	assert_int_equal(l.n, N);
	assert_true(max_id >= 100 + N - 1);
	for (size_t i = 0; i < N - 1; i++) {
		const struct kv_meta *m = find(&l, 100 + i);

		assert_non_null(m);
		assert_int_equal(m->mode, S_IFREG | 0640);
		check_value(b, m, data, m->size);
	}
	kv_backend_close(b);
	loaded_free(&l);

	/* Now the same batch without the bad op. */
	b = open_load(false, &l, NULL);
	loaded_free(&l);
	assert_int_equal(b->ops->commit(b, ops, N - 1), 0);
	kv_backend_close(b);
	b = open_load(false, &l, NULL);
	for (size_t i = 0; i < N - 1; i++) {
		const struct kv_meta *m = find(&l, 100 + i);

		if (i % 3 == 0) {
			assert_null(m);
			continue;
		}
		assert_non_null(m);
		assert_int_equal(m->mode, S_IFREG | 0444);
		check_value(b, m, data, m->size);
	}
	assert_int_equal(l.n, N - 1 - (N - 1 + 2) / 3 + 1);
	kv_backend_close(b);
	loaded_free(&l);
	for (size_t i = 0; i < N; i++)
		kv_meta_clear(&ops[i].meta);
	free(ops);
	free(data);
}

static void test_max_id_never_goes_back(void **state)
{
	struct kv_backend *b;
	struct kv_meta m;
	struct loaded l;
	uint64_t max_id;

	(void)state;
	b = open_load(false, &l, NULL);
	loaded_free(&l);
	for (uint64_t id = 2; id <= 40; id++) {
		char name[16];

		/* One name each: Redis keeps one record per name (the last
		 * one committed wins, for several mounts' sake). */
		snprintf(name, sizeof(name), "k%u", (unsigned)id);
		make_key(&m, id, name);
		assert_int_equal(put(b, &m, (const uint8_t *)"v", 1, 0), 0);
		if (id == 40)
			assert_int_equal(del(b, id, m.vver), 0);
		kv_meta_clear(&m);
	}
	kv_backend_close(b);
	for (int round = 0; round < 2; round++) {
		b = open_load(false, &l, &max_id);
		assert_int_equal(l.n, 38);
		assert_true(max_id >= 40);
		kv_backend_close(b);
		loaded_free(&l);
	}
}

/*
 * While a backup reads stored versions, the store commits with old_vver = 0:
 * a superseded or deleted version must stay readable until reclaim() (an
 * optional op) deletes it; reclaiming twice, or a version already gone, is
 * not an error.
 */
static void test_kept_versions_until_reclaim(void **state)
{
	struct kv_backend *b;
	struct kv_meta m, old, gone;
	struct kv_value *v = NULL;
	struct loaded l;
	uint8_t *one = make_bytes(9000, FILL_RANDOM, 1), *two = make_bytes(7000, FILL_RANDOM, 2);
	uint8_t buf[16];

	(void)state;
	b = open_load(false, &l, NULL);
	loaded_free(&l);
	make_key(&m, 7, "k");
	make_key(&gone, 8, "g");
	assert_int_equal(put(b, &m, one, 9000, 0), 0);
	assert_int_equal(put(b, &gone, two, 7000, 0), 0);
	old = m;
	assert_int_equal(put(b, &m, two, 7000, 0), 0); /* old_vver kept: 0 */
	assert_int_equal(del(b, 8, 0), 0);
	check_value(b, &old, one, 9000);
	check_value(b, &gone, two, 7000);
	check_value(b, &m, two, 7000);
	if (b->ops->reclaim) {
		const uint64_t refs[3][2] = { { 7, old.vver }, { 8, gone.vver }, { 8, gone.vver } };

		assert_int_equal(b->ops->reclaim(b, refs, 3), 0);
		assert_int_equal(b->ops->pread(b, &old, buf, sizeof(buf), 0), -ESTALE);
		assert_int_equal(b->ops->read_value(b, &gone, &v), -ESTALE);
		assert_null(v);
		assert_int_equal(b->ops->reclaim(b, refs, 1), 0);
	}
	check_value(b, &m, two, 7000);
	kv_backend_close(b);
	b = open_load(false, &l, NULL);
	assert_int_equal(l.n, 1);
	check_value(b, find(&l, 7), two, 7000);
	kv_backend_close(b);
	loaded_free(&l);
	kv_meta_clear(&m);
	kv_meta_clear(&gone);
	free(one);
	free(two);
}

static void test_superseded_is_stale(void **state)
{
	struct kv_backend *b;
	struct kv_meta m, old;
	struct kv_value *v = NULL;
	struct loaded l;
	uint8_t *one = make_bytes(9000, FILL_RANDOM, 1), *two = make_bytes(7000, FILL_RANDOM, 2);
	uint8_t buf[16];

	(void)state;
	b = open_load(false, &l, NULL);
	loaded_free(&l);
	make_key(&m, 7, "k");
	assert_int_equal(put(b, &m, one, 9000, 0), 0);
	old = m;
	assert_int_equal(put(b, &m, two, 7000, old.vver), 0);
	assert_int_not_equal(m.vver, old.vver);
	assert_int_equal(b->ops->pread(b, &old, buf, sizeof(buf), 0), -ESTALE);
	assert_int_equal(b->ops->read_value(b, &old, &v), -ESTALE);
	assert_null(v);
	check_value(b, &m, two, 7000);
	kv_backend_close(b);

	b = open_load(false, &l, NULL);
	assert_int_equal(b->ops->pread(b, &old, buf, sizeof(buf), 0), -ESTALE);
	check_value(b, &l.m[0], two, 7000);
	kv_backend_close(b);
	loaded_free(&l);
	kv_meta_clear(&m);
	free(one);
	free(two);
}

static void test_compression_recorded(void **state)
{
	struct kv_backend *b;
	struct kv_meta text, rnd, small, plain;
	struct loaded l;
	uint8_t *t = make_bytes(300000, FILL_TEXT, 0), *r = make_bytes(300000, FILL_RANDOM, 9);

	(void)state;
	b = open_load(true, &l, NULL);
	loaded_free(&l);
	make_key(&text, 2, "text");
	make_key(&rnd, 3, "random");
	make_key(&small, 4, "small");
	assert_int_equal(put(b, &text, t, 300000, 0), 0);
	assert_int_equal(put(b, &rnd, r, 300000, 0), 0);
	assert_int_equal(put(b, &small, t, 1000, 0), 0);
	assert_int_equal(text.encoding, KV_ENC_ZSTD);
	assert_true(text.stored_size < text.size / 10);
	/* Compression that does not pay is not used. */
	assert_int_equal(rnd.encoding, KV_ENC_NONE);
	assert_int_equal(rnd.stored_size, 300000);
	/* Below compression_min_size (1 KiB). */
	assert_int_equal(small.encoding, KV_ENC_NONE);
	assert_int_equal(small.stored_size, 1000);
	kv_backend_close(b);

	/* A handle without compression still reads compressed values. */
	b = open_load(false, &l, NULL);
	assert_meta_equal(find(&l, 2), &text);
	assert_meta_equal(find(&l, 3), &rnd);
	check_value(b, find(&l, 2), t, 300000);
	check_value(b, find(&l, 3), r, 300000);
	check_value(b, find(&l, 4), t, 1000);
	make_key(&plain, 5, "plain");
	assert_int_equal(put(b, &plain, t, 300000, 0), 0);
	assert_int_equal(plain.encoding, KV_ENC_NONE);
	assert_int_equal(plain.stored_size, 300000);
	kv_backend_close(b);
	loaded_free(&l);
	kv_meta_clear(&text);
	kv_meta_clear(&rnd);
	kv_meta_clear(&small);
	kv_meta_clear(&plain);
	free(t);
	free(r);
}

/* Many small commits of every kind, then a reopen: the same state. */
static void test_history_survives_reopen(void **state)
{
	struct contract_model *md = calloc(1, sizeof(*md));
	struct kv_backend *b;
	struct loaded l;

	(void)state;
	assert_non_null(md);
	b = open_load(true, &l, NULL);
	loaded_free(&l);
	contract_churn(b, md, 3);
	kv_backend_close(b);
	b = open_b(true);
	contract_check_model(b, md);
	contract_churn(b, md, 1);
	kv_backend_close(b);
	b = open_b(false);
	contract_check_model(b, md);
	kv_backend_close(b);
	free(md);
}

static int stop_at_first(const struct kv_meta *m, void *arg)
{
	(void)m;
	(*(int *)arg)++;
	return -ECANCELED;
}

static void test_load_stops_on_callback_error(void **state)
{
	struct kv_backend *b;
	struct kv_meta m;
	struct loaded l;
	uint64_t max_id;
	int calls = 0;

	(void)state;
	b = open_load(false, &l, NULL);
	loaded_free(&l);
	for (uint64_t id = 2; id < 6; id++) {
		make_key(&m, id, "k");
		assert_int_equal(put(b, &m, NULL, 0, 0), 0);
		kv_meta_clear(&m);
	}
	kv_backend_close(b);
	b = open_b(false);
	assert_int_equal(b->ops->load(b, stop_at_first, &calls, &max_id), -ECANCELED);
	assert_int_equal(calls, 1);
	kv_backend_close(b);
}

static int setup(void **state)
{
	(void)state;
	return cur->create(cur->ctx) ? -1 : 0;
}

static int teardown(void **state)
{
	(void)state;
	cur->close_and_destroy(cur->ctx);
	return 0;
}

int backend_contract_run(const struct contract_backend *cb)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_empty_store, setup, teardown),
		cmocka_unit_test_setup_teardown(test_roundtrip_plain, setup, teardown),
		cmocka_unit_test_setup_teardown(test_roundtrip_compressed, setup, teardown),
		cmocka_unit_test_setup_teardown(test_metadata_only_put_keeps_value, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_delete, setup, teardown),
		cmocka_unit_test_setup_teardown(test_batch_atomic, setup, teardown),
		cmocka_unit_test_setup_teardown(test_max_id_never_goes_back, setup, teardown),
		cmocka_unit_test_setup_teardown(test_superseded_is_stale, setup, teardown),
		cmocka_unit_test_setup_teardown(test_kept_versions_until_reclaim, setup, teardown),
		cmocka_unit_test_setup_teardown(test_compression_recorded, setup, teardown),
		cmocka_unit_test_setup_teardown(test_history_survives_reopen, setup, teardown),
		cmocka_unit_test_setup_teardown(test_load_stops_on_callback_error, setup,
						teardown),
	};
	char name[64];

	cur = cb;
	snprintf(name, sizeof(name), "backend contract: %s", cb->name);
	return _cmocka_run_group_tests(name, tests, sizeof(tests) / sizeof(tests[0]), NULL, NULL);
}
