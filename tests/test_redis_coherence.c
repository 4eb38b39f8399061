/*
 * Two mounts of one store on one private redis-server (two mountpoints on
 * this machine stand for two machines, spec section 9): what one does, the
 * other sees within flush_interval + coherence_delay, kernel caches
 * included (each check first makes the other mount cache the old state);
 * right after close with close_to_open = yes; O_EXCL creates and mkdirs of
 * one name race to exactly one winner; and a mount that lost track of the
 * change log reloads.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "tests/pair.h"

static void test_write_rewrite_delete(void **state)
{
	struct pair *p = start_pair(state, OPTS);

	/* The other mount looks first: a cached "no such file" must go. */
	ASSERT_ERRNO(open(mnt_path(&p->b, "k"), O_RDONLY), ENOENT);
	put_str(mnt_path(&p->a, "k"), "one\n");
	await_file(mnt_path(&p->b, "k"), "one\n");
	await_listed(p->b.dir, "k", true);

	/* Cached content and size go too. */
	assert_file_str(mnt_path(&p->b, "k"), "one\n");
	put_str(mnt_path(&p->a, "k"), "two, longer\n");
	await_file(mnt_path(&p->b, "k"), "two, longer\n");

	/* And the other way round. */
	put_str(mnt_path(&p->b, "k"), "three\n");
	await_file(mnt_path(&p->a, "k"), "three\n");

	ASSERT_SYS(unlink(mnt_path(&p->a, "k")));
	await_file(mnt_path(&p->b, "k"), NULL);
	await_listed(p->b.dir, "k", false);
	stop_pair(p);
}

static void test_dirs_and_rename(void **state)
{
	struct pair *p = start_pair(state, OPTS);
	struct stat st;

	ASSERT_SYS(mkdir(mnt_path(&p->a, "d"), 0755));
	ASSERT_SYS(mkdir(mnt_path(&p->a, "d/sub"), 0755));
	put_str(mnt_path(&p->a, "d/sub/x"), "deep\n");
	await_file(mnt_path(&p->b, "d/sub/x"), "deep\n");

	ASSERT_SYS(rename(mnt_path(&p->a, "d"), mnt_path(&p->a, "e")));
	await_file(mnt_path(&p->b, "e/sub/x"), "deep\n");
	await_file(mnt_path(&p->b, "d/sub/x"), NULL);
	await_listed(p->b.dir, "d", false);

	/* A file renamed over another, through b this time. */
	put_str(mnt_path(&p->b, "e/y"), "why\n");
	await_file(mnt_path(&p->a, "e/y"), "why\n");
	ASSERT_SYS(rename(mnt_path(&p->b, "e/y"), mnt_path(&p->b, "e/sub/x")));
	await_file(mnt_path(&p->a, "e/sub/x"), "why\n");
	await_file(mnt_path(&p->a, "e/y"), NULL);

	ASSERT_SYS(unlink(mnt_path(&p->a, "e/sub/x")));
	ASSERT_SYS(rmdir(mnt_path(&p->a, "e/sub")));
	for (int64_t deadline = now_ms() + CATCH_UP_MS;
	     stat(mnt_path(&p->b, "e/sub"), &st) == 0;) {
		if (now_ms() > deadline)
			fail_msg("e/sub still there through the other mount");
		usleep(10000);
	}
	stop_pair(p);
}

#define ROUNDS 20

struct racer {
	struct mnt *m;
	pthread_barrier_t *go;
	bool mkdirs;		/* else O_EXCL creates */
	int won[ROUNDS];	/* 1 won, 0 EEXIST, -errno otherwise */
};

static void *racer_main(void *arg)
{
	struct racer *r = arg;

	for (int i = 0; i < ROUNDS; i++) {
		char path[4096];
		int fd, ret;

		/* Not mnt_path: its arena is not for threads. */
		snprintf(path, sizeof(path), "%s/race%d", r->m->dir, i);
		pthread_barrier_wait(r->go);
		if (r->mkdirs) {
			ret = mkdir(path, 0755);
		} else {
			fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0644);
			ret = fd < 0 ? -1 : 0;
			if (fd >= 0) {
				/* The winner's mount name is the content. */
				ret = write(fd, r->m->dir, strlen(r->m->dir)) < 0 ? -1 : 0;
				close(fd);
			}
		}
		r->won[i] = ret == 0 ? 1 : errno == EEXIST ? 0 : -errno;
	}
	return NULL;
}

