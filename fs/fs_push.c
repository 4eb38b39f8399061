/*
 * The kernel's page cache of values, from the filesystem's side: the work
 * that starts a cache period (store/kv_cache.c) for a key, on a thread of
 * its own.
 *
 * A push: a write-only open gets direct I/O (fs_file.c), so what a file was
 * just given is not in the page cache, and the first read of it would cost
 * a READ round trip. After a write-only handle of a key is released, the
 * value, if still in memory and at most FS_PUSH_MAX bytes, is handed to the
 * kernel (FUSE_NOTIFY_STORE) in a cache period started for it; if the value
 * changed since it was copied, what was stored is dropped again. An open of a key being pushed waits for the push (fs_push_wait),
 * and so does a truncation: pages stored after that open dropped the old
 * ones could hold a value older than the open, which close-to-open
 * consistency forbids, and a push grows the kernel's idea of the file's
 * size past a truncation that overtook it.
 *
 * (The other way a period starts, after an open that dropped the kernel's
 * pages, needs no thread: fs_file.c, FS_FH_BEGIN.)
 *
 * Why a thread: a push locks pages, and a page may be locked by a READ of the
 * same file waiting for an answer from this daemon; a request handler
 * waiting there could wait for itself. For the same reason the session loop
 * keeps answering requests until no notification is under way
 * (fs_push_may_end), and only then ends.
 *
 * Pushes are an optimisation: when the queue is full, they are dropped.
 */
#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "fs/fs_int.h"
#include "fs/fs_loop.h"
#include "util/log.h"

/* Values up to this size are pushed: small files, whose read is one round
 * trip mostly spent on the round trip itself. */
#define FS_PUSH_MAX (64 * 1024)
/* Keys waiting; past this, new pushes are dropped. */
#define FS_PUSH_QUEUE_MAX 8192
/* The thread is woken when the first entry of a batch arrives, and then
 * waits up to FS_PUSH_GATHER_NS for FS_PUSH_BATCH of them: on this
 * project's 2-vCPU machine a wake-up costs more than a push, and one per
 * closed file made a burst of creates slower. */
#define FS_PUSH_BATCH 64
#define FS_PUSH_GATHER_NS 1000000L
/* The push thread's nice value. Side by side, alternating, with the
 * 20,000 values of a Redis flush pushed meanwhile: 145,000-197,000 keys/s
 * flushed at nice 0, 196,000-206,000 at nice 10, 204,000-205,000 before
 * pushes existed. Its locks are held for a copy of at most FS_PUSH_MAX. */
#define FS_PUSH_NICE 10
/* Long enough for any push that is not stuck; a stuck one (its page held
 * by a READ no thread can answer: all max_threads busy, which is why a
 * mount with one thread does not push) must not hold an open forever. */
#define FS_PUSH_WAIT_MS 2000

struct fs_push_ent {
	uint64_t id;
};

/* A push of e->id; with p->lock held, which it drops. */
static void push_one(struct fs *fs, struct fs_push *p, const struct fs_push_ent *e, char *buf)
{
	uint64_t token;
	ssize_t n;
	int ret;

	pthread_mutex_unlock(&p->lock);
	/* An invalidation queued before the copy (for a change the copy will
	 * see) must not land after the push and drop its pages. Waited for
	 * before the push counts as under way: an open need not wait on it. */
	ret = kv_wait_invals(fs->kv, 1000);
	pthread_mutex_lock(&p->lock);
	if (ret || p->closed)
		return;
	p->busy_id = e->id;
	pthread_mutex_unlock(&p->lock);
	n = kv_cache_copy(fs->kv, e->id, buf, FS_PUSH_MAX, &token);
	/*
	 * The period starts before the store: no handle of the key is open
	 * (kv_cache_copy) and a new open waits for this push, so nothing can
	 * read the pages in between, and whoever sees them cached finds the
	 * period running. A change meanwhile (from outside the kernel: an
	 * expiry, a commit, another mount) ends it again; the second confirm
	 * sees that, and what was stored goes.
	 */
	if (n > 0 && !kv_cache_confirm(fs->kv, e->id, token)) {
		struct fuse_bufvec bv = FUSE_BUFVEC_INIT((size_t)n);

		bv.buf[0].mem = buf;
		/* -ENOENT: the kernel no longer holds the inode; nothing cached. */
		ret = fuse_lowlevel_notify_store(fs->se, e->id, 0, &bv, 0);
		if (!ret && kv_cache_confirm(fs->kv, e->id, token))
			fuse_lowlevel_notify_inval_inode(fs->se, e->id, 0, 0);
		else if (!ret)
			atomic_fetch_add(&p->pushed, 1);
	}
	pthread_mutex_lock(&p->lock);
	p->busy_id = 0;
	pthread_cond_broadcast(&p->cond);
}

