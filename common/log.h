/* common/log.h — leveled, thread-safe logging to stderr.
 * One line per message: "2026-11-21T16:52:31.123Z LEVEL [module] text". The level threshold is
 * global and may be changed at any time (config reload). Not a structured/audit log. */
#ifndef SEGNODE_COMMON_LOG_H
#define SEGNODE_COMMON_LOG_H

typedef enum sn_log_level {
    SN_LOG_LEVEL_DEBUG = 0,
    SN_LOG_LEVEL_INFO = 1,
    SN_LOG_LEVEL_WARN = 2,
    SN_LOG_LEVEL_ERROR = 3,
    SN_LOG_LEVEL_OFF = 4
} sn_log_level;

/* Set / get the threshold; messages below it are dropped. Default INFO. */
void sn_log_set_level(sn_log_level level);
sn_log_level sn_log_get_level(void);

/* Parse "debug" | "info" | "warn" | "error" | "off". Returns 0 and sets *out, or SN_EINVAL. */
int sn_log_parse_level(const char *text, sn_log_level *out);

/* Write one message. `module` is a short tag ("scp", "store"); may be NULL. */
void sn_log_write(sn_log_level level, const char *module, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define SN_LOG_DEBUG(mod, ...) sn_log_write(SN_LOG_LEVEL_DEBUG, mod, __VA_ARGS__)
#define SN_LOG_INFO(mod, ...)  sn_log_write(SN_LOG_LEVEL_INFO, mod, __VA_ARGS__)
#define SN_LOG_WARN(mod, ...)  sn_log_write(SN_LOG_LEVEL_WARN, mod, __VA_ARGS__)
#define SN_LOG_ERROR(mod, ...) sn_log_write(SN_LOG_LEVEL_ERROR, mod, __VA_ARGS__)

#endif
