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
/* After a use: a context that grew (streaming keeps a window buffer of up
 * to a few MiB after a large value) is freed rather than kept by an idle
 * thread. */
void kv_zstd_dctx_done(ZSTD_DCtx *d);

#endif
