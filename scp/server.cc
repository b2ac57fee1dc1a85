/* scp/server.cc — the SCP: listener, bounded worker pool, association policy, C-ECHO, C-STORE
 * and C-FIND (Study Root). DCMTK's DcmSCPPool is not used (it leaks a thread per association
 * and its listener stalls on idle clients in 3.6.7): one listener thread receives associations
 * and hands them to max_associations worker threads that are joined at close.
 * With [node] tls_port a second dcmnet network (DcmTLSTransportLayer) gets its own threads; both
 * share the policy code and the association count. check_peer_host compares the socket's peer
 * address with the [peer] host.
 * C-STORE streams the dataset into a temp file of the store, checks it, then commits it durably
 * (fsync + index) before answering Success; a failed write (disk full) fails only that instance. */
#include "scp/scpInt.h"

#include "dcmtk/dcmdata/dcostrmf.h"
#include "dcmtk/dcmnet/dulstruc.h"
#include "dcmtk/dcmnet/dcmtrans.h"
#ifdef WITH_OPENSSL
#include "dcmtk/dcmtls/tlslayer.h"
#endif

#include <algorithm>
#include <arpa/inet.h>
#include <atomic>
#include <deque>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <iconv.h>
#include <mutex>
#include <netdb.h>
#include <set>
#include <string.h>
#include <sys/socket.h>
#include <thread>
#include <unistd.h>
#include <vector>

extern "C" {
#include "common/metrics.h"
#include "common/util.h"
}

#define SCP_LOG "scp"
/* Threads beyond max_associations, so an association over the limit is rejected at once. */
#define SCP_SPARE_THREADS 2

struct scp_server {
    T_ASC_Network *net = nullptr;               /* [node] port */
    T_ASC_Network *tls_net = nullptr;           /* [node] tls_port, NULL when off */
    DcmTLSTransportLayer *tls = nullptr;        /* owned; outlives tls_net */
    store *st = nullptr;
    scp_config_fn get_config = nullptr;
    void *ctx = nullptr;
    int pool_size = 0;                          /* max_associations at open */
    int tls_port = 0;
    uint32_t max_pdu = ASC_DEFAULTMAXPDU;

    std::vector<std::thread> workers;          /* max_associations + SCP_SPARE_THREADS per listener */

    std::atomic<bool> stopping{false};          /* no new associations */
    std::atomic<bool> abort_now{false};         /* drain time is over: abort what is open */
    std::atomic<int> active{0};                 /* associations being negotiated or served */
};

/* ---- association bookkeeping ------------------------------------------------------------- */

