/*
 * The crash loop's bookkeeping and checks (see crash_state.h). Values carry
 * a header naming their key, generation, length and a checksum, and a body
 * derived from key and generation: a torn, truncated or mixed value cannot
 * pass for a real one.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <setjmp.h>
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

#include "crash_state.h"
#include "mnt.h"

#define HDR_MAX 96
/* TTL generations: seconds far apart, so the time since the setfattr
 * (under STEP/2 for any soak shorter than 13 hours) cannot blur two. */
#define TTL_BASE 1000000LL
#define TTL_STEP 100000LL
#define TTL_CYCLE 30000u /* stays below user.ttl's 100 years */
#define NTAGS 7

static char context[160];
static long checked;
static const char *const all_tags[NTAGS] = { "c0", "c1", "c2", "c3", "p0", "p1", "p2" };

void cs_set_context(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(context, sizeof(context), fmt, ap);
	va_end(ap);
}

const char *cs_context(void)
{
	return context;
}

long cs_checked(void)
{
	return checked;
}

void cs_init_keys(struct cs_key *keys, int writers)
{
	for (int i = 0; i < writers * CS_KEYS; i++) {
		memset(&keys[i], 0, sizeof(keys[i]));
		snprintf(keys[i].name, sizeof(keys[i].name), "w%d-k%02d", i / CS_KEYS, i % CS_KEYS);
		snprintf(keys[i].dir, sizeof(keys[i].dir), "w%d", i / CS_KEYS);
		keys[i].idx = i % CS_KEYS;
		keys[i].loc_durable = true;
	}
}

void cs_path(const char *mnt, const struct cs_key *k, int loc, char *buf, size_t len)
{
	snprintf(buf, len, "%s/%s/k%02d.%c", mnt, k->dir, k->idx, loc ? 'b' : 'a');
}

void cs_tags(unsigned g, char *buf, size_t len)
{
	if (g == 0 || g % 7 == 6)
		snprintf(buf, len, "%s", "");
	else
		snprintf(buf, len, "c%u,p%u", g % 4, g % 3);
}

long long cs_ttl(unsigned g)
{
	if (g == 0 || g % 5 == 4)
		return 0;
	return TTL_BASE + (long long)(g % TTL_CYCLE) * TTL_STEP;
}

void cs_mark_durable(struct cs_key *k)
{
	if (!k->exists)
		return;
	k->vfloor = k->vcur;
	k->floor_present = true;
	k->tfloor = k->tcur;
	k->xfloor = k->xcur;
	k->loc_durable = true;
}

static void pattern(char *buf, size_t len, const char *key, unsigned gen)
{
	uint64_t x = fnv1a(key, strlen(key)) ^ ((uint64_t)gen * 0x9e3779b97f4a7c15ULL) ^ len;

	for (size_t i = 0; i < len; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		buf[i] = (char)(x >> 32);
	}
}

static char *make_value(const char *key, unsigned gen, size_t len, size_t *out_len)
{
	char hdr[HDR_MAX + 64];
	size_t body_len = len > HDR_MAX ? len - HDR_MAX : 16;
	char *v = malloc(HDR_MAX + body_len);
	int hl;

	if (!v)
		return NULL;
	pattern(v + HDR_MAX, body_len, key, gen);
	hl = snprintf(hdr, sizeof(hdr), "NADBT %s %u %zu %016llx\n", key, gen, body_len,
		      (unsigned long long)fnv1a(v + HDR_MAX, body_len));
	memcpy(v, hdr, (size_t)hl);
	memmove(v + hl, v + HDR_MAX, body_len);
	*out_len = (size_t)hl + body_len;
	return v;
}

int cs_write(const char *path, struct cs_key *k, size_t len, bool sync, bool *synced)
{
	size_t vlen;
	unsigned gen = ++k->vatt;
	char *v = make_value(k->name, gen, len, &vlen);
	int fd, err = 0;

	*synced = false;
	if (!v)
		return -ENOMEM;
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0) {
		err = -errno;
		goto out;
	}
	k->exists = true;
	errno = 0;
	if (write(fd, v, vlen) != (ssize_t)vlen)
		err = errno ? -errno : -EIO;
	else
		k->vcur = gen;
	if (!err && sync) {
		if (fsync(fd))
			err = -errno;
		else
			*synced = true;
	}
	if (close(fd) && !err)
		err = -errno;
out:
	free(v);
	return err;
}

enum { V_ABSENT = -1, V_EMPTY = 0, V_TORN = -2 };

