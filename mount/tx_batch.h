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
	/* op is the canonical name ("set" for "put", "del" for "delete"), a
	 * static string; key is inside o. */
	const char *op, *key;
	/* set and xattr: the value's bytes, inside o ("value") or in b64
	 * (decoded "value_b64", owned); NULL for other ops. */
	const void *value;
	size_t value_len;
	unsigned char *b64;
};

/* Reads every line of f; on success *ops (free with tx_batch_free) holds at
 * least one operation, each checked. */
int tx_batch_read(FILE *f, struct tx_batch_op **ops, size_t *count, char *err, size_t errlen);
/* Checks one parsed line's object, filling op->op, op->key and the value:
 * NULL if fine, else what is wrong (a static string or why[0..whylen)). */
const char *tx_batch_check(struct tx_batch_op *op, char *why, size_t whylen);
/* A value of a "key" or "to" field: relative, no empty, "." or ".." parts. */
bool tx_batch_key_ok(const char *k);
/* A tag by the rules of the mount's tags/ (1..255 of [A-Za-z0-9_.:@=-], no
 * leading '-', not "." or ".."): checked here so that a bad one fails the
 * batch before it starts, and so that a joined "a,b" list is unambiguous. */
bool tx_batch_tag_ok(const char *t);
void tx_batch_free(struct tx_batch_op *ops, size_t count);

#endif
