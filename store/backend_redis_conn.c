/*
 * The Redis backend's connections: a fixed pool of hiredis contexts, each
 * used by one thread at a time. A context that saw any error is freed rather
 * than reused (after a timeout or a half-read reply its protocol state is
 * unknown); the next user connects a new one. Every hiredis error is turned
 * into a negative errno here and logged once with its detail; repeats are
 * rate-limited so a Redis that is down for a minute does not flood the log.
 */
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "store/backend_redis.h"
#include "util/log.h"

#define ERR_LOG_EVERY_MS 10000
/* Reconnect backoff: doubles from MIN to MAX while connects fail. */
#define BACKOFF_MIN_MS 50
#define BACKOFF_MAX_MS 1000

int64_t kv_redis_mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

#define mono_ms kv_redis_mono_ms

char *kv_redis_key(const struct kv_redis *r, const char *fmt, ...)
{
	va_list ap;
	char *rest, *key;
	int n;

	va_start(ap, fmt);
	n = vasprintf(&rest, fmt, ap);
	va_end(ap);
	if (n < 0)
		return NULL;
	if (asprintf(&key, "%s%s", r->tag, rest) < 0)
		key = NULL;
	free(rest);
	return key;
}

/* hiredis says "Connection refused"; our lines are lowercase. */
static void lower_first(char *s)
{
	if (s[0] && isupper((unsigned char)s[0]) && !isupper((unsigned char)s[1]))
		s[0] = (char)tolower((unsigned char)s[0]);
}

/* A one-line reason for a failed context. */
static void ctx_reason(const redisContext *c, char *buf, size_t len)
{
	if (!c) {
		snprintf(buf, len, "out of memory");
		return;
	}
	if (c->err == REDIS_ERR_EOF)
		snprintf(buf, len, "the server closed the connection");
	else if (c->err == REDIS_ERR_IO && (errno == EAGAIN || errno == ETIMEDOUT))
		snprintf(buf, len, "timed out");
	else
		snprintf(buf, len, "%s", c->errstr[0] ? c->errstr : "unknown error");
	lower_first(buf);
}

/* Sends one command and checks its reply's type; 0 or a negative errno
 * with the reason in err. */
static int setup_cmd(redisContext *c, int argc, const char **argv, char *err, size_t errlen,
		     redisReply **out)
{
	redisReply *rep = redisCommandArgv(c, argc, argv, NULL);

	if (!rep) {
		ctx_reason(c, err, errlen);
		return c->err == REDIS_ERR_OOM ? -ENOMEM : -EIO;
	}
	if (rep->type == REDIS_REPLY_ERROR) {
		snprintf(err, errlen, "%.*s", (int)(rep->len < 200 ? rep->len : 200), rep->str);
		*out = rep;
		return -EACCES;
	}
	*out = rep;
	return 0;
}

