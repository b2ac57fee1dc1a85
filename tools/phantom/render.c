/* tools/phantom/render.c — per-modality physics for segnode-phantom. Each voxel is independent
 * (labels, tissue values, noise from a counter-based hash), so threads never change the result.
 * Partial volume: CT/CBCT by a sub-voxel blur; MR by sub-samples through the thick slice; PET by
 * 2x2x2 sub-samples and a 6 mm FWHM PSF. The ground-truth label is the structure at the centre. */
#include "tools/phantom/render.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

/* ---- threads ---- */

typedef struct par_job {
    atomic_int next;
    int n;
    void (*fn)(void *, int);
    void *ctx;
} par_job;

static void *par_worker(void *arg)
{
    par_job *j = arg;
    for (;;) {
        int i = atomic_fetch_add(&j->next, 1);
        if (i >= j->n)
            break;
        j->fn(j->ctx, i);
    }
    return NULL;
}

void render_parallel(int threads, int n, void (*fn)(void *ctx, int i), void *ctx)
{
    par_job j;
    atomic_init(&j.next, 0);
    j.n = n;
    j.fn = fn;
    j.ctx = ctx;
    if (threads > 64)
        threads = 64;
    pthread_t t[64];
    int started = 0;
    for (int i = 1; i < threads; i++)
        if (pthread_create(&t[started], NULL, par_worker, &j) == 0)
            started++;
    par_worker(&j);
    for (int i = 0; i < started; i++)
        pthread_join(t[i], NULL);
}

/* ---- grids ---- */

static void rot_dir(double ax_deg, double ay_deg, double az_deg, double dir[9])
{
    double a = ax_deg * M_PI / 180, b = ay_deg * M_PI / 180, c = az_deg * M_PI / 180;
    double Rx[9] = {1, 0, 0, 0, cos(a), -sin(a), 0, sin(a), cos(a)};
    double Ry[9] = {cos(b), 0, sin(b), 0, 1, 0, -sin(b), 0, cos(b)};
    double Rz[9] = {cos(c), -sin(c), 0, sin(c), cos(c), 0, 0, 0, 1};
    double T[9], R[9];
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 3; j++) {
            T[i * 3 + j] = 0;
            for (int k = 0; k < 3; k++)
                T[i * 3 + j] += Rz[i * 3 + k] * Ry[k * 3 + j];
        }
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 3; j++) {
            R[i * 3 + j] = 0;
            for (int k = 0; k < 3; k++)
                R[i * 3 + j] += T[i * 3 + k] * Rx[k * 3 + j];
        }
    /* columns of R are u, v, w */
    for (int a2 = 0; a2 < 3; a2++)
        for (int j = 0; j < 3; j++)
            dir[a2 * 3 + j] = R[j * 3 + a2];
}

static void grid_set(render_grid *g, int nx, int ny, int nz, double sx, double sy, double sz,
                     double thick, const double centre[3], double ax, double ay, double az)
{
    g->nx = nx, g->ny = ny, g->nz = nz;
    g->sp[0] = sx, g->sp[1] = sy, g->sp[2] = sz;
    g->thickness = thick;
    rot_dir(ax, ay, az, g->dir);
    for (int j = 0; j < 3; j++)
        g->origin[j] = centre[j] - g->dir[0 + j] * sx * (nx - 1) / 2.0 -
                       g->dir[3 + j] * sy * (ny - 1) / 2.0 - g->dir[6 + j] * sz * (nz - 1) / 2.0;
}

