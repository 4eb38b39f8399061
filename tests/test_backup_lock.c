/*
 * Backups, continued (see test_backup.h): stores sharing one backup
 * directory. Two stores (of one process, or of two) creating automatic-id
 * backups at once never share an id, a temporary file or an archive; a lock
 * held by another process makes a create, prune, verify or restore wait,
 * then fail with EBUSY after backend_timeout; an archive already at the
 * final name is never replaced (with RENAME_NOREPLACE, and with the
 * hard-link fallback); a failed create removes only what it made.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <spawn.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

#include <cmocka.h>

#include "store/backup.h"
#include "store/kv_internal.h"
#include "tests/fault_shim.h"
#include "tests/test_backup.h"

#define ROUNDS 12

/* One of the stores racing: ROUNDS automatic-id creates, n = the round. */
struct creator {
	struct kv_store *kv;
	const char *owner;
	uint64_t n_id;
	pthread_barrier_t *start;	/* NULL: none */
	int rets[ROUNDS];
	char ids[ROUNDS][KV_BACKUP_ID_MAX + 1];
	char err[512];
};

/* No cmocka assertion off the test's thread: results are checked after. */
static void *create_many(void *arg)
{
	struct creator *c = arg;
	struct kv_backup_info info;
	char num[8];

	if (c->start)
		pthread_barrier_wait(c->start);
	for (int i = 0; i < ROUNDS; i++) {
		snprintf(num, sizeof(num), "%04d", i);
		c->rets[i] = kv_open_file(c->kv, c->n_id, true);
		if (c->rets[i])
			continue;
		if (kv_write(c->kv, c->n_id, num, 4, 0) != 4)
			c->rets[i] = -EIO;
		kv_release_file(c->kv, c->n_id);
		if (c->rets[i])
			continue;
		c->rets[i] = kv_backup_create(c->kv, NULL, NULL, &info, c->err, sizeof(c->err));
		if (!c->rets[i])
			snprintf(c->ids[i], sizeof(c->ids[i]), "%s", info.id);
	}
	return NULL;
}

static int str_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/*
 * After two stores took ROUNDS automatic-id backups each at the same time:
 * every create succeeded with its own id, the index lists every one, the
 * directory holds exactly their archives (no temporary file left), and each
 * verifies and restores the state of the store it was taken from at that
 * round (restored into the fixture's store).
 */
static void check_creates(struct fx *f, struct creator *c)
{
	const char *ids[2 * ROUNDS], *files[2 * ROUNDS + 2];
	char file[2 * ROUNDS][KV_BACKUP_ID_MAX + 16], want[4096] = "", names[4096], num[8];
	struct kv_backup_info *list, info;
	uint64_t restored;
	size_t n, k = 0;

	for (int i = 0; i < 2; i++)
		for (int r = 0; r < ROUNDS; r++) {
			if (c[i].rets[r])
				fail_msg("store %s, round %d: %d %s", c[i].owner, r, c[i].rets[r],
					 c[i].err);
			ids[k++] = c[i].ids[r];
		}
	qsort(ids, k, sizeof(*ids), str_cmp);
	for (size_t i = 1; i < k; i++)
		if (!strcmp(ids[i - 1], ids[i]))
			fail_msg("backup id %s given to two creates", ids[i]);
	files[0] = ".lock";
	files[1] = "index.json";
	for (size_t i = 0; i < k; i++) {
		snprintf(file[i], sizeof(file[i]), "%s.tar.zst", ids[i]);
		files[i + 2] = file[i];
	}
	qsort(files, k + 2, sizeof(*files), str_cmp);
	for (size_t i = 0; i < k + 2; i++)
		snprintf(want + strlen(want), sizeof(want) - strlen(want), "%s%s", i ? "," : "",
			 files[i]);
	dir_names(f->dir, names, sizeof(names));
	assert_string_equal(names, want);
	assert_int_equal(kv_backup_list(KV(f), &list, &n, f->err, sizeof(f->err)), 0);
	assert_int_equal(n, k);
	for (size_t i = 0; i < n; i++)
		assert_non_null(bsearch(&(const char *){ list[i].id }, ids, k, sizeof(*ids),
					str_cmp));
	free(list);
	for (int i = 0; i < 2; i++)
		for (int r = 0; r < ROUNDS; r++) {
			assert_int_equal(kv_backup_verify(KV(f), c[i].ids[r], &info, f->err,
							  sizeof(f->err)), 0);
			assert_int_equal(kv_backup_restore(KV(f), c[i].ids[r], true, &restored,
							   f->err, sizeof(f->err)), 0);
			snprintf(num, sizeof(num), "%04d", r);
			assert_str(KV(f), "owner", c[i].owner);
			assert_str(KV(f), "n", num);
		}
}

