/* tools/segnode/infer.c — `segnode infer --model DIR INPUT --out OUT.nii[.gz] [--probabilities]`:
 * run a model bundle (nn/) on a series folder (read with pipeline/volume.h) or a NIfTI-1 volume
 * and write the label volume (int16, the bundle's label values) or, with --probabilities, one
 * float32 volume per class (OUT_p<k>.nii.gz). NIfTI input is read here (uncompressed or gzip)
 * and the output keeps its header (same grid); series output goes through pipeline_nifti_write.
 * Device: CUDA when built and usable, else the CPU (--device forces one). Nothing is written
 * unless inference succeeded; files are written under a temp name and renamed. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <zlib.h>

#include "common/log.h"
#include "common/status.h"
#include "common/util.h"
#include "nn/nn.h"
#include "pipeline/nifti.h"
#include "pipeline/volume.h"
#include "tools/segnode/cli.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: segnode infer --model DIR [options] INPUT --out OUT.nii[.gz]\n"
            "  INPUT               a series folder (DICOM) or a NIfTI-1 volume (.nii, .nii.gz)\n"
            "options:\n"
            "  --model DIR         model bundle (model.json + model.safetensors)\n"
            "  --out FILE          output NIfTI: labels (int16), or with --probabilities one\n"
            "                      float32 volume per class, FILE_p<k>.nii[.gz]\n"
            "  --probabilities     write per-class probabilities instead of labels\n"
            "  --device D          auto (default: CUDA if usable, else CPU), cpu, cuda\n"
            "  --fp16              half precision on the GPU (Tensor Cores)\n"
            "  --mirror            mirror test-time augmentation (slower, smoother)\n"
            "  --batch N           patches per run (default 2)\n"
            "  --pad               pad a volume smaller than the patch instead of refusing it\n"
            "  --threads N         CPU threads (default: all)\n");
}

/* ---- a minimal NIfTI-1 reader (single file, 3-D scalar) ------------------------------------ */

typedef struct nifti_in {
    unsigned char hdr[348];
    int64_t dims[3];       /* D, H, W = nz, ny, nx */
    double spacing[3];     /* D, H, W */
    float *data;
} nifti_in;

