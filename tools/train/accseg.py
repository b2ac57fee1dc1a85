#!/usr/bin/python3
"""tools/train/accseg.py — AccSeg-Net-style training of a segmenter for a target modality from
labelled CT and unlabelled target images only, and the CT-only baseline.

  accseg.py baseline --spacing 2.75 --out runs/baseline          # segmenter on CT alone
  accseg.py adapt --target mr-t1 --aug 0.5 --out runs/mr-t1 [--no-adv] [--no-nce]
            [--no-idt] [--no-mind] [--no-cc] [--no-seg-to-g] [--export models/mr-t1]
  accseg.py finetune --run runs/mr-t1 --iters 1500 --aug 0.5 --out runs/mr-t1-ft
            --export models/mr-t1       # stage 2: S alone on frozen G's translations
  accseg.py finetune ... --pseudo runs/pseudo-mr-t1 [--pseudo-band 1] [--pseudo-weight 1]
                                         # stage 2 also on real target slices, atlas pseudo-labels

adapt trains, jointly and end to end:
  G   generator CT -> target appearance (ResNet encoder/decoder, instance norm);
  D   PatchGAN discriminator, least-squares adversarial loss against real target slices;
  S   DuSEUNet (tools/train/nets.py: U-Net with concurrent channel and spatial SE) on G(CT) with
      the CT labels, Dice + cross-entropy; its loss also reaches G (--no-seg-to-g stops that);
  plus the identity loss |G(y) - y|, the anatomy constraint (MIND descriptors of x and G(x),
  L1, and 1 - correlation coefficient of x and G(x)) and PatchNCE over G's encoder features
  (G(x)'s patches against x's at the same places, other places as negatives, as in CUT).
finetune --pseudo DIR adds self-training: each step also takes a batch of real (unlabelled)
target slices with pseudo-labels made by the node's atlas method from the CT atlases
(tools/train/pseudo.sh), so the labels still come from CT only; pixels near a pseudo-label
boundary can be ignored (--pseudo-band). Every loss has its --no-* switch (ablations). Only S is exported (export.py), with the training
configuration, the data manifest and the last logged losses inside model.json.

--aug P adds GIN (random shallow conv nets, plus a random heavy tail) to S's input with
probability P, in every stage. Why: measured on the phantom, G matches the target's global
statistics within a CPU budget but not its organ contrasts (MR T2 and PET after 1500 stage-1
iterations: G(CT) liver 1.45 / 0.49 z-units where the real target has -0.02 / 3.42), and an S
that has only seen G(CT)'s contrast segments nothing on the real target (liver Dice < 0.04);
with GIN, S learns shape rather than one contrast.

Everything is 2-D on axial slices at --spacing mm in-plane (bundle target_spacing), --patch
square patches, z-score per volume — the node's nn_infer_volume preparation (see data.py). Fixed seed;
CPU (Debian python3-torch) is enough: a model trains in minutes at these widths."""
import argparse
import glob
import json
import math
import os
import random
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import data as D  # noqa: E402
import export  # noqa: E402
import nets  # noqa: E402

PATCH = 64          # set from --patch
MODALITY = {"mr-t1": "MR", "mr-t2": "MR", "cbct": "CBCT", "pet": "PT", "ct": "CT"}


# ---- networks -----------------------------------------------------------------------------

def seg_net(n_classes, width=16):
    return nets.DuSEUNet2D(1, n_classes, (width, 2 * width, 4 * width, 8 * width))


