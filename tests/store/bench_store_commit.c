/* tests/store/bench_store_commit.c — how many instances per second store_instance_commit takes
 * from concurrent association threads, with and without fsync, next to a baseline that only
 * writes and renames files (what dcmrecv does: no fsync, no index). One line of figures per case;
 * never a timed assertion.
 *   bench_store_commit [DIR] [THREADS=8] [PER_THREAD=500] [KB=100] */
#include "common/status.h"
#include "common/util.h"
#include "store/store.h"

#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int g_threads = 8, g_per = 500;
static size_t g_size = 100 * 1024;
static char *g_buf;
static store *g_st;
static const char *g_dir;
static int g_mode; /* 0 store+fsync, 1 store no fsync, 2 baseline write+rename */
static int g_run;

static int write_all(const char *path)
{
    int fd = open(path, O_WRONLY | O_TRUNC | O_CREAT | O_CLOEXEC, 0640);
    if (fd < 0)
        return -1;
    size_t off = 0;
    while (off < g_size) {
        ssize_t n = write(fd, g_buf + off, g_size - off);
        if (n <= 0) {
            close(fd);
            return -1;
        }
        off += (size_t)n;
    }
    return close(fd);
}

static void *worker(void *arg)
{
    int t = (int)(intptr_t)arg;
    char tmp[4096], err[256], sop[65], series[65], study[65], path[4096];
    for (int i = 0; i < g_per; i++) {
        snprintf(sop, sizeof sop, "1.2.826.0.1.3680043.9.%d.%d.%d", g_run, t + 1, i + 1);
        if (g_mode == 2) {
            snprintf(tmp, sizeof tmp, "%s/base/tmp-%d-%d", g_dir, t, i);
            snprintf(path, sizeof path, "%s/base/%d-%d-%d.dcm", g_dir, g_run, t, i);
            if (write_all(tmp) != 0 || rename(tmp, path) != 0) {
                fprintf(stderr, "baseline write failed\n");
                exit(1);
            }
            continue;
        }
        snprintf(study, sizeof study, "1.2.826.0.1.3680043.8.%d.%d", g_run, t % 4 + 1);
        snprintf(series, sizeof series, "1.2.826.0.1.3680043.7.%d.%d", g_run, t % 4 + 1);
        store_instance_meta m = {
            .patient_id = "BENCH", .patient_name = "Bench^Patient", .study_uid = study,
            .series_uid = series, .modality = "MR", .series_number = 1,
            .sop_class_uid = "1.2.840.10008.5.1.4.1.1.4", .sop_instance_uid = sop,
            .transfer_syntax_uid = "1.2.840.10008.1.2.1", .instance_number = i + 1,
            .calling_ae = "BENCHSCU", .called_ae = "SEGNODE",
        };
        if (store_tmp_create(g_st, tmp, sizeof tmp, err, sizeof err) != SN_OK || write_all(tmp) != 0 ||
            store_instance_commit(g_st, tmp, &m, NULL, err, sizeof err) != SN_OK) {
            fprintf(stderr, "commit failed: %s\n", err);
            exit(1);
        }
    }
    return NULL;
}

static void run_case(const char *name, int mode)
{
    pthread_t th[256];
    g_mode = mode;
    g_run++;
    store_set_fsync(g_st, mode == 0);
    int64_t t0 = sn_mono_ms();
    for (int t = 0; t < g_threads; t++)
        pthread_create(&th[t], NULL, worker, (void *)(intptr_t)t);
    for (int t = 0; t < g_threads; t++)
        pthread_join(th[t], NULL);
    int64_t ms = sn_mono_ms() - t0;
    double n = (double)g_threads * g_per, s = ms > 0 ? ms / 1000.0 : 0.001;
    printf("store.commit case=%-14s threads=%d n=%.0f kb=%zu ms=%lld inst_per_s=%.0f mb_per_s=%.1f\n",
           name, g_threads, n, g_size / 1024, (long long)ms, n / s, n * (double)g_size / s / 1e6);
    fflush(stdout);
}

int main(int argc, char **argv)
{
    char dflt[] = "/tmp/sn-bench-store-XXXXXX", err[256], base[4096];
    g_dir = argc > 1 ? argv[1] : mkdtemp(dflt);
    if (argc > 2)
        g_threads = atoi(argv[2]);
    if (argc > 3)
        g_per = atoi(argv[3]);
    if (argc > 4)
        g_size = (size_t)atoi(argv[4]) * 1024;
    if (g_threads < 1 || g_threads > 256 || g_per < 1 || !g_dir) {
        fprintf(stderr, "usage: bench_store_commit [DIR] [THREADS] [PER_THREAD] [KB]\n");
        return 2;
    }
    g_buf = malloc(g_size);
    for (size_t i = 0; i < g_size; i++)
        g_buf[i] = (char)(i * 131u);
    if (store_open(g_dir, &g_st, err, sizeof err) != SN_OK) {
        fprintf(stderr, "store_open: %s\n", err);
        return 1;
    }
    snprintf(base, sizeof base, "%s/base", g_dir);
    sn_mkdirs(base, NULL, 0);
    run_case("baseline", 2);   /* write + rename, no fsync, no index (dcmrecv-like) */
    run_case("store_fsync", 0);
    run_case("store_nofsync", 1);
    store_close(g_st);
    free(g_buf);
    return 0;
}
