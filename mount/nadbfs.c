/*
 * nadbfs: mounts a nadb store with FUSE.
 *
 * Life cycle: configuration -> store opened (lock taken, records loaded, no
 * thread yet) -> FUSE session and mount -> daemonize (the parent exits only
 * now, so the mount is usable when the command returns) -> store threads,
 * READY=1 -> session loop -> unmount -> the store flushes everything -> exit.
 * Everything that can fail for a user's mistake happens before daemonizing,
 * so that the command itself reports it.
 *
 * Signals: SIGTERM/SIGINT end the loop through libfuse's handler and take
 * the same flushing path as an unmount. SIGHUP is blocked in every thread
 * from the start and taken by a thread of its own with sigwait(), so it can
 * never end the daemon.
 */
#define FUSE_USE_VERSION 314

#include <errno.h>
#include <limits.h>
#include <fuse_lowlevel.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include "conf/conf.h"
#include "fs/fs.h"
#include "fs/fs_loop.h"
#include "mount/nadbfs.h"
#include "mount/readahead.h"
#include "store/kv.h"
#include "util/log.h"

/* How long a second daemon waits for the previous owner of a data directory. */
#define NADBFS_LOCK_TIMEOUT_MS 30000

/*
 * What a reload needs: the command line to rebuild the configuration from
 * (files, SOURCE, -o options, in the same layers as at mount), the store to
 * retune, and the configuration in force. lock serializes reloads (SIGHUP
 * and the ctl command may come together).
 */
struct reloader {
	pthread_mutex_t lock;
	const struct nadbfs_cli *cli;
	struct conf *conf;	/* lock */
	struct kv_store *kv;
	struct fs *fs;		/* set once made; NULL before */
	bool to_tty;		/* stderr was a terminal when logging started */
};

static void set_log_format(const struct conf *c, bool to_tty);
static void kv_options_from_conf(const struct conf *c, struct kv_options *o);

static bool str_differ(const char *a, const char *b)
{
	return strcmp(a ? a : "", b ? b : "") != 0;
}

/* next takes the string in force; running, about to be freed, takes next's. */
static void keep_str(char **running, char **next)
{
	char *t = *running;

	*running = *next;
	*next = t;
}

/*
 * Settings a running mount cannot take: they need a remount. The Redis
 * connection settings (timeout included) are fixed in every pooled
 * connection when it is made; ctl_mode and close_to_open are read by
 * requests in flight without a lock, and ctl_mode goes with allow_other.
 * Each changed one is warned about and next keeps the value in force, so
 * that next, once it is the running configuration, says what is in effect
 * and the next reload warns again while the file still differs from it.
 * The strings move by swapping: running is freed right after.
 */
