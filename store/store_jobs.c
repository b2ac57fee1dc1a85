/* store/store_jobs.c — the job worker's side of the job queue: atomic claim with a lease,
 * heartbeat, recovery of runs whose runner died, release at shutdown, timings and device, and
 * the detailed job list (`segnode jobs --json`, /metrics, `segnode status`).
 * Not here: job creation (store_series.c), job end with its SEG and outbox rows
 * (store_outbox.c), the runner itself (tools/segnode/worker.c). */
#include "store/storeInt.h"

#include "common/log.h"
#include "common/status.h"
#include "common/util.h"

#include <stdio.h>
#include <string.h>

static void jobs__text(char *dst, size_t n, sqlite3_stmt *s, int col)
{
    const unsigned char *t = sqlite3_column_text(s, col);
    sn_strlcpy(dst, t ? (const char *)t : "", n);
}

static const char *jobs__str(sqlite3_stmt *s, int col)
{
    return (const char *)sqlite3_column_text(s, col);
}

int store_job_claim(store *st, const char *worker_id, int64_t lease_ms, int64_t now_ms,
                    store_job_claimed *out, char *err, size_t errlen)
{
    sqlite3_stmt *s = NULL;
    int rc, status;
    if (!st || !worker_id || !out)
        return sn_errf(err, errlen, SN_EINVAL, "store_job_claim: bad arguments");
    memset(out, 0, sizeof *out);
    pthread_mutex_lock(&st->w_mu);
    /* BEGIN IMMEDIATE takes the database's write lock first, so the choice and the mark are one
     * atomic step for every thread and every process on this store. */
    if ((status = store__exec(st->wdb, "BEGIN IMMEDIATE", err, errlen)) != SN_OK)
        goto unlock;
    if ((status = store__prepare(st->wdb,
            "UPDATE jobs SET state=?2, attempts=attempts+1, worker=?3, started_ms=?1,"
            " lease_until=?1+?4, updated_ms=?1"
            " WHERE id=(SELECT j.id FROM jobs j JOIN series s ON s.id=j.series_id"
            "   WHERE j.state=?5 AND s.state<>?6"
            "   ORDER BY j.created_ms, s.first_received_ms, j.id LIMIT 1)"
            " RETURNING id, series_id, route, method, coalesce(calling_ae, ''), attempts, created_ms,"
            "  lease_until, coalesce(replaces_job, 0),"
            "  (SELECT series_uid FROM series WHERE id=jobs.series_id),"
            "  (SELECT last_received_ms FROM series WHERE id=jobs.series_id),"
            "  (SELECT coalesce(stable_ms, 0) FROM series WHERE id=jobs.series_id)",
            &s, "claim job", err, errlen)) != SN_OK)
        goto rollback;
    sqlite3_bind_int64(s, 1, now_ms);
    sqlite3_bind_int(s, 2, STORE_JOB_RUNNING);
    sqlite3_bind_text(s, 3, worker_id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 4, lease_ms > 0 ? lease_ms : 30000);
    sqlite3_bind_int(s, 5, STORE_JOB_PENDING);
    sqlite3_bind_int(s, 6, STORE_SERIES_RECEIVING);
    rc = sqlite3_step(s);
    if (rc == SQLITE_DONE) {
        sqlite3_finalize(s);
        s = NULL;
        status = sn_errf(err, errlen, SN_ENOENT, "no job is pending");
        goto rollback;
    }
    if (rc != SQLITE_ROW) {
        status = store__dberr(st->wdb, rc, "claim job", err, errlen);
        goto rollback;
    }
    out->id = sqlite3_column_int64(s, 0);
    out->series_id = sqlite3_column_int64(s, 1);
    jobs__text(out->route, sizeof out->route, s, 2);
    jobs__text(out->method, sizeof out->method, s, 3);
    jobs__text(out->calling_ae, sizeof out->calling_ae, s, 4);
    out->attempts = sqlite3_column_int(s, 5);
    out->created_ms = sqlite3_column_int64(s, 6);
    out->lease_until = sqlite3_column_int64(s, 7);
    out->replaces_job = sqlite3_column_int64(s, 8);
    jobs__text(out->series_uid, sizeof out->series_uid, s, 9);
    out->last_received_ms = sqlite3_column_int64(s, 10);
    out->stable_ms = sqlite3_column_int64(s, 11);
    rc = sqlite3_step(s);
    sqlite3_finalize(s);
    s = NULL;
    if (rc != SQLITE_DONE) {
        status = store__dberr(st->wdb, rc, "claim job", err, errlen);
        goto rollback;
    }
    if ((status = store__prepare(st->wdb,
            "UPDATE series SET state=?2, state_changed_ms=?3 WHERE id=?1 AND state=?4",
            &s, "mark series processing", err, errlen)) != SN_OK)
        goto rollback;
    sqlite3_bind_int64(s, 1, out->series_id);
    sqlite3_bind_int(s, 2, STORE_SERIES_PROCESSING);
    sqlite3_bind_int64(s, 3, now_ms);
    sqlite3_bind_int(s, 4, STORE_SERIES_STABLE);
    status = store__run(st->wdb, s, "mark series processing", err, errlen);
    s = NULL;
    if (status != SN_OK)
        goto rollback;
    if ((status = store__exec(st->wdb, "COMMIT", err, errlen)) != SN_OK)
        goto rollback;
    goto unlock;
rollback:
    sqlite3_finalize(s);
    if (sqlite3_get_autocommit(st->wdb) == 0)
        sqlite3_exec(st->wdb, "ROLLBACK", NULL, NULL, NULL);
unlock:
    pthread_mutex_unlock(&st->w_mu);
    return status;
}

