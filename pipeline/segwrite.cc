// pipeline/segwrite.cc — DCMTK dcmseg behind pipeline/segwrite.h. dcmseg builds the SEG
// structure (segments, shared and per-frame functional groups, dimensions); afterwards this file
// replaces Pixel Data with its own packing (DCMTK 3.6.7 bug, issue 1132), adds the Referenced
// Series Sequence (dciodvfy requires it), the Segmentation Algorithm Identification and the
// Contributing Equipment, and sets the header and UIDs. One core (build_seg) serves the product
// writer (source = pipeline_volume + a file of the series) and the phantom's low-level writer.
// Exceptions and OFCondition become SN_E* at the extern "C" edge.
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

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <exception>
#include <memory>
#include <string>
#include <unordered_set>
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

extern "C" void pipeline_seg_new_uid(char out[64])
{
    unsigned char rnd[16] = {0};
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    ssize_t got = fd >= 0 ? read(fd, rnd, sizeof rnd) : -1;
    if (fd >= 0)
        close(fd);
    char text[128];
    int n = std::snprintf(text, sizeof text, "segnode-uid:%ld:%ld:", (long)getpid(), (long)sn_now_ms());
    for (size_t i = 0; i < sizeof rnd && n + 2 < (int)sizeof text; i++)
        n += std::snprintf(text + n, sizeof text - (size_t)n, "%02x", rnd[i]);
    static unsigned long counter = 0; // distinguishes calls in the same ms if urandom failed
    if (got != (ssize_t)sizeof rnd)
        std::snprintf(text + n, sizeof text - (size_t)n, ":%lu:%p", __atomic_add_fetch(&counter, 1, __ATOMIC_RELAXED), (void *)&got);
    pipeline_dcm_hash_uid(text, out);
}

