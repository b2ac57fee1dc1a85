#!/usr/bin/python3
"""tools/train/evaluate.py — Dice and average symmetric surface distance (ASD, mm) per label
and modality on phantom subjects not used in training, for model bundles (run through the node's
own `segnode infer`, i.e. nn/ on the CPU) and the atlas method (`segnode segment --method atlas`).
With --node each bundle is also scored as the node sends it, under NAME@node: the SEG of
`segnode segment --method net` (the route's net method with its post-processing: small
components dropped, holes filled), where `segnode infer` gives the raw argmax. With --both (and
--atlas, --config) each bundle is also scored under NAME@both: the SEG of `segnode segment
--method both`, the bundle and the atlases fused as a `method = both` route sends it.
The target modality's ground truth (DIR/subject-NNN/seg/<modality>.dcm) is read here only.

  evaluate.py --segnode build/tools/segnode/segnode --data /work/train-data/eval \\
      --modalities mr-t1,mr-t2,cbct,pet \\
      --model baseline=models/ct-baseline --model adapted=models/{mod} \\
      [--atlas NAMES --config segnode.conf] --json out.json --markdown out.md

`{mod}` in a model path is replaced by the modality (a bundle per target); a model whose path
does not exist for a modality is skipped. Prints a Markdown table (one row per method, modality
and label; mean over subjects) and writes the per-subject figures as JSON."""
import argparse
import glob
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import data as D  # noqa: E402


def gt_labels(series):
    table = D.phantomio.load_labels_table(D.LABELS_TSV)
    lab, g = D.phantomio.read_seg(D.find_seg(series), table)
    return lab, (g.spacing[2], g.spacing[1], g.spacing[0])


