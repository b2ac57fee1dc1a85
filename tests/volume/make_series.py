#!/usr/bin/python3
"""tests/volume/make_series.py — synthesize DICOM series for the volume tests with pydicom.

  make_series.py good OUTDIR     axial CT, oblique MR, PET (SUV tags), MONOCHROME1 CT
  make_series.py bad OUTDIR      one folder per bad-input case (see BAD below) + cases.txt
  make_series.py ct OUTDIR N ROWS COLS   one CT series (benchmark; N slices)
  make_series.py variants SRC OUTDIR     SRC re-encoded in every transfer syntax (DCMTK, GDCM)

Grids are deliberately non-square with anisotropic pixels and slices written in an order that
is not their position order, so a swapped axis or an Instance Number sort shows up.
Only /usr/bin/python3 has pydicom and numpy."""
import math
import os
import shutil
import subprocess
import sys

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

CT = "1.2.840.10008.5.1.4.1.1.2"
MR = "1.2.840.10008.5.1.4.1.1.4"
PT = "1.2.840.10008.5.1.4.1.1.128"
ROOT = "1.2.826.0.1.3680043.8.498."


def rot(ax, deg):
    a = math.radians(deg)
    c, s = math.cos(a), math.sin(a)
    if ax == "x":
        return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])
    if ax == "y":
        return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def phantom(nz, ny, nx, lo, hi, seed):
    """A smooth blob plus a ramp, so that flips and swaps change the values."""
    z, y, x = np.meshgrid(np.arange(nz), np.arange(ny), np.arange(nx), indexing="ij")
    r = np.sqrt(((x - nx * 0.4) / nx) ** 2 + ((y - ny * 0.55) / ny) ** 2 + ((z - nz * 0.45) / nz) ** 2)
    v = lo + (hi - lo) * (0.6 * np.exp(-8 * r * r) + 0.25 * x / nx + 0.1 * y / ny + 0.05 * z / nz)
    rng = np.random.default_rng(seed)
    return np.clip(v + rng.normal(0, (hi - lo) * 0.01, v.shape), lo, hi)


def base(sop_class, modality, series_uid, study_uid, for_uid):
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = ROOT + "1"
    ds = FileDataset(None, {}, file_meta=meta, preamble=b"\0" * 128)
    ds.is_little_endian = True
    ds.is_implicit_VR = False
    ds.SOPClassUID = sop_class
    ds.Modality = modality
    ds.SeriesInstanceUID = series_uid
    ds.StudyInstanceUID = study_uid
    ds.FrameOfReferenceUID = for_uid
    ds.PatientName = "Phantom^Volume"
    ds.PatientID = "VOL001"
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = "20240102"
    ds.StudyTime = "100000"
    ds.SeriesNumber = 1
    return ds


def write_series(out, stored, *, sop_class=CT, modality="CT", iop=(1, 0, 0, 0, 1, 0),
                 origin=(0, 0, 0), ps=(0.8, 0.7), step=2.5, signed=True, bits_stored=16,
                 slope=1.0, intercept=0.0, photometric="MONOCHROME2", extra=None, order=None,
                 per_slice=None, thickness=None):
    """stored: (nz, ny, nx) integer array. Slice k at origin + k*step*normal."""
    os.makedirs(out, exist_ok=True)
    nz, ny, nx = stored.shape
    r, c = np.array(iop[:3], float), np.array(iop[3:], float)
    n = np.cross(r, c)
    series_uid, study_uid, for_uid = generate_uid(ROOT), generate_uid(ROOT), generate_uid(ROOT)
    order = list(order) if order is not None else list(range(nz))[::-1]
    paths = []
    for inst, k in enumerate(order):
        ds = base(sop_class, modality, series_uid, study_uid, for_uid)
        ds.SOPInstanceUID = generate_uid(ROOT)
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber = inst + 1
        ds.ImagePositionPatient = [f"{v:.6f}" for v in np.array(origin, float) + k * step * n]
        ds.ImageOrientationPatient = [f"{v:.8f}" for v in iop]
        ds.PixelSpacing = [f"{ps[0]:g}", f"{ps[1]:g}"]
        ds.SliceThickness = f"{thickness if thickness else step:g}"
        ds.Rows, ds.Columns = ny, nx
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = photometric
        ds.BitsAllocated = 16
        ds.BitsStored = bits_stored
        ds.HighBit = bits_stored - 1
        ds.PixelRepresentation = 1 if signed else 0
        ds.RescaleSlope = f"{slope:g}"
        ds.RescaleIntercept = f"{intercept:g}"
        if modality == "CT":
            ds.RescaleType = "HU"
            ds.KVP = "120"
        for key, val in (extra or {}).items():
            setattr(ds, key, val)
        if per_slice:
            per_slice(ds, k)
        arr = stored[k].astype(np.int16 if signed else np.uint16)
        ds.PixelData = arr.tobytes()
        p = os.path.join(out, f"IM{inst + 1:04d}.dcm")
        ds.save_as(p, write_like_original=False)
        paths.append(p)
    return paths


