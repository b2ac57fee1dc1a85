/* common/config.h — the node's configuration: one INI file parsed with inih.
 * A loaded sn_config is immutable and reference-counted, so the daemon can swap in a new one on
 * SIGHUP while associations keep using the snapshot they started with. Every key is documented
 * in etc/segnode.conf; an unknown section or key, a duplicate AE title, or a bad value is an
 * error (the whole file is refused, never half-applied). This is not the place for runtime state. */
#ifndef SEGNODE_COMMON_CONFIG_H
#define SEGNODE_COMMON_CONFIG_H

#include <regex.h>
#include <stddef.h>
#include <stdint.h>

#define SN_AE_MAX 16          /* AE title length (PS3.5) */
#define SN_NAME_MAX 64        /* section names: [peer NAME], [route NAME] */
#define SN_LIST_MAX 32        /* entries in a comma-separated list value */
#define SN_ROUTE_ATLASES_MAX 16  /* atlases one segmentation registers and fuses
                                    (PIPELINE_ATLAS_MAX, pipeline/atlas/method_atlas.h) */
#define SN_CONFIG_REGEX_MAX 1000  /* a route regex compiled to more atom copies is refused */
#define SN_CONFIG_REGEX_DEPTH 4   /* ... and one with repetitions nested deeper */

/* What a peer may ask of us ([peer] allow = echo, store, find). */
#define SN_ALLOW_ECHO  0x1u
#define SN_ALLOW_STORE 0x2u
#define SN_ALLOW_FIND  0x4u

typedef enum sn_method { SN_METHOD_ATLAS = 0, SN_METHOD_NET, SN_METHOD_BOTH } sn_method;

/* DICOM TLS profiles (PS3.15 B.9-B.11), as DCMTK 3.6.7 implements them: bcp195 (TLS 1.2+,
 * falls back to older suites), bcp195-nd (non-downgrading, TLS 1.2+ only), bcp195-ex
 * (extended, TLS 1.2 only). */
typedef enum sn_tls_profile { SN_TLS_BCP195 = 0, SN_TLS_BCP195_ND, SN_TLS_BCP195_EX } sn_tls_profile;

/* A list of short strings parsed from "a, b, c" (trimmed, empty entries refused). */
typedef struct sn_strlist {
    int n;
    char item[SN_LIST_MAX][SN_NAME_MAX + 1];
} sn_strlist;

typedef struct sn_peer {
    char name[SN_NAME_MAX + 1];      /* section name, e.g. "PACS" */
    char ae_title[SN_AE_MAX + 1];    /* required, unique among peers (case-sensitive) */
    char host[256];                  /* required for peers we send to / echo; default 127.0.0.1 */
    int port;                        /* default 104 */
    unsigned allow;                  /* SN_ALLOW_* bits; default echo,store */
    int stable_on_release;           /* 1: a series from this peer is complete at A-RELEASE */
    int tls;                         /* 1: use TLS for outbound associations (issue 10) */
} sn_peer;

#define SN_SELECT_K_AUTO (-1)   /* = PIPELINE_SELECT_K_AUTO */

typedef struct sn_route {
    char name[SN_NAME_MAX + 1];
    /* Match: every key that is set must match; unset keys match anything. */
    sn_strlist modality;             /* e.g. MR, CT (case-insensitive, any of) */
    sn_strlist body_part;            /* Body Part Examined, any of (case-insensitive) */
    char series_description_re[256]; /* POSIX extended regex, case-insensitive; "" = any;
                                        stacked repetitions (x++), repetitions nested deeper
                                        than SN_CONFIG_REGEX_DEPTH and over SN_CONFIG_REGEX_MAX
                                        compiled copies are refused (config.c) */
    regex_t series_description;      /* compiled when has_series_description_re */
    int has_series_description_re;
    sn_strlist calling_ae;           /* AE titles of the sender, any of */
    sn_strlist image_type;           /* each listed value must appear in Image Type */
    /* Action (used by the pipeline and the outbox). */
    sn_method method;                /* default atlas */
    sn_strlist labels;               /* label names from the code table in etc/ */
    sn_strlist atlases;              /* atlas names in the atlas library, at most
                                        SN_ROUTE_ATLASES_MAX for atlas and both */
    char model[1024];                /* model bundle folder */
    sn_strlist send_to;              /* peer names, or "@caller" */
    int stable_after;                /* seconds; -1 = use [node] stable_after */
    int continue_matching;           /* "continue = yes": later routes may match too */
    int select_k;                    /* atlas, both: register in full only the k atlases most
                                        similar after affine (at most the number of atlases);
                                        0 ("all"): every atlas; SN_SELECT_K_AUTO ("auto", the
                                        default): one per anatomy when atlases share one
                                        (pipeline_atlas_opts.select_k) */
    int refine;                      /* atlas, both: "refine = intensity" (1, the default) or
                                        "none" (0): the fused atlas votes refined on the
                                        series' own intensities (atlas_fuse_em) */
} sn_route;

