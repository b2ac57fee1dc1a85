/* pipeline/segwrite.h — write a BINARY DICOM Segmentation (SEG) from a label volume that lies on
 * the grid of a source image series (one frame per segment and source slice that holds it).
 * A plain C surface over DCMTK dcmseg (segwrite.cc). Codes, names and colours come from the
 * label table (labels.h). Pixel Data is packed here, not by DCMTK (its 3.6.7 packer loses the
 * last pixels when rows*cols*frames % 8 != 0). It does not resample: the labels must already be
 * on the source grid. */
#ifndef SEGNODE_PIPELINE_SEGWRITE_H
#define SEGNODE_PIPELINE_SEGWRITE_H

#include <stddef.h>
#include <stdint.h>

#include "pipeline/dcmwrite.h"
#include "pipeline/labels.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The source series the SEG is derived from, and its grid. Slice k has its Image Position
 * (Patient) at origin + k * slice_spacing * (row x col) where row/col are iop[0..2]/iop[3..5]. */
typedef struct pipeline_seg_source {
    int cols, rows, slices;
    double origin[3];            /* IPP of slice 0 (mm, LPS) */
    double iop[6];               /* row cosines, column cosines */
    double pixel_spacing[2];     /* between rows, between columns (mm) */
    double slice_spacing;        /* centre to centre along the normal (mm), > 0 */
    double slice_thickness;      /* mm */
    const char *series_uid;      /* source Series Instance UID */
    const char *sop_class_uid;   /* source SOP Class UID (all slices) */
    const char *const *sop_uids; /* `slices` source SOP Instance UIDs, slice k first-to-last */
} pipeline_seg_source;

typedef struct pipeline_seg_options {
    const char *sop_uid;             /* SEG SOP Instance UID (required) */
    int instance_number;
    const char *content_label;       /* CS, e.g. "GROUND_TRUTH" */
    const char *content_description; /* may be NULL */
    const char *content_creator;     /* PN, may be NULL */
    const char *content_date, *content_time; /* required: makes output reproducible */
    int manual;                      /* 1: Segment Algorithm Type MANUAL, 0: AUTOMATIC */
    const char *algorithm_name;      /* required when !manual */
} pipeline_seg_options;

/* Write the SEG to `path`. `hdr` gives patient/study/frame-of-reference (as in the source) and
 * the SEG's own series (modality is forced to SEG). `labels` holds cols*rows*slices label values,
 * column fastest, then row, then slice (0 = background); every non-zero value must be in
 * `table`. One segment per label value present, numbered 1.. in increasing label order.
 * Returns 0, SN_EINVAL (bad argument, unknown label, no label present), SN_EIO, SN_ENOMEM or
 * SN_EINTERNAL (DCMTK); `err` says why. */
int pipeline_seg_write(const char *path, const pipeline_dcm_header *hdr,
                       const pipeline_seg_source *src, const uint8_t *labels,
                       const pipeline_labels *table, const pipeline_seg_options *opt, char *err,
                       size_t errlen);

/* Pack nbits binary values (0 / non-zero) into bytes, first value in the least significant bit
 * of the first byte (PS3.5 8.1.1, 1-bit Pixel Data). out must hold (nbits + 7) / 8 bytes;
 * unused high bits of the last byte are 0. */
void pipeline_seg_pack_bits(const uint8_t *values, size_t nbits, uint8_t *out);

#ifdef __cplusplus
}
#endif

#endif
