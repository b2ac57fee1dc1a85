/* store/store_outbox.c — the end of a job and the outbox: store_job_finish commits the job's SEG
 * like a received instance and queues one outbox row per destination in the same transaction;
 * store_job_fail; and the outbox rows' life (claim, complete with backoff decided by the
 * caller, recovery after a crash, retry, lists and per-peer figures for admins).
 * Why at-least-once is right here, and why a peer never gets a file twice at the same time: see
 * the note above store_job_finish in store.h.
 * Not here: sending (tools/segnode/outbox.c, over scp.h's SCU), the ingest path
 * (store_commit.c), job creation (store_series.c). */
#include "store/storeInt.h"

#include "common/log.h"
#include "common/status.h"
#include "common/util.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#define OUTBOX__COLS                                                                             \
    "id, coalesce(job_id, 0), peer, path, coalesce(sop_instance_uid, ''), state, attempts,"      \
    " next_attempt_ms, coalesce(dimse_status, 65535), coalesce(last_error, ''), created_ms,"    \
    " updated_ms, coalesce(sent_ms, 0)"

static void outbox__text(char *dst, size_t n, sqlite3_stmt *s, int col)
{
    const unsigned char *t = sqlite3_column_text(s, col);
    sn_strlcpy(dst, t ? (const char *)t : "", n);
}

static void outbox__row_read(const store *st, sqlite3_stmt *s, store_outbox_row *r)
{
    char rel[2048];
    memset(r, 0, sizeof *r);
    r->id = sqlite3_column_int64(s, 0);
    r->job_id = sqlite3_column_int64(s, 1);
    outbox__text(r->peer, sizeof r->peer, s, 2);
    outbox__text(rel, sizeof rel, s, 3);
    if (rel[0] == '/')
        sn_strlcpy(r->path, rel, sizeof r->path);
    else
        snprintf(r->path, sizeof r->path, "%s/%s", st->dir, rel);
    outbox__text(r->sop_instance_uid, sizeof r->sop_instance_uid, s, 4);
    r->state = (store_outbox_state)sqlite3_column_int(s, 5);
    r->attempts = sqlite3_column_int(s, 6);
    r->next_attempt_ms = sqlite3_column_int64(s, 7);
    r->dimse_status = (unsigned)sqlite3_column_int(s, 8);
    outbox__text(r->last_error, sizeof r->last_error, s, 9);
    r->created_ms = sqlite3_column_int64(s, 10);
    r->updated_ms = sqlite3_column_int64(s, 11);
    r->sent_ms = sqlite3_column_int64(s, 12);
}

int64_t store_outbox_backoff_ms(int attempts, int64_t base_ms, int64_t cap_ms)
{
    if (base_ms <= 0)
        return 0;
    if (cap_ms < base_ms)
        cap_ms = base_ms;
    int64_t d = base_ms;
    for (int i = 1; i < attempts && d < cap_ms; i++)
        d = d > cap_ms / 2 ? cap_ms : d * 2;
    return d < cap_ms ? d : cap_ms;
}

/* ---- the SEG file (the same layout and durability rules as store_commit.c) ---------------- */

typedef struct finish__file {
    store__path p;
    int64_t size;
    int stripe;                        /* held from put to the end of the index transaction */
    int existed;                       /* replaced a stored file */
} finish__file;

/* The index transaction failed after the rename: a new file is unlinked (nothing references
 * it); a replaced one stays (the old row points at the new bytes of the same SOP Instance). */
static void finish__file_undo(const finish__file *f)
{
    if (f->existed) {
        SN_LOG_WARN("store", "finishing a job failed after replacing %s; the old row stays", f->p.abspath);
        return;
    }
    if (unlink(f->p.abspath) != 0 && errno != ENOENT)
        SN_LOG_WARN("store", "cannot remove unindexed %s: %s", f->p.abspath, strerror(errno));
}

/* Move the temp file to files/aa/<sha256(uid)>.dcm durably; on success the stripe lock of
 * the UID is held (released by finish__file_done). On failure the temp file is gone. */
