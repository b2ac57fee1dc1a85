/* tests/nn/test_ops.c — every op on every backend: the CPU against PyTorch's goldens
 * (tests/nn/data/ops.*, made by make_goldens.py), every other backend against the CPU, by
 * normalised error max|a - b| / max|ref|; the same file times each op (one line per case).
 *   test_ops [--backend cpu|cuda] [--fp16] [--repeat N] DATA_DIR
 * cpu: fails if an op's error vs PyTorch is >= 1e-5. cuda: exits 77 (skipped) when the build has
 * no CUDA backend or no device is usable; fails if CUDA vs CPU is >= 1e-5 (fp32) / 2e-2 (fp16). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/status.h"
#include "nn/nnInt.h"

#define SKIP 77

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static double nerr(const float *a, const float *ref, int64_t n)
{
    double md = 0, mr = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - ref[i]);
        if (!(d <= md)) md = d;   /* NaN counts as infinite */
        if (fabs(ref[i]) > mr) mr = fabs(ref[i]);
    }
    return md / (mr > 1e-30 ? mr : 1.0);
}

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)n + 1);
    if (b && fread(b, 1, (size_t)n, f) != (size_t)n) {
        free(b);
        b = NULL;
    }
    fclose(f);
    if (b) b[n] = 0;
    *len = (size_t)n;
    return b;
}

/* Build the one-node graph of a case. */
static int build(const nn_json *c, const nn_safetensors *st, nn_graph **gout, int *n_in_out,
                 const nn_st_entry **ins, char *err, size_t errlen)
{
    nn_graph *g;
    nn_graph_new(&g);
    const char *opname = nn__json_str(c, "op", "");
    int op = nn_op_from_name(opname);
    if (op < 0) {
        nn_graph_free(g);
        return sn_errf(err, errlen, SN_EINVAL, "unknown op %s", opname);
    }
    nn_op_desc d;
    nn_op_desc_init(&d, (nn_op_type)op);
    if (nn__parse_attrs(nn__json_get(c, "attrs"), &d, err, errlen)) {
        nn_graph_free(g);
        return SN_EINVAL;
    }
    int ids[NN_MAX_INPUTS], n = 0, n_graph_in = 0;
    for (const nn_json *i = nn__json_get(c, "inputs")->child; i; i = i->next, n++) {
        const nn_st_entry *e = nn_safetensors_find(st, nn__json_str(i, "name", ""));
        if (!e) {
            nn_graph_free(g);
            return sn_errf(err, errlen, SN_EINVAL, "missing %s", nn__json_str(i, "name", ""));
        }
        if (!strcmp(nn__json_str(i, "kind", ""), "input")) {
            ids[n] = nn_graph_input(g, e->name, e->ndim, e->shape);
            ins[n_graph_in++] = e;
        } else {
            float *f;
            nn_st_entry_to_f32(e, &f, NULL, 0);
            ids[n] = nn_graph_const(g, e->name, e->ndim, e->shape, f);
            free(f);
        }
    }
    int out = nn_graph_node(g, nn__json_str(c, "name", ""), &d, ids, n, err, errlen);
    if (out < 0) {
        nn_graph_free(g);
        return out;
    }
    nn_graph_output(g, out);
    *gout = g;
    *n_in_out = n_graph_in;
    return 0;
}

/* Run a case's graph on a backend; *res gets the output (malloc), *ms the mean time of a run. */
static int run_on(nn_backend *b, const nn_graph *g, nn_precision prec, int n_in,
                  const nn_st_entry **ins, int repeat, float **res, int64_t *numel, double *ms,
                  char *err, size_t errlen)
{
    nn_session *s = NULL;
    nn_session_opts o = {0};
    o.precision = prec;
    int rc = nn_session_new(g, b, &o, &s, err, errlen);
    if (rc) return rc;
    for (int i = 0; i < n_in && !rc; i++) {
        float *f;
        nn_st_entry_to_f32(ins[i], &f, NULL, 0);
        rc = nn_tensor_upload(nn_session_input(s, i), f, err, errlen);
        free(f);
    }
    if (!rc) rc = nn_session_run(s, err, errlen);   /* warm-up */
    if (!rc) rc = nn_backend_sync(b, err, errlen);
    double t0 = now_ms();
    for (int r = 0; r < repeat && !rc; r++) rc = nn_session_run(s, err, errlen);
    if (!rc) rc = nn_backend_sync(b, err, errlen);
    *ms = (now_ms() - t0) / (repeat > 0 ? repeat : 1);
    nn_tensor *t = nn_session_output(s, 0);
    *numel = nn_tensor_numel(t);
    *res = malloc(sizeof(float) * (size_t)*numel);
    if (!rc) rc = nn_tensor_download(t, *res, err, errlen);
    nn_session_free(s);
    return rc;
}

