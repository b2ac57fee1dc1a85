/* scp/scpInt.h — private to scp/ C++ files: DCMTK includes, the SOP class and transfer syntax tables
 * the node negotiates, and the OFCondition -> status conversion. C++ only; never included by C. */
#ifndef SEGNODE_SCP_SCPINT_H
#define SEGNODE_SCP_SCPINT_H

#include "dcmtk/config/osconfig.h"
#include "dcmtk/dcmdata/dctk.h"
#include "dcmtk/dcmnet/assoc.h"
#include "dcmtk/dcmnet/dimse.h"
#include "dcmtk/dcmnet/diutil.h"

#include <string>

extern "C" {
#include "common/log.h"
#include "common/status.h"
#include "scp/scp.h"
}

/* Storage SOP classes the SCP accepts (image IODs a scanner routes to us, plus Segmentation for
 * atlas import). Anything else is refused at presentation-context negotiation. */
extern const char *const scp__storage_classes[];
extern const int scp__n_storage_classes;

/* Transfer syntaxes the SCP accepts for storage, in order of preference: lossless compressed
 * first (the sender already holds the data that way), then uncompressed, then lossy. Data is
 * stored as received, never transcoded. */
extern const char *const scp__storage_syntaxes[];
extern const int scp__n_storage_syntaxes;

/* Uncompressed syntaxes, for Verification, C-FIND and as SCU fallbacks. */
extern const char *const scp__plain_syntaxes[];
extern const int scp__n_plain_syntaxes;

/* [node] acse_timeout = 0 means this many seconds on both sides (DCMTK would otherwise take its
 * own default for the listener, 100 s). */
#define SCP_ACSE_TIMEOUT_DEFAULT 30

/* [node] acse_timeout in seconds, 0 replaced by SCP_ACSE_TIMEOUT_DEFAULT. */
inline int scp__acse_timeout(const sn_config *cfg)
{
    return cfg->node.acse_timeout > 0 ? cfg->node.acse_timeout : SCP_ACSE_TIMEOUT_DEFAULT;
}

/* Fill err with "what: condition text" and return a status (SN_ENET unless refined). */
int scp__cond(const OFCondition &cond, const char *what, char *err, size_t errlen);

class DcmTLSTransportLayer;

/* A failed TLS handshake or TLS I/O (dcmtls conditions, or dcmnet's DULC_TLSERROR). */
inline bool scp__is_tls_error(const OFCondition &cond)
{
    return cond.bad() && (cond.module() == 11 /* OFM_dcmtls */ ||
                          (cond.module() == OFM_dcmnet && cond.code() == DULC_TLSERROR));
}

/* A TLS transport layer from [node] tls_* of `cfg`: our certificate and key, the trusted
 * certificates (file or folder), the profile, and peer verification (outbound: always required;
 * inbound: required or checked-if-presented per tls_require_peer_certificate). `acceptor` picks
 * the server side. On success *out is new and owned by the caller (delete it after every network
 * using it is dropped). Errors: SN_ECONFIG (a file OpenSSL will not load, key does not match the
 * certificate), SN_EUNSUPPORTED (DCMTK built without OpenSSL); err says which. */
int scp__tls_new(const sn_config *cfg, bool acceptor, DcmTLSTransportLayer **out, char *err, size_t errlen);

/* The C-STORE SCP's step after the data set is on disk (server.cc): parse the received file
 * `tmp` (meta header + data set in `ts_uid`), check it against the request's Affected SOP Class
 * and Instance UIDs and the UIDs the index needs, read the index metadata and commit it with
 * store_instance_commit. True on success (`series_out`, `size_out` set; the file now belongs to
 * the store); false with the DIMSE failure status and comment (the caller discards `tmp`).
 * Exposed for the fuzz harness tests/fuzz/fuzz_dataset.cc, which feeds it arbitrary files. */
bool scp__check_and_commit(store *st, const char *calling_ae, const char *called_ae,
                           const T_DIMSE_C_StoreRQ &req, const std::string &tmp, const char *ts_uid,
                           Uint16 &fail_status, std::string &fail_comment, std::string &series_out,
                           int64_t &size_out);

/* Trim DICOM padding (trailing spaces) from a fixed char array/OFString value. */
std::string scp__trim(const char *s);

#endif
