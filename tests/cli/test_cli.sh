#!/bin/bash
# tests/cli/test_cli.sh — the admin side of `segnode` end to end: usage and exit codes,
# `config check` on the shipped example and on broken files, `series`/`jobs`/`status`/`peers`
# with --json on an empty store, `store check` (orphan, recent and stray files), `echo` and
# `send` against DCMTK's storescp, and failures (dead port, a host that drops the connection
# attempt: bounded by acse_timeout, unknown peer, missing job).
# Ports 11300-11309.
# usage: test_cli.sh SEGNODE_BINARY DICOM_DATA_DIR SOURCE_DIR
set -u
SEGNODE=$1
DATA=$2
SRC=$3
. "$(dirname "$0")/lib.sh"

PACS_PORT=11301
DEAD_PORT=11302
HOLE_PORT=11303
PLAIN_PORT=11304

# Nothing from the host may leak into the test.
unset SEGNODE_CONFIG

cat >"$TMP/good.conf" <<CONF
[node]
ae_title = SEGNODE
port = 11300
storage = $TMP/storage
http_port = 0
acse_timeout = 3

[peer PACS]
ae_title = PACS
host = 127.0.0.1
port = $PACS_PORT
allow = echo, store

[peer DEAD]
ae_title = DEADPEER
host = 127.0.0.1
port = $DEAD_PORT
allow = echo

[peer HOLE]
ae_title = HOLE
host = 127.0.0.1
port = $HOLE_PORT

[peer PLAIN]
ae_title = PLAIN
host = 127.0.0.1
port = $PLAIN_PORT
CONF
C="-c $TMP/good.conf"

# ---- usage and exit codes ------------------------------------------------------------------
run "$SEGNODE" --version;        expect_rc 0 "--version"; expect_re "$OUT" '^segnode [0-9]' "--version prints the version"
run "$SEGNODE" --help;           expect_rc 0 "--help"; expect_in "$OUT" "config check" "--help lists commands"
run "$SEGNODE" help send;        expect_rc 0 "help send"; expect_in "$OUT" "usage: segnode send" "help send shows send's usage"
run "$SEGNODE" series --help;    expect_rc 0 "series --help"
run "$SEGNODE";                  expect_rc 2 "no command"
run "$SEGNODE" frobnicate;       expect_rc 2 "unknown command"
run "$SEGNODE" --bogus status;   expect_rc 2 "unknown global option"
run "$SEGNODE" $C series --bogus; expect_rc 2 "unknown subcommand option"
run "$SEGNODE" segment x;        expect_rc 2 "segment without --labels"; expect_in "$ERR" "usage: segnode segment" "segment prints its usage"
run "$SEGNODE" segment --method atlas x; expect_rc 2 "segment --method atlas"; expect_in "$ERR" "needs --atlases" "segment --method atlas asks for --atlases"
mkdir -p "$TMP/one-series" && cp "$DATA/emri_small.dcm" "$TMP/one-series/"
run "$SEGNODE" $C segment --method atlas --atlases a1,a2,a3,a4,a5,a6,a7,a8,a9,a10,a11,a12,a13,a14,a15,a16,a17 \
    --out "$TMP/seg17.dcm" "$TMP/one-series"
expect_rc 2 "segment with 17 atlases"; expect_in "$ERR" "more than 16 atlases" "segment refuses more atlases than it fuses (no part used)"
for k in -1 3 x Auto; do
    run "$SEGNODE" $C segment --method atlas --atlases a1,a2 --select-k $k --out "$TMP/segk.dcm" "$TMP/one-series"
    expect_rc 2 "segment --select-k $k of 2 atlases"; expect_in "$ERR" "--select-k must be auto, all or 1 to 2" "segment refuses --select-k $k before reading the series"
