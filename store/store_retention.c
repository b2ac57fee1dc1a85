/* store/store_retention.c — `[node] retention_days`: series the node has finished with are
 * deleted some days after their last instance, so that a node every scanner routes to does not
 * fill its disk and then refuse everyone (the disk watermark).
 *
 * Finished means: state unrouted, done or failed (never receiving, stable or processing); no job
 * of the series pending or running; no outbox row pending or sending for a job of the series or
 * for one of its instances (a SEG still to be delivered). Deleted together, in one write
 * transaction per pass: its instance rows, the series row (its jobs and their outbox rows go with
 * it: foreign keys cascade), and its study and patient when no series / study is left.
 *
 * Files go after the commit: a crash in between leaves unindexed files, never rows without
 * files; `segnode store check --remove-orphans` finds those. Each file is unlinked under its SOP
 * Instance UID's stripe lock, and only when no row names that UID any more: the same instance
 * received again in the meantime (same UID, same path) is held by the commit path under that
 * lock until its row is written, so its new file is never removed.
 *
 * store_series_delete (`segnode series delete UID`) deletes one series the same way at an
 * admin's request, whatever its age and even with jobs pending (they go with it, and so do
 * deliveries of its SEGs not yet made), but not while the node is busy with it. */
#include "store/storeInt.h"

#include "common/log.h"
#include "common/status.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct ret__file {
    char *uid, *path;
} ret__file;

typedef struct ret__list {
    ret__file *v;
    size_t n, cap;
} ret__list;

static void ret__free(ret__list *l)
{
    for (size_t i = 0; i < l->n; i++) {
        free(l->v[i].uid);
        free(l->v[i].path);
    }
    free(l->v);
    memset(l, 0, sizeof *l);
}

static int ret__add(ret__list *l, const char *uid, const char *path)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 256;
        ret__file *v = realloc(l->v, cap * sizeof *v);
        if (!v)
            return SN_ENOMEM;
        l->v = v;
        l->cap = cap;
    }
    ret__file *f = &l->v[l->n];
    f->uid = strdup(uid ? uid : "");
    f->path = strdup(path ? path : "");
    if (!f->uid || !f->path) {
        free(f->uid);
        free(f->path);
        return SN_ENOMEM;
    }
    l->n++;
    return SN_OK;
}

/* Series finished with before `before_ms`, oldest first. ?1 before ?2 limit. */
static const char ret__cand_sql[] =
    "SELECT s.id, s.series_uid, s.study_id, s.bytes FROM series s"
    " WHERE s.state IN (2, 4, 5) AND s.last_received_ms < ?1"
    "  AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.series_id=s.id AND j.state IN (0, 1))"
    "  AND NOT EXISTS (SELECT 1 FROM outbox o JOIN jobs j ON o.job_id=j.id"
    "                  WHERE j.series_id=s.id AND o.state IN (0, 1))"
    "  AND NOT EXISTS (SELECT 1 FROM outbox o JOIN instances i"
    "                  ON i.sop_instance_uid=o.sop_instance_uid"
    "                  WHERE o.state IN (0, 1) AND i.series_id=s.id)"
    " ORDER BY s.last_received_ms LIMIT ?2";

/* Inside the transaction: the rows of one series, its files collected into `files`. */
static int ret__delete_series(store *st, int64_t id, int64_t study, ret__list *files, int64_t *ninst,
                              char *err, size_t errlen)
{
    static const char *const sql[] = {
        "SELECT sop_instance_uid, path FROM instances WHERE series_id=?1",
        /* deliveries of its instances not made (pending, failed): nothing left to send them from */
        "DELETE FROM outbox WHERE state IN (0, 3) AND sop_instance_uid IN"
        " (SELECT sop_instance_uid FROM instances WHERE series_id=?1)",
        "DELETE FROM instances WHERE series_id=?1",
        "DELETE FROM series WHERE id=?1",
        /* ?1 study: the study without series, then its patient without studies */
        "DELETE FROM studies WHERE id=?1 AND NOT EXISTS (SELECT 1 FROM series WHERE study_id=?1)"
        " RETURNING patient_id",
        "DELETE FROM patients WHERE id=?1 AND NOT EXISTS"
        " (SELECT 1 FROM studies WHERE patient_id=?1)",
    };
    enum { LIST, OUTBOX, INSTANCES, SERIES, STUDY, PATIENT, NSQL };
    sqlite3_stmt *s[NSQL] = {0};
    int rc = SQLITE_OK, status = SN_OK;
    int64_t patient = 0;
    const char *what = "prepare retention";
    for (int k = 0; k < NSQL && rc == SQLITE_OK; k++)
        rc = sqlite3_prepare_v2(st->wdb, sql[k], -1, &s[k], NULL);
    if (rc != SQLITE_OK)
        goto dberr;

    what = "list the instances of a series";
    sqlite3_bind_int64(s[LIST], 1, id);
    *ninst = 0;
    while ((rc = sqlite3_step(s[LIST])) == SQLITE_ROW) {
        if (ret__add(files, (const char *)sqlite3_column_text(s[LIST], 0),
                     (const char *)sqlite3_column_text(s[LIST], 1)) != SN_OK) {
            status = sn_errf(err, errlen, SN_ENOMEM, "out of memory");
            goto out;
        }
        (*ninst)++;
    }
    if (rc != SQLITE_DONE)
        goto dberr;
    what = "delete a series";
    sqlite3_bind_int64(s[OUTBOX], 1, id);
    sqlite3_bind_int64(s[INSTANCES], 1, id);
    sqlite3_bind_int64(s[SERIES], 1, id);
    if ((rc = sqlite3_step(s[OUTBOX])) != SQLITE_DONE || (rc = sqlite3_step(s[INSTANCES])) != SQLITE_DONE ||
        (rc = sqlite3_step(s[SERIES])) != SQLITE_DONE)
        goto dberr;
    what = "delete an empty study";
    sqlite3_bind_int64(s[STUDY], 1, study);
    if ((rc = sqlite3_step(s[STUDY])) == SQLITE_ROW) {
        patient = sqlite3_column_int64(s[STUDY], 0);
        rc = sqlite3_step(s[STUDY]);
    }
    if (rc != SQLITE_DONE)
        goto dberr;
    if (patient) {
        what = "delete a patient without studies";
        sqlite3_bind_int64(s[PATIENT], 1, patient);
        if ((rc = sqlite3_step(s[PATIENT])) != SQLITE_DONE)
            goto dberr;
    }
    goto out;
dberr:
    status = store__dberr(st->wdb, rc, what, err, errlen);
out:
    for (int k = 0; k < NSQL; k++)
        sqlite3_finalize(s[k]);
    return status;
}

