/* nn/cpu/cpu.c — the CPU backend's table: host memory (64-byte aligned), copies, and dispatch of
 * each node to its op in conv.c / ops.c. Computes in float32 only; a session asking for FP16 on
 * this backend runs in FP32. Threads: OpenBLAS's for GEMMs, nn/cpu/pool.c for the rest. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cblas.h>

#include "common/status.h"
#include "nn/cpu/cpu.h"

static const char *cpu_name(const nn_backend *b) { (void)b; return "cpu"; }
static const char *cpu_desc(const nn_backend *b) { return ((const cpu_backend *)b)->desc; }

static void cpu_free(nn_backend *b)
{
    cpu_backend *c = (cpu_backend *)b;
    nn__pool_free(c->pool);
    free(c);
}

static int cpu_alloc(nn_backend *b, size_t bytes, void **ptr, char *err, size_t errlen)
{
    (void)b;
    *ptr = NULL;
    if (posix_memalign(ptr, 64, (bytes + 63) & ~(size_t)63))
        return sn_errf(err, errlen, SN_ENOMEM, "cpu: cannot allocate %.1f MiB",
                       (double)bytes / 1048576.0);
    return 0;
}

static void cpu_release(nn_backend *b, void *ptr) { (void)b; free(ptr); }

static int cpu_copy(nn_backend *b, void *dst, const void *src, size_t bytes, char *err,
                    size_t errlen)
{
    (void)b; (void)err; (void)errlen;
    memcpy(dst, src, bytes);
    return 0;
}

static int cpu_upload_f32(nn_backend *b, void *dst, nn_dtype dt, const float *src, int64_t n,
                          char *err, size_t errlen)
{
    (void)b; (void)err; (void)errlen;
    if (dt == NN_F32) memcpy(dst, src, sizeof(float) * (size_t)n);
    else
        for (int64_t i = 0; i < n; i++) ((uint16_t *)dst)[i] = nn_f32_to_f16(src[i]);
    return 0;
}

static int cpu_download_f32(nn_backend *b, float *dst, const void *src, nn_dtype dt, int64_t n,
                            char *err, size_t errlen)
{
    (void)b; (void)err; (void)errlen;
    if (dt == NN_F32) memcpy(dst, src, sizeof(float) * (size_t)n);
    else
        for (int64_t i = 0; i < n; i++) dst[i] = nn_f16_to_f32(((const uint16_t *)src)[i]);
    return 0;
}

static int cpu_sync(nn_backend *b, char *err, size_t errlen)
{
    (void)b; (void)err; (void)errlen;
    return 0;
}

static int cpu_prepare(nn_backend *b, nn_node *n, size_t *ws, char *err, size_t errlen)
{
    (void)b;
    for (int i = 0; i < n->n_in; i++)
        if (n->in[i]->dtype != NN_F32)
            return sn_errf(err, errlen, SN_EUNSUPPORTED, "cpu computes in float32 only");
    *ws = nn__cpu_conv_ws(n);
    return 0;
}

static int cpu_run(nn_backend *bb, nn_node *n, void *ws, size_t ws_bytes, char *err,
                   size_t errlen)
{
    cpu_backend *b = (cpu_backend *)bb;
    int rc;
    switch (n->op.type) {
    case NN_OP_CONV: rc = nn__cpu_conv(b, n, ws, ws_bytes); break;
    case NN_OP_CONV_TRANSPOSE: rc = nn__cpu_conv_transpose(b, n, ws, ws_bytes); break;
    case NN_OP_LINEAR: rc = nn__cpu_linear(b, n); break;
    case NN_OP_BATCH_NORM: case NN_OP_INSTANCE_NORM: case NN_OP_GROUP_NORM:
        rc = nn__cpu_norm(b, n);
        break;
    case NN_OP_RELU: case NN_OP_LEAKY_RELU: case NN_OP_SIGMOID: case NN_OP_SCALE_SHIFT:
        rc = nn__cpu_unary(b, n);
        break;
    case NN_OP_SOFTMAX: rc = nn__cpu_softmax(b, n); break;
    case NN_OP_ARGMAX: rc = nn__cpu_argmax(b, n); break;
    case NN_OP_ADD: case NN_OP_MUL: rc = nn__cpu_binary(b, n); break;
    case NN_OP_CONCAT: rc = nn__cpu_concat(b, n); break;
    case NN_OP_MAX_POOL: case NN_OP_AVG_POOL: case NN_OP_GLOBAL_AVG_POOL:
        rc = nn__cpu_pool(b, n);
        break;
    case NN_OP_UPSAMPLE_NEAREST: case NN_OP_UPSAMPLE_LINEAR: rc = nn__cpu_upsample(b, n); break;
    case NN_OP_MIND_SSC: rc = nn__cpu_mind_ssc(b, n); break;
    case NN_OP_WARP: rc = nn__cpu_warp(b, n); break;
    case NN_OP_SSD_COST: rc = nn__cpu_ssd_cost(b, n); break;
    case NN_OP_WARP_SSD_GRAD: rc = nn__cpu_warp_ssd_grad(b, n); break;
    case NN_OP_RESHAPE:
        memcpy(n->out->data, n->in[0]->data, n->out->nbytes);
        rc = 0;
        break;
    default:
        return sn_errf(err, errlen, SN_EUNSUPPORTED, "cpu: op %s not implemented",
                       nn_op_name(n->op.type));
    }
    if (rc) return sn_errf(err, errlen, rc, "cpu: %s failed", nn_op_name(n->op.type));
    return 0;
}

static int cpu_gemm_tflops(nn_backend *b, nn_precision prec, double *tflops, char *err,
                           size_t errlen)
{
    (void)prec;
    cpu_backend *cb = (cpu_backend *)b;
    const int n = 2048, reps = 3;
    float *a = malloc(sizeof(float) * n * n), *bb = malloc(sizeof(float) * n * n);
    float *c = malloc(sizeof(float) * n * n);
    if (!a || !bb || !c) {
        free(a); free(bb); free(c);
        return sn_errf(err, errlen, SN_ENOMEM, "out of memory");
    }
    for (int i = 0; i < n * n; i++) { a[i] = (float)(i % 7) * 0.1f; bb[i] = (float)(i % 5) * 0.1f; }
    nn__cpu_gemm(cb, 0, 0, n, n, n, a, n, bb, n, c, n);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int r = 0; r < reps; r++)
        nn__cpu_gemm(cb, 0, 0, n, n, n, a, n, bb, n, c, n);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double s = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) * 1e-9;
    *tflops = 2.0 * n * (double)n * n * reps / s / 1e12;
    free(a); free(bb); free(c);
    return 0;
}

static const nn_backend_i g_cpu_iface = {
    .name = cpu_name,
    .description = cpu_desc,
    .free = cpu_free,
    .alloc = cpu_alloc,
    .release = cpu_release,
    .upload = cpu_copy,
    .download = cpu_copy,
    .upload_f32 = cpu_upload_f32,
    .download_f32 = cpu_download_f32,
    .sync = cpu_sync,
    .node_prepare = cpu_prepare,
    .node_release = NULL,
    .node_run = cpu_run,
    .supports = NULL,
    .memory = NULL,
    .gemm_tflops = cpu_gemm_tflops,
};

int nn_backend_cpu_new(int threads, nn_backend **out, char *err, size_t errlen)
{
    *out = NULL;
    cpu_backend *b = calloc(1, sizeof *b);
    if (!b) return sn_errf(err, errlen, SN_ENOMEM, "out of memory");
    b->base.iface = &g_cpu_iface;
    if (nn__pool_new(threads, &b->pool)) {
        free(b);
        return sn_errf(err, errlen, SN_ENOMEM, "cpu: cannot start threads");
    }
    b->threads = nn__pool_threads(b->pool);
    /* OpenBLAS single-threaded: the pool parallelises GEMM (nn__cpu_gemm, conv.c). */
    openblas_set_num_threads(1);
    snprintf(b->desc, sizeof b->desc, "CPU, %d threads, OpenBLAS", b->threads);
    *out = &b->base;
    return 0;
}
