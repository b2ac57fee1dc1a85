# tests/outbox/lib.sh — helpers for the outbox tests (sourced, not run): start and stop Orthanc,
# storescp and `segnode serve` on loopback ports, push a phantom MR series into the node with
# storescu, wait for its job, finish the job with the phantom's SEG through outbox_driver (the
# stand-in for the job worker), and wait for outbox rows. Only PIDs started here are killed.
# Expects: SEGNODE DRIVER PHANTOM set by the caller; reuses tests/cli/lib.sh for checks.
. "$(dirname "$0")/../cli/lib.sh"
unset SEGNODE_CONFIG
export TCP_NODELAY=1   # DCMTK's storescu/storescp: no Nagle delay per C-STORE (DCMTK-NOTES.md)

for t in Orthanc storescp storescu echoscu curl; do
    command -v $t >/dev/null 2>&1 || { echo "# $t not installed: skipping"; exit 77; }
done
"$PY" -c "import pydicom" 2>/dev/null || { echo "# $PY has no pydicom: skipping"; exit 77; }
[ -x "$PHANTOM" ] || { echo "# segnode-phantom not built: skipping"; exit 77; }
if "$SEGNODE" serve --help 2>&1 | grep -q "not built"; then echo "# serve not built: skipping"; exit 77; fi

# kill_pid PID — stop one process we started and wait for it
kill_pid() {
    [ -n "$1" ] || return 0
    kill "$1" 2>/dev/null
    for _ in $(seq 1 100); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$1" 2>/dev/null
    wait "$1" 2>/dev/null
    return 0
}

# need_ports P... — fail early when a port of our range is taken
need_ports() {
    for p in "$@"; do
        if ! port_free "$p"; then echo "port $p busy"; exit 1; fi
    done
}

# orthanc_start NAME DICOM_PORT HTTP_PORT — Orthanc with AE PACS and its own folder; sets
# ORTHANC_PID and ORTHANC_URL. The storage survives a stop, so a restart keeps what it has.
orthanc_start() {
    local d="$TMP/orthanc-$1"
    mkdir -p "$d"
    cat >"$d/orthanc.json" <<JSON
{ "Name": "segnode-test-$1", "DicomAet": "PACS", "DicomPort": $2, "HttpPort": $3,
  "StorageDirectory": "$d/db", "IndexDirectory": "$d/db",
  "RemoteAccessAllowed": false, "AuthenticationEnabled": false,
  "DicomCheckCalledAet": false, "UnknownSopClassAccepted": false,
  "DicomAlwaysAllowStore": true, "DicomModalities": {}, "Plugins": [] }
JSON
    Orthanc "$d/orthanc.json" >>"$d/log" 2>&1 &
    ORTHANC_PID=$!
    PIDS="$PIDS $ORTHANC_PID"
    ORTHANC_URL="http://127.0.0.1:$3"
    for _ in $(seq 1 150); do
        if curl -sf -o /dev/null "$ORTHANC_URL/system"; then return 0; fi
        kill -0 $ORTHANC_PID 2>/dev/null || break
        sleep 0.1
    done
    echo "Orthanc did not start"; tail -20 "$d/log"; exit 1
}

# storescp_start NAME AE PORT [storescp options] — sets SCP_PID, files go to $TMP/scp-NAME
storescp_start() {
    local name=$1 ae=$2 port=$3
    shift 3
    mkdir -p "$TMP/scp-$name"
    storescp -aet "$ae" -od "$TMP/scp-$name" "$@" "$port" >"$TMP/scp-$name.log" 2>&1 &
    SCP_PID=$!
    PIDS="$PIDS $SCP_PID"
    wait_dicom "$port" "$ae" || { echo "storescp $name did not start"; cat "$TMP/scp-$name.log"; exit 1; }
}

# node_start — `segnode serve` with $TMP/node.conf (log appended to $TMP/serve.log); sets NODE_PID
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

# phantom N — N phantom subjects (MR T1 + ground-truth SEG) under $TMP/ph
phantom() {
    "$PHANTOM" --out "$TMP/ph" --subjects "$1" --modalities mr-t1 --size small >"$TMP/phantom.log" 2>&1 ||
        { echo "phantom failed"; cat "$TMP/phantom.log"; exit 1; }
}

# push_series SUBJECT AE — storescu the subject's MR series to the node as AE
push_series() {
    storescu -aet "$2" -aec SEGNODE 127.0.0.1 "$NODE_PORT" "$TMP/ph/subject-$1/mr-t1/"*.dcm \
        >"$TMP/storescu.log" 2>&1 || { echo "storescu failed"; cat "$TMP/storescu.log"; exit 1; }
}

# dcm_attr FILE KEYWORD — one attribute via pydicom
dcm_attr() { "$PY" -c "import pydicom,sys; print(getattr(pydicom.dcmread(sys.argv[1], stop_before_pixels=True), sys.argv[2]))" "$1" "$2"; }

