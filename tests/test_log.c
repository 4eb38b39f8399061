/*
 * util/log: JSON and text lines, level filter, NULL and hostile strings,
 * destinations, whole lines under concurrent writers, and the rate limiting
 * of repeated warnings and errors (with a clock the tests move).
 */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "util/log.h"

static char tmpdir[] = "/tmp/nadbfs-test-log-XXXXXX";
static char logpath[PATH_MAX];
static char logpath2[PATH_MAX];

static int group_setup(void **state)
{
	(void)state;
	if (!mkdtemp(tmpdir))
		return -1;
	snprintf(logpath, sizeof(logpath), "%s/a.log", tmpdir);
	snprintf(logpath2, sizeof(logpath2), "%s/b.log", tmpdir);
	return 0;
}

static int group_teardown(void **state)
{
	(void)state;
	log_close();
	unlink(logpath);
	unlink(logpath2);
	return rmdir(tmpdir);
}

/* Each test logs into a fresh file with default settings. */
static int setup(void **state)
{
	(void)state;
	unlink(logpath);
	log_set_level(NLOG_INFO);
	log_set_format(LOG_FORMAT_JSON);
	return log_open(logpath, false);
}

static int teardown(void **state)
{
	(void)state;
	log_close();
	return 0;
}

static char *slurp(const char *path)
{
	FILE *f = fopen(path, "r");
	char *buf = NULL;
	size_t cap = 0, len = 0, n;

	assert_non_null(f);
	do {
		buf = realloc(buf, cap += 65536);
		assert_non_null(buf);
		n = fread(buf + len, 1, cap - len - 1, f);
		len += n;
	} while (n > 0);
	buf[len] = '\0';
	fclose(f);
	return buf;
}

static size_t count_lines(const char *s)
{
	size_t n = 0;

	for (; *s; s++)
		n += *s == '\n';
	return n;
}

/* The only line of the log, parsed; fails unless there is exactly one. */
static json_t *only_line(void)
{
	char *text = slurp(logpath);
	json_error_t jerr;
	json_t *j;

	assert_int_equal(count_lines(text), 1);
	j = json_loads(text, 0, &jerr);
	if (!j)
		fail_msg("not JSON (%s): %s", jerr.text, text);
	free(text);
	return j;
}

static void assert_ts(const char *ts)
{
	int y, mo, d, h, mi, s, ms, n = 0;

	assert_int_equal(strlen(ts), 24);
	assert_int_equal(sscanf(ts, "%4d-%2d-%2dT%2d:%2d:%2d.%3dZ%n", &y, &mo, &d, &h, &mi, &s, &ms,
				&n),
			 7);
	assert_int_equal(n, 24);
	assert_true(y >= 2024 && mo >= 1 && mo <= 12 && d >= 1 && d <= 31 && h < 24 && mi < 60 &&
		    s < 61 && ms < 1000);
}

static void test_json_line(void **state)
{
	const char *key;
	json_t *j, *v;
	size_t i = 0;
	static const char *const order[] = { "ts", "level", "component", "msg", "key", "n", "d" };

	(void)state;
	NLOG(NLOG_WARN, "store", "flush failed", LF_STR("key", "users/42"), LF_INT("n", -7),
	     LF_DBL("d", 1.5));
	j = only_line();
	assert_ts(json_string_value(json_object_get(j, "ts")));
	assert_string_equal(json_string_value(json_object_get(j, "level")), "warn");
	assert_string_equal(json_string_value(json_object_get(j, "component")), "store");
	assert_string_equal(json_string_value(json_object_get(j, "msg")), "flush failed");
	assert_string_equal(json_string_value(json_object_get(j, "key")), "users/42");
	assert_int_equal(json_integer_value(json_object_get(j, "n")), -7);
	assert_true(json_real_value(json_object_get(j, "d")) == 1.5);
	/* Fields come in the documented order. */
	json_object_foreach(j, key, v) {
		assert_true(i < 7);
		assert_string_equal(key, order[i++]);
	}
	assert_int_equal(i, 7);
	json_decref(j);
}

static void test_printf_message(void **state)
{
	json_t *j;

	(void)state;
	log_msg(NLOG_ERROR, "backend", "cannot connect to %s:%d: %s", "127.0.0.1", 6379,
		"connection refused");
	j = only_line();
	assert_string_equal(json_string_value(json_object_get(j, "level")), "error");
	assert_string_equal(json_string_value(json_object_get(j, "msg")),
			    "cannot connect to 127.0.0.1:6379: connection refused");
	json_decref(j);
}

