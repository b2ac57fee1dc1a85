/* tests/config/test_config.c — unit tests for common/config.c: the shipped example parses,
 * defaults, value syntax (inline comments, indentation, long lines, booleans), every refusal with
 * its FILE:LINE message, route matching, lookups and reference counting. Test files are written
 * to a mkdtemp folder, never into the repository. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "common/config.h"
#include "common/log.h"
#include "common/status.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char g_dir[256];
static char g_path[512];

static int group_setup(void **state)
{
    (void)state;
    snprintf(g_dir, sizeof g_dir, "%s/sn_config_XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (!mkdtemp(g_dir))
        return -1;
    snprintf(g_path, sizeof g_path, "%s/t.conf", g_dir);
    /* TLS keys name files that must exist: stand-ins (never parsed as PEM by the config). */
    char p[600];
    static const char *const files[] = {"cert.pem", "key.pem", "ca/peer.pem"};
    snprintf(p, sizeof p, "%s/ca", g_dir);
    if (mkdir(p, 0700) != 0)
        return -1;
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        snprintf(p, sizeof p, "%s/%s", g_dir, files[i]);
        FILE *f = fopen(p, "w");
        if (!f)
            return -1;
        fputs("-----BEGIN CERTIFICATE-----\n", f);
        fclose(f);
    }
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    char p[600];
    static const char *const files[] = {"cert.pem", "key.pem", "ca/peer.pem"};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        snprintf(p, sizeof p, "%s/%s", g_dir, files[i]);
        unlink(p);
    }
    snprintf(p, sizeof p, "%s/ca", g_dir);
    rmdir(p);
    unlink(g_path);
    rmdir(g_dir);
    return 0;
}

static void write_conf(const char *text)
{
    FILE *f = fopen(g_path, "w");
    assert_non_null(f);
    assert_int_equal(fputs(text, f) >= 0, 1);
    assert_int_equal(fclose(f), 0);
}

static sn_config *load_ok(const char *text)
{
    char err[512] = "";
    sn_config *cfg = NULL;
    write_conf(text);
    int rc = sn_config_load(g_path, &cfg, err, sizeof err);
    if (rc != SN_OK)
        fail_msg("unexpected error %d: %s\n--- file ---\n%s", rc, err, text);
    assert_non_null(cfg);
    return cfg;
}

/* Loading `text` fails with SN_ECONFIG, a message "t.conf:LINE: ..." that contains `needle`. */
static void expect_error(const char *text, int line, const char *needle)
{
    char err[512] = "";
    char where[600];
    sn_config *cfg = (sn_config *)0x1;
    write_conf(text);
    int rc = sn_config_load(g_path, &cfg, err, sizeof err);
    if (rc != SN_ECONFIG || cfg != NULL)
        fail_msg("expected SN_ECONFIG, got %d (%s)\n--- file ---\n%s", rc, err, text);
    snprintf(where, sizeof where, "%s:%d: ", g_path, line);
    if (strncmp(err, where, strlen(where)) != 0 || !strstr(err, needle))
        fail_msg("message '%s' lacks '%s' or '%s'\n--- file ---\n%s", err, where, needle, text);
}

/* ------------------------------------------------------------------------------------------- */

static void test_shipped_example(void **state)
{
    (void)state;
    char err[512] = "";
    sn_config *cfg = NULL;
    const char *path = SEGNODE_SOURCE_DIR "/etc/segnode.conf";
    int rc = sn_config_load(path, &cfg, err, sizeof err);
    if (rc != SN_OK)
        fail_msg("%s: %s", path, err);
    assert_string_equal(cfg->path, path);
    assert_string_equal(cfg->node.ae_title, "SEGNODE");
    assert_int_equal(cfg->node.port, 11112);
    assert_string_equal(cfg->node.bind, "0.0.0.0");
    assert_string_equal(cfg->node.storage, "/var/lib/segnode");
    assert_int_equal(cfg->node.http_port, 8080);
    assert_string_equal(cfg->node.http_bind, "127.0.0.1");
    assert_int_equal(cfg->node.max_associations, 16);
    assert_int_equal(cfg->node.stable_after, 10);
    assert_int_equal(cfg->node.accept_unknown, 0);
    assert_string_equal(cfg->node.device, "auto");
    assert_int_equal(cfg->node.max_pdu, 116794);
    assert_int_equal(cfg->node.acse_timeout, 30);
    assert_int_equal(cfg->node.dimse_timeout, 60);
    assert_int_equal(cfg->node.disk_min_free_mb, 1024);
    assert_int_equal(cfg->node.log_level, SN_LOG_LEVEL_INFO);
    assert_int_equal(cfg->node.fsync, 1);
    assert_int_equal(cfg->node.sweep_interval_ms, 1000);
    assert_int_equal(cfg->node.outbox_retry_base, 5);
    assert_int_equal(cfg->node.outbox_retry_cap, 600);
    assert_int_equal(cfg->node.outbox_max_attempts, 150);
    assert_int_equal(cfg->node.outbox_workers, 4);
    assert_int_equal(cfg->node.workers, 1);
    assert_int_equal(cfg->node.job_timeout, 1800);
    assert_int_equal(cfg->node.job_max_attempts, 3);

    assert_int_equal(cfg->npeers, 1);
    const sn_peer *p = sn_config_peer_by_name(cfg, "PACS");
    assert_non_null(p);
    assert_string_equal(p->ae_title, "PACS");
    assert_string_equal(p->host, "127.0.0.1");
    assert_int_equal(p->port, 4242);
    assert_int_equal(p->allow, SN_ALLOW_ECHO | SN_ALLOW_STORE | SN_ALLOW_FIND);
    assert_int_equal(p->stable_on_release, 0);
    assert_int_equal(p->tls, 0);

    assert_int_equal(cfg->nroutes, 1);
    const sn_route *r = &cfg->routes[0];
    assert_string_equal(r->name, "mr-abdomen");
    assert_int_equal(r->modality.n, 1);
    assert_string_equal(r->modality.item[0], "MR");
    assert_int_equal(r->method, SN_METHOD_ATLAS);
    assert_int_equal(r->labels.n, 4);
    assert_string_equal(r->labels.item[0], "liver");
    assert_string_equal(r->labels.item[3], "kidney_right");
    assert_int_equal(r->atlases.n, 1);
    assert_string_equal(r->atlases.item[0], "phantom-ct");
    assert_string_equal(r->model, "models/mr-t1");
    assert_int_equal(r->send_to.n, 2);
    assert_string_equal(r->send_to.item[0], "PACS");
    assert_string_equal(r->send_to.item[1], "@caller");
    assert_int_equal(r->stable_after, -1);
    assert_int_equal(r->continue_matching, 0);
    assert_int_equal(r->has_series_description_re, 0);
    sn_config_unref(cfg);
}

