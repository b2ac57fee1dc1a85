/* tools/segnode/outbox.c — the daemon's sender. Each of [node] outbox_workers threads claims the
 * due outbox row that waited longest (store_outbox_claim: a peer never has two rows in flight,
 * so a dead peer holds one thread and the other destinations go on), C-STOREs its file to the
 * peer as the CURRENT config describes it, and records the outcome:
 *   sent        the peer answered Success or Warning (Bxxx, 0001, 0107, 0116: stored, with
 *               a remark; logged with the status, see scp_store_status_delivered);
 *   retry       it may pass: network error or timeout, peer down, association rejected
 *               transient, DIMSE A7xx (out of resources) -> pending again after
 *               min(outbox_retry_cap, outbox_retry_base * 2^(attempts-1)) s, until
 *               outbox_max_attempts tries, then failed with the last reason;
 *   failed      it will not pass by waiting: SOP class / presentation context not accepted,
 *               association rejected permanent, any other DIMSE failure status (A9xx, Cxxx,
 *               the other 01xx, 02xx), the file unreadable, the peer no longer configured.
 * Rows queued by another process (admin `jobs retry`, a job runner) are found by polling.
 * Not here: the rows' states (store_outbox.c), the DICOM association (scp/scu.cc). */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "common/status.h"
#include "common/util.h"
#include "scp/scp.h"
#include "tools/segnode/outbox.h"

#define OUTBOX_LOG "outbox"
#define OUTBOX_POLL_MS 500      /* idle poll for rows queued elsewhere or coming due */
#define OUTBOX_DB_ERROR_MS 2000 /* pause after a database error */

struct outbox {
    store *st;
    outbox_config_fn get_config;
    void *ctx;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int stopping;
    unsigned wakes;              /* bumped by outbox_wake */
    int nthreads;
    pthread_t *threads;
};

/* Sleep up to ms unless woken or stopping. */
static void outbox__idle(outbox *ob, int ms)
{
    struct timespec ts = sn_mono_deadline(ms);
    pthread_mutex_lock(&ob->mu);
    unsigned w = ob->wakes;
    while (!ob->stopping && ob->wakes == w)
        if (pthread_cond_timedwait(&ob->cv, &ob->mu, &ts) == ETIMEDOUT)
            break;
    pthread_mutex_unlock(&ob->mu);
}

static int outbox__stopping(outbox *ob)
{
    pthread_mutex_lock(&ob->mu);
    int s = ob->stopping;
    pthread_mutex_unlock(&ob->mu);
    return s;
}

/* May waiting help? (see the file comment) */
static int outbox__transient(int status, unsigned dimse, const char *why)
{
    /* A7xx Refused: Out of Resources, and 0213 Resource limitation (PS3.7 C.5): the peer may
     * have room later. Every other failure status is the object's or the peer's policy. */
    if (dimse != 0xFFFFu && dimse != 0)
        return (dimse & 0xFF00u) == 0xA700u || dimse == 0x0213u;
    switch (status) {
    case SN_ENET:
    case SN_ETIMEOUT:
    case SN_ENOMEM:
    case SN_EINTERNAL:
        return 1;
    case SN_EREFUSED:
        /* Association rejected: DCMTK's text says "Rejected Transient" or "Rejected Permanent";
         * "accepted no presentation context" and "refused SOP class" are permanent. */
        return why && strstr(why, "Transient") != NULL;
    default:
        return 0;
    }
}

/* The peer a row names, in `cfg`: by [peer] name, or by AE title for "@caller:AE". */
static const sn_peer *outbox__peer(const sn_config *cfg, const char *name)
{
    size_t n = strlen(STORE_OUTBOX_CALLER_PREFIX);
    if (strncmp(name, STORE_OUTBOX_CALLER_PREFIX, n) == 0)
        return name[n] ? sn_config_peer_by_ae(cfg, name + n) : NULL;
    return sn_config_peer_by_name(cfg, name);
}

/* Record a row's outcome. The index failing (disk full, a lock held too long) would leave the
 * row 'sending', and the claim skips a peer with a row in flight: every later SEG to that peer
 * would wait for the next start. So a database error is retried (1 s, doubling to 30 s) until
 * it succeeds or the node stops; a row that is gone (deleted meanwhile) is not. */
