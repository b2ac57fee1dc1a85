/* nn/cuda/pool.cu — one thread per output voxel for windows; one block per plane for the global
 * average (tree reduction). */
#include "nn/cuda/pool.cuh"

typedef struct pgeom {
    int64_t in[3], out[3];
    int k[3], s[3], p[3], d[3];
    int is_max, include_pad;
} pgeom;

template <typename T>
static __global__ void pool_kernel(const T *x, T *y, int64_t n, pgeom g)
{
    int64_t I = g.in[0] * g.in[1] * g.in[2], O = g.out[0] * g.out[1] * g.out[2];
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)blockDim.x * gridDim.x) {
        int64_t pl = i / O, o = i % O;
        int64_t ow = o % g.out[2], oh = (o / g.out[2]) % g.out[1], od = o / (g.out[2] * g.out[1]);
        const T *xp = x + pl * I;
        int64_t st0[3] = {od * g.s[0] - g.p[0], oh * g.s[1] - g.p[1], ow * g.s[2] - g.p[2]};
        float acc;
        if (g.is_max) {
            acc = -INFINITY;
            for (int a = 0; a < g.k[0]; a++) {
                int64_t id = st0[0] + (int64_t)a * g.d[0];
                if (id < 0 || id >= g.in[0]) continue;
                for (int b = 0; b < g.k[1]; b++) {
                    int64_t ih = st0[1] + (int64_t)b * g.d[1];
                    if (ih < 0 || ih >= g.in[1]) continue;
                    for (int c = 0; c < g.k[2]; c++) {
                        int64_t iw = st0[2] + (int64_t)c * g.d[2];
                        if (iw < 0 || iw >= g.in[2]) continue;
                        float v = ld(xp + (id * g.in[1] + ih) * g.in[2] + iw);
                        if (v > acc || isnan(v)) acc = v;
                    }
                }
            }
        } else {
            int64_t lo[3], hi[3], cnt_pad = 1;
            for (int a = 0; a < 3; a++) {
                int64_t e = st0[a] + g.k[a];
                if (e > g.in[a] + g.p[a]) e = g.in[a] + g.p[a];
                cnt_pad *= e - st0[a];
                lo[a] = st0[a] < 0 ? 0 : st0[a];
                hi[a] = e > g.in[a] ? g.in[a] : e;
            }
            acc = 0.f;
            for (int64_t id = lo[0]; id < hi[0]; id++)
                for (int64_t ih = lo[1]; ih < hi[1]; ih++)
                    for (int64_t iw = lo[2]; iw < hi[2]; iw++)
                        acc += ld(xp + (id * g.in[1] + ih) * g.in[2] + iw);
            int64_t cnt = g.include_pad ? cnt_pad
                                        : (hi[0] - lo[0]) * (hi[1] - lo[1]) * (hi[2] - lo[2]);
            acc /= (float)cnt;
        }
        st(y + i, acc);
    }
}

template <typename T>
static __global__ void gap_kernel(const T *x, T *y, int64_t I)
{
    __shared__ float sm[256];
    const T *xp = x + blockIdx.x * I;
    float a = 0.f;
    for (int64_t i = threadIdx.x; i < I; i += blockDim.x) a += ld(xp + i);
    sm[threadIdx.x] = a;
    __syncthreads();
    for (int o = blockDim.x / 2; o > 0; o >>= 1) {
        if ((int)threadIdx.x < o) sm[threadIdx.x] += sm[threadIdx.x + o];
        __syncthreads();
    }
    if (threadIdx.x == 0) st(y + blockIdx.x, sm[0] / (float)I);
}

template <typename T>
static void pool_launch(const nn_node *n, cudaStream_t s)
{
    const nn_tensor *x = n->in[0];
    int64_t planes = x->shape[0] * x->shape[1];
    if (n->op.type == NN_OP_GLOBAL_AVG_POOL) {
        gap_kernel<T><<<(unsigned)planes, 256, 0, s>>>((const T *)x->data, (T *)n->out->data,
                                                      nn__numel(x) / planes);
        return;
    }
    pgeom g;
    int nsp = nn__cuda_sp3(x, g.in);
    nn__cuda_sp3(n->out, g.out);
    for (int i = 0; i < 3; i++) {
        int q = i - (3 - nsp);
        g.k[i] = q >= 0 ? n->op.k[q] : 1;
        g.s[i] = q >= 0 ? n->op.stride[q] : 1;
        g.p[i] = q >= 0 ? n->op.pad[q] : 0;
        g.d[i] = q >= 0 && n->op.type == NN_OP_MAX_POOL ? n->op.dilation[q] : 1;
    }
    g.is_max = n->op.type == NN_OP_MAX_POOL;
    g.include_pad = n->op.count_include_pad;
    int64_t cnt = nn__numel(n->out);
    pool_kernel<T><<<nn__cuda_blocks(cnt, 256), 256, 0, s>>>((const T *)x->data,
                                                            (T *)n->out->data, cnt, g);
}

int nn__cuda_pool(nn_cuda *b, nn_node *n, char *err, size_t errlen)
{
    if (n->out->dtype == NN_F16) pool_launch<__half>(n, b->stream);
    else pool_launch<float>(n, b->stream);
    CUDA_LAUNCHED(nn_op_name(n->op.type));
    return 0;
}
