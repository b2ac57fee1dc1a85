/* nn/graph.c — graphs (values and nodes), shape inference, the optimisation pass (batch norm
 * folded into convolutions, activations fused into their producer) and sessions: a graph bound
 * to a backend for one input shape with every buffer allocated up front (intermediates share
 * buffers by lifetime) so that running allocates nothing. Ops themselves live in the backends. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/status.h"
#include "common/util.h"
#include "nn/nnInt.h"

enum { VAL_INPUT = 0, VAL_CONST = 1, VAL_NODE = 2 };

typedef struct gval {
    int kind;
    char *name;
    int ndim;
    int64_t shape[NN_MAX_DIMS];   /* inputs and constants; node shapes are inferred per session */
    float *data;                  /* VAL_CONST, owned */
} gval;

typedef struct gnode {
    char *name;
    nn_op_desc op;
    int n_in;
    int in[NN_MAX_INPUTS];
    int out;
    int dead;
} gnode;

struct nn_graph {
    gval *vals;
    int n_vals, cap_vals;
    gnode *nodes;
    int n_nodes, cap_nodes;
    int outputs[16];
    int n_outputs;
    int inputs[8];
    int n_inputs;
};

int nn_graph_new(nn_graph **out)
{
    *out = calloc(1, sizeof **out);
    return *out ? 0 : SN_ENOMEM;
}

void nn_graph_free(nn_graph *g)
{
    if (!g) return;
    for (int i = 0; i < g->n_vals; i++) {
        free(g->vals[i].name);
        free(g->vals[i].data);
    }
    for (int i = 0; i < g->n_nodes; i++) free(g->nodes[i].name);
    free(g->vals);
    free(g->nodes);
    free(g);
}

int nn_graph_node_count(const nn_graph *g)
{
    int n = 0;
    for (int i = 0; i < g->n_nodes; i++) n += !g->nodes[i].dead;
    return n;
}

static int add_val(nn_graph *g, int kind, const char *name, int ndim, const int64_t *shape)
{
    if (g->n_vals == g->cap_vals) {
        int cap = g->cap_vals ? 2 * g->cap_vals : 64;
        gval *v = realloc(g->vals, sizeof *v * (size_t)cap);
        if (!v) return SN_ENOMEM;
        g->vals = v;
        g->cap_vals = cap;
    }
    gval *v = &g->vals[g->n_vals];
    memset(v, 0, sizeof *v);
    v->kind = kind;
    v->name = strdup(name ? name : "");
    if (!v->name) return SN_ENOMEM;
    if (ndim < 0 || ndim > NN_MAX_DIMS) return SN_EINVAL;
    v->ndim = ndim;
    for (int i = 0; i < ndim; i++) v->shape[i] = shape[i];
    return g->n_vals++;
}

int nn_graph_input(nn_graph *g, const char *name, int ndim, const int64_t *shape)
{
    if (g->n_inputs >= 8 || ndim < 1) return SN_EINVAL;
    int id = add_val(g, VAL_INPUT, name, ndim, shape);
    if (id >= 0) g->inputs[g->n_inputs++] = id;
    return id;
}

int nn_graph_const(nn_graph *g, const char *name, int ndim, const int64_t *shape,
                   const float *data)
{
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) n *= shape[i];
    float *copy = malloc(sizeof(float) * (size_t)(n > 0 ? n : 1));
    if (!copy) return SN_ENOMEM;
    memcpy(copy, data, sizeof(float) * (size_t)n);
    int id = add_val(g, VAL_CONST, name, ndim, shape);
    if (id < 0) {
        free(copy);
        return id;
    }
    g->vals[id].data = copy;
    return id;
}

static int arity_ok(const nn_op_desc *op, int n)
{
    switch (op->type) {
    case NN_OP_CONV: case NN_OP_CONV_TRANSPOSE: case NN_OP_LINEAR: return n == 2 || n == 3;
    case NN_OP_BATCH_NORM: return n == 3 || n == 5;
    case NN_OP_INSTANCE_NORM: case NN_OP_GROUP_NORM: return n == 1 || n == 3;
    case NN_OP_ADD: case NN_OP_MUL: return n == 2;
    case NN_OP_CONCAT: return n >= 1 && n <= NN_MAX_INPUTS;
    case NN_OP_WARP: case NN_OP_SSD_COST: return n == 2;
    case NN_OP_WARP_SSD_GRAD: return n == 3;
    default: return n == 1;
    }
}

