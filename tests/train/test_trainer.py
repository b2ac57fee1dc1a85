#!/usr/bin/python3
"""tests/train/test_trainer.py — tools/train/accseg.py's stage-2 step with a pseudo-labelled
batch: GIN goes to each batch with its own probability (finetune --aug for the translated-CT
batch, --pseudo-aug for the real target slices, default --aug), and both batches' losses reach
the optimiser. GIN on the real PET slices merged the right kidney with the liver, so the PET
bundle never learnt it (tools/train/README.md); this pins the switch that turns it off. And
stage 2 refuses another in-plane spacing than its stage-1 run's.
Needs PyTorch (the trainer's dependency); exits 77 (skipped) without it.
  test_trainer.py"""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "tools", "train"))
try:
    import torch
except ImportError:
    print("SKIP: no PyTorch")
    sys.exit(77)
import accseg as A  # noqa: E402


def check(cond, msg, fails):
    print("%s: %s" % ("ok" if cond else "FAIL", msg))
    if not cond:
        fails.append(msg)


def step(aug, aug2, calls):
    """One seg_step on two distinguishable batches (CT batch of 2, pseudo batch of 3) with GIN
    replaced by a recorder; returns the losses."""
    torch.manual_seed(0)
    S = A.seg_net(7, 4)
    opt = torch.optim.Adam(S.parameters(), 1e-3)
    x, y = torch.randn(2, 1, 16, 16), torch.randint(0, 7, (2, 16, 16))
    x2, y2 = torch.randn(3, 1, 16, 16), torch.randint(0, 7, (3, 16, 16))
    y2[0, :4, :4] = A.IGNORE
    real = A.gin

    def rec(t, p):
        calls.append((t.shape[0], p))
        return real(t, p)
    A.gin = rec
    try:
        return A.seg_step(S, opt, x, y, 7, aug, (x2, y2, 0.5, aug2))
    finally:
        A.gin = real


def dice_checks(fails):
    """seg_loss's Dice term: the mean over the foreground classes present in the batch's labels
    (an absent class would otherwise push its probability to 0 everywhere with a weight near 1
    per pixel: PET's right kidney was never learnt); --dice-all-classes keeps the old mean."""
    torch.manual_seed(1)
    logits = torch.randn(2, 7, 8, 8, requires_grad=True)
    lab = torch.zeros(2, 8, 8, dtype=torch.long)
    lab[:, 2:5, 2:5] = 1
    lab[0, 0, 0] = A.IGNORE
    valid = (lab != A.IGNORE).float()
    p = logits.softmax(1) * valid[:, None]
    per = []
    for c in range(1, 7):
        m = (lab == c).float()
        per.append(1 - (2 * (p[:, c] * m).sum() + 1) / (p[:, c].sum() + m.sum() + 1))
    _, _, dc = A.seg_loss(logits, lab, 7)
    check(abs(dc.item() - per[0].item()) < 1e-6, "Dice over the present class only (%.6f, %.6f)"
          % (dc.item(), per[0].item()), fails)
    # the push on the absent classes' logits (gradient summed, positive = down) where they are
    # already improbable, as for a class the net has stopped predicting: the old mean pushes
    # them further down, 30x harder than softmax's coupling to the present class does now
    low = logits.detach().clone()
    low[:, 2:] -= 4
    push = []
    for allc in (False, True):
        A.DICE_ALL_CLASSES = allc
        try:
            x = low.clone().requires_grad_(True)
            _, _, d = A.seg_loss(x, lab, 7)
            d.backward()
            push.append(x.grad[:, 2:].sum().item())
        finally:
            A.DICE_ALL_CLASSES = False
    check(push[1] > 10 * abs(push[0]), "absent classes' push: %.4f now, %.4f before the fix"
          % tuple(push), fails)
    A.DICE_ALL_CLASSES = True
    try:
        _, _, dca = A.seg_loss(logits, lab, 7)
    finally:
        A.DICE_ALL_CLASSES = False
    check(abs(dca.item() - sum(x.item() for x in per) / 6) < 1e-6,
          "--dice-all-classes: the mean over all six", fails)
    _, _, d0 = A.seg_loss(logits.detach(), torch.zeros(2, 8, 8, dtype=torch.long), 7)
    check(d0.item() == 0.0, "no foreground in the batch: no Dice term", fails)


def main():
    fails = []
    dice_checks(fails)
    # the robust normalisation as nn_normalize computes it (tests/nn/test_bundle.c, same data:
    # 60 voxels of air, a body of 1..40; above the mean 8.2: median 24.5, IQR 15.5)
    import numpy as np
    v = np.array([0.0] * 60 + list(range(1, 41)))
    r = A.D.normalize(v, "robust")
    check(np.abs(r - (v - 24.5) / 15.5).max() < 1e-6, "robust normalisation: median / IQR "
          "above the mean", fails)
    check(np.abs(A.D.normalize(np.full(10, 7.0), "robust")).max() == 0,
          "robust normalisation of a constant volume: zeros", fails)
    check(A.D.NORMS["robust"] == {"type": "robust", "mask": "above_mean"},
          "the bundle's normalization object", fails)
    # stage 2 on another in-plane grid than its stage-1 run is refused before any work
    import json, tempfile
    with tempfile.TemporaryDirectory() as run:
        json.dump({"cmd": "adapt", "spacing": 4.0}, open(os.path.join(run, "config.json"), "w"))
        ns = A.argparse.Namespace(run=run, spacing=2.0, out=os.path.join(run, "ft"))
        try:
            A.cmd_finetune(ns)
            refused = ""
        except SystemExit as e:
            refused = str(e)
        check("trained at 4 mm" in refused and not os.path.exists(ns.out),
              "finetune --spacing 2 on a 4 mm stage 1: refused (%r)" % refused, fails)
    calls = []
    out = step(0.8, 0.0, calls)
    check(calls == [(2, 0.8)], "pseudo-aug 0: GIN on the CT batch only (calls %s)" % calls, fails)
    check(len(out) == 6 and abs(out[0].item() - (out[1] + out[2] + 0.5 * out[3]).item()) < 1e-4,
          "loss = CT loss + weight x pseudo loss", fails)
    calls = []
    step(0.8, 0.3, calls)
    check(calls == [(2, 0.8), (3, 0.3)], "pseudo-aug 0.3: each batch its own p (calls %s)" % calls,
          fails)
    calls = []
    step(0.0, 0.5, calls)
    check(calls == [(3, 0.5)], "aug 0, pseudo-aug 0.5: the pseudo batch only (calls %s)" % calls,
          fails)
    # the command line: --pseudo-aug absent = None, i.e. --aug (the bundles trained before the
    # switch keep their command)
    sys.argv = ["accseg.py", "finetune", "--run", "r", "--out", "o", "--aug", "0.8"]
    seen = {}
    A.cmd_finetune = lambda args: seen.update(vars(args))
    A.main()
    check(seen.get("pseudo_aug", "missing") is None, "--pseudo-aug defaults to --aug", fails)
    sys.argv += ["--pseudo-aug", "0"]
    A.main()
    check(seen.get("pseudo_aug") == 0.0, "--pseudo-aug 0 parsed", fails)
    print("FAIL (%d)" % len(fails) if fails else "all ok")
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