namespace {

struct assoc_ctx {
    scp_server *srv;
    bool secure = false;              /* came in on the TLS port */
    sn_config *cfg;
    const sn_peer *peer;              /* NULL for an unknown AE admitted by accept_unknown */
    T_ASC_Association *assoc;
    std::string calling_ae, called_ae, peer_host;
    std::set<std::string> series;     /* series touched, for stable_on_release */
    int64_t n_stored = 0, n_failed = 0, bytes = 0;
    int64_t started_ms = 0;
};

void drop_association(T_ASC_Association *&assoc)
{
    if (!assoc)
        return;
    ASC_dropSCPAssociation(assoc);
    ASC_destroyAssociation(&assoc);
    assoc = nullptr;
}

void reject(T_ASC_Association *assoc, T_ASC_RejectParametersResult result,
            T_ASC_RejectParametersSource source, T_ASC_RejectParametersReason reason)
{
    T_ASC_RejectParameters rej = {result, source, reason};
    OFCondition cond = ASC_rejectAssociation(assoc, &rej);
    if (cond.bad())
        SN_LOG_DEBUG(SCP_LOG, "sending A-ASSOCIATE-RJ failed: %s", cond.text());
}

bool proposes(T_ASC_Parameters *params, const char *const *classes, int n)
{
    int count = ASC_countPresentationContexts(params);
    for (int i = 0; i < count; i++) {
        T_ASC_PresentationContext pc;
        if (ASC_getPresentationContext(params, i, &pc).bad())
            continue;
        for (int k = 0; k < n; k++)
            if (strcmp(pc.abstractSyntax, classes[k]) == 0)
                return true;
    }
    return false;
}

/* DcmTransportConnection::getSocket is protected; reach it through a derived class's
 * pointer-to-member (never instantiated). */
struct conn_peek : DcmTransportConnection {
    static DcmNativeSocketType socket_of(DcmTransportConnection *c)
    {
        DcmNativeSocketType (DcmTransportConnection::*get)() = &conn_peek::getSocket;
        return (c->*get)();
    }
};

/* The connection's remote address as text ("" if unknown), read from the socket itself: the
 * presentation address dcmnet reports is whatever the peer wrote in its A-ASSOCIATE-RQ. */
std::string remote_addr(T_ASC_Association *assoc, struct sockaddr_storage *out)
{
    if (out)
        memset(out, 0, sizeof *out);
    if (!assoc || !assoc->DULassociation)
        return std::string();
    PRIVATE_ASSOCIATIONKEY *key = (PRIVATE_ASSOCIATIONKEY *)assoc->DULassociation;
    if (!key->connection)
        return std::string();
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    if (getpeername(conn_peek::socket_of(key->connection), (struct sockaddr *)&ss, &len) != 0)
        return std::string();
    char host[NI_MAXHOST] = "";
    if (getnameinfo((struct sockaddr *)&ss, len, host, sizeof host, nullptr, 0, NI_NUMERICHOST) != 0)
        return std::string();
    if (out)
        *out = ss;
    return host;
}

/* Compare addresses, treating ::ffff:a.b.c.d as a.b.c.d. */
bool same_addr(const struct sockaddr *x, const struct sockaddr *y)
{
    unsigned char a[16], b[16];
    int na = 0, nb = 0;
    const struct sockaddr *s[2] = {x, y};
    unsigned char *d[2] = {a, b};
    int *n[2] = {&na, &nb};
    for (int i = 0; i < 2; i++) {
        if (s[i]->sa_family == AF_INET) {
            memcpy(d[i], &((const struct sockaddr_in *)s[i])->sin_addr, 4);
            *n[i] = 4;
        } else if (s[i]->sa_family == AF_INET6) {
            const struct in6_addr *a6 = &((const struct sockaddr_in6 *)s[i])->sin6_addr;
            if (IN6_IS_ADDR_V4MAPPED(a6)) {
                memcpy(d[i], a6->s6_addr + 12, 4);
                *n[i] = 4;
            } else {
                memcpy(d[i], a6->s6_addr, 16);
                *n[i] = 16;
            }
        }
    }
    return na && na == nb && memcmp(a, b, na) == 0;
}

/* check_peer_host: does `host` (a [peer] host, numeric or a name) resolve to `remote`? Numeric
 * hosts need no lookup; names are resolved per association (a DNS change applies at once). */
bool host_matches(const char *host, const struct sockaddr_storage &remote, std::string &why)
{
    struct addrinfo hints, *res = nullptr;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICHOST;
    int gai = getaddrinfo(host, nullptr, &hints, &res);
    if (gai == EAI_NONAME) {
        hints.ai_flags = 0;
        gai = getaddrinfo(host, nullptr, &hints, &res);
    }
    if (gai != 0) {
        why = std::string("cannot resolve '") + host + "': " + gai_strerror(gai);
        return false;
    }
    bool ok = false;
    for (struct addrinfo *ai = res; ai && !ok; ai = ai->ai_next)
        ok = same_addr(ai->ai_addr, (const struct sockaddr *)&remote);
    freeaddrinfo(res);
    if (!ok)
        why = std::string("'") + host + "' does not resolve to the connection's address";
    return ok;
}

/* Decide on an A-ASSOCIATE-RQ. Returns true when accepted (contexts set), false when rejected
 * (A-ASSOCIATE-RJ already sent). */
bool negotiate(assoc_ctx &a)
{
    T_ASC_Parameters *params = a.assoc->params;
    const sn_config *cfg = a.cfg;
    char calling[64] = "", called[64] = "";
    ASC_getAPTitles(params, calling, sizeof calling, called, sizeof called, nullptr, 0);
    a.calling_ae = scp__trim(calling);
    a.called_ae = scp__trim(called);
    char host[128] = "";
    ASC_getPresentationAddresses(params, host, sizeof host, nullptr, 0);
    a.peer_host = host;

    if (a.called_ae.empty() && a.calling_ae.empty()) {
        /* dcmnet hands over a connection that closed before any A-ASSOCIATE-RQ (port scans,
         * health checks): not worth a warning. */
        SN_LOG_DEBUG(SCP_LOG, "connection from %s closed before an A-ASSOCIATE-RQ", host);
        sn_metric_reject(SN_REJECT_PROTOCOL);
        return false;
    }
    if (a.called_ae != cfg->node.ae_title) {
        SN_LOG_WARN(SCP_LOG, "association from %s (%s) rejected: called AE title '%s' is not ours ('%s')",
                    a.calling_ae.c_str(), host, a.called_ae.c_str(), cfg->node.ae_title);
        sn_metric_reject(SN_REJECT_CALLED_AE);
        reject(a.assoc, ASC_RESULT_REJECTEDPERMANENT, ASC_SOURCE_SERVICEUSER,
               ASC_REASON_SU_CALLEDAETITLENOTRECOGNIZED);
        return false;
    }
    /* A request without a calling AE title or with an empty or foreign application context is
     * malformed (PS3.8 9.3.2; PS3.7 A.2.1 defines one application context). Refuse it here:
     * DCMTK 3.6.7 cannot build an A-ASSOCIATE-AC for it and leaks the half-built PDU (found by
     * tests/fuzz, fuzz_assoc). */
    char app_ctx[128] = "";
    ASC_getApplicationContextName(params, app_ctx, sizeof app_ctx);
    if (a.calling_ae.empty() || scp__trim(app_ctx) != UID_StandardApplicationContext) {
        bool no_ae = a.calling_ae.empty();
        SN_LOG_WARN(SCP_LOG, "association from %s rejected: %s", host,
                    no_ae ? "no calling AE title" : "application context name is not the DICOM one");
        sn_metric_reject(SN_REJECT_PROTOCOL);
        reject(a.assoc, ASC_RESULT_REJECTEDPERMANENT, ASC_SOURCE_SERVICEUSER,
               no_ae ? ASC_REASON_SU_CALLINGAETITLENOTRECOGNIZED : ASC_REASON_SU_APPCONTEXTNAMENOTSUPPORTED);
        return false;
    }
    a.peer = sn_config_peer_by_ae(cfg, a.calling_ae.c_str());
    unsigned allow;
    if (a.peer && cfg->node.check_peer_host) {
        struct sockaddr_storage remote;
        std::string addr = remote_addr(a.assoc, &remote), why = "remote address unknown";
        if (addr.empty() || !host_matches(a.peer->host, remote, why)) {
            SN_LOG_WARN(SCP_LOG, "association rejected: calling AE '%s' ([peer %s], host %s) connected from %s, "
                        "not from its host (check_peer_host = yes): %s", a.calling_ae.c_str(), a.peer->name,
                        a.peer->host, addr.empty() ? "?" : addr.c_str(), why.c_str());
            sn_metric_reject(SN_REJECT_PEER_HOST);
            reject(a.assoc, ASC_RESULT_REJECTEDPERMANENT, ASC_SOURCE_SERVICEUSER,
                   ASC_REASON_SU_CALLINGAETITLENOTRECOGNIZED);
            return false;
        }
    }
    if (a.peer) {
        allow = a.peer->allow;
    } else if (cfg->node.accept_unknown) {
        allow = SN_ALLOW_ECHO | SN_ALLOW_STORE;
    } else {
        SN_LOG_WARN(SCP_LOG, "association from %s rejected: calling AE title '%s' is not a configured peer "
                    "(set [node] accept_unknown = yes to admit any AE)", host, a.calling_ae.c_str());
        sn_metric_reject(SN_REJECT_UNKNOWN_CALLING_AE);
        reject(a.assoc, ASC_RESULT_REJECTEDPERMANENT, ASC_SOURCE_SERVICEUSER,
               ASC_REASON_SU_CALLINGAETITLENOTRECOGNIZED);
        return false;
    }

    bool wants_store = proposes(params, scp__storage_classes, scp__n_storage_classes);
    if (wants_store && (allow & SN_ALLOW_STORE) && cfg->node.disk_min_free_mb > 0) {
        int64_t free_b = sn_disk_free_bytes(store_dir(a.srv->st));
        if (free_b >= 0 && free_b < cfg->node.disk_min_free_mb * 1024 * 1024) {
            SN_LOG_ERROR(SCP_LOG, "association from %s rejected: storage %s has %lld MB free, below the "
                         "watermark disk_min_free_mb = %lld", a.calling_ae.c_str(), store_dir(a.srv->st),
                         (long long)(free_b >> 20), (long long)cfg->node.disk_min_free_mb);
            sn_metric_reject(SN_REJECT_DISK_FULL);
            reject(a.assoc, ASC_RESULT_REJECTEDTRANSIENT, ASC_SOURCE_SERVICEPROVIDER_PRESENTATION_RELATED,
                   ASC_REASON_SP_PRES_LOCALLIMITEXCEEDED);
            return false;
        }
    }

    static const char *echo_class[] = {UID_VerificationSOPClass};
    static const char *find_class[] = {UID_FINDStudyRootQueryRetrieveInformationModel};
    OFCondition cond = EC_Normal;
    if (allow & SN_ALLOW_ECHO)
        cond = ASC_acceptContextsWithPreferredTransferSyntaxes(params, echo_class, 1,
            const_cast<const char **>(scp__plain_syntaxes), scp__n_plain_syntaxes);
    if (cond.good() && (allow & SN_ALLOW_STORE))
        cond = ASC_acceptContextsWithPreferredTransferSyntaxes(params,
            const_cast<const char **>(scp__storage_classes), scp__n_storage_classes,
            const_cast<const char **>(scp__storage_syntaxes), scp__n_storage_syntaxes);
    if (cond.good() && (allow & SN_ALLOW_FIND))
        cond = ASC_acceptContextsWithPreferredTransferSyntaxes(params, find_class, 1,
            const_cast<const char **>(scp__plain_syntaxes), scp__n_plain_syntaxes);
    if (cond.bad()) {
        SN_LOG_WARN(SCP_LOG, "association from %s rejected: negotiation failed: %s", a.calling_ae.c_str(), cond.text());
        sn_metric_reject(SN_REJECT_PROTOCOL);
        reject(a.assoc, ASC_RESULT_REJECTEDPERMANENT, ASC_SOURCE_SERVICEUSER, ASC_REASON_SU_NOREASON);
        return false;
    }
    if (ASC_countAcceptedPresentationContexts(params) == 0) {
        bool denied = (wants_store && !(allow & SN_ALLOW_STORE)) ||
                      (proposes(params, echo_class, 1) && !(allow & SN_ALLOW_ECHO)) ||
                      (proposes(params, find_class, 1) && !(allow & SN_ALLOW_FIND));
        SN_LOG_WARN(SCP_LOG, "association from %s rejected: %s", a.calling_ae.c_str(),
                    denied ? "the peer is not allowed any of the services it proposed (see [peer] allow)"
                           : "no proposed presentation context is supported");
        sn_metric_reject(denied ? SN_REJECT_NOT_PERMITTED : SN_REJECT_NO_CONTEXT);
        reject(a.assoc, ASC_RESULT_REJECTEDPERMANENT, ASC_SOURCE_SERVICEUSER, ASC_REASON_SU_NOREASON);
        return false;
    }
    /* Refused contexts stay in the AC with their reason; say how many, list them at debug. */
    int count = ASC_countPresentationContexts(params), refused = 0;
    for (int i = 0; i < count; i++) {
        T_ASC_PresentationContext pc;
        if (ASC_getPresentationContext(params, i, &pc).good() && pc.resultReason != ASC_P_ACCEPTANCE) {
            refused++;
            SN_LOG_DEBUG(SCP_LOG, "%s: presentation context %d (%s) refused", a.calling_ae.c_str(),
                         pc.presentationContextID, dcmFindNameOfUID(pc.abstractSyntax, pc.abstractSyntax));
        }
    }
    if (refused)
        SN_LOG_INFO(SCP_LOG, "%s: %d of %d presentation contexts refused (SOP class not accepted or not "
                    "permitted; -v lists them)", a.calling_ae.c_str(), refused, count);
    return true;
}

/* ---- C-ECHO ------------------------------------------------------------------------------- */

OFCondition handle_echo(assoc_ctx &a, T_ASC_PresentationContextID pid, T_DIMSE_C_EchoRQ &req)
{
    sn_metric_add(SN_M_ECHO, 1);
    return DIMSE_sendEchoResponse(a.assoc, pid, &req, STATUS_Success, nullptr);
}

/* ---- C-STORE ------------------------------------------------------------------------------ */

struct store_failure {
    Uint16 status;
    std::string comment;
};

std::string get_str(DcmItem *ds, const DcmTagKey &tag)
{
    OFString v;
    if (ds->findAndGetOFStringArray(tag, v).bad())
        return std::string();
    return scp__trim(v.c_str());
}

int get_int(DcmItem *ds, const DcmTagKey &tag)
{
    Sint32 v;
    if (ds->findAndGetSint32(tag, v).good())
        return (int)v;
    std::string s = get_str(ds, tag);
    char *end = nullptr;
    long l = s.empty() ? -1 : strtol(s.c_str(), &end, 10);
    return (end && *end == '\0') ? (int)l : -1;
}

/* ---- character sets: the index and C-FIND hold text in UTF-8 ------------------------------ */

/* A value outside the default repertoire: an 8-bit byte, or an ISO 2022 escape. */
bool wide_text(const std::string &s)
{
    for (unsigned char c : s)
        if (c >= 0x80 || c == 0x1b)
            return true;
    return false;
}

bool utf8_valid(const std::string &s)
{
    const unsigned char *p = (const unsigned char *)s.data(), *e = p + s.size();
    while (p < e) {
        unsigned c = *p;
        int n = c < 0x80 ? 0 : (c & 0xe0) == 0xc0 ? 1 : (c & 0xf0) == 0xe0 ? 2 : (c & 0xf8) == 0xf0 ? 3 : -1;
        if (n < 0 || (n == 1 && c < 0xc2) || e - p <= n)
            return false;
        for (int i = 1; i <= n; i++)
            if ((p[i] & 0xc0) != 0x80)
                return false;
        p += n + 1;
    }
    return true;
}

/* The Specific Character Set (0008,0005) of a data set, as sent ("" when absent). */
std::string charset_of(DcmItem *ds)
{
    OFString v;
    if (ds->findAndGetOFStringArray(DCM_SpecificCharacterSet, v).bad())
        return std::string();
    return scp__trim(v.c_str());
}

/* The character set a data set's 8-bit text is read in: its own, or ISO_IR 100 (Latin-1) when
 * it names none. 8-bit text without a Specific Character Set is not conformant; Latin-1 is what
 * such senders mean in practice, and Orthanc and dcm4chee assume it too. */
std::string source_charset(const std::string &declared)
{
    return declared.empty() || declared == "ISO_IR 6" ? std::string("ISO_IR 100") : declared;
}

/* Japanese text under ISO 2022 code extensions ("\\ISO 2022 IR 87", also with IR 159): DCMTK asks
 * glibc's iconv for each code element alone, which it does not have, so DCMTK's conversion fails.
 * The value as a whole is ISO-2022-JP-2 (the same escape sequences: ESC $ B, ESC $ ( D, ESC ( B,
 * ESC ( J), which glibc converts. s is replaced by its UTF-8 on success. */
bool iso2022jp_to_utf8(const std::string &charset, std::string &s)
{
    bool japanese = false;
    size_t a = 0;
    for (;;) {
        size_t b = charset.find('\\', a);
        std::string v = scp__trim(charset.substr(a, b == std::string::npos ? std::string::npos : b - a).c_str());
        if (v == "ISO 2022 IR 87" || v == "ISO 2022 IR 159")
            japanese = true;
        else if (!v.empty() && v != "ISO 2022 IR 6")
            return false;
        if (b == std::string::npos)
            break;
        a = b + 1;
    }
    if (!japanese)
        return false;
    iconv_t cd = iconv_open("UTF-8", "ISO-2022-JP-2");
    if (cd == (iconv_t)-1)
        return false;
    std::string out(s.size() * 3 + 8, '\0');
    char *in = (char *)s.data(), *o = (char *)out.data();
    size_t inleft = s.size(), outleft = out.size();
    bool ok = iconv(cd, &in, &inleft, &o, &outleft) != (size_t)-1 && iconv(cd, nullptr, nullptr, &o, &outleft) != (size_t)-1;
    iconv_close(cd);
    if (ok) {
        out.resize(out.size() - outleft);
        s = out;
    }
    return ok;
}

/* DIMSE_receiveDataSetInFile stops reading at the first failed write (disk full), leaving the
 * rest of the data set in the connection, so the association could only be aborted. This stream
 * in front of the file accepts every byte: after a failed write it records errno, discards the
 * rest, and the C-STORE is answered 0xA700 on an association that stays usable. */
struct null_consumer : DcmConsumer {
    OFBool good() const override { return OFTrue; }
    OFCondition status() const override { return EC_Normal; }
    OFBool isFlushed() const override { return OFTrue; }
    offile_off_t avail() const override { return 0; }
    offile_off_t write(const void *, offile_off_t n) override { return n; }
    void flush() override {}
};

/* Also starts the disk writes of the file every WRITEBACK_STEP bytes while it is being received
 * (store_tmp_writeback), so that the flush before Success does not begin with the whole
 * instance still in the page cache: on loopback that flush was most of a C-STORE's time. */
class write_tolerant_stream : public DcmOutputStream {
public:
    static const offile_off_t WRITEBACK_STEP = 256 * 1024;
    write_tolerant_stream(DcmOutputStream *inner, int *write_errno, store *st, int wb_fd)
        : DcmOutputStream(&null_), inner_(inner), errno_(write_errno), st_(st), wb_fd_(wb_fd) {}
    OFBool good() const override { return OFTrue; }
    OFCondition status() const override { return EC_Normal; }
    OFBool isFlushed() const override { return *errno_ ? OFTrue : inner_->isFlushed(); }
    offile_off_t avail() const override { return *errno_ ? 0 : inner_->avail(); }
    offile_off_t write(const void *buf, offile_off_t n) override
    {
        if (*errno_ == 0) {
            errno = 0;
            if (inner_->write(buf, n) != n || !inner_->good())
                *errno_ = errno ? errno : -1;
            if ((pending_ += n) >= WRITEBACK_STEP && *errno_ == 0) {
                pending_ = 0;
                store_tmp_writeback(st_, wb_fd_);
            }
        }
        return n;
    }
    void flush() override
    {
        if (*errno_ == 0) {
            errno = 0;
            inner_->flush();
            if (!inner_->good())
                *errno_ = errno ? errno : -1;
        }
    }
    offile_off_t tell() const override { return inner_->tell(); }

private:
    null_consumer null_;
    DcmOutputStream *inner_;
    int *errno_;
    store *st_;
    int wb_fd_;
    offile_off_t pending_ = 0;
};

/* Validate the received file and index it. Returns true (Success; `series` and `size` set) or
 * fills `fail`. */
bool check_and_commit(store *st, const char *calling_ae, const char *called_ae, const T_DIMSE_C_StoreRQ &req,
                      const std::string &tmp, const char *ts_uid, store_failure &fail, std::string &series_out,
                      int64_t &size_out)
{
    DcmFileFormat ff;
    /* Values longer than 4 KiB (pixel data) are not loaded, only skipped: we need the header. */
    OFCondition cond = ff.loadFile(OFFilename(tmp.c_str()), EXS_Unknown, EGL_noChange, 4096, ERM_autoDetect);
    if (cond.bad()) {
        fail = {STATUS_STORE_Error_CannotUnderstand, std::string("cannot parse data set: ") + cond.text()};
        return false;
    }
    DcmDataset *ds = ff.getDataset();
    std::string sop_class = get_str(ds, DCM_SOPClassUID), sop_inst = get_str(ds, DCM_SOPInstanceUID);
    std::string req_class = scp__trim(req.AffectedSOPClassUID), req_inst = scp__trim(req.AffectedSOPInstanceUID);
    if (sop_inst.empty() || sop_class.empty()) {
        fail = {STATUS_STORE_Error_CannotUnderstand,
                sop_inst.empty() ? "missing SOP Instance UID" : "missing SOP Class UID"};
        return false;
    }
    if (sop_class != req_class) {
        fail = {STATUS_STORE_Error_DataSetDoesNotMatchSOPClass,
                "SOP Class UID of data set (" + sop_class + ") differs from request"};
        return false;
    }
    if (sop_inst != req_inst) {
        fail = {STATUS_STORE_Error_DataSetDoesNotMatchSOPClass,
                "SOP Instance UID of data set differs from request"};
        return false;
    }
    std::string study = get_str(ds, DCM_StudyInstanceUID), series = get_str(ds, DCM_SeriesInstanceUID);
    const char *bad = nullptr;
    if (!sn_uid_valid(sop_inst.c_str()))
        bad = "malformed SOP Instance UID";
    else if (!sn_uid_valid(study.c_str()))
        bad = "missing or malformed Study Instance UID";
    else if (!sn_uid_valid(series.c_str()))
        bad = "missing or malformed Series Instance UID";
    if (bad) {
        fail = {STATUS_STORE_Error_CannotUnderstand, bad};
        return false;
    }

    std::string f[20];
    int k = 0;
    store_instance_meta m;
    memset(&m, 0, sizeof m);
    bool wide = false;
    auto fields = [&](bool read) {   /* read the fields (or not) and point m at them */
        k = 0;
        wide = false;
#define SN_FIELD(member, tag) \
    ((read ? (void)(f[k] = get_str(ds, tag)) : (void)0), wide |= wide_text(f[k]), m.member = f[k++].c_str())
        SN_FIELD(patient_id, DCM_PatientID);
        SN_FIELD(patient_name, DCM_PatientName);
        SN_FIELD(patient_birth_date, DCM_PatientBirthDate);
        SN_FIELD(patient_sex, DCM_PatientSex);
        SN_FIELD(study_date, DCM_StudyDate);
        SN_FIELD(study_time, DCM_StudyTime);
        SN_FIELD(study_description, DCM_StudyDescription);
        SN_FIELD(accession_number, DCM_AccessionNumber);
        SN_FIELD(study_id, DCM_StudyID);
        SN_FIELD(referring_physician, DCM_ReferringPhysicianName);
        SN_FIELD(modality, DCM_Modality);
        SN_FIELD(series_description, DCM_SeriesDescription);
        SN_FIELD(body_part, DCM_BodyPartExamined);
        SN_FIELD(frame_of_reference_uid, DCM_FrameOfReferenceUID);
        SN_FIELD(image_type, DCM_ImageType);
#undef SN_FIELD
    };
    fields(true);
    if (wide) {
        /* The index holds UTF-8 (the file keeps its bytes): text in another character set is
         * converted on the loaded header. What cannot be converted (an unknown Defined Term, bytes
         * illegal in the declared set) is indexed with '?' for each byte outside ASCII. */
        std::string cs = charset_of(ds);
        bool failed = false;
        if (cs != "ISO_IR 192") {
            OFCondition c = ds->convertCharacterSet(source_charset(cs).c_str(), "ISO_IR 192", 0, OFFalse);
            failed = c.bad();
            if (!failed)
                fields(true);   /* else the fields as read: a failed conversion may have left some converted */
        }
        for (int i = 0; i < k; i++)
            if (failed ? wide_text(f[i]) && !iso2022jp_to_utf8(cs, f[i]) : !utf8_valid(f[i])) {
                for (char &ch : f[i])
                    if ((unsigned char)ch >= 0x80 || ch == 0x1b)
                        ch = '?';
                SN_LOG_WARN(SCP_LOG, "%s: instance %s: text in Specific Character Set '%s' not converted to UTF-8; "
                            "indexed as '%s' ('?' for each byte outside ASCII; the file keeps its bytes)",
                            calling_ae, sop_inst.c_str(), source_charset(cs).c_str(), f[i].c_str());
            }
        fields(false);   /* f[] may have been reassigned */
    }
    m.study_uid = study.c_str();
    m.series_uid = series.c_str();
    m.sop_class_uid = sop_class.c_str();
    m.sop_instance_uid = sop_inst.c_str();
    m.transfer_syntax_uid = ts_uid;
    m.series_number = get_int(ds, DCM_SeriesNumber);
    m.instance_number = get_int(ds, DCM_InstanceNumber);
    m.calling_ae = calling_ae;
    m.called_ae = called_ae;

    char err[512] = "";
    store_commit_result res;
    int rc = store_instance_commit(st, tmp.c_str(), &m, &res, err, sizeof err);
    if (rc != SN_OK) {
        SN_LOG_ERROR(SCP_LOG, "%s: instance %s of series %s not stored: %s", calling_ae,
                     sop_inst.c_str(), series.c_str(), err);
        fail = {rc == SN_EINVAL ? (Uint16)STATUS_STORE_Error_CannotUnderstand
                                : (Uint16)STATUS_STORE_Refused_OutOfResources,
                std::string("not stored: ") + err};
        return false;
    }
    series_out = series;
    size_out = res.size;
    sn_metric_add(SN_M_INSTANCES_RECEIVED, 1);
    sn_metric_add(SN_M_BYTES_RECEIVED, res.size);
    if (res.replaced) {
        sn_metric_add(SN_M_INSTANCES_REPLACED, 1);
        SN_LOG_INFO(SCP_LOG, "%s: instance %s received again; replaced", calling_ae, sop_inst.c_str());
    }
    return true;
}

} // namespace

