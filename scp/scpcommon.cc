/* scp/scpcommon.cc — what server and SCU share: negotiation tables, one-time DCMTK setup, and
 * the single place where an OFCondition becomes a segnode status. */
#include "scp/scpInt.h"

#include "dcmtk/dcmdata/dcrledrg.h"
#include "dcmtk/dcmjpeg/djdecode.h"
#include "dcmtk/dcmjpls/djdecode.h"
#include "dcmtk/oflog/oflog.h"
#ifdef WITH_OPENSSL
#include "dcmtk/dcmtls/tlslayer.h"
#endif

#include <memory>
#include <mutex>
#include <sys/stat.h>
#include <signal.h>
#include <stdlib.h>

const char *const scp__storage_classes[] = {
    UID_CTImageStorage,
    UID_EnhancedCTImageStorage,
    UID_LegacyConvertedEnhancedCTImageStorage,
    UID_MRImageStorage,
    UID_EnhancedMRImageStorage,
    UID_EnhancedMRColorImageStorage,
    UID_LegacyConvertedEnhancedMRImageStorage,
    UID_PositronEmissionTomographyImageStorage,
    UID_EnhancedPETImageStorage,
    UID_LegacyConvertedEnhancedPETImageStorage,
    UID_NuclearMedicineImageStorage,
    UID_XRay3DCraniofacialImageStorage,   /* dental / ENT CBCT */
    UID_XRay3DAngiographicImageStorage,   /* C-arm CBCT */
    UID_XRayAngiographicImageStorage,
    UID_XRayRadiofluoroscopicImageStorage,
    UID_ComputedRadiographyImageStorage,
    UID_DigitalXRayImageStorageForPresentation,
    UID_DigitalXRayImageStorageForProcessing,
    UID_UltrasoundImageStorage,
    UID_UltrasoundMultiframeImageStorage,
    UID_RTImageStorage,
    UID_SecondaryCaptureImageStorage,
    UID_MultiframeGrayscaleByteSecondaryCaptureImageStorage,
    UID_MultiframeGrayscaleWordSecondaryCaptureImageStorage,
    UID_SegmentationStorage,
};
const int scp__n_storage_classes = (int)(sizeof scp__storage_classes / sizeof *scp__storage_classes);

const char *const scp__storage_syntaxes[] = {
    UID_JPEG2000LosslessOnlyTransferSyntax,
    UID_JPEGLSLosslessTransferSyntax,
    UID_JPEGProcess14SV1TransferSyntax,
    UID_JPEGProcess14TransferSyntax,
    UID_RLELosslessTransferSyntax,
    UID_DeflatedExplicitVRLittleEndianTransferSyntax,
    UID_LittleEndianExplicitTransferSyntax,
    UID_LittleEndianImplicitTransferSyntax,
    UID_BigEndianExplicitTransferSyntax,
    UID_JPEG2000TransferSyntax,
    UID_JPEGLSLossyTransferSyntax,
    UID_JPEGProcess1TransferSyntax,
    UID_JPEGProcess2_4TransferSyntax,
};
const int scp__n_storage_syntaxes = (int)(sizeof scp__storage_syntaxes / sizeof *scp__storage_syntaxes);

const char *const scp__plain_syntaxes[] = {
    UID_LittleEndianExplicitTransferSyntax,
    UID_LittleEndianImplicitTransferSyntax,
    UID_BigEndianExplicitTransferSyntax,
};
const int scp__n_plain_syntaxes = (int)(sizeof scp__plain_syntaxes / sizeof *scp__plain_syntaxes);

int scp__cond(const OFCondition &cond, const char *what, char *err, size_t errlen)
{
    int status = SN_ENET;
    if (cond == DUL_ASSOCIATIONREJECTED)
        status = SN_EREFUSED;
    else if (cond == DIMSE_NODATAAVAILABLE || cond == DUL_READTIMEOUT)
        status = SN_ETIMEOUT;
    return sn_errf(err, errlen, status, "%s: %s", what, cond.text());
}

