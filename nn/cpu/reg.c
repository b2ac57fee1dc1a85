/* nn/cpu/reg.c — the CPU backend's registration ops (pipeline/atlas uses them): MIND-SSC
 * descriptors, trilinear warping by a displacement field, the SSD displacement cost volume of the
 * discrete search, and the analytic gradient of the warped SSD for instance optimisation.
 * Definitions are in nn/nn.h beside the op types; every border replicates (clamped coordinates).
 * Loops are split over the thread pool by planes. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/status.h"
#include "nn/cpu/cpu.h"

static inline int64_t clampi(int64_t v, int64_t lo, int64_t hi) { return v < lo ? lo : v > hi ? hi : v; }
static inline float clampf(float v, float lo, float hi) { return v < lo ? lo : v > hi ? hi : v; }

/* ---- MIND-SSC ------------------------------------------------------------------------------- */

/* The 6-neighbourhood (z, y, x) and its 12 pairs at squared distance 2 (opposite pairs left
 * out), as in Heinrich et al. 2013 and the convexAdam reference code. */
static const int g_six[6][3] = {{-1, 0, 0}, {0, 0, -1}, {0, -1, 0}, {0, 0, 1}, {1, 0, 0}, {0, 1, 0}};
static int g_pairs[12][2];
static int g_pairs_ready;

