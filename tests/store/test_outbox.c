/* tests/store/test_outbox.c — unit tests of store_outbox.c: store_job_finish (the SEG is
 * indexed as a derived series that is never routed again, the job and source series are done,
 * one outbox row per destination with @caller and unknown peers resolved or failed),
 * store_job_fail, the backoff formula, claim atomicity under threads (a row is claimed once, a
 * peer never has two rows in flight), complete/retry/recover, and per-peer figures.
 * Each test gets its own store under /tmp and builds its sn_config by hand. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/config.h"
#include "common/log.h"
#include "common/status.h"
#include "common/util.h"
#include "store/store.h"
#include "store/storeInt.h"

typedef struct fx {
    char dir[256];
    store *st;
    sn_config *cfg;
    char err[512];
} fx;

#define STUDY "1.2.826.0.1.3680043.2.1"
#define SRC_SERIES "1.2.826.0.1.3680043.2.1.1"
#define SEG_SERIES "1.2.826.0.1.3680043.2.1.2"
#define SEG_SOP "1.2.826.0.1.3680043.2.1.2.1"
#define SEG_CLASS "1.2.840.10008.5.1.4.1.1.66.4"

/* Peers PACS (AE PACS), ARCHIVE (AE ARCH), SCANNER (AE SCANNER1); route0 sends to
 * PACS, @caller, NOPE, ARCHIVE, PACS (a duplicate). */
static sn_config *make_cfg(void)
{
    sn_config *c = calloc(1, sizeof *c);
    sn_strlcpy(c->node.ae_title, "SEGNODE", sizeof c->node.ae_title);
    c->node.stable_after = 1;
    c->npeers = 3;
    c->peers = calloc(3, sizeof *c->peers);
    const char *names[3] = {"PACS", "ARCHIVE", "SCANNER"}, *aes[3] = {"PACS", "ARCH", "SCANNER1"};
    for (int i = 0; i < 3; i++) {
        sn_strlcpy(c->peers[i].name, names[i], sizeof c->peers[i].name);
        sn_strlcpy(c->peers[i].ae_title, aes[i], sizeof c->peers[i].ae_title);
        sn_strlcpy(c->peers[i].host, "127.0.0.1", sizeof c->peers[i].host);
        c->peers[i].port = 104;
    }
    c->nroutes = 1;
    c->routes = calloc(1, sizeof *c->routes);
    sn_strlcpy(c->routes[0].name, "route0", sizeof c->routes[0].name);
    c->routes[0].stable_after = -1;
    const char *to[5] = {"PACS", "@caller", "NOPE", "ARCHIVE", "PACS"};
    for (int i = 0; i < 5; i++)
        sn_strlcpy(c->routes[0].send_to.item[c->routes[0].send_to.n++], to[i], SN_NAME_MAX + 1);
    return c;
}

static int setup(void **state)
{
    fx *f = calloc(1, sizeof *f);
    snprintf(f->dir, sizeof f->dir, "/tmp/sn-test-outbox-XXXXXX");
    if (!mkdtemp(f->dir))
        return -1;
    if (store_open(f->dir, &f->st, f->err, sizeof f->err) != SN_OK) {
        fprintf(stderr, "store_open: %s\n", f->err);
        return -1;
    }
    store_set_fsync(f->st, 0);
    f->cfg = make_cfg();
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fx *f = *state;
    char cmd[600];
    store_close(f->st);
    free(f->cfg->peers);
    free(f->cfg->routes);
    free(f->cfg);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->dir);
    if (system(cmd) != 0)
        fprintf(stderr, "cleanup of %s failed\n", f->dir);
    free(f);
    return 0;
}

static store_instance_meta meta_of(const char *series, const char *sop, const char *modality,
                                   const char *cls)
{
    store_instance_meta m = {
        .patient_id = "PAT1", .patient_name = "Doe^John", .study_uid = STUDY,
        .series_uid = series, .modality = modality, .series_number = 1,
        .sop_class_uid = cls, .sop_instance_uid = sop,
        .transfer_syntax_uid = "1.2.840.10008.1.2.1", .instance_number = 1,
        .calling_ae = "SCANNER1", .called_ae = "SEGNODE",
    };
    return m;
}

