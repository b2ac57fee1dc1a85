#!/usr/bin/python3
"""tests/seg/segcheck.py — checks for the SEG writer/reader and `segnode segment`, independent of
segnode's own DICOM code: SEGs are decoded here with pydicom + numpy, every frame is mapped back
to a source slice both through its Source Image reference (SOP Instance UID + frame number) and
through its Image Position, and the label volume is rebuilt and compared voxel for voxel.

  segcheck.py prepare WORK SEGNODE SEG_TOOL LABELS.tsv DATA_DIR PHANTOM
  segcheck.py {dciodvfy|pydicom|reader|pack38|nifti|fractional|errors|liver|method}
              WORK SEGNODE SEG_TOOL LABELS.tsv DATA_DIR

prepare makes: phantom CT/MR-T1/PET (small), an enhanced MR (emri_small.dcm with functional
groups added, frames stored in reverse position order), a 38x23x6 oblique CT; the true label
volume of each (phantom: its ground-truth SEG decoded here; others synthetic) as .npy and NIfTI;
and SEGs written by `segnode segment` from the NIfTI labels, empty frames omitted and kept.
Only /usr/bin/python3 has pydicom and numpy."""
import glob
import json
import os
import shutil
import struct
import subprocess
import sys

import numpy as np
import pydicom
from pydicom.dataset import Dataset

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "volume"))
import make_series  # noqa: E402  (pydicom series writer shared with the volume tests)

SOURCES = ["ct", "mr-t1", "pet", "emr"]
MODES = ["omit", "keep"]
SEG_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"


def fail(msg):
    print("FAIL:", msg)
    sys.exit(1)


def run(cmd, ok=True):
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if ok and p.returncode != 0:
        fail(f"{' '.join(cmd)} -> {p.returncode}\n{p.stdout}")
    return p


# ---- label table ----------------------------------------------------------------------------
def load_table(path):
    by_code, by_num = {}, {}
    for line in open(path):
        if not line.strip() or line.startswith("#"):
            continue
        f = line.rstrip("\n").split("\t")
        num = int(f[0])
        typ = tuple(f[3].split(":", 2))
        by_code[(typ[0], typ[1])] = num
        by_num[num] = {"name": f[1], "category": tuple(f[2].split(":", 2)), "type": typ}
    return by_code, by_num


# ---- source series --------------------------------------------------------------------------
def read_series(d):
    """Geometry and per-slice sources of the image series in folder d (classic or enhanced)."""
    files = [p for p in sorted(glob.glob(os.path.join(d, "**", "*"), recursive=True)) if os.path.isfile(p)]
    dss = []
    for p in files:
        try:
            ds = pydicom.dcmread(p, stop_before_pixels=True)
        except Exception:
            continue
        if ds.SOPClassUID != SEG_CLASS:
            dss.append(ds)
    if not dss:
        fail(f"no images in {d}")
    slices = []  # (position along normal, ipp, sop_class, sop_uid, frame)
    ds0 = dss[0]
    if "PerFrameFunctionalGroupsSequence" in ds0:
        sh = ds0.SharedFunctionalGroupsSequence[0]
        iop = [float(v) for v in sh.PlaneOrientationSequence[0].ImageOrientationPatient]
        ps = [float(v) for v in sh.PixelMeasuresSequence[0].PixelSpacing]
        n = np.cross(iop[:3], iop[3:])
        for f, it in enumerate(ds0.PerFrameFunctionalGroupsSequence):
            ipp = np.array([float(v) for v in it.PlanePositionSequence[0].ImagePositionPatient])
            slices.append((float(ipp @ n), ipp, ds0.SOPClassUID, ds0.SOPInstanceUID, f + 1))
    else:
        iop = [float(v) for v in ds0.ImageOrientationPatient]
        ps = [float(v) for v in ds0.PixelSpacing]
        n = np.cross(iop[:3], iop[3:])
        for ds in dss:
            ipp = np.array([float(v) for v in ds.ImagePositionPatient])
            slices.append((float(ipp @ n), ipp, ds.SOPClassUID, ds.SOPInstanceUID, 0))
    slices.sort(key=lambda s: s[0])
    step = (slices[-1][0] - slices[0][0]) / (len(slices) - 1)
    return {"nx": int(ds0.Columns), "ny": int(ds0.Rows), "nz": len(slices), "iop": iop, "ps": ps,
            "normal": n, "step": step, "origin": slices[0][1], "slices": slices,
            "study": ds0.StudyInstanceUID, "series": ds0.SeriesInstanceUID,
            "for": ds0.FrameOfReferenceUID, "patient_id": str(ds0.get("PatientID", ""))}


