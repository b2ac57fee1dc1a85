/* nn/cuda/backend.cu — the CUDA backend's table: device memory (tracked for figures), one
 * stream per backend (so one per inference), cuDNN and cuBLAS handles bound to it, uploads and
 * downloads through a pinned staging buffer (with fp16 conversion on the host), and dispatch of
 * each node to its op file. Every CUDA / cuDNN / cuBLAS failure becomes a status with a message;
 * nothing here aborts. Not thread-safe: one backend per thread. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nn/cuda/binary.cuh"
#include "nn/cuda/common.cuh"
#include "nn/cuda/concat.cuh"
#include "nn/cuda/conv.cuh"
#include "nn/cuda/convert.cuh"
#include "nn/cuda/linear.cuh"
#include "nn/cuda/norm.cuh"
#include "nn/cuda/pool.cuh"
#include "nn/cuda/reg.cuh"
#include "nn/cuda/softmax.cuh"
#include "nn/cuda/unary.cuh"
#include "nn/cuda/upsample.cuh"

int nn__cuda_err(cudaError_t e, const char *what, char *err, size_t errlen)
{
    int st_ = e == cudaErrorMemoryAllocation ? SN_ENOMEM : SN_EDEVICE;
    cudaGetLastError();   /* clear a non-sticky error so the backend stays usable */
    return sn_errf(err, errlen, st_, "CUDA: %s: %s", what, cudaGetErrorString(e));
}

int nn__cudnn_err(cudnnStatus_t s, const char *what, char *err, size_t errlen)
{
    int st_ = s == CUDNN_STATUS_ALLOC_FAILED ? SN_ENOMEM
            : s == CUDNN_STATUS_NOT_SUPPORTED ? SN_EUNSUPPORTED : SN_EDEVICE;
    return sn_errf(err, errlen, st_, "cuDNN: %s: %s", what, cudnnGetErrorString(s));
}

int nn__cublas_err(cublasStatus_t s, const char *what, char *err, size_t errlen)
{
    int st_ = s == CUBLAS_STATUS_ALLOC_FAILED ? SN_ENOMEM : SN_EDEVICE;
    return sn_errf(err, errlen, st_, "cuBLAS: %s: status %d", what, (int)s);
}

static const char *cu_name(const nn_backend *b) { return ((const nn_cuda *)b)->name; }
static const char *cu_desc(const nn_backend *b) { return ((const nn_cuda *)b)->desc; }

static void cu_free(nn_backend *bb)
{
    nn_cuda *b = (nn_cuda *)bb;
    cudaSetDevice(b->device);
    if (b->stream) cudaStreamSynchronize(b->stream);
    for (int i = 0; i < b->n_allocs; i++) cudaFree(b->allocs[i].ptr);
    if (b->staging) cudaFreeHost(b->staging);
    if (b->cublas) cublasDestroy(b->cublas);
    if (b->cudnn) cudnnDestroy(b->cudnn);
    if (b->stream) cudaStreamDestroy(b->stream);
    free(b->allocs);
    free(b);
}

static int cu_alloc(nn_backend *bb, size_t bytes, void **ptr, char *err, size_t errlen)
{
    nn_cuda *b = (nn_cuda *)bb;
    *ptr = NULL;
    if (b->n_allocs == b->cap_allocs) {
        int cap = b->cap_allocs ? 2 * b->cap_allocs : 256;
        nn_cuda_alloc *a = (nn_cuda_alloc *)realloc(b->allocs, sizeof *a * (size_t)cap);
        if (!a) return sn_errf(err, errlen, SN_ENOMEM, "out of host memory");
        b->allocs = a;
        b->cap_allocs = cap;
    }
    cudaError_t e = cudaMalloc(ptr, bytes ? bytes : 16);
    if (e != cudaSuccess) {
        cudaGetLastError();
        size_t fr = 0, tot = 0;
        cudaMemGetInfo(&fr, &tot);
        return sn_errf(err, errlen, e == cudaErrorMemoryAllocation ? SN_ENOMEM : SN_EDEVICE,
                       "GPU out of memory: cannot allocate %.1f MiB (%.1f MiB free of %.1f MiB, "
                       "%.1f MiB held by this backend): %s", (double)bytes / 1048576.0,
                       (double)fr / 1048576.0, (double)tot / 1048576.0,
                       (double)b->mem_cur / 1048576.0, cudaGetErrorString(e));
    }
    b->allocs[b->n_allocs].ptr = *ptr;
    b->allocs[b->n_allocs].size = bytes;
    b->n_allocs++;
    b->mem_cur += bytes;
    if (b->mem_cur > b->mem_peak) b->mem_peak = b->mem_cur;
    return 0;
}