int scp__tls_new(const sn_config *cfg, bool acceptor, DcmTLSTransportLayer **out, char *err, size_t errlen)
{
    *out = nullptr;
#ifdef WITH_OPENSSL
    static std::once_flag once;
    std::call_once(once, [] { DcmTLSTransportLayer::initializeOpenSSL(); });
    const sn_node_config *n = &cfg->node;
    const char *side = acceptor ? "TLS (server side)" : "TLS (client side)";
    std::unique_ptr<DcmTLSTransportLayer> tls(
        new DcmTLSTransportLayer(acceptor ? NET_ACCEPTOR : NET_REQUESTOR, nullptr, OFFalse));
    if (!*tls)
        return sn_errf(err, errlen, SN_EINTERNAL, "%s: cannot create an OpenSSL context", side);
    DcmTLSSecurityProfile profile = TSP_Profile_BCP195;
    if (n->tls_profile == SN_TLS_BCP195_ND)
        profile = TSP_Profile_BCP195_ND;
    else if (n->tls_profile == SN_TLS_BCP195_EX)
        profile = TSP_Profile_BCP195_Extended;
    OFCondition cond = tls->setTLSProfile(profile);
    if (cond.good())
        cond = tls->activateCipherSuites();
    if (cond.bad())
        return sn_errf(err, errlen, SN_ECONFIG, "%s: tls_profile %s: %s", side,
                       sn_tls_profile_name(n->tls_profile), cond.text());
    if (n->tls_private_key[0] || n->tls_certificate[0]) {
        if (tls->setPrivateKeyFile(n->tls_private_key, DCF_Filetype_PEM).bad())
            return sn_errf(err, errlen, SN_ECONFIG, "%s: cannot load the private key %s (PEM, unencrypted)",
                           side, n->tls_private_key);
        if (tls->setCertificateFile(n->tls_certificate, DCF_Filetype_PEM).bad())
            return sn_errf(err, errlen, SN_ECONFIG, "%s: cannot load the certificate %s (PEM)", side,
                           n->tls_certificate);
        if (!tls->checkPrivateKeyMatchesCertificate())
            return sn_errf(err, errlen, SN_ECONFIG, "%s: private key %s does not match certificate %s", side,
                           n->tls_private_key, n->tls_certificate);
    }
    const char *trusted = n->tls_trusted_certificates;
    if (trusted[0]) {
        struct stat sb;
        bool dir = stat(trusted, &sb) == 0 && S_ISDIR(sb.st_mode);
        cond = dir ? tls->addTrustedCertificateDir(trusted, DCF_Filetype_PEM)
                   : tls->addTrustedCertificateFile(trusted, DCF_Filetype_PEM);
        if (cond.bad())
            return sn_errf(err, errlen, SN_ECONFIG, "%s: cannot load trusted certificates from %s: %s", side,
                           trusted, cond.text());
    }
    if (!acceptor || n->tls_require_peer_certificate)
        tls->setCertificateVerification(DCV_requireCertificate);
    else
        tls->setCertificateVerification(trusted[0] ? DCV_checkCertificate : DCV_ignoreCertificate);
    *out = tls.release();
    return SN_OK;
#else
    (void)cfg;
    (void)acceptor;
    return sn_errf(err, errlen, SN_EUNSUPPORTED, "DICOM TLS: this DCMTK was built without OpenSSL");
#endif
}

std::string scp__trim(const char *s)
{
    std::string r(s ? s : "");
    while (!r.empty() && (r.back() == ' ' || r.back() == '\0'))
        r.pop_back();
    size_t i = 0;
    while (i < r.size() && r[i] == ' ')
        i++;
    return r.substr(i);
}

extern "C" void scp_global_init(void)
{
    static std::once_flag once;
    std::call_once(once, [] {
        /* Debian's DCMTK leaves Nagle on (~50 ms per C-STORE); dcmnet reads this variable each
         * time it opens or accepts a socket. Set before any thread exists. */
        setenv("TCP_NODELAY", "1", 1);
        /* Reverse DNS of every peer would stall associations on a hospital network. */
        dcmDisableGethostbyaddr.set(OFTrue);
        signal(SIGPIPE, SIG_IGN);
        OFLog::configure(sn_log_get_level() <= SN_LOG_LEVEL_DEBUG ? OFLogger::INFO_LOG_LEVEL
                                                                  : OFLogger::ERROR_LOG_LEVEL);
        /* Decoders let the SCU fall back to an uncompressed context when a peer refuses the
         * file's own transfer syntax. */
        DJDecoderRegistration::registerCodecs();
        DJLSDecoderRegistration::registerCodecs();
        DcmRLEDecoderRegistration::registerCodecs();
    });
}
