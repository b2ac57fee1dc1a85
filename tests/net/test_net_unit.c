/* tests/net/test_net_unit.c — the parts of the learned methods that need no node: where a route's
 * relative `model =` resolves, how a bundle's channels map onto the code table and the route's
 * labels (by name, by code, unknown ones left out, missing ones noted, nothing usable refused),
 * the bundle cache (hit, reload after the files change, a bad folder's reason), and the net
 * method run in-process on a phantom-like volume through the worker's plug-in table.
 * usage: test_net_unit LABELS_TSV BUNDLE_DIR */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <utime.h>

#include "common/config.h"
#include "common/status.h"
#include "common/util.h"
#include "pipeline/method.h"
#include "pipeline/atlas/atlas.h"
#include "pipeline/method_net.h"

static int nfail, ncheck;

#define CHECK(cond, ...)                                   \
    do {                                                   \
        ncheck++;                                          \
        if (cond) {                                        \
            printf("ok   - ");                             \
        } else {                                           \
            printf("FAIL - (%s:%d) ", __FILE__, __LINE__); \
            nfail++;                                       \
        }                                                  \
        printf(__VA_ARGS__);                               \
        printf("\n");                                      \
    } while (0)

static void test_model_path(void)
{
    sn_config cfg;
    char out[256];
    memset(&cfg, 0, sizeof cfg);
    snprintf(cfg.path, sizeof cfg.path, "/etc/segnode/segnode.conf");
    CHECK(pipeline_method_model_path(&cfg, "models/mr", out, sizeof out) == 0 && !strcmp(out, "/etc/segnode/models/mr"),
          "relative model resolves against the config's folder: %s", out);
    CHECK(pipeline_method_model_path(&cfg, "/opt/m", out, sizeof out) == 0 && !strcmp(out, "/opt/m"),
          "absolute model is kept: %s", out);
    snprintf(cfg.path, sizeof cfg.path, "segnode.conf");
    CHECK(pipeline_method_model_path(&cfg, "models/mr", out, sizeof out) == 0 && !strcmp(out, "models/mr"),
          "config in the working folder: relative to it: %s", out);
    snprintf(cfg.path, sizeof cfg.path, "/x.conf");
    CHECK(pipeline_method_model_path(&cfg, "m", out, sizeof out) == 0 && !strcmp(out, "/m"), "config in /: %s", out);
    cfg.path[0] = 0;
    CHECK(pipeline_method_model_path(&cfg, "m", out, sizeof out) == 0 && !strcmp(out, "m"), "embedded defaults: %s", out);
    snprintf(cfg.path, sizeof cfg.path, "/etc/segnode/segnode.conf");
    CHECK(pipeline_method_model_path(&cfg, "models/mr", out, 8) == SN_EINVAL, "too long for the buffer: SN_EINVAL");
    CHECK(pipeline_method_model_path(&cfg, "", out, sizeof out) == SN_EINVAL, "empty model: SN_EINVAL");
}

static void set_label(nn_model_info *in, int k, const char *name, const char *code)
{
    in->labels[k].value = k;
    snprintf(in->labels[k].name, sizeof in->labels[k].name, "%s", name);
    snprintf(in->labels[k].code, sizeof in->labels[k].code, "%s", code);
}

