"""tools/phantom/phantomio.py — read segnode-phantom output back with pydicom only (no segnode
code): a series folder into (volume, geometry) and a SEG into a label volume on its own grid.
Used by montage.py and tests/phantom. Geometry comes from the DICOM tags alone."""
import glob
import os

import numpy as np
import pydicom


class Geometry:
    """Voxel (i,j,k) centre = origin + i*sp[0]*u + j*sp[1]*v + k*sp[2]*w (LPS mm)."""

    def __init__(self, size, spacing, origin, u, v, w):
        self.size = tuple(int(x) for x in size)          # (nx, ny, nz)
        self.spacing = np.asarray(spacing, float)
        self.origin = np.asarray(origin, float)
        self.dirs = np.stack([np.asarray(u, float), np.asarray(v, float), np.asarray(w, float)], 1)

    def index_to_patient(self, ijk):
        return self.origin + (np.asarray(ijk, float) * self.spacing) @ self.dirs.T

    def patient_to_index(self, p):
        return ((np.asarray(p, float) - self.origin) @ self.dirs) / self.spacing


def load_labels_table(path):
    rows = {}
    for line in open(path):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        c = line.rstrip("\n").split("\t")
        rows[c[1]] = {"number": int(c[0]), "rgb": tuple(int(x) for x in c[5].split(","))}
    return rows


def read_series(folder):
    """Returns (volume float64 [nz,ny,nx] in rescaled units, Geometry, list of datasets)."""
    dss = [pydicom.dcmread(f) for f in sorted(glob.glob(os.path.join(folder, "*.dcm")))]
    iop = np.array(dss[0].ImageOrientationPatient, float)
    u, v = iop[:3], iop[3:]
    w = np.cross(u, v)
    dss.sort(key=lambda d: float(np.dot(np.array(d.ImagePositionPatient, float), w)))
    pos = np.array([np.dot(np.array(d.ImagePositionPatient, float), w) for d in dss])
    dz = float(np.median(np.diff(pos))) if len(dss) > 1 else float(dss[0].SliceThickness)
    ps = [float(x) for x in dss[0].PixelSpacing]
    vol = np.stack([d.pixel_array.astype(np.float64) * float(getattr(d, "RescaleSlope", 1) or 1)
                    + float(getattr(d, "RescaleIntercept", 0) or 0) for d in dss])
    g = Geometry((int(dss[0].Columns), int(dss[0].Rows), len(dss)), (ps[1], ps[0], dz),
                 dss[0].ImagePositionPatient, u, v, w)
    return vol, g, dss


