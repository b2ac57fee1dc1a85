/* nn/nnInt.h — private to nn/: the tensor and graph structs, the backend function table that
 * nn/cpu and nn/cuda implement (ggml-backend style: every slot commented, optional ones marked),
 * a minimal JSON reader for bundles and safetensors headers, and the CPU thread pool.
 * Nothing here is API; nn/nn.h is. */
#ifndef SEGNODE_NN_NNINT_H
#define SEGNODE_NN_NNINT_H

#include <stddef.h>
#include <stdint.h>

#include "nn/nn.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A tensor: shape + a pointer into backend memory. Views (owns_data 0) point into session
 * buffers. */
struct nn_tensor {
    nn_backend *backend;
    nn_dtype dtype;
    int ndim;
    int64_t shape[NN_MAX_DIMS];
    void *data;          /* backend memory (host for CPU, device for CUDA) */
    size_t nbytes;
    int owns_data;
};

static inline int64_t nn__numel(const nn_tensor *t)
{
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= t->shape[i];
    return n;
}
static inline size_t nn__dtype_size(nn_dtype d) { return d == NN_F16 ? 2 : 4; }

/* One node as the backends see it: the op, its inputs and output (resolved tensors), plus the
 * backend's per-node plan (cuDNN descriptors, chosen algorithm). */
typedef struct nn_node {
    nn_op_desc op;
    int n_in;
    const nn_tensor *in[NN_MAX_INPUTS];
    nn_tensor *out;
    void *plan;          /* owned by the backend (node_release frees it) */
    double macs;         /* multiply-adds (conv / linear), for figures */
} nn_node;

/* The backend table. A backend is `struct nn_backend { const nn_backend_i *iface; ... }`, each
 * implementation embedding this as its first member. */
typedef struct nn_backend_i {
    /* short name, e.g. "cpu", "cuda:0" */
    const char *(*name)(const nn_backend *b);
    /* human description (device, threads) */
    const char *(*description)(const nn_backend *b);
    /* release everything the backend holds (handles, stream, pools) and the struct itself */
    void (*free)(nn_backend *b);
    /* allocate `bytes` of backend memory into *ptr; SN_ENOMEM (with size in err) on failure */
    int (*alloc)(nn_backend *b, size_t bytes, void **ptr, char *err, size_t errlen);
    /* free memory from alloc; accepts NULL */
    void (*release)(nn_backend *b, void *ptr);
    /* host -> backend copy of `bytes` (ordered on the stream) */
    int (*upload)(nn_backend *b, void *dst, const void *src, size_t bytes, char *err, size_t errlen);
    /* backend -> host copy; returns when the data is on the host */
    int (*download)(nn_backend *b, void *dst, const void *src, size_t bytes, char *err, size_t errlen);
    /* convert n float32 host values into a backend buffer of dtype `dt` (and back) */
    int (*upload_f32)(nn_backend *b, void *dst, nn_dtype dt, const float *src, int64_t n,
                      char *err, size_t errlen);
    int (*download_f32)(nn_backend *b, float *dst, const void *src, nn_dtype dt, int64_t n,
                        char *err, size_t errlen);
    /* wait for queued work */
    int (*sync)(nn_backend *b, char *err, size_t errlen);
    /* OPTIONAL: plan a node for its (now fixed) shapes and report the scratch it needs in
     * *workspace (bytes). Called once per node at session creation, inputs already holding the
     * constants. May be NULL. */
    int (*node_prepare)(nn_backend *b, nn_node *n, size_t *workspace, char *err, size_t errlen);
    /* OPTIONAL: free n->plan. May be NULL. */
    void (*node_release)(nn_backend *b, nn_node *n);
    /* run one node; `ws` is a workspace of at least the largest size any node_prepare asked */
    int (*node_run)(nn_backend *b, nn_node *n, void *ws, size_t ws_bytes, char *err,
                    size_t errlen);
    /* OPTIONAL: 1 if the backend can run this node in `prec`; NULL = everything in FP32 */
    int (*supports)(nn_backend *b, const nn_node *n, nn_precision prec);
    /* OPTIONAL: memory figures */
    void (*memory)(const nn_backend *b, size_t *current, size_t *peak);
    /* OPTIONAL: measured dense matrix-multiply throughput in TFLOP/s (benchmarks' reference) */
    int (*gemm_tflops)(nn_backend *b, nn_precision prec, double *tflops, char *err, size_t errlen);
} nn_backend_i;

struct nn_backend {
    const nn_backend_i *iface;
};

/* Shape inference for one op given input shapes; fills out shape. SN_EINVAL with err on a
 * mismatch. Shared by graph sessions and the bundle loader's self-check. */
int nn__infer_shape(const nn_op_desc *op, int n_in, const int *in_ndim,
                    const int64_t (*in_shape)[NN_MAX_DIMS], int *out_ndim,
                    int64_t out_shape[NN_MAX_DIMS], char *err, size_t errlen);

/* Pooling / conv output size helper (PyTorch's formulas). */
int64_t nn__pool_out(int64_t in, int k, int s, int p, int d, int ceil_mode);

/* CPU backend constructor is in nn/cpu; CUDA's in nn/cuda (nn__cuda_new). */
int nn__cuda_new(int device, nn_backend **out, char *err, size_t errlen);
int nn__cuda_devices(char *why, size_t whylen);
int nn__cuda_available(void);

/* ---- minimal JSON (RFC 8259 subset: no \u surrogate pairs beyond BMP) ------------------------ */

typedef enum nn_json_type {
    NN_JSON_NULL, NN_JSON_BOOL, NN_JSON_NUMBER, NN_JSON_STRING, NN_JSON_ARRAY, NN_JSON_OBJECT
} nn_json_type;

typedef struct nn_json {
    nn_json_type type;
    double num;
    char *str;                 /* STRING value */
    char *key;                 /* member name when inside an object */
    struct nn_json *child;     /* first element / member */
    struct nn_json *next;
    int count;                 /* number of children */
} nn_json;

/* Parse `len` bytes of text. Returns NULL and fills err (with the byte offset) on a syntax
 * error. Free with nn__json_free. */
nn_json *nn__json_parse(const char *text, size_t len, char *err, size_t errlen);
void nn__json_free(nn_json *j);
const nn_json *nn__json_get(const nn_json *obj, const char *key);
const nn_json *nn__json_at(const nn_json *arr, int i);
const char *nn__json_str(const nn_json *obj, const char *key, const char *dflt);
double nn__json_num(const nn_json *obj, const char *key, double dflt);

/* Node attributes in model.json's format ("stride", "padding", "act", ...) into `d` (already
 * initialised for its op). Shared by the bundle loader and the op tests. */
int nn__parse_attrs(const nn_json *attrs, nn_op_desc *d, char *why, size_t whylen);

/* ---- CPU thread pool -------------------------------------------------------------------------- */

typedef void (*nn_task_fn)(void *ctx, int64_t begin, int64_t end);
typedef struct nn_pool nn_pool;

int nn__pool_new(int threads, nn_pool **out);
void nn__pool_free(nn_pool *p);
int nn__pool_threads(const nn_pool *p);
/* Run fn over [0, n) split into contiguous chunks on the pool's threads (caller included);
 * returns when every chunk is done. Chunks are at least `grain` long. */
void nn__pool_for(nn_pool *p, int64_t n, int64_t grain, nn_task_fn fn, void *ctx);

#ifdef __cplusplus
}
#endif

#endif
