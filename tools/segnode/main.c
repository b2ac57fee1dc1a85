/* tools/segnode/main.c — the `segnode` command: global options and dispatch to subcommands.
 * The daemon is `serve` (serve.c), offline conversion is `convert` (convert.c), the admin
 * subcommands are in admin.c. Exit codes: 0 ok, 1 runtime failure, 2 usage or config error. */
#include <stdio.h>
#include <string.h>

#include "common/log.h"
#include "tools/segnode/cli.h"

#ifdef SEGNODE_HAVE_SEGMENT
int segnode_segment(int argc, char **argv); /* segment.c */
#endif
#ifdef SEGNODE_HAVE_INFER
int segnode_infer(int argc, char **argv); /* infer.c */
#endif

#ifndef SEGNODE_VERSION
#define SEGNODE_VERSION "unknown"
#endif

static void usage(FILE *f)
{
    fprintf(f,
        "usage: segnode [-c FILE] [--json] [-v] COMMAND [ARGS]\n"
        "\n"
        "A DICOM node that stores incoming series, segments them and sends DICOM-SEG results.\n"
        "\n"
        "Commands:\n"
        "  serve                 run the node (DICOM listener, series sweeper, HTTP status)\n"
        "  status                node, store and queue summary (and the daemon's live figures)\n"
        "  series [UID]          list stored series, or show one\n"
        "  series route UID [R]  route a complete series again (new jobs), or by route R\n"
        "  series delete UID     delete a series (files, rows, pending jobs and deliveries)\n"
        "  jobs list             list segmentation jobs\n"
        "  jobs retry ID         put a failed or finished job back in the queue\n"
        "  jobs cancel ID        fail a pending or running job now (a running one stops)\n"
        "  peers                 list configured peers\n"
        "  echo PEER             C-ECHO a peer (by [peer NAME] or AE title)\n"
        "  send PEER FILE|DIR|UID...\n"
        "                        C-STORE files, folders or stored series (by UID) to a peer\n"
        "  config check [FILE [SERIES]]\n"
        "                        validate the configuration; with SERIES (a folder or a stored\n"
        "                        series UID), say which routes would take it\n"
        "  store check           the index against the instance files, both ways\n"
        "  store backup DEST     a consistent copy of the index, safe while the node runs\n"
        "  convert ...           convert a series folder to NIfTI\n"
        "  segment ...           write a SEG for a series folder: from a label map, or by the atlas\n"
        "                        method (offline)\n"
        "  infer ...             run a model bundle on a series folder or NIfTI volume\n"
        "  atlas ...             manage the atlas library (import, list)\n"
        "  help [COMMAND]        this text, or a command's\n"
        "\n"
        "Options (before or after the command):\n"
        "  -c, --config FILE     config file (default: $SEGNODE_CONFIG, else %s\n"
        "                        if it exists, else the installation's etc/segnode/segnode.conf\n"
        "                        if it exists, else built-in defaults)\n"
        "      --json            JSON output for tables (arrays of objects, snake_case keys)\n"
        "  -v, --verbose         debug logging\n"
        "  -h, --help            help\n"
        "      --version         print the version\n"
        "\n"
        "Exit status: 0 ok, 1 runtime failure, 2 usage or configuration error.\n",
        CLI_DEFAULT_CONFIG);
}

__attribute__((unused)) static int not_yet(const char *cmd)
{
    fprintf(stderr, "segnode: %s: not available in this build yet\n", cmd);
    return CLI_EXIT_USAGE;
}

typedef int (*cmd_fn)(int argc, char **argv);

static int serve_entry(int argc, char **argv)
{
#ifdef SEGNODE_HAVE_SERVE
    return segnode_serve(argc, argv);
#else
    (void)argc;
    (void)argv;
    fprintf(stderr, "segnode: serve: not built in this binary\n");
    return CLI_EXIT_USAGE;
#endif
}

static int convert_entry(int argc, char **argv)
{
#ifdef SEGNODE_HAVE_CONVERT
    return segnode_convert(argc, argv);
#else
    (void)argc;
    (void)argv;
    fprintf(stderr, "segnode: convert: not built in this binary\n");
    return CLI_EXIT_USAGE;
#endif
}

static int segment_entry(int argc, char **argv)
{
#ifdef SEGNODE_HAVE_SEGMENT
    return segnode_segment(argc, argv);
#else
    (void)argc;
    (void)argv;
    return not_yet("segment");
#endif
}
static int infer_entry(int argc, char **argv)
{
#ifdef SEGNODE_HAVE_INFER
    return segnode_infer(argc, argv);
#else
    (void)argc;
    (void)argv;
    return not_yet("infer");
#endif
}
#ifdef SEGNODE_HAVE_ATLAS
int segnode_atlas(int argc, char **argv); /* atlas.c */
static int atlas_entry(int argc, char **argv) { return segnode_atlas(argc, argv); }
#else
static int atlas_entry(int argc, char **argv) { (void)argc; (void)argv; return not_yet("atlas"); }
#endif

static const struct {
    const char *name;
    cmd_fn fn;
} g_cmds[] = {
    {"serve", serve_entry},     {"status", cli_cmd_status}, {"series", cli_cmd_series},
    {"jobs", cli_cmd_jobs},     {"peers", cli_cmd_peers},   {"echo", cli_cmd_echo},
    {"send", cli_cmd_send},     {"config", cli_cmd_config}, {"store", cli_cmd_store},
    {"convert", convert_entry},
    {"segment", segment_entry}, {"atlas", atlas_entry},   {"infer", infer_entry},
};

static cmd_fn find_cmd(const char *name)
{
    for (size_t i = 0; i < sizeof g_cmds / sizeof g_cmds[0]; i++)
        if (strcmp(g_cmds[i].name, name) == 0)
            return g_cmds[i].fn;
    return NULL;
}

int main(int argc, char **argv)
{
    int i = 1;
    for (; i < argc; i++) {
        const char *a = argv[i];
        if (cli_is_help(a)) {
            usage(stdout);
            return CLI_EXIT_OK;
        }
        if (strcmp(a, "--version") == 0) {
            printf("segnode %s\n", SEGNODE_VERSION);
            return CLI_EXIT_OK;
        }
        int g = cli_take_global(argc, argv, &i);
        if (g < 0)
            return -g;
        if (g == 1)
            continue;
        if (a[0] == '-') {
            fprintf(stderr, "segnode: unknown option %s (see segnode --help)\n", a);
            return CLI_EXIT_USAGE;
        }
        break;
    }
    if (i >= argc) {
        usage(stderr);
        return CLI_EXIT_USAGE;
    }
    if (cli_g.verbose)
        sn_log_set_level(SN_LOG_LEVEL_DEBUG);

    const char *cmd = argv[i];
    if (strcmp(cmd, "help") == 0) {
        if (i + 1 < argc) {
            cmd_fn fn = find_cmd(argv[i + 1]);
            if (!fn) {
                fprintf(stderr, "segnode: unknown command %s\n", argv[i + 1]);
                return CLI_EXIT_USAGE;
            }
            char *hargv[] = {argv[i + 1], "--help", NULL};
            return fn(2, hargv);
        }
        usage(stdout);
        return CLI_EXIT_OK;
    }
    cmd_fn fn = find_cmd(cmd);
    if (!fn) {
        fprintf(stderr, "segnode: unknown command '%s' (see segnode --help)\n", cmd);
        return CLI_EXIT_USAGE;
    }
    return fn(argc - i, argv + i);
}
