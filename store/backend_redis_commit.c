/*
 * The Redis backend's commits. A batch is applied by one Lua script, which
 * Redis runs atomically: no client ever sees part of a batch. It changes
 * each record together with its directory entry, its tag sets, the set of
 * ids and the deadline index.
 *
 * Ahead of the script, on the same connection, go the writes that need no
 * decision as plain commands (see send_plain): new value versions and the
 * records of keys never sent before, which nothing refers to until
 * the script publishes them. They run as they arrive, so Redis works
 * through them while the daemon still encodes the rest of the batch, and a
 * plain command costs Redis a fraction of the same call made from the
 * script. A staging marker (backend_redis_stage.c) lists them first, so
 * that they are removed if the script never runs; the script checks
 * everything that could fail (the uploaded values) before it writes
 * anything, and removes them itself when it refuses the batch. The script
 * is sent only once every plain write has succeeded.
 *
 * Values up to INLINE_MAX go in MSETs; larger ones are uploaded (one SET,
 * or pipelined APPENDs of at most PIECE bytes) to a temporary key that the
 * script renames into place, so no command is larger than that. A
 * temporary key of a commit that never ran expires by itself.
 *
 * Durability is what Redis acknowledges: its own appendfsync decides the
 * rest (spec section 2).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <hiredis/sds.h>

#include "store/backend_redis.h"
#include "util/log.h"

#define INLINE_MAX ((size_t)64 * 1024)
#define PIECE ((size_t)1024 * 1024)
/* Replies are read (and the output buffer sent) every this many bytes. */
#define PIPE_BYTES ((size_t)16 * 1024 * 1024)
#define TMP_TTL_MS "3600000"
/* Values per MSET of inline values, and its bytes before it is sent. */
#define MSET_PAIRS 1000
#define MSET_BYTES ((size_t)64 * 1024)

/* Arguments: EVAL's own four, then the script's header, then COMPACT_ARGS
 * per compact op and OP_ARGS per other op (fill_args; see the script). */
#define OP_ARGS 12
#define COMPACT_ARGS 5
#define HDR_ARGS 12

/* What one op sends, and what commit changed in it (to undo on failure). */
struct prep {
	char id[24], parent[24], vver[24], exp[24], stored[24], oldv[24];
	uint8_t *rec;
	size_t reclen, reccap;
	char *tags;
	size_t tagslen;
	struct kv_redis_blob blob;
	char *tmpkey;		/* uploaded through this key */
	char *vkey;		/* or set inline under this one (T:v:<id>:<vver>) */
	char *rkey;		/* T:r:<id>, when the record goes in an MSET */
	bool stores;		/* a new value version is written */
	bool compact;		/* sent as a compact op (see the script) */
	/* undo */
	uint64_t vver0, stored0;
	uint8_t enc0;
};

/* Decimal digits of v in buf (24 bytes): snprintf is a tenth of a
 * commit's time in the profile when called six times per op. */
static void u64dec(char *buf, uint64_t v)
{
	char tmp[24];
	size_t i = 0, j = 0;

	do {
		tmp[i++] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	while (i)
		buf[j++] = tmp[--i];
	buf[j] = '\0';
}

static void i64dec(char *buf, int64_t v)
{
	if (v < 0) {
		*buf++ = '-';
		u64dec(buf, -(uint64_t)v);
	} else {
		u64dec(buf, (uint64_t)v);
	}
}

/* r->tag followed by parts[0..n), for the keys made per op: kv_redis_key
 * formats twice. */
static char *op_key(const struct kv_redis *r, int n, const char *const *parts)
{
	size_t len = strlen(r->tag), off;
	char *k;

	for (int i = 0; i < n; i++)
		len += strlen(parts[i]);
	k = malloc(len + 1);
	if (!k)
		return NULL;
	off = strlen(r->tag);
	memcpy(k, r->tag, off);
	for (int i = 0; i < n; i++) {
		size_t l = strlen(parts[i]);

		memcpy(k + off, parts[i], l);
		off += l;
	}
	k[off] = '\0';
	return k;
}

static int64_t wall_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int check_ops(const struct kv_op *ops, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		const struct kv_op *op = &ops[i];

		if ((op->type != KV_OP_PUT && op->type != KV_OP_DEL) || op->meta.id == 0)
			return -EINVAL;
		if (op->type == KV_OP_PUT && op->value &&
		    kv_value_size(op->value) != op->meta.size) {
			log_msg(NLOG_ERROR, "store",
				"backend_redis: refusing a commit: id %" PRIu64 " has size %" PRIu64
				" but its value has %" PRIu64 " bytes",
				op->meta.id, op->meta.size, kv_value_size(op->value));
			return -EINVAL;
		}
	}
	return 0;
}

