/* common/config.c — loads and validates the node's INI configuration (see config.h).
 * inih splits "key = value" lines and strips inline comments; our own line reader in front of it
 * counts lines (so every error says FILE:LINE), reads section headers itself (inih only reports
 * sections that contain keys and truncates long names), removes leading whitespace (so an
 * indented key is a key, not an inih continuation line) and passes values of any length.
 * Everything is checked before the config is returned; a bad file yields no config at all. */
#include "common/config.h"
#include "common/log.h"
#include "common/status.h"
#include "common/util.h"

#include <ini.h>

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <arpa/inet.h>
#include <unistd.h>

/* ---------------------------------------------------------------------------------------------
 * Keys. The position in each table is the key's index in sec_meta.key_line. */

enum { SEC_NONE = 0, SEC_NODE, SEC_PEER, SEC_ROUTE };

enum {
    NK_AE_TITLE, NK_PORT, NK_BIND, NK_STORAGE, NK_HTTP_PORT, NK_HTTP_BIND, NK_MAX_ASSOCIATIONS,
    NK_STABLE_AFTER, NK_ACCEPT_UNKNOWN, NK_DEVICE, NK_MAX_PDU, NK_ACSE_TIMEOUT, NK_DIMSE_TIMEOUT,
    NK_DISK_MIN_FREE_MB, NK_LOG_LEVEL, NK_FSYNC, NK_SWEEP_INTERVAL_MS, NK_OUTBOX_RETRY_BASE,
    NK_OUTBOX_RETRY_CAP, NK_OUTBOX_MAX_ATTEMPTS, NK_OUTBOX_WORKERS, NK_WORKERS, NK_JOB_TIMEOUT,
    NK_JOB_MAX_ATTEMPTS, NK_TLS_PORT, NK_TLS_CERTIFICATE, NK_TLS_PRIVATE_KEY,
    NK_TLS_TRUSTED_CERTIFICATES, NK_TLS_REQUIRE_PEER_CERTIFICATE, NK_TLS_PROFILE,
    NK_CHECK_PEER_HOST, NK_RETENTION_DAYS, NK_FIND_MAX_RESULTS, NK__COUNT
};
static const char *const node_keys[NK__COUNT] = {
    "ae_title", "port", "bind", "storage", "http_port", "http_bind", "max_associations",
    "stable_after", "accept_unknown", "device", "max_pdu", "acse_timeout", "dimse_timeout",
    "disk_min_free_mb", "log_level", "fsync", "sweep_interval_ms", "outbox_retry_base",
    "outbox_retry_cap", "outbox_max_attempts", "outbox_workers", "workers", "job_timeout",
    "job_max_attempts", "tls_port", "tls_certificate", "tls_private_key",
    "tls_trusted_certificates", "tls_require_peer_certificate", "tls_profile", "check_peer_host",
    "retention_days", "find_max_results",
};

enum { PK_AE_TITLE, PK_HOST, PK_PORT, PK_ALLOW, PK_STABLE_ON_RELEASE, PK_TLS, PK__COUNT };
static const char *const peer_keys[PK__COUNT] = {
    "ae_title", "host", "port", "allow", "stable_on_release", "tls",
};

enum {
    RK_MODALITY, RK_BODY_PART, RK_SERIES_DESCRIPTION, RK_CALLING_AE, RK_IMAGE_TYPE, RK_METHOD,
    RK_LABELS, RK_ATLASES, RK_MODEL, RK_SEND_TO, RK_STABLE_AFTER, RK_CONTINUE, RK_SELECT_K, RK_REFINE, RK__COUNT
};
static const char *const route_keys[RK__COUNT] = {
    "modality", "body_part", "series_description", "calling_ae", "image_type", "method",
    "labels", "atlases", "model", "send_to", "stable_after", "continue", "select_k", "refine",
};

#define KEYS_MAX 48

/* Limits (also documented in etc/segnode.conf). */
#define ASC_MIN_PDU 4096u      /* DCMTK ASC_MINIMUMPDUSIZE */
#define ASC_MAX_PDU 131072u    /* DCMTK ASC_MAXIMUMPDUSIZE */
#define ASC_DEFAULT_PDU 116794u
#define STABLE_AFTER_MAX 86400
#define TIMEOUT_MAX 86400
#define CODE_MAX 16            /* a DICOM CS value (Modality, Body Part Examined, Image Type) */

/* Where each section and key came from, for messages. Parallel to cfg->peers / cfg->routes. */
typedef struct sec_meta {
    int line;                  /* line of the [section] header */
    int key_line[KEYS_MAX];    /* line where the key was set, 0 = not set */
} sec_meta;

typedef struct cfg_ctx {
    sn_config *cfg;
    const char *path;
    FILE *f;
    char *buf;                 /* getline buffer */
    size_t cap;
    int lineno;                /* line the reader last handed to inih */
    int io_errno;              /* read error */
    int sec;                   /* SEC_* of the current section */
    int sec_index;             /* index into peers/routes of the current section */
    int node_seen;
    sec_meta node_meta;
    sec_meta *peer_meta;
    sec_meta *route_meta;
    int peer_cap, route_cap;
    char *long_value;          /* value of the current line when it did not fit inih's buffer */
    int status;                /* first error, 0 = none */
    char *err;
    size_t errlen;
} cfg_ctx;

/* ---------------------------------------------------------------------------------------------
 * Errors */

