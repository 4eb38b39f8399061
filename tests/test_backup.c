/*
 * Backups in the store, over the in-memory backend: a round trip of values,
 * tags, TTL, modes, owners, times, xattrs, empty directories and declared
 * tags; an incremental chain with deletions; a snapshot that writers racing
 * it cannot tear; value versions pinned during a backup and reclaimed after;
 * damaged archives refused with nothing changed; bad ids; two backups in one
 * second; prune keeping whole chains; index.json never left half-written
 * and a create failing at it leaving no archive behind (tests/fault_shim.c
 * fails its writes). Every file lives in a mkdtemp tree.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "store/backup.h"
#include "store/backup_int.h"
#include "store/kv_internal.h"
#include "tests/fault_shim.h"
#include "tests/mem_backend.h"
#include "tests/test_backup.h"


static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));

	snprintf(f->root, sizeof(f->root), "/tmp/nadbfs-bk-XXXXXX");
	assert_non_null(mkdtemp(f->root));
	snprintf(f->dir, sizeof(f->dir), "%s/backups", f->root);
	mem_store_open(&f->st, true);
	f->st.o.backup_dir = f->dir;
	mem_store_reopen(&f->st, true);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;
	char cmd[256];

	mem_store_close(&f->st);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->root);
	assert_int_equal(system(cmd), 0);
	free(f);
	return 0;
}

struct kv_store *KV(struct fx *f)
{
	return f->st.kv;
}

/* The id of path ("a/b"), or 0. */
uint64_t find(struct kv_store *kv, const char *path)
{
	char buf[1100], *save, *c;
	uint64_t id = KV_ROOT_ID;
	struct kv_attr a;

	snprintf(buf, sizeof(buf), "%s", path);
	for (c = strtok_r(buf, "/", &save); c; c = strtok_r(NULL, "/", &save)) {
		if (kv_lookup(kv, id, c, &a))
			return 0;
		id = a.id;
	}
	return id;
}

/* Writes path's value, making its directories. */
static uint64_t put(struct kv_store *kv, const char *path, const void *data, size_t len)
{
	char buf[1100], *slash;
	uint64_t dir = KV_ROOT_ID;
	struct kv_attr a;

	snprintf(buf, sizeof(buf), "%s", path);
	for (char *c = buf; (slash = strchr(c, '/')); c = slash + 1) {
		*slash = '\0';
		int ret = kv_mkdir(kv, dir, c, 0755, 0, 0, &a);

		if (ret == -EEXIST)
			assert_int_equal(kv_lookup(kv, dir, c, &a), 0);
		else
			assert_int_equal(ret, 0);
		dir = a.id;
		*slash = '/';
	}
	const char *name = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;

	assert_int_equal(kv_create(kv, dir, name, 0644, 0, 0, false, &a), 0);
	assert_int_equal(kv_open_file(kv, a.id, true), 0);
	assert_int_equal(kv_write(kv, a.id, data, len, 0), (ssize_t)len);
	kv_release_file(kv, a.id);
	return a.id;
}

void put_str(struct kv_store *kv, const char *path, const char *s)
{
	put(kv, path, s, strlen(s));
}

static void assert_value(struct kv_store *kv, const char *path, const void *want, size_t len)
{
	uint64_t id = find(kv, path);
	char *buf = malloc(len + 16);
	ssize_t n;

	if (!id)
		fail_msg("%s is missing", path);
	n = kv_read(kv, id, buf, len + 16, 0);
	if (n != (ssize_t)len || memcmp(buf, want, len))
		fail_msg("%s: got %zd bytes, want %zu", path, n, len);
	free(buf);
}

void assert_str(struct kv_store *kv, const char *path, const char *s)
{
	assert_value(kv, path, s, strlen(s));
}

/* The names in the backup directory, sorted, comma-separated ("" when it is missing). */
void dir_names(const char *dir, char *out, size_t len)
{
	struct dirent **ents;
	int n = scandir(dir, &ents, NULL, alphasort);

	out[0] = '\0';
	for (int i = 0; i < n; i++) {
		if (strcmp(ents[i]->d_name, ".") && strcmp(ents[i]->d_name, ".."))
			snprintf(out + strlen(out), len - strlen(out), "%s%s", out[0] ? "," : "",
				 ents[i]->d_name);
		free(ents[i]);
	}
	if (n >= 0)
		free(ents);
}