int kv_redis_connect(struct kv_redis *r, redisContext **out, char *err, size_t errlen)
{
	struct timeval tv = { (time_t)(r->timeout_ms / 1000),
			      (suseconds_t)(r->timeout_ms % 1000) * 1000 };
	char why[256], db[16];
	redisReply *rep = NULL;
	redisContext *c;
	int ret;

	if (r->socket)
		c = redisConnectUnixWithTimeout(r->socket, tv);
	else
		c = redisConnectWithTimeout(r->host, (int)r->port, tv);
	if (!c || c->err) {
		ctx_reason(c, why, sizeof(why));
		snprintf(err, errlen, "cannot connect to redis %s: %s", r->where, why);
		ret = c ? -EIO : -ENOMEM;
		goto out_free;
	}
	/* Commands too: a stopped server must fail a call, not hang it. */
	if (redisSetTimeout(c, tv) != REDIS_OK) {
		ctx_reason(c, why, sizeof(why));
		snprintf(err, errlen, "cannot set a timeout on redis %s: %s", r->where, why);
		ret = -EIO;
		goto out_free;
	}
	/* A dead peer is noticed without traffic (TCP only: on a unix
	 * socket hiredis would mark the context failed). */
	if (!r->socket && redisEnableKeepAlive(c) != REDIS_OK) {
		ctx_reason(c, why, sizeof(why));
		snprintf(err, errlen, "cannot set up the connection to redis %s: %s", r->where,
			 why);
		ret = -EIO;
		goto out_free;
	}
	if (r->password) {
		const char *argv[] = { "AUTH", r->password };

		ret = setup_cmd(c, 2, argv, why, sizeof(why), &rep);
		if (ret == -EACCES) {
			/* The server's words, never ours with the password in them. */
			if (strstr(why, "without any password") || strstr(why, "no password"))
				snprintf(err, errlen, "redis %s rejected the password: the server "
					 "has no password configured", r->where);
			else
				snprintf(err, errlen, "redis rejected the password (%s)", r->where);
			goto out_free;
		}
		if (ret) {
			snprintf(err, errlen, "cannot authenticate to redis %s: %s", r->where, why);
			goto out_free;
		}
		freeReplyObject(rep);
		rep = NULL;
	}
	snprintf(db, sizeof(db), "%u", r->database);
	{
		const char *argv[] = { "SELECT", db };

		ret = setup_cmd(c, 2, argv, why, sizeof(why), &rep);
	}
	if (ret == -EACCES && !strncmp(why, "NOAUTH", 6)) {
		snprintf(err, errlen, "redis %s requires a password: set [redis] password in the "
			 "configuration file", r->where);
		goto out_free;
	}
	if (ret) {
		snprintf(err, errlen, "redis %s refused database %u: %s", r->where, r->database,
			 why);
		if (ret == -EACCES)
			ret = -EINVAL;
		goto out_free;
	}
	freeReplyObject(rep);
	*out = c;
	return 0;

out_free:
	freeReplyObject(rep);
	redisFree(c);
	return ret;
}

int kv_redis_pool_init(struct kv_redis *r, unsigned size)
{
	pthread_mutex_init(&r->lock, NULL);
	pthread_cond_init(&r->freed, NULL);
	r->rtt_ms = -1;
	r->conns = calloc(size, sizeof(*r->conns));
	if (!r->conns)
		return -ENOMEM;
	r->nconns = size;
	return 0;
}

void kv_redis_pool_destroy(struct kv_redis *r)
{
	for (unsigned i = 0; i < r->nconns; i++)
		if (r->conns[i].c)
			redisFree(r->conns[i].c);
	free(r->conns);
	r->conns = NULL;
	r->nconns = 0;
	pthread_cond_destroy(&r->freed);
	pthread_mutex_destroy(&r->lock);
}

/* With r->lock held: whether this error gets a line now. */
static bool may_log(struct kv_redis *r)
{
	int64_t now = mono_ms();

	if (!r->down || now - r->last_err_log_ms >= ERR_LOG_EVERY_MS) {
		r->last_err_log_ms = now;
		return true;
	}
	r->errors_quiet++;
	return false;
}

static void log_error(struct kv_redis *r, const char *what, const char *why)
{
	unsigned long quiet;
	bool log;

	pthread_mutex_lock(&r->lock);
	log = may_log(r);
	quiet = r->errors_quiet;
	if (log)
		r->errors_quiet = 0;
	r->down = true;
	pthread_mutex_unlock(&r->lock);
	if (log)
		NLOG(NLOG_ERROR, "backend", "redis request failed", LF_STR("server", r->where),
		     LF_STR("op", what), LF_STR("error", why),
		     LF_INT("errors_not_logged", quiet));
}

void kv_redis_ok(struct kv_redis *r)
{
	bool was_down;

	pthread_mutex_lock(&r->lock);
	was_down = r->down;
	r->down = false;
	r->errors_quiet = 0;
	pthread_mutex_unlock(&r->lock);
	if (was_down)
		NLOG(NLOG_INFO, "backend", "redis answers again", LF_STR("server", r->where));
}

void kv_redis_rtt(struct kv_redis *r, int64_t ms)
{
	pthread_mutex_lock(&r->lock);
	r->rtt_ms = ms;
	pthread_mutex_unlock(&r->lock);
}

