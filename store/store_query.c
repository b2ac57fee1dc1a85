/* store/store_query.c — read-only queries on pooled read connections: series and instance
 * lists, Study Root C-FIND at study and series level, jobs, counts; and the DICOM matching
 * functions (wildcards, person names, UID lists, date and time ranges, integers) registered as
 * SQL functions so that every query is a fixed statement with bound parameters — no SQL is
 * ever built from a query key. Not here: anything that writes. */
#include "store/storeInt.h"

#include "common/status.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- DICOM matching ---------------------------------------------------------------------- */

static int match__eq(char a, char b, int ci)
{
    return ci ? tolower((unsigned char)a) == tolower((unsigned char)b) : a == b;
}

/* The next character of UTF-8 text (the index's; a continuation byte is never a first one). */
static const char *match__next(const char *s)
{
    s++;
    while (((unsigned char)*s & 0xc0) == 0x80)
        s++;
    return s;
}

/* '*' any run, '?' one character (of UTF-8: every byte of it); p is [p, pe). Iterative with
 * one backtrack point: linear in practice and never recursive on network input. */
static int match__wild(const char *p, const char *pe, const char *s, int ci)
{
    const char *star = NULL, *ss = NULL;
    while (*s) {
        if (p < pe && *p == '?') {
            p++;
            s = match__next(s);
        } else if (p < pe && *p != '*' && match__eq(*p, *s, ci)) {
            p++;
            s++;
        } else if (p < pe && *p == '*') {
            star = p++;
            ss = s;
        } else if (star) {
            p = star + 1;
            s = ss = match__next(ss);
        } else {
            return 0;
        }
    }
    while (p < pe && *p == '*')
        p++;
    return p == pe;
}

int store__match(const char *pattern, const char *value, int ci)
{
    if (!pattern || !*pattern)
        return 1;
    if (!value)
        value = "";
    /* A backslash separates alternatives (e.g. modalities "CT\MR"); any may match. */
    for (const char *p = pattern;;) {
        const char *e = strchr(p, '\\');
        if (!e)
            e = p + strlen(p);
        if (match__wild(p, e, value, ci))
            return 1;
        if (!*e)
            return 0;
        p = e + 1;
    }
}

/* A Person Name's trailing empty components and component groups are insignificant (PS3.5
 * 6.2: "Doe^Jane^^^" is "Doe^Jane"). pn__norm copies [s, s+n) to out (n+1 bytes) without the
 * trailing '^' (and padding spaces) of each '='-separated group, nor trailing empty groups;
 * pn__pad copies it with every group made up to five components (n + 4 per group + 1 bytes).
 * Wildcards are kept. */
static size_t pn__norm(const char *s, size_t n, char *out)
{
    size_t k = 0;
    for (size_t i = 0;;) {
        size_t e = i;
        while (e < n && s[e] != '=')
            e++;
        size_t g = e;
        while (g > i && (s[g - 1] == '^' || s[g - 1] == ' '))
            g--;
        memcpy(out + k, s + i, g - i);
        k += g - i;
        if (e >= n)
            break;
        out[k++] = '=';
        i = e + 1;
    }
    while (k && out[k - 1] == '=')
        k--;
    out[k] = '\0';
    return k;
}

static void pn__pad(const char *s, char *out)
{
    int carets = 0;
    for (;; s++) {
        if (*s == '=' || !*s)
            for (; carets < 4; carets++)
                *out++ = '^';
        if (!*s)
            break;
        carets = *s == '=' ? 0 : carets + (*s == '^');
        *out++ = *s;
    }
    *out = '\0';
}

