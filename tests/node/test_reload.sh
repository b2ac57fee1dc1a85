#!/bin/bash
# tests/node/test_reload.sh — SIGHUP and SIGTERM on a running node:
#  - a peer added to the file is admitted after SIGHUP (rejected before); fsync changed in the
#    same reload is applied and logged, max_pdu / acse_timeout / workers changes are logged as
#    needing a restart, and fsync back on in a second reload; `serve --storage` still holds after the reload (the file names another
#    path to the same folder: /status shows the override, and no "storage changed" warning);
#  - a broken file on SIGHUP: the node keeps running on the old config (the added peer still
#    echoes), logs FILE:LINE and the reason;
#  - SIGTERM while a storescu of 100 slices is running: the association is drained (all 100
#    acknowledged and stored) and the node exits 0. Ports 11490-11494.
# usage: test_reload.sh SEGNODE_BINARY
SEGNODE=$1
HERE=$(cd "$(dirname "$0")" && pwd)
PORT=11490
HTTP_PORT=11491
. "$HERE/lib.sh"
need_ports $PORT $HTTP_PORT

base() {
cat <<CONF
[node]
ae_title = SEGNODE
port = $PORT
bind = 127.0.0.1
storage = $TMP/storage-link
http_port = $HTTP_PORT
disk_min_free_mb = 0
stable_after = 60
${EXTRA:-}
[peer OLD]
ae_title = OLDPEER
CONF
}
C="$TMP/node.conf"
base >"$C"
SERIES=$(gen_series "$TMP/series" 100 --rows 128 --seed 81)
mkdir -p "$TMP/storage" && ln -s "$TMP/storage" "$TMP/storage-link"
start_node "$C" "$TMP/serve.log" --storage "$TMP/storage"
nreload() { grep -c "$1" "$TMP/serve.log"; }

run echoscu -aet NEWPEER -aec SEGNODE 127.0.0.1 $PORT
expect_nonzero "NEWPEER is not admitted before the reload"

{ EXTRA=$'fsync = no\nmax_pdu = 65536\nacse_timeout = 20\nworkers = 2' base; printf '\n[peer NEW]\nae_title = NEWPEER\nallow = echo\n'; } >"$C"
kill -HUP "$NODE"
if wait_until 10 grep -q "SIGHUP: reloaded .*(2 peers" "$TMP/serve.log"; then ok "SIGHUP: reloaded with 2 peers"; else fail "reload not logged"; fi
LOG=$(cat "$TMP/serve.log")
expect_in "$LOG" "reload: fsync = no for instances received from now on" "fsync = no applies on reload"
expect_in "$LOG" "reload: max_pdu changed; incoming associations keep 116794 until a restart" "max_pdu: restart needed, said"
expect_in "$LOG" "reload: acse_timeout changed" "acse_timeout: restart needed, said"
expect_in "$LOG" "reload: workers changed" "workers: restart needed, said"
expect_not_in "$LOG" "storage changed" "serve --storage holds over the reload: no storage warning"
run curl -sf "http://127.0.0.1:$HTTP_PORT/status"
py_check "/status shows the --storage override after the reload" "d['node']['storage'] == '$TMP/storage'"
run echoscu -aet NEWPEER -aec SEGNODE 127.0.0.1 $PORT
expect_rc 0 "NEWPEER echoes after the reload"
# fsync back on (the drain below needs the transfer still running at SIGTERM, as with fsync)
{ base; printf '\n[peer NEW]\nae_title = NEWPEER\nallow = echo\n'; } >"$C"
kill -HUP "$NODE"
if wait_until 10 grep -q "reload: fsync = yes for instances received from now on" "$TMP/serve.log"; then
    ok "fsync = yes applies on a second reload"; else fail "fsync = yes not logged"; fi

{ base; printf '\n[peer NEW]\nae_title = NEWPEER\nallow = echo\nfrobnicate = yes\n'; } >"$C"
kill -HUP "$NODE"
if wait_until 10 grep -q "keeping the configuration in force" "$TMP/serve.log"; then ok "broken file: reload refused"; else fail "refusal not logged"; fi
expect_in "$(cat "$TMP/serve.log")" "node.conf:16: unknown key 'frobnicate' in [peer NEW]" "the log says FILE:LINE and why"
if kill -0 "$NODE" 2>/dev/null; then ok "the node keeps running"; else fail "the node died"; fi
run echoscu -aet NEWPEER -aec SEGNODE 127.0.0.1 $PORT
expect_rc 0 "the old config (with NEWPEER) stays in force"
run curl -sf "http://127.0.0.1:$HTTP_PORT/status"
py_check "/status counts 2 reloads and 1 failed reload" "d['config']['reloads'] == 2 and d['config']['reload_failures'] == 1"

# ---- SIGTERM drains --------------------------------------------------------------------------
storescu -v -aet OLDPEER -aec SEGNODE 127.0.0.1 $PORT "$TMP/series"/*.dcm >"$TMP/scu.log" 2>&1 &
SCU=$!
PIDS="$PIDS $SCU"
acks() { [ "$(grep -c 'Received Store Response (Success)' "$TMP/scu.log")" -ge "$1" ]; }
if wait_until 30 acks 5; then ok "storescu under way; SIGTERM the node"; else fail "storescu did not start"; fi
stop_node
expect_rc 0 "SIGTERM: node exits 0"
wait $SCU; RC=$?; OUT=""; ERR=$(tail -5 "$TMP/scu.log")
expect_rc 0 "the open association was drained: storescu completes"
n=$(grep -c 'Received Store Response (Success)' "$TMP/scu.log")
if [ "$n" = 100 ]; then ok "all 100 acknowledged"; else fail "$n of 100 acknowledged"; fi
expect_in "$(cat "$TMP/serve.log")" "SIGTERM: stopping; draining 1 association(s)" "the node logs the drain"
base >"$C"   # the admin commands read the (now fixed) file
verify "$C" "$TMP/storage" --sent "$TMP/series" --series 1 --expect "$SERIES=100"
finish
