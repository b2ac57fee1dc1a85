/* pipeline/atlas/fuse.c — label fusion of registered atlases on the target's native grid
 * (per-label trilinear votes weighted by majority vote, locally weighted voting on MIND patch
 * similarity, or joint label fusion), atlas selection by post-affine similarity, and
 * post-processing (largest connected component per label, hole filling). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/status.h"
#include "pipeline/atlas/atlasInt.h"

const char *atlas_fusion_name(atlas_fusion f)
{
    return f == ATLAS_FUSE_MAJORITY ? "majority" : f == ATLAS_FUSE_LOCAL ? "local" : "jlf";
}

int atlas_fusion_from_name(const char *s)
{
    if (!strcmp(s, "majority") || !strcmp(s, "mv")) return ATLAS_FUSE_MAJORITY;
    if (!strcmp(s, "local") || !strcmp(s, "lw")) return ATLAS_FUSE_LOCAL;
    if (!strcmp(s, "jlf")) return ATLAS_FUSE_JLF;
    return -1;
}

/* Box mean (radius 1) of one scalar image with the nn/ average pooling op. */
static int box1(nn_backend *b, float *v, const atlas_grid *g, float *tmp, char *err, size_t errlen)
{
    nn_op_desc d;
    nn_op_desc_init(&d, NN_OP_AVG_POOL);
    for (int i = 0; i < 3; i++) d.k[i] = 3, d.pad[i] = 1;
    d.count_include_pad = 0;
    int64_t sh[1][5] = {{1, 1, g->nz, g->ny, g->nx}};
    const float *in[1] = {v};
    int rc = atlas__op_once(b, &d, 1, (const int64_t(*)[5])sh, in, tmp, err, errlen);
    if (!rc) memcpy(v, tmp, sizeof(float) * atlas_grid_voxels(g));
    return rc;
}

/* Solve (M + aI) w = 1 for n <= 16 by Gaussian elimination with partial pivoting; normalise w to
 * sum 1. Falls back to equal weights when singular. */
static void jlf_solve(double *M, int n, double *w)
{
    double a[16][17];
    for (int i = 0; i < n; i++) {
        for (int j = 0; j < n; j++) a[i][j] = M[i * n + j];
        a[i][n] = 1.0;
    }
    for (int c = 0; c < n; c++) {
        int p = c;
        for (int i = c + 1; i < n; i++)
            if (fabs(a[i][c]) > fabs(a[p][c])) p = i;
        if (fabs(a[p][c]) < 1e-14) {
            for (int i = 0; i < n; i++) w[i] = 1.0 / n;
            return;
        }
        if (p != c)
            for (int j = 0; j <= n; j++) {
                double t = a[c][j];
                a[c][j] = a[p][j], a[p][j] = t;
            }
        for (int i = c + 1; i < n; i++) {
            double f = a[i][c] / a[c][c];
            for (int j = c; j <= n; j++) a[i][j] -= f * a[c][j];
        }
    }
    double s = 0;
    for (int i = n - 1; i >= 0; i--) {
        double v = a[i][n];
        for (int j = i + 1; j < n; j++) v -= a[i][j] * w[j];
        w[i] = v / a[i][i];
        s += w[i];
    }
    if (!(fabs(s) > 1e-14))
        for (int i = 0; i < n; i++) w[i] = 1.0 / n;
    else
        for (int i = 0; i < n; i++) w[i] /= s;
}

