/* tools/segnode/worker.c — the job worker (see worker.h for leases, devices, timeout, timings).
 * Each job thread: claim -> check the route and method -> read the series -> run the method
 * (device lock, CPU fallback) -> write the SEG into a store temp file -> record timings ->
 * store_job_finish (SEG + outbox rows in one transaction), or store_job_fail with the reason.
 * One supervisor thread renews the leases of running jobs, raises the cancel flag of runs past
 * their deadline (or whose lease was taken away), and re-queues jobs of dead runners.
 * Not here: the methods (pipeline/method.h), job rows (store/store_jobs.c). */
#include "tools/segnode/worker.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "common/status.h"
#include "common/util.h"
#include "pipeline/labels.h"
#include "pipeline/method.h"
#include "pipeline/segwrite.h"
#include "pipeline/volume.h"

#ifdef SEGNODE_HAVE_NN
#include "nn/nn.h"
#endif

#define WORKER_LOG "worker"
#define WORKER_DEVICES 16          /* GPU locks; cuda:N uses lock N % WORKER_DEVICES */
#define WORKER_DB_ERROR_MS 2000
#define WORKER_SEG_SOP_CLASS "1.2.840.10008.5.1.4.1.1.66.4"
#define WORKER_EXPLICIT_LE "1.2.840.10008.1.2.1"

typedef struct worker_slot {
    worker *w;
    int index;
    char id[128];                  /* runner id recorded in jobs.worker */
    pthread_t thread;
    /* The job in progress, shared with the supervisor under w->mu. */
    int active;
    int64_t job_id;
    int64_t deadline_mono_ms;
    int64_t last_beat_mono_ms;
    atomic_int cancel;
    atomic_int timed_out;
    atomic_int lost;
} worker_slot;

struct worker {
    store *st;
    worker_config_fn get_config;
    void *ctx;
    worker_opts opts;
    char labels_path[1024];
    pipeline_labels *table;        /* loaded at start; NULL if it failed (jobs then fail) */
    char table_err[512];
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int stopping;
    unsigned wakes;
    int nthreads;
    worker_slot *slots;
    pthread_t supervisor;
    int have_supervisor;
    pthread_mutex_t dev_mu[WORKER_DEVICES];
    worker_stats stats;
};

void worker_opts_default(worker_opts *o)
{
    memset(o, 0, sizeof *o);
}

/* CUDA devices the runtime finds, probed once per process (the first call starts the CUDA
 * runtime; devices do not come and go under a running node). */
static pthread_once_t worker__probe_once = PTHREAD_ONCE_INIT;
static int worker__cuda_count;
static char worker__cuda_why[160];

static void worker__probe(void)
{
#ifdef SEGNODE_HAVE_NN
    worker__cuda_count = nn_cuda_devices(worker__cuda_why, sizeof worker__cuda_why);
#else
    sn_strlcpy(worker__cuda_why, "this build has no CUDA backend", sizeof worker__cuda_why);
#endif
}

int worker_cuda_devices(const char **why)
{
    pthread_once(&worker__probe_once, worker__probe);
    if (why) *why = worker__cuda_why;
    return worker__cuda_count;
}

void worker_device_resolve(const char *node_device, char *out, size_t outlen)
{
    if (node_device && strncmp(node_device, "cuda:", 5) == 0) {
        sn_strlcpy(out, node_device, outlen);
        return;
    }
    if (node_device && strcmp(node_device, "cpu") == 0) {
        sn_strlcpy(out, "cpu", outlen);
        return;
    }
    /* auto: a CUDA build on a host without a usable device runs on the CPU from the start,
     * instead of failing over on every job */
    sn_strlcpy(out, worker_cuda_devices(NULL) > 0 ? "cuda:0" : "cpu", outlen);
}

/* Sleep up to ms unless woken or stopping. */
static void worker__idle(worker *w, int ms)
{
    struct timespec ts = sn_mono_deadline(ms);
    pthread_mutex_lock(&w->mu);
    unsigned k = w->wakes;
    while (!w->stopping && w->wakes == k)
        if (pthread_cond_timedwait(&w->cv, &w->mu, &ts) == ETIMEDOUT)
            break;
    pthread_mutex_unlock(&w->mu);
}

static int worker__stopping(worker *w)
{
    pthread_mutex_lock(&w->mu);
    int s = w->stopping;
    pthread_mutex_unlock(&w->mu);
    return s;
}

