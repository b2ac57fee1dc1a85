/* tests/nn/test_bundle.c — model bundles and sliding-window inference:
 *  - the committed bundles load with their metadata;
 *  - bad bundles are refused with a clear status and message, never a crash: missing tensor,
 *    wrong shape, wrong dtype, unknown op, truncated safetensors, header past the end, traced
 *    shape that the runtime disagrees with;
 *  - sliding window over a volume larger than the patch equals the whole-volume result for a
 *    translation-invariant model (with and without mirror TTA); a volume smaller than the patch
 *    is refused unless padding is allowed; nn_infer_volume with resampling.
 *   test_bundle DATA_DIR */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/status.h"
#include "nn/nn.h"

static int g_fail;
#define CHECK(c, ...)                                                                 \
    do {                                                                              \
        if (!(c)) {                                                                   \
            printf("FAIL %s:%d: ", __FILE__, __LINE__);                              \
            printf(__VA_ARGS__);                                                      \
            printf("\n");                                                             \
            g_fail++;                                                                 \
        }                                                                             \
    } while (0)

static char g_dir[256];

/* A safetensors file with one F32 (or F16) tensor "w" [co, ci, 1, 1, 1] of value v (and
 * "b" [co] zeros), optionally truncated. */
static void write_st(const char *path, int co, int ci, const char *dtype, float v, int truncate,
                     int bad_header)
{
    int es = !strcmp(dtype, "F16") ? 2 : 4;
    size_t nw = (size_t)co * ci, wb = nw * es, bb = (size_t)co * 4;
    char h[512];
    int n = snprintf(h, sizeof h,
                     "{\"w\":{\"dtype\":\"%s\",\"shape\":[%d,%d,1,1,1],\"data_offsets\":[0,%zu]},"
                     "\"b\":{\"dtype\":\"F32\",\"shape\":[%d],\"data_offsets\":[%zu,%zu]}}",
                     dtype, co, ci, wb, co, wb, wb + bb);
    while (n % 8) h[n++] = ' ';
    FILE *f = fopen(path, "wb");
    unsigned long long hl = bad_header ? 1u << 20 : (unsigned long long)n;
    for (int i = 0; i < 8; i++) fputc((int)((hl >> (8 * i)) & 255), f);
    fwrite(h, 1, (size_t)n, f);
    size_t total = wb + bb, written = 0;
    for (size_t i = 0; i < nw; i++) {
        if (truncate && written >= total / 2) break;
        float x = v * (float)((i / (size_t)ci) % 2 == 0 ? 1 : -1);
        if (es == 2) {
            uint16_t hh = nn_f32_to_f16(x);
            fwrite(&hh, 2, 1, f);
        } else {
            fwrite(&x, 4, 1, f);
        }
        written += (size_t)es;
    }
    if (!truncate)
        for (int i = 0; i < co; i++) {
            float z = 0;
            fwrite(&z, 4, 1, f);
        }
    fclose(f);
}

/* the normalization object write_json puts in model.json */
static const char *g_norm = "{\"type\":\"none\"}";

/* model.json for: x [1, 1, P] -> conv 1x1x1 (w, b) -> out; with knobs for the bad cases. */
static void write_json(const char *path, const char *op, const char *wshape, const char *wdtype,
                       const char *traced, int patch)
{
    FILE *f = fopen(path, "w");
    fprintf(f,
            "{\"format\":\"segnode-model\",\"version\":1,\"name\":\"t\",\"spatial_dims\":3,"
            "\"in_channels\":1,\"out_channels\":2,\"patch_size\":[%d,%d,%d],"
            "\"target_spacing\":[2.0,1.0,1.0],\"normalization\":%s,"
            "\"labels\":[{\"value\":0,\"name\":\"bg\"},{\"value\":5,\"name\":\"fg\"}],"
            "\"graph\":{\"inputs\":[{\"name\":\"x\",\"shape\":[1,1,%d,%d,%d]}],"
            "\"params\":{\"w\":{\"shape\":%s,\"dtype\":\"%s\"},\"b\":{\"shape\":[2]}},"
            "\"nodes\":[{\"name\":\"c\",\"op\":\"%s\",\"inputs\":[\"x\",\"w\",\"b\"],"
            "\"attrs\":{},\"shape\":%s}],\"outputs\":[\"c\"]}}",
            patch, patch, patch, g_norm, patch, patch, patch, wshape, wdtype, op, traced);
    fclose(f);
}

