/* store/store_series.c — the series state machine's transitions out of `receiving` (sweeper and
 * association release), job creation from routes, routing a complete series again (an admin's
 * `segnode series route`), and job retry.
 *
 * Routing: routes are tried in file order; every route that matches gets one job; matching stops
 * at the first match unless that route has continue_matching. No match: the series is unrouted.
 * Quiet period: the first matching route's stable_after when it sets one (>= 0), else the
 * node's stable_after — also when several routes match (later routes cannot shorten or extend
 * it) and when none matches.
 * Not here: the ingest that moves a series back to `receiving` (store_commit.c). */
#include "store/storeInt.h"

#include "common/log.h"
#include "common/status.h"
#include "common/util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct series__cand {
    int64_t id, last_ms;
    char *uid, *modality, *body_part, *description, *source_ae, *image_type;
} series__cand;

static void series__cand_free(series__cand *c)
{
    free(c->uid);
    free(c->modality);
    free(c->body_part);
    free(c->description);
    free(c->source_ae);
    free(c->image_type);
}

static char *series__dup(sqlite3_stmt *s, int col)
{
    const unsigned char *t = sqlite3_column_text(s, col);
    return t ? strdup((const char *)t) : NULL;
}

/* Candidate columns, shared by the sweeper and series_complete. */
#define SERIES__CAND_COLS \
    "id, series_uid, modality, body_part, description, source_ae, image_type, last_received_ms"

static int series__cand_read(sqlite3_stmt *s, series__cand *c)
{
    memset(c, 0, sizeof *c);
    c->id = sqlite3_column_int64(s, 0);
    c->uid = series__dup(s, 1);
    c->modality = series__dup(s, 2);
    c->body_part = series__dup(s, 3);
    c->description = series__dup(s, 4);
    c->source_ae = series__dup(s, 5);
    c->image_type = series__dup(s, 6);
    c->last_ms = sqlite3_column_int64(s, 7);
    if (!c->uid) {
        series__cand_free(c);
        return SN_ENOMEM;
    }
    return SN_OK;
}

/* Matching routes (indices into cfg->routes) and the quiet period in seconds. */
static int series__match(const sn_config *cfg, const series__cand *c, int *idx, int *quiet_s)
{
    sn_series_attrs a = {
        .modality = c->modality, .body_part = c->body_part, .series_description = c->description,
        .calling_ae = c->source_ae, .image_type = c->image_type,
    };
    int n = 0;
    for (int i = 0; i < cfg->nroutes; i++) {
        if (!sn_route_matches(&cfg->routes[i], &a))
            continue;
        idx[n++] = i;
        if (!cfg->routes[i].continue_matching)
            break;
    }
    *quiet_s = n && cfg->routes[idx[0]].stable_after >= 0 ? cfg->routes[idx[0]].stable_after
                                                         : cfg->node.stable_after;
    return n;
}

/* Inside the caller's write transaction: one pending job per route idx[0..n) for `c`, their
 * names comma-joined into routes[cap]. With skip_queued, a route that already has a pending or
 * running job for the series gets none (counted in *skipped). *created = jobs inserted. */
