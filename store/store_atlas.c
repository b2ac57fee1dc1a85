/* store/store_atlas.c — the atlas library's rows (schema step 4 -> 5): put, list, delete. The
 * caches themselves are files under the storage folder, written by pipeline/atlas; this table
 * is the index the CLI, the config check and the atlas method consult. */
#include <stdio.h>
#include <string.h>

#include "common/status.h"
#include "common/util.h"
#include "store/storeInt.h"

int store_atlas_put(store *st, const store_atlas_row *r, char *err, size_t errlen)
{
    if (!st || !r || !r->name || !r->name[0] || !r->cache_dir)
        return sn_errf(err, errlen, SN_EINVAL, "store_atlas_put: bad arguments");
    sqlite3_stmt *q = NULL;
    int status = SN_OK;
    pthread_mutex_lock(&st->w_mu);
    int rc = sqlite3_prepare_v2(st->wdb,
                                "INSERT OR REPLACE INTO atlases(name, modality, series_uid, cache_dir, labels,"
                                " nx, ny, nz, work_mm, created_ms) VALUES(?1,?2,?3,?4,?5,?6,?7,?8,?9,?10)",
                                -1, &q, NULL);
    if (rc == SQLITE_OK) {
        store__bind_text(q, 1, r->name);
        store__bind_text(q, 2, r->modality ? r->modality : "");
        store__bind_text(q, 3, r->series_uid ? r->series_uid : "");
        store__bind_text(q, 4, r->cache_dir);
        store__bind_text(q, 5, r->labels ? r->labels : "");
        sqlite3_bind_int(q, 6, r->nx);
        sqlite3_bind_int(q, 7, r->ny);
        sqlite3_bind_int(q, 8, r->nz);
        sqlite3_bind_double(q, 9, r->work_mm);
        sqlite3_bind_int64(q, 10, r->created_ms ? r->created_ms : sn_now_ms());
        rc = sqlite3_step(q);
    }
    if (rc != SQLITE_DONE) status = store__dberr(st->wdb, rc, "store atlas", err, errlen);
    sqlite3_finalize(q);
    pthread_mutex_unlock(&st->w_mu);
    return status;
}

int store_atlas_list(store *st, const char *name, store_atlas_cb cb, void *ctx, char *err, size_t errlen)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *s = NULL;
    if (!st) return sn_errf(err, errlen, SN_EINVAL, "no store");
    int rc = store__reader_get(st, &db, err, errlen);
    if (rc != SN_OK) return rc;
    rc = sqlite3_prepare_v2(db,
                            "SELECT name, modality, series_uid, cache_dir, labels, nx, ny, nz, work_mm, created_ms"
                            " FROM atlases WHERE ?1 IS NULL OR name=?1 ORDER BY name", -1, &s, NULL);
    int status = SN_OK, found = 0;
    if (rc == SQLITE_OK) {
        if (name) store__bind_text(s, 1, name);
        while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
            store_atlas_row r = {
                .name = (const char *)sqlite3_column_text(s, 0),
                .modality = (const char *)sqlite3_column_text(s, 1),
                .series_uid = (const char *)sqlite3_column_text(s, 2),
                .cache_dir = (const char *)sqlite3_column_text(s, 3),
                .labels = (const char *)sqlite3_column_text(s, 4),
                .nx = sqlite3_column_int(s, 5),
                .ny = sqlite3_column_int(s, 6),
                .nz = sqlite3_column_int(s, 7),
                .work_mm = sqlite3_column_double(s, 8),
                .created_ms = sqlite3_column_int64(s, 9),
            };
            found++;
            if (cb && cb(ctx, &r)) {
                rc = SQLITE_DONE;
                break;
            }
        }
    }
    if (rc != SQLITE_DONE) status = store__dberr(db, rc, "list atlases", err, errlen);
    else if (name && !found) status = sn_errf(err, errlen, SN_ENOENT, "no atlas %s in the library", name);
    sqlite3_finalize(s);
    store__reader_put(st, db);
    return status;
}

int store_atlas_delete(store *st, const char *name, char *err, size_t errlen)
{
    if (!st || !name) return sn_errf(err, errlen, SN_EINVAL, "store_atlas_delete: bad arguments");
    sqlite3_stmt *q = NULL;
    int status = SN_OK;
    pthread_mutex_lock(&st->w_mu);
    int rc = sqlite3_prepare_v2(st->wdb, "DELETE FROM atlases WHERE name=?1", -1, &q, NULL);
    if (rc == SQLITE_OK) {
        store__bind_text(q, 1, name);
        rc = sqlite3_step(q);
    }
    if (rc != SQLITE_DONE) status = store__dberr(st->wdb, rc, "delete atlas", err, errlen);
    else if (sqlite3_changes(st->wdb) == 0) status = sn_errf(err, errlen, SN_ENOENT, "no atlas %s", name);
    sqlite3_finalize(q);
    pthread_mutex_unlock(&st->w_mu);
    return status;
}
