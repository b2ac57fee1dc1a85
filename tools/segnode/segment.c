/* tools/segnode/segment.c — `segnode segment`: turn a label map (a DICOM SEG or a NIfTI label
 * image on the series' grid) into a DICOM SEG for a series folder, offline. Reads the series
 * (pipeline/volume.h), the labels (pipeline/segread.h or pipeline/niftiread.h), and writes with
 * the product SEG writer (pipeline/segwrite.h). --method atlas runs the atlas method with the
 * library's atlases (tools/segnode/atlas.c); --method net runs a model bundle through the node's
 * own "net" method (pipeline/method_net.h: inference, then its post-processing of components and
 * holes), so the SEG is what a route with `method = net` sends; --method both runs the node's
 * "both" method (pipeline/method_both.c) with the bundle and the library's atlases, as a route
 * with `method = both`. Exit codes: 0 ok, 1 failure (bad input, write error), 2 usage. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/status.h"
#include "common/util.h"
#include "pipeline/labels.h"
#include "pipeline/niftiread.h"
#include "pipeline/segread.h"
#include "pipeline/segwrite.h"
#include "pipeline/volume.h"
#include "tools/segnode/cli.h"
#ifdef SEGNODE_HAVE_ATLAS
#include "tools/segnode/atlas.h"
#endif
#ifdef SEGNODE_HAVE_METHODS
#include "common/log.h"
#include "nn/nn.h"
#include "pipeline/method.h"
#endif

static void usage(FILE *f)
{
    fprintf(f,
            "usage: segnode segment --labels FILE.dcm|FILE.nii[.gz] --out SEG.dcm [options] SERIES_DIR\n"
            "       segnode segment --method atlas --atlases NAME[,NAME...] [--fusion majority|local|jlf]\n"
            "                       [--select-k K|all|auto] --out SEG.dcm SERIES_DIR\n"
            "       segnode segment --method net --model DIR --out SEG.dcm SERIES_DIR\n"
            "       segnode segment --method both --model DIR --atlases NAME[,NAME...] [--select-k K|all|auto]\n"
            "                       --out SEG.dcm SERIES_DIR\n"
            "Write a DICOM Segmentation for the series in SERIES_DIR from a label map on its grid:\n"
            "a SEG (BINARY or FRACTIONAL; segments mapped to labels by their codes) or a NIfTI-1\n"
            "label image whose affine matches the series'. The SEG joins the series' study.\n"
            "options:\n"
            "  --keep-empty               write empty frames too (default: omit them)\n"
            "  --series-description TEXT  Series Description (default: \"segnode label import segmentation\")\n"
            "  --series-number N          Series Number (default 900)\n"
            "  --series UID               the series to read when the folder holds several\n"
            "  --fusion M                 atlas method: label fusion (default local, as routes use it)\n"
            "  --select-k K               register in full only the K atlases most similar after\n"
            "                             affine (1..number of atlases), every atlas (all), or one\n"
            "                             per anatomy when atlases share one (auto, the default),\n"
            "                             as a route's select_k\n"
            "  --refine R                 atlas, both: intensity (default: the fused atlas votes\n"
            "                             refined on the series' own intensities) or none, as a\n"
            "                             route's refine\n"
            "  --model DIR                net, both: the model bundle (as a route's model)\n"
            "  --device D                 every method: auto (default: the GPU when there is one, else\n"
            "                             or when it fails the CPU), cpu, cuda\n"
            "  --label-table FILE         label code table (default: $SEGNODE_LABELS, else\n"
            "                             labels.tsv beside the config file, else the shipped one)\n");
}

static int ends_with(const char *s, const char *suf)
{
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && strcmp(s + a - b, suf) == 0;
}

/* Table file plus one line per segment of `seg` that the table lacks (match NONE), so that the
 * writer can code them as the source SEG did. Writes a temp file into tmp[] and returns 0. */
