#!/usr/bin/python3
"""tests/volume/compare_dcm2niix.py — geometry against an independent reference.

For synthetic series (axial/oblique/sagittal CT and MR, PET, MONOCHROME1, signed 12-bit), the
real files in ../shared/data/dicom and, when the phantom generator exists, its series: convert
with segnode's reader (volume_tool or `segnode convert`) and with Debian's dcm2niix, then check
that dimensions, voxel size and the NIfTI sform/qform agree to 1e-3 mm and the voxel values
(after scl_slope/scl_inter) agree. One line per case; exit 1 if any case fails.
With --segnode, `segnode convert` (to .nii) must write the same file as the tool (to .nii.gz).
Usage: compare_dcm2niix.py --tool PATH [--data DIR] [--phantom PATH] [--segnode PATH] [--keep DIR]"""
import argparse
import gzip
import os
import shutil
import struct
import subprocess
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
TOL_MM = 1e-3


def read_nifti(path):
    b = (gzip.open if path.endswith(".gz") else open)(path, "rb").read()
    dim = struct.unpack_from("<8h", b, 40)
    dt = struct.unpack_from("<h", b, 70)[0]
    pix = struct.unpack_from("<8f", b, 76)
    off = int(struct.unpack_from("<f", b, 108)[0])
    slope, inter = struct.unpack_from("<2f", b, 112)
    qcode, scode = struct.unpack_from("<2h", b, 252)
    quat = struct.unpack_from("<6f", b, 256)
    srow = np.array(struct.unpack_from("<12f", b, 280), float).reshape(3, 4)
    types = {2: np.uint8, 4: np.int16, 8: np.int32, 16: np.float32, 64: np.float64, 512: np.uint16,
             256: np.int8, 768: np.uint32}
    nd = dim[0]
    shape = tuple(dim[1:1 + nd])
    n = int(np.prod(shape))
    data = np.frombuffer(b, types[dt], n, off).astype(np.float64)
    if slope not in (0.0,) and np.isfinite(slope):
        data = data * slope + inter
    data = data.reshape(shape[::-1])   # [k][j][i]
    return dict(dim=shape, pix=np.array(pix[1:1 + nd]), qfac=pix[0], srow=srow, qcode=qcode,
                scode=scode, quat=quat, data=data, dt=dt)


def qform_matrix(h):
    b, c, d, qx, qy, qz = h["quat"]
    a = np.sqrt(max(0.0, 1.0 - (b * b + c * c + d * d)))
    R = np.array([[a * a + b * b - c * c - d * d, 2 * (b * c - a * d), 2 * (b * d + a * c)],
                  [2 * (b * c + a * d), a * a + c * c - b * b - d * d, 2 * (c * d - a * b)],
                  [2 * (b * d - a * c), 2 * (c * d + a * b), a * a + d * d - c * c - b * b]])
    qfac = -1.0 if h["qfac"] < 0 else 1.0
    S = np.diag([h["pix"][0], h["pix"][1], h["pix"][2] * qfac])
    M = np.zeros((3, 4))
    M[:, :3] = R @ S
    M[:, 3] = [qx, qy, qz]
    return M


