# tests/net/lib.sh — helpers for the learned-method tests (sourced, not run), on top of
# tests/worker/lib.sh (node, phantom, storescu, SQL on the index): storescp as the PACS, the
# bundle installed under $TMP/etc/models (next to the config, as a relative `model =`), and the
# Dice of a delivered SEG against the phantom's ground truth (tools/seg-dice.py, pydicom only).
# Expects: SEGNODE PHANTOM BUNDLE NODE_PORT NODE_HTTP PACS_PORT set by the caller.
. "$(dirname "$0")/../worker/lib.sh"
TOP=$(cd "$(dirname "$0")/../.." && pwd)
RC= OUT= ERR=
SEGNODE=$(readlink -f "$SEGNODE")
[ -f "$BUNDLE/model.json" ] || { echo "# no bundle at $BUNDLE: skipping"; exit 77; }
mkdir -p "$TMP/etc/models"
cp -r "$BUNDLE" "$TMP/etc/models/tiny"

# pacs_start — storescp as AE PACS on $PACS_PORT, files into $TMP/pacs
pacs_start() {
    mkdir -p "$TMP/pacs"
    storescp -aet PACS -od "$TMP/pacs" "$PACS_PORT" >"$TMP/pacs.log" 2>&1 &
    PACS_PID=$!
    PIDS="$PIDS $PACS_PID"
    wait_dicom "$PACS_PORT" PACS || { echo "storescp did not start"; cat "$TMP/pacs.log"; exit 1; }
}

# conf_move — the config goes to $TMP/etc/node.conf so that `model = models/tiny` is relative to
# the config's folder; $TMP/node.conf stays a link for the worker lib's helpers.
conf_move() {
    mv "$TMP/node.conf" "$TMP/etc/node.conf"
    ln -s "$TMP/etc/node.conf" "$TMP/node.conf"
}

# node_start_elsewhere — `segnode serve` started from / so that a relative model path can only
# resolve through the config file's folder
node_start_elsewhere() {
    (cd / && exec "$SEGNODE" -c "$TMP/etc/node.conf" serve) >>"$TMP/serve.log" 2>&1 &
    NODE_PID=$!
    PIDS="$PIDS $NODE_PID"
    for _ in $(seq 1 100); do
        if echoscu -to 2 -aet SCANNER -aec SEGNODE 127.0.0.1 "$NODE_PORT" >/dev/null 2>&1; then return 0; fi
        kill -0 "$NODE_PID" 2>/dev/null || break
        sleep 0.1
    done
    echo "segnode serve did not start"; tail -30 "$TMP/serve.log"; exit 1
}

# pacs_seg_for SERIES_UID — the SEG file in $TMP/pacs whose Referenced Series is SERIES_UID
pacs_seg_for() {
    "$PY" - "$TMP/pacs" "$1" <<'PYEOF'
import glob, sys, pydicom
for f in sorted(glob.glob(sys.argv[1] + "/*")):
    try:
        ds = pydicom.dcmread(f, stop_before_pixels=True)
    except Exception:
        continue
    if ds.get("Modality") == "SEG" and ds.ReferencedSeriesSequence[0].SeriesInstanceUID == sys.argv[2]:
        print(f)
        break
PYEOF
}

# wait_seg SECONDS SERIES_UID — until storescp holds its SEG (sets SEG); returns 1 at once when
# the series' job failed (state 3)
wait_seg() {
    SEG=
    for _ in $(seq 1 $(($1 * 2))); do
        SEG=$(pacs_seg_for "$2")
        [ -n "$SEG" ] && return 0
        [ "$(sql "SELECT count(*) FROM jobs j JOIN series s ON s.id=j.series_id WHERE s.series_uid='$2' AND j.state=3" 2>/dev/null)" = 0 ] || return 1
        sleep 0.5
    done
    return 1
}

# dice REF_SEG TEST_SEG NAME — Dice of one segment (by code meaning), "0" when absent
dice() {
    "$PY" "$TOP/tools/seg-dice.py" "$1" "$2" | "$PY" -c '
import re, sys
found = "0"
for line in sys.stdin.read().splitlines():
    m = re.match(r"(.*?)\s+Dice ([0-9.]+)", line)
    if m and m.group(1).lower() == sys.argv[1].lower():
        found = m.group(2)
print(found)' "$3"
}

# ge A B — 0 when A >= B (floats)
ge() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a >= b) }'; }
