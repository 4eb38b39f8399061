/*
 * The filesystem backend: opening a store's directory (layout and lock),
 * commits, statfs. Loading, snapshots and compaction are in
 * backend_fs_meta.c, value files in backend_fs_value.c; backend_fs.h has the
 * layout.
 *
 * A commit is made atomic by a single journal record: value files are
 * written under fresh names first (durably, but invisible to any reader
 * until a record names them; only the chunks that changed since the version
 * the record names now), then one record carrying every op of the batch
 * is appended and fdatasync'ed. A crash before that append leaves only
 * unreferenced files, which the next open deletes; after it, the whole batch
 * replays. Obsolete value files are deleted only after the append.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include <zstd.h>

#include "store/backend_fs.h"
#include "store/journal.h"
#include "util/log.h"

static const struct kv_backend_ops fs_ops;

/*
 * One path component for a store identity: bytes outside [A-Za-z0-9_-] become
 * %XX, so '%', '.', '/' and ':' never appear raw, the mapping is injective
 * (db "x:y" + ns "z" and db "x" + ns "y:z" differ), and no identity can
 * name "..", "." or another directory.
 */
static int encode_ident(const char *s, char *out, size_t outlen)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t o = 0;

	if (!*s)
		return -EINVAL;
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		bool plain = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
			     (*p >= '0' && *p <= '9') || *p == '_' || *p == '-';

		if (o + (plain ? 1 : 3) >= outlen)
			return -ENAMETOOLONG;
		if (plain) {
			out[o++] = (char)*p;
		} else {
			out[o++] = '%';
			out[o++] = hex[*p >> 4];
			out[o++] = hex[*p & 15];
		}
	}
	out[o] = '\0';
	return 0;
}

static int fsync_fd_dir(int fd)
{
	return fsync(fd) ? -errno : 0;
}

/* Opens the directory name below parent, creating it (and making the new
 * entry durable) if needed. Returns the fd or a negative errno. */
