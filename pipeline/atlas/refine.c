/* pipeline/atlas/refine.c — intensity refinement of fused atlas votes on the target's own image
 * (atlas_fuse_em; after Ledig et al., "Robust whole-brain segmentation: application to traumatic
 * brain injury", Med Image Anal 2015, MALP-EM). One Gaussian per label, its mean varying slowly in
 * space on a coarse grid, its variance pooled over the labels (atlas_em_opts.pooled) or its own,
 * fitted by EM; only voxels where the atlases disagree change. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/status.h"
#include "pipeline/atlas/atlasInt.h"

/* The pull of a label's global mean on its local one, in voxels of one coarse cell: where the
 * smoothed neighbourhood holds less than this much of the label, its global mean dominates. */
#define EM_SHRINK (20.0 / 27.0)
/* Box passes (radius in cells) smoothing the coarse sums: three radius-2 boxes, ~ a Gaussian of
 * 2.4 cells */
#define EM_BOX_R 2
#define EM_BOX_PASSES 3

typedef struct em_grid {
    int cell[3], n[3];   /* cell size in voxels, cells per axis */
    size_t cells;
} em_grid;

/* Mean over 2r + 1 cells along axis `ax`, the edge cells repeated. */
static void box_axis(double *v, const int n[3], int ax, int r, double *line, double *sum)
{
    const size_t stride = ax == 0 ? 1 : ax == 1 ? (size_t)n[0] : (size_t)n[0] * n[1];
    const int len = n[ax];
    const int o1 = ax == 0 ? 1 : 0, o2 = ax == 2 ? 1 : 2;   /* the other two axes */
    for (int b = 0; b < n[o2]; b++)
        for (int a = 0; a < n[o1]; a++) {
            size_t base = 0;
            int idx[3] = {0, 0, 0};
            idx[o1] = a, idx[o2] = b;
            base = (size_t)idx[0] + (size_t)n[0] * ((size_t)idx[1] + (size_t)n[1] * (size_t)idx[2]);
            for (int q = 0; q < len; q++) line[q] = v[base + (size_t)q * stride];
            sum[0] = 0;
            for (int q = -r - 1; q < len + r; q++) {   /* prefix sums over the padded line */
                int c = q < 0 ? 0 : q >= len ? len - 1 : q;
                sum[q + r + 2] = sum[q + r + 1] + line[c];
            }
            for (int q = 0; q < len; q++) v[base + (size_t)q * stride] = (sum[q + 2 * r + 2] - sum[q + 1]) / (2 * r + 1);
        }
}

/* Trilinear value of coarse field c (cell centres) at native voxel (i, j, k). */
static float coarse_at(const float *c, const em_grid *eg, int i, int j, int k)
{
    const int v[3] = {i, j, k};
    int lo[3], hi[3];
    float f[3];
    for (int a = 0; a < 3; a++) {
        double x = (v[a] + 0.5) / eg->cell[a] - 0.5;
        if (x < 0) x = 0;
        if (x > eg->n[a] - 1) x = eg->n[a] - 1;
        lo[a] = (int)x;
        hi[a] = lo[a] + 1 < eg->n[a] ? lo[a] + 1 : lo[a];
        f[a] = (float)(x - lo[a]);
    }
    float r = 0;
    for (int m = 0; m < 8; m++) {
        int x = (m & 1) ? hi[0] : lo[0], y = (m & 2) ? hi[1] : lo[1], z = (m & 4) ? hi[2] : lo[2];
        float w = ((m & 1) ? f[0] : 1 - f[0]) * ((m & 2) ? f[1] : 1 - f[1]) * ((m & 4) ? f[2] : 1 - f[2]);
        r += w * c[(size_t)x + (size_t)eg->n[0] * ((size_t)y + (size_t)eg->n[1] * (size_t)z)];
    }
    return r;
}

static size_t coarse_index(const em_grid *eg, int i, int j, int k)
{
    int x = i / eg->cell[0], y = j / eg->cell[1], z = k / eg->cell[2];
    if (x >= eg->n[0]) x = eg->n[0] - 1;
    if (y >= eg->n[1]) y = eg->n[1] - 1;
    if (z >= eg->n[2]) z = eg->n[2] - 1;
    return (size_t)x + (size_t)eg->n[0] * ((size_t)y + (size_t)eg->n[1] * (size_t)z);
}

