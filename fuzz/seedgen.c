/*
 * Seeds for fuzz_journal and fuzz_record made by the real encoders: a store
 * in a temporary directory goes through keys, directories, values, xattrs,
 * tags, a TTL, renames and deletes (one flush each), then is compacted; its
 * journal and snapshot are written as fuzz_journal's chunk format and as
 * raw files and records for fuzz_record.
 *
 * Usage: fuzz_seedgen CORPUS_DIR (writes CORPUS_DIR/fuzz_journal/seed-*,
 * CORPUS_DIR/fuzz_record/seed-*).
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "store/backend_fs.h"
#include "store/journal.h"
#include "store/kv.h"

#define CHECK(x)                                                                                   \
	do {                                                                                       \
		if (!(x)) {                                                                        \
			fprintf(stderr, "seedgen: %s failed at line %d\n", #x, __LINE__);          \
			exit(1);                                                                   \
		}                                                                                  \
	} while (0)

static char root[64];
static const char *out;

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static struct kv_store *open_store(void)
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
	struct kv_store *kv;
	char err[256];

	CHECK(kv_open(&o, &kv, err, sizeof(err)) == 0);
	return kv;
}

static void write_out(const char *dir, const char *name, const void *p, size_t len)
{
	char path[512];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", out, dir);
	mkdir(path, 0755);
	snprintf(path, sizeof(path), "%s/%s/%s", out, dir, name);
	f = fopen(path, "w");
	CHECK(f);
	CHECK(fwrite(p, 1, len, f) == len || len == 0);
	CHECK(fclose(f) == 0);
}

static void *slurp(const char *name, size_t *len)
{
	char path[256];
	struct stat st;
	void *p;
	int fd;

	snprintf(path, sizeof(path), "%s/stores/d/n/meta/%s", root, name);
	fd = open(path, O_RDONLY);
	CHECK(fd >= 0 && fstat(fd, &st) == 0);
	p = malloc((size_t)st.st_size + 1);
	CHECK(p && read(fd, p, (size_t)st.st_size) == st.st_size);
	close(fd);
	*len = (size_t)st.st_size;
	return p;
}

struct chunks {
	unsigned char buf[1 << 16];
	size_t len;
	int records;
};

static int to_chunk(uint8_t type, const uint8_t *payload, size_t len, void *arg)
{
	struct chunks *c = arg;

	/* The target adds headers and the snapshot's end record itself. */
	if (type == FS_REC_JHEADER || type == FS_REC_SHEADER || type == FS_REC_SEND)
		return 0;
	CHECK(len < 65536 && c->len + 3 + len <= sizeof(c->buf));
	c->buf[c->len++] = type;
	c->buf[c->len++] = (unsigned char)len;
	c->buf[c->len++] = (unsigned char)(len >> 8);
	memcpy(c->buf + c->len, payload, len);
	c->len += len;
	if (type == FS_REC_SRECORDS && !c->records++)
		write_out("fuzz_record", "seed-srecords", payload, len);
	return 0;
}

/* name as fuzz_journal input with flags, and raw for fuzz_record. */
static void export(const char *name, uint8_t flags, const char *seed)
{
	static struct chunks c;
	uint64_t end;
	size_t len;
	void *data = slurp(name, &len);

	c.len = 0;
	c.buf[c.len++] = flags;
	CHECK(journal_scan(data, len, true, name, to_chunk, &c, &end) == 0);
	write_out("fuzz_journal", seed, c.buf, c.len);
	write_out("fuzz_record", seed, data, len);
	/* The same with a torn last chunk. */
	c.buf[0] = flags | 4;
	snprintf((char *)c.buf + sizeof(c.buf) - 64, 64, "%s-torn", seed);
	write_out("fuzz_journal", (char *)c.buf + sizeof(c.buf) - 64, c.buf, c.len);
	free(data);
}

int main(int argc, char **argv)
{
	struct kv_store *kv;
	struct kv_attr d, a, b;

	if (argc != 2) {
		fprintf(stderr, "usage: fuzz_seedgen CORPUS_DIR\n");
		return 2;
	}
	out = argv[1];
	snprintf(root, sizeof(root), "/tmp/nadbfs-seedgen-XXXXXX");
	CHECK(mkdtemp(root));

	kv = open_store();
	CHECK(kv_mkdir(kv, KV_ROOT_ID, "dir", 0755, 1000, 1000, &d) == 0);
	CHECK(kv_create(kv, d.id, "key", 0644, 1000, 1000, true, &a) == 0);
	CHECK(kv_write(kv, a.id, "hello", 5, 0) == 5);
	CHECK(kv_flush(kv) == 0);
	CHECK(kv_setxattr(kv, a.id, "user.colour", "blue", 4, 0) == 0);
	CHECK(kv_setxattr(kv, a.id, "user.tags", "red,x.y", 7, 0) == 0);
	CHECK(kv_tag_mkdir(kv, "declared") == 0);
	CHECK(kv_create(kv, KV_ROOT_ID, "other", 0600, 0, 0, true, &b) == 0);
	CHECK(kv_setxattr(kv, b.id, "user.ttl", "3600", 4, 0) == 0);
	CHECK(kv_flush(kv) == 0);
	CHECK(kv_rename(kv, d.id, "key", KV_ROOT_ID, "moved", 0) == 0);
	CHECK(kv_create(kv, d.id, "gone", 0644, 0, 0, true, &b) == 0);
	CHECK(kv_flush(kv) == 0);
	CHECK(kv_unlink(kv, d.id, "gone") == 0);
	CHECK(kv_close(kv) == 0);
	export("journal.1", 0, "seed-journal");

	/* Open with a tiny threshold: the journal is folded into a snapshot. */
	kv_fs_set_compact_threshold(1);
	kv = open_store();
	CHECK(kv_close(kv) == 0);
	export("snapshot", 1, "seed-snapshot");

	nftw(root, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
	return 0;
}