/* Every key of config.h appears, uncommented, in the shipped example (it is the documentation). */
static void test_shipped_example_documents_every_key(void **state)
{
    (void)state;
    static const char *const keys[] = {
        "ae_title", "port", "bind", "storage", "http_port", "http_bind", "max_associations",
        "stable_after", "accept_unknown", "device", "max_pdu", "acse_timeout", "dimse_timeout",
        "disk_min_free_mb", "log_level", "fsync", "sweep_interval_ms", "outbox_retry_base",
        "outbox_retry_cap", "outbox_max_attempts", "outbox_workers", "workers", "job_timeout",
        "job_max_attempts", "tls_port", "tls_certificate", "tls_private_key",
        "tls_trusted_certificates", "tls_require_peer_certificate", "tls_profile",
        "check_peer_host", "find_max_results", "host", "allow",
        "stable_on_release", "tls", "modality", "body_part", "series_description", "calling_ae",
        "image_type", "method", "labels", "atlases", "model", "send_to", "continue", "select_k",
        "refine",
    };
    FILE *f = fopen(SEGNODE_SOURCE_DIR "/etc/segnode.conf", "r");
    assert_non_null(f);
    static char text[65536];
    size_t n = fread(text, 1, sizeof text - 1, f);
    text[n] = '\0';
    fclose(f);
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        char pat[64];
        snprintf(pat, sizeof pat, "\n%s = ", keys[i]);
        char pat2[64];
        snprintf(pat2, sizeof pat2, "; %s = ", keys[i]);
        if (!strstr(text, pat) && !strstr(text, pat2))
            fail_msg("etc/segnode.conf does not document '%s'", keys[i]);
    }
}

static void test_defaults(void **state)
{
    (void)state;
    sn_config *cfg = NULL;
    assert_int_equal(sn_config_defaults(&cfg, NULL, 0), SN_OK);
    assert_non_null(cfg);
    assert_string_equal(cfg->path, "");
    assert_string_equal(cfg->node.ae_title, "SEGNODE");
    assert_int_equal(cfg->node.port, 11112);
    assert_string_equal(cfg->node.bind, "0.0.0.0");
    assert_string_equal(cfg->node.storage, "/var/lib/segnode");
    assert_int_equal(cfg->node.http_port, 8080);
    assert_string_equal(cfg->node.http_bind, "127.0.0.1");
    assert_int_equal(cfg->node.max_associations, 16);
    assert_int_equal(cfg->node.stable_after, 10);
    assert_int_equal(cfg->node.accept_unknown, 0);
    assert_string_equal(cfg->node.device, "auto");
    assert_int_equal(cfg->node.max_pdu, 116794);
    assert_int_equal(cfg->node.acse_timeout, 30);
    assert_int_equal(cfg->node.dimse_timeout, 60);
    assert_int_equal(cfg->node.disk_min_free_mb, 1024);
    assert_int_equal(cfg->node.log_level, SN_LOG_LEVEL_INFO);
    assert_int_equal(cfg->node.fsync, 1);
    assert_int_equal(cfg->node.sweep_interval_ms, 1000);
    assert_int_equal(cfg->node.outbox_retry_base, 5);
    assert_int_equal(cfg->node.outbox_retry_cap, 600);
    assert_int_equal(cfg->node.outbox_max_attempts, 150);
    assert_int_equal(cfg->node.outbox_workers, 4);
    assert_int_equal(cfg->node.workers, 1);
    assert_int_equal(cfg->node.job_timeout, 1800);
    assert_int_equal(cfg->node.job_max_attempts, 3);
    assert_int_equal(cfg->node.tls_port, 0);
    assert_string_equal(cfg->node.tls_certificate, "");
    assert_string_equal(cfg->node.tls_private_key, "");
    assert_string_equal(cfg->node.tls_trusted_certificates, "");
    assert_int_equal(cfg->node.tls_require_peer_certificate, 1);
    assert_int_equal(cfg->node.tls_profile, SN_TLS_BCP195);
    assert_int_equal(cfg->node.check_peer_host, 0);
    assert_int_equal(cfg->npeers, 0);
    assert_int_equal(cfg->nroutes, 0);
    sn_config_unref(cfg);
}

static void test_empty_file_is_defaults(void **state)
{
    (void)state;
    sn_config *cfg = load_ok("; nothing but a comment\n\n# another\n");
    sn_config *def = NULL;
    assert_int_equal(sn_config_defaults(&def, NULL, 0), SN_OK);
    assert_memory_equal(&cfg->node, &def->node, sizeof cfg->node);
    assert_int_equal(cfg->npeers, 0);
    assert_int_equal(cfg->nroutes, 0);
    sn_config_unref(def);
    sn_config_unref(cfg);
}

static void test_peer_and_route_defaults(void **state)
{
    (void)state;
    sn_config *cfg = load_ok("[peer A]\nae_title = AAA\n[route r]\n");
    assert_int_equal(cfg->npeers, 1);
    assert_string_equal(cfg->peers[0].host, "127.0.0.1");
    assert_int_equal(cfg->peers[0].port, 104);
    assert_int_equal(cfg->peers[0].allow, SN_ALLOW_ECHO | SN_ALLOW_STORE);
    assert_int_equal(cfg->peers[0].stable_on_release, 0);
    assert_int_equal(cfg->peers[0].tls, 0);
    assert_int_equal(cfg->nroutes, 1);
    const sn_route *r = &cfg->routes[0];
    assert_int_equal(r->method, SN_METHOD_ATLAS);
    assert_int_equal(r->stable_after, -1);
    assert_int_equal(r->continue_matching, 0);
    assert_int_equal(r->modality.n + r->labels.n + r->send_to.n, 0);
    /* a route with no match keys matches anything */
    sn_series_attrs a = {0};
    assert_int_equal(sn_route_matches(r, &a), 1);
    assert_int_equal(sn_route_matches(r, NULL), 1);
    sn_config_unref(cfg);
}