static int load_case(const char *name, const char *expect, int want)
{
    char err[512];
    nn_model *m = NULL;
    int rc = nn_model_load(g_dir, &m, err, sizeof err);
    printf("%-22s rc=%d  %s\n", name, rc, rc ? err : "(loaded)");
    CHECK(rc == want, "%s: rc %d, expected %d", name, rc, want);
    if (rc && expect) CHECK(strstr(err, expect) != NULL, "%s: message lacks '%s'", name, expect);
    nn_model_free(m);
    return rc;
}

static void bad_bundles(void)
{
    char js[300], st[300];
    snprintf(js, sizeof js, "%s/model.json", g_dir);
    snprintf(st, sizeof st, "%s/model.safetensors", g_dir);
    const char *traced = "[1,2,8,8,8]";
    write_st(st, 2, 1, "F32", 1, 0, 0);
    write_json(js, "conv", "[2,1,1,1,1]", "F32", traced, 8);
    load_case("good", NULL, 0);
    write_json(js, "conv", "[2,1,3,3,3]", "F32", traced, 8);
    load_case("wrong shape", "shape", SN_EINVAL);
    write_json(js, "conv", "[2,1,1,1,1]", "F16", traced, 8);
    load_case("wrong dtype", "F32", SN_EINVAL);
    write_json(js, "convolution9", "[2,1,1,1,1]", "F32", traced, 8);
    load_case("unknown op", "unknown op", SN_EINVAL);
    write_json(js, "conv", "[2,1,1,1,1]", "F32", "[1,3,8,8,8]", 8);
    load_case("traced shape", "traced shape", SN_EINVAL);
    write_json(js, "conv", "[2,1,1,1,1]", "F32", traced, 8);
    write_st(st, 2, 1, "F32", 1, 1, 0);
    load_case("truncated weights", "truncated", SN_EINVAL);
    write_st(st, 2, 1, "F32", 1, 0, 1);
    load_case("header past the end", "truncated", SN_EINVAL);
    /* missing tensor: weights file with another name */
    FILE *f = fopen(st, "wb");
    const char *h = "{\"q\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}    ";
    unsigned long long hl = strlen(h);
    for (int i = 0; i < 8; i++) fputc((int)((hl >> (8 * i)) & 255), f);
    fwrite(h, 1, strlen(h), f);
    float z = 0;
    fwrite(&z, 4, 1, f);
    fclose(f);
    load_case("missing tensor", "missing", SN_EINVAL);
    f = fopen(js, "w");
    fputs("{\"format\":\"segnode-model\", \"version\": 1, \"graph\": {", f);
    fclose(f);
    load_case("broken json", "JSON", SN_EINVAL);
    /* normalizations: the robust one parses with its mask; unknown kinds and masks refused */
    write_st(st, 2, 1, "F32", 1, 0, 0);
    g_norm = "{\"type\":\"robust\",\"mask\":\"above_mean\"}";
    write_json(js, "conv", "[2,1,1,1,1]", "F32", traced, 8);
    nn_model *m = NULL;
    char err[512];
    int rc = nn_model_load(g_dir, &m, err, sizeof err);
    CHECK(rc == 0 && nn_model_info_get(m)->norm == NN_NORM_ROBUST &&
              nn_model_info_get(m)->norm_above_mean == 1, "robust normalization: %s", err);
    nn_model_free(m);
    g_norm = "{\"type\":\"robust\",\"mask\":\"body\"}";
    write_json(js, "conv", "[2,1,1,1,1]", "F32", traced, 8);
    load_case("unknown mask", "mask 'body'", SN_EINVAL);
    g_norm = "{\"type\":\"suv\"}";
    write_json(js, "conv", "[2,1,1,1,1]", "F32", traced, 8);
    load_case("unknown normalization", "normalization 'suv'", SN_EINVAL);
    g_norm = "{\"type\":\"none\"}";
    unlink(js);
    unlink(st);
}

