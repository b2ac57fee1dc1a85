/* pipeline/atlas/grid.c — grids in world (LPS) coordinates, trilinear resampling between them,
 * prepared images (working-grid image + MIND-SSC + native labels), their raw on-disk cache, and
 * the small nn/ op runner the rest of the library uses. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/status.h"
#include "pipeline/atlas/atlasInt.h"

void atlas_grid_to_world(const atlas_grid *g, double m[12])
{
    for (int i = 0; i < 3; i++) {
        for (int j = 0; j < 3; j++) m[i * 4 + j] = g->direction[i * 3 + j] * g->spacing[j];
        m[i * 4 + 3] = g->origin[i];
    }
}

void atlas__affine_inverse(const double a[12], double o[12])
{
    double det = a[0] * (a[5] * a[10] - a[6] * a[9]) - a[1] * (a[4] * a[10] - a[6] * a[8]) +
                 a[2] * (a[4] * a[9] - a[5] * a[8]);
    double id = fabs(det) > 1e-300 ? 1.0 / det : 0.0;
    o[0] = (a[5] * a[10] - a[6] * a[9]) * id;
    o[1] = (a[2] * a[9] - a[1] * a[10]) * id;
    o[2] = (a[1] * a[6] - a[2] * a[5]) * id;
    o[4] = (a[6] * a[8] - a[4] * a[10]) * id;
    o[5] = (a[0] * a[10] - a[2] * a[8]) * id;
    o[6] = (a[2] * a[4] - a[0] * a[6]) * id;
    o[8] = (a[4] * a[9] - a[5] * a[8]) * id;
    o[9] = (a[1] * a[8] - a[0] * a[9]) * id;
    o[10] = (a[0] * a[5] - a[1] * a[4]) * id;
    for (int i = 0; i < 3; i++)
        o[i * 4 + 3] = -(o[i * 4] * a[3] + o[i * 4 + 1] * a[7] + o[i * 4 + 2] * a[11]);
}

void atlas__affine_mul(const double a[12], const double b[12], double o[12])
{
    double r[12];
    for (int i = 0; i < 3; i++) {
        for (int j = 0; j < 4; j++) {
            double s = j == 3 ? a[i * 4 + 3] : 0;
            for (int k = 0; k < 3; k++) s += a[i * 4 + k] * b[k * 4 + j];
            r[i * 4 + j] = s;
        }
    }
    memcpy(o, r, sizeof r);
}

void atlas_grid_from_world(const atlas_grid *g, double m[12])
{
    double w[12];
    atlas_grid_to_world(g, w);
    atlas__affine_inverse(w, m);
}

void atlas_grid_working(const atlas_grid *src, double mm, atlas_grid *out)
{
    *out = *src;
    int n[3] = {src->nx, src->ny, src->nz};
    for (int j = 0; j < 3; j++) {
        double ext = n[j] * src->spacing[j];
        int m = (int)lround(ext / mm);
        n[j] = m < 1 ? 1 : m;
        out->spacing[j] = mm;
        for (int i = 0; i < 3; i++)
            out->origin[i] += src->direction[i * 3 + j] * (0.5 * mm - 0.5 * src->spacing[j]);
    }
    out->nx = n[0], out->ny = n[1], out->nz = n[2];
}

float atlas__sample(const float *v, int nx, int ny, int nz, double x, double y, double z, float fill)
{
    if (x < -0.5 || y < -0.5 || z < -0.5 || x > nx - 0.5 || y > ny - 0.5 || z > nz - 0.5) return fill;
    x = x < 0 ? 0 : x > nx - 1 ? nx - 1 : x;
    y = y < 0 ? 0 : y > ny - 1 ? ny - 1 : y;
    z = z < 0 ? 0 : z > nz - 1 ? nz - 1 : z;
    int x0 = (int)x, y0 = (int)y, z0 = (int)z;
    int x1 = x0 + 1 < nx ? x0 + 1 : x0, y1 = y0 + 1 < ny ? y0 + 1 : y0, z1 = z0 + 1 < nz ? z0 + 1 : z0;
    float fx = (float)(x - x0), fy = (float)(y - y0), fz = (float)(z - z0);
#define V(a, b, c) v[(size_t)(a) + (size_t)nx * ((size_t)(b) + (size_t)ny * (size_t)(c))]
    float c00 = V(x0, y0, z0) + (V(x1, y0, z0) - V(x0, y0, z0)) * fx;
    float c10 = V(x0, y1, z0) + (V(x1, y1, z0) - V(x0, y1, z0)) * fx;
    float c01 = V(x0, y0, z1) + (V(x1, y0, z1) - V(x0, y0, z1)) * fx;
    float c11 = V(x0, y1, z1) + (V(x1, y1, z1) - V(x0, y1, z1)) * fx;
#undef V
    float c0 = c00 + (c10 - c00) * fy, c1 = c01 + (c11 - c01) * fy;
    return c0 + (c1 - c0) * fz;
}

void atlas_resample(const atlas_grid *sg, const float *src, const atlas_grid *dg, float *dst,
                    const double *M, float fill)
{
    double td[12], ts[12], m[12];
    atlas_grid_to_world(dg, td);
    atlas_grid_from_world(sg, ts);
    if (M) atlas__affine_mul(M, td, m);
    else memcpy(m, td, sizeof m);
    atlas__affine_mul(ts, m, m);
#pragma omp parallel for schedule(static)
    for (int k = 0; k < dg->nz; k++)
        for (int j = 0; j < dg->ny; j++)
            for (int i = 0; i < dg->nx; i++) {
                double x = m[0] * i + m[1] * j + m[2] * k + m[3];
                double y = m[4] * i + m[5] * j + m[6] * k + m[7];
                double z = m[8] * i + m[9] * j + m[10] * k + m[11];
                dst[i + (size_t)dg->nx * (j + (size_t)dg->ny * k)] =
                    atlas__sample(src, sg->nx, sg->ny, sg->nz, x, y, z, fill);
            }
}

/* ---- one nn/ op as a reusable session -------------------------------------------------------- */

