/*
 * nadbctl tx apply's input: a JSON-lines batch, one operation object per
 * line, read and checked whole before anything runs. Separate from
 * nadbctl_tx.c (which runs it on a mount) so that the fuzz target
 * (fuzz/fuzz_txbatch.c) reaches the parser without a mount.
 *
 * Return convention: 0, or -EINVAL (bad input; err has "LINE: why"),
 * -ENOMEM, or a read error. Not thread-safe per batch.
 */
#ifndef NADB_MOUNT_TX_BATCH_H
#define NADB_MOUNT_TX_BATCH_H

#include <stdbool.h>
#include <stdio.h>

#include <jansson.h>

struct tx_batch_op {
	json_t *o; /* the line's object (owned) */
	unsigned line;
	const char *op, *key; /* strings inside o */
};

/* Reads every line of f; on success *ops (free with tx_batch_free) holds at
 * least one operation, each checked. */
int tx_batch_read(FILE *f, struct tx_batch_op **ops, size_t *count, char *err, size_t errlen);
/* Checks one parsed line's object, filling op->op and op->key: NULL if fine,
 * else what is wrong. */
const char *tx_batch_check(struct tx_batch_op *op);
/* A value of a "key" or "to" field: relative, no empty, "." or ".." parts. */
bool tx_batch_key_ok(const char *k);
void tx_batch_free(struct tx_batch_op *ops, size_t count);

#endif
