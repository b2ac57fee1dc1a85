/* tools/phantom/phantom.c — segnode-phantom: synthetic subjects with exact ground truth, written
 * as DICOM series (CT, CBCT, MR T1, MR T2, PET) plus one ground-truth SEG per series and a JSON
 * sidecar describing the intended grids. Output is a function of (seed, subject, size, options)
 * only: the same arguments give the same bytes. See --help for the layout. */
#include "common/log.h"
#include "common/status.h"
#include "common/util.h"
#include "pipeline/dcmwrite.h"
#include "pipeline/labels.h"
#include "pipeline/segwrite.h"
#include "tools/phantom/anatomy.h"
#include "tools/phantom/render.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef PHANTOM_DEFAULT_LABELS
#define PHANTOM_DEFAULT_LABELS "etc/labels.tsv"
#endif

static const char *const mod_key[R_COUNT] = {"ct", "cbct", "mr-t1", "mr-t2", "pet"};
static const char *const mod_desc[R_COUNT] = {"phantom CT", "phantom CBCT", "phantom MR T1",
                                              "phantom MR T2", "phantom PET FDG"};
static const char *const mod_time[R_COUNT] = {"090000", "091500", "092000", "093000", "093000"};

typedef struct options {
    const char *out;
    int subjects, first;
    uint64_t seed;
    int mods[R_COUNT];
    int full, contrast, threads, quiet;
    const char *labels_path;
} options;

static void usage(FILE *f)
{
    fprintf(f,
"usage: segnode-phantom --out DIR [--subjects N] [--first ID] [--seed S]\n"
"                       [--modalities ct,cbct,mr-t1,mr-t2,pet] [--size small|full]\n"
"                       [--contrast] [--threads T] [--labels FILE] [--quiet]\n"
"\n"
"Synthetic torso subjects with exact ground truth, rendered with each modality's physics and\n"
"written as DICOM. Same seed and subject id give the same bytes.\n"
"\n"
"  --out DIR         output folder (created)\n"
"  --subjects N      number of subjects (default 1), ids FIRST..FIRST+N-1\n"
"  --first ID        first subject id (default 1)\n"
"  --seed S          64-bit seed (default 1)\n"
"  --modalities L    comma list of ct, cbct, mr-t1, mr-t2, pet (default all)\n"
"  --size small|full small: ~96^3 grids for tests (default); full: 512x512x300 CT etc.\n"
"  --contrast        CT and CBCT in a portal-venous contrast phase\n"
"  --threads T       worker threads (default 2)\n"
"  --labels FILE     label code table (default %s)\n"
"  --quiet           no summary\n"
"\n"
"Layout:  DIR/subject-NNN/<modality>/IM0001.dcm ...  one classic single-frame series each\n"
"         DIR/subject-NNN/seg/<modality>.dcm          ground-truth SEG on that series' grid\n"
"         DIR/subject-NNN/phantom.json                intended grids, UIDs, label numbers\n"
"All series of a subject share patient, study and frame of reference (one patient space).\n",
            PHANTOM_DEFAULT_LABELS);
}

