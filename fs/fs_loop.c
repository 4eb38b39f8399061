/*
 * The session loop: leader and followers instead of libfuse's pool.
 *
 * Why: every FUSE request is a round trip between the caller's thread and a
 * daemon thread. libfuse's loop keeps all its idle workers blocked in
 * read(/dev/fuse), and the kernel wakes the one that waited longest, so
 * consecutive requests of one caller land on a different, cold thread each
 * time, usually on the other CPU: two cross-CPU wake-ups per request. On
 * this project's 2-vCPU machine that was most of the cost of a small-file
 * operation (perf: finish_task_switch and __wake_up under fuse_dev_read and
 * fuse_dev_do_write took ~65 % of the daemon's samples, its own code < 5 %;
 * the same workload ran twice as fast with daemon and caller pinned to one
 * CPU).
 *
 * How: one thread at a time, the leader, reads requests. After answering
 * one it stays the leader and polls the device without blocking for a few
 * microseconds, so the caller's next request is picked up by a hot thread
 * without a wake-up; only then does it block. It keeps the role while it
 * handles what cannot wait long (lookups, attributes, opens, buffered reads
 * and writes, directory changes: memory only); on a machine with CPUs to
 * spare it hands the role over when requests keep queuing behind it. Before
 * anything that may block (a backend read, waiting for a flush, the control
 * files, fsync, statfs) it hands the role to an idle follower, or starts
 * one, up to max_threads: so a slow request never holds up the others, as
 * with a pool.
 * The store says when it is about to block through kv_set_block_hook().
 *
 * Locking: loop->lock guards the fields marked [L]. Never held while a
 * request is handled or the device is read.
 */
#define FUSE_USE_VERSION 314

#include <errno.h>
#include <fcntl.h>
#include <fuse_lowlevel.h>
#include <linux/fuse.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <semaphore.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "fs/fs_int.h"
#include "fs/fs_loop.h"
#include "store/kv.h"
#include "util/log.h"

/* How long a leader polls for the next request before it sleeps: a
 * caller's think time between two syscalls is a few microseconds. */
#define SPIN_NS 30000
/* Requests in a row that must find others queued before a follower helps,
 * on a machine with at least BACKLOG_MIN_CPUS CPUs. On 2 CPUs the callers
 * and the leader already fill both, and a follower only adds wake-ups:
 * measured there side by side, 4 callers reading small files made 26,000-
 * 30,000 files/s with this hand-over and 39,000-41,000 without it (4-thread
 * unlink and the mixed workload's readers gained too, no row lost). */
#define BACKLOG_RUN 3
#define BACKLOG_MIN_CPUS 3

struct loop {
	struct fuse_session *se;
	int fd, stopfd;
	unsigned max;
	pthread_mutex_t lock;
	pthread_cond_t follow;		/* followers wait here for the role */
	bool have_leader;		/* [L] a thread holds the role */
	bool stop;			/* [L] */
	int error;			/* [L] first fatal receive error */
	bool backlog_help;		/* queued requests are worth a follower */
	unsigned backlog_run;		/* the leader's: requests in a row found queued */
	unsigned nthreads, nidle;	/* [L] */
	pthread_t *threads;		/* [L] nthreads of them, joined at the end */
	sem_t finished;			/* posted when a worker sees the end */
	struct fs_loop_hooks hooks;	/* see fs_loop.h */
	atomic_bool init_answered;
};

/* The loop this thread belongs to, and whether it is the leader now. */
static __thread struct loop *self_loop;
static __thread bool self_leads;

static int64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void *worker(void *arg);

/* With loop->lock held: someone must take the role that was just let go. */
static void wake_follower(struct loop *l)
{
	pthread_t *t;
	sigset_t all, old;

	if (l->stop)
		return;
	if (l->nidle || l->nthreads >= l->max) {
		/* Without a free thread the role waits for the next one done. */
		pthread_cond_signal(&l->follow);
		return;
	}
	t = realloc(l->threads, (l->nthreads + 1) * sizeof(*t));
	if (!t)
		return;
	l->threads = t;
	/* Workers leave SIGTERM/SIGINT to the thread waiting in fs_loop_run. */
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	if (pthread_create(&l->threads[l->nthreads], NULL, worker, l) == 0)
		l->nthreads++;
	else
		log_msg(NLOG_WARN, "fs", "cannot start a session thread: %s", strerror(errno));
	pthread_sigmask(SIG_SETMASK, &old, NULL);
}

