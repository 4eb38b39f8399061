/*
 * The spill file (spec section 1): when the backend cannot be reached at
 * close, after the final flush kept failing for backend_timeout, every
 * buffered change is written to a local file instead of being dropped, and
 * the next open of the same store commits that file to the backend before
 * it loads anything, so the store it serves includes those writes.
 *
 * A spill file holds exactly the batch the flusher would have committed
 * (every dirty record at one instant: whole records, values that changed,
 * deletes), so replaying it is one ordinary all-or-nothing commit.
 *
 * Files live in spill_dir as "<H>.<wall ms>.<pid>.spill", H = 16 hex digits
 * of XXH64 of the store identity (backend, server, database, key prefix, db,
 * namespace): two mounts of one store spilling at once never overwrite each
 * other, and replay takes them oldest first. Each is written to a temporary
 * name, fsync'ed, renamed, and the directory fsync'ed; it ends with an XXH64
 * of its bytes, and a damaged file stops the mount (its data is never
 * silently dropped): the message names it.
 *
 * Format (little-endian): "NADBSPL1", u32 identity length, identity, u64 op
 * count, per op: u8 type, u64 old_vver, u32 record length, record
 * (kv_meta_encode), u8 flags (1: a value follows, 2: then a base tag list),
 * [u64 value length, bytes], [u32 count, per tag u32 length, bytes]; then
 * u64 XXH64. The base tag list is the root PUT's kv_op.base_tags, so that a
 * replay changes the declared tags other mounts share by what this mount
 * changed, not by its whole list; a file written before it carries none.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <xxhash.h>

#include "store/sync.h"
#include "util/log.h"

#define MAGIC "NADBSPL1"

struct wbuf {
	int fd;
	XXH64_state_t *h;
	uint8_t buf[65536];
	size_t len;
	int err;
};

static void w_flush(struct wbuf *w)
{
	size_t off = 0;

	while (!w->err && off < w->len) {
		ssize_t n = write(w->fd, w->buf + off, w->len - off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			w->err = -errno;
		else
			off += (size_t)n;
	}
	w->len = 0;
}

static void w_put(struct wbuf *w, const void *data, size_t len)
{
	const uint8_t *p = data;

	XXH64_update(w->h, data, len);
	while (len && !w->err) {
		size_t k = sizeof(w->buf) - w->len < len ? sizeof(w->buf) - w->len : len;

		memcpy(w->buf + w->len, p, k);
		w->len += k;
		p += k;
		len -= k;
		if (w->len == sizeof(w->buf))
			w_flush(w);
	}
}

static void w_u64(struct wbuf *w, uint64_t v)
{
	uint8_t b[8];

	for (int i = 0; i < 8; i++)
		b[i] = (uint8_t)(v >> (8 * i));
	w_put(w, b, 8);
}

static void w_u32(struct wbuf *w, uint32_t v)
{
	uint8_t b[4];

	for (int i = 0; i < 4; i++)
		b[i] = (uint8_t)(v >> (8 * i));
	w_put(w, b, 4);
}

static int w_piece(const void *data, size_t len, void *arg)
{
	struct wbuf *w = arg;

	w_put(w, data, len);
	return w->err;
}

static int fsync_dir(const char *dir)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	int ret = 0;

	if (fd < 0)
		return -errno;
	if (fsync(fd))
		ret = -errno;
	close(fd);
	return ret;
}

/* mkdir -p, mode 0700: spilled values are the users' data. */
static int make_dir(const char *path)
{
	char *p = strdup(path);
	int ret = 0;

	if (!p)
		return -ENOMEM;
	for (char *s = p + 1; !ret; s++) {
		if (*s != '/' && *s)
			continue;
		char c = *s;

		*s = '\0';
		if (mkdir(p, 0700) && errno != EEXIST)
			ret = -errno;
		*s = c;
		if (!c)
			break;
	}
	free(p);
	return ret;
}