static int finish__file_put(store *st, const char *tmp_path, const char *sop_uid, finish__file *f,
                            char *err, size_t errlen)
{
    struct stat sb;
    int rc, fd = -1, do_fsync = atomic_load(&st->fsync_on);

    f->stripe = -1;
    fd = open(tmp_path, O_RDONLY | O_CLOEXEC);
    if (fd < 0 || fstat(fd, &sb) != 0) {
        int e = errno;
        rc = sn_errf(err, errlen, e == ENOENT ? SN_ENOENT : SN_EIO, "open %s: %s", tmp_path, strerror(e));
        goto err;
    }
    if (!S_ISREG(sb.st_mode) || sb.st_size == 0) {
        rc = sn_errf(err, errlen, SN_EINVAL, "%s is empty or not a regular file", tmp_path);
        goto err;
    }
    f->size = (int64_t)sb.st_size;
    if ((rc = store__instance_path(st, sop_uid, &f->p, err, errlen)) != SN_OK)
        goto err;
    /* The same stripe as store_instance_commit uses for this UID. */
    f->stripe = f->p.stripe;
    pthread_mutex_lock(&st->stripe[f->stripe]);
    f->existed = lstat(f->p.abspath, &sb) == 0;
    /* Written by us, never acknowledged to anyone yet: fsync before the rename in any case, so
     * the name never points at bytes that are not on disk. */
    if (do_fsync && (rc = sn_fsync_fd(fd, tmp_path, err, errlen)) != SN_OK)
        goto err_locked;
    if (store__rename_in(&f->p, tmp_path) != 0) {
        int e = errno;
        rc = sn_errf(err, errlen, store__errno_status(e), "rename %s -> %s: %s", tmp_path,
                     f->p.abspath, strerror(e));
        goto err_locked;
    }
    close(fd);
    /* files/ too, in case store__rename_in had to make the folder again. */
    if (do_fsync && ((rc = sn_fsync_dir(f->p.folder, err, errlen)) != SN_OK ||
                     (rc = sn_fsync_dir(st->files_dir, err, errlen)) != SN_OK)) {
        finish__file_undo(f);
        pthread_mutex_unlock(&st->stripe[f->stripe]);
        f->stripe = -1;
        return rc;
    }
    return SN_OK;
err_locked:
    pthread_mutex_unlock(&st->stripe[f->stripe]);
    f->stripe = -1;
err:
    if (fd >= 0)
        close(fd);
    unlink(tmp_path);
    return rc;
}

/* ---- indexing the SEG (inside the caller's transaction, on the writer's statements) -------- */

/* The SEG is indexed exactly as an ingested instance is (store__index_instance). */
static int finish__index(store *st, const store_instance_meta *m, const finish__file *f, int64_t now,
                         int64_t *series_out, char *err, size_t errlen)
{
    store_commit_result res;
    int rc = store__index_instance(st, m, f->p.relpath, f->size, now, &res, err, errlen);
    if (rc == SN_OK)
        *series_out = res.series_id;
    return rc;
}

/* ---- job end -------------------------------------------------------------------------------- */

typedef struct finish__job {
    int64_t series_id;
    int state;
    char route[SN_NAME_MAX + 1];
    char calling_ae[SN_AE_MAX + 1];
} finish__job;

static int finish__job_get(store *st, int64_t job_id, finish__job *j, char *err, size_t errlen)
{
    sqlite3_stmt *q = NULL;
    int rc = sqlite3_prepare_v2(st->wdb,
                                "SELECT series_id, state, route, coalesce(calling_ae, '') FROM jobs"
                                " WHERE id=?1", -1, &q, NULL);
    if (rc != SQLITE_OK)
        return store__dberr(st->wdb, rc, "find job", err, errlen);
    sqlite3_bind_int64(q, 1, job_id);
    rc = sqlite3_step(q);
    if (rc == SQLITE_ROW) {
        j->series_id = sqlite3_column_int64(q, 0);
        j->state = sqlite3_column_int(q, 1);
        outbox__text(j->route, sizeof j->route, q, 2);
        outbox__text(j->calling_ae, sizeof j->calling_ae, q, 3);
        sqlite3_finalize(q);
        return SN_OK;
    }
    sqlite3_finalize(q);
    if (rc == SQLITE_DONE)
        return sn_errf(err, errlen, SN_ENOENT, "no job %lld", (long long)job_id);
    return store__dberr(st->wdb, rc, "find job", err, errlen);
}

/* The source series is done (or failed) once none of its jobs is left to run. */
static int finish__source_series(store *st, int64_t series_id, int64_t now, char *err, size_t errlen)
{
    sqlite3_stmt *u = NULL;
    int rc = sqlite3_prepare_v2(st->wdb,
        "UPDATE series SET state=CASE WHEN EXISTS(SELECT 1 FROM jobs WHERE series_id=?1 AND state=?3)"
        "  THEN ?5 ELSE ?4 END, state_changed_ms=?2"
        " WHERE id=?1 AND state IN (?6, ?7)"
        " AND NOT EXISTS(SELECT 1 FROM jobs WHERE series_id=?1 AND state IN (?8, ?9))", -1, &u, NULL);
    if (rc != SQLITE_OK)
        return store__dberr(st->wdb, rc, "update series state", err, errlen);
    sqlite3_bind_int64(u, 1, series_id);
    sqlite3_bind_int64(u, 2, now);
    sqlite3_bind_int(u, 3, STORE_JOB_FAILED);
    sqlite3_bind_int(u, 4, STORE_SERIES_DONE);
    sqlite3_bind_int(u, 5, STORE_SERIES_FAILED);
    sqlite3_bind_int(u, 6, STORE_SERIES_STABLE);
    sqlite3_bind_int(u, 7, STORE_SERIES_PROCESSING);
    sqlite3_bind_int(u, 8, STORE_JOB_PENDING);
    sqlite3_bind_int(u, 9, STORE_JOB_RUNNING);
    return store__run(st->wdb, u, "update series state", err, errlen);
}

