/* store/store.h — the node's durable state: instance files on disk plus one SQLite index
 * (WAL) holding patients, studies, series (with their state machine), instances, jobs and the
 * outbox. Every arrow of the data flow is a row here, so a crash loses nothing acknowledged.
 *
 * Layout under the storage folder:
 *   index.sqlite            the database (schema versioned, migrated on open)
 *   files/aa/<sha256>.dcm   instance files; the name is the SHA-256 of the SOP Instance UID,
 *                           never a string from the network (aa: its first byte; the 256
 *                           folders are made on open)
 *   tmp/                    files being received; emptied on open (never acknowledged)
 *
 * Thread-safety: one `store` handle may be used from any number of threads at once. */
#ifndef SEGNODE_STORE_STORE_H
#define SEGNODE_STORE_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "common/config.h"

typedef struct store store;

/* Open (creating if needed) the store under `dir`: make folders, open the database in WAL mode,
 * apply migrations. On success *out is a new handle. Any number of processes may have a store
 * open (the daemon and admin commands); opening repairs nothing (see store_claim).
 * Errors: SN_EIO (folder), SN_EDB (database, newer schema than this binary knows). */
int store_open(const char *dir, store **out, char *err, size_t errlen);

/* Make this handle the store's owner — the daemon, `segnode serve` — until store_close: an
 * exclusive lock on STORAGE/segnode.lock (its text: the owner's pid), then the start-up repairs
 * only an owner may make, because in another process they would race the owner's commits:
 * temp files of writers that are gone are deleted, and the newest rows (STORE__CHECK_RECENT by
 * id and by received time) are checked against their files — a row whose file is missing or of
 * another size (a crash between a group commit's index write and its flush, a disk restored
 * from an older backup) is dropped with an ERROR line. *n_dropped (may be NULL) = rows dropped.
 * SN_EBUSY: another process owns the store (the message names its pid); SN_EIO: lock file. */
int store_claim(store *st, int *n_dropped, char *err, size_t errlen);

/* The pid of the process that owns the store (store_claim) when it is not this handle, else 0:
 * for admin commands, whether a daemon runs on this storage, HTTP port or not. Never blocks;
 * -1 when the owner's pid cannot be read (a daemon runs, pid unknown). */
long store_owner(const store *st);

/* Close the handle; accepts NULL. Waits for in-flight commits. */
void store_close(store *st);

/* Folder the store lives in (borrowed, valid until store_close). */
const char *store_dir(const store *st);

/* fsync instance files and their folders in store_instance_commit (default on; [node] fsync).
 * Off trades crash safety of acknowledged files for speed; the index is always synchronous.
 * Any thread, any time; affects commits that start afterwards. */
void store_set_fsync(store *st, int on);

/* ---- ingest (the SCP's C-STORE path) ---------------------------------------------------- */

/* Make a new unique temp file path under tmp/ (the file is created empty, mode 0640) into
 * out[outlen]. The caller writes the complete DICOM file (with meta header) there, then calls
 * store_instance_commit, or store_tmp_discard on failure. */
int store_tmp_create(store *st, char *out, size_t outlen, char *err, size_t errlen);

/* Delete a temp file that will not be committed (abort, bad dataset). Accepts NULL. */
void store_tmp_discard(store *st, const char *tmp_path);

/* Start writing the dirty pages of a temp file being received (any fd open on it) to disk now,
 * without waiting: the flush before Success (store_instance_commit) then finds most of the data
 * already written, so disk writes overlap the network transfer instead of following it. A no-op
 * when fsync is off (store_set_fsync) or the file system cannot do it. */
void store_tmp_writeback(store *st, int fd);

/* What the index records of an instance, read from its dataset by the caller. Strings are
 * borrowed; NULL or "" means absent. The UIDs must pass sn_uid_valid (checked again here). */
