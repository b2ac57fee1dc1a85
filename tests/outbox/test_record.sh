#!/bin/bash
# tests/outbox/test_record.sh — the index is locked (another process holds a write transaction)
# when the peer's C-STORE response arrives, for longer than SQLite's 10 s busy timeout: the
# sender cannot record the outcome. It retries until it can, logs it, and the row ends 'sent';
# then the next SEG to the same peer is delivered too. (Before, the row stayed 'sending', and
# the claim, which never sends two rows to one peer at a time, held every later SEG for that
# peer until the next start.) Ports 11660-11669.
# usage: test_record.sh SEGNODE OUTBOX_DRIVER SEGNODE_PHANTOM
set -u
SEGNODE=$1 DRIVER=$2 PHANTOM=$3
. "$(dirname "$0")/lib.sh"
NODE_PORT=11660 NODE_HTTP=11661 ARCH_PORT=11664
need_ports $NODE_PORT $NODE_HTTP $ARCH_PORT

phantom 2
# the first C-STORE is answered 5 s after its data set arrives: time to take the lock
statusscp_start $ARCH_PORT ARCHIVE 0000@5,0000
# one sender: no other thread's claim queues for the index in front of its record
write_node_conf "outbox_retry_base = 1
outbox_retry_cap = 1
outbox_workers = 1" "$(archive_route)"
node_start
push_jobs 001 002

run finish_job "${J[0]}" "$TMP/ph/subject-001/seg/mr-t1.dcm"; expect_rc 0 "finish job 1"
for _ in $(seq 1 100); do grep -q "C-STORE" "$TMP/statusscp.log" && break; sleep 0.1; done
# hold a write transaction on the index for 22 s: the response comes at +5 s, the first attempt
# to record it gives up at +15 s (busy timeout), the next waits for the lock
"$PY" -c '
import sqlite3, sys, time
c = sqlite3.connect(sys.argv[1], timeout=30, isolation_level=None)
c.execute("BEGIN IMMEDIATE"); print("locked", flush=True); time.sleep(22); c.execute("COMMIT")
print("unlocked", flush=True)' "$TMP/storage/index.sqlite" >"$TMP/lock.log" 2>&1 &
LOCK=$!
PIDS="$PIDS $LOCK"
for _ in $(seq 1 50); do grep -q locked "$TMP/lock.log" && break; sleep 0.1; done
grep -q locked "$TMP/lock.log" && ok "index locked while the peer holds its answer" || fail "lock not taken: $(cat "$TMP/lock.log")"
wait "$LOCK"
if wait_rows "${J[0]}" 40 "rows and rows[0]['state']=='sent'"; then ok "job 1: row sent once the lock is gone"; else OUT=$(outbox_json "${J[0]}"); fail "job 1: row not sent: $OUT"; fi
LOG=$(cat "$TMP/serve.log")
expect_in "$LOG" "cannot record the outcome" "the failed record is logged"
expect_re "$LOG" "outcome recorded after [0-9]+ retries" "and the retry that succeeded"

run finish_job "${J[1]}" "$TMP/ph/subject-002/seg/mr-t1.dcm"; expect_rc 0 "finish job 2"
if wait_rows "${J[1]}" 20 "rows and rows[0]['state']=='sent'"; then ok "job 2: the peer is not held"; else OUT=$(outbox_json "${J[1]}"); fail "job 2: row not sent: $OUT"; fi
n=$(grep -c "C-STORE" "$TMP/statusscp.log")
if [ "$n" = 2 ]; then ok "the peer got each SEG once"; else fail "the peer got $n C-STOREs, expected 2"; fi
node_stop
finish
