/* tests/phantom/seg_pack_test.c — writes a BINARY SEG on a 38x23x6 grid (rows*cols*frames not a
 * multiple of 8: the DCMTK 3.6.7 packing bug) through pipeline_seg_write, plus the label volume
 * as raw bytes, so check_phantom.py can compare them bit for bit with pydicom.
 * usage: seg_pack_test LABELS.tsv OUT.dcm OUT.raw */
#include "pipeline/labels.h"
#include "pipeline/segwrite.h"

#include <stdio.h>
#include <string.h>

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: seg_pack_test LABELS.tsv OUT.dcm OUT.raw\n");
        return 2;
    }
    enum { NX = 38, NY = 23, NZ = 6 };
    static uint8_t lab[NX * NY * NZ];
    for (int k = 0; k < NZ; k++)
        for (int j = 0; j < NY; j++)
            for (int i = 0; i < NX; i++) {
                int v = 0;
                if ((i - 19) * (i - 19) + (j - 11) * (j - 11) < 60 + 10 * k)
                    v = 8; /* liver */
                else if (i > 30 && j > 15)
                    v = 9; /* spleen, touches the last pixel of every frame */
                else if ((i * 7 + j * 3 + k) % 11 == 0)
                    v = 13; /* scattered single pixels */
                lab[(k * NY + j) * NX + i] = (uint8_t)v;
            }
    /* bit-pattern probes at the very end of the volume */
    lab[NX * NY * NZ - 2] = 14;
    pipeline_labels *t = NULL;
    char err[256];
    if (pipeline_labels_load(argv[1], &t, err, sizeof(err))) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    char sop[NZ][64];
    const char *sops[NZ];
    for (int k = 0; k < NZ; k++) {
        char text[64];
        snprintf(text, sizeof(text), "seg-pack-test/src/%d", k);
        pipeline_dcm_hash_uid(text, sop[k]);
        sops[k] = sop[k];
    }
    char study[64], series[64], segser[64], segsop[64], forr[64], srcser[64];
    pipeline_dcm_hash_uid("seg-pack-test/study", study);
    pipeline_dcm_hash_uid("seg-pack-test/series", series);
    pipeline_dcm_hash_uid("seg-pack-test/seg-series", segser);
    pipeline_dcm_hash_uid("seg-pack-test/seg", segsop);
    pipeline_dcm_hash_uid("seg-pack-test/for", forr);
    pipeline_dcm_hash_uid("seg-pack-test/src-series", srcser);
    pipeline_dcm_header h;
    memset(&h, 0, sizeof(h));
    h.patient_name = "TEST^SEG";
    h.patient_id = "SEGPACK";
    h.study_uid = study;
    h.series_uid = segser;
    h.for_uid = forr;
    h.series_number = 99;
    h.manufacturer = "segnode";
    h.study_date = "20240101";
    h.study_time = "120000";
    pipeline_seg_source src = {NX, NY, NZ, {-10, 20, 30}, {1, 0, 0, 0, 1, 0}, {0.8, 0.7}, 2.5, 2.5,
                               srcser, "1.2.840.10008.5.1.4.1.1.2", sops, NULL};
    pipeline_seg_options o = {segsop, 1, "TEST", "packing test", NULL, "20240101", "120000", 1, NULL};
    int rc = pipeline_seg_write(argv[2], &h, &src, lab, t, &o, err, sizeof(err));
    pipeline_labels_free(t);
    if (rc) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    FILE *f = fopen(argv[3], "wb");
    if (!f || fwrite(lab, 1, sizeof(lab), f) != sizeof(lab) || fclose(f)) {
        fprintf(stderr, "cannot write %s\n", argv[3]);
        return 1;
    }
    /* the packer alone: 13 bits */
    uint8_t v[13] = {1, 0, 0, 0, 0, 0, 0, 1, 1, 0, 1, 0, 1}, out[2];
    pipeline_seg_pack_bits(v, 13, out);
    if (out[0] != 0x81 || out[1] != 0x15) {
        fprintf(stderr, "pipeline_seg_pack_bits: got %02x %02x, want 81 15\n", out[0], out[1]);
        return 1;
    }
    return 0;
}
