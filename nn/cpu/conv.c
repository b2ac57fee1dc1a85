/* nn/cpu/conv.c — 1-D/2-D/3-D convolution and transposed convolution by im2col / col2im over
 * OpenBLAS SGEMM, and linear layers. Output positions are processed in chunks so the column
 * buffer stays within a fixed workspace (planned once per session); 1x1 convolutions with unit
 * stride skip im2col. Bias and the fused activation are applied after each GEMM. */
#include <stdlib.h>
#include <string.h>

#include <cblas.h>

#include "common/status.h"
#include "nn/cpu/cpu.h"

#define WS_FLOATS (8 << 20)   /* column buffer budget: 32 MiB */

typedef struct conv_geom {
    int64_t ci, co, in[3], out[3], k[3];
    int s[3], p[3], d[3];
    int64_t K, O, isz;        /* prod(k), prod(out), prod(in) */
} conv_geom;

static void geom(const nn_node *n, conv_geom *g)
{
    const nn_tensor *x = n->in[0], *w = n->in[1];
    int tr = n->op.type == NN_OP_CONV_TRANSPOSE;
    int nsp = x->ndim - 2;
    g->ci = x->shape[1];
    g->co = tr ? w->shape[1] : w->shape[0];
    nn__cpu_sp3(x, g->in);
    nn__cpu_sp3(n->out, g->out);
    for (int i = 0; i < 3; i++) {
        int j = i - (3 - nsp);
        g->k[i] = j >= 0 ? w->shape[2 + j] : 1;
        g->s[i] = j >= 0 ? n->op.stride[j] : 1;
        g->p[i] = j >= 0 ? n->op.pad[j] : 0;
        g->d[i] = j >= 0 ? n->op.dilation[j] : 1;
    }
    g->K = g->k[0] * g->k[1] * g->k[2];
    g->O = g->out[0] * g->out[1] * g->out[2];
    g->isz = g->in[0] * g->in[1] * g->in[2];
}

static int is_pointwise(const conv_geom *g)
{
    return g->K == 1 && g->s[0] == 1 && g->s[1] == 1 && g->s[2] == 1 && g->p[0] == 0 &&
           g->p[1] == 0 && g->p[2] == 0;
}

size_t nn__cpu_conv_ws(const nn_node *n)
{
    conv_geom g;
    if (n->op.type == NN_OP_CONV) {
        geom(n, &g);
        if (is_pointwise(&g)) return 0;
        int64_t rows = g.ci * g.K, cols = WS_FLOATS / rows;
        if (cols < 1) cols = 1;
        if (cols > g.O) cols = g.O;
        return sizeof(float) * (size_t)(rows * cols);
    }
    if (n->op.type == NN_OP_CONV_TRANSPOSE) {
        geom(n, &g);
        int64_t rows = g.co * g.K, cols = WS_FLOATS / rows;
        if (cols < 1) cols = 1;
        if (cols > g.isz) cols = g.isz;
        return sizeof(float) * (size_t)(rows * cols);
    }
    return 0;
}

/* ---- im2col ---------------------------------------------------------------------------------- */

typedef struct im2col_job {
    const conv_geom *g;
    const float *x;        /* one image [ci][I] */
    float *col;            /* [ci*K][np] */
    int64_t p0, np;
} im2col_job;

static void im2col_rows(void *ctx, int64_t r0, int64_t r1)
{
    const im2col_job *j = ctx;
    const conv_geom *g = j->g;
    for (int64_t r = r0; r < r1; r++) {
        int64_t c = r / g->K, kk = r % g->K;
        int64_t kw = kk % g->k[2], kh = (kk / g->k[2]) % g->k[1], kd = kk / (g->k[2] * g->k[1]);
        const float *xc = j->x + c * g->isz;
        float *dst = j->col + r * j->np;
        int64_t p = j->p0, end = j->p0 + j->np;
        while (p < end) {
            int64_t ow = p % g->out[2], oh = (p / g->out[2]) % g->out[1];
            int64_t od = p / (g->out[2] * g->out[1]);
            int64_t seg = g->out[2] - ow;
            if (seg > end - p) seg = end - p;
            int64_t id = od * g->s[0] - g->p[0] + kd * g->d[0];
            int64_t ih = oh * g->s[1] - g->p[1] + kh * g->d[1];
            if (id < 0 || id >= g->in[0] || ih < 0 || ih >= g->in[1]) {
                memset(dst, 0, sizeof(float) * (size_t)seg);
            } else {
                const float *row = xc + (id * g->in[1] + ih) * g->in[2];
                int64_t iw = ow * g->s[2] - g->p[2] + kw * g->d[2];
                int sw = g->s[2];
                if (sw == 1) {
                    /* Stride 1 (most layers): zeros, one contiguous copy, zeros. Half the time
                     * of a small U-Net went to the per-element loop below. */
                    int64_t a = iw < 0 ? -iw : 0, e = g->in[2] - iw;
                    if (a > seg) a = seg;
                    if (e > seg) e = seg;
                    if (e < a) e = a;
                    memset(dst, 0, sizeof(float) * (size_t)a);
                    if (e > a)
                        memcpy(dst + a, row + iw + a, sizeof(float) * (size_t)(e - a));
                    memset(dst + e, 0, sizeof(float) * (size_t)(seg - e));
                } else {
                    for (int64_t q = 0; q < seg; q++, iw += sw)
                        dst[q] = (iw >= 0 && iw < g->in[2]) ? row[iw] : 0.0f;
                }
            }
            dst += seg;
            p += seg;
        }
    }
}