typedef struct store_instance_meta {
    /* patient */
    const char *patient_id, *patient_name, *patient_birth_date, *patient_sex;
    /* study */
    const char *study_uid, *study_date, *study_time, *study_description, *accession_number,
        *study_id, *referring_physician;
    /* series */
    const char *series_uid, *modality, *series_description, *body_part, *frame_of_reference_uid,
        *image_type;
    int series_number;                 /* -1 if absent */
    /* instance */
    const char *sop_class_uid, *sop_instance_uid, *transfer_syntax_uid;
    int instance_number;               /* -1 if absent */
    /* provenance */
    const char *calling_ae, *called_ae;
} store_instance_meta;

typedef struct store_commit_result {
    int replaced;                      /* 1 if this SOP Instance UID was already stored */
    int64_t size;                      /* bytes of the stored file */
    int64_t series_id;                 /* row id of the series */
} store_commit_result;

/* Make the instance at `tmp_path` durable and indexed: fsync the file, rename it to its final
 * path, fsync the folder, and insert/replace its rows in one transaction that also updates the
 * series (instance count, last received, state back to `receiving` if it had become stable).
 * Returns only after all of that is on disk: the caller may then send Success.
 * A SOP Instance UID already stored is replaced atomically (one row, counted in `replaced`).
 * On any failure the temp file is removed and nothing is indexed.
 * Errors: SN_EINVAL (missing/malformed UIDs), SN_ENOSPC, SN_EIO, SN_EDB. */
int store_instance_commit(store *st, const char *tmp_path, const store_instance_meta *meta,
                          store_commit_result *res /* OUT, may be NULL */, char *err, size_t errlen);

/* ---- series state machine --------------------------------------------------------------- */

/* Series states, in order of a normal life. */
typedef enum store_series_state {
    STORE_SERIES_RECEIVING = 0,  /* instances arriving */
    STORE_SERIES_STABLE,         /* complete; jobs were created for matching routes */
    STORE_SERIES_UNROUTED,       /* complete; no route matched */
    STORE_SERIES_PROCESSING,     /* a job for it is running (later issues) */
    STORE_SERIES_DONE,           /* all its jobs finished */
    STORE_SERIES_FAILED,         /* a job for it failed */
    STORE_SERIES__COUNT
} store_series_state;
const char *store_series_state_name(store_series_state s);

/* Mark series complete now (association released by a peer with stable_on_release) and create
 * one pending job per matching route of `cfg` (or mark it unrouted). No-op if not receiving.
 * Errors: SN_ENOENT (no such series), SN_EDB. */
int store_series_complete(store *st, const char *series_uid, const sn_config *cfg,
                          char *err, size_t errlen);

/* Route a stored, complete series again with `cfg` (an admin added or changed a route, or
 * wants it segmented again): one pending job per matching route (file order, `continue` as at
 * completion), or for [route `route`] alone when non-NULL, whether it matches or not. A route
 * with a pending or running job for the series already gets no second one (*n_skipped). When a
 * job is created the series becomes `stable` (its jobs pending); otherwise nothing changes.
 * *n_created, *n_skipped may be NULL. SN_ENOENT: no such series or route; SN_EBUSY: the series
 * is still receiving (it is routed when complete). */
int store_series_route(store *st, const char *series_uid, const sn_config *cfg, const char *route,
                       int *n_created, int *n_skipped, char *err, size_t errlen);

/* The sweeper: every series still `receiving` whose last instance arrived more than its route's
 * stable_after (else the node's) seconds before `now_ms` becomes stable (+ jobs) or unrouted.
 * *n_completed (may be NULL) gets how many series changed. */
int store_sweep(store *st, const sn_config *cfg, int64_t now_ms, int *n_completed,
                char *err, size_t errlen);

/* ---- queries for admins, C-FIND and /metrics --------------------------------------------- */

