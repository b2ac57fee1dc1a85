/* tests/fuzz/fuzz_util.c — scratch folders and file helpers for the fuzz harnesses (fuzz.h). */
#define _XOPEN_SOURCE 700 /* nftw */
#include "fuzz.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define FUZZ_MAX_DIRS 8

static char fuzz_dirs[FUZZ_MAX_DIRS][512];
static int fuzz_ndirs;

static int rm_one(const char *path, const struct stat *sb, int type, struct FTW *ftw)
{
    (void)sb; (void)type; (void)ftw;
    remove(path);
    return 0;
}

void fuzz_rm_rf(const char *path)
{
    nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static void rm_all(void)
{
    for (int i = 0; i < fuzz_ndirs; i++)
        fuzz_rm_rf(fuzz_dirs[i]);
}

const char *fuzz_scratch_dir(const char *tag)
{
    const char *bases[3] = {getenv("SEGNODE_FUZZ_TMP"), "/dev/shm", getenv("TMPDIR")};
    if (fuzz_ndirs == FUZZ_MAX_DIRS)
        abort();
    for (int i = 0; i < 4; i++) {
        const char *base = i < 3 ? bases[i] : "/tmp";
        if (!base || !*base || access(base, W_OK) != 0)
            continue;
        char *d = fuzz_dirs[fuzz_ndirs];
        snprintf(d, sizeof fuzz_dirs[0], "%s/segnode-fuzz-%s-XXXXXX", base, tag);
        if (mkdtemp(d)) {
            if (fuzz_ndirs++ == 0)
                atexit(rm_all);
            return d;
        }
    }
    fprintf(stderr, "fuzz: cannot make a scratch folder: %s\n", strerror(errno));
    abort();
}

int fuzz_write_file(const char *path, const void *data, size_t n)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return -1;
    const char *p = data;
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            close(fd);
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return close(fd);
}
