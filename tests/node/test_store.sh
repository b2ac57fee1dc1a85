#!/bin/bash
# tests/node/test_store.sh — the node receives, stores and indexes a series from DCMTK:
# echoscu, storescu of a 300-slice CT series (one association), `segnode series --json` shows
# exactly 300 instances in one series, every stored data set equals the sent one byte for byte,
# files == rows, tmp/ empty; then findscu at STUDY level (PatientName, StudyInstanceUID keys) and
# SERIES level finds it with the right counts; a key the index lacks comes back zero-length.
# Ports 11400-11409.
# usage: test_store.sh SEGNODE_BINARY
SEGNODE=$1
HERE=$(cd "$(dirname "$0")" && pwd)
PORT=11400
. "$HERE/lib.sh"
need_ports $PORT

write_conf </dev/null
C="$TMP/node.conf"
SERIES=$(gen_series "$TMP/series" 300 --rows 128 --patient "STORE^THREEHUNDRED" --seed 11)
STUDY=$("$PY" -c "import pydicom,sys; print(pydicom.dcmread(sys.argv[1]).StudyInstanceUID)" "$TMP/series/0001.dcm")
start_node "$C" "$TMP/serve.log"

run echoscu -v -aet MODALITY -aec SEGNODE 127.0.0.1 $PORT
expect_rc 0 "echoscu C-ECHO"
expect_in "$ERR$OUT" "Received Echo Response (Success)" "echo answered Success"

t0=$(date +%s.%N)
run storescu -v -aet MODALITY -aec SEGNODE 127.0.0.1 $PORT "$TMP/series"/*.dcm
t1=$(date +%s.%N)
expect_rc 0 "storescu of 300 slices"
n=$(printf '%s\n' "$ERR$OUT" | grep -c "Received Store Response (Success)")
if [ "$n" = 300 ]; then ok "300 Success responses"; else fail "Success responses: $n of 300"; fi
echo "# 300 slices stored in $(echo "$t1 - $t0" | bc) s"

run "$SEGNODE" -c "$C" --json series
expect_rc 0 "segnode series --json"
py_check "one series with exactly 300 instances from MODALITY" \
    "len(d) == 1 and d[0]['series_uid'] == '$SERIES' and d[0]['instances'] == 300 and d[0]['source_ae'] == 'MODALITY' and d[0]['replaced'] == 0 and d[0]['state'] == 'receiving'"
verify "$C" "$TMP/storage" --sent "$TMP/series" --series 1 --expect "$SERIES=300"

# ---- C-FIND --------------------------------------------------------------------------------
run findscu -v -S -aet MODALITY -aec SEGNODE 127.0.0.1 $PORT -k QueryRetrieveLevel=STUDY \
    -k "PatientName=STORE^THREE*" -k StudyInstanceUID -k NumberOfStudyRelatedSeries \
    -k NumberOfStudyRelatedInstances -k PatientID
expect_rc 0 "findscu STUDY level by PatientName wildcard"
expect_re "$ERR$OUT" "\(0020,000d\) UI \[$STUDY\]" "study found by PatientName"
expect_re "$ERR$OUT" '\(0020,1208\) IS \[300 ?\]' "NumberOfStudyRelatedInstances = 300"
expect_re "$ERR$OUT" '\(0020,1206\) IS \[1 ?\]' "NumberOfStudyRelatedSeries = 1"
n=$(printf '%s\n' "$ERR$OUT" | grep -c "Find Response: .* (Pending)")
if [ "$n" = 1 ]; then ok "exactly one study matches"; else fail "study matches: $n"; fi

run findscu -v -S -aet MODALITY -aec SEGNODE 127.0.0.1 $PORT -k QueryRetrieveLevel=STUDY \
    -k "StudyInstanceUID=$STUDY" -k PatientName -k "InstitutionName=NOWHERE*"
expect_rc 0 "findscu STUDY level by StudyInstanceUID"
expect_in "$ERR$OUT" "STORE^THREEHUNDRED" "study found by StudyInstanceUID, PatientName returned"
# an unsupported key comes back zero-length, not with the requester's value, in a Pending FF01
RSP=$(printf '%s\n' "$ERR$OUT" | sed -n '/Find Response: .* (Pending: WarningUnsupportedOptionalKeys)/,$p')
expect_re "$RSP" '\(0008,0080\) LO \(no value available\)' "unsupported key InstitutionName returned empty"
expect_not_in "$RSP" "NOWHERE*" "the requester's value of an unsupported key is not echoed"

run findscu -v -S -aet MODALITY -aec SEGNODE 127.0.0.1 $PORT -k QueryRetrieveLevel=STUDY \
    -k "PatientName=NOBODY*" -k StudyInstanceUID
n=$(printf '%s\n' "$ERR$OUT" | grep -c "Find Response: .* (Pending)")
if [ "$RC" = 0 ] && [ "$n" = 0 ]; then ok "a non-matching PatientName finds nothing"; else fail "non-matching PatientName: $n matches"; fi

run findscu -v -S -aet MODALITY -aec SEGNODE 127.0.0.1 $PORT -k QueryRetrieveLevel=SERIES \
    -k "StudyInstanceUID=$STUDY" -k SeriesInstanceUID -k Modality -k NumberOfSeriesRelatedInstances
expect_rc 0 "findscu SERIES level"
expect_re "$ERR$OUT" "\(0020,000e\) UI \[$SERIES\]" "series found"
expect_re "$ERR$OUT" '\(0020,1209\) IS \[300 ?\]' "NumberOfSeriesRelatedInstances = 300"
expect_re "$ERR$OUT" '\(0008,0060\) CS \[CT\]' "Modality = CT"

stop_node
expect_rc 0 "SIGTERM: node exits 0"
finish