static int cfg__fail(cfg_ctx *c, int line, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Record the first error as "path:line: reason"; returns 0 so a handler can `return cfg__fail()`. */
static int cfg__fail(cfg_ctx *c, int line, const char *fmt, ...)
{
    if (c->status)
        return 0;
    char reason[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(reason, sizeof reason, fmt, ap);
    va_end(ap);
    c->status = sn_errf(c->err, c->errlen, SN_ECONFIG, "%s:%d: %s", c->path, line, reason);
    return 0;
}

static int cfg__nomem(cfg_ctx *c)
{
    if (!c->status)
        c->status = sn_errf(c->err, c->errlen, SN_ENOMEM, "%s:%d: out of memory", c->path, c->lineno);
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * Defaults and freeing */

static void cfg__node_defaults(sn_node_config *n)
{
    memset(n, 0, sizeof *n);
    sn_strlcpy(n->ae_title, "SEGNODE", sizeof n->ae_title);
    n->port = 11112;
    sn_strlcpy(n->bind, "0.0.0.0", sizeof n->bind);
    sn_strlcpy(n->storage, "/var/lib/segnode", sizeof n->storage);
    n->http_port = 8080;
    sn_strlcpy(n->http_bind, "127.0.0.1", sizeof n->http_bind);
    n->max_associations = 16;
    n->stable_after = 10;
    n->accept_unknown = 0;
    sn_strlcpy(n->device, "auto", sizeof n->device);
    n->max_pdu = ASC_DEFAULT_PDU;
    n->acse_timeout = 30;
    n->dimse_timeout = 60;
    n->find_max_results = 10000;
    n->disk_min_free_mb = 1024;
    n->log_level = SN_LOG_LEVEL_INFO;
    n->fsync = 1;
    n->sweep_interval_ms = 1000;
    n->outbox_retry_base = 5;
    n->outbox_retry_cap = 600;
    /* with base 5 s and cap 600 s, 150 tries span about 24 h: a PACS down for a maintenance
     * window or a night still gets its results (10 gave up after 31 minutes) */
    n->outbox_max_attempts = 150;
    n->outbox_workers = 4;
    n->workers = 1;
    n->job_timeout = 1800;
    n->job_max_attempts = 3;
    n->tls_require_peer_certificate = 1;
    n->tls_profile = SN_TLS_BCP195;
}

static void cfg__peer_defaults(sn_peer *p)
{
    memset(p, 0, sizeof *p);
    sn_strlcpy(p->host, "127.0.0.1", sizeof p->host);
    p->port = 104;
    p->allow = SN_ALLOW_ECHO | SN_ALLOW_STORE;
}

static void cfg__route_defaults(sn_route *r)
{
    memset(r, 0, sizeof *r);
    r->method = SN_METHOD_ATLAS;
    r->stable_after = -1;
    r->select_k = SN_SELECT_K_AUTO;
    r->refine = 1;
}

static sn_config *cfg__new(void)
{
    sn_config *cfg = calloc(1, sizeof *cfg);
    if (!cfg)
        return NULL;
    cfg__node_defaults(&cfg->node);
    cfg->refs_ = 1;
    return cfg;
}

static void cfg__free(sn_config *cfg)
{
    if (!cfg)
        return;
    for (int i = 0; i < cfg->nroutes; i++) {
        if (cfg->routes[i].has_series_description_re) {
            regfree(&cfg->routes[i].series_description);
            cfg->routes[i].has_series_description_re = 0;
        }
    }
    free(cfg->peers);
    free(cfg->routes);
    free(cfg);
}

/* ---------------------------------------------------------------------------------------------
 * Value parsers. Each returns 1 on success, 0 after recording an error (handler convention). */

static int cfg__is_blank(char ch)
{
    return ch == ' ' || ch == '\t';
}

static int cfg__int(cfg_ctx *c, const char *key, const char *v, long long lo, long long hi,
                    long long *out)
{
    const char *p = v;
    if (*p == '-')
        p++;
    if (*p == '\0')
        return cfg__fail(c, c->lineno, "%s: expected an integer, got '%s'", key, v);
    for (const char *q = p; *q; q++) {
        if (*q < '0' || *q > '9')
            return cfg__fail(c, c->lineno, "%s: expected an integer, got '%s'", key, v);
    }
    errno = 0;
    char *end = NULL;
    long long x = strtoll(v, &end, 10);
    if (errno == ERANGE || x < lo || x > hi)
        return cfg__fail(c, c->lineno, "%s: %s is out of range (%lld..%lld)", key, v, lo, hi);
    *out = x;
    return 1;
}

static int cfg__int32(cfg_ctx *c, const char *key, const char *v, long long lo, long long hi,
                      int *out)
{
    long long x;
    if (!cfg__int(c, key, v, lo, hi, &x))
        return 0;
    *out = (int)x;
    return 1;
}

static int cfg__bool(cfg_ctx *c, const char *key, const char *v, int *out)
{
    static const char *const yes[] = {"yes", "true", "on", "1"};
    static const char *const no[] = {"no", "false", "off", "0"};
    for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++) {
        if (strcasecmp(v, yes[i]) == 0) {
            *out = 1;
            return 1;
        }
        if (strcasecmp(v, no[i]) == 0) {
            *out = 0;
            return 1;
        }
    }
    return cfg__fail(c, c->lineno, "%s: expected yes/no (true/false, on/off, 1/0), got '%s'", key, v);
}

static int cfg__str(cfg_ctx *c, const char *key, const char *v, char *dst, size_t n)
{
    if (*v == '\0')
        return cfg__fail(c, c->lineno, "%s: value is empty", key);
    if (sn_strlcpy(dst, v, n) >= n)
        return cfg__fail(c, c->lineno, "%s: value is longer than %zu characters", key, n - 1);
    return 1;
}

static int cfg__ae(cfg_ctx *c, const char *key, const char *v, char *dst)
{
    if (!sn_ae_valid(v))
        return cfg__fail(c, c->lineno,
                         "%s: '%s' is not a valid AE title (1-%d printable ASCII characters, no backslash)",
                         key, v, SN_AE_MAX);
    sn_strlcpy(dst, v, SN_AE_MAX + 1);
    return 1;
}

static int cfg__ip(cfg_ctx *c, const char *key, const char *v, char *dst, size_t n)
{
    unsigned char addr[16];
    if (inet_pton(AF_INET, v, addr) != 1 && inet_pton(AF_INET6, v, addr) != 1)
        return cfg__fail(c, c->lineno, "%s: '%s' is not a numeric IPv4 or IPv6 address", key, v);
    return cfg__str(c, key, v, dst, n);
}

static int cfg__host(cfg_ctx *c, const char *key, const char *v, char *dst, size_t n)
{
    for (const char *p = v; *p; p++) {
        if ((unsigned char)*p <= 0x20 || (unsigned char)*p >= 0x7f || *p == ',' || *p == '/')
            return cfg__fail(c, c->lineno, "%s: '%s' is not a host name or address", key, v);
    }
    /* DCMTK 3.6.7's SCU takes "host:port" and cannot parse an IPv6 literal (every send would
     * fail as a network error and be retried for half an hour) */
    if (strchr(v, ':'))
        return cfg__fail(c, c->lineno, "%s: '%s': IPv6 addresses are not supported (DCMTK 3.6.7 cannot "
                         "connect to them); give an IPv4 address or a host name", key, v);
    return cfg__str(c, key, v, dst, n);
}

static int cfg__device(cfg_ctx *c, const char *key, const char *v, char *dst, size_t n)
{
    if (strcmp(v, "auto") == 0 || strcmp(v, "cpu") == 0)
        return cfg__str(c, key, v, dst, n);
    if (strncmp(v, "cuda:", 5) == 0) {
        const char *d = v + 5;
        size_t len = strlen(d);
        int ok = len >= 1 && len <= 3;
        for (size_t i = 0; ok && i < len; i++)
            ok = d[i] >= '0' && d[i] <= '9';
        if (ok && atoi(d) <= 255)
            return cfg__str(c, key, v, dst, n);
    }
    return cfg__fail(c, c->lineno, "%s: expected auto, cpu or cuda:N, got '%s'", key, v);
}

/* A path that must exist and be readable now (so a typo is a FILE:LINE error, not a failed
 * handshake later); `dir_ok`: a folder is accepted too. */
static int cfg__file(cfg_ctx *c, const char *key, const char *v, char *dst, size_t n, int dir_ok)
{
    struct stat sb;
    if (!cfg__str(c, key, v, dst, n))
        return 0;
    if (stat(v, &sb) != 0 || access(v, R_OK) != 0)
        return cfg__fail(c, c->lineno, "%s: cannot read '%s': %s", key, v, strerror(errno));
    if (S_ISDIR(sb.st_mode) ? !dir_ok : !S_ISREG(sb.st_mode))
        return cfg__fail(c, c->lineno, "%s: '%s' is not a %s", key, v, dir_ok ? "file or folder" : "file");
    return 1;
}

int sn_config_name_valid(const char *s)
{
    size_t len = strlen(s);
    if (len == 0 || len > SN_NAME_MAX || s[0] == '.')
        return 0;
    for (const char *p = s; *p; p++) {
        char ch = *p;
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '_' || ch == '-' || ch == '.'))
            return 0;
    }
    return 1;
}