/* Declared in scpInt.h (the fuzz harness tests/fuzz/fuzz_dataset.cc calls it directly). */
bool scp__check_and_commit(store *st, const char *calling_ae, const char *called_ae,
                           const T_DIMSE_C_StoreRQ &req, const std::string &tmp, const char *ts_uid,
                           Uint16 &fail_status, std::string &fail_comment, std::string &series_out,
                           int64_t &size_out)
{
    store_failure fail = {0, ""};
    bool ok = check_and_commit(st, calling_ae, called_ae, req, tmp, ts_uid, fail, series_out, size_out);
    fail_status = fail.status;
    fail_comment = fail.comment;
    return ok;
}

namespace {

OFCondition handle_store(assoc_ctx &a, T_ASC_PresentationContextID pid, T_DIMSE_C_StoreRQ &req)
{
    const sn_config *cfg = a.cfg;
    T_DIMSE_BlockingMode block = cfg->node.dimse_timeout > 0 ? DIMSE_NONBLOCKING : DIMSE_BLOCKING;
    int timeout = cfg->node.dimse_timeout;
    T_ASC_PresentationContext pc;
    ASC_findAcceptedPresentationContext(a.assoc->params, pid, &pc);

    store_failure fail = {0, ""};
    char tmp[4096] = "", err[512] = "";
    if (strcmp(pc.abstractSyntax, req.AffectedSOPClassUID) != 0) {
        fail = {STATUS_STORE_Error_DataSetDoesNotMatchSOPClass,
                "SOP Class UID differs from the presentation context's abstract syntax"};
    } else if (cfg->node.disk_min_free_mb > 0 &&
               sn_disk_free_bytes(store_dir(a.srv->st)) < cfg->node.disk_min_free_mb * 1024 * 1024) {
        fail = {STATUS_STORE_Refused_OutOfResources, "storage below the disk watermark"};
        SN_LOG_ERROR(SCP_LOG, "%s: C-STORE refused: storage %s is below disk_min_free_mb = %lld",
                     a.calling_ae.c_str(), store_dir(a.srv->st), (long long)cfg->node.disk_min_free_mb);
    } else if (store_tmp_create(a.srv->st, tmp, sizeof tmp, err, sizeof err) != SN_OK) {
        fail = {STATUS_STORE_Refused_OutOfResources, std::string("cannot create file: ") + err};
        SN_LOG_ERROR(SCP_LOG, "%s: %s", a.calling_ae.c_str(), fail.comment.c_str());
        tmp[0] = '\0';
    }

    OFCondition cond = EC_Normal;
    if (tmp[0]) {
        DcmOutputFileStream *fs = nullptr;
        cond = DIMSE_createFilestream(OFFilename(tmp), &req, a.assoc, pid, OFTrue, &fs);
        if (cond.good()) {
            T_ASC_PresentationContextID data_pid = 0;
            int write_errno = 0;
            int wb_fd = open(tmp, O_RDONLY | O_CLOEXEC); /* for store_tmp_writeback only */
            {
                write_tolerant_stream ts(fs, &write_errno, a.srv->st, wb_fd);
                cond = DIMSE_receiveDataSetInFile(a.assoc, block, timeout, &data_pid, &ts, nullptr, nullptr);
            }
            bool io_ok = write_errno == 0 && fs->good();
            delete fs; /* closes the file */
            if (wb_fd >= 0) {
                if (cond.good() && io_ok)
                    store_tmp_writeback(a.srv->st, wb_fd); /* the tail */
                close(wb_fd);
            }
            if (cond.good() && data_pid != pid)
                fail = {STATUS_STORE_Error_CannotUnderstand, "data set sent on another presentation context"};
            else if (cond.good() && !io_ok)
                fail = {STATUS_STORE_Refused_OutOfResources, std::string("write error while receiving: ") +
                        (write_errno > 0 ? strerror(write_errno) : "disk full?")};
        } else {
            /* Could not open the stream: still consume the data set so the association stays usable. */
            fail = {STATUS_STORE_Refused_OutOfResources, std::string("cannot write file: ") + cond.text()};
            DIC_UL nbytes = 0, npdv = 0;
            cond = DIMSE_ignoreDataSet(a.assoc, block, timeout, &nbytes, &npdv);
        }
        if (cond.bad()) {
            /* Peer aborted or the link broke mid-transfer: nothing was acknowledged, keep nothing. */
            store_tmp_discard(a.srv->st, tmp);
            return cond;
        }
        std::string series;
        int64_t size = 0;
        if (fail.status == 0 &&
            check_and_commit(a.srv->st, a.calling_ae.c_str(), a.called_ae.c_str(), req, tmp,
                             pc.acceptedTransferSyntax, fail, series, size)) {
            a.series.insert(series);
            a.bytes += size;
        }
        if (fail.status != 0) /* the store removes its temp file on failure; this is for ours */
            store_tmp_discard(a.srv->st, tmp);
    } else {
        DIC_UL nbytes = 0, npdv = 0;
        cond = DIMSE_ignoreDataSet(a.assoc, block, timeout, &nbytes, &npdv);
        if (cond.bad())
            return cond;
    }

    T_DIMSE_C_StoreRSP rsp;
    memset(&rsp, 0, sizeof rsp);
    rsp.DimseStatus = fail.status;
    rsp.DataSetType = DIMSE_DATASET_NULL;
    OFStandard::strlcpy(rsp.AffectedSOPClassUID, req.AffectedSOPClassUID, sizeof rsp.AffectedSOPClassUID);
    OFStandard::strlcpy(rsp.AffectedSOPInstanceUID, req.AffectedSOPInstanceUID, sizeof rsp.AffectedSOPInstanceUID);
    rsp.opts = O_STORE_AFFECTEDSOPCLASSUID | O_STORE_AFFECTEDSOPINSTANCEUID;
    DcmDataset detail;
    if (fail.status != 0) {
        a.n_failed++;
        sn_metric_add(SN_M_STORE_FAILED, 1);
        std::string c = fail.comment.substr(0, 64); /* Error Comment is LO */
        detail.putAndInsertString(DCM_ErrorComment, c.c_str());
        SN_LOG_WARN(SCP_LOG, "%s: C-STORE of %s failed with 0x%04x: %s", a.calling_ae.c_str(),
                    req.AffectedSOPInstanceUID, fail.status, fail.comment.c_str());
    } else {
        a.n_stored++;
    }
    return DIMSE_sendStoreResponse(a.assoc, pid, &req, &rsp, fail.status ? &detail : nullptr);
}

/* ---- C-FIND (Study Root; STUDY, SERIES and IMAGE levels) --------------------------------- */

/* A C-FIND lists the matching rows' keys first (8 bytes each), then fetches and builds the
 * answers FIND_BATCH at a time as they are sent, so the node's memory does not grow with the
 * answer (100,000 matching studies: 8 MB, against 230 MB when every answer was built first). */
const size_t FIND_BATCH = 64;
const int FIND_KEYS = 17;              /* the matching keys of store_find_query */
typedef int (*find_fn)(store *, const store_find_query *, store_find_cb, void *, char *, size_t);

struct find_ctx {
    assoc_ctx *a;
    bool ran = false;
    DcmDataset *tmpl = nullptr;        /* the request's keys, copied into each answer */
    std::string k[FIND_KEYS];          /* the matching keys, as q holds them */
    store_find_query q = {};
    find_fn fn = nullptr;              /* the level's query */
    std::vector<int64_t> keys;         /* the matches, in answer order */
    size_t next = 0;                   /* the next key to fetch */
    size_t sent = 0;
    std::deque<DcmDataset *> answers;  /* fetched, not yet sent */
    std::string charset;               /* the request's Specific Character Set, as sent */
    Uint16 error_status = 0;
    std::string error;
    bool optional_unsupported = false; /* answer Pending with FF01, not FF00 */
    ~find_ctx()
    {
        delete tmpl;
        for (DcmDataset *d : answers)
            delete d;
    }
};

void put(DcmDataset *out, const DcmTagKey &tag, const char *value)
{
    if (out->tagExists(tag))
        out->putAndInsertString(tag, value ? value : "");
}

void put_int(DcmDataset *out, const DcmTagKey &tag, int64_t v)
{
    if (out->tagExists(tag) && v >= 0)
        out->putAndInsertString(tag, std::to_string((long long)v).c_str());
}

int find_key_cb(void *ctx, const store_find_row *row)
{
    find_ctx *f = (find_ctx *)ctx;
    /* past the limit the query stops and the request is refused: a runaway query would hold
     * the association (and the peer) for every answer */
    const int limit = f->a->cfg->node.find_max_results;
    if (limit > 0 && f->keys.size() >= (size_t)limit) {
        f->keys.clear();
        f->error_status = STATUS_FIND_Refused_OutOfResources;
        f->error = "more than " + std::to_string(limit) + " matches (find_max_results); narrow the query";
        return 1;
    }
    f->keys.push_back(row->key);
    return 0;
}

/* One answer, from its row as the index holds it when its batch is fetched. */
int find_row_cb(void *ctx, const store_find_row *row)
{
    find_ctx *f = (find_ctx *)ctx;
    DcmDataset *out = new DcmDataset(*f->tmpl);
    put(out, DCM_PatientID, row->patient_id);
    put(out, DCM_PatientName, row->patient_name);
    put(out, DCM_PatientBirthDate, row->patient_birth_date);
    put(out, DCM_PatientSex, row->patient_sex);
    put(out, DCM_StudyInstanceUID, row->study_uid);
    put(out, DCM_StudyDate, row->study_date);
    put(out, DCM_StudyTime, row->study_time);
    put(out, DCM_StudyDescription, row->study_description);
    put(out, DCM_AccessionNumber, row->accession_number);
    put(out, DCM_StudyID, row->study_id);
    put(out, DCM_ReferringPhysicianName, row->referring_physician);
    put(out, DCM_ModalitiesInStudy, row->modalities_in_study);
    put_int(out, DCM_NumberOfStudyRelatedSeries, row->study_series);
    put_int(out, DCM_NumberOfStudyRelatedInstances, row->study_instances);
    if (row->series_uid) {
        put(out, DCM_SeriesInstanceUID, row->series_uid);
        put(out, DCM_Modality, row->modality);
        put(out, DCM_SeriesDescription, row->series_description);
        put(out, DCM_BodyPartExamined, row->body_part);
        put_int(out, DCM_SeriesNumber, row->series_number);
        put_int(out, DCM_NumberOfSeriesRelatedInstances, row->series_instances);
    }
    if (row->sop_instance_uid) {
        put(out, DCM_SOPInstanceUID, row->sop_instance_uid);
        put(out, DCM_SOPClassUID, row->sop_class_uid);
        put_int(out, DCM_InstanceNumber, row->instance_number);
    }
    /* Text outside ASCII (the index holds UTF-8) goes back in the request's character set when
     * it names one that can carry every value of this answer, else in UTF-8 (ISO_IR 192). */
    const char *text[] = {row->patient_id, row->patient_name, row->study_description, row->accession_number,
                          row->study_id, row->referring_physician, row->series_description, row->body_part};
    bool wide = false;
    for (const char *t : text)
        wide |= t && wide_text(t);
    if (wide) {
        const std::string &r = f->charset;
        bool done = false;
        if (!r.empty() && r != "ISO_IR 192" && r != "ISO_IR 6" && r.find('\\') == std::string::npos) {
            DcmDataset *conv = new DcmDataset(*out);
            if (conv->convertCharacterSet("ISO_IR 192", r.c_str(), 0, OFTrue).good()) {
                delete out;
                out = conv;
                done = true;
            } else {
                delete conv;
            }
        }
        if (!done)
            out->putAndInsertString(DCM_SpecificCharacterSet, "ISO_IR 192");
    }
    f->answers.push_back(out);
    return 0;
}

/* How the index serves a C-FIND key at a level: matched (and returned), only returned (a value
 * the SCU gives is not used for matching), or not at all (returned zero-length). */
enum find_key_kind { KEY_UNSUPPORTED, KEY_RETURN_ONLY, KEY_MATCHED };

find_key_kind find_key_support(const DcmTagKey &tag, bool series_level, bool image_level)
{
    static const DcmTagKey matched_image[] = {DCM_SOPInstanceUID, DCM_SOPClassUID, DCM_InstanceNumber};
    if (image_level)
        for (const DcmTagKey &t : matched_image)
            if (tag == t)
                return KEY_MATCHED;
    static const DcmTagKey matched[] = {DCM_PatientID, DCM_PatientName, DCM_StudyInstanceUID, DCM_StudyDate,
                                        DCM_StudyTime, DCM_AccessionNumber, DCM_StudyID, DCM_StudyDescription,
                                        DCM_SeriesInstanceUID, DCM_PatientBirthDate, DCM_PatientSex,
                                        DCM_ReferringPhysicianName};
    static const DcmTagKey matched_series[] = {DCM_Modality, DCM_SeriesNumber};
    static const DcmTagKey returned[] = {DCM_NumberOfStudyRelatedSeries, DCM_NumberOfStudyRelatedInstances};
    static const DcmTagKey returned_series[] = {DCM_SeriesDescription, DCM_BodyPartExamined,
                                                DCM_NumberOfSeriesRelatedInstances};
    /* Specific Character Set and group lengths are not keys. */
    if (tag == DCM_SpecificCharacterSet || tag.getElement() == 0x0000)
        return KEY_MATCHED;
    for (const DcmTagKey &t : matched)
        if (tag == t)
            return KEY_MATCHED;
    for (const DcmTagKey &t : returned)
        if (tag == t)
            return KEY_RETURN_ONLY;
    if (tag == DCM_ModalitiesInStudy)   /* matched at STUDY level; SERIES matches Modality */
        return series_level ? KEY_RETURN_ONLY : KEY_MATCHED;
    if (series_level) {
        for (const DcmTagKey &t : matched_series)
            if (tag == t)
                return KEY_MATCHED;
        for (const DcmTagKey &t : returned_series)
            if (tag == t)
                return KEY_RETURN_ONLY;
    }
    return KEY_UNSUPPORTED;
}

/* A key that asks for no matching: zero-length, or only '*'. */
bool find_key_universal(DcmDataset *mask, const DcmTagKey &tag)
{
    std::string v = get_str(mask, tag);
    return v.find_first_not_of("* ") == std::string::npos;
}

void run_find(find_ctx &f, DcmDataset *mask)
{
    std::string level = get_str(mask, DCM_QueryRetrieveLevel);
    const bool image_level = level == "IMAGE", series_level = level == "SERIES" || image_level;
    /* the matching keys in store_find_query's order, each with the lowest level that takes it
     * (0 STUDY, 1 SERIES, 2 IMAGE); above it a key is not read */
    const int depth = image_level ? 2 : series_level ? 1 : 0, nkeys = FIND_KEYS;
    const struct { DcmTagKey tag; int level; } key[nkeys] = {
        {DCM_PatientID, 0}, {DCM_PatientName, 0}, {DCM_StudyInstanceUID, 0}, {DCM_StudyDate, 0},
        {DCM_AccessionNumber, 0}, {DCM_StudyDescription, 0},
        {series_level ? DCM_Modality : DCM_ModalitiesInStudy, 0}, {DCM_SeriesInstanceUID, 0},
        {DCM_StudyTime, 0}, {DCM_StudyID, 0}, {DCM_SeriesNumber, 1},
        {DCM_SOPInstanceUID, 2}, {DCM_SOPClassUID, 2}, {DCM_InstanceNumber, 2},
        {DCM_PatientBirthDate, 0}, {DCM_PatientSex, 0}, {DCM_ReferringPhysicianName, 0}};
    std::string (&k)[nkeys] = f.k;
    bool wide = false;
    auto keys = [&]() {
        wide = false;
        for (int i = 0; i < nkeys; i++)
            wide |= wide_text(k[i] = key[i].level <= depth ? get_str(mask, key[i].tag) : std::string());
    };
    keys();
    /* The index holds UTF-8: keys in another character set are converted before matching. */
    f.charset = charset_of(mask);
    if (wide && f.charset != "ISO_IR 192") {
        OFCondition c = mask->convertCharacterSet(source_charset(f.charset).c_str(), "ISO_IR 192", 0, OFTrue);
        bool keys_ok = c.good();
        if (keys_ok) {
            keys();
        } else {   /* Japanese under ISO 2022: the matching keys as read (see iso2022jp_to_utf8) */
            keys_ok = true;
            for (std::string &key : k)
                if (wide_text(key) && !iso2022jp_to_utf8(f.charset, key))
                    keys_ok = false;
        }
        if (!keys_ok) {
            f.error_status = STATUS_FIND_Failed_UnableToProcess;
            f.error = "query keys not readable in character set '" + source_charset(f.charset) + "'";
            SN_LOG_WARN(SCP_LOG, "%s: C-FIND refused: %s (%s)", f.a->calling_ae.c_str(), f.error.c_str(), c.text());
            return;
        }
    }
    f.q = {k[0].c_str(),  k[1].c_str(),  k[2].c_str(),  k[3].c_str(),  k[4].c_str(),  k[5].c_str(),
           k[6].c_str(),  k[7].c_str(),  k[8].c_str(),  k[9].c_str(),  k[10].c_str(), k[11].c_str(),
           k[12].c_str(), k[13].c_str(), k[14].c_str(), k[15].c_str(), k[16].c_str(), nullptr, 0};
    /* The template answers with every key the SCU asked for, Specific Character Set aside,
     * all zero-length but the level: find_row_cb fills the keys the index holds, and a key it
     * does not support comes back empty, never with the requester's value (PS3.4 C.4.1.1.3.2).
     * Such a key, or a value given for a key that is returned but not matched, makes every
     * Pending answer FF01 instead of FF00 (PS3.4 C.4.1.1.4). */
    f.tmpl = new DcmDataset(*mask);
    delete f.tmpl->remove(DCM_SpecificCharacterSet);
    for (unsigned long i = 0; i < f.tmpl->card(); i++) {
        DcmElement *e = f.tmpl->getElement(i);
        if (!e || e->getTag() == DCM_QueryRetrieveLevel)
            continue;
        switch (find_key_support(e->getTag(), series_level, image_level)) {
        case KEY_UNSUPPORTED:
            f.optional_unsupported = true;
            break;
        case KEY_RETURN_ONLY:
            if (!find_key_universal(mask, e->getTag()))
                f.optional_unsupported = true;
            break;
        default:
            break;
        }
        e->clear();
    }
    char err[512] = "";
    int rc = SN_OK;
    f.fn = level == "STUDY" ? store_find_studies : level == "SERIES" ? store_find_series
         : image_level ? store_find_instances : nullptr;
    if (f.fn) {
        rc = f.fn(f.a->srv->st, &f.q, find_key_cb, &f, err, sizeof err);
    } else {
        f.error_status = STATUS_FIND_Error_DataSetDoesNotMatchSOPClass;
        f.error = "Query/Retrieve Level '" + level + "' not supported (STUDY, SERIES, IMAGE)";
    }
    if (rc == SN_EINVAL) {   /* a key the matching cannot take (a Series or Instance Number not an integer) */
        f.error_status = STATUS_FIND_Error_DataSetDoesNotMatchSOPClass;
        f.error = err;
        SN_LOG_WARN(SCP_LOG, "%s: C-FIND refused: %s", f.a->calling_ae.c_str(), err);
    } else if (rc != SN_OK) {
        f.error_status = STATUS_FIND_Failed_UnableToProcess;
        f.error = err;
        SN_LOG_ERROR(SCP_LOG, "C-FIND failed: %s", err);
    } else if (f.error_status == STATUS_FIND_Refused_OutOfResources) {
        SN_LOG_WARN(SCP_LOG, "%s: C-FIND refused: %s", f.a->calling_ae.c_str(), f.error.c_str());
    }
}

void find_callback(void *ctx, OFBool cancelled, T_DIMSE_C_FindRQ *, DcmDataset *mask, int,
                   T_DIMSE_C_FindRSP *rsp, DcmDataset **ids, DcmDataset **detail)
{
    find_ctx &f = *(find_ctx *)ctx;
    *ids = nullptr;
    *detail = nullptr;
    if (!f.ran) {
        f.ran = true;
        if (mask)
            run_find(f, mask);
        else {
            f.error_status = STATUS_FIND_Error_DataSetDoesNotMatchSOPClass;
            f.error = "no identifier";
        }
    }
    if (cancelled) {
        rsp->DimseStatus = STATUS_FIND_Cancel_MatchingTerminatedDueToCancelRequest;
        return;
    }
    /* the next batch of matches that are still in the index and still match (a study may be
     * deleted, by retention or an admin, while its answers are sent) */
    while (!f.error_status && f.answers.empty() && f.next < f.keys.size()) {
        char err[512] = "";
        f.q.keys = f.keys.data() + f.next;
        f.q.nkeys = std::min(FIND_BATCH, f.keys.size() - f.next);
        f.next += f.q.nkeys;
        if (f.fn(f.a->srv->st, &f.q, find_row_cb, &f, err, sizeof err) != SN_OK) {
            SN_LOG_ERROR(SCP_LOG, "C-FIND failed after %zu answer(s): %s", f.sent, err);
            f.error_status = STATUS_FIND_Failed_UnableToProcess;
            f.error = err;
        }
    }
    if (f.error_status) {
        rsp->DimseStatus = f.error_status;
        *detail = new DcmDataset;
        (*detail)->putAndInsertString(DCM_ErrorComment, f.error.substr(0, 64).c_str());
        return;
    }
    if (!f.answers.empty()) {
        rsp->DimseStatus = f.optional_unsupported ? STATUS_FIND_Pending_WarningUnsupportedOptionalKeys
                                                  : STATUS_FIND_Pending_MatchesAreContinuing;
        *ids = f.answers.front();       /* DIMSE_findProvider deletes it after sending */
        f.answers.pop_front();
        f.sent++;
    } else {
        rsp->DimseStatus = STATUS_FIND_Success;
    }
}

OFCondition handle_find(assoc_ctx &a, T_ASC_PresentationContextID pid, T_DIMSE_C_FindRQ &req)
{
    sn_metric_add(SN_M_FIND, 1);
    find_ctx f;
    f.a = &a;
    int timeout = a.cfg->node.dimse_timeout;
    OFCondition cond = DIMSE_findProvider(a.assoc, pid, &req, find_callback, &f,
                                          timeout > 0 ? DIMSE_NONBLOCKING : DIMSE_BLOCKING, timeout);
    SN_LOG_INFO(SCP_LOG, "%s: C-FIND answered with %zu match(es)%s%s", a.calling_ae.c_str(), f.sent,
                f.error.empty() ? "" : ", error: ", f.error.c_str());
    return cond;
}

/* ---- one association from A-ASSOCIATE-RQ to release -------------------------------------- */

/* Frees an association however serve_association leaves (an exception from DCMTK or the C++
 * library included — worker_main catches it): the peer is aborted unless the normal path got to
 * the end, the socket closed, the active gauge and the config reference given back. */
struct assoc_guard {
    T_ASC_Association *assoc;
    sn_config *cfg;
    bool active = false, finished = false;
    assoc_guard(T_ASC_Association *as, sn_config *c) : assoc(as), cfg(c) {}
    assoc_guard(const assoc_guard &) = delete;
    assoc_guard &operator=(const assoc_guard &) = delete;
    ~assoc_guard()
    {
        if (!finished)
            ASC_abortAssociation(assoc);
        if (active)
            sn_metric_add(SN_M_ASSOC_ACTIVE, -1);
        drop_association(assoc);
        sn_config_unref(cfg);
    }
};

void serve_association(scp_server *srv, T_ASC_Association *assoc, bool secure)
{
    assoc_ctx a;
    a.srv = srv;
    a.secure = secure;
    a.assoc = assoc;
    a.cfg = srv->get_config(srv->ctx);
    a.peer = nullptr;
    a.started_ms = sn_mono_ms();
    assoc_guard guard(assoc, a.cfg);

    if (srv->stopping.load()) {
        sn_metric_reject(SN_REJECT_SHUTDOWN);
        reject(assoc, ASC_RESULT_REJECTEDTRANSIENT, ASC_SOURCE_SERVICEPROVIDER_PRESENTATION_RELATED,
               ASC_REASON_SP_PRES_TEMPORARYCONGESTION);
    } else if (negotiate(a)) {
        OFCondition cond = ASC_acknowledgeAssociation(assoc);
        if (cond.bad()) {
            SN_LOG_WARN(SCP_LOG, "A-ASSOCIATE-AC to %s failed: %s", a.calling_ae.c_str(), cond.text());
        } else {
            sn_metric_add(SN_M_ASSOC_ACCEPTED, 1);
            sn_metric_add(SN_M_ASSOC_ACTIVE, 1);
            guard.active = true;
            SN_LOG_DEBUG(SCP_LOG, "association from %s (%s) accepted%s", a.calling_ae.c_str(), a.peer_host.c_str(),
                         secure ? " over TLS" : "");
            int idle_s = 0;
            bool released = false, aborted = false;
            for (;;) {
                T_ASC_PresentationContextID pid = 0;
                T_DIMSE_Message msg;
                DcmDataset *status_detail = nullptr;
                /* Poll once a second so shutdown and the idle limit are honoured. */
                cond = DIMSE_receiveCommand(assoc, DIMSE_NONBLOCKING, 1, &pid, &msg, &status_detail);
                delete status_detail;
                if (cond == DIMSE_NODATAAVAILABLE) {
                    idle_s++;
                    int limit = a.cfg->node.dimse_timeout;
                    if (srv->abort_now.load() || (limit > 0 && idle_s >= limit)) {
                        SN_LOG_WARN(SCP_LOG, "aborting association from %s: %s", a.calling_ae.c_str(),
                                    srv->abort_now.load() ? "node is stopping" : "idle timeout");
                        ASC_abortAssociation(assoc);
                        aborted = true;
                        break;
                    }
                    continue;
                }
                idle_s = 0;
                if (cond == DUL_PEERREQUESTEDRELEASE) {
                    ASC_acknowledgeRelease(assoc);
                    released = true;
                    break;
                }
                if (cond == DUL_PEERABORTEDASSOCIATION) {
                    SN_LOG_WARN(SCP_LOG, "association from %s aborted by the peer", a.calling_ae.c_str());
                    aborted = true;
                    break;
                }
                if (cond.bad()) {
                    SN_LOG_WARN(SCP_LOG, "association from %s: %s", a.calling_ae.c_str(), cond.text());
                    ASC_abortAssociation(assoc);
                    aborted = true;
                    break;
                }
                switch (msg.CommandField) {
                case DIMSE_C_ECHO_RQ: cond = handle_echo(a, pid, msg.msg.CEchoRQ); break;
                case DIMSE_C_STORE_RQ: cond = handle_store(a, pid, msg.msg.CStoreRQ); break;
                case DIMSE_C_FIND_RQ: cond = handle_find(a, pid, msg.msg.CFindRQ); break;
                default:
                    cond = makeDcmnetCondition(DIMSEC_BADCOMMANDTYPE, OF_error, "unsupported DIMSE command");
                    break;
                }
                if (cond.bad()) {
                    if (cond == DUL_PEERABORTEDASSOCIATION)
                        SN_LOG_WARN(SCP_LOG, "association from %s aborted by the peer", a.calling_ae.c_str());
                    else {
                        SN_LOG_WARN(SCP_LOG, "association from %s aborted: %s", a.calling_ae.c_str(), cond.text());
                        ASC_abortAssociation(assoc);
                    }
                    aborted = true;
                    break;
                }
            }
            if (aborted)
                sn_metric_add(SN_M_ASSOC_ABORTED, 1);
            if (released && a.peer && a.peer->stable_on_release) {
                for (const std::string &uid : a.series) {
                    char err[512] = "";
                    if (store_series_complete(srv->st, uid.c_str(), a.cfg, err, sizeof err) != SN_OK)
                        SN_LOG_ERROR(SCP_LOG, "series %s: %s", uid.c_str(), err);
                }
            }
            SN_LOG_INFO(SCP_LOG, "association from %s %s: %lld stored (%.1f MB), %lld failed, %zu series, %.2f s",
                        a.calling_ae.c_str(), released ? "released" : "aborted", (long long)a.n_stored,
                        a.bytes / 1048576.0, (long long)a.n_failed, a.series.size(),
                        (sn_mono_ms() - a.started_ms) / 1000.0);
        }
    }
    guard.finished = true;
}

/* Each pool thread receives an association and serves it, then receives the next. The listen
 * socket is non-blocking, so threads that lose the race for a connection return at once; a
 * client that connects and stays silent ties up one thread for acse_timeout, never the others. */
void worker_main(scp_server *srv, T_ASC_Network *net, bool secure)
{
    /* Keep receiving while draining: newcomers then get a transient reject (serve_association)
     * instead of waiting in the TCP backlog until the socket closes. */
    while (!srv->abort_now.load()) {
        T_ASC_Association *assoc = nullptr;
        OFCondition cond = ASC_receiveAssociation(net, &assoc, (long)srv->max_pdu, nullptr, nullptr,
                                                  secure ? OFTrue : OFFalse, DUL_NOBLOCK, 1);
        if (scp__is_tls_error(cond)) {
            /* Untrusted or missing client certificate, wrong protocol, plain DICOM on the TLS
             * port: the handshake failed before any A-ASSOCIATE-RQ. */
            std::string addr = remote_addr(assoc, nullptr); /* dcmnet usually frees it first */
            if (srv->abort_now.load()) { /* unblocked by shutdown_port_sockets */
                drop_association(assoc);
                continue;
            }
            SN_LOG_WARN(SCP_LOG, "TLS connection%s%s refused, handshake failed: %s", addr.empty() ? "" : " from ",
                        addr.c_str(), cond.text());
            sn_metric_reject(SN_REJECT_TLS);
            drop_association(assoc);
            continue;
        }
        if (cond.bad()) {
            /* DUL_NOASSOCIATIONREQUEST: nothing within 1 s; other errors: lost the accept race,
             * or the client went away before its A-ASSOCIATE-RQ. */
            if (cond != DUL_NOASSOCIATIONREQUEST && assoc)
                SN_LOG_DEBUG(SCP_LOG, "receiving an association failed: %s", cond.text());
            drop_association(assoc);
            continue;
        }
        sn_config *cfg = srv->get_config(srv->ctx);
        int limit = cfg->node.max_associations;
        sn_config_unref(cfg);
        if (srv->active.fetch_add(1) >= limit) {
            SN_LOG_WARN(SCP_LOG, "association rejected: %d associations open (max_associations = %d)",
                        limit, limit);
            sn_metric_reject(SN_REJECT_TOO_MANY);
            reject(assoc, ASC_RESULT_REJECTEDTRANSIENT, ASC_SOURCE_SERVICEPROVIDER_PRESENTATION_RELATED,
                   ASC_REASON_SP_PRES_LOCALLIMITEXCEEDED);
            drop_association(assoc);
        } else {
            try {
                serve_association(srv, assoc, secure);
            } catch (const std::exception &e) {
                SN_LOG_ERROR(SCP_LOG, "association failed with an exception: %s", e.what());
            } catch (...) {
                SN_LOG_ERROR(SCP_LOG, "association failed with an unknown exception");
            }
        }
        srv->active.fetch_sub(1);
    }
}

/* Our own listening socket on [node] bind:port (DCMTK 3.6.7 always binds INADDR_ANY). */
int open_listen_socket(const char *bind_addr, int port, char *err, size_t errlen)
{
    struct addrinfo hints, *res = nullptr;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICHOST;
    char portstr[16];
    snprintf(portstr, sizeof portstr, "%d", port);
    int gai = getaddrinfo(bind_addr && *bind_addr ? bind_addr : nullptr, portstr, &hints, &res);
    if (gai != 0)
        return sn_errf(err, errlen, SN_ECONFIG, "bind address '%s': %s", bind_addr, gai_strerror(gai));
    int fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        freeaddrinfo(res);
        return sn_errf(err, errlen, SN_ENET, "socket: %s", strerror(errno));
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, res->ai_addr, res->ai_addrlen) != 0) {
        int e = errno;
        freeaddrinfo(res);
        close(fd);
        return sn_errf(err, errlen, e == EADDRINUSE ? SN_EBUSY : SN_ENET, "cannot listen on %s:%d: %s",
                       bind_addr, port, e == EADDRINUSE ? "port already in use" : strerror(e));
    }
    freeaddrinfo(res);
    /* Non-blocking: pool threads race for each connection; the losers must not block. */
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    if (listen(fd, 64) != 0) {
        int e = errno;
        close(fd);
        return sn_errf(err, errlen, SN_ENET, "listen on %s:%d: %s", bind_addr, port, strerror(e));
    }
    return fd;
}

