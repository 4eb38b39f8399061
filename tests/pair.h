/*
 * Two mounts of one store on one private redis-server (two mountpoints on
 * this machine stand for two machines, spec section 9), for the tests of
 * what several mounts see of each other: a owns the server and the tree, b
 * shares them. The helpers fail the test (cmocka) when a wait runs out.
 */
#ifndef NADB_TESTS_PAIR_H
#define NADB_TESTS_PAIR_H

#include <stdbool.h>

#include "tests/mnt.h"

/* flush_interval + coherence_delay below is 200 ms; a loaded machine gets
 * ample slack, but a mount that never catches up fails. */
#define OPTS "flush_interval=100ms,coherence_delay=100ms"
/* Flushes only when told (fsync, nadbctl flush), so a test orders the
 * commits. */
#define OPTS_MANUAL "flush_interval=1h,coherence_delay=100ms"
#define CATCH_UP_MS 5000
/* The hash tag of the default store's Redis keys. */
#define TT "{nadb:default:default}:"

struct pair {
	struct mnt a, b;
};

/* cmocka setup and teardown: *state is the pair. */
int pair_setup(void **state);
int pair_teardown(void **state);
/* Mounts a (on a fresh redis-server) and b on the same store. */
struct pair *start_pair(void **state, const char *opts);
void stop_pair(struct pair *p);

/*
 * Polls until path holds want (NULL: until it does not exist); with a pair,
 * flushing both of its mounts before each look: with flush_interval at 1 h,
 * what a mount's sync thread commits again (a directory another mount
 * removed) waits for a flush, whichever order the two threads took.
 */
void await_flushing(struct pair *p, const char *path, const char *want);
void await_file(const char *path, const char *want);
/* Is name an entry of dir (ls -a)? */
bool listed(const char *dir, const char *name);
void await_listed(const char *dir, const char *name, bool want);
/* Polls until mnt_ls(m, dir) is want. */
void await_names(struct mnt *m, const char *dir, const char *want);
/* Everything m holds is committed once this returns (nadbctl flush). */
void flush_all(struct mnt *m);
/* Everything m holds is committed once this returns, provided key has a
 * change not committed yet: fsync of such a key waits for a whole flush. */
void flush_mount(struct mnt *m, const char *key);
/* redis-cli's one-line answer, without its newline (a string of m's,
 * as mnt_str's). */
const char *rcli(struct mnt *m, const char *fmt, const char *arg);

#endif
