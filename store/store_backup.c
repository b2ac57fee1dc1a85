/* store/store_backup.c — `segnode store backup`: a consistent, compact copy of the index while
 * the node runs (see store_backup in store.h). Copying index.sqlite with cp while the daemon
 * writes can catch the database between its file and its WAL; VACUUM INTO reads one snapshot. */
#include "store/storeInt.h"

#include "common/status.h"
#include "common/util.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Row counts and quick_check of the finished copy, on a connection of its own. */
static int backup__verify(const char *path, store_backup_result *res, char *err, size_t errlen)
{
    static const char *const tables[] = {"patients", "studies", "series", "instances", "jobs", "outbox"};
    int64_t *counts[] = {&res->patients, &res->studies, &res->series, &res->instances, &res->jobs,
                         &res->outbox};
    sqlite3 *db = NULL;
    sqlite3_stmt *q = NULL;
    int rc = sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL);
    if (rc != SQLITE_OK)
        goto dberr;
    if ((rc = sqlite3_prepare_v2(db, "PRAGMA quick_check", -1, &q, NULL)) != SQLITE_OK)
        goto dberr;
    if ((rc = sqlite3_step(q)) != SQLITE_ROW)
        goto dberr;
    const char *verdict = (const char *)sqlite3_column_text(q, 0);
    if (!verdict || strcmp(verdict, "ok") != 0) {
        sn_errf(err, errlen, SN_EDB, "%s: quick_check: %s", path, verdict ? verdict : "no answer");
        sqlite3_finalize(q);
        sqlite3_close(db);
        return SN_EDB;
    }
    sqlite3_finalize(q);
    q = NULL;
    for (size_t i = 0; i < sizeof tables / sizeof tables[0]; i++) {
        char sql[64];
        snprintf(sql, sizeof sql, "SELECT count(*) FROM %s", tables[i]);
        if ((rc = sqlite3_prepare_v2(db, sql, -1, &q, NULL)) != SQLITE_OK || (rc = sqlite3_step(q)) != SQLITE_ROW)
            goto dberr;
        *counts[i] = sqlite3_column_int64(q, 0);
        sqlite3_finalize(q);
        q = NULL;
    }
    sqlite3_close(db);
    return SN_OK;
dberr:
    store__dberr(db, rc, path, err, errlen);
    sqlite3_finalize(q);
    sqlite3_close(db);
    return SN_EDB;
}

int store_backup(store *st, const char *dest, store_backup_result *res, char *err, size_t errlen)
{
    store_backup_result local;
    struct stat sb;
    char part[4096], dir[4096];
    if (!res)
        res = &local;
    memset(res, 0, sizeof *res);
    if (!dest || !*dest)
        return sn_errf(err, errlen, SN_EINVAL, "backup: no destination given");
    if (lstat(dest, &sb) == 0)
        return sn_errf(err, errlen, SN_EEXIST, "%s exists; the backup never overwrites", dest);
    if ((size_t)snprintf(part, sizeof part, "%s.partial", dest) >= sizeof part)
        return sn_errf(err, errlen, SN_EINVAL, "backup: destination path too long");
    sn_strlcpy(dir, dest, sizeof dir);
    char *slash = strrchr(dir, '/');
    if (!slash)
        sn_strlcpy(dir, ".", sizeof dir);
    else if (slash == dir)
        dir[1] = '\0';
    else
        *slash = '\0';
    unlink(part); /* a leftover of an interrupted backup */

    /* A connection of its own, read-only: the pool's readers are query_only, which refuses
     * VACUUM INTO. One statement, one read transaction, one snapshot. */
    sqlite3 *db = NULL;
    sqlite3_stmt *q = NULL;
    int rc = sqlite3_open_v2(st->db_path, &db, SQLITE_OPEN_READONLY, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_busy_timeout(db, STORE__BUSY_MS);
        rc = sqlite3_prepare_v2(db, "VACUUM INTO ?1", -1, &q, NULL);
    }
    if (rc == SQLITE_OK) {
        sqlite3_bind_text(q, 1, part, -1, SQLITE_TRANSIENT);
        rc = sqlite3_step(q);
        if (rc == SQLITE_DONE)
            rc = SQLITE_OK;
    }
    int status = SN_OK;
    if (rc != SQLITE_OK)
        status = store__dberr(db, rc, "VACUUM INTO", err, errlen);
    sqlite3_finalize(q);
    sqlite3_close(db);
    if (status != SN_OK) {
        unlink(part);
        return status;
    }

    int fd = open(part, O_RDONLY | O_CLOEXEC);
    if (fd < 0 || sn_fsync_fd(fd, part, err, errlen) != SN_OK || fstat(fd, &sb) != 0) {
        if (fd < 0)
            sn_errf(err, errlen, SN_EIO, "open %s: %s", part, strerror(errno));
        if (fd >= 0)
            close(fd);
        unlink(part);
        return SN_EIO;
    }
    close(fd);
    res->bytes = (int64_t)sb.st_size;
    if ((status = backup__verify(part, res, err, errlen)) != SN_OK) {
        unlink(part);
        return status;
    }
    /* link, not rename: a dest made meanwhile is never replaced */
    if (link(part, dest) != 0) {
        int e = errno;
        unlink(part);
        return sn_errf(err, errlen, e == EEXIST ? SN_EEXIST : SN_EIO, "%s: %s", dest, strerror(e));
    }
    unlink(part);
    return sn_fsync_dir(dir, err, errlen) == SN_OK ? SN_OK : SN_EIO;
}