static void test_level_filter(void **state)
{
	enum log_level l;
	char *text;

	(void)state;
	assert_int_equal(log_get_level(), NLOG_INFO);
	log_msg(NLOG_DEBUG, "fs", "hidden");
	log_msg(NLOG_INFO, "fs", "shown 1");
	log_set_level(NLOG_ERROR);
	assert_int_equal(log_get_level(), NLOG_ERROR);
	log_msg(NLOG_WARN, "fs", "hidden");
	NLOG(NLOG_INFO, "fs", "hidden", LF_INT("x", 1));
	log_msg(NLOG_ERROR, "fs", "shown 2");
	log_set_level(NLOG_DEBUG);
	log_msg(NLOG_DEBUG, "fs", "shown 3");
	text = slurp(logpath);
	assert_int_equal(count_lines(text), 3);
	assert_null(strstr(text, "hidden"));
	assert_non_null(strstr(text, "shown 3"));
	free(text);

	assert_int_equal(log_parse_level("debug", &l), 0);
	assert_int_equal(l, NLOG_DEBUG);
	assert_int_equal(log_parse_level("WARNING", &l), 0);
	assert_int_equal(l, NLOG_WARN);
	assert_int_equal(log_parse_level("warn", &l), 0);
	assert_int_equal(log_parse_level("error", &l), 0);
	assert_int_equal(l, NLOG_ERROR);
	assert_int_equal(log_parse_level("info", &l), 0);
	assert_int_equal(l, NLOG_INFO);
	assert_int_equal(log_parse_level("verbose", &l), -EINVAL);
	assert_int_equal(log_parse_level("", &l), -EINVAL);
	assert_int_equal(log_parse_level(NULL, &l), -EINVAL);
	assert_int_equal(l, NLOG_INFO);
}

static void test_nulls_and_hostile_strings(void **state)
{
	json_t *j;

	(void)state;
	NLOG(NLOG_INFO, NULL, NULL, LF_STR("key", NULL), LF_STR(NULL, "v"),
	     LF_STR("msg", "not the message"), LF_DBL("nan", NAN), LF_DBL("inf", -INFINITY));
	j = only_line();
	assert_true(json_is_null(json_object_get(j, "component")));
	assert_true(json_is_null(json_object_get(j, "msg")));
	assert_true(json_is_null(json_object_get(j, "key")));
	assert_string_equal(json_string_value(json_object_get(j, "null")), "v");
	assert_string_equal(json_string_value(json_object_get(j, "_msg")), "not the message");
	assert_string_equal(json_string_value(json_object_get(j, "nan")), "nan");
	assert_string_equal(json_string_value(json_object_get(j, "inf")), "-inf");
	json_decref(j);

	/* Newlines, invalid UTF-8 and quotes stay inside one valid line. */
	unlink(logpath);
	assert_int_equal(log_open(logpath, false), 0);
	NLOG(NLOG_INFO, "fs", "a\nb\"c\\", LF_STR("key", "bad\xff\xfe utf8 \xc3\xa9 \xed\xa0\x80"),
	     LF_STR("k\xff", "x"));
	j = only_line();
	assert_string_equal(json_string_value(json_object_get(j, "msg")), "a\nb\"c\\");
	assert_string_equal(json_string_value(json_object_get(j, "key")),
			    "bad\\xff\\xfe utf8 \xc3\xa9 \\xed\\xa0\\x80");
	assert_string_equal(json_string_value(json_object_get(j, "k\\xff")), "x");
	json_decref(j);

	/* A NULL format does not crash either. */
	unlink(logpath);
	assert_int_equal(log_open(logpath, false), 0);
	log_msg(NLOG_INFO, "fs", NULL);
	j = only_line();
	assert_true(json_is_null(json_object_get(j, "msg")));
	json_decref(j);
}

static void test_text_format(void **state)
{
	char *text, *rest;

	(void)state;
	log_set_format(LOG_FORMAT_TEXT);
	NLOG(NLOG_WARN, "store", "flush failed", LF_STR("key", "users/42"), LF_INT("n", 3),
	     LF_DBL("d", 0.25), LF_STR("error", "no such file"), LF_STR("empty", ""),
	     LF_STR("none", NULL), LF_STR("q", "a\"b\nc"));
	text = slurp(logpath);
	assert_int_equal(count_lines(text), 1);
	text[24] = '\0';
	assert_ts(text);
	rest = text + 25;
	assert_string_equal(rest, "warn store: flush failed key=users/42 n=3 d=0.25 "
				  "error=\"no such file\" empty=\"\" none=null q=\"a\\\"b\\x0ac\"\n");
	free(text);
}

