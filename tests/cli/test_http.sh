#!/bin/bash
# tests/cli/test_http.sh — the daemon's HTTP status server: start `segnode serve`, check
# GET /metrics (Prometheus text 0.0.4: content type, HELP/TYPE per family, every reject reason,
# series/jobs/outbox by state, queue depth), GET /status (JSON), 404 and 405, `segnode status`
# seeing the live daemon, the figures moving after a storescu push, and `store backup` of the
# running daemon's index restored into a second storage that `store check` finds clean.
# Ports 11310-11319.
# Exits 77 (skipped) while `segnode serve` is not built.
# usage: test_http.sh SEGNODE_BINARY DICOM_DATA_DIR SOURCE_DIR
set -u
SEGNODE=$1
DATA=$2
SRC=$3
. "$(dirname "$0")/lib.sh"
unset SEGNODE_CONFIG

run "$SEGNODE" serve --help
if printf '%s' "$OUT$ERR" | grep -q "not built"; then
    echo "# segnode serve is not built in this binary: skipping"
    exit 77
fi

DICOM_PORT=11310
HTTP_PORT=11311
BASE="http://127.0.0.1:$HTTP_PORT"
for p in $DICOM_PORT $HTTP_PORT; do
    if ! port_free $p; then echo "port $p busy"; exit 1; fi
done

cat >"$TMP/node.conf" <<CONF
[node]
ae_title = SEGNODE
port = $DICOM_PORT
bind = 127.0.0.1
storage = $TMP/storage
http_port = $HTTP_PORT
http_bind = 127.0.0.1
stable_after = 1

[peer MODALITY]
ae_title = MODALITY
host = 127.0.0.1
port = 11312
allow = echo, store
CONF
C="-c $TMP/node.conf"

"$SEGNODE" $C serve >"$TMP/serve.log" 2>&1 &
SERVE=$!
PIDS="$PIDS $SERVE"
up=0
for _ in $(seq 1 100); do
    if curl -sf -o /dev/null "$BASE/status"; then up=1; break; fi
    if ! kill -0 $SERVE 2>/dev/null; then break; fi
    sleep 0.1
done
if [ $up -ne 1 ]; then
    echo "segnode serve did not answer on $BASE"; cat "$TMP/serve.log"; exit 1
fi
ok "segnode serve answers on $BASE"

# ---- /metrics ----------------------------------------------------------------------------------
run curl -s -D "$TMP/headers" "$BASE/metrics"
expect_rc 0 "GET /metrics"
HDR=$(cat "$TMP/headers")
expect_re "$HDR" '^HTTP/1\.[01] 200' "/metrics is 200"
expect_re "$HDR" '[Cc]ontent-[Tt]ype: text/plain; version=0\.0\.4' "/metrics content type is exposition 0.0.4"
expect_in "$OUT" "segnode_up 1" "segnode_up"
expect_re "$OUT" 'segnode_build_info\{version="[^"]+"\} 1' "build info"
for r in unknown_calling_ae called_ae not_permitted too_many_associations disk_watermark \
         no_presentation_context protocol shutdown; do
    expect_in "$OUT" "segnode_associations_rejected_total{reason=\"$r\"} " "reject reason $r"
done
for s in receiving stable unrouted processing done failed; do
    expect_in "$OUT" "segnode_series{state=\"$s\"} 0" "series state $s"
done
for s in pending running done failed; do
    expect_in "$OUT" "segnode_jobs{state=\"$s\"} 0" "job state $s"
done
for s in pending sending sent failed; do
    expect_in "$OUT" "segnode_outbox{state=\"$s\"} 0" "outbox state $s"
done
expect_in "$OUT" "segnode_queue_depth 0" "queue depth"
expect_in "$OUT" "segnode_instances_stored 0" "instances stored"
expect_in "$OUT" "segnode_bytes_stored 0" "bytes stored"
expect_in "$OUT" "segnode_associations_active 0" "active associations"
# The whole body must parse as the text format: HELP and TYPE before each family's samples.
printf '%s\n' "$OUT" >"$TMP/metrics.txt"
if "$PY" - "$TMP/metrics.txt" <<'PYEOF'
import re, sys
help_, type_, seen = {}, {}, set()
sample = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([a-zA-Z_][a-zA-Z0-9_]*="[^"\\\n]*",?)*\})? (-?[0-9.eE+-]+|NaN|[+-]Inf)$')
for n, line in enumerate(open(sys.argv[1]).read().splitlines(), 1):
    if not line:
        continue
    if line.startswith('# HELP '):
        name = line.split()[2]; assert name not in help_, f"{n}: second HELP for {name}"; help_[name] = 1
    elif line.startswith('# TYPE '):
        _, _, name, t = line.split(maxsplit=3)
        assert t in ('counter', 'gauge', 'untyped', 'histogram', 'summary'), f"{n}: type {t}"
        assert name not in seen, f"{n}: TYPE after samples of {name}"; type_[name] = t
    else:
        m = sample.match(line); assert m, f"{n}: bad sample line {line!r}"
        name = m.group(1)
        for suf in ('_bucket', '_sum', '_count'):   # a histogram's series share its HELP/TYPE
            if name.endswith(suf) and type_.get(name[:-len(suf)]) == 'histogram':
                name = name[:-len(suf)]
        seen.add(name)
        assert name in help_ and name in type_, f"{n}: {name} has no HELP/TYPE"
        if type_[name] == 'counter':
            assert name.endswith('_total'), f"{n}: counter {name} without _total"
PYEOF
then ok "/metrics parses as text format 0.0.4"; else fail "/metrics does not parse"; fi

