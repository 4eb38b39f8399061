/*
 * Backup manifests (store/backup_manifest.c: kv_bk_manifest_parse), the
 * JSON a restore trusts once its checksum matches. Properties: a manifest
 * that parses dumps to text that parses again, and dumping that gives the
 * same text (nothing is lost or invented between parse and dump).
 */
#include <errno.h>

#include "store/backup_int.h"
#include "fuzz/fuzz.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	fuzz_quiet();
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct kv_bk_manifest a = { 0 }, b = { 0 };
	char err[256], *one, *two;

	if (kv_bk_manifest_parse((const char *)data, size, &a, err, sizeof(err))) {
		FUZZ_CHECK(err[0]);
		kv_bk_manifest_free(&a);
		return 0;
	}
	one = kv_bk_manifest_dump(&a);
	FUZZ_CHECK(one);
	FUZZ_CHECK(kv_bk_manifest_parse(one, strlen(one), &b, err, sizeof(err)) == 0);
	two = kv_bk_manifest_dump(&b);
	FUZZ_CHECK(two && !strcmp(one, two));
	free(one);
	free(two);
	kv_bk_manifest_free(&a);
	kv_bk_manifest_free(&b);
	return 0;
}