/* After the commit: each file, unless its UID has a row again. */
static void ret__unlink(store *st, const ret__list *files)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *q = NULL;
    char e[256];
    if (store__reader_get(st, &db, e, sizeof e) != SN_OK ||
        sqlite3_prepare_v2(db, "SELECT 1 FROM instances WHERE sop_instance_uid=?1", -1, &q, NULL) !=
            SQLITE_OK) {
        SN_LOG_ERROR("store", "retention: cannot check the deleted rows (%s); %zu file(s) left for "
                     "`segnode store check --remove-orphans`", db ? sqlite3_errmsg(db) : e, files->n);
        store__reader_put(st, db);
        return;
    }
    for (size_t i = 0; i < files->n; i++) {
        store__path p;
        char path[4096];
        const ret__file *f = &files->v[i];
        int stripe = store__instance_path(st, f->uid, &p, e, sizeof e) == SN_OK ? p.stripe : -1;
        if (stripe >= 0)
            pthread_mutex_lock(&st->stripe[stripe]);
        sqlite3_bind_text(q, 1, f->uid, -1, SQLITE_STATIC);
        int again = sqlite3_step(q) == SQLITE_ROW;
        sqlite3_reset(q);
        snprintf(path, sizeof path, "%s/%s", st->dir, f->path);
        if (!again && unlink(path) != 0 && errno != ENOENT)
            SN_LOG_WARN("store", "retention: cannot remove %s: %s", path, strerror(errno));
        if (stripe >= 0)
            pthread_mutex_unlock(&st->stripe[stripe]);
    }
    sqlite3_finalize(q);
    store__reader_put(st, db);
}

int store_retention(store *st, int64_t before_ms, int max_series, store_retention_result *res,
                    char *err, size_t errlen)
{
    typedef struct { int64_t id, study, bytes; char uid[65]; } cand_t;
    sqlite3_stmt *q = NULL;
    ret__list files = {0};
    cand_t *cand = NULL;
    int rc, n = 0, status;
    store_retention_result r = {0};

    if (res)
        memset(res, 0, sizeof *res);
    if (!st || max_series <= 0)
        return sn_errf(err, errlen, SN_EINVAL, "store_retention: bad arguments");
    if (!(cand = calloc((size_t)max_series, sizeof *cand)))
        return sn_errf(err, errlen, SN_ENOMEM, "out of memory");
    pthread_mutex_lock(&st->w_mu);
    if ((status = store__exec(st->wdb, "BEGIN IMMEDIATE", err, errlen)) != SN_OK) {
        pthread_mutex_unlock(&st->w_mu);
        free(cand);
        return status;
    }
    /* The candidates first, then the deletions (which the open SELECT's subqueries would see). */
    if ((rc = sqlite3_prepare_v2(st->wdb, ret__cand_sql, -1, &q, NULL)) == SQLITE_OK) {
        sqlite3_bind_int64(q, 1, before_ms);
        sqlite3_bind_int(q, 2, max_series);
        while (n < max_series && (rc = sqlite3_step(q)) == SQLITE_ROW) {
            const char *u = (const char *)sqlite3_column_text(q, 1);
            cand[n].id = sqlite3_column_int64(q, 0);
            cand[n].study = sqlite3_column_int64(q, 2);
            cand[n].bytes = sqlite3_column_int64(q, 3);
            snprintf(cand[n].uid, sizeof cand[n].uid, "%s", u ? u : "");
            n++;
        }
    }
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
        status = store__dberr(st->wdb, rc, "find series past retention", err, errlen);
        goto rollback;
    }
    sqlite3_finalize(q);
    q = NULL;
    for (int k = 0; k < n; k++) {
        int64_t ninst = 0;
        if ((status = ret__delete_series(st, cand[k].id, cand[k].study, &files, &ninst, err,
                                         errlen)) != SN_OK)
            goto rollback;
        r.series++;
        r.instances += ninst;
        r.bytes += cand[k].bytes;
        SN_LOG_INFO("store", "retention: deleting series %s (%lld instance(s), %lld bytes)",
                    cand[k].uid, (long long)ninst, (long long)cand[k].bytes);
    }
    if (n && (status = store__exec(st->wdb, "COMMIT", err, errlen)) != SN_OK)
        goto rollback;
    if (!n)
        sqlite3_exec(st->wdb, "ROLLBACK", NULL, NULL, NULL); /* nothing written */
    pthread_mutex_unlock(&st->w_mu);
    ret__unlink(st, &files);
    ret__free(&files);
    free(cand);
    if (res)
        *res = r;
    return SN_OK;
