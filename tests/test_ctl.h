/*
 * The ctl tests, in two files of one program: test_ctl.c (the control files:
 * stats, metrics, ctl sessions, modes) and test_ctl_cli.c (nadbctl: its
 * output, --json, reload), sharing these helpers.
 */
#ifndef NADB_TESTS_TEST_CTL_H
#define NADB_TESTS_TEST_CTL_H

#include <jansson.h>

#include "mnt.h"

/* $NADBCTL_BIN. */
const char *nadbctl(void);
/* .nadb/stats parsed; fails the test if it is not JSON. */
json_t *read_stats(struct mnt *m);
/* The integer figure at path ("buffer.keys"); fails the test if missing. */
json_int_t stat_int(json_t *o, const char *path);

void test_nadbctl(void **state);
void test_reload(void **state);
void test_reload_applies_timeouts(void **state);
void test_coherence_delay_caps_kernel_cache(void **state);
void test_nadbctl_json(void **state);
void test_nadbctl_json_failures(void **state);
void test_reload_live(void **state);
void test_no_values_in_logs(void **state);

#endif
