/* tests/volume/test_volume.c — series -> volume: decoder conformance on the real files in
 * ../shared/data/dicom (every emri_small variant and MR2_J2KR bit-identical to the uncompressed
 * file, MR2_J2KI within bounds with its error printed), a J2K value outside Bits Stored refused
 * when lossless and clamped when lossy (8- and 16-bit output), geometry of synthetic series, SUV, gap
 * filling, and every bad-input case refused with a message naming the series and the reason.
 * Synthetic series come from make_series.py (/usr/bin/python3 + pydicom) in a temp folder. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openjpeg.h>

#include "common/status.h"
#include "pipeline/codec_j2k.h"
#include "pipeline/geometry.h"
#include "pipeline/nifti.h"
#include "pipeline/volume.h"

static char g_tmp[256];

static const char *data(const char *name)
{
    static char buf[4][1024];
    static int n;
    char *b = buf[n++ & 3];
    snprintf(b, 1024, "%s/%s", SN_TEST_DATA, name);
    return b;
}

static pipeline_frames *frames_ok(const char *path)
{
    pipeline_frames *f = NULL;
    char err[512] = "";
    int rc = pipeline_frames_read(path, &f, err, sizeof err);
    if (rc) fprintf(stderr, "%s: %s\n", path, err);
    assert_int_equal(rc, 0);
    assert_non_null(f);
    return f;
}

static void assert_same_frames(const pipeline_frames *a, const pipeline_frames *b)
{
    assert_int_equal(a->rows, b->rows);
    assert_int_equal(a->cols, b->cols);
    assert_int_equal(a->frames, b->frames);
    size_t n = (size_t)a->rows * a->cols * a->frames;
    assert_memory_equal(a->values, b->values, n * sizeof(int32_t));
}

static void test_emri_variants_bit_identical(void **state)
{
    (void)state;
    pipeline_frames *ref = frames_ok(data("emri_small.dcm"));
    assert_int_equal(ref->frames, 10);
    const char *variants[] = {"emri_small_RLE.dcm", "emri_small_big_endian.dcm",
                              "emri_small_jpeg_2k_lossless.dcm",
                              "emri_small_jpeg_ls_lossless.dcm"};
    for (size_t i = 0; i < sizeof variants / sizeof *variants; i++) {
        pipeline_frames *f = frames_ok(data(variants[i]));
        assert_same_frames(ref, f);
        printf("  %-36s bit-identical to emri_small (%s)\n", variants[i], f->transfer_syntax);
        pipeline_frames_free(f);
    }
    pipeline_frames_free(ref);
}

static void test_mr2_j2k(void **state)
{
    (void)state;
    pipeline_frames *ref = frames_ok(data("MR2_UNCR.dcm"));
    pipeline_frames *r = frames_ok(data("MR2_J2KR.dcm"));
    assert_same_frames(ref, r);
    printf("  MR2_J2KR bit-identical to MR2_UNCR\n");
    pipeline_frames *l = frames_ok(data("MR2_J2KI.dcm"));
    size_t n = (size_t)ref->rows * ref->cols;
    assert_int_equal((size_t)l->rows * l->cols, n);
    int64_t maxe = 0;
    double sum = 0;
    for (size_t i = 0; i < n; i++) {
        int64_t e = llabs((long long)l->values[i] - ref->values[i]);
        if (e > maxe) maxe = e;
        sum += (double)e;
    }
    printf("  MR2_J2KI vs MR2_UNCR: max error %lld, mean error %.4f (stored values, 12 bits)\n",
           (long long)maxe, sum / (double)n);
    assert_true(maxe <= 64);
    assert_true(sum / (double)n < 8.0);
    pipeline_frames_free(ref);
    pipeline_frames_free(r);
    pipeline_frames_free(l);
}

static void test_jpeg_lossless_vs_dcmdjpeg(void **state)
{
    (void)state;
    char out[512], cmd[1400];
    snprintf(out, sizeof out, "%s/jpegll_raw.dcm", g_tmp);
    snprintf(cmd, sizeof cmd, "dcmdjpeg '%s' '%s'", data("JPEG-LL.dcm"), out);
    if (system(cmd) != 0) skip();
    pipeline_frames *a = frames_ok(data("JPEG-LL.dcm"));
    pipeline_frames *b = frames_ok(out);
    assert_same_frames(a, b);
    printf("  JPEG-LL (NM, JPEG lossless) identical to DCMTK dcmdjpeg's output\n");
    pipeline_frames_free(a);
    pipeline_frames_free(b);
}

static void test_truncated_j2k_file(void **state)
{
    (void)state;
    pipeline_frames *f = NULL;
    char err[512] = "";
    int rc = pipeline_frames_read(data("emri_small_jpeg_2k_lossless_too_short.dcm"), &f, err,
                                  sizeof err);
    assert_int_equal(rc, SN_EDICOM);
    assert_null(f);
    assert_non_null(strstr(err, "truncated or corrupt"));
}

static void test_j2k_decode_frame_checks(void **state)
{
    (void)state;
    uint16_t out[16];
    char err[256] = "";
    const uint8_t junk[32] = {1, 2, 3, 4, 5};
    assert_int_equal(pipeline_j2k_decode_frame(junk, sizeof junk, 4, 4, 1, 16, 12, 0, 0, out, err,
                                               sizeof err), SN_EDICOM);
    assert_non_null(strstr(err, "neither a JPEG 2000"));
    const uint8_t soc_only[16] = {0xFF, 0x4F, 0xFF, 0x51};
    assert_int_equal(pipeline_j2k_decode_frame(soc_only, sizeof soc_only, 4, 4, 1, 16, 12, 0, 0,
                                               out, err, sizeof err), SN_EDICOM);
    assert_non_null(strstr(err, "truncated"));
}

/* A lossless J2K codestream of a rows x cols single-component image with precision prec
 * (OpenJPEG, as a scanner's encoder would write it), into buf; returns its length or 0. */
