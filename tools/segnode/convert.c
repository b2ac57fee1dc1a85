/* tools/segnode/convert.c — `segnode convert SERIES_DIR_OR_UID OUT.nii[.gz]`: read a series
 * (a folder of DICOM files, or a series UID looked up in the node's store) into a volume and
 * write it as NIfTI-1 for research tools. Prints a summary (grid, spacing, orientation, unit).
 * Refusals (gaps, tilt, ...) print the reader's reason and exit 1. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common/status.h"
#include "common/util.h"
#include "pipeline/nifti.h"
#include "pipeline/volume.h"
#include "tools/segnode/cli.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: segnode convert [options] SERIES_DIR_OR_UID OUT.nii[.gz]\n"
            "  SERIES_DIR_OR_UID  a folder of DICOM files (searched recursively; one series), or\n"
            "                     a Series Instance UID stored by this node (-c selects config)\n"
            "options:\n"
            "  --series UID       the series to read when the folder holds several\n"
            "  --fill-gaps        fill missing slices (at most 8 in a row) by interpolation\n"
            "                     instead of refusing the series\n"
            "  --allow-single     accept a single slice\n"
            "  --no-suv           keep PET in Bq/ml (default: SUVbw when the tags allow it)\n"
            "  --float            always write float32 (default: int16 when values are integers)\n"
            "  --threads N        decoding threads (default: all CPUs)\n");
}

/* The LPS letter an axis points to most (e.g. "L", "P", "S", or "R", "A", "I"). */
static char axis_letter(const double *dir, int col)
{
    double x = dir[col], y = dir[3 + col], z = dir[6 + col];
    double ax = x < 0 ? -x : x, ay = y < 0 ? -y : y, az = z < 0 ? -z : z;
    if (ax >= ay && ax >= az) return x > 0 ? 'L' : 'R';
    if (ay >= az) return y > 0 ? 'P' : 'A';
    return z > 0 ? 'S' : 'I';
}

typedef struct path_list {
    char **p;
    int n, cap;
} path_list;

static int collect(void *ctx, const char *sop_uid, const char *sop_class, const char *path)
{
    (void)sop_uid;
    (void)sop_class;
    path_list *l = ctx;
    if (l->n == l->cap) {
        int cap = l->cap ? 2 * l->cap : 256;
        char **p = realloc(l->p, sizeof *p * (size_t)cap);
        if (!p) return 1;
        l->p = p;
        l->cap = cap;
    }
    if (!(l->p[l->n] = strdup(path))) return 1;
    l->n++;
    return 0;
}

static int read_from_store(const char *uid, pipeline_volume_opts *o, pipeline_volume **v,
                           char *err, size_t errlen)
{
    sn_config *cfg = NULL;
    store *st = NULL;
    path_list l = {0};
    int rc = cli_load_config(cli_g.config_path, &cfg);
    if (rc) return sn_errf(err, errlen, rc, "cannot load the configuration");
    rc = cli_open_store(cfg, &st);
    if (rc) {
        sn_config_unref(cfg);
        return sn_errf(err, errlen, rc, "cannot open the store");
    }
    rc = store_instance_list(st, uid, collect, &l, err, errlen);
    if (!rc && l.n == 0)
        rc = sn_errf(err, errlen, SN_ENOENT, "series %s: not in the store under %s", uid,
                     cfg->node.storage);
    if (!rc) {
        o->series_uid = uid;
        rc = pipeline_volume_read_files((const char *const *)l.p, l.n, o, v, err, errlen);
    }
    for (int i = 0; i < l.n; i++) free(l.p[i]);
    free(l.p);
    store_close(st);
    sn_config_unref(cfg);
    return rc;
}