int atlas__op_new(nn_backend *b, const nn_op_desc *op, int nin, const int64_t (*shape)[5], atlas__op *o,
                  char *err, size_t errlen)
{
    memset(o, 0, sizeof *o);
    int rc = nn_graph_new(&o->g);
    if (rc) return sn_errf(err, errlen, rc, "out of memory");
    int ids[NN_MAX_INPUTS];
    for (int i = 0; i < nin; i++) {
        ids[i] = nn_graph_input(o->g, i == 0 ? "a" : i == 1 ? "b" : "c", 5, shape[i]);
        if (ids[i] < 0) return sn_errf(err, errlen, ids[i], "graph input");
    }
    int out = nn_graph_node(o->g, nn_op_name(op->type), op, ids, nin, err, errlen);
    if (out < 0) return out;
    nn_graph_output(o->g, out);
    if ((rc = nn_session_new(o->g, b, NULL, &o->s, err, errlen))) return rc;
    o->nin = nin;
    return 0;
}

int atlas__op_run(atlas__op *o, const float *const *in, float *out, char *err, size_t errlen)
{
    int rc;
    for (int i = 0; i < o->nin; i++)
        if (in[i] && (rc = nn_tensor_upload(nn_session_input(o->s, i), in[i], err, errlen))) return rc;
    if ((rc = nn_session_run(o->s, err, errlen))) return rc;
    return nn_tensor_download(nn_session_output(o->s, 0), out, err, errlen);
}

void atlas__op_free(atlas__op *o)
{
    nn_session_free(o->s);
    nn_graph_free(o->g);
    memset(o, 0, sizeof *o);
}

int atlas__op_once(nn_backend *b, const nn_op_desc *op, int nin, const int64_t (*shape)[5],
                   const float *const *in, float *out, char *err, size_t errlen)
{
    atlas__op o;
    int rc = atlas__op_new(b, op, nin, shape, &o, err, errlen);
    if (!rc) rc = atlas__op_run(&o, in, out, err, errlen);
    atlas__op_free(&o);
    return rc;
}

