/* tests/atlas/test_atlas_unit.c — pipeline/atlas on synthetic volumes (no DCMTK: also in the
 * NN_ONLY build): a shifted, scaled and inverted-contrast copy of a labelled ellipsoid phantom is
 * registered back (affine, then deformable) and its labels fused; post-processing keeps the
 * largest component and fills holes; a field of view that misses an organ gives an empty label;
 * a folding limit of 0 makes the deformable result fall back to affine with a warning; the
 * prepared-image cache round-trips; of two renderings of one anatomy atlas_distinct keeps the
 * better-matching one; a target with twice the atlas's field of view registers as well; affine,
 * then the deformable stage on it, is the whole registration bit for bit. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/status.h"
#include "pipeline/atlas/atlas.h"
#include "tests/atlas/atlas_test.h"



int main(void)
{
    char err[512];
    nn_backend *b;
    if (nn_backend_cpu_new(2, &b, err, sizeof err)) return 1;
    atlas_grid g = {64, 64, 48, {2.5, 2.5, 3}, {-80, -80, -72}, {1, 0, 0, 0, 1, 0, 0, 0, 1}};
    const size_t n = atlas_grid_voxels(&g);
    float *ai = malloc(n * 4), *ti = malloc(n * 4);
    uint8_t *al = malloc(n), *tl = malloc(n), *out = malloc(n);
    const float ct[4] = {0, 1, 2, 3}, mr[4] = {0, 3, 1, 2};   /* another contrast ordering */
    const double z[3] = {0, 0, 0}, sh[3] = {6, -5, 4};
    test_make(&g, z, 1.0, ct, ai, al);
    test_make(&g, sh, 1.08, mr, ti, tl);

    atlas_prep *ap = NULL, *tp = NULL;
    CHECK(!atlas_prep_new(b, &g, ai, al, 3.0, &ap, err, sizeof err), "atlas prep: %s", err);
    CHECK(!atlas_prep_new(b, &g, ti, NULL, 3.0, &tp, err, sizeof err), "target prep: %s", err);
    if (fails) return 1;

    /* cache round trip */
    char dir[] = "/tmp/segnode-atlas-unit-XXXXXX";
    CHECK(mkdtemp(dir) != NULL, "mkdtemp");
    atlas_prep *ap2 = NULL;
    CHECK(!atlas_prep_save(ap, dir, err, sizeof err), "save: %s", err);
    CHECK(!atlas_prep_load(dir, &ap2, err, sizeof err), "load: %s", err);
    if (ap2) {
        size_t w = atlas_grid_voxels(&ap2->grid);
        CHECK(w == atlas_grid_voxels(&ap->grid) && !memcmp(ap2->mind, ap->mind, w * 48) &&
              !memcmp(ap2->labels, ap->labels, n), "cache differs");
    }

    atlas_reg_opts o;
    atlas_reg_opts_default(&o);
    atlas_reg aff, def;
    o.deformable = 0;
    CHECK(!atlas_register(b, tp, ap2 ? ap2 : ap, &o, &aff, err, sizeof err), "affine: %s", err);
    o.deformable = 1;
    CHECK(!atlas_register(b, tp, ap, &o, &def, err, sizeof err), "deformable: %s", err);
    printf("ssd moments %.4f affine %.4f deformable %.4f, folding %.3f%%, ice %.2f mm\n", aff.ssd_moments,
           aff.ssd_affine, def.ssd_final, 100 * def.fold_fraction, def.ice_mm);
    CHECK(aff.ssd_affine < aff.ssd_moments, "affine does not lower the MIND SSD");
    CHECK(def.ssd_final < aff.ssd_affine, "deformable does not lower the MIND SSD");
    CHECK(def.fold_fraction < 0.01 && !def.fell_back, "deformable folds");

    /* in two steps (affine only, then the deformable stage on it: how select_k ranks the
     * atlases before registering the kept ones further) it is the same registration, bit for bit */
    {
        atlas_reg st;
        o.deformable = 0;
        CHECK(!atlas_register(b, tp, ap, &o, &st, err, sizeof err), "affine: %s", err);
        o.deformable = 1;
        CHECK(!atlas_register_deformable(b, tp, ap, &o, &st, err, sizeof err), "deformable stage: %s", err);
        const size_t nwk = atlas_grid_voxels(&tp->grid);
        CHECK(st.u && def.u && !memcmp(st.u, def.u, sizeof(float) * 3 * nwk) && !memcmp(st.A, def.A, sizeof st.A) &&
                  st.ssd_final == def.ssd_final && st.ssd_affine == def.ssd_affine &&
                  st.fold_fraction == def.fold_fraction && st.ice_mm == def.ice_mm,
              "affine + deformable stage differs from the whole registration (ssd %.6f vs %.6f)", st.ssd_final,
              def.ssd_final);
        CHECK(st.affine_seconds > 0 && st.affine_seconds < st.seconds, "affine %.3f s of %.3f s", st.affine_seconds,
              st.seconds);
        /* the deformable stage twice: refused, the registration left as it is */
        CHECK(atlas_register_deformable(b, tp, ap, &o, &st, err, sizeof err) == SN_EINVAL && st.u,
              "a second deformable stage is not refused");
        printf("two steps: %s\n", err);
        atlas_reg_clear(&st);
    }

    const atlas_prep *aps[1] = {ap};
    for (int m = 0; m < 3; m++) {
        atlas_reg *r = m == 0 ? &aff : &def;
        CHECK(!atlas_fuse(b, tp, aps, r, 1, m == 2 ? ATLAS_FUSE_JLF : ATLAS_FUSE_MAJORITY, &g, out, err, sizeof err),
              "fuse: %s", err);
        atlas_postprocess(out, g.nx, g.ny, g.nz, NULL);
        double d2 = test_dice(out, tl, n, 2), d3 = test_dice(out, tl, n, 3);
        printf("%s: dice organ %.3f, small organ %.3f\n", m == 0 ? "affine" : m == 1 ? "deformable" : "deformable jlf", d2, d3);
        CHECK(d2 > (m ? 0.85 : 0.7) && d3 > (m ? 0.7 : 0.5), "dice too low");
    }

    /* a target whose field of view is twice the atlas's in-plane (as a 700 mm PET against
     * 432 mm CT atlases): outside the atlas's field of view its descriptors must not count as
     * structure (they were 0, and the registration zoomed the atlas until the whole target fell
     * inside it: organs 4-7 times their volume) */
    {
        atlas_grid gb = {128, 128, 48, {2.5, 2.5, 3}, {-160, -160, -72}, {1, 0, 0, 0, 1, 0, 0, 0, 1}};
        const size_t nb = atlas_grid_voxels(&gb);
        float *bi = malloc(nb * 4);
        uint8_t *bl = malloc(nb), *bo = malloc(nb);
        atlas_prep *bp = NULL;
        atlas_reg br;
        test_make(&gb, sh, 1.08, mr, bi, bl);
        CHECK(!atlas_prep_new(b, &gb, bi, NULL, 3.0, &bp, err, sizeof err), "wide target prep: %s", err);
        CHECK(bp && !atlas_register(b, bp, ap, &o, &br, err, sizeof err), "wide target: %s", err);
        if (!fails) {
            CHECK(!atlas_fuse(b, bp, aps, &br, 1, ATLAS_FUSE_MAJORITY, &gb, bo, err, sizeof err), "fuse: %s", err);
            atlas_postprocess(bo, gb.nx, gb.ny, gb.nz, NULL);
            double d1 = test_dice(bo, bl, nb, 1), d2 = test_dice(bo, bl, nb, 2);
            printf("wide field of view: dice body %.3f, organ %.3f\n", d1, d2);
            CHECK(d1 > 0.85 && d2 > 0.85, "a wide field of view spoils the registration");
            atlas_reg_clear(&br);
        }
        atlas_prep_free(bp);
        free(bi), free(bl), free(bo);
    }

    /* two atlases: fusion runs with every method */
    const atlas_prep *two[2] = {ap, ap};
    atlas_reg rr[2] = {def, aff};
    for (int m = 0; m < 3; m++)
        CHECK(!atlas_fuse(b, tp, two, rr, 2, (atlas_fusion)m, &g, out, err, sizeof err), "fuse %d: %s", m, err);

    /* one atlas per anatomy: the same labels rendered twice, once with organ 2 as bright as
     * the body (no edge, as the spleen in a non-contrast CT) and once in the target's contrast
     * (a second phase of the same subject); the second matches better after registration, so
     * atlas_distinct keeps it and drops the first; an atlas whose labels differ by one voxel is
     * another anatomy and stays */
    {
        const float flat[4] = {0, 1, 1, 3};
        float *fi = malloc(n * 4), *bi = malloc(n * 4);
        uint8_t *l2 = malloc(n);
        test_make(&g, z, 1.0, flat, fi, NULL);
        test_make(&g, z, 1.0, mr, bi, NULL);
        memcpy(l2, al, n);
        l2[n / 2] = l2[n / 2] == 2 ? 1 : 2;
        atlas_prep *fp = NULL, *bp = NULL, *op = NULL;
        atlas_reg rf, rb;
        memset(&rf, 0, sizeof rf), memset(&rb, 0, sizeof rb);
        CHECK(!atlas_prep_new(b, &g, fi, al, 3.0, &fp, err, sizeof err), "flat prep: %s", err);
        CHECK(!atlas_prep_new(b, &g, bi, al, 3.0, &bp, err, sizeof err), "phase prep: %s", err);
        CHECK(!atlas_prep_new(b, &g, ai, l2, 3.0, &op, err, sizeof err), "other prep: %s", err);
        CHECK(!atlas_register(b, tp, fp, &o, &rf, err, sizeof err), "flat register: %s", err);
        CHECK(!atlas_register(b, tp, bp, &o, &rb, err, sizeof err), "phase register: %s", err);
        if (fp && bp && op) {
            const atlas_prep *three[3] = {fp, bp, op};
            atlas_reg r3[3] = {rf, rb, def};
            uint8_t keep[3];
            int k = atlas_distinct(three, r3, 3, keep);
            printf("same anatomy: ssd %.4f (organ without edge) vs %.4f (target contrast), kept %d %d %d\n",
                   rf.ssd_final, rb.ssd_final, keep[0], keep[1], keep[2]);
            CHECK(k == 2 && !keep[0] && keep[1] && keep[2], "atlas_distinct kept %d %d %d", keep[0], keep[1], keep[2]);
        }
        atlas_reg_clear(&rf);
        atlas_reg_clear(&rb);
        atlas_prep_free(fp);
        atlas_prep_free(bp);
        atlas_prep_free(op);
        free(fi);
        free(bi);
        free(l2);
    }

    /* class probabilities: labels 3 and 2 as classes 1 and 2 (label 1, the body, pooled into
     * background with label 0); per voxel they sum to 1 and their argmax (lowest class on ties)
     * is the class of the fused label, for every fusion method (JLF weights can be negative:
     * clamped) */
    {
        uint8_t cls[256] = {0};
        cls[3] = 1, cls[2] = 2;
        float *pr = malloc(n * 3 * sizeof(float));
        for (int m = 0; m < 3; m++) {
            CHECK(!atlas_fuse_probs(b, tp, two, rr, 2, (atlas_fusion)m, &g, out, pr, cls, 3, err, sizeof err),
                  "fuse probs %d: %s", m, err);
            size_t bad_sum = 0, bad_arg = 0, bad_range = 0, organ = 0;
            for (size_t i = 0; i < n; i++) {
                float s = 0, bv = -1;
                int best = 0;
                for (int c = 0; c < 3; c++) {
                    float p = pr[c * n + i];
                    s += p;
                    bad_range += !(p >= 0 && p <= 1);
                    if (p > bv) bv = p, best = c;
                }
                bad_sum += fabsf(s - 1) > 1e-5f;
                bad_arg += best != cls[out[i]];
                organ += best == 1 && tl[i] == 3;
            }
            printf("%s probabilities: %zu voxels off sum 1, %zu argmax mismatches, %zu out of [0,1]\n",
                   atlas_fusion_name((atlas_fusion)m), bad_sum, bad_arg, bad_range);
            CHECK(!bad_sum && !bad_arg && !bad_range, "probabilities inconsistent (method %d)", m);
            CHECK(organ > 100, "class 1 should be label 3 (%zu voxels agree)", organ);
        }
        /* the labels themselves are atlas_fuse's */
        uint8_t *o2 = malloc(n);
        CHECK(!atlas_fuse(b, tp, two, rr, 2, ATLAS_FUSE_JLF, &g, o2, err, sizeof err), "fuse: %s", err);
        CHECK(!memcmp(o2, out, n), "atlas_fuse_probs labels differ from atlas_fuse");
        free(o2);
        CHECK(atlas_fuse_probs(b, tp, two, rr, 2, ATLAS_FUSE_MAJORITY, &g, out, pr, cls, 2, err, sizeof err) ==
                  SN_EINVAL, "a label mapped past the class count must be refused");
        free(pr);
    }

    /* a folding limit below any field: fall back to affine, with a warning */
    atlas_reg fb;
    o.fold_max = -1;
    CHECK(!atlas_register(b, tp, ap, &o, &fb, err, sizeof err), "fallback: %s", err);
    CHECK(fb.fell_back && !fb.u && strstr(fb.warning, "affine kept"), "no fallback: '%s'", fb.warning);
    atlas_reg_clear(&fb);

    /* a target whose field of view misses organ 3 (x < -10 mm cut away): label 3 stays empty */
    atlas_grid cut = g;
    cut.nx = 28;
    cut.origin[0] = -10 + 0.0;
    float *ci = malloc(atlas_grid_voxels(&cut) * 4);
    uint8_t *co = malloc(atlas_grid_voxels(&cut));
    test_make(&cut, sh, 1.08, mr, ci, NULL);
    atlas_prep *cp = NULL;
    atlas_reg cr;
    o.fold_max = 0.01;
    CHECK(!atlas_prep_new(b, &cut, ci, NULL, 3.0, &cp, err, sizeof err), "cut prep: %s", err);
    CHECK(!atlas_register(b, cp, ap, &o, &cr, err, sizeof err), "cut register: %s", err);
    CHECK(!atlas_fuse(b, cp, aps, &cr, 1, ATLAS_FUSE_MAJORITY, &cut, co, err, sizeof err), "cut fuse: %s", err);
    size_t c3 = 0, c2 = 0;
    for (size_t i = 0; i < atlas_grid_voxels(&cut); i++) c3 += co[i] == 3, c2 += co[i] == 2;
    printf("cut field of view: organ %zu voxels, missing organ %zu voxels\n", c2, c3);
    CHECK(c3 == 0 && c2 > 0, "field of view: organ 3 should be empty and organ 2 present");

    /* post-processing: a stray island goes, an enclosed hole is filled */
    memset(out, 0, n);
    for (int k = 10; k < 30; k++)
        for (int j = 10; j < 30; j++)
            for (int i = 10; i < 30; i++) out[i + (size_t)g.nx * (j + (size_t)g.ny * k)] = 5;
    out[20 + (size_t)g.nx * (20 + (size_t)g.ny * 20)] = 0;   /* hole */
    out[50 + (size_t)g.nx * (50 + (size_t)g.ny * 40)] = 5;   /* island */
    atlas_postprocess(out, g.nx, g.ny, g.nz, NULL);
    CHECK(out[20 + (size_t)g.nx * (20 + (size_t)g.ny * 20)] == 5, "hole not filled");
    CHECK(out[50 + (size_t)g.nx * (50 + (size_t)g.ny * 40)] == 0, "island kept");

    atlas_reg_clear(&aff);
    atlas_reg_clear(&def);
    atlas_reg_clear(&cr);
    atlas_prep_free(ap);
    atlas_prep_free(ap2);
    atlas_prep_free(tp);
    atlas_prep_free(cp);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd)) {}
    free(ai), free(ti), free(al), free(tl), free(out), free(ci), free(co);
    nn_backend_free(b);
    printf("%s: atlas unit\n", fails ? "FAIL" : "ok");
    return fails ? 1 : 0;
}