/* One outbox row per destination of the route (de-duplicated); unresolvable ones failed.
 * `names` gets "PACS, ARCHIVE" for the log. */
static int finish__queue(store *st, const sn_config *cfg, const sn_route *r, const finish__job *j,
                         int64_t job_id, const char *relpath, const char *sop_uid, int64_t now,
                         int *n_rows, char *names, size_t nlen, char *err, size_t errlen)
{
    sqlite3_stmt *ins = NULL;
    char done[SN_LIST_MAX][SN_NAME_MAX + 32];
    int nd = 0, rc;
    size_t used = 0;

    names[0] = '\0';
    rc = sqlite3_prepare_v2(st->wdb,
                            "INSERT INTO outbox(job_id, peer, path, sop_instance_uid, state, attempts,"
                            " next_attempt_ms, last_error, created_ms, updated_ms)"
                            " VALUES(?1, ?2, ?3, ?4, ?5, 0, ?6, ?7, ?6, ?6)", -1, &ins, NULL);
    if (rc != SQLITE_OK)
        return store__dberr(st->wdb, rc, "queue result", err, errlen);
    for (int k = 0; k < r->send_to.n && nd < SN_LIST_MAX; k++) {
        const char *dest = r->send_to.item[k];
        const sn_peer *p = NULL;
        char peer[SN_NAME_MAX + 32], why[256] = "";
        if (strcasecmp(dest, "@caller") == 0) {
            p = j->calling_ae[0] ? sn_config_peer_by_ae(cfg, j->calling_ae) : NULL;
            if (p)
                sn_strlcpy(peer, p->name, sizeof peer);
            else {
                snprintf(peer, sizeof peer, "%s%s", STORE_OUTBOX_CALLER_PREFIX, j->calling_ae);
                if (j->calling_ae[0])
                    snprintf(why, sizeof why, "caller AE %s is not a configured peer (no host/port)",
                             j->calling_ae);
                else
                    snprintf(why, sizeof why, "the AE that sent the series is not known (@caller)");
            }
        } else {
            p = sn_config_peer_by_name(cfg, dest);
            sn_strlcpy(peer, dest, sizeof peer);
            if (!p)
                snprintf(why, sizeof why, "unknown peer %s (no [peer %s] in the configuration)", dest, dest);
        }
        int dup = 0;
        for (int i = 0; i < nd; i++)
            dup |= strcmp(done[i], peer) == 0;
        if (dup)
            continue;
        sn_strlcpy(done[nd++], peer, sizeof done[0]);
        sqlite3_bind_int64(ins, 1, job_id);
        sqlite3_bind_text(ins, 2, peer, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(ins, 3, relpath, -1, SQLITE_STATIC);
        sqlite3_bind_text(ins, 4, sop_uid, -1, SQLITE_STATIC);
        sqlite3_bind_int(ins, 5, p ? STORE_OUTBOX_PENDING : STORE_OUTBOX_FAILED);
        sqlite3_bind_int64(ins, 6, now);
        store__bind_str(ins, 7, p ? NULL : why);
        rc = sqlite3_step(ins);
        sqlite3_reset(ins);
        sqlite3_clear_bindings(ins);
        if (rc != SQLITE_DONE) {
            int s = store__dberr(st->wdb, rc, "queue result", err, errlen);
            sqlite3_finalize(ins);
            return s;
        }
        if (!p)
            SN_LOG_ERROR("store", "job %lld: cannot send to %s: %s", (long long)job_id, dest, why);
        if (used < nlen)
            used += (size_t)snprintf(names + used, nlen - used, "%s%s%s", used ? ", " : "", peer,
                                     p ? "" : " (failed)");
    }
    sqlite3_finalize(ins);
    *n_rows = nd;
    return SN_OK;
}

static int finish__check_meta(const store_instance_meta *m, char *err, size_t errlen)
{
    if (!m)
        return sn_errf(err, errlen, SN_EINVAL, "no instance metadata");
    const char *v[4] = {m->study_uid, m->series_uid, m->sop_class_uid, m->sop_instance_uid};
    static const char *const name[4] = {"Study Instance UID", "Series Instance UID", "SOP Class UID",
                                        "SOP Instance UID"};
    for (int i = 0; i < 4; i++)
        if (!v[i] || !*v[i] || !sn_uid_valid(v[i]))
            return sn_errf(err, errlen, SN_EINVAL, "%s missing or not a valid UID", name[i]);
    if (m->transfer_syntax_uid && *m->transfer_syntax_uid && !sn_uid_valid(m->transfer_syntax_uid))
        return sn_errf(err, errlen, SN_EINVAL, "Transfer Syntax UID is not a valid UID");
    return SN_OK;
}

static const sn_route *finish__route(const sn_config *cfg, const char *name)
{
    for (int i = 0; i < cfg->nroutes; i++)
        if (strcmp(cfg->routes[i].name, name) == 0)
            return &cfg->routes[i];
    return NULL;
}

int store_job_finish(store *st, int64_t job_id, const char *seg_tmp_path,
                     const store_instance_meta *seg_meta, const sn_config *cfg,
                     char *err, size_t errlen)
{
    finish__file f;
    finish__job j;
    store_instance_meta m;
    sqlite3_stmt *u = NULL;
    int rc, in_txn = 0, n_rows = 0;
    int64_t now = sn_now_ms(), seg_series = 0;
    char note[256] = "", names[512] = "";

    memset(&f, 0, sizeof f);
    f.stripe = -1;
    if (!st || !seg_tmp_path || !cfg)
        return sn_errf(err, errlen, SN_EINVAL, "store_job_finish: bad arguments");
    if (!store__is_tmp(st, seg_tmp_path))
        return sn_errf(err, errlen, SN_EINVAL, "%s is not a temp file of this store", seg_tmp_path);
    if ((rc = finish__check_meta(seg_meta, err, errlen)) != SN_OK) {
        unlink(seg_tmp_path);
        return rc;
    }
    m = *seg_meta;
    m.calling_ae = cfg->node.ae_title;   /* the node made it */
    m.called_ae = NULL;

    pthread_mutex_lock(&st->q_mu);
    if (st->closing) {
        pthread_mutex_unlock(&st->q_mu);
        unlink(seg_tmp_path);
        return sn_errf(err, errlen, SN_EBUSY, "store is closing");
    }
    st->inflight++;
    pthread_mutex_unlock(&st->q_mu);

    if ((rc = finish__file_put(st, seg_tmp_path, m.sop_instance_uid, &f, err, errlen)) != SN_OK)
        goto out;

    pthread_mutex_lock(&st->w_mu);
    if ((rc = store__exec(st->wdb, "BEGIN IMMEDIATE", err, errlen)) != SN_OK)
        goto undo;
    in_txn = 1;
    if ((rc = finish__job_get(st, job_id, &j, err, errlen)) != SN_OK)
        goto undo;
    if (j.state != STORE_JOB_PENDING && j.state != STORE_JOB_RUNNING) {
        rc = sn_errf(err, errlen, SN_EINVAL, "job %lld is already %s", (long long)job_id,
                     store_job_state_name((store_job_state)j.state));
        goto undo;
    }
    if ((rc = finish__index(st, &m, &f, now, &seg_series, err, errlen)) != SN_OK)
        goto undo;
    if (seg_series == j.series_id) {
        rc = sn_errf(err, errlen, SN_EINVAL, "the result of job %lld has the Series Instance UID of its "
                     "source series; a SEG must be a new series", (long long)job_id);
        goto undo;
    }
    if ((rc = store__prepare(st->wdb,
            "UPDATE series SET derived_job=?2, state=?3, routes=NULL, stable_ms=?4,"
            " state_changed_ms=?4 WHERE id=?1",
            &u, "mark derived series", err, errlen)) != SN_OK)
        goto undo;
    sqlite3_bind_int64(u, 1, seg_series);
    sqlite3_bind_int64(u, 2, job_id);
    sqlite3_bind_int(u, 3, STORE_SERIES_DONE);
    sqlite3_bind_int64(u, 4, now);
    if ((rc = store__run(st->wdb, u, "mark derived series", err, errlen)) != SN_OK)
        goto undo;

    const sn_route *route = finish__route(cfg, j.route);
    if (route) {
        if ((rc = finish__queue(st, cfg, route, &j, job_id, f.p.relpath, m.sop_instance_uid, now,
                                &n_rows, names, sizeof names, err, errlen)) != SN_OK)
            goto undo;
    } else {
        snprintf(note, sizeof note, "route %s is no longer configured: the SEG was stored, not sent",
                 j.route);
        SN_LOG_WARN("store", "job %lld: %s", (long long)job_id, note);
    }
    if ((rc = store__prepare(st->wdb,
            "UPDATE jobs SET state=?2, error=?3, lease_until=NULL, updated_ms=?4"
            " WHERE id=?1",
            &u, "finish job", err, errlen)) != SN_OK)
        goto undo;
    sqlite3_bind_int64(u, 1, job_id);
    sqlite3_bind_int(u, 2, STORE_JOB_DONE);
    store__bind_str(u, 3, note);
    sqlite3_bind_int64(u, 4, now);
    if ((rc = store__run(st->wdb, u, "finish job", err, errlen)) != SN_OK)
        goto undo;
    if ((rc = finish__source_series(st, j.series_id, now, err, errlen)) != SN_OK)
        goto undo;
    if ((rc = store__exec(st->wdb, "COMMIT", err, errlen)) != SN_OK)
        goto undo;
    pthread_mutex_unlock(&st->w_mu);
    SN_LOG_INFO("store", "job %lld done: SEG %s stored; %d destination(s)%s%s", (long long)job_id,
                m.sop_instance_uid, n_rows, n_rows ? ": " : "", names);
    goto out;
undo:
    if (in_txn && sqlite3_get_autocommit(st->wdb) == 0)
        sqlite3_exec(st->wdb, "ROLLBACK", NULL, NULL, NULL);
    pthread_mutex_unlock(&st->w_mu);
    finish__file_undo(&f);
out:
    if (f.stripe >= 0)
        pthread_mutex_unlock(&st->stripe[f.stripe]);
    pthread_mutex_lock(&st->q_mu);
    if (--st->inflight == 0)
        pthread_cond_broadcast(&st->q_cv);
    pthread_mutex_unlock(&st->q_mu);
    return rc;
}

int store_job_fail(store *st, int64_t job_id, const char *reason, char *err, size_t errlen)
{
    finish__job j;
    sqlite3_stmt *u = NULL;
    int rc;
    int64_t now = sn_now_ms();

    if (!st)
        return sn_errf(err, errlen, SN_EINVAL, "store_job_fail: bad arguments");
    pthread_mutex_lock(&st->w_mu);
    if ((rc = store__exec(st->wdb, "BEGIN IMMEDIATE", err, errlen)) != SN_OK)
        goto unlock;
    if ((rc = finish__job_get(st, job_id, &j, err, errlen)) != SN_OK)
        goto err;
    if (j.state != STORE_JOB_PENDING && j.state != STORE_JOB_RUNNING) {
        rc = sn_errf(err, errlen, SN_EINVAL, "job %lld is already %s", (long long)job_id,
                     store_job_state_name((store_job_state)j.state));
        goto err;
    }
    if ((rc = store__prepare(st->wdb,
            "UPDATE jobs SET state=?2, error=?3, lease_until=NULL, updated_ms=?4"
            " WHERE id=?1",
            &u, "fail job", err, errlen)) != SN_OK)
        goto err;
    sqlite3_bind_int64(u, 1, job_id);
    sqlite3_bind_int(u, 2, STORE_JOB_FAILED);
    sqlite3_bind_text(u, 3, reason && *reason ? reason : "failed", -1, SQLITE_STATIC);
    sqlite3_bind_int64(u, 4, now);
    if ((rc = store__run(st->wdb, u, "fail job", err, errlen)) != SN_OK ||
        (rc = finish__source_series(st, j.series_id, now, err, errlen)) != SN_OK ||
        (rc = store__exec(st->wdb, "COMMIT", err, errlen)) != SN_OK)
        goto err;
    SN_LOG_WARN("store", "job %lld failed: %s", (long long)job_id, reason && *reason ? reason : "failed");
    goto unlock;
err:
    if (sqlite3_get_autocommit(st->wdb) == 0)
        sqlite3_exec(st->wdb, "ROLLBACK", NULL, NULL, NULL);
unlock:
    pthread_mutex_unlock(&st->w_mu);
    return rc;
}

/* ---- outbox rows ------------------------------------------------------------------------------ */

int store_outbox_claim(store *st, int64_t now_ms, store_outbox_row *out, char *err, size_t errlen)
{
    sqlite3_stmt *s = NULL;
    int rc, status;
    if (!st || !out)
        return sn_errf(err, errlen, SN_EINVAL, "store_outbox_claim: bad arguments");
    /* One statement, so the choice and the mark are one atomic write (also across processes).
     * The NOT EXISTS keeps a peer to one association at a time: a dead peer holds at most one
     * sender, and one file is never in flight twice to the same peer. */
    pthread_mutex_lock(&st->w_mu);
    if ((status = store__prepare(st->wdb,
            "UPDATE outbox SET state=?2, attempts=attempts+1, updated_ms=?1"
            " WHERE id=(SELECT o.id FROM outbox o WHERE o.state=?3 AND o.next_attempt_ms<=?1"
            "   AND NOT EXISTS(SELECT 1 FROM outbox x WHERE x.peer=o.peer AND x.state=?2)"
            "   ORDER BY o.next_attempt_ms, o.id LIMIT 1)"
            " RETURNING " OUTBOX__COLS,
            &s, "claim outbox row", err, errlen)) != SN_OK)
        goto out;
    sqlite3_bind_int64(s, 1, now_ms);
    sqlite3_bind_int(s, 2, STORE_OUTBOX_SENDING);
    sqlite3_bind_int(s, 3, STORE_OUTBOX_PENDING);
    rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) {
        outbox__row_read(st, s, out);
        rc = sqlite3_step(s);
    } else if (rc == SQLITE_DONE) {
        status = sn_errf(err, errlen, SN_ENOENT, "no outbox row is due");
        goto out;
    }
    status = rc == SQLITE_DONE ? SN_OK : store__dberr(st->wdb, rc, "claim outbox row", err, errlen);
out:
    sqlite3_finalize(s);
    pthread_mutex_unlock(&st->w_mu);
    return status;
}

