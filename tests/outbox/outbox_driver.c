/* tests/outbox/outbox_driver.c — stands in for the job worker (issue 9) in the outbox tests:
 * finishes a job with a given SEG file through store_job_finish, against the store a running
 * `segnode serve` uses (SQLite WAL: two processes are fine), so the daemon's sender finds the
 * rows. The SEG's attributes come from the command line (the test reads them with pydicom), so
 * this links no DICOM library.
 *
 * usage: outbox_driver finish STORAGE CONFIG JOB_ID SEG_FILE key=value...
 *   keys: patient_id patient_name study_uid series_uid modality sop_class_uid sop_instance_uid
 *         transfer_syntax_uid series_number instance_number
 * Prints the number of outbox rows of the job; exit 0 on success, 1 on failure, 2 on usage. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/config.h"
#include "common/log.h"
#include "common/status.h"
#include "store/store.h"

static int copy_file(const char *from, const char *to)
{
    char buf[65536];
    int in = open(from, O_RDONLY), out = open(to, O_WRONLY | O_TRUNC);
    ssize_t n = 0;
    if (in < 0 || out < 0)
        goto err;
    while ((n = read(in, buf, sizeof buf)) > 0)
        if (write(out, buf, (size_t)n) != n)
            goto err;
    if (n < 0)
        goto err;
    close(in);
    return close(out) == 0 ? 0 : -1;
err:
    fprintf(stderr, "copy %s -> %s: %s\n", from, to, strerror(errno));
    if (in >= 0)
        close(in);
    if (out >= 0)
        close(out);
    return -1;
}

static int count_cb(void *ctx, const store_outbox_row *r)
{
    (void)r;
    ++*(int *)ctx;
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 6 || strcmp(argv[1], "finish") != 0) {
        fprintf(stderr, "usage: outbox_driver finish STORAGE CONFIG JOB_ID SEG_FILE key=value...\n");
        return 2;
    }
    store_instance_meta m;
    memset(&m, 0, sizeof m);
    m.series_number = m.instance_number = -1;
    for (int i = 6; i < argc; i++) {
        char *eq = strchr(argv[i], '=');
        if (!eq) {
            fprintf(stderr, "bad argument %s\n", argv[i]);
            return 2;
        }
        *eq = '\0';
        const char *k = argv[i], *v = eq + 1;
        if (!strcmp(k, "patient_id")) m.patient_id = v;
        else if (!strcmp(k, "patient_name")) m.patient_name = v;
        else if (!strcmp(k, "study_uid")) m.study_uid = v;
        else if (!strcmp(k, "series_uid")) m.series_uid = v;
        else if (!strcmp(k, "modality")) m.modality = v;
        else if (!strcmp(k, "sop_class_uid")) m.sop_class_uid = v;
        else if (!strcmp(k, "sop_instance_uid")) m.sop_instance_uid = v;
        else if (!strcmp(k, "transfer_syntax_uid")) m.transfer_syntax_uid = v;
        else if (!strcmp(k, "series_number")) m.series_number = atoi(v);
        else if (!strcmp(k, "instance_number")) m.instance_number = atoi(v);
        else {
            fprintf(stderr, "unknown key %s\n", k);
            return 2;
        }
    }
    sn_log_set_level(SN_LOG_LEVEL_INFO);
    char err[1024] = "", tmp[4096];
    sn_config *cfg = NULL;
    store *st = NULL;
    int rc = 1, n = 0;
    int64_t job = strtoll(argv[4], NULL, 10);
    if (sn_config_load(argv[3], &cfg, err, sizeof err) != SN_OK ||
        store_open(argv[2], &st, err, sizeof err) != SN_OK ||
        store_tmp_create(st, tmp, sizeof tmp, err, sizeof err) != SN_OK) {
        fprintf(stderr, "outbox_driver: %s\n", err);
        goto out;
    }
    if (copy_file(argv[5], tmp) != 0) {
        store_tmp_discard(st, tmp);
        goto out;
    }
    if (store_job_finish(st, job, tmp, &m, cfg, err, sizeof err) != SN_OK ||
        store_outbox_list(st, job, count_cb, &n, err, sizeof err) != SN_OK) {
        fprintf(stderr, "outbox_driver: %s\n", err);
        goto out;
    }
    printf("%d\n", n);
    rc = 0;
out:
    store_close(st);
    sn_config_unref(cfg);
    return rc;
}
