/* nn/bundle.c — model bundles: a folder with model.json (graph: inputs, params, nodes with ops
 * and attributes and traced shapes; plus labels, modality, spacing, normalisation, patch size)
 * and model.safetensors (weights), as written by tools/train/export.py. Loading checks that JSON
 * and weights agree (every param present with the declared shape and dtype), that every op is
 * known, and re-infers every node's shape against the traced one, then folds batch norms.
 * The format is described in tools/train/README.md. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/status.h"
#include "nn/nnInt.h"

struct nn_model {
    nn_graph *g;
    nn_model_info info;
};

void nn_model_free(nn_model *m)
{
    if (!m) return;
    nn_graph_free(m->g);
    free(m);
}

const nn_model_info *nn_model_info_get(const nn_model *m) { return &m->info; }
const nn_graph *nn_model_graph(const nn_model *m) { return m->g; }

static char *read_text(const char *path, size_t *len, char *err, size_t errlen, int *rc)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        *rc = sn_errf(err, errlen, errno == ENOENT ? SN_ENOENT : SN_EIO, "%s: %s", path,
                      strerror(errno));
        return NULL;
    }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = n >= 0 ? malloc((size_t)n + 1) : NULL;
    if (!buf || fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        fclose(f);
        *rc = sn_errf(err, errlen, SN_EIO, "%s: cannot read", path);
        return NULL;
    }
    fclose(f);
    buf[n] = 0;
    *len = (size_t)n;
    return buf;
}

/* An int array attribute (or a scalar applied to every entry) into out[0..2]. */
static int attr_ints(const nn_json *attrs, const char *key, int *out)
{
    const nn_json *v = nn__json_get(attrs, key);
    if (!v) return 0;
    if (v->type == NN_JSON_NUMBER) {
        for (int i = 0; i < 3; i++) out[i] = (int)v->num;
        return 1;
    }
    if (v->type != NN_JSON_ARRAY || v->count > 3) return -1;
    int i = 0;
    for (const nn_json *c = v->child; c; c = c->next) out[i++] = (int)c->num;
    return 1;
}

int nn__parse_attrs(const nn_json *a, nn_op_desc *d, char *why, size_t whylen)
{
    if (!a) return 0;
    if (attr_ints(a, "kernel_size", d->k) < 0 || attr_ints(a, "stride", d->stride) < 0 ||
        attr_ints(a, "padding", d->pad) < 0 || attr_ints(a, "dilation", d->dilation) < 0 ||
        attr_ints(a, "output_padding", d->out_pad) < 0)
        return sn_errf(why, whylen, SN_EINVAL, "bad spatial attribute");
    d->groups = (int)nn__json_num(a, "groups", d->groups);
    d->eps = (float)nn__json_num(a, "eps", d->eps);
    d->slope = (float)nn__json_num(a, "negative_slope", d->slope);
    d->alpha = (float)nn__json_num(a, "alpha", d->alpha);
    d->beta = (float)nn__json_num(a, "beta", d->beta);
    d->ceil_mode = (int)nn__json_num(a, "ceil_mode", 0);
    d->count_include_pad = (int)nn__json_num(a, "count_include_pad", 1);
    d->align_corners = (int)nn__json_num(a, "align_corners", 0);
    d->axis = (int)nn__json_num(a, "axis", d->axis);
    const nn_json *sf = nn__json_get(a, "scale_factor");
    if (sf && sf->type == NN_JSON_NUMBER)
        for (int i = 0; i < 3; i++) d->scale[i] = sf->num;
    else if (sf && sf->type == NN_JSON_ARRAY && sf->count <= 3)
        for (int i = 0; i < sf->count; i++) d->scale[i] = nn__json_at(sf, i)->num;
    const nn_json *sz = nn__json_get(a, "size");
    if (sz && sz->type == NN_JSON_ARRAY && sz->count <= 3)
        for (int i = 0; i < sz->count; i++) d->size[i] = (int64_t)nn__json_at(sz, i)->num;
    const nn_json *sh = nn__json_get(a, "shape");
    if (sh) {
        if (sh->type != NN_JSON_ARRAY || sh->count < 1 || sh->count > NN_MAX_DIMS)
            return sn_errf(why, whylen, SN_EINVAL, "bad reshape target");
        d->shape_ndim = sh->count;
        for (int i = 0; i < sh->count; i++) d->shape[i] = (int64_t)nn__json_at(sh, i)->num;
    }
    const char *act = nn__json_str(a, "act", "none");
    d->act = !strcmp(act, "relu") ? NN_ACT_RELU
           : !strcmp(act, "leaky_relu") ? NN_ACT_LEAKY_RELU
           : !strcmp(act, "sigmoid") ? NN_ACT_SIGMOID : NN_ACT_NONE;
    return 0;
}

