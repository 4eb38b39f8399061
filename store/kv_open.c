/*
 * Opening a store (backend, load, tree) and closing it (final flush).
 */
#include <errno.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "store/sync.h"
#include "store/tx.h"
#include "util/log.h"

#define S_ISDIR_NODE(n) S_ISDIR((n)->m.mode)

/* n (named m->name inline) takes a copy of the rest of m. */
static int take_record(struct kv_node *n, const struct kv_meta *m)
{
	struct kv_meta copy, src = *m;
	int ret;

	src.name = NULL;	/* the inline copy stays */
	if (kv_meta_copy(&copy, &src))
		return -ENOMEM;
	copy.name = n->m.name;
	ret = kv_node_meta_take(n, &copy);
	if (ret) {
		copy.name = NULL;
		kv_meta_clear(&copy);
	}
	return ret;
}

int kv_load_record(const struct kv_meta *m, void *arg)
{
	struct kv_store *kv = arg;
	struct kv_node *n = kv_node_new_named(m->name);
	int ret;

	if (!n)
		return -ENOMEM;
	ret = take_record(n, m);
	if (ret)
		goto out_free;
	if (kv_node_get(kv, m->id)) {
		log_msg(NLOG_WARN, "store", "duplicate record id %llu ignored",
			(unsigned long long)m->id);
		kv_node_meta_clear(n);
		free(n);
		return 0;
	}
	n->flags = KV_NODE_COMMITTED;
	ret = htab_insert(&kv->by_id, n);
	if (ret)
		goto out_clear;
	/* Indexed (and counted) like a deadline set now. */
	if (m->expires_ms && kv_set_deadline(kv, n, m->expires_ms))
		return -ENOMEM;
	if (m->id > kv->max_id)
		kv->max_id = m->id;
	return 0;

out_clear:
	kv_node_meta_clear(n);
out_free:
	free(n);
	return ret;
}

int kv_try_link(struct kv_store *kv, struct kv_node *n)
{
	struct kv_node *parent = kv_node_get(kv, n->m.parent);
	int ret;

	if (!parent || !S_ISDIR_NODE(parent) || kv_check_name(n->m.name) ||
	    kv_child_get(parent, n->m.name))
		return 0;
	ret = kv_node_attach(parent, n);
	if (ret)
		return ret;
	if (S_ISDIR_NODE(n))
		kv->ndirs++;
	else
		kv->nkeys++;
	return 1;
}

/*
 * Builds the tree from the loaded records. A record whose parent is missing
 * or not a directory, or whose name is invalid or taken, cannot be placed:
 * it is left out, listed in *orphans, for kv_recover_records (which also
 * finds cycles of parents) once record ids can be handed out.
 */
static int link_tree(struct kv_store *kv, struct kv_node ***orphans, size_t *norphans)
{
	struct kv_node *n;
	struct kv_node **nodes;
	size_t count = htab_count(&kv->by_id), k = 0;
	int ret = 0;

	*orphans = NULL;
	*norphans = 0;
	nodes = malloc((count ? count : 1) * sizeof(*nodes));
	if (!nodes)
		return -ENOMEM;
	for (size_t i = 0; (n = htab_next(&kv->by_id, &i));)
		nodes[k++] = n;
	for (size_t i = 0; i < k; i++) {
		n = nodes[i];
		if (n == kv->root)
			continue;
		ret = kv_try_link(kv, n);
		if (ret < 0)
			break;
		/* nodes[] is done with up to i: it takes the list. */
		if (!ret)
			nodes[(*norphans)++] = n;
		ret = 0;
	}
	if (ret) {
		free(nodes);
		*norphans = 0;
		return ret;
	}
	*orphans = nodes;
	return 0;
}

static int make_root(struct kv_store *kv)
{
	struct kv_node *n = kv_node_new_named("");
	int64_t now = kv_now_ns();
	int ret;

	if (!n)
		return -ENOMEM;
	n->m.id = KV_ROOT_ID;
	n->m.mode = S_IFDIR | 0755;
	n->m.uid = kv->opts.root_uid;
	n->m.gid = kv->opts.root_gid;
	n->m.atime_ns = n->m.mtime_ns = n->m.ctime_ns = n->m.btime_ns = now;
	ret = htab_insert(&kv->by_id, n);
	if (ret) {
		kv_node_meta_clear(n);
		free(n);
		return ret;
	}
	if (kv->max_id < KV_ROOT_ID)
		kv->max_id = KV_ROOT_ID;
	kv->root = n;
	kv_mark_dirty(kv, n);
	return 0;
}

