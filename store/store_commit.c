/* store/store_commit.c — the ingest path behind C-STORE: make a received file durable under its
 * hash name, then index it through a group commit.
 *
 * Order, and why it is safe:
 *   1. in the calling thread: rename the temp file to files/aa/<sha256(uid)>.dcm (for a
 *      REPLACEMENT the new bytes are fsynced first: the old ones were acknowledged, so the name
 *      may never point at unflushed data);
 *   2. join the group commit: the first waiter becomes the leader and takes the queued
 *      requests (up to STORE__BATCH_MAX); it indexes them all in ONE transaction, and makes
 *      files, folder entries and index durable with ONE syncfs() of the storage file system
 *      (commit__run_batch has the two orders: one flush when files and index share a file
 *      system, else files first and a WAL fsync after), then wakes them, each with its result.
 * So a batch costs one cache flush, where per-file fsync cost five per instance (file, three
 * folders, WAL) — on disks where a flush is milliseconds, that decides ingest throughput. The
 * function returns only after file and row are durable: the caller may then send Success. A
 * crash before 2 completes leaves at most one batch of unacknowledged instances: files without
 * rows (a resend replaces them; `segnode store check` finds and removes them, store_check.c) or
 * rows whose files did not survive (dropped by the daemon's start-up check, store_claim in store.c). syncfs flushes the whole file system: give the store its own file system
 * where other heavy writers would slow it. If the index fails after the rename: a NEW
 * instance's file is unlinked (nothing indexed, nothing left); for a REPLACEMENT the old row
 * keeps pointing at the same path, which now holds the new bytes of the same SOP Instance —
 * only its size/time are stale.
 * Renames and index writes of one SOP Instance UID are serialised by a striped lock so two
 * concurrent copies cannot undo each other's cleanup.
 * Not here: temp file creation (store.c), queries (store_query.c). */
#define _GNU_SOURCE /* syncfs */
#include "store/storeInt.h"

#include "common/log.h"
#include "common/status.h"
#include "common/util.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int commit__check_meta(const store_instance_meta *m, char *err, size_t errlen)
{
    if (!m)
        return sn_errf(err, errlen, SN_EINVAL, "no instance metadata");
    static const struct { size_t off; const char *name; } req[] = {
        {offsetof(store_instance_meta, study_uid), "Study Instance UID"},
        {offsetof(store_instance_meta, series_uid), "Series Instance UID"},
        {offsetof(store_instance_meta, sop_class_uid), "SOP Class UID"},
        {offsetof(store_instance_meta, sop_instance_uid), "SOP Instance UID"},
    };
    for (size_t i = 0; i < sizeof req / sizeof req[0]; i++) {
        const char *v = *(const char *const *)((const char *)m + req[i].off);
        if (!v || !*v)
            return sn_errf(err, errlen, SN_EINVAL, "%s missing", req[i].name);
        if (!sn_uid_valid(v))
            return sn_errf(err, errlen, SN_EINVAL, "%s is not a valid UID", req[i].name);
    }
    if (m->transfer_syntax_uid && *m->transfer_syntax_uid && !sn_uid_valid(m->transfer_syntax_uid))
        return sn_errf(err, errlen, SN_EINVAL, "Transfer Syntax UID is not a valid UID");
    return SN_OK;
}

/* ---- the index half (runs in the leader, inside the batch transaction) ------------------- */

static int commit__step_id(sqlite3_stmt *s, int64_t *id)
{
    int rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) {
        *id = sqlite3_column_int64(s, 0);
        rc = SQLITE_DONE;
    }
    sqlite3_reset(s);
    sqlite3_clear_bindings(s);
    return rc;
}

static int commit__step(sqlite3_stmt *s)
{
    int rc = sqlite3_step(s);
    sqlite3_reset(s);
    sqlite3_clear_bindings(s);
    return rc;
}

