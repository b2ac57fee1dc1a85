/* common/status.c — text for status codes and the error-buffer helper. */
#include "common/status.h"

#include <stdarg.h>
#include <stdio.h>

const char *sn_strerror(int status)
{
    switch (status) {
    case SN_OK: return "ok";
    case SN_EINVAL: return "invalid argument or input";
    case SN_ENOMEM: return "out of memory";
    case SN_EIO: return "input/output error";
    case SN_ENOENT: return "not found";
    case SN_EEXIST: return "already exists";
    case SN_ENOSPC: return "no space left (disk watermark)";
    case SN_EDB: return "database error";
    case SN_ENET: return "network error";
    case SN_EREFUSED: return "refused";
    case SN_ECONFIG: return "invalid configuration";
    case SN_EDICOM: return "malformed or unsupported DICOM";
    case SN_EBUSY: return "busy";
    case SN_ETIMEOUT: return "timed out";
    case SN_EUNSUPPORTED: return "unsupported";
    case SN_EINTERNAL: return "internal error";
    case SN_EDEVICE: return "compute device error";
    default: return "unknown error";
    }
}

int sn_errf(char *err, size_t errlen, int status, const char *fmt, ...)
{
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return status;
}
