#!/bin/bash
# tests/node/test_bad_data.sh — bad input is refused with the exact outcome and nothing stored:
#  - a SOP class the node does not accept (Encapsulated PDF): its presentation context is
#    refused (abstract syntax not supported), storescu cannot send it;
#  - data sets with a missing/malformed SOP Instance UID or Series Instance UID, and one whose
#    meta header's MediaStorageSOPInstanceUID differs from its SOPInstanceUID sent with the meta
#    header's UID in the C-STORE command (rawscu.py): failure status 0xC000 / 0xA900 with an
#    Error Comment naming the problem (also checked in storescu -d output);
#  - afterwards: no series, no files, tmp/ empty, failures counted in /metrics;
#  - dcmsend is NOT a way to send a meta/dataset mismatch: it reads the UIDs from the meta
#    header for its transfer list but puts the data set's SOP Instance UID in the command
#    (checked here, so a DCMTK upgrade that changes it is noticed); the node indexes the
#    instance under the data set's UID. Ports 11450-11459.
# usage: test_bad_data.sh SEGNODE_BINARY
SEGNODE=$1
HERE=$(cd "$(dirname "$0")" && pwd)
PORT=11450
HTTP_PORT=11451
. "$HERE/lib.sh"
need_ports $PORT $HTTP_PORT

cat >"$TMP/node.conf" <<CONF
[node]
ae_title = SEGNODE
port = $PORT
bind = 127.0.0.1
storage = $TMP/storage
http_port = $HTTP_PORT
disk_min_free_mb = 0
stable_after = 60

[peer MODALITY]
ae_title = MODALITY
CONF
C="$TMP/node.conf"
"$PY" "$HERE/gen_dicom.py" bad "$TMP/bad"
B="$TMP/bad"
start_node "$C" "$TMP/serve.log"

# ---- SOP class not accepted ------------------------------------------------------------------
run storescu -v -aet MODALITY -aec SEGNODE 127.0.0.1 $PORT "$B/pdf.dcm"
expect_nonzero "storescu of an Encapsulated PDF fails"
expect_in "$OUT$ERR" "No presentation context for: (PDF)" "storescu: no presentation context for PDF"
run "$PY" "$HERE/rawscu.py" propose 127.0.0.1 $PORT MODALITY SEGNODE 1.2.840.10008.5.1.4.1.1.104.1 1.2.840.10008.5.1.4.1.1.2
expect_in "$OUT" "1.2.840.10008.5.1.4.1.1.104.1 result=3" "PDF context refused: abstract syntax not supported (3)"
expect_in "$OUT" "1.2.840.10008.5.1.4.1.1.2 result=0" "CT context in the same association accepted"

# ---- malformed data sets (command UIDs from the meta header) ----------------------------------
run "$PY" "$HERE/rawscu.py" store 127.0.0.1 $PORT MODALITY SEGNODE \
    "$B/no_sop_uid.dcm" "$B/bad_sop_uid.dcm" "$B/no_series_uid.dcm" "$B/bad_series_uid.dcm" "$B/meta_mismatch.dcm"
expect_rc 0 "raw C-STOREs of five bad data sets on one association"
expect_in "$OUT" "no_sop_uid.dcm status=0xc000 comment=missing SOP Instance UID" \
    "data set without SOP Instance UID: 0xC000, comment says so"
expect_in "$OUT" "bad_sop_uid.dcm status=0xc000 comment=malformed SOP Instance UID" \
    "malformed SOP Instance UID: 0xC000"
expect_in "$OUT" "no_series_uid.dcm status=0xc000 comment=missing or malformed Series Instance UID" \
    "missing Series Instance UID: 0xC000"
expect_in "$OUT" "bad_series_uid.dcm status=0xc000 comment=missing or malformed Series Instance UID" \
    "malformed Series Instance UID: 0xC000"
expect_in "$OUT" "meta_mismatch.dcm status=0xa900 comment=SOP Instance UID of data set differs from request" \
    "meta header UID != data set UID: 0xA900"

for f in bad_sop_uid bad_series_uid no_series_uid; do
    run storescu -d -aet MODALITY -aec SEGNODE 127.0.0.1 $PORT "$B/$f.dcm"
    expect_re "$OUT$ERR" "DIMSE Status +: 0xc000: Error: Cannot understand" "storescu $f.dcm: status 0xc000"
    expect_re "$OUT$ERR" "\(0000,0902\) LO \[(missing or )?malformed (SOP|Series) Instance UID\]" "storescu $f.dcm: Error Comment"
done

v=$(metric segnode_store_failures_total)
if [ "$v" = 8 ]; then ok "8 C-STORE failures counted"; else fail "segnode_store_failures_total = $v"; fi
v=$(series_count "$C")
if [ "$v" = 0 ]; then ok "no series indexed"; else fail "series indexed: $v"; fi
verify "$C" "$TMP/storage" --series 0
nfiles=$(find "$TMP/storage/files" -type f | wc -l)
if [ "$nfiles" = 0 ]; then ok "no instance files"; else fail "$nfiles instance files"; fi

# ---- dcmsend and a meta header that disagrees with the data set --------------------------------
run dcmsend -v -aet MODALITY -aec SEGNODE 127.0.0.1 $PORT "$B/meta_mismatch.dcm"
expect_rc 0 "dcmsend of meta_mismatch.dcm"
expect_in "$OUT$ERR" "SOP Instance UID in dataset differs from the one in the transfer list" \
    "dcmsend notices the mismatch and sends the data set's UID (not the meta header's)"
run "$SEGNODE" -c "$C" --json series 1.2.826.0.1.3680043.10.1138.99.2
py_check "the node indexed it under the data set's SOP Instance UID" \
    "[f['sop_instance_uid'] for f in d['files']] == ['1.2.826.0.1.3680043.10.1138.99.2.5']"
verify "$C" "$TMP/storage" --sent "$B" --series 1
stop_node
expect_rc 0 "SIGTERM: node exits 0"
finish