done
run "$SEGNODE" $C segment --labels x.nii --select-k 1 --out "$TMP/segk.dcm" "$TMP/one-series"
expect_rc 2 "segment --select-k without the atlas method"; expect_in "$ERR" "applies to --method atlas" "segment --select-k needs --method atlas"
run "$SEGNODE" $C segment --method atlas --atlases a1,a2 --refine maybe --out "$TMP/segk.dcm" "$TMP/one-series"
expect_rc 2 "segment --refine maybe"; expect_in "$ERR" "--refine must be intensity or none" "segment refuses an unknown --refine before reading the series"
run "$SEGNODE" $C segment --labels x.nii --refine none --out "$TMP/segk.dcm" "$TMP/one-series"
expect_rc 2 "segment --refine without the atlas method"; expect_in "$ERR" "--refine applies to --method atlas" "segment --refine needs --method atlas"
run "$SEGNODE" segment --method net --out "$TMP/segn.dcm" "$TMP/one-series"
expect_rc 2 "segment --method net without --model"; expect_in "$ERR" "needs --model DIR" "segment --method net asks for --model"
run "$SEGNODE" segment --method net --model "$TMP/no-such-bundle" --atlases a1 --out "$TMP/segn.dcm" "$TMP/one-series"
expect_rc 2 "segment --method net --atlases"; expect_in "$ERR" "and no --labels, --atlases" "segment --method net refuses atlas options"
run "$SEGNODE" segment --labels x.nii --model "$TMP/no-such-bundle" --out "$TMP/segn.dcm" "$TMP/one-series"
expect_rc 2 "segment --model without the net method"; expect_in "$ERR" "--model applies to --method net" "segment --model needs --method net"
run "$SEGNODE" segment --method net --model "$TMP/no-such-bundle" --device gpu --out "$TMP/segn.dcm" "$TMP/one-series"
expect_rc 2 "segment --device gpu"; expect_in "$ERR" "--device must be auto, cpu or cuda" "segment refuses an unknown --device before reading the series"
run "$SEGNODE" segment --method both --model "$TMP/no-such-bundle" --out "$TMP/segn.dcm" "$TMP/one-series"
expect_rc 2 "segment --method both without --atlases"; expect_in "$ERR" "needs --model DIR and --atlases" "segment --method both asks for --atlases"
run "$SEGNODE" segment --method both --model "$TMP/no-such-bundle" --atlases a1 --fusion jlf --out "$TMP/segn.dcm" "$TMP/one-series"
expect_rc 2 "segment --method both --fusion"; expect_in "$ERR" "no --labels or --fusion" "segment --method both refuses --fusion"
run "$SEGNODE" segment --method unet --out "$TMP/segn.dcm" "$TMP/one-series"
expect_rc 2 "segment --method unet"; expect_in "$ERR" "unknown method unet" "segment names the methods it knows"
run "$SEGNODE" atlas frob;       expect_rc 2 "atlas with an unknown subcommand"; expect_in "$ERR" "unknown subcommand" "atlas names the bad subcommand"
# atlas names: a route's characters ('.' too), never a leading '.' (the name is a library folder)
for name in .. .hidden 'a/b'; do
    run "$SEGNODE" $C atlas import "$name" "$TMP/one-series" "$TMP/none.dcm"
    expect_rc 2 "atlas import named '$name'"; expect_in "$ERR" "use 1-64 letters, digits" "atlas import refuses the name '$name'"
done
run "$SEGNODE" $C atlas import ct.v1 "$TMP/no-such-series" "$TMP/none.dcm"
expect_rc 1 "atlas import ct.v1 of a missing series"; expect_not_in "$ERR" "use 1-64 letters" "atlas import takes a name with a '.'"
run "$SEGNODE" $C jobs frob;     expect_rc 2 "jobs with an unknown action"
run "$SEGNODE" $C jobs retry abc; expect_rc 2 "jobs retry with a non-numeric ID"
run "$SEGNODE" $C series 1.2.x;  expect_rc 2 "series with an invalid UID"

# ---- config check ----------------------------------------------------------------------------
if [ -f "$SRC/etc/segnode.conf" ]; then
    run "$SEGNODE" config check "$SRC/etc/segnode.conf"
    expect_rc 0 "config check etc/segnode.conf"; expect_in "$OUT" "OK" "etc/segnode.conf is OK"
    run "$SEGNODE" -c "$SRC/etc/segnode.conf" --json config check
    expect_rc 0 "config check --json etc/segnode.conf"; py_check "config check --json ok" "d['ok'] is True and 'node' in d"
else
    echo "# note: $SRC/etc/segnode.conf not there yet, skipping that check"
