/* common/status.h — status codes shared by every module.
 * 0 is success; every error is a negative SN_E* constant (libuv style). sn_strerror() turns a
 * code into text; the detailed, human-readable reason travels separately in an `err` buffer
 * that the failing function fills (see SN_ERRF). */
#ifndef SEGNODE_COMMON_STATUS_H
#define SEGNODE_COMMON_STATUS_H

#include <stddef.h>

#define SN_OK          0
#define SN_EINVAL    (-1)   /* bad argument or malformed input */
#define SN_ENOMEM    (-2)   /* allocation failed */
#define SN_EIO       (-3)   /* read/write/fsync/rename failed */
#define SN_ENOENT    (-4)   /* no such file, row, peer, series ... */
#define SN_EEXIST    (-5)   /* already exists (duplicate AE title, ...) */
#define SN_ENOSPC    (-6)   /* disk full or below the watermark */
#define SN_EDB       (-7)   /* SQLite error */
#define SN_ENET      (-8)   /* network / DICOM association error */
#define SN_EREFUSED  (-9)   /* the peer (or our policy) refused the request */
#define SN_ECONFIG  (-10)   /* configuration is invalid */
#define SN_EDICOM   (-11)   /* malformed or unsupported DICOM */
#define SN_EBUSY    (-12)   /* resource busy (port in use, lock held) */
#define SN_ETIMEOUT (-13)   /* timed out */
#define SN_EUNSUPPORTED (-14) /* valid but not supported here */
#define SN_EINTERNAL (-15)  /* a library failed in an unexpected way (exception caught, ...) */
#define SN_EDEVICE  (-16)   /* GPU / compute device failure */

/* Static text for a status code; never NULL. */
const char *sn_strerror(int status);

/* Format a reason into a caller-supplied buffer `err` of size `errlen`, both may be NULL/0.
 * Returns `status` so that a failing path can read `return sn_errf(err, errlen, SN_EIO, ...)`. */
int sn_errf(char *err, size_t errlen, int status, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#endif
