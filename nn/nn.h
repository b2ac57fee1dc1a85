/* nn/nn.h — segnode's tensor runtime: tensors, a small graph of ops, backends, model bundles and
 * sliding-window inference. This header is the manual: what is not here is not API.
 *
 * A backend (CPU over OpenBLAS, or CUDA over cuDNN/cuBLAS when built) owns device memory and runs
 * ops; it is opaque and its table of functions is private (nn/nnInt.h). A graph is a
 * backend-independent list of nodes over values (inputs, constants, node outputs). A session binds
 * a graph to a backend for one input shape: it infers shapes, uploads constants, allocates every
 * intermediate once (with buffer reuse) and plans each node (cuDNN algorithm search, workspace),
 * so that nn_session_run allocates nothing. A model is a loaded bundle (model.json +
 * model.safetensors): a graph plus the metadata needed to run it on a volume.
 *
 * Layout is NCHW / NCDHW, row-major, float32 unless said otherwise. No CUDA type appears here.
 * Every function that can fail returns 0 or a negative SN_E* status (common/status.h) and fills
 * `err` (may be NULL) with a reason. Destructors accept NULL. Nothing here is thread-safe on one
 * object; distinct sessions may run concurrently on distinct backends. */
#ifndef SEGNODE_NN_H
#define SEGNODE_NN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define NN_MAX_DIMS 5      /* N, C and up to 3 spatial dimensions */
#define NN_MAX_INPUTS 8    /* inputs of one node (concat may take up to this many) */

/* ---- backends -------------------------------------------------------------------------------- */

typedef struct nn_backend nn_backend;

typedef enum nn_dtype { NN_F32 = 0, NN_F16 = 1 } nn_dtype;

/* Precision a session computes in. FP16 stores activations and convolution weights in half
 * precision and runs convolutions on Tensor Cores with float32 accumulation (CUDA only; the CPU
 * backend always computes in float32 and treats FP16 as FP32). */
typedef enum nn_precision { NN_PREC_FP32 = 0, NN_PREC_FP16 = 1 } nn_precision;

/* A CPU backend over OpenBLAS using `threads` threads (0 = every online CPU). */
int nn_backend_cpu_new(int threads, nn_backend **out, char *err, size_t errlen);

/* A CUDA backend on device `device` with its own stream, cuDNN and cuBLAS handles. Returns
 * SN_EUNSUPPORTED when this build has no CUDA backend, SN_EDEVICE when there is no usable device
 * (err says why). The caller may then fall back to nn_backend_cpu_new. */
int nn_backend_cuda_new(int device, nn_backend **out, char *err, size_t errlen);

/* 1 if this build includes the CUDA backend (a device may still be absent). */
int nn_have_cuda(void);

/* The number of usable CUDA devices: 0 when the build has no CUDA backend or the runtime finds
 * none (no driver, no device); `why` (may be NULL) then says which. */
int nn_cuda_devices(char *why, size_t whylen);

/* "cpu" or "cuda:0" etc. plus a human description (device name, threads); borrowed strings. */
const char *nn_backend_name(const nn_backend *b);
const char *nn_backend_description(const nn_backend *b);

/* Wait until all work queued on the backend has finished. */
int nn_backend_sync(nn_backend *b, char *err, size_t errlen);

/* Device memory statistics in bytes: current and peak allocated by this backend (both 0 on CPU
 * unless tracked). May be NULL. */
void nn_backend_memory(const nn_backend *b, size_t *current, size_t *peak);

/* Measure the backend's dense matrix-multiply throughput (TFLOP/s) in `prec` (CPU: SGEMM
 * 2048^3; CUDA: cuBLAS GEMM 8192^3, fp16 on Tensor Cores with fp32 accumulation). Takes about a
 * second; for benchmarks. SN_EUNSUPPORTED where not implemented. */
int nn_backend_gemm_tflops(nn_backend *b, nn_precision prec, double *tflops, char *err,
                           size_t errlen);

/* Free the backend. Every tensor and session made on it must be freed first. */
void nn_backend_free(nn_backend *b);

/* ---- tensors --------------------------------------------------------------------------------- */

typedef struct nn_tensor nn_tensor;

/* Allocate a tensor of `ndim` (1..5) dims on backend `b` (contents undefined). */
int nn_tensor_new(nn_backend *b, nn_dtype dtype, int ndim, const int64_t *shape, nn_tensor **out,
                  char *err, size_t errlen);
void nn_tensor_free(nn_tensor *t);

int nn_tensor_ndim(const nn_tensor *t);
int64_t nn_tensor_dim(const nn_tensor *t, int i);   /* shape[i], 1 for i >= ndim */
int64_t nn_tensor_numel(const nn_tensor *t);
nn_dtype nn_tensor_dtype(const nn_tensor *t);

