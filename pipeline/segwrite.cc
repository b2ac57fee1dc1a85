// pipeline/segwrite.cc — DCMTK dcmseg behind pipeline/segwrite.h. dcmseg builds the SEG
// structure (segments, shared and per-frame functional groups, dimensions); afterwards this file
// replaces Pixel Data with its own packing (DCMTK 3.6.7 bug, issue 1132), adds the Referenced
// Series Sequence (dciodvfy requires it) and sets the header, UIDs and dates so that the same
// input gives the same bytes. Exceptions and OFCondition become SN_E* at the extern "C" edge.
#include "pipeline/segwrite.h"

extern "C" {
#include "common/status.h"
#include "common/util.h"
}

#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dctk.h>
#include <dcmtk/oflog/oflog.h>
#include <dcmtk/dcmfg/fgderimg.h>
#include <dcmtk/dcmfg/fgfracon.h>
#include <dcmtk/dcmfg/fgpixmsr.h>
#include <dcmtk/dcmfg/fgplanor.h>
#include <dcmtk/dcmfg/fgplanpo.h>
#include <dcmtk/dcmiod/iodmacro.h>
#include <dcmtk/dcmseg/segdoc.h>
#include <dcmtk/dcmseg/segment.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <exception>
#include <memory>
#include <string>
#include <vector>

// Shared with dcmwrite.cc (defined there).
int pipeline_dcm__put(DcmItem &it, const DcmTagKey &tag, const char *value, std::string &why);
int pipeline_dcm__put_ds(DcmItem &it, const DcmTagKey &tag, double v, std::string &why);
int pipeline_dcm__put_is(DcmItem &it, const DcmTagKey &tag, long v, std::string &why);
int pipeline_dcm__header(DcmItem &ds, const pipeline_dcm_header *h, std::string &why);

extern "C" void pipeline_seg_pack_bits(const uint8_t *values, size_t nbits, uint8_t *out)
{
    std::memset(out, 0, (nbits + 7) / 8);
    for (size_t i = 0; i < nbits; i++)
        if (values[i])
            out[i >> 3] |= (uint8_t)(1u << (i & 7));
}