/* Per-atlas voting weights on the target working grid into w[n][S]. */
static int fusion_weights(nn_backend *b, const atlas_prep *target, const atlas_prep *const *atlases,
                          const atlas_reg *regs, int n, atlas_fusion method, float *w, char *err, size_t errlen)
{
    const atlas_grid *g = &target->grid;
    const size_t S = atlas_grid_voxels(g);
    if (method == ATLAS_FUSE_MAJORITY) {
        for (size_t i = 0; i < (size_t)n * S; i++) w[i] = 1.0f;
        return 0;
    }
    float *W = malloc(sizeof(float) * 12 * S), *tmp = malloc(sizeof(float) * S);
    float *diff = method == ATLAS_FUSE_JLF ? malloc(sizeof(float) * 12 * S * (size_t)n) : NULL;
    int rc = 0;
    if (!W || !tmp || (method == ATLAS_FUSE_JLF && !diff)) {
        rc = sn_errf(err, errlen, SN_ENOMEM, "out of memory");
        goto out;
    }
    for (int a = 0; a < n && !rc; a++) {
        if ((rc = atlas_reg_warp_mind(b, &regs[a], atlases[a], W, err, errlen))) break;
        float *D = w + (size_t)a * S;
        for (size_t i = 0; i < S; i++) {
            float s = 0;
            for (int c = 0; c < 12; c++) {
                float e = W[c * S + i] - target->mind[c * S + i];
                s += e * e;
                if (diff) diff[((size_t)a * 12 + c) * S + i] = fabsf(e);
            }
            D[i] = s / 12.0f;
        }
        if (method == ATLAS_FUSE_LOCAL) rc = box1(b, D, g, tmp, err, errlen);
    }
    if (rc) goto out;
    if (method == ATLAS_FUSE_LOCAL) {
#pragma omp parallel for schedule(static)
        for (size_t i = 0; i < S; i++) {
            float h = INFINITY;
            for (int a = 0; a < n; a++) h = fminf(h, w[(size_t)a * S + i]);
            h = h + 1e-4f;
            for (int a = 0; a < n; a++) w[(size_t)a * S + i] = expf(-w[(size_t)a * S + i] / h);
        }
    } else {
        /* JLF: M(a, c) = [patch mean of |F - A_a| |F - A_c|]^2 + alpha I; w = M^-1 1 / 1' M^-1 1 */
        const int np = n * (n + 1) / 2;
        float *P = malloc(sizeof(float) * S * (size_t)np);
        if (!P) {
            rc = sn_errf(err, errlen, SN_ENOMEM, "out of memory");
            goto out;
        }
        for (int a = 0, q = 0; a < n; a++)
            for (int c = a; c < n; c++, q++) {
                float *pp = P + (size_t)q * S;
                const float *da = diff + (size_t)a * 12 * S, *dc = diff + (size_t)c * 12 * S;
                for (size_t i = 0; i < S; i++) {
                    float s = 0;
                    for (int ch = 0; ch < 12; ch++) s += da[ch * S + i] * dc[ch * S + i];
                    pp[i] = s / 12.0f;
                }
                if ((rc = box1(b, pp, g, tmp, err, errlen))) break;
            }
        if (!rc) {
#pragma omp parallel for schedule(static)
            for (size_t i = 0; i < S; i++) {
                double M[256], ww[16], tr = 0;
                for (int a = 0, q = 0; a < n; a++)
                    for (int c = a; c < n; c++, q++) {
                        double v = P[(size_t)q * S + i];
                        v = v * v;
                        M[a * n + c] = M[c * n + a] = v;
                    }
                for (int a = 0; a < n; a++) tr += M[a * n + a];
                for (int a = 0; a < n; a++) M[a * n + a] += 0.1 * tr / n + 1e-12;
                jlf_solve(M, n, ww);
                for (int a = 0; a < n; a++) w[(size_t)a * S + i] = (float)ww[a];
            }
        }
        free(P);
    }
out:
    free(W);
    free(tmp);
    free(diff);
    return rc;
}

int atlas_fuse(nn_backend *b, const atlas_prep *target, const atlas_prep *const *atlases, const atlas_reg *regs,
               int n, atlas_fusion method, const atlas_grid *tg, uint8_t *out, char *err, size_t errlen)
{
    uint8_t id[256];
    for (int l = 0; l < 256; l++) id[l] = (uint8_t)l;
    return atlas_fuse_probs(b, target, atlases, regs, n, method, tg, out, NULL, id, 0, err, errlen);
}

