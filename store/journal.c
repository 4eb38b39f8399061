/*
 * Checksummed record files: scanning with torn-tail recovery, and durable
 * appends that never leave half a record behind. See journal.h.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#define XXH_STATIC_LINKING_ONLY /* XXH32_state_t on the stack */
#include <xxhash.h>

#include "store/journal.h"
#include "util/log.h"

struct journal {
	int fd;
	uint64_t end;	/* where the next record goes: the end of the last complete one */
	bool broken;	/* a failed append could not be undone */
	char *path;	/* for messages */
};

static uint32_t get_le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void put_le32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
	p[2] = (uint8_t)(v >> 16);
	p[3] = (uint8_t)(v >> 24);
}

static uint32_t frame_sum(uint8_t type, const void *payload, size_t len)
{
	XXH32_state_t st;

	XXH32_reset(&st, 0);
	XXH32_update(&st, &type, 1);
	if (len)
		XXH32_update(&st, payload, len);
	return XXH32_digest(&st);
}

void journal_frame(uint8_t hdr[JOURNAL_HDR_SIZE], uint8_t type, const void *payload, size_t len)
{
	put_le32(hdr, (uint32_t)len);
	put_le32(hdr + 4, frame_sum(type, payload, len));
	hdr[8] = type;
}

static bool all_zero(const uint8_t *p, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (p[i])
			return false;
	return true;
}

int journal_scan(const uint8_t *data, size_t size, bool strict, const char *path, journal_fn fn,
		 void *arg, uint64_t *end)
{
	size_t off = 0;
	int ret;

	while (off < size) {
		size_t rem = size - off;
		const uint8_t *h = data + off;
		uint32_t len;
		bool bad;

		if (rem < JOURNAL_HDR_SIZE)
			goto torn;
		len = get_le32(h);
		if (len > rem - JOURNAL_HDR_SIZE)
			goto torn;
		bad = h[8] == 0 || get_le32(h + 4) != frame_sum(h[8], h + JOURNAL_HDR_SIZE, len);
		if (bad) {
			/* Only the last append can be torn, and a file may
			 * reach the disk longer than its data (zeros). */
			if (JOURNAL_HDR_SIZE + (size_t)len == rem || all_zero(h, rem))
				goto torn;
			log_msg(NLOG_ERROR, "store",
				"%s is corrupt: bad record at offset %zu followed by %zu "
				"more bytes",
				path, off, rem - JOURNAL_HDR_SIZE - len);
			return -EIO;
		}
		ret = fn(h[8], h + JOURNAL_HDR_SIZE, len, arg);
		if (ret)
			return ret;
		off += JOURNAL_HDR_SIZE + (size_t)len;
	}
	*end = off;
	return 0;

torn:
	if (strict) {
		log_msg(NLOG_ERROR, "store", "%s is corrupt: incomplete record at offset %zu", path,
			off);
		return -EIO;
	}
	*end = off;
	return 0;
}

int journal_map(int dirfd, const char *name, const uint8_t **data, size_t *size)
{
	struct stat st;
	void *p;
	int fd, ret = 0;

	*data = NULL;
	*size = 0;
	fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (fstat(fd, &st)) {
		ret = -errno;
		goto out_close;
	}
	*size = (size_t)st.st_size;
	if (st.st_size == 0)
		goto out_close;
	p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
	if (p == MAP_FAILED) {
		ret = -errno;
		goto out_close;
	}
	madvise(p, (size_t)st.st_size, MADV_SEQUENTIAL);
	*data = p;
out_close:
	close(fd);
	return ret;
}

void journal_unmap(const uint8_t *data, size_t size)
{
	if (data)
		munmap((void *)data, size);
}

/* Cuts fd back to len and makes that durable. */
static int cut(int fd, uint64_t len)
{
	if (ftruncate(fd, (off_t)len) || fdatasync(fd))
		return -errno;
	return 0;
}