/* Two stores of this process, one backup directory, creating at once. */
void test_lock_concurrent_creates(void **state)
{
	struct fx *f = *state;
	struct mem_store other;
	struct creator c[2] = { { .kv = KV(f), .owner = "A" }, { .owner = "B" } };
	pthread_barrier_t start;
	pthread_t t[2];

	mem_store_open(&other, true);
	other.o.backup_dir = f->dir;
	mem_store_reopen(&other, true);
	c[1].kv = other.kv;
	pthread_barrier_init(&start, NULL, 2);
	for (int i = 0; i < 2; i++) {
		put_str(c[i].kv, "owner", c[i].owner);
		put_str(c[i].kv, "n", "----");
		c[i].n_id = find(c[i].kv, "n");
		c[i].start = &start;
	}
	for (int i = 0; i < 2; i++)
		assert_int_equal(pthread_create(&t[i], NULL, create_many, &c[i]), 0);
	for (int i = 0; i < 2; i++)
		assert_int_equal(pthread_join(t[i], NULL), 0);
	pthread_barrier_destroy(&start);
	mem_store_close(&other);
	check_creates(f, c);
}

/*
 * The other process of test_lock_processes (this program run with
 * --lock-child DIR OWNER): its own store with backup_dir DIR; says "ready",
 * waits for a line on its input, then prints "RET ID-or-error" per round.
 */
int lock_child(const char *dir, const char *owner)
{
	struct mem_store st;
	struct creator c = { .owner = owner };
	char line[16];

	mem_store_open(&st, true);
	st.o.backup_dir = dir;
	mem_store_reopen(&st, true);
	c.kv = st.kv;
	put_str(c.kv, "owner", owner);
	put_str(c.kv, "n", "----");
	c.n_id = find(c.kv, "n");
	printf("ready\n");
	fflush(stdout);
	if (!fgets(line, sizeof(line), stdin))
		return 1;
	create_many(&c);
	for (int r = 0; r < ROUNDS; r++)
		printf("%d %s\n", c.rets[r], c.rets[r] ? c.err : c.ids[r]);
	mem_store_close(&st);
	return 0;
}

/*
 * The same with two processes, each with its own store (this program run
 * twice as lock_child), started together.
 */
