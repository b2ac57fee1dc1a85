/* nn/cuda/convert.cuh — float32 <-> float16 conversion of device buffers (uploads, downloads). */
#pragma once
#include "nn/cuda/common.cuh"
int nn__cuda_convert(nn_cuda *b, void *dst, nn_dtype dst_dt, const void *src, nn_dtype src_dt,
                     int64_t n, char *err, size_t errlen);
