// pipeline/dcmwrite.cc — DCMTK (dcmdata) behind pipeline/dcmwrite.h: one classic single-frame
// CT / MR / PET instance per call, written as Explicit VR Little Endian. Every DCMTK failure
// and exception is turned into an SN_E* status with a message at the extern "C" edge.
#include "pipeline/dcmwrite.h"

extern "C" {
#include "common/status.h"
#include "common/util.h"
}

#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dctk.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <exception>
#include <string>

namespace {

const char *nz(const char *s) { return s ? s : ""; }

std::string fmt_ds(double v)
{
    // DS is at most 16 characters.
    char buf[32];
    for (int prec = 10; prec >= 1; prec--) {
        std::snprintf(buf, sizeof(buf), "%.*g", prec, v);
        if (std::strlen(buf) <= 16)
            break;
    }
    return buf;
}

} // namespace

// Helpers shared with segwrite.cc (declared there; C++ linkage, DCMTK types, not public API).
int pipeline_dcm__put(DcmItem &it, const DcmTagKey &tag, const char *value, std::string &why);
int pipeline_dcm__put_ds(DcmItem &it, const DcmTagKey &tag, double v, std::string &why);
int pipeline_dcm__put_is(DcmItem &it, const DcmTagKey &tag, long v, std::string &why);
int pipeline_dcm__header(DcmItem &ds, const pipeline_dcm_header *h, std::string &why);

int pipeline_dcm__put(DcmItem &it, const DcmTagKey &tag, const char *value, std::string &why)
{
    OFCondition c = it.putAndInsertString(tag, nz(value));
    if (c.bad()) {
        why = std::string("cannot set ") + DcmTag(tag).getTagName() + ": " + c.text();
        return SN_EINTERNAL;
    }
    return 0;
}

int pipeline_dcm__put_ds(DcmItem &it, const DcmTagKey &tag, double v, std::string &why)
{
    return pipeline_dcm__put(it, tag, fmt_ds(v).c_str(), why);
}

int pipeline_dcm__put_is(DcmItem &it, const DcmTagKey &tag, long v, std::string &why)
{
    char buf[32];
    std::snprintf(buf, sizeof(buf), "%ld", v);
    return pipeline_dcm__put(it, tag, buf, why);
}

int pipeline_dcm__header(DcmItem &ds, const pipeline_dcm_header *h, std::string &why)
{
    int rc = 0;
#define P(tag, v) if ((rc = pipeline_dcm__put(ds, tag, v, why))) return rc
    if (!h->study_uid || !sn_uid_valid(h->study_uid) || !h->series_uid ||
        !sn_uid_valid(h->series_uid) || !h->for_uid || !sn_uid_valid(h->for_uid)) {
        why = "study, series and frame-of-reference UIDs must be valid";
        return SN_EINVAL;
    }
    P(DCM_PatientName, h->patient_name);
    P(DCM_PatientID, h->patient_id);
    P(DCM_PatientBirthDate, h->patient_birth_date);
    P(DCM_PatientSex, h->patient_sex);
    if (h->patient_weight_kg > 0 && (rc = pipeline_dcm__put_ds(ds, DCM_PatientWeight, h->patient_weight_kg, why)))
        return rc;
    if (h->patient_size_m > 0 && (rc = pipeline_dcm__put_ds(ds, DCM_PatientSize, h->patient_size_m, why)))
        return rc;
    P(DCM_StudyInstanceUID, h->study_uid);
    P(DCM_StudyDate, h->study_date);
    P(DCM_StudyTime, h->study_time);
    P(DCM_ReferringPhysicianName, h->referring_physician);
    P(DCM_StudyID, h->study_id);
    P(DCM_AccessionNumber, h->accession_number);
    if (h->study_description && *h->study_description)
        P(DCM_StudyDescription, h->study_description);
    P(DCM_Modality, h->modality);
    P(DCM_SeriesInstanceUID, h->series_uid);
    if ((rc = pipeline_dcm__put_is(ds, DCM_SeriesNumber, h->series_number, why)))
        return rc;
    if (h->series_date && *h->series_date)
        P(DCM_SeriesDate, h->series_date);
    if (h->series_time && *h->series_time)
        P(DCM_SeriesTime, h->series_time);
    if (h->series_description && *h->series_description)
        P(DCM_SeriesDescription, h->series_description);
    if (h->body_part && *h->body_part)
        P(DCM_BodyPartExamined, h->body_part);
    P(DCM_FrameOfReferenceUID, h->for_uid);
    P(DCM_PositionReferenceIndicator, "");
    P(DCM_Manufacturer, h->manufacturer);
    if (h->model_name && *h->model_name)
        P(DCM_ManufacturerModelName, h->model_name);
    if (h->device_serial && *h->device_serial)
        P(DCM_DeviceSerialNumber, h->device_serial);
    if (h->software_versions && *h->software_versions)
        P(DCM_SoftwareVersions, h->software_versions);
    if (h->station_name && *h->station_name)
        P(DCM_StationName, h->station_name);
#undef P
    return 0;
}