int nn_graph_node(nn_graph *g, const char *name, const nn_op_desc *op, const int *inputs,
                  int n_inputs, char *err, size_t errlen)
{
    if ((unsigned)op->type >= NN_OP_COUNT)
        return sn_errf(err, errlen, SN_EINVAL, "node %s: unknown op %d", name ? name : "?",
                       (int)op->type);
    if (!arity_ok(op, n_inputs))
        return sn_errf(err, errlen, SN_EINVAL, "node %s: op %s cannot take %d inputs",
                       name ? name : "?", nn_op_name(op->type), n_inputs);
    for (int i = 0; i < n_inputs; i++)
        if (inputs[i] < 0 || inputs[i] >= g->n_vals)
            return sn_errf(err, errlen, SN_EINVAL, "node %s: input %d is not a value",
                           name ? name : "?", i);
    if (g->n_nodes == g->cap_nodes) {
        int cap = g->cap_nodes ? 2 * g->cap_nodes : 64;
        gnode *n = realloc(g->nodes, sizeof *n * (size_t)cap);
        if (!n) return sn_errf(err, errlen, SN_ENOMEM, "out of memory");
        g->nodes = n;
        g->cap_nodes = cap;
    }
    int out = add_val(g, VAL_NODE, name, 0, NULL);
    if (out < 0) return sn_errf(err, errlen, out, "out of memory");
    gnode *n = &g->nodes[g->n_nodes];
    memset(n, 0, sizeof *n);
    n->name = strdup(name ? name : "");
    n->op = *op;
    n->n_in = n_inputs;
    memcpy(n->in, inputs, sizeof(int) * (size_t)n_inputs);
    n->out = out;
    g->n_nodes++;
    return out;
}

int nn_graph_output(nn_graph *g, int value)
{
    if (value < 0 || value >= g->n_vals || g->n_outputs >= 16) return SN_EINVAL;
    g->outputs[g->n_outputs++] = value;
    return 0;
}

/* ---- shape inference ------------------------------------------------------------------------- */

