/*
 * The control files in .nadb/: stats (JSON) and metrics (Prometheus text),
 * each a snapshot taken when the file is opened, and ctl, a command file in
 * which every open descriptor is a session: writing a command line runs it,
 * then reads return that command's whole reply from its start, whatever the
 * file offset, followed by end of file. All are opened with direct_io, so
 * every read reaches the daemon and no stale page is ever served.
 *
 * A transaction begun with "tx begin NAME --session" belongs to its
 * session: when the descriptor is released (closed, or its process died)
 * before the transaction was committed or aborted, the daemon aborts it, so
 * that nadbctl tx apply killed mid-batch leaves nothing behind.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "fs/fs_ctl_cmd.h"
#include "fs/fs_int.h"
#include "nadbfs-config.h"
#include "util/log.h"

struct fs_ctlh {
	struct fs_handle h;	/* first: fi->fh points at both */
	fuse_ino_t ino;
	pthread_mutex_t lock;	/* a session may be used by several threads */
	char *buf;		/* snapshot, or the last reply */
	size_t len;
	size_t pos;		/* ctl: how much of the reply was read */
	/* ctl: the transaction begun with --session in this session (its
	 * name and root id, which no later transaction of that name has). */
	char *tx;
	uint64_t tx_root;
};

static double uptime_s(const struct fs *fs)
{
	struct timespec now;

	clock_gettime(CLOCK_REALTIME, &now);
	return (double)(now.tv_sec - fs->started.tv_sec) +
	       (double)(now.tv_nsec - fs->started.tv_nsec) / 1e9;
}

/* "ops": per operation count, p50_ms, p99_ms; "transactions"; "backend":
 * its health. */
static int add_ops_and_backend(struct fs *fs, const struct kv_stats *s, json_t *o)
{
	json_t *ops = json_object(), *be;

	if (!ops || json_object_set_new(o, "ops", ops))
		return -ENOMEM;
	for (int op = 0; op < FS_OP_COUNT; op++) {
		struct fs_op_summary sum;

		fs_op_summary(fs, (enum fs_op)op, &sum);
		if (json_object_set_new(ops, fs_op_name((enum fs_op)op),
					json_pack("{s:I, s:f, s:f}", "count", (json_int_t)sum.count,
						  "p50_ms", sum.p50_ms, "p99_ms", sum.p99_ms)))
			return -ENOMEM;
	}
	/* The local backend has no connection: it is "connected" while it
	 * takes flushes, and never reconnects (kv_stats). */
	if (json_object_set_new(o, "transactions",
				json_pack("{s:I, s:I, s:I, s:I, s:I}", "active",
					  (json_int_t)s->tx_active, "committed",
					  (json_int_t)s->tx_committed, "aborted",
					  (json_int_t)s->tx_aborted, "conflicted",
					  (json_int_t)s->tx_conflicted, "staged_bytes",
					  (json_int_t)s->tx_staged_bytes)))
		return -ENOMEM;
	be = json_pack("{s:s, s:b, s:b, s:I, s:o, s:I, s:s?}", "name", s->backend, "healthy",
		       !s->backend_error, "connected", s->backend_connected, "reconnects",
		       (json_int_t)s->backend_reconnects, "rtt_ms",
		       s->backend_rtt_ms >= 0 ? json_integer(s->backend_rtt_ms) : json_null(),
		       "spill_replayed", (json_int_t)s->spilled, "last_error",
		       s->backend_error ? strerror(-s->backend_error) : NULL);
	if (!be || json_object_set_new(o, "backend", be))
		return -ENOMEM;
	return 0;
}

