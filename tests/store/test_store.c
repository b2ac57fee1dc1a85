/* tests/store/test_store.c — unit tests of store/: schema and migrations, the durable commit path
 * (hash paths, replace, move, refusal, temp cleanup), concurrent writers, the series state
 * machine with routes, C-FIND matching, jobs and counts, the index-against-files check,
 * retention and series deletion. Each test gets its own folder under
 * /tmp and builds its sn_config by hand. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/config.h"
#include "common/log.h"
#include "common/status.h"
#include "common/util.h"
#include "store/store.h"
#include "store/storeInt.h"

/* ---- fixtures ---------------------------------------------------------------------------- */

typedef struct fx {
    char dir[256];
    store *st;
    char err[512];
} fx;

static void rm_rf(const char *path)
{
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", path);
    if (system(cmd) != 0)
        fprintf(stderr, "cleanup of %s failed\n", path);
}

static int setup(void **state)
{
    fx *f = calloc(1, sizeof *f);
    snprintf(f->dir, sizeof f->dir, "/tmp/sn-test-store-XXXXXX");
    if (!mkdtemp(f->dir))
        return -1;
    if (store_open(f->dir, &f->st, f->err, sizeof f->err) != SN_OK) {
        fprintf(stderr, "store_open: %s\n", f->err);
        return -1;
    }
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fx *f = *state;
    store_close(f->st);
    rm_rf(f->dir);
    free(f);
    return 0;
}

static void write_file(const char *path, const void *data, size_t n)
{
    int fd = open(path, O_WRONLY | O_TRUNC | O_CREAT, 0640);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, data, n), (ssize_t)n);
    close(fd);
}

static size_t read_file(const char *path, char *buf, size_t cap)
{
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return (size_t)-1;
    ssize_t n = read(fd, buf, cap);
    close(fd);
    return n < 0 ? (size_t)-1 : (size_t)n;
}

static store_instance_meta meta_of(const char *study, const char *series, const char *sop)
{
    store_instance_meta m = {
        .patient_id = "PAT1", .patient_name = "Doe^John", .patient_birth_date = "19700101",
        .patient_sex = "M", .study_uid = study, .study_date = "20240115", .study_time = "101500",
        .study_description = "Head MR", .accession_number = "ACC1", .study_id = "1",
        .series_uid = series, .modality = "MR", .series_description = "T1 axial",
        .body_part = "HEAD", .image_type = "ORIGINAL\\PRIMARY\\AXIAL", .series_number = 3,
        .sop_class_uid = "1.2.840.10008.5.1.4.1.1.4", .sop_instance_uid = sop,
        .transfer_syntax_uid = "1.2.840.10008.1.2.1", .instance_number = 1,
        .calling_ae = "SCANNER1", .called_ae = "SEGNODE",
    };
    return m;
}

/* Create a temp file with `data` and commit it. */
static int commit_bytes(fx *f, const store_instance_meta *m, const char *data,
                        store_commit_result *res, char *tmp_out)
{
    char tmp[4096];
    assert_int_equal(store_tmp_create(f->st, tmp, sizeof tmp, f->err, sizeof f->err), SN_OK);
    write_file(tmp, data, strlen(data));
    if (tmp_out)
        strcpy(tmp_out, tmp);
    return store_instance_commit(f->st, tmp, m, res, f->err, sizeof f->err);
}

static void hash_path(const fx *f, const char *uid, char *out, size_t n)
{
    unsigned char md[32];
    unsigned int len = 0;
    char hex[65];
    EVP_Digest(uid, strlen(uid), md, &len, EVP_sha256(), NULL);
    for (int i = 0; i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", md[i]);
    snprintf(out, n, "%s/files/%.2s/%s.dcm", f->dir, hex, hex);
}

static int count_dir(const char *path)
{
    DIR *d = opendir(path);
    int n = 0;
    struct dirent *e;
    if (!d)
        return -1;
    while ((e = readdir(d)) != NULL)
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
            n++;
    closedir(d);
    return n;
}

/* Regular files under `path`, at any depth. */
static int count_files(const char *path)
{
    DIR *d = opendir(path);
    int n = 0;
    struct dirent *e;
    if (!d)
        return -1;
    while ((e = readdir(d)) != NULL) {
        char sub[4096];
        struct stat sb;
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        snprintf(sub, sizeof sub, "%s/%s", path, e->d_name);
        if (lstat(sub, &sb) == 0)
            n += S_ISDIR(sb.st_mode) ? count_files(sub) : 1;
    }
    closedir(d);
    return n;
}

/* Series rows collected by uid. */
typedef struct series_get {
    const char *uid;
    int found;
    store_series_row row;
    char modality[32], source_ae[32];
} series_get;

static int series_get_cb(void *ctx, const store_series_row *r)
{
    series_get *g = ctx;
    g->found++;
    g->row = *r;
    sn_strlcpy(g->modality, r->modality ? r->modality : "", sizeof g->modality);
    sn_strlcpy(g->source_ae, r->source_ae ? r->source_ae : "", sizeof g->source_ae);
    g->row.series_uid = g->row.study_uid = g->row.patient_id = g->row.patient_name = NULL;
    g->row.modality = g->row.series_description = g->row.body_part = NULL;
    g->row.frame_of_reference_uid = g->row.source_ae = NULL;
    return 0;
}

static series_get get_series(fx *f, const char *uid)
{
    series_get g = {.uid = uid};
    assert_int_equal(store_series_list(f->st, uid, series_get_cb, &g, f->err, sizeof f->err), SN_OK);
    return g;
}

static int count_cb(void *ctx, const char *sop, const char *cls, const char *path)
{
    (*(int *)ctx)++;
    return 0;
}

static int instances_of(fx *f, const char *series)
{
    int n = 0;
    assert_int_equal(store_instance_list(f->st, series, count_cb, &n, f->err, sizeof f->err), SN_OK);
    return n;
}

static int64_t sql_int(const char *dir, const char *sql)
{
    char path[512];
    sqlite3 *db;
    sqlite3_stmt *s;
    int64_t v = -1;
    snprintf(path, sizeof path, "%s/index.sqlite", dir);
    assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &s, NULL), SQLITE_OK);
    if (sqlite3_step(s) == SQLITE_ROW)
        v = sqlite3_column_int64(s, 0);
    sqlite3_finalize(s);
    sqlite3_close(db);
    return v;
}

static void sql_exec(const char *dir, const char *sql)
{
    char path[512];
    sqlite3 *db;
    char *msg = NULL;
    snprintf(path, sizeof path, "%s/index.sqlite", dir);
    assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
    sqlite3_busy_timeout(db, 5000);
    sqlite3_exec(db, "PRAGMA foreign_keys=ON", NULL, NULL, NULL);
    if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK)
        fail_msg("%s: %s", sql, msg ? msg : "?");
    sqlite3_close(db);
}

#define STUDY "1.2.826.0.1.3680043.2.1"
#define SER_A "1.2.826.0.1.3680043.3.1"
#define SER_B "1.2.826.0.1.3680043.3.2"
#define SOP_1 "1.2.826.0.1.3680043.4.1"
#define SOP_2 "1.2.826.0.1.3680043.4.2"
#define SOP_3 "1.2.826.0.1.3680043.4.3"

/* ---- schema ------------------------------------------------------------------------------ */

static void test_schema_created(void **state)
{
    fx *f = *state;
    char p[512];
    struct stat sb;
    assert_int_equal(sql_int(f->dir, "PRAGMA user_version"), STORE__SCHEMA_VERSION);
    assert_int_equal(sql_int(f->dir, "SELECT count(*) FROM sqlite_master WHERE type='table' AND name IN"
                                     " ('patients','studies','series','instances','jobs','outbox')"), 6);
    assert_int_equal(sql_int(f->dir, "SELECT count(*) FROM pragma_table_info('jobs')"
                                     " WHERE name IN ('lease_until','timings')"), 2);
    snprintf(p, sizeof p, "%s/files", f->dir);
    assert_int_equal(stat(p, &sb), 0);
    snprintf(p, sizeof p, "%s/tmp", f->dir);
    assert_int_equal(stat(p, &sb), 0);
    store_counts c;
    assert_int_equal(store_counts_get(f->st, &c, f->err, sizeof f->err), SN_OK);
    assert_int_equal(c.schema_version, STORE__SCHEMA_VERSION);
    assert_int_equal(c.instances, 0);
}