int journal_replay(int dirfd, const char *name, const char *path, bool repair, journal_fn fn,
		   void *arg, uint64_t *end)
{
	const uint8_t *data;
	uint64_t valid = 0;
	size_t size;
	int ret, fd;

	ret = journal_map(dirfd, name, &data, &size);
	if (ret) {
		log_msg(NLOG_ERROR, "store", "cannot read %s: %s", path, strerror(-ret));
		return ret;
	}
	ret = journal_scan(data, size, false, path, fn, arg, &valid);
	journal_unmap(data, size);
	if (ret)
		return ret;

	if (valid < size) {
		NLOG(NLOG_WARN, "store",
		     repair ? "journal has a torn tail; truncated to the last complete record"
			    : "journal has a torn tail; ignored",
		     LF_STR("file", path), LF_INT("offset", valid),
		     LF_INT("dropped_bytes", size - valid));
		if (repair) {
			fd = openat(dirfd, name, O_WRONLY | O_CLOEXEC);
			ret = fd < 0 ? -errno : cut(fd, valid);
			if (fd >= 0)
				close(fd);
			if (ret) {
				log_msg(NLOG_ERROR, "store",
					"cannot truncate the torn tail of %s: %s", path,
					strerror(-ret));
				return ret;
			}
		}
	}
	if (end)
		*end = valid;
	return 0;
}

int journal_open(int dirfd, const char *name, const char *path, bool create,
		 struct journal **out)
{
	struct journal *j;
	struct stat st;
	int ret;

	j = calloc(1, sizeof(*j));
	if (!j)
		return -ENOMEM;
	j->path = strdup(path);
	if (!j->path) {
		ret = -ENOMEM;
		goto out_free;
	}
	j->fd = openat(dirfd, name, O_RDWR | O_CLOEXEC | (create ? O_CREAT | O_EXCL : 0), 0600);
	if (j->fd < 0) {
		ret = -errno;
		log_msg(NLOG_ERROR, "store", "cannot open %s: %s", path, strerror(-ret));
		goto out_free_path;
	}
	if (fstat(j->fd, &st)) {
		ret = -errno;
		goto out_close;
	}
	j->end = (uint64_t)st.st_size;
	*out = j;
	return 0;

out_close:
	close(j->fd);
out_free_path:
	free(j->path);
out_free:
	free(j);
	return ret;
}

int journal_append(struct journal *j, uint8_t type, const void *payload, size_t len)
{
	uint8_t hdr[JOURNAL_HDR_SIZE];
	struct iovec iov[2];
	size_t total = JOURNAL_HDR_SIZE + len, done = 0;
	int ret = 0, cret;

	if (journal_repair(j))
		return -EIO;
	if (type == 0 || len > JOURNAL_REC_MAX)
		return -EINVAL;
	journal_frame(hdr, type, payload, len);

	while (done < total) {
		ssize_t n;
		int cnt = 0;

		if (done < JOURNAL_HDR_SIZE) {
			iov[cnt].iov_base = hdr + done;
			iov[cnt++].iov_len = JOURNAL_HDR_SIZE - done;
			if (len) {
				iov[cnt].iov_base = (void *)payload;
				iov[cnt++].iov_len = len;
			}
		} else {
			iov[cnt].iov_base = (uint8_t *)payload + (done - JOURNAL_HDR_SIZE);
			iov[cnt++].iov_len = total - done;
		}
		n = pwritev(j->fd, iov, cnt, (off_t)(j->end + done));
		if (n < 0) {
			if (errno == EINTR)
				continue;
			ret = -errno;
			break;
		}
		if (n == 0) {
			ret = -EIO;
			break;
		}
		done += (size_t)n;
	}
	if (!ret && fdatasync(j->fd))
		ret = -errno;
	if (!ret) {
		j->end += total;
		return 0;
	}

	log_msg(NLOG_ERROR, "store", "cannot append to %s: %s", j->path, strerror(-ret));
	/* Whatever part of the record reached the file must go, or a later
	 * replay could find it complete and apply a commit reported failed. */
	cret = cut(j->fd, j->end);
	if (cret) {
		j->broken = true;
		log_msg(NLOG_ERROR, "store",
			"cannot undo a failed append to %s: %s; refusing further commits", j->path,
			strerror(-cret));
	}
	return ret;
}

uint64_t journal_size(const struct journal *j)
{
	return j->end;
}

bool journal_broken(const struct journal *j)
{
	return j->broken;
}

int journal_repair(struct journal *j)
{
	/* The failed undo may work now (EIO and ENOSPC pass): retry it, so the
	 * store recovers by itself once the disk does. j->end is the last
	 * good end, whatever the failed append left after it. */
	if (!j->broken)
		return 0;
	if (cut(j->fd, j->end))
		return -EIO;
	j->broken = false;
	log_msg(NLOG_INFO, "store", "%s: the failed append is undone; commits resume", j->path);
	return 0;
}

void journal_close(struct journal *j)
{
	if (!j)
		return;
	close(j->fd);
	free(j->path);
	free(j);
}