static int series__add_jobs(store *st, const sn_config *cfg, const series__cand *c, const int *idx, int n,
                            int64_t now_ms, int skip_queued, char *routes, size_t cap, int *created,
                            int *skipped, char *err, size_t errlen)
{
    sqlite3_stmt *ins = NULL, *dup = NULL;
    size_t len = 0;
    int rc, status = SN_OK;
    routes[0] = '\0';
    *created = *skipped = 0;
    if ((status = store__prepare(st->wdb,
            "INSERT INTO jobs(series_id, route, method, state, attempts, calling_ae,"
            " created_ms, updated_ms) VALUES(?1, ?2, ?3, 0, 0, ?4, ?5, ?5)",
            &ins, "prepare job creation", err, errlen)) != SN_OK)
        goto out;
    if (skip_queued && (status = store__prepare(st->wdb,
            "SELECT 1 FROM jobs WHERE series_id=?1 AND route=?2 AND state IN (0, 1)",
            &dup, "prepare job creation", err, errlen)) != SN_OK)
        goto out;
    for (int k = 0; k < n; k++) {
        const sn_route *r = &cfg->routes[idx[k]];
        if (dup) {
            sqlite3_bind_int64(dup, 1, c->id);
            sqlite3_bind_text(dup, 2, r->name, -1, SQLITE_STATIC);
            rc = sqlite3_step(dup);
            sqlite3_reset(dup);
            if (rc == SQLITE_ROW) {
                (*skipped)++;
                continue;
            }
            if (rc != SQLITE_DONE) {
                status = store__dberr(st->wdb, rc, "find queued jobs", err, errlen);
                goto out;
            }
        }
        sqlite3_bind_int64(ins, 1, c->id);
        sqlite3_bind_text(ins, 2, r->name, -1, SQLITE_STATIC);
        sqlite3_bind_text(ins, 3, sn_method_name(r->method), -1, SQLITE_STATIC);
        store__bind_str(ins, 4, c->source_ae);
        sqlite3_bind_int64(ins, 5, now_ms);
        if ((rc = sqlite3_step(ins)) != SQLITE_DONE) {
            status = store__dberr(st->wdb, rc, "create job", err, errlen);
            goto out;
        }
        sqlite3_reset(ins);
        len += (size_t)snprintf(routes + len, cap - len, "%s%s", *created ? "," : "", r->name);
        (*created)++;
    }
out:
    sqlite3_finalize(ins);
    sqlite3_finalize(dup);
    return status;
}

/* Inside the caller's write transaction: jobs for `c`, then its new state. */
static int series__finish(store *st, const sn_config *cfg, const series__cand *c, const int *idx,
                          int n, int64_t now_ms, char *err, size_t errlen)
{
    sqlite3_stmt *upd = NULL;
    char *routes = NULL;
    size_t cap = (size_t)n * (SN_NAME_MAX + 1) + 1;
    int rc, status, created, skipped;

    if (!(routes = malloc(cap)))
        return sn_errf(err, errlen, SN_ENOMEM, "out of memory");
    status = series__add_jobs(st, cfg, c, idx, n, now_ms, 0, routes, cap, &created, &skipped, err, errlen);
    if (status != SN_OK)
        goto out;
    if ((status = store__prepare(st->wdb,
            "UPDATE series SET state=?2, routes=?3, stable_ms=?4, state_changed_ms=?4"
            " WHERE id=?1 AND state=0",
            &upd, "prepare series completion", err, errlen)) != SN_OK)
        goto out;
    sqlite3_bind_int64(upd, 1, c->id);
    sqlite3_bind_int(upd, 2, n ? STORE_SERIES_STABLE : STORE_SERIES_UNROUTED);
    store__bind_str(upd, 3, routes);
    sqlite3_bind_int64(upd, 4, now_ms);
    if ((rc = sqlite3_step(upd)) != SQLITE_DONE)
        status = store__dberr(st->wdb, rc, "update series state", err, errlen);
    else if (n)
        SN_LOG_INFO("store", "series %s stable: %d job(s) (%s)", c->uid, n, routes);
    else
        SN_LOG_INFO("store", "series %s complete, no route matched: unrouted", c->uid);
out:
    sqlite3_finalize(upd);
    free(routes);
    return status;
}

/* Inside the caller's write transaction: series `uid` as a routing candidate (free with
 * series__cand_free) and its state. SN_ENOENT (said in err) when there is none. */
static int series__find(store *st, const char *uid, series__cand *c, int *state, char *err, size_t errlen)
{
    sqlite3_stmt *q = NULL;
    int status, rc = sqlite3_prepare_v2(st->wdb, "SELECT " SERIES__CAND_COLS ", state FROM series WHERE series_uid=?1",
                                        -1, &q, NULL);
    if (rc != SQLITE_OK)
        return store__dberr(st->wdb, rc, "find series", err, errlen);
    sqlite3_bind_text(q, 1, uid, -1, SQLITE_STATIC);
    rc = sqlite3_step(q);
    if (rc == SQLITE_ROW) {
        *state = sqlite3_column_int(q, 8);
        if ((status = series__cand_read(q, c)) != SN_OK)
            sn_errf(err, errlen, status, "out of memory");
    } else if (rc == SQLITE_DONE) {
        status = sn_errf(err, errlen, SN_ENOENT, "no series %s", uid);
    } else {
        status = store__dberr(st->wdb, rc, "find series", err, errlen);
    }
    sqlite3_finalize(q);
    return status;
}

