#!/usr/bin/python3
"""tools/phantom/montage.py — montage PNG of one segnode-phantom subject: an axial (top row) and
an axial through the heart (middle row) and a coronal (bottom row) plane through the same patient point in every modality (CT, CBCT, MR T1,
MR T2, PET, left to right), resampled from the DICOM tags alone, with the ground-truth SEG
contours in the label table's colours. Needs numpy and pydicom (run with /usr/bin/python3).

usage: montage.py SUBJECT_DIR OUT.png [--labels etc/labels.tsv] [--point X,Y,Z] [--mm 1.6]"""
import argparse
import json
import os
import struct
import sys
import zlib

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import phantomio  # noqa: E402

ORDER = ["ct", "cbct", "mr-t1", "mr-t2", "pet"]


def write_png(path, rgb):
    h, w, _ = rgb.shape
    raw = b"".join(b"\x00" + rgb[y].tobytes() for y in range(h))

    def chunk(tag, data):
        c = struct.pack(">I", len(data)) + tag + data
        return c + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
    png += chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")
    with open(path, "wb") as f:
        f.write(png)


def sample(vol, g, pts, fill):
    s = np.rint(g.patient_to_index(pts)).astype(int)
    nx, ny, nz = g.size
    ok = (s[:, 0] >= 0) & (s[:, 0] < nx) & (s[:, 1] >= 0) & (s[:, 1] < ny) & (s[:, 2] >= 0) & (s[:, 2] < nz)
    out = np.full(len(pts), fill, vol.dtype)
    out[ok] = vol[s[ok, 2], s[ok, 1], s[ok, 0]]
    return out


def plane_points(centre, axis_a, axis_b, half, mm):
    n = int(round(2 * half / mm))
    t = (np.arange(n) - (n - 1) / 2.0) * mm
    b, a = np.meshgrid(t, t, indexing="ij")
    pts = centre[None, :] + a.ravel()[:, None] * axis_a[None, :] + b.ravel()[:, None] * axis_b[None, :]
    return pts, n


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("subject")
    ap.add_argument("out")
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--labels", default=os.path.join(here, "..", "..", "etc", "labels.tsv"))
    ap.add_argument("--point", default="0,10,-30")
    ap.add_argument("--mm", type=float, default=1.6)
    ap.add_argument("--half", type=float, default=200.0)
    a = ap.parse_args()
    table = phantomio.load_labels_table(a.labels)
    colour = {v["number"]: v["rgb"] for v in table.values()}
    skip = {table[n]["number"] for n in ("fat", "muscle") if n in table}
    meta = json.load(open(os.path.join(a.subject, "phantom.json")))
    centre = np.array([float(x) for x in a.point.split(",")])
    mods = [m for m in ORDER if any(s["modality"] == m for s in meta["series"])]
    tiles = []
    cache = {}
    views = [("axial", centre), ("axial", centre + np.array([0.0, 0.0, 85.0])), ("coronal", centre)]
    for view, c in views:
        row = []
        for m in mods:
            if m not in cache:
                cache[m] = (phantomio.read_series(os.path.join(a.subject, m)),
                            phantomio.read_seg(os.path.join(a.subject, "seg", m + ".dcm"), table))
            (vol, g, _), (lab, gl) = cache[m]
            if view == "axial":   # image right = patient left (+x), image down = posterior (+y)
                pts, n = plane_points(c, np.array([1.0, 0, 0]), np.array([0, 1.0, 0]), a.half, a.mm)
            else:                 # image right = patient left, image down = inferior (-z)
                pts, n = plane_points(c, np.array([1.0, 0, 0]), np.array([0, 0, -1.0]), a.half, a.mm)
            img = sample(vol, g, pts, np.nan).reshape(n, n)
            lb = sample(lab, gl, pts, 0).reshape(n, n)
            if m in ("ct", "cbct"):
                lo, hi = -160.0, 240.0
            elif m == "pet":
                lo, hi = 0.0, 6.0 * float(meta["pet_suv1_bqml"])
            else:
                v = img[np.isfinite(img)]
                lo, hi = 0.0, float(np.percentile(v, 99.5)) if v.size else 1.0
            gray = np.clip((np.nan_to_num(img, nan=lo) - lo) / (hi - lo), 0, 1)
            if m == "pet":
                gray = 1.0 - gray
            gray[~np.isfinite(img)] = 0.08
            rgb = np.repeat((gray * 255).astype(np.uint8)[:, :, None], 3, 2)
            edge = np.zeros_like(lb, bool)
            edge[:-1, :] |= lb[:-1, :] != lb[1:, :]
            edge[:, :-1] |= lb[:, :-1] != lb[:, 1:]
            for v in np.unique(lb[edge]):
                if v == 0 or v in skip:
                    continue
                rgb[edge & (lb == v)] = colour.get(int(v), (255, 255, 0))
            row.append(rgb)
        tiles.append(np.concatenate([np.pad(t, ((2, 2), (2, 2), (0, 0))) for t in row], 1))
    out = np.concatenate(tiles, 0)
    write_png(a.out, out)
    print("wrote %s (%dx%d)" % (a.out, out.shape[1], out.shape[0]))


if __name__ == "__main__":
    main()
