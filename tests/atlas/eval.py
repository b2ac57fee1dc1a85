#!/usr/bin/python3
"""tests/atlas/eval.py — leave-one-out evaluation of the atlas method on `small` phantoms.

For every subject in turn: CT atlases of the other subjects, targets CT, CBCT, MR T1, MR T2 and
PET of the left-out one. Runs build/tests/atlas/atlas_eval (segnode's registration and fusion)
and prints its table (Dice and HD95 per label, modality and fusion method, seconds per
registration); then, on the same pairs, Debian's elastix (affine + B-spline, Mattes mutual
information) and plastimatch (affine + B-spline, MI) with majority vote, Dice and seconds.
Not run by ctest (minutes); tests/atlas/run_short.sh is the short version.

usage: eval.py --build BUILD_DIR [--subjects 4] [--seed 7] [--out DIR] [--loo 1] [--no-baselines]
              [--skip-ours] [--baseline-atlases 1] [--modalities ct,cbct,mr-t1,mr-t2,pet]
              [--atlas-phase plain|contrast|both] [--eval-args "..."] [--tools elastix,plastimatch]
              [--mabs-atlases N] [--summary-only] [--targets 2,4]

--atlas-phase contrast takes the atlases' CT (and its SEG) from a second phantom set of the same
seed rendered in the portal-venous phase (--contrast: same anatomy, same ground truth), as a
clinical atlas library would be; the targets stay non-contrast. --atlas-phase both gives
atlas_eval both renderings of every atlas subject with --distinct: all are registered and one
per subject is fused (atlas_distinct), which is what pipeline_atlas_segment does with such a
library.

--loo K takes the last K subjects in turn as the target, each with all the other subjects as
atlases. Each target's atlas_eval output is kept in OUT/export-T/atlas_eval.txt; at the end a
summary gives, per modality, fusion and label, the mean and the minimum Dice over the targets
whose output is complete, and seconds per registration. --summary-only prints that summary
from the files an earlier (or interrupted) run left, without running anything. --targets N,M
runs (and summarizes) only those subjects as targets, among the ones --loo covers (all with
--loo 0), each in the export-T folder it has in the full run: subjects 2 and 4 of six are
export-4 and export-2, so a partial run compares file by file with a full one. With
--eval-args=--per-atlas (atlas_eval scores every atlas alone) it adds the mean, best and worst
of the fused atlases per label: how far the fusion is from the best single atlas.
"""
import argparse
import glob
import os
import re
import shutil
import subprocess
import sys
import time

import numpy as np

LABELS = {8: "liver", 9: "spleen", 10: "kidney_left", 11: "kidney_right", 14: "myocardium"}
MODS = ["ct", "cbct", "mr-t1", "mr-t2", "pet"]

ELASTIX_AFFINE = """(FixedInternalImagePixelType "float")(MovingInternalImagePixelType "float")
(Registration "MultiResolutionRegistration")(Metric "AdvancedMattesMutualInformation")
(Transform "AffineTransform")(Optimizer "AdaptiveStochasticGradientDescent")
(NumberOfResolutions 3)(MaximumNumberOfIterations 200)(NumberOfHistogramBins 32)
(ImageSampler "RandomCoordinate")(NumberOfSpatialSamples 2048)(NewSamplesEveryIteration "true")
(AutomaticTransformInitialization "true")(AutomaticTransformInitializationMethod "CenterOfGravity")
(AutomaticScalesEstimation "true")(Interpolator "BSplineInterpolator")
(ResampleInterpolator "FinalBSplineInterpolator")(FinalBSplineInterpolationOrder 0)
(Resampler "DefaultResampler")(FixedImagePyramid "FixedSmoothingImagePyramid")
(MovingImagePyramid "MovingSmoothingImagePyramid")(DefaultPixelValue 0)(WriteResultImage "false")
(HowToCombineTransforms "Compose")(ResultImageFormat "mhd")
"""
ELASTIX_BSPLINE = ELASTIX_AFFINE.replace('(Transform "AffineTransform")', '(Transform "BSplineTransform")') \
    .replace("(AutomaticTransformInitialization \"true\")", "") \
    .replace('(Registration "MultiResolutionRegistration")', '(Registration "MultiMetricMultiResolutionRegistration")') \
    .replace('(Metric "AdvancedMattesMutualInformation")',
             '(Metric "AdvancedMattesMutualInformation" "TransformBendingEnergyPenalty")(Metric0Weight 1.0)(Metric1Weight 0.05)') \
    + "(FinalGridSpacingInPhysicalUnits 16)(GridSpacingSchedule 4 2 1)\n"

