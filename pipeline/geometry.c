/* pipeline/geometry.c — slice-stack checks and NIfTI affine math (see geometry.h).
 * Slices are sorted by their position along the normal of Image Orientation (never by Instance
 * Number); the grid's slice step comes from positions, not from Slice Thickness. */
#include "pipeline/geometry.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/status.h"

#define IOP_TOL 1e-3      /* direction cosines compared between slices */
#define DUP_TOL 1e-3      /* mm: two slices this close are at the same position */

static double dot3(const double *a, const double *b)
{
    return a[0] * b[0] + a[1] * b[1] + a[2] * b[2];
}

typedef struct sortkey {
    double d;
    int idx;
} sortkey;

static int cmp_key(const void *a, const void *b)
{
    const sortkey *x = a, *y = b;
    if (x->d < y->d) return -1;
    if (x->d > y->d) return 1;
    return x->idx - y->idx;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int pipeline_geom_stack_build(const pipeline_geom_slice *s, int n, double single_dz, double tol,
                              int fill_gaps, pipeline_geom_stack *st, int *order, int *kpos,
                              char *err, size_t errlen)
{
    if (n < 1) return sn_errf(err, errlen, SN_EINVAL, "no slices");
    for (int i = 0; i < n; i++) {
        if (!s[i].has_iop)
            return sn_errf(err, errlen, SN_EDICOM, "missing Image Orientation (Patient) on slice "
                           "%d of %d", i + 1, n);
        if (!s[i].has_ipp)
            return sn_errf(err, errlen, SN_EDICOM, "missing Image Position (Patient) on slice %d "
                           "of %d", i + 1, n);
    }
    double r[3], c[3], nrm[3];
    memcpy(r, s[0].iop, sizeof r);
    memcpy(c, s[0].iop + 3, sizeof c);
    double lr = sqrt(dot3(r, r)), lc = sqrt(dot3(c, c));
    if (lr < 0.5 || lc < 0.5 || fabs(lr - 1) > 1e-2 || fabs(lc - 1) > 1e-2)
        return sn_errf(err, errlen, SN_EDICOM, "Image Orientation (Patient) is not made of unit "
                       "vectors (|row| %.4f, |col| %.4f)", lr, lc);
    for (int a = 0; a < 3; a++) { r[a] /= lr; c[a] /= lc; }
    if (fabs(dot3(r, c)) > 1e-3)
        return sn_errf(err, errlen, SN_EDICOM, "Image Orientation (Patient) is not orthogonal "
                       "(row . col = %.4f)", dot3(r, c));
    for (int i = 1; i < n; i++)
        for (int a = 0; a < 6; a++)
            if (fabs(s[i].iop[a] - s[0].iop[a]) > IOP_TOL)
                return sn_errf(err, errlen, SN_EDICOM, "inconsistent Image Orientation (Patient) "
                               "between slices: %.4f\\%.4f\\%.4f\\%.4f\\%.4f\\%.4f vs "
                               "%.4f\\%.4f\\%.4f\\%.4f\\%.4f\\%.4f",
                               s[0].iop[0], s[0].iop[1], s[0].iop[2], s[0].iop[3], s[0].iop[4],
                               s[0].iop[5], s[i].iop[0], s[i].iop[1], s[i].iop[2], s[i].iop[3],
                               s[i].iop[4], s[i].iop[5]);
    nrm[0] = r[1] * c[2] - r[2] * c[1];
    nrm[1] = r[2] * c[0] - r[0] * c[2];
    nrm[2] = r[0] * c[1] - r[1] * c[0];
    double ln = sqrt(dot3(nrm, nrm));
    for (int a = 0; a < 3; a++) nrm[a] /= ln;

    sortkey *key = malloc(sizeof *key * (size_t)n);
    double *step = malloc(sizeof *step * (size_t)(n > 1 ? n : 1));
    if (!key || !step) {
        free(key);
        free(step);
        return sn_errf(err, errlen, SN_ENOMEM, "out of memory");
    }
    for (int i = 0; i < n; i++) {
        key[i].d = dot3(s[i].ipp, nrm);
        key[i].idx = i;
    }
    qsort(key, (size_t)n, sizeof *key, cmp_key);
    int rc = SN_OK;
    const double *p0 = s[key[0].idx].ipp;

    for (int i = 1; i < n; i++) {
        double d = key[i].d - key[i - 1].d;
        if (d < DUP_TOL) {
            const double *p = s[key[i].idx].ipp;
            rc = sn_errf(err, errlen, SN_EDICOM, "duplicate slice position: two slices at "
                         "%.3f\\%.3f\\%.3f (%.3f mm along the normal); a 4D, multi-echo or "
                         "repeated acquisition is not one volume", p[0], p[1], p[2], key[i].d);
            goto out;
        }
        step[i - 1] = d;
    }
    /* Every slice must lie on the line through the first along the normal: a shift within the
     * plane that grows with distance is a gantry tilt (or a sheared stack). */
    for (int i = 1; i < n; i++) {
        const double *p = s[key[i].idx].ipp;
        double along = key[i].d - key[0].d, v[3];
        for (int a = 0; a < 3; a++) v[a] = p[a] - p0[a] - along * nrm[a];
        double off = sqrt(dot3(v, v));
        if (off > 0.01 + along * 2e-4) {
            rc = sn_errf(err, errlen, SN_EDICOM, "gantry tilt or sheared stack: slice positions "
                         "move %.3f mm within the image plane over %.3f mm along the normal "
                         "(%.2f degrees); resample before use", off, along,
                         atan2(off, along) * 180.0 / M_PI);
            goto out;
        }
    }
    double dz;
    int nz = n, gaps = 0;
    if (n == 1) {
        dz = single_dz > 0 ? single_dz : 1.0;
        order[0] = key[0].idx;
        kpos[0] = 0;
    } else {
        /* The series' step is the median step; each step must be it, or (a gap) a multiple. */
        double *sorted = malloc(sizeof *sorted * (size_t)(n - 1));
        if (!sorted) {
            rc = sn_errf(err, errlen, SN_ENOMEM, "out of memory");
            goto out;
        }
        memcpy(sorted, step, sizeof *sorted * (size_t)(n - 1));
        qsort(sorted, (size_t)(n - 1), sizeof *sorted, cmp_double);
        double med = sorted[(n - 2) / 2];
        free(sorted);
        double t = tol > 0 ? tol : fmax(0.01, 0.01 * med);
        int k = 0;
        order[0] = key[0].idx;
        kpos[0] = 0;
        for (int i = 1; i < n; i++) {
            double d = step[i - 1];
            /* A step may be any multiple of a tiny median step: only a gap of at most
             * PIPELINE_GEOM_MAX_GAP slices is filled (found by tests/fuzz: a gap "of 10^8
             * slices" sized the voxel grid). */
            double q = d / med;
            long m = q < 1e9 ? lround(q) : 0;
            if (fabs(d - med) <= t) {
                m = 1;
            } else if (m >= 2 && fabs(d - (double)m * med) <= t * (double)m) {
                if (!fill_gaps || m - 1 > PIPELINE_GEOM_MAX_GAP) {
                    rc = sn_errf(err, errlen, SN_EDICOM, "missing slice(s): a gap of %.3f mm "
                                 "(%ld slice(s) of %.3f mm missing) between positions %.3f and "
                                 "%.3f mm along the normal%s", d, m - 1, med, key[i - 1].d,
                                 key[i].d, fill_gaps ? ", too wide to fill" : "");
                    goto out;
                }
                gaps += m - 1;
            } else {
                rc = sn_errf(err, errlen, SN_EDICOM, "non-uniform slice spacing: a step of "
                             "%.3f mm between positions %.3f and %.3f mm along the normal, the "
                             "series' step is %.3f mm (tolerance %.3f mm)", d, key[i - 1].d,
                             key[i].d, med, t);
                goto out;
            }
            k += (int)m;
            order[i] = key[i].idx;
            kpos[i] = k;
        }
        nz = k + 1;
        dz = (key[n - 1].d - key[0].d) / (double)(nz - 1);
    }
    st->nz = nz;
    st->dz = dz;
    st->gaps = gaps;
    memcpy(st->origin, p0, sizeof st->origin);
    for (int a = 0; a < 3; a++) {
        st->direction[3 * a + 0] = r[a];
        st->direction[3 * a + 1] = c[a];
        st->direction[3 * a + 2] = nrm[a];
    }
out:
    free(key);
    free(step);
    return rc;
}

void pipeline_geom_nifti_affine(const double origin[3], const double direction[9],
                                const double spacing[3], double srow[12])
{
    /* LPS -> RAS flips x and y. */
    static const double flip[3] = {-1, -1, 1};
    for (int a = 0; a < 3; a++) {
        for (int j = 0; j < 3; j++) srow[4 * a + j] = flip[a] * direction[3 * a + j] * spacing[j];
        srow[4 * a + 3] = flip[a] * origin[a];
    }
}

void pipeline_geom_nifti_quatern(const double srow[12], const double spacing[3], double quat[3],
                                 double *qfac, double offset[3])
{
    /* As nifti1_io's nifti_mat44_to_quatern: normalise columns, pick qfac from the determinant,
     * then extract the quaternion of the proper rotation. */
    double R[3][3];
    for (int a = 0; a < 3; a++) {
        offset[a] = srow[4 * a + 3];
        for (int j = 0; j < 3; j++) R[a][j] = srow[4 * a + j] / (spacing[j] > 0 ? spacing[j] : 1);
    }
    double det = R[0][0] * (R[1][1] * R[2][2] - R[1][2] * R[2][1]) -
                 R[0][1] * (R[1][0] * R[2][2] - R[1][2] * R[2][0]) +
                 R[0][2] * (R[1][0] * R[2][1] - R[1][1] * R[2][0]);
    *qfac = det < 0 ? -1.0 : 1.0;
    if (det < 0)
        for (int a = 0; a < 3; a++) R[a][2] = -R[a][2];
    double a = R[0][0] + R[1][1] + R[2][2] + 1.0, b, c, d;
    if (a > 0.5) {
        a = 0.5 * sqrt(a);
        b = 0.25 * (R[2][1] - R[1][2]) / a;
        c = 0.25 * (R[0][2] - R[2][0]) / a;
        d = 0.25 * (R[1][0] - R[0][1]) / a;
    } else {
        double xd = 1.0 + R[0][0] - (R[1][1] + R[2][2]);
        double yd = 1.0 + R[1][1] - (R[0][0] + R[2][2]);
        double zd = 1.0 + R[2][2] - (R[0][0] + R[1][1]);
        if (xd > 1.0) {
            b = 0.5 * sqrt(xd);
            c = 0.25 * (R[0][1] + R[1][0]) / b;
            d = 0.25 * (R[0][2] + R[2][0]) / b;
            a = 0.25 * (R[2][1] - R[1][2]) / b;
        } else if (yd > 1.0) {
            c = 0.5 * sqrt(yd);
            b = 0.25 * (R[0][1] + R[1][0]) / c;
            d = 0.25 * (R[1][2] + R[2][1]) / c;
            a = 0.25 * (R[0][2] - R[2][0]) / c;
        } else {
            d = 0.5 * sqrt(zd);
            b = 0.25 * (R[0][2] + R[2][0]) / d;
            c = 0.25 * (R[1][2] + R[2][1]) / d;
            a = 0.25 * (R[1][0] - R[0][1]) / d;
        }
        if (a < 0.0) { b = -b; c = -c; d = -d; }
    }
    quat[0] = b;
    quat[1] = c;
    quat[2] = d;
}
