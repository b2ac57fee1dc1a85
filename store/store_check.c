/* store/store_check.c — `segnode store check`: the index against files/, both ways.
 *
 * store_claim verifies only the newest rows at the daemon's start (store.c): enough for what a
 * crash of the node can do to them. What it cannot see is the rest of the archive — a disk
 * restored from an old backup, a file removed by hand — and the other half of a crash: a file
 * renamed into files/ whose batch was never indexed (store_commit.c). Such a file was never
 * acknowledged, so the sender still has it, but nothing would ever remove it. This walks both.
 *
 * How: the rows are read sorted by path in pages (keyset pagination, each page a short read
 * transaction: a running node's WAL is never pinned for the length of the walk), the folders
 * files/00..ff are listed and sorted, and the two sorted sequences are merged. The instance
 * table has no index on path and gets none for this (it would cost every C-STORE an index
 * insert): each page is one scan of the table with a bounded sorter, about one scan per
 * CHECK__PAGE rows.
 *
 * What a running node does meanwhile: a row whose file is missing or of another size is read
 * again by id (a replacement in flight renames first and updates the row after: the file is
 * seconds old, so such a row is read again after a short wait) before it is reported. A file no
 * row names may be a commit in flight: it is an orphan only when it was written more than
 * orphan_min_age_s ago — a commit follows its rename within milliseconds — and only orphans
 * are ever removed, and only when asked. */
#include "store/storeInt.h"

#include "common/log.h"
#include "common/status.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define CHECK__PAGE 8192

int store__check_page_rows = CHECK__PAGE;
#define CHECK__DEFAULT_AGE 3600
#define CHECK__MIN_AGE 60
#define CHECK__RECHECK_WAIT_MS 200

typedef struct check__row {
    int64_t id, size;
    char *path, *sop;
} check__row;

typedef struct check__ctx {
    store *st;
    sqlite3 *db;
    sqlite3_stmt *page_q, *by_id;
    check__row *rows;                  /* page_rows of them */
    int page_rows, n, i, done;
    char *last;                        /* path of the last row read (the page key) */
    const store_check_opts *o;
    int64_t min_age;
    time_t now;
    store_check_cb cb;
    void *cb_ctx;
    int stopped;
    store_check_result *res;
    char *err;
    size_t errlen;
} check__ctx;

static void check__free_page(check__ctx *c)
{
    for (int k = 0; k < c->n; k++) {
        free(c->rows[k].path);
        free(c->rows[k].sop);
    }
    c->n = c->i = 0;
}

/* The next page of rows after c->last. */
static int check__fill(check__ctx *c)
{
    int rc;
    check__free_page(c);
    sqlite3_bind_text(c->page_q, 1, c->last ? c->last : "", -1, SQLITE_TRANSIENT);
    sqlite3_bind_int(c->page_q, 2, c->page_rows);
    while ((rc = sqlite3_step(c->page_q)) == SQLITE_ROW) {
        check__row *r = &c->rows[c->n];
        const char *p = (const char *)sqlite3_column_text(c->page_q, 2);
        const char *u = (const char *)sqlite3_column_text(c->page_q, 3);
        r->id = sqlite3_column_int64(c->page_q, 0);
        r->size = sqlite3_column_int64(c->page_q, 1);
        r->path = strdup(p ? p : "");
        r->sop = strdup(u ? u : "");
        if (!r->path || !r->sop) {
            free(r->path);
            free(r->sop);
            sqlite3_reset(c->page_q);
            return sn_errf(c->err, c->errlen, SN_ENOMEM, "out of memory");
        }
        c->n++;
    }
    sqlite3_reset(c->page_q);
    if (rc != SQLITE_DONE)
        return store__dberr(c->db, rc, "read instance rows", c->err, c->errlen);
    if (c->n < c->page_rows)
        c->done = 1;
    if (c->n > 0) {
        free(c->last);
        if (!(c->last = strdup(c->rows[c->n - 1].path)))
            return sn_errf(c->err, c->errlen, SN_ENOMEM, "out of memory");
    }
    return SN_OK;
}

