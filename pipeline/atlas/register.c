/* pipeline/atlas/register.c — atlas-to-target registration: moments initialisation, affine
 * descent on the MIND SSD, convexAdam-style deformable registration (SSD cost volume over a
 * discrete displacement set on a coarse grid, coupled convex optimisation with smoothing, forward
 * and backward fields symmetrised, Adam instance optimisation with a diffusion regulariser) and
 * the Jacobian determinant statistics that decide whether the deformable result is kept. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/status.h"
#include "pipeline/atlas/atlasInt.h"

void atlas_reg_opts_default(atlas_reg_opts *o)
{
    memset(o, 0, sizeof *o);
    o->affine_iters = 80;
    o->deformable = 1;
    o->disp_radius = 3;
    o->adam_iters = 60;
    o->adam_lr = 0.3f;
    o->lambda = 0.1f;
    o->lambda_fine = 0.1f;
    o->fold_max = 0.01;
    o->fine_iters = 30;
    o->roi = 0;
    o->roi_min_ml = 5;
    o->roi_max_ml = 600;
    o->roi_max_extent_mm = 200;
    o->roi_min_interior = 0.5;
    o->roi_margin_mm = 20;
    o->roi_radius = 2;
    o->roi_iters = 60;
    o->roi_lambda = 0.03f;
}

void atlas_reg_clear(atlas_reg *r)
{
    free(r->u);
    r->u = NULL;
}

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/* Foreground centroid (world) of a [0,1] image: voxels above the mean intensity. */
static void centroid(const atlas_grid *g, const float *img, double c[3])
{
    size_t n = atlas_grid_voxels(g);
    double mean = 0;
    for (size_t i = 0; i < n; i++) mean += img[i];
    mean /= (double)n;
    double s[3] = {0, 0, 0}, w = 0;
    for (int k = 0; k < g->nz; k++)
        for (int j = 0; j < g->ny; j++)
            for (int i = 0; i < g->nx; i++) {
                float v = img[i + (size_t)g->nx * (j + (size_t)g->ny * k)];
                if (v <= mean) continue;
                s[0] += i, s[1] += j, s[2] += k, w += 1;
            }
    double m[12];
    atlas_grid_to_world(g, m);
    double p[3] = {w > 0 ? s[0] / w : g->nx / 2.0, w > 0 ? s[1] / w : g->ny / 2.0, w > 0 ? s[2] / w : g->nz / 2.0};
    for (int i = 0; i < 3; i++) c[i] = m[i * 4] * p[0] + m[i * 4 + 1] * p[1] + m[i * 4 + 2] * p[2] + m[i * 4 + 3];
}

/* 2x average pooling of c channels [c][nz][ny][nx] (ceil) with the nn/ op. */
static int pool2(nn_backend *b, const float *in, int c, const int n[3], float *out, int on[3], char *err,
                 size_t errlen)
{
    nn_op_desc d;
    nn_op_desc_init(&d, NN_OP_AVG_POOL);
    for (int i = 0; i < 3; i++) d.k[i] = 2, d.stride[i] = 2;
    d.ceil_mode = 1;
    d.count_include_pad = 0;
    for (int i = 0; i < 3; i++) on[i] = (n[i] + 1) / 2;
    if (!out) return 0;
    int64_t sh[1][5] = {{1, c, n[2], n[1], n[0]}};
    const float *ins[1] = {in};
    return atlas__op_once(b, &d, 1, (const int64_t(*)[5])sh, ins, out, err, errlen);
}

static double mean_ssd(const float *a, const float *b, size_t n)
{
    double s = 0;
    for (size_t i = 0; i < n; i++) {
        double e = a[i] - b[i];
        s += e * e;
    }
    return s / (double)n;
}

/* 3x3x3 box smoothing of a 3-channel field, twice (nn/ average pooling, borders not counted). */
static int smooth3(nn_backend *b, float *u, const int n[3], float *tmp, char *err, size_t errlen)
{
    nn_op_desc d;
    nn_op_desc_init(&d, NN_OP_AVG_POOL);
    for (int i = 0; i < 3; i++) d.k[i] = 3, d.pad[i] = 1;
    d.count_include_pad = 0;
    int64_t sh[1][5] = {{1, 3, n[2], n[1], n[0]}};
    for (int r = 0; r < 2; r++) {
        const float *ins[1] = {u};
        int rc = atlas__op_once(b, &d, 1, (const int64_t(*)[5])sh, ins, tmp, err, errlen);
        if (rc) return rc;
        memcpy(u, tmp, sizeof(float) * 3 * (size_t)n[0] * n[1] * n[2]);
    }
    return 0;
}

/* The SSD cost volume of 12-channel descriptors F against M over the displacements [-rad, rad]^3
 * (nn/ SSD_COST; cost [(2 rad + 1)^3][S]). */
static int ssd_cost(nn_backend *b, const float *F, const float *M, const int n[3], int rad, float *cost, char *err,
                    size_t errlen)
{
    nn_op_desc d;
    nn_op_desc_init(&d, NN_OP_SSD_COST);
    d.k[0] = rad;
    int64_t sh[2][5] = {{1, 12, n[2], n[1], n[0]}, {1, 12, n[2], n[1], n[0]}};
    const float *ins[2] = {F, M};
    return atlas__op_once(b, &d, 2, (const int64_t(*)[5])sh, ins, cost, err, errlen);
}

/* Coupled convex optimisation over the cost volume: argmin_d C(d) + a*|d - smooth(u)|^2 for
 * growing a, starting from the plain argmin. u is [3][S] in coarse voxels. */
