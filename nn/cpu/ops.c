/* nn/cpu/ops.c — the CPU backend's non-GEMM ops: normalisations (statistics in double),
 * activations, softmax / argmax over channels, broadcasting add / multiply, concat, pooling and
 * up-sampling, each following PyTorch's definitions (index rounding, padding rules) so results
 * match it to float rounding. Loops are split over the thread pool by planes or rows. */
#include <float.h>
#include <math.h>
#include <string.h>

#include "common/status.h"
#include "nn/cpu/cpu.h"

void nn__cpu_act(float *p, int64_t n, nn_act act, float slope)
{
    switch (act) {
    case NN_ACT_RELU:
        for (int64_t i = 0; i < n; i++) p[i] = p[i] > 0.0f ? p[i] : 0.0f;
        break;
    case NN_ACT_LEAKY_RELU:
        for (int64_t i = 0; i < n; i++) p[i] = p[i] > 0.0f ? p[i] : p[i] * slope;
        break;
    case NN_ACT_SIGMOID:
        for (int64_t i = 0; i < n; i++) p[i] = 1.0f / (1.0f + expf(-p[i]));
        break;
    default:
        break;
    }
}

/* ---- normalisation --------------------------------------------------------------------------- */

typedef struct norm_job {
    const nn_node *n;
    int64_t C, S, G;        /* channels, spatial size, groups (instance: G = C) */
} norm_job;

/* One (image, group) at a time: mean and biased variance in double, then the affine. */
static void norm_groups(void *ctx, int64_t g0, int64_t g1)
{
    const norm_job *j = ctx;
    const nn_node *n = j->n;
    const float *x = n->in[0]->data;
    float *y = n->out->data;
    const float *w = n->n_in > 1 ? n->in[1]->data : NULL, *b = n->n_in > 2 ? n->in[2]->data : NULL;
    int64_t cpg = j->C / j->G, len = cpg * j->S;
    for (int64_t g = g0; g < g1; g++) {
        const float *xs = x + g * len;
        float *ys = y + g * len;
        double sum = 0, sq = 0;
        for (int64_t i = 0; i < len; i++) sum += xs[i];
        double mean = sum / (double)len;
        for (int64_t i = 0; i < len; i++) {
            double d = xs[i] - mean;
            sq += d * d;
        }
        double rstd = 1.0 / sqrt(sq / (double)len + n->op.eps);
        int64_t c0 = (g % j->G) * cpg;
        for (int64_t c = 0; c < cpg; c++) {
            float sc = (float)rstd * (w ? w[c0 + c] : 1.0f);
            float sh = (b ? b[c0 + c] : 0.0f) - (float)mean * sc;
            const float *xc = xs + c * j->S;
            float *yc = ys + c * j->S;
            for (int64_t i = 0; i < j->S; i++) yc[i] = xc[i] * sc + sh;
            nn__cpu_act(yc, j->S, n->op.act, n->op.slope);
        }
    }
}

static void bn_planes(void *ctx, int64_t p0, int64_t p1)
{
    const norm_job *j = ctx;
    const nn_node *n = j->n;
    const float *x = n->in[0]->data, *mean = n->in[1]->data, *var = n->in[2]->data;
    const float *w = n->n_in > 3 ? n->in[3]->data : NULL, *b = n->n_in > 4 ? n->in[4]->data : NULL;
    float *y = n->out->data;
    for (int64_t p = p0; p < p1; p++) {
        int64_t c = p % j->C;
        /* PyTorch's inference batch norm: alpha = w / sqrt(var + eps), beta = b - mean * alpha */
        float alpha = (w ? w[c] : 1.0f) / sqrtf(var[c] + n->op.eps);
        float beta = (b ? b[c] : 0.0f) - mean[c] * alpha;
        const float *xc = x + p * j->S;
        float *yc = y + p * j->S;
        for (int64_t i = 0; i < j->S; i++) yc[i] = xc[i] * alpha + beta;
        nn__cpu_act(yc, j->S, n->op.act, n->op.slope);
    }
}

int nn__cpu_norm(cpu_backend *b, nn_node *n)
{
    const nn_tensor *x = n->in[0];
    int64_t N = x->shape[0], C = x->shape[1], S = nn__numel(x) / (N * C);
    norm_job j = {n, C, S, C};
    if (n->op.type == NN_OP_BATCH_NORM) {
        nn__pool_for(b->pool, N * C, 1, bn_planes, &j);
        return 0;
    }
    if (n->op.type == NN_OP_GROUP_NORM) j.G = n->op.groups;
    nn__pool_for(b->pool, N * j.G, 1, norm_groups, &j);
    return 0;
}