static int parse_args(int argc, char **argv, options *o)
{
    memset(o, 0, sizeof(*o));
    o->subjects = 1;
    o->first = 1;
    o->seed = 1;
    o->threads = 2;
    o->labels_path = PHANTOM_DEFAULT_LABELS;
    for (int m = 0; m < R_COUNT; m++)
        o->mods[m] = 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define NEED() do { if (!v) { fprintf(stderr, "segnode-phantom: %s needs a value\n", a); return 2; } i++; } while (0)
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 1;
        } else if (!strcmp(a, "--out")) {
            NEED();
            o->out = v;
        } else if (!strcmp(a, "--subjects") || !strcmp(a, "--first") || !strcmp(a, "--threads")) {
            NEED();
            char *end;
            long n = strtol(v, &end, 10);
            if (*end || n < 1 || n > 9999) {
                fprintf(stderr, "segnode-phantom: %s: bad number '%s'\n", a, v);
                return 2;
            }
            if (!strcmp(a, "--subjects"))
                o->subjects = (int)n;
            else if (!strcmp(a, "--first"))
                o->first = (int)n;
            else
                o->threads = n > 64 ? 64 : (int)n;
        } else if (!strcmp(a, "--seed")) {
            NEED();
            char *end;
            errno = 0;
            unsigned long long s = strtoull(v, &end, 10);
            if (*end || errno || *v == '-') {
                fprintf(stderr, "segnode-phantom: --seed: bad number '%s'\n", v);
                return 2;
            }
            o->seed = s;
        } else if (!strcmp(a, "--modalities")) {
            NEED();
            memset(o->mods, 0, sizeof(o->mods));
            char buf[256];
            sn_strlcpy(buf, v, sizeof(buf));
            for (char *t = strtok(buf, ","); t; t = strtok(NULL, ",")) {
                int found = 0;
                for (int m = 0; m < R_COUNT; m++)
                    if (!strcmp(sn_strtrim(t), mod_key[m]))
                        o->mods[m] = found = 1;
                if (!found) {
                    fprintf(stderr, "segnode-phantom: unknown modality '%s'\n", t);
                    return 2;
                }
            }
        } else if (!strcmp(a, "--size")) {
            NEED();
            if (!strcmp(v, "small"))
                o->full = 0;
            else if (!strcmp(v, "full"))
                o->full = 1;
            else {
                fprintf(stderr, "segnode-phantom: --size must be small or full\n");
                return 2;
            }
        } else if (!strcmp(a, "--labels")) {
            NEED();
            o->labels_path = v;
        } else if (!strcmp(a, "--contrast")) {
            o->contrast = 1;
        } else if (!strcmp(a, "--quiet")) {
            o->quiet = 1;
        } else {
            fprintf(stderr, "segnode-phantom: unknown option '%s' (see --help)\n", a);
            return 2;
        }
#undef NEED
    }
    if (!o->out) {
        fprintf(stderr, "segnode-phantom: --out DIR is required (see --help)\n");
        return 2;
    }
    return 0;
}

/* ---- per-subject identity ---- */

typedef struct subject_ids {
    char study_uid[64], for_uid[64], patient_id[32], patient_name[64], study_id[16],
        accession[16], birth[9], study_date[9];
    char sex[2];
} subject_ids;

static void uid_of(const options *o, int subj, const char *what, char out[64])
{
    char text[160];
    snprintf(text, sizeof(text), "segnode-phantom/%" PRIu64 "/%d/%s", o->seed, subj, what);
    pipeline_dcm_hash_uid(text, out);
}

/* ---- writing one series ---- */

typedef struct series_ctx {
    const options *o;
    const anat_subject *s;
    const subject_ids *ids;
    int m;
    const render_grid *g;
    const float *img;
    const char *dir;
    const char *series_uid;
    char (*sop)[64];
    pipeline_dcm_header hdr;
    double suv1;
    atomic_int failed;
    char err[256];
} series_ctx;