static void test_all_keys_set(void **state)
{
    (void)state;
    static char text[4096];
    snprintf(text, sizeof text,
        "[node]\n"
        "ae_title = MY NODE\n"
        "port = 104\n"
        "bind = ::\n"
        "storage = /srv/seg\n"
        "http_port = 0\n"
        "http_bind = ::1\n"
        "max_associations = 1024\n"
        "stable_after = 1\n"
        "accept_unknown = yes\n"
        "device = cuda:1\n"
        "max_pdu = 4096\n"
        "acse_timeout = 0\n"
        "dimse_timeout = 0\n"
        "disk_min_free_mb = 0\n"
        "log_level = debug\n"
        "fsync = off\n"
        "sweep_interval_ms = 250\n"
        "outbox_retry_base = 1\n"
        "outbox_retry_cap = 86400\n"
        "outbox_max_attempts = 1000\n"
        "outbox_workers = 64\n"
        "workers = 64\n"
        "job_timeout = 604800\n"
        "job_max_attempts = 100\n"
        "tls_port = 2762\n"
        "tls_certificate = %s/cert.pem\n"
        "tls_private_key = %s/key.pem\n"
        "tls_trusted_certificates = %s/ca\n"
        "tls_require_peer_certificate = no\n"
        "tls_profile = bcp195-ex\n"
        "check_peer_host = yes\n"
        "[peer P1]\n"
        "ae_title = P1\n"
        "host = pacs.example.org\n"
        "port = 65535\n"
        "allow = find\n"
        "stable_on_release = true\n"
        "tls = 1\n"
        "[peer P2]\n"
        "ae_title = P2\n"
        "allow = none\n"
        "[route all]\n"
        "modality = mr, CT\n"
        "body_part = ABDOMEN, chest\n"
        "series_description = ^t[12]\n"
        "calling_ae = SCANNER 1, P1\n"
        "image_type = ORIGINAL, AXIAL\n"
        "method = both\n"
        "labels = liver\n"
        "atlases = a1, a.2\n"
        "model = /opt/models/x\n"
        "send_to = P1, P2, @caller\n"
        "stable_after = 86400\n"
        "continue = yes\n", g_dir, g_dir, g_dir);
    sn_config *cfg = load_ok(text);
    assert_string_equal(cfg->node.ae_title, "MY NODE");
    assert_int_equal(cfg->node.port, 104);
    assert_string_equal(cfg->node.bind, "::");
    assert_string_equal(cfg->node.storage, "/srv/seg");
    assert_int_equal(cfg->node.http_port, 0);
    assert_string_equal(cfg->node.http_bind, "::1");
    assert_int_equal(cfg->node.max_associations, 1024);
    assert_int_equal(cfg->node.stable_after, 1);
    assert_int_equal(cfg->node.accept_unknown, 1);
    assert_string_equal(cfg->node.device, "cuda:1");
    assert_int_equal(cfg->node.max_pdu, 4096);
    assert_int_equal(cfg->node.acse_timeout, 0);
    assert_int_equal(cfg->node.dimse_timeout, 0);
    assert_int_equal(cfg->node.disk_min_free_mb, 0);
    assert_int_equal(cfg->node.log_level, SN_LOG_LEVEL_DEBUG);
    assert_int_equal(cfg->node.fsync, 0);
    assert_int_equal(cfg->node.sweep_interval_ms, 250);
    assert_int_equal(cfg->node.outbox_retry_base, 1);
    assert_int_equal(cfg->node.outbox_retry_cap, 86400);
    assert_int_equal(cfg->node.outbox_max_attempts, 1000);
    assert_int_equal(cfg->node.outbox_workers, 64);
    assert_int_equal(cfg->node.workers, 64);
    assert_int_equal(cfg->node.job_timeout, 604800);
    assert_int_equal(cfg->node.job_max_attempts, 100);
    assert_int_equal(cfg->node.tls_port, 2762);
    assert_non_null(strstr(cfg->node.tls_certificate, "/cert.pem"));
    assert_non_null(strstr(cfg->node.tls_private_key, "/key.pem"));
    assert_non_null(strstr(cfg->node.tls_trusted_certificates, "/ca"));
    assert_int_equal(cfg->node.tls_require_peer_certificate, 0);
    assert_int_equal(cfg->node.tls_profile, SN_TLS_BCP195_EX);
    assert_int_equal(cfg->node.check_peer_host, 1);
    assert_int_equal(cfg->npeers, 2);
    assert_string_equal(cfg->peers[0].host, "pacs.example.org");
    assert_int_equal(cfg->peers[0].port, 65535);
    assert_int_equal(cfg->peers[0].allow, SN_ALLOW_FIND);
    assert_int_equal(cfg->peers[0].stable_on_release, 1);
    assert_int_equal(cfg->peers[0].tls, 1);
    assert_int_equal(cfg->peers[1].allow, 0);
    const sn_route *r = &cfg->routes[0];
    assert_int_equal(r->modality.n, 2);
    assert_string_equal(r->modality.item[0], "mr");
    assert_int_equal(r->calling_ae.n, 2);
    assert_string_equal(r->calling_ae.item[0], "SCANNER 1");
    assert_int_equal(r->has_series_description_re, 1);
    assert_string_equal(r->series_description_re, "^t[12]");
    assert_int_equal(r->method, SN_METHOD_BOTH);
    assert_int_equal(r->atlases.n, 2);
    assert_string_equal(r->model, "/opt/models/x");
    assert_int_equal(r->send_to.n, 3);
    assert_int_equal(r->stable_after, 86400);
    assert_int_equal(r->continue_matching, 1);
    sn_config_unref(cfg);
}

static void test_inline_comments(void **state)
{
    (void)state;
    sn_config *cfg = load_ok(
        "\xEF\xBB\xBF; BOM first\r\n"
        "[node]   ; the node\r\n"
        "    ae_title = NODE1      ; indented, CRLF, inline comment\r\n"
        "\tport=2000\n"
        "storage = /data/a;b   ; ';' inside a value needs a blank before it to start a comment\n"
        "device = cpu\t; tab before the comment\n"
        "  [peer X]\n"
        "  ae_title: XAE         ; ':' works as separator too\n"
        "[route r]\n"
        "series_description = a|b ; comment\n");
    assert_string_equal(cfg->node.ae_title, "NODE1");
    assert_int_equal(cfg->node.port, 2000);
    assert_string_equal(cfg->node.storage, "/data/a;b");
    assert_string_equal(cfg->node.device, "cpu");
    assert_string_equal(cfg->peers[0].ae_title, "XAE");
    assert_string_equal(cfg->routes[0].series_description_re, "a|b");
    sn_config_unref(cfg);

    /* No blank before ';': it is part of the value, which then is not an integer. */
    expect_error("[node]\nport = 2000;x\n", 2, "port");
}

