/*
 * A pipeline of commands on one blocking hiredis connection that keeps
 * Redis busy while the caller builds the next ones.
 *
 * Why: hiredis sends its output buffer with blocking writes. A commit that
 * sent every megabyte that way waited, inside write(), for Redis to work
 * through most of it (the socket holds a few hundred KiB), then left Redis
 * idle while it encoded the next megabyte: the two took turns instead of
 * running side by side (a 20,000-key flush: 79 ms of sending for 41 ms of
 * the daemon's CPU and 46 ms of Redis's). Here the buffer goes out in
 * non-blocking pieces as it fills, so Redis always has work queued while
 * the caller is encoding, and the caller only waits when more than
 * PIPE_HOLD_MAX bytes are queued (Redis is the slower of the two).
 *
 * hiredis keeps the buffer (c->obuf); the head of it already written
 * (p->sent) is cut off before any hiredis call that writes it, which is
 * kv_redis_pipe_sync's job.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include <hiredis/sds.h>

#include "store/backend_redis.h"
#include "util/log.h"

/* A non-blocking send is tried each time this many bytes more are queued. */
#define PIPE_PUSH_AT ((size_t)64 * 1024)
/* Unsent bytes beyond which the caller waits for Redis. */
#define PIPE_HOLD_MAX ((size_t)4 * 1024 * 1024)
/* A buffer grown past this is given back at the end of a pipeline: the
 * next command hiredis writes itself would free it anyway (it frees the
 * buffer whenever it has written all of it), so an idle pooled
 * connection would only hold it. */
#define PIPE_KEEP ((size_t)64 * 1024)

void kv_redis_pipe_init(struct kv_redis_pipe *p, struct kv_redis *r, redisContext *c,
			const char *what)
{
	*p = (struct kv_redis_pipe){ .r = r, .c = c, .what = what };
}

/* Cuts off the head already written; hiredis sees only what is not. */
void kv_redis_pipe_sync(struct kv_redis_pipe *p)
{
	if (p->sent) {
		sdsrange(p->c->obuf, (ssize_t)p->sent, -1);
		/* A flush sends past the last try. */
		p->tried = p->tried > p->sent ? p->tried - p->sent : 0;
		p->sent = 0;
	}
}

static int io_error(struct kv_redis_pipe *p, int err)
{
	/* As hiredis reports its own write errors: the connection is done. */
	p->c->err = REDIS_ERR_IO;
	snprintf(p->c->errstr, sizeof(p->c->errstr), "%s", strerror(err));
	return kv_redis_error(p->r, p->c, NULL, p->what);
}

/* Writes the unsent bytes until at most keep remain; blocking unless
 * nowait. 0, or an error (the connection is done). */
static int send_out(struct kv_redis_pipe *p, size_t keep, bool nowait)
{
	size_t len = sdslen(p->c->obuf);

	while (len - p->sent > keep) {
		ssize_t w = send(p->c->fd, p->c->obuf + p->sent, len - p->sent,
				 MSG_NOSIGNAL | (nowait ? MSG_DONTWAIT : 0));

		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0 && nowait && (errno == EAGAIN || errno == EWOULDBLOCK))
			break;
		/* hiredis's own writes time out the same way (SO_SNDTIMEO). */
		if (w < 0)
			return io_error(p, errno);
		p->sent += (size_t)w;
	}
	/* Cut when at least half is sent: each byte is moved at most once
	 * on average, and the buffer keeps its memory (hiredis frees it
	 * whenever it has written it all, and a buffer grown again from
	 * nothing is fresh pages each time). */
	if (p->sent >= len - p->sent)
		kv_redis_pipe_sync(p);
	return 0;
}

/* Sends what the socket takes now; waits for Redis only past the hold,
 * and then until half of it is left. */