/* ---- element-wise ---------------------------------------------------------------------------- */

typedef struct unary_job {
    const nn_node *n;
} unary_job;

static void unary_range(void *ctx, int64_t i0, int64_t i1)
{
    const nn_node *n = ((const unary_job *)ctx)->n;
    const float *x = n->in[0]->data;
    float *y = n->out->data;
    switch (n->op.type) {
    case NN_OP_RELU:
        for (int64_t i = i0; i < i1; i++) y[i] = x[i] > 0.0f ? x[i] : 0.0f;
        break;
    case NN_OP_LEAKY_RELU:
        for (int64_t i = i0; i < i1; i++) y[i] = x[i] > 0.0f ? x[i] : x[i] * n->op.slope;
        break;
    case NN_OP_SIGMOID:
        for (int64_t i = i0; i < i1; i++) y[i] = 1.0f / (1.0f + expf(-x[i]));
        break;
    case NN_OP_SCALE_SHIFT:
        for (int64_t i = i0; i < i1; i++) y[i] = x[i] * n->op.alpha + n->op.beta;
        break;
    default:
        break;
    }
}

int nn__cpu_unary(cpu_backend *b, nn_node *n)
{
    unary_job j = {n};
    nn__pool_for(b->pool, nn__numel(n->out), 1 << 14, unary_range, &j);
    return 0;
}

typedef struct bin_job {
    const nn_node *n;
    int64_t os[NN_MAX_DIMS], as[NN_MAX_DIMS], bs[NN_MAX_DIMS];   /* out shape, strides */
    int nd;
} bin_job;

/* Rows of the innermost output dimension; a and b strides are 0 where they broadcast. */
static void bin_rows(void *ctx, int64_t r0, int64_t r1)
{
    const bin_job *j = ctx;
    const float *a = j->n->in[0]->data, *bb = j->n->in[1]->data;
    float *y = j->n->out->data;
    int add = j->n->op.type == NN_OP_ADD, nd = j->nd;
    int64_t W = j->os[nd - 1], sa = j->as[nd - 1], sb = j->bs[nd - 1];
    for (int64_t r = r0; r < r1; r++) {
        int64_t rem = r, ao = 0, bo = 0;
        for (int d = nd - 2; d >= 0; d--) {
            int64_t i = rem % j->os[d];
            rem /= j->os[d];
            ao += i * j->as[d];
            bo += i * j->bs[d];
        }
        const float *pa = a + ao, *pb = bb + bo;
        float *py = y + r * W;
        if (add)
            for (int64_t i = 0; i < W; i++) py[i] = pa[i * sa] + pb[i * sb];
        else
            for (int64_t i = 0; i < W; i++) py[i] = pa[i * sa] * pb[i * sb];
    }
}

static void strides_for(const nn_tensor *t, int nd, int64_t *st)
{
    int64_t s = 1;
    for (int d = nd - 1; d >= 0; d--) {
        int td = d - (nd - t->ndim);
        int64_t dim = td >= 0 ? t->shape[td] : 1;
        st[d] = dim == 1 ? 0 : s;
        s *= dim;
    }
}

int nn__cpu_binary(cpu_backend *b, nn_node *n)
{
    bin_job j = {.n = n, .nd = n->out->ndim};   /* zeroed: gcc -O0 cannot see nd >= 1 */
    for (int d = 0; d < j.nd; d++) j.os[d] = n->out->shape[d];
    strides_for(n->in[0], j.nd, j.as);
    strides_for(n->in[1], j.nd, j.bs);
    int64_t rows = nn__numel(n->out) / j.os[j.nd - 1];
    nn__pool_for(b->pool, rows, 16, bin_rows, &j);
    return 0;
}

int nn__cpu_concat(cpu_backend *b, nn_node *n)
{
    (void)b;
    int nd = n->out->ndim, ax = n->op.axis < 0 ? n->op.axis + nd : n->op.axis;
    int64_t outer = 1, inner = 1;
    for (int d = 0; d < ax; d++) outer *= n->out->shape[d];
    for (int d = ax + 1; d < nd; d++) inner *= n->out->shape[d];
    float *y = n->out->data;
    int64_t oblk = n->out->shape[ax] * inner;
    for (int64_t o = 0; o < outer; o++) {
        int64_t off = 0;
        for (int k = 0; k < n->n_in; k++) {
            int64_t blk = n->in[k]->shape[ax] * inner;
            memcpy(y + o * oblk + off, (const float *)n->in[k]->data + o * blk,
                   sizeof(float) * (size_t)blk);
            off += blk;
        }
    }
    return 0;
}