int nn__infer_shape(const nn_op_desc *op, int n_in, const int *in_ndim,
                    const int64_t (*in_shape)[NN_MAX_DIMS], int *out_ndim,
                    int64_t os[NN_MAX_DIMS], char *err, size_t errlen)
{
    const int64_t *x = in_shape[0];
    int nd = in_ndim[0], nsp = nd - 2;
    *out_ndim = nd;
    for (int i = 0; i < nd; i++) os[i] = x[i];
    switch (op->type) {
    case NN_OP_CONV:
    case NN_OP_CONV_TRANSPOSE: {
        const int64_t *w = in_shape[1];
        if (nsp < 1 || nsp > 3 || in_ndim[1] != nd)
            return sn_errf(err, errlen, SN_EINVAL, "%s: input rank %d / weight rank %d",
                           nn_op_name(op->type), nd, in_ndim[1]);
        int tr = op->type == NN_OP_CONV_TRANSPOSE;
        if (op->groups != 1)
            return sn_errf(err, errlen, SN_EUNSUPPORTED, "%s: groups=%d not supported",
                           nn_op_name(op->type), op->groups);
        if ((tr ? w[0] : w[1]) != x[1])
            return sn_errf(err, errlen, SN_EINVAL,
                           "%s: input has %lld channels, weight expects %lld",
                           nn_op_name(op->type), (long long)x[1], (long long)(tr ? w[0] : w[1]));
        int64_t co = tr ? w[1] : w[0];
        if (n_in > 2 && (in_ndim[2] != 1 || in_shape[2][0] != co))
            return sn_errf(err, errlen, SN_EINVAL, "%s: bias has wrong size",
                           nn_op_name(op->type));
        os[1] = co;
        for (int i = 0; i < nsp; i++) {
            int k = (int)w[2 + i], s = op->stride[i], p = op->pad[i], d = op->dilation[i];
            if (s < 1 || d < 1 || p < 0)
                return sn_errf(err, errlen, SN_EINVAL, "%s: bad stride/dilation/padding",
                               nn_op_name(op->type));
            os[2 + i] = tr ? (x[2 + i] - 1) * s - 2 * p + (int64_t)d * (k - 1) + op->out_pad[i] + 1
                           : (x[2 + i] + 2 * p - (int64_t)d * (k - 1) - 1) / s + 1;
            if (os[2 + i] < 1)
                return sn_errf(err, errlen, SN_EINVAL, "%s: input too small for the kernel",
                               nn_op_name(op->type));
        }
        return 0;
    }
    case NN_OP_LINEAR:
        if (in_ndim[1] != 2 || x[nd - 1] != in_shape[1][1])
            return sn_errf(err, errlen, SN_EINVAL, "linear: input features %lld, weight %lld",
                           (long long)x[nd - 1], (long long)in_shape[1][1]);
        if (n_in > 2 && in_shape[2][0] != in_shape[1][0])
            return sn_errf(err, errlen, SN_EINVAL, "linear: bias has wrong size");
        os[nd - 1] = in_shape[1][0];
        return 0;
    case NN_OP_BATCH_NORM:
    case NN_OP_INSTANCE_NORM:
    case NN_OP_GROUP_NORM:
        if (nd < 2) return sn_errf(err, errlen, SN_EINVAL, "%s: rank %d", nn_op_name(op->type), nd);
        for (int i = 1; i < n_in; i++)
            if (in_shape[i][0] != x[1])
                return sn_errf(err, errlen, SN_EINVAL, "%s: parameter %d has %lld entries for "
                               "%lld channels", nn_op_name(op->type), i,
                               (long long)in_shape[i][0], (long long)x[1]);
        if (op->type == NN_OP_GROUP_NORM && (op->groups < 1 || x[1] % op->groups))
            return sn_errf(err, errlen, SN_EINVAL, "group_norm: %lld channels in %d groups",
                           (long long)x[1], op->groups);
        return 0;
    case NN_OP_ARGMAX:
        os[1] = 1;
        return 0;
    case NN_OP_ADD:
    case NN_OP_MUL: {
        int nb = in_ndim[1], n = nd > nb ? nd : nb;
        for (int i = 0; i < n; i++) {
            int ia = i - (n - nd), ib = i - (n - nb);
            int64_t a = ia >= 0 ? x[ia] : 1, b = ib >= 0 ? in_shape[1][ib] : 1;
            if (a != b && a != 1 && b != 1)
                return sn_errf(err, errlen, SN_EINVAL, "%s: shapes do not broadcast (dim %d: "
                               "%lld vs %lld)", nn_op_name(op->type), i, (long long)a,
                               (long long)b);
            os[i] = a > b ? a : b;
        }
        *out_ndim = n;
        return 0;
    }
    case NN_OP_CONCAT: {
        int ax = op->axis < 0 ? op->axis + nd : op->axis;
        if (ax < 0 || ax >= nd) return sn_errf(err, errlen, SN_EINVAL, "concat: bad axis");
        os[ax] = 0;
        for (int j = 0; j < n_in; j++) {
            if (in_ndim[j] != nd) return sn_errf(err, errlen, SN_EINVAL, "concat: ranks differ");
            for (int i = 0; i < nd; i++)
                if (i != ax && in_shape[j][i] != x[i])
                    return sn_errf(err, errlen, SN_EINVAL, "concat: input %d dim %d is %lld, "
                                   "expected %lld", j, i, (long long)in_shape[j][i],
                                   (long long)x[i]);
            os[ax] += in_shape[j][ax];
        }
        return 0;
    }
    case NN_OP_MAX_POOL:
    case NN_OP_AVG_POOL:
        if (nsp < 1 || nsp > 3) return sn_errf(err, errlen, SN_EINVAL, "pool: rank %d", nd);
        for (int i = 0; i < nsp; i++) {
            int d = op->type == NN_OP_MAX_POOL ? op->dilation[i] : 1;
            if (op->k[i] < 1 || op->stride[i] < 1 || op->pad[i] * 2 > op->k[i])
                return sn_errf(err, errlen, SN_EINVAL, "pool: bad kernel/stride/padding");
            os[2 + i] = nn__pool_out(x[2 + i], op->k[i], op->stride[i], op->pad[i], d,
                                     op->ceil_mode);
            if (os[2 + i] < 1) return sn_errf(err, errlen, SN_EINVAL, "pool: input too small");
        }
        return 0;
    case NN_OP_GLOBAL_AVG_POOL:
        for (int i = 2; i < nd; i++) os[i] = 1;
        return 0;
    case NN_OP_UPSAMPLE_NEAREST:
    case NN_OP_UPSAMPLE_LINEAR:
        if (nsp < 1 || nsp > 3) return sn_errf(err, errlen, SN_EINVAL, "upsample: rank %d", nd);
        for (int i = 0; i < nsp; i++) {
            if (op->scale[i] > 0) os[2 + i] = (int64_t)floor((double)x[2 + i] * op->scale[i]);
            else os[2 + i] = op->size[i];
            if (os[2 + i] < 1)
                return sn_errf(err, errlen, SN_EINVAL, "upsample: no scale or size");
        }
        return 0;
    case NN_OP_MIND_SSC:
    case NN_OP_WARP:
    case NN_OP_SSD_COST:
    case NN_OP_WARP_SSD_GRAD: {
        if (nd != 5) return sn_errf(err, errlen, SN_EINVAL, "%s: needs [N,C,D,H,W]", nn_op_name(op->type));
        for (int i = 1; i < n_in; i++)
            if (in_ndim[i] != 5 || in_shape[i][0] != x[0])
                return sn_errf(err, errlen, SN_EINVAL, "%s: input %d shape", nn_op_name(op->type), i);
        if (op->type == NN_OP_MIND_SSC) {
            if (x[1] != 1) return sn_errf(err, errlen, SN_EINVAL, "mind_ssc: one channel");
            os[1] = 12;
        } else if (op->type == NN_OP_WARP) {
            if (in_shape[1][1] != 3) return sn_errf(err, errlen, SN_EINVAL, "warp: u needs 3 channels");
            for (int i = 2; i < 5; i++) os[i] = in_shape[1][i];
        } else {
            for (int i = 1; i < 5; i++)
                if (in_shape[1][i] != x[i])
                    return sn_errf(err, errlen, SN_EINVAL, "%s: f and m differ", nn_op_name(op->type));
            if (op->type == NN_OP_SSD_COST) {
                if (op->k[0] < 0 || op->k[0] > 10) return sn_errf(err, errlen, SN_EINVAL, "ssd_cost: radius");
                os[1] = (int64_t)(2 * op->k[0] + 1) * (2 * op->k[0] + 1) * (2 * op->k[0] + 1);
            } else {
                if (in_shape[2][1] != 3) return sn_errf(err, errlen, SN_EINVAL, "warp_ssd_grad: u needs 3 channels");
                for (int i = 2; i < 5; i++)
                    if (in_shape[2][i] != x[i]) return sn_errf(err, errlen, SN_EINVAL, "warp_ssd_grad: u grid");
                os[1] = 3;
            }
        }
        return 0;
    }
    case NN_OP_RESHAPE: {
        int64_t total = 1, known = 1;
        int infer = -1;
        for (int i = 0; i < nd; i++) total *= x[i];
        if (op->shape_ndim < 1 || op->shape_ndim > NN_MAX_DIMS)
            return sn_errf(err, errlen, SN_EINVAL, "reshape: bad target rank");
        for (int i = 0; i < op->shape_ndim; i++) {
            int64_t v = op->shape[i];
            if (v == 0) v = i < nd ? x[i] : 1;
            if (v == -1) {
                if (infer >= 0) return sn_errf(err, errlen, SN_EINVAL, "reshape: two -1");
                infer = i;
                v = 1;
            }
            os[i] = v;
            known *= v;
        }
        if (infer >= 0) {
            if (known == 0 || total % known)
                return sn_errf(err, errlen, SN_EINVAL, "reshape: cannot infer");
            os[infer] = total / known;
            known = total;
        }
        if (known != total) return sn_errf(err, errlen, SN_EINVAL, "reshape: size mismatch");
        *out_ndim = op->shape_ndim;
        return 0;
    }
    default:
        return 0;
    }
}