static void race(void **state, bool mkdirs)
{
	struct pair *p = start_pair(state, OPTS);
	struct racer r[2] = { { &p->a, NULL, mkdirs, { 0 } }, { &p->b, NULL, mkdirs, { 0 } } };
	pthread_barrier_t go;
	pthread_t t[2];

	pthread_barrier_init(&go, NULL, 2);
	for (int k = 0; k < 2; k++) {
		r[k].go = &go;
		assert_int_equal(pthread_create(&t[k], NULL, racer_main, &r[k]), 0);
	}
	for (int k = 0; k < 2; k++)
		pthread_join(t[k], NULL);
	pthread_barrier_destroy(&go);
	for (int i = 0; i < ROUNDS; i++) {
		if (r[0].won[i] < 0 || r[1].won[i] < 0)
			fail_msg("round %d: %s", i, strerror(-(r[0].won[i] < 0 ? r[0].won[i]
								 : r[1].won[i])));
		if (r[0].won[i] + r[1].won[i] != 1)
			fail_msg("round %d: %d winners", i, r[0].won[i] + r[1].won[i]);
		if (!mkdirs) {
			const char *want = r[0].won[i] ? p->a.dir : p->b.dir;

			await_file(mnt_path(&p->a, "race%d", i), want);
			await_file(mnt_path(&p->b, "race%d", i), want);
		} else {
			/* The loser sees the winner's directory once it is
			 * flushed. */
			await_listed(p->a.dir, mnt_str(&p->a, "race%d", i), true);
			await_listed(p->b.dir, mnt_str(&p->b, "race%d", i), true);
		}
	}
	/* After the race, both mounts agree the names are taken. */
	ASSERT_ERRNO(mkdir(mnt_path(&p->b, "race0"), 0755), EEXIST);
	ASSERT_ERRNO(open(mnt_path(&p->a, "race1"), O_RDWR | O_CREAT | O_EXCL, 0644), EEXIST);
	stop_pair(p);
}

static void test_mkdir_race(void **state)
{
	race(state, true);
}

static void test_excl_create_race(void **state)
{
	race(state, false);
}

/* Names claimed and given up again are free for the other mount. */
static void test_claim_released(void **state)
{
	struct pair *p = start_pair(state, OPTS);
	int fd;

	ASSERT_SYS(mkdir(mnt_path(&p->a, "short-lived"), 0755));
	ASSERT_SYS(rmdir(mnt_path(&p->a, "short-lived")));
	fd = open(mnt_path(&p->a, "f"), O_WRONLY | O_CREAT | O_EXCL, 0644);
	assert_true(fd >= 0);
	close(fd);
	ASSERT_SYS(rename(mnt_path(&p->a, "f"), mnt_path(&p->a, "g")));
	/* The claims go with a's next flush. */
	for (int64_t deadline = now_ms() + CATCH_UP_MS;
	     mkdir(mnt_path(&p->b, "short-lived"), 0755);) {
		assert_int_equal(errno, EEXIST);
		if (now_ms() > deadline)
			fail_msg("a's claim on short-lived was never released");
		usleep(10000);
	}
	for (int64_t deadline = now_ms() + CATCH_UP_MS;
	     (fd = open(mnt_path(&p->b, "f"), O_WRONLY | O_CREAT | O_EXCL, 0644)) < 0;) {
		assert_int_equal(errno, EEXIST);
		if (now_ms() > deadline)
			fail_msg("a's claim on f was never released");
		usleep(10000);
	}
	close(fd);
	await_file(mnt_path(&p->a, "f"), "");
	await_file(mnt_path(&p->b, "g"), "");
	stop_pair(p);
}

struct rewriter {
	struct mnt *m;
	volatile int *stop;
	int err;
};

/* Rewrites "rw" with same-sized versions, each fsync'ed (a commit each,
 * which deletes the previous version in Redis at once). */
static void *rewriter_main(void *arg)
{
	struct rewriter *w = arg;
	char path[4096], buf[4096];

	snprintf(path, sizeof(path), "%s/rw", w->m->dir);
	for (int i = 0; i < 200 && !*w->stop && !w->err; i++) {
		int fd = open(path, O_WRONLY | O_TRUNC);

		/* Past compression_min_size every other time: compressed values
		 * are read whole, plain ones by range. */
		memset(buf, 'z', sizeof(buf));
		snprintf(buf, 32, "version %04d\n", i);
		if (i % 2) {
			buf[13] = 'z';
			buf[2047] = '\0';
		}
		if (fd < 0 || write(fd, buf, strlen(buf)) != (ssize_t)strlen(buf) || fsync(fd))
			w->err = errno ? errno : EIO;
		if (fd >= 0)
			close(fd);
	}
	*w->stop = 1;
	return NULL;
}

