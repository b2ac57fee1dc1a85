#!/bin/bash
# tests/worker/test_kill.sh — crash and late data:
#  - kill -9 of the worker process while its job runs: the job stays `running` until its lease
#    runs out; the next worker re-queues it (the dead run counted) and finishes it exactly once:
#    one SEG series, one outbox row, one file received by the PACS (storescp);
#  - a late instance after the series was processed: the series is received again, the sweeper
#    makes a new job recorded as the replacement of the first; it sends a second SEG (a new
#    series) built from all the instances.
# The node runs no worker (workers = 0); the driver runs it with its own method. Ports 11720-11729.
# usage: test_kill.sh SEGNODE WORKER_DRIVER SEGNODE_PHANTOM
set -u
SEGNODE=$1 DRIVER=$2 PHANTOM=$3
NODE_PORT=11720 NODE_HTTP=11721 PACS_PORT=11722
. "$(dirname "$0")/lib.sh"
need_ports $NODE_PORT $NODE_HTTP $PACS_PORT

phantom mr-t1
clone_series 1
FILES=$(ls "$TMP/s/01"/*.dcm | sort)
LAST=$(echo "$FILES" | tail -1)
mkdir -p "$TMP/scp"
storescp -aet PACS -od "$TMP/scp" $PACS_PORT >"$TMP/scp.log" 2>&1 &
SCP_PID=$!
PIDS="$PIDS $SCP_PID"
wait_dicom $PACS_PORT PACS || { echo "storescp did not start"; exit 1; }
write_conf "workers = 0" "
[route mr]
modality = MR
method = atlas
send_to = PACS"
C="$TMP/node.conf"
node_start
push S1 $(echo "$FILES" | head -n -1) || fail "storescu"
if wait_sql 20 "SELECT count(*) FROM jobs WHERE state=0" "1"; then ok "one pending job"; else fail "jobs: $(sql 'SELECT id, state FROM jobs')"; fi
J1=$(sql "SELECT id FROM jobs")

"$DRIVER" "$C" run --method slow --lease 1000 --wait 120 >"$TMP/driver1.log" 2>&1 &
DPID=$!
PIDS="$PIDS $DPID"
if wait_sql 20 "SELECT state FROM jobs WHERE id=$J1" "1"; then ok "job $J1 running in the driver"; else fail "job not running: $(sql "SELECT state FROM jobs")"; fi
sleep 0.5
kill -9 $DPID; wait $DPID 2>/dev/null
[ "$(sql "SELECT state, attempts FROM jobs WHERE id=$J1")" = "1|1" ] && ok "after kill -9: still running, 1 attempt" || fail "after kill: $(sql "SELECT state, attempts FROM jobs WHERE id=$J1")"

run "$DRIVER" "$C" run --method fast --lease 1000 --expect 1 --wait 30
expect_in "$OUT" "done 1 failed 0 pending 0 running 0" "restarted worker re-ran the job to the end"
[ "$(sql "SELECT state, attempts, error FROM jobs WHERE id=$J1")" = "2|2|" ] && ok "job $J1 done on attempt 2" || fail "job: $(sql "SELECT state, attempts, error FROM jobs WHERE id=$J1")"
[ "$(sql 'SELECT count(*) FROM series WHERE derived_job IS NOT NULL')" = 1 ] && ok "exactly one SEG stored" || fail "SEGs: $(sql 'SELECT count(*) FROM series WHERE derived_job IS NOT NULL')"
[ "$(sql "SELECT count(*) FROM outbox WHERE job_id=$J1")" = 1 ] && ok "exactly one outbox row" || fail "rows: $(sql "SELECT count(*) FROM outbox")"
if wait_sql 20 "SELECT state FROM outbox WHERE job_id=$J1" "2"; then ok "SEG sent"; else fail "outbox: $(sql 'SELECT state, last_error FROM outbox')"; fi
sleep 0.5
N=$(find "$TMP/scp" -type f | wc -l)
[ "$N" = 1 ] && ok "the PACS received exactly one SEG" || fail "PACS holds $N files"

# Late instance: the series gets its last slice after it was processed.
push S1 "$LAST" || fail "storescu late instance"
if wait_sql 20 "SELECT count(*), max(replaces_job) FROM jobs WHERE route='mr' AND state=0" "1|$J1"; then
    ok "late instance: a new job replaces job $J1"
else
    fail "jobs: $(sql 'SELECT id, state, replaces_job FROM jobs')"
fi
J2=$(sql "SELECT max(id) FROM jobs")
run "$DRIVER" "$C" run --method fast --expect 2 --wait 30
expect_in "$OUT" "done 2 failed 0" "replacement job done"
run jobs_json
py_check "jobs --json: replaces_job recorded, send time once sent" \
    "[j['replaces_job'] for j in d if j['id']==$J2]==[$J1] and [j['timings']['replaces_job'] for j in d if j['id']==$J2]==[$J1]"
if wait_sql 20 "SELECT count(*) FROM outbox WHERE state=2" "2"; then ok "replacement SEG sent"; else fail "outbox: $(sql 'SELECT id, state, last_error FROM outbox')"; fi
sleep 0.5
N=$(find "$TMP/scp" -type f | wc -l)
[ "$N" = 2 ] && ok "the PACS holds the SEG and its replacement" || fail "PACS holds $N files"
S=$(sql "SELECT count(DISTINCT series_uid) FROM series WHERE derived_job IS NOT NULL")
[ "$S" = 2 ] && ok "the replacement is a new series" || fail "SEG series: $S"
run jobs_json
py_check "send_ms recorded after delivery" "all(j['timings'].get('send_ms', -1) >= 0 for j in d)"
node_stop
finish