static void tmp_with(fx *f, char *tmp, size_t n, const char *data)
{
    assert_int_equal(store_tmp_create(f->st, tmp, n, f->err, sizeof f->err), SN_OK);
    int fd = open(tmp, O_WRONLY | O_TRUNC);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, data, strlen(data)), (ssize_t)strlen(data));
    close(fd);
}

static int64_t sql_int(fx *f, const char *sql)
{
    char path[400];
    sqlite3 *db = NULL;
    sqlite3_stmt *s = NULL;
    int64_t v = -1;
    snprintf(path, sizeof path, "%s/index.sqlite", f->dir);
    assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &s, NULL), SQLITE_OK);
    if (sqlite3_step(s) == SQLITE_ROW)
        v = sqlite3_column_int64(s, 0);
    sqlite3_finalize(s);
    sqlite3_close(db);
    return v;
}

/* A received MR series, swept into one job of route0. Returns the job id. */
static int64_t make_job(fx *f, const char *series, const char *sop)
{
    char tmp[4096];
    store_instance_meta m = meta_of(series, sop, "MR", "1.2.840.10008.5.1.4.1.1.4");
    tmp_with(f, tmp, sizeof tmp, "MR bytes");
    assert_int_equal(store_instance_commit(f->st, tmp, &m, NULL, f->err, sizeof f->err), SN_OK);
    assert_int_equal(store_series_complete(f->st, series, f->cfg, f->err, sizeof f->err), SN_OK);
    char q[256];
    snprintf(q, sizeof q, "SELECT j.id FROM jobs j JOIN series s ON s.id=j.series_id WHERE s.series_uid='%s'",
             series);
    int64_t id = sql_int(f, q);
    assert_true(id > 0);
    return id;
}

typedef struct rows_get {
    int n;
    store_outbox_row r[16];
} rows_get;

static int rows_cb(void *ctx, const store_outbox_row *r)
{
    rows_get *g = ctx;
    if (g->n < 16)
        g->r[g->n] = *r;
    g->n++;
    return 0;
}

static rows_get get_rows(fx *f, int64_t job)
{
    rows_get *g = calloc(1, sizeof *g);
    assert_int_equal(store_outbox_list(f->st, job, rows_cb, g, f->err, sizeof f->err), SN_OK);
    rows_get out = *g;
    free(g);
    return out;
}

/* ---- tests ------------------------------------------------------------------------------------ */

static void test_backoff(void **state)
{
    (void)state;
    assert_int_equal(store_outbox_backoff_ms(1, 5000, 600000), 5000);
    assert_int_equal(store_outbox_backoff_ms(2, 5000, 600000), 10000);
    assert_int_equal(store_outbox_backoff_ms(3, 5000, 600000), 20000);
    assert_int_equal(store_outbox_backoff_ms(7, 5000, 600000), 320000);
    assert_int_equal(store_outbox_backoff_ms(8, 5000, 600000), 600000);    /* capped */
    assert_int_equal(store_outbox_backoff_ms(1000000, 5000, 600000), 600000);
    assert_int_equal(store_outbox_backoff_ms(0, 1000, 2000), 1000);
    assert_int_equal(store_outbox_backoff_ms(3, 1000, 2000), 2000);
    assert_int_equal(store_outbox_backoff_ms(2, 1000, 500), 1000);         /* cap < base */
    assert_int_equal(store_outbox_backoff_ms(70, INT64_MAX / 4, INT64_MAX), INT64_MAX);
    assert_int_equal(store_outbox_backoff_ms(3, 0, 1000), 0);
}

