/*
 * Transactions on the mount: mkdir .nadb/tx/NAME, changes staged under it
 * with the usual tools, nadbctl tx commit/abort/apply, conflicts, all or
 * nothing across a SIGKILL during commit, concurrent transactions, stats,
 * and a tx apply killed mid-batch, whose transaction the daemon aborts.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>
#include <jansson.h>

#include "mnt.h"

static int ctl(struct mnt *m, char **out, const char *args)
{
	return run_cmd_out(out, "%s -m %s %s 2>&1", nadbctl_bin(), shq(m, m->dir), args);
}

static void test_stage_then_commit(void **state)
{
	struct mnt *m = *state;
	char *out = NULL, buf[64];
	struct stat st;

	mnt_start(m, NULL);
	put_str(mnt_path(m, "a"), "old");
	ASSERT_SYS(mkdir(mnt_path(m, "d"), 0755));
	put_str(mnt_path(m, "d/x"), "x");
	ASSERT_SYS(mkdir(mnt_path(m, ".nadb/tx/t1"), 0700));
	assert_file_str(mnt_path(m, ".nadb/tx/t1/a"), "old");
	put_str(mnt_path(m, ".nadb/tx/t1/a"), "new");
	put_str(mnt_path(m, ".nadb/tx/t1/b"), "created");
	assert_int_equal(run_cmd("rm %s", shq(m, mnt_path(m, ".nadb/tx/t1/d/x"))), 0);
	assert_int_equal(run_cmd("mv %s %s", shq(m, mnt_path(m, ".nadb/tx/t1/b")),
				 shq(m, mnt_path(m, ".nadb/tx/t1/c"))),
			 0);
	assert_int_equal(run_cmd("setfattr -n user.tags -v red %s",
				 shq(m, mnt_path(m, ".nadb/tx/t1/a"))),
			 0);
	/* Invisible outside. */
	assert_file_str(mnt_path(m, "a"), "old");
	ASSERT_ERRNO(stat(mnt_path(m, "c"), &st), ENOENT);
	assert_file_str(mnt_path(m, "d/x"), "x");
	ASSERT_ERRNO(getxattr(mnt_path(m, "a"), "user.tags", buf, sizeof(buf)), ENODATA);
	assert_int_equal(run_cmd_out(&out, "ls %s", shq(m, mnt_path(m, ".nadb/tx"))), 0);
	assert_string_equal(out, "t1\n");
	free(out);
	assert_int_equal(ctl(m, &out, "tx commit t1"), 0);
	free(out);
	assert_file_str(mnt_path(m, "a"), "new");
	assert_file_str(mnt_path(m, "c"), "created");
	ASSERT_ERRNO(stat(mnt_path(m, "d/x"), &st), ENOENT);
	assert_int_equal(getxattr(mnt_path(m, "a"), "user.tags", buf, sizeof(buf)), 3);
	assert_file_str(mnt_path(m, "tags/red/a"), "new");
	ASSERT_ERRNO(stat(mnt_path(m, ".nadb/tx/t1"), &st), ENOENT);
	mnt_restart(m, NULL);
	assert_file_str(mnt_path(m, "a"), "new");
	assert_file_str(mnt_path(m, "c"), "created");
	mnt_stop(m);
}

static void test_abort_and_bad_commands(void **state)
{
	struct mnt *m = *state;
	char *out = NULL;
	struct stat st;

	mnt_start(m, NULL);
	ASSERT_SYS(mkdir(mnt_path(m, ".nadb/tx/t"), 0700));
	put_str(mnt_path(m, ".nadb/tx/t/k"), "v");
	/* rmdir aborts, whatever the transaction holds. */
	ASSERT_SYS(rmdir(mnt_path(m, ".nadb/tx/t")));
	ASSERT_ERRNO(stat(mnt_path(m, "k"), &st), ENOENT);
	ASSERT_ERRNO(mkdir(mnt_path(m, ".nadb/tx/a b"), 0700), EINVAL);
	assert_int_equal(ctl(m, &out, "tx begin u"), 0);
	free(out);
	put_str(mnt_path(m, ".nadb/tx/u/k"), "v");
	assert_int_equal(ctl(m, &out, "tx abort u"), 0);
	free(out);
	ASSERT_ERRNO(stat(mnt_path(m, "k"), &st), ENOENT);
	assert_int_equal(ctl(m, &out, "tx commit u"), 1);
	assert_non_null(strstr(out, "no transaction 'u'"));
	free(out);
	assert_int_equal(ctl(m, &out, "tx frob u"), 1);
	free(out);
	/* The view's root stands for the mount's: no key takes a reserved name. */
	assert_int_equal(ctl(m, &out, "tx begin v"), 0);
	free(out);
	ASSERT_ERRNO(mkdir(mnt_path(m, ".nadb/tx/v/tags"), 0755), EEXIST);
	ASSERT_ERRNO(open(mnt_path(m, ".nadb/tx/v/.nadb"), O_CREAT | O_WRONLY, 0600), EEXIST);
	ASSERT_SYS(rmdir(mnt_path(m, ".nadb/tx/v")));
	/* Nothing can be made in .nadb/tx but transactions. */
	ASSERT_ERRNO(open(mnt_path(m, ".nadb/tx/file"), O_CREAT | O_WRONLY, 0600), EPERM);
	mnt_stop(m);
}

