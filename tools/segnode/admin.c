/* tools/segnode/admin.c — the admin subcommands of `segnode`: status, series, jobs, peers, echo,
 * send and config check. They read the config and the store (the same SQLite database the daemon
 * uses, which is safe in WAL mode), talk DICOM through scp.h's SCU, and ask a running daemon for
 * its live figures over its HTTP /status. Tables for people, `--json` for scripts.
 * Not the daemon: nothing here keeps running after its answer. */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "common/log.h"
#include "common/status.h"
#include "common/util.h"
#include "scp/scp.h"
#include "store/store.h"
#include "tools/segnode/cli.h"
#include "tools/segnode/http.h"
#ifdef SEGNODE_HAVE_WORKER
#include "pipeline/labels.h"
#include "pipeline/method.h"
#include "tools/segnode/worker.h"
#endif

#ifndef SEGNODE_VERSION
#define SEGNODE_VERSION "unknown"
#endif

/* ---- shared plumbing ------------------------------------------------------------------------ */

#define ARGS_HELP (-1)

/* Parse what follows a subcommand: help, global options and positionals (collected in pos,
 * which has room for argc entries). "--" ends options. Returns 0, ARGS_HELP when help was
 * printed, or an exit code > 0. */
static int parse_args(int argc, char **argv, const char *help, char **pos, int *npos)
{
    int only_pos = 0;
    *npos = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!only_pos && a[0] == '-' && a[1] != '\0') {
            if (strcmp(a, "--") == 0) {
                only_pos = 1;
                continue;
            }
            if (cli_is_help(a)) {
                fputs(help, stdout);
                return ARGS_HELP;
            }
            int g = cli_take_global(argc, argv, &i);
            if (g < 0)
                return -g;
            if (g == 1)
                continue;
            fprintf(stderr, "segnode %s: unknown option %s\n%s", argv[0], a, help);
            return CLI_EXIT_USAGE;
        }
        pos[(*npos)++] = argv[i];
    }
    cli_apply_log_level();
    return 0;
}

static void json_time(cJSON *obj, const char *key, int64_t ms)
{
    if (ms <= 0) {
        cJSON_AddNullToObject(obj, key);
        return;
    }
    char t[32];
    sn_format_time(ms, t);
    cJSON_AddStringToObject(obj, key, t);
}

static void json_str(cJSON *obj, const char *key, const char *s)
{
    if (s && *s)
        cJSON_AddStringToObject(obj, key, s);
    else
        cJSON_AddNullToObject(obj, key);
}

static const char *allow_text(unsigned allow, char *out, size_t n)
{
    out[0] = '\0';
    if (allow & SN_ALLOW_ECHO)
        strncat(out, "echo,", n - strlen(out) - 1);
    if (allow & SN_ALLOW_STORE)
        strncat(out, "store,", n - strlen(out) - 1);
    if (allow & SN_ALLOW_FIND)
        strncat(out, "find,", n - strlen(out) - 1);
    size_t l = strlen(out);
    if (l)
        out[l - 1] = '\0';
    else
        sn_strlcpy(out, "none", n);
    return out;
}

static cJSON *allow_json(unsigned allow)
{
    cJSON *a = cJSON_CreateArray();
    if (allow & SN_ALLOW_ECHO)
        cJSON_AddItemToArray(a, cJSON_CreateString("echo"));
    if (allow & SN_ALLOW_STORE)
        cJSON_AddItemToArray(a, cJSON_CreateString("store"));
    if (allow & SN_ALLOW_FIND)
        cJSON_AddItemToArray(a, cJSON_CreateString("find"));
    return a;
}

static const sn_peer *find_peer(const sn_config *cfg, const char *key)
{
    const sn_peer *p = sn_config_peer_by_name(cfg, key);
    return p ? p : sn_config_peer_by_ae(cfg, key);
}

static int no_peer(const sn_config *cfg, const char *cmd, const char *key)
{
    fprintf(stderr, "segnode %s: no peer '%s' in %s (by [peer NAME] or AE title; see segnode peers)\n",
            cmd, key, cfg->path[0] ? cfg->path : "the built-in config");
    return CLI_EXIT_USAGE;
}

/* ---- tiny HTTP client for the daemon's /status -------------------------------------------- */

/* GET http://host:port/status with a short timeout. Returns the parsed JSON, or NULL when no
 * daemon answers (that is normal: the admin command works without one). */
static cJSON *daemon_status(const sn_config *cfg, char *where, size_t wlen)
{
    const char *host = cfg->node.http_bind;
    if (!host[0] || strcmp(host, "0.0.0.0") == 0)
        host = "127.0.0.1";
    else if (strcmp(host, "::") == 0)
        host = "::1";
    snprintf(where, wlen, "%s:%d", host, cfg->node.http_port);
    if (cfg->node.http_port <= 0)
        return NULL;

    struct sockaddr_storage ss;
    socklen_t sl;
    if (http_sockaddr(host, cfg->node.http_port, &ss, &sl) != 0)
        return NULL;
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return NULL;
    char *buf = NULL;
    cJSON *doc = NULL;
    int64_t deadline = sn_mono_ms() + 1500;
    if (connect(fd, (struct sockaddr *)&ss, sl) != 0 && errno != EINPROGRESS)
        goto out;
    struct pollfd pfd = {.fd = fd, .events = POLLOUT};
    if (poll(&pfd, 1, 500) != 1)
        goto out;
    int soerr = 0;
    socklen_t el = sizeof soerr;
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &el) != 0 || soerr != 0)
        goto out;
    char req[256];
    int rl = snprintf(req, sizeof req,
                      "GET /status HTTP/1.0\r\nHost: %s\r\nAccept: application/json\r\n\r\n", where);
    if (send(fd, req, (size_t)rl, MSG_NOSIGNAL) != rl)
        goto out;
    size_t cap = 1 << 16, len = 0;
    buf = malloc(cap);
    if (!buf)
        goto out;
    for (;;) {
        int64_t left = deadline - sn_mono_ms();
        if (left <= 0)
            goto out;
        pfd.events = POLLIN;
        if (poll(&pfd, 1, (int)left) != 1)
            goto out;
        if (len + 1 >= cap) {
            if (cap >= (1u << 22))
                goto out;
            char *n = realloc(buf, cap * 2);
            if (!n)
                goto out;
            buf = n;
            cap *= 2;
        }
        ssize_t r = recv(fd, buf + len, cap - len - 1, 0);
        if (r < 0 && (errno == EAGAIN || errno == EINTR))
            continue;
        if (r < 0)
            goto out;
        if (r == 0)
            break;
        len += (size_t)r;
    }
    buf[len] = '\0';
    if (strncmp(buf, "HTTP/1.", 7) != 0 || strncmp(buf + 8, " 200", 4) != 0)
        goto out;
    char *body = strstr(buf, "\r\n\r\n");
    if (body)
        doc = cJSON_Parse(body + 4);
out:
    free(buf);
    close(fd);
    return doc;
}

static double jnum(const cJSON *o, const char *a, const char *b, double dflt)
{
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(o, a);
    if (x && b)
        x = cJSON_GetObjectItemCaseSensitive(x, b);
    return cJSON_IsNumber(x) ? x->valuedouble : dflt;
}

static void human_duration(double s, char *out, size_t n)
{
    long long t = (long long)s;
    if (t >= 86400)
        snprintf(out, n, "%lldd %lldh", t / 86400, (t % 86400) / 3600);
    else if (t >= 3600)
        snprintf(out, n, "%lldh %lldm", t / 3600, (t % 3600) / 60);
    else if (t >= 60)
        snprintf(out, n, "%lldm %llds", t / 60, t % 60);
    else
        snprintf(out, n, "%llds", t);
}

/* ---- status ----------------------------------------------------------------------------------- */

static const char STATUS_HELP[] =
    "usage: segnode status [--json]\n"
    "Node identity from the config, what the store holds (patients, studies, series, instances,\n"
    "bytes), series/jobs/outbox by state, and the running daemon's live figures if its HTTP port\n"
    "answers.\n";

/* Running jobs for `segnode status`: JSON objects into arr, and a compact text line. */
typedef struct running_ctx {
    cJSON *arr;
    char line[512];
    size_t len;
    int n;
} running_ctx;

static int running_cb(void *vctx, const store_job_detail *d)
{
    running_ctx *c = vctx;
    int64_t secs = d->started_ms > 0 ? (sn_now_ms() - d->started_ms) / 1000 : 0;
    c->n++;
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "id", (double)d->job.id);
    json_str(o, "route", d->job.route);
    json_str(o, "method", d->job.method);
    json_str(o, "series_uid", d->job.series_uid);
    json_str(o, "device", d->device);
    json_str(o, "worker", d->worker);
    json_time(o, "started", d->started_ms);
    cJSON_AddNumberToObject(o, "running_s", (double)secs);
    cJSON_AddItemToArray(c->arr, o);
    if (c->len < sizeof c->line)
        c->len += (size_t)snprintf(c->line + c->len, sizeof c->line - c->len, "%sjob %" PRId64 " (%s, %s, %" PRId64 " s)",
                                   c->len ? ", " : "", d->job.id, d->job.route ? d->job.route : "?",
                                   d->device ? d->device : "starting", secs);
    return 0;
}

/* The device GPU jobs use with [node] device in this build. */
static void status_device(const sn_config *cfg, char *out, size_t n)
{
#ifdef SEGNODE_HAVE_WORKER
    worker_device_resolve(cfg->node.device, out, n);
#else
    sn_strlcpy(out, cfg->node.device, n);
#endif
}