int store__pn_match(const char *pattern, const char *value)
{
    if (!pattern || !*pattern)
        return 1;
    if (!value)
        value = "";
    size_t vn = strlen(value), pn = strlen(pattern), groups = 1;
    for (const char *c = value; *c; c++)
        groups += *c == '=';
    char vbuf[256], wbuf[256], pbuf[256];
    char *v = vn < sizeof vbuf ? vbuf : malloc(vn + 1);
    char *w = vn + 4 * groups < sizeof wbuf ? wbuf : malloc(vn + 4 * groups + 1);
    char *p = pn < sizeof pbuf ? pbuf : malloc(pn + 1);
    int hit = 0;
    if (v && w && p) {
        /* The key matches when it matches the value without its insignificant delimiters or
         * with all of them: "DOE^JANE" and "DOE^JANE^*" both find "Doe^Jane" and "Doe^Jane^^^". */
        pn__norm(value, vn, v);
        pn__pad(v, w);
        /* Each backslash-separated alternative is normalised on its own. */
        for (const char *a = pattern;;) {
            const char *e = strchr(a, '\\');
            if (!e)
                e = a + strlen(a);
            size_t k = pn__norm(a, (size_t)(e - a), p);
            if ((hit = match__wild(p, p + k, v, 1) || match__wild(p, p + k, w, 1)) != 0 || !*e)
                break;
            a = e + 1;
        }
    }
    if (v != vbuf)
        free(v);
    if (w != wbuf)
        free(w);
    if (p != pbuf)
        free(p);
    return hit;
}

int store__uid_match(const char *list, const char *value)
{
    if (!list || !*list)
        return 1;
    if (!value)
        return 0;
    size_t vl = strlen(value);
    for (const char *p = list;;) {
        const char *e = strchr(p, '\\');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        while (n && p[n - 1] == ' ')
            n--;
        if (n == vl && memcmp(p, value, n) == 0)
            return 1;
        if (!e)
            return 0;
        p = e + 1;
    }
}

/* Digits only ("2024.01.31" from old peers becomes "20240131"); at most 8. */
static void date__norm(const char *s, size_t n, char out[9])
{
    size_t k = 0;
    for (size_t i = 0; i < n && k < 8; i++)
        if (s[i] >= '0' && s[i] <= '9')
            out[k++] = s[i];
    out[k] = '\0';
}

int store__date_match(const char *range, const char *value)
{
    char lo[9], hi[9], v[9];
    if (!range || !*range)
        return 1;
    if (!value || !*value)
        return 0;
    date__norm(value, strlen(value), v);
    if (strlen(v) != 8)
        return 0;
    const char *dash = strchr(range, '-');
    if (!dash) {
        date__norm(range, strlen(range), lo);
        return strcmp(v, lo) == 0;
    }
    date__norm(range, (size_t)(dash - range), lo);
    date__norm(dash + 1, strlen(dash + 1), hi);
    if (*lo && strcmp(v, lo) < 0)
        return 0;
    if (*hi && strcmp(v, hi) > 0)
        return 0;
    return 1;
}

/* A TM value or range bound as 12 digits HHMMSSFFFFFF, absent components filled with `fill`:
 * '0' for a value or a start, '9' for an end, so that "0900" as an end takes in 09:00:59.999999
 * and a partial single value ("0700") matches the whole minute it names. Separators ':' of
 * ACR-NEMA style values ("07:00:00") are dropped; digits past the sixth of the fraction are
 * ignored. 0 when it is not a time (an odd count of digits, a letter, a fraction without
 * seconds). */
static int time__norm(const char *s, size_t n, char fill, char out[13])
{
    size_t k = 0, i = 0;
    while (n && s[0] == ' ')
        s++, n--;
    while (n && s[n - 1] == ' ')
        n--;
    for (; i < n && s[i] != '.'; i++) {
        if (s[i] == ':')
            continue;
        if (s[i] < '0' || s[i] > '9' || k == 6)
            return 0;
        out[k++] = s[i];
    }
    if (k == 0 || k % 2)
        return 0;
    if (i < n) {
        if (k != 6)
            return 0;
        for (i++; i < n; i++) {
            if (s[i] < '0' || s[i] > '9')
                return 0;
            if (k < 12)
                out[k++] = s[i];
        }
    }
    while (k < 12)
        out[k++] = fill;
    out[12] = '\0';
    return 1;
}

static int blank(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] != ' ')
            return 0;
    return 1;
}

