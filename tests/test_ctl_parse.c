/*
 * The parsers behind .nadb/ctl (fs/fs_ctl_cmd.c) and nadbctl tx apply
 * (mount/tx_batch.c) without a mount; fuzz/fuzz_ctl.c and fuzz_txbatch.c
 * fuzz the same functions.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "fs/fs_ctl_cmd.h"
#include "mount/base64.h"
#include "mount/tx_batch.h"

static int parse(const char *s, struct fs_ctl_cmd *c, char *err)
{
	return fs_ctl_parse(s, strlen(s), c, err, 256);
}

static void test_ctl_commands(void **state)
{
	struct fs_ctl_cmd c;
	char err[256];

	(void)state;
	assert_int_equal(parse("flush\n", &c, err), 0);
	assert_int_equal(c.verb, FS_CTL_FLUSH);
	assert_int_equal(parse("sweep", &c, err), 0);
	assert_int_equal(c.verb, FS_CTL_SWEEP);
	assert_int_equal(parse("tx list\n", &c, err), 0);
	assert_int_equal(c.verb, FS_CTL_TX_LIST);
	assert_int_equal(parse("tx  begin\tt-1\n", &c, err), 0);
	assert_int_equal(c.verb, FS_CTL_TX_BEGIN);
	assert_string_equal(c.name, "t-1");
	assert_false(c.session);
	/* Tied to the descriptor it is begun through. */
	assert_int_equal(parse("tx begin t-2 --session\n", &c, err), 0);
	assert_int_equal(c.verb, FS_CTL_TX_BEGIN);
	assert_string_equal(c.name, "t-2");
	assert_true(c.session);
	assert_int_equal(parse("tx abort x", &c, err), 0);
	assert_int_equal(c.verb, FS_CTL_TX_ABORT);
	/* backup takes the rest of the line to its own parser. */
	assert_int_equal(parse("backup create --incremental-from a b\n", &c, err), 0);
	assert_int_equal(c.verb, FS_CTL_BACKUP);
	assert_string_equal(c.args, " create --incremental-from a b");
	assert_int_equal(parse("backup", &c, err), 0);
	assert_string_equal(c.args, "");
}

static void test_ctl_errors(void **state)
{
	struct fs_ctl_cmd c;
	char err[256], name[300];

	(void)state;
	assert_int_equal(parse("", &c, err), -EINVAL);
	assert_string_equal(err, "error: empty command\n");
	assert_int_equal(parse("flush\nsweep\n", &c, err), -EINVAL);
	assert_string_equal(err, "error: one command line per write\n");
	assert_int_equal(fs_ctl_parse("flush\0x", 7, &c, err, sizeof(err)), -EINVAL);
	assert_int_equal(parse("nonsense\x01", &c, err), -EINVAL);
	assert_string_equal(err, "error: unknown command 'nonsense?' (commands: flush, sweep, "
				 "reload, tx, backup)\n");
	assert_int_equal(parse("flush now", &c, err), -EINVAL);
	assert_int_equal(parse("tx begin", &c, err), -EINVAL);
	assert_int_equal(parse("tx list x", &c, err), -EINVAL);
	assert_int_equal(parse("tx begin a b", &c, err), -EINVAL);
	assert_int_equal(parse("tx commit a --session", &c, err), -EINVAL);
	assert_int_equal(parse("tx begin a --session x", &c, err), -EINVAL);
	assert_int_equal(parse("tx start a", &c, err), -EINVAL);
	assert_string_equal(err,
			    "error: unknown tx command 'start' (begin, commit, abort, list)\n");
	memset(name, 'n', sizeof(name));
	memcpy(name, "tx begin ", 9);
	name[9 + 256] = '\0';
	assert_int_equal(parse(name, &c, err), -EINVAL);
}

static int batch(const char *text, struct tx_batch_op **ops, size_t *n, char *err)
{
	FILE *f = fmemopen((void *)text, strlen(text), "r");
	int ret = tx_batch_read(f, ops, n, err, 256);

	fclose(f);
	return ret;
}

/* One line that must be refused: the error names line 1 and says why. */
static void refused(const char *line, const char *why)
{
	struct tx_batch_op *ops = NULL;
	size_t n = 0;
	char err[256];

	assert_int_equal(batch(line, &ops, &n, err), -EINVAL);
	if (strncmp(err, "1: ", 3) || !strstr(err, why))
		fail_msg("%s: error '%s', wanted '1: ...%s...'", line, err, why);
	assert_null(ops);
}