static int join_tags(const struct kv_meta *m, struct prep *p)
{
	size_t len = 0;

	for (uint32_t i = 0; i < m->ntags; i++)
		len += strlen(m->tags[i]) + 1;
	p->tags = malloc(len + 1);
	if (!p->tags)
		return -ENOMEM;
	p->tagslen = 0;
	for (uint32_t i = 0; i < m->ntags; i++) {
		size_t l = strlen(m->tags[i]);

		memcpy(p->tags + p->tagslen, m->tags[i], l);
		p->tagslen += l;
		/* NUL between tags, which no tag may contain. */
		if (i + 1 < m->ntags)
			p->tags[p->tagslen++] = '\0';
	}
	return 0;
}

/* Uploads p's bytes to its temporary key in pipelined pieces. */
static int upload(struct kv_redis_pipe *pp, struct prep *p, size_t *queued)
{
	const char *del[] = { "DEL", p->tmpkey };
	const char *exp[] = { "PEXPIRE", p->tmpkey, TMP_TTL_MS };
	int ret = 0;

	if (p->blob.len <= PIECE) {
		/* One piece: one command, with its expiry. */
		const char *argv[] = { "SET", p->tmpkey, (const char *)p->blob.data, "PX",
				       TMP_TTL_MS };
		size_t lens[] = { 3, strlen(p->tmpkey), p->blob.len, 2, strlen(TMP_TTL_MS) };

		ret = kv_redis_pipe_append(pp, 5, argv, lens);
		*queued += p->blob.len;
		if (!ret && *queued >= PIPE_BYTES) {
			ret = kv_redis_pipe_drain(pp);
			*queued = 0;
		}
		return ret;
	}
	ret = kv_redis_pipe_append(pp, 2, del, NULL);
	for (size_t off = 0; !ret && off < p->blob.len; off += PIECE) {
		size_t len = p->blob.len - off < PIECE ? p->blob.len - off : PIECE;
		const char *argv[] = { "APPEND", p->tmpkey, (const char *)p->blob.data + off };
		size_t lens[] = { 6, strlen(p->tmpkey), len };

		ret = kv_redis_pipe_append(pp, 3, argv, lens);
		*queued += len;
		if (!ret && *queued >= PIPE_BYTES) {
			ret = kv_redis_pipe_drain(pp);
			*queued = 0;
		}
	}
	if (!ret)
		ret = kv_redis_pipe_append(pp, 3, exp, NULL);
	return ret;
}

/* What the ops' commands were built from; kept: what undoes them. */
static void prep_release(struct prep *p, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		free(p[i].rec);
		free(p[i].tags);
		kv_redis_blob_free(&p[i].blob);
		free(p[i].tmpkey);
		free(p[i].vkey);
		free(p[i].rkey);
		p[i].rec = NULL;
		p[i].tags = NULL;
		p[i].tmpkey = NULL;
		p[i].vkey = NULL;
		p[i].rkey = NULL;
	}
}

static void prep_free(struct prep *p, size_t n)
{
	prep_release(p, n);
	free(p);
}

/* Gives every op with a value to store its new version, from Redis, so
 * they are never reused even by another mount of the same store. Sets the
 * ops' stored-value fields (undone by the caller on failure). */
