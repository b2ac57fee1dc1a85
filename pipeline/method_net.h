/* pipeline/method_net.h — the learned methods as the node runs them: "net" (a model bundle from
 * nn/ on the target series) and "both" (the net's probabilities fused with the atlas method's
 * vote fractions, method_both.c). Also what both share: the cache of loaded bundles and the
 * mapping of a bundle's output channels onto the label code table and the route's labels.
 *
 * Rules (etc/segnode.conf and the README say the same):
 *  - `model = DIR`: a relative DIR resolves against the folder of the config file
 *    (pipeline_method_model_path, method.h).
 *  - A bundle's label maps onto the code table by name, else by its code ("SCT:10200004"
 *    against the table's Segmented Property Type). A bundle label the table lacks is left out
 *    (background), and said in the job's note.
 *  - The route's `labels` pick what is kept; empty = every bundle label the table knows. For
 *    "net", a requested label the bundle lacks is said in the note (never invented), and a
 *    route none of whose labels the bundle has fails the job. For "both", such a label comes
 *    from the atlases alone.
 *  - Post-processing: per label the largest 6-connected component and every other component
 *    of at least PIPELINE_NET_KEEP_FRACTION of its size (fat, muscle and ribs keep every
 *    component), then enclosed background holes filled. The atlas method keeps the largest
 *    alone; a 2-D net's labels of a tubular organ (the aorta) break where one slice misses it,
 *    and the largest piece alone cut the CBCT bundle's aorta from 0.849 to 0.750 Dice over
 *    held-out subjects 21-24 (tools/train/README.md, "What the node sends").
 * Needs pipeline/volume.h and nn/, so not part of the NN_ONLY build. */
#ifndef SEGNODE_PIPELINE_METHOD_NET_H
#define SEGNODE_PIPELINE_METHOD_NET_H

#include <stddef.h>
#include <stdint.h>

#include "nn/nn.h"
#include "pipeline/labels.h"
#include "pipeline/method.h"
#include "pipeline/volume.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- the bundle cache ------------------------------------------------------------------------- */

/* A loaded bundle shared by the jobs that use it (read-only once loaded: nn/ sessions borrow its
 * graph, so concurrent jobs may run one bundle). */
typedef struct pipeline_net_model pipeline_net_model;

/* The bundle in folder `dir`, from the cache when the folder's model.json and model.safetensors
 * have the same modification times and sizes as when it was loaded, else loaded now (and the
 * stale entry dropped once its users are done). *cached (may be NULL) says which. The cache
 * keeps up to 4 bundles, least recently used out first. Release with pipeline_net_model_put.
 * Errors: those of nn_model_load (SN_ENOENT/SN_EIO/SN_EINVAL with err naming the file). */
int pipeline_net_model_get(const char *dir, pipeline_net_model **out /* OUT */, int *cached /* OUT */,
                           char *err, size_t errlen);
void pipeline_net_model_put(pipeline_net_model *m);               /* accepts NULL */
const nn_model *pipeline_net_model_nn(const pipeline_net_model *m); /* borrowed */

/* Drop every cached bundle no job uses (tests, shutdown). */
void pipeline_net_cache_clear(void);

/* ---- labels -------------------------------------------------------------------------------- */

/* How a bundle's output channels meet the code table and a route. */
typedef struct pipeline_net_classes {
    int K;                        /* bundle output channels */
    int channel_number[64];       /* table number of channel k; 0 background; -1 not in the table */
    int n;                        /* requested labels (route's, or every mapped bundle label) */
    int number[PIPELINE_LABELS_MAX]; /* their table numbers, route order */
    int channel[PIPELINE_LABELS_MAX]; /* the bundle channel giving number[i]; -1 if it has none */
    int n_in_model;               /* how many of number[] the bundle gives */
} pipeline_net_classes;

/* Map `info`'s channels onto `table` and pick the route's labels (`route_labels`, names; NULL or
 * empty = every bundle label the table knows). `note` (may be NULL) gets the bundle labels the table
 * lacks and the requested labels the bundle lacks. SN_EINVAL when a route label is not in the
 * table, or when the bundle has no usable label at all. */
int pipeline_net_classes_map(const nn_model_info *info, const pipeline_labels *table,
                             const sn_strlist *route_labels,
                             pipeline_net_classes *out /* OUT */, char *note, size_t notelen,
                             char *err, size_t errlen);

/* ---- inference ------------------------------------------------------------------------------ */

/* Run the bundle on `v` on ctx->device ("cuda:N": CUDA backend, any failure there is SN_EDEVICE
 * so the worker can fall back to the CPU; "cpu": ctx->threads threads). Exactly one of `labels`
 * (v's voxels: the argmax channel's table number, 0 for background and unmapped channels) and
 * `probs` (newly allocated (cls->n + 1) * voxels floats, caller frees: class 0 is background =
 * 1 - the sum of the others, then cls->number[i] in order; 0 where the bundle lacks the label) is
 * given. Adds the "infer" stage to ctx. */
int pipeline_net_infer(pipeline_method_ctx *ctx, const nn_model *m, const pipeline_net_classes *cls,
                       const pipeline_volume *v, uint8_t *labels /* OUT, may be NULL */,
                       float **probs /* OUT, may be NULL */, char *err, size_t errlen);

/* Components of a label at least this share of its largest are kept (the file comment). Chosen
 * on training subjects 11-16 (their truth never used in training) among 1 (largest alone),
 * 0.5, 0.2, 0.1 and 0.05. */
#define PIPELINE_NET_KEEP_FRACTION 0.05

/* The post-processing of both methods on a label map of table numbers (see the file comment). */
void pipeline_net_postprocess(const pipeline_labels *table, uint8_t *lab, int nx, int ny, int nz);

/* Append `what` to the note (a "; " between parts). */
void pipeline_net_note_add(char *note, size_t notelen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Resolve the route's bundle (pipeline_method_model_path) and get it from the cache, adding the
 * "load_model" stage and "loaded"/"cached" to the note. */
int pipeline_net_route_model(pipeline_method_ctx *ctx, pipeline_net_model **out, char *err, size_t errlen);

/* Notes shared by both methods: a series of another modality than the bundle's (CBCT series
 * arrive as CT and are not noted), and requested labels that came out empty. */
void pipeline_net_note_modality(pipeline_method_ctx *ctx, const nn_model_info *info, const pipeline_volume *v);
void pipeline_net_note_empty(pipeline_method_ctx *ctx, const pipeline_net_classes *cls, const uint8_t *lab,
                             size_t voxels);

/* The requested labels (cls->number) of `lab` widened to the worker's uint16, the rest 0. New
 * array (caller frees), NULL when out of memory. */
uint16_t *pipeline_net_restrict(const pipeline_net_classes *cls, const uint8_t *lab, size_t voxels);

/* The end of both methods: post-process `lab` (a "postprocess" stage), widen the requested
 * labels into *labels_out (pipeline_net_restrict) and note the empty ones. */
int pipeline_net_finish(pipeline_method_ctx *ctx, const pipeline_net_classes *cls, uint8_t *lab,
                        const pipeline_volume *target, uint16_t **labels_out, char *err, size_t errlen);

/* Register "net" (and "both" when the atlas method is built) with the job worker. */
void pipeline_net_method_register(void);
void pipeline_both_method_register(void);

#ifdef __cplusplus
}
#endif

#endif