/* Reads through b while a rewrites: always a whole version, never EIO. */
static void test_read_during_rewrites(void **state)
{
	struct pair *p = start_pair(state, OPTS);
	volatile int stop = 0;
	struct rewriter w = { &p->a, &stop, 0 };
	pthread_t t;
	int reads = 0;

	put_str(mnt_path(&p->a, "rw"), "version init\n");
	await_file(mnt_path(&p->b, "rw"), "version init\n");
	assert_int_equal(pthread_create(&t, NULL, rewriter_main, &w), 0);
	while (!stop) {
		char buf[4096];
		int fd = open(mnt_path(&p->b, "rw"), O_RDONLY);
		ssize_t n;

		if (fd < 0)
			fail_msg("open through b: %s", strerror(errno));
		n = read(fd, buf, sizeof(buf) - 1);
		close(fd);
		if (n < 0) {
			fail_msg("read through b after %d reads: %s", reads, strerror(errno));
			break;
		}
		buf[n] = '\0';
		if (n && strncmp(buf, "version ", 8))
			fail_msg("read through b: \"%s\"", buf);
		reads++;
	}
	pthread_join(t, NULL);
	if (w.err)
		fail_msg("rewriter: %s", strerror(w.err));
	stop_pair(p);
}

/* A long flush_interval: only close-to-open can explain what b sees. */
static void test_close_to_open(void **state)
{
	struct pair *p = start_pair(state, "flush_interval=60s,close_to_open=yes");

	put_str(mnt_path(&p->a, "c2o"), "written on a\n");
	assert_file_str(mnt_path(&p->b, "c2o"), "written on a\n");
	put_str(mnt_path(&p->b, "c2o"), "rewritten on b, longer\n");
	assert_file_str(mnt_path(&p->a, "c2o"), "rewritten on b, longer\n");
	put_str(mnt_path(&p->a, "c2o"), "short\n");
	assert_file_str(mnt_path(&p->b, "c2o"), "short\n");
	stop_pair(p);
}

/* nadbctl tx ARGS on m: its exit status; its output in *out. */
static int tx_cmd(struct mnt *m, char **out, const char *args)
{
	return run_cmd_out(out, "%s -m '%s' tx %s 2>&1", nadbctl_bin(), m->dir, args);
}

static void assert_conflict(struct mnt *m, const char *tx, const char *key)
{
	char *out = NULL;

	assert_int_not_equal(tx_cmd(m, &out, mnt_str(m, "commit %s", tx)), 0);
	if (!strstr(out, "conflict") || !strstr(out, key))
		fail_msg("tx commit %s: %s", tx, out);
	free(out);
	assert_int_equal(tx_cmd(m, &out, mnt_str(m, "abort %s", tx)), 0);
	free(out);
}

/*
 * Spec 6a across mounts: a change another mount made to a key the
 * transaction changed, or a name it creates, refuses the commit and applies
 * nothing, whether this mount has heard of the change yet or not. The
 * latter is made by changing the record in Redis without a change log
 * entry, as a commit this mount has not heard of yet would look.
 */
