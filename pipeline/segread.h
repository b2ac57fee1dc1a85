/* pipeline/segread.h — read a DICOM Segmentation (BINARY or FRACTIONAL) and turn it into a label
 * volume on the grid of a given series (pipeline_volume). Used by `segnode segment --labels`,
 * atlas import and the tests. A plain C surface over DCMTK dcmdata (segread.cc); it does not use
 * dcmseg's reader (whose 3.6.7 unpacker has the same bit-packing bug as its writer) and does not
 * resample: frames must lie on the target grid's slices.
 *
 * Policy (also in the contracts below):
 *  - FRACTIONAL: a pixel belongs to its segment when value >= Maximum Fractional Value / 2.
 *  - Overlaps: when several segments claim a voxel, the higher segment number wins; the number of
 *    such voxels is reported.
 *  - Frames are placed by Image Position (Patient) on the target grid (tolerance: 5% of a pixel
 *    in-plane, 5% of the slice spacing along the normal, at least 0.01 mm); a frame without a
 *    position is placed through its Source Image reference (SOP Instance UID + frame number).
 *    In-plane geometry (rows, columns, orientation, pixel spacing) must equal the grid's: a SEG on
 *    another grid is refused with a message naming both (no nearest-neighbour resampling yet).
 *    Omitted (empty) frames are allowed: slices without frames stay 0. */
#ifndef SEGNODE_PIPELINE_SEGREAD_H
#define SEGNODE_PIPELINE_SEGREAD_H

#include <stddef.h>
#include <stdint.h>

#include "pipeline/labels.h"
#include "pipeline/volume.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct pipeline_seg_segment {
    int number;                 /* Segment Number */
    char label[65];             /* Segment Label */
    char algorithm_type[17];    /* AUTOMATIC, SEMIAUTOMATIC, MANUAL */
    pipeline_code category, type, modifier; /* modifier.value "" when absent */
    int frames;                 /* frames of this segment in the file */
    /* Set by pipeline_seg_to_labels: */
    int label_value;            /* the label number the segment became (0 = not mapped yet) */
    int match;                  /* PIPELINE_SEG_MATCH_* */
} pipeline_seg_segment;

#define PIPELINE_SEG_MATCH_NONE 0    /* not in the table: a new label number was assigned */
#define PIPELINE_SEG_MATCH_CODE 1    /* Segmented Property Type code (and modifier) in the table */
#define PIPELINE_SEG_MATCH_MEANING 2 /* same code meaning (another scheme, e.g. retired SRT) */
#define PIPELINE_SEG_MATCH_NAME 3    /* Segment Label equal to a table name */

typedef struct pipeline_seg_frame {
    int segment;                /* Referenced Segment Number */
    int has_position;
    double ipp[3];              /* Image Position (Patient), mm LPS */
    double iop[6];              /* per-frame or shared Image Orientation (Patient) */
    double pixel_spacing[2];    /* between rows, between columns; 0 when absent */
    char ref_sop_uid[65];       /* first Source Image reference, "" when none */
    int ref_frame;              /* its Referenced Frame Number, 0 when none */
} pipeline_seg_frame;

typedef struct pipeline_seg {
    int rows, cols, nframes;
    int fractional;             /* 0 BINARY, 1 FRACTIONAL (PROBABILITY or OCCUPANCY) */
    int max_fractional;         /* Maximum Fractional Value (FRACTIONAL), 1 for BINARY */
    char sop_uid[65], series_uid[65], study_uid[65], frame_of_reference_uid[65];
    char referenced_series_uid[65]; /* first item of Referenced Series Sequence, or "" */
    int nsegments;
    pipeline_seg_segment *segments;  /* nsegments, file order; owned */
    pipeline_seg_frame *frames;      /* nframes; owned */
    /* private: the Pixel Data as stored (BINARY packed, FRACTIONAL one byte per pixel) */
    uint8_t *pixels;
    size_t pixel_bytes;
    int frame_padded;           /* BINARY written with each frame padded to a byte boundary
                                   (non-standard; detected from the length) */
} pipeline_seg;

/* Read the SEG at `path` into a new *out (free with pipeline_seg_free). Compressed transfer
 * syntaxes need the codecs registered (pipeline_codecs_register). Errors: SN_EIO (unreadable),
 * SN_EDICOM (not a SEG, malformed, pixel data too short), SN_EUNSUPPORTED (cannot decode),
 * SN_ENOMEM, SN_EINTERNAL; `err` says why. */
int pipeline_seg_read(const char *path, pipeline_seg **out, char *err, size_t errlen);

void pipeline_seg_free(pipeline_seg *seg);  /* NULL accepted */

/* The 0/1 mask of frame f (0-based) into out[rows*cols] (FRACTIONAL thresholded as above). */
void pipeline_seg_frame_mask(const pipeline_seg *seg, int f, uint8_t *out);

typedef struct pipeline_seg_import_report {
    int frames_by_position;     /* frames placed by their Image Position (Patient) */
    int frames_by_reference;    /* frames without a position, placed by their source reference */
    size_t overlap_voxels;      /* voxels claimed by more than one segment */
    int new_labels;             /* segments not in the table (numbers assigned) */
} pipeline_seg_import_report;

/* Place every frame of `seg` on the grid of `grid` (its geometry and per-slice sources only; data
 * is not used) and write the labels into out[grid->nx * ny * nz] (index i + nx*(j + ny*k)).
 * Segments get label numbers from `table` (may be NULL: then every segment is new) by their
 * Segmented Property Type code, else its meaning, else the Segment Label as a table name;
 * others get the smallest free number (not in the table, not yet used) — seg->segments[].
 * label_value / match say which. Overlaps: the higher segment number wins. `report` may be NULL.
 * Errors: SN_EINVAL (in-plane geometry differs, a frame off the grid's slices or outside it, a
 * frame that cannot be placed, more than 65535 labels) naming the frame and both geometries. */
int pipeline_seg_to_labels(pipeline_seg *seg, const pipeline_volume *grid,
                           const pipeline_labels *table, uint16_t *out,
                           pipeline_seg_import_report *report, char *err, size_t errlen);

#ifdef __cplusplus
}
#endif

#endif
