#!/bin/bash
# tests/install/test_install.sh — `cmake --install` of the build tree into a temp prefix, and the
# installed node run from there, as an admin would after the README's "Installing" steps:
#   - the layout: bin/, the config (etc/segnode/), the shipped data (share/segnode: label table,
#     model bundles, the example config), the systemd unit and sysusers entry, the docs;
#   - the unit names this prefix's binary and config, and `systemd-analyze verify` accepts it
#     (when systemd-analyze is installed);
#   - the installed binary, with no -c and no environment, finds its own config and the
#     installed label table (not the source tree's), resolves `model = models/NAME` to the
#     installed bundle, prefers an admin's labels.tsv beside a config, and `config check`
#     rejects a missing bundle and a label the table lacks;
#   - a reinstall keeps an edited config;
#   - the installed `segnode serve` starts, answers C-ECHO, owns its storage, and tells a
#     $NOTIFY_SOCKET receiver READY=1, RELOADING=1 / READY=1 on SIGHUP, STOPPING=1 on SIGTERM.
# Ports 11900-11909. usage: test_install.sh CMAKE_COMMAND BUILD_DIR
CMAKE=$1
BUILD=$2
HERE=$(cd "$(dirname "$0")" && pwd)
PORT=11900
. "$HERE/../node/lib.sh"
unset SEGNODE_LABELS
need_ports 11900

P=$TMP/prefix
run "$CMAKE" --install "$BUILD" --prefix "$P"
expect_rc 0 "cmake --install into a temp prefix"
for f in bin/segnode etc/segnode/segnode.conf share/segnode/labels.tsv share/segnode/segnode.conf.example \
         share/segnode/models/mr-t1/model.json share/segnode/models/mr-t1/model.safetensors \
         lib/systemd/system/segnode.service lib/sysusers.d/segnode.conf share/doc/segnode/README.md; do
    if [ -s "$P/$f" ]; then ok "installed $f"; else fail "missing $P/$f"; fi
done
SEGNODE=$P/bin/segnode

UNIT=$P/lib/systemd/system/segnode.service
run cat "$UNIT"
expect_in "$OUT" "ExecStart=$P/bin/segnode -c $P/etc/segnode/segnode.conf serve" "unit: ExecStart names this prefix"
expect_in "$OUT" "ExecStartPre=$P/bin/segnode -c $P/etc/segnode/segnode.conf config check" \
    "unit: the config is checked before serve starts"
expect_not_in "$OUT" "@SEGNODE" "unit: every placeholder replaced"
if command -v systemd-analyze >/dev/null; then
    run systemd-analyze verify "$UNIT"
    if [ "$RC" = 0 ] && [ -z "$ERR" ]; then ok "systemd-analyze verify: no complaint"; else fail "systemd-analyze verify"; fi
else
    echo "skip - systemd-analyze not installed"
fi

# The installed binary on its own: no -c, no environment, run from / (nothing relative to the
# source tree or the working directory can help it).
if [ -e /etc/segnode/segnode.conf ]; then
    echo "skip - /etc/segnode/segnode.conf exists and would be the default config"
else
    run env -C / "$SEGNODE" --json config check
    expect_rc 0 "installed config check, no -c"
    py_check "it reads the installed config" "d['config'] == '$P/etc/segnode/segnode.conf'"
    py_check "and the installed label table" "d['label_table'] == '$P/share/segnode/labels.tsv'"
fi

mkdir -p "$TMP/cfg"
cat >"$TMP/cfg/net.conf" <<CONF
[node]
port = $PORT
bind = 127.0.0.1
storage = $TMP/storage
http_port = 0
disk_min_free_mb = 0
workers = 0

[peer SCANNER]
ae_title = SCANNER
allow = echo, store

[route mr-net]
modality = MR
method = net
model = models/mr-t1
labels = liver, spleen
send_to = @caller
CONF
run env -C / "$SEGNODE" -c "$TMP/cfg/net.conf" --json config check
expect_rc 0 "a net route with model = models/mr-t1"
py_check "the model resolves to the installed bundle" \
    "d['route_models']['mr-net'] == '$P/share/segnode/models/mr-t1'"

