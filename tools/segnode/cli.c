/* tools/segnode/cli.c — helpers shared by the `segnode` subcommands: global options, config
 * resolution (-c, $SEGNODE_CONFIG, /etc/segnode/segnode.conf, embedded defaults), opening the
 * store, aligned tables and human-readable sizes. No subcommand logic lives here. */
#include "tools/segnode/cli.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "common/log.h"
#include "common/status.h"
#include "common/util.h"

cli_globals cli_g;

const char *cli_config_source(const char *path_or_null)
{
    if (path_or_null && *path_or_null)
        return path_or_null;
    const char *env = getenv("SEGNODE_CONFIG");
    if (env && *env)
        return env;
    if (access(CLI_DEFAULT_CONFIG, F_OK) == 0)
        return CLI_DEFAULT_CONFIG;
    /* an installation under another prefix (/usr/local, /opt/segnode): its own etc/ */
    static char installed[4096];
    if (sn_installed_config(installed, sizeof installed) == SN_OK)
        return installed;
    return NULL;
}

int cli_load_config(const char *path_or_null, sn_config **out)
{
    char err[1024] = "";
    const char *path = cli_config_source(path_or_null);
    int rc;

    *out = NULL;
    if (path)
        rc = sn_config_load(path, out, err, sizeof err);
    else
        rc = sn_config_defaults(out, err, sizeof err);
    if (rc != 0) {
        fprintf(stderr, "segnode: config %s: %s\n", path ? path : "(embedded defaults)",
                err[0] ? err : sn_strerror(rc));
        return rc;
    }
    return 0;
}

int cli_open_store(const sn_config *cfg, store **out)
{
    char err[1024] = "";
    int rc = store_open(cfg->node.storage, out, err, sizeof err);
    if (rc != 0)
        fprintf(stderr, "segnode: cannot open the store in %s: %s\n", cfg->node.storage,
                err[0] ? err : sn_strerror(rc));
    return rc;
}

int cli_open_config_store(sn_config **cfg, store **st)
{
    *cfg = NULL;
    *st = NULL;
    if (cli_load_config(cli_g.config_path, cfg) != 0)
        return CLI_EXIT_USAGE;
    if (cli_open_store(*cfg, st) != 0) {
        sn_config_unref(*cfg);
        *cfg = NULL;
        return CLI_EXIT_FAIL;
    }
    return 0;
}

void cli_apply_log_level(void)
{
    sn_log_set_level(cli_g.verbose ? SN_LOG_LEVEL_DEBUG : SN_LOG_LEVEL_WARN);
}

int cli_take_global(int argc, char **argv, int *i)
{
    const char *a = argv[*i];
    if (strcmp(a, "--json") == 0) {
        cli_g.json = 1;
        return 1;
    }
    if (strcmp(a, "-v") == 0 || strcmp(a, "--verbose") == 0) {
        cli_g.verbose = 1;
        return 1;
    }
    if (strncmp(a, "--config=", 9) == 0) {
        cli_g.config_path = a + 9;
        return 1;
    }
    if (strcmp(a, "-c") == 0 || strcmp(a, "--config") == 0) {
        if (*i + 1 >= argc) {
            fprintf(stderr, "segnode: %s needs a file name\n", a);
            return -CLI_EXIT_USAGE;
        }
        cli_g.config_path = argv[++*i];
        return 1;
    }
    return 0;
}

int cli_json_out(cJSON *doc)
{
    char *s = doc ? cJSON_Print(doc) : NULL;
    cJSON_Delete(doc);
    if (!s) {
        fprintf(stderr, "segnode: out of memory\n");
        return CLI_EXIT_FAIL;
    }
    puts(s);
    free(s);
    return CLI_EXIT_OK;
}

int cli_is_help(const char *arg)
{
    return strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0;
}