static int copy_options(struct kv_store *kv, const struct kv_options *o)
{
	kv->opts = *o;
	kv->data_dir = o->params.data_dir ? strdup(o->params.data_dir) : NULL;
	kv->db = strdup(o->params.db ? o->params.db : "default");
	kv->ns = strdup(o->params.ns ? o->params.ns : "default");
	if ((o->params.data_dir && !kv->data_dir) || !kv->db || !kv->ns)
		return -ENOMEM;
	if (o->backup_dir)
		kv->backup_dir = strdup(o->backup_dir);
	else if (o->params.data_dir && asprintf(&kv->backup_dir, "%s/backups",
						o->params.data_dir) < 0)
		kv->backup_dir = NULL;
	if ((o->backup_dir || o->params.data_dir) && !kv->backup_dir)
		return -ENOMEM;
	kv->opts.backup_dir = kv->backup_dir;
	kv->opts.params.data_dir = kv->data_dir;
	kv->opts.params.db = kv->db;
	kv->opts.params.ns = kv->ns;
	return 0;
}

int kv_open(const struct kv_options *o, struct kv_store **out, char *err, size_t errlen)
{
	struct kv_node **orphans = NULL;
	size_t norphans = 0;
	struct kv_store *kv;
	int ret;

	kv = calloc(1, sizeof(*kv));
	if (!kv)
		return -ENOMEM;
	pthread_mutex_init(&kv->lock, NULL);
	pthread_mutex_init(&kv->notify_lock, NULL);
	pthread_mutex_init(&kv->backup_lock, NULL);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&kv->flush_cond, &ca);
	pthread_cond_init(&kv->done_cond, &ca);
	pthread_cond_init(&kv->sweep_cond, &ca);
	pthread_cond_init(&kv->inval_cond, &ca);
	pthread_condattr_destroy(&ca);
	htab_init(&kv->by_id, kv_node_id_hash, kv_node_id_match);
	/* Loads arrive in the order of the backend's own id map (htab.h). */
	htab_set_seed(&kv->by_id, 0x9e3779b97f4a7c15ull);
	ret = copy_options(kv, o);
	if (!ret)
		ret = kv_tags_init(kv, o->query_cache_size);
	if (ret) {
		kv_backend_close(o->backend_instance);
		goto out_free;
	}

	if (o->backend_instance) {
		kv->backend = o->backend_instance;
		goto opened;
	}
	switch (o->backend) {
	case KV_BACKEND_FS:
		ret = kv_fs_open(&kv->opts.params, &kv->backend, err, errlen);
		break;
	case KV_BACKEND_REDIS:
		ret = kv_redis_open(&kv->opts.params, &kv->backend, err, errlen);
		break;
	default:
		snprintf(err, errlen, "this backend is not available in this build");
		ret = -ENOTSUP;
	}
	/* The backend copied what it needs; the caller's strings (the password
	 * among them) may go away with a configuration reload. */
	kv->opts.params.redis_host = NULL;
	kv->opts.params.redis_socket = NULL;
	kv->opts.params.redis_password = NULL;
	kv->opts.params.redis_key_prefix = NULL;
	if (ret)
		goto out_free;
opened:
	/* Writes a previous mount could not deliver come first. */
	ret = kv_spill_open(kv, o, err, errlen);
	kv->opts.spill_dir = NULL; /* copied: the caller's string may go */
	if (ret)
		goto out_free;
	ret = kv->backend->ops->load(kv->backend, kv_load_record, kv, &kv->max_id);
	if (ret) {
		snprintf(err, errlen, "cannot load the store: %s", strerror(-ret));
		goto out_free;
	}
	kv->root = kv_node_get(kv, KV_ROOT_ID);
	ret = kv->root ? 0 : make_root(kv);
	if (!ret)
		ret = link_tree(kv, &orphans, &norphans);
	if (ret) {
		snprintf(err, errlen, "cannot build the tree: %s", strerror(-ret));
		goto out_free;
	}
	ret = kv_sync_open(kv, err, errlen);
	if (ret)
		goto out_free;
	ret = kv_load_settle(kv, &orphans, &norphans);
	if (!ret)
		ret = kv_recover_records(kv, orphans, norphans);
	if (!ret)
		ret = kv_tags_load(kv);
	if (ret) {
		snprintf(err, errlen, "cannot build the tree: %s", strerror(-ret));
		goto out_free;
	}
	/* Make a new store's root (and recovered records) durable now, so
	 * that a store is never half-created. */
	if (kv->ndirty) {
		ret = kv_flush_once(kv);
		if (ret) {
			snprintf(err, errlen, "cannot write the store: %s", strerror(-ret));
			goto out_free;
		}
	}
	/* Loading freed as much as it kept (decoded records, the journal's
	 * replay map, index growth), interleaved with the nodes: give the free
	 * pages back rather than keep them in the daemon's resident size. */
	free(orphans);
	malloc_trim(0);
	NLOG(NLOG_INFO, "store", "store opened", LF_STR("backend", kv->backend->ops->name),
	     LF_INT("keys", kv->nkeys), LF_INT("dirs", kv->ndirs));
	*out = kv;
	return 0;

