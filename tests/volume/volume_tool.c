/* tests/volume/volume_tool.c — a small driver of the volume library for the test scripts and the
 * benchmark (so they do not depend on the whole `segnode` binary):
 *   volume_tool convert [--fill-gaps] [--single] [--no-suv] [--threads N] [--float] PATH OUT.nii[.gz]
 *   volume_tool info    [same options] PATH         one line of key=value
 *   volume_tool frames  FILE OUT.raw                stored values as int32, prints the grid
 * PATH is a folder (recursive) or one file. Exit 0 on success, 1 with the error on stderr. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common/status.h"
#include "pipeline/nifti.h"
#include "pipeline/volume.h"

static int read_any(const char *path, const pipeline_volume_opts *o, pipeline_volume **v,
                    char *err, size_t errlen)
{
    struct stat sb;
    if (stat(path, &sb) == 0 && S_ISDIR(sb.st_mode))
        return pipeline_volume_read_dir(path, o, v, err, errlen);
    const char *p[1] = {path};
    return pipeline_volume_read_files(p, 1, o, v, err, errlen);
}

static void print_info(const pipeline_volume *v, FILE *f)
{
    fprintf(f, "dims=%dx%dx%d spacing=%.6g,%.6g,%.6g origin=%.4f,%.4f,%.4f "
            "dir=%.5f,%.5f,%.5f,%.5f,%.5f,%.5f,%.5f,%.5f,%.5f unit=%s modality=%s filled=%d "
            "load_ms=%.1f decode_ms=%.1f threads=%d note=\"%s\"\n",
            v->nx, v->ny, v->nz, v->spacing[0], v->spacing[1], v->spacing[2], v->origin[0],
            v->origin[1], v->origin[2], v->direction[0], v->direction[1], v->direction[2],
            v->direction[3], v->direction[4], v->direction[5], v->direction[6], v->direction[7],
            v->direction[8], v->unit[0] ? v->unit : "-", v->modality, v->filled_slices,
            v->load_ms, v->decode_ms, v->threads, v->unit_note);
}

int main(int argc, char **argv)
{
    char err[1024] = "";
    if (argc < 3) {
        fprintf(stderr, "usage: volume_tool convert|info|frames ...\n");
        return 2;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "frames") == 0) {
        pipeline_frames *f = NULL;
        int rc = pipeline_frames_read(argv[2], &f, err, sizeof err);
        if (rc) {
            fprintf(stderr, "error (%s): %s\n", sn_strerror(rc), err);
            return 1;
        }
        printf("rows=%d cols=%d frames=%d ts=%s\n", f->rows, f->cols, f->frames,
               f->transfer_syntax);
        if (argc > 3) {
            FILE *o = fopen(argv[3], "wb");
            size_t n = (size_t)f->rows * f->cols * f->frames;
            if (!o || fwrite(f->values, sizeof(int32_t), n, o) != n) return 1;
            fclose(o);
        }
        pipeline_frames_free(f);
        return 0;
    }
    pipeline_volume_opts o;
    pipeline_volume_opts_default(&o);
    pipeline_nifti_type type = PIPELINE_NIFTI_AUTO;
    int i = 2;
    for (; i < argc && argv[i][0] == '-'; i++) {
        if (!strcmp(argv[i], "--fill-gaps")) o.fill_gaps = 1;
        else if (!strcmp(argv[i], "--single")) o.min_slices = 1;
        else if (!strcmp(argv[i], "--no-suv")) o.pet_suv = 0;
        else if (!strcmp(argv[i], "--float")) type = PIPELINE_NIFTI_FLOAT32;
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc) o.threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--series") && i + 1 < argc) o.series_uid = argv[++i];
        else {
            fprintf(stderr, "unknown option %s\n", argv[i]);
            return 2;
        }
    }
    if (i >= argc) return 2;
    /* As `segnode convert`: integers stay int16 unless --float (info reads floats). */
    o.int16 = strcmp(cmd, "convert") == 0 && type != PIPELINE_NIFTI_FLOAT32;
    pipeline_volume *v = NULL;
    int rc = read_any(argv[i], &o, &v, err, sizeof err);
    if (rc) {
        fprintf(stderr, "error (%s): %s\n", sn_strerror(rc), err);
        return 1;
    }
    print_info(v, stdout);
    if (strcmp(cmd, "convert") == 0 && i + 1 < argc) {
        rc = pipeline_nifti_write(v, argv[i + 1], type, NULL, err, sizeof err);
        if (rc) {
            fprintf(stderr, "error (%s): %s\n", sn_strerror(rc), err);
            pipeline_volume_free(v);
            return 1;
        }
    }
    pipeline_volume_free(v);
    return 0;
}
