/*
 * The manual pages: nadbfs.conf(5) documents every key of the configuration
 * parser's table (read from conf/conf.c, so a key added there without its
 * documentation fails here) and no key the parser refuses; the example file
 * lists every key too; all three pages render with groff without a warning;
 * meson installs them.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "conf/conf.h"

#define MAX_KEYS 128

struct key {
	char section[32];
	char name[64];
};

static char *slurp(const char *rel)
{
	const char *root = getenv("NADBFS_SOURCE_ROOT");
	char path[4096];
	char *buf = NULL;
	size_t cap = 0, len = 0, n;
	FILE *f;

	assert_non_null(root);
	snprintf(path, sizeof(path), "%s/%s", root, rel);
	f = fopen(path, "r");
	if (!f)
		fail_msg("cannot read %s: %s", path, strerror(errno));
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

/* The string literal at p (after blanks and a comma) into out; the position after it. */
static const char *literal(const char *p, char *out, size_t outlen)
{
	const char *end;

	p += strspn(p, " \t\n,");
	if (*p != '"')
		return NULL;
	end = strchr(p + 1, '"');
	if (!end || (size_t)(end - p - 1) >= outlen)
		return NULL;
	memcpy(out, p + 1, (size_t)(end - p - 1));
	out[end - p - 1] = '\0';
	return end + 1;
}

/*
 * The parser's key table, from the source: each entry starts with a macro
 * (KEY, RANGED, ENUM) or a brace, then "section", "name".
 */
static size_t table_keys(struct key *keys)
{
	static const char *const starts[] = { "KEY(", "RANGED(", "ENUM(", "{" };
	char *src = slurp("conf/conf.c");
	char *p = strstr(src, "static const struct conf_key keys[] = {"), *end;
	size_t n = 0, i;

	assert_non_null(p);
	p = strchr(p, '{') + 1;
	end = strstr(p, "\n};");
	assert_non_null(end);
	*end = '\0';
	while (*p) {
		const char *q = NULL;

		for (i = 0; i < sizeof(starts) / sizeof(starts[0]) && !q; i++)
			if (strncmp(p, starts[i], strlen(starts[i])) == 0 &&
			    (p == src || !((p[-1] >= 'A' && p[-1] <= 'Z') || p[-1] == '_')))
				q = p + strlen(starts[i]);
		if (!q) {
			p++;
			continue;
		}
		assert_true(n < MAX_KEYS);
		q = literal(q, keys[n].section, sizeof(keys[n].section));
		if (q)
			q = literal(q, keys[n].name, sizeof(keys[n].name));
		if (!q)
			fail_msg("cannot read the table entry at: %.60s", p);
		n++;
		p = (char *)q;
	}
	free(src);
	return n;
}

/* The parser knows the key: conf_set() takes it or fails for the value, not the name. */
static bool parser_knows(const char *section, const char *name)
{
	struct conf c;
	char err[512] = "";

	conf_init(&c);
	/* Hardly a value any key takes; the password takes anything, and says nothing. */
	conf_set(&c, section, name, "\x01", err, sizeof(err));
	conf_free(&c);
	return !strstr(err, "unknown key") && !strstr(err, "unknown section");
}

/* The text of section [name] of the page: from its .SH to the next .SH. */
static char *page_section(const char *page, const char *name)
{
	char head[64];
	const char *start, *end;

	snprintf(head, sizeof(head), "\n.SH \"[%s] SECTION\"\n", name);
	start = strstr(page, head);
	if (!start)
		return NULL;
	start += strlen(head);
	end = strstr(start, "\n.SH ");
	if (!end)
		end = start + strlen(start);
	return strndup(start, (size_t)(end - start));
}

static void test_conf_page_has_every_key(void **state)
{
	struct key keys[MAX_KEYS];
	char *page = slurp("mount/nadbfs.conf.5"), *sec, *p;
	char tag[96], name[64];
	size_t n = table_keys(keys), i, found;
	int missing = 0;

	(void)state;
	/* Far fewer would mean the table was misread. */
	assert_true(n >= 30);
	for (i = 0; i < n; i++) {
		if (!parser_knows(keys[i].section, keys[i].name))
			fail_msg("table misread: [%s] %s is unknown to conf_set()",
				 keys[i].section, keys[i].name);
		sec = page_section(page, keys[i].section);
		if (!sec)
			fail_msg("nadbfs.conf.5 has no section \"[%s] SECTION\"", keys[i].section);
		snprintf(tag, sizeof(tag), "\n.TP\n.B %s\n", keys[i].name);
		if (!strstr(sec, tag) && strncmp(sec, tag + 1, strlen(tag + 1)) != 0) {
			print_error("nadbfs.conf.5: key %s of [%s] is not documented\n",
				    keys[i].name, keys[i].section);
			missing++;
		}
		free(sec);
	}
	assert_int_equal(missing, 0);

	/* And nothing documented as a key that the parser refuses. */
	for (i = 0; i < n; i++) {
		if (i > 0 && strcmp(keys[i].section, keys[i - 1].section) == 0)
			continue;
		sec = page_section(page, keys[i].section);
		found = 0;
		for (p = strstr(sec, ".TP\n.B "); p; p = strstr(p + 1, ".TP\n.B ")) {
			assert_int_equal(sscanf(p, ".TP\n.B %63s", name), 1);
			if (!parser_knows(keys[i].section, name))
				fail_msg("nadbfs.conf.5 documents [%s] %s, which the parser refuses",
					 keys[i].section, name);
			found++;
		}
		assert_true(found > 0);
		free(sec);
	}
	free(page);
}

