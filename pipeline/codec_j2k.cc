/* pipeline/codec_j2k.cc — JPEG 2000 decoder for DCMTK built on OpenJPEG (see codec_j2k.h).
 * The fragments of each frame are fed to OpenJPEG through our own opj_stream callbacks (no copy),
 * one codestream per frame; raw codestream vs JP2 is decided by magic bytes; OpenJPEG runs in
 * strict mode and a codestream must end with EOC, so truncated data is an error, never a partial
 * image. Decoded values are checked against Bits Stored / Pixel Representation. */
#include "pipeline/codec_j2k.h"

#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dccodec.h>
#include <dcmtk/dcmdata/dcdatset.h>
#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcerror.h>
#include <dcmtk/dcmdata/dcitem.h>
#include <dcmtk/dcmdata/dcpixel.h>
#include <dcmtk/dcmdata/dcpixseq.h>
#include <dcmtk/dcmdata/dcpxitem.h>
#include <dcmtk/dcmdata/dcstack.h>
#include <dcmtk/dcmdata/dcswap.h>
#include <dcmtk/dcmdata/dcvrobow.h>
#include <dcmtk/dcmdata/dcxfer.h>

#include <openjpeg.h>

#include <algorithm>
#include <atomic>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

extern "C" {
#include "common/status.h"
}

