/*
 * The record decoder shared by the journal, the snapshot and the Redis
 * backend (kv_meta_decode), and the journal framing (journal_scan), on
 * arbitrary bytes. Properties: the decoder never reads past its input
 * (ASan), never leaks, and whatever it accepts re-encodes to exactly the
 * bytes it consumed (the format has one encoding per record), so a record
 * survives compaction unchanged.
 */
#include <errno.h>
#include <stdbool.h>

#include "store/backend.h"
#include "store/journal.h"
#include "fuzz/fuzz.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	fuzz_quiet();
	return 0;
}

/* Decodes records back to back from p[0..len), checking each round trip. */
static void decode_all(const uint8_t *p, size_t len)
{
	size_t off = 0;

	while (off < len) {
		struct kv_meta m;
		uint8_t *buf = NULL;
		size_t used = 0, blen = 0, bcap = 0;
		int ret = kv_meta_decode(p + off, len - off, &m, &used);

		FUZZ_CHECK(ret == 0 || ret == -EINVAL || ret == -ENOMEM);
		if (ret)
			return;
		FUZZ_CHECK(used > 0 && used <= len - off);
		FUZZ_CHECK(kv_meta_encode(&m, &buf, &blen, &bcap) == 0);
		FUZZ_CHECK(blen == used && !memcmp(buf, p + off, used));
		free(buf);
		kv_meta_clear(&m);
		off += used;
	}
}

struct scan_state {
	size_t records;
};

static int on_record(uint8_t type, const uint8_t *payload, size_t len, void *arg)
{
	struct scan_state *s = arg;

	FUZZ_CHECK(type != 0);
	s->records++;
	/* BATCH payloads start with a u32 count and op bytes; SRECORDS are
	 * records back to back: decode both ways, whatever the type says. */
	decode_all(payload, len);
	if (len > 5)
		decode_all(payload + 5, len - 5);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct scan_state s = { 0 };
	uint64_t end = 0;
	int ret;

	decode_all(data, size);

	ret = journal_scan(data, size, false, "fuzz", on_record, &s, &end);
	FUZZ_CHECK(ret == 0 || ret == -EIO);
	if (!ret)
		FUZZ_CHECK(end <= size);
	s.records = 0;
	ret = journal_scan(data, size, true, "fuzz", on_record, &s, &end);
	FUZZ_CHECK(ret == 0 || ret == -EIO);
	return 0;
}