static void assert_xattr(struct kv_store *kv, const char *path, const char *name,
			 const char *want)
{
	char buf[256];
	ssize_t n = kv_getxattr(kv, find(kv, path), name, buf, sizeof(buf) - 1);

	if (n < 0)
		fail_msg("%s %s: %zd", path, name, n);
	buf[n] = '\0';
	assert_string_equal(buf, want);
}

static void set_xattr(struct kv_store *kv, const char *path, const char *name, const char *v)
{
	assert_int_equal(kv_setxattr(kv, find(kv, path), name, v, strlen(v), 0), 0);
}

static int64_t expires_of(struct kv_store *kv, const char *path)
{
	uint64_t id = find(kv, path);
	int64_t at;

	pthread_mutex_lock(&kv->lock);
	at = kv_node_expires(kv_node_get(kv, id));
	pthread_mutex_unlock(&kv->lock);
	return at;
}

static void test_round_trip(void **state)
{
	struct fx *f = *state;
	struct kv_store *kv = KV(f);
	struct kv_backup_info info;
	struct kv_setattr sa = { 0 };
	struct kv_attr a, dir_before;
	size_t big_len = 200000;
	char *big = malloc(big_len);
	uint64_t restored;
	int64_t deadline;

	for (size_t i = 0; i < big_len; i++)
		big[i] = (char)(i * 7 + 3);
	put(kv, "data/big", big, big_len);
	put_str(kv, "data/small", "hello");
	put_str(kv, "empty", "");
	assert_int_equal(kv_flush(kv), 0); /* these now live in the backend */
	put_str(kv, "buffered", "not flushed yet");
	set_xattr(kv, "data/small", "user.tags", "red,blue");
	set_xattr(kv, "data/small", "user.ttl", "3600");
	set_xattr(kv, "data/small", "user.comment", "from the importer");
	sa.mask = KV_SET_MODE | KV_SET_UID | KV_SET_GID | KV_SET_ATIME | KV_SET_MTIME;
	sa.mode = 0640;
	sa.uid = 1234;
	sa.gid = 5678;
	sa.atime_ns = 1000000000123;
	sa.mtime_ns = 2000000000456;
	assert_int_equal(kv_setattr(kv, find(kv, "data/small"), &sa, &a), 0);
	assert_int_equal(kv_mkdir(kv, KV_ROOT_ID, "hollow", 0700, 42, 43, &a), 0);
	assert_int_equal(kv_setxattr(kv, a.id, "user.note", "d", 1, 0), 0);
	assert_int_equal(kv_tag_mkdir(kv, "planned"), 0);
	assert_int_equal(kv_getattr(kv, find(kv, "hollow"), &dir_before), 0);
	deadline = expires_of(kv, "data/small");
	assert_true(deadline > 0);

	assert_int_equal(kv_backup_create(kv, "full", NULL, &info, f->err, sizeof(f->err)), 0);
	assert_string_equal(info.id, "full");
	assert_int_equal(info.keys, 4);
	assert_int_equal(kv_backup_verify(kv, "full", &info, f->err, sizeof(f->err)), 0);

	/* Change everything, then restore with --clear. */
	put_str(kv, "data/small", "changed");
	set_xattr(kv, "data/small", "user.tags", "green");
	assert_int_equal(kv_removexattr(kv, find(kv, "data/small"), "user.ttl"), 0);
	assert_int_equal(kv_removexattr(kv, find(kv, "data/small"), "user.comment"), 0);
	assert_int_equal(kv_unlink(kv, find(kv, "data"), "big"), 0);
	assert_int_equal(kv_unlink(kv, KV_ROOT_ID, "buffered"), 0);
	assert_int_equal(kv_rmdir(kv, KV_ROOT_ID, "hollow"), 0);
	assert_int_equal(kv_tag_rmdir(kv, "planned"), 0);
	put_str(kv, "extra/new", "not in the backup");
	assert_int_equal(kv_flush(kv), 0);

	assert_int_equal(kv_backup_restore(kv, "full", true, &restored, f->err, sizeof(f->err)),
			 0);
	assert_int_equal(restored, 4);
	assert_value(kv, "data/big", big, big_len);
	assert_str(kv, "data/small", "hello");
	assert_str(kv, "empty", "");
	assert_str(kv, "buffered", "not flushed yet");
	assert_int_equal(find(kv, "extra/new"), 0);
	assert_int_equal(find(kv, "extra"), 0);
	assert_xattr(kv, "data/small", "user.tags", "blue,red");
	assert_xattr(kv, "data/small", "user.comment", "from the importer");
	assert_int_equal(expires_of(kv, "data/small"), deadline);
	assert_int_equal(kv_getattr(kv, find(kv, "data/small"), &a), 0);
	assert_int_equal(a.mode & 07777, 0640);
	assert_int_equal(a.uid, 1234);
	assert_int_equal(a.gid, 5678);
	assert_int_equal(a.atime_ns, 1000000000123);
	assert_int_equal(a.mtime_ns, 2000000000456);
	assert_int_equal(kv_getattr(kv, find(kv, "hollow"), &a), 0);
	assert_int_equal(a.mode, S_IFDIR | 0700);
	assert_int_equal(a.uid, 42);
	assert_int_equal(a.mtime_ns, dir_before.mtime_ns);
	assert_xattr(kv, "hollow", "user.note", "d");
	assert_int_equal(kv_tag_dir(kv, "planned", &(bool){ false }), 0);
	assert_int_equal(kv_tag_dir(kv, "red", &(bool){ false }), 0);

	/* It all survives a flush and a reopen (it went through the store). */
	mem_store_reopen(&f->st, true);
	kv = KV(f);
	assert_value(kv, "data/big", big, big_len);
	assert_xattr(kv, "data/small", "user.tags", "blue,red");
	free(big);
}

