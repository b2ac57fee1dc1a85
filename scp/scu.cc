/* scp/scu.cc — outbound associations: C-ECHO and C-STORE of files to a configured peer.
 * For each SOP class we propose the file's own transfer syntax and, separately, explicit and
 * implicit little endian, so a peer that refuses a compressed syntax still gets the object
 * (decompressed with DCMTK's codecs). Nagle is off (scp_global_init). Not a retry queue: the
 * outbox (store/) decides when to call again. */
#include "scp/scpInt.h"

#ifdef WITH_OPENSSL
#include "dcmtk/dcmtls/tlslayer.h"
#endif

#include <map>
#include <set>
#include <memory>
#include <vector>

extern "C" {
#include "common/metrics.h"
#include "common/util.h"
}

#define SCU_LOG "scu"

namespace {

/* An open association to a peer; releases (or aborts) and frees on destruction. */
struct scu_assoc {
    T_ASC_Network *net = nullptr;
    T_ASC_Association *assoc = nullptr;
    DcmTLSTransportLayer *tls = nullptr; /* peer tls = yes; freed after the network */
    bool ok = false;                    /* established and not broken */

    ~scu_assoc()
    {
        if (assoc) {
            if (ok) {
                if (ASC_releaseAssociation(assoc).bad())
                    ASC_abortAssociation(assoc);
            }
            ASC_destroyAssociation(&assoc);
        }
        if (net)
            ASC_dropNetwork(&net);
#ifdef WITH_OPENSSL
        delete tls;
#endif
    }
};

struct context_key {
    std::string sop_class, ts;
    bool operator<(const context_key &o) const
    {
        return sop_class != o.sop_class ? sop_class < o.sop_class : ts < o.ts;
    }
};

/* contexts: abstract syntax -> list of transfer syntax lists (one presentation context each). */
int open_assoc(const sn_config *cfg, const sn_peer *peer,
               const std::vector<std::pair<std::string, std::vector<std::string>>> &contexts,
               scu_assoc &a, char *err, size_t errlen)
{
    scp_global_init();
    /* The TCP connect too is bounded by the ACSE timeout: without it a peer that drops packets
     * (powered off, a firewall) held a sender for the system's ~130 s per attempt. DCMTK keeps
     * this in a global; every caller sets the same [node] value. */
    dcmConnectionTimeout.set((Sint32)scp__acse_timeout(cfg));
    OFCondition cond = ASC_initializeNetwork(NET_REQUESTOR, 0, scp__acse_timeout(cfg), &a.net);
    if (cond.bad())
        return scp__cond(cond, "initialising the network", err, errlen);
    if (peer->tls) {
        int rc = scp__tls_new(cfg, false, &a.tls, err, errlen);
        if (rc != SN_OK)
            return rc;
        cond = ASC_setTransportLayer(a.net, (DcmTransportLayer *)a.tls, 0);
        if (cond.bad())
            return scp__cond(cond, "setting the TLS transport layer", err, errlen);
    }
    T_ASC_Parameters *params = nullptr;
    cond = ASC_createAssociationParameters(&params, (long)(cfg->node.max_pdu ? cfg->node.max_pdu : ASC_DEFAULTMAXPDU));
    if (cond.bad())
        return scp__cond(cond, "association parameters", err, errlen);
    ASC_setAPTitles(params, cfg->node.ae_title, peer->ae_title, nullptr);
    char addr[320];
    snprintf(addr, sizeof addr, "%s:%d", peer->host, peer->port);
    ASC_setPresentationAddresses(params, "localhost", addr);
    if (peer->tls) {
        cond = ASC_setTransportLayerType(params, OFTrue);
        if (cond.bad()) {
            ASC_destroyAssociationParameters(&params);
            return scp__cond(cond, "requesting TLS", err, errlen);
        }
    }
    if (contexts.size() > 128) {
        ASC_destroyAssociationParameters(&params);
        return sn_errf(err, errlen, SN_EINVAL, "too many presentation contexts (%zu > 128)", contexts.size());
    }
    T_ASC_PresentationContextID id = 1;
    for (const auto &c : contexts) {
        std::vector<const char *> ts;
        for (const std::string &s : c.second)
            ts.push_back(s.c_str());
        cond = ASC_addPresentationContext(params, id, c.first.c_str(), ts.data(), (int)ts.size());
        if (cond.bad()) {
            ASC_destroyAssociationParameters(&params);
            return scp__cond(cond, "adding a presentation context", err, errlen);
        }
        id += 2;
    }
    cond = ASC_requestAssociation(a.net, params, &a.assoc);
    if (cond.bad()) {
        if (!a.assoc)
            ASC_destroyAssociationParameters(&params);
        if (cond == DUL_ASSOCIATIONREJECTED) {
            T_ASC_RejectParameters rej;
            ASC_getRejectParameters(a.assoc->params, &rej);
            OFString text;
            ASC_printRejectParameters(text, &rej);
            std::string one(text.c_str());   /* DCMTK's text is several lines: one for logs and JSON */
            for (size_t p = 0; (p = one.find('\n', p)) != std::string::npos;)
                one.replace(p, 1, "; ");
            return sn_errf(err, errlen, SN_EREFUSED, "association to %s (%s at %s) rejected: %s",
                           peer->name, peer->ae_title, addr, one.c_str());
        }
        if (scp__is_tls_error(cond))
            return sn_errf(err, errlen, SN_ENET, "TLS handshake with %s (%s at %s) failed (is its certificate "
                           "signed by tls_trusted_certificates? does it trust ours?): %s", peer->name,
                           peer->ae_title, addr, cond.text());
        return sn_errf(err, errlen, SN_ENET, "association to %s (%s at %s) failed: %s", peer->name,
                       peer->ae_title, addr, cond.text());
    }
    if (ASC_countAcceptedPresentationContexts(a.assoc->params) == 0) {
        a.ok = true; /* release politely */
        return sn_errf(err, errlen, SN_EREFUSED, "%s (%s) accepted no presentation context", peer->name,
                       peer->ae_title);
    }
    a.ok = true;
    return SN_OK;
}

bool is_plain(const std::string &ts)
{
    for (int i = 0; i < scp__n_plain_syntaxes; i++)
        if (ts == scp__plain_syntaxes[i])
            return true;
    return false;
}

std::string status_comment(DcmDataset *detail)
{
    OFString c;
    if (detail && detail->findAndGetOFString(DCM_ErrorComment, c).good())
        return scp__trim(c.c_str());
    return std::string();
}

} // namespace

