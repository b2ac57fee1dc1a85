// pipeline/segread.cc — DCMTK dcmdata behind pipeline/segread.h: parse a Segmentation's
// segments, per-frame (or shared) functional groups and Pixel Data, then place the frames on a
// target grid. Plain dcmdata, not dcmseg (whose 3.6.7 reader unpacks BINARY frames with the
// same bit-packing bug as its writer). Exceptions and OFCondition become SN_E* at the edge.
#include "pipeline/segread.h"

extern "C" {
#include "common/status.h"
#include "common/util.h"
}

#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dctk.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <string>
#include <vector>

namespace {

void get_str(DcmItem &it, const DcmTagKey &t, char *out, size_t n)
{
    OFString s;
    out[0] = 0;
    if (it.findAndGetOFString(t, s).good())
        sn_strlcpy(out, s.c_str(), n);
}

void get_code(DcmItem &it, const DcmTagKey &seq, pipeline_code &c)
{
    std::memset(&c, 0, sizeof c);
    DcmItem *ci = nullptr;
    if (it.findAndGetSequenceItem(seq, ci, 0).good() && ci) {
        get_str(*ci, DCM_CodingSchemeDesignator, c.scheme, sizeof c.scheme);
        get_str(*ci, DCM_CodeValue, c.value, sizeof c.value);
        if (!c.value[0])
            get_str(*ci, DCM_LongCodeValue, c.value, sizeof c.value);
        get_str(*ci, DCM_CodeMeaning, c.meaning, sizeof c.meaning);
    }
}

// Functional group `seq` from the per-frame item, else from the shared item.
DcmItem *fg(DcmItem *per, DcmItem *shared, const DcmTagKey &seq)
{
    DcmItem *it = nullptr;
    if (per && per->findAndGetSequenceItem(seq, it, 0).good() && it)
        return it;
    it = nullptr;
    if (shared && shared->findAndGetSequenceItem(seq, it, 0).good() && it)
        return it;
    return nullptr;
}

bool get_doubles(DcmItem *it, const DcmTagKey &t, double *v, int n)
{
    if (!it)
        return false;
    for (int i = 0; i < n; i++) {
        Float64 x;
        if (it->findAndGetFloat64(t, x, (unsigned long)i).bad())
            return false;
        v[i] = x;
    }
    return true;
}

int read_seg(const char *path, pipeline_seg *s, std::string &why)
{
    DcmFileFormat ff;
    OFCondition c = ff.loadFile(path);
    if (c.bad()) {
        why = std::string(path) + ": " + c.text();
        return SN_EIO;
    }
    DcmDataset &ds = *ff.getDataset();
    OFString cls, type;
    if (ds.findAndGetOFString(DCM_SOPClassUID, cls).bad() || cls != UID_SegmentationStorage) {
        why = std::string(path) + ": not a Segmentation object (SOP Class " + cls.c_str() + ")";
        return SN_EDICOM;
    }
    get_str(ds, DCM_SOPInstanceUID, s->sop_uid, sizeof s->sop_uid);
    get_str(ds, DCM_SeriesInstanceUID, s->series_uid, sizeof s->series_uid);
    get_str(ds, DCM_StudyInstanceUID, s->study_uid, sizeof s->study_uid);
    get_str(ds, DCM_FrameOfReferenceUID, s->frame_of_reference_uid, sizeof s->frame_of_reference_uid);
    DcmItem *rs = nullptr;
    if (ds.findAndGetSequenceItem(DCM_ReferencedSeriesSequence, rs, 0).good() && rs)
        get_str(*rs, DCM_SeriesInstanceUID, s->referenced_series_uid, sizeof s->referenced_series_uid);
    Uint16 rows = 0, cols = 0, bits = 0;
    Sint32 nframes = 0;
    ds.findAndGetUint16(DCM_Rows, rows);
    ds.findAndGetUint16(DCM_Columns, cols);
    ds.findAndGetUint16(DCM_BitsAllocated, bits);
    ds.findAndGetSint32(DCM_NumberOfFrames, nframes);
    ds.findAndGetOFString(DCM_SegmentationType, type);
    if (!rows || !cols || nframes <= 0) {
        why = "SEG without Rows, Columns or Number of Frames";
        return SN_EDICOM;
    }
    s->rows = rows, s->cols = cols, s->nframes = nframes;
    if (type == "BINARY") {
        if (bits != 1) {
            why = "BINARY SEG with Bits Allocated " + std::to_string(bits) + " (must be 1)";
            return SN_EDICOM;
        }
        s->max_fractional = 1;
    } else if (type == "FRACTIONAL") {
        if (bits != 8) {
            why = "FRACTIONAL SEG with Bits Allocated " + std::to_string(bits) + " (must be 8)";
            return SN_EDICOM;
        }
        Uint16 mx = 0;
        ds.findAndGetUint16(DCM_MaximumFractionalValue, mx);
        if (!mx) {
            why = "FRACTIONAL SEG without Maximum Fractional Value";
            return SN_EDICOM;
        }
        s->fractional = 1, s->max_fractional = mx;
    } else {
        why = std::string("unsupported Segmentation Type '") + type.c_str() + "'";
        return SN_EUNSUPPORTED;
    }

    // Segments.
    DcmSequenceOfItems *sq = nullptr;
    if (ds.findAndGetSequence(DCM_SegmentSequence, sq).bad() || !sq || sq->card() == 0) {
        why = "SEG without Segment Sequence";
        return SN_EDICOM;
    }
    s->nsegments = (int)sq->card();
    s->segments = (pipeline_seg_segment *)std::calloc((size_t)s->nsegments, sizeof *s->segments);
    if (!s->segments)
        throw std::bad_alloc();
    for (int i = 0; i < s->nsegments; i++) {
        DcmItem &it = *sq->getItem((unsigned long)i);
        pipeline_seg_segment &g = s->segments[i];
        Uint16 n = 0;
        if (it.findAndGetUint16(DCM_SegmentNumber, n).bad() || !n) {
            why = "segment item " + std::to_string(i + 1) + " has no Segment Number";
            return SN_EDICOM;
        }
        g.number = n;
        get_str(it, DCM_SegmentLabel, g.label, sizeof g.label);
        get_str(it, DCM_SegmentAlgorithmType, g.algorithm_type, sizeof g.algorithm_type);
        get_code(it, DCM_SegmentedPropertyCategoryCodeSequence, g.category);
        get_code(it, DCM_SegmentedPropertyTypeCodeSequence, g.type);
        DcmItem *ti = nullptr;
        if (it.findAndGetSequenceItem(DCM_SegmentedPropertyTypeCodeSequence, ti, 0).good() && ti)
            get_code(*ti, DCM_SegmentedPropertyTypeModifierCodeSequence, g.modifier);
    }

    // Frames.
    DcmItem *shared = nullptr;
    ds.findAndGetSequenceItem(DCM_SharedFunctionalGroupsSequence, shared, 0);
    DcmSequenceOfItems *pf = nullptr;
    ds.findAndGetSequence(DCM_PerFrameFunctionalGroupsSequence, pf);
    if (!pf || pf->card() != (unsigned long)nframes) {
        why = "Per-frame Functional Groups Sequence has " + std::to_string(pf ? pf->card() : 0) +
              " items for " + std::to_string(nframes) + " frames";
        return SN_EDICOM;
    }
    s->frames = (pipeline_seg_frame *)std::calloc((size_t)nframes, sizeof *s->frames);
    if (!s->frames)
        throw std::bad_alloc();
    for (int f = 0; f < nframes; f++) {
        DcmItem *per = pf->getItem((unsigned long)f);
        pipeline_seg_frame &fr = s->frames[f];
        DcmItem *si = fg(per, shared, DCM_SegmentIdentificationSequence);
        Uint16 sn = 0;
        if (!si || si->findAndGetUint16(DCM_ReferencedSegmentNumber, sn).bad() || !sn) {
            why = "frame " + std::to_string(f + 1) + " has no Referenced Segment Number";
            return SN_EDICOM;
        }
        fr.segment = sn;
        bool known = false;
        for (int i = 0; i < s->nsegments; i++)
            if (s->segments[i].number == sn) {
                s->segments[i].frames++;
                known = true;
            }
        if (!known) {
            why = "frame " + std::to_string(f + 1) + " refers to segment " + std::to_string(sn) + ", which is not in the Segment Sequence";
            return SN_EDICOM;
        }
        fr.has_position = get_doubles(fg(per, shared, DCM_PlanePositionSequence), DCM_ImagePositionPatient, fr.ipp, 3);
        get_doubles(fg(per, shared, DCM_PlaneOrientationSequence), DCM_ImageOrientationPatient, fr.iop, 6);
        get_doubles(fg(per, shared, DCM_PixelMeasuresSequence), DCM_PixelSpacing, fr.pixel_spacing, 2);
        DcmItem *der = fg(per, shared, DCM_DerivationImageSequence), *src = nullptr;
        if (der && der->findAndGetSequenceItem(DCM_SourceImageSequence, src, 0).good() && src) {
            get_str(*src, DCM_ReferencedSOPInstanceUID, fr.ref_sop_uid, sizeof fr.ref_sop_uid);
            Sint32 rf = 0;
            if (src->findAndGetSint32(DCM_ReferencedFrameNumber, rf).good())
                fr.ref_frame = rf;
        }
    }

    // Pixel Data (decompressed first when encapsulated).
    E_TransferSyntax xfer = ds.getOriginalXfer();
    if (DcmXfer(xfer).isEncapsulated() && ds.chooseRepresentation(EXS_LittleEndianExplicit, nullptr).bad()) {
        why = std::string("cannot decode Pixel Data in ") + DcmXfer(xfer).getXferName();
        return SN_EUNSUPPORTED;
    }
    const Uint8 *px = nullptr;
    unsigned long count = 0;
    if (ds.findAndGetUint8Array(DCM_PixelData, px, &count).bad() || !px) {
        why = "SEG without Pixel Data";
        return SN_EDICOM;
    }
    const size_t plane = (size_t)rows * cols;
    size_t need;
    if (s->fractional) {
        need = plane * (size_t)nframes;
    } else {
        need = (plane * (size_t)nframes + 7) / 8;
        const size_t padded = (plane + 7) / 8 * (size_t)nframes;
        // Some writers pad every frame to a byte; accept that when the length says so.
        if (plane % 8 && count >= padded && count > need + 1)
            s->frame_padded = 1, need = padded;
    }
    if (count < need) {
        why = "Pixel Data holds " + std::to_string(count) + " bytes, " + std::to_string(need) + " needed for " +
              std::to_string(nframes) + " frames of " + std::to_string(cols) + "x" + std::to_string(rows);
        return SN_EDICOM;
    }
    s->pixels = (uint8_t *)std::malloc(need ? need : 1);
    if (!s->pixels)
        throw std::bad_alloc();
    std::memcpy(s->pixels, px, need);
    s->pixel_bytes = need;
    return 0;
}

bool ieq(const char *a, const char *b)
{
    for (; *a && *b; a++, b++)
        if (std::tolower((unsigned char)*a) != std::tolower((unsigned char)*b))
            return false;
    return *a == *b;
}

bool same_code(const pipeline_code &a, const pipeline_code &b)
{
    return a.value[0] && std::strcmp(a.value, b.value) == 0 && std::strcmp(a.scheme, b.scheme) == 0;
}

// Map segments to label numbers (see the header).
int map_segments(pipeline_seg *s, const pipeline_labels *table, pipeline_seg_import_report &rep, std::string &why)
{
    std::vector<char> used(65536, 0);
    size_t nt = table ? pipeline_labels_count(table) : 0;
    for (size_t i = 0; i < nt; i++)
        used[(size_t)pipeline_labels_at(table, i)->number] = 1;
    for (int i = 0; i < s->nsegments; i++) {
        pipeline_seg_segment &g = s->segments[i];
        g.label_value = 0, g.match = PIPELINE_SEG_MATCH_NONE;
        const pipeline_label *best = nullptr;
        for (size_t t = 0; t < nt && !best; t++) {
            const pipeline_label *l = pipeline_labels_at(table, t);
            if (same_code(g.type, l->type) &&
                (same_code(g.modifier, l->modifier) || (!g.modifier.value[0] && !l->modifier.value[0])))
                best = l;
        }
        for (size_t t = 0; t < nt && !best; t++) { // modifier missing on one side
            const pipeline_label *l = pipeline_labels_at(table, t);
            if (same_code(g.type, l->type))
                best = l;
        }
        if (best) {
            g.label_value = best->number, g.match = PIPELINE_SEG_MATCH_CODE;
            continue;
        }
        for (size_t t = 0; t < nt && !best; t++) {
            const pipeline_label *l = pipeline_labels_at(table, t);
            if (g.type.meaning[0] && ieq(g.type.meaning, l->type.meaning))
                best = l;
        }
        if (best) {
            g.label_value = best->number, g.match = PIPELINE_SEG_MATCH_MEANING;
            continue;
        }
        for (size_t t = 0; t < nt && !best; t++) {
            const pipeline_label *l = pipeline_labels_at(table, t);
            if (g.label[0] && ieq(g.label, l->name))
                best = l;
        }
        if (best) {
            g.label_value = best->number, g.match = PIPELINE_SEG_MATCH_NAME;
            continue;
        }
        // Same unknown code twice (two segments of one structure): one label.
        for (int j = 0; j < i && !g.label_value; j++)
            if (s->segments[j].match == PIPELINE_SEG_MATCH_NONE && same_code(s->segments[j].type, g.type) &&
                std::strcmp(s->segments[j].modifier.value, g.modifier.value) == 0)
                g.label_value = s->segments[j].label_value;
        if (g.label_value)
            continue;
        int v = 1;
        while (v < 65536 && used[(size_t)v])
            v++;
        if (v >= 65536) {
            why = "more than 65535 labels";
            return SN_EINVAL;
        }
        used[(size_t)v] = 1;
        g.label_value = v;
        rep.new_labels++;
    }
    return 0;
}

int place(pipeline_seg *s, const pipeline_volume *g, const pipeline_labels *table, uint16_t *out,
          pipeline_seg_import_report &rep, std::string &why)
{
    if (s->rows != g->ny || s->cols != g->nx) {
        why = "SEG frames are " + std::to_string(s->cols) + "x" + std::to_string(s->rows) + ", the series' slices " +
              std::to_string(g->nx) + "x" + std::to_string(g->ny) + " (no resampling: the SEG must be on the series' grid)";
        return SN_EINVAL;
    }
    if (s->frame_of_reference_uid[0] && g->frame_of_reference_uid[0] &&
        std::strcmp(s->frame_of_reference_uid, g->frame_of_reference_uid) != 0) {
        why = std::string("SEG Frame of Reference ") + s->frame_of_reference_uid + " differs from the series' " +
              g->frame_of_reference_uid;
        return SN_EINVAL;
    }
    int rc = map_segments(s, table, rep, why);
    if (rc)
        return rc;
    const double *d = g->direction;
    const double ax[3][3] = {{d[0], d[3], d[6]}, {d[1], d[4], d[7]}, {d[2], d[5], d[8]}};
    const size_t plane = (size_t)g->nx * g->ny;
    std::memset(out, 0, plane * (size_t)g->nz * sizeof *out);
    // Segment number of the current owner of each voxel (for "higher number wins").
    std::vector<uint16_t> owner(plane * (size_t)g->nz, 0);
    std::vector<uint8_t> mask(plane);
    const double tol_ip = std::max(0.01, 0.05 * std::min(g->spacing[0], g->spacing[1]));
    const double tol_k = std::max(0.01, 0.05 * g->spacing[2]);
    for (int f = 0; f < s->nframes; f++) {
        const pipeline_seg_frame &fr = s->frames[f];
        char where[160];
        std::snprintf(where, sizeof where, "frame %d (segment %d)", f + 1, fr.segment);
        bool iop_ok = true;
        for (int a = 0; a < 3; a++)
            iop_ok = iop_ok && std::fabs(fr.iop[a] - ax[0][a]) < 1e-3 && std::fabs(fr.iop[3 + a] - ax[1][a]) < 1e-3;
        if (!iop_ok) {
            char b[320];
            std::snprintf(b, sizeof b, "%s: orientation %.4g,%.4g,%.4g,%.4g,%.4g,%.4g differs from the series' %.4g,%.4g,%.4g,%.4g,%.4g,%.4g",
                          where, fr.iop[0], fr.iop[1], fr.iop[2], fr.iop[3], fr.iop[4], fr.iop[5], ax[0][0], ax[0][1],
                          ax[0][2], ax[1][0], ax[1][1], ax[1][2]);
            why = b;
            return SN_EINVAL;
        }
        if (fr.pixel_spacing[0] > 0 &&
            (std::fabs(fr.pixel_spacing[0] - g->spacing[1]) > 1e-3 * g->spacing[1] + 1e-4 ||
             std::fabs(fr.pixel_spacing[1] - g->spacing[0]) > 1e-3 * g->spacing[0] + 1e-4)) {
            char b[256];
            std::snprintf(b, sizeof b, "%s: pixel spacing %.6g\\%.6g differs from the series' %.6g\\%.6g", where,
                          fr.pixel_spacing[0], fr.pixel_spacing[1], g->spacing[1], g->spacing[0]);
            why = b;
            return SN_EINVAL;
        }
        long k = -1;
        if (fr.has_position) {
            double r[3], u[3];
            for (int a = 0; a < 3; a++)
                r[a] = fr.ipp[a] - g->origin[a];
            for (int b = 0; b < 3; b++)
                u[b] = r[0] * ax[b][0] + r[1] * ax[b][1] + r[2] * ax[b][2];
            const double t = u[2] / g->spacing[2];
            k = std::lround(t);
            if (std::fabs(u[0]) > tol_ip || std::fabs(u[1]) > tol_ip || std::fabs(t - (double)k) * g->spacing[2] > tol_k ||
                k < 0 || k >= g->nz) {
                char b[320];
                std::snprintf(b, sizeof b, "%s at %.4f,%.4f,%.4f lies off the series' slices (in-plane offset %.3g,%.3g mm, slice %.3f of 0..%d)",
                              where, fr.ipp[0], fr.ipp[1], fr.ipp[2], u[0], u[1], t, g->nz - 1);
                why = b;
                return SN_EINVAL;
            }
            rep.frames_by_position++;
        } else {
            for (int z = 0; z < g->nz && g->slices; z++)
                if (fr.ref_sop_uid[0] && std::strcmp(g->slices[z].sop_instance_uid, fr.ref_sop_uid) == 0 &&
                    (g->slices[z].frame == fr.ref_frame || (g->slices[z].frame <= 1 && fr.ref_frame <= 1)))
                    k = z;
            if (k < 0) {
                why = std::string(where) + " has no Image Position (Patient) and its source reference is not a slice of the series";
                return SN_EINVAL;
            }
            rep.frames_by_reference++;
        }
        int value = 0;
        for (int i = 0; i < s->nsegments; i++)
            if (s->segments[i].number == fr.segment)
                value = s->segments[i].label_value;
        pipeline_seg_frame_mask(s, f, mask.data());
        uint16_t *o = out + plane * (size_t)k;
        uint16_t *own = owner.data() + plane * (size_t)k;
        for (size_t i = 0; i < plane; i++) {
            if (!mask[i])
                continue;
            if (own[i] && own[i] != fr.segment) {
                rep.overlap_voxels++;
                if (own[i] > fr.segment)
                    continue;
            }
            own[i] = (uint16_t)fr.segment;
            o[i] = (uint16_t)value;
        }
    }
    return 0;
}

template <class F> int guarded(const char *what, F f, char *err, size_t errlen)
{
    std::string why;
    int rc;
    try {
        rc = f(why);
    } catch (const std::bad_alloc &) {
        return sn_errf(err, errlen, SN_ENOMEM, "%s: out of memory", what);
    } catch (const std::exception &e) {
        return sn_errf(err, errlen, SN_EINTERNAL, "%s: %s", what, e.what());
    } catch (...) {
        return sn_errf(err, errlen, SN_EINTERNAL, "%s: unknown exception", what);
    }
    if (rc)
        return sn_errf(err, errlen, rc, "%s: %s", what, why.c_str());
    return 0;
}

} // namespace