typedef struct store_series_row {
    int64_t id;
    const char *series_uid, *study_uid, *patient_id, *patient_name, *modality,
        *series_description, *body_part, *frame_of_reference_uid, *source_ae;
    int series_number;
    int64_t instances;                 /* distinct instances stored */
    int64_t bytes;
    int64_t replaced;                  /* times an instance was received again */
    int64_t first_received_ms, last_received_ms;
    store_series_state state;
} store_series_row;

/* Call `cb` for each series (newest first), or only the one with `series_uid` if non-NULL.
 * Row strings are valid only during the callback. cb returns non-zero to stop early. */
typedef int (*store_series_cb)(void *ctx, const store_series_row *row);
int store_series_list(store *st, const char *series_uid, store_series_cb cb, void *ctx,
                      char *err, size_t errlen);

/* Paths of the instance files of a series, sorted by instance number then SOP Instance UID.
 * cb gets (ctx, sop_instance_uid, sop_class_uid, absolute path). */
typedef int (*store_instance_cb)(void *ctx, const char *sop_instance_uid,
                                 const char *sop_class_uid, const char *path);
int store_instance_list(store *st, const char *series_uid, store_instance_cb cb, void *ctx,
                        char *err, size_t errlen);

/* Study, series and image-level C-FIND (Study Root). Each key is NULL/"" (or only '*') for
 * universal match, else matched as DICOM does: `*` and `?` wildcards for IDs, names and
 * descriptions (Person Names ignore trailing empty components), exact for UIDs (a
 * backslash-separated UID list matches any), "YYYYMMDD-YYYYMMDD" ranges for dates, single
 * values and "HHMMSS-HHMMSS" ranges for Study Time (matched on its own, not with the date), an
 * integer for Series Number (SERIES level only; store_find_series returns SN_EINVAL for a key
 * that is not an integer, and err says so). */
typedef struct store_find_query {
    const char *patient_id, *patient_name, *study_uid, *study_date, *accession_number,
        *study_description, *modality /* modalities in study / series modality */, *series_uid,
        *study_time, *study_id, *series_number,
        /* IMAGE level only: SOP Instance UID (single or list), SOP Class UID (single or list),
         * Instance Number (an integer, as Series Number) */
        *sop_instance_uid, *sop_class_uid, *instance_number,
        /* every level: Patient's Birth Date (as Study Date), Patient's Sex (exact, or with
         * wildcards), Referring Physician's Name (as Patient's Name) */
        *patient_birth_date, *patient_sex, *referring_physician;
    /* nkeys 0: every matching row. Else only the rows of these keys (store_find_row.key, from
     * an earlier call with the same matching keys) that still match, in the same order: an SCP
     * lists the keys first and fetches the answers a few at a time as it sends them, so its
     * memory does not grow with the answer. */
    const int64_t *keys;
    size_t nkeys;
} store_find_query;
typedef struct store_find_row {
    int64_t key;   /* the row at the query's level (study, series, instance), for store_find_query.key */
    const char *patient_id, *patient_name, *patient_birth_date, *patient_sex, *study_uid,
        *study_date, *study_time, *study_description, *accession_number, *study_id,
        *referring_physician, *modalities_in_study /* backslash-separated */;
    int64_t study_series, study_instances;
    /* series level only (NULL/-1 at study level) */
    const char *series_uid, *modality, *series_description, *body_part;
    int series_number;
    int64_t series_instances;
    /* image level only (NULL/-1 above it) */
    const char *sop_instance_uid, *sop_class_uid;
    int instance_number;
} store_find_row;
typedef int (*store_find_cb)(void *ctx, const store_find_row *row);
int store_find_studies(store *st, const store_find_query *q, store_find_cb cb, void *ctx,
                       char *err, size_t errlen);
int store_find_series(store *st, const store_find_query *q, store_find_cb cb, void *ctx,
                      char *err, size_t errlen);
/* Image (instance) level: every study and series key as at SERIES level, plus the IMAGE keys;
 * SN_EINVAL for a Series or Instance Number key that is not an integer. */
int store_find_instances(store *st, const store_find_query *q, store_find_cb cb, void *ctx,
                         char *err, size_t errlen);

