#include "store/zstd_ctx.h"

#include <pthread.h>

/* What a context for single-shot decoding of small values takes, with room. */
#define KEEP_MAX (256u * 1024u)

static pthread_key_t key;
static pthread_once_t once = PTHREAD_ONCE_INIT;
static int key_err;

static void free_ctx(void *p)
{
	ZSTD_freeDCtx(p);
}

static void make_key(void)
{
	key_err = pthread_key_create(&key, free_ctx);
}

ZSTD_DCtx *kv_zstd_dctx(void)
{
	ZSTD_DCtx *d;

	pthread_once(&once, make_key);
	if (key_err)
		return NULL;
	d = pthread_getspecific(key);
	if (!d) {
		d = ZSTD_createDCtx();
		if (!d)
			return NULL;
		if (pthread_setspecific(key, d)) {
			ZSTD_freeDCtx(d);
			return NULL;
		}
	}
	ZSTD_DCtx_reset(d, ZSTD_reset_session_only);
	return d;
}

void kv_zstd_dctx_done(ZSTD_DCtx *d)
{
	if (d && ZSTD_sizeof_DCtx(d) > KEEP_MAX && pthread_getspecific(key) == d) {
		pthread_setspecific(key, NULL);
		ZSTD_freeDCtx(d);
	}
}