static char *stats_json(struct fs *fs, size_t *len)
{
	struct kv_stats s;
	json_t *o;
	char *text;

	kv_get_stats(fs->kv, &s);
	uint64_t lookups = s.query_hits + s.query_misses;

	o = json_pack("{s:I, s:I, s:{s:I, s:I, s:I}, s:{s:I, s:I, s:I, s:I, s:I}, s:{s:I, s:I},"
		      " s:{s:I, s:I}, s:{s:I, s:I, s:I, s:f, s:I, s:I}, s:f, s:s}",
		      "keys", (json_int_t)s.keys, "dirs", (json_int_t)s.dirs,
		      "buffer", "keys", (json_int_t)s.buffer_keys, "bytes",
		      (json_int_t)s.buffer_bytes, "dirty_bytes", (json_int_t)s.dirty_bytes,
		      "flushes", "count", (json_int_t)s.flushes, "failures",
		      (json_int_t)s.flush_failures, "last_duration_ms",
		      (json_int_t)s.last_flush_ms, "backlog", (json_int_t)s.buffer_keys,
		      "backlog_age_ms", (json_int_t)s.backlog_age_ms,
		      "ttl", "pending", (json_int_t)s.ttl_pending, "expired",
		      (json_int_t)s.ttl_expired, "tags", "count", (json_int_t)s.tags, "entries",
		      (json_int_t)s.tag_entries,
		      "query_cache", "entries", (json_int_t)s.query_cached, "hits",
		      (json_int_t)s.query_hits, "misses", (json_int_t)s.query_misses, "hit_rate",
		      lookups ? (double)s.query_hits / (double)lookups : 0.0, "backend",
		      (json_int_t)s.query_backend, "backend_fallbacks",
		      (json_int_t)s.query_backend_fallbacks, "uptime_s",
		      uptime_s(fs), "version", NADBFS_VERSION);
	if (!o)
		return NULL;
	if (add_ops_and_backend(fs, &s, o)) {
		json_decref(o);
		return NULL;
	}
	/* The timeouts the kernel is given now (a reload may change them; on a
	 * shared store they are capped by coherence_delay). */
	json_object_set_new(o, "kernel_cache",
			    json_pack("{s:f, s:f, s:I}", "attr_timeout_s", fs->attr_timeout,
				      "entry_timeout_s", fs->entry_timeout, "pushed",
				      (json_int_t)atomic_load(&fs->push.pushed)));
	/* What nadbctl shows as progress while a backup command runs. */
	json_object_set_new(o, "backup",
			    json_pack("{s:s?, s:I, s:I, s:I, s:I}", "running", s.backup_op, "keys",
				      (json_int_t)s.backup_keys, "keys_total",
				      (json_int_t)s.backup_keys_total, "bytes",
				      (json_int_t)s.backup_bytes, "bytes_total",
				      (json_int_t)s.backup_bytes_total));
	text = json_dumps(o, JSON_COMPACT);
	json_decref(o);
	if (!text)
		return NULL;
	*len = strlen(text);
	/* One object per line, as tools that read JSON lines expect. */
	text = realloc(text, *len + 2);
	if (text) {
		text[(*len)++] = '\n';
		text[*len] = '\0';
	}
	return text;
}

struct metric {
	const char *name, *type, *help;
	uint64_t value;
};

/* Per operation: a request counter and the p50/p99 latencies, labelled by op. */
static void op_metrics(struct fs *fs, FILE *f)
{
	static const struct {
		const char *name, *type, *help;
	} fam[] = {
		{ "nadbfs_op_requests_total", "counter", "FUSE requests served." },
		{ "nadbfs_op_latency_p50_seconds", "gauge", "Median request latency." },
		{ "nadbfs_op_latency_p99_seconds", "gauge", "99th percentile request latency." },
	};

	for (size_t k = 0; k < sizeof(fam) / sizeof(fam[0]); k++) {
		fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", fam[k].name, fam[k].help, fam[k].name,
			fam[k].type);
		for (int op = 0; op < FS_OP_COUNT; op++) {
			struct fs_op_summary sum;

			fs_op_summary(fs, (enum fs_op)op, &sum);
			fprintf(f, "%s{op=\"%s\"} ", fam[k].name, fs_op_name((enum fs_op)op));
			if (k == 0)
				fprintf(f, "%llu\n", (unsigned long long)sum.count);
			else
				fprintf(f, "%.6f\n", (k == 1 ? sum.p50_ms : sum.p99_ms) / 1000);
		}
	}
}

static void gauge(FILE *f, const char *name, const char *help, double v)
{
	fprintf(f, "# HELP %s %s\n# TYPE %s gauge\n%s ", name, help, name, name);
	/* Prometheus spells an unknown value NaN. */
	if (isnan(v))
		fputs("NaN\n", f);
	else if (v >= 0 && v < 1e15 && v == (double)(uint64_t)v)
		fprintf(f, "%.0f\n", v);
	else
		fprintf(f, "%.9g\n", v);
}