extern "C" void pipeline_seg_write_opts_default(pipeline_seg_write_opts *o)
{
    std::memset(o, 0, sizeof *o);
    o->series_number = 900;
    o->instance_number = 1;
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

void quiet_dcmtk()
{
    // dcmiod/dcmfg warn on stderr about checks we skip on purpose (validated by dciodvfy).
    static const bool quiet = [] {
        OFLog::getLogger("dcmtk.dcmiod").setLogLevel(OFLogger::ERROR_LOG_LEVEL);
        OFLog::getLogger("dcmtk.dcmfg").setLogLevel(OFLogger::ERROR_LOG_LEVEL);
        OFLog::getLogger("dcmtk.dcmseg").setLogLevel(OFLogger::ERROR_LOG_LEVEL);
        return true;
    }();
    (void)quiet;
}

// Everything the core needs, independent of where it came from.
struct core_in {
    int cols = 0, rows = 0, slices = 0;
    std::vector<std::array<double, 3>> pos; // IPP of each slice
    double iop[6] = {0};
    double ps[2] = {0};                     // between rows, between columns
    double thickness = 0, spacing = 0;
    std::string src_series_uid;
    std::vector<std::string> sop_class, sop_uid; // per slice
    std::vector<int> frame;                      // per slice, 0 = single-frame
    const void *labels = nullptr;
    int bpv = 1;
    const pipeline_labels *table = nullptr;
    bool keep_empty = false;
    bool plain = false;                     // benchmark: checks on, DCMTK packer
    bool manual = false;
    std::string algo_name, algo_version;    // version "" = no Algorithm Identification
    pipeline_code family{};
    std::string derivation_desc;
    std::string sop_uid_seg, series_uid_seg;
    std::string series_number = "1";
    std::string instance_number, content_label, content_description, content_creator;
    std::string manufacturer, model, serial, software;
};

struct core_out {
    int segments = 0, frames = 0, omitted = 0;
    size_t bytes = 0;
};

inline unsigned lab_at(const core_in &c, size_t idx)
{
    return c.bpv == 1 ? ((const uint8_t *)c.labels)[idx] : ((const uint16_t *)c.labels)[idx];
}

int put_code(DcmItem &it, const DcmTagKey &seq, const pipeline_code &code, std::string &why)
{
    DcmItem *ci = nullptr;
    int rc;
    if ((rc = cond(it.findOrCreateSequenceItem(seq, ci, 0), "code sequence", why)) ||
        (rc = pipeline_dcm__put(*ci, DCM_CodeValue, code.value, why)) ||
        (rc = pipeline_dcm__put(*ci, DCM_CodingSchemeDesignator, code.scheme, why)) ||
        (rc = pipeline_dcm__put(*ci, DCM_CodeMeaning, code.meaning, why)))
        return rc;
    return 0;
}

// Append n 0/1 bytes to a zeroed bit stream at bit offset `bit` (LSB first).
void pack_append(Uint8 *out, size_t bit, const Uint8 *v, size_t n)
{
    size_t i = 0;
    for (; i < n && ((bit + i) & 7); i++)
        if (v[i])
            out[(bit + i) >> 3] |= (Uint8)(1u << ((bit + i) & 7));
    Uint8 *o = out + ((bit + i) >> 3);
    for (; i + 8 <= n; i += 8, o++)
        *o = (Uint8)(v[i] | v[i + 1] << 1 | v[i + 2] << 2 | v[i + 3] << 3 | v[i + 4] << 4 | v[i + 5] << 5 |
                     v[i + 6] << 6 | v[i + 7] << 7);
    for (; i < n; i++)
        if (v[i])
            out[(bit + i) >> 3] |= (Uint8)(1u << ((bit + i) & 7));
}

// Build the SEG dataset into `ff` (everything except the patient/study header).
int build_seg(const core_in &c, DcmFileFormat &ff, core_out &out, std::string &why)
{
    const size_t plane = (size_t)c.cols * (size_t)c.rows;
    const int S = c.slices;
    // Which labels occur in which slices: slot[v] indexes pres (one flag per slice).
    std::vector<int> slot(c.bpv == 1 ? 256 : 65536, -1);
    std::vector<std::vector<char>> pres;
    std::vector<unsigned> values;
    for (int k = 0; k < S; k++) {
        const size_t base = plane * (size_t)k;
        unsigned last = 0;
        for (size_t i = 0; i < plane; i++) {
            unsigned v = lab_at(c, base + i);
            if (!v || v == last)
                continue;
            last = v;
            int s = slot[v];
            if (s < 0) {
                s = slot[v] = (int)pres.size();
                pres.emplace_back((size_t)S, (char)0);
                values.push_back(v);
            }
            pres[(size_t)s][(size_t)k] = 1;
        }
    }
    if (values.empty()) {
        why = "the label volume is empty (no non-zero voxel)";
        return SN_EINVAL;
    }
    std::vector<unsigned> sorted;
    for (size_t v = 1; v < slot.size(); v++)
        if (slot[v] >= 0)
            sorted.push_back((unsigned)v);
    std::string unknown;
    std::vector<const pipeline_label *> segs;
    for (unsigned v : sorted) {
        const pipeline_label *l = v <= PIPELINE_LABELS_MAX ? pipeline_labels_by_number(c.table, (int)v) : nullptr;
        if (!l) {
            unknown += (unknown.empty() ? "" : ", ") + std::to_string(v);
            continue;
        }
        segs.push_back(l);
    }
    if (!unknown.empty()) {
        why = "label value " + unknown + (unknown.find(',') == std::string::npos ? " is" : " are") +
              " not in the label table (no code to write)";
        return SN_EINVAL;
    }

    IODGeneralEquipmentModule::EquipmentInfo eq(c.manufacturer.c_str(), c.model.c_str(), c.serial.c_str(),
                                                c.software.c_str());
    ContentIdentificationMacro ci;
    int rc;
    if ((rc = cond(ci.setInstanceNumber(c.instance_number.c_str()), "Instance Number", why)) ||
        (rc = cond(ci.setContentLabel(c.content_label.c_str()), "Content Label", why)) ||
        (rc = cond(ci.setContentDescription(c.content_description.c_str()), "Content Description", why)) ||
        (rc = cond(ci.setContentCreatorName(c.content_creator.c_str()), "Content Creator", why)))
        return rc;
    quiet_dcmtk();
    DcmSegmentation *raw = nullptr;
    if ((rc = cond(DcmSegmentation::createBinarySegmentation(raw, (Uint16)c.rows, (Uint16)c.cols, eq, ci),
                   "cannot create segmentation", why)))
        return rc;
    std::unique_ptr<DcmSegmentation> seg(raw);
    seg->setCheckFGOnWrite(c.plain ? OFTrue : OFFalse);
    if ((rc = cond(seg->getSOPCommon().setSOPInstanceUID(c.sop_uid_seg.c_str()), "SOP Instance UID", why)) ||
        (rc = cond(seg->getSeries().setSeriesInstanceUID(c.series_uid_seg.c_str()), "Series Instance UID", why)) ||
        (rc = cond(seg->getSeries().setSeriesNumber(c.series_number.c_str()), "Series Number", why)))
        return rc;
    // Placeholders the caller overwrites from the source (dcmseg checks they are there).
    char tmp_uid[64];
    pipeline_dcm_hash_uid(("placeholder:" + c.sop_uid_seg).c_str(), tmp_uid);
    if ((rc = cond(seg->getStudy().setStudyInstanceUID(tmp_uid), "Study Instance UID", why)) ||
        (rc = cond(seg->getFrameOfReference().setFrameOfReferenceUID(tmp_uid), "FoR UID", why)))
        return rc;

    // Segments.
    const DcmSegTypes::E_SegmentAlgoType algo = c.manual ? DcmSegTypes::SAT_MANUAL : DcmSegTypes::SAT_AUTOMATIC;
    std::vector<Uint16> segno(slot.size(), 0);
    for (const pipeline_label *l : segs) {
        CodeSequenceMacro cat(l->category.value, l->category.scheme, l->category.meaning);
        CodeSequenceMacro typ(l->type.value, l->type.scheme, l->type.meaning);
        DcmSegment *s = nullptr;
        if ((rc = cond(DcmSegment::create(s, l->name, cat, typ, algo, c.manual ? "" : c.algo_name.c_str()),
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
    const double *o = c.iop;
    if ((rc = cond(pm.setPixelSpacing((ds(c.ps[0]) + "\\" + ds(c.ps[1])).c_str()), "Pixel Spacing", why)) ||
        (rc = cond(pm.setSliceThickness(ds(c.thickness).c_str()), "Slice Thickness", why)) ||
        (rc = cond(pm.setSpacingBetweenSlices(ds(c.spacing).c_str()), "Spacing Between Slices", why)) ||
        (rc = cond(po.setImageOrientationPatient(ds(o[0]).c_str(), ds(o[1]).c_str(), ds(o[2]).c_str(),
                                                 ds(o[3]).c_str(), ds(o[4]).c_str(), ds(o[5]).c_str()), "IOP", why)) ||
        (rc = cond(seg->addForAllFrames(pm), "shared Pixel Measures", why)) ||
        (rc = cond(seg->addForAllFrames(po), "shared Plane Orientation", why)))
        return rc;

    // Dimensions: segment number, then position (index = source slice number).
    char dim_uid[64];
    pipeline_dcm_hash_uid(("dimension-organization:" + c.sop_uid_seg).c_str(), dim_uid);
    IODMultiframeDimensionModule &dims = seg->getDimensions();
    if ((rc = cond(dims.addDimensionIndex(DCM_ReferencedSegmentNumber, dim_uid, DCM_SegmentIdentificationSequence,
                                          "ReferencedSegmentNumber"), "dimension index", why)) ||
        (rc = cond(dims.addDimensionIndex(DCM_ImagePositionPatient, dim_uid, DCM_PlanePositionSequence,
                                          "ImagePositionPatient"), "dimension index", why)))
        return rc;

    struct frame_ref {
        unsigned label;
        int slice;
    };
    std::vector<frame_ref> frames;
    std::vector<Uint8> buf(plane);
    std::vector<Uint8> packed; // our Pixel Data, grown frame by frame
    size_t bit = 0;
    for (const pipeline_label *l : segs) {
        const unsigned v = (unsigned)l->number;
        const std::vector<char> &pv = pres[(size_t)slot[v]];
        for (int k = 0; k < S; k++) {
            if (!pv[(size_t)k] && !c.keep_empty) {
                out.omitted++;
                continue;
            }
            const size_t base = plane * (size_t)k;
            if (c.plain || pv[(size_t)k]) {
                for (size_t i = 0; i < plane; i++)
                    buf[i] = lab_at(c, base + i) == v ? 1 : 0;
            } else {
                std::memset(buf.data(), 0, plane);
            }
            FGPlanePosPatient pp;
            FGFrameContent fc;
            ImageSOPInstanceReferenceMacro ref;
            const std::array<double, 3> &x = c.pos[(size_t)k];
            if ((rc = cond(pp.setImagePositionPatient(ds(x[0]).c_str(), ds(x[1]).c_str(), ds(x[2]).c_str()), "IPP", why)) ||
                (rc = cond(fc.setDimensionIndexValues(segno[v], 0), "dimension index values", why)) ||
                (rc = cond(fc.setDimensionIndexValues((Uint32)k + 1, 1), "dimension index values", why)) ||
                (rc = cond(ref.setReferencedSOPClassUID(c.sop_class[(size_t)k].c_str()), "Referenced SOP Class", why)) ||
                (rc = cond(ref.setReferencedSOPInstanceUID(c.sop_uid[(size_t)k].c_str()), "Referenced SOP Instance", why)))
                return rc;
            if (c.frame[(size_t)k] > 0 &&
                (rc = cond(ref.addReferencedFrameNumber((Uint16)c.frame[(size_t)k]), "Referenced Frame Number", why)))
                return rc;
            OFVector<ImageSOPInstanceReferenceMacro> refs;
            refs.push_back(ref);
            std::unique_ptr<FGDerivationImage> der(DcmSegmentation::createDerivationImageFG(refs, c.derivation_desc.c_str()));
            if (!der) {
                why = "cannot create Derivation Image functional group";
                return SN_EINTERNAL;
            }
            OFVector<FGBase *> per;
            per.push_back(&pp);
            per.push_back(&fc);
            per.push_back(der.get());
            if ((rc = cond(seg->addFrame(buf.data(), segno[v], per), "cannot add frame", why)))
                return rc;
            frames.push_back({v, k});
            if (!c.plain) {
                packed.resize((bit + plane + 7) / 8, 0);
                if (pv[(size_t)k])
                    pack_append(packed.data(), bit, buf.data(), plane);
                bit += plane;
            }
        }
    }
    if (frames.empty()) {
        why = "no frame to write";
        return SN_EINVAL;
    }

    DcmDataset &ds_out = *ff.getDataset();
    if ((rc = cond(seg->writeDataset(ds_out), "cannot build SEG dataset", why)))
        return rc;
    seg.reset(); // frees the packed copies of the frames before we pack our own

    // Referenced Series Sequence (Common Instance Reference module): every source instance once.
    ds_out.findAndDeleteElement(DCM_ReferencedSeriesSequence);
    DcmItem *rs = nullptr;
    if ((rc = cond(ds_out.findOrCreateSequenceItem(DCM_ReferencedSeriesSequence, rs, 0), "Referenced Series Sequence", why)) ||
        (rc = pipeline_dcm__put(*rs, DCM_SeriesInstanceUID, c.src_series_uid.c_str(), why)))
        return rc;
    std::unordered_set<std::string> seen;
    for (int k = 0; k < S; k++) {
        if (!seen.insert(c.sop_uid[(size_t)k]).second)
            continue;
        DcmItem *ri = nullptr;
        if ((rc = cond(rs->findOrCreateSequenceItem(DCM_ReferencedInstanceSequence, ri, -2), "Referenced Instance Sequence", why)) ||
            (rc = pipeline_dcm__put(*ri, DCM_ReferencedSOPClassUID, c.sop_class[(size_t)k].c_str(), why)) ||
            (rc = pipeline_dcm__put(*ri, DCM_ReferencedSOPInstanceUID, c.sop_uid[(size_t)k].c_str(), why)))
            return rc;
    }

    // Segmentation Algorithm Identification (name + version) on every automatic segment.
    DcmSequenceOfItems *sq = nullptr;
    if (!c.manual && !c.algo_version.empty() && ds_out.findAndGetSequence(DCM_SegmentSequence, sq).good() && sq) {
        for (unsigned long i = 0; i < sq->card(); i++) {
            DcmItem *si = sq->getItem(i), *ai = nullptr;
            if ((rc = cond(si->findOrCreateSequenceItem(DCM_SegmentationAlgorithmIdentificationSequence, ai, 0),
                           "Segmentation Algorithm Identification", why)) ||
                (rc = put_code(*ai, DCM_AlgorithmFamilyCodeSequence, c.family, why)) ||
                (rc = pipeline_dcm__put(*ai, DCM_AlgorithmName, c.algo_name.c_str(), why)) ||
                (rc = pipeline_dcm__put(*ai, DCM_AlgorithmVersion, c.algo_version.c_str(), why)))
                return rc;
        }
    }

    size_t nbytes = (plane * frames.size() + 7) / 8;
    if (!c.plain) {
        // Pixel Data, packed by us (below, while adding frames): frames contiguous, first pixel in
        // the least significant bit; the unused bits of the last byte and the pad byte are 0.
        packed.resize(nbytes + (nbytes & 1), 0);
        ds_out.findAndDeleteElement(DCM_PixelData);
        if ((rc = cond(ds_out.putAndInsertUint8Array(DCM_PixelData, packed.data(), (unsigned long)packed.size()), "Pixel Data", why)))
            return rc;
        nbytes = packed.size();
    }
    if ((rc = pipeline_dcm__put_is(ds_out, DCM_NumberOfFrames, (long)frames.size(), why)))
        return rc;
    out.segments = (int)segs.size();
    out.frames = (int)frames.size();
    out.bytes = nbytes;
    return 0;
}

int save(DcmFileFormat &ff, const char *path, std::string &why)
{
    OFCondition c = ff.saveFile(path, EXS_LittleEndianExplicit, EET_UndefinedLength, EGL_recalcGL, EPD_noChange);
    if (c.bad()) {
        why = std::string("cannot write ") + path + ": " + c.text();
        return SN_EIO;
    }
    return 0;
}

// ---- low-level (phantom) writer ------------------------------------------------------------------

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
        !sn_uid_valid(src->series_uid) || !src->sop_class_uid || !sn_uid_valid(src->sop_class_uid) ||
        !hdr->series_uid || !sn_uid_valid(hdr->series_uid)) {
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
    core_in c;
    c.cols = src->cols, c.rows = src->rows, c.slices = src->slices;
    std::memcpy(c.iop, src->iop, sizeof c.iop);
    c.ps[0] = src->pixel_spacing[0], c.ps[1] = src->pixel_spacing[1];
    c.thickness = src->slice_thickness, c.spacing = src->slice_spacing;
    const double *o = src->iop;
    const double nrm[3] = {o[1] * o[5] - o[2] * o[4], o[2] * o[3] - o[0] * o[5], o[0] * o[4] - o[1] * o[3]};
    for (int k = 0; k < src->slices; k++) {
        std::array<double, 3> x;
        for (int a = 0; a < 3; a++)
            x[(size_t)a] = src->origin[a] + k * src->slice_spacing * nrm[a];
        c.pos.push_back(x);
        c.sop_class.push_back(src->sop_class_uid);
        c.sop_uid.push_back(src->sop_uids[k]);
        c.frame.push_back(src->frames ? src->frames[k] : 0);
    }
    c.src_series_uid = src->series_uid;
    c.labels = labels, c.bpv = 1, c.table = table;
    c.manual = opt->manual != 0;
    c.algo_name = opt->manual ? "" : opt->algorithm_name;
    c.derivation_desc = "Ground truth label rendered on the source grid";
    c.sop_uid_seg = opt->sop_uid;
    c.series_uid_seg = hdr->series_uid;
    c.instance_number = std::to_string(opt->instance_number);
    c.series_number = std::to_string(hdr->series_number);
    c.content_label = opt->content_label ? opt->content_label : "SEGMENTATION";
    c.content_description = opt->content_description ? opt->content_description : "";
    c.content_creator = opt->content_creator ? opt->content_creator : "";
    c.manufacturer = hdr->manufacturer && *hdr->manufacturer ? hdr->manufacturer : "segnode";
    c.model = hdr->model_name && *hdr->model_name ? hdr->model_name : "segnode";
    c.serial = hdr->device_serial && *hdr->device_serial ? hdr->device_serial : "0";
    c.software = hdr->software_versions && *hdr->software_versions ? hdr->software_versions : SEGNODE_VERSION;

    DcmFileFormat ff;
    core_out co;
    int rc;
    if ((rc = build_seg(c, ff, co, why)))
        return rc;
    DcmDataset &out = *ff.getDataset();
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
    return save(ff, path, why);
}

// ---- product writer ------------------------------------------------------------------------------

// Load the header (no pixel data) of a DICOM file; 0 if it is one of `series_uid`.
bool load_header(const std::string &path, const char *series_uid, DcmFileFormat &ff)
{
    if (ff.loadFile(path.c_str(), EXS_Unknown, EGL_noChange, 4096).bad()) // large values stay on disk
        return false;
    OFString s;
    return ff.getDataset()->findAndGetOFString(DCM_SeriesInstanceUID, s).good() && s == series_uid;
}

bool find_source(const std::string &dir, const char *series_uid, DcmFileFormat &ff, int depth)
{
    if (depth > 16)
        return false;
    DIR *d = opendir(dir.c_str());
    if (!d)
        return false;
    std::vector<std::string> files, dirs;
    while (struct dirent *e = readdir(d)) {
        if (e->d_name[0] == '.')
            continue;
        std::string p = dir + "/" + e->d_name;
        struct stat sb;
        if (stat(p.c_str(), &sb) != 0)
            continue;
        if (S_ISDIR(sb.st_mode))
            dirs.push_back(p);
        else if (S_ISREG(sb.st_mode) && sb.st_size > 132)
            files.push_back(p);
    }
    closedir(d);
    for (const std::string &f : files)
        if (load_header(f, series_uid, ff))
            return true;
    for (const std::string &s : dirs)
        if (find_source(s, series_uid, ff, depth + 1))
            return true;
    return false;
}

// Copy the patient / study / frame-of-reference attributes of the source.
int copy_source_header(DcmItem &src, DcmItem &dst, std::string &why)
{
    static const DcmTagKey tags[] = {
        DCM_SpecificCharacterSet,
        // Patient
        DCM_PatientName, DCM_PatientID, DCM_IssuerOfPatientID, DCM_IssuerOfPatientIDQualifiersSequence,
        DCM_PatientBirthDate, DCM_PatientBirthTime, DCM_PatientSex, DCM_OtherPatientIDsSequence,
        DCM_PatientComments, DCM_PatientIdentityRemoved, DCM_DeidentificationMethod,
        DCM_DeidentificationMethodCodeSequence, DCM_PatientSpeciesDescription, DCM_PatientSpeciesCodeSequence,
        DCM_PatientBreedDescription, DCM_PatientBreedCodeSequence, DCM_BreedRegistrationSequence,
        DCM_ResponsiblePerson, DCM_ResponsiblePersonRole, DCM_ResponsibleOrganization,
        // General Study
        DCM_StudyInstanceUID, DCM_StudyDate, DCM_StudyTime, DCM_ReferringPhysicianName, DCM_StudyID,
        DCM_AccessionNumber, DCM_IssuerOfAccessionNumberSequence, DCM_StudyDescription, DCM_ProcedureCodeSequence,
        // Patient Study
        DCM_AdmittingDiagnosesDescription, DCM_PatientAge, DCM_PatientSize, DCM_PatientWeight,
        // Clinical Trial Subject / Study
        DCM_ClinicalTrialSponsorName, DCM_ClinicalTrialProtocolID, DCM_ClinicalTrialProtocolName,
        DCM_ClinicalTrialSiteID, DCM_ClinicalTrialSiteName, DCM_ClinicalTrialSubjectID,
        DCM_ClinicalTrialSubjectReadingID, DCM_ClinicalTrialTimePointID, DCM_ClinicalTrialTimePointDescription,
        DCM_ClinicalTrialCoordinatingCenterName,
        // Frame of Reference
        DCM_FrameOfReferenceUID, DCM_PositionReferenceIndicator,
    };
    for (const DcmTagKey &t : tags) {
        DcmElement *e = nullptr;
        if (src.findAndGetElement(t, e).bad() || !e)
            continue;
        DcmElement *copy = OFstatic_cast(DcmElement *, e->clone());
        if (!copy || dst.insert(copy, OFTrue).bad()) {
            delete copy;
            why = std::string("cannot copy ") + DcmTag(t).getTagName() + " from the source";
            return SN_EINTERNAL;
        }
    }
    OFString forr;
    if (dst.findAndGetOFString(DCM_FrameOfReferenceUID, forr).bad() || forr.empty() ||
        dst.findAndGetOFString(DCM_StudyInstanceUID, forr).bad() || forr.empty()) {
        why = "the source file has no Study Instance UID or Frame of Reference UID";
        return SN_EDICOM;
    }
    if (!dst.tagExists(DCM_PositionReferenceIndicator))
        dst.putAndInsertString(DCM_PositionReferenceIndicator, "");
    return 0;
}

double source_thickness(DcmItem &ds)
{
    Float64 t = 0;
    if (ds.findAndGetFloat64(DCM_SliceThickness, t).good() && t > 0)
        return t;
    DcmItem *sh = nullptr, *pm = nullptr;
    if (ds.findAndGetSequenceItem(DCM_SharedFunctionalGroupsSequence, sh, 0).good() && sh &&
        sh->findAndGetSequenceItem(DCM_PixelMeasuresSequence, pm, 0).good() && pm &&
        pm->findAndGetFloat64(DCM_SliceThickness, t).good() && t > 0)
        return t;
    return 0;
}

std::string grid_text(int nx, int ny, int nz, const double *sp, const double *org)
{
    char b[256];
    if (sp)
        std::snprintf(b, sizeof b, "%dx%dx%d (spacing %.4gx%.4gx%.4g mm, origin %.4g,%.4g,%.4g)", nx, ny, nz,
                      sp[0], sp[1], sp[2], org[0], org[1], org[2]);
    else
        std::snprintf(b, sizeof b, "%dx%dx%d", nx, ny, nz);
    return b;
}

int write_series(const char *path, const pipeline_volume *v, const char *source_path,
                 const pipeline_seg_labelmap *L, const pipeline_labels *table,
                 const pipeline_seg_write_opts *opt, bool plain, pipeline_seg_write_info *info,
                 std::string &why)
{
    if (!path || !v || !source_path || !L || !L->data || !table || !opt || !v->slices) {
        why = "missing argument";
        return SN_EINVAL;
    }
    if (!opt->algorithm_name || !*opt->algorithm_name || !opt->method || !*opt->method) {
        why = "the algorithm name and the method are required";
        return SN_EINVAL;
    }
    if (L->bytes_per_voxel != 1 && L->bytes_per_voxel != 2) {
        why = "label volume: bytes_per_voxel must be 1 or 2";
        return SN_EINVAL;
    }
    if (v->nx <= 0 || v->ny <= 0 || v->nz <= 0 || v->nx > 65535 || v->ny > 65535) {
        why = "invalid source grid";
        return SN_EINVAL;
    }
    bool same = L->nx == v->nx && L->ny == v->ny && L->nz == v->nz;
    if (same && L->has_geometry) {
        for (int a = 0; a < 3; a++)
            same = same && std::fabs(L->origin[a] - v->origin[a]) <= 1e-3 &&
                   std::fabs(L->spacing[a] - v->spacing[a]) <= 1e-3;
        for (int a = 0; a < 9; a++)
            same = same && std::fabs(L->direction[a] - v->direction[a]) <= 1e-4;
    }
    if (!same) {
        why = "label volume grid " +
              grid_text(L->nx, L->ny, L->nz, L->has_geometry ? L->spacing : nullptr, L->origin) +
              " does not match the source series grid " + grid_text(v->nx, v->ny, v->nz, v->spacing, v->origin) +
              " (series " + v->series_uid + "); resample the labels onto the series first";
        return SN_EINVAL;
    }
    for (int k = 0; k < v->nz; k++)
        if (!v->slices[k].sop_instance_uid[0]) {
            why = "slice " + std::to_string(k) + " of the series was filled by interpolation: no source instance to reference";
            return SN_EINVAL;
        }
    if (opt->series_uid && !sn_uid_valid(opt->series_uid)) {
        why = "invalid series UID option";
        return SN_EINVAL;
    }
    if (opt->sop_uid && !sn_uid_valid(opt->sop_uid)) {
        why = "invalid SOP Instance UID option";
        return SN_EINVAL;
    }
    char dt[16];
    if (opt->datetime) {
        if (std::strlen(opt->datetime) != 14 || std::strspn(opt->datetime, "0123456789") != 14) {
            why = "datetime must be YYYYMMDDHHMMSS";
            return SN_EINVAL;
        }
        std::memcpy(dt, opt->datetime, 15);
    } else {
        time_t now = time(nullptr);
        struct tm tmv;
        localtime_r(&now, &tmv);
        std::strftime(dt, sizeof dt, "%Y%m%d%H%M%S", &tmv);
    }
    const std::string date(dt, 8), tim(dt + 8, 6);

    // The source header.
    DcmFileFormat src_ff;
    struct stat sb;
    if (stat(source_path, &sb) != 0) {
        why = std::string(source_path) + ": " + std::strerror(errno);
        return SN_ENOENT;
    }
    if (S_ISDIR(sb.st_mode)) {
        if (!find_source(source_path, v->series_uid, src_ff, 0)) {
            why = std::string("no DICOM file of series ") + v->series_uid + " under " + source_path;
            return SN_ENOENT;
        }
    } else if (!load_header(source_path, v->series_uid, src_ff)) {
        why = std::string(source_path) + ": not a readable DICOM file of series " + v->series_uid;
        return SN_EDICOM;
    }
    DcmDataset &sds = *src_ff.getDataset();

    core_in c;
    c.cols = v->nx, c.rows = v->ny, c.slices = v->nz;
    const double *d = v->direction;
    c.iop[0] = d[0], c.iop[1] = d[3], c.iop[2] = d[6]; // i axis: along a row
    c.iop[3] = d[1], c.iop[4] = d[4], c.iop[5] = d[7]; // j axis: down a column
    c.ps[0] = v->spacing[1], c.ps[1] = v->spacing[0];
    c.spacing = v->spacing[2];
    c.thickness = source_thickness(sds);
    if (!(c.thickness > 0))
        c.thickness = v->spacing[2];
    for (int k = 0; k < v->nz; k++) {
        std::array<double, 3> x;
        for (int a = 0; a < 3; a++)
            x[(size_t)a] = v->origin[a] + k * v->spacing[2] * d[3 * a + 2];
        c.pos.push_back(x);
        c.sop_class.push_back(v->slices[k].sop_class_uid);
        c.sop_uid.push_back(v->slices[k].sop_instance_uid);
        c.frame.push_back(v->slices[k].frame);
    }
    c.src_series_uid = v->series_uid;
    c.labels = L->data, c.bpv = L->bytes_per_voxel, c.table = table;
    c.keep_empty = opt->keep_empty != 0;
    c.plain = plain;
    c.algo_name = opt->algorithm_name;
    c.algo_version = opt->algorithm_version && *opt->algorithm_version ? opt->algorithm_version : SEGNODE_VERSION;
    if (opt->algorithm_family.value[0]) {
        c.family = opt->algorithm_family;
    } else {
        sn_strlcpy(c.family.scheme, "DCM", sizeof c.family.scheme);
        sn_strlcpy(c.family.value, "123110", sizeof c.family.value);
        sn_strlcpy(c.family.meaning, "Artificial Intelligence", sizeof c.family.meaning);
    }
    c.derivation_desc = std::string("Segmented by ") + opt->method;
    char uid[64];
    if (opt->sop_uid) {
        c.sop_uid_seg = opt->sop_uid;
    } else {
        pipeline_seg_new_uid(uid);
        c.sop_uid_seg = uid;
    }
    if (opt->series_uid) {
        c.series_uid_seg = opt->series_uid;
    } else {
        pipeline_seg_new_uid(uid);
        c.series_uid_seg = uid;
    }
    c.instance_number = std::to_string(opt->instance_number > 0 ? opt->instance_number : 1);
    c.series_number = std::to_string(opt->series_number > 0 ? opt->series_number : 900);
    c.content_label = opt->content_label && *opt->content_label ? opt->content_label : "SEGMENTATION";
    c.content_description = opt->content_description ? opt->content_description : opt->method;
    c.content_creator = opt->content_creator ? opt->content_creator : "SEGNODE^AUTOMATIC";
    c.manufacturer = "segnode";
    c.model = "segnode";
    c.serial = opt->device_serial && *opt->device_serial ? opt->device_serial : "0";
    c.software = SEGNODE_VERSION;

    DcmFileFormat ff;
    core_out co;
    int rc;
    if ((rc = build_seg(c, ff, co, why)))
        return rc;
    DcmDataset &out = *ff.getDataset();
    if ((rc = copy_source_header(sds, out, why)))
        return rc;
    std::string desc = opt->series_description && *opt->series_description
                           ? opt->series_description
                           : std::string(opt->method) + " segmentation";
    if (desc.size() > 64)
        desc.resize(64);
    if ((rc = pipeline_dcm__put_is(out, DCM_SeriesNumber, opt->series_number > 0 ? opt->series_number : 900, why)) ||
        (rc = pipeline_dcm__put(out, DCM_SeriesDescription, desc.c_str(), why)) ||
        (rc = pipeline_dcm__put(out, DCM_SeriesDate, date.c_str(), why)) ||
        (rc = pipeline_dcm__put(out, DCM_SeriesTime, tim.c_str(), why)) ||
        (rc = pipeline_dcm__put(out, DCM_ContentDate, date.c_str(), why)) ||
        (rc = pipeline_dcm__put(out, DCM_ContentTime, tim.c_str(), why)) ||
        (rc = pipeline_dcm__put(out, DCM_InstanceCreationDate, date.c_str(), why)) ||
        (rc = pipeline_dcm__put(out, DCM_InstanceCreationTime, tim.c_str(), why)))
        return rc;
    OFString body;
    if (sds.findAndGetOFString(DCM_BodyPartExamined, body).good() && !body.empty())
        pipeline_dcm__put(out, DCM_BodyPartExamined, body.c_str(), why);

    // Contributing Equipment: segnode, the processing equipment that made this object.
    DcmItem *ce = nullptr;
    std::string cdesc = std::string("Segmentation by ") + opt->method + " (" + c.algo_name + " " + c.algo_version + ")";
    if (cdesc.size() > 64)
        cdesc.resize(64);
    pipeline_code purpose{};
    sn_strlcpy(purpose.scheme, "DCM", sizeof purpose.scheme);
    sn_strlcpy(purpose.value, "109102", sizeof purpose.value);
    sn_strlcpy(purpose.meaning, "Processing Equipment", sizeof purpose.meaning);
    if ((rc = cond(out.findOrCreateSequenceItem(DCM_ContributingEquipmentSequence, ce, 0), "Contributing Equipment", why)) ||
        (rc = put_code(*ce, DCM_PurposeOfReferenceCodeSequence, purpose, why)) ||
        (rc = pipeline_dcm__put(*ce, DCM_Manufacturer, "segnode", why)) ||
        (rc = pipeline_dcm__put(*ce, DCM_ManufacturerModelName, "segnode", why)) ||
        (rc = pipeline_dcm__put(*ce, DCM_SoftwareVersions, SEGNODE_VERSION, why)) ||
        (rc = pipeline_dcm__put(*ce, DCM_ContributionDateTime, dt, why)) ||
        (rc = pipeline_dcm__put(*ce, DCM_ContributionDescription, cdesc.c_str(), why)))
        return rc;

    if ((rc = save(ff, path, why)))
        return rc;
    if (info) {
        std::memset(info, 0, sizeof *info);
        sn_strlcpy(info->series_uid, c.series_uid_seg.c_str(), sizeof info->series_uid);
        sn_strlcpy(info->sop_uid, c.sop_uid_seg.c_str(), sizeof info->sop_uid);
        info->segments = co.segments;
        info->frames = co.frames;
        info->omitted_frames = co.omitted;
        info->bytes = co.bytes;
    }
    return 0;
}

template <class F> int guarded(F f, char *err, size_t errlen)
{
    std::string why;
    int rc;
    try {
        rc = f(why);
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

} // namespace

extern "C" int pipeline_seg_write(const char *path, const pipeline_dcm_header *hdr,
                                  const pipeline_seg_source *src, const uint8_t *labels,
                                  const pipeline_labels *table, const pipeline_seg_options *opt,
                                  char *err, size_t errlen)
{
    return guarded([&](std::string &why) { return write_seg(path, hdr, src, labels, table, opt, why); }, err, errlen);
}

extern "C" int pipeline_seg_write_series(const char *path, const pipeline_volume *src, const char *source_path,
                                         const pipeline_seg_labelmap *labels, const pipeline_labels *table,
                                         const pipeline_seg_write_opts *opts, pipeline_seg_write_info *info,
                                         char *err, size_t errlen)
{
    return guarded([&](std::string &why) {
        return write_series(path, src, source_path, labels, table, opts, false, info, why);
    }, err, errlen);
}

extern "C" int pipeline_seg_write_series_plain(const char *path, const pipeline_volume *src,
                                               const char *source_path, const pipeline_seg_labelmap *labels,
                                               const pipeline_labels *table, const pipeline_seg_write_opts *opts,
                                               pipeline_seg_write_info *info, char *err, size_t errlen)
{
    return guarded([&](std::string &why) {
        return write_series(path, src, source_path, labels, table, opts, true, info, why);
    }, err, errlen);
}
