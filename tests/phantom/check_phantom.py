#!/usr/bin/python3
"""tests/phantom/check_phantom.py — independent checks of segnode-phantom output with pydicom and
numpy only (geometry from DICOM tags, never from segnode code).

usage: check_phantom.py generate PHANTOM_EXE WORKDIR     run the generator (seed 11 twice, seed 12)
       check_phantom.py determinism WORKDIR             same seed: same pixel bytes; other seed: not
       check_phantom.py geometry WORKDIR                series and SEG grids == phantom.json
       check_phantom.py dice WORKDIR LABELS             labels agree across modalities (Dice)
       check_phantom.py dciodvfy WORKDIR                dciodvfy: no errors on CT/CBCT/MR/PET/SEG
       check_phantom.py stats WORKDIR LABELS            per-tissue statistics and SUV tags
       check_phantom.py segpack TEST_EXE LABELS WORKDIR 38x23x6 SEG packs exactly"""
import glob
import json
import os
import subprocess
import sys
import time

import numpy as np
import pydicom

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "tools", "phantom"))
import phantomio  # noqa: E402

MODS = ["ct", "cbct", "mr-t1", "mr-t2", "pet"]
failures = []


def check(cond, msg):
    print(("ok    " if cond else "FAIL  ") + msg)
    if not cond:
        failures.append(msg)


def subj(work, run="a"):
    return os.path.join(work, run, "subject-001")


def cmd_generate(exe, work):
    for run, seed in (("a", 11), ("a2", 11), ("b", 12)):
        out = os.path.join(work, run)
        subprocess.run(["rm", "-rf", out], check=True)
        t0 = time.time()
        r = subprocess.run([exe, "--out", out, "--seed", str(seed), "--subjects", "1", "--size", "small",
                            "--threads", "2"], capture_output=True, text=True)
        dt = time.time() - t0
        sys.stdout.write(r.stdout)
        sys.stderr.write(r.stderr)
        check(r.returncode == 0, "generator exit status 0 (seed %d)" % seed)
        check(r.stderr.strip() == "", "generator printed nothing on stderr")
        print("timing: small subject, 5 series + 5 SEG: %.2f s wall" % dt)
    # variants of the same subject: contrast phase (CT, and MR T1 which it leaves alone), full size
    for run, extra in (("c", ["--contrast", "--modalities", "ct,mr-t1"]), ("f", ["--size", "full", "--modalities", "mr-t1"])):
        out = os.path.join(work, run)
        subprocess.run(["rm", "-rf", out], check=True)
        r = subprocess.run([exe, "--out", out, "--seed", "11", "--subjects", "1", "--threads", "2", "--quiet"] + extra,
                           capture_output=True, text=True)
        check(r.returncode == 0, "generator exit status 0 (%s)" % " ".join(extra))
    bad = subprocess.run([exe, "--out", os.path.join(work, "x"), "--modalities", "ct,xray"],
                         capture_output=True, text=True)
    check(bad.returncode == 2, "unknown modality is refused with status 2")


def pixel_bytes(folder):
    out = []
    for f in sorted(glob.glob(os.path.join(folder, "*.dcm"))):
        out.append(pydicom.dcmread(f).PixelData)
    return out


