#!/bin/bash
# tests/hardening/test_disk_full.sh — storage fills up during a transfer (issue 10). Storage is
# on an 8 MiB tmpfs the test mounts (a loop-mounted ext4 image if tmpfs is refused; exit 77 if
# neither is allowed), mostly taken by a filler file; disk_min_free_mb = 0 so the watermark does
# not pre-empt the failure. A 40-slice series (~5 MiB) is sent with storescu:
#  - the instances answered Success are all indexed, with the bytes that were sent;
#  - the instance that hit the full disk gets 0xA700 (out of resources) with an error comment;
#  - no partial file or row remains (files == rows, tmp/ empty);
#  - the node keeps serving (C-ECHO); after the filler is deleted the whole series goes through.
# Ports 11820-11829. usage: test_disk_full.sh SEGNODE_BINARY
SEGNODE=$1
HERE=$(cd "$(dirname "$0")/../node" && pwd)
PORT=11820
HTTP_PORT=11821
. "$HERE/lib.sh"
need_ports $PORT $HTTP_PORT

MNT="$TMP/mnt"
mkdir -p "$MNT"
MOUNTED=""
umount_it() { if [ -n "$MOUNTED" ]; then umount "$MNT" 2>/dev/null || umount -l "$MNT" 2>/dev/null; fi; }
trap 'for p in $PIDS; do kill -9 "$p" 2>/dev/null; done; for p in $PIDS; do wait "$p" 2>/dev/null; done; umount_it; rm -rf "$TMP"' EXIT
if mount -t tmpfs -o size=8m tmpfs "$MNT" 2>"$TMP/mount.err"; then
    MOUNTED=tmpfs
elif command -v mkfs.ext4 >/dev/null && truncate -s 12M "$TMP/disk.img" &&
     mkfs.ext4 -q -F "$TMP/disk.img" >/dev/null 2>&1 && mount -o loop "$TMP/disk.img" "$MNT" 2>>"$TMP/mount.err"; then
    MOUNTED=ext4
else
    echo "SKIP: cannot mount a small file system here (needs root / CAP_SYS_ADMIN): $(cat "$TMP/mount.err")"
    exit 77
fi
echo "# storage on a small $MOUNTED at $MNT"

C="$TMP/node.conf"
cat >"$C" <<CONF
[node]
ae_title = SEGNODE
port = $PORT
bind = 127.0.0.1
storage = $MNT/storage
http_port = $HTTP_PORT
disk_min_free_mb = 0
stable_after = 60

[peer MODALITY]
ae_title = MODALITY
CONF
SERIES=$(gen_series "$TMP/series" 40 --rows 256 --seed 101)
start_node "$C" "$TMP/serve.log"
# leave ~1.5 MiB: room for about ten 128 KiB slices and the index's growth
free_kb=$(df -Pk "$MNT" | awk 'NR==2 {print $4}')
fill_kb=$((free_kb - 1536))
dd if=/dev/zero of="$MNT/filler" bs=1024 count=$fill_kb status=none 2>/dev/null
echo "# free after filler: $(df -Pk "$MNT" | awk 'NR==2 {print $4}') KiB"

run storescu -v -aet MODALITY -aec SEGNODE 127.0.0.1 $PORT "$TMP/series"/*.dcm
cp "$TMP/err" "$TMP/storescu1.log"; cat "$TMP/out" >>"$TMP/storescu1.log"
nok=$(grep -c "Received Store Response (Success)" "$TMP/storescu1.log")
nfail=$(grep -c "Received Store Response (Refused: OutOfResources)" "$TMP/storescu1.log")
if [ "$nok" -ge 1 ] && [ "$nok" -lt 40 ]; then ok "$nok of 40 instances stored before the disk filled"
else fail "Success responses: $nok (want 1..39)"; fi
# storescu stops the series at the first failure status
if [ "$nfail" = 1 ]; then ok "the instance in flight when the disk filled got 0xA700 Out of Resources"
else fail "A700 responses: $nfail, Success $nok"; fi
expect_nonzero "storescu reports the failure"
sed -n 's/.*\(C-STORE of .* failed with 0xa700: .*\)/\1/p' "$TMP/serve.log" | head -1
expect_re "$(cat "$TMP/serve.log")" "C-STORE of [0-9.]+ failed with 0xa700: " "the node logs the failure with its reason"
acked_uids "$TMP/storescu1.log" >"$TMP/acked1"
verify "$C" "$MNT/storage" --sent "$TMP/series" --acked "$TMP/acked1" --series 1 --expect "$SERIES=$nok"
# the Error Comment of the failure, as a raw SCU sees it; this time not a byte is free, so
# writing the received data set itself fails
dd if=/dev/zero of="$MNT/filler2" bs=64k status=none 2>/dev/null
run "$PY" "$HERE/rawscu.py" store 127.0.0.1 $PORT MODALITY SEGNODE "$TMP/series/0040.dcm"
expect_rc 0 "a C-STORE on the full disk: association accepted"
if printf '%s' "$OUT" | grep -qiE "status=0xa700 comment=.{5,}"; then ok "answered 0xA700 with an error comment ($(printf '%s' "$OUT" | sed 's/.*comment=//'))"
else fail "no 0xA700 with a comment"; fi
expect_in "$(cat "$TMP/serve.log")" "failed with 0xa700: write error while receiving: No space left on device" \
    "the node logs the failed write"
expect_not_in "$(cat "$TMP/serve.log")" "association from MODALITY aborted" "no association was aborted"
verify "$C" "$MNT/storage" --series 1 --expect "$SERIES=$nok"
run echoscu -aet MODALITY -aec SEGNODE 127.0.0.1 $PORT
expect_rc 0 "the node still answers C-ECHO with a full disk"
if kill -0 "$NODE" 2>/dev/null; then ok "node still running"; else fail "node died"; fi

# ---- space returns -----------------------------------------------------------------------------
rm -f "$MNT/filler" "$MNT/filler2"
run storescu -v -aet MODALITY -aec SEGNODE 127.0.0.1 $PORT "$TMP/series"/*.dcm
expect_rc 0 "with space back, the whole series is sent again"
n=$(printf '%s' "$OUT$ERR" | grep -c "Received Store Response (Success)")
if [ "$n" = 40 ]; then ok "40 Success responses"; else fail "Success responses: $n"; fi
verify "$C" "$MNT/storage" --sent "$TMP/series" --series 1 --expect "$SERIES=40"

stop_node
expect_rc 0 "node stops cleanly"
cd /
finish