/* The current row, or NULL at the end; *status set on a read error. */
static const check__row *check__peek(check__ctx *c, int *status)
{
    if (c->i < c->n)
        return &c->rows[c->i];
    if (c->done)
        return NULL;
    if ((*status = check__fill(c)) != SN_OK)
        return NULL;
    return c->i < c->n ? &c->rows[c->i] : NULL;
}

static void check__report(check__ctx *c, const store_check_item *it)
{
    if (c->cb && !c->stopped && c->cb(c->cb_ctx, it) != 0)
        c->stopped = 1;
}

static int check__stat(const store *st, const char *rel, struct stat *sb)
{
    char path[4096];
    if ((size_t)snprintf(path, sizeof path, "%s/%s", st->dir, rel) >= sizeof path)
        return -1;
    return stat(path, sb);
}

/* A row whose file looked missing or of another size: read the row again by id, and the file
 * again (after a short wait when the file was just written: a replacement in flight). */
static int check__recheck(check__ctx *c, const check__row *r, int waited)
{
    struct stat sb;
    int rc, have;
    int64_t size = -1;
    char *path = NULL;

    sqlite3_bind_int64(c->by_id, 1, r->id);
    rc = sqlite3_step(c->by_id);
    if (rc == SQLITE_ROW) {
        const char *p = (const char *)sqlite3_column_text(c->by_id, 1);
        size = sqlite3_column_int64(c->by_id, 0);
        path = strdup(p ? p : "");
    }
    sqlite3_reset(c->by_id);
    if (rc == SQLITE_DONE)
        return SN_OK; /* the row went away meanwhile */
    if (rc != SQLITE_ROW)
        return store__dberr(c->db, rc, "read an instance row again", c->err, c->errlen);
    if (!path)
        return sn_errf(c->err, c->errlen, SN_ENOMEM, "out of memory");
    have = check__stat(c->st, path, &sb) == 0 && S_ISREG(sb.st_mode);
    if (have && (int64_t)sb.st_size == size) {
        c->res->ok++;
        c->res->indexed_bytes += size;
        free(path);
        return SN_OK;
    }
    if (have && !waited && c->now - sb.st_mtime < c->min_age) {
        free(path);
        struct timespec ts = {0, CHECK__RECHECK_WAIT_MS * 1000000L};
        nanosleep(&ts, NULL);
        return check__recheck(c, r, 1);
    }
    store_check_item it = {.kind = have ? STORE_CHECK_SIZE : STORE_CHECK_MISSING,
                           .path = path,
                           .sop_instance_uid = r->sop,
                           .indexed_size = size,
                           .file_size = have ? (int64_t)sb.st_size : -1,
                           .age_s = -1};
    if (have)
        c->res->size++;
    else
        c->res->missing++;
    check__report(c, &it);
    free(path);
    return SN_OK;
}

/* A row: its file as listed (sb) or, when the listing did not have it, as stat finds it. */
static int check__row_done(check__ctx *c, const check__row *r, const struct stat *listed)
{
    struct stat own;
    const struct stat *sb = listed;
    c->res->rows++;
    if (!sb && check__stat(c->st, r->path, &own) == 0)
        sb = &own;
    c->i++;
    if (sb && S_ISREG(sb->st_mode) && (int64_t)sb->st_size == r->size) {
        c->res->ok++;
        c->res->indexed_bytes += r->size;
        return SN_OK;
    }
    return check__recheck(c, r, 0);
}

/* Rows sorted before `rel` (NULL: all that are left) have no file in the listing. */
static int check__rows_before(check__ctx *c, const char *rel)
{
    int status = SN_OK;
    const check__row *r;
    while ((r = check__peek(c, &status)) != NULL && (!rel || strcmp(r->path, rel) < 0))
        if ((status = check__row_done(c, r, NULL)) != SN_OK)
            return status;
    return status;
}