static int commit__series_add(store *st, int64_t series_id, int64_t d_inst, int64_t d_bytes,
                              int64_t d_repl)
{
    sqlite3_stmt *s = st->ws[STORE__WS_SERIES_ADD];
    sqlite3_bind_int64(s, 1, series_id);
    sqlite3_bind_int64(s, 2, d_inst);
    sqlite3_bind_int64(s, 3, d_bytes);
    sqlite3_bind_int64(s, 4, d_repl);
    return commit__step(s);
}

int store__index_instance(store *st, const store_instance_meta *m, const char *relpath, int64_t size,
                          int64_t received_ms, store_commit_result *res, char *err, size_t errlen)
{
    sqlite3_stmt *s;
    int64_t patient = 0, study = 0, series = 0, old_id = 0, old_series = 0, old_size = 0;
    int rc, found = 0;
    const char *what = "index patient";

    s = st->ws[STORE__WS_PATIENT_UPSERT];
    sqlite3_bind_text(s, 1, m->patient_id ? m->patient_id : "", -1, SQLITE_STATIC);
    store__bind_str(s, 2, m->patient_name);
    store__bind_str(s, 3, m->patient_birth_date);
    store__bind_str(s, 4, m->patient_sex);
    sqlite3_bind_int64(s, 5, received_ms);
    if ((rc = commit__step_id(s, &patient)) != SQLITE_DONE)
        goto err;

    what = "index study";
    s = st->ws[STORE__WS_STUDY_UPSERT];
    sqlite3_bind_text(s, 1, m->study_uid, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 2, patient);
    store__bind_str(s, 3, m->study_date);
    store__bind_str(s, 4, m->study_time);
    store__bind_str(s, 5, m->study_description);
    store__bind_str(s, 6, m->accession_number);
    store__bind_str(s, 7, m->study_id);
    store__bind_str(s, 8, m->referring_physician);
    sqlite3_bind_int64(s, 9, received_ms);
    if ((rc = commit__step_id(s, &study)) != SQLITE_DONE)
        goto err;

    what = "index series";
    s = st->ws[STORE__WS_SERIES_UPSERT];
    sqlite3_bind_text(s, 1, m->series_uid, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 2, study);
    store__bind_str(s, 3, m->modality);
    store__bind_str(s, 4, m->series_description);
    store__bind_str(s, 5, m->body_part);
    store__bind_str(s, 6, m->frame_of_reference_uid);
    store__bind_str(s, 7, m->image_type);
    if (m->series_number >= 0)
        sqlite3_bind_int(s, 8, m->series_number);
    store__bind_str(s, 9, m->calling_ae);
    store__bind_str(s, 10, m->called_ae);
    sqlite3_bind_int64(s, 11, received_ms);
    if ((rc = commit__step_id(s, &series)) != SQLITE_DONE)
        goto err;

    what = "look up instance";
    s = st->ws[STORE__WS_INSTANCE_GET];
    sqlite3_bind_text(s, 1, m->sop_instance_uid, -1, SQLITE_STATIC);
    rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) {
        found = 1;
        old_id = sqlite3_column_int64(s, 0);
        old_series = sqlite3_column_int64(s, 1);
        old_size = sqlite3_column_int64(s, 2);
        rc = SQLITE_DONE;
    }
    sqlite3_reset(s);
    sqlite3_clear_bindings(s);
    if (rc != SQLITE_DONE)
        goto err;

    what = found ? "update instance" : "insert instance";
    s = st->ws[found ? STORE__WS_INSTANCE_UPDATE : STORE__WS_INSTANCE_INSERT];
    if (found)
        sqlite3_bind_int64(s, 1, old_id);
    else
        sqlite3_bind_text(s, 1, m->sop_instance_uid, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 2, m->sop_class_uid, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 3, series);
    store__bind_str(s, 4, m->transfer_syntax_uid);
    if (m->instance_number >= 0)
        sqlite3_bind_int(s, 5, m->instance_number);
    sqlite3_bind_int64(s, 6, size);
    sqlite3_bind_text(s, 7, relpath, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 8, received_ms);
    if ((rc = commit__step(s)) != SQLITE_DONE)
        goto err;

    what = "update series counts";
    if (!found) {
        rc = commit__series_add(st, series, 1, size, 0);
    } else if (old_series == series) {
        rc = commit__series_add(st, series, 0, size - old_size, 1);
    } else {
        /* Same UID, new series: it moves, and the count follows it. */
        rc = commit__series_add(st, old_series, -1, -old_size, 0);
        if (rc == SQLITE_DONE)
            rc = commit__series_add(st, series, 1, size, 1);
    }
    if (rc != SQLITE_DONE)
        goto err;

    res->replaced = found;
    res->size = size;
    res->series_id = series;
    return SN_OK;