/* ---- optimisation ---------------------------------------------------------------------------- */

static void count_uses(const nn_graph *g, int *uses)
{
    memset(uses, 0, sizeof(int) * (size_t)g->n_vals);
    for (int i = 0; i < g->n_nodes; i++)
        if (!g->nodes[i].dead)
            for (int j = 0; j < g->nodes[i].n_in; j++) uses[g->nodes[i].in[j]]++;
    for (int i = 0; i < g->n_outputs; i++) uses[g->outputs[i]] += 1000;   /* pin outputs */
}

static void redirect(nn_graph *g, int from, int to)
{
    for (int i = 0; i < g->n_nodes; i++)
        for (int j = 0; j < g->nodes[i].n_in; j++)
            if (g->nodes[i].in[j] == from) g->nodes[i].in[j] = to;
    for (int i = 0; i < g->n_outputs; i++)
        if (g->outputs[i] == from) g->outputs[i] = to;
}

static int producer(const nn_graph *g, int val)
{
    for (int i = 0; i < g->n_nodes; i++)
        if (!g->nodes[i].dead && g->nodes[i].out == val) return i;
    return -1;
}

static int fold_bn(nn_graph *g, int bn_i, int conv_i)
{
    gnode *bn = &g->nodes[bn_i], *cv = &g->nodes[conv_i];
    for (int j = 1; j < bn->n_in; j++)
        if (g->vals[bn->in[j]].kind != VAL_CONST) return 0;
    if (g->vals[cv->in[1]].kind != VAL_CONST) return 0;
    if (cv->n_in > 2 && g->vals[cv->in[2]].kind != VAL_CONST) return 0;
    const gval *w = &g->vals[cv->in[1]];
    int64_t co = w->shape[0], per = 1;
    for (int i = 1; i < w->ndim; i++) per *= w->shape[i];
    const float *mean = g->vals[bn->in[1]].data, *var = g->vals[bn->in[2]].data;
    const float *gam = bn->n_in > 3 ? g->vals[bn->in[3]].data : NULL;
    const float *bet = bn->n_in > 4 ? g->vals[bn->in[4]].data : NULL;
    const float *bias = cv->n_in > 2 ? g->vals[cv->in[2]].data : NULL;
    if (g->vals[bn->in[1]].shape[0] != co) return 0;
    float *nw = malloc(sizeof(float) * (size_t)(co * per)), *nb = malloc(sizeof(float) * (size_t)co);
    if (!nw || !nb) {
        free(nw);
        free(nb);
        return SN_ENOMEM;
    }
    for (int64_t c = 0; c < co; c++) {
        /* same arithmetic as PyTorch's fuse_conv_bn_weights, in double for the scale */
        double sc = (gam ? gam[c] : 1.0) / sqrt((double)var[c] + bn->op.eps);
        for (int64_t i = 0; i < per; i++) nw[c * per + i] = (float)(w->data[c * per + i] * sc);
        nb[c] = (float)(((bias ? bias[c] : 0.0) - mean[c]) * sc + (bet ? bet[c] : 0.0));
    }
    char name[256];
    snprintf(name, sizeof name, "%s.folded_weight", cv->name);
    int64_t bshape[1] = {co};
    int iw = nn_graph_const(g, name, w->ndim, w->shape, nw);
    snprintf(name, sizeof name, "%s.folded_bias", cv->name);
    int ib = iw >= 0 ? nn_graph_const(g, name, 1, bshape, nb) : iw;
    free(nw);
    free(nb);
    if (ib < 0) return ib;
    cv = &g->nodes[conv_i];   /* the value array may have moved, not the node array */
    bn = &g->nodes[bn_i];
    cv->in[1] = iw;
    cv->in[2] = ib;
    cv->n_in = 3;
    bn->dead = 1;
    redirect(g, bn->out, cv->out);
    return 1;
}

