/* tests/fuzz/fuzz.h — helpers shared by the fuzz harnesses (C and C++): a private scratch folder
 * per process (on /dev/shm when it exists, so the store's files cost no disk I/O), whole-file
 * writes and recursive removal. Not part of the node; harnesses only. */
#ifndef SEGNODE_TESTS_FUZZ_FUZZ_H
#define SEGNODE_TESTS_FUZZ_FUZZ_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The harness entry points (libFuzzer's names). replay_main.c calls them without libFuzzer. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A new empty folder "segnode-fuzz-<tag>-XXXXXX" under $SEGNODE_FUZZ_TMP, /dev/shm or $TMPDIR
 * (first that is writable), removed with everything in it at exit. Aborts when none can be
 * made (a harness without scratch space cannot run). Returns a static string. */
const char *fuzz_scratch_dir(const char *tag);

/* Write `n` bytes to `path` (created or truncated). 0 or -1. */
int fuzz_write_file(const char *path, const void *data, size_t n);

/* rm -rf `path`; missing is fine. */
void fuzz_rm_rf(const char *path);

#ifdef __cplusplus
}
#endif

#endif