/* ---- one job -------------------------------------------------------------------------------- */

typedef struct worker__paths {
    char **p;
    int n, cap;
} worker__paths;

static int worker__path_cb(void *ctx, const char *sop, const char *cls, const char *path)
{
    (void)sop, (void)cls;
    worker__paths *ps = ctx;
    if (ps->n == ps->cap) {
        int nc = ps->cap ? ps->cap * 2 : 64;
        char **q = realloc(ps->p, sizeof *q * (size_t)nc);
        if (!q)
            return 1;
        ps->p = q;
        ps->cap = nc;
    }
    if (!(ps->p[ps->n] = strdup(path)))
        return 1;
    ps->n++;
    return 0;
}

static void worker__paths_free(worker__paths *ps)
{
    for (int i = 0; i < ps->n; i++)
        free(ps->p[i]);
    free(ps->p);
}

/* What the SEG's index rows need from the source series. */
typedef struct worker__source {
    char patient_id[128], patient_name[256], study_uid[65];
    int found;
} worker__source;

static int worker__series_cb(void *ctx, const store_series_row *r)
{
    worker__source *s = ctx;
    sn_strlcpy(s->patient_id, r->patient_id ? r->patient_id : "", sizeof s->patient_id);
    sn_strlcpy(s->patient_name, r->patient_name ? r->patient_name : "", sizeof s->patient_name);
    sn_strlcpy(s->study_uid, r->study_uid ? r->study_uid : "", sizeof s->study_uid);
    s->found = 1;
    return 1;
}

static const sn_route *worker__route(const sn_config *cfg, const char *name)
{
    for (int i = 0; i < cfg->nroutes; i++)
        if (strcmp(cfg->routes[i].name, name) == 0)
            return &cfg->routes[i];
    return NULL;
}

/* Checks a method cannot do better itself, made before loading anything. A relative model
 * folder is relative to the config file's folder (pipeline_method_model_path). */
static int worker__precheck(const sn_config *cfg, const char *method, const sn_route *r, char *err,
                            size_t errlen)
{
    if (strcmp(method, "net") == 0 || strcmp(method, "both") == 0) {
        struct stat sb;
        char dir[4096];
        if (!r->model[0])
            return sn_errf(err, errlen, SN_ECONFIG, "route %s: method %s needs a model (model = FOLDER)",
                           r->name, method);
        if (pipeline_method_model_path(cfg, r->model, dir, sizeof dir) != SN_OK)
            return sn_errf(err, errlen, SN_EINVAL, "route %s: model path too long", r->name);
        if (stat(dir, &sb) != 0)
            return sn_errf(err, errlen, SN_ENOENT, "route %s: model bundle %s: %s", r->name, dir,
                           strerror(errno));
        if (!S_ISDIR(sb.st_mode))
            return sn_errf(err, errlen, SN_EINVAL, "route %s: model bundle %s is not a folder", r->name,
                           dir);
    }
    return SN_OK;
}

static double worker__ms_since(int64_t t0)
{
    return (double)(sn_mono_ms() - t0);
}

static void worker__json_ms(cJSON *o, const char *key, double ms)
{
    cJSON_AddNumberToObject(o, key, (double)(int64_t)(ms + 0.5));
}

/* Run the method on the chosen device; CPU fallback on SN_EDEVICE. `device_rec` gets what is
 * recorded in the job. */
static int worker__run_method(worker *w, const pipeline_method *m, pipeline_method_ctx *mc,
                              const pipeline_volume *v, uint16_t **labels, char *device_rec,
                              size_t devlen, char *err, size_t errlen)
{
    char dev[32];
    int rc;
    worker_device_resolve(mc->cfg->node.device, dev, sizeof dev);
    if (!m->uses_gpu || strncmp(dev, "cuda:", 5) != 0) {
        mc->device = "cpu";
        mc->device_index = -1;
        sn_strlcpy(device_rec, "cpu", devlen);
        return m->run(mc, v, labels, err, errlen);
    }
    int idx = atoi(dev + 5);
    pthread_mutex_t *lock = &w->dev_mu[(idx < 0 ? 0 : idx) % WORKER_DEVICES];
    pthread_mutex_lock(lock);
    mc->device = dev;
    mc->device_index = idx;
    sn_strlcpy(device_rec, dev, devlen);
    rc = m->run(mc, v, labels, err, errlen);
    pthread_mutex_unlock(lock);
    if (rc != SN_EDEVICE || pipeline_method_should_stop(mc))
        return rc;
    SN_LOG_WARN(WORKER_LOG, "job %lld: %s failed on %s (%s); running it on the CPU", (long long)mc->job_id,
                m->name, dev, err);
    snprintf(device_rec, devlen, "cpu (fallback from %s: %.150s)", dev, err);
    pthread_mutex_lock(&w->mu);
    w->stats.fallbacks++;
    pthread_mutex_unlock(&w->mu);
    free(*labels);
    *labels = NULL;
    err[0] = '\0';
    mc->device = "cpu";
    mc->device_index = -1;
    return m->run(mc, v, labels, err, errlen);
}

