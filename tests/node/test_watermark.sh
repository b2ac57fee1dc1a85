#!/bin/bash
# tests/node/test_watermark.sh — disk below the watermark: with disk_min_free_mb above the free
# space of the storage file system, a storage association is rejected transiently (local limit
# exceeded), logged, counted as reason="disk_watermark"; C-ECHO still works; nothing stored.
# Lowering the watermark (SIGHUP) lets the same store through. Ports 11470-11479.
# usage: test_watermark.sh SEGNODE_BINARY
SEGNODE=$1
HERE=$(cd "$(dirname "$0")" && pwd)
PORT=11470
HTTP_PORT=11471
. "$HERE/lib.sh"
need_ports $PORT $HTTP_PORT

mkdir -p "$TMP/storage"
free_mb=$(( $(df -Pk "$TMP/storage" | awk 'NR==2 {print $4}') / 1024 ))
conf() {
cat >"$TMP/node.conf" <<CONF
[node]
ae_title = SEGNODE
port = $PORT
bind = 127.0.0.1
storage = $TMP/storage
http_port = $HTTP_PORT
disk_min_free_mb = $1
stable_after = 60

[peer MODALITY]
ae_title = MODALITY
CONF
}
conf $((free_mb * 2 + 1024))
C="$TMP/node.conf"
gen_series "$TMP/series" 2 --rows 32 --seed 71 >/dev/null
start_node "$C" "$TMP/serve.log"

run storescu -v -aet MODALITY -aec SEGNODE 127.0.0.1 $PORT "$TMP/series"/*.dcm
expect_nonzero "storescu below the disk watermark fails"
expect_in "$OUT$ERR" "Association Rejected" "association rejected"
expect_in "$OUT$ERR" "Rejected Transient" "rejected transiently"
expect_in "$OUT$ERR" "Local Limit Exceeded" "reason: local limit exceeded"
expect_in "$(cat "$TMP/serve.log")" "below the watermark disk_min_free_mb" "the node logs the watermark"
v=$(metric 'segnode_associations_rejected_total{reason="disk_watermark"}')
if [ "$v" = 1 ]; then ok "reason=\"disk_watermark\" counted"; else fail "disk_watermark = $v"; fi
run echoscu -aet MODALITY -aec SEGNODE 127.0.0.1 $PORT
expect_rc 0 "C-ECHO still works below the watermark"
v=$(series_count "$C")
if [ "$v" = 0 ]; then ok "nothing stored"; else fail "series: $v"; fi

conf 0
kill -HUP "$NODE"
reloaded() { grep -q "SIGHUP: reloaded" "$TMP/serve.log"; }
if wait_until 10 reloaded; then ok "SIGHUP with disk_min_free_mb = 0"; else fail "no reload logged"; fi
run storescu -aet MODALITY -aec SEGNODE 127.0.0.1 $PORT "$TMP/series"/*.dcm
expect_rc 0 "storescu works without the watermark"
verify "$C" "$TMP/storage" --sent "$TMP/series" --series 1
stop_node
expect_rc 0 "SIGTERM: node exits 0"
finish
