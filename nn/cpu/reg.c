/* nn/cpu/reg.c — the CPU backend's registration ops (pipeline/atlas uses them): MIND-SSC
 * descriptors, trilinear warping by a displacement field, the SSD displacement cost volume of the
 * discrete search, and the analytic gradient of the warped SSD for instance optimisation.
 * Definitions are in nn/nn.h beside the op types; every border replicates (clamped coordinates).
 * The per-voxel math shared with the CUDA kernels is in nn/reg_elem.h; the loops here are the
 * CPU's (rows and planes, split over the thread pool by planes). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/status.h"
#include "nn/cpu/cpu.h"
#include "nn/reg_elem.h"


/* ---- MIND-SSC ------------------------------------------------------------------------------- */

typedef struct mind_job {
    const float *x;
    float *out;
    int64_t D, H, W, N;
    int dil, r;
} mind_job;

/* Running box sum of radius r along a line of n values with stride `st` (replicate borders),
 * divided by the box size. */
static void box_line(float *p, int64_t n, int64_t st, int r, float *tmp)
{
    for (int64_t i = 0; i < n; i++) tmp[i] = p[i * st];
    double s = 0;
    for (int64_t k = -r; k <= r; k++) s += tmp[nn_reg_clampi(k, 0, n - 1)];
    const float inv = 1.0f / (float)(2 * r + 1);
    for (int64_t i = 0; i < n; i++) {
        p[i * st] = (float)s * inv;
        s += tmp[nn_reg_clampi(i + r + 1, 0, n - 1)] - tmp[nn_reg_clampi(i - r, 0, n - 1)];
    }
}

/* One (image, pair) channel: squared differences of the two shifted images, box-filtered. */
static void mind_channels(void *ctx, int64_t c0, int64_t c1)
{
    const mind_job *j = ctx;
    const int64_t D = j->D, H = j->H, W = j->W, S = D * H * W;
    int64_t mx = D > H ? D : H;
    mx = mx > W ? mx : W;
    float *tmp = malloc(sizeof(float) * (size_t)mx);
    if (!tmp) return;
    for (int64_t c = c0; c < c1; c++) {
        const int64_t img = c / 12, ch = c % 12;
        const float *x = j->x + img * S;
        float *o = j->out + (img * 12 + ch) * S;
        int a[3], b[3];   /* the pair's two offsets of the 6-neighbourhood (Heinrich et al. 2013) */
        nn_reg_mind_pair((int)ch, a, b);
        for (int64_t z = 0; z < D; z++)
            for (int64_t y = 0; y < H; y++) {
                const int64_t az = nn_reg_clampi(z + a[0] * j->dil, 0, D - 1);
                const int64_t ay = nn_reg_clampi(y + a[1] * j->dil, 0, H - 1);
                const int64_t bz = nn_reg_clampi(z + b[0] * j->dil, 0, D - 1);
                const int64_t by = nn_reg_clampi(y + b[1] * j->dil, 0, H - 1);
                const float *ra = x + (az * H + ay) * W, *rb = x + (bz * H + by) * W;
                float *ro = o + (z * H + y) * W;
                for (int64_t xx = 0; xx < W; xx++) {
                    float d = ra[nn_reg_clampi(xx + a[2] * j->dil, 0, W - 1)] -
                              rb[nn_reg_clampi(xx + b[2] * j->dil, 0, W - 1)];
                    ro[xx] = d * d;
                }
            }
        if (j->r > 0) {
            for (int64_t z = 0; z < D; z++)
                for (int64_t y = 0; y < H; y++) box_line(o + (z * H + y) * W, W, 1, j->r, tmp);
            for (int64_t z = 0; z < D; z++)
                for (int64_t xx = 0; xx < W; xx++) box_line(o + z * H * W + xx, H, W, j->r, tmp);
            for (int64_t y = 0; y < H; y++)
                for (int64_t xx = 0; xx < W; xx++) box_line(o + y * W + xx, D, H * W, j->r, tmp);
        }
    }
    free(tmp);
}

typedef struct mind_norm_job {
    float *out;
    int64_t S;
    float lo, hi;
    int64_t img;
} mind_norm_job;

static void mind_normalise(void *ctx, int64_t i0, int64_t i1)
{
    const mind_norm_job *j = ctx;
    float *o = j->out + j->img * 12 * j->S;
    for (int64_t i = i0; i < i1; i++) nn_reg_mind_normalise(o, j->S, i, j->lo, j->hi);
}

int nn__cpu_mind_ssc(cpu_backend *b, nn_node *n)
{
    const nn_tensor *x = n->in[0];
    mind_job j = {x->data, n->out->data, x->shape[2], x->shape[3], x->shape[4], x->shape[0],
                  n->op.dilation[0] > 0 ? n->op.dilation[0] : 1, n->op.k[0] > 0 ? n->op.k[0] : 0};
    nn__pool_for(b->pool, j.N * 12, 1, mind_channels, &j);
    const int64_t S = j.D * j.H * j.W;
    for (int64_t img = 0; img < j.N; img++) {
        const float *o = j.out + img * 12 * S;
        double sum = 0;
        float mn;
        for (int64_t i = 0; i < S; i++) sum += nn_reg_mind_var(o, S, i, &mn);
        mind_norm_job nj = {j.out, S, 0, 0, img};
        nn_reg_mind_range(sum, S, &nj.lo, &nj.hi);
        nn__pool_for(b->pool, S, 1 << 12, mind_normalise, &nj);
    }
    return 0;
}

/* ---- warp ----------------------------------------------------------------------------------- */

typedef struct warp_job {
    const nn_node *n;
} warp_job;

