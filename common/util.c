/* common/util.c — see util.h. */
#include "common/util.h"
#include "common/status.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <stdio.h>
#include <unistd.h>

size_t sn_strlcpy(char *dst, const char *src, size_t n)
{
    size_t len = src ? strlen(src) : 0;
    if (n) {
        size_t c = len < n - 1 ? len : n - 1;
        if (c)
            memcpy(dst, src, c);
        dst[c] = '\0';
    }
    return len;
}

char *sn_strtrim(char *s)
{
    if (!s)
        return s;
    size_t len = strlen(s);
    while (len && (s[len - 1] == ' ' || s[len - 1] == '\t' || s[len - 1] == '\n' || s[len - 1] == '\r'))
        s[--len] = '\0';
    size_t start = 0;
    while (s[start] == ' ' || s[start] == '\t')
        start++;
    if (start)
        memmove(s, s + start, len - start + 1);
    return s;
}

int sn_uid_valid(const char *uid)
{
    if (!uid)
        return 0;
    size_t len = strlen(uid);
    if (len == 0 || len > 64)
        return 0;
    size_t comp_len = 0;
    char comp_first = 0;
    for (size_t i = 0; i <= len; i++) {
        char c = uid[i];
        if (c == '.' || c == '\0') {
            if (comp_len == 0)
                return 0;
            if (comp_len > 1 && comp_first == '0')
                return 0;
            comp_len = 0;
            continue;
        }
        if (c < '0' || c > '9')
            return 0;
        if (comp_len == 0)
            comp_first = c;
        comp_len++;
    }
    return 1;
}

int sn_ae_valid(const char *ae)
{
    if (!ae)
        return 0;
    size_t len = strlen(ae);
    if (len == 0 || len > 16)
        return 0;
    int nonspace = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)ae[i];
        if (c < 0x20 || c > 0x7e || c == '\\')
            return 0;
        if (c != ' ')
            nonspace = 1;
    }
    return nonspace;
}

int sn_mkdirs(const char *path, char *err, size_t errlen)
{
    char buf[4096];
    if (sn_strlcpy(buf, path, sizeof buf) >= sizeof buf)
        return sn_errf(err, errlen, SN_EINVAL, "path too long: %s", path);
    for (char *p = buf + 1;; p++) {
        if (*p == '/' || *p == '\0') {
            char saved = *p;
            *p = '\0';
            if (mkdir(buf, 0750) != 0 && errno != EEXIST)
                return sn_errf(err, errlen, SN_EIO, "cannot create directory %s: %s", buf, strerror(errno));
            *p = saved;
            if (saved == '\0')
                break;
        }
    }
    struct stat st;
    if (stat(path, &st) != 0 || !S_ISDIR(st.st_mode))
        return sn_errf(err, errlen, SN_EIO, "%s is not a directory", path);
    return SN_OK;
}

int sn_fsync_fd(int fd, const char *what, char *err, size_t errlen)
{
    if (fsync(fd) != 0)
        return sn_errf(err, errlen, errno == ENOSPC || errno == EDQUOT ? SN_ENOSPC : SN_EIO,
                       "fsync %s: %s", what ? what : "file", strerror(errno));
    return SN_OK;
}

int sn_fsync_dir(const char *dir, char *err, size_t errlen)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return sn_errf(err, errlen, SN_EIO, "open directory %s: %s", dir, strerror(errno));
    int rc = sn_fsync_fd(fd, dir, err, errlen);
    close(fd);
    return rc;
}

int64_t sn_disk_free_bytes(const char *path)
{
    struct statvfs sv;
    if (statvfs(path, &sv) != 0)
        return -1;
    return (int64_t)sv.f_bavail * (int64_t)sv.f_frsize;
}

int64_t sn_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t sn_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

struct timespec sn_mono_deadline(int ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    return ts;
}

void sn_format_time(int64_t ms, char out[32])
{
    time_t s = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&s, &tm);
    size_t n = strftime(out, 32, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out + n, 32 - n, ".%03dZ", (int)(ms % 1000));
}

#ifndef SEGNODE_SOURCE_DIR
#define SEGNODE_SOURCE_DIR "."
#endif
#ifndef SEGNODE_BIN_TO_DATA
#define SEGNODE_BIN_TO_DATA "../share/segnode"
#endif
#ifndef SEGNODE_BIN_TO_CONF
#define SEGNODE_BIN_TO_CONF "../etc/segnode"
#endif

/* `rel` under the folder of this program's binary, resolved, into out: SN_OK when it exists. */
static int util__beside_exe(const char *rel, char *out, size_t n)
{
    char exe[PATH_MAX], cand[PATH_MAX + 256], real[PATH_MAX];
    struct stat sb;
    ssize_t len = readlink("/proc/self/exe", exe, sizeof exe - 1);
    char *slash = len > 0 ? (exe[len] = '\0', strrchr(exe, '/')) : NULL;
    if (!slash) {
        sn_strlcpy(out, rel, n);
        return SN_ENOENT;
    }
    *slash = '\0';
    snprintf(cand, sizeof cand, "%s/%s", exe, rel);
    if (stat(cand, &sb) != 0) {
        sn_strlcpy(out, cand, n);
        return SN_ENOENT;
    }
    return sn_strlcpy(out, realpath(cand, real) ? real : cand, n) < n ? SN_OK : SN_EINVAL;
}

int sn_shipped_path(const char *installed, const char *source, char *out, size_t n)
{
    char rel[1024], cand[PATH_MAX + 256], src[PATH_MAX];
    struct stat sb;
    snprintf(rel, sizeof rel, "%s/%s", SEGNODE_BIN_TO_DATA, installed);
    if (util__beside_exe(rel, cand, sizeof cand) == SN_OK)
        return sn_strlcpy(out, cand, n) < n ? SN_OK : SN_EINVAL;
    snprintf(src, sizeof src, "%s/%s", SEGNODE_SOURCE_DIR, source);
    if (stat(src, &sb) == 0)
        return sn_strlcpy(out, src, n) < n ? SN_OK : SN_EINVAL;
    sn_strlcpy(out, cand, n);
    return SN_ENOENT;
}

int sn_installed_config(char *out, size_t n)
{
    return util__beside_exe(SEGNODE_BIN_TO_CONF "/segnode.conf", out, n);
}
