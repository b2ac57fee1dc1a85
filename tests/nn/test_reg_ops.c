/* tests/nn/test_reg_ops.c — the registration ops against direct definitions: WARP (identity field
 * = copy, integer shift = shifted copy), SSD_COST (every displacement against a naive loop),
 * WARP_SSD_GRAD (against central finite differences of the warped SSD) and MIND_SSC (range
 * (0, 1], invariance to an affine intensity change).
 *   test_reg_ops [--backend cpu|cuda]
 * cpu: those checks on the CPU backend, then the CUDA kernels' per-element functions
 * (nn/reg_elem.h, compiled here as plain C) run on the host over every element and
 * compared with the CPU backend, so the kernels' indexing is tested in every build. cuda: the
 * same checks on the CUDA backend plus each op against the CPU backend; exits 77 (skipped) when
 * the build has no CUDA backend or there is no device. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nn/reg_elem.h"
#include "nn/nn.h"

#define SKIP 77

static int fails;
#define CHECK(c, ...) do { if (!(c)) { printf("FAIL: " __VA_ARGS__); printf("\n"); fails++; } } while (0)

static int run(nn_backend *b, nn_op_desc *d, int nin, int64_t sh[][5], const float **in, float *out)
{
    char err[512];
    nn_graph *g;
    nn_graph_new(&g);
    int ids[3];
    for (int i = 0; i < nin; i++) ids[i] = nn_graph_input(g, "x", 5, sh[i]);
    int o = nn_graph_node(g, "n", d, ids, nin, err, sizeof err);
    if (o < 0) { printf("%s\n", err); return -1; }
    nn_graph_output(g, o);
    nn_session *s;
    if (nn_session_new(g, b, NULL, &s, err, sizeof err)) { printf("%s\n", err); return -1; }
    for (int i = 0; i < nin; i++) nn_tensor_upload(nn_session_input(s, i), in[i], err, sizeof err);
    int rc = nn_session_run(s, err, sizeof err);
    if (!rc) rc = nn_tensor_download(nn_session_output(s, 0), out, err, sizeof err);
    nn_session_free(s);
    nn_graph_free(g);
    return rc;
}

/* The checks against direct definitions, on backend b. */
static void check_definitions(nn_backend *b)
{
    enum { D = 7, H = 9, W = 11, S = D * H * W, C = 2 };
    float *f = malloc(sizeof(float) * C * S), *m = malloc(sizeof(float) * C * S), *u = calloc(3 * S, sizeof(float));
    float *out = malloc(sizeof(float) * 343 * S);
    srand(1);
    for (int i = 0; i < C * S; i++) f[i] = (float)rand() / RAND_MAX, m[i] = (float)rand() / RAND_MAX;
    nn_op_desc d;
    /* warp: zero field copies; +1 along x shifts */
    nn_op_desc_init(&d, NN_OP_WARP);
    int64_t shw[2][5] = {{1, C, D, H, W}, {1, 3, D, H, W}};
    const float *iw[2] = {m, u};
    CHECK(!run(b, &d, 2, shw, iw, out), "warp runs");
    for (int i = 0; i < C * S; i++) CHECK(fabsf(out[i] - m[i]) < 1e-6f, "warp identity at %d", i);
    for (int i = 0; i < S; i++) u[i] = 1.0f;
    CHECK(!run(b, &d, 2, shw, iw, out), "warp runs");
    for (int i = 0; i < S; i++) {
        int x = i % W;
        float want = m[x + 1 < W ? i + 1 : i];
        CHECK(fabsf(out[i] - want) < 1e-5f, "warp shift at %d", i);
    }
    /* ssd cost vs naive */
    nn_op_desc_init(&d, NN_OP_SSD_COST);
    d.k[0] = 1;
    int64_t shc[2][5] = {{1, C, D, H, W}, {1, C, D, H, W}};
    const float *ic[2] = {f, m};
    CHECK(!run(b, &d, 2, shc, ic, out), "ssd_cost runs");
    for (int dd = 0; dd < 27; dd++) {
        int dx = dd % 3 - 1, dy = (dd / 3) % 3 - 1, dz = dd / 9 - 1;
        for (int z = 0; z < D; z++) for (int y = 0; y < H; y++) for (int x = 0; x < W; x++) {
            int mz = z + dz < 0 ? 0 : z + dz >= D ? D - 1 : z + dz, my = y + dy < 0 ? 0 : y + dy >= H ? H - 1 : y + dy;
            int mx = x + dx < 0 ? 0 : x + dx >= W ? W - 1 : x + dx;
            float s = 0;
            for (int c = 0; c < C; c++) {
                float e = f[c * S + (z * H + y) * W + x] - m[c * S + (mz * H + my) * W + mx];
                s += e * e;
            }
            CHECK(fabsf(out[dd * S + (z * H + y) * W + x] - s / C) < 1e-5f, "ssd_cost d %d", dd);
        }
    }
    /* warp_ssd_grad vs finite differences of the per-voxel warped SSD */
    /* away from voxel centres, where trilinear interpolation has kinks */
    for (int i = 0; i < 3 * S; i++) u[i] = 0.5f + 0.3f * ((float)rand() / RAND_MAX - 0.5f);
    nn_op_desc_init(&d, NN_OP_WARP_SSD_GRAD);
    int64_t shg[3][5] = {{1, C, D, H, W}, {1, C, D, H, W}, {1, 3, D, H, W}};
    const float *ig[3] = {f, m, u};
    float *g = malloc(sizeof(float) * 3 * S), *wp = malloc(sizeof(float) * C * S), *wm = malloc(sizeof(float) * C * S);
    CHECK(!run(b, &d, 3, shg, ig, g), "warp_ssd_grad runs");
    nn_op_desc dw;
    nn_op_desc_init(&dw, NN_OP_WARP);
    const float h = 1e-2f;
    int bad = 0;
    for (int a = 0; a < 3; a++) {
        for (int i = 0; i < S; i++) u[a * S + i] += h;
        run(b, &dw, 2, shw, iw, wp);
        for (int i = 0; i < S; i++) u[a * S + i] -= 2 * h;
        run(b, &dw, 2, shw, iw, wm);
        for (int i = 0; i < S; i++) u[a * S + i] += h;
        for (int z = 1; z < D - 1; z++) for (int y = 1; y < H - 1; y++) for (int x = 1; x < W - 1; x++) {
            int i = (z * H + y) * W + x;
            double lp = 0, lm = 0;
            for (int c = 0; c < C; c++) {
                double ep = wp[c * S + i] - f[c * S + i], em = wm[c * S + i] - f[c * S + i];
                lp += ep * ep / C, lm += em * em / C;
            }
            double fd = (lp - lm) / (2 * h);
            if (fabs(fd - g[a * S + i]) > 0.05 * (fabs(fd) + 0.05)) bad++;
        }
    }
    CHECK(bad < S / 50, "warp_ssd_grad vs finite differences: %d mismatches", bad);
    /* MIND-SSC: values in (0, 1], unchanged by x -> 3x + 7 */
    nn_op_desc_init(&d, NN_OP_MIND_SSC);
    d.dilation[0] = 1;
    d.k[0] = 1;
    int64_t shm[1][5] = {{1, 1, D, H, W}};
    float *x2 = malloc(sizeof(float) * S), *o2 = malloc(sizeof(float) * 12 * S);
    for (int i = 0; i < S; i++) x2[i] = 3 * f[i] + 7;
    const float *im[1] = {f}, *im2[1] = {x2};
    CHECK(!run(b, &d, 1, shm, im, out), "mind runs");
    CHECK(!run(b, &d, 1, shm, im2, o2), "mind runs");
    for (int i = 0; i < 12 * S; i++) {
        CHECK(out[i] > 0 && out[i] <= 1.0f + 1e-6f, "mind range %d: %g", i, out[i]);
        CHECK(fabsf(out[i] - o2[i]) < 1e-3f, "mind intensity invariance %d", i);
        if (fails > 20) break;
    }
    printf("%s: registration ops on %s against their definitions\n", fails ? "FAIL" : "ok", nn_backend_name(b));
    free(f);
    free(m);
    free(u);
    free(out);
    free(g);
    free(wp);
    free(wm);
    free(x2);
    free(o2);
}