/* The generation stored under path, or V_ABSENT / V_EMPTY / V_TORN (why in *why). */
static long read_gen(const char *path, const char *key, char *why, size_t whylen)
{
	char name[64], *v, *body, *expect;
	unsigned gen;
	size_t len, body_len;
	unsigned long long sum;
	long r = V_TORN;

	v = read_file(path, &len);
	if (!v) {
		if (errno == ENOENT)
			return V_ABSENT;
		fail_msg("%s: reading %s: %s", context, path, strerrorname_np(errno));
	}
	if (len == 0) {
		free(v);
		return V_EMPTY;
	}
	body = memchr(v, '\n', len < HDR_MAX ? len : HDR_MAX);
	if (!body || sscanf(v, "NADBT %63s %u %zu %llx\n", name, &gen, &body_len, &sum) != 4) {
		snprintf(why, whylen, "no valid header (%zu bytes)", len);
		goto out;
	}
	body++;
	if (strcmp(name, key)) {
		snprintf(why, whylen, "holds key %.60s's value", name);
		goto out;
	}
	if ((size_t)(v + len - body) != body_len) {
		snprintf(why, whylen, "generation %u: %zu body bytes, header says %zu", gen,
			 (size_t)(v + len - body), body_len);
		goto out;
	}
	expect = malloc(body_len);
	assert_non_null(expect);
	pattern(expect, body_len, key, gen);
	if (fnv1a(body, body_len) != sum || memcmp(body, expect, body_len))
		snprintf(why, whylen, "generation %u: body does not match its header", gen);
	else
		r = gen;
	free(expect);
out:
	free(v);
	return r;
}

static void verify_value(const char *path, struct cs_key *k)
{
	char why[160] = "";
	long g = read_gen(path, k->name, why, sizeof(why));

	if (g == V_TORN || g == V_ABSENT)
		fail_msg("%s: key %s is torn or mixed: %s", context, k->name,
			 g == V_ABSENT ? "vanished between stat and read" : why);
	if (g == V_EMPTY) {
		/* Only the moment between open(O_TRUNC) and write of a later value. */
		if (k->vatt <= k->vfloor && k->vfloor > 0)
			fail_msg("%s: key %s is empty; generation %u was durable and nothing "
				 "newer was written", context, k->name, k->vfloor);
	} else if ((unsigned)g < k->vfloor || (unsigned)g > k->vatt) {
		fail_msg("%s: key %s (%s) holds generation %ld; durable was %u, last written %u",
			 context, k->name, path, g, k->vfloor, k->vatt);
	}
	k->vfloor = k->vcur = g > 0 ? (unsigned)g : 0;
}

/* The key's user.tags, "" when it has none. */
static void read_tags(const char *path, const struct cs_key *k, char *buf, size_t len)
{
	ssize_t n = getxattr(path, "user.tags", buf, len - 1);

	if (n < 0 && errno != ENODATA)
		fail_msg("%s: getxattr user.tags of %s: %s", context, k->name,
			 strerrorname_np(errno));
	buf[n < 0 ? 0 : n] = '\0';
}

static void verify_tags(const char *tags, struct cs_key *k)
{
	char want[64];

	for (unsigned g = k->tfloor; g <= k->tatt; g++) {
		cs_tags(g, want, sizeof(want));
		if (!strcmp(want, tags)) {
			k->tfloor = k->tcur = g;
			return;
		}
	}
	cs_tags(k->tfloor, want, sizeof(want));
	fail_msg("%s: key %s has tags '%s': not what any generation from %u ('%s', durable) "
		 "to %u set", context, k->name, tags, k->tfloor, want, k->tatt);
}