void fs_loop_may_block(void)
{
	struct loop *l = self_loop;

	if (!l || !self_leads)
		return;
	self_leads = false;
	pthread_mutex_lock(&l->lock);
	l->have_leader = false;
	wake_follower(l);
	pthread_mutex_unlock(&l->lock);
}

static void end_loop(struct loop *l, int error)
{
	uint64_t one = 1;

	pthread_mutex_lock(&l->lock);
	if (!l->stop) {
		l->stop = true;
		l->error = error;
		sem_post(&l->finished);
	}
	pthread_cond_broadcast(&l->follow);
	pthread_mutex_unlock(&l->lock);
	/* Wakes a leader sleeping in poll(). */
	if (write(l->stopfd, &one, sizeof(one)) < 0)
		log_msg(NLOG_DEBUG, "fs", "cannot wake the session leader: %s", strerror(errno));
}

/*
 * The session was asked to end (a signal) and the filesystem has nothing
 * under way that needs its requests answered: until then, the loop serves.
 */
static bool exit_now(struct loop *l)
{
	return fuse_session_exited(l->se) &&
	       (!l->hooks.may_end || l->hooks.may_end(l->hooks.may_end_arg));
}

/* The next request: polled without blocking for SPIN_NS, then waited for.
 * 1 with a request, 0 at the end (unmount or stop), or a negative errno. */
static int receive(struct loop *l, struct fuse_buf *buf)
{
	int64_t until = now_ns() + SPIN_NS;

	for (;;) {
		struct pollfd p[2] = { { .fd = l->fd, .events = POLLIN },
				       { .fd = l->stopfd, .events = POLLIN } };
		int res = fuse_session_receive_buf(l->se, buf);

		if (res > 0)
			return 1;
		if (res == 0 || exit_now(l))
			return 0;
		if (res != -EAGAIN && res != -EINTR && res != -ENOENT)
			return res;
		if (res != -EAGAIN)
			continue;
		if (now_ns() < until) {
			/* Whoever else wants this CPU (the caller, the flusher)
			 * goes first: spinning must not delay what it waits for. */
			sched_yield();
			continue;
		}
		/* Asked to exit but not yet allowed to: look again soon. */
		if (poll(p, 2, fuse_session_exited(l->se) ? 10 : -1) < 0 && errno != EINTR)
			return -errno;
		if (p[1].revents)
			return 0;
		until = now_ns() + SPIN_NS;
	}
}

/*
 * The device as libfuse reads it, with one difference: ECONNABORTED ends
 * the session as ENODEV does. We do not ask for FUSE_ABORT_ERROR, so a
 * connection ended by an unmount or an abort reads ENODEV; ECONNABORTED
 * comes when it ends while the read is taking a request off the queue
 * (fuse_dev_do_read finds the processing queue already disconnected and
 * ends that request itself). An unmount right after a burst of closes,
 * their RELEASEs still queued, hits that often: libfuse 3.14 then printed
 * "fuse: reading device: Software caused connection abort" on stderr and
 * the loop failed, so a plain `fusermount3 -u` made the daemon exit 1.
 */
static ssize_t dev_read(int fd, void *buf, size_t len, void *userdata)
{
	ssize_t n = read(fd, buf, len);

	(void)userdata;
	if (n < 0 && errno == ECONNABORTED) {
		log_msg(NLOG_DEBUG, "fs", "the connection ended while a request was read");
		errno = ENODEV;
	}
	return n;
}

static ssize_t dev_writev(int fd, struct iovec *iov, int count, void *userdata)
{
	(void)userdata;
	return writev(fd, iov, count);
}

static bool backlog(struct loop *l)
{
	struct pollfd p = { .fd = l->fd, .events = POLLIN };

	return poll(&p, 1, 0) > 0;
}

/* Requests that may wait for a long time never run on the leader. */
static bool may_wait_long(const struct fuse_buf *buf)
{
	const struct fuse_in_header *in = buf->mem;

	if (buf->size < sizeof(*in))
		return true;
	switch (in->opcode) {
	case FUSE_FSYNC:
	case FUSE_FSYNCDIR:
	case FUSE_STATFS:
	case FUSE_INIT:
	case FUSE_DESTROY:
		return true;
	default:
		/* The control files run commands (flush, backups). */
		return fs_ctl_is_file(in->nodeid);
	}
}