err:
    return store__dberr(st->wdb, rc, what, err, errlen);
}

static int commit__index_one(store *st, store__gc_req *r)
{
    return store__index_instance(st, r->meta, r->relpath, r->size, r->received_ms, &r->res, r->err,
                                 sizeof r->err);
}

static int commit__ws(store *st, int which)
{
    return commit__step(st->ws[which]);
}

/* One flush of the storage file system. */
static int commit__syncfs(store *st, char *err, size_t errlen)
{
    int s = SN_OK, fd = open(st->files_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0 || syncfs(fd) != 0) {
        int en = errno;
        s = sn_errf(err, errlen, store__errno_status(en), "syncfs %s: %s", st->files_dir, strerror(en));
    }
    if (fd >= 0)
        close(fd);
    return s;
}

static void commit__fail_all(store__gc_req *batch, int status, const char *e, int only_synced)
{
    for (store__gc_req *r = batch; r; r = r->next)
        if (r->status == SN_OK && (!only_synced || r->needs_sync)) {
            r->status = status;
            sn_strlcpy(r->err, e, sizeof r->err);
        }
}

/* The flush after the index failed (I/O error, disk gone): the batch's senders get a failure, so
 * their NEW rows must go — a row whose file may not be durable must not stay behind an error.
 * A replacement keeps its updated row: the rename already put the new (fsynced) bytes under the
 * old name. If even this transaction fails, the rows stay and so do their files (keep_file): a
 * complete instance indexed without its Success is harmless (the sender resends: a replacement),
 * and the start-up check (store_claim) drops any row whose file did not survive. */
static void commit__undo_new_rows(store *st, store__gc_req *batch)
{
    int rc;
    char e[256];
    pthread_mutex_lock(&st->w_mu);
    if ((rc = commit__ws(st, STORE__WS_BEGIN)) == SQLITE_DONE) {
        for (store__gc_req *r = batch; r && rc == SQLITE_DONE; r = r->next) {
            if (r->status != SN_OK || !r->needs_sync || r->res.replaced)
                continue;
            sqlite3_stmt *d = st->ws[STORE__WS_INSTANCE_DELETE];
            sqlite3_bind_text(d, 1, r->meta->sop_instance_uid, -1, SQLITE_STATIC);
            if ((rc = commit__step(d)) == SQLITE_DONE)
                rc = commit__series_add(st, r->res.series_id, -1, -r->size, 0);
        }
        if (rc == SQLITE_DONE)
            rc = commit__ws(st, STORE__WS_COMMIT);
        if (rc != SQLITE_DONE && sqlite3_get_autocommit(st->wdb) == 0)
            commit__ws(st, STORE__WS_ROLLBACK);
    }
    if (rc != SQLITE_DONE) {
        store__dberr(st->wdb, rc, "remove the rows of an unflushed batch", e, sizeof e);
        SN_LOG_ERROR("store", "%s; their files stay (the check at the next start verifies them)", e);
        for (store__gc_req *r = batch; r; r = r->next)
            if (r->status == SN_OK && r->needs_sync)
                r->keep_file = 1;
    }
    pthread_mutex_unlock(&st->w_mu);
}

