/*
 * Commands written to .nadb/ctl (fs/fs_ctl_cmd.c: fs_ctl_parse), each input
 * one write(2). A parsed tx command then runs on an in-memory store as
 * fs_ctl.c runs it (begin, commit, abort, list), so that fuzzed names also
 * reach the store's transaction name rules. Properties: a reply is always
 * one line starting with "error: "; a parsed name is what the input said;
 * an open transaction is always listed, and gone after abort.
 */
#include <errno.h>
#include <stdbool.h>

#include "fs/fs_ctl_cmd.h"
#include "store/kv.h"
#include "tests/mem_backend.h"
#include "fuzz/fuzz.h"

static struct mem_store f;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	fuzz_quiet();
	mem_store_open(&f, false);
	return 0;
}

static bool listed(const char *name)
{
	struct kv_dirent *ents;
	size_t n;
	bool found = false;

	FUZZ_CHECK(kv_tx_list(f.kv, &ents, &n) == 0);
	for (size_t i = 0; i < n; i++)
		found |= !strcmp(ents[i].name, name);
	kv_dirents_free(ents, n);
	return found;
}

static void run(const struct fs_ctl_cmd *c)
{
	struct kv_attr a;
	char msg[1024];
	int ret;

	switch (c->verb) {
	case FS_CTL_TX_BEGIN:
		ret = kv_tx_begin(f.kv, c->name, &a);
		FUZZ_CHECK(ret == 0 || ret == -EINVAL || ret == -EEXIST);
		if (ret)
			break;
		FUZZ_CHECK(listed(c->name));
		FUZZ_CHECK(kv_tx_root(f.kv, c->name, &a) == 0);
		FUZZ_CHECK(kv_tx_abort(f.kv, c->name) == 0);
		FUZZ_CHECK(!listed(c->name));
		break;
	case FS_CTL_TX_COMMIT:
		ret = kv_tx_commit(f.kv, c->name, msg, sizeof(msg));
		FUZZ_CHECK(ret == -ENOENT || ret == -EINVAL);
		break;
	case FS_CTL_TX_ABORT:
		ret = kv_tx_abort(f.kv, c->name);
		FUZZ_CHECK(ret == -ENOENT || ret == -EINVAL);
		break;
	case FS_CTL_TX_LIST:
		FUZZ_CHECK(!listed(""));
		break;
	default:
		break;
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fs_ctl_cmd c;
	char err[512];
	int ret;

	memset(&c, 0xa5, sizeof(c));
	err[0] = '\0';
	ret = fs_ctl_parse((const char *)data, size, &c, err, sizeof(err));
	FUZZ_CHECK(ret == 0 || ret == -EINVAL);
	if (ret) {
		size_t len = strlen(err);

		FUZZ_CHECK(!strncmp(err, "error: ", 7));
		FUZZ_CHECK(len > 7 && err[len - 1] == '\n' && !memchr(err, '\n', len - 1));
		return 0;
	}
	if (c.verb == FS_CTL_TX_BEGIN || c.verb == FS_CTL_TX_COMMIT || c.verb == FS_CTL_TX_ABORT) {
		size_t n = strnlen(c.name, sizeof(c.name));

		FUZZ_CHECK(n > 0 && n < sizeof(c.name));
		FUZZ_CHECK(memmem(data, size, c.name, n));
	}
	run(&c);
	return 0;
}
