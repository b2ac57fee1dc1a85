/* nn/cuda/softmax.cu — channel-wise softmax (max-subtracted, float math) and argmax (first
 * maximum wins, as PyTorch). Adjacent threads read adjacent voxels of one channel: coalesced. */
#include "nn/cuda/softmax.cuh"

template <typename T>
static __global__ void softmax_kernel(const T *x, T *y, int64_t N, int64_t C, int64_t S, int amax)
{
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < N * S;
         i += (int64_t)blockDim.x * gridDim.x) {
        int64_t img = i / S, s = i % S;
        const T *xi = x + img * C * S + s;
        float m = ld(xi);
        int best = 0;
        for (int64_t c = 1; c < C; c++) {
            float v = ld(xi + c * S);
            if (v > m) { m = v; best = (int)c; }
        }
        if (amax) {
            st(y + img * S + s, (float)best);
            continue;
        }
        float sum = 0.f;
        for (int64_t c = 0; c < C; c++) sum += expf(ld(xi + c * S) - m);
        T *yi = y + img * C * S + s;
        for (int64_t c = 0; c < C; c++) st(yi + c * S, expf(ld(xi + c * S) - m) / sum);
    }
}

template <typename T>
static void softmax_launch(const nn_node *n, cudaStream_t s)
{
    const nn_tensor *x = n->in[0];
    int64_t N = x->shape[0], C = x->shape[1], S = nn__numel(x) / (N * C);
    softmax_kernel<T><<<nn__cuda_blocks(N * S, 256), 256, 0, s>>>(
        (const T *)x->data, (T *)n->out->data, N, C, S, n->op.type == NN_OP_ARGMAX);
}

int nn__cuda_softmax(nn_cuda *b, nn_node *n, char *err, size_t errlen)
{
    if (n->out->dtype == NN_F16) softmax_launch<__half>(n, b->stream);
    else softmax_launch<float>(n, b->stream);
    CUDA_LAUNCHED(nn_op_name(n->op.type));
    return 0;
}
