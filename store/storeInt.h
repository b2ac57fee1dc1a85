/* store/storeInt.h — private to store/: the handle's layout, the schema migrations, the reader
 * pool and small SQLite helpers shared by store*.c. Nothing here is API; tests may include it to
 * reach the migration steps. */
#ifndef SEGNODE_STORE_STOREINT_H
#define SEGNODE_STORE_STOREINT_H

#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>

#include "store/store.h"

#define STORE__SCHEMA_VERSION 5   /* number of entries in the migrations array */
#define STORE__NSTRIPES 256       /* per-SOP-UID locks (hashed) serialising rename + index */
#define STORE__POOL_KEEP 8        /* idle read connections kept open */
#define STORE__BUSY_MS 10000      /* busy_timeout for every connection */
#define STORE__CHECK_RECENT 512   /* newest instance files verified by store_claim */
/* Rows per page read by store_check (store_check.c; tests make it small to page often). */
extern int store__check_page_rows;
#define STORE__BATCH_MAX 256      /* instances per group commit: at most one batch is indexed but
                                     not yet flushed at any time, so a crash leaves at most this
                                     many rows ahead of their files; store_claim's check covers
                                     twice as many (store_commit.c) */

/* Prepared statements of the writer connection (persistent, reset after each use). */
enum {
    STORE__WS_BEGIN = 0,
    STORE__WS_COMMIT,
    STORE__WS_ROLLBACK,
    STORE__WS_SAVEPOINT,
    STORE__WS_RELEASE,
    STORE__WS_ROLLBACK_TO,
    STORE__WS_PATIENT_UPSERT,
    STORE__WS_STUDY_UPSERT,
    STORE__WS_SERIES_UPSERT,
    STORE__WS_INSTANCE_GET,
    STORE__WS_INSTANCE_INSERT,
    STORE__WS_INSTANCE_UPDATE,
    STORE__WS_SERIES_ADD,
    STORE__WS_INSTANCE_DELETE,
    STORE__WS_SYNC_NORMAL,
    STORE__WS_SYNC_FULL,
    STORE__WS_COUNT
};

/* One instance waiting to be indexed by the group commit (lives on the caller's stack). */
typedef struct store__gc_req store__gc_req;
struct store__gc_req {
    const store_instance_meta *meta;
    const char *relpath;               /* files/aa/<sha>.dcm */
    int64_t size, received_ms;
    int needs_sync;                    /* its file and folder entries await the batch's syncfs */
    int keep_file;                     /* failed, but its row may survive: leave the file */
    store_commit_result res;
    int status;
    char err[256];
    int done;                          /* set by the leader under q_mu */
    store__gc_req *next;
};

struct store {
    char *dir, *files_dir, *tmp_dir, *db_path;
    atomic_int fsync_on;
    int one_flush;                     /* index and files share a file system: one syncfs per
                                          batch makes both durable (store_commit.c) */
    int schema_version;

    /* The single writer connection; every write (group commit, sweep, retry) holds w_mu. */
    pthread_mutex_t w_mu;
    sqlite3 *wdb;
    sqlite3_stmt *ws[STORE__WS_COUNT];

    /* Group commit queue. */
    pthread_mutex_t q_mu;
    pthread_cond_t q_cv;
    store__gc_req *q_head, **q_tail;
    int leader;                        /* a thread is running a batch */
    int inflight;                      /* commits between entry and return */
    int closing;

    /* Read connections (WAL readers), taken and returned by store__reader_get/put. */
    pthread_mutex_t r_mu;
    sqlite3 *rpool[STORE__POOL_KEEP];
    int nr;

    pthread_mutex_t stripe[STORE__NSTRIPES];
    atomic_uint_fast64_t tmp_seq;

    int lock_fd;                       /* STORAGE/segnode.lock, held by store_claim; -1 */
};

/* ---- schema (store_schema.c) ---- */

/* The SQL of migration step `i` (0-based: step i takes user_version i to i+1), or NULL. */
const char *store__migration_sql(int i);

/* Bring `db` to schema `target` (<= STORE__SCHEMA_VERSION) in one transaction. *version_out
 * (may be NULL) gets the version after. SN_EDB if the database is newer than `target` knows. */
int store__migrate(sqlite3 *db, int target, int *version_out, char *err, size_t errlen);

/* ---- connections (store.c) ---- */

