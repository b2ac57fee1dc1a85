/* nn/cuda/softmax.cuh — softmax and argmax over channels (dim 1), one thread per voxel. */
#pragma once
#include "nn/cuda/common.cuh"
int nn__cuda_softmax(nn_cuda *b, nn_node *n, char *err, size_t errlen);