/* Copy numel float32 values from host memory into the tensor / from the tensor to host memory,
 * converting to / from the tensor's dtype. Upload and download are ordered on the backend's
 * stream; download returns once the data is on the host. */
int nn_tensor_upload(nn_tensor *t, const float *src, char *err, size_t errlen);
int nn_tensor_download(const nn_tensor *t, float *dst, char *err, size_t errlen);

/* half <-> float conversion (IEEE binary16, round to nearest even). */
uint16_t nn_f32_to_f16(float f);
float nn_f16_to_f32(uint16_t h);

/* ---- ops ------------------------------------------------------------------------------------- */

typedef enum nn_op_type {
    NN_OP_CONV = 0,          /* in: x, w [Co, Ci/g, k..], [b]: 2-D or 3-D by x's rank */
    NN_OP_CONV_TRANSPOSE,    /* in: x, w [Ci, Co/g, k..], [b] */
    NN_OP_LINEAR,            /* in: x [N, Ci], w [Co, Ci], [b] */
    NN_OP_BATCH_NORM,        /* in: x, mean, var, [w, b] (inference; folded into a conv at load) */
    NN_OP_INSTANCE_NORM,     /* in: x, [w, b] */
    NN_OP_GROUP_NORM,        /* in: x, [w, b]; groups */
    NN_OP_RELU,
    NN_OP_LEAKY_RELU,        /* slope */
    NN_OP_SIGMOID,
    NN_OP_SOFTMAX,           /* over dim 1 (channels) */
    NN_OP_ARGMAX,            /* over dim 1; out [N, 1, spatial..] with indices as float */
    NN_OP_ADD,               /* a + b, numpy broadcasting */
    NN_OP_MUL,               /* a * b, numpy broadcasting */
    NN_OP_CONCAT,            /* along `axis` */
    NN_OP_MAX_POOL,          /* k, stride, pad, dilation, ceil_mode */
    NN_OP_AVG_POOL,          /* k, stride, pad, ceil_mode, count_include_pad */
    NN_OP_GLOBAL_AVG_POOL,   /* mean over all spatial dims, keeps them as 1 */
    NN_OP_UPSAMPLE_NEAREST,  /* scale or size */
    NN_OP_UPSAMPLE_LINEAR,   /* bilinear / trilinear by rank; scale or size; align_corners */
    NN_OP_RESHAPE,           /* shape (0 = copy that input dim, -1 = inferred) */
    NN_OP_SCALE_SHIFT,       /* y = x * alpha + beta (scalars) */
    /* Registration ops (pipeline/atlas). 3-D only ([N, C, D, H, W]); borders replicate. A
     * displacement field u is [N, 3, D, H, W] in voxels of the sampled tensor, channel 0 along W,
     * 1 along H, 2 along D. */
    NN_OP_MIND_SSC,          /* in: x [N,1,..] -> [N,12,..] MIND-SSC (Heinrich 2013): the 12
                                pairs of the 6-neighbourhood at distance dilation[0], patch
                                distances by a box of radius k[0], exp(-D / V) with V the mean
                                over channels clamped to [1e-3, 1e3] x its volume mean */
    NN_OP_WARP,              /* in: x [N,C,..], u [N,3,..] -> [N,C, u's spatial] trilinear
                                x(p' + u(p)), p' = p mapped to x's grid (align_corners=False) */
    NN_OP_SSD_COST,          /* in: f, m [N,C,..] same shape -> [N,(2k[0]+1)^3,..] cost volume
                                mean_c (f(p) - m(p + d*dilation[0]))^2 over the displacements
                                d in [-k[0], k[0]]^3, index (dz*(2k+1) + dy)*(2k+1) + dx */
    NN_OP_WARP_SSD_GRAD,     /* in: f [N,C,..], m [N,C,..], u [N,3,..] (all the same spatial)
                                -> [N,3,..] d/du of mean_c (m(p + u(p)) - f(p))^2 (analytic
                                trilinear derivative; instance optimisation's data term) */
    NN_OP_COUNT
} nn_op_type;

typedef enum nn_act { NN_ACT_NONE = 0, NN_ACT_RELU, NN_ACT_LEAKY_RELU, NN_ACT_SIGMOID } nn_act;

/* Parameters of a node. Spatial arrays are in tensor order (D, H, W for 3-D; H, W in [0..1] for
 * 2-D). Zero-initialise and set what the op uses; nn_op_desc_init sets the usual defaults
 * (stride 1, dilation 1, eps 1e-5, slope 0.01, groups 1). */
