/* tests/atlas/test_atlas_roi.c — the per-organ region-of-interest refinement (atlas_reg_opts.roi)
 * on a synthetic pair (no DCMTK: also in the NN_ONLY build). The atlas's small organ is 1.35x the
 * target's in every direction (2.5x its volume, the atlases' spleens are 1.0-1.9x the target's),
 * the rest of the anatomy equal; the global registration is made stiff so that it leaves the
 * organ too large, as it does with the phantoms' spleens. Checks: the refinement picks the small
 * organs and not the body (volume and extent rule) nor a thin shell (interior rule), keeps its box, lifts the organ's Dice by a
 * clear margin without folding; the field it adds is zero outside the box and has no jump at the
 * box's faces; the fade is 0 at an open face, 1 past the ramp, monotone and 1 along closed axes;
 * with roi_labels excluding the organ nothing is refined and the field is bit-identical to the
 * one without refinement. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/status.h"
#include "pipeline/atlas/atlasInt.h"
#include "tests/atlas/atlas_test.h"


/* Body ellipsoid (label 1), a sphere of radius `r2` (label 2), a fixed small ellipsoid (label 3)
 * and a thin spherical shell (label 4); intensities per label from val[] plus a fixed texture. */
static void make(const atlas_grid *g, double r2, const float val[5], float *img, uint8_t *lab)
{
    double w[12];
    atlas_grid_to_world(g, w);
    for (int k = 0; k < g->nz; k++)
        for (int j = 0; j < g->ny; j++)
            for (int i = 0; i < g->nx; i++) {
                double p[3];
                test_world(w, i, j, k, p);
                int l = 0;
                if (p[0] * p[0] / 4900 + p[1] * p[1] / 3600 + p[2] * p[2] / 4900 < 1) l = 1;
                if ((p[0] - 22) * (p[0] - 22) + p[1] * p[1] + (p[2] - 8) * (p[2] - 8) < r2 * r2) l = 2;
                if ((p[0] + 30) * (p[0] + 30) / 100 + (p[1] - 10) * (p[1] - 10) / 225 + p[2] * p[2] / 225 < 1) l = 3;
                double s2 = (p[0] + 5) * (p[0] + 5) + (p[1] - 30) * (p[1] - 30) + (p[2] + 30) * (p[2] + 30);
                if (s2 >= 12.0 * 12.0 && s2 < 15.5 * 15.5) l = 4;   /* a shell, as the myocardium */
                size_t q = i + (size_t)g->nx * (j + (size_t)g->ny * k);
                img[q] = val[l] + 0.02f * (float)((i * 7 + j * 13 + k * 5) % 11);
                lab[q] = (uint8_t)l;
            }
}

