/* nn/cuda/upsample.cu — one thread per output voxel; source index scales computed on the host
 * in float exactly as PyTorch's area_pixel_compute_scale / nearest_idx. */
#include "nn/cuda/upsample.cuh"

typedef struct ugeom {
    int64_t in[3], out[3];
    float sc[3];
    int nearest, ac;
} ugeom;

static __device__ __forceinline__ void lin_src(float sc, int64_t o, int64_t in, int ac,
                                               int64_t *i0, int64_t *i1, float *l1)
{
    float s = ac ? sc * (float)o : sc * ((float)o + 0.5f) - 0.5f;
    if (!ac && s < 0.f) s = 0.f;
    *i0 = (int64_t)s;
    *i1 = *i0 + (*i0 < in - 1 ? 1 : 0);
    *l1 = s - (float)*i0;
}

template <typename T>
static __global__ void upsample_kernel(const T *x, T *y, int64_t n, ugeom g)
{
    int64_t I = g.in[0] * g.in[1] * g.in[2], O = g.out[0] * g.out[1] * g.out[2];
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)blockDim.x * gridDim.x) {
        int64_t pl = i / O, o = i % O;
        int64_t ow = o % g.out[2], oh = (o / g.out[2]) % g.out[1], od = o / (g.out[2] * g.out[1]);
        const T *xp = x + pl * I;
        if (g.nearest) {
            int64_t id = (int64_t)floorf((float)od * g.sc[0]);
            int64_t ih = (int64_t)floorf((float)oh * g.sc[1]);
            int64_t iw = (int64_t)floorf((float)ow * g.sc[2]);
            id = id < g.in[0] - 1 ? id : g.in[0] - 1;
            ih = ih < g.in[1] - 1 ? ih : g.in[1] - 1;
            iw = iw < g.in[2] - 1 ? iw : g.in[2] - 1;
            st(y + i, ld(xp + (id * g.in[1] + ih) * g.in[2] + iw));
            continue;
        }
        int64_t d0, d1, h0, h1, w0, w1;
        float ld1, lh1, lw1;
        lin_src(g.sc[0], od, g.in[0], g.ac, &d0, &d1, &ld1);
        lin_src(g.sc[1], oh, g.in[1], g.ac, &h0, &h1, &lh1);
        lin_src(g.sc[2], ow, g.in[2], g.ac, &w0, &w1, &lw1);
        float ld0 = 1.f - ld1, lh0 = 1.f - lh1, lw0 = 1.f - lw1;
#define X(a, b, c) ld(xp + ((a) * g.in[1] + (b)) * g.in[2] + (c))
        float v = ld0 * (lh0 * (lw0 * X(d0, h0, w0) + lw1 * X(d0, h0, w1)) +
                         lh1 * (lw0 * X(d0, h1, w0) + lw1 * X(d0, h1, w1))) +
                  ld1 * (lh0 * (lw0 * X(d1, h0, w0) + lw1 * X(d1, h0, w1)) +
                         lh1 * (lw0 * X(d1, h1, w0) + lw1 * X(d1, h1, w1)));
#undef X
        st(y + i, v);
    }
}

template <typename T>
static void upsample_launch(const nn_node *n, const ugeom &g, cudaStream_t s)
{
    int64_t cnt = nn__numel(n->out);
    upsample_kernel<T><<<nn__cuda_blocks(cnt, 256), 256, 0, s>>>((const T *)n->in[0]->data,
                                                                (T *)n->out->data, cnt, g);
}

int nn__cuda_upsample(nn_cuda *b, nn_node *n, char *err, size_t errlen)
{
    ugeom g;
    int nsp = nn__cuda_sp3(n->in[0], g.in);
    nn__cuda_sp3(n->out, g.out);
    g.nearest = n->op.type == NN_OP_UPSAMPLE_NEAREST;
    g.ac = n->op.align_corners;
    for (int i = 0; i < 3; i++) {
        int q = i - (3 - nsp);
        double sf = q >= 0 ? n->op.scale[q] : 1.0;
        if (g.nearest || !g.ac)
            g.sc[i] = sf > 0 ? (float)(1.0 / sf) : (float)g.in[i] / (float)g.out[i];
        else
            g.sc[i] = g.out[i] > 1 ? (float)(g.in[i] - 1) / (float)(g.out[i] - 1) : 0.f;
        if (q < 0) g.sc[i] = g.nearest ? 1.f : 0.f;
    }
    if (n->out->dtype == NN_F16) upsample_launch<__half>(n, g, b->stream);
    else upsample_launch<float>(n, g, b->stream);
    CUDA_LAUNCHED(nn_op_name(n->op.type));
    return 0;
}
