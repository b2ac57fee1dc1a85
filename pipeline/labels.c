/* pipeline/labels.c — loader for the label code table (see labels.h, etc/labels.tsv). */
#include "pipeline/labels.h"

#include "common/status.h"
#include "common/util.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct pipeline_labels {
    size_t count;
    pipeline_label entry[PIPELINE_LABELS_MAX];
};

/* "SCHEME:CODE:Meaning" (the meaning may itself contain ':'), or "-" for absent. */
static int parse_code(char *text, int optional, pipeline_code *out)
{
    memset(out, 0, sizeof(*out));
    sn_strtrim(text);
    if (strcmp(text, "-") == 0 || text[0] == '\0')
        return optional ? 0 : -1;
    char *c1 = strchr(text, ':');
    if (!c1)
        return -1;
    char *c2 = strchr(c1 + 1, ':');
    if (!c2)
        return -1;
    *c1 = '\0';
    *c2 = '\0';
    if (!*text || !c1[1] || !c2[1])
        return -1;
    if (sn_strlcpy(out->scheme, text, sizeof(out->scheme)) >= sizeof(out->scheme) ||
        sn_strlcpy(out->value, c1 + 1, sizeof(out->value)) >= sizeof(out->value) ||
        sn_strlcpy(out->meaning, c2 + 1, sizeof(out->meaning)) >= sizeof(out->meaning))
        return -1;
    return 0;
}

static int valid_name(const char *s)
{
    if (!*s)
        return 0;
    for (; *s; s++)
        if (!(islower((unsigned char)*s) || isdigit((unsigned char)*s) || *s == '_'))
            return 0;
    return 1;
}

int pipeline_labels_load(const char *path, pipeline_labels **out, char *err, size_t errlen)
{
    *out = NULL;
    FILE *f = fopen(path, "r");
    if (!f)
        return sn_errf(err, errlen, errno == ENOENT ? SN_ENOENT : SN_EIO, "%s: %s", path,
                       strerror(errno));
    pipeline_labels *t = calloc(1, sizeof(*t));
    if (!t) {
        fclose(f);
        return sn_errf(err, errlen, SN_ENOMEM, "out of memory");
    }
    char line[1024];
    int lineno = 0, rc = 0;
    while (fgets(line, sizeof(line), f)) {
        lineno++;
        line[strcspn(line, "\r\n")] = '\0';
        char *p = line;
        while (*p == ' ' || *p == '\t')
            p++;
        if (*p == '#' || *p == '\0')
            continue;
        char *col[6];
        int n = 0;
        char *s = line;
        while (n < 6) {
            col[n++] = s;
            char *tab = strchr(s, '\t');
            if (!tab)
                break;
            *tab = '\0';
            s = tab + 1;
        }
        if (n != 6 || strchr(s, '\t')) {
            rc = sn_errf(err, errlen, SN_EINVAL, "%s:%d: expected 6 tab-separated columns", path,
                         lineno);
            break;
        }
        if (t->count >= PIPELINE_LABELS_MAX) {
            rc = sn_errf(err, errlen, SN_EINVAL, "%s:%d: too many labels", path, lineno);
            break;
        }
        pipeline_label *e = &t->entry[t->count];
        char *end;
        long num = strtol(sn_strtrim(col[0]), &end, 10);
        if (*end || num < 1 || num > 255) {
            rc = sn_errf(err, errlen, SN_EINVAL, "%s:%d: label number must be 1..255", path, lineno);
            break;
        }
        e->number = (int)num;
        sn_strtrim(col[1]);
        if (!valid_name(col[1]) || sn_strlcpy(e->name, col[1], sizeof(e->name)) >= sizeof(e->name)) {
            rc = sn_errf(err, errlen, SN_EINVAL, "%s:%d: bad name '%s' (use [a-z0-9_], < 32 chars)",
                         path, lineno, col[1]);
            break;
        }
        if (parse_code(col[2], 0, &e->category) || parse_code(col[3], 0, &e->type) ||
            parse_code(col[4], 1, &e->modifier)) {
            rc = sn_errf(err, errlen, SN_EINVAL, "%s:%d: bad code (want SCHEME:CODE:Meaning)", path,
                         lineno);
            break;
        }
        int r, g, b;
        char extra;
        if (sscanf(col[5], " %d , %d , %d %c", &r, &g, &b, &extra) != 3 || r < 0 || r > 255 ||
            g < 0 || g > 255 || b < 0 || b > 255) {
            rc = sn_errf(err, errlen, SN_EINVAL, "%s:%d: bad colour (want R,G,B)", path, lineno);
            break;
        }
        e->rgb[0] = (unsigned char)r;
        e->rgb[1] = (unsigned char)g;
        e->rgb[2] = (unsigned char)b;
        for (size_t i = 0; i < t->count; i++) {
            if (t->entry[i].number == e->number || strcmp(t->entry[i].name, e->name) == 0) {
                rc = sn_errf(err, errlen, SN_EINVAL, "%s:%d: duplicate label number or name", path,
                             lineno);
                break;
            }
        }
        if (rc)
            break;
        t->count++;
    }
    if (!rc && ferror(f))
        rc = sn_errf(err, errlen, SN_EIO, "%s: read error", path);
    fclose(f);
    if (!rc && t->count == 0)
        rc = sn_errf(err, errlen, SN_EINVAL, "%s: no labels", path);
    if (rc) {
        free(t);
        return rc;
    }
    *out = t;
    return 0;
}