def cmd_determinism(work):
    for m in MODS:
        a = pixel_bytes(os.path.join(subj(work, "a"), m))
        a2 = pixel_bytes(os.path.join(subj(work, "a2"), m))
        b = pixel_bytes(os.path.join(subj(work, "b"), m))
        check(len(a) > 0 and a == a2, "%s: same seed gives identical pixel data (%d instances)" % (m, len(a)))
        check(a != b, "%s: another seed gives different pixel data" % m)
        sa = pydicom.dcmread(os.path.join(subj(work, "a"), "seg", m + ".dcm")).PixelData
        sa2 = pydicom.dcmread(os.path.join(subj(work, "a2"), "seg", m + ".dcm")).PixelData
        check(sa == sa2, "%s: same seed gives identical SEG pixel data" % m)
    fa = sorted(glob.glob(os.path.join(subj(work, "a"), "*", "*.dcm")))
    same = all(open(f, "rb").read() == open(f.replace(os.sep + "a" + os.sep, os.sep + "a2" + os.sep), "rb").read()
               for f in fa)
    check(same, "same seed gives byte-identical files (%d files)" % len(fa))
    # another rendering of the subject is another series: no UID in common with the default one
    # (a node would replace one with the other), while the study stays the subject's
    def uids(run, m):
        dss = [pydicom.dcmread(f, stop_before_pixels=True)
               for f in sorted(glob.glob(os.path.join(subj(work, run), m, "*.dcm")))]
        seg = pydicom.dcmread(os.path.join(subj(work, run), "seg", m + ".dcm"), stop_before_pixels=True)
        return ({d.SeriesInstanceUID for d in dss}, {d.SOPInstanceUID for d in dss}, {d.StudyInstanceUID for d in dss},
                (seg.SeriesInstanceUID, seg.SOPInstanceUID))
    a_ct, c_ct, a_mr, c_mr, f_mr = uids("a", "ct"), uids("c", "ct"), uids("a", "mr-t1"), uids("c", "mr-t1"), uids("f", "mr-t1")
    check(not (a_ct[0] & c_ct[0]) and not (a_ct[1] & c_ct[1]) and a_ct[3][0] != c_ct[3][0] and a_ct[3][1] != c_ct[3][1],
          "contrast-phase CT: its own series, instance and SEG UIDs")
    check(a_ct[2] == c_ct[2], "contrast-phase CT: the same study")
    check(a_mr[:2] == c_mr[:2] and a_mr[3] == c_mr[3], "MR T1, which --contrast leaves alone: the same UIDs")
    check(not (a_mr[0] & f_mr[0]) and not (a_mr[1] & f_mr[1]) and a_mr[3][0] != f_mr[3][0],
          "full-size MR T1: its own series, instance and SEG UIDs")


def close(a, b, tol=1e-3):
    return np.allclose(np.asarray(a, float), np.asarray(b, float), atol=tol)


def cmd_geometry(work):
    s = subj(work)
    meta = json.load(open(os.path.join(s, "phantom.json")))
    uids = {"study": set(), "for": set(), "patient": set()}
    for sr in meta["series"]:
        m = sr["modality"]
        vol, g, dss = phantomio.read_series(os.path.join(s, sr["dir"]))
        check(g.size == tuple(sr["size"]), "%s: size %s == intended %s" % (m, g.size, tuple(sr["size"])))
        check(close(g.spacing, sr["spacing"]), "%s: spacing %s == intended" % (m, np.round(g.spacing, 4).tolist()))
        check(close(g.origin, sr["origin"]), "%s: origin == intended" % m)
        check(close(g.dirs[:, 0], sr["row_dir"], 1e-6) and close(g.dirs[:, 1], sr["col_dir"], 1e-6)
              and close(g.dirs[:, 2], sr["slice_dir"], 1e-6), "%s: direction cosines == intended" % m)
        check(all(d.SeriesInstanceUID == sr["series_uid"] for d in dss), "%s: one series UID" % m)
        check(str(dss[0].SeriesDescription).startswith("phantom "), "%s: Series Description '%s'" % (m, dss[0].SeriesDescription))
        check(len({d.SOPInstanceUID for d in dss}) == len(dss), "%s: SOP Instance UIDs unique" % m)
        expect_cls = {"pet": "1.2.840.10008.5.1.4.1.1.128", "mr-t1": "1.2.840.10008.5.1.4.1.1.4",
                      "mr-t2": "1.2.840.10008.5.1.4.1.1.4"}.get(m, "1.2.840.10008.5.1.4.1.1.2")
        check(dss[0].SOPClassUID == expect_cls, "%s: SOP Class %s" % (m, expect_cls))
        for d in dss:
            uids["study"].add(d.StudyInstanceUID)
            uids["for"].add(d.FrameOfReferenceUID)
            uids["patient"].add(d.PatientID)
        lab, gl = phantomio.read_seg(os.path.join(s, sr["seg"]), phantomio.load_labels_table(
            os.path.join(HERE, "..", "..", "etc", "labels.tsv")))
        check(gl.size == g.size and close(gl.origin, g.origin) and close(gl.spacing, g.spacing)
              and close(gl.dirs, g.dirs, 1e-6), "%s: SEG grid == series grid" % m)
        seg = pydicom.dcmread(os.path.join(s, sr["seg"]))
        check(seg.StudyInstanceUID in uids["study"] and seg.FrameOfReferenceUID in uids["for"],
              "%s: SEG in the same study and frame of reference" % m)
        check(seg.ReferencedSeriesSequence[0].SeriesInstanceUID == sr["series_uid"], "%s: SEG references its series" % m)
        present = sorted(int(x) for x in np.unique(lab) if x)
        check(present == sr["labels_present"], "%s: SEG labels == labels present (%d)" % (m, len(present)))
        if m.startswith("mr"):
            check(g.spacing[2] > 1.5 * g.spacing[0], "%s: anisotropic voxels (thick slices)" % m)
            check(abs(abs(g.dirs[2, 2]) - 1) > 1e-3, "%s: oblique slices" % m)
    check(len(uids["study"]) == 1 and len(uids["for"]) == 1 and len(uids["patient"]) == 1,
          "one patient, one study, one frame of reference for all series of the subject")