static int coupled_convex(nn_backend *b, const float *cost, int r, const int n[3], float *u, char *err,
                          size_t errlen)
{
    const int L = 2 * r + 1, L3 = L * L * L;
    const size_t S = (size_t)n[0] * n[1] * n[2];
    double mc = 0;
    for (size_t i = 0; i < (size_t)L3 * S; i += 7) mc += cost[i];
    mc = mc / (double)((size_t)L3 * S / 7 + 1) + 1e-9;
    float *us = malloc(sizeof(float) * 3 * S), *tmp = malloc(sizeof(float) * 3 * S);
    if (!us || !tmp) {
        free(us), free(tmp);
        return sn_errf(err, errlen, SN_ENOMEM, "out of memory");
    }
    static const float alphas[] = {0.0f, 0.01f, 0.03f, 0.1f, 0.3f, 1.0f};
    int rc = 0;
    for (int it = 0; it < (int)(sizeof alphas / sizeof alphas[0]) && !rc; it++) {
        const float a = (float)(alphas[it] * mc);
        if (it) {
            memcpy(us, u, sizeof(float) * 3 * S);
            if ((rc = smooth3(b, us, n, tmp, err, errlen))) break;
        }
#pragma omp parallel for schedule(static)
        for (size_t b0 = 0; b0 < S; b0 += 256) {   /* blocks of voxels: cost rows stay in cache */
            const size_t b1 = b0 + 256 < S ? b0 + 256 : S;
            float best[256];
            int bd[256];
            for (size_t i = b0; i < b1; i++) best[i - b0] = INFINITY, bd[i - b0] = L3 / 2;
            for (int d = 0; d < L3; d++) {
                const float dx = (float)(d % L - r), dy = (float)((d / L) % L - r), dz = (float)(d / (L * L) - r);
                const float *cd = cost + (size_t)d * S;
                for (size_t i = b0; i < b1; i++) {
                    float c = cd[i];
                    if (a > 0) {
                        float ex = dx - us[i], ey = dy - us[S + i], ez = dz - us[2 * S + i];
                        c += a * (ex * ex + ey * ey + ez * ez);
                    }
                    if (c < best[i - b0]) best[i - b0] = c, bd[i - b0] = d;
                }
            }
            for (size_t i = b0; i < b1; i++) {
                const int d = bd[i - b0];
                u[i] = (float)(d % L - r);
                u[S + i] = (float)((d / L) % L - r);
                u[2 * S + i] = (float)(d / (L * L) - r);
            }
        }
    }
    free(us);
    free(tmp);
    return rc;
}

/* Jacobian determinant statistics of x -> x + u(x) (u in voxels, central differences). */
/* det J of x -> x + u(x) at interior voxel p (u [3][S], grid nx * ny * ..., central
 * differences). */
static inline double jac_det(const float *u, size_t S, int nx, int ny, size_t p)
{
    double J[3][3];
    for (int c = 0; c < 3; c++) {
        const float *uc = u + c * S;
        J[c][0] = (uc[p + 1] - uc[p - 1]) * 0.5 + (c == 0);
        J[c][1] = (uc[p + nx] - uc[p - nx]) * 0.5 + (c == 1);
        J[c][2] = (uc[p + (size_t)nx * ny] - uc[p - (size_t)nx * ny]) * 0.5 + (c == 2);
    }
    return J[0][0] * (J[1][1] * J[2][2] - J[1][2] * J[2][1]) - J[0][1] * (J[1][0] * J[2][2] - J[1][2] * J[2][0]) +
           J[0][2] * (J[1][0] * J[2][1] - J[1][1] * J[2][0]);
}

static void jacobian_stats(const float *u, const int n[3], atlas_reg *r)
{
    const size_t S = (size_t)n[0] * n[1] * n[2];
    const int nx = n[0], ny = n[1], nz = n[2];
    double folds = 0, sum = 0, sum2 = 0, mn = INFINITY, mx = -INFINITY, cnt = 0;
#pragma omp parallel for reduction(+ : folds, sum, sum2, cnt) reduction(min : mn) reduction(max : mx)
    for (int k = 1; k < nz - 1; k++)
        for (int j = 1; j < ny - 1; j++)
            for (int i = 1; i < nx - 1; i++) {
                size_t p = i + (size_t)nx * (j + (size_t)ny * k);
                const double det = jac_det(u, S, nx, ny, p);
                if (!(det > 0)) folds += 1;
                sum += det, sum2 += det * det, cnt += 1;
                mn = det < mn ? det : mn;
                mx = det > mx ? det : mx;
            }
    if (cnt < 1) cnt = 1;
    r->fold_fraction = folds / cnt;
    r->jac_min = mn, r->jac_max = mx;
    double m = sum / cnt;
    r->jac_std = sqrt(fmax(0, sum2 / cnt - m * m));
}

int atlas_reg_warp_mind(nn_backend *b, const atlas_reg *r, const atlas_prep *atlas, float *out, char *err,
                        size_t errlen)
{
    const atlas_grid *g = &r->grid;
    const size_t S = atlas_grid_voxels(g);
    double toa[12], m[12];
    atlas_grid_from_world(&atlas->grid, toa);
    atlas__affine_mul(toa, r->A, m);   /* target working voxel -> atlas working voxel */
    float *aff = r->u ? malloc(sizeof(float) * 12 * S) : out;
    if (!aff) return sn_errf(err, errlen, SN_ENOMEM, "out of memory");
    const atlas_grid *ag = &atlas->grid;
#pragma omp parallel for schedule(static)
    for (int k = 0; k < g->nz; k++)
        for (int j = 0; j < g->ny; j++)
            for (int i = 0; i < g->nx; i++) {
                double x = m[0] * i + m[1] * j + m[2] * k + m[3], y = m[4] * i + m[5] * j + m[6] * k + m[7],
                       z = m[8] * i + m[9] * j + m[10] * k + m[11];
                /* Outside the atlas's field of view its border is repeated (air, as the target
                 * has there), never 0: zero descriptors are a structure no image has, and over a
                 * target's field of view much larger than the atlas's (a 700 mm PET against
                 * 432 mm CT atlases) the descent zoomed the atlas until the whole target fell
                 * inside it, every organ 4-7 times its volume (tests/atlas/README.md). */
                x = x < 0 ? 0 : x > ag->nx - 1 ? ag->nx - 1 : x;
                y = y < 0 ? 0 : y > ag->ny - 1 ? ag->ny - 1 : y;
                z = z < 0 ? 0 : z > ag->nz - 1 ? ag->nz - 1 : z;
                size_t p = i + (size_t)g->nx * (j + (size_t)g->ny * k);
                for (int c = 0; c < 12; c++)
                    aff[c * S + p] = atlas__sample(atlas->mind + c * atlas_grid_voxels(ag), ag->nx, ag->ny, ag->nz,
                                                   x, y, z, 0.0f);
            }
    if (!r->u) return 0;
    nn_op_desc d;
    nn_op_desc_init(&d, NN_OP_WARP);
    int64_t sh[2][5] = {{1, 12, g->nz, g->ny, g->nx}, {1, 3, g->nz, g->ny, g->nx}};
    const float *ins[2] = {aff, r->u};
    int rc = atlas__op_once(b, &d, 2, (const int64_t(*)[5])sh, ins, out, err, errlen);
    free(aff);
    return rc;
}