void pipeline_labels_free(pipeline_labels *labels) { free(labels); }

size_t pipeline_labels_count(const pipeline_labels *labels) { return labels ? labels->count : 0; }

const pipeline_label *pipeline_labels_at(const pipeline_labels *labels, size_t i)
{
    return (labels && i < labels->count) ? &labels->entry[i] : NULL;
}

const pipeline_label *pipeline_labels_by_number(const pipeline_labels *labels, int number)
{
    for (size_t i = 0; labels && i < labels->count; i++)
        if (labels->entry[i].number == number)
            return &labels->entry[i];
    return NULL;
}

const pipeline_label *pipeline_labels_by_name(const pipeline_labels *labels, const char *name)
{
    for (size_t i = 0; labels && name && i < labels->count; i++)
        if (strcmp(labels->entry[i].name, name) == 0)
            return &labels->entry[i];
    return NULL;
}

static double srgb_to_linear(double c)
{
    return c <= 0.04045 ? c / 12.92 : pow((c + 0.055) / 1.055, 2.4);
}

static double lab_f(double t)
{
    return t > 216.0 / 24389.0 ? cbrt(t) : (24389.0 / 27.0 * t + 16.0) / 116.0;
}

void pipeline_labels_rgb_to_dicom_lab(const unsigned char rgb[3], unsigned short lab[3])
{
    double r = srgb_to_linear(rgb[0] / 255.0), g = srgb_to_linear(rgb[1] / 255.0),
           b = srgb_to_linear(rgb[2] / 255.0);
    double x = 0.4124564 * r + 0.3575761 * g + 0.1804375 * b;
    double y = 0.2126729 * r + 0.7151522 * g + 0.0721750 * b;
    double z = 0.0193339 * r + 0.1191920 * g + 0.9503041 * b;
    double fx = lab_f(x / 0.95047), fy = lab_f(y / 1.0), fz = lab_f(z / 1.08883);
    double L = 116.0 * fy - 16.0, A = 500.0 * (fx - fy), B = 200.0 * (fy - fz);
    double v[3] = {L * 65535.0 / 100.0, (A + 128.0) * 65535.0 / 255.0, (B + 128.0) * 65535.0 / 255.0};
    for (int i = 0; i < 3; i++) {
        if (v[i] < 0)
            v[i] = 0;
        if (v[i] > 65535)
            v[i] = 65535;
        lab[i] = (unsigned short)lround(v[i]);
    }
}

int pipeline_labels_default_path(const char *config_path, char *out, size_t n)
{
    const char *env = getenv("SEGNODE_LABELS");
    if (env && *env)
        return sn_strlcpy(out, env, n) < n ? SN_OK : SN_EINVAL;
    const char *slash = config_path ? strrchr(config_path, '/') : NULL;
    if (config_path && *config_path) {
        char beside[4096];
        if (slash)
            snprintf(beside, sizeof beside, "%.*s/labels.tsv", (int)(slash - config_path), config_path);
        else
            snprintf(beside, sizeof beside, "labels.tsv");
        if (access(beside, R_OK) == 0)
            return sn_strlcpy(out, beside, n) < n ? SN_OK : SN_EINVAL;
    }
    return sn_shipped_path("labels.tsv", "etc/labels.tsv", out, n);
}