def run_model(segnode, bundle, series, tmp, threads):
    out = os.path.join(tmp, "pred.nii")
    t0 = time.time()
    subprocess.run([segnode, "infer", "--model", bundle, "--device", "cpu", "--threads",
                    str(threads), "--pad", series, "--out", out], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return D.read_nifti(out), time.time() - t0


def run_segment(segnode, args, series, tmp):
    """`segnode ARGS --out SEG series` (a segment subcommand), its labels and seconds."""
    out = os.path.join(tmp, "seg.dcm")
    t0 = time.time()
    subprocess.run([segnode] + args + ["--out", out, series], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return D.read_label_file(out), time.time() - t0


def score(pred, gt, spacing, organs):
    tab = D.label_table()
    res = {}
    for o in organs:
        v = tab[o][0]
        a, b = pred == v, gt == v
        res[o] = {"dice": D.dice(a, b), "asd": D.asd(a, b, spacing)}
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--segnode")
    ap.add_argument("--data", help="phantom folder of evaluation subjects")
    ap.add_argument("--merge", nargs="+", help="only print the table of earlier --json files")
    ap.add_argument("--modalities", default="mr-t1,mr-t2,cbct,pet")
    ap.add_argument("--model", action="append", default=[], help="NAME=BUNDLE_DIR ({mod} allowed)")
    ap.add_argument("--atlas", help="comma list of atlas names (segnode atlas list)")
    ap.add_argument("--config", help="segnode config whose storage holds the atlas library")
    ap.add_argument("--organs", default=",".join(D.ORGANS))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--node", action="store_true",
                    help="also score each bundle's SEG as the node sends it (NAME@node)")
    ap.add_argument("--both", action="store_true",
                    help="also score each bundle fused with --atlas as a both route sends it (NAME@both)")
    ap.add_argument("--only-both", action="store_true",
                    help="with --both: score NAME@both and the atlases, not the bundles alone")
    ap.add_argument("--json")
    ap.add_argument("--markdown")
    args = ap.parse_args()
    organs = args.organs.split(",")
    if args.merge:
        rows = [r for f in args.merge for r in json.load(open(f))]
        order = {m: i for i, m in enumerate(["baseline", "stage1", "adapted", "atlas"])}
        mods = args.modalities.split(",")
        rows.sort(key=lambda r: (mods.index(r["modality"]) if r["modality"] in mods else 99,
                                 order.get(r["method"], 50)))
        print(table(rows, organs))
        return
    if not args.segnode or not args.data:
        ap.error("--segnode and --data are needed")
    if args.both and not (args.atlas and args.config):
        ap.error("--both needs --atlas and --config")
    models = [m.split("=", 1) for m in args.model]
    methods = [] if args.only_both else list(models)
    if args.node and not args.only_both:
        methods = [x for n, p in methods for x in ([n, p], [n + "@node", p])]
    if args.both:
        methods += [[n + "@both", p] for n, p in models]
    if args.atlas:
        methods.append(["atlas", None])
    rows = []           # dicts: method, modality, subject, organ, dice, asd, seconds
    subjects = sorted(glob.glob(os.path.join(args.data, "subject-*")))
    with tempfile.TemporaryDirectory() as tmp:
        for mod in args.modalities.split(","):
            for subj in subjects:
                series = os.path.join(subj, mod)
                if not os.path.isdir(series):
                    continue
                gt, sp = gt_labels(series)
                for name, path in methods:
                    if path is not None:
                        bundle = path.replace("{mod}", mod)
                        if not os.path.exists(os.path.join(bundle, "model.json")):
                            continue
                        if name.endswith("@both"):
                            pred, secs = run_segment(args.segnode, [
                                "-c", args.config, "segment", "--method", "both", "--model",
                                bundle, "--atlases", args.atlas, "--device", "cpu"], series, tmp)
                        elif name.endswith("@node"):
                            pred, secs = run_segment(args.segnode, [
                                "segment", "--method", "net", "--model", bundle, "--device",
                                "cpu"], series, tmp)
                        else:
                            pred, secs = run_model(args.segnode, bundle, series, tmp,
                                                   args.threads)
                    else:
                        pred, secs = run_segment(args.segnode, [
                            "-c", args.config, "segment", "--method", "atlas", "--atlases",
                            args.atlas], series, tmp)
                    if pred.shape != gt.shape:
                        sys.exit("%s %s: prediction %s vs ground truth %s" %
                                 (name, series, pred.shape, gt.shape))
                    for o, r in score(pred, gt, sp, organs).items():
                        rows.append({"method": name, "modality": mod,
                                     "subject": os.path.basename(subj), "organ": o,
                                     "dice": r["dice"], "asd": r["asd"], "seconds": secs})
                    print("%-10s %-6s %s %5.1fs  %s" % (
                        name, mod, os.path.basename(subj), secs,
                        " ".join("%s=%.3f" % (r["organ"], r["dice"]) for r in rows
                                 if r["method"] == name and r["modality"] == mod and
                                 r["subject"] == os.path.basename(subj))), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    md = table(rows, organs)
    print(md)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(md)


def table(rows, organs):
    """One row per modality and method: Dice / ASD (mm) per organ, mean over subjects."""
    out = ["| modality | method | " + " | ".join(organs) + " | mean Dice | s/volume |",
           "|---|---|" + "---|" * len(organs) + "---|---|"]
    keys = []
    for r in rows:
        k = (r["modality"], r["method"])
        if k not in keys:
            keys.append(k)
    for mod, meth in keys:
        cells, means = [], []
        sel = [r for r in rows if r["modality"] == mod and r["method"] == meth]
        for o in organs:
            d = [r["dice"] for r in sel if r["organ"] == o]
            means.append(np.nanmean(d))
            a = [r["asd"] for r in sel if r["organ"] == o and not np.isnan(r["asd"])]
            cells.append("%.3f / %s" % (np.nanmean(d), "%.1f" % np.mean(a) if a else "-"))
        secs = np.mean([r["seconds"] for r in sel])
        n = len({r["subject"] for r in sel})
        out.append("| %s | %s | %s | %.3f | %.1f (n=%d) |" % (mod, meth, " | ".join(cells),
                                                           np.mean(means), secs, n))
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    main()
