#!/usr/bin/python3
"""tests/train/make_goldens.py — golden logits for test_train_parity: for each bundle named on
the command line (default: every folder of models/), the network is rebuilt in PyTorch from
tools/train/nets.py with the widths recorded in model.json, loaded with model.safetensors, and run
on two 32x32 crops of a small phantom slice of the bundle's modality, prepared as the node
prepares it (data.py). Writes tests/train/data/NAME.io.safetensors with `x` and `logits`.
Run once after (re)training: /usr/bin/python3 tests/train/make_goldens.py PHANTOM [NAME...]"""
import json
import os
import struct
import subprocess
import sys
import tempfile

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tools", "train"))
import accseg  # noqa: E402
import data as D  # noqa: E402
import export  # noqa: E402

MODELS = os.path.join(ROOT, "models")
SERIES = {"MR": "mr-t1", "CBCT": "cbct", "PT": "pet", "CT": "ct"}


def read_safetensors(path):
    raw = open(path, "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    hdr = json.loads(raw[8:8 + n])
    out = {}
    for k, v in hdr.items():
        if k == "__metadata__":
            continue
        a, b = v["data_offsets"]
        out[k] = torch.from_numpy(np.frombuffer(raw[8 + n + a:8 + n + b], np.float32)
                                  .reshape(v["shape"]).copy())
    return out


def torch_model(bundle):
    doc = json.load(open(os.path.join(bundle, "model.json")))
    S = accseg.seg_net(doc["out_channels"], doc["training"]["width"])
    missing, unexpected = S.load_state_dict(read_safetensors(os.path.join(bundle,
                                                                          "model.safetensors")),
                                            strict=False)
    if unexpected or any(not k.endswith("num_batches_tracked") for k in missing):
        sys.exit("%s: weights do not match the network: %s %s" % (bundle, missing, unexpected))
    return S.eval(), doc


def main():
    phantom = sys.argv[1]
    names = sys.argv[2:] or sorted(n for n in os.listdir(MODELS)
                                   if os.path.exists(os.path.join(MODELS, n, "model.json")))
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            S, doc = torch_model(os.path.join(MODELS, name))
            mod = doc["training"].get("target", "ct")
            mod = mod if mod != "ct" else SERIES[doc["modality"] or "CT"]
            work = os.path.join(tmp, name)
            subprocess.run([phantom, "--out", work, "--subjects", "1", "--first", "51", "--seed",
                            "99", "--modalities", mod, "--size", "small", "--quiet"], check=True)
            s = D.load_series(os.path.join(work, "subject-051", mod), doc["target_spacing"][0],
                              False)
            img = s["img"]
            z, h, w = img.shape
            crops = [img[z // 2, h // 2 - 16:h // 2 + 16, w // 2 - 32:w // 2],
                     img[z // 2 + 2, h // 2 - 16:h // 2 + 16, w // 2:w // 2 + 32]]
            x = torch.from_numpy(np.stack(crops)[:, None].astype(np.float32))
            with torch.no_grad():
                y = S(x)
            path = os.path.join(HERE, "data", name + ".io.safetensors")
            export.write_safetensors(path, {"x": x, "logits": y})
            print(path, tuple(x.shape), tuple(y.shape))


if __name__ == "__main__":
    main()
