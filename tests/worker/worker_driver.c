/* tests/worker/worker_driver.c — drives the job worker (tools/segnode/worker.h) and the job rows
 * (store_jobs.c) on a node's storage, with a method of its own registered under the route's
 * method name, so the machinery is tested before the real methods land. The series come from a
 * real `segnode serve` (workers = 0) that the scripts fill with storescu.
 * usage: worker_driver CONF claim-race THREADS
 *        worker_driver CONF recover
 *        worker_driver CONF run [--method fast|slow|devfail] [--expect N] [--wait S]
 *                               [--threads T] [--lease MS] [--job-timeout S] [--device D]
 * claim-race: THREADS threads claim until none is left; each job must be claimed exactly once;
 *   then every claimed job is released (pending again). Prints "claimed N".
 * recover: lease expiry -> pending with the run counted; out of runs -> failed with the reason;
 *   retry -> pending. Leaves the job pending.
 * run: run the worker until N jobs (default: all) are done or failed, or S seconds (default 60).
 *   fast: a small box of the first label of the table; slow: waits (honouring cancel) for 120 s;
 *   devfail: a GPU method that fails with SN_EDEVICE off the CPU (tests the CPU fallback).
 * Exit 0 when the checks pass, 1 otherwise, 2 usage. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/config.h"
#include "common/log.h"
#include "common/status.h"
#include "common/util.h"
#include "pipeline/method.h"
#include "store/store.h"
#include "tools/segnode/worker.h"

static sn_config *g_cfg;

static sn_config *get_config(void *ctx)
{
    (void)ctx;
    return sn_config_ref(g_cfg);
}

/* ---- methods -------------------------------------------------------------------------------- */

static int fake_labels(pipeline_method_ctx *ctx, const pipeline_volume *v, uint16_t **out, char *err,
                       size_t errlen)
{
    size_t n = (size_t)v->nx * v->ny * v->nz;
    uint16_t *l = calloc(n, sizeof *l);
    if (!l)
        return sn_errf(err, errlen, SN_ENOMEM, "out of memory");
    const pipeline_label *lab = pipeline_labels_at(ctx->table, 0);
    int64_t t = sn_mono_ms();
    for (int k = v->nz / 4; k < 3 * v->nz / 4 + 1 && k < v->nz; k++)
        for (int j = v->ny / 4; j < 3 * v->ny / 4; j++)
            for (int i = v->nx / 4; i < 3 * v->nx / 4; i++)
                l[i + (size_t)v->nx * (j + (size_t)v->ny * k)] = (uint16_t)lab->number;
    pipeline_method_time(ctx, "preprocess", 1);
    pipeline_method_time(ctx, "register", (double)(sn_mono_ms() - t));
    pipeline_method_time(ctx, "fuse", 0.5);
    snprintf(ctx->note, sizeof ctx->note, "fake method on %s", ctx->device);
    *out = l;
    return SN_OK;
}

static int method_fast(pipeline_method_ctx *ctx, const pipeline_volume *v, uint16_t **out, char *err,
                       size_t errlen)
{
    return fake_labels(ctx, v, out, err, errlen);
}

static int method_slow(pipeline_method_ctx *ctx, const pipeline_volume *v, uint16_t **out, char *err,
                       size_t errlen)
{
    int64_t until = sn_mono_ms() + 120000;
    fprintf(stderr, "slow method: job %lld running\n", (long long)ctx->job_id);
    while (sn_mono_ms() < until) {
        if (pipeline_method_should_stop(ctx))
            return sn_errf(err, errlen, SN_ETIMEOUT, "stopped");
        usleep(20000);
    }
    return fake_labels(ctx, v, out, err, errlen);
}

static int method_devfail(pipeline_method_ctx *ctx, const pipeline_volume *v, uint16_t **out,
                          char *err, size_t errlen)
{
    if (ctx->device_index >= 0)
        return sn_errf(err, errlen, SN_EDEVICE, "simulated CUDA failure on %s", ctx->device);
    return fake_labels(ctx, v, out, err, errlen);
}

/* ---- job counts ----------------------------------------------------------------------------- */

typedef struct counts {
    int by_state[STORE_JOB__COUNT];
} counts;

static int count_cb(void *ctx, const store_job_detail *d)
{
    counts *c = ctx;
    if ((unsigned)d->job.state < STORE_JOB__COUNT)
        c->by_state[d->job.state]++;
    return 0;
}

static counts job_counts(store *st)
{
    counts c;
    memset(&c, 0, sizeof c);
    store_job_list_detail(st, -1, -1, count_cb, &c, NULL, 0);
    return c;
}

/* ---- claim-race ----------------------------------------------------------------------------- */

#define RACE_MAX 4096
typedef struct race {
    store *st;
    pthread_mutex_t mu;
    int64_t ids[RACE_MAX];
    char who[RACE_MAX][64];
    int n;
} race;

typedef struct race_thread {
    race *r;
    char id[64];
} race_thread;

