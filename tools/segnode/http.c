/* tools/segnode/http.c — the daemon's HTTP status server over libmicrohttpd (see http.h).
 * We bind the listening socket ourselves so that "port in use" is a clear SN_EBUSY, then hand it
 * to MHD, which serves from one internal polling thread with a connection limit. Bodies are
 * rendered per request from common/metrics.h counters, store_counts_get and the daemon's live
 * figures. Not a general web server: two read-only GET endpoints. */
#include "tools/segnode/http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <microhttpd.h>

#include "common/log.h"
#include "common/metrics.h"
#include "common/status.h"
#include "common/util.h"

#ifndef SEGNODE_VERSION
#define SEGNODE_VERSION "unknown"
#endif

#define HTTP_MAX_CONNECTIONS 32
#define HTTP_CONNECTION_TIMEOUT_S 10
#define HTTP_CT_METRICS "text/plain; version=0.0.4; charset=utf-8"
#define HTTP_CT_JSON "application/json"
#define HTTP_CT_TEXT "text/plain; charset=utf-8"
#define HTTP_OUTBOX_ROWS 100     /* rows not sent listed in /status */

struct http_server {
    struct MHD_Daemon *mhd;
    sn_config *cfg;          /* reference taken at open */
    store *st;               /* borrowed */
    http_live_fn live;
    void *live_ctx;
    int port;
};

/* ---- rendering -------------------------------------------------------------------------------- */

static void live_defaults(http_live *l)
{
    memset(l, 0, sizeof *l);
    l->active_associations = -1;
}

static int64_t active_assocs(const http_live *live)
{
    if (live && live->active_associations >= 0)
        return live->active_associations;
    return sn_metric_get(SN_M_ASSOC_ACTIVE);
}

