/* tools/phantom/render.h — modality grids and physics of segnode-phantom: samples the analytic
 * anatomy (anatomy.h) on one modality's voxel grid and simulates CT, CBCT, MR T1/T2 and PET.
 * Output is a float image in physical units (HU, MR signal, Bq/ml) plus the ground-truth
 * structure at each voxel centre. No DICOM here (see phantom.c). */
#ifndef SEGNODE_PHANTOM_RENDER_H
#define SEGNODE_PHANTOM_RENDER_H

#include <stdint.h>

#include "tools/phantom/anatomy.h"

enum render_modality { R_CT = 0, R_CBCT, R_MR_T1, R_MR_T2, R_PET, R_COUNT };

/* Voxel (i, j, k) centre = origin + i*sp[0]*u + j*sp[1]*v + k*sp[2]*w, where u = dir[0..2]
 * (DICOM row direction, columns increase), v = dir[3..5] (column direction, rows increase),
 * w = dir[6..8] = u x v (slice order). */
typedef struct render_grid {
    int nx, ny, nz;
    double sp[3];
    double origin[3];
    double dir[9];
    double thickness;   /* slice thickness (mm) */
} render_grid;

typedef struct render_opts {
    int contrast;       /* CT/CBCT: portal-venous contrast phase */
    int threads;        /* >= 1 */
} render_opts;

/* The grid of modality m for a subject: `full` selects the demo size, else the test size. */
void render_grid_for(int m, int full, const anat_subject *s, render_grid *g);

/* Render: img (nx*ny*nz floats, physical units) and gt (structure ids at voxel centres).
 * Deterministic in (subject, modality, grid), whatever the number of threads. */
void render_volume(int m, const anat_subject *s, const render_grid *g, const render_opts *o,
                   float *img, uint8_t *gt);

/* Radionuclide / dose constants shared with the DICOM writer for SUV. */
#define RENDER_PET_DOSE_BQ 370.0e6
#define RENDER_PET_HALF_LIFE_S 6586.2
#define RENDER_PET_UPTAKE_S 3600.0

/* Bq/ml that corresponds to SUVbw 1 for this subject (decay-corrected to scan start). */
double render_pet_suv1(const anat_subject *s);

/* Generic parallel loop: calls fn(ctx, i) for i in [0, n) on `threads` threads. */
void render_parallel(int threads, int n, void (*fn)(void *ctx, int i), void *ctx);

#endif
