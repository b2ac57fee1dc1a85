/* common/metrics.h — process-wide counters for /metrics (Prometheus text format).
 * Counters are lock-free atomics any thread may bump. Values that live in the database
 * (series by state, queue depth) are not here: the HTTP handler reads them from store/. */
#ifndef SEGNODE_COMMON_METRICS_H
#define SEGNODE_COMMON_METRICS_H

#include <stdint.h>

typedef enum sn_metric {
    SN_M_ASSOC_ACCEPTED = 0,   /* associations accepted (counter) */
    SN_M_ASSOC_ACTIVE,         /* associations open now (gauge) */
    SN_M_ASSOC_ABORTED,        /* associations that ended in A-ABORT or a network error */
    SN_M_INSTANCES_RECEIVED,   /* instances stored and acknowledged with Success */
    SN_M_INSTANCES_REPLACED,   /* of those, same SOP Instance UID received again */
    SN_M_BYTES_RECEIVED,       /* bytes of those instances' files */
    SN_M_STORE_FAILED,         /* C-STORE answered with a failure status */
    SN_M_ECHO,                 /* C-ECHO requests answered */
    SN_M_FIND,                 /* C-FIND requests answered */
    SN_M_SCU_SENT,             /* instances sent by our SCU and acknowledged by the peer */
    SN_M_SCU_FAILED,           /* instances our SCU failed to send */
    SN_M_RETENTION_SERIES,     /* series deleted by [node] retention_days */
    SN_M_RETENTION_INSTANCES,  /* their instances */
    SN_M_RETENTION_BYTES,      /* their bytes */
    SN_M__COUNT
} sn_metric;

/* Association rejects, by reason (label `reason` in /metrics). */
typedef enum sn_reject {
    SN_REJECT_UNKNOWN_CALLING_AE = 0,
    SN_REJECT_CALLED_AE,
    SN_REJECT_NOT_PERMITTED,     /* peer known but may not do what it asks */
    SN_REJECT_TOO_MANY,          /* max_associations reached */
    SN_REJECT_DISK_FULL,         /* storage below the disk watermark */
    SN_REJECT_NO_CONTEXT,        /* no acceptable presentation context */
    SN_REJECT_PROTOCOL,          /* malformed request */
    SN_REJECT_SHUTDOWN,          /* node is stopping */
    SN_REJECT_TLS,               /* TLS handshake failed (untrusted or missing certificate, ...) */
    SN_REJECT_PEER_HOST,         /* check_peer_host: calling AE connected from another address */
    SN_REJECT__COUNT
} sn_reject;

void sn_metric_add(sn_metric m, int64_t delta);
int64_t sn_metric_get(sn_metric m);
void sn_metric_reject(sn_reject reason);
int64_t sn_metric_rejects(sn_reject reason);

/* Prometheus name / help text / type ("counter"|"gauge") of a metric; label value of a reason. */
const char *sn_metric_name(sn_metric m);
const char *sn_metric_help(sn_metric m);
const char *sn_metric_type(sn_metric m);
const char *sn_reject_name(sn_reject reason);

#endif
