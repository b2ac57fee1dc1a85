/* nn/cuda/linear.cu — y[rows, co] = x[rows, ci] w[co, ci]^T + b, as a column-major GEMM
 * y^T = w x^T (cuBLAS is column-major; the row-major buffers are their transposes). */
#include "nn/cuda/linear.cuh"

template <typename T>
static __global__ void linear_bias_kernel(T *y, const T *bias, int64_t co, int64_t n, int act,
                                          float slope)
{
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)blockDim.x * gridDim.x) {
        float v = ld(y + i);
        if (bias) v += ld(bias + i % co);
        st(y + i, act_apply(v, act, slope));
    }
}

template <typename T>
static void linear_bias_launch(T *y, const T *bias, int64_t co, int64_t n, int act, float slope,
                               cudaStream_t s)
{
    linear_bias_kernel<T><<<nn__cuda_blocks(n, 256), 256, 0, s>>>(y, bias, co, n, act, slope);
}

int nn__cuda_linear(nn_cuda *b, nn_node *n, char *err, size_t errlen)
{
    const nn_tensor *x = n->in[0], *w = n->in[1];
    nn_tensor *y = n->out;
    int64_t ci = w->shape[1], co = w->shape[0], rows = nn__numel(x) / ci;
    cudaDataType_t dt = x->dtype == NN_F16 ? CUDA_R_16F : CUDA_R_32F;
    float one = 1.f, zero = 0.f;
    CUBLAS_TRY(cublasGemmEx(b->cublas, CUBLAS_OP_T, CUBLAS_OP_N, (int)co, (int)rows, (int)ci,
                            &one, w->data, dt, (int)ci, x->data, dt, (int)ci, &zero, y->data, dt,
                            (int)co, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
               "linear (GEMM)");
    const void *bias = n->n_in > 2 ? n->in[2]->data : NULL;
    if (bias || n->op.act) {
        if (y->dtype == NN_F16)
            linear_bias_launch((__half *)y->data, (const __half *)bias, co, nn__numel(y),
                               n->op.act, n->op.slope, b->stream);
        else
            linear_bias_launch((float *)y->data, (const float *)bias, co, nn__numel(y), n->op.act,
                               n->op.slope, b->stream);
        CUDA_LAUNCHED("linear bias");
    }
    return 0;
}