static void worker__run(worker *w, worker_slot *slot, const store_job_claimed *job)
{
    sn_config *cfg = w->get_config(w->ctx);
    int64_t t_start = sn_mono_ms(), t;
    int rc = SN_OK, job_timeout = cfg->node.job_timeout > 0 ? cfg->node.job_timeout : 1800;
    char err[1024] = "", reason[1200] = "", device_rec[256] = "", tmp[4096] = "", e2[512] = "";
    pipeline_method m;
    worker__paths paths = {0};
    pipeline_volume *v = NULL;
    uint16_t *labels = NULL;
    cJSON *tj = cJSON_CreateObject(), *mj = NULL;
    const sn_route *route = NULL;

    pthread_mutex_lock(&w->mu);
    slot->active = 1;
    slot->job_id = job->id;
    slot->deadline_mono_ms = t_start + (int64_t)job_timeout * 1000;
    slot->last_beat_mono_ms = t_start;
    atomic_store(&slot->cancel, w->stopping);
    atomic_store(&slot->timed_out, 0);
    atomic_store(&slot->lost, 0);
    w->stats.running++;
    pthread_mutex_unlock(&w->mu);

    SN_LOG_INFO(WORKER_LOG, "job %lld: series %s, route %s, method %s, attempt %d%s", (long long)job->id,
                job->series_uid, job->route, job->method, job->attempts,
                job->replaces_job ? " (replaces an earlier job: new instances arrived)" : "");
    if (tj) {
        if (job->stable_ms > 0 && job->last_received_ms > 0)
            worker__json_ms(tj, "wait_stable_ms", (double)(job->stable_ms - job->last_received_ms));
        worker__json_ms(tj, "queue_ms", (double)(sn_now_ms() - job->created_ms));
        cJSON_AddNumberToObject(tj, "attempt", job->attempts);
        if (job->replaces_job)
            cJSON_AddNumberToObject(tj, "replaces_job", (double)job->replaces_job);
    }

    if (!(route = worker__route(cfg, job->route))) {
        rc = sn_errf(err, sizeof err, SN_ECONFIG, "route %s is no longer configured", job->route);
        goto fail;
    }
    if ((rc = worker__precheck(cfg, job->method, route, err, sizeof err)) != SN_OK)
        goto fail;
    if (pipeline_method_find(job->method, &m) != SN_OK) {
        rc = sn_errf(err, sizeof err, SN_EUNSUPPORTED, "method %s is not available in this build",
                     job->method);
        goto fail;
    }
    if (!w->table) {
        rc = sn_errf(err, sizeof err, SN_ECONFIG, "label table: %s", w->table_err);
        goto fail;
    }

    /* load */
    t = sn_mono_ms();
    if ((rc = store_instance_list(w->st, job->series_uid, worker__path_cb, &paths, err, sizeof err)) != SN_OK)
        goto fail;
    if (paths.n == 0) {
        rc = sn_errf(err, sizeof err, SN_ENOENT, "series %s has no stored instances", job->series_uid);
        goto fail;
    }
    pipeline_volume_opts vo;
    pipeline_volume_opts_default(&vo);
    vo.series_uid = job->series_uid;
    if ((rc = pipeline_volume_read_files((const char *const *)paths.p, paths.n, &vo, &v, err, sizeof err)) != SN_OK)
        goto fail;
    if (tj)
        worker__json_ms(tj, "load_ms", worker__ms_since(t));
    if (pipeline_method_should_stop(&(pipeline_method_ctx){.cancel = &slot->cancel})) {
        rc = sn_errf(err, sizeof err, SN_ETIMEOUT, "stopped");
        goto fail;
    }

    /* method */
    pipeline_method_ctx mc;
    memset(&mc, 0, sizeof mc);
    mc.cfg = cfg;
    mc.route = route;
    mc.table = w->table;
    mc.store = w->st;
    mc.job_id = job->id;
    mc.deadline_mono_ms = slot->deadline_mono_ms;
    mc.cancel = &slot->cancel;
    t = sn_mono_ms();
    rc = worker__run_method(w, &m, &mc, v, &labels, device_rec, sizeof device_rec, err, sizeof err);
    if (tj) {
        double pre = 0;
        mj = cJSON_CreateObject();
        for (int i = 0; i < mc.nstages && mj; i++) {
            char key[40];
            if (strcmp(mc.stages[i].name, "preprocess") == 0)
                pre = mc.stages[i].ms;
            snprintf(key, sizeof key, "%s_ms", mc.stages[i].name);
            worker__json_ms(mj, key, mc.stages[i].ms);
        }
        worker__json_ms(tj, "preprocess_ms", pre);
        worker__json_ms(tj, "method_ms", worker__ms_since(t));
        if (mj)
            cJSON_AddItemToObject(tj, "method", mj);
        cJSON_AddStringToObject(tj, "device", device_rec);
        if (mc.note[0])
            cJSON_AddStringToObject(tj, "note", mc.note);
    }
    store_job_set_device(w->st, job->id, device_rec, NULL, 0);
    if (rc == SN_OK && !labels)
        rc = sn_errf(err, sizeof err, SN_EINTERNAL, "method %s returned no labels", m.name);
    if (rc != SN_OK)
        goto fail;
    if (atomic_load(&slot->timed_out) || atomic_load(&slot->lost) ||
        (atomic_load(&slot->cancel) && worker__stopping(w))) {
        rc = sn_errf(err, sizeof err, SN_ETIMEOUT, "stopped");
        goto fail;
    }

    /* write the SEG */
    t = sn_mono_ms();
    if ((rc = store_tmp_create(w->st, tmp, sizeof tmp, err, sizeof err)) != SN_OK)
        goto fail;
    pipeline_seg_labelmap lm;
    memset(&lm, 0, sizeof lm);
    lm.nx = v->nx, lm.ny = v->ny, lm.nz = v->nz, lm.bytes_per_voxel = 2, lm.data = labels;
    char method_name[64], desc[160];
    snprintf(method_name, sizeof method_name, "segnode %s", m.name);
    snprintf(desc, sizeof desc, "segnode %s %s", m.name, route->name);
    desc[64] = '\0';   /* Series Description is LO: 64 characters at most */
    pipeline_seg_write_opts wo;
    pipeline_seg_write_opts_default(&wo);
    wo.algorithm_name = m.algorithm_name[0] ? m.algorithm_name : method_name;
    wo.method = method_name;
    wo.series_description = desc;
    pipeline_seg_write_info info;
    if ((rc = pipeline_seg_write_series(tmp, v, paths.p[0], &lm, w->table, &wo, &info, err, sizeof err)) != SN_OK)
        goto fail_tmp;
    if (tj)
        worker__json_ms(tj, "write_seg_ms", worker__ms_since(t));

    /* store it and queue the sends */
    worker__source src = {0};
    if ((rc = store_series_list(w->st, job->series_uid, worker__series_cb, &src, err, sizeof err)) != SN_OK)
        goto fail_tmp;
    store_instance_meta meta;
    memset(&meta, 0, sizeof meta);
    meta.patient_id = src.patient_id;
    meta.patient_name = src.patient_name;
    meta.study_uid = src.study_uid[0] ? src.study_uid : v->study_uid;
    meta.series_uid = info.series_uid;
    meta.modality = "SEG";
    meta.series_description = desc;
    meta.frame_of_reference_uid = v->frame_of_reference_uid;
    meta.series_number = wo.series_number;
    meta.sop_class_uid = WORKER_SEG_SOP_CLASS;
    meta.sop_instance_uid = info.sop_uid;
    meta.transfer_syntax_uid = WORKER_EXPLICIT_LE;
    meta.instance_number = wo.instance_number;
    if (tj) {
        worker__json_ms(tj, "store_ms", 0);
        worker__json_ms(tj, "total_ms", worker__ms_since(t_start));
        char *js = cJSON_PrintUnformatted(tj);
        if (js)
            store_job_set_timings(w->st, job->id, js, NULL, 0);
        free(js);
    }
    t = sn_mono_ms();
    if ((rc = store_job_finish(w->st, job->id, tmp, &meta, cfg, err, sizeof err)) != SN_OK) {
        tmp[0] = '\0';   /* consumed either way */
        goto fail;
    }
    if (tj) {
        /* The stored figure gains store_ms now the commit took place. */
        cJSON_ReplaceItemInObject(tj, "store_ms", cJSON_CreateNumber((double)(int64_t)worker__ms_since(t)));
        cJSON_ReplaceItemInObject(tj, "total_ms", cJSON_CreateNumber((double)(int64_t)worker__ms_since(t_start)));
        char *js = cJSON_PrintUnformatted(tj);
        if (js)
            store_job_set_timings(w->st, job->id, js, NULL, 0);
        free(js);
    }
    SN_LOG_INFO(WORKER_LOG, "job %lld done on %s in %lld ms: SEG %s (%d segments, %d frames)",
                (long long)job->id, device_rec, (long long)(sn_mono_ms() - t_start), info.sop_uid,
                info.segments, info.frames);
    pthread_mutex_lock(&w->mu);
    w->stats.done++;
    pthread_mutex_unlock(&w->mu);
    if (w->opts.on_finished)
        w->opts.on_finished(w->opts.on_finished_ctx, job->id);
    goto out;

fail_tmp:
    store_tmp_discard(w->st, tmp);
fail:
    if (atomic_load(&slot->lost)) {
        SN_LOG_WARN(WORKER_LOG, "job %lld: lease lost (taken over or changed by an admin); abandoned",
                    (long long)job->id);
        goto out;
    }
    if (atomic_load(&slot->timed_out) ||
        (rc == SN_ETIMEOUT && sn_mono_ms() >= slot->deadline_mono_ms && !worker__stopping(w))) {
        snprintf(reason, sizeof reason, "timed out after %d s", job_timeout);
        pthread_mutex_lock(&w->mu);
        w->stats.timeouts++;
        pthread_mutex_unlock(&w->mu);
    } else if (atomic_load(&slot->cancel) && worker__stopping(w)) {
        if (store_job_release(w->st, job->id, slot->id, e2, sizeof e2) == SN_OK)
            SN_LOG_INFO(WORKER_LOG, "job %lld: interrupted by the node stopping; pending again",
                        (long long)job->id);
        else
            SN_LOG_WARN(WORKER_LOG, "job %lld: release: %s", (long long)job->id, e2);
        goto out;
    } else {
        snprintf(reason, sizeof reason, "%s", err[0] ? err : sn_strerror(rc));
    }
    if (tj) {
        cJSON_AddStringToObject(tj, "failed", sn_strerror(rc));
        worker__json_ms(tj, "total_ms", worker__ms_since(t_start));
        char *js = cJSON_PrintUnformatted(tj);
        if (js)
            store_job_set_timings(w->st, job->id, js, NULL, 0);
        free(js);
    }
    if (store_job_fail(w->st, job->id, reason, e2, sizeof e2) != SN_OK)
        SN_LOG_ERROR(WORKER_LOG, "job %lld: cannot record the failure (%s): %s", (long long)job->id,
                     reason, e2);
    pthread_mutex_lock(&w->mu);
    w->stats.failed++;
    pthread_mutex_unlock(&w->mu);
out:
    pthread_mutex_lock(&w->mu);
    slot->active = 0;
    slot->job_id = 0;
    w->stats.running--;
    pthread_mutex_unlock(&w->mu);
    cJSON_Delete(tj);
    free(labels);
    pipeline_volume_free(v);
    worker__paths_free(&paths);
    sn_config_unref(cfg);
}

