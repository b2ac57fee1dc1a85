/* store/store_schema.c — the database schema as an ordered list of migration steps.
 * Step i takes PRAGMA user_version from i to i+1; all pending steps run in one transaction, so a
 * database is always at a version this file describes. Never edit a released step: append one.
 * Not here: data access (store.c, store_commit.c, store_series.c, store_query.c). */
#include "store/storeInt.h"

#include "common/status.h"

#include <stdio.h>

/* States are stored as the integers of store_series_state / store_job_state /
 * store_outbox_state (store.h); the CHECKs keep a bad writer from inventing new ones. */
static const char *const store__migrations[STORE__SCHEMA_VERSION] = {
    /* 0 -> 1: the index of what was received, and the jobs made from it. */
    "CREATE TABLE patients("
    "  id INTEGER PRIMARY KEY,"
    "  patient_key TEXT NOT NULL UNIQUE,"          /* Patient ID; '' when absent */
    "  patient_name TEXT, birth_date TEXT, sex TEXT,"
    "  created_ms INTEGER NOT NULL, updated_ms INTEGER NOT NULL);"
    "CREATE TABLE studies("
    "  id INTEGER PRIMARY KEY,"
    "  study_uid TEXT NOT NULL UNIQUE,"
    "  patient_id INTEGER NOT NULL REFERENCES patients(id),"
    "  study_date TEXT, study_time TEXT, description TEXT, accession_number TEXT,"
    "  study_id TEXT, referring_physician TEXT,"
    "  created_ms INTEGER NOT NULL, updated_ms INTEGER NOT NULL);"
    "CREATE INDEX studies_patient ON studies(patient_id);"
    "CREATE TABLE series("
    "  id INTEGER PRIMARY KEY,"
    "  series_uid TEXT NOT NULL UNIQUE,"
    "  study_id INTEGER NOT NULL REFERENCES studies(id),"
    "  modality TEXT, description TEXT, body_part TEXT, frame_of_reference_uid TEXT,"
    "  image_type TEXT,"                            /* of the first instance */
    "  series_number INTEGER,"
    "  source_ae TEXT,"                             /* calling AE of the first instance */
    "  called_ae TEXT,"
    "  first_received_ms INTEGER NOT NULL, last_received_ms INTEGER NOT NULL,"
    "  instances INTEGER NOT NULL DEFAULT 0, bytes INTEGER NOT NULL DEFAULT 0,"
    "  replaced INTEGER NOT NULL DEFAULT 0,"
    "  state INTEGER NOT NULL DEFAULT 0 CHECK(state BETWEEN 0 AND 5),"
    "  state_changed_ms INTEGER NOT NULL,"
    "  stable_ms INTEGER,"                          /* when it last became stable/unrouted */
    "  routes TEXT);"                               /* matched route names, comma-separated */
    "CREATE INDEX series_study ON series(study_id);"
    "CREATE INDEX series_state ON series(state, last_received_ms);"
    "CREATE TABLE instances("
    "  id INTEGER PRIMARY KEY,"
    "  sop_instance_uid TEXT NOT NULL UNIQUE,"
    "  sop_class_uid TEXT NOT NULL,"
    "  series_id INTEGER NOT NULL REFERENCES series(id) ON DELETE CASCADE,"
    "  transfer_syntax_uid TEXT, instance_number INTEGER,"
    "  size INTEGER NOT NULL, path TEXT NOT NULL,"  /* path relative to the storage folder */
    "  received_ms INTEGER NOT NULL);"
    "CREATE INDEX instances_series ON instances(series_id, instance_number);"
    "CREATE INDEX instances_received ON instances(received_ms);"
    "CREATE TABLE jobs("
    "  id INTEGER PRIMARY KEY,"
    "  series_id INTEGER NOT NULL REFERENCES series(id) ON DELETE CASCADE,"
    "  route TEXT NOT NULL, method TEXT NOT NULL,"
    "  state INTEGER NOT NULL DEFAULT 0 CHECK(state BETWEEN 0 AND 3),"
    "  attempts INTEGER NOT NULL DEFAULT 0, error TEXT, calling_ae TEXT,"
    "  created_ms INTEGER NOT NULL, updated_ms INTEGER NOT NULL);"
    "CREATE INDEX jobs_state ON jobs(state, created_ms);"
    "CREATE INDEX jobs_series ON jobs(series_id);"
    "PRAGMA user_version=1;",

    /* 1 -> 2: job leases and timings for the worker, and the outbox. */
    "ALTER TABLE jobs ADD COLUMN lease_until INTEGER;"
    "ALTER TABLE jobs ADD COLUMN timings TEXT;"      /* JSON object, stage -> ms */
    "CREATE TABLE outbox("
    "  id INTEGER PRIMARY KEY,"
    "  job_id INTEGER REFERENCES jobs(id) ON DELETE CASCADE,"  /* NULL: manual send */
    "  peer TEXT NOT NULL, path TEXT NOT NULL,"
    "  state INTEGER NOT NULL DEFAULT 0 CHECK(state BETWEEN 0 AND 3),"
    "  attempts INTEGER NOT NULL DEFAULT 0, next_attempt_ms INTEGER NOT NULL DEFAULT 0,"
    "  last_error TEXT,"
    "  created_ms INTEGER NOT NULL, updated_ms INTEGER NOT NULL);"
    "CREATE INDEX outbox_state ON outbox(state, next_attempt_ms);"
    "CREATE INDEX outbox_job ON outbox(job_id);"
    "PRAGMA user_version=2;",

    /* 2 -> 3: what the outbox sends and what the peer answered; series the node derived.
     * A derived series (the SEG a job made) records its job and stays out of routing: if a
     * copy of it is received again (the PACS forwards it back), the commit path puts it back
     * to receiving (0) and this trigger puts it straight back to done (4), so the sweeper
     * never makes a job of the node's own output. */
    "ALTER TABLE outbox ADD COLUMN sop_instance_uid TEXT;"
    "ALTER TABLE outbox ADD COLUMN dimse_status INTEGER;"     /* last peer status, NULL none */
    "ALTER TABLE outbox ADD COLUMN sent_ms INTEGER;"
    "CREATE INDEX outbox_peer ON outbox(peer, state);"
    "ALTER TABLE series ADD COLUMN derived_job INTEGER;"      /* job that made it; NULL = received */
    "CREATE TRIGGER series_derived_not_routed AFTER UPDATE OF state ON series"
    "  WHEN NEW.derived_job IS NOT NULL AND NEW.state=0"
    "  BEGIN UPDATE series SET state=4 WHERE id=NEW.id; END;"
    "PRAGMA user_version=3;",

    /* 3 -> 4: the job worker (store_jobs.c). A job records who runs it and where, when its
     * current run started, and the job it replaces: a series that got new instances after a
     * job for a route was created gets a new job for that route (the sweeper makes it), which
     * records the previous one in replaces_job; a previous job still pending is superseded
     * (done, with the reason in error; it never ran, so nothing is sent for it). */
    "ALTER TABLE jobs ADD COLUMN worker TEXT;"                /* id of the runner holding it */
    "ALTER TABLE jobs ADD COLUMN device TEXT;"                /* cpu, cuda:N, cpu (fallback ...) */
    "ALTER TABLE jobs ADD COLUMN started_ms INTEGER;"         /* claim of the current/last run */
    "ALTER TABLE jobs ADD COLUMN replaces_job INTEGER;"       /* NULL: the first job */
    "CREATE INDEX jobs_route ON jobs(series_id, route);"
    "CREATE TRIGGER jobs_replacement AFTER INSERT ON jobs BEGIN"
    "  UPDATE jobs SET replaces_job=(SELECT max(p.id) FROM jobs p WHERE p.series_id=NEW.series_id"
    "    AND p.route=NEW.route AND p.id<NEW.id) WHERE id=NEW.id;"
    "  UPDATE jobs SET state=2, lease_until=NULL, updated_ms=NEW.created_ms,"
    "    error='superseded by job '||NEW.id||' (new instances arrived before it ran)'"
    "    WHERE series_id=NEW.series_id AND route=NEW.route AND id<NEW.id AND state=0;"
    "  END;"
    "PRAGMA user_version=4;",

    /* 4 -> 5: the atlas library (store_atlas.c). One row per atlas: where its pre-processed
     * cache lives (working-grid image, MIND-SSC descriptors, labels: pipeline/atlas), what it
     * came from, and its labels with their codes as "number name SCHEME:VALUE" lines, so a route
     * can be checked against them without reading the cache. */
    "CREATE TABLE atlases("
    "  name TEXT PRIMARY KEY,"
    "  modality TEXT NOT NULL,"
    "  series_uid TEXT NOT NULL,"
    "  cache_dir TEXT NOT NULL,"
    "  labels TEXT NOT NULL,"
    "  nx INTEGER, ny INTEGER, nz INTEGER,"
    "  work_mm REAL,"
    "  created_ms INTEGER NOT NULL);"
    "PRAGMA user_version=5;",
};

