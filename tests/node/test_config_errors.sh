#!/bin/bash
# tests/node/test_config_errors.sh — `segnode serve` refuses to start on a bad configuration,
# exits non-zero and names the problem: an unknown key (file:line), a peer AE title used twice,
# the DICOM port already in use (by a first node), its storage in use (by the same first node),
# the HTTP port in use (by a python socket).
# Ports 11480-11489.
# usage: test_config_errors.sh SEGNODE_BINARY
SEGNODE=$1
HERE=$(cd "$(dirname "$0")" && pwd)
PORT=11480
. "$HERE/lib.sh"
need_ports 11480 11481 11482 11483

node_section() {
cat <<CONF
[node]
ae_title = SEGNODE
port = ${1:-11480}
bind = 127.0.0.1
storage = $TMP/storage${2:-}
http_port = ${3:-0}
disk_min_free_mb = 0
CONF
}

# serve_fails NAME MESSAGE — run serve on $TMP/NAME.conf; must exit non-zero within 15 s,
# print MESSAGE, and leave nothing listening.
serve_fails() {
    run timeout 15 "$SEGNODE" -c "$TMP/$1.conf" serve
    if [ "$RC" != 0 ] && [ "$RC" != 124 ]; then ok "$1: serve exits non-zero ($RC)"; else fail "$1: serve exit $RC"; fi
    expect_in "$OUT$ERR" "$2" "$1: message names the problem"
}

{ node_section; echo "colour = blue"; } >"$TMP/unknown_key.conf"
serve_fails unknown_key "unknown_key.conf:8: unknown key 'colour' in [node]"

{ node_section; printf '\n[peer A]\nae_title = SCANNER\n\n[peer B]\nae_title = SCANNER\n'; } >"$TMP/dup_ae.conf"
serve_fails dup_ae "duplicate AE title 'SCANNER' in [peer B]"

{ node_section; printf '\n[peer A]\nae_title = SEGNODE\n'; } >"$TMP/own_ae.conf"
serve_fails own_ae "the node's own AE title"

{ node_section; echo "port = 104"; } >"$TMP/dup_key.conf"
serve_fails dup_key "duplicate key 'port' in [node]"

# DICOM port in use by a first node
node_section 11480 A >"$TMP/first.conf"
start_node "$TMP/first.conf" "$TMP/first.log"
node_section 11480 B >"$TMP/port_in_use.conf"
serve_fails port_in_use "cannot listen on 127.0.0.1:11480: port already in use"
run echoscu -aet X -aec SEGNODE 127.0.0.1 11480
expect_in "$OUT$ERR" "Calling AE Title Not Recognized" "the first node still answers"
# its storage, by a second node on another port: one daemon per store (store_claim)
node_section 11481 A >"$TMP/storage_in_use.conf"
serve_fails storage_in_use "storageA is in use by another segnode serve (pid $NODE)"
if port_free 11481; then ok "storage_in_use: the second node's port was released"; else fail "port 11481 still bound"; fi
# admin commands still open it beside the daemon
run "$SEGNODE" -c "$TMP/first.conf" series --json
expect_rc 0 "an admin command opens the store the daemon owns"
run "$SEGNODE" -c "$TMP/first.conf" --json status
py_check "status sees the daemon by its lock (http_port = 0)" "d['daemon_running'] is True and d['daemon_pid'] == $NODE"
run "$SEGNODE" -c "$TMP/first.conf" status
expect_in "$OUT" "daemon    running (pid $NODE, http_port = 0: no live figures)" "status text names its pid"
stop_node
run "$SEGNODE" -c "$TMP/first.conf" --json status
py_check "and not once it stopped" "d['daemon_running'] is False and d['daemon_pid'] is None"
expect_rc 0 "first node exits 0 on SIGTERM"

# HTTP port in use by another program
"$PY" -c '
import socket, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", 11483)); s.listen(1); print("listening", flush=True); time.sleep(60)' >"$TMP/py.log" 2>&1 &
PIDS="$PIDS $!"
wait_until 10 grep -q listening "$TMP/py.log" || { echo "python listener did not start"; exit 1; }
node_section 11482 C 11483 >"$TMP/http_in_use.conf"
serve_fails http_in_use "11483"
expect_re "$OUT$ERR" "in use|Address already in use" "http_in_use: says the port is in use"
if port_free 11482; then ok "http_in_use: the DICOM port was released again"; else fail "port 11482 still bound"; fi
finish