static int push(struct kv_redis_pipe *p)
{
	int ret = send_out(p, 0, true);

	p->tried = sdslen(p->c->obuf);
	if (!ret && p->tried - p->sent > PIPE_HOLD_MAX)
		ret = send_out(p, PIPE_HOLD_MAX / 2, false);
	return ret;
}

/* Writes "<kind><n>\r\n" at w; returns the end. */
static char *put_header(char *w, char kind, size_t n)
{
	char tmp[24];
	size_t i = 0;

	*w++ = kind;
	do {
		tmp[i++] = (char)('0' + n % 10);
		n /= 10;
	} while (n);
	while (i)
		*w++ = tmp[--i];
	*w++ = '\r';
	*w++ = '\n';
	return w;
}

/*
 * Appends one command to c->obuf in Redis's protocol. Not hiredis's
 * redisAppendCommandArgv: its formatter (sdscatfmt per argument) was 12 %
 * of the daemon's time in a 20,000-key flush, most of it for the script's
 * call, whose 100,000 arguments Redis waits for whole before it runs it.
 */
static int append_argv(redisContext *c, int argc, const char **argv, const size_t *lens)
{
	/* '*' or '$', up to 20 digits, CRLF; and CRLF after each argument. */
	size_t total = 23, len;
	char *w;
	sds o;

	for (int i = 0; i < argc; i++) {
		len = lens ? lens[i] : strlen(argv[i]);
		if (total > SIZE_MAX - 25 || len > SIZE_MAX - 25 - total)
			return -E2BIG;
		total += 25 + len;
	}
	o = c->obuf ? sdsMakeRoomFor(c->obuf, total) : NULL;
	if (!o)
		return -ENOMEM;
	c->obuf = o;
	w = put_header(o + sdslen(o), '*', (size_t)argc);
	for (int i = 0; i < argc; i++) {
		len = lens ? lens[i] : strlen(argv[i]);
		w = put_header(w, '$', len);
		memcpy(w, argv[i], len);
		w += len;
		*w++ = '\r';
		*w++ = '\n';
	}
	sdssetlen(o, (size_t)(w - o));
	*w = '\0';
	return 0;
}

int kv_redis_pipe_append(struct kv_redis_pipe *p, int argc, const char **argv,
			 const size_t *lens)
{
	int ret = append_argv(p->c, argc, argv, lens);

	if (ret) {
		log_msg(NLOG_ERROR, "store", "backend_redis: %s: cannot queue a command: %s",
			p->what, strerror(-ret));
		return ret;
	}
	p->pending++;
	if (sdslen(p->c->obuf) - p->tried < PIPE_PUSH_AT)
		return 0;
	return push(p);
}

int kv_redis_pipe_flush(struct kv_redis_pipe *p)
{
	int ret = send_out(p, 0, false);

	kv_redis_pipe_sync(p);
	return ret;
}

int kv_redis_pipe_drain(struct kv_redis_pipe *p)
{
	int ret = kv_redis_pipe_flush(p);

	if (ret) {
		p->pending = 0;
		return ret;
	}
	while (p->pending) {
		redisReply *rep = NULL;

		if (redisGetReply(p->c, (void **)&rep) != REDIS_OK) {
			p->pending = 0;
			return kv_redis_error(p->r, p->c, NULL, p->what);
		}
		p->pending--;
		if (!ret && rep->type == REDIS_REPLY_ERROR)
			ret = kv_redis_error(p->r, p->c, rep, p->what);
		freeReplyObject(rep);
	}
	return ret;
}

void kv_redis_pipe_done(struct kv_redis_pipe *p)
{
	kv_redis_pipe_sync(p);
	/* The connection goes back to the pool (see PIPE_KEEP). */
	if (p->c->obuf && !sdslen(p->c->obuf) && sdsalloc(p->c->obuf) > PIPE_KEEP) {
		sds fresh = sdsempty();

		if (fresh) {
			sdsfree(p->c->obuf);
			p->c->obuf = fresh;
		}
	}
}
