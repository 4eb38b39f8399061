#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "tests/mem_backend.h"

struct mem_backend {
	struct kv_backend base;
	struct mem_state *s;
};

void mem_state_init(struct mem_state *s)
{
	memset(s, 0, sizeof(*s));
	pthread_mutex_init(&s->lock, NULL);
	pthread_cond_init(&s->cond, NULL);
	s->next_vver = 1;
}

void mem_state_destroy(struct mem_state *s)
{
	for (size_t i = 0; i < s->nrecs; i++) {
		kv_meta_clear(&s->recs[i].m);
		kv_value_free(s->recs[i].value);
	}
	free(s->recs);
	for (size_t i = 0; i < s->nolds; i++)
		kv_value_free(s->olds[i].value);
	free(s->olds);
	pthread_mutex_destroy(&s->lock);
	pthread_cond_destroy(&s->cond);
}

struct mem_rec *mem_find_id(struct mem_state *s, uint64_t id)
{
	for (size_t i = 0; i < s->nrecs; i++)
		if (s->recs[i].m.id == id)
			return &s->recs[i];
	return NULL;
}

struct mem_rec *mem_find(struct mem_state *s, uint64_t parent, const char *name)
{
	for (size_t i = 0; i < s->nrecs; i++)
		if (s->recs[i].m.parent == parent && s->recs[i].m.id != KV_ROOT_ID &&
		    strcmp(s->recs[i].m.name, name) == 0)
			return &s->recs[i];
	return NULL;
}

static struct mem_rec *rec_get_or_add(struct mem_state *s, uint64_t id)
{
	struct mem_rec *r = mem_find_id(s, id);

	if (r)
		return r;
	if (s->nrecs == s->cap) {
		s->cap = s->cap ? s->cap * 2 : 16;
		s->recs = realloc(s->recs, s->cap * sizeof(*s->recs));
	}
	r = &s->recs[s->nrecs++];
	memset(r, 0, sizeof(*r));
	r->m.id = id;
	return r;
}

/* A stored version is freed only when the op names it as obsolete (as
 * backend_fs unlinks only old_vver); otherwise it stays readable. */
static void drop_version(struct mem_state *s, uint64_t id, uint64_t vver, struct kv_value *v,
			 uint64_t old_vver)
{
	if (!v || !vver || vver == old_vver) {
		kv_value_free(v);
		return;
	}
	if (s->nolds == s->olds_cap) {
		s->olds_cap = s->olds_cap ? s->olds_cap * 2 : 16;
		s->olds = realloc(s->olds, s->olds_cap * sizeof(*s->olds));
	}
	s->olds[s->nolds++] = (struct mem_old){ id, vver, v };
}

static void rec_del(struct mem_state *s, uint64_t id, uint64_t old_vver)
{
	struct mem_rec *r = mem_find_id(s, id);

	if (!r)
		return;
	drop_version(s, id, r->m.vver, r->value, old_vver);
	kv_meta_clear(&r->m);
	*r = s->recs[--s->nrecs];
}

void mem_put_raw(struct mem_state *s, const struct kv_meta *m)
{
	struct mem_rec *r = rec_get_or_add(s, m->id);

	kv_meta_clear(&r->m);
	kv_meta_copy(&r->m, m);
	if (m->id > s->max_id)
		s->max_id = m->id;
}

void mem_gate_close(struct mem_state *s)
{
	pthread_mutex_lock(&s->lock);
	s->gate_closed = true;
	pthread_mutex_unlock(&s->lock);
}

void mem_wait_in_commit(struct mem_state *s)
{
	pthread_mutex_lock(&s->lock);
	while (!s->in_commit)
		pthread_cond_wait(&s->cond, &s->lock);
	pthread_mutex_unlock(&s->lock);
}

void mem_gate_open(struct mem_state *s)
{
	pthread_mutex_lock(&s->lock);
	s->gate_closed = false;
	pthread_cond_broadcast(&s->cond);
	pthread_mutex_unlock(&s->lock);
}

static struct mem_state *state(struct kv_backend *b)
{
	return ((struct mem_backend *)b)->s;
}

static void mem_close(struct kv_backend *b)
{
	free(b);
}