int store__time_match(const char *range, const char *value)
{
    char v[13], lo[13], hi[13];
    if (!range || !*range)
        return 1;
    if (!value || !time__norm(value, strlen(value), '0', v))
        return 0;
    const char *dash = strchr(range, '-');
    if (!dash) {   /* single value: every time within its precision */
        size_t n = strlen(range);
        return time__norm(range, n, '0', lo) && time__norm(range, n, '9', hi) &&
               strcmp(v, lo) >= 0 && strcmp(v, hi) <= 0;
    }
    size_t n1 = (size_t)(dash - range), n2 = strlen(dash + 1);
    int has_lo = !blank(range, n1), has_hi = !blank(dash + 1, n2);
    if ((has_lo && !time__norm(range, n1, '0', lo)) || (has_hi && !time__norm(dash + 1, n2, '9', hi)))
        return 0;
    if (has_lo && has_hi && strcmp(lo, hi) > 0)   /* "2300-0100" spans midnight */
        return strcmp(v, lo) >= 0 || strcmp(v, hi) <= 0;
    return (!has_lo || strcmp(v, lo) >= 0) && (!has_hi || strcmp(v, hi) <= 0);
}

int store__is_parse(const char *s, long long *out)
{
    if (!s)
        return 0;
    while (*s == ' ')
        s++;
    const char *p = s;
    if (*p == '+' || *p == '-')
        p++;
    if (*p < '0' || *p > '9')
        return 0;
    long long v = 0;
    int digits = 0;
    for (; *p >= '0' && *p <= '9'; p++) {
        if (++digits > 12)   /* IS: at most 12 characters */
            return 0;
        v = v * 10 + (*p - '0');
    }
    while (*p == ' ')
        p++;
    if (*p)
        return 0;
    *out = *s == '-' ? -v : v;
    return 1;
}

static void fn_match(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    const char *p = (const char *)sqlite3_value_text(argv[0]);
    const char *v = (const char *)sqlite3_value_text(argv[1]);
    sqlite3_result_int(ctx, store__match(p, v, argc > 2 ? sqlite3_value_int(argv[2]) : 0));
}

static void fn_uid_match(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    sqlite3_result_int(ctx, store__uid_match((const char *)sqlite3_value_text(argv[0]),
                                             (const char *)sqlite3_value_text(argv[1])));
}

static void fn_date_match(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    sqlite3_result_int(ctx, store__date_match((const char *)sqlite3_value_text(argv[0]),
                                              (const char *)sqlite3_value_text(argv[1])));
}

static void fn_pn_match(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    sqlite3_result_int(ctx, store__pn_match((const char *)sqlite3_value_text(argv[0]),
                                            (const char *)sqlite3_value_text(argv[1])));
}

static void fn_time_match(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    sqlite3_result_int(ctx, store__time_match((const char *)sqlite3_value_text(argv[0]),
                                              (const char *)sqlite3_value_text(argv[1])));
}

/* sn_int_match(key, value): an IS key against an integer column; an absent value never matches. */
static void fn_int_match(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    long long k;
    sqlite3_result_int(ctx, sqlite3_value_type(argv[1]) != SQLITE_NULL &&
                                store__is_parse((const char *)sqlite3_value_text(argv[0]), &k) &&
                                sqlite3_value_int64(argv[1]) == k);
}

int store__register_functions(sqlite3 *db)
{
    int f = SQLITE_UTF8 | SQLITE_DETERMINISTIC | SQLITE_INNOCUOUS, rc;
    if ((rc = sqlite3_create_function(db, "sn_match", 3, f, NULL, fn_match, NULL, NULL)) != SQLITE_OK ||
        (rc = sqlite3_create_function(db, "sn_uid_match", 2, f, NULL, fn_uid_match, NULL, NULL)) != SQLITE_OK ||
        (rc = sqlite3_create_function(db, "sn_date_match", 2, f, NULL, fn_date_match, NULL, NULL)) != SQLITE_OK ||
        (rc = sqlite3_create_function(db, "sn_pn_match", 2, f, NULL, fn_pn_match, NULL, NULL)) != SQLITE_OK ||
        (rc = sqlite3_create_function(db, "sn_time_match", 2, f, NULL, fn_time_match, NULL, NULL)) != SQLITE_OK ||
        (rc = sqlite3_create_function(db, "sn_int_match", 2, f, NULL, fn_int_match, NULL, NULL)) != SQLITE_OK)
        return rc;
    return SQLITE_OK;
}