extern "C" int scp_store_status_delivered(unsigned dimse_status)
{
    /* Warning statuses (PS3.7 Annex C, PS3.4 B.2.3) say the object was stored. */
    return dimse_status == STATUS_Success || (dimse_status & 0xF000u) == 0xB000u || dimse_status == 0x0001u ||
           dimse_status == 0x0107u || dimse_status == 0x0116u;
}

extern "C" int scp_scu_echo(const sn_config *cfg, const sn_peer *peer, char *err, size_t errlen)
{
    try {
        scu_assoc a;
        std::vector<std::pair<std::string, std::vector<std::string>>> ctx = {
            {UID_VerificationSOPClass, {UID_LittleEndianExplicitTransferSyntax, UID_LittleEndianImplicitTransferSyntax}}};
        int rc = open_assoc(cfg, peer, ctx, a, err, errlen);
        if (rc != SN_OK)
            return rc;
        DIC_US status = 0;
        DcmDataset *detail = nullptr;
        int timeout = cfg->node.dimse_timeout;
        OFCondition cond = DIMSE_echoUser(a.assoc, a.assoc->nextMsgID++, timeout > 0 ? DIMSE_NONBLOCKING : DIMSE_BLOCKING,
                                          timeout, &status, &detail);
        delete detail;
        if (cond.bad()) {
            a.ok = false;
            ASC_abortAssociation(a.assoc);
            return scp__cond(cond, "C-ECHO", err, errlen);
        }
        if (status != STATUS_Success)
            return sn_errf(err, errlen, SN_EREFUSED, "C-ECHO answered with status 0x%04x", status);
        return SN_OK;
    } catch (const std::exception &e) {
        return sn_errf(err, errlen, SN_EINTERNAL, "C-ECHO: %s", e.what());
    }
}

