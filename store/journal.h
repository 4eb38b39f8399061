/*
 * Checksummed record files, private to the filesystem backend: the metadata
 * journal (append-only, one fdatasync per record) and the snapshot (written
 * whole, then renamed) share this framing:
 *
 *	u32 length of payload (little-endian)
 *	u32 XXH32 of the type byte followed by the payload (little-endian)
 *	u8  type (never 0)
 *	payload
 *
 * Reading tolerates a torn tail only where a crash can leave one: a last
 * record that is incomplete or fails its checksum while reaching the end of
 * the file, or a tail of zeros (a file whose size reached the disk before its
 * data). A bad record with valid-looking data after it is corruption: -EIO.
 *
 * Locking: a struct journal is used by one thread at a time (the flusher).
 * Return convention: 0 or a negative errno.
 */
#ifndef NADB_STORE_JOURNAL_H
#define NADB_STORE_JOURNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define JOURNAL_HDR_SIZE 9u
/* Larger records are refused on append; reading needs no limit because a
 * record must fit in the file it is read from. */
#define JOURNAL_REC_MAX (1u << 30)

/* Called per valid record; a non-zero return stops the scan and is returned. */
typedef int (*journal_fn)(uint8_t type, const uint8_t *payload, size_t len, void *arg);

/*
 * Scans the records in data[0..size). Strict: any flaw is -EIO. Otherwise a
 * torn tail ends the scan: *end is where the complete records end (== size
 * when there is none). path names the file in messages.
 */
int journal_scan(const uint8_t *data, size_t size, bool strict, const char *path, journal_fn fn,
		 void *arg, uint64_t *end);

/*
 * Replays the file name (relative to dirfd; path for messages) through fn.
 * A torn tail is logged as a warning and, with repair, truncated away durably.
 * *end (may be NULL) receives the size of the valid part.
 */
int journal_replay(int dirfd, const char *name, const char *path, bool repair, journal_fn fn,
		   void *arg, uint64_t *end);

/* Maps a whole file read-only; *data is NULL for an empty file. */
int journal_map(int dirfd, const char *name, const uint8_t **data, size_t *size);
void journal_unmap(const uint8_t *data, size_t size);

/* Fills the header for a record (for writers that batch many records). */
void journal_frame(uint8_t hdr[JOURNAL_HDR_SIZE], uint8_t type, const void *payload, size_t len);

struct journal;

/*
 * Opens name for appending at its current end (which must hold only complete
 * records: replay it first). create: the file must not exist yet.
 */
int journal_open(int dirfd, const char *name, const char *path, bool create,
		 struct journal **out);
/*
 * Appends one record and fdatasyncs. On failure the file is cut back to its
 * previous end so the record can never replay; if even that fails the
 * journal is broken: every later append first retries that undo
 * (journal_repair) and returns -EIO while it still fails.
 */
int journal_append(struct journal *j, uint8_t type, const void *payload, size_t len);
uint64_t journal_size(const struct journal *j);
bool journal_broken(const struct journal *j);
/* Retries a broken journal's undo: 0 when it is whole again (or was), -EIO. */
int journal_repair(struct journal *j);
/* NULL is fine. */
void journal_close(struct journal *j);

#endif
