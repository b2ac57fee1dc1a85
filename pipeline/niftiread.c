/* pipeline/niftiread.c — NIfTI-1 label reader (see niftiread.h). Plain C with zlib (gzread reads
 * uncompressed files too). Handles either byte order. Not a general NIfTI reader: 3D (or 4D/5D
 * with one volume) scalar images only. */
#include "pipeline/niftiread.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "common/status.h"

typedef struct hdr {
    int swap;
    int dim[8];
    int datatype, bitpix;
    double vox_offset, slope, inter;
    double aff[3][4]; /* voxel -> RAS */
} hdr;

static void swapn(void *p, int n)
{
    unsigned char *b = p;
    for (int i = 0; i < n / 2; i++) {
        unsigned char t = b[i];
        b[i] = b[n - 1 - i];
        b[n - 1 - i] = t;
    }
}

static int16_t g16(const unsigned char *h, int off, int swap)
{
    int16_t v;
    memcpy(&v, h + off, 2);
    if (swap) swapn(&v, 2);
    return v;
}

static double gf(const unsigned char *h, int off, int swap)
{
    float v;
    memcpy(&v, h + off, 4);
    if (swap) swapn(&v, 4);
    return v;
}

static int parse(const unsigned char *h, hdr *o, const char *path, char *err, size_t errlen)
{
    int32_t sz;
    memcpy(&sz, h, 4);
    o->swap = 0;
    if (sz != 348) {
        swapn(&sz, 4);
        if (sz != 348)
            return sn_errf(err, errlen, SN_EINVAL, "%s: not a NIfTI-1 file (sizeof_hdr)", path);
        o->swap = 1;
    }
    if (memcmp(h + 344, "n+1", 4) != 0 && memcmp(h + 344, "ni1", 4) != 0)
        return sn_errf(err, errlen, SN_EINVAL, "%s: not a NIfTI-1 file (magic)", path);
    if (memcmp(h + 344, "ni1", 4) == 0)
        return sn_errf(err, errlen, SN_EUNSUPPORTED, "%s: two-file NIfTI (.hdr/.img) is not supported", path);
    for (int i = 0; i < 8; i++)
        o->dim[i] = g16(h, 40 + 2 * i, o->swap);
    o->datatype = g16(h, 70, o->swap);
    o->bitpix = g16(h, 72, o->swap);
    o->vox_offset = gf(h, 108, o->swap);
    o->slope = gf(h, 112, o->swap);
    o->inter = gf(h, 116, o->swap);
    int qcode = g16(h, 252, o->swap), scode = g16(h, 254, o->swap);
    if (scode > 0) {
        for (int r = 0; r < 3; r++)
            for (int c = 0; c < 4; c++)
                o->aff[r][c] = gf(h, 280 + 16 * r + 4 * c, o->swap);
    } else if (qcode > 0) {
        double b = gf(h, 256, o->swap), c = gf(h, 260, o->swap), d = gf(h, 264, o->swap);
        double a = 1.0 - (b * b + c * c + d * d);
        a = a < 1e-7 ? 0.0 : sqrt(a);
        double qfac = gf(h, 76, o->swap) < 0 ? -1.0 : 1.0;
        double px = gf(h, 80, o->swap), py = gf(h, 84, o->swap), pz = gf(h, 88, o->swap) * qfac;
        double R[3][3] = {{a * a + b * b - c * c - d * d, 2 * (b * c - a * d), 2 * (b * d + a * c)},
                          {2 * (b * c + a * d), a * a + c * c - b * b - d * d, 2 * (c * d - a * b)},
                          {2 * (b * d - a * c), 2 * (c * d + a * b), a * a + d * d - c * c - b * b}};
        double p[3] = {px, py, pz};
        for (int r = 0; r < 3; r++) {
            for (int k = 0; k < 3; k++)
                o->aff[r][k] = R[r][k] * p[k];
            o->aff[r][3] = gf(h, 268 + 4 * r, o->swap);
        }
    } else {
        return sn_errf(err, errlen, SN_EINVAL, "%s: neither sform nor qform is set: the label grid's position is unknown", path);
    }
    return 0;
}

/* RAS position of NIfTI voxel n, and LPS->RAS of a series voxel. */
static void nifti_pos(const hdr *h, const double n[3], double out[3])
{
    for (int r = 0; r < 3; r++)
        out[r] = h->aff[r][0] * n[0] + h->aff[r][1] * n[1] + h->aff[r][2] * n[2] + h->aff[r][3];
}

static void series_pos(const pipeline_volume *g, const double v[3], double out[3])
{
    for (int r = 0; r < 3; r++) {
        double x = g->origin[r];
        for (int a = 0; a < 3; a++)
            x += v[a] * g->spacing[a] * g->direction[3 * r + a];
        out[r] = r < 2 ? -x : x; /* LPS -> RAS */
    }
}

