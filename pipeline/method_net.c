/* pipeline/method_net.c — the job worker's "net" method (pipeline/method.h): the route's model
 * bundle (nn/) on the target series, its channels mapped onto the label code table, then the
 * same post-processing as the atlas method. Also what "both" (method_both.c) shares with it: the
 * bundle cache, the label mapping and inference on the job's device. Rules: method_net.h. */
#include "pipeline/method_net.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common/log.h"
#include "common/status.h"
#include "common/util.h"
#include "pipeline/atlas/atlas.h"

#define NET_LOG "net"
#define NET_CACHE_MAX 4

/* ---- the bundle cache ------------------------------------------------------------------------- */

/* What says a bundle on disk is the one loaded: both files' mtime and size. */
typedef struct net__stamp {
    struct timespec mtime[2];
    off_t size[2];
} net__stamp;

struct pipeline_net_model {
    char dir[4096];
    net__stamp stamp;
    nn_model *model;
    int refs;            /* jobs using it, plus 1 while it is in the cache table */
    int64_t last_used;   /* sn_mono_ms() of the last get, for LRU eviction */
};

static pthread_mutex_t net__mu = PTHREAD_MUTEX_INITIALIZER;
static pipeline_net_model *net__cache[NET_CACHE_MAX];

static int net__stamp_get(const char *dir, net__stamp *s, char *err, size_t errlen)
{
    static const char *const files[2] = {"model.json", "model.safetensors"};
    memset(s, 0, sizeof *s);
    for (int i = 0; i < 2; i++) {
        char p[4200];
        struct stat sb;
        snprintf(p, sizeof p, "%s/%s", dir, files[i]);
        if (stat(p, &sb) != 0) {
            /* A bundle may name another weights file; model.json is the one that must exist. */
            if (i == 1 && errno == ENOENT)
                continue;
            return sn_errf(err, errlen, errno == ENOENT ? SN_ENOENT : SN_EIO, "model bundle %s: %s: %s", dir,
                           files[i], strerror(errno));
        }
        s->mtime[i] = sb.st_mtim;
        s->size[i] = sb.st_size;
    }
    return SN_OK;
}

static int net__stamp_eq(const net__stamp *a, const net__stamp *b)
{
    for (int i = 0; i < 2; i++)
        if (a->mtime[i].tv_sec != b->mtime[i].tv_sec || a->mtime[i].tv_nsec != b->mtime[i].tv_nsec ||
            a->size[i] != b->size[i])
            return 0;
    return 1;
}

/* Drop one reference; frees on the last. Call with net__mu held. */
static void net__unref_locked(pipeline_net_model *m)
{
    if (m && --m->refs == 0) {
        nn_model_free(m->model);
        free(m);
    }
}

int pipeline_net_model_get(const char *dir, pipeline_net_model **out, int *cached, char *err, size_t errlen)
{
    *out = NULL;
    if (cached)
        *cached = 0;
    net__stamp st;
    int rc = net__stamp_get(dir, &st, err, errlen);
    if (rc)
        return rc;
    pthread_mutex_lock(&net__mu);
    for (int i = 0; i < NET_CACHE_MAX; i++) {
        pipeline_net_model *c = net__cache[i];
        if (!c || strcmp(c->dir, dir) != 0)
            continue;
        if (net__stamp_eq(&c->stamp, &st)) {
            c->refs++;
            c->last_used = sn_mono_ms();
            *out = c;
            pthread_mutex_unlock(&net__mu);
            if (cached)
                *cached = 1;
            return SN_OK;
        }
        /* The bundle changed on disk (a new model was installed): forget the old one; jobs
         * still running it keep their reference. */
        net__cache[i] = NULL;
        net__unref_locked(c);
    }
    pthread_mutex_unlock(&net__mu);

    /* Load without the lock: a big bundle takes seconds, other jobs' bundles need not wait. */
    pipeline_net_model *m = calloc(1, sizeof *m);
    if (!m)
        return sn_errf(err, errlen, SN_ENOMEM, "out of memory");
    if (sn_strlcpy(m->dir, dir, sizeof m->dir) >= sizeof m->dir) {
        free(m);
        return sn_errf(err, errlen, SN_EINVAL, "model path too long");
    }
    if ((rc = nn_model_load(dir, &m->model, err, errlen)) != SN_OK) {
        free(m);
        return rc;
    }
    m->stamp = st;
    m->refs = 1;
    m->last_used = sn_mono_ms();

    pthread_mutex_lock(&net__mu);
    int slot = -1;
    for (int i = 0; i < NET_CACHE_MAX && slot < 0; i++)
        if (!net__cache[i])
            slot = i;
    if (slot < 0) {
        /* Full: the least recently used bundle goes (its running jobs keep it alive). */
        slot = 0;
        for (int i = 1; i < NET_CACHE_MAX; i++)
            if (net__cache[i]->last_used < net__cache[slot]->last_used)
                slot = i;
        net__unref_locked(net__cache[slot]);
    }
    net__cache[slot] = m;
    m->refs++;
    pthread_mutex_unlock(&net__mu);
    *out = m;
    return SN_OK;
}

