/* pipeline/atlas/segment.c — multi-atlas segmentation of a pipeline_volume with atlases from the
 * library folder (method_atlas.h). The worker's plug-in is method_atlas.c. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/status.h"
#include "common/util.h"
#include "pipeline/atlas/method_atlas.h"

void pipeline_atlas_opts_default(pipeline_atlas_opts *o)
{
    memset(o, 0, sizeof *o);
    /* locally weighted voting: over five leave-one-out targets it beats joint label fusion on the
     * mean Dice of every modality (+0.002 to +0.014; tests/atlas/README.md) and is faster */
    o->fusion = ATLAS_FUSE_LOCAL;
    /* intensity refinement: on three fresh phantom targets it raised the five-organ mean in
     * every modality, by 0.008 (CBCT) to 0.090 (PET), no organ lower (tests/atlas/README.md
     * "Intensity refinement") */
    o->refine = 1;
    /* the phase of a two-phase subject chosen after affine: over five leave-one-out targets (ten
     * atlases, five subjects) the same Dice as choosing after the deformable stage in 0.61 of
     * the registration time (tests/atlas/README.md "Atlas selection after affine") */
    o->select_k = PIPELINE_SELECT_K_AUTO;
    o->work_mm = 0;
    o->device_index = -1;
}

static double now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e3 + (double)t.tv_nsec * 1e-6;
}

static void vol_grid(const pipeline_volume *v, atlas_grid *g)
{
    g->nx = v->nx, g->ny = v->ny, g->nz = v->nz;
    memcpy(g->spacing, v->spacing, sizeof g->spacing);
    memcpy(g->origin, v->origin, sizeof g->origin);
    memcpy(g->direction, v->direction, sizeof g->direction);
}

static void note_add(char *note, size_t n, const char *fmt, const char *s)
{
    if (!note || !n) return;
    size_t l = strlen(note);
    if (l + 1 < n) snprintf(note + l, n - l, fmt, s);
}