PLASTIMATCH_CMD = """[GLOBAL]
fixed={fixed}
moving={moving}
vf_out={vf}
[STAGE]
xform=affine
optim=rsg
impl=itk
metric=mi
max_its=100
res=4 4 4
[STAGE]
xform=bspline
impl=plastimatch
metric=mi
max_its=50
grid_spac=20 20 20
res=2 2 2
regularization_lambda=0.005
"""


def read_mhd(path):
    hdr = {}
    for line in open(path):
        k, _, v = line.partition("=")
        hdr[k.strip()] = v.strip()
    dims = [int(x) for x in hdr["DimSize"].split()]
    dt = np.uint8 if hdr["ElementType"] == "MET_UCHAR" else (np.float32 if hdr["ElementType"] == "MET_FLOAT" else np.int16)
    if hdr["ElementType"] == "MET_SHORT":
        dt = np.int16
    raw = os.path.join(os.path.dirname(path), hdr["ElementDataFile"])
    return np.fromfile(raw, dtype=dt).reshape(dims[::-1])


def dice(a, b, l):
    x, y = a == l, b == l
    s = x.sum() + y.sum()
    return 2.0 * (x & y).sum() / s if s else 1.0


def run_ours(build, target, atlases, out, extra):
    """atlas_eval on one target; its output goes to OUT/atlas_eval.txt as it runs (a run cut
    short leaves the modalities it finished), and is returned."""
    cmd = [os.path.join(build, "tests/atlas/atlas_eval"), "--label-table",
           os.path.join(os.path.dirname(__file__), "../../etc/labels.tsv"), "--export", out] + extra + \
          [target] + atlases
    t = time.time()
    txt = os.path.join(out, "atlas_eval.txt")
    with open(txt + ".part", "w") as f:
        r = subprocess.run(cmd, stdout=f, stderr=subprocess.PIPE, text=True)
    if r.returncode:
        sys.exit("atlas_eval failed: " + r.stderr)
    os.replace(txt + ".part", txt)
    return open(txt).read(), time.time() - t


SUMMARY_METHODS = ("single", "mv", "local", "jlf")


def parse_ours(text, per_atlas=None):
    """atlas_eval's table -> ({(mod, method): {label: dice}}, {mod: seconds per registration},
    {mod: atlas indices kept by --distinct}). With atlas_eval --per-atlas, per_atlas (a dict)
    gets {mod: {atlas index: [Dice per label]}}."""
    dices, secs, kept = {}, {}, {}
    for line in text.splitlines():
        m = re.match(r"# (\S+) atlas (\d+) dice ([\d. ]+)$", line)
        if m and per_atlas is not None:
            per_atlas.setdefault(m.group(1), {})[int(m.group(2))] = [float(x) for x in m.group(3).split()]
            continue
        m = re.match(r"# (\S+): target prep [\d.]+ s, ([\d.]+) s per registration", line)
        if m:
            secs[m.group(1)] = float(m.group(2))
            continue
        m = re.match(r"# (\S+): kept ([\d ]+)$", line)
        if m:
            kept[m.group(1)] = [int(x) for x in m.group(2).split()]
            continue
        p = line.split()
        if line.startswith("#") or len(p) < 4 or p[2] not in list(LABELS.values()) + ["mean"]:
            continue
        try:
            dices.setdefault((p[0], p[1]), {})[p[2]] = float(p[3])
        except ValueError:
            pass
    return dices, secs, kept


def target_indices(loo, subjects, targets):
    """The loo indices T (target subjects[-1 - T]) to run: the last `loo` subjects (every one for
    loo 0), of those only the subject numbers in `targets` when given."""
    n = len(subjects) if loo <= 0 else min(loo, len(subjects))
    if not targets:
        return list(range(n))
    want = {int(x) for x in targets.split(",")}
    return [t for t in range(n) if int(os.path.basename(subjects[-1 - t]).split("-")[-1]) in want]


