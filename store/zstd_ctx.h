/*
 * One zstd decompression context per thread, made on first use and freed
 * when the thread ends. ZSTD_decompress() would allocate and initialise a
 * fresh context (about 100 KiB) for every call: on a small compressed value
 * that cost more than the decoding itself (12 % of the daemon's time in a
 * read-heavy run).
 */
#ifndef NADB_STORE_ZSTD_CTX_H
#define NADB_STORE_ZSTD_CTX_H

#include <zstd.h>

/* This thread's context, reset for a new frame; NULL on ENOMEM. */
ZSTD_DCtx *kv_zstd_dctx(void);

#endif
