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
