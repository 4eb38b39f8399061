/*
 * Journal and snapshot replay as a mount does it: the input becomes
 * meta/journal.1 (or meta/snapshot) of a filesystem-backend store in a
 * private temporary directory, then kv_open loads it (replay, tree linking,
 * tag index, recovery into lost+found), and kv_close writes back what it changed.
 *
 * The framing's XXH32 would stop the fuzzer at the first byte it changes,
 * so the target frames the records itself. Input:
 *	u8 flags, then chunks: u8 type, u16 length (LE), payload (cut at the end)
 * flags: 1 snapshot instead of journal; 2 compact at open (tiny threshold);
 *	  4 the last chunk is torn (its frame cut short); 8 no header is added
 *	  (the chunks must carry their own); 16 snapshot: no end record added.
 * Properties: no crash, leak or sanitizer report; kv_open fails with a
 * negative errno or yields a store that closes cleanly and opens again.
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdbool.h>
#include <sys/stat.h>
#include <unistd.h>

#include "store/backend_fs.h"
#include "store/journal.h"
#include "store/kv.h"
#include "fuzz/fuzz.h"

static char root[64];  /* mkdtemp: DATA of the store */
static char meta[128]; /* root/stores/d/n/meta */

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	remove(path);
	return 0;
}

static void rm_store(void)
{
	char path[128];

	snprintf(path, sizeof(path), "%s/stores", root);
	nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static void cleanup(void)
{
	nftw(root, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	const char *scratch;

	(void)argc;
	(void)argv;
	fuzz_quiet();
	/* fuzz/run names a scratch directory it removes even after a crash;
	 * else tmpfs when there is one: the store fsyncs on every commit. */
	scratch = getenv("NADBFS_FUZZ_SCRATCH");
	if (!scratch)
		scratch = access("/dev/shm", W_OK) ? "/tmp" : "/dev/shm";
	FUZZ_CHECK(strlen(scratch) < 32);
	snprintf(root, sizeof(root), "%s/nadbfs-fuzz-XXXXXX", scratch);
	FUZZ_CHECK(mkdtemp(root));
	snprintf(meta, sizeof(meta), "%s/stores/d/n/meta", root);
	atexit(cleanup);
	return 0;
}

static void put_le(uint8_t *p, uint64_t v, int n)
{
	for (int i = 0; i < n; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static void emit(FILE *f, uint8_t type, const void *payload, size_t len, size_t cut)
{
	uint8_t hdr[JOURNAL_HDR_SIZE];

	journal_frame(hdr, type, payload, len);
	if (cut) {
		/* A torn append: some prefix of the frame reached the file. */
		size_t total = sizeof(hdr) + len, keep = cut % total;

		fwrite(hdr, 1, keep < sizeof(hdr) ? keep : sizeof(hdr), f);
		if (keep > sizeof(hdr))
			fwrite(payload, 1, keep - sizeof(hdr), f);
		return;
	}
	fwrite(hdr, 1, sizeof(hdr), f);
	fwrite(payload, 1, len, f);
}

/* Records in an SRECORDS payload, as the snapshot reader counts them. */
static uint64_t count_records(const uint8_t *p, size_t len)
{
	uint64_t n = 0;
	size_t off = 0, used;
	struct kv_meta m;

	while (off < len && !kv_meta_decode(p + off, len - off, &m, &used)) {
		kv_meta_clear(&m);
		off += used;
		n++;
	}
	return n;
}

static void write_file(const uint8_t *data, size_t size, uint8_t flags)
{
	bool snap = flags & 1;
	char path[192];
	uint8_t hdr[36];
	uint64_t count = 0;
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", meta, snap ? "snapshot" : "journal.1");
	f = fopen(path, "w");
	FUZZ_CHECK(f);
	if (!(flags & 8)) {
		if (snap) {
			memcpy(hdr, "nadbsnap", 8);
			put_le(hdr + 8, FS_FORMAT_VERSION, 4);
			put_le(hdr + 12, 1, 8);
			put_le(hdr + 20, 0, 8);
			put_le(hdr + 28, 0, 8);
			emit(f, FS_REC_SHEADER, hdr, 36, 0);
		} else {
			memcpy(hdr, "nadbjrnl", 8);
			put_le(hdr + 8, FS_FORMAT_VERSION, 4);
			put_le(hdr + 12, 1, 8);
			emit(f, FS_REC_JHEADER, hdr, 20, 0);
		}
	}
	while (size >= 3) {
		uint8_t type = data[0];
		size_t len = (size_t)data[1] | (size_t)data[2] << 8;
		bool last;

		data += 3;
		size -= 3;
		if (len > size)
			len = size;
		last = len == size;
		if (type == FS_REC_SRECORDS)
			count += count_records(data, len);
		emit(f, type, data, len, last && (flags & 4) ? len + 5 : 0);
		data += len;
		size -= len;
	}
	if (snap && !(flags & 16)) {
		put_le(hdr, count, 8);
		emit(f, FS_REC_SEND, hdr, 8, 0);
	}
	FUZZ_CHECK(fclose(f) == 0);
}

static int open_store(struct kv_store **kv)
{
	struct kv_options o = {
		.backend = KV_BACKEND_FS,
		.params = { .data_dir = root, .db = "d", .ns = "n", .compression = KV_ENC_NONE },
		.buffer_size = 1 << 20,
		.flush_interval_ms = 60000,
		.backend_timeout_ms = 5000,
		.max_value_size = 1 << 20,
		.ttl_sweep_ms = 60000,
		.query_cache_size = 16,
		.tx_max_bytes = 1 << 20,
	};
	char err[256];

	return kv_open(&o, kv, err, sizeof(err));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct kv_store *kv;
	char path[192];
	int ret;

	if (size < 1)
		return 0;
	rm_store();
	/* The store's directories; the backend makes the rest. */
	snprintf(path, sizeof(path), "%s/stores", root);
	mkdir(path, 0700);
	snprintf(path, sizeof(path), "%s/stores/d", root);
	mkdir(path, 0700);
	snprintf(path, sizeof(path), "%s/stores/d/n", root);
	mkdir(path, 0700);
	mkdir(meta, 0700);
	write_file(data + 1, size - 1, data[0]);

	kv_fs_set_compact_threshold(data[0] & 2 ? 1 : 8u << 20);
	ret = open_store(&kv);
	FUZZ_CHECK(ret <= 0);
	if (ret)
		return 0;
	FUZZ_CHECK(kv_close(kv) == 0);
	/* What the first open accepted and wrote back must open again. */
	FUZZ_CHECK(open_store(&kv) == 0);
	FUZZ_CHECK(kv_close(kv) == 0);
	return 0;
}