/* A dcmnet acceptor network listening on our own socket `fd` (consumed). DCMTK opens its own
 * listener on an ephemeral port; ours replaces it (same descriptor number, so dcmnet accepts on
 * our socket and closes it in ASC_dropNetwork). */
int open_network(int fd, int port, int acse_timeout, T_ASC_Network **out, char *err, size_t errlen)
{
    OFCondition cond = ASC_initializeNetwork(NET_ACCEPTOR, 0, acse_timeout, out);
    if (cond.bad()) {
        close(fd);
        return scp__cond(cond, "initialising the network", err, errlen);
    }
    PRIVATE_NETWORKKEY *key = (PRIVATE_NETWORKKEY *)(*out)->network;
    if (dup2(fd, key->networkSpecific.TCP.listenSocket) < 0) {
        int e = errno;
        close(fd);
        ASC_dropNetwork(out);
        return sn_errf(err, errlen, SN_ENET, "dup2 listener: %s", strerror(e));
    }
    close(fd);
    key->networkSpecific.TCP.port = port;
    return SN_OK;
}

/* A TLS handshake runs inside ASC_receiveAssociation with only dcmnet's socket timeout (60 s)
 * to end it, so a client that connects to the TLS port and stays silent would hold shutdown that
 * long. At close, shut down every connected socket on `port` of this process: the blocked read
 * returns and the handshake fails. Called once open associations have been aborted. */