static void write_slice(void *arg, int k)
{
    series_ctx *c = arg;
    if (atomic_load(&c->failed))
        return;
    const render_grid *g = c->g;
    const size_t plane = (size_t)g->nx * g->ny;
    const float *src = c->img + plane * k;
    uint16_t *px = malloc(plane * sizeof(uint16_t));
    if (!px) {
        atomic_store(&c->failed, 1);
        return;
    }
    pipeline_dcm_image im;
    memset(&im, 0, sizeof(im));
    im.sop_uid = c->sop[k];
    im.instance_number = k + 1;
    im.rows = g->ny;
    im.cols = g->nx;
    im.pixel_spacing[0] = g->sp[1];
    im.pixel_spacing[1] = g->sp[0];
    im.slice_thickness = g->thickness;
    for (int a = 0; a < 3; a++) {
        im.ipp[a] = g->origin[a] + k * g->sp[2] * g->dir[6 + a];
        im.iop[a] = g->dir[a];
        im.iop[3 + a] = g->dir[3 + a];
    }
    im.slice_location = im.ipp[0] * g->dir[6] + im.ipp[1] * g->dir[7] + im.ipp[2] * g->dir[8];
    im.content_date = im.acquisition_date = c->ids->study_date;
    im.content_time = im.acquisition_time = mod_time[c->m];
    im.acquisition_number = 1;
    pipeline_dcm_ct ct;
    pipeline_dcm_mr mr;
    pipeline_dcm_pt pt;
    char inj_dt[32];   /* pt.injection_datetime points here until the write below */
    if (c->m == R_CT || c->m == R_CBCT) {
        memset(&ct, 0, sizeof(ct));
        im.kind = PIPELINE_DCM_CT;
        im.ct = &ct;
        im.image_type = "ORIGINAL\\PRIMARY\\AXIAL";
        ct.kvp = c->m == R_CT ? 120 : 100;
        ct.tube_current_ma = c->m == R_CT ? 250 : 80;
        ct.convolution_kernel = c->m == R_CT ? "STANDARD" : "CBCT";
        ct.reconstruction_diameter = g->nx * g->sp[0];
        im.bits_stored = 12;
        im.rescale_slope = 1;
        im.rescale_intercept = -1024;
        im.window_center = 40;
        im.window_width = 400;
        for (size_t i = 0; i < plane; i++) {
            long v = lround(src[i] + 1024.0);
            px[i] = (uint16_t)(v < 0 ? 0 : (v > 4095 ? 4095 : v));
        }
    } else if (c->m == R_MR_T1 || c->m == R_MR_T2) {
        int t1 = c->m == R_MR_T1;
        memset(&mr, 0, sizeof(mr));
        im.kind = PIPELINE_DCM_MR;
        im.mr = &mr;
        im.image_type = "ORIGINAL\\PRIMARY\\OTHER";
        mr.scanning_sequence = "SE";
        mr.sequence_variant = t1 ? "SP" : "SK\\SP";
        mr.scan_options = "";   /* no fat saturation: the T2 rendering keeps fat bright */
        mr.acquisition_type = "2D";
        mr.sequence_name = t1 ? "se2d1" : "tse2d1_16";
        mr.repetition_time_ms = t1 ? 550 : 4000;
        mr.echo_time_ms = t1 ? 12 : 95;
        mr.echo_train_length = t1 ? 1 : 16;
        mr.flip_angle_deg = t1 ? 90 : 150;
        mr.field_strength_t = 1.5;
        mr.imaging_frequency_mhz = 63.87;
        mr.imaged_nucleus = "1H";
        im.spacing_between_slices = g->sp[2];
        im.bits_stored = 12;
        im.window_center = 500;
        im.window_width = 1000;
        for (size_t i = 0; i < plane; i++) {
            long v = lround(src[i]);
            px[i] = (uint16_t)(v < 0 ? 0 : (v > 4095 ? 4095 : v));
        }
    } else {
        memset(&pt, 0, sizeof(pt));
        im.kind = PIPELINE_DCM_PT;
        im.pt = &pt;
        im.image_type = "ORIGINAL\\PRIMARY";
        pt.units = "BQML";
        pt.corrected_image = "DECY\\ATTN\\SCAT\\DTIM\\RAN\\NORM";
        pt.decay_correction = "START";
        pt.radiopharmaceutical = "Fluorodeoxyglucose";
        pt.injection_time = "083000";
        pt.total_dose_bq = RENDER_PET_DOSE_BQ;
        pt.half_life_s = RENDER_PET_HALF_LIFE_S;
        pt.positron_fraction = 0.9673;
        pt.frame_duration_ms = 180000;
        pt.decay_factor = 1.0;
        pt.frame_reference_time_ms = 0;
        pt.number_of_slices = g->nz;
        pt.image_index = k + 1;
        pt.reconstruction_method = "OSEM 3i21s";
        snprintf(inj_dt, sizeof(inj_dt), "%s083000", c->ids->study_date);
        pt.injection_datetime = inj_dt;
        float mx = 0;
        for (size_t i = 0; i < plane; i++)
            mx = src[i] > mx ? src[i] : mx;
        double slope = mx > 0 ? mx / 32000.0 : 1.0;
        im.pixel_signed = 1;
        im.bits_stored = 16;
        im.rescale_slope = slope;
        im.window_center = 3.0 * c->suv1;
        im.window_width = 6.0 * c->suv1;
        for (size_t i = 0; i < plane; i++) {
            long v = lround(src[i] / slope);
            px[i] = (uint16_t)(int16_t)(v < 0 ? 0 : (v > 32767 ? 32767 : v));
        }
    }
    im.pixels = px;
    char path[4096];
    snprintf(path, sizeof(path), "%s/IM%04d.dcm", c->dir, k + 1);
    char err[256];
    if (pipeline_dcm_write_image(path, &c->hdr, &im, err, sizeof(err))) {
        if (!atomic_exchange(&c->failed, 1))
            snprintf(c->err, sizeof(c->err), "%s", err);
    }
    free(px);
}