static int mem_load(struct kv_backend *b, kv_load_fn fn, void *arg, uint64_t *max_id)
{
	struct mem_state *s = state(b);
	int ret = 0;

	pthread_mutex_lock(&s->lock);
	for (size_t i = 0; i < s->nrecs && !ret; i++) {
		const struct kv_meta *m = &s->recs[i].m;

		for (size_t j = 0; j < s->nload_stale; j++)
			if (s->load_stale[j].id == m->id)
				m = NULL;
		if (m && (!s->load_skip || m->id != s->load_skip))
			ret = fn(m, arg);
	}
	for (size_t j = 0; j < s->nload_stale && !ret; j++)
		ret = fn(&s->load_stale[j], arg);
	*max_id = s->max_id;
	pthread_mutex_unlock(&s->lock);
	return ret;
}

static int mem_commit(struct kv_backend *b, struct kv_op *ops, size_t n)
{
	struct mem_state *s = state(b);
	int ret;

	pthread_mutex_lock(&s->lock);
	s->in_commit = true;
	pthread_cond_broadcast(&s->cond);
	while (s->gate_closed)
		pthread_cond_wait(&s->cond, &s->lock);
	s->in_commit = false;
	s->never_sent_puts = s->uncertain_puts = 0;
	for (size_t i = 0; i < n; i++) {
		s->never_sent_puts += ops[i].type == KV_OP_PUT && ops[i].never_sent;
		s->uncertain_puts += ops[i].type == KV_OP_PUT && ops[i].uncertain;
	}
	ret = s->fail_commit;
	if (ret)
		goto out;
	s->last_nops = n;
	s->puts_with_value = 0;
	for (size_t i = 0; i < n; i++) {
		struct kv_op *op = &ops[i];

		if (op->meta.id > s->max_id)
			s->max_id = op->meta.id;
		if (op->type == KV_OP_DEL) {
			rec_del(s, op->meta.id, op->old_vver);
			continue;
		}
		if (op->may_yield && s->yield_name && op->meta.name &&
		    !strcmp(op->meta.name, s->yield_name)) {
			op->yielded = true;
			s->yields++;
			s->gate_closed |= s->gate_after_yield;
			continue;
		}
		struct mem_rec *r = rec_get_or_add(s, op->meta.id);
		struct kv_value *keep = r->value;

		if (op->value) {
			s->puts_with_value++;
			drop_version(s, op->meta.id, r->m.vver, keep, op->old_vver);
			keep = kv_value_size(op->value) ? kv_value_snapshot(op->value) : NULL;
			op->meta.vver = keep ? s->next_vver++ : 0;
			op->meta.stored_size = kv_value_size(op->value);
			op->meta.encoding = KV_ENC_NONE;
		}
		kv_meta_clear(&r->m);
		kv_meta_copy(&r->m, &op->meta);
		r->value = keep;
	}
	s->commits++;
out:
	pthread_mutex_unlock(&s->lock);
	return ret;
}

static int mem_read_value(struct kv_backend *b, const struct kv_meta *m, struct kv_value **out)
{
	struct mem_state *s = state(b);
	struct mem_rec *r;
	int ret = 0;

	pthread_mutex_lock(&s->lock);
	r = mem_find_id(s, m->id);
	if (r && r->m.vver == m->vver && r->value) {
		*out = kv_value_snapshot(r->value);
	} else {
		ret = -ESTALE;
		for (size_t i = 0; i < s->nolds; i++)
			if (s->olds[i].id == m->id && s->olds[i].vver == m->vver) {
				*out = kv_value_snapshot(s->olds[i].value);
				ret = 0;
			}
	}
	pthread_mutex_unlock(&s->lock);
	return ret;
}

static ssize_t mem_pread(struct kv_backend *b, const struct kv_meta *m, void *buf, size_t len,
			 uint64_t off)
{
	struct kv_value *v;
	ssize_t ret = mem_read_value(b, m, &v);

	if (ret)
		return ret;
	ret = kv_value_read(v, buf, len, off);
	kv_value_free(v);
	return ret;
}

static int mem_statfs(struct kv_backend *b, struct kv_backend_statfs *out)
{
	(void)b;
	memset(out, 0, sizeof(*out));
	out->bsize = 4096;
	return 0;
}

static int mem_reclaim(struct kv_backend *b, const uint64_t (*refs)[2], size_t n)
{
	struct mem_state *s = state(b);

	pthread_mutex_lock(&s->lock);
	for (size_t k = 0; k < n; k++)
		for (size_t i = 0; i < s->nolds; i++)
			if (s->olds[i].id == refs[k][0] && s->olds[i].vver == refs[k][1]) {
				kv_value_free(s->olds[i].value);
				s->olds[i] = s->olds[--s->nolds];
				s->reclaimed++;
				break;
			}
	pthread_mutex_unlock(&s->lock);
	return 0;
}