static int json_shape(const nn_json *a, int64_t *shape, int *ndim)
{
    if (!a || a->type != NN_JSON_ARRAY || a->count < 1 || a->count > 8) return -1;
    *ndim = a->count;
    for (int i = 0; i < a->count; i++) shape[i] = (int64_t)nn__json_at(a, i)->num;
    return 0;
}

/* name -> value id, with shapes for the self-check */
typedef struct namemap {
    char **names;
    int *ids;
    int *ndim;
    int64_t (*shape)[NN_MAX_DIMS];
    int n, cap;
} namemap;

static int map_add(namemap *m, const char *name, int id, int ndim, const int64_t *shape)
{
    if (m->n == m->cap) {
        int cap = m->cap ? 2 * m->cap : 128;
        char **nn = realloc(m->names, sizeof *nn * (size_t)cap);
        if (nn) m->names = nn;
        int *ii = realloc(m->ids, sizeof *ii * (size_t)cap);
        if (ii) m->ids = ii;
        int *nd = realloc(m->ndim, sizeof *nd * (size_t)cap);
        if (nd) m->ndim = nd;
        int64_t(*sh)[NN_MAX_DIMS] = realloc(m->shape, sizeof *sh * (size_t)cap);
        if (sh) m->shape = sh;
        if (!nn || !ii || !nd || !sh) return SN_ENOMEM;
        m->cap = cap;
    }
    m->names[m->n] = strdup(name);
    m->ids[m->n] = id;
    m->ndim[m->n] = ndim;
    memset(m->shape[m->n], 0, sizeof m->shape[m->n]);
    for (int i = 0; i < ndim && i < NN_MAX_DIMS; i++) m->shape[m->n][i] = shape[i];
    return m->names[m->n++] ? 0 : SN_ENOMEM;
}

static int map_find(const namemap *m, const char *name)
{
    for (int i = m->n - 1; i >= 0; i--)
        if (!strcmp(m->names[i], name)) return i;
    return -1;
}

static void map_free(namemap *m)
{
    for (int i = 0; i < m->n; i++) free(m->names[i]);
    free(m->names);
    free(m->ids);
    free(m->ndim);
    free(m->shape);
}

