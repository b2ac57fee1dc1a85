/* store/store.c — the store handle: folders, opening and migrating the database, the writer
 * connection and its prepared statements, the pool of read connections, temp files, the
 * daemon's claim on the store (lock and start-up repairs), and state names.
 * Not here: the ingest path (store_commit.c), series states and jobs (store_series.c), queries
 * (store_query.c), the schema (store_schema.c). */
#define _GNU_SOURCE /* sync_file_range */
#include "store/storeInt.h"

#include "common/log.h"
#include "common/status.h"
#include "common/util.h"

#include <dirent.h>
#include <signal.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- small SQLite helpers ---------------------------------------------------------------- */

int store__dberr(sqlite3 *db, int rc, const char *what, char *err, size_t errlen)
{
    int ec = rc & 0xff;
    const char *msg = db ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
    return sn_errf(err, errlen, ec == SQLITE_FULL ? SN_ENOSPC : SN_EDB, "%s: %s", what, msg);
}

void store__bind_str(sqlite3_stmt *s, int i, const char *v)
{
    if (v && *v)
        sqlite3_bind_text(s, i, v, -1, SQLITE_STATIC);
    else
        sqlite3_bind_null(s, i);
}

void store__bind_text(sqlite3_stmt *s, int i, const char *v)
{
    if (v)
        sqlite3_bind_text(s, i, v, -1, SQLITE_STATIC);
    else
        sqlite3_bind_null(s, i);
}

int store__prepare(sqlite3 *db, const char *sql, sqlite3_stmt **out, const char *what, char *err,
                   size_t errlen)
{
    int rc = sqlite3_prepare_v2(db, sql, -1, out, NULL);
    return rc == SQLITE_OK ? SN_OK : store__dberr(db, rc, what, err, errlen);
}

int store__run(sqlite3 *db, sqlite3_stmt *s, const char *what, char *err, size_t errlen)
{
    int rc = sqlite3_step(s);
    sqlite3_finalize(s);
    return rc == SQLITE_DONE ? SN_OK : store__dberr(db, rc, what, err, errlen);
}

int store__exec(sqlite3 *db, const char *sql, char *err, size_t errlen)
{
    char *msg = NULL;
    int rc = sqlite3_exec(db, sql, NULL, NULL, &msg);
    if (rc == SQLITE_OK)
        return SN_OK;
    int st = sn_errf(err, errlen, (rc & 0xff) == SQLITE_FULL ? SN_ENOSPC : SN_EDB, "%s: %s", sql,
                     msg ? msg : sqlite3_errstr(rc));
    sqlite3_free(msg);
    return st;
}

int store__conn_setup(sqlite3 *db, char *err, size_t errlen)
{
    int rc;
    sqlite3_busy_timeout(db, STORE__BUSY_MS);
    sqlite3_extended_result_codes(db, 1);
    if ((rc = store__exec(db, "PRAGMA foreign_keys=ON", err, errlen)) != SN_OK)
        return rc;
    if (store__register_functions(db) != SQLITE_OK)
        return store__dberr(db, SQLITE_ERROR, "register functions", err, errlen);
    return SN_OK;
}

/* ---- read connections -------------------------------------------------------------------- */

int store__reader_get(store *st, sqlite3 **out, char *err, size_t errlen)
{
    sqlite3 *db = NULL;
    int rc;
    pthread_mutex_lock(&st->r_mu);
    if (st->nr > 0)
        db = st->rpool[--st->nr];
    pthread_mutex_unlock(&st->r_mu);
    if (db) {
        *out = db;
        return SN_OK;
    }
    /* None idle: open one rather than wait, so a row callback that queries again cannot
     * deadlock. Each connection is used by one thread at a time, hence NOMUTEX. */
    rc = sqlite3_open_v2(st->db_path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK) {
        int s = store__dberr(db, rc, "open read connection", err, errlen);
        sqlite3_close(db);
        return s;
    }
    if ((rc = store__conn_setup(db, err, errlen)) != SN_OK ||
        (rc = store__exec(db, "PRAGMA query_only=ON", err, errlen)) != SN_OK) {
        sqlite3_close(db);
        return rc;
    }
    *out = db;
    return SN_OK;
}