/* ---- GEMM over the pool -------------------------------------------------------------------
 * OpenBLAS runs single-threaded (nn_backend_cpu_new); the pool splits C into column blocks (row
 * blocks when C is taller than wide). Why not OpenBLAS's own threads: between calls they spin in
 * sched_yield for a while, and between two GEMMs our pool runs im2col and the epilogues on every
 * core, so the two thread sets fought over the cores. In the node, where the caller is a worker
 * thread, a 2-D U-Net over a 60-slice MR took 18.5 s against 11.1 s offline; 15 % of the
 * caller's samples and most of OpenBLAS's thread were sched_yield. Blocks of C do not change the
 * order of any sum, so the results are those of one sgemm call. */
typedef struct gemm_job {
    int ta, tb, split_n;
    int64_t M, N, K, lda, ldb, ldc;
    const float *A, *B;
    float *C;
} gemm_job;

static void gemm_part(void *ctx, int64_t i0, int64_t i1)
{
    const gemm_job *j = ctx;
    const enum CBLAS_TRANSPOSE ta = j->ta ? CblasTrans : CblasNoTrans;
    const enum CBLAS_TRANSPOSE tb = j->tb ? CblasTrans : CblasNoTrans;
    if (j->split_n) {
        const float *B = j->tb ? j->B + i0 * j->ldb : j->B + i0;
        cblas_sgemm(CblasRowMajor, ta, tb, (int)j->M, (int)(i1 - i0), (int)j->K, 1.0f, j->A,
                    (int)j->lda, B, (int)j->ldb, 0.0f, j->C + i0, (int)j->ldc);
    } else {
        const float *A = j->ta ? j->A + i0 : j->A + i0 * j->lda;
        cblas_sgemm(CblasRowMajor, ta, tb, (int)(i1 - i0), (int)j->N, (int)j->K, 1.0f, A,
                    (int)j->lda, j->B, (int)j->ldb, 0.0f, j->C + i0 * j->ldc, (int)j->ldc);
    }
}

void nn__cpu_gemm(cpu_backend *b, int trans_a, int trans_b, int64_t M, int64_t N, int64_t K,
                  const float *A, int64_t lda, const float *B, int64_t ldb, float *C, int64_t ldc)
{
    gemm_job j = {trans_a, trans_b, N >= M, M, N, K, lda, ldb, ldc, A, B, C};
    int64_t n = j.split_n ? N : M;
    /* Blocks of at least 64 columns (16 rows) and ~64k multiply-adds, so a small GEMM runs
     * whole on the caller instead of waking the pool. */
    int64_t per = (j.split_n ? M : N) * K, grain = per > 0 ? (65536 + per - 1) / per : n;
    if (grain < (j.split_n ? 64 : 16))
        grain = j.split_n ? 64 : 16;
    nn__pool_for(b->pool, n, grain, gemm_part, &j);
}

typedef struct epi_job {
    float *y;              /* [co][ld] */
    const float *bias;
    int64_t ld, p0, np;
    nn_act act;
    float slope;
} epi_job;

static void epilogue_rows(void *ctx, int64_t c0, int64_t c1)
{
    const epi_job *j = ctx;
    for (int64_t c = c0; c < c1; c++) {
        float *y = j->y + c * j->ld + j->p0;
        if (j->bias) {
            float b = j->bias[c];
            for (int64_t i = 0; i < j->np; i++) y[i] += b;
        }
        nn__cpu_act(y, j->np, j->act, j->slope);
    }
}

int nn__cpu_conv(cpu_backend *b, nn_node *n, float *ws, size_t ws_bytes)
{
    conv_geom g;
    geom(n, &g);
    const float *x = n->in[0]->data, *w = n->in[1]->data;
    const float *bias = n->n_in > 2 ? n->in[2]->data : NULL;
    float *y = n->out->data;
    int64_t N = n->in[0]->shape[0], rows = g.ci * g.K;
    int pw = is_pointwise(&g);
    int64_t chunk = pw ? g.O : (int64_t)(ws_bytes / sizeof(float)) / rows;
    if (chunk < 1) return SN_EINTERNAL;
    for (int64_t i = 0; i < N; i++) {
        const float *xi = x + i * g.ci * g.isz;
        float *yi = y + i * g.co * g.O;
        for (int64_t p0 = 0; p0 < g.O; p0 += chunk) {
            int64_t np = g.O - p0 < chunk ? g.O - p0 : chunk;
            if (pw) {
                nn__cpu_gemm(b, 0, 0, g.co, np, g.ci, w, g.ci, xi + p0, g.O, yi + p0, g.O);
            } else {
                im2col_job j = {&g, xi, ws, p0, np};
                nn__pool_for(b->pool, rows, 4, im2col_rows, &j);
                nn__cpu_gemm(b, 0, 0, g.co, np, rows, w, rows, ws, np, yi + p0, g.O);
            }
            if (bias || n->op.act) {
                epi_job e = {yi, bias, g.O, p0, np, n->op.act, n->op.slope};
                nn__pool_for(b->pool, g.co, 1, epilogue_rows, &e);
            }
        }
    }
    return 0;
}

