#!/bin/bash
# tests/net/test_net_node.sh — the "net" method in a live node, end to end: a phantom MR T1
# series sent with storescu takes route mr-net (method net, `model = models/tiny`, relative to the
# config file's folder while the node runs from /), the job runs the bundle on the CPU, and the
# SEG reaches storescp as the PACS; its Dice against the phantom's ground truth is above the
# floors measured for the bundle. The job records load_model/infer/postprocess timings and a note
# naming the model; a second series finds the model in the cache. A route whose model folder
# does not exist fails its job with the path in the reason, and the node keeps serving (C-ECHO,
# a later series on the good route is delivered). Ports 13500-13509.
# usage: test_net_node.sh SEGNODE SEGNODE_PHANTOM BUNDLE_DIR [FLOOR_LIVER FLOOR_KIDNEYS]
set -u
SEGNODE=$1 PHANTOM=$2 BUNDLE=$3
FLOOR_LIVER=${4:-0.75} FLOOR_KIDNEY=${5:-0.15}
NODE_PORT=13500 NODE_HTTP=13501 PACS_PORT=13502
. "$(dirname "$0")/lib.sh"
need_ports $NODE_PORT $NODE_HTTP $PACS_PORT

phantom mr-t1
clone_series 3
write_conf "workers = 1
device = cpu" "
[route mr-bad]
modality = MR
series_description = ^copy 02$
method = net
model = models/no-such-model
labels = liver
send_to = PACS
[route mr-net]
modality = MR
method = net
model = models/tiny
labels = liver, spleen, kidney_left, kidney_right
send_to = PACS"
conf_move
pacs_start
node_start_elsewhere

MR=$TMP/ph/subject-001/mr-t1
GT=$TMP/ph/subject-001/seg/mr-t1.dcm
MRUID=$(dcm_attr "$(ls $MR/*.dcm | head -1)" SeriesInstanceUID)
push SCANNER "$MR"/*.dcm || fail "storescu MR"
if wait_seg 120 "$MRUID"; then
    ok "the net SEG of the MR series reached the PACS"
else
    fail "no SEG in the PACS: jobs $(sql 'SELECT id, state, error FROM jobs'); log: $(tail -5 "$TMP/serve.log")"
fi
if [ -n "${SEG:-}" ]; then
    dl=$(dice "$GT" "$SEG" Liver)
    dk=$(dice "$GT" "$SEG" "Left kidney") dr=$(dice "$GT" "$SEG" "Right kidney") ds=$(dice "$GT" "$SEG" Spleen)
    echo "# Dice of the delivered SEG: liver $dl, spleen $ds, kidney left $dk, kidney right $dr"
    ge "$dl" "$FLOOR_LIVER" && ok "liver Dice $dl >= $FLOOR_LIVER" || fail "liver Dice $dl < $FLOOR_LIVER"
    km=$(awk -v a="$dk" -v b="$dr" 'BEGIN { print (a + b) / 2 }')
    ge "$km" "$FLOOR_KIDNEY" && ok "mean kidney Dice $km >= $FLOOR_KIDNEY" || fail "mean kidney Dice $km < $FLOOR_KIDNEY"
    run "$PY" -c "import pydicom,sys; d=pydicom.dcmread(sys.argv[1]); print(d.SegmentSequence[0].SegmentAlgorithmName, d.SeriesDescription)" "$SEG"
    expect_in "$OUT" "segnode net" "the SEG names the net algorithm"
fi
run "$SEGNODE" -c "$TMP/etc/node.conf" --json jobs list
py_check "job: done on cpu, stages load_model/infer/postprocess, note names the model (loaded)" \
    "len(d)==1 and d[0]['state']=='done' and d[0]['device']=='cpu' and all(k in d[0]['timings']['method'] for k in ('load_model_ms','infer_ms','postprocess_ms')) and 'model tiny-mr-t1 (loaded)' in d[0]['timings']['note']"

# A second series on the good route: the bundle comes from the cache. The series matching
# route mr-bad: its job fails with the path, and the node keeps serving.
C1UID=$(dcm_attr "$(ls $TMP/s/01/*.dcm | head -1)" SeriesInstanceUID)
C2UID=$(dcm_attr "$(ls $TMP/s/02/*.dcm | head -1)" SeriesInstanceUID)
C3UID=$(dcm_attr "$(ls $TMP/s/03/*.dcm | head -1)" SeriesInstanceUID)
push SCANNER "$TMP"/s/02/*.dcm || fail "storescu copy 02"
if wait_sql 60 "SELECT j.state, j.error LIKE '%$TMP/etc/models/no-such-model%' FROM jobs j JOIN series s ON s.id=j.series_id WHERE s.series_uid='$C2UID'" "3|1"; then
    ok "a bad model path fails the job with the resolved path in the reason"
else
    fail "bad-model job: $(sql 'SELECT id, route, state, error FROM jobs')"
fi
run echoscu -aet SCANNER -aec SEGNODE 127.0.0.1 $NODE_PORT
expect_rc 0 "the node still answers C-ECHO after the failed job"
push SCANNER "$TMP"/s/01/*.dcm || fail "storescu copy 01"
wait_seg 90 "$C1UID" && ok "a later series on the good route is delivered" || fail "no SEG for copy 01"
run "$SEGNODE" -c "$TMP/etc/node.conf" --json jobs list
py_check "the second net job found the model in the cache" \
    "[j['state'] for j in d if j['route']=='mr-net'].count('done')==2 and sum('(cached)' in (j['timings'] or {}).get('note','') for j in d)==1"

# A bundle replaced on disk (new mtime) is loaded again, not served stale from the cache.
touch -d '+1 minute' "$TMP/etc/models/tiny/model.safetensors"
push SCANNER "$TMP"/s/03/*.dcm || fail "storescu copy 03"
wait_seg 90 "$C3UID" && ok "series after the bundle changed is delivered" || fail "no SEG for copy 03"
run "$SEGNODE" -c "$TMP/etc/node.conf" --json jobs list
py_check "a changed bundle is loaded again" \
    "sum('(loaded)' in (j['timings'] or {}).get('note','') for j in d if j['route']=='mr-net')==2"
node_stop
finish
