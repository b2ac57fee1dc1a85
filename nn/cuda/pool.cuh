/* nn/cuda/pool.cuh — max, average (PyTorch's padding and divisor rules) and global average
 * pooling over 1-3 spatial dims. */
#pragma once
#include "nn/cuda/common.cuh"
int nn__cuda_pool(nn_cuda *b, nn_node *n, char *err, size_t errlen);
