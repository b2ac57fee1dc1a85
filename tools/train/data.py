"""tools/train/data.py — phantom series -> 2-D training slices, prepared exactly as the node's
nn_infer_volume prepares a volume for a 2-D bundle (nn/sliding.c): z-score over the whole native
volume (per_volume; or the robust normalisation, `normalize`), then in-plane resampling to the
bundle's spacing with align_corners=False linear interpolation, slices kept as acquired (a 2-D
bundle's spacing has no slice entry).
Labels go through the same grid with nearest neighbour. Geometry and labels come from the DICOM
alone (tools/phantom/phantomio.py, pydicom). Results are cached as .npz next to the series.

Also: a minimal NIfTI-1 reader for `segnode infer` outputs, Dice and average symmetric surface
distance (ASD) on label volumes."""
import gzip
import hashlib
import os
import struct
import sys

import numpy as np
import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tools", "phantom"))
import phantomio  # noqa: E402

LABELS_TSV = os.path.join(ROOT, "etc", "labels.tsv")

# The organs the shipped bundles segment (names of etc/labels.tsv). Channel 0 is background.
ORGANS = ["liver", "spleen", "kidney_left", "kidney_right", "stomach", "aorta"]


def label_table(path=LABELS_TSV):
    """name -> (number, 'SCT:code') from etc/labels.tsv."""
    out = {}
    for line in open(path):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        c = line.rstrip("\n").split("\t")
        scheme, code = c[3].split(":")[:2]
        out[c[1]] = (int(c[0]), "%s:%s" % (scheme, code))
    return out


def bundle_labels(organs=ORGANS):
    t = label_table()
    return [{"value": 0, "name": "background"}] + \
        [{"value": t[o][0], "name": o, "code": t[o][1]} for o in organs]


def zscore(vol):
    v = vol.astype(np.float32)
    m = float(v.astype(np.float64).mean())
    s = float(v.astype(np.float64).std())
    return (v - m) / max(s, 1e-8)


# normalisations a bundle can name (nn/sliding.c nn_normalize) -> model.json's object
NORMS = {"zscore": {"type": "zscore", "per_volume": True},
         "robust": {"type": "robust", "mask": "above_mean"}}


def normalize(vol, norm="zscore"):
    """zscore: (x - mean) / std of the whole volume. robust: (x - median) / (p75 - p25) of the
    voxels above the volume's mean, a body mask that does not depend on how much of the field
    of view is air (PET: the small 432 mm phantom against the 700 mm one); a flat mask falls
    back to its std, then 1. Both as nn_normalize computes them."""
    if norm == "zscore":
        return zscore(vol)
    if norm != "robust":
        raise ValueError("normalisation %r: not one of %s" % (norm, ", ".join(NORMS)))
    v = vol.astype(np.float64)
    f = v[v > v.mean()]
    if f.size == 0:
        f = v.ravel()
    q25, q50, q75 = np.percentile(f, [25, 50, 75])
    sd = q75 - q25
    if sd <= 1e-8 * max(1.0, abs(q50)):
        sd = f.std() if f.std() > 1e-8 else 1.0
    return ((v - q50) / sd).astype(np.float32)


def out_size(n, sp, target):
    return max(1, int(np.floor(n * sp / target + 0.5)))


def resample_inplane(vol, spacing_yx, target, mode):
    """vol [nz, ny, nx] -> [nz, ry, rx] at `target` mm (the C runtime's rounding)."""
    ry = out_size(vol.shape[1], spacing_yx[0], target)
    rx = out_size(vol.shape[2], spacing_yx[1], target)
    if (ry, rx) == vol.shape[1:]:
        return vol
    t = torch.from_numpy(np.ascontiguousarray(vol)).float()[:, None]
    out = []
    for k in range(0, t.shape[0], 32):
        if mode == "linear":
            out.append(F.interpolate(t[k:k + 32], size=(ry, rx), mode="bilinear",
                                     align_corners=False))
        else:
            out.append(F.interpolate(t[k:k + 32], size=(ry, rx), mode="nearest"))
    r = torch.cat(out)[:, 0].numpy()
    return r if mode == "linear" else r.astype(vol.dtype)


def find_seg(series_dir):
    subj, mod = os.path.split(os.path.normpath(series_dir))
    return os.path.join(subj, "seg", mod + ".dcm")