int cli_cmd_status(int argc, char **argv)
{
    char *pos[argc > 0 ? argc : 1];
    int npos, rc = parse_args(argc, argv, STATUS_HELP, pos, &npos);
    if (rc)
        return rc == ARGS_HELP ? 0 : rc;
    if (npos) {
        fprintf(stderr, "segnode status: unexpected argument %s\n", pos[0]);
        return CLI_EXIT_USAGE;
    }
    sn_config *cfg;
    store *st;
    if ((rc = cli_open_config_store(&cfg, &st)))
        return rc;
    store_counts c;
    char err[1024] = "";
    int s = store_counts_get(st, &c, err, sizeof err);
    if (s != 0) {
        fprintf(stderr, "segnode status: %s\n", err[0] ? err : sn_strerror(s));
        store_close(st);
        sn_config_unref(cfg);
        return CLI_EXIT_FAIL;
    }
    running_ctx run = {.arr = cJSON_CreateArray()};
    char device[32];
    status_device(cfg, device, sizeof device);
    store_job_list_detail(st, -1, STORE_JOB_RUNNING, running_cb, &run, NULL, 0);
    char where[128];
    cJSON *live = daemon_status(cfg, where, sizeof where);
    long owner = store_owner(st); /* a daemon on this storage, HTTP port or not */
    int64_t free_b = sn_disk_free_bytes(cfg->node.storage);

    if (cli_g.json) {
        cJSON *root = cJSON_CreateObject();
        cJSON *node = cJSON_AddObjectToObject(root, "node");
        cJSON_AddStringToObject(node, "ae_title", cfg->node.ae_title);
        cJSON_AddStringToObject(node, "bind", cfg->node.bind);
        cJSON_AddNumberToObject(node, "port", cfg->node.port);
        cJSON_AddNumberToObject(node, "http_port", cfg->node.http_port);
        cJSON_AddStringToObject(node, "storage", cfg->node.storage);
        json_str(node, "config", cfg->path);
        cJSON_AddNumberToObject(root, "schema_version", c.schema_version);
        http_json_counts(root, &c);
        json_time(root, "oldest_pending_job", c.oldest_pending_job_ms);
        cJSON *o = cJSON_AddObjectToObject(root, "worker");
        cJSON_AddNumberToObject(o, "workers", cfg->node.workers);
        cJSON_AddStringToObject(o, "device_config", cfg->node.device);
        cJSON_AddStringToObject(o, "device", device);
        cJSON_AddNumberToObject(o, "job_timeout_s", cfg->node.job_timeout);
        cJSON_AddItemToObject(o, "running", run.arr);
        run.arr = NULL;
        if (free_b >= 0)
            cJSON_AddNumberToObject(root, "disk_free_bytes", (double)free_b);
        else
            cJSON_AddNullToObject(root, "disk_free_bytes");
        cJSON_AddBoolToObject(root, "daemon_running", live != NULL || owner != 0);
        if (owner > 0)
            cJSON_AddNumberToObject(root, "daemon_pid", (double)owner);
        else
            cJSON_AddNullToObject(root, "daemon_pid");
        if (live)
            cJSON_AddItemToObject(root, "daemon", live);
        else
            cJSON_AddNullToObject(root, "daemon");
        live = NULL;
        rc = cli_json_out(root);
    } else {
        char b1[32], b2[32], t[32];
        printf("node      %s on %s:%d, storage %s\n", cfg->node.ae_title,
               cfg->node.bind[0] ? cfg->node.bind : "0.0.0.0", cfg->node.port, cfg->node.storage);
        printf("config    %s\n", cfg->path[0] ? cfg->path : "(built-in defaults)");
        char pid[32] = "";
        if (owner > 0)
            snprintf(pid, sizeof pid, "pid %ld, ", owner);
        if (!live && owner) {
            printf("daemon    running (%s%s)\n", pid,
                   cfg->node.http_port <= 0 ? "http_port = 0: no live figures"
                                            : "its status endpoint does not answer");
        } else if (!live) {
            printf("daemon    not running on this storage\n");
        } else {
            char up[64] = "?";
            double u = jnum(live, "uptime_s", NULL, -1);
            if (u >= 0)
                human_duration(u, up, sizeof up);
            const cJSON *v = cJSON_GetObjectItemCaseSensitive(live, "version");
            printf("daemon    running (%sversion %s, up %s), %.0f association(s) active, "
                   "%.0f accepted, %.0f instances received\n",
                   pid, cJSON_IsString(v) ? v->valuestring : "?", up,
                   jnum(live, "associations", "active", 0), jnum(live, "associations", "accepted", 0),
                   jnum(live, "dimse", "instances_received", 0));
        }
        printf("store     %" PRId64 " patients, %" PRId64 " studies, %" PRId64 " series, %" PRId64
               " instances, %s (schema %d)\n",
               c.patients, c.studies, c.series, c.instances, cli_human_bytes(c.bytes, b1, sizeof b1),
               c.schema_version);
        printf("disk      %s free\n", free_b >= 0 ? cli_human_bytes(free_b, b2, sizeof b2) : "?");
        printf("series   ");
        for (int i = 0; i < STORE_SERIES__COUNT; i++)
            printf(" %s %" PRId64 "%s", store_series_state_name((store_series_state)i),
                   c.series_by_state[i], i + 1 < STORE_SERIES__COUNT ? "," : "\n");
        printf("jobs     ");
        for (int i = 0; i < STORE_JOB__COUNT; i++)
            printf(" %s %" PRId64 "%s", store_job_state_name((store_job_state)i),
                   c.jobs_by_state[i], i + 1 < STORE_JOB__COUNT ? "," : "\n");
        if (c.oldest_pending_job_ms > 0)
            printf("          oldest pending job since %s\n", cli_time(c.oldest_pending_job_ms, t));
        printf("worker    %d thread(s), device %s (%s), timeout %d s; %s%s\n", cfg->node.workers, device,
               cfg->node.device, cfg->node.job_timeout, run.n ? "running: " : "no job running",
               run.n ? run.line : "");
        printf("outbox   ");
        for (int i = 0; i < STORE_OUTBOX__COUNT; i++)
            printf(" %s %" PRId64 "%s", store_outbox_state_name((store_outbox_state)i),
                   c.outbox_by_state[i], i + 1 < STORE_OUTBOX__COUNT ? "," : "\n");
        rc = 0;
    }
    cJSON_Delete(live);
    cJSON_Delete(run.arr);
    store_close(st);
    sn_config_unref(cfg);
    return rc;
}

/* ---- series ----------------------------------------------------------------------------------- */

static const char SERIES_HELP[] =
    "usage: segnode series [--json] [SERIES_UID]\n"
    "       segnode series route SERIES_UID [ROUTE]\n"
    "       segnode series delete SERIES_UID\n"
    "Without a UID: one line per stored series (newest first). With a UID: that series in\n"
    "detail, its jobs and its instance files.\n"
    "route: choose the routes of a complete series again with the current config (after adding\n"
    "or changing a route, or to segment it again): one pending job per matching route, as at\n"
    "completion, or for ROUTE alone, whether it matches or not; a route with a job pending or\n"
    "running for the series gets no second one. `config check SERIES_UID` shows why routes\n"
    "match. Exit 1 when no job was created. The running node takes the jobs within seconds.\n"
    "delete: remove the series now: its files, rows, jobs (pending ones too) and SEG deliveries\n"
    "not yet made, and its study and patient when nothing else is left in them. Refused while\n"
    "it is receiving, a job runs on it or a SEG of it is being sent.\n";

static int series_delete(const char *uid)
{
    sn_config *cfg;
    store *st;
    int rc;
    if ((rc = cli_open_config_store(&cfg, &st)))
        return rc;
    char err[1024] = "";
    store_retention_result r;
    int s = store_series_delete(st, uid, &r, err, sizeof err);
    if (s != SN_OK) {
        fprintf(stderr, "segnode series delete: %s\n", err[0] ? err : sn_strerror(s));
        rc = CLI_EXIT_FAIL;
    } else if (cli_g.json) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "series_uid", uid);
        cJSON_AddNumberToObject(o, "instances", (double)r.instances);
        cJSON_AddNumberToObject(o, "bytes", (double)r.bytes);
        rc = cli_json_out(o);
    } else {
        char b[32];
        printf("deleted series %s: %lld instance(s), %s\n", uid, (long long)r.instances,
               cli_human_bytes(r.bytes, b, sizeof b));
    }
    store_close(st);
    sn_config_unref(cfg);
    return rc;
}

static int series_route(const char *uid, const char *route)
{
    sn_config *cfg;
    store *st;
    int rc;
    if ((rc = cli_open_config_store(&cfg, &st)))
        return rc;
    char err[1024] = "";
    int created = 0, skipped = 0;
    int s = store_series_route(st, uid, cfg, route, &created, &skipped, err, sizeof err);
    if (s != SN_OK) {
        fprintf(stderr, "segnode series route: %s\n", err[0] ? err : sn_strerror(s));
        rc = CLI_EXIT_FAIL;
    } else {
        rc = created ? CLI_EXIT_OK : CLI_EXIT_FAIL;
        if (cli_g.json) {
            cJSON *o = cJSON_CreateObject();
            cJSON_AddStringToObject(o, "series_uid", uid);
            cJSON_AddNumberToObject(o, "jobs_created", created);
            cJSON_AddNumberToObject(o, "routes_already_queued", skipped);
            if (cli_json_out(o) != CLI_EXIT_OK)
                rc = CLI_EXIT_FAIL;
        } else if (created) {
            printf("series %s: %d job(s) queued%s\n", uid, created,
                   skipped ? " (other matching routes already have one queued)" : "");
        } else if (skipped) {
            printf("series %s: every matching route already has a job pending or running\n", uid);
        } else {
            printf("series %s: no route matches (segnode config check %s says why)\n", uid, uid);
        }
    }
    store_close(st);
    sn_config_unref(cfg);
    return rc;
}

typedef struct series_ctx {
    cli_table *t;
    cJSON *arr;
    int found;
    cJSON *one;                /* detail object (JSON, UID given) */
} series_ctx;

static cJSON *series_json(const store_series_row *r)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "id", (double)r->id);
    json_str(o, "series_uid", r->series_uid);
    json_str(o, "study_uid", r->study_uid);
    json_str(o, "patient_id", r->patient_id);
    json_str(o, "patient_name", r->patient_name);
    json_str(o, "modality", r->modality);
    json_str(o, "series_description", r->series_description);
    json_str(o, "body_part", r->body_part);
    json_str(o, "frame_of_reference_uid", r->frame_of_reference_uid);
    if (r->series_number >= 0)
        cJSON_AddNumberToObject(o, "series_number", r->series_number);
    else
        cJSON_AddNullToObject(o, "series_number");
    cJSON_AddNumberToObject(o, "instances", (double)r->instances);
    cJSON_AddNumberToObject(o, "bytes", (double)r->bytes);
    cJSON_AddNumberToObject(o, "replaced", (double)r->replaced);
    cJSON_AddStringToObject(o, "state", store_series_state_name(r->state));
    json_str(o, "source_ae", r->source_ae);
    json_time(o, "first_received", r->first_received_ms);
    json_time(o, "last_received", r->last_received_ms);
    return o;
}

static int series_row_cb(void *vctx, const store_series_row *r)
{
    series_ctx *ctx = vctx;
    ctx->found++;
    if (ctx->arr) {
        cJSON_AddItemToArray(ctx->arr, series_json(r));
        return 0;
    }
    if (ctx->t) {
        char inst[32], size[32], t[32];
        snprintf(inst, sizeof inst, "%" PRId64, r->instances);
        const char *cells[] = {r->series_uid, r->modality, r->series_description, inst,
                               cli_human_bytes(r->bytes, size, sizeof size),
                               store_series_state_name(r->state), r->source_ae,
                               cli_time(r->last_received_ms, t)};
        cli_table_add(ctx->t, cells);
        return 0;
    }
    if (ctx->one == NULL && cli_g.json) {
        ctx->one = series_json(r);
        return 1;
    }
    /* text details */
    char b[32], t1[32], t2[32];
    printf("series uid        %s\n", r->series_uid);
    printf("study uid         %s\n", r->study_uid ? r->study_uid : "-");
    printf("patient           %s (%s)\n", r->patient_name && *r->patient_name ? r->patient_name : "-",
           r->patient_id && *r->patient_id ? r->patient_id : "-");
    printf("modality          %s\n", r->modality && *r->modality ? r->modality : "-");
    printf("description       %s\n",
           r->series_description && *r->series_description ? r->series_description : "-");
    printf("body part         %s\n", r->body_part && *r->body_part ? r->body_part : "-");
    if (r->series_number >= 0)
        printf("series number     %d\n", r->series_number);
    else
        printf("series number     -\n");
    printf("frame of ref.     %s\n",
           r->frame_of_reference_uid && *r->frame_of_reference_uid ? r->frame_of_reference_uid : "-");
    printf("state             %s\n", store_series_state_name(r->state));
    printf("instances         %" PRId64 " (%" PRId64 " received again)\n", r->instances, r->replaced);
    printf("size              %s (%" PRId64 " bytes)\n", cli_human_bytes(r->bytes, b, sizeof b), r->bytes);
    printf("source AE         %s\n", r->source_ae && *r->source_ae ? r->source_ae : "-");
    printf("first received    %s\n", cli_time(r->first_received_ms, t1));
    printf("last received     %s\n", cli_time(r->last_received_ms, t2));
    return 1;
}

