/* tests/bench/nn/bench_nn.c — nn/ throughput on a bundle (by default the nnU-Net-width 3-D U-Net
 * made by make_bench_model.py: 32..320 features, 6 stages, 128^3 patch). One line per case:
 *   patch:  ms per patch (batch 1), convolution GMAC and the achieved TFLOP/s, that as a fraction
 *           of the backend's measured GEMM throughput (fp16 Tensor Cores on the GPU), peak memory;
 *   volume: a whole D x H x W volume by sliding window (overlap 0.5, Gaussian): seconds and
 *           volumes per minute.
 *   bench_nn --model DIR [--backend cpu|cuda] [--fp16] [--runs N] [--threads N]
 *            [--volume DxHxW | --no-volume] [--batch N] [--profile]
 * Never an assertion: figures only. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "nn/nn.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

int main(int argc, char **argv)
{
    const char *model = NULL, *backend = "cpu";
    int fp16 = 0, runs = 3, threads = 0, do_volume = 1, batch = 2, profile = 0;
    int64_t vol[3] = {200, 256, 256};   /* D, H, W */
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--model") && i + 1 < argc) model = argv[++i];
        else if (!strcmp(argv[i], "--backend") && i + 1 < argc) backend = argv[++i];
        else if (!strcmp(argv[i], "--fp16")) fp16 = 1;
        else if (!strcmp(argv[i], "--runs") && i + 1 < argc) runs = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--batch") && i + 1 < argc) batch = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--no-volume")) do_volume = 0;
        else if (!strcmp(argv[i], "--profile")) profile = 1;
        else if (!strcmp(argv[i], "--volume") && i + 1 < argc) {
            long long d, h, w;
            if (sscanf(argv[++i], "%lldx%lldx%lld", &d, &h, &w) != 3) return 2;
            vol[0] = d; vol[1] = h; vol[2] = w;
        } else {
            fprintf(stderr, "bench_nn: unknown argument %s\n", argv[i]);
            return 2;
        }
    }
    if (!model) {
        fprintf(stderr, "usage: bench_nn --model DIR [--backend cpu|cuda] [--fp16] ...\n");
        return 2;
    }
    char err[1024];
    nn_backend *b = NULL;
    int rc = !strcmp(backend, "cuda") ? nn_backend_cuda_new(0, &b, err, sizeof err)
                                      : nn_backend_cpu_new(threads, &b, err, sizeof err);
    if (rc) {
        printf("bench_nn: %s backend unavailable: %s\n", backend, err);
        return 77;
    }
    nn_model *m = NULL;
    if ((rc = nn_model_load(model, &m, err, sizeof err))) {
        printf("bench_nn: %s\n", err);
        return 1;
    }
    const nn_model_info *in = nn_model_info_get(m);
    nn_precision prec = fp16 ? NN_PREC_FP16 : NN_PREC_FP32;
    double peak_tf = 0;
    nn_backend_gemm_tflops(b, prec, &peak_tf, err, sizeof err);

    /* one patch, batch 1 */
    nn_session_opts so = {0};
    so.precision = prec;
    so.input_ndim = in->spatial_dims + 2;
    so.input_shape[0] = 1;
    so.input_shape[1] = in->in_channels;
    for (int a = 0; a < in->spatial_dims; a++) so.input_shape[2 + a] = in->patch[3 - in->spatial_dims + a];
    nn_session *s = NULL;
    double t0 = now_s();
    if ((rc = nn_session_new(nn_model_graph(m), b, &so, &s, err, sizeof err))) {
        printf("bench_nn: session: %s\n", err);
        return 1;
    }
    double t_plan = now_s() - t0;
    nn_tensor *x = nn_session_input(s, 0);
    int64_t n = nn_tensor_numel(x);
    float *buf = malloc(sizeof(float) * (size_t)n);
    for (int64_t i = 0; i < n; i++) buf[i] = sinf((float)i * 0.001f);
    nn_tensor_upload(x, buf, err, sizeof err);
    rc = nn_session_run(s, err, sizeof err);   /* warm-up */
    if (!rc) rc = nn_backend_sync(b, err, sizeof err);
    if (profile) nn_session_profile(s, 1);
    t0 = now_s();
    for (int r = 0; r < runs && !rc; r++) rc = nn_session_run(s, err, sizeof err);
    if (!rc) rc = nn_backend_sync(b, err, sizeof err);
    double t_patch = (now_s() - t0) / runs;
    if (rc) {
        printf("bench_nn: run: %s\n", err);
        return 1;
    }
    double macs = nn_session_conv_macs(s);
    size_t cur, peak;
    nn_backend_memory(b, &cur, &peak);
    double tf = 2 * macs / t_patch / 1e12;
    printf("patch  model=%s backend=\"%s\" prec=%s patch=%lldx%lldx%lld ms_per_patch=%.1f "
           "plan_s=%.2f conv_gmac=%.1f conv_tflops=%.3f gemm_peak_tflops=%.3f "
           "fraction_of_peak=%.3f peak_mem_mib=%.0f\n",
           in->name, nn_backend_description(b), fp16 ? "fp16" : "fp32", (long long)in->patch[0],
           (long long)in->patch[1], (long long)in->patch[2], t_patch * 1e3, t_plan, macs / 1e9,
           tf, peak_tf, peak_tf > 0 ? tf / peak_tf : 0, (double)peak / 1048576.0);
    if (profile)
        for (int op = 0; op < NN_OP_COUNT; op++)
            if (nn_session_op_ms(s, (nn_op_type)op) > 0)
                printf("  op %-18s %8.1f ms/patch\n", nn_op_name((nn_op_type)op),
                       nn_session_op_ms(s, (nn_op_type)op) / runs);
    nn_session_free(s);
    free(buf);

    if (do_volume) {
        int64_t S = vol[0] * vol[1] * vol[2];
        float *v = malloc(sizeof(float) * (size_t)S);
        float *lg = malloc(sizeof(float) * (size_t)S * (size_t)in->out_channels);
        for (int64_t i = 0; i < S; i++) v[i] = sinf((float)i * 0.0001f);
        nn_sliding_opts o;
        nn_sliding_opts_default(&o);
        o.batch = batch;
        o.precision = prec;
        t0 = now_s();
        rc = nn_sliding_run(m, b, v, vol, &o, lg, err, sizeof err);
        double t = now_s() - t0;
        nn_backend_memory(b, &cur, &peak);
        if (rc) printf("volume: %s\n", err);
        else
            printf("volume backend=\"%s\" prec=%s volume=%lldx%lldx%lld (WxHxD) batch=%d "
                   "seconds=%.2f volumes_per_min=%.2f peak_mem_mib=%.0f\n",
                   nn_backend_description(b), fp16 ? "fp16" : "fp32", (long long)vol[2],
                   (long long)vol[1], (long long)vol[0], batch, t, 60.0 / t,
                   (double)peak / 1048576.0);
        free(v);
        free(lg);
    }
    nn_model_free(m);
    nn_backend_free(b);
    return rc ? 1 : 0;
}