static void outbox__record(outbox *ob, const store_outbox_row *r, int ok, unsigned dimse,
                           const char *why, int64_t next_ms)
{
    char err[512] = "";
    int rc, tries = 0, delay = 1000;
    while ((rc = store_outbox_complete(ob->st, r->id, ok, dimse, why, next_ms, err, sizeof err)) != SN_OK) {
        if (rc != SN_EDB && rc != SN_ENOSPC) {
            SN_LOG_ERROR(OUTBOX_LOG, "row %lld: cannot record the outcome: %s", (long long)r->id, err);
            return;
        }
        if (tries++ % 10 == 0)
            SN_LOG_ERROR(OUTBOX_LOG, "row %lld: cannot record the outcome (%s); retrying, peer %s waits",
                         (long long)r->id, err, r->peer);
        if (outbox__stopping(ob)) {
            SN_LOG_WARN(OUTBOX_LOG, "row %lld stays 'sending' at stop; the next start queues it again",
                        (long long)r->id);
            return;
        }
        outbox__idle(ob, delay);
        delay = delay < 15000 ? delay * 2 : 30000;
    }
    if (tries)
        SN_LOG_INFO(OUTBOX_LOG, "row %lld: outcome recorded after %d retries", (long long)r->id, tries);
}

static void outbox__deliver(outbox *ob, const store_outbox_row *r)
{
    sn_config *cfg = ob->get_config(ob->ctx);
    const sn_peer *peer = outbox__peer(cfg, r->peer);
    char why[600] = "", err[512] = "";
    unsigned dimse = 0xFFFFu;
    int status;

    if (!peer) {
        if (strncmp(r->peer, STORE_OUTBOX_CALLER_PREFIX, strlen(STORE_OUTBOX_CALLER_PREFIX)) == 0)
            snprintf(why, sizeof why, "caller AE %s is not a configured peer (no host/port)",
                     r->peer + strlen(STORE_OUTBOX_CALLER_PREFIX));
        else
            snprintf(why, sizeof why, "peer %s is not in the configuration", r->peer);
        status = SN_ECONFIG;
    } else {
        scp_send_status ss;
        const char *files[1] = {r->path};
        memset(&ss, 0, sizeof ss);
        ss.dimse_status = 0xFFFFu;
        int64_t t0 = sn_mono_ms();
        int rc = scp_scu_send(cfg, peer, files, 1, &ss, err, sizeof err);
        /* The file's own outcome is the precise one; the call's covers a failure before it. */
        status = ss.status != SN_OK ? ss.status : rc;
        dimse = ss.dimse_status;
        if (status == SN_OK && dimse != 0 && dimse != 0xFFFFu) {
            SN_LOG_WARN(OUTBOX_LOG, "sent %s to %s (%s at %s:%d), job %lld, attempt %d, %lld ms, "
                        "with warning status 0x%04x%s%s",
                        r->sop_instance_uid[0] ? r->sop_instance_uid : r->path, peer->name,
                        peer->ae_title, peer->host, peer->port, (long long)r->job_id, r->attempts,
                        (long long)(sn_mono_ms() - t0), dimse, ss.error[0] ? ": " : "", ss.error);
        } else if (status == SN_OK) {
            SN_LOG_INFO(OUTBOX_LOG, "sent %s to %s (%s at %s:%d), job %lld, attempt %d, %lld ms",
                        r->sop_instance_uid[0] ? r->sop_instance_uid : r->path, peer->name,
                        peer->ae_title, peer->host, peer->port, (long long)r->job_id, r->attempts,
                        (long long)(sn_mono_ms() - t0));
        }
        if (status == SN_OK) {
            outbox__record(ob, r, 1, dimse == 0xFFFFu ? 0 : dimse, NULL, 0);
            sn_config_unref(cfg);
            return;
        }
        snprintf(why, sizeof why, "%s", ss.error[0] ? ss.error : err[0] ? err : sn_strerror(status));
    }

    int max = cfg->node.outbox_max_attempts > 0 ? cfg->node.outbox_max_attempts : 1;
    if (outbox__transient(status, dimse, why) && r->attempts < max) {
        int64_t wait = store_outbox_backoff_ms(r->attempts, (int64_t)cfg->node.outbox_retry_base * 1000,
                                               (int64_t)cfg->node.outbox_retry_cap * 1000);
        SN_LOG_WARN(OUTBOX_LOG, "row %lld to %s failed (attempt %d/%d): %s; retry in %.1f s",
                    (long long)r->id, r->peer, r->attempts, max, why, (double)wait / 1000.0);
        outbox__record(ob, r, 0, dimse, why, sn_now_ms() + wait);
    } else {
        char final[700];
        if (outbox__transient(status, dimse, why))
            snprintf(final, sizeof final, "gave up after %d attempts: %s", r->attempts, why);
        else
            snprintf(final, sizeof final, "%s", why);
        SN_LOG_ERROR(OUTBOX_LOG, "row %lld to %s failed for good (attempt %d): %s", (long long)r->id,
                     r->peer, r->attempts, final);
        outbox__record(ob, r, 0, dimse, final, 0);
    }
    sn_config_unref(cfg);
}