static void test_conflict_is_refused(void **state)
{
	struct mnt *m = *state;
	char *out = NULL;

	mnt_start(m, NULL);
	put_str(mnt_path(m, "k"), "v1");
	ASSERT_SYS(mkdir(mnt_path(m, ".nadb/tx/t"), 0700));
	put_str(mnt_path(m, ".nadb/tx/t/k"), "tx");
	put_str(mnt_path(m, ".nadb/tx/t/other"), "o");
	put_str(mnt_path(m, "k"), "v2");
	assert_int_equal(ctl(m, &out, "tx commit t"), 1);
	assert_non_null(strstr(out, "conflict: k was changed outside the transaction"));
	free(out);
	assert_file_str(mnt_path(m, "k"), "v2");
	assert_int_equal(access(mnt_path(m, "other"), F_OK), -1);
	assert_int_equal(ctl(m, &out, "tx abort t"), 0);
	free(out);
	mnt_stop(m);
}

/* The key's user.tags ("" for none), or "E<errno>". */
static const char *tags_of(struct mnt *m, const char *key)
{
	char buf[256];
	ssize_t n = getxattr(mnt_path(m, "%s", key), "user.tags", buf, sizeof(buf) - 1);

	if (n < 0)
		return errno == ENODATA ? "" : mnt_str(m, "E%d", errno);
	buf[n] = '\0';
	return mnt_str(m, "%s", buf);
}

static bool has_ttl(struct mnt *m, const char *key)
{
	char buf[64];

	return getxattr(mnt_path(m, "%s", key), "user.ttl", buf, sizeof(buf)) > 0;
}

static void set_xattr(struct mnt *m, const char *key, const char *name, const char *v)
{
	ASSERT_SYS(setxattr(mnt_path(m, "%s", key), name, v, strlen(v), 0));
}

/* Everything a batch could change: values and tags (tags/ in the tree), and
 * each key's tag list and TTL. */
static char *store_state(struct mnt *m, const char *const *keys)
{
	char *tree = tree_snapshot(m->dir), *out;
	const char *s = mnt_str(m, "%s", tree);

	free(tree);
	for (; *keys; keys++)
		s = mnt_str(m, "%s%s tags=%s ttl=%d\n", s, *keys, tags_of(m, *keys),
			    has_ttl(m, *keys));
	out = strdup(s);
	assert_non_null(out);
	return out;
}

/* The ops of spec section 8 (set, del, tag, untag, ttl), value_b64 with
 * NUL bytes, tag arrays, and the older names and extensions. */
