/* pipeline/codec_j2k.h — JPEG 2000 (1.2.840.10008.1.2.4.90 lossless, .91 lossy) decoding for
 * DCMTK through OpenJPEG, as a DcmCodec registered with DcmCodecList (DCMTK's free edition has
 * none). Decodes only; encoding is refused (make test inputs with `gdcmconv --j2k`).
 * The codec class itself is private to codec_j2k.cc; this header is plain C. Registration of all
 * decoders (this one and DCMTK's JPEG, JPEG-LS, RLE) is pipeline_codecs_register() in volume.h. */
#ifndef SEGNODE_PIPELINE_CODEC_J2K_H
#define SEGNODE_PIPELINE_CODEC_J2K_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Register the JPEG 2000 decoder once (idempotent, thread-safe). */
void pipeline_codec_j2k_register(void);

/* Decode one JPEG 2000 frame (raw J2K codestream or JP2 file, told apart by magic bytes) of
 * `len` bytes into `out` (rows*cols*samples values, interleaved, of `bits_allocated` 8 or 16
 * bits, little endian host order). Checks the image's size and component count against
 * rows/cols/samples and every value against bits_stored / pixel_representation: out of range is
 * an error, or, when `lossy` (transfer syntax .91), clamped (irreversible coding rings past the
 * range). Truncated or corrupt data fails (no partial image). Returns 0 or SN_EDICOM with `err`
 * filled. Thread-safe. */
int pipeline_j2k_decode_frame(const uint8_t *data, size_t len, int rows, int cols, int samples,
                              int bits_allocated, int bits_stored, int pixel_representation,
                              int lossy, void *out, char *err, size_t errlen);

#ifdef __cplusplus
}
#endif

#endif
