#!/bin/bash
# tests/node/test_crash.sh — kill -9 of the node during a transfer, then restart: every instance
# storescu got Success for is indexed and on disk with the bytes sent; at most one instance more
# (committed, response not yet read); tmp/ holds no leftovers; every row's file exists; at most
# one file without a row (renamed before the index commit). Then the sender resends the whole
# series and the index holds exactly 300 with the right bytes. Ports 11430-11439.
# usage: test_crash.sh SEGNODE_BINARY
SEGNODE=$1
HERE=$(cd "$(dirname "$0")" && pwd)
PORT=11430
. "$HERE/lib.sh"
need_ports $PORT

cat >"$TMP/node.conf" <<CONF
[node]
ae_title = SEGNODE
port = $PORT
bind = 127.0.0.1
storage = $TMP/storage
http_port = 0
disk_min_free_mb = 0
stable_after = 60

[peer SCANNER]
ae_title = SCANNER
CONF
C="$TMP/node.conf"
SERIES=$(gen_series "$TMP/series" 300 --rows 256 --patient "CRASH^TEST" --seed 41)
start_node "$C" "$TMP/serve.log"

storescu -v -aet SCANNER -aec SEGNODE 127.0.0.1 $PORT "$TMP/series"/*.dcm >"$TMP/scu.log" 2>&1 &
SCU=$!
PIDS="$PIDS $SCU"
acks() { [ "$(grep -c 'Received Store Response (Success)' "$TMP/scu.log")" -ge "$1" ]; }
if wait_until 30 acks 60; then ok "storescu got 60 acknowledgements; kill -9 the node now"
else RC=""; OUT=""; ERR=$(tail -5 "$TMP/scu.log"); fail "storescu did not reach 60 acknowledgements"; fi
kill9_node
wait "$SCU"; RC=$?; OUT=""; ERR=$(tail -5 "$TMP/scu.log")
expect_nonzero "storescu fails when the node dies"
acked_uids "$TMP/scu.log" >"$TMP/acked"
n=$(wc -l <"$TMP/acked")
if [ "$n" -ge 60 ] && [ "$n" -lt 300 ]; then ok "$n of 300 acknowledged before the crash"
else fail "acknowledged before the crash: $n (want 60..299)"; fi

echo "# at the crash: tmp/ held $(ls "$TMP/storage/tmp" | wc -l) file(s), files/ $(find "$TMP/storage/files" -type f | wc -l)"
start_node "$C" "$TMP/serve.log"
ok "node restarted"
verify "$C" "$TMP/storage" --sent "$TMP/series" --series 1 --acked "$TMP/acked" --max-extra 1 --max-orphans 1

run storescu -v -aet SCANNER -aec SEGNODE 127.0.0.1 $PORT "$TMP/series"/*.dcm
expect_rc 0 "the sender resends the series after the restart"
verify "$C" "$TMP/storage" --sent "$TMP/series" --series 1 --expect "$SERIES=300" --max-orphans 1
stop_node
expect_rc 0 "SIGTERM: node exits 0"
finish