/* ---- transposed convolution: col = W^T x, then scatter-add (col2im) ------------------------- */

typedef struct col2im_job {
    const conv_geom *g;
    const float *col;      /* [co*K][nq] */
    float *y;              /* one image [co][O] */
    int64_t q0, nq;
} col2im_job;

static void col2im_channels(void *ctx, int64_t c0, int64_t c1)
{
    const col2im_job *j = ctx;
    const conv_geom *g = j->g;
    for (int64_t c = c0; c < c1; c++) {
        float *yc = j->y + c * g->O;
        for (int64_t kk = 0; kk < g->K; kk++) {
            int64_t kw = kk % g->k[2], kh = (kk / g->k[2]) % g->k[1];
            int64_t kd = kk / (g->k[2] * g->k[1]);
            const float *src = j->col + (c * g->K + kk) * j->nq;
            int64_t q = j->q0, end = j->q0 + j->nq;
            while (q < end) {
                int64_t iw = q % g->in[2], ih = (q / g->in[2]) % g->in[1];
                int64_t id = q / (g->in[2] * g->in[1]);
                int64_t seg = g->in[2] - iw;
                if (seg > end - q) seg = end - q;
                int64_t od = id * g->s[0] - g->p[0] + kd * g->d[0];
                int64_t oh = ih * g->s[1] - g->p[1] + kh * g->d[1];
                if (od >= 0 && od < g->out[0] && oh >= 0 && oh < g->out[1]) {
                    float *row = yc + (od * g->out[1] + oh) * g->out[2];
                    int64_t ow = iw * g->s[2] - g->p[2] + kw * g->d[2];
                    for (int64_t t = 0; t < seg; t++, ow += g->s[2])
                        if (ow >= 0 && ow < g->out[2]) row[ow] += src[t];
                }
                src += seg;
                q += seg;
            }
        }
    }
}

int nn__cpu_conv_transpose(cpu_backend *b, nn_node *n, float *ws, size_t ws_bytes)
{
    conv_geom g;
    geom(n, &g);
    const float *x = n->in[0]->data, *w = n->in[1]->data;
    const float *bias = n->n_in > 2 ? n->in[2]->data : NULL;
    float *y = n->out->data;
    int64_t N = n->in[0]->shape[0], rows = g.co * g.K;
    int64_t chunk = (int64_t)(ws_bytes / sizeof(float)) / rows;
    if (chunk < 1) return SN_EINTERNAL;
    memset(y, 0, n->out->nbytes);
    for (int64_t i = 0; i < N; i++) {
        const float *xi = x + i * g.ci * g.isz;
        float *yi = y + i * g.co * g.O;
        for (int64_t q0 = 0; q0 < g.isz; q0 += chunk) {
            int64_t nq = g.isz - q0 < chunk ? g.isz - q0 : chunk;
            /* w is [ci][co*K]: col[co*K][nq] = w^T * x[:, q0:q0+nq] */
            nn__cpu_gemm(b, 1, 0, rows, nq, g.ci, w, rows, xi + q0, g.isz, ws, nq);
            col2im_job j = {&g, ws, yi, q0, nq};
            nn__pool_for(b->pool, g.co, 1, col2im_channels, &j);
        }
        if (bias || n->op.act) {
            epi_job e = {yi, bias, g.O, 0, g.O, n->op.act, n->op.slope};
            nn__pool_for(b->pool, g.co, 1, epilogue_rows, &e);
        }
    }
    return 0;
}

int nn__cpu_linear(cpu_backend *b, nn_node *n)
{
    const nn_tensor *x = n->in[0], *w = n->in[1];
    int64_t ci = w->shape[1], co = w->shape[0], rows = nn__numel(x) / ci;
    float *y = n->out->data;
    nn__cpu_gemm(b, 0, 1, rows, co, ci, x->data, ci, w->data, ci, y, co);
    const float *bias = n->n_in > 2 ? n->in[2]->data : NULL;
    for (int64_t r = 0; r < rows; r++) {
        if (bias)
            for (int64_t c = 0; c < co; c++) y[r * co + c] += bias[c];
        nn__cpu_act(y + r * co, co, n->op.act, n->op.slope);
    }
    return 0;
}
