#!/usr/bin/python3
"""tests/soak/soak.py — the soak test (issue 10): `segnode serve` on loopback for a bounded time
with several DCMTK storescu senders, random aborts, one kill -9 of the node and a restart on the
same storage, and an Orthanc PACS that is killed and comes back; then checks that nothing
acknowledged was lost and that every processed series got exactly one SEG in the PACS.

What runs (all on 127.0.0.1, ports PORT_BASE .. PORT_BASE+3):
  - Orthanc (AE PACS) with its own folder; the node's route sends SEGs there.
  - the node: workers = 1, one route "soak" (MR, Series Description ^soak routed, atlas method
    with one phantom CT atlas, stable_after 10 s). One series every --route-every seconds is
    sent as "soak routed" (the job cost bounds how many); all others are stored only (unrouted).
  - SENDERS threads, each in a loop: copy the phantom MR series under new Series/SOP Instance
    UIDs (same-length UIDs patched into the bytes, so the files are otherwise the phantom's),
    send it with `storescu -v` (one association). A random share of runs is killed with SIGKILL
    mid-association (the socket just closes); the sender then sends the instances that were not
    acknowledged again, as a scanner would, until all are. The `storescu -v` log gives each
    instance's response: Success or Warning is an acknowledgement.
  - now and then tests/node/rawscu.py sends half a dataset and an A-ABORT (never acknowledged,
    must never be indexed).
  - at 40 % of the time the node is killed with SIGKILL (preferably while a job runs) and started
    again on the same storage; at 60 % Orthanc is killed and comes back some seconds later.
  - after the time is up the senders finish their series, the node drains (every series stable,
    every job finished, every outbox row sent), is stopped with SIGTERM (must exit 0), and the
    checks run on its index (read-only SQLite) and files, and on Orthanc's REST API.

Checks (figures printed in one block; exit 1 if any fails):
  - lost = acknowledged instances that are not indexed, or whose stored file's data set (the
    bytes after the meta header, which the node writes itself) differs from the sent file's;
  - A-ABORTed instances indexed (must be 0);
  - every routed series that was stored has a job; jobs failed or unfinished (must be 0);
  - every done job stored exactly one SEG and Orthanc holds it; duplicates = SEGs in Orthanc
    beyond one per done job of the series they reference (must be 0); undelivered (must be 0);
  - storage/tmp is empty after the stop; the node's logs hold no sanitizer report; the final
    SIGTERM stop exits 0.

usage: soak.py [--seconds N] [--build DIR] [--senders K] [--port-base P] [--route-every S]
               [--max-routed R] [--drain S] [--seed X] [--keep]   (--help: all options)
Exit 0 all checks passed, 1 a check failed, 77 a required tool is missing (CTest skip)."""
import argparse
import glob
import json
import os
import random
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
RAWSCU = os.path.join(REPO, "tests", "node", "rawscu.py")
SANITIZER_RE = re.compile(rb"ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:")


def log(msg):
    print("[%7.1f] %s" % (time.monotonic() - T0, msg), flush=True)


T0 = time.monotonic()


def port_busy(port):
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def wait_for(pred, timeout, step=0.1):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            if pred():
                return True
        except Exception:
            pass
        time.sleep(step)
    return False


def dataset_bytes(raw):
    """The bytes after a Part 10 file's meta header (group 0002, length from (0002,0000))."""
    if raw[128:132] != b"DICM" or raw[132:136] != b"\x02\x00\x00\x00":
        raise ValueError("not a Part 10 file with a group length")
    meta_len = int.from_bytes(raw[140:144], "little")
    return raw[144 + meta_len:]


