/* nn/sliding.c — sliding-window inference as nnU-Net does it: patches at steps of
 * patch * (1 - overlap) covering the volume (first and last flush with its edges), each patch's
 * logits weighted by a Gaussian importance map (sigma = patch / 8, max 1, no zeros) and averaged,
 * optional mirror test-time augmentation (every combination of axis flips), patches run in
 * batches through one session allocated up front. nn_infer_volume wraps it with the bundle's
 * intensity normalisation and resampling to / from its target spacing. 2-D models run slice by
 * slice (patch depth 1). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/status.h"
#include "nn/nnInt.h"

void nn_sliding_opts_default(nn_sliding_opts *o)
{
    memset(o, 0, sizeof *o);
    o->batch = 2;
    o->overlap = 0.5;
    o->gaussian = 1;
}

/* nnU-Net's compute_steps_for_sliding_window for one axis. */
static int steps_for(int64_t size, int64_t patch, double step_frac, int64_t *steps)
{
    if (size <= patch) {
        steps[0] = 0;
        return 1;
    }
    double target = (double)patch * step_frac;
    int n = (int)ceil((double)(size - patch) / target) + 1;
    double actual = (double)(size - patch) / (n - 1);
    for (int i = 0; i < n; i++) steps[i] = (int64_t)llround(actual * i);
    return n;
}

static void gaussian_map(const int64_t P[3], float *g)
{
    double w[3][1024];
    for (int a = 0; a < 3; a++) {
        double c = (double)(P[a] / 2), s = (double)P[a] / 8.0;
        for (int64_t i = 0; i < P[a] && i < 1024; i++)
            w[a][i] = P[a] == 1 ? 1.0 : exp(-((double)i - c) * ((double)i - c) / (2 * s * s));
    }
    float mx = 0, mn = INFINITY;
    for (int64_t z = 0; z < P[0]; z++)
        for (int64_t y = 0; y < P[1]; y++)
            for (int64_t x = 0; x < P[2]; x++) {
                float v = (float)(w[0][z] * w[1][y] * w[2][x]);
                g[(z * P[1] + y) * P[2] + x] = v;
                if (v > mx) mx = v;
            }
    int64_t n = P[0] * P[1] * P[2];
    for (int64_t i = 0; i < n; i++) {
        g[i] /= mx;
        if (g[i] > 0 && g[i] < mn) mn = g[i];
    }
    for (int64_t i = 0; i < n; i++)
        if (g[i] == 0) g[i] = mn;
}

/* Copy patch at (z0,y0,x0) of `src` [c][D][H][W] into dst [c][P], flipping the axes in `flip`
 * (bit 0 = D, 1 = H, 2 = W). */
static void get_patch(const float *src, const int64_t dims[3], int c, const int64_t o[3],
                      const int64_t P[3], int flip, float *dst)
{
    int64_t S = dims[0] * dims[1] * dims[2], PS = P[0] * P[1] * P[2];
    for (int ch = 0; ch < c; ch++)
        for (int64_t z = 0; z < P[0]; z++) {
            int64_t sz = o[0] + ((flip & 1) ? P[0] - 1 - z : z);
            for (int64_t y = 0; y < P[1]; y++) {
                int64_t sy = o[1] + ((flip & 2) ? P[1] - 1 - y : y);
                const float *row = src + ch * S + (sz * dims[1] + sy) * dims[2] + o[2];
                float *d = dst + ch * PS + (z * P[1] + y) * P[2];
                if (flip & 4)
                    for (int64_t x = 0; x < P[2]; x++) d[x] = row[P[2] - 1 - x];
                else
                    memcpy(d, row, sizeof(float) * (size_t)P[2]);
            }
        }
}

/* acc[k][...] += w * patch (flip undone), at (z0,y0,x0). */
static void put_patch(float *acc, const int64_t dims[3], int k, const int64_t o[3],
                      const int64_t P[3], int flip, const float *src, const float *gauss,
                      float scale)
{
    int64_t S = dims[0] * dims[1] * dims[2], PS = P[0] * P[1] * P[2];
    for (int ch = 0; ch < k; ch++)
        for (int64_t z = 0; z < P[0]; z++) {
            int64_t sz = (flip & 1) ? P[0] - 1 - z : z;
            for (int64_t y = 0; y < P[1]; y++) {
                int64_t sy = (flip & 2) ? P[1] - 1 - y : y;
                float *row = acc + ch * S + ((o[0] + z) * dims[1] + o[1] + y) * dims[2] + o[2];
                const float *s = src + ch * PS + (sz * P[1] + sy) * P[2];
                const float *g = gauss + (z * P[1] + y) * P[2];
                if (flip & 4)
                    for (int64_t x = 0; x < P[2]; x++) row[x] += s[P[2] - 1 - x] * g[x] * scale;
                else
                    for (int64_t x = 0; x < P[2]; x++) row[x] += s[x] * g[x] * scale;
            }
        }
}