static void *race_fn(void *arg)
{
    race_thread *t = arg;
    store_job_claimed job;
    char err[256];
    for (;;) {
        int rc = store_job_claim(t->r->st, t->id, 60000, sn_now_ms(), &job, err, sizeof err);
        if (rc == SN_ENOENT)
            break;
        if (rc != SN_OK) {
            fprintf(stderr, "claim: %s\n", err);
            continue;   /* busy: try again */
        }
        pthread_mutex_lock(&t->r->mu);
        if (t->r->n < RACE_MAX) {
            t->r->ids[t->r->n] = job.id;
            sn_strlcpy(t->r->who[t->r->n], t->id, sizeof t->r->who[0]);
            t->r->n++;
        }
        pthread_mutex_unlock(&t->r->mu);
    }
    return NULL;
}

static int cmd_claim_race(store *st, int nthreads)
{
    static race r;
    r.st = st;
    pthread_mutex_init(&r.mu, NULL);
    pthread_t th[64];
    race_thread rt[64];
    if (nthreads < 1 || nthreads > 64)
        nthreads = 4;
    for (int i = 0; i < nthreads; i++) {
        rt[i].r = &r;
        snprintf(rt[i].id, sizeof rt[i].id, "race/%d", i);
        pthread_create(&th[i], NULL, race_fn, &rt[i]);
    }
    for (int i = 0; i < nthreads; i++)
        pthread_join(th[i], NULL);
    int dup = 0;
    for (int i = 0; i < r.n; i++)
        for (int j = i + 1; j < r.n; j++)
            dup += r.ids[i] == r.ids[j];
    counts c = job_counts(st);
    printf("claimed %d dup %d running %d pending %d\n", r.n, dup, c.by_state[STORE_JOB_RUNNING],
           c.by_state[STORE_JOB_PENDING]);
    int bad = dup || c.by_state[STORE_JOB_PENDING] != 0 || c.by_state[STORE_JOB_RUNNING] != r.n;
    for (int i = 0; i < r.n; i++) {
        char err[256];
        if (store_job_release(st, r.ids[i], r.who[i], err, sizeof err) != SN_OK) {
            fprintf(stderr, "release %lld: %s\n", (long long)r.ids[i], err);
            bad = 1;
        }
    }
    return bad;
}

/* ---- recover -------------------------------------------------------------------------------- */

typedef struct one_job {
    int64_t id;
    store_job_state state;
    int attempts;
    char error[256];
} one_job;

static int one_cb(void *ctx, const store_job_detail *d)
{
    one_job *o = ctx;
    o->id = d->job.id;
    o->state = d->job.state;
    o->attempts = d->job.attempts;
    sn_strlcpy(o->error, d->job.error ? d->job.error : "", sizeof o->error);
    return 1;
}

static one_job job_get(store *st, int64_t id)
{
    one_job o;
    memset(&o, 0, sizeof o);
    store_job_list_detail(st, id, -1, one_cb, &o, NULL, 0);
    return o;
}

#define CHECK(cond, ...)                                                                          \
    do {                                                                                          \
        if (cond) {                                                                               \
            printf("ok: ");                                                                       \
        } else {                                                                                  \
            printf("FAIL: ");                                                                     \
            bad = 1;                                                                              \
        }                                                                                         \
        printf(__VA_ARGS__);                                                                      \
        printf("\n");                                                                             \
    } while (0)

static int cmd_recover(store *st)
{
    store_job_claimed job;
    char err[512] = "";
    int bad = 0, nr = 0, nf = 0;
    int rc = store_job_claim(st, "dead/0", 100, sn_now_ms(), &job, err, sizeof err);
    CHECK(rc == SN_OK, "claim a job with a 100 ms lease (%s)", err);
    if (rc != SN_OK)
        return 1;
    one_job o = job_get(st, job.id);
    int a0 = o.attempts;
    CHECK(o.state == STORE_JOB_RUNNING, "job %lld running, attempts %d", (long long)job.id, a0);
    rc = store_job_recover(st, sn_now_ms(), 10, &nr, &nf, err, sizeof err);
    CHECK(rc == SN_OK && nr == 0 && job_get(st, job.id).state == STORE_JOB_RUNNING,
          "a live lease is not recovered");
    CHECK(store_job_heartbeat(st, job.id, "other/0", 100, sn_now_ms(), err, sizeof err) == SN_ENOENT,
          "another runner cannot renew the lease");
    usleep(300000);
    rc = store_job_recover(st, sn_now_ms(), 10, &nr, &nf, err, sizeof err);
    o = job_get(st, job.id);
    CHECK(rc == SN_OK && nr >= 1 && o.state == STORE_JOB_PENDING && o.attempts == a0,
          "expired lease -> pending, the run counted (attempts %d, error '%s')", o.attempts, o.error);
    CHECK(store_job_heartbeat(st, job.id, "dead/0", 100, sn_now_ms(), err, sizeof err) == SN_ENOENT,
          "the dead runner's heartbeat is refused after recovery");
    /* Out of runs: max = attempts after the next claim. */
    rc = store_job_claim(st, "dead/1", 100, sn_now_ms(), &job, err, sizeof err);
    CHECK(rc == SN_OK && job.id == o.id, "the same job is claimed again (oldest first)");
    usleep(300000);
    rc = store_job_recover(st, sn_now_ms(), job.attempts, &nr, &nf, err, sizeof err);
    o = job_get(st, job.id);
    CHECK(rc == SN_OK && nf == 1 && o.state == STORE_JOB_FAILED && strstr(o.error, "gave up after"),
          "out of runs -> failed: '%s'", o.error);
    rc = store_job_retry(st, job.id, err, sizeof err);
    o = job_get(st, job.id);
    CHECK(rc == SN_OK && o.state == STORE_JOB_PENDING, "retry -> pending");
    return bad;
}