static void *worker__thread(void *arg)
{
    worker_slot *slot = arg;
    worker *w = slot->w;
    store_job_claimed job;
    char err[512];
    int poll = w->opts.poll_ms > 0 ? w->opts.poll_ms : WORKER_POLL_MS;
    int64_t lease = w->opts.lease_ms > 0 ? w->opts.lease_ms : WORKER_LEASE_MS;
    while (!worker__stopping(w)) {
        err[0] = '\0';
        int rc = store_job_claim(w->st, slot->id, lease, sn_now_ms(), &job, err, sizeof err);
        if (rc == SN_ENOENT) {
            worker__idle(w, poll);
        } else if (rc != SN_OK) {
            SN_LOG_ERROR(WORKER_LOG, "claim: %s", err);
            worker__idle(w, WORKER_DB_ERROR_MS);
        } else {
            worker__run(w, slot, &job);
        }
    }
    return NULL;
}

/* Leases, deadlines and recovery. */
static void *worker__supervise(void *arg)
{
    worker *w = arg;
    int64_t lease = w->opts.lease_ms > 0 ? w->opts.lease_ms : WORKER_LEASE_MS;
    int64_t beat = lease / 3 > 0 ? lease / 3 : 1, tick = beat < 1000 ? beat : 1000;
    int64_t recover_every = lease / 2 > 1000 ? lease / 2 : 1000, last_recover = sn_mono_ms();
    char err[512];
    while (!worker__stopping(w)) {
        worker__idle(w, (int)tick);
        int64_t now = sn_mono_ms();
        for (int i = 0; i < w->nthreads; i++) {
            worker_slot *s = &w->slots[i];
            pthread_mutex_lock(&w->mu);
            int active = s->active;
            int64_t job = s->job_id, deadline = s->deadline_mono_ms, last = s->last_beat_mono_ms;
            pthread_mutex_unlock(&w->mu);
            if (!active)
                continue;
            if (deadline > 0 && now >= deadline && !atomic_load(&s->timed_out)) {
                SN_LOG_WARN(WORKER_LOG, "job %lld: past its deadline; asking the method to stop",
                            (long long)job);
                atomic_store(&s->timed_out, 1);
                atomic_store(&s->cancel, 1);
            }
            if (now - last >= beat) {
                int rc = store_job_heartbeat(w->st, job, s->id, lease, sn_now_ms(), err, sizeof err);
                if (rc == SN_ENOENT) {
                    SN_LOG_WARN(WORKER_LOG, "job %lld: %s; stopping it", (long long)job, err);
                    atomic_store(&s->lost, 1);
                    atomic_store(&s->cancel, 1);
                } else if (rc != SN_OK) {
                    SN_LOG_ERROR(WORKER_LOG, "job %lld: heartbeat: %s", (long long)job, err);
                }
                pthread_mutex_lock(&w->mu);
                if (s->active && s->job_id == job)
                    s->last_beat_mono_ms = now;
                pthread_mutex_unlock(&w->mu);
            }
        }
        if (now - last_recover >= recover_every) {
            sn_config *cfg = w->get_config(w->ctx);
            int max = cfg->node.job_max_attempts;
            sn_config_unref(cfg);
            int nr = 0;
            if (store_job_recover(w->st, sn_now_ms(), max, &nr, NULL, err, sizeof err) != SN_OK)
                SN_LOG_ERROR(WORKER_LOG, "recover: %s", err);
            else if (nr)
                worker_wake(w);
            last_recover = now;
        }
    }
    return NULL;
}