int nn_graph_optimize(nn_graph *g, char *err, size_t errlen)
{
    int *uses = malloc(sizeof(int) * (size_t)(g->n_vals + 64) * 2);
    if (!uses) return sn_errf(err, errlen, SN_ENOMEM, "out of memory");
    for (int i = 0; i < g->n_nodes; i++) {
        gnode *n = &g->nodes[i];
        if (n->dead || n->op.type != NN_OP_BATCH_NORM) continue;
        int p = producer(g, n->in[0]);
        if (p < 0 || g->nodes[p].op.type != NN_OP_CONV || g->nodes[p].op.act) continue;
        int *u = realloc(uses, sizeof(int) * (size_t)g->n_vals);
        if (!u) break;
        uses = u;
        count_uses(g, uses);
        if (uses[n->in[0]] != 1) continue;
        int rc = fold_bn(g, i, p);
        if (rc < 0) {
            free(uses);
            return sn_errf(err, errlen, rc, "out of memory folding batch norm");
        }
    }
    int *u = realloc(uses, sizeof(int) * (size_t)g->n_vals);
    if (!u) {
        free(uses);
        return sn_errf(err, errlen, SN_ENOMEM, "out of memory");
    }
    uses = u;
    for (int i = 0; i < g->n_nodes; i++) {
        gnode *n = &g->nodes[i];
        nn_act act = n->op.type == NN_OP_RELU ? NN_ACT_RELU
                   : n->op.type == NN_OP_LEAKY_RELU ? NN_ACT_LEAKY_RELU : NN_ACT_NONE;
        if (n->dead || act == NN_ACT_NONE) continue;
        int p = producer(g, n->in[0]);
        if (p < 0) continue;
        gnode *pn = &g->nodes[p];
        switch (pn->op.type) {
        case NN_OP_CONV: case NN_OP_CONV_TRANSPOSE: case NN_OP_LINEAR: case NN_OP_BATCH_NORM:
        case NN_OP_INSTANCE_NORM: case NN_OP_GROUP_NORM: break;
        default: continue;
        }
        if (pn->op.act != NN_ACT_NONE) continue;
        count_uses(g, uses);
        if (uses[n->in[0]] != 1) continue;
        pn->op.act = act;
        pn->op.slope = n->op.slope;
        n->dead = 1;
        redirect(g, n->out, pn->out);
    }
    free(uses);
    return 0;
}