typedef struct jobs_ctx {
    const char *series_uid;    /* filter, or NULL */
    store *st;                 /* for each job's outbox rows */
    cli_table *t;
    cJSON *arr;
    int n;
} jobs_ctx;

/* A job's outbox rows: JSON objects into `arr` (if non-NULL), and for the table a compact
 * "PEER state[ xN]" list into `cell` and the newest error into `why`. */
typedef struct outbox_ctx {
    cJSON *arr;
    char cell[512];
    size_t len;
    char why[700];
    int64_t why_ms;
} outbox_ctx;

static int outbox_row_cb(void *vctx, const store_outbox_row *r)
{
    outbox_ctx *c = vctx;
    char dimse[16] = "";
    if (r->dimse_status != 0xFFFFu)
        snprintf(dimse, sizeof dimse, "0x%04X", r->dimse_status);
    if (c->arr) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddNumberToObject(o, "id", (double)r->id);
        json_str(o, "peer", r->peer);
        cJSON_AddStringToObject(o, "state", store_outbox_state_name(r->state));
        cJSON_AddNumberToObject(o, "attempts", r->attempts);
        json_str(o, "dimse_status", dimse);
        json_str(o, "error", r->last_error);
        json_str(o, "sop_instance_uid", r->sop_instance_uid);
        json_time(o, "next_attempt", r->state == STORE_OUTBOX_PENDING ? r->next_attempt_ms : 0);
        json_time(o, "sent", r->sent_ms);
        json_time(o, "updated", r->updated_ms);
        cJSON_AddItemToArray(c->arr, o);
    }
    if (c->len < sizeof c->cell) {
        char tries[16] = "";
        if (r->attempts > 1 || (r->attempts == 1 && r->state != STORE_OUTBOX_SENT))
            snprintf(tries, sizeof tries, " x%d", r->attempts);
        c->len += (size_t)snprintf(c->cell + c->len, sizeof c->cell - c->len, "%s%s %s%s",
                                   c->len ? ", " : "", r->peer, store_outbox_state_name(r->state), tries);
    }
    if (r->state != STORE_OUTBOX_SENT && r->last_error[0] && r->updated_ms >= c->why_ms) {
        c->why_ms = r->updated_ms;
        snprintf(c->why, sizeof c->why, "%s: %s%s%s%s", r->peer, r->last_error, dimse[0] ? " (" : "",
                 dimse, dimse[0] ? ")" : "");
    }
    return 0;
}

static cJSON *job_json(const store_job_row *j)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "id", (double)j->id);
    cJSON_AddNumberToObject(o, "series_id", (double)j->series_id);
    json_str(o, "series_uid", j->series_uid);
    json_str(o, "route", j->route);
    json_str(o, "method", j->method);
    cJSON_AddStringToObject(o, "state", store_job_state_name(j->state));
    cJSON_AddNumberToObject(o, "attempts", j->attempts);
    json_str(o, "error", j->error);
    json_str(o, "calling_ae", j->calling_ae);
    json_time(o, "created", j->created_ms);
    json_time(o, "updated", j->updated_ms);
    return o;
}

/* What the worker recorded of a job into its JSON object: "timings" (the stage object, plus
 * send_ms once a destination got it), device, worker, started, lease_until and replaces_job. */
static void job_detail_json(cJSON *o, const store_job_detail *d)
{
    cJSON *t = d->timings ? cJSON_Parse(d->timings) : NULL;
    if (!cJSON_IsObject(t)) {
        cJSON_Delete(t);
        t = cJSON_CreateObject();
    }
    if (!cJSON_GetObjectItemCaseSensitive(t, "wait_stable_ms") && d->stable_ms > 0 && d->last_received_ms > 0)
        cJSON_AddNumberToObject(t, "wait_stable_ms", (double)(d->stable_ms - d->last_received_ms));
    if (d->send_ms >= 0)
        cJSON_AddNumberToObject(t, "send_ms", (double)d->send_ms);
    cJSON_AddItemToObject(o, "timings", t);
    json_str(o, "device", d->device);
    json_str(o, "worker", d->worker);
    json_time(o, "started", d->started_ms);
    json_time(o, "lease_until", d->job.state == STORE_JOB_RUNNING ? d->lease_until : 0);
    if (d->replaces_job > 0)
        cJSON_AddNumberToObject(o, "replaces_job", (double)d->replaces_job);
    else
        cJSON_AddNullToObject(o, "replaces_job");
}

/* The outbox rows of job `id`; on a read error the cell says so (the list goes on). */
static void job_outbox(store *st, int64_t id, outbox_ctx *oc)
{
    char err[400] = "";
    if (st && store_outbox_list(st, id, outbox_row_cb, oc, err, sizeof err) != 0)
        oc->len = (size_t)snprintf(oc->cell, sizeof oc->cell, "? (%s)", err);
}

static int job_row_cb(void *vctx, const store_job_detail *d)
{
    jobs_ctx *ctx = vctx;
    const store_job_row *j = &d->job;
    if (ctx->series_uid && (!j->series_uid || strcmp(ctx->series_uid, j->series_uid) != 0))
        return 0;
    ctx->n++;
    outbox_ctx oc;
    memset(&oc, 0, sizeof oc);
    if (ctx->arr) {
        cJSON *o = job_json(j);
        job_detail_json(o, d);
        oc.arr = cJSON_AddArrayToObject(o, "outbox");
        job_outbox(ctx->st, j->id, &oc);
        cJSON_AddItemToArray(ctx->arr, o);
        return 0;
    }
    job_outbox(ctx->st, j->id, &oc);
    char id[32], att[16], t[32];
    snprintf(id, sizeof id, "%" PRId64, j->id);
    snprintf(att, sizeof att, "%d", j->attempts);
    const char *cells[] = {id, store_job_state_name(j->state), j->route, j->method, att,
                           j->series_uid, cli_time(j->updated_ms, t), oc.len ? oc.cell : "-",
                           j->error && *j->error ? j->error : oc.why};
    cli_table_add(ctx->t, cells);
    return 0;
}

static cli_table *jobs_table(void)
{
    static const char *const h[] = {"ID", "STATE", "ROUTE", "METHOD", "ATTEMPTS", "SERIES UID",
                                    "UPDATED", "OUTBOX", "ERROR"};
    cli_table *t = cli_table_new(9, h);
    cli_table_align_right(t, 0);
    cli_table_align_right(t, 4);
    return t;
}

typedef struct files_ctx {
    cJSON *arr;
    int n;
} files_ctx;

static int file_row_cb(void *vctx, const char *sop, const char *cls, const char *path)
{
    files_ctx *ctx = vctx;
    ctx->n++;
    if (ctx->arr) {
        cJSON *o = cJSON_CreateObject();
        json_str(o, "sop_instance_uid", sop);
        json_str(o, "sop_class_uid", cls);
        json_str(o, "path", path);
        cJSON_AddItemToArray(ctx->arr, o);
    } else if (ctx->n <= 20 || cli_g.verbose) {
        printf("  %s  %s\n", sop, path);
    }
    return 0;
}

int cli_cmd_series(int argc, char **argv)
{
    char *pos[argc > 0 ? argc : 1];
    int npos, rc = parse_args(argc, argv, SERIES_HELP, pos, &npos);
    if (rc)
        return rc == ARGS_HELP ? 0 : rc;
    if (npos >= 1 && strcmp(pos[0], "delete") == 0) {
        if (npos != 2) {
            fprintf(stderr, "segnode series delete: needs one series UID\n%s", SERIES_HELP);
            return CLI_EXIT_USAGE;
        }
        if (!sn_uid_valid(pos[1])) {
            fprintf(stderr, "segnode series delete: '%s' is not a valid DICOM UID\n", pos[1]);
            return CLI_EXIT_USAGE;
        }
        return series_delete(pos[1]);
    }
    if (npos >= 1 && strcmp(pos[0], "route") == 0) {
        if (npos < 2 || npos > 3) {
            fprintf(stderr, "segnode series route: needs a series UID and at most one route\n%s", SERIES_HELP);
            return CLI_EXIT_USAGE;
        }
        if (!sn_uid_valid(pos[1])) {
            fprintf(stderr, "segnode series route: '%s' is not a valid DICOM UID\n", pos[1]);
            return CLI_EXIT_USAGE;
        }
        return series_route(pos[1], npos == 3 ? pos[2] : NULL);
    }
    if (npos > 1) {
        fprintf(stderr, "segnode series: one series UID at most\n%s", SERIES_HELP);
        return CLI_EXIT_USAGE;
    }
    const char *uid = npos ? pos[0] : NULL;
    if (uid && !sn_uid_valid(uid)) {
        fprintf(stderr, "segnode series: '%s' is not a valid DICOM UID\n", uid);
        return CLI_EXIT_USAGE;
    }
    sn_config *cfg;
    store *st;
    if ((rc = cli_open_config_store(&cfg, &st)))
        return rc;
    char err[1024] = "";
    series_ctx ctx = {0};
    static const char *const h[] = {"SERIES UID", "MOD", "DESCRIPTION", "INST", "SIZE",
                                    "STATE", "SOURCE AE", "LAST RECEIVED"};
    if (!uid) {
        if (cli_g.json)
            ctx.arr = cJSON_CreateArray();
        else {
            ctx.t = cli_table_new(8, h);
            cli_table_align_right(ctx.t, 3);
            cli_table_align_right(ctx.t, 4);
        }
    }
    int s = store_series_list(st, uid, series_row_cb, &ctx, err, sizeof err);
    if (s != 0) {
        fprintf(stderr, "segnode series: %s\n", err[0] ? err : sn_strerror(s));
        rc = CLI_EXIT_FAIL;
        goto done;
    }
    if (!uid) {
        if (ctx.arr) {
            rc = cli_json_out(ctx.arr);
            ctx.arr = NULL;
        } else {
            if (cli_table_rows(ctx.t))
                cli_table_print(ctx.t, stdout);
            else
                printf("no series stored in %s\n", cfg->node.storage);
        }
        goto done;
    }
    if (!ctx.found) {
        fprintf(stderr, "segnode series: no such series %s\n", uid);
        rc = CLI_EXIT_FAIL;
        goto done;
    }
    /* details: jobs and files of this series */
    jobs_ctx jc = {.series_uid = uid, .st = st};
    files_ctx fc = {0};
    if (cli_g.json) {
        jc.arr = cJSON_AddArrayToObject(ctx.one, "jobs");
        fc.arr = cJSON_AddArrayToObject(ctx.one, "files");
    } else {
        jc.t = jobs_table();
    }
    s = store_job_list_detail(st, -1, -1, job_row_cb, &jc, err, sizeof err);
    if (s == 0 && !cli_g.json) {
        printf("jobs              %d\n", jc.n);
        if (jc.n)
            cli_table_print(jc.t, stdout);
        printf("files\n");
    }
    if (s == 0)
        s = store_instance_list(st, uid, file_row_cb, &fc, err, sizeof err);
    cli_table_free(jc.t);
    if (s != 0) {
        fprintf(stderr, "segnode series: %s\n", err[0] ? err : sn_strerror(s));
        rc = CLI_EXIT_FAIL;
        goto done;
    }
    if (cli_g.json) {
        rc = cli_json_out(ctx.one);
        ctx.one = NULL;
    } else if (fc.n > 20 && !cli_g.verbose) {
        printf("  ... %d more (-v lists all)\n", fc.n - 20);
    }
done:
    cJSON_Delete(ctx.arr);
    cJSON_Delete(ctx.one);
    cli_table_free(ctx.t);
    store_close(st);
    sn_config_unref(cfg);
    return rc;
}