void pipeline_net_model_put(pipeline_net_model *m)
{
    if (!m)
        return;
    pthread_mutex_lock(&net__mu);
    net__unref_locked(m);
    pthread_mutex_unlock(&net__mu);
}

const nn_model *pipeline_net_model_nn(const pipeline_net_model *m)
{
    return m ? m->model : NULL;
}

void pipeline_net_cache_clear(void)
{
    pthread_mutex_lock(&net__mu);
    for (int i = 0; i < NET_CACHE_MAX; i++) {
        net__unref_locked(net__cache[i]);
        net__cache[i] = NULL;
    }
    pthread_mutex_unlock(&net__mu);
}

/* ---- notes and labels ------------------------------------------------------------------------- */

void pipeline_net_note_add(char *note, size_t notelen, const char *fmt, ...)
{
    if (!note || !notelen)
        return;
    size_t l = strlen(note);
    if (l && l + 3 < notelen) {
        memcpy(note + l, "; ", 3);
        l += 2;
    }
    if (l + 1 >= notelen)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(note + l, notelen - l, fmt, ap);
    va_end(ap);
}

/* The table entry a bundle label stands for: by name, else by its code against the table's
 * Segmented Property Type ("SCT:10200004"; the first entry with that type). */
static const pipeline_label *net__table_label(const pipeline_labels *table, const nn_label *l)
{
    const pipeline_label *pl = pipeline_labels_by_name(table, l->name);
    if (pl || !l->code[0])
        return pl;
    const char *colon = strchr(l->code, ':');
    if (!colon)
        return NULL;
    size_t ns = (size_t)(colon - l->code);
    for (size_t i = 0; i < pipeline_labels_count(table); i++) {
        const pipeline_label *t = pipeline_labels_at(table, i);
        if (strlen(t->type.scheme) == ns && strncmp(t->type.scheme, l->code, ns) == 0 &&
            strcmp(t->type.value, colon + 1) == 0)
            return t;
    }
    return NULL;
}

static int net__is_background(const nn_label *l)
{
    return l->value == 0 || strcmp(l->name, "background") == 0;
}

