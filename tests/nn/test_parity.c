/* tests/nn/test_parity.c — whole-network parity: the bundles in tests/nn/data (a small 3-D U-Net
 * and a 2-D DuSEUNet, exported with tools/train/export.py) run on a backend give the logits
 * PyTorch gave (io.safetensors): relative L2 < 1e-5 (CPU; CUDA fp32 against the same bound) and
 * the same argmax everywhere except at near-ties (< 1e-3 of voxels, reported).
 *   test_parity [--backend cpu|cuda] [--fp16] DATA_DIR   (cuda: exit 77 when unavailable) */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/status.h"
#include "nn/nn.h"

static int parity(nn_backend *b, const char *dir, nn_precision prec)
{
    char err[512], path[4096];
    nn_model *m = NULL;
    nn_safetensors *io = NULL;
    nn_session *s = NULL;
    float *x = NULL, *ref = NULL, *y = NULL;
    int rc = nn_model_load(dir, &m, err, sizeof err);
    if (!rc) {
        snprintf(path, sizeof path, "%s/io.safetensors", dir);
        rc = nn_safetensors_open(path, &io, err, sizeof err);
    }
    const nn_st_entry *ex = io ? nn_safetensors_find(io, "x") : NULL;
    const nn_st_entry *el = io ? nn_safetensors_find(io, "logits") : NULL;
    if (!rc && (!ex || !el)) rc = sn_errf(err, sizeof err, SN_EINVAL, "io.safetensors incomplete");
    if (!rc) rc = nn_st_entry_to_f32(ex, &x, err, sizeof err);
    if (!rc) rc = nn_st_entry_to_f32(el, &ref, err, sizeof err);
    nn_session_opts o = {0};
    o.precision = prec;
    if (!rc) rc = nn_session_new(nn_model_graph(m), b, &o, &s, err, sizeof err);
    if (!rc) rc = nn_tensor_upload(nn_session_input(s, 0), x, err, sizeof err);
    if (!rc) rc = nn_session_run(s, err, sizeof err);
    int64_t n = 0;
    if (!rc) {
        nn_tensor *t = nn_session_output(s, 0);
        n = nn_tensor_numel(t);
        if (n * 4 != (int64_t)el->nbytes)
            rc = sn_errf(err, sizeof err, SN_EINVAL, "output has %lld values, PyTorch %zu",
                         (long long)n, el->nbytes / 4);
        else {
            y = malloc(sizeof(float) * (size_t)n);
            rc = nn_tensor_download(t, y, err, sizeof err);
        }
    }
    int fail = 1;
    if (!rc) {
        double d2 = 0, r2 = 0;
        for (int64_t i = 0; i < n; i++) {
            d2 += ((double)y[i] - ref[i]) * ((double)y[i] - ref[i]);
            r2 += (double)ref[i] * ref[i];
        }
        double rel = sqrt(d2 / r2);
        int64_t K = el->shape[1], S = n / (el->shape[0] * K), diff = 0;
        for (int64_t bi = 0; bi < el->shape[0]; bi++)
            for (int64_t i = 0; i < S; i++) {
                int am = 0, ar = 0;
                for (int64_t k = 1; k < K; k++) {
                    if (y[(bi * K + k) * S + i] > y[(bi * K + am) * S + i]) am = (int)k;
                    if (ref[(bi * K + k) * S + i] > ref[(bi * K + ar) * S + i]) ar = (int)k;
                }
                diff += am != ar;
            }
        double tol = prec == NN_PREC_FP16 ? 1e-2 : 1e-5;
        fail = !(rel < tol) || (double)diff > 1e-3 * (double)(S * el->shape[0]);
        const nn_model_info *in = nn_model_info_get(m);
        printf("%-12s %-18s %s nodes=%d rel_l2=%.3g argmax_diff=%lld/%lld %s\n",
               nn_backend_name(b), in->name, prec == NN_PREC_FP16 ? "fp16" : "fp32",
               nn_graph_node_count(nn_model_graph(m)), rel, (long long)diff,
               (long long)(S * el->shape[0]), fail ? "FAIL" : "ok");
    } else {
        printf("%s: FAIL: %s\n", dir, err);
    }
    free(x);
    free(ref);
    free(y);
    nn_session_free(s);
    nn_safetensors_close(io);
    nn_model_free(m);
    return fail;
}

int main(int argc, char **argv)
{
    const char *backend = "cpu", *dir = NULL;
    int fp16 = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--backend") && i + 1 < argc) backend = argv[++i];
        else if (!strcmp(argv[i], "--fp16")) fp16 = 1;
        else dir = argv[i];
    }
    if (!dir) return 2;
    char err[512], path[4096];
    nn_backend *b = NULL;
    int rc = !strcmp(backend, "cuda") ? nn_backend_cuda_new(0, &b, err, sizeof err)
                                      : nn_backend_cpu_new(0, &b, err, sizeof err);
    if (rc) {
        printf("SKIP: %s backend unavailable: %s\n", backend, err);
        return 77;
    }
    int fails = 0;
    const char *nets[] = {"unet3d", "duseunet2d"};
    for (int i = 0; i < 2; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, nets[i]);
        fails += parity(b, path, NN_PREC_FP32);
        if (fp16 || strcmp(backend, "cpu")) fails += parity(b, path, NN_PREC_FP16) && fp16;
    }
    nn_backend_free(b);
    return fails ? 1 : 0;
}
