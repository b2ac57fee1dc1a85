#!/usr/bin/python3
"""tests/fuzz/make_seeds.py — (re)generate the committed seed corpora under tests/fuzz/corpus/.

  make_seeds.py --phantom PHANTOM_DIR [--data ../shared/data/dicom] [--out tests/fuzz/corpus]

PHANTOM_DIR is the output of `segnode-phantom --out DIR --subjects 1 --modalities ct,mr-t1,pet`.
Seeds are kept small (a few KiB each; the whole set well under 2 MiB): phantom slices cropped to
16x16 in every transfer syntax the node reads (DCMTK and GDCM tools transcode), the small real
files of ../shared/data/dicom, segnode.conf variants, and raw PDU streams (association, C-ECHO,
C-STORE, C-FIND, release, abort) built here byte by byte. Deterministic for the same inputs
(except what the external transcoders embed).
"""
import argparse
import glob
import os
import shutil
import struct
import subprocess
import tempfile

import numpy as np
import pydicom
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

SEP = b"--SNFUZZ-NEXT-FILE--"  # fuzz_volume.cc FUZZ_SEP


def crop(src, dst, size=16):
    ds = pydicom.dcmread(src)
    arr = ds.pixel_array
    r0 = (arr.shape[0] - size) // 2
    c0 = (arr.shape[1] - size) // 2
    sub = np.ascontiguousarray(arr[r0:r0 + size, c0:c0 + size])
    ds.Rows, ds.Columns = size, size
    # keep the geometry true: move the origin to the cropped corner
    if "ImagePositionPatient" in ds and "ImageOrientationPatient" in ds:
        o = [float(v) for v in ds.ImageOrientationPatient]
        sp = [float(v) for v in ds.PixelSpacing]
        p = [float(v) for v in ds.ImagePositionPatient]
        p = [p[i] + c0 * sp[1] * o[i] + r0 * sp[0] * o[3 + i] for i in range(3)]
        ds.ImagePositionPatient = [round(v, 4) for v in p]
    ds.PixelData = sub.astype(arr.dtype).tobytes()
    for k in ("LargestImagePixelValue", "SmallestImagePixelValue"):
        if k in ds:
            del ds[k]
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.is_implicit_VR, ds.is_little_endian = False, True
    ds.save_as(dst, write_like_original=False)


def run(*cmd):
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def transcode(src, dst, kind):
    """Write src (explicit LE) as `kind`; False when the tool is missing or fails."""
    try:
        if kind == "explicit":
            shutil.copy(src, dst)
        elif kind == "implicit":
            run("dcmconv", "+ti", src, dst)
        elif kind == "bigendian":
            run("dcmconv", "+tb", src, dst)
        elif kind == "deflated":
            run("dcmconv", "+td", src, dst)
        elif kind == "rle":
            run("dcmcrle", src, dst)
        elif kind == "jpegll":
            run("dcmcjpeg", "+el", src, dst)
        elif kind == "jpegls":
            run("dcmcjpls", src, dst)
        elif kind == "j2k":
            run("gdcmconv", "--j2k", src, dst)
        elif kind == "j2klossy":
            run("gdcmconv", "--j2k", "--lossy", "-q", "40", src, dst)
        else:
            raise ValueError(kind)
        return True
    except (OSError, subprocess.CalledProcessError):
        return False


# ---- PDUs (PS3.8) ---------------------------------------------------------------------------
APP_CTX = "1.2.840.10008.3.1.1.1"
EXPLICIT = "1.2.840.10008.1.2.1"
IMPLICIT = "1.2.840.10008.1.2"
VERIFICATION = "1.2.840.10008.1.1"
CT_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
MR_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
FIND_STUDY = "1.2.840.10008.5.1.4.1.2.2.1"


def uid(s):
    b = s.encode()
    return b + b"\0" if len(b) % 2 else b


def item(t, payload):
    return struct.pack(">BBH", t, 0, len(payload)) + payload


def pdu(t, payload):
    return struct.pack(">BBI", t, 0, len(payload)) + payload


def assoc_rq(calling, called, contexts, max_pdu=16384):
    body = struct.pack(">HH", 1, 0) + called.ljust(16).encode() + calling.ljust(16).encode() + b"\0" * 32
    body += item(0x10, APP_CTX.encode())
    for pcid, abstract, syntaxes in contexts:
        sub = item(0x30, uid(abstract)) + b"".join(item(0x40, uid(ts)) for ts in syntaxes)
        body += item(0x20, struct.pack(">BBBB", pcid, 0, 0, 0) + sub)
    user = item(0x51, struct.pack(">I", max_pdu)) + item(0x52, b"1.2.826.0.1.3680043.9.7777.1") + \
        item(0x55, b"FUZZSEED")
    body += item(0x50, user)
    return pdu(0x01, body)


def elem(group, el, value):
    if isinstance(value, int):
        value = struct.pack("<H", value)
    elif isinstance(value, str):
        value = uid(value) if group == 0 else value.encode()
    if len(value) % 2:
        value += b" "
    return struct.pack("<HHI", group, el, len(value)) + value


