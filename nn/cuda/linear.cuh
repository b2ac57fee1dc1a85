/* nn/cuda/linear.cuh — linear layers through cuBLAS (GemmEx, fp32 accumulation), then bias and
 * activation. */
#pragma once
#include "nn/cuda/common.cuh"
int nn__cuda_linear(nn_cuda *b, nn_node *n, char *err, size_t errlen);
