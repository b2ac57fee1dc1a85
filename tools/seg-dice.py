#!/usr/bin/python3
"""tools/seg-dice.py — Dice per segment between two DICOM SEGs of the same series, read
independently of segnode (pydicom + numpy): every frame is placed by the source instance it
references and its segment is matched by Segmented Property Type code (+ modifier).
usage: tools/seg-dice.py REFERENCE_SEG.dcm TEST_SEG.dcm [LABEL_MEANING...]
Prints one line per segment present in TEST (or the named ones): meaning, Dice, voxels."""
import sys

import numpy as np
import pydicom


def masks(path):
    ds = pydicom.dcmread(path)
    px = ds.pixel_array
    if px.ndim == 2:
        px = px[np.newaxis]
    seg_key = {}
    for s in ds.SegmentSequence:
        t = s.SegmentedPropertyTypeCodeSequence[0]
        mod = ""
        if "SegmentedPropertyTypeModifierCodeSequence" in t:
            mod = t.SegmentedPropertyTypeModifierCodeSequence[0].CodeValue
        seg_key[int(s.SegmentNumber)] = (t.CodeValue, mod, str(t.CodeMeaning))
    out = {}
    for i, fg in enumerate(ds.PerFrameFunctionalGroupsSequence):
        n = int(fg.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        src = fg.DerivationImageSequence[0].SourceImageSequence[0]
        key = (src.ReferencedSOPInstanceUID, int(getattr(src, "ReferencedFrameNumber", 0) or 0))
        d = out.setdefault(seg_key[n], {})
        d[key] = d.get(key, 0) | (px[i] > 0)
    return out


def main():
    ref, test = masks(sys.argv[1]), masks(sys.argv[2])
    wanted = set(sys.argv[3:])
    for key in sorted(test, key=lambda k: k[2]):
        if wanted and key[2] not in wanted and key[2].lower() not in wanted:
            continue
        r, t = ref.get(key, {}), test[key]
        inter = sum(int(np.logical_and(r[f], t[f]).sum()) for f in t if f in r)
        nr = sum(int(m.sum()) for m in r.values())
        nt = sum(int(m.sum()) for m in t.values())
        dice = 2.0 * inter / (nr + nt) if nr + nt else 1.0
        print("%-24s Dice %.3f  (reference %d voxels, segnode %d)" % (key[2], dice, nr, nt))


if __name__ == "__main__":
    main()