static void test_long_lines(void **state)
{
    (void)state;
    char storage[900];
    memset(storage, 'd', sizeof storage);
    storage[0] = '/';
    storage[sizeof storage - 1] = '\0';
    char text[2048];
    snprintf(text, sizeof text,
             "[node]\nstorage = %s   ; a comment after a long value\nport = 1234\n"
             "; %s\n[route r]\nmodality = %s\n",
             storage, storage, "MR, CT, PT, NM, US, XA, RF, DX, CR, MG, OT, SC, SEG, RTSTRUCT, "
             "REG, SR, KO, PR, DOC, ECG, IO, PX, GM, SM, XC, OP, OPT, IVUS, OCT, BMD, LS, TG");
    sn_config *cfg = load_ok(text);
    assert_string_equal(cfg->node.storage, storage);
    assert_int_equal(cfg->node.port, 1234);
    assert_int_equal(cfg->routes[0].modality.n, 32);
    assert_string_equal(cfg->routes[0].modality.item[31], "TG");
    sn_config_unref(cfg);

    /* A long line keeps the line count right for a later error. */
    snprintf(text, sizeof text, "[node]\nstorage = %s\n\nport = x\n", storage);
    expect_error(text, 4, "port");
    /* ... and an error inside a long line is reported too. */
    snprintf(text, sizeof text, "[node]\n\nhttp_port = 1%s\n", storage);
    expect_error(text, 3, "http_port");
    char big[1200];
    memset(big, 'm', sizeof big);
    big[sizeof big - 1] = '\0';
    snprintf(text, sizeof text, "[route r]\nmodel = %s\n", big);
    expect_error(text, 2, "model: value is longer than 1023");
}