static int invert3(const double m[3][3], double inv[3][3])
{
    double det = m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1]) - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0]) +
                 m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0]);
    if (fabs(det) < 1e-12)
        return -1;
    inv[0][0] = (m[1][1] * m[2][2] - m[1][2] * m[2][1]) / det;
    inv[0][1] = (m[0][2] * m[2][1] - m[0][1] * m[2][2]) / det;
    inv[0][2] = (m[0][1] * m[1][2] - m[0][2] * m[1][1]) / det;
    inv[1][0] = (m[1][2] * m[2][0] - m[1][0] * m[2][2]) / det;
    inv[1][1] = (m[0][0] * m[2][2] - m[0][2] * m[2][0]) / det;
    inv[1][2] = (m[0][2] * m[1][0] - m[0][0] * m[1][2]) / det;
    inv[2][0] = (m[1][0] * m[2][1] - m[1][1] * m[2][0]) / det;
    inv[2][1] = (m[0][1] * m[2][0] - m[0][0] * m[2][1]) / det;
    inv[2][2] = (m[0][0] * m[1][1] - m[0][1] * m[1][0]) / det;
    return 0;
}

int pipeline_nifti_read_labels(const char *path, const pipeline_volume *g, uint16_t *out, char *err,
                               size_t errlen)
{
    if (!path || !g || !out)
        return sn_errf(err, errlen, SN_EINVAL, "NIfTI reader: missing argument");
    gzFile f = gzopen(path, "rb");
    if (!f)
        return sn_errf(err, errlen, errno == ENOENT ? SN_ENOENT : SN_EIO, "%s: %s", path, strerror(errno));
    unsigned char raw[348];
    void *data = NULL;
    int rc = 0;
    hdr h;
    memset(&h, 0, sizeof h);
    if (gzread(f, raw, sizeof raw) != (int)sizeof raw) {
        rc = sn_errf(err, errlen, SN_EINVAL, "%s: too short for a NIfTI-1 header", path);
        goto done;
    }
    if ((rc = parse(raw, &h, path, err, errlen)))
        goto done;
    if (h.dim[0] < 3 || h.dim[0] > 7) {
        rc = sn_errf(err, errlen, SN_EINVAL, "%s: %d-dimensional image (3 expected)", path, h.dim[0]);
        goto done;
    }
    for (int i = 4; i <= h.dim[0]; i++)
        if (h.dim[i] > 1) {
            rc = sn_errf(err, errlen, SN_EINVAL, "%s: more than one volume (dim[%d] = %d)", path, i, h.dim[i]);
            goto done;
        }
    int bytes;
    switch (h.datatype) {
    case 2: case 256: bytes = 1; break;          /* uint8, int8 */
    case 4: case 512: bytes = 2; break;          /* int16, uint16 */
    case 8: case 768: case 16: bytes = 4; break; /* int32, uint32, float32 */
    case 64: bytes = 8; break;                   /* float64 */
    default:
        rc = sn_errf(err, errlen, SN_EUNSUPPORTED, "%s: NIfTI data type %d is not a scalar label type", path, h.datatype);
        goto done;
    }

    /* The grid: which NIfTI voxel each series voxel is (a signed axis permutation + offset). */
    {
        double A[3][3], Ai[3][3];
        for (int r = 0; r < 3; r++)
            for (int c = 0; c < 3; c++)
                A[r][c] = h.aff[r][c];
        char gtxt[200], ntxt[200];
        snprintf(gtxt, sizeof gtxt, "%dx%dx%d, voxel 0 at RAS %.3f,%.3f,%.3f, spacing %.4gx%.4gx%.4g", g->nx, g->ny,
                 g->nz, -g->origin[0], -g->origin[1], g->origin[2], g->spacing[0], g->spacing[1], g->spacing[2]);
        snprintf(ntxt, sizeof ntxt, "%dx%dx%d, voxel 0 at RAS %.3f,%.3f,%.3f", h.dim[1], h.dim[2], h.dim[3],
                 h.aff[0][3], h.aff[1][3], h.aff[2][3]);
        if (invert3(A, Ai)) {
            rc = sn_errf(err, errlen, SN_EINVAL, "%s: singular affine", path);
            goto done;
        }
        /* n = Ai * (P - t); map(0), map(e_a) - map(0) */
        long off[3], ax[3][3];
        double P[3], n0[3];
        double z[3] = {0, 0, 0};
        series_pos(g, z, P);
        for (int r = 0; r < 3; r++) {
            n0[r] = 0;
            for (int c = 0; c < 3; c++)
                n0[r] += Ai[r][c] * (P[c] - h.aff[c][3]);
            off[r] = lround(n0[r]);
        }
        int ok = 1;
        for (int a = 0; a < 3 && ok; a++) {
            double e[3] = {0, 0, 0}, Pa[3];
            e[a] = 1;
            series_pos(g, e, Pa);
            for (int r = 0; r < 3; r++) {
                double na = 0;
                for (int c = 0; c < 3; c++)
                    na += Ai[r][c] * (Pa[c] - h.aff[c][3]);
                ax[a][r] = lround(na - n0[r]);
            }
            int nz_ = 0;
            for (int r = 0; r < 3; r++)
                nz_ += ax[a][r] != 0 && labs(ax[a][r]) == 1;
            for (int r = 0; r < 3; r++)
                if (labs(ax[a][r]) > 1) nz_ = 0;
            ok = nz_ == 1;
        }
        int nd[3] = {g->nx, g->ny, g->nz};
        /* every series axis onto a distinct NIfTI axis of the same length, inside the file */
        for (int r = 0; r < 3 && ok; r++) {
            int hits = 0;
            for (int a = 0; a < 3; a++)
                if (ax[a][r]) {
                    hits++;
                    if (h.dim[1 + r] != nd[a]) ok = 0;
                    long end = off[r] + ax[a][r] * (nd[a] - 1);
                    if (off[r] < 0 || off[r] >= h.dim[1 + r] || end < 0 || end >= h.dim[1 + r]) ok = 0;
                }
            if (hits != 1) ok = 0;
        }
        /* the 8 corners, exactly (1e-3 mm) */
        for (int cn = 0; cn < 8 && ok; cn++) {
            double v[3] = {(cn & 1) ? nd[0] - 1 : 0, (cn & 2) ? nd[1] - 1 : 0, (cn & 4) ? nd[2] - 1 : 0};
            double n[3], Ps[3], Pn[3];
            for (int r = 0; r < 3; r++) {
                n[r] = (double)off[r];
                for (int a = 0; a < 3; a++)
                    n[r] += (double)ax[a][r] * v[a];
            }
            series_pos(g, v, Ps);
            nifti_pos(&h, n, Pn);
            for (int r = 0; r < 3; r++)
                if (fabs(Ps[r] - Pn[r]) > 1e-3) ok = 0;
        }
        if (!ok) {
            rc = sn_errf(err, errlen, SN_EINVAL,
                         "%s: label grid (%s) does not match the series grid (%s) to 1e-3 mm; resample the labels onto the series first",
                         path, ntxt, gtxt);
            goto done;
        }

        size_t n = (size_t)h.dim[1] * (size_t)h.dim[2] * (size_t)h.dim[3];
        if (!(data = malloc(n * (size_t)bytes))) {
            rc = sn_errf(err, errlen, SN_ENOMEM, "%s: out of memory", path);
            goto done;
        }
        long skip = (long)h.vox_offset - 348;
        if (skip < 0) skip = 0;
        if (skip > 0 && gzseek(f, (z_off_t)h.vox_offset, SEEK_SET) < 0) {
            rc = sn_errf(err, errlen, SN_EIO, "%s: cannot seek to the voxel data", path);
            goto done;
        }
        if ((size_t)gzread(f, data, (unsigned)(n * (size_t)bytes)) != n * (size_t)bytes) {
            rc = sn_errf(err, errlen, SN_EINVAL, "%s: truncated voxel data", path);
            goto done;
        }
        const int scale = h.slope != 0 && !(h.slope == 1 && h.inter == 0);
        const size_t sx = 1, sy = (size_t)h.dim[1], sz = (size_t)h.dim[1] * (size_t)h.dim[2];
        const size_t strides[3] = {sx, sy, sz};
        for (int k = 0; k < g->nz; k++)
            for (int j = 0; j < g->ny; j++)
                for (int i = 0; i < g->nx; i++) {
                    size_t idx = 0;
                    for (int r = 0; r < 3; r++)
                        idx += (size_t)(off[r] + ax[0][r] * i + ax[1][r] * j + ax[2][r] * k) * strides[r];
                    unsigned char b[8];
                    memcpy(b, (unsigned char *)data + idx * (size_t)bytes, (size_t)bytes);
                    if (h.swap) swapn(b, bytes);
                    double v;
                    switch (h.datatype) {
                    case 2: v = b[0]; break;
                    case 256: v = (int8_t)b[0]; break;
                    case 4: { int16_t t; memcpy(&t, b, 2); v = t; } break;
                    case 512: { uint16_t t; memcpy(&t, b, 2); v = t; } break;
                    case 8: { int32_t t; memcpy(&t, b, 4); v = t; } break;
                    case 768: { uint32_t t; memcpy(&t, b, 4); v = t; } break;
                    case 16: { float t; memcpy(&t, b, 4); v = t; } break;
                    default: { double t; memcpy(&t, b, 8); v = t; } break;
                    }
                    if (scale) v = v * h.slope + h.inter;
                    double rv = floor(v + 0.5);
                    if (!(fabs(v - rv) <= 1e-3) || rv < 0 || rv > 65535) {
                        rc = sn_errf(err, errlen, SN_EINVAL, "%s: voxel %d,%d,%d holds %g, not a label (integer 0..65535)",
                                     path, i, j, k, v);
                        goto done;
                    }
                    out[(size_t)i + (size_t)g->nx * ((size_t)j + (size_t)g->ny * (size_t)k)] = (uint16_t)rv;
                }
    }
done:
    free(data);
    gzclose(f);
    return rc;
}
