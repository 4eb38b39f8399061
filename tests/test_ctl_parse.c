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

static void test_tx_batch(void **state)
{
	struct tx_batch_op *ops;
	size_t n;
	char err[256];

	(void)state;
	assert_int_equal(batch("{\"op\":\"put\",\"key\":\"a/b\",\"value\":\"v\"}\n\n"
			       "{\"op\":\"rename\",\"key\":\"a/b\",\"to\":\"c\"}\n",
			       &ops, &n, err),
			 0);
	assert_int_equal(n, 2);
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

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_ctl_commands),
		cmocka_unit_test(test_ctl_errors),
		cmocka_unit_test(test_tx_batch),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