def npz_cache(cache_dir, key):
    """(path of the cached arrays for `key` or None without a cache folder, the loaded arrays
    or None when not cached yet)."""
    if not cache_dir:
        return None, None
    os.makedirs(cache_dir, exist_ok=True)
    cache = os.path.join(cache_dir, key + ".npz")
    return cache, np.load(cache) if os.path.exists(cache) else None


def load_series(series_dir, target, with_labels, organs=ORGANS, cache_dir=None, step=1,
                norm="zscore"):
    """Returns dict(img [nz, ry, rx] float32 normalised, lab [nz, ry, rx] uint8 class index or None).
    `step` keeps every step-th slice (thin CT slices are highly redundant); `norm` as normalize."""
    key = hashlib.sha1(("%s|%g|%d|%s|%d%s" % (os.path.abspath(series_dir), target, with_labels,
                                               ",".join(organs), step,
                                               "" if norm == "zscore" else "|" + norm)
                        ).encode()).hexdigest()[:16]
    cache, z = npz_cache(cache_dir, key)
    if z is not None:
        return {"img": z["img"], "lab": z["lab"] if with_labels else None, "spacing": z["spacing"]}
    vol, g, _ = phantomio.read_series(series_dir)
    img = normalize(vol, norm)[::step]
    sp = (float(g.spacing[1]), float(g.spacing[0]))   # (row = y, column = x)
    img = resample_inplane(img, sp, target, "linear")
    lab = None
    if with_labels:
        table = phantomio.load_labels_table(LABELS_TSV)
        lv, _ = phantomio.read_seg(find_seg(series_dir), table)
        cls = np.zeros(lv.shape, np.uint8)
        for i, o in enumerate(organs):
            cls[lv == table[o]["number"]] = i + 1
        lab = resample_inplane(cls[::step], sp, target, "nearest")
    if cache:
        np.savez(cache, img=img, lab=lab if lab is not None else np.zeros(0, np.uint8),
                 spacing=np.array(g.spacing))
    return {"img": img, "lab": lab, "spacing": np.array(g.spacing)}


def read_label_file(path, table=None):
    """A label volume [nz, ny, nx] on its series' grid, in phantomio's (DICOM) slice and row
    order, with etc/labels.tsv numbers: a SEG (what `segnode segment` writes) or a NIfTI-1
    label image (what `segnode infer` writes)."""
    if path.endswith(".dcm"):
        lab, _ = phantomio.read_seg(path, table or phantomio.load_labels_table(LABELS_TSV))
        return lab
    return np.ascontiguousarray(read_nifti(path))


