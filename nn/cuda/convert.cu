/* nn/cuda/convert.cu — element-wise dtype conversion on the backend's stream. */
#include "nn/cuda/convert.cuh"

template <typename S, typename D>
static __global__ void convert_kernel(D *dst, const S *src, int64_t n)
{
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)blockDim.x * gridDim.x)
        st(dst + i, ld(src + i));
}

template <typename S, typename D>
static void convert_launch(D *dst, const S *src, int64_t n, cudaStream_t s)
{
    convert_kernel<S, D><<<nn__cuda_blocks(n, 256), 256, 0, s>>>(dst, src, n);
}

int nn__cuda_convert(nn_cuda *b, void *dst, nn_dtype dd, const void *src, nn_dtype sd, int64_t n,
                     char *err, size_t errlen)
{
    if (dd == sd) {
        CUDA_TRY(cudaMemcpyAsync(dst, src, (size_t)n * nn__dtype_size(dd),
                                 cudaMemcpyDeviceToDevice, b->stream), "copy");
        return 0;
    }
    if (dd == NN_F16) convert_launch((__half *)dst, (const float *)src, n, b->stream);
    else convert_launch((float *)dst, (const __half *)src, n, b->stream);
    CUDA_LAUNCHED("convert");
    return 0;
}
