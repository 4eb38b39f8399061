/*
 * Names of the entries of tag and query directories, and back: a key's path
 * with '%' -> "%25" and '/' -> "%2F" (spec section 4). Only those two escapes
 * exist, so every key has exactly one entry name and every entry name at
 * most one key.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <xxhash.h>

#include "store/kv_internal.h"

/* Long names keep this many bytes of the escaped path, then "~" and 16 hex
 * digits: 238 + 1 + 16 = 255. */
#define ENTRY_KEEP     238u
#define ENTRY_HASH_HEX 16u

ssize_t kv_node_path(const struct kv_node *n, char *buf, size_t size)
{
	const struct kv_node *chain[KV_KEY_MAX / 2 + 1];
	size_t depth = 0, len = 0;

	if (!n->parent)
		return -ENOENT;
	for (; n->parent; n = n->parent) {
		/* Keys are at most 1024 bytes, so at most 512 levels deep. */
		if (depth == sizeof(chain) / sizeof(chain[0]))
			return -ENAMETOOLONG;
		chain[depth++] = n;
	}
	while (depth--) {
		size_t l = strlen(chain[depth]->m.name);

		if (len + l + 2 > size)
			return -ERANGE;
		memcpy(buf + len, chain[depth]->m.name, l);
		len += l;
		if (depth)
			buf[len++] = '/';
	}
	buf[len] = '\0';
	return (ssize_t)len;
}

ssize_t kv_key_path(struct kv_store *kv, uint64_t id, char *buf, size_t size)
{
	struct kv_node *n;
	ssize_t ret;

	pthread_mutex_lock(&kv->lock);
	n = kv_node_live(kv, id);
	ret = n ? kv_node_path(n, buf, size) : -ENOENT;
	pthread_mutex_unlock(&kv->lock);
	return ret;
}

void kv_entry_name(const char *path, size_t len, char out[KV_NAME_MAX + 1])
{
	char esc[3 * KV_KEY_MAX + 1];
	size_t k = 0;

	for (size_t i = 0; i < len && k + 3 < sizeof(esc); i++) {
		if (path[i] == '%' || path[i] == '/') {
			esc[k++] = '%';
			esc[k++] = '2';
			esc[k++] = path[i] == '%' ? '5' : 'F';
		} else {
			esc[k++] = path[i];
		}
	}
	if (k <= KV_NAME_MAX) {
		memcpy(out, esc, k);
		out[k] = '\0';
		return;
	}
	memcpy(out, esc, ENTRY_KEEP);
	snprintf(out + ENTRY_KEEP, KV_NAME_MAX + 1 - ENTRY_KEEP, "~%016" PRIx64,
		 (uint64_t)XXH64(path, len, 0));
}

int kv_node_entry_name(const struct kv_node *n, char out[KV_NAME_MAX + 1])
{
	char path[KV_KEY_MAX + 2];
	ssize_t len = kv_node_path(n, path, sizeof(path));

	if (len < 0)
		return (int)len;
	kv_entry_name(path, (size_t)len, out);
	return 0;
}

bool kv_entry_is_hashed(const char *entry)
{
	size_t len = strlen(entry);

	return len == KV_NAME_MAX && entry[ENTRY_KEEP] == '~' &&
	       strspn(entry + ENTRY_KEEP + 1, "0123456789abcdef") == ENTRY_HASH_HEX;
}

/* Undoes the escapes into path (KV_KEY_MAX + 1 bytes); -ENOENT if entry
 * cannot be the name of any key. */
static int unescape(const char *entry, char *path)
{
	size_t k = 0;

	for (const char *p = entry; *p; p++) {
		char c = *p;

		if (c == '%') {
			if (p[1] == '2' && p[2] == '5')
				c = '%';
			else if (p[1] == '2' && p[2] == 'F')
				c = '/';
			else
				return -ENOENT;
			p += 2;
		}
		if (k == KV_KEY_MAX)
			return -ENOENT;
		path[k++] = c;
	}
	path[k] = '\0';
	return 0;
}

struct kv_node *kv_entry_resolve(struct kv_store *kv, const char *entry)
{
	char path[KV_KEY_MAX + 1];
	struct kv_node *n = kv->root;
	char *comp, *save = NULL;

	if (unescape(entry, path) || path[0] == '/' || !path[0])
		return NULL;
	/* strtok_r would skip empty components; "a//b" names no key. */
	if (strstr(path, "//") || path[strlen(path) - 1] == '/')
		return NULL;
	for (comp = strtok_r(path, "/", &save); comp; comp = strtok_r(NULL, "/", &save)) {
		if (!n || !S_ISDIR(n->m.mode) || kv_check_name(comp))
			return NULL;
		n = kv_live_child(kv, n, comp);
	}
	return n && !S_ISDIR(n->m.mode) ? n : NULL;
}