extern "C" int scp_scu_send(const sn_config *cfg, const sn_peer *peer, const char *const *files, int nfiles,
                            scp_send_status *out, char *err, size_t errlen)
{
    try {
        struct item {
            std::string sop_class, sop_inst, ts;
            int status = SN_OK;
        };
        std::vector<item> items((size_t)nfiles);
        auto fail = [&](int i, int status, unsigned dimse, const std::string &why) {
            items[i].status = status;
            if (out) {
                out[i].status = status;
                out[i].dimse_status = dimse;
                sn_strlcpy(out[i].error, why.c_str(), sizeof out[i].error);
            }
        };
        if (out)
            for (int i = 0; i < nfiles; i++) {
                out[i].path = files[i];
                out[i].status = SN_OK;
                out[i].dimse_status = 0xFFFF;
                out[i].error[0] = '\0';
            }

        /* Pass 1: headers only, to know which contexts to propose. */
        std::map<std::string, std::set<std::string>> by_class;
        for (int i = 0; i < nfiles; i++) {
            DcmFileFormat ff;
            OFCondition cond = ff.loadFile(OFFilename(files[i]), EXS_Unknown, EGL_noChange, 256, ERM_autoDetect);
            if (cond.bad()) {
                fail(i, SN_EIO, 0xFFFF, std::string("cannot read: ") + cond.text());
                continue;
            }
            OFString cls, inst;
            ff.getDataset()->findAndGetOFString(DCM_SOPClassUID, cls);
            ff.getDataset()->findAndGetOFString(DCM_SOPInstanceUID, inst);
            if (cls.empty() || inst.empty()) {
                fail(i, SN_EDICOM, 0xFFFF, "no SOP Class or SOP Instance UID");
                continue;
            }
            items[i].sop_class = cls.c_str();
            items[i].sop_inst = inst.c_str();
            items[i].ts = DcmXfer(ff.getDataset()->getOriginalXfer()).getXferID();
            by_class[items[i].sop_class].insert(items[i].ts);
        }
        std::vector<std::pair<std::string, std::vector<std::string>>> ctx;
        for (const auto &c : by_class) {
            for (const std::string &ts : c.second)
                if (!is_plain(ts))
                    ctx.push_back({c.first, {ts}});
            ctx.push_back({c.first, {UID_LittleEndianExplicitTransferSyntax, UID_LittleEndianImplicitTransferSyntax}});
        }
        int failed = 0;
        for (const item &it : items)
            failed += it.status != SN_OK;
        if (ctx.empty())
            return sn_errf(err, errlen, SN_EIO, "none of the %d file(s) is a readable DICOM object", nfiles);

        scu_assoc a;
        int rc = open_assoc(cfg, peer, ctx, a, err, errlen);
        if (rc != SN_OK) {
            /* Nothing was sent: every file not already failed fails with the association's reason. */
            for (int i = 0; i < nfiles; i++)
                if (items[i].status == SN_OK)
                    fail(i, rc, 0xFFFF, err ? err : "association failed");
            sn_metric_add(SN_M_SCU_FAILED, nfiles);
            return rc;
        }

        int timeout = cfg->node.dimse_timeout;
        T_DIMSE_BlockingMode block = timeout > 0 ? DIMSE_NONBLOCKING : DIMSE_BLOCKING;
        for (int i = 0; i < nfiles; i++) {
            item &it = items[i];
            if (it.status != SN_OK)
                continue;
            if (!a.ok) {
                fail(i, SN_ENET, 0xFFFF, "association broke before this file");
                failed++;
                continue;
            }
            /* Prefer the file's own syntax; else an uncompressed context (decompressing). */
            T_ASC_PresentationContextID pid =
                ASC_findAcceptedPresentationContextID(a.assoc, it.sop_class.c_str(), it.ts.c_str());
            if (pid == 0)
                pid = ASC_findAcceptedPresentationContextID(a.assoc, it.sop_class.c_str());
            if (pid == 0) {
                fail(i, SN_EREFUSED, 0xFFFF, "peer refused SOP class " + it.sop_class);
                failed++;
                continue;
            }
            T_ASC_PresentationContext pc;
            ASC_findAcceptedPresentationContext(a.assoc->params, pid, &pc);
            DcmFileFormat ff;
            OFCondition cond = ff.loadFile(OFFilename(files[i]), EXS_Unknown, EGL_noChange, DCM_MaxReadLength, ERM_autoDetect);
            if (cond.good()) {
                cond = ff.loadAllDataIntoMemory();
            }
            DcmDataset *ds = ff.getDataset();
            E_TransferSyntax want = DcmXfer(pc.acceptedTransferSyntax).getXfer();
            std::string why = "cannot prepare for sending: ";
            if (cond.good() && ds->getOriginalXfer() != want) {
                cond = ds->chooseRepresentation(want, nullptr);
                if (cond.good() && !ds->canWriteXfer(want))
                    cond = makeOFCondition(0, 1, OF_error, "no codec for the accepted transfer syntax");
                if (cond.bad())   /* JPEG 2000: DCMTK 3.6.7 has no codec for it (the pipeline
                                     reads it through OpenJPEG, on the receiving side only) */
                    why = std::string("the peer does not accept ") + DcmXfer(ds->getOriginalXfer()).getXferName() +
                          " and it cannot be decompressed to " + DcmXfer(want).getXferName() + " for sending: ";
            }
            if (cond.bad()) {
                fail(i, SN_EDICOM, 0xFFFF, why + cond.text());
                failed++;
                continue;
            }
            T_DIMSE_C_StoreRQ req;
            memset(&req, 0, sizeof req);
            req.MessageID = a.assoc->nextMsgID++;
            OFStandard::strlcpy(req.AffectedSOPClassUID, it.sop_class.c_str(), sizeof req.AffectedSOPClassUID);
            OFStandard::strlcpy(req.AffectedSOPInstanceUID, it.sop_inst.c_str(), sizeof req.AffectedSOPInstanceUID);
            req.DataSetType = DIMSE_DATASET_PRESENT;
            req.Priority = DIMSE_PRIORITY_MEDIUM;
            T_DIMSE_C_StoreRSP rsp;
            memset(&rsp, 0, sizeof rsp);
            DcmDataset *detail = nullptr;
            cond = DIMSE_storeUser(a.assoc, pid, &req, nullptr, ds, nullptr, nullptr, block, timeout, &rsp, &detail);
            std::string comment = status_comment(detail);
            delete detail;
            if (cond.bad()) {
                fail(i, SN_ENET, 0xFFFF, std::string("C-STORE: ") + cond.text());
                failed++;
                a.ok = false;
                ASC_abortAssociation(a.assoc);
                continue;
            }
            if (scp_store_status_delivered(rsp.DimseStatus)) {
                sn_metric_add(SN_M_SCU_SENT, 1);
                if (out) {
                    out[i].dimse_status = rsp.DimseStatus;
                    sn_strlcpy(out[i].error, comment.c_str(), sizeof out[i].error);
                }
            } else {
                char buf[64];
                snprintf(buf, sizeof buf, "peer answered status 0x%04x", rsp.DimseStatus);
                fail(i, SN_EREFUSED, rsp.DimseStatus, comment.empty() ? buf : std::string(buf) + ": " + comment);
                failed++;
            }
        }
        sn_metric_add(SN_M_SCU_FAILED, failed);
        if (failed)
            return sn_errf(err, errlen, SN_EIO, "%d of %d file(s) not sent to %s", failed, nfiles, peer->name);
        return SN_OK;
    } catch (const std::exception &e) {
        return sn_errf(err, errlen, SN_EINTERNAL, "C-STORE: %s", e.what());
    }
}