void render_grid_for(int m, int full, const anat_subject *s, render_grid *g)
{
    (void)s; /* grids are scanner settings, not subject-dependent */
    switch (m) {
    case R_CT: {
        double c[3] = {0, 5, -2};
        if (full)
            grid_set(g, 512, 512, 300, 400.0 / 512, 400.0 / 512, 1.25, 1.25, c, 0, 0, 0);
        else
            grid_set(g, 96, 96, 96, 400.0 / 96, 400.0 / 96, 4.0, 4.0, c, 0, 0, 0);
        break;
    }
    case R_CBCT: {
        double c[3] = {4, 12, -12};
        if (full)
            grid_set(g, 384, 384, 192, 0.7, 0.7, 0.7, 0.7, c, 0, 0, 0);
        else
            grid_set(g, 96, 96, 48, 2.8, 2.8, 2.8, 2.8, c, 0, 0, 0);
        break;
    }
    case R_MR_T1: {
        double c[3] = {0, 5, 0};
        if (full)
            grid_set(g, 256, 256, 60, 1.5625, 1.5625, 6.0, 6.0, c, 12, 0, 4);
        else
            grid_set(g, 96, 96, 45, 400.0 / 96, 400.0 / 96, 8.0, 8.0, c, 12, 0, 4);
        break;
    }
    case R_MR_T2: {
        double c[3] = {0, 5, 0};
        if (full)
            grid_set(g, 320, 320, 72, 1.25, 1.25, 5.0, 5.0, c, -8, 6, 0);
        else
            grid_set(g, 96, 96, 45, 400.0 / 96, 400.0 / 96, 8.0, 8.0, c, -8, 6, 0);
        break;
    }
    default: { /* PET */
        double c[3] = {0, 0, -5};
        if (full)
            grid_set(g, 192, 192, 111, 700.0 / 192, 700.0 / 192, 3.27, 3.27, c, 0, 0, 0);
        else
            grid_set(g, 72, 72, 60, 6.0, 6.0, 6.0, 6.0, c, 0, 0, 0);
        break;
    }
    }
}

/* ---- tissue properties ---- */

/*                                   AIR     BODY  FAT   MUSC  LUNGL LUNGR SPINE DISC CANAL RIBS  LIVER SPLN  KIDL  KIDR  HEART LV    MYO   RV    AORTA STOM  GAS   BLADDER */
static const float ct_hu[A_COUNT] = {-1000, 30, -100, 50, -850, -850, 350, 80, 15, 650, 60, 48, 33, 33, 42, 42, 48, 42, 42, 15, -950, 8};
static const float ct_hu_c[A_COUNT] = {-1000, 40, -100, 55, -850, -850, 350, 80, 15, 650, 110, 120, 180, 180, 170, 190, 110, 170, 190, 15, -950, 8};
static const float ct_tex[A_COUNT] = {0, 0, 8, 6, 60, 60, 70, 5, 3, 80, 6, 5, 8, 8, 4, 4, 5, 4, 4, 4, 10, 3};
static const float t1_sig[A_COUNT] = {0, 0, 900, 330, 25, 25, 480, 300, 120, 350, 500, 360, 400, 400, 60, 60, 360, 60, 50, 140, 0, 90};
static const float t2_sig[A_COUNT] = {0, 0, 650, 180, 20, 20, 330, 700, 1000, 260, 190, 430, 520, 520, 40, 40, 210, 40, 30, 850, 0, 1100};
static const float pet_suv[A_COUNT] = {0, 0.9f, 0.35f, 0.7f, 0.45f, 0.45f, 1.2f, 0.8f, 0.8f, 0.9f, 2.4f, 1.9f, 6.0f, 6.0f, 1.8f, 1.8f, 8.0f, 1.8f, 1.7f, 1.6f, 0, 18.0f};

double render_pet_suv1(const anat_subject *s)
{
    double decayed = RENDER_PET_DOSE_BQ * exp(-M_LN2 * RENDER_PET_UPTAKE_S / RENDER_PET_HALF_LIFE_S);
    return decayed / (s->weight_kg * 1000.0);
}

/* Visceral content ("body" label): bowel and mesenteric fat as smooth blobs. Returns the fat
 * fraction in [0,1]. */
