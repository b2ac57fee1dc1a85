/* nn/json.c — a small recursive-descent JSON reader for model.json and safetensors headers.
 * nn/ must build without cJSON (SEGNODE_NN_ONLY on a machine with only the CUDA toolkit), so it
 * carries this. Reads only; depth is limited to 64; numbers are doubles. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/status.h"
#include "nn/nnInt.h"

typedef struct jp {
    const char *s, *end, *start;
    char *err;
    size_t errlen;
    int failed;
} jp;

static void jfail(jp *p, const char *what)
{
    if (!p->failed)
        sn_errf(p->err, p->errlen, SN_EINVAL, "JSON: %s at byte %ld", what,
                (long)(p->s - p->start));
    p->failed = 1;
}

static void ws(jp *p)
{
    while (p->s < p->end && (*p->s == ' ' || *p->s == '\t' || *p->s == '\n' || *p->s == '\r'))
        p->s++;
}

static nn_json *jnew(nn_json_type t)
{
    nn_json *j = calloc(1, sizeof *j);
    if (j) j->type = t;
    return j;
}

static char *jstring(jp *p)
{
    if (p->s >= p->end || *p->s != '"') { jfail(p, "expected a string"); return NULL; }
    p->s++;
    size_t cap = 16, n = 0;
    char *o = malloc(cap);
    if (!o) { jfail(p, "out of memory"); return NULL; }
    while (p->s < p->end && *p->s != '"') {
        unsigned c = (unsigned char)*p->s++;
        if (c == '\\') {
            if (p->s >= p->end) break;
            char e = *p->s++;
            switch (e) {
            case 'n': c = '\n'; break;
            case 't': c = '\t'; break;
            case 'r': c = '\r'; break;
            case 'b': c = '\b'; break;
            case 'f': c = '\f'; break;
            case 'u': {
                if (p->end - p->s < 4) { jfail(p, "bad \\u escape"); free(o); return NULL; }
                char hex[5] = {p->s[0], p->s[1], p->s[2], p->s[3], 0};
                p->s += 4;
                c = (unsigned)strtoul(hex, NULL, 16);
                break;
            }
            default: c = (unsigned char)e; break;
            }
        }
        if (n + 4 >= cap) {
            cap *= 2;
            char *t = realloc(o, cap);
            if (!t) { free(o); jfail(p, "out of memory"); return NULL; }
            o = t;
        }
        if (c < 0x80) o[n++] = (char)c;
        else if (c < 0x800) { o[n++] = (char)(0xC0 | (c >> 6)); o[n++] = (char)(0x80 | (c & 63)); }
        else {
            o[n++] = (char)(0xE0 | (c >> 12));
            o[n++] = (char)(0x80 | ((c >> 6) & 63));
            o[n++] = (char)(0x80 | (c & 63));
        }
    }
    if (p->s >= p->end) { free(o); jfail(p, "unterminated string"); return NULL; }
    p->s++;
    o[n] = 0;
    return o;
}

static nn_json *jvalue(jp *p, int depth)
{
    ws(p);
    if (depth > 64) { jfail(p, "nesting too deep"); return NULL; }
    if (p->s >= p->end) { jfail(p, "unexpected end"); return NULL; }
    char c = *p->s;
    if (c == '{' || c == '[') {
        int obj = c == '{';
        nn_json *j = jnew(obj ? NN_JSON_OBJECT : NN_JSON_ARRAY), *last = NULL;
        if (!j) { jfail(p, "out of memory"); return NULL; }
        p->s++;
        ws(p);
        if (p->s < p->end && *p->s == (obj ? '}' : ']')) { p->s++; return j; }
        for (;;) {
            char *key = NULL;
            ws(p);
            if (obj) {
                key = jstring(p);
                if (!key) break;
                ws(p);
                if (p->s >= p->end || *p->s != ':') { free(key); jfail(p, "expected ':'"); break; }
                p->s++;
            }
            nn_json *v = jvalue(p, depth + 1);
            if (!v) { free(key); break; }
            v->key = key;
            if (last) last->next = v; else j->child = v;
            last = v;
            j->count++;
            ws(p);
            if (p->s < p->end && *p->s == ',') { p->s++; continue; }
            if (p->s < p->end && *p->s == (obj ? '}' : ']')) { p->s++; return j; }
            jfail(p, obj ? "expected ',' or '}'" : "expected ',' or ']'");
            break;
        }
        nn__json_free(j);
        return NULL;
    }
    if (c == '"') {
        char *s = jstring(p);
        if (!s) return NULL;
        nn_json *j = jnew(NN_JSON_STRING);
        if (!j) { free(s); jfail(p, "out of memory"); return NULL; }
        j->str = s;
        return j;
    }
    if (p->end - p->s >= 4 && !strncmp(p->s, "true", 4)) {
        p->s += 4; nn_json *j = jnew(NN_JSON_BOOL); if (j) j->num = 1; return j;
    }
    if (p->end - p->s >= 5 && !strncmp(p->s, "false", 5)) {
        p->s += 5; return jnew(NN_JSON_BOOL);
    }
    if (p->end - p->s >= 4 && !strncmp(p->s, "null", 4)) {
        p->s += 4; return jnew(NN_JSON_NULL);
    }
    if (p->end - p->s >= 3 && !strncmp(p->s, "NaN", 3)) {
        p->s += 3; nn_json *j = jnew(NN_JSON_NUMBER); if (j) j->num = 0.0 / 0.0; return j;
    }
    if ((c >= '0' && c <= '9') || c == '-' || c == '+') {
        char buf[64];
        size_t n = 0;
        while (p->s < p->end && n < sizeof buf - 1 &&
               strchr("0123456789+-.eE", *p->s))
            buf[n++] = *p->s++;
        buf[n] = 0;
        char *e;
        double v = strtod(buf, &e);
        if (*e) { jfail(p, "bad number"); return NULL; }
        nn_json *j = jnew(NN_JSON_NUMBER);
        if (j) j->num = v;
        return j;
    }
    jfail(p, "unexpected character");
    return NULL;
}

nn_json *nn__json_parse(const char *text, size_t len, char *err, size_t errlen)
{
    jp p = {text, text + len, text, err, errlen, 0};
    nn_json *j = jvalue(&p, 0);
    if (j) {
        ws(&p);
        if (p.s != p.end) {
            jfail(&p, "trailing characters");
            nn__json_free(j);
            return NULL;
        }
    }
    return j;
}

void nn__json_free(nn_json *j)
{
    while (j) {
        nn_json *n = j->next;
        nn__json_free(j->child);
        free(j->str);
        free(j->key);
        free(j);
        j = n;
    }
}

const nn_json *nn__json_get(const nn_json *obj, const char *key)
{
    if (!obj || obj->type != NN_JSON_OBJECT) return NULL;
    for (const nn_json *c = obj->child; c; c = c->next)
        if (c->key && !strcmp(c->key, key)) return c;
    return NULL;
}

const nn_json *nn__json_at(const nn_json *arr, int i)
{
    if (!arr || (arr->type != NN_JSON_ARRAY && arr->type != NN_JSON_OBJECT)) return NULL;
    const nn_json *c = arr->child;
    while (c && i-- > 0) c = c->next;
    return c;
}

const char *nn__json_str(const nn_json *obj, const char *key, const char *dflt)
{
    const nn_json *v = nn__json_get(obj, key);
    return v && v->type == NN_JSON_STRING ? v->str : dflt;
}

double nn__json_num(const nn_json *obj, const char *key, double dflt)
{
    const nn_json *v = nn__json_get(obj, key);
    return v && (v->type == NN_JSON_NUMBER || v->type == NN_JSON_BOOL) ? v->num : dflt;
}
