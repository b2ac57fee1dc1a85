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

/* A series chosen for deletion inside the caller's write transaction. */
typedef struct ret__cand {
    int64_t id, study, bytes;
    char uid[65];
} ret__cand;

/* The statements that delete one series (?1 its id; STUDY/PATIENT: ?1 the study / patient). */
static const char *const ret__sql[] = {
    "SELECT sop_instance_uid, path FROM instances WHERE series_id=?1",
    /* deliveries of its instances not made (pending, failed): nothing left to send them from */
    "DELETE FROM outbox WHERE state IN (0, 3) AND sop_instance_uid IN"
    " (SELECT sop_instance_uid FROM instances WHERE series_id=?1)",
    "DELETE FROM instances WHERE series_id=?1",
    "DELETE FROM series WHERE id=?1",
    "DELETE FROM studies WHERE id=?1 AND NOT EXISTS (SELECT 1 FROM series WHERE study_id=?1)"
    " RETURNING patient_id",
    "DELETE FROM patients WHERE id=?1 AND NOT EXISTS (SELECT 1 FROM studies WHERE patient_id=?1)",
};
enum { RET_LIST, RET_OUTBOX, RET_INSTANCES, RET_SERIES, RET_STUDY, RET_PATIENT, RET_NSQL };

/* The rows of one series, its files collected into `files`; *ninst its instances. */
static int ret__delete_series(sqlite3_stmt *const *s, const ret__cand *c, ret__list *files,
                              int64_t *ninst, const char **what)
{
    int rc;
    int64_t patient = 0;
    *what = "list the instances of a series";
    sqlite3_bind_int64(s[RET_LIST], 1, c->id);
    *ninst = 0;
    while ((rc = sqlite3_step(s[RET_LIST])) == SQLITE_ROW) {
        if (ret__add(files, (const char *)sqlite3_column_text(s[RET_LIST], 0),
                     (const char *)sqlite3_column_text(s[RET_LIST], 1)) != SN_OK)
            return SQLITE_NOMEM;
        (*ninst)++;
    }
    if (rc != SQLITE_DONE)
        return rc;
    *what = "delete a series";
    for (int k = RET_OUTBOX; k <= RET_SERIES; k++) {
        sqlite3_bind_int64(s[k], 1, c->id);
        if ((rc = sqlite3_step(s[k])) != SQLITE_DONE)
            return rc;
    }
    *what = "delete an empty study";
    sqlite3_bind_int64(s[RET_STUDY], 1, c->study);
    if ((rc = sqlite3_step(s[RET_STUDY])) == SQLITE_ROW) {
        patient = sqlite3_column_int64(s[RET_STUDY], 0);
        rc = sqlite3_step(s[RET_STUDY]);
    }
    if (rc != SQLITE_DONE || !patient)
        return rc;
    *what = "delete a patient without studies";
    sqlite3_bind_int64(s[RET_PATIENT], 1, patient);
    return sqlite3_step(s[RET_PATIENT]);
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


/* Inside the caller's write transaction (w_mu held, BEGIN IMMEDIATE run): delete the series
 * cand[0..n), commit, release w_mu, then remove their files. On failure everything is rolled
 * back and w_mu released. `why` goes into the log line of each series. */
static int ret__delete_commit(store *st, const ret__cand *cand, int n, const char *why,
                              store_retention_result *r, char *err, size_t errlen)
{
    sqlite3_stmt *s[RET_NSQL] = {0};
    ret__list files = {0};
    const char *what = "prepare the deletion";
    int rc = SQLITE_OK, status = SN_OK;
    memset(r, 0, sizeof *r);
    for (int k = 0; k < RET_NSQL && rc == SQLITE_OK; k++)
        rc = sqlite3_prepare_v2(st->wdb, ret__sql[k], -1, &s[k], NULL);
    for (int i = 0; i < n && rc == SQLITE_OK; i++) {
        int64_t ninst = 0;
        for (int k = 0; k < RET_NSQL; k++)
            sqlite3_reset(s[k]);
        if ((rc = ret__delete_series(s, &cand[i], &files, &ninst, &what)) != SQLITE_DONE)
            break;
        rc = SQLITE_OK;
        r->series++;
        r->instances += ninst;
        r->bytes += cand[i].bytes;
        SN_LOG_INFO("store", "%s: deleting series %s (%lld instance(s), %lld bytes)", why,
                    cand[i].uid, (long long)ninst, (long long)cand[i].bytes);
    }
    for (int k = 0; k < RET_NSQL; k++)
        sqlite3_finalize(s[k]);
    if (rc != SQLITE_OK)
        status = rc == SQLITE_NOMEM ? sn_errf(err, errlen, SN_ENOMEM, "out of memory")
                                    : store__dberr(st->wdb, rc, what, err, errlen);
    else if (n)
        status = store__exec(st->wdb, "COMMIT", err, errlen);
    if (status != SN_OK || !n) {
        sqlite3_exec(st->wdb, "ROLLBACK", NULL, NULL, NULL); /* nothing written when n is 0 */
        memset(r, 0, sizeof *r);
    }
    pthread_mutex_unlock(&st->w_mu);
    if (status == SN_OK)
        ret__unlink(st, &files);
    ret__free(&files);
    return status;
}

int store_retention(store *st, int64_t before_ms, int max_series, store_retention_result *res,
                    char *err, size_t errlen)
{
    sqlite3_stmt *q = NULL;
    ret__cand *cand = NULL;
    int rc, n = 0, status;
    store_retention_result r;

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
    sqlite3_finalize(q);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
        status = store__dberr(st->wdb, rc, "find series past retention", err, errlen);
        sqlite3_exec(st->wdb, "ROLLBACK", NULL, NULL, NULL);
        pthread_mutex_unlock(&st->w_mu);
    } else {
        status = ret__delete_commit(st, cand, n, "retention", &r, err, errlen);
        if (status == SN_OK && res)
            *res = r;
    }
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
    ret__cand c = {0};
    int rc, status;
    char busy[128] = "";
    store_retention_result r;

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
            c.id = sqlite3_column_int64(q, 0);
            c.study = sqlite3_column_int64(q, 1);
            c.bytes = sqlite3_column_int64(q, 2);
            snprintf(c.uid, sizeof c.uid, "%s", series_uid);
            snprintf(busy, sizeof busy, "%s", b ? b : "");
            rc = SQLITE_DONE;
        }
    }
    sqlite3_finalize(q);
    if (rc != SQLITE_DONE)
        status = store__dberr(st->wdb, rc, "look up the series", err, errlen);
    else if (!c.id)
        status = sn_errf(err, errlen, SN_ENOENT, "no such series %s", series_uid);
    else if (busy[0])
        status = sn_errf(err, errlen, SN_EBUSY, "series %s not deleted: %s", series_uid, busy);
    else {
        status = ret__delete_commit(st, &c, 1, "on request", &r, err, errlen);
        if (status == SN_OK && res)
            *res = r;
        return status;
    }
    sqlite3_exec(st->wdb, "ROLLBACK", NULL, NULL, NULL);
    pthread_mutex_unlock(&st->w_mu);
    return status;
}
