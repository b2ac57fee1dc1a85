/* nn/cuda/unary.cu — one grid-stride kernel for the element-wise unary ops. */
#include "nn/cuda/unary.cuh"

template <typename T>
static __global__ void unary_kernel(const T *x, T *y, int64_t n, int op, float slope, float alpha,
                                    float beta)
{
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)blockDim.x * gridDim.x) {
        float v = ld(x + i);
        if (op == NN_OP_RELU) v = v > 0.f ? v : 0.f;
        else if (op == NN_OP_LEAKY_RELU) v = v > 0.f ? v : v * slope;
        else if (op == NN_OP_SIGMOID) v = 1.f / (1.f + expf(-v));
        else if (op == NN_OP_SCALE_SHIFT) v = v * alpha + beta;
        st(y + i, v);
    }
}

template <typename T>
static void unary_launch(const nn_node *n, cudaStream_t s)
{
    int64_t cnt = nn__numel(n->out);
    unary_kernel<T><<<nn__cuda_blocks(cnt, 256), 256, 0, s>>>(
        (const T *)n->in[0]->data, (T *)n->out->data, cnt, (int)n->op.type, n->op.slope,
        n->op.alpha, n->op.beta);
}

int nn__cuda_unary(nn_cuda *b, nn_node *n, char *err, size_t errlen)
{
    if (n->op.type == NN_OP_RESHAPE) {
        CUDA_TRY(cudaMemcpyAsync(n->out->data, n->in[0]->data, n->out->nbytes,
                                 cudaMemcpyDeviceToDevice, b->stream), "reshape");
        return 0;
    }
    if (n->out->dtype == NN_F16) unary_launch<__half>(n, b->stream);
    else unary_launch<float>(n, b->stream);
    CUDA_LAUNCHED(nn_op_name(n->op.type));
    return 0;
}