typedef struct {
    uint8_t *buf;
    size_t cap, len;
} j2k_sink;

static OPJ_SIZE_T j2k_sink_write(void *p, OPJ_SIZE_T n, void *user)
{
    j2k_sink *k = user;
    if (k->len + n > k->cap) return (OPJ_SIZE_T)-1;
    memcpy(k->buf + k->len, p, n);
    k->len += n;
    return n;
}

static size_t j2k_encode(const int32_t *v, int rows, int cols, int prec, uint8_t *buf, size_t cap)
{
    opj_image_cmptparm_t cp;
    memset(&cp, 0, sizeof cp);
    cp.dx = cp.dy = 1;
    cp.w = (OPJ_UINT32)cols;
    cp.h = (OPJ_UINT32)rows;
    cp.prec = (OPJ_UINT32)prec;
    opj_image_t *img = opj_image_create(1, &cp, OPJ_CLRSPC_GRAY);
    img->x1 = (OPJ_UINT32)cols;
    img->y1 = (OPJ_UINT32)rows;
    memcpy(img->comps[0].data, v, sizeof(int32_t) * (size_t)rows * cols);
    opj_cparameters_t par;
    opj_set_default_encoder_parameters(&par);
    par.numresolution = 1;   /* reversible 5/3, one layer: lossless */
    opj_codec_t *c = opj_create_compress(OPJ_CODEC_J2K);
    j2k_sink k = {buf, cap, 0};
    opj_stream_t *st = opj_stream_default_create(OPJ_FALSE);
    opj_stream_set_write_function(st, j2k_sink_write);
    opj_stream_set_user_data(st, &k, NULL);
    int ok = opj_setup_encoder(c, &par, img) && opj_start_compress(c, img, st) &&
             opj_encode(c, st) && opj_end_compress(c, st);
    opj_stream_destroy(st);
    opj_destroy_codec(c);
    opj_image_destroy(img);
    return ok ? k.len : 0;
}

/* A value outside Bits Stored: lossless data is refused with the value named; lossy data
 * (ringing past the encoder's range) is clamped; in range it is exact. For one output width. */
static void j2k_range_checks(int bits_allocated)
{
    const int32_t v[16] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 100};
    const int prec = bits_allocated == 16 ? 12 : 8;
    uint8_t cs[4096];
    uint16_t out[16];   /* large enough for either width */
    char err[256] = "";
    size_t n = j2k_encode(v, 4, 4, prec, cs, sizeof cs);
    assert_true(n > 0);
