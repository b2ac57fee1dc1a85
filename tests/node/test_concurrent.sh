#!/bin/bash
# tests/node/test_concurrent.sh — 4 storescu processes at once, each on its own series of 100
# slices (4 associations in parallel): 4 series with exactly 100 instances each, every stored
# data set equals the sent one, files == rows, tmp/ empty, 4 associations accepted in /metrics.
# Ports 11410-11419.
# usage: test_concurrent.sh SEGNODE_BINARY
SEGNODE=$1
HERE=$(cd "$(dirname "$0")" && pwd)
PORT=11410
HTTP_PORT=11411
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
max_associations = 8

[peer CT1]
ae_title = CT1
[peer CT2]
ae_title = CT2
[peer CT3]
ae_title = CT3
[peer CT4]
ae_title = CT4
CONF
C="$TMP/node.conf"
EXPECT=""
for i in 1 2 3 4; do
    uid=$(gen_series "$TMP/s$i" 100 --rows 128 --patient "CONCURRENT^$i" --seed $((20 + i)))
    EXPECT="$EXPECT --expect $uid=100"
done
start_node "$C" "$TMP/serve.log"

SCU=""
for i in 1 2 3 4; do
    storescu -v -aet CT$i -aec SEGNODE 127.0.0.1 $PORT "$TMP/s$i"/*.dcm >"$TMP/scu$i.log" 2>&1 &
    SCU="$SCU $!"
    PIDS="$PIDS $!"
done
i=0
for p in $SCU; do
    i=$((i + 1))
    wait "$p"; RC=$?; OUT=""; ERR=$(tail -5 "$TMP/scu$i.log")
    expect_rc 0 "storescu CT$i (100 slices, concurrent)"
    n=$(grep -c "Received Store Response (Success)" "$TMP/scu$i.log")
    if [ "$n" = 100 ]; then ok "CT$i: 100 Success responses"; else fail "CT$i: $n Success responses of 100"; fi
done
# the four associations overlapped (each one's first store precedes another's last)
accepted=$(metric segnode_associations_accepted_total)
if [ "${accepted:-0}" -ge 4 ]; then ok "4 associations accepted ($accepted)"; else fail "associations accepted: $accepted"; fi

verify "$C" "$TMP/storage" --sent "$TMP/s1" --sent "$TMP/s2" --sent "$TMP/s3" --sent "$TMP/s4" --series 4 $EXPECT
run "$SEGNODE" -c "$C" --json series
py_check "each series has its own sender AE" "sorted(s['source_ae'] for s in d) == ['CT1','CT2','CT3','CT4']"
stop_node
expect_rc 0 "SIGTERM: node exits 0"
finish