static void prom_family(FILE *f, const char *name, const char *type, const char *help)
{
    fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* segnode_job_stage_seconds: a histogram per stage over the timings of every finished job
 * (worker.h lists the stages; send from the outbox rows). Rebuilt from the store on each
 * scrape, so it survives restarts and stays cumulative. */
#define HTTP_STAGES 9
#define HTTP_BUCKETS 14
static const char *const http_stage[HTTP_STAGES] = {"wait_stable", "queue", "load", "preprocess",
                                                     "method", "write_seg", "store", "send", "total"};
static const double http_le[HTTP_BUCKETS] = {0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300,
                                             600, 1800};
typedef struct stage_hist {
    int64_t count[HTTP_STAGES], bucket[HTTP_STAGES][HTTP_BUCKETS];
    double sum[HTTP_STAGES];
} stage_hist;

static void stage_add(stage_hist *h, int k, double ms)
{
    double sec = ms / 1000.0;
    h->count[k]++;
    h->sum[k] += sec;
    for (int b = 0; b < HTTP_BUCKETS; b++)
        if (sec <= http_le[b])
            h->bucket[k][b]++;
}

static int stage_job_cb(void *ctx, const store_job_detail *d)
{
    stage_hist *h = ctx;
    cJSON *t = d->timings ? cJSON_Parse(d->timings) : NULL;
    for (int k = 0; k < HTTP_STAGES && t; k++) {
        char key[32];
        snprintf(key, sizeof key, "%s_ms", http_stage[k]);
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(t, key);
        if (cJSON_IsNumber(v) && v->valuedouble >= 0)
            stage_add(h, k, v->valuedouble);
    }
    cJSON_Delete(t);
    if (d->send_ms >= 0)
        stage_add(h, 7, (double)d->send_ms);
    return 0;
}

/* Building the histogram parses the timings of every done job: ~17 us a job, 0.85 s a scrape
 * at 50,000 jobs. It only changes when a job finishes (or is retried, retired, deleted) or a
 * SEG is sent, so the text is kept and rebuilt when the counts that say so change: done jobs
 * (count, newest end) and sent outbox rows (count, newest send), read with the other counts. */
static struct {
    pthread_mutex_t mu;
    const store *st;
    int64_t key[4];
    char *text;
} stage_cache = {.mu = PTHREAD_MUTEX_INITIALIZER};

static void prom_stages_render(FILE *f, store *st)
{
    stage_hist *h = calloc(1, sizeof *h);
    if (!h)
        return;
    store_job_list_detail(st, -1, STORE_JOB_DONE, stage_job_cb, h, NULL, 0);
    prom_family(f, "segnode_job_stage_seconds", "histogram",
                "Time of each stage of finished jobs (wait for stable, queue, load, preprocess, "
                "method, write SEG, store, send, total)");
    for (int k = 0; k < HTTP_STAGES; k++) {
        for (int b = 0; b < HTTP_BUCKETS; b++)
            fprintf(f, "segnode_job_stage_seconds_bucket{stage=\"%s\",le=\"%g\"} %lld\n", http_stage[k],
                    http_le[b], (long long)h->bucket[k][b]);
        fprintf(f, "segnode_job_stage_seconds_bucket{stage=\"%s\",le=\"+Inf\"} %lld\n", http_stage[k],
                (long long)h->count[k]);
        fprintf(f, "segnode_job_stage_seconds_sum{stage=\"%s\"} %.3f\n", http_stage[k], h->sum[k]);
        fprintf(f, "segnode_job_stage_seconds_count{stage=\"%s\"} %lld\n", http_stage[k],
                (long long)h->count[k]);
    }
    free(h);
}

static void prom_stages(FILE *f, store *st, const store_counts *c)
{
    int64_t key[4] = {c->jobs_by_state[STORE_JOB_DONE], c->last_done_job_ms,
                      c->outbox_by_state[STORE_OUTBOX_SENT], c->last_sent_ms};
    pthread_mutex_lock(&stage_cache.mu);
    if (!stage_cache.text || stage_cache.st != st || memcmp(stage_cache.key, key, sizeof key) != 0) {
        char *buf = NULL;
        size_t len = 0;
        FILE *m = open_memstream(&buf, &len);
        if (m) {
            prom_stages_render(m, st);
            if (fclose(m) == 0 && buf) {
                free(stage_cache.text);
                stage_cache.text = buf;
                stage_cache.st = st;
                memcpy(stage_cache.key, key, sizeof key);
            } else {
                free(buf);
            }
        }
    }
    if (stage_cache.text)
        fputs(stage_cache.text, f);
    pthread_mutex_unlock(&stage_cache.mu);
}

/* segnode_outbox_peer{peer="P",state="S"}; label values escaped as the text format wants. */
static int prom_peer_cb(void *ctx, const store_outbox_peer_stat *ps)
{
    FILE *f = ctx;
    char peer[256];
    size_t k = 0;
    for (const char *p = ps->peer ? ps->peer : ""; *p && k + 3 < sizeof peer; p++) {
        if (*p == '"' || *p == '\\')
            peer[k++] = '\\';
        peer[k++] = *p == '\n' ? ' ' : *p;
    }
    peer[k] = '\0';
    for (int s = 0; s < STORE_OUTBOX__COUNT; s++)
        fprintf(f, "segnode_outbox_peer{peer=\"%s\",state=\"%s\"} %lld\n", peer,
                store_outbox_state_name((store_outbox_state)s), (long long)ps->by_state[s]);
    return 0;
}

char *http_render_metrics(const sn_config *cfg, store *st, const http_live *live, int *status,
                          char *err, size_t errlen)
{
    store_counts c;
    int rc = store_counts_get(st, &c, err, errlen);
    if (rc != 0) {
        if (status)
            *status = rc;
        return NULL;
    }
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f) {
        if (status)
            *status = sn_errf(err, errlen, SN_ENOMEM, "out of memory rendering /metrics");
        return NULL;
    }
    int64_t now = sn_now_ms();

    prom_family(f, "segnode_up", "gauge", "1 when the node is serving");
    fprintf(f, "segnode_up 1\n");
    prom_family(f, "segnode_build_info", "gauge", "Build information (value is always 1)");
    fprintf(f, "segnode_build_info{version=\"%s\"} 1\n", SEGNODE_VERSION);
    if (live && live->started_ms > 0) {
        prom_family(f, "segnode_start_time_seconds", "gauge",
                    "Start time of the daemon since the Unix epoch in seconds");
        fprintf(f, "segnode_start_time_seconds %.3f\n", (double)live->started_ms / 1000.0);
        prom_family(f, "segnode_uptime_seconds", "gauge", "Seconds since the daemon started");
        fprintf(f, "segnode_uptime_seconds %.3f\n", (double)(now - live->started_ms) / 1000.0);
    }

    for (int m = 0; m < SN_M__COUNT; m++) {
        prom_family(f, sn_metric_name((sn_metric)m), sn_metric_type((sn_metric)m),
                    sn_metric_help((sn_metric)m));
        int64_t v = m == SN_M_ASSOC_ACTIVE ? active_assocs(live) : sn_metric_get((sn_metric)m);
        fprintf(f, "%s %lld\n", sn_metric_name((sn_metric)m), (long long)v);
    }
    prom_family(f, "segnode_associations_rejected_total", "counter",
                "DICOM associations rejected, by reason");
    for (int r = 0; r < SN_REJECT__COUNT; r++)
        fprintf(f, "segnode_associations_rejected_total{reason=\"%s\"} %lld\n",
                sn_reject_name((sn_reject)r), (long long)sn_metric_rejects((sn_reject)r));

    prom_family(f, "segnode_series", "gauge", "Series in the store, by state");
    for (int s = 0; s < STORE_SERIES__COUNT; s++)
        fprintf(f, "segnode_series{state=\"%s\"} %lld\n",
                store_series_state_name((store_series_state)s), (long long)c.series_by_state[s]);
    prom_family(f, "segnode_jobs", "gauge", "Segmentation jobs, by state");
    for (int s = 0; s < STORE_JOB__COUNT; s++)
        fprintf(f, "segnode_jobs{state=\"%s\"} %lld\n", store_job_state_name((store_job_state)s),
                (long long)c.jobs_by_state[s]);
    prom_family(f, "segnode_outbox", "gauge", "Outbox entries (results to send), by state");
    for (int s = 0; s < STORE_OUTBOX__COUNT; s++)
        fprintf(f, "segnode_outbox{state=\"%s\"} %lld\n",
                store_outbox_state_name((store_outbox_state)s), (long long)c.outbox_by_state[s]);
    prom_family(f, "segnode_outbox_peer", "gauge", "Outbox entries by destination and state");
    store_outbox_peer_stats(st, prom_peer_cb, f, NULL, 0);
    prom_family(f, "segnode_queue_depth", "gauge", "Jobs waiting to run (pending)");
    fprintf(f, "segnode_queue_depth %lld\n", (long long)c.jobs_by_state[STORE_JOB_PENDING]);
    prom_family(f, "segnode_oldest_pending_job_age_seconds", "gauge",
                "Age of the oldest pending job in seconds (0 when none)");
    fprintf(f, "segnode_oldest_pending_job_age_seconds %.3f\n",
            c.oldest_pending_job_ms > 0 ? (double)(now - c.oldest_pending_job_ms) / 1000.0 : 0.0);
    prom_stages(f, st, &c);

    prom_family(f, "segnode_patients_stored", "gauge", "Patients in the store");
    fprintf(f, "segnode_patients_stored %lld\n", (long long)c.patients);
    prom_family(f, "segnode_studies_stored", "gauge", "Studies in the store");
    fprintf(f, "segnode_studies_stored %lld\n", (long long)c.studies);
    prom_family(f, "segnode_series_stored", "gauge", "Series in the store");
    fprintf(f, "segnode_series_stored %lld\n", (long long)c.series);
    prom_family(f, "segnode_instances_stored", "gauge", "Instances in the store");
    fprintf(f, "segnode_instances_stored %lld\n", (long long)c.instances);
    prom_family(f, "segnode_bytes_stored", "gauge", "Bytes of instance files in the store");
    fprintf(f, "segnode_bytes_stored %lld\n", (long long)c.bytes);
    prom_family(f, "segnode_schema_version", "gauge", "Schema version of the store database");
    fprintf(f, "segnode_schema_version %d\n", c.schema_version);
    int64_t free_b = sn_disk_free_bytes(store_dir(st));
    if (free_b >= 0) {
        prom_family(f, "segnode_disk_free_bytes", "gauge",
                    "Bytes available on the filesystem holding the storage folder");
        fprintf(f, "segnode_disk_free_bytes %lld\n", (long long)free_b);
    }
    if (cfg) {
        prom_family(f, "segnode_disk_min_free_bytes", "gauge",
                    "Watermark below which new associations are refused");
        fprintf(f, "segnode_disk_min_free_bytes %lld\n",
                (long long)(cfg->node.disk_min_free_mb * 1024 * 1024));
        prom_family(f, "segnode_max_associations", "gauge", "Configured association limit");
        fprintf(f, "segnode_max_associations %d\n", cfg->node.max_associations);
    }
    if (live) {
        prom_family(f, "segnode_config_reloads_total", "counter", "Successful config reloads");
        fprintf(f, "segnode_config_reloads_total %lld\n", (long long)live->config_reloads);
        prom_family(f, "segnode_config_reload_failures_total", "counter",
                    "Config reloads refused (the old config was kept)");
        fprintf(f, "segnode_config_reload_failures_total %lld\n",
                (long long)live->config_reload_failures);
    }
    if (fclose(f) != 0 || !buf) {
        free(buf);
        if (status)
            *status = sn_errf(err, errlen, SN_ENOMEM, "out of memory rendering /metrics");
        return NULL;
    }
    if (status)
        *status = 0;
    return buf;
}