static void test_incremental_chain(void **state)
{
	struct fx *f = *state;
	struct kv_store *kv = KV(f);
	struct kv_backup_info info, *list;
	uint64_t restored;
	size_t n;

	put_str(kv, "a", "1");
	put_str(kv, "b", "2");
	put_str(kv, "c", "3");
	put_str(kv, "dir/x", "x");
	assert_int_equal(kv_backup_create(kv, "base", NULL, &info, f->err, sizeof(f->err)), 0);
	assert_int_equal(kv_unlink(kv, KV_ROOT_ID, "b"), 0);
	put_str(kv, "c", "33");
	put_str(kv, "d", "4");
	assert_int_equal(kv_backup_create(kv, "inc1", "base", &info, f->err, sizeof(f->err)), 0);
	assert_string_equal(info.parent, "base");
	assert_int_equal(info.keys, 4);	   /* a c d dir/x */
	assert_int_equal(info.stored, 2);  /* c d */
	assert_int_equal(info.deleted, 1); /* b */
	assert_int_equal(kv_unlink(kv, KV_ROOT_ID, "a"), 0);
	assert_int_equal(kv_backup_create(kv, "inc2", "inc1", &info, f->err, sizeof(f->err)), 0);
	assert_int_equal(info.stored, 0);
	assert_int_equal(info.deleted, 1);

	/* Everything gone and b written again: inc1 brings a c d x, not b. */
	put_str(kv, "b", "again");
	assert_int_equal(kv_unlink(kv, KV_ROOT_ID, "c"), 0);
	assert_int_equal(kv_unlink(kv, KV_ROOT_ID, "d"), 0);
	assert_int_equal(kv_backup_restore(kv, "inc1", true, &restored, f->err, sizeof(f->err)),
			 0);
	assert_str(kv, "a", "1");
	assert_int_equal(find(kv, "b"), 0);
	assert_str(kv, "c", "33");
	assert_str(kv, "d", "4");
	assert_str(kv, "dir/x", "x");
	/* Without --clear, a key deleted in the chain is not brought back. */
	assert_int_equal(kv_backup_restore(kv, "inc2", false, &restored, f->err, sizeof(f->err)),
			 0);
	assert_str(kv, "a", "1"); /* left alone, not deleted */
	assert_int_equal(restored, 3);
	assert_int_equal(kv_backup_restore(kv, "inc2", true, &restored, f->err, sizeof(f->err)),
			 0);
	assert_int_equal(find(kv, "a"), 0);

	assert_int_equal(kv_backup_list(kv, &list, &n, f->err, sizeof(f->err)), 0);
	assert_int_equal(n, 3);
	assert_string_equal(list[0].id, "base");
	assert_string_equal(list[2].parent, "inc1");
	free(list);
	assert_int_equal(kv_backup_create(kv, "x", "nope", &info, f->err, sizeof(f->err)),
			 -ENOENT);
}