int pipeline_net_classes_map(const nn_model_info *info, const pipeline_labels *table,
                             const sn_strlist *route_labels, pipeline_net_classes *out, char *note,
                             size_t notelen, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    if (!table)
        return sn_errf(err, errlen, SN_ECONFIG, "no label code table");
    int K = info->out_channels;
    if (K < 2 || K > 64)
        return sn_errf(err, errlen, SN_EINVAL, "model %s has %d output channels (2 to 64 supported)", info->name, K);
    out->K = K;
    char unknown[256] = "";
    int mapped = 0;
    for (int k = 0; k < K; k++) {
        /* Channel k is labels[k] when the bundle lists one per channel (export.py does). */
        const nn_label *l = k < info->n_labels ? &info->labels[k] : NULL;
        const pipeline_label *pl;
        if (!l || net__is_background(l))
            out->channel_number[k] = l ? 0 : -1;
        else if ((pl = net__table_label(table, l)) != NULL) {
            out->channel_number[k] = pl->number;
            mapped++;
        } else {
            out->channel_number[k] = -1;
            size_t u = strlen(unknown);
            if (u + 2 < sizeof unknown)
                snprintf(unknown + u, sizeof unknown - u, "%s%s", u ? "," : "", l->name);
        }
    }
    if (unknown[0])
        pipeline_net_note_add(note, notelen, "model labels not in the code table (left out): %s", unknown);
    if (!mapped)
        return sn_errf(err, errlen, SN_EINVAL, "model %s has no label the code table knows", info->name);

    if (route_labels && route_labels->n > 0) {
        char missing[256] = "";
        for (int i = 0; i < route_labels->n && out->n < PIPELINE_LABELS_MAX; i++) {
            const pipeline_label *pl = pipeline_labels_by_name(table, route_labels->item[i]);
            if (!pl)
                return sn_errf(err, errlen, SN_EINVAL, "label %s is not in the code table", route_labels->item[i]);
            int ch = -1;
            for (int k = 0; k < K && ch < 0; k++)
                if (out->channel_number[k] == pl->number)
                    ch = k;
            out->number[out->n] = pl->number;
            out->channel[out->n] = ch;
            out->n++;
            if (ch >= 0)
                out->n_in_model++;
            else {
                size_t u = strlen(missing);
                if (u + 2 < sizeof missing)
                    snprintf(missing + u, sizeof missing - u, "%s%s", u ? "," : "", pl->name);
            }
        }
        if (missing[0])
            pipeline_net_note_add(note, notelen, "labels the model lacks: %s", missing);
    } else {
        for (int k = 0; k < K; k++)
            if (out->channel_number[k] > 0) {
                int dup = 0;
                for (int i = 0; i < out->n; i++)
                    dup |= out->number[i] == out->channel_number[k];
                if (dup)
                    continue;
                out->number[out->n] = out->channel_number[k];
                out->channel[out->n] = k;
                out->n++;
                out->n_in_model++;
            }
    }
    return SN_OK;
}

/* atlas_postprocess_keep labels components over the whole volume, twice per label: 13 s on a
 * 384x384x192 CBCT for six organs. Each label's work only concerns its bounding box grown by one
 * voxel (its components lie inside; a hole it encloses too, and a non-label region that reaches
 * the grown box's border reaches beyond it, as one touching the volume's border does), so each
 * label runs on that box alone, label by label in number order as atlas_postprocess does: the
 * label as 1, any other label as 2 (kept whole; what label 2's own pass changes is ignored).
 * Same result, a fraction of the time. Falls back to the whole volume when out of memory. */
void pipeline_net_postprocess(const pipeline_labels *table, uint8_t *lab, int nx, int ny, int nz)
{
    /* Labels that are many pieces by nature keep every component (as the atlas method does). */
    static const char *const many[] = {"fat", "muscle", "ribs"};
    uint8_t keep[256] = {0};
    for (size_t i = 0; i < sizeof many / sizeof many[0]; i++) {
        const pipeline_label *pl = table ? pipeline_labels_by_name(table, many[i]) : NULL;
        if (pl)
            keep[pl->number] = 1;
    }
    int lo[256][3], hi[256][3], present[256] = {0};
    for (int k = 0; k < nz; k++)
        for (int j = 0; j < ny; j++) {
            const uint8_t *row = lab + (size_t)nx * ((size_t)j + (size_t)ny * k);
            for (int i = 0; i < nx; i++) {
                int l = row[i];
                if (!l)
                    continue;
                if (!present[l]) {
                    present[l] = 1;
                    lo[l][0] = hi[l][0] = i, lo[l][1] = hi[l][1] = j, lo[l][2] = hi[l][2] = k;
                    continue;
                }
                if (i < lo[l][0]) lo[l][0] = i;
                if (i > hi[l][0]) hi[l][0] = i;
                if (j < lo[l][1]) lo[l][1] = j;
                if (j > hi[l][1]) hi[l][1] = j;
                hi[l][2] = k;   /* k only grows */
            }
        }
    uint8_t *box = malloc((size_t)nx * ny * nz);
    if (!box) {
        atlas_postprocess_keep(lab, nx, ny, nz, keep, PIPELINE_NET_KEEP_FRACTION);
        return;
    }
    for (int l = 1; l < 256; l++) {
        if (!present[l])
            continue;
        const int n[3] = {nx, ny, nz};
        int a[3], b[3];
        for (int d = 0; d < 3; d++) {
            a[d] = lo[l][d] > 0 ? lo[l][d] - 1 : 0;
            b[d] = hi[l][d] < n[d] - 1 ? hi[l][d] + 1 : n[d] - 1;
        }
        const int bx = b[0] - a[0] + 1, by = b[1] - a[1] + 1, bz = b[2] - a[2] + 1;
        for (int k = 0; k < bz; k++)
            for (int j = 0; j < by; j++) {
                const uint8_t *src = lab + (size_t)a[0] + (size_t)nx * ((size_t)(a[1] + j) + (size_t)ny * (a[2] + k));
                uint8_t *dst = box + (size_t)bx * ((size_t)j + (size_t)by * k);
                for (int i = 0; i < bx; i++)
                    dst[i] = src[i] == l ? 1 : src[i] ? 2 : 0;
            }
        const uint8_t kb[3] = {0, keep[l], 1};
        atlas_postprocess_keep(box, bx, by, bz, kb, PIPELINE_NET_KEEP_FRACTION);
        for (int k = 0; k < bz; k++)
            for (int j = 0; j < by; j++) {
                uint8_t *dst = lab + (size_t)a[0] + (size_t)nx * ((size_t)(a[1] + j) + (size_t)ny * (a[2] + k));
                const uint8_t *src = box + (size_t)bx * ((size_t)j + (size_t)by * k);
                for (int i = 0; i < bx; i++) {
                    if (dst[i] == l && src[i] != 1)
                        dst[i] = 0;                /* a component of l too small to keep */
                    else if (dst[i] == 0 && src[i] == 1)
                        dst[i] = (uint8_t)l;       /* a hole enclosed by l */
                }
            }
    }
    free(box);
}