static void verify_ttl(const char *path, struct cs_key *k)
{
	char buf[32];
	ssize_t n = getxattr(path, "user.ttl", buf, sizeof(buf) - 1);
	long long left = 0;

	if (n < 0 && errno != ENODATA)
		fail_msg("%s: getxattr user.ttl of %s: %s", context, k->name,
			 strerrorname_np(errno));
	if (n >= 0) {
		buf[n] = '\0';
		left = atoll(buf);
		if (left <= 0)
			fail_msg("%s: key %s: user.ttl is '%s'", context, k->name, buf);
	}
	for (unsigned g = k->xfloor; g <= k->xatt; g++) {
		long long ttl = cs_ttl(g);

		if (n < 0 ? ttl == 0 : ttl && left <= ttl && left > ttl - TTL_STEP / 2) {
			k->xfloor = k->xcur = g;
			return;
		}
	}
	fail_msg("%s: key %s: user.ttl %s is not what any generation from %u (%lld, durable) "
		 "to %u set", context, k->name, n < 0 ? "absent" : buf, k->xfloor,
		 cs_ttl(k->xfloor), k->xatt);
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* "wT%2FkNN.x" lines of tags/TAG, sorted, joined by spaces (malloc'd). */
static char *list_tag(const char *mnt, const char *tag)
{
	char path[PATH_MAX], *names[256], *out;
	size_t n = 0, len = 1;
	struct dirent *e;
	DIR *d;

	snprintf(path, sizeof(path), "%s/tags/%s", mnt, tag);
	d = opendir(path);
	if (!d && errno != ENOENT)
		fail_msg("%s: opendir %s: %s", context, path, strerrorname_np(errno));
	while (d && (e = readdir(d))) {
		if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
			continue;
		if (n == 256)
			fail_msg("%s: tags/%s lists more entries than there are keys", context, tag);
		names[n] = strdup(e->d_name);
		len += strlen(e->d_name) + 1;
		n++;
	}
	if (d)
		closedir(d);
	qsort(names, n, sizeof(*names), cmp_str);
	out = calloc(1, len);
	for (size_t i = 0; i < n; i++) {
		strcat(out, names[i]);
		strcat(out, " ");
		free(names[i]);
	}
	return out;
}

/* tags/ must list exactly the keys whose user.tags carry each tag. */
static void verify_listings(const char *mnt, struct cs_key *keys, char (*tags)[64], int n)
{
	for (int t = 0; t < NTAGS; t++) {
		char *names[256], *got, want[8192] = "";
		int m = 0;

		for (int i = 0; i < n; i++) {
			char copy[64], *save, *tok;

			if (!keys[i].exists)
				continue;
			snprintf(copy, sizeof(copy), "%s", tags[i]);
			for (tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save))
				if (!strcmp(tok, all_tags[t]))
					break;
			if (!tok)
				continue;
			names[m] = malloc(64);
			snprintf(names[m], 64, "%s%%2Fk%02d.%c", keys[i].dir, keys[i].idx,
				 keys[i].loc ? 'b' : 'a');
			m++;
		}
		qsort(names, (size_t)m, sizeof(*names), cmp_str);
		for (int i = 0; i < m; i++) {
			strcat(want, names[i]);
			strcat(want, " ");
			free(names[i]);
		}
		got = list_tag(mnt, all_tags[t]);
		if (strcmp(got, want))
			fail_msg("%s: tags/%s lists [%s], the keys' user.tags say [%s]", context,
				 all_tags[t], got, want);
		free(got);
	}
}

void cs_verify(const char *mnt, struct cs_key *keys, int n)
{
	char (*tags)[64] = calloc((size_t)n, sizeof(*tags));

	assert_non_null(tags);
	for (int i = 0; i < n; i++) {
		struct cs_key *k = &keys[i];
		char pa[PATH_MAX], pb[PATH_MAX];
		struct stat st;
		bool a, b;

		cs_path(mnt, k, 0, pa, sizeof(pa));
		cs_path(mnt, k, 1, pb, sizeof(pb));
		a = lstat(pa, &st) == 0;
		b = lstat(pb, &st) == 0;
		if (a && b)
			fail_msg("%s: key %s is under both names: a rename half done", context,
				 k->name);
		if (!a && !b) {
			if (k->floor_present)
				fail_msg("%s: key %s is gone; generation %u was durable", context,
					 k->name, k->vfloor);
			/* Never durable: it starts again as a new key, without metadata. */
			k->exists = false;
			k->tatt = k->tcur = k->tfloor = k->xatt = k->xcur = k->xfloor = 0;
			k->vfloor = k->vcur = 0;
			k->loc_durable = true;
			continue;
		}
		if (k->floor_present && k->loc_durable && (b ? 1 : 0) != k->loc)
			fail_msg("%s: key %s is at .%c; its rename to .%c was durable", context,
				 k->name, b ? 'b' : 'a', k->loc ? 'b' : 'a');
		k->loc = b ? 1 : 0;
		k->exists = true;
		verify_value(b ? pb : pa, k);
		read_tags(b ? pb : pa, k, tags[i], sizeof(tags[i]));
		verify_tags(tags[i], k);
		verify_ttl(b ? pb : pa, k);
		k->floor_present = true;
		k->loc_durable = true;
		checked++;
	}
	verify_listings(mnt, keys, tags, n);
	free(tags);
}