struct racer {
	struct kv_store *kv;
	uint64_t x, y;
	atomic_bool stop;
	unsigned rounds;
};

static void *race_writer(void *arg)
{
	struct racer *r = arg;
	char buf[32];

	/* x is always written before y: at any instant x == y or x == y + 1.
	 * In place, never truncated: the numbers only grow longer. */
	for (unsigned i = 1; !atomic_load(&r->stop) || i < 50; i++) {
		int len = snprintf(buf, sizeof(buf), "%u", i);

		assert_int_equal(kv_open_file(r->kv, r->x, false), 0);
		assert_int_equal(kv_write(r->kv, r->x, buf, (size_t)len, 0), len);
		kv_release_file(r->kv, r->x);
		assert_int_equal(kv_open_file(r->kv, r->y, false), 0);
		assert_int_equal(kv_write(r->kv, r->y, buf, (size_t)len, 0), len);
		kv_release_file(r->kv, r->y);
		if (i % 7 == 0)
			assert_int_equal(kv_flush(r->kv), 0);
		r->rounds = i;
	}
	return NULL;
}

static unsigned read_num(struct kv_store *kv, const char *path)
{
	char buf[32] = { 0 };

	assert_true(kv_read(kv, find(kv, path), buf, sizeof(buf) - 1, 0) > 0);
	return (unsigned)strtoul(buf, NULL, 10);
}

static void test_race_does_not_tear(void **state)
{
	struct fx *f = *state;
	struct kv_store *kv = KV(f);
	struct racer r = { .kv = kv };
	struct kv_backup_info info;
	pthread_t t;
	char id[16];
	uint64_t restored;

	r.x = put(kv, "x", "0", 1);
	r.y = put(kv, "y", "0", 1);
	for (int i = 0; i < 20; i++) {
		snprintf(id, sizeof(id), "filler%d", i);
		put_str(kv, id, "z");
	}
	assert_int_equal(pthread_create(&t, NULL, race_writer, &r), 0);
	for (int i = 0; i < 8; i++) {
		snprintf(id, sizeof(id), "r%d", i);
		assert_int_equal(kv_backup_create(kv, id, NULL, &info, f->err, sizeof(f->err)), 0);
	}
	atomic_store(&r.stop, true);
	pthread_join(t, NULL);
	for (int i = 0; i < 8; i++) {
		snprintf(id, sizeof(id), "r%d", i);
		assert_int_equal(kv_backup_restore(kv, id, true, &restored, f->err,
						   sizeof(f->err)), 0);
		unsigned x = read_num(kv, "x"), y = read_num(kv, "y");

		if (!(x == y || x == y + 1))
			fail_msg("backup %s is torn: x=%u y=%u", id, x, y);
	}
}

static void test_pinned_versions_survive_and_are_reclaimed(void **state)
{
	struct fx *f = *state;
	struct kv_store *kv = KV(f);
	struct kv_meta ref = { 0 };
	struct kv_value *v = NULL;
	uint64_t id = put(kv, "k", "old value", 9);
	char buf[16];

	assert_int_equal(kv_flush(kv), 0);
	put_str(kv, "gone", "bye");
	assert_int_equal(kv_flush(kv), 0);
	pthread_mutex_lock(&kv->lock);
	struct kv_node *n = kv_node_get(kv, id);

	assert_null(n->value); /* only in the backend: read by reference */
	ref.id = id;
	ref.vver = n->m.vver;
	ref.size = ref.stored_size = n->m.size;
	kv_backup_pin(kv);
	pthread_mutex_unlock(&kv->lock);

	/* A rewrite and a delete committed while pinned... */
	put_str(kv, "k", "new value");
	assert_int_equal(kv_unlink(kv, KV_ROOT_ID, "gone"), 0);
	assert_int_equal(kv_flush(kv), 0);
	/* ...leave the pinned version readable. */
	assert_int_equal(kv->backend->ops->read_value(kv->backend, &ref, &v), 0);
	assert_int_equal(kv_value_read(v, buf, sizeof(buf), 0), 9);
	assert_memory_equal(buf, "old value", 9);
	kv_value_free(v);
	assert_int_equal(f->st.s.nolds, 2);
	assert_int_equal(f->st.s.reclaimed, 0);

	pthread_mutex_lock(&kv->lock);
	kv_backup_unpin(kv);
	pthread_mutex_unlock(&kv->lock);
	assert_int_equal(kv_flush(kv), 0);
	assert_int_equal(f->st.s.reclaimed, 2);
	assert_int_equal(f->st.s.nolds, 0);
	assert_int_equal(kv->backend->ops->read_value(kv->backend, &ref, &v), -ESTALE);
	assert_str(kv, "k", "new value");
}

