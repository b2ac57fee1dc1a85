/* tools/segnode/outbox.h — the daemon's sender: threads that drain the store's outbox by
 * C-STORE (scp_scu_send) to the peers of the configuration in force, with exponential backoff
 * for failures that may pass and none for permanent refusals. The rows and their states live in
 * the store (store.h, "job results and the outbox"); this is only the loop that moves them. */
#ifndef SEGNODE_TOOLS_OUTBOX_H
#define SEGNODE_TOOLS_OUTBOX_H

#include <stddef.h>

#include "common/config.h"
#include "store/store.h"

typedef struct outbox outbox;

/* Returns a NEW reference (sn_config_ref) to the configuration in force; called once per send,
 * so a SIGHUP reload (peers, retry keys) applies to the next try. */
typedef sn_config *(*outbox_config_fn)(void *ctx);

/* Put rows left `sending` by a previous run back to pending (store_outbox_recover), then start
 * [node] outbox_workers threads. `st` is borrowed and must outlive the sender.
 * Errors: SN_EDB (recovery), SN_ENOMEM / SN_EINTERNAL (threads). */
int outbox_start(store *st, outbox_config_fn get_config, void *ctx, outbox **out,
                 char *err, size_t errlen);

/* Look for due rows now instead of at the next poll (rows queued by this process). NULL ok. */
void outbox_wake(outbox *ob);

/* Stop: threads finish the send they are in (bounded by [node] acse/dimse_timeout), record
 * its outcome, and are joined. Rows not started stay pending for the next start. NULL ok. */
void outbox_stop(outbox *ob);

#endif