# an admin's own table beside the config wins over the shipped one
{ cat "$P/share/segnode/labels.tsv"; printf '200\ttumour\tSCT:49755003:Morphologically Altered Structure\tSCT:108369006:Neoplasm\t-\t255,0,0\n'; } >"$TMP/cfg/labels.tsv"
sed -i 's/^labels = liver, spleen$/labels = liver, tumour/' "$TMP/cfg/net.conf"
run "$SEGNODE" -c "$TMP/cfg/net.conf" --json config check
expect_rc 0 "a route label from the admin's own table"
py_check "the table beside the config is used" "d['label_table'] == '$TMP/cfg/labels.tsv'"
rm "$TMP/cfg/labels.tsv"
run "$SEGNODE" -c "$TMP/cfg/net.conf" config check
expect_rc 2 "without it, the label is unknown"
expect_in "$ERR" "[route mr-net] label tumour is not in the label table $P/share/segnode/labels.tsv" \
    "config check names the label and the table"
sed -i 's/^labels = liver, tumour$/labels = liver, spleen/; s|^model = models/mr-t1$|model = models/mr-t3|' "$TMP/cfg/net.conf"
run "$SEGNODE" -c "$TMP/cfg/net.conf" config check
expect_rc 2 "a route whose bundle does not exist"
expect_in "$ERR" "[route mr-net] model = models/mr-t3: no model bundle at $TMP/cfg/models/mr-t3" \
    "config check names the route and where it looked"
sed -i 's|^model = models/mr-t3$|model = models/mr-t1|' "$TMP/cfg/net.conf"

# a reinstall keeps the admin's edits
echo "; edited by the admin" >>"$P/etc/segnode/segnode.conf"
run "$CMAKE" --install "$BUILD" --prefix "$P"
expect_rc 0 "reinstall"
expect_in "$OUT" "Kept: $P/etc/segnode/segnode.conf" "reinstall says it kept the config"
run tail -n 1 "$P/etc/segnode/segnode.conf"
expect_in "$OUT" "; edited by the admin" "the edited config survives"

# the installed daemon runs, owns its storage and speaks systemd's notify protocol (Type=notify):
# a receiver on $NOTIFY_SOCKET, as systemd would hold it, logs each datagram on one line
"$PY" -c '
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
while True:
    m = s.recv(4096).decode()
    with open(sys.argv[2], "a") as f:
        f.write(m.replace("\n", " | ") + "\n")
' "$TMP/notify.sock" "$TMP/notify.log" &
PIDS="$PIDS $!"
wait_until 5 test -S "$TMP/notify.sock" || fail "the notify receiver did not start"
export NOTIFY_SOCKET=$TMP/notify.sock
start_node "$TMP/cfg/net.conf" "$TMP/node.log"
unset NOTIFY_SOCKET
run echoscu -aet SCANNER -aec SEGNODE 127.0.0.1 "$PORT"
expect_rc 0 "C-ECHO to the installed node"
run cat "$TMP/storage/segnode.lock"
expect_in "$OUT" "$NODE" "segnode.lock holds the daemon's pid"
wait_until 5 grep -q "READY=1" "$TMP/notify.log"
expect_in "$(cat "$TMP/notify.log" 2>/dev/null)" "READY=1 | STATUS=serving AE SEGNODE on 127.0.0.1:$PORT | MAINPID=$NODE" \
    "notify: READY=1 with its status and pid once it listens"
kill -HUP "$NODE"
wait_until 5 grep -q "last SIGHUP" "$TMP/notify.log"
expect_in "$(cat "$TMP/notify.log")" "RELOADING=1" "notify: RELOADING=1 on SIGHUP"
expect_in "$(cat "$TMP/notify.log")" "READY=1 | STATUS=serving; last SIGHUP: configuration reloaded" "notify: READY=1 again after the reload"
stop_node
expect_rc 0 "the installed node exits 0 on SIGTERM"
expect_in "$(cat "$TMP/notify.log")" "STOPPING=1 | STATUS=stopping: draining 0 association(s)" "notify: STOPPING=1 on SIGTERM"
finish
