/* pipeline/volume.cc — DICOM series -> pipeline_volume (see volume.h), on DCMTK.
 * Three steps: worker threads parse every file up to its Pixel Data (left on disk) and pick out
 * the attributes this reader needs; one thread checks the series and builds the slice stack
 * (geometry.c); then the workers again, file by file, read and decode the pixel data (DCMTK
 * decoders, our JPEG 2000 codec) and put the stored values through the Modality LUT straight
 * into their slices of the grid (float, or int16 on request), dropping each file's pixels at
 * once. DCMTK objects never leave this file; every exception stops at the extern "C" functions. */
#include "pipeline/volume.h"

#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dcdatset.h>
#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcfilefo.h>
#include <dcmtk/dcmdata/dcitem.h>
#include <dcmtk/dcmdata/dcmetinf.h>
#include <dcmtk/dcmdata/dcpixel.h>
#include <dcmtk/dcmdata/dcrledrg.h>
#include <dcmtk/dcmdata/dcsequen.h>
#include <dcmtk/dcmdata/dcuid.h>
#include <dcmtk/dcmdata/dcxfer.h>
#include <dcmtk/dcmjpeg/djdecode.h>
#include <dcmtk/dcmjpls/djdecode.h>

#include <dirent.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "pipeline/codec_j2k.h"

extern "C" {
#include "common/log.h"
#include "common/status.h"
#include "common/util.h"
#include "pipeline/geometry.h"
}