static void cu_release(nn_backend *bb, void *ptr)
{
    nn_cuda *b = (nn_cuda *)bb;
    if (!ptr) return;
    for (int i = 0; i < b->n_allocs; i++)
        if (b->allocs[i].ptr == ptr) {
            cudaStreamSynchronize(b->stream);
            cudaFree(ptr);
            b->mem_cur -= b->allocs[i].size;
            b->allocs[i] = b->allocs[--b->n_allocs];
            return;
        }
}

static int staging(nn_cuda *b, size_t bytes, char *err, size_t errlen)
{
    if (b->staging_size >= bytes) return 0;
    if (b->staging) {
        CUDA_TRY(cudaStreamSynchronize(b->stream), "sync");
        cudaFreeHost(b->staging);
        b->staging = NULL;
        b->staging_size = 0;
    }
    CUDA_TRY(cudaMallocHost(&b->staging, bytes), "pinned staging buffer");
    b->staging_size = bytes;
    return 0;
}

static int cu_upload(nn_backend *bb, void *dst, const void *src, size_t bytes, char *err,
                     size_t errlen)
{
    nn_cuda *b = (nn_cuda *)bb;
    CUDA_TRY(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, b->stream), "upload");
    CUDA_TRY(cudaStreamSynchronize(b->stream), "upload");
    return 0;
}

static int cu_download(nn_backend *bb, void *dst, const void *src, size_t bytes, char *err,
                       size_t errlen)
{
    nn_cuda *b = (nn_cuda *)bb;
    CUDA_TRY(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, b->stream), "download");
    CUDA_TRY(cudaStreamSynchronize(b->stream), "download");
    return 0;
}

static int cu_upload_f32(nn_backend *bb, void *dst, nn_dtype dt, const float *src, int64_t n,
                         char *err, size_t errlen)
{
    nn_cuda *b = (nn_cuda *)bb;
    size_t bytes = (size_t)n * nn__dtype_size(dt);
    int rc = staging(b, bytes, err, errlen);
    if (rc) return rc;
    CUDA_TRY(cudaStreamSynchronize(b->stream), "sync");   /* staging may still be in flight */
    if (dt == NN_F32) memcpy(b->staging, src, bytes);
    else
        for (int64_t i = 0; i < n; i++) ((uint16_t *)b->staging)[i] = nn_f32_to_f16(src[i]);
    CUDA_TRY(cudaMemcpyAsync(dst, b->staging, bytes, cudaMemcpyHostToDevice, b->stream), "upload");
    return 0;
}

static int cu_download_f32(nn_backend *bb, float *dst, const void *src, nn_dtype dt, int64_t n,
                           char *err, size_t errlen)
{
    nn_cuda *b = (nn_cuda *)bb;
    size_t bytes = (size_t)n * nn__dtype_size(dt);
    int rc = staging(b, bytes, err, errlen);
    if (rc) return rc;
    CUDA_TRY(cudaMemcpyAsync(b->staging, src, bytes, cudaMemcpyDeviceToHost, b->stream),
             "download");
    CUDA_TRY(cudaStreamSynchronize(b->stream), "download (a kernel before it may have failed)");
    if (dt == NN_F32) memcpy(dst, b->staging, bytes);
    else
        for (int64_t i = 0; i < n; i++) dst[i] = nn_f16_to_f32(((const uint16_t *)b->staging)[i]);
    return 0;
}

static int cu_sync(nn_backend *bb, char *err, size_t errlen)
{
    nn_cuda *b = (nn_cuda *)bb;
    CUDA_TRY(cudaStreamSynchronize(b->stream), "synchronize");
    return 0;
}

static int cu_prepare(nn_backend *bb, nn_node *n, size_t *ws, char *err, size_t errlen)
{
    nn_cuda *b = (nn_cuda *)bb;
    *ws = 0;
    switch (n->op.type) {
    case NN_OP_CONV:
    case NN_OP_CONV_TRANSPOSE: return nn__cuda_conv_prepare(b, n, ws, err, errlen);
    case NN_OP_INSTANCE_NORM:
    case NN_OP_GROUP_NORM: *ws = nn__cuda_norm_ws(n); return 0;
    case NN_OP_MIND_SSC: *ws = nn__cuda_reg_ws(n); return 0;
    default: return 0;
    }
}

