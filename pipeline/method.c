/* pipeline/method.c — the registry of segmentation methods (method.h) and the helpers a method
 * uses to honour the worker's deadline and report its stages. Not here: any method. */
#include "pipeline/method.h"
#ifdef SEGNODE_HAVE_ATLAS_METHOD
#include "pipeline/atlas/method_atlas.h"
#endif
#ifdef SEGNODE_HAVE_NET_METHOD
#include "pipeline/method_net.h"
#endif

#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "common/status.h"
#include "common/util.h"

static pthread_mutex_t method__mu = PTHREAD_MUTEX_INITIALIZER;
static pipeline_method method__table[PIPELINE_METHOD_MAX];
static int method__n;

int pipeline_method_register(const pipeline_method *m)
{
    if (!m || !m->name[0] || !m->run)
        return SN_EINVAL;
    int rc = SN_OK;
    pthread_mutex_lock(&method__mu);
    int i = 0;
    while (i < method__n && strcmp(method__table[i].name, m->name) != 0)
        i++;
    if (i == method__n) {
        if (method__n == PIPELINE_METHOD_MAX)
            rc = SN_ENOMEM;
        else
            method__n++;
    }
    if (rc == SN_OK)
        method__table[i] = *m;
    pthread_mutex_unlock(&method__mu);
    return rc;
}

int pipeline_method_add(const char *name, const char *algorithm_name, int uses_gpu, pipeline_method_fn run)
{
    pipeline_method m;
    memset(&m, 0, sizeof m);
    snprintf(m.name, sizeof m.name, "%s", name ? name : "");
    snprintf(m.algorithm_name, sizeof m.algorithm_name, "%s", algorithm_name ? algorithm_name : "");
    m.uses_gpu = uses_gpu;
    m.run = run;
    return pipeline_method_register(&m);
}

void pipeline_method_clear(void)
{
    pthread_mutex_lock(&method__mu);
    method__n = 0;
    pthread_mutex_unlock(&method__mu);
}

int pipeline_method_find(const char *name, pipeline_method *out)
{
    int rc = SN_ENOENT;
    if (!name)
        return SN_ENOENT;
    pthread_mutex_lock(&method__mu);
    for (int i = 0; i < method__n; i++)
        if (strcmp(method__table[i].name, name) == 0) {
            if (out)
                *out = method__table[i];
            rc = SN_OK;
            break;
        }
    pthread_mutex_unlock(&method__mu);
    return rc;
}

static int method__has(const char *name)
{
    pthread_mutex_lock(&method__mu);
    int found = 0;
    for (int i = 0; i < method__n && !found; i++)
        found = strcmp(method__table[i].name, name) == 0;
    pthread_mutex_unlock(&method__mu);
    return found;
}

void pipeline_method_register_builtin(void)
{
    /* Each method library compiled in adds one line here, guarded by the compile definition
     * its CMake fragment sets. */
#ifdef SEGNODE_HAVE_ATLAS_METHOD
    /* A program (a test driver) may have registered its own method under the name already:
     * built-ins never displace it. */
    if (!method__has("atlas"))
        pipeline_atlas_method_register();
#endif
#ifdef SEGNODE_HAVE_NET_METHOD
    if (!method__has("net"))
        pipeline_net_method_register();
#endif
#ifdef SEGNODE_HAVE_BOTH_METHOD
    if (!method__has("both"))
        pipeline_both_method_register();
#endif
}

int pipeline_method_model_path(const sn_config *cfg, const char *model, char *out, size_t outlen)
{
    if (!model || !model[0] || !out || outlen == 0)
        return SN_EINVAL;
    size_t n;
    const char *slash = model[0] == '/' || !cfg ? NULL : strrchr(cfg->path, '/');
    if (model[0] == '/' || !cfg || !cfg->path[0] || !slash)
        /* absolute, or the config file is in the working directory (or there is none) */
        n = (size_t)snprintf(out, outlen, "%s", model);
    else
        n = (size_t)snprintf(out, outlen, "%.*s/%s", (int)(slash - cfg->path), cfg->path, model);
    if (n >= outlen)
        return SN_EINVAL;
    struct stat sb;
    char shipped[4096];
    /* not beside the config: a bundle segnode ships (models/NAME) */
    if (model[0] != '/' && stat(out, &sb) != 0 && sn_shipped_path(model, model, shipped, sizeof shipped) == SN_OK)
        return sn_strlcpy(out, shipped, outlen) < outlen ? SN_OK : SN_EINVAL;
    return SN_OK;
}

int pipeline_method_gpu(const pipeline_method_ctx *ctx)
{
    return ctx && ctx->device && strncmp(ctx->device, "cuda:", 5) == 0 && ctx->device_index >= 0
               ? ctx->device_index
               : -1;
}

int pipeline_method_should_stop(const pipeline_method_ctx *ctx)
{
    if (!ctx)
        return 0;
    if (ctx->cancel && atomic_load(ctx->cancel))
        return 1;
    return ctx->deadline_mono_ms > 0 && sn_mono_ms() >= ctx->deadline_mono_ms;
}

void pipeline_method_time(pipeline_method_ctx *ctx, const char *stage, double ms)
{
    if (!ctx || !stage)
        return;
    for (int i = 0; i < ctx->nstages; i++)
        if (strcmp(ctx->stages[i].name, stage) == 0) {
            ctx->stages[i].ms += ms;
            return;
        }
    if (ctx->nstages >= PIPELINE_METHOD_STAGES)
        return;
    sn_strlcpy(ctx->stages[ctx->nstages].name, stage, sizeof ctx->stages[0].name);
    ctx->stages[ctx->nstages].ms = ms;
    ctx->nstages++;
}
