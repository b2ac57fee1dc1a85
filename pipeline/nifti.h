/* pipeline/nifti.h — write a pipeline_volume as a NIfTI-1 file (.nii, or .nii.gz through zlib)
 * so researchers can open it in their tools. The affine is stored twice, as sform and qform
 * (code 1, scanner anatomical), in RAS as NIfTI requires (DICOM's LPS with x and y negated), with
 * pixdim = spacing, qfac = pixdim[0] = the handedness of the grid, units mm. Rows are written
 * bottom-up (the j axis reversed, the affine adjusted) as dcm2niix does, so both tools' files
 * match voxel for voxel. This is a writer only; it does not resample. */
#ifndef SEGNODE_PIPELINE_NIFTI_H
#define SEGNODE_PIPELINE_NIFTI_H

#include <stddef.h>

#include "pipeline/volume.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Data types the writer may choose. */
typedef enum pipeline_nifti_type {
    PIPELINE_NIFTI_AUTO = 0,   /* int16 when every value is an integer in [-32768, 32767], else
                                  float32 */
    PIPELINE_NIFTI_FLOAT32,
    PIPELINE_NIFTI_INT16       /* refused (SN_EINVAL) when a value is not such an integer */
} pipeline_nifti_type;

/* Write `vol` (its data, or data16) to `path` (gzip-compressed when the name ends in ".gz").
 * `type` picks the voxel
 * type; *chosen (may be NULL) gets the one written. The file is written to a temp name in the
 * same folder and renamed, so a failed write leaves no partial file. Returns 0, SN_EINVAL,
 * SN_EIO or SN_ENOMEM with `err` filled. */
int pipeline_nifti_write(const pipeline_volume *vol, const char *path, pipeline_nifti_type type,
                         pipeline_nifti_type *chosen, char *err, size_t errlen);

#ifdef __cplusplus
}
#endif

#endif