static void *worker(void *arg)
{
	struct loop *l = arg;
	struct fuse_buf buf = { .mem = NULL };

	self_loop = l;
	pthread_mutex_lock(&l->lock);
	while (!l->stop) {
		bool is_init;
		int res;

		if (l->have_leader) {
			l->nidle++;
			pthread_cond_wait(&l->follow, &l->lock);
			l->nidle--;
			continue;
		}
		l->have_leader = true;
		self_leads = true;
		pthread_mutex_unlock(&l->lock);

		res = receive(l, &buf);
		if (res <= 0) {
			self_leads = false;
			end_loop(l, res);
			pthread_mutex_lock(&l->lock);
			break;
		}
		/*
		 * Requests queued behind this one several times in a row
		 * (several callers): a follower takes the next one while this
		 * one is handled, as a pool would. Once is not enough: a
		 * caller's close queues an asynchronous RELEASE right before
		 * its next request, and handing over for that cost a futex
		 * wake-up and a cold thread per file (strace: one futex call
		 * per request).
		 */
		is_init = buf.size >= sizeof(struct fuse_in_header) &&
			  ((const struct fuse_in_header *)buf.mem)->opcode == FUSE_INIT;
		if (may_wait_long(&buf)) {
			fs_loop_may_block();
		} else if (!l->backlog_help || !backlog(l)) {
			l->backlog_run = 0;
		} else if (++l->backlog_run >= BACKLOG_RUN) {
			l->backlog_run = 0;
			fs_loop_may_block();
		}
		fuse_session_process_buf(l->se, &buf);
		if (is_init && l->hooks.after_init && !atomic_exchange(&l->init_answered, true))
			l->hooks.after_init(l->hooks.after_init_arg);

		pthread_mutex_lock(&l->lock);
		if (self_leads) {
			/* Still the leader: read the next one at once. */
			self_leads = false;
			l->have_leader = false;
		}
	}
	pthread_mutex_unlock(&l->lock);
	free(buf.mem);
	self_loop = NULL;
	return NULL;
}

int fs_loop_run(struct fuse_session *se, unsigned max_threads, const struct fs_loop_hooks *hooks)
{
	struct loop l = { .se = se, .fd = fuse_session_fd(se), .max = max_threads ? max_threads : 1,
			  .hooks = hooks ? *hooks : (struct fs_loop_hooks){ 0 } };
	int flags, ret;

	/* fs.c turns splice reads off and never asks for splice writes, so
	 * every read and write of the device goes through these. */
	ret = fuse_session_custom_io(se, &(struct fuse_custom_io){ .read = dev_read,
								   .writev = dev_writev },
				     l.fd);
	if (ret)
		return ret;
	l.stopfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (l.stopfd < 0)
		return -errno;
	flags = fcntl(l.fd, F_GETFL);
	if (flags < 0 || fcntl(l.fd, F_SETFL, flags | O_NONBLOCK) < 0) {
		ret = -errno;
		close(l.stopfd);
		return ret;
	}
	l.backlog_help = sysconf(_SC_NPROCESSORS_ONLN) >= BACKLOG_MIN_CPUS;
	pthread_mutex_init(&l.lock, NULL);
	pthread_cond_init(&l.follow, NULL);
	sem_init(&l.finished, 0, 0);
	kv_set_block_hook(fs_loop_may_block);

	pthread_mutex_lock(&l.lock);
	wake_follower(&l);
	ret = l.nthreads ? 0 : -EAGAIN;
	pthread_mutex_unlock(&l.lock);
	/* This thread only waits, so that SIGTERM/SIGINT (libfuse's handler
	 * marks the session exited) interrupt it. */
	while (!ret && !exit_now(&l)) {
		pthread_mutex_lock(&l.lock);
		bool stop = l.stop;
		pthread_mutex_unlock(&l.lock);
		if (stop)
			break;
		/* Timed: a signal landing between the check above and the
		 * wait would otherwise leave this thread asleep. */
		struct timespec ts;

		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_sec += 1;
		sem_timedwait(&l.finished, &ts);
	}
	end_loop(&l, 0);
	for (unsigned i = 0; i < l.nthreads; i++)
		pthread_join(l.threads[i], NULL);
	if (!ret)
		ret = l.error;
	kv_set_block_hook(NULL);
	free(l.threads);
	sem_destroy(&l.finished);
	pthread_cond_destroy(&l.follow);
	pthread_mutex_destroy(&l.lock);
	close(l.stopfd);
	fcntl(l.fd, F_SETFL, flags);
	return ret;
}
