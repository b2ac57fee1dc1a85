/* pipeline/method.h — the segmentation methods as plug-ins of the job worker. A method turns the
 * target series' volume into a label volume on the same grid; the worker
 * (tools/segnode/worker.c) does everything around it: claims the job, reads the series, picks the
 * device, enforces the timeout, writes the SEG, stores it and queues the sends.
 *
 * A method library (atlas, net) registers itself by name with pipeline_method_register() before
 * the worker starts — the daemon calls pipeline_method_register_builtin(), which lists every
 * method compiled into this build (method.c). A route naming a method that is not registered
 * makes its jobs fail with "method X is not available in this build". Tests register their own
 * methods the same way (tests/worker/worker_driver.c). Plain C; no DCMTK, SQLite or CUDA types. */
#ifndef SEGNODE_PIPELINE_METHOD_H
#define SEGNODE_PIPELINE_METHOD_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "common/config.h"
#include "pipeline/labels.h"
#include "pipeline/volume.h"

#ifdef __cplusplus
extern "C" {
#endif

#define PIPELINE_METHOD_MAX 16         /* registered methods */
#define PIPELINE_METHOD_STAGES 8       /* sub-stage timings a method may report */

struct store;

/* What a run of a method gets, and what it reports back besides its labels. */
typedef struct pipeline_method_ctx {
    /* in */
    const sn_config *cfg;              /* the config in force when the job was claimed */
    const sn_route *route;             /* the job's route: labels, atlases, model */
    const pipeline_labels *table;      /* the label code table (labels' numbers and codes) */
    struct store *store;               /* the node's store (atlas library); may be NULL in tools */
    const char *device;                /* "cpu" or "cuda:N": where to compute */
    int device_index;                  /* N of cuda:N; -1 for the CPU */
    int threads;                       /* CPU threads it may use (0 = its choice) */
    int64_t job_id;                    /* for log lines; 0 outside the daemon */
    int64_t deadline_mono_ms;          /* sn_mono_ms() limit of this run; 0 = none */
    atomic_int *cancel;                /* set to non-zero when the run must stop (timeout, node
                                          stopping); may be NULL. Poll pipeline_method_should_stop
                                          between steps and return SN_ETIMEOUT when it says so. */
    /* out */
    int nstages;
    struct { char name[24]; double ms; } stages[PIPELINE_METHOD_STAGES];
                                       /* e.g. "preprocess", "register", "infer", "fuse" */
    char note[256];                    /* one line recorded with the job, e.g. "7 atlases" */
} pipeline_method_ctx;

/* Run the method on `target` (read-only). On success *labels_out is a new array of
 * target->nx*ny*nz label values (index i + nx*(j + ny*k), 0 = background, every other value in
 * ctx->table), freed by the caller with free(). Errors: any SN_E* with `err` saying why, the
 * worker records it as the job's reason; SN_EDEVICE means "the device failed, the CPU may
 * work": the worker runs it again with device "cpu" (and records that); SN_ETIMEOUT after
 * pipeline_method_should_stop(). */
typedef int (*pipeline_method_fn)(pipeline_method_ctx *ctx, const pipeline_volume *target,
                                  uint16_t **labels_out /* OUT */, char *err, size_t errlen);

typedef struct pipeline_method {
    char name[24];                     /* as routes name it: "atlas", "net", "both" */
    char algorithm_name[64];           /* SEG Algorithm Name, e.g. "segnode multi-atlas" */
    int uses_gpu;                      /* 1: runs on ctx->device when it is a GPU (one job at a
                                          time per device); 0: CPU only (device is "cpu") */
    pipeline_method_fn run;
} pipeline_method;

/* Register (copy) `m`; a method of the same name is replaced. Thread-safe; call before the
 * worker starts. SN_EINVAL (no name/run), SN_ENOMEM (more than PIPELINE_METHOD_MAX). */
int pipeline_method_register(const pipeline_method *m);

/* The same from its parts (names are truncated to their fields). */
int pipeline_method_add(const char *name, const char *algorithm_name, int uses_gpu, pipeline_method_fn run);

/* Remove every registration (tests). */
void pipeline_method_clear(void);

/* Copy the method called `name` into *out; SN_ENOENT if none is registered. Thread-safe. */
int pipeline_method_find(const char *name, pipeline_method *out);

/* Register the methods built into this binary (atlas, net, both: each that is compiled in).
 * Idempotent; never displaces a method a program registered under the same name. */
void pipeline_method_register_builtin(void);

/* The folder of a route's `model = DIR` into out: DIR itself when absolute, else DIR relative to
 * the folder of the config file (cfg->path; the working directory for the embedded defaults),
 * and when nothing is there, DIR among the files segnode ships (sn_shipped_path: `models/mr-t1`
 * is PREFIX/share/segnode/models/mr-t1 when installed). Existence is not checked beyond that:
 * out is the config-relative path when neither exists, for the error the load then reports.
 * SN_EINVAL when `model` is empty or the result does not fit in outlen. */
int pipeline_method_model_path(const sn_config *cfg, const char *model, char *out, size_t outlen);

/* The CUDA device the run should compute on: N for device "cuda:N", -1 for the CPU. */
int pipeline_method_gpu(const pipeline_method_ctx *ctx);

/* 1 when the run must stop now: the cancel flag is set or the deadline passed. */
int pipeline_method_should_stop(const pipeline_method_ctx *ctx);

/* Add a sub-stage timing to ctx (ignored past PIPELINE_METHOD_STAGES; a repeated name adds up). */
void pipeline_method_time(pipeline_method_ctx *ctx, const char *stage, double ms);

#ifdef __cplusplus
}
#endif

#endif