typedef struct nn_op_desc {
    nn_op_type type;
    int k[3], stride[3], pad[3], dilation[3], out_pad[3];
    int groups;                /* conv groups (1 only for now) / group-norm groups */
    float eps;                 /* norms */
    float slope;               /* leaky ReLU and fused leaky activations */
    float alpha, beta;         /* SCALE_SHIFT */
    int ceil_mode, count_include_pad, align_corners;
    double scale[3];           /* up-sampling factor per spatial dim (PyTorch scale_factor) */
    int64_t size[3];           /* up-sampling output size (used when scale is 0) */
    int axis;                  /* CONCAT */
    int shape_ndim;            /* RESHAPE */
    int64_t shape[NN_MAX_DIMS];
    nn_act act;                /* activation fused after CONV/CONV_TRANSPOSE/LINEAR/norms */
} nn_op_desc;

void nn_op_desc_init(nn_op_desc *d, nn_op_type type);
const char *nn_op_name(nn_op_type type);        /* "conv", "instance_norm", ... */
int nn_op_from_name(const char *name);          /* nn_op_type or -1 */

/* ---- graphs ---------------------------------------------------------------------------------- */

typedef struct nn_graph nn_graph;

int nn_graph_new(nn_graph **out);
void nn_graph_free(nn_graph *g);

/* Add an input value with a default shape (a session may override it). Returns the value id
 * (>= 0) or a negative status. `name` is copied. */
int nn_graph_input(nn_graph *g, const char *name, int ndim, const int64_t *shape);

/* Add a constant (weights) with float32 data copied from `data` (numel values). Returns its
 * value id or a negative status. */
int nn_graph_const(nn_graph *g, const char *name, int ndim, const int64_t *shape,
                   const float *data);

/* Add a node computing `op` over `inputs` (value ids). Returns the output value id or a negative
 * status (bad arity, unknown value; err says why). `name` may be NULL. */
int nn_graph_node(nn_graph *g, const char *name, const nn_op_desc *op, const int *inputs,
                  int n_inputs, char *err, size_t errlen);

/* Mark a value as a graph output (in call order). */
int nn_graph_output(nn_graph *g, int value);

/* Fold batch norms into preceding convolutions, fuse activations into their producer where the
 * producer has no other consumer. Numerically this changes results by rounding only. */
int nn_graph_optimize(nn_graph *g, char *err, size_t errlen);

int nn_graph_node_count(const nn_graph *g);

/* ---- sessions -------------------------------------------------------------------------------- */

typedef struct nn_session nn_session;

typedef struct nn_session_opts {
    nn_precision precision;    /* default NN_PREC_FP32 */
    int64_t input_shape[NN_MAX_DIMS];   /* if input_ndim > 0: replaces input 0's shape */
    int input_ndim;
} nn_session_opts;

/* Bind graph `g` (borrowed; must outlive the session) to backend `b`: infer shapes (SN_EINVAL
 * when they do not fit), upload constants, allocate intermediates and plan every node. GPU out
 * of memory is SN_ENOMEM with the amount in err. `opts` may be NULL. */
int nn_session_new(const nn_graph *g, nn_backend *b, const nn_session_opts *opts,
                   nn_session **out, char *err, size_t errlen);
void nn_session_free(nn_session *s);

/* The session's input / output tensors (borrowed; valid for the session's life). Upload into
 * the input, run, download from the output. */
nn_tensor *nn_session_input(nn_session *s, int i);
nn_tensor *nn_session_output(nn_session *s, int i);

/* Run the graph once. Allocates nothing. Queued on the backend's stream; a following
 * nn_tensor_download waits for it. */
int nn_session_run(nn_session *s, char *err, size_t errlen);

/* Per-op timing for benchmarks: when enabled, run synchronises after every node and adds its
 * wall time into per-op-type totals (ms) read by nn_session_op_ms. */
void nn_session_profile(nn_session *s, int enable);
double nn_session_op_ms(const nn_session *s, nn_op_type type);
/* Total multiply-adds of the convolutions in one run (for throughput figures). */
double nn_session_conv_macs(const nn_session *s);

/* ---- model bundles --------------------------------------------------------------------------- */

typedef struct nn_model nn_model;

typedef struct nn_label {
    int value;                 /* label value in the output (argmax channel index) */
    char name[64];
    char code[128];            /* coded concept, e.g. "SCT:10200004" ("" if none) */
} nn_label;

typedef enum nn_norm_kind {
    NN_NORM_NONE = 0,
    NN_NORM_ZSCORE,            /* (x - mean) / std; per volume when mean/std are not given */
    NN_NORM_CT,                /* clip to [lo, hi], then (x - mean) / std */
    NN_NORM_ROBUST             /* (x - median) / (p75 - p25) of the volume's voxels: those above
                                * the volume's mean ("mask": "above_mean", e.g. the body of a
                                * PET, whatever its share of the field of view) or all of them */
} nn_norm_kind;