int atlas_mind(nn_backend *b, const float *img, int nx, int ny, int nz, int dil, float *mind,
               char *err, size_t errlen)
{
    nn_op_desc d;
    nn_op_desc_init(&d, NN_OP_MIND_SSC);
    d.dilation[0] = dil;
    d.k[0] = 1;
    int64_t sh[1][5] = {{1, 1, nz, ny, nx}};
    const float *in[1] = {img};
    return atlas__op_once(b, &d, 1, (const int64_t(*)[5])sh, in, mind, err, errlen);
}

/* ---- prepared images ------------------------------------------------------------------------- */

static int cmpf(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return x < y ? -1 : x > y;
}

/* Robust [0, 1] normalisation: percentiles 0.5 and 99.5 of a subsample. */
static void normalise(float *v, size_t n)
{
    size_t step = n / 20000 + 1, m = 0;
    float *s = malloc(sizeof(float) * (n / step + 1));
    if (!s) return;
    for (size_t i = 0; i < n; i += step) s[m++] = v[i];
    qsort(s, m, sizeof(float), cmpf);
    float lo = s[(size_t)(0.005 * (double)(m - 1))], hi = s[(size_t)(0.995 * (double)(m - 1))];
    free(s);
    float k = hi > lo ? 1.0f / (hi - lo) : 1.0f;
    for (size_t i = 0; i < n; i++) {
        float x = (v[i] - lo) * k;
        v[i] = x < 0 ? 0 : x > 1 ? 1 : x;
    }
}

int atlas_prep_new(nn_backend *b, const atlas_grid *g, const float *v, const uint8_t *labels,
                   double mm, atlas_prep **out, char *err, size_t errlen)
{
    *out = NULL;
    atlas_prep *p = calloc(1, sizeof *p);
    if (!p) return sn_errf(err, errlen, SN_ENOMEM, "out of memory");
    if (mm <= 0) {
        mm = ATLAS_WORK_MM;
        double fine = fmin(g->spacing[0], fmin(g->spacing[1], g->spacing[2]));
        if (fine > mm) mm = fine;
    }
    atlas_grid_working(g, mm, &p->grid);
    size_t n = atlas_grid_voxels(&p->grid), nn0 = atlas_grid_voxels(g);
    float mn = v[0];
    for (size_t i = 0; i < nn0; i++) mn = v[i] < mn ? v[i] : mn;
    p->img = malloc(sizeof(float) * n);
    p->mind = malloc(sizeof(float) * n * 12);
    if (!p->img || !p->mind) {
        atlas_prep_free(p);
        return sn_errf(err, errlen, SN_ENOMEM, "out of memory");
    }
    atlas_resample(g, v, &p->grid, p->img, NULL, mn);
    normalise(p->img, n);
    int rc = atlas_mind(b, p->img, p->grid.nx, p->grid.ny, p->grid.nz, ATLAS__MIND_DIL, p->mind, err, errlen);
    if (rc) {
        atlas_prep_free(p);
        return rc;
    }
    if (labels) {
        p->lgrid = *g;
        if (!(p->labels = malloc(nn0))) {
            atlas_prep_free(p);
            return sn_errf(err, errlen, SN_ENOMEM, "out of memory");
        }
        memcpy(p->labels, labels, nn0);
    }
    *out = p;
    return 0;
}

void atlas_prep_free(atlas_prep *p)
{
    if (!p) return;
    free(p->img);
    free(p->mind);
    free(p->labels);
    free(p);
}

static void write_grid(FILE *f, const char *name, const atlas_grid *g)
{
    fprintf(f, "%s %d %d %d", name, g->nx, g->ny, g->nz);
    for (int i = 0; i < 3; i++) fprintf(f, " %.17g", g->spacing[i]);
    for (int i = 0; i < 3; i++) fprintf(f, " %.17g", g->origin[i]);
    for (int i = 0; i < 9; i++) fprintf(f, " %.17g", g->direction[i]);
    fputc('\n', f);
}

