/* nn/reg_elem.h — private to nn/: the per-element math of the registration ops (MIND-SSC, WARP,
 * SSD_COST, WARP_SSD_GRAD; definitions in nn/nn.h), written once for the device and the host.
 * The CUDA kernels (nn/cuda/reg.cu) are a grid-stride loop around each function. The CPU backend
 * (nn/cpu/reg.c) shares the MIND pairs and normalisation, trilinear sampling and the gradient,
 * and keeps its own loops where they are faster on a CPU (row-wise shifts and running box sums
 * for MIND-SSC and the cost volume, planes of the warp). tests/nn/test_reg_ops.c runs these
 * functions as the kernels do, on the host over every element, against the CPU backend, so the
 * kernels' index arithmetic is checked on machines without a GPU. The order of float operations
 * follows the CPU's; the CPU's box filter keeps a running double sum where this sums the 2r+1
 * values directly (differences ~1e-6 relative). Borders replicate (clamped coordinates).
 * Plain C when not compiled by nvcc. */
#ifndef SEGNODE_NN_REG_ELEM_H
#define SEGNODE_NN_REG_ELEM_H

#include <math.h>
#include <stdint.h>

#ifdef __CUDACC__
#define NN_HD __host__ __device__ __forceinline__
#else
#define NN_HD static inline
#endif

/* A volume's spatial size. */
typedef struct nn_reg_vol {
    int64_t D, H, W;
} nn_reg_vol;

NN_HD int64_t nn_reg_clampi(int64_t v, int64_t lo, int64_t hi) { return v < lo ? lo : v > hi ? hi : v; }
NN_HD float nn_reg_clampf(float v, float lo, float hi) { return v < lo ? lo : v > hi ? hi : v; }

/* ---- MIND-SSC -------------------------------------------------------------------------------- */

/* The 12 pairs of the 6-neighbourhood at squared distance 2, in the CPU backend's order (it
 * enumerates i > j over {(-1,0,0), (0,0,-1), (0,-1,0), (0,0,1), (1,0,0), (0,1,0)} (z, y, x)).
 * Each row: the two offsets (z, y, x). */
NN_HD void nn_reg_mind_pair(int ch, int a[3], int b[3])
{
    const int six[6][3] = {{-1, 0, 0}, {0, 0, -1}, {0, -1, 0}, {0, 0, 1}, {1, 0, 0}, {0, 1, 0}};
    const int pairs[12][2] = {{1, 0}, {2, 0}, {2, 1}, {3, 0}, {3, 2}, {4, 1},
                              {4, 2}, {4, 3}, {5, 0}, {5, 1}, {5, 3}, {5, 4}};
    for (int k = 0; k < 3; k++) {
        a[k] = six[pairs[ch][0]][k];
        b[k] = six[pairs[ch][1]][k];
    }
}

/* Channel ch at (z, y, x): squared difference of the image at the pair's two offsets (times
 * dil). x is one image [D][H][W]. */
NN_HD float nn_reg_mind_sqdiff(const float *x, nn_reg_vol g, int dil, int ch, int64_t z, int64_t y,
                               int64_t xx)
{
    int a[3], b[3];
    nn_reg_mind_pair(ch, a, b);
    const int64_t az = nn_reg_clampi(z + a[0] * dil, 0, g.D - 1), ay = nn_reg_clampi(y + a[1] * dil, 0, g.H - 1);
    const int64_t ax = nn_reg_clampi(xx + a[2] * dil, 0, g.W - 1);
    const int64_t bz = nn_reg_clampi(z + b[0] * dil, 0, g.D - 1), by = nn_reg_clampi(y + b[1] * dil, 0, g.H - 1);
    const int64_t bx = nn_reg_clampi(xx + b[2] * dil, 0, g.W - 1);
    const float d = x[(az * g.H + ay) * g.W + ax] - x[(bz * g.H + by) * g.W + bx];
    return d * d;
}

/* Box mean of radius r along one axis (0 = W, 1 = H, 2 = D) at (z, y, x) of one channel
 * [D][H][W]. */
NN_HD float nn_reg_box(const float *p, nn_reg_vol g, int axis, int r, int64_t z, int64_t y, int64_t xx)
{
    const int64_t n = axis == 0 ? g.W : axis == 1 ? g.H : g.D;
    const int64_t st = axis == 0 ? 1 : axis == 1 ? g.W : g.H * g.W;
    const int64_t i = axis == 0 ? xx : axis == 1 ? y : z;
    const float *line = p + (z * g.H + y) * g.W + xx - i * st;
    float s = 0;
    for (int64_t k = i - r; k <= i + r; k++) s += line[nn_reg_clampi(k, 0, n - 1) * st];
    return s * (1.0f / (float)(2 * r + 1));
}