static double body_fat_fraction(const double q[3], uint64_t salt)
{
    double n = 0.7 * anat_value_noise(q, 22.0, salt ^ 0xB0D7) + 0.3 * anat_value_noise(q, 9.0, salt ^ 0xF00D);
    double t = (n + 0.05) * 1.6;
    return t < 0 ? 0 : (t > 1 ? 1 : t);
}

static double tissue_value(int m, int st, const double q[3], const anat_subject *s, int contrast)
{
    uint64_t salt = anat_hash(s->seed, (uint64_t)s->id);
    double tex = (st == A_AIR) ? 0 : anat_value_noise(q, 6.0, salt + (uint64_t)st);
    switch (m) {
    case R_CT:
    case R_CBCT: {
        if (st == A_BODY) {
            double f = body_fat_fraction(q, salt);
            return (contrast ? 40 : 30) * (1 - f) + -90.0 * f + 5 * tex;
        }
        return (contrast ? ct_hu_c[st] : ct_hu[st]) + ct_tex[st] * tex;
    }
    case R_MR_T1:
    case R_MR_T2: {
        const float *t = m == R_MR_T1 ? t1_sig : t2_sig;
        if (st == A_BODY) {
            double f = body_fat_fraction(q, salt);
            double soft = m == R_MR_T1 ? 360 : 420, fat = m == R_MR_T1 ? 850 : 620;
            return soft * (1 - f) + fat * f + 15 * tex;
        }
        return t[st] * (1.0 + 0.05 * tex);
    }
    default: {
        double suv = pet_suv[st];
        if (st == A_BODY)
            suv = 0.9 * (1 - body_fat_fraction(q, salt)) + 0.35 * body_fat_fraction(q, salt);
        return suv * render_pet_suv1(s) * (1.0 + 0.03 * tex);
    }
    }
}

/* ---- rendering ---- */

typedef struct rctx {
    int m;
    const anat_subject *s;
    const render_grid *g;
    const render_opts *o;
    float *img;
    uint8_t *gt;
    int sub[3];
    /* post-processing */
    float *tmp;
    double sigma;
    int axis;
} rctx;

static inline void grid_point(const render_grid *g, double i, double j, double k, double p[3])
{
    for (int a = 0; a < 3; a++)
        p[a] = g->origin[a] + i * g->sp[0] * g->dir[a] + j * g->sp[1] * g->dir[3 + a] +
               k * g->sp[2] * g->dir[6 + a];
}

static void render_slice(void *arg, int k)
{
    rctx *c = arg;
    const render_grid *g = c->g;
    const int sx = c->sub[0], sy = c->sub[1], sz = c->sub[2];
    const int centre_is_sample = (sx & 1) && (sy & 1) && (sz & 1);
    const size_t plane = (size_t)g->nx * g->ny;
    for (int j = 0; j < g->ny; j++)
        for (int i = 0; i < g->nx; i++) {
            double p[3], q[3];
            size_t idx = plane * k + (size_t)j * g->nx + i;
            grid_point(g, i, j, k, p);
            int st = anat_lookup(c->s, p, q);
            c->gt[idx] = (uint8_t)st;
            double acc = 0;
            int n = 0;
            for (int c3 = 0; c3 < sz; c3++)
                for (int c2 = 0; c2 < sy; c2++)
                    for (int c1 = 0; c1 < sx; c1++) {
                        double di = (c1 + 0.5) / sx - 0.5, dj = (c2 + 0.5) / sy - 0.5,
                               dk = (c3 + 0.5) / sz - 0.5;
                        int sst;
                        double qq[3];
                        if (centre_is_sample && 2 * c1 + 1 == sx && 2 * c2 + 1 == sy &&
                            2 * c3 + 1 == sz) {
                            sst = st;
                            memcpy(qq, q, sizeof(q));
                        } else {
                            double pp[3];
                            grid_point(g, i + di, j + dj, k + dk * (g->thickness / g->sp[2]), pp);
                            sst = anat_lookup(c->s, pp, qq);
                        }
                        acc += tissue_value(c->m, sst, qq, c->s, c->o->contrast);
                        n++;
                    }
            c->img[idx] = (float)(acc / n);
        }
}