/* Affine descent in coarse voxel space: q(p) = c + B (p - c) + t, on the warped-SSD gradient. */
static int affine_descent(nn_backend *b, const float *F, const float *M, const int n[3], int iters, double Q[12],
                          char *err, size_t errlen)
{
    const size_t S = (size_t)n[0] * n[1] * n[2];
    float *u = malloc(sizeof(float) * 3 * S), *g = malloc(sizeof(float) * 3 * S);
    if (!u || !g) {
        free(u), free(g);
        return sn_errf(err, errlen, SN_ENOMEM, "out of memory");
    }
    nn_op_desc d;
    nn_op_desc_init(&d, NN_OP_WARP_SSD_GRAD);
    int64_t sh[3][5] = {{1, 12, n[2], n[1], n[0]}, {1, 12, n[2], n[1], n[0]}, {1, 3, n[2], n[1], n[0]}};
    atlas__op op;
    int rc = atlas__op_new(b, &d, 3, (const int64_t(*)[5])sh, &op, err, errlen);
    double c[3] = {(n[0] - 1) / 2.0, (n[1] - 1) / 2.0, (n[2] - 1) / 2.0};
    double R = fmax(n[0], fmax(n[1], n[2])) / 2.0;
    double P[12] = {0}, m1[12] = {0}, m2[12] = {0};   /* B - I (scaled by R) and t */
    const double lr_t = 0.3, lr_b = 0.01;
    for (int it = 0; it < iters && !rc; it++) {
        double B[9], t[3];
        for (int i = 0; i < 3; i++) {
            for (int j = 0; j < 3; j++) B[i * 3 + j] = (i == j) + P[i * 4 + j];
            t[i] = P[i * 4 + 3];
        }
#pragma omp parallel for schedule(static)
        for (int k = 0; k < n[2]; k++)
            for (int j = 0; j < n[1]; j++)
                for (int i = 0; i < n[0]; i++) {
                    size_t p = i + (size_t)n[0] * (j + (size_t)n[1] * k);
                    double q[3] = {i - c[0], j - c[1], k - c[2]};
                    u[p] = (float)(B[0] * q[0] + B[1] * q[1] + B[2] * q[2] - q[0] + t[0]);
                    u[S + p] = (float)(B[3] * q[0] + B[4] * q[1] + B[5] * q[2] - q[1] + t[1]);
                    u[2 * S + p] = (float)(B[6] * q[0] + B[7] * q[1] + B[8] * q[2] - q[2] + t[2]);
                }
        const float *ins[3] = {it ? NULL : F, it ? NULL : M, u};
        if ((rc = atlas__op_run(&op, ins, g, err, errlen))) break;
        double G[12] = {0};
        for (int k = 0; k < n[2]; k++)
            for (int j = 0; j < n[1]; j++)
                for (int i = 0; i < n[0]; i++) {
                    size_t p = i + (size_t)n[0] * (j + (size_t)n[1] * k);
                    double q[3] = {(i - c[0]) / R, (j - c[1]) / R, (k - c[2]) / R};
                    for (int a = 0; a < 3; a++) {
                        double ga = g[a * S + p];
                        G[a * 4] += ga * q[0], G[a * 4 + 1] += ga * q[1], G[a * 4 + 2] += ga * q[2], G[a * 4 + 3] += ga;
                    }
                }
        for (int i = 0; i < 12; i++) {   /* Adam on the 12 parameters */
            double gi = G[i] / (double)S;
            m1[i] = 0.9 * m1[i] + 0.1 * gi;
            m2[i] = 0.999 * m2[i] + 0.001 * gi * gi;
            double mh = m1[i] / (1 - pow(0.9, it + 1)), vh = m2[i] / (1 - pow(0.999, it + 1));
            double lr = (i % 4 == 3 ? lr_t : lr_b) * (1.0 - 0.7 * it / (double)iters);
            double step = lr * mh / (sqrt(vh) + 1e-12);
            P[i] -= step;
        }
    }
    atlas__op_free(&op);
    free(u);
    free(g);
    /* q = c + B (p - c) + t  =>  Q = [B | c - B c + t] (B scaled back from the R-normalised space) */
    for (int i = 0; i < 3; i++) {
        double tc = c[i] + P[i * 4 + 3];
        for (int j = 0; j < 3; j++) {
            Q[i * 4 + j] = (i == j) + P[i * 4 + j];
            tc -= Q[i * 4 + j] * c[j];
        }
        Q[i * 4 + 3] = tc;
    }
    return rc;
}

/* Adam on a displacement field u [3][n] (voxels of that grid): loss = mean_c (M(p + u) - F)^2
 * (gradient by the nn/ op) + lambda |grad u|^2 (diffusion, Neumann borders). */
static int adam_field(nn_backend *b, const float *F, const float *M, const int n[3], float *u, int iters, float lr,
                      float lam, char *err, size_t errlen)
{
    if (iters <= 0) return 0;
    const size_t Sc = (size_t)n[0] * n[1] * n[2];
    nn_op_desc dg;
    nn_op_desc_init(&dg, NN_OP_WARP_SSD_GRAD);
    int64_t sh[3][5] = {{1, 12, n[2], n[1], n[0]}, {1, 12, n[2], n[1], n[0]}, {1, 3, n[2], n[1], n[0]}};
    atlas__op op;
    int rc = atlas__op_new(b, &dg, 3, (const int64_t(*)[5])sh, &op, err, errlen);
    if (rc) return rc;
    float *m1 = calloc(3 * Sc, sizeof(float)), *m2 = calloc(3 * Sc, sizeof(float));
    float *g3 = malloc(sizeof(float) * 3 * Sc);
    if (!m1 || !m2 || !g3) rc = sn_errf(err, errlen, SN_ENOMEM, "out of memory");
    const int nx = n[0], ny = n[1], nz = n[2];
    for (int it = 0; it < iters && !rc; it++) {
        const float *ins[3] = {it ? NULL : F, it ? NULL : M, u};
        if ((rc = atlas__op_run(&op, ins, g3, err, errlen))) break;
        const float b1c = 1.0f - powf(0.9f, (float)(it + 1)), b2c = 1.0f - powf(0.999f, (float)(it + 1));
        /* gradient into g3 first (the Laplacian reads u), then the step */
#pragma omp parallel for schedule(static)
        for (int k = 0; k < nz; k++)
            for (int j = 0; j < ny; j++)
                for (int i = 0; i < nx; i++) {
                    size_t p = i + (size_t)nx * (j + (size_t)ny * k);
                    for (int c = 0; c < 3; c++) {
                        const float *uc = u + c * Sc;
                        float v = uc[p], lap = 0;
                        if (i > 0) lap += uc[p - 1] - v;
                        if (i < nx - 1) lap += uc[p + 1] - v;
                        if (j > 0) lap += uc[p - nx] - v;
                        if (j < ny - 1) lap += uc[p + nx] - v;
                        if (k > 0) lap += uc[p - (size_t)nx * ny] - v;
                        if (k < nz - 1) lap += uc[p + (size_t)nx * ny] - v;
                        size_t q = c * Sc + p;
                        float gr = g3[q] - 2.0f * lam * lap;
                        m1[q] = 0.9f * m1[q] + 0.1f * gr;
                        m2[q] = 0.999f * m2[q] + 0.001f * gr * gr;
                        g3[q] = lr * (m1[q] / b1c) / (sqrtf(m2[q] / b2c) + 1e-8f);
                    }
                }
        for (size_t i = 0; i < 3 * Sc; i++) u[i] -= g3[i];
    }
    free(m1);
    free(m2);
    free(g3);
    atlas__op_free(&op);
    return rc;
}

