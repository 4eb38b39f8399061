/*
 * The filesystem backend's metadata: loading (snapshot + journals),
 * writing snapshots, and compaction.
 *
 * Loading replays the journals newer than the snapshot into a map holding
 * only the records they touch, then streams the snapshot, handing each of its
 * records straight to the caller unless the map overrides it, then hands over
 * the map's live records. Memory is thus bounded by what the journals hold
 * (itself bounded by the compaction threshold), not by the store.
 *
 * Compaction and crashes. Generations only grow; the snapshot says which
 * generation G it includes, and every journal.N with N > G replays after it.
 * Compaction of the current journal.H goes:
 *
 *  1. create journal.H+1, write its header, fdatasync, fsync meta/ — from
 *     now on commits go there. A crash here: journals H and H+1 both replay
 *     after the old snapshot; nothing is lost.
 *  2. write snapshot.tmp = old snapshot + journals G+1..H, fsync it. A crash
 *     here: snapshot.tmp is ignored and removed at the next load.
 *  3. rename snapshot.tmp over snapshot, fsync meta/. The rename is atomic:
 *     a crash leaves either the old snapshot (G: journals G+1.. replay) or
 *     the new one (H: journals H+1.. replay, the older ones are ignored);
 *     both give every committed op.
 *  4. delete journals G+1..H. A crash leaves some of them; load deletes any
 *     journal whose generation the snapshot already includes.
 *
 * Journals newer than the snapshot must be consecutive: a gap means a lost
 * file, and load fails with -EIO rather than silently dropping commits.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "store/backend_fs.h"
#include "store/htab.h"
#include "store/journal.h"
#include "util/log.h"

static uint64_t compact_min = 8u << 20;

void kv_fs_set_compact_threshold(uint64_t bytes)
{
	compact_min = bytes;
}

static uint64_t compact_limit(const struct kv_fs *fs)
{
	return fs->snap_size > compact_min ? fs->snap_size : compact_min;
}

bool kv_fs_should_compact(const struct kv_fs *fs)
{
	uint64_t size = journal_size(fs->j);

	return size > compact_limit(fs) && size >= fs->compact_hold;
}

static const char jmagic[8] = "nadbjrnl";
static const char smagic[8] = "nadbsnap";
#define JHEADER_LEN (8 + 4 + 8)
#define SHEADER_LEN (8 + 4 + 3 * 8)
/* Records are packed into snapshot records of about this size. */
#define SNAP_CHUNK ((size_t)64 * 1024)

static uint64_t get_le(const uint8_t *p, int n)
{
	uint64_t v = 0;

	for (int i = 0; i < n; i++)
		v |= (uint64_t)p[i] << (8 * i);
	return v;
}