/* A DICOM CS value: upper/lower case letters, digits, space, underscore; at most 16. */
static int cfg__code_valid(const char *s)
{
    size_t len = strlen(s);
    if (len == 0 || len > CODE_MAX)
        return 0;
    for (const char *p = s; *p; p++) {
        char ch = *p;
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '_' || ch == ' '))
            return 0;
    }
    return 1;
}

enum { LIST_CODE, LIST_AE, LIST_NAME, LIST_SEND_TO };

/* Parse "a, b, c" into `out`: entries trimmed; empty, too long, invalid or repeated entries and
 * more than SN_LIST_MAX entries are errors. */
static int cfg__list(cfg_ctx *c, const char *key, const char *v, int kind, sn_strlist *out)
{
    memset(out, 0, sizeof *out);
    if (*v == '\0')
        return cfg__fail(c, c->lineno, "%s: empty list (leave the key out instead)", key);
    const char *p = v;
    for (int idx = 1;; idx++) {
        const char *comma = strchr(p, ',');
        const char *e = comma ? comma : p + strlen(p);
        while (p < e && cfg__is_blank(*p))
            p++;
        while (e > p && cfg__is_blank(e[-1]))
            e--;
        size_t len = (size_t)(e - p);
        if (len == 0)
            return cfg__fail(c, c->lineno, "%s: list entry %d is empty", key, idx);
        if (len > SN_NAME_MAX)
            return cfg__fail(c, c->lineno, "%s: list entry %d is longer than %d characters", key,
                             idx, SN_NAME_MAX);
        if (out->n == SN_LIST_MAX)
            return cfg__fail(c, c->lineno, "%s: list has more than %d entries", key, SN_LIST_MAX);
        char *item = out->item[out->n];
        memcpy(item, p, len);
        item[len] = '\0';
        int ok;
        const char *what;
        switch (kind) {
        case LIST_CODE:
            ok = cfg__code_valid(item);
            what = "a DICOM code string (at most 16 letters, digits, '_' or spaces)";
            break;
        case LIST_AE:
            ok = sn_ae_valid(item);
            what = "a valid AE title";
            break;
        case LIST_SEND_TO:
            ok = strcmp(item, "@caller") == 0 || sn_config_name_valid(item);
            what = "a peer name or @caller";
            break;
        default:
            ok = sn_config_name_valid(item);
            what = "a name (letters, digits, '_', '-', '.'; not first '.')";
            break;
        }
        if (!ok)
            return cfg__fail(c, c->lineno, "%s: '%s' is not %s", key, item, what);
        int icase = kind == LIST_CODE || kind == LIST_NAME; /* AE titles, peer names: exact */
        for (int j = 0; j < out->n; j++) {
            if ((icase ? strcasecmp(out->item[j], item) : strcmp(out->item[j], item)) == 0)
                return cfg__fail(c, c->lineno, "%s: '%s' is listed twice", key, item);
        }
        out->n++;
        if (!comma)
            break;
        p = comma + 1;
    }
    return 1;
}

/* Shared by sn_config_parse_allow and the [peer] handler; on error copies the bad word to bad. */
static int cfg__parse_allow(const char *text, unsigned *out, char *bad, size_t badlen)
{
    unsigned bits = 0;
    int words = 0, none = 0;
    if (bad && badlen)
        bad[0] = '\0';
    if (!text || !out)
        return SN_EINVAL;
    const char *p = text;
    for (;;) {
        const char *comma = strchr(p, ',');
        const char *e = comma ? comma : p + strlen(p);
        while (p < e && (cfg__is_blank(*p)))
            p++;
        while (e > p && cfg__is_blank(e[-1]))
            e--;
        size_t len = (size_t)(e - p);
        char w[16];
        if (len == 0 || len >= sizeof w) {
            if (bad && badlen)
                snprintf(bad, badlen, "%.*s", (int)(len < 40 ? len : 40), p);
            return SN_EINVAL;
        }
        memcpy(w, p, len);
        w[len] = '\0';
        if (strcasecmp(w, "echo") == 0)
            bits |= SN_ALLOW_ECHO;
        else if (strcasecmp(w, "store") == 0)
            bits |= SN_ALLOW_STORE;
        else if (strcasecmp(w, "find") == 0)
            bits |= SN_ALLOW_FIND;
        else if (strcasecmp(w, "none") == 0)
            none = 1;
        else {
            if (bad && badlen)
                sn_strlcpy(bad, w, badlen);
            return SN_EINVAL;
        }
        words++;
        if (!comma)
            break;
        p = comma + 1;
    }
    if (none && words > 1) {
        if (bad && badlen)
            sn_strlcpy(bad, "none", badlen);
        return SN_EINVAL;
    }
    *out = bits;
    return SN_OK;
}

int sn_config_parse_allow(const char *text, unsigned *out)
{
    return cfg__parse_allow(text, out, NULL, 0);
}

const char *sn_tls_profile_name(sn_tls_profile p)
{
    switch (p) {
    case SN_TLS_BCP195: return "bcp195";
    case SN_TLS_BCP195_ND: return "bcp195-nd";
    case SN_TLS_BCP195_EX: return "bcp195-ex";
    }
    return "?";
}

const char *sn_method_name(sn_method m)
{
    switch (m) {
    case SN_METHOD_ATLAS: return "atlas";
    case SN_METHOD_NET: return "net";
    case SN_METHOD_BOTH: return "both";
    default: return "unknown";
    }
}

/* ---------------------------------------------------------------------------------------------
 * Sections */

static int cfg__key_index(const char *const *keys, int n, const char *name)
{
    for (int i = 0; i < n; i++) {
        if (strcmp(keys[i], name) == 0)
            return i;
    }
    return -1;
}

/* Find the key, refuse unknown and repeated keys, remember where it was set. -1 on error. */
static int cfg__claim_key(cfg_ctx *c, sec_meta *m, const char *const *keys, int n,
                          const char *name, const char *secdesc)
{
    int k = cfg__key_index(keys, n, name);
    if (k < 0) {
        cfg__fail(c, c->lineno, "unknown key '%s' in %s", name, secdesc);
        return -1;
    }
    if (m->key_line[k]) {
        cfg__fail(c, c->lineno, "duplicate key '%s' in %s (first set at line %d)", name, secdesc,
                  m->key_line[k]);
        return -1;
    }
    m->key_line[k] = c->lineno;
    return k;
}