void store__reader_put(store *st, sqlite3 *db)
{
    if (!db)
        return;
    pthread_mutex_lock(&st->r_mu);
    if (st->nr < STORE__POOL_KEEP) {
        st->rpool[st->nr++] = db;
        db = NULL;
    }
    pthread_mutex_unlock(&st->r_mu);
    if (db)
        sqlite3_close(db);
}

/* ---- open / close ------------------------------------------------------------------------ */

static char *open__join(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    char *p = malloc(la + lb + 2);
    if (!p)
        return NULL;
    memcpy(p, a, la);
    p[la] = '/';
    memcpy(p + la + 1, b, lb + 1);
    return p;
}

/* Make files/00 .. files/ff (store__instance_path); a store that lacked any gets its files/
 * folder flushed so the new entries are durable before the first instance goes in. */
static int open__folders(store *st, char *err, size_t errlen)
{
    char path[4096];
    int made = 0;
    for (int i = 0; i < 256; i++) {
        snprintf(path, sizeof path, "%s/%02x", st->files_dir, i);
        if (mkdir(path, 0750) == 0)
            made++;
        else if (errno != EEXIST) {
            int e = errno;
            return sn_errf(err, errlen, store__errno_status(e), "create directory %s: %s", path,
                           strerror(e));
        }
    }
    return made ? sn_fsync_dir(st->files_dir, err, errlen) : SN_OK;
}

/* Remove temp files of writers that are gone: they were never acknowledged. */
static int claim__empty_tmp(store *st, char *err, size_t errlen)
{
    DIR *d = opendir(st->tmp_dir);
    if (!d)
        return sn_errf(err, errlen, SN_EIO, "open %s: %s", st->tmp_dir, strerror(errno));
    int fd = dirfd(d), n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        /* Temp names start with the writer's pid. Admin commands that write (atlas import)
         * may be running beside the daemon: leave the files of live writers. */
        char *end = NULL;
        long pid = strtol(e->d_name, &end, 10);
        if (end && *end == '-' && pid > 0 && pid != (long)getpid() && (kill((pid_t)pid, 0) == 0 || errno == EPERM))
            continue;
        if (unlinkat(fd, e->d_name, 0) == 0)
            n++;
        else
            SN_LOG_WARN("store", "cannot remove %s/%s: %s", st->tmp_dir, e->d_name, strerror(errno));
    }
    closedir(d);
    if (n)
        SN_LOG_INFO("store", "removed %d unacknowledged temp file(s) from %s", n, st->tmp_dir);
    return SN_OK;
}

