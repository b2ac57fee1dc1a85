/* tools/segnode/storecheck.c — `segnode store check`: the index against the instance files,
 * both ways (store_check in store/store_check.c), for an admin after a crash, a restore from
 * backup or a disk problem; and `segnode store backup`: a consistent copy of the index
 * (store_backup in store/store_backup.c). Both safe while the node runs. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "common/status.h"
#include "common/util.h"
#include "store/store.h"
#include "tools/segnode/cli.h"

static const char STORE_HELP[] =
    "usage: segnode [-c FILE] [--json] store check [--remove-orphans] [--orphan-age SECONDS]\n"
    "       segnode [-c FILE] [--json] store backup DEST.sqlite\n"
    "\n"
    "store backup: a consistent copy of the index (index.sqlite) as of one moment, written to\n"
    "DEST.sqlite (never overwritten), checked (quick_check) and synced; safe while the node\n"
    "runs. The instance files are not copied: copy <storage>/files and <storage>/atlases\n"
    "AFTER it (rsync), so that every row of the copy finds its file. To restore: stop the\n"
    "node, put the copy in place as index.sqlite (no -wal/-shm beside it), the files back, start\n"
    "it, then run store check.\n"
    "\n"
    "store check:\n"
    "Compare the index with the instance files under <storage>/files, both ways: every indexed\n"
    "instance against its file (present, of the size indexed), every file against the index.\n"
    "One stat per file; safe while the node runs. Findings:\n"
    "  missing  an indexed instance whose file is gone (restore it, or have it sent again)\n"
    "  size     an indexed instance whose file has another size than indexed\n"
    "  orphan   an instance file no row names, written more than --orphan-age seconds ago:\n"
    "           left by a crash between its rename and its index commit (the sender never\n"
    "           got Success for it) or copied in by hand. --remove-orphans deletes these.\n"
    "  recent   the same, but younger: may be a C-STORE being committed (not a finding)\n"
    "  stray    anything else under files/ (never touched)\n"
    "\n"
    "  --remove-orphans       delete the orphan files\n"
    "  --orphan-age SECONDS   age from which an unindexed file is an orphan (default 3600,\n"
    "                         at least 60)\n"
    "\n"
    "Exit status: 0 nothing found (removed orphans and recent files do not count), 1 findings\n"
    "remain or the check failed, 2 usage.\n";

static const char *const kind_names[] = {
    [STORE_CHECK_MISSING] = "missing", [STORE_CHECK_SIZE] = "size",
    [STORE_CHECK_ORPHAN] = "orphan",   [STORE_CHECK_RECENT] = "recent",
    [STORE_CHECK_STRAY] = "stray",
};

typedef struct check_out {
    cJSON *findings;                   /* --json: the array; else NULL (printed as they come) */
} check_out;

static void add_size(cJSON *o, const char *key, int64_t v)
{
    if (v >= 0)
        cJSON_AddNumberToObject(o, key, (double)v);
    else
        cJSON_AddNullToObject(o, key);
}

static int finding_cb(void *vctx, const store_check_item *it)
{
    check_out *out = vctx;
    if (out->findings) {
        cJSON *o = cJSON_CreateObject();
        if (!o)
            return 1;
        cJSON_AddStringToObject(o, "kind", kind_names[it->kind]);
        cJSON_AddStringToObject(o, "path", it->path);
        if (it->sop_instance_uid)
            cJSON_AddStringToObject(o, "sop_instance_uid", it->sop_instance_uid);
        else
            cJSON_AddNullToObject(o, "sop_instance_uid");
        add_size(o, "indexed_size", it->indexed_size);
        add_size(o, "file_size", it->file_size);
        add_size(o, "age_s", it->age_s);
        cJSON_AddBoolToObject(o, "removed", it->removed);
        cJSON_AddItemToArray(out->findings, o);
        return 0;
    }
    char a[32], b[32];
    switch (it->kind) {
    case STORE_CHECK_MISSING:
        printf("missing  %s  (SOP Instance UID %s, %s indexed)\n", it->path, it->sop_instance_uid,
               cli_human_bytes(it->indexed_size, a, sizeof a));
        break;
    case STORE_CHECK_SIZE:
        printf("size     %s  (SOP Instance UID %s: %lld bytes indexed, %lld on disk)\n", it->path,
               it->sop_instance_uid, (long long)it->indexed_size, (long long)it->file_size);
        break;
    case STORE_CHECK_ORPHAN:
    case STORE_CHECK_RECENT:
        printf("%-8s %s  (%s, written %lld s ago, in no row%s)\n", kind_names[it->kind], it->path,
               cli_human_bytes(it->file_size, b, sizeof b), (long long)it->age_s,
               it->removed ? "; removed" : "");
        break;
    case STORE_CHECK_STRAY:
        printf("stray    %s  (not an instance file name; left alone)\n", it->path);
        break;
    }
    return 0;
}