def summarize(out, loo, subjects, mods, methods=SUMMARY_METHODS, targets=None):
    """Mean and minimum Dice over the targets whose atlas_eval.txt holds every modality. With a
    both-phase library (atlas_eval --distinct, plain atlases first) it also says how many of the
    atlases fused were the contrast phase."""
    runs = []
    for t in (target_indices(loo, subjects, targets) if targets else range(loo)):
        f = os.path.join(out, f"export-{t}", "atlas_eval.txt")
        name = os.path.basename(subjects[-1 - t]) if t < len(subjects) else f"target {t}"
        if not os.path.exists(f):
            print(f"# {name}: no complete output ({f})")
            continue
        pa = {}
        d, s, k = parse_ours(open(f).read(), pa)
        if any((m, "jlf") not in d for m in mods):
            print(f"# {name}: incomplete, left out of the summary")
            continue
        runs.append((name, d, s, k, pa))
    if not runs:
        return
    names = ["liver", "spleen", "kidney_left", "kidney_right", "myocardium", "mean"]
    print(f"\n## summary: {len(runs)} targets ({', '.join(r[0] for r in runs)}); Dice mean / min over targets")
    print("| target | method | " + " | ".join(n.replace("kidney_left", "kidney L").replace("kidney_right", "kidney R")
                                            for n in names) + " | s/registration |")
    print("|---|---|" + "---|" * (len(names) + 1))
    for mod in mods:
        for meth in methods:
            cells = []
            for n in names:
                v = [r[1][(mod, meth)][n] for r in runs if n in r[1].get((mod, meth), {})]
                cells.append(f"{np.mean(v):.3f} / {np.min(v):.3f}" if v else "")
            sec = [r[2][mod] for r in runs if mod in r[2]] if meth == methods[0] else []
            print(f"| {mod} | {meth} | " + " | ".join(cells) + " | " + (f"{np.mean(sec):.1f}" if sec else "") + " |")
    print(f"\n## per target: mean Dice of the five organs ({' / '.join(methods)})")
    print("| target | " + " | ".join(mods) + " |")
    print("|---|" + "---|" * len(mods))
    for name, d, _, _, _ in runs:
        print(f"| {name} | " + " | ".join(" / ".join(f"{d[(m, k)]['mean']:.3f}" if (m, k) in d else "-"
                                                    for k in methods) for m in mods) + " |")
    if all(m in r[4] for r in runs for m in mods):
        # atlas_eval --per-atlas: each fused atlas (those kept by --distinct) scored alone; "best"
        # picks the best atlas per organ and target with the ground truth (an oracle, not a method)
        print("\n## single atlases (atlas_eval --per-atlas): Dice mean over targets of the atlases' mean, best and worst")
        print("| target | atlases | " + " | ".join(n.replace("kidney_left", "kidney L").replace("kidney_right", "kidney R")
                                             for n in names) + " |")
        print("|---|---|" + "---|" * len(names))
        for mod in mods:
            stats = {"mean": [], "best": [], "worst": []}
            for r in runs:
                idx = r[3].get(mod, sorted(r[4][mod]))
                a = np.array([r[4][mod][i] for i in idx])
                stats["mean"].append(a.mean(0)), stats["best"].append(a.max(0)), stats["worst"].append(a.min(0))
            for key, v in stats.items():
                m = np.mean(v, 0)
                print(f"| {mod} | {key} | " + " | ".join(f"{x:.3f}" for x in m) + f" | {m.mean():.3f} |")
    if any(r[3] for r in runs):
        n = len(subjects) - 1   # atlases per phase: the plain renderings come first
        print("\n## atlases fused that are the contrast phase (of those kept by atlas_distinct)")
        print("| target | " + " | ".join(mods) + " |")
        print("|---|" + "---|" * len(mods))
        for name, _, _, k, _ in runs:
            print(f"| {name} | " + " | ".join(f"{sum(a >= n for a in k[m])}/{len(k[m])}" if m in k else "-"
                                             for m in mods) + " |")


