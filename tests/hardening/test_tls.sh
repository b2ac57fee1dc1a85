#!/bin/bash
# tests/hardening/test_tls.sh — DICOM TLS (issue 10). With tls_port on and a CA we trust:
#  - echoscu / storescu +tls (client cert from our CA) on the TLS port: echo and store work,
#    bytes stored are those sent;
#  - a client whose certificate comes from another CA is refused in the handshake, logged and
#    counted as reason="tls"; nothing stored; the node keeps serving (TLS and plain);
#  - plain DICOM on the TLS port is refused; the plain port still works;
#  - outbound: `segnode send` to a peer with tls = yes reaches storescp +tls; to a storescp
#    whose certificate we do not trust it fails with a TLS message;
#  - a client that connects to the TLS port and stays silent holds neither other clients nor
#    shutdown.
# Ports 11800-11809. usage: test_tls.sh SEGNODE_BINARY
SEGNODE=$1
HERE=$(cd "$(dirname "$0")/../node" && pwd)
PORT=11800
TLS_PORT=11801
HTTP_PORT=11802
PEER_PORT=11803
. "$HERE/lib.sh"
. "$(dirname "$0")/certs.sh"
command -v openssl >/dev/null || { echo "SKIP: no openssl CLI"; exit 77; }
need_ports $PORT $TLS_PORT $HTTP_PORT $PEER_PORT 11804 11805

P="$TMP/pki"
mkdir -p "$P" "$TMP/storage" "$TMP/recv" "$TMP/recv2"
make_ca "$P" ca && make_ca "$P" evilca &&
make_cert "$P" ca node SEGNODE && make_cert "$P" ca modality MODALITY && make_cert "$P" ca pacs PACS &&
make_cert "$P" evilca intruder MODALITY && make_cert "$P" evilca evilpacs PACS ||
    { echo "openssl failed to make test certificates"; exit 1; }
C="$TMP/node.conf"
cat >"$C" <<CONF
[node]
ae_title = SEGNODE
port = $PORT
bind = 127.0.0.1
tls_port = $TLS_PORT
tls_certificate = $P/node.pem
tls_private_key = $P/node.key
tls_trusted_certificates = $P/ca.pem
storage = $TMP/storage
http_port = $HTTP_PORT
disk_min_free_mb = 0
stable_after = 60

[peer MODALITY]
ae_title = MODALITY

[peer PACS]
ae_title = PACS
port = $PEER_PORT
tls = yes
CONF
gen_series "$TMP/series" 3 --rows 32 --seed 81 >/dev/null
gen_series "$TMP/series2" 2 --rows 32 --seed 82 >/dev/null
run "$SEGNODE" -c "$C" config check
expect_rc 0 "config with TLS keys is valid"
start_node "$C" "$TMP/serve.log"
expect_in "$(cat "$TMP/serve.log")" "DICOM TLS on 127.0.0.1:$TLS_PORT (profile bcp195" "the node logs its TLS port"

