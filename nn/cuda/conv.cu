/* nn/cuda/conv.cu — cuDNN convolutions. A node's plan holds its descriptors and the chosen
 * algorithm; the algorithm comes from the backend's per-shape cache, filled by
 * cudnnFindConvolution*Algorithm the first time a shape is seen. Transposed convolution is
 * cuDNN's backward-data of the forward convolution whose filter is PyTorch's [Ci, Co, k] weight. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nn/cuda/conv.cuh"

#define WS_LIMIT ((size_t)2 << 30)   /* never pick an algorithm needing more than 2 GiB */

typedef struct conv_plan {
    cudnnTensorDescriptor_t x, y;
    cudnnFilterDescriptor_t w;
    cudnnConvolutionDescriptor_t conv;
    int algo;
    size_t ws;
} conv_plan;

template <typename T>
static __global__ void bias_act_kernel(T *y, const T *bias, int64_t C, int64_t S, int64_t n,
                                       int act, float slope)
{
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)blockDim.x * gridDim.x) {
        float v = ld(y + i);
        if (bias) v += ld(bias + (i / S) % C);
        st(y + i, act_apply(v, act, slope));
    }
}

template <typename T>
static void bias_act_launch(T *y, const T *bias, int64_t C, int64_t S, int64_t n, int act,
                            float slope, cudaStream_t s)
{
    bias_act_kernel<T><<<nn__cuda_blocks(n, 256), 256, 0, s>>>(y, bias, C, S, n, act, slope);
}

static int set_tensor(cudnnTensorDescriptor_t d, const nn_tensor *t, cudnnDataType_t dt,
                      char *err, size_t errlen)
{
    int dims[NN_MAX_DIMS], strides[NN_MAX_DIMS];
    int nd = t->ndim;
    for (int i = 0; i < nd; i++) dims[i] = (int)t->shape[i];
    strides[nd - 1] = 1;
    for (int i = nd - 2; i >= 0; i--) strides[i] = strides[i + 1] * dims[i + 1];
    CUDNN_TRY(cudnnSetTensorNdDescriptor(d, dt, nd, dims, strides), "tensor descriptor");
    return 0;
}

void nn__cuda_conv_release(nn_cuda *b, nn_node *n)
{
    (void)b;
    conv_plan *p = (conv_plan *)n->plan;
    if (!p) return;
    if (p->x) cudnnDestroyTensorDescriptor(p->x);
    if (p->y) cudnnDestroyTensorDescriptor(p->y);
    if (p->w) cudnnDestroyFilterDescriptor(p->w);
    if (p->conv) cudnnDestroyConvolutionDescriptor(p->conv);
    free(p);
    n->plan = NULL;
}

static void make_key(const nn_node *n, char *key, size_t len)
{
    const nn_tensor *x = n->in[0], *w = n->in[1];
    int o = snprintf(key, len, "%d%d|", (int)n->op.type, (int)x->dtype);
    for (int i = 0; i < x->ndim; i++) o += snprintf(key + o, len - (size_t)o, "%lld,", (long long)x->shape[i]);
    for (int i = 0; i < w->ndim; i++) o += snprintf(key + o, len - (size_t)o, "%lld.", (long long)w->shape[i]);
    for (int i = 0; i < x->ndim - 2; i++)
        o += snprintf(key + o, len - (size_t)o, "%d/%d/%d/%d;", n->op.stride[i], n->op.pad[i],
                      n->op.dilation[i], n->op.out_pad[i]);
}

