/* nn/cuda/reg.cuh — the registration ops (MIND_SSC, WARP, SSD_COST, WARP_SSD_GRAD), float32. */
#pragma once
#include "nn/cuda/common.cuh"
/* workspace bytes a registration node needs (MIND_SSC: a copy of its output and its sums) */
size_t nn__cuda_reg_ws(const nn_node *n);
int nn__cuda_reg(nn_cuda *b, nn_node *n, void *ws, size_t ws_bytes, char *err, size_t errlen);
