/* tests/atlas/atlas_eval.c — leave-one-out evaluation of the atlas method on phantom subjects:
 * CT atlases (subject/ct + subject/seg/ct.dcm) registered to one target subject's modalities,
 * fused by every method and compared with that subject's ground-truth SEG per modality. Prints
 * one line per (modality, method, label) with Dice and HD95 (mm), plus registration timings.
 * With --check LABEL:MODALITY:METHOD:MIN it exits 1 when a Dice is below MIN (the ctest test).
 * --subset and --select-k fuse parts of the library from the same registrations: a smaller
 * library, or the node's select_k, compared with the whole one without registering twice (the
 * two-step registration select_k runs is the whole one bit for bit: test_atlas_unit).
 * Used by tests/atlas/eval.py (the full table) and tests/bench/register. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/status.h"
#include "pipeline/atlas/atlas.h"
#include "pipeline/labels.h"
#include "pipeline/segread.h"
#include "pipeline/volume.h"

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static void vol_grid(const pipeline_volume *v, atlas_grid *g)
{
    g->nx = v->nx, g->ny = v->ny, g->nz = v->nz;
    memcpy(g->spacing, v->spacing, sizeof g->spacing);
    memcpy(g->origin, v->origin, sizeof g->origin);
    memcpy(g->direction, v->direction, sizeof g->direction);
}

/* Series + its SEG as (volume, uint8 labels). */
static int load(const char *series, const char *segpath, const pipeline_labels *table, pipeline_volume **v,
                uint8_t **lab)
{
    char err[1024];
    pipeline_volume_opts o;
    pipeline_volume_opts_default(&o);
    o.threads = 2;
    if (pipeline_volume_read_dir(series, &o, v, err, sizeof err)) {
        fprintf(stderr, "%s\n", err);
        return -1;
    }
    if (!lab) return 0;
    size_t n = (size_t)(*v)->nx * (*v)->ny * (*v)->nz;
    uint16_t *l16 = calloc(n, 2);
    pipeline_seg *seg = NULL;
    pipeline_seg_import_report rep;
    if (!l16 || pipeline_seg_read(segpath, &seg, err, sizeof err) ||
        pipeline_seg_to_labels(seg, *v, table, l16, &rep, err, sizeof err)) {
        fprintf(stderr, "%s: %s\n", segpath, err);
        free(l16);
        pipeline_seg_free(seg);
        return -1;
    }
    pipeline_seg_free(seg);
    *lab = malloc(n);
    for (size_t i = 0; i < n; i++) (*lab)[i] = l16[i] > 255 ? 0 : (uint8_t)l16[i];
    free(l16);
    return 0;
}