/* Apply the per-connection settings (busy timeout, foreign keys, match functions). */
int store__conn_setup(sqlite3 *db, char *err, size_t errlen);

/* Borrow a read connection (opened on demand, never blocks on other readers). */
int store__reader_get(store *st, sqlite3 **out, char *err, size_t errlen);
void store__reader_put(store *st, sqlite3 *db);

/* errno of a failed write-side call -> SN_ENOSPC (ENOSPC, EDQUOT) or SN_EIO. */
int store__errno_status(int e);

/* 1 if `path` names a file directly inside this store's tmp/ (made by store_tmp_create): only
 * those may be committed into the store or removed on failure. */
int store__is_tmp(const store *st, const char *path);

/* Where an instance file lives: files/aa/<sha256 of the SOP Instance UID>.dcm, aa = the first
 * byte of the hash. The name comes from a hash of the (validated) UID, never from the UID. One
 * level of 256 folders, all made when the store is opened (store_open): a commit never pays for
 * a mkdir (on ext4 a new folder is placed in a fresh block group, and in a new store that was
 * one mkdir per instance, ~12 % of the ingest CPU), and 256 folders keep 10 million instances
 * at ~40,000 entries each, well within hashed directories. Stores made before used
 * files/aa/bb/: their rows keep their paths and both layouts are read alike. */
typedef struct store__path {
    char relpath[96];                  /* files/aa/<sha>.dcm, relative to the store */
    char abspath[4096];
    char folder[4096];                 /* files/aa */
    int stripe;                        /* index into store.stripe for this UID */
} store__path;
int store__instance_path(const store *st, const char *sop_uid, store__path *out, char *err,
                         size_t errlen);

/* rename(from, p->abspath); if its folder is gone (removed by hand), make it again and retry
 * once. errno is left from the failing call. */
int store__rename_in(const store__path *p, const char *from);

/* SQLite result code -> status (SQLITE_FULL -> SN_ENOSPC, else SN_EDB), message into err. */
int store__dberr(sqlite3 *db, int rc, const char *what, char *err, size_t errlen);

/* Bind text, or NULL when v is NULL or "" (borrowed: SQLITE_STATIC). */
void store__bind_str(sqlite3_stmt *s, int i, const char *v);
/* Bind text exactly as given (NULL -> NULL). */
void store__bind_text(sqlite3_stmt *s, int i, const char *v);

/* Prepare sql into *out; on failure *out is NULL and the status names what. */
int store__prepare(sqlite3 *db, const char *sql, sqlite3_stmt **out, const char *what, char *err,
                   size_t errlen);
/* Step a statement that returns no rows, then finalize it (whatever the result). */
int store__run(sqlite3 *db, sqlite3_stmt *s, const char *what, char *err, size_t errlen);
/* Run one statement without result rows on the writer connection. */
int store__exec(sqlite3 *db, const char *sql, char *err, size_t errlen);

/* ---- matching functions registered on every connection (store_query.c) ---- */
int store__register_functions(sqlite3 *db);

/* DICOM wildcard match of one value against a pattern that may be a backslash list. */
int store__match(const char *pattern, const char *value, int ci);
int store__uid_match(const char *list, const char *value);
int store__date_match(const char *range, const char *value);
/* Person Name: store__match, case-insensitive, with trailing empty components and component
 * groups insignificant in the value and the key ("Doe^Jane^^^" is "Doe^Jane"). */
int store__pn_match(const char *pattern, const char *value);
/* TM: a single value (every time within its precision: "0700" is 07:00:00 to 07:00:59.999999)
 * or a range "A-B", "A-", "-B" (inclusive; A later than B spans midnight). */
int store__time_match(const char *range, const char *value);
/* IS: 1 and *out when `s` is an integer string (spaces around, an optional sign), else 0. */
int store__is_parse(const char *s, long long *out);

/* Index one instance whose file is already durable at `relpath` (patient, study, series,
 * instance rows; series counts; a known SOP Instance UID is updated, moved between series if
 * need be). Runs inside the caller's transaction on the writer connection (w_mu held). Used by
 * the ingest group commit and by store_job_finish. 0 or a status with err filled. */
int store__index_instance(store *st, const store_instance_meta *m, const char *relpath, int64_t size,
                          int64_t received_ms, store_commit_result *res /* OUT */, char *err,
                          size_t errlen);

#endif
