/*
 * A node's memory: its inline name, the aux record of what most keys never
 * have, the conversions between a node and the struct kv_meta the backends
 * and snapshots use, and the dirty list, whose links are in the aux record.
 * All with kv->lock held.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "store/kv_internal.h"

struct kv_node *kv_node_new_named(const char *name)
{
	size_t len = strlen(name);
	struct kv_node *n = calloc(1, sizeof(*n) + len + 1);

	if (n)
		n->m.name = memcpy(n + 1, name, len + 1);
	return n;
}

struct kv_node_aux *kv_node_aux(struct kv_node *n)
{
	if (!n->aux)
		n->aux = calloc(1, sizeof(*n->aux));
	return n->aux;
}

void kv_node_aux_trim(struct kv_node *n)
{
	const struct kv_node_aux *a = n->aux;

	/* A listed node's links are in it (dirty_bytes is only ever non-zero
	 * on a listed node, but is checked so nothing is lost if not). */
	if (!a || a->ntags || a->xattrs || a->expires_ms || a->dirty_bytes || a->nsubdirs ||
	    (n->flags & (KV_NODE_ON_DIRTY | KV_NODE_UNLISTED)) == KV_NODE_ON_DIRTY ||
	    (n->flags & KV_NODE_AUX_HELD))
		return;
	free(n->aux);
	n->aux = NULL;
}

static void free_tags(char **tags, uint32_t ntags)
{
	for (uint32_t i = 0; i < ntags; i++)
		free(tags[i]);
	free(tags);
}

int kv_node_put_xattrs(struct kv_node *n, void *xattrs, uint32_t len)
{
	struct kv_node_aux *a = len ? kv_node_aux(n) : n->aux;

	if (!a) {
		if (len)
			return -ENOMEM;
		free(xattrs);
		return 0;
	}
	free(a->xattrs);
	a->xattrs = len ? xattrs : NULL;
	a->xattrs_len = len;
	if (!len)
		free(xattrs);
	kv_node_aux_trim(n);
	return 0;
}

void kv_node_meta_view(const struct kv_node *n, struct kv_meta *m)
{
	*m = (struct kv_meta){
		.id = n->m.id,
		.parent = n->m.parent,
		.name = n->m.name,
		.atime_ns = n->m.atime_ns,
		.mtime_ns = n->m.mtime_ns,
		.ctime_ns = n->m.ctime_ns,
		.btime_ns = n->m.btime_ns,
		.expires_ms = kv_node_expires(n),
		.size = n->m.size,
		.vver = n->m.vver,
		.stored_size = n->m.stored_size,
		.tags = kv_node_tags(n),
		.xattrs = (void *)kv_node_xattrs(n),
		.mode = n->m.mode,
		.uid = n->m.uid,
		.gid = n->m.gid,
		.ntags = kv_node_ntags(n),
		.xattrs_len = kv_node_xattrs_len(n),
		.encoding = n->m.encoding,
	};
}

int kv_node_meta_copy(struct kv_meta *dst, const struct kv_node *n)
{
	struct kv_meta view;

	kv_node_meta_view(n, &view);
	return kv_meta_copy(dst, &view);
}

int kv_node_meta_take(struct kv_node *n, struct kv_meta *m)
{
	/* The one step that can fail comes first. */
	if ((m->ntags || m->xattrs_len) && !kv_node_aux(n))
		return -ENOMEM;
	if (!kv_node_name_inline(n) && n->m.name != m->name)
		free(n->m.name);
	n->m = (struct kv_node_meta){
		.id = m->id,
		.parent = m->parent,
		.name = m->name,
		.atime_ns = m->atime_ns,
		.mtime_ns = m->mtime_ns,
		.ctime_ns = m->ctime_ns,
		.btime_ns = m->btime_ns,
		.size = m->size,
		.vver = m->vver,
		.stored_size = m->stored_size,
		.mode = m->mode,
		.uid = m->uid,
		.gid = m->gid,
		.encoding = m->encoding,
	};
	if (n->aux) {
		free_tags(n->aux->tags, n->aux->ntags);
		free(n->aux->xattrs);
		n->aux->tags = m->ntags ? m->tags : NULL;
		n->aux->ntags = m->ntags;
		n->aux->xattrs = m->xattrs_len ? m->xattrs : NULL;
		n->aux->xattrs_len = m->xattrs_len;
		if (!m->ntags)
			free(m->tags);
		if (!m->xattrs_len)
			free(m->xattrs);
		kv_node_aux_trim(n);
	} else {
		free(m->tags);
		free(m->xattrs);
	}
	memset(m, 0, sizeof(*m));
	return 0;
}