int nn__cuda_conv_prepare(nn_cuda *b, nn_node *n, size_t *ws, char *err, size_t errlen)
{
    const nn_tensor *x = n->in[0], *w = n->in[1];
    nn_tensor *y = n->out;
    int tr = n->op.type == NN_OP_CONV_TRANSPOSE, nsp = x->ndim - 2;
    cudnnDataType_t dt = x->dtype == NN_F16 ? CUDNN_DATA_HALF : CUDNN_DATA_FLOAT;
    if (w->dtype != x->dtype)
        return sn_errf(err, errlen, SN_EINVAL, "conv: weight and input dtypes differ");
    conv_plan *p = (conv_plan *)calloc(1, sizeof *p);
    if (!p) return sn_errf(err, errlen, SN_ENOMEM, "out of memory");
    n->plan = p;
    CUDNN_TRY(cudnnCreateTensorDescriptor(&p->x), "descriptor");
    CUDNN_TRY(cudnnCreateTensorDescriptor(&p->y), "descriptor");
    CUDNN_TRY(cudnnCreateFilterDescriptor(&p->w), "descriptor");
    CUDNN_TRY(cudnnCreateConvolutionDescriptor(&p->conv), "descriptor");
    /* forward view: "fx" --conv(w)--> "fy"; transposed: fx = y (Co), fy = x (Ci) */
    const nn_tensor *fx = tr ? y : x, *fy = tr ? x : y;
    int rc = set_tensor(p->x, fx, dt, err, errlen);
    if (!rc) rc = set_tensor(p->y, fy, dt, err, errlen);
    if (rc) return rc;
    int wd[NN_MAX_DIMS], pad[3], str[3], dil[3];
    for (int i = 0; i < w->ndim; i++) wd[i] = (int)w->shape[i];
    for (int i = 0; i < nsp; i++) {
        pad[i] = n->op.pad[i];
        str[i] = n->op.stride[i];
        dil[i] = n->op.dilation[i];
    }
    CUDNN_TRY(cudnnSetFilterNdDescriptor(p->w, dt, CUDNN_TENSOR_NCHW, w->ndim, wd), "filter");
    CUDNN_TRY(cudnnSetConvolutionNdDescriptor(p->conv, nsp, pad, str, dil,
                                              CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT),
              "convolution descriptor");
    /* fp32: FMA only (no TF32) so results match the CPU; fp16: Tensor Cores */
    CUDNN_TRY(cudnnSetConvolutionMathType(p->conv, x->dtype == NN_F16 ? CUDNN_TENSOR_OP_MATH
                                                                       : CUDNN_FMA_MATH),
              "math type");
    char key[160];
    make_key(n, key, sizeof key);
    for (int i = 0; i < b->n_algos; i++)
        if (!strcmp(b->algos[i].key, key)) {
            p->algo = b->algos[i].algo;
            p->ws = b->algos[i].ws;
            *ws = p->ws;
            return 0;
        }
    int found = 0, best = -1;
    size_t best_ws = 0;
    if (!tr) {
        cudnnConvolutionFwdAlgoPerf_t perf[CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
        CUDNN_TRY(cudnnFindConvolutionForwardAlgorithm(b->cudnn, p->x, p->w, p->conv, p->y,
                                                       CUDNN_CONVOLUTION_FWD_ALGO_COUNT, &found,
                                                       perf),
                  "algorithm search (forward)");
        for (int i = 0; i < found && best < 0; i++)
            if (perf[i].status == CUDNN_STATUS_SUCCESS && perf[i].memory <= WS_LIMIT &&
                (x->dtype == NN_F16 || perf[i].mathType != CUDNN_TENSOR_OP_MATH)) {
                best = (int)perf[i].algo;
                best_ws = perf[i].memory;
            }
    } else {
        cudnnConvolutionBwdDataAlgoPerf_t perf[CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT];
        CUDNN_TRY(cudnnFindConvolutionBackwardDataAlgorithm(b->cudnn, p->w, p->y, p->conv, p->x,
                                                            CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT,
                                                            &found, perf),
                  "algorithm search (backward data)");
        for (int i = 0; i < found && best < 0; i++)
            if (perf[i].status == CUDNN_STATUS_SUCCESS && perf[i].memory <= WS_LIMIT &&
                (x->dtype == NN_F16 || perf[i].mathType != CUDNN_TENSOR_OP_MATH)) {
                best = (int)perf[i].algo;
                best_ws = perf[i].memory;
            }
    }
    if (best < 0) return sn_errf(err, errlen, SN_EUNSUPPORTED, "cuDNN has no algorithm for %s", key);
    p->algo = best;
    p->ws = best_ws;
    *ws = best_ws;
    if (b->n_algos < NN_CUDA_ALGO_CACHE) {
        nn_cuda_algo *a = &b->algos[b->n_algos++];
        snprintf(a->key, sizeof a->key, "%s", key);
        a->algo = best;
        a->ws = best_ws;
    }
    return 0;
}

int nn__cuda_conv(nn_cuda *b, nn_node *n, void *ws, size_t ws_bytes, char *err, size_t errlen)
{
    conv_plan *p = (conv_plan *)n->plan;
    const nn_tensor *x = n->in[0], *w = n->in[1];
    nn_tensor *y = n->out;
    float one = 1.f, zero = 0.f;
    if (ws_bytes < p->ws) return sn_errf(err, errlen, SN_EINTERNAL, "conv: workspace too small");
    if (n->op.type == NN_OP_CONV)
        CUDNN_TRY(cudnnConvolutionForward(b->cudnn, &one, p->x, x->data, p->w, w->data, p->conv,
                                          (cudnnConvolutionFwdAlgo_t)p->algo, ws, p->ws, &zero,
                                          p->y, y->data),
                  "convolution");
    else
        CUDNN_TRY(cudnnConvolutionBackwardData(b->cudnn, &one, p->w, w->data, p->y, x->data,
                                               p->conv, (cudnnConvolutionBwdDataAlgo_t)p->algo,
                                               ws, p->ws, &zero, p->x, y->data),
                  "transposed convolution");
    const void *bias = n->n_in > 2 ? n->in[2]->data : NULL;
    if (bias || n->op.act) {
        int64_t C = y->shape[1], S = nn__numel(y) / (y->shape[0] * C);
        if (y->dtype == NN_F16)
            bias_act_launch((__half *)y->data, (const __half *)bias, C, S, nn__numel(y),
                            n->op.act, n->op.slope, b->stream);
        else
            bias_act_launch((float *)y->data, (const float *)bias, C, S, nn__numel(y), n->op.act,
                            n->op.slope, b->stream);
        CUDA_LAUNCHED("bias/activation");
    }
    return 0;
}