static void keep_fixed(struct conf *running, struct conf *next)
{
	static const char fmt[] = "reload: %s changes at the next mount, not now";
	struct conf *o = running, *n = next;

	if (o->backend != n->backend || str_differ(o->data_dir, n->data_dir)) {
		log_msg(NLOG_WARN, "conf", fmt, "the backend or data_dir");
		n->backend = o->backend;
		keep_str(&o->data_dir, &n->data_dir);
	}
	if (strcmp(o->db, n->db) || strcmp(o->ns, n->ns)) {
		log_msg(NLOG_WARN, "conf", fmt, "db/namespace");
		keep_str(&o->db, &n->db);
		keep_str(&o->ns, &n->ns);
	}
	if (o->allow_other != n->allow_other || o->max_threads != n->max_threads) {
		log_msg(NLOG_WARN, "conf", fmt, "allow_other/max_threads");
		n->allow_other = o->allow_other;
		n->max_threads = o->max_threads;
	}
	if (o->ctl_mode != n->ctl_mode) {
		log_msg(NLOG_WARN, "conf", fmt, "ctl_mode");
		n->ctl_mode = o->ctl_mode;
	}
	if (o->close_to_open != n->close_to_open) {
		log_msg(NLOG_WARN, "conf", fmt, "close_to_open");
		n->close_to_open = o->close_to_open;
	}
	if (o->compression != n->compression ||
	    o->compression_min_size != n->compression_min_size) {
		log_msg(NLOG_WARN, "conf", fmt, "compression");
		n->compression = o->compression;
		n->compression_min_size = o->compression_min_size;
	}
	if (str_differ(o->redis_host, n->redis_host) || o->redis_port != n->redis_port ||
	    str_differ(o->redis_socket, n->redis_socket) ||
	    o->redis_database != n->redis_database ||
	    str_differ(o->redis_password, n->redis_password) ||
	    o->redis_timeout_ms != n->redis_timeout_ms ||
	    o->redis_pool_size != n->redis_pool_size ||
	    str_differ(o->redis_key_prefix, n->redis_key_prefix) ||
	    str_differ(o->redis_spill_dir, n->redis_spill_dir)) {
		log_msg(NLOG_WARN, "conf", fmt, "[redis]");
		keep_str(&o->redis_host, &n->redis_host);
		n->redis_port = o->redis_port;
		keep_str(&o->redis_socket, &n->redis_socket);
		n->redis_database = o->redis_database;
		keep_str(&o->redis_password, &n->redis_password);
		n->redis_timeout_ms = o->redis_timeout_ms;
		n->redis_pool_size = o->redis_pool_size;
		keep_str(&o->redis_key_prefix, &n->redis_key_prefix);
		keep_str(&o->redis_spill_dir, &n->redis_spill_dir);
	}
	if (str_differ(o->backup_dir, n->backup_dir)) {
		log_msg(NLOG_WARN, "conf", fmt, "backup_dir");
		keep_str(&o->backup_dir, &n->backup_dir);
	}
	if (str_differ(o->log_file, n->log_file)) {
		log_msg(NLOG_WARN, "conf", fmt, "log file");
		keep_str(&o->log_file, &n->log_file);
	}
}

/*
 * Seconds the kernel may cache an attribute or entry. On a store several
 * mounts share, no longer than coherence_delay: other mounts' changes are
 * invalidated as they arrive, but an invalidation can race a lookup reply
 * already on its way (the kernel then caches the old answer afresh), and
 * only the timeout bounds how long that stale answer lives.
 */
static double kernel_timeout(const struct conf *running, const struct conf *c, uint64_t ms)
{
	/* The backend is the mounted one: a reload cannot change it. */
	if (running->backend == CONF_BACKEND_REDIS && ms > c->coherence_delay_ms)
		ms = c->coherence_delay_ms;
	return (double)ms / 1000.0;
}

/*
 * Rebuilds the configuration and applies what a running mount can change:
 * log level and format, buffer size, flush interval, backend timeout, value
 * size limit, default TTL, sweep period, query cache size, tx_max_bytes and
 * the kernel's attribute and entry timeouts; keep_fixed() warns about the
 * rest and keeps their values in force.
 * A configuration with any error
 * changes nothing. Returns 0 or -EINVAL with the reason in msg.
 */
static int reload(void *arg, char *msg, size_t len)
{
	struct reloader *r = arg;
	struct nadbfs_fuse_opts fo;
	struct kv_options ko;
	struct conf next;
	int ret = 0;

	pthread_mutex_lock(&r->lock);
	conf_init(&next);
	if (nadbfs_cli_apply(r->cli, &next, &fo, msg, len)) {
		log_msg(NLOG_WARN, "conf", "reload refused, nothing changed: %s", msg);
		conf_free(&next);
		ret = -EINVAL;
		goto out;
	}
	nadbfs_fuse_opts_free(&fo);
	if (r->cli->debug)
		next.log_level = NLOG_DEBUG;
	keep_fixed(r->conf, &next);
	log_set_level(next.log_level);
	set_log_format(&next, r->to_tty);
	kv_options_from_conf(&next, &ko);
	kv_reconfigure(r->kv, &ko);
	if (r->fs)
		fs_set_timeouts(r->fs, kernel_timeout(r->conf, &next, next.attr_timeout_ms),
				kernel_timeout(r->conf, &next, next.entry_timeout_ms));
	conf_free(r->conf);
	*r->conf = next;
	log_msg(NLOG_INFO, "conf", "configuration reloaded");
out:
	pthread_mutex_unlock(&r->lock);
	return ret;
}