/* The commit function given to the flusher: the batch goes to a file. */
static int spill_commit(void *arg, struct kv_op *ops, size_t n)
{
	struct kv_store *kv = arg;
	struct kv_sync *s = kv->sync;
	struct wbuf *w = calloc(1, sizeof(*w));
	char *tmp = NULL, *path = NULL;
	uint8_t *rec = NULL;
	size_t reclen, reccap = 0;
	int ret;

	if (!w)
		return -ENOMEM;
	w->fd = -1;
	w->h = XXH64_createState();
	ret = make_dir(s->spill_dir);
	if (ret)
		goto out;
	if (!w->h || asprintf(&tmp, "%s/.%s%d.tmp", s->spill_dir, s->spill_prefix,
			      (int)getpid()) < 0 ||
	    asprintf(&path, "%s/%s%016" PRId64 ".%d.spill", s->spill_dir, s->spill_prefix,
		     kv_now_ms(), (int)getpid()) < 0) {
		tmp = path = NULL;
		ret = -ENOMEM;
		goto out;
	}
	XXH64_reset(w->h, 0);
	w->fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (w->fd < 0) {
		ret = -errno;
		goto out;
	}
	w_put(w, MAGIC, 8);
	w_u32(w, (uint32_t)s->identity_len);
	w_put(w, s->identity, s->identity_len);
	w_u64(w, n);
	for (size_t i = 0; i < n && !w->err && !ret; i++) {
		uint8_t t = (uint8_t)ops[i].type, hv = ops[i].value != NULL;

		w_put(w, &t, 1);
		w_u64(w, ops[i].old_vver);
		reclen = 0;
		if (ops[i].type == KV_OP_PUT) {
			ret = kv_meta_encode(&ops[i].meta, &rec, &reclen, &reccap);
			if (ret)
				break;
		} else {
			/* A DEL needs only the id. */
			uint8_t id[8];

			for (int k = 0; k < 8; k++)
				id[k] = (uint8_t)(ops[i].meta.id >> (8 * k));
			w_u32(w, 8);
			w_put(w, id, 8);
			hv = 0;
			w_put(w, &hv, 1);
			continue;
		}
		w_u32(w, (uint32_t)reclen);
		w_put(w, rec, reclen);
		hv |= ops[i].has_base ? 2 : 0;
		w_put(w, &hv, 1);
		if (hv & 1) {
			w_u64(w, kv_value_size(ops[i].value));
			kv_value_foreach(ops[i].value, w_piece, w);
		}
		if (hv & 2) {
			w_u32(w, ops[i].nbase_tags);
			for (uint32_t j = 0; j < ops[i].nbase_tags; j++) {
				w_u32(w, (uint32_t)strlen(ops[i].base_tags[j]));
				w_put(w, ops[i].base_tags[j], strlen(ops[i].base_tags[j]));
			}
		}
	}
	if (!ret) {
		uint64_t sum = XXH64_digest(w->h);

		w_u64(w, sum);
		w_flush(w);
		ret = w->err;
	}
	if (!ret && fsync(w->fd))
		ret = -errno;
	if (close(w->fd) && !ret)
		ret = -errno;
	w->fd = -1;
	if (!ret && rename(tmp, path))
		ret = -errno;
	if (!ret)
		ret = fsync_dir(s->spill_dir);
	if (ret)
		unlink(tmp);
	else
		NLOG(NLOG_WARN, "store", "backend unreachable at close: buffered writes saved "
		     "to a spill file; the next mount of this store replays them",
		     LF_STR("file", path), LF_INT("records", n));
out:
	if (ret)
		NLOG(NLOG_ERROR, "store", "cannot write the spill file",
		     LF_STR("dir", s->spill_dir), LF_STR("error", strerror(-ret)));
	if (w->fd >= 0)
		close(w->fd);
	if (w->h)
		XXH64_freeState(w->h);
	free(w);
	free(rec);
	free(tmp);
	free(path);
	return ret;
}

int kv_spill_save(struct kv_store *kv)
{
	if (!kv->sync)
		return -ENOTSUP;
	return kv_flush_once_via(kv, spill_commit, kv);
}

/* --- Replay --- */

struct rbuf {
	const uint8_t *p, *end;
	bool bad;
};

static const uint8_t *r_take(struct rbuf *r, size_t len)
{
	const uint8_t *p = r->p;

	if (r->bad || (size_t)(r->end - r->p) < len) {
		r->bad = true;
		return NULL;
	}
	r->p += len;
	return p;
}

static uint64_t r_uint(struct rbuf *r, int bytes)
{
	const uint8_t *p = r_take(r, (size_t)bytes);
	uint64_t v = 0;

	for (int i = 0; p && i < bytes; i++)
		v |= (uint64_t)p[i] << (8 * i);
	return v;
}

static void free_ops(struct kv_op *ops, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		kv_meta_clear(&ops[i].meta);
		kv_value_free((struct kv_value *)ops[i].value);
		for (uint32_t j = 0; j < ops[i].nbase_tags; j++)
			free(ops[i].base_tags[j]);
		free(ops[i].base_tags);
	}
	free(ops);
}

/* A root PUT's base tag list: 0, -EINVAL (damaged) or -ENOMEM. */
static int read_base(struct rbuf *r, struct kv_op *op)
{
	uint64_t count = r_uint(r, 4);

	/* The record format's bound on a tag list. */
	if (r->bad || count > 65535)
		return -EINVAL;
	op->has_base = true;
	op->base_tags = calloc(count ? count : 1, sizeof(*op->base_tags));
	if (!op->base_tags)
		return -ENOMEM;
	for (; op->nbase_tags < count; op->nbase_tags++) {
		uint64_t len = r_uint(r, 4);
		const uint8_t *t = r_take(r, len);

		if (!t || !kv_tag_name_ok((const char *)t, len) || memchr(t, '\0', len))
			return -EINVAL;
		if (!(op->base_tags[op->nbase_tags] = strndup((const char *)t, len)))
			return -ENOMEM;
	}
	return 0;
}