/* Separable Gaussian blur along one voxel axis (sigma in voxels), edges replicated. */
static void blur_line_job(void *arg, int line)
{
    rctx *c = arg;
    const render_grid *g = c->g;
    int n, stride;
    size_t base;
    if (c->axis == 0) {
        n = g->nx, stride = 1, base = (size_t)line * g->nx;
    } else if (c->axis == 1) {
        int k = line / g->nx, i = line % g->nx;
        n = g->ny, stride = g->nx, base = (size_t)k * g->nx * g->ny + i;
    } else {
        n = g->nz, stride = g->nx * g->ny, base = (size_t)line;
    }
    int r = (int)ceil(3 * c->sigma);
    double w[64];
    if (r > 31)
        r = 31;
    double sum = 0;
    for (int t = -r; t <= r; t++)
        sum += (w[t + r] = exp(-0.5 * t * t / (c->sigma * c->sigma)));
    float *in = malloc(sizeof(float) * (size_t)n);
    if (!in)
        abort();
    for (int t = 0; t < n; t++)
        in[t] = c->img[base + (size_t)t * stride];
    for (int t = 0; t < n; t++) {
        double acc = 0;
        for (int d = -r; d <= r; d++) {
            int u = t + d;
            u = u < 0 ? 0 : (u >= n ? n - 1 : u);
            acc += w[d + r] * in[u];
        }
        c->img[base + (size_t)t * stride] = (float)(acc / sum);
    }
    free(in);
}

static void blur(rctx *c, int axis, double sigma)
{
    if (sigma < 0.05)
        return;
    const render_grid *g = c->g;
    c->axis = axis;
    c->sigma = sigma;
    int lines = axis == 0 ? g->ny * g->nz : axis == 1 ? g->nx * g->nz : g->nx * g->ny;
    render_parallel(c->o->threads, lines, blur_line_job, c);
}

static double gauss(uint64_t h)
{
    double u1 = anat_u01(anat_hash(h, 1)), u2 = anat_u01(anat_hash(h, 2));
    return sqrt(-2.0 * log(u1)) * cos(2 * M_PI * u2);
}