#define MEM_OPS                              \
	.name = "mem", .close = mem_close,   \
	.load = mem_load, .commit = mem_commit, \
	.pread = mem_pread, .read_value = mem_read_value, \
	.statfs = mem_statfs, .reclaim = mem_reclaim

static const struct kv_backend_ops mem_ops = { MEM_OPS };

static int mem_reserve(struct kv_backend *b, const struct kv_expect *e, size_t n, uint64_t owner,
		       int64_t ttl_ms, size_t *bad)
{
	struct mem_state *s = ((struct mem_backend *)b)->s;
	int ret = 0;

	(void)owner;
	(void)ttl_ms;
	s->reserves++;
	if (s->on_reserve)
		ret = s->on_reserve(s->on_reserve_arg, e, n);
	if (ret == -ESTALE)
		*bad = 0;
	return ret;
}

static int mem_release(struct kv_backend *b, const struct kv_expect *e, size_t n, uint64_t owner)
{
	(void)e;
	(void)n;
	(void)owner;
	((struct mem_backend *)b)->s->releases++;
	return 0;
}

static int mem_fetch(struct kv_backend *b, const uint64_t *ids, size_t n, struct kv_change *out)
{
	struct mem_state *s = ((struct mem_backend *)b)->s;
	int ret = 0;

	pthread_mutex_lock(&s->lock);
	for (size_t i = 0; i < n; i++) {
		struct mem_rec *r = NULL;

		for (size_t j = 0; j < s->nrecs && !r; j++)
			if (s->recs[j].m.id == ids[i])
				r = &s->recs[j];
		out[i] = (struct kv_change){ .id = ids[i], .gone = !r };
		if (r && !ret && kv_meta_copy(&out[i].meta, &r->m)) {
			out[i].gone = true;
			ret = -ENOMEM;
		}
	}
	pthread_mutex_unlock(&s->lock);
	if (ret)
		kv_changes_clear(out, n);
	return ret;
}

static const struct kv_backend_ops mem_shared_ops = {
	MEM_OPS,
	.caps = { .shared = true },
	.reserve = mem_reserve,
	.release = mem_release,
	.fetch = mem_fetch,
};

struct kv_backend *mem_backend_new(struct mem_state *s)
{
	struct mem_backend *b = calloc(1, sizeof(*b));

	b->base.ops = s->shared ? &mem_shared_ops : &mem_ops;
	b->s = s;
	return &b->base;
}

static void mem_store_start(struct mem_store *f, bool start)
{
	char err[256];

	f->o.backend_instance = mem_backend_new(&f->s);
	assert_int_equal(kv_open(&f->o, &f->kv, err, sizeof(err)), 0);
	if (start)
		assert_int_equal(kv_start(f->kv), 0);
}

void mem_store_open(struct mem_store *f, bool start)
{
	memset(f, 0, sizeof(*f));
	mem_state_init(&f->s);
	f->o.buffer_size = 1 << 20;
	f->o.flush_interval_ms = 60000;
	f->o.backend_timeout_ms = 5000;
	f->o.max_value_size = 1 << 20;
	f->o.ttl_sweep_ms = 60000;
	f->o.query_cache_size = 100;
	mem_store_start(f, start);
}

void mem_store_reopen(struct mem_store *f, bool start)
{
	assert_int_equal(kv_close(f->kv), 0);
	mem_store_start(f, start);
}

void mem_store_close(struct mem_store *f)
{
	assert_int_equal(kv_close(f->kv), 0);
	f->kv = NULL;
	mem_state_destroy(&f->s);
}

char *mem_value_str(struct mem_state *s, uint64_t parent, const char *name)
{
	struct mem_rec *r = mem_find(s, parent, name);
	char *buf;

	if (!r)
		return NULL;
	buf = calloc(1, r->m.size + 1);
	if (buf && r->value)
		kv_value_read(r->value, buf, r->m.size, 0);
	return buf;
}

uint64_t mem_store_put(struct mem_store *f, uint64_t dir, const char *name, const char *value)
{
	struct kv_attr a;

	assert_int_equal(kv_create(f->kv, dir, name, 0644, 0, 0, false, &a), 0);
	assert_int_equal(kv_open_file(f->kv, a.id, true), 0);
	assert_int_equal(kv_write(f->kv, a.id, value, strlen(value), 0), (ssize_t)strlen(value));
	kv_release_file(f->kv, a.id);
	return a.id;
}