static void test_job_finish_queues(void **state)
{
    fx *f = *state;
    int64_t job = make_job(f, SRC_SERIES, "1.2.826.0.1.3680043.2.1.1.1");
    char tmp[4096];
    store_instance_meta seg = meta_of(SEG_SERIES, SEG_SOP, "SEG", SEG_CLASS);
    tmp_with(f, tmp, sizeof tmp, "SEG bytes");
    assert_int_equal(store_job_finish(f->st, job, tmp, &seg, f->cfg, f->err, sizeof f->err), SN_OK);
    assert_int_equal(access(tmp, F_OK), -1);

    /* job done, source series done, SEG series done and derived, our AE as its source */
    assert_int_equal(sql_int(f, "SELECT state FROM jobs"), STORE_JOB_DONE);
    assert_int_equal(sql_int(f, "SELECT state FROM series WHERE series_uid='" SRC_SERIES "'"), STORE_SERIES_DONE);
    assert_int_equal(sql_int(f, "SELECT state FROM series WHERE series_uid='" SEG_SERIES "'"), STORE_SERIES_DONE);
    char q[200];
    snprintf(q, sizeof q, "SELECT derived_job FROM series WHERE series_uid='%s'", SEG_SERIES);
    assert_int_equal(sql_int(f, q), job);
    assert_int_equal(sql_int(f, "SELECT source_ae='SEGNODE' FROM series WHERE series_uid='" SEG_SERIES "'"), 1);
    assert_int_equal(sql_int(f, "SELECT count(*) FROM instances WHERE sop_instance_uid='" SEG_SOP "'"), 1);

    /* PACS, @caller -> SCANNER, NOPE failed, ARCHIVE; the second PACS is dropped */
    rows_get g = get_rows(f, job);
    assert_int_equal(g.n, 4);
    assert_string_equal(g.r[0].peer, "PACS");
    assert_int_equal(g.r[0].state, STORE_OUTBOX_PENDING);
    assert_string_equal(g.r[0].sop_instance_uid, SEG_SOP);
    assert_int_equal(access(g.r[0].path, R_OK), 0);
    assert_string_equal(g.r[1].peer, "SCANNER");
    assert_int_equal(g.r[1].state, STORE_OUTBOX_PENDING);
    assert_string_equal(g.r[2].peer, "NOPE");
    assert_int_equal(g.r[2].state, STORE_OUTBOX_FAILED);
    assert_non_null(strstr(g.r[2].last_error, "unknown peer NOPE"));
    assert_string_equal(g.r[3].peer, "ARCHIVE");
    assert_int_equal(g.r[0].dimse_status, 0xFFFF);

    /* the SEG received again (a PACS forwarding it back) is not routed: no second job */
    tmp_with(f, tmp, sizeof tmp, "SEG bytes again");
    seg.calling_ae = "PACS";
    assert_int_equal(store_instance_commit(f->st, tmp, &seg, NULL, f->err, sizeof f->err), SN_OK);
    assert_int_equal(sql_int(f, "SELECT state FROM series WHERE series_uid='" SEG_SERIES "'"), STORE_SERIES_DONE);
    int n = -1;
    assert_int_equal(store_sweep(f->st, f->cfg, sn_now_ms() + 3600000, &n, f->err, sizeof f->err), SN_OK);
    assert_int_equal(sql_int(f, "SELECT count(*) FROM jobs"), 1);

    /* finishing twice is refused and changes nothing */
    tmp_with(f, tmp, sizeof tmp, "x");
    assert_int_equal(store_job_finish(f->st, job, tmp, &seg, f->cfg, f->err, sizeof f->err), SN_EINVAL);
    assert_int_equal(access(tmp, F_OK), -1);
    assert_int_equal(get_rows(f, job).n, 4);
    tmp_with(f, tmp, sizeof tmp, "x");
    assert_int_equal(store_job_finish(f->st, 999, tmp, &seg, f->cfg, f->err, sizeof f->err), SN_ENOENT);

    /* per-peer figures */
    store_counts c;
    assert_int_equal(store_counts_get(f->st, &c, f->err, sizeof f->err), SN_OK);
    assert_int_equal(c.outbox_by_state[STORE_OUTBOX_PENDING], 3);
    assert_int_equal(c.outbox_by_state[STORE_OUTBOX_FAILED], 1);
}

