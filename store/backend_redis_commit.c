/*
 * The Redis backend's commits. A batch is applied by one MULTI/EXEC
 * transaction, which Redis runs atomically: no client ever sees part of a
 * batch. It holds the writes that need no decision as plain commands (see
 * queue_plain) and then one Lua script, which changes each record together
 * with its directory entry, its tag sets, the set of ids and the deadline
 * index. The script checks everything that could fail (the uploaded values)
 * before it writes anything, and then also removes the plain writes,
 * because Redis does not roll a transaction or a script back.
 *
 * Values up to INLINE_MAX ride in the transaction itself, as long as the
 * batch's inline bytes stay under INLINE_BUDGET; larger ones are uploaded
 * first (one SET, or pipelined APPENDs of at most PIECE bytes) to a
 * temporary key that the script renames into place, so no batch needs one
 * giant command.
 * A temporary key of a commit that never ran expires by itself.
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
/* Bounds the script call's size: small values riding in it cost one MSET
 * argument each, uploaded ones three more commands and a RENAME. */
#define INLINE_BUDGET ((size_t)32 * 1024 * 1024)
#define PIECE ((size_t)1024 * 1024)
/* Replies are read (and the output buffer sent) every this many bytes. */
#define PIPE_BYTES ((size_t)16 * 1024 * 1024)
#define TMP_TTL_MS "3600000"
/* Values per MSET of inline values. */
#define MSET_PAIRS 1000

/* Arguments per op; see the script. */
#define OP_ARGS 12
#define HDR_ARGS 10

/* The script (backend_redis_script.c) takes HDR_ARGS header arguments
 * then OP_ARGS per op, as fill_args() lays them out. */
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
	bool stores;		/* a new value version is written */
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

/* Reads every pending reply; the first failure wins, the rest are drained. */
static int drain(struct kv_redis *r, redisContext *c, size_t *pending, const char *what)
{
	int ret = 0;

	while (*pending) {
		redisReply *rep = NULL;

		if (redisGetReply(c, (void **)&rep) != REDIS_OK) {
			*pending = 0;
			return kv_redis_error(r, c, NULL, what);
		}
		(*pending)--;
		if (!ret && rep->type == REDIS_REPLY_ERROR)
			ret = kv_redis_error(r, c, rep, what);
		freeReplyObject(rep);
	}
	return ret;
}

/* Uploads p's bytes to its temporary key in pipelined pieces. */
static int upload(struct kv_redis *r, redisContext *c, struct prep *p, size_t *pending,
		  size_t *queued)
{
	const char *del[] = { "DEL", p->tmpkey };
	const char *exp[] = { "PEXPIRE", p->tmpkey, TMP_TTL_MS };
	int ret = 0;

	if (p->blob.len <= PIECE) {
		/* One piece: one command, with its expiry. */
		const char *argv[] = { "SET", p->tmpkey, (const char *)p->blob.data, "PX",
				       TMP_TTL_MS };
		size_t lens[] = { 3, strlen(p->tmpkey), p->blob.len, 2, strlen(TMP_TTL_MS) };

		if (redisAppendCommandArgv(c, 5, argv, lens) != REDIS_OK)
			return kv_redis_error(r, c, NULL, "commit upload");
		(*pending)++;
		*queued += p->blob.len;
		if (*queued >= PIPE_BYTES) {
			ret = drain(r, c, pending, "commit upload");
			*queued = 0;
		}
		return ret;
	}
	if (redisAppendCommandArgv(c, 2, del, NULL) != REDIS_OK)
		return kv_redis_error(r, c, NULL, "commit upload");
	(*pending)++;
	for (size_t off = 0; off < p->blob.len; off += PIECE) {
		size_t len = p->blob.len - off < PIECE ? p->blob.len - off : PIECE;
		const char *argv[] = { "APPEND", p->tmpkey, (const char *)p->blob.data + off };
		size_t lens[] = { 6, strlen(p->tmpkey), len };

		if (redisAppendCommandArgv(c, 3, argv, lens) != REDIS_OK)
			return kv_redis_error(r, c, NULL, "commit upload");
		(*pending)++;
		*queued += len;
		if (*queued >= PIPE_BYTES) {
			ret = drain(r, c, pending, "commit upload");
			*queued = 0;
			if (ret)
				return ret;
		}
	}
	if (redisAppendCommandArgv(c, 3, exp, NULL) != REDIS_OK)
		return kv_redis_error(r, c, NULL, "commit upload");
	(*pending)++;
	return 0;
}