void test_lock_processes(void **state)
{
	struct fx *f = *state;
	struct creator c[2] = { { .owner = "A" }, { .owner = "B" } };
	char *argv[2][5], line[1024];
	FILE *out[2];
	int in[2], status;
	pid_t pid[2];

	for (int i = 0; i < 2; i++) {
		posix_spawn_file_actions_t fa;
		int to[2], from[2];

		assert_int_equal(pipe2(to, O_CLOEXEC), 0);
		assert_int_equal(pipe2(from, O_CLOEXEC), 0);
		posix_spawn_file_actions_init(&fa);
		posix_spawn_file_actions_adddup2(&fa, to[0], 0);
		posix_spawn_file_actions_adddup2(&fa, from[1], 1);
		argv[i][0] = "test_backup";
		argv[i][1] = "--lock-child";
		argv[i][2] = f->dir;
		argv[i][3] = (char *)c[i].owner;
		argv[i][4] = NULL;
		assert_int_equal(posix_spawn(&pid[i], "/proc/self/exe", &fa, NULL, argv[i],
					     environ), 0);
		posix_spawn_file_actions_destroy(&fa);
		close(to[0]);
		close(from[1]);
		in[i] = to[1];
		assert_non_null(out[i] = fdopen(from[0], "r"));
		assert_non_null(fgets(line, sizeof(line), out[i]));
		assert_string_equal(line, "ready\n");
	}
	for (int i = 0; i < 2; i++) {
		assert_int_equal(write(in[i], "go\n", 3), 3);
		close(in[i]);
	}
	for (int i = 0; i < 2; i++) {
		for (int r = 0; r < ROUNDS; r++) {
			char *sp;

			assert_non_null(fgets(line, sizeof(line), out[i]));
			line[strcspn(line, "\n")] = '\0';
			assert_non_null(sp = strchr(line, ' '));
			*sp = '\0';
			c[i].rets[r] = atoi(line);
			snprintf(c[i].rets[r] ? c[i].err : c[i].ids[r],
				 c[i].rets[r] ? sizeof(c[i].err) : sizeof(c[i].ids[r]), "%s", sp + 1);
		}
		fclose(out[i]);
		assert_int_equal(waitpid(pid[i], &status, 0), pid[i]);
		assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	}
	check_creates(f, c);
}

/*
 * A child process that holds dir/.lock (LOCK_EX or LOCK_SH) until the
 * returned descriptor is closed; returns once it holds it.
 */
static pid_t hold_lock(const char *dir, int how, int *release)
{
	int ready[2], go[2];
	char path[256], c = 0;
	pid_t pid;

	snprintf(path, sizeof(path), "%s/.lock", dir);
	assert_int_equal(pipe(ready), 0);
	assert_int_equal(pipe(go), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		/* Only async-signal-safe calls: the parent has threads. */
		int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);

		close(ready[0]);
		close(go[1]);
		if (fd < 0 || flock(fd, how))
			_exit(1);
		if (write(ready[1], &c, 1) != 1)
			_exit(1);
		while (read(go[0], &c, 1) > 0)
			;
		_exit(0);
	}
	close(ready[1]);
	close(go[0]);
	assert_int_equal(read(ready[0], &c, 1), 1);
	close(ready[0]);
	*release = go[1];
	return pid;
}