/* UPDATE outbox ... WHERE id=?1 AND state=`from`; SN_ENOENT/SN_EINVAL when no row changed. */
static int outbox__transition(store *st, sqlite3_stmt *u, int64_t id, int from, const char *what,
                              char *err, size_t errlen)
{
    int rc = sqlite3_step(u);
    sqlite3_finalize(u);
    if (rc != SQLITE_DONE)
        return store__dberr(st->wdb, rc, what, err, errlen);
    if (sqlite3_changes(st->wdb) > 0)
        return SN_OK;
    sqlite3_stmt *q = NULL;
    int state = -1;
    if (sqlite3_prepare_v2(st->wdb, "SELECT state FROM outbox WHERE id=?1", -1, &q, NULL) == SQLITE_OK) {
        sqlite3_bind_int64(q, 1, id);
        if (sqlite3_step(q) == SQLITE_ROW)
            state = sqlite3_column_int(q, 0);
    }
    sqlite3_finalize(q);
    if (state < 0)
        return sn_errf(err, errlen, SN_ENOENT, "no outbox row %lld", (long long)id);
    return sn_errf(err, errlen, SN_EINVAL, "outbox row %lld is %s, not %s", (long long)id,
                   store_outbox_state_name((store_outbox_state)state),
                   store_outbox_state_name((store_outbox_state)from));
}