static void test_tx_batch(void **state)
{
	struct tx_batch_op *ops = NULL;
	size_t n;
	char err[256];

	(void)state;
	assert_int_equal(batch("{\"op\":\"put\",\"key\":\"a/b\",\"value\":\"v\"}\n\n"
			       "{\"op\":\"rename\",\"key\":\"a/b\",\"to\":\"c\"}\n",
			       &ops, &n, err),
			 0);
	assert_int_equal(n, 2);
	assert_string_equal(ops[0].op, "set"); /* put is set's older name */
	assert_string_equal(ops[1].op, "rename");
	assert_int_equal(ops[1].line, 3);
	tx_batch_free(ops, n);
	assert_int_equal(
		batch("{\"op\":\"put\",\"key\":\"../x\",\"value\":\"v\"}\n", &ops, &n, err),
		-EINVAL);
	assert_true(strncmp(err, "1: \"key\" must be", 16) == 0);
	assert_int_equal(
		batch("{\"op\":\"rename\",\"key\":\"a\",\"to\":\"/etc\"}\n", &ops, &n, err),
		-EINVAL);
	assert_int_equal(batch("\n{\"op\":", &ops, &n, err), -EINVAL);
	assert_true(strncmp(err, "2: not JSON", 11) == 0);
	assert_int_equal(batch(" \n", &ops, &n, err), -EINVAL);
	assert_string_equal(err, " no operations");
	assert_false(tx_batch_key_ok("a//b"));
	assert_false(tx_batch_key_ok("a/./b"));
	assert_true(tx_batch_key_ok("a/..b"));
}

/* Every op of spec section 8, with the fields it takes. */
static void test_tx_batch_spec_ops(void **state)
{
	static const unsigned char bin[] = { 0x00, 0xff, 'a', 0x00, 0x80, 0x0a };
	struct tx_batch_op *ops;
	size_t n;
	char err[256];

	(void)state;
	assert_int_equal(
		batch("{\"op\":\"set\",\"key\":\"u/1\",\"value\":\"alice\",\"tags\":[\"u\",\"a:1\"],"
		      "\"ttl\":60}\n"
		      "{\"op\":\"set\",\"key\":\"bin\",\"value_b64\":\"AP9hAIAK\"}\n"
		      "{\"op\":\"set\",\"key\":\"empty\",\"value_b64\":\"\",\"tags\":[]}\n"
		      "{\"op\":\"del\",\"key\":\"old\"}\n"
		      "{\"op\":\"tag\",\"key\":\"u/1\",\"tags\":[\"b\"]}\n"
		      "{\"op\":\"untag\",\"key\":\"u/1\",\"tags\":[\"a:1\",\"zz\"]}\n"
		      "{\"op\":\"ttl\",\"key\":\"u/1\",\"ttl\":0}\n"
		      "{\"op\":\"delete\",\"key\":\"older\"}\n"
		      "{\"op\":\"xattr\",\"key\":\"u/1\",\"name\":\"user.b\",\"value_b64\":\"AA==\"}\n",
		      &ops, &n, err),
		0);
	assert_int_equal(n, 9);
	assert_string_equal(ops[0].op, "set");
	assert_int_equal(ops[0].value_len, 5);
	assert_memory_equal(ops[0].value, "alice", 5);
	assert_int_equal(ops[1].value_len, sizeof(bin));
	assert_memory_equal(ops[1].value, bin, sizeof(bin));
	assert_int_equal(ops[2].value_len, 0);
	assert_non_null(ops[2].value);
	assert_string_equal(ops[3].op, "del");
	assert_null(ops[3].value);
	assert_string_equal(ops[4].op, "tag");
	assert_string_equal(ops[5].op, "untag");
	assert_string_equal(ops[6].op, "ttl");
	assert_string_equal(ops[7].op, "del");
	assert_int_equal(ops[8].value_len, 1);
	assert_int_equal(((const unsigned char *)ops[8].value)[0], 0);
	tx_batch_free(ops, n);

	/* A bad line anywhere fails the batch and names its line. */
	assert_int_equal(batch("{\"op\":\"del\",\"key\":\"a\"}\n\n"
			       "{\"op\":\"set\",\"key\":\"b\",\"value_b64\":\"A===\"}\n",
			       &ops, &n, err),
			 -EINVAL);
	assert_true(strncmp(err, "3: \"value_b64\" is not valid base64", 34) == 0);

	refused("{\"op\":\"frob\",\"key\":\"a\"}", "unknown op (set, del, tag, untag, ttl");
	refused("{\"op\":\"tags\",\"key\":\"a\",\"tags\":[\"x\"]}", "unknown op");
	refused("{\"op\":\"set\",\"key\":\"a\"}", "needs a \"value\" string or a \"value_b64\"");
	refused("{\"op\":\"set\",\"key\":\"a\",\"value\":\"v\",\"value_b64\":\"dg==\"}",
		"not both");
	refused("{\"op\":\"set\",\"key\":\"a\",\"value\":7}", "\"value\" must be a string");
	refused("{\"op\":\"set\",\"key\":\"a\",\"value_b64\":null}", "\"value_b64\" must be");
	/* tags: an array of strings, each a valid tag. */
	refused("{\"op\":\"set\",\"key\":\"a\",\"value\":\"v\",\"tags\":\"x,y\"}",
		"\"tags\" must be an array of tag strings");
	refused("{\"op\":\"tag\",\"key\":\"a\",\"tags\":[\"x\",3]}",
		"\"tags\" must be an array of tag strings");
	refused("{\"op\":\"tag\",\"key\":\"a\",\"tags\":[\"x,y\"]}", "a tag is 1-255 of");
	refused("{\"op\":\"untag\",\"key\":\"a\",\"tags\":[\"-x\"]}", "a tag is 1-255 of");
	refused("{\"op\":\"untag\",\"key\":\"a\",\"tags\":[\"\"]}", "a tag is 1-255 of");
	refused("{\"op\":\"tag\",\"key\":\"a\"}", "needs \"tags\"");
	refused("{\"op\":\"ttl\",\"key\":\"a\"}", "needs \"ttl\"");
	refused("{\"op\":\"ttl\",\"key\":\"a\",\"ttl\":-1}", "\"ttl\" must be an integer");
	refused("{\"op\":\"ttl\",\"key\":\"a\",\"ttl\":\"60\"}", "\"ttl\" must be an integer");
	/* A field the op does not take is a mistake, not something to ignore. */
	refused("{\"op\":\"set\",\"key\":\"a\",\"value\":\"v\",\"tll\":5}",
		"set takes no \"tll\" field");
	refused("{\"op\":\"del\",\"key\":\"a\",\"tags\":[]}", "del takes no \"tags\" field");
	refused("{\"op\":\"set\",\"key\":\"a\",\"value\":\"v\",\"op\":\"del\"}", "not JSON: duplicate");
	refused("{\"op\":\"tag\",\"key\":\"a\",\"tags\":[\"x\"],\"value\":\"v\"}",
		"tag takes no \"value\" field");
	refused("{\"op\":\"xattr\",\"key\":\"a\",\"name\":\"trusted.x\",\"value\":\"v\"}",
		"xattr needs a \"name\" (user.*)");
	assert_true(tx_batch_tag_ok("color:red"));
	assert_true(tx_batch_tag_ok("a.b@c=d-e_f"));
	assert_false(tx_batch_tag_ok(".."));
	assert_false(tx_batch_tag_ok("a+b"));
	assert_false(tx_batch_tag_ok("a/b"));
}