static void warp_planes(void *ctx, int64_t p0, int64_t p1)
{
    const nn_node *n = ((const warp_job *)ctx)->n;
    const nn_tensor *x = n->in[0], *u = n->in[1];
    const int64_t C = x->shape[1], D = x->shape[2], H = x->shape[3], W = x->shape[4];
    const int64_t oD = u->shape[2], oH = u->shape[3], oW = u->shape[4], oS = oD * oH * oW;
    const float kx = (float)W / (float)oW, ky = (float)H / (float)oH, kz = (float)D / (float)oD;
    const nn_reg_vol g = {D, H, W};
    for (int64_t p = p0; p < p1; p++) {
        const int64_t img = p / oD, z = p % oD;
        const float *xs = (const float *)x->data + img * C * D * H * W;
        const float *us = (const float *)u->data + img * 3 * oS;
        float *os = (float *)n->out->data + img * C * oS;
        for (int64_t y = 0; y < oH; y++)
            for (int64_t xx = 0; xx < oW; xx++) {
                const int64_t i = (z * oH + y) * oW + xx;
                nn_reg_tri t;
                nn_reg_tri_setup(&t, ((float)xx + 0.5f) * kx - 0.5f + us[i], ((float)y + 0.5f) * ky - 0.5f + us[oS + i],
                                 ((float)z + 0.5f) * kz - 0.5f + us[2 * oS + i], g);
                for (int64_t c = 0; c < C; c++) os[c * oS + i] = nn_reg_tri_get(&t, xs + c * D * H * W);
            }
    }
}

int nn__cpu_warp(cpu_backend *b, nn_node *n)
{
    warp_job j = {n};
    nn__pool_for(b->pool, n->in[1]->shape[0] * n->in[1]->shape[2], 1, warp_planes, &j);
    return 0;
}

/* ---- SSD cost volume ------------------------------------------------------------------------ */

static void cost_planes(void *ctx, int64_t p0, int64_t p1)
{
    const nn_node *n = ctx;
    const nn_tensor *f = n->in[0], *m = n->in[1];
    const int64_t C = f->shape[1], D = f->shape[2], H = f->shape[3], W = f->shape[4], S = D * H * W;
    const int r = n->op.k[0], L = 2 * r + 1, st = n->op.dilation[0] > 0 ? n->op.dilation[0] : 1;
    const int64_t L3 = (int64_t)L * L * L;
    const float invc = 1.0f / (float)C;
    for (int64_t p = p0; p < p1; p++) {     /* p = (img, displacement) */
        const int64_t img = p / L3, d = p % L3;
        const int dx = (int)(d % L) - r, dy = (int)((d / L) % L) - r, dz = (int)(d / (L * L)) - r;
        const float *fs = (const float *)f->data + img * C * S, *ms = (const float *)m->data + img * C * S;
        float *o = (float *)n->out->data + (img * L3 + d) * S;
        memset(o, 0, sizeof(float) * (size_t)S);
        for (int64_t c = 0; c < C; c++) {
            const float *fc = fs + c * S, *mc = ms + c * S;
            for (int64_t z = 0; z < D; z++) {
                const int64_t mz = nn_reg_clampi(z + dz * st, 0, D - 1);
                for (int64_t y = 0; y < H; y++) {
                    const int64_t my = nn_reg_clampi(y + dy * st, 0, H - 1);
                    const float *fr = fc + (z * H + y) * W, *mr = mc + (mz * H + my) * W;
                    float *orow = o + (z * H + y) * W;
                    const int64_t sh = (int64_t)dx * st;
                    int64_t lo = sh < 0 ? -sh : 0, hi = sh > 0 ? W - sh : W;   /* unclamped range */
                    if (lo > W) lo = W;
                    if (hi < lo) hi = lo;
                    for (int64_t x = 0; x < lo; x++) {
                        float e = fr[x] - mr[nn_reg_clampi(x + sh, 0, W - 1)];
                        orow[x] += e * e;
                    }
                    const float *ms2 = mr + sh;
                    for (int64_t x = lo; x < hi; x++) {
                        float e = fr[x] - ms2[x];
                        orow[x] += e * e;
                    }
                    for (int64_t x = hi; x < W; x++) {
                        float e = fr[x] - mr[nn_reg_clampi(x + sh, 0, W - 1)];
                        orow[x] += e * e;
                    }
                }
            }
        }
        for (int64_t i = 0; i < S; i++) o[i] *= invc;
    }
}

int nn__cpu_ssd_cost(cpu_backend *b, nn_node *n)
{
    nn__pool_for(b->pool, nn_tensor_dim(n->out, 0) * nn_tensor_dim(n->out, 1), 1, cost_planes, n);
    return 0;
}

/* ---- warped SSD gradient -------------------------------------------------------------------- */

static void grad_planes(void *ctx, int64_t p0, int64_t p1)
{
    const nn_node *n = ctx;
    const nn_tensor *f = n->in[0], *m = n->in[1], *u = n->in[2];
    const int64_t C = f->shape[1], D = f->shape[2], H = f->shape[3], W = f->shape[4], S = D * H * W;
    const nn_reg_vol g = {D, H, W};
    for (int64_t p = p0; p < p1; p++) {
        const int64_t img = p / D, z = p % D;
        const float *fs = (const float *)f->data + img * C * S, *ms = (const float *)m->data + img * C * S;
        const float *us = (const float *)u->data + img * 3 * S;
        float *o = (float *)n->out->data + img * 3 * S;
        for (int64_t i = z * H * W; i < (z + 1) * H * W; i++) nn_reg_warp_ssd_grad(fs, ms, us, C, g, o, i);
    }
}

int nn__cpu_warp_ssd_grad(cpu_backend *b, nn_node *n)
{
    nn__pool_for(b->pool, n->in[0]->shape[0] * n->in[0]->shape[2], 1, grad_planes, n);
    return 0;
}
