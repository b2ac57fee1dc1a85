/* tools/segnode/worker.h — the job worker (library sn_worker): threads that claim pending jobs
 * from the store and run them — read the series, run the route's method (pipeline/method.h) on
 * the chosen device, write the SEG into a store temp file, and store_job_finish it (which queues
 * the outbox rows) — or store_job_fail with the reason. `segnode serve` starts one; the test
 * driver (tests/worker/worker_driver.c) starts one with a method of its own.
 *
 * Leases: a claimed job carries a lease (opts.lease_ms) that a supervisor thread renews every
 * lease/3 while the job runs. A process that dies leaves the lease to run out; the next worker
 * (this one at start, and any worker while idle) re-queues such jobs with the dead run counted,
 * and fails them after [node] job_max_attempts runs.
 * Devices: [node] device = cpu | cuda:N | auto (cuda:0 when this build has CUDA and the runtime
 * finds a device, else cpu). A
 * method with uses_gpu runs on the GPU, one job at a time per device (a mutex per device); when
 * it returns SN_EDEVICE the run is repeated on the CPU and the job's device says so
 * ("cpu (fallback from cuda:0: reason)"). CPU-only methods run in parallel up to the threads.
 * Timeout: each run gets a deadline ([node] job_timeout) and a cancel flag in its ctx; the
 * supervisor raises the flag at the deadline, and a run that ends after it fails the job with
 * "timed out after N s". Stopping raises every flag and puts the interrupted jobs back to pending
 * without counting the run.
 * Timings: every job gets a JSON object in jobs.timings (milliseconds):
 *   {"wait_stable_ms", "queue_ms", "load_ms", "preprocess_ms", "method_ms",
 *    "method": {"<stage>_ms", ...}, "write_seg_ms", "store_ms", "total_ms", "attempt", "device"}
 * where wait_stable_ms = last instance -> series stable, queue_ms = job created -> claimed,
 * preprocess_ms and method.* as the method reports them (register, infer, fuse ...), store_ms =
 * store_job_finish; send_ms (job end -> last destination sent) is added at list time
 * (store_job_list_detail). A failed job keeps the stages it got through. */
#ifndef SEGNODE_TOOLS_SEGNODE_WORKER_H
#define SEGNODE_TOOLS_SEGNODE_WORKER_H

#include <stddef.h>
#include <stdint.h>

#include "common/config.h"
#include "store/store.h"

typedef struct worker worker;

/* Returns a new reference to the config in force (the daemon's holder). */
typedef sn_config *(*worker_config_fn)(void *ctx);

typedef struct worker_opts {
    int threads;                   /* job threads; 0 = [node] workers of the config at start */
    int64_t lease_ms;              /* lease of a claimed job; 0 = WORKER_LEASE_MS */
    int poll_ms;                   /* idle poll for new jobs; 0 = WORKER_POLL_MS */
    const char *labels_path;       /* label code table; NULL = pipeline_labels_default_path
                                      for the config's file */
    const char *worker_id;         /* prefix of the runner id recorded in jobs; NULL = host:pid */
    /* Called (from a worker thread) after a job finished, so the sender can start at once. */
    void (*on_finished)(void *ctx, int64_t job_id);
    void *on_finished_ctx;
} worker_opts;

#define WORKER_LEASE_MS 30000
#define WORKER_POLL_MS 500

/* What the worker is doing now (for /status and logs). */
typedef struct worker_stats {
    int threads;
    int running;                   /* jobs in progress */
    char device[32];               /* device GPU jobs use: "cpu" or "cuda:N" */
    int64_t done, failed, fallbacks, timeouts;  /* since start */
} worker_stats;

void worker_opts_default(worker_opts *opts);

/* Recover jobs whose runner died (lease expired), then start the threads. `opts` may be NULL
 * (defaults). On success *out is the running worker. SN_EINVAL, SN_ENOMEM, SN_EINTERNAL, or
 * the store's error from recovery. */
int worker_start(store *st, worker_config_fn get_config, void *ctx, const worker_opts *opts,
                 worker **out, char *err, size_t errlen);

/* A job was created (the sweeper ran): poll now. Accepts NULL. */
void worker_wake(worker *w);

void worker_stats_get(worker *w, worker_stats *out);

/* Stop: raise every running job's cancel flag, wait for the threads, give interrupted jobs back
 * (pending, run not counted). Accepts NULL. */
void worker_stop(worker *w);

/* The device GPU methods get for `node_device` ("auto", "cpu", "cuda:N"): auto is cuda:0 when
 * this build has CUDA and the runtime finds a device, else cpu. */
void worker_device_resolve(const char *node_device, char *out, size_t outlen);

/* CUDA devices found (probed once per process); *why (may be NULL) says why there are none. */
int worker_cuda_devices(const char **why);

#endif