#define OUT(i) (bits_allocated == 16 ? out[i] : ((const uint8_t *)out)[i])
    assert_int_equal(pipeline_j2k_decode_frame(cs, n, 4, 4, 1, bits_allocated, 6, 0, 0, out, err,
                                               sizeof err), SN_EDICOM);
    assert_non_null(strstr(err, "value 100 out of range for Bits Stored 6"));
    assert_int_equal(pipeline_j2k_decode_frame(cs, n, 4, 4, 1, bits_allocated, 6, 0, 1, out, err,
                                               sizeof err), 0);
    assert_int_equal(OUT(15), 63);
    assert_int_equal(OUT(14), 14);
    assert_int_equal(pipeline_j2k_decode_frame(cs, n, 4, 4, 1, bits_allocated, prec, 0, 0, out, err,
                                               sizeof err), 0);
    for (int i = 0; i < 16; i++)
        assert_int_equal(OUT(i), v[i]);
#undef OUT
}

static void test_j2k_out_of_range(void **state)
{
    (void)state;
    j2k_range_checks(16);
    j2k_range_checks(8);
}

/* ---- synthetic series ---------------------------------------------------------------------- */

static int make_series(const char *what, const char *dir)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 '%s' %s '%s/%s' >/dev/null", SN_MAKE_SERIES, what,
             g_tmp, dir);
    return system(cmd);
}

static pipeline_volume *read_ok(const char *sub, const pipeline_volume_opts *o)
{
    char dir[512], err[1024] = "";
    snprintf(dir, sizeof dir, "%s/%s", g_tmp, sub);
    pipeline_volume *v = NULL;
    int rc = pipeline_volume_read_dir(dir, o, &v, err, sizeof err);
    if (rc) fprintf(stderr, "%s: %s\n", dir, err);
    assert_int_equal(rc, 0);
    return v;
}

static void test_axial_ct_geometry(void **state)
{
    (void)state;
    pipeline_volume *v = read_ok("good/ct_axial", NULL);
    assert_int_equal(v->nx, 64);
    assert_int_equal(v->ny, 48);
    assert_int_equal(v->nz, 20);
    assert_float_equal(v->spacing[0], 0.7, 1e-9);   /* Pixel Spacing 0.8 (rows) \ 0.7 (cols) */
    assert_float_equal(v->spacing[1], 0.8, 1e-9);
    assert_float_equal(v->spacing[2], 2.5, 1e-9);
    assert_float_equal(v->origin[2], -40.0, 1e-9);  /* lowest slice first, whatever the order */
    const double id[9] = {1, 0, 0, 0, 1, 0, 0, 0, 1};
    for (int i = 0; i < 9; i++) assert_float_equal(v->direction[i], id[i], 1e-9);
    assert_string_equal(v->unit, "HU");
    assert_string_equal(v->modality, "CT");
    for (int k = 0; k < v->nz; k++) {
        assert_int_equal((int)strlen(v->slices[k].sop_instance_uid) > 0, 1);
        assert_string_equal(v->slices[k].sop_class_uid, "1.2.840.10008.5.1.4.1.1.2");
        assert_int_equal(v->slices[k].frame, 0);
    }
    pipeline_volume_free(v);
}

static void test_enhanced_ct_frames(void **state)
{
    (void)state;
    const char *p[1] = {data("eCT_Supplemental.dcm")};
    pipeline_volume *v = NULL;
    char err[512] = "";
    assert_int_equal(pipeline_volume_read_files(p, 1, NULL, &v, err, sizeof err), 0);
    assert_int_equal(v->nx, 512);
    assert_int_equal(v->nz, 2);
    assert_float_equal(v->spacing[2], 10.0, 1e-6);
    /* Frame 2 is at z -159, frame 1 at -149: sorted along the normal (-z here since IOP's row
     * is -x), frame numbers are 1-based. */
    assert_true(v->slices[0].frame >= 1 && v->slices[1].frame >= 1);
    assert_int_not_equal(v->slices[0].frame, v->slices[1].frame);
    assert_string_equal(v->unit, "HU");
    pipeline_volume_free(v);
}