int store_series_complete(store *st, const char *series_uid, const sn_config *cfg,
                          char *err, size_t errlen)
{
    series__cand c;
    int status, state = -1, quiet, n, *idx = NULL;

    if (!st || !series_uid || !cfg)
        return sn_errf(err, errlen, SN_EINVAL, "store_series_complete: bad arguments");
    if (!(idx = malloc(sizeof *idx * (size_t)(cfg->nroutes + 1))))
        return sn_errf(err, errlen, SN_ENOMEM, "out of memory");

    pthread_mutex_lock(&st->w_mu);
    if ((status = store__exec(st->wdb, "BEGIN IMMEDIATE", err, errlen)) != SN_OK)
        goto unlock;
    if ((status = series__find(st, series_uid, &c, &state, err, errlen)) != SN_OK)
        goto err;
    if (state == STORE_SERIES_RECEIVING) {
        n = series__match(cfg, &c, idx, &quiet);
        status = series__finish(st, cfg, &c, idx, n, sn_now_ms(), err, errlen);
    }
    series__cand_free(&c);
    if (status != SN_OK || (status = store__exec(st->wdb, "COMMIT", err, errlen)) != SN_OK)
        goto err;
    goto unlock;
err:
    sqlite3_exec(st->wdb, "ROLLBACK", NULL, NULL, NULL);
unlock:
    pthread_mutex_unlock(&st->w_mu);
    free(idx);
    return status;
}

int store_sweep(store *st, const sn_config *cfg, int64_t now_ms, int *n_completed,
                char *err, size_t errlen)
{
    sqlite3_stmt *q = NULL;
    series__cand *cand = NULL;
    int ncand = 0, capc = 0, rc, status = SN_OK, done = 0, *idx = NULL, in_txn = 0;

    if (n_completed)
        *n_completed = 0;
    if (!st || !cfg)
        return sn_errf(err, errlen, SN_EINVAL, "store_sweep: bad arguments");
    if (!(idx = malloc(sizeof *idx * (size_t)(cfg->nroutes + 1))))
        return sn_errf(err, errlen, SN_ENOMEM, "out of memory");

    /* The shortest quiet period any series could have bounds what needs to be looked at. */
    int64_t min_quiet = cfg->node.stable_after;
    for (int i = 0; i < cfg->nroutes; i++)
        if (cfg->routes[i].stable_after >= 0 && cfg->routes[i].stable_after < min_quiet)
            min_quiet = cfg->routes[i].stable_after;
    if (min_quiet < 0)
        min_quiet = 0;

    pthread_mutex_lock(&st->w_mu);
    if ((status = store__prepare(st->wdb,
            "SELECT " SERIES__CAND_COLS " FROM series"
            " WHERE state=0 AND last_received_ms<=?1",
            &q, "sweep", err, errlen)) != SN_OK)
        goto out;
    sqlite3_bind_int64(q, 1, now_ms - min_quiet * 1000);
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
        if (ncand == capc) {
            int nc = capc ? capc * 2 : 16;
            series__cand *p = realloc(cand, sizeof *cand * (size_t)nc);
            if (!p) {
                status = sn_errf(err, errlen, SN_ENOMEM, "out of memory");
                goto out;
            }
            cand = p;
            capc = nc;
        }
        if ((status = series__cand_read(q, &cand[ncand])) != SN_OK) {
            sn_errf(err, errlen, status, "out of memory");
            goto out;
        }
        ncand++;
    }
    if (rc != SQLITE_DONE) {
        status = store__dberr(st->wdb, rc, "sweep", err, errlen);
        goto out;
    }
    sqlite3_finalize(q);
    q = NULL;

    for (int i = 0; i < ncand; i++) {
        int quiet, n = series__match(cfg, &cand[i], idx, &quiet);
        if (now_ms - cand[i].last_ms < (int64_t)quiet * 1000)
            continue;
        if (!in_txn) {
            /* Only a sweep that changes something pays for a transaction (and its fsync). */
            if ((status = store__exec(st->wdb, "BEGIN IMMEDIATE", err, errlen)) != SN_OK)
                goto out;
            in_txn = 1;
        }
        if ((status = series__finish(st, cfg, &cand[i], idx, n, now_ms, err, errlen)) != SN_OK)
            goto out;
        done++;
    }
    if (in_txn) {
        if ((status = store__exec(st->wdb, "COMMIT", err, errlen)) != SN_OK)
            goto out;
        in_txn = 0;
    }
    if (n_completed)
        *n_completed = done;
