#!/usr/bin/python3
"""tests/net/make_bundle.py — a tiny 2-D segmentation bundle for the node's tests and benchmark,
trained briefly on phantom subjects and exported with tools/train/export.py.

It is a stand-in for the real bundles (models/): small enough to commit (tests/net/data/) and to
train in about a minute on two CPU cores, good enough that a Dice floor means something.
The training subjects (--first 21 and up, seed 7) are never the test subjects (ids 1-2, seed 7).

usage: make_bundle.py --phantom SEGNODE_PHANTOM --modality mr-t1|cbct|pet --out DIR
                      [--subjects 6] [--steps 300] [--labels liver,spleen,kidney_left,kidney_right]
Prints the training loss every 50 steps and the Dice per label on a held-out subject (its own
Python inference, same normalisation as nn/; the node's figure is what the tests check)."""
import argparse
import glob
import os
import subprocess
import sys
import tempfile

import numpy as np
import pydicom
import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "tools", "train"))
import export  # noqa: E402

# modality folder -> (bundle modality, in-plane working spacing in mm: the small phantom's)
MODALITIES = {"mr-t1": ("MR", 400.0 / 96), "mr-t2": ("MR", 400.0 / 96), "cbct": ("CBCT", 2.8),
              "pet": ("PT", 6.0), "ct": ("CT", 400.0 / 96)}
CODES = {}   # name -> "SCT:code", read from etc/labels.tsv


def load_codes():
    for line in open(os.path.join(HERE, "..", "..", "etc", "labels.tsv")):
        if line.startswith("#") or not line.strip():
            continue
        f = line.rstrip("\n").split("\t")
        scheme, value = f[3].split(":")[:2]
        CODES[f[1]] = "%s:%s" % (scheme, value)


def read_series(d):
    """Volume [z][y][x] float32 sorted along the slice normal, and the SOP UIDs in that order."""
    ds = [pydicom.dcmread(f) for f in glob.glob(os.path.join(d, "*.dcm"))]
    o = np.array(ds[0].ImageOrientationPatient, dtype=float)
    nrm = np.cross(o[:3], o[3:])
    ds.sort(key=lambda x: float(np.dot(nrm, np.array(x.ImagePositionPatient, dtype=float))))
    vol = np.stack([x.pixel_array.astype(np.float32) * float(getattr(x, "RescaleSlope", 1) or 1) +
                    float(getattr(x, "RescaleIntercept", 0) or 0) for x in ds])
    return vol, [x.SOPInstanceUID for x in ds]


def read_labels(seg_path, uids, shape, names):
    """Class map [z][y][x]: i + 1 where segment names[i] is set (later names win), else 0."""
    seg = pydicom.dcmread(seg_path)
    px = seg.pixel_array
    if px.ndim == 2:
        px = px[np.newaxis]
    num = {int(s.SegmentNumber): str(s.SegmentLabel) for s in seg.SegmentSequence}
    z_of = {u: z for z, u in enumerate(uids)}
    out = np.zeros(shape, dtype=np.int64)
    for i, fg in enumerate(seg.PerFrameFunctionalGroupsSequence):
        name = num[int(fg.SegmentIdentificationSequence[0].ReferencedSegmentNumber)]
        if name not in names:
            continue
        z = z_of[fg.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID]
        out[z][px[i] > 0] = names.index(name) + 1
    return out


def zscore(v):
    # nn_infer_volume's per-volume z-score: mean and population std over the whole volume
    return (v - v.mean()) / max(float(v.std()), 1e-8)