static int extend_table(const char *table_path, const pipeline_seg *seg, char tmp[64], char *err, size_t errlen)
{
    snprintf(tmp, 64, "/tmp/segnode-labels-XXXXXX");
    int fd = mkstemp(tmp);
    if (fd < 0) return sn_errf(err, errlen, SN_EIO, "cannot create a temporary label table");
    FILE *out = fdopen(fd, "w"), *in = fopen(table_path, "r");
    if (!out || !in) {
        if (out) fclose(out); else close(fd);
        if (in) fclose(in);
        unlink(tmp);
        return sn_errf(err, errlen, SN_EIO, "cannot copy the label table %s", table_path);
    }
    char line[1024];
    while (fgets(line, sizeof line, in)) fputs(line, out);
    fclose(in);
    fputc('\n', out);
    for (int i = 0; i < seg->nsegments; i++) {
        const pipeline_seg_segment *g = &seg->segments[i];
        int dup = 0;
        for (int j = 0; j < i; j++) dup |= seg->segments[j].label_value == g->label_value;
        if (g->match != PIPELINE_SEG_MATCH_NONE || dup) continue;
        if (!g->type.value[0] || !g->category.value[0]) {
            fclose(out);
            unlink(tmp);
            return sn_errf(err, errlen, SN_EINVAL, "segment %d '%s' has no Segmented Property Type/Category code",
                           g->number, g->label);
        }
        char name[32];
        size_t n = 0;
        for (const char *p = g->label[0] ? g->label : g->type.meaning; *p && n < 20; p++)
            name[n++] = isalnum((unsigned char)*p) ? (char)tolower((unsigned char)*p) : '_';
        name[n] = 0;
        fprintf(out, "%d\t%s_%d\t%s:%s:%s\t%s:%s:%s\t", g->label_value, n ? name : "segment", g->label_value,
                g->category.scheme, g->category.value, g->category.meaning, g->type.scheme, g->type.value,
                g->type.meaning);
        if (g->modifier.value[0])
            fprintf(out, "%s:%s:%s", g->modifier.scheme, g->modifier.value, g->modifier.meaning);
        else
            fputc('-', out);
        fprintf(out, "\t128,128,128\n");
    }
    if (fclose(out)) {
        unlink(tmp);
        return sn_errf(err, errlen, SN_EIO, "cannot write a temporary label table");
    }
    return 0;
}

#ifdef SEGNODE_HAVE_METHODS
/* `v` segmented by the node's "net" or "both" method as a route with that method, `model = DIR`
 * and, for both, `atlases = NAMES` (the library of the config's storage), select_k and refine (no
 * labels key: every bundle label the table knows). Runs on `device` auto (the GPU when there is
 * one, the CPU when it fails, as the worker falls back), cpu or cuda. Prints the job's note and
 * stage times. Returns a CLI exit code. */
static int method_segment(const char *name, const pipeline_volume *v, const pipeline_labels *table,
                          const char *model, const char *atlases, int select_k, int refine,
                          const char *device, uint16_t *out)
{
    const int automatic = !device || !strcmp(device, "auto");   /* checked by the caller */
    pipeline_method_register_builtin();
    pipeline_method m;
    if (pipeline_method_find(name, &m) != SN_OK) {
        fprintf(stderr, "segnode segment: method %s not available in this build\n", name);
        return CLI_EXIT_USAGE;
    }
    sn_route *r = calloc(1, sizeof *r);
    sn_config *cfg = NULL;
    if (!r) return CLI_EXIT_FAIL;
    snprintf(r->name, sizeof r->name, "segment");
    r->method = strcmp(name, "both") ? SN_METHOD_NET : SN_METHOD_BOTH;
    r->select_k = select_k;
    r->refine = refine;
    /* a path on the command line is relative to the working directory (a route's, with a config,
     * to the config's folder: pipeline_method_model_path); a shipped name stays as given */
    char here[4096];
    if (model[0] != '/' && realpath(model, here))
        model = here;
    if ((size_t)snprintf(r->model, sizeof r->model, "%s", model) >= sizeof r->model) {
        fprintf(stderr, "segnode segment: --model path too long\n");
        free(r);
        return CLI_EXIT_USAGE;
    }
#ifdef SEGNODE_HAVE_ATLAS
    if (atlases) {   /* both: the route's atlases, split as `--method atlas` splits them */
        char list[1024];
        const char *nm[PIPELINE_ATLAS_MAX];
        int na = segnode_atlas_names(atlases, list, sizeof list, nm);
        for (int i = 0; i < na; i++, r->atlases.n++)
            if ((size_t)snprintf(r->atlases.item[i], sizeof r->atlases.item[0], "%s", nm[i]) >=
                sizeof r->atlases.item[0]) {
                fprintf(stderr, "segnode segment: atlas name '%s' too long\n", nm[i]);
                free(r);
                return CLI_EXIT_USAGE;
            }
        if (na < 0 || cli_load_config(cli_g.config_path, &cfg)) {   /* the library: STORAGE/atlases */
            free(r);
            return CLI_EXIT_USAGE;
        }
    }
#endif
    pipeline_method_ctx ctx;
    int gpu = automatic ? nn_cuda_devices(NULL, 0) > 0 : !strcmp(device, "cuda"), rc;
    char err[1024] = "";
    uint16_t *lab = NULL;
    for (;;) {
        memset(&ctx, 0, sizeof ctx);
        ctx.cfg = cfg;
        ctx.route = r;
        ctx.table = table;
        ctx.device = gpu ? "cuda:0" : "cpu";
        ctx.device_index = gpu ? 0 : -1;
        rc = m.run(&ctx, v, &lab, err, sizeof err);
        if (rc != SN_EDEVICE || !automatic || !gpu)
            break;
        SN_LOG_WARN(name, "%s; running on the CPU", err);   /* as the worker falls back */
        gpu = 0;
    }
    free(r);
    if (cfg) sn_config_unref(cfg);
    if (rc) {
        fprintf(stderr, "segnode segment: %s\n", err);
        return rc == SN_EINVAL || rc == SN_ENOENT ? CLI_EXIT_USAGE : CLI_EXIT_FAIL;
    }
    memcpy(out, lab, (size_t)v->nx * v->ny * v->nz * sizeof *out);
    free(lab);
    printf("%s: %s", name, ctx.note);
    for (int i = 0; i < ctx.nstages; i++)
        printf("%s %s %.0f ms", i ? "," : ";", ctx.stages[i].name, ctx.stages[i].ms);
    printf("\n");
    return CLI_EXIT_OK;
}
#endif