void shutdown_port_sockets(int port)
{
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d)) != nullptr) {
        char *end = nullptr;
        long fd = strtol(e->d_name, &end, 10);
        if (!end || *end || fd < 0 || fd == dirfd(d))
            continue;
        struct sockaddr_storage ss;
        socklen_t len = sizeof ss;
        if (getsockname((int)fd, (struct sockaddr *)&ss, &len) != 0)
            continue;
        int p = ss.ss_family == AF_INET ? ntohs(((struct sockaddr_in *)&ss)->sin_port)
              : ss.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&ss)->sin6_port) : -1;
        len = sizeof ss;
        if (p == port && getpeername((int)fd, (struct sockaddr *)&ss, &len) == 0)
            shutdown((int)fd, SHUT_RDWR);
    }
    closedir(d);
}

void free_server(scp_server *srv)
{
    if (srv->net)
        ASC_dropNetwork(&srv->net);
    if (srv->tls_net)
        ASC_dropNetwork(&srv->tls_net);
#ifdef WITH_OPENSSL
    delete srv->tls;
#endif
    delete srv;
}

} // namespace

extern "C" int scp_server_open(const sn_config *cfg, store *st, scp_config_fn get_config, void *ctx,
                               scp_server **out, char *err, size_t errlen)
{
    *out = nullptr;
    scp_global_init();
    try {
        int fd = open_listen_socket(cfg->node.bind, cfg->node.port, err, errlen);
        if (fd < 0)
            return fd;
        scp_server *srv = new scp_server;
        srv->st = st;
        srv->get_config = get_config;
        srv->ctx = ctx;
        srv->pool_size = cfg->node.max_associations > 0 ? cfg->node.max_associations : 1;
        srv->max_pdu = cfg->node.max_pdu ? cfg->node.max_pdu : ASC_DEFAULTMAXPDU;
        int rc = open_network(fd, cfg->node.port, scp__acse_timeout(cfg), &srv->net, err, errlen);
        srv->tls_port = cfg->node.tls_port;
        if (rc == SN_OK && cfg->node.tls_port > 0) {
            /* TLS and its files are checked before the port is taken, so a bad key is reported
             * as such and not as a failed handshake later. */
            rc = scp__tls_new(cfg, true, &srv->tls, err, errlen);
            int tfd = rc == SN_OK ? open_listen_socket(cfg->node.bind, cfg->node.tls_port, err, errlen) : rc;
            rc = tfd < 0 ? tfd : open_network(tfd, cfg->node.tls_port, scp__acse_timeout(cfg), &srv->tls_net, err, errlen);
            if (rc == SN_OK) {
                OFCondition cond = ASC_setTransportLayer(srv->tls_net, (DcmTransportLayer *)srv->tls, 0);
                if (cond.bad())
                    rc = scp__cond(cond, "setting the TLS transport layer", err, errlen);
            }
        }
        if (rc != SN_OK) {
            free_server(srv);
            return rc;
        }
        for (int i = 0; i < srv->pool_size + SCP_SPARE_THREADS; i++)
            srv->workers.emplace_back(worker_main, srv, srv->net, false);
        if (srv->tls_net) {
            for (int i = 0; i < srv->pool_size + SCP_SPARE_THREADS; i++)
                srv->workers.emplace_back(worker_main, srv, srv->tls_net, true);
            SN_LOG_INFO(SCP_LOG, "DICOM TLS on %s:%d (profile %s, peer certificate %s)", cfg->node.bind,
                        cfg->node.tls_port, sn_tls_profile_name(cfg->node.tls_profile),
                        cfg->node.tls_require_peer_certificate ? "required" : "optional");
        }
        SN_LOG_INFO(SCP_LOG, "listening on %s:%d as AE '%s' (max %d associations)", cfg->node.bind,
                    cfg->node.port, cfg->node.ae_title, srv->pool_size);
        *out = srv;
        return SN_OK;
    } catch (const std::exception &e) {
        return sn_errf(err, errlen, SN_EINTERNAL, "starting the SCP: %s", e.what());
    }
}

extern "C" int scp_server_active(const scp_server *srv)
{
    return srv ? srv->active.load() : 0;
}

extern "C" void scp_server_close(scp_server *srv, int drain_ms)
{
    if (!srv)
        return;
    srv->stopping.store(true);
    int64_t deadline = sn_mono_ms() + (drain_ms > 0 ? drain_ms : 0);
    while (srv->active.load() > 0 && sn_mono_ms() < deadline)
        usleep(50 * 1000);
    if (srv->active.load() > 0)
        SN_LOG_WARN(SCP_LOG, "%d association(s) still open after %d ms; aborting them", srv->active.load(), drain_ms);
    srv->abort_now.store(true);
    if (srv->tls_net) {
        /* let serve loops send their A-ABORTs (they poll once a second), then unblock handshakes */
        int64_t until = sn_mono_ms() + 2000;
        while (srv->active.load() > 0 && sn_mono_ms() < until)
            usleep(20 * 1000);
        shutdown_port_sockets(srv->tls_port);
    }
    for (std::thread &t : srv->workers)
        if (t.joinable())
            t.join();
    free_server(srv);
}
