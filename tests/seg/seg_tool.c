/* tests/seg/seg_tool.c — drives pipeline/segread.h and pipeline/segwrite.h for the SEG tests and
 * the SEG benchmark (tests/bench/seg):
 *   seg_tool info SEG.dcm                       segments and frames as parsed by segread
 *   seg_tool mismatch SERIES_DIR LABELS.tsv OUT  writer with a label grid one column too wide
 *   seg_tool bench SERIES_DIR LABELS.tsv OUTDIR [REPEATS]
 *       5-label volume on the series' grid, written by segnode's writer and by the plain dcmseg
 *       path (FG checks on, DCMTK packer), each in a forked child: seconds, frames/s, peak RSS. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/status.h"
#include "pipeline/labels.h"
#include "pipeline/segread.h"
#include "pipeline/segwrite.h"
#include "pipeline/volume.h"

static int info(const char *path)
{
    char err[512];
    pipeline_seg *s = NULL;
    if (pipeline_seg_read(path, &s, err, sizeof err)) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    printf("seg rows=%d cols=%d frames=%d fractional=%d max=%d segments=%d for=%s refseries=%s\n", s->rows, s->cols,
           s->nframes, s->fractional, s->max_fractional, s->nsegments, s->frame_of_reference_uid,
           s->referenced_series_uid);
    for (int i = 0; i < s->nsegments; i++) {
        const pipeline_seg_segment *g = &s->segments[i];
        printf("segment %d|%s|%s|%s:%s:%s|%s:%s:%s|%d\n", g->number, g->label, g->algorithm_type, g->category.scheme,
               g->category.value, g->category.meaning, g->type.scheme, g->type.value, g->type.meaning, g->frames);
    }
    uint8_t *m = malloc((size_t)s->rows * s->cols);
    for (int f = 0; f < s->nframes; f++) {
        const pipeline_seg_frame *fr = &s->frames[f];
        pipeline_seg_frame_mask(s, f, m);
        size_t on = 0;
        for (size_t i = 0; i < (size_t)s->rows * s->cols; i++) on += m[i];
        printf("frame %d|%d|%.6f,%.6f,%.6f|%s|%d|%zu\n", f + 1, fr->segment, fr->ipp[0], fr->ipp[1], fr->ipp[2],
               fr->ref_sop_uid, fr->ref_frame, on);
    }
    free(m);
    pipeline_seg_free(s);
    return 0;
}

static int load(const char *dir, const char *table_path, pipeline_volume **v, pipeline_labels **t)
{
    char err[1024];
    if (pipeline_labels_load(table_path, t, err, sizeof err) ||
        pipeline_volume_read_dir(dir, NULL, v, err, sizeof err)) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    return 0;
}

static int mismatch(const char *dir, const char *table_path, const char *out)
{
    pipeline_volume *v = NULL;
    pipeline_labels *t = NULL;
    if (load(dir, table_path, &v, &t)) return 1;
    size_t n = (size_t)(v->nx + 1) * v->ny * v->nz;
    uint8_t *lab = calloc(n, 1);
    lab[n / 2] = 8;
    pipeline_seg_labelmap lm = {v->nx + 1, v->ny, v->nz, 1, lab, 0, {0}, {0}, {0}};
    pipeline_seg_write_opts o;
    pipeline_seg_write_opts_default(&o);
    o.algorithm_name = "test", o.method = "test";
    char err[1024] = "";
    int rc = pipeline_seg_write_series(out, v, dir, &lm, t, &o, NULL, err, sizeof err);
    printf("rc=%d %s\n", rc, err);
    /* same grid size but a shifted origin */
    pipeline_seg_labelmap lm2 = {v->nx, v->ny, v->nz, 1, lab, 1, {0}, {0}, {0}};
    memcpy(lm2.origin, v->origin, sizeof lm2.origin);
    memcpy(lm2.spacing, v->spacing, sizeof lm2.spacing);
    memcpy(lm2.direction, v->direction, sizeof lm2.direction);
    lm2.origin[2] += 0.5;
    char err2[1024] = "";
    int rc2 = pipeline_seg_write_series(out, v, dir, &lm2, t, &o, NULL, err2, sizeof err2);
    printf("rc=%d %s\n", rc2, err2);
    free(lab);
    pipeline_volume_free(v);
    pipeline_labels_free(t);
    return rc == SN_EINVAL && rc2 == SN_EINVAL && access(out, F_OK) != 0 ? 0 : 1;
}