def read_seg(path, table):
    """Returns (labels uint8 [nz,ny,nx], Geometry) from a BINARY SEG whose frames lie on one grid.
    Slice index = position along the normal / Spacing Between Slices from the first frame."""
    ds = pydicom.dcmread(path)
    seg_to_label = {}
    for item in ds.SegmentSequence:
        seg_to_label[int(item.SegmentNumber)] = table[str(item.SegmentLabel)]["number"]
    sh = ds.SharedFunctionalGroupsSequence[0]
    iop = np.array(sh.PlaneOrientationSequence[0].ImageOrientationPatient, float)
    pm = sh.PixelMeasuresSequence[0]
    ps = [float(x) for x in pm.PixelSpacing]
    dz = float(pm.SpacingBetweenSlices)
    u, v = iop[:3], iop[3:]
    w = np.cross(u, v)
    frames = ds.pixel_array.reshape(-1, int(ds.Rows), int(ds.Columns))
    pf = ds.PerFrameFunctionalGroupsSequence
    ipps = np.array([[float(x) for x in f.PlanePositionSequence[0].ImagePositionPatient] for f in pf])
    # the referenced grid: all source instances are listed; frames only where a segment is present
    nref = len(ds.ReferencedSeriesSequence[0].ReferencedInstanceSequence)
    t = ipps @ w
    t0 = t.min()
    first = ipps[np.argmin(t)]
    # origin = slice 0 of the source: use the derivation reference order to find the offset
    ks = np.rint((t - t0) / dz).astype(int)
    ref_uids = [r.ReferencedSOPInstanceUID for r in ds.ReferencedSeriesSequence[0].ReferencedInstanceSequence]
    kref = []
    for f in pf:
        uid = f.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        kref.append(ref_uids.index(uid))
    kref = np.array(kref)
    shift = int(np.median(kref - ks))
    origin = first - shift * dz * w
    lab = np.zeros((nref, int(ds.Rows), int(ds.Columns)), np.uint8)
    for n, f in enumerate(pf):
        segno = int(f.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        lab[ks[n] + shift][frames[n] != 0] = seg_to_label[segno]
    g = Geometry((int(ds.Columns), int(ds.Rows), nref), (ps[1], ps[0], dz), origin, u, v, w)
    return lab, g


def resample_nearest(lab, g_src, g_dst):
    """Nearest-neighbour resampling of lab (on g_src) onto g_dst through patient coordinates;
    voxels outside g_src get 255."""
    nx, ny, nz = g_dst.size
    k, j, i = np.meshgrid(np.arange(nz), np.arange(ny), np.arange(nx), indexing="ij")
    ijk = np.stack([i.ravel(), j.ravel(), k.ravel()], 1)
    p = g_dst.index_to_patient(ijk)
    s = np.rint(g_src.patient_to_index(p)).astype(int)
    sx, sy, sz = g_src.size
    ok = (s[:, 0] >= 0) & (s[:, 0] < sx) & (s[:, 1] >= 0) & (s[:, 1] < sy) & (s[:, 2] >= 0) & (s[:, 2] < sz)
    out = np.full(len(p), 255, np.uint8)
    out[ok] = lab[s[ok, 2], s[ok, 1], s[ok, 0]]
    return out.reshape(nz, ny, nx)


def resample_linear_labels(lab, g_src, g_dst):
    """Label resampling through patient coordinates: each label's indicator is interpolated
    trilinearly and the label with the largest weight wins (partial-volume aware, unlike nearest
    neighbour). Voxels outside g_src get 255."""
    nx, ny, nz = g_dst.size
    k, j, i = np.meshgrid(np.arange(nz), np.arange(ny), np.arange(nx), indexing="ij")
    ijk = np.stack([i.ravel(), j.ravel(), k.ravel()], 1)
    f = g_src.patient_to_index(g_dst.index_to_patient(ijk))
    sx, sy, sz = g_src.size
    ok = (f[:, 0] >= -0.5) & (f[:, 0] <= sx - 0.5) & (f[:, 1] >= -0.5) & (f[:, 1] <= sy - 0.5) & \
         (f[:, 2] >= -0.5) & (f[:, 2] <= sz - 0.5)
    f = f[ok]
    b = np.floor(f).astype(int)
    t = f - b
    corners, weights = [], []
    for c in range(8):
        d = np.array([c & 1, (c >> 1) & 1, (c >> 2) & 1])
        idx = b + d
        idx[:, 0] = np.clip(idx[:, 0], 0, sx - 1)
        idx[:, 1] = np.clip(idx[:, 1], 0, sy - 1)
        idx[:, 2] = np.clip(idx[:, 2], 0, sz - 1)
        w = np.prod(np.where(d[None, :] == 1, t, 1 - t), 1)
        corners.append(lab[idx[:, 2], idx[:, 1], idx[:, 0]])
        weights.append(w)
    corners, weights = np.stack(corners, 1), np.stack(weights, 1)
    best = np.zeros(len(f), np.uint8)
    best_w = np.full(len(f), -1.0)
    for v in np.unique(corners):
        w = (weights * (corners == v)).sum(1)
        better = w > best_w
        best[better], best_w[better] = v, w[better]
    out = np.full(nx * ny * nz, 255, np.uint8)
    out[ok] = best
    return out.reshape(nz, ny, nx)