fi
run "$SEGNODE" $C config check
expect_rc 0 "config check good.conf"; expect_in "$OUT" "OK" "good.conf OK"
expect_in "$OUT" "PACS" "summary names the peers"
run "$SEGNODE" --json $C config check
py_check "config check --json summary" "d['ok'] and d['node']['ae_title']=='SEGNODE' and d['peers']==['PACS','DEAD','HOLE','PLAIN']"
# $SEGNODE_CONFIG is used when there is no -c
SEGNODE_CONFIG="$TMP/good.conf" run "$SEGNODE" config check
expect_rc 0 "config check via SEGNODE_CONFIG"; expect_in "$OUT" "$TMP/good.conf" "SEGNODE_CONFIG names the file"

# the device GPU jobs get here: auto resolves (cpu without a CUDA device); a named GPU that is
# not there is a warning (jobs fail over to the CPU), not an error
run "$SEGNODE" --json $C config check
py_check "config check --json: device resolved" "d['node']['device']=='auto' and d['node']['device_resolved'] in ('cpu','cuda:0')"
sed 's/^\[node\]/[node]\ndevice = cuda:255/' "$TMP/good.conf" >"$TMP/gpu255.conf"
run "$SEGNODE" config check "$TMP/gpu255.conf"
expect_rc 0 "config check: a GPU that is not there is not an error"
expect_in "$OUT" "warning: device cuda:255: " "…but a warning"; expect_in "$OUT" "fail over to the CPU" "saying what jobs do"

# an atlas route without atlases loads (its jobs fail), and config check says so
{ cat "$TMP/good.conf"; printf '\n[route noatlas]\nmodality = MR\nmethod = atlas\n'; } >"$TMP/noatlas.conf"
run "$SEGNODE" config check "$TMP/noatlas.conf"
expect_rc 0 "config check: an atlas route without atlases is not an error"
expect_in "$OUT" "warning: [route noatlas] method atlas without atlases: every job of this route will fail" "…but a warning"

printf '[node]\nae_title = X\nbogus_key = 1\n' >"$TMP/broken1.conf"
run "$SEGNODE" config check "$TMP/broken1.conf"
expect_rc 2 "config check: unknown key"; expect_re "$ERR" 'broken1\.conf:3' "unknown key reported with its line"

printf '[node]\nport = 99999\n' >"$TMP/broken2.conf"
run "$SEGNODE" -c "$TMP/broken2.conf" config check
expect_rc 2 "config check: port out of range"; expect_re "$ERR" 'broken2\.conf:2' "bad port reported with its line"

printf '[peer A]\nae_title = SAME\n\n[peer B]\nae_title = SAME\n' >"$TMP/broken3.conf"
run "$SEGNODE" config check "$TMP/broken3.conf"
expect_rc 2 "config check: duplicate AE title"; expect_re "$ERR" 'broken3\.conf:[0-9]+' "duplicate AE reported with its line"

printf '[nosuchsection]\nx = 1\n' >"$TMP/broken4.conf"
run "$SEGNODE" --json config check "$TMP/broken4.conf"
expect_rc 2 "config check: unknown section"; py_check "config check --json error" "d['ok'] is False and 'broken4.conf:' in d['error']"

run "$SEGNODE" config check "$TMP/does-not-exist.conf"
expect_rc 2 "config check: missing file"

touch "$TMP/a-file"
sed "s#^storage = .*#storage = $TMP/a-file/storage#" "$TMP/good.conf" >"$TMP/badstorage.conf"
run "$SEGNODE" config check "$TMP/badstorage.conf"
expect_rc 2 "config check: storage under a regular file"; expect_in "$ERR" "not a folder" "storage problem explained"

run "$SEGNODE" -c "$TMP/broken1.conf" peers
expect_rc 2 "a broken config stops other commands with exit 2"

