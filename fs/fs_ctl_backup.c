/*
 * The "backup ..." commands of .nadb/ctl (spec section 7): argument parsing
 * and replies; the work is the store's (store/backup.h). Backups run in the
 * FUSE worker that received the command: they use the store, never FUSE,
 * so they cannot deadlock on the kernel, and the other workers keep serving.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "fs/fs_int.h"
#include "store/backup.h"

#define MAX_ARGS 8

static const char usage[] =
	"error: usage: backup create [--incremental-from ID] [ID] | backup list [--json] | "
	"backup verify ID | backup restore ID [--clear] | backup prune --keep N\n";

static char *text_of(FILE *f, char **buf)
{
	if (fclose(f)) {
		free(*buf);
		return NULL;
	}
	return *buf;
}

static void rfc3339_ms(int64_t ms, char *out, size_t len)
{
	time_t t = (time_t)(ms / 1000);
	struct tm tm;

	gmtime_r(&t, &tm);
	strftime(out, len, "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(out + strlen(out), len - strlen(out), ".%03dZ", (int)(ms % 1000));
}

static void print_info(FILE *f, const struct kv_backup_info *b)
{
	char start[40], end[40];

	rfc3339_ms(b->started_ms, start, sizeof(start));
	rfc3339_ms(b->finished_ms, end, sizeof(end));
	fprintf(f, "id: %s\nparent: %s\nfile: %s\nstarted: %s\nfinished: %s\nkeys: %" PRIu64
		   "\nstored: %" PRIu64 "\ndeleted: %" PRIu64 "\nbytes: %" PRIu64
		   "\narchive_size: %" PRIu64 "\n",
		b->id, b->parent[0] ? b->parent : "-", b->file, start, end, b->keys, b->stored,
		b->deleted, b->bytes, b->archive_size);
}

static void print_list(FILE *f, const struct kv_backup_info *v, size_t n, bool as_json)
{
	if (as_json) {
		json_t *a = json_array();

		for (size_t i = 0; a && i < n; i++)
			json_array_append_new(
				a, json_pack("{s:s, s:s?, s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:I}",
					     "id", v[i].id, "parent",
					     v[i].parent[0] ? v[i].parent : NULL, "file", v[i].file,
					     "started_ms", (json_int_t)v[i].started_ms,
					     "finished_ms", (json_int_t)v[i].finished_ms, "keys",
					     (json_int_t)v[i].keys, "stored", (json_int_t)v[i].stored,
					     "deleted", (json_int_t)v[i].deleted, "bytes",
					     (json_int_t)v[i].bytes, "archive_size",
					     (json_int_t)v[i].archive_size));
		fprintf(f, "ok\n");
		if (a)
			json_dumpf(a, f, JSON_COMPACT);
		fputc('\n', f);
		json_decref(a);
		return;
	}
	fprintf(f, "ok %zu backup%s\n", n, n == 1 ? "" : "s");
	for (size_t i = 0; i < n; i++) {
		char when[40];

		rfc3339_ms(v[i].started_ms, when, sizeof(when));
		fprintf(f, "%s %s parent=%s keys=%" PRIu64 " stored=%" PRIu64 " deleted=%" PRIu64
			   " size=%" PRIu64 "\n",
			v[i].id, when, v[i].parent[0] ? v[i].parent : "-", v[i].keys, v[i].stored,
			v[i].deleted, v[i].archive_size);
	}
}

static int parse_keep(const char *s, unsigned *out)
{
	char *end;
	unsigned long v;

	if (!s || *s < '0' || *s > '9')
		return -EINVAL;
	errno = 0;
	v = strtoul(s, &end, 10);
	if (*end || errno || v == 0 || v > 1000000)
		return -EINVAL;
	*out = (unsigned)v;
	return 0;
}

char *fs_ctl_backup(struct fs *fs, const char *args, size_t *len)
{
	char *copy = strdup(args), *argv[MAX_ARGS + 1], *save, *tok, *buf = NULL;
	char err[1024] = "";
	size_t argc = 0, size = 0;
	struct kv_store *kv = fs->kv;
	FILE *f;
	int ret = -EINVAL;

	if (!copy)
		return NULL;
	for (tok = strtok_r(copy, " ", &save); tok; tok = strtok_r(NULL, " ", &save)) {
		if (argc == MAX_ARGS) {
			argc = 0;
			break;
		}
		argv[argc++] = tok;
	}
	f = open_memstream(&buf, &size);
	if (!f) {
		free(copy);
		return NULL;
	}
	if (argc == 0) {
		fputs(usage, f);
		goto out;
	}
	if (!strcmp(argv[0], "create")) {
		const char *id = NULL, *parent = NULL;
		struct kv_backup_info info;

		for (size_t i = 1; i < argc; i++) {
			if (!strcmp(argv[i], "--incremental-from") && i + 1 < argc && !parent)
				parent = argv[++i];
			else if (argv[i][0] != '-' && !id)
				id = argv[i];
			else
				goto out_usage;
		}
		ret = kv_backup_create(kv, id, parent, &info, err, sizeof(err));
		if (!ret) {
			fprintf(f, "ok %s\n", info.id);
			print_info(f, &info);
		}
	} else if (!strcmp(argv[0], "list")) {
		struct kv_backup_info *v;
		size_t n;
		bool as_json = argc == 2 && !strcmp(argv[1], "--json");

		if (argc > 2 || (argc == 2 && !as_json))
			goto out_usage;
		ret = kv_backup_list(kv, &v, &n, err, sizeof(err));
		if (!ret) {
			print_list(f, v, n, as_json);
			free(v);
		}
	} else if (!strcmp(argv[0], "verify")) {
		struct kv_backup_info info;

		if (argc != 2)
			goto out_usage;
		ret = kv_backup_verify(kv, argv[1], &info, err, sizeof(err));
		if (!ret) {
			fprintf(f, "ok %s verified: every checksum matches\n", info.id);
			print_info(f, &info);
		}
	} else if (!strcmp(argv[0], "restore")) {
		bool clear = argc == 3 && !strcmp(argv[2], "--clear");
		uint64_t restored;

		if (argc < 2 || argc > 3 || (argc == 3 && !clear) || argv[1][0] == '-')
			goto out_usage;
		ret = kv_backup_restore(kv, argv[1], clear, &restored, err, sizeof(err));
		if (!ret)
			fprintf(f, "ok %" PRIu64 " keys restored from %s%s\n", restored, argv[1],
				clear ? " (store cleared first)" : "");
	} else if (!strcmp(argv[0], "prune")) {
		unsigned keep;
		char *removed;
		size_t n;

		if (argc != 3 || strcmp(argv[1], "--keep") || parse_keep(argv[2], &keep)) {
			if (argc == 3 && !strcmp(argv[1], "--keep")) {
				fprintf(f, "error: backup prune --keep takes a positive number, "
					   "not '%s'\n", argv[2]);
				goto out;
			}
			goto out_usage;
		}
		ret = kv_backup_prune(kv, keep, &removed, &n, err, sizeof(err));
		if (!ret) {
			fprintf(f, "ok %zu removed\n", n);
			for (const char *id = removed; id && n--; id += strlen(id) + 1)
				fprintf(f, "removed: %s\n", id);
			free(removed);
		}
	} else {
		goto out_usage;
	}
	if (ret)
		fprintf(f, "error: backup %s: %s\n", argv[0], *err ? err : strerror(-ret));
	goto out;

out_usage:
	fputs(usage, f);
out:
	free(copy);
	if (!text_of(f, &buf))
		return NULL;
	*len = size;
	return buf;
}