/* Per-slice artefacts and noise. */
static void finish_slice(void *arg, int k)
{
    rctx *c = arg;
    const render_grid *g = c->g;
    const anat_subject *s = c->s;
    const size_t plane = (size_t)g->nx * g->ny;
    const uint64_t key = anat_hash(anat_hash(s->seed, (uint64_t)s->id), (uint64_t)c->m + 77);
    float *im = c->img + plane * k;
    const uint8_t *gt = c->gt + plane * k;

    /* CBCT streaks: lines through the centroid of dense bone in this slice */
    double bx = 0, by = 0, bn = 0;
    if (c->m == R_CBCT) {
        for (int j = 0; j < g->ny; j++)
            for (int i = 0; i < g->nx; i++)
                if (gt[(size_t)j * g->nx + i] == A_SPINE || gt[(size_t)j * g->nx + i] == A_RIBS)
                    bx += i, by += j, bn++;
        if (bn > 0)
            bx /= bn, by /= bn;
    }
    const double R = 0.5 * fmin(g->nx * g->sp[0], g->ny * g->sp[1]); /* reconstruction circle */
    for (int j = 0; j < g->ny; j++)
        for (int i = 0; i < g->nx; i++) {
            size_t idx = (size_t)j * g->nx + i;
            uint64_t h = anat_hash(key, plane * k + idx);
            double v = im[idx];
            switch (c->m) {
            case R_CT:
                v += 14.0 * gauss(h);
                break;
            case R_CBCT: {
                double x = (i - (g->nx - 1) / 2.0) * g->sp[0], y = (j - (g->ny - 1) / 2.0) * g->sp[1];
                double rr = sqrt(x * x + y * y);
                if (rr > R) {
                    v = -1000; /* outside the reconstructed cylinder */
                    break;
                }
                /* lower soft-tissue contrast */
                if (v > -300 && v < 300)
                    v = 40 + 0.7 * (v - 40);
                /* cupping: attenuation reduced towards the centre */
                v = (v + 1000) * (1.0 - 0.09 * (1.0 - (rr * rr) / (R * R))) - 1000;
                /* streaks from dense structures */
                if (bn > 20) {
                    double dx = (i - bx) * g->sp[0], dy = (j - by) * g->sp[1];
                    double dist = sqrt(dx * dx + dy * dy);
                    for (int a = 0; a < 6; a++) {
                        double th = a * M_PI / 6 + 0.2;
                        double perp = fabs(-sin(th) * dx + cos(th) * dy);
                        v += ((a & 1) ? 70.0 : -70.0) * exp(-0.5 * perp * perp / 2.0) *
                             exp(-dist / 120.0) * (dist > 15);
                    }
                }
                /* truncation: bright rim where the body leaves the field of view */
                if (gt[idx] != A_AIR && R - rr < 12)
                    v += 180.0 * exp(-(R - rr) / 5.0);
                v += 35.0 * gauss(h);
                break;
            }
            case R_MR_T1:
            case R_MR_T2: {
                double p[3];
                grid_point(g, i, j, k, p);
                uint64_t bk = anat_hash(key, 999);
                double a1 = 0.20 * (anat_u01(anat_hash(bk, 1)) - 0.5),
                       a2 = 0.20 * (anat_u01(anat_hash(bk, 2)) - 0.5),
                       a3 = 0.15 * (anat_u01(anat_hash(bk, 3)) - 0.5),
                       ph = 6.28 * anat_u01(anat_hash(bk, 4));
                double bias = exp(a1 * p[0] / 100 + a2 * p[1] / 100 + a3 * p[2] / 100 +
                                  0.12 * sin(p[0] / 90 + p[1] / 130 + ph));
                double sigma = c->m == R_MR_T1 ? 14.0 : 16.0;
                double re = v * bias + sigma * gauss(h), imv = sigma * gauss(anat_hash(h, 7));
                v = sqrt(re * re + imv * imv); /* Rician magnitude */
                break;
            }
            default: { /* PET: Poisson-like, variance proportional to activity */
                double var = 84.5 * (v > 0 ? v : 0) + 4.0;
                v += sqrt(var) * gauss(h);
                if (v < 0)
                    v = 0;
                break;
            }
            }
            im[idx] = (float)v;
        }
}

void render_volume(int m, const anat_subject *s, const render_grid *g, const render_opts *o,
                   float *img, uint8_t *gt)
{
    rctx c;
    memset(&c, 0, sizeof(c));
    c.m = m, c.s = s, c.g = g, c.o = o, c.img = img, c.gt = gt;
    c.sub[0] = c.sub[1] = c.sub[2] = 1;
    if (m == R_MR_T1 || m == R_MR_T2) {
        int n = (int)ceil(g->thickness / 2.0);
        c.sub[2] = n < 1 ? 1 : (n > 4 ? 4 : n);
    } else if (m == R_PET) {
        c.sub[0] = c.sub[1] = c.sub[2] = 2;
    }
    render_parallel(o->threads, g->nz, render_slice, &c);
    switch (m) {
    case R_CT:
    case R_CBCT:
        /* system resolution and in-slice partial volume */
        blur(&c, 0, 0.55);
        blur(&c, 1, 0.55);
        blur(&c, 2, 0.45);
        break;
    case R_MR_T1:
    case R_MR_T2:
        blur(&c, 0, 0.5);
        blur(&c, 1, 0.5);
        break;
    default: {
        const double sig_mm = 6.0 / (2.0 * sqrt(2.0 * log(2.0)));
        for (int a = 0; a < 3; a++)
            blur(&c, a, sig_mm / g->sp[a]);
        break;
    }
    }
    render_parallel(o->threads, g->nz, finish_slice, &c);
}