/* A newline in a text message is escaped: one record, one line. */
static void test_text_newline(void **state)
{
	char *text, *nl;

	(void)state;
	log_set_format(LOG_FORMAT_TEXT);
	log_msg(NLOG_ERROR, NULL, "two\nlines");
	text = slurp(logpath);
	nl = strchr(text, '\n');
	assert_non_null(nl);
	assert_string_equal(nl + 1, "");
	assert_string_equal(text + 25, "error null: two\\x0alines\n");
	free(text);
}

static void test_destinations(void **state)
{
	char *text;
	struct stat st;
	mode_t old;
	int fd;

	(void)state;
	/* A file that cannot be opened keeps the previous destination. */
	assert_int_equal(log_open("/nonexistent-nadbfs-dir/x.log", false), -ENOENT);
	log_msg(NLOG_INFO, "conf", "still here");
	text = slurp(logpath);
	assert_non_null(strstr(text, "still here"));
	free(text);

	/* Appends to what is there, created 0640. */
	unlink(logpath2);
	fd = open(logpath2, O_WRONLY | O_CREAT, 0600);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, "old\n", 4), 4);
	close(fd);
	assert_int_equal(log_open(logpath2, false), 0);
	log_msg(NLOG_INFO, "conf", "new");
	text = slurp(logpath2);
	assert_int_equal(strncmp(text, "old\n{", 5), 0);
	free(text);
	unlink(logpath2);
	old = umask(0);
	assert_int_equal(log_open(logpath2, false), 0);
	umask(old);
	assert_int_equal(stat(logpath2, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0640);

	/* The descriptor does not leak into children. */
	assert_int_equal(log_open(logpath, false), 0);
	for (fd = 3; fd < 64; fd++) {
		int fl = fcntl(fd, F_GETFD);

		if (fl >= 0 && fcntl(fd, F_GETFL) >= 0) {
			char link[64], target[PATH_MAX];
			ssize_t n;

			snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
			n = readlink(link, target, sizeof(target) - 1);
			if (n > 0) {
				target[n] = '\0';
				if (strcmp(target, logpath) == 0)
					assert_true(fl & FD_CLOEXEC);
			}
		}
	}

	/* syslog: does not fail; a file given too wins over it. */
	assert_int_equal(log_open(NULL, true), 0);
	log_msg(NLOG_DEBUG, "test", "filtered before reaching syslog");
	assert_int_equal(log_open(logpath, true), 0);
	log_msg(NLOG_INFO, "conf", "file wins");
	text = slurp(logpath);
	assert_non_null(strstr(text, "file wins"));
	free(text);
}

static void test_errno_kept(void **state)
{
	(void)state;
	errno = EXDEV;
	log_msg(NLOG_INFO, "fs", "x");
	assert_int_equal(errno, EXDEV);
	errno = EXDEV;
	log_msg(NLOG_DEBUG, "fs", "filtered");
	assert_int_equal(errno, EXDEV);
}

#define THREADS 8
#define LINES 2000

static void *writer(void *arg)
{
	char pad[3000];
	long id = (long)arg;
	int i;

	for (i = 0; i < LINES; i++) {
		size_t n = (size_t)((i * 131 + id * 17) % (sizeof(pad) - 1));

		memset(pad, 'a' + (int)id, n);
		pad[n] = '\0';
		NLOG(NLOG_INFO, "test", "line", LF_INT("thread", id), LF_INT("i", i),
		     LF_STR("pad", pad));
	}
	return NULL;
}

/* Lines of up to 3 KiB from many threads: every one whole and parseable. */
static void test_concurrent_lines(void **state)
{
	pthread_t t[THREADS];
	int seen[THREADS] = { 0 };
	char *text, *line, *save = NULL;
	json_error_t jerr;
	long i;

	(void)state;
	for (i = 0; i < THREADS; i++)
		assert_int_equal(pthread_create(&t[i], NULL, writer, (void *)i), 0);
	/* Reopening while they write must neither lose nor tear lines. */
	for (i = 0; i < 20; i++)
		assert_int_equal(log_open(logpath, false), 0);
	for (i = 0; i < THREADS; i++)
		pthread_join(t[i], NULL);
	text = slurp(logpath);
	assert_int_equal(count_lines(text), THREADS * LINES);
	for (line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		json_t *j = json_loads(line, 0, &jerr);
		long id;

		if (!j)
			fail_msg("torn line: %.80s", line);
		id = (long)json_integer_value(json_object_get(j, "thread"));
		assert_true(id >= 0 && id < THREADS);
		assert_int_equal(json_integer_value(json_object_get(j, "i")), seen[id]);
		seen[id]++;
		json_decref(j);
	}
	for (i = 0; i < THREADS; i++)
		assert_int_equal(seen[i], LINES);
	free(text);
}