int segnode_convert(int argc, char **argv)
{
    pipeline_volume_opts o;
    pipeline_volume_opts_default(&o);
    pipeline_nifti_type type = PIPELINE_NIFTI_AUTO;
    const char *pos[2] = {NULL, NULL};
    int npos = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int g = cli_take_global(argc, argv, &i);
        if (g < 0) return CLI_EXIT_USAGE;
        if (g > 0) continue;
        if (cli_is_help(a)) {
            usage(stdout);
            return CLI_EXIT_OK;
        } else if (!strcmp(a, "--fill-gaps")) {
            o.fill_gaps = 1;
        } else if (!strcmp(a, "--allow-single")) {
            o.min_slices = 1;
        } else if (!strcmp(a, "--no-suv")) {
            o.pet_suv = 0;
        } else if (!strcmp(a, "--float")) {
            type = PIPELINE_NIFTI_FLOAT32;
        } else if (!strcmp(a, "--threads") && i + 1 < argc) {
            o.threads = atoi(argv[++i]);
        } else if (!strcmp(a, "--series") && i + 1 < argc) {
            o.series_uid = argv[++i];
        } else if (a[0] == '-' && a[1]) {
            fprintf(stderr, "segnode convert: unknown option %s\n", a);
            usage(stderr);
            return CLI_EXIT_USAGE;
        } else if (npos < 2) {
            pos[npos++] = a;
        } else {
            usage(stderr);
            return CLI_EXIT_USAGE;
        }
    }
    if (npos != 2) {
        usage(stderr);
        return CLI_EXIT_USAGE;
    }
    cli_apply_log_level();
    /* Integer values stay int16 from reading to writing (no float round trip) unless --float. */
    o.int16 = type != PIPELINE_NIFTI_FLOAT32;
    char err[1024] = "";
    pipeline_volume *v = NULL;
    int rc;
    struct stat sb;
    if (stat(pos[0], &sb) == 0 && S_ISDIR(sb.st_mode)) {
        rc = pipeline_volume_read_dir(pos[0], &o, &v, err, sizeof err);
    } else if (stat(pos[0], &sb) == 0 && S_ISREG(sb.st_mode)) {
        rc = pipeline_volume_read_files(&pos[0], 1, &o, &v, err, sizeof err);
    } else if (sn_uid_valid(pos[0])) {
        rc = read_from_store(pos[0], &o, &v, err, sizeof err);
    } else {
        fprintf(stderr, "segnode convert: %s is neither a folder, a file nor a series UID\n",
                pos[0]);
        return CLI_EXIT_USAGE;
    }
    if (rc) {
        fprintf(stderr, "segnode convert: %s\n", err[0] ? err : sn_strerror(rc));
        return CLI_EXIT_FAIL;
    }
    pipeline_nifti_type chosen = type;
    rc = pipeline_nifti_write(v, pos[1], type, &chosen, err, sizeof err);
    if (rc) {
        fprintf(stderr, "segnode convert: %s\n", err);
        pipeline_volume_free(v);
        return CLI_EXIT_FAIL;
    }
    printf("series       %s (%s)\n", v->series_uid, v->modality);
    printf("grid         %d x %d x %d\n", v->nx, v->ny, v->nz);
    printf("spacing      %.4g x %.4g x %.4g mm\n", v->spacing[0], v->spacing[1], v->spacing[2]);
    printf("origin       %.3f %.3f %.3f mm (LPS)\n", v->origin[0], v->origin[1], v->origin[2]);
    printf("orientation  %c%c%c (i, j, k towards; LPS letters)\n", axis_letter(v->direction, 0),
           axis_letter(v->direction, 1), axis_letter(v->direction, 2));
    printf("unit         %s%s%s\n", v->unit[0] ? v->unit : "(none)", v->unit_note[0] ? " — " : "",
           v->unit_note);
    if (v->filled_slices) printf("filled       %d missing slice(s) interpolated\n", v->filled_slices);
    printf("written      %s (%s, %.0f ms to load)\n", pos[1],
           chosen == PIPELINE_NIFTI_INT16 ? "int16" : "float32", v->load_ms);
    pipeline_volume_free(v);
    return CLI_EXIT_OK;
}