char *cli_human_bytes(int64_t bytes, char *out, size_t outlen)
{
    static const char *units[] = {"KiB", "MiB", "GiB", "TiB", "PiB"};
    if (bytes < 1024) {
        snprintf(out, outlen, "%lld B", (long long)bytes);
        return out;
    }
    double v = (double)bytes;
    int u = -1;
    while (v >= 1024.0 && u < 4) {
        v /= 1024.0;
        u++;
    }
    snprintf(out, outlen, v < 10.0 ? "%.2f %s" : v < 100.0 ? "%.1f %s" : "%.0f %s", v, units[u]);
    return out;
}

char *cli_time(int64_t ms, char out[32])
{
    if (ms <= 0)
        snprintf(out, 32, "-");
    else
        sn_format_time(ms, out);
    return out;
}

/* ---- tables ------------------------------------------------------------------------------- */

struct cli_table {
    int ncols, nrows, cap;
    char **cells;            /* (nrows + 1) * ncols, row 0 = headers */
    int *right;
};

cli_table *cli_table_new(int ncols, const char *const *headers)
{
    cli_table *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    t->ncols = ncols;
    t->right = calloc((size_t)ncols, sizeof *t->right);
    t->cap = 16;
    t->cells = calloc((size_t)(t->cap * ncols), sizeof *t->cells);
    if (!t->right || !t->cells) {
        cli_table_free(t);
        return NULL;
    }
    for (int c = 0; c < ncols; c++)
        t->cells[c] = strdup(headers[c] ? headers[c] : "");
    return t;
}

void cli_table_add(cli_table *t, const char *const *cells)
{
    if (!t)
        return;
    if (t->nrows + 2 > t->cap) {
        int cap = t->cap * 2;
        char **n = realloc(t->cells, (size_t)(cap * t->ncols) * sizeof *n);
        if (!n)
            return;
        t->cells = n;
        t->cap = cap;
    }
    char **row = t->cells + (size_t)(t->nrows + 1) * (size_t)t->ncols;
    for (int c = 0; c < t->ncols; c++) {
        const char *s = cells[c] && cells[c][0] ? cells[c] : "-";
        /* Keep one line per row whatever a sender put in a description. */
        char *d = strdup(s);
        if (d)
            for (char *p = d; *p; p++)
                if (*p == '\n' || *p == '\r' || *p == '\t')
                    *p = ' ';
        row[c] = d;
    }
    t->nrows++;
}

void cli_table_align_right(cli_table *t, int col)
{
    if (t && col >= 0 && col < t->ncols)
        t->right[col] = 1;
}

int cli_table_rows(const cli_table *t) { return t ? t->nrows : 0; }

void cli_table_print(const cli_table *t, FILE *f)
{
    if (!t)
        return;
    int *w = calloc((size_t)t->ncols, sizeof *w);
    if (!w)
        return;
    for (int r = 0; r <= t->nrows; r++)
        for (int c = 0; c < t->ncols; c++) {
            const char *s = t->cells[(size_t)r * (size_t)t->ncols + (size_t)c];
            int len = s ? (int)strlen(s) : 0;
            if (len > w[c])
                w[c] = len;
        }
    for (int r = 0; r <= t->nrows; r++) {
        for (int c = 0; c < t->ncols; c++) {
            const char *s = t->cells[(size_t)r * (size_t)t->ncols + (size_t)c];
            if (!s)
                s = "";
            int last = c == t->ncols - 1;
            if (t->right[c])
                fprintf(f, "%*s", w[c], s);
            else if (last)
                fputs(s, f);
            else
                fprintf(f, "%-*s", w[c], s);
            fputs(last ? "\n" : "  ", f);
        }
    }
    free(w);
}

void cli_table_free(cli_table *t)
{
    if (!t)
        return;
    if (t->cells)
        for (int i = 0; i < (t->nrows + 1) * t->ncols; i++)
            free(t->cells[i]);
    free(t->cells);
    free(t->right);
    free(t);
}