typedef struct nn_model_info {
    char name[128];
    char modality[16];         /* "MR", "CT", "CBCT", "PT" ... */
    int spatial_dims;          /* 2 or 3 */
    int in_channels, out_channels;
    int64_t patch[3];          /* D, H, W (2-D: patch[0] = 1) */
    double spacing[3];         /* target spacing in mm, D, H, W order (0 = keep native) */
    nn_norm_kind norm;
    int norm_per_volume;       /* z-score with the volume's own mean/std */
    int norm_above_mean;       /* NN_NORM_ROBUST: statistics of the voxels above the mean */
    double norm_mean, norm_std, norm_lo, norm_hi;
    int n_labels;
    nn_label labels[64];
} nn_model_info;

/* Load the bundle in folder `dir` (model.json + the safetensors file it names). Every weight the
 * graph references must exist with the declared shape and dtype (F32, F16 or BF16); unknown ops,
 * truncated files and inconsistent shapes are SN_EINVAL with err naming the tensor or node.
 * The graph is optimised (batch norm folded). */
int nn_model_load(const char *dir, nn_model **out, char *err, size_t errlen);
void nn_model_free(nn_model *m);
const nn_model_info *nn_model_info_get(const nn_model *m);
const nn_graph *nn_model_graph(const nn_model *m);

/* ---- safetensors ----------------------------------------------------------------------------- */

typedef struct nn_safetensors nn_safetensors;

typedef struct nn_st_entry {
    const char *name;          /* borrowed from the file object */
    char dtype[8];             /* "F32", "F16", "BF16", "I64" ... */
    int ndim;
    int64_t shape[8];
    const void *data;          /* borrowed, little-endian raw bytes */
    size_t nbytes;
} nn_st_entry;

/* Read a whole safetensors file (u64 LE header size, JSON header, raw data) and validate every
 * entry's offsets against the file and its dtype/shape. SN_EINVAL on a malformed or truncated
 * file, SN_EIO when unreadable. */
int nn_safetensors_open(const char *path, nn_safetensors **out, char *err, size_t errlen);
void nn_safetensors_close(nn_safetensors *st);
int nn_safetensors_count(const nn_safetensors *st);
const nn_st_entry *nn_safetensors_at(const nn_safetensors *st, int i);
const nn_st_entry *nn_safetensors_find(const nn_safetensors *st, const char *name);
/* Convert an entry to newly allocated float32 (F32, F16, BF16 accepted). Caller frees. */
int nn_st_entry_to_f32(const nn_st_entry *e, float **out, char *err, size_t errlen);

/* ---- sliding-window inference ---------------------------------------------------------------- */

typedef struct nn_sliding_opts {
    int batch;                 /* patches per run (default 2) */
    double overlap;            /* 0.5 */
    int gaussian;              /* 1: nnU-Net Gaussian importance weighting; 0: uniform */
    int mirror;                /* 1: average over all axis flips (test-time augmentation) */
    int pad_small;             /* 1: pad a volume smaller than the patch; 0: refuse it */
    nn_precision precision;
    int verbose;               /* log progress */
} nn_sliding_opts;

void nn_sliding_opts_default(nn_sliding_opts *o);

/* Run the model over a multi-channel volume `in` [C, D, H, W] (already resampled and
 * normalised) by sliding window. Writes averaged logits into `logits` [K, D, H, W] (caller
 * allocated, K = out channels). Allocates its session and buffers once, nothing per patch. */
int nn_sliding_run(const nn_model *m, nn_backend *b, const float *in, const int64_t dims[3],
                   const nn_sliding_opts *opts, float *logits, char *err, size_t errlen);

/* The bundle's intensity normalisation of `n` voxels (`out` may be `vol`); per-volume
 * statistics (z-score per volume, robust) come from these voxels. 0 or SN_ENOMEM. */
int nn_normalize(const nn_model_info *info, const float *vol, int64_t n, float *out, char *err,
                 size_t errlen);

/* Whole-volume inference as a node runs it: single-channel volume `vol` [D, H, W] with voxel
 * spacing `spacing` (mm, D, H, W order) -> normalise as the bundle says, resample to the bundle's
 * spacing, sliding window, softmax, resample back to the input grid. Outputs (each may be NULL):
 * `labels` [D*H*W] argmax label values; `probs` newly allocated [K, D, H, W] probabilities
 * (caller frees). */
int nn_infer_volume(const nn_model *m, nn_backend *b, const float *vol, const int64_t dims[3],
                    const double spacing[3], const nn_sliding_opts *opts, int16_t *labels,
                    float **probs, char *err, size_t errlen);

/* Trilinear resampling of `c` channels [c, sd..] onto a grid [c, dd..] covering the same extent
 * (voxel centres aligned as align_corners=False). Used by nn_infer_volume. */
void nn_resample_trilinear(const float *src, const int64_t sdims[3], float *dst,
                           const int64_t ddims[3], int c);

#ifdef __cplusplus
}
#endif

#endif