# ---- empty store --------------------------------------------------------------------------------
run "$SEGNODE" --json $C series
expect_rc 0 "--json series on an empty store"; py_check "series is []" "d == []"
run "$SEGNODE" $C series
expect_rc 0 "series (table) on an empty store"; expect_in "$OUT" "no series" "empty store says so"
run "$SEGNODE" $C series --json 1.2.3.4
expect_rc 1 "series of an unknown UID"; expect_in "$ERR" "no such series" "unknown series explained"
run "$SEGNODE" $C jobs list --json
expect_rc 0 "jobs list --json"; py_check "jobs is []" "d == []"
run "$SEGNODE" $C jobs
expect_rc 0 "jobs (default list)"
run "$SEGNODE" $C jobs retry 999
expect_rc 1 "jobs retry of a missing job"; expect_in "$ERR" "no such job" "missing job explained"
run "$SEGNODE" $C status
expect_rc 0 "status"; expect_in "$OUT" "SEGNODE" "status shows the AE title"
run "$SEGNODE" $C --json status
expect_rc 0 "status --json"
py_check "status --json shape" "d['node']['ae_title']=='SEGNODE' and d['counts']['series']==0 and d['daemon_running'] is False and set(d['series_by_state'])>={'receiving','stable','done','failed'} and 'pending' in d['jobs_by_state'] and 'schema_version' in d"

# ---- store check (rows and files: tests/store covers missing and resized files) -------------------
run "$SEGNODE" $C store check
expect_rc 0 "store check on an empty store"; expect_in "$OUT" "0 indexed instance(s)" "store check summary"
run "$SEGNODE" $C store frob;    expect_rc 2 "store with an unknown action"
run "$SEGNODE" $C store check --orphan-age 5; expect_rc 2 "store check --orphan-age below 60"
orphan="$TMP/storage/files/ab/ab$(printf '%062d' 1).dcm"
cp "$DATA/MR2_UNCR.dcm" "$orphan"
touch -d '2 hours ago' "$orphan"
cp "$DATA/MR2_UNCR.dcm" "$TMP/storage/files/cd/cd$(printf '%062d' 2).dcm"
echo x >"$TMP/storage/files/ab/notes.txt"
run "$SEGNODE" $C --json store check
expect_rc 1 "store check with an orphan and a stray file"
py_check "store check --json findings" "d['rows']==0 and d['files']==3 and d['orphans']==1 and d['removed']==0 and d['recent']==1 and d['stray']==1 and sorted(f['kind'] for f in d['findings'])==['orphan','recent','stray']"
run "$SEGNODE" $C store check --remove-orphans
expect_rc 1 "store check --remove-orphans (the stray file stays a finding)"; expect_in "$OUT" "(1 removed)" "the orphan is removed"
if [ ! -e "$orphan" ] && [ -e "$TMP/storage/files/ab/notes.txt" ]; then ok "only the orphan was removed"; else fail "store check removed the wrong files"; fi
rm "$TMP/storage/files/ab/notes.txt"
run "$SEGNODE" $C store check
expect_rc 0 "store check with only a recent unindexed file"; expect_in "$OUT" "recent    1" "the recent file is counted, not a finding"
rm "$TMP/storage/files/cd/cd$(printf '%062d' 2).dcm"

# ---- peers ------------------------------------------------------------------------------------
run "$SEGNODE" $C peers --json
expect_rc 0 "peers --json"
py_check "peers --json content" "[p['name'] for p in d]==['PACS','DEAD','HOLE','PLAIN'] and d[0]['ae_title']=='PACS' and d[0]['port']==$PACS_PORT and d[0]['allow']==['echo','store'] and d[0]['host']=='127.0.0.1'"
run "$SEGNODE" $C peers
expect_rc 0 "peers table"; expect_in "$OUT" "127.0.0.1:$PACS_PORT" "peers table shows host:port"

# ---- echo and send against storescp ------------------------------------------------------------
mkdir -p "$TMP/recv"
if ! port_free $PACS_PORT; then echo "port $PACS_PORT busy"; exit 1; fi
storescp -aet PACS +xa -od "$TMP/recv" $PACS_PORT >"$TMP/storescp.log" 2>&1 &
PIDS="$PIDS $!"
if ! wait_dicom $PACS_PORT PACS; then echo "storescp did not start"; cat "$TMP/storescp.log"; exit 1; fi

