/* pipeline/atlas/method_atlas.h — the atlas method as the node runs it: atlases from the library
 * folder (<storage>/atlases/NAME, written by `segnode atlas import`), each registered to the
 * target (pipeline/atlas/atlas.h), best k kept after affine, labels fused and post-processed,
 * restricted to the requested labels. Also the job worker's plug-in (pipeline/method.h). Needs
 * pipeline/volume.h, so it is not part of the NN_ONLY build (sn_atlas is). */
#ifndef SEGNODE_PIPELINE_ATLAS_METHOD_H
#define SEGNODE_PIPELINE_ATLAS_METHOD_H

#include <stddef.h>
#include <stdint.h>

#include "pipeline/atlas/atlas.h"
#include "pipeline/volume.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The most atlases one segmentation takes (fusion solves at most 16 x 16 systems). */
#define PIPELINE_ATLAS_MAX 16
#define PIPELINE_SELECT_K_AUTO (-1)

typedef struct pipeline_atlas_opts {
    const char *library;          /* folder holding one sub-folder per atlas (borrowed) */
    const char *const *atlases;   /* names (borrowed); n_atlases (1..PIPELINE_ATLAS_MAX) of them */
    int n_atlases;
    const int *labels;            /* label numbers to keep (NULL = every atlas label) */
    int n_labels;
    atlas_fusion fusion;          /* default ATLAS_FUSE_LOCAL */
    int select_k;                 /* keep the k most similar after affine; atlases that are the
                                     same anatomy (equal label maps: one subject in two phases)
                                     count once, the best-matching one (atlas_distinct).
                                     0 or >= n_atlases: every atlas is registered in full and
                                     the phase chosen on the final MIND SSD. 1..n_atlases-1:
                                     every atlas is registered affine only, the phase chosen and
                                     the atlases ranked on the affine MIND SSD, and only the k
                                     kept get the deformable stage. PIPELINE_SELECT_K_AUTO (the
                                     default): k = the number of anatomies when some atlases
                                     share one (the phase chosen after affine, every anatomy
                                     kept), else 0 */
    int refine;                   /* 1 (the default): the fused votes refined on the target's own
                                     intensities (atlas_fuse_em with atlas_em_opts_default, on the
                                     CPU whatever the device); 0: the fusion as it is */
    double work_mm;               /* working grid (default 0: automatic, see atlas_prep_new) */
    int threads;                  /* CPU threads (0 = 2) */
    int device_index;             /* -1 (the default): the CPU; N: CUDA device N. Not starting the
                                     device, or a device failure while registering or fusing
                                     (out of GPU memory, a kernel error), returns SN_EDEVICE: the
                                     caller may run it again on the CPU */
    int verbose;
    /* Optional output (NULL = not wanted, the default): caller-allocated (n_labels + 1) * nx*ny*nz
     * floats, class c at voxel i in probs[c * nx*ny*nz + i] on the target grid, before
     * post-processing. Classes: [background, labels[0], labels[1], ...]. A label's value is its
     * fused vote fraction; background's is the vote of the strongest atlas label that is not
     * requested (label 0, fat, muscle, ...), since the fusion takes the plurality over every
     * atlas label (pooling them into one background vote measured 0.02-0.04 lower Dice with
     * majority vote on 5 atlases: tests/atlas/README.md). The n_labels + 1 values are then
     * divided by their sum: they sum to 1 per voxel and their argmax (lowest class on ties) is
     * the label map before post-processing. With refine, a voxel where the atlases disagree
     * scores the posterior of its four strongest labels instead of their votes. With labels NULL the classes are the label numbers
     * 0, 1, ..., n_labels (probs[l * nx*ny*nz + i] is label l; atlas labels above n_labels are
     * pooled into background here but still segmented in `out`). */
    float *probs;
} pipeline_atlas_opts;

void pipeline_atlas_opts_default(pipeline_atlas_opts *o);

/* Segment `v` into out[nx*ny*nz]. `note` (may be NULL) gets one line for the job record: atlases
 * used, fallbacks to affine, labels that came out empty (a field of view that misses an organ
 * gives an empty label, never an invented one). Errors: SN_ENOENT (an atlas is not in the
 * library), SN_EINVAL (no atlas holds any requested label), SN_ENOMEM, SN_EDEVICE (on a GPU,
 * see device_index), registration failures. */
int pipeline_atlas_segment(const pipeline_atlas_opts *o, const pipeline_volume *v, uint16_t *out, char *note,
                           size_t notelen, char *err, size_t errlen);

/* Register the "atlas" method with the job worker (pipeline/method.h): the route's atlases and
 * labels, the library under [node] storage. */
void pipeline_atlas_method_register(void);

#ifdef __cplusplus
}
#endif

#endif
