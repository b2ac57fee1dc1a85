#!/usr/bin/python3
"""tests/bench/nn/make_bench_model.py OUT_DIR [--patch 128 128 128] [--classes 3]
Export the benchmark network — a 3-D U-Net of nnU-Net's default width (features 32, 64, 128,
256, 320, 320; six stages; instance norm + leaky ReLU) with seeded random weights — as a segnode
bundle via tools/train/export.py, and save its state_dict (OUT_DIR/state.pt) so bench_torch.py
runs PyTorch on the same weights."""
import argparse
import os
import sys

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
sys.path.insert(0, os.path.join(ROOT, "tools", "train"))
import export  # noqa: E402
import nets    # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--patch", type=int, nargs=3, default=[128, 128, 128])
    ap.add_argument("--classes", type=int, default=3)
    a = ap.parse_args()
    torch.manual_seed(0)
    net = nets.randomize_norm_stats(nets.UNet3D(1, a.classes), 0)
    export.export(net, torch.randn(1, 1, *a.patch), a.out,
                  {"name": "unet3d-nnunet-default", "modality": "MR",
                   "target_spacing": [1.0, 1.0, 1.0]})
    torch.save(net.state_dict(), os.path.join(a.out, "state.pt"))
    print(a.out, sum(p.numel() for p in net.parameters()), "parameters")


if __name__ == "__main__":
    main()