class Soak:
    def __init__(self, a):
        self.a = a
        self.rng = random.Random(a.seed)
        self.tmp = tempfile.mkdtemp(prefix="segnode-soak.")
        self.node_port, self.node_http, self.pacs_port, self.pacs_http = (a.port_base + i for i in range(4))
        self.lock = threading.Lock()
        self.procs = []            # every process we started, killed by PID at the end
        self.stop_sending = threading.Event()
        self.hard_stop = threading.Event()
        self.series_no = 0
        self.routed = 0
        self.next_routed = 0.0
        self.expect_down = False   # the chaos thread killed the node on purpose
        self.chaos_error = None
        self.sent_files = {}       # SOP Instance UID -> path of the file sent
        self.series_of = {}        # Series Instance UID -> routed?
        self.acked = set()
        self.requests = 0          # C-STORE requests started (storescu "Sending file"), resends too
        self.sender_kills = 0
        self.runs = 0
        self.aborted = set()       # SOP Instance UIDs sent in part, then A-ABORT
        self.node = None
        self.node_starts = 0
        self.kill_during_job = False
        self.pacs = None
        self.pacs_down_s = 0.0
        self.failures = []
        self.segnode = os.path.join(a.build, "tools", "segnode", "segnode")
        self.phantom = os.path.join(a.build, "tools", "phantom", "segnode-phantom")
        self.conf = os.path.join(self.tmp, "node.conf")
        self.storage = os.path.join(self.tmp, "storage")

    # ---- processes -------------------------------------------------------------------------
    def spawn(self, args, logname, **kw):
        f = open(os.path.join(self.tmp, logname), "ab")
        p = subprocess.Popen(args, stdout=f, stderr=subprocess.STDOUT, **kw)
        f.close()
        with self.lock:
            self.procs.append(p)
        return p

    def kill_all(self):
        with self.lock:
            procs = list(self.procs)
        for p in procs:
            if p.poll() is None:
                p.kill()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass

    def sn(self, *args, check=True):
        r = subprocess.run([self.segnode, "-c", self.conf, *args], capture_output=True, text=True)
        if check and r.returncode:
            raise RuntimeError("segnode %s: exit %d\n%s%s" % (" ".join(args), r.returncode, r.stdout, r.stderr))
        return r.stdout

    # ---- setup -----------------------------------------------------------------------------
    def setup(self):
        a = self.a
        for t in ("storescu", "Orthanc"):
            if not shutil.which(t):
                print("# %s not installed: skipping" % t)
                sys.exit(77)
        for exe in (self.segnode, self.phantom):
            if not os.access(exe, os.X_OK):
                print("# %s not built: skipping" % exe)
                sys.exit(77)
        for p in range(a.port_base, a.port_base + 4):
            if port_busy(p):
                print("port %d is busy; cannot run" % p)
                sys.exit(1)
        ph = os.path.join(self.tmp, "ph")
        subprocess.run([self.phantom, "--out", ph, "--subjects", "1", "--modalities", "mr-t1",
                        "--size", "small", "--quiet"], check=True)
        subprocess.run([self.phantom, "--out", os.path.join(self.tmp, "atlases"), "--subjects", "1",
                        "--first", "2", "--modalities", "ct", "--size", "small", "--quiet"], check=True)
        # The template series: its UIDs are replaced by same-length ones in each copy.
        self.template = []
        uids = set()
        for f in sorted(glob.glob(os.path.join(ph, "subject-001", "mr-t1", "*.dcm"))):
            raw = open(f, "rb").read()
            self.template.append((os.path.basename(f), raw))
            uids.add(self.uid_in(raw, (0x0008, 0x0018)))
            uids.add(self.uid_in(raw, (0x0020, 0x000E)))
        self.template_uids = sorted(uids)

        os.makedirs(os.path.join(self.tmp, "orthanc"))
        with open(os.path.join(self.tmp, "orthanc", "orthanc.json"), "w") as f:
            json.dump({"Name": "segnode-soak", "DicomAet": "PACS", "DicomPort": self.pacs_port,
                       "HttpPort": self.pacs_http, "StorageDirectory": self.tmp + "/orthanc/db",
                       "IndexDirectory": self.tmp + "/orthanc/db", "RemoteAccessAllowed": False,
                       "AuthenticationEnabled": False, "DicomCheckCalledAet": False,
                       "DicomAlwaysAllowStore": True, "DicomModalities": {}, "Plugins": []}, f)
        peers = "".join("[peer S%d]\nae_title = S%d\nallow = echo, store\n\n" % (i, i)
                        for i in range(1, a.senders + 2))
        with open(self.conf, "w") as f:
            f.write("""[node]
ae_title = SEGNODE
port = %d
bind = 127.0.0.1
storage = %s
http_port = %d
http_bind = 127.0.0.1
stable_after = 3
sweep_interval_ms = 200
disk_min_free_mb = 0
max_associations = 32
workers = 1
outbox_retry_base = 1
outbox_retry_cap = 4
outbox_max_attempts = 1000

%s[peer PACS]
ae_title = PACS
port = %d
allow = echo

[route soak]
modality = MR
series_description = ^soak routed
method = atlas
atlases = subject-002
labels = liver, spleen, kidney_left, kidney_right
send_to = PACS
stable_after = %d
""" % (self.node_port, self.storage, self.node_http, peers, self.pacs_port, a.stable_after))
        self.sn("config", "check")
        self.sn("atlas", "import", "--phantom", os.path.join(self.tmp, "atlases"))

    @staticmethod
    def uid_in(raw, tag):
        """A UID element's value in an Explicit VR Little Endian file (first occurrence)."""
        key = tag[0].to_bytes(2, "little") + tag[1].to_bytes(2, "little") + b"UI"
        i = raw.find(key, 132 + 12)
        n = int.from_bytes(raw[i + 6:i + 8], "little")
        return raw[i + 8:i + 8 + n].rstrip(b"\0").decode()

    def new_uid(self, like):
        n = len(like) - 5
        return "2.25." + str(self.rng.randrange(10 ** (n - 1), 10 ** n))

    def make_series(self, desc):
        """A copy of the template with new UIDs under sent/NNNN, Series Description DESC (11
        characters) and a digit; returns (series number, series uid, [(sop uid, path)])."""
        with self.lock:
            self.series_no += 1
            k = self.series_no
            mapping = {u: self.new_uid(u) for u in self.template_uids}
        d = os.path.join(self.tmp, "sent", "%04d" % k)
        os.makedirs(d)
        files = []
        series_uid = None
        for name, raw in self.template:
            for old, new in mapping.items():
                raw = raw.replace(old.encode(), new.encode())
            # 13 characters for the phantom's 13 ("phantom MR T1" + one pad): no trailing space, so
            # the node's re-encoded data set has the same bytes as the file sent
            raw = raw.replace(b"phantom MR T1", ("%s %d" % (desc, k % 10)).encode())
            path = os.path.join(d, name)
            with open(path, "wb") as f:
                f.write(raw)
            sop = self.uid_in(raw, (0x0008, 0x0018))
            series_uid = self.uid_in(raw, (0x0020, 0x000E))
            files.append((sop, path))
        return k, series_uid, files

    # ---- the node and the PACS ----------------------------------------------------------------
    def start_node(self):
        self.node = self.spawn([self.segnode, "-c", self.conf, "serve"], "serve.log")
        self.node_starts += 1
        ok = wait_for(lambda: self.node.poll() is None and port_busy(self.node_port), 60)
        if not ok:
            raise RuntimeError("segnode serve did not start; see %s/serve.log" % self.tmp)

    def start_pacs(self):
        self.pacs = self.spawn(["Orthanc", os.path.join(self.tmp, "orthanc", "orthanc.json")],
                               "orthanc.log")
        url = "http://127.0.0.1:%d/system" % self.pacs_http
        if not wait_for(lambda: urllib.request.urlopen(url, timeout=2).status == 200, 60):
            raise RuntimeError("Orthanc did not start; see %s/orthanc.log" % self.tmp)

    def sql(self, query, args=()):
        c = sqlite3.connect("file:%s/index.sqlite?mode=ro" % self.storage, uri=True, timeout=10)
        try:
            return c.execute(query, args).fetchall()
        finally:
            c.close()

    # ---- senders -----------------------------------------------------------------------------
    def sender(self, idx):
        ae = "S%d" % idx
        rng = random.Random(self.a.seed * 1000 + idx)
        while not self.stop_sending.is_set():
            with self.lock:
                now = time.monotonic()
                routed = self.routed < self.a.max_routed and now >= self.next_routed
                if routed:
                    self.routed += 1
                    self.next_routed = now + self.a.route_every
            k, series_uid, files = self.make_series("soak routed" if routed else "soak stored")
            with self.lock:
                self.series_of[series_uid] = routed
                for sop, path in files:
                    self.sent_files[sop] = path
            todo = files
            attempt = 0
            while todo and not self.hard_stop.is_set():
                attempt += 1
                logf = os.path.join(self.tmp, "scu", "%04d-%d.log" % (k, attempt))
                os.makedirs(os.path.dirname(logf), exist_ok=True)
                with open(logf, "wb") as lf:
                    p = subprocess.Popen(["storescu", "-v", "-aet", ae, "-aec", "SEGNODE", "127.0.0.1",
                                          str(self.node_port)] + [f for _, f in todo],
                                         stdout=lf, stderr=subprocess.STDOUT)
                with self.lock:
                    self.procs.append(p)
                    self.runs += 1
                killed = False
                if rng.random() < self.a.abort_share:
                    try:
                        p.wait(timeout=rng.uniform(0.05, 1.5))
                    except subprocess.TimeoutExpired:
                        p.kill()
                        killed = True
                p.wait()
                acked, started = self.parse_scu_log(logf, dict((f, s) for s, f in todo))
                with self.lock:
                    self.acked |= acked
                    self.requests += started
                    self.sender_kills += killed
                todo = [(s, f) for s, f in todo if s not in acked]
                if todo and not killed:
                    time.sleep(0.3)   # node down or refusing: try again shortly
            if not self.stop_sending.is_set():
                time.sleep(rng.uniform(0, self.a.pause))

    @staticmethod
    def parse_scu_log(path, sop_of):
        """(SOP Instance UIDs acknowledged, C-STORE requests started) from a `storescu -v` log."""
        acked, started, cur = set(), 0, None
        for line in open(path, errors="replace"):
            m = re.match(r"I: Sending file: (.*)$", line.rstrip("\n"))
            if m:
                cur = m.group(1)
                started += 1
            elif line.startswith("I: Received Store Response (") and cur:
                st = line[len("I: Received Store Response ("):]
                if st.startswith("Success") or st.startswith("Warning"):
                    acked.add(sop_of[cur])
                cur = None
        return acked, started

    def aborter(self):
        """Now and then half a dataset and an A-ABORT (tests/node/rawscu.py partial)."""
        rng = random.Random(self.a.seed * 1000 + 999)
        ae = "S%d" % (self.a.senders + 1)
        while not self.stop_sending.wait(rng.uniform(2, 8)):
            k, series_uid, files = self.make_series("soak abortd")
            sop, path = files[rng.randrange(len(files))]
            r = subprocess.run([sys.executable, RAWSCU, "partial", "127.0.0.1", str(self.node_port), ae,
                                "SEGNODE", path, "abort"], capture_output=True, text=True)
            if r.returncode == 0:
                with self.lock:
                    self.aborted.add(sop)
                    self.requests += 1

    # ---- faults ------------------------------------------------------------------------------
    def chaos(self):
        try:
            self.chaos_run()
        except Exception as e:       # a restart that failed: the main loop stops the soak
            self.chaos_error = "fault injection: %s" % e
            self.expect_down = False

    def chaos_run(self):
        s = self.a.seconds
        if self.hard_stop.wait(0.4 * s):
            return
        # The node's kill -9: preferably while a job runs, so a job run is cut short too.
        end = time.monotonic() + 0.15 * s
        while time.monotonic() < end and not self.hard_stop.is_set():
            try:
                if self.sql("SELECT count(*) FROM jobs WHERE state=1")[0][0]:
                    self.kill_during_job = True
                    break
            except sqlite3.Error:
                pass
            time.sleep(0.2)
        log("kill -9 of the node (job running: %s)" % ("yes" if self.kill_during_job else "no"))
        self.expect_down = True
        self.node.kill()
        self.node.wait()
        time.sleep(1)
        self.start_node()
        self.expect_down = False
        log("node restarted on the same storage")
        if self.hard_stop.wait(max(0.0, T_START + 0.6 * s - time.monotonic())):
            return
        down = max(5.0, 0.08 * s)
        log("kill -9 of the PACS for %.0f s" % down)
        self.pacs.kill()
        self.pacs.wait()
        self.hard_stop.wait(down)
        self.start_pacs()
        self.pacs_down_s = down
        log("PACS back")

    # ---- drain and checks ----------------------------------------------------------------------
    def drained(self):
        q = self.sql("SELECT (SELECT count(*) FROM series WHERE state=0 AND derived_job IS NULL),"
                     " (SELECT count(*) FROM jobs WHERE state IN (0,1)),"
                     " (SELECT count(*) FROM outbox WHERE state IN (0,1))")[0]
        return q == (0, 0, 0)

    def check(self, cond, msg):
        if not cond:
            self.failures.append(msg)
        return cond

    def verify(self):
        idx = {}
        for uid, path in self.sql("SELECT sop_instance_uid, path FROM instances"):
            idx[uid] = path
        lost = []
        stored = 0
        for uid in sorted(self.acked):
            path = idx.get(uid)
            if path is None:
                lost.append("%s: acknowledged, not in the index" % uid)
                continue
            try:
                got = dataset_bytes(open(os.path.join(self.storage, path), "rb").read())
            except (OSError, ValueError) as e:
                lost.append("%s: %s" % (uid, e))
                continue
            want = dataset_bytes(open(self.sent_files[uid], "rb").read())
            if got != want:
                lost.append("%s: stored data set differs (%d vs %d bytes)" % (uid, len(got), len(want)))
                continue
            stored += 1
        aborted_indexed = sorted(u for u in self.aborted if u in idx)
        unacked_stored = sum(1 for u in idx if u in self.sent_files and u not in self.acked)
        tmp_left = len(os.listdir(os.path.join(self.storage, "tmp")))

        # Jobs and SEGs per source series.
        series = {u: (sid, st) for sid, u, st in self.sql(
            "SELECT id, series_uid, state FROM series WHERE derived_job IS NULL")}
        jobs = self.sql("SELECT j.id, s.series_uid, j.state, j.attempts, j.error FROM jobs j"
                        " JOIN series s ON s.id=j.series_id")
        routed_stored = [u for u, r in self.series_of.items() if r and u in series]
        with_job = {j[1] for j in jobs}
        no_job = [u for u in routed_stored if u not in with_job]
        unrouted_jobs = [j for j in jobs if not self.series_of.get(j[1], False)]
        done = [j for j in jobs if j[2] == 2]
        failed = [j for j in jobs if j[2] == 3]
        unfinished = [j for j in jobs if j[2] in (0, 1)]
        reruns = sum(1 for j in done if j[3] > 1)
        seg_rows = self.sql("SELECT s.derived_job, i.sop_instance_uid FROM series s JOIN instances i"
                            " ON i.series_id=s.id WHERE s.derived_job IS NOT NULL")
        segs_of_job = {}
        for jid, uid in seg_rows:
            segs_of_job.setdefault(jid, []).append(uid)
        bad_job_segs = [(j[0], len(segs_of_job.get(j[0], []))) for j in done if len(segs_of_job.get(j[0], [])) != 1]
        outbox = self.sql("SELECT state, count(*), sum(attempts) FROM outbox GROUP BY state")
        outbox_failed = sum(n for st, n, _ in outbox if st == 3)
        outbox_rows = sum(n for _, n, _ in outbox)
        outbox_tries = sum(t or 0 for _, _, t in outbox)

        # Orthanc: every SEG instance, and the source series it references.
        base = "http://127.0.0.1:%d" % self.pacs_http
        req = urllib.request.Request(base + "/tools/find", method="POST", data=json.dumps(
            {"Level": "Series", "Query": {"Modality": "SEG"}, "Expand": True}).encode())
        ids = [i for s in json.load(urllib.request.urlopen(req, timeout=30)) for i in s["Instances"]]
        pacs_segs = {}           # source series uid -> [SEG SOP Instance UIDs]
        pacs_uids = set()
        for oid in ids:
            tags = json.load(urllib.request.urlopen("%s/instances/%s/tags?simplify" % (base, oid), timeout=30))
            refs = {r.get("SeriesInstanceUID") for r in tags.get("ReferencedSeriesSequence", [])}
            for r in refs:
                pacs_segs.setdefault(r, []).append(tags["SOPInstanceUID"])
            pacs_uids.add(tags["SOPInstanceUID"])
        done_per_series = {}
        for j in done:
            done_per_series[j[1]] = done_per_series.get(j[1], 0) + 1
        duplicates = sum(max(0, len(v) - done_per_series.get(s, 0)) for s, v in pacs_segs.items())
        undelivered = [j[0] for j in done if not set(segs_of_job.get(j[0], [])) & pacs_uids]
        delivered = sum(1 for j in done if set(segs_of_job.get(j[0], [])) & pacs_uids)

        sani = []
        for f in glob.glob(os.path.join(self.tmp, "*.log")) + glob.glob(os.path.join(self.tmp, "orthanc", "*.log")):
            if SANITIZER_RE.search(open(f, "rb").read()):
                sani.append(os.path.basename(f))

        a = self.a
        print()
        print("==== soak figures (%d s, %d senders, seed %d, %d node starts) ====" % (
            a.seconds, a.senders, a.seed, self.node_starts))
        print("instances sent            %6d  (%d by storescu, %d cut off by A-ABORT; %d C-STORE requests"
              " incl. resends, %d storescu runs)" % (len(self.sent_files) + len(self.aborted), len(self.sent_files),
                                                    len(self.aborted), self.requests, self.runs))
        print("instances acknowledged    %6d" % len(self.acked))
        print("instances stored          %6d  (acknowledged, on disk with the sent bytes)" % stored)
        print("lost                      %6d" % len(lost))
        print("stored, not acknowledged  %6d  (in flight when cut off; allowed)" % unacked_stored)
        print("A-ABORTed, indexed        %6d  (of %d)" % (len(aborted_indexed), len(self.aborted)))
        print("series sent               %6d  (%d routed to the atlas method)" % (
            len(self.series_of), sum(self.series_of.values())))
        print("jobs done                 %6d  (%d re-run after the kill -9; failed %d, unfinished %d)" % (
            len(done), reruns, len(failed), len(unfinished)))
        print("SEGs delivered            %6d  (Orthanc holds %d SEG instances; %d C-STORE tries for %d outbox rows)" % (
            delivered, len(pacs_uids), outbox_tries, outbox_rows))
        print("duplicates                %6d" % duplicates)
        print("faults: %d senders killed mid-association, %d A-ABORTs, node kill -9 x1 (during a job: %s),"
              " PACS down %.0f s" % (self.sender_kills, len(self.aborted),
                                     "yes" if self.kill_during_job else "no", self.pacs_down_s))
        print("=" * 60)

        self.check(not lost, "lost %d acknowledged instances: %s" % (len(lost), "; ".join(lost[:10])))
        self.check(not aborted_indexed, "A-ABORTed instances indexed: %s" % aborted_indexed[:10])
        self.check(tmp_left == 0, "%d files left in storage/tmp after a clean stop" % tmp_left)
        self.check(not no_job, "%d routed series without a job: %s" % (len(no_job), no_job[:5]))
        self.check(not unrouted_jobs, "jobs for unrouted series: %s" % unrouted_jobs[:5])
        self.check(not failed, "failed jobs: %s" % failed[:5])
        self.check(not unfinished, "unfinished jobs: %s" % unfinished[:5])
        self.check(not bad_job_segs, "done jobs without exactly one stored SEG (job, count): %s" % bad_job_segs[:10])
        self.check(outbox_failed == 0, "%d outbox rows failed" % outbox_failed)
        self.check(duplicates == 0, "%d duplicate SEGs in the PACS" % duplicates)
        self.check(not undelivered, "SEGs of done jobs not in the PACS: jobs %s" % undelivered[:10])
        self.check(len(done) > 0, "no job was done: the soak processed nothing")
        self.check(not sani, "sanitizer report in %s" % sani)

    def run(self):
        global T_START
        self.setup()
        self.start_pacs()
        self.start_node()
        log("node on %d, Orthanc on %d; %d senders for %d s (work dir %s)" % (
            self.node_port, self.pacs_port, self.a.senders, self.a.seconds, self.tmp))
        T_START = time.monotonic()
        threads = [threading.Thread(target=self.sender, args=(i,), daemon=True)
                   for i in range(1, self.a.senders + 1)]
        threads.append(threading.Thread(target=self.aborter, daemon=True))
        chaos = threading.Thread(target=self.chaos, daemon=True)
        for t in threads + [chaos]:
            t.start()
        while time.monotonic() - T_START < self.a.seconds:
            time.sleep(0.5)
            if self.chaos_error:
                self.stop_sending.set()
                self.hard_stop.set()
                raise RuntimeError(self.chaos_error)
            node = self.node
            if node.poll() is not None and not self.expect_down and node is self.node:
                self.stop_sending.set()
                self.hard_stop.set()
                raise RuntimeError("the node exited on its own (status %s); see %s/serve.log"
                                   % (node.returncode, self.tmp))
        self.stop_sending.set()
        log("time is up: senders finish their series")
        for t in threads:
            t.join(timeout=120)
        self.hard_stop.set()
        chaos.join(timeout=120)
        log("sending done: %d instances acknowledged; draining" % len(self.acked))
        if not wait_for(self.drained, self.a.drain, step=1):
            self.check(False, "the node did not drain within %d s" % self.a.drain)
        log("drained; stopping the node (SIGTERM)")
        self.node.send_signal(signal.SIGTERM)
        try:
            rc = self.node.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.node.kill()
            rc = "timeout"
        self.check(rc == 0, "the node's SIGTERM stop exited %s" % rc)
        self.verify()

    def finish(self):
        self.kill_all()
        if self.failures:
            for f in self.failures:
                print("FAIL - " + f)
            print("logs kept in %s" % self.tmp)
            return 1
        print("soak: all checks passed")
        if not self.a.keep:
            shutil.rmtree(self.tmp, ignore_errors=True)
        else:
            print("work dir kept: %s" % self.tmp)
        return 0