static const char *const open__ws_sql[STORE__WS_COUNT] = {
    [STORE__WS_BEGIN] = "BEGIN IMMEDIATE",
    [STORE__WS_COMMIT] = "COMMIT",
    [STORE__WS_ROLLBACK] = "ROLLBACK",
    [STORE__WS_SAVEPOINT] = "SAVEPOINT inst",
    [STORE__WS_RELEASE] = "RELEASE inst",
    [STORE__WS_ROLLBACK_TO] = "ROLLBACK TO inst",
    /* ?1 key ?2 name ?3 birth date ?4 sex ?5 now */
    [STORE__WS_PATIENT_UPSERT] =
        "INSERT INTO patients(patient_key, patient_name, birth_date, sex, created_ms, updated_ms)"
        " VALUES(?1, ?2, ?3, ?4, ?5, ?5)"
        " ON CONFLICT(patient_key) DO UPDATE SET"
        "  patient_name=coalesce(excluded.patient_name, patient_name),"
        "  birth_date=coalesce(excluded.birth_date, birth_date),"
        "  sex=coalesce(excluded.sex, sex), updated_ms=excluded.updated_ms"
        " RETURNING id",
    /* ?1 uid ?2 patient ?3 date ?4 time ?5 descr ?6 accession ?7 study id ?8 referring ?9 now */
    [STORE__WS_STUDY_UPSERT] =
        "INSERT INTO studies(study_uid, patient_id, study_date, study_time, description,"
        "  accession_number, study_id, referring_physician, created_ms, updated_ms)"
        " VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9)"
        " ON CONFLICT(study_uid) DO UPDATE SET patient_id=excluded.patient_id,"
        "  study_date=coalesce(excluded.study_date, study_date),"
        "  study_time=coalesce(excluded.study_time, study_time),"
        "  description=coalesce(excluded.description, description),"
        "  accession_number=coalesce(excluded.accession_number, accession_number),"
        "  study_id=coalesce(excluded.study_id, study_id),"
        "  referring_physician=coalesce(excluded.referring_physician, referring_physician),"
        "  updated_ms=excluded.updated_ms"
        " RETURNING id",
    /* ?1 uid ?2 study ?3 modality ?4 descr ?5 body part ?6 FoR ?7 image type ?8 number
     * ?9 calling AE ?10 called AE ?11 now. A new instance always puts the series back to
     * receiving (UPDATE's right-hand sides all see the old row). */
    [STORE__WS_SERIES_UPSERT] =
        "INSERT INTO series(series_uid, study_id, modality, description, body_part,"
        "  frame_of_reference_uid, image_type, series_number, source_ae, called_ae,"
        "  first_received_ms, last_received_ms, state, state_changed_ms)"
        " VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?11, 0, ?11)"
        " ON CONFLICT(series_uid) DO UPDATE SET study_id=excluded.study_id,"
        "  modality=coalesce(excluded.modality, modality),"
        "  description=coalesce(excluded.description, description),"
        "  body_part=coalesce(excluded.body_part, body_part),"
        "  frame_of_reference_uid=coalesce(excluded.frame_of_reference_uid, frame_of_reference_uid),"
        "  image_type=coalesce(image_type, excluded.image_type),"
        "  series_number=coalesce(excluded.series_number, series_number),"
        "  source_ae=coalesce(source_ae, excluded.source_ae),"
        "  called_ae=coalesce(called_ae, excluded.called_ae),"
        "  last_received_ms=max(last_received_ms, excluded.last_received_ms),"
        "  state_changed_ms=CASE WHEN state<>0 THEN excluded.last_received_ms"
        "   ELSE state_changed_ms END,"
        "  state=0"
        " RETURNING id",
    [STORE__WS_INSTANCE_GET] =
        "SELECT id, series_id, size FROM instances WHERE sop_instance_uid=?1",
    /* ?1 uid ?2 class ?3 series ?4 ts ?5 number ?6 size ?7 path ?8 now */
    [STORE__WS_INSTANCE_INSERT] =
        "INSERT INTO instances(sop_instance_uid, sop_class_uid, series_id, transfer_syntax_uid,"
        "  instance_number, size, path, received_ms) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    /* ?1 id ?2 class ?3 series ?4 ts ?5 number ?6 size ?7 path ?8 now */
    [STORE__WS_INSTANCE_UPDATE] =
        "UPDATE instances SET sop_class_uid=?2, series_id=?3, transfer_syntax_uid=?4,"
        "  instance_number=?5, size=?6, path=?7, received_ms=?8 WHERE id=?1",
    /* ?1 series ?2 d instances ?3 d bytes ?4 d replaced */
    [STORE__WS_SERIES_ADD] =
        "UPDATE series SET instances=instances+?2, bytes=bytes+?3, replaced=replaced+?4"
        " WHERE id=?1",
    [STORE__WS_INSTANCE_DELETE] = "DELETE FROM instances WHERE sop_instance_uid=?1",
    [STORE__WS_SYNC_NORMAL] = "PRAGMA synchronous=NORMAL",
    [STORE__WS_SYNC_FULL] = "PRAGMA synchronous=FULL",
};

/* Rows whose file vanished or changed size (a disk restored from an old backup, a manual rm, or
 * a crash while a group commit's batch was indexed but not yet flushed — store_commit.c) would
 * hand the pipeline a dangling path. Checking every file would make start-up O(archive), so only
 * the newest rows are checked, newest by row id (the last inserts) and by received time (the
 * last replacements): a crash can leave at most one batch (STORE__BATCH_MAX rows) ahead of its
 * files, and those are the newest inserts. On ext4 (data=ordered) a file whose size is durable
 * has its data durable too, so existence + size is the check. Only the owner may run it: while
 * a daemon receives, a replaced instance's new file is renamed in before its row gets the new
 * size (store_commit.c), and a check from another process in that window would drop a good row. */