/*
 * The stats figures that are not plain counts: ratios, durations in
 * seconds (the Prometheus unit), the version as the label of a constant
 * build_info gauge (the Prometheus convention for text), backup progress.
 */
static void stats_gauges(struct fs *fs, const struct kv_stats *s, FILE *f)
{
	uint64_t lookups = s->query_hits + s->query_misses;

	fprintf(f, "# HELP nadbfs_build_info The nadbfs version and the backend, as labels.\n"
		   "# TYPE nadbfs_build_info gauge\n"
		   "nadbfs_build_info{version=\"%s\",backend=\"%s\"} 1\n",
		NADBFS_VERSION, s->backend);
	gauge(f, "nadbfs_flush_last_duration_seconds", "Duration of the last flush.",
	      (double)s->last_flush_ms / 1000);
	gauge(f, "nadbfs_flush_backlog_age_seconds",
	      "Age of the oldest change not yet durable (0 when none).",
	      (double)s->backlog_age_ms / 1000);
	gauge(f, "nadbfs_query_cache_hit_ratio", "Cache hits over lookups (0 before any).",
	      lookups ? (double)s->query_hits / (double)lookups : 0.0);
	gauge(f, "nadbfs_backend_rtt_seconds", "Round trip of the last backend request.",
	      s->backend_rtt_ms >= 0 ? (double)s->backend_rtt_ms / 1000 : (double)NAN);
	gauge(f, "nadbfs_backend_spill_replayed", "Records replayed from a spill file at mount.",
	      (double)s->spilled);
	gauge(f, "nadbfs_kernel_attr_timeout_seconds", "Attribute timeout the kernel is given.",
	      fs->attr_timeout);
	gauge(f, "nadbfs_kernel_entry_timeout_seconds", "Entry timeout the kernel is given.",
	      fs->entry_timeout);
	gauge(f, "nadbfs_backup_running", "1 while a backup command runs.", s->backup_op ? 1 : 0);
	gauge(f, "nadbfs_backup_keys", "Keys done by the running backup command.",
	      (double)s->backup_keys);
	/* Gauges: no _total suffix, which Prometheus keeps for counters. */
	gauge(f, "nadbfs_backup_keys_expected", "Keys the running backup command has to do.",
	      (double)s->backup_keys_total);
	gauge(f, "nadbfs_backup_bytes", "Bytes done by the running backup command.",
	      (double)s->backup_bytes);
	gauge(f, "nadbfs_backup_bytes_expected", "Bytes the running backup command has to do.",
	      (double)s->backup_bytes_total);
}