# ---- /status, 404, 405 --------------------------------------------------------------------------
run curl -s -D "$TMP/headers" "$BASE/status"
expect_rc 0 "GET /status"
expect_re "$(cat "$TMP/headers")" '[Cc]ontent-[Tt]ype: application/json' "/status is JSON"
py_check "/status content" "d['node']['ae_title']=='SEGNODE' and d['node']['port']==$DICOM_PORT and d['associations']['active']==0 and d['counts']['instances']==0 and d['queue_depth']==0 and d['version'] and d['uptime_s'] is not None and set(d['jobs_by_state'])=={'pending','running','done','failed'} and 'outbox_by_state' in d"
run curl -s -o /dev/null -w '%{http_code}' "$BASE/nope";          expect_in "$OUT" "404" "unknown path is 404"
run curl -s -o /dev/null -w '%{http_code}' -X POST "$BASE/metrics"; expect_in "$OUT" "405" "POST is 405"
run curl -s -o /dev/null -w '%{http_code}' -X DELETE "$BASE/status"; expect_in "$OUT" "405" "DELETE is 405"

# ---- segnode status sees the daemon -------------------------------------------------------------
run "$SEGNODE" $C --json status
expect_rc 0 "status --json with the daemon up"
py_check "status sees the daemon" "d['daemon_running'] is True and d['daemon']['associations']['active']==0"
run "$SEGNODE" $C status
expect_in "$OUT" "running" "status text says the daemon runs"

# ---- the figures move after a push ---------------------------------------------------------------
run storescu -R -aet MODALITY -aec SEGNODE 127.0.0.1 $DICOM_PORT "$DATA/MR2_UNCR.dcm" "$DATA/emri_small.dcm" "$DATA/liver.dcm"
expect_rc 0 "storescu pushes 3 files to the node"
run curl -s "$BASE/metrics"
expect_in "$OUT" "segnode_instances_received_total 3" "instances received counted"
expect_in "$OUT" "segnode_instances_stored 3" "instances stored gauge"
expect_re "$OUT" 'segnode_associations_accepted_total [1-9]' "associations accepted counted"
run storescu -R -aet STRANGER -aec SEGNODE 127.0.0.1 $DICOM_PORT "$DATA/MR2_UNCR.dcm"
run curl -s "$BASE/metrics"
expect_in "$OUT" 'segnode_associations_rejected_total{reason="unknown_calling_ae"} 1' "unknown caller counted as a reject"
run "$SEGNODE" $C --json series
py_check "series lists what arrived" "len(d) >= 1 and sum(s['instances'] for s in d) == 3 and all(s['source_ae']=='MODALITY' for s in d)"

# ---- send stored series by UID (segnode send PEER SERIES_UID...) to a storescp as MODALITY ---------
mkdir -p "$TMP/modality"
storescp -aet MODALITY -od "$TMP/modality" 11312 >"$TMP/storescp.log" 2>&1 &
SCP=$!
for _ in $(seq 1 50); do port_free 11312 || break; sleep 0.1; done
run "$SEGNODE" $C --json series
UIDS=$(printf '%s' "$OUT" | "$PY" -c 'import json,sys; print(" ".join(s["series_uid"] for s in json.load(sys.stdin)))')
run "$SEGNODE" $C --json send MODALITY $UIDS
expect_rc 0 "send the stored series by UID"
py_check "every stored instance is sent" "d['files'] == 3 and d['sent'] == 3 and d['failed'] == []"
n=$(find "$TMP/modality" -type f | wc -l)
if [ "$n" = 3 ]; then ok "the peer received 3 files"; else fail "the peer received $n files"; fi
run "$SEGNODE" $C send MODALITY 1.2.3.4.5.6.7.8.9
expect_rc 2 "send an unknown series UID"; expect_in "$ERR" "neither a file nor a stored series" "says so"
kill $SCP 2>/dev/null; wait $SCP 2>/dev/null

# ---- backup of the index while the daemon runs, restored beside it (README: Backup) ----------------
run "$SEGNODE" $C --json store backup "$TMP/backup/index.sqlite"
expect_rc 1 "store backup into a folder that does not exist fails"
mkdir -p "$TMP/backup"
run "$SEGNODE" $C --json store backup "$TMP/backup/index.sqlite"
expect_rc 0 "store backup while the daemon runs"
py_check "the copy holds the 3 instances" "d['instances'] == 3 and d['series'] >= 1 and d['bytes'] > 0"
run "$SEGNODE" $C store backup "$TMP/backup/index.sqlite"
expect_rc 1 "a second backup to the same file is refused"
expect_in "$ERR" "never overwrites" "and says why"
run "$SEGNODE" $C store backup
expect_rc 2 "store backup without DEST"
mkdir -p "$TMP/restored"
cp "$TMP/backup/index.sqlite" "$TMP/restored/index.sqlite"
cp -a "$TMP/storage/files" "$TMP/restored/"
sed "s#^storage = .*#storage = $TMP/restored#" "$TMP/node.conf" >"$TMP/restored.conf"
run "$SEGNODE" -c "$TMP/restored.conf" --json store check
expect_rc 0 "store check of the restored copy: clean"
py_check "every row of the copy finds its file" "d['rows'] == 3 and d['ok'] == 3 and d['files'] == 3"

# ---- clean stop ------------------------------------------------------------------------------------
kill -TERM $SERVE
for _ in $(seq 1 100); do kill -0 $SERVE 2>/dev/null || break; sleep 0.1; done
if kill -0 $SERVE 2>/dev/null; then RC=-1; fail "serve still running 10 s after SIGTERM"; else
    wait $SERVE; RC=$?; expect_rc 0 "serve exits 0 on SIGTERM"; fi
PIDS=""
finish