def block(cin, cout):
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                         nn.Conv2d(cout, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class TinyUNet(nn.Module):
    """Three-level 2-D U-Net, 8-16-32 features (about 30 k weights)."""

    def __init__(self, k):
        super().__init__()
        self.e1, self.e2, self.e3 = block(1, 8), block(8, 16), block(16, 32)
        self.u2, self.d2 = nn.ConvTranspose2d(32, 16, 2, stride=2), block(32, 16)
        self.u1, self.d1 = nn.ConvTranspose2d(16, 8, 2, stride=2), block(16, 8)
        self.head = nn.Conv2d(8, k, 1)
        self.pool = nn.MaxPool2d(2)

    def forward(self, x):
        a = self.e1(x)
        b = self.e2(self.pool(a))
        c = self.e3(self.pool(b))
        y = self.d2(torch.cat([self.u2(c), b], 1))
        y = self.d1(torch.cat([self.u1(y), a], 1))
        return self.head(y)


def subjects(phantom, mod, first, n, tmp):
    out = os.path.join(tmp, "s%d" % first)
    subprocess.run([phantom, "--out", out, "--subjects", str(n), "--first", str(first), "--seed", "7",
                    "--modalities", mod, "--size", "small", "--quiet"], check=True)
    return sorted(glob.glob(os.path.join(out, "subject-*")))


def slices(subj, mod, names):
    vol, uids = read_series(os.path.join(subj, mod))
    lab = read_labels(os.path.join(subj, "seg", mod + ".dcm"), uids, vol.shape, names)
    return zscore(vol), lab


def fit_hw(x, size):
    """Centre-crop or zero-pad the last two dims to size x size."""
    h, w = x.shape[-2:]
    out = np.zeros(x.shape[:-2] + (size, size), dtype=x.dtype)
    sy, sx = max(0, (h - size) // 2), max(0, (w - size) // 2)
    dy, dx = max(0, (size - h) // 2), max(0, (size - w) // 2)
    ch, cw = min(h, size), min(w, size)
    out[..., dy:dy + ch, dx:dx + cw] = x[..., sy:sy + ch, sx:sx + cw]
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--phantom", required=True)
    ap.add_argument("--modality", required=True, choices=sorted(MODALITIES))
    ap.add_argument("--out", required=True)
    ap.add_argument("--subjects", type=int, default=6)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--labels", default="liver,spleen,kidney_left,kidney_right")
    a = ap.parse_args()
    torch.manual_seed(0)
    np.random.seed(0)
    torch.set_num_threads(2)
    load_codes()
    names = a.labels.split(",")
    k = len(names) + 1
    mod_name, sp = MODALITIES[a.modality]
    patch = 96
    with tempfile.TemporaryDirectory() as tmp:
        train = [slices(s, a.modality, names) for s in subjects(a.phantom, a.modality, 21, a.subjects, tmp)]
        held = slices(subjects(a.phantom, a.modality, 40, 1, tmp)[0], a.modality, names)
    x = np.concatenate([fit_hw(v, patch) for v, _ in train])[:, None].astype(np.float32)
    y = np.concatenate([fit_hw(l, patch) for _, l in train])
    print("training on %d slices of %d subjects (%s), %d classes" % (len(x), a.subjects, a.modality, k))
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    # inverse-frequency class weights (capped): small organs matter as much as the liver
    freq = np.bincount(y.ravel(), minlength=k).astype(np.float64) + 1
    w = torch.tensor(np.minimum((freq.sum() / freq) / k, 50.0), dtype=torch.float32)
    model = TinyUNet(k)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, a.steps)
    model.train()
    for step in range(1, a.steps + 1):
        # random 64x64 crops of 8 slices: the net is fully convolutional, and this is what makes
        # training fit in minutes on a loaded two-core machine
        idx = torch.randint(0, len(xt), (8,))
        oy, ox = np.random.randint(0, patch - 64 + 1, 2)
        xb, yb = xt[idx, :, oy:oy + 64, ox:ox + 64], yt[idx, oy:oy + 64, ox:ox + 64]
        logits = model(xb)
        loss = F.cross_entropy(logits, yb, weight=w)
        p = logits.softmax(1)
        oh = F.one_hot(yb, k).permute(0, 3, 1, 2).float()
        dice = (2 * (p * oh).sum((0, 2, 3)) + 1) / (p.sum((0, 2, 3)) + oh.sum((0, 2, 3)) + 1)
        loss = loss + (1 - dice[1:].mean())
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 50 == 0:
            print("step %d loss %.3f" % (step, loss.item()), flush=True)
    model.eval()
    v, l = held
    with torch.no_grad():
        pr = model(torch.from_numpy(fit_hw(v, patch)[:, None].astype(np.float32))).argmax(1).numpy()
    lt = fit_hw(l, patch)
    for c, n in enumerate(names, 1):
        inter = np.logical_and(pr == c, lt == c).sum()
        s = (pr == c).sum() + (lt == c).sum()
        print("held-out Dice %-14s %.3f" % (n, 2.0 * inter / s if s else 1.0))
    meta = {
        "name": "tiny-%s" % a.modality,
        "modality": mod_name,
        "target_spacing": [sp, sp],
        "normalization": {"type": "zscore", "per_volume": True},
        "labels": [{"value": 0, "name": "background"}] +
                  [{"value": i + 1, "name": n, "code": CODES[n]} for i, n in enumerate(names)],
    }
    print(export.export(model, torch.zeros(1, 1, patch, patch), a.out, meta))
    return 0


if __name__ == "__main__":
    sys.exit(main())