/* ---- per-organ region-of-interest refinement (atlas_reg_opts.roi) --------------------------- */

/* The organs to refine: atlas labels allowed by o->roi_labels whose volume, extent and share of
 * interior voxels (all six neighbours the same label) on the atlas's label grid are within the
 * options: small, compact, solid organs (spleen, kidneys, heart chambers; not the liver, fat,
 * ribs, aorta, nor a shell such as the myocardium: 0.25-0.37 interior on the phantoms' 4 mm
 * grids, the solid organs 0.58-0.85). Returns how many. */
static int roi_pick(const atlas_prep *atlas, const atlas_reg_opts *o, uint8_t pick[256])
{
    const atlas_grid *lg = &atlas->lgrid;
    size_t cnt[256] = {0}, inner[256] = {0};
    int lo[256][3], hi[256][3];
    const size_t sx = 1, sy = (size_t)lg->nx, sz = (size_t)lg->nx * lg->ny;
    for (int l = 0; l < 256; l++) lo[l][0] = lo[l][1] = lo[l][2] = 1 << 30, hi[l][0] = hi[l][1] = hi[l][2] = -1;
    for (int k = 0; k < lg->nz; k++)
        for (int j = 0; j < lg->ny; j++)
            for (int i = 0; i < lg->nx; i++) {
                const size_t p = i + (size_t)lg->nx * (j + (size_t)lg->ny * k);
                const uint8_t *L = atlas->labels;
                int l = L[p];
                if (!l) continue;
                cnt[l]++;
                inner[l] += i > 0 && j > 0 && k > 0 && i < lg->nx - 1 && j < lg->ny - 1 && k < lg->nz - 1 &&
                            L[p - sx] == l && L[p + sx] == l && L[p - sy] == l && L[p + sy] == l && L[p - sz] == l &&
                            L[p + sz] == l;
                int q[3] = {i, j, k};
                for (int a = 0; a < 3; a++) {
                    if (q[a] < lo[l][a]) lo[l][a] = q[a];
                    if (q[a] > hi[l][a]) hi[l][a] = q[a];
                }
            }
    const double ml = lg->spacing[0] * lg->spacing[1] * lg->spacing[2] / 1000.0;
    int n = 0;
    for (int l = 0; l < 256; l++) {
        pick[l] = 0;
        if (!l || !cnt[l] || (o->roi_labels && !o->roi_labels[l])) continue;
        double v = (double)cnt[l] * ml;
        if (v < o->roi_min_ml || v > o->roi_max_ml) continue;
        if ((double)inner[l] < o->roi_min_interior * (double)cnt[l]) continue;
        int ok = 1;
        for (int a = 0; a < 3; a++) ok &= (hi[l][a] - lo[l][a] + 1) * lg->spacing[a] <= o->roi_max_extent_mm;
        pick[l] = (uint8_t)ok;
        n += ok;
    }
    return n;
}

/* Bounding boxes on the target working grid of the picked atlas labels as (A, u) warps them:
 * box[l] = {lo x, lo y, lo z, hi x, hi y, hi z}, hi < lo when the label is not in view. The
 * label at a working voxel is the atlas label-grid voxel nearest to where it maps. */
static void roi_boxes(const atlas_reg *r, const atlas_prep *atlas, const uint8_t pick[256], int box[256][6])
{
    const atlas_grid *g = &r->grid, *lg = &atlas->lgrid;
    const size_t S = atlas_grid_voxels(g);
    double tol[12], m[12];
    atlas_grid_from_world(lg, tol);
    atlas__affine_mul(tol, r->A, m);   /* target working voxel -> atlas label voxel */
    for (int l = 0; l < 256; l++) box[l][0] = box[l][1] = box[l][2] = 1 << 30, box[l][3] = box[l][4] = box[l][5] = -1;
    for (int k = 0; k < g->nz; k++)
        for (int j = 0; j < g->ny; j++)
            for (int i = 0; i < g->nx; i++) {
                size_t p = i + (size_t)g->nx * (j + (size_t)g->ny * k);
                double x = i + r->u[p], y = j + r->u[S + p], z = k + r->u[2 * S + p];
                long a = lround(m[0] * x + m[1] * y + m[2] * z + m[3]), bq = lround(m[4] * x + m[5] * y + m[6] * z + m[7]),
                     c = lround(m[8] * x + m[9] * y + m[10] * z + m[11]);
                if (a < 0 || bq < 0 || c < 0 || a >= lg->nx || bq >= lg->ny || c >= lg->nz) continue;
                int l = atlas->labels[a + (size_t)lg->nx * (bq + (size_t)lg->ny * c)];
                if (!pick[l]) continue;
                int q[3] = {i, j, k};
                for (int d = 0; d < 3; d++) {
                    if (q[d] < box[l][d]) box[l][d] = q[d];
                    if (q[d] > box[l][3 + d]) box[l][3 + d] = q[d];
                }
            }
}

/* Voxels with det J <= 0 of x -> x + u(x) (u [3][voxels of n], central differences) among the
 * interior voxels of the box lo..hi. */
