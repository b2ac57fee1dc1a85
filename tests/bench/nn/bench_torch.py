#!/usr/bin/env python3
"""tests/bench/nn/bench_torch.py BUNDLE_DIR [--device cuda] [--volume 200 256 256] [--runs 10]
PyTorch on the same weights as bench_nn (BUNDLE_DIR/state.pt from make_bench_model.py): eager
fp32, eager fp16 (autocast) and torch.compile (when this torch has it), printing the same
figures as bench_nn, one line per case: ms per patch, volumes per minute (sliding window with
nnU-Net's steps, overlap 0.5, Gaussian weights, batch 2), peak GPU memory, and the card's
measured fp16 matrix throughput. Run on the GPU machine beside `bench_nn --backend cuda`."""
import argparse
import math
import os
import sys
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
sys.path.insert(0, os.path.join(ROOT, "tools", "train"))
import nets  # noqa: E402


def steps(size, patch, frac=0.5):
    if size <= patch:
        return [0]
    n = math.ceil((size - patch) / (patch * frac)) + 1
    act = (size - patch) / (n - 1)
    return [round(act * i) for i in range(n)]


def gaussian(p, dev):
    ax = [torch.exp(-((torch.arange(s, dtype=torch.float32) - s // 2) ** 2) / (2 * (s / 8) ** 2))
          for s in p]
    g = ax[0][:, None, None] * ax[1][None, :, None] * ax[2][None, None, :]
    g = g / g.max()
    g[g == 0] = g[g > 0].min()
    return g.to(dev)


def sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize()


def bench(fn, x, runs, dev):
    with torch.no_grad():
        fn(x)
        sync(dev)
        t = time.perf_counter()
        for _ in range(runs):
            fn(x)
        sync(dev)
    return (time.perf_counter() - t) / runs


def sliding(fn, vol, patch, k, dev, batch=2):
    d, h, w = vol.shape
    acc = torch.zeros((k, d, h, w), device=dev)
    ws = torch.zeros((d, h, w), device=dev)
    g = gaussian(patch, dev)
    pos = [(z, y, x) for z in steps(d, patch[0]) for y in steps(h, patch[1])
           for x in steps(w, patch[2])]
    with torch.no_grad():
        for i in range(0, len(pos), batch):
            ps = pos[i:i + batch]
            xb = torch.stack([vol[z:z + patch[0], y:y + patch[1], x:x + patch[2]]
                              for z, y, x in ps])[:, None]
            out = fn(xb).float()
            for j, (z, y, x) in enumerate(ps):
                acc[:, z:z + patch[0], y:y + patch[1], x:x + patch[2]] += out[j] * g
                ws[z:z + patch[0], y:y + patch[1], x:x + patch[2]] += g
    sync(dev)
    return acc / ws


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("bundle")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--volume", type=int, nargs=3, default=[200, 256, 256])
    ap.add_argument("--patch", type=int, nargs=3, default=[128, 128, 128])
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--no-volume", action="store_true")
    a = ap.parse_args()
    dev = torch.device(a.device)
    net = nets.UNet3D(1, 3)
    net.load_state_dict(torch.load(os.path.join(a.bundle, "state.pt"), map_location="cpu"))
    net = net.eval().to(dev)
    x = torch.randn(1, 1, *a.patch, device=dev)
    if dev.type == "cuda":
        n = 8192
        m1 = torch.randn(n, n, device=dev, dtype=torch.half)
        m1 @ m1
        sync(dev)
        t = time.perf_counter()
        for _ in range(10):
            m1 @ m1
        sync(dev)
        print("gemm_fp16_tflops=%.1f device=\"%s\"" % (2 * n ** 3 * 10 / (time.perf_counter() - t) / 1e12,
                                                     torch.cuda.get_device_name()))
    cases = [("eager_fp32", net, False)]
    if dev.type == "cuda":
        cases.append(("eager_fp16", net, True))
    if hasattr(torch, "compile"):
        comp = torch.compile(net)
        cases.append(("compile_fp32", comp, False))
        if dev.type == "cuda":
            cases.append(("compile_fp16", comp, True))
    torch.backends.cudnn.benchmark = True
    vol = torch.randn(*a.volume, device=dev)
    for name, m, half in cases:
        def fn(inp, m=m, half=half):
            if half:
                with torch.autocast(dev.type, dtype=torch.float16):
                    return m(inp)
            return m(inp)
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        t = bench(fn, x, a.runs, dev)
        line = "torch %s ms_per_patch=%.1f" % (name, t * 1e3)
        if not a.no_volume:
            t0 = time.perf_counter()
            sliding(fn, vol, a.patch, 3, dev)
            tv = time.perf_counter() - t0
            line += " volume_seconds=%.2f volumes_per_min=%.2f" % (tv, 60 / tv)
        if dev.type == "cuda":
            line += " peak_mem_mib=%.0f" % (torch.cuda.max_memory_allocated() / 2 ** 20)
        print(line, flush=True)


if __name__ == "__main__":
    main()
