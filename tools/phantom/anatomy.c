/* tools/phantom/anatomy.c — analytic torso: implicit shapes (ellipsoids, capsules, elliptic
 * cylinders, banded ribs and vertebrae) in a canonical frame, a smooth random deformation and a
 * pose per subject. Label at a point = first structure in priority order that contains it. */
#include "tools/phantom/anatomy.h"

#include <math.h>
#include <string.h>

static const char *const label_names[A_COUNT] = {
    [A_AIR] = NULL, [A_BODY] = "body", [A_FAT] = "fat", [A_MUSCLE] = "muscle",
    [A_LUNG_L] = "lung_left", [A_LUNG_R] = "lung_right", [A_SPINE] = "spine", [A_DISC] = "spine",
    [A_CANAL] = "body", [A_RIBS] = "ribs", [A_LIVER] = "liver", [A_SPLEEN] = "spleen",
    [A_KIDNEY_L] = "kidney_left", [A_KIDNEY_R] = "kidney_right", [A_HEART] = "heart",
    [A_LV] = "heart_lv_blood", [A_MYO] = "myocardium", [A_RV] = "heart_rv", [A_AORTA] = "aorta",
    [A_STOMACH] = "stomach", [A_GAS] = "stomach", [A_BLADDER] = "bladder",
};

const char *anat_label_name(int s) { return (s >= 0 && s < A_COUNT) ? label_names[s] : NULL; }

/* ---- deterministic random numbers (splitmix64) ---- */

static uint64_t mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

uint64_t anat_hash(uint64_t a, uint64_t b) { return mix64(a * 0x9E3779B97F4A7C15ULL + mix64(b + 0x632BE59BD9B4E019ULL)); }

double anat_u01(uint64_t h) { return ((double)(h >> 11) + 0.5) * (1.0 / 9007199254740992.0); }

typedef struct rng { uint64_t s; } rng;
static double rng_uni(rng *r, double lo, double hi)
{
    r->s += 0x9E3779B97F4A7C15ULL;
    return lo + (hi - lo) * anat_u01(mix64(r->s));
}

static double lattice(int64_t x, int64_t y, int64_t z, uint64_t salt)
{
    uint64_t h = anat_hash(anat_hash(anat_hash(salt, (uint64_t)x), (uint64_t)y), (uint64_t)z);
    return 2.0 * anat_u01(h) - 1.0;
}

double anat_value_noise(const double q[3], double cell, uint64_t salt)
{
    double f[3], w[3];
    int64_t i[3];
    for (int a = 0; a < 3; a++) {
        double x = q[a] / cell + 1000.0;
        double fl = floor(x);
        i[a] = (int64_t)fl;
        f[a] = x - fl;
        w[a] = f[a] * f[a] * (3.0 - 2.0 * f[a]); /* smoothstep: C1 across cells */
    }
    double acc = 0;
    for (int c = 0; c < 8; c++) {
        int dx = c & 1, dy = (c >> 1) & 1, dz = (c >> 2) & 1;
        double wt = (dx ? w[0] : 1 - w[0]) * (dy ? w[1] : 1 - w[1]) * (dz ? w[2] : 1 - w[2]);
        acc += wt * lattice(i[0] + dx, i[1] + dy, i[2] + dz, salt);
    }
    return acc;
}

/* ---- shapes ---- */

static void normalize(double v[3])
{
    double n = sqrt(v[0] * v[0] + v[1] * v[1] + v[2] * v[2]);
    v[0] /= n, v[1] /= n, v[2] /= n;
}

static void cross(const double a[3], const double b[3], double o[3])
{
    o[0] = a[1] * b[2] - a[2] * b[1];
    o[1] = a[2] * b[0] - a[0] * b[2];
    o[2] = a[0] * b[1] - a[1] * b[0];
}

/* Ellipsoid with centre c, radii r along axes e1 = axis (NULL: world x,y,z) and two normals. */
static void ellip_make(anat_ellip *e, const double c[3], const double r[3], const double *axis)
{
    double E[3][3] = {{1, 0, 0}, {0, 1, 0}, {0, 0, 1}};
    if (axis) {
        double up[3] = {0, 0, 1};
        memcpy(E[0], axis, sizeof(E[0]));
        normalize(E[0]);
        if (fabs(E[0][2]) > 0.95)
            up[0] = 1, up[2] = 0;
        cross(E[0], up, E[1]);
        normalize(E[1]);
        cross(E[0], E[1], E[2]);
    }
    memcpy(e->c, c, sizeof(e->c));
    for (int a = 0; a < 3; a++)
        for (int j = 0; j < 3; j++)
            e->m[a * 3 + j] = E[a][j] / r[a];
    for (int j = 0; j < 3; j++) {
        double h = 0;
        for (int a = 0; a < 3; a++)
            h += (E[a][j] * r[a]) * (E[a][j] * r[a]);
        h = sqrt(h);
        e->lo[j] = c[j] - h;
        e->hi[j] = c[j] + h;
    }
}