static int cmpd(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Surface voxels (world mm) of label l, at most `cap` (evenly subsampled). */
static int surface(const uint8_t *L, const atlas_grid *g, int l, double *pts, int cap)
{
    size_t total = 0;
    const int nx = g->nx, ny = g->ny, nz = g->nz;
    for (int pass = 0; pass < 2; pass++) {
        size_t step = pass ? total / (size_t)cap + 1 : 1, cnt = 0;
        int m = 0;
        double w[12];
        atlas_grid_to_world(g, w);
        for (int k = 0; k < nz; k++)
            for (int j = 0; j < ny; j++)
                for (int i = 0; i < nx; i++) {
                    size_t p = i + (size_t)nx * (j + (size_t)ny * k);
                    if (L[p] != l) continue;
                    int edge = i == 0 || j == 0 || k == 0 || i == nx - 1 || j == ny - 1 || k == nz - 1 ||
                               L[p - 1] != l || L[p + 1] != l || L[p - nx] != l || L[p + nx] != l ||
                               L[p - (size_t)nx * ny] != l || L[p + (size_t)nx * ny] != l;
                    if (!edge) continue;
                    if (!pass) {
                        total++;
                        continue;
                    }
                    if (cnt++ % step) continue;
                    for (int r = 0; r < 3; r++) pts[m * 3 + r] = w[r * 4] * i + w[r * 4 + 1] * j + w[r * 4 + 2] * k;
                    m++;
                }
        if (pass) return m;
    }
    return 0;
}

static double hd95(const uint8_t *A, const uint8_t *B, const atlas_grid *g, int l)
{
    enum { CAP = 3000 };
    double *pa = malloc(sizeof(double) * 3 * CAP), *pb = malloc(sizeof(double) * 3 * CAP);
    int na = surface(A, g, l, pa, CAP), nb = surface(B, g, l, pb, CAP);
    double res = NAN;
    if (na && nb) {
        double *d = malloc(sizeof(double) * (size_t)(na + nb));
        for (int dir = 0; dir < 2; dir++) {
            const double *p = dir ? pb : pa, *q = dir ? pa : pb;
            int np = dir ? nb : na, nq = dir ? na : nb;
#pragma omp parallel for
            for (int i = 0; i < np; i++) {
                double best = INFINITY;
                for (int j = 0; j < nq; j++) {
                    double dx = p[i * 3] - q[j * 3], dy = p[i * 3 + 1] - q[j * 3 + 1], dz = p[i * 3 + 2] - q[j * 3 + 2];
                    double e = dx * dx + dy * dy + dz * dz;
                    best = e < best ? e : best;
                }
                d[(dir ? na : 0) + i] = sqrt(best);
            }
        }
        qsort(d, (size_t)(na + nb), sizeof(double), cmpd);
        res = d[(size_t)(0.95 * (na + nb - 1))];
        free(d);
    }
    free(pa);
    free(pb);
    return res;
}

/* MetaImage (.mhd + .raw) of a float or uint8 volume, for the elastix / plastimatch comparison. */
static void write_mhd(const char *dir, const char *name, const atlas_grid *g, const void *data, int u8)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s.mhd", dir, name);
    FILE *f = fopen(path, "w");
    if (!f) return;
    fprintf(f, "ObjectType = Image\nNDims = 3\nDimSize = %d %d %d\nElementSpacing = %.9g %.9g %.9g\n", g->nx, g->ny,
            g->nz, g->spacing[0], g->spacing[1], g->spacing[2]);
    fprintf(f, "Offset = %.9g %.9g %.9g\nTransformMatrix =", g->origin[0], g->origin[1], g->origin[2]);
    for (int c = 0; c < 3; c++)
        for (int r = 0; r < 3; r++) fprintf(f, " %.9g", g->direction[r * 3 + c]);
    fprintf(f, "\nElementType = %s\nElementDataFile = %s.raw\n", u8 ? "MET_UCHAR" : "MET_FLOAT", name);
    fclose(f);
    snprintf(path, sizeof path, "%s/%s.raw", dir, name);
    f = fopen(path, "wb");
    if (!f) return;
    fwrite(data, u8 ? 1 : 4, atlas_grid_voxels(g), f);
    fclose(f);
}

/* Dice of label l between seg and gt (n voxels). */
static double dice_of(const uint8_t *seg, const uint8_t *gt, size_t n, int l)
{
    size_t ia = 0, ib = 0, iab = 0;
    for (size_t i = 0; i < n; i++) ia += seg[i] == l, ib += gt[i] == l, iab += seg[i] == l && gt[i] == l;
    return ia + ib ? 2.0 * iab / (double)(ia + ib) : 1.0;
}

typedef struct check {
    int label;
    char mod[16], method[16];
    double min;
} check;