def dice(a, b, v):
    x, y = a == v, b == v
    s = x.sum() + y.sum()
    return 2.0 * np.logical_and(x, y).sum() / s if s else 1.0


def cmd_dice(work, labels):
    s = subj(work)
    table = phantomio.load_labels_table(labels)
    names = {v["number"]: k for k, v in table.items()}
    segs = {m: phantomio.read_seg(os.path.join(s, "seg", m + ".dcm"), table) for m in MODS}
    vox = {m: float(np.prod(segs[m][1].spacing)) for m in MODS}
    for m in MODS:
        if m == "ct":
            continue
        # resample the finer grid onto the coarser one: NN error then stays below half a fine voxel
        src, dst = ("ct", m) if vox["ct"] <= vox[m] else (m, "ct")
        lab_s, g_s = segs[src]
        lab_d, g_d = segs[dst]
        r = phantomio.resample_linear_labels(lab_s, g_s, g_d)
        inside = r != 255
        a, b = r[inside], lab_d[inside]
        agree = float((a == b).mean())
        check(agree >= 0.95, "%s -> %s: voxel label agreement %.4f >= 0.95" % (src, dst, agree))
        # Dice per structure that the coarse grid resolves: at least half of its voxels are interior
        # (thin shells such as fat, muscle and ribs are reported, not asserted: on 4-8 mm voxels
        # their Dice is bounded by the sampling, not by the geometry)
        for v in sorted(set(np.unique(b)) - {0}):
            mask = (lab_d == v) & inside
            n = int(mask.sum())
            interior = erode(mask).sum() / max(n, 1)
            d = dice(a, b, v)
            if interior >= 0.5:
                check(d >= 0.95, "%s -> %s: Dice %-14s %.4f >= 0.95 (%d voxels, %.0f%% interior)" % (src, dst, names[v], d, n, 100 * interior))
            else:
                print("info  %s -> %s: Dice %-14s %.4f (%d voxels, %.0f%% interior: not resolved)" % (src, dst, names[v], d, n, 100 * interior))
        # negative control: the same comparison with the source shifted by one destination slice
        # must visibly lose agreement, so the check above is sensitive to geometry errors
        liver = [vv["number"] for kk, vv in table.items() if kk == "liver"][0]
        gs = phantomio.Geometry(g_s.size, g_s.spacing, g_s.origin + g_d.spacing[2] * g_d.dirs[:, 2],
                                g_s.dirs[:, 0], g_s.dirs[:, 1], g_s.dirs[:, 2])
        rs = phantomio.resample_linear_labels(lab_s, gs, g_d)
        ins = rs != 255
        d_ok, d_bad = dice(a, b, liver), dice(rs[ins], lab_d[ins], liver)
        check(d_bad < d_ok - 0.02, "%s -> %s: a one-slice geometry error drops liver Dice %.4f -> %.4f" % (src, dst, d_ok, d_bad))