def cna(cin, cout, k=3, s=1):
    return nn.Sequential(nn.Conv2d(cin, cout, k, s, k // 2), nn.InstanceNorm2d(cout, affine=True),
                         nn.ReLU(inplace=True))


class ResBlock(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.b = nn.Sequential(cna(c, c), nn.Conv2d(c, c, 3, 1, 1),
                               nn.InstanceNorm2d(c, affine=True))

    def forward(self, x):
        return x + self.b(x)


class Generator(nn.Module):
    """CUT/CycleGAN ResNet generator, narrow. forward(x, feats=True) also returns the encoder
    features PatchNCE compares (the input itself, both down-sampling stages, a middle block)."""

    def __init__(self, w=16, nres=4):
        super().__init__()
        self.enc = nn.ModuleList([cna(1, w, 7), cna(w, 2 * w, 3, 2), cna(2 * w, 4 * w, 3, 2)])
        self.res = nn.ModuleList([ResBlock(4 * w) for _ in range(nres)])
        self.dec = nn.Sequential(
            nn.ConvTranspose2d(4 * w, 2 * w, 3, 2, 1, output_padding=1),
            nn.InstanceNorm2d(2 * w, affine=True), nn.ReLU(inplace=True),
            nn.ConvTranspose2d(2 * w, w, 3, 2, 1, output_padding=1),
            nn.InstanceNorm2d(w, affine=True), nn.ReLU(inplace=True),
            nn.Conv2d(w, 1, 7, 1, 3))
        self.nce_channels = [1, w, 2 * w, 4 * w, 4 * w]

    def forward(self, x, feats=False):
        fs = [x]
        h = x
        for e in self.enc:
            h = e(h)
            fs.append(h)
        for i, r in enumerate(self.res):
            h = r(h)
            if i == len(self.res) // 2 - 1:
                fs.append(h)
        y = self.dec(h)
        return (y, fs) if feats else y


class PatchD(nn.Module):
    """PatchGAN (pix2pix 70x70 layout, narrower): one real/fake score per overlapping patch."""

    def __init__(self, w=16):
        super().__init__()
        lr = lambda: nn.LeakyReLU(0.2, inplace=True)  # noqa: E731
        self.m = nn.Sequential(
            nn.Conv2d(1, w, 4, 2, 1), lr(),
            nn.Conv2d(w, 2 * w, 4, 2, 1), nn.InstanceNorm2d(2 * w, affine=True), lr(),
            nn.Conv2d(2 * w, 4 * w, 4, 1, 1), nn.InstanceNorm2d(4 * w, affine=True), lr(),
            nn.Conv2d(4 * w, 1, 4, 1, 1))

    def forward(self, x):
        return self.m(x)


class PatchSampleF(nn.Module):
    """CUT's projection heads: per feature layer a 2-layer MLP to 64-d, L2-normalised."""

    def __init__(self, channels, dim=64):
        super().__init__()
        self.mlps = nn.ModuleList([nn.Sequential(nn.Linear(c, dim), nn.ReLU(), nn.Linear(dim, dim))
                                   for c in channels])

    def forward(self, feats, n, ids=None):
        out, out_ids = [], []
        for i, f in enumerate(feats):
            b, c, h, w = f.shape
            flat = f.permute(0, 2, 3, 1).reshape(b, h * w, c)
            idx = ids[i] if ids is not None else torch.randperm(h * w)[:min(n, h * w)]
            z = self.mlps[i](flat[:, idx])
            out.append(F.normalize(z, dim=-1))
            out_ids.append(idx)
        return out, out_ids


def patch_nce(q, k, tau=0.07):
    """q, k [B, N, C]: positive = same location, negatives = the image's other sampled places."""
    logits = torch.bmm(q, k.detach().transpose(1, 2)) / tau
    target = torch.arange(q.shape[1]).expand(q.shape[0], -1)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1))


def mind(x, r=2, eps=1e-3):
    """2-D MIND descriptor (Heinrich 2012, four-neighbourhood): patch distances to the image
    shifted by r in +-x, +-y, normalised by their local mean variance, exp(-D/V)."""
    ds = []
    for dy, dx in ((r, 0), (-r, 0), (0, r), (0, -r)):
        sh = torch.roll(x, shifts=(dy, dx), dims=(2, 3))
        ds.append(F.avg_pool2d((x - sh) ** 2, 3, 1, 1))
    d = torch.cat(ds, 1)
    v = d.mean(1, keepdim=True).clamp_min(eps)
    return torch.exp(-d / v)


def corr_coef(a, b):
    a = a.flatten(1) - a.flatten(1).mean(1, keepdim=True)
    b = b.flatten(1) - b.flatten(1).mean(1, keepdim=True)
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1) + 1e-6)