namespace {

struct Span {
    const uint8_t *p;
    size_t n;
};

/* ---- opj_stream over a list of fragments ---------------------------------------------------- */

struct FragStream {
    const std::vector<Span> *spans;
    size_t total;
    size_t pos;         /* absolute position */
};

static OPJ_SIZE_T fs_read(void *buf, OPJ_SIZE_T n, void *ud)
{
    FragStream *s = static_cast<FragStream *>(ud);
    if (s->pos >= s->total) return (OPJ_SIZE_T)-1;
    size_t want = std::min<size_t>(n, s->total - s->pos), done = 0, base = 0;
    for (const Span &sp : *s->spans) {
        if (done == want) break;
        size_t at = s->pos + done;
        if (at < base + sp.n) {
            size_t off = at - base, k = std::min(sp.n - off, want - done);
            memcpy(static_cast<uint8_t *>(buf) + done, sp.p + off, k);
            done += k;
        }
        base += sp.n;
    }
    s->pos += done;
    return done;
}

static OPJ_OFF_T fs_skip(OPJ_OFF_T n, void *ud)
{
    FragStream *s = static_cast<FragStream *>(ud);
    if (n < 0) {
        if ((size_t)(-n) > s->pos) return -1;
        s->pos -= (size_t)(-n);
        return n;
    }
    if (s->pos + (size_t)n > s->total) {   /* skipping past the end: truncated */
        OPJ_OFF_T k = (OPJ_OFF_T)(s->total - s->pos);
        s->pos = s->total;
        return k == 0 ? -1 : k;
    }
    s->pos += (size_t)n;
    return n;
}

static OPJ_BOOL fs_seek(OPJ_OFF_T pos, void *ud)
{
    FragStream *s = static_cast<FragStream *>(ud);
    if (pos < 0 || (size_t)pos > s->total) return OPJ_FALSE;
    s->pos = (size_t)pos;
    return OPJ_TRUE;
}

struct Msgs {
    std::string error, warning;
};
static void on_error(const char *msg, void *ud)
{
    Msgs *m = static_cast<Msgs *>(ud);
    if (m->error.empty()) m->error = msg;
    while (!m->error.empty() && (m->error.back() == '\n' || m->error.back() == ' '))
        m->error.pop_back();
}
static void on_warning(const char *msg, void *ud)
{
    Msgs *m = static_cast<Msgs *>(ud);
    if (m->warning.empty()) m->warning = msg;
    while (!m->warning.empty() && (m->warning.back() == '\n' || m->warning.back() == ' '))
        m->warning.pop_back();
}
static void on_info(const char *, void *) {}

static uint8_t byte_at(const std::vector<Span> &spans, size_t at)
{
    for (const Span &sp : spans) {
        if (at < sp.n) return sp.p[at];
        at -= sp.n;
    }
    return 0;
}

static int errf(std::string &why, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int errf(std::string &why, const char *fmt, ...)
{
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    why = buf;
    return SN_EDICOM;
}

/* Decode one frame made of `spans` into `out`. */
/* One decoded component into every samples-th element of dst. A value outside [lo, hi] is
 * clamped when the coding was lossy (irreversible coding rings past the range the encoder's input
 * was in); lossless data must be exact, so there it stops and returns false with the value. */
template <typename T>
static bool put_component(const OPJ_INT32 *src, size_t npix, int samples, int64_t lo, int64_t hi,
                          bool lossy, T *dst, int32_t *bad)
{
    for (size_t i = 0; i < npix; i++) {
        int32_t v = src[i];
        if (v < lo || v > hi) {
            if (!lossy) {
                *bad = v;
                return false;
            }
            v = (int32_t)(v < lo ? lo : hi);
        }
        dst[i * (size_t)samples] = static_cast<T>(v);   /* the low bits: two's complement kept */
    }
    return true;
}

static int decode_spans(const std::vector<Span> &spans, int rows, int cols, int samples,
                        int bits_allocated, int bits_stored, int pixrep, bool lossy, void *out,
                        std::string &why)
{
    size_t total = 0;
    for (const Span &sp : spans) total += sp.n;
    if (total < 12) return errf(why, "JPEG 2000 frame of %zu bytes is too short", total);
    if (bits_allocated != 8 && bits_allocated != 16)
        return errf(why, "JPEG 2000 with Bits Allocated %d is not supported", bits_allocated);
    if (bits_stored < 1 || bits_stored > bits_allocated)
        return errf(why, "Bits Stored %d is invalid for Bits Allocated %d", bits_stored,
                    bits_allocated);

    static const uint8_t jp2_sig[12] = {0x00, 0x00, 0x00, 0x0C, 0x6A, 0x50,
                                        0x20, 0x20, 0x0D, 0x0A, 0x87, 0x0A};
    uint8_t head[12];
    for (int i = 0; i < 12; i++) head[i] = byte_at(spans, (size_t)i);
    OPJ_CODEC_FORMAT fmt;
    if (head[0] == 0xFF && head[1] == 0x4F && head[2] == 0xFF && head[3] == 0x51) {
        fmt = OPJ_CODEC_J2K;
        /* A complete codestream ends with EOC (FFD9). Fragments are padded to even length
         * (with 00 or, by some writers, FF) and a few writers leave bytes after EOC, so look for
         * it near the end; entropy-coded data cannot contain FFD9 (bit stuffing keeps the byte
         * after FF below 0x90). Without it the data was cut short: refuse rather than let
         * OpenJPEG return a partial image. */
        bool eoc = false;
        for (size_t back = 0; back < 64 && back + 2 <= total && !eoc; back++)
            eoc = byte_at(spans, total - back - 2) == 0xFF && byte_at(spans, total - back - 1) == 0xD9;
        if (!eoc)
            return errf(why, "JPEG 2000 codestream is truncated (%zu bytes, no end-of-codestream "
                        "marker)", total);
    } else if (memcmp(head, jp2_sig, 12) == 0) {
        fmt = OPJ_CODEC_JP2;
    } else {
        return errf(why, "pixel data is neither a JPEG 2000 codestream nor a JP2 file (starts "
                    "%02X %02X %02X %02X)", head[0], head[1], head[2], head[3]);
    }

    FragStream fs{&spans, total, 0};
    Msgs msgs;
    opj_codec_t *codec = opj_create_decompress(fmt);
    opj_stream_t *stream = opj_stream_create(1 << 16, OPJ_TRUE);
    opj_image_t *img = nullptr;
    int rc = SN_OK;
    opj_dparameters_t params;
    if (!codec || !stream) {
        rc = errf(why, "OpenJPEG: cannot create decoder");
        goto done;
    }
    opj_set_error_handler(codec, on_error, &msgs);
    opj_set_warning_handler(codec, on_warning, &msgs);
    opj_set_info_handler(codec, on_info, &msgs);
    opj_stream_set_user_data(stream, &fs, nullptr);
    opj_stream_set_user_data_length(stream, total);
    opj_stream_set_read_function(stream, fs_read);
    opj_stream_set_skip_function(stream, fs_skip);
    opj_stream_set_seek_function(stream, fs_seek);
    opj_set_default_decoder_parameters(&params);
    if (!opj_setup_decoder(codec, &params)) {
        rc = errf(why, "OpenJPEG: setup failed: %s", msgs.error.c_str());
        goto done;
    }
    opj_decoder_set_strict_mode(codec, OPJ_TRUE);
    if (!opj_read_header(stream, codec, &img)) {
        rc = errf(why, "corrupt JPEG 2000 header: %s",
                  msgs.error.empty() ? "unreadable" : msgs.error.c_str());
        goto done;
    }
    if (!opj_decode(codec, stream, img) || !opj_end_decompress(codec, stream)) {
        rc = errf(why, "corrupt or truncated JPEG 2000 data: %s",
                  msgs.error.empty() ? "decoder failed" : msgs.error.c_str());
        goto done;
    }
    if ((int)img->numcomps != samples) {
        rc = errf(why, "JPEG 2000 image has %u components, Samples per Pixel is %d",
                  img->numcomps, samples);
        goto done;
    }
    for (int c = 0; c < samples; c++) {
        const opj_image_comp_t &cp = img->comps[c];
        if ((int)cp.w != cols || (int)cp.h != rows || cp.dx != 1 || cp.dy != 1 || !cp.data) {
            rc = errf(why, "JPEG 2000 image is %ux%u (subsampling %ux%u), the dataset says "
                      "%dx%d", cp.w, cp.h, cp.dx, cp.dy, cols, rows);
            goto done;
        }
        if ((int)cp.prec > bits_allocated) {
            rc = errf(why, "JPEG 2000 precision %u exceeds Bits Allocated %d", cp.prec,
                      bits_allocated);
            goto done;
        }
        /* A signed stream with unsigned data is fine while nothing is negative: the value
         * check below decides. */
    }
    {
        /* Every value must be representable as Bits Stored bits of the declared signedness.
         * An unsigned codestream for signed data carries the two's complement bit pattern. */
        const int64_t umax = (int64_t(1) << bits_stored) - 1;
        const int64_t smin = -(int64_t(1) << (bits_stored - 1)),
                      smax = (int64_t(1) << (bits_stored - 1)) - 1;
        const size_t npix = (size_t)rows * (size_t)cols;
        for (int c = 0; c < samples; c++) {
            const OPJ_INT32 *src = img->comps[c].data;
            const bool sgnd = img->comps[c].sgnd != 0;
            const int64_t lo = pixrep && sgnd ? smin : 0, hi = pixrep && sgnd ? smax : umax;
            int32_t bad = 0;
            const bool ok = bits_allocated == 16
                ? put_component(src, npix, samples, lo, hi, lossy, static_cast<uint16_t *>(out) + c, &bad)
                : put_component(src, npix, samples, lo, hi, lossy, static_cast<uint8_t *>(out) + c, &bad);
            if (!ok) {
                rc = errf(why, "JPEG 2000 value %d out of range for Bits Stored %d, "
                          "Pixel Representation %d (codestream precision %u, %s)",
                          bad, bits_stored, pixrep, img->comps[c].prec, sgnd ? "signed" : "unsigned");
                goto done;
            }
        }
    }
done:
    if (img) opj_image_destroy(img);
    if (stream) opj_stream_destroy(stream);
    if (codec) opj_destroy_codec(codec);
    return rc;
}

/* ---- fragments -> frames -------------------------------------------------------------------- */

static bool starts_codestream(DcmPixelItem *it)
{
    Uint8 *p = nullptr;
    Uint32 n = it->getLength();
    if (n < 4 || it->getUint8Array(p).bad() || !p) return false;
    if (p[0] == 0xFF && p[1] == 0x4F && p[2] == 0xFF && p[3] == 0x51) return true;
    return n >= 8 && p[0] == 0 && p[1] == 0 && p[2] == 0 && p[3] == 0x0C && p[4] == 0x6A &&
           p[5] == 0x50;
}

/* For each frame, the range [first, last) of fragment items (item 0 is the offset table). */
static int map_frames(DcmPixelSequence *seq, unsigned nframes,
                      std::vector<std::pair<unsigned, unsigned>> &map, std::string &why)
{
    unsigned card = (unsigned)seq->card();
    if (card < 2) return errf(why, "encapsulated pixel data has no fragments");
    unsigned nfrag = card - 1;
    map.clear();
    if (nframes == 1) {
        map.push_back({1, card});
        return SN_OK;
    }
    if (nfrag == nframes) {
        for (unsigned f = 0; f < nframes; f++) map.push_back({f + 1, f + 2});
        return SN_OK;
    }
    /* Basic Offset Table: byte offsets of each frame's first fragment item, from the first
     * fragment item's tag (each item is 8 bytes of header plus its value). */
    DcmPixelItem *bot = nullptr;
    if (seq->getItem(bot, 0).good() && bot && bot->getLength() == 4 * nframes) {
        Uint8 *p = nullptr;
        if (bot->getUint8Array(p).good() && p) {
            std::vector<uint32_t> offs(nframes);
            for (unsigned f = 0; f < nframes; f++)
                offs[f] = (uint32_t)p[4 * f] | ((uint32_t)p[4 * f + 1] << 8) |
                          ((uint32_t)p[4 * f + 2] << 16) | ((uint32_t)p[4 * f + 3] << 24);
            std::vector<unsigned> start;
            uint64_t at = 0;
            unsigned fi = 0;
            for (unsigned i = 1; i < card && fi < nframes; i++) {
                if (at == offs[fi]) { start.push_back(i); fi++; }
                DcmPixelItem *it = nullptr;
                if (seq->getItem(it, i).bad() || !it) break;
                at += 8 + it->getLength();
            }
            if (start.size() == nframes) {
                for (unsigned f = 0; f < nframes; f++)
                    map.push_back({start[f], f + 1 < nframes ? start[f + 1] : card});
                return SN_OK;
            }
        }
    }
    /* No usable offset table: a frame starts at each fragment that starts a codestream. */
    std::vector<unsigned> start;
    for (unsigned i = 1; i < card; i++) {
        DcmPixelItem *it = nullptr;
        if (seq->getItem(it, i).good() && it && starts_codestream(it)) start.push_back(i);
    }
    if (start.size() != nframes || start[0] != 1)
        return errf(why, "cannot map %u JPEG 2000 fragments to %u frames", nfrag, nframes);
    for (unsigned f = 0; f < nframes; f++)
        map.push_back({start[f], f + 1 < nframes ? start[f + 1] : card});
    return SN_OK;
}

static int frame_spans(DcmPixelSequence *seq, std::pair<unsigned, unsigned> r,
                       std::vector<Span> &spans, std::string &why)
{
    spans.clear();
    for (unsigned i = r.first; i < r.second; i++) {
        DcmPixelItem *it = nullptr;
        Uint8 *p = nullptr;
        if (seq->getItem(it, i).bad() || !it)
            return errf(why, "JPEG 2000 fragment %u is missing", i);
        if (it->getLength() == 0) continue;
        if (it->getUint8Array(p).bad() || !p)
            return errf(why, "JPEG 2000 fragment %u cannot be read (truncated file?)", i);
        spans.push_back({p, it->getLength()});
    }
    return SN_OK;
}

/* ---- the DCMTK codec ------------------------------------------------------------------------ */

class J2KCodecParameter : public DcmCodecParameter {
public:
    DcmCodecParameter *clone() const override { return new J2KCodecParameter(*this); }
    const char *className() const override { return "SegnodeJ2KCodecParameter"; }
};

struct ImageAttrs {
    Uint16 rows = 0, cols = 0, samples = 1, bits_allocated = 0, bits_stored = 0, pixrep = 0;
    bool lossy = false;   /* transfer syntax .91 (lossy allowed): out-of-range values clamped */
    Sint32 frames = 1;
    OFString photometric;
};

static OFCondition cond_from(const std::string &why)
{
    return makeOFCondition(OFM_dcmdata, 0x0ff0, OF_error, why.c_str());
}

static OFCondition read_attrs(DcmItem *ds, ImageAttrs &a, std::string &why)
{
    if (ds->findAndGetUint16(DCM_Rows, a.rows).bad() ||
        ds->findAndGetUint16(DCM_Columns, a.cols).bad() ||
        ds->findAndGetUint16(DCM_BitsAllocated, a.bits_allocated).bad()) {
        errf(why, "JPEG 2000 pixel data without Rows/Columns/Bits Allocated");
        return cond_from(why);
    }
    if (ds->findAndGetUint16(DCM_BitsStored, a.bits_stored).bad()) a.bits_stored = a.bits_allocated;
    if (ds->findAndGetUint16(DCM_SamplesPerPixel, a.samples).bad()) a.samples = 1;
    if (ds->findAndGetUint16(DCM_PixelRepresentation, a.pixrep).bad()) a.pixrep = 0;
    if (ds->findAndGetSint32(DCM_NumberOfFrames, a.frames).bad() || a.frames < 1) a.frames = 1;
    if (ds->findAndGetOFString(DCM_PhotometricInterpretation, a.photometric).bad())
        a.photometric = "MONOCHROME2";
    if (ds->ident() == EVR_dataset)
        a.lossy = static_cast<DcmDataset *>(ds)->getOriginalXfer() == EXS_JPEG2000;
    return EC_Normal;
}

static DcmItem *dataset_of(const DcmStack &objStack)
{
    DcmStack st(objStack);
    if (st.card() < 2) return nullptr;
    (void)st.pop();                           /* the pixel data element */
    DcmObject *o = st.pop();
    if (!o || (o->ident() != EVR_dataset && o->ident() != EVR_item)) return nullptr;
    return static_cast<DcmItem *>(o);
}

class J2KDecoder : public DcmCodec {
public:
    OFCondition decode(const DcmRepresentationParameter *, DcmPixelSequence *pixSeq,
                       DcmPolymorphOBOW &uncompressed, const DcmCodecParameter *,
                       const DcmStack &objStack, OFBool &removeOldRep) const override
    {
        try {
            std::string why;
            DcmItem *ds = dataset_of(objStack);
            if (!ds || !pixSeq) return EC_IllegalCall;
            ImageAttrs a;
            OFCondition c = read_attrs(ds, a, why);
            if (c.bad()) return c;
            std::vector<std::pair<unsigned, unsigned>> map;
            if (map_frames(pixSeq, (unsigned)a.frames, map, why)) return cond_from(why);
            const size_t bps = a.bits_allocated / 8;
            if (bps != 1 && bps != 2) {
                errf(why, "JPEG 2000 with Bits Allocated %u is not supported", a.bits_allocated);
                return cond_from(why);
            }
            const size_t frame_bytes = (size_t)a.rows * a.cols * a.samples * bps;
            size_t total = frame_bytes * (size_t)a.frames;
            if (total & 1) total++;
            Uint16 *buf16 = nullptr;
            c = uncompressed.createUint16Array((Uint32)(total / 2), buf16);
            if (c.bad()) return c;
            uint8_t *buf = reinterpret_cast<uint8_t *>(buf16);
            if (total > frame_bytes * (size_t)a.frames) buf[total - 1] = 0;

            /* Frames are independent codestreams: decode them in parallel. The fragments are
             * loaded first in this thread, so the workers only read memory. */
            std::vector<std::vector<Span>> spans(map.size());
            for (size_t f = 0; f < map.size(); f++)
                if (frame_spans(pixSeq, map[f], spans[f], why)) return cond_from(why);
            unsigned nthreads = std::max(1u, std::thread::hardware_concurrency());
            nthreads = std::min<unsigned>(nthreads, (unsigned)map.size());
            if (map.size() < 4) nthreads = 1;
            std::atomic<size_t> next{0};
            std::mutex mu;
            std::string first_err;
            auto work = [&]() {
                for (;;) {
                    size_t f = next.fetch_add(1);
                    if (f >= map.size()) return;
                    std::string w;
                    if (decode_spans(spans[f], a.rows, a.cols, a.samples, a.bits_allocated,
                                     a.bits_stored, a.pixrep, a.lossy, buf + f * frame_bytes, w)) {
                        std::lock_guard<std::mutex> lk(mu);
                        if (first_err.empty())
                            first_err = (a.frames > 1 ? "frame " + std::to_string(f + 1) + ": "
                                                      : std::string()) + w;
                        next = map.size();
                        return;
                    }
                }
            };
            if (nthreads <= 1) {
                work();
            } else {
                std::vector<std::thread> ts;
                for (unsigned t = 0; t < nthreads; t++) ts.emplace_back(work);
                for (auto &t : ts) t.join();
            }
            if (!first_err.empty()) return cond_from(first_err);
            if (bps == 1) swapIfNecessary(gLocalByteOrder, EBO_LittleEndian, buf16, (Uint32)total,
                                          sizeof(Uint16));
            if (a.samples == 3) {
                /* OpenJPEG undid the colour transform and we interleaved the samples. */
                ds->putAndInsertUint16(DCM_PlanarConfiguration, 0);
                if (a.photometric == "YBR_ICT" || a.photometric == "YBR_RCT")
                    ds->putAndInsertString(DCM_PhotometricInterpretation, "RGB");
            }
            removeOldRep = OFTrue;
            return EC_Normal;
        } catch (const std::exception &e) {
            return makeOFCondition(OFM_dcmdata, 0x0ff1, OF_error, e.what());
        } catch (...) {
            return makeOFCondition(OFM_dcmdata, 0x0ff1, OF_error, "JPEG 2000 decoder failed");
        }
    }

    OFCondition decodeFrame(const DcmRepresentationParameter *, DcmPixelSequence *fromPixSeq,
                            const DcmCodecParameter *, DcmItem *dataset, Uint32 frameNo,
                            Uint32 &startFragment, void *buffer, Uint32 bufSize,
                            OFString &decompressedColorModel) const override
    {
        try {
            std::string why;
            if (!dataset || !fromPixSeq || !buffer) return EC_IllegalCall;
            ImageAttrs a;
            OFCondition c = read_attrs(dataset, a, why);
            if (c.bad()) return c;
            if (frameNo >= (Uint32)a.frames) return EC_IllegalCall;
            const size_t frame_bytes =
                (size_t)a.rows * a.cols * a.samples * (a.bits_allocated / 8);
            if (bufSize < frame_bytes) return EC_IllegalCall;
            std::vector<std::pair<unsigned, unsigned>> map;
            if (map_frames(fromPixSeq, (unsigned)a.frames, map, why)) return cond_from(why);
            std::vector<Span> spans;
            if (frame_spans(fromPixSeq, map[frameNo], spans, why)) return cond_from(why);
            if (decode_spans(spans, a.rows, a.cols, a.samples, a.bits_allocated, a.bits_stored,
                             a.pixrep, a.lossy, buffer, why))
                return cond_from(why);
            startFragment = map[frameNo].second;
            decompressedColorModel = a.photometric;
            if (a.photometric == "YBR_ICT" || a.photometric == "YBR_RCT")
                decompressedColorModel = "RGB";
            return EC_Normal;
        } catch (...) {
            return makeOFCondition(OFM_dcmdata, 0x0ff1, OF_error, "JPEG 2000 decoder failed");
        }
    }

    OFCondition encode(const Uint16 *, const Uint32, const DcmRepresentationParameter *,
                       DcmPixelSequence *&, const DcmCodecParameter *, DcmStack &,
                       OFBool &) const override
    {
        return EC_IllegalCall;   /* decode only */
    }

    OFCondition encode(const E_TransferSyntax, const DcmRepresentationParameter *,
                       DcmPixelSequence *, const DcmRepresentationParameter *,
                       DcmPixelSequence *&, const DcmCodecParameter *, DcmStack &,
                       OFBool &) const override
    {
        return EC_IllegalCall;
    }

    OFBool canChangeCoding(const E_TransferSyntax oldRepType,
                           const E_TransferSyntax newRepType) const override
    {
        DcmXfer newRep(newRepType);
        return (oldRepType == EXS_JPEG2000LosslessOnly || oldRepType == EXS_JPEG2000) &&
               newRep.isNotEncapsulated();
    }

    OFCondition determineDecompressedColorModel(const DcmRepresentationParameter *,
                                                DcmPixelSequence *, const DcmCodecParameter *,
                                                DcmItem *dataset,
                                                OFString &decompressedColorModel) const override
    {
        if (!dataset) return EC_IllegalCall;
        OFCondition c = dataset->findAndGetOFString(DCM_PhotometricInterpretation,
                                                    decompressedColorModel);
        if (decompressedColorModel == "YBR_ICT" || decompressedColorModel == "YBR_RCT")
            decompressedColorModel = "RGB";
        return c;
    }
};

std::once_flag g_once;
J2KDecoder *g_codec;
J2KCodecParameter *g_param;

} // namespace

extern "C" void pipeline_codec_j2k_register(void)
{
    std::call_once(g_once, [] {
        g_codec = new J2KDecoder();
        g_param = new J2KCodecParameter();
        DcmCodecList::registerCodec(g_codec, nullptr, g_param);
    });
}

extern "C" int pipeline_j2k_decode_frame(const uint8_t *data, size_t len, int rows, int cols,
                                         int samples, int bits_allocated, int bits_stored,
                                         int pixel_representation, int lossy, void *out,
                                         char *err, size_t errlen)
{
    try {
        std::vector<Span> spans{{data, len}};
        std::string why;
        int rc = decode_spans(spans, rows, cols, samples, bits_allocated, bits_stored,
                              pixel_representation, lossy != 0, out, why);
        if (rc) return sn_errf(err, errlen, rc, "%s", why.c_str());
        return SN_OK;
    } catch (...) {
        return sn_errf(err, errlen, SN_EINTERNAL, "JPEG 2000 decoder failed");
    }
}