static size_t folds_in(const float *u, const int n[3], const int lo[3], const int hi[3])
{
    const size_t S = (size_t)n[0] * n[1] * n[2];
    const int nx = n[0], ny = n[1];
    size_t folds = 0;
    const int k0 = lo[2] > 1 ? lo[2] : 1, k1 = hi[2] < n[2] - 2 ? hi[2] : n[2] - 2;
    const int j0 = lo[1] > 1 ? lo[1] : 1, j1 = hi[1] < n[1] - 2 ? hi[1] : n[1] - 2;
    const int i0 = lo[0] > 1 ? lo[0] : 1, i1 = hi[0] < n[0] - 2 ? hi[0] : n[0] - 2;
#pragma omp parallel for reduction(+ : folds)
    for (int k = k0; k <= k1; k++)
        for (int j = j0; j <= j1; j++)
            for (int i = i0; i <= i1; i++) {
                size_t p = i + (size_t)nx * (j + (size_t)ny * k);
                const double det = jac_det(u, S, nx, ny, p);
                folds += !(det > 0);
            }
    return folds;
}

/* Weight of the residual field at box voxel q (box size nb) along one axis: a half cosine from 0
 * at a face to 1 `ramp` voxels inside, so the composed field meets the global one continuously
 * (value and first derivative) at the faces; a face on the image border gets no ramp. */
float atlas__roi_ramp(int q, int nb, int ramp, int open_lo, int open_hi)
{
    float w = 1.0f;
    if (ramp <= 0) return w;
    if (open_lo && q < ramp) w *= 0.5f - 0.5f * cosf(3.14159265f * (float)q / (float)ramp);
    if (open_hi && nb - 1 - q < ramp) w *= 0.5f - 0.5f * cosf(3.14159265f * (float)(nb - 1 - q) / (float)ramp);
    return w;
}

/* Copy nc channels of the box lo.. (size nb) out of a volume of size n into box [nc][nb], and
 * back. */
static void box_get(const float *vol, const int n[3], const int lo[3], const int nb[3], int nc, float *box)
{
    const size_t S = (size_t)n[0] * n[1] * n[2], Sb = (size_t)nb[0] * nb[1] * nb[2];
    for (int c = 0; c < nc; c++)
        for (int k = 0; k < nb[2]; k++)
            for (int j = 0; j < nb[1]; j++)
                memcpy(box + (size_t)nb[0] * (j + (size_t)nb[1] * k) + c * Sb,
                       vol + lo[0] + (size_t)n[0] * (lo[1] + j + (size_t)n[1] * (lo[2] + k)) + c * S,
                       sizeof(float) * nb[0]);
}

static void box_put(float *vol, const int n[3], const int lo[3], const int nb[3], int nc, const float *box)
{
    const size_t S = (size_t)n[0] * n[1] * n[2], Sb = (size_t)nb[0] * nb[1] * nb[2];
    for (int c = 0; c < nc; c++)
        for (int k = 0; k < nb[2]; k++)
            for (int j = 0; j < nb[1]; j++)
                memcpy(vol + lo[0] + (size_t)n[0] * (lo[1] + j + (size_t)n[1] * (lo[2] + k)) + c * S,
                       box + (size_t)nb[0] * (j + (size_t)nb[1] * k) + c * Sb, sizeof(float) * nb[0]);
}

/* One organ box lo..hi (working voxels, inclusive): the residual registration of W (the atlas
 * MIND as the current field warps it) to the target's, faded at the open faces, composed into
 * r->u when it does not fold. *kept = 1 when it was. */
static int roi_refine_box(nn_backend *b, const atlas_prep *target, const float *W, const atlas_reg_opts *o,
                          const int lo[3], const int hi[3], int ramp, atlas_reg *r, int *kept, char *err,
                          size_t errlen)
{
    const atlas_grid *g = &r->grid;
    const int n[3] = {g->nx, g->ny, g->nz};
    const size_t S = atlas_grid_voxels(g);
    const int nb[3] = {hi[0] - lo[0] + 1, hi[1] - lo[1] + 1, hi[2] - lo[2] + 1};
    const size_t Sb = (size_t)nb[0] * nb[1] * nb[2];
    const int rad = o->roi_radius, L = 2 * rad + 1, L3 = L * L * L;
    *kept = 0;
    float *Fb = malloc(sizeof(float) * 12 * Sb), *Mb = malloc(sizeof(float) * 12 * Sb);
    float *v = calloc(3 * Sb, sizeof(float)), *un = malloc(sizeof(float) * 3 * Sb);
    float *cost = rad > 0 ? malloc(sizeof(float) * (size_t)L3 * Sb) : NULL;
    int rc = 0;
    if (!Fb || !Mb || !v || !un || (rad > 0 && !cost)) {
        rc = sn_errf(err, errlen, SN_ENOMEM, "out of memory (organ box %d x %d x %d)", nb[0], nb[1], nb[2]);
        goto out;
    }
    box_get(target->mind, n, lo, nb, 12, Fb);
    box_get(W, n, lo, nb, 12, Mb);
    if (rad > 0) {   /* discrete search at the working grid's spacing: twice as fine as step 3's */
        if ((rc = ssd_cost(b, Fb, Mb, nb, rad, cost, err, errlen))) goto out;
        if ((rc = coupled_convex(b, cost, rad, nb, v, err, errlen))) goto out;
        /* the argmin is whole voxels: smooth before Adam, as step 5 starts from a coarse field */
        if ((rc = smooth3(b, v, nb, un, err, errlen))) goto out;
    }
    if ((rc = adam_field(b, Fb, Mb, nb, v, o->roi_iters, o->adam_lr, o->roi_lambda, err, errlen))) goto out;
    const int open_lo[3] = {lo[0] > 0, lo[1] > 0, lo[2] > 0};
    const int open_hi[3] = {hi[0] < n[0] - 1, hi[1] < n[1] - 1, hi[2] < n[2] - 1};
    int bad = 0;
    /* composed: p -> p + v(p) -> (p + v) + u(p + v), so u'(p) = v(p) + u(p + v(p)) */
#pragma omp parallel for reduction(| : bad)
    for (int k = 0; k < nb[2]; k++)
        for (int j = 0; j < nb[1]; j++)
            for (int i = 0; i < nb[0]; i++) {
                size_t q = i + (size_t)nb[0] * (j + (size_t)nb[1] * k);
                float w = atlas__roi_ramp(i, nb[0], ramp, open_lo[0], open_hi[0]) *
                          atlas__roi_ramp(j, nb[1], ramp, open_lo[1], open_hi[1]) *
                          atlas__roi_ramp(k, nb[2], ramp, open_lo[2], open_hi[2]);
                float vx = w * v[q], vy = w * v[Sb + q], vz = w * v[2 * Sb + q];
                bad |= !isfinite(vx) || !isfinite(vy) || !isfinite(vz);
                double x = lo[0] + i + vx, y = lo[1] + j + vy, z = lo[2] + k + vz;
                x = x < 0 ? 0 : x > n[0] - 1 ? n[0] - 1 : x;
                y = y < 0 ? 0 : y > n[1] - 1 ? n[1] - 1 : y;
                z = z < 0 ? 0 : z > n[2] - 1 ? n[2] - 1 : z;
                un[q] = vx + atlas__sample(r->u, n[0], n[1], n[2], x, y, z, 0.0f);
                un[Sb + q] = vy + atlas__sample(r->u + S, n[0], n[1], n[2], x, y, z, 0.0f);
                un[2 * Sb + q] = vz + atlas__sample(r->u + 2 * S, n[0], n[1], n[2], x, y, z, 0.0f);
            }
    if (bad) goto out;
    /* keep it when the box folds no more than before (0.1% of its voxels of slack) */
    const int elo[3] = {lo[0] - 1, lo[1] - 1, lo[2] - 1}, ehi[3] = {hi[0] + 1, hi[1] + 1, hi[2] + 1};
    size_t before = folds_in(r->u, n, elo, ehi);
    /* the old values go into v (no longer needed) so the box can be put back */
    box_get(r->u, n, lo, nb, 3, v);
    box_put(r->u, n, lo, nb, 3, un);
    size_t after = folds_in(r->u, n, elo, ehi);
    if (after > before + Sb / 1000) {
        box_put(r->u, n, lo, nb, 3, v);
    } else {
        *kept = 1;
    }
out:
    free(Fb), free(Mb), free(v), free(un), free(cost);
    return rc;
}