/* The minimum over the 12 channels at voxel i (channel stride S) and the mean distance
 * sum_c (o_c - min) / 12 that normalises it. */
NN_HD float nn_reg_mind_var(const float *o, int64_t S, int64_t i, float *mn_out)
{
    float mn = o[i], v = 0;
    for (int c = 1; c < 12; c++) mn = fminf(mn, o[c * S + i]);
    for (int c = 0; c < 12; c++) v += o[c * S + i] - mn;
    *mn_out = mn;
    return v / 12.0f;
}

/* The image's mean of nn_reg_mind_var (as a double sum over S voxels) -> the clamp range. */
NN_HD void nn_reg_mind_range(double sum, int64_t S, float *lo, float *hi)
{
    double mean = sum / (double)S;
    if (!(mean > 1e-12)) mean = 1e-12;
    *lo = (float)(mean * 1e-3);
    *hi = (float)(mean * 1e3);
}

/* Normalise voxel i in place: exp(-(o_c - min) / clamp(var, lo, hi)). */
NN_HD void nn_reg_mind_normalise(float *o, int64_t S, int64_t i, float lo, float hi)
{
    float mn, v = nn_reg_mind_var(o, S, i, &mn);
    v = nn_reg_clampf(v, lo, hi);
    const float inv = 1.0f / v;
    for (int c = 0; c < 12; c++) o[c * S + i] = expf(-(o[c * S + i] - mn) * inv);
}

/* ---- trilinear sampling ---------------------------------------------------------------------- */

typedef struct nn_reg_tri {
    int64_t i000, dx, dy, dz;    /* base offset and offsets to the +1 neighbours (0 at borders) */
    float fx, fy, fz;
    int inx, iny, inz;           /* 1 when the coordinate was inside (derivative defined) */
} nn_reg_tri;

NN_HD void nn_reg_tri_setup(nn_reg_tri *t, float sx, float sy, float sz, nn_reg_vol g)
{
    t->inx = sx >= 0 && sx <= (float)(g.W - 1);
    t->iny = sy >= 0 && sy <= (float)(g.H - 1);
    t->inz = sz >= 0 && sz <= (float)(g.D - 1);
    sx = nn_reg_clampf(sx, 0, (float)(g.W - 1));
    sy = nn_reg_clampf(sy, 0, (float)(g.H - 1));
    sz = nn_reg_clampf(sz, 0, (float)(g.D - 1));
    const int64_t x0 = (int64_t)sx, y0 = (int64_t)sy, z0 = (int64_t)sz;
    t->fx = sx - (float)x0;
    t->fy = sy - (float)y0;
    t->fz = sz - (float)z0;
    t->dx = x0 + 1 < g.W ? 1 : 0;
    t->dy = y0 + 1 < g.H ? g.W : 0;
    t->dz = z0 + 1 < g.D ? g.H * g.W : 0;
    t->i000 = (z0 * g.H + y0) * g.W + x0;
}

NN_HD float nn_reg_tri_get(const nn_reg_tri *t, const float *p)
{
    const float *q = p + t->i000;
    const float c00 = q[0] + (q[t->dx] - q[0]) * t->fx;
    const float c01 = q[t->dy] + (q[t->dy + t->dx] - q[t->dy]) * t->fx;
    const float c10 = q[t->dz] + (q[t->dz + t->dx] - q[t->dz]) * t->fx;
    const float c11 = q[t->dz + t->dy] + (q[t->dz + t->dy + t->dx] - q[t->dz + t->dy]) * t->fx;
    const float c0 = c00 + (c01 - c00) * t->fy, c1 = c10 + (c11 - c10) * t->fy;
    return c0 + (c1 - c0) * t->fz;
}

