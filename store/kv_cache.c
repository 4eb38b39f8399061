/*
 * The kernel's page cache of values, as far as the store can tell.
 *
 * The filesystem lets the kernel keep a key's cached pages across opens
 * (keep_cache) only while they are known to match the value. A cache period
 * starts (kv_cache_confirm) once the filesystem has dropped the kernel's
 * pages of a key, or pushed the whole current value into them, and nothing
 * changed the value since kv_cache_begin or kv_cache_copy took its token:
 * what the kernel caches from then on it reads from the current value.
 * It ends with the next change of the value by any path, or with an
 * invalidation queued for any other reason (kv_queue_inval, a record
 * another mount changed). KV_NODE_CACHE_OK marks a running period.
 *
 * Pages can also be cached outside a period: a handle kept them from an
 * earlier one, or a read refilled a range the kernel dropped before a
 * direct write, before the write reached the store. KV_NODE_KPAGES marks
 * a key the kernel may hold pages of (kv_read, a push); a change of such a
 * key queues an invalidation of its pages (kv_value_changed), so that no
 * handle keeps reading what was overwritten.
 */
#include <errno.h>
#include <string.h>
#include <sys/stat.h>

#include "store/kv_internal.h"

int kv_cache_begin(struct kv_store *kv, uint64_t id, uint64_t *token)
{
	struct kv_node *n;
	int ret = -ENOENT;

	if (kv_is_tx_id(id))
		return -ENOENT;
	pthread_mutex_lock(&kv->lock);
	n = kv_node_get(kv, id);
	if (n && !(n->flags & KV_NODE_DELETED)) {
		ret = !!(n->flags & KV_NODE_CACHE_OK);
		*token = n->version;
	}
	pthread_mutex_unlock(&kv->lock);
	return ret;
}

ssize_t kv_cache_copy(struct kv_store *kv, uint64_t id, void *buf, size_t cap, uint64_t *token)
{
	struct kv_node *n;
	ssize_t ret;

	if (kv_is_tx_id(id))
		return -ENOENT;
	pthread_mutex_lock(&kv->lock);
	n = kv_node_live(kv, id);
	if (!n || (n->flags & KV_NODE_DELETED))
		ret = -ENOENT;
	else if (S_ISDIR(n->m.mode))
		ret = -EISDIR;
	else if (n->open_count)
		ret = -EBUSY; /* a handle could write, or its open drop the pages,
			       * between the copy and the store: no push then */
	else if (!n->value)
		ret = -EAGAIN; /* flushed and dropped: not worth a backend read */
	else if (kv_value_size(n->value) > cap)
		ret = -EFBIG;
	else
		ret = kv_value_read(n->value, buf, cap, 0);
	if (ret >= 0)
		*token = n->version;
	pthread_mutex_unlock(&kv->lock);
	return ret;
}

int kv_cache_confirm(struct kv_store *kv, uint64_t id, uint64_t token)
{
	struct kv_node *n;
	int ret = -ESTALE;

	pthread_mutex_lock(&kv->lock);
	n = kv_node_get(kv, id);
	if (n && n->version == token && !(n->flags & KV_NODE_DELETED)) {
		n->flags |= KV_NODE_CACHE_OK | KV_NODE_KPAGES;
		ret = 0;
	}
	pthread_mutex_unlock(&kv->lock);
	return ret;
}

void kv_cache_end(struct kv_store *kv, struct kv_node *n, bool notify)
{
	if (!(n->flags & (KV_NODE_CACHE_OK | KV_NODE_KPAGES)))
		return;
	n->flags &= ~(KV_NODE_CACHE_OK | KV_NODE_KPAGES);
	/* No parent, no name: the key's attributes and pages only. */
	if (notify)
		kv_queue_inval(kv, 0, "", n->m.id);
}