static void b64(const char *in, const char *want, size_t wantlen)
{
	unsigned char out[64];
	ssize_t n = b64_decode(in, strlen(in), out);

	if (n != (ssize_t)wantlen || memcmp(out, want, wantlen))
		fail_msg("'%s' decoded to %zd bytes, wanted %zu", in, n, wantlen);
}

static void b64_bad(const char *in)
{
	unsigned char out[64];

	if (b64_decode(in, strlen(in), out) != -EINVAL)
		fail_msg("'%s' was accepted", in);
}

/* RFC 4648 section 10's vectors, and what a strict decoder refuses. */
static void test_base64(void **state)
{
	(void)state;
	b64("", "", 0);
	b64("Zg==", "f", 1);
	b64("Zm8=", "fo", 2);
	b64("Zm9v", "foo", 3);
	b64("Zm9vYg==", "foob", 4);
	b64("Zm9vYmE=", "fooba", 5);
	b64("Zm9vYmFy", "foobar", 6);
	b64("AAAA", "\0\0\0", 3);
	b64("+/+/", "\xfb\xff\xbf", 3);
	b64_bad("Zg");         /* unpadded */
	b64_bad("Zg=");        /* short padding */
	b64_bad("Zh==");       /* bits left over after padding must be zero */
	b64_bad("Zm9=");       /* likewise with one '=' */
	b64_bad("Z===");       /* at most two '=' */
	b64_bad("Zg==Zg==");   /* padding only at the end */
	b64_bad("Zm9v\nYg=="); /* no line breaks */
	b64_bad("Zm9v Yg=");
	b64_bad("-_-_"); /* the URL-safe alphabet is another format */
	b64_bad("Zm9\x80");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_ctl_commands),
		cmocka_unit_test(test_ctl_errors),
		cmocka_unit_test(test_tx_batch),
		cmocka_unit_test(test_tx_batch_spec_ops),
		cmocka_unit_test(test_base64),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