static void mind_pairs(void)
{
    if (g_pairs_ready) return;
    int n = 0;
    for (int i = 0; i < 6; i++)
        for (int j = 0; j < i; j++) {
            int d2 = 0;
            for (int a = 0; a < 3; a++) d2 += (g_six[i][a] - g_six[j][a]) * (g_six[i][a] - g_six[j][a]);
            if (d2 == 2 && n < 12) {
                g_pairs[n][0] = i;
                g_pairs[n][1] = j;
                n++;
            }
        }
    g_pairs_ready = 1;
}

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
    for (int64_t k = -r; k <= r; k++) s += tmp[clampi(k, 0, n - 1)];
    const float inv = 1.0f / (float)(2 * r + 1);
    for (int64_t i = 0; i < n; i++) {
        p[i * st] = (float)s * inv;
        s += tmp[clampi(i + r + 1, 0, n - 1)] - tmp[clampi(i - r, 0, n - 1)];
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
        const int *a = g_six[g_pairs[ch][0]], *b = g_six[g_pairs[ch][1]];
        for (int64_t z = 0; z < D; z++)
            for (int64_t y = 0; y < H; y++) {
                const int64_t az = clampi(z + a[0] * j->dil, 0, D - 1), ay = clampi(y + a[1] * j->dil, 0, H - 1);
                const int64_t bz = clampi(z + b[0] * j->dil, 0, D - 1), by = clampi(y + b[1] * j->dil, 0, H - 1);
                const float *ra = x + (az * H + ay) * W, *rb = x + (bz * H + by) * W;
                float *ro = o + (z * H + y) * W;
                for (int64_t xx = 0; xx < W; xx++) {
                    float d = ra[clampi(xx + a[2] * j->dil, 0, W - 1)] - rb[clampi(xx + b[2] * j->dil, 0, W - 1)];
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
    double lo, hi;
    int64_t img;
} mind_norm_job;

static void mind_normalise(void *ctx, int64_t i0, int64_t i1)
{
    const mind_norm_job *j = ctx;
    float *o = j->out + j->img * 12 * j->S;
    for (int64_t i = i0; i < i1; i++) {
        float mn = o[i], v = 0;
        for (int c = 1; c < 12; c++) mn = fminf(mn, o[c * j->S + i]);
        for (int c = 0; c < 12; c++) v += o[c * j->S + i] - mn;
        v = clampf(v / 12.0f, (float)j->lo, (float)j->hi);
        const float inv = 1.0f / v;
        for (int c = 0; c < 12; c++) o[c * j->S + i] = expf(-(o[c * j->S + i] - mn) * inv);
    }
}

int nn__cpu_mind_ssc(cpu_backend *b, nn_node *n)
{
    mind_pairs();
    const nn_tensor *x = n->in[0];
    mind_job j = {x->data, n->out->data, x->shape[2], x->shape[3], x->shape[4], x->shape[0],
                  n->op.dilation[0] > 0 ? n->op.dilation[0] : 1, n->op.k[0] > 0 ? n->op.k[0] : 0};
    nn__pool_for(b->pool, j.N * 12, 1, mind_channels, &j);
    const int64_t S = j.D * j.H * j.W;
    for (int64_t img = 0; img < j.N; img++) {
        const float *o = j.out + img * 12 * S;
        double sum = 0;
        for (int64_t i = 0; i < S; i++) {
            float mn = o[i], v = 0;
            for (int c = 1; c < 12; c++) mn = fminf(mn, o[c * S + i]);
            for (int c = 0; c < 12; c++) v += o[c * S + i] - mn;
            sum += v / 12.0f;
        }
        double mean = sum / (double)S;
        if (!(mean > 1e-12)) mean = 1e-12;
        mind_norm_job nj = {j.out, S, mean * 1e-3, mean * 1e3, img};
        nn__pool_for(b->pool, S, 1 << 12, mind_normalise, &nj);
    }
    return 0;
}

/* ---- trilinear sampling helpers ------------------------------------------------------------- */

typedef struct tri {
    int64_t i000, dx, dy, dz;    /* base offset and offsets to the +1 neighbours (0 at borders) */
    float fx, fy, fz;
    int inx, iny, inz;           /* 1 when the coordinate was inside (derivative defined) */
} tri;

static inline void tri_setup(tri *t, float sx, float sy, float sz, int64_t D, int64_t H, int64_t W)
{
    t->inx = sx >= 0 && sx <= (float)(W - 1);
    t->iny = sy >= 0 && sy <= (float)(H - 1);
    t->inz = sz >= 0 && sz <= (float)(D - 1);
    sx = clampf(sx, 0, (float)(W - 1));
    sy = clampf(sy, 0, (float)(H - 1));
    sz = clampf(sz, 0, (float)(D - 1));
    int64_t x0 = (int64_t)sx, y0 = (int64_t)sy, z0 = (int64_t)sz;
    t->fx = sx - (float)x0;
    t->fy = sy - (float)y0;
    t->fz = sz - (float)z0;
    t->dx = x0 + 1 < W ? 1 : 0;
    t->dy = y0 + 1 < H ? W : 0;
    t->dz = z0 + 1 < D ? H * W : 0;
    t->i000 = (z0 * H + y0) * W + x0;
}

static inline float tri_get(const tri *t, const float *p)
{
    const float *q = p + t->i000;
    float c00 = q[0] + (q[t->dx] - q[0]) * t->fx;
    float c01 = q[t->dy] + (q[t->dy + t->dx] - q[t->dy]) * t->fx;
    float c10 = q[t->dz] + (q[t->dz + t->dx] - q[t->dz]) * t->fx;
    float c11 = q[t->dz + t->dy] + (q[t->dz + t->dy + t->dx] - q[t->dz + t->dy]) * t->fx;
    float c0 = c00 + (c01 - c00) * t->fy, c1 = c10 + (c11 - c10) * t->fy;
    return c0 + (c1 - c0) * t->fz;
}

/* Value and its derivatives along x, y, z. */
static inline float tri_grad(const tri *t, const float *p, float *gx, float *gy, float *gz)
{
    const float *q = p + t->i000;
    float v000 = q[0], v001 = q[t->dx], v010 = q[t->dy], v011 = q[t->dy + t->dx];
    float v100 = q[t->dz], v101 = q[t->dz + t->dx], v110 = q[t->dz + t->dy], v111 = q[t->dz + t->dy + t->dx];
    float fx = t->fx, fy = t->fy, fz = t->fz;
    float c00 = v000 + (v001 - v000) * fx, c01 = v010 + (v011 - v010) * fx;
    float c10 = v100 + (v101 - v100) * fx, c11 = v110 + (v111 - v110) * fx;
    float c0 = c00 + (c01 - c00) * fy, c1 = c10 + (c11 - c10) * fy;
    *gz = c1 - c0;
    *gy = (1 - fz) * (c01 - c00) + fz * (c11 - c10);
    *gx = (1 - fz) * ((1 - fy) * (v001 - v000) + fy * (v011 - v010)) +
          fz * ((1 - fy) * (v101 - v100) + fy * (v111 - v110));
    return c0 + (c1 - c0) * fz;
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
    for (int64_t p = p0; p < p1; p++) {
        const int64_t img = p / oD, z = p % oD;
        const float *xs = (const float *)x->data + img * C * D * H * W;
        const float *us = (const float *)u->data + img * 3 * oS;
        float *os = (float *)n->out->data + img * C * oS;
        for (int64_t y = 0; y < oH; y++)
            for (int64_t xx = 0; xx < oW; xx++) {
                const int64_t i = (z * oH + y) * oW + xx;
                tri t;
                tri_setup(&t, ((float)xx + 0.5f) * kx - 0.5f + us[i], ((float)y + 0.5f) * ky - 0.5f + us[oS + i],
                          ((float)z + 0.5f) * kz - 0.5f + us[2 * oS + i], D, H, W);
                for (int64_t c = 0; c < C; c++) os[c * oS + i] = tri_get(&t, xs + c * D * H * W);
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
                const int64_t mz = clampi(z + dz * st, 0, D - 1);
                for (int64_t y = 0; y < H; y++) {
                    const int64_t my = clampi(y + dy * st, 0, H - 1);
                    const float *fr = fc + (z * H + y) * W, *mr = mc + (mz * H + my) * W;
                    float *orow = o + (z * H + y) * W;
                    const int64_t sh = (int64_t)dx * st;
                    int64_t lo = sh < 0 ? -sh : 0, hi = sh > 0 ? W - sh : W;   /* unclamped range */
                    if (lo > W) lo = W;
                    if (hi < lo) hi = lo;
                    for (int64_t x = 0; x < lo; x++) {
                        float e = fr[x] - mr[clampi(x + sh, 0, W - 1)];
                        orow[x] += e * e;
                    }
                    const float *ms2 = mr + sh;
                    for (int64_t x = lo; x < hi; x++) {
                        float e = fr[x] - ms2[x];
                        orow[x] += e * e;
                    }
                    for (int64_t x = hi; x < W; x++) {
                        float e = fr[x] - mr[clampi(x + sh, 0, W - 1)];
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
    const float k = 2.0f / (float)C;
    for (int64_t p = p0; p < p1; p++) {
        const int64_t img = p / D, z = p % D;
        const float *fs = (const float *)f->data + img * C * S, *ms = (const float *)m->data + img * C * S;
        const float *us = (const float *)u->data + img * 3 * S;
        float *o = (float *)n->out->data + img * 3 * S;
        for (int64_t y = 0; y < H; y++)
            for (int64_t x = 0; x < W; x++) {
                const int64_t i = (z * H + y) * W + x;
                tri t;
                tri_setup(&t, (float)x + us[i], (float)y + us[S + i], (float)z + us[2 * S + i], D, H, W);
                float gx = 0, gy = 0, gz = 0;
                for (int64_t c = 0; c < C; c++) {
                    float ax, ay, az;
                    float v = tri_grad(&t, ms + c * S, &ax, &ay, &az);
                    float e = (v - fs[c * S + i]) * k;
                    gx += e * ax;
                    gy += e * ay;
                    gz += e * az;
                }
                o[i] = t.inx ? gx : 0;
                o[S + i] = t.iny ? gy : 0;
                o[2 * S + i] = t.inz ? gz : 0;
            }
    }
}

int nn__cpu_warp_ssd_grad(cpu_backend *b, nn_node *n)
{
    nn__pool_for(b->pool, n->in[0]->shape[0] * n->in[0]->shape[2], 1, grad_planes, n);
    return 0;
}