static void test_pet_suv(void **state)
{
    (void)state;
    pipeline_volume_opts o;
    pipeline_volume_opts_default(&o);
    pipeline_volume *suv = read_ok("good/pet", &o);
    o.pet_suv = 0;
    pipeline_volume *bq = read_ok("good/pet", &o);
    assert_string_equal(suv->unit, "SUVbw");
    assert_string_equal(bq->unit, "BQML");
    /* 70 kg, 370 MBq at 09:30, scan 10:30, F-18 half-life 6586.2 s. */
    double k = 70000.0 / (370e6 * pow(2.0, -3600.0 / 6586.2));
    size_t n = (size_t)bq->nx * bq->ny * bq->nz;
    for (size_t i = 0; i < n; i += 97)
        assert_float_equal(suv->data[i], bq->data[i] * k, 1e-4 * fmax(1.0, fabs(suv->data[i])));
    printf("  PET: SUVbw factor %.6g g/Bq checked\n", k);
    pipeline_volume_free(suv);
    pipeline_volume_free(bq);
}

static void test_gap_fill_when_configured(void **state)
{
    (void)state;
    pipeline_volume_opts o;
    pipeline_volume_opts_default(&o);
    o.fill_gaps = 1;
    pipeline_volume *v = read_ok("bad/gap", &o);
    assert_int_equal(v->nz, 8);
    assert_int_equal(v->filled_slices, 1);
    int filled = -1;
    for (int k = 0; k < v->nz; k++)
        if (!v->slices[k].sop_instance_uid[0]) filled = k;
    assert_true(filled > 0 && filled < 7);
    size_t plane = (size_t)v->nx * v->ny;
    for (size_t i = 0; i < plane; i += 31) {
        float lo = v->data[plane * (size_t)(filled - 1) + i];
        float hi = v->data[plane * (size_t)(filled + 1) + i];
        assert_float_equal(v->data[plane * (size_t)filled + i], 0.5f * (lo + hi), 1e-3);
    }
    pipeline_volume_free(v);
}

static void test_voxel_cap(void **state)
{
    (void)state;
    /* A grid above opts.max_voxels is refused before it is allocated, naming the grid. */
    pipeline_volume_opts o;
    pipeline_volume_opts_default(&o);
    o.max_voxels = (size_t)64 * 48 * 19;   /* ct_axial is 64 x 48 x 20 */
    char dir[600], err[1024] = "";
    snprintf(dir, sizeof dir, "%s/good/ct_axial", g_tmp);
    pipeline_volume *v = (pipeline_volume *)0x1;
    assert_int_equal(pipeline_volume_read_dir(dir, &o, &v, err, sizeof err), SN_EUNSUPPORTED);
    assert_null(v);
    printf("  cap: %s\n", err);
    assert_non_null(strstr(err, "64x48x20 grid is larger than the 58368 voxels allowed"));
    o.max_voxels = (size_t)64 * 48 * 20;
    v = read_ok("good/ct_axial", &o);
    pipeline_volume_free(v);
}

static void test_bad_inputs_refused(void **state)
{
    (void)state;
    char path[512], line[512];
    snprintf(path, sizeof path, "%s/bad/cases.txt", g_tmp);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    int cases = 0;
    while (fgets(line, sizeof line, f)) {
        char *tab = strchr(line, '\t');
        if (!tab) continue;
        *tab = 0;
        char *want = tab + 1;
        want[strcspn(want, "\n")] = 0;
        char dir[1200], err[1024] = "";
        snprintf(dir, sizeof dir, "%s/bad/%s", g_tmp, line);
        pipeline_volume *v = (pipeline_volume *)0x1;
        int rc = pipeline_volume_read_dir(dir, NULL, &v, err, sizeof err);
        printf("  %-22s -> %s: %s\n", line, sn_strerror(rc), err);
        assert_int_not_equal(rc, 0);
        assert_null(v);
        if (!strstr(err, want)) fail_msg("%s: error does not say '%s'", line, want);
        if (strcmp(line, "two_series") != 0 && !strstr(err, "series 1."))
            fail_msg("%s: error does not name the series", line);
        cases++;
    }
    fclose(f);
    assert_true(cases >= 16);
}