/* A batch: index every request in ONE transaction (a request that fails alone is rolled back to
 * its savepoint so it cannot spoil the others), and make files, folder entries and index
 * durable. Two orders:
 *   one_flush (files and index on one file system, the normal case): commit with
 *     synchronous=NORMAL (the WAL is written, not flushed), then ONE syncfs flushes files,
 *     folders and WAL together: one cache flush per batch. Until it returns nobody has been
 *     told Success; a crash in between can leave rows of this batch whose files are not durable
 *     — at most STORE__BATCH_MAX of them, all among the newest ids, which the start-up check
 *     (store.c) verifies and drops.
 *   otherwise: syncfs of the files first, then commit with synchronous=FULL (its own WAL
 *     fsync): two flushes, and never a row before its file. */
static void commit__run_batch(store *st, store__gc_req *batch)
{
    int rc, n = 0, needed = 0;
    char e[512];
    for (store__gc_req *r = batch; r; r = r->next)
        needed |= r->needs_sync;
    int one_flush = needed && st->one_flush;

    if (needed && !one_flush) {
        int s = commit__syncfs(st, e, sizeof e);
        if (s != SN_OK)
            commit__fail_all(batch, s, e, 1); /* their files are not durable: never index them */
    }
    pthread_mutex_lock(&st->w_mu);
    if (one_flush)
        commit__ws(st, STORE__WS_SYNC_NORMAL);
    if ((rc = commit__ws(st, STORE__WS_BEGIN)) != SQLITE_DONE) {
        int s = store__dberr(st->wdb, rc, "begin index transaction", e, sizeof e);
        commit__fail_all(batch, s, e, 0);
        goto out;
    }
    for (store__gc_req *r = batch; r; r = r->next) {
        n++;
        if (r->status != SN_OK)
            continue;
        if ((rc = commit__ws(st, STORE__WS_SAVEPOINT)) != SQLITE_DONE) {
            r->status = store__dberr(st->wdb, rc, "savepoint", r->err, sizeof r->err);
            continue;
        }
        r->status = commit__index_one(st, r);
        if (r->status != SN_OK)
            commit__ws(st, STORE__WS_ROLLBACK_TO);
        commit__ws(st, STORE__WS_RELEASE);
    }
    if ((rc = commit__ws(st, STORE__WS_COMMIT)) != SQLITE_DONE) {
        int s = store__dberr(st->wdb, rc, "commit index transaction", e, sizeof e);
        if (sqlite3_get_autocommit(st->wdb) == 0)
            commit__ws(st, STORE__WS_ROLLBACK);
        commit__fail_all(batch, s, e, 0);
    }
out:
    if (one_flush)
        commit__ws(st, STORE__WS_SYNC_FULL); /* the outbox and jobs commit durably on their own */
    pthread_mutex_unlock(&st->w_mu);
    if (one_flush) {
        int s = commit__syncfs(st, e, sizeof e);
        if (s != SN_OK) {
            commit__undo_new_rows(st, batch);
            commit__fail_all(batch, s, e, 1);
        }
    }
    SN_LOG_DEBUG("store", "group commit of %d instance(s)%s", n, one_flush ? ", one flush" : "");
}

static int commit__submit(store *st, store__gc_req *r)
{
    pthread_mutex_lock(&st->q_mu);
    r->next = NULL;
    r->done = 0;
    *st->q_tail = r;
    st->q_tail = &r->next;
    while (!r->done) {
        if (!st->leader) {
            st->leader = 1;
            /* Take the queue, up to STORE__BATCH_MAX (the crash bound the open check relies on). */
            store__gc_req *batch = st->q_head, *last = batch;
            for (int k = 1; k < STORE__BATCH_MAX && last->next; k++)
                last = last->next;
            st->q_head = last->next;
            last->next = NULL;
            if (!st->q_head)
                st->q_tail = &st->q_head;
            pthread_mutex_unlock(&st->q_mu);
            commit__run_batch(st, batch);
            pthread_mutex_lock(&st->q_mu);
            /* Waiters own their request; read ->next before it may vanish. */
            for (store__gc_req *p = batch, *next; p; p = next) {
                next = p->next;
                p->done = 1;
            }
            st->leader = 0;
            pthread_cond_broadcast(&st->q_cv);
        } else {
            pthread_cond_wait(&st->q_cv, &st->q_mu);
        }
    }
    pthread_mutex_unlock(&st->q_mu);
    return r->status;
}

