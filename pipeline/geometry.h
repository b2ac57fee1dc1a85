/* pipeline/geometry.h — slice-stack geometry in plain C, shared by the DICOM reader
 * (volume.cc) and the NIfTI writer, testable without DICOM: check that a set of slices
 * (Image Position / Image Orientation) forms one regular stack and derive its grid; convert an
 * LPS grid to the NIfTI RAS affine and quaternion. Not a public pipeline API. */
#ifndef SEGNODE_PIPELINE_GEOMETRY_H
#define SEGNODE_PIPELINE_GEOMETRY_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct pipeline_geom_slice {
    double ipp[3];       /* Image Position (Patient), mm */
    double iop[6];       /* Image Orientation (Patient): row direction, column direction */
    int has_ipp, has_iop;
} pipeline_geom_slice;

typedef struct pipeline_geom_stack {
    int nz;              /* slices of the grid (>= n when gaps are filled) */
    double origin[3];    /* IPP of the first slice */
    double direction[9]; /* row-major, columns = i, j, k unit vectors (LPS) */
    double dz;           /* slice step, mm (> 0) */
    int gaps;            /* slices missing (only when fill_gaps) */
} pipeline_geom_stack;

/* The widest gap that fill_gaps fills (missing slices in one step); a wider one is refused
 * as with fill_gaps 0. */
#define PIPELINE_GEOM_MAX_GAP 8

/* Sort `n` slices along their common normal and check they form a regular stack.
 * `single_dz` is the step used when n == 1. `tol` is the spacing tolerance (0 = default
 * max(0.01 mm, 1% of the step)). On success fills *st, order[n] (sorted slice -> input index)
 * and kpos[n] (sorted slice -> k index; differs from 0..n-1 only with gaps filled) and returns
 * 0. Else SN_EDICOM with `err` giving the reason (missing/inconsistent orientation, duplicate
 * position, gap (or one wider than PIPELINE_GEOM_MAX_GAP with fill_gaps), non-uniform
 * spacing, gantry tilt). Positions/orientations are in mm/cosines. */
int pipeline_geom_stack_build(const pipeline_geom_slice *s, int n, double single_dz, double tol,
                              int fill_gaps, pipeline_geom_stack *st, int *order, int *kpos,
                              char *err, size_t errlen);

/* The NIfTI affine (RAS, row-major 4x4 top 3 rows: srow_x, srow_y, srow_z) of an LPS grid. */
void pipeline_geom_nifti_affine(const double origin[3], const double direction[9],
                                const double spacing[3], double srow[12]);

/* NIfTI quaternion form of an affine's rotation (nifti1.h: b, c, d, qfac) and offsets. */
void pipeline_geom_nifti_quatern(const double srow[12], const double spacing[3], double quat[3],
                                 double *qfac, double offset[3]);

#ifdef __cplusplus
}
#endif

#endif
