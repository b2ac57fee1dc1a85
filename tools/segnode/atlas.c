/* tools/segnode/atlas.c — `segnode atlas import|list` and the atlas method of `segnode segment`.
 * An atlas is prepared once at import (working-grid image, MIND-SSC descriptors, labels on its
 * own grid: pipeline/atlas) and cached under <storage>/atlases/NAME/; a segmentation loads the
 * caches and runs pipeline_atlas_segment (pipeline/atlas/method_atlas.h). The store's atlases
 * table (store_atlas.c) indexes the library: name, source, labels with codes, cache folder. */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common/config.h"
#include "common/log.h"
#include "common/status.h"
#include "nn/nn.h"
#include "pipeline/atlas/atlas.h"
#include "pipeline/atlas/method_atlas.h"
#include "pipeline/labels.h"
#include "pipeline/segread.h"
#include "pipeline/volume.h"
#include "store/store.h"
#include "tools/segnode/atlas.h"
#include "tools/segnode/cli.h"


static void vol_grid(const pipeline_volume *v, atlas_grid *g)
{
    g->nx = v->nx, g->ny = v->ny, g->nz = v->nz;
    memcpy(g->spacing, v->spacing, sizeof g->spacing);
    memcpy(g->origin, v->origin, sizeof g->origin);
    memcpy(g->direction, v->direction, sizeof g->direction);
}

/* The library folder under [node] storage, and the store (its atlases table) when st is not
 * NULL (close it with store_close). */
static int library_dir(char *out, size_t n, store **st)
{
    sn_config *cfg = NULL;
    if (cli_load_config(cli_g.config_path, &cfg)) return -1;
    snprintf(out, n, "%s/atlases", cfg->node.storage);
    mkdir(cfg->node.storage, 0755);
    mkdir(out, 0755);
    int rc = st ? cli_open_store(cfg, st) : 0;
    sn_config_unref(cfg);
    return rc ? -1 : 0;
}

static int import_one(store *st, const char *lib, const char *name, const char *series, const char *segpath,
                      const char *table_path)
{
    char err[1024], dir[4096];
    if (!sn_config_name_valid(name)) {   /* the library folder's name, as a route's `atlases` names it */
        fprintf(stderr, "segnode atlas: name '%s': use 1-%d letters, digits, -, _ and . (not first)\n", name,
                SN_NAME_MAX);
        return CLI_EXIT_USAGE;
    }
    pipeline_labels *table = NULL;
    pipeline_volume *v = NULL;
    pipeline_seg *seg = NULL;
    uint16_t *l16 = NULL;
    uint8_t *lab = NULL;
    atlas_prep *p = NULL;
    nn_backend *b = NULL;
    int rc = CLI_EXIT_FAIL;
    pipeline_seg_import_report rep;
    if (pipeline_labels_load(table_path, &table, err, sizeof err) ||
        pipeline_volume_read_dir(series, NULL, &v, err, sizeof err) ||
        pipeline_seg_read(segpath, &seg, err, sizeof err)) {
        fprintf(stderr, "segnode atlas import %s: %s\n", name, err);
        goto out;
    }
    size_t n = (size_t)v->nx * v->ny * v->nz;
    l16 = calloc(n, 2);
    lab = malloc(n);
    if (!l16 || !lab || pipeline_seg_to_labels(seg, v, table, l16, &rep, err, sizeof err)) {
        fprintf(stderr, "segnode atlas import %s: %s\n", name, l16 && lab ? err : "out of memory");
        goto out;
    }
    for (size_t i = 0; i < n; i++) lab[i] = l16[i] > 255 ? 0 : (uint8_t)l16[i];
    atlas_grid g;
    vol_grid(v, &g);
    if (nn_backend_cpu_new(2, &b, err, sizeof err) || atlas_prep_new(b, &g, v->data, lab, 0, &p, err, sizeof err)) {
        fprintf(stderr, "segnode atlas import %s: %s\n", name, err);
        goto out;
    }
    snprintf(dir, sizeof dir, "%s/%s", lib, name);
    mkdir(dir, 0755);
    if (atlas_prep_save(p, dir, err, sizeof err)) {
        fprintf(stderr, "segnode atlas import %s: %s\n", name, err);
        goto out;
    }
    char labels[8192] = "";
    size_t ll = 0;
    for (int i = 0; i < seg->nsegments && ll + 200 < sizeof labels; i++) {
        const pipeline_seg_segment *sg = &seg->segments[i];
        const pipeline_label *pl = pipeline_labels_by_number(table, sg->label_value);
        ll += (size_t)snprintf(labels + ll, sizeof labels - ll, "%d %s %s:%s\n", sg->label_value,
                               pl ? pl->name : sg->label, sg->type.scheme, sg->type.value);
    }
    store_atlas_row row = {.name = name, .modality = v->modality, .series_uid = v->series_uid, .cache_dir = dir,
                           .labels = labels, .nx = v->nx, .ny = v->ny, .nz = v->nz, .work_mm = p->grid.spacing[0]};
    if (store_atlas_put(st, &row, err, sizeof err)) {
        fprintf(stderr, "segnode atlas import %s: %s\n", name, err);
        goto out;
    }
    printf("imported atlas %s: %s %dx%dx%d, %d segments, working grid %dx%dx%d at %.2f mm\n", name, v->modality,
           v->nx, v->ny, v->nz, seg->nsegments, p->grid.nx, p->grid.ny, p->grid.nz, p->grid.spacing[0]);
    rc = CLI_EXIT_OK;
out:
    atlas_prep_free(p);
    nn_backend_free(b);
    free(l16);
    free(lab);
    pipeline_seg_free(seg);
    pipeline_volume_free(v);
    pipeline_labels_free(table);
    return rc;
}