/* The class scores of target voxel o from m labels and their values (votes, or a refined
 * posterior), into probs[c * NT + o]. Values clamp at 0 (JLF weights may be negative; the argmax
 * does not change: the weights sum to 1, so the largest vote is > 0). A class >= 1 scores the
 * values of its labels; background (class 0) scores its strongest label, not their sum, so that
 * an organ that wins the plurality over fat, muscle, ... also wins here: the argmax of probs is
 * prob_of[out] (lowest class on ties). */
static void class_scores(const uint8_t *lab, const float *val, int m, const uint8_t prob_of[256], int nprobs,
                         float *probs, size_t NT, size_t o)
{
    float sc[256];
    for (int c = 0; c < nprobs; c++) sc[c] = 0.0f;
    for (int t = 0; t < m; t++) {
        int c = prob_of[lab[t]];
        float v = fmaxf(val[t], 0.0f);
        if (c) sc[c] += v;
        else sc[0] = fmaxf(sc[0], v);
    }
    float tot = 0;
    for (int c = 0; c < nprobs; c++) tot += sc[c];
    for (int c = 0; c < nprobs; c++) probs[(size_t)c * NT + o] = tot > 0 ? sc[c] / tot : (float)(c == 0);
}

/* Record a split vote (the strongest label below ATLAS__SURE of the clamped total) in slice k. */
static int vote_keep(atlas__votes *av, int k, size_t o, const float *votes, const uint8_t *touched, int nt)
{
    float tot = 0, top = 0;
    for (int t = 0; t < nt; t++) {
        float v = fmaxf(votes[touched[t]], 0.0f);
        tot += v;
        top = fmaxf(top, v);
    }
    if (!(tot > 0) || top >= ATLAS__SURE * tot) return 0;
    atlas__vote r;
    memset(&r, 0, sizeof r);
    r.i = (uint32_t)o;
    int m = 0;
    for (int t = 0; t < nt; t++) {   /* the ATLAS__VOTE_K strongest, by insertion */
        float v = fmaxf(votes[touched[t]], 0.0f);
        if (v < 1e-3f * tot) continue;
        int j = m < ATLAS__VOTE_K ? m++ : ATLAS__VOTE_K;
        if (j == ATLAS__VOTE_K) {
            if (v <= r.prior[ATLAS__VOTE_K - 1]) continue;
            j = ATLAS__VOTE_K - 1;
        }
        for (; j > 0 && r.prior[j - 1] < v; j--) r.prior[j] = r.prior[j - 1], r.lab[j] = r.lab[j - 1];
        r.prior[j] = v, r.lab[j] = touched[t];
    }
    float s = 0;
    for (int j = 0; j < m; j++) s += r.prior[j];
    for (int j = 0; j < m; j++) r.prior[j] /= s, r.w[j] = r.prior[j];
    if (av->n[k] == av->cap[k]) {
        size_t c = av->cap[k] ? 2 * av->cap[k] : 256;
        atlas__vote *nv = realloc(av->v[k], sizeof *nv * c);
        if (!nv) return -1;
        av->v[k] = nv, av->cap[k] = c;
    }
    av->v[k][av->n[k]++] = r;
    return 0;
}

void atlas__votes_free(atlas__votes *av)
{
    for (int k = 0; av->v && k < av->nz; k++) free(av->v[k]);
    free(av->v);
    free(av->n);
    free(av->cap);
    memset(av, 0, sizeof *av);
}