/* A listing of the store: path, size and first bytes of every key. */
static void listing(struct kv_store *kv, uint64_t dir, const char *path, char *out, size_t len)
{
	struct kv_dirent *ents;
	size_t n;

	assert_int_equal(kv_readdir(kv, dir, &ents, &n), 0);
	for (size_t i = 0; i < n; i++) {
		char sub[512], val[32] = { 0 };

		snprintf(sub, sizeof(sub), "%s/%s", path, ents[i].name);
		if (S_ISDIR(ents[i].mode)) {
			listing(kv, ents[i].id, sub, out, len);
			continue;
		}
		kv_read(kv, ents[i].id, val, sizeof(val) - 1, 0);
		snprintf(out + strlen(out), len - strlen(out), "%s=%s\n", sub, val);
	}
	kv_dirents_free(ents, n);
}

static void damage(const char *path, bool truncate_it)
{
	struct stat st;
	int fd = open(path, O_RDWR);
	unsigned char c;

	assert_true(fd >= 0);
	assert_int_equal(fstat(fd, &st), 0);
	if (truncate_it) {
		assert_int_equal(ftruncate(fd, st.st_size * 2 / 3), 0);
	} else {
		off_t off = st.st_size / 2;

		assert_int_equal(pread(fd, &c, 1, off), 1);
		c ^= 0x10;
		assert_int_equal(pwrite(fd, &c, 1, off), 1);
	}
	close(fd);
}

static void check_damage_refused(struct fx *f, bool truncate_it)
{
	struct kv_store *kv = KV(f);
	struct kv_backup_info info;
	char path[512], before[8192] = "", after[8192] = "";
	uint64_t restored;
	char val[64];

	for (int i = 0; i < 40; i++) {
		snprintf(path, sizeof(path), "k%d", i);
		snprintf(val, sizeof(val), "value %d %0*d", i, 30, i);
		put_str(kv, path, val);
	}
	assert_int_equal(kv_backup_create(kv, "b", NULL, &info, f->err, sizeof(f->err)), 0);
	put_str(kv, "k1", "changed after the backup");
	listing(kv, KV_ROOT_ID, "", before, sizeof(before));
	snprintf(path, sizeof(path), "%s/%s", f->dir, info.file);
	damage(path, truncate_it);
	f->err[0] = '\0';
	assert_int_equal(kv_backup_verify(kv, "b", &info, f->err, sizeof(f->err)), -EBADMSG);
	assert_true(strlen(f->err) > 0);
	assert_int_equal(kv_backup_restore(kv, "b", true, &restored, f->err, sizeof(f->err)),
			 -EBADMSG);
	assert_int_equal(restored, 0);
	listing(kv, KV_ROOT_ID, "", after, sizeof(after));
	assert_string_equal(before, after);
	/* An increment on a damaged parent is refused too. */
	assert_int_equal(kv_backup_create(kv, "c", "b", &info, f->err, sizeof(f->err)),
			 -EBADMSG);
}

static void test_bit_flip_refused(void **state)
{
	struct fx *f = *state;
	struct kv_backup_info info;
	char path[512];
	size_t len;
	unsigned char *orig;
	FILE *fp;

	check_damage_refused(f, false);
	/* Any byte, anywhere: value data, tar headers and padding, the
	 * manifest, the compressed stream's framing, the trailer. */
	assert_int_equal(kv_backup_create(KV(f), "every", NULL, &info, f->err, sizeof(f->err)),
			 0);
	snprintf(path, sizeof(path), "%s/%s", f->dir, info.file);
	fp = fopen(path, "rb");
	assert_non_null(fp);
	fseek(fp, 0, SEEK_END);
	len = (size_t)ftell(fp);
	rewind(fp);
	orig = malloc(len);
	assert_int_equal(fread(orig, 1, len, fp), len);
	fclose(fp);
	for (size_t i = 0; i < len; i++) {
		orig[i] ^= 0x04;
		fp = fopen(path, "wb");
		assert_int_equal(fwrite(orig, 1, len, fp), len);
		fclose(fp);
		orig[i] ^= 0x04;
		if (kv_backup_verify(KV(f), "every", &info, f->err, sizeof(f->err)) != -EBADMSG)
			fail_msg("a flipped bit at byte %zu of %zu went unnoticed", i, len);
	}
	free(orig);
}

