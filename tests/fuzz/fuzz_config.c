/* tests/fuzz/fuzz_config.c — fuzz harness for the config parser (common/config.c): the bytes are
 * a segnode.conf, loaded with sn_config_load as `segnode serve`, SIGHUP and `config check` do;
 * a config that loads is then used the way the node uses it (peer lookups by AE and name, every
 * route matched against a few series). A refused file is fine; a crash or sanitizer report is
 * not. */
#include "fuzz.h"

#include <stdio.h>
#include <string.h>

#include "common/config.h"
#include "common/log.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static char path[600];
    if (!path[0]) {
        sn_log_set_level(SN_LOG_LEVEL_OFF);
        snprintf(path, sizeof path, "%s/segnode.conf", fuzz_scratch_dir("config"));
    }
    if (size > 256 * 1024) /* config files are small; longer inputs only slow the search */
        return 0;
    if (fuzz_write_file(path, data, size) != 0)
        return 0;
    sn_config *cfg = NULL;
    char err[1024];
    if (sn_config_load(path, &cfg, err, sizeof err) != 0)
        return 0;
    static const sn_series_attrs series[] = {
        {"MR", "ABDOMEN", "T1 axial", "SCANNER", "ORIGINAL\\PRIMARY\\AXIAL"},
        {"CT", "CHEST", "", "PACS", "DERIVED\\SECONDARY"},
        {NULL, NULL, NULL, NULL, NULL},
    };
    for (int i = 0; i < cfg->npeers; i++) {
        if (sn_config_peer_by_ae(cfg, cfg->peers[i].ae_title) == NULL ||
            sn_config_peer_by_name(cfg, cfg->peers[i].name) == NULL)
            __builtin_trap(); /* a loaded peer that cannot be found again */
    }
    (void)sn_config_peer_by_ae(cfg, "SCANNER");
    for (int r = 0; r < cfg->nroutes; r++)
        for (size_t s = 0; s < sizeof series / sizeof series[0]; s++)
            (void)sn_route_matches(&cfg->routes[r], &series[s]);
    sn_config *again = sn_config_ref(cfg);
    sn_config_unref(again);
    sn_config_unref(cfg);
    return 0;
}