static char *metrics_text(struct fs *fs, size_t *len)
{
	struct kv_stats s;
	char *text = NULL;
	size_t size = 0;
	FILE *f;

	kv_get_stats(fs->kv, &s);
	const struct metric m[] = {
		{ "nadbfs_keys", "gauge", "Keys in the store.", s.keys },
		{ "nadbfs_dirs", "gauge", "Directories in the store.", s.dirs },
		{ "nadbfs_buffer_keys", "gauge", "Records waiting to be flushed.", s.buffer_keys },
		{ "nadbfs_buffer_bytes", "gauge", "Bytes of values held in memory.",
		  s.buffer_bytes },
		{ "nadbfs_buffer_dirty_bytes", "gauge", "Bytes written and not yet durable.",
		  s.dirty_bytes },
		{ "nadbfs_flushes_total", "counter", "Completed flushes.", s.flushes },
		{ "nadbfs_flush_backlog", "gauge", "Records with a change not yet durable.",
		  s.buffer_keys },
		{ "nadbfs_flush_failures_total", "counter", "Failed flushes.", s.flush_failures },
		{ "nadbfs_ttl_expired_total", "counter", "Keys expired.", s.ttl_expired },
		{ "nadbfs_ttl_pending", "gauge", "Deadlines indexed for the sweeper.",
		  s.ttl_pending },
		{ "nadbfs_tags", "gauge", "Tags in use or made with mkdir.", s.tags },
		{ "nadbfs_tag_entries", "gauge", "Tag memberships of keys.", s.tag_entries },
		{ "nadbfs_tx_active", "gauge", "Open transactions.", s.tx_active },
		{ "nadbfs_tx_staged_bytes", "gauge", "Bytes staged by the open transactions.",
		  s.tx_staged_bytes },
		{ "nadbfs_tx_committed_total", "counter", "Transactions committed.", s.tx_committed },
		{ "nadbfs_tx_aborted_total", "counter", "Transactions aborted.", s.tx_aborted },
		{ "nadbfs_tx_conflicted_total", "counter", "Commits refused by a conflict.",
		  s.tx_conflicted },
		{ "nadbfs_query_cache_entries", "gauge", "Query results cached.", s.query_cached },
		{ "nadbfs_query_cache_hits_total", "counter", "Queries answered from the cache.",
		  s.query_hits },
		{ "nadbfs_query_cache_misses_total", "counter", "Queries evaluated.",
		  s.query_misses },
		{ "nadbfs_query_backend_total", "counter",
		  "Queries evaluated by the backend (Redis set operations).", s.query_backend },
		{ "nadbfs_query_backend_fallbacks_total", "counter",
		  "Queries evaluated locally because the backend failed.",
		  s.query_backend_fallbacks },
		{ "nadbfs_kernel_pushed_total", "counter",
		  "Written values stored into the kernel's page cache.",
		  atomic_load(&fs->push.pushed) },
	};

	f = open_memstream(&text, &size);
	if (!f)
		return NULL;
	for (size_t i = 0; i < sizeof(m) / sizeof(m[0]); i++)
		fprintf(f, "# HELP %s %s\n# TYPE %s %s\n%s %llu\n", m[i].name, m[i].help,
			m[i].name, m[i].type, m[i].name, (unsigned long long)m[i].value);
	fprintf(f, "# HELP nadbfs_backend_healthy 1 if the last flush succeeded.\n"
		   "# TYPE nadbfs_backend_healthy gauge\nnadbfs_backend_healthy %d\n",
		!s.backend_error);
	fprintf(f, "# HELP nadbfs_backend_connected 1 if the backend answered its last request.\n"
		   "# TYPE nadbfs_backend_connected gauge\nnadbfs_backend_connected %d\n"
		   "# HELP nadbfs_backend_reconnects_total Connections made after the first.\n"
		   "# TYPE nadbfs_backend_reconnects_total counter\n"
		   "nadbfs_backend_reconnects_total %llu\n",
		s.backend_connected, (unsigned long long)s.backend_reconnects);
	fprintf(f, "# HELP nadbfs_uptime_seconds Seconds since the mount.\n"
		   "# TYPE nadbfs_uptime_seconds gauge\nnadbfs_uptime_seconds %.3f\n",
		uptime_s(fs));
	stats_gauges(fs, &s, f);
	op_metrics(fs, f);
	if (fclose(f)) {
		free(text);
		return NULL;
	}
	*len = size;
	return text;
}

static char *reply(const char *fmt, const char *arg, size_t *len)
{
	char *text = NULL;
	int n = asprintf(&text, fmt, arg);

	if (n < 0)
		return NULL;
	*len = (size_t)n;
	return text;
}

/*
 * tx begin NAME --session: at most one per session, remembered in h. h->lock
 * is held throughout (then kv->lock, never the other way round), so that two
 * writers of one session cannot both begin one and leave one unowned.
 */
static int begin_in_session(struct fs *fs, struct fs_ctlh *h, const char *name, char *msg,
			    size_t msglen)
{
	struct kv_attr a;
	char *copy = NULL;
	int ret = 0;

	pthread_mutex_lock(&h->lock);
	if (h->tx && kv_tx_root(fs->kv, h->tx, &a) == 0 && a.id == h->tx_root) {
		snprintf(msg, msglen, "this session already holds transaction %s", h->tx);
		ret = -EBUSY;
	} else if (!(copy = strdup(name))) {
		ret = -ENOMEM;
	} else if (!(ret = kv_tx_begin(fs->kv, name, &a))) {
		free(h->tx);
		h->tx = copy;
		h->tx_root = a.id;
		copy = NULL;
	}
	pthread_mutex_unlock(&h->lock);
	free(copy);
	return ret;
}

