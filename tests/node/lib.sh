# tests/node/lib.sh — helpers shared by the node integration tests (sourced, not run).
# The sourcing script sets SEGNODE (binary), HERE (this folder) and PORT (first of its own
# 10 loopback ports, 11400-11499). Every process a test starts goes into PIDS and is killed by
# PID on exit (never by name); the temp dir $TMP is removed.
#   run CMD...            runs CMD, leaves $RC, $OUT (stdout) and $ERR (stderr)
#   ok/fail MSG           records a check; finish exits 1 if any check failed
#   write_conf            writes $TMP/node.conf: [node] on $PORT (loopback, storage in $TMP,
#                         no HTTP, no watermark, stable_after 60) with stdin's lines added,
#                         and [peer MODALITY] allowed echo, store and find
#   start_node CONF LOG   starts `segnode serve`, waits until its DICOM port accepts; sets NODE
#   stop_node             SIGTERM, waits (30 s), leaves the exit status in $RC
set -u
PY=/usr/bin/python3
NFAIL=0
NCHECK=0
TMP=$(mktemp -d /tmp/segnode-node-test.XXXXXX)
PIDS=""
NODE=""
export TCP_NODELAY=1
unset SEGNODE_CONFIG

. "$(dirname "${BASH_SOURCE[0]}")/../sanitizer_check.sh"

# cleanup — kill what we started; a sanitizer report in any log under $TMP fails the test.
cleanup() {
    local rc=$?
    for p in $PIDS; do kill -9 "$p" 2>/dev/null; done
    for p in $PIDS; do wait "$p" 2>/dev/null; done
    sanitizer_check "$TMP" || rc=1
    rm -rf "$TMP"
    exit $rc
}
trap cleanup EXIT

run() {
    "$@" >"$TMP/out" 2>"$TMP/err"
    RC=$?
    OUT=$(cat "$TMP/out")
    ERR=$(cat "$TMP/err")
}

ok() { NCHECK=$((NCHECK + 1)); echo "ok   - $*"; }
fail() {
    NCHECK=$((NCHECK + 1)); NFAIL=$((NFAIL + 1))
    echo "FAIL - $*"
    echo "       rc=${RC:-}"
    echo "       stdout: $(printf '%s' "${OUT:-}" | tail -c 1500)"
    echo "       stderr: $(printf '%s' "${ERR:-}" | tail -c 1500)"
}
expect_rc() { if [ "$RC" = "$1" ]; then ok "$2 (exit $1)"; else fail "$2: expected exit $1"; fi; }
expect_nonzero() { if [ "$RC" != 0 ]; then ok "$1 (exit $RC)"; else fail "$1: expected a non-zero exit"; fi; }
expect_in() { if printf '%s' "$1" | grep -qF -- "$2"; then ok "$3"; else fail "$3: missing '$2'"; fi; }
expect_not_in() { if printf '%s' "$1" | grep -qF -- "$2"; then fail "$3: unexpected '$2'"; else ok "$3"; fi; }
expect_re() { if printf '%s' "$1" | grep -qE -- "$2"; then ok "$3"; else fail "$3: no match for /$2/"; fi; }

# py_check MSG EXPR — $OUT parsed as JSON into `d`; EXPR must be true.
py_check() {
    if printf '%s' "$OUT" | "$PY" -c "import json,sys; d=json.load(sys.stdin); sys.exit(0 if ($2) else 1)" 2>"$TMP/pyerr"; then
        ok "$1"
    else
        fail "$1: JSON check failed: $2 $(cat "$TMP/pyerr")"
    fi
}

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

write_conf() {
    {
        printf '[node]\nae_title = SEGNODE\nport = %s\nbind = 127.0.0.1\nstorage = %s\nhttp_port = 0\n' "$PORT" "$TMP/storage"
        printf 'disk_min_free_mb = 0\nstable_after = 60\n'
        [ -t 0 ] || cat
        printf '\n[peer MODALITY]\nae_title = MODALITY\nallow = echo, store, find\n'
    } >"$TMP/node.conf"
}

# need_ports P... — fail early (not skip) when a port of this test is taken.
need_ports() {
    for p in "$@"; do
        if ! port_free "$p"; then echo "port $p is busy; cannot run"; exit 1; fi
    done
}