/* --- rate limiting -------------------------------------------------------- */

static _Atomic unsigned long long fake_ms = 1000;

static unsigned long long fake_clock(void)
{
	return atomic_load(&fake_ms);
}

static int rl_setup(void **state)
{
	atomic_store(&fake_ms, 1000);
	log_ratelimit_configure(10, 10000, fake_clock);
	return setup(state);
}

static int rl_teardown(void **state)
{
	log_close();
	log_ratelimit_configure(LOG_RATELIMIT_BURST, LOG_RATELIMIT_WINDOW_MS, NULL);
	return teardown(state);
}

/* Every line of the log, parsed, in a JSON array. */
static json_t *all_lines(const char *path)
{
	char *text = slurp(path), *line, *save = NULL;
	json_t *arr = json_array();
	json_error_t jerr;

	for (line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		json_t *j = json_loads(line, 0, &jerr);

		if (!j)
			fail_msg("not JSON (%s): %s", jerr.text, line);
		json_array_append_new(arr, j);
	}
	free(text);
	return arr;
}

static const char *jstr(json_t *arr, size_t i, const char *key)
{
	return json_string_value(json_object_get(json_array_get(arr, i), key));
}

static long long jint(json_t *arr, size_t i, const char *key)
{
	return json_integer_value(json_object_get(json_array_get(arr, i), key));
}

static void assert_summary(json_t *arr, size_t i, const char *level, const char *component,
			   const char *msg, long long n)
{
	assert_string_equal(jstr(arr, i, "msg"), "repeated messages suppressed");
	assert_string_equal(jstr(arr, i, "level"), level);
	assert_string_equal(jstr(arr, i, "component"), component);
	assert_string_equal(jstr(arr, i, "repeated_msg"), msg);
	assert_int_equal(jint(arr, i, "suppressed"), n);
}

static void test_ratelimit_burst(void **state)
{
	json_t *arr;
	int i;

	(void)state;
	/* Fields differ, the pair is the same: one pair. */
	for (i = 0; i < 25; i++)
		NLOG(i == 20 ? NLOG_ERROR : NLOG_WARN, "backend", "cannot connect",
		     LF_INT("attempt", i));
	atomic_store(&fake_ms, 1000 + 9999);
	log_msg(NLOG_WARN, "backend", "cannot connect");
	arr = all_lines(logpath);
	assert_int_equal(json_array_size(arr), 10);
	for (i = 0; i < 10; i++)
		assert_int_equal(jint(arr, (size_t)i, "attempt"), i);
	json_decref(arr);

	/* The window has ended: the summary comes first, at the highest level dropped. */
	atomic_store(&fake_ms, 1000 + 10000);
	NLOG(NLOG_WARN, "backend", "cannot connect", LF_INT("attempt", 99));
	arr = all_lines(logpath);
	assert_int_equal(json_array_size(arr), 12);
	assert_summary(arr, 10, "error", "backend", "cannot connect", 16);
	assert_int_equal(jint(arr, 10, "window_ms"), 10000);
	assert_int_equal(jint(arr, 11, "attempt"), 99);
	json_decref(arr);

	/* A new window: ten more pass, then the summary comes with any later call. */
	for (i = 0; i < 13; i++)
		log_msg(NLOG_ERROR, "backend", "cannot connect");
	atomic_store(&fake_ms, 1000 + 30000);
	log_msg(NLOG_INFO, "fs", "unrelated");
	log_msg(NLOG_INFO, "fs", "unrelated");
	arr = all_lines(logpath);
	assert_int_equal(json_array_size(arr), 12 + 9 + 1 + 2);
	assert_summary(arr, 21, "error", "backend", "cannot connect", 4);
	assert_string_equal(jstr(arr, 22, "msg"), "unrelated");
	json_decref(arr);

	/* Pending counts are written before the destination changes. */
	for (i = 0; i < 12; i++)
		log_msg(NLOG_WARN, NULL, "x");
	assert_int_equal(log_open(logpath2, false), 0);
	log_msg(NLOG_WARN, NULL, "x");
	arr = all_lines(logpath);
	assert_int_equal(json_array_size(arr), 24 + 10 + 1);
	assert_true(json_is_null(json_object_get(json_array_get(arr, 34), "component")));
	assert_int_equal(jint(arr, 34, "suppressed"), 2);
	json_decref(arr);
	/* Still the same window: the pair stays limited in the new file. */
	arr = all_lines(logpath2);
	assert_int_equal(json_array_size(arr), 0);
	json_decref(arr);
	log_close();
	arr = all_lines(logpath2);
	assert_int_equal(json_array_size(arr), 1);
	assert_int_equal(jint(arr, 0, "suppressed"), 1);
	json_decref(arr);
	unlink(logpath2);
}