static int nii_read(const char *path, nifti_in *n, char *err, size_t errlen)
{
    memset(n, 0, sizeof *n);
    gzFile f = gzopen(path, "rb");
    if (!f) return sn_errf(err, errlen, SN_EIO, "%s: cannot open", path);
    int rc = 0;
    if (gzread(f, n->hdr, 348) != 348) {
        rc = sn_errf(err, errlen, SN_EINVAL, "%s: not a NIfTI-1 file (short header)", path);
        goto done;
    }
    int32_t sizeof_hdr;
    memcpy(&sizeof_hdr, n->hdr, 4);
    if (sizeof_hdr != 348 || memcmp(n->hdr + 344, "n+1", 4)) {
        rc = sn_errf(err, errlen, SN_EUNSUPPORTED, "%s: not a single-file little-endian "
                     "NIfTI-1 volume", path);
        goto done;
    }
    int16_t dim[8], dt;
    float pix[8], vox_offset, slope, inter;
    memcpy(dim, n->hdr + 40, 16);
    memcpy(&dt, n->hdr + 70, 2);
    memcpy(pix, n->hdr + 76, 32);
    memcpy(&vox_offset, n->hdr + 108, 4);
    memcpy(&slope, n->hdr + 112, 4);
    memcpy(&inter, n->hdr + 116, 4);
    if (dim[0] < 3 || (dim[0] > 3 && dim[4] > 1) || dim[1] < 1 || dim[2] < 1 || dim[3] < 1) {
        rc = sn_errf(err, errlen, SN_EUNSUPPORTED, "%s: need a 3-D volume (dim[0]=%d)", path,
                     dim[0]);
        goto done;
    }
    n->dims[0] = dim[3];
    n->dims[1] = dim[2];
    n->dims[2] = dim[1];
    n->spacing[0] = fabs(pix[3]);
    n->spacing[1] = fabs(pix[2]);
    n->spacing[2] = fabs(pix[1]);
    int es = dt == 2 ? 1 : dt == 4 ? 2 : dt == 8 ? 4 : dt == 16 ? 4 : dt == 64 ? 8
           : dt == 256 ? 1 : dt == 512 ? 2 : dt == 768 ? 4 : 0;
    if (!es) {
        rc = sn_errf(err, errlen, SN_EUNSUPPORTED, "%s: NIfTI datatype %d not supported", path, dt);
        goto done;
    }
    int64_t nv = n->dims[0] * n->dims[1] * n->dims[2];
    unsigned char *raw = malloc((size_t)(nv * es));
    n->data = malloc(sizeof(float) * (size_t)nv);
    if (!raw || !n->data) {
        free(raw);
        rc = sn_errf(err, errlen, SN_ENOMEM, "out of memory");
        goto done;
    }
    gzseek(f, (z_off_t)vox_offset, SEEK_SET);
    if (gzread(f, raw, (unsigned)(nv * es)) != (int)(nv * es)) {
        free(raw);
        rc = sn_errf(err, errlen, SN_EINVAL, "%s: truncated voxel data", path);
        goto done;
    }
    if (slope == 0 || !isfinite(slope)) {
        slope = 1;
        inter = 0;
    }
    for (int64_t i = 0; i < nv; i++) {
        double v;
        const unsigned char *p = raw + i * es;
        switch (dt) {
        case 2: v = p[0]; break;
        case 256: v = (int8_t)p[0]; break;
        case 4: { int16_t x; memcpy(&x, p, 2); v = x; break; }
        case 512: { uint16_t x; memcpy(&x, p, 2); v = x; break; }
        case 8: { int32_t x; memcpy(&x, p, 4); v = x; break; }
        case 768: { uint32_t x; memcpy(&x, p, 4); v = x; break; }
        case 16: { float x; memcpy(&x, p, 4); v = x; break; }
        default: { double x; memcpy(&x, p, 8); v = x; break; }
        }
        n->data[i] = (float)(v * slope + inter);
    }
    free(raw);
done:
    gzclose(f);
    if (rc) {
        free(n->data);
        n->data = NULL;
    }
    return rc;
}

/* Write `data` (int16 labels or float32) with the input's header, same grid. */
static int nii_write_like(const nifti_in *like, const char *path, const void *data, int is_float,
                          char *err, size_t errlen)
{
    unsigned char h[352];
    memcpy(h, like->hdr, 348);
    memset(h + 348, 0, 4);
    int16_t dim[8] = {3, (int16_t)like->dims[2], (int16_t)like->dims[1], (int16_t)like->dims[0],
                      1, 1, 1, 1};
    int16_t dt = is_float ? 16 : 4, bp = is_float ? 32 : 16;
    float off = 352, one = 1, zero = 0;
    memcpy(h + 40, dim, 16);
    memcpy(h + 70, &dt, 2);
    memcpy(h + 72, &bp, 2);
    memcpy(h + 108, &off, 4);
    memcpy(h + 112, &one, 4);
    memcpy(h + 116, &zero, 4);
    memcpy(h + 124, &zero, 4);   /* cal_max */
    memcpy(h + 128, &zero, 4);   /* cal_min */
    char tmp[4300];
    snprintf(tmp, sizeof tmp, "%.4200s.tmp", path);
    size_t plen = strlen(path);
    int gz = plen > 3 && !strcmp(path + plen - 3, ".gz");
    gzFile f = gzopen(tmp, gz ? "wb6" : "wbT");
    if (!f) return sn_errf(err, errlen, SN_EIO, "%s: cannot create", tmp);
    size_t nb = (size_t)(like->dims[0] * like->dims[1] * like->dims[2]) * (is_float ? 4 : 2);
    int ok = gzwrite(f, h, 352) == 352;
    const unsigned char *p = data;
    for (size_t o = 0; ok && o < nb; o += 1u << 30) {
        unsigned len = (unsigned)(nb - o < (1u << 30) ? nb - o : (1u << 30));
        ok = gzwrite(f, p + o, len) == (int)len;
    }
    if (gzclose(f) != Z_OK) ok = 0;
    if (!ok || rename(tmp, path)) {
        remove(tmp);
        return sn_errf(err, errlen, SN_EIO, "%s: write failed", path);
    }
    return 0;
}