static int parse_info(const nn_json *j, nn_model_info *in, char *err, size_t errlen)
{
    snprintf(in->name, sizeof in->name, "%s", nn__json_str(j, "name", "model"));
    snprintf(in->modality, sizeof in->modality, "%s", nn__json_str(j, "modality", ""));
    in->spatial_dims = (int)nn__json_num(j, "spatial_dims", 3);
    in->in_channels = (int)nn__json_num(j, "in_channels", 1);
    in->out_channels = (int)nn__json_num(j, "out_channels", 0);
    if (in->spatial_dims != 2 && in->spatial_dims != 3)
        return sn_errf(err, errlen, SN_EINVAL, "model.json: spatial_dims must be 2 or 3");
    const nn_json *p = nn__json_get(j, "patch_size"), *s = nn__json_get(j, "target_spacing");
    int nsp = in->spatial_dims;
    if (!p || p->type != NN_JSON_ARRAY || p->count != nsp)
        return sn_errf(err, errlen, SN_EINVAL, "model.json: patch_size needs %d entries", nsp);
    for (int i = 0; i < 3; i++) {
        in->patch[i] = 1;
        in->spacing[i] = 0;
    }
    for (int i = 0; i < nsp; i++) {
        in->patch[3 - nsp + i] = (int64_t)nn__json_at(p, i)->num;
        if (in->patch[3 - nsp + i] < 1)
            return sn_errf(err, errlen, SN_EINVAL, "model.json: bad patch_size");
    }
    if (s && s->type == NN_JSON_ARRAY) {
        if (s->count != nsp && s->count != 3)
            return sn_errf(err, errlen, SN_EINVAL, "model.json: target_spacing needs %d entries",
                           nsp);
        for (int i = 0; i < s->count; i++) in->spacing[3 - s->count + i] = nn__json_at(s, i)->num;
    }
    const nn_json *nm = nn__json_get(j, "normalization");
    const char *kind = nn__json_str(nm, "type", "none");
    in->norm_mean = nn__json_num(nm, "mean", 0);
    in->norm_std = nn__json_num(nm, "std", 1);
    in->norm_per_volume = (int)nn__json_num(nm, "per_volume", 0);
    const nn_json *clip = nn__json_get(nm, "clip");
    if (clip && clip->count == 2) {
        in->norm_lo = nn__json_at(clip, 0)->num;
        in->norm_hi = nn__json_at(clip, 1)->num;
    }
    if (!strcmp(kind, "zscore")) in->norm = NN_NORM_ZSCORE;
    else if (!strcmp(kind, "ct")) in->norm = NN_NORM_CT;
    else if (!strcmp(kind, "none")) in->norm = NN_NORM_NONE;
    else if (!strcmp(kind, "robust")) {
        in->norm = NN_NORM_ROBUST;
        const char *mask = nn__json_str(nm, "mask", "all");
        if (!strcmp(mask, "above_mean")) in->norm_above_mean = 1;
        else if (strcmp(mask, "all"))
            return sn_errf(err, errlen, SN_EINVAL, "model.json: unknown normalization mask '%s'",
                           mask);
    }
    else return sn_errf(err, errlen, SN_EINVAL, "model.json: unknown normalization '%s'", kind);
    if (in->norm_std <= 0) return sn_errf(err, errlen, SN_EINVAL, "model.json: std must be > 0");
    const nn_json *labels = nn__json_get(j, "labels");
    for (const nn_json *l = labels ? labels->child : NULL; l; l = l->next) {
        if (in->n_labels >= 64) break;
        nn_label *lb = &in->labels[in->n_labels++];
        lb->value = (int)nn__json_num(l, "value", in->n_labels - 1);
        snprintf(lb->name, sizeof lb->name, "%s", nn__json_str(l, "name", ""));
        snprintf(lb->code, sizeof lb->code, "%s", nn__json_str(l, "code", ""));
    }
    return 0;
}

