#!/bin/bash
# tests/hardening/test_peer_host.sh — access control (issue 10):
#  - check_peer_host = yes: a known calling AE must connect from an address its [peer] host
#    resolves to. REMOTE (host 127.0.0.2) is rejected from 127.0.0.1 (calling AE not
#    recognized; logged with both addresses; reason="peer_host") and accepted from 127.0.0.2;
#    LOCAL (host localhost) is accepted from 127.0.0.1 and rejected from 127.0.0.2; a host that
#    does not resolve rejects; after SIGHUP with check_peer_host = no, REMOTE is accepted again.
#  - per-peer permissions not covered by tests/node/test_policy.sh: a peer with allow = store
#    may store but not echo or find; allow = none may do nothing.
# Connections from 127.0.0.2 come from rawscu.py with its socket bound there.
# Ports 11810-11819. usage: test_peer_host.sh SEGNODE_BINARY
SEGNODE=$1
HERE=$(cd "$(dirname "$0")/../node" && pwd)
PORT=11810
HTTP_PORT=11811
. "$HERE/lib.sh"
need_ports $PORT $HTTP_PORT

mkdir -p "$TMP/storage"
C="$TMP/node.conf"
conf() {
cat >"$C" <<CONF
[node]
ae_title = SEGNODE
port = $PORT
bind = 127.0.0.1
storage = $TMP/storage
http_port = $HTTP_PORT
disk_min_free_mb = 0
stable_after = 60
check_peer_host = $1

[peer REMOTE]
ae_title = REMOTE
host = 127.0.0.2

[peer LOCAL]
ae_title = LOCAL
host = localhost
allow = echo, store, find

[peer NOWHERE]
ae_title = NOWHERE
host = no-such-host.invalid

[peer STOREONLY]
ae_title = STOREONLY
allow = store

[peer NOTHING]
ae_title = NOTHING
allow = none
CONF
}
conf yes
gen_series "$TMP/series" 2 --rows 32 --seed 91 >/dev/null
start_node "$C" "$TMP/serve.log"
reject_count() { metric "segnode_associations_rejected_total{reason=\"$1\"}"; }
VERIFICATION=1.2.840.10008.1.1
# from SRC: rawscu.py with its socket bound to SRC
from() {
    local src=$1; shift
    run "$PY" -c '
import runpy, socket, sys
src, orig = sys.argv[1], socket.create_connection
socket.create_connection = lambda a, timeout=None, **k: orig(a, timeout, source_address=(src, 0))
sys.argv = sys.argv[2:]
runpy.run_path(sys.argv[0], run_name="__main__")' "$src" "$HERE/rawscu.py" "$@"
}

# ---- check_peer_host = yes --------------------------------------------------------------------
run echoscu -v -aet REMOTE -aec SEGNODE 127.0.0.1 $PORT
expect_nonzero "REMOTE (host 127.0.0.2) connecting from 127.0.0.1 is refused"
expect_in "$OUT$ERR" "Calling AE Title Not Recognized" "rejected as calling AE not recognized"
expect_in "$(cat "$TMP/serve.log")" "calling AE 'REMOTE' ([peer REMOTE], host 127.0.0.2) connected from 127.0.0.1" \
    "the node logs both addresses"
v=$(reject_count peer_host)
if [ "$v" = 1 ]; then ok "reason=\"peer_host\" counted once"; else fail "peer_host = $v"; fi
run storescu -aet REMOTE -aec SEGNODE 127.0.0.1 $PORT "$TMP/series"/*.dcm
expect_nonzero "storescu as REMOTE from 127.0.0.1 is refused"
from 127.0.0.2 propose 127.0.0.1 $PORT REMOTE SEGNODE $VERIFICATION
expect_rc 0 "REMOTE connecting from 127.0.0.2 is accepted"
expect_in "$OUT" "$VERIFICATION result=0" "its Verification context is accepted"

run echoscu -aet LOCAL -aec SEGNODE 127.0.0.1 $PORT
expect_rc 0 "LOCAL (host localhost) connecting from 127.0.0.1 is accepted"
from 127.0.0.2 propose 127.0.0.1 $PORT LOCAL SEGNODE $VERIFICATION
expect_rc 2 "LOCAL connecting from 127.0.0.2 is refused"
run echoscu -aet NOWHERE -aec SEGNODE 127.0.0.1 $PORT
expect_nonzero "a peer whose host does not resolve is refused"
expect_in "$(cat "$TMP/serve.log")" "cannot resolve 'no-such-host.invalid'" "the node says the host does not resolve"
# peers without a host key default to 127.0.0.1
run storescu -aet STOREONLY -aec SEGNODE 127.0.0.1 $PORT "$TMP/series"/*.dcm
expect_rc 0 "STOREONLY (default host 127.0.0.1) may store"

# ---- permissions: allow = store / none ---------------------------------------------------------
run echoscu -aet STOREONLY -aec SEGNODE 127.0.0.1 $PORT
expect_nonzero "STOREONLY may not echo"
expect_in "$(cat "$TMP/serve.log")" "STOREONLY rejected: the peer is not allowed any of the services it proposed" \
    "the node logs why"
run findscu -S -aet STOREONLY -aec SEGNODE 127.0.0.1 $PORT -k QueryRetrieveLevel=STUDY -k StudyInstanceUID
expect_nonzero "STOREONLY may not find"
run findscu -S -aet LOCAL -aec SEGNODE 127.0.0.1 $PORT -k QueryRetrieveLevel=STUDY -k StudyInstanceUID
expect_rc 0 "LOCAL (allow find) may find"
for what in echo store; do
    if [ $what = echo ]; then run echoscu -aet NOTHING -aec SEGNODE 127.0.0.1 $PORT
    else run storescu -aet NOTHING -aec SEGNODE 127.0.0.1 $PORT "$TMP/series"/*.dcm; fi
    expect_nonzero "NOTHING (allow = none) may not $what"
done
verify "$C" "$TMP/storage" --sent "$TMP/series" --series 1

# ---- check_peer_host = no (SIGHUP) ------------------------------------------------------------
conf no
kill -HUP "$NODE"
reloaded() { grep -q "SIGHUP: reloaded" "$TMP/serve.log"; }
if wait_until 10 reloaded; then ok "SIGHUP with check_peer_host = no"; else fail "no reload logged"; fi
run echoscu -aet REMOTE -aec SEGNODE 127.0.0.1 $PORT
expect_rc 0 "without the check, REMOTE is accepted from 127.0.0.1"
v=$(reject_count peer_host)
if [ "$v" = 4 ]; then ok "reason=\"peer_host\" counted 4 times in all"; else fail "peer_host = $v"; fi

stop_node
expect_rc 0 "node stops cleanly"
finish