/* ---- jobs (created by the sweeper; run by the pipeline in later issues) ------------------- */

typedef enum store_job_state {
    STORE_JOB_PENDING = 0, STORE_JOB_RUNNING, STORE_JOB_DONE, STORE_JOB_FAILED, STORE_JOB__COUNT
} store_job_state;
const char *store_job_state_name(store_job_state s);

typedef struct store_job_row {
    int64_t id, series_id;
    const char *series_uid, *route, *method, *error, *calling_ae;
    store_job_state state;
    int attempts;
    int64_t created_ms, updated_ms;
} store_job_row;
typedef int (*store_job_cb)(void *ctx, const store_job_row *row);
int store_job_list(store *st, store_job_cb cb, void *ctx, char *err, size_t errlen);

/* Put a failed (or done) job back to pending. SN_ENOENT if there is no such job, SN_EINVAL if it
 * is pending or running. */
int store_job_retry(store *st, int64_t job_id, char *err, size_t errlen);

/* ---- the job worker's side of jobs (store_jobs.c) ------------------------------------------
 *
 * A runner (tools/segnode/worker.c) claims a job with a lease, renews the lease while the job
 * runs (heartbeat), and ends it with store_job_finish or store_job_fail. A runner that dies
 * leaves the job `running` with a lease that runs out; store_job_recover (called by the worker
 * at start and while idle) puts such jobs back to `pending` — the attempt the dead run used stays
 * counted — or fails them once they used job_max_attempts runs. Replacement jobs (late
 * instances): see schema step 3 -> 4 in store_schema.c; the new job's replaces_job names the
 * previous job of the same series and route. */

/* A claimed job. Fixed buffers so it outlives the query. */
typedef struct store_job_claimed {
    int64_t id, series_id;
    char series_uid[65];
    char route[SN_NAME_MAX + 1];
    char method[32];
    char calling_ae[SN_AE_MAX + 1];
    int attempts;                      /* runs started, this one included */
    int64_t created_ms;
    int64_t lease_until;               /* wall-clock ms */
    int64_t replaces_job;              /* 0: none */
    int64_t last_received_ms, stable_ms;  /* of the series, for the wait_stable timing */
} store_job_claimed;

/* Claim the pending job that arrived first — oldest job first (created_ms), then the series
 * that started arriving first, then id, so jobs of a route are started in arrival order — whose
 * series is not `receiving` (new instances are still coming: its job is superseded when the
 * sweeper makes the next one). Atomically (one write transaction, also across processes): the
 * job becomes `running` with attempts + 1, worker = worker_id (borrowed), started_ms = now_ms,
 * lease_until = now_ms + lease_ms; its series becomes `processing`. SN_ENOENT when none. */
int store_job_claim(store *st, const char *worker_id, int64_t lease_ms, int64_t now_ms,
                    store_job_claimed *out /* OUT */, char *err, size_t errlen);

/* Renew the lease of running job `job_id` held by `worker_id` to now_ms + lease_ms.
 * SN_ENOENT when the job is no longer running under this worker (recovered by another runner,
 * retried, failed by an admin): the caller should abandon it. */
int store_job_heartbeat(store *st, int64_t job_id, const char *worker_id, int64_t lease_ms,
                        int64_t now_ms, char *err, size_t errlen);

/* Jobs `running` whose lease ended before now_ms: back to `pending` (error says the run was
 * interrupted), or `failed` ("gave up after N runs ...") when attempts >= max_attempts, their
 * series then `failed` once none of its jobs is left to run. *n_requeued, *n_failed may be NULL. */
int store_job_recover(store *st, int64_t now_ms, int max_attempts, int *n_requeued, int *n_failed,
                      char *err, size_t errlen);

/* Give a running job back without counting the run (the node is stopping): `pending`, attempts
 * - 1, lease cleared. SN_ENOENT when not running under worker_id. */