namespace {

int write_image(const char *path, const pipeline_dcm_header *h, const pipeline_dcm_image *im,
                std::string &why)
{
    if (!path || !h || !im || !im->pixels || im->rows <= 0 || im->cols <= 0 ||
        im->rows > 65535 || im->cols > 65535 || im->bits_stored < 1 || im->bits_stored > 16) {
        why = "missing or invalid argument";
        return SN_EINVAL;
    }
    if (!im->sop_uid || !sn_uid_valid(im->sop_uid)) {
        why = "invalid SOP Instance UID";
        return SN_EINVAL;
    }
    const char *sop_class = nullptr;
    switch (im->kind) {
    case PIPELINE_DCM_CT: sop_class = UID_CTImageStorage; break;
    case PIPELINE_DCM_MR: sop_class = UID_MRImageStorage; break;
    case PIPELINE_DCM_PT: sop_class = UID_PositronEmissionTomographyImageStorage; break;
    }
    if (!sop_class || (im->kind == PIPELINE_DCM_CT && !im->ct) ||
        (im->kind == PIPELINE_DCM_MR && !im->mr) || (im->kind == PIPELINE_DCM_PT && !im->pt)) {
        why = "image kind and its modality-specific attributes do not match";
        return SN_EINVAL;
    }
    DcmFileFormat ff;
    DcmDataset &ds = *ff.getDataset();
    int rc;
#define P(tag, v) if ((rc = pipeline_dcm__put(ds, tag, v, why))) return rc
#define PD(tag, v) if ((rc = pipeline_dcm__put_ds(ds, tag, v, why))) return rc
#define PI(tag, v) if ((rc = pipeline_dcm__put_is(ds, tag, v, why))) return rc
    P(DCM_SOPClassUID, sop_class);
    P(DCM_SOPInstanceUID, im->sop_uid);
    if ((rc = pipeline_dcm__header(ds, h, why)))
        return rc;
    if (im->kind != PIPELINE_DCM_PT)
        P(DCM_PatientPosition, "HFS");

    // General Image, Image Plane
    PI(DCM_InstanceNumber, im->instance_number);
    P(DCM_ImageType, im->image_type);
    P(DCM_ContentDate, im->content_date);
    P(DCM_ContentTime, im->content_time);
    P(DCM_AcquisitionDate, im->acquisition_date);
    P(DCM_AcquisitionTime, im->acquisition_time);
    PI(DCM_AcquisitionNumber, im->acquisition_number);
    P(DCM_BurnedInAnnotation, "NO");
    std::string v = fmt_ds(im->pixel_spacing[0]) + "\\" + fmt_ds(im->pixel_spacing[1]);
    P(DCM_PixelSpacing, v.c_str());
    v.clear();
    for (int i = 0; i < 6; i++)
        v += (i ? "\\" : "") + fmt_ds(std::fabs(im->iop[i]) < 1e-9 ? 0.0 : im->iop[i]);
    P(DCM_ImageOrientationPatient, v.c_str());
    v.clear();
    for (int i = 0; i < 3; i++)
        v += (i ? "\\" : "") + fmt_ds(std::fabs(im->ipp[i]) < 1e-9 ? 0.0 : im->ipp[i]);
    P(DCM_ImagePositionPatient, v.c_str());
    PD(DCM_SliceThickness, im->slice_thickness);
    PD(DCM_SliceLocation, im->slice_location);

    // Image Pixel
    PI(DCM_SamplesPerPixel, 1);
    P(DCM_PhotometricInterpretation, "MONOCHROME2");
    if ((ds.putAndInsertUint16(DCM_Rows, (Uint16)im->rows)).bad() ||
        (ds.putAndInsertUint16(DCM_Columns, (Uint16)im->cols)).bad() ||
        (ds.putAndInsertUint16(DCM_BitsAllocated, 16)).bad() ||
        (ds.putAndInsertUint16(DCM_BitsStored, (Uint16)im->bits_stored)).bad() ||
        (ds.putAndInsertUint16(DCM_HighBit, (Uint16)(im->bits_stored - 1))).bad() ||
        (ds.putAndInsertUint16(DCM_PixelRepresentation, im->pixel_signed ? 1 : 0)).bad()) {
        why = "cannot set Image Pixel attributes";
        return SN_EINTERNAL;
    }
    if (im->window_width > 0) {
        PD(DCM_WindowCenter, im->window_center);
        PD(DCM_WindowWidth, im->window_width);
    }

    if (im->kind == PIPELINE_DCM_CT) {
        const pipeline_dcm_ct *ct = im->ct;
        PD(DCM_RescaleIntercept, im->rescale_intercept);
        PD(DCM_RescaleSlope, im->rescale_slope);
        P(DCM_RescaleType, "HU");
        PD(DCM_KVP, ct->kvp);
        if (ct->tube_current_ma > 0)
            PI(DCM_XRayTubeCurrent, ct->tube_current_ma);
        if (ct->exposure_mas > 0)
            PI(DCM_Exposure, ct->exposure_mas);
        if (ct->convolution_kernel && *ct->convolution_kernel)
            P(DCM_ConvolutionKernel, ct->convolution_kernel);
        if (ct->data_collection_diameter > 0)
            PD(DCM_DataCollectionDiameter, ct->data_collection_diameter);
        if (ct->reconstruction_diameter > 0)
            PD(DCM_ReconstructionDiameter, ct->reconstruction_diameter);
    } else if (im->kind == PIPELINE_DCM_MR) {
        const pipeline_dcm_mr *mr = im->mr;
        P(DCM_ScanningSequence, mr->scanning_sequence);
        P(DCM_SequenceVariant, mr->sequence_variant);
        P(DCM_ScanOptions, mr->scan_options);
        P(DCM_MRAcquisitionType, mr->acquisition_type);
        if (mr->sequence_name && *mr->sequence_name)
            P(DCM_SequenceName, mr->sequence_name);
        PD(DCM_RepetitionTime, mr->repetition_time_ms);
        PD(DCM_EchoTime, mr->echo_time_ms);
        PI(DCM_EchoTrainLength, mr->echo_train_length);
        if (mr->flip_angle_deg > 0)
            PD(DCM_FlipAngle, mr->flip_angle_deg);
        if (mr->field_strength_t > 0)
            PD(DCM_MagneticFieldStrength, mr->field_strength_t);
        if (mr->imaging_frequency_mhz > 0)
            PD(DCM_ImagingFrequency, mr->imaging_frequency_mhz);
        if (mr->imaged_nucleus && *mr->imaged_nucleus)
            P(DCM_ImagedNucleus, mr->imaged_nucleus);
        if (im->spacing_between_slices > 0)
            PD(DCM_SpacingBetweenSlices, im->spacing_between_slices);
    } else {
        const pipeline_dcm_pt *pt = im->pt;
        PD(DCM_RescaleIntercept, 0.0);
        PD(DCM_RescaleSlope, im->rescale_slope);
        P(DCM_Units, pt->units);
        P(DCM_CountsSource, "EMISSION");
        P(DCM_SeriesType, "STATIC\\IMAGE");
        PI(DCM_NumberOfSlices, pt->number_of_slices);
        P(DCM_CorrectedImage, pt->corrected_image);
        P(DCM_DecayCorrection, pt->decay_correction);
        P(DCM_CollimatorType, "NONE");
        if (pt->reconstruction_method && *pt->reconstruction_method)
            P(DCM_ReconstructionMethod, pt->reconstruction_method);
        PD(DCM_FrameReferenceTime, pt->frame_reference_time_ms);
        PI(DCM_ImageIndex, pt->image_index);
        PD(DCM_ActualFrameDuration, pt->frame_duration_ms);
        PD(DCM_DecayFactor, pt->decay_factor);
        // PET Isotope: one radiopharmaceutical item.
        DcmItem *rp = nullptr;
        if (ds.findOrCreateSequenceItem(DCM_RadiopharmaceuticalInformationSequence, rp, 0).bad() || !rp) {
            why = "cannot create Radiopharmaceutical Information Sequence";
            return SN_EINTERNAL;
        }
        if ((rc = pipeline_dcm__put(*rp, DCM_Radiopharmaceutical, pt->radiopharmaceutical, why)) ||
            (rc = pipeline_dcm__put(*rp, DCM_RadiopharmaceuticalStartTime, pt->injection_time, why)) ||
            (rc = pipeline_dcm__put(*rp, DCM_RadiopharmaceuticalStartDateTime, pt->injection_datetime, why)) ||
            (rc = pipeline_dcm__put_ds(*rp, DCM_RadionuclideTotalDose, pt->total_dose_bq, why)) ||
            (rc = pipeline_dcm__put_ds(*rp, DCM_RadionuclideHalfLife, pt->half_life_s, why)) ||
            (rc = pipeline_dcm__put_ds(*rp, DCM_RadionuclidePositronFraction, pt->positron_fraction, why)))
            return rc;
        DcmItem *code = nullptr;
        if (rp->findOrCreateSequenceItem(DCM_RadionuclideCodeSequence, code, 0).bad() || !code ||
            (rc = pipeline_dcm__put(*code, DCM_CodeValue, "77004003", why)) ||
            (rc = pipeline_dcm__put(*code, DCM_CodingSchemeDesignator, "SCT", why)) ||
            (rc = pipeline_dcm__put(*code, DCM_CodeMeaning, "^18^Fluorine", why)))
            return rc ? rc : SN_EINTERNAL;
        code = nullptr;
        if (rp->findOrCreateSequenceItem(DCM_RadiopharmaceuticalCodeSequence, code, 0).bad() || !code ||
            (rc = pipeline_dcm__put(*code, DCM_CodeValue, "35321007", why)) ||
            (rc = pipeline_dcm__put(*code, DCM_CodingSchemeDesignator, "SCT", why)) ||
            (rc = pipeline_dcm__put(*code, DCM_CodeMeaning, "Fluorodeoxyglucose F^18^", why)))
            return rc ? rc : SN_EINTERNAL;
        // NM/PET Patient Orientation: type 2 sequences, present and empty.
        ds.insertEmptyElement(DCM_PatientOrientationCodeSequence);
        ds.insertEmptyElement(DCM_PatientGantryRelationshipCodeSequence);
    }
#undef P
#undef PD
#undef PI

    const unsigned long n = (unsigned long)im->rows * (unsigned long)im->cols;
    OFCondition c = ds.putAndInsertUint16Array(DCM_PixelData, (const Uint16 *)im->pixels, n);
    if (c.bad()) {
        why = std::string("cannot set Pixel Data: ") + c.text();
        return SN_EINTERNAL;
    }
    c = ff.saveFile(path, EXS_LittleEndianExplicit, EET_UndefinedLength, EGL_recalcGL, EPD_noChange);
    if (c.bad()) {
        why = std::string("cannot write ") + path + ": " + c.text();
        return SN_EIO;
    }
    return 0;
}

} // namespace

