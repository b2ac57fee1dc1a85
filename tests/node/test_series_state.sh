#!/bin/bash
# tests/node/test_series_state.sh — the series state machine on a live node:
#  - stable_after = 2: a CT series matching two routes (the first with continue = yes) stays
#    `receiving` right after the transfer, becomes `stable` after the quiet period, and
#    `segnode jobs list --json` shows exactly one pending job per matching route;
#  - an MR series that matches no route becomes `unrouted`, with no job;
#  - a peer with stable_on_release = yes (node stable_after raised to 600 by SIGHUP): its
#    series is stable right at A-RELEASE, with its job;
#  - retention_days = 1 after the series were aged two days: at start the node deletes the
#    unrouted series, rows and files, and keeps the two with pending jobs;
#  - `segnode series delete` of a series with pending jobs, on the running node;
#  - `segnode series route` of an unrouted series: no match, a named route, no second job for a
#    queued route, an unknown route. Ports 11495-11499.
# usage: test_series_state.sh SEGNODE_BINARY
SEGNODE=$1
HERE=$(cd "$(dirname "$0")" && pwd)
PORT=11495
. "$HERE/lib.sh"
need_ports $PORT

conf() {
cat >"$TMP/node.conf" <<CONF
[node]
ae_title = SEGNODE
port = $PORT
bind = 127.0.0.1
storage = $TMP/storage
http_port = 0
disk_min_free_mb = 0
stable_after = $1
sweep_interval_ms = 100
workers = 0
retention_days = ${2:-0}

[peer SCANNER]
ae_title = SCANNER

[peer FASTCT]
ae_title = FASTCT
stable_on_release = yes

[route ct-liver]
modality = CT
method = atlas
labels = liver
continue = yes

[route ct-all]
modality = CT
method = atlas

[route mr-from-nobody]
modality = MR
calling_ae = NOBODY
method = atlas
CONF
}
conf 2
C="$TMP/node.conf"
CT=$(gen_series "$TMP/ct" 5 --rows 32 --patient "STATE^CT" --seed 91)
MR=$(gen_series "$TMP/mr" 5 --rows 32 --patient "STATE^MR" --modality MR --seed 92)
REL=$(gen_series "$TMP/rel" 5 --rows 32 --patient "STATE^RELEASE" --seed 93)
start_node "$C" "$TMP/serve.log"