def command(elems):
    body = b"".join(elem(0, e, v) for e, v in elems)
    return elem(0, 0x0000, struct.pack("<I", len(body))) + body


def pdata(pcid, payload, is_command, last=True, max_frag=None):
    out = b""
    frags = [payload] if not max_frag else [payload[i:i + max_frag] for i in range(0, len(payload), max_frag)] or [b""]
    for i, f in enumerate(frags):
        hdr = (1 if is_command else 0) | (2 if (last and i == len(frags) - 1) else 0)
        pdv = struct.pack(">IBB", len(f) + 2, pcid, hdr) + f
        out += pdu(0x04, pdv)
    return out


RELEASE = pdu(0x05, b"\0\0\0\0")
ABORT = pdu(0x07, b"\0\0\0\0")


def echo_rq(msg_id):
    return command([(0x0002, VERIFICATION), (0x0100, 0x0030), (0x0110, msg_id), (0x0800, 0x0101)])


def store_rq(msg_id, cls, inst):
    return command([(0x0002, cls), (0x0100, 0x0001), (0x0110, msg_id), (0x0700, 0x0000),
                    (0x0800, 0x0000), (0x1000, inst)])


def find_rq(msg_id):
    return command([(0x0002, FIND_STUDY), (0x0100, 0x0020), (0x0110, msg_id), (0x0700, 0x0000),
                    (0x0800, 0x0000)])


def dataset_bytes(path, ts):
    """The data set (no meta header) as encoded in `ts`."""
    ds = pydicom.dcmread(path)
    with tempfile.NamedTemporaryFile(suffix=".dcm") as t:
        ds.file_meta.TransferSyntaxUID = ts
        ds.is_implicit_VR, ds.is_little_endian = ts == IMPLICIT, True
        ds.save_as(t.name, write_like_original=False)
        raw = open(t.name, "rb").read()
    meta_len = struct.unpack("<I", raw[140:144])[0]  # (0002,0000) value
    return raw[144 + meta_len:], ds


def find_identifier(level="STUDY"):
    ds = pydicom.Dataset()
    ds.QueryRetrieveLevel = level
    ds.PatientName = "PHANTOM*"
    ds.PatientID = ""
    ds.StudyInstanceUID = ""
    ds.StudyDate = "20000101-"
    ds.ModalitiesInStudy = ""
    ds.NumberOfStudyRelatedInstances = ""
    if level == "SERIES":
        ds.SeriesInstanceUID = ""
        ds.Modality = "MR"
    with tempfile.NamedTemporaryFile(suffix=".dcm") as t:
        ds.is_implicit_VR, ds.is_little_endian = False, True
        ds.save_as(t.name)
        return open(t.name, "rb").read()


