/* tools/segnode/cli.h — what the `segnode` subcommands share: the global options, the entry
 * points implemented in other files (serve.c, convert.c, admin.c) , config and store opening with
 * errors printed to stderr, aligned tables, and small formatting helpers.
 * This is the command's private header, not a library API. */
#ifndef SEGNODE_TOOLS_CLI_H
#define SEGNODE_TOOLS_CLI_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "common/config.h"
#include "store/store.h"

/* Exit codes of every subcommand. */
#define CLI_EXIT_OK 0
#define CLI_EXIT_FAIL 1      /* runtime failure (peer unreachable, DB error, some files not sent) */
#define CLI_EXIT_USAGE 2     /* bad usage or invalid configuration */

/* Config file used when neither -c nor SEGNODE_CONFIG says otherwise (if it exists). */
#define CLI_DEFAULT_CONFIG "/etc/segnode/segnode.conf"

/* Global options, parsed by main.c before the subcommand (and, for the admin subcommands, also
 * after it). serve.c and convert.c read them from here; they receive the subcommand's own
 * arguments with argv[0] = the subcommand name ("serve", "convert"). */
typedef struct cli_globals {
    const char *config_path;   /* -c FILE, or NULL */
    int json;                  /* --json */
    int verbose;               /* -v / --verbose: log level debug */
} cli_globals;
extern cli_globals cli_g;

/* ---- subcommand entry points (argv[0] is the subcommand name) ------------------------------ */
int segnode_serve(int argc, char **argv);     /* serve.c (the daemon) */
int segnode_convert(int argc, char **argv);   /* convert.c (series folder -> NIfTI) */

int cli_cmd_status(int argc, char **argv);    /* admin.c */
int cli_cmd_series(int argc, char **argv);
int cli_cmd_jobs(int argc, char **argv);
int cli_cmd_peers(int argc, char **argv);
int cli_cmd_echo(int argc, char **argv);
int cli_cmd_send(int argc, char **argv);
int cli_cmd_config(int argc, char **argv);
int cli_cmd_store(int argc, char **argv);     /* storecheck.c */

/* ---- config and store ------------------------------------------------------------------------ */

/* Which config file applies: `path_or_null` if non-NULL, else $SEGNODE_CONFIG if set and
 * non-empty, else CLI_DEFAULT_CONFIG if it exists, else the installation's own
 * SYSCONFDIR/segnode/segnode.conf if this binary is installed under another prefix and it
 * exists, else NULL (= the embedded defaults). Returns a borrowed string or NULL. */
const char *cli_config_source(const char *path_or_null);

/* Load the config chosen by cli_config_source (the embedded defaults via sn_config_defaults when
 * none). On success *out holds one reference (sn_config_unref it) and 0 is returned. On failure
 * the reason ("file:line: reason") is printed to stderr and SN_ECONFIG/SN_EIO is returned; exit
 * with CLI_EXIT_USAGE. */
int cli_load_config(const char *path_or_null, sn_config **out);

/* Open the store under cfg->node.storage. Prints the reason to stderr on failure; returns the
 * store_open status. */
int cli_open_store(const sn_config *cfg, store **out);

/* The config of -c (cli_load_config) and the store under it (cli_open_store), for an admin
 * subcommand. Returns 0, or the exit code (CLI_EXIT_USAGE: config, CLI_EXIT_FAIL: store) with
 * the reason printed; on failure nothing is left open. */
int cli_open_config_store(sn_config **cfg, store **st);

/* Set the log level for an admin subcommand: debug with -v, else warn (admin output is the
 * table, not the log). serve.c uses the config's level instead. */
void cli_apply_log_level(void);

/* If argv[*i] is a global option (-c FILE, --config FILE, --config=FILE, --json, -v, --verbose),
 * apply it to cli_g, advance *i past its value if it has one, and return 1. Return 0 if it is
 * not one, or CLI_EXIT_USAGE as a negative number (-2) if -c lacks its value (message printed). */
int cli_take_global(int argc, char **argv, int *i);

/* 1 if `arg` is -h or --help. */
int cli_is_help(const char *arg);

/* ---- output helpers -------------------------------------------------------------------------- */

/* Print a JSON document to stdout and free it (accepts NULL: out of memory). Returns
 * CLI_EXIT_OK, or CLI_EXIT_FAIL when it could not be printed. */
struct cJSON;
int cli_json_out(struct cJSON *doc);

/* "1.5 KiB", "23.0 MiB", "512 B" into out[outlen]; returns out. */
char *cli_human_bytes(int64_t bytes, char *out, size_t outlen);

/* ISO 8601 UTC time of `ms` (sn_format_time), or "-" when ms <= 0; out[32]. Returns out. */
char *cli_time(int64_t ms, char out[32]);

/* A table printed with aligned columns. Cells are copied. NULL cells print as "-". */
typedef struct cli_table cli_table;
cli_table *cli_table_new(int ncols, const char *const *headers);
void cli_table_add(cli_table *t, const char *const *cells);
/* Right-align column `col` (numbers). */
void cli_table_align_right(cli_table *t, int col);
void cli_table_print(const cli_table *t, FILE *f);
int cli_table_rows(const cli_table *t);
void cli_table_free(cli_table *t);  /* accepts NULL */

#endif
