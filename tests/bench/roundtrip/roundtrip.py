#!/usr/bin/python3
# tests/bench/roundtrip/roundtrip.py — the node's round trip (issue 9): latency from the last
# instance of a series acknowledged (storescu to the node returns) to the SEG acknowledged by the
# PACS (the outbox row's `sent` time: the C-STORE response from Orthanc), per modality and method,
# with the quiet period out of the figure (the scanner peer has stable_on_release = yes); and
# throughput in series per minute with 4 concurrent senders. Orthanc on loopback is the PACS.
# Beside each case, in the same run: the same series sent by storescu straight to Orthanc (the
# transfer part), and the same computation offline (`segnode segment --method atlas`,
# `segnode infer`), with ratios. Dice (liver, kidneys) of every delivered SEG against the
# phantom's ground truth says the run did real work. Prints one line of figures per case; never
# asserts timing. Not in CI (minutes per case on a CPU): run by hand, under nice.
#   tests/bench/roundtrip/roundtrip.py [--build DIR] [--modalities mr-t1,cbct,pet]
#       [--methods atlas,net,both] [--atlases 5] [--size full|small] [--throughput 8]
#       [--model MOD=DIR ...] [--workdir DIR] [--json FILE]
# Bundles: --model MOD=DIR, else models/MOD (models/mr-t1, models/cbct, models/pet) when present,
# else tests/net/data/tiny-MOD;
# a modality with none gets no net/both rows. Ports: node 13600-13601, Orthanc 13602 / HTTP 18500.
import argparse
import glob
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from datetime import datetime, timezone

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", ".."))
NODE_PORT, NODE_HTTP, PACS_PORT, PACS_HTTP = 13600, 13601, 13602, 18500
LABELS = ["liver", "spleen", "kidney_left", "kidney_right"]
MODELS = {"mr-t1": "mr", "mr-t2": "mr", "cbct": "cbct", "pet": "pet"}
ENV = dict(os.environ, TCP_NODELAY="1")


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def die(msg):
    log("roundtrip: " + msg)
    sys.exit(2)


def sh(cmd, **kw):
    return subprocess.run(cmd, check=True, env=ENV, **kw)


# ---- data -----------------------------------------------------------------------------------

def clone(src, dst, desc):
    """Copy of a series with new Series/SOP Instance UIDs and Series Description `desc`; returns
    {new SOP Instance UID: original} (the ground truth references the originals)."""
    import pydicom
    from pydicom.uid import generate_uid
    os.makedirs(dst, exist_ok=True)
    suid, uids = generate_uid(), {}
    for f in sorted(glob.glob(os.path.join(src, "*.dcm"))):
        ds = pydicom.dcmread(f)
        old = ds.SOPInstanceUID
        ds.SeriesInstanceUID = suid
        ds.SeriesDescription = desc
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.save_as(os.path.join(dst, os.path.basename(f)))
        uids[ds.SOPInstanceUID] = old
    return uids


def bundle_for(args, mod):
    for m in args.model:
        k, _, v = m.partition("=")
        if k == mod:
            return os.path.abspath(v)
    for d in (os.path.join(ROOT, "models", mod), os.path.join(ROOT, "models", MODELS.get(mod, mod)),
              os.path.join(ROOT, "tests", "net", "data", "tiny-" + mod)):
        if os.path.isfile(os.path.join(d, "model.json")):
            return d
    return None


# ---- peers ----------------------------------------------------------------------------------

def orthanc_start(w):
    d = os.path.join(w, "orthanc")
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    cfg = {"Name": "roundtrip-pacs", "DicomAet": "PACS", "DicomPort": PACS_PORT, "HttpPort": PACS_HTTP,
           "StorageDirectory": d + "/db", "IndexDirectory": d + "/db", "RemoteAccessAllowed": False,
           "AuthenticationEnabled": False, "DicomCheckCalledAet": False, "DicomAlwaysAllowStore": True,
           "DicomModalities": {}, "Plugins": [], "StorageCompression": False}
    with open(d + "/orthanc.json", "w") as f:
        json.dump(cfg, f)
    p = subprocess.Popen(["Orthanc", d + "/orthanc.json"], stdout=open(d + "/log", "w"), stderr=subprocess.STDOUT)
    for _ in range(200):
        try:
            urllib.request.urlopen("http://127.0.0.1:%d/system" % PACS_HTTP, timeout=1)
            return p
        except Exception:
            time.sleep(0.1)
    p.kill()
    die("Orthanc did not start")


