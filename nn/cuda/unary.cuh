/* nn/cuda/unary.cuh — element-wise ReLU, leaky ReLU, sigmoid, scale-shift and reshape (copy). */
#pragma once
#include "nn/cuda/common.cuh"
int nn__cuda_unary(nn_cuda *b, nn_node *n, char *err, size_t errlen);