static void test_truncation_refused(void **state)
{
	check_damage_refused(*state, true);
}

static void test_bad_ids(void **state)
{
	struct fx *f = *state;
	struct kv_store *kv = KV(f);
	struct kv_backup_info info;
	const char *bad[] = { "", "..", ".", "../x", "a/b", "/abs", ".hidden", "sp ace", "a\nb",
			      "x/../../etc" };
	char longid[200];
	uint64_t restored;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(kv_backup_check_id(bad[i]), -EINVAL);
		assert_int_equal(kv_backup_create(kv, bad[i], NULL, &info, f->err,
						  sizeof(f->err)), -EINVAL);
		assert_non_null(strstr(f->err, "bad backup id"));
		assert_int_equal(kv_backup_verify(kv, bad[i], &info, f->err, sizeof(f->err)),
				 -EINVAL);
		assert_int_equal(kv_backup_restore(kv, bad[i], false, &restored, f->err,
						   sizeof(f->err)), -EINVAL);
	}
	memset(longid, 'a', 129);
	longid[129] = '\0';
	assert_int_equal(kv_backup_check_id(longid), -EINVAL);
	longid[128] = '\0';
	assert_int_equal(kv_backup_check_id(longid), 0);
	assert_int_equal(kv_backup_check_id("2026-11-24_full.v2"), 0);
	assert_int_equal(kv_backup_create(kv, "dup", NULL, &info, f->err, sizeof(f->err)), 0);
	assert_int_equal(kv_backup_create(kv, "dup", NULL, &info, f->err, sizeof(f->err)),
			 -EEXIST);
	assert_int_equal(kv_backup_verify(kv, "missing", &info, f->err, sizeof(f->err)), -ENOENT);
}

/* The default id of a backup made at t: the UTC second (20261124T182501Z). */
static void id_at(time_t t, char *buf, size_t len)
{
	struct tm tm;

	gmtime_r(&t, &tm);
	strftime(buf, len, "%Y%m%dT%H%M%SZ", &tm);
}

/* Two backups in one second get distinct ids: the second's id, then -2, -3.
 * The collision is forced rather than left to timing: the ids the next
 * seconds would take, and their -2, are made first with explicit ids. */
static void test_two_in_one_second(void **state)
{
	enum { SECONDS = 30 }; /* the automatic backups run within these, even slowed */
	struct fx *f = *state;
	struct kv_store *kv = KV(f);
	struct kv_backup_info a, b, c, info, *list;
	char id[64], at[32];
	time_t t = time(NULL), t0, t1, x;
	size_t n;

	put_str(kv, "k", "v");
	for (int s = 0; s < SECONDS; s++) {
		id_at(t + s, id, sizeof(id));
		assert_int_equal(kv_backup_create(kv, id, NULL, &info, f->err, sizeof(f->err)), 0);
		strcat(id, "-2");
		assert_int_equal(kv_backup_create(kv, id, NULL, &info, f->err, sizeof(f->err)), 0);
	}
	t0 = time(NULL);
	assert_int_equal(kv_backup_create(kv, NULL, NULL, &a, f->err, sizeof(f->err)), 0);
	assert_int_equal(kv_backup_create(kv, NULL, NULL, &b, f->err, sizeof(f->err)), 0);
	assert_int_equal(kv_backup_create(kv, NULL, NULL, &c, f->err, sizeof(f->err)), 0);
	t1 = time(NULL);
	if (t1 >= t + SECONDS)
		fail_msg("the backups took more than %d s: the collision was not forced",
			 SECONDS);
	/* a's second, and its -2, were taken: a is that second's -3. */
	assert_int_equal(strlen(a.id), 18);
	for (x = t0; x <= t1; x++) {
		id_at(x, at, sizeof(at));
		if (!strncmp(a.id, at, 16))
			break;
	}
	if (x > t1)
		fail_msg("%s is not the id of a second it was made in", a.id);
	assert_string_equal(a.id + 16, "-3");
	/* b is -4 of the same second, or -3 of the next. */
	assert_true(!strcmp(b.id + 16, "-4") || !strcmp(b.id + 16, "-3"));
	assert_string_not_equal(a.id, b.id);
	assert_string_not_equal(b.id, c.id);
	assert_string_not_equal(a.id, c.id);
	assert_int_equal(kv_backup_list(kv, &list, &n, f->err, sizeof(f->err)), 0);
	assert_int_equal(n, 2 * SECONDS + 3);
	free(list);
	assert_int_equal(kv_backup_verify(kv, a.id, &info, f->err, sizeof(f->err)), 0);
	assert_int_equal(kv_backup_verify(kv, b.id, &info, f->err, sizeof(f->err)), 0);
	assert_int_equal(kv_backup_verify(kv, c.id, &info, f->err, sizeof(f->err)), 0);
	assert_string_equal(info.id, c.id);
}