def run_elastix(exp, mod, na, work):
    labs, secs = [], []
    for a in range(na):
        d = os.path.abspath(os.path.join(work, f"elx_{mod}_{a}"))
        os.makedirs(d, exist_ok=True)
        # elastix reads one parameter per line
        open(os.path.join(d, "affine.txt"), "w").write(ELASTIX_AFFINE.replace(")(", ")\n("))
        open(os.path.join(d, "bspline.txt"), "w").write(ELASTIX_BSPLINE.replace(")(", ")\n("))
        t = time.time()
        r = subprocess.run(["elastix", "-f", f"{exp}/target_{mod}_img.mhd", "-m", f"{exp}/atlas{a}_img.mhd",
                            "-p", f"{d}/affine.txt", "-p", f"{d}/bspline.txt", "-out", d, "-threads", "2"],
                           capture_output=True, text=True)
        secs.append(time.time() - t)
        if r.returncode:
            return None, secs
        tp = open(f"{d}/TransformParameters.1.txt").read()
        tp = re.sub(r"\(FinalBSplineInterpolationOrder \d\)", "(FinalBSplineInterpolationOrder 0)", tp)
        tp = re.sub(r'\(ResultImagePixelType "[a-z]+"\)', '(ResultImagePixelType "unsigned char")', tp)
        open(f"{d}/tp_nn.txt", "w").write(tp)   # its initial transform path is absolute (d is)
        subprocess.run(["transformix", "-in", f"{exp}/atlas{a}_lab.mhd", "-tp", f"{d}/tp_nn.txt", "-out", d],
                       capture_output=True, text=True)
        res = glob.glob(f"{d}/result.mhd")
        if not res:
            return None, secs
        labs.append(read_mhd(res[0]).astype(np.int32))
    return labs, secs


def run_plastimatch(exp, mod, na, work):
    labs, secs = [], []
    for a in range(na):
        d = os.path.join(work, f"plm_{mod}_{a}")
        os.makedirs(d, exist_ok=True)
        cmd = PLASTIMATCH_CMD.format(fixed=f"{exp}/target_{mod}_img.mhd", moving=f"{exp}/atlas{a}_img.mhd",
                                     vf=f"{d}/vf.mha")
        open(f"{d}/cmd.txt", "w").write(cmd)
        t = time.time()
        r = subprocess.run(["plastimatch", "register", f"{d}/cmd.txt"], capture_output=True, text=True)
        secs.append(time.time() - t)
        if r.returncode:
            return None, secs
        subprocess.run(["plastimatch", "convert", "--input", f"{exp}/atlas{a}_lab.mhd", "--xf", f"{d}/vf.mha",
                        "--fixed", f"{exp}/target_{mod}_img.mhd", "--interpolation", "nn",
                        "--output-img", f"{d}/lab.mha", "--output-type", "uchar"], capture_output=True, text=True)
        if not os.path.exists(f"{d}/lab.mha"):
            return None, secs
        subprocess.run(["plastimatch", "convert", "--input", f"{d}/lab.mha", "--output-img", f"{d}/lab.mhd"],
                       capture_output=True, text=True)
        labs.append(read_mhd(f"{d}/lab.mhd").astype(np.int32))
    return labs, secs


PLASTIMATCH_MABS_CFG = """[TRAINING]
training_dir={train}
[REGISTRATION]
registration_config={reg}
[STRUCTURES]
{structures}
[LABELING]
input={target}
output={out}
"""


def mhd_to_nrrd(src, dst, uchar=False):
    subprocess.run(["plastimatch", "convert", "--input", src, "--output-img", dst] +
                   (["--output-type", "uchar"] if uchar else []), check=True, capture_output=True)


