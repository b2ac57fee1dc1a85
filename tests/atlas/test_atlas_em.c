/* tests/atlas/test_atlas_em.c — the intensity refinement of fused atlas votes (atlas_fuse_em) on a
 * synthetic target (no DCMTK: also in the NN_ONLY build). The target's organ is a sphere of 30 mm
 * in a body, under a multiplicative bias field and noise; two atlases, registered by identity,
 * give it as 24 and 36 mm. Majority vote splits the band between them evenly, and ties go to the
 * lower label (the body), so the plain fusion gives the small sphere. The refinement must find
 * the 30 mm sphere from the target's intensities, change no voxel where the atlases agree, keep
 * the class scores a distribution whose argmax is the label, do better with its spatially
 * varying mean than with one mean per label, equal atlas_fuse_probs bit for bit when off or
 * when the image holds a NaN, and refuse bad options. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/status.h"
#include "pipeline/atlas/atlas.h"
#include "tests/atlas/atlas_test.h"

/* Deterministic noise in [-1, 1] (sum of uniform hashes, roughly Gaussian, sd ~0.58). */
static float noise(size_t q)
{
    uint64_t h = q * 0x9E3779B97F4A7C15ull + 0x632BE59BD9B4E019ull;
    float s = 0;
    for (int r = 0; r < 3; r++) {
        h ^= h >> 31, h *= 0xBF58476D1CE4E5B9ull, h ^= h >> 29;
        s += (float)((h >> 11) * (1.0 / 9007199254740992.0)) * 2 - 1;
    }
    return s / 3;
}

/* Body ellipsoid (label 1) holding a sphere of radius r mm (label 2) at (10, 0, 0). */
static void make(const atlas_grid *g, double r, float *img, uint8_t *lab, int bias)
{
    double w[12];
    atlas_grid_to_world(g, w);
    for (int k = 0; k < g->nz; k++)
        for (int j = 0; j < g->ny; j++)
            for (int i = 0; i < g->nx; i++) {
                double p[3];
                test_world(w, i, j, k, p);
                int l = p[0] * p[0] / 3600 + p[1] * p[1] / 2500 + p[2] * p[2] / 2500 < 1;
                if (l && (p[0] - 10) * (p[0] - 10) + p[1] * p[1] + p[2] * p[2] < r * r) l = 2;
                size_t q = i + (size_t)g->nx * (j + (size_t)g->ny * k);
                if (lab) lab[q] = (uint8_t)l;
                if (img) {
                    float v = l == 0 ? 5.0f : l == 1 ? 100.0f : 150.0f;
                    /* an MR-like bias field: +-35% across the body, more than the organ's contrast
                     * to the body at its far edge */
                    if (bias) v *= (float)(1.0 + 0.35 * p[0] / 60.0);
                    img[q] = v + 12.0f * noise(q);
                }
            }
}