struct hup_thread {
	pthread_t tid;
	atomic_bool stop;
	bool running;
	struct reloader *reloader;
};

static void *hup_main(void *arg)
{
	struct hup_thread *h = arg;
	char msg[512];
	sigset_t set;
	int sig;

	sigemptyset(&set);
	sigaddset(&set, SIGHUP);
	for (;;) {
		if (sigwait(&set, &sig))
			continue;
		if (atomic_load(&h->stop))
			break;
		reload(h->reloader, msg, sizeof(msg));
	}
	return NULL;
}

static int hup_start(struct hup_thread *h)
{
	int ret;

	atomic_store(&h->stop, false);
	ret = pthread_create(&h->tid, NULL, hup_main, h);
	if (ret)
		return -ret;
	h->running = true;
	return 0;
}

static void hup_stop(struct hup_thread *h)
{
	if (!h->running)
		return;
	atomic_store(&h->stop, true);
	pthread_kill(h->tid, SIGHUP);
	pthread_join(h->tid, NULL);
	h->running = false;
}

/* Only reached if SIGHUP were ever unblocked: it must not end the daemon. */
static void hup_ignore(int sig)
{
	(void)sig;
}

static enum log_level fuse_level(enum fuse_log_level level)
{
	if (level <= FUSE_LOG_ERR)
		return NLOG_ERROR;
	if (level == FUSE_LOG_WARNING)
		return NLOG_WARN;
	if (level == FUSE_LOG_DEBUG)
		return NLOG_DEBUG;
	return NLOG_INFO;
}

/*
 * libfuse's own messages, through our logger like everything else. libfuse
 * sometimes builds one line from several calls, so pieces are collected per
 * thread until the newline.
 */
static void fuse_log_bridge(enum fuse_log_level level, const char *fmt, va_list ap)
{
	static _Thread_local char line[1024];
	static _Thread_local size_t len;
	char *nl;
	int n;

	n = vsnprintf(line + len, sizeof(line) - len, fmt, ap);
	if (n < 0)
		return;
	len += (size_t)n < sizeof(line) - len ? (size_t)n : sizeof(line) - len - 1;
	/* A line too long for the buffer is cut rather than lost. */
	if (len == sizeof(line) - 1 && !strchr(line, '\n'))
		line[len - 1] = '\n';
	while ((nl = strchr(line, '\n'))) {
		*nl = '\0';
		if (nl > line)
			log_msg(fuse_level(level), "fs", "%s", line);
		len -= (size_t)(nl + 1 - line);
		memmove(line, nl + 1, len + 1);
	}
}

/* Text for people at a terminal, JSON for journals and files, unless configured. */
static void set_log_format(const struct conf *c, bool to_tty)
{
	if (c->log_format == CONF_LOG_TEXT || (c->log_format == CONF_LOG_AUTO && to_tty))
		log_set_format(LOG_FORMAT_TEXT);
	else
		log_set_format(LOG_FORMAT_JSON);
}

static int check_mountpoint(const char *path)
{
	struct stat st;

	if (stat(path, &st)) {
		int e = errno;

		if (e == ENOTCONN)
			fprintf(stderr, "nadbfs: mountpoint %s: %s (a stale mount? try fusermount3 -u %s)\n",
				path, strerror(e), path);
		else if (e == ENOENT)
			fprintf(stderr, "nadbfs: mountpoint %s does not exist\n", path);
		else
			fprintf(stderr, "nadbfs: mountpoint %s: %s\n", path, strerror(e));
		return -e;
	}
	if (!S_ISDIR(st.st_mode)) {
		fprintf(stderr, "nadbfs: mountpoint %s is not a directory\n", path);
		return -ENOTDIR;
	}
	return 0;
}