/* ---- helpers ----------------------------------------------------------------------------- */

static const char *col_str(sqlite3_stmt *s, int i)
{
    return (const char *)sqlite3_column_text(s, i);
}

static int col_int_or(sqlite3_stmt *s, int i, int dflt)
{
    return sqlite3_column_type(s, i) == SQLITE_NULL ? dflt : sqlite3_column_int(s, i);
}

/* Prepare `sql` on a borrowed read connection. */
static int query__prepare(store *st, const char *sql, sqlite3 **db, sqlite3_stmt **s,
                          char *err, size_t errlen)
{
    int rc;
    *s = NULL;
    if (!st)
        return sn_errf(err, errlen, SN_EINVAL, "no store");
    if ((rc = store__reader_get(st, db, err, errlen)) != SN_OK)
        return rc;
    rc = sqlite3_prepare_v2(*db, sql, -1, s, NULL);
    if (rc != SQLITE_OK) {
        int status = store__dberr(*db, rc, "prepare query", err, errlen);
        store__reader_put(st, *db);
        *db = NULL;
        return status;
    }
    return SN_OK;
}

static int query__done(store *st, sqlite3 *db, sqlite3_stmt *s, int rc, char *err, size_t errlen)
{
    int status = SN_OK;
    if (rc != SQLITE_DONE && rc != SQLITE_ROW)
        status = store__dberr(db, rc, "query", err, errlen);
    sqlite3_finalize(s);
    store__reader_put(st, db);
    return status;
}

/* ---- series and instances ---------------------------------------------------------------- */

int store_series_list(store *st, const char *series_uid, store_series_cb cb, void *ctx,
                      char *err, size_t errlen)
{
    sqlite3 *db;
    sqlite3_stmt *s;
    int rc = query__prepare(st,
        "SELECT s.id, s.series_uid, st.study_uid, p.patient_key, p.patient_name, s.modality,"
        " s.description, s.body_part, s.frame_of_reference_uid, s.source_ae, s.series_number,"
        " s.instances, s.bytes, s.replaced, s.first_received_ms, s.last_received_ms, s.state"
        " FROM series s JOIN studies st ON st.id=s.study_id JOIN patients p ON p.id=st.patient_id"
        " WHERE ?1 IS NULL OR s.series_uid=?1"
        " ORDER BY s.last_received_ms DESC, s.id DESC", &db, &s, err, errlen);
    if (rc != SN_OK)
        return rc;
    store__bind_str(s, 1, series_uid);
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        store_series_row r = {
            .id = sqlite3_column_int64(s, 0),
            .series_uid = col_str(s, 1),
            .study_uid = col_str(s, 2),
            .patient_id = col_str(s, 3),
            .patient_name = col_str(s, 4),
            .modality = col_str(s, 5),
            .series_description = col_str(s, 6),
            .body_part = col_str(s, 7),
            .frame_of_reference_uid = col_str(s, 8),
            .source_ae = col_str(s, 9),
            .series_number = col_int_or(s, 10, -1),
            .instances = sqlite3_column_int64(s, 11),
            .bytes = sqlite3_column_int64(s, 12),
            .replaced = sqlite3_column_int64(s, 13),
            .first_received_ms = sqlite3_column_int64(s, 14),
            .last_received_ms = sqlite3_column_int64(s, 15),
            .state = (store_series_state)sqlite3_column_int(s, 16),
        };
        if (cb(ctx, &r))
            break;
    }
    return query__done(st, db, s, rc, err, errlen);
}