static int read_grid(FILE *f, const char *name, atlas_grid *g)
{
    char w[32];
    if (fscanf(f, "%31s %d %d %d", w, &g->nx, &g->ny, &g->nz) != 4 || strcmp(w, name)) return -1;
    for (int i = 0; i < 3; i++)
        if (fscanf(f, "%lf", &g->spacing[i]) != 1) return -1;
    for (int i = 0; i < 3; i++)
        if (fscanf(f, "%lf", &g->origin[i]) != 1) return -1;
    for (int i = 0; i < 9; i++)
        if (fscanf(f, "%lf", &g->direction[i]) != 1) return -1;
    if (g->nx < 1 || g->ny < 1 || g->nz < 1 || g->nx > 4096 || g->ny > 4096 || g->nz > 4096) return -1;
    return 0;
}

static int write_raw(const char *dir, const char *name, const void *p, size_t bytes)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t w = fwrite(p, 1, bytes, f);
    return (fclose(f) || w != bytes) ? -1 : 0;
}

static int read_raw(const char *dir, const char *name, void *p, size_t bytes)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    size_t r = fread(p, 1, bytes, f);
    int extra = fgetc(f) != EOF;
    fclose(f);
    return r == bytes && !extra ? 0 : -1;
}

int atlas_prep_save(const atlas_prep *p, const char *dir, char *err, size_t errlen)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/meta.txt", dir);
    FILE *f = fopen(path, "w");
    if (!f) return sn_errf(err, errlen, SN_EIO, "cannot write %s", path);
    fprintf(f, "segnode-atlas-prep 1 mind_dil %d\n", ATLAS__MIND_DIL);
    write_grid(f, "work", &p->grid);
    if (p->labels) write_grid(f, "labels", &p->lgrid);
    if (fclose(f)) return sn_errf(err, errlen, SN_EIO, "cannot write %s", path);
    size_t n = atlas_grid_voxels(&p->grid);
    if (write_raw(dir, "img.f32", p->img, n * 4) || write_raw(dir, "mind.f32", p->mind, n * 48) ||
        (p->labels && write_raw(dir, "labels.u8", p->labels, atlas_grid_voxels(&p->lgrid))))
        return sn_errf(err, errlen, SN_EIO, "cannot write the atlas cache in %s", dir);
    return 0;
}

int atlas_prep_load(const char *dir, atlas_prep **out, char *err, size_t errlen)
{
    *out = NULL;
    char path[4096], magic[64];
    int ver = 0, dil = 0;
    snprintf(path, sizeof path, "%s/meta.txt", dir);
    FILE *f = fopen(path, "r");
    if (!f) return sn_errf(err, errlen, SN_EIO, "cannot read %s", path);
    atlas_prep *p = calloc(1, sizeof *p);
    if (!p) {
        fclose(f);
        return sn_errf(err, errlen, SN_ENOMEM, "out of memory");
    }
    int bad = fscanf(f, "%63s %d mind_dil %d", magic, &ver, &dil) != 3 || strcmp(magic, "segnode-atlas-prep") ||
              ver != 1 || dil != ATLAS__MIND_DIL || read_grid(f, "work", &p->grid);
    int has_labels = !bad && read_grid(f, "labels", &p->lgrid) == 0;
    fclose(f);
    if (bad) {
        atlas_prep_free(p);
        return sn_errf(err, errlen, SN_EINVAL, "%s: not an atlas cache of this version", path);
    }
    size_t n = atlas_grid_voxels(&p->grid);
    p->img = malloc(n * 4);
    p->mind = malloc(n * 48);
    if (has_labels) p->labels = malloc(atlas_grid_voxels(&p->lgrid));
    if (!p->img || !p->mind || (has_labels && !p->labels)) {
        atlas_prep_free(p);
        return sn_errf(err, errlen, SN_ENOMEM, "out of memory");
    }
    if (read_raw(dir, "img.f32", p->img, n * 4) || read_raw(dir, "mind.f32", p->mind, n * 48) ||
        (has_labels && read_raw(dir, "labels.u8", p->labels, atlas_grid_voxels(&p->lgrid)))) {
        atlas_prep_free(p);
        return sn_errf(err, errlen, SN_EINVAL, "%s: atlas cache files missing or truncated", dir);
    }
    *out = p;
    return 0;
}
