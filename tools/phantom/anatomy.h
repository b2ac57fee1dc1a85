/* tools/phantom/anatomy.h — the analytic torso of segnode-phantom. A subject is built from
 * (seed, subject id) only; a structure is looked up at any patient point (LPS, mm). Pure
 * functions of their inputs, thread-safe, no I/O. Not a general shape library. */
#ifndef SEGNODE_PHANTOM_ANATOMY_H
#define SEGNODE_PHANTOM_ANATOMY_H

#include <stdint.h>

/* Structures, in no particular order. Some are tissue variants of one label (gas in the
 * stomach, intervertebral discs, the spinal canal); anat_label_name() gives the label. */
enum anat_struct {
    A_AIR = 0, A_BODY, A_FAT, A_MUSCLE, A_LUNG_L, A_LUNG_R, A_SPINE, A_DISC, A_CANAL, A_RIBS,
    A_LIVER, A_SPLEEN, A_KIDNEY_L, A_KIDNEY_R, A_HEART, A_LV, A_MYO, A_RV, A_AORTA, A_STOMACH,
    A_GAS, A_BLADDER, A_COUNT
};

/* Label-table name of a structure's label (etc/labels.tsv), NULL for A_AIR. */
const char *anat_label_name(int s);

typedef struct anat_ellip {
    double c[3];      /* centre */
    double m[9];      /* q = m * (p - c); inside when |q| < 1 (rotation and radii folded in) */
    double lo[3], hi[3]; /* axis-aligned bounding box */
} anat_ellip;

typedef struct anat_capsule {
    double a[3], b[3], r;
    double lo[3], hi[3];
} anat_capsule;

typedef struct anat_subject {
    uint64_t seed;
    int id;
    /* pose: p_canonical = (R^T (p - t)) / scale, then + deformation */
    double rot[9], trans[3], scale[3];
    double wk[4][3], wph[4], wamp[4][3];
    /* body outline and layers */
    double ax, ay_ant, ay_post, fat_t, muscle_t;
    double spine_z0;
    anat_ellip lv, myo, rv, heart, liver_r, liver_l, liver_cut, spleen, spleen_cut, kid_l,
        kid_l_cut, kid_r, kid_r_cut, stom_f, bladder, lung_l, lung_r, para_l, para_r;
    anat_capsule aorta[5], stom_b, psoas_l, psoas_r;
    double gas_y, gas_z;     /* stomach gas: anterior to gas_y and above gas_z (canonical) */
    double weight_kg, height_m;
    char sex;                /* 'M' or 'F' */
} anat_subject;

/* Build subject `id` (>= 1) for `seed`: smooth random deformation, organ sizes, pose. */
void anat_subject_build(anat_subject *s, uint64_t seed, int id);

/* Structure at patient point p; q (may be NULL) receives the canonical point (for texture). */
int anat_lookup(const anat_subject *s, const double p[3], double q[3]);

/* Deterministic hashing and noise shared by the renderer. */
uint64_t anat_hash(uint64_t a, uint64_t b);
double anat_u01(uint64_t h);                 /* (0,1) from a hash */
double anat_value_noise(const double q[3], double cell, uint64_t salt); /* smooth, in [-1,1] */

#endif
