#!/bin/bash
# tests/node/test_policy.sh — association policy, each outcome checked exactly:
#  - unknown calling AE: A-ASSOCIATE-RJ "Calling AE Title Not Recognized", counted as
#    reason="unknown_calling_ae" in /metrics, logged;
#  - wrong called AE: "Called AE Title Not Recognized", reason="called_ae";
#  - a peer with allow = echo: echo works, its storage contexts are refused (storescu: no
#    presentation context), nothing stored; a peer without find: findscu refused;
#  - accept_unknown = yes (after SIGHUP): an unknown AE may store (not find).
# Ports 11440-11449.
# usage: test_policy.sh SEGNODE_BINARY
SEGNODE=$1
HERE=$(cd "$(dirname "$0")" && pwd)
PORT=11440
HTTP_PORT=11441
. "$HERE/lib.sh"
need_ports $PORT $HTTP_PORT

conf() {
cat >"$TMP/node.conf" <<CONF
[node]
ae_title = SEGNODE
port = $PORT
bind = 127.0.0.1
storage = $TMP/storage
http_port = $HTTP_PORT
disk_min_free_mb = 0
stable_after = 60
accept_unknown = $1

[peer FULL]
ae_title = FULL
allow = echo, store, find

[peer ECHOONLY]
ae_title = ECHOONLY
allow = echo

[peer NOFIND]
ae_title = NOFIND
allow = echo, store
CONF
}
conf no
C="$TMP/node.conf"
gen_series "$TMP/series" 3 --rows 32 --seed 51 >/dev/null
start_node "$C" "$TMP/serve.log"
reject_count() { metric "segnode_associations_rejected_total{reason=\"$1\"}"; }

# ---- unknown calling AE --------------------------------------------------------------------
run echoscu -v -aet STRANGER -aec SEGNODE 127.0.0.1 $PORT
expect_nonzero "echoscu from an unknown calling AE fails"
expect_in "$OUT$ERR" "Association Rejected" "association rejected"
expect_in "$OUT$ERR" "Calling AE Title Not Recognized" "reason: Calling AE Title Not Recognized"
expect_in "$OUT$ERR" "Result: Rejected Permanent" "rejected permanently"
v=$(reject_count unknown_calling_ae)
if [ "$v" = 1 ]; then ok "reason=\"unknown_calling_ae\" counted once"; else fail "unknown_calling_ae = $v"; fi
expect_in "$(cat "$TMP/serve.log")" "calling AE title 'STRANGER' is not a configured peer" "the node logs the unknown AE"
run storescu -aet STRANGER -aec SEGNODE 127.0.0.1 $PORT "$TMP/series/0001.dcm"
expect_nonzero "storescu from an unknown calling AE fails"
v=$(reject_count unknown_calling_ae)
if [ "$v" = 2 ]; then ok "unknown_calling_ae counted twice"; else fail "unknown_calling_ae = $v"; fi

# ---- wrong called AE -----------------------------------------------------------------------
run echoscu -v -aet FULL -aec NOTSEGNODE 127.0.0.1 $PORT
expect_nonzero "echoscu to a wrong called AE fails"
expect_in "$OUT$ERR" "Called AE Title Not Recognized" "reason: Called AE Title Not Recognized"
v=$(reject_count called_ae)
if [ "$v" = 1 ]; then ok "reason=\"called_ae\" counted once"; else fail "called_ae = $v"; fi

# ---- allow = echo only -----------------------------------------------------------------------
run echoscu -aet ECHOONLY -aec SEGNODE 127.0.0.1 $PORT
expect_rc 0 "ECHOONLY may echo"
run storescu -v -aet ECHOONLY -aec SEGNODE 127.0.0.1 $PORT "$TMP/series/0001.dcm"
expect_nonzero "ECHOONLY cannot store"
# storescu proposes only storage contexts: none may be granted, so the node rejects the
# association outright (not permitted), which storescu reports as a rejection
expect_in "$OUT$ERR" "Association Rejected" "storescu from ECHOONLY: association rejected"
expect_in "$(cat "$TMP/serve.log")" "ECHOONLY rejected: the peer is not allowed any of the services it proposed" "the node logs why"
v=$(reject_count not_permitted)
if [ "$v" = 1 ]; then ok "reason=\"not_permitted\" counted once"; else fail "not_permitted = $v"; fi
# proposing Verification and CT together: Verification accepted, the CT context refused
run "$PY" "$HERE/rawscu.py" propose 127.0.0.1 $PORT ECHOONLY SEGNODE 1.2.840.10008.1.1 1.2.840.10008.5.1.4.1.1.2
expect_rc 0 "ECHOONLY proposing Verification + CT Image Storage is accepted"
expect_in "$OUT" "1.2.840.10008.1.1 result=0" "Verification context accepted"
expect_re "$OUT" "1\.2\.840\.10008\.5\.1\.4\.1\.1\.2 result=[1-4]" "CT Image Storage context refused"
v=$(series_count "$C")
if [ "$v" = 0 ]; then ok "nothing stored for ECHOONLY"; else fail "series after ECHOONLY: $v"; fi

# ---- no find ---------------------------------------------------------------------------------
run findscu -v -S -aet NOFIND -aec SEGNODE 127.0.0.1 $PORT -k QueryRetrieveLevel=STUDY -k StudyInstanceUID
expect_nonzero "findscu from NOFIND fails"
expect_re "$OUT$ERR" "Association Rejected|No Acceptable Presentation Contexts|No presentation context" "C-FIND refused for NOFIND"
v=$(reject_count not_permitted)
if [ "$v" = 2 ]; then ok "reason=\"not_permitted\" counted again (2)"; else fail "not_permitted = $v"; fi
run findscu -S -aet FULL -aec SEGNODE 127.0.0.1 $PORT -k QueryRetrieveLevel=STUDY -k StudyInstanceUID
expect_rc 0 "findscu from FULL works"

# ---- accept_unknown = yes ---------------------------------------------------------------------
conf yes
kill -HUP "$NODE"
reloaded() { grep -q "SIGHUP: reloaded" "$TMP/serve.log"; }
if wait_until 10 reloaded; then ok "SIGHUP reload with accept_unknown = yes"; else fail "no reload logged"; fi
run storescu -v -aet STRANGER -aec SEGNODE 127.0.0.1 $PORT "$TMP/series"/*.dcm
expect_rc 0 "with accept_unknown = yes an unknown AE may store"
verify "$C" "$TMP/storage" --sent "$TMP/series" --series 1
run "$SEGNODE" -c "$C" --json series
py_check "stored from STRANGER" "d[0]['source_ae'] == 'STRANGER' and d[0]['instances'] == 3"
run findscu -S -aet STRANGER -aec SEGNODE 127.0.0.1 $PORT -k QueryRetrieveLevel=STUDY -k StudyInstanceUID
expect_nonzero "an unknown AE may not C-FIND even with accept_unknown"
run echoscu -aet STRANGER -aec WRONG 127.0.0.1 $PORT
expect_nonzero "the called AE is still checked with accept_unknown"
stop_node
expect_rc 0 "SIGTERM: node exits 0"
finish
