#!/bin/bash
# tests/net/test_both_node.sh — the "both" method in a live node, end to end: two phantom CT
# atlases imported into the library, a phantom MR T1 series sent with storescu takes route
# mr-both (the tiny bundle plus the atlases, fused), and the SEG reaches storescp as the PACS
# with Dice against the ground truth above the floors; the job records the net's and the
# atlases' stages and the fusion; the route's select_k = 1 registers both atlases affine and only
# the more similar one further, and the note says so. The bundle lacks the stomach the route also asks for: the
# fused SEG still has it (from the atlases alone) and the note says the model lacks it.
# A `both` route with no atlases fails its job with the reason. `segment --method both` offline
# gives the node's liver. Ports 13510-13519.
# usage: test_both_node.sh SEGNODE SEGNODE_PHANTOM BUNDLE_DIR [FLOOR_LIVER FLOOR_KIDNEYS]
set -u
SEGNODE=$1 PHANTOM=$2 BUNDLE=$3
FLOOR_LIVER=${4:-0.85} FLOOR_KIDNEY=${5:-0.50}
NODE_PORT=13510 NODE_HTTP=13511 PACS_PORT=13512
. "$(dirname "$0")/lib.sh"
need_ports $NODE_PORT $NODE_HTTP $PACS_PORT

phantom mr-t1
clone_series 1
"$PHANTOM" --out "$TMP/atl" --subjects 2 --first 2 --modalities ct --size small >"$TMP/phantom-atl.log" 2>&1 ||
    { echo "phantom atlases failed"; cat "$TMP/phantom-atl.log"; exit 1; }
write_conf "workers = 1
device = cpu" "
[route mr-both-noatlas]
modality = MR
series_description = ^copy 01$
method = both
model = models/tiny
send_to = PACS
[route mr-both]
modality = MR
method = both
model = models/tiny
atlases = subject-002, subject-003
select_k = 1
labels = liver, spleen, kidney_left, kidney_right, stomach
send_to = PACS"
conf_move
run "$SEGNODE" -c "$TMP/etc/node.conf" atlas import --phantom "$TMP/atl"
expect_rc 0 "atlas import of two CT phantoms"
pacs_start
node_start_elsewhere

MR=$TMP/ph/subject-001/mr-t1
GT=$TMP/ph/subject-001/seg/mr-t1.dcm
MRUID=$(dcm_attr "$(ls $MR/*.dcm | head -1)" SeriesInstanceUID)
push SCANNER "$MR"/*.dcm || fail "storescu MR"
if wait_seg 170 "$MRUID"; then
    ok "the fused SEG of the MR series reached the PACS"
else
    fail "no SEG in the PACS: jobs $(sql 'SELECT id, state, error FROM jobs'); log: $(tail -5 "$TMP/serve.log")"
fi
if [ -n "${SEG:-}" ]; then
    dl=$(dice "$GT" "$SEG" Liver) ds=$(dice "$GT" "$SEG" Spleen) dst=$(dice "$GT" "$SEG" Stomach)
    dk=$(dice "$GT" "$SEG" "Left kidney") dr=$(dice "$GT" "$SEG" "Right kidney")
    echo "# Dice of the delivered SEG: liver $dl, spleen $ds, kidney left $dk, kidney right $dr, stomach $dst (atlases only)"
    ge "$dl" "$FLOOR_LIVER" && ok "liver Dice $dl >= $FLOOR_LIVER" || fail "liver Dice $dl < $FLOOR_LIVER"
    km=$(awk -v a="$dk" -v b="$dr" 'BEGIN { print (a + b) / 2 }')
    ge "$km" "$FLOOR_KIDNEY" && ok "mean kidney Dice $km >= $FLOOR_KIDNEY" || fail "mean kidney Dice $km < $FLOOR_KIDNEY"
    ge "$dst" 0.6 && ok "stomach (not in the model) comes from the atlases: Dice $dst" || fail "stomach Dice $dst"
    run "$PY" -c "import pydicom,sys; d=pydicom.dcmread(sys.argv[1]); print(d.SegmentSequence[0].SegmentAlgorithmName)" "$SEG"
    expect_in "$OUT" "segnode net + multi-atlas" "the SEG names the fused algorithm"
fi
run "$SEGNODE" -c "$TMP/etc/node.conf" --json jobs list
py_check "job: done, stages load_model/infer/atlas/fuse/postprocess, note: stomach lacking, atlases fused" \
    "len(d)==1 and d[0]['state']=='done' and all(k in d[0]['timings']['method'] for k in ('load_model_ms','infer_ms','atlas_ms','fuse_ms','postprocess_ms')) and 'labels the model lacks: stomach' in d[0]['timings']['note'] and 'atlas: 1 of 2 atlases fused' in d[0]['timings']['note'] and 'the 1 most similar after affine registered further' in d[0]['timings']['note']"

# Offline, the same method: `segment --method both` with the route's bundle, atlases and
# select_k (no labels key, so no stomach: the bundle lacks it) writes the SEG a route sends.
run "$SEGNODE" -c "$TMP/etc/node.conf" segment --method both --model "$TMP/etc/models/tiny" \
    --atlases subject-002,subject-003 --select-k 1 --device cpu --out "$TMP/offline.dcm" "$MR"
expect_rc 0 "segment --method both offline"
expect_in "$OUT" "atlas: 1 of 2 atlases fused" "segment --method both prints the job's note"
if [ -s "$TMP/offline.dcm" ] && [ -n "${SEG:-}" ]; then
    ol=$(dice "$GT" "$TMP/offline.dcm" Liver) same=$(dice "$SEG" "$TMP/offline.dcm" Liver)
    echo "# offline both: liver Dice $ol against the truth, $same against the node's SEG"
    ge "$ol" "$FLOOR_LIVER" && ok "offline both: liver Dice $ol >= $FLOOR_LIVER" || fail "offline both: liver Dice $ol"
    ge "$same" 0.98 && ok "offline both agrees with the node's liver ($same)" || fail "offline both vs node liver: $same"
    run "$PY" -c "import pydicom,sys; d=pydicom.dcmread(sys.argv[1]); print(d.SegmentSequence[0].SegmentAlgorithmName)" "$TMP/offline.dcm"
    expect_in "$OUT" "segnode net + multi-atlas" "the offline SEG names the fused algorithm"
fi
run "$SEGNODE" -c "$TMP/etc/node.conf" segment --method both --model "$TMP/etc/models/tiny" --out "$TMP/x.dcm" "$MR"
expect_rc 2 "segment --method both without --atlases"; expect_in "$ERR" "needs --model DIR and --atlases" "segment --method both asks for atlases"

C1UID=$(dcm_attr "$(ls $TMP/s/01/*.dcm | head -1)" SeriesInstanceUID)
push SCANNER "$TMP"/s/01/*.dcm || fail "storescu copy 01"
if wait_sql 60 "SELECT j.state, j.error LIKE '%names no atlases%' FROM jobs j JOIN series s ON s.id=j.series_id WHERE s.series_uid='$C1UID'" "3|1"; then
    ok "a both route without atlases fails its job with the reason"
else
    fail "no-atlas job: $(sql 'SELECT id, route, state, error FROM jobs')"
fi
run echoscu -aet SCANNER -aec SEGNODE 127.0.0.1 $NODE_PORT
expect_rc 0 "the node still answers C-ECHO"
node_stop
finish
