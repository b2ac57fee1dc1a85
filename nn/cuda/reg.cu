/* nn/cuda/reg.cu — the registration ops (pipeline/atlas) on the GPU: MIND-SSC, WARP, SSD_COST and
 * WARP_SSD_GRAD, float32 only. Each kernel is a grid-stride loop around a per-element function of
 * nn/reg_elem.h, the same functions the host test checks against the CPU backend.
 * MIND-SSC runs as: squared differences -> box mean along W, H, D (ping-pong with a workspace
 * copy) -> a per-image double sum of the per-voxel variance (block reduction, one atomicAdd per
 * block) -> normalisation, all on the stream without a host round trip. */
#include "nn/cuda/reg.cuh"
#include "nn/reg_elem.h"

#define REG_THREADS 256

static __global__ void mind_sqdiff_kernel(const float *x, float *o, int64_t n, nn_reg_vol g, int dil)
{
    const int64_t S = g.D * g.H * g.W;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)blockDim.x * gridDim.x) {
        const int64_t img = i / (12 * S), ch = (i / S) % 12, v = i % S;
        o[i] = nn_reg_mind_sqdiff(x + img * S, g, dil, (int)ch, v / (g.H * g.W), (v / g.W) % g.H, v % g.W);
    }
}

static __global__ void box_kernel(const float *in, float *out, int64_t n, nn_reg_vol g, int axis, int r)
{
    const int64_t S = g.D * g.H * g.W;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)blockDim.x * gridDim.x) {
        const int64_t v = i % S;
        out[i] = nn_reg_box(in + (i - v), g, axis, r, v / (g.H * g.W), (v / g.W) % g.H, v % g.W);
    }
}

/* sum[0] += sum over the voxels of one image of nn_reg_mind_var (o: that image's 12 channels). */
static __global__ void mind_var_sum_kernel(const float *o, int64_t S, double *sum)
{
    __shared__ double part[REG_THREADS];
    double s = 0;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < S; i += (int64_t)blockDim.x * gridDim.x) {
        float mn;
        s += nn_reg_mind_var(o, S, i, &mn);
    }
    part[threadIdx.x] = s;
    __syncthreads();
    for (unsigned k = blockDim.x / 2; k > 0; k >>= 1) {
        if (threadIdx.x < k) part[threadIdx.x] += part[threadIdx.x + k];
        __syncthreads();
    }
    if (threadIdx.x == 0) atomicAdd(sum, part[0]);
}

static __global__ void mind_normalise_kernel(float *o, int64_t S, const double *sum)
{
    float lo, hi;
    nn_reg_mind_range(*sum, S, &lo, &hi);
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < S; i += (int64_t)blockDim.x * gridDim.x)
        nn_reg_mind_normalise(o, S, i, lo, hi);
}

static __global__ void warp_kernel(const float *x, const float *u, float *o, int64_t n, int64_t C, nn_reg_vol gx,
                                   nn_reg_vol go)
{
    const int64_t oS = go.D * go.H * go.W, xS = gx.D * gx.H * gx.W;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)blockDim.x * gridDim.x) {
        const int64_t img = i / oS;
        nn_reg_warp(x + img * C * xS, C, gx, u + img * 3 * oS, go, o + img * C * oS, i % oS);
    }
}

static __global__ void ssd_cost_kernel(const float *f, const float *m, float *o, int64_t n, int64_t C, nn_reg_vol g,
                                       int r, int dil)
{
    const int64_t S = g.D * g.H * g.W, L = 2 * r + 1, L3 = L * L * L;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)blockDim.x * gridDim.x) {
        const int64_t img = i / (L3 * S), d = (i / S) % L3;
        o[i] = nn_reg_ssd_cost(f + img * C * S, m + img * C * S, C, g, r, dil, d, i % S);
    }
}

static __global__ void grad_kernel(const float *f, const float *m, const float *u, float *o, int64_t n, int64_t C,
                                   nn_reg_vol g)
{
    const int64_t S = g.D * g.H * g.W;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)blockDim.x * gridDim.x) {
        const int64_t img = i / S;
        nn_reg_warp_ssd_grad(f + img * C * S, m + img * C * S, u + img * 3 * S, C, g, o + img * 3 * S, i % S);
    }
}

static nn_reg_vol vol_of(const nn_tensor *t)
{
    nn_reg_vol g = {t->shape[2], t->shape[3], t->shape[4]};
    return g;
}

/* MIND-SSC needs a copy of its output for the box passes and one double per image. */
size_t nn__cuda_reg_ws(const nn_node *n)
{
    if (n->op.type != NN_OP_MIND_SSC) return 0;
    const size_t sums = sizeof(double) * (size_t)n->out->shape[0];
    return (sums + 255) / 256 * 256 + sizeof(float) * (size_t)nn__numel(n->out);
}

