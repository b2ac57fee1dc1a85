#!/bin/bash
# tests/node/test_abort.sh — the peer goes away mid-transfer:
#  - storescu killed with SIGKILL while sending 512x512 slices: every acknowledged instance is
#    indexed with its bytes, at most one more, the partial one leaves no file or row;
#  - a raw P-DATA cut in half, then A-ABORT; and then a plain socket close: no row, no file,
#    tmp/ empty, each counted in segnode_associations_aborted_total; the node still serves.
# Ports 11460-11469.
# usage: test_abort.sh SEGNODE_BINARY
SEGNODE=$1
HERE=$(cd "$(dirname "$0")" && pwd)
PORT=11460
HTTP_PORT=11461
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
SERIES=$(gen_series "$TMP/big" 80 --rows 512 --patient "ABORT^TEST" --seed 61)
gen_series "$TMP/one" 1 --rows 256 --patient "ABORT^RAW" --seed 62 >/dev/null
start_node "$C" "$TMP/serve.log"
aborted() { [ "$(metric segnode_associations_aborted_total)" = "$1" ]; }

# ---- storescu killed mid-transfer ------------------------------------------------------------
storescu -v -aet MODALITY -aec SEGNODE 127.0.0.1 $PORT "$TMP/big"/*.dcm >"$TMP/scu.log" 2>&1 &
SCU=$!
PIDS="$PIDS $SCU"
acks() { [ "$(grep -c 'Received Store Response (Success)' "$TMP/scu.log")" -ge "$1" ]; }
if wait_until 30 acks 10; then ok "storescu got 10 acknowledgements; kill -9 it"
else RC=""; OUT=""; ERR=$(tail -5 "$TMP/scu.log"); fail "storescu did not reach 10 acknowledgements"; fi
kill -9 $SCU
wait $SCU 2>/dev/null
if wait_until 20 aborted 1; then ok "the node saw the association abort"; else fail "no abort counted"; fi
acked_uids "$TMP/scu.log" >"$TMP/acked"
echo "# $(wc -l <"$TMP/acked") of 80 acknowledged before the kill"
verify "$C" "$TMP/storage" --sent "$TMP/big" --series 1 --acked "$TMP/acked" --max-extra 1

# ---- half a P-DATA, then A-ABORT / close --------------------------------------------------------
before=$(find "$TMP/storage/files" -type f | wc -l)
run "$PY" "$HERE/rawscu.py" partial 127.0.0.1 $PORT MODALITY SEGNODE "$TMP/one/0001.dcm" abort
expect_rc 0 "raw sender: half a data set, then A-ABORT"
if wait_until 20 aborted 2; then ok "A-ABORT counted"; else fail "A-ABORT not counted"; fi
run "$PY" "$HERE/rawscu.py" partial 127.0.0.1 $PORT MODALITY SEGNODE "$TMP/one/0001.dcm" close
expect_rc 0 "raw sender: half a data set, then close"
if wait_until 20 aborted 3; then ok "dropped connection counted"; else fail "dropped connection not counted"; fi
after=$(find "$TMP/storage/files" -type f | wc -l)
if [ "$before" = "$after" ]; then ok "no file from the partial data sets ($after files)"; else fail "files $before -> $after"; fi
verify "$C" "$TMP/storage" --sent "$TMP/big" --series 1 --acked "$TMP/acked" --max-extra 1

run storescu -aet MODALITY -aec SEGNODE 127.0.0.1 $PORT "$TMP/one/0001.dcm"
expect_rc 0 "the node still stores after the aborts"
verify "$C" "$TMP/storage" --sent "$TMP/big" --sent "$TMP/one" --series 2
stop_node
expect_rc 0 "SIGTERM: node exits 0"
finish