out_free:
	free(orphans);
	kv_close(kv);
	return ret;
}

int kv_start(struct kv_store *kv)
{
	int ret;

	if (kv->backend->ops->started)
		kv->backend->ops->started(kv->backend);
	ret = kv_flusher_start(kv);
	if (!ret)
		ret = kv_sweeper_start(kv);
	if (!ret)
		ret = kv_sync_start(kv);
	return ret;
}

void kv_reconfigure(struct kv_store *kv, const struct kv_options *o)
{
	pthread_mutex_lock(&kv->lock);
	kv->opts.buffer_size = o->buffer_size;
	kv->opts.flush_interval_ms = o->flush_interval_ms;
	kv->opts.backend_timeout_ms = o->backend_timeout_ms;
	kv->opts.max_value_size = o->max_value_size;
	kv->opts.default_ttl_s = o->default_ttl_s;
	kv->opts.ttl_sweep_ms = o->ttl_sweep_ms ? o->ttl_sweep_ms : kv->opts.ttl_sweep_ms;
	kv->opts.query_cache_size = o->query_cache_size;
	kv->opts.tx_max_bytes = o->tx_max_bytes;
	kv->tags.cache_max = o->query_cache_size;
	kv_qcache_trim(kv);
	/* New deadlines for the sleeping threads; writers may have room now. */
	pthread_cond_signal(&kv->flush_cond);
	pthread_cond_signal(&kv->sweep_cond);
	pthread_cond_broadcast(&kv->done_cond);
	pthread_mutex_unlock(&kv->lock);
}

int kv_close(struct kv_store *kv)
{
	struct kv_node *n;
	int ret = 0;

	if (!kv)
		return 0;
	kv_sync_stop(kv);
	kv_sweeper_stop(kv);
	kv_flusher_stop(kv);
	/* No request comes any more: handles the kernel never released are
	 * gone with the session, so a DEL that waited for them is due now. */
	for (size_t i = 0; (n = htab_next(&kv->by_id, &i));)
		n->open_count = 0;
	if (kv->backend) {
		/* The flusher's last pass may have failed: keep trying for as
		 * long as any writer would have waited. */
		int64_t deadline = kv_mono_ms() + (int64_t)kv->opts.backend_timeout_ms;

		while (kv->ndirty) {
			ret = kv_flush_once(kv);
			if (!ret || kv_mono_ms() >= deadline)
				break;
			struct timespec ts = { 0, 100 * 1000000 };
			nanosleep(&ts, NULL);
		}
		/* Unreachable backend: the spill file keeps them for the next
		 * mount (sync.h), when this store has one. */
		if (ret && kv->sync && kv_spill_save(kv) == 0)
			ret = 0;
		if (ret)
			NLOG(NLOG_ERROR, "store", "buffered writes could not be flushed at close",
			     LF_INT("records", kv->ndirty), LF_STR("error", strerror(-ret)));
	}
	/* Unfinished transactions vanish (their nodes are in by_id too). */
	kv_tx_destroy_all(kv);
	kv_tags_destroy(kv);
	for (size_t i = 0; (n = htab_next(&kv->by_id, &i));) {
		kv_value_free(n->value);
		if (n->children) {
			htab_destroy(n->children);
			free(n->children);
		}
		kv_node_meta_clear(n);
		free(n->aux);
		free(n);
	}
	htab_destroy(&kv->by_id);
	kv_backend_close(kv->backend);
	kv_sync_free(kv);
	pthread_cond_destroy(&kv->flush_cond);
	pthread_cond_destroy(&kv->done_cond);
	pthread_cond_destroy(&kv->sweep_cond);
	pthread_cond_destroy(&kv->inval_cond);
	kv_ttl_destroy(kv);
	pthread_mutex_destroy(&kv->lock);
	pthread_mutex_destroy(&kv->notify_lock);
	pthread_mutex_destroy(&kv->backup_lock);
	free(kv->deferred);
	free(kv->backup_dir);
	free(kv->data_dir);
	free(kv->db);
	free(kv->ns);
	free(kv);
	return ret;
}