run storescu -aet SCANNER -aec SEGNODE 127.0.0.1 $PORT "$TMP/ct"/*.dcm "$TMP/mr"/*.dcm
expect_rc 0 "storescu of a CT and an MR series"
st=$(series_state "$C" "$CT")
if [ "$st" = receiving ]; then ok "CT series is receiving during the quiet period"; else fail "CT state right after the transfer: $st"; fi
is_state() { [ "$(series_state "$C" "$1")" = "$2" ]; }
if wait_until 15 is_state "$CT" stable; then ok "CT series becomes stable after stable_after = 2"; else fail "CT state: $(series_state "$C" "$CT")"; fi
if wait_until 15 is_state "$MR" unrouted; then ok "MR series (no route matches) becomes unrouted"; else fail "MR state: $(series_state "$C" "$MR")"; fi

run "$SEGNODE" -c "$C" --json jobs list
expect_rc 0 "segnode --json jobs list"
py_check "one pending atlas job per matching route (ct-liver, ct-all) for the CT series, none for MR" \
    "sorted((j['route'], j['state'], j['method'], j['series_uid'], j['calling_ae']) for j in d) == [('ct-all','pending','atlas','$CT','SCANNER'), ('ct-liver','pending','atlas','$CT','SCANNER')]"
run "$SEGNODE" -c "$C" --json series "$CT"
py_check "segnode series UID --json lists the 2 jobs" "len(d['jobs']) == 2 and d['state'] == 'stable'"

# ---- stable_on_release ------------------------------------------------------------------------
conf 600
kill -HUP "$NODE"
if wait_until 10 grep -q "SIGHUP: reloaded" "$TMP/serve.log"; then ok "SIGHUP: stable_after = 600"; else fail "no reload"; fi
run storescu -aet FASTCT -aec SEGNODE 127.0.0.1 $PORT "$TMP/rel"/*.dcm
expect_rc 0 "storescu from FASTCT (stable_on_release = yes)"
# the node completes the series just after acknowledging the A-RELEASE: poll briefly (far
# below the 600 s quiet period)
if wait_until 5 is_state "$REL" stable; then ok "FASTCT series is stable at release"; else fail "state: $(series_state "$C" "$REL")"; fi
run "$SEGNODE" -c "$C" --json jobs list
py_check "its 2 jobs are pending (4 jobs in all)" \
    "len(d) == 4 and sorted(j['route'] for j in d if j['series_uid'] == '$REL') == ['ct-all', 'ct-liver'] and all(j['state'] == 'pending' for j in d)"
verify "$C" "$TMP/storage" --sent "$TMP/ct" --sent "$TMP/mr" --sent "$TMP/rel" --series 3
stop_node
expect_rc 0 "SIGTERM: node exits 0"

# ---- retention ----------------------------------------------------------------------------------
# All three series last received two days ago, retention_days = 1: at start the node deletes
# the unrouted MR series (rows and files); the CT series have pending jobs and stay.
conf 600 1
sqlite3 "$TMP/storage/index.sqlite" "UPDATE series SET last_received_ms = last_received_ms - 2*86400000"
start_node "$C" "$TMP/serve.log"
gone() { [ "$(series_count "$C")" = 2 ]; }
if wait_until 10 gone; then ok "retention deletes the finished series at start"; else fail "series left: $(series_count "$C")"; fi
run "$SEGNODE" -c "$C" --json series
py_check "the two series with pending jobs stay" "sorted(x['series_uid'] for x in d) == sorted(['$CT', '$REL'])"
n=$(find "$TMP/storage/files" -type f | wc -l)
if [ "$n" = 10 ]; then ok "the MR series' 5 files are gone, 10 remain"; else fail "$n files under files/, expected 10"; fi
expect_re "$(cat "$TMP/serve.log")" "retention: deleted 1 series \(5 instances, [0-9]+ bytes\)" "the node logs the deletion"
run "$SEGNODE" -c "$C" store check
expect_rc 0 "store check is clean after retention"
# an admin deletes the CT series (its jobs pending) while the node runs
run "$SEGNODE" -c "$C" series delete "$CT"
expect_rc 0 "segnode series delete"; expect_in "$OUT" "5 instance(s)" "delete reports the instances"
run "$SEGNODE" -c "$C" --json jobs list
py_check "its jobs went with it" "sorted(j['series_uid'] for j in d) == ['$REL', '$REL']"
n=$(find "$TMP/storage/files" -type f | wc -l)
if [ "$n" = 5 ]; then ok "its files are gone, 5 remain"; else fail "$n files under files/, expected 5"; fi
run "$SEGNODE" -c "$C" series delete "$CT"
expect_rc 1 "deleting it again"; expect_in "$ERR" "no such series" "a missing series is named"
run "$SEGNODE" -c "$C" series delete not-a-uid
expect_rc 2 "series delete with an invalid UID"

# ---- routing a stored series again (segnode series route) ---------------------------------------
MR2=$(gen_series "$TMP/mr2" 3 --rows 32 --patient "STATE^MR2" --modality MR --seed 94)
run storescu -aet FASTCT -aec SEGNODE 127.0.0.1 $PORT "$TMP/mr2"/*.dcm
expect_rc 0 "storescu of an MR series from FASTCT (complete at release)"
if wait_until 5 is_state "$MR2" unrouted; then ok "it is unrouted"; else fail "state: $(series_state "$C" "$MR2")"; fi
run "$SEGNODE" -c "$C" series route "$MR2"
expect_rc 1 "series route: still no route matches"; expect_in "$OUT" "no route matches" "and it says so"
run "$SEGNODE" -c "$C" --json series route "$MR2" ct-all
expect_rc 0 "series route UID ct-all: the admin names a route"
py_check "one job created" "d['jobs_created'] == 1 and d['routes_already_queued'] == 0"
if is_state "$MR2" stable; then ok "the series is stable again, its job pending"; else fail "state: $(series_state "$C" "$MR2")"; fi
run "$SEGNODE" -c "$C" series route "$MR2" ct-all
expect_rc 1 "the same route again"; expect_in "$OUT" "already has a job pending or running" "is not queued twice"
run "$SEGNODE" -c "$C" series route "$REL"
expect_rc 1 "a series whose matching routes are all queued"
run "$SEGNODE" -c "$C" series route "$MR2" nope
expect_rc 1 "an unknown route"; expect_in "$ERR" "no [route nope]" "is named"
run "$SEGNODE" -c "$C" series route not-a-uid
expect_rc 2 "series route with an invalid UID"
run "$SEGNODE" -c "$C" --json jobs list
py_check "the MR series has its one ct-all job beside the two of the other" \
    "sorted((j['series_uid'], j['route']) for j in d) == sorted([('$MR2','ct-all'), ('$REL','ct-all'), ('$REL','ct-liver')])"
stop_node
expect_rc 0 "SIGTERM: node exits 0 after retention"
finish