# ---- independent SEG decoder ----------------------------------------------------------------
def decode_seg(path, ser, table, strict=True):
    """Rebuild the label volume (nz, ny, nx) of SEG `path` on series `ser`; every frame is placed
    by its Source Image reference and must sit at the same slice by its position. Returns
    (volume, facts) and fails on any inconsistency."""
    by_code, _ = load_table(table)
    ds = pydicom.dcmread(path)
    probs = []
    if ds.SOPClassUID != SEG_CLASS or ds.Modality != "SEG":
        fail(f"{path}: not a SEG")
    if ds.SegmentationType != "BINARY" or ds.BitsAllocated != 1:
        fail(f"{path}: not BINARY 1-bit")
    rows, cols, nf = int(ds.Rows), int(ds.Columns), int(ds.NumberOfFrames)
    if (rows, cols) != (ser["ny"], ser["nx"]):
        fail(f"{path}: frame size {cols}x{rows} != series {ser['nx']}x{ser['ny']}")
    if ds.StudyInstanceUID != ser["study"]:
        probs.append("Study Instance UID differs from the source's")
    if ds.FrameOfReferenceUID != ser["for"]:
        probs.append("Frame of Reference UID differs from the source's")
    if ds.SeriesInstanceUID == ser["series"]:
        probs.append("SEG reuses the source Series Instance UID")
    if strict and str(ds.get("PatientID", "")) != ser["patient_id"]:
        probs.append("Patient ID differs from the source's")
    rs = ds.ReferencedSeriesSequence[0]
    if rs.SeriesInstanceUID != ser["series"]:
        probs.append("Referenced Series Sequence names another series")
    refd = {it.ReferencedSOPInstanceUID for it in rs.ReferencedInstanceSequence}
    if refd != {s[3] for s in ser["slices"]}:
        probs.append("Referenced Instance Sequence != the source instances")
    if strict:
        ce = ds.ContributingEquipmentSequence[0]
        if ce.Manufacturer != "segnode" or not ce.get("SoftwareVersions"):
            probs.append("Contributing Equipment does not name segnode and its version")
        if not str(ds.get("SeriesDescription", "")):
            probs.append("no Series Description")
    seg2label = {}
    for s in ds.SegmentSequence:
        t = s.SegmentedPropertyTypeCodeSequence[0]
        c = s.SegmentedPropertyCategoryCodeSequence[0]
        if strict and (t.CodingSchemeDesignator != "SCT" or c.CodingSchemeDesignator != "SCT"):
            probs.append(f"segment {s.SegmentNumber}: not SCT")
        if strict and (s.SegmentAlgorithmType != "AUTOMATIC" or not s.get("SegmentAlgorithmName")):
            probs.append(f"segment {s.SegmentNumber}: algorithm type/name")
        if strict and "SegmentationAlgorithmIdentificationSequence" in s:
            a = s.SegmentationAlgorithmIdentificationSequence[0]
            if not a.get("AlgorithmVersion") or not a.get("AlgorithmName"):
                probs.append(f"segment {s.SegmentNumber}: algorithm identification incomplete")
        elif strict:
            probs.append(f"segment {s.SegmentNumber}: no Segmentation Algorithm Identification")
        if "RecommendedDisplayCIELabValue" not in s:
            probs.append(f"segment {s.SegmentNumber}: no display colour")
        key = (t.CodingSchemeDesignator, t.CodeValue)
        if key not in by_code:
            fail(f"segment {s.SegmentNumber}: code {key} not in the table")
        seg2label[int(s.SegmentNumber)] = by_code[key]
    sh = ds.SharedFunctionalGroupsSequence[0]
    iop = [float(v) for v in sh.PlaneOrientationSequence[0].ImageOrientationPatient]
    ps = [float(v) for v in sh.PixelMeasuresSequence[0].PixelSpacing]
    if not np.allclose(iop, ser["iop"], atol=1e-5) or not np.allclose(ps, ser["ps"], atol=1e-5):
        probs.append(f"orientation/spacing {iop} {ps} != source {ser['iop']} {ser['ps']}")
    bits = np.unpackbits(np.frombuffer(ds.PixelData, np.uint8), bitorder="little")
    if bits.size < nf * rows * cols:
        fail(f"{path}: Pixel Data too short")
    frames = bits[: nf * rows * cols].reshape(nf, rows, cols)
    if bits[nf * rows * cols:].any():
        probs.append("non-zero padding bits after the last frame")
    by_ref = {(s[3], s[4]): k for k, s in enumerate(ser["slices"])}
    vol = np.zeros((ser["nz"], rows, cols), np.uint16)
    empty_frames = 0
    frames_of = {}
    for f, it in enumerate(ds.PerFrameFunctionalGroupsSequence):
        segno = int(it.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        src = it.DerivationImageSequence[0].SourceImageSequence[0]
        rf = int(src.get("ReferencedFrameNumber", 0) or 0)
        key = (src.ReferencedSOPInstanceUID, rf)
        if key not in by_ref:
            fail(f"frame {f + 1}: reference {key} is not a source slice")
        k = by_ref[key]
        if src.ReferencedSOPClassUID != ser["slices"][k][2]:
            probs.append(f"frame {f + 1}: wrong Referenced SOP Class")
        ipp = np.array([float(v) for v in it.PlanePositionSequence[0].ImagePositionPatient])
        d = ipp - ser["origin"]
        kpos = d @ ser["normal"] / ser["step"]
        inplane = np.array([d @ np.array(ser["iop"][:3]), d @ np.array(ser["iop"][3:])])
        if abs(kpos - k) > 1e-3 or np.abs(inplane).max() > 1e-3:
            fail(f"frame {f + 1}: position {ipp} is slice {kpos:.4f}, reference says slice {k}")
        if not np.allclose(ipp, ser["slices"][k][1], atol=1e-4):
            fail(f"frame {f + 1}: position {ipp} != source slice position {ser['slices'][k][1]}")
        frames_of.setdefault(segno, []).append(k)
        m = frames[f].astype(bool)
        if not m.any():
            empty_frames += 1
        lab = seg2label[segno]
        if (vol[k][m] != 0).any():
            fail(f"frame {f + 1}: overlaps another segment")
        vol[k][m] = lab
    if probs:
        fail(f"{path}: " + "; ".join(probs))
    return vol, {"frames": nf, "empty_frames": empty_frames, "segments": len(seg2label),
                 "frames_of": frames_of}


def dice_report(truth, got, what):
    ok = np.array_equal(truth, got)
    parts = []
    for v in sorted(set(np.unique(truth)) | set(np.unique(got))):
        if v == 0:
            continue
        a, b = truth == v, got == v
        d = 2.0 * np.logical_and(a, b).sum() / (a.sum() + b.sum())
        parts.append(f"{v}:{d:.4f}")
        ok = ok and d == 1.0
    print(f"{what}: Dice per label {' '.join(parts)} -> {'exact' if ok else 'MISMATCH'}")
    return ok


# ---- NIfTI writer (pure numpy) ---------------------------------------------------------------
def write_nifti(path, vol, ser, flip_rows=False, dtype=np.uint16):
    """vol (nz, ny, nx) -> NIfTI-1 in RAS; flip_rows stores rows bottom-up as dcm2niix does."""
    r, c, n = np.array(ser["iop"][:3]), np.array(ser["iop"][3:]), ser["normal"]
    A = np.zeros((4, 4))
    A[:3, 0] = r * ser["ps"][1]
    A[:3, 1] = c * ser["ps"][0]
    A[:3, 2] = n * ser["step"]
    A[:3, 3] = ser["origin"]
    A[3, 3] = 1
    data = vol
    if flip_rows:
        data = vol[:, ::-1, :]
        A[:3, 3] = A[:3, 3] + A[:3, 1] * (ser["ny"] - 1)
        A[:3, 1] = -A[:3, 1]
    A[0, :] *= -1  # LPS -> RAS
    A[1, :] *= -1
    code = {np.uint8: 2, np.int16: 4, np.float32: 16, np.uint16: 512}[dtype]
    bitpix = np.dtype(dtype).itemsize * 8
    h = bytearray(348)
    struct.pack_into("<i", h, 0, 348)
    struct.pack_into("<8h", h, 40, 3, ser["nx"], ser["ny"], ser["nz"], 1, 1, 1, 1)
    struct.pack_into("<hh", h, 70, code, bitpix)
    struct.pack_into("<8f", h, 76, 1, ser["ps"][1], ser["ps"][0], ser["step"], 1, 1, 1, 1)
    struct.pack_into("<f", h, 108, 352.0)
    struct.pack_into("<ff", h, 112, 1.0, 0.0)
    h[123] = 10  # xyzt_units: mm
    struct.pack_into("<hh", h, 252, 0, 1)  # qform 0, sform 1
    for i in range(3):
        struct.pack_into("<4f", h, 280 + 16 * i, *A[i])
    h[344:348] = b"n+1\0"
    raw = bytes(h) + b"\0\0\0\0" + np.ascontiguousarray(data).astype(dtype).tobytes()
    if path.endswith(".gz"):
        import gzip
        raw = gzip.compress(raw)
    with open(path, "wb") as f:
        f.write(raw)


# ---- inputs ----------------------------------------------------------------------------------
def make_enhanced_mr(src, out):
    """emri_small.dcm has no functional groups; give it a geometry (oblique, anisotropic) with
    frames stored in reverse position order, so frame numbers != slice order."""
    os.makedirs(out, exist_ok=True)
    ds = pydicom.dcmread(src)
    nf = int(ds.NumberOfFrames)
    a = np.radians(12)
    iop = [np.cos(a), 0.0, -np.sin(a), 0.0, 1.0, 0.0]
    n = np.cross(iop[:3], iop[3:])
    sh, pm, po = Dataset(), Dataset(), Dataset()
    pm.PixelSpacing = ["0.9", "0.8"]
    pm.SliceThickness = "3"
    pm.SpacingBetweenSlices = "3"
    po.ImageOrientationPatient = [f"{v:.8f}" for v in iop]
    sh.PixelMeasuresSequence = [pm]
    sh.PlaneOrientationSequence = [po]
    ds.SharedFunctionalGroupsSequence = [sh]
    per = []
    origin = np.array([-30.0, -25.0, 40.0])
    for f in range(nf):
        k = nf - 1 - f
        it, pp, fc = Dataset(), Dataset(), Dataset()
        pp.ImagePositionPatient = [f"{v:.6f}" for v in origin + k * 3.0 * n]
        fc.FrameAcquisitionNumber = 1
        fc.StackID = "1"
        fc.InStackPositionNumber = k + 1
        it.PlanePositionSequence = [pp]
        it.FrameContentSequence = [fc]
        per.append(it)
    ds.PerFrameFunctionalGroupsSequence = per
    ds.save_as(os.path.join(out, "emr.dcm"))


def synthetic_labels(nz, ny, nx):
    z, y, x = np.meshgrid(np.arange(nz), np.arange(ny), np.arange(nx), indexing="ij")
    v = np.zeros((nz, ny, nx), np.uint16)
    v[((x - nx * 0.45) ** 2 / (nx * 0.3) ** 2 + (y - ny * 0.5) ** 2 / (ny * 0.25) ** 2 < 1) & (z >= 1) & (z < nz - 1)] = 8
    v[(x < nx // 4) & (y > ny // 2) & (z < nz // 2 + 1)] = 9
    v[(x > nx * 0.7) & (y < ny * 0.3) & (z == nz // 2)] = 12
    v[-1, -1, -1] = 14  # the very last voxel: the packing edge
    v[0, 0, 0] = 13     # the very first
    return v


def segnode_segment(segnode, labels, out, series_dir, *extra, ok=True):
    return run([segnode, "segment", "--labels", labels, "--out", out, *extra, series_dir], ok=ok)


def prepare(work, segnode, seg_tool, table, data, phantom):
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    run([phantom, "--out", os.path.join(work, "ph"), "--modalities", "ct,mr-t1,pet", "--size", "small", "--quiet"])
    dirs = {m: os.path.join(work, "ph", "subject-001", m) for m in ["ct", "mr-t1", "pet"]}
    make_enhanced_mr(os.path.join(data, "emri_small.dcm"), os.path.join(work, "emr"))
    dirs["emr"] = os.path.join(work, "emr")
    # 38x23x6 oblique CT: rows*cols*frames is not a multiple of 8
    stored = (np.arange(6 * 23 * 38).reshape(6, 23, 38) % 200).astype(np.int32)
    make_series.write_series(os.path.join(work, "s38"), stored, iop=(0.96592583, 0.25881905, 0, 0, 0, -1),
                             origin=(-12.5, 30.25, 80.0), ps=(0.7, 0.8), step=2.5)
    dirs["s38"] = os.path.join(work, "s38")
    json.dump(dirs, open(os.path.join(work, "dirs.json"), "w"))
    for name, d in dirs.items():
        ser = read_series(d)
        if name in ("ct", "mr-t1", "pet"):
            truth, _ = decode_seg(os.path.join(work, "ph", "subject-001", "seg", name + ".dcm"), ser, table,
                                  strict=False)
        else:
            truth = synthetic_labels(ser["nz"], ser["ny"], ser["nx"])
        np.save(os.path.join(work, f"truth_{name}.npy"), truth)
        nii = os.path.join(work, f"labels_{name}.nii" + (".gz" if name == "ct" else ""))
        write_nifti(nii, truth, ser, flip_rows=name in ("ct", "emr"))
        for mode in MODES:
            out = os.path.join(work, f"seg_{name}_{mode}.dcm")
            extra = ["--keep-empty"] if mode == "keep" else []
            p = segnode_segment(segnode, nii, out, d, *extra, "--series-description", f"test {name} {mode}")
            print(p.stdout.strip())
    print("prepared", work)


# ---- checks ----------------------------------------------------------------------------------
def t_dciodvfy(work, *_):
    bad = 0
    for name in SOURCES + ["s38"]:
        for mode in MODES:
            p = os.path.join(work, f"seg_{name}_{mode}.dcm")
            r = subprocess.run(["dciodvfy", p], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            lines = [l for l in r.stdout.splitlines() if l.startswith(("Error", "Warning"))]
            errs = [l for l in lines if l.startswith("Error")]
            warns = [l for l in lines if l.startswith("Warning")]
            print(f"{name:6s} {mode:4s}: {len(errs)} errors, {len(warns)} warnings")
            for l in sorted(set(lines)):
                print("    " + l)
            bad += len(errs)
    if bad:
        fail(f"dciodvfy reported {bad} errors")
    print("OK: dciodvfy reports no errors")


def t_pydicom(work, segnode, seg_tool, table, data):
    dirs = json.load(open(os.path.join(work, "dirs.json")))
    ok = True
    for name in SOURCES:
        ser = read_series(dirs[name])
        truth = np.load(os.path.join(work, f"truth_{name}.npy"))
        present = {(int(v), k) for k in range(ser["nz"]) for v in np.unique(truth[k]) if v}
        nlab = len(set(np.unique(truth)) - {0})
        for mode in MODES:
            got, facts = decode_seg(os.path.join(work, f"seg_{name}_{mode}.dcm"), ser, table)
            ok &= dice_report(truth, got, f"{name} {mode}: {facts['frames']} frames")
            if mode == "omit" and (facts["empty_frames"] or facts["frames"] != len(present)):
                fail(f"{name}: {facts['empty_frames']} empty frames, {facts['frames']} frames for {len(present)} (label, slice) pairs")
            if mode == "keep" and facts["frames"] != nlab * ser["nz"]:
                fail(f"{name}: keep-empty wrote {facts['frames']} frames, expected {nlab * ser['nz']}")
            if name == "emr":
                ds = pydicom.dcmread(os.path.join(work, f"seg_{name}_{mode}.dcm"), stop_before_pixels=True)
                rf = {int(it.DerivationImageSequence[0].SourceImageSequence[0].ReferencedFrameNumber)
                      for it in ds.PerFrameFunctionalGroupsSequence}
                print(f"  emr {mode}: referenced frame numbers {sorted(rf)}")
    if not ok:
        fail("label volumes differ")
    print("OK: every frame maps back to its source slice; label volumes reproduced exactly")


def t_reader(work, segnode, seg_tool, table, data):
    """The C reader: phantom ground-truth SEG -> labels on its series -> SEG; must reproduce it."""
    dirs = json.load(open(os.path.join(work, "dirs.json")))
    ok = True
    for name in ["ct", "mr-t1", "pet"]:
        gt = os.path.join(work, "ph", "subject-001", "seg", name + ".dcm")
        out = os.path.join(work, f"reread_{name}.dcm")
        segnode_segment(segnode, gt, out, dirs[name])
        ser = read_series(dirs[name])
        got, _ = decode_seg(out, ser, table)
        ok &= dice_report(np.load(os.path.join(work, f"truth_{name}.npy")), got, f"{name} GT SEG -> segnode segment")
    # and our own SEGs (omitted and kept frames) read back
    for name in ["emr"]:
        for mode in MODES:
            out = os.path.join(work, f"reread_{name}_{mode}.dcm")
            segnode_segment(segnode, os.path.join(work, f"seg_{name}_{mode}.dcm"), out, dirs[name])
            got, _ = decode_seg(out, read_series(dirs[name]), table)
            ok &= dice_report(np.load(os.path.join(work, f"truth_{name}.npy")), got, f"{name} {mode} SEG read back")
    if not ok:
        fail("reader did not reproduce the labels")
    print("OK: the SEG reader reproduces the ground truth exactly")


def t_pack38(work, segnode, seg_tool, table, data):
    dirs = json.load(open(os.path.join(work, "dirs.json")))
    ser = read_series(dirs["s38"])
    truth = np.load(os.path.join(work, "truth_s38.npy"))
    assert truth.shape == (6, 23, 38)
    ok = True
    for mode in MODES:
        p = os.path.join(work, f"seg_s38_{mode}.dcm")
        got, facts = decode_seg(p, ser, table)
        ds = pydicom.dcmread(p)
        nbits = facts["frames"] * 23 * 38
        need = (nbits + 7) // 8
        print(f"38x23x6 {mode}: {facts['frames']} frames, {nbits} bits, Pixel Data {len(ds.PixelData)} bytes (need {need})")
        if nbits % 8 == 0:
            print("  (note: this frame count packs to whole bytes)")
        ok &= dice_report(truth, got, f"38x23x6 {mode}")
    # round trip through the C reader as well
    out = os.path.join(work, "reread_s38.dcm")
    segnode_segment(segnode, os.path.join(work, "seg_s38_keep.dcm"), out, dirs["s38"])
    got, _ = decode_seg(out, ser, table)
    ok &= dice_report(truth, got, "38x23x6 SEG -> reader -> writer")
    if not ok:
        fail("38x23x6 round trip is not exact")
    print("OK: 38x23x6 round trips exactly (last pixel included)")


def t_nifti(work, segnode, seg_tool, table, data):
    """NIfTI inputs: rows flipped (dcm2niix layout) and not, .nii and .nii.gz, uint8/int16/float32."""
    dirs = json.load(open(os.path.join(work, "dirs.json")))
    ok = True
    for name, flip, dtype, ext in [("mr-t1", False, np.uint8, ".nii"), ("mr-t1", True, np.int16, ".nii.gz"),
                                   ("emr", False, np.float32, ".nii"), ("s38", True, np.uint16, ".nii.gz")]:
        ser = read_series(dirs[name])
        truth = np.load(os.path.join(work, f"truth_{name}.npy"))
        nii = os.path.join(work, f"n_{name}_{int(flip)}_{np.dtype(dtype).name}{ext}")
        write_nifti(nii, truth, ser, flip_rows=flip, dtype=dtype)
        out = nii + ".seg.dcm"
        segnode_segment(segnode, nii, out, dirs[name])
        got, _ = decode_seg(out, ser, table)
        ok &= dice_report(truth, got, f"{os.path.basename(nii)}")
    if not ok:
        fail("NIfTI round trip is not exact")
    print("OK: NIfTI label input round trips exactly")


def t_fractional(work, segnode, seg_tool, table, data):
    """A FRACTIONAL SEG (made here from our BINARY one: inside 255 or 128, outside 0 or 127)
    must read back with the >= max/2 threshold; also with the frame order shuffled."""
    dirs = json.load(open(os.path.join(work, "dirs.json")))
    ser = read_series(dirs["mr-t1"])
    truth = np.load(os.path.join(work, "truth_mr-t1.npy"))
    ds = pydicom.dcmread(os.path.join(work, "seg_mr-t1_omit.dcm"))
    nf, rows, cols = int(ds.NumberOfFrames), int(ds.Rows), int(ds.Columns)
    bits = np.unpackbits(np.frombuffer(ds.PixelData, np.uint8), bitorder="little")[: nf * rows * cols]
    bits = bits.reshape(nf, rows, cols)
    rng = np.random.default_rng(5)
    frac = np.where(bits == 1, rng.choice([128, 255], bits.shape), rng.choice([0, 127], bits.shape)).astype(np.uint8)
    order = rng.permutation(nf)
    ds.PerFrameFunctionalGroupsSequence = [ds.PerFrameFunctionalGroupsSequence[int(i)] for i in order]
    frac = frac[order]
    ds.SegmentationType = "FRACTIONAL"
    ds.SegmentationFractionalType = "PROBABILITY"
    ds.MaximumFractionalValue = 255
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelData = frac.tobytes()
    ds["PixelData"].VR = "OB"
    fpath = os.path.join(work, "fractional.dcm")
    ds.save_as(fpath)
    out = os.path.join(work, "fractional_back.dcm")
    segnode_segment(segnode, fpath, out, dirs["mr-t1"])
    got, _ = decode_seg(out, ser, table)
    if not dice_report(truth, got, "FRACTIONAL (shuffled frames) -> BINARY"):
        fail("FRACTIONAL read is not exact")
    print("OK: FRACTIONAL SEG thresholded at max/2 and placed by position")


def t_errors(work, segnode, seg_tool, table, data):
    dirs = json.load(open(os.path.join(work, "dirs.json")))
    ser = read_series(dirs["s38"])
    truth = np.load(os.path.join(work, "truth_s38.npy"))
    out = os.path.join(work, "err.dcm")
    # 1. label grid != series grid (NIfTI: one slice short; shifted affine)
    short = dict(ser, nz=5)
    nii = os.path.join(work, "err_short.nii")
    write_nifti(nii, truth[:5], short)
    p = segnode_segment(segnode, nii, out, dirs["s38"], ok=False)
    print("short grid ->", p.returncode, p.stdout.strip())
    if p.returncode != 1 or "38x23x5" not in p.stdout or "38x23x6" not in p.stdout or os.path.exists(out):
        fail("mismatched NIfTI grid not refused with both grids named")
    shifted = dict(ser, origin=ser["origin"] + 0.4 * np.array(ser["iop"][:3]))
    nii = os.path.join(work, "err_shift.nii")
    write_nifti(nii, truth, shifted)
    p = segnode_segment(segnode, nii, out, dirs["s38"], ok=False)
    print("shifted grid ->", p.returncode, p.stdout.strip())
    if p.returncode != 1 or "does not match" not in p.stdout or os.path.exists(out):
        fail("shifted NIfTI grid not refused")
    # the writer's own check (label volume dims/geometry vs the series)
    p = run([seg_tool, "mismatch", dirs["s38"], table, out], ok=False)
    print("writer grid check ->", p.returncode, p.stdout.strip())
    if p.returncode != 0 or "39x23x6" not in p.stdout or "38x23x6" not in p.stdout:
        fail("writer did not refuse a mismatched label grid naming both grids")
    # a SEG of another series' grid
    p = segnode_segment(segnode, os.path.join(work, "seg_mr-t1_omit.dcm"), out, dirs["s38"], ok=False)
    print("SEG on another grid ->", p.returncode, p.stdout.strip())
    if p.returncode != 1 or os.path.exists(out):
        fail("SEG on another grid not refused")
    # 2. a label value with no table entry
    bad = truth.copy()
    bad[2, 5, 5] = 77
    bad[3, 6, 6] = 200
    nii = os.path.join(work, "err_unknown.nii")
    write_nifti(nii, bad, ser)
    p = segnode_segment(segnode, nii, out, dirs["s38"], ok=False)
    print("unknown label ->", p.returncode, p.stdout.strip())
    if p.returncode != 1 or "77" not in p.stdout or "200" not in p.stdout or os.path.exists(out):
        fail("unknown label value not refused by name")
    # 3. empty label volume, fractional NIfTI values
    nii = os.path.join(work, "err_empty.nii")
    write_nifti(nii, np.zeros_like(truth), ser)
    p = segnode_segment(segnode, nii, out, dirs["s38"], ok=False)
    print("empty ->", p.returncode, p.stdout.strip())
    if p.returncode != 1 or "empty" not in p.stdout:
        fail("empty label volume not refused")
    nii = os.path.join(work, "err_float.nii")
    write_nifti(nii, truth.astype(np.float32) + 0.25, ser, dtype=np.float32)
    p = segnode_segment(segnode, nii, out, dirs["s38"], ok=False)
    print("fractional NIfTI ->", p.returncode, p.stdout.strip())
    if p.returncode != 1 or "not a label" not in p.stdout:
        fail("non-integer NIfTI labels not refused")
    print("OK: bad inputs refused with clear messages")


def t_liver(work, segnode, seg_tool, table, data):
    """liver.dcm (dcmqi, 3 frames, SRT codes): segread's parse equals pydicom's."""
    path = os.path.join(data, "liver.dcm")
    p = run([seg_tool, "info", path])
    print(p.stdout.strip())
    ds = pydicom.dcmread(path)
    lines = p.stdout.splitlines()
    segs = [l for l in lines if l.startswith("segment ")]
    frames = [l.split("|") for l in lines if l.startswith("frame ")]
    if len(segs) != len(ds.SegmentSequence) or len(frames) != int(ds.NumberOfFrames):
        fail("segment/frame counts differ")
    s0 = ds.SegmentSequence[0]
    t = s0.SegmentedPropertyTypeCodeSequence[0]
    if f"|{s0.SegmentLabel}|" not in segs[0] or f"{t.CodingSchemeDesignator}:{t.CodeValue}:{t.CodeMeaning}" not in segs[0]:
        fail("segment description differs")
    rows, cols, nf = int(ds.Rows), int(ds.Columns), int(ds.NumberOfFrames)
    bits = np.unpackbits(np.frombuffer(ds.PixelData, np.uint8), bitorder="little")[: nf * rows * cols]
    bits = bits.reshape(nf, rows, cols)
    for f, it in enumerate(ds.PerFrameFunctionalGroupsSequence):
        ipp = [float(v) for v in it.PlanePositionSequence[0].ImagePositionPatient]
        got = [float(v) for v in frames[f][2].split(",")]
        ref = it.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        if not np.allclose(ipp, got, atol=1e-5) or frames[f][3] != ref or int(frames[f][5]) != int(bits[f].sum()):
            fail(f"frame {f + 1}: {frames[f]} != pydicom {ipp} {ref} {int(bits[f].sum())}")
    print("OK: liver.dcm parsed like pydicom (segments, positions, references, pixel counts)")


def t_method(work, segnode, *_):
    # atlas needs --atlases, net needs --model; other methods are unknown
    for m, why in (("atlas", "needs --atlases"), ("net", "needs --model DIR"),
                   ("unet", "unknown method unet")):
        p = run([segnode, "segment", "--method", m, "--out", os.path.join(work, "m.dcm"), work], ok=False)
        print(f"--method {m} ->", p.returncode, p.stdout.strip())
        if p.returncode != 2 or why not in p.stdout:
            fail("--method not refused")
    p = run([segnode, "segment"], ok=False)
    if p.returncode != 2:
        fail("usage error not exit 2")
    print("OK: --method atlas without --atlases, net without --model and an unknown method "
          "refused (exit 2)")


def main():
    if len(sys.argv) < 7:
        print(__doc__)
        sys.exit(2)
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "prepare":
        prepare(*args[:6])
        return
    fn = {"dciodvfy": t_dciodvfy, "pydicom": t_pydicom, "reader": t_reader, "pack38": t_pack38,
          "nifti": t_nifti, "fractional": t_fractional, "errors": t_errors, "liver": t_liver,
          "method": t_method}.get(cmd)
    if not fn:
        print(__doc__)
        sys.exit(2)
    fn(*args[:5])


if __name__ == "__main__":
    main()