int store_outbox_complete(store *st, int64_t id, int ok, unsigned dimse_status, const char *error,
                          int64_t next_attempt_ms, char *err, size_t errlen)
{
    sqlite3_stmt *u = NULL;
    int rc, state = ok ? STORE_OUTBOX_SENT : next_attempt_ms > 0 ? STORE_OUTBOX_PENDING : STORE_OUTBOX_FAILED;
    int64_t now = sn_now_ms();
    if (!st)
        return sn_errf(err, errlen, SN_EINVAL, "store_outbox_complete: bad arguments");
    pthread_mutex_lock(&st->w_mu);
    if ((rc = store__prepare(st->wdb,
            "UPDATE outbox SET state=?2, dimse_status=?3, last_error=?4, updated_ms=?5,"
            " next_attempt_ms=CASE WHEN ?2=?7 THEN ?6 ELSE next_attempt_ms END,"
            " sent_ms=CASE WHEN ?2=?8 THEN ?5 ELSE sent_ms END"
            " WHERE id=?1 AND state=?9",
            &u, "complete outbox row", err, errlen)) != SN_OK)
        goto out;
    sqlite3_bind_int64(u, 1, id);
    sqlite3_bind_int(u, 2, state);
    if (dimse_status != 0xFFFFu)
        sqlite3_bind_int(u, 3, (int)dimse_status);
    store__bind_str(u, 4, ok ? NULL : error);
    sqlite3_bind_int64(u, 5, now);
    sqlite3_bind_int64(u, 6, next_attempt_ms);
    sqlite3_bind_int(u, 7, STORE_OUTBOX_PENDING);
    sqlite3_bind_int(u, 8, STORE_OUTBOX_SENT);
    sqlite3_bind_int(u, 9, STORE_OUTBOX_SENDING);
    rc = outbox__transition(st, u, id, STORE_OUTBOX_SENDING, "complete outbox row", err, errlen);
out:
    pthread_mutex_unlock(&st->w_mu);
    return rc;
}