int nn_sliding_run(const nn_model *m, nn_backend *b, const float *in, const int64_t dims_in[3],
                   const nn_sliding_opts *opts_in, float *logits, char *err, size_t errlen)
{
    nn_sliding_opts opts;
    if (opts_in) opts = *opts_in;
    else nn_sliding_opts_default(&opts);
    if (opts.batch < 1) opts.batch = 1;
    if (opts.overlap < 0 || opts.overlap >= 1) opts.overlap = 0.5;
    const nn_model_info *info = nn_model_info_get(m);
    int C = info->in_channels, K = info->out_channels, nsp = info->spatial_dims;
    int64_t P[3] = {info->patch[0], info->patch[1], info->patch[2]};
    if (nsp == 2) P[0] = 1;
    int64_t dims[3], pad0[3];
    int padded = 0;
    for (int a = 0; a < 3; a++) {
        dims[a] = dims_in[a] > P[a] ? dims_in[a] : P[a];
        pad0[a] = (dims[a] - dims_in[a]) / 2;
        padded |= dims[a] != dims_in[a];
    }
    if (padded && !opts.pad_small)
        return sn_errf(err, errlen, SN_EINVAL, "volume %lldx%lldx%lld (DxHxW, at the model's "
                       "spacing) is smaller than the patch %lldx%lldx%lld; refusing (allow "
                       "padding to run it anyway)", (long long)dims_in[0], (long long)dims_in[1],
                       (long long)dims_in[2], (long long)P[0], (long long)P[1], (long long)P[2]);

    int rc = 0;
    int64_t S = dims[0] * dims[1] * dims[2], PS = P[0] * P[1] * P[2];
    float *vin = NULL, *acc = NULL, *wsum = NULL, *gauss = NULL, *pin = NULL, *pout = NULL;
    int64_t(*pos)[3] = NULL;
    nn_session *sess = NULL;

    /* patch positions */
    int64_t *st[3];
    int ns[3];
    int64_t stepbuf[3][4096];
    for (int a = 0; a < 3; a++) {
        st[a] = stepbuf[a];
        if ((double)(dims[a] - P[a]) / ((double)P[a] * (1 - opts.overlap)) > 4000)
            return sn_errf(err, errlen, SN_EINVAL, "volume too large for the patch");
        ns[a] = steps_for(dims[a], P[a], 1.0 - opts.overlap, st[a]);
    }
    int64_t npos = (int64_t)ns[0] * ns[1] * ns[2];
    pos = malloc(sizeof *pos * (size_t)npos);
    gauss = malloc(sizeof(float) * (size_t)PS);
    wsum = calloc((size_t)S, sizeof(float));
    acc = calloc((size_t)S * (size_t)K, sizeof(float));
    pin = malloc(sizeof(float) * (size_t)(PS * C * opts.batch));
    pout = malloc(sizeof(float) * (size_t)(PS * K * opts.batch));
    if (padded) vin = calloc((size_t)S * (size_t)C, sizeof(float));
    if (!pos || !gauss || !wsum || !acc || !pin || !pout || (padded && !vin)) {
        rc = sn_errf(err, errlen, SN_ENOMEM, "sliding window: out of host memory");
        goto done;
    }
    {
        int64_t k = 0;
        for (int z = 0; z < ns[0]; z++)
            for (int y = 0; y < ns[1]; y++)
                for (int x = 0; x < ns[2]; x++, k++) {
                    pos[k][0] = st[0][z];
                    pos[k][1] = st[1][y];
                    pos[k][2] = st[2][x];
                }
    }
    if (opts.gaussian) gaussian_map(P, gauss);
    else
        for (int64_t i = 0; i < PS; i++) gauss[i] = 1.0f;
    if (padded) {
        for (int ch = 0; ch < C; ch++)
            for (int64_t z = 0; z < dims_in[0]; z++)
                for (int64_t y = 0; y < dims_in[1]; y++)
                    memcpy(vin + ch * S + ((z + pad0[0]) * dims[1] + y + pad0[1]) * dims[2] +
                               pad0[2],
                           in + ch * dims_in[0] * dims_in[1] * dims_in[2] +
                               (z * dims_in[1] + y) * dims_in[2],
                           sizeof(float) * (size_t)dims_in[2]);
        in = vin;
    }

    nn_session_opts so = {0};
    so.precision = opts.precision;
    so.input_ndim = nsp + 2;
    so.input_shape[0] = opts.batch;
    so.input_shape[1] = C;
    for (int a = 0; a < nsp; a++) so.input_shape[2 + a] = P[3 - nsp + a];
    rc = nn_session_new(nn_model_graph(m), b, &so, &sess, err, errlen);
    if (rc) goto done;
    nn_tensor *tin = nn_session_input(sess, 0), *tout = nn_session_output(sess, 0);
    if (nn_tensor_numel(tout) != PS * K * opts.batch) {
        rc = sn_errf(err, errlen, SN_EINVAL, "model output is not [batch, %d, patch]", K);
        goto done;
    }
    int nflips = opts.mirror ? (nsp == 3 ? 8 : 4) : 1;
    float fscale = 1.0f / (float)nflips;
    for (int64_t p0 = 0; p0 < npos; p0 += opts.batch) {
        int nb = (int)(npos - p0 < opts.batch ? npos - p0 : opts.batch);
        for (int f = 0; f < nflips; f++) {
            int flip = nsp == 3 ? f : f << 1;   /* 2-D: only H and W */
            for (int i = 0; i < opts.batch; i++)
                get_patch(in, dims, C, pos[p0 + (i < nb ? i : nb - 1)], P, flip,
                          pin + (int64_t)i * C * PS);
            if ((rc = nn_tensor_upload(tin, pin, err, errlen))) goto done;
            if ((rc = nn_session_run(sess, err, errlen))) goto done;
            if ((rc = nn_tensor_download(tout, pout, err, errlen))) goto done;
            for (int i = 0; i < nb; i++)
                put_patch(acc, dims, K, pos[p0 + i], P, flip, pout + (int64_t)i * K * PS, gauss,
                          fscale);
        }
        for (int i = 0; i < nb; i++) {
            int64_t zero[3] = {0, 0, 0};
            (void)zero;
            const int64_t *o = pos[p0 + i];
            for (int64_t z = 0; z < P[0]; z++)
                for (int64_t y = 0; y < P[1]; y++) {
                    float *w = wsum + ((o[0] + z) * dims[1] + o[1] + y) * dims[2] + o[2];
                    const float *g = gauss + (z * P[1] + y) * P[2];
                    for (int64_t x = 0; x < P[2]; x++) w[x] += g[x];
                }
        }
        if (opts.verbose)
            SN_LOG_DEBUG("nn", "sliding window: %lld/%lld patches", (long long)(p0 + nb),
                         (long long)npos);
    }
    /* average, crop the padding away */
    for (int k = 0; k < K; k++)
        for (int64_t z = 0; z < dims_in[0]; z++)
            for (int64_t y = 0; y < dims_in[1]; y++) {
                int64_t so_ = ((z + pad0[0]) * dims[1] + y + pad0[1]) * dims[2] + pad0[2];
                const float *a = acc + k * S + so_, *w = wsum + so_;
                float *o = logits + k * dims_in[0] * dims_in[1] * dims_in[2] +
                           (z * dims_in[1] + y) * dims_in[2];
                for (int64_t x = 0; x < dims_in[2]; x++) o[x] = a[x] / w[x];
            }
done:
    nn_session_free(sess);
    free(pos);
    free(gauss);
    free(wsum);
    free(acc);
    free(pin);
    free(pout);
    free(vin);
    return rc;
}