TLSARGS="+tls $P/modality.key $P/modality.pem +cf $P/ca.pem"
run echoscu -aet MODALITY -aec SEGNODE $TLSARGS 127.0.0.1 $TLS_PORT
expect_rc 0 "echoscu +tls with a trusted client certificate"
run storescu -v -aet MODALITY -aec SEGNODE $TLSARGS 127.0.0.1 $TLS_PORT "$TMP/series"/*.dcm
expect_rc 0 "storescu +tls: 3 instances"
n=$(printf '%s' "$OUT$ERR" | grep -c "Received Store Response (Success)")
if [ "$n" = 3 ]; then ok "3 Success responses over TLS"; else fail "Success responses: $n"; fi
verify "$C" "$TMP/storage" --sent "$TMP/series" --series 1

# ---- a client certificate from a CA we do not trust ------------------------------------------
run storescu -aet MODALITY -aec SEGNODE +tls $P/intruder.key $P/intruder.pem +cf $P/ca.pem \
    127.0.0.1 $TLS_PORT "$TMP/series2"/*.dcm
expect_nonzero "storescu +tls with an untrusted certificate fails"
wait_until 5 grep -q "refused, handshake failed: TLS error: certificate verify failed" "$TMP/serve.log"
expect_in "$(cat "$TMP/serve.log")" "refused, handshake failed: TLS error: certificate verify failed" \
    "the node logs the refused handshake"
v=$(metric 'segnode_associations_rejected_total{reason="tls"}')
if [ "${v:-0}" -ge 1 ]; then ok "reason=\"tls\" counted ($v)"; else fail "tls rejects = $v"; fi
run storescu -aet MODALITY -aec SEGNODE +tls $P/modality.key $P/modality.pem +cf $P/ca.pem -ic \
    127.0.0.1 $TLS_PORT "$TMP/series2"/*.dcm
expect_rc 0 "the TLS port still serves after a refused handshake"
kept=$(find "$TMP/storage" -name '*.dcm' | wc -l)
if [ "$kept" = 5 ]; then ok "only the trusted client's 5 instances are stored"; else fail "files: $kept"; fi

# ---- without a client certificate; plain DICOM on each port -----------------------------------
run echoscu -aet MODALITY -aec SEGNODE +tla +cf $P/ca.pem 127.0.0.1 $TLS_PORT
expect_nonzero "anonymous TLS is refused (tls_require_peer_certificate = yes)"
run echoscu -aet MODALITY -aec SEGNODE -to 5 -ta 5 127.0.0.1 $TLS_PORT
expect_nonzero "plain DICOM on the TLS port is refused"
run echoscu -aet MODALITY -aec SEGNODE 127.0.0.1 $PORT
expect_rc 0 "the plain port still works"
run echoscu -aet MODALITY -aec SEGNODE $TLSARGS 127.0.0.1 $PORT
expect_nonzero "TLS to the plain port fails"
if kill -0 "$NODE" 2>/dev/null; then ok "node still running"; else fail "node died"; fi

# ---- outbound: peer PACS with tls = yes -------------------------------------------------------
storescp -aet PACS +tls $P/pacs.key $P/pacs.pem +cf $P/ca.pem -od "$TMP/recv" $PEER_PORT \
    >"$TMP/storescp.log" 2>&1 &
SCP=$!; PIDS="$PIDS $SCP"
wait_until 10 bash -c "(exec 3<>/dev/tcp/127.0.0.1/$PEER_PORT)"
run "$SEGNODE" -c "$C" send PACS "$TMP/series"
expect_rc 0 "segnode send over TLS to storescp +tls"
n=$(find "$TMP/recv" -type f | wc -l)
if [ "$n" = 3 ]; then ok "storescp +tls received 3 instances"; else fail "received: $n $(cat "$TMP/storescp.log")"; fi
run "$SEGNODE" -c "$C" echo PACS
expect_rc 0 "segnode echo over TLS"
kill "$SCP" 2>/dev/null; wait "$SCP" 2>/dev/null

storescp -aet PACS +tls $P/evilpacs.key $P/evilpacs.pem +cf $P/ca.pem -od "$TMP/recv2" $PEER_PORT \
    >"$TMP/storescp2.log" 2>&1 &
SCP=$!; PIDS="$PIDS $SCP"
wait_until 10 bash -c "(exec 3<>/dev/tcp/127.0.0.1/$PEER_PORT)"
run "$SEGNODE" -c "$C" send PACS "$TMP/series"
expect_nonzero "segnode send to a peer with an untrusted certificate fails"
expect_in "$OUT$ERR" "TLS handshake with PACS" "the error names the TLS handshake"
n=$(find "$TMP/recv2" -type f | wc -l)
if [ "$n" = 0 ]; then ok "the untrusted peer received nothing"; else fail "received: $n"; fi
kill "$SCP" 2>/dev/null; wait "$SCP" 2>/dev/null

# ---- a private key that does not match the certificate: serve refuses at start ---------------
# (a storage of its own: the running node owns $TMP/storage, and a second serve there would be
# refused for that first)
sed -e "s#^tls_private_key = .*#tls_private_key = $P/modality.key#" -e "s#^port = $PORT#port = 11804#" \
    -e "s#^storage = .*#storage = $TMP/storage-bad#" \
    -e "s#^tls_port = .*#tls_port = 11805#" -e "s#^http_port = .*#http_port = 0#" "$C" >"$TMP/bad.conf"
run "$SEGNODE" -c "$TMP/bad.conf" serve
expect_nonzero "serve with a mismatched key fails"
expect_in "$ERR$OUT" "does not match certificate" "and says the key does not match"

# ---- a client that connects to the TLS port and never starts the handshake -----------------
"$PY" -c 'import socket, sys, time; s = socket.create_connection(("127.0.0.1", int(sys.argv[1]))); time.sleep(45)' \
    $TLS_PORT &
SILENT=$!; PIDS="$PIDS $SILENT"
sleep 0.5
run echoscu -aet MODALITY -aec SEGNODE $TLSARGS 127.0.0.1 $TLS_PORT
expect_rc 0 "TLS echo works while a silent client holds a TLS connection"
t0=$(date +%s)
stop_node
expect_rc 0 "node stops cleanly"
dt=$(( $(date +%s) - t0 ))
if [ "$dt" -le 10 ]; then ok "stopping is not held up by the silent TLS client (${dt} s)"; else fail "stop took ${dt} s"; fi
finish