static int check__is_hex(const char *s, size_t n)
{
    for (size_t k = 0; k < n; k++)
        if (!((s[k] >= '0' && s[k] <= '9') || (s[k] >= 'a' && s[k] <= 'f')))
            return 0;
    return 1;
}

/* An instance file name in folder `dir`: 64 lower-case hex digits + ".dcm", whose first two
 * digits are the folder's (store__instance_path). */
static int check__is_instance_name(const char *dir, const char *name)
{
    return strlen(name) == 68 && check__is_hex(name, 64) && strcmp(name + 64, ".dcm") == 0 &&
           name[0] == dir[0] && name[1] == dir[1];
}

static int check__cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Sorted names of a folder (without . and ..), or NULL with *status set. */
static char **check__list(const char *path, int *n, int *status, char *err, size_t errlen)
{
    DIR *d = opendir(path);
    char **v = NULL;
    int cap = 0;
    struct dirent *e;
    *n = 0;
    if (!d) {
        *status = sn_errf(err, errlen, SN_EIO, "open %s: %s", path, strerror(errno));
        return NULL;
    }
    while ((e = readdir(d)) != NULL) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        if (*n == cap) {
            char **nv = realloc(v, sizeof *v * (size_t)(cap = cap ? 2 * cap : 64));
            if (!nv)
                goto oom;
            v = nv;
        }
        if (!(v[*n] = strdup(e->d_name)))
            goto oom;
        (*n)++;
    }
    closedir(d);
    if (*n)
        qsort(v, (size_t)*n, sizeof *v, check__cmp);
    *status = SN_OK;
    return v ? v : calloc(1, sizeof *v);
oom:
    closedir(d);
    for (int k = 0; k < *n; k++)
        free(v[k]);
    free(v);
    *status = sn_errf(err, errlen, SN_ENOMEM, "out of memory");
    return NULL;
}

static void check__free_list(char **v, int n)
{
    for (int k = 0; k < n; k++)
        free(v[k]);
    free(v);
}

/* Something under files/ that no row names. */
static void check__unindexed(check__ctx *c, int dfd, const char *dir, const char *name,
                             const char *rel, const struct stat *sb)
{
    store_check_item it = {.kind = STORE_CHECK_STRAY, .path = rel, .indexed_size = -1,
                           .file_size = sb ? (int64_t)sb->st_size : -1, .age_s = -1};
    if (sb && S_ISREG(sb->st_mode) && dir && check__is_instance_name(dir, name)) {
        it.age_s = c->now - sb->st_mtime;
        if (it.age_s < 0)
            it.age_s = 0;
        if (it.age_s < c->min_age) {
            it.kind = STORE_CHECK_RECENT;
            c->res->recent++;
        } else {
            it.kind = STORE_CHECK_ORPHAN;
            c->res->orphans++;
            if (c->o && c->o->remove_orphans) {
                if (unlinkat(dfd, name, 0) == 0) {
                    it.removed = 1;
                    c->res->removed++;
                    SN_LOG_INFO("store", "removed unindexed instance file %s (%lld bytes, written "
                                "%lld s ago)", rel, (long long)sb->st_size, (long long)it.age_s);
                } else {
                    SN_LOG_WARN("store", "cannot remove %s: %s", rel, strerror(errno));
                }
            }
        }
    } else {
        c->res->stray++;
    }
    check__report(c, &it);
}

