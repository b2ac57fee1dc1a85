/* pipeline/segwrite.h — write a BINARY DICOM Segmentation (SEG) from a label volume that lies on
 * the grid of a source image series (one frame per segment and source slice that holds it).
 * A plain C surface over DCMTK dcmseg (segwrite.cc). Codes, names and colours come from the
 * label table (labels.h). Pixel Data is packed here, not by DCMTK (its 3.6.7 packer loses the
 * last pixels when rows*cols*frames % 8 != 0). It does not resample: the labels must already be
 * on the source grid.
 *
 * Two entry points: pipeline_seg_write_series() is the product writer (source = a pipeline_volume
 * read from the series, patient/study copied from one of its files, fresh UIDs, Contributing
 * Equipment, enhanced multi-frame sources); pipeline_seg_write() is the low-level form the phantom
 * uses (geometry and header given explicitly). Reading SEGs is segread.h. */
#ifndef SEGNODE_PIPELINE_SEGWRITE_H
#define SEGNODE_PIPELINE_SEGWRITE_H

#include <stddef.h>
#include <stdint.h>

#include "pipeline/dcmwrite.h"
#include "pipeline/labels.h"
#include "pipeline/volume.h"

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
    const int *frames;           /* NULL (single-frame sources), or `slices` 1-based frame numbers
                                    of slice k in its (multi-frame) source instance, 0 = none */
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

/* ---- product writer -------------------------------------------------------------------------- */

/* A label volume on the source series' grid: voxel (i, j, k) at index i + nx*(j + ny*k), the
 * pipeline_volume convention (i along a row, j down the columns, k along increasing position).
 * 0 = background. When has_geometry is set, origin/spacing/direction (pipeline_volume meaning)
 * must equal the source's (1e-3 mm, 1e-4 in direction cosines). */
typedef struct pipeline_seg_labelmap {
    int nx, ny, nz;
    int bytes_per_voxel;        /* 1: uint8_t values, 2: uint16_t values */
    const void *data;           /* borrowed */
    int has_geometry;
    double origin[3], spacing[3], direction[9];
} pipeline_seg_labelmap;

typedef struct pipeline_seg_write_opts {
    const char *algorithm_name;      /* Segment Algorithm Name + Algorithm Name (required) */
    const char *algorithm_version;   /* Algorithm Version (default SEGNODE_VERSION) */
    pipeline_code algorithm_family;  /* Algorithm Family (CID 7162); value "" = default
                                        (123110, DCM, "Artificial Intelligence") */
    const char *method;              /* short method name, e.g. "segnode atlas"; goes into the
                                        Series Description and Contributing Equipment (required) */
    const char *series_description;  /* NULL: "<method> segmentation" (max 64 chars) */
    int keep_empty;                  /* 0 (default): frames with no pixel of their segment are
                                        omitted; 1: one frame per segment and source slice */
    int series_number;               /* default 900 */
    int instance_number;             /* default 1 */
    const char *content_label;       /* CS, default "SEGMENTATION" */
    const char *content_description; /* default: the method */
    const char *content_creator;     /* PN, default "SEGNODE^AUTOMATIC" */
    const char *series_uid, *sop_uid;/* NULL: fresh 2.25 UIDs (random) */
    const char *datetime;            /* NULL: now; else YYYYMMDDHHMMSS (reproducible output) */
    const char *device_serial;       /* default "0" */
} pipeline_seg_write_opts;

/* What was written (all filled on success). */
typedef struct pipeline_seg_write_info {
    char series_uid[65], sop_uid[65];
    int segments, frames, omitted_frames;
    size_t bytes;                    /* size of Pixel Data */
} pipeline_seg_write_info;

/* Defaults as documented above (algorithm_name and method stay NULL). */
void pipeline_seg_write_opts_default(pipeline_seg_write_opts *opts);

/* Write a BINARY SEG for the series `src` (as read by pipeline_volume_read_dir/_files: grid,
 * per-slice source SOP Instance/Class UID and frame number) to `path`. `source_path` is one DICOM
 * file of that series, or a folder holding one (searched recursively for an instance of
 * src->series_uid); Patient, Study, Patient Study and Clinical Trial attributes and the Frame of
 * Reference are copied from it, so the SEG joins the source study. One segment per label value
 * present, in increasing value order (segment numbers 1..), coded from `table`; frames ordered
 * by segment then slice; every frame references its exact source instance (and frame).
 * Errors: SN_EINVAL (labels grid differs from the source grid — both are named; a label value
 * absent from the table — the value is named; empty label volume; bad option), SN_ENOENT (no file
 * of the series under source_path), SN_EDICOM (unreadable source file), SN_EIO, SN_ENOMEM,
 * SN_EINTERNAL (DCMTK). `info` (may be NULL) is filled on success. Thread-safe. */
int pipeline_seg_write_series(const char *path, const pipeline_volume *src,
                              const char *source_path, const pipeline_seg_labelmap *labels,
                              const pipeline_labels *table, const pipeline_seg_write_opts *opts,
                              pipeline_seg_write_info *info /* OUT, may be NULL */, char *err,
                              size_t errlen);

/* The same SEG built through the plain dcmseg path: functional-group checks on and DCMTK's own
 * Pixel Data packer (which loses the last pixels when rows*cols*frames % 8 != 0). For the
 * benchmark only (tests/bench/seg); never use it for output. */
int pipeline_seg_write_series_plain(const char *path, const pipeline_volume *src,
                                    const char *source_path, const pipeline_seg_labelmap *labels,
                                    const pipeline_labels *table,
                                    const pipeline_seg_write_opts *opts,
                                    pipeline_seg_write_info *info, char *err, size_t errlen);

/* A fresh random UID "2.25.<128-bit decimal>" into out[64]. */
void pipeline_seg_new_uid(char out[64]);

/* Pack nbits binary values (0 / non-zero) into bytes, first value in the least significant bit
 * of the first byte (PS3.5 8.1.1, 1-bit Pixel Data). out must hold (nbits + 7) / 8 bytes;
 * unused high bits of the last byte are 0. */
void pipeline_seg_pack_bits(const uint8_t *values, size_t nbits, uint8_t *out);

#ifdef __cplusplus
}
#endif

#endif