# wait_until TIMEOUT_S CMD... — polls CMD every 0.1 s until it succeeds; 1 on timeout.
wait_until() {
    local limit=$(( $1 * 10 )); shift
    for _ in $(seq 1 "$limit"); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.1
    done
    return 1
}

# start_node CONF LOG [SERVE_OPTION...] — start the daemon; wait (20 s) until its DICOM port
# accepts connections and, when http_port is set, /status answers (the ports are the file's).
start_node() {
    local conf=$1 log=$2 port hport
    shift 2
    port=$(sed -n 's/^port *= *\([0-9]*\).*/\1/p' "$conf" | head -1)
    hport=$(sed -n 's/^http_port *= *\([0-9]*\).*/\1/p' "$conf" | head -1)
    "$SEGNODE" -c "$conf" serve "$@" >>"$log" 2>&1 &
    NODE=$!
    PIDS="$PIDS $NODE"
    for _ in $(seq 1 200); do
        if ! kill -0 "$NODE" 2>/dev/null; then
            echo "segnode serve exited at start:"; cat "$log"; exit 1
        fi
        if ! port_free "$port"; then
            # the HTTP server opens just after the DICOM port: wait for it too when configured
            if [ "${hport:-0}" = 0 ] || curl -sf -o /dev/null "http://127.0.0.1:$hport/status"; then
                return 0
            fi
        fi
        sleep 0.1
    done
    echo "segnode serve did not listen on port $port (http ${hport:-0}) within 20 s:"; cat "$log"; exit 1
}

# stop_node — SIGTERM the node and wait for it (30 s, then SIGKILL); $RC = its exit status.
stop_node() {
    kill -TERM "$NODE" 2>/dev/null
    for _ in $(seq 1 300); do
        if ! kill -0 "$NODE" 2>/dev/null; then break; fi
        sleep 0.1
    done
    kill -9 "$NODE" 2>/dev/null
    wait "$NODE"
    RC=$?
}

# kill9_node — SIGKILL the node and reap it.
kill9_node() {
    kill -9 "$NODE" 2>/dev/null
    wait "$NODE" 2>/dev/null
}

# gen_series DIR N [gen_dicom.py options] — make N CT slices; prints the series UID.
gen_series() {
    local dir=$1 n=$2; shift 2
    "$PY" "$HERE/gen_dicom.py" series "$dir" "$n" "$@"
}

# verify CONF STORAGE [verify_store.py options] — runs the store checks, counting each line.
verify() {
    local conf=$1 storage=$2; shift 2
    "$PY" "$HERE/verify_store.py" "$SEGNODE" "$conf" "$storage" "$@" >"$TMP/verify.out" 2>&1
    while IFS= read -r line; do
        case $line in
        "ok   - "*) ok "${line#ok   - }" ;;
        "FAIL - "*) RC=1; OUT=""; ERR=""; fail "${line#FAIL - }" ;;
        *) echo "       $line" ;;
        esac
    done <"$TMP/verify.out"
}

# series_count CONF — number of series in the index.
series_count() {
    "$SEGNODE" -c "$1" --json series | "$PY" -c 'import json,sys; print(len(json.load(sys.stdin)))'
}

# series_state CONF UID — state of one series.
series_state() {
    "$SEGNODE" -c "$1" --json series "$2" | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["state"])'
}

# acked_uids STORESCU_LOG — SOP Instance UIDs of the files `storescu -v` got Success for.
acked_uids() {
    "$PY" - "$1" <<'PYEOF'
import re, sys, pydicom
cur = None
for line in open(sys.argv[1], errors="replace"):
    m = re.match(r"I: Sending file: (.*)$", line.rstrip("\n"))
    if m:
        cur = m.group(1)
    elif line.startswith("I: Received Store Response (Success)") and cur:
        print(pydicom.dcmread(cur, stop_before_pixels=True).SOPInstanceUID)
        cur = None
PYEOF
}

# metric NAME_WITH_LABELS — value of one /metrics sample (HTTP on $HTTP_PORT).
metric() {
    curl -sf "http://127.0.0.1:$HTTP_PORT/metrics" | awk -v k="$1" '$1 == k { print $2 }'
}

finish() {
    echo "# $NCHECK checks, $NFAIL failed"
    [ "$NFAIL" -eq 0 ]
    exit $?
}