static void put_le(uint8_t *p, uint64_t v, int n)
{
	for (int i = 0; i < n; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

/* A record the journals touched: its latest state, or a deletion. */
struct jent {
	struct kv_meta m;	/* only m.id when dead */
	bool dead;
};

static uint64_t jent_hash(const void *item)
{
	return htab_hash_u64(((const struct jent *)item)->m.id);
}

static bool jent_match(const void *item, const void *key)
{
	return ((const struct jent *)item)->m.id == *(const uint64_t *)key;
}

struct replay {
	struct kv_fs *fs;
	struct htab map;	/* id -> struct jent */
	uint64_t max_id, max_vver;
	const char *path;	/* the file being read, for messages */
	uint64_t gen;		/* its generation (journals) */
	bool have_header;
};

static void replay_init(struct replay *r, struct kv_fs *fs)
{
	memset(r, 0, sizeof(*r));
	r->fs = fs;
	htab_init(&r->map, jent_hash, jent_match);
}

static void replay_destroy(struct replay *r)
{
	struct jent *e;

	for (size_t pos = 0; (e = htab_next(&r->map, &pos));) {
		kv_meta_clear(&e->m);
		free(e);
	}
	htab_destroy(&r->map);
}

static struct jent *map_find(const struct replay *r, uint64_t id)
{
	return htab_find(&r->map, htab_hash_u64(id), &id);
}

static int corrupt(const char *path, const char *why)
{
	log_msg(NLOG_ERROR, "store", "%s is corrupt: %s", path, why);
	return -EIO;
}

static void seen_id(struct replay *r, uint64_t id, uint64_t vver)
{
	if (id > r->max_id)
		r->max_id = id;
	if (vver > r->max_vver)
		r->max_vver = vver;
}

/* Records m (taken over) or, with m NULL, the deletion of id. */
static int map_set(struct replay *r, uint64_t id, struct kv_meta *m)
{
	struct jent *e = map_find(r, id);
	int ret;

	if (!e) {
		e = calloc(1, sizeof(*e));
		if (!e)
			return -ENOMEM;
		/* The table hashes the item: its id must be set first. */
		e->m.id = id;
		ret = htab_insert(&r->map, e);
		if (ret) {
			free(e);
			return ret;
		}
	}
	kv_meta_clear(&e->m);
	if (m) {
		e->m = *m;
		memset(m, 0, sizeof(*m));
	}
	e->m.id = id;
	e->dead = !m;
	return 0;
}

static int apply_batch(struct replay *r, const uint8_t *p, size_t len)
{
	size_t off = 4;
	uint32_t n;
	int ret;

	if (len < 4)
		return corrupt(r->path, "short batch record");
	n = (uint32_t)get_le(p, 4);
	for (uint32_t i = 0; i < n; i++) {
		struct kv_meta m;
		size_t used;
		uint64_t id;

		if (off >= len)
			return corrupt(r->path, "batch record shorter than its op count");
		switch (p[off++]) {
		case KV_OP_PUT:
			ret = kv_meta_decode(p + off, len - off, &m, &used);
			if (ret == -EINVAL)
				return corrupt(r->path, "malformed record in a batch");
			if (ret)
				return ret;
			off += used;
			seen_id(r, m.id, m.vver);
			ret = map_set(r, m.id, &m);
			kv_meta_clear(&m);
			if (ret)
				return ret;
			break;
		case KV_OP_DEL:
			if (len - off < 8)
				return corrupt(r->path, "truncated deletion in a batch");
			id = get_le(p + off, 8);
			off += 8;
			if (id == 0)
				return corrupt(r->path, "deletion of id 0");
			seen_id(r, id, 0);
			ret = map_set(r, id, NULL);
			if (ret)
				return ret;
			break;
		default:
			return corrupt(r->path, "unknown op in a batch");
		}
	}
	if (off != len)
		return corrupt(r->path, "trailing bytes after a batch");
	return 0;
}

/* Format 1 stored values whole, in files this version cannot read; such a
 * store is refused rather than half understood. */
static int wrong_format(const char *path, unsigned int version)
{
	if (version < FS_FORMAT_VERSION)
		log_msg(NLOG_ERROR, "store",
			"%s has format version %u, written by an older nadbfs; this nadbfs "
			"reads format %u only: make a backup with the older nadbfs (nadbctl "
			"backup create) and restore it into a new data directory",
			path, version, FS_FORMAT_VERSION);
	else
		log_msg(NLOG_ERROR, "store", "%s has format version %u; this nadbfs reads %u",
			path, version, FS_FORMAT_VERSION);
	return -EIO;
}

static int journal_rec(uint8_t type, const uint8_t *p, size_t len, void *arg)
{
	struct replay *r = arg;

	if (!r->have_header) {
		if (type != FS_REC_JHEADER || len != JHEADER_LEN || memcmp(p, jmagic, 8) != 0)
			return corrupt(r->path, "not a journal");
		if (get_le(p + 8, 4) != FS_FORMAT_VERSION) {
			return wrong_format(r->path, (unsigned int)get_le(p + 8, 4));
		}
		if (get_le(p + 12, 8) != r->gen)
			return corrupt(r->path, "generation does not match the file name");
		r->have_header = true;
		return 0;
	}
	if (type != FS_REC_BATCH)
		return corrupt(r->path, "unexpected record type in a journal");
	return apply_batch(r, p, len);
}

static void jname(char *buf, size_t len, uint64_t gen)
{
	snprintf(buf, len, "journal.%" PRIu64, gen);
}

/* Replays journal.<gen> into r; repair: truncate a torn tail. */
static int replay_journal(struct replay *r, uint64_t gen, bool repair)
{
	char name[32], *path;
	int ret;

	jname(name, sizeof(name), gen);
	if (asprintf(&path, "%s/meta/%s", r->fs->path, name) < 0)
		return -ENOMEM;
	r->path = path;
	r->gen = gen;
	r->have_header = false;
	ret = journal_replay(r->fs->metafd, name, path, repair, journal_rec, r, NULL);
	r->path = NULL;
	free(path);
	return ret;
}

/* --- Snapshots --- */

struct snap_hdr {
	uint64_t gen, max_id, max_vver;
};

static int parse_shdr(const char *path, const uint8_t *p, size_t len, struct snap_hdr *h)
{
	if (len != SHEADER_LEN || memcmp(p, smagic, 8) != 0)
		return corrupt(path, "not a snapshot");
	if (get_le(p + 8, 4) != FS_FORMAT_VERSION) {
		return wrong_format(path, (unsigned int)get_le(p + 8, 4));
	}
	h->gen = get_le(p + 12, 8);
	h->max_id = get_le(p + 20, 8);
	h->max_vver = get_le(p + 28, 8);
	if (h->gen == 0)
		return corrupt(path, "generation 0");
	return 0;
}

struct snap_writer {
	int fd;
	uint8_t *buf;	/* records not yet framed */
	size_t len, cap;
	uint64_t count, bytes;
};

static int sw_frame(struct snap_writer *w, uint8_t type, const void *p, size_t len)
{
	uint8_t hdr[JOURNAL_HDR_SIZE];
	int ret;

	journal_frame(hdr, type, p, len);
	/* The file is new (O_TRUNC) and written in order: bytes is the offset. */
	ret = kv_fs_pwrite_all(w->fd, hdr, sizeof(hdr), w->bytes);
	if (!ret && len)
		ret = kv_fs_pwrite_all(w->fd, p, len, w->bytes + sizeof(hdr));
	if (!ret)
		w->bytes += sizeof(hdr) + len;
	return ret;
}

static int sw_flush(struct snap_writer *w)
{
	int ret = 0;

	if (w->len)
		ret = sw_frame(w, FS_REC_SRECORDS, w->buf, w->len);
	w->len = 0;
	return ret;
}

/* Adds one encoded record (raw) or one record to encode (m). */
static int sw_add(struct snap_writer *w, const uint8_t *raw, size_t rawlen,
		  const struct kv_meta *m)
{
	int ret;

	if (m) {
		ret = kv_meta_encode(m, &w->buf, &w->len, &w->cap);
	} else {
		if (w->cap - w->len < rawlen) {
			size_t cap = w->cap ? w->cap : 2 * SNAP_CHUNK;
			uint8_t *p;

			while (cap - w->len < rawlen)
				cap *= 2;
			p = realloc(w->buf, cap);
			if (!p)
				return -ENOMEM;
			w->buf = p;
			w->cap = cap;
		}
		memcpy(w->buf + w->len, raw, rawlen);
		w->len += rawlen;
		ret = 0;
	}
	if (ret)
		return ret;
	w->count++;
	return w->len >= SNAP_CHUNK ? sw_flush(w) : 0;
}

/* Reading a snapshot: either to load it (fn) or to copy it (w), skipping
 * the records the journals override (r->map). */
struct snap_read {
	struct replay *r;
	const char *path;
	int state;		/* 0: header next, 1: records or end, 2: after the end */
	struct snap_hdr hdr;
	bool header_only;
	uint64_t count;
	kv_load_fn fn;
	void *arg;
	struct kv_fs_live **live;
	size_t *nlive, *live_cap;
	struct snap_writer *w;
};

static int add_live(struct snap_read *s, const struct kv_meta *m)
{
	if (!s->live || !m->vver)
		return 0;
	if (*s->nlive == *s->live_cap) {
		size_t cap = *s->live_cap ? 2 * *s->live_cap : 1024;
		struct kv_fs_live *p = realloc(*s->live, cap * sizeof(*p));

		if (!p)
			return -ENOMEM;
		*s->live = p;
		*s->live_cap = cap;
	}
	(*s->live)[(*s->nlive)++] = (struct kv_fs_live){ m->id, m->vver };
	return 0;
}

static int snap_records(struct snap_read *s, const uint8_t *p, size_t len)
{
	size_t off = 0;
	int ret = 0;

	while (off < len && !ret) {
		struct kv_meta m;
		size_t used;

		ret = kv_meta_decode(p + off, len - off, &m, &used);
		if (ret == -EINVAL)
			return corrupt(s->path, "malformed record");
		if (ret)
			return ret;
		s->count++;
		seen_id(s->r, m.id, m.vver);
		if (!map_find(s->r, m.id)) {
			if (s->w)
				ret = sw_add(s->w, p + off, used, NULL);
			else
				ret = s->fn(&m, s->arg);
			if (!ret)
				ret = add_live(s, &m);
		}
		kv_meta_clear(&m);
		off += used;
	}
	return ret;
}

/* Positive: the header-only pass is done. */
#define SNAP_STOP 1

static int snap_rec(uint8_t type, const uint8_t *p, size_t len, void *arg)
{
	struct snap_read *s = arg;
	int ret;

	if (s->state == 0) {
		if (type != FS_REC_SHEADER)
			return corrupt(s->path, "not a snapshot");
		ret = parse_shdr(s->path, p, len, &s->hdr);
		s->state = 1;
		return ret ? ret : s->header_only ? SNAP_STOP : 0;
	}
	if (s->state == 2)
		return corrupt(s->path, "data after the end record");
	if (type == FS_REC_SRECORDS)
		return snap_records(s, p, len);
	if (type != FS_REC_SEND || len != 8)
		return corrupt(s->path, "unexpected record type in a snapshot");
	if (get_le(p, 8) != s->count)
		return corrupt(s->path, "record count does not match");
	s->state = 2;
	return 0;
}

/* Scans a mapped snapshot through s; it must be complete. */
static int snap_scan(struct snap_read *s, const uint8_t *data, size_t size)
{
	uint64_t end;
	int ret;

	ret = journal_scan(data, size, true, s->path, snap_rec, s, &end);
	if (ret == SNAP_STOP)
		return 0;
	if (!ret && s->state != 2)
		return corrupt(s->path, "no end record");
	return ret;
}

/* --- Generations and compaction --- */

static void remove_journal(struct kv_fs *fs, uint64_t gen)
{
	char name[32];

	jname(name, sizeof(name), gen);
	if (unlinkat(fs->metafd, name, 0) && errno != ENOENT)
		log_msg(NLOG_WARN, "store", "cannot remove %s/meta/%s: %s", fs->path, name,
			strerror(errno));
}

/* Opens journal.<gen> for appends, creating it with its header if needed. */
static int open_journal(struct kv_fs *fs, uint64_t gen, bool create, struct journal **out)
{
	uint8_t hdr[JHEADER_LEN];
	char name[32], *path;
	struct journal *j;
	int ret;

	jname(name, sizeof(name), gen);
	if (asprintf(&path, "%s/meta/%s", fs->path, name) < 0)
		return -ENOMEM;
	ret = journal_open(fs->metafd, name, path, create, &j);
	free(path);
	if (ret)
		return ret;
	if (journal_size(j) == 0) {
		memcpy(hdr, jmagic, 8);
		put_le(hdr + 8, FS_FORMAT_VERSION, 4);
		put_le(hdr + 12, gen, 8);
		ret = journal_append(j, FS_REC_JHEADER, hdr, sizeof(hdr));
		/* The new name must be durable before any commit relies on it. */
		if (!ret && fsync(fs->metafd))
			ret = -errno;
		if (ret) {
			journal_close(j);
			if (create)
				unlinkat(fs->metafd, name, 0);
			return ret;
		}
	}
	*out = j;
	return 0;
}

/* Step 1: new commits go to journal.<cur_gen + 1>. */
static int rotate(struct kv_fs *fs)
{
	struct journal *j;
	int ret;

	ret = open_journal(fs, fs->cur_gen + 1, true, &j);
	if (ret)
		return ret;
	journal_close(fs->j);
	fs->j = j;
	fs->cur_gen++;
	return 0;
}

/*
 * Steps 2-4: snapshot := old snapshot + r (journals snap_gen+1..upto), then
 * drop those journals.
 */
static int write_snapshot(struct kv_fs *fs, struct replay *r, uint64_t upto)
{
	struct snap_writer w = { .fd = -1 };
	struct snap_read s = { .r = r, .w = &w };
	uint8_t hdr[SHEADER_LEN], end[8];
	const uint8_t *data = NULL;
	size_t size = 0;
	struct jent *e;
	char *path = NULL;
	int ret;

	if (asprintf(&path, "%s/meta/snapshot", fs->path) < 0)
		return -ENOMEM;
	s.path = path;
	if (fs->snap_gen) {
		ret = journal_map(fs->metafd, "snapshot", &data, &size);
		if (ret)
			goto out_free;
	}
	w.fd = openat(fs->metafd, "snapshot.tmp", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (w.fd < 0) {
		ret = -errno;
		goto out_unmap;
	}

	memcpy(hdr, smagic, 8);
	put_le(hdr + 8, FS_FORMAT_VERSION, 4);
	put_le(hdr + 12, upto, 8);
	put_le(hdr + 20, fs->max_id > r->max_id ? fs->max_id : r->max_id, 8);
	put_le(hdr + 28, fs->next_vver - 1 > r->max_vver ? fs->next_vver - 1 : r->max_vver, 8);
	ret = sw_frame(&w, FS_REC_SHEADER, hdr, sizeof(hdr));
	if (!ret && data)
		ret = snap_scan(&s, data, size);
	for (size_t pos = 0; !ret && (e = htab_next(&r->map, &pos));)
		if (!e->dead)
			ret = sw_add(&w, NULL, 0, &e->m);
	if (!ret)
		ret = sw_flush(&w);
	put_le(end, w.count, 8);
	if (!ret)
		ret = sw_frame(&w, FS_REC_SEND, end, sizeof(end));
	if (!ret && fsync(w.fd))
		ret = -errno;
	if (close(w.fd) && !ret)
		ret = -errno;
	if (!ret && renameat(fs->metafd, "snapshot.tmp", fs->metafd, "snapshot"))
		ret = -errno;
	if (!ret && fsync(fs->metafd))
		ret = -errno;
	if (ret) {
		unlinkat(fs->metafd, "snapshot.tmp", 0);
		goto out_unmap;
	}

	for (uint64_t g = fs->snap_gen + 1; g <= upto; g++)
		remove_journal(fs, g);
	fs->snap_gen = upto;
	fs->snap_size = w.bytes;
out_unmap:
	journal_unmap(data, size);
out_free:
	free(w.buf);
	free(path);
	return ret;
}

int kv_fs_compact(struct kv_fs *fs)
{
	uint64_t upto = fs->cur_gen;
	struct replay r;
	int ret;

	ret = rotate(fs);
	if (ret) {
		/* Not again at every commit: the journal still works. */
		fs->compact_hold = journal_size(fs->j) + compact_limit(fs);
		log_msg(NLOG_ERROR, "store", "cannot start a new journal in %s/meta: %s", fs->path,
			strerror(-ret));
		return ret;
	}
	replay_init(&r, fs);
	for (uint64_t g = fs->snap_gen + 1; g <= upto && !ret; g++)
		ret = replay_journal(&r, g, false);
	if (!ret)
		ret = write_snapshot(fs, &r, upto);
	replay_destroy(&r);
	if (ret)
		log_msg(NLOG_ERROR, "store", "cannot compact the journal of %s: %s", fs->path,
			strerror(-ret));
	return ret;
}

/* --- Loading --- */

static int cmp_live(const void *a, const void *b)
{
	const struct kv_fs_live *x = a, *y = b;

	return x->id < y->id ? -1 : x->id > y->id;
}

int kv_fs_load(struct kv_backend *b, kv_load_fn fn, void *arg, uint64_t *max_id)
{
	struct kv_fs *fs = (struct kv_fs *)b;
	struct kv_fs_live *live = NULL;
	size_t nlive = 0, live_cap = 0, ngens = 0, size = 0;
	struct snap_read s = { .fn = fn, .arg = arg, .live = &live, .nlive = &nlive,
			       .live_cap = &live_cap };
	const uint8_t *data = NULL;
	uint64_t *gens = NULL, first;
	bool snapshot, many;
	struct replay r;
	struct jent *e;
	char *spath = NULL;
	int ret;

	if (fs->loaded)
		return -EINVAL;
	replay_init(&r, fs);
	s.r = &r;
	ret = kv_fs_list_meta(fs, &snapshot, &gens, &ngens);
	if (ret) {
		log_msg(NLOG_ERROR, "store", "cannot list %s/meta: %s", fs->path, strerror(-ret));
		goto out_free;
	}
	if (asprintf(&spath, "%s/meta/snapshot", fs->path) < 0) {
		spath = NULL;
		ret = -ENOMEM;
		goto out_free;
	}
	s.path = spath;

	if (snapshot) {
		ret = journal_map(fs->metafd, "snapshot", &data, &size);
		if (ret) {
			log_msg(NLOG_ERROR, "store", "cannot read %s: %s", spath, strerror(-ret));
			goto out_free;
		}
		s.header_only = true;
		ret = snap_scan(&s, data, size);
		if (ret)
			goto out_unmap;
		s.header_only = false;
		s.state = 0;
		fs->snap_gen = s.hdr.gen;
		fs->snap_size = size;
		seen_id(&r, s.hdr.max_id, s.hdr.max_vver);
	}

	/* Journals the snapshot includes are leftovers of step 4; they are
	 * removed once the snapshot has been read in full. */
	first = 0;
	while (first < ngens && gens[first] <= fs->snap_gen)
		first++;
	for (size_t i = first; i < ngens; i++) {
		if (gens[i] != fs->snap_gen + 1 + (i - first)) {
			log_msg(NLOG_ERROR, "store", "%s/meta/journal.%" PRIu64 " is missing",
				fs->path, fs->snap_gen + 1 + (i - first));
			ret = -EIO;
			goto out_unmap;
		}
		ret = replay_journal(&r, gens[i], true);
		if (ret)
			goto out_unmap;
	}

	if (data) {
		ret = snap_scan(&s, data, size);
		if (ret)
			goto out_unmap;
	}
	for (size_t pos = 0; (e = htab_next(&r.map, &pos));) {
		if (e->dead)
			continue;
		ret = fn(&e->m, arg);
		if (!ret)
			ret = add_live(&s, &e->m);
		if (ret)
			goto out_unmap;
	}
	journal_unmap(data, size);
	data = NULL;

	fs->max_id = r.max_id;
	fs->next_vver = r.max_vver + 1;
	fs->cur_gen = first < ngens ? gens[ngens - 1] : fs->snap_gen + 1;
	ret = open_journal(fs, fs->cur_gen, first == ngens, &fs->j);
	if (ret) {
		log_msg(NLOG_ERROR, "store", "cannot open the journal of %s: %s", fs->path,
			strerror(-ret));
		goto out_free;
	}
	fs->loaded = true;

	for (size_t i = 0; i < first; i++)
		remove_journal(fs, gens[i]);
	if (nlive)
		qsort(live, nlive, sizeof(*live), cmp_live);
	kv_fs_value_sweep(fs, live, nlive);

	/* Fold what a crash mid-compaction or a long run left behind. */
	many = ngens - first > 1;
	if (many || kv_fs_should_compact(fs)) {
		uint64_t upto = fs->cur_gen;
		int cret = rotate(fs);

		if (!cret)
			cret = write_snapshot(fs, &r, upto);
		if (cret)
			log_msg(NLOG_WARN, "store", "cannot compact the journal of %s at open: %s",
				fs->path, strerror(-cret));
	}
	*max_id = fs->max_id;
	goto out_free;

out_unmap:
	journal_unmap(data, size);
out_free:
	replay_destroy(&r);
	free(live);
	free(gens);
	free(spath);
	return ret;
}
