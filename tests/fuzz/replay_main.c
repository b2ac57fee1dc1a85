/* tests/fuzz/replay_main.c — main() for a harness built without libFuzzer (gcc; the normal and
 * sanitizer suites): runs LLVMFuzzerTestOneInput once on every file named on the command line,
 * and on every file directly inside each folder named there (sorted by name; names starting
 * with '.' and README* skipped). So the committed seed corpus and every crash found by fuzzing
 * (tests/fuzz/regressions/<harness>/) replay as ordinary CTest tests. Fails when no input was
 * found (a replay of nothing checks nothing); a crash or sanitizer report fails it as it would
 * the fuzzer. */
#include "fuzz.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerInitialize(int *argc, char ***argv) __attribute__((weak));

static int run_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "replay: cannot open %s\n", path);
        return -1;
    }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    /* Exactly n bytes (1 for an empty input), so ASan sees an overread as libFuzzer would. */
    uint8_t *exact = malloc(n > 0 ? (size_t)n : 1);
    if (!exact || (n > 0 && fread(exact, 1, (size_t)n, f) != (size_t)n)) {
        fprintf(stderr, "replay: cannot read %s\n", path);
        free(exact);
        fclose(f);
        return -1;
    }
    fclose(f);
    if (getenv("SEGNODE_FUZZ_VERBOSE"))
        fprintf(stderr, "replay: %s (%ld bytes)\n", path, n);
    LLVMFuzzerTestOneInput(exact, (size_t)n);
    free(exact);
    return 0;
}

static int skip_name(const struct dirent *e)
{
    return e->d_name[0] != '.' && strncmp(e->d_name, "README", 6) != 0;
}

int main(int argc, char **argv)
{
    if (LLVMFuzzerInitialize)
        LLVMFuzzerInitialize(&argc, &argv);
    long ran = 0;
    int failed = 0;
    for (int i = 1; i < argc; i++) {
        struct stat sb;
        if (stat(argv[i], &sb) != 0) {
            fprintf(stderr, "replay: %s: no such file or folder\n", argv[i]);
            failed = 1;
            continue;
        }
        if (!S_ISDIR(sb.st_mode)) {
            failed |= run_file(argv[i]) != 0;
            ran++;
            continue;
        }
        struct dirent **names = NULL;
        int n = scandir(argv[i], &names, skip_name, alphasort);
        for (int k = 0; k < n; k++) {
            char path[4096];
            snprintf(path, sizeof path, "%s/%s", argv[i], names[k]->d_name);
            if (stat(path, &sb) == 0 && S_ISREG(sb.st_mode)) {
                failed |= run_file(path) != 0;
                ran++;
            }
            free(names[k]);
        }
        free(names);
    }
    printf("replay: %ld input(s) run without a crash\n", ran);
    if (ran == 0) {
        fprintf(stderr, "replay: no inputs found\n");
        return 1;
    }
    return failed;
}
