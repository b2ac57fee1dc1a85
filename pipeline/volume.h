/* pipeline/volume.h — read a stored DICOM series into a 3D volume in patient coordinates (LPS).
 *
 * A volume is a regular voxel grid: voxel (i, j, k) lies at
 *     origin + i*spacing[0]*col0 + j*spacing[1]*col1 + k*spacing[2]*col2
 * where colN = (direction[N], direction[3+N], direction[6+N]) — i.e. `direction` is a row-major
 * 3x3 matrix whose COLUMNS are the unit vectors of the i, j, k axes in LPS. i runs along a DICOM
 * row (Image Orientation's first vector, column index), j down the columns (its second vector,
 * row index), k along the slice normal (i x j) in increasing position. Values are float32 (int16
 * on request, opts.int16) after the Modality LUT (Rescale Slope/Intercept, per frame), in `unit`.
 *
 * Classic single-frame series are grouped, sorted by Image Position along the normal (never by
 * Instance Number) and their spacing derived from positions; enhanced multi-frame objects (CT, MR,
 * PET, legacy converted) are read from their functional groups. Every transfer syntax a scanner
 * sends is decoded (call pipeline_codecs_register once at start-up; the readers call it too).
 * A series that cannot be a correct volume (inconsistent orientation, duplicates, gaps, tilt,
 * non-uniform spacing, mixed sizes, a single slice, corrupt pixel data, non-image objects) is
 * refused with SN_EDICOM (or SN_EUNSUPPORTED) and a message naming the series and the reason.
 * This is not a resampler: it never interpolates, except to fill gaps when asked to. */
#ifndef SEGNODE_PIPELINE_VOLUME_H
#define SEGNODE_PIPELINE_VOLUME_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Register DCMTK's JPEG, JPEG-LS and RLE decoders and the OpenJPEG-based JPEG 2000 codec
 * (pipeline/codec_j2k.h) with DCMTK's codec list. Idempotent and thread-safe; the codecs stay
 * registered for the life of the process. Returns 0. */
int pipeline_codecs_register(void);

/* Where one slice (k index) of the volume came from. */
typedef struct pipeline_slice_source {
    char sop_instance_uid[65];   /* "" for a slice filled in a gap (opts.fill_gaps) */
    char sop_class_uid[65];
    int frame;                   /* 1-based frame number in a multi-frame object; 0 single-frame */
} pipeline_slice_source;

typedef struct pipeline_volume {
    int nx, ny, nz;              /* columns, rows, slices */
    double spacing[3];           /* mm: column spacing, row spacing, slice spacing */
    double origin[3];            /* LPS mm: centre of voxel (0,0,0) */
    double direction[9];         /* row-major 3x3; columns = unit i, j, k axes in LPS */
    float *data;                 /* nx*ny*nz values, index i + nx*(j + ny*k); owned; NULL when
                                    the values are in data16 */
    int16_t *data16;             /* the same values as int16, same layout, only when asked for
                                    (opts.int16) and exact; else NULL. Owned. Exactly one of
                                    data and data16 is set. */
    char unit[16];               /* "HU", "BQML", "SUVbw", "CNTS", "US" ... or "" if unknown */
    char unit_note[160];         /* why a PET volume is not in SUV, or "" */
    char modality[17];
    char series_uid[65];
    char study_uid[65];
    char frame_of_reference_uid[65];
    char photometric[17];        /* MONOCHROME1 or MONOCHROME2 (values are not inverted) */
    char transfer_syntax[65];    /* of the first source file */
    pipeline_slice_source *slices;  /* nz entries, slice k first; owned */
    int filled_slices;           /* slices made by gap filling (0 unless opts.fill_gaps) */
    /* Timing of the read (for benchmarks): wall time of the whole read, and CPU time summed over
     * worker threads spent decoding pixel data (DCMTK decoders and the J2K codec). */
    double load_ms, decode_ms;
    int threads;                 /* decoding threads used */
} pipeline_volume;

/* Default cap on a volume's voxels: 2^31 (8 GiB as float32), e.g. 1024 x 1024 x 2048 — far
 * above any CT, MR or PET series, low enough that a header claiming 65535 x 65535 x 10^5 is
 * refused rather than tried. */
#define PIPELINE_VOLUME_MAX_VOXELS ((size_t)1 << 31)
/* The most decoded pixel data read from one file (2 GiB): Rows x Columns x Number of Frames x
 * Bits Allocated / 8 above it is refused (SN_EUNSUPPORTED) before any decoder allocates it. */