const char *store__migration_sql(int i)
{
    if (i < 0 || i >= STORE__SCHEMA_VERSION)
        return NULL;
    return store__migrations[i];
}

static int schema__version(sqlite3 *db, int *out, char *err, size_t errlen)
{
    sqlite3_stmt *s = NULL;
    int rc = sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &s, NULL);
    if (rc != SQLITE_OK)
        return store__dberr(db, rc, "read schema version", err, errlen);
    rc = sqlite3_step(s);
    if (rc != SQLITE_ROW) {
        int st = store__dberr(db, rc, "read schema version", err, errlen);
        sqlite3_finalize(s);
        return st;
    }
    *out = sqlite3_column_int(s, 0);
    sqlite3_finalize(s);
    return SN_OK;
}

int store__migrate(sqlite3 *db, int target, int *version_out, char *err, size_t errlen)
{
    int rc, v = 0;
    if (target < 0 || target > STORE__SCHEMA_VERSION)
        return sn_errf(err, errlen, SN_EINVAL, "no schema version %d", target);
    /* IMMEDIATE: two processes opening the same store must not both migrate. */
    if ((rc = store__exec(db, "BEGIN IMMEDIATE", err, errlen)) != SN_OK)
        return rc;
    if ((rc = schema__version(db, &v, err, errlen)) != SN_OK)
        goto err;
    if (v > STORE__SCHEMA_VERSION || v > target) {
        rc = sn_errf(err, errlen, SN_EDB,
                     "database schema version %d is newer than this segnode knows (%d); "
                     "refusing to open it", v, target);
        goto err;
    }
    for (int i = v; i < target; i++) {
        char *msg = NULL;
        int r = sqlite3_exec(db, store__migrations[i], NULL, NULL, &msg);
        if (r != SQLITE_OK) {
            rc = sn_errf(err, errlen, r == SQLITE_FULL ? SN_ENOSPC : SN_EDB,
                         "schema migration %d -> %d: %s", i, i + 1, msg ? msg : sqlite3_errstr(r));
            sqlite3_free(msg);
            goto err;
        }
    }
    if ((rc = store__exec(db, "COMMIT", err, errlen)) != SN_OK)
        goto err;
    if (version_out)
        *version_out = target > v ? target : v;
    return SN_OK;
err:
    sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    return rc;
}
