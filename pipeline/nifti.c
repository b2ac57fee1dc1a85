/* pipeline/nifti.c — NIfTI-1 writer (see nifti.h). The 348-byte header is laid out byte by
 * byte at the offsets of nifti1.h (little endian host assumed, as the rest of the node), followed
 * by an empty extension flag, so the voxels start at 352. A .gz file is one gzip member deflated
 * (level 6) by all CPUs in parallel slabs, as pigz does. */
#include "pipeline/nifti.h"

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <fcntl.h>
#include <pthread.h>
#include <sys/uio.h>
#include <zlib.h>

#include "common/status.h"
#include "common/util.h"
#include "pipeline/geometry.h"

#define NII_HDR 348
#define NII_VOX_OFFSET 352
#define NII_IOV_MAX 1024            /* POSIX minimum of IOV_MAX is 16; Linux has 1024 */

static void put_i32(uint8_t *h, int off, int32_t v) { memcpy(h + off, &v, 4); }
static void put_i16(uint8_t *h, int off, int16_t v) { memcpy(h + off, &v, 2); }
static void put_f32(uint8_t *h, int off, double v)
{
    float f = (float)v;
    memcpy(h + off, &f, 4);
}

/* Write all of iov[0..n-1] to fd, resuming after partial writes and EINTR. */
static int write_iov(int fd, struct iovec *iov, int n)
{
    while (n > 0) {
        ssize_t w = writev(fd, iov, n > NII_IOV_MAX ? NII_IOV_MAX : n);
        if (w < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        while (n > 0 && (size_t)w >= iov->iov_len) {
            w -= (ssize_t)iov->iov_len;
            iov++;
            n--;
        }
        if (n > 0) {
            iov->iov_base = (char *)iov->iov_base + w;
            iov->iov_len -= (size_t)w;
        }
    }
    return 0;
}

/* 1 if every float is an integer in [-32768, 32767]. Branch-free over blocks so that it
 * vectorises; NaN fails (the clamp changes it). */
static int floats_fit_int16(const float *x, size_t n)
{
    for (size_t at = 0; at < n; at += 4096) {
        size_t m = n - at < 4096 ? n - at : 4096;
        int ok = 1;
        for (size_t i = 0; i < m; i++) {
            float v = x[at + i];
            float c = fminf(fmaxf(v, -32768.0f), 32767.0f);
            ok &= (c == v) & ((float)(int32_t)c == c);
        }
        if (!ok) return 0;
    }
    return 1;
}

/* The voxel stream: slices in order, rows bottom-up, in the written type. */
typedef struct vox_src {
    const pipeline_volume *v;
    int to16;                   /* written type int16 (else float32) */
} vox_src;

/* Point iov[0..ny-1] at the rows of slice k in file order; `buf` (plane * esz bytes) takes
 * the slice when the stored type is not the written one. */
static void slice_rows(const vox_src *src, int k, uint8_t *buf, struct iovec *iov)
{
    const pipeline_volume *v = src->v;
    const size_t nx = (size_t)v->nx, ny = (size_t)v->ny, plane = nx * ny, s0 = plane * (size_t)k;
    const size_t esz = src->to16 ? 2 : 4;
    const uint8_t *slice;
    if (src->to16 == (v->data16 != NULL)) {
        slice = v->data16 ? (const uint8_t *)(v->data16 + s0) : (const uint8_t *)(v->data + s0);
    } else {
        /* int16 integers <-> float32: exact either way (the floats were checked). */
        if (v->data16)
            for (size_t i = 0; i < plane; i++) ((float *)buf)[i] = (float)v->data16[s0 + i];
        else
            for (size_t i = 0; i < plane; i++) ((int16_t *)buf)[i] = (int16_t)v->data[s0 + i];
        slice = buf;
    }
    for (size_t j = 0; j < ny; j++) {
        iov[j].iov_base = (void *)(slice + (ny - 1 - j) * nx * esz);
        iov[j].iov_len = nx * esz;
    }
}

/* One part of a gzip stream made in parallel, as pigz does: raw deflate of slices [k0, k1)
 * (after `pre`, the header, for the first part), ended by a sync flush (by the final block for
 * the last part) so that the parts concatenate into one deflate stream; crc/len of its input. */
typedef struct gz_part {
    const vox_src *src;
    const uint8_t *pre;
    size_t npre;
    int k0, k1, last;
    uint8_t *out;
    size_t nout;
    uLong crc;
    size_t len;
    int bad;
} gz_part;

static int gz_feed(z_stream *zs, gz_part *p, const void *b, size_t n, int flush)
{
    zs->next_in = (Bytef *)b;
    zs->avail_in = (uInt)n;
    p->crc = crc32(p->crc, b, (uInt)n);
    p->len += n;
    int rc = deflate(zs, flush);
    /* The output buffer is deflateBound-sized: everything fits in one call. */
    return (rc == Z_OK || rc == Z_STREAM_END || rc == Z_BUF_ERROR) && zs->avail_in == 0 ? 0 : -1;
}

static void *gz_part_run(void *arg)
{
    gz_part *p = arg;
    const pipeline_volume *v = p->src->v;
    const size_t nx = (size_t)v->nx, ny = (size_t)v->ny, esz = p->src->to16 ? 2 : 4;
    const size_t in = p->npre + nx * ny * esz * (size_t)(p->k1 - p->k0);
    z_stream zs;
    memset(&zs, 0, sizeof zs);
    p->crc = crc32(0, NULL, 0);
    p->bad = 1;
    if (deflateInit2(&zs, 6, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY) != Z_OK) return NULL;
    size_t cap = deflateBound(&zs, (uLong)in) + 64 + 6 * ny * (size_t)(p->k1 - p->k0);
    struct iovec *iov = malloc(sizeof *iov * ny);
    uint8_t *buf = malloc(nx * ny * esz);
    if ((p->out = malloc(cap)) && iov && buf) {
        zs.next_out = p->out;
        zs.avail_out = (uInt)(cap > UINT32_MAX ? UINT32_MAX : cap);
        int bad = p->npre ? gz_feed(&zs, p, p->pre, p->npre, Z_NO_FLUSH) : 0;
        for (int k = p->k0; k < p->k1 && !bad; k++) {
            slice_rows(p->src, k, buf, iov);
            for (size_t j = 0; j < ny && !bad; j++)
                bad = gz_feed(&zs, p, iov[j].iov_base, iov[j].iov_len, Z_NO_FLUSH);
        }
        if (!bad) bad = gz_feed(&zs, p, "", 0, p->last ? Z_FINISH : Z_SYNC_FLUSH);
        p->nout = cap - zs.avail_out;
        p->bad = bad;
    }
    deflateEnd(&zs);
    free(iov);
    free(buf);
    return NULL;
}

/* Write header + voxels to fd as one gzip member, deflated by up to `nthreads` threads. */
static int gz_write_parallel(int fd, const vox_src *src, const uint8_t *h, size_t nh,
                             int nthreads)
{
    const int nz = src->v->nz;
    if (nthreads > nz) nthreads = nz;
    if (nthreads > 16) nthreads = 16;
    if (nthreads < 1) nthreads = 1;
    gz_part parts[16];
    pthread_t tid[16];
    int started[16] = {0};
    memset(parts, 0, sizeof parts);
    for (int t = 0; t < nthreads; t++) {
        gz_part *p = &parts[t];
        p->src = src;
        p->pre = t == 0 ? h : NULL;
        p->npre = t == 0 ? nh : 0;
        p->k0 = (int)((long)nz * t / nthreads);
        p->k1 = (int)((long)nz * (t + 1) / nthreads);
        p->last = t == nthreads - 1;
        if (t > 0) started[t] = pthread_create(&tid[t], NULL, gz_part_run, p) == 0;
        if (t > 0 && !started[t]) gz_part_run(p);
    }
    gz_part_run(&parts[0]);
    for (int t = 1; t < nthreads; t++)
        if (started[t]) pthread_join(tid[t], NULL);
    int bad = 0;
    uLong crc = parts[0].crc;
    size_t len = parts[0].len;
    for (int t = 0; t < nthreads; t++) {
        bad |= parts[t].bad;
        if (t > 0) {
            crc = crc32_combine(crc, parts[t].crc, (z_off_t)parts[t].len);
            len += parts[t].len;
        }
    }
    /* gzip header: deflate, no name, no mtime, OS unknown (RFC 1952); trailer: CRC-32, ISIZE */
    uint8_t gh[10] = {0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255};
    uint8_t tr[8];
    uint32_t c32 = (uint32_t)crc, isz = (uint32_t)len;
    memcpy(tr, &c32, 4);
    memcpy(tr + 4, &isz, 4);
    if (!bad) {
        struct iovec iv[18];
        int n = 0;
        iv[n++] = (struct iovec){gh, sizeof gh};
        for (int t = 0; t < nthreads; t++) iv[n++] = (struct iovec){parts[t].out, parts[t].nout};
        iv[n++] = (struct iovec){tr, sizeof tr};
        bad = write_iov(fd, iv, n);
    }
    for (int t = 0; t < nthreads; t++) free(parts[t].out);
    return bad ? -1 : 0;
}

static int ends_with(const char *s, const char *suf)
{
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && strcmp(s + a - b, suf) == 0;
}

int pipeline_nifti_write(const pipeline_volume *v, const char *path, pipeline_nifti_type type,
                         pipeline_nifti_type *chosen, char *err, size_t errlen)
{
    if (!v || !path || (!v->data && !v->data16) || v->nx < 1 || v->ny < 1 || v->nz < 1)
        return sn_errf(err, errlen, SN_EINVAL, "no volume or path");
    if (v->nx > 32767 || v->ny > 32767 || v->nz > 32767)
        return sn_errf(err, errlen, SN_EINVAL, "volume %dx%dx%d too large for NIfTI-1", v->nx,
                       v->ny, v->nz);
    const size_t n = (size_t)v->nx * v->ny * v->nz;
    /* data16 holds int16 integers by contract; floats are checked. */
    int fits16 = v->data16 ? 1 : floats_fit_int16(v->data, n);
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
    const int gz = ends_with(path, ".gz");
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
    if (fd < 0) return sn_errf(err, errlen, SN_EIO, "cannot create %s: %s", tmp, strerror(errno));
    const vox_src src = {v, t == PIPELINE_NIFTI_INT16};
    int bad;
    if (gz) {
        long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
        bad = gz_write_parallel(fd, &src, h, sizeof h, ncpu > 0 ? (int)ncpu : 1);
    } else {
        /* Rows go out bottom-up, handed to writev straight from the volume when the stored
         * type is the written one (no copy), else one converted slice at a time. */
        const size_t plane = (size_t)v->nx * v->ny;
        struct iovec *iov = malloc(sizeof *iov * (size_t)v->ny);
        uint8_t *buf = malloc(plane * (src.to16 ? 2 : 4));
        struct iovec hv = {h, sizeof h};
        bad = !iov || !buf || write_iov(fd, &hv, 1);
        for (int k = 0; k < v->nz && !bad; k++) {
            slice_rows(&src, k, buf, iov);
            bad = write_iov(fd, iov, v->ny);
        }
        free(iov);
        free(buf);
    }
    int closed = close(fd) == 0;
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
