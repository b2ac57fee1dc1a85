/* pipeline/atlas/atlas.h — multi-atlas segmentation across modalities: working-grid resampling,
 * MIND-SSC descriptors, affine (moments, then descent on the MIND SSD) and deformable
 * registration in the convexAdam style (discrete SSD cost volume with coupled convex smoothing,
 * forward and backward fields symmetrised, then Adam instance optimisation with a diffusion
 * regulariser), Jacobian statistics, label warping, fusion (majority vote, locally weighted
 * voting, joint label fusion), atlas selection and post-processing.
 *
 * Part of pipeline/ but built as its own library (sn_atlas) that needs only common/ and nn/, so
 * it builds with SEGNODE_NN_ONLY and runs on a machine without DCMTK or SQLite. The heavy inner
 * loops run as nn/ ops (NN_OP_MIND_SSC, NN_OP_WARP, NN_OP_SSD_COST, NN_OP_WARP_SSD_GRAD) on the
 * backend the caller passes. Functions return 0 or a negative SN_E* status and fill `err`. */
#ifndef SEGNODE_PIPELINE_ATLAS_H
#define SEGNODE_PIPELINE_ATLAS_H

#include <stddef.h>
#include <stdint.h>

#include "nn/nn.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A voxel grid in LPS, as pipeline_volume: voxel (i, j, k) lies at origin + direction *
 * (i*spacing[0], j*spacing[1], k*spacing[2]); direction row-major, columns = axes. Data arrays
 * on a grid are index i + nx*(j + ny*k). */
typedef struct atlas_grid {
    int nx, ny, nz;
    double spacing[3], origin[3], direction[9];
} atlas_grid;

static inline size_t atlas_grid_voxels(const atlas_grid *g) { return (size_t)g->nx * g->ny * g->nz; }

/* The grid with the same axes and extent as `src` and isotropic spacing `mm`. */
void atlas_grid_working(const atlas_grid *src, double mm, atlas_grid *out);

/* Voxel -> world as a 3x4 row-major matrix [R | t], and its inverse. */
void atlas_grid_to_world(const atlas_grid *g, double m[12]);
void atlas_grid_from_world(const atlas_grid *g, double m[12]);

/* Trilinear resampling of `src` (on sg) onto dg: dst(q) = src(M * world(q)) where M is a 3x4
 * world->world map (NULL = identity). Outside src: `fill`. Multithreaded with OpenMP. */
void atlas_resample(const atlas_grid *sg, const float *src, const atlas_grid *dg, float *dst,
                    const double *M, float fill);

/* A prepared image: the working-grid image (robustly normalised to [0, 1]), its MIND-SSC
 * descriptors [12][voxels], and for an atlas its labels on its native grid. Owned arrays. */
typedef struct atlas_prep {
    atlas_grid grid;           /* working grid */
    float *img;
    float *mind;               /* 12 * voxels */
    atlas_grid lgrid;          /* label grid (atlas only) */
    uint8_t *labels;           /* NULL for a target */
} atlas_prep;

/* Resample a volume (native grid g, values v) onto its working grid at `mm` (0 = automatic:
 * ATLAS_WORK_MM or the finest native spacing when coarser), normalise it, and compute MIND-SSC on
 * backend b. `labels` (may be NULL) are copied on g. */
#define ATLAS_WORK_MM 3.0
int atlas_prep_new(nn_backend *b, const atlas_grid *g, const float *v, const uint8_t *labels,
                   double mm, atlas_prep **out, char *err, size_t errlen);
void atlas_prep_free(atlas_prep *p);

/* Save / load in a folder: meta.txt (grids) + img.f32, mind.f32, labels.u8 (raw little-endian). */
int atlas_prep_save(const atlas_prep *p, const char *dir, char *err, size_t errlen);
int atlas_prep_load(const char *dir, atlas_prep **out, char *err, size_t errlen);

/* MIND-SSC of `img` (dims nx, ny, nz) into mind[12 * voxels] on backend b (radius 1 patch,
 * distance `dil`). */
int atlas_mind(nn_backend *b, const float *img, int nx, int ny, int nz, int dil, float *mind,
               char *err, size_t errlen);

