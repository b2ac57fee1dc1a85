/* common/metrics.c — see metrics.h. */
#include "common/metrics.h"

#include <stdatomic.h>

static _Atomic int64_t g_metrics[SN_M__COUNT];
static _Atomic int64_t g_rejects[SN_REJECT__COUNT];

static const struct {
    const char *name, *help, *type;
} g_info[SN_M__COUNT] = {
    [SN_M_ASSOC_ACCEPTED] = {"segnode_associations_accepted_total", "DICOM associations accepted", "counter"},
    [SN_M_ASSOC_ACTIVE] = {"segnode_associations_active", "DICOM associations open now", "gauge"},
    [SN_M_ASSOC_ABORTED] = {"segnode_associations_aborted_total", "Associations ended by abort or network error", "counter"},
    [SN_M_INSTANCES_RECEIVED] = {"segnode_instances_received_total", "Instances stored durably and acknowledged", "counter"},
    [SN_M_INSTANCES_REPLACED] = {"segnode_instances_replaced_total", "Instances received again with a known SOP Instance UID", "counter"},
    [SN_M_BYTES_RECEIVED] = {"segnode_bytes_received_total", "Bytes of acknowledged instance files", "counter"},
    [SN_M_STORE_FAILED] = {"segnode_store_failures_total", "C-STORE requests answered with a failure status", "counter"},
    [SN_M_ECHO] = {"segnode_echo_total", "C-ECHO requests answered", "counter"},
    [SN_M_FIND] = {"segnode_find_total", "C-FIND requests answered", "counter"},
    [SN_M_SCU_SENT] = {"segnode_scu_sent_total", "Instances sent by the SCU and acknowledged by the peer", "counter"},
    [SN_M_SCU_FAILED] = {"segnode_scu_failed_total", "Instances the SCU failed to send", "counter"},
    [SN_M_RETENTION_SERIES] = {"segnode_retention_series_deleted_total", "Series deleted by retention_days", "counter"},
    [SN_M_RETENTION_INSTANCES] = {"segnode_retention_instances_deleted_total", "Instances deleted by retention_days", "counter"},
    [SN_M_RETENTION_BYTES] = {"segnode_retention_bytes_deleted_total", "Bytes of instance files deleted by retention_days", "counter"},
};

static const char *g_reject_names[SN_REJECT__COUNT] = {
    [SN_REJECT_UNKNOWN_CALLING_AE] = "unknown_calling_ae",
    [SN_REJECT_CALLED_AE] = "called_ae",
    [SN_REJECT_NOT_PERMITTED] = "not_permitted",
    [SN_REJECT_TOO_MANY] = "too_many_associations",
    [SN_REJECT_DISK_FULL] = "disk_watermark",
    [SN_REJECT_NO_CONTEXT] = "no_presentation_context",
    [SN_REJECT_PROTOCOL] = "protocol",
    [SN_REJECT_SHUTDOWN] = "shutdown",
    [SN_REJECT_TLS] = "tls",
    [SN_REJECT_PEER_HOST] = "peer_host",
};

void sn_metric_add(sn_metric m, int64_t delta)
{
    if ((unsigned)m < SN_M__COUNT)
        atomic_fetch_add(&g_metrics[m], delta);
}
int64_t sn_metric_get(sn_metric m) { return (unsigned)m < SN_M__COUNT ? atomic_load(&g_metrics[m]) : 0; }
void sn_metric_reject(sn_reject r)
{
    if ((unsigned)r < SN_REJECT__COUNT)
        atomic_fetch_add(&g_rejects[r], 1);
}
int64_t sn_metric_rejects(sn_reject r) { return (unsigned)r < SN_REJECT__COUNT ? atomic_load(&g_rejects[r]) : 0; }
const char *sn_metric_name(sn_metric m) { return (unsigned)m < SN_M__COUNT ? g_info[m].name : "?"; }
const char *sn_metric_help(sn_metric m) { return (unsigned)m < SN_M__COUNT ? g_info[m].help : "?"; }
const char *sn_metric_type(sn_metric m) { return (unsigned)m < SN_M__COUNT ? g_info[m].type : "untyped"; }
const char *sn_reject_name(sn_reject r) { return (unsigned)r < SN_REJECT__COUNT ? g_reject_names[r] : "?"; }