def assoc_seeds(out, ct_slice):
    os.makedirs(out, exist_ok=True)
    ctx = [(1, VERIFICATION, [EXPLICIT, IMPLICIT]), (3, CT_STORAGE, [EXPLICIT]), (5, MR_STORAGE, [IMPLICIT]),
           (7, FIND_STUDY, [EXPLICIT])]
    rq = assoc_rq("SCANNER", "SEGNODE", ctx)
    ds_bytes, ds = dataset_bytes(ct_slice, EXPLICIT)
    seeds = {
        "echo": rq + pdata(1, echo_rq(1), True) + RELEASE,
        "echo-twice-abort": rq + pdata(1, echo_rq(1), True) + pdata(1, echo_rq(2), True) + ABORT,
        "store": rq + pdata(3, store_rq(1, CT_STORAGE, ds.SOPInstanceUID), True) + pdata(3, ds_bytes, False) + RELEASE,
        "store-fragmented": rq + pdata(3, store_rq(7, CT_STORAGE, ds.SOPInstanceUID), True, max_frag=40) +
        pdata(3, ds_bytes, False, max_frag=300) + RELEASE,
        "store-wrong-context": rq + pdata(5, store_rq(2, CT_STORAGE, ds.SOPInstanceUID), True) +
        pdata(5, ds_bytes, False) + RELEASE,
        "store-truncated": rq + pdata(3, store_rq(3, CT_STORAGE, ds.SOPInstanceUID), True) +
        pdata(3, ds_bytes[: len(ds_bytes) // 2], False, last=False),
        "find-study": rq + pdata(7, find_rq(1), True) + pdata(7, find_identifier("STUDY"), False) + RELEASE,
        "find-series": rq + pdata(7, find_rq(2), True) + pdata(7, find_identifier("SERIES"), False) + RELEASE,
        "unknown-calling": assoc_rq("STRANGER", "SEGNODE", ctx[:1]) + pdata(1, echo_rq(1), True) + RELEASE,
        "echo-only-peer-stores": assoc_rq("ECHOONLY", "SEGNODE", ctx) + RELEASE,
        "wrong-called": assoc_rq("SCANNER", "NOTUS", ctx[:1]) + RELEASE,
        "rq-only": rq,
        "abort-first": ABORT,
    }
    for name, data in seeds.items():
        with open(os.path.join(out, name + ".pdu"), "wb") as f:
            f.write(data)


CONFIGS = {
    "minimal.conf": "[node]\nae_title = SEGNODE\n",
    "peers-routes.conf": """[node]
ae_title = SEGNODE
port = 11112
storage = /tmp/segnode-fuzz-store
accept_unknown = yes
max_pdu = 65536
stable_after = 5
log_level = warn
device = cuda:0

[peer PACS]
ae_title = PACS
host = 127.0.0.1
port = 4242
allow = echo, store, find
stable_on_release = yes

[peer CT1]
ae_title = CT1
host = ::1
allow = none
tls = no

[route mr-abdomen]
modality = MR, PT
body_part = ABDOMEN
series_description = ^(t1|t2).*ax
calling_ae = CT1, PACS
image_type = ORIGINAL\\PRIMARY
method = atlas
labels = liver, spleen, kidney_left, kidney_right
send_to = PACS, @caller
stable_after = 3
continue = yes

[route rest]
method = atlas
send_to = @caller
""",
    "tls.conf": """[node]
ae_title = NODE
tls_port = 2762
tls_certificate = /nonexistent/cert.pem
tls_private_key = /nonexistent/key.pem
tls_profile = bcp195-nd
check_peer_host = yes
""",
    "bad.conf": "[node]\nae_title = \\\\bad\nport = 99999\n[peer X]\n[route]\nmodality =\n",
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--phantom", required=True)
    ap.add_argument("--data", default=os.path.join(os.path.dirname(__file__), "../../../shared/data/dicom"))
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "corpus"))
    ap.add_argument("--etc", default=os.path.join(os.path.dirname(__file__), "../../etc/segnode.conf"))
    a = ap.parse_args()
    for h in ("config", "dataset", "volume", "assoc"):
        shutil.rmtree(os.path.join(a.out, h), ignore_errors=True)
        os.makedirs(os.path.join(a.out, h))
    work = tempfile.mkdtemp(prefix="segnode-seeds-")
    try:
        subj = sorted(glob.glob(os.path.join(a.phantom, "subject-*")))[0]
        kinds = ["explicit", "implicit", "bigendian", "deflated", "rle", "jpegll", "jpegls", "j2k", "j2klossy"]
        first_ct = None
        for mod in ("ct", "mr-t1", "pet"):
            files = sorted(glob.glob(os.path.join(subj, mod, "*.dcm")))
            mid = len(files) // 2
            picked = files[mid - 1:mid + 2]
            cropped = []
            for i, f in enumerate(picked):
                dst = os.path.join(work, "%s-%d.dcm" % (mod, i))
                crop(f, dst)
                cropped.append(dst)
            first_ct = first_ct or cropped[0]
            for kind in kinds:
                if mod != "mr-t1" and kind not in ("explicit", "j2k", "rle"):
                    continue  # every syntax once (MR); the other modalities in a few
                outs = []
                for i, c in enumerate(cropped):
                    t = os.path.join(work, "%s-%s-%d.dcm" % (mod, kind, i))
                    if transcode(c, t, kind):
                        outs.append(open(t, "rb").read())
                if len(outs) != len(cropped):
                    print("make_seeds: %s %s: transcoder failed, skipped" % (mod, kind))
                    continue
                with open(os.path.join(a.out, "volume", "%s-%s.series" % (mod, kind)), "wb") as f:
                    f.write(SEP.join(outs))
                with open(os.path.join(a.out, "dataset", "%s-%s.dcm" % (mod, kind)), "wb") as f:
                    f.write(outs[0])
        # real files: the small ones whole (volume), headers with tiny pixel data (dataset)
        for name in ("emri_small_jpeg_2k_lossless.dcm", "emri_small_jpeg_2k_lossless_too_short.dcm",
                     "emri_small_RLE.dcm", "emri_small_jpeg_ls_lossless.dcm"):
            src = os.path.join(a.data, name)
            if os.path.exists(src):
                shutil.copyfile(src, os.path.join(a.out, "volume", name))
        for src in sorted(glob.glob(os.path.join(a.data, "*.dcm"))):
            ds = pydicom.dcmread(src, stop_before_pixels=True)
            ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
            ds.is_implicit_VR, ds.is_little_endian = False, True
            ds.save_as(os.path.join(a.out, "dataset", "hdr-" + os.path.basename(src)), write_like_original=False)
        for name, text in CONFIGS.items():
            with open(os.path.join(a.out, "config", name), "w") as f:
                f.write(text)
        shutil.copy(a.etc, os.path.join(a.out, "config", "etc-segnode.conf"))
        assoc_seeds(os.path.join(a.out, "assoc"), first_ct)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    total = sum(os.path.getsize(p) for p in glob.glob(os.path.join(a.out, "*", "*")))
    print("make_seeds: %d files, %.0f KiB" % (len(glob.glob(os.path.join(a.out, "*", "*"))), total / 1024))


if __name__ == "__main__":
    main()
