/*
 * The model checker's model (tests/test_model.c runs it): a namespace of
 * paths naming nodes (bytes, user.* xattrs, a type), the comparison of the
 * mount with it, and mismatch reports with the replay seed. model.c holds
 * the namespace and the comparisons, test_model.c the operations.
 *
 * Every function fails the current cmocka test (with the last operations
 * and how to replay them) on a mismatch; none returns an error.
 */
#ifndef NADB_TESTS_MODEL_H
#define NADB_TESTS_MODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mnt.h"

#define MAX_ENTRIES 48
#define MAX_HANDLES 4
#define MAX_XATTRS  4
#define MAX_DEPTH   3
#define MAX_SIZE    (192u * 1024u)
#define HISTORY	    24

struct xattr {
	char name[16];
	uint8_t val[64];
	size_t len;
};

struct node {
	bool dir;
	uint8_t *data; /* files */
	size_t len;
	struct xattr xa[MAX_XATTRS];
	int nxa;
	int refs; /* names and handles pointing here */
};

struct entry {
	char path[64]; /* relative to the mount: "a/b" */
	struct node *n;
};

struct handle {
	int fd;
	struct node *n;
};

struct model {
	struct mnt *m;
	uint64_t seed, rng;
	long step, steps;
	struct entry e[MAX_ENTRIES];
	int ne;
	struct handle h[MAX_HANDLES];
	int nh;
	char history[HISTORY][200];
	uint8_t buf[MAX_SIZE + 80000];
	uint8_t got[MAX_SIZE + 80000];
	long remounts, full_checks, succeeded, refused;
};

/* History: the step's description; printed when a later check fails. */
void note(struct model *md, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Fails the test with what happened and how to replay it. */
void mismatch(struct model *md, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The syscall's outcome as an errno (0 on success). */
int outcome(long ret);
/* The call's errno must be the model's prediction (0: success). */
void expect(struct model *md, const char *what, int want, int got);

/* Namespace: entry index of path or -1; is path below dir; tree depth. */
int find(const struct model *md, const char *path);
bool is_under(const char *path, const char *dir);
bool has_children(const struct model *md, const char *dir);
int depth(const char *path);
struct node *new_node(bool dir);
void unref(struct node *n);
/* Removes entry i (its node stays while handles hold it). */
void drop_entry(struct model *md, int i);
/* The mount's path of rel. */
const char *mpath(struct model *md, const char *rel);

/* One path: absent, or the right type, size, bytes and xattrs. */
void check_path(struct model *md, const char *rel);
/* Every open handle: size and bytes of its node. */
void check_handles(struct model *md);
/* The whole tree (names, types, bytes, xattrs) and every handle. */
void check_all(struct model *md);

#endif