static int claim__check_recent(store *st, int *n_dropped, char *err, size_t errlen)
{
    sqlite3_stmt *q = NULL, *del = NULL, *fix = NULL;
    int rc, nbad = 0, status = SN_OK;
    enum { NMAX = 2 * STORE__CHECK_RECENT };
    int64_t bad_id[NMAX], bad_series[NMAX], bad_size[NMAX];

    rc = sqlite3_prepare_v2(st->wdb,
                            "SELECT id, series_id, size, path FROM instances WHERE id IN"
                            " (SELECT id FROM instances ORDER BY id DESC LIMIT ?1)"
                            " OR id IN (SELECT id FROM instances ORDER BY received_ms DESC LIMIT ?1)",
                            -1, &q, NULL);
    if (rc != SQLITE_OK)
        return store__dberr(st->wdb, rc, "consistency check", err, errlen);
    sqlite3_bind_int(q, 1, STORE__CHECK_RECENT);
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
        const char *rel = (const char *)sqlite3_column_text(q, 3);
        char path[4096];
        struct stat sb;
        snprintf(path, sizeof path, "%s/%s", st->dir, rel ? rel : "");
        if (stat(path, &sb) == 0 && S_ISREG(sb.st_mode) && (int64_t)sb.st_size == sqlite3_column_int64(q, 2))
            continue;
        SN_LOG_ERROR("store", "indexed instance file %s is %s; dropping its row", path,
                     stat(path, &sb) == 0 ? "not the size indexed" : "missing");
        bad_id[nbad] = sqlite3_column_int64(q, 0);
        bad_series[nbad] = sqlite3_column_int64(q, 1);
        bad_size[nbad] = sqlite3_column_int64(q, 2);
        nbad++;
    }
    if (rc != SQLITE_DONE)
        status = store__dberr(st->wdb, rc, "consistency check", err, errlen);
    sqlite3_finalize(q);
    if (status != SN_OK || nbad == 0)
        return status;
    *n_dropped = nbad;

    if ((status = store__exec(st->wdb, "BEGIN IMMEDIATE", err, errlen)) != SN_OK)
        return status;
    if ((rc = sqlite3_prepare_v2(st->wdb, "DELETE FROM instances WHERE id=?1", -1, &del, NULL)) != SQLITE_OK ||
        (rc = sqlite3_prepare_v2(st->wdb, open__ws_sql[STORE__WS_SERIES_ADD], -1, &fix, NULL)) != SQLITE_OK) {
        status = store__dberr(st->wdb, rc, "consistency repair", err, errlen);
        goto err;
    }
    for (int i = 0; i < nbad; i++) {
        sqlite3_bind_int64(del, 1, bad_id[i]);
        sqlite3_bind_int64(fix, 1, bad_series[i]);
        sqlite3_bind_int64(fix, 2, -1);
        sqlite3_bind_int64(fix, 3, -bad_size[i]);
        sqlite3_bind_int64(fix, 4, 0);
        if ((rc = sqlite3_step(del)) != SQLITE_DONE || (rc = sqlite3_step(fix)) != SQLITE_DONE) {
            status = store__dberr(st->wdb, rc, "consistency repair", err, errlen);
            goto err;
        }
        sqlite3_reset(del);
        sqlite3_reset(fix);
    }
    sqlite3_finalize(del);
    sqlite3_finalize(fix);
    return store__exec(st->wdb, "COMMIT", err, errlen);
err:
    sqlite3_finalize(del);
    sqlite3_finalize(fix);
    sqlite3_exec(st->wdb, "ROLLBACK", NULL, NULL, NULL);
    return status;
}

static void store__free(store *st)
{
    if (!st)
        return;
    for (int i = 0; i < STORE__WS_COUNT; i++)
        sqlite3_finalize(st->ws[i]);
    if (st->wdb) {
        /* A clean close checkpoints and removes the WAL. */
        sqlite3_close(st->wdb);
    }
    for (int i = 0; i < st->nr; i++)
        sqlite3_close(st->rpool[i]);
    pthread_mutex_destroy(&st->w_mu);
    pthread_mutex_destroy(&st->q_mu);
    pthread_cond_destroy(&st->q_cv);
    pthread_mutex_destroy(&st->r_mu);
    for (int i = 0; i < STORE__NSTRIPES; i++)
        pthread_mutex_destroy(&st->stripe[i]);
    if (st->lock_fd >= 0)
        close(st->lock_fd); /* releases the lock */
    free(st->dir);
    free(st->files_dir);
    free(st->tmp_dir);
    free(st->db_path);
    free(st);
}