# job_of SERIES_UID — wait up to 15 s for the job of a series; echoes its id
job_of() {
    for _ in $(seq 1 150); do
        local id
        id=$("$SEGNODE" -c "$TMP/node.conf" jobs list --json 2>/dev/null |
             "$PY" -c "import json,sys; j=[x['id'] for x in json.load(sys.stdin) if x['series_uid']==sys.argv[1]]; print(j[0] if j else '')" "$1")
        if [ -n "$id" ]; then echo "$id"; return 0; fi
        sleep 0.1
    done
    return 1
}

# push_jobs SUBJECT... — store each phantom subject's MR T1 series from SCANNER and wait for
# its job; the job ids go into the array J, in order (the test fails and ends if one is missing)
push_jobs() {
    local s uid j
    J=()
    for s in "$@"; do
        push_series "$s" SCANNER
        uid=$(dcm_attr "$(ls "$TMP/ph/subject-$s/mr-t1/"*.dcm | head -1)" SeriesInstanceUID)
        j=$(job_of "$uid") || { fail "no job for subject $s"; finish; }
        J+=("$j")
    done
    ok "jobs ${J[*]}"
}

# statusscp_start PORT AE STATUSES — statusscp.py (the peer that answers chosen C-STORE
# statuses) in the background, log in $TMP/statusscp.log; waits until it answers C-ECHO
statusscp_start() {
    "$PY" "$(dirname "${BASH_SOURCE[0]}")/statusscp.py" "$1" "$2" "$3" >"$TMP/statusscp.log" 2>&1 &
    PIDS="$PIDS $!"
    wait_dicom "$1" "$2" || { echo "statusscp did not start"; cat "$TMP/statusscp.log"; exit 1; }
}

# archive_route — write_node_conf's second argument for the tests that send every MR result to
# one peer ARCHIVE on $ARCH_PORT
archive_route() { printf '\n[peer ARCHIVE]\nae_title = ARCHIVE\nport = %s\n[route mr]\nmodality = MR\nsend_to = ARCHIVE\n' "$ARCH_PORT"; }

# finish_job JOB SEG_FILE — store_job_finish through the driver; echoes the number of rows
finish_job() {
    local meta
    meta=$("$PY" - "$2" <<'PYEOF'
import pydicom, sys
d = pydicom.dcmread(sys.argv[1], stop_before_pixels=True)
kv = {"patient_id": d.PatientID, "study_uid": d.StudyInstanceUID, "series_uid": d.SeriesInstanceUID,
      "modality": d.Modality, "sop_class_uid": d.SOPClassUID, "sop_instance_uid": d.SOPInstanceUID,
      "transfer_syntax_uid": d.file_meta.TransferSyntaxUID,
      "series_number": d.get("SeriesNumber", -1), "instance_number": d.get("InstanceNumber", -1)}
print(" ".join("%s=%s" % (k, v) for k, v in kv.items()))
PYEOF
)
    # shellcheck disable=SC2086
    "$DRIVER" finish "$TMP/storage" "$TMP/node.conf" "$1" "$2" $meta 2>>"$TMP/driver.log"
}

# outbox_json JOB — the job's outbox array (JSON) from `segnode jobs list --json`
outbox_json() {
    "$SEGNODE" -c "$TMP/node.conf" jobs list --json |
        "$PY" -c "import json,sys; print(json.dumps([x['outbox'] for x in json.load(sys.stdin) if x['id']==int(sys.argv[1])][0]))" "$1"
}

# wait_rows JOB SECONDS PYEXPR — wait until PYEXPR holds for `rows` (the job's outbox array)
wait_rows() {
    local end=$((SECONDS + $2))
    while [ $SECONDS -le $end ]; do
        if outbox_json "$1" | "$PY" -c "import json,sys; rows=json.load(sys.stdin); sys.exit(0 if ($3) else 1)" 2>/dev/null; then
            return 0
        fi
        sleep 0.2
    done
    return 1
}

# orthanc_count SOP_UID — instances Orthanc holds with that SOP Instance UID
orthanc_count() {
    curl -sf -X POST "$ORTHANC_URL/tools/find" -d "{\"Level\":\"Instance\",\"Query\":{\"SOPInstanceUID\":\"$1\"}}" |
        "$PY" -c "import json,sys; print(len(json.load(sys.stdin)))"
}

# scp_count DIR SOP_UID — files in a storescp folder with that SOP Instance UID
scp_count() {
    "$PY" - "$1" "$2" <<'PYEOF'
import glob, os, pydicom, sys
n = 0
for f in glob.glob(os.path.join(sys.argv[1], "*")):
    try:
        n += pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID == sys.argv[2]
    except Exception:
        pass
print(n)
PYEOF
}

# write_node_conf EXTRA_NODE_KEYS PEERS_AND_ROUTES — $TMP/node.conf for the test's ports
write_node_conf() {
    cat >"$TMP/node.conf" <<CONF
[node]
ae_title = SEGNODE
port = $NODE_PORT
bind = 127.0.0.1
storage = $TMP/storage
http_port = $NODE_HTTP
http_bind = 127.0.0.1
stable_after = 1
sweep_interval_ms = 200
fsync = no
disk_min_free_mb = 0
workers = 0
$1

[peer SCANNER]
ae_title = SCANNER
host = 127.0.0.1
port = ${SCANNER_PORT:-104}
allow = echo, store

$2
CONF
}