extern "C" void pipeline_seg_free(pipeline_seg *s)
{
    if (!s)
        return;
    std::free(s->segments);
    std::free(s->frames);
    std::free(s->pixels);
    std::free(s);
}

extern "C" int pipeline_seg_read(const char *path, pipeline_seg **out, char *err, size_t errlen)
{
    if (!out)
        return sn_errf(err, errlen, SN_EINVAL, "SEG reader: no output");
    *out = nullptr;
    pipeline_seg *s = (pipeline_seg *)std::calloc(1, sizeof *s);
    if (!s)
        return sn_errf(err, errlen, SN_ENOMEM, "SEG reader: out of memory");
    int rc = guarded("SEG reader", [&](std::string &why) { return read_seg(path, s, why); }, err, errlen);
    if (rc) {
        pipeline_seg_free(s);
        return rc;
    }
    *out = s;
    return 0;
}

extern "C" void pipeline_seg_frame_mask(const pipeline_seg *s, int f, uint8_t *out)
{
    const size_t plane = (size_t)s->rows * s->cols;
    if (s->fractional) {
        const uint8_t *p = s->pixels + plane * (size_t)f;
        for (size_t i = 0; i < plane; i++)
            out[i] = 2u * p[i] >= (unsigned)s->max_fractional && p[i] ? 1 : 0;
        return;
    }
    size_t bit = s->frame_padded ? (plane + 7) / 8 * 8 * (size_t)f : plane * (size_t)f;
    for (size_t i = 0; i < plane; i++, bit++)
        out[i] = (s->pixels[bit >> 3] >> (bit & 7)) & 1u;
}

extern "C" int pipeline_seg_to_labels(pipeline_seg *seg, const pipeline_volume *grid,
                                      const pipeline_labels *table, uint16_t *out,
                                      pipeline_seg_import_report *report, char *err, size_t errlen)
{
    pipeline_seg_import_report rep;
    std::memset(&rep, 0, sizeof rep);
    if (!seg || !grid || !out || grid->nx <= 0 || grid->ny <= 0 || grid->nz <= 0)
        return sn_errf(err, errlen, SN_EINVAL, "SEG import: missing argument");
    int rc = guarded("SEG import", [&](std::string &why) { return place(seg, grid, table, out, rep, why); }, err, errlen);
    if (report)
        *report = rep;
    return rc;
}
