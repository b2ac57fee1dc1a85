#!/bin/bash
# tests/worker/test_machinery.sh — the worker's machinery with the driver's own method on a live
# node's storage (the node runs no worker: workers = 0, it receives, sweeps and sends):
#  - 20 series arrive at once from 4 senders; 20 pending jobs;
#  - claim atomicity: 4 threads claim concurrently, every job exactly once (then released);
#  - lease expiry -> pending with the run counted; out of runs -> failed; retry;
#  - the worker runs all 20 (fake method): each done, one outbox row, timings recorded with
#    every stage, started in arrival order; /metrics histograms count them;
#  - CPU fallback: a GPU method failing with SN_EDEVICE on cuda:0 reruns on the CPU, recorded;
#  - timeout: a method that overruns job_timeout fails the job "timed out after 1 s";
#  - `segnode jobs cancel`: done refused, pending failed at once, running stopped by its worker.
# Ports 11710-11719.
# usage: test_machinery.sh SEGNODE WORKER_DRIVER SEGNODE_PHANTOM
set -u
SEGNODE=$1 DRIVER=$2 PHANTOM=$3
NODE_PORT=11710 NODE_HTTP=11711 PACS_PORT=11712
. "$(dirname "$0")/lib.sh"
need_ports $NODE_PORT $NODE_HTTP