static cJSON *json_time(int64_t ms)
{
    if (ms <= 0)
        return cJSON_CreateNull();
    char t[32];
    sn_format_time(ms, t);
    return cJSON_CreateString(t);
}

static void json_dimse(cJSON *o, const char *key, unsigned dimse)
{
    char h[16];
    if (dimse == 0xFFFFu) {
        cJSON_AddNullToObject(o, key);
        return;
    }
    snprintf(h, sizeof h, "0x%04X", dimse);
    cJSON_AddStringToObject(o, key, h);
}

/* "outbox_by_peer": {PEER: {pending, sending, sent, failed, last_error, ...}} */
static int status_peer_cb(void *ctx, const store_outbox_peer_stat *ps)
{
    cJSON *o = cJSON_AddObjectToObject(ctx, ps->peer ? ps->peer : "");
    if (!o)
        return 0;
    for (int s = 0; s < STORE_OUTBOX__COUNT; s++)
        cJSON_AddNumberToObject(o, store_outbox_state_name((store_outbox_state)s), (double)ps->by_state[s]);
    if (ps->last_error)
        cJSON_AddStringToObject(o, "last_error", ps->last_error);
    else
        cJSON_AddNullToObject(o, "last_error");
    json_dimse(o, "last_dimse_status", ps->last_dimse_status);
    cJSON_AddItemToObject(o, "last_error_at", json_time(ps->last_error_ms));
    return 0;
}