static void test_caller_unresolved_and_seg_same_series(void **state)
{
    fx *f = *state;
    f->cfg->peers[2].ae_title[0] = 'X';  /* SCANNER1 is no peer any more */
    int64_t job = make_job(f, SRC_SERIES, "1.2.826.0.1.3680043.2.1.1.1");
    char tmp[4096];
    /* a "SEG" in the source series is refused: nothing indexed, job unchanged */
    store_instance_meta bad = meta_of(SRC_SERIES, SEG_SOP, "SEG", SEG_CLASS);
    tmp_with(f, tmp, sizeof tmp, "SEG bytes");
    assert_int_equal(store_job_finish(f->st, job, tmp, &bad, f->cfg, f->err, sizeof f->err), SN_EINVAL);
    assert_int_equal(sql_int(f, "SELECT count(*) FROM instances"), 1);
    assert_int_equal(sql_int(f, "SELECT state FROM jobs"), STORE_JOB_PENDING);
    assert_int_equal(sql_int(f, "SELECT count(*) FROM outbox"), 0);

    store_instance_meta seg = meta_of(SEG_SERIES, SEG_SOP, "SEG", SEG_CLASS);
    tmp_with(f, tmp, sizeof tmp, "SEG bytes");
    assert_int_equal(store_job_finish(f->st, job, tmp, &seg, f->cfg, f->err, sizeof f->err), SN_OK);
    rows_get g = get_rows(f, job);
    assert_int_equal(g.n, 4);
    assert_string_equal(g.r[1].peer, STORE_OUTBOX_CALLER_PREFIX "SCANNER1");
    assert_int_equal(g.r[1].state, STORE_OUTBOX_FAILED);
    assert_string_equal(g.r[1].last_error, "caller AE SCANNER1 is not a configured peer (no host/port)");
}

static void test_job_fail(void **state)
{
    fx *f = *state;
    int64_t job = make_job(f, SRC_SERIES, "1.2.826.0.1.3680043.2.1.1.1");
    assert_int_equal(store_job_fail(f->st, job, "registration diverged", f->err, sizeof f->err), SN_OK);
    assert_int_equal(sql_int(f, "SELECT state FROM jobs"), STORE_JOB_FAILED);
    assert_int_equal(sql_int(f, "SELECT error='registration diverged' FROM jobs"), 1);
    assert_int_equal(sql_int(f, "SELECT state FROM series"), STORE_SERIES_FAILED);
    assert_int_equal(store_job_fail(f->st, job, "again", f->err, sizeof f->err), SN_EINVAL);
    assert_int_equal(store_job_fail(f->st, 4242, "x", f->err, sizeof f->err), SN_ENOENT);
}