static void test_classes(const pipeline_labels *table)
{
    nn_model_info in;
    memset(&in, 0, sizeof in);
    snprintf(in.name, sizeof in.name, "fake");
    in.out_channels = in.n_labels = 5;
    set_label(&in, 0, "background", "");
    set_label(&in, 1, "leber", "SCT:10200004");     /* liver by code */
    set_label(&in, 2, "spleen", "");                /* by name */
    set_label(&in, 3, "tumour", "SCT:108369006");   /* not in the table */
    set_label(&in, 4, "kidney_left", "SCT:18639004");
    pipeline_net_classes c;
    char note[256] = "", err[256] = "";
    int rc = pipeline_net_classes_map(&in, table, NULL, &c, note, sizeof note, err, sizeof err);
    CHECK(rc == 0 && c.channel_number[0] == 0 && c.channel_number[1] == 8 && c.channel_number[2] == 9 &&
              c.channel_number[3] == -1 && c.channel_number[4] == 10,
          "channels: background, liver by code, spleen by name, tumour unknown, kidney_left (rc %d %s)", rc, err);
    CHECK(c.n == 3 && c.n_in_model == 3 && c.number[0] == 8 && c.number[1] == 9 && c.number[2] == 10 &&
              c.channel[2] == 4,
          "no route labels: every mapped bundle label, in channel order");
    CHECK(strstr(note, "not in the code table (left out): tumour") != NULL, "note names the unknown label: %s", note);

    sn_strlist want;
    memset(&want, 0, sizeof want);
    want.n = 3;
    snprintf(want.item[0], sizeof want.item[0], "kidney_left");
    snprintf(want.item[1], sizeof want.item[1], "stomach");
    snprintf(want.item[2], sizeof want.item[2], "liver");
    note[0] = 0;
    rc = pipeline_net_classes_map(&in, table, &want, &c, note, sizeof note, err, sizeof err);
    CHECK(rc == 0 && c.n == 3 && c.n_in_model == 2 && c.number[0] == 10 && c.channel[0] == 4 && c.number[1] == 17 &&
              c.channel[1] == -1 && c.number[2] == 8 && c.channel[2] == 1,
          "route labels in route order; stomach has no channel");
    CHECK(strstr(note, "labels the model lacks: stomach") != NULL, "note names the lacking label: %s", note);

    snprintf(want.item[1], sizeof want.item[1], "no_such_label");
    rc = pipeline_net_classes_map(&in, table, &want, &c, NULL, 0, err, sizeof err);
    CHECK(rc == SN_EINVAL && strstr(err, "no_such_label"), "a route label not in the table: %s", err);

    for (int k = 1; k < 5; k++)
        set_label(&in, k, "unknown", "SCT:1");
    rc = pipeline_net_classes_map(&in, table, NULL, &c, NULL, 0, err, sizeof err);
    CHECK(rc == SN_EINVAL && strstr(err, "no label the code table knows"), "no usable label: %s", err);
}

static void test_cache(const char *bundle)
{
    char err[512] = "", dir[512], cmd[1200];
    snprintf(dir, sizeof dir, "/tmp/segnode-net-unit-%d", (int)getpid());
    snprintf(cmd, sizeof cmd, "rm -rf '%s' && cp -r '%s' '%s'", dir, bundle, dir);
    if (system(cmd) != 0) {
        CHECK(0, "copy the bundle");
        return;
    }
    pipeline_net_model *a = NULL, *b = NULL, *c = NULL;
    int cached = -1;
    int rc = pipeline_net_model_get(dir, &a, &cached, err, sizeof err);
    CHECK(rc == 0 && a && !cached, "first get loads the bundle (rc %d %s)", rc, err);
    rc = pipeline_net_model_get(dir, &b, &cached, err, sizeof err);
    CHECK(rc == 0 && b == a && cached == 1, "second get is a cache hit");
    /* Install a "new" bundle: later mtime on the weights. */
    char w[600];
    snprintf(w, sizeof w, "%s/model.safetensors", dir);
    struct utimbuf ut = {time(NULL) + 60, time(NULL) + 60};
    utime(w, &ut);
    rc = pipeline_net_model_get(dir, &c, &cached, err, sizeof err);
    CHECK(rc == 0 && c && c != a && !cached, "a changed bundle is loaded again");
    CHECK(nn_model_info_get(pipeline_net_model_nn(a))->out_channels ==
              nn_model_info_get(pipeline_net_model_nn(c))->out_channels,
          "the old entry stays valid for the job holding it");
    pipeline_net_model_put(a);
    pipeline_net_model_put(b);
    pipeline_net_model_put(c);
    snprintf(w, sizeof w, "%s/model.json", dir);
    FILE *f = fopen(w, "w");
    if (f) {
        fputs("{\"format\": \"segnode-model\", \"version\": 1,", f);   /* truncated JSON */
        fclose(f);
    }
    c = NULL;
    rc = pipeline_net_model_get(dir, &c, &cached, err, sizeof err);
    CHECK(rc != 0 && !c && err[0], "a broken model.json is refused: %s", err);
    rc = pipeline_net_model_get("/nonexistent/model", &c, &cached, err, sizeof err);
    CHECK(rc == SN_ENOENT && strstr(err, "model.json"), "a missing folder: SN_ENOENT, %s", err);
    pipeline_net_cache_clear();
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "cleanup of %s failed\n", dir);
}