int store_job_release(store *st, int64_t job_id, const char *worker_id, char *err, size_t errlen);

/* Record the job's per-stage timings (a JSON object, borrowed; see worker.h for the keys) and
 * the device it ran on (borrowed, may be NULL = unchanged). SN_ENOENT no such job. */
int store_job_set_timings(store *st, int64_t job_id, const char *timings_json, char *err,
                          size_t errlen);
int store_job_set_device(store *st, int64_t job_id, const char *device, char *err, size_t errlen);

/* A job with what the worker recorded. Strings valid only during the callback; NULL if unset. */
typedef struct store_job_detail {
    store_job_row job;
    const char *timings;               /* JSON object or NULL */
    const char *device, *worker;
    int64_t started_ms, lease_until;   /* 0 if unset */
    int64_t replaces_job;              /* 0: none */
    int64_t send_ms;                   /* last outbox row sent - job end; -1 if none sent */
    int64_t last_received_ms, stable_ms;  /* of its series (0 if unset) */
} store_job_detail;
typedef int (*store_job_detail_cb)(void *ctx, const store_job_detail *d);

/* Jobs newest first, or only job `job_id` when >= 0, or only jobs in `state` when state_filter
 * >= 0. cb returns non-zero to stop. */
int store_job_list_detail(store *st, int64_t job_id, int state_filter, store_job_detail_cb cb,
                          void *ctx, char *err, size_t errlen);

/* ---- outbox (one row per SEG and destination; filled and drained by later issues) -------- */

typedef enum store_outbox_state {
    STORE_OUTBOX_PENDING = 0, STORE_OUTBOX_SENDING, STORE_OUTBOX_SENT, STORE_OUTBOX_FAILED,
    STORE_OUTBOX__COUNT
} store_outbox_state;
const char *store_outbox_state_name(store_outbox_state s);

/* ---- job results and the outbox (store_outbox.c) ----------------------------------------
 *
 * Delivery is at least once, made idempotent by the SOP Instance UID: a row is `sending` while
 * a sender holds it; a node that dies then leaves it `sending`, and store_outbox_recover (run by
 * the daemon's sender at start) puts it back to `pending`, so the SEG is sent again. The peer
 * may already hold it; C-STORE of a SOP Instance UID the peer has replaces (PACS: deduplicates)
 * rather than adds, so the PACS ends up with exactly one instance. What is never done is two
 * concurrent sends of one row or of one file to one peer: a peer has at most one row `sending`
 * at a time (also across processes: the claim is one SQL statement). */

/* Finish job `job_id` with its result, the SEG file at `seg_tmp_path` (made with
 * store_tmp_create; consumed: moved into the store, or removed on failure). In order:
 *   1. the file is made durable under its hash name like a received instance (same layout and
 *      fsync rules as store_instance_commit);
 *   2. ONE transaction indexes it (patient/study/series from `seg_meta`; the source AE recorded
 *      is our own [node] ae_title, seg_meta's calling/called AE are ignored), marks its series
 *      `done` and derived from this job (the sweeper never routes a series the node made, even
 *      when a copy of it is received again later), sets the job `done`, the source series `done`
 *      once none of its jobs is left to run (`failed` if one failed), and inserts one outbox row
 *      per destination of the job's route in `cfg` (send_to; `@caller` = the [peer] whose
 *      ae_title sent the series). Destinations are de-duplicated by peer. A destination that
 *      cannot be resolved gets a row that is `failed` at once with the reason ("unknown peer
 *      X", "caller AE X is not a configured peer (no host/port)"), visible in `segnode jobs`;
 *      `segnode jobs retry` re-resolves it after the config is fixed. A route no longer in
 *      `cfg` creates no rows and leaves a note in the job's error.
 * On failure nothing is indexed and the job is unchanged. Any thread.
 * Errors: SN_ENOENT (no such job), SN_EINVAL (job already done/failed, bad meta, not a temp
 * file of this store), SN_EBUSY (closing), SN_ENOSPC, SN_EIO, SN_EDB. */