phantom mr-t1
clone_series 20
write_conf "workers = 0" "
[route mr]
modality = MR
method = atlas
send_to = PACS"
C="$TMP/node.conf"
node_start
for s in 1 2 3 4; do
    ( for k in $(seq $s 4 20); do push S$s "$TMP/s/$(printf %02d $k)"/*.dcm || echo "push $k failed"; done ) &
    SENDERS="${SENDERS:-} $!"
done
for p in $SENDERS; do wait $p; done
if wait_sql 30 "SELECT count(*) FROM jobs WHERE state=0" "20"; then ok "20 series from 4 senders: 20 pending jobs"; else fail "jobs: $(sql 'SELECT state, count(*) FROM jobs GROUP BY state')"; fi

run "$DRIVER" "$C" claim-race 4
expect_rc 0 "claim race: 4 threads"
expect_in "$OUT" "claimed 20 dup 0 running 20 pending 0" "every job claimed exactly once"
[ "$(sql 'SELECT count(*) FROM jobs WHERE state=0 AND attempts=0')" = 20 ] && ok "released: 20 pending, runs not counted" || fail "after release: $(sql 'SELECT state, attempts, count(*) FROM jobs GROUP BY 1, 2')"

run "$DRIVER" "$C" recover
expect_rc 0 "lease expiry and recovery"
printf '%s\n' "$OUT" | sed 's/^/    /'

run "$DRIVER" "$C" run --threads 1 --expect 20 --wait 90
expect_rc 0 "worker run"
expect_in "$OUT" "done 20 failed 0 pending 0 running 0" "all 20 jobs done"
[ "$(sql 'SELECT count(*) FROM outbox')" = 20 ] && ok "one outbox row per job" || fail "outbox rows: $(sql 'SELECT count(*) FROM outbox')"
[ "$(sql 'SELECT count(*) FROM series WHERE derived_job IS NOT NULL')" = 20 ] && ok "20 SEG series stored" || fail "SEG series: $(sql 'SELECT count(*) FROM series WHERE derived_job IS NOT NULL')"
# Arrival order: jobs started in (created, series first received) order.
ORDER=$(sql "SELECT j.id FROM jobs j JOIN series s ON s.id=j.series_id ORDER BY j.created_ms, s.first_received_ms, j.id" | tr '\n' ' ')
STARTED=$(sql "SELECT id FROM jobs ORDER BY started_ms, id" | tr '\n' ' ')
[ "$ORDER" = "$STARTED" ] && ok "jobs started in arrival order" || fail "arrival order: $ORDER / started: $STARTED"
run jobs_json
py_check "jobs --json: timings with every stage" \
    "len(d)==20 and all(all(k in j['timings'] for k in ('wait_stable_ms','queue_ms','load_ms','preprocess_ms','method_ms','write_seg_ms','store_ms','total_ms')) and 'register_ms' in j['timings']['method'] and j['device']=='cpu' and j['worker'].startswith('driver/') for j in d)"
run curl -sf "http://127.0.0.1:$NODE_HTTP/metrics"
expect_in "$OUT" 'segnode_job_stage_seconds_count{stage="load"} 20' "/metrics: load histogram counts 20 jobs"
expect_in "$OUT" 'segnode_job_stage_seconds_bucket{stage="method",le="+Inf"} 20' "/metrics: method histogram"

# CPU fallback
J1=$(sql "SELECT min(id) FROM jobs")
run "$SEGNODE" -c "$C" jobs retry "$J1"
run "$DRIVER" "$C" run --method devfail --device cuda:0 --wait 60
expect_in "$OUT" "fallbacks 1" "GPU failure: ran again on the CPU"
D=$(sql "SELECT state, device FROM jobs WHERE id=$J1")
case "$D" in "2|cpu (fallback from cuda:0: simulated CUDA failure on cuda:0)") ok "fallback recorded: $D";; *) fail "job $J1: $D";; esac

# Timeout
J2=$(sql "SELECT max(id) FROM jobs")
run "$SEGNODE" -c "$C" jobs retry "$J2"
run "$DRIVER" "$C" run --method slow --job-timeout 1 --lease 600 --wait 30
E=$(sql "SELECT state, error FROM jobs WHERE id=$J2")
[ "$E" = "3|timed out after 1 s" ] && ok "overrunning job: $E" || fail "job $J2: $E"

# Cancel (segnode jobs cancel): a done job is refused, a pending one fails at once, a running
# one is stopped by its worker at the next lease renewal and stays failed with the reason
J3=$(sql "SELECT min(id) + 1 FROM jobs")
run "$SEGNODE" -c "$C" jobs cancel "$J3"
expect_rc 1 "cancel a done job: refused"; expect_in "$ERR" "already done" "and says why"
run "$SEGNODE" -c "$C" jobs retry "$J3"
run "$SEGNODE" -c "$C" --json jobs cancel "$J3"
expect_rc 0 "cancel a pending job"
E=$(sql "SELECT state, error FROM jobs WHERE id=$J3")
[ "$E" = "3|cancelled by an admin (segnode jobs cancel)" ] && ok "pending job cancelled: $E" || fail "job $J3: $E"
run "$SEGNODE" -c "$C" jobs retry "$J3"
J4=$((J3 + 1))
run "$SEGNODE" -c "$C" jobs retry "$J4"
# one worker thread, two slow jobs: the first is cancelled while it runs; the worker must drop
# it and go on to the second (which is then cancelled too, ending the run)
ENDED=$(sql "SELECT count(*) FROM jobs WHERE state IN (2, 3)")   # --expect counts every ended job
"$DRIVER" "$C" run --method slow --lease 600 --wait 60 --expect $((ENDED + 2)) >"$TMP/cancel.log" 2>&1 &
DRV=$!
if wait_sql 20 "SELECT count(*) FROM jobs WHERE id IN ($J3, $J4) AND state=1" 1; then ok "a slow job runs"; else fail "no job ran: $(cat "$TMP/cancel.log")"; fi
JR=$(sql "SELECT id FROM jobs WHERE id IN ($J3, $J4) AND state=1")
JO=$(( JR == J3 ? J4 : J3 ))
run "$SEGNODE" -c "$C" jobs cancel "$JR"
expect_rc 0 "cancel the running job"
if wait_sql 10 "SELECT state FROM jobs WHERE id=$JO" 1; then ok "its worker dropped it and runs the next"; else fail "job $JO did not start: $(cat "$TMP/cancel.log")"; fi
CL=$(cat "$TMP/cancel.log"); expect_in "$CL" "job $JR: lease lost (taken over or changed by an admin); abandoned" "the worker logs why it stopped"
E=$(sql "SELECT state, error FROM jobs WHERE id=$JR")
[ "$E" = "3|cancelled by an admin (segnode jobs cancel)" ] && ok "the cancelled job stays failed with the reason: $E" || fail "job $JR: $E"
run "$SEGNODE" -c "$C" jobs cancel "$JO"
wait "$DRV"
E=$(sql "SELECT count(*) FROM jobs WHERE id IN ($J3, $J4) AND state=3")
[ "$E" = 2 ] && ok "both cancelled" || fail "cancelled: $E"
# /metrics keeps the stage histograms between scrapes and rebuilds them when jobs end or change
N_DONE=$(sql "SELECT count(*) FROM jobs WHERE state=2")
run curl -sf "http://127.0.0.1:$NODE_HTTP/metrics"
expect_in "$OUT" "segnode_job_stage_seconds_count{stage=\"load\"} $N_DONE" "/metrics: the histograms follow the jobs that are done now ($N_DONE)"
run "$SEGNODE" -c "$C" jobs cancel 999999
expect_rc 1 "cancel an unknown job"; expect_in "$ERR" "no such job" "is named"

run echoscu -aet SCANNER -aec SEGNODE 127.0.0.1 $NODE_PORT
expect_rc 0 "node still serving"
node_stop
finish