namespace {

/* ---- what we keep of each file -------------------------------------------------------------- */

struct FrameInfo {
    double ipp[3] = {0, 0, 0}, iop[6] = {0, 0, 0, 0, 0, 0};
    bool has_ipp = false, has_iop = false;
    double ps[2] = {0, 0};
    bool has_ps = false;
    double slope = 1, intercept = 0;
};

struct FileInfo {
    std::string path;
    int status = SN_OK;           /* load/decode failure of this file */
    std::string why;
    bool is_dicom = false;
    std::string sop_uid, sop_class, series_uid, study_uid, for_uid, modality, ts, photometric;
    std::string units, decay_corr, rescale_type;
    std::string series_date, series_time, acq_date, acq_time;
    std::string inj_time, inj_datetime;
    double dose = 0, half_life = 0, weight = 0;
    bool has_dose = false, has_half_life = false, has_weight = false;
    double slice_thickness = 0, spacing_between = 0;
    double gantry_tilt = 0;
    int rows = 0, cols = 0, spp = 1, ba = 0, bs = 0, hb = 0, pr = 0, nframes = 1;
    bool has_pixels = false, multiframe_fg = false;
    std::vector<FrameInfo> frames;
    /* The parsed file, Pixel Data not yet read (loaded lazily from the file by decode_pixels);
     * dropped as soon as its slices are converted so that at most one file per worker holds
     * its pixels in memory. */
    std::unique_ptr<DcmFileFormat> ff;
    const uint8_t *raw = nullptr; /* decoded stored values, little endian, frame-major; in ff */
    double decode_ms = 0;
};

std::string get_str(DcmItem *it, const DcmTagKey &t)
{
    OFString s;
    if (it && it->findAndGetOFStringArray(t, s).good()) {
        std::string r(s.c_str());
        while (!r.empty() && (r.back() == ' ' || r.back() == '\0')) r.pop_back();
        size_t b = 0;
        while (b < r.size() && r[b] == ' ') b++;
        return r.substr(b);
    }
    return std::string();
}

bool get_doubles(DcmItem *it, const DcmTagKey &t, double *out, int n)
{
    if (!it) return false;
    for (int i = 0; i < n; i++) {
        Float64 v;
        if (it->findAndGetFloat64(t, v, (unsigned long)i).bad() || !std::isfinite(v)) return false;
        out[i] = v;
    }
    return true;
}

DcmItem *seq_item(DcmItem *it, const DcmTagKey &t)
{
    DcmItem *r = nullptr;
    if (!it || it->findAndGetSequenceItem(t, r, 0).bad()) return nullptr;
    return r;
}

/* A functional group macro for one frame: the per-frame item's, else the shared one. */
DcmItem *macro(DcmItem *perframe, DcmItem *shared, const DcmTagKey &t)
{
    DcmItem *r = seq_item(perframe, t);
    return r ? r : seq_item(shared, t);
}

bool is_image_sop_class(const std::string &c)
{
    static const char *const ok[] = {
        UID_CTImageStorage, UID_EnhancedCTImageStorage, UID_LegacyConvertedEnhancedCTImageStorage,
        UID_MRImageStorage, UID_EnhancedMRImageStorage, UID_LegacyConvertedEnhancedMRImageStorage,
        UID_PositronEmissionTomographyImageStorage, UID_EnhancedPETImageStorage,
        UID_LegacyConvertedEnhancedPETImageStorage, UID_NuclearMedicineImageStorage,
        UID_SecondaryCaptureImageStorage, UID_MultiframeGrayscaleByteSecondaryCaptureImageStorage,
        UID_MultiframeGrayscaleWordSecondaryCaptureImageStorage,
        UID_RTDoseStorage,
    };
    for (const char *u : ok)
        if (c == u) return true;
    return false;
}

std::string sop_class_name(const std::string &c)
{
    const char *n = dcmFindNameOfUID(c.c_str(), nullptr);
    return n ? std::string(n) + " (" + c + ")" : c;
}

double now_ms()
{
    return std::chrono::duration<double, std::milli>(
               std::chrono::steady_clock::now().time_since_epoch()).count();
}

/* "N frame(s) of CxR", for the messages that refuse a file's pixel data by its size. */
std::string frames_desc(const FileInfo &fi)
{
    return std::to_string(fi.nframes) + " frame(s) of " + std::to_string(fi.cols) + "x" +
           std::to_string(fi.rows);
}

/* Load one file and read its attributes; Pixel Data stays on disk until decode_pixels. Keeps
 * the parsed file in fi.ff for an image of the wanted series. Sets fi.status. */
void load_file(FileInfo &fi, const std::string &want_series)
{
    std::unique_ptr<DcmFileFormat> ffp(new DcmFileFormat);
    DcmFileFormat &ff = *ffp;
    /* Large values (Pixel Data) are read only when accessed, so that a file of another series
     * or a non-image object costs only its header. */
    OFCondition c = ff.loadFile(fi.path.c_str(), EXS_Unknown, EGL_noChange, 4096, ERM_autoDetect);
    if (c.bad()) {
        fi.status = SN_EDICOM;
        fi.why = std::string("cannot parse ") + fi.path + ": " + c.text() +
                 " (truncated or corrupt file)";
        /* Name the series in the error if the attributes before Pixel Data are intact. */
        DcmFileFormat head;
        if (head.loadFileUntilTag(fi.path.c_str(), EXS_Unknown, EGL_noChange, 4096,
                                  ERM_autoDetect, DCM_PixelData).good()) {
            fi.is_dicom = true;
            fi.series_uid = get_str(head.getDataset(), DCM_SeriesInstanceUID);
            fi.sop_class = get_str(head.getDataset(), DCM_SOPClassUID);
            fi.sop_uid = get_str(head.getDataset(), DCM_SOPInstanceUID);
        }
        return;
    }
    fi.is_dicom = true;
    DcmDataset *ds = ff.getDataset();
    DcmItem *meta = ff.getMetaInfo();
    fi.ts = get_str(meta, DCM_TransferSyntaxUID);
    if (fi.ts.empty()) fi.ts = DcmXfer(ds->getOriginalXfer()).getXferID();
    fi.sop_uid = get_str(ds, DCM_SOPInstanceUID);
    fi.sop_class = get_str(ds, DCM_SOPClassUID);
    fi.series_uid = get_str(ds, DCM_SeriesInstanceUID);
    fi.study_uid = get_str(ds, DCM_StudyInstanceUID);
    fi.for_uid = get_str(ds, DCM_FrameOfReferenceUID);
    fi.modality = get_str(ds, DCM_Modality);
    if (!want_series.empty() && fi.series_uid != want_series) return;
    if (!is_image_sop_class(fi.sop_class)) return;

    fi.photometric = get_str(ds, DCM_PhotometricInterpretation);
    fi.units = get_str(ds, DCM_Units);
    fi.decay_corr = get_str(ds, DCM_DecayCorrection);
    fi.rescale_type = get_str(ds, DCM_RescaleType);
    fi.series_date = get_str(ds, DCM_SeriesDate);
    fi.series_time = get_str(ds, DCM_SeriesTime);
    fi.acq_date = get_str(ds, DCM_AcquisitionDate);
    fi.acq_time = get_str(ds, DCM_AcquisitionTime);
    fi.has_weight = get_doubles(ds, DCM_PatientWeight, &fi.weight, 1);
    if (DcmItem *rp = seq_item(ds, DCM_RadiopharmaceuticalInformationSequence)) {
        fi.has_dose = get_doubles(rp, DCM_RadionuclideTotalDose, &fi.dose, 1);
        fi.has_half_life = get_doubles(rp, DCM_RadionuclideHalfLife, &fi.half_life, 1);
        fi.inj_time = get_str(rp, DCM_RadiopharmaceuticalStartTime);
        fi.inj_datetime = get_str(rp, DCM_RadiopharmaceuticalStartDateTime);
    }
    get_doubles(ds, DCM_GantryDetectorTilt, &fi.gantry_tilt, 1);
    Uint16 u16;
    if (ds->findAndGetUint16(DCM_Rows, u16).good()) fi.rows = u16;
    if (ds->findAndGetUint16(DCM_Columns, u16).good()) fi.cols = u16;
    if (ds->findAndGetUint16(DCM_SamplesPerPixel, u16).good()) fi.spp = u16;
    if (ds->findAndGetUint16(DCM_BitsAllocated, u16).good()) fi.ba = u16;
    fi.bs = fi.ba;
    if (ds->findAndGetUint16(DCM_BitsStored, u16).good()) fi.bs = u16;
    fi.hb = fi.bs - 1;
    if (ds->findAndGetUint16(DCM_HighBit, u16).good()) fi.hb = u16;
    if (ds->findAndGetUint16(DCM_PixelRepresentation, u16).good()) fi.pr = u16;
    Sint32 nf = 1;
    if (ds->findAndGetSint32(DCM_NumberOfFrames, nf).good() && nf > 0) fi.nframes = nf;
    fi.has_pixels = ds->tagExists(DCM_PixelData);
    if (fi.has_pixels && (fi.rows == 0 || fi.cols == 0)) {
        fi.status = SN_EDICOM;
        fi.why = fi.path + ": Rows/Columns missing or 0 (" + std::to_string(fi.cols) + "x" +
                 std::to_string(fi.rows) + ") in an image with Pixel Data";
        return;
    }
    /* Per-frame storage below, and the voxel grid, are sized by these attributes: bound them by
     * the file first. Each frame takes Rows x Columns x Samples x Bits Allocated in native Pixel
     * Data, at least an 8-byte item header when encapsulated (found by tests/fuzz); a deflated
     * file holds at most 1032 bytes per byte on disk (zlib's largest ratio). */
    if (fi.has_pixels) {
        struct stat sb;
        DcmXfer x(fi.ts.c_str());
        double per_frame = x.isEncapsulated()
                               ? 8.0
                               : (double)fi.rows * fi.cols * std::max(1, fi.spp) * fi.ba / 8.0;
        if (x.getStreamCompression() != ESC_none)
            per_frame /= 1032.0;
        if (stat(fi.path.c_str(), &sb) == 0 && per_frame * fi.nframes > (double)sb.st_size) {
            fi.status = SN_EDICOM;
            fi.why = fi.path + ": " + frames_desc(fi) + " (" +
                     (x.isEncapsulated() ? std::string("encapsulated") :
                      std::to_string(fi.ba) + " bits allocated") +
                     ") cannot fit in a file of " + std::to_string((long long)sb.st_size) +
                     " bytes (truncated pixel data, or wrong Rows/Columns/Number of Frames)";
            return;
        }
    }

    /* Geometry and the Modality LUT: per frame from the functional groups of an enhanced
     * object, else from the top level. */
    DcmItem *shared = seq_item(ds, DCM_SharedFunctionalGroupsSequence);
    DcmSequenceOfItems *pfs = nullptr;
    ds->findAndGetSequence(DCM_PerFrameFunctionalGroupsSequence, pfs);
    fi.multiframe_fg = pfs != nullptr;
    if (pfs) {
        if ((int)pfs->card() != fi.nframes) {
            fi.status = SN_EDICOM;
            fi.why = "Per-frame Functional Groups has " + std::to_string(pfs->card()) +
                     " items for " + std::to_string(fi.nframes) + " frames";
            return;
        }
        fi.frames.resize((size_t)fi.nframes);
        for (int f = 0; f < fi.nframes; f++) {
            DcmItem *pf = pfs->getItem((unsigned long)f);
            FrameInfo &fr = fi.frames[(size_t)f];
            fr.has_ipp = get_doubles(macro(pf, shared, DCM_PlanePositionSequence),
                                     DCM_ImagePositionPatient, fr.ipp, 3);
            fr.has_iop = get_doubles(macro(pf, shared, DCM_PlaneOrientationSequence),
                                     DCM_ImageOrientationPatient, fr.iop, 6);
            DcmItem *pm = macro(pf, shared, DCM_PixelMeasuresSequence);
            fr.has_ps = get_doubles(pm, DCM_PixelSpacing, fr.ps, 2);
            if (f == 0) {
                get_doubles(pm, DCM_SliceThickness, &fi.slice_thickness, 1);
                get_doubles(pm, DCM_SpacingBetweenSlices, &fi.spacing_between, 1);
            }
            DcmItem *pv = macro(pf, shared, DCM_PixelValueTransformationSequence);
            if (pv) {
                if (!get_doubles(pv, DCM_RescaleSlope, &fr.slope, 1)) fr.slope = 1;
                if (!get_doubles(pv, DCM_RescaleIntercept, &fr.intercept, 1)) fr.intercept = 0;
                if (f == 0 && fi.rescale_type.empty())
                    fi.rescale_type = get_str(pv, DCM_RescaleType);
            }
        }
    } else {
        FrameInfo fr;
        fr.has_ipp = get_doubles(ds, DCM_ImagePositionPatient, fr.ipp, 3);
        fr.has_iop = get_doubles(ds, DCM_ImageOrientationPatient, fr.iop, 6);
        fr.has_ps = get_doubles(ds, DCM_PixelSpacing, fr.ps, 2);
        if (!get_doubles(ds, DCM_RescaleSlope, &fr.slope, 1)) fr.slope = 1;
        if (!get_doubles(ds, DCM_RescaleIntercept, &fr.intercept, 1)) fr.intercept = 0;
        get_doubles(ds, DCM_SliceThickness, &fi.slice_thickness, 1);
        get_doubles(ds, DCM_SpacingBetweenSlices, &fi.spacing_between, 1);
        fi.frames.assign((size_t)fi.nframes, fr);
    }
    if (fi.has_pixels) fi.ff = std::move(ffp);
}

/* Read and decode the pixel data of a file loaded by load_file into fi.raw (owned by fi.ff).
 * Sets fi.status on failure. */
void decode_pixels(FileInfo &fi)
{
    if (!fi.ff || fi.status) return;
    if (fi.spp != 1) return;           /* refused by the caller with a clear message */
    if (fi.ba != 8 && fi.ba != 16 && fi.ba != 32) return;
    DcmDataset *ds = fi.ff->getDataset();
    double t0 = now_ms();
    /* A decoder sizes its output from Rows, Columns and Number of Frames alone. */
    double out_bytes = (double)fi.rows * fi.cols * (fi.ba / 8) * fi.nframes;
    if (out_bytes > (double)PIPELINE_MAX_PIXEL_BYTES) {
        fi.status = SN_EUNSUPPORTED;
        fi.why = fi.path + ": " + frames_desc(fi) + " at " +
                 std::to_string(fi.ba) + " bits are more than the " +
                 std::to_string((unsigned long long)PIPELINE_MAX_PIXEL_BYTES >> 20) +
                 " MiB of pixel data read from one file";
        return;
    }
    OFCondition c = ds->chooseRepresentation(EXS_LittleEndianExplicit, nullptr);
    if (c.bad() || !ds->canWriteXfer(EXS_LittleEndianExplicit)) {
        fi.status = SN_EDICOM;
        fi.why = std::string("cannot decode pixel data of ") + fi.path + " (" +
                 DcmXfer(fi.ts.c_str()).getXferName() + "): " +
                 (c.bad() ? c.text() : "no decoder") + " — corrupt or truncated pixel data";
        return;
    }
    DcmElement *px = nullptr;
    Uint8 *bytes = nullptr;
    if (ds->findAndGetElement(DCM_PixelData, px).bad() || !px || px->getUint8Array(bytes).bad() ||
        !bytes) {
        fi.status = SN_EDICOM;
        fi.why = "cannot read pixel data of " + fi.path + " (truncated file?)";
        return;
    }
    size_t need = (size_t)fi.rows * fi.cols * (size_t)(fi.ba / 8) * (size_t)fi.nframes;
    if ((size_t)px->getLength() < need) {
        fi.status = SN_EDICOM;
        fi.why = "pixel data of " + fi.path + " is " + std::to_string(px->getLength()) +
                 " bytes, " + std::to_string(need) + " needed for " + frames_desc(fi) +
                 " (truncated)";
        return;
    }
    fi.raw = bytes;
    fi.decode_ms += now_ms() - t0;
}

/* Stored value of pixel `i` of `fi.raw`: masked to Bits Stored below High Bit, sign-extended. */
inline int32_t stored_value(const FileInfo &fi, size_t i)
{
    uint32_t v;
    if (fi.ba == 16) {
        uint16_t w;
        memcpy(&w, fi.raw + 2 * i, 2);
        v = w;
    } else if (fi.ba == 8) {
        v = fi.raw[i];
    } else {
        memcpy(&v, fi.raw + 4 * i, 4);
    }
    int shift = fi.hb + 1 - fi.bs;
    if (shift > 0) v >>= shift;
    if (fi.bs < 32) {
        v &= (uint32_t(1) << fi.bs) - 1;
        if (fi.pr && (v >> (fi.bs - 1)) & 1) v |= ~((uint32_t(1) << fi.bs) - 1);
    }
    return (int32_t)v;
}

/* malloc for a voxel grid; a large one asks for transparent huge pages, which saves most of the
 * page faults of filling it. Free with free(). */
void *alloc_grid(size_t bytes)
{
    const size_t huge = (size_t)2 << 20;
    if (bytes < 4 * huge) return malloc(bytes);
    void *p = nullptr;
    if (posix_memalign(&p, huge, bytes) != 0) return nullptr;
#ifdef MADV_HUGEPAGE
    madvise(p, bytes, MADV_HUGEPAGE);   /* advice only: THP may be off */
#endif
    return p;
}

/* Slice `plane` values of fi.raw from `base` through the Modality LUT a*x+b into floats. */
void convert_float(const FileInfo &f, size_t base, size_t plane, double a, double b, float *dst)
{
    if (f.ba == 16 && f.hb == f.bs - 1) {
        /* The common case, without per-pixel branching on the layout. */
        const uint16_t *src = reinterpret_cast<const uint16_t *>(f.raw) + base;
        const uint32_t mask = f.bs >= 16 ? 0xFFFFu : (1u << f.bs) - 1;
        const float fa = (float)a, fb = (float)b;
        if (f.pr) {
            const int sh = 32 - f.bs;
            for (size_t i = 0; i < plane; i++)
                dst[i] = fa * (float)((int32_t)((uint32_t)(src[i] & mask) << sh) >> sh) + fb;
        } else {
            for (size_t i = 0; i < plane; i++) dst[i] = fa * (float)(src[i] & mask) + fb;
        }
    } else {
        for (size_t i = 0; i < plane; i++) dst[i] = (float)(a * stored_value(f, base + i) + b);
    }
}

/* dst[i] = stored(src[i]) * a + b for 16-bit words with High Bit = Bits Stored - 1, keeping the
 * range of the results in lo/hi. Inlined with a == 1 where the slope is 1 (no multiply). */
template <bool SIGNED>
inline void lut_int16(const uint16_t *src, size_t n, uint32_t mask, int sh, int32_t a, int32_t b,
                      int16_t *dst, int32_t &lo, int32_t &hi)
{
    int32_t l = lo, h = hi;
    for (size_t i = 0; i < n; i++) {
        int32_t x = SIGNED ? (int32_t)((uint32_t)(src[i] & mask) << sh) >> sh
                           : (int32_t)(src[i] & mask);
        x = x * a + b;
        l = std::min(l, x);
        h = std::max(h, x);
        dst[i] = (int16_t)x;
    }
    lo = l;
    hi = h;
}

/* Same into int16 for a whole-number slope and intercept (checked by the caller): exact integer
 * arithmetic. Returns false if a value does not fit int16 (dst is then partly written). */
bool convert_int16(const FileInfo &f, size_t base, size_t plane, const FrameInfo &fr,
                   int16_t *dst)
{
    const int64_t a = (int64_t)fr.slope, b = (int64_t)fr.intercept;
    if (f.ba == 16 && f.hb == f.bs - 1 && a >= -16384 && a <= 16384 && b >= -(1 << 20) &&
        b <= (1 << 20)) {
        /* |x*a + b| < 2^31: int32 arithmetic, loops the compiler vectorises. */
        const uint16_t *src = reinterpret_cast<const uint16_t *>(f.raw) + base;
        const uint32_t mask = f.bs >= 16 ? 0xFFFFu : (1u << f.bs) - 1;
        const int sh = 32 - f.bs;
        int32_t lo = INT32_MAX, hi = INT32_MIN;
        if (f.pr && a == 1)
            lut_int16<true>(src, plane, mask, sh, 1, (int32_t)b, dst, lo, hi);
        else if (f.pr)
            lut_int16<true>(src, plane, mask, sh, (int32_t)a, (int32_t)b, dst, lo, hi);
        else if (a == 1)
            lut_int16<false>(src, plane, mask, sh, 1, (int32_t)b, dst, lo, hi);
        else
            lut_int16<false>(src, plane, mask, sh, (int32_t)a, (int32_t)b, dst, lo, hi);
        return lo >= INT16_MIN && hi <= INT16_MAX;
    }
    for (size_t i = 0; i < plane; i++) {
        int64_t x = a * (int64_t)stored_value(f, base + i) + b;
        if (x < INT16_MIN || x > INT16_MAX) return false;
        dst[i] = (int16_t)x;
    }
    return true;
}

/* Run fn(i) for i in [0, count) on up to `threads` threads; an exception marks files[i]. */
template <class Fn>
void run_workers(FileInfo *const *files, size_t count, int threads, Fn fn)
{
    std::atomic<size_t> next{0};
    auto work = [&]() {
        for (;;) {
            size_t i = next.fetch_add(1);
            if (i >= count) return;
            FileInfo &f = *files[i];
            try {
                fn(i);
            } catch (const std::exception &e) {
                f.status = SN_EINTERNAL;
                f.why = std::string("reading ") + f.path + ": " + e.what();
            } catch (...) {
                f.status = SN_EINTERNAL;
                f.why = "reading " + f.path + ": unexpected exception";
            }
            if (f.status) f.ff.reset();
        }
    };
    int n = std::max(1, std::min<int>(threads, (int)count));
    if (n == 1) {
        work();
        return;
    }
    std::vector<std::thread> ts;
    for (int t = 0; t < n; t++) ts.emplace_back(work);
    for (auto &t : ts) t.join();
}

/* ---- PET SUV -------------------------------------------------------------------------------- */

/* Seconds since 1970 of a DICOM DA + TM ("YYYYMMDD", "HHMMSS.frac" or "HH:MM:SS"), or NAN. */
double dicom_seconds(const std::string &da, const std::string &tm)
{
    if (da.size() < 8 || tm.size() < 2) return NAN;
    int y = atoi(da.substr(0, 4).c_str()), mo = atoi(da.substr(4, 2).c_str()),
        d = atoi(da.substr(6, 2).c_str());
    std::string t;
    for (char ch : tm)
        if (ch != ':') t += ch;
    int hh = atoi(t.substr(0, 2).c_str());
    int mm = t.size() >= 4 ? atoi(t.substr(2, 2).c_str()) : 0;
    double ss = t.size() >= 6 ? atof(t.substr(4).c_str()) : 0;
    /* days from civil (Howard Hinnant) */
    y -= mo <= 2;
    long era = (y >= 0 ? y : y - 399) / 400;
    long yoe = y - era * 400;
    long doy = (153 * (mo + (mo > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    long doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    long days = era * 146097 + doe - 719468;
    return (double)days * 86400.0 + hh * 3600.0 + mm * 60.0 + ss;
}

/* The factor that turns BQML into SUVbw, or 0 with `why` saying what is missing. */
double suv_factor(const std::vector<FileInfo *> &fs, std::string &why)
{
    const FileInfo &f = *fs[0];
    if (f.units != "BQML") { why = "Units (0054,1001) is '" + f.units + "', not BQML"; return 0; }
    if (!f.has_weight || f.weight <= 0) { why = "no Patient's Weight"; return 0; }
    if (!f.has_dose || f.dose <= 0) { why = "no Radionuclide Total Dose"; return 0; }
    double decay = 1.0;
    if (f.decay_corr == "START") {
        if (!f.has_half_life || f.half_life <= 0) { why = "no Radionuclide Half Life"; return 0; }
        double scan = dicom_seconds(f.series_date, f.series_time);
        /* Some scanners rewrite Series Time after the scan: use the earliest acquisition. */
        for (const FileInfo *g : fs) {
            double a = dicom_seconds(g->acq_date.empty() ? g->series_date : g->acq_date,
                                     g->acq_time);
            if (std::isfinite(a) && (!std::isfinite(scan) || a < scan)) scan = a;
        }
        if (!std::isfinite(scan)) { why = "no Series/Acquisition Date and Time"; return 0; }
        double inj = NAN;
        if (f.inj_datetime.size() >= 10)
            inj = dicom_seconds(f.inj_datetime.substr(0, 8), f.inj_datetime.substr(8));
        else if (!f.inj_time.empty()) {
            inj = dicom_seconds(f.series_date.empty() ? f.acq_date : f.series_date, f.inj_time);
            if (std::isfinite(inj) && inj > scan) inj -= 86400.0;   /* injected the day before */
        }
        if (!std::isfinite(inj)) { why = "no Radiopharmaceutical Start (Date)Time"; return 0; }
        if (scan < inj) { why = "injection time is after the scan"; return 0; }
        decay = std::pow(2.0, -(scan - inj) / f.half_life);
    } else if (f.decay_corr != "ADMIN") {
        why = "Decay Correction is '" + f.decay_corr + "' (START or ADMIN needed)";
        return 0;
    }
    return f.weight * 1000.0 / (f.dose * decay);
}

/* ---- the reader ----------------------------------------------------------------------------- */

struct Slice {
    FileInfo *file;
    int frame;          /* 0-based */
};

int fail(char *err, size_t errlen, int rc, const std::string &series, const std::string &why)
{
    return sn_errf(err, errlen, rc, "series %s: %s", series.empty() ? "(unknown)" : series.c_str(),
                   why.c_str());
}

bool has_dicm_magic(const std::string &path)
{
    FILE *f = fopen(path.c_str(), "rb");
    if (!f) return false;
    char buf[132];
    bool ok = fread(buf, 1, 132, f) == 132 && memcmp(buf + 128, "DICM", 4) == 0;
    fclose(f);
    return ok;
}

int read_volume(std::vector<std::string> paths, bool from_dir, const pipeline_volume_opts *o,
                pipeline_volume **out, char *err, size_t errlen)
{
    double t_start = now_ms();
    pipeline_codecs_register();
    pipeline_volume_opts opts;
    pipeline_volume_opts_default(&opts);
    if (o) opts = *o;
    int threads = opts.threads > 0 ? opts.threads : (int)std::max(1L, sysconf(_SC_NPROCESSORS_ONLN));
    std::string want = opts.series_uid ? opts.series_uid : "";

    std::vector<FileInfo> files(paths.size());
    for (size_t i = 0; i < paths.size(); i++) files[i].path = paths[i];
    std::vector<FileInfo *> all(files.size());
    for (size_t i = 0; i < files.size(); i++) all[i] = &files[i];
    run_workers(all.data(), all.size(), threads, [&](size_t i) { load_file(*all[i], want); });

    /* Which series are here? */
    std::map<std::string, int> series_count;
    for (FileInfo &f : files) {
        /* A folder's files were picked by their DICM magic, so a file that fails to parse
         * is a broken instance, not a stray file: refuse rather than build a partial volume. */
        if (f.status && !f.is_dicom) return sn_errf(err, errlen, SN_EDICOM, "%s", f.why.c_str());
        if (!want.empty() && f.series_uid != want) continue;
        series_count[f.series_uid]++;
    }
    if (series_count.empty()) {
        if (!want.empty()) return fail(err, errlen, SN_ENOENT, want, "no instance of it was found");
        return sn_errf(err, errlen, SN_EINVAL, "no DICOM files found");
    }
    if (series_count.size() > 1) {
        std::string list;
        for (auto &kv : series_count)
            list += (list.empty() ? "" : ", ") + (kv.first.empty() ? "(none)" : kv.first) + " (" +
                    std::to_string(kv.second) + " files)";
        return sn_errf(err, errlen, SN_EINVAL, "%zu series found, pick one by UID: %s",
                       series_count.size(), list.c_str());
    }
    const std::string series = series_count.begin()->first;

    std::vector<FileInfo *> fs;
    for (FileInfo &f : files)
        if (f.is_dicom && f.series_uid == series) fs.push_back(&f);
    for (FileInfo *f : fs) {
        if (!is_image_sop_class(f->sop_class))
            return fail(err, errlen, SN_EDICOM, series,
                        "non-image SOP class " + sop_class_name(f->sop_class) + " in " + f->path +
                        ": not an image series");
        if (f->status) return fail(err, errlen, f->status, series, f->why);
        if (!f->has_pixels)
            return fail(err, errlen, SN_EDICOM, series, f->path + " has no Pixel Data");
        if (f->spp != 1 || (f->photometric != "MONOCHROME1" && f->photometric != "MONOCHROME2"))
            return fail(err, errlen, SN_EUNSUPPORTED, series,
                        "colour image (Photometric Interpretation " + f->photometric +
                        ", Samples per Pixel " + std::to_string(f->spp) + ") in " + f->path);
        if ((f->ba != 8 && f->ba != 16 && f->ba != 32) || f->bs < 1 || f->bs > f->ba ||
            f->hb < f->bs - 1 || f->hb >= f->ba)
            return fail(err, errlen, SN_EDICOM, series,
                        "invalid Bits Allocated/Stored/High Bit " + std::to_string(f->ba) + "/" +
                        std::to_string(f->bs) + "/" + std::to_string(f->hb) + " in " + f->path);
        if (std::fabs(f->gantry_tilt) > 1e-3) {
            char b[96];
            snprintf(b, sizeof b, "gantry tilt of %.2f degrees (Gantry/Detector Tilt); resample "
                     "before use", f->gantry_tilt);
            return fail(err, errlen, SN_EDICOM, series, b);
        }
        if (f->nframes > 1 && !f->multiframe_fg)
            return fail(err, errlen, SN_EUNSUPPORTED, series,
                        "multi-frame object without functional groups (" +
                        sop_class_name(f->sop_class) + ") in " + f->path);
    }
    /* Same grid in every slice. */
    const FileInfo &f0 = *fs[0];
    for (FileInfo *f : fs)
        if (f->rows != f0.rows || f->cols != f0.cols) {
            char b[256];
            snprintf(b, sizeof b, "mixed rows/columns: %dx%d in %s, %dx%d in %s", f0.cols, f0.rows,
                     f0.path.c_str(), f->cols, f->rows, f->path.c_str());
            return fail(err, errlen, SN_EDICOM, series, b);
        }
    std::vector<Slice> slices;
    std::set<std::pair<std::string, int>> seen;
    for (FileInfo *f : fs) {
        /* The same instance twice (copied into two folders) is one instance. */
        if (!seen.insert({f->sop_uid, -1}).second) continue;
        for (int fr = 0; fr < f->nframes; fr++) slices.push_back({f, fr});
    }
    const FrameInfo &fr0 = f0.frames[0];
    for (const Slice &s : slices) {
        const FrameInfo &fr = s.file->frames[(size_t)s.frame];
        if (!fr.has_ps)
            return fail(err, errlen, SN_EDICOM, series, "missing Pixel Spacing in " + s.file->path);
        if (std::fabs(fr.ps[0] - fr0.ps[0]) > 1e-4 || std::fabs(fr.ps[1] - fr0.ps[1]) > 1e-4) {
            char b[160];
            snprintf(b, sizeof b, "inconsistent Pixel Spacing between slices: %g\\%g vs %g\\%g",
                     fr0.ps[0], fr0.ps[1], fr.ps[0], fr.ps[1]);
            return fail(err, errlen, SN_EDICOM, series, b);
        }
    }
    if ((int)slices.size() < std::max(1, opts.min_slices)) {
        char b[160];
        snprintf(b, sizeof b, "a single slice is not a volume (%zu slice(s), at least %d needed)",
                 slices.size(), std::max(1, opts.min_slices));
        return fail(err, errlen, SN_EDICOM, series, b);
    }

    /* Geometry. */
    std::vector<pipeline_geom_slice> gs(slices.size());
    for (size_t i = 0; i < slices.size(); i++) {
        const FrameInfo &fr = slices[i].file->frames[(size_t)slices[i].frame];
        memcpy(gs[i].ipp, fr.ipp, sizeof fr.ipp);
        memcpy(gs[i].iop, fr.iop, sizeof fr.iop);
        gs[i].has_ipp = fr.has_ipp;
        gs[i].has_iop = fr.has_iop;
    }
    std::vector<int> order(slices.size()), kpos(slices.size());
    pipeline_geom_stack st;
    double single_dz = f0.spacing_between > 0 ? f0.spacing_between : f0.slice_thickness;
    char gerr[512];
    int rc = pipeline_geom_stack_build(gs.data(), (int)gs.size(), single_dz,
                                       opts.spacing_tolerance, opts.fill_gaps, &st, order.data(),
                                       kpos.data(), gerr, sizeof gerr);
    if (rc) return fail(err, errlen, rc, series, gerr);

    /* Values. */
    pipeline_volume *v = (pipeline_volume *)calloc(1, sizeof *v);
    if (!v) return sn_errf(err, errlen, SN_ENOMEM, "out of memory");
    v->nx = f0.cols;
    v->ny = f0.rows;
    v->nz = st.nz;
    /* Pixel Spacing is row spacing (between rows, along j) \ column spacing (along i). */
    v->spacing[0] = fr0.ps[1];
    v->spacing[1] = fr0.ps[0];
    v->spacing[2] = st.dz;
    memcpy(v->origin, st.origin, sizeof v->origin);
    memcpy(v->direction, st.direction, sizeof v->direction);
    v->filled_slices = st.gaps;
    const size_t plane = (size_t)v->nx * v->ny;
    double scale = 1.0;
    std::string unit;
    /* A CT's Modality LUT output is HU by definition; "US" (unspecified) is common in enhanced CT. */
    if (f0.modality == "CT" &&
        (f0.rescale_type.empty() || f0.rescale_type == "HU" || f0.rescale_type == "US"))
        unit = "HU";
    else if (f0.modality == "PT") unit = f0.units;
    else unit = f0.rescale_type;
    if (f0.modality == "PT" && opts.pet_suv) {
        std::string why;
        double k = suv_factor(fs, why);
        if (k > 0) {
            scale = k;
            unit = "SUVbw";
        } else {
            snprintf(v->unit_note, sizeof v->unit_note, "not converted to SUV: %s", why.c_str());
        }
    }
    sn_strlcpy(v->unit, unit.c_str(), sizeof v->unit);

    /* Integers are kept as int16 (opts.int16) when the Modality LUT of every slice maps integers
     * to integers; whether every value fits is known only once converted (overflow below). */
    bool use16 = opts.int16 && scale == 1.0 && st.gaps == 0;
    for (const Slice &sl : slices) {
        const FrameInfo &fr = sl.file->frames[(size_t)sl.frame];
        if (!(std::fabs(fr.slope) <= 65536 && std::fabs(fr.intercept) <= 1e9 &&
              fr.slope == std::floor(fr.slope) && fr.intercept == std::floor(fr.intercept)))
            use16 = false;
    }
    const size_t max_voxels = opts.max_voxels > 0 ? opts.max_voxels : PIPELINE_VOLUME_MAX_VOXELS;
    if ((double)plane * v->nz > (double)max_voxels) {
        char b[200];
        snprintf(b, sizeof b, "a %dx%dx%d grid is larger than the %zu voxels allowed", f0.cols,
                 f0.rows, st.nz, max_voxels);
        pipeline_volume_free(v);
        return fail(err, errlen, SN_EUNSUPPORTED, series, b);
    }
    if (use16) v->data16 = (int16_t *)alloc_grid(sizeof(int16_t) * plane * (size_t)v->nz);
    else v->data = (float *)alloc_grid(sizeof(float) * plane * (size_t)v->nz);
    v->slices = (pipeline_slice_source *)calloc((size_t)v->nz, sizeof *v->slices);
    if ((!v->data && !v->data16) || !v->slices) {
        pipeline_volume_free(v);
        return sn_errf(err, errlen, SN_ENOMEM, "out of memory for a %dx%dx%d volume", f0.cols,
                       f0.rows, st.nz);
    }

    /* Which slices each file holds; then decode and convert file by file in parallel, each
     * file's pixels dropped once its slices are in the grid. */
    std::map<FileInfo *, std::vector<std::pair<int, int>>> where;   /* file -> (frame, k) */
    for (size_t s = 0; s < slices.size(); s++) {
        const Slice &sl = slices[(size_t)order[s]];
        const FileInfo &f = *sl.file;
        int k = kpos[s];
        where[sl.file].push_back({sl.frame, k});
        pipeline_slice_source &src = v->slices[k];
        sn_strlcpy(src.sop_instance_uid, f.sop_uid.c_str(), sizeof src.sop_instance_uid);
        sn_strlcpy(src.sop_class_uid, f.sop_class.c_str(), sizeof src.sop_class_uid);
        src.frame = f.multiframe_fg || f.nframes > 1 ? sl.frame + 1 : 0;
    }
    std::vector<FileInfo *> jobs;
    for (FileInfo *f : fs)
        if (where.count(f)) jobs.push_back(f);
    std::atomic<bool> overflow{false};
    run_workers(jobs.data(), jobs.size(), threads, [&](size_t i) {
        FileInfo &f = *jobs[i];
        decode_pixels(f);
        if (f.status) return;
        for (const auto &fk : where[&f]) {
            if (overflow.load(std::memory_order_relaxed)) break;
            const FrameInfo &fr = f.frames[(size_t)fk.first];
            const size_t base = plane * (size_t)fk.first, at = plane * (size_t)fk.second;
            if (use16) {
                if (!convert_int16(f, base, plane, fr, v->data16 + at)) overflow = true;
            } else {
                convert_float(f, base, plane, fr.slope * scale, fr.intercept * scale,
                              v->data + at);
            }
        }
        f.ff.reset();
        f.raw = nullptr;
    });
    for (FileInfo *f : jobs)
        if (f->status) {
            pipeline_volume_free(v);
            return fail(err, errlen, f->status, series, f->why);
        }
    if (overflow) {
        /* Some value is outside int16: read again into floats (rare: the headers are cheap and
         * the pixels were not kept). */
        pipeline_volume_free(v);
        opts.int16 = 0;
        return read_volume(std::move(paths), from_dir, &opts, out, err, errlen);
    }
    /* Fill the gaps between sorted slices by linear interpolation, if asked to. */
    for (size_t s = 1; s < slices.size() && st.gaps; s++) {
        int k0 = kpos[s - 1], k = kpos[s];
        if (k0 + 1 >= k) continue;
        const float *lo = v->data + plane * (size_t)k0, *hi = v->data + plane * (size_t)k;
        for (int kk = k0 + 1; kk < k; kk++) {
            float w = (float)(kk - k0) / (float)(k - k0);
            float *d = v->data + plane * (size_t)kk;
            for (size_t i = 0; i < plane; i++) d[i] = (1 - w) * lo[i] + w * hi[i];
        }
    }
    if (st.gaps)
        SN_LOG_WARN("volume", "series %s: %d missing slice(s) filled by interpolation",
                    series.c_str(), st.gaps);
    sn_strlcpy(v->modality, f0.modality.c_str(), sizeof v->modality);
    sn_strlcpy(v->series_uid, series.c_str(), sizeof v->series_uid);
    sn_strlcpy(v->study_uid, f0.study_uid.c_str(), sizeof v->study_uid);
    sn_strlcpy(v->frame_of_reference_uid, f0.for_uid.c_str(), sizeof v->frame_of_reference_uid);
    sn_strlcpy(v->photometric, f0.photometric.c_str(), sizeof v->photometric);
    sn_strlcpy(v->transfer_syntax, f0.ts.c_str(), sizeof v->transfer_syntax);
    for (FileInfo *f : fs) v->decode_ms += f->decode_ms;
    v->threads = std::max(1, std::min<int>(threads, (int)files.size()));
    v->load_ms = now_ms() - t_start;
    *out = v;
    return SN_OK;
}

void walk(const std::string &dir, std::vector<std::string> &out, int depth)
{
    if (depth > 32) return;
    DIR *d = opendir(dir.c_str());
    if (!d) return;
    while (struct dirent *e = readdir(d)) {
        if (e->d_name[0] == '.') continue;
        std::string p = dir + "/" + e->d_name;
        struct stat sb;
        if (stat(p.c_str(), &sb) != 0) continue;
        if (S_ISDIR(sb.st_mode)) walk(p, out, depth + 1);
        else if (S_ISREG(sb.st_mode) && has_dicm_magic(p)) out.push_back(p);
    }
    closedir(d);
}

} // namespace

extern "C" int pipeline_codecs_register(void)
{
    static std::once_flag once;
    std::call_once(once, [] {
        DJDecoderRegistration::registerCodecs();
        DJLSDecoderRegistration::registerCodecs();
        DcmRLEDecoderRegistration::registerCodecs();
        pipeline_codec_j2k_register();
    });
    return SN_OK;
}

extern "C" void pipeline_volume_opts_default(pipeline_volume_opts *o)
{
    memset(o, 0, sizeof *o);
    o->pet_suv = 1;
    o->min_slices = 2;
}

extern "C" int pipeline_volume_read_files(const char *const *paths, int n,
                                          const pipeline_volume_opts *opts,
                                          pipeline_volume **out, char *err, size_t errlen)
{
    if (!out) return sn_errf(err, errlen, SN_EINVAL, "no output");
    *out = nullptr;
    if (!paths || n <= 0) return sn_errf(err, errlen, SN_EINVAL, "no files given");
    try {
        std::vector<std::string> p;
        for (int i = 0; i < n; i++) p.emplace_back(paths[i]);
        return read_volume(p, false, opts, out, err, errlen);
    } catch (const std::bad_alloc &) {
        return sn_errf(err, errlen, SN_ENOMEM, "out of memory");
    } catch (const std::exception &e) {
        return sn_errf(err, errlen, SN_EINTERNAL, "reading series: %s", e.what());
    } catch (...) {
        return sn_errf(err, errlen, SN_EINTERNAL, "reading series: unexpected exception");
    }
}

extern "C" int pipeline_volume_read_dir(const char *dir, const pipeline_volume_opts *opts,
                                        pipeline_volume **out, char *err, size_t errlen)
{
    if (!out) return sn_errf(err, errlen, SN_EINVAL, "no output");
    *out = nullptr;
    try {
        struct stat sb;
        if (!dir || stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode))
            return sn_errf(err, errlen, SN_ENOENT, "%s: not a folder", dir ? dir : "(null)");
        std::vector<std::string> p;
        walk(dir, p, 0);
        std::sort(p.begin(), p.end());
        if (p.empty()) return sn_errf(err, errlen, SN_ENOENT, "%s: no DICOM files", dir);
        int rc = read_volume(p, true, opts, out, err, errlen);
        return rc;
    } catch (const std::bad_alloc &) {
        return sn_errf(err, errlen, SN_ENOMEM, "out of memory");
    } catch (const std::exception &e) {
        return sn_errf(err, errlen, SN_EINTERNAL, "reading %s: %s", dir, e.what());
    } catch (...) {
        return sn_errf(err, errlen, SN_EINTERNAL, "reading %s: unexpected exception", dir);
    }
}

extern "C" void pipeline_volume_free(pipeline_volume *v)
{
    if (!v) return;
    free(v->data);
    free(v->data16);
    free(v->slices);
    free(v);
}

extern "C" int pipeline_frames_read(const char *path, pipeline_frames **out, char *err,
                                    size_t errlen)
{
    if (!out) return sn_errf(err, errlen, SN_EINVAL, "no output");
    *out = nullptr;
    try {
        pipeline_codecs_register();
        FileInfo fi;
        fi.path = path;
        load_file(fi, "");
        decode_pixels(fi);
        if (fi.status) return sn_errf(err, errlen, fi.status, "%s", fi.why.c_str());
        if (!fi.has_pixels) return sn_errf(err, errlen, SN_EDICOM, "%s has no Pixel Data", path);
        if (fi.spp != 1 || !fi.raw)
            return sn_errf(err, errlen, SN_EUNSUPPORTED, "%s: only monochrome images with 8, 16 "
                           "or 32 bits allocated are read", path);
        /* As the volume reader checks them: stored_value shifts by these (found by tests/fuzz). */
        if (fi.bs < 1 || fi.bs > fi.ba || fi.hb < fi.bs - 1 || fi.hb >= fi.ba)
            return sn_errf(err, errlen, SN_EDICOM, "%s: invalid Bits Allocated/Stored/High Bit %d/%d/%d",
                           path, fi.ba, fi.bs, fi.hb);
        size_t n = (size_t)fi.rows * fi.cols * fi.nframes;
        if (n > PIPELINE_MAX_PIXEL_BYTES / sizeof(int32_t))
            return sn_errf(err, errlen, SN_EUNSUPPORTED, "%s: %d frame(s) of %dx%d are more than "
                           "the %zu values read from one file", path, fi.nframes, fi.cols,
                           fi.rows, PIPELINE_MAX_PIXEL_BYTES / sizeof(int32_t));
        pipeline_frames *f = (pipeline_frames *)calloc(1, sizeof *f);
        if (!f || !(f->values = (int32_t *)malloc(sizeof(int32_t) * n))) {
            free(f);
            return sn_errf(err, errlen, SN_ENOMEM, "out of memory");
        }
        for (size_t i = 0; i < n; i++) f->values[i] = stored_value(fi, i);
        f->rows = fi.rows;
        f->cols = fi.cols;
        f->frames = fi.nframes;
        f->samples = fi.spp;
        f->bits_allocated = fi.ba;
        f->bits_stored = fi.bs;
        f->pixel_representation = fi.pr;
        sn_strlcpy(f->transfer_syntax, fi.ts.c_str(), sizeof f->transfer_syntax);
        *out = f;
        return SN_OK;
    } catch (const std::bad_alloc &) {
        return sn_errf(err, errlen, SN_ENOMEM, "out of memory");
    } catch (const std::exception &e) {
        return sn_errf(err, errlen, SN_EINTERNAL, "reading %s: %s", path, e.what());
    } catch (...) {
        return sn_errf(err, errlen, SN_EINTERNAL, "reading %s: unexpected exception", path);
    }
}

extern "C" void pipeline_frames_free(pipeline_frames *f)
{
    if (!f) return;
    free(f->values);
    free(f);
}