static void test_prune_keeps_chains(void **state)
{
	struct fx *f = *state;
	struct kv_store *kv = KV(f);
	struct kv_backup_info info, *list;
	char *removed;
	size_t n, nremoved;
	char path[512];

	put_str(kv, "k", "1");
	assert_int_equal(kv_backup_create(kv, "full1", NULL, &info, f->err, sizeof(f->err)), 0);
	put_str(kv, "k", "2");
	assert_int_equal(kv_backup_create(kv, "inc1", "full1", &info, f->err, sizeof(f->err)), 0);
	assert_int_equal(kv_backup_create(kv, "full2", NULL, &info, f->err, sizeof(f->err)), 0);
	put_str(kv, "k", "3");
	assert_int_equal(kv_backup_create(kv, "inc2", "inc1", &info, f->err, sizeof(f->err)), 0);

	assert_int_equal(kv_backup_prune(kv, 0, &removed, &nremoved, f->err, sizeof(f->err)),
			 -EINVAL);
	assert_int_equal(kv_backup_prune(kv, 1, &removed, &nremoved, f->err, sizeof(f->err)), 0);
	assert_int_equal(nremoved, 1);
	assert_string_equal(removed, "full2");
	free(removed);
	snprintf(path, sizeof(path), "%s/full2.tar.zst", f->dir);
	assert_int_equal(access(path, F_OK), -1);
	assert_int_equal(kv_backup_list(kv, &list, &n, f->err, sizeof(f->err)), 0);
	assert_int_equal(n, 3);
	free(list);
	assert_int_equal(kv_backup_verify(kv, "inc2", &info, f->err, sizeof(f->err)), 0);
	uint64_t restored;

	assert_int_equal(kv_backup_restore(kv, "inc2", true, &restored, f->err, sizeof(f->err)),
			 0);
	assert_str(kv, "k", "3");
	/* Nothing more to prune while the chain is needed. */
	assert_int_equal(kv_backup_prune(kv, 1, &removed, &nremoved, f->err, sizeof(f->err)), 0);
	assert_int_equal(nremoved, 0);
	assert_null(removed);
}

static void test_no_backup_dir(void **state)
{
	struct fx *f = *state;
	struct kv_backup_info info;

	f->st.o.backup_dir = NULL; /* and the mem backend has no data_dir */
	mem_store_reopen(&f->st, true);
	assert_int_equal(kv_backup_create(KV(f), NULL, NULL, &info, f->err, sizeof(f->err)),
			 -EINVAL);
	assert_non_null(strstr(f->err, "backup_dir"));
}

static void test_expired_keys_skipped(void **state)
{
	struct fx *f = *state;
	struct kv_store *kv = KV(f);
	struct kv_backup_info info;
	uint64_t restored;

	put_str(kv, "short", "s");
	put_str(kv, "long", "l");
	set_xattr(kv, "short", "user.ttl", "1");
	set_xattr(kv, "long", "user.ttl", "3600");
	assert_int_equal(kv_backup_create(kv, "t", NULL, &info, f->err, sizeof(f->err)), 0);
	assert_int_equal(info.keys, 2);
	usleep(1100 * 1000);
	/* Past its deadline: neither backed up again nor restored. */
	assert_int_equal(kv_backup_create(kv, "t2", NULL, &info, f->err, sizeof(f->err)), 0);
	assert_int_equal(info.keys, 1);
	assert_int_equal(kv_backup_restore(kv, "t", true, &restored, f->err, sizeof(f->err)), 0);
	assert_int_equal(restored, 1);
	assert_int_equal(find(kv, "short"), 0);
	assert_str(kv, "long", "l");
}