static void ellip_scale(anat_ellip *e, const double about[3], double s)
{
    for (int j = 0; j < 3; j++) {
        e->c[j] = about[j] + s * (e->c[j] - about[j]);
        e->lo[j] = about[j] + s * (e->lo[j] - about[j]);
        e->hi[j] = about[j] + s * (e->hi[j] - about[j]);
    }
    for (int i = 0; i < 9; i++)
        e->m[i] /= s;
}

static inline int in_box(const double lo[3], const double hi[3], const double p[3])
{
    return p[0] >= lo[0] && p[0] <= hi[0] && p[1] >= lo[1] && p[1] <= hi[1] && p[2] >= lo[2] &&
           p[2] <= hi[2];
}

static inline int in_ellip(const anat_ellip *e, const double p[3])
{
    if (!in_box(e->lo, e->hi, p))
        return 0;
    double d[3] = {p[0] - e->c[0], p[1] - e->c[1], p[2] - e->c[2]};
    double s = 0;
    for (int a = 0; a < 3; a++) {
        double q = e->m[a * 3] * d[0] + e->m[a * 3 + 1] * d[1] + e->m[a * 3 + 2] * d[2];
        s += q * q;
    }
    return s < 1.0;
}

static void capsule_make(anat_capsule *c, const double a[3], const double b[3], double r)
{
    memcpy(c->a, a, sizeof(c->a));
    memcpy(c->b, b, sizeof(c->b));
    c->r = r;
    for (int j = 0; j < 3; j++) {
        c->lo[j] = fmin(a[j], b[j]) - r;
        c->hi[j] = fmax(a[j], b[j]) + r;
    }
}

static inline int in_capsule(const anat_capsule *c, const double p[3])
{
    if (!in_box(c->lo, c->hi, p))
        return 0;
    double ab[3], ap[3], t = 0, l2 = 0;
    for (int j = 0; j < 3; j++) {
        ab[j] = c->b[j] - c->a[j];
        ap[j] = p[j] - c->a[j];
        t += ab[j] * ap[j];
        l2 += ab[j] * ab[j];
    }
    t = l2 > 0 ? fmin(1.0, fmax(0.0, t / l2)) : 0;
    double d2 = 0;
    for (int j = 0; j < 3; j++) {
        double d = ap[j] - t * ab[j];
        d2 += d * d;
    }
    return d2 < c->r * c->r;
}

/* Body cross-section: ellipse with different anterior / posterior semi-axes, shrunk by t mm. */
static inline double body_rho(const anat_subject *s, const double q[3], double t)
{
    double ay = q[1] < 0 ? s->ay_ant : s->ay_post;
    double w = 1.0 - 0.05 * ((q[2] - 20.0) / 200.0) * ((q[2] - 20.0) / 200.0); /* slight waist */
    double x = q[0] / (s->ax * w - t), y = q[1] / (ay * w - t);
    return x * x + y * y;
}

/* ---- subject ---- */