static int cfg__node_key(cfg_ctx *c, const char *name, const char *v)
{
    sn_node_config *n = &c->cfg->node;
    int k = cfg__claim_key(c, &c->node_meta, node_keys, NK__COUNT, name, "[node]");
    long long x;
    switch (k) {
    case NK_AE_TITLE: return cfg__ae(c, name, v, n->ae_title);
    case NK_PORT: return cfg__int32(c, name, v, 1, 65535, &n->port);
    case NK_BIND: return cfg__ip(c, name, v, n->bind, sizeof n->bind);
    case NK_STORAGE: return cfg__str(c, name, v, n->storage, sizeof n->storage);
    case NK_HTTP_PORT: return cfg__int32(c, name, v, 0, 65535, &n->http_port);
    case NK_HTTP_BIND: return cfg__ip(c, name, v, n->http_bind, sizeof n->http_bind);
    case NK_MAX_ASSOCIATIONS: return cfg__int32(c, name, v, 1, 1024, &n->max_associations);
    case NK_STABLE_AFTER: return cfg__int32(c, name, v, 1, STABLE_AFTER_MAX, &n->stable_after);
    case NK_ACCEPT_UNKNOWN: return cfg__bool(c, name, v, &n->accept_unknown);
    case NK_DEVICE: return cfg__device(c, name, v, n->device, sizeof n->device);
    case NK_MAX_PDU:
        if (!cfg__int(c, name, v, ASC_MIN_PDU, ASC_MAX_PDU, &x))
            return 0;
        n->max_pdu = (uint32_t)x;
        return 1;
    case NK_ACSE_TIMEOUT: return cfg__int32(c, name, v, 0, TIMEOUT_MAX, &n->acse_timeout);
    case NK_DIMSE_TIMEOUT: return cfg__int32(c, name, v, 0, TIMEOUT_MAX, &n->dimse_timeout);
    case NK_FIND_MAX_RESULTS: return cfg__int32(c, name, v, 0, 10000000, &n->find_max_results);
    case NK_DISK_MIN_FREE_MB:
        if (!cfg__int(c, name, v, 0, (long long)1 << 40, &x))
            return 0;
        n->disk_min_free_mb = (int64_t)x;
        return 1;
    case NK_LOG_LEVEL: {
        sn_log_level lvl;
        if (sn_log_parse_level(v, &lvl) != SN_OK)
            return cfg__fail(c, c->lineno, "%s: expected debug, info, warn, error or off, got '%s'",
                             name, v);
        n->log_level = (int)lvl;
        return 1;
    }
    case NK_FSYNC: return cfg__bool(c, name, v, &n->fsync);
    case NK_SWEEP_INTERVAL_MS: return cfg__int32(c, name, v, 10, 600000, &n->sweep_interval_ms);
    case NK_OUTBOX_RETRY_BASE: return cfg__int32(c, name, v, 1, TIMEOUT_MAX, &n->outbox_retry_base);
    case NK_OUTBOX_RETRY_CAP: return cfg__int32(c, name, v, 1, TIMEOUT_MAX, &n->outbox_retry_cap);
    case NK_OUTBOX_MAX_ATTEMPTS: return cfg__int32(c, name, v, 1, 1000, &n->outbox_max_attempts);
    case NK_OUTBOX_WORKERS: return cfg__int32(c, name, v, 1, 64, &n->outbox_workers);
    case NK_WORKERS: return cfg__int32(c, name, v, 0, 64, &n->workers);
    case NK_JOB_TIMEOUT: return cfg__int32(c, name, v, 1, 7 * 86400, &n->job_timeout);
    case NK_JOB_MAX_ATTEMPTS: return cfg__int32(c, name, v, 1, 100, &n->job_max_attempts);
    case NK_TLS_PORT: return cfg__int32(c, name, v, 0, 65535, &n->tls_port);
    case NK_TLS_CERTIFICATE: return cfg__file(c, name, v, n->tls_certificate, sizeof n->tls_certificate, 0);
    case NK_TLS_PRIVATE_KEY: return cfg__file(c, name, v, n->tls_private_key, sizeof n->tls_private_key, 0);
    case NK_TLS_TRUSTED_CERTIFICATES:
        return cfg__file(c, name, v, n->tls_trusted_certificates, sizeof n->tls_trusted_certificates, 1);
    case NK_TLS_REQUIRE_PEER_CERTIFICATE: return cfg__bool(c, name, v, &n->tls_require_peer_certificate);
    case NK_TLS_PROFILE:
        for (int i = SN_TLS_BCP195; i <= SN_TLS_BCP195_EX; i++) {
            if (strcmp(v, sn_tls_profile_name((sn_tls_profile)i)) == 0) {
                n->tls_profile = (sn_tls_profile)i;
                return 1;
            }
        }
        return cfg__fail(c, c->lineno, "%s: expected bcp195, bcp195-nd or bcp195-ex, got '%s'", name, v);
    case NK_CHECK_PEER_HOST: return cfg__bool(c, name, v, &n->check_peer_host);
    case NK_RETENTION_DAYS: return cfg__int32(c, name, v, 0, 36500, &n->retention_days);
    default: return 0;
    }
}

static int cfg__peer_key(cfg_ctx *c, const char *name, const char *v)
{
    sn_peer *p = &c->cfg->peers[c->sec_index];
    char desc[SN_NAME_MAX + 16];
    snprintf(desc, sizeof desc, "[peer %s]", p->name);
    int k = cfg__claim_key(c, &c->peer_meta[c->sec_index], peer_keys, PK__COUNT, name, desc);
    switch (k) {
    case PK_AE_TITLE: return cfg__ae(c, name, v, p->ae_title);
    case PK_HOST: return cfg__host(c, name, v, p->host, sizeof p->host);
    case PK_PORT: return cfg__int32(c, name, v, 1, 65535, &p->port);
    case PK_ALLOW: {
        char bad[48];
        if (cfg__parse_allow(v, &p->allow, bad, sizeof bad) != SN_OK)
            return cfg__fail(c, c->lineno,
                             "%s: '%s' is not one of echo, store, find (or 'none' alone)", name, bad);
        return 1;
    }
    case PK_STABLE_ON_RELEASE: return cfg__bool(c, name, v, &p->stable_on_release);
    case PK_TLS: return cfg__bool(c, name, v, &p->tls);
    default: return 0;
    }
}