def run_plastimatch_mabs(exp, mod, na, work):
    """plastimatch's own multi-atlas segmentation (`plastimatch mabs --segment`): each atlas as the
    `convert` stage would leave it (training_dir/convert/ATLAS/img.nrrd + structures/NAME.nrrd,
    written here from the MetaImage export since mabs --convert reads DICOM RT structure sets,
    not SEG), the same affine + B-spline MI stages as run_plastimatch, its default Gaussian
    weighted voting (rho 1, sigma 30, minsim 0.3, threshold 0.4). Returns one label map."""
    d = os.path.abspath(os.path.join(work, f"mabs_{mod}"))
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(os.path.join(d, "reg"))
    os.makedirs(os.path.join(d, "target"))
    for a in range(na):
        ad = os.path.join(d, "train", "convert", f"atlas{a}")
        os.makedirs(os.path.join(ad, "structures"))
        mhd_to_nrrd(f"{exp}/atlas{a}_img.mhd", f"{ad}/img.nrrd")
        lab = read_mhd(f"{exp}/atlas{a}_lab.mhd")
        hdr = open(f"{exp}/atlas{a}_lab.mhd").read()
        for l, name in LABELS.items():
            (lab == l).astype(np.uint8).tofile(f"{ad}/structures/{name}.raw")
            open(f"{ad}/structures/{name}.mhd", "w").write(
                re.sub(r"ElementDataFile = .*", f"ElementDataFile = {name}.raw", hdr))
            mhd_to_nrrd(f"{ad}/structures/{name}.mhd", f"{ad}/structures/{name}.nrrd", uchar=True)
            os.remove(f"{ad}/structures/{name}.mhd")
            os.remove(f"{ad}/structures/{name}.raw")
    # the same stages as run_plastimatch, without [GLOBAL]: mabs supplies the images itself
    stages = "[STAGE]" + PLASTIMATCH_CMD.split("[STAGE]", 1)[1]
    open(os.path.join(d, "reg", "reg_bspline.txt"), "w").write(stages)
    mhd_to_nrrd(f"{exp}/target_{mod}_img.mhd", f"{d}/target/img.nrrd")
    cfg = os.path.join(d, "mabs.cfg")
    open(cfg, "w").write(PLASTIMATCH_MABS_CFG.format(train=f"{d}/train", reg=f"{d}/reg", target=f"{d}/target",
                                                     out=f"{d}/out", structures="\n".join(LABELS.values())))
    t = time.time()
    r = subprocess.run(["plastimatch", "mabs", "--segment", f"{d}/target", "--output", f"{d}/out", cfg],
                       capture_output=True, text=True)
    secs = time.time() - t
    if r.returncode:
        return None, secs
    gt = read_mhd(f"{exp}/target_{mod}_lab.mhd")
    seg = np.zeros(gt.shape, np.int32)
    for l, name in LABELS.items():
        f = glob.glob(f"{d}/out/segmentations/**/{name}_thresh_*.nrrd", recursive=True)
        if not f:
            return None, secs
        subprocess.run(["plastimatch", "convert", "--input", f[0], "--output-img", f"{d}/{name}.mhd",
                        "--output-type", "uchar"], check=True, capture_output=True)
        m = read_mhd(f"{d}/{name}.mhd")
        if m.shape != gt.shape:
            return None, secs
        seg[(m > 0) & (seg == 0)] = l
    return seg, secs


