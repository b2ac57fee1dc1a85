#!/usr/bin/python3
"""tools/train/pseudo_crop.py MODALITY OUT ROOT/subject-NNN [...] — atlas pseudo-labels on a
cropped field of view (how models/pet's were made; tools/train/README.md, PET bullet).

The atlas method fails on a field of view much larger than its atlases' (the full-size PET, 700
mm, against the small CT atlases' 432 mm: every organ 3-10 times too large). So each series
ROOT/subject-NNN/MODALITY is cut in-plane to its central CROP_MM (default 430 mm), the node's
atlas method (`segnode segment --method atlas`) labels the crop, and the labels are padded back
onto the full grid, written as OUT/subject-NNN/MODALITY.nii.gz (NIfTI-1 with rows bottom-up, as
pipeline/nifti.c writes it; accseg.py finetune --pseudo reads it), with OUT/source.json as
pseudo.sh writes it (and the crop). No target label is read.
Environment, as pseudo.sh: SEGNODE (default build/tools/segnode/segnode), CONFIG (the atlas
library's config, default /work/train-data/atlas-contrast/segnode.conf), ATLASES (default
subject-001,subject-002,subject-003), CROP_MM. Existing outputs are kept (rerun to add
subjects). Native little-endian series only (the phantom's)."""
import glob
import gzip
import json
import os
import struct
import subprocess
import sys
import time

import numpy as np
import pydicom

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import data as D  # noqa: E402

SEGNODE = os.environ.get("SEGNODE", os.path.join(HERE, "..", "..", "build", "tools", "segnode", "segnode"))
CONFIG = os.environ.get("CONFIG", "/work/train-data/atlas-contrast/segnode.conf")
ATLASES = os.environ.get("ATLASES", "subject-001,subject-002,subject-003")
CROP_MM = float(os.environ.get("CROP_MM", "430"))


def write_nifti_labels(path, full, spacing):
    """A uint8 label volume [nz, ny, nx] as NIfTI-1 (gzip), rows stored bottom-up; only the header
    fields data.read_nifti reads matter."""
    nz, ny, nx = full.shape
    hdr = bytearray(348)
    struct.pack_into("<i", hdr, 0, 348)
    struct.pack_into("<8h", hdr, 40, 3, nx, ny, nz, 1, 1, 1, 1)
    struct.pack_into("<hh", hdr, 70, 2, 8)
    struct.pack_into("<8f", hdr, 76, 1, float(spacing[0]), float(spacing[1]), float(spacing[2]), 1, 1, 1, 1)
    struct.pack_into("<f", hdr, 108, 352.0)
    hdr[344:348] = b"n+1\0"
    with gzip.open(path, "wb") as fh:
        fh.write(bytes(hdr) + b"\0" * 4 + np.ascontiguousarray(full[:, ::-1, :]).tobytes())


def one(modality, subj, out):
    name = os.path.basename(subj.rstrip("/"))
    dest = os.path.join(out, name, modality + ".nii.gz")
    if os.path.exists(dest):
        print("%s/%s: kept" % (name, modality))
        return
    work = os.path.join(out, ".work", name)
    os.makedirs(os.path.join(work, modality), exist_ok=True)
    files = sorted(glob.glob(os.path.join(subj, modality, "*.dcm")))
    if not files:
        sys.exit("%s/%s: no series" % (subj, modality))
    n = None
    for f in files:
        ds = pydicom.dcmread(f)
        if ds.file_meta.TransferSyntaxUID != "1.2.840.10008.1.2.1":
            sys.exit("%s: only explicit little endian is cropped here" % f)
        ps = [float(v) for v in ds.PixelSpacing]          # row spacing, column spacing
        if n is None:
            n = min(ds.Rows, ds.Columns, int(round(CROP_MM / ps[1])))
        r0, c0 = (ds.Rows - n) // 2, (ds.Columns - n) // 2
        a = ds.pixel_array[r0:r0 + n, c0:c0 + n].copy()
        iop = [float(v) for v in ds.ImageOrientationPatient]
        ipp = np.array([float(v) for v in ds.ImagePositionPatient])
        ipp = ipp + c0 * ps[1] * np.array(iop[:3]) + r0 * ps[0] * np.array(iop[3:])
        ds.ImagePositionPatient = [float(x) for x in ipp]
        ds.Rows, ds.Columns = n, n
        ds.PixelData = a.tobytes()
        ds.save_as(os.path.join(work, modality, os.path.basename(f)))
    t0 = time.time()
    seg = os.path.join(work, modality + "-crop.dcm")
    subprocess.run([SEGNODE, "-c", CONFIG, "segment", "--method", "atlas", "--atlases", ATLASES,
                    "--out", seg, os.path.join(work, modality)], check=True)
    table = D.phantomio.load_labels_table(D.LABELS_TSV)
    lab, _ = D.phantomio.read_seg(seg, table)
    _, g, _ = D.phantomio.read_series(os.path.join(subj, modality))
    nx, ny, nz = g.size
    full = np.zeros((nz, ny, nx), np.uint8)
    r0, c0 = (ny - n) // 2, (nx - n) // 2
    full[:, r0:r0 + n, c0:c0 + n] = lab
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    tmp = dest + ".partial.nii.gz"
    write_nifti_labels(tmp, full, g.spacing)
    back = D.read_label_file(tmp)
    assert back.shape == full.shape and (back == full).all()
    os.rename(tmp, dest)
    print("%s/%s: %d x %d crop, %.0f s, labels %s" % (name, modality, n, n, time.time() - t0,
                                                      np.unique(full).tolist()))


def write_source(out, modality):
    """OUT/source.json, as pseudo.sh writes it (the bundle's data manifest copies it), plus the
    crop."""
    lib = json.loads(subprocess.run([SEGNODE, "-c", CONFIG, "atlas", "list", "--json"], check=True,
                                    capture_output=True, text=True).stdout)
    names = ATLASES.split(",")
    atlases = [{k: a[k] for k in ("name", "modality", "series_uid", "size")}
               for a in lib if a["name"] in names]
    if len(atlases) != len(names):
        sys.exit("atlases %s: not all in the library" % ATLASES)
    version = subprocess.run([SEGNODE, "--version"], capture_output=True, text=True).stdout
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "source.json"), "w") as fh:
        json.dump({"method": "atlas", "atlases": atlases, "fusion": "default", "config": CONFIG,
                   "segnode": version.strip().splitlines()[0] if version.strip() else SEGNODE,
                   "note": "atlases are labelled CT of training subjects only; no target label is read",
                   "crop": "%s series cropped in-plane to their central %g mm before the atlas "
                           "method; labels padded back to the full grid (%s.nii.gz); "
                           "tools/train/pseudo_crop.py" % (modality, CROP_MM, modality)},
                  fh, indent=1)


def main():
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    modality, out = sys.argv[1], sys.argv[2]
    write_source(out, modality)
    for subj in sys.argv[3:]:
        one(modality, subj, out)


if __name__ == "__main__":
    main()