void anat_subject_build(anat_subject *s, uint64_t seed, int id)
{
    memset(s, 0, sizeof(*s));
    s->seed = seed;
    s->id = id;
    rng r = {anat_hash(seed, (uint64_t)id)};

    /* pose */
    double az = rng_uni(&r, -4, 4) * M_PI / 180, axr = rng_uni(&r, -2.5, 2.5) * M_PI / 180,
           ayr = rng_uni(&r, -2, 2) * M_PI / 180;
    double cz = cos(az), sz = sin(az), cx = cos(axr), sx = sin(axr), cy = cos(ayr), sy = sin(ayr);
    double Rz[9] = {cz, -sz, 0, sz, cz, 0, 0, 0, 1}, Rx[9] = {1, 0, 0, 0, cx, -sx, 0, sx, cx},
           Ry[9] = {cy, 0, sy, 0, 1, 0, -sy, 0, cy}, T[9];
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 3; j++) {
            T[i * 3 + j] = 0;
            for (int k = 0; k < 3; k++)
                T[i * 3 + j] += Rz[i * 3 + k] * Rx[k * 3 + j];
        }
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 3; j++) {
            s->rot[i * 3 + j] = 0;
            for (int k = 0; k < 3; k++)
                s->rot[i * 3 + j] += T[i * 3 + k] * Ry[k * 3 + j];
        }
    s->trans[0] = rng_uni(&r, -6, 6);
    s->trans[1] = rng_uni(&r, -6, 6);
    s->trans[2] = rng_uni(&r, -10, 10);
    double sxy = rng_uni(&r, 0.9, 1.1);
    s->scale[0] = sxy * rng_uni(&r, 0.97, 1.03);
    s->scale[1] = sxy * rng_uni(&r, 0.95, 1.05);
    s->scale[2] = rng_uni(&r, 0.95, 1.05);

    /* smooth deformation: four plane waves, wavelengths 180-400 mm, amplitude 2-4 mm each */
    for (int w = 0; w < 4; w++) {
        double d[3] = {rng_uni(&r, -1, 1), rng_uni(&r, -1, 1), rng_uni(&r, -1, 1)};
        normalize(d);
        double k = 2 * M_PI / rng_uni(&r, 180, 400);
        double a[3] = {rng_uni(&r, -1, 1), rng_uni(&r, -1, 1), rng_uni(&r, -1, 1)};
        normalize(a);
        double amp = rng_uni(&r, 2, 4);
        for (int j = 0; j < 3; j++) {
            s->wk[w][j] = k * d[j];
            s->wamp[w][j] = amp * a[j];
        }
        s->wph[w] = rng_uni(&r, 0, 2 * M_PI);
    }

    /* body */
    s->ax = 165;
    s->ay_ant = 112;
    s->ay_post = 128;
    s->fat_t = rng_uni(&r, 10, 26);
    s->muscle_t = rng_uni(&r, 9, 15);
    s->spine_z0 = rng_uni(&r, 0, 32);
    s->sex = (id % 2) ? 'M' : 'F';
    s->weight_kg = round(72.0 * sxy * sxy * (s->sex == 'M' ? 1.08 : 0.92) * rng_uni(&r, 0.92, 1.08));
    s->height_m = round(100.0 * (s->sex == 'M' ? 1.76 : 1.64) * s->scale[2]) / 100.0;

    /* heart: LV cavity inside a myocardial shell, RV crescent, atria / base */
    double ch[3] = {18, -30, 55};
    double lax[3] = {0.5, -0.55, -0.62};
    double hs = rng_uni(&r, 0.88, 1.12);
    {
        double c1[3] = {ch[0] + 16, ch[1], ch[2] - 4}, r1[3] = {40, 22, 22}, r2[3] = {50, 32, 32};
        ellip_make(&s->lv, c1, r1, lax);
        ellip_make(&s->myo, c1, r2, lax);
        double c2[3] = {ch[0] - 14, ch[1] - 16, ch[2] - 2}, r3[3] = {46, 36, 24};
        ellip_make(&s->rv, c2, r3, lax);
        double c3[3] = {ch[0] - 10, ch[1] + 26, ch[2] + 30}, r4[3] = {46, 34, 32};
        ellip_make(&s->heart, c3, r4, NULL);
        ellip_scale(&s->lv, ch, hs);
        ellip_scale(&s->myo, ch, hs);
        ellip_scale(&s->rv, ch, hs);
        ellip_scale(&s->heart, ch, hs);
    }
    /* aorta: root, ascending, arch, descending, abdominal */
    {
        double p[6][3] = {{ch[0] - 2, ch[1] + 8, ch[2] + 30}, {-6, -8, 105}, {6, 14, 128},
                          {22, 38, 108}, {22, 40, 0}, {12, 36, -150}};
        for (int i = 0; i < 5; i++)
            capsule_make(&s->aorta[i], p[i], p[i + 1], i < 2 ? 14 : 11);
    }
    /* liver: right and left lobes, a porta / caudate notch removed */
    {
        double ls = rng_uni(&r, 0.88, 1.12), cl[3] = {-40, 0, 5};
        double c1[3] = {-62, 5, 0}, r1[3] = {72, 78, 70};
        double c2[3] = {0, -45, 25}, r2[3] = {48, 30, 34};
        double c3[3] = {-22, 42, -42}, r3[3] = {28, 30, 36};
        ellip_make(&s->liver_r, c1, r1, NULL);
        ellip_make(&s->liver_l, c2, r2, NULL);
        ellip_make(&s->liver_cut, c3, r3, NULL);
        ellip_scale(&s->liver_r, cl, ls);
        ellip_scale(&s->liver_l, cl, ls);
        ellip_scale(&s->liver_cut, cl, ls);
    }
    /* spleen: curved, with a hilar notch */
    {
        double ss = rng_uni(&r, 0.85, 1.15);
        double c1[3] = {84, 52, 15}, r1[3] = {55, 24, 45}, ax1[3] = {-0.55, 0.83, 0};
        double c2[3] = {64, 36, 15}, r2[3] = {20, 22, 28};
        ellip_make(&s->spleen, c1, r1, ax1);
        ellip_make(&s->spleen_cut, c2, r2, NULL);
        ellip_scale(&s->spleen, c1, ss);
        ellip_scale(&s->spleen_cut, c1, ss);
    }
    /* kidneys: bean shape = ellipsoid minus a medial hilum sphere */
    {
        double kl = rng_uni(&r, 0.88, 1.12), kr = rng_uni(&r, 0.88, 1.12);
        double a1[3] = {0.15, 0.1, 1}, a2[3] = {-0.15, 0.1, 1};
        double c1[3] = {66, 58, -55}, c2[3] = {-66, 60, -70}, rr[3] = {52, 26, 22};
        double h1[3] = {42, 50, -55}, h2[3] = {-42, 52, -70}, hr[3] = {15, 15, 17};
        ellip_make(&s->kid_l, c1, rr, a1);
        ellip_make(&s->kid_r, c2, rr, a2);
        ellip_make(&s->kid_l_cut, h1, hr, NULL);
        ellip_make(&s->kid_r_cut, h2, hr, NULL);
        ellip_scale(&s->kid_l, c1, kl);
        ellip_scale(&s->kid_l_cut, c1, kl);
        ellip_scale(&s->kid_r, c2, kr);
        ellip_scale(&s->kid_r_cut, c2, kr);
    }
    /* stomach: fundus + J-shaped body / antrum, gas cap anteriorly */
    {
        double st = rng_uni(&r, 0.85, 1.15);
        double c1[3] = {55, -5, 35}, r1[3] = {36, 34, 36};
        ellip_make(&s->stom_f, c1, r1, NULL);
        ellip_scale(&s->stom_f, c1, st);
        double a[3] = {50, -25, 12}, b[3] = {6, -60, -38};
        for (int j = 0; j < 3; j++) {
            a[j] = c1[j] + st * (a[j] - c1[j]);
            b[j] = c1[j] + st * (b[j] - c1[j]);
        }
        capsule_make(&s->stom_b, a, b, 23 * st);
        s->gas_y = c1[1] - 16 * st;
        s->gas_z = c1[2] - 4 * st;
    }
    /* bladder */
    {
        double bs = rng_uni(&r, 0.75, 1.2);
        double c1[3] = {0, -35, -178}, r1[3] = {45, 35, 30};
        ellip_make(&s->bladder, c1, r1, NULL);
        ellip_scale(&s->bladder, c1, bs);
    }
    /* lungs */
    {
        double c1[3] = {72, 18, 82}, r1[3] = {60, 82, 108};
        double c2[3] = {-72, 18, 88}, r2[3] = {62, 84, 112};
        ellip_make(&s->lung_l, c1, r1, NULL);
        ellip_make(&s->lung_r, c2, r2, NULL);
        double ls = rng_uni(&r, 0.93, 1.07);
        ellip_scale(&s->lung_l, c1, ls);
        ellip_scale(&s->lung_r, c2, ls);
    }
    /* muscles: paraspinal (elliptic cylinders, as tall ellipsoids) and psoas */
    {
        double c1[3] = {36, 100, 0}, c2[3] = {-36, 100, 0}, r1[3] = {24, 18, 400};
        ellip_make(&s->para_l, c1, r1, NULL);
        ellip_make(&s->para_r, c2, r1, NULL);
        double a1[3] = {30, 55, -35}, b1[3] = {52, 28, -200}, a2[3] = {-30, 55, -35},
               b2[3] = {-52, 28, -200};
        capsule_make(&s->psoas_l, a1, b1, 19);
        capsule_make(&s->psoas_r, a2, b2, 19);
    }
}

