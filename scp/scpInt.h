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

/* Fill err with "what: condition text" and return a status (SN_ENET unless refined). */
int scp__cond(const OFCondition &cond, const char *what, char *err, size_t errlen);

/* Trim DICOM padding (trailing spaces) from a fixed char array/OFString value. */
std::string scp__trim(const char *s);

#endif