/* W (the atlas MIND as r warps it) again inside the box lo..hi only, after the box's field
 * changed: the atlas sampled at A (p + u(p)) directly (atlas_reg_warp_mind goes through the
 * affinely resampled atlas; the difference is one interpolation, and the full re-warp at the end
 * of step 7 gives the final descriptors as without refinement). */
static void warp_box(const atlas_reg *r, const atlas_prep *atlas, const int lo[3], const int hi[3], float *W)
{
    const atlas_grid *g = &r->grid, *ag = &atlas->grid;
    const size_t S = atlas_grid_voxels(g), Sa = atlas_grid_voxels(ag);
    double toa[12], m[12];
    atlas_grid_from_world(ag, toa);
    atlas__affine_mul(toa, r->A, m);
#pragma omp parallel for schedule(static)
    for (int k = lo[2]; k <= hi[2]; k++)
        for (int j = lo[1]; j <= hi[1]; j++)
            for (int i = lo[0]; i <= hi[0]; i++) {
                size_t p = i + (size_t)g->nx * (j + (size_t)g->ny * k);
                double px = i + r->u[p], py = j + r->u[S + p], pz = k + r->u[2 * S + p];
                double x = m[0] * px + m[1] * py + m[2] * pz + m[3], y = m[4] * px + m[5] * py + m[6] * pz + m[7],
                       z = m[8] * px + m[9] * py + m[10] * pz + m[11];
                x = x < 0 ? 0 : x > ag->nx - 1 ? ag->nx - 1 : x;   /* the border repeated, as there */
                y = y < 0 ? 0 : y > ag->ny - 1 ? ag->ny - 1 : y;
                z = z < 0 ? 0 : z > ag->nz - 1 ? ag->nz - 1 : z;
                for (int c = 0; c < 12; c++)
                    W[c * S + p] = atlas__sample(atlas->mind + c * Sa, ag->nx, ag->ny, ag->nz, x, y, z, 0.0f);
            }
}

/* Step 7: every small organ of the atlas in turn (label order), boxes from the global field, W
 * re-warped in the box after each box kept (boxes of neighbours overlap: spleen and left kidney).
 * W holds the atlas MIND warped by r (atlas_reg_warp_mind) on entry and on return. */
static int roi_refine(nn_backend *b, const atlas_prep *target, const atlas_prep *atlas, const atlas_reg_opts *o,
                      atlas_reg *r, float *W, char *err, size_t errlen)
{
    uint8_t pick[256];
    if (!atlas->labels || !roi_pick(atlas, o, pick)) return 0;
    int(*bx)[6] = malloc(sizeof(int[256][6]));
    if (!bx) return sn_errf(err, errlen, SN_ENOMEM, "out of memory");
    roi_boxes(r, atlas, pick, bx);
    const atlas_grid *g = &r->grid;
    const int n[3] = {g->nx, g->ny, g->nz};
    int rc = 0;
    for (int l = 1; l < 256 && !rc; l++) {
        if (!pick[l] || bx[l][3] < bx[l][0]) continue;
        int lo[3], hi[3], ramp = 0;
        for (int a = 0; a < 3; a++) {
            int m = (int)ceil(o->roi_margin_mm / g->spacing[a]);
            ramp = m > ramp ? m : ramp;
            lo[a] = bx[l][a] - m < 0 ? 0 : bx[l][a] - m;
            hi[a] = bx[l][3 + a] + m > n[a] - 1 ? n[a] - 1 : bx[l][3 + a] + m;
        }
        if (hi[0] - lo[0] < 4 || hi[1] - lo[1] < 4 || hi[2] - lo[2] < 4) continue;
        int kept = 0;
        if ((rc = roi_refine_box(b, target, W, o, lo, hi, ramp, r, &kept, err, errlen))) break;
        r->roi_refined++;
        r->roi_kept += kept;
        if (kept) warp_box(r, atlas, lo, hi, W);
    }
    if (!rc && r->roi_kept) rc = atlas_reg_warp_mind(b, r, atlas, W, err, errlen);
    free(bx);
    return rc;
}

/* Buffers both stages share: W the atlas MIND warped onto the target working grid, Fc / Mc the
 * target's and W's descriptors pooled to the coarse grid. */
typedef struct reg_bufs {
    int nw[3], nc[3];
    size_t S, Sc;
    float *W, *Fc, *Mc;
} reg_bufs;