/* atlas_fuse_probs; with av non-NULL also the split votes, per slice. */
static int fuse(nn_backend *b, const atlas_prep *target, const atlas_prep *const *atlases, const atlas_reg *regs,
                int n, atlas_fusion method, const atlas_grid *tg, uint8_t *out, float *probs, const uint8_t prob_of[256],
                int nprobs, atlas__votes *av, char *err, size_t errlen)
{
    if (n < 1 || n > 16) return sn_errf(err, errlen, SN_EINVAL, "fusion needs 1..16 atlases (got %d)", n);
    if (probs) {
        if (nprobs < 1 || nprobs > 256 || !prob_of)
            return sn_errf(err, errlen, SN_EINVAL, "fusion: bad probability classes (%d)", nprobs);
        for (int l = 0; l < 256; l++)
            if (prob_of[l] >= nprobs)
                return sn_errf(err, errlen, SN_EINVAL, "fusion: label %d maps to class %d of %d", l, prob_of[l], nprobs);
    }
    const atlas_grid *g = &target->grid;
    const size_t S = atlas_grid_voxels(g), NT = atlas_grid_voxels(tg);
    float *w = malloc(sizeof(float) * S * (size_t)n);
    if (!w) return sn_errf(err, errlen, SN_ENOMEM, "out of memory");
    int rc = fusion_weights(b, target, atlases, regs, n, method, w, err, errlen);
    if (rc) {
        free(w);
        return rc;
    }
    double tn[12], wi[12], n2w[12];
    atlas_grid_to_world(tg, tn);
    atlas_grid_from_world(g, wi);
    atlas__affine_mul(wi, tn, n2w);   /* native voxel -> working voxel */
    double a2l[16][12];
    for (int a = 0; a < n; a++) {
        double lw[12];
        atlas_grid_from_world(&atlases[a]->lgrid, lw);
        atlas__affine_mul(lw, regs[a].A, a2l[a]);   /* working voxel (+u) -> atlas label voxel */
    }
    int nomem = 0;
#pragma omp parallel
    {
        float votes[256];
        uint8_t seen[256];   /* a class is listed in touched[] once, whatever its running vote */
        memset(votes, 0, sizeof votes);
        memset(seen, 0, sizeof seen);
#pragma omp for schedule(dynamic, 1)
        for (int k = 0; k < tg->nz; k++)
            for (int j = 0; j < tg->ny; j++)
                for (int i = 0; i < tg->nx; i++) {
                    double p[3];
                    for (int r = 0; r < 3; r++) p[r] = n2w[r * 4] * i + n2w[r * 4 + 1] * j + n2w[r * 4 + 2] * k + n2w[r * 4 + 3];
                    long pi = lround(p[0]), pj = lround(p[1]), pk = lround(p[2]);
                    pi = pi < 0 ? 0 : pi >= g->nx ? g->nx - 1 : pi;
                    pj = pj < 0 ? 0 : pj >= g->ny ? g->ny - 1 : pj;
                    pk = pk < 0 ? 0 : pk >= g->nz ? g->nz - 1 : pk;
                    size_t wp = (size_t)pi + (size_t)g->nx * ((size_t)pj + (size_t)g->ny * (size_t)pk);
                    uint8_t touched[256];
                    int nt = 0;
                    for (int a = 0; a < n; a++) {
                        double q[3] = {p[0], p[1], p[2]};
                        if (regs[a].u)
                            for (int c = 0; c < 3; c++)
                                q[c] += atlas__sample(regs[a].u + c * S, g->nx, g->ny, g->nz, p[0], p[1], p[2], 0.0f);
                        const double *m = a2l[a];
                        double x = m[0] * q[0] + m[1] * q[1] + m[2] * q[2] + m[3];
                        double y = m[4] * q[0] + m[5] * q[1] + m[6] * q[2] + m[7];
                        double z = m[8] * q[0] + m[9] * q[1] + m[10] * q[2] + m[11];
                        const atlas_grid *lg = &atlases[a]->lgrid;
                        const uint8_t *L = atlases[a]->labels;
                        long x0 = (long)floor(x), y0 = (long)floor(y), z0 = (long)floor(z);
                        double fx = x - x0, fy = y - y0, fz = z - z0;
                        float wa = w[(size_t)a * S + wp];
                        for (int c = 0; c < 8; c++) {
                            long xx = x0 + (c & 1), yy = y0 + ((c >> 1) & 1), zz = z0 + (c >> 2);
                            double tw = ((c & 1) ? fx : 1 - fx) * (((c >> 1) & 1) ? fy : 1 - fy) * ((c >> 2) ? fz : 1 - fz);
                            int lab = 0;
                            if (xx >= 0 && yy >= 0 && zz >= 0 && xx < lg->nx && yy < lg->ny && zz < lg->nz)
                                lab = L[(size_t)xx + (size_t)lg->nx * ((size_t)yy + (size_t)lg->ny * (size_t)zz)];
                            if (!seen[lab]) seen[lab] = 1, touched[nt++] = (uint8_t)lab;
                            votes[lab] += (float)(wa * tw) + 1e-12f;
                        }
                    }
                    /* argmax; equal votes go to the lower class, as a caller's argmax over probs would */
                    int best = 0;
                    float bv = -INFINITY;
                    for (int t = 0; t < nt; t++) {
                        int c = touched[t];
                        if (votes[c] > bv || (votes[c] == bv && c < best)) bv = votes[c], best = c;
                    }
                    const size_t o = i + (size_t)tg->nx * (j + (size_t)tg->ny * k);
                    out[o] = (uint8_t)best;
                    if (av && vote_keep(av, k, o, votes, touched, nt)) {
#pragma omp atomic write
                        nomem = 1;
                    }
                    if (probs) {
                        float tv[256];
                        for (int t = 0; t < nt; t++) tv[t] = votes[touched[t]];
                        class_scores(touched, tv, nt, prob_of, nprobs, probs, NT, o);
                    }
                    for (int t = 0; t < nt; t++) votes[touched[t]] = 0, seen[touched[t]] = 0;
                }
    }
    free(w);
    return nomem ? sn_errf(err, errlen, SN_ENOMEM, "out of memory") : 0;
}