def cmd_dciodvfy(work):
    s = subj(work)
    files = []
    for m in MODS:
        inst = sorted(glob.glob(os.path.join(s, m, "*.dcm")))
        files += [inst[0], inst[len(inst) // 2], inst[-1]]
        files.append(os.path.join(s, "seg", m + ".dcm"))
    for f in files:
        r = subprocess.run(["dciodvfy", f], capture_output=True, text=True)
        out = (r.stdout + r.stderr).splitlines()
        errs = [l for l in out if l.startswith("Error")]
        warns = [l for l in out if l.startswith("Warning")]
        for w in warns:
            print("      warning: " + w)
        for e in errs:
            print("      " + e)
        check(not errs, "dciodvfy %s: %d errors, %d warnings" % (os.path.relpath(f, s), len(errs), len(warns)))


def erode(mask, n=1):
    m = mask.copy()
    for _ in range(n):
        e = m.copy()
        for ax in range(3):
            e[1:] &= m[:-1] if ax == 0 else e[1:]
            e = np.moveaxis(e, 0, 0)
        c = m.copy()
        c[1:, :, :] &= m[:-1, :, :]
        c[:-1, :, :] &= m[1:, :, :]
        c[:, 1:, :] &= m[:, :-1, :]
        c[:, :-1, :] &= m[:, 1:, :]
        c[:, :, 1:] &= m[:, :, :-1]
        c[:, :, :-1] &= m[:, :, 1:]
        m = c
    return m


def tissue(work, m, table, name, n=1, central=False):
    s = subj(work)
    vol, g, dss = phantomio.read_series(os.path.join(s, m))
    lab, _ = phantomio.read_seg(os.path.join(s, "seg", m + ".dcm"), table)
    mask = erode(lab == table[name]["number"], n)
    if central:  # inner 60% of the in-plane field of view
        nx, ny, nz = g.size
        jj, ii = np.meshgrid(np.arange(ny) - (ny - 1) / 2, np.arange(nx) - (nx - 1) / 2, indexing="ij")
        mask &= ((ii ** 2 + jj ** 2) < (0.3 * min(nx, ny)) ** 2)[None, :, :]
    return vol[mask], vol, dss


def local_noise(vals):
    return float(np.std(vals))


def cmd_stats(work, labels):
    table = phantomio.load_labels_table(labels)
    # CT: HU per tissue, noise sigma in the homogeneous liver interior
    ranges = {"liver": (45, 75), "spleen": (35, 65), "muscle": (35, 70), "fat": (-120, -80),
              "lung_left": (-900, -780), "spine": (200, 600), "heart_lv_blood": (25, 60)}
    for name, (lo, hi) in ranges.items():
        v, _, _ = tissue(work, "ct", table, name, 2 if name in ("liver", "lung_left") else 1)
        if v.size < 20:
            print("info  ct %s: too few interior voxels (%d)" % (name, v.size))
            continue
        check(lo <= v.mean() <= hi, "ct %-14s mean %7.1f HU in [%d, %d]" % (name, v.mean(), lo, hi))
    v, _, _ = tissue(work, "ct", table, "liver", 2)
    sd = local_noise(v)
    check(10 <= sd <= 20, "ct liver noise sigma %.1f HU in [10, 20]" % sd)
    vc, _, _ = tissue(work, "cbct", table, "liver", 2)
    check(np.std(vc) > 1.5 * sd, "cbct liver noise %.1f HU > 1.5 x CT (%.1f)" % (np.std(vc), sd))
    vm, _, _ = tissue(work, "cbct", table, "kidney_left", 1, True)
    vf, _, _ = tissue(work, "cbct", table, "liver", 1, True)
    cm, _, _ = tissue(work, "ct", table, "kidney_left", 1)
    cf, _, _ = tissue(work, "ct", table, "liver", 1)
    check(abs(vm.mean() - vf.mean()) < abs(cm.mean() - cf.mean()),
          "cbct liver-kidney contrast %.0f < CT %.0f HU (lower soft-tissue contrast)" % (abs(vm.mean() - vf.mean()), abs(cm.mean() - cf.mean())))
    # MR contrast per weighting
    t1 = {n: tissue(work, "mr-t1", table, n)[0].mean() for n in ("fat", "liver", "muscle", "spleen", "aorta")}
    t2 = {n: tissue(work, "mr-t2", table, n)[0].mean() for n in ("fat", "liver", "spleen", "stomach", "muscle")}
    check(t1["fat"] > t1["liver"] > t1["muscle"], "MR T1: fat %.0f > liver %.0f > muscle %.0f" % (t1["fat"], t1["liver"], t1["muscle"]))
    check(t1["liver"] > t1["spleen"], "MR T1: liver %.0f > spleen %.0f" % (t1["liver"], t1["spleen"]))
    check(t1["aorta"] < 0.5 * t1["muscle"], "MR T1: flowing blood dark (aorta %.0f)" % t1["aorta"])
    check(t2["spleen"] > 1.5 * t2["liver"], "MR T2: spleen %.0f > 1.5 x liver %.0f" % (t2["spleen"], t2["liver"]))
    check(t2["stomach"] > t2["fat"] > t2["muscle"], "MR T2: fluid %.0f > fat %.0f > muscle %.0f" % (t2["stomach"], t2["fat"], t2["muscle"]))
    # PET: SUV from the tags
    vliv, vol, dss = tissue(work, "pet", table, "liver", 1)
    d = dss[0]
    check(d.Units == "BQML" and d.DecayCorrection == "START", "PET Units BQML, Decay Correction START")
    rp = d.RadiopharmaceuticalInformationSequence[0]
    w = float(d.PatientWeight)
    t_inj = rp.RadiopharmaceuticalStartTime
    t_ser = d.SeriesTime

    def sec(t):
        return int(t[0:2]) * 3600 + int(t[2:4]) * 60 + float(t[4:])
    dose = float(rp.RadionuclideTotalDose) * 2 ** (-(sec(t_ser) - sec(t_inj)) / float(rp.RadionuclideHalfLife))
    suv = vol * w * 1000.0 / dose
    suv_liver = float(vliv.mean() * w * 1000.0 / dose)
    check(1.8 <= suv_liver <= 3.0, "PET liver SUVmean %.2f in [1.8, 3.0] from Bq/ml and tags" % suv_liver)
    s = subj(work)
    lab, _ = phantomio.read_seg(os.path.join(s, "seg", "pet.dcm"), table)
    for name, lo in (("myocardium", 4.0), ("kidney_left", 3.0), ("kidney_right", 3.0)):
        m = lab == table[name]["number"]
        mx = float(suv[m].max()) if m.any() else 0.0
        check(mx >= lo, "PET %s SUVmax %.1f >= %.1f" % (name, mx, lo))
    mus = float(suv[erode(lab == table["muscle"]["number"])].mean())
    check(mus < 1.2, "PET muscle SUVmean %.2f < 1.2" % mus)


def cmd_segpack(exe, labels, work):
    os.makedirs(work, exist_ok=True)
    dcm, raw = os.path.join(work, "segpack.dcm"), os.path.join(work, "segpack.raw")
    r = subprocess.run([exe, labels, dcm, raw], capture_output=True, text=True)
    sys.stderr.write(r.stderr)
    check(r.returncode == 0, "seg_pack_test wrote a 38x23x6 SEG")
    if r.returncode:
        return
    want = np.fromfile(raw, np.uint8).reshape(6, 23, 38)
    table = phantomio.load_labels_table(labels)
    got, g = phantomio.read_seg(dcm, table)
    check(got.shape == want.shape, "shape %s" % (got.shape,))
    check(np.array_equal(got, want), "38x23x6 labels round-trip exactly through pydicom (%d labelled voxels)" % (want > 0).sum())
    ds = pydicom.dcmread(dcm)
    nbits = ds.Rows * ds.Columns * int(ds.NumberOfFrames)
    check(len(ds.PixelData) == (nbits + 7) // 8 + ((nbits + 7) // 8) % 2, "Pixel Data length %d for %d bits" % (len(ds.PixelData), nbits))
    r = subprocess.run(["dciodvfy", dcm], capture_output=True, text=True)
    errs = [l for l in (r.stdout + r.stderr).splitlines() if l.startswith("Error")]
    for e in errs:
        print("      " + e)
    check(not errs, "dciodvfy on the 38x23x6 SEG: no errors")


def main():
    if len(sys.argv) < 3:
        print(__doc__)
        return 2
    c = sys.argv[1]
    if c == "generate":
        cmd_generate(sys.argv[2], sys.argv[3])
    elif c == "determinism":
        cmd_determinism(sys.argv[2])
    elif c == "geometry":
        cmd_geometry(sys.argv[2])
    elif c == "dice":
        cmd_dice(sys.argv[2], sys.argv[3])
    elif c == "dciodvfy":
        cmd_dciodvfy(sys.argv[2])
    elif c == "stats":
        cmd_stats(sys.argv[2], sys.argv[3])
    elif c == "segpack":
        cmd_segpack(sys.argv[2], sys.argv[3], sys.argv[4])
    else:
        print(__doc__)
        return 2
    print("%d failure(s)" % len(failures))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