/* ---- softmax / argmax over channels ---------------------------------------------------------- */

typedef struct chan_job {
    const nn_node *n;
    int64_t C, S;
} chan_job;

#define CBLK 256

static void softmax_blocks(void *ctx, int64_t b0, int64_t b1)
{
    const chan_job *j = ctx;
    const float *x = j->n->in[0]->data;
    float *y = j->n->out->data;
    int64_t nblk = (j->S + CBLK - 1) / CBLK;
    float mx[CBLK], sum[CBLK];
    for (int64_t bi = b0; bi < b1; bi++) {
        int64_t img = bi / nblk, s0 = (bi % nblk) * CBLK;
        int64_t len = j->S - s0 < CBLK ? j->S - s0 : CBLK;
        const float *xi = x + img * j->C * j->S + s0;
        float *yi = y + img * j->C * j->S + s0;
        for (int64_t i = 0; i < len; i++) { mx[i] = -INFINITY; sum[i] = 0; }
        for (int64_t c = 0; c < j->C; c++)
            for (int64_t i = 0; i < len; i++)
                if (xi[c * j->S + i] > mx[i]) mx[i] = xi[c * j->S + i];
        for (int64_t c = 0; c < j->C; c++)
            for (int64_t i = 0; i < len; i++) {
                float e = expf(xi[c * j->S + i] - mx[i]);
                yi[c * j->S + i] = e;
                sum[i] += e;
            }
        for (int64_t c = 0; c < j->C; c++)
            for (int64_t i = 0; i < len; i++) yi[c * j->S + i] /= sum[i];
    }
}

static void argmax_blocks(void *ctx, int64_t b0, int64_t b1)
{
    const chan_job *j = ctx;
    const float *x = j->n->in[0]->data;
    float *y = j->n->out->data;
    int64_t nblk = (j->S + CBLK - 1) / CBLK;
    float mx[CBLK];
    for (int64_t bi = b0; bi < b1; bi++) {
        int64_t img = bi / nblk, s0 = (bi % nblk) * CBLK;
        int64_t len = j->S - s0 < CBLK ? j->S - s0 : CBLK;
        const float *xi = x + img * j->C * j->S + s0;
        float *yi = y + img * j->S + s0;
        for (int64_t i = 0; i < len; i++) { mx[i] = xi[i]; yi[i] = 0; }
        for (int64_t c = 1; c < j->C; c++)
            for (int64_t i = 0; i < len; i++)
                if (xi[c * j->S + i] > mx[i]) { mx[i] = xi[c * j->S + i]; yi[i] = (float)c; }
    }
}

static int chan_op(cpu_backend *b, nn_node *n, nn_task_fn fn)
{
    const nn_tensor *x = n->in[0];
    chan_job j = {n, x->shape[1], nn__numel(x) / (x->shape[0] * x->shape[1])};
    int64_t nblk = (j.S + CBLK - 1) / CBLK;
    nn__pool_for(b->pool, x->shape[0] * nblk, 1, fn, &j);
    return 0;
}

int nn__cpu_softmax(cpu_backend *b, nn_node *n) { return chan_op(b, n, softmax_blocks); }
int nn__cpu_argmax(cpu_backend *b, nn_node *n) { return chan_op(b, n, argmax_blocks); }

/* ---- pooling --------------------------------------------------------------------------------- */

typedef struct pool_job {
    const nn_node *n;
    int64_t in[3], out[3];
    int k[3], s[3], p[3], d[3];
} pool_job;

