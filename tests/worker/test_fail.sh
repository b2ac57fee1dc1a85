#!/bin/bash
# tests/worker/test_fail.sh — a method that cannot run fails its job with the reason and the node
# keeps serving; a series that matches no route is stored and marked unrouted, with no job;
# `segnode config check SERIES` explains both decisions; `segnode status` shows the worker.
# The live node runs the worker (workers = 1): route `mr-net` (method net, a model folder that
# does not exist), route `pet-atlas` (PET only). Ports 11700-11709.
# usage: test_fail.sh SEGNODE WORKER_DRIVER SEGNODE_PHANTOM
set -u
SEGNODE=$1 DRIVER=$2 PHANTOM=$3
NODE_PORT=11700 NODE_HTTP=11701 PACS_PORT=11702
. "$(dirname "$0")/lib.sh"
need_ports $NODE_PORT $NODE_HTTP

phantom mr-t1,ct
write_conf "workers = 1" "
[route mr-net]
modality = MR
method = net
model = $TMP/no-such-model
send_to = PACS
[route pet-atlas]
modality = PT
method = atlas
send_to = PACS"
C="$TMP/node.conf"
MR=$TMP/ph/subject-001/mr-t1 CT=$TMP/ph/subject-001/ct
MRUID=$(dcm_attr "$(ls $MR/*.dcm | head -1)" SeriesInstanceUID)
CTUID=$(dcm_attr "$(ls $CT/*.dcm | head -1)" SeriesInstanceUID)

run "$SEGNODE" -c "$C" config check "$MR"
expect_rc 0 "config check on the MR folder"
expect_re "$OUT" "route +mr-net +TAKEN: modality matches 'MR'" "MR folder takes route mr-net (modality matches)"
expect_re "$OUT" "route +pet-atlas +would match|route +pet-atlas +not reached" "pet-atlas not reached after mr-net"
run "$SEGNODE" -c "$C" --json config check "$CT"
py_check "CT folder: unrouted, each route says which criterion failed" \
    "d['unrouted'] and d['taken']==[] and d['routes'][0]['criteria'][0]=={'criterion':'modality','wants':'MR','series':'CT','matches':False}"

node_start
push SCANNER "$MR"/*.dcm || fail "storescu MR"
if wait_sql 20 "SELECT state, error LIKE '%no-such-model%' FROM jobs" "3|1"; then
    ok "net job with a bad model path failed with the reason"
else
    fail "job: $(sql 'SELECT id, state, error FROM jobs')"
fi
run "$SEGNODE" -c "$C" --json jobs list
py_check "jobs --json: failed, reason names the model, timings object" \
    "len(d)==1 and d[0]['state']=='failed' and 'model bundle' in d[0]['error'] and isinstance(d[0]['timings'], dict) and d[0]['outbox']==[]"
if wait_sql 10 "SELECT state FROM series WHERE series_uid='$MRUID'" "5"; then ok "MR series is failed"; else fail "MR series state $(sql "SELECT state FROM series WHERE series_uid='$MRUID'")"; fi

run echoscu -aet SCANNER -aec SEGNODE 127.0.0.1 $NODE_PORT
expect_rc 0 "the node still answers C-ECHO"
push SCANNER "$CT"/*.dcm || fail "storescu CT"
if wait_sql 20 "SELECT state FROM series WHERE series_uid='$CTUID'" "2"; then
    ok "CT series (no route) is stored and unrouted"
else
    fail "CT state $(sql "SELECT state FROM series WHERE series_uid='$CTUID'")"
fi
[ "$(sql "SELECT count(*) FROM jobs j JOIN series s ON s.id=j.series_id WHERE s.series_uid='$CTUID'")" = 0 ] &&
    ok "no job for the unrouted series" || fail "a job was made for the unrouted series"
run "$SEGNODE" -c "$C" config check "$CTUID"
expect_re "$OUT" "no route matches" "config check on the stored CT UID: unrouted"
run "$SEGNODE" -c "$C" config check "$MRUID"
expect_re "$OUT" "calling AE SCANNER" "config check on a stored UID knows the calling AE"

# The atlas method with no atlas library: route atlas for CT via SIGHUP, retry-free: new series.
cat >>"$C" <<EOF2
[route ct-atlas]
modality = CT
method = atlas
send_to = PACS
EOF2
kill -HUP $NODE_PID
sleep 0.5
"$PY" - "$CT" "$TMP/ct2" <<'PYEOF'
import os, sys, glob, pydicom
from pydicom.uid import generate_uid
os.makedirs(sys.argv[2], exist_ok=True); s = generate_uid()
for f in glob.glob(sys.argv[1] + "/*.dcm"):
    ds = pydicom.dcmread(f); ds.SeriesInstanceUID = s; ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID; ds.save_as(os.path.join(sys.argv[2], os.path.basename(f)))
PYEOF
push SCANNER "$TMP/ct2"/*.dcm || fail "storescu CT copy"
if wait_sql 20 "SELECT state, error LIKE '%route ct-atlas names no atlases%' FROM jobs WHERE route='ct-atlas'" "3|1"; then
    ok "atlas job fails with the reason: the route names no atlases"
else
    fail "ct-atlas job: $(sql "SELECT state, error FROM jobs WHERE route='ct-atlas'")"
fi

run "$SEGNODE" -c "$C" status
expect_re "$OUT" "worker +1 thread\(s\), device (cpu|cuda:0) \(auto\)" "status shows the worker and its device"
run "$SEGNODE" -c "$C" --json status
py_check "status --json: worker object" "d['worker']['workers']==1 and d['worker']['running']==[] and d['jobs_by_state']['failed']==2"
run curl -sf "http://127.0.0.1:$NODE_HTTP/metrics"
expect_in "$OUT" 'segnode_job_stage_seconds_bucket{stage="load",le="+Inf"} 0' "/metrics has the stage histograms"
node_stop
finish
