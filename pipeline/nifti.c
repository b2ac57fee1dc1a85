/* pipeline/nifti.c — NIfTI-1 writer (see nifti.h). The 348-byte header is laid out byte by
 * byte at the offsets of nifti1.h (little endian host assumed, as the rest of the node), followed
 * by an empty extension flag, so the voxels start at 352. */
#include "pipeline/nifti.h"

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "common/status.h"
#include "common/util.h"
#include "pipeline/geometry.h"

#define NII_HDR 348
#define NII_VOX_OFFSET 352

static void put_i32(uint8_t *h, int off, int32_t v) { memcpy(h + off, &v, 4); }
static void put_i16(uint8_t *h, int off, int16_t v) { memcpy(h + off, &v, 2); }
static void put_f32(uint8_t *h, int off, double v)
{
    float f = (float)v;
    memcpy(h + off, &f, 4);
}

typedef struct sink {
    FILE *f;
    gzFile gz;
} sink;

static int sink_write(sink *s, const void *p, size_t n)
{
    if (s->gz) {
        const uint8_t *b = p;
        while (n > 0) {
            unsigned k = n > (1u << 30) ? (1u << 30) : (unsigned)n;
            if (gzwrite(s->gz, b, k) != (int)k) return -1;
            b += k;
            n -= k;
        }
        return 0;
    }
    return fwrite(p, 1, n, s->f) == n ? 0 : -1;
}

static int ends_with(const char *s, const char *suf)
{
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && strcmp(s + a - b, suf) == 0;
}