int main(int argc, char **argv)
{
    const char *export_dir = NULL;
    const char *mods = "ct,cbct,mr-t1,mr-t2,pet", *table_path = NULL, *labels_show = "8,9,10,11,14";
    double work_mm = 0, lambda = -1, lambda_fine = -1, lr = -1;
    int fast = 0, affine_only = 0, identity = 0, distinct = 0, iters = -1, radius = -1, fine = -1, nchk = 0, verbose = 0, fails = 0;
    int per_atlas = 0, roi = 0, roi_radius = -1, roi_iters = -1, export_probs = 0, em_rows = 0, em_labvar = 0;
    atlas_em_opts emo;
    atlas_em_opts_default(&emo);
    /* --subset NAME=I,J,...: the atlases I, J, ... alone as a library, fused from the same
     * registrations (rows single-NAME, mv-NAME, local-NAME, jlf-NAME); --select-k K[,K...]:
     * what pipeline_atlas_opts.select_k = K fuses (rows mv-kK, ...: one phase per subject and
     * the K most similar, both on the MIND SSD after affine) and the registration time it takes
     * (every atlas affine, K deformable);
     * --no-all: no mv-all / local-all / jlf-all rows (each costs a fusion of every atlas) */
    enum { MAXSUB = 4 };
    char sub_name[MAXSUB][16];
    uint8_t sub_in[MAXSUB][16];
    enum { MAXK = 4 };
    int nsub = 0, ksel[MAXK], nks = 0, no_all = 0;
    double roi_lambda = -1, roi_margin = -1, roi_max_ml = -1, roi_interior = -1;
    check chk[32];
    int argi = 1;
    for (; argi < argc && argv[argi][0] == '-'; argi++) {
        const char *a = argv[argi];
        if (!strcmp(a, "--modalities") && argi + 1 < argc) mods = argv[++argi];
        else if (!strcmp(a, "--labels") && argi + 1 < argc) labels_show = argv[++argi];
        else if (!strcmp(a, "--label-table") && argi + 1 < argc) table_path = argv[++argi];
        else if (!strcmp(a, "--work-mm") && argi + 1 < argc) work_mm = atof(argv[++argi]);
        else if (!strcmp(a, "--fast")) fast = 1;
        else if (!strcmp(a, "--distinct")) distinct = 1;   /* one atlas per anatomy (atlas_distinct) */
        else if (!strcmp(a, "--export") && argi + 1 < argc) export_dir = argv[++argi];
        else if (!strcmp(a, "--export-probs")) export_probs = 1;   /* with --export: every label's fused vote */
        else if (!strcmp(a, "--em")) em_rows = 1;   /* also every locally weighted row refined (atlas_fuse_em) */
        else if (!strcmp(a, "--em-b") && argi + 1 < argc) emo.lik_weight = (float)atof(argv[++argi]);
        else if (!strcmp(a, "--em-iters") && argi + 1 < argc) emo.iters = atoi(argv[++argi]);
        else if (!strcmp(a, "--em-cell") && argi + 1 < argc) emo.cell_mm = atof(argv[++argi]);
        else if (!strcmp(a, "--em-global")) emo.local = 0;
        else if (!strcmp(a, "--em-label-var")) em_labvar = 1;   /* also rows -emv: a variance per label */
        else if (!strcmp(a, "--affine-only")) affine_only = 1;
        else if (!strcmp(a, "--per-atlas")) per_atlas = 1;   /* Dice of every atlas on its own */
        else if (!strcmp(a, "--identity")) identity = 1;   /* no registration: the label-resampling ceiling */
        else if (!strcmp(a, "--lambda") && argi + 1 < argc) lambda = atof(argv[++argi]);
        else if (!strcmp(a, "--lambda-fine") && argi + 1 < argc) lambda_fine = atof(argv[++argi]);
        else if (!strcmp(a, "--lr") && argi + 1 < argc) lr = atof(argv[++argi]);
        else if (!strcmp(a, "--iters") && argi + 1 < argc) iters = atoi(argv[++argi]);
        else if (!strcmp(a, "--radius") && argi + 1 < argc) radius = atoi(argv[++argi]);
        else if (!strcmp(a, "--fine") && argi + 1 < argc) fine = atoi(argv[++argi]);
        else if (!strcmp(a, "--roi")) roi = 1;   /* per-organ box refinement (atlas_reg_opts.roi) */
        else if (!strcmp(a, "--roi-radius") && argi + 1 < argc) roi_radius = atoi(argv[++argi]);
        else if (!strcmp(a, "--roi-iters") && argi + 1 < argc) roi_iters = atoi(argv[++argi]);
        else if (!strcmp(a, "--roi-lambda") && argi + 1 < argc) roi_lambda = atof(argv[++argi]);
        else if (!strcmp(a, "--roi-margin") && argi + 1 < argc) roi_margin = atof(argv[++argi]);
        else if (!strcmp(a, "--roi-max-ml") && argi + 1 < argc) roi_max_ml = atof(argv[++argi]);
        else if (!strcmp(a, "--roi-interior") && argi + 1 < argc) roi_interior = atof(argv[++argi]);
        else if (!strcmp(a, "-v")) verbose = 1;
        else if (!strcmp(a, "--select-k") && argi + 1 < argc) {
            for (const char *q = argv[++argi]; q && *q && nks < MAXK; q = strchr(q, ',') ? strchr(q, ',') + 1 : NULL)
                if ((ksel[nks++] = atoi(q)) < 1) {
                    fprintf(stderr, "bad --select-k (K[,K...], each >= 1)\n");
                    return 2;
                }
        }
        else if (!strcmp(a, "--no-all")) no_all = 1;
        else if (!strcmp(a, "--subset") && argi + 1 < argc && nsub < MAXSUB) {
            const char *v = argv[++argi], *eq = strchr(v, '=');
            if (!eq || eq == v || eq - v >= 16) {
                fprintf(stderr, "bad --subset (NAME=I,J,...)\n");
                return 2;
            }
            memcpy(sub_name[nsub], v, (size_t)(eq - v));
            sub_name[nsub][eq - v] = 0;
            memset(sub_in[nsub], 0, sizeof sub_in[nsub]);
            for (const char *q = eq + 1; *q;) {
                int i = atoi(q);
                if (i < 0 || i >= 16) {
                    fprintf(stderr, "bad --subset index %d (0..15)\n", i);
                    return 2;
                }
                sub_in[nsub][i] = 1;
                q = strchr(q, ',');
                if (!q) break;
                q++;
            }
            nsub++;
        }
        else if (!strcmp(a, "--check") && argi + 1 < argc && nchk < 32) {
            check *c = &chk[nchk++];
            if (sscanf(argv[++argi], "%d:%15[^:]:%15[^:]:%lf", &c->label, c->mod, c->method, &c->min) != 4) {
                fprintf(stderr, "bad --check\n");
                return 2;
            }
        } else {
            fprintf(stderr, "unknown option %s\n", a);
            return 2;
        }
    }
    if (argc - argi < 2 || !table_path) {
        fprintf(stderr, "usage: atlas_eval --label-table FILE [--modalities LIST] [--work-mm MM] [--fast] [--identity] [--distinct]\n"
                        "                  [--roi] [--roi-radius N] [--roi-iters N] [--roi-lambda L] [--roi-margin MM] [--roi-max-ml ML] [--roi-interior F]\n"
                        "                  [--per-atlas] [--subset NAME=I,J,...]... [--select-k K] [--no-all]\n"
                        "                  [--em] [--em-label-var] [--em-b B] [--em-iters N] [--em-cell MM] [--em-global]\n"
                        "                  [--export DIR [--export-probs]]\n"
                        "                  [--check LABEL:MOD:METHOD:MIN]... TARGET_SUBJECT ATLAS_SUBJECT... (at most 16)\n");
        return 2;
    }
    char err[1024], path[4096], segp[4096];
    pipeline_labels *table = NULL;
    if (pipeline_labels_load(table_path, &table, err, sizeof err)) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    nn_backend *b = NULL;
    if (nn_backend_cpu_new(2, &b, err, sizeof err)) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    const char *tdir = argv[argi];
    int na = argc - argi - 1;
    if (na > 16) {   /* atlas_fuse takes 1..16, as pipeline_atlas_segment */
        fprintf(stderr, "at most 16 atlases (got %d)\n", na);
        return 2;
    }
    atlas_prep **atl = calloc((size_t)na, sizeof *atl);
    double tprep = now_s();
    for (int a = 0; a < na; a++) {
        pipeline_volume *v = NULL;
        uint8_t *lab = NULL;
        snprintf(path, sizeof path, "%s/ct", argv[argi + 1 + a]);
        snprintf(segp, sizeof segp, "%s/seg/ct.dcm", argv[argi + 1 + a]);
        if (load(path, segp, table, &v, &lab)) return 1;
        atlas_grid g;
        vol_grid(v, &g);
        if (export_dir) {
            char nm[64];
            snprintf(nm, sizeof nm, "atlas%d_img", a);
            write_mhd(export_dir, nm, &g, v->data, 0);
            snprintf(nm, sizeof nm, "atlas%d_lab", a);
            write_mhd(export_dir, nm, &g, lab, 1);
        }
        if (atlas_prep_new(b, &g, v->data, lab, work_mm, &atl[a], err, sizeof err)) {
            fprintf(stderr, "%s\n", err);
            return 1;
        }
        pipeline_volume_free(v);
        free(lab);
    }
    printf("# %d atlases prepared in %.2f s (working grid %.2f mm)\n", na, now_s() - tprep, atl[0]->grid.spacing[0]);
    int show[64], nshow = 0;
    uint8_t shown[256] = {0};   /* the organs scored: those the refinement may pick */
    for (const char *p = labels_show; *p && nshow < 64;) {
        show[nshow++] = atoi(p);
        if (show[nshow - 1] > 0 && show[nshow - 1] < 256) shown[show[nshow - 1]] = 1;
        p = strchr(p, ',');
        if (!p) break;
        p++;
    }
    printf("%-6s %-9s %-14s %7s %8s\n", "mod", "method", "label", "dice", "hd95_mm");
    char modlist[256];
    snprintf(modlist, sizeof modlist, "%s", mods);
    for (char *mod = strtok(modlist, ","); mod; mod = strtok(NULL, ",")) {
        pipeline_volume *v = NULL;
        uint8_t *gt = NULL;
        snprintf(path, sizeof path, "%s/%s", tdir, mod);
        snprintf(segp, sizeof segp, "%s/seg/%s.dcm", tdir, mod);
        if (load(path, segp, table, &v, &gt)) return 1;
        atlas_grid tg;
        vol_grid(v, &tg);
        if (export_dir) {
            char nm[64];
            snprintf(nm, sizeof nm, "target_%s_img", mod);
            write_mhd(export_dir, nm, &tg, v->data, 0);
            snprintf(nm, sizeof nm, "target_%s_lab", mod);
            write_mhd(export_dir, nm, &tg, gt, 1);
        }
        atlas_prep *tp = NULL;
        double t0 = now_s();
        if (atlas_prep_new(b, &tg, v->data, NULL, work_mm, &tp, err, sizeof err)) {
            fprintf(stderr, "%s\n", err);
            return 1;
        }
        double tprep_t = now_s() - t0;
        atlas_reg *regs = calloc((size_t)na, sizeof *regs);
        atlas_reg_opts ro;
        atlas_reg_opts_default(&ro);
        ro.verbose = verbose;
        if (fast) ro.adam_iters = 40;
        if (affine_only) ro.deformable = 0;
        if (lambda >= 0) ro.lambda = ro.lambda_fine = (float)lambda;   /* both grids */
        if (lambda_fine >= 0) ro.lambda_fine = (float)lambda_fine;
        if (lr > 0) ro.adam_lr = (float)lr;
        if (iters >= 0) ro.adam_iters = iters;
        if (radius >= 0) ro.disp_radius = radius;
        if (fine >= 0) ro.fine_iters = fine;
        ro.roi = roi;
        ro.roi_labels = shown;
        if (roi_radius >= 0) ro.roi_radius = roi_radius;
        if (roi_iters >= 0) ro.roi_iters = roi_iters;
        if (roi_lambda >= 0) ro.roi_lambda = (float)roi_lambda;
        if (roi_margin >= 0) ro.roi_margin_mm = roi_margin;
        if (roi_max_ml >= 0) ro.roi_max_ml = roi_max_ml;
        if (roi_interior >= 0) ro.roi_min_interior = roi_interior;
        double treg = 0;
        for (int a = 0; a < na; a++) {
            if (identity) {   /* same subject, same patient space: target working voxel -> world */
                regs[a].grid = tp->grid;
                atlas_grid_to_world(&tp->grid, regs[a].A);
                continue;
            }
            if (atlas_register(b, tp, atl[a], &ro, &regs[a], err, sizeof err)) {
                fprintf(stderr, "register: %s\n", err);
                return 1;
            }
            treg += regs[a].seconds;
            if (regs[a].warning[0]) printf("# %s atlas %d: %s\n", mod, a, regs[a].warning);
            printf("# %s atlas %d: ssd %.4f -> %.4f -> %.4f, folding %.3f%%, |J| %.2f..%.2f, ice %.2f mm, %.2f s "
                   "(affine %.2f s)\n",
                   mod, a, regs[a].ssd_moments, regs[a].ssd_affine, regs[a].ssd_final, 100 * regs[a].fold_fraction,
                   regs[a].jac_min, regs[a].jac_max, regs[a].ice_mm, regs[a].seconds, regs[a].affine_seconds);
            if (roi)
                printf("# %s atlas %d: roi %d of %d organ boxes kept, %.2f s\n", mod, a, regs[a].roi_kept,
                       regs[a].roi_refined, regs[a].roi_seconds);
        }
        printf("# %s: target prep %.2f s, %.2f s per registration\n", mod, tprep_t, treg / na);
        size_t n = atlas_grid_voxels(&tg);
        uint8_t *seg = malloc(n);
        for (int a = 0; per_atlas && a < na; a++) {   /* each atlas alone, as "single" is scored */
            const atlas_prep *ap[1] = {atl[a]};
            if (atlas_fuse(b, tp, ap, &regs[a], 1, ATLAS_FUSE_MAJORITY, &tg, seg, err, sizeof err)) {
                fprintf(stderr, "fuse: %s\n", err);
                return 1;
            }
            uint8_t keep[256] = {0};
            keep[2] = keep[3] = keep[7] = 1;
            atlas_postprocess(seg, tg.nx, tg.ny, tg.nz, keep);
            printf("# %s atlas %d dice", mod, a);
            for (int s = 0; s < nshow; s++) printf(" %.3f", dice_of(seg, gt, n, show[s]));
            printf("\n");
        }
        int order[16], nk = na;
        atlas_select(regs, na, order);
        if (distinct) {   /* drop the worse-matching renderings of the same subject, keep the order */
            const atlas_prep *cap[16];
            uint8_t keep[16];
            for (int a = 0; a < na; a++) cap[a] = atl[a];
            atlas_distinct(cap, regs, na, keep);
            nk = 0;
            for (int a = 0; a < na; a++)
                if (keep[order[a]]) order[nk++] = order[a];
            printf("# %s: kept", mod);
            for (int a = 0; a < nk; a++) printf(" %d", order[a]);
            printf("\n");
        }
        /* methods: single (best atlas after affine, affine+deformable), affine-only majority, fusions */
        /* with --distinct, also every atlas fused ("-all": what the library gives without it) */
        /* rows: name, fusion, atlases (in affine-SSD order); then --select-k and --subset rows */
        enum { MAXROW = 3 * (7 + 3 * MAXK + 4 * MAXSUB) };
        char rname[MAXROW][32];
        atlas_fusion rfus[MAXROW];
        uint8_t rem[MAXROW] = {0};   /* 1: the row refined by atlas_fuse_em (--em), 2: with a variance per label */
        int ridx[MAXROW][16], rn[MAXROW], nrow = 0;
        int all[16];
        atlas_select(regs, na, all);
        static const char *const fname[] = {"mv", "local", "jlf"};
        static const atlas_fusion fkind[] = {ATLAS_FUSE_MAJORITY, ATLAS_FUSE_LOCAL, ATLAS_FUSE_JLF};
        snprintf(rname[nrow], sizeof rname[nrow], "single");
        rfus[nrow] = ATLAS_FUSE_MAJORITY, rn[nrow] = 1, ridx[nrow][0] = order[0], nrow++;
        for (int f = 0; f < 3; f++) {
            snprintf(rname[nrow], sizeof rname[nrow], "%s", fname[f]);
            rfus[nrow] = fkind[f], rn[nrow] = nk;
            memcpy(ridx[nrow], order, sizeof(int) * (size_t)nk);
            nrow++;
        }
        for (int f = 0; distinct && nk < na && !no_all && f < 3; f++) {
            snprintf(rname[nrow], sizeof rname[nrow], "%s-all", fname[f]);
            rfus[nrow] = fkind[f], rn[nrow] = na;
            memcpy(ridx[nrow], all, sizeof(int) * (size_t)na);
            nrow++;
        }
        for (int q = 0; q < nks; q++) {
            const int kk = ksel[q];
            if (kk >= na) continue;   /* the node registers every atlas in full: the rows above */
            /* as pipeline_atlas_segment: the phase chosen on the affine SSD, then the top K */
            const atlas_prep *cap[16];
            atlas_reg ar[16];
            uint8_t keep[16];
            int ord[16], nka = 0;
            for (int a = 0; a < na; a++) cap[a] = atl[a], ar[a] = regs[a], ar[a].ssd_final = regs[a].ssd_affine;
            atlas_distinct(cap, ar, na, keep);
            for (int a = 0; a < na; a++)
                if (keep[all[a]]) ord[nka++] = all[a];
            const int kq = kk < nka ? kk : nka;
            double tk = 0;
            for (int a = 0; a < na; a++) tk += regs[a].affine_seconds;
            for (int i = 0; i < kq; i++) tk += regs[ord[i]].seconds - regs[ord[i]].affine_seconds;
            printf("# %s: select_k %d kept", mod, kk);
            for (int i = 0; i < kq; i++) printf(" %d", ord[i]);
            printf(", registration %.1f s (every atlas affine, %d deformable) against %.1f s (all in full)\n", tk, kq,
                   treg);
            for (int f = 0; f < 3; f++) {
                snprintf(rname[nrow], sizeof rname[nrow], "%s-k%d", fname[f], kk);
                rfus[nrow] = fkind[f], rn[nrow] = kq;
                memcpy(ridx[nrow], ord, sizeof(int) * (size_t)kq);
                nrow++;
            }
        }
        for (int u = 0; u < nsub; u++) {
            /* the subset's atlases in affine-SSD order; with --distinct, one per anatomy among them */
            int sel[16], ns = 0, id[16], ni = 0;
            const atlas_prep *cap[16];
            uint8_t keep[16];
            for (int a = 0; a < na; a++)
                if (sub_in[u][a]) cap[ni] = atl[a], id[ni++] = a;
            atlas_reg sr[16];
            for (int a = 0; a < ni; a++) sr[a] = regs[id[a]];
            for (int a = 0; a < ni; a++) keep[a] = 1;
            if (distinct && ni) atlas_distinct(cap, sr, ni, keep);
            for (int a = 0; a < na; a++)
                for (int j = 0; j < ni; j++)
                    if (id[j] == all[a] && keep[j]) sel[ns++] = all[a];
            if (!ns) continue;
            printf("# %s: subset %s kept", mod, sub_name[u]);
            for (int a = 0; a < ns; a++) printf(" %d", sel[a]);
            printf("\n");
            for (int f = -1; f < 3; f++) {
                snprintf(rname[nrow], sizeof rname[nrow], "%s-%s", f < 0 ? "single" : fname[f], sub_name[u]);
                rfus[nrow] = f < 0 ? ATLAS_FUSE_MAJORITY : fkind[f], rn[nrow] = f < 0 ? 1 : ns;
                memcpy(ridx[nrow], sel, sizeof(int) * (size_t)ns);
                nrow++;
            }
        }
        for (int v2 = 1; v2 <= 2; v2++)
            for (int m = 0, nr0 = nrow; (v2 == 1 ? em_rows : em_labvar) && m < nr0 && nrow < MAXROW; m++)
                if (rfus[m] == ATLAS_FUSE_LOCAL && !rem[m]) {
                    snprintf(rname[nrow], sizeof rname[nrow], "%.27s-em%s", rname[m], v2 == 2 ? "v" : "");
                    rfus[nrow] = rfus[m], rn[nrow] = rn[m], rem[nrow] = (uint8_t)v2;
                    memcpy(ridx[nrow], ridx[m], sizeof ridx[m]);
                    nrow++;
                }
        for (int m = 0; m < nrow; m++) {
            const atlas_prep *ap[16];
            atlas_reg rr[16];
            int k = rn[m];
            for (int a = 0; a < k; a++) {
                int i = ridx[m][a];
                ap[a] = atl[i], rr[a] = regs[i];
            }
            atlas_fusion f = rfus[m];
            double tf = now_s();
            size_t changed = 0;
            uint8_t id[256];
            for (int l = 0; l < 256; l++) id[l] = (uint8_t)l;
            atlas_em_opts emr = emo;
            if (rem[m] == 2) emr.pooled = 0;
            if (atlas_fuse_em(b, tp, ap, rr, k, f, &tg, v->data, rem[m] ? &emr : NULL, seg, NULL, id, 1, &changed, err,
                              sizeof err)) {
                fprintf(stderr, "fuse: %s\n", err);
                return 1;
            }
            if (rem[m]) printf("# %s %s: %zu voxels relabelled\n", mod, rname[m], changed);
            uint8_t keep[256] = {0};
            keep[2] = keep[3] = keep[7] = 1;   /* fat, muscle, ribs: many components */
            atlas_postprocess(seg, tg.nx, tg.ny, tg.nz, keep);
            double tfuse = now_s() - tf;
            if (export_dir) {   /* the fused labels, to look at where an organ goes wrong */
                char nm[64];
                snprintf(nm, sizeof nm, "seg_%.20s_%.31s", mod, rname[m]);
                write_mhd(export_dir, nm, &tg, seg, 1);
            }
            if (export_dir && export_probs && f == ATLAS_FUSE_LOCAL && k > 1) {
                /* every atlas label's fused vote fraction, labels 0..max as classes, [class][voxel]
                 * float32: the input of an intensity-model refinement (probs_MOD_ROW.raw/.txt) */
                int maxl = 0;
                for (int a = 0; a < k; a++)
                    for (size_t i = 0, nl = atlas_grid_voxels(&ap[a]->lgrid); i < nl; i++)
                        if (ap[a]->labels[i] > maxl) maxl = ap[a]->labels[i];
                uint8_t id[256];
                for (int l = 0; l < 256; l++) id[l] = (uint8_t)(l <= maxl ? l : 0);
                float *pr = malloc(sizeof(float) * n * (size_t)(maxl + 1));
                uint8_t *tmp = malloc(n);
                if (!pr || !tmp ||
                    atlas_fuse_probs(b, tp, ap, rr, k, f, &tg, tmp, pr, id, maxl + 1, err, sizeof err)) {
                    fprintf(stderr, "fuse probs: %s\n", pr && tmp ? err : "out of memory");
                    return 1;
                }
                snprintf(path, sizeof path, "%s/probs_%s_%s.raw", export_dir, mod, rname[m]);
                FILE *fp = fopen(path, "wb");
                if (fp) {
                    fwrite(pr, sizeof(float), n * (size_t)(maxl + 1), fp);
                    fclose(fp);
                }
                snprintf(path, sizeof path, "%s/probs_%s_%s.txt", export_dir, mod, rname[m]);
                if ((fp = fopen(path, "w"))) {
                    fprintf(fp, "classes %d\ndims %d %d %d\n", maxl + 1, tg.nx, tg.ny, tg.nz);
                    fclose(fp);
                }
                free(pr);
                free(tmp);
            }
            double dsum = 0;
            for (int s = 0; s < nshow; s++) {
                int l = show[s];
                size_t ia = 0, ib = 0, iab = 0;
                for (size_t i = 0; i < n; i++) {
                    ia += seg[i] == l, ib += gt[i] == l, iab += seg[i] == l && gt[i] == l;
                }
                double dice = ia + ib ? 2.0 * iab / (double)(ia + ib) : 1.0;
                double h = hd95(seg, gt, &tg, l);
                const pipeline_label *pl = pipeline_labels_by_number(table, l);
                const char *name = pl ? pl->name : NULL;
                printf("%-6s %-9s %-14s %7.3f %8.2f%s\n", mod, rname[m], name ? name : "?", dice, h,
                       ib == 0 ? "  (not in GT)" : ia == 0 ? "  (empty)" : "");
                dsum += dice;
                for (int c = 0; c < nchk; c++)
                    if (chk[c].label == l && !strcmp(chk[c].mod, mod) && !strcmp(chk[c].method, rname[m]) &&
                        !(dice >= chk[c].min)) {
                        printf("FAIL: %s %s %s dice %.3f < %.3f\n", mod, rname[m], name ? name : "?", dice, chk[c].min);
                        fails++;
                    }
            }
            printf("%-6s %-9s %-14s %7.3f %8s  fusion %.2f s\n", mod, rname[m], "mean", dsum / nshow, "", tfuse);
        }
        free(seg);
        for (int a = 0; a < na; a++) atlas_reg_clear(&regs[a]);
        free(regs);
        atlas_prep_free(tp);
        pipeline_volume_free(v);
        free(gt);
        fflush(stdout);
    }
    for (int a = 0; a < na; a++) atlas_prep_free(atl[a]);
    free(atl);
    nn_backend_free(b);
    pipeline_labels_free(table);
    return fails ? 1 : 0;
}