/* Runs one parsed command in session h; returns the reply (malloc'd). */
static char *run_command(struct fs *fs, struct fs_ctlh *h, const struct fs_ctl_cmd *c,
			 size_t *len)
{
	char msg[1024] = "";
	struct kv_dirent *ents;
	struct kv_attr a;
	size_t n;
	int ret;

	switch (c->verb) {
	case FS_CTL_FLUSH:
		ret = kv_flush(fs->kv);
		if (ret)
			return reply("error: flush failed: %s\n", strerror(-ret), len);
		return reply("ok%s\n", "", len);
	case FS_CTL_SWEEP:
		kv_sweep(fs->kv);
		return reply("ok%s\n", "", len);
	case FS_CTL_RELOAD:
		snprintf(msg, sizeof(msg), "reload is not available");
		if (!fs->o.reload || fs->o.reload(fs->o.reload_arg, msg, sizeof(msg)))
			return reply("error: %s\n", msg, len);
		return reply("ok%s\n", "", len);
	case FS_CTL_TX_LIST: {
		char *text = NULL, *p;
		size_t size = 0;
		FILE *f;

		ret = kv_tx_list(fs->kv, &ents, &n);
		if (ret)
			return reply("error: %s\n", strerror(-ret), len);
		f = open_memstream(&text, &size);
		if (f) {
			fputs("ok\n", f);
			for (size_t i = 0; i < n; i++)
				fprintf(f, "%s\n", ents[i].name);
			if (fclose(f)) {
				free(text);
				text = NULL;
			}
		}
		kv_dirents_free(ents, n);
		p = text ? text : reply("error: %s\n", strerror(ENOMEM), len);
		if (text)
			*len = size;
		return p;
	}
	case FS_CTL_BACKUP:
		return fs_ctl_backup(fs, c->args, len);
	case FS_CTL_TX_BEGIN:
		ret = c->session ? begin_in_session(fs, h, c->name, msg, sizeof(msg)) :
				   kv_tx_begin(fs->kv, c->name, &a);
		break;
	case FS_CTL_TX_ABORT:
		ret = kv_tx_abort(fs->kv, c->name);
		break;
	case FS_CTL_TX_COMMIT:
	default:
		ret = kv_tx_commit(fs->kv, c->name, msg, sizeof(msg));
		break;
	}
	if (!ret)
		return reply("ok%s\n", "", len);
	if (!msg[0])
		snprintf(msg, sizeof(msg), "%s: %s", c->name,
			 ret == -ENOENT ? "no such transaction" :
			 ret == -EEXIST ? "a transaction of that name is open" :
			 ret == -EINVAL ? "a name is 1-128 bytes of A-Z a-z 0-9 . _ -, not starting with '.'" :
					 strerror(-ret));
	return reply("error: %s\n", msg, len);
}

bool fs_ctl_is_file(fuse_ino_t ino)
{
	return ino == FS_INO_STATS || ino == FS_INO_METRICS || ino == FS_INO_CTL;
}

static void ctlh_free(struct fs_handle *hh)
{
	struct fs_ctlh *h = (struct fs_ctlh *)hh;

	pthread_mutex_destroy(&h->lock);
	free(h->buf);
	free(h->tx);
	free(h);
}

void fs_ctl_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct fs *fs = fs_of(req);
	struct fs_ctlh *h = calloc(1, sizeof(*h));

	if (!h) {
		fs_reply_err(req, -ENOMEM);
		return;
	}
	h->ino = ino;
	pthread_mutex_init(&h->lock, NULL);
	if (ino == FS_INO_STATS)
		h->buf = stats_json(fs, &h->len);
	else if (ino == FS_INO_METRICS)
		h->buf = metrics_text(fs, &h->len);
	if (ino != FS_INO_CTL && !h->buf) {
		ctlh_free(&h->h);
		fs_reply_err(req, -ENOMEM);
		return;
	}
	fi->fh = (uintptr_t)h;
	fi->direct_io = 1;
	fi->keep_cache = 0;
	fs_handle_link(fs, &h->h, ctlh_free);
	if (fuse_reply_open(req, fi)) /* interrupted: no release will come */
		fs_ctl_release(fs, fi);
}

