/* nn/cuda/conv.cuh — convolution and transposed convolution through cuDNN (algorithm found once
 * per shape and cached in the backend; fp16 tensors on Tensor Cores with fp32 accumulation;
 * fp32 restricted to FMA math so results stay within float rounding of the CPU), then bias and
 * the fused activation in one kernel. */
#pragma once
#include "nn/cuda/common.cuh"
int nn__cuda_conv_prepare(nn_cuda *b, nn_node *n, size_t *ws, char *err, size_t errlen);
int nn__cuda_conv(nn_cuda *b, nn_node *n, void *ws, size_t ws_bytes, char *err, size_t errlen);
void nn__cuda_conv_release(nn_cuda *b, nn_node *n);
