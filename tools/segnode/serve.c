/* tools/segnode/serve.c — `segnode serve`: the daemon. Opens the store, starts the SCP and the
 * HTTP status server, the outbox sender (outbox.c, delivers results) and the job worker
 * (worker.c, runs the jobs; [node] workers = 0 leaves them to another runner), then the main thread
 * waits for signals and runs the stable-series sweeper every sweep_interval_ms. SIGHUP reloads
 * the config (a bad file keeps the old one and says why); SIGTERM/SIGINT stop accepting, drain
 * open associations, finish the sends in progress, and exit 0.
 * Signals: the handler only writes the signal number to a pipe (self-pipe), and the main thread
 * acts on it. Threads we start block the signals; a library thread started before us (OpenBLAS
 * starts its pool when it is loaded) may still catch one, which is why a handler is needed and a
 * mask alone is not: a second SIGTERM during the drain must not kill the node. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "common/config.h"
#include "common/log.h"
#include "common/metrics.h"
#include "common/status.h"
#include "common/util.h"
#include "scp/scp.h"
#include "store/store.h"
#include "tools/segnode/cli.h"
#include "tools/segnode/http.h"
#include "tools/segnode/outbox.h"
#ifdef SEGNODE_HAVE_WORKER
#include "tools/segnode/worker.h"
#endif

#define SERVE_LOG "serve"
#define SERVE_DRAIN_MS 15000   /* how long SIGTERM waits for open associations */

/* The config in force: swapped on SIGHUP, referenced by each association and request. */
typedef struct serve_state {
    pthread_mutex_t mu;
    sn_config *cfg;
    int64_t started_ms, loaded_ms;
    int64_t reloads, reload_failures;
    int stopping;
    scp_server *scp;
    int64_t retention_ms;              /* last retention pass (main loop only) */
    /* serve --storage / --port / --http-port: they override the file at start and at every
     * reload (NULL / -1: not given) */
    const char *ovr_storage;
    int ovr_port, ovr_http_port;
} serve_state;

/* The command line's [node] overrides onto a configuration just loaded from the file. */
static void serve_apply_overrides(const serve_state *s, sn_config *cfg)
{
    if (s->ovr_storage)
        sn_strlcpy(cfg->node.storage, s->ovr_storage, sizeof cfg->node.storage);
    if (s->ovr_port > 0)
        cfg->node.port = s->ovr_port;
    if (s->ovr_http_port >= 0)
        cfg->node.http_port = s->ovr_http_port;
}

static int g_signal_pipe[2] = {-1, -1};

/* systemd's notification protocol (sd_notify(3)) without libsystemd: one datagram of
 * "KEY=value" lines to the AF_UNIX socket named by $NOTIFY_SOCKET (a path, or '@name' in the
 * abstract namespace). With Type=notify (etc/segnode.service.in) `systemctl start` returns once
 * the node listens, and `systemctl status` shows STATUS=. A no-op when not run by systemd. */
static void serve_notify(const char *fmt, ...)
{
    const char *path = getenv("NOTIFY_SOCKET");
    if (!path || (path[0] != '/' && path[0] != '@') || strlen(path) >= sizeof(((struct sockaddr_un *)0)->sun_path))
        return;
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof msg)
        return;
    struct sockaddr_un sa;
    memset(&sa, 0, sizeof sa);
    sa.sun_family = AF_UNIX;
    size_t len = strlen(path);
    memcpy(sa.sun_path, path, len);
    if (sa.sun_path[0] == '@')
        sa.sun_path[0] = '\0';
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return;
    if (sendto(fd, msg, (size_t)n, MSG_NOSIGNAL, (struct sockaddr *)&sa,
               (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len)) < 0)
        SN_LOG_WARN(SERVE_LOG, "cannot notify systemd at %s: %s", path, strerror(errno));
    close(fd);
}

static void serve_on_signal(int sig)
{
    int saved = errno;
    unsigned char b = (unsigned char)sig;
    if (write(g_signal_pipe[1], &b, 1) < 0) {
        /* pipe full: signals are already pending there */
    }
    errno = saved;
}