static int cfg__route_key(cfg_ctx *c, const char *name, const char *v)
{
    sn_route *r = &c->cfg->routes[c->sec_index];
    char desc[SN_NAME_MAX + 16];
    snprintf(desc, sizeof desc, "[route %s]", r->name);
    int k = cfg__claim_key(c, &c->route_meta[c->sec_index], route_keys, RK__COUNT, name, desc);
    switch (k) {
    case RK_MODALITY: return cfg__list(c, name, v, LIST_CODE, &r->modality);
    case RK_BODY_PART: return cfg__list(c, name, v, LIST_CODE, &r->body_part);
    case RK_SERIES_DESCRIPTION:
        /* compiled once parsing is done and the routes array no longer moves */
        return cfg__str(c, name, v, r->series_description_re, sizeof r->series_description_re);
    case RK_CALLING_AE: return cfg__list(c, name, v, LIST_AE, &r->calling_ae);
    case RK_IMAGE_TYPE: return cfg__list(c, name, v, LIST_CODE, &r->image_type);
    case RK_METHOD:
        if (strcasecmp(v, "atlas") == 0)
            r->method = SN_METHOD_ATLAS;
        else if (strcasecmp(v, "net") == 0)
            r->method = SN_METHOD_NET;
        else if (strcasecmp(v, "both") == 0)
            r->method = SN_METHOD_BOTH;
        else
            return cfg__fail(c, c->lineno, "%s: expected atlas, net or both, got '%s'", name, v);
        return 1;
    case RK_LABELS: return cfg__list(c, name, v, LIST_NAME, &r->labels);
    case RK_ATLASES: return cfg__list(c, name, v, LIST_NAME, &r->atlases);
    case RK_MODEL: return cfg__str(c, name, v, r->model, sizeof r->model);
    case RK_SEND_TO: return cfg__list(c, name, v, LIST_SEND_TO, &r->send_to);
    case RK_STABLE_AFTER: return cfg__int32(c, name, v, 1, STABLE_AFTER_MAX, &r->stable_after);
    case RK_CONTINUE: return cfg__bool(c, name, v, &r->continue_matching);
    case RK_SELECT_K:
        if (strcasecmp(v, "auto") == 0) {
            r->select_k = SN_SELECT_K_AUTO;
            return 1;
        }
        if (strcasecmp(v, "all") == 0) {
            r->select_k = 0;
            return 1;
        } else {
            char *end = NULL;
            long x = strtol(v, &end, 10);
            if (!*v || *end || x < 0 || x > SN_ROUTE_ATLASES_MAX)
                return cfg__fail(c, c->lineno, "%s: expected auto, all or 0 to %d, got '%s'", name,
                                 SN_ROUTE_ATLASES_MAX, v);
            r->select_k = (int)x;
            return 1;
        }
    case RK_REFINE:
        if (strcasecmp(v, "intensity") == 0)
            r->refine = 1;
        else if (strcasecmp(v, "none") == 0)
            r->refine = 0;
        else
            return cfg__fail(c, c->lineno, "%s: expected intensity or none, got '%s'", name, v);
        return 1;
    default: return 0;
    }
}

static int cfg__grow(void **arr, void **meta, int *cap, int n, size_t elem)
{
    if (n < *cap)
        return 1;
    int ncap = *cap ? *cap * 2 : 4;
    void *a = realloc(*arr, (size_t)ncap * elem);
    if (!a)
        return 0;
    *arr = a;
    void *m = realloc(*meta, (size_t)ncap * sizeof(sec_meta));
    if (!m)
        return 0;
    *meta = m;
    *cap = ncap;
    return 1;
}

/* A "[...]" line (leading whitespace already removed). Returns 1, or 0 after an error. */
static int cfg__section(cfg_ctx *c, const char *line)
{
    const char *close = strchr(line, ']');
    if (!close)
        return cfg__fail(c, c->lineno, "section header without closing ']'");
    const char *after = close + 1;
    while (cfg__is_blank(*after))
        after++;
    if (*after && *after != ';' && *after != '#')
        return cfg__fail(c, c->lineno, "unexpected text after section header: '%s'", after);

    char inner[256];
    size_t len = (size_t)(close - (line + 1));
    if (len >= sizeof inner)
        return cfg__fail(c, c->lineno, "section header is too long");
    memcpy(inner, line + 1, len);
    inner[len] = '\0';
    sn_strtrim(inner);
    char *name = inner;
    while (*name && !cfg__is_blank(*name))
        name++;
    if (*name) {
        *name++ = '\0';
        while (cfg__is_blank(*name))
            name++;
    }
    const char *type = inner;
    sn_config *cfg = c->cfg;

    if (strcmp(type, "node") == 0) {
        if (*name)
            return cfg__fail(c, c->lineno, "[node] takes no name (got '%s')", name);
        if (c->node_seen)
            return cfg__fail(c, c->lineno, "duplicate section [node] (first at line %d)",
                             c->node_meta.line);
        c->node_seen = 1;
        c->node_meta.line = c->lineno;
        c->sec = SEC_NODE;
        return 1;
    }
    if (strcmp(type, "peer") != 0 && strcmp(type, "route") != 0)
        return cfg__fail(c, c->lineno,
                         "unknown section type '%s' (expected [node], [peer NAME] or [route NAME])",
                         type);
    int is_peer = type[0] == 'p';
    if (*name == '\0')
        return cfg__fail(c, c->lineno, "[%s] needs a name, e.g. [%s %s]", type, type,
                         is_peer ? "PACS" : "mr-abdomen");
    if (!sn_config_name_valid(name))
        return cfg__fail(c, c->lineno,
                         "invalid %s name '%s' (1-%d letters, digits, '_', '-', '.'; not first '.')", type, name,
                         SN_NAME_MAX);
    if (is_peer) {
        for (int i = 0; i < cfg->npeers; i++) {
            if (strcmp(cfg->peers[i].name, name) == 0)
                return cfg__fail(c, c->lineno, "duplicate section [peer %s] (first at line %d)",
                                 name, c->peer_meta[i].line);
        }
        if (!cfg__grow((void **)&cfg->peers, (void **)&c->peer_meta, &c->peer_cap, cfg->npeers,
                       sizeof(sn_peer)))
            return cfg__nomem(c);
        sn_peer *p = &cfg->peers[cfg->npeers];
        cfg__peer_defaults(p);
        sn_strlcpy(p->name, name, sizeof p->name);
        memset(&c->peer_meta[cfg->npeers], 0, sizeof(sec_meta));
        c->peer_meta[cfg->npeers].line = c->lineno;
        c->sec = SEC_PEER;
        c->sec_index = cfg->npeers++;
    } else {
        for (int i = 0; i < cfg->nroutes; i++) {
            if (strcmp(cfg->routes[i].name, name) == 0)
                return cfg__fail(c, c->lineno, "duplicate section [route %s] (first at line %d)",
                                 name, c->route_meta[i].line);
        }
        if (!cfg__grow((void **)&cfg->routes, (void **)&c->route_meta, &c->route_cap, cfg->nroutes,
                       sizeof(sn_route)))
            return cfg__nomem(c);
        sn_route *r = &cfg->routes[cfg->nroutes];
        cfg__route_defaults(r);
        sn_strlcpy(r->name, name, sizeof r->name);
        memset(&c->route_meta[cfg->nroutes], 0, sizeof(sec_meta));
        c->route_meta[cfg->nroutes].line = c->lineno;
        c->sec = SEC_ROUTE;
        c->sec_index = cfg->nroutes++;
    }
    return 1;
}