int atlas__refine_em(const atlas_grid *tg, const float *img, uint8_t *out, atlas__votes *av,
                     const atlas_em_opts *o, size_t *changed, char *err, size_t errlen)
{
    const int nx = tg->nx, ny = tg->ny, nz = tg->nz;
    const size_t S = atlas_grid_voxels(tg);
    if (changed) *changed = 0;
    /* labels in play, compacted */
    int slot[256], nl = 0;
    for (int l = 0; l < 256; l++) slot[l] = -1;
    for (size_t i = 0; i < S; i++)
        if (slot[out[i]] < 0) slot[out[i]] = 0;
    for (int k = 0; k < nz; k++)
        for (size_t r = 0; r < av->n[k]; r++)
            for (int j = 0; j < ATLAS__VOTE_K; j++)
                if (av->v[k][r].prior[j] > 0 && slot[av->v[k][r].lab[j]] < 0) slot[av->v[k][r].lab[j]] = 0;
    for (int l = 0; l < 256; l++)
        if (slot[l] >= 0) slot[l] = nl++;
    em_grid eg;
    const int dims[3] = {nx, ny, nz};
    eg.cells = 1;
    for (int a = 0; a < 3; a++) {
        int c = (int)lround(o->cell_mm / tg->spacing[a]);
        eg.cell[a] = c < 1 ? 1 : c > dims[a] ? dims[a] : c;
        eg.n[a] = (dims[a] + eg.cell[a] - 1) / eg.cell[a];
        eg.cells *= (size_t)eg.n[a];
    }
    const int maxn = eg.n[0] > eg.n[1] ? (eg.n[0] > eg.n[2] ? eg.n[0] : eg.n[2]) : (eg.n[1] > eg.n[2] ? eg.n[1] : eg.n[2]);
    uint8_t *split = calloc(S, 1);
    double *fix0 = calloc(eg.cells * (size_t)nl, sizeof(double)), *fix1 = calloc(eg.cells * (size_t)nl, sizeof(double));
    double *c0 = malloc(sizeof(double) * eg.cells * (size_t)nl), *c1 = malloc(sizeof(double) * eg.cells * (size_t)nl);
    double *line = malloc(sizeof(double) * (size_t)maxn), *psum = malloc(sizeof(double) * (size_t)(maxn + 2 * EM_BOX_R + 3));
    float *mu = malloc(sizeof(float) * eg.cells * (size_t)nl);
    double gm[256], var[256], vsum[256], wsum[256];
    int rc = 0;
    if (!split || !fix0 || !fix1 || !c0 || !c1 || !line || !psum || !mu) {
        rc = sn_errf(err, errlen, SN_ENOMEM, "out of memory");
        goto out;
    }
    for (int k = 0; k < nz; k++)
        for (size_t r = 0; r < av->n[k]; r++) split[av->v[k][r].i] = 1;
    /* the voxels where the atlases agree: weight 1 to their label, fixed across iterations */
    double im = 0, im2 = 0;
    size_t nonfinite = 0;
    for (int k = 0; k < nz; k++)
        for (int j = 0; j < ny; j++)
            for (int i = 0; i < nx; i++) {
                size_t p = i + (size_t)nx * (j + (size_t)ny * k);
                double v = img[p];
                if (!isfinite(v)) {
                    nonfinite++;
                    continue;
                }
                im += v, im2 += v * v;
                if (split[p]) continue;
                size_t c = coarse_index(&eg, i, j, k) + eg.cells * (size_t)slot[out[p]];
                fix0[c] += 1.0, fix1[c] += v;
            }
    if (nonfinite) goto out;   /* no model of NaN or infinity: the fusion stands as it is */
    im /= (double)S;
    /* a variance floor: a label of constant value (the air outside a CBCT's reconstruction
     * circle) must not get an infinitely narrow Gaussian */
    const double vfloor = 1e-4 * fmax(im2 / (double)S - im * im, 0.0) + 1e-12;
    const double shrink = EM_SHRINK * eg.cell[0] * eg.cell[1] * eg.cell[2];
    for (int it = 0; it < o->iters; it++) {
        /* M-step: means (global, then local on the coarse grid); the split voxels' weights added
         * to the fixed sums in one pass */
        memcpy(c0, fix0, sizeof(double) * eg.cells * (size_t)nl);
        memcpy(c1, fix1, sizeof(double) * eg.cells * (size_t)nl);
        for (int k = 0; k < nz; k++)
            for (size_t r = 0; r < av->n[k]; r++) {
                const atlas__vote *v = &av->v[k][r];
                const size_t p = v->i;
                const size_t c = coarse_index(&eg, (int)(p % (size_t)nx), (int)((p / (size_t)nx) % (size_t)ny), k);
                for (int j = 0; j < ATLAS__VOTE_K; j++) {
                    if (!(v->prior[j] > 0)) continue;
                    const size_t q = c + eg.cells * (size_t)slot[v->lab[j]];
                    c0[q] += v->w[j], c1[q] += v->w[j] * img[p];
                }
            }
        for (int l = 0; l < nl; l++) {
            double *l0 = c0 + eg.cells * (size_t)l, *l1 = c1 + eg.cells * (size_t)l;
            double s0 = 0, s1 = 0;
            for (size_t c = 0; c < eg.cells; c++) s0 += l0[c], s1 += l1[c];
            gm[l] = s0 > 0 ? s1 / s0 : im;
            float *m = mu + eg.cells * (size_t)l;
            if (!o->local) {
                for (size_t c = 0; c < eg.cells; c++) m[c] = (float)gm[l];
                continue;
            }
            for (int pass = 0; pass < EM_BOX_PASSES; pass++)
                for (int ax = 0; ax < 3; ax++) {
                    box_axis(l0, eg.n, ax, EM_BOX_R, line, psum);
                    box_axis(l1, eg.n, ax, EM_BOX_R, line, psum);
                }
            for (size_t c = 0; c < eg.cells; c++) m[c] = (float)((l1[c] + shrink * gm[l]) / (l0[c] + shrink));
        }
        /* variances about the local means */
        for (int l = 0; l < nl; l++) vsum[l] = wsum[l] = 0;
#pragma omp parallel for schedule(static) reduction(+ : vsum[:nl], wsum[:nl])
        for (int k = 0; k < nz; k++) {
            for (int j = 0; j < ny; j++)
                for (int i = 0; i < nx; i++) {
                    size_t p = i + (size_t)nx * (j + (size_t)ny * (size_t)k);
                    if (split[p]) continue;
                    int l = slot[out[p]];
                    double e = img[p] - coarse_at(mu + eg.cells * (size_t)l, &eg, i, j, k);
                    vsum[l] += e * e, wsum[l] += 1.0;
                }
            for (size_t r = 0; r < av->n[k]; r++) {
                const atlas__vote *v = &av->v[k][r];
                int i = (int)(v->i % (size_t)nx), j = (int)((v->i / (size_t)nx) % (size_t)ny);
                for (int q = 0; q < ATLAS__VOTE_K; q++) {
                    if (!(v->prior[q] > 0)) continue;
                    int l = slot[v->lab[q]];
                    double e = img[v->i] - coarse_at(mu + eg.cells * (size_t)l, &eg, i, j, k);
                    vsum[l] += v->w[q] * e * e, wsum[l] += v->w[q];
                }
            }
        }
        double pv = 0, pw = 0;
        for (int l = 0; l < nl; l++) pv += vsum[l], pw += wsum[l];
        for (int l = 0; l < nl; l++)
            var[l] = fmax(o->pooled ? (pw > 0 ? pv / pw : vfloor) : wsum[l] > 0 ? vsum[l] / wsum[l] : vfloor, vfloor);
        /* E-step on the split voxels: w ~ prior * likelihood^b */
        const double b = o->lik_weight;
#pragma omp parallel for schedule(dynamic, 1)
        for (int k = 0; k < nz; k++)
            for (size_t r = 0; r < av->n[k]; r++) {
                atlas__vote *v = &av->v[k][r];
                int i = (int)(v->i % (size_t)nx), j = (int)((v->i / (size_t)nx) % (size_t)ny);
                double lp[ATLAS__VOTE_K], mx = -INFINITY;
                for (int q = 0; q < ATLAS__VOTE_K; q++) {
                    lp[q] = -INFINITY;
                    if (!(v->prior[q] > 0)) continue;
                    int l = slot[v->lab[q]];
                    double e = img[v->i] - coarse_at(mu + eg.cells * (size_t)l, &eg, i, j, k);
                    lp[q] = log(v->prior[q]) + b * (-0.5 * e * e / var[l] - 0.5 * log(var[l]));
                    mx = fmax(mx, lp[q]);
                }
                double s = 0;
                for (int q = 0; q < ATLAS__VOTE_K; q++) s += lp[q] > -INFINITY ? exp(lp[q] - mx) : 0.0;
                for (int q = 0; q < ATLAS__VOTE_K; q++) v->w[q] = lp[q] > -INFINITY ? (float)(exp(lp[q] - mx) / s) : 0.0f;
            }
    }
    /* the split voxels' labels: the most probable (lowest label on ties, as the fusion) */
    size_t nch = 0;
    for (int k = 0; k < nz; k++)
        for (size_t r = 0; r < av->n[k]; r++) {
            const atlas__vote *v = &av->v[k][r];
            int best = -1;
            for (int q = 0; q < ATLAS__VOTE_K; q++) {
                if (!(v->prior[q] > 0)) continue;
                if (best < 0 || v->w[q] > v->w[best] || (v->w[q] == v->w[best] && v->lab[q] < v->lab[best])) best = q;
            }
            if (best >= 0 && out[v->i] != v->lab[best]) out[v->i] = v->lab[best], nch++;
        }
    if (changed) *changed = nch;
out:
    free(split);
    free(fix0);
    free(fix1);
    free(c0);
    free(c1);
    free(line);
    free(psum);
    free(mu);
    return rc;
}