static void test_apply_a_batch(void **state)
{
	static const char bin[] = { 0, (char)0xff, 'a', 0, (char)0x80, '\n', 0, 0 };
	struct mnt *m = *state;
	const char *good;
	char *out = NULL;
	struct stat st;

	mnt_start(m, NULL);
	good = mnt_str(m, "%s/good.jsonl", m->root);
	put_str(mnt_path(m, "old"), "x");
	put_str(mnt_path(m, "older"), "x");
	put_str(mnt_path(m, "keep"), "k");
	set_xattr(m, "keep", "user.tags", "a,b");
	put_str(mnt_path(m, "retag"), "r");
	set_xattr(m, "retag", "user.tags", "x,y");
	set_xattr(m, "retag", "user.ttl", "1000");
	put_str(mnt_path(m, "plain"), "p");
	set_xattr(m, "plain", "user.tags", "q");
	put_str(mnt_path(m, "hasttl"), "h");
	set_xattr(m, "hasttl", "user.ttl", "1000");
	put_str(mnt_path(m, "cleared"), "c0");
	set_xattr(m, "cleared", "user.tags", "old1");
	put_str(good, "{\"op\":\"set\",\"key\":\"users/1\",\"value\":\"alice\","
		      "\"tags\":[\"u\",\"active\"],\"ttl\":100}\n"
		      "\n"
		      "{\"op\":\"set\",\"key\":\"bin\",\"value_b64\":\"AP9hAIAKAAA=\"}\n"
		      "{\"op\":\"del\",\"key\":\"old\"}\n"
		      "{\"op\":\"tag\",\"key\":\"keep\",\"tags\":[\"c\",\"a\"]}\n"
		      "{\"op\":\"untag\",\"key\":\"keep\",\"tags\":[\"b\",\"absent\"]}\n"
		      "{\"op\":\"ttl\",\"key\":\"bin\",\"ttl\":50}\n"
		      "{\"op\":\"set\",\"key\":\"retag\",\"value\":\"new\",\"tags\":[\"z\"]}\n"
		      "{\"op\":\"set\",\"key\":\"plain\",\"value\":\"p2\"}\n"
		      "{\"op\":\"set\",\"key\":\"cleared\",\"value\":\"c\",\"tags\":[]}\n"
		      "{\"op\":\"ttl\",\"key\":\"hasttl\",\"ttl\":0}\n"
		      "{\"op\":\"put\",\"key\":\"put\",\"value\":\"alias\"}\n"
		      "{\"op\":\"delete\",\"key\":\"older\"}\n"
		      "{\"op\":\"xattr\",\"key\":\"users/1\",\"name\":\"user.n\",\"value\":\"1\"}\n");
	assert_int_equal(ctl(m, &out, mnt_str(m, "tx apply %s", shq(m, good))), 0);
	assert_string_equal(out, "ok 13 operations\n");
	free(out);
	for (int pass = 0; pass < 2; pass++) {
		/* set: the value, the tag array as the whole set, the TTL. */
		assert_file_str(mnt_path(m, "users/1"), "alice");
		assert_string_equal(tags_of(m, "users/1"), "active,u");
		assert_file_str(mnt_path(m, "tags/active/users%%2F1"), "alice");
		assert_true(has_ttl(m, "users/1"));
		/* value_b64: binary bytes, NULs included, exactly. */
		assert_file(mnt_path(m, "bin"), bin, sizeof(bin));
		assert_true(has_ttl(m, "bin"));
		ASSERT_ERRNO(stat(mnt_path(m, "old"), &st), ENOENT);
		ASSERT_ERRNO(stat(mnt_path(m, "older"), &st), ENOENT);
		/* tag adds to the set, untag removes from it. */
		assert_string_equal(tags_of(m, "keep"), "a,c");
		assert_file_str(mnt_path(m, "keep"), "k");
		ASSERT_ERRNO(lstat(mnt_path(m, "tags/b/keep"), &st), ENOENT);
		/* set with tags replaces them; without, keeps them; a rewrite
		 * keeps the TTL unless the line gives one. */
		assert_file_str(mnt_path(m, "retag"), "new");
		assert_string_equal(tags_of(m, "retag"), "z");
		assert_true(has_ttl(m, "retag"));
		assert_file_str(mnt_path(m, "plain"), "p2");
		assert_string_equal(tags_of(m, "plain"), "q");
		assert_string_equal(tags_of(m, "cleared"), ""); /* "tags":[] */
		ASSERT_ERRNO(lstat(mnt_path(m, "tags/old1"), &st), ENOENT);
		assert_false(has_ttl(m, "hasttl"));
		assert_file_str(mnt_path(m, "put"), "alias");
		assert_int_equal(getxattr(mnt_path(m, "users/1"), "user.n", NULL, 0), 1);
		if (!pass)
			mnt_restart(m, NULL);
	}
	mnt_stop(m);
}

/* A bad line anywhere, or an op that fails while running, changes nothing
 * and leaves no transaction behind. */