/* The annotated example names every key too, in its section. */
static void test_example_has_every_key(void **state)
{
	struct key keys[MAX_KEYS];
	char *ex = slurp("conf/nadbfs.conf.example"), *sec, *end, line[96];
	char head[48];
	size_t n = table_keys(keys), i;

	(void)state;
	for (i = 0; i < n; i++) {
		snprintf(head, sizeof(head), "\n[%.31s]\n", keys[i].section);
		sec = strstr(ex, head);
		if (!sec)
			fail_msg("nadbfs.conf.example has no [%s]", keys[i].section);
		sec += strlen(head);
		end = strstr(sec, "\n[");
		snprintf(line, sizeof(line), "\n;%s =", keys[i].name);
		sec = strndup(sec - 1, end ? (size_t)(end - sec + 1) : strlen(sec - 1));
		if (!strstr(sec, line))
			fail_msg("nadbfs.conf.example: no ';%s =' line in [%s]", keys[i].name,
				 keys[i].section);
		free(sec);
	}
	free(ex);
}

/* Runs cmd through sh; its whole output into out. Returns the exit status. */
static int run(const char *cmd, char *out, size_t outlen)
{
	FILE *f = popen(cmd, "r");
	size_t len = 0, n;
	int status;

	assert_non_null(f);
	while (len + 1 < outlen && (n = fread(out + len, 1, outlen - len - 1, f)) > 0)
		len += n;
	out[len] = '\0';
	status = pclose(f);
	return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static void test_pages_render_cleanly(void **state)
{
	static const char *const pages[] = { "mount/nadbfs.8", "mount/nadbctl.1",
					     "mount/nadbfs.conf.5" };
	const char *root = getenv("NADBFS_SOURCE_ROOT");
	char cmd[4400], out[8192];
	size_t i;

	(void)state;
	assert_non_null(root);
	if (run("command -v groff", out, sizeof(out)) != 0)
		fail_msg("groff is needed to check the man pages (Debian: groff-base, see .ci/deps)");
	for (i = 0; i < sizeof(pages) / sizeof(pages[0]); i++) {
		/* -ww: every warning; -z: no output but the diagnostics. */
		snprintf(cmd, sizeof(cmd), "LC_ALL=C.UTF-8 groff -man -Tutf8 -ww -z '%s/%s' 2>&1",
			 root, pages[i]);
		if (run(cmd, out, sizeof(out)) != 0 || out[0])
			fail_msg("%s does not render cleanly:\n%s", pages[i], out);
		/* And it renders to something: the NAME line at least (headings are overstruck). */
		snprintf(cmd, sizeof(cmd),
			 "LC_ALL=C.UTF-8 groff -man -Tutf8 -P-c '%s/%s' 2>&1 | grep -q '^ *nadb.* - '",
			 root, pages[i]);
		assert_int_equal(run(cmd, out, sizeof(out)), 0);
	}
}

static void test_pages_installed(void **state)
{
	const char *build = getenv("NADBFS_BUILD_ROOT");
	char path[4096], *text;
	FILE *f;
	long len;

	(void)state;
	assert_non_null(build);
	snprintf(path, sizeof(path), "%s/meson-info/intro-installed.json", build);
	f = fopen(path, "r");
	if (!f) {
		skip();
		return;
	}
	fseek(f, 0, SEEK_END);
	len = ftell(f);
	rewind(f);
	text = calloc(1, (size_t)len + 1);
	assert_non_null(text);
	assert_int_equal(fread(text, 1, (size_t)len, f), (size_t)len);
	fclose(f);
	assert_non_null(strstr(text, "man8/nadbfs.8\""));
	assert_non_null(strstr(text, "man1/nadbctl.1\""));
	assert_non_null(strstr(text, "man5/nadbfs.conf.5\""));
	free(text);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_conf_page_has_every_key),
		cmocka_unit_test(test_example_has_every_key),
		cmocka_unit_test(test_pages_render_cleanly),
		cmocka_unit_test(test_pages_installed),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