/* ---- resampling and whole-volume inference --------------------------------------------------- */

void nn_resample_trilinear(const float *src, const int64_t sd[3], float *dst, const int64_t dd[3],
                           int c)
{
    int64_t SS = sd[0] * sd[1] * sd[2], DS = dd[0] * dd[1] * dd[2];
    int64_t *i0[3], *i1[3];
    float *w1[3];
    for (int a = 0; a < 3; a++) {
        i0[a] = malloc(sizeof(int64_t) * (size_t)dd[a]);
        i1[a] = malloc(sizeof(int64_t) * (size_t)dd[a]);
        w1[a] = malloc(sizeof(float) * (size_t)dd[a]);
        double sc = (double)sd[a] / (double)dd[a];
        for (int64_t i = 0; i < dd[a]; i++) {
            double s = ((double)i + 0.5) * sc - 0.5;
            if (s < 0) s = 0;
            if (s > (double)(sd[a] - 1)) s = (double)(sd[a] - 1);
            i0[a][i] = (int64_t)s;
            i1[a][i] = i0[a][i] + (i0[a][i] < sd[a] - 1);
            w1[a][i] = (float)(s - (double)i0[a][i]);
        }
    }
    for (int ch = 0; ch < c; ch++) {
        const float *s = src + ch * SS;
        float *d = dst + ch * DS;
        for (int64_t z = 0; z < dd[0]; z++)
            for (int64_t y = 0; y < dd[1]; y++)
                for (int64_t x = 0; x < dd[2]; x++) {
                    float wz = w1[0][z], wy = w1[1][y], wx = w1[2][x];
#define S_(a, b, q) s[((a) * sd[1] + (b)) * sd[2] + (q)]
                    int64_t z0 = i0[0][z], z1 = i1[0][z], y0 = i0[1][y], y1 = i1[1][y];
                    int64_t x0 = i0[2][x], x1 = i1[2][x];
                    float v0 = (1 - wy) * ((1 - wx) * S_(z0, y0, x0) + wx * S_(z0, y0, x1)) +
                               wy * ((1 - wx) * S_(z0, y1, x0) + wx * S_(z0, y1, x1));
                    float v1 = (1 - wy) * ((1 - wx) * S_(z1, y0, x0) + wx * S_(z1, y0, x1)) +
                               wy * ((1 - wx) * S_(z1, y1, x0) + wx * S_(z1, y1, x1));
#undef S_
                    d[(z * dd[1] + y) * dd[2] + x] = (1 - wz) * v0 + wz * v1;
                }
    }
    for (int a = 0; a < 3; a++) {
        free(i0[a]);
        free(i1[a]);
        free(w1[a]);
    }
}