/* Install the handlers (once per process); returns the pipe's read end, or -1. */
static int serve_signals_install(void)
{
    if (g_signal_pipe[0] < 0) {
        if (pipe(g_signal_pipe) != 0)
            return -1;
        for (int i = 0; i < 2; i++) {
            fcntl(g_signal_pipe[i], F_SETFL, fcntl(g_signal_pipe[i], F_GETFL) | O_NONBLOCK);
            fcntl(g_signal_pipe[i], F_SETFD, FD_CLOEXEC);
        }
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = serve_on_signal;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGHUP, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    return g_signal_pipe[0];
}

static sn_config *serve_config_get(void *ctx)
{
    serve_state *s = ctx;
    pthread_mutex_lock(&s->mu);
    sn_config *cfg = sn_config_ref(s->cfg);
    pthread_mutex_unlock(&s->mu);
    return cfg;
}

static void serve_live(void *ctx, http_live *out)
{
    serve_state *s = ctx;
    pthread_mutex_lock(&s->mu);
    out->active_associations = s->scp ? scp_server_active(s->scp) : -1;
    out->started_ms = s->started_ms;
    out->config_loaded_ms = s->loaded_ms;
    out->config_reloads = s->reloads;
    out->config_reload_failures = s->reload_failures;
    out->stopping = s->stopping;
    out->config = sn_config_ref(s->cfg);
    pthread_mutex_unlock(&s->mu);
}

/* Keys that only take effect at start: say so instead of pretending they changed. */
static void serve_warn_restart_keys(const sn_config *old, const sn_config *neu)
{
    if (old->node.port != neu->node.port || strcmp(old->node.bind, neu->node.bind) != 0)
        SN_LOG_WARN(SERVE_LOG, "reload: bind/port changed; takes effect after a restart");
    if (strcmp(old->node.storage, neu->node.storage) != 0)
        SN_LOG_WARN(SERVE_LOG, "reload: storage changed; takes effect after a restart");
    if (old->node.http_port != neu->node.http_port || strcmp(old->node.http_bind, neu->node.http_bind) != 0)
        SN_LOG_WARN(SERVE_LOG, "reload: http_bind/http_port changed; takes effect after a restart");
    if (neu->node.max_associations > old->node.max_associations)
        SN_LOG_WARN(SERVE_LOG, "reload: max_associations above %d takes effect after a restart",
                    old->node.max_associations);
    /* The listener's network and PDU size are set up once; each send reads them afresh. */
    if (old->node.max_pdu != neu->node.max_pdu)
        SN_LOG_WARN(SERVE_LOG, "reload: max_pdu changed; incoming associations keep %u until a restart "
                    "(sends use the new value)", (unsigned)old->node.max_pdu);
    if (old->node.acse_timeout != neu->node.acse_timeout)
        SN_LOG_WARN(SERVE_LOG, "reload: acse_timeout changed; incoming associations keep the old value "
                    "until a restart (sends use the new one)");
    if (old->node.workers != neu->node.workers)
        SN_LOG_WARN(SERVE_LOG, "reload: workers changed; the job worker keeps its threads until a restart");
    if (old->node.outbox_workers != neu->node.outbox_workers)
        SN_LOG_WARN(SERVE_LOG, "reload: outbox_workers changed; takes effect after a restart");
    if (old->node.tls_port != neu->node.tls_port || old->node.tls_profile != neu->node.tls_profile ||
        old->node.tls_require_peer_certificate != neu->node.tls_require_peer_certificate ||
        strcmp(old->node.tls_certificate, neu->node.tls_certificate) != 0 ||
        strcmp(old->node.tls_private_key, neu->node.tls_private_key) != 0 ||
        strcmp(old->node.tls_trusted_certificates, neu->node.tls_trusted_certificates) != 0)
        SN_LOG_WARN(SERVE_LOG, "reload: TLS settings changed; the TLS listener keeps the old ones until "
                    "a restart (sends use the new ones)");
}

static void serve_reload(serve_state *s, store *st)
{
    sn_config *old = serve_config_get(s);
    if (!old->path[0]) {
        SN_LOG_WARN(SERVE_LOG, "SIGHUP: running on the embedded defaults, nothing to reload");
        sn_config_unref(old);
        return;
    }
    sn_config *neu = NULL;
    char err[1024] = "";
    int rc = sn_config_load(old->path, &neu, err, sizeof err);
    pthread_mutex_lock(&s->mu);
    if (rc != SN_OK) {
        s->reload_failures++;
        pthread_mutex_unlock(&s->mu);
        SN_LOG_ERROR(SERVE_LOG, "SIGHUP: %s; keeping the configuration in force", err);
        sn_config_unref(old);
        return;
    }
    /* the command line still holds: without this, a reload would move the job worker's atlas
     * library and models to the file's storage and warn of changes nobody made */
    serve_apply_overrides(s, neu);
    serve_warn_restart_keys(old, neu);
    sn_config *prev = s->cfg;
    s->cfg = neu;
    s->reloads++;
    s->loaded_ms = sn_now_ms();
    pthread_mutex_unlock(&s->mu);
    if (!cli_g.verbose)
        sn_log_set_level((sn_log_level)neu->node.log_level);
    if (old->node.fsync != neu->node.fsync) {
        store_set_fsync(st, neu->node.fsync); /* safe at run time: applies to later commits */
        if (neu->node.fsync)
            SN_LOG_INFO(SERVE_LOG, "reload: fsync = yes for instances received from now on");
        else
            SN_LOG_WARN(SERVE_LOG, "reload: fsync = no for instances received from now on: an "
                        "acknowledged instance may be lost on power failure");
    }
    SN_LOG_INFO(SERVE_LOG, "SIGHUP: reloaded %s (%d peers, %d routes)", neu->path, neu->npeers, neu->nroutes);
    sn_config_unref(prev);
    sn_config_unref(old);
}

/* [node] retention_days: at start and once a minute. Passes of SERVE_RETENTION_BATCH series
 * (one write transaction each, so ingest waits at most one pass), more while a pass was full,
 * for at most SERVE_RETENTION_SLICE_MS: a backlog (retention switched on for an old store)
 * clears over a few minutes without stalling the node. */
#define SERVE_RETENTION_EVERY_MS 60000
#define SERVE_RETENTION_BATCH 20
#define SERVE_RETENTION_SLICE_MS 2000

static void serve_retention(serve_state *s, const sn_config *cfg, int64_t now, store *st)
{
    if (cfg->node.retention_days <= 0 ||
        (s->retention_ms && now - s->retention_ms < SERVE_RETENTION_EVERY_MS))
        return;
    s->retention_ms = now;
    int64_t before = now - (int64_t)cfg->node.retention_days * 86400000;
    for (;;) {
        store_retention_result r;
        char err[512] = "";
        if (store_retention(st, before, SERVE_RETENTION_BATCH, &r, err, sizeof err) != SN_OK) {
            SN_LOG_ERROR(SERVE_LOG, "retention: %s", err);
            return;
        }
        if (r.series) {
            sn_metric_add(SN_M_RETENTION_SERIES, r.series);
            sn_metric_add(SN_M_RETENTION_INSTANCES, r.instances);
            sn_metric_add(SN_M_RETENTION_BYTES, r.bytes);
            SN_LOG_INFO(SERVE_LOG, "retention: deleted %lld series (%lld instances, %lld bytes) "
                        "last received over %d day(s) ago", (long long)r.series,
                        (long long)r.instances, (long long)r.bytes, cfg->node.retention_days);
        }
        if (r.series < SERVE_RETENTION_BATCH || sn_now_ms() - now > SERVE_RETENTION_SLICE_MS)
            return;
    }
}

static void serve_sweep(serve_state *s, store *st)
{
    sn_config *cfg = serve_config_get(s);
    int n = 0;
    char err[512] = "";
    int64_t now = sn_now_ms();
    if (store_sweep(st, cfg, now, &n, err, sizeof err) != SN_OK)
        SN_LOG_ERROR(SERVE_LOG, "sweeper: %s", err);
    else if (n > 0)
        SN_LOG_DEBUG(SERVE_LOG, "sweeper: %d series complete", n);
    serve_retention(s, cfg, now, st);
    sn_config_unref(cfg);
}

#ifdef SEGNODE_HAVE_WORKER
/* A job's SEG is queued: let the senders look now rather than at their next poll. */
static void serve_job_finished(void *ctx, int64_t job_id)
{
    (void)job_id;
    outbox_wake(ctx);
}
#endif

static void serve_usage(FILE *f)
{
    fprintf(f,
            "usage: segnode serve [-c FILE] [--storage DIR] [--port N] [--http-port N]\n"
            "Run the node: DICOM SCP (C-ECHO, C-STORE, C-FIND), the stable-series sweeper and the\n"
            "HTTP /metrics and /status server. The options override the config file's [node] keys,\n"
            "at start and at every reload (SIGHUP).\n"
            "Signals: SIGHUP reloads the config; SIGTERM or SIGINT drain associations and exit.\n");
}

int segnode_serve(int argc, char **argv)
{
    const char *storage = NULL;
    int port = -1, http_port = -1;
    for (int i = 1; i < argc; i++) {
        int g = cli_take_global(argc, argv, &i);
        if (g < 0)
            return CLI_EXIT_USAGE;
        if (g > 0)
            continue;
        if (cli_is_help(argv[i])) {
            serve_usage(stdout);
            return CLI_EXIT_OK;
        } else if (strcmp(argv[i], "--storage") == 0 && i + 1 < argc) {
            storage = argv[++i];
        } else if (strcmp(argv[i], "--port") == 0 && i + 1 < argc) {
            port = atoi(argv[++i]);
        } else if (strcmp(argv[i], "--http-port") == 0 && i + 1 < argc) {
            http_port = atoi(argv[++i]);
        } else {
            fprintf(stderr, "segnode serve: unknown argument '%s'\n", argv[i]);
            serve_usage(stderr);
            return CLI_EXIT_USAGE;
        }
    }

    serve_state s;
    memset(&s, 0, sizeof s);
    pthread_mutex_init(&s.mu, NULL);
    if (cli_load_config(cli_g.config_path, &s.cfg) != SN_OK)
        return CLI_EXIT_USAGE;
    s.ovr_storage = storage, s.ovr_port = port, s.ovr_http_port = http_port;
    serve_apply_overrides(&s, s.cfg);
    sn_log_set_level(cli_g.verbose ? SN_LOG_LEVEL_DEBUG : (sn_log_level)s.cfg->node.log_level);
    s.started_ms = s.loaded_ms = sn_now_ms();

    /* Our threads inherit a mask that blocks these; the main thread unblocks them once every
     * thread is started, and the handlers feed the self-pipe it polls. */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGHUP);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    int sigfd = serve_signals_install();
    if (sigfd < 0) {
        fprintf(stderr, "segnode serve: signal pipe: %s\n", strerror(errno));
        sn_config_unref(s.cfg);
        return CLI_EXIT_FAIL;
    }
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    scp_global_init();

    int exit_code = CLI_EXIT_FAIL;
    store *st = NULL;
    http_server *http = NULL;
    outbox *ob = NULL;
#ifdef SEGNODE_HAVE_WORKER
    worker *wk = NULL;
#endif
    char err[1024] = "";
    if (cli_open_store(s.cfg, &st) != SN_OK)
        goto out;
    {
        /* One daemon per store: a second would recover the first one's running jobs and
         * sending SEGs as if it had died. */
        int rc = store_claim(st, NULL, err, sizeof err);
        if (rc != SN_OK) {
            fprintf(stderr, "segnode serve: %s\n", err);
            SN_LOG_ERROR(SERVE_LOG, "%s", err);
            exit_code = rc == SN_EBUSY ? CLI_EXIT_USAGE : CLI_EXIT_FAIL;
            goto out;
        }
    }
    store_set_fsync(st, s.cfg->node.fsync);
    if (!s.cfg->node.fsync)
        SN_LOG_WARN(SERVE_LOG, "[node] fsync = no: an acknowledged instance may be lost on power failure");
    int rc = scp_server_open(s.cfg, st, serve_config_get, &s, &s.scp, err, sizeof err);
    if (rc != SN_OK) {
        fprintf(stderr, "segnode serve: %s\n", err);
        SN_LOG_ERROR(SERVE_LOG, "%s", err);
        exit_code = rc == SN_EBUSY || rc == SN_ECONFIG ? CLI_EXIT_USAGE : CLI_EXIT_FAIL;
        goto out;
    }
    rc = http_server_open(s.cfg, st, serve_live, &s, &http, err, sizeof err);
    if (rc != SN_OK) {
        fprintf(stderr, "segnode serve: HTTP: %s\n", err);
        SN_LOG_ERROR(SERVE_LOG, "HTTP: %s", err);
        exit_code = rc == SN_EBUSY || rc == SN_EINVAL ? CLI_EXIT_USAGE : CLI_EXIT_FAIL;
        goto out;
    }
    rc = outbox_start(st, serve_config_get, &s, &ob, err, sizeof err);
    if (rc != SN_OK) {
        fprintf(stderr, "segnode serve: outbox: %s\n", err);
        SN_LOG_ERROR(SERVE_LOG, "outbox: %s", err);
        goto out;
    }
#ifdef SEGNODE_HAVE_WORKER
    /* [node] workers = 0: jobs stay pending for another runner. */
    if (s.cfg->node.workers > 0) {
        worker_opts wo;
        worker_opts_default(&wo);
        wo.on_finished = serve_job_finished;
        wo.on_finished_ctx = ob;
        if ((rc = worker_start(st, serve_config_get, &s, &wo, &wk, err, sizeof err)) != SN_OK) {
            fprintf(stderr, "segnode serve: job worker: %s\n", err);
            SN_LOG_ERROR(SERVE_LOG, "job worker: %s", err);
            goto out;
        }
    }
#endif
    SN_LOG_INFO(SERVE_LOG, "segnode %s serving AE '%s' on %s:%d, storage %s, HTTP %s%s%d, config %s",
                SEGNODE_VERSION, s.cfg->node.ae_title, s.cfg->node.bind, s.cfg->node.port, s.cfg->node.storage,
                http ? s.cfg->node.http_bind : "off", http ? ":" : "", http ? http_server_port(http) : 0,
                s.cfg->path[0] ? s.cfg->path : "(embedded defaults)");

    serve_notify("READY=1\nSTATUS=serving AE %s on %s:%d\nMAINPID=%ld", s.cfg->node.ae_title,
                 s.cfg->node.bind[0] ? s.cfg->node.bind : "0.0.0.0", s.cfg->node.port, (long)getpid());
    pthread_sigmask(SIG_UNBLOCK, &sigs, NULL);
    /* Series that went quiet while the node was down complete now. */
    serve_sweep(&s, st);
    for (int stop = 0; !stop;) {
        sn_config *cfg = serve_config_get(&s);
        int interval = cfg->node.sweep_interval_ms > 0 ? cfg->node.sweep_interval_ms : 1000;
        sn_config_unref(cfg);
        struct pollfd pfd = {sigfd, POLLIN, 0};
        if (poll(&pfd, 1, interval) > 0) {
            unsigned char sig;
            while (!stop && read(sigfd, &sig, 1) == 1) {
                if (sig == SIGHUP) {
                    serve_notify("RELOADING=1\nSTATUS=reloading the configuration");
                    int64_t last_failures = s.reload_failures;
                    serve_reload(&s, st);
                    serve_notify("READY=1\nSTATUS=serving; last SIGHUP: %s",
                                 s.reload_failures > last_failures ? "bad file, previous configuration kept"
                                                                    : "configuration reloaded");
                } else if (sig == SIGTERM || sig == SIGINT) {
                    int active = scp_server_active(s.scp);
                    SN_LOG_INFO(SERVE_LOG, "%s: stopping; draining %d association(s)",
                                sig == SIGTERM ? "SIGTERM" : "SIGINT", active);
                    serve_notify("STOPPING=1\nSTATUS=stopping: draining %d association(s)", active);
                    stop = 1;
                }
            }
        }
        serve_sweep(&s, st);
    }
    pthread_mutex_lock(&s.mu);
    s.stopping = 1;
    pthread_mutex_unlock(&s.mu);
    scp_server_close(s.scp, SERVE_DRAIN_MS);
    pthread_mutex_lock(&s.mu);
    s.scp = NULL;
    pthread_mutex_unlock(&s.mu);
    serve_sweep(&s, st);
#ifdef SEGNODE_HAVE_WORKER
    worker_stop(wk);
    wk = NULL;
#endif
    outbox_stop(ob);
    ob = NULL;
    SN_LOG_INFO(SERVE_LOG, "stopped");
    exit_code = CLI_EXIT_OK;
out:
#ifdef SEGNODE_HAVE_WORKER
    worker_stop(wk);
#endif
    outbox_stop(ob);
    http_server_close(http);
    if (s.scp)
        scp_server_close(s.scp, 0);
    store_close(st);
    sn_config_unref(s.cfg);
    pthread_mutex_destroy(&s.mu);
    return exit_code;
}