static int bufs_new(nn_backend *b, const atlas_grid *g, reg_bufs *q, char *err, size_t errlen)
{
    memset(q, 0, sizeof *q);
    q->nw[0] = g->nx, q->nw[1] = g->ny, q->nw[2] = g->nz;
    pool2(b, NULL, 0, q->nw, NULL, q->nc, err, errlen);
    q->S = atlas_grid_voxels(g);
    q->Sc = (size_t)q->nc[0] * q->nc[1] * q->nc[2];
    q->W = malloc(sizeof(float) * 12 * q->S);
    q->Fc = malloc(sizeof(float) * 12 * q->Sc);
    q->Mc = malloc(sizeof(float) * 12 * q->Sc);
    if (!q->W || !q->Fc || !q->Mc) return sn_errf(err, errlen, SN_ENOMEM, "out of memory");
    return 0;
}

static void bufs_free(reg_bufs *q) { free(q->W), free(q->Fc), free(q->Mc); }

/* Steps 1-2: r->A, ssd_moments, ssd_affine (= ssd_final); q->W, Fc, Mc as the affine leaves them. */
static int reg_affine(nn_backend *b, const atlas_prep *target, const atlas_prep *atlas, const atlas_reg_opts *o,
                      atlas_reg *r, reg_bufs *q, double t0, char *err, size_t errlen)
{
    const atlas_grid *g = &target->grid;
    const size_t S = q->S;
    int *nw = q->nw, *nc = q->nc, rc;
    float *W = q->W, *Fc = q->Fc, *Mc = q->Mc;
    /* 1. moments: translate the atlas's foreground centroid onto the target's */
    double ct[3], ca[3], tw[12];
    centroid(g, target->img, ct);
    centroid(&atlas->grid, atlas->img, ca);
    atlas_grid_to_world(g, tw);
    double M0[12] = {1, 0, 0, ca[0] - ct[0], 0, 1, 0, ca[1] - ct[1], 0, 0, 1, ca[2] - ct[2]};
    atlas__affine_mul(M0, tw, r->A);
    if ((rc = atlas_reg_warp_mind(b, r, atlas, W, err, errlen))) return rc;
    if ((rc = pool2(b, target->mind, 12, nw, Fc, nc, err, errlen))) return rc;
    if ((rc = pool2(b, W, 12, nw, Mc, nc, err, errlen))) return rc;
    r->ssd_moments = mean_ssd(W, target->mind, 12 * S);
    if (o->verbose) fprintf(stderr, "atlas:   %-10s %.2f s\n", "moments", now_s() - t0);
    /* 2. affine descent on the coarse grid; compose back to working voxels */
    if (o->affine_iters > 0) {
        /* on the coarse grid (x2); pooling once more (x4) measurably loses accuracy */
        double Q[12], Sm[12] = {0.5, 0, 0, -0.25, 0, 0.5, 0, -0.25, 0, 0, 0.5, -0.25}, Si[12], Qw[12];
        if ((rc = affine_descent(b, Fc, Mc, nc, o->affine_iters, Q, err, errlen))) return rc;
        atlas__affine_inverse(Sm, Si);
        atlas__affine_mul(Q, Sm, Qw);
        atlas__affine_mul(Si, Qw, Qw);
        atlas__affine_mul(r->A, Qw, r->A);
        if ((rc = atlas_reg_warp_mind(b, r, atlas, W, err, errlen))) return rc;
        if ((rc = pool2(b, W, 12, nw, Mc, nc, err, errlen))) return rc;
    }
    r->ssd_affine = mean_ssd(W, target->mind, 12 * S);
    r->ssd_final = r->ssd_affine;
    r->affine_seconds = now_s() - t0;
    return 0;
}

/* Steps 3-7 from r's affine (r->u NULL) and q as reg_affine leaves it; ssd_final, the field, its
 * statistics. */
