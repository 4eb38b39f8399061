/*
 * What the crash loop knows about its keys across kills (tests/crash_state.c):
 * self-describing values, the tag and TTL each generation sets, and the
 * check after a remount. One writer thread owns each key, so a key's fields
 * are only touched by its writer, or by the main thread while no writer runs.
 */
#ifndef NADB_TESTS_CRASH_STATE_H
#define NADB_TESTS_CRASH_STATE_H

#include <stdbool.h>
#include <stddef.h>

#define CS_KEYS 12 /* per writer */

struct cs_key {
	char name[32];		/* logical name "wT-kNN", also in every value's header */
	char dir[16];		/* "wT": the key is DIR/kNN.a or DIR/kNN.b */
	int idx;
	bool exists;		/* live state, as the writer left it */
	int loc;		/* 0: .a, 1: .b */
	bool loc_durable;	/* no rename since the last fsync */
	/* Generations: the highest attempted (numbering only: a crash may lose
	 * it), the current one as the writer left it (or as found after a
	 * remount), and the one known durable. */
	unsigned vatt, vcur, vfloor;	/* value */
	bool floor_present;	/* the key is known durable (possibly empty) */
	unsigned tatt, tcur, tfloor;	/* tags (0: no tags) */
	unsigned xatt, xcur, xfloor;	/* TTL (0: none) */
};

void cs_init_keys(struct cs_key *keys, int writers);
void cs_path(const char *mnt, const struct cs_key *k, int loc, char *buf, size_t len);
/* Writes generation ++vatt at path, fsync'd when asked (*synced tells whether
 * the fsync succeeded; the caller decides if that makes it durable). 0 or -errno. */
int cs_write(const char *path, struct cs_key *k, size_t len, bool sync, bool *synced);
/* After a successful fsync: the attempted state is durable. */
void cs_mark_durable(struct cs_key *k);
/* The user.tags list generation g sets ("" for none). */
void cs_tags(unsigned g, char *buf, size_t len);
/* The user.ttl generation g sets, 0 for "removed". */
long long cs_ttl(unsigned g);

/* Checks every key and every tag listing below mnt; moves the floors up. */
void cs_verify(const char *mnt, struct cs_key *keys, int n);
/* How many key states cs_verify has checked so far. */
long cs_checked(void);

void cs_set_context(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
const char *cs_context(void);

#endif