T_START = T0


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seconds", type=int, default=600, help="sending time (default 600)")
    p.add_argument("--build", default=os.path.join(REPO, "build"), help="CMake build folder")
    p.add_argument("--senders", type=int, default=3)
    p.add_argument("--port-base", type=int, default=12500, help="4 ports from here (default 12500)")
    p.add_argument("--route-every", type=float, default=40,
                   help="one series is routed to the atlas method every this many seconds (default 40)")
    p.add_argument("--max-routed", type=int, default=1000, help="at most this many routed series")
    p.add_argument("--stable-after", type=int, default=10, help="the route's quiet period, s")
    p.add_argument("--abort-share", type=float, default=0.25, help="share of storescu runs killed")
    p.add_argument("--pause", type=float, default=2.0, help="longest pause between a sender's series, s")
    p.add_argument("--drain", type=int, default=900, help="longest wait for jobs and sends after sending, s")
    p.add_argument("--seed", type=int, default=int(time.time()) % 100000)
    p.add_argument("--keep", action="store_true", help="keep the work dir")
    a = p.parse_args()
    s = Soak(a)
    try:
        s.run()
    except SystemExit as e:      # setup: a tool missing (77) or a port taken (1)
        s.kill_all()
        shutil.rmtree(s.tmp, ignore_errors=True)
        return e.code
    except Exception:
        s.failures.append("error: " + traceback.format_exc())
    return s.finish()


if __name__ == "__main__":
    sys.exit(main())