int segnode_segment(int argc, char **argv)
{
    const char *labels_path = NULL, *out_path = NULL, *desc = NULL, *series = NULL, *method = NULL,
               *dir = NULL, *table_path = NULL, *atlases = NULL, *fusion = NULL,
               *device = NULL, *model = NULL;
    int keep_empty = 0, series_number = 900, select_k = SN_SELECT_K_AUTO;
    const char *select_k_arg = NULL, *refine_arg = NULL;
    int refine = 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int g = cli_take_global(argc, argv, &i);
        if (g < 0) return CLI_EXIT_USAGE;
        if (g > 0) continue;
        if (cli_is_help(a)) {
            usage(stdout);
            return CLI_EXIT_OK;
        } else if (!strcmp(a, "--labels") && i + 1 < argc) {
            labels_path = argv[++i];
        } else if (!strcmp(a, "--out") && i + 1 < argc) {
            out_path = argv[++i];
        } else if (!strcmp(a, "--keep-empty")) {
            keep_empty = 1;
        } else if (!strcmp(a, "--series-description") && i + 1 < argc) {
            desc = argv[++i];
        } else if (!strcmp(a, "--series-number") && i + 1 < argc) {
            series_number = atoi(argv[++i]);
        } else if (!strcmp(a, "--series") && i + 1 < argc) {
            series = argv[++i];
        } else if (!strcmp(a, "--label-table") && i + 1 < argc) {
            table_path = argv[++i];
        } else if (!strcmp(a, "--atlases") && i + 1 < argc) {
            atlases = argv[++i];
        } else if (!strcmp(a, "--fusion") && i + 1 < argc) {
            fusion = argv[++i];
        } else if (!strcmp(a, "--select-k") && i + 1 < argc) {
            select_k_arg = argv[++i];
        } else if (!strcmp(a, "--refine") && i + 1 < argc) {
            refine_arg = argv[++i];
        } else if (!strcmp(a, "--method") && i + 1 < argc) {
            method = argv[++i];
        } else if (!strcmp(a, "--device") && i + 1 < argc) {
            device = argv[++i];
        } else if (!strcmp(a, "--model") && i + 1 < argc) {
            model = argv[++i];
        } else if (a[0] == '-' && a[1]) {
            fprintf(stderr, "segnode segment: unknown option %s\n", a);
            usage(stderr);
            return CLI_EXIT_USAGE;
        } else if (!dir) {
            dir = a;
        } else {
            usage(stderr);
            return CLI_EXIT_USAGE;
        }
    }
    const int net = method && !strcmp(method, "net"), both = method && !strcmp(method, "both");
    if (method && !net && !both && strcmp(method, "atlas")) {
        fprintf(stderr, "segnode segment: unknown method %s (atlas, net, both)\n", method);
        return CLI_EXIT_USAGE;
    }
    if (net) {
#ifndef SEGNODE_HAVE_METHODS
        fprintf(stderr, "segnode segment: method net not available in this build\n");
        return CLI_EXIT_USAGE;
#endif
        if (!model || labels_path || atlases || fusion || select_k_arg || refine_arg) {
            fprintf(stderr, "segnode segment: --method net needs --model DIR (and no --labels, --atlases, "
                    "--fusion, --select-k or --refine)\n");
            return CLI_EXIT_USAGE;
        }
        labels_path = "(net)";
    } else if (both) {
#if !defined(SEGNODE_HAVE_METHODS) || !defined(SEGNODE_HAVE_ATLAS)
        fprintf(stderr, "segnode segment: method both not available in this build\n");
        return CLI_EXIT_USAGE;
#endif
        if (!model || !atlases || labels_path || fusion) {
            fprintf(stderr, "segnode segment: --method both needs --model DIR and --atlases NAME[,NAME...] "
                    "(and no --labels or --fusion: a route's both takes the default fusion)\n");
            return CLI_EXIT_USAGE;
        }
    } else if (model) {
        fprintf(stderr, "segnode segment: --model applies to --method net and both\n");
        return CLI_EXIT_USAGE;
    }