/* ---- run ------------------------------------------------------------------------------------ */

static int cmd_run(store *st, int argc, char **argv)
{
    const char *method = "fast";
    int expect = -1, wait_s = 60, threads = 1;
    int64_t lease = 0;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--method") && i + 1 < argc)
            method = argv[++i];
        else if (!strcmp(argv[i], "--expect") && i + 1 < argc)
            expect = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--wait") && i + 1 < argc)
            wait_s = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc)
            threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--lease") && i + 1 < argc)
            lease = atoll(argv[++i]);
        else if (!strcmp(argv[i], "--job-timeout") && i + 1 < argc)
            g_cfg->node.job_timeout = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--device") && i + 1 < argc)
            sn_strlcpy(g_cfg->node.device, argv[++i], sizeof g_cfg->node.device);
        else {
            fprintf(stderr, "run: unknown argument %s\n", argv[i]);
            return 2;
        }
    }
    pipeline_method m;
    memset(&m, 0, sizeof m);
    sn_strlcpy(m.algorithm_name, "segnode test method", sizeof m.algorithm_name);
    m.run = !strcmp(method, "slow") ? method_slow : !strcmp(method, "devfail") ? method_devfail : method_fast;
    m.uses_gpu = !strcmp(method, "devfail");
    const char *names[] = {"atlas", "net", "both"};
    for (int i = 0; i < 3; i++) {
        sn_strlcpy(m.name, names[i], sizeof m.name);
        pipeline_method_register(&m);
    }
    worker_opts o;
    worker_opts_default(&o);
    o.threads = threads;
    o.lease_ms = lease;
    o.poll_ms = 100;
    o.worker_id = "driver";
    worker *w = NULL;
    char err[512] = "";
    if (worker_start(st, get_config, NULL, &o, &w, err, sizeof err) != SN_OK) {
        fprintf(stderr, "worker_start: %s\n", err);
        return 1;
    }
    int64_t until = sn_mono_ms() + (int64_t)wait_s * 1000;
    counts c;
    for (;;) {
        c = job_counts(st);
        int ended = c.by_state[STORE_JOB_DONE] + c.by_state[STORE_JOB_FAILED];
        if (expect >= 0 ? ended >= expect
                        : c.by_state[STORE_JOB_PENDING] + c.by_state[STORE_JOB_RUNNING] == 0)
            break;
        if (sn_mono_ms() > until)
            break;
        usleep(100000);
    }
    worker_stats ws;
    worker_stats_get(w, &ws);
    worker_stop(w);
    c = job_counts(st);
    printf("done %d failed %d pending %d running %d fallbacks %lld timeouts %lld\n",
           c.by_state[STORE_JOB_DONE], c.by_state[STORE_JOB_FAILED], c.by_state[STORE_JOB_PENDING],
           c.by_state[STORE_JOB_RUNNING], (long long)ws.fallbacks, (long long)ws.timeouts);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: worker_driver CONF claim-race THREADS | recover | run [options]\n");
        return 2;
    }
    char err[1024] = "";
    if (sn_config_load(argv[1], &g_cfg, err, sizeof err) != SN_OK) {
        fprintf(stderr, "%s\n", err);
        return 2;
    }
    sn_log_set_level(SN_LOG_LEVEL_INFO);
    store *st = NULL;
    if (store_open(g_cfg->node.storage, &st, err, sizeof err) != SN_OK) {
        fprintf(stderr, "store: %s\n", err);
        return 1;
    }
    int rc;
    if (!strcmp(argv[2], "claim-race"))
        rc = cmd_claim_race(st, argc > 3 ? atoi(argv[3]) : 4);
    else if (!strcmp(argv[2], "recover"))
        rc = cmd_recover(st);
    else if (!strcmp(argv[2], "run"))
        rc = cmd_run(st, argc - 3, argv + 3);
    else {
        fprintf(stderr, "unknown command %s\n", argv[2]);
        rc = 2;
    }
    store_close(st);
    sn_config_unref(g_cfg);
    return rc;
}