int main(int argc, char **argv)
{
    const char *backend = "cpu", *dir = NULL;
    int fp16 = 0, repeat = 3;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--backend") && i + 1 < argc) backend = argv[++i];
        else if (!strcmp(argv[i], "--fp16")) fp16 = 1;
        else if (!strcmp(argv[i], "--repeat") && i + 1 < argc) repeat = atoi(argv[++i]);
        else dir = argv[i];
    }
    if (!dir) {
        fprintf(stderr, "usage: test_ops [--backend cpu|cuda] [--fp16] [--repeat N] DATA_DIR\n");
        return 2;
    }
    char err[512], path[4096];
    nn_backend *cpu = NULL, *dev = NULL;
    if (nn_backend_cpu_new(0, &cpu, err, sizeof err)) {
        fprintf(stderr, "cpu backend: %s\n", err);
        return 1;
    }
    if (!strcmp(backend, "cuda")) {
        int rc = nn_backend_cuda_new(0, &dev, err, sizeof err);
        if (rc) {
            printf("SKIP: no CUDA backend: %s\n", err);
            nn_backend_free(cpu);
            return SKIP;
        }
        printf("device: %s\n", nn_backend_description(dev));
    }
    snprintf(path, sizeof path, "%s/ops.json", dir);
    size_t len;
    char *text = slurp(path, &len);
    nn_json *j = text ? nn__json_parse(text, len, err, sizeof err) : NULL;
    free(text);
    nn_safetensors *st = NULL;
    snprintf(path, sizeof path, "%s/ops.safetensors", dir);
    if (!j || nn_safetensors_open(path, &st, err, sizeof err)) {
        fprintf(stderr, "cannot read goldens in %s: %s\n", dir, err);
        return 1;
    }
    double tol = dev ? (fp16 ? 2e-2 : 1e-5) : 1e-5;
    int failed = 0, n = 0;
    double worst = 0;
    printf("%-28s %-16s %12s %10s", "case", "op", "err_vs_torch", "cpu_ms");
    if (dev) printf(" %12s %10s", fp16 ? "err_cuda16" : "err_cuda", "cuda_ms");
    printf("\n");
    for (const nn_json *c = nn__json_get(j, "cases")->child; c; c = c->next, n++) {
        const char *name = nn__json_str(c, "name", "?");
        nn_graph *g = NULL;
        const nn_st_entry *ins[NN_MAX_INPUTS];
        int n_in = 0;
        if (build(c, st, &g, &n_in, ins, err, sizeof err)) {
            printf("%-28s FAIL build: %s\n", name, err);
            failed++;
            continue;
        }
        char key[300];
        snprintf(key, sizeof key, "%s.out", name);
        const nn_st_entry *gold = nn_safetensors_find(st, key);
        float *ref = NULL, *a = NULL, *d = NULL;
        nn_st_entry_to_f32(gold, &ref, NULL, 0);
        int64_t na = 0, nd = 0;
        double ms_cpu = 0, ms_dev = 0;
        int rc = run_on(cpu, g, NN_PREC_FP32, n_in, ins, repeat, &a, &na, &ms_cpu, err,
                        sizeof err);
        double e_cpu = rc || na != (int64_t)(gold->nbytes / 4) ? INFINITY : nerr(a, ref, na);
        printf("%-28s %-16s %12.3g %10.3f", name, nn__json_str(c, "op", ""), e_cpu, ms_cpu);
        if (rc) printf("  (cpu: %s)", err);
        int bad = !(e_cpu < 1e-5);
        if (e_cpu > worst) worst = e_cpu;
        if (dev && !rc) {
            int rd = run_on(dev, g, fp16 ? NN_PREC_FP16 : NN_PREC_FP32, n_in, ins, repeat, &d,
                            &nd, &ms_dev, err, sizeof err);
            double e_dev = rd || nd != na ? INFINITY : nerr(d, a, na);
            printf(" %12.3g %10.3f", e_dev, ms_dev);
            if (rd) printf("  (cuda: %s)", err);
            /* argmax over near-ties may differ; judge it by the fraction of voxels that differ */
            if (!strcmp(nn__json_str(c, "op", ""), "argmax") && !rd) {
                int64_t diff = 0;
                for (int64_t i = 0; i < na; i++) diff += d[i] != a[i];
                e_dev = (double)diff / (double)na * 1e-3;
            }
            bad = !(e_dev < tol);
        }
        printf("%s\n", bad ? "  FAIL" : "");
        failed += bad;
        free(ref);
        free(a);
        free(d);
        nn_graph_free(g);
    }
    printf("%d cases, %d failed; worst cpu error vs PyTorch %.3g\n", n, failed, worst);
    nn_safetensors_close(st);
    nn__json_free(j);
    nn_backend_free(dev);
    nn_backend_free(cpu);
    return failed ? 1 : 0;
}