/* ---- jobs ------------------------------------------------------------------------------------- */

static const char JOBS_HELP[] =
    "usage: segnode jobs list [--json]\n"
    "       segnode jobs retry ID\n"
    "       segnode jobs cancel ID\n"
    "list: every segmentation job (state, route, method, attempts, last error) and its outbox:\n"
    "      per destination the state (pending, sending, sent, failed), tries, and the last\n"
    "      error with the peer's DIMSE status (--json: an \"outbox\" array per job).\n"
    "retry: if the job is done and some of its destinations failed, queue those sends again\n"
    "      (fresh tries; the running node sends them within a second); otherwise put a failed\n"
    "      or done job back to pending so the worker runs it again.\n"
    "cancel: fail a pending or running job now (\"cancelled by an admin\"); a running one is\n"
    "      stopped by the node at its next lease renewal (a third of the lease); its series\n"
    "      becomes failed once none of its jobs is left to run. `jobs retry` undoes it.\n";

int cli_cmd_jobs(int argc, char **argv)
{
    char *pos[argc > 0 ? argc : 1];
    int npos, rc = parse_args(argc, argv, JOBS_HELP, pos, &npos);
    if (rc)
        return rc == ARGS_HELP ? 0 : rc;
    const char *sub = npos ? pos[0] : "list";
    int64_t id = 0;
    if (strcmp(sub, "list") == 0) {
        if (npos > 1) {
            fprintf(stderr, "segnode jobs list: unexpected argument %s\n", pos[1]);
            return CLI_EXIT_USAGE;
        }
    } else if (strcmp(sub, "retry") == 0 || strcmp(sub, "cancel") == 0) {
        if (npos != 2) {
            fprintf(stderr, "segnode jobs %s: needs one job ID\n%s", sub, JOBS_HELP);
            return CLI_EXIT_USAGE;
        }
        char *end = NULL;
        errno = 0;
        long long v = strtoll(pos[1], &end, 10);
        if (errno || !end || *end || end == pos[1] || v <= 0) {
            fprintf(stderr, "segnode jobs %s: '%s' is not a job ID\n", sub, pos[1]);
            return CLI_EXIT_USAGE;
        }
        id = v;
    } else {
        fprintf(stderr, "segnode jobs: unknown action '%s'\n%s", sub, JOBS_HELP);
        return CLI_EXIT_USAGE;
    }
    sn_config *cfg;
    store *st;
    if ((rc = cli_open_config_store(&cfg, &st)))
        return rc;
    char err[1024] = "";
    int s;
    if (id && strcmp(sub, "cancel") == 0) {
        s = store_job_fail(st, id, "cancelled by an admin (segnode jobs cancel)", err, sizeof err);
        if (s != SN_OK) {
            fprintf(stderr, "segnode jobs cancel: %s\n",
                    s == SN_ENOENT ? "no such job" : err[0] ? err : sn_strerror(s));
            rc = CLI_EXIT_FAIL;
        } else if (cli_g.json) {
            cJSON *o = cJSON_CreateObject();
            cJSON_AddNumberToObject(o, "id", (double)id);
            cJSON_AddStringToObject(o, "state", store_job_state_name(STORE_JOB_FAILED));
            rc = cli_json_out(o);
        } else {
            printf("job %" PRId64 " cancelled (failed; a running one stops at its next lease renewal)\n", id);
        }
    } else if (id) {
        int requeued = 0;
        s = store_outbox_retry_job(st, id, &requeued, err, sizeof err);
        if (s == 0 && requeued > 0) {
            if (cli_g.json) {
                cJSON *o = cJSON_CreateObject();
                cJSON_AddNumberToObject(o, "id", (double)id);
                cJSON_AddStringToObject(o, "state", store_job_state_name(STORE_JOB_DONE));
                cJSON_AddNumberToObject(o, "outbox_requeued", requeued);
                rc = cli_json_out(o);
            } else {
                printf("job %" PRId64 ": %d failed send(s) queued again\n", id, requeued);
            }
            goto jobs_done;
        }
        if (s == 0)
            s = store_job_retry(st, id, err, sizeof err);
        if (s == SN_ENOENT) {
            fprintf(stderr, "segnode jobs retry: no such job %" PRId64 "\n", id);
            rc = CLI_EXIT_FAIL;
        } else if (s != 0) {
            fprintf(stderr, "segnode jobs retry: job %" PRId64 ": %s\n", id,
                    err[0] ? err : sn_strerror(s));
            rc = CLI_EXIT_FAIL;
        } else if (cli_g.json) {
            cJSON *o = cJSON_CreateObject();
            cJSON_AddNumberToObject(o, "id", (double)id);
            cJSON_AddStringToObject(o, "state", store_job_state_name(STORE_JOB_PENDING));
            cJSON_AddNumberToObject(o, "outbox_requeued", 0);
            rc = cli_json_out(o);
        } else {
            printf("job %" PRId64 " is pending again\n", id);
        }
    } else {
        jobs_ctx jc = {.st = st};
        if (cli_g.json)
            jc.arr = cJSON_CreateArray();
        else
            jc.t = jobs_table();
        s = store_job_list_detail(st, -1, -1, job_row_cb, &jc, err, sizeof err);
        if (s != 0) {
            fprintf(stderr, "segnode jobs list: %s\n", err[0] ? err : sn_strerror(s));
            rc = CLI_EXIT_FAIL;
            cJSON_Delete(jc.arr);
        } else if (jc.arr) {
            rc = cli_json_out(jc.arr);
        } else if (jc.n) {
            cli_table_print(jc.t, stdout);
        } else {
            printf("no jobs\n");
        }
        cli_table_free(jc.t);
    }
jobs_done:
    store_close(st);
    sn_config_unref(cfg);
    return rc;
}

/* ---- peers ------------------------------------------------------------------------------------ */

static const char PEERS_HELP[] =
    "usage: segnode peers [--json]\n"
    "The configured remote AEs: section name, AE title, address, what they may ask of us.\n";

int cli_cmd_peers(int argc, char **argv)
{
    char *pos[argc > 0 ? argc : 1];
    int npos, rc = parse_args(argc, argv, PEERS_HELP, pos, &npos);
    if (rc)
        return rc == ARGS_HELP ? 0 : rc;
    if (npos) {
        fprintf(stderr, "segnode peers: unexpected argument %s\n", pos[0]);
        return CLI_EXIT_USAGE;
    }
    sn_config *cfg;
    if (cli_load_config(cli_g.config_path, &cfg) != 0)
        return CLI_EXIT_USAGE;
    if (cli_g.json) {
        cJSON *arr = cJSON_CreateArray();
        for (int i = 0; i < cfg->npeers; i++) {
            const sn_peer *p = &cfg->peers[i];
            cJSON *o = cJSON_CreateObject();
            cJSON_AddStringToObject(o, "name", p->name);
            cJSON_AddStringToObject(o, "ae_title", p->ae_title);
            cJSON_AddStringToObject(o, "host", p->host);
            cJSON_AddNumberToObject(o, "port", p->port);
            cJSON_AddItemToObject(o, "allow", allow_json(p->allow));
            cJSON_AddBoolToObject(o, "stable_on_release", p->stable_on_release);
            cJSON_AddBoolToObject(o, "tls", p->tls);
            cJSON_AddItemToArray(arr, o);
        }
        rc = cli_json_out(arr);
    } else if (cfg->npeers == 0) {
        printf("no peers configured in %s\n", cfg->path[0] ? cfg->path : "the built-in config");
    } else {
        static const char *const h[] = {"NAME", "AE TITLE", "ADDRESS", "ALLOW", "OPTIONS"};
        cli_table *t = cli_table_new(5, h);
        for (int i = 0; i < cfg->npeers; i++) {
            const sn_peer *p = &cfg->peers[i];
            char addr[300], allow[32], opts[64] = "";
            snprintf(addr, sizeof addr, "%s:%d", p->host, p->port);
            if (p->stable_on_release)
                strcat(opts, "stable_on_release ");
            if (p->tls)
                strcat(opts, "tls ");
            sn_strtrim(opts);
            const char *cells[] = {p->name, p->ae_title, addr,
                                   allow_text(p->allow, allow, sizeof allow), opts};
            cli_table_add(t, cells);
        }
        cli_table_print(t, stdout);
        cli_table_free(t);
    }
    sn_config_unref(cfg);
    return rc;
}

/* ---- echo ------------------------------------------------------------------------------------- */

static const char ECHO_HELP[] =
    "usage: segnode echo [--json] PEER\n"
    "C-ECHO the peer (named by its [peer NAME] section or its AE title) as [node] ae_title and\n"
    "print the round trip. Exit 1 if it fails.\n";