static void test_transaction_conflicts_across_mounts(void **state)
{
	struct pair *p = start_pair(state, OPTS);
	struct mnt *a = &p->a, *b = &p->b;
	char *out = NULL;
	const char *id;

	put_str(mnt_path(a, "k"), "old");
	put_str(mnt_path(a, "k2"), "old2");
	flush_mount(a, "k");
	await_file(mnt_path(b, "k2"), "old2");

	/* Heard of through the change log. */
	ASSERT_SYS(mkdir(mnt_path(a, ".nadb/tx/t1"), 0700));
	put_str(mnt_path(a, ".nadb/tx/t1/k"), "from t1");
	put_str(mnt_path(b, "k"), "from b");
	flush_mount(b, "k");
	await_file(mnt_path(a, "k"), "from b");
	assert_conflict(a, "t1", "k");

	/* Not heard of: only Redis can tell. The record's ctime changes
	 * (bytes 46-53 of the record), nothing else. */
	ASSERT_SYS(mkdir(mnt_path(a, ".nadb/tx/t2"), 0700));
	put_str(mnt_path(a, ".nadb/tx/t2/k2"), "from t2");
	put_str(mnt_path(a, ".nadb/tx/t2/fresh"), "fresh");
	id = rcli(a, "HGET " TT "d:1 %s", "k2");
	rcli(a, mnt_str(a, "EVAL \"local m = redis.call('GET', KEYS[1]) "
		      "redis.call('SET', KEYS[1], string.sub(m, 1, 45) .. 'XXXXXXXX' .. "
		      "string.sub(m, 54)) return 1\" 1 %s", TT "r:%s"), id);
	assert_conflict(a, "t2", "k2");
	assert_file_str(mnt_path(a, "k2"), "old2");
	assert_file_str(mnt_path(b, "k2"), "old2");
	ASSERT_ERRNO(access(mnt_path(a, "fresh"), F_OK), ENOENT);
	assert_string_equal(rcli(a, "HEXISTS " TT "d:1 %s", "fresh"), "0");
	assert_string_equal(rcli(a, "EXISTS " TT "txl%s", ""), "0");

	/* A name taken in Redis behind a's back (an entry and an index, no log
	 * entry): only Redis can tell. */
	ASSERT_SYS(mkdir(mnt_path(a, ".nadb/tx/t5"), 0700));
	put_str(mnt_path(a, ".nadb/tx/t5/ghost"), "from t5");
	rcli(a, "HSET " TT "d:1 ghost %s", "999999");
	rcli(a, "HSET " TT "i:999999 p 1 n ghost t %s", "''");
	assert_conflict(a, "t5", "ghost");
	ASSERT_ERRNO(access(mnt_path(a, "ghost"), F_OK), ENOENT);
	assert_string_equal(rcli(a, "HGET " TT "d:1 %s", "ghost"), "999999");
	rcli(a, "DEL " TT "i:999999%s", "");
	rcli(a, "HDEL " TT "d:1 %s", "ghost");

	/* A name created through the other mount meanwhile. */
	ASSERT_SYS(mkdir(mnt_path(a, ".nadb/tx/t3"), 0700));
	put_str(mnt_path(a, ".nadb/tx/t3/n"), "from t3");
	put_str(mnt_path(b, "n"), "from b");
	flush_mount(b, "n");
	assert_conflict(a, "t3", "n");
	await_file(mnt_path(a, "n"), "from b");

	/* Nothing changed outside since (k2's record stays changed behind
	 * a's back, as no log entry tells of it): it commits, through both
	 * mounts. */
	ASSERT_SYS(mkdir(mnt_path(a, ".nadb/tx/t4"), 0700));
	put_str(mnt_path(a, ".nadb/tx/t4/k"), "from t4");
	put_str(mnt_path(a, ".nadb/tx/t4/n2"), "new");
	assert_int_equal(tx_cmd(a, &out, "commit t4"), 0);
	free(out);
	await_file(mnt_path(b, "k"), "from t4");
	await_file(mnt_path(b, "n2"), "new");
	assert_string_equal(rcli(a, "EXISTS " TT "txl%s", ""), "0");
	stop_pair(p);
}

/* path must read want through m now and after m is mounted again, and the
 * load places every record (nothing goes to lost+found). */
static void assert_survives(struct mnt *m, const char *path, const char *want)
{
	assert_file_str(mnt_path(m, "%s", path), want);
	mnt_stop(m);
	mnt_start(m, OPTS_MANUAL);
	assert_file_str(mnt_path(m, "%s", path), want);
	assert_int_equal(mnt_log_lines(m, NULL, "cannot be placed"), 0);
}

/*
 * a removes d/k and d while b rewrites d/k: the last writer wins, and d
 * with it. If a's removals land first, b's key goes back into a directory
 * Redis no longer has (a rewrite does not change its directory, so b's
 * commit need not carry d); b, hearing of the removal with d/k still in d,
 * commits d again and what is below it, so that no mount drops d/k as an
 * orphan, now or at its next mount.
 */
