/* tests/atlas/test_atlas_segment.c — pipeline_atlas_segment's class probabilities (opts.probs)
 * on a synthetic pair: an atlas library of one prepared ellipsoid phantom, a shifted, scaled,
 * inverted-contrast target. With a label list the probabilities come in the order [background,
 * labels[0], labels[1]], sum to 1 per voxel, and their argmax is the label map before
 * post-processing (so it differs from the post-processed output only where post-processing
 * acted); asking for them does not change the labels; without a label list the classes are the
 * label numbers 0..n_labels; one anatomy saved under two names is fused once, with a note, its
 * copy chosen after affine by default (select_k auto) with the labels of choosing after the
 * deformable stage (select_k all); with select_k 1 only the atlas that matches best after affine is registered in full and fused; on
 * CUDA device 0 it fails with SN_EDEVICE where there is no device (the worker then runs the job
 * on the CPU) and agrees with the CPU where there is one.
 * Needs pipeline_volume, so not in the NN_ONLY build. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/status.h"
#include "pipeline/atlas/method_atlas.h"
#include "tests/atlas/atlas_test.h"



/* Voxels where two label maps of n voxels differ. */
static size_t differ_at(const uint16_t *a, const uint16_t *b, size_t n)
{
    size_t d = 0;
    for (size_t i = 0; i < n; i++) d += a[i] != b[i];
    return d;
}