static const char *table_default(void)
{
    static char path[4096];
    pipeline_labels_default_path(cli_config_source(cli_g.config_path), path, sizeof path);
    return path;
}

typedef struct list_ctx {
    int n;
} list_ctx;

/* One atlas row: the table line or a JSON object (labels as numbers and names). */
static int list_row(void *vctx, const store_atlas_row *r)
{
    list_ctx *c = vctx;
    char names[2048] = "";
    size_t nl = 0;
    int count = 0;
    for (const char *p = r->labels; p && *p;) {
        int num;
        char nm[64];
        if (sscanf(p, "%d %63s", &num, nm) == 2 && nl + 80 < sizeof names) {
            if (cli_g.json) nl += (size_t)snprintf(names + nl, sizeof names - nl, "%s{\"number\":%d,\"name\":\"%s\"}", count ? "," : "", num, nm);
            else nl += (size_t)snprintf(names + nl, sizeof names - nl, "%s%s", count ? "," : "", nm);
            count++;
        }
        p = strchr(p, '\n');
        if (p) p++;
    }
    if (cli_g.json)
        printf("%s{\"name\":\"%s\",\"modality\":\"%s\",\"series_uid\":\"%s\",\"size\":[%d,%d,%d],"
               "\"work_mm\":%.3f,\"cache\":\"%s\",\"labels\":[%s]}",
               c->n ? "," : "", r->name, r->modality, r->series_uid, r->nx, r->ny, r->nz, r->work_mm, r->cache_dir, names);
    else
        printf("%-16s %-5s %4dx%4dx%4d  %2d labels: %s\n", r->name, r->modality, r->nx, r->ny, r->nz, count, names);
    c->n++;
    return 0;
}