static void kv_options_from_conf(const struct conf *c, struct kv_options *o)
{
	memset(o, 0, sizeof(*o));
	o->backend = c->backend == CONF_BACKEND_REDIS ? KV_BACKEND_REDIS : KV_BACKEND_FS;
	o->params.data_dir = c->data_dir;
	o->params.db = c->db;
	o->params.ns = c->ns;
	o->params.compression =
		c->compression == CONF_COMPRESSION_ZSTD ? KV_ENC_ZSTD : KV_ENC_NONE;
	o->params.compression_min_size = c->compression_min_size;
	o->params.lock_timeout_ms = NADBFS_LOCK_TIMEOUT_MS;
	o->params.redis_host = c->redis_host;
	o->params.redis_port = c->redis_port;
	o->params.redis_socket = c->redis_socket;
	o->params.redis_password = c->redis_password;
	o->params.redis_database = c->redis_database;
	o->params.redis_timeout_ms = c->redis_timeout_ms;
	/* One connection per FUSE worker, plus the flusher's and the sweeper's. */
	o->params.redis_pool_size = c->redis_pool_size ? c->redis_pool_size : c->max_threads + 2;
	o->params.redis_key_prefix = c->redis_key_prefix;
	o->spill_dir = c->redis_spill_dir;
	o->buffer_size = c->buffer_size;
	o->flush_interval_ms = c->flush_interval_ms;
	o->backend_timeout_ms = c->backend_timeout_ms;
	o->max_value_size = c->max_value_size;
	o->default_ttl_s = c->default_ttl_s;
	o->ttl_sweep_ms = c->ttl_sweep_ms;
	o->query_cache_size = c->query_cache_size;
	o->tx_max_bytes = c->tx_max_bytes;
	o->backup_dir = c->backup_dir;
	o->root_uid = getuid();
	o->root_gid = getgid();
}

/* "fsname=SOURCE", with the commas and backslashes libfuse's -o parser splits on escaped. */
static char *fsname_opt(const char *source)
{
	size_t n = strlen("fsname=");
	char *out, *d;

	for (const char *p = source; *p; p++)
		n += (*p == ',' || *p == '\\') ? 2 : 1;
	out = malloc(n + 1);
	if (!out)
		return NULL;
	d = stpcpy(out, "fsname=");
	for (const char *p = source; *p; p++) {
		if (*p == ',' || *p == '\\')
			*d++ = '\\';
		*d++ = *p;
	}
	*d = '\0';
	return out;
}

/*
 * The options handed to libfuse: what the user asked for, plus what the
 * daemon always wants (the kernel checks permissions; /proc/mounts shows
 * "SOURCE on MNT type fuse.nadbfs" without any password).
 */
static int build_fuse_args(const struct nadbfs_cli *cli, const struct conf *c,
			   const struct nadbfs_fuse_opts *fo, struct fuse_args *args)
{
	char *source = NULL, *fsname = NULL, *opts = NULL;
	int ret = -ENOMEM;

	if (fo->fsname)
		source = strdup(fo->fsname);
	else if (c->backend == CONF_BACKEND_FS)
		source = strdup(c->data_dir);
	else
		source = nadbfs_public_source(cli->source);
	if (!source)
		goto out;
	fsname = fsname_opt(source);
	if (!fsname)
		goto out;
	if (fuse_opt_add_arg(args, "nadbfs"))
		goto out;
	if (cli->debug && fuse_opt_add_arg(args, "-d"))
		goto out;
	if (fuse_opt_add_opt(&opts, "default_permissions,subtype=nadbfs") ||
	    fuse_opt_add_opt(&opts, fsname))
		goto out;
	if (c->allow_other && fuse_opt_add_opt(&opts, "allow_other"))
		goto out;
	if (fo->read_only && fuse_opt_add_opt(&opts, "ro"))
		goto out;
	if (fo->extra && fuse_opt_add_opt(&opts, fo->extra))
		goto out;
	if (fuse_opt_add_arg(args, "-o") || fuse_opt_add_arg(args, opts))
		goto out;
	ret = 0;
out:
	free(opts);
	free(fsname);
	free(source);
	return ret;
}