/* Parses a whole spill file into ops; -EINVAL when damaged or another
 * store's. */
static int parse(struct kv_sync *s, const uint8_t *data, size_t len, struct kv_op **out,
		 size_t *nout)
{
	struct rbuf r = { data, data + (len >= 8 ? len - 8 : 0), len < 8 + 8 + 4 };
	struct rbuf tail = { data + (len >= 8 ? len - 8 : 0), data + len, len < 8 };
	struct kv_op *ops = NULL;
	uint64_t n, idlen;
	size_t k = 0;

	if (r.bad || XXH64(data, len - 8, 0) != r_uint(&tail, 8) || memcmp(data, MAGIC, 8))
		return -EINVAL;
	r_take(&r, 8);
	idlen = r_uint(&r, 4);
	if (idlen != s->identity_len)
		return -EINVAL;
	{
		const uint8_t *id = r_take(&r, idlen);

		if (!id || memcmp(id, s->identity, idlen))
			return -EINVAL;
	}
	n = r_uint(&r, 8);
	if (r.bad || n > len)
		return -EINVAL;
	ops = calloc(n ? n : 1, sizeof(*ops));
	if (!ops)
		return -ENOMEM;
	for (; k < n && !r.bad; k++) {
		struct kv_op *op = &ops[k];
		uint32_t reclen;
		const uint8_t *rec;
		uint64_t flags;
		size_t used;
		int ret;

		op->type = (enum kv_op_type)r_uint(&r, 1);
		op->old_vver = r_uint(&r, 8);
		reclen = (uint32_t)r_uint(&r, 4);
		rec = r_take(&r, reclen);
		if (!rec)
			break;
		if (op->type == KV_OP_DEL && reclen == 8) {
			struct rbuf ir = { rec, rec + 8, false };

			op->meta.id = r_uint(&ir, 8);
		} else if (op->type != KV_OP_PUT ||
			   kv_meta_decode(rec, reclen, &op->meta, &used) || used != reclen) {
			r.bad = true;
			break;
		}
		flags = r_uint(&r, 1);
		if (flags & ~3u) {
			r.bad = true;
			break;
		}
		if (flags & 1) {
			uint64_t vlen = r_uint(&r, 8);
			const uint8_t *v = r_take(&r, vlen);

			if (!v)
				break;
			op->value = kv_value_from_buf(v, vlen);
			if (!op->value) {
				free_ops(ops, n);
				return -ENOMEM;
			}
		}
		if ((flags & 2) && (ret = read_base(&r, op))) {
			free_ops(ops, n);
			return ret;
		}
	}
	if (r.bad || r.p != r.end) {
		free_ops(ops, n);
		return -EINVAL;
	}
	*out = ops;
	*nout = n;
	return 0;
}

static int read_whole(const char *path, uint8_t **out, size_t *len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	struct stat st;
	uint8_t *buf;
	size_t got = 0;

	if (fd < 0)
		return -errno;
	if (fstat(fd, &st)) {
		close(fd);
		return -errno;
	}
	buf = malloc(st.st_size ? (size_t)st.st_size : 1);
	if (!buf) {
		close(fd);
		return -ENOMEM;
	}
	while (got < (size_t)st.st_size) {
		ssize_t n = read(fd, buf + got, (size_t)st.st_size - got);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			int e = n < 0 ? -errno : -EIO;

			free(buf);
			close(fd);
			return e;
		}
		got += (size_t)n;
	}
	close(fd);
	*out = buf;
	*len = got;
	return 0;
}

static int replay_one(struct kv_store *kv, const char *path, char *err, size_t errlen)
{
	struct kv_op *ops = NULL;
	uint8_t *data = NULL;
	size_t len = 0, n = 0;
	int ret;

	ret = read_whole(path, &data, &len);
	if (!ret)
		ret = parse(kv->sync, data, len, &ops, &n);
	free(data);
	if (ret) {
		snprintf(err, errlen, "cannot read the spill file %s: %s", path,
			 ret == -EINVAL ? "damaged, or not this store's" : strerror(-ret));
		return ret;
	}
	ret = kv->backend->ops->commit(kv->backend, ops, n);
	free_ops(ops, n);
	if (ret) {
		snprintf(err, errlen, "cannot replay the spill file %s: %s", path,
			 strerror(-ret));
		return ret;
	}
	/* Committed: a crash before the unlink replays it again, which writes
	 * the same records once more. */
	if (unlink(path) && errno != ENOENT) {
		snprintf(err, errlen, "cannot remove the replayed spill file %s: %s", path,
			 strerror(errno));
		return -errno;
	}
	fsync_dir(kv->sync->spill_dir);
	kv->spilled += n;
	NLOG(NLOG_INFO, "store", "replayed a spill file", LF_STR("file", path),
	     LF_INT("records", n));
	return 0;
}