static int check_cmd(int remove, int64_t age)
{
    sn_config *cfg;
    store *st;
    char err[1024] = "";
    int rc0 = cli_open_config_store(&cfg, &st);
    if (rc0)
        return rc0;
    check_out out = {cli_g.json ? cJSON_CreateArray() : NULL};
    store_check_opts o = {.remove_orphans = remove, .orphan_min_age_s = age};
    store_check_result r;
    int rc = store_check(st, &o, finding_cb, &out, &r, err, sizeof err);
    int exit_code = CLI_EXIT_OK;
    if (rc != SN_OK) {
        fprintf(stderr, "segnode store check: %s\n", err[0] ? err : sn_strerror(rc));
        exit_code = CLI_EXIT_FAIL;
    } else if (r.missing || r.size || r.orphans > r.removed || r.stray) {
        exit_code = CLI_EXIT_FAIL;
    }
    if (rc == SN_OK && cli_g.json) {
        cJSON *doc = cJSON_CreateObject();
        cJSON_AddStringToObject(doc, "storage", cfg->node.storage);
        cJSON_AddNumberToObject(doc, "rows", (double)r.rows);
        cJSON_AddNumberToObject(doc, "files", (double)r.files);
        cJSON_AddNumberToObject(doc, "ok", (double)r.ok);
        cJSON_AddNumberToObject(doc, "indexed_bytes", (double)r.indexed_bytes);
        cJSON_AddNumberToObject(doc, "missing", (double)r.missing);
        cJSON_AddNumberToObject(doc, "size", (double)r.size);
        cJSON_AddNumberToObject(doc, "orphans", (double)r.orphans);
        cJSON_AddNumberToObject(doc, "removed", (double)r.removed);
        cJSON_AddNumberToObject(doc, "recent", (double)r.recent);
        cJSON_AddNumberToObject(doc, "stray", (double)r.stray);
        cJSON_AddItemToObject(doc, "findings", out.findings);
        out.findings = NULL;
        if (cli_json_out(doc) != CLI_EXIT_OK)
            exit_code = CLI_EXIT_FAIL;
    } else if (rc == SN_OK) {
        char b[32];
        printf("%s: %lld indexed instance(s), %lld file entr%s\n", cfg->node.storage,
               (long long)r.rows, (long long)r.files, r.files == 1 ? "y" : "ies");
        printf("  ok        %lld (%s)\n", (long long)r.ok, cli_human_bytes(r.indexed_bytes, b, sizeof b));
        printf("  missing   %lld\n", (long long)r.missing);
        printf("  size      %lld\n", (long long)r.size);
        printf("  orphan    %lld", (long long)r.orphans);
        if (remove)
            printf(" (%lld removed)", (long long)r.removed);
        printf("\n  recent    %lld\n", (long long)r.recent);
        printf("  stray     %lld\n", (long long)r.stray);
    }
    cJSON_Delete(out.findings);
    store_close(st);
    sn_config_unref(cfg);
    return exit_code;
}