static void pool_planes(void *ctx, int64_t p0, int64_t p1)
{
    const pool_job *j = ctx;
    const nn_node *n = j->n;
    const float *x = n->in[0]->data;
    float *y = n->out->data;
    int64_t I = j->in[0] * j->in[1] * j->in[2], O = j->out[0] * j->out[1] * j->out[2];
    int is_max = n->op.type == NN_OP_MAX_POOL;
    for (int64_t pl = p0; pl < p1; pl++) {
        const float *xp = x + pl * I;
        float *yp = y + pl * O;
        if (n->op.type == NN_OP_GLOBAL_AVG_POOL) {
            double s = 0;
            for (int64_t i = 0; i < I; i++) s += xp[i];
            yp[0] = (float)(s / (double)I);
            continue;
        }
        for (int64_t od = 0; od < j->out[0]; od++)
            for (int64_t oh = 0; oh < j->out[1]; oh++)
                for (int64_t ow = 0; ow < j->out[2]; ow++) {
                    int64_t st[3] = {od * j->s[0] - j->p[0], oh * j->s[1] - j->p[1],
                                     ow * j->s[2] - j->p[2]};
                    float acc = is_max ? -INFINITY : 0.0f;
                    int64_t lo[3], hi[3], cnt_pad = 1;
                    for (int a = 0; a < 3; a++) {
                        if (is_max) continue;
                        /* PyTorch: window end clipped to in + pad (for the divisor), then to in */
                        int64_t e = st[a] + j->k[a];
                        if (e > j->in[a] + j->p[a]) e = j->in[a] + j->p[a];
                        cnt_pad *= e - st[a];
                        lo[a] = st[a] < 0 ? 0 : st[a];
                        hi[a] = e > j->in[a] ? j->in[a] : e;
                    }
                    if (is_max) {
                        for (int a = 0; a < 3; a++) { lo[a] = 0; hi[a] = j->k[a]; }
                        for (int64_t a = 0; a < j->k[0]; a++) {
                            int64_t id = st[0] + a * j->d[0];
                            if (id < 0 || id >= j->in[0]) continue;
                            for (int64_t bq = 0; bq < j->k[1]; bq++) {
                                int64_t ih = st[1] + bq * j->d[1];
                                if (ih < 0 || ih >= j->in[1]) continue;
                                for (int64_t c = 0; c < j->k[2]; c++) {
                                    int64_t iw = st[2] + c * j->d[2];
                                    if (iw < 0 || iw >= j->in[2]) continue;
                                    float v = xp[(id * j->in[1] + ih) * j->in[2] + iw];
                                    if (v > acc || isnan(v)) acc = v;
                                }
                            }
                        }
                    } else {
                        for (int64_t id = lo[0]; id < hi[0]; id++)
                            for (int64_t ih = lo[1]; ih < hi[1]; ih++)
                                for (int64_t iw = lo[2]; iw < hi[2]; iw++)
                                    acc += xp[(id * j->in[1] + ih) * j->in[2] + iw];
                        int64_t cnt = n->op.count_include_pad
                                          ? cnt_pad
                                          : (hi[0] - lo[0]) * (hi[1] - lo[1]) * (hi[2] - lo[2]);
                        acc /= (float)cnt;
                    }
                    yp[(od * j->out[1] + oh) * j->out[2] + ow] = acc;
                }
    }
}

int nn__cpu_pool(cpu_backend *b, nn_node *n)
{
    pool_job j;
    j.n = n;
    int nsp = nn__cpu_sp3(n->in[0], j.in);
    nn__cpu_sp3(n->out, j.out);
    for (int i = 0; i < 3; i++) {
        int q = i - (3 - nsp);
        j.k[i] = q >= 0 ? n->op.k[q] : 1;
        j.s[i] = q >= 0 ? n->op.stride[q] : 1;
        j.p[i] = q >= 0 ? n->op.pad[q] : 0;
        j.d[i] = q >= 0 && n->op.type == NN_OP_MAX_POOL ? n->op.dilation[q] : 1;
    }
    int64_t planes = n->in[0]->shape[0] * n->in[0]->shape[1];
    nn__pool_for(b->pool, planes, 1, pool_planes, &j);
    return 0;
}

/* ---- up-sampling ----------------------------------------------------------------------------- */

typedef struct up_job {
    const nn_node *n;
    int64_t in[3], out[3];
    float sc[3];            /* PyTorch's source-index scale per dim */
    int nsp;
} up_job;

/* PyTorch's area_pixel_compute_scale (float) */
static float up_scale(int64_t in, int64_t out, double sf, int align_corners)
{
    if (align_corners) return out > 1 ? (float)(in - 1) / (float)(out - 1) : 0.0f;
    return sf > 0 ? (float)(1.0 / sf) : (float)in / (float)out;
}