int store_open(const char *dir, store **out, char *err, size_t errlen)
{
    store *st = NULL;
    int rc;

    if (!dir || !*dir || !out)
        return sn_errf(err, errlen, SN_EINVAL, "store_open: no folder given");
    *out = NULL;
    if (sqlite3_threadsafe() == 0)
        return sn_errf(err, errlen, SN_EDB, "SQLite was built without thread support");

    st = calloc(1, sizeof *st);
    if (!st)
        return sn_errf(err, errlen, SN_ENOMEM, "out of memory");
    pthread_mutex_init(&st->w_mu, NULL);
    pthread_mutex_init(&st->q_mu, NULL);
    pthread_cond_init(&st->q_cv, NULL);
    pthread_mutex_init(&st->r_mu, NULL);
    for (int i = 0; i < STORE__NSTRIPES; i++)
        pthread_mutex_init(&st->stripe[i], NULL);
    st->q_tail = &st->q_head;
    st->lock_fd = -1;
    atomic_init(&st->fsync_on, 1);
    atomic_init(&st->tmp_seq, 0);

    size_t dl = strlen(dir);
    while (dl > 1 && dir[dl - 1] == '/')
        dl--;
    st->dir = strndup(dir, dl);
    if (!st->dir || !(st->files_dir = open__join(st->dir, "files")) ||
        !(st->tmp_dir = open__join(st->dir, "tmp")) ||
        !(st->db_path = open__join(st->dir, "index.sqlite"))) {
        rc = sn_errf(err, errlen, SN_ENOMEM, "out of memory");
        goto err;
    }
    if ((rc = sn_mkdirs(st->dir, err, errlen)) != SN_OK ||
        (rc = sn_mkdirs(st->files_dir, err, errlen)) != SN_OK ||
        (rc = sn_mkdirs(st->tmp_dir, err, errlen)) != SN_OK) {
        rc = SN_EIO;
        goto err;
    }
    if ((rc = open__folders(st, err, errlen)) != SN_OK)
        goto err;
    {
        /* One syncfs can make the files and the index's WAL durable together only when they
         * live on one file system (files/ may be a mount or a link of its own). */
        struct stat a, b;
        st->one_flush = stat(st->dir, &a) == 0 && stat(st->files_dir, &b) == 0 && a.st_dev == b.st_dev;
    }

    rc = sqlite3_open_v2(st->db_path, &st->wdb,
                         SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK) {
        rc = store__dberr(st->wdb, rc, st->db_path, err, errlen);
        rc = SN_EDB;
        goto err;
    }
    if ((rc = store__conn_setup(st->wdb, err, errlen)) != SN_OK)
        goto err;
    {
        /* WAL: readers never block the writer. synchronous=FULL: in WAL mode that fsyncs the
         * log at every COMMIT, which is what makes an index write durable before Success. */
        sqlite3_stmt *s = NULL;
        const unsigned char *mode = NULL;
        rc = sqlite3_prepare_v2(st->wdb, "PRAGMA journal_mode=WAL", -1, &s, NULL);
        if (rc == SQLITE_OK && sqlite3_step(s) == SQLITE_ROW)
            mode = sqlite3_column_text(s, 0);
        if (!mode || strcmp((const char *)mode, "wal") != 0) {
            rc = sn_errf(err, errlen, SN_EDB, "%s: cannot switch to WAL mode: %s", st->db_path,
                         sqlite3_errmsg(st->wdb));
            sqlite3_finalize(s);
            goto err;
        }
        sqlite3_finalize(s);
    }
    if ((rc = store__exec(st->wdb, "PRAGMA synchronous=FULL", err, errlen)) != SN_OK ||
        (rc = store__exec(st->wdb, "PRAGMA cache_size=-16384", err, errlen)) != SN_OK)
        goto err;
    if ((rc = store__migrate(st->wdb, STORE__SCHEMA_VERSION, &st->schema_version, err, errlen)) != SN_OK) {
        if (rc != SN_ENOSPC)
            rc = SN_EDB;
        goto err;
    }
    for (int i = 0; i < STORE__WS_COUNT; i++) {
        rc = sqlite3_prepare_v3(st->wdb, open__ws_sql[i], -1, SQLITE_PREPARE_PERSISTENT, &st->ws[i], NULL);
        if (rc != SQLITE_OK) {
            rc = store__dberr(st->wdb, rc, "prepare", err, errlen);
            goto err;
        }
    }
    SN_LOG_INFO("store", "opened %s (schema version %d)", st->dir, st->schema_version);
    *out = st;
    return SN_OK;
err:
    store__free(st);
    return rc;
}