static int assign_vvers(struct kv_redis *r, redisContext *c, struct kv_op *ops, struct prep *p,
			size_t n)
{
	uint64_t want = 0, next = 0;
	int ret = 0;

	for (size_t i = 0; i < n; i++)
		if (ops[i].type == KV_OP_PUT && ops[i].value && ops[i].meta.size)
			want++;
	if (want) {
		char num[24];
		const char *argv[] = { "INCRBY", NULL, num };
		char *k = kv_redis_key(r, "vver");
		redisReply *rep;

		if (!k)
			return -ENOMEM;
		u64dec(num, want);
		argv[1] = k;
		rep = redisCommandArgv(c, 3, argv, NULL);
		free(k);
		if (!rep || rep->type != REDIS_REPLY_INTEGER) {
			ret = kv_redis_error(r, c, rep, "commit");
			freeReplyObject(rep);
			return ret;
		}
		next = (uint64_t)rep->integer - want + 1;
		freeReplyObject(rep);
	}
	for (size_t i = 0; i < n; i++) {
		struct kv_op *op = &ops[i];

		u64dec(p[i].id, op->meta.id);
		u64dec(p[i].oldv, op->old_vver);
		if (op->type != KV_OP_PUT || !op->value)
			continue;
		if (!op->meta.size) {
			op->meta.vver = 0;
			op->meta.stored_size = 0;
			op->meta.encoding = KV_ENC_NONE;
		} else {
			op->meta.vver = next++;
			p[i].stores = true;
		}
	}
	return 0;
}

/* Encodes op's value and record into q. */
static int prepare_op(struct kv_redis *r, struct kv_op *op, struct prep *q)
{
	int ret = 0;

	if (op->type == KV_OP_DEL)
		return 0;
	if (q->stores) {
		ret = kv_redis_encode_value(r, op->value, &q->blob);
		if (ret)
			return ret;
		op->meta.stored_size = q->blob.len;
		op->meta.encoding = q->blob.encoding;
		if (q->blob.len > INLINE_MAX) {
			q->tmpkey = kv_redis_key(r, "tmp:%" PRIu64, op->meta.vver);
			if (!q->tmpkey)
				return -ENOMEM;
		}
	}
	u64dec(q->parent, op->meta.parent);
	u64dec(q->vver, op->meta.vver);
	i64dec(q->exp, op->meta.expires_ms);
	u64dec(q->stored, op->meta.stored_size);
	ret = join_tags(&op->meta, q);
	if (!ret)
		ret = kv_meta_encode(&op->meta, &q->rec, &q->reclen, &q->reccap);
	if (ret == -EINVAL)
		log_msg(NLOG_ERROR, "store", "backend_redis: refusing a commit with a "
			"malformed record (name, tags or xattrs out of bounds)");
	/* A new key in the common shape takes 5 script arguments, not 12. */
	q->compact = op->type == KV_OP_PUT && op->never_sent && op->may_yield &&
		     op->meta.expires_ms == 0 && !q->tmpkey && op->old_vver == 0 &&
		     op->meta.parent != 0 && op->meta.id != KV_ROOT_ID;
	return ret;
}

/* The staging marker's list of the keys written ahead of the script
 * (backend_redis_stage.c): malloc'd into *out, *len 0 when there are none. */
static int stage_list(const struct kv_op *ops, const struct prep *p, size_t n, char **out,
		      size_t *len)
{
	size_t cap = 1, k = 0;
	char *s;

	for (size_t i = 0; i < n; i++)
		cap += (ops[i].never_sent ? 24 : 0) + (p[i].stores ? 48 : 0);
	s = malloc(cap);
	if (!s)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		if (ops[i].type == KV_OP_PUT && ops[i].never_sent)
			k += (size_t)sprintf(s + k, "%s ", p[i].id);
		if (p[i].stores)
			k += (size_t)sprintf(s + k, "%s:%" PRIu64 " ", p[i].id, ops[i].meta.vver);
	}
	s[k] = '\0';
	*out = s;
	*len = k;
	return 0;
}

/* The copy of a record's index (T:i) that a record with a deadline has, so
 * that it can be unindexed once Redis expires the record. */
static int send_index(struct kv_redis *r, struct kv_redis_pipe *pp, const struct kv_op *op,
		      const struct prep *q)
{
	char *ik = op_key(r, 2, (const char *[]){ "i:", q->id });
	int ret;

	if (!ik)
		return -ENOMEM;
	const char *argv[] = { "HSET", ik, "p", q->parent, "n", op->meta.name,
			       "t", q->tags, "v", q->vver };
	size_t lens[] = { 4, strlen(ik), 1, strlen(q->parent), 1,
			  strlen(op->meta.name), 1, q->tagslen, 1, strlen(q->vver) };

	ret = kv_redis_pipe_append(pp, 10, argv, lens);
	free(ik);
	return ret;
}