int store_outbox_recover(store *st, int *n, char *err, size_t errlen)
{
    sqlite3_stmt *u = NULL;
    int rc;
    if (n)
        *n = 0;
    if (!st)
        return sn_errf(err, errlen, SN_EINVAL, "store_outbox_recover: bad arguments");
    pthread_mutex_lock(&st->w_mu);
    if ((rc = store__prepare(st->wdb,
            "UPDATE outbox SET state=?1, next_attempt_ms=?3, updated_ms=?3 WHERE state=?2",
            &u, "recover outbox", err, errlen)) != SN_OK)
        goto out;
    sqlite3_bind_int(u, 1, STORE_OUTBOX_PENDING);
    sqlite3_bind_int(u, 2, STORE_OUTBOX_SENDING);
    sqlite3_bind_int64(u, 3, sn_now_ms());
    if ((rc = store__run(st->wdb, u, "recover outbox", err, errlen)) == SN_OK) {
        int k = sqlite3_changes(st->wdb);
        if (n)
            *n = k;
        if (k)
            SN_LOG_WARN("store", "%d outbox row(s) were being sent when the node stopped; they will "
                        "be sent again (the peer keeps one instance per SOP Instance UID)", k);
    }
    if (rc != SN_OK)
        goto out;
    /* A restart is often the fix (a peer's address corrected): rows waiting out a backoff are
     * tried now rather than after up to outbox_retry_cap; their attempts still count. */
    if ((rc = store__prepare(st->wdb,
            "UPDATE outbox SET next_attempt_ms=?2 WHERE state=?1 AND next_attempt_ms>?2",
            &u, "recover outbox", err, errlen)) != SN_OK)
        goto out;
    sqlite3_bind_int(u, 1, STORE_OUTBOX_PENDING);
    sqlite3_bind_int64(u, 2, sn_now_ms());
    if ((rc = store__run(st->wdb, u, "recover outbox", err, errlen)) == SN_OK && sqlite3_changes(st->wdb))
        SN_LOG_INFO("store", "%d outbox row(s) waiting to retry are due now", sqlite3_changes(st->wdb));
out:
    pthread_mutex_unlock(&st->w_mu);
    return rc;
}

