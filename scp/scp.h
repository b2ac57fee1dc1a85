/* scp/scp.h — the DICOM edge of the node, as plain C over DCMTK's dcmnet.
 * SCP: our own listener and a bounded pool of joined worker threads (not DcmSCPPool, see
 * ../shared/DCMTK-NOTES.md), association policy (called/calling AE, peer permissions, disk
 * watermark, max associations, check_peer_host), C-ECHO, C-STORE (durable before Success),
 * C-FIND (Study Root); optionally a second, DICOM TLS, listener on [node] tls_port.
 * SCU: C-ECHO and C-STORE to a configured peer, over TLS when the peer says tls = yes.
 * Nagle is disabled on every association.
 * No DCMTK type appears here; the implementation is in scp/ C++ files. */
#ifndef SEGNODE_SCP_SCP_H
#define SEGNODE_SCP_SCP_H

#include <stddef.h>
#include <stdint.h>

#include "common/config.h"
#include "store/store.h"

/* One-time process setup: disables Nagle for DCMTK (TCP_NODELAY), routes DCMTK's own logger
 * to ours at WARN, ignores SIGPIPE. Safe to call more than once. */
void scp_global_init(void);

typedef struct scp_server scp_server;

/* Returns a NEW reference (sn_config_ref) to the configuration currently in force. The server
 * calls it once per association, so a SIGHUP reload applies to the next association. */
typedef sn_config *(*scp_config_fn)(void *ctx);

/* Bind [node] bind:port of `cfg` and start the listener and up to max_associations worker
 * threads; with tls_port > 0 also a TLS listener on bind:tls_port with its own threads (the
 * max_associations limit counts both ports). Listeners and TLS files are fixed at open; a
 * SIGHUP reload does not change them. `st` is borrowed and must outlive the server. Errors:
 * SN_EBUSY (a port in use), SN_ENET, SN_ECONFIG (a TLS key or certificate OpenSSL will not load,
 * or key and certificate do not match; err names the file). */
int scp_server_open(const sn_config *cfg, store *st, scp_config_fn get_config, void *ctx,
                    scp_server **out, char *err, size_t errlen);

/* Stop accepting; refuse new associations; let open ones finish for up to `drain_ms`, then
 * abort what is left; join every thread and free. Accepts NULL. */
void scp_server_close(scp_server *srv, int drain_ms);

/* Associations open now. */
int scp_server_active(const scp_server *srv);

/* ---- SCU ----------------------------------------------------------------------------------- */

/* C-ECHO `peer` as [node] ae_title of `cfg`. 0 on success, else SN_ENET / SN_EREFUSED (err says
 * whether the association was rejected, aborted, or the echo failed; a failed TLS handshake is
 * SN_ENET with "TLS handshake with ..."), SN_ECONFIG when our TLS files will not load. The same
 * holds for scp_scu_send. */
int scp_scu_echo(const sn_config *cfg, const sn_peer *peer, char *err, size_t errlen);

/* Does a C-STORE response status mean the peer has the object? 1 for Success (0000) and the
 * Warning statuses (Bxxx of PS3.4 B.2.3; 0001, 0107 and 0116 of PS3.7 Annex C), else 0: Failure
 * (A7xx, A9xx, Cxxx, other 01xx and 02xx), Cancel, Pending. */
int scp_store_status_delivered(unsigned dimse_status);

/* Per-file outcome of scp_scu_send. */
typedef struct scp_send_status {
    const char *path;
    int status;                /* 0 sent (scp_store_status_delivered), else SN_E* */
    unsigned dimse_status;     /* the peer's DIMSE status (0 = Success), 0xFFFF if none */
    char error[256];           /* reason when status != 0; a Warning's Error Comment, if any */
} scp_send_status;

/* C-STORE `nfiles` DICOM files to `peer` over one association, proposing for each SOP class
 * the file's own transfer syntax plus explicit and implicit little endian. `out` (may be NULL)
 * gets one entry per file. Returns 0 when every file was sent, SN_ENET/SN_EREFUSED when the
 * association failed (err says why), or SN_EIO when some files failed (see `out`). */
int scp_scu_send(const sn_config *cfg, const sn_peer *peer, const char *const *files, int nfiles,
                 scp_send_status *out, char *err, size_t errlen);

#endif