int store_instance_list(store *st, const char *series_uid, store_instance_cb cb, void *ctx,
                        char *err, size_t errlen)
{
    sqlite3 *db;
    sqlite3_stmt *s;
    char path[4096];
    if (!series_uid)
        return sn_errf(err, errlen, SN_EINVAL, "store_instance_list: no series UID");
    int rc = query__prepare(st,
        "SELECT i.sop_instance_uid, i.sop_class_uid, i.path FROM instances i"
        " JOIN series s ON s.id=i.series_id WHERE s.series_uid=?1"
        " ORDER BY i.instance_number IS NULL, i.instance_number, i.sop_instance_uid",
        &db, &s, err, errlen);
    if (rc != SN_OK)
        return rc;
    sqlite3_bind_text(s, 1, series_uid, -1, SQLITE_STATIC);
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        snprintf(path, sizeof path, "%s/%s", st->dir, col_str(s, 2));
        if (cb(ctx, col_str(s, 0), col_str(s, 1), path))
            break;
    }
    return query__done(st, db, s, rc, err, errlen);
}

/* ---- C-FIND ------------------------------------------------------------------------------ */

/* Study-level columns (1..14, after the level's key in 0) and filters ?1..?6, ?9, ?10, ?16..?18
 * are shared by every level; ?7 and ?8 (modality, Series Instance UID) differ, ?11 (Series
 * Number) is SERIES and IMAGE level, ?12..?14 IMAGE level only, ?15 the keys of the rows to
 * fetch. */
#define FIND__STUDY_COLS \
    "p.patient_key, p.patient_name, p.birth_date, p.sex, st.study_uid, st.study_date," \
    " st.study_time, st.description, st.accession_number, st.study_id, st.referring_physician," \
    " (SELECT replace(group_concat(DISTINCT x.modality), ',', '\\') FROM series x" \
    "   WHERE x.study_id=st.id AND x.modality IS NOT NULL)," \
    " (SELECT count(*) FROM series x WHERE x.study_id=st.id)," \
    " (SELECT coalesce(sum(x.instances), 0) FROM series x WHERE x.study_id=st.id)"
#define FIND__STUDY_WHERE \
    " (?1 IS NULL OR sn_match(?1, p.patient_key, 0))" \
    " AND (?2 IS NULL OR sn_pn_match(?2, p.patient_name))" \
    " AND (?3 IS NULL OR sn_uid_match(?3, st.study_uid))" \
    " AND (?4 IS NULL OR sn_date_match(?4, st.study_date))" \
    " AND (?5 IS NULL OR sn_match(?5, st.accession_number, 0))" \
    " AND (?6 IS NULL OR sn_match(?6, st.description, 1))" \
    " AND (?9 IS NULL OR sn_time_match(?9, st.study_time))" \
    " AND (?10 IS NULL OR sn_match(?10, st.study_id, 0))" \
    " AND (?16 IS NULL OR sn_date_match(?16, p.birth_date))" \
    " AND (?17 IS NULL OR sn_match(?17, p.sex, 0))" \
    " AND (?18 IS NULL OR sn_pn_match(?18, st.referring_physician))"

/* A key of only '*' (or empty) is universal: it must also match absent values. */
static int find__universal(const char *v)
{
    if (v)
        while (*v == '*' || *v == ' ')
            v++;
    return !v || !*v;
}

static void find__bind(sqlite3_stmt *s, int i, const char *v)
{
    store__bind_str(s, i, find__universal(v) ? NULL : v);
}

/* A key the matching cannot take: a Series Number that is not an integer. */
static int find__check(const store_find_query *q, int series_level, char *err, size_t errlen)
{
    long long n;
    if (series_level && !find__universal(q->series_number) && !store__is_parse(q->series_number, &n))
        return sn_errf(err, errlen, SN_EINVAL, "Series Number key '%.24s' is not an integer",
                       q->series_number);
    if (series_level > 1 && !find__universal(q->instance_number) && !store__is_parse(q->instance_number, &n))
        return sn_errf(err, errlen, SN_EINVAL, "Instance Number key '%.24s' is not an integer",
                       q->instance_number);
    return SN_OK;
}