int cli_cmd_echo(int argc, char **argv)
{
    char *pos[argc > 0 ? argc : 1];
    int npos, rc = parse_args(argc, argv, ECHO_HELP, pos, &npos);
    if (rc)
        return rc == ARGS_HELP ? 0 : rc;
    if (npos != 1) {
        fprintf(stderr, "segnode echo: needs one PEER\n%s", ECHO_HELP);
        return CLI_EXIT_USAGE;
    }
    sn_config *cfg;
    if (cli_load_config(cli_g.config_path, &cfg) != 0)
        return CLI_EXIT_USAGE;
    const sn_peer *p = find_peer(cfg, pos[0]);
    if (!p) {
        rc = no_peer(cfg, "echo", pos[0]);
        sn_config_unref(cfg);
        return rc;
    }
    scp_global_init();
    char err[1024] = "";
    int64_t t0 = sn_mono_ms();
    int s = scp_scu_echo(cfg, p, err, sizeof err);
    double ms = (double)(sn_mono_ms() - t0);
    if (cli_g.json) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "peer", p->name);
        cJSON_AddStringToObject(o, "ae_title", p->ae_title);
        cJSON_AddStringToObject(o, "host", p->host);
        cJSON_AddNumberToObject(o, "port", p->port);
        cJSON_AddBoolToObject(o, "ok", s == 0);
        cJSON_AddNumberToObject(o, "ms", ms);
        if (s == 0)
            cJSON_AddNullToObject(o, "error");
        else
            cJSON_AddStringToObject(o, "error", err[0] ? err : sn_strerror(s));
        cli_json_out(o);
    }
    if (s != 0) {
        /* The SCU's reason names the peer and its address already. */
        if (err[0])
            fprintf(stderr, "segnode echo: %s\n", err);
        else
            fprintf(stderr, "segnode echo: %s (%s at %s:%d) failed: %s\n", p->name, p->ae_title,
                    p->host, p->port, sn_strerror(s));
        rc = CLI_EXIT_FAIL;
    } else if (!cli_g.json) {
        printf("echo %s (%s at %s:%d): ok in %.0f ms\n", p->name, p->ae_title, p->host, p->port,
               ms);
    }
    sn_config_unref(cfg);
    return rc;
}

/* ---- send ------------------------------------------------------------------------------------- */

static const char SEND_HELP[] =
    "usage: segnode send [--json] PEER FILE|DIR|SERIES_UID...\n"
    "C-STORE the files to the peer over one association. Folders are walked recursively; files\n"
    "found there without the DICM preamble are skipped. A Series Instance UID (not a path) sends\n"
    "that stored series from the node's storage: a received series, or a SEG the node made\n"
    "(its UID is in `segnode series`). Prints each failure and a summary; exit 1 if any file\n"
    "was not sent.\n";

typedef struct file_list {
    char **v;
    int n, cap;
    int skipped;
} file_list;

static int fl_add(file_list *fl, const char *path)
{
    if (fl->n == fl->cap) {
        int cap = fl->cap ? fl->cap * 2 : 64;
        char **n = realloc(fl->v, (size_t)cap * sizeof *n);
        if (!n)
            return SN_ENOMEM;
        fl->v = n;
        fl->cap = cap;
    }
    if (!(fl->v[fl->n] = strdup(path)))
        return SN_ENOMEM;
    fl->n++;
    return 0;
}

static void fl_free(file_list *fl)
{
    for (int i = 0; i < fl->n; i++)
        free(fl->v[i]);
    free(fl->v);
}

static int has_dicm(const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    char b[4];
    int ok = pread(fd, b, 4, 128) == 4 && memcmp(b, "DICM", 4) == 0;
    close(fd);
    return ok;
}

static int skip_dot(const struct dirent *d) { return d->d_name[0] != '.'; }

/* Walk `dir` in name order; regular files with DICM are added, others counted as skipped. */
static int walk_dir(file_list *fl, const char *dir, int depth)
{
    if (depth > 64)
        return 0;
    struct dirent **ents = NULL;
    int n = scandir(dir, &ents, skip_dot, alphasort);
    if (n < 0) {
        fprintf(stderr, "segnode send: cannot read folder %s: %s\n", dir, strerror(errno));
        return SN_EIO;
    }
    int rc = 0;
    for (int i = 0; i < n; i++) {
        char path[4096];
        if (rc == 0 && snprintf(path, sizeof path, "%s/%s", dir, ents[i]->d_name) < (int)sizeof path) {
            struct stat sb;
            if (stat(path, &sb) != 0) {
                fl->skipped++;
            } else if (S_ISDIR(sb.st_mode)) {
                rc = walk_dir(fl, path, depth + 1);
            } else if (S_ISREG(sb.st_mode) && has_dicm(path)) {
                rc = fl_add(fl, path);
            } else {
                if (cli_g.verbose)
                    fprintf(stderr, "segnode send: skipping %s (not a DICOM file)\n", path);
                fl->skipped++;
            }
        }
        free(ents[i]);
    }
    free(ents);
    return rc;
}

static int fl_add_stored(void *ctx, const char *sop, const char *cls, const char *path)
{
    (void)sop, (void)cls;
    return fl_add(ctx, path) == 0 ? 0 : 1;
}

/* The instance files of stored series `uid` into fl; opens the store once (*st). */
static int fl_add_series(file_list *fl, const sn_config *cfg, store **st, const char *uid)
{
    char err[1024] = "";
    if (!*st && cli_open_store(cfg, st) != SN_OK)
        return CLI_EXIT_FAIL;
    int before = fl->n, s = store_instance_list(*st, uid, fl_add_stored, fl, err, sizeof err);
    if (s != SN_OK) {
        fprintf(stderr, "segnode send: series %s: %s\n", uid, err[0] ? err : sn_strerror(s));
        return CLI_EXIT_FAIL;
    }
    if (fl->n == before) {
        fprintf(stderr, "segnode send: %s is neither a file nor a stored series\n", uid);
        return CLI_EXIT_USAGE;
    }
    return 0;
}

int cli_cmd_send(int argc, char **argv)
{
    char *pos[argc > 0 ? argc : 1];
    int npos, rc = parse_args(argc, argv, SEND_HELP, pos, &npos);
    if (rc)
        return rc == ARGS_HELP ? 0 : rc;
    if (npos < 2) {
        fprintf(stderr, "segnode send: needs a PEER and at least one FILE or folder\n%s", SEND_HELP);
        return CLI_EXIT_USAGE;
    }
    sn_config *cfg;
    if (cli_load_config(cli_g.config_path, &cfg) != 0)
        return CLI_EXIT_USAGE;
    const sn_peer *p = find_peer(cfg, pos[0]);
    if (!p) {
        rc = no_peer(cfg, "send", pos[0]);
        sn_config_unref(cfg);
        return rc;
    }
    file_list fl = {0};
    scp_send_status *res = NULL;
    store *st = NULL;
    for (int i = 1; i < npos; i++) {
        struct stat sb;
        int missing = stat(pos[i], &sb) != 0 ? errno : 0;
        if (missing == ENOENT && sn_uid_valid(pos[i])) {
            if ((rc = fl_add_series(&fl, cfg, &st, pos[i])) != 0)
                goto done;
            continue;
        }
        if (missing) {
            fprintf(stderr, "segnode send: %s: %s\n", pos[i], strerror(missing));
            rc = CLI_EXIT_USAGE;
            goto done;
        }
        int s = S_ISDIR(sb.st_mode) ? walk_dir(&fl, pos[i], 0) : fl_add(&fl, pos[i]);
        if (s != 0) {
            if (s == SN_ENOMEM)
                fprintf(stderr, "segnode send: out of memory\n");
            rc = CLI_EXIT_FAIL;
            goto done;
        }
    }
    if (fl.n == 0) {
        fprintf(stderr, "segnode send: no DICOM files found (%d skipped)\n", fl.skipped);
        rc = CLI_EXIT_USAGE;
        goto done;
    }
    res = calloc((size_t)fl.n, sizeof *res);
    if (!res) {
        fprintf(stderr, "segnode send: out of memory\n");
        rc = CLI_EXIT_FAIL;
        goto done;
    }
    /* If the association fails the SCU may not touch every entry: start as "not sent". */
    for (int i = 0; i < fl.n; i++) {
        res[i].path = fl.v[i];
        res[i].status = SN_ENET;
        res[i].dimse_status = 0xFFFF;
        sn_strlcpy(res[i].error, "not sent", sizeof res[i].error);
    }
    scp_global_init();
    char err[1024] = "";
    int64_t t0 = sn_mono_ms();
    int s = scp_scu_send(cfg, p, (const char *const *)fl.v, fl.n, res, err, sizeof err);
    double secs = (double)(sn_mono_ms() - t0) / 1000.0;
    int assoc_failed = s != 0 && s != SN_EIO;
    /* A file counts as sent when the call succeeded, or the peer answered it. When the
     * association itself failed the SCU may leave entries untouched: those were not sent. */
    int sent = 0;
    for (int i = 0; i < fl.n; i++) {
        if (s != 0 && res[i].status == 0 && res[i].dimse_status == 0xFFFF) {
            res[i].status = assoc_failed ? s : SN_EIO;
            sn_strlcpy(res[i].error, assoc_failed && err[0] ? err : "not sent",
                       sizeof res[i].error);
        }
        if (res[i].status == 0)
            sent++;
    }

    if (cli_g.json) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "peer", p->name);
        cJSON_AddStringToObject(o, "ae_title", p->ae_title);
        cJSON_AddStringToObject(o, "host", p->host);
        cJSON_AddNumberToObject(o, "port", p->port);
        cJSON_AddNumberToObject(o, "files", fl.n);
        cJSON_AddNumberToObject(o, "sent", sent);
        cJSON_AddNumberToObject(o, "skipped", fl.skipped);
        cJSON_AddNumberToObject(o, "seconds", secs);
        if (assoc_failed)
            cJSON_AddStringToObject(o, "error", err[0] ? err : sn_strerror(s));
        else
            cJSON_AddNullToObject(o, "error");
        cJSON *f = cJSON_AddArrayToObject(o, "failed");
        for (int i = 0; i < fl.n && s != 0; i++) {
            if (res[i].status == 0)
                continue;
            cJSON *e = cJSON_CreateObject();
            cJSON_AddStringToObject(e, "path", fl.v[i]);
            cJSON_AddStringToObject(e, "error",
                                    res[i].error[0] ? res[i].error : sn_strerror(res[i].status));
            if (res[i].dimse_status != 0xFFFF)
                cJSON_AddNumberToObject(e, "dimse_status", res[i].dimse_status);
            else
                cJSON_AddNullToObject(e, "dimse_status");
            cJSON_AddItemToArray(f, e);
        }
        cli_json_out(o);
    } else if (s != 0) {
        if (assoc_failed)
            fprintf(stderr, "segnode send: %s\n", err[0] ? err : sn_strerror(s));
        for (int i = 0; i < fl.n; i++) {
            /* After an association failure every file has the same reason, said above. */
            if (res[i].status == 0 || (assoc_failed && !cli_g.verbose))
                continue;
            if (res[i].dimse_status != 0xFFFF)
                fprintf(stderr, "  failed %s: %s (status 0x%04X)\n", fl.v[i],
                        res[i].error[0] ? res[i].error : sn_strerror(res[i].status),
                        res[i].dimse_status);
            else
                fprintf(stderr, "  failed %s: %s\n", fl.v[i],
                        res[i].error[0] ? res[i].error : sn_strerror(res[i].status));
        }
    }
    if (!cli_g.json) {
        /* A Warning status: the peer stored the file but has a remark (scp_store_status_delivered). */
        for (int i = 0; i < fl.n; i++)
            if (res[i].status == 0 && res[i].dimse_status != 0 && res[i].dimse_status != 0xFFFF)
                fprintf(stderr, "  warning %s: stored with status 0x%04X%s%s\n", fl.v[i], res[i].dimse_status,
                        res[i].error[0] ? ": " : "", res[i].error);
        printf("sent %d of %d files to %s in %.2f s", sent, fl.n, p->name, secs);
        if (fl.skipped)
            printf(" (%d non-DICOM skipped)", fl.skipped);
        printf("\n");
    }
    rc = sent == fl.n ? CLI_EXIT_OK : CLI_EXIT_FAIL;