static void cu_node_release(nn_backend *bb, nn_node *n)
{
    if (n->op.type == NN_OP_CONV || n->op.type == NN_OP_CONV_TRANSPOSE)
        nn__cuda_conv_release((nn_cuda *)bb, n);
}

static int cu_run(nn_backend *bb, nn_node *n, void *ws, size_t ws_bytes, char *err,
                  size_t errlen)
{
    nn_cuda *b = (nn_cuda *)bb;
    switch (n->op.type) {
    case NN_OP_CONV:
    case NN_OP_CONV_TRANSPOSE: return nn__cuda_conv(b, n, ws, ws_bytes, err, errlen);
    case NN_OP_LINEAR: return nn__cuda_linear(b, n, err, errlen);
    case NN_OP_BATCH_NORM:
    case NN_OP_INSTANCE_NORM:
    case NN_OP_GROUP_NORM: return nn__cuda_norm(b, n, ws, ws_bytes, err, errlen);
    case NN_OP_RELU:
    case NN_OP_LEAKY_RELU:
    case NN_OP_SIGMOID:
    case NN_OP_SCALE_SHIFT:
    case NN_OP_RESHAPE: return nn__cuda_unary(b, n, err, errlen);
    case NN_OP_SOFTMAX:
    case NN_OP_ARGMAX: return nn__cuda_softmax(b, n, err, errlen);
    case NN_OP_ADD:
    case NN_OP_MUL: return nn__cuda_binary(b, n, err, errlen);
    case NN_OP_CONCAT: return nn__cuda_concat(b, n, err, errlen);
    case NN_OP_MAX_POOL:
    case NN_OP_AVG_POOL:
    case NN_OP_GLOBAL_AVG_POOL: return nn__cuda_pool(b, n, err, errlen);
    case NN_OP_UPSAMPLE_NEAREST:
    case NN_OP_UPSAMPLE_LINEAR: return nn__cuda_upsample(b, n, err, errlen);
    case NN_OP_MIND_SSC:
    case NN_OP_WARP:
    case NN_OP_SSD_COST:
    case NN_OP_WARP_SSD_GRAD: return nn__cuda_reg(b, n, ws, ws_bytes, err, errlen);
    default:
        return sn_errf(err, errlen, SN_EUNSUPPORTED, "cuda: op %s not implemented",
                       nn_op_name(n->op.type));
    }
}

static int cu_supports(nn_backend *bb, const nn_node *n, nn_precision prec)
{
    (void)bb;
    if (n->op.type >= NN_OP_MIND_SSC && n->op.type <= NN_OP_WARP_SSD_GRAD)
        return prec == NN_PREC_FP32;   /* registration ops: float32 only */
    return n->op.type < NN_OP_COUNT && (n->op.type != NN_OP_CONV || n->op.groups == 1);
}

static void cu_memory(const nn_backend *bb, size_t *cur, size_t *peak)
{
    const nn_cuda *b = (const nn_cuda *)bb;
    *cur = b->mem_cur;
    *peak = b->mem_peak;
}