/* ---- sessions -------------------------------------------------------------------------------- */

struct nn_session {
    const nn_graph *g;
    nn_backend *b;
    nn_precision prec;
    nn_tensor *vals;          /* one per graph value (shape + data pointer) */
    nn_node *nodes;           /* live nodes in order */
    int n_nodes;
    void **bufs;              /* backend allocations (intermediates, inputs, constants) */
    int n_bufs;
    void *ws;
    size_t ws_bytes;
    int profile;
    double op_ms[NN_OP_COUNT];
    double macs;
};

static int64_t prod(const int64_t *s, int n)
{
    int64_t p = 1;
    for (int i = 0; i < n; i++) p *= s[i];
    return p;
}

void nn_session_free(nn_session *s)
{
    if (!s) return;
    for (int i = 0; i < s->n_nodes; i++)
        if (s->nodes[i].plan && s->b->iface->node_release)
            s->b->iface->node_release(s->b, &s->nodes[i]);
    for (int i = 0; i < s->n_bufs; i++) s->b->iface->release(s->b, s->bufs[i]);
    if (s->ws) s->b->iface->release(s->b, s->ws);
    free(s->bufs);
    free(s->nodes);
    free(s->vals);
    free(s);
}

static int session_alloc(nn_session *s, size_t bytes, void **out, char *err, size_t errlen)
{
    int rc = s->b->iface->alloc(s->b, bytes ? bytes : 16, out, err, errlen);
    if (rc) return rc;
    s->bufs[s->n_bufs++] = *out;
    return 0;
}

/* Is constant `v` the weight or bias of a conv-like node (stored in the activation dtype)? */
static int is_gemm_weight(const nn_graph *g, int v)
{
    for (int i = 0; i < g->n_nodes; i++) {
        const gnode *n = &g->nodes[i];
        if (n->dead) continue;
        if (n->op.type != NN_OP_CONV && n->op.type != NN_OP_CONV_TRANSPOSE &&
            n->op.type != NN_OP_LINEAR)
            continue;
        if ((n->n_in > 1 && n->in[1] == v) || (n->n_in > 2 && n->in[2] == v)) return 1;
    }
    return 0;
}