static int backup_cmd(const char *dest)
{
    sn_config *cfg;
    store *st;
    char err[1024] = "";
    int rc0 = cli_open_config_store(&cfg, &st);
    if (rc0)
        return rc0;
    store_backup_result r;
    int64_t t0 = sn_mono_ms();
    int rc = store_backup(st, dest, &r, err, sizeof err);
    double s = (double)(sn_mono_ms() - t0) / 1000.0;
    int exit_code = CLI_EXIT_OK;
    if (rc != SN_OK) {
        fprintf(stderr, "segnode store backup: %s\n", err[0] ? err : sn_strerror(rc));
        exit_code = CLI_EXIT_FAIL;
    } else if (cli_g.json) {
        cJSON *doc = cJSON_CreateObject();
        cJSON_AddStringToObject(doc, "storage", cfg->node.storage);
        cJSON_AddStringToObject(doc, "backup", dest);
        cJSON_AddNumberToObject(doc, "bytes", (double)r.bytes);
        cJSON_AddNumberToObject(doc, "seconds", s);
        cJSON_AddNumberToObject(doc, "patients", (double)r.patients);
        cJSON_AddNumberToObject(doc, "studies", (double)r.studies);
        cJSON_AddNumberToObject(doc, "series", (double)r.series);
        cJSON_AddNumberToObject(doc, "instances", (double)r.instances);
        cJSON_AddNumberToObject(doc, "jobs", (double)r.jobs);
        cJSON_AddNumberToObject(doc, "outbox", (double)r.outbox);
        exit_code = cli_json_out(doc);
    } else {
        char b[32];
        printf("%s: index of %s backed up in %.2f s (%s, quick_check ok)\n", dest, cfg->node.storage, s,
               cli_human_bytes(r.bytes, b, sizeof b));
        printf("  %lld patient(s), %lld stud(y/ies), %lld series, %lld instance(s), %lld job(s), "
               "%lld outbox row(s)\n",
               (long long)r.patients, (long long)r.studies, (long long)r.series, (long long)r.instances,
               (long long)r.jobs, (long long)r.outbox);
        printf("now copy %s/files and %s/atlases (e.g. rsync -a)\n", cfg->node.storage, cfg->node.storage);
    }
    store_close(st);
    sn_config_unref(cfg);
    return exit_code;
}

int cli_cmd_store(int argc, char **argv)
{
    const char *action = NULL, *dest = NULL;
    int remove = 0;
    int64_t age = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (cli_is_help(a)) {
            fputs(STORE_HELP, stdout);
            return CLI_EXIT_OK;
        }
        if (strcmp(a, "--remove-orphans") == 0) {
            remove = 1;
            continue;
        }
        if (strcmp(a, "--orphan-age") == 0) {
            char *end = NULL;
            long long v;
            errno = 0;
            if (i + 1 >= argc || (v = strtoll(argv[i + 1], &end, 10), errno || !end || *end ||
                                  end == argv[i + 1] || v < 60)) {
                fprintf(stderr, "segnode store: --orphan-age needs a number of seconds >= 60\n");
                return CLI_EXIT_USAGE;
            }
            age = v;
            i++;
            continue;
        }
        int g = cli_take_global(argc, argv, &i);
        if (g < 0)
            return -g;
        if (g == 1)
            continue;
        if (a[0] == '-' || (action && (strcmp(action, "backup") != 0 || dest))) {
            fprintf(stderr, "segnode store: unexpected argument %s\n%s", a, STORE_HELP);
            return CLI_EXIT_USAGE;
        }
        if (action)
            dest = a;
        else
            action = a;
    }
    cli_apply_log_level();
    if (action && strcmp(action, "backup") == 0) {
        if (!dest || remove || age) {
            fprintf(stderr, "segnode store backup: %s\n%s",
                    dest ? "--remove-orphans and --orphan-age belong to check" : "needs DEST", STORE_HELP);
            return CLI_EXIT_USAGE;
        }
        return backup_cmd(dest);
    }
    if (!action || strcmp(action, "check") != 0) {
        fprintf(stderr, "segnode store: %s\n%s",
                action ? "unknown action (check or backup)" : "needs an action", STORE_HELP);
        return CLI_EXIT_USAGE;
    }
    return check_cmd(remove, age);
}