def gin(x, p=0.5, layers=4, ch=4):
    """GIN, global intensity non-linear augmentation (Ouyang et al., "Causality-inspired
    single-source domain generalization for medical image segmentation", 2022): each image of the
    batch, with probability p, goes through its own shallow conv net with random weights (1x1 or
    3x3 kernels, leaky ReLU), is mixed with the original by a random alpha, half of the time
    given a random heavy tail, and rescaled to the original's mean and (x0.74-1.35) standard
    deviation. It changes which tissue is bright and which is dark while keeping every edge,
    so S learns shape rather than one contrast: the contrast that G(x)
    has not (yet) matched, on a CPU budget, is then no longer fatal on the target. Differentiable
    (stage 1's segmentation loss still reaches G through it)."""
    out = []
    for i in range(x.shape[0]):
        xi = x[i:i + 1]
        if random.random() >= p:
            out.append(xi)
            continue
        h = xi
        for l in range(layers):
            k = random.choice((1, 3))
            cout = 1 if l == layers - 1 else ch
            w = torch.randn(cout, h.shape[1], k, k) / (k * (h.shape[1] ** 0.5))
            h = F.conv2d(h, w, torch.randn(cout) * 0.3, padding=k // 2)
            if l < layers - 1:
                h = F.leaky_relu(h, 0.2)
        a = random.random()
        h = (h - h.mean()) / (h.std() + 1e-6)
        m = a * h + (1 - a) * (xi - xi.mean()) / (xi.std() + 1e-6)
        m = (m - m.mean()) / (m.std() + 1e-6)
        if random.random() < 0.5:
            # a heavy tail, bright or dark: an emission image z-scored over a mostly empty field
            # of view has its hot organs 3-8 standard deviations up, which no random convolution
            # of a CT reaches (those stay within ~2)
            b, sgn = random.uniform(0.5, 2.0), random.choice((1.0, -1.0))
            m = sgn * torch.exp(sgn * b * m.clamp(-4, 4))
            m = (m - m.mean()) / (m.std() + 1e-6)
        out.append(m * xi.std() * math.exp(random.uniform(-0.3, 0.3)) + xi.mean())
    return torch.cat(out)


IGNORE = 255        # label value that no loss sees (pseudo-label boundary band, data.py)


DICE_ALL_CLASSES = False   # set from --dice-all-classes (the bundles trained before the fix)


def seg_loss(logits, lab, n_classes):
    """Cross-entropy + soft Dice (over the batch, mean over the foreground classes present in
    its labels); pixels labelled IGNORE count in neither.
    Why only the present classes: with the +1 smoothing, a class absent from the batch scores
    1 - 1/(P+1), P its summed probability, whose gradient pushes every pixel's probability of
    it down by 1/(P+1)^2 (near 1 while P is small) against the cross-entropy's 1/N per pixel
    (N = 16384 in a batch of four 64 x 64 crops). A class that resembles a frequent neighbour
    is then driven to zero everywhere: PET's right kidney, against the liver that touches it,
    was never predicted (tools/train/README.md). DICE_ALL_CLASSES restores the old mean."""
    valid = (lab != IGNORE)[:, None].float()
    ce = F.cross_entropy(logits, lab, ignore_index=IGNORE)
    p = logits.softmax(1) * valid
    oh = F.one_hot(lab.masked_fill(lab == IGNORE, 0), n_classes).permute(0, 3, 1, 2).float() * valid
    inter = (p * oh).sum((0, 2, 3))
    den = p.sum((0, 2, 3)) + oh.sum((0, 2, 3))
    per = 1 - ((2 * inter + 1) / (den + 1))[1:]
    if DICE_ALL_CLASSES:
        dice = per.mean()
    else:
        present = oh.sum((0, 2, 3))[1:] > 0
        # no foreground in the batch: no Dice term (zero, still a tensor of the graph)
        dice = per[present].sum() / max(1, int(present.sum()))
    return ce + dice, ce, dice


def seg_step(S, opt, x, y, n_classes, aug, extra=None):
    """One segmenter-only step (baseline and finetune): GIN on the input with probability
    `aug`, Dice + cross-entropy, an optimiser step. `extra` = (x2, y2, w2, aug2): a second batch
    (finetune --pseudo: real target slices with pseudo-labels) in the same forward pass, GIN on
    it with probability aug2, its loss (Dice over its own pixels) added with weight w2. Returns
    the loss tensors, and the second batch's after them."""
    if aug:
        x = gin(x, aug)
    if extra is None:
        loss, ce, dc = seg_loss(S(x), y, n_classes)
        out = (loss, ce, dc)
    else:
        x2, y2, w2, aug2 = extra
        if aug2:
            x2 = gin(x2, aug2)
        logits = S(torch.cat([x, x2]))
        loss, ce, dc = seg_loss(logits[:x.shape[0]], y, n_classes)
        l2, ce2, dc2 = seg_loss(logits[x.shape[0]:], y2, n_classes)
        out = (loss + w2 * l2, ce, dc, l2, ce2, dc2)
    opt.zero_grad()
    out[0].backward()
    opt.step()
    return out


def seg_log(lf, t0, it, losses):
    """Log a segmenter step's losses; returns them as the run's `last` record. With a second
    (pseudo-labelled) batch, `seg` is the weighted total and ce / dice_loss are the CT batch's."""
    loss, ce, dc = losses[:3]
    last = {"iter": it, "seg": round(loss.item(), 4), "ce": round(ce.item(), 4),
            "dice_loss": round(dc.item(), 4)}
    if len(losses) > 3:
        last.update({"pseudo_seg": round(losses[3].item(), 4),
                     "pseudo_ce": round(losses[4].item(), 4),
                     "pseudo_dice_loss": round(losses[5].item(), 4)})
    log(lf, "%5d %6.0fs %s" % (it, time.time() - t0, json.dumps(last)))
    return last


# ---- data ---------------------------------------------------------------------------------

def series_dirs(root, modality, n=0):
    d = sorted(d for d in glob.glob(os.path.join(root, "subject-*", modality)) if os.path.isdir(d))
    return d[:n] if n else d


class SliceBank:
    """All slices of some series, with random 96x96 crops (zero = volume mean where the image
    is smaller than the patch)."""

    def __init__(self, dirs, spacing, labels, cache, step=1, organ_frac=0.8, load=None,
                 norm="zscore"):
        """`load(d)` replaces data.load_series (pseudo-labels: data.load_pseudo)."""
        self.imgs, self.labs, self.manifest = [], [], []
        for d in dirs:
            s = load(d) if load else D.load_series(d, spacing, labels, cache_dir=cache, step=step,
                                                   norm=norm)
            for k in range(s["img"].shape[0]):
                self.imgs.append(s["img"][k])
                self.labs.append(s["lab"][k] if labels else None)
            self.manifest.append({"series": os.path.relpath(d, os.path.dirname(os.path.dirname(d))),
                                  "slices": int(s["img"].shape[0]),
                                  "shape": list(s["img"].shape[1:])})
        self.labels = labels
        self.organ = [i for i, l in enumerate(self.labs)
                      if l is not None and ((l > 0) & (l != IGNORE)).any()]
        self.organ_frac = organ_frac

    def crop(self, rng, img, lab):
        h, w = img.shape
        ph, pw = max(0, PATCH - h), max(0, PATCH - w)
        if ph or pw:
            pad = ((ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2))
            img = np.pad(img, pad)
            lab = np.pad(lab, pad) if lab is not None else None
            h, w = img.shape
        y, x = rng.randint(0, h - PATCH), rng.randint(0, w - PATCH)
        return img[y:y + PATCH, x:x + PATCH], \
            (lab[y:y + PATCH, x:x + PATCH] if lab is not None else None)

    def batch(self, rng, n):
        xs, ys = [], []
        for _ in range(n):
            if self.labels and self.organ and rng.random() < self.organ_frac:
                i = rng.choice(self.organ)
            else:
                i = rng.randrange(len(self.imgs))
            im, lb = self.crop(rng, self.imgs[i], self.labs[i])
            xs.append(im)
            ys.append(lb)
        x = torch.from_numpy(np.stack(xs)[:, None].astype(np.float32))
        y = torch.from_numpy(np.stack(ys).astype(np.int64)) if self.labels else None
        return x, y


def pseudo_bank(args):
    """Real target slices with pseudo-labels (finetune --pseudo DIR): DIR/subject-NNN/MOD.dcm
    (a SEG, e.g. `segnode segment --method atlas` with CT atlases) or MOD.nii[.gz], the image
    series DIR's subject-NNN/MOD under the first of --target-root's folders that has it.
    DIR/source.json (how the labels were made) goes into the data manifest."""
    labels = {}
    for f in sorted(glob.glob(os.path.join(args.pseudo, "subject-*", args.target + ".*"))):
        if f.endswith((".dcm", ".nii", ".nii.gz")):
            labels.setdefault(os.path.basename(os.path.dirname(f)), f)
    pairs = {}
    for subj, f in labels.items():
        for root in args.target_root.split(","):
            d = os.path.join(root, subj, args.target)
            if os.path.isdir(d):
                pairs[d] = f
                break
        else:
            sys.exit("%s: no series %s/%s under %s" % (f, subj, args.target, args.target_root))
    if not pairs:
        sys.exit("%s: no pseudo-label volumes for %s" % (args.pseudo, args.target))
    bank = SliceBank(sorted(pairs), args.spacing, True, args.cache, load=lambda d: D.load_pseudo(
        d, pairs[d], args.spacing, cache_dir=args.cache, band=args.pseudo_band, ignore=IGNORE,
        norm=args.norm))
    for m, d in zip(bank.manifest, sorted(pairs)):
        m["root"] = os.path.dirname(os.path.dirname(d))
        m["labels"] = pairs[d]
    src = os.path.join(args.pseudo, "source.json")
    source = json.load(open(src)) if os.path.exists(src) else None
    return bank, {"dir": args.pseudo, "source": source, "series": bank.manifest}


# ---- training -----------------------------------------------------------------------------

def log(f, msg):
    print(msg, flush=True)
    f.write(msg + "\n")
    f.flush()


def export_bundle(S, args, kind, manifest, last, out):
    meta = {"name": "accseg-%s" % kind if kind != "baseline" else "ct-only-baseline",
            "modality": MODALITY.get(args.target, ""),
            "patch_size": [PATCH, PATCH],
            "target_spacing": [args.spacing, args.spacing],
            "normalization": D.NORMS[getattr(args, "norm", "zscore")],
            "labels": D.bundle_labels(),
            "training": {k: v for k, v in vars(args).items() if k not in ("func",)},
            "training_losses": last,
            "data_manifest": manifest}
    meta["training"]["method"] = kind
    S.eval()
    export.export(S, torch.zeros(1, 1, PATCH, PATCH), out, meta)


def save_config(args, manifest):
    c = dict(vars(args))
    c["manifest"] = manifest
    with open(os.path.join(args.out, "config.json"), "w") as f:
        json.dump(c, f, indent=1)


def setup(args):
    global PATCH, DICE_ALL_CLASSES
    PATCH = args.patch
    DICE_ALL_CLASSES = args.dice_all_classes
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.set_num_threads(args.threads)
    os.makedirs(args.out, exist_ok=True)
    return random.Random(args.seed), open(os.path.join(args.out, "train.log"), "w")


def prior_bias(S, bank, n_cls):
    """Start the head at the class log-frequencies: with a few hundred Adam steps of ~lr each,
    a zero bias would take most of the run just to learn that most pixels are background."""
    counts = np.ones(n_cls)
    for l in bank.labs:
        counts += np.bincount(l.ravel(), minlength=n_cls)[:n_cls]
    with torch.no_grad():
        S.head.bias.copy_(torch.from_numpy(np.log(counts / counts.sum())).float())


def lr_at(args, it, base):
    """Constant, then x0.3 for the last 30% of the iterations."""
    return base * (0.3 if it > 0.7 * args.iters else 1.0)


def cmd_baseline(args):
    rng, lf = setup(args)
    ct = SliceBank(series_dirs(args.ct, "ct", args.ct_subjects), args.spacing, True, args.cache, step=args.ct_step)
    n_cls = len(D.ORGANS) + 1
    S = seg_net(n_cls, args.width)
    prior_bias(S, ct, n_cls)
    opt = torch.optim.Adam(S.parameters(), args.lr, betas=(0.9, 0.999))
    t0 = time.time()
    last = {}
    for it in range(1, args.iters + 1):
        for g in opt.param_groups:
            g["lr"] = lr_at(args, it, args.lr)
        x, y = ct.batch(rng, args.batch)
        losses = seg_step(S, opt, x, y, n_cls, args.aug)
        if it % args.log_every == 0 or it == args.iters:
            last = seg_log(lf, t0, it, losses)
    torch.save(S.state_dict(), os.path.join(args.out, "S.pt"))
    manifest = {"ct_labelled": ct.manifest}
    save_config(args, manifest)
    if args.export:
        export_bundle(S, args, "baseline", manifest, last, args.export)
        log(lf, "exported %s" % args.export)


def cmd_adapt(args):
    rng, lf = setup(args)
    ct = SliceBank(series_dirs(args.ct, "ct", args.ct_subjects), args.spacing, True, args.cache, step=args.ct_step)
    # the target as the bundle will normalise it; the CT stays z-scored (G's input only)
    tg = SliceBank(series_dirs(args.target_root, args.target), args.spacing, False, args.cache,
                   step=args.target_step, norm=args.norm)
    n_cls = len(D.ORGANS) + 1
    G, Dn, S = Generator(args.gwidth, args.gres), PatchD(args.dwidth), seg_net(n_cls, args.width)
    H = PatchSampleF(G.nce_channels)
    if args.init:
        S.load_state_dict(torch.load(os.path.join(args.init, "S.pt")))
    # warm start: G starts as (roughly) the identity on CT, so S sees CT-like images at first and
    # adapts while G moves towards the target's appearance
    optG = torch.optim.Adam(list(G.parameters()) + list(H.parameters()), args.lr, betas=(0.5, 0.999))
    for it in range(args.g_warm):
        x, _ = ct.batch(rng, args.batch)
        l = F.l1_loss(G(x), x)
        optG.zero_grad()
        l.backward()
        optG.step()
    log(lf, "G warm start: %d iters, L1 %.4f" % (args.g_warm, l.item() if args.g_warm else 0))
    optD = torch.optim.Adam(Dn.parameters(), args.lr, betas=(0.5, 0.999))
    optS = torch.optim.Adam(S.parameters(), args.lr_s, betas=(0.9, 0.999))
    t0 = time.time()
    last = {}
    if not args.init:
        prior_bias(S, ct, n_cls)
    for it in range(1, args.iters + 1):
        for g in optS.param_groups:
            g["lr"] = lr_at(args, it, args.lr_s)
        x, lab = ct.batch(rng, args.batch)
        y, _ = tg.batch(rng, args.batch)
        fake, fx = G(x, feats=True)
        # --- D
        if not args.no_adv:
            pr, pf = Dn(y), Dn(fake.detach())
            lD = 0.5 * (F.mse_loss(pr, torch.ones_like(pr)) + F.mse_loss(pf, torch.zeros_like(pf)))
            optD.zero_grad()
            lD.backward()
            optD.step()
        # --- G (+ heads) and S
        L = {}
        if not args.no_adv:
            pf = Dn(fake)
            L["adv"] = args.w_adv * F.mse_loss(pf, torch.ones_like(pf))
        if not args.no_idt:
            L["idt"] = args.w_idt * F.l1_loss(G(y), y)
        if not args.no_mind:
            L["mind"] = args.w_mind * F.l1_loss(mind(fake), mind(x))
        if not args.no_cc:
            L["cc"] = args.w_cc * (1 - corr_coef(fake, x)).mean()
        if not args.no_nce:
            _, ff = G(fake, feats=True)
            qk, ids = H(ff, args.nce_patches)
            kk, _ = H(fx, args.nce_patches, ids)
            L["nce"] = args.w_nce * sum(patch_nce(q, k) for q, k in zip(qk, kk)) / len(qk)
        seg_in = fake if not args.no_seg_to_g else fake.detach()
        if args.aug:
            seg_in = gin(seg_in, args.aug)
        ls, ce, dc = seg_loss(S(seg_in), lab, n_cls)
        L["seg"] = args.w_seg * ls
        total = sum(L.values())
        optG.zero_grad()
        optS.zero_grad()
        total.backward()
        optG.step()
        optS.step()
        if it % args.log_every == 0 or it == args.iters:
            last = {k: round(v.item(), 4) for k, v in L.items()}
            last["iter"] = it
            if not args.no_adv:
                last["D"] = round(lD.item(), 4)
            log(lf, "%5d %6.0fs %s" % (it, time.time() - t0, json.dumps(last)))
        if args.save_every and it % args.save_every == 0:
            # checkpoints to inspect a long run while it goes on (overwritten)
            torch.save(S.state_dict(), os.path.join(args.out, "S.pt"))
            torch.save(G.state_dict(), os.path.join(args.out, "G.pt"))
    torch.save(S.state_dict(), os.path.join(args.out, "S.pt"))
    torch.save(G.state_dict(), os.path.join(args.out, "G.pt"))
    manifest = {"ct_labelled": ct.manifest, "target_unlabelled": tg.manifest}
    save_config(args, manifest)
    if args.export:
        export_bundle(S, args, args.target, manifest, last, args.export)
        log(lf, "exported %s" % args.export)


def cmd_finetune(args):
    """Stage 2: more segmenter iterations from a finished run (its S.pt, and G.pt for an adapt
    run). G is frozen: S trains on G(CT) (no gradient to G) with the CT labels, or on CT itself
    for the baseline. The other losses are G's and are done. Cheap: no D, no NCE, no G update."""
    first = json.load(open(os.path.join(args.run, "config.json")))
    if first.get("spacing", args.spacing) != args.spacing:
        # G translates, and S learned, at stage 1's grid: another one would train S silently on
        # translations of a scale G never saw
        sys.exit("--spacing %g: the stage-1 run %s was trained at %g mm" %
                 (args.spacing, args.run, first["spacing"]))
    if first.get("width", args.width) != args.width:
        # S starts from stage 1's weights, which have stage 1's width
        sys.exit("--width %d: the stage-1 run %s trained a segmenter of width %d" %
                 (args.width, args.run, first["width"]))
    # G was trained against, and S on, target slices in stage 1's normalisation: keep it
    args.norm = first.get("norm", "zscore")
    rng, lf = setup(args)
    ct = SliceBank(series_dirs(args.ct, "ct", args.ct_subjects), args.spacing, True, args.cache,
                   step=args.ct_step)
    n_cls = len(D.ORGANS) + 1
    S = seg_net(n_cls, args.width)
    S.load_state_dict(torch.load(os.path.join(args.run, "S.pt")))
    G = None
    if os.path.exists(os.path.join(args.run, "G.pt")):
        G = Generator(args.gwidth, args.gres)
        G.load_state_dict(torch.load(os.path.join(args.run, "G.pt")))
        G.eval()
    pb, pseudo_manifest = None, None
    if args.pseudo:
        args.target = first.get("target", "ct")
        if args.target == "ct":
            sys.exit("--pseudo needs a stage-1 (adapt) run: its target names the modality")
        pb, pseudo_manifest = pseudo_bank(args)
        log(lf, "pseudo-labelled: %d series, %d slices (%d with organs), band %d px, weight %g, "
            "GIN p %g" % (len(pb.manifest), len(pb.imgs), len(pb.organ), args.pseudo_band,
                          args.pseudo_weight,
                          args.aug if args.pseudo_aug is None else args.pseudo_aug))
        # its own stream: the CT crops stay those of the same run without --pseudo
        prng = random.Random(args.seed + 1)
    opt = torch.optim.Adam(S.parameters(), args.lr, betas=(0.9, 0.999))
    t0 = time.time()
    last = {}
    for it in range(1, args.iters + 1):
        for g in opt.param_groups:
            g["lr"] = lr_at(args, it, args.lr)
        x, y = ct.batch(rng, args.batch)
        if G is not None:
            with torch.no_grad():
                x = G(x)
        extra = None
        if pb is not None:
            xp, yp = pb.batch(prng, args.pseudo_batch or args.batch)
            extra = (xp, yp, args.pseudo_weight,
                     args.aug if args.pseudo_aug is None else args.pseudo_aug)
        losses = seg_step(S, opt, x, y, n_cls, args.aug, extra)
        if it % args.log_every == 0 or it == args.iters:
            last = seg_log(lf, t0, it, losses)
    torch.save(S.state_dict(), os.path.join(args.out, "S.pt"))
    if args.export:
        stage1 = dict(first)
        args.target = first.get("target", "ct")
        args.stage1 = stage1
        manifest = {"ct_labelled": ct.manifest}
        if G is not None:
            manifest["target_unlabelled"] = first.get("manifest", {}).get("target_unlabelled")
        if pseudo_manifest:
            manifest["target_pseudo_labelled"] = pseudo_manifest
        export_bundle(S, args, args.target if G is not None else "baseline", manifest, last,
                      args.export)
        log(lf, "exported %s" % args.export)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("baseline", "adapt", "finetune"):
        p = sub.add_parser(name)
        p.add_argument("--ct", default="/work/train-data/ct", help="phantom folder, labelled CT")
        p.add_argument("--cache", default="/work/train-data/cache")
        p.add_argument("--spacing", type=float, default=4.0, help="in-plane mm")
        p.add_argument("--patch", type=int, default=64, help="square patch (multiple of 8)")
        p.add_argument("--ct-subjects", type=int, default=3, help="first N CT subjects")
        p.add_argument("--ct-step", type=int, default=2, help="keep every n-th CT slice")
        p.add_argument("--iters", type=int, default=300)
        p.add_argument("--batch", type=int, default=4)
        p.add_argument("--lr", type=float, default=1e-3 if name == "adapt" else 3e-3,
                       help="adapt: G, D and heads; baseline: S")
        p.add_argument("--width", type=int, default=8, help="segmenter base width")
        p.add_argument("--seed", type=int, default=8)
        p.add_argument("--threads", type=int, default=1)
        p.add_argument("--log-every", type=int, default=20)
        p.add_argument("--out", required=True, help="run folder (log, weights)")
        p.add_argument("--export", help="write the segmenter bundle here")
        p.add_argument("--aug", type=float, default=0.0,
                       help="GIN intensity augmentation of S's input with this probability")
        p.add_argument("--dice-all-classes", action="store_true",
                       help="Dice loss over every foreground class, present in the batch or "
                       "not (the loss before the fix; reproduces the bundles trained then)")
        p.set_defaults(target="ct")
    p = sub.choices["finetune"]
    p.add_argument("--run", required=True, help="stage-1 run folder (S.pt, G.pt, config.json)")
    p.add_argument("--gwidth", type=int, default=8)
    p.add_argument("--gres", type=int, default=2)
    p.add_argument("--pseudo", help="pseudo-label folder: DIR/subject-NNN/MOD.dcm|.nii[.gz] "
                   "(atlas method with CT atlases) for unlabelled target series; adds a batch of "
                   "those real target slices to every step")
    p.add_argument("--target-root", default="/work/train-data/target",
                   help="comma list of phantom folders holding the pseudo-labelled series")
    p.add_argument("--pseudo-band", type=int, default=1,
                   help="ignore pixels within N pixels of a pseudo-label boundary (0 = none)")
    p.add_argument("--pseudo-weight", type=float, default=1.0,
                   help="weight of the pseudo-labelled batch's loss (the CT batch's is 1)")
    p.add_argument("--pseudo-batch", type=int, default=0, help="its batch size (0 = --batch)")
    p.add_argument("--pseudo-aug", type=float, default=None,
                   help="GIN probability on the pseudo-labelled batch (default: --aug). These are "
                   "real target slices, whose contrast GIN would hide (PET uses 0, "
                   "tools/train/README.md)")
    p = sub.choices["adapt"]
    p.add_argument("--target", required=True, choices=["mr-t1", "mr-t2", "cbct", "pet"])
    p.add_argument("--target-root", default="/work/train-data/target",
                   help="phantom folder with the unlabelled target series")
    p.add_argument("--target-step", type=int, default=1)
    p.add_argument("--norm", choices=sorted(D.NORMS), default="zscore",
                   help="the target's normalisation, the bundle's (stage 2 keeps stage 1's): "
                        "zscore per volume, or robust (median / IQR of the voxels above the "
                        "volume's mean)")
    p.add_argument("--init", help="baseline run folder: S starts from its weights")
    p.add_argument("--g-warm", type=int, default=40, help="G identity warm-start iterations")
    p.add_argument("--lr-s", type=float, default=3e-3, help="segmenter")
    p.add_argument("--gwidth", type=int, default=8)
    p.add_argument("--gres", type=int, default=2, help="G residual blocks")
    p.add_argument("--dwidth", type=int, default=8)
    p.add_argument("--nce-patches", type=int, default=64)
    p.add_argument("--save-every", type=int, default=0, help="checkpoint G.pt / S.pt every N iters")
    for l, w in (("adv", 1.0), ("idt", 2.0), ("mind", 10.0), ("cc", 1.0), ("nce", 1.0),
                 ("seg", 1.0)):
        p.add_argument("--w-" + l, type=float, default=w)
        if l != "seg":
            p.add_argument("--no-" + l, action="store_true", help="ablation: drop the %s loss" % l)
    p.add_argument("--no-seg-to-g", action="store_true",
                   help="segmentation loss trains S only (G not end to end)")
    args = ap.parse_args()
    {"baseline": cmd_baseline, "adapt": cmd_adapt, "finetune": cmd_finetune}[args.cmd](args)


if __name__ == "__main__":
    main()