def orthanc_get(path):
    with urllib.request.urlopen("http://127.0.0.1:%d%s" % (PACS_HTTP, path), timeout=30) as r:
        return r.read()


def orthanc_has(sop):
    req = urllib.request.Request("http://127.0.0.1:%d/tools/lookup" % PACS_HTTP, data=sop.encode(), method="POST")
    with urllib.request.urlopen(req, timeout=10) as r:
        res = json.load(r)
    return [x["ID"] for x in res if x["Type"] == "Instance"]


def node_conf(w, routes, workers):
    conf = os.path.join(w, "segnode.conf")
    with open(conf, "w") as f:
        f.write("""[node]
ae_title = SEGNODE
port = %d
bind = 127.0.0.1
storage = %s/storage
http_port = %d
stable_after = 1
sweep_interval_ms = 100
disk_min_free_mb = 0
workers = %d
device = cpu

[peer SCANNER]
ae_title = SCANNER
stable_on_release = yes
[peer S1]
ae_title = S1
stable_on_release = yes
[peer S2]
ae_title = S2
stable_on_release = yes
[peer S3]
ae_title = S3
stable_on_release = yes
[peer S4]
ae_title = S4
stable_on_release = yes
[peer PACS]
ae_title = PACS
port = %d
allow = echo

%s
""" % (NODE_PORT, w, NODE_HTTP, workers, PACS_PORT, routes))
    return conf


def node_start(args, conf, w):
    p = subprocess.Popen([args.segnode, "-c", conf, "serve"], stdout=open(w + "/serve.log", "a"),
                         stderr=subprocess.STDOUT, env=ENV)
    for _ in range(100):
        if subprocess.run(["echoscu", "-to", "2", "-aet", "SCANNER", "-aec", "SEGNODE", "127.0.0.1", str(NODE_PORT)],
                          capture_output=True).returncode == 0:
            return p
        time.sleep(0.1)
    p.kill()
    die("segnode serve did not start; see %s/serve.log" % w)


def storescu(ae, aec, port, files):
    t0 = time.time()
    sh(["storescu", "-aet", ae, "-aec", aec, "127.0.0.1", str(port)] + files, capture_output=True)
    return t0, time.time()


def jobs(args, conf):
    out = subprocess.run([args.segnode, "-c", conf, "--json", "jobs", "list"], capture_output=True, text=True,
                         check=True).stdout
    return json.loads(out)


def iso_ms(s):
    return datetime.strptime(s, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc).timestamp()


def wait_sent(args, conf, route, n_done, timeout):
    """Wait until `n_done` jobs of `route` have their SEG sent; returns those jobs."""
    end = time.time() + timeout
    while time.time() < end:
        js = [j for j in jobs(args, conf) if j["route"] == route]
        bad = [j for j in js if j["state"] == "failed" or any(o["state"] == "failed" for o in j.get("outbox") or [])]
        if bad:
            die("job failed: %s" % json.dumps(bad[0])[:800])
        sent = [j for j in js if j.get("outbox") and all(o["state"] == "sent" for o in j["outbox"])]
        if len(sent) >= n_done:
            return sent
        time.sleep(0.05)
    die("route %s: no SEG sent within %d s" % (route, timeout))


def dice(gt, seg_path, uids):
    """Dice per segment (lower-case code meaning) with tools/seg-dice.py's independent reader; the
    delivered SEG's frames are mapped back to the original instances through `uids`."""
    import importlib.util
    import numpy as np
    spec = importlib.util.spec_from_file_location("seg_dice", os.path.join(ROOT, "tools", "seg-dice.py"))
    sd = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sd)
    ref, test = sd.masks(gt), sd.masks(seg_path)
    d = {}
    for key, frames in test.items():
        t = {(uids.get(u, u), n): m for (u, n), m in frames.items()}
        r = ref.get(key, {})
        inter = sum(int(np.logical_and(r[f], t[f]).sum()) for f in t if f in r)
        nr, nt = sum(int(m.sum()) for m in r.values()), sum(int(m.sum()) for m in t.values())
        d[key[2].lower()] = 2.0 * inter / (nr + nt) if nr + nt else 1.0
    return d