done:
    free(res);
    fl_free(&fl);
    store_close(st);
    sn_config_unref(cfg);
    return rc;
}

/* ---- config check ----------------------------------------------------------------------------- */

static const char CONFIG_HELP[] =
    "usage: segnode config check [--json] [FILE]\n"
    "       segnode config check [--json] [FILE] SERIES_DIR|SERIES_UID\n"
    "Load and validate the config (FILE, else -c / $SEGNODE_CONFIG / " CLI_DEFAULT_CONFIG ",\n"
    "else the built-in defaults), check that the storage folder is writable or can be created,\n"
    "and print a summary. Exit 2 with the reason (file:line) when it is invalid.\n"
    "With a series (a folder of DICOM files, or the UID of a stored series): which route(s) it\n"
    "would take and why - for each route every criterion it sets, matched or not, in file order\n"
    "(the first match wins unless that route says continue = yes) - and its quiet period.\n";

/* 0 if `dir` is a writable folder or could be created; else SN_EIO with the reason in msg. */
static int check_storage(const char *dir, char *msg, size_t n, int *exists)
{
    struct stat sb;
    *exists = 0;
    if (!dir[0])
        return sn_errf(msg, n, SN_EIO, "storage is empty");
    if (stat(dir, &sb) == 0) {
        *exists = 1;
        if (!S_ISDIR(sb.st_mode))
            return sn_errf(msg, n, SN_EIO, "storage %s exists but is not a folder", dir);
        if (access(dir, W_OK | X_OK) != 0)
            return sn_errf(msg, n, SN_EIO, "storage %s is not writable by uid %d: %s", dir,
                           (int)geteuid(), strerror(errno));
        return 0;
    }
    if (errno != ENOENT && errno != ENOTDIR)
        return sn_errf(msg, n, SN_EIO, "storage %s: %s", dir, strerror(errno));
    /* Find the nearest existing ancestor: it must let us create the rest. */
    char p[1024];
    sn_strlcpy(p, dir, sizeof p);
    for (;;) {
        char *slash = strrchr(p, '/');
        if (!slash) {
            sn_strlcpy(p, ".", sizeof p);
        } else if (slash == p) {
            p[1] = '\0';
        } else {
            *slash = '\0';
        }
        if (stat(p, &sb) == 0) {
            if (!S_ISDIR(sb.st_mode))
                return sn_errf(msg, n, SN_EIO, "storage %s cannot be created: %s is not a folder",
                               dir, p);
            if (access(p, W_OK | X_OK) != 0)
                return sn_errf(msg, n, SN_EIO,
                               "storage %s cannot be created: %s is not writable by uid %d", dir,
                               p, (int)geteuid());
            return 0;
        }
        if (errno != ENOENT && errno != ENOTDIR)
            return sn_errf(msg, n, SN_EIO, "storage %s: %s: %s", dir, p, strerror(errno));
        if (strcmp(p, "/") == 0 || strcmp(p, ".") == 0)
            return sn_errf(msg, n, SN_EIO, "storage %s: no existing parent folder", dir);
    }
}

/* ---- config check SERIES: which route a series takes, and why ------------------------------- */

/* The attributes routes match on, read from the header of one DICOM file without a DICOM
 * library: Part 10 meta (explicit VR LE), then the data set in explicit or implicit VR little
 * endian up to (0020,000E); sequences (also of undefined length) are skipped. Deflated and big
 * endian data sets are refused. */
typedef struct route_attrs {
    char modality[17], body_part[65], description[129], image_type[129], series_uid[65];
    char calling_ae[SN_AE_MAX + 1];
    int has_calling_ae;
} route_attrs;

typedef struct dcm_rd {
    const unsigned char *p;
    size_t n, pos;
    int explicit_vr;
} dcm_rd;

static int dcm_u16(dcm_rd *r, unsigned *v)
{
    if (r->pos + 2 > r->n) return -1;
    *v = (unsigned)r->p[r->pos] | (unsigned)r->p[r->pos + 1] << 8;
    r->pos += 2;
    return 0;
}

static int dcm_u32(dcm_rd *r, uint32_t *v)
{
    if (r->pos + 4 > r->n) return -1;
    *v = (uint32_t)r->p[r->pos] | (uint32_t)r->p[r->pos + 1] << 8 | (uint32_t)r->p[r->pos + 2] << 16 |
         (uint32_t)r->p[r->pos + 3] << 24;
    r->pos += 4;
    return 0;
}