int atlas_fuse_probs(nn_backend *b, const atlas_prep *target, const atlas_prep *const *atlases,
                     const atlas_reg *regs, int n, atlas_fusion method, const atlas_grid *tg, uint8_t *out,
                     float *probs, const uint8_t prob_of[256], int nprobs, char *err, size_t errlen)
{
    return fuse(b, target, atlases, regs, n, method, tg, out, probs, prob_of, nprobs, NULL, err, errlen);
}

void atlas_em_opts_default(atlas_em_opts *o)
{
    /* tests/atlas/README.md "Intensity refinement": chosen on two leave-one-out targets; one
     * variance for all labels after the PET kidneys failed a held-out check with one per label;
     * confirmed on three fresh targets */
    o->iters = 3;
    o->lik_weight = 0.5f;
    o->cell_mm = 10.0;
    o->local = 1;
    o->pooled = 1;
}

int atlas_fuse_em(nn_backend *b, const atlas_prep *target, const atlas_prep *const *atlases,
                  const atlas_reg *regs, int n, atlas_fusion method, const atlas_grid *tg, const float *timg,
                  const atlas_em_opts *em, uint8_t *out, float *probs, const uint8_t prob_of[256], int nprobs,
                  size_t *changed, char *err, size_t errlen)
{
    if (changed) *changed = 0;
    if (!em || em->iters <= 0)
        return fuse(b, target, atlases, regs, n, method, tg, out, probs, prob_of, nprobs, NULL, err, errlen);
    if (!timg) return sn_errf(err, errlen, SN_EINVAL, "intensity refinement needs the target's image");
    if (!(em->lik_weight > 0 && em->lik_weight <= 1) || !(em->cell_mm > 0))
        return sn_errf(err, errlen, SN_EINVAL, "intensity refinement: bad options");
    if (atlas_grid_voxels(tg) > UINT32_MAX)
        return sn_errf(err, errlen, SN_EINVAL, "intensity refinement: the target has more than 2^32 voxels");
    atlas__votes av = {0};
    av.nz = tg->nz;
    av.n = calloc((size_t)tg->nz, sizeof *av.n);
    av.cap = calloc((size_t)tg->nz, sizeof *av.cap);
    av.v = calloc((size_t)tg->nz, sizeof *av.v);
    int rc = 0;
    if (!av.n || !av.cap || !av.v) rc = sn_errf(err, errlen, SN_ENOMEM, "out of memory");
    if (!rc) rc = fuse(b, target, atlases, regs, n, method, tg, out, probs, prob_of, nprobs, &av, err, errlen);
    if (!rc) rc = atlas__refine_em(tg, timg, out, &av, em, changed, err, errlen);
    if (!rc && probs) {   /* the split voxels' class scores from their posterior, as fuse() scores votes */
        const size_t NT = atlas_grid_voxels(tg);
        for (int k = 0; k < av.nz; k++)
            for (size_t r = 0; r < av.n[k]; r++) {
                const atlas__vote *v = &av.v[k][r];
                int m = 0;   /* the labels kept come first */
                while (m < ATLAS__VOTE_K && v->prior[m] > 0) m++;
                class_scores(v->lab, v->w, m, prob_of, nprobs, probs, NT, v->i);
            }
    }
    atlas__votes_free(&av);
    return rc;
}