# ---- cases ----------------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--modalities", default="mr-t1,cbct,pet")
    ap.add_argument("--methods", default="atlas,net,both")
    ap.add_argument("--atlases", type=int, default=5)
    ap.add_argument("--size", default="full", choices=["full", "small"])
    ap.add_argument("--throughput", type=int, default=8, help="small MR series for the 4-sender run (0 = none)")
    ap.add_argument("--model", action="append", default=[], help="MOD=DIR bundle for a modality")
    ap.add_argument("--workdir", default=os.environ.get("SN_BENCH_ROUNDTRIP_DIR", "/tmp/sn_bench_roundtrip"))
    ap.add_argument("--timeout", type=int, default=1800, help="seconds per case")
    ap.add_argument("--no-offline-atlas", action="store_true", help="skip the offline atlas peer (saves a run per modality)")
    ap.add_argument("--json", help="write the figures here too")
    args = ap.parse_args()
    args.segnode = os.path.join(args.build, "tools", "segnode", "segnode")
    phantom = os.path.join(args.build, "tools", "phantom", "segnode-phantom")
    for t in (args.segnode, phantom):
        if not os.access(t, os.X_OK):
            die("%s is not built" % t)
    for t in ("storescu", "echoscu", "Orthanc"):
        if not shutil.which(t):
            die("%s is not installed" % t)
    w = os.path.abspath(args.workdir)
    shutil.rmtree(w, ignore_errors=True)
    os.makedirs(w)
    mods = [m for m in args.modalities.split(",") if m]
    methods = [m for m in args.methods.split(",") if m]

    # data: the target subject at --size, CT atlases small (registration runs on a working grid)
    log("phantoms: target %s (%s), %d CT atlases" % (",".join(mods), args.size, args.atlases))
    sh([phantom, "--out", w + "/target", "--subjects", "1", "--first", "1", "--seed", "7", "--modalities",
        ",".join(mods), "--size", args.size, "--quiet"])
    atlases = []
    if args.atlases > 0 and any(m in ("atlas", "both") for m in methods):
        sh([phantom, "--out", w + "/atlases", "--subjects", str(args.atlases), "--first", "2", "--seed", "7",
            "--modalities", "ct", "--size", "small", "--quiet"])
        atlases = ["subject-%03d" % (2 + i) for i in range(args.atlases)]

    cases, routes = [], []
    for mod in mods:
        b = bundle_for(args, mod)
        for meth in methods:
            if meth in ("net", "both") and not b:
                log("%s: no bundle, no %s row" % (mod, meth))
                continue
            if meth in ("atlas", "both") and not atlases:
                continue
            name = "rt-%s-%s" % (mod, meth)
            r = "[route %s]\nseries_description = ^%s$\nmethod = %s\nlabels = %s\nsend_to = PACS\n" % (
                name, name, meth, ", ".join(LABELS))
            if meth != "net":
                r += "atlases = %s\n" % ", ".join(atlases)
            if meth != "atlas":
                r += "model = %s\n" % b
            routes.append(r)
            cases.append((mod, meth, name, b))
    thr_bundle = bundle_for(args, "mr-t1")
    if args.throughput > 0 and thr_bundle:
        routes.append("[route rt-throughput]\nseries_description = ^thr \nmethod = net\nmodel = %s\nlabels = %s\n"
                      "send_to = PACS\n" % (thr_bundle, ", ".join(LABELS)))
    conf = node_conf(w, "\n".join(routes), 1)
    if atlases:
        sh([args.segnode, "-c", conf, "atlas", "import", "--phantom", w + "/atlases"], capture_output=True)

    pacs = orthanc_start(w)
    node = node_start(args, conf, w)
    results = []
    try:
        for mod, meth, name, b in cases:
            src = os.path.join(w, "target", "subject-001", mod)
            files_src = sorted(glob.glob(src + "/*.dcm"))
            # the transfer peer: the same series (own UIDs) straight to Orthanc
            d_direct = os.path.join(w, "series", name + "-direct")
            clone(src, d_direct, name + "-direct")
            t0, t1 = storescu("SCANNER", "PACS", PACS_PORT, sorted(glob.glob(d_direct + "/*.dcm")))
            direct_s = t1 - t0
            d = os.path.join(w, "series", name)
            uids = clone(src, d, name)
            n_before = len([j for j in jobs(args, conf) if j["route"] == name])
            t0, t_ack = storescu("SCANNER", "SEGNODE", NODE_PORT, sorted(glob.glob(d + "/*.dcm")))
            sent = wait_sent(args, conf, name, n_before + 1, args.timeout)
            j = max(sent, key=lambda x: x["id"])
            o = j["outbox"][0]
            latency = iso_ms(o["sent"]) - t_ack
            tm = j.get("timings") or {}
            ids = orthanc_has(o["sop_instance_uid"])
            if not ids:
                die("%s: the SEG %s is not in Orthanc" % (name, o["sop_instance_uid"]))
            seg = os.path.join(w, name + "-seg.dcm")
            with open(seg, "wb") as f:
                f.write(orthanc_get("/instances/%s/file" % ids[0]))
            dc = dice(os.path.join(w, "target", "subject-001", "seg", mod + ".dcm"), seg, uids)
            # the compute peer, offline on the same folder
            off_s, off_what = None, ""
            t = time.time()
            if meth == "atlas" and not args.no_offline_atlas:
                r = subprocess.run([args.segnode, "-c", conf, "segment", "--method", "atlas", "--atlases",
                                    ",".join(atlases), "--out", w + "/offline.dcm", src], capture_output=True)
                off_what = "segment --method atlas"
            elif meth == "net":
                r = subprocess.run([args.segnode, "infer", "--device", "cpu", "--model", b, src, "--out",
                                    w + "/offline.nii.gz"], capture_output=True)
                off_what = "infer"
            else:
                r = None
            if r is not None:
                off_s = time.time() - t if r.returncode == 0 else None
            row = {"modality": mod, "method": meth, "instances": len(files_src), "latency_s": latency,
                   "send_to_node_s": t_ack - t0, "send_to_orthanc_s": direct_s,
                   "offline_s": off_s, "offline": off_what, "timings": tm, "device": j.get("device"),
                   "dice_liver": dc.get("liver", 0.0),
                   "dice_kidneys": (dc.get("left kidney", 0.0) + dc.get("right kidney", 0.0)) / 2,
                   "note": tm.get("note", "")}
            results.append(row)
            stages = " ".join("%s %.1f" % (k[:-3], v / 1000.0) for k, v in (tm.get("method") or {}).items())
            print("%-6s %-5s %4d inst  latency %6.1f s  [load %.1f method %.1f (%s) seg %.1f store %.1f]  "
                  "send->node %.2f s vs ->Orthanc %.2f s (x%.2f)  %s  Dice liver %.2f kidneys %.2f" % (
                      mod, meth, len(files_src), latency, tm.get("load_ms", 0) / 1e3, tm.get("method_ms", 0) / 1e3,
                      stages, tm.get("write_seg_ms", 0) / 1e3, tm.get("store_ms", 0) / 1e3, t_ack - t0, direct_s,
                      (t_ack - t0) / direct_s if direct_s > 0 else 0,
                      ("offline %s %.1f s (node/offline x%.2f)" % (off_what, off_s, latency / off_s)) if off_s else
                      "offline -", row["dice_liver"], row["dice_kidneys"]), flush=True)

        if args.throughput > 0 and thr_bundle:
            n = args.throughput
            sh([phantom, "--out", w + "/thr", "--subjects", "1", "--first", "1", "--seed", "7", "--modalities",
                "mr-t1", "--size", "small", "--quiet"])
            dirs = []
            for i in range(n):
                dd = os.path.join(w, "series", "thr-%02d" % i)
                clone(w + "/thr/subject-001/mr-t1", dd, "thr %02d" % i)
                dirs.append(dd)
            n_inst = len(glob.glob(dirs[0] + "/*.dcm"))
            n_before = len([j for j in jobs(args, conf) if j["route"] == "rt-throughput"])
            errs = []

            def sender(k):
                try:
                    for dd in dirs[k::4]:
                        storescu("S%d" % (k + 1), "SEGNODE", NODE_PORT, sorted(glob.glob(dd + "/*.dcm")))
                except Exception as e:  # noqa: BLE001 — reported below
                    errs.append(str(e))
            t0 = time.time()
            th = [threading.Thread(target=sender, args=(k,)) for k in range(4)]
            for t in th:
                t.start()
            for t in th:
                t.join()
            if errs:
                die("sender failed: %s" % errs[0])
            sent = wait_sent(args, conf, "rt-throughput", n_before + n, args.timeout)
            last = max(iso_ms(o["sent"]) for j in sent for o in j["outbox"])
            span = last - t0
            row = {"throughput_series": n, "instances_per_series": n_inst, "senders": 4, "span_s": span,
                   "series_per_min": 60.0 * n / span}
            results.append(row)
            print("throughput: %d small MR T1 series (%d instances each), 4 senders, method net, 1 worker: "
                  "%.1f s from the first C-STORE to the last SEG acknowledged = %.1f series/min" % (
                      n, n_inst, span, 60.0 * n / span), flush=True)
    finally:
        node.terminate()
        pacs.terminate()
        node.wait()
        pacs.wait()
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