static void test_apply_bad_batch_changes_nothing(void **state)
{
	static const char *const keys[] = { "k", "t", NULL };
	static const struct {
		const char *line, *why;
	} bad[] = {
		{ "{\"op\":\"set\",\"key\":\"k\",\"value_b64\":\"AP9h=AAA\"}",
		  "bad.jsonl:3: \"value_b64\" is not valid base64" },
		{ "{\"op\":\"set\",\"key\":\"k\",\"value_b64\":\"Zh==\"}",
		  "bad.jsonl:3: \"value_b64\" is not valid base64" },
		{ "{\"op\":\"set\",\"key\":\"k\",\"value\":\"v\",\"tags\":\"a,b\"}",
		  "bad.jsonl:3: \"tags\" must be an array of tag strings" },
		{ "{\"op\":\"tag\",\"key\":\"k\",\"tags\":[\"a\",{}]}",
		  "bad.jsonl:3: \"tags\" must be an array of tag strings" },
		{ "{\"op\":\"untag\",\"key\":\"k\",\"tags\":[\"a+b\"]}", "bad.jsonl:3: a tag is" },
		{ "{\"op\":\"retag\",\"key\":\"k\",\"tags\":[\"a\"]}", "bad.jsonl:3: unknown op" },
		{ "{\"op\":\"ttl\",\"key\":\"k\",\"ttl\":\"soon\"}", "bad.jsonl:3: \"ttl\" must be" },
		{ "{\"op\":\"del\",\"key\":\"../k\"}", "bad.jsonl:3: \"key\" must be" },
		{ "not json", "bad.jsonl:3: not JSON" },
		/* Well-formed, but fails inside the transaction: aborts the lot. */
		{ "{\"op\":\"tag\",\"key\":\"missing\",\"tags\":[\"a\"]}",
		  "bad.jsonl:3: tag missing: No such file or directory; nothing applied" },
		{ "{\"op\":\"del\",\"key\":\"missing\"}", "bad.jsonl:3: del missing:" },
	};
	struct mnt *m = *state;
	const char *file;
	char *before, *after, *out = NULL;

	mnt_start(m, NULL);
	file = mnt_str(m, "%s/bad.jsonl", m->root);
	put_str(mnt_path(m, "k"), "v");
	set_xattr(m, "k", "user.tags", "a,b");
	put_str(mnt_path(m, "t"), "tv");
	set_xattr(m, "t", "user.ttl", "1000");
	before = store_state(m, keys);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		/* Good lines before the bad one would change every kind of thing. */
		put_str(file, mnt_str(m,
				      "{\"op\":\"set\",\"key\":\"new\",\"value_b64\":\"AAE=\","
				      "\"tags\":[\"n\"]}\n"
				      "{\"op\":\"del\",\"key\":\"t\"}\n%s\n"
				      "{\"op\":\"untag\",\"key\":\"k\",\"tags\":[\"a\"]}\n",
				      bad[i].line));
		assert_int_equal(ctl(m, &out, mnt_str(m, "tx apply %s", shq(m, file))), 1);
		if (!strstr(out, bad[i].why))
			fail_msg("%s: said '%s', wanted '%s'", bad[i].line, out, bad[i].why);
		free(out);
		after = store_state(m, keys);
		assert_string_equal(after, before);
		free(after);
		assert_string_equal(mnt_ls(m, ".nadb/tx"), "");
	}
	free(before);
	mnt_stop(m);
}

struct txw {
	struct mnt *m;
	int n, ret;
};

static void *tx_thread(void *arg)
{
	struct txw *w = arg;
	char *out = NULL;

	if (mkdir(mnt_path(w->m, ".nadb/tx/w%d", w->n), 0700)) {
		w->ret = -errno;
		return NULL;
	}
	for (int i = 0; i < 5 && !w->ret; i++)
		w->ret = write_file(mnt_path(w->m, ".nadb/tx/w%d/k%d-%d", w->n, w->n, i), "v", 1);
	if (!w->ret)
		w->ret = ctl(w->m, &out, mnt_str(w->m, "tx commit w%d", w->n));
	free(out);
	return NULL;
}

