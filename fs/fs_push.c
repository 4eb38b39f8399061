/*
 * Written values into the kernel's page cache.
 *
 * A write-only open gets direct I/O (fs_file.c), so what a file was just
 * given is not in the page cache, and the first read of it costs a READ
 * round trip. After the last write-only handle of a key is released, this
 * thread hands the value, if still in memory and at most FS_PUSH_MAX bytes,
 * to the kernel (FUSE_NOTIFY_STORE) and starts a cache period for it
 * (kv_cache.c), so that the next open keeps those pages and the read is
 * answered by the kernel. A change racing with the push ends the period
 * again: the pushed pages are then invalidated (or, when the change came
 * after, its own invalidation drops them). An open of a key being pushed
 * waits for the push (fs_push_wait): pages stored after the open dropped
 * the old ones could hold a value older than the open, which close-to-open
 * consistency forbids.
 *
 * Why a thread: storing into the page cache locks the pages, and a page
 * may be locked by a READ of the same file waiting for an answer from this
 * daemon; a request handler waiting there could wait for itself. For the
 * same reason the session loop keeps answering requests until no push is
 * in progress (fs_push_may_end), and only then ends.
 *
 * Pushes are an optimisation: when the queue is full, they are dropped.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "fs/fs_int.h"
#include "fs/fs_loop.h"
#include "util/log.h"

/* Values up to this size are pushed: small files, whose read is one round
 * trip mostly spent on the round trip itself. */
#define FS_PUSH_MAX (64 * 1024)
/* Ids waiting; past this, new pushes are dropped. */
#define FS_PUSH_QUEUE_MAX 8192

static void push_one(struct fs *fs, uint64_t id, char *buf)
{
	uint64_t token;
	ssize_t n = kv_cache_copy(fs->kv, id, buf, FS_PUSH_MAX, &token);
	struct fuse_bufvec bv = FUSE_BUFVEC_INIT(n > 0 ? (size_t)n : 0);
	int ret;

	if (n <= 0)
		return;
	/* An invalidation queued before the copy (a change the copy has
	 * already seen) must not land after the push and drop its pages. */
	if (kv_wait_invals(fs->kv, 1000))
		return;
	bv.buf[0].mem = buf;
	ret = fuse_lowlevel_notify_store(fs->se, id, 0, &bv, 0);
	/* -ENOENT: the kernel no longer holds the inode; nothing cached. */
	if (ret)
		return;
	if (kv_cache_confirm(fs->kv, id, token))
		fuse_lowlevel_notify_inval_inode(fs->se, id, 0, 0);
}

static void *push_main(void *arg)
{
	struct fs *fs = arg;
	struct fs_push *p = &fs->push;
	char *buf = malloc(FS_PUSH_MAX);

	pthread_mutex_lock(&p->lock);
	while (!p->closed) {
		uint64_t *ids = p->ids;
		size_t n = p->n;

		if (!n) {
			pthread_cond_wait(&p->cond, &p->lock);
			continue;
		}
		p->ids = NULL;
		p->n = p->cap = 0;
		for (size_t i = 0; i < n && buf && !p->closed; i++) {
			p->busy = true;
			p->busy_id = ids[i];
			pthread_mutex_unlock(&p->lock);
			push_one(fs, ids[i], buf);
			pthread_mutex_lock(&p->lock);
			p->busy = false;
			pthread_cond_broadcast(&p->cond);
		}
		free(ids);
	}
	pthread_mutex_unlock(&p->lock);
	free(buf);
	return NULL;
}

void fs_push_queue(struct fs *fs, uint64_t id)
{
	struct fs_push *p = &fs->push;

	pthread_mutex_lock(&p->lock);
	if (p->closed || p->n >= FS_PUSH_QUEUE_MAX)
		goto out;
	/* Started on first use: the daemon forks after the filesystem is made. */
	if (!p->started) {
		if (pthread_create(&p->thread, NULL, push_main, fs)) {
			p->closed = true;
			log_msg(NLOG_WARN, "fs", "cannot start the page cache thread; "
				"written files are read from the store");
			goto out;
		}
		p->started = true;
	}
	if (p->n == p->cap) {
		size_t cap = p->cap ? 2 * p->cap : 64;
		uint64_t *ids = realloc(p->ids, cap * sizeof(*ids));

		if (!ids)
			goto out;
		p->ids = ids;
		p->cap = cap;
	}
	p->ids[p->n++] = id;
	pthread_cond_signal(&p->cond);
out:
	pthread_mutex_unlock(&p->lock);
}

/* Long enough for any push that is not stuck; a stuck one (its page held
 * by a READ no thread can answer: all max_threads busy) must not hold the
 * open forever. */
#define FS_PUSH_WAIT_MS 2000

void fs_push_wait(struct fs *fs, uint64_t id)
{
	struct fs_push *p = &fs->push;
	struct timespec ts;

	pthread_mutex_lock(&p->lock);
	if (p->busy && p->busy_id == id) {
		/* The push may wait for a READ only another thread can answer. */
		fs_loop_may_block();
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_sec += FS_PUSH_WAIT_MS / 1000;
		while (p->busy && p->busy_id == id)
			if (pthread_cond_timedwait(&p->cond, &p->lock, &ts) == ETIMEDOUT) {
				NLOG(NLOG_WARN, "fs", "an open waited 2 s for a page cache push "
				     "of its key; went on", LF_INT("id", id));
				break;
			}
	}
	pthread_mutex_unlock(&p->lock);
}

bool fs_push_may_end(void *arg)
{
	struct fs_push *p = &((struct fs *)arg)->push;
	bool idle;

	pthread_mutex_lock(&p->lock);
	p->closed = true;
	pthread_cond_broadcast(&p->cond);
	idle = !p->busy;
	pthread_mutex_unlock(&p->lock);
	return idle;
}

void fs_push_stop(struct fs *fs)
{
	struct fs_push *p = &fs->push;
	bool started;

	pthread_mutex_lock(&p->lock);
	p->closed = true;
	started = p->started;
	p->started = false;
	pthread_cond_broadcast(&p->cond);
	pthread_mutex_unlock(&p->lock);
	if (started)
		pthread_join(p->thread, NULL);
	free(p->ids);
	p->ids = NULL;
	p->n = p->cap = 0;
}