static void test_booleans(void **state)
{
    (void)state;
    static const struct { const char *text; int value; } cases[] = {
        {"yes", 1}, {"no", 0}, {"true", 1}, {"false", 0}, {"on", 1}, {"off", 0},
        {"1", 1}, {"0", 0}, {"YES", 1}, {"False", 0}, {"On", 1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char text[128];
        snprintf(text, sizeof text, "[node]\naccept_unknown = %s\n", cases[i].text);
        sn_config *cfg = load_ok(text);
        assert_int_equal(cfg->node.accept_unknown, cases[i].value);
        sn_config_unref(cfg);
    }
    expect_error("[node]\nfsync = maybe\n", 2, "fsync");
    expect_error("[node]\nfsync = \n", 2, "fsync");
    expect_error("[node]\nfsync = yes please\n", 2, "fsync");
    expect_error("[peer A]\nae_title = A\ntls = 2\n", 3, "tls");
    expect_error("[route r]\ncontinue = y\n", 2, "continue");
}

static void test_integers(void **state)
{
    (void)state;
    static const struct { const char *line; const char *key; } bad[] = {
        {"port = 0", "port"},
        {"port = 65536", "port"},
        {"port = 11112x", "port"},
        {"port = x11112", "port"},
        {"port = 1 2", "port"},
        {"port = ", "port"},
        {"port = 0x10", "port"},
        {"port = +5", "port"},
        {"port = -", "port"},
        {"port = 99999999999999999999999", "port"},
        {"http_port = -1", "http_port"},
        {"http_port = 65536", "http_port"},
        {"max_associations = 0", "max_associations"},
        {"max_associations = 1025", "max_associations"},
        {"max_pdu = 4095", "max_pdu"},
        {"max_pdu = 131073", "max_pdu"},
        {"acse_timeout = -1", "acse_timeout"},
        {"dimse_timeout = -5", "dimse_timeout"},
        {"stable_after = 0", "stable_after"},
        {"disk_min_free_mb = -1", "disk_min_free_mb"},
        {"sweep_interval_ms = 0", "sweep_interval_ms"},
        {"sweep_interval_ms = 1.5", "sweep_interval_ms"},
        {"outbox_retry_base = 0", "outbox_retry_base"},
        {"outbox_retry_cap = 86401", "outbox_retry_cap"},
        {"outbox_max_attempts = 0", "outbox_max_attempts"},
        {"outbox_workers = 65", "outbox_workers"},
        {"workers = -1", "workers"},
        {"workers = 65", "workers"},
        {"job_timeout = 0", "job_timeout"},
        {"job_max_attempts = 0", "job_max_attempts"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char text[256];
        snprintf(text, sizeof text, "; comment\n[node]\n\n%s\n", bad[i].line);
        expect_error(text, 4, bad[i].key);
    }
    sn_config *cfg = load_ok("[node]\nport = 65535\nhttp_port = 65535\nmax_pdu = 131072\n"
                             "disk_min_free_mb = 2000000\n");
    assert_int_equal(cfg->node.port, 65535);
    assert_int_equal(cfg->node.max_pdu, 131072);
    assert_int_equal(cfg->node.disk_min_free_mb, 2000000);
    sn_config_unref(cfg);
    expect_error("[peer A]\nae_title = A\nport = 0\n", 3, "port");
    expect_error("[route r]\nstable_after = -1\n", 2, "stable_after");
}

/* Each case: file text, line the error must name, text the message must contain. */
static void test_errors(void **state)
{
    (void)state;
    static const struct { const char *text; int line; const char *needle; } cases[] = {
        /* sections */
        {"[nodes]\nport = 1\n", 1, "unknown section type 'nodes'"},
        {"[node]\n[server x]\n", 2, "unknown section type 'server'"},
        {"[node]\n\n[unknown]\n", 3, "unknown section type"},
        {"[node x]\n", 1, "[node] takes no name"},
        {"[peer]\nae_title = A\n", 1, "needs a name"},
        {"[route ]\n", 1, "needs a name"},
        {"[peer a,b]\nae_title = A\n", 1, "invalid peer name"},
        {"[peer .hidden]\nae_title = A\n", 1, "invalid peer name"},
        {"[route r]\natlases = a1, ..\n", 2, "atlases: '..' is not a name"},
        {"[node]\n[node]\n", 2, "duplicate section [node] (first at line 1)"},
        {"[peer A]\nae_title = A\n\n[peer A]\nae_title = B\n", 4, "duplicate section [peer A]"},
        {"[route r]\n[route r]\n", 2, "duplicate section [route r]"},
        {"[node\nport = 1\n", 1, "closing ']'"},
        {"[node] port = 1\n", 1, "unexpected text after section header"},
        {"port = 1\n", 1, "outside any section"},
        {"; c\n\nport = 1\n[node]\n", 3, "outside any section"},
        /* syntax */
        {"[node]\nport\n", 2, "expected 'key = value'"},
        {"[node]\nport ; = 1\n", 2, "expected 'key = value'"},
        {"[node]\n= 1\n", 2, "missing key name"},
        /* keys */
        {"[node]\nae_title = A\nportt = 1\n", 3, "unknown key 'portt' in [node]"},
        {"[peer P]\nae_title = A\nallow_all = yes\n", 3, "unknown key 'allow_all' in [peer P]"},
        {"[route r]\nmodalities = MR\n", 2, "unknown key 'modalities' in [route r]"},
        {"[node]\nAE_TITLE = A\n", 2, "unknown key 'AE_TITLE'"},
        {"[node]\nport = 1\n; c\nport = 2\n", 4, "duplicate key 'port' in [node] (first set at line 2)"},
        {"[peer P]\nae_title = A\nae_title = B\n", 3, "duplicate key 'ae_title' in [peer P]"},
        {"[route r]\nmethod = atlas\n  method = atlas\n", 3, "duplicate key 'method'"},
        {"[route r]\nmodality = MR\n\tmodality = CT\n", 3, "duplicate key 'modality'"},
        /* AE titles */
        {"[node]\nae_title = ABCDEFGHIJKLMNOPQ\n", 2, "ae_title"},
        {"[node]\nae_title = A\\B\n", 2, "not a valid AE title"},
        {"[node]\nae_title =\n", 2, "not a valid AE title"},
        {"[peer P]\nae_title = \xc3\xa9t\xc3\xa9\n", 2, "not a valid AE title"},
        {"[peer A]\nae_title = SAME\n[peer B]\nhost = h\nae_title = SAME\n", 5,
         "duplicate AE title 'SAME'"},
        {"[peer A]\nae_title = SEGNODE\n", 2, "node's own AE title"},
        {"[peer A]\nae_title = ME\n[node]\nae_title = ME\n", 2, "node's own AE title"},
        {"[peer A]\nhost = h\n", 1, "missing required key 'ae_title'"},
        {"[node]\n[peer A]\n", 2, "missing required key 'ae_title'"},
        /* peer values */
        {"[peer A]\nae_title = A\nallow = echo, stor\n", 3, "'stor'"},
        {"[peer A]\nae_title = A\nallow = echo,, store\n", 3, "allow"},
        {"[peer A]\nae_title = A\nallow = none, echo\n", 3, "allow"},
        {"[peer A]\nae_title = A\nallow =\n", 3, "allow"},
        {"[peer A]\nae_title = A\nhost = a b\n", 3, "host"},
        {"[peer A]\nae_title = A\nhost = ::1\n", 3, "host: '::1': IPv6 addresses are not supported"},
        {"[peer A]\nae_title = A\nhost = [fe80::1]\n", 3, "IPv6 addresses are not supported"},
        /* node values */
        {"[node]\nbind = localhost\n", 2, "bind"},
        {"[node]\nhttp_bind = 127.0.0.256\n", 2, "http_bind"},
        {"[node]\ndevice = gpu\n", 2, "device"},
        {"[node]\ndevice = cuda:x\n", 2, "device"},
        {"[node]\ndevice = cuda:\n", 2, "device"},
        {"[node]\nlog_level = verbose\n", 2, "log_level"},
        {"[node]\nstorage =\n", 2, "storage: value is empty"},
        /* routes */
        {"[route r]\nmethod = magic\n", 2, "method: expected atlas, net or both"},
        {"[route r]\nmethod = net\n", 2, "needs a model"},
        {"[route r]\nmethod = both\nmodel = m\natlases = a1,a2,a3,a4,a5,a6,a7,a8,a9,a10,a11,a12,a13,a14,a15,"
         "a16,a17\n", 4, "names 17 atlases; the atlas method registers and fuses at most 16"},
        {"[route r]\natlases = a1, a2\nselect_k = 3\n", 3, "select_k: [route r] keeps 3 atlases but names 2"},
        {"[route r]\nselect_k = 1\n", 2, "keeps 1 atlases but names 0"},
        {"[route r]\nmethod = net\nmodel = m\natlases = a1, a2\nselect_k = 1\n", 5,
         "select_k: [route r] uses method net"},
        {"[route r]\natlases = a1\nselect_k = -1\n", 3, "select_k"},
        {"[route r]\natlases = a1\nselect_k = 17\n", 3, "select_k"},
        {"[route r]\natlases = a1\nselect_k = two\n", 3, "select_k: expected auto, all or 0 to 16, got 'two'"},
        {"[route r]\nmethod = net\nmodel = m\nselect_k = auto\n", 4, "select_k: [route r] uses method net"},
        {"[route r]\natlases = a1\nrefine = yes\n", 3, "refine: expected intensity or none, got 'yes'"},
        {"[route r]\nmethod = net\nmodel = m\nrefine = none\n", 4, "refine: [route r] uses method net"},
        {"[route r]\nseries_description = (unclosed\n", 2, "series_description: invalid regular expression"},
        {"[route r]\nseries_description = [a-\n", 2, "invalid regular expression"},
        /* glibc's regcomp copies repeated subexpressions: these would take gigabytes (fuzz) */
        {"[route r]\nseries_description = b+++++++++++++++++++++++++++++++++++++\n", 2,
         "series_description: regular expression 'b++"},
        {"[route r]\nseries_description = x?+\n", 2, "follows another"},
        {"[route r]\nseries_description = ((a{99}){99}){99}\n", 2, "too many copies"},
        {"[route r]\nseries_description = (((x?){1,20}){1,20}){1,20}\n", 2, "too many copies"},
        {"[route r]\nseries_description = (((((x?)+)+)+)+)+\n", 2, "nested too deep"},
        {"[route r]\nseries_description = a{1001}\n", 2, "too many copies"},
        {"[peer P]\nae_title = A\n[route r]\n\nsend_to = P, Q\n", 5, "send_to: [route r] names 'Q'"},
        {"[route r]\nsend_to = @sender\n", 2, "send_to"},
        {"[route r]\nsend_to = @caller, @caller\n", 2, "listed twice"},
        {"[route r]\nmodality = MR,,CT\n", 2, "modality: list entry 2 is empty"},
        {"[route r]\nmodality = MR,\n", 2, "modality: list entry 2 is empty"},
        {"[route r]\nlabels = , liver\n", 2, "labels: list entry 1 is empty"},
        {"[route r]\nlabels =\n", 2, "labels: empty list"},
        {"[route r]\nmodality = MR, mr\n", 2, "listed twice"},
        {"[route r]\nmodality = M/R\n", 2, "modality"},
        {"[route r]\nbody_part = ABDOMENABDOMENABD\n", 2, "body_part"},
        {"[route r]\ncalling_ae = A\\B\n", 2, "calling_ae"},
        {"[route r]\nlabels = liver left\n", 2, "labels"},
        {"[route r]\natlases = "
         "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\n",
         2, "atlases: list entry 1 is longer than 64"},
        {"[route r]\nlabels = a1,a2,a3,a4,a5,a6,a7,a8,a9,a10,a11,a12,a13,a14,a15,a16,a17,a18,a19,"
         "a20,a21,a22,a23,a24,a25,a26,a27,a28,a29,a30,a31,a32,a33\n",
         2, "labels: list has more than 32 entries"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        expect_error(cases[i].text, cases[i].line, cases[i].needle);
    /* 16 atlases are the limit itself; a net route does not use its atlases, so more pass */
    sn_config *cfg = load_ok("[route r]\nmethod = atlas\natlases = a1,a2,a3,a4,a5,a6,a7,a8,a9,a10,a11,"
                             "a12,a13,a14,a15,a16\n");
    assert_int_equal(cfg->routes[0].atlases.n, SN_ROUTE_ATLASES_MAX);
    sn_config_unref(cfg);
    cfg = load_ok("[route r]\nmethod = net\nmodel = m\natlases = a1,a2,a3,a4,a5,a6,a7,a8,a9,a10,a11,"
                  "a12,a13,a14,a15,a16,a17\n");
    sn_config_unref(cfg);
    /* select_k: auto (the default), all (= 0: every atlas), or up to the number of atlases, for
     * atlas and both; a net route takes none, not even auto */
    cfg = load_ok("[route r]\natlases = a1, a2, a3\n[route s]\natlases = a1\nselect_k = all\n"
                  "[route t]\natlases = a1\nselect_k = Auto\n[route u]\natlases = a1\nselect_k = 0\n"
                  "[route v]\nmethod = net\nmodel = m\n");
    assert_int_equal(cfg->routes[0].select_k, SN_SELECT_K_AUTO);
    assert_int_equal(cfg->routes[1].select_k, 0);
    assert_int_equal(cfg->routes[2].select_k, SN_SELECT_K_AUTO);
    assert_int_equal(cfg->routes[3].select_k, 0);
    sn_config_unref(cfg);
    cfg = load_ok("[route r]\nmethod = both\nmodel = m\natlases = a1, a2, a3\nselect_k = 3\n");
    assert_int_equal(cfg->routes[0].select_k, 3);
    assert_int_equal(cfg->routes[0].refine, 1);   /* intensity refinement by default */
    sn_config_unref(cfg);
    cfg = load_ok("[route r]\natlases = a1\nrefine = None\n[route s]\natlases = a1\nrefine = intensity\n");
    assert_int_equal(cfg->routes[0].refine, 0);
    assert_int_equal(cfg->routes[1].refine, 1);
    sn_config_unref(cfg);
}

/* TLS and peer-host keys: values, profiles, and the keys that must come together. */
static void test_tls_keys(void **state)
{
    (void)state;
    char text[2048];
    /* inbound TLS without verifying clients needs no trusted certificates; names of profiles */
    snprintf(text, sizeof text,
             "[node]\ntls_port = 2762\ntls_certificate = %s/cert.pem\ntls_private_key = %s/key.pem\n"
             "tls_require_peer_certificate = no\ntls_profile = bcp195-nd\n", g_dir, g_dir);
    sn_config *cfg = load_ok(text);
    assert_int_equal(cfg->node.tls_profile, SN_TLS_BCP195_ND);
    assert_string_equal(sn_tls_profile_name(cfg->node.tls_profile), "bcp195-nd");
    assert_string_equal(sn_tls_profile_name(SN_TLS_BCP195), "bcp195");
    assert_string_equal(sn_tls_profile_name(SN_TLS_BCP195_EX), "bcp195-ex");
    sn_config_unref(cfg);
    /* outbound TLS with a trusted certificate file (not a folder) */
    snprintf(text, sizeof text,
             "[node]\ntls_certificate = %s/cert.pem\ntls_private_key = %s/key.pem\n"
             "tls_trusted_certificates = %s/ca/peer.pem\n[peer P]\nae_title = P\ntls = yes\n",
             g_dir, g_dir, g_dir);
    cfg = load_ok(text);
    assert_int_equal(cfg->peers[0].tls, 1);
    sn_config_unref(cfg);

    expect_error("[node]\ntls_port = 65536\n", 2, "tls_port: 65536 is out of range (0..65535)");
    expect_error("[node]\ntls_profile = tls13\n", 2, "tls_profile: expected bcp195, bcp195-nd or bcp195-ex");
    expect_error("[node]\ntls_profile = BCP195\n", 2, "tls_profile: expected");
    expect_error("[node]\ncheck_peer_host = maybe\n", 2, "check_peer_host: expected yes/no");
    expect_error("[node]\n\ntls_certificate = /nonexistent/node.pem\n", 3,
                 "tls_certificate: cannot read '/nonexistent/node.pem'");
    expect_error("[node]\ntls_private_key =\n", 2, "tls_private_key: value is empty");
    snprintf(text, sizeof text, "[node]\ntls_certificate = %s/ca\n", g_dir);
    expect_error(text, 2, "is not a file");
    expect_error("[node]\nport = 104\ntls_port = 2762\n", 3, "tls_port = 2762 needs [node] tls_certificate");
    expect_error("[node]\nport = 2762\ntls_port = 2762\n", 3, "tls_port: 2762 is also [node] port");
    snprintf(text, sizeof text, "[node]\ntls_port = 2762\ntls_certificate = %s/cert.pem\n", g_dir);
    expect_error(text, 2, "needs [node] tls_private_key");
    snprintf(text, sizeof text,
             "[node]\ntls_certificate = %s/cert.pem\ntls_private_key = %s/key.pem\ntls_port = 2762\n",
             g_dir, g_dir);
    expect_error(text, 4, "needs [node] tls_trusted_certificates to verify peers (or tls_require_peer_certificate = no)");
    snprintf(text, sizeof text,
             "[node]\ntls_certificate = %s/cert.pem\ntls_private_key = %s/key.pem\n"
             "[peer P]\nae_title = P\n\ntls = yes\n", g_dir, g_dir);
    expect_error(text, 7, "tls = yes needs [node] tls_trusted_certificates");
    expect_error("[peer P]\nae_title = P\ntls = yes\n", 3, "[peer P] tls = yes needs [node] tls_certificate");
}

static void test_io_errors(void **state)
{
    (void)state;
    char err[512] = "";
    sn_config *cfg = (sn_config *)0x1;
    char path[600];
    snprintf(path, sizeof path, "%s/does-not-exist.conf", g_dir);
    assert_int_equal(sn_config_load(path, &cfg, err, sizeof err), SN_EIO);
    assert_null(cfg);
    assert_non_null(strstr(err, "does-not-exist.conf"));
    /* a directory opens but cannot be read */
    assert_int_equal(sn_config_load(g_dir, &cfg, err, sizeof err), SN_EIO);
    assert_null(cfg);
    assert_int_equal(sn_config_load(NULL, &cfg, err, sizeof err), SN_EINVAL);
    /* NULL err buffer is allowed */
    write_conf("[nodes]\n");
    assert_int_equal(sn_config_load(g_path, &cfg, NULL, 0), SN_ECONFIG);
    assert_null(cfg);
}

static sn_route *route_of(sn_config *cfg, const char *name)
{
    for (int i = 0; i < cfg->nroutes; i++) {
        if (strcmp(cfg->routes[i].name, name) == 0)
            return &cfg->routes[i];
    }
    fail_msg("no route %s", name);
    return NULL;
}

static void test_route_matching(void **state)
{
    (void)state;
    sn_config *cfg = load_ok(
        "[route mod]\nmodality = MR, PT\n"
        "[route body]\nbody_part = abdomen\n"
        "[route desc]\nseries_description = ^t1.*(ax|tra)\n"
        "[route caller]\ncalling_ae = SCANNER1, CT 2\n"
        "[route itype]\nimage_type = original, AXIAL\n"
        "[route all]\nmodality = CT\nbody_part = CHEST\ncalling_ae = CT 2\n"
        "series_description = lung\nimage_type = PRIMARY\n");
    const sn_route *r;
    sn_series_attrs a;

    r = route_of(cfg, "mod");
    a = (sn_series_attrs){.modality = "MR"};
    assert_true(sn_route_matches(r, &a));
    a.modality = "mr";
    assert_true(sn_route_matches(r, &a));
    a.modality = "PT ";
    assert_true(sn_route_matches(r, &a));
    a.modality = "CT";
    assert_false(sn_route_matches(r, &a));
    a.modality = "MRI";
    assert_false(sn_route_matches(r, &a));
    a.modality = "";
    assert_false(sn_route_matches(r, &a));
    a.modality = NULL;
    assert_false(sn_route_matches(r, &a));

    r = route_of(cfg, "body");
    a = (sn_series_attrs){.body_part = "ABDOMEN"};
    assert_true(sn_route_matches(r, &a));
    a.body_part = "ABDOMENPELVIS";
    assert_false(sn_route_matches(r, &a));
    a.body_part = NULL;
    assert_false(sn_route_matches(r, &a));

    r = route_of(cfg, "desc");
    a = (sn_series_attrs){.series_description = "T1 VIBE tra"};
    assert_true(sn_route_matches(r, &a));
    a.series_description = "t1_ax_post";
    assert_true(sn_route_matches(r, &a));
    a.series_description = "T2 tra";
    assert_false(sn_route_matches(r, &a));
    a.series_description = "x t1 ax"; /* anchored with ^ */
    assert_false(sn_route_matches(r, &a));
    a.series_description = NULL;
    assert_false(sn_route_matches(r, &a));

    r = route_of(cfg, "caller");
    a = (sn_series_attrs){.calling_ae = "SCANNER1"};
    assert_true(sn_route_matches(r, &a));
    a.calling_ae = "SCANNER1  "; /* trailing DICOM padding */
    assert_true(sn_route_matches(r, &a));
    a.calling_ae = "CT 2";
    assert_true(sn_route_matches(r, &a));
    a.calling_ae = "scanner1"; /* AE titles are case-sensitive */
    assert_false(sn_route_matches(r, &a));
    a.calling_ae = "SCANNER";
    assert_false(sn_route_matches(r, &a));
    a.calling_ae = NULL;
    assert_false(sn_route_matches(r, &a));

    r = route_of(cfg, "itype");
    a = (sn_series_attrs){.image_type = "ORIGINAL\\PRIMARY\\AXIAL"};
    assert_true(sn_route_matches(r, &a));
    a.image_type = "original\\primary\\axial ";
    assert_true(sn_route_matches(r, &a));
    a.image_type = "AXIAL\\ORIGINAL";
    assert_true(sn_route_matches(r, &a));
    a.image_type = "DERIVED\\PRIMARY\\AXIAL";
    assert_false(sn_route_matches(r, &a));
    a.image_type = "ORIGINAL\\PRIMARY\\AXIAL_MPR";
    assert_false(sn_route_matches(r, &a));
    a.image_type = "ORIGINAL";
    assert_false(sn_route_matches(r, &a));
    a.image_type = NULL;
    assert_false(sn_route_matches(r, &a));

    r = route_of(cfg, "all");
    a = (sn_series_attrs){.modality = "CT", .body_part = "CHEST", .calling_ae = "CT 2",
                          .series_description = "Lung 1mm", .image_type = "ORIGINAL\\PRIMARY"};
    assert_true(sn_route_matches(r, &a));
    sn_series_attrs b = a;
    b.modality = "MR";
    assert_false(sn_route_matches(r, &b));
    b = a;
    b.body_part = "HEAD";
    assert_false(sn_route_matches(r, &b));
    b = a;
    b.calling_ae = "SCANNER1";
    assert_false(sn_route_matches(r, &b));
    b = a;
    b.series_description = "Abdomen";
    assert_false(sn_route_matches(r, &b));
    b = a;
    b.image_type = "ORIGINAL\\SECONDARY";
    assert_false(sn_route_matches(r, &b));
    assert_false(sn_route_matches(r, NULL));
    assert_false(sn_route_matches(NULL, &a));
    sn_config_unref(cfg);
}

static void test_peer_lookup(void **state)
{
    (void)state;
    sn_config *cfg = load_ok("[peer PACS]\nae_title = MAIN PACS\n[peer ct]\nae_title = CT1\n");
    assert_ptr_equal(sn_config_peer_by_ae(cfg, "MAIN PACS"), &cfg->peers[0]);
    assert_ptr_equal(sn_config_peer_by_ae(cfg, "MAIN PACS  "), &cfg->peers[0]);
    assert_ptr_equal(sn_config_peer_by_ae(cfg, "CT1"), &cfg->peers[1]);
    assert_null(sn_config_peer_by_ae(cfg, "ct1"));
    assert_null(sn_config_peer_by_ae(cfg, "MAIN"));
    assert_null(sn_config_peer_by_ae(cfg, ""));
    assert_null(sn_config_peer_by_ae(cfg, NULL));
    assert_null(sn_config_peer_by_ae(NULL, "CT1"));
    assert_ptr_equal(sn_config_peer_by_name(cfg, "PACS"), &cfg->peers[0]);
    assert_ptr_equal(sn_config_peer_by_name(cfg, "ct"), &cfg->peers[1]);
    assert_null(sn_config_peer_by_name(cfg, "CT"));
    assert_null(sn_config_peer_by_name(cfg, NULL));
    assert_null(sn_config_peer_by_name(NULL, "PACS"));
    sn_config_unref(cfg);

    /* peer names and AE titles are case-sensitive, so these are two peers */
    cfg = load_ok("[peer a]\nae_title = a\n[peer A]\nae_title = A\n"
                  "[route r]\nsend_to = a, A\ncalling_ae = a, A\n");
    assert_int_equal(cfg->routes[0].send_to.n, 2);
    assert_ptr_equal(sn_config_peer_by_ae(cfg, "A"), &cfg->peers[1]);
    sn_config_unref(cfg);
}

static void test_parse_allow_and_method_name(void **state)
{
    (void)state;
    unsigned bits = 99;
    assert_int_equal(sn_config_parse_allow("echo, store, find", &bits), SN_OK);
    assert_int_equal(bits, SN_ALLOW_ECHO | SN_ALLOW_STORE | SN_ALLOW_FIND);
    assert_int_equal(sn_config_parse_allow("STORE", &bits), SN_OK);
    assert_int_equal(bits, SN_ALLOW_STORE);
    assert_int_equal(sn_config_parse_allow("none", &bits), SN_OK);
    assert_int_equal(bits, 0);
    bits = 7;
    assert_int_equal(sn_config_parse_allow("echo, move", &bits), SN_EINVAL);
    assert_int_equal(bits, 7);
    assert_int_equal(sn_config_parse_allow("", &bits), SN_EINVAL);
    assert_int_equal(sn_config_parse_allow("echo,", &bits), SN_EINVAL);
    assert_int_equal(sn_config_parse_allow(NULL, &bits), SN_EINVAL);
    assert_string_equal(sn_method_name(SN_METHOD_ATLAS), "atlas");
    assert_string_equal(sn_method_name(SN_METHOD_NET), "net");
    assert_string_equal(sn_method_name(SN_METHOD_BOTH), "both");
}

static void test_regex_size_bound(void **state)
{
    (void)state;
    /* Ordinary patterns with + and {m,n} stay well under the bound and load. */
    static const char *const ok[] = {
        "^(t1|t2)[ _+]?(ax|tra).*[0-9]{1,3}mm$", "x+y+z{2,4}", "(ab+c){1,20}", "a\\+{9}",
        "[{(]+[a-z]{0,200}", "(((x?)+)+)+", "a{1000}", "[]+*]+",
    };
    for (size_t i = 0; i < sizeof ok / sizeof *ok; i++) {
        char text[512];
        snprintf(text, sizeof text, "[route r]\nseries_description = %s\n", ok[i]);
        sn_config *cfg = load_ok(text);
        assert_int_equal(cfg->routes[0].has_series_description_re, 1);
        sn_config_unref(cfg);
    }
}

static void test_ref_unref(void **state)
{
    (void)state;
    sn_config *cfg = load_ok("[route r]\nseries_description = x\n");
    assert_int_equal(cfg->refs_, 1);
    assert_ptr_equal(sn_config_ref(cfg), cfg);
    assert_int_equal(cfg->refs_, 2);
    sn_config_unref(cfg);
    assert_int_equal(cfg->refs_, 1);
    assert_string_equal(cfg->routes[0].series_description_re, "x");
    sn_config_unref(cfg); /* frees, including the compiled regex (checked under ASan/valgrind) */
    sn_config_unref(NULL);
    assert_null(sn_config_ref(NULL));
}

static void *ref_worker(void *arg)
{
    sn_config *cfg = arg;
    for (int i = 0; i < 100000; i++) {
        sn_config_ref(cfg);
        sn_config_unref(cfg);
    }
    return NULL;
}

static void test_ref_threads(void **state)
{
    (void)state;
    sn_config *cfg = NULL;
    assert_int_equal(sn_config_defaults(&cfg, NULL, 0), SN_OK);
    pthread_t t[4];
    for (int i = 0; i < 4; i++)
        assert_int_equal(pthread_create(&t[i], NULL, ref_worker, cfg), 0);
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    assert_int_equal(cfg->refs_, 1);
    sn_config_unref(cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_shipped_example),
        cmocka_unit_test(test_shipped_example_documents_every_key),
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_empty_file_is_defaults),
        cmocka_unit_test(test_peer_and_route_defaults),
        cmocka_unit_test(test_all_keys_set),
        cmocka_unit_test(test_inline_comments),
        cmocka_unit_test(test_long_lines),
        cmocka_unit_test(test_booleans),
        cmocka_unit_test(test_integers),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_tls_keys),
        cmocka_unit_test(test_io_errors),
        cmocka_unit_test(test_route_matching),
        cmocka_unit_test(test_peer_lookup),
        cmocka_unit_test(test_parse_allow_and_method_name),
        cmocka_unit_test(test_regex_size_bound),
        cmocka_unit_test(test_ref_unref),
        cmocka_unit_test(test_ref_threads),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