def run(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


def pydicom_values(src):
    """Rescaled values of a single-frame series straight from pydicom, sorted along the normal,
    rows bottom-up as in the NIfTI files: [k][j][i]."""
    import pydicom
    sl = []
    for f in sorted(os.listdir(src)):
        ds = pydicom.dcmread(os.path.join(src, f))
        iop = np.array(ds.ImageOrientationPatient, float)
        nrm = np.cross(iop[:3], iop[3:])
        v = ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        sl.append((float(np.dot(np.array(ds.ImagePositionPatient, float), nrm)), v[::-1, :]))
    sl.sort(key=lambda t: t[0])
    return np.stack([v for _, v in sl])


def compare(name, src, tool, opts, work, tol_val=None, ref_src=None, values="dcm2niix",
            segnode=""):
    out = os.path.join(work, name)
    os.makedirs(out, exist_ok=True)
    mine = os.path.join(out, "segnode.nii.gz")
    r = run([tool, "convert"] + opts + [src, mine])
    if r.returncode != 0:
        return False, "segnode failed: " + r.stderr.strip()[-300:]
    if segnode:
        # `segnode convert` itself must write the same file (uncompressed: its fast path).
        raw = os.path.join(out, "segnode_cli.nii")
        cli = ["--allow-single" if o == "--single" else o for o in opts]
        r = run([segnode, "convert"] + cli + [src, raw])
        if r.returncode != 0:
            return False, "segnode convert failed: " + r.stderr.strip()[-300:]
        with gzip.open(mine, "rb") as f, open(raw, "rb") as g:
            if f.read() != g.read():
                return False, "segnode convert and volume_tool wrote different voxels or headers"
    d2 = os.path.join(out, "d2n")
    os.makedirs(d2, exist_ok=True)
    r2 = run(["dcm2niix", "-z", "n", "-b", "n", "-f", "ref", "-o", d2, ref_src or src])
    refs = sorted(f for f in os.listdir(d2) if f.endswith(".nii"))
    if len(refs) != 1:
        return False, "dcm2niix made %d files: %s %s" % (len(refs), refs, r2.stdout[-300:])
    a, b = read_nifti(mine), read_nifti(os.path.join(d2, refs[0]))
    msgs = []
    if a["dim"] != b["dim"]:
        return False, "dims %s vs dcm2niix %s" % (a["dim"], b["dim"])
    dpix = np.abs(a["pix"][:3] - b["pix"][:3]).max()
    dsform = np.abs(a["srow"] - b["srow"]).max()
    dq = np.abs(qform_matrix(a) - a["srow"]).max()       # own qform agrees with own sform
    dqb = np.abs(qform_matrix(a) - qform_matrix(b)).max()
    ok = dpix <= TOL_MM and dsform <= TOL_MM and dq <= TOL_MM and dqb <= TOL_MM
    ref = b["data"] if values == "dcm2niix" else pydicom_values(src)
    diff = np.abs(a["data"] - ref)
    scale = np.maximum(1.0, np.abs(ref))
    if tol_val is None:
        vok = bool((diff <= 1e-4 * scale).all())
    else:
        vok = bool((diff <= tol_val * scale).all())
    ok = ok and vok
    msgs.append("dims %s pixdim %.2e sform %.2e qform %.2e/%.2e mm values(%s) max|d| %.3g" %
                ("x".join(map(str, a["dim"])), dpix, dsform, dq, dqb, values, diff.max()))
    if not vok:
        msgs.append("VALUES DIFFER at %d voxels" % int((diff > 1e-4 * scale).sum()))
    return ok, "; ".join(msgs)


def phantom_series(phantom, work):
    """Run the phantom generator and make one folder (of links) per image series it wrote."""
    import pydicom
    out = os.path.join(work, "phantom_out")
    r = run([phantom, "--out", out, "--subjects", "1", "--modalities", "ct,cbct,mr-t1,mr-t2,pet",
             "--seed", "7", "--size", "small"])
    if r.returncode != 0:
        print("phantom generator failed: " + r.stderr[-300:], file=sys.stderr)
        return []
    series = {}
    for root, _, files in os.walk(out):
        for f in files:
            p = os.path.join(root, f)
            try:
                ds = pydicom.dcmread(p, stop_before_pixels=True)
            except Exception:
                continue
            if getattr(ds, "Modality", "") in ("SEG", "RTSTRUCT", "SR"):
                continue
            key = "%s_%s" % (getattr(ds, "Modality", "X"), ds.SeriesInstanceUID[-8:])
            series.setdefault(key, []).append(p)
    result = []
    for key, files in sorted(series.items()):
        d = os.path.join(work, "phantom_" + key)
        os.makedirs(d, exist_ok=True)
        for i, p in enumerate(files):
            os.symlink(p, os.path.join(d, "%05d.dcm" % i))
        result.append(("phantom_" + key, d))
    return result


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tool", required=True)
    ap.add_argument("--data", default=os.path.join(HERE, "../../../shared/data/dicom"))
    ap.add_argument("--phantom", default="")
    ap.add_argument("--keep", default="")
    ap.add_argument("--segnode", default="", help="segnode binary: check `segnode convert` too")
    args = ap.parse_args()
    if not shutil.which("dcm2niix"):
        print("SKIP: dcm2niix not installed")
        return 77
    work = args.keep or tempfile.mkdtemp(prefix="sn_d2n_")
    os.makedirs(work, exist_ok=True)
    gen = os.path.join(work, "series")
    if not os.path.isdir(gen):
        subprocess.run(["/usr/bin/python3", os.path.join(HERE, "make_series.py"), "good", gen],
                       check=True)
    # (name, source, tool options, value tolerance, dcm2niix source, value reference)
    cases = []
    for n in sorted(os.listdir(gen)):
        # dcm2niix masks signed data with Bits Stored < 16 without sign extension (-748 becomes
        # 3348): compare those values with pydicom's, the geometry still with dcm2niix.
        values = "pydicom" if n == "ct_signed12" else "dcm2niix"
        cases.append((n, os.path.join(gen, n), ["--no-suv"] if n == "pet" else [], None, None,
                      values))

    def single(fname):
        d = os.path.join(work, "real_" + os.path.splitext(fname)[0])
        os.makedirs(d, exist_ok=True)
        if not os.path.exists(os.path.join(d, fname)):
            shutil.copy(os.path.join(args.data, fname), d)
        return d
    cases.append(("real_MR2_UNCR", single("MR2_UNCR.dcm"), ["--single"], None, None, "dcm2niix"))
    # dcm2niix 1.0.20220720 finds "no valid DICOM images" in MR2_J2KR: the reference for the
    # JPEG 2000 file is dcm2niix on the uncompressed original.
    cases.append(("real_MR2_J2KR", single("MR2_J2KR.dcm"), ["--single"], None,
                  single("MR2_UNCR.dcm"), "dcm2niix"))
    cases.append(("real_eCT_Supplemental", single("eCT_Supplemental.dcm"), [], None, None,
                  "dcm2niix"))
    if args.phantom and os.path.exists(args.phantom):
        for name, d in phantom_series(args.phantom, work):
            cases.append((name, d, ["--no-suv"], None, None, "dcm2niix"))
    else:
        print("note: phantom generator not built; synthetic series only")
    failed = 0
    for name, src, opts, tol, ref_src, values in cases:
        ok, msg = compare(name, src, args.tool, opts, work, tol, ref_src, values, args.segnode)
        print("%-24s %s  %s" % (name, "OK  " if ok else "FAIL", msg))
        failed += not ok
    if not args.keep and not failed:
        shutil.rmtree(work, ignore_errors=True)
    else:
        print("work folder kept: " + work)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