/* The defaults and the real clock: ten lines pass, the rest are counted. */
static void test_ratelimit_defaults(void **state)
{
	json_t *arr;
	int i;

	(void)state;
	log_ratelimit_configure(LOG_RATELIMIT_BURST, LOG_RATELIMIT_WINDOW_MS, NULL);
	for (i = 0; i < 30; i++)
		log_msg(NLOG_ERROR, "store", "flush failed: %s", "input/output error");
	log_close();
	arr = all_lines(logpath);
	assert_int_equal(json_array_size(arr), LOG_RATELIMIT_BURST + 1);
	assert_summary(arr, LOG_RATELIMIT_BURST, "error", "store",
		       "flush failed: input/output error", 30 - LOG_RATELIMIT_BURST);
	json_decref(arr);
}

static void test_ratelimit_distinct(void **state)
{
	char longmsg[400];
	json_t *arr;
	int i;

	(void)state;
	memset(longmsg, 'm', sizeof(longmsg) - 1);
	longmsg[sizeof(longmsg) - 1] = '\0';
	for (i = 0; i < 15; i++) {
		log_msg(NLOG_WARN, "store", "a");
		log_msg(NLOG_WARN, "store", "b");
		log_msg(NLOG_WARN, "backend", "a");	/* same msg, other component */
		log_msg(NLOG_INFO, "store", "a");	/* info is never limited */
		log_msg(NLOG_DEBUG, "store", "filtered out");
		/* Long texts that agree beyond what the table keeps are still two pairs. */
		longmsg[sizeof(longmsg) - 2] = 'x';
		log_msg(NLOG_ERROR, "store", "%s", longmsg);
		longmsg[sizeof(longmsg) - 2] = 'y';
		log_msg(NLOG_ERROR, "store", "%s", longmsg);
	}
	arr = all_lines(logpath);
	assert_int_equal(json_array_size(arr), 5 * 10 + 15);
	json_decref(arr);
	log_close();
	arr = all_lines(logpath);
	assert_int_equal(json_array_size(arr), 5 * 10 + 15 + 5);
	for (i = 65; i < 70; i++) {
		assert_int_equal(jint(arr, (size_t)i, "suppressed"), 5);
		/* A long message is kept cut, and says so. */
		if (strlen(jstr(arr, (size_t)i, "repeated_msg")) > 10)
			assert_non_null(strstr(jstr(arr, (size_t)i, "repeated_msg"), "mmm..."));
	}
	json_decref(arr);

	/* A pair forgotten for a new one has its pending count written first. */
	unlink(logpath);
	assert_int_equal(log_open(logpath, false), 0);
	for (i = 0; i < 15; i++)
		log_msg(NLOG_WARN, "store", "evicted");
	atomic_fetch_add(&fake_ms, 1);
	for (i = 0; i < LOG_RATELIMIT_SLOTS - 1; i++)
		log_msg(NLOG_WARN, "store", "filler %d", i);
	arr = all_lines(logpath);
	assert_int_equal(json_array_size(arr), 10 + LOG_RATELIMIT_SLOTS - 1);
	json_decref(arr);
	log_msg(NLOG_WARN, "store", "one too many");
	arr = all_lines(logpath);
	assert_int_equal(json_array_size(arr), 10 + LOG_RATELIMIT_SLOTS + 1);
	assert_summary(arr, 10 + LOG_RATELIMIT_SLOTS - 1, "warn", "store", "evicted", 5);
	json_decref(arr);

	/* Burst 0: no limiting at all. */
	unlink(logpath);
	log_ratelimit_configure(0, 10000, fake_clock);
	assert_int_equal(log_open(logpath, false), 0);
	for (i = 0; i < 50; i++)
		log_msg(NLOG_ERROR, "store", "a");
	arr = all_lines(logpath);
	assert_int_equal(json_array_size(arr), 50);
	json_decref(arr);
}

