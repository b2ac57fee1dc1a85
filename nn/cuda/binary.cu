/* nn/cuda/binary.cu — broadcasting add / mul: output index decomposed over 5 dims, inputs read
 * through strides that are 0 along broadcast dims. */
#include "nn/cuda/binary.cuh"

typedef struct bshape {
    int64_t os[NN_MAX_DIMS], as[NN_MAX_DIMS], bs[NN_MAX_DIMS];
    int nd;
} bshape;

template <typename TA, typename TB, typename T>
static __global__ void binary_kernel(const TA *a, const TB *b, T *y, int64_t n, bshape sh, int mul)
{
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)blockDim.x * gridDim.x) {
        int64_t rem = i, ao = 0, bo = 0;
        for (int d = sh.nd - 1; d >= 0; d--) {
            int64_t q = rem % sh.os[d];
            rem /= sh.os[d];
            ao += q * sh.as[d];
            bo += q * sh.bs[d];
        }
        float va = ld(a + ao), vb = ld(b + bo);
        st(y + i, mul ? va * vb : va + vb);
    }
}

static void strides_for(const nn_tensor *t, int nd, int64_t *st_)
{
    int64_t s = 1;
    for (int d = nd - 1; d >= 0; d--) {
        int td = d - (nd - t->ndim);
        int64_t dim = td >= 0 ? t->shape[td] : 1;
        st_[d] = dim == 1 ? 0 : s;
        s *= dim;
    }
}

template <typename T>
static void binary_launch(const nn_node *n, const bshape &sh, cudaStream_t s)
{
    int64_t cnt = nn__numel(n->out);
    int mul = n->op.type == NN_OP_MUL;
    /* a constant operand (a graph parameter) stays float32 in an fp16 session */
    const nn_tensor *a = n->in[0], *b = n->in[1];
    unsigned g = nn__cuda_blocks(cnt, 256);
    if (a->dtype == NN_F32 && b->dtype == NN_F32)
        binary_kernel<float, float, T><<<g, 256, 0, s>>>((const float *)a->data,
            (const float *)b->data, (T *)n->out->data, cnt, sh, mul);
    else if (a->dtype == NN_F32)
        binary_kernel<float, __half, T><<<g, 256, 0, s>>>((const float *)a->data,
            (const __half *)b->data, (T *)n->out->data, cnt, sh, mul);
    else if (b->dtype == NN_F32)
        binary_kernel<__half, float, T><<<g, 256, 0, s>>>((const __half *)a->data,
            (const float *)b->data, (T *)n->out->data, cnt, sh, mul);
    else
        binary_kernel<__half, __half, T><<<g, 256, 0, s>>>((const __half *)a->data,
            (const __half *)b->data, (T *)n->out->data, cnt, sh, mul);
}

int nn__cuda_binary(nn_cuda *b, nn_node *n, char *err, size_t errlen)
{
    bshape sh;
    sh.nd = n->out->ndim;
    for (int d = 0; d < sh.nd; d++) sh.os[d] = n->out->shape[d];
    strides_for(n->in[0], sh.nd, sh.as);
    strides_for(n->in[1], sh.nd, sh.bs);
    if (n->out->dtype == NN_F16) binary_launch<__half>(n, sh, b->stream);
    else binary_launch<float>(n, sh, b->stream);
    CUDA_LAUNCHED(nn_op_name(n->op.type));
    return 0;
}