/* The k-th smallest of a[0..n) (quickselect; reorders a: afterwards a[k] holds it, every
 * element before is <= and every element after >=). */
static float select_kth(float *a, int64_t n, int64_t k)
{
    int64_t lo = 0, hi = n - 1;
    while (lo < hi) {
        float p = a[lo + (hi - lo) / 2];
        int64_t i = lo, j = hi;
        while (i <= j) {
            while (a[i] < p) i++;
            while (a[j] > p) j--;
            if (i <= j) {
                float t = a[i];
                a[i++] = a[j];
                a[j--] = t;
            }
        }
        if (k <= j) hi = j;
        else if (k >= i) lo = i;
        else break;
    }
    return a[k];
}

/* The q-quantile of a[0..n) with linear interpolation between order statistics (numpy's
 * default percentile), n >= 1. */
static double quantile(float *a, int64_t n, double q)
{
    double pos = q * (double)(n - 1);
    int64_t k = (int64_t)floor(pos);
    double f = pos - (double)k, lo = select_kth(a, n, k);
    if (f <= 0 || k + 1 >= n) return lo;
    float hi = a[k + 1];
    for (int64_t i = k + 2; i < n; i++)
        if (a[i] < hi) hi = a[i];
    return lo + f * ((double)hi - lo);
}

