/* tools/segnode/http.h — the daemon's HTTP status server (libmicrohttpd, one internal polling
 * thread, a bounded number of connections). GET /metrics: Prometheus text exposition 0.0.4;
 * GET /status: JSON. Other paths 404, other methods 405. A database error answers 503 with a
 * message, never takes the node down. Read-only: no endpoint changes state. */
#ifndef SEGNODE_TOOLS_HTTP_H
#define SEGNODE_TOOLS_HTTP_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include <cjson/cJSON.h>

#include "common/config.h"
#include "store/store.h"

typedef struct http_server http_server;

/* Live figures only the daemon knows, filled by the daemon's callback for each request. */
typedef struct http_live {
    int active_associations;   /* associations open now (scp_server_active); -1 = unknown, then
                                  the SN_M_ASSOC_ACTIVE gauge of common/metrics.h is used */
    int64_t started_ms;        /* wall-clock start of the daemon (sn_now_ms), 0 = unknown */
    int64_t config_loaded_ms;  /* when the config in force was loaded, 0 = unknown */
    int64_t config_reloads;    /* successful SIGHUP reloads since start */
    int64_t config_reload_failures; /* refused reloads (bad file kept the old one) */
    int stopping;              /* 1 while draining for shutdown */
    sn_config *config;         /* NEW reference to the config in force (sn_config_ref), or NULL
                                  to use the one given to http_server_open; the server unrefs it */
} http_live;

/* Called on the HTTP thread for each request: fill `out` (pre-set to "unknown": -1 / 0 / NULL).
 * Must be thread-safe and quick. */
typedef void (*http_live_fn)(void *ctx, http_live *out);

/* Start serving on cfg->node.http_bind : cfg->node.http_port (IPv4 or IPv6 literal; "" means
 * 127.0.0.1). `cfg` is referenced (sn_config_ref) for the server's life; `st` is borrowed and
 * must outlive the server; `live` may be NULL. If http_port is 0 the HTTP server is off: returns
 * 0 with *out = NULL (http_server_close accepts NULL).
 * Errors: SN_EINVAL (bad bind address), SN_EBUSY (port in use), SN_ENET (other start failure);
 * err says which address failed. */
int http_server_open(const sn_config *cfg, store *st, http_live_fn live, void *ctx,
                     http_server **out, char *err, size_t errlen);

/* host (an IPv4 or IPv6 literal) and port as a socket address; -1 if host is neither. */
int http_sockaddr(const char *host, int port, struct sockaddr_storage *ss, socklen_t *len);

/* Stop the listener, finish or close open connections, join its thread, free. Accepts NULL. */
void http_server_close(http_server *srv);

/* Port actually bound (useful when tests ask for an ephemeral one); 0 for NULL. */
int http_server_port(const http_server *srv);

/* The bodies, exposed for tests and for `segnode status` without a daemon. Each returns a
 * malloc'd NUL-terminated string (caller frees) or NULL with err filled (SN_EDB etc. in *status).
 * `live` may be NULL. */
/* Add "counts", "series_by_state", "jobs_by_state" and "outbox_by_state" objects of `c` to
 * `root` (the shape /status and `segnode status --json` share). */
void http_json_counts(cJSON *root, const store_counts *c);

char *http_render_metrics(const sn_config *cfg, store *st, const http_live *live, int *status,
                          char *err, size_t errlen);
char *http_render_status(const sn_config *cfg, store *st, const http_live *live, int *status,
                         char *err, size_t errlen);

#endif
