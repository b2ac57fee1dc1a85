/* pipeline/atlas/method_atlas.c — the job worker's "atlas" method (pipeline/method.h) over
 * pipeline_atlas_segment (segment.c): the route's atlases and labels, the library under the
 * node's storage folder. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/status.h"
#include "pipeline/atlas/method_atlas.h"
#include "pipeline/method.h"

_Static_assert(PIPELINE_ATLAS_MAX == SN_ROUTE_ATLASES_MAX, "config.c checks routes against the same limit");

static double now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e3 + (double)t.tv_nsec * 1e-6;
}

/* The worker's "atlas" method: the route's atlases and labels, the library under the storage. */
static int method_run(pipeline_method_ctx *ctx, const pipeline_volume *target, uint16_t **labels_out, char *err,
                      size_t errlen)
{
    *labels_out = NULL;
    const sn_route *r = ctx->route;
    if (!r || r->atlases.n < 1)
        return sn_errf(err, errlen, SN_EINVAL, "route %s names no atlases (atlases = ...)", r ? r->name : "?");
    if (r->atlases.n > PIPELINE_ATLAS_MAX)   /* config.c refuses such a route; never fuse a part */
        return sn_errf(err, errlen, SN_EINVAL, "route %s names %d atlases; the atlas method takes at most %d",
                       r->name, r->atlases.n, PIPELINE_ATLAS_MAX);
    char lib[1100];
    snprintf(lib, sizeof lib, "%s/atlases", ctx->cfg->node.storage);
    const char *names[PIPELINE_ATLAS_MAX];
    int labels[SN_LIST_MAX], nl = 0;
    for (int i = 0; i < r->atlases.n; i++) names[i] = r->atlases.item[i];
    for (int i = 0; i < r->labels.n; i++) {
        const pipeline_label *pl = ctx->table ? pipeline_labels_by_name(ctx->table, r->labels.item[i]) : NULL;
        if (!pl) return sn_errf(err, errlen, SN_EINVAL, "route %s: label %s is not in the code table", r->name, r->labels.item[i]);
        labels[nl++] = pl->number;
    }
    pipeline_atlas_opts o;
    pipeline_atlas_opts_default(&o);
    o.library = lib;
    o.atlases = names;
    o.n_atlases = r->atlases.n;
    o.labels = nl ? labels : NULL;
    o.n_labels = nl;
    _Static_assert(SN_SELECT_K_AUTO == PIPELINE_SELECT_K_AUTO, "a route's select_k auto is the pipeline's");
    o.select_k = r->select_k;
    o.refine = r->refine;
    o.threads = ctx->threads;
    o.device_index = pipeline_method_gpu(ctx);
    size_t n = (size_t)target->nx * target->ny * target->nz;
    uint16_t *out = malloc(n * sizeof *out);
    if (!out) return sn_errf(err, errlen, SN_ENOMEM, "out of memory");
    double t0 = now_ms();
    int rc = pipeline_atlas_segment(&o, target, out, ctx->note, sizeof ctx->note, err, errlen);
    pipeline_method_time(ctx, "atlas", now_ms() - t0);
    if (rc) {
        free(out);
        return rc;
    }
    *labels_out = out;
    return 0;
}

void pipeline_atlas_method_register(void)
{
    /* on the job's GPU when there is one; SN_EDEVICE makes the worker run it on the CPU */
    pipeline_method_add("atlas", "segnode multi-atlas", 1, method_run);
}
