/* nn/cuda/upsample.cuh — nearest and (bi/tri)linear up-sampling with PyTorch's index rules. */
#pragma once
#include "nn/cuda/common.cuh"
int nn__cuda_upsample(nn_cuda *b, nn_node *n, char *err, size_t errlen);
