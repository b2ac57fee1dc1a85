#!/usr/bin/python3
"""tests/node/verify_store.py — checks a node's store against the files that were sent, through
`segnode --json series` (never by reading SQLite directly):
  - the number of series and each expected series' exact instance count;
  - every index row's file exists and its dataset (everything after the meta header) equals the
    sent file's: byte for byte when the transfer syntax is the same, else element by element
    with pydicom (Pixel Data compared as bytes);
  - files under files/ == index rows (orphans allowed only with --max-orphans), tmp/ is empty;
  - with --acked FILE (one SOP Instance UID a line): every acknowledged instance is indexed, and
    at most --max-extra indexed instances were not acknowledged.
usage: verify_store.py SEGNODE CONF STORAGE [--sent DIR]... [--series N] [--expect UID=COUNT]...
                       [--acked FILE] [--max-extra K] [--max-orphans K]
Prints one "ok"/"FAIL" line per check; exits 1 if any failed."""
import argparse
import json
import os
import subprocess
import sys
import warnings

import pydicom

fails = 0


def check(cond, msg):
    global fails
    print(("ok   - " if cond else "FAIL - ") + msg)
    if not cond:
        fails += 1
    return cond


def segnode(a, *args):
    out = subprocess.run([a.segnode, "-c", a.conf, "--json", *args], check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out)


def dataset_bytes(path):
    """(transfer syntax, bytes of the data set after the meta header)."""
    with open(path, "rb") as f:
        raw = f.read()
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    meta_len = ds.file_meta.FileMetaInformationGroupLength
    return str(ds.file_meta.TransferSyntaxUID), raw[132 + 12 + meta_len:]


def same_dataset(sent, stored):
    ts1, b1 = dataset_bytes(sent)
    ts2, b2 = dataset_bytes(stored)
    if ts1 == ts2:
        return b1 == b2, "bytes differ (%d vs %d)" % (len(b1), len(b2))
    d1, d2 = pydicom.dcmread(sent), pydicom.dcmread(stored)
    d1.file_meta = d2.file_meta = None
    if d1.PixelData != d2.PixelData:
        return False, "pixel data differs (%s vs %s)" % (ts1, ts2)
    for e in d1:
        if e.tag not in d2 or d2[e.tag].value != e.value:
            return False, "element %s differs (%s vs %s)" % (e.tag, ts1, ts2)
    return len(d1) == len(d2), "element count differs"


def main():
    p = argparse.ArgumentParser()
    p.add_argument("segnode")
    p.add_argument("conf")
    p.add_argument("storage")
    p.add_argument("--sent", action="append", default=[])
    p.add_argument("--series", type=int)
    p.add_argument("--expect", action="append", default=[])
    p.add_argument("--acked")
    p.add_argument("--max-extra", type=int, default=0)
    p.add_argument("--max-orphans", type=int, default=0)
    a = p.parse_args()
    warnings.simplefilter("ignore")

    sent = {}
    for d in a.sent:
        for name in sorted(os.listdir(d)):
            path = os.path.join(d, name)
            ds = pydicom.dcmread(path, stop_before_pixels=True)
            sent[str(ds.get("SOPInstanceUID", ds.file_meta.MediaStorageSOPInstanceUID))] = path

    series = segnode(a, "series")
    if a.series is not None:
        check(len(series) == a.series, "index holds %d series (want %d)" % (len(series), a.series))
    by_uid = {s["series_uid"]: s for s in series}
    for e in a.expect:
        uid, n = e.rsplit("=", 1)
        got = by_uid.get(uid, {}).get("instances")
        check(got == int(n), "series %s has %s instances (want %s)" % (uid, got, n))

    rows, paths = {}, set()
    for s in series:
        one = segnode(a, "series", s["series_uid"])
        check(len(one["files"]) == s["instances"],
              "series %s lists %d files for %d instances" % (s["series_uid"], len(one["files"]), s["instances"]))
        for f in one["files"]:
            rows[f["sop_instance_uid"]] = f["path"]
            paths.add(os.path.realpath(f["path"]))

    missing, differ, unknown = [], [], []
    for uid, path in rows.items():
        if not os.path.isfile(path):
            missing.append(uid)
        elif uid not in sent:
            unknown.append(uid)
        else:
            ok, why = same_dataset(sent[uid], path)
            if not ok:
                differ.append("%s: %s" % (uid, why))
    check(not missing, "every index row's file exists (%d rows%s)" % (len(rows), ", missing: %s" % missing[:3] if missing else ""))
    if a.sent:
        check(not unknown, "every indexed instance is one that was sent%s" % (": %s" % unknown[:3] if unknown else ""))
        check(not differ, "every stored data set equals the sent one (%d compared)%s"
              % (len(rows) - len(missing) - len(unknown), ": %s" % differ[:3] if differ else ""))

    on_disk = set()
    for root, _, names in os.walk(os.path.join(a.storage, "files")):
        for n in names:
            on_disk.add(os.path.realpath(os.path.join(root, n)))
    orphans = on_disk - paths
    check(len(orphans) <= a.max_orphans,
          "files on disk (%d) == index rows (%d); %d without a row (at most %d allowed)"
          % (len(on_disk), len(rows), len(orphans), a.max_orphans))
    tmp = os.path.join(a.storage, "tmp")
    left = os.listdir(tmp) if os.path.isdir(tmp) else []
    check(not left, "tmp/ is empty%s" % (" (holds %s)" % left[:3] if left else ""))

    if a.acked:
        acked = [l.strip() for l in open(a.acked) if l.strip()]
        lost = [u for u in acked if u not in rows]
        extra = [u for u in rows if u not in set(acked)]
        check(not lost, "all %d acknowledged instances are indexed%s" % (len(acked), ", lost: %s" % lost[:3] if lost else ""))
        check(len(extra) <= a.max_extra, "%d indexed instance(s) not acknowledged (at most %d allowed)"
              % (len(extra), a.max_extra))
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