static int find__bind_query(sqlite3_stmt *s, const store_find_query *q, int series_level,
                            char *err, size_t errlen)
{
    find__bind(s, 1, q->patient_id);
    find__bind(s, 2, q->patient_name);
    find__bind(s, 3, q->study_uid);
    find__bind(s, 4, q->study_date);
    find__bind(s, 5, q->accession_number);
    find__bind(s, 6, q->study_description);
    find__bind(s, 7, q->modality);
    find__bind(s, 8, q->series_uid);
    find__bind(s, 9, q->study_time);
    find__bind(s, 10, q->study_id);
    find__bind(s, 16, q->patient_birth_date);
    find__bind(s, 17, q->patient_sex);
    find__bind(s, 18, q->referring_physician);
    if (series_level)
        find__bind(s, 11, q->series_number);
    if (series_level > 1) {
        find__bind(s, 12, q->sop_instance_uid);
        find__bind(s, 13, q->sop_class_uid);
        find__bind(s, 14, q->instance_number);
    }
    if (q->nkeys) {   /* a JSON array for json_each */
        sqlite3_str *j = sqlite3_str_new(NULL);
        for (size_t i = 0; i < q->nkeys; i++)
            sqlite3_str_appendf(j, "%s%lld", i ? "," : "[", (long long)q->keys[i]);
        sqlite3_str_appendchar(j, 1, ']');
        int n = sqlite3_str_length(j);
        char *json = sqlite3_str_finish(j);
        if (!json)
            return sn_errf(err, errlen, SN_ENOMEM, "C-FIND: out of memory for %zu keys", q->nkeys);
        sqlite3_bind_text(s, 15, json, n, sqlite3_free);
    }
    return SN_OK;
}

/* A level's query prepared and its keys bound; on failure nothing is held. */
static int find__prepare(store *st, const char *sql, const store_find_query *q, int level,
                         sqlite3 **db, sqlite3_stmt **s, char *err, size_t errlen)
{
    int rc = query__prepare(st, sql, db, s, err, errlen);
    if (rc == SN_OK && (rc = find__bind_query(*s, q, level, err, errlen)) != SN_OK)
        query__done(st, *db, *s, SQLITE_DONE, err, errlen);
    return rc;
}

/* Column 0 is the level's row id (the key), then the study columns. */
static void find__study_row(sqlite3_stmt *s, store_find_row *r)
{
    memset(r, 0, sizeof *r);
    r->key = sqlite3_column_int64(s, 0);
    r->patient_id = col_str(s, 1);
    r->patient_name = col_str(s, 2);
    r->patient_birth_date = col_str(s, 3);
    r->patient_sex = col_str(s, 4);
    r->study_uid = col_str(s, 5);
    r->study_date = col_str(s, 6);
    r->study_time = col_str(s, 7);
    r->study_description = col_str(s, 8);
    r->accession_number = col_str(s, 9);
    r->study_id = col_str(s, 10);
    r->referring_physician = col_str(s, 11);
    r->modalities_in_study = col_str(s, 12);
    r->study_series = sqlite3_column_int64(s, 13);
    r->study_instances = sqlite3_column_int64(s, 14);
    r->series_number = -1;
    r->series_instances = -1;
    r->instance_number = -1;
}

/* A query at each level: all rows, or (key = FIND__KEYS(x)) the rows of the keys in ?15. */
#define FIND__KEYS(id) " " id " IN (SELECT value FROM json_each(?15)) AND"
#define FIND__STUDY_SQL(key) \
    "SELECT st.id, " FIND__STUDY_COLS \
    " FROM studies st JOIN patients p ON p.id=st.patient_id WHERE" key FIND__STUDY_WHERE \
    " AND (?7 IS NULL OR EXISTS(SELECT 1 FROM series x WHERE x.study_id=st.id" \
    "      AND sn_match(?7, x.modality, 1)))" \
    " AND (?8 IS NULL OR EXISTS(SELECT 1 FROM series x WHERE x.study_id=st.id" \
    "      AND sn_uid_match(?8, x.series_uid)))" \
    " ORDER BY st.study_date DESC, st.id DESC"

int store_find_studies(store *st, const store_find_query *q, store_find_cb cb, void *ctx,
                       char *err, size_t errlen)
{
    static const store_find_query all;
    sqlite3 *db;
    sqlite3_stmt *s;
    if (!q)
        q = &all;
    int rc = find__prepare(st, q->nkeys ? FIND__STUDY_SQL(FIND__KEYS("st.id")) : FIND__STUDY_SQL(""),
                           q, 0, &db, &s, err, errlen);
    if (rc != SN_OK)
        return rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        store_find_row r;
        find__study_row(s, &r);
        if (cb(ctx, &r))
            break;
    }
    return query__done(st, db, s, rc, err, errlen);
}