int nn_session_new(const nn_graph *g, nn_backend *b, const nn_session_opts *opts,
                   nn_session **out, char *err, size_t errlen)
{
    *out = NULL;
    int rc = 0;
    nn_session *s = calloc(1, sizeof *s);
    int *last_use = NULL, *vbuf = NULL;
    size_t *bsize = NULL;
    if (!s) return sn_errf(err, errlen, SN_ENOMEM, "out of memory");
    s->g = g;
    s->b = b;
    s->prec = opts ? opts->precision : NN_PREC_FP32;
    s->vals = calloc((size_t)g->n_vals, sizeof *s->vals);
    s->nodes = calloc((size_t)g->n_nodes + 1, sizeof *s->nodes);
    s->bufs = calloc((size_t)g->n_vals * 2 + 2, sizeof *s->bufs);
    last_use = malloc(sizeof(int) * (size_t)g->n_vals);
    vbuf = malloc(sizeof(int) * (size_t)g->n_vals);
    bsize = calloc((size_t)g->n_vals + 1, sizeof *bsize);
    if (!s->vals || !s->nodes || !s->bufs || !last_use || !vbuf || !bsize) {
        rc = sn_errf(err, errlen, SN_ENOMEM, "out of memory");
        goto err;
    }
    if (g->n_inputs < 1 || g->n_outputs < 1) {
        rc = sn_errf(err, errlen, SN_EINVAL, "graph has no input or no output");
        goto err;
    }

    /* Precision: FP16 only when the backend takes every node in FP16. */
    nn_dtype act_dt = NN_F32;
    if (s->prec == NN_PREC_FP16 && b->iface->supports) act_dt = NN_F16;

    /* Shapes: inputs and constants as declared, then every live node in order. */
    for (int i = 0; i < g->n_vals; i++) {
        nn_tensor *t = &s->vals[i];
        t->backend = b;
        t->ndim = g->vals[i].ndim;
        memcpy(t->shape, g->vals[i].shape, sizeof t->shape);
        t->dtype = g->vals[i].kind == VAL_CONST ? NN_F32 : act_dt;
        if (g->vals[i].kind == VAL_CONST && act_dt == NN_F16 && is_gemm_weight(g, i))
            t->dtype = NN_F16;
    }
    if (opts && opts->input_ndim > 0) {
        nn_tensor *t = &s->vals[g->inputs[0]];
        t->ndim = opts->input_ndim;
        memcpy(t->shape, opts->input_shape, sizeof t->shape);
    }
    for (int i = 0; i < g->n_nodes; i++) {
        const gnode *gn = &g->nodes[i];
        if (gn->dead) continue;
        int nd[NN_MAX_INPUTS];
        int64_t sh[NN_MAX_INPUTS][NN_MAX_DIMS];
        for (int j = 0; j < gn->n_in; j++) {
            const nn_tensor *t = &s->vals[gn->in[j]];
            if (t->ndim == 0) {
                rc = sn_errf(err, errlen, SN_EINVAL, "node %s: input %d used before defined",
                             gn->name, j);
                goto err;
            }
            nd[j] = t->ndim;
            memcpy(sh[j], t->shape, sizeof sh[j]);
        }
        nn_tensor *o = &s->vals[gn->out];
        char why[200];
        rc = nn__infer_shape(&gn->op, gn->n_in, nd, (const int64_t(*)[NN_MAX_DIMS])sh, &o->ndim,
                             o->shape, why, sizeof why);
        if (rc) {
            rc = sn_errf(err, errlen, rc, "node %s: %s", gn->name, why);
            goto err;
        }
        nn_node *n = &s->nodes[s->n_nodes++];
        n->op = gn->op;
        n->n_in = gn->n_in;
        for (int j = 0; j < gn->n_in; j++) n->in[j] = &s->vals[gn->in[j]];
        n->out = o;
        if (n->op.type == NN_OP_CONV || n->op.type == NN_OP_CONV_TRANSPOSE) {
            int nsp = sh[0][0] ? nd[0] - 2 : 0;
            for (int k = 0; k < nsp; k++) n->op.k[k] = (int)sh[1][2 + k];
            int64_t kk = prod(sh[1] + 2, nsp);
            n->macs = n->op.type == NN_OP_CONV
                          ? (double)prod(o->shape, o->ndim) * (double)sh[1][1] * (double)kk
                          : (double)prod(sh[0], nd[0]) * (double)sh[1][1] * (double)kk;
        } else if (n->op.type == NN_OP_LINEAR) {
            n->macs = (double)prod(o->shape, o->ndim) * (double)sh[1][1];
        }
        s->macs += n->macs;
        if (b->iface->supports && !b->iface->supports(b, n, s->prec)) {
            rc = sn_errf(err, errlen, SN_EUNSUPPORTED, "node %s: op %s not supported by %s",
                         gn->name, nn_op_name(n->op.type), nn_backend_name(b));
            goto err;
        }
    }
    for (int i = 0; i < g->n_outputs; i++)
        if (s->vals[g->outputs[i]].ndim == 0) {
            rc = sn_errf(err, errlen, SN_EINVAL, "graph output %d is never computed", i);
            goto err;
        }

    /* Lifetimes: intermediates share buffers once their last consumer has run. */
    for (int i = 0; i < g->n_vals; i++) last_use[i] = -1;
    {
        int k = 0;
        for (int i = 0; i < g->n_nodes; i++) {
            if (g->nodes[i].dead) continue;
            for (int j = 0; j < g->nodes[i].n_in; j++) last_use[g->nodes[i].in[j]] = k;
            k++;
        }
    }
    for (int i = 0; i < g->n_outputs; i++) last_use[g->outputs[i]] = 1 << 30;
    int nb = 0;
    int *busy_until = calloc((size_t)g->n_vals + 1, sizeof(int));
    if (!busy_until) {
        rc = sn_errf(err, errlen, SN_ENOMEM, "out of memory");
        goto err;
    }
    {
        int k = 0;
        for (int i = 0; i < g->n_nodes; i++) {
            if (g->nodes[i].dead) continue;
            int v = g->nodes[i].out;
            nn_tensor *t = &s->vals[v];
            size_t need = (size_t)prod(t->shape, t->ndim) * nn__dtype_size(t->dtype);
            /* best fit among buffers free before node k, else the largest free one grows */
            int best = -1;
            for (int j = 0; j < nb; j++) {
                if (busy_until[j] >= k) continue;
                if (bsize[j] >= need) {
                    if (best < 0 || bsize[best] < need || bsize[j] < bsize[best]) best = j;
                } else if (best < 0 || (bsize[best] < need && bsize[j] > bsize[best])) {
                    best = j;
                }
            }
            if (best < 0) {
                best = nb++;
                bsize[best] = 0;
            }
            if (bsize[best] < need) bsize[best] = need;
            busy_until[best] = last_use[v] < k ? k : last_use[v];
            vbuf[v] = best;
            k++;
        }
    }
    free(busy_until);
    void **pool = calloc((size_t)nb + 1, sizeof *pool);
    if (!pool) {
        rc = sn_errf(err, errlen, SN_ENOMEM, "out of memory");
        goto err;
    }
    for (int j = 0; j < nb; j++) {
        rc = session_alloc(s, bsize[j], &pool[j], err, errlen);
        if (rc) {
            free(pool);
            goto err;
        }
    }
    for (int i = 0; i < g->n_vals; i++) {
        nn_tensor *t = &s->vals[i];
        if (t->ndim == 0) continue;
        t->nbytes = (size_t)prod(t->shape, t->ndim) * nn__dtype_size(t->dtype);
        if (g->vals[i].kind == VAL_NODE) {
            int live = 0;
            for (int k = 0; k < s->n_nodes; k++) live |= s->nodes[k].out == t;
            if (live) t->data = pool[vbuf[i]];
            continue;
        }
        if (g->vals[i].kind == VAL_CONST && last_use[i] < 0) continue;   /* unused weight */
        rc = session_alloc(s, t->nbytes, &t->data, err, errlen);
        if (rc) {
            free(pool);
            goto err;
        }
        if (g->vals[i].kind == VAL_CONST) {
            rc = b->iface->upload_f32(b, t->data, t->dtype, g->vals[i].data, nn__numel(t), err,
                                      errlen);
            if (rc) {
                free(pool);
                goto err;
            }
        }
    }
    free(pool);

    /* Plan every node (algorithm search, descriptors) and size the shared workspace. */
    size_t ws = 0;
    for (int i = 0; i < s->n_nodes; i++) {
        size_t w = 0;
        if (b->iface->node_prepare) {
            char why[256];
            rc = b->iface->node_prepare(b, &s->nodes[i], &w, why, sizeof why);
            if (rc) {
                rc = sn_errf(err, errlen, rc, "planning %s: %s", nn_op_name(s->nodes[i].op.type),
                             why);
                goto err;
            }
        }
        if (w > ws) ws = w;
    }
    if (ws) {
        rc = b->iface->alloc(b, ws, &s->ws, err, errlen);
        if (rc) goto err;
        s->ws_bytes = ws;
    }
    free(last_use);
    free(vbuf);
    free(bsize);
    *out = s;
    return 0;
err:
    free(last_use);
    free(vbuf);
    free(bsize);
    nn_session_free(s);
    return rc;
}