#ifndef SEGNODE_HAVE_ATLAS
    if (method && !net) {
        fprintf(stderr, "segnode segment: method %s not available in this build\n", method);
        return CLI_EXIT_USAGE;
    }
#endif
    if (method && !net && !both && (!atlases || labels_path)) {
        fprintf(stderr, "segnode segment: --method atlas needs --atlases NAME[,NAME...] (and no --labels)\n");
        return CLI_EXIT_USAGE;
    }
#ifdef SEGNODE_HAVE_ATLAS
    if (method && !net) {   /* before the series is read */
        char list[1024];
        const char *nm[PIPELINE_ATLAS_MAX];
        int na = segnode_atlas_names(atlases, list, sizeof list, nm);
        if (na < 0) return CLI_EXIT_USAGE;
        if (select_k_arg && !strcmp(select_k_arg, "auto")) {
            select_k = SN_SELECT_K_AUTO;
        } else if (select_k_arg && !strcmp(select_k_arg, "all")) {
            select_k = 0;
        } else if (select_k_arg) {
            char *end;
            long k = strtol(select_k_arg, &end, 10);
            if (*select_k_arg == '\0' || *end || k < 0 || k > na) {   /* 0: all, as in a route */
                fprintf(stderr, "segnode segment: --select-k must be auto, all or 1 to %d (the atlases named), "
                        "got '%s'\n", na, select_k_arg);
                return CLI_EXIT_USAGE;
            }
            select_k = (int)k;
        }
    }
