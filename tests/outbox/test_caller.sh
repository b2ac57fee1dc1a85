#!/bin/bash
# tests/outbox/test_caller.sh — `send_to = @caller`: the SEG goes back to the AE that sent the
# series when that AE is a configured peer (a storescp as SCANNER); a sender that is no peer
# (accepted by accept_unknown) gets a row failed at once with "caller AE X is not a configured
# peer (no host/port)". Ports 11640-11649.
# usage: test_caller.sh SEGNODE OUTBOX_DRIVER SEGNODE_PHANTOM
set -u
SEGNODE=$1 DRIVER=$2 PHANTOM=$3
. "$(dirname "$0")/lib.sh"
NODE_PORT=11640 NODE_HTTP=11641 SCANNER_PORT=11644
need_ports $NODE_PORT $NODE_HTTP $SCANNER_PORT

phantom 2
storescp_start scanner SCANNER $SCANNER_PORT
write_node_conf "accept_unknown = yes" "
[route mr]
modality = MR
send_to = @caller"
node_start
push_series 001 SCANNER
push_series 002 STRANGER
S1=$(dcm_attr "$(ls "$TMP/ph/subject-001/mr-t1/"*.dcm | head -1)" SeriesInstanceUID)
S2=$(dcm_attr "$(ls "$TMP/ph/subject-002/mr-t1/"*.dcm | head -1)" SeriesInstanceUID)
J1=$(job_of "$S1") && J2=$(job_of "$S2") && ok "jobs $J1 $J2" || { fail "no jobs"; finish; }
run finish_job "$J1" "$TMP/ph/subject-001/seg/mr-t1.dcm"; expect_rc 0 "finish job from SCANNER"
run finish_job "$J2" "$TMP/ph/subject-002/seg/mr-t1.dcm"; expect_rc 0 "finish job from STRANGER"
if wait_rows "$J1" 15 "rows[0]['state']=='sent' and rows[0]['peer']=='SCANNER'"; then ok "@caller resolved to SCANNER and sent"; else OUT=$(outbox_json "$J1"); fail "@caller SCANNER not sent"; fi
run scp_count "$TMP/scp-scanner" "$(dcm_attr "$TMP/ph/subject-001/seg/mr-t1.dcm" SOPInstanceUID)"
expect_in "$OUT" "1" "the scanner's storescp received the SEG"
run outbox_json "$J2"
py_check "unknown caller: failed at once with the reason" "d[0]['state']=='failed' and d[0]['attempts']==0 and d[0]['error']=='caller AE STRANGER is not a configured peer (no host/port)' and d[0]['peer']=='@caller:STRANGER'"
node_stop
finish