/* The net method through the worker's registry on a synthetic body: a bright ellipse (liver-like
 * intensity pattern is not needed — the check is the contract, not the quality): labels only
 * from the route's set, a GPU device in a build without CUDA is SN_EDEVICE, stages recorded. */
static void test_method(const pipeline_labels *table, const char *bundle)
{
    pipeline_method_register_builtin();
    pipeline_method m;
    CHECK(pipeline_method_find("net", &m) == 0 && m.uses_gpu == 1, "net is registered and uses the GPU");
    CHECK(pipeline_method_find("both", &m) == 0, "both is registered");
    pipeline_method_find("net", &m);
    sn_config cfg;
    memset(&cfg, 0, sizeof cfg);
    sn_route r;
    memset(&r, 0, sizeof r);
    snprintf(r.name, sizeof r.name, "t");
    snprintf(r.model, sizeof r.model, "%s", bundle);
    r.labels.n = 1;
    snprintf(r.labels.item[0], sizeof r.labels.item[0], "liver");
    pipeline_volume v;
    memset(&v, 0, sizeof v);
    v.nx = 64, v.ny = 60, v.nz = 5;
    v.spacing[0] = v.spacing[1] = 6.0, v.spacing[2] = 8.0;
    v.direction[0] = v.direction[4] = v.direction[8] = 1;
    snprintf(v.modality, sizeof v.modality, "MR");
    size_t S = (size_t)v.nx * v.ny * v.nz;
    v.data = malloc(S * sizeof(float));
    for (int k = 0; k < v.nz; k++)
        for (int j = 0; j < v.ny; j++)
            for (int i = 0; i < v.nx; i++) {
                double x = (i - 32) / 25.0, y = (j - 30) / 18.0;
                v.data[i + v.nx * (j + v.ny * k)] = x * x + y * y < 1 ? 400.0f + 50.0f * (i > 34) : 10.0f;
            }
    pipeline_method_ctx ctx;
    memset(&ctx, 0, sizeof ctx);
    ctx.cfg = &cfg;
    ctx.route = &r;
    ctx.table = table;
    ctx.device = "cpu";
    ctx.device_index = -1;
    ctx.threads = 1;
    uint16_t *lab = NULL;
    char err[512] = "";
    int rc = m.run(&ctx, &v, &lab, err, sizeof err);
    int only = lab != NULL;
    for (size_t i = 0; lab && i < S; i++)
        only &= lab[i] == 0 || lab[i] == 8;
    CHECK(rc == 0 && only, "net on the CPU: labels only liver or background (rc %d %s)", rc, err);
    int have[3] = {0, 0, 0};
    for (int i = 0; i < ctx.nstages; i++) {
        have[0] |= !strcmp(ctx.stages[i].name, "load_model");
        have[1] |= !strcmp(ctx.stages[i].name, "infer");
        have[2] |= !strcmp(ctx.stages[i].name, "postprocess");
    }
    CHECK(have[0] && have[1] && have[2], "stages load_model, infer, postprocess");
    CHECK(strstr(ctx.note, "(loaded)") || strstr(ctx.note, "(cached)"), "note: %s", ctx.note);
    free(lab);
    lab = NULL;
    if (!nn_have_cuda()) {
        memset(&ctx, 0, sizeof ctx);
        ctx.cfg = &cfg, ctx.route = &r, ctx.table = table;
        ctx.device = "cuda:0";
        ctx.device_index = 0;
        rc = m.run(&ctx, &v, &lab, err, sizeof err);
        CHECK(rc == SN_EDEVICE && !lab && strstr(err, "cuda:0"), "cuda:0 without CUDA: SN_EDEVICE (%s)", err);
    }
    free(lab);
    free(v.data);
    pipeline_net_cache_clear();
}

static uint32_t rnd(uint32_t *seed)
{
    *seed = *seed * 1664525u + 1013904223u;
    return *seed >> 8;
}

/* pipeline_net_postprocess works label by label on bounding boxes: it must give exactly what
 * atlas_postprocess_keep gives on the whole volume with PIPELINE_NET_KEEP_FRACTION (islands,
 * holes, holes holding another label, labels touching the border, many-component labels kept
 * whole). And the fraction itself: an aorta broken by a missing slice keeps both pieces, a
 * speck under 5% of the largest piece goes, and atlas_postprocess keeps the largest alone. */