void atlas_select(const atlas_reg *regs, int n, int *order)
{
    for (int i = 0; i < n; i++) order[i] = i;
    for (int i = 1; i < n; i++)
        for (int j = i; j > 0 && regs[order[j]].ssd_affine < regs[order[j - 1]].ssd_affine; j--) {
            int t = order[j];
            order[j] = order[j - 1], order[j - 1] = t;
        }
}

static int same_anatomy(const atlas_prep *a, const atlas_prep *b)
{
    const atlas_grid *x = &a->lgrid, *y = &b->lgrid;
    if (!a->labels || !b->labels || x->nx != y->nx || x->ny != y->ny || x->nz != y->nz) return 0;
    for (int i = 0; i < 3; i++)
        if (fabs(x->spacing[i] - y->spacing[i]) > 1e-6 || fabs(x->origin[i] - y->origin[i]) > 1e-3) return 0;
    for (int i = 0; i < 9; i++)
        if (fabs(x->direction[i] - y->direction[i]) > 1e-6) return 0;
    return !memcmp(a->labels, b->labels, atlas_grid_voxels(x));
}

int atlas_distinct(const atlas_prep *const *atlases, const atlas_reg *regs, int n, uint8_t *keep)
{
    for (int i = 0; i < n; i++) keep[i] = 1;
    for (int i = 0; i < n; i++)
        for (int j = i + 1; j < n && keep[i]; j++) {
            if (!keep[j] || !same_anatomy(atlases[i], atlases[j])) continue;
            /* ties keep the first named */
            if (regs[j].ssd_final < regs[i].ssd_final) keep[i] = 0;
            else keep[j] = 0;
        }
    int k = 0;
    for (int i = 0; i < n; i++) k += keep[i];
    return k;
}

int atlas_anatomies(const atlas_prep *const *atlases, int n)
{
    int k = 0;
    for (int i = 0; i < n; i++) {
        int first = 1;
        for (int j = 0; j < i && first; j++) first = !same_anatomy(atlases[i], atlases[j]);
        k += first;
    }
    return k;
}

/* Label 6-connected components of mask==1 voxels into comp (0 = none); returns the count and
 * fills size[] (caller frees *size). */
