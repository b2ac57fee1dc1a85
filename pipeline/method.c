/* pipeline/method.c — the registry of segmentation methods (method.h) and the helpers a method
 * uses to honour the worker's deadline and report its stages. Not here: any method. */
#include "pipeline/method.h"
#ifdef SEGNODE_HAVE_ATLAS_METHOD
#include "pipeline/atlas/method_atlas.h"
#endif

#include <pthread.h>
#include <string.h>

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
