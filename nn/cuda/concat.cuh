/* nn/cuda/concat.cuh — concatenation along any axis (2-D strided copies, no kernel). */
#pragma once
#include "nn/cuda/common.cuh"
int nn__cuda_concat(nn_cuda *b, nn_node *n, char *err, size_t errlen);