/* ---- the public entry --------------------------------------------------------------------- */

int store_instance_commit(store *st, const char *tmp_path, const store_instance_meta *meta,
                          store_commit_result *res, char *err, size_t errlen)
{
    int rc, fd = -1, renamed = 0, existed = 0, stripe = -1;
    store__path p;
    struct stat sb;
    int64_t size = 0;
    store__gc_req req;

    if (res)
        memset(res, 0, sizeof *res);
    if (!st || !tmp_path)
        return sn_errf(err, errlen, SN_EINVAL, "store_instance_commit: bad arguments");
    if (!store__is_tmp(st, tmp_path))
        return sn_errf(err, errlen, SN_EINVAL, "%s is not a temp file of this store", tmp_path);

    pthread_mutex_lock(&st->q_mu);
    if (st->closing) {
        pthread_mutex_unlock(&st->q_mu);
        rc = sn_errf(err, errlen, SN_EBUSY, "store is closing");
        unlink(tmp_path);
        return rc;
    }
    st->inflight++;
    pthread_mutex_unlock(&st->q_mu);

    int do_fsync = atomic_load(&st->fsync_on);
    if ((rc = commit__check_meta(meta, err, errlen)) != SN_OK)
        goto err;

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
    size = (int64_t)sb.st_size;

    if ((rc = store__instance_path(st, meta->sop_instance_uid, &p, err, errlen)) != SN_OK)
        goto err;
    stripe = p.stripe;
    pthread_mutex_lock(&st->stripe[stripe]);
    existed = lstat(p.abspath, &sb) == 0;
    if (do_fsync && existed && (rc = sn_fsync_fd(fd, tmp_path, err, errlen)) != SN_OK)
        goto err;
    if (store__rename_in(&p, tmp_path) != 0) {
        int e = errno;
        rc = sn_errf(err, errlen, store__errno_status(e), "rename %s -> %s: %s", tmp_path, p.abspath,
                     strerror(e));
        goto err;
    }
    renamed = 1;
    close(fd);
    fd = -1;

    memset(&req, 0, sizeof req);
    req.meta = meta;
    req.relpath = p.relpath;
    req.size = size;
    req.received_ms = sn_now_ms();
    req.needs_sync = do_fsync;
    if ((rc = commit__submit(st, &req)) != SN_OK) {
        sn_errf(err, errlen, rc, "%s", req.err);
        goto err;
    }
    pthread_mutex_unlock(&st->stripe[stripe]);
    if (res)
        *res = req.res;

    pthread_mutex_lock(&st->q_mu);
    if (--st->inflight == 0)
        pthread_cond_broadcast(&st->q_cv);
    pthread_mutex_unlock(&st->q_mu);
    return SN_OK;

err:
    if (fd >= 0)
        close(fd);
    if (!renamed) {
        unlink(tmp_path);
    } else if (!existed && !req.keep_file) {
        /* Nothing indexed it and nothing did before: do not leave an orphan behind. */
        if (unlink(p.abspath) != 0 && errno != ENOENT)
            SN_LOG_WARN("store", "cannot remove unindexed %s: %s", p.abspath, strerror(errno));
    } else if (!existed) {
        SN_LOG_WARN("store", "commit of %s failed after it was indexed; the file stays with its row",
                    p.abspath);
    } else {
        SN_LOG_WARN("store", "commit of replaced %s failed after the rename; the old row stays "
                    "and points at the new bytes", p.abspath);
    }
    if (stripe >= 0)
        pthread_mutex_unlock(&st->stripe[stripe]);
    pthread_mutex_lock(&st->q_mu);
    if (--st->inflight == 0)
        pthread_cond_broadcast(&st->q_cv);
    pthread_mutex_unlock(&st->q_mu);
    return rc;
}