/* The MSET being filled with inline values and records (send_plain). */
struct mset {
	const char **argv;
	size_t *lens;
	struct prep **from;	/* per pair: whose blob to free once sent, or NULL */
	int k;
	size_t bytes;
};

static int mset_send(struct kv_redis_pipe *pp, struct mset *m)
{
	int ret = 0;

	if (m->k > 1)
		ret = kv_redis_pipe_append(pp, m->k, m->argv, m->lens);
	/* Copied into the output buffer: the bytes are not needed any more. */
	for (int j = 0; j < (m->k - 1) / 2; j++)
		if (m->from[j])
			kv_redis_blob_free(&m->from[j]->blob);
	m->k = 1;
	m->bytes = 0;
	return ret;
}

/* Adds key = bytes to m, sending it when full. */
static int mset_add(struct kv_redis_pipe *pp, struct mset *m, const char *key,
		    const void *bytes, size_t len, struct prep *from)
{
	m->from[(m->k - 1) / 2] = from;
	m->argv[m->k] = key;
	m->lens[m->k++] = strlen(key);
	m->argv[m->k] = bytes;
	m->lens[m->k++] = len;
	m->bytes += len;
	if (m->k == 1 + 2 * MSET_PAIRS || m->bytes >= MSET_BYTES)
		return mset_send(pp, m);
	return 0;
}

/*
 * Encodes each op and sends, as plain commands ahead of the script, the
 * writes that need no decision: the values (inline ones in MSETs, large
 * ones uploaded) and the records (and index copies) of ops never sent (so
 * nothing can be there to read first). Each value's bytes are freed once
 * they are in the output buffer.
 */
static int send_plain(struct kv_redis *r, struct kv_redis_pipe *pp, struct kv_op *ops,
		      struct prep *p, size_t n)
{
	struct mset m = { .k = 1 };
	size_t queued = 0;
	int ret = 0;

	m.argv = malloc((1 + 2 * MSET_PAIRS) * sizeof(*m.argv));
	m.lens = malloc((1 + 2 * MSET_PAIRS) * sizeof(*m.lens));
	m.from = malloc(MSET_PAIRS * sizeof(*m.from));
	if (!m.argv || !m.lens || !m.from) {
		ret = -ENOMEM;
		goto out;
	}
	m.argv[0] = "MSET";
	m.lens[0] = 4;
	for (size_t i = 0; i < n && !ret; i++) {
		struct prep *q = &p[i];

		ret = prepare_op(r, &ops[i], q);
		if (ret)
			break;
		if (q->tmpkey) {
			ret = upload(pp, q, &queued);
			kv_redis_blob_free(&q->blob);
		} else if (q->stores) {
			q->vkey = op_key(r, 4, (const char *[]){ "v:", q->id, ":", q->vver });
			if (!q->vkey) {
				ret = -ENOMEM;
				break;
			}
			ret = mset_add(pp, &m, q->vkey, q->blob.data, q->blob.len, q);
		}
		if (ret || ops[i].type != KV_OP_PUT || !ops[i].never_sent)
			continue;
		/* The record as a string, in the same MSET: measured on Redis
		 * 7.0, a SET of a 108-byte record costs about 0.5 us of the
		 * server's time, an HSET of the record with four index fields
		 * 1.6 us, and a pair in an MSET less than a SET of its own
		 * (one command and one reply fewer). */
		q->rkey = op_key(r, 2, (const char *[]){ "r:", q->id });
		if (!q->rkey)
			ret = -ENOMEM;
		else
			ret = mset_add(pp, &m, q->rkey, q->rec, q->reclen, NULL);
		if (!ret && ops[i].meta.expires_ms)
			ret = send_index(r, pp, &ops[i], q);
	}
	if (!ret)
		ret = mset_send(pp, &m);
out:
	free(m.argv);
	free(m.lens);
	free(m.from);
	return ret;
}

/* The script's op type (backend_redis_script.c). */
static const char *op_type(const struct kv_op *op)
{
	bool y = op->may_yield;

	if (op->type != KV_OP_PUT)
		return "D";
	if (op->never_sent)
		return y ? "n" : "N";
	if (op->uncertain)
		return y ? "u" : "U";
	return !y ? "P" : op->was_committed ? "q" : "p";
}

/* The per-op arguments: the compact ops first, then the others; order[k]
 * is the op that the script calls k (its reply names ops so). */