int store_job_heartbeat(store *st, int64_t job_id, const char *worker_id, int64_t lease_ms,
                        int64_t now_ms, char *err, size_t errlen)
{
    sqlite3_stmt *u = NULL;
    int rc;
    if (!st || !worker_id)
        return sn_errf(err, errlen, SN_EINVAL, "store_job_heartbeat: bad arguments");
    pthread_mutex_lock(&st->w_mu);
    if ((rc = store__prepare(st->wdb,
            "UPDATE jobs SET lease_until=?3 WHERE id=?1 AND state=?4 AND worker=?2",
            &u, "renew job lease", err, errlen)) != SN_OK)
        goto out;
    sqlite3_bind_int64(u, 1, job_id);
    sqlite3_bind_text(u, 2, worker_id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(u, 3, now_ms + (lease_ms > 0 ? lease_ms : 30000));
    sqlite3_bind_int(u, 4, STORE_JOB_RUNNING);
    if ((rc = store__run(st->wdb, u, "renew job lease", err, errlen)) == SN_OK && sqlite3_changes(st->wdb) == 0)
        rc = sn_errf(err, errlen, SN_ENOENT, "job %lld is no longer running under %s",
                     (long long)job_id, worker_id);
out:
    pthread_mutex_unlock(&st->w_mu);
    return rc;
}

int store_job_recover(store *st, int64_t now_ms, int max_attempts, int *n_requeued, int *n_failed,
                      char *err, size_t errlen)
{
    sqlite3_stmt *u = NULL;
    int rc, status, nf = 0, nr = 0;
    if (n_requeued)
        *n_requeued = 0;
    if (n_failed)
        *n_failed = 0;
    if (!st)
        return sn_errf(err, errlen, SN_EINVAL, "store_job_recover: bad arguments");
    if (max_attempts < 1)
        max_attempts = 1;
    pthread_mutex_lock(&st->w_mu);
    if ((status = store__exec(st->wdb, "BEGIN IMMEDIATE", err, errlen)) != SN_OK)
        goto unlock;
    /* Out of runs: failed, with the reason. */
    if ((status = store__prepare(st->wdb,
            "UPDATE jobs SET state=?3, lease_until=NULL, updated_ms=?1,"
            " error='gave up after '||attempts||' run(s): the node stopped or crashed while it ran'"
            " WHERE state=?4 AND lease_until<?1 AND attempts>=?2",
            &u, "recover jobs", err, errlen)) != SN_OK)
        goto rollback;
    sqlite3_bind_int64(u, 1, now_ms);
    sqlite3_bind_int(u, 2, max_attempts);
    sqlite3_bind_int(u, 3, STORE_JOB_FAILED);
    sqlite3_bind_int(u, 4, STORE_JOB_RUNNING);
    if ((status = store__run(st->wdb, u, "recover jobs", err, errlen)) != SN_OK)
        goto rollback;
    nf = sqlite3_changes(st->wdb);
    if (nf) {
        /* Their series: failed once none of its jobs is left to run (as store_job_fail). */
        if ((status = store__prepare(st->wdb,
                "UPDATE series SET state=CASE WHEN EXISTS(SELECT 1 FROM jobs j WHERE j.series_id=series.id"
                "  AND j.state=?2) THEN ?3 ELSE ?4 END, state_changed_ms=?1"
                " WHERE state IN (?5, ?6)"
                " AND EXISTS(SELECT 1 FROM jobs j WHERE j.series_id=series.id AND j.state=?2 AND j.updated_ms=?1)"
                " AND NOT EXISTS(SELECT 1 FROM jobs j WHERE j.series_id=series.id AND j.state IN (?7, ?8))",
                &u, "recover jobs", err, errlen)) != SN_OK)
            goto rollback;
        sqlite3_bind_int64(u, 1, now_ms);
        sqlite3_bind_int(u, 2, STORE_JOB_FAILED);
        sqlite3_bind_int(u, 3, STORE_SERIES_FAILED);
        sqlite3_bind_int(u, 4, STORE_SERIES_DONE);
        sqlite3_bind_int(u, 5, STORE_SERIES_STABLE);
        sqlite3_bind_int(u, 6, STORE_SERIES_PROCESSING);
        sqlite3_bind_int(u, 7, STORE_JOB_PENDING);
        sqlite3_bind_int(u, 8, STORE_JOB_RUNNING);
        if ((status = store__run(st->wdb, u, "recover jobs", err, errlen)) != SN_OK)
            goto rollback;
    }
    /* Runs left: pending again; the run that died stays counted in attempts. */
    rc = sqlite3_prepare_v2(st->wdb,
        "UPDATE jobs SET state=?2, lease_until=NULL, worker=NULL, updated_ms=?1,"
        " error='run '||attempts||' was interrupted (the node stopped or crashed); queued again'"
        " WHERE state=?3 AND lease_until<?1", -1, &u, NULL);
    if (rc != SQLITE_OK) {
        status = store__dberr(st->wdb, rc, "recover jobs", err, errlen);
        goto rollback;
    }
    sqlite3_bind_int64(u, 1, now_ms);
    sqlite3_bind_int(u, 2, STORE_JOB_PENDING);
    sqlite3_bind_int(u, 3, STORE_JOB_RUNNING);
    if ((status = store__run(st->wdb, u, "recover jobs", err, errlen)) != SN_OK)
        goto rollback;
    nr = sqlite3_changes(st->wdb);
    if ((status = store__exec(st->wdb, "COMMIT", err, errlen)) != SN_OK)
        goto rollback;
    if (nr)
        SN_LOG_WARN("store", "%d job(s) were running when their runner stopped; queued again", nr);
    if (nf)
        SN_LOG_ERROR("store", "%d job(s) failed: interrupted %d time(s)", nf, max_attempts);
    if (n_requeued)
        *n_requeued = nr;
    if (n_failed)
        *n_failed = nf;
    goto unlock;
rollback:
    if (sqlite3_get_autocommit(st->wdb) == 0)
        sqlite3_exec(st->wdb, "ROLLBACK", NULL, NULL, NULL);
unlock:
    pthread_mutex_unlock(&st->w_mu);
    return status;
}

int store_job_release(store *st, int64_t job_id, const char *worker_id, char *err, size_t errlen)
{
    sqlite3_stmt *u = NULL;
    int rc;
    if (!st || !worker_id)
        return sn_errf(err, errlen, SN_EINVAL, "store_job_release: bad arguments");
    pthread_mutex_lock(&st->w_mu);
    if ((rc = store__prepare(st->wdb,
            "UPDATE jobs SET state=?3, attempts=max(attempts-1, 0), lease_until=NULL,"
            " worker=NULL, updated_ms=?4 WHERE id=?1 AND state=?5 AND worker=?2",
            &u, "release job", err, errlen)) != SN_OK)
        goto out;
    sqlite3_bind_int64(u, 1, job_id);
    sqlite3_bind_text(u, 2, worker_id, -1, SQLITE_STATIC);
    sqlite3_bind_int(u, 3, STORE_JOB_PENDING);
    sqlite3_bind_int64(u, 4, sn_now_ms());
    sqlite3_bind_int(u, 5, STORE_JOB_RUNNING);
    if ((rc = store__run(st->wdb, u, "release job", err, errlen)) == SN_OK && sqlite3_changes(st->wdb) == 0)
        rc = sn_errf(err, errlen, SN_ENOENT, "job %lld is not running under %s", (long long)job_id,
                     worker_id);
out:
    pthread_mutex_unlock(&st->w_mu);
    return rc;
}

/* UPDATE jobs SET <col>=?2 WHERE id=?1. */
static int jobs__set(store *st, int64_t job_id, const char *sql, const char *value, char *err,
                     size_t errlen)
{
    sqlite3_stmt *u = NULL;
    int rc;
    if (!st)
        return sn_errf(err, errlen, SN_EINVAL, "store_job_set: bad arguments");
    pthread_mutex_lock(&st->w_mu);
    if ((rc = store__prepare(st->wdb, sql, &u, "update job", err, errlen)) != SN_OK)
        goto out;
    sqlite3_bind_int64(u, 1, job_id);
    store__bind_str(u, 2, value);
    if ((rc = store__run(st->wdb, u, "update job", err, errlen)) == SN_OK && sqlite3_changes(st->wdb) == 0)
        rc = sn_errf(err, errlen, SN_ENOENT, "no job %lld", (long long)job_id);
out:
    pthread_mutex_unlock(&st->w_mu);
    return rc;
}

int store_job_set_timings(store *st, int64_t job_id, const char *timings_json, char *err, size_t errlen)
{
    return jobs__set(st, job_id, "UPDATE jobs SET timings=?2 WHERE id=?1", timings_json, err, errlen);
}

int store_job_set_device(store *st, int64_t job_id, const char *device, char *err, size_t errlen)
{
    if (!device)
        return SN_OK;
    return jobs__set(st, job_id, "UPDATE jobs SET device=?2 WHERE id=?1", device, err, errlen);
}

int store_job_list_detail(store *st, int64_t job_id, int state_filter, store_job_detail_cb cb,
                          void *ctx, char *err, size_t errlen)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *s = NULL;
    int rc, status;
    if (!st || !cb)
        return sn_errf(err, errlen, SN_EINVAL, "store_job_list_detail: bad arguments");
    if ((status = store__reader_get(st, &db, err, errlen)) != SN_OK)
        return status;
    /* send_ms: from the job's end (updated_ms of a done job) to its last row sent. */
    if ((status = store__prepare(db,
            "SELECT j.id, j.series_id, s.series_uid, j.route, j.method, j.error, j.calling_ae, j.state,"
            " j.attempts, j.created_ms, j.updated_ms, j.timings, j.device, j.worker,"
            " coalesce(j.started_ms, 0), coalesce(j.lease_until, 0), coalesce(j.replaces_job, 0),"
            " CASE WHEN j.state=2 THEN (SELECT max(o.sent_ms) FROM outbox o WHERE o.job_id=j.id"
            "   AND o.state=2) - j.updated_ms END,"
            " s.last_received_ms, coalesce(s.stable_ms, 0)"
            " FROM jobs j JOIN series s ON s.id=j.series_id"
            " WHERE (?1 < 0 OR j.id=?1) AND (?2 < 0 OR j.state=?2) ORDER BY j.id DESC",
            &s, "list jobs", err, errlen)) != SN_OK)
        goto out;
    sqlite3_bind_int64(s, 1, job_id);
    sqlite3_bind_int(s, 2, state_filter);
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        store_job_detail d;
        memset(&d, 0, sizeof d);
        d.job.id = sqlite3_column_int64(s, 0);
        d.job.series_id = sqlite3_column_int64(s, 1);
        d.job.series_uid = jobs__str(s, 2);
        d.job.route = jobs__str(s, 3);
        d.job.method = jobs__str(s, 4);
        d.job.error = jobs__str(s, 5);
        d.job.calling_ae = jobs__str(s, 6);
        d.job.state = (store_job_state)sqlite3_column_int(s, 7);
        d.job.attempts = sqlite3_column_int(s, 8);
        d.job.created_ms = sqlite3_column_int64(s, 9);
        d.job.updated_ms = sqlite3_column_int64(s, 10);
        d.timings = jobs__str(s, 11);
        d.device = jobs__str(s, 12);
        d.worker = jobs__str(s, 13);
        d.started_ms = sqlite3_column_int64(s, 14);
        d.lease_until = sqlite3_column_int64(s, 15);
        d.replaces_job = sqlite3_column_int64(s, 16);
        d.send_ms = sqlite3_column_type(s, 17) == SQLITE_NULL ? -1 : sqlite3_column_int64(s, 17);
        if (d.send_ms < -1)
            d.send_ms = 0;
        d.last_received_ms = sqlite3_column_int64(s, 18);
        d.stable_ms = sqlite3_column_int64(s, 19);
        if (cb(ctx, &d)) {
            rc = SQLITE_DONE;
            break;
        }
    }
    if (rc != SQLITE_DONE)
        status = store__dberr(db, rc, "list jobs", err, errlen);
out:
    sqlite3_finalize(s);
    store__reader_put(st, db);
    return status;
}