/* The owner's pid as segnode.lock holds it (written by store_claim), or -1. */
static long claim__read_pid(int fd)
{
    char owner[32] = "";
    ssize_t n = pread(fd, owner, sizeof owner - 1, 0);
    owner[n > 0 ? n : 0] = '\0';
    char *end = NULL;
    long pid = strtol(owner, &end, 10);
    return end != owner && pid > 0 ? pid : -1;
}

long store_owner(const store *st)
{
    if (st->lock_fd >= 0)
        return 0;
    char *path = open__join(st->dir, "segnode.lock");
    int fd = path ? open(path, O_RDONLY | O_CLOEXEC) : -1;
    free(path);
    if (fd < 0)
        return 0; /* no daemon ever claimed this storage */
    long owner = 0;
    if (flock(fd, LOCK_SH | LOCK_NB) != 0)
        owner = errno == EWOULDBLOCK ? claim__read_pid(fd) : 0;
    close(fd); /* drops the shared lock if it was taken */
    return owner;
}

int store_claim(store *st, int *n_dropped, char *err, size_t errlen)
{
    int nd = 0;
    if (n_dropped)
        *n_dropped = 0;
    if (st->lock_fd < 0) {
        /* flock, not fcntl: the lock belongs to this open file description, so no other
         * thread's close of the same file can drop it, and the kernel releases it when the
         * process dies (kill -9 included). */
        char *path = open__join(st->dir, "segnode.lock");
        if (!path)
            return sn_errf(err, errlen, SN_ENOMEM, "out of memory");
        int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0640);
        if (fd < 0) {
            int e = errno;
            sn_errf(err, errlen, SN_EIO, "open %s: %s", path, strerror(e));
            free(path);
            return SN_EIO;
        }
        /* store_owner takes the lock shared for an instant: a daemon starting just then
         * waits it out (2 s) rather than taking that admin command for another daemon. */
        int locked = -1;
        for (int i = 0; i < 40 && (locked = flock(fd, LOCK_EX | LOCK_NB)) != 0 && errno == EWOULDBLOCK; i++)
            usleep(50000);
        if (locked != 0) {
            int e = errno;
            long owner = claim__read_pid(fd);
            close(fd);
            char pid[24] = "unknown";
            if (owner > 0)
                snprintf(pid, sizeof pid, "%ld", owner);
            if (e == EWOULDBLOCK)
                sn_errf(err, errlen, SN_EBUSY, "%s is in use by another segnode serve (pid %s)", st->dir, pid);
            else
                sn_errf(err, errlen, SN_EIO, "lock %s: %s", path, strerror(e));
            free(path);
            return e == EWOULDBLOCK ? SN_EBUSY : SN_EIO;
        }
        char pid[32];
        int len = snprintf(pid, sizeof pid, "%ld\n", (long)getpid());
        if (ftruncate(fd, 0) != 0 || pwrite(fd, pid, (size_t)len, 0) != len)
            SN_LOG_WARN("store", "cannot write the owner's pid into %s: %s", path, strerror(errno));
        free(path);
        st->lock_fd = fd;
    }
    int rc = claim__empty_tmp(st, err, errlen);
    if (rc == SN_OK)
        rc = claim__check_recent(st, &nd, err, errlen);
    if (n_dropped)
        *n_dropped = nd;
    return rc;
}

void store_close(store *st)
{
    if (!st)
        return;
    pthread_mutex_lock(&st->q_mu);
    st->closing = 1;
    while (st->inflight > 0)
        pthread_cond_wait(&st->q_cv, &st->q_mu);
    pthread_mutex_unlock(&st->q_mu);
    store__free(st);
}

const char *store_dir(const store *st)
{
    return st ? st->dir : NULL;
}

void store_set_fsync(store *st, int on)
{
    if (st)
        atomic_store(&st->fsync_on, on ? 1 : 0);
}

/* ---- temp files -------------------------------------------------------------------------- */