/* One element header: tag, VR ("" implicit), value length. */
static int dcm_head(dcm_rd *r, unsigned *g, unsigned *e, char vr[3], uint32_t *len)
{
    if (dcm_u16(r, g) || dcm_u16(r, e)) return -1;
    vr[0] = vr[2] = '\0';
    if (*g == 0xFFFE) {  /* item, item / sequence delimiter: no VR */
        return dcm_u32(r, len);
    }
    if (r->explicit_vr) {
        if (r->pos + 2 > r->n) return -1;
        vr[0] = (char)r->p[r->pos], vr[1] = (char)r->p[r->pos + 1];
        r->pos += 2;
        static const char *const long_vr[] = {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"};
        int lng = 0;
        for (size_t i = 0; i < sizeof long_vr / sizeof long_vr[0]; i++)
            lng |= strcmp(vr, long_vr[i]) == 0;
        if (lng) {
            unsigned z;
            return dcm_u16(r, &z) || dcm_u32(r, len);
        }
        unsigned l16;
        if (dcm_u16(r, &l16)) return -1;
        *len = l16;
        return 0;
    }
    return dcm_u32(r, len);
}

static int dcm_skip_items(dcm_rd *r, int depth);

/* Skip the value of an element whose header was just read. */
static int dcm_skip_value(dcm_rd *r, const char *vr, uint32_t len, int depth)
{
    if (len != 0xFFFFFFFFu) {
        if (len > r->n - r->pos) return -1;
        r->pos += len;
        return 0;
    }
    (void)vr;
    return dcm_skip_items(r, depth + 1);
}

/* Undefined-length sequence (or encapsulated pixel data): items until (FFFE,E0DD). */
static int dcm_skip_items(dcm_rd *r, int depth)
{
    if (depth > 16) return -1;
    for (;;) {
        unsigned g, e;
        char vr[3];
        uint32_t len;
        if (dcm_head(r, &g, &e, vr, &len)) return -1;
        if (g == 0xFFFE && e == 0xE0DD) return 0;
        if (g != 0xFFFE || e != 0xE000) return -1;
        if (len != 0xFFFFFFFFu) {
            if (len > r->n - r->pos) return -1;
            r->pos += len;
            continue;
        }
        for (;;) {  /* undefined-length item: elements until (FFFE,E00D) */
            if (dcm_head(r, &g, &e, vr, &len)) return -1;
            if (g == 0xFFFE && e == 0xE00D) break;
            if (dcm_skip_value(r, vr, len, depth)) return -1;
        }
    }
}

static void dcm_copy(char *dst, size_t n, const unsigned char *v, uint32_t len)
{
    size_t k = len < n - 1 ? len : n - 1;
    memcpy(dst, v, k);
    dst[k] = '\0';
    while (k > 0 && (dst[k - 1] == ' ' || dst[k - 1] == '\0')) dst[--k] = '\0';
}

static int dcm_read_attrs(const char *path, route_attrs *a, char *err, size_t errlen)
{
    unsigned char *buf = NULL;
    size_t cap = 1 << 20;
    FILE *f = fopen(path, "rb");
    if (!f) return sn_errf(err, errlen, SN_EIO, "%s: %s", path, strerror(errno));
    if (!(buf = malloc(cap))) {
        fclose(f);
        return sn_errf(err, errlen, SN_ENOMEM, "out of memory");
    }
    size_t n = fread(buf, 1, cap, f);
    fclose(f);
    int rc = SN_OK;
    if (n < 132 || memcmp(buf + 128, "DICM", 4) != 0) {
        rc = sn_errf(err, errlen, SN_EDICOM, "%s is not a DICOM Part 10 file", path);
        goto out;
    }
    dcm_rd r = {buf, n, 132, 1};
    char ts[65] = "";
    for (;;) {  /* meta group: explicit VR LE */
        size_t at = r.pos;
        unsigned g, e;
        char vr[3];
        uint32_t len;
        if (dcm_head(&r, &g, &e, vr, &len) || g != 0x0002) {
            r.pos = at;
            break;
        }
        if (len > r.n - r.pos) {
            rc = sn_errf(err, errlen, SN_EDICOM, "%s: truncated meta header", path);
            goto out;
        }
        if (e == 0x0010) dcm_copy(ts, sizeof ts, r.p + r.pos, len);
        r.pos += len;
    }
    if (strcmp(ts, "1.2.840.10008.1.2.2") == 0 || strcmp(ts, "1.2.840.10008.1.2.1.99") == 0) {
        rc = sn_errf(err, errlen, SN_EUNSUPPORTED, "%s: transfer syntax %s (big endian / deflated) is not "
                     "read here; check the stored series by UID", path, ts);
        goto out;
    }
    r.explicit_vr = strcmp(ts, "1.2.840.10008.1.2") != 0;
    for (;;) {
        unsigned g, e;
        char vr[3];
        uint32_t len;
        if (dcm_head(&r, &g, &e, vr, &len)) break;
        uint32_t tag = (uint32_t)g << 16 | e;
        if (tag > 0x0020000Eu) break;
        if (len != 0xFFFFFFFFu && len <= r.n - r.pos) {
            const unsigned char *v = r.p + r.pos;
            switch (tag) {
            case 0x00080060u: dcm_copy(a->modality, sizeof a->modality, v, len); break;
            case 0x00180015u: dcm_copy(a->body_part, sizeof a->body_part, v, len); break;
            case 0x0008103Eu: dcm_copy(a->description, sizeof a->description, v, len); break;
            case 0x00080008u: dcm_copy(a->image_type, sizeof a->image_type, v, len); break;
            case 0x0020000Eu: dcm_copy(a->series_uid, sizeof a->series_uid, v, len); break;
            default: break;
            }
        }
        if (dcm_skip_value(&r, vr, len, 0)) break;
    }
    if (!a->series_uid[0])
        rc = sn_errf(err, errlen, SN_EDICOM, "%s has no Series Instance UID in its header", path);
out:
    free(buf);
    return rc;
}

/* The first file of `dir` (recursive) that reads as DICOM. */
static int dcm_dir_attrs(const char *dir, route_attrs *a, int depth, char *err, size_t errlen)
{
    DIR *d = opendir(dir);
    if (!d) return sn_errf(err, errlen, SN_EIO, "%s: %s", dir, strerror(errno));
    struct dirent *de;
    int rc = SN_ENOENT;
    while (rc != SN_OK && (de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.') continue;
        char p[4096];
        struct stat sb;
        snprintf(p, sizeof p, "%s/%s", dir, de->d_name);
        if (stat(p, &sb) != 0) continue;
        if (S_ISDIR(sb.st_mode)) {
            if (depth < 8) rc = dcm_dir_attrs(p, a, depth + 1, err, errlen);
            if (rc != SN_OK) rc = SN_ENOENT;
        } else if (S_ISREG(sb.st_mode)) {
            route_attrs t;
            memset(&t, 0, sizeof t);
            if (dcm_read_attrs(p, &t, err, errlen) == SN_OK) {
                *a = t;
                rc = SN_OK;
            }
        }
    }
    closedir(d);
    if (rc != SN_OK && depth == 0)
        return sn_errf(err, errlen, SN_ENOENT, "no readable DICOM file under %s", dir);
    return rc;
}

typedef struct stored_attrs_ctx {
    route_attrs *a;
    int found;
    char first_path[4096];
} stored_attrs_ctx;

static int stored_series_cb(void *vctx, const store_series_row *r)
{
    stored_attrs_ctx *c = vctx;
    route_attrs *a = c->a;
    sn_strlcpy(a->modality, r->modality ? r->modality : "", sizeof a->modality);
    sn_strlcpy(a->body_part, r->body_part ? r->body_part : "", sizeof a->body_part);
    sn_strlcpy(a->description, r->series_description ? r->series_description : "", sizeof a->description);
    sn_strlcpy(a->series_uid, r->series_uid ? r->series_uid : "", sizeof a->series_uid);
    sn_strlcpy(a->calling_ae, r->source_ae ? r->source_ae : "", sizeof a->calling_ae);
    a->has_calling_ae = 1;
    c->found = 1;
    return 1;
}

static int stored_file_cb(void *vctx, const char *sop, const char *cls, const char *path)
{
    (void)sop, (void)cls;
    stored_attrs_ctx *c = vctx;
    sn_strlcpy(c->first_path, path, sizeof c->first_path);
    return 1;
}

/* Attributes of a stored series: the index, plus Image Type from its first file. */
static int stored_attrs(const sn_config *cfg, const char *uid, route_attrs *a, char *err, size_t errlen)
{
    store *st = NULL;
    int rc = store_open(cfg->node.storage, &st, err, errlen);
    if (rc != SN_OK) return rc;
    stored_attrs_ctx c = {.a = a};
    rc = store_series_list(st, uid, stored_series_cb, &c, err, errlen);
    if (rc == SN_OK && !c.found)
        rc = sn_errf(err, errlen, SN_ENOENT, "no series %s in %s", uid, cfg->node.storage);
    if (rc == SN_OK && store_instance_list(st, uid, stored_file_cb, &c, NULL, 0) == SN_OK && c.first_path[0]) {
        route_attrs t;
        char e2[256];
        memset(&t, 0, sizeof t);
        if (dcm_read_attrs(c.first_path, &t, e2, sizeof e2) == SN_OK)
            sn_strlcpy(a->image_type, t.image_type, sizeof a->image_type);
    }
    store_close(st);
    return rc;
}

/* Why `r` does or does not match: one line per criterion the route sets. Returns match. */
static int route_explain(const sn_route *r, const route_attrs *a, cJSON *arr, char *line, size_t n)
{
    sn_series_attrs sa = {a->modality, a->body_part, a->description,
                          a->has_calling_ae ? a->calling_ae : NULL, a->image_type};
    struct { const char *key; const char *value; int set; } crit[5] = {
        {"modality", a->modality, r->modality.n > 0},
        {"body_part", a->body_part, r->body_part.n > 0},
        {"series_description", a->description, r->has_series_description_re},
        {"calling_ae", a->has_calling_ae ? a->calling_ae : "(unknown for a folder)", r->calling_ae.n > 0},
        {"image_type", a->image_type, r->image_type.n > 0},
    };
    size_t len = 0;
    int all = 1;
    line[0] = '\0';
    for (int k = 0; k < 5; k++) {
        if (!crit[k].set) continue;
        /* The route with only this criterion set: the config's own matcher decides. */
        sn_route one = *r;
        one.modality.n = k == 0 ? r->modality.n : 0;
        one.body_part.n = k == 1 ? r->body_part.n : 0;
        one.has_series_description_re = k == 2 ? r->has_series_description_re : 0;
        one.calling_ae.n = k == 3 ? r->calling_ae.n : 0;
        one.image_type.n = k == 4 ? r->image_type.n : 0;
        int ok = sn_route_matches(&one, &sa);
        all &= ok;
        char want[512] = "";
        size_t wl = 0;
        const sn_strlist *l = k == 0 ? &r->modality : k == 1 ? &r->body_part : k == 3 ? &r->calling_ae
                            : k == 4 ? &r->image_type : NULL;
        if (l)
            for (int i = 0; i < l->n && wl < sizeof want; i++)
                wl += (size_t)snprintf(want + wl, sizeof want - wl, "%s%s", i ? ", " : "", l->item[i]);
        else
            snprintf(want, sizeof want, "/%s/", r->series_description_re);
        if (arr) {
            cJSON *o = cJSON_CreateObject();
            cJSON_AddStringToObject(o, "criterion", crit[k].key);
            cJSON_AddStringToObject(o, "wants", want);
            cJSON_AddStringToObject(o, "series", crit[k].value ? crit[k].value : "");
            cJSON_AddBoolToObject(o, "matches", ok);
            cJSON_AddItemToArray(arr, o);
        }
        if (len < n)
            len += (size_t)snprintf(line + len, n - len, "%s%s %s '%s' (wants %s)", len ? "; " : "",
                                    crit[k].key, ok ? "matches" : "DOES NOT match",
                                    crit[k].value && *crit[k].value ? crit[k].value : "",
                                    want);
    }
    if (!len)
        snprintf(line, n, "no match keys: matches every series");
    return all && sn_route_matches(r, &sa);
}

/* `segnode config check SERIES`: print the routing decision; exit 0. */
static int config_explain(const sn_config *cfg, const char *what)
{
    route_attrs a;
    char err[1024] = "";
    struct stat sb;
    int rc;
    memset(&a, 0, sizeof a);
    if (stat(what, &sb) == 0 && S_ISDIR(sb.st_mode))
        rc = dcm_dir_attrs(what, &a, 0, err, sizeof err);
    else
        rc = stored_attrs(cfg, what, &a, err, sizeof err);
    if (rc != SN_OK) {
        fprintf(stderr, "segnode config check: %s\n", err[0] ? err : sn_strerror(rc));
        return CLI_EXIT_FAIL;
    }
    cJSON *root = cli_g.json ? cJSON_CreateObject() : NULL, *routes = NULL;
    if (root) {
        cJSON_AddStringToObject(root, "series", what);
        cJSON_AddStringToObject(root, "series_uid", a.series_uid);
        cJSON *at = cJSON_AddObjectToObject(root, "attributes");
        cJSON_AddStringToObject(at, "modality", a.modality);
        cJSON_AddStringToObject(at, "body_part", a.body_part);
        cJSON_AddStringToObject(at, "series_description", a.description);
        cJSON_AddStringToObject(at, "image_type", a.image_type);
        if (a.has_calling_ae)
            cJSON_AddStringToObject(at, "calling_ae", a.calling_ae);
        else
            cJSON_AddNullToObject(at, "calling_ae");
        routes = cJSON_AddArrayToObject(root, "routes");
    } else {
        printf("series  %s\n        modality '%s', body part '%s', description '%s', image type '%s', "
               "calling AE %s\n", a.series_uid, a.modality, a.body_part, a.description, a.image_type,
               a.has_calling_ae ? a.calling_ae : "unknown (a folder; routes on calling_ae cannot match)");
    }
    int stopped = 0, nmatch = 0, first = -1;
    cJSON *taken = root ? cJSON_CreateArray() : NULL;
    for (int i = 0; i < cfg->nroutes; i++) {
        const sn_route *r = &cfg->routes[i];
        char why[1024];
        cJSON *o = root ? cJSON_CreateObject() : NULL, *crit = o ? cJSON_AddArrayToObject(o, "criteria") : NULL;
        int m = route_explain(r, &a, crit, why, sizeof why);
        const char *verdict;
        if (stopped)
            verdict = m ? "would match, but not reached (an earlier route matched without continue)"
                        : "not reached";
        else if (m) {
            verdict = "TAKEN";
            nmatch++;
            if (first < 0) first = i;
            if (taken) cJSON_AddItemToArray(taken, cJSON_CreateString(r->name));
            if (!r->continue_matching) stopped = 1;
        } else
            verdict = "no match";
        if (o) {
            cJSON_AddStringToObject(o, "route", r->name);
            cJSON_AddBoolToObject(o, "matches", m);
            cJSON_AddBoolToObject(o, "taken", !strcmp(verdict, "TAKEN"));
            cJSON_AddStringToObject(o, "verdict", verdict);
            cJSON_AddStringToObject(o, "method", sn_method_name(r->method));
            cJSON_AddBoolToObject(o, "continue", r->continue_matching);
            cJSON_AddItemToArray(routes, o);
        } else {
            printf("route   %-16s %s: %s%s\n", r->name, verdict, why,
                   !strcmp(verdict, "TAKEN") && r->continue_matching ? " (continue = yes: later routes are tried)" : "");
        }
    }
    int quiet = first >= 0 && cfg->routes[first].stable_after >= 0 ? cfg->routes[first].stable_after
                                                                  : cfg->node.stable_after;
    if (root) {
        cJSON_AddItemToObject(root, "taken", taken);
        cJSON_AddBoolToObject(root, "unrouted", nmatch == 0);
        cJSON_AddNumberToObject(root, "stable_after_s", quiet);
        return cli_json_out(root);
    }
    if (nmatch == 0)
        printf("result  no route matches: the series would be stored and marked unrouted (no job)\n");
    else
        printf("result  %d job(s); complete after %d s without new instances\n", nmatch, quiet);
    return CLI_EXIT_OK;
}
#ifdef SEGNODE_HAVE_WORKER
/* The files jobs will read: the label code table (pipeline_labels_default_path for this config:
 * its path into table_path, its number of labels into *ntable, -1 if it cannot be loaded), every
 * route's labels in it, and the bundle of every net/both route (its folder into models[i]).
 * One message per problem into errors[0..max); returns how many. */
static int check_job_files(const sn_config *cfg, char *table_path, size_t tn, int *ntable,
                           char models[][1024], char (*errors)[2048], int max)
{
    int n = 0;
    char e[512] = "";
    pipeline_labels *table = NULL;
    pipeline_labels_default_path(cfg->path, table_path, tn);
    if (pipeline_labels_load(table_path, &table, e, sizeof e) != SN_OK) {
        if (n < max)
            snprintf(errors[n++], sizeof errors[0], "label table %s: %s", table_path, e);
    } else {
        *ntable = (int)pipeline_labels_count(table);
    }
    for (int i = 0; i < cfg->nroutes; i++) {
        const sn_route *r = &cfg->routes[i];
        models[i][0] = '\0';
        for (int k = 0; table && k < r->labels.n; k++)
            if (!pipeline_labels_by_name(table, r->labels.item[k]) && n < max)
                snprintf(errors[n++], sizeof errors[0], "[route %s] label %s is not in the label table %s",
                         r->name, r->labels.item[k], table_path);
        if ((r->method != SN_METHOD_NET && r->method != SN_METHOD_BOTH) || !r->model[0])
            continue;
        char json[1100];
        struct stat sb;
        pipeline_method_model_path(cfg, r->model, models[i], sizeof models[0]);
        snprintf(json, sizeof json, "%s/model.json", models[i]);
        if (stat(json, &sb) != 0 && n < max)
            snprintf(errors[n++], sizeof errors[0], "[route %s] model = %s: no model bundle at %s (%s)",
                     r->name, r->model, models[i], strerror(errno));
    }
    pipeline_labels_free(table);
    return n;
}
#endif

int cli_cmd_config(int argc, char **argv)
{
    char *pos[argc > 0 ? argc : 1];
    int npos, rc = parse_args(argc, argv, CONFIG_HELP, pos, &npos);
    if (rc)
        return rc == ARGS_HELP ? 0 : rc;
    if (npos < 1 || strcmp(pos[0], "check") != 0 || npos > 3) {
        fprintf(stderr, "segnode config: expected 'check [FILE] [SERIES_DIR|SERIES_UID]'\n%s", CONFIG_HELP);
        return CLI_EXIT_USAGE;
    }
    /* A regular file is the config; a folder or a UID is the series to explain. */
    const char *file_arg = NULL, *series_arg = NULL;
    for (int i = 1; i < npos; i++) {
        struct stat sb;
        int is_file = stat(pos[i], &sb) == 0 && !S_ISDIR(sb.st_mode);
        int is_series = !is_file && ((stat(pos[i], &sb) == 0 && S_ISDIR(sb.st_mode)) || sn_uid_valid(pos[i]));
        if (is_series && !series_arg)
            series_arg = pos[i];
        else if (!is_series && !file_arg && i == 1)
            file_arg = pos[i];
        else {
            fprintf(stderr, "segnode config check: unexpected argument %s\n%s", pos[i], CONFIG_HELP);
            return CLI_EXIT_USAGE;
        }
    }
    const char *path = cli_config_source(file_arg ? file_arg : cli_g.config_path);
    sn_config *cfg = NULL;
    char err[1024] = "";
    int s = path ? sn_config_load(path, &cfg, err, sizeof err)
                 : sn_config_defaults(&cfg, err, sizeof err);
    const char *shown = path ? path : "(built-in defaults)";
    if (s != 0) {
        if (cli_g.json) {
            cJSON *o = cJSON_CreateObject();
            cJSON_AddBoolToObject(o, "ok", 0);
            cJSON_AddStringToObject(o, "config", shown);
            cJSON_AddStringToObject(o, "error", err[0] ? err : sn_strerror(s));
            cli_json_out(o);
        }
        fprintf(stderr, "segnode config check: %s: %s\n", shown, err[0] ? err : sn_strerror(s));
        return CLI_EXIT_USAGE;
    }
    if (series_arg) {
        int r = config_explain(cfg, series_arg);
        sn_config_unref(cfg);
        return r;
    }

    /* Problems that make the node unable to run are errors; the rest are warnings. */
    char errors[16][2048];
    int nerr = 0;
    char warns[8][512];
    int nwarn = 0;
    int exists = 0;
    if (check_storage(cfg->node.storage, errors[nerr], sizeof errors[0], &exists) != 0)
        nerr++;
    if (geteuid() != 0) {
        if (cfg->node.port > 0 && cfg->node.port < 1024)
            snprintf(warns[nwarn++], sizeof warns[0],
                     "port %d is below 1024: binding it needs root or CAP_NET_BIND_SERVICE",
                     cfg->node.port);
        if (cfg->node.http_port > 0 && cfg->node.http_port < 1024)
            snprintf(warns[nwarn++], sizeof warns[0],
                     "http_port %d is below 1024: binding it needs root or CAP_NET_BIND_SERVICE",
                     cfg->node.http_port);
    }
    if (cfg->node.http_port > 0 && cfg->node.http_port == cfg->node.port)
        snprintf(errors[nerr++], sizeof errors[0], "http_port and port are both %d",
                 cfg->node.port);
    if (cfg->nroutes == 0)
        snprintf(warns[nwarn++], sizeof warns[0],
                 "no [route] sections: every series will be stored but left unrouted");
    if (cfg->npeers == 0 && !cfg->node.accept_unknown)
        snprintf(warns[nwarn++], sizeof warns[0],
                 "no [peer] sections and accept_unknown is off: every association will be refused");
    /* The device GPU jobs get on this host: not an error when there is none (they run on the
     * CPU), but an admin who named a GPU should hear that it is not there. */
    char device[32];
    status_device(cfg, device, sizeof device);
#ifdef SEGNODE_HAVE_WORKER
    const char *why = "";
    const int ndev = worker_cuda_devices(&why);
    if (strncmp(cfg->node.device, "cuda:", 5) == 0 && atoi(cfg->node.device + 5) >= ndev)
        snprintf(warns[nwarn++], sizeof warns[0],
                 "device %s: %d CUDA device(s) found%s%s; GPU jobs will fail over to the CPU", cfg->node.device,
                 ndev, ndev ? "" : ": ", ndev ? "" : why);
#endif
    /* Loading accepts such a route (the file stays valid), but each of its jobs fails. Last
     * of the warnings, so a long list of such routes cannot crowd the others out. */
    for (int i = 0; i < cfg->nroutes; i++) {
        const sn_route *r = &cfg->routes[i];
        if ((r->method == SN_METHOD_ATLAS || r->method == SN_METHOD_BOTH) && r->atlases.n == 0 &&
            nwarn < (int)(sizeof warns / sizeof warns[0]))
            snprintf(warns[nwarn++], sizeof warns[0],
                     "[route %s] method %s without atlases: every job of this route will fail", r->name,
                     sn_method_name(r->method));
    }
    char table_path[4096] = "";
    int ntable = -1;
    char (*models)[1024] = calloc((size_t)cfg->nroutes + 1, sizeof *models);
    if (!models) {
        sn_config_unref(cfg);
        fprintf(stderr, "segnode config check: out of memory\n");
        return CLI_EXIT_FAIL;
    }
#ifdef SEGNODE_HAVE_WORKER
    /* What jobs will read, so that a missing file fails here and not in the first job. */
    nerr += check_job_files(cfg, table_path, sizeof table_path, &ntable, models, errors + nerr,
                            (int)(sizeof errors / sizeof errors[0]) - nerr);
#endif

    if (cli_g.json) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddBoolToObject(o, "ok", nerr == 0);
        cJSON_AddStringToObject(o, "config", shown);
        cJSON *node = cJSON_AddObjectToObject(o, "node");
        cJSON_AddStringToObject(node, "ae_title", cfg->node.ae_title);
        cJSON_AddStringToObject(node, "bind", cfg->node.bind);
        cJSON_AddNumberToObject(node, "port", cfg->node.port);
        cJSON_AddStringToObject(node, "storage", cfg->node.storage);
        cJSON_AddBoolToObject(node, "storage_exists", exists);
        cJSON_AddStringToObject(node, "http_bind", cfg->node.http_bind);
        cJSON_AddNumberToObject(node, "http_port", cfg->node.http_port);
        cJSON_AddStringToObject(node, "device", cfg->node.device);
        cJSON_AddStringToObject(node, "device_resolved", device);
        cJSON_AddNumberToObject(node, "max_associations", cfg->node.max_associations);
        cJSON *pa = cJSON_AddArrayToObject(o, "peers");
        for (int i = 0; i < cfg->npeers; i++)
            cJSON_AddItemToArray(pa, cJSON_CreateString(cfg->peers[i].name));
        cJSON *ra = cJSON_AddArrayToObject(o, "routes");
        for (int i = 0; i < cfg->nroutes; i++)
            cJSON_AddItemToArray(ra, cJSON_CreateString(cfg->routes[i].name));
        if (table_path[0])
            cJSON_AddStringToObject(o, "label_table", table_path);
        cJSON *ma = cJSON_AddObjectToObject(o, "route_models");
        for (int i = 0; i < cfg->nroutes; i++)
            if (models[i][0])
                cJSON_AddStringToObject(ma, cfg->routes[i].name, models[i]);
        cJSON *ea = cJSON_AddArrayToObject(o, "errors");
        for (int i = 0; i < nerr; i++)
            cJSON_AddItemToArray(ea, cJSON_CreateString(errors[i]));
        cJSON *wa = cJSON_AddArrayToObject(o, "warnings");
        for (int i = 0; i < nwarn; i++)
            cJSON_AddItemToArray(wa, cJSON_CreateString(warns[i]));
        cli_json_out(o);
    } else {
        printf("config  %s: %s\n", shown, nerr ? "INVALID" : "OK");
        printf("node    %s on %s:%d, storage %s%s, device %s%s%s%s\n", cfg->node.ae_title,
               cfg->node.bind[0] ? cfg->node.bind : "0.0.0.0", cfg->node.port, cfg->node.storage,
               exists ? "" : " (will be created)", cfg->node.device,
               strcmp(device, cfg->node.device) ? " (here: " : "", strcmp(device, cfg->node.device) ? device : "",
               strcmp(device, cfg->node.device) ? ")" : "");
        if (cfg->node.http_port)
            printf("http    %s:%d (/metrics, /status)\n",
                   cfg->node.http_bind[0] ? cfg->node.http_bind : "127.0.0.1", cfg->node.http_port);
        else
            printf("http    off\n");
        printf("peers   %d", cfg->npeers);
        for (int i = 0; i < cfg->npeers; i++)
            printf("%s %s (%s at %s:%d)", i ? "," : ":", cfg->peers[i].name,
                   cfg->peers[i].ae_title, cfg->peers[i].host, cfg->peers[i].port);
        printf("\nroutes  %d", cfg->nroutes);
        for (int i = 0; i < cfg->nroutes; i++) {
            const sn_route *r = &cfg->routes[i];
            printf("%s %s (%s", i ? "," : ":", r->name, sn_method_name(r->method));
            if (r->send_to.n) {
                printf(" -> ");
                for (int k = 0; k < r->send_to.n; k++)
                    printf("%s%s", k ? "+" : "", r->send_to.item[k]);
            }
            if (models[i][0])
                printf(", model %s", models[i]);
            printf(")");
        }
        printf("\n");
        if (table_path[0])
            printf("labels  %s%s", table_path, ntable >= 0 ? "" : " (unreadable)\n");
        if (ntable >= 0)
            printf(": %d labels\n", ntable);
        for (int i = 0; i < nwarn; i++)
            printf("warning: %s\n", warns[i]);
        for (int i = 0; i < nerr; i++)
            fprintf(stderr, "segnode config check: %s\n", errors[i]);
    }
    free(models);
    sn_config_unref(cfg);
    return nerr ? CLI_EXIT_USAGE : CLI_EXIT_OK;
}