static void test_geometry_sort_and_tilt(void **state)
{
    (void)state;
    pipeline_geom_slice s[5];
    memset(s, 0, sizeof s);
    const double zs[5] = {5.0, -1.25, 2.5, 0.0, 1.25};   /* 3.75 missing */
    for (int i = 0; i < 5; i++) {
        s[i].has_ipp = s[i].has_iop = 1;
        double iop[6] = {1, 0, 0, 0, 1, 0};
        memcpy(s[i].iop, iop, sizeof iop);
        s[i].ipp[0] = 3;
        s[i].ipp[1] = 4;
        s[i].ipp[2] = zs[i];
    }
    pipeline_geom_stack st;
    int order[5], kpos[5];
    char err[256];
    assert_int_equal(pipeline_geom_stack_build(s, 5, 0, 0, 0, &st, order, kpos, err, sizeof err),
                     SN_EDICOM);
    assert_non_null(strstr(err, "missing slice"));
    assert_int_equal(pipeline_geom_stack_build(s, 5, 0, 0, 1, &st, order, kpos, err, sizeof err),
                     0);
    assert_int_equal(st.nz, 6);
    assert_float_equal(st.dz, 1.25, 1e-12);
    assert_int_equal(order[0], 1);
    assert_int_equal(kpos[4], 5);
    assert_float_equal(st.origin[2], -1.25, 1e-12);
    /* Gap filling stops at PIPELINE_GEOM_MAX_GAP missing slices in one step; a step of 10^9
     * slices (found by tests/fuzz, it once sized the grid) is refused without overflow. */
    s[0].ipp[2] = 2.5 + 1.25 * (PIPELINE_GEOM_MAX_GAP + 1);
    assert_int_equal(pipeline_geom_stack_build(s, 5, 0, 0, 1, &st, order, kpos, err, sizeof err),
                     0);
    assert_int_equal(st.gaps, PIPELINE_GEOM_MAX_GAP);   /* 2.5 .. 13.75 mm in steps of 1.25 */
    s[0].ipp[2] = 2.5 + 1.25 * (PIPELINE_GEOM_MAX_GAP + 2);
    assert_int_equal(pipeline_geom_stack_build(s, 5, 0, 0, 1, &st, order, kpos, err, sizeof err),
                     SN_EDICOM);
    assert_non_null(strstr(err, "too wide to fill"));
    s[0].ipp[2] = 2.5 + 1.25e9;
    assert_int_equal(pipeline_geom_stack_build(s, 5, 0, 0, 1, &st, order, kpos, err, sizeof err),
                     SN_EDICOM);
    s[0].ipp[2] = 5.0;
    s[0].ipp[1] = 4 + 6.25 * tan(10 * M_PI / 180);          /* one slice shifted: shear */
    assert_int_equal(pipeline_geom_stack_build(s, 5, 0, 0, 1, &st, order, kpos, err, sizeof err),
                     SN_EDICOM);
    assert_non_null(strstr(err, "gantry tilt"));
}

static void test_nifti_quaternion(void **state)
{
    (void)state;
    /* An oblique LPS grid: the quaternion must rebuild the sform's rotation. */
    double a = 0.3, b = 0.2;
    double dir[9] = {cos(a), -sin(a) * cos(b), sin(a) * sin(b),
                     sin(a), cos(a) * cos(b), -cos(a) * sin(b),
                     0, sin(b), cos(b)};
    double org[3] = {10, -20, 30}, sp[3] = {0.7, 0.9, 2.5}, srow[12], q[3], qfac, off[3];
    pipeline_geom_nifti_affine(org, dir, sp, srow);
    pipeline_geom_nifti_quatern(srow, sp, q, &qfac, off);
    double qa = sqrt(fmax(0, 1 - q[0] * q[0] - q[1] * q[1] - q[2] * q[2]));
    double B = q[0], C = q[1], D = q[2];
    double R[3][3] = {{qa * qa + B * B - C * C - D * D, 2 * (B * C - qa * D), 2 * (B * D + qa * C)},
                      {2 * (B * C + qa * D), qa * qa + C * C - B * B - D * D, 2 * (C * D - qa * B)},
                      {2 * (B * D - qa * C), 2 * (C * D + qa * B), qa * qa + D * D - C * C - B * B}};
    for (int r = 0; r < 3; r++)
        for (int c = 0; c < 3; c++)
            assert_float_equal(R[r][c] * sp[c] * (c == 2 ? qfac : 1), srow[4 * r + c], 1e-9);
    assert_float_equal(off[0], -10, 1e-12);   /* LPS -> RAS */
    assert_float_equal(off[1], 20, 1e-12);
    assert_float_equal(off[2], 30, 1e-12);
}