static void release_lock(pid_t pid, int release)
{
	int status;

	close(release);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

/* A create that must give up: EBUSY after the bound, nothing changed. */
static void create_busy(struct fx *f, const char *before)
{
	struct kv_backup_info info;
	char names[1024];
	int64_t t0 = kv_mono_ms(), took;

	assert_int_equal(kv_backup_create(KV(f), NULL, NULL, &info, f->err, sizeof(f->err)),
			 -EBUSY);
	took = kv_mono_ms() - t0;
	assert_true(took >= 300);
	assert_true(took < 5000);
	assert_non_null(strstr(f->err, "in use by another process"));
	dir_names(f->dir, names, sizeof(names));
	assert_string_equal(names, before);
}

/*
 * Another process holding the lock: exclusively, every backup command of
 * the store waits backend_timeout (300 ms here) and fails with EBUSY and
 * a clear message, changing nothing; shared (as a verify or a restore
 * holds it), verify and restore run while create and prune wait and fail.
 * Released, they all work. The lock file is 0600 and never followed.
 */
void test_lock_held_elsewhere(void **state)
{
	struct fx *f = *state;
	struct kv_backup_info info, *list;
	char path[256], names[1024], *removed;
	size_t nremoved, n;
	uint64_t restored;
	struct stat st;
	int release;
	pid_t pid;

	f->st.o.backend_timeout_ms = 300;
	mem_store_reopen(&f->st, true);
	put_str(KV(f), "k", "v");
	assert_int_equal(kv_backup_create(KV(f), "base", NULL, &info, f->err, sizeof(f->err)),
			 0);
	snprintf(path, sizeof(path), "%s/.lock", f->dir);
	assert_int_equal(lstat(path, &st), 0);
	assert_true(S_ISREG(st.st_mode));
	assert_int_equal(st.st_mode & 07777, 0600);
	dir_names(f->dir, names, sizeof(names));
	assert_string_equal(names, ".lock,base.tar.zst,index.json");

	pid = hold_lock(f->dir, LOCK_EX, &release);
	create_busy(f, names);
	assert_int_equal(kv_backup_create(KV(f), "named", NULL, &info, f->err, sizeof(f->err)),
			 -EBUSY);
	assert_int_equal(kv_backup_prune(KV(f), 1, &removed, &nremoved, f->err, sizeof(f->err)),
			 -EBUSY);
	assert_int_equal(kv_backup_verify(KV(f), "base", &info, f->err, sizeof(f->err)),
			 -EBUSY);
	assert_int_equal(kv_backup_restore(KV(f), "base", false, &restored, f->err,
					   sizeof(f->err)), -EBUSY);
	assert_non_null(strstr(f->err, "in use by another process"));
	/* The list reads index.json, replaced whole: never waits. */
	assert_int_equal(kv_backup_list(KV(f), &list, &n, f->err, sizeof(f->err)), 0);
	assert_int_equal(n, 1);
	free(list);
	release_lock(pid, release);

	pid = hold_lock(f->dir, LOCK_SH, &release);
	assert_int_equal(kv_backup_verify(KV(f), "base", &info, f->err, sizeof(f->err)), 0);
	put_str(KV(f), "k", "changed");
	assert_int_equal(kv_backup_restore(KV(f), "base", false, &restored, f->err,
					   sizeof(f->err)), 0);
	assert_str(KV(f), "k", "v");
	create_busy(f, names);
	assert_int_equal(kv_backup_prune(KV(f), 1, &removed, &nremoved, f->err, sizeof(f->err)),
			 -EBUSY);
	release_lock(pid, release);

	assert_int_equal(kv_backup_create(KV(f), "named", NULL, &info, f->err, sizeof(f->err)),
			 0);
	assert_int_equal(kv_backup_prune(KV(f), 1, &removed, &nremoved, f->err, sizeof(f->err)),
			 0);
	assert_int_equal(nremoved, 1);
	free(removed);
	dir_names(f->dir, names, sizeof(names));
	assert_string_equal(names, ".lock,index.json,named.tar.zst");

	/* A symlink in its place is refused, its target never created. */
	assert_int_equal(unlink(path), 0);
	assert_int_equal(symlink("elsewhere", path), 0);
	assert_int_equal(kv_backup_create(KV(f), NULL, NULL, &info, f->err, sizeof(f->err)),
			 -ELOOP);
	assert_non_null(strstr(f->err, ".lock"));
	snprintf(path, sizeof(path), "%s/elsewhere", f->dir);
	assert_int_equal(access(path, F_OK), -1);
}

#define SQUAT "another process's archive\n"

/* Writes SQUAT as a new file at path; with unlink first, in place of it. */
static void squat(const char *path, bool replace)
{
	int fd;

	if (replace)
		assert_int_equal(unlink(path), 0);
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, SQUAT, strlen(SQUAT)), (ssize_t)strlen(SQUAT));
	close(fd);
}

static void squat_before(void *arg, const char *from, const char *to)
{
	(void)arg;
	(void)from;
	squat(to, false);
}

static void squat_after(void *arg, const char *from, const char *to)
{
	(void)arg;
	(void)from;
	squat(to, true);
}

static void assert_squatted(struct fx *f, const char *id)
{
	char path[256], buf[64] = { 0 };
	int fd;

	snprintf(path, sizeof(path), "%s/%s.tar.zst", f->dir, id);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	assert_true(fd >= 0);
	assert_true(read(fd, buf, sizeof(buf) - 1) > 0);
	close(fd);
	assert_string_equal(buf, SQUAT);
}

/*
 * An archive that appears at the final name while a create writes its own
 * (made by something that ignores the lock) is never replaced: the create
 * fails with EEXIST, "exists", and leaves neither its temporary file nor an
 * index entry; the same with a filesystem refusing RENAME_NOREPLACE (EINVAL:
 * the hard-link fallback), which otherwise works. A create that fails after
 * its rename removes its archive only if the file there is still its own.
 */