int store_job_finish(store *st, int64_t job_id, const char *seg_tmp_path,
                     const store_instance_meta *seg_meta, const sn_config *cfg,
                     char *err, size_t errlen);

/* Mark job `job_id` failed with `reason` (borrowed; NULL = "failed") and its series `failed`
 * once none of its jobs is left to run. Errors: SN_ENOENT, SN_EINVAL (already done/failed),
 * SN_EDB. */
int store_job_fail(store *st, int64_t job_id, const char *reason, char *err, size_t errlen);

#define STORE_OUTBOX_CALLER_PREFIX "@caller:"  /* peer of an unresolved @caller row + the AE */

/* One outbox row. Fixed buffers so a claimed row outlives the query. */
typedef struct store_outbox_row {
    int64_t id;
    int64_t job_id;                    /* 0: not made by a job */
    char peer[SN_NAME_MAX + 32];       /* [peer NAME], or "@caller:AE" when unresolved */
    char path[4096];                   /* absolute path of the file to send */
    char sop_instance_uid[65];         /* "" if unknown */
    store_outbox_state state;
    int attempts;                      /* sends started (a claim counts one) */
    int64_t next_attempt_ms;           /* pending: not before this wall-clock time */
    unsigned dimse_status;             /* the peer's last DIMSE status; 0xFFFF none */
    char last_error[512];              /* reason of the last failed attempt, "" if none */
    int64_t created_ms, updated_ms, sent_ms /* 0 if not sent */;
} store_outbox_row;

/* Claim the due row (pending, next_attempt_ms <= now_ms) that waited longest, among peers that
 * have no row `sending` now, and mark it `sending` with attempts + 1, atomically (one SQL
 * statement: two threads or processes never get the same row, and a peer never has two rows in
 * flight). *out gets the row as claimed. SN_ENOENT when nothing is due. */
int store_outbox_claim(store *st, int64_t now_ms, store_outbox_row *out /* OUT */,
                       char *err, size_t errlen);

/* Record the outcome of a claimed (`sending`) row: ok -> `sent`; else with next_attempt_ms > 0
 * -> `pending` again, due then; else `failed` for good. dimse_status (0xFFFF none) and `error`
 * (borrowed, may be NULL) are kept for admins. SN_ENOENT no such row, SN_EINVAL not sending. */
int store_outbox_complete(store *st, int64_t id, int ok, unsigned dimse_status,
                          const char *error, int64_t next_attempt_ms, char *err, size_t errlen);

/* Rows left `sending` by a process that died go back to `pending`, due now (see the delivery
 * note above), and pending rows waiting out a backoff become due now (a restart is often the
 * fix; their attempts still count). Only the daemon's sender calls this, at its start:
 * store_open does not, because admin commands open the store while the daemon may be sending.
 * *n (may be NULL) = rows that were `sending`. */
int store_outbox_recover(store *st, int *n, char *err, size_t errlen);

/* Call `cb` for each row (oldest first) of job `job_id`, or of every job when job_id < 0.
 * The row is valid only during the callback; cb returns non-zero to stop. */
typedef int (*store_outbox_cb)(void *ctx, const store_outbox_row *row);
int store_outbox_list(store *st, int64_t job_id, store_outbox_cb cb, void *ctx,
                      char *err, size_t errlen);

/* Rows not sent (pending, sending, failed), most recently changed first, at most `limit`
 * (<= 0: all); for /status. Same callback contract as store_outbox_list. */
int store_outbox_list_unsent(store *st, int limit, store_outbox_cb cb, void *ctx,
                             char *err, size_t errlen);

/* Put failed row `id` back to `pending`, due now, attempts 0, error cleared.
 * SN_ENOENT no such row, SN_EINVAL not failed. */
int store_outbox_retry(store *st, int64_t id, char *err, size_t errlen);

