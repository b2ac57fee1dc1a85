/* nn/safetensors.c — reader for the safetensors format: an 8-byte little-endian header length,
 * a JSON header {name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {...}}, then
 * the raw little-endian tensor bytes. The whole file is read into memory and every entry checked
 * (offsets inside the data, size = numel * dtype size, no overlap past the end), so a truncated
 * or inconsistent file is refused before any weight is used. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/status.h"
#include "nn/nnInt.h"

struct nn_safetensors {
    unsigned char *buf;
    size_t size;
    nn_json *header;
    nn_st_entry *e;
    int n;
};

static int dtype_size(const char *dt)
{
    static const struct { const char *n; int s; } t[] = {
        {"F64", 8}, {"F32", 4}, {"F16", 2}, {"BF16", 2}, {"I64", 8}, {"I32", 4},
        {"I16", 2}, {"I8", 1}, {"U8", 1}, {"BOOL", 1},
    };
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++)
        if (!strcmp(t[i].n, dt)) return t[i].s;
    return 0;
}

void nn_safetensors_close(nn_safetensors *st)
{
    if (!st) return;
    nn__json_free(st->header);
    free(st->e);
    free(st->buf);
    free(st);
}

int nn_safetensors_open(const char *path, nn_safetensors **out, char *err, size_t errlen)
{
    *out = NULL;
    int rc = 0;
    nn_safetensors *st = calloc(1, sizeof *st);
    if (!st) return sn_errf(err, errlen, SN_ENOMEM, "out of memory");
    FILE *f = fopen(path, "rb");
    if (!f) {
        rc = sn_errf(err, errlen, errno == ENOENT ? SN_ENOENT : SN_EIO, "%s: %s", path,
                     strerror(errno));
        goto fail;
    }
    if (fseek(f, 0, SEEK_END) || (long)(st->size = (size_t)ftell(f)) < 0 || fseek(f, 0, SEEK_SET)) {
        fclose(f);
        rc = sn_errf(err, errlen, SN_EIO, "%s: cannot size the file", path);
        goto fail;
    }
    st->buf = malloc(st->size + 1);
    if (!st->buf) {
        fclose(f);
        rc = sn_errf(err, errlen, SN_ENOMEM, "%s: cannot hold %zu bytes", path, st->size);
        goto fail;
    }
    size_t got = fread(st->buf, 1, st->size, f);
    fclose(f);
    if (got != st->size) {
        rc = sn_errf(err, errlen, SN_EIO, "%s: short read", path);
        goto fail;
    }
    if (st->size < 8) {
        rc = sn_errf(err, errlen, SN_EINVAL, "%s: truncated (%zu bytes, no header)", path,
                     st->size);
        goto fail;
    }
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | st->buf[i];
    if (hlen > st->size - 8 || hlen > (100u << 20)) {
        rc = sn_errf(err, errlen, SN_EINVAL, "%s: truncated or corrupt (header of %llu bytes in "
                     "a %zu-byte file)", path, (unsigned long long)hlen, st->size);
        goto fail;
    }
    char jerr[160];
    st->header = nn__json_parse((const char *)st->buf + 8, (size_t)hlen, jerr, sizeof jerr);
    if (!st->header || st->header->type != NN_JSON_OBJECT) {
        rc = sn_errf(err, errlen, SN_EINVAL, "%s: bad header: %s", path,
                     st->header ? "not an object" : jerr);
        goto fail;
    }
    const unsigned char *data = st->buf + 8 + hlen;
    size_t dsize = st->size - 8 - (size_t)hlen;
    st->e = calloc((size_t)st->header->count + 1, sizeof *st->e);
    if (!st->e) {
        rc = sn_errf(err, errlen, SN_ENOMEM, "out of memory");
        goto fail;
    }
    for (const nn_json *m = st->header->child; m; m = m->next) {
        if (!strcmp(m->key, "__metadata__")) continue;
        nn_st_entry *e = &st->e[st->n];
        e->name = m->key;
        const char *dt = nn__json_str(m, "dtype", "");
        const nn_json *shape = nn__json_get(m, "shape"), *offs = nn__json_get(m, "data_offsets");
        int es = dtype_size(dt);
        if (!es || !shape || shape->type != NN_JSON_ARRAY || shape->count > 8 || !offs ||
            offs->count != 2) {
            rc = sn_errf(err, errlen, SN_EINVAL, "%s: tensor '%s': bad dtype/shape/offsets",
                         path, m->key);
            goto fail;
        }
        snprintf(e->dtype, sizeof e->dtype, "%s", dt);
        e->ndim = shape->count;
        uint64_t numel = 1;
        for (int i = 0; i < e->ndim; i++) {
            double v = nn__json_at(shape, i)->num;
            if (v < 0 || v > 1e12) {
                rc = sn_errf(err, errlen, SN_EINVAL, "%s: tensor '%s': bad dim", path, m->key);
                goto fail;
            }
            e->shape[i] = (int64_t)v;
            numel *= (uint64_t)v;
        }
        double b = nn__json_at(offs, 0)->num, en = nn__json_at(offs, 1)->num;
        if (b < 0 || en < b || en > (double)dsize) {
            rc = sn_errf(err, errlen, SN_EINVAL, "%s: tensor '%s': data [%.0f, %.0f) outside the "
                         "%zu data bytes (truncated file?)", path, m->key, b, en, dsize);
            goto fail;
        }
        e->nbytes = (size_t)(en - b);
        if (e->nbytes != numel * (uint64_t)es) {
            rc = sn_errf(err, errlen, SN_EINVAL, "%s: tensor '%s': %zu bytes for %llu x %s", path,
                         m->key, e->nbytes, (unsigned long long)numel, dt);
            goto fail;
        }
        e->data = data + (size_t)b;
        st->n++;
    }
    *out = st;
    return 0;
fail:
    nn_safetensors_close(st);
    return rc;
}

int nn_safetensors_count(const nn_safetensors *st) { return st->n; }

const nn_st_entry *nn_safetensors_at(const nn_safetensors *st, int i)
{
    return i >= 0 && i < st->n ? &st->e[i] : NULL;
}

const nn_st_entry *nn_safetensors_find(const nn_safetensors *st, const char *name)
{
    for (int i = 0; i < st->n; i++)
        if (!strcmp(st->e[i].name, name)) return &st->e[i];
    return NULL;
}

int nn_st_entry_to_f32(const nn_st_entry *e, float **out, char *err, size_t errlen)
{
    size_t n = 1;
    for (int i = 0; i < e->ndim; i++) n *= (size_t)e->shape[i];
    float *f = malloc(sizeof(float) * (n ? n : 1));
    if (!f) return sn_errf(err, errlen, SN_ENOMEM, "out of memory");
    const unsigned char *p = e->data;
    if (!strcmp(e->dtype, "F32")) {
        memcpy(f, p, sizeof(float) * n);   /* little-endian hosts only (x86-64, aarch64) */
    } else if (!strcmp(e->dtype, "F16")) {
        for (size_t i = 0; i < n; i++) f[i] = nn_f16_to_f32((uint16_t)(p[2 * i] | p[2 * i + 1] << 8));
    } else if (!strcmp(e->dtype, "BF16")) {
        for (size_t i = 0; i < n; i++) {
            uint32_t u = (uint32_t)(p[2 * i] | p[2 * i + 1] << 8) << 16;
            memcpy(&f[i], &u, 4);
        }
    } else {
        free(f);
        return sn_errf(err, errlen, SN_EINVAL, "tensor '%s': dtype %s is not a float type",
                       e->name, e->dtype);
    }
    *out = f;
    return 0;
}