void fs_ctl_read(fuse_req_t req, struct fuse_file_info *fi, size_t size, off_t off)
{
	struct fs_ctlh *h = (struct fs_ctlh *)(uintptr_t)fi->fh;
	size_t from;
	char *copy;

	pthread_mutex_lock(&h->lock);
	/* The ctl reply is read from its start whatever the offset; the
	 * snapshots are ordinary files. */
	from = h->ino == FS_INO_CTL ? h->pos : (off < 0 ? h->len : (size_t)off);
	if (from > h->len)
		from = h->len;
	if (size > h->len - from)
		size = h->len - from;
	if (h->ino == FS_INO_CTL)
		h->pos += size;
	/*
	 * Reply after unlocking, from a copy: once the reply is sent the
	 * reader may close the file, and the RELEASE, served by another
	 * worker, frees h while this thread would still unlock h->lock
	 * (found by ThreadSanitizer: destroy of a locked mutex).
	 */
	copy = size ? malloc(size) : NULL;
	if (copy)
		memcpy(copy, h->buf + from, size);
	pthread_mutex_unlock(&h->lock);
	if (size && !copy)
		fs_reply_err(req, -ENOMEM);
	else
		fuse_reply_buf(req, copy, size);
	free(copy);
}

void fs_ctl_write(fuse_req_t req, struct fuse_file_info *fi, const char *buf, size_t size)
{
	struct fs_ctlh *h = (struct fs_ctlh *)(uintptr_t)fi->fh;
	struct fs_ctl_cmd cmd;
	char err[512], *text;
	size_t len = 0;

	if (h->ino != FS_INO_CTL) {
		fs_reply_err(req, -EBADF);
		return;
	}
	if (fs_ctl_parse(buf, size, &cmd, err, sizeof(err)))
		text = reply("%s", err, &len);
	else
		text = run_command(fs_of(req), h, &cmd, &len);
	if (!text) {
		fs_reply_err(req, -ENOMEM);
		return;
	}
	pthread_mutex_lock(&h->lock);
	free(h->buf);
	h->buf = text;
	h->len = len;
	h->pos = 0;
	pthread_mutex_unlock(&h->lock);
	fuse_reply_write(req, size);
}

/*
 * The session's transaction, if still open, is aborted: at once, or, while
 * a request inside it (a value being loaded) or its commit still runs, as
 * soon as they are done (the store frees it then; a FUSE worker must not
 * wait here). A commit that succeeded leaves nothing to abort (-ENOENT).
 */
static void abort_session_tx(struct fs *fs, struct fs_ctlh *h)
{
	uint64_t root;
	char *name;
	int ret;

	pthread_mutex_lock(&h->lock);
	name = h->tx;
	root = h->tx_root;
	h->tx = NULL;
	pthread_mutex_unlock(&h->lock);
	if (!name)
		return;
	ret = kv_tx_abort_id(fs->kv, name, root);
	if (!ret)
		NLOG(NLOG_INFO, "fs", "transaction aborted: its ctl session was closed uncommitted",
		     LF_STR("tx", name));
	else if (ret == -EINPROGRESS)
		NLOG(NLOG_INFO, "fs", "ctl session closed while its transaction commits: "
		     "the commit decides", LF_STR("tx", name));
	else if (ret != -ENOENT)
		NLOG(NLOG_WARN, "fs", "cannot abort the transaction of a closed ctl session",
		     LF_STR("tx", name), LF_STR("error", strerror(-ret)));
	free(name);
}

void fs_ctl_release(struct fs *fs, struct fuse_file_info *fi)
{
	struct fs_ctlh *h = (struct fs_ctlh *)(uintptr_t)fi->fh;

	if (!h)
		return;
	/* The last descriptor of the session is gone. */
	if (h->ino == FS_INO_CTL)
		abort_session_tx(fs, h);
	/* No read is inside h: fs_ctl_read replies after letting go of it. */
	fs_handle_release(fs, &h->h);
	fi->fh = 0;
}