/* store_outbox_retry for every failed row of job `job_id`; *n (may be NULL) = rows re-queued
 * (0 is not an error). SN_ENOENT if there is no such job. */
int store_outbox_retry_job(store *st, int64_t job_id, int *n, char *err, size_t errlen);

/* Per destination: rows by state and the newest error of a row not sent. */
typedef struct store_outbox_peer_stat {
    const char *peer;
    int64_t by_state[STORE_OUTBOX__COUNT];
    const char *last_error;            /* NULL if none */
    unsigned last_dimse_status;        /* 0xFFFF none */
    int64_t last_error_ms;             /* 0 if none */
} store_outbox_peer_stat;
typedef int (*store_outbox_peer_cb)(void *ctx, const store_outbox_peer_stat *s);
int store_outbox_peer_stats(store *st, store_outbox_peer_cb cb, void *ctx, char *err, size_t errlen);

/* Exponential backoff after `attempts` (>= 1) failed tries: min(cap, base * 2^(attempts-1)),
 * in ms, without overflow. attempts < 1 gives base; base <= 0 gives 0. */
int64_t store_outbox_backoff_ms(int attempts, int64_t base_ms, int64_t cap_ms);

/* ---- counts for `segnode status` and /metrics --------------------------------------------- */

typedef struct store_counts {
    int64_t patients, studies, series, instances, bytes;
    int64_t series_by_state[STORE_SERIES__COUNT];
    int64_t jobs_by_state[STORE_JOB__COUNT];
    int64_t outbox_by_state[STORE_OUTBOX__COUNT];
    int64_t oldest_pending_job_ms;     /* created time of the oldest pending job, 0 if none */
    int64_t last_done_job_ms;          /* newest updated time of a done job, 0 if none */
    int64_t last_sent_ms;              /* newest sent time of an outbox row, 0 if none */
    int schema_version;
} store_counts;
int store_counts_get(store *st, store_counts *out, char *err, size_t errlen);

/* ---- atlas library (store_atlas.c) ------------------------------------------------------------
 * One row per atlas of the multi-atlas method: its name, source, the folder of its pre-processed
 * cache (pipeline/atlas writes and reads it) and its labels with codes. */

typedef struct store_atlas_row {
    const char *name;
    const char *modality;
    const char *series_uid;
    const char *cache_dir;             /* absolute folder of the cache */
    const char *labels;                /* "number name SCHEME:VALUE" lines, '\n'-separated */
    int nx, ny, nz;                    /* source grid */
    double work_mm;                    /* working grid spacing of the cache */
    int64_t created_ms;
} store_atlas_row;
typedef int (*store_atlas_cb)(void *ctx, const store_atlas_row *r);

/* Insert or replace the atlas `r->name` (strings borrowed). created_ms 0 = now. */
int store_atlas_put(store *st, const store_atlas_row *r, char *err, size_t errlen);

/* Atlases by name, or only `name` when non-NULL (SN_ENOENT when it is not there). Strings are
 * valid during the callback only; cb returns non-zero to stop. */
int store_atlas_list(store *st, const char *name, store_atlas_cb cb, void *ctx, char *err, size_t errlen);

/* Remove atlas `name` (the cache folder is the caller's). SN_ENOENT when absent. */
int store_atlas_delete(store *st, const char *name, char *err, size_t errlen);

/* ---- retention ([node] retention_days; store_retention.c) ---------------------------------- */

typedef struct store_retention_result {
    int64_t series, instances, bytes;  /* deleted */
} store_retention_result;

/* Delete up to `max_series` series whose last instance arrived before `before_ms` and that the
 * node has finished with: state unrouted, done or failed; no job of theirs pending or running;
 * no outbox row pending or sending for their jobs or instances. With them go their instance
 * rows and files, their jobs and outbox rows, and their study and patient when nothing else is
 * left in them. Oldest first, in one write transaction; files are removed after it commits. */
int store_retention(store *st, int64_t before_ms, int max_series, store_retention_result *res,
                    char *err, size_t errlen);