/* Value and its derivatives along x, y, z. */
NN_HD float nn_reg_tri_grad(const nn_reg_tri *t, const float *p, float *gx, float *gy, float *gz)
{
    const float *q = p + t->i000;
    const float v000 = q[0], v001 = q[t->dx], v010 = q[t->dy], v011 = q[t->dy + t->dx];
    const float v100 = q[t->dz], v101 = q[t->dz + t->dx], v110 = q[t->dz + t->dy];
    const float v111 = q[t->dz + t->dy + t->dx];
    const float fx = t->fx, fy = t->fy, fz = t->fz;
    const float c00 = v000 + (v001 - v000) * fx, c01 = v010 + (v011 - v010) * fx;
    const float c10 = v100 + (v101 - v100) * fx, c11 = v110 + (v111 - v110) * fx;
    const float c0 = c00 + (c01 - c00) * fy, c1 = c10 + (c11 - c10) * fy;
    *gz = c1 - c0;
    *gy = (1 - fz) * (c01 - c00) + fz * (c11 - c10);
    *gx = (1 - fz) * ((1 - fy) * (v001 - v000) + fy * (v011 - v010)) +
          fz * ((1 - fy) * (v101 - v100) + fy * (v111 - v110));
    return c0 + (c1 - c0) * fz;
}

/* ---- WARP: output voxel i of one image ------------------------------------------------------- */

/* x: one image [C][x-grid], u: its field [3][out-grid] (oS voxels), o: the output [C][out-grid].
 * The output grid maps onto x's with align_corners=False. */
NN_HD void nn_reg_warp(const float *x, int64_t C, nn_reg_vol gx, const float *u, nn_reg_vol go, float *o,
                       int64_t i)
{
    const int64_t oS = go.D * go.H * go.W, xS = gx.D * gx.H * gx.W;
    const int64_t xx = i % go.W, y = (i / go.W) % go.H, z = i / (go.W * go.H);
    const float kx = (float)gx.W / (float)go.W, ky = (float)gx.H / (float)go.H, kz = (float)gx.D / (float)go.D;
    nn_reg_tri t;
    nn_reg_tri_setup(&t, ((float)xx + 0.5f) * kx - 0.5f + u[i], ((float)y + 0.5f) * ky - 0.5f + u[oS + i],
                     ((float)z + 0.5f) * kz - 0.5f + u[2 * oS + i], gx);
    for (int64_t c = 0; c < C; c++) o[c * oS + i] = nn_reg_tri_get(&t, x + c * xS);
}

/* ---- SSD_COST: displacement d (index (dz*L + dy)*L + dx) at voxel i of one image ------------- */

NN_HD float nn_reg_ssd_cost(const float *f, const float *m, int64_t C, nn_reg_vol g, int r, int dil,
                            int64_t d, int64_t i)
{
    const int L = 2 * r + 1;
    const int dx = (int)(d % L) - r, dy = (int)((d / L) % L) - r, dz = (int)(d / (L * L)) - r;
    const int64_t S = g.D * g.H * g.W;
    const int64_t x = i % g.W, y = (i / g.W) % g.H, z = i / (g.W * g.H);
    const int64_t mi = (nn_reg_clampi(z + dz * dil, 0, g.D - 1) * g.H + nn_reg_clampi(y + dy * dil, 0, g.H - 1)) * g.W +
                       nn_reg_clampi(x + (int64_t)dx * dil, 0, g.W - 1);
    float s = 0;
    for (int64_t c = 0; c < C; c++) {
        const float e = f[c * S + i] - m[c * S + mi];
        s += e * e;
    }
    return s * (1.0f / (float)C);
}

/* ---- WARP_SSD_GRAD: voxel i of one image; writes the 3 channels of o (stride S) --------------- */

NN_HD void nn_reg_warp_ssd_grad(const float *f, const float *m, const float *u, int64_t C, nn_reg_vol g,
                                float *o, int64_t i)
{
    const int64_t S = g.D * g.H * g.W;
    const int64_t x = i % g.W, y = (i / g.W) % g.H, z = i / (g.W * g.H);
    const float k = 2.0f / (float)C;
    nn_reg_tri t;
    nn_reg_tri_setup(&t, (float)x + u[i], (float)y + u[S + i], (float)z + u[2 * S + i], g);
    float gx = 0, gy = 0, gz = 0;
    for (int64_t c = 0; c < C; c++) {
        float ax, ay, az;
        const float v = nn_reg_tri_grad(&t, m + c * S, &ax, &ay, &az);
        const float e = (v - f[c * S + i]) * k;
        gx += e * ax;
        gy += e * ay;
        gz += e * az;
    }
    o[i] = t.inx ? gx : 0;
    o[S + i] = t.iny ? gy : 0;
    o[2 * S + i] = t.inz ? gz : 0;
}

#endif
