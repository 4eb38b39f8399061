/*
 * Fault injection for the filesystem backend by `-Wl,--wrap=`: write,
 * pwrite64, pwritev64 (what pwrite and pwritev are with 64-bit offsets), fsync, fdatasync, rename, renameat and renameat2 of the program go
 * through tests/fault_shim.c, which fails them on demand, and so does
 * openat64 (openat with 64-bit offsets) when it creates a file (O_CREAT). A
 * fault names the calls it hits (a mask), the file they concern (a substring
 * of the path behind the descriptor, of either rename name, or of the
 * directory's path joined with the name created; NULL: any), the error,
 * how many matching calls to let through first, and how many to fail (-1:
 * until fault_clear). A short-write fault writes half of what was asked and
 * returns that count instead of failing; a last single byte then fails with
 * the error, or is written when the error is 0 (short writes only).
 */
#ifndef NADB_TESTS_FAULT_SHIM_H
#define NADB_TESTS_FAULT_SHIM_H

#include <stdbool.h>

enum { F_WRITE = 1, F_FSYNC = 2, F_RENAME = 4, F_CREATE = 8 };

void fault_arm(int ops, const char *file, int err, int skip, int count, bool short_write);
void fault_clear(void);
/* Calls failed (or shortened) since the last fault_arm. */
int fault_hits(void);
/* fn(arg, from, to) runs in every rename, renameat and renameat2 whose
 * target's path contains file (NULL: any), just before it (after false;
 * before the fault too, so fn runs also when the call is then failed), or
 * just after the real call succeeded (after true); fn NULL: no hook. */
void fault_rename_hook(const char *file, bool after,
		       void (*fn)(void *arg, const char *from, const char *to), void *arg);

#endif