/* SERIES (level 1) and IMAGE (level 2) queries: one row mapping, the series columns and keys
 * written once. */
#define FIND__SERIES_COLS \
    FIND__STUDY_COLS ", s.series_uid, s.modality, s.description, s.body_part, s.series_number, s.instances"
#define FIND__SERIES_WHERE \
    FIND__STUDY_WHERE \
    " AND (?7 IS NULL OR sn_match(?7, s.modality, 1))" \
    " AND (?8 IS NULL OR sn_uid_match(?8, s.series_uid))" \
    " AND (?11 IS NULL OR sn_int_match(?11, s.series_number))"

#define FIND__SERIES_SQL(key) \
    "SELECT s.id, " FIND__SERIES_COLS \
    " FROM series s JOIN studies st ON st.id=s.study_id JOIN patients p ON p.id=st.patient_id" \
    " WHERE" key FIND__SERIES_WHERE \
    " ORDER BY st.id, s.series_number IS NULL, s.series_number, s.id"
#define FIND__INSTANCE_SQL(key) \
    "SELECT i.id, " FIND__SERIES_COLS ", i.sop_instance_uid, i.sop_class_uid, i.instance_number" \
    " FROM instances i JOIN series s ON s.id=i.series_id JOIN studies st ON st.id=s.study_id" \
    " JOIN patients p ON p.id=st.patient_id" \
    " WHERE" key FIND__SERIES_WHERE \
    " AND (?12 IS NULL OR sn_uid_match(?12, i.sop_instance_uid))" \
    " AND (?13 IS NULL OR sn_uid_match(?13, i.sop_class_uid))" \
    " AND (?14 IS NULL OR sn_int_match(?14, i.instance_number))" \
    " ORDER BY st.id, s.id, i.instance_number IS NULL, i.instance_number, i.id"

static int find__below_study(store *st, int level, const store_find_query *q, store_find_cb cb, void *ctx,
                             char *err, size_t errlen)
{
    static const store_find_query all;
    sqlite3 *db;
    sqlite3_stmt *s;
    if (!q)
        q = &all;
    int rc = find__check(q, level, err, errlen);
    if (rc != SN_OK)
        return rc;
    const char *sql = level == 1 ? (q->nkeys ? FIND__SERIES_SQL(FIND__KEYS("s.id")) : FIND__SERIES_SQL(""))
                                 : (q->nkeys ? FIND__INSTANCE_SQL(FIND__KEYS("i.id")) : FIND__INSTANCE_SQL(""));
    if ((rc = find__prepare(st, sql, q, level, &db, &s, err, errlen)) != SN_OK)
        return rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        store_find_row r;
        find__study_row(s, &r);
        r.series_uid = col_str(s, 15);
        r.modality = col_str(s, 16);
        r.series_description = col_str(s, 17);
        r.body_part = col_str(s, 18);
        r.series_number = col_int_or(s, 19, -1);
        r.series_instances = sqlite3_column_int64(s, 20);
        if (level == 2) {
            r.sop_instance_uid = col_str(s, 21);
            r.sop_class_uid = col_str(s, 22);
            r.instance_number = col_int_or(s, 23, -1);
        }
        if (cb(ctx, &r))
            break;
    }
    return query__done(st, db, s, rc, err, errlen);
}

int store_find_series(store *st, const store_find_query *q, store_find_cb cb, void *ctx,
                      char *err, size_t errlen)
{
    return find__below_study(st, 1, q, cb, ctx, err, errlen);
}

int store_find_instances(store *st, const store_find_query *q, store_find_cb cb, void *ctx,
                         char *err, size_t errlen)
{
    return find__below_study(st, 2, q, cb, ctx, err, errlen);
}

/* ---- jobs and counts --------------------------------------------------------------------- */