static void test_rmdir_races_a_rewrite(void **state)
{
	struct pair *p = start_pair(state, OPTS_MANUAL);
	struct mnt *a = &p->a, *b = &p->b;

	ASSERT_SYS(mkdir(mnt_path(a, "d"), 0755));
	put_str(mnt_path(a, "d/k"), "old");
	flush_all(a);
	await_file(mnt_path(b, "d/k"), "old");

	put_str(mnt_path(b, "d/k"), "kept");
	ASSERT_SYS(unlink(mnt_path(a, "d/k")));
	ASSERT_SYS(rmdir(mnt_path(a, "d")));
	flush_all(a);
	await_flushing(p, mnt_path(a, "d/k"), "kept");
	assert_file_str(mnt_path(b, "d/k"), "kept");
	assert_string_equal(rcli(a, "SISMEMBER " TT "ids %s",
				 rcli(a, "HGET " TT "d:1 %s", "d")), "1");
	mnt_stop(b);
	assert_survives(a, "d/k", "kept");
}

/*
 * The other order, with b gone before a's removal lands: Redis keeps a
 * directory that still has entries no mount's removal knew of, and tells
 * every mount, the remover included, to fetch it and what is below it.
 */
static void test_rmdir_races_a_create_create_first(void **state)
{
	struct pair *p = start_pair(state, OPTS_MANUAL);
	struct mnt *a = &p->a, *b = &p->b;

	ASSERT_SYS(mkdir(mnt_path(a, "d"), 0755));
	ASSERT_SYS(mkdir(mnt_path(a, "e"), 0755));
	put_str(mnt_path(a, "e/x"), "x");
	flush_all(a);
	await_listed(mnt_path(b, "."), "d", true);

	ASSERT_SYS(rmdir(mnt_path(a, "d")));
	put_str(mnt_path(b, "d/k"), "kept");
	flush_all(b);
	mnt_stop(b);
	/* In the same batch, a whole tree a knew goes as it should. */
	ASSERT_SYS(unlink(mnt_path(a, "e/x")));
	ASSERT_SYS(rmdir(mnt_path(a, "e")));
	flush_all(a);
	await_file(mnt_path(a, "d/k"), "kept");
	assert_survives(a, "d/k", "kept");
	ASSERT_ERRNO(access(mnt_path(a, "e"), F_OK), ENOENT);
	assert_string_equal(rcli(a, "HEXISTS " TT "d:1 %s", "e"), "0");
}

/*
 * Deeper: b makes d/e/f in the directory a removes (a may hear of e and f
 * before or after its removal is flushed, while d is gone only here), and
 * a removes p/d and p in one batch (p before d or after) while b writes
 * p/d/k and unmounts. Every directory stays, and a fetches everything
 * below the ones kept.
 */
static void test_rmdir_races_a_tree(void **state)
{
	struct pair *p = start_pair(state, OPTS_MANUAL);
	struct mnt *a = &p->a, *b = &p->b;

	ASSERT_SYS(mkdir(mnt_path(a, "d"), 0755));
	ASSERT_SYS(mkdir(mnt_path(a, "p"), 0755));
	ASSERT_SYS(mkdir(mnt_path(a, "p/d"), 0755));
	flush_all(a);
	await_listed(mnt_path(b, "p"), "d", true);

	ASSERT_SYS(rmdir(mnt_path(a, "d")));
	ASSERT_SYS(rmdir(mnt_path(a, "p/d")));
	ASSERT_SYS(rmdir(mnt_path(a, "p")));
	ASSERT_SYS(mkdir(mnt_path(b, "d/e"), 0755));
	put_str(mnt_path(b, "d/e/f"), "f");
	put_str(mnt_path(b, "p/d/k"), "k");
	flush_all(b);
	mnt_stop(b);
	flush_all(a);
	await_file(mnt_path(a, "d/e/f"), "f");
	await_file(mnt_path(a, "p/d/k"), "k");
	assert_string_equal(rcli(a, "HEXISTS " TT "d:1 %s", "p"), "1");
	assert_survives(a, "p/d/k", "k");
	assert_file_str(mnt_path(a, "d/e/f"), "f");
}

/*
 * b changes only the metadata of d/k (no value of its own) and of d while a
 * removes d/k, with its value, and d: the removal stands, and no mount is
 * left with a key whose value is gone (which read EIO), or with d.
 */
