# tests/worker/lib.sh — helpers for the worker tests (sourced, not run): the phantom, copies of
# its MR series as new series, `segnode serve` with $TMP/node.conf, storescu senders, job and
# series queries through `segnode ... --json` and the index. Only PIDs started here are killed.
# Expects: SEGNODE DRIVER PHANTOM NODE_PORT NODE_HTTP set by the caller.
. "$(dirname "$0")/../cli/lib.sh"
unset SEGNODE_CONFIG
export TCP_NODELAY=1

for t in storescp storescu echoscu curl; do
    command -v $t >/dev/null 2>&1 || { echo "# $t not installed: skipping"; exit 77; }
done
"$PY" -c "import pydicom" 2>/dev/null || { echo "# $PY has no pydicom: skipping"; exit 77; }
[ -x "$PHANTOM" ] || { echo "# segnode-phantom not built: skipping"; exit 77; }

kill_pid() {
    [ -n "$1" ] || return 0
    kill "$1" 2>/dev/null
    for _ in $(seq 1 100); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$1" 2>/dev/null
    wait "$1" 2>/dev/null
    return 0
}

need_ports() {
    for p in "$@"; do
        if ! port_free "$p"; then echo "port $p busy"; exit 1; fi
    done
}

# write_conf NODE_EXTRA ROUTES — [node] + peers SCANNER, S1-S4, PACS ($PACS_PORT) + ROUTES
write_conf() {
    cat >"$TMP/node.conf" <<CONF
[node]
ae_title = SEGNODE
port = $NODE_PORT
bind = 127.0.0.1
storage = $TMP/storage
http_port = $NODE_HTTP
stable_after = 1
sweep_interval_ms = 200
fsync = no
disk_min_free_mb = 0
outbox_retry_base = 1
$1

[peer SCANNER]
ae_title = SCANNER
[peer S1]
ae_title = S1
[peer S2]
ae_title = S2
[peer S3]
ae_title = S3
[peer S4]
ae_title = S4
[peer PACS]
ae_title = PACS
port = ${PACS_PORT:-11799}

$2
CONF
}

node_start() {
    "$SEGNODE" -c "$TMP/node.conf" serve >>"$TMP/serve.log" 2>&1 &
    NODE_PID=$!
    PIDS="$PIDS $NODE_PID"
    for _ in $(seq 1 100); do
        if echoscu -to 2 -aet SCANNER -aec SEGNODE 127.0.0.1 "$NODE_PORT" >/dev/null 2>&1; then return 0; fi
        kill -0 "$NODE_PID" 2>/dev/null || break
        sleep 0.1
    done
    echo "segnode serve did not start"; tail -30 "$TMP/serve.log"; exit 1
}
node_stop() { kill_pid "$NODE_PID"; NODE_PID=; }

# phantom MODALITIES — one subject under $TMP/ph
phantom() {
    "$PHANTOM" --out "$TMP/ph" --subjects 1 --modalities "$1" --size small >"$TMP/phantom.log" 2>&1 ||
        { echo "phantom failed"; cat "$TMP/phantom.log"; exit 1; }
}

# clone_series N — N copies of the phantom MR series as new series under $TMP/s/NN (new
# Series/SOP Instance UIDs, Series Description "copy NN")
clone_series() {
    "$PY" - "$TMP/ph/subject-001/mr-t1" "$TMP/s" "$1" <<'PYEOF'
import os, sys, glob, pydicom
from pydicom.uid import generate_uid
src, out, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
files = sorted(glob.glob(src + "/*.dcm"))
for k in range(1, n + 1):
    d = os.path.join(out, "%02d" % k); os.makedirs(d, exist_ok=True)
    suid = generate_uid()
    for f in files:
        ds = pydicom.dcmread(f)
        ds.SeriesInstanceUID = suid
        ds.SeriesDescription = "copy %02d" % k
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.save_as(os.path.join(d, os.path.basename(f)))
PYEOF
}

# push AE FILES... — storescu to the node as AE
push() {
    local ae=$1; shift
    storescu -aet "$ae" -aec SEGNODE 127.0.0.1 "$NODE_PORT" "$@" >>"$TMP/storescu.log" 2>&1
}

dcm_attr() { "$PY" -c "import pydicom,sys; print(getattr(pydicom.dcmread(sys.argv[1], stop_before_pixels=True), sys.argv[2]))" "$1" "$2"; }

# sql QUERY — one query on the node's index (read-only), rows as "a|b|c" lines
sql() { "$PY" -c "import sqlite3,sys; c=sqlite3.connect('file:'+sys.argv[1]+'?mode=ro', uri=True, timeout=10); [print('|'.join('' if v is None else str(v) for v in r)) for r in c.execute(sys.argv[2])]" "$TMP/storage/index.sqlite" "$1"; }

# wait_sql SECONDS QUERY WANT — until the query prints WANT
wait_sql() {
    for _ in $(seq 1 $(($1 * 10))); do
        [ "$(sql "$2" 2>/dev/null)" = "$3" ] && return 0
        sleep 0.1
    done
    return 1
}

jobs_json() { "$SEGNODE" -c "$TMP/node.conf" jobs list --json; }