/* cuBLAS GEMM 8192^3 timed with events: the card's practical matrix throughput. */
static int cu_gemm_tflops(nn_backend *bb, nn_precision prec, double *tflops, char *err,
                          size_t errlen)
{
    nn_cuda *b = (nn_cuda *)bb;
    const int n = 8192, reps = 10;
    size_t es = prec == NN_PREC_FP16 ? 2 : 4;
    void *a = NULL, *c = NULL, *d = NULL;
    cudaEvent_t e0 = NULL, e1 = NULL;
    cudaDataType_t dt = prec == NN_PREC_FP16 ? CUDA_R_16F : CUDA_R_32F;
    float one = 1.f, zero = 0.f, ms = 0.f;
    int rc = cu_alloc(bb, es * n * n, &a, err, errlen);
    if (!rc) rc = cu_alloc(bb, es * n * n, &c, err, errlen);
    if (!rc) rc = cu_alloc(bb, es * n * n, &d, err, errlen);
    if (!rc && (cudaMemsetAsync(a, 0, es * n * n, b->stream) != cudaSuccess ||
                cudaMemsetAsync(c, 0, es * n * n, b->stream) != cudaSuccess ||
                cudaEventCreate(&e0) != cudaSuccess || cudaEventCreate(&e1) != cudaSuccess))
        rc = sn_errf(err, errlen, SN_EDEVICE, "GEMM benchmark setup failed");
    for (int r = -1; !rc && r < reps; r++) {
        if (r == 0) cudaEventRecord(e0, b->stream);
        cublasStatus_t s = cublasGemmEx(b->cublas, CUBLAS_OP_N, CUBLAS_OP_N, n, n, n, &one, a, dt,
                                        n, c, dt, n, &zero, d, dt, n, CUBLAS_COMPUTE_32F,
                                        CUBLAS_GEMM_DEFAULT);
        if (s != CUBLAS_STATUS_SUCCESS) rc = nn__cublas_err(s, "GEMM benchmark", err, errlen);
    }
    if (!rc) {
        cudaEventRecord(e1, b->stream);
        cudaEventSynchronize(e1);
        cudaEventElapsedTime(&ms, e0, e1);
        *tflops = 2.0 * n * (double)n * n * reps / (ms * 1e-3) / 1e12;
    }
    if (e0) cudaEventDestroy(e0);
    if (e1) cudaEventDestroy(e1);
    cu_release(bb, a);
    cu_release(bb, c);
    cu_release(bb, d);
    return rc;
}

static const nn_backend_i g_cuda_iface = {
    cu_name, cu_desc, cu_free, cu_alloc, cu_release, cu_upload, cu_download, cu_upload_f32,
    cu_download_f32, cu_sync, cu_prepare, cu_node_release, cu_run, cu_supports, cu_memory,
    cu_gemm_tflops,
};

extern "C" {

int nn__cuda_available(void) { return 1; }

int nn__cuda_devices(char *why, size_t whylen)
{
    int count = 0;
    cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess) {
        cudaGetLastError();
        sn_errf(why, whylen, SN_EDEVICE, "%s", cudaGetErrorString(e));
        return 0;
    }
    if (count == 0) sn_errf(why, whylen, SN_EDEVICE, "0 devices");
    return count;
}

int nn__cuda_new(int device, nn_backend **out, char *err, size_t errlen)
{
    *out = NULL;
    int count = 0;
    cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess || count == 0) {
        cudaGetLastError();
        return sn_errf(err, errlen, SN_EDEVICE, "no CUDA device (%s)",
                       e != cudaSuccess ? cudaGetErrorString(e) : "0 devices");
    }
    if (device < 0 || device >= count)
        return sn_errf(err, errlen, SN_EINVAL, "CUDA device %d does not exist (%d found)", device,
                       count);
    nn_cuda *b = (nn_cuda *)calloc(1, sizeof *b);
    if (!b) return sn_errf(err, errlen, SN_ENOMEM, "out of memory");
    b->base.iface = &g_cuda_iface;
    b->device = device;
    int rc = 0;
    cudaDeviceProp prop;
    cudnnStatus_t ds;
    cublasStatus_t bs;
    if ((e = cudaSetDevice(device)) != cudaSuccess ||
        (e = cudaGetDeviceProperties(&prop, device)) != cudaSuccess ||
        (e = cudaStreamCreateWithFlags(&b->stream, cudaStreamNonBlocking)) != cudaSuccess) {
        rc = nn__cuda_err(e, "device setup", err, errlen);
        goto fail;
    }
    if ((ds = cudnnCreate(&b->cudnn)) != CUDNN_STATUS_SUCCESS ||
        (ds = cudnnSetStream(b->cudnn, b->stream)) != CUDNN_STATUS_SUCCESS) {
        rc = nn__cudnn_err(ds, "handle", err, errlen);
        goto fail;
    }
    if ((bs = cublasCreate(&b->cublas)) != CUBLAS_STATUS_SUCCESS ||
        (bs = cublasSetStream(b->cublas, b->stream)) != CUBLAS_STATUS_SUCCESS) {
        rc = nn__cublas_err(bs, "handle", err, errlen);
        goto fail;
    }
    snprintf(b->name, sizeof b->name, "cuda:%d", device);
    snprintf(b->desc, sizeof b->desc, "%.200s (sm_%d%d, %.1f GiB), cuDNN %zu", prop.name, prop.major,
             prop.minor, (double)prop.totalGlobalMem / 1073741824.0, cudnnGetVersion());
    *out = &b->base;
    return 0;
fail:
    cu_free(&b->base);
    return rc;
}

} /* extern "C" */