/* ---------------------------------------------------------------------------------------------
 * inih glue */

/* inih's rule for an inline comment: ';' preceded by whitespace. Returns the end of the text. */
static char *cfg__comment_start(char *s)
{
    int was_space = 0;
    for (; *s; s++) {
        if (was_space && *s == ';')
            return s;
        was_space = *s == ' ' || *s == '\t';
    }
    return s;
}

/* fgets-like reader for ini_parse_stream: hands inih one line per call, so inih's line count and
 * ours agree. Sections and the shape of key lines are checked here; the reader returns NULL (end
 * of input) once an error is recorded. */
static char *cfg__read(char *str, int num, void *stream)
{
    cfg_ctx *c = stream;
    if (c->status || num < 8)
        return NULL;
    free(c->long_value);
    c->long_value = NULL;

    errno = 0;
    ssize_t n = getline(&c->buf, &c->cap, c->f);
    if (n < 0) {
        if (ferror(c->f))
            c->io_errno = errno ? errno : EIO;
        return NULL;
    }
    c->lineno++;
    char *s = c->buf;
    if ((size_t)n != strlen(s)) {
        cfg__fail(c, c->lineno, "line contains a NUL byte");
        return NULL;
    }
    if (c->lineno == 1 && (unsigned char)s[0] == 0xEF && (unsigned char)s[1] == 0xBB &&
        (unsigned char)s[2] == 0xBF) {
        s += 3;                        /* n counts from s below (found by tests/fuzz) */
        n -= 3;
    }
    while (n > 0 && (s[n - 1] == '\n' || s[n - 1] == '\r'))
        s[--n] = '\0';
    sn_strtrim(s);                     /* leading blanks would make inih see a continuation line */

    if (*s == '\0' || *s == ';' || *s == '#') {
        sn_strlcpy(str, "\n", (size_t)num);
        return str;
    }
    if (*s == '[') {
        if (!cfg__section(c, s))
            return NULL;
        sn_strlcpy(str, "[s]\n", (size_t)num); /* inih's section name is not used */
        return str;
    }
    if (c->sec == SEC_NONE) {
        cfg__fail(c, c->lineno, "'%s' is outside any section (start with [node], [peer NAME] or [route NAME])", s);
        return NULL;
    }
    /* inih splits at the first '=' or ':' unless an inline comment comes first. */
    char *cm = cfg__comment_start(s);
    char *sep = strpbrk(s, "=:");
    if (!sep || sep > cm) {
        cfg__fail(c, c->lineno, "expected 'key = value', got '%s'", s);
        return NULL;
    }
    char *key_end = sep;
    while (key_end > s && cfg__is_blank(key_end[-1]))
        key_end--;
    if (key_end == s) {
        cfg__fail(c, c->lineno, "missing key name before '%c'", *sep);
        return NULL;
    }
    size_t len = strlen(s);
    if (len + 2 <= (size_t)num) {
        memcpy(str, s, len);
        str[len] = '\n';
        str[len + 1] = '\0';
        return str;
    }
    /* Longer than inih's line buffer (200 on Debian): pass "key=" and keep the value here. */
    size_t klen = (size_t)(key_end - s);
    if (klen + 3 > (size_t)num) {
        cfg__fail(c, c->lineno, "key name is too long");
        return NULL;
    }
    char *v = sep + 1;
    *cfg__comment_start(v) = '\0';
    c->long_value = strdup(sn_strtrim(v));
    if (!c->long_value) {
        cfg__nomem(c);
        return NULL;
    }
    memcpy(str, s, klen);
    memcpy(str + klen, "=\n", 3);
    return str;
}

#if INI_HANDLER_LINENO
static int cfg__handler(void *user, const char *section, const char *name, const char *value,
                        int lineno)
#else
static int cfg__handler(void *user, const char *section, const char *name, const char *value)
#endif
{
    cfg_ctx *c = user;
    (void)section;
    if (c->status)
        return 0;
    if (!name || !value)
        return cfg__fail(c, c->lineno, "expected 'key = value'");
    if (c->long_value)
        value = c->long_value;
    switch (c->sec) {
    case SEC_NODE: return cfg__node_key(c, name, value);
    case SEC_PEER: return cfg__peer_key(c, name, value);
    case SEC_ROUTE: return cfg__route_key(c, name, value);
    default: return cfg__fail(c, c->lineno, "key '%s' is outside any section", name);
    }
}

/* TLS keys only make sense together: who uses TLS needs an identity, and who verifies needs
 * trusted certificates. */
static int cfg__finish_tls(cfg_ctx *c)
{
    const sn_node_config *n = &c->cfg->node;
    const int *kl = c->node_meta.key_line;
    const sn_peer *tls_peer = NULL;
    int peer_line = 0;
    for (int i = 0; i < c->cfg->npeers && !tls_peer; i++) {
        if (c->cfg->peers[i].tls) {
            tls_peer = &c->cfg->peers[i];
            peer_line = c->peer_meta[i].key_line[PK_TLS];
        }
    }
    if (n->tls_port == 0 && !tls_peer)
        return 1;
    int line = n->tls_port ? kl[NK_TLS_PORT] : peer_line;
    char who[SN_NAME_MAX + 32];
    if (n->tls_port)
        snprintf(who, sizeof who, "tls_port = %d", n->tls_port);
    else
        snprintf(who, sizeof who, "[peer %s] tls = yes", tls_peer->name);
    if (n->tls_port && n->tls_port == n->port)
        return cfg__fail(c, line, "tls_port: %d is also [node] port", n->tls_port);
    if (!n->tls_certificate[0])
        return cfg__fail(c, line, "%s needs [node] tls_certificate", who);
    if (!n->tls_private_key[0])
        return cfg__fail(c, line, "%s needs [node] tls_private_key", who);
    if (!n->tls_trusted_certificates[0] && (tls_peer || n->tls_require_peer_certificate))
        return cfg__fail(c, tls_peer ? peer_line : line,
                         "%s needs [node] tls_trusted_certificates to verify peers%s",
                         tls_peer ? "tls = yes" : who,
                         tls_peer ? "" : " (or tls_require_peer_certificate = no)");
    return 1;
}

/* Checks that need the whole file: required keys, AE uniqueness, send_to targets, regexes. */
/* glibc's regcomp copies the expression under a repetition (`x+` becomes `xx*`, `x{m,n}` n
 * copies of x, nested repetitions multiply) and computes closures over the copies, so a short
 * pattern can take gigabytes or minutes to compile: `b++++...` (2.9 GB), twelve nested
 * `(...(x?)+...)+` (20 s), `(((x?){1,20}){1,20}){1,20}` (2.8 s); a SIGHUP with such a line
 * would stall or kill the node (found by tests/fuzz). Refused before regcomp: a repetition
 * operator right after another (undefined in POSIX EREs anyway), repetitions nested more than
 * SN_CONFIG_REGEX_DEPTH deep, and an upper bound of the compiled size above
 * SN_CONFIG_REGEX_MAX (every atom counts 1, `+` doubles the atom or group before it, `{m,n}`
 * multiplies it by the larger count, `{m,}` by m + 1; `*` and `?` copy nothing). Within
 * these, the worst pattern measured compiles in 0.3 s. Returns NULL or why not. */
