#!/bin/bash
# tests/node/test_limits.sh — association limits: with max_associations = 2 and two associations
# held open, a third is rejected transiently (local limit exceeded) and counted as
# reason="too_many_associations"; once one is released a new one is accepted. While the node
# drains after SIGTERM, a new association is rejected transiently too, the held one finishes
# normally, and the node exits 0. Ports 11320-11329.
# usage: test_limits.sh SEGNODE_BINARY
SEGNODE=$1
HERE=$(cd "$(dirname "$0")" && pwd)
PORT=11320
HTTP_PORT=11321
. "$HERE/lib.sh"
need_ports $PORT $HTTP_PORT

cat >"$TMP/node.conf" <<CONF
[node]
ae_title = SEGNODE
port = $PORT
bind = 127.0.0.1
storage = $TMP/storage
http_port = $HTTP_PORT
max_associations = 2

[peer MODALITY]
ae_title = MODALITY
CONF
start_node "$TMP/node.conf" "$TMP/serve.log"

# hold N: open association N (Verification) and keep it until fd 3N is closed.
hold() {
    mkfifo "$TMP/fifo$1"
    /usr/bin/python3 "$HERE/rawscu.py" hold 127.0.0.1 $PORT MODALITY SEGNODE 60 \
        <"$TMP/fifo$1" >"$TMP/hold$1.out" 2>&1 3>&- 6>&- &   # no inherited fifo writers
    PIDS="$PIDS $!"
    eval "HOLD$1=$!"
    eval "exec $((3 * $1))>\"$TMP/fifo$1\""
    wait_until 20 grep -q held "$TMP/hold$1.out" || { cat "$TMP/hold$1.out"; fail "association $1 not held"; }
}
release() {
    eval "exec $((3 * $1))>&-"
    eval "wait \$HOLD$1"
    RC=$?
}

hold 1
hold 2
ok "two associations held open"
run echoscu -aet MODALITY -aec SEGNODE 127.0.0.1 $PORT
expect_nonzero "a third association fails"
expect_in "$OUT$ERR" "Rejected Transient" "rejected transiently"
expect_in "$OUT$ERR" "Local Limit Exceeded" "reason: local limit exceeded"
v=$(metric 'segnode_associations_rejected_total{reason="too_many_associations"}')
if [ "$v" = 1 ]; then ok "reason=\"too_many_associations\" counted"; else fail "too_many_associations = $v"; fi

release 1
expect_rc 0 "held association 1 released normally"
run echoscu -aet MODALITY -aec SEGNODE 127.0.0.1 $PORT
expect_rc 0 "after a release, a new association is accepted"

# Drain: association 2 is still open; SIGTERM must refuse newcomers, not abort it.
kill -TERM "$NODE"
wait_until 10 grep -q "stopping; draining" "$TMP/serve.log" || fail "the node did not start draining"
run echoscu -aet MODALITY -aec SEGNODE 127.0.0.1 $PORT
expect_nonzero "a new association while draining fails"
expect_in "$OUT$ERR" "Rejected Transient" "rejected transiently while draining"
release 2
expect_rc 0 "the held association was released normally during the drain"
stop_node
expect_rc 0 "the node exits 0 after draining"
expect_in "$(cat "$TMP/serve.log")" "stopped" "the node logs that it stopped"
finish