static void test_postprocess(const pipeline_labels *table)
{
    const int nx = 41, ny = 37, nz = 29;
    const size_t S = (size_t)nx * ny * nz;
    static const int pick[] = {2, 8, 9, 10, 17, 3};
    uint8_t *a = malloc(S), *b = malloc(S);
    int same_all = 1, changed = 0;
    uint32_t seed = 12345;
    for (int trial = 0; trial < 20; trial++) {
        memset(a, 0, S);
        for (int s = 0; s < 25; s++) {
            int cx = (int)(rnd(&seed) % nx), cy = (int)(rnd(&seed) % ny), cz = (int)(rnd(&seed) % nz), r = 1 + (int)(rnd(&seed) % 7);
            int l = pick[rnd(&seed) % 6], shell = rnd(&seed) % 3 == 0;
            for (int k = 0; k < nz; k++)
                for (int j = 0; j < ny; j++)
                    for (int i = 0; i < nx; i++) {
                        int d2 = (i - cx) * (i - cx) + (j - cy) * (j - cy) + (k - cz) * (k - cz);
                        /* shells make holes; some get another label inside */
                        if (d2 <= r * r && (!shell || d2 >= (r - 1) * (r - 1)))
                            a[i + (size_t)nx * (j + (size_t)ny * k)] = (uint8_t)l;
                    }
        }
        for (int s = 0; s < 40; s++) {
            size_t at = rnd(&seed) % S;
            a[at] = (uint8_t)pick[rnd(&seed) % 6];   /* speckle: islands */
        }
        memcpy(b, a, S);
        uint8_t keep[256] = {0};
        keep[2] = keep[3] = keep[7] = 1;
        atlas_postprocess_keep(a, nx, ny, nz, keep, PIPELINE_NET_KEEP_FRACTION);
        uint8_t *c = malloc(S);
        memcpy(c, b, S);
        pipeline_net_postprocess(table, b, nx, ny, nz);
        same_all &= memcmp(a, b, S) == 0;
        changed |= memcmp(c, b, S) != 0;
        free(c);
    }
    CHECK(same_all, "bounding-box post-processing equals atlas_postprocess_keep on 20 random label maps");
    CHECK(changed, "and the maps did need post-processing");
    /* a tube along z (label 5) missing slice 12: 2x2 voxels on slices 0-11 (48) and 13-28
     * (64); a 2-voxel speck (under 5% of 64) elsewhere */
    memset(a, 0, S);
    for (int k = 0; k < nz; k++)
        for (int j = 10; j < 12; j++)
            for (int i = 10; i < 12; i++)
                if (k != 12) a[i + (size_t)nx * (j + (size_t)ny * k)] = 5;
    a[30 + (size_t)nx * (30 + (size_t)ny * 5)] = a[31 + (size_t)nx * (30 + (size_t)ny * 5)] = 5;
    memcpy(b, a, S);
    pipeline_net_postprocess(table, b, nx, ny, nz);
    size_t tube = 0, speck = b[30 + (size_t)nx * (30 + (size_t)ny * 5)];
    for (size_t i = 0; i < S; i++) tube += b[i] == 5;
    CHECK(tube == 112 && speck == 0, "net: both pieces of a broken tube kept (%zu of 112 voxels), the speck "
          "dropped (%zu)", tube, speck);
    atlas_postprocess(a, nx, ny, nz, NULL);
    tube = 0;
    for (size_t i = 0; i < S; i++) tube += a[i] == 5;
    CHECK(tube == 64, "atlas: the largest piece alone (%zu voxels, 64 expected)", tube);
    free(a);
    free(b);
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: test_net_unit LABELS_TSV BUNDLE_DIR\n");
        return 2;
    }
    pipeline_labels *table = NULL;
    char err[512];
    if (pipeline_labels_load(argv[1], &table, err, sizeof err)) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    test_model_path();
    test_classes(table);
    test_postprocess(table);
    test_cache(argv[2]);
    test_method(table, argv[2]);
    pipeline_labels_free(table);
    printf("# %d checks, %d failed\n", ncheck, nfail);
    return nfail ? 1 : 0;
}