static void up_planes(void *ctx, int64_t p0, int64_t p1)
{
    const up_job *j = ctx;
    const nn_node *n = j->n;
    const float *x = n->in[0]->data;
    float *y = n->out->data;
    int64_t I = j->in[0] * j->in[1] * j->in[2], O = j->out[0] * j->out[1] * j->out[2];
    int ac = n->op.align_corners;
    for (int64_t pl = p0; pl < p1; pl++) {
        const float *xp = x + pl * I;
        float *yp = y + pl * O;
        if (n->op.type == NN_OP_UPSAMPLE_NEAREST) {
            for (int64_t od = 0; od < j->out[0]; od++) {
                int64_t id = (int64_t)floorf((float)od * j->sc[0]);
                if (id > j->in[0] - 1) id = j->in[0] - 1;
                for (int64_t oh = 0; oh < j->out[1]; oh++) {
                    int64_t ih = (int64_t)floorf((float)oh * j->sc[1]);
                    if (ih > j->in[1] - 1) ih = j->in[1] - 1;
                    const float *row = xp + (id * j->in[1] + ih) * j->in[2];
                    float *orow = yp + (od * j->out[1] + oh) * j->out[2];
                    for (int64_t ow = 0; ow < j->out[2]; ow++) {
                        int64_t iw = (int64_t)floorf((float)ow * j->sc[2]);
                        if (iw > j->in[2] - 1) iw = j->in[2] - 1;
                        orow[ow] = row[iw];
                    }
                }
            }
            continue;
        }
        int64_t i0[3][1], dummy;
        (void)i0;
        (void)dummy;
        for (int64_t od = 0; od < j->out[0]; od++) {
            int64_t d0, d1;
            float ld0, ld1;
            {
                float src = ac ? j->sc[0] * (float)od : j->sc[0] * ((float)od + 0.5f) - 0.5f;
                if (!ac && src < 0) src = 0;
                d0 = (int64_t)src;
                d1 = d0 + (d0 < j->in[0] - 1 ? 1 : 0);
                ld1 = src - (float)d0;
                ld0 = 1.0f - ld1;
            }
            for (int64_t oh = 0; oh < j->out[1]; oh++) {
                float src = ac ? j->sc[1] * (float)oh : j->sc[1] * ((float)oh + 0.5f) - 0.5f;
                if (!ac && src < 0) src = 0;
                int64_t h0 = (int64_t)src, h1 = h0 + (h0 < j->in[1] - 1 ? 1 : 0);
                float lh1 = src - (float)h0, lh0 = 1.0f - lh1;
                for (int64_t ow = 0; ow < j->out[2]; ow++) {
                    float sw = ac ? j->sc[2] * (float)ow : j->sc[2] * ((float)ow + 0.5f) - 0.5f;
                    if (!ac && sw < 0) sw = 0;
                    int64_t w0 = (int64_t)sw, w1 = w0 + (w0 < j->in[2] - 1 ? 1 : 0);
                    float lw1 = sw - (float)w0, lw0 = 1.0f - lw1;
#define X(a, b, c) xp[((a) * j->in[1] + (b)) * j->in[2] + (c)]
                    float v;
                    if (j->nsp == 3)
                        v = ld0 * (lh0 * (lw0 * X(d0, h0, w0) + lw1 * X(d0, h0, w1)) +
                                   lh1 * (lw0 * X(d0, h1, w0) + lw1 * X(d0, h1, w1))) +
                            ld1 * (lh0 * (lw0 * X(d1, h0, w0) + lw1 * X(d1, h0, w1)) +
                                   lh1 * (lw0 * X(d1, h1, w0) + lw1 * X(d1, h1, w1)));
                    else if (j->nsp == 2)
                        v = lh0 * (lw0 * X(d0, h0, w0) + lw1 * X(d0, h0, w1)) +
                            lh1 * (lw0 * X(d0, h1, w0) + lw1 * X(d0, h1, w1));
                    else
                        v = lw0 * X(d0, h0, w0) + lw1 * X(d0, h0, w1);
#undef X
                    yp[(od * j->out[1] + oh) * j->out[2] + ow] = v;
                }
            }
        }
    }
}

int nn__cpu_upsample(cpu_backend *b, nn_node *n)
{
    up_job j;
    j.n = n;
    j.nsp = nn__cpu_sp3(n->in[0], j.in);
    nn__cpu_sp3(n->out, j.out);
    for (int i = 0; i < 3; i++) {
        int q = i - (3 - j.nsp);
        double sf = q >= 0 ? n->op.scale[q] : 1.0;
        j.sc[i] = n->op.type == NN_OP_UPSAMPLE_NEAREST
                      ? (sf > 0 ? (float)(1.0 / sf) : (float)j.in[i] / (float)j.out[i])
                      : up_scale(j.in[i], j.out[i], sf, n->op.align_corners);
    }
    int64_t planes = n->in[0]->shape[0] * n->in[0]->shape[1];
    nn__pool_for(b->pool, planes, 1, up_planes, &j);
    return 0;
}