typedef struct atlas_reg_opts {
    int affine_iters;          /* descent steps on the MIND SSD (default 60; 0 = moments only) */
    int deformable;            /* 0: affine only */
    int disp_radius;           /* discrete search radius in coarse voxels (default 3) */
    int adam_iters;            /* instance optimisation steps (default 60) */
    float adam_lr;             /* in coarse voxels (default 0.3) */
    float lambda;              /* diffusion weight on the coarse grid (default 0.1) */
    float lambda_fine;         /* diffusion weight on the working grid (default 0.1) */
    int fine_iters;            /* further Adam steps on the working grid (default 30) */
    double fold_max;           /* folding fraction above which the result falls back to affine
                                  (default 0.01) */
    /* Per-organ region-of-interest refinement after the deformable stage (atlas_register's step
     * 7; tests/atlas/README.md "Region-of-interest refinement"). For every small organ of the
     * atlas, a box around it as the global field warps it (plus roi_margin_mm) is registered
     * again on its own: a discrete search on the working grid (not the coarse one), coupled
     * convex smoothing, then Adam with a weaker diffusion weight; the residual field, faded to 0
     * at the box's faces inside the image, is composed with the global one. A box whose
     * composed field folds more than the global one (0.1% of the box) is left as it was. */
    int roi;                   /* 0: off (default) */
    const uint8_t *roi_labels; /* [256]: labels that may be refined (NULL: any atlas label) */
    double roi_min_ml, roi_max_ml;   /* organ volume in the atlas (default 5..600 mL) */
    double roi_max_extent_mm;  /* and its extent along every axis (default 200 mm): no ribs,
                                  aorta, spine, fat */
    double roi_min_interior;   /* and its share of interior voxels (default 0.5): no shells
                                  (the myocardium: refined, it lost 0.02-0.08 in CBCT and MR) */
    double roi_margin_mm;      /* around the warped organ's bounding box (default 20 mm) */
    int roi_radius;            /* discrete search radius in working voxels (default 2; 0: none) */
    int roi_iters;             /* Adam steps (default 60) */
    float roi_lambda;          /* diffusion weight (default 0.03) */
    int verbose;
} atlas_reg_opts;

void atlas_reg_opts_default(atlas_reg_opts *o);

/* Registration of an atlas to a target. The map: target working voxel p -> atlas world point
 * A * (p + u(p)) with A a 3x4 matrix and u [3][voxels] on the target working grid. */
typedef struct atlas_reg {
    atlas_grid grid;           /* the target's working grid */
    double A[12];
    float *u;                  /* owned; NULL = affine only */
    double ssd_moments, ssd_affine, ssd_final;   /* mean MIND SSD after each stage */
    double fold_fraction;      /* voxels with det J <= 0 */
    double jac_min, jac_max, jac_std;
    double ice_mm;             /* mean inverse-consistency error of the symmetrised coarse fields */
    int fell_back;             /* 1: deformable discarded, affine kept (warning says why) */
    int roi_refined, roi_kept; /* organ boxes registered again / of those, kept (not folding) */
    double roi_seconds;        /* of `seconds`, in the refinement */
    char warning[256];
    double seconds;            /* the whole registration */
    double affine_seconds;     /* of `seconds`, moments and affine descent */
} atlas_reg;

/* With o->deformable 0, the affine stages alone (moments, descent): u NULL, ssd_final =
 * ssd_affine. */
int atlas_register(nn_backend *b, const atlas_prep *target, const atlas_prep *atlas,
                   const atlas_reg_opts *o, atlas_reg *out, char *err, size_t errlen);

/* The deformable stages on top of an affine-only registration `r` of this atlas to this target
 * (atlas_register with deformable 0), in place: the result is the one atlas_register with
 * deformable 1 gives, bit for bit, at the cost of one extra warp. So atlases can be ranked after
 * affine and only the ones kept registered further (pipeline_atlas_opts.select_k). SN_EINVAL if
 * r is not affine-only on this target's grid (r unchanged); on any other error r is cleared. */
int atlas_register_deformable(nn_backend *b, const atlas_prep *target, const atlas_prep *atlas,
                              const atlas_reg_opts *o, atlas_reg *r, char *err, size_t errlen);
void atlas_reg_clear(atlas_reg *r);

/* The atlas MIND descriptors or image warped onto the target working grid by r. */
int atlas_reg_warp_mind(nn_backend *b, const atlas_reg *r, const atlas_prep *atlas, float *out,
                        char *err, size_t errlen);

typedef enum atlas_fusion {
    ATLAS_FUSE_MAJORITY = 0,   /* every atlas weighs 1 */
    ATLAS_FUSE_LOCAL,          /* exp(-patch MIND SSD / h) per voxel (locally weighted voting) */
    ATLAS_FUSE_JLF             /* joint label fusion (Wang & Yushkevich 2013) on MIND patches */
} atlas_fusion;

const char *atlas_fusion_name(atlas_fusion f);
int atlas_fusion_from_name(const char *s);

/* Fuse the labels of n registered atlases onto the target's native grid `tg` into out[voxels]
 * (per-label trilinear votes, argmax). */
int atlas_fuse(nn_backend *b, const atlas_prep *target, const atlas_prep *const *atlases,
               const atlas_reg *regs, int n, atlas_fusion method, const atlas_grid *tg,
               uint8_t *out, char *err, size_t errlen);