def majority(labs):
    stack = np.stack(labs)
    votes = np.stack([(stack == l).sum(0) for l in range(256)])
    return votes.argmax(0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", required=True)
    ap.add_argument("--subjects", type=int, default=4)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--out", default="/tmp/segnode-atlas-eval")
    ap.add_argument("--loo", type=int, default=1, help="how many subjects to leave out in turn")
    ap.add_argument("--no-baselines", action="store_true")
    ap.add_argument("--skip-ours", action="store_true", help="reuse the export of an earlier run")
    ap.add_argument("--baseline-atlases", type=int, default=1,
                    help="atlases registered by elastix / plastimatch per target (they take minutes each)")
    ap.add_argument("--modalities", default=",".join(MODS))
    ap.add_argument("--tools", default="elastix,plastimatch",
                    help="pairwise baselines to run (comma list; empty for none but mabs)")
    ap.add_argument("--mabs-atlases", type=int, default=0,
                    help="also run `plastimatch mabs` (its multi-atlas segmentation) with this many atlases")
    ap.add_argument("--atlas-phase", choices=("plain", "contrast", "both"), default="plain")
    ap.add_argument("--summary-only", action="store_true",
                    help="only summarize the atlas_eval outputs an earlier run left in OUT")
    ap.add_argument("--summary-methods", default=",".join(SUMMARY_METHODS),
                    help="atlas_eval methods in the summary (with --distinct also mv-all, local-all, jlf-all)")
    ap.add_argument("--eval-args", default="", help="extra atlas_eval options, e.g. \"--work-mm 3\"")
    ap.add_argument("--targets", default="",
                    help="only these subject numbers as targets (comma list; export-T numbering as the full run)")
    args = ap.parse_args()
    ph = os.path.join(args.out, "phantoms")
    if not args.summary_only and not os.path.exists(os.path.join(ph, f"subject-{args.subjects:03d}", "seg", "pet.dcm")):
        shutil.rmtree(ph, ignore_errors=True)
        subprocess.run([os.path.join(args.build, "tools/phantom/segnode-phantom"), "--out", ph, "--subjects",
                        str(args.subjects), "--modalities", ",".join(MODS), "--size", "small", "--seed",
                        str(args.seed)], check=True, capture_output=True)
    subjects = sorted(glob.glob(os.path.join(ph, "subject-*")))
    mods = args.modalities.split(",")
    if args.summary_only:
        summarize(args.out, args.loo, subjects, mods, args.summary_methods.split(","), args.targets)
        return
    atlas_root = ph
    if args.atlas_phase != "plain":
        atlas_root = os.path.join(args.out, "phantoms-contrast")
        if not os.path.exists(os.path.join(atlas_root, f"subject-{args.subjects:03d}", "seg", "ct.dcm")):
            shutil.rmtree(atlas_root, ignore_errors=True)
            subprocess.run([os.path.join(args.build, "tools/phantom/segnode-phantom"), "--out", atlas_root,
                            "--subjects", str(args.subjects), "--modalities", "ct", "--contrast", "--size", "small",
                            "--seed", str(args.seed)], check=True, capture_output=True)
    for t in target_indices(args.loo, subjects, args.targets):
        target = subjects[-1 - t]
        atlases = [os.path.join(atlas_root, os.path.basename(s)) for s in subjects if s != target]
        extra = args.eval_args.split() + ["--modalities", args.modalities]
        if args.atlas_phase == "both":   # plain first, then contrast; atlas_eval fuses one per subject
            atlases = [s for s in subjects if s != target] + atlases
            extra.append("--distinct")
        exp = os.path.join(args.out, f"export-{t}")
        os.makedirs(exp, exist_ok=True)
        print(f"## target {os.path.basename(target)}, atlases {', '.join(os.path.basename(a) for a in atlases)}"
              f" (atlas CT: {args.atlas_phase})")
        sys.stdout.flush()
        if not args.skip_ours:
            table, secs = run_ours(args.build, target, atlases, exp, extra)
            print(table)
            print(f"# {os.path.basename(target)}: {secs:.0f} s")
            sys.stdout.flush()
        if args.no_baselines:
            continue
        for tool, fn in (("elastix", run_elastix), ("plastimatch", run_plastimatch)):
            if tool not in args.tools.split(","):
                continue
            if not shutil.which(tool):
                print(f"# {tool}: not installed")
                continue
            for mod in args.modalities.split(","):
                labs, s = fn(exp, mod, min(args.baseline_atlases, len(atlases)), exp)
                if labs is None:
                    print(f"{mod:6s} {tool:11s} failed ({np.mean(s):.1f} s)")
                    continue
                gt = read_mhd(f"{exp}/target_{mod}_lab.mhd")
                for name, seg in (("single", labs[0]),) + ((("mv", majority(labs)),) if len(labs) > 1 else ()):
                    ds = [dice(seg, gt, l) for l in LABELS]
                    print(f"{mod:6s} {tool + '-' + name:18s} " +
                          " ".join(f"{LABELS[l]}={d:.3f}" for l, d in zip(LABELS, ds)) +
                          f" mean={np.mean(ds):.3f} {np.mean(s):.1f} s/registration")
                sys.stdout.flush()
        if args.mabs_atlases > 0 and shutil.which("plastimatch"):
            for mod in args.modalities.split(","):
                k = min(args.mabs_atlases, len(atlases))
                seg, s = run_plastimatch_mabs(exp, mod, k, exp)
                if seg is None:
                    print(f"{mod:6s} plastimatch-mabs failed ({s:.1f} s)")
                    continue
                gt = read_mhd(f"{exp}/target_{mod}_lab.mhd")
                ds = [dice(seg, gt, l) for l in LABELS]
                print(f"{mod:6s} {'plastimatch-mabs' + str(k):18s} " +
                      " ".join(f"{LABELS[l]}={d:.3f}" for l, d in zip(LABELS, ds)) +
                      f" mean={np.mean(ds):.3f} {s:.1f} s for {k} atlases")
                sys.stdout.flush()
    if not args.skip_ours and (args.loo > 1 or args.targets):
        summarize(args.out, min(args.loo, len(subjects)) if args.loo > 0 else len(subjects), subjects, mods,
                  args.summary_methods.split(","), args.targets)


if __name__ == "__main__":
    main()