namespace {

std::string ds(double v)
{
    char buf[32];
    for (int prec = 10; prec >= 1; prec--) {
        std::snprintf(buf, sizeof(buf), "%.*g", prec, std::fabs(v) < 1e-9 ? 0.0 : v);
        if (std::strlen(buf) <= 16)
            break;
    }
    return buf;
}

int cond(OFCondition c, const char *what, std::string &why)
{
    if (c.good())
        return 0;
    why = std::string(what) + ": " + c.text();
    return SN_EINTERNAL;
}

struct frame_ref {
    int label;
    int slice;
};

int write_seg(const char *path, const pipeline_dcm_header *hdr, const pipeline_seg_source *src,
              const uint8_t *labels, const pipeline_labels *table, const pipeline_seg_options *opt,
              std::string &why)
{
    if (!path || !hdr || !src || !labels || !table || !opt || src->cols <= 0 || src->rows <= 0 ||
        src->slices <= 0 || src->cols > 65535 || src->rows > 65535 || !src->sop_uids ||
        !(src->slice_spacing > 0) || !opt->content_date || !opt->content_time) {
        why = "missing or invalid argument";
        return SN_EINVAL;
    }
    if (!opt->sop_uid || !sn_uid_valid(opt->sop_uid) || !src->series_uid ||
        !sn_uid_valid(src->series_uid) || !src->sop_class_uid || !sn_uid_valid(src->sop_class_uid)) {
        why = "invalid SEG SOP Instance UID or source series / SOP class UID";
        return SN_EINVAL;
    }
    for (int k = 0; k < src->slices; k++)
        if (!src->sop_uids[k] || !sn_uid_valid(src->sop_uids[k])) {
            why = "invalid source SOP Instance UID for slice " + std::to_string(k);
            return SN_EINVAL;
        }
    if (!opt->manual && (!opt->algorithm_name || !*opt->algorithm_name)) {
        why = "an AUTOMATIC segmentation needs an algorithm name";
        return SN_EINVAL;
    }
    const size_t plane = (size_t)src->cols * (size_t)src->rows;
    // Which labels occur in which slices.
    std::vector<std::vector<char>> present(256, std::vector<char>());
    for (int k = 0; k < src->slices; k++) {
        const uint8_t *p = labels + plane * (size_t)k;
        for (size_t i = 0; i < plane; i++) {
            if (p[i]) {
                if (present[p[i]].empty())
                    present[p[i]].assign((size_t)src->slices, 0);
                present[p[i]][(size_t)k] = 1;
            }
        }
    }
    std::vector<const pipeline_label *> segs;
    for (int v = 1; v < 256; v++) {
        if (present[v].empty())
            continue;
        const pipeline_label *l = pipeline_labels_by_number(table, v);
        if (!l) {
            why = "label value " + std::to_string(v) + " is not in the label table";
            return SN_EINVAL;
        }
        segs.push_back(l);
    }
    if (segs.empty()) {
        why = "the label volume is empty";
        return SN_EINVAL;
    }

    IODGeneralEquipmentModule::EquipmentInfo eq(
        hdr->manufacturer && *hdr->manufacturer ? hdr->manufacturer : "segnode",
        hdr->model_name && *hdr->model_name ? hdr->model_name : "segnode",
        hdr->device_serial && *hdr->device_serial ? hdr->device_serial : "0",
        hdr->software_versions && *hdr->software_versions ? hdr->software_versions : SEGNODE_VERSION);
    ContentIdentificationMacro ci;
    int rc;
    if ((rc = cond(ci.setInstanceNumber(std::to_string(opt->instance_number).c_str()), "Instance Number", why)) ||
        (rc = cond(ci.setContentLabel(opt->content_label ? opt->content_label : "SEGMENTATION"), "Content Label", why)) ||
        (rc = cond(ci.setContentDescription(opt->content_description ? opt->content_description : ""), "Content Description", why)) ||
        (rc = cond(ci.setContentCreatorName(opt->content_creator ? opt->content_creator : ""), "Content Creator", why)))
        return rc;
    // dcmiod/dcmfg warn on stderr about checks we skip on purpose (validated by dciodvfy).
    static const bool quiet = [] {
        OFLog::getLogger("dcmtk.dcmiod").setLogLevel(OFLogger::ERROR_LOG_LEVEL);
        OFLog::getLogger("dcmtk.dcmfg").setLogLevel(OFLogger::ERROR_LOG_LEVEL);
        OFLog::getLogger("dcmtk.dcmseg").setLogLevel(OFLogger::ERROR_LOG_LEVEL);
        return true;
    }();
    (void)quiet;
    DcmSegmentation *raw = nullptr;
    if ((rc = cond(DcmSegmentation::createBinarySegmentation(raw, (Uint16)src->rows, (Uint16)src->cols, eq, ci),
                   "cannot create segmentation", why)))
        return rc;
    std::unique_ptr<DcmSegmentation> seg(raw);
    seg->setCheckFGOnWrite(OFFalse);
    if ((rc = cond(seg->getSOPCommon().setSOPInstanceUID(opt->sop_uid), "SOP Instance UID", why)) ||
        (rc = cond(seg->getSeries().setSeriesInstanceUID(hdr->series_uid), "Series Instance UID", why)) ||
        (rc = cond(seg->getSeries().setSeriesNumber(std::to_string(hdr->series_number).c_str()), "Series Number", why)) ||
        (rc = cond(seg->getStudy().setStudyInstanceUID(hdr->study_uid), "Study Instance UID", why)) ||
        (rc = cond(seg->getFrameOfReference().setFrameOfReferenceUID(hdr->for_uid), "FoR UID", why)))
        return rc;

    // Segments.
    const DcmSegTypes::E_SegmentAlgoType algo = opt->manual ? DcmSegTypes::SAT_MANUAL : DcmSegTypes::SAT_AUTOMATIC;
    std::vector<Uint16> segno(256, 0);
    for (const pipeline_label *l : segs) {
        CodeSequenceMacro cat(l->category.value, l->category.scheme, l->category.meaning);
        CodeSequenceMacro typ(l->type.value, l->type.scheme, l->type.meaning);
        DcmSegment *s = nullptr;
        if ((rc = cond(DcmSegment::create(s, l->name, cat, typ, algo, opt->manual ? "" : opt->algorithm_name),
                       "cannot create segment", why)))
            return rc;
        std::unique_ptr<DcmSegment> sp(s);
        if (l->modifier.value[0])
            s->getSegmentedPropertyTypeModifierCode().push_back(
                new CodeSequenceMacro(l->modifier.value, l->modifier.scheme, l->modifier.meaning));
        unsigned short lab[3];
        pipeline_labels_rgb_to_dicom_lab(l->rgb, lab);
        if ((rc = cond(s->setRecommendedDisplayCIELabValue(lab[0], lab[1], lab[2]), "CIELab", why)))
            return rc;
        Uint16 n = 0;
        if ((rc = cond(seg->addSegment(s, n), "cannot add segment", why)))
            return rc;
        sp.release(); // owned by seg now
        segno[(size_t)l->number] = n;
    }

    // Shared functional groups: pixel measures and orientation.
    FGPixelMeasures pm;
    FGPlaneOrientationPatient po;
    const double *o = src->iop;
    if ((rc = cond(pm.setPixelSpacing((ds(src->pixel_spacing[0]) + "\\" + ds(src->pixel_spacing[1])).c_str()), "Pixel Spacing", why)) ||
        (rc = cond(pm.setSliceThickness(ds(src->slice_thickness).c_str()), "Slice Thickness", why)) ||
        (rc = cond(pm.setSpacingBetweenSlices(ds(src->slice_spacing).c_str()), "Spacing Between Slices", why)) ||
        (rc = cond(po.setImageOrientationPatient(ds(o[0]).c_str(), ds(o[1]).c_str(), ds(o[2]).c_str(),
                                                 ds(o[3]).c_str(), ds(o[4]).c_str(), ds(o[5]).c_str()), "IOP", why)) ||
        (rc = cond(seg->addForAllFrames(pm), "shared Pixel Measures", why)) ||
        (rc = cond(seg->addForAllFrames(po), "shared Plane Orientation", why)))
        return rc;

    // Dimensions: segment number, then position along the normal.
    char dim_text[160];
    std::snprintf(dim_text, sizeof(dim_text), "dimension-organization:%s", opt->sop_uid);
    char dim_uid[64];
    pipeline_dcm_hash_uid(dim_text, dim_uid);
    IODMultiframeDimensionModule &dims = seg->getDimensions();
    if ((rc = cond(dims.addDimensionIndex(DCM_ReferencedSegmentNumber, dim_uid, DCM_SegmentIdentificationSequence,
                                          "ReferencedSegmentNumber"), "dimension index", why)) ||
        (rc = cond(dims.addDimensionIndex(DCM_ImagePositionPatient, dim_uid, DCM_PlanePositionSequence,
                                          "ImagePositionPatient"), "dimension index", why)))
        return rc;

    const double nrm[3] = {o[1] * o[5] - o[2] * o[4], o[2] * o[3] - o[0] * o[5], o[0] * o[4] - o[1] * o[3]};
    std::vector<frame_ref> frames;
    std::vector<Uint8> buf(plane);
    for (const pipeline_label *l : segs) {
        const int v = l->number;
        for (int k = 0; k < src->slices; k++) {
            if (!present[(size_t)v][(size_t)k])
                continue;
            const uint8_t *p = labels + plane * (size_t)k;
            for (size_t i = 0; i < plane; i++)
                buf[i] = p[i] == v ? 1 : 0;
            FGPlanePosPatient pp;
            double x[3];
            for (int a = 0; a < 3; a++)
                x[a] = src->origin[a] + k * src->slice_spacing * nrm[a];
            FGFrameContent fc;
            ImageSOPInstanceReferenceMacro ref;
            if ((rc = cond(pp.setImagePositionPatient(ds(x[0]).c_str(), ds(x[1]).c_str(), ds(x[2]).c_str()), "IPP", why)) ||
                (rc = cond(fc.setDimensionIndexValues(segno[(size_t)v], 0), "dimension index values", why)) ||
                (rc = cond(fc.setDimensionIndexValues((Uint32)k + 1, 1), "dimension index values", why)) ||
                (rc = cond(ref.setReferencedSOPClassUID(src->sop_class_uid), "Referenced SOP Class", why)) ||
                (rc = cond(ref.setReferencedSOPInstanceUID(src->sop_uids[k]), "Referenced SOP Instance", why)))
                return rc;
            OFVector<ImageSOPInstanceReferenceMacro> refs;
            refs.push_back(ref);
            std::unique_ptr<FGDerivationImage> der(DcmSegmentation::createDerivationImageFG(refs, "Ground truth label rendered on the source grid"));
            if (!der) {
                why = "cannot create Derivation Image functional group";
                return SN_EINTERNAL;
            }
            OFVector<FGBase *> per;
            per.push_back(&pp);
            per.push_back(&fc);
            per.push_back(der.get());
            if ((rc = cond(seg->addFrame(buf.data(), segno[(size_t)v], per), "cannot add frame", why)))
                return rc;
            frames.push_back({v, k});
        }
    }

    DcmFileFormat ff;
    DcmDataset &out = *ff.getDataset();
    if ((rc = cond(seg->writeDataset(out), "cannot build SEG dataset", why)))
        return rc;

    // Header (patient/study/series/FoR/equipment) exactly as given; SEG modality.
    pipeline_dcm_header h = *hdr;
    h.modality = "SEG";
    if ((rc = pipeline_dcm__header(out, &h, why)))
        return rc;
    if ((rc = pipeline_dcm__put(out, DCM_SOPInstanceUID, opt->sop_uid, why)) ||
        (rc = pipeline_dcm__put(out, DCM_ContentDate, opt->content_date, why)) ||
        (rc = pipeline_dcm__put(out, DCM_ContentTime, opt->content_time, why)) ||
        (rc = pipeline_dcm__put(out, DCM_InstanceCreationDate, opt->content_date, why)) ||
        (rc = pipeline_dcm__put(out, DCM_InstanceCreationTime, opt->content_time, why)))
        return rc;
    out.findAndDeleteElement(DCM_SeriesDate);
    out.findAndDeleteElement(DCM_SeriesTime);
    if (hdr->series_date && *hdr->series_date)
        pipeline_dcm__put(out, DCM_SeriesDate, hdr->series_date, why);
    if (hdr->series_time && *hdr->series_time)
        pipeline_dcm__put(out, DCM_SeriesTime, hdr->series_time, why);

    // Referenced Series Sequence (Common Instance Reference module): every source instance.
    out.findAndDeleteElement(DCM_ReferencedSeriesSequence);
    DcmItem *rs = nullptr;
    if ((rc = cond(out.findOrCreateSequenceItem(DCM_ReferencedSeriesSequence, rs, 0), "Referenced Series Sequence", why)) ||
        (rc = pipeline_dcm__put(*rs, DCM_SeriesInstanceUID, src->series_uid, why)))
        return rc;
    for (int k = 0; k < src->slices; k++) {
        DcmItem *ri = nullptr;
        if ((rc = cond(rs->findOrCreateSequenceItem(DCM_ReferencedInstanceSequence, ri, -2), "Referenced Instance Sequence", why)) ||
            (rc = pipeline_dcm__put(*ri, DCM_ReferencedSOPClassUID, src->sop_class_uid, why)) ||
            (rc = pipeline_dcm__put(*ri, DCM_ReferencedSOPInstanceUID, src->sop_uids[k], why)))
            return rc;
    }

    // Pixel Data, packed here: frames contiguous, first pixel in the least significant bit.
    const size_t nbits = plane * frames.size();
    size_t nbytes = (nbits + 7) / 8;
    std::vector<Uint8> packed(nbytes + (nbytes & 1), 0);
    size_t bit = 0;
    for (const frame_ref &f : frames) {
        const uint8_t *p = labels + plane * (size_t)f.slice;
        for (size_t i = 0; i < plane; i++, bit++)
            if (p[i] == f.label)
                packed[bit >> 3] |= (Uint8)(1u << (bit & 7));
    }
    out.findAndDeleteElement(DCM_PixelData);
    if ((rc = cond(out.putAndInsertUint8Array(DCM_PixelData, packed.data(), (unsigned long)packed.size()), "Pixel Data", why)) ||
        (rc = pipeline_dcm__put_is(out, DCM_NumberOfFrames, (long)frames.size(), why)))
        return rc;

    OFCondition c = ff.saveFile(path, EXS_LittleEndianExplicit, EET_UndefinedLength, EGL_recalcGL, EPD_noChange);
    if (c.bad()) {
        why = std::string("cannot write ") + path + ": " + c.text();
        return SN_EIO;
    }
    return 0;
}

} // namespace

extern "C" int pipeline_seg_write(const char *path, const pipeline_dcm_header *hdr,
                                  const pipeline_seg_source *src, const uint8_t *labels,
                                  const pipeline_labels *table, const pipeline_seg_options *opt,
                                  char *err, size_t errlen)
{
    std::string why;
    int rc;
    try {
        rc = write_seg(path, hdr, src, labels, table, opt, why);
    } catch (const std::bad_alloc &) {
        return sn_errf(err, errlen, SN_ENOMEM, "SEG writer: out of memory");
    } catch (const std::exception &e) {
        return sn_errf(err, errlen, SN_EINTERNAL, "SEG writer: %s", e.what());
    } catch (...) {
        return sn_errf(err, errlen, SN_EINTERNAL, "SEG writer: unknown exception");
    }
    if (rc)
        return sn_errf(err, errlen, rc, "SEG: %s", why.c_str());
    return 0;
}