def boundary_band(cls, band):
    """Mask of the pixels within `band` pixels (in-plane, square neighbourhood) of a change of
    class, per slice of cls [nz, ny, nx]; band 0 = nothing."""
    if band <= 0:
        return np.zeros(cls.shape, bool)
    t = torch.from_numpy(cls.astype(np.int64))
    edge = torch.zeros(cls.shape, dtype=torch.bool)
    for ax in (1, 2):
        d = t.diff(dim=ax) != 0
        pad = [(0, 0)] * 3
        lo, hi = list(pad), list(pad)
        lo[ax], hi[ax] = (1, 0), (0, 1)
        # both pixels of a differing pair are boundary pixels
        edge |= torch.from_numpy(np.pad(d.numpy(), lo)) | torch.from_numpy(np.pad(d.numpy(), hi))
    k = 2 * band - 1
    if k > 1:
        edge = F.max_pool2d(edge.float()[:, None], k, 1, k // 2)[:, 0] > 0
    return edge.numpy()


def load_pseudo(series_dir, label_path, target, organs=ORGANS, cache_dir=None, step=1, band=0,
                ignore=255, norm="zscore"):
    """An unlabelled target series with a pseudo-label volume (`label_path`: SEG or NIfTI on
    the series' grid, e.g. the atlas method's output): dict(img, lab) like load_series, with the
    pixels within `band` pixels of a pseudo-label boundary (at the training grid) set to
    `ignore`, where a registration-based label is least reliable."""
    key = hashlib.sha1(("pseudo|%s|%s|%d|%g|%s|%d|%d%s" % (
        os.path.abspath(series_dir), os.path.abspath(label_path),
        int(os.path.getmtime(label_path)), target, ",".join(organs), step, band,
        "" if norm == "zscore" else "|" + norm)
    ).encode()).hexdigest()[:16]
    cache, z = npz_cache(cache_dir, key)
    if z is not None:
        return {"img": z["img"], "lab": z["lab"], "spacing": z["spacing"]}
    s = load_series(series_dir, target, False, organs, cache_dir, step, norm)
    table = phantomio.load_labels_table(LABELS_TSV)
    lv = read_label_file(label_path, table)
    _, g, _ = phantomio.read_series(series_dir)
    if lv.shape != (g.size[2], g.size[1], g.size[0]):
        raise ValueError("%s: label volume %s, series %s" % (label_path, lv.shape,
                                                            (g.size[2], g.size[1], g.size[0])))
    cls = np.zeros(lv.shape, np.uint8)
    for i, o in enumerate(organs):
        cls[lv == table[o]["number"]] = i + 1
    sp = (float(g.spacing[1]), float(g.spacing[0]))
    lab = resample_inplane(cls[::step], sp, target, "nearest")
    lab[boundary_band(lab, band)] = ignore
    if cache:
        np.savez(cache, img=s["img"], lab=lab, spacing=s["spacing"])
    return {"img": s["img"], "lab": lab, "spacing": s["spacing"]}


# ---- evaluation helpers ---------------------------------------------------------------------

def read_nifti(path):
    """Minimal NIfTI-1 reader for what pipeline/nifti.c writes: array [nz, ny, nx] in the
    series' DICOM order (slice, row, column)."""
    raw = open(path, "rb").read()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    dims = struct.unpack("<8h", raw[40:56])
    dtype = struct.unpack("<h", raw[70:72])[0]
    off = int(struct.unpack("<f", raw[108:112])[0])
    np_t = {2: np.uint8, 4: np.int16, 8: np.int32, 16: np.float32, 256: np.int8,
            512: np.uint16}[dtype]
    nx, ny, nz = dims[1], dims[2], max(1, dims[3])
    n = nx * ny * nz * max(1, dims[4] if dims[0] >= 4 else 1)
    a = np.frombuffer(raw, np_t, count=n, offset=off)
    # pipeline/nifti.c stores each slice's rows bottom-up (as dcm2niix does; the affine says so):
    # flip them back to DICOM row order, the order of phantomio's arrays
    if dims[0] >= 4 and dims[4] > 1:
        return a.reshape(dims[4], nz, ny, nx)[:, :, ::-1, :]
    return a.reshape(nz, ny, nx)[:, ::-1, :]


def dice(a, b):
    s = a.sum() + b.sum()
    return float(2.0 * np.logical_and(a, b).sum() / s) if s else float("nan")


def _surface(m):
    """Voxels of mask m with a 6-neighbour outside m."""
    p = np.pad(m, 1)
    inner = p[1:-1, 1:-1, 1:-1].copy()
    for ax in range(3):
        for d in (-1, 1):
            inner &= np.roll(p, d, axis=ax)[1:-1, 1:-1, 1:-1]
    return m & ~inner


def asd(a, b, spacing_zyx, max_points=3000):
    """Average symmetric surface distance (mm) between masks a and b (voxel-centre surfaces),
    over both directions; each direction estimated from at most max_points surface points."""
    if not a.any() or not b.any():
        return float("nan")
    sp = np.asarray(spacing_zyx, np.float32)
    pa = torch.from_numpy(np.argwhere(_surface(a)).astype(np.float32) * sp)
    pb = torch.from_numpy(np.argwhere(_surface(b)).astype(np.float32) * sp)
    g = torch.Generator().manual_seed(0)

    def nearest(p, q):
        # the mean over a fixed random subset of at most `max_points` query points: unbiased,
        # and full-size surfaces (10^5 points) stay seconds instead of hours; every point of q
        # is a candidate
        if p.shape[0] > max_points:
            p = p[torch.randperm(p.shape[0], generator=g)[:max_points]]
        out = []
        for k in range(0, p.shape[0], 512):
            out.append(torch.cdist(p[k:k + 512], q).min(1).values)
        return torch.cat(out)
    d = torch.cat([nearest(pa, pb), nearest(pb, pa)])
    return float(d.mean())
