/* pipeline/atlas/atlasInt.h — private to pipeline/atlas: affine helpers, trilinear sampling and a
 * one-op nn/ session (graph + session reused across runs, e.g. every Adam step). Not API. */
#ifndef SEGNODE_PIPELINE_ATLAS_ATLASINT_H
#define SEGNODE_PIPELINE_ATLAS_ATLASINT_H

#include "pipeline/atlas/atlas.h"

/* MIND-SSC neighbour distance on the working grid (voxels). Overridable at compile time for
 * experiments (tests/atlas/README.md); an atlas cache records it and a build with another value
 * refuses that cache. */
#ifndef ATLAS__MIND_DIL
#define ATLAS__MIND_DIL 2
#endif

/* 3x4 row-major affine maps. */
void atlas__affine_inverse(const double a[12], double o[12]);
void atlas__affine_mul(const double a[12], const double b[12], double o[12]);   /* o = a * b */

/* Trilinear value at voxel coordinates (x, y, z); `fill` more than half a voxel outside. */
float atlas__sample(const float *v, int nx, int ny, int nz, double x, double y, double z, float fill);

/* The per-organ refinement's fade of its residual field along one axis of a box of nb voxels:
 * 0 at a face (voxel 0 or nb - 1) that is open (inside the image), rising as a half cosine to 1
 * `ramp` voxels in; 1 throughout along a closed axis. Exposed for tests/atlas. */
float atlas__roi_ramp(int q, int nb, int ramp, int open_lo, int open_hi);

/* The fused vote of a target voxel where the atlases disagree (the strongest label holds less
 * than ATLAS__SURE of it): its ATLAS__VOTE_K strongest labels, with their vote fractions
 * renormalised over those kept (prior), and the intensity refinement's posterior (w). */
#define ATLAS__VOTE_K 4
#define ATLAS__SURE 0.999f
typedef struct atlas__vote {
    uint32_t i;                  /* voxel index on the target's native grid */
    uint8_t lab[ATLAS__VOTE_K];  /* labels; unused entries have prior 0 */
    float prior[ATLAS__VOTE_K];
    float w[ATLAS__VOTE_K];
} atlas__vote;

/* The split votes of a fusion, per slice k of the native grid (one thread fills a slice). */
typedef struct atlas__votes {
    int nz;
    size_t *n, *cap;
    atlas__vote **v;
} atlas__votes;

void atlas__votes_free(atlas__votes *av);

/* EM refinement (atlas_fuse_em): every label gets a Gaussian on the target image `img` (tg),
 * fitted to the voxels where the atlases agree (weight 1) and to the split ones (weight: the
 * posterior); the split voxels' posteriors prior^1 * likelihood^lik_weight, o->iters times;
 * out[] of a split voxel becomes its most probable label. *changed (may be NULL): how many did. */
int atlas__refine_em(const atlas_grid *tg, const float *img, uint8_t *out, atlas__votes *av,
                     const atlas_em_opts *o, size_t *changed, char *err, size_t errlen);

typedef struct atlas__op {
    nn_graph *g;
    nn_session *s;
    int nin;
} atlas__op;

/* One node over `nin` 5-D inputs of shapes shape[i]. */
int atlas__op_new(nn_backend *b, const nn_op_desc *op, int nin, const int64_t (*shape)[5], atlas__op *o,
                  char *err, size_t errlen);
/* Upload the inputs (a NULL entry keeps the previous contents), run, download the output. */
int atlas__op_run(atlas__op *o, const float *const *in, float *out, char *err, size_t errlen);
void atlas__op_free(atlas__op *o);
int atlas__op_once(nn_backend *b, const nn_op_desc *op, int nin, const int64_t (*shape)[5],
                   const float *const *in, float *out, char *err, size_t errlen);

#endif