#define RL_THREADS 6
#define RL_LINES 3000
#define RL_HOT 5	/* pairs that most calls repeat */
#define RL_PAIRS 105	/* the others, more than LOG_RATELIMIT_SLOTS: pairs are evicted */
#define RL_STEPS 10	/* windows that end during the run */

static atomic_int rl_progress;

static void *rl_writer(void *arg)
{
	long id = (long)arg;
	int i, pair;

	for (i = 0; i < RL_LINES; i++) {
		pair = i % 4 ? i % RL_HOT : RL_HOT + (int)((i / 4 + id) % (RL_PAIRS - RL_HOT));
		log_msg(i % 3 ? NLOG_ERROR : NLOG_WARN, "test", "failure %d", pair);
		atomic_fetch_add(&rl_progress, 1);
	}
	return NULL;
}

/* Threads, evictions and windows ending mid-run: every dropped line is counted once. */
static void test_ratelimit_threads(void **state)
{
	long long seen[RL_PAIRS] = { 0 };
	pthread_t t[RL_THREADS];
	long long total = 0;
	unsigned steps = 0;
	json_t *arr, *j;
	size_t i;
	int pair;

	(void)state;
	/* Windows end at points of the run, not of time, so a slow machine sees the same. */
	log_ratelimit_configure(3, 10000, fake_clock);
	atomic_store(&rl_progress, 0);
	for (i = 0; i < RL_THREADS; i++)
		assert_int_equal(pthread_create(&t[i], NULL, rl_writer, (void *)i), 0);
	for (steps = 1; steps < RL_STEPS; steps++) {
		while (atomic_load(&rl_progress) < (int)(steps * RL_THREADS * RL_LINES / RL_STEPS))
			usleep(200);
		atomic_fetch_add(&fake_ms, 10000);
	}
	for (i = 0; i < RL_THREADS; i++)
		pthread_join(t[i], NULL);
	log_close();
	arr = all_lines(logpath);
	json_array_foreach(arr, i, j) {
		const char *msg = json_string_value(json_object_get(j, "msg"));
		const char *rep = json_string_value(json_object_get(j, "repeated_msg"));

		if (rep) {
			assert_string_equal(msg, "repeated messages suppressed");
			assert_int_equal(sscanf(rep, "failure %d", &pair), 1);
			seen[pair] += json_integer_value(json_object_get(j, "suppressed"));
		} else {
			assert_int_equal(sscanf(msg, "failure %d", &pair), 1);
			seen[pair]++;
		}
		assert_true(pair >= 0 && pair < RL_PAIRS);
	}
	for (pair = 0; pair < RL_PAIRS; pair++)
		total += seen[pair];
	assert_int_equal(total, (long long)RL_THREADS * RL_LINES);
	/* Limiting did happen: the hot pairs alone get three quarters of the calls. */
	assert_true(json_array_size(arr) < (size_t)RL_THREADS * RL_LINES / 2);
	print_message("%zu lines for %d calls, %u clock steps\n", json_array_size(arr),
		      RL_THREADS * RL_LINES, steps);
	json_decref(arr);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_json_line, setup, teardown),
		cmocka_unit_test_setup_teardown(test_printf_message, setup, teardown),
		cmocka_unit_test_setup_teardown(test_level_filter, setup, teardown),
		cmocka_unit_test_setup_teardown(test_nulls_and_hostile_strings, setup, teardown),
		cmocka_unit_test_setup_teardown(test_text_format, setup, teardown),
		cmocka_unit_test_setup_teardown(test_text_newline, setup, teardown),
		cmocka_unit_test_setup_teardown(test_destinations, setup, teardown),
		cmocka_unit_test_setup_teardown(test_errno_kept, setup, teardown),
		cmocka_unit_test_setup_teardown(test_concurrent_lines, setup, teardown),
		cmocka_unit_test_setup_teardown(test_ratelimit_burst, rl_setup, rl_teardown),
		cmocka_unit_test_setup_teardown(test_ratelimit_defaults, rl_setup, rl_teardown),
		cmocka_unit_test_setup_teardown(test_ratelimit_distinct, rl_setup, rl_teardown),
		cmocka_unit_test_setup_teardown(test_ratelimit_threads, rl_setup, rl_teardown),
	};

	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