/* ---- inference -------------------------------------------------------------------------------- */

int pipeline_net_infer(pipeline_method_ctx *ctx, const nn_model *m, const pipeline_net_classes *cls,
                       const pipeline_volume *v, uint8_t *labels, float **probs, char *err, size_t errlen)
{
    if (probs)
        *probs = NULL;
    if ((labels == NULL) == (probs == NULL))
        return sn_errf(err, errlen, SN_EINVAL, "pipeline_net_infer: labels or probs");
    if (!v->data)
        return sn_errf(err, errlen, SN_EINVAL, "the net method needs a float volume");
    const nn_model_info *info = nn_model_info_get(m);
    const int on_gpu = pipeline_method_gpu(ctx) >= 0;
    nn_backend *b = NULL;
    float *p = NULL;
    int rc;
    int64_t t0 = sn_mono_ms();
    if (on_gpu) {
        if ((rc = nn_backend_cuda_new(ctx->device_index, &b, err, errlen)) != SN_OK) {
            /* No CUDA in this build, no usable device: the CPU may still do it. */
            if (rc != SN_EDEVICE)
                sn_errf(err, errlen, SN_EDEVICE, "%s: %s", ctx->device,
                        rc == SN_EUNSUPPORTED ? "this build has no CUDA backend" : "cannot start the backend");
            return SN_EDEVICE;
        }
    } else if ((rc = nn_backend_cpu_new(ctx->threads, &b, err, errlen)) != SN_OK)
        return rc;

    /* The volume is [nz][ny][nx] row-major: nn/'s D, H, W. */
    const int64_t dims[3] = {v->nz, v->ny, v->nx};
    const double spacing[3] = {v->spacing[2], v->spacing[1], v->spacing[0]};
    const size_t S = (size_t)v->nx * (size_t)v->ny * (size_t)v->nz;
    nn_sliding_opts so;
    nn_sliding_opts_default(&so);
    so.pad_small = 1;   /* a small field of view (CBCT) is padded, never refused */
    int16_t *l16 = NULL;
    if (labels && !(l16 = malloc(S * sizeof *l16))) {
        rc = sn_errf(err, errlen, SN_ENOMEM, "out of memory");
        goto out;
    }
    /* Labels only: nn_infer_volume's own argmax, no softmax over every class and voxel. */
    rc = nn_infer_volume(m, b, v->data, dims, spacing, &so, l16, labels ? NULL : &p, err, errlen);
    if (rc != SN_OK) {
        /* On the GPU, anything but a bundle that does not fit the volume is the device's
         * failure (out of memory, a kernel error): let the worker try the CPU. */
        if (on_gpu && rc != SN_EINVAL && rc != SN_EUNSUPPORTED) {
            char why[512];
            sn_strlcpy(why, err ? err : "", sizeof why);
            rc = sn_errf(err, errlen, SN_EDEVICE, "%s: inference failed: %s", ctx->device, why);
        }
        goto out;
    }
    if (pipeline_method_should_stop(ctx)) {
        rc = sn_errf(err, errlen, SN_ETIMEOUT, "stopped");
        goto out;
    }
    const int K = info->out_channels;
    if (labels) {
        /* nn/ gives the argmax channel's label value (the channel index when the bundle lists
         * no label for it): back to the channel's table number (unmapped ones: background). */
        uint8_t num_of[65536];
        memset(num_of, 0, sizeof num_of);
        for (int k = 0; k < K; k++) {
            int val = k < info->n_labels ? info->labels[k].value : k;
            if (val >= -32768 && val <= 32767 && cls->channel_number[k] > 0)
                num_of[(uint16_t)(int16_t)val] = (uint8_t)cls->channel_number[k];
        }
        for (size_t i = 0; i < S; i++)
            labels[i] = num_of[(uint16_t)l16[i]];
    } else {
        const int n = cls->n;
        float *q = malloc(sizeof(float) * S * (size_t)(n + 1));
        if (!q) {
            rc = sn_errf(err, errlen, SN_ENOMEM, "out of memory (%zu class probabilities)", S * (size_t)(n + 1));
            goto out;
        }
        for (size_t i = 0; i < S; i++) {
            float fg = 0;
            for (int c = 0; c < n; c++) {
                float x = cls->channel[c] >= 0 ? p[(size_t)cls->channel[c] * S + i] : 0.0f;
                q[(size_t)(c + 1) * S + i] = x;
                fg += x;
            }
            /* Background: every channel not asked for (the bundle's background, labels the
             * route does not want). */
            q[i] = fg < 1.0f ? 1.0f - fg : 0.0f;
        }
        *probs = q;
    }
out:
    free(p);
    free(l16);
    nn_backend_free(b);
    pipeline_method_time(ctx, "infer", (double)(sn_mono_ms() - t0));
    return rc;
}