/* One folder files/XX: merge its sorted names with the rows. */
static int check__folder(check__ctx *c, const char *dir)
{
    char path[4096], rel[4096];
    int n, status;
    snprintf(path, sizeof path, "%s/%s", c->st->files_dir, dir);
    char **names = check__list(path, &n, &status, c->err, c->errlen);
    if (!names)
        return status;
    int dfd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0) {
        status = sn_errf(c->err, c->errlen, SN_EIO, "open %s: %s", path, strerror(errno));
        check__free_list(names, n);
        return status;
    }
    for (int k = 0; k < n && !c->stopped; k++) {
        struct stat sb;
        int have = fstatat(dfd, names[k], &sb, AT_SYMLINK_NOFOLLOW) == 0;
        snprintf(rel, sizeof rel, "files/%s/%s", dir, names[k]);
        c->res->files++;
        if ((status = check__rows_before(c, rel)) != SN_OK)
            break;
        const check__row *r = check__peek(c, &status);
        if (status != SN_OK)
            break;
        if (r && strcmp(r->path, rel) == 0) {
            if ((status = check__row_done(c, r, have ? &sb : NULL)) != SN_OK)
                break;
        } else {
            check__unindexed(c, dfd, dir, names[k], rel, have ? &sb : NULL);
        }
    }
    close(dfd);
    check__free_list(names, n);
    return status;
}

int store_check(store *st, const store_check_opts *opts, store_check_cb cb, void *ctx,
                store_check_result *res, char *err, size_t errlen)
{
    store_check_result dummy;
    int rc, status = SN_OK, n = 0;
    char **top = NULL;

    if (!res)
        res = &dummy;
    memset(res, 0, sizeof *res);
    if (!st)
        return sn_errf(err, errlen, SN_EINVAL, "store_check: no store");
    check__ctx *c = calloc(1, sizeof *c);
    if (c) {
        c->page_rows = store__check_page_rows > 0 ? store__check_page_rows : CHECK__PAGE;
        c->rows = calloc((size_t)c->page_rows, sizeof *c->rows);
    }
    if (!c || !c->rows) {
        free(c);
        return sn_errf(err, errlen, SN_ENOMEM, "out of memory");
    }
    c->st = st;
    c->o = opts;
    c->min_age = opts && opts->orphan_min_age_s > 0 ? opts->orphan_min_age_s : CHECK__DEFAULT_AGE;
    if (c->min_age < CHECK__MIN_AGE)
        c->min_age = CHECK__MIN_AGE;
    c->now = time(NULL);
    c->cb = cb;
    c->cb_ctx = ctx;
    c->res = res;
    c->err = err;
    c->errlen = errlen;

    if ((status = store__reader_get(st, &c->db, err, errlen)) != SN_OK)
        goto out;
    if ((rc = sqlite3_prepare_v2(c->db,
                                 "SELECT id, size, path, sop_instance_uid FROM instances"
                                 " WHERE path > ?1 ORDER BY path LIMIT ?2",
                                 -1, &c->page_q, NULL)) != SQLITE_OK ||
        (rc = sqlite3_prepare_v2(c->db, "SELECT size, path FROM instances WHERE id=?1", -1,
                                 &c->by_id, NULL)) != SQLITE_OK) {
        status = store__dberr(c->db, rc, "prepare the check", err, errlen);
        goto out;
    }
    if (!(top = check__list(st->files_dir, &n, &status, err, errlen)))
        goto out;
    /* files/XX in order; anything else at the top is stray. Rows are merged per folder, and the
     * rows between folders (or past the last) are checked by stat. */
    for (int k = 0; k < n && status == SN_OK && !c->stopped; k++) {
        char rel[4096];
        struct stat sb;
        snprintf(rel, sizeof rel, "files/%s", top[k]);
        int have = check__stat(st, rel, &sb) == 0;
        if (have && S_ISDIR(sb.st_mode) && strlen(top[k]) == 2 && check__is_hex(top[k], 2)) {
            status = check__folder(c, top[k]);
            continue;
        }
        if ((status = check__rows_before(c, rel)) != SN_OK)
            break;
        c->res->files++;
        check__unindexed(c, -1, NULL, top[k], rel, have ? &sb : NULL);
    }
    if (status == SN_OK && !c->stopped)
        status = check__rows_before(c, NULL);
out:
    check__free_list(top, n);
    check__free_page(c);
    free(c->last);
    free(c->rows);
    sqlite3_finalize(c->page_q);
    sqlite3_finalize(c->by_id);
    store__reader_put(st, c->db);
    free(c);
    return status;
}