#define PIPELINE_MAX_PIXEL_BYTES ((size_t)1 << 31)

typedef struct pipeline_volume_opts {
    /* Slice spacing: every step between sorted slices must be within this of the series' step
     * (mm; 0 = default max(0.01 mm, 1% of the step)). */
    double spacing_tolerance;
    /* A step that is a whole multiple (>= 2) of the series' step is a gap (missing slices). 0:
     * refuse the series (default). 1: fill the missing slices by linear interpolation between
     * their neighbours, log a warning and count them in filled_slices; a gap wider than
     * PIPELINE_GEOM_MAX_GAP (8) slices is still refused. */
    int fill_gaps;
    /* Convert PET in BQML to SUV body-weight when the tags allow it (default 1 via
     * pipeline_volume_opts_default). When they do not, the volume stays in BQML and unit_note
     * says why. */
    int pet_suv;
    /* Minimum number of slices; a series with fewer is refused (default 2). 1 lets a single
     * slice through (decoder conformance); its slice spacing is Spacing Between Slices, else
     * Slice Thickness, else 1. */
    int min_slices;
    /* Decoding threads (0 = every online CPU). */
    int threads;
    /* 1: deliver the values in data16 (data NULL) when every one is an integer in int16 range
     * and the Modality LUT of every slice is integral (whole Rescale Slope and Intercept, no SUV
     * scaling, no filled gaps): half the memory and no float round trip, for writers of integer
     * formats. Otherwise, or with 0 (default), data as float32. */
    int int16;
    /* The largest grid read, in voxels (0 = PIPELINE_VOLUME_MAX_VOXELS); a larger series is
     * refused with SN_EUNSUPPORTED before its grid is allocated. */
    size_t max_voxels;
    /* pipeline_volume_read_dir: the series to read when the folder holds several ("" or NULL =
     * the folder must hold exactly one image series). Borrowed. */
    const char *series_uid;
} pipeline_volume_opts;

/* Fill `opts` with the defaults above. */
void pipeline_volume_opts_default(pipeline_volume_opts *opts);

/* Read the files `paths[0..n-1]` (one series; other series' files, if any, are an error unless
 * opts->series_uid picks one) into a new volume *out (free with pipeline_volume_free).
 * `opts` may be NULL (defaults). Errors: SN_EINVAL (no files), SN_EIO (unreadable file),
 * SN_EDICOM (not a usable image series: err names the series and the reason), SN_EUNSUPPORTED
 * (colour, 4D, ...), SN_ENOMEM, SN_EINTERNAL (a library failed unexpectedly). On error *out is
 * NULL. Thread-safe: independent calls may run concurrently. */
int pipeline_volume_read_files(const char *const *paths, int n, const pipeline_volume_opts *opts,
                               pipeline_volume **out, char *err, size_t errlen);

/* Same for every DICOM file under `dir` (recursive; files that are not DICOM are ignored; DICOM
 * objects of other series are ignored when opts->series_uid is set, else they are an error). */
int pipeline_volume_read_dir(const char *dir, const pipeline_volume_opts *opts,
                             pipeline_volume **out, char *err, size_t errlen);

/* Free a volume; accepts NULL. */
void pipeline_volume_free(pipeline_volume *vol);

/* ---- raw frames (decoder conformance, SEG import) ------------------------------------------- */

/* The stored pixel values of one DICOM file, decoded, masked to Bits Stored and sign-extended
 * (no Modality LUT). */
typedef struct pipeline_frames {
    int rows, cols, frames, samples;   /* samples per pixel (1 for the images this node reads) */
    int bits_allocated, bits_stored, pixel_representation;
    char transfer_syntax[65];
    int32_t *values;                   /* frames*rows*cols*samples, frame-major; owned */
} pipeline_frames;

/* Decode every frame of the file at `path` into a new *out (free with pipeline_frames_free).
 * Errors as pipeline_volume_read_files; truncated or corrupt pixel data is SN_EDICOM, more than
 * PIPELINE_MAX_PIXEL_BYTES of values (int32) SN_EUNSUPPORTED. */
int pipeline_frames_read(const char *path, pipeline_frames **out, char *err, size_t errlen);
void pipeline_frames_free(pipeline_frames *f);

#ifdef __cplusplus
}
#endif

#endif