int main(int argc, char **argv)
{
	struct nadbfs_cli cli;
	struct nadbfs_fuse_opts fo = { 0 };
	struct fuse_args args = FUSE_ARGS_INIT(0, NULL);
	struct fuse_session *se = NULL;
	struct hup_thread hup = { 0 };
	struct nadbfs_readahead ra = { 0 };
	struct fs_loop_hooks hooks;
	struct reloader rl = { .lock = PTHREAD_MUTEX_INITIALIZER };
	struct kv_options ko;
	struct kv_store *kv = NULL;
	struct fs_options fso;
	struct fs *fs = NULL;
	struct conf conf;
	sigset_t hupset, stopset, oldset;
	char err[512], see[PATH_MAX + 8] = "see the message above", *shown = NULL;
	int status = 1, ret;

	/*
	 * From the very first instruction: a SIGHUP that arrives during startup
	 * stays pending for the reload thread instead of ending the process.
	 */
	sigemptyset(&hupset);
	sigaddset(&hupset, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &hupset, NULL);
	sigemptyset(&stopset);
	sigaddset(&stopset, SIGTERM);
	sigaddset(&stopset, SIGINT);
	sigaddset(&stopset, SIGQUIT);
	/* A file size limit (RLIMIT_FSIZE) on the data directory's writes must
	 * fail those writes with EFBIG, which the flusher retries, not end the
	 * daemon with its buffer unflushed. */
	signal(SIGXFSZ, SIG_IGN);

	ret = nadbfs_cli_parse(argc, argv, &cli);
	if (ret) {
		nadbfs_cli_free(&cli);
		return ret == NADBFS_CLI_DONE ? 0 : 1;
	}
	conf_init(&conf);
	if (nadbfs_cli_apply(&cli, &conf, &fo, err, sizeof(err))) {
		fprintf(stderr, "nadbfs: %s\n", err);
		goto out_conf;
	}
	if (cli.debug)
		conf.log_level = NLOG_DEBUG;
	if (conf.backend == CONF_BACKEND_FS && !conf.data_dir) {
		fprintf(stderr, "nadbfs: no data directory: give one as SOURCE\n");
		goto out_conf;
	}
	if (check_mountpoint(cli.mountpoint))
		goto out_conf;
	ret = nadbfs_cli_make_absolute(&cli);
	if (ret) {
		fprintf(stderr, "nadbfs: cannot make the paths absolute (mountpoint %s): %s\n",
			cli.mountpoint, strerror(-ret));
		goto out_conf;
	}
	/* What messages name as the source: never with a password. */
	shown = conf.backend == CONF_BACKEND_FS ? strdup(conf.data_dir)
						: nadbfs_public_source(cli.source);
	if (!shown) {
		fprintf(stderr, "nadbfs: %s\n", strerror(ENOMEM));
		goto out_conf;
	}

	/*
	 * A configured log file gets everything from the start, the store's
	 * warnings about its data included; errors that stop the mount are
	 * also printed on stderr for whoever ran the command.
	 */
	log_set_level(conf.log_level);
	if (conf.log_file) {
		ret = log_open(conf.log_file, false);
		if (ret) {
			fprintf(stderr, "nadbfs: cannot open log file %s: %s\n", conf.log_file,
				strerror(-ret));
			goto out_conf;
		}
		set_log_format(&conf, false);
		snprintf(see, sizeof(see), "see %s", conf.log_file);
	} else {
		set_log_format(&conf, isatty(STDERR_FILENO));
	}
	fuse_set_log_func(fuse_log_bridge);

	kv_options_from_conf(&conf, &ko);
	ret = kv_open(&ko, &kv, err, sizeof(err));
	if (ret) {
		fprintf(stderr, "nadbfs: %s\n", err[0] ? err : strerror(-ret));
		goto out_conf;
	}
	rl.cli = &cli;
	rl.conf = &conf;
	rl.kv = kv;
	rl.to_tty = !conf.log_file && cli.foreground && isatty(STDERR_FILENO);
	hup.reloader = &rl;
	fso = (struct fs_options){
		.reload = reload,
		.reload_arg = &rl,
		.attr_timeout = kernel_timeout(&conf, &conf, conf.attr_timeout_ms),
		.entry_timeout = kernel_timeout(&conf, &conf, conf.entry_timeout_ms),
		.allow_other = conf.allow_other,
		.ctl_mode = conf.ctl_mode,
		.close_to_open = conf.close_to_open,
		.max_threads = conf.max_threads,
		.uid = getuid(),
		.gid = getgid(),
	};
	ret = fs_new(kv, &fso, &fs);
	pthread_mutex_lock(&rl.lock);
	rl.fs = ret ? NULL : fs;
	pthread_mutex_unlock(&rl.lock);
	if (ret) {
		fprintf(stderr, "nadbfs: %s\n", strerror(-ret));
		goto out_kv;
	}
	if (build_fuse_args(&cli, &conf, &fo, &args)) {
		fprintf(stderr, "nadbfs: %s\n", strerror(ENOMEM));
		goto out_fs;
	}
	se = fuse_session_new(&args, fs_lowlevel_ops(), sizeof(struct fuse_lowlevel_ops), fs);
	if (!se) {
		fprintf(stderr, "nadbfs: cannot start a FUSE session (%s)\n", see);
		goto out_fs;
	}
	fs_attach(fs, se);
	if (fuse_set_signal_handlers(se)) {
		fprintf(stderr, "nadbfs: cannot install signal handlers\n");
		goto out_session;
	}
	sigaction(SIGHUP, &(struct sigaction){ .sa_handler = hup_ignore }, NULL);
	if (fuse_session_mount(se, cli.mountpoint)) {
		fprintf(stderr, "nadbfs: cannot mount %s on %s (%s)\n", shown, cli.mountpoint,
			see);
		goto out_signals;
	}
	if (fuse_daemonize(cli.foreground)) {
		fprintf(stderr, "nadbfs: cannot go to the background\n");
		goto out_unmount;
	}
	if (!cli.foreground && !conf.log_file) {
		log_open(NULL, true);
		set_log_format(&conf, false);
	}

	/*
	 * Threads started from here must leave SIGTERM/SIGINT to the thread
	 * running the session loop: libfuse's handler only wakes the thread it
	 * interrupts, and its workers block these signals too.
	 */
	pthread_sigmask(SIG_BLOCK, &stopset, &oldset);
	ret = kv_start(kv);
	if (!ret)
		ret = hup_start(&hup);
	pthread_sigmask(SIG_SETMASK, &oldset, NULL);
	if (ret) {
		log_msg(NLOG_ERROR, "store", "cannot start: %s", strerror(-ret));
		goto out_unmount;
	}

	sd_notify(0, "READY=1");
	NLOG(NLOG_INFO, "fs", "mounted", LF_STR("source", shown),
	     LF_STR("mountpoint", cli.mountpoint), LF_INT("pid", getpid()));
	ra = (struct nadbfs_readahead){ .mountpoint = cli.mountpoint, .kb = NADBFS_READAHEAD_KB };
	hooks = (struct fs_loop_hooks){ .may_end = fs_push_may_end, .may_end_arg = fs,
					.after_init = nadbfs_raise_readahead, .after_init_arg = &ra };
	ret = fs_loop_run(se, conf.max_threads, &hooks);
	sd_notify(0, "STOPPING=1");
	/* A positive result is the signal that ended the loop: a normal stop. */
	if (ret < 0)
		log_msg(NLOG_ERROR, "fs", "session loop failed: %s", strerror(-ret));
	else
		status = 0;
	/*
	 * A second SIGTERM must not cut the final flush short: from here on
	 * the signals stay pending until exit (SIGKILL still works).
	 */
	pthread_sigmask(SIG_BLOCK, &stopset, NULL);
	log_msg(NLOG_INFO, "fs", "stopping: flushing buffered writes");

out_unmount:
	fs_drain(fs);
	fuse_session_unmount(se);
out_signals:
	fuse_remove_signal_handlers(se);
out_session:
	hup_stop(&hup);
	fuse_session_destroy(se);
out_fs:
	fs_free(fs);
	fuse_opt_free_args(&args);
out_kv:
	ret = kv_close(kv);
	if (ret) {
		log_msg(NLOG_ERROR, "store", "buffered writes could not be made durable: %s",
			strerror(ret < 0 ? -ret : ret));
		status = 1;
	} else if (status == 0) {
		log_msg(NLOG_INFO, "fs", "stopped cleanly");
	}
out_conf:
	free(shown);
	nadbfs_fuse_opts_free(&fo);
	conf_free(&conf);
	nadbfs_cli_free(&cli);
	log_close();
	return status;
}
