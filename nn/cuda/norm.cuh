/* nn/cuda/norm.cuh — instance, group and (inference) batch normalisation with the fused
 * activation. Statistics: per-(image, group) partial sums over chunks (shifted by the group's
 * first value against cancellation), combined per group, then one element-wise pass. */
#pragma once
#include "nn/cuda/common.cuh"
size_t nn__cuda_norm_ws(const nn_node *n);
int nn__cuda_norm(nn_cuda *b, nn_node *n, void *ws, size_t ws_bytes, char *err, size_t errlen);
