/* pipeline/niftiread.h — read a NIfTI-1 label image (.nii, or .nii.gz through zlib) onto the
 * grid of a DICOM series (pipeline_volume), for `segnode segment --labels FILE.nii[.gz]`.
 * Integer (int8/16/32, uint8/16/32) and float (32/64) voxels are accepted; scl_slope/scl_inter
 * are applied; every value must then be an integer in 0..65535. The file's affine (sform when
 * sform_code > 0, else qform) must describe the series' grid: the same voxel centres in RAS to
 * 1e-3 mm, up to a permutation or flip of the axes (so files written by pipeline/nifti.h or
 * dcm2niix, which store rows bottom-up, are accepted). It does not resample. */
#ifndef SEGNODE_PIPELINE_NIFTIREAD_H
#define SEGNODE_PIPELINE_NIFTIREAD_H

#include <stddef.h>
#include <stdint.h>

#include "pipeline/volume.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Read `path` and write its labels into out[grid->nx * ny * nz] (index i + nx*(j + ny*k), the
 * pipeline_volume convention). Returns 0, SN_ENOENT/SN_EIO (file), SN_EINVAL (not NIfTI-1, no
 * affine, a grid or affine that differs from the series' — both named —, a value that is not a
 * label: negative, fractional or > 65535), SN_EUNSUPPORTED (data type), SN_ENOMEM. */
int pipeline_nifti_read_labels(const char *path, const pipeline_volume *grid, uint16_t *out,
                               char *err, size_t errlen);

#ifdef __cplusplus
}
#endif

#endif