static const char *cfg__regex_check(const char *re)
{
    enum { NEST = 64 };
    struct { double size; int depth; } stack[NEST];
    double cur = 0, last = 0;      /* size of the open group so far; of its last atom or group */
    int cur_depth = 0, last_depth = 0, n = 0, prev_rep = 0, can_rep = 0;
    for (const char *p = re; *p; p++) {
        int rep = 0;
        double k = 1;
        switch (*p) {
        case '(':
            if (n == NEST)
                return "groups nested too deep";
            stack[n].size = cur;
            stack[n++].depth = cur_depth;
            cur = last = 0;
            cur_depth = last_depth = 0;
            can_rep = 0;
            break;
        case ')':
            last = cur;
            last_depth = cur_depth;
            if (n > 0) {
                n--;
                cur = stack[n].size + last;
                cur_depth = stack[n].depth > last_depth ? stack[n].depth : last_depth;
            }
            can_rep = 1;
            break;
        case '|':
            last = 0;
            can_rep = 0;
            break;
        case '*':
        case '?':
        case '+':
            rep = 1;
            k = *p == '+' ? 2 : 1;
            break;
        case '{': {
            char *end;
            double m = strtod(p + 1, &end);
            k = m;
            if (*end == ',')
                k = end[1] == '}' ? m + 1 : strtod(end + 1, &end);
            if (k < 1)
                k = 1;
            const char *close = strchr(p, '}');
            p = close ? close : p + strlen(p) - 1;
            rep = 1;
            break;
        }
        case '[': {
            const char *q = p + 1;
            if (*q == '^')
                q++;
            if (*q == ']')
                q++;
            while (*q && *q != ']')
                q++;
            p = *q ? q : q - 1;
            cur += 1;
            last = 1;
            last_depth = 0;
            can_rep = 1;
            break;
        }
        case '\\':
            if (p[1])
                p++;
            /* fall through */
        default:
            cur += 1;
            last = 1;
            last_depth = 0;
            can_rep = 1;
        }
        if (rep) {
            if (prev_rep)
                return "a repetition operator follows another (as in x++ or x?*)";
            if (can_rep) {
                cur += last * (k - 1);
                last *= k;
                if (++last_depth > SN_CONFIG_REGEX_DEPTH)
                    return "repetitions nested too deep";
                if (last_depth > cur_depth)
                    cur_depth = last_depth;
            }
        }
        prev_rep = rep;
        if (cur > SN_CONFIG_REGEX_MAX || last > SN_CONFIG_REGEX_MAX)
            return "its repetitions would compile to too many copies";
    }
    while (n > 0)
        cur += stack[--n].size;
    return cur > SN_CONFIG_REGEX_MAX ? "its repetitions would compile to too many copies" : NULL;
}

static int cfg__finish(cfg_ctx *c)
{
    sn_config *cfg = c->cfg;
    for (int i = 0; i < cfg->npeers; i++) {
        const sn_peer *p = &cfg->peers[i];
        const sec_meta *m = &c->peer_meta[i];
        if (!m->key_line[PK_AE_TITLE])
            return cfg__fail(c, m->line, "[peer %s]: missing required key 'ae_title'", p->name);
        int line = m->key_line[PK_AE_TITLE];
        if (strcmp(p->ae_title, cfg->node.ae_title) == 0)
            return cfg__fail(c, line, "ae_title: [peer %s] uses '%s', the node's own AE title",
                             p->name, p->ae_title);
        for (int j = 0; j < i; j++) {
            if (strcmp(cfg->peers[j].ae_title, p->ae_title) == 0)
                return cfg__fail(c, line,
                                 "ae_title: duplicate AE title '%s' in [peer %s] (also [peer %s] at line %d)",
                                 p->ae_title, p->name, cfg->peers[j].name,
                                 c->peer_meta[j].key_line[PK_AE_TITLE]);
        }
    }
    if (!cfg__finish_tls(c))
        return 0;
    for (int i = 0; i < cfg->nroutes; i++) {
        sn_route *r = &cfg->routes[i];
        const sec_meta *m = &c->route_meta[i];
        for (int j = 0; j < r->send_to.n; j++) {
            const char *t = r->send_to.item[j];
            if (strcmp(t, "@caller") != 0 && !sn_config_peer_by_name(cfg, t))
                return cfg__fail(c, m->key_line[RK_SEND_TO],
                                 "send_to: [route %s] names '%s', which is not a [peer] section",
                                 r->name, t);
        }
        if ((r->method == SN_METHOD_ATLAS || r->method == SN_METHOD_BOTH) &&
            r->atlases.n > SN_ROUTE_ATLASES_MAX)
            return cfg__fail(c, m->key_line[RK_ATLASES],
                             "atlases: [route %s] names %d atlases; the atlas method registers and "
                             "fuses at most %d", r->name, r->atlases.n, SN_ROUTE_ATLASES_MAX);
        if (m->key_line[RK_SELECT_K] && r->method == SN_METHOD_NET)
            return cfg__fail(c, m->key_line[RK_SELECT_K],
                             "select_k: [route %s] uses method net; select_k applies to the atlas "
                             "method (atlas or both)", r->name);
        if (m->key_line[RK_REFINE] && r->method == SN_METHOD_NET)
            return cfg__fail(c, m->key_line[RK_REFINE],
                             "refine: [route %s] uses method net; refine applies to the atlas "
                             "method (atlas or both)", r->name);
        if (r->select_k > r->atlases.n)
            return cfg__fail(c, m->key_line[RK_SELECT_K],
                             "select_k: [route %s] keeps %d atlases but names %d", r->name, r->select_k,
                             r->atlases.n);
        if ((r->method == SN_METHOD_NET || r->method == SN_METHOD_BOTH) && r->model[0] == '\0')
            return cfg__fail(c, m->key_line[RK_METHOD] ? m->key_line[RK_METHOD] : m->line,
                             "model: [route %s] uses method %s and needs a model", r->name,
                             sn_method_name(r->method));
        if (m->key_line[RK_SERIES_DESCRIPTION]) {
            const char *why_not = cfg__regex_check(r->series_description_re);
            if (why_not)
                return cfg__fail(c, m->key_line[RK_SERIES_DESCRIPTION],
                                 "series_description: regular expression '%s' refused: %s "
                                 "(limits: %d nested repetitions, %d copies once compiled)",
                                 r->series_description_re, why_not, SN_CONFIG_REGEX_DEPTH,
                                 SN_CONFIG_REGEX_MAX);
            int rc = regcomp(&r->series_description, r->series_description_re,
                             REG_EXTENDED | REG_ICASE | REG_NOSUB);
            if (rc != 0) {
                char why[128];
                regerror(rc, &r->series_description, why, sizeof why);
                return cfg__fail(c, m->key_line[RK_SERIES_DESCRIPTION],
                                 "series_description: invalid regular expression '%s': %s",
                                 r->series_description_re, why);
            }
            r->has_series_description_re = 1;
        }
    }
    return 1;
}

