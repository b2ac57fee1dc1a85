/* nn/cuda/norm.cu — normalisation kernels. Deterministic: no atomics; the chunk count per group
 * depends only on the shape. */
#include "nn/cuda/norm.cuh"

#define NORM_THREADS 256
#define CHUNK (NORM_THREADS * 16)

static int64_t splits_for(int64_t len)
{
    int64_t s = (len + CHUNK - 1) / CHUNK;
    return s < 1 ? 1 : (s > 256 ? 256 : s);
}

static void norm_dims(const nn_node *n, int64_t *NG, int64_t *len, int64_t *C, int64_t *S,
                      int64_t *G)
{
    const nn_tensor *x = n->in[0];
    *C = x->shape[1];
    *S = nn__numel(x) / (x->shape[0] * *C);
    *G = n->op.type == NN_OP_GROUP_NORM ? n->op.groups : *C;
    *NG = x->shape[0] * *G;
    *len = (*C / *G) * *S;
}

size_t nn__cuda_norm_ws(const nn_node *n)
{
    if (n->op.type == NN_OP_BATCH_NORM) return 0;
    int64_t NG, len, C, S, G;
    norm_dims(n, &NG, &len, &C, &S, &G);
    return sizeof(float) * (size_t)(NG * splits_for(len) * 2 + NG * 2);
}

template <typename T>
static __global__ void stats_partial_kernel(const T *x, int64_t len, int64_t splits, float *part)
{
    __shared__ float s1[NORM_THREADS], s2[NORM_THREADS];
    int64_t g = blockIdx.y, sp = blockIdx.x;
    const T *xg = x + g * len;
    float k = ld(xg);
    int64_t per = (len + splits - 1) / splits, b0 = sp * per, b1 = b0 + per < len ? b0 + per : len;
    float a = 0.f, q = 0.f;
    for (int64_t i = b0 + threadIdx.x; i < b1; i += blockDim.x) {
        float d = ld(xg + i) - k;
        a += d;
        q += d * d;
    }
    s1[threadIdx.x] = a;
    s2[threadIdx.x] = q;
    __syncthreads();
    for (int o = blockDim.x / 2; o > 0; o >>= 1) {
        if ((int)threadIdx.x < o) {
            s1[threadIdx.x] += s1[threadIdx.x + o];
            s2[threadIdx.x] += s2[threadIdx.x + o];
        }
        __syncthreads();
    }
    if (threadIdx.x == 0) {
        part[(g * splits + sp) * 2] = s1[0];
        part[(g * splits + sp) * 2 + 1] = s2[0];
    }
}

template <typename T>
static __global__ void stats_final_kernel(const T *x, const float *part, int64_t NG, int64_t len,
                                          int64_t splits, float eps, float *stats)
{
    int64_t g = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    if (g >= NG) return;
    double a = 0, q = 0;
    for (int64_t s = 0; s < splits; s++) {
        a += part[(g * splits + s) * 2];
        q += part[(g * splits + s) * 2 + 1];
    }
    double md = a / (double)len;                      /* mean of (x - k) */
    double var = q / (double)len - md * md;
    if (var < 0) var = 0;
    stats[g * 2] = (float)(md + (double)ld(x + g * len));
    stats[g * 2 + 1] = (float)(1.0 / sqrt(var + (double)eps));
}

template <typename T>
static __global__ void norm_apply_kernel(const T *x, T *y, const float *stats, const float *w,
                                         const float *bb, int64_t C, int64_t S, int64_t G,
                                         int64_t n, int act, float slope)
{
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)blockDim.x * gridDim.x) {
        int64_t c = (i / S) % C, img = i / (S * C), g = img * G + c / (C / G);
        float sc = stats[g * 2 + 1] * (w ? w[c] : 1.f);
        float sh = (bb ? bb[c] : 0.f) - stats[g * 2] * sc;
        st(y + i, act_apply(ld(x + i) * sc + sh, act, slope));
    }
}

template <typename T>
static __global__ void bn_kernel(const T *x, T *y, const float *mean, const float *var,
                                 const float *w, const float *bb, float eps, int64_t C, int64_t S,
                                 int64_t n, int act, float slope)
{
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)blockDim.x * gridDim.x) {
        int64_t c = (i / S) % C;
        float a = (w ? w[c] : 1.f) / sqrtf(var[c] + eps);
        float b = (bb ? bb[c] : 0.f) - mean[c] * a;
        st(y + i, act_apply(ld(x + i) * a + b, act, slope));
    }
}

template <typename T>
static void norm_launch(const nn_node *n, float *ws, cudaStream_t s)
{
    const T *x = (const T *)n->in[0]->data;
    T *y = (T *)n->out->data;
    int64_t total = nn__numel(n->in[0]);
    if (n->op.type == NN_OP_BATCH_NORM) {
        int64_t C = n->in[0]->shape[1], S = total / (n->in[0]->shape[0] * C);
        bn_kernel<T><<<nn__cuda_blocks(total, 256), 256, 0, s>>>(
            x, y, (const float *)n->in[1]->data, (const float *)n->in[2]->data,
            n->n_in > 3 ? (const float *)n->in[3]->data : NULL,
            n->n_in > 4 ? (const float *)n->in[4]->data : NULL, n->op.eps, C, S, total, n->op.act,
            n->op.slope);
        return;
    }
    int64_t NG, len, C, S, G;
    norm_dims(n, &NG, &len, &C, &S, &G);
    int64_t splits = splits_for(len);
    float *part = ws, *stats = ws + NG * splits * 2;
    stats_partial_kernel<T><<<dim3((unsigned)splits, (unsigned)NG), NORM_THREADS, 0, s>>>(
        x, len, splits, part);
    stats_final_kernel<T><<<nn__cuda_blocks(NG, 128), 128, 0, s>>>(x, part, NG, len, splits,
                                                                   n->op.eps, stats);
    norm_apply_kernel<T><<<nn__cuda_blocks(total, 256), 256, 0, s>>>(
        x, y, stats, n->n_in > 1 ? (const float *)n->in[1]->data : NULL,
        n->n_in > 2 ? (const float *)n->in[2]->data : NULL, C, S, G, total, n->op.act,
        n->op.slope);
}

int nn__cuda_norm(nn_cuda *b, nn_node *n, void *ws, size_t ws_bytes, char *err, size_t errlen)
{
    if (ws_bytes < nn__cuda_norm_ws(n))
        return sn_errf(err, errlen, SN_EINTERNAL, "norm: workspace too small");
    if (n->in[0]->dtype == NN_F16) norm_launch<__half>(n, (float *)ws, b->stream);
    else norm_launch<float>(n, (float *)ws, b->stream);
    CUDA_LAUNCHED("normalisation");
    return 0;
}