static void fill_args(const struct kv_op *ops, const struct prep *p, size_t n, const char **argv,
		      size_t *lens, size_t *order)
{
	static const char none[] = "";
	const char **a = argv + HDR_ARGS;
	size_t *l = lens + HDR_ARGS, k = 0;

	for (size_t i = 0; i < n; i++) {
		const struct prep *q = &p[i];

		if (!q->compact)
			continue;
		order[k++] = i;
		a[0] = q->id;
		a[1] = q->parent;
		a[2] = ops[i].meta.name;
		a[3] = q->tags;
		l[3] = q->tagslen;
		a[4] = q->stores ? q->vver : "0";
		for (int j = 0; j < COMPACT_ARGS; j++)
			if (j != 3)
				l[j] = strlen(a[j]);
		a += COMPACT_ARGS;
		l += COMPACT_ARGS;
	}
	for (size_t i = 0; i < n; i++) {
		const struct prep *q = &p[i];
		bool put = ops[i].type == KV_OP_PUT;

		if (q->compact)
			continue;
		order[k++] = i;
		a[0] = op_type(&ops[i]);
		a[1] = q->id;
		/* Written before the script (send_plain). */
		a[2] = put && !ops[i].never_sent ? (const char *)q->rec : none;
		l[2] = put && !ops[i].never_sent ? q->reclen : 0;
		a[3] = put ? q->parent : "0";
		a[4] = put ? ops[i].meta.name : none;
		/* The root's tags are the declared ones, which T:decl holds
		 * (the header's arguments): the root is in no tag set. */
		a[5] = put && ops[i].meta.id != KV_ROOT_ID ? q->tags : none;
		l[5] = put && ops[i].meta.id != KV_ROOT_ID ? q->tagslen : 0;
		a[6] = put ? q->vver : "0";
		a[7] = put ? q->exp : "0";
		a[8] = q->stores ? (q->tmpkey ? "t" : "i") :
			put && ops[i].value ? "z" : none;
		a[9] = q->tmpkey ? q->tmpkey : none;
		l[9] = q->tmpkey ? strlen(q->tmpkey) : 0;
		a[10] = put ? q->stored : "0";
		a[11] = q->oldv;
		for (int j = 0; j < OP_ARGS; j++)
			if (j != 2 && j != 5 && j != 9)
				l[j] = strlen(a[j]);
		a += OP_ARGS;
		l += OP_ARGS;
	}
}

/* Reads the script's reply: an error (it wrote nothing), or the ops that
 * gave way, by the script's numbering (order). */
static int read_eval(struct kv_redis *r, redisContext *c, struct kv_op *ops, size_t n,
		     const size_t *order)
{
	redisReply *rep = NULL;
	int ret = 0;

	if (redisGetReply(c, (void **)&rep) != REDIS_OK)
		return kv_redis_error(r, c, NULL, "commit");
	if (rep->type != REDIS_REPLY_ARRAY)
		ret = kv_redis_error(r, c, rep, "commit");
	for (size_t i = 0; !ret && i < rep->elements; i++)
		if (rep->element[i]->type == REDIS_REPLY_INTEGER && rep->element[i]->integer >= 0 &&
		    (size_t)rep->element[i]->integer < n)
			ops[order[rep->element[i]->integer]].yielded = true;
	freeReplyObject(rep);
	return ret;
}

