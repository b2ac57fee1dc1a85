#!/bin/bash
# tests/outbox/test_deliver.sh — a finished job's SEG reaches two real receivers from the
# running node's outbox: Orthanc (AE PACS; its REST API must show the SEG in the same study as
# the source series) and DCMTK storescp (AE ARCHIVE). Also: the SEG series is stored as `done`
# and never becomes a job; `jobs list` and /status show the rows as sent. Ports 11600-11609.
# usage: test_deliver.sh SEGNODE OUTBOX_DRIVER SEGNODE_PHANTOM
set -u
SEGNODE=$1 DRIVER=$2 PHANTOM=$3
. "$(dirname "$0")/lib.sh"
NODE_PORT=11600 NODE_HTTP=11601 PACS_PORT=11602 PACS_HTTP=11603 ARCH_PORT=11604
need_ports $NODE_PORT $NODE_HTTP $PACS_PORT $PACS_HTTP $ARCH_PORT

phantom 1
orthanc_start pacs $PACS_PORT $PACS_HTTP
storescp_start archive ARCHIVE $ARCH_PORT
write_node_conf "" "
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
# the source series goes to Orthanc too, so its study is there to compare with
storescu -aet SCANNER -aec PACS 127.0.0.1 $PACS_PORT "$TMP/ph/subject-001/mr-t1/"*.dcm >/dev/null 2>&1

JOB=$(job_of "$SERIES") && ok "series became job $JOB" || { fail "no job for the series"; finish; }
run finish_job "$JOB" "$SEG"
expect_rc 0 "store_job_finish"; expect_in "$OUT" "2" "two outbox rows (PACS, ARCHIVE)"

if wait_rows "$JOB" 20 "len(rows)==2 and all(r['state']=='sent' for r in rows)"; then
    ok "both destinations sent"
else
    OUT=$(outbox_json "$JOB"); fail "rows not sent"; tail -20 "$TMP/serve.log"
fi
run outbox_json "$JOB"
py_check "rows: one try each, DIMSE success" "all(r['attempts']==1 and r['dimse_status']=='0x0000' and r['error'] is None and r['sent'] for r in d) and sorted(r['peer'] for r in d)==['ARCHIVE','PACS']"

# Orthanc: exactly one SEG instance, in the study of the source series
run orthanc_count "$SEG_UID"; expect_in "$OUT" "1" "Orthanc holds the SEG once"
OUT=$("$PY" - "$ORTHANC_URL" "$SEG_UID" "$SERIES" <<'PYEOF'
import json, sys, urllib.request
base, seg_uid, src_series = sys.argv[1:4]
def get(p, body=None):
    req = urllib.request.Request(base + p, data=body and json.dumps(body).encode())
    return json.load(urllib.request.urlopen(req))
inst = get("/tools/find", {"Level": "Instance", "Query": {"SOPInstanceUID": seg_uid}})[0]
seg_series = get("/instances/%s" % inst)["ParentSeries"]
s = get("/series/%s" % seg_series)
src = get("/tools/find", {"Level": "Series", "Query": {"SeriesInstanceUID": src_series}})[0]
print(json.dumps({"seg_study": s["ParentStudy"], "src_study": get("/series/%s" % src)["ParentStudy"],
                  "modality": s["MainDicomTags"].get("Modality")}))
PYEOF
)
py_check "Orthanc: SEG series is in the source series' study" "d['seg_study']==d['src_study'] and d['modality']=='SEG'"

run scp_count "$TMP/scp-archive" "$SEG_UID"; expect_in "$OUT" "1" "storescp ARCHIVE received the SEG once"

# the node's own SEG series: done, derived, never a job
sleep 1.5
run "$SEGNODE" -c "$TMP/node.conf" series --json
py_check "SEG series stored as done, source series done" "any(s['modality']=='SEG' and s['state']=='done' and s['source_ae']=='SEGNODE' for s in d) and any(s['series_uid']=='$SERIES' and s['state']=='done' for s in d)"
run "$SEGNODE" -c "$TMP/node.conf" jobs list --json
py_check "still one job (the SEG was not routed)" "len(d)==1 and d[0]['state']=='done'"
run "$SEGNODE" -c "$TMP/node.conf" jobs list
expect_re "$OUT" "OUTBOX" "jobs table has an OUTBOX column"
expect_re "$OUT" "PACS sent" "jobs table shows PACS sent"
run curl -sf "http://127.0.0.1:$NODE_HTTP/status"
py_check "/status outbox_by_peer" "d['outbox_by_peer']['PACS']['sent']==1 and d['outbox_by_peer']['ARCHIVE']['sent']==1 and d['outbox_by_state']['sent']==2 and d['outbox_unsent']==[]"
run curl -sf "http://127.0.0.1:$NODE_HTTP/metrics"
expect_in "$OUT" 'segnode_outbox_peer{peer="PACS",state="sent"} 1' "/metrics per-peer outbox gauge"
expect_re "$(cat "$TMP/serve.log")" "outbox.*sent $SEG_UID to PACS" "log says sent"
node_stop
finish