/* nn_normalize against numpy: 60 voxels of air (0) and a body of 1..40, in a scrambled order.
 * Robust above the mean (8.2): median 24.5, IQR 32.25 - 16.75 = 15.5 (np.percentile of 9..40);
 * robust over all: median 0, IQR 15.25; per-volume z-score; a constant volume gives zeros. */
static void normalize(void)
{
    char err[256];
    float v[100], out[100];
    for (int i = 0; i < 100; i++) {
        int j = (i * 37) % 100;   /* a permutation of 0..99 */
        v[i] = j < 60 ? 0.0f : (float)(j - 59);
    }
    nn_model_info in = {0};
    in.norm = NN_NORM_ROBUST;
    in.norm_above_mean = 1;
    int rc = nn_normalize(&in, v, 100, out, err, sizeof err);
    double e = 0;
    for (int i = 0; i < 100; i++) e = fmax(e, fabs(out[i] - (v[i] - 24.5) / 15.5));
    printf("robust above the mean: rc=%d max error %.3g\n", rc, e);
    CHECK(rc == 0 && e < 1e-6, "robust above the mean wrong (%g)", e);
    in.norm_above_mean = 0;
    rc = nn_normalize(&in, v, 100, out, err, sizeof err);
    e = 0;
    for (int i = 0; i < 100; i++) e = fmax(e, fabs(out[i] - v[i] / 15.25));
    CHECK(rc == 0 && e < 1e-6, "robust over all voxels wrong (%g)", e);
    in.norm = NN_NORM_ZSCORE;
    in.norm_per_volume = 1;
    double s = 0, q = 0;
    for (int i = 0; i < 100; i++) s += v[i];
    for (int i = 0; i < 100; i++) q += (v[i] - s / 100) * (v[i] - s / 100);
    rc = nn_normalize(&in, v, 100, v, err, sizeof err);   /* in place */
    CHECK(rc == 0 && fabs(v[0] - (0 - s / 100) / sqrt(q / 100)) < 1e-6, "z-score wrong");
    in.norm = NN_NORM_ROBUST;
    in.norm_above_mean = 1;
    for (int i = 0; i < 100; i++) v[i] = 7;
    rc = nn_normalize(&in, v, 100, out, err, sizeof err);
    e = 0;
    for (int i = 0; i < 100; i++) e = fmax(e, fabs(out[i]));
    CHECK(rc == 0 && e == 0, "constant volume: %g", e);
}