static void test_three_concurrent_transactions(void **state)
{
	struct mnt *m = *state;
	struct txw w[3];
	pthread_t th[3];

	mnt_start(m, NULL);
	for (int i = 0; i < 3; i++) {
		w[i] = (struct txw){ m, i, 0 };
		assert_int_equal(pthread_create(&th[i], NULL, tx_thread, &w[i]), 0);
	}
	for (int i = 0; i < 3; i++) {
		pthread_join(th[i], NULL);
		assert_int_equal(w[i].ret, 0);
		for (int k = 0; k < 5; k++)
			assert_file_str(mnt_path(m, "k%d-%d", i, k), "v");
	}
	{
		char *text = read_file(mnt_path(m, ".nadb/stats"), NULL);
		json_t *o = json_loads(text, 0, NULL), *t = json_object_get(o, "transactions");

		free(text);
		assert_int_equal(json_integer_value(json_object_get(t, "committed")), 3);
		assert_int_equal(json_integer_value(json_object_get(t, "active")), 0);
		json_decref(o);
	}
	mnt_stop(m);
}

#define KILL_KEYS 20
#define KILL_VALUE (100 * 1024) /* two chunks and a map per key: a commit of ~60 files */

/* Where a round of the kill test sends SIGKILL. */
enum kill_at {
	KILL_BEFORE_COMMIT, /* the transaction is staged, the commit never sent */
	KILL_AFTER_DELAY,   /* a fixed delay after the commit is sent */
	KILL_ON_VALUE_FILE, /* (filesystem backend) when the commit creates its first value file */
	KILL_AFTER_REPLY,   /* once the commit's "ok" reply has been read */
};

/* Watches (IN_CREATE) every values/xx directory of the filesystem backend's
 * data: the commit writes its value files there before the journal append
 * that is its commit point. The fd, or fails the test. */
static int watch_value_dirs(struct mnt *m)
{
	char *out = NULL, *line, *save;
	int fd, n = 0;

	ASSERT_SYS(fd = inotify_init1(IN_CLOEXEC | IN_NONBLOCK));
	assert_int_equal(run_cmd_out(&out, "find %s -type d -path '*/values/*'", shq(m, m->data)),
			 0);
	for (line = strtok_r(out, "\n", &save); line; line = strtok_r(NULL, "\n", &save), n++)
		ASSERT_SYS(inotify_add_watch(fd, line, IN_CREATE));
	free(out);
	assert_true(n > 0);
	return fd;
}

/* Sends "tx commit t" on .nadb/ctl from a child: it exits 0 once it has read
 * an "ok" reply (the commit is then durable), 1 otherwise. */
static pid_t send_commit(struct mnt *m)
{
	pid_t child = fork();

	assert_true(child >= 0);
	if (child == 0) {
		char reply[16] = "";
		int fd = open(mnt_path(m, ".nadb/ctl"), O_RDWR);

		if (fd < 0 || write(fd, "tx commit t\n", 12) != 12 ||
		    pread(fd, reply, sizeof(reply) - 1, 0) < 2)
			_exit(1);
		_exit(strncmp(reply, "ok", 2) != 0);
	}
	return child;
}

/*
 * SIGKILL around and during the commit of a 20-key transaction: after a
 * remount every key has its new value or none has. Deterministic, and
 * asserted: a kill before the commit is sent leaves every old value, and a
 * kill after its "ok" leaves every new one (in any round). The rounds in
 * between kill while the commit runs: after a sweep of delays, and on the
 * filesystem backend as soon as the commit creates its first value file,
 * which is provably after the commit began and, since ~60 files are written
 * and fsynced before the journal append, almost always before its commit
 * point. Which side of the commit point such a kill lands on is up to the
 * scheduler, so for those rounds only all-or-nothing is asserted.
 */
