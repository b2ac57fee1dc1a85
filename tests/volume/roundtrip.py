#!/usr/bin/python3
"""tests/volume/roundtrip.py — transfer-syntax round trips: a synthetic CT series (12-bit,
intercept -1024), a signed 16-bit CT, an oblique MR and, when the phantom generator exists, its
CT/MR/PET series are re-encoded with DCMTK (dcmconv +ti/+tb/+td, dcmcrle, dcmcjpeg, dcmcjpls)
and GDCM (gdcmconv --j2k); every lossless copy must load into a volume bit-identical to the
original's, lossy copies within a bound (max and mean error printed). One line per case.
Usage: roundtrip.py --tool volume_tool [--phantom PATH] [--keep DIR]"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from compare_dcm2niix import read_nifti, phantom_series  # noqa: E402

# Lossy variants must decode exactly as an independent reference decoder does; their error
# against the original is the encoder's choice and is only reported.
REFERENCE_DECODER = {
    "j2k_lossy": ("GDCM", lambda src, dst: ["gdcmconv", "--raw", src, dst]),
    "jpeg_extended": ("dcmdjpeg", lambda src, dst: ["dcmdjpeg", src, dst]),
    "jpeg_ls_near": ("dcmdjpls", lambda src, dst: ["dcmdjpls", src, dst]),
}


def load(tool, src, out, opts):
    r = subprocess.run([tool, "convert", "--float"] + opts + [src, out], capture_output=True,
                       text=True)
    if r.returncode != 0:
        return None, r.stderr.strip()[-300:]
    return read_nifti(out)["data"], ""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tool", required=True)
    ap.add_argument("--phantom", default="")
    ap.add_argument("--keep", default="")
    args = ap.parse_args()
    work = args.keep or tempfile.mkdtemp(prefix="sn_rt_")
    gen = os.path.join(work, "series")
    if not os.path.isdir(gen):
        subprocess.run(["/usr/bin/python3", os.path.join(HERE, "make_series.py"), "good", gen],
                       check=True)
    sources = [(n, os.path.join(gen, n)) for n in ("ct_axial", "ct_signed", "mr_oblique", "pet")]
    if args.phantom and os.path.exists(args.phantom):
        sources += phantom_series(args.phantom, work)
    else:
        print("note: phantom generator not built; synthetic series only")
    failed = 0
    for name, src in sources:
        opts = ["--no-suv"]
        ref, why = load(args.tool, src, os.path.join(work, name + "_ref.nii"), opts)
        if ref is None:
            print("%-14s %-18s FAIL  reference: %s" % (name, "-", why))
            failed += 1
            continue
        vdir = os.path.join(work, name + "_variants")
        if not os.path.isdir(vdir):
            subprocess.run(["/usr/bin/python3", os.path.join(HERE, "make_series.py"), "variants",
                            src, vdir], check=True)
        for var in sorted(os.listdir(vdir)):
            got, why = load(args.tool, os.path.join(vdir, var),
                            os.path.join(work, "%s_%s.nii" % (name, var)), opts)
            if got is None:
                print("%-14s %-18s FAIL  %s" % (name, var, why))
                failed += 1
                continue
            if got.shape != ref.shape:
                print("%-14s %-18s FAIL  shape %s vs %s" % (name, var, got.shape, ref.shape))
                failed += 1
                continue
            d = np.abs(got - ref)
            if var in REFERENCE_DECODER:
                tool, cmd = REFERENCE_DECODER[var]
                rd = os.path.join(work, "%s_%s_ref_raw" % (name, var))
                os.makedirs(rd, exist_ok=True)
                for f in os.listdir(os.path.join(vdir, var)):
                    subprocess.run(cmd(os.path.join(vdir, var, f), os.path.join(rd, f)), check=True)
                g, why = load(args.tool, rd, rd + ".nii", opts)
                ok = g is not None and g.shape == got.shape and bool((g == got).all())
                print("%-14s %-18s %s  identical to %s's decoder: %s; vs original max|d| %.4g "
                      "mean|d| %.4g" % (name, var, "OK  " if ok else "FAIL", tool, ok, d.max(), d.mean()))
                failed += not ok
                continue
            ok = bool((d == 0).all())
            kind = "bit-identical" if ok else "DIFFERS"
            print("%-14s %-18s %s  %s max|d| %.4g mean|d| %.4g" %
                  (name, var, "OK  " if ok else "FAIL", kind, d.max(), d.mean()))
            failed += not ok
    if not args.keep and not failed:
        shutil.rmtree(work, ignore_errors=True)
    elif failed:
        print("work folder kept: " + work)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