/* Rows of `sql` (OUTBOX__COLS, one int64 parameter) to cb. */
static int outbox__list(store *st, const char *sql, int64_t param, store_outbox_cb cb, void *ctx,
                        char *err, size_t errlen)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *s = NULL;
    int rc, status;
    if (!st || !cb)
        return sn_errf(err, errlen, SN_EINVAL, "store_outbox_list: bad arguments");
    if ((status = store__reader_get(st, &db, err, errlen)) != SN_OK)
        return status;
    if ((status = store__prepare(db, sql, &s, "list outbox", err, errlen)) != SN_OK)
        goto out;
    sqlite3_bind_int64(s, 1, param);
    store_outbox_row *r = malloc(sizeof *r);
    if (!r) {
        status = sn_errf(err, errlen, SN_ENOMEM, "out of memory");
        goto out;
    }
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        outbox__row_read(st, s, r);
        if (cb(ctx, r)) {
            rc = SQLITE_DONE;
            break;
        }
    }
    free(r);
    if (rc != SQLITE_DONE)
        status = store__dberr(db, rc, "list outbox", err, errlen);
out:
    sqlite3_finalize(s);
    store__reader_put(st, db);
    return status;
}

int store_outbox_list(store *st, int64_t job_id, store_outbox_cb cb, void *ctx, char *err, size_t errlen)
{
    return outbox__list(st, "SELECT " OUTBOX__COLS " FROM outbox WHERE ?1 < 0 OR job_id=?1 ORDER BY id",
                        job_id, cb, ctx, err, errlen);
}

int store_outbox_list_unsent(store *st, int limit, store_outbox_cb cb, void *ctx, char *err, size_t errlen)
{
    return outbox__list(st, "SELECT " OUTBOX__COLS " FROM outbox WHERE state IN (0, 1, 3)"
                        " ORDER BY updated_ms DESC, id DESC LIMIT ?1",
                        limit > 0 ? limit : -1, cb, ctx, err, errlen);
}

/* Failed -> pending, due now, a fresh count of attempts. `where` selects the rows. */
static int outbox__requeue(store *st, const char *where, int64_t key, int *n, char *err, size_t errlen)
{
    char sql[512];
    sqlite3_stmt *u = NULL;
    snprintf(sql, sizeof sql,
             "UPDATE outbox SET state=?2, attempts=0, next_attempt_ms=?4, last_error=NULL,"
             " dimse_status=NULL, updated_ms=?4 WHERE %s AND state=?3", where);
    int rc = sqlite3_prepare_v2(st->wdb, sql, -1, &u, NULL);
    if (rc != SQLITE_OK)
        return store__dberr(st->wdb, rc, "retry outbox", err, errlen);
    sqlite3_bind_int64(u, 1, key);
    sqlite3_bind_int(u, 2, STORE_OUTBOX_PENDING);
    sqlite3_bind_int(u, 3, STORE_OUTBOX_FAILED);
    sqlite3_bind_int64(u, 4, sn_now_ms());
    rc = sqlite3_step(u);
    sqlite3_finalize(u);
    if (rc != SQLITE_DONE)
        return store__dberr(st->wdb, rc, "retry outbox", err, errlen);
    *n = sqlite3_changes(st->wdb);
    return SN_OK;
}