static void test_rmdir_races_a_chmod(void **state)
{
	struct pair *p = start_pair(state, OPTS_MANUAL);
	struct mnt *a = &p->a, *b = &p->b;

	ASSERT_SYS(mkdir(mnt_path(a, "d"), 0755));
	put_str(mnt_path(a, "d/k"), "data");
	flush_all(a);
	await_file(mnt_path(b, "d/k"), "data");

	ASSERT_SYS(chmod(mnt_path(b, "d/k"), 0600));
	ASSERT_SYS(chmod(mnt_path(b, "d"), 0700));
	ASSERT_SYS(unlink(mnt_path(a, "d/k")));
	ASSERT_SYS(rmdir(mnt_path(a, "d")));
	flush_all(a);
	await_flushing(p, mnt_path(b, "d/k"), NULL);
	await_flushing(p, mnt_path(a, "d/k"), NULL);
	await_flushing(p, mnt_path(b, "d"), NULL);
	assert_string_equal(rcli(a, "HEXISTS " TT "d:1 %s", "d"), "0");
}

/*
 * A key whose deadline passed while it was open stays in Redis until its
 * last handle goes (they may read its value there), and it may carry no
 * expiry of Redis's own (a deadline already past at commit, or another
 * mount's clock): it does not keep its directory from being removed.
 */
static void test_rmdir_past_deadline_child(void **state)
{
	/* No sweep of T:exp by the mounts' sync threads during the test. */
	struct pair *p = start_pair(state, OPTS_MANUAL ",ttl_sweep=1h");
	struct mnt *a = &p->a;
	struct stat st;
	char id[24];
	int fd;

	ASSERT_SYS(mkdir(mnt_path(a, "d"), 0755));
	put_str(mnt_path(a, "d/k"), "v");
	ASSERT_SYS(setxattr(mnt_path(a, "d/k"), "user.ttl", "1", 1, 0));
	flush_all(a);
	ASSERT_SYS(stat(mnt_path(a, "d/k"), &st));
	snprintf(id, sizeof(id), "%llu", (unsigned long long)st.st_ino);
	/* As a commit after the deadline leaves the record. */
	assert_string_equal(rcli(a, "PERSIST " TT "r:%s", id), "1");
	fd = open(mnt_path(a, "d/k"), O_RDONLY);
	ASSERT_SYS(fd);
	await_listed(mnt_path(a, "d"), "k", false);
	ASSERT_SYS(rmdir(mnt_path(a, "d")));
	flush_all(a);
	assert_string_equal(rcli(a, "HEXISTS " TT "d:1 %s", "d"), "0");
	assert_string_equal(rcli(a, "EXISTS " TT "r:%s", id), "1");
	ASSERT_SYS(close(fd));
	ASSERT_ERRNO(access(mnt_path(a, "d"), F_OK), ENOENT);
	mnt_stop(&p->b);
	mnt_stop(a);
	mnt_start(a, OPTS_MANUAL);
	ASSERT_ERRNO(access(mnt_path(a, "d"), F_OK), ENOENT);
	assert_int_equal(mnt_log_lines(a, NULL, "cannot be placed"), 0);
}

/*
 * A plain create racing another mount's directory with entries on one name
 * (b's file d, a's mkdir d and d/k; a commits first): b's commit gives way,
 * as rename(2) over a non-empty directory fails, and b's file moves into
 * lost+found on every mount; nothing is cut off the tree, and a later load
 * finds nothing to recover.
 */
static void test_create_gives_way_to_full_dir(void **state)
{
	struct pair *p = start_pair(state, OPTS_MANUAL);
	struct mnt *a = &p->a, *b = &p->b;
	struct stat st;
	char moved[64];

	put_str(mnt_path(b, "d"), "file");
	ASSERT_SYS(stat(mnt_path(b, "d"), &st));
	snprintf(moved, sizeof(moved), "lost+found/%llu-d", (unsigned long long)st.st_ino);
	ASSERT_SYS(mkdir(mnt_path(a, "d"), 0755));
	put_str(mnt_path(a, "d/k"), "k");
	flush_all(a);
	flush_all(b);
	assert_file_str(mnt_path(b, "%s", moved), "file");
	await_file(mnt_path(b, "d/k"), "k");
	await_file(mnt_path(a, "%s", moved), "file");
	assert_file_str(mnt_path(a, "d/k"), "k");
	assert_int_equal(mnt_log_lines(b, NULL, "gave its name"), 1);
	mnt_stop(b);
	mnt_stop(a);
	mnt_start(a, OPTS_MANUAL);
	assert_file_str(mnt_path(a, "d/k"), "k");
	assert_file_str(mnt_path(a, "%s", moved), "file");
	assert_int_equal(mnt_log_lines(a, NULL, "cannot be placed"), 0);
}