def ct_series(out, nz=20, ny=48, nx=64, seed=1, **kw):
    hu = np.rint(phantom(nz, ny, nx, -1000, 1500, seed)).astype(np.int32)
    return write_series(out, hu + 1024, signed=False, bits_stored=12, intercept=-1024,
                        origin=(-25.0, -17.0, -40.0), **kw)


def good(out):
    # axial CT, unsigned 12-bit stored, intercept -1024
    ct_series(os.path.join(out, "ct_axial"))
    # signed 16-bit CT, feet-first-like order, slices written in shuffled order
    hu = np.rint(phantom(16, 40, 52, -1024, 2000, 2)).astype(np.int16)
    write_series(os.path.join(out, "ct_signed"), hu, signed=True, bits_stored=16,
                 intercept=0, ps=(0.6, 0.9), step=3.0, origin=(10, -20, 100),
                 order=np.random.default_rng(3).permutation(16))
    # oblique MR: rotated 20 deg about x then 12 deg about z, 12 of 16 bits
    R = rot("z", 12) @ rot("x", 20)
    iop = tuple(R[:, 0]) + tuple(R[:, 1])
    mr = np.rint(phantom(18, 56, 40, 0, 4000, 4)).astype(np.uint16)
    write_series(os.path.join(out, "mr_oblique"), mr, sop_class=MR, modality="MR", iop=iop,
                 signed=False, bits_stored=12, ps=(1.1, 0.9), step=1.5, origin=(-30, 40, 12))
    # sagittal MR
    iop = (0, 1, 0, 0, 0, -1)
    mr = np.rint(phantom(12, 30, 44, 0, 1000, 5)).astype(np.uint16)
    write_series(os.path.join(out, "mr_sagittal"), mr, sop_class=MR, modality="MR", iop=iop,
                 signed=False, bits_stored=16, ps=(1.2, 1.0), step=4.0, origin=(-20, -60, 80))
    # PET in BQML with a per-slice Rescale Slope and the SUV tags
    bq = phantom(24, 32, 36, 0, 30000, 6)
    slopes = [0.5 + 0.05 * k for k in range(24)]
    stored = np.stack([np.rint(bq[k] / slopes[k]) for k in range(24)]).astype(np.int16)

    def pet_slice(ds, k):
        ds.RescaleSlope = f"{slopes[k]:g}"
    rp = Dataset()
    rp.Radiopharmaceutical = "Fluorodeoxyglucose"
    rp.RadiopharmaceuticalStartTime = "093000"
    rp.RadionuclideTotalDose = "370000000"
    rp.RadionuclideHalfLife = "6586.2"
    write_series(os.path.join(out, "pet"), stored, sop_class=PT, modality="PT", signed=True,
                 bits_stored=16, ps=(4.0, 4.0), step=3.27, origin=(-70, -70, -300),
                 per_slice=pet_slice,
                 extra={"Units": "BQML", "DecayCorrection": "START", "PatientWeight": "70",
                        "SeriesTime": "103000", "AcquisitionTime": "103000",
                        "CorrectedImage": ["DECY", "ATTN"],
                        "RadiopharmaceuticalInformationSequence": [rp]})
    # MONOCHROME1 CT (values are not inverted by the Modality LUT)
    hu = np.rint(phantom(8, 24, 20, -1000, 1000, 7)).astype(np.int16)
    write_series(os.path.join(out, "ct_mono1"), hu, photometric="MONOCHROME1", signed=True,
                 bits_stored=16)
    # signed data with Bits Stored 12 (negative values need sign extension from bit 11)
    hu = np.rint(phantom(8, 24, 20, -1024, 1500, 8)).astype(np.int16)
    write_series(os.path.join(out, "ct_signed12"), hu, signed=True, bits_stored=12)
    # unsigned 16-bit MR with values above 32767 (an int16 volume cannot hold them)
    mr = np.rint(phantom(6, 20, 24, 0, 60000, 9)).astype(np.uint16)
    write_series(os.path.join(out, "mr_u16"), mr, sop_class=MR, modality="MR", signed=False,
                 bits_stored=16, ps=(1.0, 1.0), step=2.0, origin=(0, 0, 0))