int store_outbox_retry(store *st, int64_t id, char *err, size_t errlen)
{
    int n = 0, rc;
    if (!st)
        return sn_errf(err, errlen, SN_EINVAL, "store_outbox_retry: bad arguments");
    pthread_mutex_lock(&st->w_mu);
    rc = outbox__requeue(st, "id=?1", id, &n, err, errlen);
    if (rc == SN_OK && n == 0) {
        sqlite3_stmt *q = NULL;
        int state = -1;
        if (sqlite3_prepare_v2(st->wdb, "SELECT state FROM outbox WHERE id=?1", -1, &q, NULL) == SQLITE_OK) {
            sqlite3_bind_int64(q, 1, id);
            if (sqlite3_step(q) == SQLITE_ROW)
                state = sqlite3_column_int(q, 0);
        }
        sqlite3_finalize(q);
        rc = state < 0 ? sn_errf(err, errlen, SN_ENOENT, "no outbox row %lld", (long long)id)
                       : sn_errf(err, errlen, SN_EINVAL, "outbox row %lld is %s; only failed rows "
                                 "can be retried", (long long)id,
                                 store_outbox_state_name((store_outbox_state)state));
    }
    pthread_mutex_unlock(&st->w_mu);
    return rc;
}

int store_outbox_retry_job(store *st, int64_t job_id, int *n, char *err, size_t errlen)
{
    sqlite3_stmt *q = NULL;
    int rc, k = 0, found = 0;
    if (n)
        *n = 0;
    if (!st)
        return sn_errf(err, errlen, SN_EINVAL, "store_outbox_retry_job: bad arguments");
    pthread_mutex_lock(&st->w_mu);
    if (sqlite3_prepare_v2(st->wdb, "SELECT 1 FROM jobs WHERE id=?1", -1, &q, NULL) == SQLITE_OK) {
        sqlite3_bind_int64(q, 1, job_id);
        found = sqlite3_step(q) == SQLITE_ROW;
    }
    sqlite3_finalize(q);
    if (!found) {
        rc = sn_errf(err, errlen, SN_ENOENT, "no job %lld", (long long)job_id);
        goto out;
    }
    if ((rc = outbox__requeue(st, "job_id=?1", job_id, &k, err, errlen)) == SN_OK && n)
        *n = k;
    if (rc == SN_OK && k)
        SN_LOG_INFO("store", "job %lld: %d failed outbox row(s) queued again", (long long)job_id, k);
out:
    pthread_mutex_unlock(&st->w_mu);
    return rc;
}

int store_outbox_peer_stats(store *st, store_outbox_peer_cb cb, void *ctx, char *err, size_t errlen)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *s = NULL;
    int rc, status;
    if (!st || !cb)
        return sn_errf(err, errlen, SN_EINVAL, "store_outbox_peer_stats: bad arguments");
    if ((status = store__reader_get(st, &db, err, errlen)) != SN_OK)
        return status;
    /* The newest error of a row not (yet) sent is what an admin wants to see per peer. */
    if ((status = store__prepare(db,
            "SELECT p.peer,"
            " (SELECT count(*) FROM outbox x WHERE x.peer=p.peer AND x.state=0),"
            " (SELECT count(*) FROM outbox x WHERE x.peer=p.peer AND x.state=1),"
            " (SELECT count(*) FROM outbox x WHERE x.peer=p.peer AND x.state=2),"
            " (SELECT count(*) FROM outbox x WHERE x.peer=p.peer AND x.state=3),"
            " e.last_error, coalesce(e.dimse_status, 65535), coalesce(e.updated_ms, 0)"
            " FROM (SELECT DISTINCT peer FROM outbox) p"
            " LEFT JOIN outbox e ON e.id=(SELECT y.id FROM outbox y WHERE y.peer=p.peer"
            "   AND y.state<>2 AND y.last_error IS NOT NULL ORDER BY y.updated_ms DESC, y.id DESC LIMIT 1)"
            " ORDER BY p.peer",
            &s, "outbox per peer", err, errlen)) != SN_OK)
        goto out;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        store_outbox_peer_stat ps;
        memset(&ps, 0, sizeof ps);
        ps.peer = (const char *)sqlite3_column_text(s, 0);
        for (int i = 0; i < STORE_OUTBOX__COUNT; i++)
            ps.by_state[i] = sqlite3_column_int64(s, 1 + i);
        ps.last_error = (const char *)sqlite3_column_text(s, 5);
        ps.last_dimse_status = (unsigned)sqlite3_column_int(s, 6);
        ps.last_error_ms = sqlite3_column_int64(s, 7);
        if (cb(ctx, &ps)) {
            rc = SQLITE_DONE;
            break;
        }
    }
    if (rc != SQLITE_DONE)
        status = store__dberr(db, rc, "outbox per peer", err, errlen);
out:
    sqlite3_finalize(s);
    store__reader_put(st, db);
    return status;
}