int pipeline_atlas_segment(const pipeline_atlas_opts *o, const pipeline_volume *v, uint16_t *out, char *note,
                           size_t notelen, char *err, size_t errlen)
{
    if (note && notelen) note[0] = 0;
    if (o->n_atlases < 1 || o->n_atlases > PIPELINE_ATLAS_MAX)
        return sn_errf(err, errlen, SN_EINVAL, "the atlas method needs 1 to %d atlases (got %d)", PIPELINE_ATLAS_MAX,
                       o->n_atlases);
    if (!v->data) return sn_errf(err, errlen, SN_EINVAL, "the atlas method needs a float volume");
    atlas_prep *atl[PIPELINE_ATLAS_MAX] = {0}, *tp = NULL;
    atlas_reg regs[PIPELINE_ATLAS_MAX];
    memset(regs, 0, sizeof regs);
    nn_backend *b = NULL;
    uint8_t *lab = NULL;
    int na = 0, rc = 0;
    uint8_t want[256] = {0}, have[256] = {0};
    const int restrict_labels = o->labels && o->n_labels > 0;
    if (o->n_labels < 0 || o->n_labels > 255)
        return sn_errf(err, errlen, SN_EINVAL, "the atlas method takes 0 to 255 labels (got %d)", o->n_labels);
    /* probability classes: with a label list, background + the requested labels in their order
     * (any other atlas label is pooled into background); without, the label numbers 0..n_labels */
    uint8_t prob_of[256] = {0};
    if (restrict_labels) {
        for (int i = 0; i < o->n_labels; i++) {
            int l = o->labels[i];
            if (l <= 0 || l > 255)
                return sn_errf(err, errlen, SN_EINVAL, "label %d is out of range 1..255", l);
            if (want[l]) return sn_errf(err, errlen, SN_EINVAL, "label %d is requested twice", l);
            want[l] = 1;
            prob_of[l] = (uint8_t)(i + 1);
        }
    } else {
        for (int l = 1; l <= o->n_labels; l++) prob_of[l] = (uint8_t)l;
    }
    int useful = 0;
    for (int a = 0; a < o->n_atlases; a++) {
        char dir[4096];
        snprintf(dir, sizeof dir, "%s/%s", o->library, o->atlases[a]);
        if ((rc = atlas_prep_load(dir, &atl[na], err, errlen))) {
            rc = sn_errf(err, errlen, SN_ENOENT, "atlas %s is not in the library %s", o->atlases[a], o->library);
            goto out;
        }
        uint8_t in[256] = {0};
        const size_t n = atlas_grid_voxels(&atl[na]->lgrid);
        for (size_t i = 0; i < n; i++) in[atl[na]->labels[i]] = 1;
        int u = 0;
        for (int l = 1; l < 256; l++) {
            have[l] |= in[l];
            u |= in[l] && (!restrict_labels || want[l]);
        }
        useful |= u;
        na++;
    }
    if (!useful) {
        rc = sn_errf(err, errlen, SN_EINVAL, "no atlas among the %d given holds any of the requested labels", na);
        goto out;
    }
    atlas_grid tg;
    vol_grid(v, &tg);
    double t0 = now_ms();
    if (o->device_index >= 0) {
        if ((rc = nn_backend_cuda_new(o->device_index, &b, err, errlen))) goto out;
    } else if ((rc = nn_backend_cpu_new(o->threads > 0 ? o->threads : 2, &b, err, errlen)))
        goto out;
    if ((rc = atlas_prep_new(b, &tg, v->data, NULL, o->work_mm, &tp, err, errlen))) goto out;
    atlas_reg_opts ro;
    atlas_reg_opts_default(&ro);
    ro.verbose = o->verbose;
    /* with select_k below the library size: every atlas affine only, ranked, and only the k kept
     * registered further (the deformable stage is most of the time: tests/atlas/README.md);
     * auto: k = the number of anatomies, when two atlases share one */
    const atlas_prep *cap[PIPELINE_ATLAS_MAX];
    for (int a = 0; a < na; a++) cap[a] = atl[a];
    const int is_auto = o->select_k == PIPELINE_SELECT_K_AUTO;
    /* (the label maps are compared only for auto; atlas_distinct compares them again below) */
    const int anatomies = is_auto ? atlas_anatomies(cap, na) : na;
    const int select_k = is_auto ? (anatomies < na ? anatomies : 0) : o->select_k;
    const int rank_first = select_k > 0 && select_k < na;
    ro.deformable = !rank_first;
    for (int a = 0; a < na; a++)
        if ((rc = atlas_register(b, tp, atl[a], &ro, &regs[a], err, errlen))) goto out;
    /* one atlas per anatomy: of a subject given in two phases (plain and contrast-enhanced CT),
     * the one whose registered descriptors match the target best (tests/atlas/README.md: the
     * plain one for CT and CBCT targets, the contrast one for MR and PET); ranked first, after
     * affine */
    uint8_t kept[PIPELINE_ATLAS_MAX];
    int nd = atlas_distinct(cap, regs, na, kept), order[PIPELINE_ATLAS_MAX], all[PIPELINE_ATLAS_MAX];
    atlas_select(regs, na, all);
    for (int a = 0, j = 0; a < na; a++)
        if (kept[all[a]]) order[j++] = all[a];
    int k = select_k > 0 && select_k < nd ? select_k : nd;
    ro.deformable = 1;
    for (int i = 0; rank_first && i < k; i++)
        if ((rc = atlas_register_deformable(b, tp, atl[order[i]], &ro, &regs[order[i]], err, errlen))) goto out;
    int fallbacks = 0;
    for (int a = 0; a < na; a++)
        if (regs[a].fell_back) {
            fallbacks++;
            note_add(note, notelen, "%s; ", regs[a].warning);
        }
    const atlas_prep *ap[PIPELINE_ATLAS_MAX];
    atlas_reg rr[PIPELINE_ATLAS_MAX];
    for (int i = 0; i < k; i++) ap[i] = atl[order[i]], rr[i] = regs[order[i]];
    const size_t n = atlas_grid_voxels(&tg);
    if (!(lab = malloc(n))) {
        rc = sn_errf(err, errlen, SN_ENOMEM, "out of memory");
        goto out;
    }
    atlas_em_opts em;
    atlas_em_opts_default(&em);
    size_t relabelled = 0;
    double tf = now_ms();
    if ((rc = atlas_fuse_em(b, tp, ap, rr, k, o->fusion, &tg, v->data, o->refine ? &em : NULL, lab, o->probs, prob_of,
                            o->n_labels + 1, &relabelled, err, errlen)))
        goto out;
    tf = now_ms() - tf;
    uint8_t keep[256] = {0};
    keep[2] = keep[3] = keep[7] = 1;   /* fat, muscle, ribs: many components by nature */
    atlas_postprocess(lab, tg.nx, tg.ny, tg.nz, keep);
    size_t count[256] = {0};
    for (size_t i = 0; i < n; i++) {
        int l = lab[i];
        if (restrict_labels && !want[l]) l = 0;
        out[i] = (uint16_t)l;
        count[l]++;
    }
    if (note && notelen) {
        char buf[128];
        snprintf(buf, sizeof buf, "%d of %d atlases fused (%s) on %s, %.1f s", k, na, atlas_fusion_name(o->fusion),
                 nn_backend_name(b), (now_ms() - t0) / 1000.0);
        note_add(note, notelen, "%s", buf);
        if (o->refine) {
            snprintf(buf, sizeof buf, ", intensity refinement relabelled %zu voxels (fusion %.1f s)", relabelled,
                     tf / 1000.0);
            note_add(note, notelen, "%s", buf);
        }
        if (rank_first && is_auto) {
            note_add(note, notelen, "%s", ", one atlas per anatomy chosen after affine");
        } else if (rank_first) {
            snprintf(buf, sizeof buf, ", the %d most similar after affine registered further", k);
            note_add(note, notelen, "%s", buf);
        }
        if (nd < na) {
            snprintf(buf, sizeof buf, ", %d left out as the same anatomy as a better-matching atlas", na - nd);
            note_add(note, notelen, "%s", buf);
        }
        if (fallbacks) {
            snprintf(buf, sizeof buf, ", %d registration(s) fell back to affine", fallbacks);
            note_add(note, notelen, "%s", buf);
        }
        int first = 1;
        for (int l = 1; l < 256; l++)
            if ((restrict_labels ? want[l] : have[l]) && !count[l]) {
                snprintf(buf, sizeof buf, "%s%d", first ? "; empty labels (outside the field of view?): " : ",", l);
                note_add(note, notelen, "%s", buf);
                first = 0;
            }
    }
out:
    /* On a GPU, anything but bad input is the device's failure (no device, out of GPU memory, a
     * kernel error): SN_EDEVICE lets the caller run it on the CPU. */
    if (rc && o->device_index >= 0 && rc != SN_EINVAL && rc != SN_ENOENT) {
        char why[512];
        sn_strlcpy(why, err ? err : "", sizeof why);
        rc = sn_errf(err, errlen, SN_EDEVICE, "cuda:%d: %s", o->device_index, why);
    }
    free(lab);
    for (int a = 0; a < na; a++) {
        atlas_prep_free(atl[a]);
        atlas_reg_clear(&regs[a]);
    }
    atlas_prep_free(tp);
    nn_backend_free(b);
    return rc;
}