void kv_redis_health(struct kv_backend *b, struct kv_backend_health *out)
{
	struct kv_redis *r = (struct kv_redis *)b;

	pthread_mutex_lock(&r->lock);
	/* "down" is set by any failed request or connect and cleared by
	 * the next one that is answered. */
	out->connected = !r->down;
	out->reconnects = r->reconnects;
	out->rtt_ms = r->rtt_ms;
	pthread_mutex_unlock(&r->lock);
}

int kv_redis_get(struct kv_redis *r, struct kv_redis_conn **out)
{
	struct kv_redis_conn *conn = NULL;
	char err[512];
	int ret;

	pthread_mutex_lock(&r->lock);
	for (;;) {
		/* Prefer a connected one: no reconnect while one is at hand. */
		for (unsigned i = 0; i < r->nconns && !conn; i++)
			if (!r->conns[i].busy && r->conns[i].c)
				conn = &r->conns[i];
		for (unsigned i = 0; i < r->nconns && !conn; i++)
			if (!r->conns[i].busy)
				conn = &r->conns[i];
		if (conn)
			break;
		pthread_cond_wait(&r->freed, &r->lock);
	}
	conn->busy = true;
	pthread_mutex_unlock(&r->lock);

	if (conn->c) {
		*out = conn;
		return 0;
	}
	pthread_mutex_lock(&r->lock);
	if (r->backoff_ms && mono_ms() < r->next_connect_ms) {
		pthread_mutex_unlock(&r->lock);
		kv_redis_put(r, conn, false);
		return -EIO;
	}
	pthread_mutex_unlock(&r->lock);
	ret = kv_redis_connect(r, &conn->c, err, sizeof(err));
	if (ret) {
		conn->c = NULL;
		log_error(r, "connect", err);
		pthread_mutex_lock(&r->lock);
		r->backoff_ms = r->backoff_ms ? r->backoff_ms * 2 : BACKOFF_MIN_MS;
		if (r->backoff_ms > BACKOFF_MAX_MS)
			r->backoff_ms = BACKOFF_MAX_MS;
		r->next_connect_ms = mono_ms() + r->backoff_ms;
		pthread_mutex_unlock(&r->lock);
		kv_redis_put(r, conn, false);
		/* Whatever the cause, the caller sees an I/O error it may retry. */
		return ret == -ENOMEM ? -ENOMEM : -EIO;
	}
	pthread_mutex_lock(&r->lock);
	r->backoff_ms = 0;
	if (r->connected_once)
		r->reconnects++;
	r->connected_once = true;
	pthread_mutex_unlock(&r->lock);
	*out = conn;
	return 0;
}

void kv_redis_put(struct kv_redis *r, struct kv_redis_conn *conn, bool failed)
{
	if (failed && conn->c) {
		redisFree(conn->c);
		conn->c = NULL;
	}
	pthread_mutex_lock(&r->lock);
	conn->busy = false;
	pthread_cond_signal(&r->freed);
	pthread_mutex_unlock(&r->lock);
}

int kv_redis_error(struct kv_redis *r, redisContext *c, const redisReply *reply,
		   const char *what)
{
	char why[256];
	int ret = -EIO;

	if (reply && reply->type == REDIS_REPLY_ERROR) {
		snprintf(why, sizeof(why), "%.*s", (int)(reply->len < 200 ? reply->len : 200),
			 reply->str);
		/* Redis at maxmemory with noeviction: the store is full. */
		if (!strncmp(why, "OOM", 3))
			ret = -ENOSPC;
		/* Another mount's transaction is committing (backend_redis_tx.c):
		 * a wait, not a failure of this backend. */
		if (!strncmp(why, "NADBLOCKED", 10))
			return -EAGAIN;
	} else if (reply) {
		snprintf(why, sizeof(why), "unexpected reply type %d", reply->type);
	} else {
		ctx_reason(c, why, sizeof(why));
		if (c && c->err == REDIS_ERR_OOM)
			ret = -ENOMEM;
	}
	log_error(r, what, why);
	return ret;
}