/* The identity-like model: logits = [x, -x] (w = +1, -1). Sliding window must reproduce it. */
static void sliding(nn_backend *b)
{
    char js[300], st[300], err[512];
    snprintf(js, sizeof js, "%s/model.json", g_dir);
    snprintf(st, sizeof st, "%s/model.safetensors", g_dir);
    write_st(st, 2, 1, "F32", 1, 0, 0);   /* w[0] = +1, w[1] = -1 */
    write_json(js, "conv", "[2,1,1,1,1]", "F32", "[1,2,8,8,8]", 8);
    nn_model *m = NULL;
    int rc = nn_model_load(g_dir, &m, err, sizeof err);
    CHECK(rc == 0, "load: %s", err);
    if (rc) return;
    int64_t dims[3] = {13, 17, 10};
    int64_t S = dims[0] * dims[1] * dims[2];
    float *x = malloc(sizeof(float) * S), *lg = malloc(sizeof(float) * S * 2);
    for (int64_t i = 0; i < S; i++) x[i] = sinf((float)i * 0.37f) * 3;
    nn_sliding_opts o;
    nn_sliding_opts_default(&o);
    for (int mirror = 0; mirror < 2; mirror++) {
        o.mirror = mirror;
        o.batch = 3;
        rc = nn_sliding_run(m, b, x, dims, &o, lg, err, sizeof err);
        CHECK(rc == 0, "sliding: %s", err);
        double e = 0;
        for (int64_t i = 0; i < S && !rc; i++) {
            e = fmax(e, fabs(lg[i] - x[i]));
            e = fmax(e, fabs(lg[S + i] + x[i]));
        }
        printf("sliding window mirror=%d: max error %.3g\n", mirror, e);
        CHECK(e < 1e-5, "sliding window differs from the whole-volume result (%g)", e);
    }
    int64_t small[3] = {5, 17, 10};
    rc = nn_sliding_run(m, b, x, small, &o, lg, err, sizeof err);
    printf("small volume: rc=%d %s\n", rc, err);
    CHECK(rc == SN_EINVAL && strstr(err, "smaller than the patch"), "small volume not refused");
    o.pad_small = 1;
    rc = nn_sliding_run(m, b, x, small, &o, lg, err, sizeof err);
    CHECK(rc == 0, "padded small volume: %s", err);
    double e = 0;
    for (int64_t i = 0; i < small[0] * small[1] * small[2] && !rc; i++)
        e = fmax(e, fabs(lg[i] - x[i]));
    CHECK(e < 1e-5, "padded small volume wrong (%g)", e);

    /* whole-volume inference with resampling (model spacing 2 x 1 x 1, volume 1 x 1 x 1) */
    int16_t *lab = malloc(sizeof(int16_t) * 24 * 17 * 10);
    float *probs = NULL;
    double sp[3] = {1.0, 1.0, 1.0};
    o.pad_small = 0;
    o.mirror = 0;
    int64_t big[3] = {24, 17, 10};
    float *xb = malloc(sizeof(float) * 24 * 17 * 10);
    for (int64_t i = 0; i < 24 * 17 * 10; i++) xb[i] = (float)((i / 170) - 12) + 0.5f;
    rc = nn_infer_volume(m, b, xb, big, sp, &o, lab, &probs, err, sizeof err);
    CHECK(rc == 0, "infer_volume: %s", err);
    int64_t agree = 0, n = 24 * 17 * 10;
    for (int64_t i = 0; i < n && !rc; i++) agree += lab[i] == (xb[i] > 0 ? 0 : 5);
    printf("infer_volume with resampling: %lld/%lld labels as expected, p0[0]=%.4f\n",
           (long long)agree, (long long)n, probs ? probs[0] : -1.0);
    CHECK(rc == 0 && agree > n * 95 / 100, "infer_volume labels wrong");
    free(probs);
    free(lab);
    free(xb);
    free(x);
    free(lg);
    nn_model_free(m);
    unlink(js);
    unlink(st);
}

int main(int argc, char **argv)
{
    if (argc < 2) return 2;
    char err[512], path[4096];
    nn_model *m = NULL;
    snprintf(path, sizeof path, "%s/unet3d", argv[1]);
    int rc = nn_model_load(path, &m, err, sizeof err);
    CHECK(rc == 0, "unet3d: %s", err);
    if (!rc) {
        const nn_model_info *in = nn_model_info_get(m);
        CHECK(in->n_labels == 3 && in->labels[1].value == 1 &&
                  !strcmp(in->labels[1].code, "SCT:10200004"), "labels");
        CHECK(in->spacing[0] == 1.5 && in->patch[2] == 32 && in->out_channels == 3, "metadata");
        CHECK(!strcmp(in->modality, "MR") && in->norm == NN_NORM_ZSCORE, "modality/norm");
    }
    nn_model_free(m);
    snprintf(g_dir, sizeof g_dir, "/tmp/nn_bundle_XXXXXX");
    if (!mkdtemp(g_dir)) return 1;
    bad_bundles();
    normalize();
    nn_backend *b = NULL;
    nn_backend_cpu_new(0, &b, err, sizeof err);
    sliding(b);
    nn_backend_free(b);
    rmdir(g_dir);
    printf("%s\n", g_fail ? "FAILED" : "all ok");
    return g_fail ? 1 : 0;
}
