/* nn/tensor.c — tensors and the backend-independent wrappers around the backend table
 * (nn_backend_*), half-precision conversion, op names and defaults. No op runs here. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/status.h"
#include "nn/nnInt.h"

/* ---- backends -------------------------------------------------------------------------------- */

const char *nn_backend_name(const nn_backend *b) { return b ? b->iface->name(b) : "none"; }
const char *nn_backend_description(const nn_backend *b)
{
    return b ? b->iface->description(b) : "";
}

int nn_backend_sync(nn_backend *b, char *err, size_t errlen)
{
    return b->iface->sync(b, err, errlen);
}

void nn_backend_memory(const nn_backend *b, size_t *current, size_t *peak)
{
    size_t c = 0, p = 0;
    if (b && b->iface->memory) b->iface->memory(b, &c, &p);
    if (current) *current = c;
    if (peak) *peak = p;
}

int nn_backend_gemm_tflops(nn_backend *b, nn_precision prec, double *tflops, char *err,
                           size_t errlen)
{
    *tflops = 0;
    if (!b->iface->gemm_tflops)
        return sn_errf(err, errlen, SN_EUNSUPPORTED, "%s: no GEMM benchmark", nn_backend_name(b));
    return b->iface->gemm_tflops(b, prec, tflops, err, errlen);
}

void nn_backend_free(nn_backend *b)
{
    if (b) b->iface->free(b);
}

int nn_have_cuda(void) { return nn__cuda_available(); }

int nn_cuda_devices(char *why, size_t whylen)
{
    if (why && whylen) why[0] = '\0';
    return nn__cuda_devices(why, whylen);
}

int nn_backend_cuda_new(int device, nn_backend **out, char *err, size_t errlen)
{
    *out = NULL;
    if (!nn__cuda_available())
        return sn_errf(err, errlen, SN_EUNSUPPORTED, "this build has no CUDA backend");
    return nn__cuda_new(device, out, err, errlen);
}

/* ---- tensors --------------------------------------------------------------------------------- */

int nn_tensor_new(nn_backend *b, nn_dtype dtype, int ndim, const int64_t *shape, nn_tensor **out,
                  char *err, size_t errlen)
{
    *out = NULL;
    if (!b || ndim < 1 || ndim > NN_MAX_DIMS)
        return sn_errf(err, errlen, SN_EINVAL, "tensor: bad rank %d", ndim);
    nn_tensor *t = calloc(1, sizeof *t);
    if (!t) return sn_errf(err, errlen, SN_ENOMEM, "tensor: out of memory");
    t->backend = b;
    t->dtype = dtype;
    t->ndim = ndim;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 1) {
            free(t);
            return sn_errf(err, errlen, SN_EINVAL, "tensor: dim %d is %lld", i,
                           (long long)shape[i]);
        }
        t->shape[i] = shape[i];
    }
    t->nbytes = (size_t)nn__numel(t) * nn__dtype_size(dtype);
    int rc = b->iface->alloc(b, t->nbytes, &t->data, err, errlen);
    if (rc) {
        free(t);
        return rc;
    }
    t->owns_data = 1;
    *out = t;
    return 0;
}

void nn_tensor_free(nn_tensor *t)
{
    if (!t) return;
    if (t->owns_data) t->backend->iface->release(t->backend, t->data);
    free(t);
}

int nn_tensor_ndim(const nn_tensor *t) { return t->ndim; }
int64_t nn_tensor_dim(const nn_tensor *t, int i) { return i < t->ndim ? t->shape[i] : 1; }
int64_t nn_tensor_numel(const nn_tensor *t) { return nn__numel(t); }
nn_dtype nn_tensor_dtype(const nn_tensor *t) { return t->dtype; }

int nn_tensor_upload(nn_tensor *t, const float *src, char *err, size_t errlen)
{
    return t->backend->iface->upload_f32(t->backend, t->data, t->dtype, src, nn__numel(t), err,
                                         errlen);
}

int nn_tensor_download(const nn_tensor *t, float *dst, char *err, size_t errlen)
{
    return t->backend->iface->download_f32(t->backend, dst, t->data, t->dtype, nn__numel(t), err,
                                           errlen);
}

/* ---- half precision -------------------------------------------------------------------------- */

uint16_t nn_f32_to_f16(float f)
{
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000u;
    uint32_t mant = x & 0x7fffffu;
    int32_t exp = (int32_t)((x >> 23) & 0xff);
    if (exp == 0xff) return (uint16_t)(sign | 0x7c00u | (mant ? 0x200u : 0));
    exp = exp - 127 + 15;
    if (exp >= 0x1f) return (uint16_t)(sign | 0x7c00u);
    if (exp <= 0) {
        if (exp < -10) return (uint16_t)sign;
        mant |= 0x800000u;
        uint32_t shift = (uint32_t)(14 - exp);
        uint32_t h = mant >> shift;
        uint32_t rem = mant & ((1u << shift) - 1), half = 1u << (shift - 1);
        if (rem > half || (rem == half && (h & 1))) h++;
        return (uint16_t)(sign | h);
    }
    uint32_t h = ((uint32_t)exp << 10) | (mant >> 13);
    uint32_t rem = mant & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1))) h++;   /* may carry into the exponent */
    return (uint16_t)(sign | h);
}

float nn_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1f, mant = h & 0x3ffu, x;
    if (exp == 0) {
        if (mant == 0) x = sign;
        else {
            exp = 127 - 15 + 1;
            while (!(mant & 0x400u)) { mant <<= 1; exp--; }
            mant &= 0x3ffu;
            x = sign | (exp << 23) | (mant << 13);
        }
    } else if (exp == 0x1f) x = sign | 0x7f800000u | (mant << 13);
    else x = sign | ((exp - 15 + 127) << 23) | (mant << 13);
    float f;
    memcpy(&f, &x, 4);
    return f;
}

/* ---- ops ------------------------------------------------------------------------------------- */

static const char *const g_op_names[NN_OP_COUNT] = {
    "conv", "conv_transpose", "linear", "batch_norm", "instance_norm", "group_norm", "relu",
    "leaky_relu", "sigmoid", "softmax", "argmax", "add", "mul", "concat", "max_pool", "avg_pool",
    "global_avg_pool", "upsample_nearest", "upsample_linear", "reshape", "scale_shift",
    "mind_ssc", "warp", "ssd_cost", "warp_ssd_grad",
};

const char *nn_op_name(nn_op_type type)
{
    return (unsigned)type < NN_OP_COUNT ? g_op_names[type] : "?";
}

int nn_op_from_name(const char *name)
{
    for (int i = 0; i < NN_OP_COUNT; i++)
        if (!strcmp(g_op_names[i], name)) return i;
    return -1;
}

void nn_op_desc_init(nn_op_desc *d, nn_op_type type)
{
    memset(d, 0, sizeof *d);
    d->type = type;
    for (int i = 0; i < 3; i++) {
        d->k[i] = 1;
        d->stride[i] = 1;
        d->dilation[i] = 1;
    }
    d->groups = 1;
    d->eps = 1e-5f;
    d->slope = 0.01f;
    d->alpha = 1.0f;
    d->axis = 1;
}

int64_t nn__pool_out(int64_t in, int k, int s, int p, int d, int ceil_mode)
{
    int64_t num = in + 2 * p - (int64_t)d * (k - 1) - 1 + (ceil_mode ? s - 1 : 0);
    int64_t out = (num >= 0 ? num / s : -((-num + s - 1) / s)) + 1;
    if (ceil_mode && (out - 1) * s >= in + p) out--;
    return out;
}