static void *outbox__thread(void *arg)
{
    outbox *ob = arg;
    store_outbox_row *r = malloc(sizeof *r);
    char err[512];
    if (!r) {
        SN_LOG_ERROR(OUTBOX_LOG, "out of memory; sender thread stops");
        return NULL;
    }
    while (!outbox__stopping(ob)) {
        err[0] = '\0';
        int rc = store_outbox_claim(ob->st, sn_now_ms(), r, err, sizeof err);
        if (rc == SN_ENOENT) {
            outbox__idle(ob, OUTBOX_POLL_MS);
        } else if (rc != SN_OK) {
            SN_LOG_ERROR(OUTBOX_LOG, "claim: %s", err);
            outbox__idle(ob, OUTBOX_DB_ERROR_MS);
        } else {
            outbox__deliver(ob, r);
        }
    }
    free(r);
    return NULL;
}

int outbox_start(store *st, outbox_config_fn get_config, void *ctx, outbox **out,
                 char *err, size_t errlen)
{
    int n = 0, rc;
    if (!st || !get_config || !out)
        return sn_errf(err, errlen, SN_EINVAL, "outbox_start: bad arguments");
    *out = NULL;
    if ((rc = store_outbox_recover(st, NULL, err, errlen)) != SN_OK)
        return rc;
    outbox *ob = calloc(1, sizeof *ob);
    if (!ob)
        return sn_errf(err, errlen, SN_ENOMEM, "out of memory");
    ob->st = st;
    ob->get_config = get_config;
    ob->ctx = ctx;
    pthread_mutex_init(&ob->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&ob->cv, &ca);
    pthread_condattr_destroy(&ca);

    sn_config *cfg = get_config(ctx);
    n = cfg->node.outbox_workers > 0 ? cfg->node.outbox_workers : 1;
    SN_LOG_INFO(OUTBOX_LOG, "%d sender thread(s); retry after %d s doubling up to %d s, %d attempts",
                n, cfg->node.outbox_retry_base, cfg->node.outbox_retry_cap, cfg->node.outbox_max_attempts);
    sn_config_unref(cfg);
    ob->threads = calloc((size_t)n, sizeof *ob->threads);
    if (!ob->threads) {
        outbox_stop(ob);
        return sn_errf(err, errlen, SN_ENOMEM, "out of memory");
    }
    for (int i = 0; i < n; i++) {
        if ((rc = pthread_create(&ob->threads[i], NULL, outbox__thread, ob)) != 0) {
            outbox_stop(ob);
            return sn_errf(err, errlen, SN_EINTERNAL, "start sender thread: %s", strerror(rc));
        }
        ob->nthreads++;
    }
    *out = ob;
    return SN_OK;
}

void outbox_wake(outbox *ob)
{
    if (!ob)
        return;
    pthread_mutex_lock(&ob->mu);
    ob->wakes++;
    pthread_cond_broadcast(&ob->cv);
    pthread_mutex_unlock(&ob->mu);
}

void outbox_stop(outbox *ob)
{
    if (!ob)
        return;
    pthread_mutex_lock(&ob->mu);
    ob->stopping = 1;
    pthread_cond_broadcast(&ob->cv);
    pthread_mutex_unlock(&ob->mu);
    for (int i = 0; i < ob->nthreads; i++)
        pthread_join(ob->threads[i], NULL);
    free(ob->threads);
    pthread_cond_destroy(&ob->cv);
    pthread_mutex_destroy(&ob->mu);
    free(ob);
}
