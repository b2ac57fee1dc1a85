/* nn/nocuda.c — stands in for nn/cuda when the build has no CUDA backend
 * (SEGNODE_CUDA=OFF, or AUTO without a CUDA compiler/cuDNN). */
#include "common/status.h"
#include "nn/nnInt.h"

int nn__cuda_available(void) { return 0; }

int nn__cuda_devices(char *why, size_t whylen)
{
    sn_errf(why, whylen, SN_EUNSUPPORTED, "this build has no CUDA backend");
    return 0;
}

int nn__cuda_new(int device, nn_backend **out, char *err, size_t errlen)
{
    (void)device;
    *out = NULL;
    return sn_errf(err, errlen, SN_EUNSUPPORTED, "this build has no CUDA backend");
}