/* ---- every op against the CPU backend: the element functions on the host, or a device -------- */

typedef struct reg_case {
    const char *name;
    nn_op_desc d;
    int nin;
    int64_t sh[3][5];
    float lo[3], hi[3];   /* input value ranges (fields reach outside the volume) */
} reg_case;

static int64_t numel5(const int64_t *s) { return s[0] * s[1] * s[2] * s[3] * s[4]; }

static nn_reg_vol vol5(const int64_t *s)
{
    nn_reg_vol g = {s[2], s[3], s[4]};
    return g;
}

/* The op computed the way nn/cuda/reg.cu's kernels compute it, one element at a time on the host. */
static void run_elements(const reg_case *k, const float **in, float *out)
{
    const int64_t *s0 = k->sh[0];
    const nn_reg_vol g = vol5(s0);
    const int64_t N = s0[0], C = s0[1], S = g.D * g.H * g.W;
    switch (k->d.type) {
    case NN_OP_MIND_SSC: {
        const int dil = k->d.dilation[0] > 0 ? k->d.dilation[0] : 1, r = k->d.k[0];
        float *tmp = malloc(sizeof(float) * (size_t)(N * 12 * S));
        float *a = r > 0 ? tmp : out;
        for (int64_t i = 0; i < N * 12 * S; i++) {
            const int64_t img = i / (12 * S), ch = (i / S) % 12, v = i % S;
            a[i] = nn_reg_mind_sqdiff(in[0] + img * S, g, dil, (int)ch, v / (g.H * g.W), (v / g.W) % g.H, v % g.W);
        }
        for (int axis = 0; r > 0 && axis < 3; axis++) {
            const float *src = axis == 1 ? out : tmp;
            float *dst = axis == 1 ? tmp : out;
            for (int64_t i = 0; i < N * 12 * S; i++) {
                const int64_t v = i % S;
                dst[i] = nn_reg_box(src + (i - v), g, axis, r, v / (g.H * g.W), (v / g.W) % g.H, v % g.W);
            }
        }
        for (int64_t img = 0; img < N; img++) {
            float *o = out + img * 12 * S, lo, hi, mn;
            double sum = 0;
            for (int64_t i = 0; i < S; i++) sum += nn_reg_mind_var(o, S, i, &mn);
            nn_reg_mind_range(sum, S, &lo, &hi);
            for (int64_t i = 0; i < S; i++) nn_reg_mind_normalise(o, S, i, lo, hi);
        }
        free(tmp);
        break;
    }
    case NN_OP_WARP: {
        const nn_reg_vol go = vol5(k->sh[1]);
        const int64_t oS = go.D * go.H * go.W;
        for (int64_t i = 0; i < N * oS; i++) {
            const int64_t img = i / oS;
            nn_reg_warp(in[0] + img * C * S, C, g, in[1] + img * 3 * oS, go, out + img * C * oS, i % oS);
        }
        break;
    }
    case NN_OP_SSD_COST: {
        const int r = k->d.k[0], L = 2 * r + 1, dil = k->d.dilation[0] > 0 ? k->d.dilation[0] : 1;
        const int64_t L3 = (int64_t)L * L * L;
        for (int64_t i = 0; i < N * L3 * S; i++) {
            const int64_t img = i / (L3 * S), d = (i / S) % L3;
            out[i] = nn_reg_ssd_cost(in[0] + img * C * S, in[1] + img * C * S, C, g, r, dil, d, i % S);
        }
        break;
    }
    case NN_OP_WARP_SSD_GRAD:
        for (int64_t i = 0; i < N * S; i++) {
            const int64_t img = i / S;
            nn_reg_warp_ssd_grad(in[0] + img * C * S, in[1] + img * C * S, in[2] + img * 3 * S, C, g,
                                 out + img * 3 * S, i % S);
        }
        break;
    default:
        break;
    }
}

