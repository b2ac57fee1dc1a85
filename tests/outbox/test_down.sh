#!/bin/bash
# tests/outbox/test_down.sh — destination down: the PACS row is retried with growing backoff
# (base 1 s, cap 2 s, 3 attempts) and then failed with the reason, visible in `jobs list` and
# /status, while the other destination (storescp) gets the SEG at once; nothing is lost: after
# the PACS comes up, `segnode jobs retry ID` queues the failed row again and it is delivered,
# and the destination that had it is not sent to again. Ports 11610-11619.
# usage: test_down.sh SEGNODE OUTBOX_DRIVER SEGNODE_PHANTOM
set -u
SEGNODE=$1 DRIVER=$2 PHANTOM=$3
. "$(dirname "$0")/lib.sh"
NODE_PORT=11610 NODE_HTTP=11611 PACS_PORT=11612 PACS_HTTP=11613 ARCH_PORT=11614
need_ports $NODE_PORT $NODE_HTTP $PACS_PORT $PACS_HTTP $ARCH_PORT

phantom 1
storescp_start archive ARCHIVE $ARCH_PORT
write_node_conf "outbox_retry_base = 1
outbox_retry_cap = 2
outbox_max_attempts = 3" "
[peer PACS]
ae_title = PACS
port = $PACS_PORT
[peer ARCHIVE]
ae_title = ARCHIVE
port = $ARCH_PORT
[route mr]
modality = MR
send_to = PACS, ARCHIVE"
node_start
MR1=$(ls "$TMP/ph/subject-001/mr-t1/"*.dcm | head -1)
SEG=$TMP/ph/subject-001/seg/mr-t1.dcm
SERIES=$(dcm_attr "$MR1" SeriesInstanceUID)
SEG_UID=$(dcm_attr "$SEG" SOPInstanceUID)
push_series 001 SCANNER
JOB=$(job_of "$SERIES") && ok "job $JOB" || { fail "no job"; finish; }
run finish_job "$JOB" "$SEG"; expect_rc 0 "store_job_finish"

if wait_rows "$JOB" 20 "{r['peer']:r['state'] for r in rows}=={'PACS':'failed','ARCHIVE':'sent'}"; then
    ok "PACS failed after retries, ARCHIVE sent"
else
    OUT=$(outbox_json "$JOB"); fail "rows not PACS failed / ARCHIVE sent"; tail -20 "$TMP/serve.log"
fi
run outbox_json "$JOB"
py_check "PACS: 3 attempts, reason kept" "[r for r in d if r['peer']=='PACS'][0]['attempts']==3 and 'gave up after 3 attempts' in [r for r in d if r['peer']=='PACS'][0]['error'] and 'association to PACS' in [r for r in d if r['peer']=='PACS'][0]['error']"
py_check "ARCHIVE: one attempt" "[r for r in d if r['peer']=='ARCHIVE'][0]['attempts']==1"
LOG=$(grep "to PACS failed" "$TMP/serve.log")
expect_re "$LOG" "attempt 1/3.*retry in 1\.0 s" "first retry after 1 s"
expect_re "$LOG" "attempt 2/3.*retry in 2\.0 s" "second retry after 2 s (doubled)"
expect_re "$LOG" "failed for good \(attempt 3\)" "third attempt is the last"
run scp_count "$TMP/scp-archive" "$SEG_UID"; expect_in "$OUT" "1" "ARCHIVE has the SEG"

run "$SEGNODE" -c "$TMP/node.conf" jobs list
expect_re "$OUT" "PACS failed x3" "jobs table: PACS failed x3"
expect_re "$OUT" "PACS: gave up after 3 attempts" "jobs table: the reason"
run curl -sf "http://127.0.0.1:$NODE_HTTP/status"
py_check "/status: PACS failed with its reason, listed as unsent" "d['outbox_by_peer']['PACS']['failed']==1 and 'gave up' in d['outbox_by_peer']['PACS']['last_error'] and d['outbox_by_peer']['ARCHIVE']['sent']==1 and [r['peer'] for r in d['outbox_unsent']]==['PACS']"

# the PACS comes up; the admin retries the job: only the failed row is sent again
orthanc_start pacs $PACS_PORT $PACS_HTTP
run "$SEGNODE" -c "$TMP/node.conf" jobs retry "$JOB"
expect_rc 0 "jobs retry"; expect_in "$OUT" "1 failed send(s) queued again" "retry re-queues the failed row"
if wait_rows "$JOB" 15 "all(r['state']=='sent' for r in rows)"; then ok "PACS row delivered after retry"; else fail "PACS row not delivered after retry"; fi
run orthanc_count "$SEG_UID"; expect_in "$OUT" "1" "Orthanc holds the SEG once"
run scp_count "$TMP/scp-archive" "$SEG_UID"; expect_in "$OUT" "1" "ARCHIVE was not sent to again"
run "$SEGNODE" -c "$TMP/node.conf" jobs retry "$JOB" --json
py_check "retry of a job with nothing failed re-runs the job (old behaviour)" "d['state']=='pending' and d['outbox_requeued']==0"
node_stop
finish
