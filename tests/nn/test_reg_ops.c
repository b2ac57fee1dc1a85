/* tests/nn/test_reg_ops.c — the registration ops on the CPU backend against direct definitions:
 * WARP (identity field = copy, integer shift = shifted copy), SSD_COST (every displacement against
 * a naive loop), WARP_SSD_GRAD (against central finite differences of the warped SSD) and
 * MIND_SSC (range (0, 1], invariance to an affine intensity change). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nn/nn.h"

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

int main(void)
{
    char err[256];
    nn_backend *b;
    if (nn_backend_cpu_new(2, &b, err, sizeof err)) return 1;
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
    printf("%s: registration ops\n", fails ? "FAIL" : "ok");
    free(f);
    free(m);
    free(u);
    free(out);
    free(g);
    free(wp);
    free(wm);
    free(x2);
    free(o2);
    nn_backend_free(b);
    return fails ? 1 : 0;
}