int pipeline_net_route_model(pipeline_method_ctx *ctx, pipeline_net_model **out, char *err, size_t errlen)
{
    const sn_route *r = ctx->route;
    char dir[4096];
    *out = NULL;
    if (!r || !r->model[0])
        return sn_errf(err, errlen, SN_ECONFIG, "route %s names no model (model = FOLDER)", r ? r->name : "?");
    if (pipeline_method_model_path(ctx->cfg, r->model, dir, sizeof dir) != SN_OK)
        return sn_errf(err, errlen, SN_EINVAL, "route %s: model path too long", r->name);
    int64_t t0 = sn_mono_ms();
    int cached = 0;
    char why[700];
    int rc = pipeline_net_model_get(dir, out, &cached, why, sizeof why);
    pipeline_method_time(ctx, "load_model", (double)(sn_mono_ms() - t0));
    if (rc != SN_OK)
        return sn_errf(err, errlen, rc, "route %s: model bundle %s: %s", r->name, dir, why);
    const nn_model_info *info = nn_model_info_get((*out)->model);
    pipeline_net_note_add(ctx->note, sizeof ctx->note, "model %s (%s)", info->name[0] ? info->name : r->model,
                          cached ? "cached" : "loaded");
    return SN_OK;
}

/* A series of another modality than the bundle's is run anyway (the route chose it), and said:
 * CBCT arrives as CT, so a CBCT bundle on a CT series is expected and not worth a word. */
void pipeline_net_note_modality(pipeline_method_ctx *ctx, const nn_model_info *info, const pipeline_volume *v)
{
    if (!info->modality[0] || !v->modality[0] || strcmp(info->modality, v->modality) == 0)
        return;
    if (strcmp(info->modality, "CBCT") == 0 && strcmp(v->modality, "CT") == 0)
        return;
    pipeline_net_note_add(ctx->note, sizeof ctx->note, "model is for %s, series is %s", info->modality, v->modality);
}

