/*
 * Shared by the libFuzzer targets in fuzz/: each file defines
 * LLVMFuzzerTestOneInput (and maybe LLVMFuzzerInitialize). A target must
 * never exit or abort on bad input; any crash, sanitizer report, leak or
 * FUZZ_CHECK failure is a finding.
 */
#ifndef NADB_FUZZ_H
#define NADB_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/log.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

/* A property the code under test must keep: a violation is a finding. */
#define FUZZ_CHECK(cond)                                                                           \
	do {                                                                                       \
		if (!(cond)) {                                                                     \
			fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);   \
			abort();                                                                   \
		}                                                                                  \
	} while (0)

/* data[0..size) as a NUL-terminated string (malloc'd; NULs inside stay). */
static inline char *fuzz_strndup(const uint8_t *data, size_t size)
{
	char *s = malloc(size + 1);

	FUZZ_CHECK(s);
	if (size)
		memcpy(s, data, size);
	s[size] = '\0';
	return s;
}

/*
 * Cuts the input at the first "\n--\n": *a gets what precedes it, *b the rest
 * (empty without a separator). Lets one input drive two parsers while seeds
 * stay readable text.
 */
static inline void fuzz_split(const uint8_t *data, size_t size, const uint8_t **a, size_t *alen,
			      const uint8_t **b, size_t *blen)
{
	const uint8_t *sep = size >= 4 ? memmem(data, size, "\n--\n", 4) : NULL;

	*a = data;
	*alen = sep ? (size_t)(sep - data) : size;
	*b = sep ? sep + 4 : data + size;
	*blen = sep ? size - (size_t)(*b - data) : 0;
}

/* The code under test logs every malformed input it refuses: to /dev/null,
 * unless NADBFS_FUZZ_LOG is set (to read why an input was refused). */
static inline void fuzz_quiet(void)
{
	if (!getenv("NADBFS_FUZZ_LOG"))
		log_open("/dev/null", false);
}

#endif