static void class_path(const char *out, int k, char *buf, size_t n)
{
    const char *ext = strstr(out, ".nii");
    size_t stem = ext ? (size_t)(ext - out) : strlen(out);
    snprintf(buf, n, "%.*s_p%d%s", (int)stem, out, k, ext ? ext : ".nii.gz");
}

static int ends_with(const char *s, const char *suf)
{
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && !strcmp(s + a - b, suf);
}

int segnode_infer(int argc, char **argv)
{
    const char *model_dir = NULL, *input = NULL, *out = NULL, *device = "auto";
    int probs = 0, threads = 0;
    nn_sliding_opts so;
    nn_sliding_opts_default(&so);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (cli_is_help(a)) {
            usage(stdout);
            return CLI_EXIT_OK;
        }
        if (!strcmp(a, "--model") && i + 1 < argc) model_dir = argv[++i];
        else if ((!strcmp(a, "--out") || !strcmp(a, "-o")) && i + 1 < argc) out = argv[++i];
        else if (!strcmp(a, "--probabilities")) probs = 1;
        else if (!strcmp(a, "--device") && i + 1 < argc) device = argv[++i];
        else if (!strcmp(a, "--fp16")) so.precision = NN_PREC_FP16;
        else if (!strcmp(a, "--mirror")) so.mirror = 1;
        else if (!strcmp(a, "--pad")) so.pad_small = 1;
        else if (!strcmp(a, "--batch") && i + 1 < argc) so.batch = atoi(argv[++i]);
        else if (!strcmp(a, "--threads") && i + 1 < argc) threads = atoi(argv[++i]);
        else if (a[0] == '-') {
            fprintf(stderr, "segnode infer: unknown option %s\n", a);
            usage(stderr);
            return CLI_EXIT_USAGE;
        } else if (!input) input = a;
        else {
            fprintf(stderr, "segnode infer: one INPUT only\n");
            return CLI_EXIT_USAGE;
        }
    }
    if (!model_dir || !input || !out) {
        usage(stderr);
        return CLI_EXIT_USAGE;
    }
    if (strcmp(device, "auto") && strcmp(device, "cpu") && strcmp(device, "cuda")) {
        fprintf(stderr, "segnode infer: --device must be auto, cpu or cuda\n");
        return CLI_EXIT_USAGE;
    }
    char err[1024];
    int rc, exit_code = CLI_EXIT_FAIL;
    nn_model *m = NULL;
    nn_backend *b = NULL;
    pipeline_volume *vol = NULL;
    nifti_in nii = {0};
    int16_t *labels = NULL;
    float *pr = NULL;
    const float *data;
    int64_t dims[3];
    double spacing[3];

    if ((rc = nn_model_load(model_dir, &m, err, sizeof err))) {
        fprintf(stderr, "segnode infer: model %s: %s\n", model_dir, err);
        return CLI_EXIT_FAIL;
    }
    const nn_model_info *info = nn_model_info_get(m);
    if (ends_with(input, ".nii") || ends_with(input, ".nii.gz")) {
        if ((rc = nii_read(input, &nii, err, sizeof err))) goto fail;
        data = nii.data;
        memcpy(dims, nii.dims, sizeof dims);
        memcpy(spacing, nii.spacing, sizeof spacing);
    } else {
        pipeline_volume_opts vo;
        pipeline_volume_opts_default(&vo);
        if ((rc = pipeline_volume_read_dir(input, &vo, &vol, err, sizeof err))) goto fail;
        data = vol->data;
        dims[0] = vol->nz;
        dims[1] = vol->ny;
        dims[2] = vol->nx;
        spacing[0] = vol->spacing[2];
        spacing[1] = vol->spacing[1];
        spacing[2] = vol->spacing[0];
        if (info->modality[0] && strcmp(info->modality, vol->modality))
            SN_LOG_WARN("infer", "model is for %s, series is %s", info->modality, vol->modality);
    }
    if (strcmp(device, "cpu")) {
        rc = nn_backend_cuda_new(0, &b, err, sizeof err);
        if (rc && !strcmp(device, "cuda")) goto fail;
        if (rc) SN_LOG_INFO("infer", "no GPU (%s); running on the CPU", err);
    }
    if (!b && (rc = nn_backend_cpu_new(threads, &b, err, sizeof err))) goto fail;
    fprintf(stderr, "segnode infer: %s on %s: volume %lldx%lldx%lld (%.3gx%.3gx%.3g mm), "
            "patch %lldx%lldx%lld\n", info->name, nn_backend_description(b),
            (long long)dims[2], (long long)dims[1], (long long)dims[0], spacing[2], spacing[1],
            spacing[0], (long long)info->patch[2], (long long)info->patch[1],
            (long long)info->patch[0]);
    int64_t S = dims[0] * dims[1] * dims[2];
    labels = malloc(sizeof(int16_t) * (size_t)S);
    if (!labels) {
        rc = sn_errf(err, sizeof err, SN_ENOMEM, "out of memory");
        goto fail;
    }
    int64_t t0 = sn_mono_ms();
    rc = nn_infer_volume(m, b, data, dims, spacing, &so, labels, probs ? &pr : NULL, err,
                         sizeof err);
    if (rc && nn_have_cuda() && strcmp(nn_backend_name(b), "cpu") && strcmp(device, "cuda")) {
        SN_LOG_WARN("infer", "GPU inference failed (%s); retrying on the CPU", err);
        nn_backend_free(b);
        b = NULL;
        if (!(rc = nn_backend_cpu_new(threads, &b, err, sizeof err)))
            rc = nn_infer_volume(m, b, data, dims, spacing, &so, labels, probs ? &pr : NULL, err,
                                 sizeof err);
    }
    if (rc) goto fail;
    fprintf(stderr, "segnode infer: %.2f s\n", (double)(sn_mono_ms() - t0) / 1000.0);

    int K = info->out_channels;
    for (int k = 0; k < (probs ? K : 1); k++) {
        char path[4200];
        if (probs) class_path(out, k, path, sizeof path);
        else sn_strlcpy(path, out, sizeof path);
        if (vol) {
            pipeline_volume tmp = *vol;
            float *f = malloc(sizeof(float) * (size_t)S);
            if (!f) {
                rc = sn_errf(err, sizeof err, SN_ENOMEM, "out of memory");
                goto fail;
            }
            for (int64_t i = 0; i < S; i++) f[i] = probs ? pr[k * S + i] : (float)labels[i];
            tmp.data = f;
            rc = pipeline_nifti_write(&tmp, path, probs ? PIPELINE_NIFTI_FLOAT32
                                                        : PIPELINE_NIFTI_INT16, NULL, err,
                                      sizeof err);
            free(f);
        } else {
            rc = nii_write_like(&nii, path, probs ? (const void *)(pr + k * S) : labels, probs,
                                err, sizeof err);
        }
        if (rc) goto fail;
        printf("%s\n", path);
    }
    exit_code = CLI_EXIT_OK;
    goto done;
fail:
    fprintf(stderr, "segnode infer: %s: %s\n", input, err);
done:
    free(labels);
    free(pr);
    free(nii.data);
    pipeline_volume_free(vol);
    nn_backend_free(b);
    nn_model_free(m);
    return exit_code;
}
