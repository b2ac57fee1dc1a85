/* tests/fuzz/fuzz_volume.cc — fuzz harness for the series-to-volume reader (pipeline/volume.cc)
 * and the codecs behind it (DCMTK's JPEG, JPEG-LS, RLE; our OpenJPEG-based JPEG 2000 codec,
 * pipeline/codec_j2k.cc). The bytes are one to FUZZ_MAX_FILES DICOM files separated by the
 * marker FUZZ_SEP; they are written to a scratch folder and read as one series with
 * pipeline_volume_read_files (single slices allowed, one decoding thread), then the first file's
 * frames with pipeline_frames_read, as SEG import and decoder conformance do. Reader options
 * (int16, gap filling) come from the input's length so both paths are searched. A refused series
 * is fine; a crash, sanitizer report or an "out of memory" from our code is not. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pipeline/volume.h"

extern "C" {
#include "common/log.h"
#include "common/status.h"
#include "tests/fuzz/fuzz.h"
}

#define FUZZ_MAX_FILES 4
static const char FUZZ_SEP[] = "--SNFUZZ-NEXT-FILE--";

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *dir;
    if (!dir) {
        sn_log_set_level(SN_LOG_LEVEL_OFF);
        pipeline_codecs_register();
        dir = fuzz_scratch_dir("volume");
    }
    if (size > 4 * 1024 * 1024)
        return 0;

    char paths[FUZZ_MAX_FILES][700];
    const char *argv[FUZZ_MAX_FILES];
    int n = 0;
    const size_t seplen = sizeof FUZZ_SEP - 1;
    size_t start = 0;
    while (n < FUZZ_MAX_FILES) {
        const uint8_t *end = (const uint8_t *)memmem(data + start, size - start, FUZZ_SEP, seplen);
        size_t len = end && n + 1 < FUZZ_MAX_FILES ? (size_t)(end - (data + start)) : size - start;
        snprintf(paths[n], sizeof paths[n], "%s/f%d.dcm", dir, n);
        if (fuzz_write_file(paths[n], data + start, len) != 0) {
            fprintf(stderr, "fuzz_volume: cannot write %s\n", paths[n]);
            abort();
        }
        argv[n] = paths[n];
        n++;
        if (len == size - start)
            break;
        start += len + seplen;
    }

    pipeline_volume_opts opts;
    pipeline_volume_opts_default(&opts);
    opts.min_slices = 1;
    opts.threads = 1;
    opts.int16 = (int)(size & 1);
    opts.fill_gaps = (int)((size >> 1) & 1);
    /* 256 MiB as float, the largest allocation tools/run-fuzz lets succeed: a larger grid must be
     * refused by the cap, not allocated (the default cap, 2^31 voxels, is for real series). */
    opts.max_voxels = (size_t)1 << 26;
    pipeline_volume *vol = nullptr;
    char err[1024];
    static const bool verbose = getenv("SEGNODE_FUZZ_VERBOSE") != nullptr;
    int rc = pipeline_volume_read_files(argv, n, &opts, &vol, err, sizeof err);
    if (verbose)
        fprintf(stderr, "fuzz_volume: %d file(s): %s\n", n, rc == 0 ? "volume read" : err);
    /* Allocations above 256 MiB fail here (tools/run-fuzz): DCMTK's are reported as a parse or
     * decode error; ours as out of memory, which means something sized from the input escaped
     * the caps: a finding. */
    if (rc == SN_ENOMEM) {
        fprintf(stderr, "fuzz_volume: the reader ran out of memory: %s\n", err);
        abort();
    }
    if (rc == 0) {
        /* A volume was made: its size must be what its arrays hold (touch the last voxel). */
        size_t nv = (size_t)vol->nx * vol->ny * vol->nz;
        volatile float sink = vol->data ? vol->data[nv - 1] : (float)vol->data16[nv - 1];
        (void)sink;
        volatile const char *slice = vol->slices[vol->nz - 1].sop_instance_uid;
        (void)slice;
    }
    pipeline_volume_free(vol);

    pipeline_frames *fr = nullptr;
    rc = pipeline_frames_read(paths[0], &fr, err, sizeof err);
    if (rc == SN_ENOMEM) {
        fprintf(stderr, "fuzz_volume: the frames reader ran out of memory: %s\n", err);
        abort();
    }
    if (rc == 0) {
        size_t nv = (size_t)fr->frames * fr->rows * fr->cols * fr->samples;
        if (nv) {
            volatile int32_t sink = fr->values[nv - 1];
            (void)sink;
        }
    }
    pipeline_frames_free(fr);
    return 0;
}