/* Each case on the CPU backend (the reference) and on `dev`, or with the element functions when
 * dev is NULL; fails on a difference above 1e-5 (relative above 1). */
static void check_against_cpu(nn_backend *cpu, nn_backend *dev)
{
    enum { D = 9, H = 10, W = 13, C = 3 };
    reg_case cases[7];
    memset(cases, 0, sizeof cases);
    for (int i = 0; i < 3; i++) {           /* MIND-SSC: box radius 0, 1, 2; dilation 1, 1, 2 */
        reg_case *k = &cases[i];
        k->name = i == 0 ? "MIND_SSC r0" : i == 1 ? "MIND_SSC r1" : "MIND_SSC r2 dil2";
        nn_op_desc_init(&k->d, NN_OP_MIND_SSC);
        k->d.k[0] = i;
        k->d.dilation[0] = i == 2 ? 2 : 1;
        k->nin = 1;
        int64_t s[5] = {2, 1, D, H, W};
        memcpy(k->sh[0], s, sizeof s);
        k->lo[0] = -50, k->hi[0] = 200;
    }
    for (int i = 3; i < 5; i++) {           /* WARP onto a coarser and onto a finer grid */
        reg_case *k = &cases[i];
        k->name = i == 3 ? "WARP to a coarser grid" : "WARP to a finer grid";
        nn_op_desc_init(&k->d, NN_OP_WARP);
        k->nin = 2;
        int64_t sx[5] = {2, C, D, H, W}, su[5] = {2, 3, i == 3 ? 5 : 12, i == 3 ? 6 : 11, i == 3 ? 7 : 17};
        memcpy(k->sh[0], sx, sizeof sx);
        memcpy(k->sh[1], su, sizeof su);
        k->lo[0] = 0, k->hi[0] = 1, k->lo[1] = -4, k->hi[1] = 4;
    }
    {
        reg_case *k = &cases[5];
        k->name = "SSD_COST r2 dil2";
        nn_op_desc_init(&k->d, NN_OP_SSD_COST);
        k->d.k[0] = 2;
        k->d.dilation[0] = 2;
        k->nin = 2;
        int64_t s[5] = {2, C, D, H, W};
        memcpy(k->sh[0], s, sizeof s);
        memcpy(k->sh[1], s, sizeof s);
        k->lo[0] = k->lo[1] = 0, k->hi[0] = k->hi[1] = 1;
    }
    {
        reg_case *k = &cases[6];
        k->name = "WARP_SSD_GRAD";
        nn_op_desc_init(&k->d, NN_OP_WARP_SSD_GRAD);
        k->nin = 3;
        int64_t s[5] = {2, C, D, H, W}, su[5] = {2, 3, D, H, W};
        memcpy(k->sh[0], s, sizeof s);
        memcpy(k->sh[1], s, sizeof s);
        memcpy(k->sh[2], su, sizeof su);
        k->lo[0] = k->lo[1] = 0, k->hi[0] = k->hi[1] = 1, k->lo[2] = -3, k->hi[2] = 3;
    }
    srand(7);
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        const reg_case *k = &cases[c];
        float *in[3] = {NULL, NULL, NULL};
        for (int i = 0; i < k->nin; i++) {
            int64_t n = numel5(k->sh[i]);
            in[i] = malloc(sizeof(float) * (size_t)n);
            for (int64_t j = 0; j < n; j++) in[i][j] = k->lo[i] + (k->hi[i] - k->lo[i]) * (float)rand() / RAND_MAX;
        }
        const int64_t *s0 = k->sh[0], S = s0[2] * s0[3] * s0[4], L = 2 * k->d.k[0] + 1;
        const int64_t nout = k->d.type == NN_OP_MIND_SSC ? s0[0] * 12 * S
                           : k->d.type == NN_OP_WARP ? s0[0] * s0[1] * k->sh[1][2] * k->sh[1][3] * k->sh[1][4]
                           : k->d.type == NN_OP_SSD_COST ? s0[0] * L * L * L * S : s0[0] * 3 * S;
        float *ref = calloc((size_t)nout, sizeof(float)), *got = calloc((size_t)nout, sizeof(float));
        const float *cin[3] = {in[0], in[1], in[2]};
        int64_t sh[3][5];
        memcpy(sh, k->sh, sizeof sh);
        nn_op_desc d = k->d;
        CHECK(!run(cpu, &d, k->nin, sh, cin, ref), "%s runs on the CPU", k->name);
        if (dev)
            CHECK(!run(dev, &d, k->nin, sh, cin, got), "%s runs on %s", k->name, nn_backend_name(dev));
        else
            run_elements(k, cin, got);
        double worst = 0;
        for (int64_t i = 0; i < nout; i++) {
            double e = fabs((double)got[i] - ref[i]) / (fabs(ref[i]) > 1 ? fabs(ref[i]) : 1);
            if (e > worst) worst = e;
        }
        CHECK(worst < 1e-5, "%s on %s: max difference %.3g against the CPU backend", k->name,
              dev ? nn_backend_name(dev) : "the element functions", worst);
        printf("  %-24s %s vs cpu: max difference %.3g\n", k->name, dev ? nn_backend_name(dev) : "elements", worst);
        for (int i = 0; i < k->nin; i++) free(in[i]);
        free(ref);
        free(got);
    }
}

int main(int argc, char **argv)
{
    char err[512];
    const char *backend = argc == 3 && !strcmp(argv[1], "--backend") ? argv[2] : argc == 1 ? "cpu" : NULL;
    if (!backend || (strcmp(backend, "cpu") && strcmp(backend, "cuda"))) {
        fprintf(stderr, "usage: test_reg_ops [--backend cpu|cuda]\n");
        return 2;
    }
    nn_backend *cpu, *dev = NULL;
    if (nn_backend_cpu_new(2, &cpu, err, sizeof err)) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    if (!strcmp(backend, "cuda") && nn_backend_cuda_new(0, &dev, err, sizeof err)) {
        printf("SKIP: no CUDA backend: %s\n", err);
        nn_backend_free(cpu);
        return SKIP;
    }
    check_definitions(dev ? dev : cpu);
    check_against_cpu(cpu, dev);
    printf("%s: registration ops%s\n", fails ? "FAIL" : "ok",
           dev ? " (CUDA against CPU)" : " (CPU; CUDA element functions on the host)");
    nn_backend_free(dev);
    nn_backend_free(cpu);
    return fails ? 1 : 0;
}