rollback:
    sqlite3_finalize(q);
    sqlite3_exec(st->wdb, "ROLLBACK", NULL, NULL, NULL);
    pthread_mutex_unlock(&st->w_mu);
    ret__free(&files);
    free(cand);
    return status;
}

int store_series_delete(store *st, const char *series_uid, store_retention_result *res, char *err,
                        size_t errlen)
{
    /* ?1 uid: the series, and why the node is busy with it (NULL: it is not) */
    static const char q_sql[] =
        "SELECT s.id, s.study_id, s.bytes, CASE"
        "  WHEN s.state=0 THEN 'it is still receiving instances (wait for it to complete)'"
        "  WHEN EXISTS (SELECT 1 FROM jobs j WHERE j.series_id=s.id AND j.state=1)"
        "   THEN 'a job is running on it'"
        "  WHEN EXISTS (SELECT 1 FROM outbox o JOIN jobs j ON o.job_id=j.id"
        "               WHERE j.series_id=s.id AND o.state=1)"
        "    OR EXISTS (SELECT 1 FROM outbox o JOIN instances i ON i.sop_instance_uid=o.sop_instance_uid"
        "               WHERE o.state=1 AND i.series_id=s.id)"
        "   THEN 'a SEG of it is being sent'"
        "  END FROM series s WHERE s.series_uid=?1";
    sqlite3_stmt *q = NULL;
    ret__list files = {0};
    int rc, status;
    int64_t id = 0, study = 0, bytes = 0, ninst = 0;
    char busy[128] = "";

    if (res)
        memset(res, 0, sizeof *res);
    if (!st || !series_uid)
        return sn_errf(err, errlen, SN_EINVAL, "store_series_delete: bad arguments");
    pthread_mutex_lock(&st->w_mu);
    if ((status = store__exec(st->wdb, "BEGIN IMMEDIATE", err, errlen)) != SN_OK) {
        pthread_mutex_unlock(&st->w_mu);
        return status;
    }
    if ((rc = sqlite3_prepare_v2(st->wdb, q_sql, -1, &q, NULL)) == SQLITE_OK) {
        sqlite3_bind_text(q, 1, series_uid, -1, SQLITE_STATIC);
        if ((rc = sqlite3_step(q)) == SQLITE_ROW) {
            const char *b = (const char *)sqlite3_column_text(q, 3);
            id = sqlite3_column_int64(q, 0);
            study = sqlite3_column_int64(q, 1);
            bytes = sqlite3_column_int64(q, 2);
            snprintf(busy, sizeof busy, "%s", b ? b : "");
            rc = SQLITE_DONE;
        }
    }
    sqlite3_finalize(q);
    if (rc != SQLITE_DONE) {
        status = store__dberr(st->wdb, rc, "look up the series", err, errlen);
        goto rollback;
    }
    if (!id) {
        status = sn_errf(err, errlen, SN_ENOENT, "no such series %s", series_uid);
        goto rollback;
    }
    if (busy[0]) {
        status = sn_errf(err, errlen, SN_EBUSY, "series %s not deleted: %s", series_uid, busy);
        goto rollback;
    }
    if ((status = ret__delete_series(st, id, study, &files, &ninst, err, errlen)) != SN_OK ||
        (status = store__exec(st->wdb, "COMMIT", err, errlen)) != SN_OK)
        goto rollback;
    pthread_mutex_unlock(&st->w_mu);
    SN_LOG_INFO("store", "deleted series %s (%lld instance(s), %lld bytes) on request", series_uid,
                (long long)ninst, (long long)bytes);
    ret__unlink(st, &files);
    ret__free(&files);
    if (res) {
        res->series = 1;
        res->instances = ninst;
        res->bytes = bytes;
    }
    return SN_OK;
rollback:
    sqlite3_exec(st->wdb, "ROLLBACK", NULL, NULL, NULL);
    pthread_mutex_unlock(&st->w_mu);
    ret__free(&files);
    return status;
}