int nn_model_load(const char *dir, nn_model **out, char *err, size_t errlen)
{
    *out = NULL;
    int rc = 0;
    char path[4096];
    size_t len = 0;
    nn_json *j = NULL;
    nn_safetensors *st = NULL;
    namemap map = {0};
    nn_model *m = calloc(1, sizeof *m);
    if (!m) return sn_errf(err, errlen, SN_ENOMEM, "out of memory");
    snprintf(path, sizeof path, "%s/model.json", dir);
    char *text = read_text(path, &len, err, errlen, &rc);
    if (!text) goto fail;
    char jerr[200];
    j = nn__json_parse(text, len, jerr, sizeof jerr);
    free(text);
    if (!j || j->type != NN_JSON_OBJECT) {
        rc = sn_errf(err, errlen, SN_EINVAL, "%s: %s", path, j ? "not a JSON object" : jerr);
        goto fail;
    }
    const char *fmt = nn__json_str(j, "format", "");
    if (strcmp(fmt, "segnode-model")) {
        rc = sn_errf(err, errlen, SN_EINVAL, "%s: format is '%s', expected 'segnode-model'", path,
                     fmt);
        goto fail;
    }
    if (nn__json_num(j, "version", 0) != 1) {
        rc = sn_errf(err, errlen, SN_EUNSUPPORTED, "%s: unsupported version", path);
        goto fail;
    }
    rc = parse_info(j, &m->info, err, errlen);
    if (rc) goto fail;
    snprintf(path, sizeof path, "%s/%s", dir, nn__json_str(j, "weights", "model.safetensors"));
    rc = nn_safetensors_open(path, &st, err, errlen);
    if (rc) goto fail;
    if ((rc = nn_graph_new(&m->g))) {
        rc = sn_errf(err, errlen, rc, "out of memory");
        goto fail;
    }
    const nn_json *g = nn__json_get(j, "graph");
    const nn_json *inputs = nn__json_get(g, "inputs"), *params = nn__json_get(g, "params");
    const nn_json *nodes = nn__json_get(g, "nodes"), *outputs = nn__json_get(g, "outputs");
    if (!inputs || inputs->type != NN_JSON_ARRAY || inputs->count != 1 || !nodes ||
        nodes->type != NN_JSON_ARRAY || !outputs || outputs->type != NN_JSON_ARRAY ||
        outputs->count < 1) {
        rc = sn_errf(err, errlen, SN_EINVAL, "model.json: graph needs one input, nodes and "
                     "outputs");
        goto fail;
    }
    {
        const nn_json *in = nn__json_at(inputs, 0);
        int64_t shape[8];
        int nd;
        if (json_shape(nn__json_get(in, "shape"), shape, &nd) || nd > NN_MAX_DIMS ||
            nd != m->info.spatial_dims + 2) {
            rc = sn_errf(err, errlen, SN_EINVAL, "model.json: input shape must have %d dims",
                         m->info.spatial_dims + 2);
            goto fail;
        }
        const char *nm = nn__json_str(in, "name", "x");
        int id = nn_graph_input(m->g, nm, nd, shape);
        if (id < 0 || map_add(&map, nm, id, nd, shape)) {
            rc = sn_errf(err, errlen, SN_ENOMEM, "out of memory");
            goto fail;
        }
        if (shape[1] != m->info.in_channels) {
            rc = sn_errf(err, errlen, SN_EINVAL, "model.json: input has %lld channels, "
                         "in_channels says %d", (long long)shape[1], m->info.in_channels);
            goto fail;
        }
    }
    /* params: each must be in the safetensors file with the declared shape and dtype */
    for (const nn_json *p = params ? params->child : NULL; p; p = p->next) {
        int64_t shape[8];
        int nd;
        if (json_shape(nn__json_get(p, "shape"), shape, &nd)) {
            rc = sn_errf(err, errlen, SN_EINVAL, "model.json: param '%s' has no shape", p->key);
            goto fail;
        }
        const nn_st_entry *e = nn_safetensors_find(st, p->key);
        if (!e) {
            rc = sn_errf(err, errlen, SN_EINVAL, "weights: tensor '%s' (declared in model.json) "
                         "is missing from the safetensors file", p->key);
            goto fail;
        }
        const char *dt = nn__json_str(p, "dtype", "F32");
        if (strcmp(dt, e->dtype)) {
            rc = sn_errf(err, errlen, SN_EINVAL, "weights: tensor '%s' is %s, model.json says %s",
                         p->key, e->dtype, dt);
            goto fail;
        }
        int same = e->ndim == nd;
        for (int i = 0; same && i < nd; i++) same = e->shape[i] == shape[i];
        if (!same || nd > NN_MAX_DIMS) {
            char a[96] = "", b[96] = "";
            for (int i = 0; i < e->ndim; i++)
                snprintf(a + strlen(a), sizeof a - strlen(a), "%s%lld", i ? "x" : "",
                         (long long)e->shape[i]);
            for (int i = 0; i < nd; i++)
                snprintf(b + strlen(b), sizeof b - strlen(b), "%s%lld", i ? "x" : "",
                         (long long)shape[i]);
            rc = sn_errf(err, errlen, SN_EINVAL, "weights: tensor '%s' has shape %s, model.json "
                         "says %s", p->key, a, b);
            goto fail;
        }
        float *f = NULL;
        if ((rc = nn_st_entry_to_f32(e, &f, err, errlen))) goto fail;
        int id = nn_graph_const(m->g, p->key, nd, shape, f);
        free(f);
        if (id < 0 || map_add(&map, p->key, id, nd, shape)) {
            rc = sn_errf(err, errlen, SN_ENOMEM, "out of memory");
            goto fail;
        }
    }
    /* nodes, with shapes re-inferred and compared to the traced ones */
    for (const nn_json *nj = nodes->child; nj; nj = nj->next) {
        const char *name = nn__json_str(nj, "name", "?"), *opname = nn__json_str(nj, "op", "");
        int op = nn_op_from_name(opname);
        if (op < 0) {
            rc = sn_errf(err, errlen, SN_EINVAL, "model.json: node '%s': unknown op '%s'", name,
                         opname);
            goto fail;
        }
        nn_op_desc d;
        nn_op_desc_init(&d, (nn_op_type)op);
        char why[200];
        if (nn__parse_attrs(nn__json_get(nj, "attrs"), &d, why, sizeof why)) {
            rc = sn_errf(err, errlen, SN_EINVAL, "model.json: node '%s': %s", name, why);
            goto fail;
        }
        const nn_json *ins = nn__json_get(nj, "inputs");
        int ids[NN_MAX_INPUTS], nin = 0, nd[NN_MAX_INPUTS];
        int64_t sh[NN_MAX_INPUTS][NN_MAX_DIMS];
        for (const nn_json *c = ins ? ins->child : NULL; c; c = c->next) {
            int k = c->type == NN_JSON_STRING ? map_find(&map, c->str) : -1;
            if (k < 0 || nin >= NN_MAX_INPUTS) {
                rc = sn_errf(err, errlen, SN_EINVAL, "model.json: node '%s': input '%s' is not "
                             "defined before it (missing weight or node)", name,
                             c->type == NN_JSON_STRING ? c->str : "?");
                goto fail;
            }
            ids[nin] = map.ids[k];
            nd[nin] = map.ndim[k];
            memcpy(sh[nin], map.shape[k], sizeof sh[nin]);
            nin++;
        }
        int ond;
        int64_t osh[NN_MAX_DIMS];
        int id = nn_graph_node(m->g, name, &d, ids, nin, why, sizeof why);
        if (id >= 0)
            id = nn__infer_shape(&d, nin, nd, (const int64_t(*)[NN_MAX_DIMS])sh, &ond, osh, why,
                                 sizeof why) ? -1 : id;
        if (id < 0) {
            rc = sn_errf(err, errlen, SN_EINVAL, "model.json: node '%s': %s", name, why);
            goto fail;
        }
        int64_t tsh[8];
        int tnd;
        if (!json_shape(nn__json_get(nj, "shape"), tsh, &tnd)) {
            int same = tnd == ond;
            for (int i = 0; same && i < ond; i++) same = tsh[i] == osh[i];
            if (!same) {
                rc = sn_errf(err, errlen, SN_EINVAL, "model.json: node '%s' (%s): traced shape "
                             "differs from the inferred one (exporter and runtime disagree)",
                             name, opname);
                goto fail;
            }
        }
        if (map_add(&map, name, id, ond, osh)) {
            rc = sn_errf(err, errlen, SN_ENOMEM, "out of memory");
            goto fail;
        }
    }
    for (const nn_json *o = outputs->child; o; o = o->next) {
        int k = o->type == NN_JSON_STRING ? map_find(&map, o->str) : -1;
        if (k < 0) {
            rc = sn_errf(err, errlen, SN_EINVAL, "model.json: output '%s' is not a node",
                         o->type == NN_JSON_STRING ? o->str : "?");
            goto fail;
        }
        nn_graph_output(m->g, map.ids[k]);
        if (o == outputs->child && m->info.out_channels == 0)
            m->info.out_channels = (int)map.shape[k][1];
    }
    rc = nn_graph_optimize(m->g, err, errlen);
    if (rc) goto fail;
    map_free(&map);
    nn_safetensors_close(st);
    nn__json_free(j);
    *out = m;
    return 0;
fail:
    map_free(&map);
    nn_safetensors_close(st);
    nn__json_free(j);
    nn_model_free(m);
    return rc;
}