/* "outbox_unsent": the rows not sent (pending, sending, failed), newest first. */
static int status_row_cb(void *ctx, const store_outbox_row *r)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "id", (double)r->id);
    if (r->job_id > 0)
        cJSON_AddNumberToObject(o, "job_id", (double)r->job_id);
    else
        cJSON_AddNullToObject(o, "job_id");
    cJSON_AddStringToObject(o, "peer", r->peer);
    cJSON_AddStringToObject(o, "state", store_outbox_state_name(r->state));
    cJSON_AddNumberToObject(o, "attempts", r->attempts);
    if (r->last_error[0])
        cJSON_AddStringToObject(o, "error", r->last_error);
    else
        cJSON_AddNullToObject(o, "error");
    json_dimse(o, "dimse_status", r->dimse_status);
    cJSON_AddStringToObject(o, "sop_instance_uid", r->sop_instance_uid);
    cJSON_AddItemToObject(o, "next_attempt",
                          json_time(r->state == STORE_OUTBOX_PENDING ? r->next_attempt_ms : 0));
    cJSON_AddItemToArray(ctx, o);
    return 0;
}

void http_json_counts(cJSON *root, const store_counts *c)
{
    cJSON *o = cJSON_AddObjectToObject(root, "counts");
    cJSON_AddNumberToObject(o, "patients", (double)c->patients);
    cJSON_AddNumberToObject(o, "studies", (double)c->studies);
    cJSON_AddNumberToObject(o, "series", (double)c->series);
    cJSON_AddNumberToObject(o, "instances", (double)c->instances);
    cJSON_AddNumberToObject(o, "bytes", (double)c->bytes);
    o = cJSON_AddObjectToObject(root, "series_by_state");
    for (int s = 0; s < STORE_SERIES__COUNT; s++)
        cJSON_AddNumberToObject(o, store_series_state_name((store_series_state)s), (double)c->series_by_state[s]);
    o = cJSON_AddObjectToObject(root, "jobs_by_state");
    for (int s = 0; s < STORE_JOB__COUNT; s++)
        cJSON_AddNumberToObject(o, store_job_state_name((store_job_state)s), (double)c->jobs_by_state[s]);
    o = cJSON_AddObjectToObject(root, "outbox_by_state");
    for (int s = 0; s < STORE_OUTBOX__COUNT; s++)
        cJSON_AddNumberToObject(o, store_outbox_state_name((store_outbox_state)s), (double)c->outbox_by_state[s]);
}