int segnode_atlas(int argc, char **argv)
{
    const char *sub = NULL, *phantom = NULL, *pos[3] = {NULL, NULL, NULL};
    int npos = 0;
    for (int i = 1; i < argc; i++) {
        int gl = cli_take_global(argc, argv, &i);
        if (gl < 0) return CLI_EXIT_USAGE;
        if (gl > 0) continue;
        if (cli_is_help(argv[i])) {
            printf("usage: segnode atlas import NAME SERIES_DIR SEG.dcm\n"
                   "       segnode atlas import --phantom DIR   (every subject-NNN: ct/ + seg/ct.dcm)\n"
                   "       segnode atlas list [--json]\n");
            return CLI_EXIT_OK;
        }
        if (!sub) sub = argv[i];
        else if (!strcmp(argv[i], "--phantom") && i + 1 < argc) phantom = argv[++i];
        else if (npos < 3) pos[npos++] = argv[i];
        else return CLI_EXIT_USAGE;
    }
    char lib[4096];
    store *st = NULL;
    int rc;
    cli_apply_log_level();
    if (!sub) {
        fprintf(stderr, "usage: segnode atlas import|list ...\n");
        return CLI_EXIT_USAGE;
    }
    if (strcmp(sub, "import") && strcmp(sub, "list")) {
        fprintf(stderr, "segnode atlas: unknown subcommand %s (import, list)\n", sub);
        return CLI_EXIT_USAGE;
    }
    if (library_dir(lib, sizeof lib, &st)) return CLI_EXIT_USAGE;
    if (!strcmp(sub, "import")) {
        if (phantom) {
            DIR *d = opendir(phantom);
            if (!d) {
                fprintf(stderr, "segnode atlas import: cannot open %s\n", phantom);
                store_close(st);
                return CLI_EXIT_FAIL;
            }
            struct dirent *e;
            int count = 0;
            rc = CLI_EXIT_OK;
            char names[256][64];
            while ((e = readdir(d)) && count < 256)
                if (!strncmp(e->d_name, "subject-", 8)) snprintf(names[count++], 64, "%.63s", e->d_name);
            closedir(d);
            for (int i = 0; i < count; i++) {
                char s[4200], g[4200];
                snprintf(s, sizeof s, "%.4000s/%.63s/ct", phantom, names[i]);
                snprintf(g, sizeof g, "%.4000s/%.63s/seg/ct.dcm", phantom, names[i]);
                int r = import_one(st, lib, names[i], s, g, table_default());
                if (r) rc = r;
            }
            store_close(st);
            return rc;
        }
        if (npos != 3) {
            fprintf(stderr, "usage: segnode atlas import NAME SERIES_DIR SEG.dcm\n");
            store_close(st);
            return CLI_EXIT_USAGE;
        }
        rc = import_one(st, lib, pos[0], pos[1], pos[2], table_default());
        store_close(st);
        return rc;
    }
    if (!strcmp(sub, "list")) {
        list_ctx lc = {0};
        char err[1024];
        if (cli_g.json) printf("[");
        rc = store_atlas_list(st, NULL, list_row, &lc, err, sizeof err);
        if (cli_g.json) printf("]\n");
        store_close(st);
        if (rc) {
            fprintf(stderr, "segnode atlas list: %s\n", err);
            return CLI_EXIT_FAIL;
        }
        if (!cli_g.json && !lc.n) printf("no atlases (segnode atlas import ...)\n");
        return CLI_EXIT_OK;
    }
    store_close(st);
    fprintf(stderr, "segnode atlas: unknown subcommand %s\n", sub);
    return CLI_EXIT_USAGE;
}

int segnode_atlas_names(const char *names, char *list, size_t listlen, const char **nm)
{
    int na = 0;
    char *save = NULL;
    snprintf(list, listlen, "%s", names);
    for (char *s = strtok_r(list, ",", &save); s; s = strtok_r(NULL, ",", &save)) {
        if (na == PIPELINE_ATLAS_MAX) {
            fprintf(stderr, "segnode segment: --atlases names more than %d atlases\n", PIPELINE_ATLAS_MAX);
            return -1;
        }
        nm[na++] = s;
    }
    return na;
}

int segnode_atlas_segment(const pipeline_volume *v, const char *names, const char *fusion, int select_k,
                          int refine, const char *device, uint16_t *out)
{
    char lib[4096], err[1024], note[1024] = "", list[1024];
    const char *nm[PIPELINE_ATLAS_MAX];
    cli_apply_log_level();
    int na = segnode_atlas_names(names, list, sizeof list, nm);
    if (na < 0) return CLI_EXIT_USAGE;
    if (library_dir(lib, sizeof lib, NULL)) return CLI_EXIT_USAGE;
    int fm = fusion ? atlas_fusion_from_name(fusion) : 0;
    if (fm < 0) {
        fprintf(stderr, "segnode segment: unknown fusion %s (majority, local, jlf)\n", fusion);
        return CLI_EXIT_USAGE;
    }
    pipeline_atlas_opts o;
    pipeline_atlas_opts_default(&o);
    o.library = lib;
    o.atlases = nm;
    o.n_atlases = na;
    o.select_k = select_k;
    o.refine = refine;
    if (fusion) /* else the node's default, as a route gets it */
        o.fusion = (atlas_fusion)fm;
    o.verbose = cli_g.verbose;
    const int automatic = !device || !strcmp(device, "auto");   /* segment checked the value */
    if (automatic ? nn_cuda_devices(NULL, 0) > 0 : !strcmp(device, "cuda"))
        o.device_index = 0;
    int rc = pipeline_atlas_segment(&o, v, out, note, sizeof note, err, sizeof err);
    if (rc == SN_EDEVICE && automatic) {
        SN_LOG_WARN("atlas", "%s; running on the CPU", err);
        o.device_index = -1;
        rc = pipeline_atlas_segment(&o, v, out, note, sizeof note, err, sizeof err);
    }
    if (rc) {
        fprintf(stderr, "segnode segment: %s\n", err);
        return rc == SN_EINVAL ? CLI_EXIT_USAGE : CLI_EXIT_FAIL;
    }
    printf("atlas: %s\n", note);
    return CLI_EXIT_OK;
}