/* Spine: vertebral bodies with discs, canal, arch, transverse and spinous processes. */
static int spine_at(const anat_subject *s, const double q[3])
{
    double x = q[0], y = q[1];
    if (fabs(x) > 45 || y < 38 || y > 118)
        return A_AIR;
    double band = fmod(q[2] - s->spine_z0 + 3200.0, 32.0);
    int disc = band > 26.0;
    double dy = y - 62;
    if (x * x + dy * dy < 21 * 21)
        return disc ? A_DISC : A_SPINE;
    double cy = y - 90, rc2 = x * x + cy * cy;
    if (rc2 < 9 * 9)
        return A_CANAL;
    if (disc)
        return A_AIR;
    if (rc2 < 16 * 16 && y > 78)
        return A_SPINE; /* arch */
    if (fabs(x) < 42 && fabs(y - 86) < 5)
        return A_SPINE; /* transverse processes */
    if (fabs(x) < 5 && y > 100 && y < 116)
        return A_SPINE; /* spinous process */
    if (fabs(x) < 16 && y > 74 && y < 83)
        return A_SPINE; /* pedicles */
    return A_AIR;
}

static int ribs_at(const anat_subject *s, const double q[3])
{
    if (q[2] < -55 || q[2] > 175)
        return 0;
    if ((q[1] < 0 && fabs(q[0]) < 26) || (q[1] > 0 && fabs(q[0]) < 30))
        return 0;
    double t = s->fat_t + 0.5 * s->muscle_t + 4;
    double rho2 = body_rho(s, q, t);
    double rho = sqrt(rho2);
    double reff = sqrt(q[0] * q[0] + q[1] * q[1]) / (rho > 1e-6 ? rho : 1e-6);
    if (fabs(rho - 1.0) * reff > 5.0)
        return 0;
    double ant = q[1] < 0 ? -q[1] / s->ay_ant : 0;
    double band = fmod(q[2] + 32.0 * ant + 2600.0, 26.0);
    return fabs(band - 13.0) < 5.5;
}