static void prep_free(struct prep *p, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		free(p[i].rec);
		free(p[i].tags);
		kv_redis_blob_free(&p[i].blob);
		free(p[i].tmpkey);
		free(p[i].vkey);
	}
	free(p);
}

/* Appends one command to the output buffer (sent by the first read). */
/*
 * Queued commands are sent once this many bytes wait. Kept until the end,
 * a flush's commands made one buffer as large as the batch: tens of MiB of
 * fresh pages, which the kernel clears on first touch (perf: about half of
 * the daemon's time in a 20,000-key flush). Sent in pieces, the buffer's
 * memory is reused, and Redis reads the commands while later ones are
 * built. Inside MULTI nothing runs before EXEC, and a connection that fails
 * part-way is dropped, which discards what it queued.
 */
#define SEND_AT (1u << 20)

static int append(struct kv_redis *r, redisContext *c, int argc, const char **argv,
		  const size_t *lens, size_t *pending)
{
	int done = 0;

	if (redisAppendCommandArgv(c, argc, argv, lens) != REDIS_OK)
		return kv_redis_error(r, c, NULL, "commit");
	(*pending)++;
	if (sdslen(c->obuf) < SEND_AT)
		return 0;
	while (!done)
		if (redisBufferWrite(c, &done) != REDIS_OK)
			return kv_redis_error(r, c, NULL, "commit");
	return 0;
}

/*
 * Queues, in the transaction before the script, the writes that need no
 * decision, as plain commands: a redis.call inside a script costs several
 * times what the same command costs in a pipeline (Redis 7.0: ~4 us against
 * ~1 us for an HSET), and a value that passes through the script is
 * hashed whole by Lua. These are the inline values (fresh versions no record
 * names yet, in MSETs of MSET_PAIRS) and the record and index hashes of ops
 * that were never sent (so nothing can be there to read first).
 */
static int queue_plain(struct kv_redis *r, redisContext *c, const struct kv_op *ops,
		       struct prep *p, size_t n, size_t *pending)
{
	const char **argv = malloc((1 + 2 * MSET_PAIRS) * sizeof(*argv));
	size_t *lens = malloc((1 + 2 * MSET_PAIRS) * sizeof(*lens));
	int k = 1, ret = 0;

	if (!argv || !lens) {
		ret = -ENOMEM;
		goto out_free;
	}
	argv[0] = "MSET";
	lens[0] = 4;
	for (size_t i = 0; i < n && !ret; i++) {
		struct prep *q = &p[i];

		if (!q->stores || q->tmpkey)
			continue;
		q->vkey = op_key(r, 4, (const char *[]){ "v:", q->id, ":", q->vver });
		if (!q->vkey) {
			ret = -ENOMEM;
			break;
		}
		argv[k] = q->vkey;
		lens[k++] = strlen(q->vkey);
		argv[k] = (const char *)q->blob.data;
		lens[k++] = q->blob.len;
		if (k == 1 + 2 * MSET_PAIRS) {
			ret = append(r, c, k, argv, lens, pending);
			k = 1;
		}
	}
	if (!ret && k > 1)
		ret = append(r, c, k, argv, lens, pending);
	for (size_t i = 0; i < n && !ret; i++) {
		const struct prep *q = &p[i];
		char *rk, *ik;

		if (ops[i].type != KV_OP_PUT || !ops[i].never_sent)
			continue;
		rk = op_key(r, 2, (const char *[]){ "r:", q->id });
		ik = op_key(r, 2, (const char *[]){ "i:", q->id });
		if (!rk || !ik) {
			ret = -ENOMEM;
		} else {
			const char *hr[] = { "HSET", rk, "m", (const char *)q->rec };
			size_t lr[] = { 4, strlen(rk), 1, q->reclen };
			const char *hi[] = { "HSET", ik, "p", q->parent, "n", ops[i].meta.name,
					     "t", q->tags, "v", q->vver };
			size_t li[] = { 4, strlen(ik), 1, strlen(q->parent), 1,
					strlen(ops[i].meta.name), 1, q->tagslen, 1, strlen(q->vver) };

			ret = append(r, c, 4, hr, lr, pending);
			if (!ret)
				ret = append(r, c, 10, hi, li, pending);
		}
		free(rk);
		free(ik);
	}
out_free:
	free(argv);
	free(lens);
	return ret;
}

