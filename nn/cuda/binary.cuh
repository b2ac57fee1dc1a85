/* nn/cuda/binary.cuh — add and multiply with numpy broadcasting (up to 5-D). */
#pragma once
#include "nn/cuda/common.cuh"
int nn__cuda_binary(nn_cuda *b, nn_node *n, char *err, size_t errlen);