static int reg_deformable(nn_backend *b, const atlas_prep *target, const atlas_prep *atlas,
                          const atlas_reg_opts *o, atlas_reg *r, reg_bufs *q, double t0, char *err, size_t errlen)
{
    const atlas_grid *g = &target->grid;
    const size_t S = q->S, Sc = q->Sc;
    int *nw = q->nw, *nc = q->nc, rc = 0;
    float *W = q->W, *Fc = q->Fc, *Mc = q->Mc;
    float *cost = NULL, *uf = NULL, *ub = NULL, *tmp = NULL, *g3 = NULL;
    /* 3. discrete search both ways, coupled convex optimisation */
    const int rad = o->disp_radius, L3 = (2 * rad + 1) * (2 * rad + 1) * (2 * rad + 1);
    cost = malloc(sizeof(float) * (size_t)L3 * Sc);
    uf = malloc(sizeof(float) * 3 * Sc);
    ub = malloc(sizeof(float) * 3 * Sc);
    tmp = malloc(sizeof(float) * 3 * Sc);
    g3 = malloc(sizeof(float) * 3 * Sc);
    if (!cost || !uf || !ub || !tmp || !g3) {
        rc = sn_errf(err, errlen, SN_ENOMEM, "out of memory (cost volume %d x %zu)", L3, Sc);
        goto out;
    }
    if ((rc = ssd_cost(b, Fc, Mc, nc, rad, cost, err, errlen)) ||
        (rc = coupled_convex(b, cost, rad, nc, uf, err, errlen)) ||
        (rc = ssd_cost(b, Mc, Fc, nc, rad, cost, err, errlen)) ||
        (rc = coupled_convex(b, cost, rad, nc, ub, err, errlen)))
        goto out;
    if (o->verbose) fprintf(stderr, "atlas:   %-10s %.2f s\n", "discrete", now_s() - t0);
    free(cost);
    cost = NULL;
    /* 4. inverse consistency: uf <- (uf - ub o (id + uf)) / 2 and the same for ub */
    {
        nn_op_desc dw;
        nn_op_desc_init(&dw, NN_OP_WARP);
        int64_t sh3[2][5] = {{1, 3, nc[2], nc[1], nc[0]}, {1, 3, nc[2], nc[1], nc[0]}};
        for (int it = 0; it < 10 && !rc; it++) {
            const float *i1[2] = {ub, uf}, *i2[2] = {uf, ub};
            if ((rc = atlas__op_once(b, &dw, 2, (const int64_t(*)[5])sh3, i1, tmp, err, errlen))) break;
            if ((rc = atlas__op_once(b, &dw, 2, (const int64_t(*)[5])sh3, i2, g3, err, errlen))) break;
            for (size_t i = 0; i < 3 * Sc; i++) {
                float a = 0.5f * (uf[i] - tmp[i]), c = 0.5f * (ub[i] - g3[i]);
                uf[i] = a, ub[i] = c;
            }
        }
        if (rc) goto out;
        const float *i1[2] = {ub, uf};
        if ((rc = atlas__op_once(b, &dw, 2, (const int64_t(*)[5])sh3, i1, tmp, err, errlen))) goto out;
        double e = 0;
        for (size_t i = 0; i < Sc; i++) {
            double a = uf[i] + tmp[i], c = uf[Sc + i] + tmp[Sc + i], z = uf[2 * Sc + i] + tmp[2 * Sc + i];
            e += sqrt(a * a + c * c + z * z);
        }
        r->ice_mm = e / (double)Sc * 2.0 * g->spacing[0];
    }
    if (o->verbose) fprintf(stderr, "atlas:   %-10s %.2f s\n", "symmetrise", now_s() - t0);
    /* 5. instance optimisation on the coarse grid: Adam on uf (warped SSD gradient + diffusion) */
    if ((rc = adam_field(b, Fc, Mc, nc, uf, o->adam_iters, o->adam_lr, o->lambda, err, errlen))) goto out;
    /* 6. up to the working grid (x2 in voxels), Jacobian, keep or fall back */
    if (!(r->u = malloc(sizeof(float) * 3 * S))) {
        rc = sn_errf(err, errlen, SN_ENOMEM, "out of memory");
        goto out;
    }
    {
        nn_op_desc du;
        nn_op_desc_init(&du, NN_OP_UPSAMPLE_LINEAR);
        du.size[0] = g->nz, du.size[1] = g->ny, du.size[2] = g->nx;
        int64_t sh[1][5] = {{1, 3, nc[2], nc[1], nc[0]}};
        const float *ins[1] = {uf};
        if ((rc = atlas__op_once(b, &du, 1, (const int64_t(*)[5])sh, ins, r->u, err, errlen))) goto out;
        for (size_t i = 0; i < 3 * S; i++) r->u[i] *= 2.0f;
        /* a few steps on the working grid itself for the detail the coarse grid cannot hold */
        if (o->fine_iters > 0 &&   /* W still holds the affinely warped atlas MIND */
            (rc = adam_field(b, target->mind, W, nw, r->u, o->fine_iters, o->adam_lr, o->lambda_fine, err, errlen)))
            goto out;
        int bad = 0;
        for (size_t i = 0; i < 3 * S; i++) bad |= !isfinite(r->u[i]);
        if (!bad) jacobian_stats(r->u, nw, r);
        if (bad || r->fold_fraction > o->fold_max) {
            snprintf(r->warning, sizeof r->warning,
                     bad ? "deformable registration diverged (NaN); affine kept"
                         : "deformable registration folds %.2f%% of voxels (limit %.2f%%); affine kept",
                     100 * r->fold_fraction, 100 * o->fold_max);
            r->fell_back = 1;
            free(r->u);
            r->u = NULL;
        }
    }
    if ((rc = atlas_reg_warp_mind(b, r, atlas, W, err, errlen))) goto out;
    /* 7. per-organ boxes registered again (off by default), starting from the global field */
    if (o->roi && r->u) {
        double tr = now_s();
        if ((rc = roi_refine(b, target, atlas, o, r, W, err, errlen))) goto out;
        if (r->roi_kept) jacobian_stats(r->u, nw, r);
        r->roi_seconds = now_s() - tr;
        if (o->verbose) fprintf(stderr, "atlas:   %-10s %.2f s (%d of %d organ boxes kept)\n", "roi", now_s() - t0,
                                r->roi_kept, r->roi_refined);
    }
    r->ssd_final = mean_ssd(W, target->mind, 12 * S);
out:
    free(cost), free(uf), free(ub), free(tmp), free(g3);
    return rc;
}

/* Both entry points end here: buffers freed, r cleared on error, else timed (and reported). */
static int reg_finish(const atlas_reg_opts *o, atlas_reg *r, reg_bufs *q, double t0, int rc)
{
    bufs_free(q);
    if (rc) {
        atlas_reg_clear(r);
        return rc;
    }
    r->seconds = now_s() - t0;
    if (o->verbose)
        fprintf(stderr, "atlas: ssd moments %.5f affine %.5f final %.5f fold %.4f%% ice %.2f mm %.2f s%s%s\n",
                r->ssd_moments, r->ssd_affine, r->ssd_final, 100 * r->fold_fraction, r->ice_mm, r->seconds,
                r->warning[0] ? " - " : "", r->warning);
    return 0;
}

int atlas_register(nn_backend *b, const atlas_prep *target, const atlas_prep *atlas, const atlas_reg_opts *o,
                   atlas_reg *r, char *err, size_t errlen)
{
    atlas_reg_opts def;
    if (!o) atlas_reg_opts_default(&def), o = &def;
    double t0 = now_s();
    memset(r, 0, sizeof *r);
    r->grid = target->grid;
    reg_bufs q;
    int rc = bufs_new(b, &target->grid, &q, err, errlen);
    if (!rc) rc = reg_affine(b, target, atlas, o, r, &q, t0, err, errlen);
    if (!rc && o->deformable) rc = reg_deformable(b, target, atlas, o, r, &q, t0, err, errlen);
    return reg_finish(o, r, &q, t0, rc);
}

int atlas_register_deformable(nn_backend *b, const atlas_prep *target, const atlas_prep *atlas,
                              const atlas_reg_opts *o, atlas_reg *r, char *err, size_t errlen)
{
    atlas_reg_opts def;
    if (!o) atlas_reg_opts_default(&def), o = &def;
    if (r->u || r->fell_back || r->grid.nx != target->grid.nx || r->grid.ny != target->grid.ny ||
        r->grid.nz != target->grid.nz)
        return sn_errf(err, errlen, SN_EINVAL, "the deformable stage needs an affine-only registration to this target");
    /* the state reg_affine leaves: W the affinely warped atlas, Fc and Mc their coarse pooling */
    double t0 = now_s() - r->affine_seconds;
    reg_bufs q;
    int rc = bufs_new(b, &target->grid, &q, err, errlen);
    if (!rc) rc = atlas_reg_warp_mind(b, r, atlas, q.W, err, errlen);
    if (!rc) rc = pool2(b, target->mind, 12, q.nw, q.Fc, q.nc, err, errlen);
    if (!rc) rc = pool2(b, q.W, 12, q.nw, q.Mc, q.nc, err, errlen);
    if (!rc) rc = reg_deformable(b, target, atlas, o, r, &q, t0, err, errlen);
    return reg_finish(o, r, &q, t0, rc);
}