void test_lock_never_replaces(void **state)
{
	struct fx *f = *state;
	struct kv_backup_info info, *list;
	char names[1024];
	size_t n;

	put_str(KV(f), "k", "v");
	assert_int_equal(kv_backup_create(KV(f), "one", NULL, &info, f->err, sizeof(f->err)),
			 0);

	fault_rename_hook("two.tar.zst", false, squat_before, NULL);
	assert_int_equal(kv_backup_create(KV(f), "two", NULL, &info, f->err, sizeof(f->err)),
			 -EEXIST);
	fault_rename_hook(NULL, false, NULL, NULL);
	assert_non_null(strstr(f->err, "backup two exists"));
	assert_squatted(f, "two");
	dir_names(f->dir, names, sizeof(names));
	assert_string_equal(names, ".lock,index.json,one.tar.zst,two.tar.zst");

	/* The same without RENAME_NOREPLACE: link(2) refuses it too. */
	fault_rename_hook("three.tar.zst", false, squat_before, NULL);
	fault_arm(F_RENAME, "three.tar.zst", EINVAL, 0, -1, false);
	assert_int_equal(kv_backup_create(KV(f), "three", NULL, &info, f->err, sizeof(f->err)),
			 -EEXIST);
	assert_int_equal(fault_hits(), 1);
	fault_clear();
	fault_rename_hook(NULL, false, NULL, NULL);
	assert_squatted(f, "three");
	/* ...and makes the archive when the name is free. */
	fault_arm(F_RENAME, "four.tar.zst", EINVAL, 0, -1, false);
	assert_int_equal(kv_backup_create(KV(f), "four", NULL, &info, f->err, sizeof(f->err)),
			 0);
	assert_int_equal(fault_hits(), 1);
	fault_clear();
	assert_int_equal(kv_backup_verify(KV(f), "four", &info, f->err, sizeof(f->err)), 0);
	dir_names(f->dir, names, sizeof(names));
	assert_string_equal(names, ".lock,four.tar.zst,index.json,one.tar.zst,three.tar.zst,"
				   "two.tar.zst");

	/* Replaced between the rename and the failed directory fsync (the
	 * archive's own fsync comes first): the failed create leaves it. */
	fault_rename_hook("five.tar.zst", true, squat_after, NULL);
	fault_arm(F_FSYNC, "/backups", EIO, 1, 1, false);
	assert_int_equal(kv_backup_create(KV(f), "five", NULL, &info, f->err, sizeof(f->err)),
			 -EIO);
	assert_int_equal(fault_hits(), 1);
	fault_clear();
	fault_rename_hook(NULL, false, NULL, NULL);
	assert_squatted(f, "five");
	assert_int_equal(kv_backup_list(KV(f), &list, &n, f->err, sizeof(f->err)), 0);
	assert_int_equal(n, 2);
	assert_string_equal(list[0].id, "one");
	assert_string_equal(list[1].id, "four");
	free(list);
}

/*
 * backup_dir a dangling symlink: mkdir says it exists, the lock file
 * cannot be made in it. That fails at once with ENOENT, naming the lock
 * file, rather than retrying until backend_timeout (set far beyond the
 * test's own timeout, so that a retry loop fails the test).
 */
void test_lock_dangling_dir(void **state)
{
	struct fx *f = *state;
	struct kv_backup_info info;
	char target[256];

	f->st.o.backend_timeout_ms = 3600 * 1000;
	mem_store_reopen(&f->st, true);
	put_str(KV(f), "k", "v");
	rmdir(f->dir); /* if a setup made it */
	assert_int_equal(access(f->dir, F_OK), -1);
	snprintf(target, sizeof(target), "%s/nowhere", f->root);
	assert_int_equal(symlink(target, f->dir), 0);
	assert_int_equal(kv_backup_create(KV(f), NULL, NULL, &info, f->err, sizeof(f->err)),
			 -ENOENT);
	assert_non_null(strstr(f->err, ".lock"));
	assert_int_equal(access(target, F_OK), -1);
	assert_int_equal(unlink(f->dir), 0);
}