static int components(const uint8_t *mask, int nx, int ny, int nz, int32_t *comp, size_t **size_out, size_t *stack)
{
    const size_t S = (size_t)nx * ny * nz;
    memset(comp, 0, sizeof(int32_t) * S);
    size_t *size = NULL;
    int nc = 0, cap = 0;
    for (size_t s = 0; s < S; s++) {
        if (!mask[s] || comp[s]) continue;
        if (nc == cap) {
            cap = cap ? 2 * cap : 64;
            size = realloc(size, sizeof(size_t) * (size_t)(cap + 1));
        }
        nc++;
        size[nc] = 0;
        size_t top = 0;
        stack[top++] = s;
        comp[s] = nc;
        while (top) {
            size_t p = stack[--top];
            size[nc]++;
            int i = (int)(p % nx), j = (int)((p / nx) % ny), k = (int)(p / ((size_t)nx * ny));
            size_t nb[6];
            int m = 0;
            if (i > 0) nb[m++] = p - 1;
            if (i < nx - 1) nb[m++] = p + 1;
            if (j > 0) nb[m++] = p - nx;
            if (j < ny - 1) nb[m++] = p + nx;
            if (k > 0) nb[m++] = p - (size_t)nx * ny;
            if (k < nz - 1) nb[m++] = p + (size_t)nx * ny;
            for (int t = 0; t < m; t++)
                if (mask[nb[t]] && !comp[nb[t]]) {
                    comp[nb[t]] = nc;
                    stack[top++] = nb[t];
                }
        }
    }
    *size_out = size;
    return nc;
}

void atlas_postprocess(uint8_t *lab, int nx, int ny, int nz, const uint8_t *keep_all)
{
    atlas_postprocess_keep(lab, nx, ny, nz, keep_all, 1.0);
}

void atlas_postprocess_keep(uint8_t *lab, int nx, int ny, int nz, const uint8_t *keep_all, double min_fraction)
{
    const size_t S = (size_t)nx * ny * nz;
    uint8_t *mask = malloc(S);
    int32_t *comp = malloc(sizeof(int32_t) * S);
    size_t *stack = malloc(sizeof(size_t) * S);
    if (!mask || !comp || !stack) goto out;
    int present[256] = {0};
    for (size_t i = 0; i < S; i++) present[lab[i]] = 1;
    for (int l = 1; l < 256; l++) {
        if (!present[l]) continue;
        size_t *size = NULL;
        if (!keep_all || !keep_all[l]) {
            for (size_t i = 0; i < S; i++) mask[i] = lab[i] == l;
            int nc = components(mask, nx, ny, nz, comp, &size, stack);
            int best = 1;
            for (int c = 2; c <= nc; c++)
                if (size[c] > size[best]) best = c;
            /* keep[c]: the largest, and with min_fraction < 1 every component at least that
             * share of it (size[] is reused as the flag) */
            const double floor_size = min_fraction * (double)size[best];
            for (int c = 1; c <= nc; c++)
                size[c] = c == best || (min_fraction < 1.0 && (double)size[c] >= floor_size);
            for (size_t i = 0; i < S; i++)
                if (mask[i] && !size[comp[i]]) lab[i] = 0;
            free(size);
            size = NULL;
        }
        /* holes: background components not touching the border and enclosed by label l only */
        for (size_t i = 0; i < S; i++) mask[i] = lab[i] != l;
        int nc = components(mask, nx, ny, nz, comp, &size, stack);
        uint8_t *fill = calloc((size_t)nc + 1, 1);
        if (!fill) {
            free(size);
            goto out;
        }
        for (int c = 1; c <= nc; c++) fill[c] = 1;
        for (int k = 0; k < nz; k++)
            for (int j = 0; j < ny; j++)
                for (int i = 0; i < nx; i++) {
                    size_t p = i + (size_t)nx * (j + (size_t)ny * k);
                    if (!comp[p]) continue;
                    if (i == 0 || j == 0 || k == 0 || i == nx - 1 || j == ny - 1 || k == nz - 1 || lab[p] != 0)
                        fill[comp[p]] = 0;   /* touches the border or holds another label */
                }
        for (size_t i = 0; i < S; i++)
            if (comp[i] && fill[comp[i]]) lab[i] = (uint8_t)l;
        free(fill);
        free(size);
    }
out:
    free(mask);
    free(comp);
    free(stack);
}
