/*
 * A private redis-server for tests: started by the test itself on a unix
 * socket inside a mkdtemp directory (no TCP port: --port 0), without
 * persistence (--save "", --appendonly no), and stopped by its pid. Never
 * the default port, never a system service.
 *
 * The binary is $NADBFS_REDIS_SERVER or redis-server from PATH; a missing
 * binary is an error (the caller fails its test), not a reason to skip.
 * redis_cli() drives the server with redis-cli (SCAN, PTTL, ...) so that
 * tests need no Redis client library of their own.
 *
 * Return convention: 0 or a negative errno; messages go to stderr.
 */
#ifndef NADB_TESTS_REDIS_SERVER_H
#define NADB_TESTS_REDIS_SERVER_H

#include <stdbool.h>
#include <sys/types.h>

struct redis_server {
	char dir[64];		/* mkdtemp: the socket, the log, the server's cwd */
	char sock[128];		/* dir/redis.sock */
	char password[64];	/* requirepass, "" for none */
	pid_t pid;		/* 0 when not running */
	bool aof;		/* appendonly with appendfsync always: survives SIGKILL */
	unsigned port;		/* also on 127.0.0.1:port (redis_server_start_tcp), else 0 */
};

/* Makes the directory and starts the server; waits (polling, at most 10 s)
 * until it answers PING. password may be NULL. */
int redis_server_start(struct redis_server *s, const char *password);
/* The same, also listening on 127.0.0.1 on a free port (s->port, never
 * 6379): for redis:// URLs, which name a host and port. */
int redis_server_start_tcp(struct redis_server *s, const char *password);
/* The same with an append-only file fsync'ed on every write, so that what
 * the server acknowledged survives redis_server_kill() and a resume. */
int redis_server_start_aof(struct redis_server *s);
/* SIGKILL (a crash), keeping the directory for redis_server_resume(). */
void redis_server_kill(struct redis_server *s);
/* Stops the process (SIGTERM, then SIGKILL after 10 s) but keeps the
 * directory, so that redis_server_resume() starts it on the same socket. */
void redis_server_halt(struct redis_server *s);
int redis_server_resume(struct redis_server *s);
/* Halts it and removes the directory. Safe to call twice. */
void redis_server_stop(struct redis_server *s);

/*
 * Runs redis-cli on the server with the given arguments (shell words,
 * built with printf formatting: quote what needs it) and returns its
 * output (--raw: one line per reply element), malloc'd; NULL when
 * redis-cli could not run.
 */
char *redis_cli(const struct redis_server *s, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

#endif