int main(void)
{
    char err[512], note[512];
    nn_backend *b;
    if (nn_backend_cpu_new(2, &b, err, sizeof err)) return 1;
    atlas_grid g = {64, 64, 48, {2.5, 2.5, 3}, {-80, -80, -72}, {1, 0, 0, 0, 1, 0, 0, 0, 1}};
    const size_t n = atlas_grid_voxels(&g);
    float *ai = malloc(n * 4), *ti = malloc(n * 4), *pr = malloc(n * 4 * sizeof(float));
    uint8_t *al = malloc(n), *tl = malloc(n);
    uint16_t *out = malloc(n * 2), *out0 = malloc(n * 2);
    const float ct[4] = {0, 1, 2, 3}, mr[4] = {0, 3, 1, 2};
    const double z[3] = {0, 0, 0}, sh[3] = {6, -5, 4};
    test_make(&g, z, 1.0, ct, ai, al);
    test_make(&g, sh, 1.08, mr, ti, tl);

    char lib[] = "/tmp/segnode-atlas-seg-XXXXXX", dir[128];
    CHECK(mkdtemp(lib) != NULL, "mkdtemp");
    snprintf(dir, sizeof dir, "%s/a1", lib);
    CHECK(mkdir(dir, 0700) == 0, "mkdir %s", dir);
    atlas_prep *ap = NULL;
    CHECK(!atlas_prep_new(b, &g, ai, al, 3.0, &ap, err, sizeof err), "atlas prep: %s", err);
    CHECK(ap && !atlas_prep_save(ap, dir, err, sizeof err), "save: %s", err);
    /* the same anatomy again under another name (as a second phase of one subject would be) */
    snprintf(dir, sizeof dir, "%s/a2", lib);
    CHECK(mkdir(dir, 0700) == 0, "mkdir %s", dir);
    CHECK(ap && !atlas_prep_save(ap, dir, err, sizeof err), "save: %s", err);
    atlas_prep_free(ap);
    ap = NULL;
    /* another anatomy (one label voxel differs) whose organs have no edge to the body: it
     * matches the target worse after affine */
    {
        const float flat[4] = {0, 1, 1, 1};
        float *fi = malloc(n * 4);
        uint8_t *fl = malloc(n);
        test_make(&g, z, 1.0, flat, fi, fl);
        fl[0] = 1;
        snprintf(dir, sizeof dir, "%s/a3", lib);
        CHECK(mkdir(dir, 0700) == 0, "mkdir %s", dir);
        CHECK(!atlas_prep_new(b, &g, fi, fl, 3.0, &ap, err, sizeof err), "atlas prep: %s", err);
        CHECK(ap && !atlas_prep_save(ap, dir, err, sizeof err), "save: %s", err);
        atlas_prep_free(ap);
        free(fi), free(fl);
    }
    if (fails) return 1;

    pipeline_volume v;
    memset(&v, 0, sizeof v);
    v.nx = g.nx, v.ny = g.ny, v.nz = g.nz;
    memcpy(v.spacing, g.spacing, sizeof v.spacing);
    memcpy(v.origin, g.origin, sizeof v.origin);
    memcpy(v.direction, g.direction, sizeof v.direction);
    v.data = ti;

    const char *names[1] = {"a1"};
    const int labels[2] = {3, 2};   /* not in label-number order: the class order follows the list */
    /* each call registers again (seconds on a busy machine): majority with and without
     * probabilities, JLF (clamped negative weights) with */
    for (int m = 0; m < 2; m++) {
        pipeline_atlas_opts o;
        pipeline_atlas_opts_default(&o);
        CHECK(o.probs == NULL, "default probs must be NULL");
        o.library = lib, o.atlases = names, o.n_atlases = 1;
        o.labels = labels, o.n_labels = 2;
        o.fusion = m ? ATLAS_FUSE_JLF : ATLAS_FUSE_MAJORITY;
        o.probs = pr;
        CHECK(!pipeline_atlas_segment(&o, &v, out, note, sizeof note, err, sizeof err), "segment probs: %s", err);
        if (!m) {
            o.probs = NULL;
            CHECK(!pipeline_atlas_segment(&o, &v, out0, note, sizeof note, err, sizeof err), "segment: %s", err);
            CHECK(!memcmp(out, out0, n * 2), "asking for probabilities changed the labels");
        }
        size_t bad_sum = 0, differ = 0, in3 = 0, in2 = 0;
        for (size_t i = 0; i < n; i++) {
            float s = 0, bv = -1;
            int best = 0;
            for (int c = 0; c < 3; c++) {
                s += pr[c * n + i];
                if (pr[c * n + i] > bv) bv = pr[c * n + i], best = c;
            }
            bad_sum += fabsf(s - 1) > 1e-5f;
            int lab = best ? labels[best - 1] : 0;
            differ += lab != out[i];
            in3 += tl[i] == 3 && pr[1 * n + i] > 0.5f;
            in2 += tl[i] == 2 && pr[2 * n + i] > 0.5f;
        }
        printf("%s: %zu voxels off sum 1, argmax differs from the post-processed labels at %zu voxels; "
               "p(label 3) > 0.5 in %zu of its voxels, p(label 2) in %zu\n",
               atlas_fusion_name(o.fusion), bad_sum, differ, in3, in2);
        CHECK(!bad_sum, "probabilities do not sum to 1");
        CHECK(differ < n / 200, "argmax far from the labels (%zu voxels)", differ);
        CHECK(in3 > 300 && in2 > 1500, "class order: labels[0] = 3 is class 1, labels[1] = 2 is class 2");
        CHECK(strstr(note, "intensity refinement relabelled"), "refine (the default): note '%s'", note);
    }
    /* refine 0: the votes fused as they are, and the note does not claim a refinement */
    {
        pipeline_atlas_opts o;
        pipeline_atlas_opts_default(&o);
        CHECK(o.refine == 1, "refine must default to 1");
        o.library = lib, o.atlases = names, o.n_atlases = 1;
        o.labels = labels, o.n_labels = 2;
        o.fusion = ATLAS_FUSE_MAJORITY;
        o.refine = 0;
        CHECK(!pipeline_atlas_segment(&o, &v, out, note, sizeof note, err, sizeof err), "segment, refine 0: %s", err);
        size_t differ = differ_at(out, out0, n);
        printf("refine 0: labels differ from the refined ones at %zu voxels; note: %s\n", differ, note);
        CHECK(!strstr(note, "intensity refinement"), "refine 0: note '%s'", note);
    }
    /* no label list: classes are label numbers 0..n_labels (here 0..3, every label); the two
     * atlases are one anatomy, so one is fused and the job note says why the other is not */
    {
        const char *both[2] = {"a1", "a2"};
        pipeline_atlas_opts o;
        pipeline_atlas_opts_default(&o);
        o.library = lib, o.atlases = both, o.n_atlases = 2;
        o.n_labels = 3, o.probs = pr;
        o.fusion = ATLAS_FUSE_MAJORITY;
        CHECK(!pipeline_atlas_segment(&o, &v, out, note, sizeof note, err, sizeof err), "segment all: %s", err);
        size_t bad_sum = 0, differ = 0, body = 0;
        for (size_t i = 0; i < n; i++) {
            float s = 0, bv = -1;
            int best = 0;
            for (int c = 0; c < 4; c++) {
                s += pr[c * n + i];
                if (pr[c * n + i] > bv) bv = pr[c * n + i], best = c;
            }
            bad_sum += fabsf(s - 1) > 1e-5f;
            differ += best != out[i];
            body += out[i] == 1;
        }
        printf("all labels: %zu voxels off sum 1, argmax differs at %zu voxels, body %zu voxels; note: %s\n", bad_sum,
               differ, body, note);
        CHECK(!bad_sum && differ < n / 200 && body > 10000, "label-number classes");
        CHECK(strstr(note, "1 of 2 atlases fused") && strstr(note, "1 left out as the same anatomy"),
              "same anatomy twice: note '%s'", note);
        /* select_k auto (the default) chose the phase after affine and registered one atlas in
         * full; all (0) registers both in full and chooses after: here the same atlas (a tie
         * keeps the first), so the same labels bit for bit (two-step registration = one step) */
        CHECK(o.select_k == PIPELINE_SELECT_K_AUTO && strstr(note, "one atlas per anatomy chosen after affine"),
              "select_k auto: note '%s'", note);
        uint16_t *all = malloc(n * sizeof *all);
        o.select_k = 0, o.probs = NULL;
        CHECK(all && !pipeline_atlas_segment(&o, &v, all, note, sizeof note, err, sizeof err), "select_k 0: %s", err);
        size_t d0 = all ? differ_at(all, out, n) : 0;
        printf("select_k all against auto: labels differ at %zu voxels; note: %s\n", d0, note);
        CHECK(all && !d0 && !strstr(note, "after affine") && strstr(note, "1 left out as the same anatomy"),
              "select_k all: %zu voxels differ, note '%s'", d0, note);
        free(all);
    }

    /* select_k 1 of the worse-matching a3 and a1: both registered affine only, a1 ranks first and
     * alone gets the deformable stage; the labels are those of a1 alone (out0) */
    {
        const char *two[2] = {"a3", "a1"};
        pipeline_atlas_opts o;
        pipeline_atlas_opts_default(&o);
        o.library = lib, o.atlases = two, o.n_atlases = 2;
        o.labels = labels, o.n_labels = 2;
        o.fusion = ATLAS_FUSE_MAJORITY;
        o.select_k = 1;
        CHECK(!pipeline_atlas_segment(&o, &v, out, note, sizeof note, err, sizeof err), "select_k 1: %s", err);
        size_t differ = differ_at(out, out0, n);
        printf("select_k 1 of 2: labels differ from a1 alone at %zu voxels; note: %s\n", differ, note);
        CHECK(!differ, "select_k 1: not the better atlas registered in full (%zu voxels differ)", differ);
        CHECK(strstr(note, "1 of 2 atlases fused") && strstr(note, "the 1 most similar after affine registered further"),
              "select_k note: '%s'", note);
    }

    /* on the GPU: the labels of the majority run above (out0), or SN_EDEVICE without a device */
    {
        pipeline_atlas_opts o;
        pipeline_atlas_opts_default(&o);
        CHECK(o.device_index == -1, "the default device must be the CPU");
        o.library = lib, o.atlases = names, o.n_atlases = 1;
        o.labels = labels, o.n_labels = 2;
        o.fusion = ATLAS_FUSE_MAJORITY;
        o.device_index = 0;
        char why[256];
        int rc = pipeline_atlas_segment(&o, &v, out, note, sizeof note, err, sizeof err);
        if (nn_cuda_devices(why, sizeof why) == 0) {
            printf("cuda:0 (%s): %s\n", why, err);
            CHECK(rc == SN_EDEVICE && strstr(err, "cuda:0"), "no device: SN_EDEVICE naming cuda:0 (got %d: %s)", rc, err);
        } else {
            CHECK(rc == SN_OK, "segment on cuda:0: %s", err);
            size_t differ = differ_at(out, out0, n);
            printf("cuda:0: labels differ from the CPU's at %zu of %zu voxels; note: %s\n", differ, n, note);
            CHECK(differ < n / 500 && strstr(note, "on cuda:0"), "GPU labels against the CPU's: %zu voxels", differ);
        }
    }

    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", lib);
    if (system(cmd)) {}
    free(ai), free(ti), free(pr), free(al), free(tl), free(out), free(out0);
    nn_backend_free(b);
    printf("%s: atlas segment\n", fails ? "FAIL" : "ok");
    return fails ? 1 : 0;
}