run "$SEGNODE" $C echo PACS
expect_rc 0 "echo PACS by section name"; expect_re "$OUT" 'ok in [0-9]+ ms' "echo prints the round trip"
run "$SEGNODE" $C --json echo PACS
expect_rc 0 "echo --json"; py_check "echo --json" "d['ok'] is True and d['ms'] >= 0 and d['error'] is None"
run "$SEGNODE" $C echo DEADPEER
expect_rc 1 "echo a dead port (by AE title)"; expect_in "$ERR" "DEAD" "dead peer named in the error"
expect_in "$ERR" "$DEAD_PORT" "dead peer's port in the error"
run "$SEGNODE" $C echo NOPE
expect_rc 2 "echo an unknown peer"; expect_in "$ERR" "no peer 'NOPE'" "unknown peer explained"
# a host that drops connection attempts (here: a listener whose accept queue is full, so the
# kernel drops the SYNs, as a powered-off host or a firewall does): the connect is bounded by
# acse_timeout (3 s here), not the system's ~130 s
/usr/bin/python3 -c '
import socket, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(0)
fill = []
for _ in range(4):
    c = socket.socket(); c.setblocking(False)
    try: c.connect(("127.0.0.1", int(sys.argv[1])))
    except BlockingIOError: pass
    fill.append(c)
print("ready", flush=True); time.sleep(120)' $HOLE_PORT >"$TMP/hole.log" 2>&1 &
PIDS="$PIDS $!"
for _ in $(seq 1 50); do grep -q ready "$TMP/hole.log" 2>/dev/null && break; sleep 0.1; done
t0=$(date +%s)
run "$SEGNODE" $C echo HOLE
t1=$(date +%s)
expect_rc 1 "echo a host that drops the connection attempt"
if [ $((t1 - t0)) -le 8 ]; then ok "it gave up after $((t1 - t0)) s (acse_timeout 3)"; else fail "echo HOLE took $((t1 - t0)) s"; fi
expect_in "$ERR" "HOLE" "the silent peer named in the error"

FILES="$DATA/MR2_UNCR.dcm $DATA/emri_small.dcm $DATA/liver.dcm"
run "$SEGNODE" $C send PACS $FILES
expect_rc 0 "send 3 files"; expect_re "$OUT" 'sent 3 of 3 files to PACS in [0-9.]+ s' "send summary"
n=$(find "$TMP/recv" -type f | wc -l)
if [ "$n" -eq 3 ]; then ok "storescp received 3 files"; else fail "storescp received $n files, expected 3"; fi

# a folder, walked recursively, with a non-DICOM file that is skipped
mkdir -p "$TMP/srcdir/sub"
cp "$DATA/MR2_UNCR.dcm" "$TMP/srcdir/"
cp "$DATA/emri_small.dcm" "$DATA/liver.dcm" "$TMP/srcdir/sub/"
echo "not dicom" >"$TMP/srcdir/README.txt"
run "$SEGNODE" $C --json send PACS "$TMP/srcdir"
expect_rc 0 "send a folder --json"
py_check "send --json summary" "d['files']==3 and d['sent']==3 and d['skipped']==1 and d['failed']==[] and d['error'] is None"

# a file that is not DICOM, named explicitly, fails alone
run "$SEGNODE" $C send PACS "$DATA/MR2_UNCR.dcm" "$TMP/srcdir/README.txt"
expect_rc 1 "send with one bad file"; expect_in "$OUT" "sent 1 of 2 files" "partial send summary"
expect_in "$ERR" "README.txt" "the failed file is named"

run "$SEGNODE" $C send DEAD $FILES
expect_rc 1 "send to a dead port"; expect_in "$OUT" "sent 0 of 3 files" "dead peer summary"
run "$SEGNODE" $C send PACS "$TMP/nothing-here.dcm"
expect_rc 2 "send a missing file"

# a peer that takes uncompressed data only (storescp's default): JPEG-LS is decompressed and
# sent; JPEG 2000 cannot be (DCMTK has no codec for it) and fails with an error that says so
mkdir -p "$TMP/plain"
storescp -aet PLAIN -od "$TMP/plain" $PLAIN_PORT >"$TMP/plain.log" 2>&1 &
PIDS="$PIDS $!"
if ! wait_dicom $PLAIN_PORT PLAIN; then echo "storescp PLAIN did not start"; cat "$TMP/plain.log"; exit 1; fi
run "$SEGNODE" $C send PLAIN "$DATA/emri_small_jpeg_ls_lossless.dcm" "$DATA/MR2_J2KR.dcm"
expect_rc 1 "send JPEG-LS and JPEG 2000 to an uncompressed-only peer"
expect_in "$OUT" "sent 1 of 2 files" "the JPEG-LS file decompressed and sent"
expect_in "$ERR" "does not accept JPEG 2000" "the JPEG 2000 failure names the reason"

finish
