#!/bin/bash
# tests/outbox/test_reject.sh — the destination refuses Segmentation Storage (storescp with a
# CT-only association profile): the row fails at once with the reason, one attempt, no retry
# storm (still one attempt seconds later, with a 1 s retry base). Ports 11620-11629.
# usage: test_reject.sh SEGNODE OUTBOX_DRIVER SEGNODE_PHANTOM
set -u
SEGNODE=$1 DRIVER=$2 PHANTOM=$3
. "$(dirname "$0")/lib.sh"
NODE_PORT=11620 NODE_HTTP=11621 ARCH_PORT=11624
need_ports $NODE_PORT $NODE_HTTP $ARCH_PORT

cat >"$TMP/ctonly.cfg" <<'CFG'
[[TransferSyntaxes]]
[Uncompressed]
TransferSyntax1 = LocalEndianExplicit
TransferSyntax2 = LittleEndianImplicit
[[PresentationContexts]]
[CTOnly]
PresentationContext1 = VerificationSOPClass\Uncompressed
PresentationContext2 = CTImageStorage\Uncompressed
[[Profiles]]
[CTOnly]
PresentationContexts = CTOnly
CFG
phantom 1
storescp_start archive ARCHIVE $ARCH_PORT -xf "$TMP/ctonly.cfg" CTOnly
write_node_conf "outbox_retry_base = 1
outbox_retry_cap = 1
outbox_max_attempts = 5" "$(archive_route)"
node_start
MR1=$(ls "$TMP/ph/subject-001/mr-t1/"*.dcm | head -1)
SEG=$TMP/ph/subject-001/seg/mr-t1.dcm
SERIES=$(dcm_attr "$MR1" SeriesInstanceUID)
SEG_UID=$(dcm_attr "$SEG" SOPInstanceUID)
push_series 001 SCANNER
JOB=$(job_of "$SERIES") && ok "job $JOB" || { fail "no job"; finish; }
run finish_job "$JOB" "$SEG"; expect_rc 0 "store_job_finish"
if wait_rows "$JOB" 15 "rows and rows[0]['state']=='failed'"; then ok "row failed"; else fail "row did not fail"; fi
sleep 3
run outbox_json "$JOB"
py_check "failed at once: one attempt, reason says the SOP class / context was refused" "d[0]['attempts']==1 and d[0]['state']=='failed' and ('presentation context' in d[0]['error'] or 'refused SOP class' in d[0]['error'])"
if grep -q "to ARCHIVE failed (attempt" "$TMP/serve.log"; then fail "a retry was scheduled"; else ok "no retry scheduled"; fi
run scp_count "$TMP/scp-archive" "$SEG_UID"; expect_in "$OUT" "0" "nothing stored at the refusing peer"
node_stop
finish