#endif
    if (select_k_arg && !method) {
        fprintf(stderr, "segnode segment: --select-k applies to --method atlas and both\n");
        return CLI_EXIT_USAGE;
    }
    if (refine_arg) {
        if (!method) {
            fprintf(stderr, "segnode segment: --refine applies to --method atlas and both\n");
            return CLI_EXIT_USAGE;
        }
        if (strcmp(refine_arg, "intensity") && strcmp(refine_arg, "none")) {
            fprintf(stderr, "segnode segment: --refine must be intensity or none, got '%s'\n", refine_arg);
            return CLI_EXIT_USAGE;
        }
        refine = !strcmp(refine_arg, "intensity");
    }
    /* both methods take it; checked before the series is read */
    if (device && strcmp(device, "auto") && strcmp(device, "cpu") && strcmp(device, "cuda")) {
        fprintf(stderr, "segnode segment: --device must be auto, cpu or cuda\n");
        return CLI_EXIT_USAGE;
    }
    if (method && !net) labels_path = both ? "(both)" : "(atlas)";
    if (!labels_path || !out_path || !dir) {
        usage(stderr);
        return CLI_EXIT_USAGE;
    }
    if (series_number <= 0) {
        fprintf(stderr, "segnode segment: --series-number must be a positive integer\n");
        return CLI_EXIT_USAGE;
    }
    cli_apply_log_level();
    char table_buf[4096];
    if (!table_path) {
        pipeline_labels_default_path(cli_config_source(cli_g.config_path), table_buf, sizeof table_buf);
        table_path = table_buf;
    }

    char err[1024] = "", tmp_table[64] = "";
    pipeline_labels *table = NULL;
    pipeline_volume *v = NULL;
    pipeline_seg *seg = NULL;
    uint16_t *lab = NULL;
    int rc, exit_code = CLI_EXIT_FAIL;
    if ((rc = pipeline_labels_load(table_path, &table, err, sizeof err))) {
        fprintf(stderr, "segnode segment: label table: %s\n", err);
        return CLI_EXIT_USAGE;
    }
    pipeline_volume_opts o;
    pipeline_volume_opts_default(&o);
    o.series_uid = series;
    if ((rc = pipeline_volume_read_dir(dir, &o, &v, err, sizeof err))) {
        fprintf(stderr, "segnode segment: %s\n", err);
        goto out;
    }
    const size_t n = (size_t)v->nx * v->ny * v->nz;
    if (!(lab = calloc(n, sizeof *lab))) {
        fprintf(stderr, "segnode segment: out of memory\n");
        goto out;
    }
    if (net || both) {
#ifdef SEGNODE_HAVE_METHODS
        rc = method_segment(method, v, table, model, both ? atlases : NULL, select_k, refine, device, lab);
        if (rc) {
            exit_code = rc;
            goto out;
        }
#endif
    } else if (method) {
#ifdef SEGNODE_HAVE_ATLAS
        rc = segnode_atlas_segment(v, atlases, fusion, select_k, refine, device, lab);
        if (rc) {
            exit_code = rc;
            goto out;
        }
#endif
    } else if (ends_with(labels_path, ".nii") || ends_with(labels_path, ".nii.gz")) {
        rc = pipeline_nifti_read_labels(labels_path, v, lab, err, sizeof err);
    } else {
        pipeline_seg_import_report rep;
        rc = pipeline_seg_read(labels_path, &seg, err, sizeof err);
        if (!rc) rc = pipeline_seg_to_labels(seg, v, table, lab, &rep, err, sizeof err);
        if (!rc) {
            for (int i = 0; i < seg->nsegments; i++) {
                const pipeline_seg_segment *g = &seg->segments[i];
                static const char *how[] = {"not in the table: new label", "code", "code meaning", "name"};
                printf("segment %d '%s' (%s:%s %s) -> label %d (%s)\n", g->number, g->label, g->type.scheme,
                       g->type.value, g->type.meaning, g->label_value, how[g->match]);
            }
            if (rep.overlap_voxels)
                printf("%zu voxels claimed by several segments: the higher segment number kept\n", rep.overlap_voxels);
            if (rep.new_labels) {
                rc = extend_table(table_path, seg, tmp_table, err, sizeof err);
                if (!rc) {
                    pipeline_labels_free(table);
                    table = NULL;
                    rc = pipeline_labels_load(tmp_table, &table, err, sizeof err);
                }
            }
        }
    }
    if (rc) {
        fprintf(stderr, "segnode segment: %s\n", err);
        goto out;
    }
    pipeline_seg_labelmap lm;
    memset(&lm, 0, sizeof lm);
    lm.nx = v->nx, lm.ny = v->ny, lm.nz = v->nz, lm.bytes_per_voxel = 2, lm.data = lab;
    pipeline_seg_write_opts wo;
    pipeline_seg_write_opts_default(&wo);
    wo.algorithm_name = net    ? "segnode net"
                        : both ? "segnode net + multi-atlas"
                        : method ? "segnode multi-atlas"
                                 : "segnode label import";
    wo.method = net || both ? method : method ? "segnode multi-atlas MIND-SSC convexAdam fusion" : "segnode label import";
    wo.series_description = desc;
    wo.keep_empty = keep_empty;
    wo.series_number = series_number;
    pipeline_seg_write_info info;
    if ((rc = pipeline_seg_write_series(out_path, v, dir, &lm, table, &wo, &info, err, sizeof err))) {
        fprintf(stderr, "segnode segment: %s\n", err);
        goto out;
    }
    printf("wrote %s: %d segments, %d frames (%d empty frames %s), series %s, %dx%dx%d source %s\n", out_path,
           info.segments, info.frames, info.omitted_frames, keep_empty ? "kept" : "omitted", info.series_uid, v->nx,
           v->ny, v->nz, v->series_uid);
    exit_code = CLI_EXIT_OK;
out:
    if (tmp_table[0]) unlink(tmp_table);
    free(lab);
    pipeline_seg_free(seg);
    pipeline_volume_free(v);
    pipeline_labels_free(table);
    return exit_code;
}