static void test_schema_migrates_v1(void **state)
{
    char dir[] = "/tmp/sn-test-store-mig-XXXXXX", path[512], err[512];
    sqlite3 *db;
    store *st;
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/index.sqlite", dir);
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    assert_int_equal(store__migrate(db, 1, NULL, err, sizeof err), SN_OK);
    assert_int_equal(sqlite3_exec(db,
        "INSERT INTO patients(patient_key, created_ms, updated_ms) VALUES('P', 1, 1);"
        "INSERT INTO studies(study_uid, patient_id, created_ms, updated_ms) VALUES('1.2', 1, 1, 1);"
        "INSERT INTO series(series_uid, study_id, first_received_ms, last_received_ms, state_changed_ms,"
        " state) VALUES('1.2.3', 1, 1, 1, 1, 2);"
        "INSERT INTO jobs(series_id, route, method, created_ms, updated_ms) VALUES(1, 'r', 'atlas', 1, 1);",
        NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    assert_int_equal(sql_int(dir, "PRAGMA user_version"), 1);

    assert_int_equal(store_open(dir, &st, err, sizeof err), SN_OK);
    store_close(st);
    assert_int_equal(sql_int(dir, "PRAGMA user_version"), STORE__SCHEMA_VERSION);
    assert_int_equal(sql_int(dir, "SELECT count(*) FROM jobs WHERE lease_until IS NULL"), 1);
    assert_int_equal(sql_int(dir, "SELECT count(*) FROM outbox"), 0);
    assert_int_equal(sql_int(dir, "SELECT state FROM series WHERE series_uid='1.2.3'"), 2);
    rm_rf(dir);
}

static void test_schema_newer_refused(void **state)
{
    char dir[] = "/tmp/sn-test-store-new-XXXXXX", path[512], err[512] = "";
    sqlite3 *db;
    store *st = NULL;
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/index.sqlite", dir);
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, "CREATE TABLE x(a); PRAGMA user_version=99;", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    assert_int_equal(store_open(dir, &st, err, sizeof err), SN_EDB);
    assert_null(st);
    assert_non_null(strstr(err, "newer"));
    assert_int_equal(sql_int(dir, "PRAGMA user_version"), 99);
    rm_rf(dir);
}

/* ---- commit ------------------------------------------------------------------------------ */

static void test_commit_hash_path(void **state)
{
    fx *f = *state;
    store_instance_meta m = meta_of(STUDY, SER_A, SOP_1);
    store_commit_result res;
    char path[512], buf[256], tmp[4096];
    struct stat sb;
    assert_int_equal(commit_bytes(f, &m, "DICM first bytes", &res, tmp), SN_OK);
    assert_int_equal(res.replaced, 0);
    assert_int_equal(res.size, 16);
    assert_true(res.series_id > 0);
    hash_path(f, SOP_1, path, sizeof path);
    size_t n = read_file(path, buf, sizeof buf);
    assert_int_equal(n, 16);
    assert_memory_equal(buf, "DICM first bytes", 16);
    assert_int_not_equal(stat(tmp, &sb), 0); /* the temp file was moved */
    assert_int_equal(sql_int(f->dir, "SELECT count(*) FROM instances"), 1);
    series_get g = get_series(f, SER_A);
    assert_int_equal(g.found, 1);
    assert_int_equal(g.row.instances, 1);
    assert_int_equal(g.row.bytes, 16);
    assert_int_equal(g.row.state, STORE_SERIES_RECEIVING);
    assert_string_equal(g.source_ae, "SCANNER1");
    assert_int_equal(g.row.series_number, 3);
    /* One level of 256 folders, all there from the open on. */
    char files[512];
    snprintf(files, sizeof files, "%s/files", f->dir);
    assert_int_equal(count_dir(files), 256);
    snprintf(files, sizeof files, "%s/files/ff", f->dir);
    assert_int_equal(count_dir(files), 0);
}

/* A folder of the layout removed by hand is made again by the next commit that needs it. */
static void test_commit_folder_removed(void **state)
{
    fx *f = *state;
    store_instance_meta m = meta_of(STUDY, SER_A, SOP_1);
    char path[512], buf[64];
    hash_path(f, SOP_1, path, sizeof path);
    *strrchr(path, '/') = '\0';
    assert_int_equal(rmdir(path), 0);
    assert_int_equal(commit_bytes(f, &m, "again", NULL, NULL), SN_OK);
    hash_path(f, SOP_1, path, sizeof path);
    assert_int_equal(read_file(path, buf, sizeof buf), 5);
    assert_int_equal(sql_int(f->dir, "SELECT count(*) FROM instances"), 1);
}

typedef struct path_get { char path[512]; char sop[80]; } path_get;
static int path_get_cb(void *ctx, const char *sop, const char *cls, const char *path)
{
    path_get *p = ctx;
    sn_strlcpy(p->path, path, sizeof p->path);
    sn_strlcpy(p->sop, sop, sizeof p->sop);
    return 0;
}

static void test_commit_replace(void **state)
{
    fx *f = *state;
    store_instance_meta m = meta_of(STUDY, SER_A, SOP_1);
    store_commit_result res;
    char path[512], buf[256];
    assert_int_equal(commit_bytes(f, &m, "old bytes", &res, NULL), SN_OK);
    assert_int_equal(commit_bytes(f, &m, "the new bytes!", &res, NULL), SN_OK);
    assert_int_equal(res.replaced, 1);
    hash_path(f, SOP_1, path, sizeof path);
    assert_int_equal(read_file(path, buf, sizeof buf), 14);
    assert_memory_equal(buf, "the new bytes!", 14);
    assert_int_equal(sql_int(f->dir, "SELECT count(*) FROM instances"), 1);
    series_get g = get_series(f, SER_A);
    assert_int_equal(g.row.instances, 1);
    assert_int_equal(g.row.replaced, 1);
    assert_int_equal(g.row.bytes, 14);
    path_get pg = {0};
    assert_int_equal(store_instance_list(f->st, SER_A, path_get_cb, &pg, f->err, sizeof f->err), SN_OK);
    assert_string_equal(pg.path, path);
    assert_string_equal(pg.sop, SOP_1);
}

static void test_commit_move_series(void **state)
{
    fx *f = *state;
    store_instance_meta a = meta_of(STUDY, SER_A, SOP_1), a2 = meta_of(STUDY, SER_A, SOP_2);
    store_instance_meta b = meta_of(STUDY, SER_B, SOP_1);
    store_commit_result res;
    assert_int_equal(commit_bytes(f, &a, "12345", &res, NULL), SN_OK);
    assert_int_equal(commit_bytes(f, &a2, "abc", &res, NULL), SN_OK);
    assert_int_equal(commit_bytes(f, &b, "1234567", &res, NULL), SN_OK);
    assert_int_equal(res.replaced, 1);
    series_get ga = get_series(f, SER_A), gb = get_series(f, SER_B);
    assert_int_equal(ga.row.instances, 1);
    assert_int_equal(ga.row.bytes, 3);
    assert_int_equal(gb.row.instances, 1);
    assert_int_equal(gb.row.bytes, 7);
    assert_int_equal(gb.row.id, res.series_id);
    assert_int_equal(instances_of(f, SER_A), 1);
    assert_int_equal(instances_of(f, SER_B), 1);
    assert_int_equal(sql_int(f->dir, "SELECT count(*) FROM instances"), 2);
}

static void test_commit_invalid_refused(void **state)
{
    fx *f = *state;
    char tmp[4096], tmpdir[512];
    struct stat sb;
    const char *bad[] = {"", "1.2.03", "1..2", "1.2.a", "../../etc/passwd",
                         "1.2.3.4.5.6.7.8.9.10.11.12.13.14.15.16.17.18.19.20.21.22.23.24.25.26.27.28.29"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        store_instance_meta m = meta_of(STUDY, SER_A, bad[i]);
        assert_int_equal(commit_bytes(f, &m, "x", NULL, tmp), SN_EINVAL);
        assert_int_not_equal(stat(tmp, &sb), 0);
        m = meta_of(bad[i], SER_A, SOP_1);
        assert_int_equal(commit_bytes(f, &m, "x", NULL, tmp), SN_EINVAL);
        m = meta_of(STUDY, bad[i], SOP_1);
        assert_int_equal(commit_bytes(f, &m, "x", NULL, tmp), SN_EINVAL);
    }
    store_instance_meta m = meta_of(STUDY, SER_A, SOP_1);
    m.sop_class_uid = NULL;
    assert_int_equal(commit_bytes(f, &m, "x", NULL, tmp), SN_EINVAL);
    assert_int_equal(store_instance_commit(f->st, "/etc/hostname", &m, NULL, f->err, sizeof f->err), SN_EINVAL);
    assert_int_equal(stat("/etc/hostname", &sb), 0);
    assert_int_equal(sql_int(f->dir, "SELECT count(*) FROM instances"), 0);
    assert_int_equal(sql_int(f->dir, "SELECT count(*) FROM series"), 0);
    snprintf(tmpdir, sizeof tmpdir, "%s/tmp", f->dir);
    assert_int_equal(count_dir(tmpdir), 0);
    snprintf(tmpdir, sizeof tmpdir, "%s/files", f->dir);
    assert_int_equal(count_files(tmpdir), 0);
}

/* The index write fails after the rename: a new file is removed, nothing is indexed; a
 * replacement keeps its row (pointing at the same path, now with the new bytes). */
static void test_commit_db_failure(void **state)
{
    fx *f = *state;
    char path[512], dbpath[512], tmp[4096], buf[64], files[512];
    struct stat sb;
    sqlite3 *db;
    store_instance_meta m1 = meta_of(STUDY, SER_A, SOP_1), m2 = meta_of(STUDY, SER_B, SOP_2);
    assert_int_equal(commit_bytes(f, &m1, "kept", NULL, NULL), SN_OK);

    snprintf(dbpath, sizeof dbpath, "%s/index.sqlite", f->dir);
    assert_int_equal(sqlite3_open(dbpath, &db), SQLITE_OK);
    sqlite3_busy_timeout(db, 5000);
    assert_int_equal(sqlite3_exec(db,
        "CREATE TRIGGER no_insert BEFORE INSERT ON instances BEGIN SELECT RAISE(ABORT, 'boom'); END;"
        "CREATE TRIGGER no_update BEFORE UPDATE ON instances BEGIN SELECT RAISE(ABORT, 'boom'); END;",
        NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);

    assert_int_equal(commit_bytes(f, &m2, "lost", NULL, tmp), SN_EDB);
    assert_non_null(strstr(f->err, "boom"));
    hash_path(f, SOP_2, path, sizeof path);
    assert_int_not_equal(stat(path, &sb), 0);
    assert_int_not_equal(stat(tmp, &sb), 0);
    assert_int_equal(get_series(f, SER_B).found, 0);

    assert_int_equal(commit_bytes(f, &m1, "newer", NULL, NULL), SN_EDB);
    hash_path(f, SOP_1, path, sizeof path);
    assert_int_equal(read_file(path, buf, sizeof buf), 5);
    assert_memory_equal(buf, "newer", 5);
    assert_int_equal(instances_of(f, SER_A), 1);
    assert_int_equal(get_series(f, SER_A).row.replaced, 0);
    snprintf(files, sizeof files, "%s/tmp", f->dir);
    assert_int_equal(count_dir(files), 0);

    /* The store keeps working once the cause is gone. */
    assert_int_equal(sqlite3_open(dbpath, &db), SQLITE_OK);
    sqlite3_busy_timeout(db, 5000);
    assert_int_equal(sqlite3_exec(db, "DROP TRIGGER no_insert; DROP TRIGGER no_update;", NULL, NULL, NULL),
                     SQLITE_OK);
    sqlite3_close(db);
    assert_int_equal(commit_bytes(f, &m2, "back", NULL, NULL), SN_OK);
    assert_int_equal(instances_of(f, SER_B), 1);
}

/* Temp files are the owner's to clean (store_claim), not every opener's: an admin command
 * opening the store beside a receiving daemon must not touch them. */
static void test_tmp_cleaned_on_claim(void **state)
{
    fx *f = *state;
    char tmp[4096], tmpdir[512];
    assert_int_equal(store_tmp_create(f->st, tmp, sizeof tmp, f->err, sizeof f->err), SN_OK);
    write_file(tmp, "partial", 7);
    assert_int_equal(store_tmp_create(f->st, tmp, sizeof tmp, f->err, sizeof f->err), SN_OK);
    snprintf(tmpdir, sizeof tmpdir, "%s/tmp", f->dir);
    assert_int_equal(count_dir(tmpdir), 2);
    store_close(f->st);
    assert_int_equal(store_open(f->dir, &f->st, f->err, sizeof f->err), SN_OK);
    assert_int_equal(count_dir(tmpdir), 2);
    assert_int_equal(store_claim(f->st, NULL, f->err, sizeof f->err), SN_OK);
    assert_int_equal(count_dir(tmpdir), 0);
    store_tmp_discard(f->st, NULL);
    assert_int_equal(store_tmp_create(f->st, tmp, sizeof tmp, f->err, sizeof f->err), SN_OK);
    store_tmp_discard(f->st, tmp);
    assert_int_equal(count_dir(tmpdir), 0);
}

/* The owner's start-up check drops a row whose file is gone and one whose file has another
 * size; a plain open (an admin command beside the daemon) drops nothing: in the daemon a
 * replacement's new file is renamed in before its row is updated, and such a row is good. */
static void test_missing_file_dropped_on_claim(void **state)
{
    fx *f = *state;
    store_instance_meta m = meta_of(STUDY, SER_A, SOP_1), m2 = meta_of(STUDY, SER_A, SOP_2),
                        m3 = meta_of(STUDY, SER_A, SOP_3);
    char path[512];
    int nd = -1;
    assert_int_equal(commit_bytes(f, &m, "one", NULL, NULL), SN_OK);
    assert_int_equal(commit_bytes(f, &m2, "two", NULL, NULL), SN_OK);
    assert_int_equal(commit_bytes(f, &m3, "three", NULL, NULL), SN_OK);
    store_close(f->st);
    hash_path(f, SOP_2, path, sizeof path);
    assert_int_equal(unlink(path), 0);
    hash_path(f, SOP_3, path, sizeof path);
    write_file(path, "3", 1);
    assert_int_equal(store_open(f->dir, &f->st, f->err, sizeof f->err), SN_OK);
    assert_int_equal(instances_of(f, SER_A), 3);
    assert_int_equal(store_claim(f->st, &nd, f->err, sizeof f->err), SN_OK);
    assert_int_equal(nd, 2);
    assert_int_equal(instances_of(f, SER_A), 1);
    assert_int_equal(get_series(f, SER_A).row.instances, 1);
    assert_int_equal(get_series(f, SER_A).row.bytes, 3);
}

/* One owner at a time: a second claim fails with SN_EBUSY naming the owner's pid, until the
 * owner closes (or dies: the kernel drops a dead process's flock). */
static void test_claim_exclusive(void **state)
{
    fx *f = *state;
    store *other = NULL;
    char want[64];
    assert_int_equal(store_owner(f->st), 0);
    assert_int_equal(store_claim(f->st, NULL, f->err, sizeof f->err), SN_OK);
    assert_int_equal(store_owner(f->st), 0); /* itself */
    assert_int_equal(store_open(f->dir, &other, f->err, sizeof f->err), SN_OK);
    assert_int_equal(store_owner(other), (long)getpid());
    assert_int_equal(store_claim(other, NULL, f->err, sizeof f->err), SN_EBUSY);
    snprintf(want, sizeof want, "(pid %ld)", (long)getpid());
    assert_non_null(strstr(f->err, want));
    assert_non_null(strstr(f->err, "in use by another segnode serve"));
    store_close(f->st);
    f->st = NULL;
    assert_int_equal(store_owner(other), 0);
    assert_int_equal(store_claim(other, NULL, f->err, sizeof f->err), SN_OK);
    f->st = other;
}

/* A crash between a batch's index commit and its flush (store_commit.c) leaves rows among the
 * newest ids whose files may be gone; the start-up check must find them by id even when their
 * received time is not the newest (a clock stepped back), past hundreds of good rows. */
static void test_unflushed_rows_dropped_by_id(void **state)
{
    fx *f = *state;
    char sop[65], data[32], path[512], dbp[1024];
    store_set_fsync(f->st, 0);
    for (int i = 0; i < 600; i++) {
        snprintf(sop, sizeof sop, "1.2.826.0.1.3680043.9.%d", i + 1);
        snprintf(data, sizeof data, "good %d", i);
        store_instance_meta m = meta_of(STUDY, SER_A, sop);
        assert_int_equal(commit_bytes(f, &m, data, NULL, NULL), SN_OK);
    }
    store_instance_meta m = meta_of(STUDY, SER_A, SOP_1);
    assert_int_equal(commit_bytes(f, &m, "last", NULL, NULL), SN_OK);
    store_close(f->st);
    f->st = NULL;
    snprintf(dbp, sizeof dbp, "%s/index.sqlite", f->dir);
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(dbp, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, "UPDATE instances SET received_ms=1 WHERE sop_instance_uid='" SOP_1 "'",
                                  NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    hash_path(f, SOP_1, path, sizeof path);
    assert_int_equal(unlink(path), 0);
    assert_int_equal(store_open(f->dir, &f->st, f->err, sizeof f->err), SN_OK);
    assert_int_equal(store_claim(f->st, NULL, f->err, sizeof f->err), SN_OK);
    assert_int_equal(instances_of(f, SER_A), 600);
    assert_int_equal(get_series(f, SER_A).row.instances, 600);
}


/* store_check, both ways: rows against files (a file removed, a file truncated) and files
 * against rows (an old unindexed instance file is an orphan and is removed only when asked; a
 * fresh one may be a commit in flight and is left; other names are stray and never touched).
 * Pages of 2 rows, so the merge crosses many pages; rows are never changed. */
typedef struct check_seen {
    int n[5];
    char missing_uid[80], orphan_path[200];
} check_seen;

static int check_cb(void *ctx, const store_check_item *it)
{
    check_seen *s = ctx;
    s->n[it->kind]++;
    if (it->kind == STORE_CHECK_MISSING) {
        snprintf(s->missing_uid, sizeof s->missing_uid, "%s", it->sop_instance_uid);
        assert_int_equal(it->indexed_size, 3);
        assert_int_equal(it->file_size, -1);
    }
    if (it->kind == STORE_CHECK_SIZE) {
        assert_int_equal(it->indexed_size, 3);
        assert_int_equal(it->file_size, 1);
    }
    if (it->kind == STORE_CHECK_ORPHAN) {
        snprintf(s->orphan_path, sizeof s->orphan_path, "%s", it->path);
        assert_true(it->age_s >= 7000);
        assert_int_equal(it->file_size, 6);
    }
    return 0;
}

static void test_check_both_ways(void **state)
{
    fx *f = *state;
    char uid[8][64], path[512];
    store_check_result r;
    check_seen seen;
    store_set_fsync(f->st, 0);
    for (int i = 0; i < 8; i++) {
        snprintf(uid[i], sizeof uid[i], "1.2.826.0.1.3680043.4.%d", 100 + i);
        store_instance_meta m = meta_of(STUDY, SER_A, uid[i]);
        assert_int_equal(commit_bytes(f, &m, "abc", NULL, NULL), SN_OK);
    }
    store__check_page_rows = 2;
    memset(&seen, 0, sizeof seen);
    assert_int_equal(store_check(f->st, NULL, check_cb, &seen, &r, f->err, sizeof f->err), SN_OK);
    assert_int_equal(r.rows, 8);
    assert_int_equal(r.files, 8);
    assert_int_equal(r.ok, 8);
    assert_int_equal(r.indexed_bytes, 24);
    assert_int_equal(r.missing + r.size + r.orphans + r.recent + r.stray, 0);

    hash_path(f, uid[2], path, sizeof path);
    assert_int_equal(unlink(path), 0);
    hash_path(f, uid[5], path, sizeof path);
    assert_int_equal(truncate(path, 1), 0);
    /* Unindexed instance files: one written two hours ago, one just now; and two stray names. */
    char old[512], fresh[512], stray[512];
    snprintf(old, sizeof old, "%s/files/7f/7f%062d.dcm", f->dir, 1);
    snprintf(fresh, sizeof fresh, "%s/files/80/80%062d.dcm", f->dir, 2);
    write_file(old, "orphan", 6);
    write_file(fresh, "inflight", 8);
    struct timespec t[2];
    clock_gettime(CLOCK_REALTIME, &t[0]);
    t[0].tv_sec -= 7200;
    t[1] = t[0];
    assert_int_equal(utimensat(AT_FDCWD, old, t, 0), 0);
    snprintf(stray, sizeof stray, "%s/files/README", f->dir);
    write_file(stray, "x", 1);
    snprintf(stray, sizeof stray, "%s/files/03/notes.txt", f->dir);
    write_file(stray, "x", 1);

    memset(&seen, 0, sizeof seen);
    assert_int_equal(store_check(f->st, NULL, check_cb, &seen, &r, f->err, sizeof f->err), SN_OK);
    assert_int_equal(r.rows, 8);
    assert_int_equal(r.files, 7 + 4);
    assert_int_equal(r.ok, 6);
    assert_int_equal(r.missing, 1);
    assert_int_equal(r.size, 1);
    assert_int_equal(r.orphans, 1);
    assert_int_equal(r.removed, 0);
    assert_int_equal(r.recent, 1);
    assert_int_equal(r.stray, 2);
    assert_int_equal(seen.n[STORE_CHECK_MISSING] + seen.n[STORE_CHECK_SIZE] + seen.n[STORE_CHECK_ORPHAN] +
                     seen.n[STORE_CHECK_RECENT] + seen.n[STORE_CHECK_STRAY], 6);
    assert_string_equal(seen.missing_uid, uid[2]);
    assert_string_equal(seen.orphan_path, old + strlen(f->dir) + 1);
    assert_int_equal(access(old, F_OK), 0);

    /* Removal: the orphan only. */
    store_check_opts o = {.remove_orphans = 1};
    memset(&seen, 0, sizeof seen);
    assert_int_equal(store_check(f->st, &o, check_cb, &seen, &r, f->err, sizeof f->err), SN_OK);
    assert_int_equal(r.orphans, 1);
    assert_int_equal(r.removed, 1);
    assert_int_not_equal(access(old, F_OK), 0);
    assert_int_equal(access(fresh, F_OK), 0);
    assert_int_equal(access(stray, F_OK), 0);
    /* A shorter age makes the fresh one an orphan too (at least 60 s: still recent). */
    o.orphan_min_age_s = 1;
    assert_int_equal(store_check(f->st, &o, NULL, NULL, &r, f->err, sizeof f->err), SN_OK);
    assert_int_equal(r.orphans, 0);
    assert_int_equal(r.recent, 1);
    /* Findings are reported, rows never changed. */
    assert_int_equal(sql_int(f->dir, "SELECT count(*) FROM instances"), 8);
    store__check_page_rows = 8192;
}


/* Retention: of series last received two days ago, only those the node is done with go
 * (unrouted, done or failed; no job pending or running; no outbox row pending or sending for
 * their jobs or instances), with their files, jobs and outbox rows, and their study and patient
 * once empty. Recent, receiving and busy series stay; the store checks clean afterwards. */
static void test_retention(void **state)
{
    fx *f = *state;
    char sql[1024], path[512];
    const int64_t day = 86400000, now = sn_now_ms();
    /* series, study, patient, instances, state, age in days, job state (-1 none), outbox (-1 none,
     * else its state; on the job when the series has one, else on its first instance) */
    static const struct {
        const char *series, *study, *patient;
        int n, state, days, job, outbox, deleted;
    } s7[] = {
        {"1.2.826.0.1.3680043.3.11", "1.2.826.0.1.3680043.2.11", "P1", 2, 2, 2, -1, -1, 1}, /* unrouted */
        {"1.2.826.0.1.3680043.3.12", "1.2.826.0.1.3680043.2.11", "P1", 1, 4, 2, 2, 0, 0},   /* SEG pending */
        {"1.2.826.0.1.3680043.3.13", "1.2.826.0.1.3680043.2.13", "P2", 1, 5, 2, 3, 3, 1},   /* failed */
        {"1.2.826.0.1.3680043.3.14", "1.2.826.0.1.3680043.2.11", "P1", 1, 0, 2, -1, -1, 0}, /* receiving */
        {"1.2.826.0.1.3680043.3.15", "1.2.826.0.1.3680043.2.11", "P1", 1, 4, 0, 2, 2, 0},   /* recent */
        {"1.2.826.0.1.3680043.3.16", "1.2.826.0.1.3680043.2.11", "P1", 1, 4, 2, 1, -1, 0},  /* job running */
        {"1.2.826.0.1.3680043.3.17", "1.2.826.0.1.3680043.2.11", "P1", 1, 4, 2, -1, 1, 0},  /* SEG sending */
    };
    store_set_fsync(f->st, 0);
    int k = 0;
    for (size_t i = 0; i < sizeof s7 / sizeof s7[0]; i++) {
        for (int j = 0; j < s7[i].n; j++, k++) {
            char uid[64];
            snprintf(uid, sizeof uid, "1.2.826.0.1.3680043.4.%d", 200 + k);
            store_instance_meta m = meta_of(s7[i].study, s7[i].series, uid);
            m.patient_id = s7[i].patient;
            assert_int_equal(commit_bytes(f, &m, "four", NULL, NULL), SN_OK);
        }
        snprintf(sql, sizeof sql, "UPDATE series SET state=%d, last_received_ms=%lld WHERE series_uid='%s'",
                 s7[i].state, (long long)(now - s7[i].days * day - 1000), s7[i].series);
        sql_exec(f->dir, sql);
        if (s7[i].job >= 0) {
            snprintf(sql, sizeof sql, "INSERT INTO jobs(series_id, route, method, state, attempts, created_ms,"
                     " updated_ms) SELECT id, 'r', 'atlas', %d, 1, 0, 0 FROM series WHERE series_uid='%s'",
                     s7[i].job, s7[i].series);
            sql_exec(f->dir, sql);
        }
        if (s7[i].outbox >= 0) {
            snprintf(sql, sizeof sql, "INSERT INTO outbox(job_id, peer, path, state, created_ms, updated_ms,"
                     " sop_instance_uid) SELECT %s, 'PACS', i.path, %d, 0, 0, %s FROM instances i"
                     " JOIN series s ON s.id=i.series_id WHERE s.series_uid='%s' LIMIT 1",
                     s7[i].job >= 0 ? "(SELECT max(id) FROM jobs)" : "NULL", s7[i].outbox,
                     s7[i].job >= 0 ? "'1.2.3.999'" : "i.sop_instance_uid", s7[i].series);
            sql_exec(f->dir, sql);
        }
    }
    store_retention_result r;
    assert_int_equal(store_retention(f->st, now - day, 10, &r, f->err, sizeof f->err), SN_OK);
    assert_int_equal(r.series, 2);
    assert_int_equal(r.instances, 3);
    assert_int_equal(r.bytes, 12);
    k = 0;
    for (size_t i = 0; i < sizeof s7 / sizeof s7[0]; i++) {
        snprintf(sql, sizeof sql, "SELECT count(*) FROM series WHERE series_uid='%s'", s7[i].series);
        assert_int_equal(sql_int(f->dir, sql), !s7[i].deleted);
        for (int j = 0; j < s7[i].n; j++, k++) {
            char uid[64];
            snprintf(uid, sizeof uid, "1.2.826.0.1.3680043.4.%d", 200 + k);
            hash_path(f, uid, path, sizeof path);
            assert_int_equal(access(path, F_OK) == 0, !s7[i].deleted);
        }
    }
    assert_int_equal(sql_int(f->dir, "SELECT count(*) FROM instances"), 5);
    assert_int_equal(sql_int(f->dir, "SELECT count(*) FROM studies"), 1);   /* ...2.13 went */
    assert_int_equal(sql_int(f->dir, "SELECT count(*) FROM patients"), 1);  /* P2 went */
    assert_int_equal(sql_int(f->dir, "SELECT count(*) FROM jobs"), 3);      /* the failed one went */
    assert_int_equal(sql_int(f->dir, "SELECT count(*) FROM outbox"), 3);
    /* Nothing more to do; the store is consistent. */
    assert_int_equal(store_retention(f->st, now - day, 10, &r, f->err, sizeof f->err), SN_OK);
    assert_int_equal(r.series, 0);
    store_check_result c;
    assert_int_equal(store_check(f->st, NULL, NULL, NULL, &c, f->err, sizeof f->err), SN_OK);
    assert_int_equal(c.ok, 5);
    assert_int_equal(c.missing + c.size + c.orphans + c.recent + c.stray, 0);
    /* One at a time when asked: the SEG delivered, the older series goes first. */
    sql_exec(f->dir, "UPDATE outbox SET state=2");
    assert_int_equal(store_retention(f->st, now - day, 1, &r, f->err, sizeof f->err), SN_OK);
    assert_int_equal(r.series, 1);
    assert_int_equal(store_retention(f->st, now - day, 10, &r, f->err, sizeof f->err), SN_OK);
    assert_int_equal(r.series, 1);
    assert_int_equal(sql_int(f->dir, "SELECT count(*) FROM series"), 3); /* receiving, recent, running */
}


/* store_series_delete: any age, pending jobs and undelivered SEGs go with the series; refused
 * (SN_EBUSY, with the reason) while it receives, a job runs on it or a SEG of it is being sent. */
static void test_series_delete(void **state)
{
    fx *f = *state;
    char sql[768], path[512], uid[64];
    static const struct { const char *series; int state, job, outbox_job, outbox_inst; } s4[] = {
        {"1.2.826.0.1.3680043.3.21", 1, 0, 0, -1},   /* stable, job and its delivery pending */
        {"1.2.826.0.1.3680043.3.22", 0, -1, -1, -1}, /* receiving */
        {"1.2.826.0.1.3680043.3.23", 3, 1, -1, -1},  /* processing: job running */
        {"1.2.826.0.1.3680043.3.24", 4, -1, -1, 1},  /* a SEG being sent */
    };
    store_set_fsync(f->st, 0);
    for (int i = 0; i < 4; i++) {
        snprintf(uid, sizeof uid, "1.2.826.0.1.3680043.4.%d", 300 + i);
        store_instance_meta m = meta_of(STUDY, s4[i].series, uid);
        assert_int_equal(commit_bytes(f, &m, "five!", NULL, NULL), SN_OK);
        snprintf(sql, sizeof sql, "UPDATE series SET state=%d WHERE series_uid='%s'", s4[i].state,
                 s4[i].series);
        sql_exec(f->dir, sql);
        if (s4[i].job >= 0) {
            snprintf(sql, sizeof sql, "INSERT INTO jobs(series_id, route, method, state, attempts,"
                     " created_ms, updated_ms) SELECT id, 'r', 'atlas', %d, 0, 0, 0 FROM series"
                     " WHERE series_uid='%s'", s4[i].job, s4[i].series);
            sql_exec(f->dir, sql);
        }
        if (s4[i].outbox_job >= 0 || s4[i].outbox_inst >= 0) {
            snprintf(sql, sizeof sql, "INSERT INTO outbox(job_id, peer, path, state, created_ms,"
                     " updated_ms, sop_instance_uid) VALUES(%s, 'PACS', 'x', %d, 0, 0, '%s')",
                     s4[i].outbox_job >= 0 ? "(SELECT max(id) FROM jobs)" : "NULL",
                     s4[i].outbox_job >= 0 ? s4[i].outbox_job : s4[i].outbox_inst,
                     s4[i].outbox_job >= 0 ? "1.2.3.999" : uid);
            sql_exec(f->dir, sql);
        }
    }
    store_retention_result r;
    assert_int_equal(store_series_delete(f->st, "1.2.826.0.1.3680043.3.99", &r, f->err, sizeof f->err),
                     SN_ENOENT);
    assert_int_equal(store_series_delete(f->st, s4[1].series, &r, f->err, sizeof f->err), SN_EBUSY);
    assert_non_null(strstr(f->err, "receiving"));
    assert_int_equal(store_series_delete(f->st, s4[2].series, &r, f->err, sizeof f->err), SN_EBUSY);
    assert_non_null(strstr(f->err, "job is running"));
    assert_int_equal(store_series_delete(f->st, s4[3].series, &r, f->err, sizeof f->err), SN_EBUSY);
    assert_non_null(strstr(f->err, "being sent"));
    assert_int_equal(sql_int(f->dir, "SELECT count(*) FROM series"), 4);

    assert_int_equal(store_series_delete(f->st, s4[0].series, &r, f->err, sizeof f->err), SN_OK);
    assert_int_equal(r.instances, 1);
    assert_int_equal(r.bytes, 5);
    hash_path(f, "1.2.826.0.1.3680043.4.300", path, sizeof path);
    assert_int_not_equal(access(path, F_OK), 0);
    assert_int_equal(sql_int(f->dir, "SELECT count(*) FROM jobs"), 1);   /* the running one */
    assert_int_equal(sql_int(f->dir, "SELECT count(*) FROM outbox"), 1); /* the one being sent */
    /* The delivery failed: nothing is being sent any more, and the failed row goes too. */
    sql_exec(f->dir, "UPDATE outbox SET state=3");
    assert_int_equal(store_series_delete(f->st, s4[3].series, &r, f->err, sizeof f->err), SN_OK);
    assert_int_equal(sql_int(f->dir, "SELECT count(*) FROM outbox"), 0);
    assert_int_equal(sql_int(f->dir, "SELECT count(*) FROM series"), 2);
    assert_int_equal(sql_int(f->dir, "SELECT count(*) FROM studies"), 1);
}

/* ---- concurrency ------------------------------------------------------------------------- */

#define CW_THREADS 8
#define CW_PER 200
typedef struct cw_arg { fx *f; int t; int errors; } cw_arg;

static void *cw_worker(void *p)
{
    cw_arg *a = p;
    char tmp[4096], err[256], sop[65], series[65], data[64];
    for (int i = 0; i < CW_PER; i++) {
        snprintf(sop, sizeof sop, "1.2.826.0.1.3680043.5.%d.%d", a->t + 1, i + 1);
        snprintf(series, sizeof series, "1.2.826.0.1.3680043.6.%d", (a->t + i) % 4 + 1);
        snprintf(data, sizeof data, "instance %d %d", a->t, i); /* 12..16 bytes */
        store_instance_meta m = meta_of(STUDY, series, sop);
        m.instance_number = i;
        if (store_tmp_create(a->f->st, tmp, sizeof tmp, err, sizeof err) != SN_OK) {
            a->errors++;
            continue;
        }
        int fd = open(tmp, O_WRONLY);
        if (fd < 0 || write(fd, data, strlen(data)) != (ssize_t)strlen(data))
            a->errors++;
        if (fd >= 0)
            close(fd);
        if (store_instance_commit(a->f->st, tmp, &m, NULL, err, sizeof err) != SN_OK) {
            fprintf(stderr, "commit: %s\n", err);
            a->errors++;
        }
    }
    return NULL;
}

static void test_concurrent_writers(void **state)
{
    fx *f = *state;
    pthread_t th[CW_THREADS];
    cw_arg args[CW_THREADS];
    int64_t expect_bytes = 0;
    for (int t = 0; t < CW_THREADS; t++) {
        args[t] = (cw_arg){.f = f, .t = t};
        pthread_create(&th[t], NULL, cw_worker, &args[t]);
        for (int i = 0; i < CW_PER; i++) {
            char d[64];
            expect_bytes += snprintf(d, sizeof d, "instance %d %d", t, i);
        }
    }
    for (int t = 0; t < CW_THREADS; t++) {
        pthread_join(th[t], NULL);
        assert_int_equal(args[t].errors, 0);
    }
    store_counts c;
    assert_int_equal(store_counts_get(f->st, &c, f->err, sizeof f->err), SN_OK);
    assert_int_equal(c.instances, CW_THREADS * CW_PER);
    assert_int_equal(c.series, 4);
    assert_int_equal(c.studies, 1);
    assert_int_equal(c.patients, 1);
    assert_int_equal(c.bytes, expect_bytes);
    assert_int_equal(c.series_by_state[STORE_SERIES_RECEIVING], 4);
    assert_int_equal(sql_int(f->dir, "SELECT count(*) FROM instances"), CW_THREADS * CW_PER);
    for (int s = 1; s <= 4; s++) {
        char uid[64];
        snprintf(uid, sizeof uid, "1.2.826.0.1.3680043.6.%d", s);
        assert_int_equal(get_series(f, uid).row.instances, CW_THREADS * CW_PER / 4);
        assert_int_equal(instances_of(f, uid), CW_THREADS * CW_PER / 4);
    }
}

/* Same UID from many threads at once: always one row, one file, counts consistent. */
/* store_backup while four threads commit: the copy is one snapshot (every series' counters
 * agree with its instance rows), opens as a store, holds what it says, and is never
 * overwritten; nothing is left beside it. */
static void test_backup_while_writing(void **state)
{
    fx *f = *state;
    pthread_t th[4];
    cw_arg args[4];
    char dir2[] = "/tmp/sn-test-store-bak-XXXXXX", dest[600], part[620];
    assert_non_null(mkdtemp(dir2));
    snprintf(dest, sizeof dest, "%s/index.sqlite", dir2);
    for (int t = 0; t < 4; t++) {
        args[t] = (cw_arg){.f = f, .t = t};
        pthread_create(&th[t], NULL, cw_worker, &args[t]);
    }
    usleep(20000);
    store_backup_result r;
    int rc = store_backup(f->st, dest, &r, f->err, sizeof f->err);
    for (int t = 0; t < 4; t++) {
        pthread_join(th[t], NULL);
        assert_int_equal(args[t].errors, 0);
    }
    assert_int_equal(rc, SN_OK);
    assert_true(r.instances >= 0 && r.instances <= 4 * CW_PER);
    assert_true(r.bytes > 0);
    assert_int_equal(sql_int(dir2, "SELECT count(*) FROM instances"), r.instances);
    assert_int_equal(sql_int(dir2, "SELECT coalesce(sum(instances), 0) FROM series"), r.instances);
    assert_int_equal(sql_int(dir2, "SELECT count(*) FROM series"), r.series);
    snprintf(part, sizeof part, "%s.partial", dest);
    assert_int_not_equal(access(part, F_OK), 0);

    assert_int_equal(store_backup(f->st, dest, NULL, f->err, sizeof f->err), SN_EEXIST);
    assert_non_null(strstr(f->err, "never overwrites"));

    store *copy = NULL;
    store_counts c;
    assert_int_equal(store_open(dir2, &copy, f->err, sizeof f->err), SN_OK);
    assert_int_equal(store_counts_get(copy, &c, f->err, sizeof f->err), SN_OK);
    assert_int_equal(c.instances, r.instances);
    store_close(copy);
    rm_rf(dir2);
}

static void *same_uid_worker(void *p)
{
    cw_arg *a = p;
    char tmp[4096], err[256];
    for (int i = 0; i < 50; i++) {
        store_instance_meta m = meta_of(STUDY, SER_A, SOP_1);
        if (store_tmp_create(a->f->st, tmp, sizeof tmp, err, sizeof err) != SN_OK) {
            a->errors++;
            continue;
        }
        int fd = open(tmp, O_WRONLY);
        if (fd < 0 || write(fd, "samesize", 8) != 8)
            a->errors++;
        if (fd >= 0)
            close(fd);
        if (store_instance_commit(a->f->st, tmp, &m, NULL, err, sizeof err) != SN_OK)
            a->errors++;
    }
    return NULL;
}

static void test_concurrent_same_uid(void **state)
{
    fx *f = *state;
    pthread_t th[4];
    cw_arg args[4];
    for (int t = 0; t < 4; t++) {
        args[t] = (cw_arg){.f = f, .t = t};
        pthread_create(&th[t], NULL, same_uid_worker, &args[t]);
    }
    for (int t = 0; t < 4; t++) {
        pthread_join(th[t], NULL);
        assert_int_equal(args[t].errors, 0);
    }
    series_get g = get_series(f, SER_A);
    assert_int_equal(g.row.instances, 1);
    assert_int_equal(g.row.replaced, 199);
    assert_int_equal(g.row.bytes, 8);
    assert_int_equal(sql_int(f->dir, "SELECT count(*) FROM instances"), 1);
}

/* ---- series state machine ---------------------------------------------------------------- */

static sn_config *make_cfg(int nroutes, int node_stable_after)
{
    sn_config *c = calloc(1, sizeof *c);
    c->node.stable_after = node_stable_after;
    c->nroutes = nroutes;
    c->routes = calloc((size_t)(nroutes ? nroutes : 1), sizeof *c->routes);
    for (int i = 0; i < nroutes; i++) {
        snprintf(c->routes[i].name, sizeof c->routes[i].name, "route%d", i);
        c->routes[i].stable_after = -1;
    }
    return c;
}

static void free_cfg(sn_config *c)
{
    for (int i = 0; i < c->nroutes; i++)
        if (c->routes[i].has_series_description_re)
            regfree(&c->routes[i].series_description);
    free(c->routes);
    free(c);
}

static void list_add(sn_strlist *l, const char *v)
{
    sn_strlcpy(l->item[l->n++], v, sizeof l->item[0]);
}

typedef struct jobs_get { int n; char routes[8][64]; char methods[8][16]; int64_t ids[8]; int states[8];
                          char ae[8][20]; } jobs_get;
static int jobs_cb(void *ctx, const store_job_row *r)
{
    jobs_get *j = ctx;
    if (j->n < 8) {
        sn_strlcpy(j->routes[j->n], r->route, 64);
        sn_strlcpy(j->methods[j->n], r->method, 16);
        sn_strlcpy(j->ae[j->n], r->calling_ae ? r->calling_ae : "", 20);
        j->ids[j->n] = r->id;
        j->states[j->n] = r->state;
    }
    j->n++;
    return 0;
}

static jobs_get get_jobs(fx *f)
{
    jobs_get j = {0};
    assert_int_equal(store_job_list(f->st, jobs_cb, &j, f->err, sizeof f->err), SN_OK);
    return j;
}

static void test_sweep_routes(void **state)
{
    fx *f = *state;
    /* route0: CT only (no match); route1: MR, continue; route2: HEAD, own stable_after=30;
     * route3: anything (not reached: route2 stops matching). */
    sn_config *cfg = make_cfg(4, 10);
    list_add(&cfg->routes[0].modality, "CT");
    list_add(&cfg->routes[1].modality, "mr");
    cfg->routes[1].continue_matching = 1;
    cfg->routes[1].method = SN_METHOD_NET;
    list_add(&cfg->routes[2].body_part, "HEAD");
    cfg->routes[2].stable_after = 30;
    store_instance_meta m = meta_of(STUDY, SER_A, SOP_1);
    assert_int_equal(commit_bytes(f, &m, "x", NULL, NULL), SN_OK);
    int64_t last = get_series(f, SER_A).row.last_received_ms;
    int n = -1;

    /* The first matching route (route1) has no own value: the node's 10 s apply. */
    assert_int_equal(store_sweep(f->st, cfg, last + 9000, &n, f->err, sizeof f->err), SN_OK);
    assert_int_equal(n, 0);
    assert_int_equal(get_series(f, SER_A).row.state, STORE_SERIES_RECEIVING);
    assert_int_equal(store_sweep(f->st, cfg, last + 10000, &n, f->err, sizeof f->err), SN_OK);
    assert_int_equal(n, 1);
    assert_int_equal(get_series(f, SER_A).row.state, STORE_SERIES_STABLE);
    jobs_get j = get_jobs(f);
    assert_int_equal(j.n, 2);
    /* newest first */
    assert_string_equal(j.routes[1], "route1");
    assert_string_equal(j.methods[1], "net");
    assert_string_equal(j.routes[0], "route2");
    assert_string_equal(j.methods[0], "atlas");
    assert_string_equal(j.ae[0], "SCANNER1");
    assert_int_equal(j.states[0], STORE_JOB_PENDING);
    assert_int_equal(sql_int(f->dir, "SELECT count(*) FROM series WHERE routes='route1,route2'"), 1);

    /* Sweeping again changes nothing. */
    assert_int_equal(store_sweep(f->st, cfg, last + 100000, &n, f->err, sizeof f->err), SN_OK);
    assert_int_equal(n, 0);
    assert_int_equal(get_jobs(f).n, 2);

    /* A late instance puts it back to receiving. */
    store_instance_meta m2 = meta_of(STUDY, SER_A, SOP_2);
    assert_int_equal(commit_bytes(f, &m2, "y", NULL, NULL), SN_OK);
    assert_int_equal(get_series(f, SER_A).row.state, STORE_SERIES_RECEIVING);
    assert_int_equal(get_series(f, SER_A).row.instances, 2);
    free_cfg(cfg);
}

static void test_sweep_route_stable_after_and_unrouted(void **state)
{
    fx *f = *state;
    sn_config *cfg = make_cfg(2, 10);
    list_add(&cfg->routes[0].modality, "CT");
    cfg->routes[0].stable_after = 2;
    list_add(&cfg->routes[1].calling_ae, "OTHERAE");
    store_instance_meta ct = meta_of(STUDY, SER_A, SOP_1), mr = meta_of(STUDY, SER_B, SOP_2);
    ct.modality = "CT";
    assert_int_equal(commit_bytes(f, &ct, "ct", NULL, NULL), SN_OK);
    assert_int_equal(commit_bytes(f, &mr, "mr", NULL, NULL), SN_OK);
    int64_t last = get_series(f, SER_B).row.last_received_ms;
    int n = -1;
    /* The CT route's own 2 s apply to the CT series only; the MR series waits the node's 10 s. */
    assert_int_equal(store_sweep(f->st, cfg, last + 3000, &n, f->err, sizeof f->err), SN_OK);
    assert_int_equal(n, 1);
    assert_int_equal(get_series(f, SER_A).row.state, STORE_SERIES_STABLE);
    assert_int_equal(get_series(f, SER_B).row.state, STORE_SERIES_RECEIVING);
    assert_int_equal(store_sweep(f->st, cfg, last + 10000, &n, f->err, sizeof f->err), SN_OK);
    assert_int_equal(n, 1);
    assert_int_equal(get_series(f, SER_B).row.state, STORE_SERIES_UNROUTED);
    assert_int_equal(get_jobs(f).n, 1);
    store_counts c;
    assert_int_equal(store_counts_get(f->st, &c, f->err, sizeof f->err), SN_OK);
    assert_int_equal(c.series_by_state[STORE_SERIES_STABLE], 1);
    assert_int_equal(c.series_by_state[STORE_SERIES_UNROUTED], 1);
    assert_int_equal(c.jobs_by_state[STORE_JOB_PENDING], 1);
    assert_true(c.oldest_pending_job_ms > 0);

    /* Unrouted goes back to receiving on a late instance too. */
    store_instance_meta late = meta_of(STUDY, SER_B, "1.2.826.0.1.3680043.4.99");
    assert_int_equal(commit_bytes(f, &late, "late", NULL, NULL), SN_OK);
    assert_int_equal(get_series(f, SER_B).row.state, STORE_SERIES_RECEIVING);
    free_cfg(cfg);
}

static void test_series_complete(void **state)
{
    fx *f = *state;
    sn_config *cfg = make_cfg(1, 3600);
    cfg->routes[0].has_series_description_re =
        regcomp(&cfg->routes[0].series_description, "^t1", REG_EXTENDED | REG_ICASE | REG_NOSUB) == 0;
    assert_true(cfg->routes[0].has_series_description_re);
    store_instance_meta m = meta_of(STUDY, SER_A, SOP_1);
    assert_int_equal(commit_bytes(f, &m, "x", NULL, NULL), SN_OK);
    assert_int_equal(store_series_complete(f->st, SER_A, cfg, f->err, sizeof f->err), SN_OK);
    assert_int_equal(get_series(f, SER_A).row.state, STORE_SERIES_STABLE);
    assert_int_equal(get_jobs(f).n, 1);
    /* Not receiving: no-op. */
    assert_int_equal(store_series_complete(f->st, SER_A, cfg, f->err, sizeof f->err), SN_OK);
    assert_int_equal(get_jobs(f).n, 1);
    assert_int_equal(store_series_complete(f->st, "1.2.3.4.5.6", cfg, f->err, sizeof f->err), SN_ENOENT);
    /* No match -> unrouted. */
    store_instance_meta m2 = meta_of(STUDY, SER_B, SOP_2);
    m2.series_description = "localizer";
    assert_int_equal(commit_bytes(f, &m2, "x", NULL, NULL), SN_OK);
    assert_int_equal(store_series_complete(f->st, SER_B, cfg, f->err, sizeof f->err), SN_OK);
    assert_int_equal(get_series(f, SER_B).row.state, STORE_SERIES_UNROUTED);
    assert_int_equal(get_jobs(f).n, 1);
    free_cfg(cfg);
}

static void test_job_retry(void **state)
{
    fx *f = *state;
    sn_config *cfg = make_cfg(1, 0);
    store_instance_meta m = meta_of(STUDY, SER_A, SOP_1);
    assert_int_equal(commit_bytes(f, &m, "x", NULL, NULL), SN_OK);
    assert_int_equal(store_series_complete(f->st, SER_A, cfg, f->err, sizeof f->err), SN_OK);
    jobs_get j = get_jobs(f);
    assert_int_equal(j.n, 1);
    int64_t id = j.ids[0];
    assert_int_equal(store_job_retry(f->st, id, f->err, sizeof f->err), SN_EINVAL); /* pending */
    assert_int_equal(store_job_retry(f->st, id + 1000, f->err, sizeof f->err), SN_ENOENT);

    /* Simulate a worker that failed the job (later issues own that transition). */
    char path[512];
    sqlite3 *db;
    snprintf(path, sizeof path, "%s/index.sqlite", f->dir);
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    sqlite3_busy_timeout(db, 5000);
    assert_int_equal(sqlite3_exec(db, "UPDATE jobs SET state=1, attempts=1", NULL, NULL, NULL), SQLITE_OK);
    assert_int_equal(store_job_retry(f->st, id, f->err, sizeof f->err), SN_EINVAL); /* running */
    assert_int_equal(sqlite3_exec(db, "UPDATE jobs SET state=3, error='boom'; UPDATE series SET state=5",
                                  NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    assert_int_equal(store_job_retry(f->st, id, f->err, sizeof f->err), SN_OK);
    j = get_jobs(f);
    assert_int_equal(j.states[0], STORE_JOB_PENDING);
    assert_int_equal(sql_int(f->dir, "SELECT count(*) FROM jobs WHERE error IS NULL AND attempts=1"), 1);
    assert_int_equal(get_series(f, SER_A).row.state, STORE_SERIES_STABLE);
    free_cfg(cfg);
}

/* Routing a complete series again: receiving is refused; an unrouted series gets the route an
 * admin added; a route with a pending job gets no second one; a named route runs even when it
 * does not match; a done series becomes stable again with its new job. */
static void test_series_route_again(void **state)
{
    fx *f = *state;
    int created = -1, skipped = -1;
    sn_config *cfg = make_cfg(1, 3600);
    list_add(&cfg->routes[0].modality, "CT");
    store_instance_meta m = meta_of(STUDY, SER_A, SOP_1); /* modality MR */
    assert_int_equal(commit_bytes(f, &m, "x", NULL, NULL), SN_OK);
    assert_int_equal(store_series_route(f->st, SER_A, cfg, NULL, &created, &skipped, f->err, sizeof f->err),
                     SN_EBUSY);
    assert_non_null(strstr(f->err, "still receiving"));
    assert_int_equal(store_series_complete(f->st, SER_A, cfg, f->err, sizeof f->err), SN_OK);
    assert_int_equal(get_series(f, SER_A).row.state, STORE_SERIES_UNROUTED);

    /* nothing matches yet: no job, state unchanged */
    assert_int_equal(store_series_route(f->st, SER_A, cfg, NULL, &created, &skipped, f->err, sizeof f->err), SN_OK);
    assert_int_equal(created, 0);
    assert_int_equal(get_series(f, SER_A).row.state, STORE_SERIES_UNROUTED);

    /* the admin adds an MR route (continue = yes) and a catch-all after it */
    free_cfg(cfg);
    cfg = make_cfg(3, 3600);
    list_add(&cfg->routes[0].modality, "CT");
    list_add(&cfg->routes[1].modality, "MR");
    cfg->routes[1].continue_matching = 1;
    cfg->routes[1].method = SN_METHOD_NET;
    assert_int_equal(store_series_route(f->st, SER_A, cfg, NULL, &created, &skipped, f->err, sizeof f->err), SN_OK);
    assert_int_equal(created, 2);
    assert_int_equal(skipped, 0);
    assert_int_equal(get_series(f, SER_A).row.state, STORE_SERIES_STABLE);
    assert_int_equal(get_jobs(f).n, 2);
    assert_int_equal(sql_int(f->dir, "SELECT count(*) FROM jobs WHERE route='route1' AND method='net'"), 1);
    assert_int_equal(sql_int(f->dir, "SELECT count(*) FROM jobs WHERE route='route2' AND state=0"), 1);

    /* again: both routes still have pending jobs */
    assert_int_equal(store_series_route(f->st, SER_A, cfg, NULL, &created, &skipped, f->err, sizeof f->err), SN_OK);
    assert_int_equal(created, 0);
    assert_int_equal(skipped, 2);
    assert_int_equal(get_jobs(f).n, 2);

    /* the jobs finish; the named, non-matching CT route runs on request */
    char path[512];
    sqlite3 *db;
    snprintf(path, sizeof path, "%s/index.sqlite", f->dir);
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    sqlite3_busy_timeout(db, 5000);
    assert_int_equal(sqlite3_exec(db, "UPDATE jobs SET state=2; UPDATE series SET state=4", NULL, NULL, NULL),
                     SQLITE_OK);
    sqlite3_close(db);
    assert_int_equal(store_series_route(f->st, SER_A, cfg, "route0", &created, &skipped, f->err, sizeof f->err),
                     SN_OK);
    assert_int_equal(created, 1);
    assert_int_equal(get_series(f, SER_A).row.state, STORE_SERIES_STABLE);
    assert_int_equal(sql_int(f->dir, "SELECT count(*) FROM jobs WHERE route='route0' AND state=0"), 1);
    assert_int_equal(store_series_route(f->st, SER_A, cfg, "nope", &created, &skipped, f->err, sizeof f->err),
                     SN_ENOENT);
    assert_int_equal(store_series_route(f->st, "1.2.3.4.5.6", cfg, NULL, &created, &skipped, f->err, sizeof f->err),
                     SN_ENOENT);
    free_cfg(cfg);
}

/* ---- C-FIND ------------------------------------------------------------------------------ */

typedef struct find_get { int n; char uids[16][65]; char mods[16][32]; int64_t series, inst, keys[16]; } find_get;
static int find_cb(void *ctx, const store_find_row *r)
{
    find_get *g = ctx;
    if (g->n < 16) {
        g->keys[g->n] = r->key;
        sn_strlcpy(g->uids[g->n], r->series_uid ? r->series_uid : r->study_uid, 65);
        sn_strlcpy(g->mods[g->n], r->modalities_in_study ? r->modalities_in_study : "", 32);
    }
    g->series = r->study_series;
    g->inst = r->series_uid ? r->series_instances : r->study_instances;
    g->n++;
    return 0;
}

/* series_level: 0 STUDY, 1 SERIES, 2 IMAGE */
static int find_n(fx *f, int series_level, store_find_query q)
{
    find_get g = {0};
    int rc = series_level == 2 ? store_find_instances(f->st, &q, find_cb, &g, f->err, sizeof f->err)
           : series_level ? store_find_series(f->st, &q, find_cb, &g, f->err, sizeof f->err)
                          : store_find_studies(f->st, &q, find_cb, &g, f->err, sizeof f->err);
    assert_int_equal(rc, SN_OK);
    return g.n;
}

static void test_find(void **state)
{
    fx *f = *state;
    const char *st1 = "1.2.826.0.1.3680043.10.1", *st2 = "1.2.826.0.1.3680043.10.2";
    store_instance_meta a = meta_of(st1, SER_A, SOP_1), b = meta_of(st1, SER_B, SOP_2);
    store_instance_meta c = meta_of(st2, "1.2.826.0.1.3680043.3.3", "1.2.826.0.1.3680043.4.3");
    b.modality = "CT";
    c.patient_id = "PAT2";
    c.patient_name = "Smith^Anna^^^";
    c.study_date = "20240301";
    c.study_time = "230500.25";
    c.study_id = "S-2";
    c.series_number = -1;
    b.series_number = 7;
    c.accession_number = "ACC2";
    c.study_description = NULL;
    c.modality = "PT";
    c.patient_birth_date = "19851231";
    c.patient_sex = "F";
    c.referring_physician = "Welby^Marcus^^Dr.";
    assert_int_equal(commit_bytes(f, &a, "a", NULL, NULL), SN_OK);
    assert_int_equal(commit_bytes(f, &b, "b", NULL, NULL), SN_OK);
    assert_int_equal(commit_bytes(f, &c, "c", NULL, NULL), SN_OK);

    assert_int_equal(find_n(f, 0, (store_find_query){0}), 2);
    assert_int_equal(find_n(f, 1, (store_find_query){0}), 3);
    /* wildcards, case-insensitive names */
    assert_int_equal(find_n(f, 0, (store_find_query){.patient_name = "doe*"}), 1);
    assert_int_equal(find_n(f, 0, (store_find_query){.patient_name = "*^?nna"}), 1);
    assert_int_equal(find_n(f, 0, (store_find_query){.patient_name = "D?e"}), 0);
    assert_int_equal(find_n(f, 0, (store_find_query){.patient_name = "*"}), 2);
    assert_int_equal(find_n(f, 0, (store_find_query){.patient_id = "PAT?"}), 2);
    assert_int_equal(find_n(f, 0, (store_find_query){.patient_id = "PAT2"}), 1);
    /* '%' and '_' are not wildcards in DICOM */
    assert_int_equal(find_n(f, 0, (store_find_query){.patient_id = "PAT%"}), 0);
    assert_int_equal(find_n(f, 0, (store_find_query){.patient_id = "PAT_"}), 0);
    /* a key of '*' matches an absent value; a non-universal key does not */
    assert_int_equal(find_n(f, 0, (store_find_query){.study_description = "*"}), 2);
    assert_int_equal(find_n(f, 0, (store_find_query){.study_description = "head*"}), 1);
    /* dates */
    assert_int_equal(find_n(f, 0, (store_find_query){.study_date = "20240115"}), 1);
    assert_int_equal(find_n(f, 0, (store_find_query){.study_date = "20240101-20240131"}), 1);
    assert_int_equal(find_n(f, 0, (store_find_query){.study_date = "20240201-"}), 1);
    assert_int_equal(find_n(f, 0, (store_find_query){.study_date = "-20240301"}), 2);
    assert_int_equal(find_n(f, 0, (store_find_query){.study_date = "20230101-20231231"}), 0);
    /* UID lists */
    char list[200];
    snprintf(list, sizeof list, "%s\\%s", st2, "1.2.3");
    assert_int_equal(find_n(f, 0, (store_find_query){.study_uid = list}), 1);
    snprintf(list, sizeof list, "%s\\%s", st2, st1);
    assert_int_equal(find_n(f, 0, (store_find_query){.study_uid = list}), 2);
    assert_int_equal(find_n(f, 0, (store_find_query){.study_uid = "1.2.826.0.1.3680043.10.*"}), 0);
    /* modalities in study / series modality */
    assert_int_equal(find_n(f, 0, (store_find_query){.modality = "CT"}), 1);
    assert_int_equal(find_n(f, 0, (store_find_query){.modality = "CT\\PT"}), 2);
    assert_int_equal(find_n(f, 1, (store_find_query){.modality = "mr"}), 1);
    assert_int_equal(find_n(f, 1, (store_find_query){.study_uid = st1}), 2);
    assert_int_equal(find_n(f, 1, (store_find_query){.study_uid = st1, .series_uid = SER_B}), 1);
    assert_int_equal(find_n(f, 0, (store_find_query){.accession_number = "ACC1"}), 1);
    /* Study Time (st1 101500, st2 23:05:00.25), Study ID (st1 "1", st2 "S-2") */
    assert_int_equal(find_n(f, 0, (store_find_query){.study_time = "1015"}), 1);
    assert_int_equal(find_n(f, 0, (store_find_query){.study_time = "1000-1100"}), 1);
    assert_int_equal(find_n(f, 0, (store_find_query){.study_time = "1016-"}), 1);
    assert_int_equal(find_n(f, 0, (store_find_query){.study_time = "-230500"}), 2);
    assert_int_equal(find_n(f, 0, (store_find_query){.study_time = "1100-1200"}), 0);
    assert_int_equal(find_n(f, 0, (store_find_query){.study_time = "*"}), 2);
    assert_int_equal(find_n(f, 0, (store_find_query){.study_time = "1000-1100", .study_date = "20240301"}), 0);
    assert_int_equal(find_n(f, 0, (store_find_query){.study_id = "S-2"}), 1);
    assert_int_equal(find_n(f, 0, (store_find_query){.study_id = "s-2"}), 0);
    assert_int_equal(find_n(f, 0, (store_find_query){.study_id = "S*"}), 1);
    assert_int_equal(find_n(f, 0, (store_find_query){.study_id = "?"}), 1);
    /* Series Number (A 3, B 7, C absent): integers; SERIES level only */
    assert_int_equal(find_n(f, 1, (store_find_query){.series_number = "7"}), 1);
    assert_int_equal(find_n(f, 1, (store_find_query){.series_number = " +07 "}), 1);
    assert_int_equal(find_n(f, 1, (store_find_query){.series_number = "3"}), 1);
    assert_int_equal(find_n(f, 1, (store_find_query){.series_number = "4"}), 0);
    assert_int_equal(find_n(f, 1, (store_find_query){.series_number = "*"}), 3);
    assert_int_equal(find_n(f, 0, (store_find_query){.series_number = "x"}), 2);
    find_get bad = {0};
    store_find_query qb = {.series_number = "3?"};
    assert_int_equal(store_find_series(f->st, &qb, find_cb, &bad, f->err, sizeof f->err), SN_EINVAL);
    assert_non_null(strstr(f->err, "not an integer"));
    /* Patient's Birth Date (st1 19700101, st2 19851231), Sex (M, F), Referring Physician
     * (st1 none, st2 "Welby^Marcus^^Dr.") */
    assert_int_equal(find_n(f, 0, (store_find_query){.patient_birth_date = "19800101-"}), 1);
    assert_int_equal(find_n(f, 0, (store_find_query){.patient_birth_date = "19700101"}), 1);
    assert_int_equal(find_n(f, 0, (store_find_query){.patient_birth_date = "-19991231"}), 2);
    assert_int_equal(find_n(f, 1, (store_find_query){.patient_birth_date = "19700101"}), 2);
    assert_int_equal(find_n(f, 0, (store_find_query){.patient_sex = "F"}), 1);
    assert_int_equal(find_n(f, 0, (store_find_query){.patient_sex = "O"}), 0);
    assert_int_equal(find_n(f, 0, (store_find_query){.patient_sex = "*"}), 2);
    assert_int_equal(find_n(f, 0, (store_find_query){.referring_physician = "WELBY^*"}), 1);
    assert_int_equal(find_n(f, 0, (store_find_query){.referring_physician = "Welby^Marcus^^Dr."}), 1);
    assert_int_equal(find_n(f, 0, (store_find_query){.referring_physician = "Kildare"}), 0);
    assert_int_equal(find_n(f, 2, (store_find_query){.patient_sex = "F"}), 1);
    /* Person Name stored with trailing empty components */
    assert_int_equal(find_n(f, 0, (store_find_query){.patient_name = "SMITH^ANNA"}), 1);
    assert_int_equal(find_n(f, 0, (store_find_query){.patient_name = "Smith^Anna^^^"}), 1);
    /* IMAGE level: one instance per series here (Instance Number 1, MR Image Storage) */
    find_get gi = {0};
    store_find_query qi = {.study_uid = st1};
    assert_int_equal(store_find_instances(f->st, &qi, find_cb, &gi, f->err, sizeof f->err), SN_OK);
    assert_int_equal(gi.n, 2);
    snprintf(list, sizeof list, "%s\\%s", SOP_2, "1.2.3");
    memset(&gi, 0, sizeof gi);
    qi = (store_find_query){.sop_instance_uid = list};
    assert_int_equal(store_find_instances(f->st, &qi, find_cb, &gi, f->err, sizeof f->err), SN_OK);
    assert_int_equal(gi.n, 1);
    assert_string_equal(gi.uids[0], SER_B);
    memset(&gi, 0, sizeof gi);
    qi = (store_find_query){.sop_class_uid = "1.2.840.10008.5.1.4.1.1.4", .instance_number = "1", .modality = "CT"};
    assert_int_equal(store_find_instances(f->st, &qi, find_cb, &gi, f->err, sizeof f->err), SN_OK);
    assert_int_equal(gi.n, 1);
    memset(&gi, 0, sizeof gi);
    qi = (store_find_query){.sop_class_uid = "1.2.840.10008.5.1.4.1.1.2"};
    assert_int_equal(store_find_instances(f->st, &qi, find_cb, &gi, f->err, sizeof f->err), SN_OK);
    assert_int_equal(gi.n, 0);
    qi = (store_find_query){.instance_number = "1-2"};
    assert_int_equal(store_find_instances(f->st, &qi, find_cb, &gi, f->err, sizeof f->err), SN_EINVAL);
    assert_non_null(strstr(f->err, "Instance Number key"));

    find_get g = {0};
    store_find_query q = {.study_uid = st1};
    assert_int_equal(store_find_studies(f->st, &q, find_cb, &g, f->err, sizeof f->err), SN_OK);
    assert_int_equal(g.n, 1);
    assert_int_equal(g.series, 2);
    assert_int_equal(g.inst, 2);
    assert_true(!strcmp(g.mods[0], "MR\\CT") || !strcmp(g.mods[0], "CT\\MR"));

    /* One row by its key (how the SCP fetches each answer as it sends it), at every level: the
     * row listed under that key, nothing for a key whose row no longer matches the other keys
     * or is gone. */
    typedef int (*level_fn)(store *, const store_find_query *, store_find_cb, void *, char *, size_t);
    const level_fn level[] = {store_find_studies, store_find_series, store_find_instances};
    for (int l = 0; l < 3; l++) {
        find_get all = {0}, one = {0};
        store_find_query qa = {0};
        assert_int_equal(level[l](f->st, &qa, find_cb, &all, f->err, sizeof f->err), SN_OK);
        assert_int_equal(all.n, l ? 3 : 2);
        for (int i = 0; i < all.n; i++) {
            assert_true(all.keys[i] > 0);
            memset(&one, 0, sizeof one);
            qa.keys = &all.keys[i];
            qa.nkeys = 1;
            assert_int_equal(level[l](f->st, &qa, find_cb, &one, f->err, sizeof f->err), SN_OK);
            assert_int_equal(one.n, 1);
            assert_int_equal(one.keys[0], all.keys[i]);
            assert_string_equal(one.uids[0], all.uids[i]);
        }
        /* several keys: the rows in the listing's order, a key with no row left out */
        int64_t some[3] = {all.keys[all.n - 1], 999999, all.keys[0]};
        memset(&one, 0, sizeof one);
        qa = (store_find_query){.keys = some, .nkeys = 3};
        assert_int_equal(level[l](f->st, &qa, find_cb, &one, f->err, sizeof f->err), SN_OK);
        assert_int_equal(one.n, 2);
        assert_int_equal(one.keys[0], all.keys[0]);
        assert_int_equal(one.keys[1], all.keys[all.n - 1]);
        /* row 0 is st2's (PAT2) at STUDY level, newest date first, and st1's below it, where
         * rows go by study: the key fetches it only if it also matches Patient ID PAT2 */
        const int st2_first = l == 0;
        memset(&one, 0, sizeof one);
        qa = (store_find_query){.patient_id = "PAT2", .keys = all.keys, .nkeys = 1};
        assert_int_equal(level[l](f->st, &qa, find_cb, &one, f->err, sizeof f->err), SN_OK);
        assert_int_equal(one.n, st2_first);
        memset(&one, 0, sizeof one);
        some[0] = all.keys[all.n - 1] + 1000;
        qa = (store_find_query){.keys = some, .nkeys = 1};
        assert_int_equal(level[l](f->st, &qa, find_cb, &one, f->err, sizeof f->err), SN_OK);
        assert_int_equal(one.n, 0);
    }
}

static void test_matchers(void **state)
{
    assert_true(store__match("A*B?C", "AxxBzC", 0));
    assert_false(store__match("A*B?C", "AxxBC", 0));
    assert_true(store__match("*", NULL, 0));
    assert_true(store__match("**a**", "bab", 0));
    assert_false(store__match("abc", "ABC", 0));
    assert_true(store__match("abc", "ABC", 1));
    /* '?' is one character of UTF-8, whatever its bytes: M\xc3\xbcller is "Müller" */
    assert_true(store__match("M?ller^*", "M\xc3\xbcller^J\xc3\xbcrgen", 0));
    assert_false(store__match("M??ller*", "M\xc3\xbcller", 0));
    assert_true(store__match("*?ller", "M\xc3\xbcller", 0));
    assert_true(store__match("*\xc3\xbc*", "M\xc3\xbcller", 0));
    assert_true(store__match("???", "\xce\x94\xce\xb9o", 0));   /* Greek Delta, iota, o */
    assert_false(store__match("????", "\xce\x94\xce\xb9o", 0));
    assert_true(store__uid_match("1.2\\1.3", "1.3"));
    assert_false(store__uid_match("1.2\\1.3", "1.33"));
    assert_true(store__date_match("2024.01.01-2024.12.31", "20240615"));
    assert_false(store__date_match("20240101", NULL));
    /* Person Name: trailing empty components and groups are insignificant, in value and key */
    assert_true(store__pn_match("DOE^JANE", "Doe^Jane^^^"));
    assert_true(store__pn_match("Doe^Jane", "Doe^Jane^^^"));
    assert_true(store__pn_match("Doe^Jane^^^", "Doe^Jane"));
    assert_true(store__pn_match("DOE^JANE*", "Doe^Jane^^^"));
    assert_true(store__pn_match("DOE^JANE^*", "Doe^Jane"));
    assert_true(store__pn_match("DOE*", "Doe^Jane^^^"));
    assert_true(store__pn_match("Doe^Jane", "Doe^Jane^^^=="));
    assert_true(store__pn_match("Yamada^Tarou=*", "Yamada^Tarou^^^=\xe5\xb1\xb1\xe7\x94\xb0^"));
    assert_true(store__pn_match("NOBODY\\DOE^JANE", "Doe^Jane^"));
    assert_false(store__pn_match("DOE^JAN", "Doe^Jane^^^"));
    assert_false(store__pn_match("DOE^JANE^X", "Doe^Jane^^^"));
    assert_false(store__pn_match("DOE", "Doe^Jane"));
    assert_false(store__pn_match("Doe^Jane", NULL));
    char longname[600];
    memset(longname, 'a', sizeof longname - 4);
    memcpy(longname + sizeof longname - 4, "^^^", 4);
    assert_true(store__pn_match("A*A", longname));   /* past the stack buffers */
    /* TM: single values within their precision, ranges, fractions, old ':' style */
    assert_true(store__time_match("0700", "070000"));
    assert_true(store__time_match("0700", "070059.999"));
    assert_false(store__time_match("0700", "070100"));
    assert_true(store__time_match("070000", "070000.123"));
    assert_false(store__time_match("070000.2", "070000.123"));
    assert_true(store__time_match("0700-0900", "090059.5"));
    assert_false(store__time_match("0700-0900", "090100"));
    assert_false(store__time_match("0700-0900", "065959.999999"));
    assert_true(store__time_match("0700-0900", "07"));
    assert_true(store__time_match("-0900", "000000"));
    assert_false(store__time_match("-0900", "0901"));
    assert_true(store__time_match("0700-", "235959"));
    assert_false(store__time_match("0700-", "0659"));
    assert_true(store__time_match("070000.000-070000.500", "070000.123"));
    assert_false(store__time_match("070000.000-070000.100", "070000.123"));
    assert_true(store__time_match("07:00-09:00", "08:15:00"));
    assert_true(store__time_match("2300-0100", "233000"));   /* spans midnight */
    assert_true(store__time_match("2300-0100", "003000"));
    assert_false(store__time_match("2300-0100", "120000"));
    assert_false(store__time_match("0700", NULL));
    assert_false(store__time_match("0700", ""));
    assert_false(store__time_match("7", "070000"));            /* not a time: matches nothing */
    assert_false(store__time_match("07a0-0900", "080000"));
    assert_false(store__time_match("0700-0900", "garbage"));
    assert_true(store__time_match("", "080000"));
    /* IS */
    long long n = 0;
    assert_true(store__is_parse(" 12 ", &n) && n == 12);
    assert_true(store__is_parse("+7", &n) && n == 7);
    assert_true(store__is_parse("-3", &n) && n == -3);
    assert_false(store__is_parse("1.5", &n));
    assert_false(store__is_parse("abc", &n));
    assert_false(store__is_parse("1\\2", &n));
    assert_false(store__is_parse("", &n));
    assert_false(store__is_parse("1234567890123", &n));
}

static int stop_cb(void *ctx, const store_series_row *r)
{
    (*(int *)ctx)++;
    return 1;
}

static void test_callback_stops(void **state)
{
    fx *f = *state;
    store_instance_meta a = meta_of(STUDY, SER_A, SOP_1), b = meta_of(STUDY, SER_B, SOP_2);
    assert_int_equal(commit_bytes(f, &a, "a", NULL, NULL), SN_OK);
    assert_int_equal(commit_bytes(f, &b, "b", NULL, NULL), SN_OK);
    int n = 0;
    assert_int_equal(store_series_list(f->st, NULL, stop_cb, &n, f->err, sizeof f->err), SN_OK);
    assert_int_equal(n, 1);
    assert_string_equal(store_series_state_name(STORE_SERIES_UNROUTED), "unrouted");
    assert_string_equal(store_job_state_name(STORE_JOB_FAILED), "failed");
    assert_string_equal(store_outbox_state_name(STORE_OUTBOX_SENT), "sent");
    assert_string_equal(store_series_state_name((store_series_state)42), "unknown");
}

int main(void)
{
    sn_log_set_level(SN_LOG_LEVEL_WARN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_schema_created, setup, teardown),
        cmocka_unit_test(test_schema_migrates_v1),
        cmocka_unit_test(test_schema_newer_refused),
        cmocka_unit_test_setup_teardown(test_commit_hash_path, setup, teardown),
        cmocka_unit_test_setup_teardown(test_commit_folder_removed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_commit_replace, setup, teardown),
        cmocka_unit_test_setup_teardown(test_commit_move_series, setup, teardown),
        cmocka_unit_test_setup_teardown(test_commit_invalid_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_commit_db_failure, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tmp_cleaned_on_claim, setup, teardown),
        cmocka_unit_test_setup_teardown(test_missing_file_dropped_on_claim, setup, teardown),
        cmocka_unit_test_setup_teardown(test_claim_exclusive, setup, teardown),
        cmocka_unit_test_setup_teardown(test_backup_while_writing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unflushed_rows_dropped_by_id, setup, teardown),
        cmocka_unit_test_setup_teardown(test_check_both_ways, setup, teardown),
        cmocka_unit_test_setup_teardown(test_retention, setup, teardown),
        cmocka_unit_test_setup_teardown(test_series_delete, setup, teardown),
        cmocka_unit_test_setup_teardown(test_concurrent_writers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_concurrent_same_uid, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sweep_routes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sweep_route_stable_after_and_unrouted, setup, teardown),
        cmocka_unit_test_setup_teardown(test_series_complete, setup, teardown),
        cmocka_unit_test_setup_teardown(test_job_retry, setup, teardown),
        cmocka_unit_test_setup_teardown(test_series_route_again, setup, teardown),
        cmocka_unit_test_setup_teardown(test_find, setup, teardown),
        cmocka_unit_test(test_matchers),
        cmocka_unit_test_setup_teardown(test_callback_stops, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