int worker_start(store *st, worker_config_fn get_config, void *ctx, const worker_opts *opts,
                 worker **out, char *err, size_t errlen)
{
    int rc, n;
    if (!st || !get_config || !out)
        return sn_errf(err, errlen, SN_EINVAL, "worker_start: bad arguments");
    *out = NULL;
    worker *w = calloc(1, sizeof *w);
    if (!w)
        return sn_errf(err, errlen, SN_ENOMEM, "out of memory");
    w->st = st;
    w->get_config = get_config;
    w->ctx = ctx;
    if (opts)
        w->opts = *opts;
    pthread_mutex_init(&w->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&w->cv, &ca);
    pthread_condattr_destroy(&ca);
    for (int i = 0; i < WORKER_DEVICES; i++)
        pthread_mutex_init(&w->dev_mu[i], NULL);

    sn_config *cfg = get_config(ctx);
    n = w->opts.threads > 0 ? w->opts.threads : cfg->node.workers > 0 ? cfg->node.workers : 1;
    int max_attempts = cfg->node.job_max_attempts;
    worker_device_resolve(cfg->node.device, w->stats.device, sizeof w->stats.device);
    int timeout = cfg->node.job_timeout;
    if (w->opts.labels_path && *w->opts.labels_path)
        sn_strlcpy(w->labels_path, w->opts.labels_path, sizeof w->labels_path);
    else
        pipeline_labels_default_path(cfg->path, w->labels_path, sizeof w->labels_path);
    sn_config_unref(cfg);
    w->opts.labels_path = w->labels_path;
    if (pipeline_labels_load(w->labels_path, &w->table, w->table_err, sizeof w->table_err) != SN_OK)
        SN_LOG_ERROR(WORKER_LOG, "label table %s: %s; jobs will fail until it is fixed", w->labels_path,
                     w->table_err);
    pipeline_method_register_builtin();

    int nr = 0, nf = 0;
    if ((rc = store_job_recover(st, sn_now_ms(), max_attempts, &nr, &nf, err, errlen)) != SN_OK) {
        worker_stop(w);
        return rc;
    }

    char host[64] = "host";
    gethostname(host, sizeof host - 1);
    host[sizeof host - 1] = '\0';
    w->slots = calloc((size_t)n, sizeof *w->slots);
    if (!w->slots) {
        worker_stop(w);
        return sn_errf(err, errlen, SN_ENOMEM, "out of memory");
    }
    w->stats.threads = n;
    for (int i = 0; i < n; i++) {
        worker_slot *s = &w->slots[i];
        s->w = w;
        s->index = i;
        if (w->opts.worker_id && *w->opts.worker_id)
            snprintf(s->id, sizeof s->id, "%s/%d", w->opts.worker_id, i);
        else
            snprintf(s->id, sizeof s->id, "%s:%d:%lld/%d", host, (int)getpid(), (long long)sn_now_ms(), i);
    }
    for (int i = 0; i < n; i++) {
        if ((rc = pthread_create(&w->slots[i].thread, NULL, worker__thread, &w->slots[i])) != 0) {
            worker_stop(w);
            return sn_errf(err, errlen, SN_EINTERNAL, "start job thread: %s", strerror(rc));
        }
        w->nthreads++;
    }
    if ((rc = pthread_create(&w->supervisor, NULL, worker__supervise, w)) != 0) {
        worker_stop(w);
        return sn_errf(err, errlen, SN_EINTERNAL, "start job supervisor: %s", strerror(rc));
    }
    w->have_supervisor = 1;
    char dev_line[256];
    const char *why = NULL;
    if (strcmp(w->stats.device, "cpu") != 0)
        snprintf(dev_line, sizeof dev_line, "GPU device %s", w->stats.device);
    else if (strcmp(cfg->node.device, "auto") == 0 && worker_cuda_devices(&why) == 0)
        snprintf(dev_line, sizeof dev_line, "device cpu (auto: no CUDA device: %s)", why);
    else
        snprintf(dev_line, sizeof dev_line, "device cpu");
    SN_LOG_INFO(WORKER_LOG, "%d job thread(s); %s; timeout %d s; %d run(s) per job%s", n, dev_line, timeout,
                max_attempts, nr || nf ? "; interrupted jobs recovered" : "");
    *out = w;
    return SN_OK;
}

void worker_wake(worker *w)
{
    if (!w)
        return;
    pthread_mutex_lock(&w->mu);
    w->wakes++;
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

void worker_stats_get(worker *w, worker_stats *out)
{
    memset(out, 0, sizeof *out);
    if (!w)
        return;
    pthread_mutex_lock(&w->mu);
    *out = w->stats;
    pthread_mutex_unlock(&w->mu);
}

void worker_stop(worker *w)
{
    if (!w)
        return;
    pthread_mutex_lock(&w->mu);
    w->stopping = 1;
    for (int i = 0; i < w->nthreads; i++)
        if (w->slots[i].active)
            atomic_store(&w->slots[i].cancel, 1);
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
    for (int i = 0; i < w->nthreads; i++)
        pthread_join(w->slots[i].thread, NULL);
    if (w->have_supervisor)
        pthread_join(w->supervisor, NULL);
    free(w->slots);
    pipeline_labels_free(w->table);
    for (int i = 0; i < WORKER_DEVICES; i++)
        pthread_mutex_destroy(&w->dev_mu[i]);
    pthread_cond_destroy(&w->cv);
    pthread_mutex_destroy(&w->mu);
    free(w);
}
