/*
 * Writes that find the write-back buffer full wait here, on a thread of the
 * filesystem's own, never on a FUSE worker: with every worker waiting for the
 * flusher, reads, stats and lookups of other keys would stall too, and the
 * spec wants them to keep working. The request is answered from this thread
 * once the store took the bytes (or gave up with EIO after backend_timeout).
 *
 * Order: without the writeback cache the kernel sends one write of a file at
 * a time and waits for its answer, so handing writes over does not reorder
 * the writes of a file; the queue is first in, first out for the rest.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "fs/fs_int.h"
#include "util/log.h"

struct fs_deferred {
	struct fs_deferred *next;
	fuse_req_t req;
	fuse_ino_t ino;
	uint64_t off;
	size_t size;
	char data[];		/* the kernel's buffer dies with the callback */
};

static void *defer_main(void *arg)
{
	struct fs *fs = arg;
	struct fs_defer *d = &fs->defer;

	pthread_mutex_lock(&d->lock);
	for (;;) {
		struct fs_deferred *w = d->head;
		ssize_t n;

		if (!w) {
			if (d->stopping)
				break;
			pthread_cond_wait(&d->cond, &d->lock);
			continue;
		}
		d->head = w->next;
		if (!d->head)
			d->tail = NULL;
		pthread_mutex_unlock(&d->lock);
		n = kv_write(fs->kv, w->ino, w->data, w->size, w->off);
		if (n < 0)
			fs_reply_err(w->req, (int)n);
		else
			fuse_reply_write(w->req, (size_t)n);
		free(w);
		pthread_mutex_lock(&d->lock);
	}
	pthread_mutex_unlock(&d->lock);
	return NULL;
}

int fs_defer_write(struct fs *fs, fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size,
		   uint64_t off)
{
	struct fs_defer *d = &fs->defer;
	struct fs_deferred *w = malloc(sizeof(*w) + size);
	int ret = 0;

	if (!w)
		return -ENOMEM;
	w->next = NULL;
	w->req = req;
	w->ino = ino;
	w->off = off;
	w->size = size;
	memcpy(w->data, buf, size);
	pthread_mutex_lock(&d->lock);
	/* Started on first use: the daemon forks after the filesystem is made. */
	if (!d->started) {
		ret = -pthread_create(&d->thread, NULL, defer_main, fs);
		d->started = ret == 0;
	}
	if (ret) {
		pthread_mutex_unlock(&d->lock);
		free(w);
		return ret;
	}
	if (d->tail)
		d->tail->next = w;
	else
		d->head = w;
	d->tail = w;
	pthread_cond_signal(&d->cond);
	pthread_mutex_unlock(&d->lock);
	return 0;
}

void fs_drain(struct fs *fs)
{
	struct fs_defer *d = &fs->defer;
	bool started;

	/* The session is about to go: no more kernel notifications. */
	kv_set_expire_fn(fs->kv, NULL, NULL);
	fs_push_stop(fs);

	pthread_mutex_lock(&d->lock);
	d->stopping = true;
	started = d->started;
	d->started = false;
	pthread_cond_signal(&d->cond);
	pthread_mutex_unlock(&d->lock);
	if (started)
		pthread_join(d->thread, NULL);
}
