# tests/cli/lib.sh — helpers shared by the `segnode` CLI tests (sourced, not run).
# run CMD...      runs CMD, leaves $RC, $OUT (stdout) and $ERR (stderr)
# ok/fail MSG     records a check; finish exits 1 if any check failed
PY=/usr/bin/python3
NFAIL=0
NCHECK=0
TMP=$(mktemp -d /tmp/segnode-cli-test.XXXXXX)
PIDS=""

. "$(dirname "${BASH_SOURCE[0]}")/../sanitizer_check.sh"

# cleanup — stop what we started; a sanitizer report in any log under $TMP fails the test.
cleanup() {
    local rc=$?
    for p in $PIDS; do kill "$p" 2>/dev/null; done
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
    echo "       rc=$RC"
    echo "       stdout: $(printf '%s' "$OUT" | head -c 1500)"
    echo "       stderr: $(printf '%s' "$ERR" | head -c 1500)"
}

# expect_rc WANT MSG
expect_rc() { if [ "$RC" = "$1" ]; then ok "$2 (exit $1)"; else fail "$2: expected exit $1"; fi; }

# expect_in HAYSTACK NEEDLE MSG (fixed string)
expect_in() {
    if printf '%s' "$1" | grep -qF -- "$2"; then ok "$3"; else fail "$3: missing '$2'"; fi
}

# expect_re HAYSTACK ERE MSG
expect_re() {
    if printf '%s' "$1" | grep -qE -- "$2"; then ok "$3"; else fail "$3: no match for /$2/"; fi
}

# py_check MSG PYTHON_EXPR — $OUT is parsed as JSON into `d`; the expression must be true.
py_check() {
    if printf '%s' "$OUT" | "$PY" -c "import json,sys; d=json.load(sys.stdin); sys.exit(0 if ($2) else 1)" 2>"$TMP/pyerr"; then
        ok "$1"
    else
        fail "$1: JSON check failed: $2 $(cat "$TMP/pyerr")"
    fi
}

# wait_dicom PORT AET — wait up to 10 s for a DICOM SCP to answer C-ECHO.
wait_dicom() {
    for _ in $(seq 1 100); do
        if echoscu -to 2 -aec "$2" 127.0.0.1 "$1" >/dev/null 2>&1; then return 0; fi
        sleep 0.1
    done
    return 1
}

# port_free PORT — 0 if nothing listens on 127.0.0.1:PORT
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

finish() {
    echo "# $NCHECK checks, $NFAIL failed"
    [ "$NFAIL" -eq 0 ]
    exit $?
}