/* atlas_fuse that can also give class scores: probs (may be NULL) gets nprobs classes as
 * probs[c * voxels + i] (voxels of tg), before any post-processing. prob_of[l] is the class of
 * label l (< nprobs). A class c >= 1 scores the summed votes of its labels; class 0
 * (background) scores the strongest of its labels (not their sum); every vote clamped at 0
 * (joint label fusion weights can be negative), the scores divided by their sum. So they sum to
 * 1, and their argmax (lowest class on ties) is prob_of[out[i]] when each class >= 1 holds one
 * label: an organ winning the plurality over the labels pooled into background wins here too.
 * out[] is atlas_fuse's (argmax over every label). */
int atlas_fuse_probs(nn_backend *b, const atlas_prep *target, const atlas_prep *const *atlases,
                     const atlas_reg *regs, int n, atlas_fusion method, const atlas_grid *tg, uint8_t *out,
                     float *probs, const uint8_t prob_of[256], int nprobs, char *err, size_t errlen);

/* Intensity refinement of the fused votes on the target's own image, after Ledig et al.'s
 * MALP-EM (multi-atlas label propagation with expectation-maximisation, 2015): the fused vote
 * fractions of every atlas label (fat, muscle, ... as well as the organs) are a spatial prior;
 * each label gets a Gaussian intensity model fitted on the target itself, so no intensity is
 * carried across modalities. Its mean varies slowly in space (a coarse grid of cell_mm, smoothed
 * and pulled towards the label's global mean where the label has few voxels), which absorbs an
 * MR bias field or CBCT cupping; the variance is one for all labels by default (pooled), which
 * puts the boundary between two labels at the midpoint of their means, where a blurred edge
 * lies (a variance per label lets a label broadened by the PET PSF take its neighbours' voxels).
 * Only voxels where the atlases disagree can change (the strongest label below 0.999 of the
 * vote): their posterior is prior * likelihood^lik_weight, re-estimated `iters` times. CPU only
 * (OpenMP). tests/atlas/README.md "Intensity refinement" has the figures and how the defaults
 * were chosen. */
typedef struct atlas_em_opts {
    int iters;          /* EM iterations (0: off) */
    float lik_weight;   /* exponent on the likelihood, in (0, 1] */
    double cell_mm;     /* grid of the spatially varying mean */
    int local;          /* 1: spatially varying mean; 0: one mean per label */
    int pooled;         /* 1: one variance for every label (the boundary between two labels at
                           the midpoint of their means, where a blurred edge is); 0: one each */
} atlas_em_opts;

void atlas_em_opts_default(atlas_em_opts *o);

/* atlas_fuse_probs, then (em non-NULL with iters > 0) the intensity refinement on timg, the
 * target's values on tg: out[] and probs[] of the voxels where the atlases disagree are
 * recomputed from the posterior of their four strongest labels. *changed (may be NULL) gets
 * the number of voxels whose label changed. With em NULL or iters 0, atlas_fuse_probs exactly;
 * so too when timg holds a NaN or an infinity (nothing to model). */
int atlas_fuse_em(nn_backend *b, const atlas_prep *target, const atlas_prep *const *atlases,
                  const atlas_reg *regs, int n, atlas_fusion method, const atlas_grid *tg, const float *timg,
                  const atlas_em_opts *em, uint8_t *out, float *probs, const uint8_t prob_of[256], int nprobs,
                  size_t *changed, char *err, size_t errlen);

/* Order of atlases by MIND SSD after affine (best first) into order[n]. */
void atlas_select(const atlas_reg *regs, int n, int *order);

/* One atlas per anatomy: atlases whose label maps are equal on equal label grids are the same
 * subject imaged more than once (a library holding a plain and a contrast-enhanced CT of each
 * subject); of each such set keep[i] = 1 for the one whose registered MIND descriptors are
 * closest to the target's (lowest ssd_final), 0 for the others; every other atlas is kept.
 * Returns the number kept. */
int atlas_distinct(const atlas_prep *const *atlases, const atlas_reg *regs, int n, uint8_t *keep);

/* The number of anatomies among n atlases (atlas_distinct's sets, counted before registering). */
int atlas_anatomies(const atlas_prep *const *atlases, int n);

/* Post-processing on a label map: keep the largest 6-connected component of every label whose
 * keep_all[label] is 0 (the rest go to background), then fill background holes enclosed by a
 * label. keep_all may be NULL (every label single-component). */
void atlas_postprocess(uint8_t *lab, int nx, int ny, int nz, const uint8_t *keep_all);

/* The same, keeping with the largest component every component of at least min_fraction of
 * its size (min_fraction >= 1: the largest alone, atlas_postprocess). */
void atlas_postprocess_keep(uint8_t *lab, int nx, int ny, int nz, const uint8_t *keep_all, double min_fraction);

#ifdef __cplusplus
}
#endif

#endif