/* store_job_list is store_job_list_detail without the detail: one query and one row mapping. */
typedef struct {
    store_job_cb cb;
    void *ctx;
} job_list__adapt;

static int job_list__row(void *vctx, const store_job_detail *d)
{
    const job_list__adapt *a = vctx;
    return a->cb(a->ctx, &d->job);
}

int store_job_list(store *st, store_job_cb cb, void *ctx, char *err, size_t errlen)
{
    if (!cb)
        return sn_errf(err, errlen, SN_EINVAL, "store_job_list: bad arguments");
    job_list__adapt a = {cb, ctx};
    return store_job_list_detail(st, -1, -1, job_list__row, &a, err, errlen);
}

/* Fill by_state[0..n) from "SELECT state, count(*) ... GROUP BY state". */
static int counts__by_state(sqlite3 *db, const char *sql, int64_t *by_state, int n,
                            char *err, size_t errlen)
{
    sqlite3_stmt *s = NULL;
    int rc = sqlite3_prepare_v2(db, sql, -1, &s, NULL);
    if (rc != SQLITE_OK)
        return store__dberr(db, rc, "counts", err, errlen);
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        int k = sqlite3_column_int(s, 0);
        if (k >= 0 && k < n)
            by_state[k] = sqlite3_column_int64(s, 1);
    }
    sqlite3_finalize(s);
    return rc == SQLITE_DONE ? SN_OK : store__dberr(db, rc, "counts", err, errlen);
}

int store_counts_get(store *st, store_counts *out, char *err, size_t errlen)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *s = NULL;
    int rc, status;
    if (!out)
        return sn_errf(err, errlen, SN_EINVAL, "store_counts_get: no output");
    memset(out, 0, sizeof *out);
    /* Sums over series, not count(*) over instances: /metrics must stay cheap at any size. */
    if ((status = query__prepare(st,
             "SELECT (SELECT count(*) FROM patients), (SELECT count(*) FROM studies),"
             " count(*), coalesce(sum(instances), 0), coalesce(sum(bytes), 0),"
             " (SELECT coalesce(min(created_ms), 0) FROM jobs WHERE state=0),"
             " (SELECT coalesce(max(updated_ms), 0) FROM jobs WHERE state=2),"
             " (SELECT coalesce(max(sent_ms), 0) FROM outbox WHERE state=2)"
             " FROM series", &db, &s, err, errlen)) != SN_OK)
        return status;
    /* One read transaction: all figures come from the same snapshot. */
    if ((status = store__exec(db, "BEGIN", err, errlen)) != SN_OK)
        goto out;
    if ((rc = sqlite3_step(s)) != SQLITE_ROW) {
        status = store__dberr(db, rc, "counts", err, errlen);
        goto out;
    }
    out->patients = sqlite3_column_int64(s, 0);
    out->studies = sqlite3_column_int64(s, 1);
    out->series = sqlite3_column_int64(s, 2);
    out->instances = sqlite3_column_int64(s, 3);
    out->bytes = sqlite3_column_int64(s, 4);
    out->oldest_pending_job_ms = sqlite3_column_int64(s, 5);
    out->last_done_job_ms = sqlite3_column_int64(s, 6);
    out->last_sent_ms = sqlite3_column_int64(s, 7);
    sqlite3_reset(s);
    if ((status = counts__by_state(db, "SELECT state, count(*) FROM series GROUP BY state",
                                   out->series_by_state, STORE_SERIES__COUNT, err, errlen)) != SN_OK ||
        (status = counts__by_state(db, "SELECT state, count(*) FROM jobs GROUP BY state",
                                   out->jobs_by_state, STORE_JOB__COUNT, err, errlen)) != SN_OK ||
        (status = counts__by_state(db, "SELECT state, count(*) FROM outbox GROUP BY state",
                                   out->outbox_by_state, STORE_OUTBOX__COUNT, err, errlen)) != SN_OK)
        goto out;
    out->schema_version = st->schema_version;
out:
    sqlite3_finalize(s);
    if (sqlite3_get_autocommit(db) == 0)
        sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
    store__reader_put(st, db);
    return status;
}