typedef struct sn_node_config {
    char ae_title[SN_AE_MAX + 1];    /* default SEGNODE */
    int port;                        /* default 11112 */
    char bind[64];                   /* default 0.0.0.0 */
    char storage[1024];              /* default /var/lib/segnode */
    int http_port;                   /* default 8080; 0 = off */
    char http_bind[64];              /* default 127.0.0.1 */
    int max_associations;            /* default 16 */
    int stable_after;                /* default 10 seconds */
    int accept_unknown;              /* default 0 */
    char device[32];                 /* auto | cpu | cuda:N; default auto */
    uint32_t max_pdu;                /* default 116794 (DCMTK's ASC_DEFAULTMAXPDU) */
    int acse_timeout;                /* seconds to wait for association PDUs; default 30 */
    int dimse_timeout;               /* seconds to wait for DIMSE messages; default 60 (0 = none) */
    int find_max_results;            /* C-FIND: more matches than this are refused (A700) before
                                        any answer is sent; default 10000 (0 = no limit) */
    int64_t disk_min_free_mb;        /* refuse new associations below this; default 1024 */
    int log_level;                   /* sn_log_level; default info */
    int fsync;                       /* fsync each instance before Success; default 1 */
    int sweep_interval_ms;           /* how often the stable-series sweeper runs; default 1000 */
    int retention_days;              /* delete finished series this many days after their last
                                        instance (store_retention); default 0 = keep forever */
    /* Outbox (sending SEGs): a failed try is retried after min(cap, base * 2^(tries-1)) seconds
     * until max_attempts tries; a permanent refusal is not retried. */
    int outbox_retry_base;           /* seconds; default 5 */
    int outbox_retry_cap;            /* seconds; default 600 */
    int outbox_max_attempts;         /* tries per destination; default 10 */
    int outbox_workers;              /* sender threads (at most one association per peer); default 4 */
    /* Job worker (tools/segnode/worker.c): threads running jobs, the wall-clock limit of one
     * run, and how many runs a job gets (a crash during a run counts one) before it fails. */
    int workers;                     /* default 1 (0..64; 0 = no worker in this process: jobs wait
                                        for another runner); GPU jobs run one per device */
    int job_timeout;                 /* seconds; default 1800 */
    int job_max_attempts;            /* default 3 */
    /* Security (issue 10). TLS is off unless tls_port > 0 or a peer says tls = yes; then
     * tls_certificate and tls_private_key are required (our identity as SCP and SCU), and
     * tls_trusted_certificates (a PEM file or a folder of hashed PEM files, see `openssl rehash`)
     * is required to verify peers (outbound always; inbound when tls_require_peer_certificate). */
    int tls_port;                    /* DICOM TLS listening port on bind; default 0 = off */
    char tls_certificate[1024];      /* PEM certificate (chain) of the node; default "" */
    char tls_private_key[1024];      /* PEM private key of tls_certificate, unencrypted; default "" */
    char tls_trusted_certificates[1024]; /* PEM CA/peer certificates: file or folder; default "" */
    int tls_require_peer_certificate; /* inbound: refuse a TLS client without a trusted cert; default 1 */
    sn_tls_profile tls_profile;      /* default SN_TLS_BCP195 */
    int check_peer_host;             /* 1: a known calling AE must connect from its [peer] host;
                                        default 0 */
} sn_node_config;

typedef struct sn_config {
    char path[1024];                 /* file it came from, "" for the embedded defaults */
    sn_node_config node;
    int npeers;
    sn_peer *peers;
    int nroutes;
    sn_route *routes;
    int refs_;                       /* private: reference count, see sn_config_ref/unref */
} sn_config;

/* Load and validate `path`. On success *out holds a new config with one reference.
 * On failure returns SN_ECONFIG (or SN_EIO if unreadable) and err says "file:line: reason". */
int sn_config_load(const char *path, sn_config **out, char *err, size_t errlen);

/* The embedded defaults (what `segnode serve` runs with when no file is given). One reference. */
int sn_config_defaults(sn_config **out, char *err, size_t errlen);

/* Reference counting (thread-safe). unref frees on the last reference; accepts NULL. */
sn_config *sn_config_ref(sn_config *cfg);
void sn_config_unref(sn_config *cfg);

/* Lookups; return NULL when absent. AE comparison is exact after trimming trailing spaces. */
const sn_peer *sn_config_peer_by_ae(const sn_config *cfg, const char *ae_title);
const sn_peer *sn_config_peer_by_name(const sn_config *cfg, const char *name);

/* Attributes of a series that routes match on. Any pointer may be NULL (= empty). */
typedef struct sn_series_attrs {
    const char *modality;
    const char *body_part;
    const char *series_description;
    const char *calling_ae;
    const char *image_type;          /* backslash-separated as in DICOM, e.g. ORIGINAL\PRIMARY\AXIAL */
} sn_series_attrs;

/* 1 if `route` matches `attrs`, else 0. */
int sn_route_matches(const sn_route *route, const sn_series_attrs *attrs);

/* Parse "echo, store, find" into SN_ALLOW_* bits; SN_EINVAL on an unknown word. */
int sn_config_parse_allow(const char *text, unsigned *out);

/* Name of a TLS profile as written in the file ("bcp195", "bcp195-nd", "bcp195-ex"). */
const char *sn_tls_profile_name(sn_tls_profile p);

/* A valid [peer NAME] / [route NAME], label or atlas name: 1..SN_NAME_MAX letters, digits, '_',
 * '-', '.', not starting with '.' (an atlas name is a folder of the library: no ".", ".." or
 * hidden names). */
int sn_config_name_valid(const char *s);

/* Name of a method ("atlas", "net", "both"). */
const char *sn_method_name(sn_method m);

#endif