int anat_lookup(const anat_subject *s, const double p[3], double qout[3])
{
    /* patient -> canonical: undo pose, then scale, then deform */
    double d[3] = {p[0] - s->trans[0], p[1] - s->trans[1], p[2] - s->trans[2]}, q[3];
    for (int j = 0; j < 3; j++)
        q[j] = (s->rot[0 * 3 + j] * d[0] + s->rot[1 * 3 + j] * d[1] + s->rot[2 * 3 + j] * d[2]) /
               s->scale[j];
    double q0[3] = {q[0], q[1], q[2]};
    for (int w = 0; w < 4; w++) {
        double ph = s->wk[w][0] * q0[0] + s->wk[w][1] * q0[1] + s->wk[w][2] * q0[2] + s->wph[w];
        double sn = sin(ph);
        for (int j = 0; j < 3; j++)
            q[j] += s->wamp[w][j] * sn;
    }
    if (qout)
        memcpy(qout, q, sizeof(q));

    if (body_rho(s, q, 0) >= 1.0)
        return A_AIR;
    int sp = spine_at(s, q);
    if (sp != A_AIR)
        return sp;
    if (ribs_at(s, q))
        return A_RIBS;
    if (in_ellip(&s->lv, q))
        return A_LV;
    if (in_ellip(&s->myo, q))
        return A_MYO;
    if (in_ellip(&s->rv, q))
        return A_RV;
    if (in_ellip(&s->heart, q))
        return A_HEART;
    for (int i = 0; i < 5; i++)
        if (in_capsule(&s->aorta[i], q))
            return A_AORTA;
    if (in_ellip(&s->kid_l, q) && !in_ellip(&s->kid_l_cut, q))
        return A_KIDNEY_L;
    if (in_ellip(&s->kid_r, q) && !in_ellip(&s->kid_r_cut, q))
        return A_KIDNEY_R;
    if (in_ellip(&s->spleen, q) && !in_ellip(&s->spleen_cut, q))
        return A_SPLEEN;
    if ((in_ellip(&s->liver_r, q) || in_ellip(&s->liver_l, q)) && !in_ellip(&s->liver_cut, q) &&
        body_rho(s, q, s->fat_t + s->muscle_t + 3) < 1.0)
        return A_LIVER;
    if (in_ellip(&s->stom_f, q) || in_capsule(&s->stom_b, q))
        return (q[1] < s->gas_y && q[2] > s->gas_z) ? A_GAS : A_STOMACH;
    if (in_ellip(&s->bladder, q))
        return A_BLADDER;
    int cage = body_rho(s, q, s->fat_t + s->muscle_t + 6) < 1.0;
    if (cage && fabs(q[0]) > 20) {
        if (in_ellip(&s->lung_l, q))
            return A_LUNG_L;
        if (in_ellip(&s->lung_r, q))
            return A_LUNG_R;
    }
    if (in_ellip(&s->para_l, q) || in_ellip(&s->para_r, q) || in_capsule(&s->psoas_l, q) ||
        in_capsule(&s->psoas_r, q))
        return A_MUSCLE;
    if (body_rho(s, q, s->fat_t) >= 1.0)
        return A_FAT;
    if (body_rho(s, q, s->fat_t + s->muscle_t) >= 1.0)
        return A_MUSCLE;
    return A_BODY;
}
