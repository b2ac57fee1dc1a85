/* pipeline/method_both.c — the job worker's "both" method: the route's model bundle and its
 * atlases on the same series, their probabilities fused, then the atlas post-processing.
 *
 * The rule (README "Segmentation methods", etc/segnode.conf): the classes are background plus
 * the route's labels (every bundle label the code table knows when the route names none). For
 * each voxel and class, the score is the mean of the net's softmax probability and the atlases'
 * fused vote fraction (pipeline_atlas_opts.probs). The net's background is everything it gives
 * to no requested class; when the bundle lacks some requested labels, that background is split
 * between background and those labels in the atlases' proportions (the net has no say between
 * them, so they are decided by the atlases). The label is the argmax (lowest class on ties),
 * then the net's post-processing (pipeline_net_postprocess: per label the largest component and
 * those of at least PIPELINE_NET_KEEP_FRACTION of its size, holes filled). The net runs first, on the job's device: a device failure there
 * (SN_EDEVICE, the worker retries on the CPU) costs no registration. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/status.h"
#include "common/util.h"
#include "pipeline/atlas/method_atlas.h"
#include "pipeline/method_net.h"

static int both__run(pipeline_method_ctx *ctx, const pipeline_volume *target, uint16_t **labels_out, char *err,
                     size_t errlen)
{
    *labels_out = NULL;
    const sn_route *r = ctx->route;
    pipeline_net_model *pm = NULL;
    pipeline_net_classes cls;
    float *pn = NULL, *pa = NULL;
    uint16_t *aout = NULL;
    uint8_t *lab = NULL;
    int rc;
    if (!r || r->atlases.n < 1)
        return sn_errf(err, errlen, SN_EINVAL, "route %s names no atlases (atlases = ...); method both needs them",
                       r ? r->name : "?");
    if (r->atlases.n > PIPELINE_ATLAS_MAX)   /* config.c refuses such a route; never fuse a part */
        return sn_errf(err, errlen, SN_EINVAL, "route %s names %d atlases; the atlas method takes at most %d",
                       r->name, r->atlases.n, PIPELINE_ATLAS_MAX);
    if ((rc = pipeline_net_route_model(ctx, &pm, err, errlen)) != SN_OK)
        return rc;
    const nn_model *m = pipeline_net_model_nn(pm);
    const nn_model_info *info = nn_model_info_get(m);
    if ((rc = pipeline_net_classes_map(info, ctx->table, &r->labels, &cls, ctx->note, sizeof ctx->note, err,
                                       errlen)) != SN_OK)
        goto out;
    pipeline_net_note_modality(ctx, info, target);

    /* the net */
    if ((rc = pipeline_net_infer(ctx, m, &cls, target, NULL, &pn, err, errlen)) != SN_OK)
        goto out;
    if (pipeline_method_should_stop(ctx)) {
        rc = sn_errf(err, errlen, SN_ETIMEOUT, "stopped");
        goto out;
    }

    /* the atlases, on the same classes */
    const size_t S = (size_t)target->nx * (size_t)target->ny * (size_t)target->nz;
    const int C = cls.n + 1;
    pa = malloc(sizeof(float) * S * (size_t)C);
    aout = malloc(sizeof(uint16_t) * S);
    lab = malloc(S);
    if (!pa || !aout || !lab) {
        rc = sn_errf(err, errlen, SN_ENOMEM, "out of memory (%d class probabilities of %zu voxels)", C, S);
        goto out;
    }
    char lib[1100], anote[512] = "";
    snprintf(lib, sizeof lib, "%s/atlases", ctx->cfg->node.storage);
    const char *names[PIPELINE_ATLAS_MAX];
    const int na = r->atlases.n;
    for (int i = 0; i < na; i++)
        names[i] = r->atlases.item[i];
    pipeline_atlas_opts o;
    pipeline_atlas_opts_default(&o);
    o.library = lib;
    o.atlases = names;
    o.n_atlases = na;
    o.labels = cls.number;
    o.n_labels = cls.n;
    o.select_k = r->select_k;
    o.refine = r->refine;
    o.threads = ctx->threads;
    o.device_index = pipeline_method_gpu(ctx);
    o.probs = pa;
    int64_t t0 = sn_mono_ms();
    rc = pipeline_atlas_segment(&o, target, aout, anote, sizeof anote, err, errlen);
    pipeline_method_time(ctx, "atlas", (double)(sn_mono_ms() - t0));
    if (rc != SN_OK)
        goto out;
    if (anote[0])
        pipeline_net_note_add(ctx->note, sizeof ctx->note, "atlas: %s", anote);
    if (pipeline_method_should_stop(ctx)) {
        rc = sn_errf(err, errlen, SN_ETIMEOUT, "stopped");
        goto out;
    }

    /* fuse */
    t0 = sn_mono_ms();
    for (size_t i = 0; i < S; i++) {
        /* The net's background also holds the labels it does not know: split it between them
         * and background in the atlases' proportions (the net has no say between those). */
        float ga = pa[i];
        for (int c = 1; c < C; c++)
            if (cls.channel[c - 1] < 0)
                ga += pa[(size_t)c * S + i];
        const float share = ga > 1e-6f ? pn[i] / ga : 0.0f;
        int best = 0;
        float bs = -1.0f;
        for (int c = 0; c < C; c++) {
            const float a = pa[(size_t)c * S + i];
            float n;
            if (c > 0 && cls.channel[c - 1] >= 0)
                n = pn[(size_t)c * S + i];
            else
                n = ga > 1e-6f ? a * share : (c == 0 ? pn[i] : 0.0f);
            const float s = 0.5f * (a + n);
            if (s > bs) {
                bs = s;
                best = c;
            }
        }
        lab[i] = (uint8_t)(best ? cls.number[best - 1] : 0);
    }
    pipeline_method_time(ctx, "fuse", (double)(sn_mono_ms() - t0));

    if ((rc = pipeline_net_finish(ctx, &cls, lab, target, labels_out, err, errlen)) != SN_OK)
        goto out;
    pipeline_net_note_add(ctx->note, sizeof ctx->note, "net (%d of %d labels, %s) + atlases fused", cls.n_in_model,
                          cls.n, ctx->device);
out:
    free(pn);
    free(pa);
    free(aout);
    free(lab);
    pipeline_net_model_put(pm);
    return rc;
}

void pipeline_both_method_register(void)
{
    pipeline_method_add("both", "segnode net + multi-atlas", 1, both__run);
}