/* Delete one series now (`segnode series delete`): its files, rows, jobs (pending ones too) and
 * outbox rows, deliveries of its instances not yet made, and its study and patient when empty.
 * SN_ENOENT when there is no such series; SN_EBUSY (the reason in err) while it is receiving,
 * a job runs on it or a SEG of it is being sent. */
int store_series_delete(store *st, const char *series_uid, store_retention_result *res, char *err,
                        size_t errlen);

/* ---- consistency check (`segnode store check`) --------------------------------------------- */

/* What store_check found for one file or row. */
typedef enum store_check_kind {
    STORE_CHECK_MISSING,    /* an indexed instance whose file is missing */
    STORE_CHECK_SIZE,       /* an indexed instance whose file has another size than indexed */
    STORE_CHECK_ORPHAN,     /* an instance file under files/ that no row names, older than
                               orphan_min_age_s: left by a crash between rename and index
                               (never acknowledged) or copied in by hand */
    STORE_CHECK_RECENT,     /* the same, but younger: may be a commit in flight; not a problem */
    STORE_CHECK_STRAY       /* an entry under files/ that is not an instance file name (never
                               touched) */
} store_check_kind;

typedef struct store_check_item {
    store_check_kind kind;
    const char *path;                  /* relative to the storage folder */
    const char *sop_instance_uid;      /* MISSING and SIZE; else NULL */
    int64_t indexed_size;              /* MISSING and SIZE; else -1 */
    int64_t file_size;                 /* SIZE, ORPHAN, RECENT; else -1 */
    int64_t age_s;                     /* ORPHAN, RECENT: seconds since the file was written */
    int removed;                       /* ORPHAN: removed (opts.remove_orphans) */
} store_check_item;

typedef struct store_check_opts {
    int remove_orphans;                /* unlink ORPHAN files */
    int64_t orphan_min_age_s;          /* an unindexed file younger than this is RECENT
                                          (default 3600 when 0; at least 60) */
} store_check_opts;

typedef struct store_check_result {
    int64_t rows, files;               /* instance rows and entries under files/ looked at */
    int64_t ok, missing, size, orphans, removed, recent, stray;
    int64_t indexed_bytes;             /* sum of the sizes of the rows that are ok */
} store_check_result;

/* Compare the index with files/: every instance row against its file (exists, size), every
 * entry under files/ against the rows. One stat per file; the rows are read by path in pages of
 * bounded size, each its own short read transaction, so a running node keeps ingesting (what
 * changes during the check is read again before it is reported). `cb` (may be NULL) gets each
 * finding; strings valid during the call; non-zero stops. Rows are never changed.
 * Returns SN_OK when the check ran (findings are in *res), else an error. */
typedef int (*store_check_cb)(void *ctx, const store_check_item *it);
int store_check(store *st, const store_check_opts *opts, store_check_cb cb, void *ctx,
                store_check_result *res, char *err, size_t errlen);

/* ---- backup (`segnode store backup`) ------------------------------------------------------- */

typedef struct store_backup_result {
    int64_t bytes;                     /* size of the copy */
    int64_t patients, studies, series, instances, jobs, outbox;   /* rows in the copy */
} store_backup_result;

/* A consistent copy of the index as of one moment into `dest`, safe while the daemon runs:
 * `VACUUM INTO` on a read-only connection (one read transaction; in WAL mode the daemon's
 * writers go on), so the copy is compact, needs no -wal file and opens with store_open. It is
 * written as dest.partial, synced, checked (PRAGMA quick_check, row counts into *res, may be
 * NULL), renamed to dest and its folder synced. The instance files are not copied: copy
 * files/ after this, so every row of the copy finds its file (a file is always in place before
 * its row is). SN_EEXIST: dest exists; SN_EIO: its folder; SN_EDB: SQLite (reason in err). */
int store_backup(store *st, const char *dest, store_backup_result *res, char *err, size_t errlen);

#endif