static long rss_kb(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kb = 0;
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, "VmRSS:", 6)) kb = atol(line + 6);
    if (f) fclose(f);
    return kb;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int bench(const char *dir, const char *table_path, const char *outdir, int repeats)
{
    pipeline_volume *v = NULL;
    pipeline_labels *t = NULL;
    double t0 = now_s();
    if (load(dir, table_path, &v, &t)) return 1;
    double tread = now_s() - t0;
    /* Five labels: nested ellipsoids and two boxes, each over part of the slices. */
    static const int labels[5] = {1, 8, 9, 12, 16};
    size_t n = (size_t)v->nx * v->ny * v->nz;
    uint8_t *lab = calloc(n, 1);
    for (int k = 0; k < v->nz; k++)
        for (int j = 0; j < v->ny; j++)
            for (int i = 0; i < v->nx; i++) {
                double x = (i - v->nx / 2.0) / (v->nx * 0.45), y = (j - v->ny / 2.0) / (v->ny * 0.35),
                       z = (k - v->nz / 2.0) / (v->nz * 0.5);
                int l = 0;
                if (x * x + y * y < 1) l = labels[0];
                if ((x + 0.4) * (x + 0.4) + y * y + z * z < 0.12) l = labels[1];
                if ((x - 0.5) * (x - 0.5) + (y + 0.2) * (y + 0.2) + (z - 0.3) * (z - 0.3) < 0.04) l = labels[2];
                if (x * x + (y + 0.3) * (y + 0.3) + (z - 0.6) * (z - 0.6) < 0.05) l = labels[3];
                if (fabs(x - 0.1) < 0.05 && fabs(y - 0.3) < 0.05) l = labels[4];
                lab[(size_t)i + (size_t)v->nx * ((size_t)j + (size_t)v->ny * k)] = (uint8_t)l;
            }
    printf("series %dx%dx%d read in %.2f s; RSS before writing %.0f MiB (volume + labels)\n", v->nx, v->ny, v->nz,
           tread, rss_kb() / 1024.0);
    printf("%-28s %8s %8s %10s %12s %12s\n", "case", "frames", "seconds", "frames/s", "peak_MiB", "+MiB_write");
    const char *names[2] = {"segnode (own packer)", "plain dcmseg (check on)"};
    for (int r = 0; r < repeats; r++)
        for (int which = 0; which < 2; which++) {
            int pfd[2];
            if (pipe(pfd)) return 1;
            pid_t pid = fork();
            if (pid == 0) {
                close(pfd[0]);
                long base = rss_kb();
                char path[4096], err[1024];
                snprintf(path, sizeof path, "%s/%s.dcm", outdir, which ? "plain" : "segnode");
                pipeline_seg_labelmap lm = {v->nx, v->ny, v->nz, 1, lab, 0, {0}, {0}, {0}};
                pipeline_seg_write_opts o;
                pipeline_seg_write_opts_default(&o);
                o.algorithm_name = "bench", o.method = "segnode bench";
                o.datetime = "20240101120000";
                pipeline_seg_write_info wi;
                double a = now_s();
                int rc = which ? pipeline_seg_write_series_plain(path, v, dir, &lm, t, &o, &wi, err, sizeof err)
                               : pipeline_seg_write_series(path, v, dir, &lm, t, &o, &wi, err, sizeof err);
                double b = now_s();
                if (rc) fprintf(stderr, "%s: %s\n", names[which], err);
                char msg[128];
                int len = snprintf(msg, sizeof msg, "%d %d %.6f %ld\n", rc, wi.frames, b - a, base);
                if (write(pfd[1], msg, (size_t)len) != len) _exit(3);
                _exit(rc ? 1 : 0);
            }
            close(pfd[1]);
            char buf[128] = "";
            ssize_t got = read(pfd[0], buf, sizeof buf - 1);
            close(pfd[0]);
            int st;
            struct rusage ru;
            wait4(pid, &st, 0, &ru);
            int rc = 1, frames = 0;
            double sec = 0;
            long base = 0;
            if (got > 0) sscanf(buf, "%d %d %lf %ld", &rc, &frames, &sec, &base);
            if (rc) {
                printf("%-28s FAILED\n", names[which]);
                continue;
            }
            printf("%-28s %8d %8.2f %10.0f %12.0f %12.0f\n", names[which], frames, sec, frames / sec,
                   ru.ru_maxrss / 1024.0, (ru.ru_maxrss - base) / 1024.0);
            fflush(stdout);
        }
    free(lab);
    pipeline_volume_free(v);
    pipeline_labels_free(t);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 3 && !strcmp(argv[1], "info")) return info(argv[2]);
    if (argc == 5 && !strcmp(argv[1], "mismatch")) return mismatch(argv[2], argv[3], argv[4]);
    if ((argc == 5 || argc == 6) && !strcmp(argv[1], "bench"))
        return bench(argv[2], argv[3], argv[4], argc == 6 ? atoi(argv[5]) : 1);
    fprintf(stderr, "usage: seg_tool info SEG | mismatch SERIES_DIR LABELS OUT | bench SERIES_DIR LABELS OUTDIR [N]\n");
    return 2;
}