out:
    sqlite3_finalize(q);
    if (in_txn)
        sqlite3_exec(st->wdb, "ROLLBACK", NULL, NULL, NULL);
    pthread_mutex_unlock(&st->w_mu);
    for (int i = 0; i < ncand; i++)
        series__cand_free(&cand[i]);
    free(cand);
    free(idx);
    return status;
}

int store_job_retry(store *st, int64_t job_id, char *err, size_t errlen)
{
    sqlite3_stmt *q = NULL;
    int rc, status, state;
    int64_t series_id, now = sn_now_ms();

    if (!st)
        return sn_errf(err, errlen, SN_EINVAL, "store_job_retry: bad arguments");
    pthread_mutex_lock(&st->w_mu);
    if ((status = store__exec(st->wdb, "BEGIN IMMEDIATE", err, errlen)) != SN_OK)
        goto unlock;
    if ((status = store__prepare(st->wdb,
            "SELECT state, series_id FROM jobs WHERE id=?1",
            &q, "find job", err, errlen)) != SN_OK)
        goto err;
    sqlite3_bind_int64(q, 1, job_id);
    rc = sqlite3_step(q);
    if (rc == SQLITE_DONE) {
        status = sn_errf(err, errlen, SN_ENOENT, "no job %lld", (long long)job_id);
        goto err;
    }
    if (rc != SQLITE_ROW) {
        status = store__dberr(st->wdb, rc, "find job", err, errlen);
        goto err;
    }
    state = sqlite3_column_int(q, 0);
    series_id = sqlite3_column_int64(q, 1);
    sqlite3_finalize(q);
    q = NULL;
    if (state != STORE_JOB_FAILED && state != STORE_JOB_DONE) {
        status = sn_errf(err, errlen, SN_EINVAL, "job %lld is %s; only failed or done jobs can be retried",
                         (long long)job_id, store_job_state_name((store_job_state)state));
        goto err;
    }
    /* Attempts are kept (history); the error and any lease are cleared. */
    rc = sqlite3_prepare_v2(st->wdb,
                            "UPDATE jobs SET state=0, error=NULL, lease_until=NULL, updated_ms=?2"
                            " WHERE id=?1", -1, &q, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_bind_int64(q, 1, job_id);
        sqlite3_bind_int64(q, 2, now);
        rc = sqlite3_step(q);
    }
    sqlite3_finalize(q);
    q = NULL;
    if (rc != SQLITE_DONE) {
        status = store__dberr(st->wdb, rc, "retry job", err, errlen);
        goto err;
    }
    /* A finished or failed series has work again. */
    rc = sqlite3_prepare_v2(st->wdb,
                            "UPDATE series SET state=?2, state_changed_ms=?3"
                            " WHERE id=?1 AND state IN (?4, ?5)", -1, &q, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_bind_int64(q, 1, series_id);
        sqlite3_bind_int(q, 2, STORE_SERIES_STABLE);
        sqlite3_bind_int64(q, 3, now);
        sqlite3_bind_int(q, 4, STORE_SERIES_DONE);
        sqlite3_bind_int(q, 5, STORE_SERIES_FAILED);
        rc = sqlite3_step(q);
    }
    sqlite3_finalize(q);
    q = NULL;
    if (rc != SQLITE_DONE) {
        status = store__dberr(st->wdb, rc, "retry job", err, errlen);
        goto err;
    }
    if ((status = store__exec(st->wdb, "COMMIT", err, errlen)) != SN_OK)
        goto err;
    goto unlock;
err:
    sqlite3_finalize(q);
    sqlite3_exec(st->wdb, "ROLLBACK", NULL, NULL, NULL);
unlock:
    pthread_mutex_unlock(&st->w_mu);
    return status;
}