/*
 * The same, with b's flush an fsync of its root (the kernel holds the
 * directory while it waits, so the move's invalidations must not wait for
 * it), and then b's unmount: the final flush commits what gave way before
 * the daemon exits.
 */
static void test_gives_way_on_fsync_and_unmount(void **state)
{
	struct pair *p = start_pair(state, OPTS_MANUAL);
	struct mnt *a = &p->a, *b = &p->b;
	struct stat st;
	char moved[2][64];
	int fd;

	put_str(mnt_path(b, "d"), "one");
	ASSERT_SYS(stat(mnt_path(b, "d"), &st));
	snprintf(moved[0], sizeof(moved[0]), "lost+found/%llu-d", (unsigned long long)st.st_ino);
	ASSERT_SYS(mkdir(mnt_path(a, "d"), 0755));
	put_str(mnt_path(a, "d/k"), "k");
	flush_all(a);
	fd = open(b->dir, O_RDONLY | O_DIRECTORY);
	ASSERT_SYS(fd);
	ASSERT_SYS(fsync(fd));
	ASSERT_SYS(close(fd));
	assert_file_str(mnt_path(b, "%s", moved[0]), "one");
	await_file(mnt_path(a, "%s", moved[0]), "one");

	put_str(mnt_path(b, "e"), "two");
	ASSERT_SYS(stat(mnt_path(b, "e"), &st));
	snprintf(moved[1], sizeof(moved[1]), "lost+found/%llu-e", (unsigned long long)st.st_ino);
	ASSERT_SYS(mkdir(mnt_path(a, "e"), 0755));
	put_str(mnt_path(a, "e/k"), "k");
	flush_all(a);
	mnt_stop(b);
	mnt_stop(a);
	mnt_start(a, OPTS_MANUAL);
	assert_file_str(mnt_path(a, "%s", moved[0]), "one");
	assert_file_str(mnt_path(a, "%s", moved[1]), "two");
	assert_file_str(mnt_path(a, "e/k"), "k");
}

/*
 * b writes d/k while a removes d and then makes a file d: b commits d again
 * for d/k's sake, but the name is a's newer file's now. That commit gives
 * way (it would have removed a's file), and b's directory, with d/k, moves
 * into lost+found on every mount. rewrite: d/k is an older key a removed
 * with d, which b rewrites (b's sync then commits d again itself, d being
 * clean there); else a new key, created after b last flushed (d is dirty
 * on b when it hears of the removal).
 */
static void recreated_dir_gives_way(void **state, bool rewrite)
{
	struct pair *p = start_pair(state, OPTS_MANUAL);
	struct mnt *a = &p->a, *b = &p->b;
	struct stat st;
	char moved[64];

	ASSERT_SYS(mkdir(mnt_path(a, "d"), 0755));
	if (rewrite)
		put_str(mnt_path(a, "d/k"), "old");
	flush_all(a);
	await_listed(mnt_path(b, "."), "d", true);
	if (rewrite)
		await_file(mnt_path(b, "d/k"), "old");
	ASSERT_SYS(stat(mnt_path(b, "d"), &st));
	snprintf(moved, sizeof(moved), "lost+found/%llu-d/k", (unsigned long long)st.st_ino);

	put_str(mnt_path(b, "d/k"), "b's");
	if (rewrite)
		ASSERT_SYS(unlink(mnt_path(a, "d/k")));
	ASSERT_SYS(rmdir(mnt_path(a, "d")));
	flush_all(a);
	put_str(mnt_path(a, "d"), "a's");
	flush_all(a);
	await_flushing(p, mnt_path(a, "%s", moved), "b's");
	await_file(mnt_path(b, "%s", moved), "b's");
	await_file(mnt_path(b, "d"), "a's");
	assert_file_str(mnt_path(a, "d"), "a's");
	ASSERT_SYS(stat(mnt_path(a, "d"), &st));
	assert_string_equal(rcli(a, "HGET " TT "d:1 %s", "d"),
			    mnt_str(a, "%llu", (unsigned long long)st.st_ino));
	assert_int_equal(mnt_log_lines(b, NULL, "gave its name"), 1);
	mnt_stop(b);
	mnt_stop(a);
	mnt_start(a, OPTS_MANUAL);
	assert_file_str(mnt_path(a, "d"), "a's");
	assert_file_str(mnt_path(a, "%s", moved), "b's");
	assert_int_equal(mnt_log_lines(a, NULL, "cannot be placed"), 0);
}