/*
 * Reads the replies of MULTI, the queued commands and EXEC. A command
 * refused while queued (OOM at maxmemory) aborts the whole transaction:
 * its error is the one reported. Otherwise the first failed command of
 * EXEC's (the script's error, which wrote nothing).
 */
static int read_exec(struct kv_redis *r, redisContext *c, size_t pending, struct kv_op *ops,
		     size_t n)
{
	redisReply *rep = NULL;
	int ret = 0;

	for (; pending > 1; pending--) {
		if (redisGetReply(c, (void **)&rep) != REDIS_OK)
			return kv_redis_error(r, c, NULL, "commit");
		if (!ret && rep->type == REDIS_REPLY_ERROR)
			ret = kv_redis_error(r, c, rep, "commit");
		freeReplyObject(rep);
	}
	if (redisGetReply(c, (void **)&rep) != REDIS_OK)
		return kv_redis_error(r, c, NULL, "commit");
	if (!ret && rep->type != REDIS_REPLY_ARRAY)
		ret = kv_redis_error(r, c, rep, "commit");
	for (size_t i = 0; !ret && rep->type == REDIS_REPLY_ARRAY && i < rep->elements; i++)
		if (rep->element[i]->type == REDIS_REPLY_ERROR)
			ret = kv_redis_error(r, c, rep->element[i], "commit");
	/* The script's reply, last: the indexes of the ops that gave way. */
	if (!ret && rep->elements) {
		const redisReply *y = rep->element[rep->elements - 1];

		for (size_t i = 0; y->type == REDIS_REPLY_ARRAY && i < y->elements; i++)
			if (y->element[i]->type == REDIS_REPLY_INTEGER &&
			    y->element[i]->integer >= 0 && (size_t)y->element[i]->integer < n)
				ops[y->element[i]->integer].yielded = true;
	}
	freeReplyObject(rep);
	return ret;
}

/* Builds every op's arguments: new value versions, encoded values and
 * records. Sets the ops' stored-value fields (undone by the caller on
 * failure). */