DATA = os.environ.get("SEGNODE_TEST_DATA", os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                        "../../../shared/data/dicom"))

# name -> substring the error must contain
BAD = {
    "missing_iop": "missing Image Orientation",
    "inconsistent_iop": "inconsistent Image Orientation",
    "duplicate": "duplicate slice position",
    "gap": "missing slice",
    "nonuniform": "non-uniform slice spacing",
    "tilt_sheared": "gantry tilt",
    "tilt_tag": "gantry tilt",
    "mixed_size": "mixed rows/columns",
    "single": "single slice",
    "non_image": "non-image SOP class",
    "truncated_j2k_file": "truncated or corrupt",
    "truncated_j2k_stream": "truncated",
    "corrupt_j2k_stream": "corrupt JPEG 2000",
    "two_series": "2 series found",
    # found by tests/fuzz: sizes taken from the header must be checked against the file
    "no_columns": "Rows/Columns missing or 0",
    "frames_past_file": "cannot fit in a file of",
    "truncated_native": "truncated",
}


def rm(p):
    os.remove(p)


def bad(out):
    os.makedirs(out, exist_ok=True)
    d = lambda n: os.path.join(out, n)
    paths = ct_series(d("missing_iop"), nz=6)
    ds = pydicom.dcmread(paths[2]); del ds.ImageOrientationPatient; ds.save_as(paths[2])
    paths = ct_series(d("inconsistent_iop"), nz=6)
    ds = pydicom.dcmread(paths[3]); ds.ImageOrientationPatient = [1, 0, 0, 0, 0.9848078, 0.1736482]
    ds.save_as(paths[3])
    paths = ct_series(d("duplicate"), nz=6)
    a, b = pydicom.dcmread(paths[1]), pydicom.dcmread(paths[2])
    b.ImagePositionPatient = a.ImagePositionPatient; b.save_as(paths[2])
    paths = ct_series(d("gap"), nz=8)
    rm(paths[3])
    paths = ct_series(d("nonuniform"), nz=8)
    for p in paths:   # stretch the steps above the middle by 30 %
        ds = pydicom.dcmread(p); z = float(ds.ImagePositionPatient[2])
        if z > -40 + 2.5 * 4:
            ds.ImagePositionPatient[2] = f"{-40 + 2.5 * 4 + (z + 40 - 10) * 1.3:.4f}"
        ds.save_as(p)
    paths = ct_series(d("tilt_sheared"), nz=8)
    for p in paths:   # 15 degrees: y moves with z
        ds = pydicom.dcmread(p); z = float(ds.ImagePositionPatient[2])
        ds.ImagePositionPatient[1] = f"{-17 + (z + 40) * math.tan(math.radians(15)):.4f}"
        ds.save_as(p)
    ct_series(d("tilt_tag"), nz=6, extra={"GantryDetectorTilt": "15"})
    paths = ct_series(d("mixed_size"), nz=6)
    other = ct_series(d("mixed_tmp"), nz=6, ny=40, nx=64)
    ds, o = pydicom.dcmread(paths[2]), pydicom.dcmread(other[2])
    ds.Rows, ds.Columns, ds.PixelData = o.Rows, o.Columns, o.PixelData
    ds.save_as(paths[2])
    shutil.rmtree(d("mixed_tmp"))
    ct_series(d("single"), nz=1)
    os.makedirs(d("non_image"), exist_ok=True)
    shutil.copy(os.path.join(DATA, "liver.dcm"), d("non_image"))
    os.makedirs(d("truncated_j2k_file"), exist_ok=True)
    shutil.copy(os.path.join(DATA, "emri_small_jpeg_2k_lossless_too_short.dcm"),
                d("truncated_j2k_file"))
    # A well-formed file whose JPEG 2000 codestream is cut short / overwritten.
    for name in ("truncated_j2k_stream", "corrupt_j2k_stream"):
        paths = ct_series(d(name), nz=4)
        p = paths[1]
        subprocess.run(["gdcmconv", "--j2k", p, p + ".j2k"], check=True)
        ds = pydicom.dcmread(p + ".j2k")
        cs = b"".join(pydicom.encaps.generate_pixel_data_frame(ds.PixelData, 1))
        if name.startswith("truncated"):
            cs = cs[: len(cs) * 2 // 3]
        else:
            # damage the main header (SIZ/COD): JPEG 2000 has no checksums, so garbage in the
            # packet data alone cannot be detected by any decoder
            cs = cs[:6] + bytes((x * 37 + 11) & 0xFF for x in range(40)) + cs[46:]
        ds.PixelData = pydicom.encaps.encapsulate([cs + (b"\0" if len(cs) % 2 else b"")])
        ds.save_as(p)
        os.remove(p + ".j2k")
    paths = ct_series(d("no_columns"), nz=4)
    ds = pydicom.dcmread(paths[1]); del ds.Columns; ds.save_as(paths[1])
    paths = ct_series(d("frames_past_file"), nz=4)
    ds = pydicom.dcmread(paths[2]); ds.NumberOfFrames = "2000000000"; ds.save_as(paths[2])
    paths = ct_series(d("truncated_native"), nz=4)
    with open(paths[3], "rb+") as f:   # cut inside Pixel Data, as an interrupted copy would
        f.truncate(os.path.getsize(paths[3]) - 1000)
    os.makedirs(d("two_series"), exist_ok=True)
    ct_series(os.path.join(d("two_series"), "a"), nz=3)
    ct_series(os.path.join(d("two_series"), "b"), nz=3)
    with open(os.path.join(out, "cases.txt"), "w") as f:
        for k, v in BAD.items():
            f.write(f"{k}\t{v}\n")


def bench_ct(out, nz, ny, nx):
    """A large CT series written slice by slice (memory stays at one slice)."""
    os.makedirs(out, exist_ok=True)
    series_uid, study_uid, for_uid = generate_uid(ROOT), generate_uid(ROOT), generate_uid(ROOT)
    y, x = np.meshgrid(np.arange(ny), np.arange(nx), indexing="ij")
    rng = np.random.default_rng(11)
    for k in range(nz):
        ds = base(CT, "CT", series_uid, study_uid, for_uid)
        ds.SOPInstanceUID = generate_uid(ROOT)
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber = nz - k
        ds.ImagePositionPatient = ["-179.65", "-179.65", f"{-300 + k * 1.0:.2f}"]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing = ["0.7", "0.7"]
        ds.SliceThickness = "1"
        ds.Rows, ds.Columns = ny, nx
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = "1", "-1024", "HU"
        r = np.sqrt((x - nx / 2) ** 2 + (y - ny / 2) ** 2 * 1.4)
        body = np.where(r < nx * 0.42, 1040.0, 24.0)
        body += np.where(np.abs(r - nx * 0.2 - 10 * math.sin(k / 20)) < 12, 700.0, 0.0)
        body += rng.normal(0, 12, body.shape)
        ds.PixelData = np.clip(np.rint(body), 0, 4095).astype(np.uint16).tobytes()
        ds.save_as(os.path.join(out, f"CT{k:04d}.dcm"), write_like_original=False)


def variants(src, out):
    """Re-encode every file of folder `src` in each transfer syntax; one folder per syntax."""
    tools = {
        "implicit_le": ["dcmconv", "+ti"],
        "explicit_be": ["dcmconv", "+tb"],
        "deflate": ["dcmconv", "+td"],
        "rle": ["dcmcrle"],
        "jpeg_lossless_sv1": ["dcmcjpeg", "+e1"],
        "jpeg_lossless": ["dcmcjpeg", "+el"],
        "jpeg_ls_lossless": ["dcmcjpls"],
        "j2k_lossless": ["gdcmconv", "--j2k"],
        # lossy ones, compared within a tolerance
        "jpeg_ls_near": ["dcmcjpls", "+en", "+md", "2"],
        "j2k_lossy": ["gdcmconv", "--j2k", "--lossy", "--irreversible", "-q", "50"],
        "jpeg_extended": ["dcmcjpeg", "+ee", "+q", "95"],
    }
    files = sorted(os.listdir(src))
    for name, cmd in tools.items():
        od = os.path.join(out, name)
        os.makedirs(od, exist_ok=True)
        for f in files:
            r = subprocess.run(cmd + [os.path.join(src, f), os.path.join(od, f)],
                               capture_output=True, text=True)
            if r.returncode != 0:
                print(f"{name}: {' '.join(cmd)} failed: {r.stderr.strip()[:200]}", file=sys.stderr)
                shutil.rmtree(od)
                break


def main():
    if len(sys.argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    what, out = sys.argv[1], sys.argv[2]
    if what == "good":
        good(out)
    elif what == "bad":
        bad(out)
    elif what == "ct":
        bench_ct(out, int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
    elif what == "variants":
        variants(sys.argv[2], sys.argv[3])
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