static int mind(nn_cuda *b, nn_node *n, void *ws, size_t ws_bytes, char *err, size_t errlen)
{
    const nn_tensor *x = n->in[0];
    const nn_reg_vol g = vol_of(x);
    const int64_t N = x->shape[0], S = g.D * g.H * g.W, total = N * 12 * S;
    const int dil = n->op.dilation[0] > 0 ? n->op.dilation[0] : 1, r = n->op.k[0] > 0 ? n->op.k[0] : 0;
    if (ws_bytes < nn__cuda_reg_ws(n))
        return sn_errf(err, errlen, SN_EINTERNAL, "MIND_SSC: workspace of %zu bytes, %zu needed", ws_bytes,
                       nn__cuda_reg_ws(n));
    double *sums = (double *)ws;
    float *tmp = (float *)((char *)ws + (sizeof(double) * (size_t)N + 255) / 256 * 256);
    float *out = (float *)n->out->data;
    const unsigned blocks = nn__cuda_blocks(total, REG_THREADS);
    /* squared differences into tmp, then W: tmp -> out, H: out -> tmp, D: tmp -> out */
    mind_sqdiff_kernel<<<blocks, REG_THREADS, 0, b->stream>>>((const float *)x->data, r > 0 ? tmp : out, total, g,
                                                             dil);
    if (r > 0) {
        box_kernel<<<blocks, REG_THREADS, 0, b->stream>>>(tmp, out, total, g, 0, r);
        box_kernel<<<blocks, REG_THREADS, 0, b->stream>>>(out, tmp, total, g, 1, r);
        box_kernel<<<blocks, REG_THREADS, 0, b->stream>>>(tmp, out, total, g, 2, r);
    }
    CUDA_LAUNCHED("MIND_SSC descriptors");
    CUDA_TRY(cudaMemsetAsync(sums, 0, sizeof(double) * (size_t)N, b->stream), "MIND_SSC");
    const unsigned vb = nn__cuda_blocks(S, REG_THREADS) < 1024 ? nn__cuda_blocks(S, REG_THREADS) : 1024;
    for (int64_t img = 0; img < N; img++) {
        mind_var_sum_kernel<<<vb, REG_THREADS, 0, b->stream>>>(out + img * 12 * S, S, sums + img);
        mind_normalise_kernel<<<nn__cuda_blocks(S, REG_THREADS), REG_THREADS, 0, b->stream>>>(out + img * 12 * S, S,
                                                                                              sums + img);
    }
    CUDA_LAUNCHED("MIND_SSC normalisation");
    return 0;
}

int nn__cuda_reg(nn_cuda *b, nn_node *n, void *ws, size_t ws_bytes, char *err, size_t errlen)
{
    for (int i = 0; i < n->n_in; i++)
        if (n->in[i]->dtype != NN_F32 || n->in[i]->ndim != 5)
            return sn_errf(err, errlen, SN_EUNSUPPORTED, "cuda: %s needs 5-D float32 inputs",
                           nn_op_name(n->op.type));
    const int64_t total = nn__numel(n->out);
    const unsigned blocks = nn__cuda_blocks(total, REG_THREADS);
    switch (n->op.type) {
    case NN_OP_MIND_SSC: return mind(b, n, ws, ws_bytes, err, errlen);
    case NN_OP_WARP: {
        const nn_tensor *x = n->in[0], *u = n->in[1];
        warp_kernel<<<blocks, REG_THREADS, 0, b->stream>>>((const float *)x->data, (const float *)u->data,
                                                           (float *)n->out->data, u->shape[0] * u->shape[2] *
                                                           u->shape[3] * u->shape[4], x->shape[1], vol_of(x),
                                                           vol_of(u));
        break;
    }
    case NN_OP_SSD_COST: {
        const nn_tensor *f = n->in[0], *m = n->in[1];
        ssd_cost_kernel<<<blocks, REG_THREADS, 0, b->stream>>>((const float *)f->data, (const float *)m->data,
                                                               (float *)n->out->data, total, f->shape[1], vol_of(f),
                                                               n->op.k[0],
                                                               n->op.dilation[0] > 0 ? n->op.dilation[0] : 1);
        break;
    }
    case NN_OP_WARP_SSD_GRAD: {
        const nn_tensor *f = n->in[0], *m = n->in[1], *u = n->in[2];
        grad_kernel<<<blocks, REG_THREADS, 0, b->stream>>>((const float *)f->data, (const float *)m->data,
                                                           (const float *)u->data, (float *)n->out->data,
                                                           f->shape[0] * f->shape[2] * f->shape[3] * f->shape[4],
                                                           f->shape[1], vol_of(f));
        break;
    }
    default:
        return sn_errf(err, errlen, SN_EINTERNAL, "cuda: %s is not a registration op", nn_op_name(n->op.type));
    }
    CUDA_LAUNCHED(nn_op_name(n->op.type));
    return 0;
}