/* ---------------------------------------------------------------------------------------------
 * Public API */

int sn_config_load(const char *path, sn_config **out, char *err, size_t errlen)
{
    int rc;
    cfg_ctx c;
    memset(&c, 0, sizeof c);
    if (!out)
        return sn_errf(err, errlen, SN_EINVAL, "sn_config_load: out is NULL");
    *out = NULL;
    if (!path || !*path)
        return sn_errf(err, errlen, SN_EINVAL, "sn_config_load: no path");

    c.cfg = cfg__new();
    if (!c.cfg)
        return sn_errf(err, errlen, SN_ENOMEM, "%s: out of memory", path);
    if (sn_strlcpy(c.cfg->path, path, sizeof c.cfg->path) >= sizeof c.cfg->path) {
        rc = sn_errf(err, errlen, SN_ECONFIG, "%s: path is too long", path);
        goto err;
    }
    c.path = path;
    c.err = err;
    c.errlen = errlen;
    c.f = fopen(path, "r");
    if (!c.f) {
        rc = sn_errf(err, errlen, SN_EIO, "%s: cannot open: %s", path, strerror(errno));
        goto err;
    }

    int r = ini_parse_stream(cfg__read, &c, cfg__handler, &c);
    if (c.status) {
        rc = c.status;
        goto err;
    }
    if (c.io_errno) {
        rc = sn_errf(err, errlen, SN_EIO, "%s:%d: read error: %s", path, c.lineno + 1,
                     strerror(c.io_errno));
        goto err;
    }
    if (r > 0) {
        rc = sn_errf(err, errlen, SN_ECONFIG, "%s:%d: syntax error", path, r);
        goto err;
    }
    if (r < 0) {
        rc = sn_errf(err, errlen, SN_ENOMEM, "%s: parser out of memory", path);
        goto err;
    }
    if (!cfg__finish(&c)) {
        rc = c.status;
        goto err;
    }

    *out = c.cfg;
    c.cfg = NULL;
    rc = SN_OK;
err:
    if (c.f)
        fclose(c.f);
    free(c.buf);
    free(c.long_value);
    free(c.peer_meta);
    free(c.route_meta);
    cfg__free(c.cfg);
    return rc;
}

int sn_config_defaults(sn_config **out, char *err, size_t errlen)
{
    if (!out)
        return sn_errf(err, errlen, SN_EINVAL, "sn_config_defaults: out is NULL");
    *out = cfg__new();
    if (!*out)
        return sn_errf(err, errlen, SN_ENOMEM, "out of memory");
    return SN_OK;
}

sn_config *sn_config_ref(sn_config *cfg)
{
    if (cfg)
        __atomic_add_fetch(&cfg->refs_, 1, __ATOMIC_RELAXED);
    return cfg;
}

void sn_config_unref(sn_config *cfg)
{
    if (cfg && __atomic_sub_fetch(&cfg->refs_, 1, __ATOMIC_ACQ_REL) == 0)
        cfg__free(cfg);
}

/* `s` without leading and trailing spaces (PS3.5: not significant in AE and CS values). */
static const char *cfg__span(const char *s, size_t *len)
{
    if (!s)
        s = "";
    while (*s == ' ')
        s++;
    size_t n = strlen(s);
    while (n && s[n - 1] == ' ')
        n--;
    *len = n;
    return s;
}

static int cfg__span_eq(const char *s, size_t n, const char *item, int icase)
{
    if (strlen(item) != n)
        return 0;
    return icase ? strncasecmp(s, item, n) == 0 : strncmp(s, item, n) == 0;
}

static int cfg__list_has(const sn_strlist *l, const char *s, size_t n, int icase)
{
    for (int i = 0; i < l->n; i++) {
        if (cfg__span_eq(s, n, l->item[i], icase))
            return 1;
    }
    return 0;
}

const sn_peer *sn_config_peer_by_ae(const sn_config *cfg, const char *ae_title)
{
    if (!cfg || !ae_title)
        return NULL;
    size_t n;
    const char *s = cfg__span(ae_title, &n);
    for (int i = 0; i < cfg->npeers; i++) {
        if (cfg__span_eq(s, n, cfg->peers[i].ae_title, 0))
            return &cfg->peers[i];
    }
    return NULL;
}

const sn_peer *sn_config_peer_by_name(const sn_config *cfg, const char *name)
{
    if (!cfg || !name)
        return NULL;
    for (int i = 0; i < cfg->npeers; i++) {
        if (strcmp(cfg->peers[i].name, name) == 0)
            return &cfg->peers[i];
    }
    return NULL;
}

/* Every value of l must be one of the backslash-separated values of `multi`. */
static int cfg__image_type_matches(const sn_strlist *l, const char *multi)
{
    if (!multi)
        multi = "";
    for (int i = 0; i < l->n; i++) {
        int found = 0;
        const char *p = multi;
        for (;;) {
            const char *bs = strchr(p, '\\');
            const char *e = bs ? bs : p + strlen(p);
            while (p < e && *p == ' ')
                p++;
            while (e > p && e[-1] == ' ')
                e--;
            if (cfg__span_eq(p, (size_t)(e - p), l->item[i], 1)) {
                found = 1;
                break;
            }
            if (!bs)
                break;
            p = bs + 1;
        }
        if (!found)
            return 0;
    }
    return 1;
}

int sn_route_matches(const sn_route *route, const sn_series_attrs *attrs)
{
    static const sn_series_attrs none = {0};
    if (!route)
        return 0;
    if (!attrs)
        attrs = &none;
    size_t n;
    const char *s;
    if (route->modality.n) {
        s = cfg__span(attrs->modality, &n);
        if (!cfg__list_has(&route->modality, s, n, 1))
            return 0;
    }
    if (route->body_part.n) {
        s = cfg__span(attrs->body_part, &n);
        if (!cfg__list_has(&route->body_part, s, n, 1))
            return 0;
    }
    if (route->calling_ae.n) {
        s = cfg__span(attrs->calling_ae, &n);
        if (!cfg__list_has(&route->calling_ae, s, n, 0))
            return 0;
    }
    if (route->has_series_description_re) {
        const char *d = attrs->series_description ? attrs->series_description : "";
        if (regexec(&route->series_description, d, 0, NULL, 0) != 0)
            return 0;
    }
    if (route->image_type.n && !cfg__image_type_matches(&route->image_type, attrs->image_type))
        return 0;
    return 1;
}