static int open_subdir(int parent, const char *name)
{
	int fd, ret;

	if (mkdirat(parent, name, 0700) == 0) {
		ret = fsync_fd_dir(parent);
		if (ret)
			return ret;
	} else if (errno != EEXIST) {
		return -errno;
	}
	/* Inside the data directory nothing we made is a symlink. */
	fd = openat(parent, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	return fd < 0 ? -errno : fd;
}

/* mkdir -p for the data directory itself, fsyncing each parent it changes. */
static int make_data_dir(const char *dir)
{
	char *p = strdup(dir), *s;
	int ret = 0;

	if (!p)
		return -ENOMEM;
	for (s = p + 1;; s++) {
		bool last = *s == '\0';

		if (*s != '/' && !last)
			continue;
		*s = '\0';
		if (mkdir(p, 0700) == 0) {
			char *slash = strrchr(p, '/');
			int pfd;

			if (slash == p)
				pfd = open("/", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
			else if (slash) {
				*slash = '\0';
				pfd = open(p, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
				*slash = '/';
			} else {
				pfd = open(".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
			}
			if (pfd >= 0) {
				ret = fsync_fd_dir(pfd);
				close(pfd);
			}
		} else if (errno != EEXIST) {
			ret = -errno;
		}
		if (ret || last)
			break;
		*s = '/';
	}
	free(p);
	return ret;
}

static int64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void format_secs(char *buf, size_t len, uint64_t ms)
{
	if (ms % 1000 == 0)
		snprintf(buf, len, "%llu", (unsigned long long)(ms / 1000));
	else
		snprintf(buf, len, "%.1f", (double)ms / 1000.0);
}

/*
 * Takes the store's lock, waiting up to timeout_ms for a previous daemon
 * (which may still be flushing after umount) to let go.
 */
static void write_pid(struct kv_fs *fs);

static int take_lock(struct kv_fs *fs, uint64_t timeout_ms, char *err, size_t errlen)
{
	int64_t deadline = mono_ms() + (int64_t)timeout_ms;
	int delay_ms = 5;
	char pid[32];
	ssize_t n;

	fs->lockfd = openat(fs->dirfd, "lock", O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fs->lockfd < 0) {
		snprintf(err, errlen, "cannot open the lock file in %s: %s", fs->path,
			 strerror(errno));
		return -errno;
	}
	while (flock(fs->lockfd, LOCK_EX | LOCK_NB)) {
		int64_t left = deadline - mono_ms();
		char secs[32];

		if (errno == EINTR)
			continue;
		if (errno != EWOULDBLOCK) {
			snprintf(err, errlen, "cannot lock %s/lock: %s", fs->path, strerror(errno));
			return -errno;
		}
		if (left <= 0) {
			n = pread(fs->lockfd, pid, sizeof(pid) - 1, 0);
			pid[n > 0 ? n : 0] = '\0';
			pid[strcspn(pid, "\n")] = '\0';
			format_secs(secs, sizeof(secs), timeout_ms);
			snprintf(err, errlen,
				 "data directory %s is in use by another nadbfs (pid %s); gave up "
				 "after %s s",
				 fs->data_dir, *pid ? pid : "unknown", secs);
			return -EBUSY;
		}
		usleep((useconds_t)(delay_ms < left ? delay_ms : left) * 1000);
		if (delay_ms < 200)
			delay_ms *= 2;
	}
	write_pid(fs);
	return 0;
}

/* For the message a waiting daemon prints; not needed for safety. */
static void write_pid(struct kv_fs *fs)
{
	char pid[32];
	int n = snprintf(pid, sizeof(pid), "%ld\n", (long)getpid());

	if (ftruncate(fs->lockfd, 0) || pwrite(fs->lockfd, pid, (size_t)n, 0) != n)
		log_msg(NLOG_WARN, "store", "cannot write our pid into %s/lock: %s", fs->path,
			strerror(errno));
}

/* The lock was taken before the daemon forked: name the process that holds
 * it now. */
static void fs_started(struct kv_backend *b)
{
	write_pid((struct kv_fs *)b);
}

static void fs_close(struct kv_backend *b)
{
	struct kv_fs *fs = (struct kv_fs *)b;

	if (!fs)
		return;
	journal_close(fs->j);
	ZSTD_freeCCtx(fs->cctx);
	free(fs->zbuf);
	free(fs->jbuf);
	for (int i = 0; i < 256; i++)
		if (fs->valdirs[i] >= 0)
			close(fs->valdirs[i]);
	if (fs->valfd >= 0)
		close(fs->valfd);
	if (fs->metafd >= 0)
		close(fs->metafd);
	/* Closing the lock file releases the lock, last. */
	if (fs->lockfd >= 0)
		close(fs->lockfd);
	if (fs->dirfd >= 0)
		close(fs->dirfd);
	free(fs->path);
	free(fs->data_dir);
	free(fs);
}

int kv_fs_open(const struct kv_backend_params *p, struct kv_backend **out, char *err,
	       size_t errlen)
{
	char edb[256], ens[256];
	struct kv_fs *fs;
	int ret, top, stores = -1, dbfd = -1;

	if (!p->data_dir || !*p->data_dir) {
		snprintf(err, errlen, "no data directory given");
		return -EINVAL;
	}
	ret = encode_ident(p->db ? p->db : "", edb, sizeof(edb));
	if (!ret)
		ret = encode_ident(p->ns ? p->ns : "", ens, sizeof(ens));
	if (ret) {
		snprintf(err, errlen, "invalid store name (db \"%s\", namespace \"%s\"): %s",
			 p->db ? p->db : "", p->ns ? p->ns : "",
			 ret == -EINVAL ? "empty" : "too long");
		return ret;
	}

	fs = calloc(1, sizeof(*fs));
	if (!fs)
		return -ENOMEM;
	fs->base.ops = &fs_ops;
	fs->dirfd = fs->metafd = fs->valfd = fs->lockfd = -1;
	for (int i = 0; i < 256; i++)
		fs->valdirs[i] = -1;
	fs->compression = p->compression;
	fs->compression_min_size = p->compression_min_size;
	fs->data_dir = strdup(p->data_dir);
	if (!fs->data_dir || asprintf(&fs->path, "%s/stores/%s/%s", p->data_dir, edb, ens) < 0) {
		fs->path = NULL;
		ret = -ENOMEM;
		goto out_close;
	}

	ret = make_data_dir(p->data_dir);
	if (ret) {
		snprintf(err, errlen, "cannot create data directory %s: %s", p->data_dir,
			 strerror(-ret));
		goto out_close;
	}
	top = open(p->data_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (top < 0) {
		ret = -errno;
		snprintf(err, errlen, "cannot open data directory %s: %s", p->data_dir,
			 strerror(-ret));
		goto out_close;
	}
	stores = open_subdir(top, "stores");
	close(top);
	dbfd = stores < 0 ? stores : open_subdir(stores, edb);
	fs->dirfd = dbfd < 0 ? dbfd : open_subdir(dbfd, ens);
	if (fs->dirfd < 0) {
		ret = fs->dirfd;
		snprintf(err, errlen, "cannot create %s: %s", fs->path, strerror(-ret));
		goto out_close_dirs;
	}

	ret = take_lock(fs, p->lock_timeout_ms, err, errlen);
	if (ret)
		goto out_close_dirs;

	fs->metafd = open_subdir(fs->dirfd, "meta");
	fs->valfd = fs->metafd < 0 ? fs->metafd : open_subdir(fs->dirfd, "values");
	if (fs->valfd < 0) {
		ret = fs->valfd;
		snprintf(err, errlen, "cannot create the directories of %s: %s", fs->path,
			 strerror(-ret));
		goto out_close_dirs;
	}
	if (stores >= 0)
		close(stores);
	if (dbfd >= 0)
		close(dbfd);
	*out = &fs->base;
	return 0;

out_close_dirs:
	if (stores >= 0)
		close(stores);
	if (dbfd >= 0)
		close(dbfd);
out_close:
	fs_close(&fs->base);
	return ret;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/* "journal.<N>", N decimal without sign or leading zeros, N >= 1. */
static bool parse_jname(const char *name, uint64_t *gen)
{
	const char *d = name + 8;
	uint64_t v = 0;

	if (strncmp(name, "journal.", 8) != 0 || *d < '1' || *d > '9')
		return false;
	for (; *d; d++) {
		if (*d < '0' || *d > '9' || v > (UINT64_MAX - 9) / 10)
			return false;
		v = v * 10 + (uint64_t)(*d - '0');
	}
	*gen = v;
	return true;
}

int kv_fs_list_meta(struct kv_fs *fs, bool *snapshot, uint64_t **gens, size_t *ngens)
{
	size_t n = 0, cap = 0;
	uint64_t *g = NULL, gen;
	struct dirent *de;
	DIR *d;
	int fd, ret = 0;

	*snapshot = false;
	fd = openat(fs->metafd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	d = fdopendir(fd);
	if (!d) {
		close(fd);
		return -errno;
	}
	while ((errno = 0, de = readdir(d))) {
		if (!strcmp(de->d_name, "snapshot")) {
			*snapshot = true;
		} else if (!strcmp(de->d_name, "snapshot.tmp")) {
			if (unlinkat(fs->metafd, de->d_name, 0) && errno != ENOENT)
				log_msg(NLOG_WARN, "store",
					"cannot remove %s/meta/snapshot.tmp: %s", fs->path,
					strerror(errno));
		} else if (parse_jname(de->d_name, &gen)) {
			if (n == cap) {
				uint64_t *p = realloc(g, (cap ? 2 * cap : 8) * sizeof(*g));

				if (!p) {
					ret = -ENOMEM;
					break;
				}
				g = p;
				cap = cap ? 2 * cap : 8;
			}
			g[n++] = gen;
		}
	}
	if (!ret && errno)
		ret = -errno;
	closedir(d);
	if (ret) {
		free(g);
		return ret;
	}
	if (n)
		qsort(g, n, sizeof(*g), cmp_u64);
	*gens = g;
	*ngens = n;
	return 0;
}

const char *kv_fs_store_path(const struct kv_backend *b)
{
	return ((const struct kv_fs *)b)->path;
}

static void put_le32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

/* Appends n bytes to the batch buffer. */
static int jbuf_put(struct kv_fs *fs, size_t *len, const void *data, size_t n)
{
	if (fs->jcap - *len < n) {
		size_t cap = fs->jcap ? fs->jcap : 4096;
		uint8_t *p;

		while (cap - *len < n)
			cap *= 2;
		p = realloc(fs->jbuf, cap);
		if (!p)
			return -ENOMEM;
		fs->jbuf = p;
		fs->jcap = cap;
	}
	memcpy(fs->jbuf + *len, data, n);
	*len += n;
	return 0;
}

/* The batch record: u32 count, then per op u8 type and the record or the id. */
static int encode_batch(struct kv_fs *fs, const struct kv_op *ops, size_t n, size_t *len)
{
	uint8_t word[8];
	int ret;

	*len = 0;
	put_le32(word, (uint32_t)n);
	ret = jbuf_put(fs, len, word, 4);
	for (size_t i = 0; i < n && !ret; i++) {
		uint8_t type = (uint8_t)ops[i].type;

		ret = jbuf_put(fs, len, &type, 1);
		if (ret)
			break;
		if (ops[i].type == KV_OP_PUT) {
			ret = kv_meta_encode(&ops[i].meta, &fs->jbuf, len, &fs->jcap);
		} else {
			for (int k = 0; k < 8; k++)
				word[k] = (uint8_t)(ops[i].meta.id >> (8 * k));
			ret = jbuf_put(fs, len, word, 8);
		}
	}
	return ret;
}

/* What commit changed in an op, to put back if the commit fails. */
struct op_undo {
	uint64_t vver, stored_size;
	uint8_t encoding;
	bool written;		/* value files were made for it */
	struct kv_fs_map map;	/* the new version's chunks */
};

static int check_ops(const struct kv_op *ops, size_t n)
{
	if (n > UINT32_MAX)
		return -EINVAL;
	for (size_t i = 0; i < n; i++) {
		const struct kv_op *op = &ops[i];

		if ((op->type != KV_OP_PUT && op->type != KV_OP_DEL) || op->meta.id == 0)
			return -EINVAL;
		if (op->type == KV_OP_PUT && op->value &&
		    kv_value_size(op->value) != op->meta.size) {
			log_msg(NLOG_ERROR, "store",
				"backend_fs: refusing a commit: id %llu has size %llu but "
				"its value has %llu bytes",
				(unsigned long long)op->meta.id, (unsigned long long)op->meta.size,
				(unsigned long long)kv_value_size(op->value));
			return -EINVAL;
		}
	}
	return 0;
}

/*
 * Makes the directory entries of new value files durable, each directory
 * once, and the entry of each values/XX itself the first time this process
 * writes there: one made here, by a commit that failed afterwards, or by a
 * daemon killed before it synced values/ may not be on disk yet.
 */
static int sync_value_dirs(struct kv_fs *fs, const struct kv_op *ops, const struct op_undo *u,
			   size_t n, bool new_dir)
{
	uint8_t seen[256 / 8] = { 0 };
	bool sync_parent = new_dir;
	int fd, ret = 0;

	for (size_t i = 0; i < n && !ret; i++) {
		unsigned int xx = (unsigned int)(ops[i].meta.id & 0xff);

		if (!u[i].written || (seen[xx / 8] & (1u << (xx % 8))))
			continue;
		seen[xx / 8] |= (uint8_t)(1u << (xx % 8));
		sync_parent |= !fs->valdir_durable[xx];
		fd = kv_fs_valdir(fs, xx, false, NULL);
		ret = fd < 0 ? fd : fsync_fd_dir(fd);
	}
	if (!ret && sync_parent) {
		ret = fsync_fd_dir(fs->valfd);
		for (unsigned int xx = 0; !ret && xx < 256; xx++)
			if (seen[xx / 8] & (1u << (xx % 8)))
				fs->valdir_durable[xx] = true;
	}
	if (ret)
		log_msg(NLOG_ERROR, "store", "cannot sync the value directories of %s: %s",
			fs->path, strerror(-ret));
	return ret;
}

static int fs_commit(struct kv_backend *b, struct kv_op *ops, size_t n)
{
	struct kv_fs *fs = (struct kv_fs *)b;
	struct op_undo *undo;
	bool new_dir = false;
	uint64_t max_id = fs->max_id;
	size_t len;
	int ret;

	if (!fs->loaded)
		return -EINVAL;
	if (journal_broken(fs->j) && journal_repair(fs->j))
		return -EIO;
	if (n == 0)
		return 0;
	ret = check_ops(ops, n);
	if (ret)
		return ret;
	undo = calloc(n, sizeof(*undo));
	if (!undo)
		return -ENOMEM;

	/* Saved whole first: a failure part-way restores every op. */
	for (size_t i = 0; i < n; i++) {
		undo[i].vver = ops[i].meta.vver;
		undo[i].stored_size = ops[i].meta.stored_size;
		undo[i].encoding = ops[i].meta.encoding;
		if (ops[i].meta.id > max_id)
			max_id = ops[i].meta.id;
	}
	for (size_t i = 0; i < n; i++) {
		struct kv_op *op = &ops[i];

		if (op->type != KV_OP_PUT || !op->value)
			continue;
		if (op->meta.size == 0) {
			op->meta.vver = 0;
			op->meta.stored_size = 0;
			op->meta.encoding = KV_ENC_NONE;
			continue;
		}
		op->meta.vver = fs->next_vver++;
		ret = kv_fs_value_write(fs, op->meta.id, undo[i].vver, op->meta.vver, op->value,
					&undo[i].map, &op->meta.stored_size, &op->meta.encoding,
					&new_dir);
		if (ret)
			goto out_undo;
		undo[i].written = true;
	}
	ret = sync_value_dirs(fs, ops, undo, n, new_dir);
	if (ret)
		goto out_undo;
	ret = encode_batch(fs, ops, n, &len);
	if (ret) {
		if (ret == -EINVAL)
			log_msg(NLOG_ERROR, "store", "backend_fs: refusing a commit with a "
				"malformed record (name, tags or xattrs out of bounds)");
		goto out_undo;
	}

	/* The commit point. */
	ret = journal_append(fs->j, FS_REC_BATCH, fs->jbuf, len);
	if (ret)
		goto out_undo;
	fs->max_id = max_id;

	/* The superseded versions, minus the chunks the new ones share. */
	for (size_t i = 0; i < n; i++) {
		const struct kv_op *op = &ops[i];

		if (op->old_vver && !(op->type == KV_OP_PUT && op->old_vver == op->meta.vver))
			kv_fs_value_drop(fs, op->meta.id, op->old_vver,
					 undo[i].written ? &undo[i].map : NULL);
		kv_fs_map_free(&undo[i].map);
	}
	free(undo);
	if (kv_fs_should_compact(fs))
		kv_fs_compact(fs);
	/* Large batches should not pin their buffer until the next one. */
	if (fs->jcap > (4u << 20)) {
		free(fs->jbuf);
		fs->jbuf = NULL;
		fs->jcap = 0;
	}
	return 0;

out_undo:
	for (size_t i = 0; i < n; i++) {
		if (undo[i].written)
			kv_fs_value_undo(fs, ops[i].meta.id, ops[i].meta.vver, &undo[i].map);
		kv_fs_map_free(&undo[i].map);
		ops[i].meta.vver = undo[i].vver;
		ops[i].meta.stored_size = undo[i].stored_size;
		ops[i].meta.encoding = undo[i].encoding;
	}
	free(undo);
	return ret;
}

static int fs_statfs(struct kv_backend *b, struct kv_backend_statfs *out)
{
	struct kv_fs *fs = (struct kv_fs *)b;
	struct statvfs sv;

	if (fstatvfs(fs->dirfd, &sv))
		return -errno;
	out->bsize = sv.f_frsize ? sv.f_frsize : sv.f_bsize;
	out->blocks = sv.f_blocks;
	out->bfree = sv.f_bfree;
	out->bavail = sv.f_bavail;
	return 0;
}

/* Versions kept while a backup read them: nothing names them any more, so a
 * crash before this only leaves files the next open's sweep removes. */
static int fs_reclaim(struct kv_backend *b, const uint64_t (*refs)[2], size_t n)
{
	struct kv_fs *fs = (struct kv_fs *)b;
	int ret = 0;

	for (size_t i = 0; i < n; i++) {
		int r = kv_fs_value_reclaim(fs, refs[i][0], refs[i][1]);

		if (r && !ret)
			ret = r;
	}
	return ret;
}

static const struct kv_backend_ops fs_ops = {
	.name = "fs",
	.caps = { .native_ttl = false, .shared = false, .local_reads = true },
	.close = fs_close,
	.load = kv_fs_load,
	.commit = fs_commit,
	.pread = kv_fs_pread,
	.read_value = kv_fs_read_value,
	.statfs = fs_statfs,
	.started = fs_started,
	.reclaim = fs_reclaim,
};