static void test_kill_during_commit_is_all_or_nothing(void **state)
{
	struct mnt *m = *state;
	static const int delays_ms[] = { 0, 1, 2, 4, 8, 16, 32 };
	char *oldv = mnt_malloc(m, KILL_VALUE), *newv = mnt_malloc(m, KILL_VALUE);
	int seen[2] = { 0, 0 };
	bool fs = mnt_default_backend() == MNT_BACKEND_FS;

	memset(oldv, 'o', KILL_VALUE);
	memset(newv, 'n', KILL_VALUE);
	for (int round = 0;; round++) {
		enum kill_at at = KILL_AFTER_DELAY;
		int nd = (int)(sizeof(delays_ms) / sizeof(delays_ms[0]));
		int fd, news = 0, olds = 0, status = -1, watch = -1;
		pid_t child = 0;

		/* Round 0 before, then the delays, three on a value file (fs
		 * only), and last after the reply. */
		if (round == 0)
			at = KILL_BEFORE_COMMIT;
		else if (round > nd && round <= nd + 3 && fs)
			at = KILL_ON_VALUE_FILE;
		else if (round > nd && (round > nd + 3 || !fs))
			at = KILL_AFTER_REPLY;
		mnt_start(m, "flush_interval=1h");
		for (int i = 0; i < KILL_KEYS; i++)
			put_file(mnt_path(m, "k%d", i), oldv, KILL_VALUE);
		ASSERT_SYS(fd = open(mnt_path(m, "."), O_RDONLY | O_DIRECTORY));
		ASSERT_SYS(fsync(fd)); /* the old values are durable */
		close(fd);
		ASSERT_SYS(mkdir(mnt_path(m, ".nadb/tx/t"), 0700));
		for (int i = 0; i < KILL_KEYS; i++)
			put_file(mnt_path(m, ".nadb/tx/t/k%d", i), newv, KILL_VALUE);
		if (at == KILL_ON_VALUE_FILE)
			watch = watch_value_dirs(m);
		if (at != KILL_BEFORE_COMMIT)
			child = send_commit(m);
		if (at == KILL_AFTER_DELAY && delays_ms[round - 1]) {
			long ns = delays_ms[round - 1] * 1000000L;
			struct timespec ts = { ns / 1000000000L, ns % 1000000000L };

			nanosleep(&ts, NULL);
		} else if (at == KILL_ON_VALUE_FILE) {
			struct pollfd p = { .fd = watch, .events = POLLIN };

			if (poll(&p, 1, 10000) != 1)
				fail_msg("round %d: the commit wrote no value file in 10 s", round);
		} else if (at == KILL_AFTER_REPLY) {
			assert_int_equal(wait_pid(child, 10000, &status), 0);
			child = 0;
			assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
		}
		mnt_kill(m);
		if (watch >= 0)
			close(watch);
		if (child)
			assert_int_equal(wait_pid(child, 10000, &status), 0);
		mnt_start(m, NULL);
		for (int i = 0; i < KILL_KEYS; i++) {
			size_t len;
			char *v = read_file(mnt_path(m, "k%d", i), &len);

			assert_non_null(v);
			assert_int_equal(len, KILL_VALUE);
			news += !memcmp(v, newv, KILL_VALUE);
			olds += !memcmp(v, oldv, KILL_VALUE);
			free(v);
		}
		mnt_stop(m);
		if (news + olds != KILL_KEYS)
			fail_msg("round %d: %d keys hold neither value", round, KILL_KEYS - news - olds);
		if (news != 0 && news != KILL_KEYS)
			fail_msg("round %d: %d of %d keys committed", round, news, KILL_KEYS);
		if (at == KILL_BEFORE_COMMIT && news)
			fail_msg("round %d: committed without a commit", round);
		/* An "ok" means durable, whenever the kill came after it. */
		if (WIFEXITED(status) && WEXITSTATUS(status) == 0 && !news)
			fail_msg("round %d: the commit said ok, then was lost", round);
		seen[news == KILL_KEYS]++;
		if (at == KILL_AFTER_REPLY)
			break;
	}
	assert_true(seen[0] > 0 && seen[1] > 0);
	print_message("all-or-nothing: %d rounds committed, %d not\n", seen[1], seen[0]);
}

/* transactions.KEY of .nadb/stats. */
static json_int_t tx_stat(struct mnt *m, const char *key)
{
	char *text = read_file(mnt_path(m, ".nadb/stats"), NULL);
	json_t *o = text ? json_loads(text, 0, NULL) : NULL;
	json_t *v = json_object_get(json_object_get(o, "transactions"), key);
	json_int_t n;

	if (!json_is_integer(v))
		fail_msg("stats has no transactions.%s: %s", key, text ? text : "(unreadable)");
	n = json_integer_value(v);
	json_decref(o);
	free(text);
	return n;
}

/* Waits (30 s at most) until .nadb/tx/ lists exactly want ("" for none). */
static void wait_tx_listed(struct mnt *m, const char *want)
{
	int64_t until = now_ms() + 30000;

	while (strcmp(mnt_ls(m, ".nadb/tx"), want)) {
		if (now_ms() > until)
			fail_msg(".nadb/tx lists '%s', want '%s'", mnt_ls(m, ".nadb/tx"), want);
		struct timespec ts = { 0, 10 * 1000000 };
		nanosleep(&ts, NULL);
	}
}