/* A manifest's key paths come as "path" or, for bytes that are not UTF-8,
 * "path_hex"; each malformed form is refused as a whole (-EBADMSG) and
 * leaves nothing allocated (the sanitizer build checks the freeing). */
static void test_manifest_bad_paths(void **state)
{
	static const char *const paths[] = {
		"\"path_hex\": \"6b3\"",	  /* odd length */
		"\"path_hex\": \"6g\"",	  /* not a hex digit */
		"\"path_hex\": \"6b006b\"", /* NUL inside */
		"\"path_hex\": \"\"",	  /* empty: the root is not a key */
		"\"path_hex\": \"2e2e\"",	  /* ".." */
		"\"path\": \"a//b\"",
		"\"path\": 7",
		"\"nopath\": \"k\"",
	};
	struct kv_bk_manifest mf;
	char text[1024], err[256];

	(void)state;
	for (size_t i = 0; i <= sizeof(paths) / sizeof(paths[0]); i++) {
		/* The last round is the well-formed "k" as hex: it must parse. */
		const char *p = i < sizeof(paths) / sizeof(paths[0]) ? paths[i]
								      : "\"path_hex\": \"6b\"";
		int len = snprintf(text, sizeof(text),
				   "{\"version\": 1, \"id\": \"m\", \"started_ms\": 1, "
				   "\"finished_ms\": 2, \"total_keys\": 1, \"dirs\": [], "
				   "\"declared_tags\": [], \"deleted\": [], \"keys\": [{%s, "
				   "\"mode\": 33188, \"uid\": 0, \"gid\": 0, \"atime_ns\": 1, "
				   "\"mtime_ns\": 1, \"ctime_ns\": 1, \"btime_ns\": 1, "
				   "\"size\": 0, \"xxh3\": \"0000000000000000\", "
				   "\"expires_ms\": 0, \"tags\": []}]}",
				   p);
		int ret = kv_bk_manifest_parse(text, (size_t)len, &mf, err, sizeof(err));

		if (i < sizeof(paths) / sizeof(paths[0])) {
			if (ret != -EBADMSG)
				fail_msg("manifest key %s: %d, want -EBADMSG", p, ret);
			assert_null(mf.keys);
			continue;
		}
		assert_int_equal(ret, 0);
		assert_int_equal(mf.nkeys, 1);
		assert_string_equal(mf.keys[0].path, "k");
		kv_bk_manifest_free(&mf);
	}
}

int main(int argc, char **argv)
{
	if (argc == 4 && !strcmp(argv[1], "--lock-child"))
		return lock_child(argv[2], argv[3]);

	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_round_trip, setup, teardown),
		cmocka_unit_test_setup_teardown(test_incremental_chain, setup, teardown),
		cmocka_unit_test_setup_teardown(test_race_does_not_tear, setup, teardown),
		cmocka_unit_test_setup_teardown(test_pinned_versions_survive_and_are_reclaimed,
						setup, teardown),
		cmocka_unit_test_setup_teardown(test_bit_flip_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_truncation_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bad_ids, setup, teardown),
		cmocka_unit_test(test_manifest_bad_paths),
		cmocka_unit_test_setup_teardown(test_two_in_one_second, setup, teardown),
		cmocka_unit_test_setup_teardown(test_prune_keeps_chains, setup, teardown),
		cmocka_unit_test_setup_teardown(test_index_never_half_written, setup, teardown),
		cmocka_unit_test_setup_teardown(test_failed_create_leaves_nothing, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_lock_concurrent_creates, setup, teardown),
		cmocka_unit_test_setup_teardown(test_lock_processes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_lock_held_elsewhere, setup, teardown),
		cmocka_unit_test_setup_teardown(test_lock_never_replaces, setup, teardown),
		cmocka_unit_test_setup_teardown(test_lock_dangling_dir, setup, teardown),
		cmocka_unit_test_setup_teardown(test_no_backup_dir, setup, teardown),
		cmocka_unit_test_setup_teardown(test_expired_keys_skipped, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