nn_tensor *nn_session_input(nn_session *s, int i)
{
    return i >= 0 && i < s->g->n_inputs ? &s->vals[s->g->inputs[i]] : NULL;
}

nn_tensor *nn_session_output(nn_session *s, int i)
{
    return i >= 0 && i < s->g->n_outputs ? &s->vals[s->g->outputs[i]] : NULL;
}

int nn_session_run(nn_session *s, char *err, size_t errlen)
{
    for (int i = 0; i < s->n_nodes; i++) {
        nn_node *n = &s->nodes[i];
        double t0u = 0;
        if (s->profile) {
            struct timespec ts;
            clock_gettime(CLOCK_MONOTONIC, &ts);
            t0u = ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
        }
        int rc = s->b->iface->node_run(s->b, n, s->ws, s->ws_bytes, err, errlen);
        if (rc) return rc;
        if (s->profile) {
            rc = s->b->iface->sync(s->b, err, errlen);
            if (rc) return rc;
            struct timespec ts;
            clock_gettime(CLOCK_MONOTONIC, &ts);
            s->op_ms[n->op.type] += ts.tv_sec * 1e3 + ts.tv_nsec / 1e6 - t0u;
        }
    }
    return 0;
}

void nn_session_profile(nn_session *s, int enable)
{
    s->profile = enable;
    memset(s->op_ms, 0, sizeof s->op_ms);
}

double nn_session_op_ms(const nn_session *s, nn_op_type type)
{
    return (unsigned)type < NN_OP_COUNT ? s->op_ms[type] : 0;
}

double nn_session_conv_macs(const nn_session *s) { return s->macs; }