void kv_node_meta_clear(struct kv_node *n)
{
	struct kv_node_aux *a = n->aux;

	if (!kv_node_name_inline(n))
		free(n->m.name);
	n->m.name = NULL;
	if (!a)
		return;
	free_tags(a->tags, a->ntags);
	free(a->xattrs);
	a->tags = NULL;
	a->xattrs = NULL;
	a->ntags = a->xattrs_len = 0;
	a->expires_ms = 0;
	kv_node_aux_trim(n);
}

/* Puts n, whose aux record is a, at the end of the dirty list. */
static void list_append(struct kv_store *kv, struct kv_node *n, struct kv_node_aux *a)
{
	a->dirty_next = NULL;
	a->dirty_prev = kv->dirty_tail;
	if (kv->dirty_tail)
		kv->dirty_tail->aux->dirty_next = n;
	else
		kv->dirty_head = n;
	kv->dirty_tail = n;
}

void kv_mark_dirty(struct kv_store *kv, struct kv_node *n)
{
	struct kv_node_aux *a;

	if (n->flags & KV_NODE_STAGED)
		return;
	n->version++;
	if (n->flags & KV_NODE_ON_DIRTY)
		return;
	n->flags |= KV_NODE_ON_DIRTY;
	a = kv_node_aux(n);
	if (!a) {
		/* The change is made already and must reach the backend: the
		 * flusher finds n by its flag (kv_dirty_relist). */
		n->flags |= KV_NODE_UNLISTED;
		kv->nunlisted++;
	} else {
		list_append(kv, n, a);
	}
	if (kv->ndirty++ == 0) {
		kv->dirty_since_ms = kv_mono_ms();
		/* The flusher sleeps without a deadline while nothing is dirty. */
		pthread_cond_signal(&kv->flush_cond);
	}
}

/*
 * Once no node is unlisted, the bytes written while none could hold them
 * go to the oldest dirty node (their total is what counts: it leaves with
 * that node's commit, or with the node if it is freed uncommitted), or go
 * if nothing is dirty any more. Some may belong to a node that left
 * uncommitted: the total is then too high until the head's commit, never
 * too low.
 */
static void settle_unlisted_bytes(struct kv_store *kv)
{
	if (!kv->unlisted_bytes || kv->nunlisted)
		return;
	if (kv->dirty_head)
		kv->dirty_head->aux->dirty_bytes += kv->unlisted_bytes;
	else
		kv->dirty_bytes -= kv->unlisted_bytes;
	kv->unlisted_bytes = 0;
}

void kv_dirty_unlink(struct kv_store *kv, struct kv_node *n)
{
	if (n->flags & KV_NODE_UNLISTED) {
		n->flags &= ~(KV_NODE_ON_DIRTY | KV_NODE_UNLISTED);
		kv->ndirty--;
		/* Bytes of unlisted nodes are not told apart: they settle
		 * when the last one leaves. */
		kv->nunlisted--;
		settle_unlisted_bytes(kv);
		return;
	}
	struct kv_node_aux *a = n->aux;

	if (a->dirty_prev)
		a->dirty_prev->aux->dirty_next = a->dirty_next;
	else
		kv->dirty_head = a->dirty_next;
	if (a->dirty_next)
		a->dirty_next->aux->dirty_prev = a->dirty_prev;
	else
		kv->dirty_tail = a->dirty_prev;
	a->dirty_prev = a->dirty_next = NULL;
	n->flags &= ~KV_NODE_ON_DIRTY;
	kv->ndirty--;
	kv_node_aux_trim(n);
}

void kv_add_dirty_bytes(struct kv_store *kv, struct kv_node *n, uint64_t bytes)
{
	struct kv_node_aux *a = (n->flags & KV_NODE_UNLISTED) ? NULL : kv_node_aux(n);

	kv->dirty_bytes += bytes;
	if (a)
		a->dirty_bytes += bytes;
	else
		kv->unlisted_bytes += bytes;
}

uint64_t kv_take_dirty_bytes(struct kv_store *kv, struct kv_node *n)
{
	uint64_t bytes = kv_node_dirty_bytes(n);

	if (bytes) {
		n->aux->dirty_bytes = 0;
		kv->dirty_bytes -= bytes;
		kv_node_aux_trim(n);
	}
	return bytes;
}

int kv_dirty_relist(struct kv_store *kv)
{
	struct kv_node *n;

	for (size_t i = 0; kv->nunlisted && (n = htab_next(&kv->by_id, &i));) {
		struct kv_node_aux *a;

		if (!(n->flags & KV_NODE_UNLISTED))
			continue;
		a = kv_node_aux(n);
		if (!a)
			return -ENOMEM;
		n->flags &= ~KV_NODE_UNLISTED;
		kv->nunlisted--;
		list_append(kv, n, a);
	}
	settle_unlisted_bytes(kv);
	return kv->nunlisted ? -ENOMEM : 0;
}
