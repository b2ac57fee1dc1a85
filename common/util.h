/* common/util.h — small helpers shared by all modules: bounded string copy, DICOM string
 * checks (UIDs, AE titles), directory creation and durable-file primitives, clocks.
 * Nothing here allocates unless it says so. */
#ifndef SEGNODE_COMMON_UTIL_H
#define SEGNODE_COMMON_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

/* Copy `src` into `dst` (size `n` > 0), always NUL-terminating. Returns strlen(src); a value
 * >= n means the copy was truncated. */
size_t sn_strlcpy(char *dst, const char *src, size_t n);

/* Trim leading/trailing spaces (and DICOM's trailing NUL padding) in place; returns s. */
char *sn_strtrim(char *s);

/* 1 if `uid` is a syntactically valid DICOM UID (PS3.5 9.1): 1..64 chars of digits and dots,
 * no empty component, no leading zero in a multi-digit component. 0 otherwise. Such a string is
 * also safe to print and to store, but is never used as a path by this project. */
int sn_uid_valid(const char *uid);

/* 1 if `ae` is a valid AE title (PS3.5 VR AE): 1..16 chars, printable ASCII without backslash,
 * not all spaces. 0 otherwise. */
int sn_ae_valid(const char *ae);

/* mkdir -p with mode 0750 for each created level. Returns 0 or SN_EIO (err filled). */
int sn_mkdirs(const char *path, char *err, size_t errlen);

/* fsync() an open file descriptor / the directory at `dir` so a rename into it is durable.
 * Return 0 or SN_EIO (err filled). */
int sn_fsync_fd(int fd, const char *what, char *err, size_t errlen);
int sn_fsync_dir(const char *dir, char *err, size_t errlen);

/* Free bytes available to an unprivileged user on the filesystem holding `path`, or -1. */
int64_t sn_disk_free_bytes(const char *path);

/* Clocks: wall time in ms since the epoch, and a monotonic time in ms. */
int64_t sn_now_ms(void);
int64_t sn_mono_ms(void);

/* The CLOCK_MONOTONIC time `ms` from now, for pthread_cond_timedwait on a condition variable
 * made with pthread_condattr_setclock(CLOCK_MONOTONIC). */
struct timespec sn_mono_deadline(int ms);

/* Format `ms` since the epoch as ISO 8601 UTC "YYYY-MM-DDTHH:MM:SS.mmmZ" into out[32]. */
void sn_format_time(int64_t ms, char out[32]);

/* A file or folder segnode ships (the label code table, model bundles) into out[n]: under
 * PREFIX/share/segnode/`installed` when this program runs from an installation (found from its
 * own path, /proc/self/exe, so a relocated prefix works too), else under the source tree it was
 * built from, `source` (a build tree's binaries and tests read the sources they were built
 * from). SN_ENOENT when neither exists (out then holds the installed candidate). */
int sn_shipped_path(const char *installed, const char *source, char *out, size_t n);

/* The config file of this program's installation (SYSCONFDIR/segnode/segnode.conf, found the
 * same way) into out[n]; SN_ENOENT when there is none (a build tree, or not installed). */
int sn_installed_config(char *out, size_t n);

#endif
