/* nn/cuda/common.cuh — private to the CUDA backend: its struct (stream, cuDNN and cuBLAS
 * handles, algorithm cache, staging buffer, memory figures), error-to-status helpers and the
 * float / half load-store helpers every kernel uses. Only the .cu files of nn/cuda include it. */
#ifndef SEGNODE_NN_CUDA_COMMON_CUH
#define SEGNODE_NN_CUDA_COMMON_CUH

#include <cublas_v2.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <cudnn.h>

extern "C" {
#include "common/status.h"   /* a C header without its own extern "C" guard */
}
#include "nn/nnInt.h"

#define NN_CUDA_ALGO_CACHE 512

typedef struct nn_cuda_algo {
    char key[160];          /* shape + params + dtype */
    int algo;               /* cudnnConvolutionFwdAlgo_t or BwdDataAlgo_t */
    size_t ws;
} nn_cuda_algo;

typedef struct nn_cuda_alloc {
    void *ptr;
    size_t size;
} nn_cuda_alloc;

typedef struct nn_cuda {
    nn_backend base;
    int device;
    cudaStream_t stream;
    cudnnHandle_t cudnn;
    cublasHandle_t cublas;
    char name[32], desc[256];
    nn_cuda_algo algos[NN_CUDA_ALGO_CACHE];   /* algorithm search results, per shape */
    int n_algos;
    void *staging;          /* pinned host buffer for dtype conversion on upload/download */
    size_t staging_size;
    nn_cuda_alloc *allocs;  /* live device allocations (for figures and release) */
    int n_allocs, cap_allocs;
    size_t mem_cur, mem_peak;
} nn_cuda;

/* cudaError_t / cudnnStatus_t / cublasStatus_t -> status with err filled. */
int nn__cuda_err(cudaError_t e, const char *what, char *err, size_t errlen);
int nn__cudnn_err(cudnnStatus_t s, const char *what, char *err, size_t errlen);
int nn__cublas_err(cublasStatus_t s, const char *what, char *err, size_t errlen);

#define CUDA_TRY(call, what)                                                     \
    do {                                                                         \
        cudaError_t e_ = (call);                                                 \
        if (e_ != cudaSuccess) return nn__cuda_err(e_, what, err, errlen);       \
    } while (0)
#define CUDNN_TRY(call, what)                                                    \
    do {                                                                         \
        cudnnStatus_t s_ = (call);                                               \
        if (s_ != CUDNN_STATUS_SUCCESS) return nn__cudnn_err(s_, what, err, errlen); \
    } while (0)
#define CUBLAS_TRY(call, what)                                                   \
    do {                                                                         \
        cublasStatus_t s_ = (call);                                              \
        if (s_ != CUBLAS_STATUS_SUCCESS) return nn__cublas_err(s_, what, err, errlen); \
    } while (0)
/* after a kernel launch */
#define CUDA_LAUNCHED(what) CUDA_TRY(cudaGetLastError(), what)

static __device__ __forceinline__ float ld(const float *p) { return *p; }
static __device__ __forceinline__ float ld(const __half *p) { return __half2float(*p); }
static __device__ __forceinline__ void st(float *p, float v) { *p = v; }
static __device__ __forceinline__ void st(__half *p, float v) { *p = __float2half_rn(v); }

static __device__ __forceinline__ float act_apply(float v, int act, float slope)
{
    if (act == NN_ACT_RELU) return v > 0.f ? v : 0.f;
    if (act == NN_ACT_LEAKY_RELU) return v > 0.f ? v : v * slope;
    if (act == NN_ACT_SIGMOID) return 1.f / (1.f + expf(-v));
    return v;
}

static inline unsigned nn__cuda_blocks(int64_t n, int threads)
{
    int64_t b = (n + threads - 1) / threads;
    return (unsigned)(b < 65535 * 16 ? (b < 1 ? 1 : b) : 65535 * 16);
}

/* Spatial sizes padded to 3 with leading 1s; returns the number of spatial dims. */
static inline int nn__cuda_sp3(const nn_tensor *t, int64_t sp[3])
{
    int nsp = t->ndim - 2;
    for (int i = 0; i < 3; i++) sp[i] = 1;
    for (int i = 0; i < nsp; i++) sp[3 - nsp + i] = t->shape[2 + i];
    return nsp;
}

#endif