int main(void)
{
    char err[512];
    nn_backend *b;
    if (nn_backend_cpu_new(2, &b, err, sizeof err)) return 1;

    /* the fade */
    for (int ramp = 3; ramp <= 7; ramp += 4) {
        const int nb = 30;
        CHECK(atlas__roi_ramp(0, nb, ramp, 1, 1) == 0.0f && atlas__roi_ramp(nb - 1, nb, ramp, 1, 1) == 0.0f,
              "fade is not 0 at open faces");
        CHECK(atlas__roi_ramp(0, nb, ramp, 0, 0) == 1.0f && atlas__roi_ramp(nb - 1, nb, ramp, 1, 0) == 1.0f &&
              atlas__roi_ramp(0, nb, ramp, 0, 1) == 1.0f,
              "fade is not 1 at a closed face");
        float prev = 0, maxstep = 0;
        for (int q = 0; q < nb / 2; q++) {
            float w = atlas__roi_ramp(q, nb, ramp, 1, 1);
            CHECK(w >= prev && w >= 0 && w <= 1, "fade not monotone at %d (ramp %d)", q, ramp);
            CHECK(q < ramp || w == 1.0f, "fade %g past the ramp at %d", w, q);
            if (q) maxstep = fmaxf(maxstep, w - prev);
            prev = w;
        }
        /* a half cosine over `ramp` voxels rises by at most pi / (2 ramp) per voxel */
        CHECK(maxstep <= 3.14159f / (2 * ramp) + 1e-4f, "fade jumps %g per voxel (ramp %d)", maxstep, ramp);
    }

    atlas_grid g = {72, 64, 64, {2.5, 2.5, 2.5}, {-90, -80, -80}, {1, 0, 0, 0, 1, 0, 0, 0, 1}};
    const size_t n = atlas_grid_voxels(&g);
    float *ai = malloc(n * 4), *ti = malloc(n * 4);
    uint8_t *al = malloc(n), *tl = malloc(n), *out = malloc(n);
    const float ct[5] = {0, 1, 2.5f, 1.8f, 1.5f}, mr[5] = {0, 2, 0.6f, 1.2f, 2.8f};   /* another contrast */
    make(&g, 24.3, ct, ai, al);   /* 1.35 x the target's 18 mm */
    make(&g, 18.0, mr, ti, tl);
    atlas_prep *ap = NULL, *tp = NULL;
    CHECK(!atlas_prep_new(b, &g, ai, al, 3.0, &ap, err, sizeof err), "atlas prep: %s", err);
    CHECK(!atlas_prep_new(b, &g, ti, NULL, 3.0, &tp, err, sizeof err), "target prep: %s", err);
    if (fails) return 1;

    atlas_reg_opts o;
    atlas_reg_opts_default(&o);
    o.lambda = o.lambda_fine = 2.0f;   /* a stiff global field: the organ stays too large */
    o.adam_iters = 30;
    o.fine_iters = 10;
    atlas_reg r0, r1, r2, r3;
    CHECK(!atlas_register(b, tp, ap, &o, &r0, err, sizeof err), "global: %s", err);
    o.roi = 1;
    CHECK(!atlas_register(b, tp, ap, &o, &r1, err, sizeof err), "roi: %s", err);
    o.roi_min_interior = 0;   /* the shell too */
    CHECK(!atlas_register(b, tp, ap, &o, &r3, err, sizeof err), "roi with the shell: %s", err);
    o.roi_min_interior = 0.5;
    uint8_t only3[256] = {0};
    only3[3] = 1;
    o.roi_labels = only3;
    o.roi_max_ml = 1;   /* label 3 is 7 mL: now too large, nothing is picked */
    CHECK(!atlas_register(b, tp, ap, &o, &r2, err, sizeof err), "roi none: %s", err);
    if (fails) return 1;
    CHECK(r0.u && r1.u && r2.u, "a registration fell back to affine: %s %s", r0.warning, r1.warning);
    if (fails) return 1;

    /* organs 2 (25-60 mL) and 3 picked; the body (about 1400 mL, 140 mm wide) is not, nor the
     * shell (label 4, 9 mL, hardly any interior voxel) unless roi_min_interior is 0 */
    CHECK(r1.roi_refined == 2, "%d organ boxes refined, want 2", r1.roi_refined);
    CHECK(r3.roi_refined == 3, "%d organ boxes refined with the shell, want 3", r3.roi_refined);
    CHECK(r1.roi_kept >= 1, "no organ box kept");
    CHECK(r2.roi_refined == 0 && !memcmp(r2.u, r0.u, sizeof(float) * 3 * atlas_grid_voxels(&r0.grid)),
          "with no organ picked the field differs from the global one");
    CHECK(r1.fold_fraction == 0, "refined field folds %.4f%%", 100 * r1.fold_fraction);
    CHECK(r1.ssd_final < r0.ssd_final, "MIND SSD %.5f not below the global %.5f", r1.ssd_final, r0.ssd_final);

    const atlas_prep *aps[1] = {ap};
    CHECK(!atlas_fuse(b, tp, aps, &r0, 1, ATLAS_FUSE_MAJORITY, &g, out, err, sizeof err), "fuse: %s", err);
    double d0 = test_dice(out, tl, n, 2), d30 = test_dice(out, tl, n, 3);
    CHECK(!atlas_fuse(b, tp, aps, &r1, 1, ATLAS_FUSE_MAJORITY, &g, out, err, sizeof err), "fuse: %s", err);
    double d1 = test_dice(out, tl, n, 2), d31 = test_dice(out, tl, n, 3);
    printf("organ Dice global %.3f -> refined %.3f (small organ %.3f -> %.3f), MIND SSD %.5f -> %.5f, "
           "%d of %d boxes kept, %.2f of %.2f s\n", d0, d1, d30, d31, r0.ssd_final, r1.ssd_final, r1.roi_kept,
           r1.roi_refined, r1.roi_seconds, r1.seconds);
    CHECK(d0 < 0.85, "the stiff global registration already fits the organ (%.3f): the test tests nothing", d0);
    CHECK(d1 >= d0 + 0.05, "organ Dice %.3f refined, %.3f global: want +0.05", d1, d0);
    CHECK(d31 >= d30 - 0.05, "small organ Dice %.3f refined, %.3f global", d31, d30);

    /* the residual (refined - global) is 0 far from the organs and has no jump where it starts:
     * next to a voxel it leaves unchanged (outside the boxes) it is small, the fade's first step
     * (the organ's own edge, inside the box, may compress sharply: the Jacobian check covers it) */
    const atlas_grid *wg = &r0.grid;
    const int nx = wg->nx, ny = wg->ny, nz = wg->nz;
    const size_t S = atlas_grid_voxels(wg);
    uint8_t *zero = malloc(S);
    double edge = 0, far = 0, peak = 0;
    size_t nzero = 0;
    for (size_t p = 0; p < S; p++) {
        zero[p] = r1.u[p] == r0.u[p] && r1.u[S + p] == r0.u[S + p] && r1.u[2 * S + p] == r0.u[2 * S + p];
        nzero += zero[p];
    }
    for (int k = 0; k < nz; k++)
        for (int j = 0; j < ny; j++)
            for (int i = 0; i < nx; i++) {
                size_t p = i + (size_t)nx * (j + (size_t)ny * k);
                double d = 0;
                for (int c = 0; c < 3; c++) d = fmax(d, fabs(r1.u[c * S + p] - r0.u[c * S + p]));
                peak = fmax(peak, d);
                if (i < 3 || j < 3 || k < 3 || i >= nx - 3 || j >= ny - 3 || k >= nz - 3) far = fmax(far, d);
                int by = (i > 0 && zero[p - 1]) || (i + 1 < nx && zero[p + 1]) || (j > 0 && zero[p - nx]) ||
                         (j + 1 < ny && zero[p + nx]) || (k > 0 && zero[p - (size_t)nx * ny]) ||
                         (k + 1 < nz && zero[p + (size_t)nx * ny]);
                if (!zero[p] && by) edge = fmax(edge, d);
            }
    printf("residual: peak %.3f voxels, %.3f beside the unchanged voxels (%.0f%% of them), %.3g at the image border\n",
           peak, edge, 100.0 * (double)nzero / (double)S, far);
    CHECK(peak > 0.5, "the refinement moved nothing (peak %.3f voxels)", peak);
    CHECK(nzero > S / 4, "the boxes cover %.0f%% of the image", 100.0 - 100.0 * (double)nzero / (double)S);
    CHECK(far == 0, "the refinement changed the field far from the organs (%.3g)", far);
    CHECK(edge < 0.15 * peak, "the refined field jumps %.3f voxels at a box face (peak %.3f)", edge, peak);
    free(zero);

    atlas_reg_clear(&r0), atlas_reg_clear(&r1), atlas_reg_clear(&r2), atlas_reg_clear(&r3);
    atlas_prep_free(ap), atlas_prep_free(tp);
    free(ai), free(ti), free(al), free(tl), free(out);
    nn_backend_free(b);
    if (fails) {
        printf("%d failure(s)\n", fails);
        return 1;
    }
    printf("ok\n");
    return 0;
}