int store_tmp_create(store *st, char *out, size_t outlen, char *err, size_t errlen)
{
    if (!st || !out || !outlen)
        return sn_errf(err, errlen, SN_EINVAL, "store_tmp_create: bad arguments");
    for (int tries = 0; tries < 16; tries++) {
        uint64_t seq = atomic_fetch_add(&st->tmp_seq, 1);
        int n = snprintf(out, outlen, "%s/%ld-%llu-%lld.part", st->tmp_dir, (long)getpid(),
                         (unsigned long long)seq, (long long)sn_mono_ms());
        if (n < 0 || (size_t)n >= outlen)
            return sn_errf(err, errlen, SN_EINVAL, "temp path does not fit in %zu bytes", outlen);
        int fd = open(out, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0640);
        if (fd >= 0) {
            close(fd);
            return SN_OK;
        }
        if (errno != EEXIST) {
            int e = errno;
            return sn_errf(err, errlen, e == ENOSPC || e == EDQUOT ? SN_ENOSPC : SN_EIO,
                           "create %s: %s", out, strerror(e));
        }
    }
    return sn_errf(err, errlen, SN_EIO, "cannot find a free temp file name in %s", st->tmp_dir);
}

void store_tmp_discard(store *st, const char *tmp_path)
{
    if (!tmp_path)
        return;
    if (unlink(tmp_path) != 0 && errno != ENOENT)
        SN_LOG_WARN("store", "cannot remove temp file %s: %s", tmp_path, strerror(errno));
}

void store_tmp_writeback(store *st, int fd)
{
    /* SYNC_FILE_RANGE_WRITE alone only queues the I/O; durability still comes from the commit's
     * syncfs. Errors (EINVAL on file systems without it) change nothing: ignored. */
    if (st && fd >= 0 && atomic_load(&st->fsync_on))
        (void)sync_file_range(fd, 0, 0, SYNC_FILE_RANGE_WRITE);
}

int store__errno_status(int e)
{
    return e == ENOSPC || e == EDQUOT ? SN_ENOSPC : SN_EIO;
}

int store__is_tmp(const store *st, const char *path)
{
    size_t n = strlen(st->tmp_dir);
    if (strncmp(path, st->tmp_dir, n) != 0 || path[n] != '/')
        return 0;
    const char *name = path + n + 1;
    return *name && !strchr(name, '/') && strcmp(name, ".") && strcmp(name, "..");
}

int store__instance_path(const store *st, const char *sop_uid, store__path *out, char *err,
                         size_t errlen)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    char hex[2 * 32 + 1];
    if (!EVP_Digest(sop_uid, strlen(sop_uid), md, &mdlen, EVP_sha256(), NULL) || mdlen != 32)
        return sn_errf(err, errlen, SN_EINTERNAL, "SHA-256 failed");
    static const char digits[] = "0123456789abcdef";
    for (unsigned i = 0; i < 32; i++) {
        hex[2 * i] = digits[md[i] >> 4];
        hex[2 * i + 1] = digits[md[i] & 15];
    }
    hex[64] = '\0';
    snprintf(out->relpath, sizeof out->relpath, "files/%.2s/%s.dcm", hex, hex);
    snprintf(out->folder, sizeof out->folder, "%s/%.2s", st->files_dir, hex);
    if ((size_t)snprintf(out->abspath, sizeof out->abspath, "%s/%s", st->dir, out->relpath) >=
        sizeof out->abspath)
        return sn_errf(err, errlen, SN_EINVAL, "storage path too long");
    out->stripe = (md[4] | (md[5] << 8)) % STORE__NSTRIPES;
    return SN_OK;
}

int store__rename_in(const store__path *p, const char *from)
{
    if (rename(from, p->abspath) == 0)
        return 0;
    if (errno != ENOENT || access(from, F_OK) != 0)
        return -1;
    /* The folder was removed by hand; the caller's flush makes the new entry durable. */
    if (mkdir(p->folder, 0750) != 0 && errno != EEXIST)
        return -1;
    return rename(from, p->abspath);
}

/* ---- names ------------------------------------------------------------------------------- */

const char *store_series_state_name(store_series_state s)
{
    static const char *const names[STORE_SERIES__COUNT] = {
        "receiving", "stable", "unrouted", "processing", "done", "failed",
    };
    return (unsigned)s < STORE_SERIES__COUNT ? names[s] : "unknown";
}

const char *store_job_state_name(store_job_state s)
{
    static const char *const names[STORE_JOB__COUNT] = {"pending", "running", "done", "failed"};
    return (unsigned)s < STORE_JOB__COUNT ? names[s] : "unknown";
}

const char *store_outbox_state_name(store_outbox_state s)
{
    static const char *const names[STORE_OUTBOX__COUNT] = {"pending", "sending", "sent", "failed"};
    return (unsigned)s < STORE_OUTBOX__COUNT ? names[s] : "unknown";
}
