/* common/log.c — stderr logger. A single fprintf per message under a mutex keeps lines whole
 * when several association threads log at once. */
#include "common/log.h"
#include "common/status.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

static atomic_int g_level = SN_LOG_LEVEL_INFO;
static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;

void sn_log_set_level(sn_log_level level) { atomic_store(&g_level, (int)level); }
sn_log_level sn_log_get_level(void) { return (sn_log_level)atomic_load(&g_level); }

int sn_log_parse_level(const char *text, sn_log_level *out)
{
    static const char *names[] = {"debug", "info", "warn", "error", "off"};
    for (int i = 0; i < 5; i++) {
        if (text && strcasecmp(text, names[i]) == 0) {
            *out = (sn_log_level)i;
            return SN_OK;
        }
    }
    if (text && strcasecmp(text, "warning") == 0) {
        *out = SN_LOG_LEVEL_WARN;
        return SN_OK;
    }
    return SN_EINVAL;
}

void sn_log_write(sn_log_level level, const char *module, const char *fmt, ...)
{
    static const char *tags[] = {"DEBUG", "INFO ", "WARN ", "ERROR"};
    if ((int)level < atomic_load(&g_level) || level >= SN_LOG_LEVEL_OFF)
        return;
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);

    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char when[32];
    strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%S", &tm);

    pthread_mutex_lock(&g_lock);
    fprintf(stderr, "%s.%03ldZ %s [%s] %s\n", when, ts.tv_nsec / 1000000L, tags[level],
            module ? module : "-", msg);
    fflush(stderr);
    pthread_mutex_unlock(&g_lock);
}