static int files_equal(const char *a, const char *b)
{
    FILE *fa = fopen(a, "rb"), *fb = fopen(b, "rb");
    int same = fa && fb;
    while (same) {
        int ca = fgetc(fa), cb = fgetc(fb);
        if (ca != cb) same = 0;
        if (ca == EOF || cb == EOF) break;
    }
    if (fa) fclose(fa);
    if (fb) fclose(fb);
    return same;
}

/* opts.int16 gives the same values as floats when it applies (else floats), and the NIfTI files
 * written from either are byte for byte the same, as int16 and as float32. */
static void test_int16_values_same_as_float(void **state)
{
    (void)state;
    static const struct { const char *sub; int suv, expect16; } cases[] = {
        {"good/ct_axial", 0, 1},  {"good/ct_signed", 0, 1}, {"good/ct_signed12", 0, 1},
        {"good/mr_oblique", 0, 1}, {"good/pet", 1, 0},       /* SUV: scaled, float */
        {"good/mr_u16", 0, 0},                               /* > 32767: read again as float */
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        pipeline_volume_opts o;
        pipeline_volume_opts_default(&o);
        o.pet_suv = cases[c].suv;
        pipeline_volume *f = read_ok(cases[c].sub, &o);
        o.int16 = 1;
        pipeline_volume *g = read_ok(cases[c].sub, &o);
        assert_non_null(f->data);
        assert_null(f->data16);
        if (!cases[c].expect16) {
            assert_non_null(g->data);
            assert_null(g->data16);
        } else {
            assert_null(g->data);
            assert_non_null(g->data16);
            size_t n = (size_t)f->nx * f->ny * f->nz;
            for (size_t i = 0; i < n; i++)
                if ((float)g->data16[i] != f->data[i]) fail_msg("%s: voxel %zu", cases[c].sub, i);
        }
        static const pipeline_nifti_type types[] = {PIPELINE_NIFTI_AUTO, PIPELINE_NIFTI_FLOAT32};
        static const char *const ext[] = {"nii", "nii.gz"};
        for (int t = 0; t < 2; t++)
            for (int e = 0; e < 2; e++) {
                char pa[512], pb[512], err[512];
                snprintf(pa, sizeof pa, "%s/f.%s", g_tmp, ext[e]);
                snprintf(pb, sizeof pb, "%s/g.%s", g_tmp, ext[e]);
                assert_int_equal(pipeline_nifti_write(f, pa, types[t], NULL, err, sizeof err), 0);
                assert_int_equal(pipeline_nifti_write(g, pb, types[t], NULL, err, sizeof err), 0);
                if (!files_equal(pa, pb)) fail_msg("%s: NIfTI files differ (%d, %s)",
                                                   cases[c].sub, t, ext[e]);
            }
        pipeline_volume_free(f);
        pipeline_volume_free(g);
    }
}

static int setup(void **state)
{
    (void)state;
    snprintf(g_tmp, sizeof g_tmp, "%s/sn_volume_XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (!mkdtemp(g_tmp)) return -1;
    if (make_series("good", "good") != 0 || make_series("bad", "bad") != 0) {
        fprintf(stderr, "make_series.py failed (needs /usr/bin/python3 with pydicom, gdcmconv)\n");
        return -1;
    }
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[512];
    if (g_tmp[0] && !getenv("SN_KEEP_TMP")) {
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_tmp);
        if (system(cmd) != 0) return -1;
    }
    return 0;
}

int main(void)
{
    pipeline_codecs_register();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_emri_variants_bit_identical),
        cmocka_unit_test(test_mr2_j2k),
        cmocka_unit_test(test_jpeg_lossless_vs_dcmdjpeg),
        cmocka_unit_test(test_truncated_j2k_file),
        cmocka_unit_test(test_j2k_out_of_range),
        cmocka_unit_test(test_j2k_decode_frame_checks),
        cmocka_unit_test(test_axial_ct_geometry),
        cmocka_unit_test(test_enhanced_ct_frames),
        cmocka_unit_test(test_pet_suv),
        cmocka_unit_test(test_gap_fill_when_configured),
        cmocka_unit_test(test_bad_inputs_refused),
        cmocka_unit_test(test_voxel_cap),
        cmocka_unit_test(test_geometry_sort_and_tilt),
        cmocka_unit_test(test_nifti_quaternion),
        cmocka_unit_test(test_int16_values_same_as_float),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