static int cmp_names(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static int replay_all(struct kv_store *kv, char *err, size_t errlen)
{
	struct kv_sync *s = kv->sync;
	size_t plen = strlen(s->spill_prefix), n = 0, cap = 0;
	char **names = NULL;
	struct dirent *e;
	DIR *d = opendir(s->spill_dir);
	int ret = 0;

	if (!d)
		return errno == ENOENT ? 0 : (snprintf(err, errlen, "cannot read the spill "
					      "directory %s: %s", s->spill_dir,
					      strerror(errno)), -errno);
	while ((e = readdir(d))) {
		size_t len = strlen(e->d_name);

		if (strncmp(e->d_name, s->spill_prefix, plen) || len < 6 ||
		    strcmp(e->d_name + len - 6, ".spill"))
			continue;
		if (n == cap) {
			char **nn = realloc(names, (cap = cap ? 2 * cap : 8) * sizeof(*nn));

			if (!nn) {
				ret = -ENOMEM;
				break;
			}
			names = nn;
		}
		if (asprintf(&names[n], "%s/%s", s->spill_dir, e->d_name) < 0) {
			ret = -ENOMEM;
			break;
		}
		n++;
	}
	closedir(d);
	/* The wall-clock part is zero-padded: name order is time order. */
	if (n)
		qsort(names, n, sizeof(*names), cmp_names);
	for (size_t i = 0; i < n && !ret; i++)
		ret = replay_one(kv, names[i], err, errlen);
	if (ret == -ENOMEM && !err[0])
		snprintf(err, errlen, "out of memory");
	for (size_t i = 0; i < n; i++)
		free(names[i]);
	free(names);
	return ret;
}

/* The store identity: what makes two mounts "the same store". */
static char *identity(const struct kv_options *o, size_t *len)
{
	const struct kv_backend_params *p = &o->params;
	char *id = NULL;
	int n;

	if (o->backend == KV_BACKEND_REDIS && !o->backend_instance)
		n = asprintf(&id, "redis|%s|%s:%u|%u|%s|%s|%s",
			     p->redis_socket && *p->redis_socket ? p->redis_socket : "",
			     p->redis_host && *p->redis_host ? p->redis_host : "127.0.0.1",
			     p->redis_port ? p->redis_port : 6379, p->redis_database,
			     p->redis_key_prefix ? p->redis_key_prefix : "nadb",
			     p->db ? p->db : "default", p->ns ? p->ns : "default");
	else
		n = asprintf(&id, "%d|%s|%s|%s", (int)o->backend,
			     p->data_dir ? p->data_dir : "", p->db ? p->db : "default",
			     p->ns ? p->ns : "default");
	if (n < 0)
		return NULL;
	*len = (size_t)n;
	return id;
}

int kv_spill_open(struct kv_store *kv, const struct kv_options *o, char *err, size_t errlen)
{
	struct kv_sync *s;

	/* The local backend is its own durable store: it never spills (its
	 * records could not be replayed into it anyway); Redis does, and so
	 * does a test's injected backend given a spill_dir. */
	if (o->backend_instance ? !o->spill_dir : o->backend != KV_BACKEND_REDIS)
		return 0;
	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	kv->sync = s;
	s->spill_dir = strdup(o->spill_dir && *o->spill_dir ? o->spill_dir
			      : KV_SPILL_DIR_DEFAULT);
	s->identity = identity(o, &s->identity_len);
	if (!s->spill_dir || !s->identity ||
	    asprintf(&s->spill_prefix, "%016llx.",
		     (unsigned long long)XXH64(s->identity, s->identity_len, 0)) < 0) {
		s->spill_prefix = NULL;
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	return replay_all(kv, err, errlen);
}

void kv_sync_free(struct kv_store *kv)
{
	struct kv_sync *s = kv->sync;

	if (!s)
		return;
	free(s->spill_dir);
	free(s->spill_prefix);
	free(s->identity);
	free(s);
	kv->sync = NULL;
}

void kv_backend_health_stats(struct kv_store *kv, struct kv_stats *out)
{
	struct kv_backend_health h = { .connected = !out->backend_error, .rtt_ms = -1 };

	if (kv->backend->ops->health)
		kv->backend->ops->health(kv->backend, &h);
	out->backend_connected = h.connected;
	out->backend_reconnects = h.reconnects;
	out->backend_rtt_ms = h.rtt_ms;
}