char *http_render_status(const sn_config *cfg, store *st, const http_live *live, int *status,
                         char *err, size_t errlen)
{
    store_counts c;
    int rc = store_counts_get(st, &c, err, errlen);
    if (rc != 0) {
        if (status)
            *status = rc;
        return NULL;
    }
    int64_t now = sn_now_ms();
    cJSON *root = cJSON_CreateObject();
    cJSON *node = cJSON_AddObjectToObject(root, "node");
    if (cfg) {
        cJSON_AddStringToObject(node, "ae_title", cfg->node.ae_title);
        cJSON_AddStringToObject(node, "bind", cfg->node.bind);
        cJSON_AddNumberToObject(node, "port", cfg->node.port);
        cJSON_AddNumberToObject(node, "http_port", cfg->node.http_port);
        cJSON_AddStringToObject(node, "storage", cfg->node.storage);
        cJSON_AddStringToObject(node, "device", cfg->node.device);
        cJSON_AddNumberToObject(node, "max_associations", cfg->node.max_associations);
        if (cfg->path[0])
            cJSON_AddStringToObject(node, "config", cfg->path);
        else
            cJSON_AddNullToObject(node, "config");
        cJSON_AddNumberToObject(node, "peers", cfg->npeers);
        cJSON_AddNumberToObject(node, "routes", cfg->nroutes);
    }
    cJSON_AddStringToObject(root, "version", SEGNODE_VERSION);
    cJSON_AddItemToObject(root, "started", json_time(live ? live->started_ms : 0));
    if (live && live->started_ms > 0)
        cJSON_AddNumberToObject(root, "uptime_s", (double)(now - live->started_ms) / 1000.0);
    else
        cJSON_AddNullToObject(root, "uptime_s");
    cJSON_AddBoolToObject(root, "stopping", live && live->stopping);
    cJSON *cfgj = cJSON_AddObjectToObject(root, "config");
    cJSON_AddItemToObject(cfgj, "loaded", json_time(live ? live->config_loaded_ms : 0));
    cJSON_AddNumberToObject(cfgj, "reloads", live ? (double)live->config_reloads : 0);
    cJSON_AddNumberToObject(cfgj, "reload_failures",
                            live ? (double)live->config_reload_failures : 0);

    cJSON *as = cJSON_AddObjectToObject(root, "associations");
    cJSON_AddNumberToObject(as, "active", (double)active_assocs(live));
    cJSON_AddNumberToObject(as, "accepted", (double)sn_metric_get(SN_M_ASSOC_ACCEPTED));
    cJSON_AddNumberToObject(as, "aborted", (double)sn_metric_get(SN_M_ASSOC_ABORTED));
    cJSON *rej = cJSON_AddObjectToObject(as, "rejected");
    for (int r = 0; r < SN_REJECT__COUNT; r++)
        cJSON_AddNumberToObject(rej, sn_reject_name((sn_reject)r),
                                (double)sn_metric_rejects((sn_reject)r));

    cJSON *dimse = cJSON_AddObjectToObject(root, "dimse");
    cJSON_AddNumberToObject(dimse, "instances_received", (double)sn_metric_get(SN_M_INSTANCES_RECEIVED));
    cJSON_AddNumberToObject(dimse, "instances_replaced", (double)sn_metric_get(SN_M_INSTANCES_REPLACED));
    cJSON_AddNumberToObject(dimse, "bytes_received", (double)sn_metric_get(SN_M_BYTES_RECEIVED));
    cJSON_AddNumberToObject(dimse, "store_failed", (double)sn_metric_get(SN_M_STORE_FAILED));
    cJSON_AddNumberToObject(dimse, "echo", (double)sn_metric_get(SN_M_ECHO));
    cJSON_AddNumberToObject(dimse, "find", (double)sn_metric_get(SN_M_FIND));
    cJSON_AddNumberToObject(dimse, "scu_sent", (double)sn_metric_get(SN_M_SCU_SENT));
    cJSON_AddNumberToObject(dimse, "scu_failed", (double)sn_metric_get(SN_M_SCU_FAILED));

    http_json_counts(root, &c);
    cJSON_AddNumberToObject(root, "queue_depth", (double)c.jobs_by_state[STORE_JOB_PENDING]);
    cJSON_AddItemToObject(root, "oldest_pending_job", json_time(c.oldest_pending_job_ms));
    char oerr[256] = "";
    if (store_outbox_peer_stats(st, status_peer_cb, cJSON_AddObjectToObject(root, "outbox_by_peer"),
                                oerr, sizeof oerr) != 0 ||
        store_outbox_list_unsent(st, HTTP_OUTBOX_ROWS, status_row_cb,
                                 cJSON_AddArrayToObject(root, "outbox_unsent"), oerr, sizeof oerr) != 0)
        SN_LOG_WARN("http", "/status: outbox details: %s", oerr);
    cJSON_AddNumberToObject(root, "schema_version", c.schema_version);
    int64_t free_b = sn_disk_free_bytes(store_dir(st));
    if (free_b >= 0)
        cJSON_AddNumberToObject(root, "disk_free_bytes", (double)free_b);
    else
        cJSON_AddNullToObject(root, "disk_free_bytes");

    char *out = cJSON_Print(root);
    cJSON_Delete(root);
    if (!out) {
        if (status)
            *status = sn_errf(err, errlen, SN_ENOMEM, "out of memory rendering /status");
        return NULL;
    }
    /* cJSON allocates with malloc by default; hand back a string the caller may free(). */
    if (status)
        *status = 0;
    return out;
}