int main(void)
{
    char err[512];
    nn_backend *b;
    if (nn_backend_cpu_new(2, &b, err, sizeof err)) return 1;
    atlas_grid g = {56, 48, 48, {2.5, 2.5, 2.5}, {-70, -60, -60}, {1, 0, 0, 0, 1, 0, 0, 0, 1}};
    const size_t n = atlas_grid_voxels(&g);
    float *ti = malloc(n * 4), *ai = malloc(n * 4), *p0 = malloc(n * 4 * 3), *p1 = malloc(n * 4 * 3);
    uint8_t *tl = malloc(n), *al = malloc(n), *bl = malloc(n), *plain = malloc(n), *ref = malloc(n), *o2 = malloc(n);
    make(&g, 30, ti, tl, 1);
    make(&g, 24, ai, al, 0);
    make(&g, 36, NULL, bl, 0);
    atlas_prep *tp = NULL, *a1 = NULL, *a2 = NULL;
    CHECK(!atlas_prep_new(b, &g, ti, NULL, 3.0, &tp, err, sizeof err), "target prep: %s", err);
    CHECK(!atlas_prep_new(b, &g, ai, al, 3.0, &a1, err, sizeof err), "atlas prep: %s", err);
    CHECK(!atlas_prep_new(b, &g, ai, bl, 3.0, &a2, err, sizeof err), "atlas prep: %s", err);
    if (fails) return 1;
    /* identity registrations: target working voxel -> its world point */
    atlas_reg rr[2];
    memset(rr, 0, sizeof rr);
    for (int a = 0; a < 2; a++) {
        rr[a].grid = tp->grid;
        atlas_grid_to_world(&tp->grid, rr[a].A);
    }
    const atlas_prep *ap[2] = {a1, a2};
    uint8_t cls[256] = {0};
    cls[1] = 1, cls[2] = 2;

    CHECK(!atlas_fuse_probs(b, tp, ap, rr, 2, ATLAS_FUSE_MAJORITY, &g, plain, p0, cls, 3, err, sizeof err), "fuse: %s",
          err);
    atlas_em_opts em;
    atlas_em_opts_default(&em);
    size_t changed = 0;
    CHECK(!atlas_fuse_em(b, tp, ap, rr, 2, ATLAS_FUSE_MAJORITY, &g, ti, &em, ref, p1, cls, 3, &changed, err, sizeof err),
          "fuse em: %s", err);
    double d0 = test_dice(plain, tl, n, 2), d1 = test_dice(ref, tl, n, 2);
    size_t diff = 0, agreed_changed = 0, bad_prob = 0;
    for (size_t i = 0; i < n; i++) {
        diff += plain[i] != ref[i];
        if (al[i] == bl[i] && ref[i] != al[i]) agreed_changed++;
        float s = p1[i] + p1[n + i] + p1[2 * n + i];
        int am = p1[n + i] > p1[i] ? 1 : 0;
        if (p1[2 * n + i] > p1[am * n + i]) am = 2;
        if (fabsf(s - 1) > 1e-5f || am != cls[ref[i]]) bad_prob++;
    }
    printf("organ Dice: majority vote %.3f, refined %.3f; %zu voxels relabelled\n", d0, d1, changed);
    CHECK(d1 >= 0.95, "refined organ Dice %.3f < 0.95", d1);
    CHECK(d1 >= d0 + 0.1, "refinement gains only %.3f (%.3f -> %.3f)", d1 - d0, d0, d1);
    CHECK(changed == diff && changed > 0, "relabelled %zu, labels differ at %zu", changed, diff);
    CHECK(!agreed_changed, "%zu voxels where both atlases agree changed label", agreed_changed);
    CHECK(!bad_prob, "%zu voxels whose class scores do not sum to 1 or whose argmax is not the label", bad_prob);

    /* one mean per label: the bias field makes it worse than the spatially varying one */
    atlas_em_opts gl = em;
    gl.local = 0;
    CHECK(!atlas_fuse_em(b, tp, ap, rr, 2, ATLAS_FUSE_MAJORITY, &g, ti, &gl, o2, NULL, cls, 3, NULL, err, sizeof err),
          "fuse em global: %s", err);
    double dg = test_dice(o2, tl, n, 2);
    printf("organ Dice with one mean per label: %.3f\n", dg);
    CHECK(dg < d1, "a global mean (%.3f) does as well as the local one (%.3f) under a bias field", dg, d1);
    /* one variance for every label */
    atlas_em_opts po = em;
    po.pooled = !em.pooled;
    CHECK(!atlas_fuse_em(b, tp, ap, rr, 2, ATLAS_FUSE_MAJORITY, &g, ti, &po, o2, NULL, cls, 3, NULL, err, sizeof err),
          "fuse em pooled: %s", err);
    double dp = test_dice(o2, tl, n, 2);
    printf("organ Dice with %s variance: %.3f\n", po.pooled ? "one pooled" : "a per-label", dp);
    CHECK(dp >= 0.95, "%s variance: organ Dice %.3f < 0.95", po.pooled ? "pooled" : "per-label", dp);

    /* off: atlas_fuse_probs bit for bit */
    atlas_em_opts off = em;
    off.iters = 0;
    CHECK(!atlas_fuse_em(b, tp, ap, rr, 2, ATLAS_FUSE_MAJORITY, &g, ti, &off, o2, p1, cls, 3, &changed, err, sizeof err),
          "fuse em off: %s", err);
    CHECK(!memcmp(o2, plain, n) && !memcmp(p1, p0, n * 4 * 3) && changed == 0, "refinement off differs from atlas_fuse_probs");
    CHECK(!atlas_fuse_em(b, tp, ap, rr, 2, ATLAS_FUSE_MAJORITY, &g, NULL, NULL, o2, NULL, cls, 3, NULL, err, sizeof err) &&
              !memcmp(o2, plain, n), "em NULL differs from atlas_fuse_probs");

    /* a NaN in the image: the fusion stands as it is */
    float keep = ti[n / 2];
    ti[n / 2] = NAN;
    CHECK(!atlas_fuse_em(b, tp, ap, rr, 2, ATLAS_FUSE_MAJORITY, &g, ti, &em, o2, NULL, cls, 3, &changed, err, sizeof err) &&
              !memcmp(o2, plain, n) && changed == 0, "a NaN in the image: labels changed (%zu)", changed);
    ti[n / 2] = keep;

    /* bad options */
    CHECK(atlas_fuse_em(b, tp, ap, rr, 2, ATLAS_FUSE_MAJORITY, &g, NULL, &em, o2, NULL, cls, 3, NULL, err, sizeof err) ==
              SN_EINVAL, "no target image accepted");
    atlas_em_opts bad = em;
    bad.lik_weight = 0;
    CHECK(atlas_fuse_em(b, tp, ap, rr, 2, ATLAS_FUSE_MAJORITY, &g, ti, &bad, o2, NULL, cls, 3, NULL, err, sizeof err) ==
              SN_EINVAL, "likelihood weight 0 accepted");
    bad = em;
    bad.cell_mm = 0;
    CHECK(atlas_fuse_em(b, tp, ap, rr, 2, ATLAS_FUSE_MAJORITY, &g, ti, &bad, o2, NULL, cls, 3, NULL, err, sizeof err) ==
              SN_EINVAL, "cell 0 accepted");

    atlas_prep_free(tp);
    atlas_prep_free(a1);
    atlas_prep_free(a2);
    nn_backend_free(b);
    free(ti), free(ai), free(p0), free(p1), free(tl), free(al), free(bl), free(plain), free(ref), free(o2);
    printf("%s\n", fails ? "FAILED" : "ok");
    return fails ? 1 : 0;
}