/* Labels the route asked for (that the model has) that came out empty. */
void pipeline_net_note_empty(pipeline_method_ctx *ctx, const pipeline_net_classes *cls, const uint8_t *lab, size_t S)
{
    size_t count[256] = {0};
    for (size_t i = 0; i < S; i++)
        count[lab[i]]++;
    char buf[200] = "";
    for (int c = 0; c < cls->n; c++)
        if (!count[cls->number[c]]) {
            size_t u = strlen(buf);
            if (u + 5 < sizeof buf)
                snprintf(buf + u, sizeof buf - u, "%s%d", u ? "," : "", cls->number[c]);
        }
    if (buf[0])
        pipeline_net_note_add(ctx->note, sizeof ctx->note, "empty labels: %s", buf);
}

/* Keep the wanted labels only and widen to the worker's uint16. */
uint16_t *pipeline_net_restrict(const pipeline_net_classes *cls, const uint8_t *lab, size_t S)
{
    uint8_t want[256] = {0};
    for (int c = 0; c < cls->n; c++)
        want[cls->number[c]] = 1;
    uint16_t *out = malloc(S * sizeof *out);
    if (out)
        for (size_t i = 0; i < S; i++)
            out[i] = want[lab[i]] ? lab[i] : 0;
    return out;
}

int pipeline_net_finish(pipeline_method_ctx *ctx, const pipeline_net_classes *cls, uint8_t *lab,
                        const pipeline_volume *target, uint16_t **labels_out, char *err, size_t errlen)
{
    const size_t S = (size_t)target->nx * (size_t)target->ny * (size_t)target->nz;
    int64_t t0 = sn_mono_ms();
    pipeline_net_postprocess(ctx->table, lab, target->nx, target->ny, target->nz);
    if (!(*labels_out = pipeline_net_restrict(cls, lab, S)))
        return sn_errf(err, errlen, SN_ENOMEM, "out of memory");
    pipeline_method_time(ctx, "postprocess", (double)(sn_mono_ms() - t0));
    pipeline_net_note_empty(ctx, cls, lab, S);
    return SN_OK;
}

/* ---- the "net" method ------------------------------------------------------------------------- */

static int net__run(pipeline_method_ctx *ctx, const pipeline_volume *target, uint16_t **labels_out, char *err,
                    size_t errlen)
{
    *labels_out = NULL;
    pipeline_net_model *pm = NULL;
    uint8_t *lab = NULL;
    pipeline_net_classes cls;
    int rc = pipeline_net_route_model(ctx, &pm, err, errlen);
    if (rc != SN_OK)
        return rc;
    const nn_model *m = pipeline_net_model_nn(pm);
    const nn_model_info *info = nn_model_info_get(m);
    if ((rc = pipeline_net_classes_map(info, ctx->table, &ctx->route->labels, &cls, ctx->note, sizeof ctx->note,
                                       err, errlen)) != SN_OK)
        goto out;
    if (cls.n_in_model == 0) {
        rc = sn_errf(err, errlen, SN_EINVAL, "route %s: model %s has none of the requested labels",
                     ctx->route->name, info->name);
        goto out;
    }
    pipeline_net_note_modality(ctx, info, target);
    if (pipeline_method_should_stop(ctx)) {
        rc = sn_errf(err, errlen, SN_ETIMEOUT, "stopped");
        goto out;
    }
    const size_t S = (size_t)target->nx * (size_t)target->ny * (size_t)target->nz;
    if (!(lab = malloc(S))) {
        rc = sn_errf(err, errlen, SN_ENOMEM, "out of memory");
        goto out;
    }
    if ((rc = pipeline_net_infer(ctx, m, &cls, target, lab, NULL, err, errlen)) != SN_OK)
        goto out;
    if ((rc = pipeline_net_finish(ctx, &cls, lab, target, labels_out, err, errlen)) != SN_OK)
        goto out;
    pipeline_net_note_add(ctx->note, sizeof ctx->note, "%d label(s) on %s", cls.n_in_model, ctx->device);
out:
    free(lab);
    pipeline_net_model_put(pm);
    return rc;
}

void pipeline_net_method_register(void)
{
    pipeline_method_add("net", "segnode net", 1, net__run);
}