int nn_normalize(const nn_model_info *info, const float *vol, int64_t n, float *out, char *err,
                 size_t errlen)
{
    double mean = info->norm_mean, sd = info->norm_std;
    if (info->norm == NN_NORM_NONE || n < 1) {
        if (out != vol) memcpy(out, vol, sizeof(float) * (size_t)n);
        return 0;
    }
    const int zscore = info->norm == NN_NORM_ZSCORE && info->norm_per_volume;
    double vm = 0;   /* the volume's mean, for the per-volume kinds */
    if (zscore || info->norm == NN_NORM_ROBUST) {
        for (int64_t i = 0; i < n; i++) vm += vol[i];
        vm /= (double)n;
    }
    if (zscore) {
        double q = 0;
        mean = vm;
        for (int64_t i = 0; i < n; i++) q += (vol[i] - mean) * (vol[i] - mean);
        sd = sqrt(q / (double)n);
        if (sd < 1e-8) sd = 1e-8;
    } else if (info->norm == NN_NORM_ROBUST) {
        /* median and interquartile range of the mask's voxels; a flat mask falls back to
         * its standard deviation, then to 1 */
        float *a = malloc(sizeof(float) * (size_t)n);
        if (!a) return sn_errf(err, errlen, SN_ENOMEM, "normalisation: out of host memory");
        int64_t m = 0;
        for (int64_t i = 0; i < n; i++)
            if (!info->norm_above_mean || vol[i] > vm) a[m++] = vol[i];
        if (m == 0) {   /* a constant volume: nothing above its mean */
            memcpy(a, vol, sizeof(float) * (size_t)n);
            m = n;
        }
        double q25 = quantile(a, m, 0.25), q75 = quantile(a, m, 0.75);
        mean = quantile(a, m, 0.5);
        sd = q75 - q25;
        if (sd <= 1e-8 * fmax(1.0, fabs(mean))) {
            double q = 0, mm = 0;
            for (int64_t i = 0; i < m; i++) mm += a[i];
            mm /= (double)m;
            for (int64_t i = 0; i < m; i++) q += (a[i] - mm) * (a[i] - mm);
            sd = sqrt(q / (double)m);
            if (sd <= 1e-8) sd = 1;
        }
        free(a);
    }
    for (int64_t i = 0; i < n; i++) {
        double v = vol[i];
        if (info->norm == NN_NORM_CT) v = v < info->norm_lo ? info->norm_lo
                                       : v > info->norm_hi ? info->norm_hi : v;
        out[i] = (float)((v - mean) / sd);
    }
    return 0;
}

int nn_infer_volume(const nn_model *m, nn_backend *b, const float *vol, const int64_t dims[3],
                    const double spacing[3], const nn_sliding_opts *opts, int16_t *labels,
                    float **probs, char *err, size_t errlen)
{
    const nn_model_info *info = nn_model_info_get(m);
    if (probs) *probs = NULL;
    if (info->in_channels != 1)
        return sn_errf(err, errlen, SN_EUNSUPPORTED, "model takes %d channels; only "
                       "single-channel volumes are supported here", info->in_channels);
    int K = info->out_channels, rc = 0;
    int64_t S = dims[0] * dims[1] * dims[2], rd[3];
    int resample = 0;
    for (int a = 0; a < 3; a++) {
        rd[a] = dims[a];
        if (info->spacing[a] > 0 && spacing[a] > 0 &&
            fabs(info->spacing[a] - spacing[a]) > 1e-3 * info->spacing[a]) {
            rd[a] = (int64_t)llround((double)dims[a] * spacing[a] / info->spacing[a]);
            if (rd[a] < 1) rd[a] = 1;
            resample = 1;
        }
    }
    int64_t RS = rd[0] * rd[1] * rd[2];
    float *norm = malloc(sizeof(float) * (size_t)S);
    float *rin = resample ? malloc(sizeof(float) * (size_t)RS) : norm;
    float *rlog = malloc(sizeof(float) * (size_t)(RS * K));
    float *lg = resample ? malloc(sizeof(float) * (size_t)(S * K)) : rlog;
    if (!norm || !rin || !rlog || !lg) {
        rc = sn_errf(err, errlen, SN_ENOMEM, "inference: out of host memory");
        goto done;
    }
    rc = nn_normalize(info, vol, S, norm, err, errlen);
    if (rc) goto done;
    if (resample) nn_resample_trilinear(norm, dims, rin, rd, 1);
    rc = nn_sliding_run(m, b, rin, rd, opts, rlog, err, errlen);
    if (rc) goto done;
    if (resample) nn_resample_trilinear(rlog, rd, lg, dims, K);
    /* softmax over classes (in place) and argmax */
    for (int64_t i = 0; i < S; i++) {
        float mx = lg[i];
        int best = 0;
        for (int k = 1; k < K; k++)
            if (lg[k * S + i] > mx) {
                mx = lg[k * S + i];
                best = k;
            }
        if (labels) labels[i] = (int16_t)(best < info->n_labels ? info->labels[best].value : best);
        if (probs) {
            float sum = 0;
            for (int k = 0; k < K; k++) {
                float e = expf(lg[k * S + i] - mx);
                lg[k * S + i] = e;
                sum += e;
            }
            for (int k = 0; k < K; k++) lg[k * S + i] /= sum;
        }
    }
    if (probs) {
        *probs = lg;
        lg = NULL;
        if (!resample) rlog = NULL;
    }
done:
    if (rin != norm) free(rin);
    free(norm);
    if (lg != rlog) free(lg);
    free(rlog);
    return rc;
}