int kv_redis_commit(struct kv_backend *b, struct kv_op *ops, size_t n)
{
	struct kv_redis *r = (struct kv_redis *)b;
	struct kv_redis_conn *conn = NULL;
	char now[24], maxid[24], ncomp[24], marker[KV_REDIS_MARKER_MAX] = "";
	char *idskey = NULL, *decl = NULL, *declbase = NULL, *staged = NULL;
	size_t decllen = 0, declbaselen = 0, stagedlen = 0;
	size_t argc, ncompact = 0, *order = NULL;
	struct kv_redis_pipe pp;
	const char **argv = NULL;
	size_t *lens = NULL;
	uint64_t max_id = 0;
	struct prep *p;
	bool failed = false;
	int64_t t0;
	int ret;

	if (n == 0)
		return 0;
	ret = check_ops(ops, n);
	if (ret)
		return ret;
	/* hiredis takes the argument count as an int. */
	if (n > (size_t)(INT32_MAX - HDR_ARGS) / OP_ARGS)
		return -E2BIG;
	p = calloc(n, sizeof(*p));
	order = calloc(n, sizeof(*order));
	idskey = kv_redis_key(r, "ids");
	if (!p || !order || !idskey ||
	    kv_redis_decl_args(ops, n, &decl, &decllen, &declbase, &declbaselen)) {
		ret = -ENOMEM;
		goto out_free;
	}
	for (size_t i = 0; i < n; i++) {
		p[i].vver0 = ops[i].meta.vver;
		p[i].stored0 = ops[i].meta.stored_size;
		p[i].enc0 = ops[i].meta.encoding;
		ops[i].yielded = false;
		if (ops[i].meta.id > max_id)
			max_id = ops[i].meta.id;
	}
	ret = kv_redis_get(r, &conn);
	if (ret)
		goto out_undo;
	ret = assign_vvers(r, conn->c, ops, p, n);
	if (!ret)
		ret = stage_list(ops, p, n, &staged, &stagedlen);
	if (!ret && stagedlen)
		ret = kv_redis_stage(r, conn->c, staged, stagedlen, marker);
	if (ret) {
		failed = conn->c->err != 0;
		goto out_undo;
	}
	t0 = kv_redis_mono_ms();
	kv_redis_pipe_init(&pp, r, conn->c, "commit");
	ret = send_plain(r, &pp, ops, p, n);

	for (size_t i = 0; i < n; i++)
		ncompact += p[i].compact;
	argc = HDR_ARGS + ncompact * COMPACT_ARGS + (n - ncompact) * OP_ARGS;
	argv = calloc(argc, sizeof(*argv));
	lens = calloc(argc, sizeof(*lens));
	if (!ret && (!argv || !lens))
		ret = -ENOMEM;
	/* Every plain write must have succeeded before the script may
	 * publish them (a value refused at maxmemory, say). */
	if (!conn->c->err) {
		int dret = kv_redis_pipe_drain(&pp);

		if (!ret)
			ret = dret;
	}
	if (ret) {
		failed = conn->c->err != 0;
		if (!failed && marker[0])
			kv_redis_unstage(r, conn->c, marker);
		failed = conn->c->err != 0;
		goto out_undo;
	}

	u64dec(now, (uint64_t)wall_ms());
	u64dec(maxid, max_id);
	u64dec(ncomp, ncompact);
	argv[0] = "EVAL";
	argv[1] = kv_redis_script;
	argv[2] = "1";
	argv[3] = idskey;
	argv[4] = r->tag;
	argv[5] = now;
	argv[6] = maxid;
	argv[7] = r->mount_id;
	argv[8] = decl ? decl : "";
	argv[9] = declbase ? declbase : "";
	argv[10] = marker;
	argv[11] = ncomp;
	for (int k = 0; k < HDR_ARGS; k++)
		lens[k] = strlen(argv[k]);
	lens[8] = decllen;
	lens[9] = declbaselen;
	fill_args(ops, p, n, argv, lens, order);
	/* By its text: EVAL looks the compiled script up by its digest. */
	ret = kv_redis_pipe_append(&pp, (int)argc, argv, lens);
	/* The script's call is in the output buffer: what it was built
	 * from goes while Redis takes it in. */
	prep_release(p, n);
	if (!ret)
		ret = kv_redis_pipe_flush(&pp);
	if (!ret)
		ret = read_eval(r, conn->c, ops, n, order);
	kv_redis_pipe_done(&pp);
	if (ret) {
		/* A batch refused for a reservation left the connection sound. */
		failed = ret != -EAGAIN;
		goto out_undo;
	}
	kv_redis_put(r, conn, false);
	kv_redis_rtt(r, kv_redis_mono_ms() - t0);
	kv_redis_ok(r);
	goto out_free;

out_undo:
	for (size_t i = 0; i < n; i++) {
		ops[i].meta.vver = p[i].vver0;
		ops[i].meta.stored_size = p[i].stored0;
		ops[i].meta.encoding = p[i].enc0;
	}
	if (conn)
		kv_redis_put(r, conn, failed);
out_free:
	if (p)
		prep_free(p, n);
	free(order);
	free(argv);
	free(lens);
	free(idskey);
	free(decl);
	free(declbase);
	free(staged);
	return ret;
}
