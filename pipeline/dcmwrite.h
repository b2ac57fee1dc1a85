/* pipeline/dcmwrite.h — write classic single-frame CT, MR and PET image instances (and carry the
 * patient/study/series/frame-of-reference header shared with the SEG writer, segwrite.h).
 * A plain C surface over DCMTK (dcmwrite.cc); no DCMTK type crosses this header. Strings are
 * borrowed, NUL-terminated, and written as given (callers pass valid DICOM values; UIDs are
 * checked). It does not read DICOM and does not compress (Explicit VR Little Endian). */
#ifndef SEGNODE_PIPELINE_DCMWRITE_H
#define SEGNODE_PIPELINE_DCMWRITE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Patient / study / series / frame-of-reference / equipment attributes of one series.
 * NULL or "" strings are written as empty (type 2) or omitted (type 3). */
typedef struct pipeline_dcm_header {
    /* Patient */
    const char *patient_name, *patient_id, *patient_birth_date, *patient_sex; /* sex: M/F/O */
    double patient_weight_kg;  /* 0: omitted (PET SUV needs it) */
    double patient_size_m;     /* 0: omitted */
    /* Study */
    const char *study_uid, *study_id, *study_date, *study_time, *accession_number,
        *study_description, *referring_physician;
    /* Series */
    const char *modality;      /* "CT", "MR", "PT", "SEG" */
    const char *series_uid, *series_description, *series_date, *series_time, *body_part;
    int series_number;
    /* Frame of reference */
    const char *for_uid;
    /* Equipment */
    const char *manufacturer, *model_name, *device_serial, *software_versions, *station_name;
} pipeline_dcm_header;

typedef enum pipeline_dcm_kind {
    PIPELINE_DCM_CT = 1,  /* CT Image Storage (also for CBCT from C-arm systems) */
    PIPELINE_DCM_MR = 2,  /* MR Image Storage */
    PIPELINE_DCM_PT = 3   /* Positron Emission Tomography Image Storage */
} pipeline_dcm_kind;

/* CT-specific attributes (CT Image module). */
typedef struct pipeline_dcm_ct {
    double kvp;                  /* kV */
    int tube_current_ma;         /* 0: omitted */
    int exposure_mas;            /* 0: omitted */
    const char *convolution_kernel;
    double data_collection_diameter, reconstruction_diameter; /* mm; 0: omitted */
} pipeline_dcm_ct;

/* MR-specific attributes (MR Image module). */
typedef struct pipeline_dcm_mr {
    const char *scanning_sequence;  /* e.g. "SE" */
    const char *sequence_variant;   /* e.g. "SP" or "NONE" */
    const char *scan_options;       /* may be "" */
    const char *acquisition_type;   /* "2D" | "3D" */
    const char *sequence_name;      /* may be NULL */
    double repetition_time_ms, echo_time_ms, flip_angle_deg;
    int echo_train_length;
    double field_strength_t, imaging_frequency_mhz;
    const char *imaged_nucleus;     /* "1H" */
} pipeline_dcm_mr;

/* PET-specific attributes (PET Series, PET Isotope, PET Image modules). Values must make
 * Rescale Slope/Intercept yield Bq/ml (units "BQML"), so SUV = value * weight / decayed dose. */
typedef struct pipeline_dcm_pt {
    const char *units;              /* "BQML" */
    const char *corrected_image;    /* e.g. "DECY\\ATTN\\SCAT\\DTIM\\RAN\\NORM" */
    const char *decay_correction;   /* "START" */
    const char *radiopharmaceutical;/* "Fluorodeoxyglucose" */
    const char *injection_datetime; /* Radiopharmaceutical Start DateTime, YYYYMMDDHHMMSS */
    const char *injection_time;     /* Radiopharmaceutical Start Time, HHMMSS */
    double total_dose_bq, half_life_s, positron_fraction;
    double frame_duration_ms;       /* Actual Frame Duration */
    double decay_factor;            /* Decay Factor for this image */
    double frame_reference_time_ms;
    int number_of_slices;
    int image_index;                /* 1-based */
    const char *reconstruction_method;
} pipeline_dcm_pt;

/* One classic single-frame image. Geometry as in PS3.3 C.7.6.2: ipp = centre of the first
 * transmitted pixel (mm, LPS), iop = row direction cosines then column direction cosines,
 * pixel_spacing = {between rows (mm), between columns (mm)}. Pixels rows*cols, row-major,
 * 16 bits: int16 when pixel_signed, else uint16; bits_stored <= 16. */
typedef struct pipeline_dcm_image {
    pipeline_dcm_kind kind;
    const char *sop_uid;
    int instance_number;
    const char *image_type;        /* e.g. "ORIGINAL\\PRIMARY\\AXIAL" */
    const char *content_date, *content_time, *acquisition_date, *acquisition_time;
    int acquisition_number;
    int rows, cols;
    double pixel_spacing[2];
    double slice_thickness, spacing_between_slices; /* spacing 0: omitted */
    double ipp[3], iop[6];
    double slice_location;
    const void *pixels;
    int pixel_signed, bits_stored;
    double rescale_slope, rescale_intercept;  /* MR: slope 0 omits the rescale attributes */
    double window_center, window_width;       /* width 0: omitted */
    const pipeline_dcm_ct *ct;  /* required for CT, ignored otherwise */
    const pipeline_dcm_mr *mr;  /* required for MR */
    const pipeline_dcm_pt *pt;  /* required for PT */
} pipeline_dcm_image;

/* Write one instance to `path` (created or replaced). Returns 0, SN_EINVAL (missing/invalid
 * argument, bad UID), SN_EIO (write failed), SN_EINTERNAL (DCMTK failure or exception); `err`
 * says why. Thread-safe: instances may be written from several threads at once. */
int pipeline_dcm_write_image(const char *path, const pipeline_dcm_header *hdr,
                             const pipeline_dcm_image *img, char *err, size_t errlen);

/* A deterministic UID "2.25.<decimal of a 128-bit hash>" of `text` (PS3.5 B.2: UUID-derived
 * form, no registration needed). out must hold 64 bytes. Same text, same UID. */
void pipeline_dcm_hash_uid(const char *text, char out[64]);

#ifdef __cplusplus
}
#endif

#endif
