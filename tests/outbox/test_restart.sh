#!/bin/bash
# tests/outbox/test_restart.sh — durability: two SEGs queued for a PACS that is down; the node
# is stopped with the rows pending (one also left `sending`, as a crash mid-send leaves it);
# the PACS and the node start again: every SEG arrives, and Orthanc holds each exactly once.
# Then the at-least-once case: a row that was delivered but left `sending` by a crash is sent
# again after a restart, and Orthanc still holds one instance per SOP Instance UID.
# Ports 11630-11639.
# usage: test_restart.sh SEGNODE OUTBOX_DRIVER SEGNODE_PHANTOM
set -u
SEGNODE=$1 DRIVER=$2 PHANTOM=$3
. "$(dirname "$0")/lib.sh"
NODE_PORT=11630 NODE_HTTP=11631 PACS_PORT=11632 PACS_HTTP=11633
need_ports $NODE_PORT $NODE_HTTP $PACS_PORT $PACS_HTTP

phantom 2
write_node_conf "outbox_retry_base = 60
outbox_retry_cap = 600
outbox_max_attempts = 10" "
[peer PACS]
ae_title = PACS
port = $PACS_PORT
[route mr]
modality = MR
send_to = PACS"
node_start
JOBS="" UIDS=""
for s in 001 002; do
    MR1=$(ls "$TMP/ph/subject-$s/mr-t1/"*.dcm | head -1)
    push_series $s SCANNER
    j=$(job_of "$(dcm_attr "$MR1" SeriesInstanceUID)") || { fail "no job for subject $s"; finish; }
    run finish_job "$j" "$TMP/ph/subject-$s/seg/mr-t1.dcm"; expect_rc 0 "finish job $j"
    JOBS="$JOBS $j"
    UIDS="$UIDS $(dcm_attr "$TMP/ph/subject-$s/seg/mr-t1.dcm" SOPInstanceUID)"
done
for j in $JOBS; do
    if wait_rows "$j" 15 "rows[0]['state']=='pending' and rows[0]['attempts']==1 and rows[0]['error']"; then
        ok "job $j: first try failed (PACS down), waiting 60 s to retry"
    else
        OUT=$(outbox_json "$j"); fail "job $j: row not pending after a failed try"
    fi
done
node_stop
J1=$(echo $JOBS | cut -d' ' -f1)
sqlset() { "$PY" -c "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.execute(sys.argv[2]); c.commit()" "$TMP/storage/index.sqlite" "$1"; }
sqlset "UPDATE outbox SET state=1 WHERE job_id=$J1"   # as a crash mid-send leaves it

orthanc_start pacs $PACS_PORT $PACS_HTTP
node_start
for j in $JOBS; do
    if wait_rows "$j" 15 "rows[0]['state']=='sent'"; then ok "job $j: sent after the restart"; else fail "job $j: not sent after restart"; fi
done
for u in $UIDS; do run orthanc_count "$u"; expect_in "$OUT" "1" "Orthanc holds SEG $u once"; done
expect_re "$(cat "$TMP/serve.log")" "1 outbox row\(s\) were being sent when the node stopped" "recovery logged"

# delivered, but the node "crashed" before recording it: sent again, still one instance
node_stop
sqlset "UPDATE outbox SET state=1 WHERE job_id=$J1"
node_start
if wait_rows "$J1" 15 "rows[0]['state']=='sent' and rows[0]['attempts']==3"; then ok "re-sent after the crash"; else OUT=$(outbox_json "$J1"); fail "not re-sent"; fi
for u in $UIDS; do run orthanc_count "$u"; expect_in "$OUT" "1" "Orthanc still holds SEG $u once"; done
run curl -sf "$ORTHANC_URL/instances"; py_check "Orthanc holds exactly the two SEGs" "len(d)==2"
node_stop
finish