/* Rows for `npeers` peers straight into the table (the claim does not care where they came from). */
static void insert_rows(fx *f, int npeers, int per_peer, int64_t due)
{
    char path[400], *msg = NULL;
    sqlite3 *db = NULL;
    snprintf(path, sizeof path, "%s/index.sqlite", f->dir);
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    sqlite3_busy_timeout(db, 10000);
    assert_int_equal(sqlite3_exec(db, "BEGIN", NULL, NULL, NULL), SQLITE_OK);
    for (int i = 0; i < npeers * per_peer; i++) {
        char sql[300];
        snprintf(sql, sizeof sql,
                 "INSERT INTO outbox(peer, path, state, next_attempt_ms, created_ms, updated_ms)"
                 " VALUES('P%d', 'files/x%d.dcm', 0, %lld, 0, 0)", i % npeers, i, (long long)due);
        assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, &msg), SQLITE_OK);
    }
    assert_int_equal(sqlite3_exec(db, "COMMIT", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
}

#define CL_PEERS 4
#define CL_PER_PEER 40
#define CL_THREADS 6
typedef struct claim_ctx {
    fx *f;
    atomic_int claimed[CL_PEERS * CL_PER_PEER + 1];
    atomic_int in_flight[CL_PEERS];
    atomic_int violations, total;
} claim_ctx;

static void *claim_worker(void *p)
{
    claim_ctx *c = p;
    store_outbox_row *r = malloc(sizeof *r);
    char err[256];
    int idle = 0;
    while (idle < 500) {
        int rc = store_outbox_claim(c->f->st, sn_now_ms(), r, err, sizeof err);
        if (rc == SN_ENOENT) {
            idle++;
            usleep(1000);
            continue;
        }
        assert_int_equal(rc, SN_OK);
        idle = 0;
        int peer = atoi(r->peer + 1);
        if (atomic_fetch_add(&c->in_flight[peer], 1) != 0)
            atomic_fetch_add(&c->violations, 1);
        atomic_fetch_add(&c->claimed[r->id], 1);
        atomic_fetch_add(&c->total, 1);
        assert_int_equal(r->state, STORE_OUTBOX_SENDING);
        assert_int_equal(r->attempts, 1);
        usleep(200);
        atomic_fetch_sub(&c->in_flight[peer], 1);
        assert_int_equal(store_outbox_complete(c->f->st, r->id, 1, 0, NULL, 0, err, sizeof err), SN_OK);
    }
    free(r);
    return NULL;
}

static void test_claim_atomic(void **state)
{
    fx *f = *state;
    insert_rows(f, CL_PEERS, CL_PER_PEER, 0);
    claim_ctx *c = calloc(1, sizeof *c);
    c->f = f;
    pthread_t t[CL_THREADS];
    for (int i = 0; i < CL_THREADS; i++)
        assert_int_equal(pthread_create(&t[i], NULL, claim_worker, c), 0);
    for (int i = 0; i < CL_THREADS; i++)
        pthread_join(t[i], NULL);
    assert_int_equal(atomic_load(&c->total), CL_PEERS * CL_PER_PEER);
    for (int i = 1; i <= CL_PEERS * CL_PER_PEER; i++)
        assert_int_equal(atomic_load(&c->claimed[i]), 1);
    assert_int_equal(atomic_load(&c->violations), 0);
    assert_int_equal(sql_int(f, "SELECT count(*) FROM outbox WHERE state=2 AND sent_ms>0"),
                     CL_PEERS * CL_PER_PEER);
    free(c);
}

static void test_complete_retry_recover(void **state)
{
    fx *f = *state;
    store_outbox_row *r = malloc(sizeof *r);
    int64_t now = sn_now_ms();
    insert_rows(f, 2, 1, now + 60000);   /* P0 row 1, P1 row 2: not due yet */
    assert_int_equal(store_outbox_claim(f->st, now, r, f->err, sizeof f->err), SN_ENOENT);
    assert_int_equal(store_outbox_claim(f->st, now + 60000, r, f->err, sizeof f->err), SN_OK);
    assert_int_equal(r->id, 1);
    assert_true(strstr(r->path, f->dir) == r->path);   /* absolute */

    /* transient failure: pending again, due later, reason and status kept */
    assert_int_equal(store_outbox_complete(f->st, 1, 0, 0xA700, "out of resources", now + 120000,
                                           f->err, sizeof f->err), SN_OK);
    assert_int_equal(store_outbox_complete(f->st, 1, 1, 0, NULL, 0, f->err, sizeof f->err), SN_EINVAL);
    assert_int_equal(store_outbox_complete(f->st, 77, 1, 0, NULL, 0, f->err, sizeof f->err), SN_ENOENT);
    rows_get g = get_rows(f, -1);
    assert_int_equal(g.r[0].state, STORE_OUTBOX_PENDING);
    assert_int_equal(g.r[0].attempts, 1);
    assert_int_equal(g.r[0].next_attempt_ms, now + 120000);
    assert_int_equal(g.r[0].dimse_status, 0xA700);
    assert_string_equal(g.r[0].last_error, "out of resources");

    /* row 2 claimed, then the process "dies": recovery makes it pending and due */
    assert_int_equal(store_outbox_claim(f->st, now + 60000, r, f->err, sizeof f->err), SN_OK);
    assert_int_equal(r->id, 2);
    int n = -1;
    assert_int_equal(store_outbox_recover(f->st, &n, f->err, sizeof f->err), SN_OK);
    assert_int_equal(n, 1);
    /* ... and row 1, waiting out its backoff, is due now too: both are claimable */
    store_outbox_row *r1 = malloc(sizeof *r1);
    assert_int_equal(store_outbox_claim(f->st, sn_now_ms(), r, f->err, sizeof f->err), SN_OK);
    assert_int_equal(store_outbox_claim(f->st, sn_now_ms(), r1, f->err, sizeof f->err), SN_OK);
    assert_int_equal(r->id + r1->id, 3);
    assert_int_equal(r->attempts, 2);
    assert_int_equal(r1->attempts, 2);
    assert_int_equal(store_outbox_complete(f->st, 1, 1, 0, NULL, 0, f->err, sizeof f->err), SN_OK);
    free(r1);
    /* permanent failure, then retried by hand */
    assert_int_equal(store_outbox_complete(f->st, 2, 0, 0x0122, "SOP class not supported", 0,
                                           f->err, sizeof f->err), SN_OK);
    assert_int_equal(store_outbox_retry(f->st, 1, f->err, sizeof f->err), SN_EINVAL);  /* pending */
    assert_int_equal(store_outbox_retry(f->st, 99, f->err, sizeof f->err), SN_ENOENT);
    assert_int_equal(store_outbox_retry(f->st, 2, f->err, sizeof f->err), SN_OK);
    g = get_rows(f, -1);
    assert_int_equal(g.r[1].state, STORE_OUTBOX_PENDING);
    assert_int_equal(g.r[1].attempts, 0);
    assert_string_equal(g.r[1].last_error, "");
    free(r);
}

static int peer_cb(void *ctx, const store_outbox_peer_stat *s)
{
    rows_get *g = ctx;   /* reuse: peer name + counts into a row */
    store_outbox_row *r = &g->r[g->n++];
    sn_strlcpy(r->peer, s->peer, sizeof r->peer);
    r->attempts = (int)s->by_state[STORE_OUTBOX_FAILED];
    r->state = (store_outbox_state)s->by_state[STORE_OUTBOX_SENT];
    sn_strlcpy(r->last_error, s->last_error ? s->last_error : "", sizeof r->last_error);
    r->dimse_status = s->last_dimse_status;
    return 0;
}

static void test_retry_job_and_peer_stats(void **state)
{
    fx *f = *state;
    int64_t job = make_job(f, SRC_SERIES, "1.2.826.0.1.3680043.2.1.1.1");
    char tmp[4096];
    store_instance_meta seg = meta_of(SEG_SERIES, SEG_SOP, "SEG", SEG_CLASS);
    tmp_with(f, tmp, sizeof tmp, "SEG bytes");
    assert_int_equal(store_job_finish(f->st, job, tmp, &seg, f->cfg, f->err, sizeof f->err), SN_OK);
    store_outbox_row *r = malloc(sizeof *r);
    /* PACS sent, SCANNER refused (0x0122), ARCHIVE still pending; NOPE failed at creation */
    for (int i = 0; i < 2; i++) {
        assert_int_equal(store_outbox_claim(f->st, sn_now_ms(), r, f->err, sizeof f->err), SN_OK);
        if (strcmp(r->peer, "PACS") == 0)
            assert_int_equal(store_outbox_complete(f->st, r->id, 1, 0, NULL, 0, f->err, sizeof f->err), SN_OK);
        else
            assert_int_equal(store_outbox_complete(f->st, r->id, 0, 0x0122, "refused", 0, f->err,
                                                   sizeof f->err), SN_OK);
    }
    rows_get *g = calloc(1, sizeof *g);
    assert_int_equal(store_outbox_peer_stats(f->st, peer_cb, g, f->err, sizeof f->err), SN_OK);
    assert_int_equal(g->n, 4);  /* ARCHIVE NOPE PACS SCANNER */
    assert_string_equal(g->r[0].peer, "ARCHIVE");
    assert_string_equal(g->r[2].peer, "PACS");
    assert_int_equal(g->r[2].state, 1);
    assert_string_equal(g->r[2].last_error, "");
    assert_string_equal(g->r[3].peer, "SCANNER");
    assert_int_equal(g->r[3].attempts, 1);
    assert_string_equal(g->r[3].last_error, "refused");
    assert_int_equal(g->r[3].dimse_status, 0x0122);
    free(g);

    int n = -1;
    assert_int_equal(store_outbox_retry_job(f->st, job, &n, f->err, sizeof f->err), SN_OK);
    assert_int_equal(n, 2);   /* SCANNER and NOPE */
    assert_int_equal(sql_int(f, "SELECT count(*) FROM outbox WHERE state=0"), 3);
    assert_int_equal(store_outbox_retry_job(f->st, job, &n, f->err, sizeof f->err), SN_OK);
    assert_int_equal(n, 0);
    assert_int_equal(store_outbox_retry_job(f->st, 555, &n, f->err, sizeof f->err), SN_ENOENT);
    free(r);
}

int main(void)
{
    sn_log_set_level(SN_LOG_LEVEL_OFF);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_backoff),
        cmocka_unit_test_setup_teardown(test_job_finish_queues, setup, teardown),
        cmocka_unit_test_setup_teardown(test_caller_unresolved_and_seg_same_series, setup, teardown),
        cmocka_unit_test_setup_teardown(test_job_fail, setup, teardown),
        cmocka_unit_test_setup_teardown(test_claim_atomic, setup, teardown),
        cmocka_unit_test_setup_teardown(test_complete_retry_recover, setup, teardown),
        cmocka_unit_test_setup_teardown(test_retry_job_and_peer_stats, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
