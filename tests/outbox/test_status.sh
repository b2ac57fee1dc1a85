#!/bin/bash
# tests/outbox/test_status.sh — the peer's C-STORE status decides the row: a peer (statusscp.py)
# answers 0110 (Processing failure), 0213 (Resource limitation), then the Warnings 0107
# (Attribute list error), 0116 (Attribute value out of range) and 0001. 0110 fails the row at
# once (one attempt); 0213 is retried like A7xx (the retry gets 0107); each Warning means the
# peer stored the SEG: the row is sent with that status, and the node logs the warning.
# `jobs retry` of the failed row then gets 0001 and is sent. Ports 11650-11659.
# usage: test_status.sh SEGNODE OUTBOX_DRIVER SEGNODE_PHANTOM
set -u
SEGNODE=$1 DRIVER=$2 PHANTOM=$3
. "$(dirname "$0")/lib.sh"
NODE_PORT=11650 NODE_HTTP=11651 ARCH_PORT=11654
need_ports $NODE_PORT $NODE_HTTP $ARCH_PORT

phantom 3
statusscp_start $ARCH_PORT ARCHIVE 0110,0213,0107,0116,0001
write_node_conf "outbox_retry_base = 1
outbox_retry_cap = 1
outbox_max_attempts = 5" "$(archive_route)"
node_start
push_jobs 001 002 003

# one row at a time, so the statuses come in the order given
run finish_job "${J[0]}" "$TMP/ph/subject-001/seg/mr-t1.dcm"; expect_rc 0 "finish job 1"
if wait_rows "${J[0]}" 15 "rows and rows[0]['state']=='failed'"; then ok "0110: row failed"; else fail "0110: row did not fail"; fi
sleep 2
run outbox_json "${J[0]}"
py_check "0110 fails at once: one attempt, the status and the peer's comment kept" "d[0]['attempts']==1 and d[0]['dimse_status']=='0x0110' and 'statusscp answers 0x0110' in d[0]['error']"

run finish_job "${J[1]}" "$TMP/ph/subject-002/seg/mr-t1.dcm"; expect_rc 0 "finish job 2"
if wait_rows "${J[1]}" 15 "rows and rows[0]['state']=='sent'"; then ok "0107: row sent"; else OUT=$(outbox_json "${J[1]}"); fail "0107: row not sent: $OUT"; fi
run outbox_json "${J[1]}"
py_check "0213 retried, then 0107: two attempts, no error, the warning status kept" "d[0]['attempts']==2 and d[0]['dimse_status']=='0x0107' and d[0]['error'] is None"

run finish_job "${J[2]}" "$TMP/ph/subject-003/seg/mr-t1.dcm"; expect_rc 0 "finish job 3"
if wait_rows "${J[2]}" 15 "rows and rows[0]['state']=='sent'"; then ok "0116: row sent"; else OUT=$(outbox_json "${J[2]}"); fail "0116: row not sent: $OUT"; fi
run outbox_json "${J[2]}"
py_check "0116: the warning status kept" "d[0]['dimse_status']=='0x0116'"

run "$SEGNODE" -c "$TMP/node.conf" jobs retry "${J[0]}"; expect_rc 0 "jobs retry of the failed row"
if wait_rows "${J[0]}" 15 "rows and rows[0]['state']=='sent'"; then ok "0001: retried row sent"; else OUT=$(outbox_json "${J[0]}"); fail "0001: row not sent: $OUT"; fi
run outbox_json "${J[0]}"
py_check "0001: the warning status kept" "d[0]['dimse_status']=='0x0001'"

LOG=$(cat "$TMP/serve.log")
expect_in "$LOG" "with warning status 0x0107: statusscp answers 0x0107" "the node logs the 0107 warning with the peer's comment"
expect_in "$LOG" "with warning status 0x0116" "the node logs the 0116 warning"
expect_in "$LOG" "with warning status 0x0001" "the node logs the 0001 warning"
n=$(grep -c "^C-STORE " "$TMP/statusscp.log")
if [ "$n" = 5 ]; then ok "the peer got 5 C-STOREs, no retry storm"; else fail "the peer got $n C-STOREs (want 5)"; fi
node_stop
finish
