/* nn/cpu/cpu.h — private to the CPU backend: its struct and the op entry points (conv.c for
 * convolutions and linear layers over OpenBLAS, ops.c for everything else). Each op takes the
 * node with resolved float32 tensors; shapes were checked at session creation. */
#ifndef SEGNODE_NN_CPU_H
#define SEGNODE_NN_CPU_H

#include "nn/nnInt.h"

typedef struct cpu_backend {
    nn_backend base;
    nn_pool *pool;
    int threads;
    char desc[128];
} cpu_backend;

/* Scratch (bytes) an op needs; 0 if none. */
size_t nn__cpu_conv_ws(const nn_node *n);

int nn__cpu_conv(cpu_backend *b, nn_node *n, float *ws, size_t ws_bytes);
int nn__cpu_conv_transpose(cpu_backend *b, nn_node *n, float *ws, size_t ws_bytes);
int nn__cpu_linear(cpu_backend *b, nn_node *n);
int nn__cpu_norm(cpu_backend *b, nn_node *n);          /* batch, instance, group */
int nn__cpu_unary(cpu_backend *b, nn_node *n);         /* relu, leaky, sigmoid, scale_shift */
int nn__cpu_softmax(cpu_backend *b, nn_node *n);
int nn__cpu_argmax(cpu_backend *b, nn_node *n);
int nn__cpu_binary(cpu_backend *b, nn_node *n);        /* add, mul with broadcasting */
int nn__cpu_concat(cpu_backend *b, nn_node *n);
int nn__cpu_pool(cpu_backend *b, nn_node *n);          /* max, avg, global avg */
int nn__cpu_upsample(cpu_backend *b, nn_node *n);      /* nearest, linear */

/* Registration ops (nn/cpu/reg.c). */
int nn__cpu_mind_ssc(cpu_backend *b, nn_node *n);
int nn__cpu_warp(cpu_backend *b, nn_node *n);
int nn__cpu_ssd_cost(cpu_backend *b, nn_node *n);
int nn__cpu_warp_ssd_grad(cpu_backend *b, nn_node *n);

/* C[M][N] = op(A) op(B), row-major, alpha 1, beta 0: OpenBLAS single-threaded on blocks of C
 * handed out by the backend's pool (conv.c). */
void nn__cpu_gemm(cpu_backend *b, int trans_a, int trans_b, int64_t M, int64_t N, int64_t K,
                  const float *A, int64_t lda, const float *B, int64_t ldb, float *C, int64_t ldc);

/* Apply a fused activation in place over n values. */
void nn__cpu_act(float *p, int64_t n, nn_act act, float slope);

/* Spatial extent helpers: number of spatial dims and their sizes padded to 3 (leading 1s). */
static inline int nn__cpu_sp3(const nn_tensor *t, int64_t sp[3])
{
    int nsp = t->ndim - 2;
    for (int i = 0; i < 3; i++) sp[i] = 1;
    for (int i = 0; i < nsp; i++) sp[3 - nsp + i] = t->shape[2 + i];
    return nsp;
}

#endif