static void test_recreated_dir_gives_way(void **state)
{
	recreated_dir_gives_way(state, false);
}

static void test_recreated_dir_gives_way_rewrite(void **state)
{
	recreated_dir_gives_way(state, true);
}

/*
 * Spec section 9: a mount that loses track of the change log (entries it
 * never read were trimmed, or its connection dropped) reloads every record,
 * since what it missed is unknown. b is stopped while a commits; a rewrite
 * of a key b has cached is then removed from the log, so it reaches b only
 * by a reload. (The first commit after the stop answers the XREAD b was
 * blocked in, if any: it reaches b through the log; the rewrite after it
 * does not.)
 */
/* Polls until m has logged more reloads than before. */
static void await_reload(struct mnt *m, int before)
{
	int64_t until = now_ms() + CATCH_UP_MS;

	while (mnt_log_lines(m, "info", "reloaded every record") <= before) {
		if (now_ms() > until)
			fail_msg("%s did not reload after losing the change log", m->dir);
		usleep(10000);
	}
}

static void test_change_log_lost(void **state)
{
	struct pair *p = start_pair(state, OPTS);
	int before;

	put_str(mnt_path(&p->a, "k0"), "zero\n");
	await_file(mnt_path(&p->b, "k0"), "zero\n");
	before = mnt_log_lines(&p->b, "info", "reloaded every record");

	/* A gap: the entry b reads next skips the trimmed ones. */
	ASSERT_SYS(kill(p->b.pid, SIGSTOP));
	put_str(mnt_path(&p->a, "k1"), "one\n");
	flush_all(&p->a);
	put_str(mnt_path(&p->a, "k0"), "zero, rewritten\n");
	flush_all(&p->a);
	rcli(&p->a, "XTRIM " TT "log MAXLEN 0", NULL);
	put_str(mnt_path(&p->a, "k2"), "two\n");
	flush_all(&p->a);
	ASSERT_SYS(kill(p->b.pid, SIGCONT));
	await_file(mnt_path(&p->b, "k0"), "zero, rewritten\n");
	await_file(mnt_path(&p->b, "k2"), "two\n");
	await_reload(&p->b, before);
	before = mnt_log_lines(&p->b, "info", "reloaded every record");

	/* A dropped connection: no later entry shows a gap, so only the
	 * reload on reconnecting finds the rewrite. An empty entry of the
	 * next number first answers the XREAD b may be blocked in. */
	ASSERT_SYS(kill(p->b.pid, SIGSTOP));
	rcli(&p->a, mnt_str(&p->a, "XADD " TT "log * seq %s by * ids ''",
			    rcli(&p->a, "INCR " TT "logseq", NULL)), NULL);
	put_str(mnt_path(&p->a, "k0"), "zero, third\n");
	flush_all(&p->a);
	rcli(&p->a, "XTRIM " TT "log MAXLEN 0", NULL);
	/* Every mount's connections go, and each logs the broken ones. */
	p->a.errors_expected = p->b.errors_expected = true;
	rcli(&p->a, "CLIENT KILL TYPE normal", NULL);
	ASSERT_SYS(kill(p->b.pid, SIGCONT));
	await_file(mnt_path(&p->b, "k0"), "zero, third\n");
	await_reload(&p->b, before);
	stop_pair(p);
}

#define T(f) cmocka_unit_test_setup_teardown(f, pair_setup, pair_teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		T(test_write_rewrite_delete),
		T(test_dirs_and_rename),
		T(test_mkdir_race),
		T(test_excl_create_race),
		T(test_claim_released),
		T(test_close_to_open),
		T(test_read_during_rewrites),
		T(test_transaction_conflicts_across_mounts),
		T(test_rmdir_races_a_rewrite),
		T(test_rmdir_races_a_create_create_first),
		T(test_rmdir_races_a_tree),
		T(test_rmdir_races_a_chmod),
		T(test_rmdir_past_deadline_child),
		T(test_create_gives_way_to_full_dir),
		T(test_gives_way_on_fsync_and_unmount),
		T(test_recreated_dir_gives_way),
		T(test_recreated_dir_gives_way_rewrite),
		T(test_change_log_lost),
	};

	if (getenv("TF")) cmocka_set_test_filter(getenv("TF"));
	return cmocka_run_group_tests_name("redis coherence", tests, NULL, NULL);
}