extern "C" int pipeline_dcm_write_image(const char *path, const pipeline_dcm_header *hdr,
                                        const pipeline_dcm_image *img, char *err, size_t errlen)
{
    std::string why;
    int rc;
    try {
        rc = write_image(path, hdr, img, why);
    } catch (const std::exception &e) {
        return sn_errf(err, errlen, SN_EINTERNAL, "DICOM writer: %s", e.what());
    } catch (...) {
        return sn_errf(err, errlen, SN_EINTERNAL, "DICOM writer: unknown exception");
    }
    if (rc)
        return sn_errf(err, errlen, rc, "%s", why.c_str());
    return 0;
}

extern "C" void pipeline_dcm_hash_uid(const char *text, char out[64])
{
    // Two independent 64-bit FNV-1a style hashes, each finished with a splitmix64 mix.
    unsigned long long a = 1469598103934665603ULL, b = 0x9E3779B97F4A7C15ULL;
    for (const unsigned char *p = (const unsigned char *)text; *p; p++) {
        a = (a ^ *p) * 1099511628211ULL;
        b = (b ^ *p) * 0x100000001B3ULL + 0x632BE59BD9B4E019ULL;
    }
    auto mix = [](unsigned long long z) {
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
        return z ^ (z >> 31);
    };
    unsigned __int128 v = ((unsigned __int128)mix(a) << 64) | mix(b ^ 0xA5A5A5A5A5A5A5A5ULL);
    if (v == 0)
        v = 1;
    char digits[48];
    int n = 0;
    while (v) {
        digits[n++] = (char)('0' + (int)(v % 10));
        v /= 10;
    }
    std::strcpy(out, "2.25.");
    int o = 5;
    while (n)
        out[o++] = digits[--n];
    out[o] = '\0';
}