static int prepare(struct kv_redis *r, redisContext *c, struct kv_op *ops, struct prep *p,
		   size_t n)
{
	uint64_t want = 0, next = 0;
	size_t inline_used = 0;
	int ret = 0;

	for (size_t i = 0; i < n; i++)
		if (ops[i].type == KV_OP_PUT && ops[i].value && ops[i].meta.size)
			want++;
	if (want) {
		/* Value versions come from Redis, so they are never reused even
		 * by another mount of the same store. */
		char num[24];
		const char *argv[] = { "INCRBY", NULL, num };
		char *k = kv_redis_key(r, "vver");
		redisReply *rep;

		if (!k)
			return -ENOMEM;
		snprintf(num, sizeof(num), "%" PRIu64, want);
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
	for (size_t i = 0; i < n && !ret; i++) {
		struct kv_op *op = &ops[i];
		struct prep *q = &p[i];

		u64dec(q->id, op->meta.id);
		u64dec(q->oldv, op->old_vver);
		if (op->type == KV_OP_DEL)
			continue;
		if (op->value && !op->meta.size) {
			op->meta.vver = 0;
			op->meta.stored_size = 0;
			op->meta.encoding = KV_ENC_NONE;
		} else if (op->value) {
			ret = kv_redis_encode_value(r, op->value, &q->blob);
			if (ret)
				break;
			op->meta.vver = next++;
			op->meta.stored_size = q->blob.len;
			op->meta.encoding = q->blob.encoding;
			q->stores = true;
			if (q->blob.len > INLINE_MAX || inline_used + q->blob.len > INLINE_BUDGET) {
				q->tmpkey = kv_redis_key(r, "tmp:%" PRIu64, op->meta.vver);
				if (!q->tmpkey)
					ret = -ENOMEM;
			} else {
				inline_used += q->blob.len;
			}
		}
		u64dec(q->parent, op->meta.parent);
		u64dec(q->vver, op->meta.vver);
		i64dec(q->exp, op->meta.expires_ms);
		u64dec(q->stored, op->meta.stored_size);
		if (!ret)
			ret = join_tags(&op->meta, q);
		if (!ret)
			ret = kv_meta_encode(&op->meta, &q->rec, &q->reclen, &q->reccap);
		if (ret == -EINVAL)
			log_msg(NLOG_ERROR, "store", "backend_redis: refusing a commit with a "
				"malformed record (name, tags or xattrs out of bounds)");
	}
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

static void fill_args(const struct kv_op *ops, const struct prep *p, size_t n, const char **argv,
		      size_t *lens)
{
	static const char none[] = "";

	for (size_t i = 0; i < n; i++) {
		const struct prep *q = &p[i];
		const char **a = argv + HDR_ARGS + i * OP_ARGS;
		size_t *l = lens + HDR_ARGS + i * OP_ARGS;
		bool put = ops[i].type == KV_OP_PUT;

		a[0] = op_type(&ops[i]);
		a[1] = q->id;
		/* Written before the script (queue_plain). */
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
		for (int k = 0; k < OP_ARGS; k++)
			if (k != 2 && k != 5 && k != 9)
				l[k] = strlen(a[k]);
	}
}

int kv_redis_commit(struct kv_backend *b, struct kv_op *ops, size_t n)
{
	struct kv_redis *r = (struct kv_redis *)b;
	struct kv_redis_conn *conn = NULL;
	char now[24], maxid[24], *idskey = NULL, *decl = NULL, *declbase = NULL;
	size_t decllen = 0, declbaselen = 0;
	size_t pending = 0, queued = 0, argc;
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
	argc = HDR_ARGS + n * OP_ARGS;
	argv = calloc(argc, sizeof(*argv));
	lens = calloc(argc, sizeof(*lens));
	idskey = kv_redis_key(r, "ids");
	if (!p || !argv || !lens || !idskey ||
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
	ret = prepare(r, conn->c, ops, p, n);
	if (ret) {
		failed = conn->c->err != 0;
		goto out_undo;
	}
	for (size_t i = 0; i < n && !ret; i++) {
		if (!p[i].tmpkey)
			continue;
		ret = upload(r, conn->c, &p[i], &pending, &queued);
		/* Sent (or failed): its bytes are not needed any more. */
		kv_redis_blob_free(&p[i].blob);
	}
	if (!ret)
		ret = drain(r, conn->c, &pending, "commit upload");
	if (ret) {
		failed = true;
		goto out_undo;
	}

	snprintf(now, sizeof(now), "%" PRId64, wall_ms());
	snprintf(maxid, sizeof(maxid), "%" PRIu64, max_id);
	argv[2] = "1";
	argv[3] = idskey;
	argv[4] = r->tag;
	argv[5] = now;
	argv[6] = maxid;
	argv[7] = r->mount_id;
	for (int k = 2; k < 8; k++)
		lens[k] = strlen(argv[k]);
	argv[8] = decl ? decl : "";
	lens[8] = decllen;
	argv[9] = declbase ? declbase : "";
	lens[9] = declbaselen;
	fill_args(ops, p, n, argv, lens);
	/* One transaction: the plain writes and the script, which Redis runs
	 * as one, and by its text (EVAL looks the compiled script up by its
	 * digest) so that it cannot fail for a lost script cache after the
	 * plain writes ran. */
	argv[0] = "EVAL";
	argv[1] = kv_redis_script;
	lens[0] = 4;
	lens[1] = strlen(kv_redis_script);
	t0 = kv_redis_mono_ms();
	pending = 0;
	ret = append(r, conn->c, 1, (const char *[]){ "MULTI" }, NULL, &pending);
	if (!ret)
		ret = queue_plain(r, conn->c, ops, p, n, &pending);
	if (!ret)
		ret = append(r, conn->c, (int)argc, argv, lens, &pending);
	if (!ret)
		ret = append(r, conn->c, 1, (const char *[]){ "EXEC" }, NULL, &pending);
	if (!ret)
		ret = read_exec(r, conn->c, pending, ops, n);
	if (ret) {
		/* A batch refused for a reservation left the connection sound. */
		failed = ret != -EAGAIN;
		goto out_undo;
	}
	kv_redis_put(r, conn, false);
	kv_redis_rtt(r, kv_redis_mono_ms() - t0);
	kv_redis_ok(r);
	prep_free(p, n);
	free(argv);
	free(lens);
	free(idskey);
	free(decl);
	free(declbase);
	return 0;

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
	free(argv);
	free(lens);
	free(idskey);
	free(decl);
	free(declbase);
	return ret;
}