int pipeline_nifti_write(const pipeline_volume *v, const char *path, pipeline_nifti_type type,
                         pipeline_nifti_type *chosen, char *err, size_t errlen)
{
    if (!v || !path || !v->data || v->nx < 1 || v->ny < 1 || v->nz < 1)
        return sn_errf(err, errlen, SN_EINVAL, "no volume or path");
    if (v->nx > 32767 || v->ny > 32767 || v->nz > 32767)
        return sn_errf(err, errlen, SN_EINVAL, "volume %dx%dx%d too large for NIfTI-1", v->nx,
                       v->ny, v->nz);
    const size_t n = (size_t)v->nx * v->ny * v->nz;
    int fits16 = 1;
    for (size_t i = 0; i < n && fits16; i++) {
        float x = v->data[i];
        if (!(x >= -32768.0f && x <= 32767.0f) || x != (float)(int32_t)x) fits16 = 0;
    }
    if (type == PIPELINE_NIFTI_INT16 && !fits16)
        return sn_errf(err, errlen, SN_EINVAL, "%s: values are not all int16 integers", path);
    pipeline_nifti_type t = type == PIPELINE_NIFTI_AUTO
                                ? (fits16 ? PIPELINE_NIFTI_INT16 : PIPELINE_NIFTI_FLOAT32)
                                : type;

    uint8_t h[NII_VOX_OFFSET];
    memset(h, 0, sizeof h);
    put_i32(h, 0, NII_HDR);
    h[38] = 'r';
    int16_t dim[8] = {3, (int16_t)v->nx, (int16_t)v->ny, (int16_t)v->nz, 1, 1, 1, 1};
    for (int i = 0; i < 8; i++) put_i16(h, 40 + 2 * i, dim[i]);
    put_i16(h, 70, t == PIPELINE_NIFTI_INT16 ? 4 : 16);     /* DT_INT16 / DT_FLOAT32 */
    put_i16(h, 72, t == PIPELINE_NIFTI_INT16 ? 16 : 32);

    /* Rows are stored bottom-up (j reversed), as dcm2niix does, so that both tools' files have
     * the same layout and affine; the world position of every voxel is unchanged. */
    double org[3], dir[9], srow[12], quat[3], qfac, off[3];
    memcpy(dir, v->direction, sizeof dir);
    for (int a = 0; a < 3; a++) {
        org[a] = v->origin[a] + (double)(v->ny - 1) * v->spacing[1] * v->direction[3 * a + 1];
        dir[3 * a + 1] = -v->direction[3 * a + 1];
    }
    pipeline_geom_nifti_affine(org, dir, v->spacing, srow);
    pipeline_geom_nifti_quatern(srow, v->spacing, quat, &qfac, off);
    double pixdim[8] = {qfac, v->spacing[0], v->spacing[1], v->spacing[2], 0, 0, 0, 0};
    for (int i = 0; i < 8; i++) put_f32(h, 76 + 4 * i, pixdim[i]);
    put_f32(h, 108, NII_VOX_OFFSET);
    put_f32(h, 112, 1.0);                                   /* scl_slope */
    put_f32(h, 116, 0.0);                                   /* scl_inter */
    h[123] = 2 | 8;                                         /* NIFTI_UNITS_MM | NIFTI_UNITS_SEC */
    char desc[80];
    snprintf(desc, sizeof desc, "segnode %s %s%s%s", v->modality[0] ? v->modality : "-",
             v->unit[0] ? v->unit : "-", v->filled_slices ? " gaps-filled" : "",
             v->series_uid[0] ? " " : "");
    size_t dl = strlen(desc);
    sn_strlcpy(desc + dl, v->series_uid, sizeof desc - dl);
    memcpy(h + 148, desc, strlen(desc));
    put_i16(h, 252, 1);                                     /* qform_code: scanner anat */
    put_i16(h, 254, 1);                                     /* sform_code */
    for (int i = 0; i < 3; i++) put_f32(h, 256 + 4 * i, quat[i]);
    for (int i = 0; i < 3; i++) put_f32(h, 268 + 4 * i, off[i]);
    for (int i = 0; i < 12; i++) put_f32(h, 280 + 4 * i, srow[i]);
    memcpy(h + 344, "n+1", 4);
    /* bytes 348..351: extension flag 0 (no extensions) */

    char tmp[4096];
    if ((size_t)snprintf(tmp, sizeof tmp, "%s.tmp%ld", path, (long)getpid()) >= sizeof tmp)
        return sn_errf(err, errlen, SN_EINVAL, "path too long");
    sink s = {0};
    if (ends_with(path, ".gz")) {
        s.gz = gzopen(tmp, "wb6");
        if (!s.gz) return sn_errf(err, errlen, SN_EIO, "cannot create %s: %s", tmp, strerror(errno));
        gzbuffer(s.gz, 1 << 18);
    } else {
        s.f = fopen(tmp, "wb");
        if (!s.f) return sn_errf(err, errlen, SN_EIO, "cannot create %s: %s", tmp, strerror(errno));
        setvbuf(s.f, NULL, _IOFBF, 1 << 20);
    }
    int bad = sink_write(&s, h, sizeof h);
    const size_t nx = (size_t)v->nx;
    int16_t *row16 = t == PIPELINE_NIFTI_INT16 ? malloc(nx * sizeof *row16) : NULL;
    if (t == PIPELINE_NIFTI_INT16 && !row16) bad = 1;
    for (int k = 0; k < v->nz && !bad; k++)
        for (int j = v->ny - 1; j >= 0 && !bad; j--) {
            const float *src = v->data + nx * ((size_t)j + (size_t)v->ny * (size_t)k);
            if (row16) {
                for (size_t i = 0; i < nx; i++) row16[i] = (int16_t)src[i];  /* integral */
                bad = sink_write(&s, row16, nx * sizeof *row16);
            } else {
                bad = sink_write(&s, src, nx * sizeof *src);
            }
        }
    free(row16);
    int closed = s.gz ? gzclose(s.gz) == Z_OK : fclose(s.f) == 0;
    if (bad || !closed) {
        unlink(tmp);
        return sn_errf(err, errlen, SN_EIO, "writing %s failed (disk full?)", path);
    }
    if (rename(tmp, path) != 0) {
        int e = errno;
        unlink(tmp);
        return sn_errf(err, errlen, SN_EIO, "cannot rename %s to %s: %s", tmp, path, strerror(e));
    }
    if (chosen) *chosen = t;
    return SN_OK;
}