static void json_vec(FILE *f, const double *v, int n)
{
    fputc('[', f);
    for (int i = 0; i < n; i++)
        fprintf(f, "%s%.10g", i ? ", " : "", fabs(v[i]) < 1e-12 ? 0.0 : v[i]);
    fputc(']', f);
}

typedef struct series_info {
    int done;
    render_grid g;
    char series_uid[64], seg_uid[64], seg_series_uid[64];
    double seconds;
    int present[256];
} series_info;

static int run_subject(const options *o, const pipeline_labels *table, const uint8_t *lab_of, int subj)
{
    anat_subject s;
    anat_subject_build(&s, o->seed, subj);
    subject_ids ids;
    memset(&ids, 0, sizeof(ids));
    uid_of(o, subj, "study", ids.study_uid);
    uid_of(o, subj, "frame-of-reference", ids.for_uid);
    snprintf(ids.patient_id, sizeof(ids.patient_id), "PH%" PRIu64 "-%03d", o->seed % 1000000, subj);
    snprintf(ids.patient_name, sizeof(ids.patient_name), "PHANTOM^SUBJECT%03d", subj);
    snprintf(ids.study_id, sizeof(ids.study_id), "%d", subj);
    snprintf(ids.accession, sizeof(ids.accession), "PH%06d", subj);
    snprintf(ids.birth, sizeof(ids.birth), "%04d0101", 1950 + (int)(anat_hash(o->seed, subj) % 40));
    snprintf(ids.study_date, sizeof(ids.study_date), "2024%02u%02u", 1u + ((unsigned)subj / 28u) % 12u, 1u + (unsigned)subj % 28u);
    ids.sex[0] = s.sex;

    char sdir[4096], err[512];
    snprintf(sdir, sizeof(sdir), "%s/subject-%03d", o->out, subj);
    char segdir[4160];
    snprintf(segdir, sizeof(segdir), "%s/seg", sdir);
    if (sn_mkdirs(segdir, err, sizeof(err))) {
        fprintf(stderr, "segnode-phantom: %s\n", err);
        return SN_EIO;
    }
    series_info info[R_COUNT];
    memset(info, 0, sizeof(info));
    render_opts ro = {o->contrast, o->threads};

    for (int m = 0; m < R_COUNT; m++) {
        if (!o->mods[m])
            continue;
        int64_t t0 = sn_mono_ms();
        series_info *si = &info[m];
        render_grid *g = &si->g;
        render_grid_for(m, o->full, &s, g);
        const size_t n = (size_t)g->nx * g->ny * g->nz;
        float *img = malloc(n * sizeof(float));
        uint8_t *gt = malloc(n);
        uint8_t *lab = malloc(n);
        char (*sop)[64] = malloc((size_t)g->nz * 64);
        const char **sop_ptr = malloc((size_t)g->nz * sizeof(char *));
        if (!img || !gt || !lab || !sop || !sop_ptr) {
            fprintf(stderr, "segnode-phantom: out of memory\n");
            free(img), free(gt), free(lab), free(sop), free(sop_ptr);
            return SN_ENOMEM;
        }
        render_volume(m, &s, g, &ro, img, gt);
        for (size_t i = 0; i < n; i++) {
            lab[i] = lab_of[gt[i]];
            si->present[lab[i]] = 1;
        }

        /* the UIDs of a rendering name its variant too: the same subject at full size, or its
         * CT and CBCT in the contrast phase, are other images and must not share series or
         * instance UIDs with the default ones (a node receiving both would take the second for
         * a resend of the first and replace it); study and frame of reference stay the
         * subject's */
        char var[32], what[80];
        snprintf(var, sizeof(var), "%s%s", o->full ? "/full" : "",
                 o->contrast && (!strcmp(mod_key[m], "ct") || !strcmp(mod_key[m], "cbct")) ? "/contrast" : "");
        snprintf(what, sizeof(what), "series/%s%s", mod_key[m], var);
        uid_of(o, subj, what, si->series_uid);
        for (int k = 0; k < g->nz; k++) {
            snprintf(what, sizeof(what), "instance/%s/%d%s", mod_key[m], k + 1, var);
            uid_of(o, subj, what, sop[k]);
            sop_ptr[k] = sop[k];
        }
        char dir[4200];
        snprintf(dir, sizeof(dir), "%s/%s", sdir, mod_key[m]);
        int rc = sn_mkdirs(dir, err, sizeof(err));
        if (rc) {
            fprintf(stderr, "segnode-phantom: %s\n", err);
            free(img), free(gt), free(lab), free(sop), free(sop_ptr);
            return rc;
        }
        series_ctx c;
        memset(&c, 0, sizeof(c));
        c.o = o, c.s = &s, c.ids = &ids, c.m = m, c.g = g, c.img = img, c.dir = dir;
        c.series_uid = si->series_uid;
        c.sop = sop;
        c.suv1 = render_pet_suv1(&s);
        atomic_init(&c.failed, 0);
        pipeline_dcm_header *h = &c.hdr;
        h->patient_name = ids.patient_name;
        h->patient_id = ids.patient_id;
        h->patient_birth_date = ids.birth;
        h->patient_sex = ids.sex;
        h->patient_weight_kg = s.weight_kg;
        h->patient_size_m = s.height_m;
        h->study_uid = ids.study_uid;
        h->study_id = ids.study_id;
        h->study_date = ids.study_date;
        h->study_time = "090000";
        h->accession_number = ids.accession;
        h->study_description = "segnode phantom";
        h->referring_physician = "";
        h->modality = (m == R_PET) ? "PT" : (m == R_MR_T1 || m == R_MR_T2) ? "MR" : "CT";
        h->series_uid = si->series_uid;
        h->series_description = mod_desc[m];
        h->series_date = ids.study_date;
        h->series_time = mod_time[m];
        h->body_part = "CHEST";
        h->series_number = m + 1;
        h->for_uid = ids.for_uid;
        h->manufacturer = "segnode";
        h->model_name = m == R_CBCT ? "phantom C-arm" : "segnode-phantom";
        h->device_serial = "0";
        h->software_versions = SEGNODE_VERSION;
        h->station_name = "PHANTOM";
        render_parallel(o->threads, g->nz, write_slice, &c);
        if (atomic_load(&c.failed)) {
            fprintf(stderr, "segnode-phantom: %s\n", c.err);
            free(img), free(gt), free(lab), free(sop), free(sop_ptr);
            return SN_EIO;
        }

        /* ground-truth SEG on this grid */
        snprintf(what, sizeof(what), "seg-series/%s%s", mod_key[m], var);
        uid_of(o, subj, what, si->seg_series_uid);
        snprintf(what, sizeof(what), "seg/%s%s", mod_key[m], var);
        uid_of(o, subj, what, si->seg_uid);
        pipeline_dcm_header sh = c.hdr;
        char segdesc[80];
        snprintf(segdesc, sizeof(segdesc), "%s ground truth", mod_desc[m]);
        sh.series_uid = si->seg_series_uid;
        sh.series_description = segdesc;
        sh.series_number = 100 + m + 1;
        sh.series_time = "100000";
        sh.model_name = "segnode-phantom";
        pipeline_seg_source src;
        memset(&src, 0, sizeof(src));
        src.cols = g->nx, src.rows = g->ny, src.slices = g->nz;
        memcpy(src.origin, g->origin, sizeof(src.origin));
        for (int a = 0; a < 3; a++)
            src.iop[a] = g->dir[a], src.iop[3 + a] = g->dir[3 + a];
        src.pixel_spacing[0] = g->sp[1];
        src.pixel_spacing[1] = g->sp[0];
        src.slice_spacing = g->sp[2];
        src.slice_thickness = g->thickness;
        src.series_uid = si->series_uid;
        src.sop_class_uid = m == R_PET ? "1.2.840.10008.5.1.4.1.1.128"
                            : (m == R_MR_T1 || m == R_MR_T2) ? "1.2.840.10008.5.1.4.1.1.4"
                                                             : "1.2.840.10008.5.1.4.1.1.2";
        src.sop_uids = sop_ptr;
        pipeline_seg_options so;
        memset(&so, 0, sizeof(so));
        so.sop_uid = si->seg_uid;
        so.instance_number = 1;
        so.content_label = "GROUND_TRUTH";
        so.content_description = "segnode-phantom analytic ground truth";
        so.content_creator = "SEGNODE^PHANTOM";
        so.content_date = ids.study_date;
        so.content_time = "100000";
        so.manual = 0;
        so.algorithm_name = "segnode-phantom analytic anatomy";
        char segpath[4300];
        snprintf(segpath, sizeof(segpath), "%s/%s.dcm", segdir, mod_key[m]);
        rc = pipeline_seg_write(segpath, &sh, &src, lab, table, &so, err, sizeof(err));
        free(img), free(gt), free(lab), free(sop), free(sop_ptr);
        if (rc) {
            fprintf(stderr, "segnode-phantom: %s: %s\n", segpath, err);
            return rc;
        }
        si->done = 1;
        si->seconds = (sn_mono_ms() - t0) / 1000.0;
        if (!o->quiet)
            printf("subject-%03d %-6s %4dx%4dx%4d  %6.3fx%6.3fx%6.3f mm  %3d instances + SEG  %6.2f s\n",
                   subj, mod_key[m], g->nx, g->ny, g->nz, g->sp[0], g->sp[1], g->sp[2], g->nz,
                   si->seconds);
    }

    /* sidecar: the grids the generator intended, for tests and tools */
    char jpath[4200];
    snprintf(jpath, sizeof(jpath), "%s/phantom.json", sdir);
    FILE *f = fopen(jpath, "w");
    if (!f) {
        fprintf(stderr, "segnode-phantom: %s: %s\n", jpath, strerror(errno));
        return SN_EIO;
    }
    fprintf(f, "{\n  \"generator\": \"segnode-phantom\",\n  \"version\": \"%s\",\n", SEGNODE_VERSION);
    fprintf(f, "  \"seed\": %" PRIu64 ",\n  \"subject\": %d,\n  \"size\": \"%s\",\n  \"contrast\": %s,\n",
            o->seed, subj, o->full ? "full" : "small", o->contrast ? "true" : "false");
    fprintf(f, "  \"patient_id\": \"%s\",\n  \"patient_weight_kg\": %.1f,\n", ids.patient_id, s.weight_kg);
    fprintf(f, "  \"study_uid\": \"%s\",\n  \"frame_of_reference_uid\": \"%s\",\n", ids.study_uid, ids.for_uid);
    fprintf(f, "  \"pet_suv1_bqml\": %.4f,\n", render_pet_suv1(&s));
    fprintf(f, "  \"labels\": {");
    int first = 1;
    for (size_t i = 0; i < pipeline_labels_count(table); i++) {
        const pipeline_label *l = pipeline_labels_at(table, i);
        fprintf(f, "%s\"%s\": %d", first ? "" : ", ", l->name, l->number);
        first = 0;
    }
    fprintf(f, "},\n  \"series\": [");
    first = 1;
    for (int m = 0; m < R_COUNT; m++) {
        const series_info *si = &info[m];
        if (!si->done)
            continue;
        const render_grid *g = &si->g;
        fprintf(f, "%s\n    {\"modality\": \"%s\", \"dir\": \"%s\", \"seg\": \"seg/%s.dcm\", \"description\": \"%s\",\n",
                first ? "" : ",", mod_key[m], mod_key[m], mod_key[m], mod_desc[m]);
        first = 0;
        fprintf(f, "     \"series_uid\": \"%s\", \"seg_sop_uid\": \"%s\",\n", si->series_uid, si->seg_uid);
        fprintf(f, "     \"size\": [%d, %d, %d], \"spacing\": ", g->nx, g->ny, g->nz);
        json_vec(f, g->sp, 3);
        fprintf(f, ", \"slice_thickness\": %.6g,\n     \"origin\": ", g->thickness);
        json_vec(f, g->origin, 3);
        fprintf(f, ", \"row_dir\": ");
        json_vec(f, g->dir, 3);
        fprintf(f, ", \"col_dir\": ");
        json_vec(f, g->dir + 3, 3);
        fprintf(f, ", \"slice_dir\": ");
        json_vec(f, g->dir + 6, 3);
        fprintf(f, ",\n     \"labels_present\": [");
        int f2 = 1;
        for (int v = 1; v < 256; v++)
            if (si->present[v]) {
                fprintf(f, "%s%d", f2 ? "" : ", ", v);
                f2 = 0;
            }
        fprintf(f, "], \"seconds\": %.3f}", si->seconds);
    }
    fprintf(f, "\n  ]\n}\n");
    if (fclose(f)) {
        fprintf(stderr, "segnode-phantom: %s: write failed\n", jpath);
        return SN_EIO;
    }
    return 0;
}