/* ---- MHD glue ------------------------------------------------------------------------------- */

static enum MHD_Result reply(struct MHD_Connection *conn, unsigned code, const char *ctype,
                             char *body /* malloc'd, taken */)
{
    struct MHD_Response *r =
        MHD_create_response_from_buffer(strlen(body), body, MHD_RESPMEM_MUST_FREE);
    if (!r) {
        free(body);
        return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    if (code == MHD_HTTP_METHOD_NOT_ALLOWED)
        MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
    enum MHD_Result ret = MHD_queue_response(conn, code, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result reply_text(struct MHD_Connection *conn, unsigned code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static enum MHD_Result reply_text(struct MHD_Connection *conn, unsigned code, const char *fmt, ...)
{
    char tmp[1200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    char *body = strdup(tmp);
    if (!body)
        return MHD_NO;
    return reply(conn, code, HTTP_CT_TEXT, body);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_data_size,
                                  void **con_cls)
{
    http_server *srv = cls;
    int is_metrics = strcmp(url, "/metrics") == 0;
    int is_status = strcmp(url, "/status") == 0;

    if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 && strcmp(method, MHD_HTTP_METHOD_HEAD) != 0)
        return reply_text(conn, MHD_HTTP_METHOD_NOT_ALLOWED, "method %s not allowed\n", method);
    if (!is_metrics && !is_status)
        return reply_text(conn, MHD_HTTP_NOT_FOUND,
                          "not found; try /metrics or /status\n");

    http_live live;
    live_defaults(&live);
    if (srv->live)
        srv->live(srv->live_ctx, &live);
    const sn_config *cfg = live.config ? live.config : srv->cfg;

    char err[512] = "";
    int st = 0;
    char *body = is_metrics ? http_render_metrics(cfg, srv->st, &live, &st, err, sizeof err)
                            : http_render_status(cfg, srv->st, &live, &st, err, sizeof err);
    sn_config_unref(live.config);
    if (!body) {
        SN_LOG_WARN("http", "%s: %s", url, err[0] ? err : sn_strerror(st));
        return reply_text(conn, MHD_HTTP_SERVICE_UNAVAILABLE, "store unavailable: %s\n",
                          err[0] ? err : sn_strerror(st));
    }
    return reply(conn, MHD_HTTP_OK, is_metrics ? HTTP_CT_METRICS : HTTP_CT_JSON, body);
}

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    size_t n = strlen(msg);
    while (n && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
        msg[--n] = '\0';
    SN_LOG_WARN("http", "%s", msg);
}

int http_sockaddr(const char *host, int port, struct sockaddr_storage *ss, socklen_t *len)
{
    memset(ss, 0, sizeof *ss);
    struct sockaddr_in *a4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)ss;
    if (inet_pton(AF_INET, host, &a4->sin_addr) == 1) {
        a4->sin_family = AF_INET;
        a4->sin_port = htons((uint16_t)port);
        *len = sizeof *a4;
    } else if (inet_pton(AF_INET6, host, &a6->sin6_addr) == 1) {
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons((uint16_t)port);
        *len = sizeof *a6;
    } else {
        return -1;
    }
    return 0;
}

static int listen_socket(const char *bind_addr, int port, int *out_fd, char *err, size_t errlen)
{
    const char *host = bind_addr && *bind_addr ? bind_addr : "127.0.0.1";
    struct sockaddr_storage ss;
    socklen_t sl;
    if (http_sockaddr(host, port, &ss, &sl) != 0)
        return sn_errf(err, errlen, SN_EINVAL, "http_bind: '%s' is not an IPv4 or IPv6 address",
                       host);
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return sn_errf(err, errlen, SN_ENET, "http: socket: %s", strerror(errno));
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (ss.ss_family == AF_INET6)
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&ss, sl) != 0) {
        int e = errno;
        close(fd);
        return sn_errf(err, errlen, e == EADDRINUSE ? SN_EBUSY : SN_ENET,
                       "http: cannot bind %s:%d: %s", host, port, strerror(e));
    }
    if (listen(fd, 64) != 0) {
        int e = errno;
        close(fd);
        return sn_errf(err, errlen, SN_ENET, "http: listen on %s:%d: %s", host, port,
                       strerror(e));
    }
    *out_fd = fd;
    return 0;
}

int http_server_open(const sn_config *cfg, store *st, http_live_fn live, void *ctx,
                     http_server **out, char *err, size_t errlen)
{
    *out = NULL;
    if (!cfg || !st)
        return sn_errf(err, errlen, SN_EINVAL, "http: no config or store");
    if (cfg->node.http_port == 0)
        return 0;
    if (cfg->node.http_port < 0 || cfg->node.http_port > 65535)
        return sn_errf(err, errlen, SN_EINVAL, "http_port %d out of range", cfg->node.http_port);

    int fd = -1;
    int rc = listen_socket(cfg->node.http_bind, cfg->node.http_port, &fd, err, errlen);
    if (rc != 0)
        return rc;

    http_server *srv = calloc(1, sizeof *srv);
    if (!srv) {
        close(fd);
        return sn_errf(err, errlen, SN_ENOMEM, "http: out of memory");
    }
    srv->cfg = sn_config_ref((sn_config *)cfg);
    srv->st = st;
    srv->live = live;
    srv->live_ctx = ctx;
    srv->port = cfg->node.http_port;

    srv->mhd = MHD_start_daemon(
        MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG, 0, NULL, NULL, on_request, srv,
        MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL,
        MHD_OPTION_LISTEN_SOCKET, (MHD_socket)fd,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned int)HTTP_MAX_CONNECTIONS,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int)HTTP_CONNECTION_TIMEOUT_S,
        MHD_OPTION_END);
    if (!srv->mhd) {
        close(fd);
        sn_config_unref(srv->cfg);
        free(srv);
        return sn_errf(err, errlen, SN_ENET, "http: cannot start the server on %s:%d",
                       cfg->node.http_bind[0] ? cfg->node.http_bind : "127.0.0.1",
                       cfg->node.http_port);
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(srv->mhd, MHD_DAEMON_INFO_BIND_PORT);
    if (info && info->port)
        srv->port = info->port;
    SN_LOG_INFO("http", "serving /metrics and /status on %s:%d",
                cfg->node.http_bind[0] ? cfg->node.http_bind : "127.0.0.1", srv->port);
    *out = srv;
    return 0;
}

int http_server_port(const http_server *srv) { return srv ? srv->port : 0; }

void http_server_close(http_server *srv)
{
    if (!srv)
        return;
    if (srv->mhd)
        MHD_stop_daemon(srv->mhd);  /* joins the thread and closes the listening socket */
    sn_config_unref(srv->cfg);
    free(srv);
}