int store_series_route(store *st, const char *series_uid, const sn_config *cfg, const char *route,
                       int *n_created, int *n_skipped, char *err, size_t errlen)
{
    sqlite3_stmt *upd = NULL;
    series__cand c;
    int rc, status, have = 0, state = -1, quiet, n = 0, created = 0, skipped = 0, *idx = NULL;
    char *routes = NULL;
    size_t cap = 0;

    if (n_created)
        *n_created = 0;
    if (n_skipped)
        *n_skipped = 0;
    if (!st || !series_uid || !cfg)
        return sn_errf(err, errlen, SN_EINVAL, "store_series_route: bad arguments");
    cap = (size_t)(cfg->nroutes + 1) * (SN_NAME_MAX + 1) + 1;
    idx = malloc(sizeof *idx * (size_t)(cfg->nroutes + 1));
    routes = malloc(cap);
    if (!idx || !routes) {
        free(idx);
        free(routes);
        return sn_errf(err, errlen, SN_ENOMEM, "out of memory");
    }
    if (route) {
        for (int i = 0; i < cfg->nroutes && !n; i++)
            if (strcmp(cfg->routes[i].name, route) == 0)
                idx[n++] = i;
        if (!n) {
            free(idx);
            free(routes);
            return sn_errf(err, errlen, SN_ENOENT, "no [route %s] in the config", route);
        }
    }

    pthread_mutex_lock(&st->w_mu);
    if ((status = store__exec(st->wdb, "BEGIN IMMEDIATE", err, errlen)) != SN_OK)
        goto unlock;
    if ((status = series__find(st, series_uid, &c, &state, err, errlen)) != SN_OK)
        goto err;
    have = 1;
    if (state == STORE_SERIES_RECEIVING) {
        status = sn_errf(err, errlen, SN_EBUSY,
                         "series %s is still receiving; its routes are chosen when it is complete", series_uid);
        goto err;
    }
    if (!route)
        n = series__match(cfg, &c, idx, &quiet);
    int64_t now = sn_now_ms();
    status = series__add_jobs(st, cfg, &c, idx, n, now, 1, routes, cap, &created, &skipped, err, errlen);
    if (status != SN_OK)
        goto err;
    if (created) {
        /* new pending jobs: the series is stable again until the worker takes them */
        rc = sqlite3_prepare_v2(st->wdb, "UPDATE series SET state=?2, routes=?3, state_changed_ms=?4 WHERE id=?1",
                                -1, &upd, NULL);
        if (rc == SQLITE_OK) {
            sqlite3_bind_int64(upd, 1, c.id);
            sqlite3_bind_int(upd, 2, STORE_SERIES_STABLE);
            sqlite3_bind_text(upd, 3, routes, -1, SQLITE_STATIC);
            sqlite3_bind_int64(upd, 4, now);
            rc = sqlite3_step(upd);
        }
        if (rc != SQLITE_DONE) {
            status = store__dberr(st->wdb, rc, "update series state", err, errlen);
            goto err;
        }
        sqlite3_finalize(upd);
        upd = NULL;
    }
    if ((status = store__exec(st->wdb, "COMMIT", err, errlen)) != SN_OK)
        goto err;
    if (created)
        SN_LOG_INFO("store", "series %s routed again: %d job(s) (%s)", series_uid, created, routes);
    if (n_created)
        *n_created = created;
    if (n_skipped)
        *n_skipped = skipped;
    goto unlock;
err:
    sqlite3_finalize(upd);
    sqlite3_exec(st->wdb, "ROLLBACK", NULL, NULL, NULL);
unlock:
    pthread_mutex_unlock(&st->w_mu);
    if (have)
        series__cand_free(&c);
    free(idx);
    free(routes);
    return status;
}