int main(int argc, char **argv)
{
    options o;
    int rc = parse_args(argc, argv, &o);
    if (rc)
        return rc == 1 ? 0 : 2;
    pipeline_labels *table = NULL;
    char err[512];
    if ((rc = pipeline_labels_load(o.labels_path, &table, err, sizeof(err)))) {
        fprintf(stderr, "segnode-phantom: %s (use --labels FILE)\n", err);
        return 1;
    }
    uint8_t lab_of[A_COUNT];
    memset(lab_of, 0, sizeof(lab_of));
    for (int st = 1; st < A_COUNT; st++) {
        const pipeline_label *l = pipeline_labels_by_name(table, anat_label_name(st));
        if (!l) {
            fprintf(stderr, "segnode-phantom: label '%s' missing from %s\n", anat_label_name(st), o.labels_path);
            pipeline_labels_free(table);
            return 1;
        }
        lab_of[st] = (uint8_t)l->number;
    }
    if (sn_mkdirs(o.out, err, sizeof(err))) {
        fprintf(stderr, "segnode-phantom: %s\n", err);
        pipeline_labels_free(table);
        return 1;
    }
    int64_t t0 = sn_mono_ms();
    for (int i = 0; i < o.subjects && !rc; i++)
        rc = run_subject(&o, table, lab_of, o.first + i);
    pipeline_labels_free(table);
    if (rc)
        return 1;
    if (!o.quiet)
        printf("wrote %d subject(s) to %s in %.2f s (seed %" PRIu64 ", size %s, %d threads)\n",
               o.subjects, o.out, (sn_mono_ms() - t0) / 1000.0, o.seed, o.full ? "full" : "small",
               o.threads);
    return 0;
}
