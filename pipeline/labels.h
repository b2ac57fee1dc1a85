/* pipeline/labels.h — the label code table (etc/labels.tsv): label number, short name, coded
 * segmented property category/type/modifier and display colour. One table is shared by the
 * phantom generator, config routes (`labels = liver, spleen`) and the SEG writer.
 * Plain C, no DCMTK. The file format is documented at the top of etc/labels.tsv. */
#ifndef SEGNODE_PIPELINE_LABELS_H
#define SEGNODE_PIPELINE_LABELS_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif


/* A coded concept (PS3.3 Code Sequence Macro). value[0] == '\0' means "absent". */
typedef struct pipeline_code {
    char scheme[16];   /* Coding Scheme Designator, e.g. "SCT" */
    char value[32];    /* Code Value, e.g. "10200004" */
    char meaning[64];  /* Code Meaning, e.g. "Liver" */
} pipeline_code;

typedef struct pipeline_label {
    int number;                 /* 1..255, the value in label volumes */
    char name[32];              /* short name, [a-z0-9_]+ */
    pipeline_code category;     /* Segmented Property Category (always present) */
    pipeline_code type;         /* Segmented Property Type (always present) */
    pipeline_code modifier;     /* Segmented Property Type Modifier (may be absent) */
    unsigned char rgb[3];       /* recommended display colour */
} pipeline_label;

typedef struct pipeline_labels pipeline_labels; /* opaque, immutable once loaded */

#define PIPELINE_LABELS_MAX 255

/* Load and validate a table. On success *out owns a new table (free with pipeline_labels_free)
 * and 0 is returned; otherwise SN_ENOENT/SN_EIO (file) or SN_EINVAL (syntax, duplicate number
 * or name, number out of range) with `err` naming the line. */
int pipeline_labels_load(const char *path, pipeline_labels **out, char *err, size_t errlen);

/* Which table the node and its commands use, into out[n]: $SEGNODE_LABELS when set; else
 * labels.tsv in the folder of the config file `config_path` (NULL or "" for none) when present
 * there (an admin's own table beside segnode.conf); else the shipped one (PREFIX/share/segnode/
 * labels.tsv when installed, the source tree's etc/labels.tsv in a build tree). SN_ENOENT when
 * none exists; out then names the shipped candidate, for the error. */
int pipeline_labels_default_path(const char *config_path, char *out, size_t n);

/* Free a table; NULL is accepted. */
void pipeline_labels_free(pipeline_labels *labels);

/* Number of entries, and entry i (0 <= i < count) in file order. */
size_t pipeline_labels_count(const pipeline_labels *labels);
const pipeline_label *pipeline_labels_at(const pipeline_labels *labels, size_t i);

/* Look-ups; NULL when absent. Returned pointers live as long as the table. */
const pipeline_label *pipeline_labels_by_number(const pipeline_labels *labels, int number);
const pipeline_label *pipeline_labels_by_name(const pipeline_labels *labels, const char *name);

/* Convert sRGB (0..255) to DICOM scaled CIELab (PS3.3 C.10.7.1.1: L 0..100, a/b -128..127 scaled
 * to 0..65535), D65 white point as used by DICOM. */
void pipeline_labels_rgb_to_dicom_lab(const unsigned char rgb[3], unsigned short lab[3]);

#ifdef __cplusplus
}
#endif

#endif