/* With p->lock held: waits a moment for a batch to fill. */
static void gather(struct fs_push *p)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_nsec += FS_PUSH_GATHER_NS;
	if (ts.tv_nsec >= 1000000000L) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000L;
	}
	while (!p->closed && p->n < FS_PUSH_BATCH)
		if (pthread_cond_timedwait(&p->cond, &p->lock, &ts) == ETIMEDOUT)
			break;
}

static void *push_main(void *arg)
{
	struct fs *fs = arg;
	struct fs_push *p = &fs->push;
	char *buf = malloc(FS_PUSH_MAX);

	/* Pushes are optional work: they give way to requests and flushes
	 * (a Linux nice value applies to the calling thread alone). */
	if (setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), FS_PUSH_NICE))
		log_msg(NLOG_DEBUG, "fs", "page cache thread keeps its priority: %s",
			strerror(errno));
	pthread_mutex_lock(&p->lock);
	while (!p->closed) {
		struct fs_push_ent *ents = p->ents;
		size_t n = p->n;

		if (!n) {
			pthread_cond_wait(&p->cond, &p->lock);
			if (p->n && p->n < FS_PUSH_BATCH)
				gather(p);
			continue;
		}
		p->ents = NULL;
		p->n = p->cap = 0;
		p->busy = true;
		for (size_t i = 0; i < n && !p->closed; i++) {
			if (buf)
				push_one(fs, p, &ents[i], buf);
		}
		p->busy = false;
		pthread_cond_broadcast(&p->cond);
		free(ents);
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
				"files are read from the store");
			goto out;
		}
		p->started = true;
	}
	if (p->n == p->cap) {
		size_t cap = p->cap ? 2 * p->cap : 64;
		struct fs_push_ent *e = realloc(p->ents, cap * sizeof(*e));

		if (!e)
			goto out;
		p->ents = e;
		p->cap = cap;
	}
	p->ents[p->n++] = (struct fs_push_ent){ .id = id };
	if (p->n == 1 || p->n == FS_PUSH_BATCH)
		pthread_cond_signal(&p->cond);
out:
	pthread_mutex_unlock(&p->lock);
}

void fs_push_wait(struct fs *fs, uint64_t id)
{
	struct fs_push *p = &fs->push;
	struct timespec ts;

	pthread_mutex_lock(&p->lock);
	if (p->busy_id == id) {
		/* The push may wait for a READ only another thread can answer. */
		fs_loop_may_block();
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_sec += FS_PUSH_WAIT_MS / 1000;
		while (p->busy_id == id)
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
	struct fs *fs = arg;
	struct fs_push *p = &fs->push;
	bool idle;

	/* Invalidations of the store's threads (fs_on_expire) lock pages too. */
	atomic_store(&fs->notify_closed, true);
	pthread_mutex_lock(&p->lock);
	p->closed = true;
	pthread_cond_broadcast(&p->cond);
	idle = !p->busy;
	pthread_mutex_unlock(&p->lock);
	return idle && !atomic_load(&fs->notifying);
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
	free(p->ents);
	p->ents = NULL;
	p->n = p->cap = 0;
}