/* A ctl command in the session fd; its reply's first line must start with want. */
static void session_cmd(int fd, const char *cmd, const char *want)
{
	char buf[512];
	ssize_t n;

	assert_int_equal(write(fd, cmd, strlen(cmd)), (ssize_t)strlen(cmd));
	n = read(fd, buf, sizeof(buf) - 1);
	assert_true(n > 0);
	buf[n] = '\0';
	if (strncmp(buf, want, strlen(want)))
		fail_msg("'%s' replied '%s', want '%s...'", cmd, buf, want);
}

/*
 * nadbctl tx apply SIGKILLed mid-batch: its transaction, begun in a ctl
 * session that the kernel closes when the process dies, is aborted by the
 * daemon: no longer listed, nothing applied, its staged bytes released.
 * To stop it mid-batch for sure, its stderr is a pipe already full: the
 * batch's third op fails (a del of a missing key), and nadbctl blocks
 * writing why, before it can abort, with the first two ops staged.
 * Transactions begun by hand outlive the command that began them; one begun
 * with --session in a raw ctl descriptor goes when that is closed, unless
 * committed through it.
 */
static void test_killed_apply_is_aborted(void **state)
{
	struct mnt *m = *state;
	size_t big = 256 * 1024;
	char *value = mnt_malloc(m, big + 1), *out = NULL, prefix[64];
	const char *batch;
	json_int_t aborted, committed;
	int errpipe[2], status, fd;
	struct stat st;
	pid_t pid;
	FILE *f;

	mnt_start(m, NULL);
	put_str(mnt_path(m, "kept"), "old");
	memset(value, 'v', big);
	batch = mnt_str(m, "%s/batch.jsonl", m->root);
	f = fopen(batch, "w");
	assert_non_null(f);
	fprintf(f, "{\"op\":\"set\",\"key\":\"big\",\"value\":\"%s\"}\n", value);
	fprintf(f, "{\"op\":\"set\",\"key\":\"kept\",\"value\":\"new\"}\n");
	fprintf(f, "{\"op\":\"del\",\"key\":\"missing\"}\n");
	assert_int_equal(fclose(f), 0);
	aborted = tx_stat(m, "aborted");
	committed = tx_stat(m, "committed");

	ASSERT_SYS(pipe2(errpipe, O_CLOEXEC));
	ASSERT_SYS(fcntl(errpipe[1], F_SETFL, O_NONBLOCK));
	while (write(errpipe[1], value, big) > 0)
		;
	assert_int_equal(errno, EAGAIN);
	/* Blocking again, so that nadbctl's write waits. */
	ASSERT_SYS(fcntl(errpipe[1], F_SETFL, 0));
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		int null = open("/dev/null", O_RDWR);

		dup2(null, 0);
		dup2(null, 1);
		dup2(errpipe[1], 2);
		execl(nadbctl_bin(), "nadbctl", "-m", m->dir, "tx", "apply", batch, (char *)NULL);
		_exit(127);
	}
	close(errpipe[1]);
	snprintf(prefix, sizeof(prefix), "apply-%ld-", (long)pid);
	for (int64_t until = now_ms() + 30000;; ) {
		if (!strncmp(mnt_ls(m, ".nadb/tx"), prefix, strlen(prefix)) &&
		    tx_stat(m, "staged_bytes") >= (json_int_t)big)
			break;
		if (wait_pid(pid, 0, &status) == 0)
			fail_msg("nadbctl tx apply ended (status %d) before the test stopped it",
				 status);
		if (now_ms() > until)
			fail_msg("the apply transaction never staged the batch: '%s'",
				 mnt_ls(m, ".nadb/tx"));
		struct timespec ts = { 0, 10 * 1000000 };
		nanosleep(&ts, NULL);
	}
	ASSERT_SYS(kill(pid, SIGKILL));
	assert_int_equal(wait_pid(pid, 10000, &status), 0);
	assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
	close(errpipe[0]);
	wait_tx_listed(m, "");
	assert_int_equal(tx_stat(m, "active"), 0);
	assert_int_equal(tx_stat(m, "staged_bytes"), 0);
	assert_int_equal(tx_stat(m, "aborted"), aborted + 1);
	assert_int_equal(tx_stat(m, "committed"), committed);
	assert_file_str(mnt_path(m, "kept"), "old");
	ASSERT_ERRNO(stat(mnt_path(m, "big"), &st), ENOENT);

	/* By hand: begun by one nadbctl, still there for the next. */
	assert_int_equal(ctl(m, &out, "tx begin byhand"), 0);
	free(out);
	put_str(mnt_path(m, ".nadb/tx/byhand/k1"), "1");
	assert_string_equal(mnt_ls(m, ".nadb/tx"), "byhand");
	assert_int_equal(ctl(m, &out, "tx commit byhand"), 0);
	free(out);
	assert_file_str(mnt_path(m, "k1"), "1");

	/* A session's transaction, committed through it: closing it changes
	 * nothing more. A second one in the same session is refused while the
	 * first is open. */
	fd = open(mnt_path(m, ".nadb/ctl"), O_RDWR | O_CLOEXEC);
	assert_true(fd >= 0);
	session_cmd(fd, "tx begin s1 --session\n", "ok");
	session_cmd(fd, "tx begin s2 --session\n", "error: this session already holds "
						  "transaction s1");
	put_str(mnt_path(m, ".nadb/tx/s1/k2"), "2");
	session_cmd(fd, "tx commit s1\n", "ok");
	/* Committed: the session may hold another, left uncommitted. */
	session_cmd(fd, "tx begin s3 --session\n", "ok");
	put_str(mnt_path(m, ".nadb/tx/s3/k3"), "3");
	assert_string_equal(mnt_ls(m, ".nadb/tx"), "s3");
	close(fd);
	wait_tx_listed(m, "");
	assert_file_str(mnt_path(m, "k2"), "2");
	ASSERT_ERRNO(stat(mnt_path(m, "k3"), &st), ENOENT);
	assert_int_equal(tx_stat(m, "aborted"), aborted + 2);

	/* A session's transaction aborted by name, then another of that name
	 * begun elsewhere: closing the session spares the newer one. */
	fd = open(mnt_path(m, ".nadb/ctl"), O_RDWR | O_CLOEXEC);
	assert_true(fd >= 0);
	session_cmd(fd, "tx begin s4 --session\n", "ok");
	ASSERT_SYS(rmdir(mnt_path(m, ".nadb/tx/s4")));
	ASSERT_SYS(mkdir(mnt_path(m, ".nadb/tx/s4"), 0700));
	put_str(mnt_path(m, ".nadb/tx/s4/k4"), "4");
	close(fd);
	/* A marker: a session closed after it, whose abort shows in the
	 * stats, is released after it. */
	fd = open(mnt_path(m, ".nadb/ctl"), O_RDWR | O_CLOEXEC);
	assert_true(fd >= 0);
	session_cmd(fd, "tx begin s5 --session\n", "ok");
	close(fd);
	for (int64_t deadline = now_ms() + 10000; tx_stat(m, "aborted") != aborted + 4;) {
		if (now_ms() > deadline)
			fail_msg("the marker session was not aborted");
		usleep(10000);
	}
	assert_string_equal(mnt_ls(m, ".nadb/tx"), "s4");
	assert_file_str(mnt_path(m, ".nadb/tx/s4/k4"), "4");
	mnt_stop(m);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_stage_then_commit, mnt_setup, mnt_teardown),
		cmocka_unit_test_setup_teardown(test_abort_and_bad_commands, mnt_setup,
						mnt_teardown),
		cmocka_unit_test_setup_teardown(test_conflict_is_refused, mnt_setup, mnt_teardown),
		cmocka_unit_test_setup_teardown(test_apply_a_batch, mnt_setup, mnt_teardown),
		cmocka_unit_test_setup_teardown(test_apply_bad_batch_changes_nothing, mnt_setup,
						mnt_teardown),
		cmocka_unit_test_setup_teardown(test_three_concurrent_transactions, mnt_setup,
						mnt_teardown),
		cmocka_unit_test_setup_teardown(test_kill_during_commit_is_all_or_nothing,
						mnt_setup, mnt_teardown),
		cmocka_unit_test_setup_teardown(test_killed_apply_is_aborted, mnt_setup,
						mnt_teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
