#!/usr/bin/python3
"""tests/nn/make_goldens.py — golden inputs/outputs for nn/ from PyTorch (CPU, float32).

Writes into tests/nn/data (committed; the tests never need torch):
  ops.json + ops.safetensors   one case per op and configuration: the op and its attributes in
                               model.json's node format, the inputs (graph inputs or params) and
                               PyTorch's output
  unet3d/, duseunet2d/         bundles made by tools/train/export.py, plus io.safetensors with
                               an input `x` and PyTorch's `logits`
Run: /usr/bin/python3 tests/nn/make_goldens.py   (Debian's python3-torch is enough)
"""
import json
import os
import sys

import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tools", "train"))
import export  # noqa: E402
import nets    # noqa: E402

torch.manual_seed(1234)
torch.set_num_threads(1)
DATA = os.path.join(HERE, "data")
cases, tensors = [], {}


def r(*s, scale=1.0):
    return torch.randn(*s) * scale


def case(name, op, inputs, out, attrs=None):
    """inputs: list of (kind, tensor) with kind 'input' or 'param'."""
    ins = []
    for i, (kind, t) in enumerate(inputs):
        key = "%s.in%d" % (name, i)
        tensors[key] = t
        ins.append({"name": key, "kind": kind})
    tensors[name + ".out"] = out.float()
    cases.append({"name": name, "op": op, "attrs": attrs or {}, "inputs": ins})


def conv_case(name, x, w, b, stride, pad, dil, act=None):
    n = x.dim() - 2
    f = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[n]
    y = f(x, w, b, stride=stride, padding=pad, dilation=dil)
    attrs = {"stride": [stride] * n, "padding": [pad] * n, "dilation": [dil] * n}
    if act == "relu":
        y = F.relu(y)
        attrs["act"] = "relu"
    elif act == "leaky_relu":
        y = F.leaky_relu(y, 0.01)
        attrs["act"] = "leaky_relu"
        attrs["negative_slope"] = 0.01
    ins = [("input", x), ("param", w)] + ([("param", b)] if b is not None else [])
    case(name, "conv", ins, y, attrs)


def convt_case(name, x, w, b, stride, pad, opad):
    n = x.dim() - 2
    f = {2: F.conv_transpose2d, 3: F.conv_transpose3d}[n]
    y = f(x, w, b, stride=stride, padding=pad, output_padding=opad)
    ins = [("input", x), ("param", w)] + ([("param", b)] if b is not None else [])
    case(name, "conv_transpose", ins, y, {"stride": [stride] * n, "padding": [pad] * n,
                                          "output_padding": [opad] * n})


def make_ops():
    conv_case("conv2d_s1p1", r(2, 3, 17, 19), r(8, 3, 3, 3), r(8), 1, 1, 1)
    conv_case("conv2d_s2d2", r(1, 5, 20, 18), r(4, 5, 3, 3), None, 2, 0, 2)
    conv_case("conv3d_s1p1", r(1, 4, 9, 10, 11), r(6, 4, 3, 3, 3), r(6), 1, 1, 1)
    conv_case("conv3d_s2p1_relu", r(2, 3, 10, 9, 8), r(5, 3, 3, 3, 3), r(5), 2, 1, 1, "relu")
    conv_case("conv3d_d2p2_leaky", r(1, 2, 11, 10, 9), r(3, 2, 3, 3, 3), r(3), 1, 2, 2,
              "leaky_relu")
    conv_case("conv3d_1x1", r(1, 16, 6, 7, 8), r(3, 16, 1, 1, 1), r(3), 1, 0, 1)
    conv_case("conv3d_wide", r(1, 32, 8, 8, 8), r(32, 32, 3, 3, 3, scale=0.1), r(32), 1, 1, 1)
    convt_case("convt3d_k2s2", r(1, 8, 5, 6, 7), r(8, 4, 2, 2, 2), r(4), 2, 0, 0)
    convt_case("convt3d_k3s2p1o1", r(1, 3, 4, 5, 3), r(3, 2, 3, 3, 3), r(2), 2, 1, 1)
    convt_case("convt2d_k4s2p1", r(2, 4, 7, 6), r(4, 3, 4, 4), None, 2, 1, 0)
    x, w, b = r(3, 16), r(8, 16), r(8)
    case("linear", "linear", [("input", x), ("param", w), ("param", b)], F.linear(x, w, b))

    x = r(2, 6, 5, 6, 7)
    mean, var, g, bb = r(6) * 0.2, torch.rand(6) + 0.5, r(6), r(6)
    case("batch_norm3d", "batch_norm",
         [("input", x), ("param", mean), ("param", var), ("param", g), ("param", bb)],
         F.batch_norm(x, mean, var, g, bb, False, 0.0, 1e-5), {"eps": 1e-5})
    x = r(2, 4, 6, 7, 8) * 3 + 1
    g, bb = r(4), r(4)
    case("instance_norm3d", "instance_norm", [("input", x), ("param", g), ("param", bb)],
         F.instance_norm(x, weight=g, bias=bb, eps=1e-5), {"eps": 1e-5})
    x = r(1, 3, 12, 13) * 2 - 1
    case("instance_norm2d_noaffine", "instance_norm", [("input", x)],
         F.instance_norm(x, eps=1e-5), {"eps": 1e-5})
    x = r(2, 8, 5, 6, 4)
    g, bb = r(8), r(8)
    case("group_norm3d", "group_norm", [("input", x), ("param", g), ("param", bb)],
         F.group_norm(x, 4, g, bb, 1e-5), {"eps": 1e-5, "groups": 4})

    x = r(2, 3, 7, 8, 9)
    case("relu", "relu", [("input", x)], F.relu(x))
    case("leaky_relu", "leaky_relu", [("input", x)], F.leaky_relu(x, 0.2), {"negative_slope": 0.2})
    case("sigmoid", "sigmoid", [("input", x)], torch.sigmoid(x))
    x = r(2, 5, 6, 7, 8) * 3
    case("softmax", "softmax", [("input", x)], F.softmax(x, 1))
    case("argmax", "argmax", [("input", x)], torch.argmax(x, 1, keepdim=True).float())
    case("scale_shift", "scale_shift", [("input", x)], x * 0.5 + 2.0, {"alpha": 0.5, "beta": 2.0})

    a, b = r(2, 4, 5, 6, 7), r(2, 4, 5, 6, 7)
    case("add", "add", [("input", a), ("input", b)], a + b)
    c = r(2, 4, 1, 1, 1)
    case("add_bcast_channel", "add", [("input", a), ("input", c)], a + c)
    s = r(2, 1, 5, 6, 7)
    case("mul_bcast_spatial", "mul", [("input", a), ("input", s)], a * s)
    a2, c2 = r(2, 6, 9, 10), r(2, 6, 1, 1)
    case("mul_bcast_channel2d", "mul", [("input", a2), ("input", c2)], a2 * c2)
    case("mul", "mul", [("input", a), ("input", b)], a * b)
    d = r(2, 3, 5, 6, 7)
    case("concat", "concat", [("input", a), ("input", d)], torch.cat([a, d], 1), {"axis": 1})

    x = r(2, 3, 11, 13)
    case("max_pool2d_k2", "max_pool", [("input", x)], F.max_pool2d(x, 2),
         {"kernel_size": [2, 2], "stride": [2, 2], "padding": [0, 0]})
    x3 = r(1, 2, 9, 10, 11)
    case("max_pool3d_k3s2p1", "max_pool", [("input", x3)], F.max_pool3d(x3, 3, 2, 1),
         {"kernel_size": [3] * 3, "stride": [2] * 3, "padding": [1] * 3})
    case("avg_pool2d_k3s2p1", "avg_pool", [("input", x)], F.avg_pool2d(x, 3, 2, 1),
         {"kernel_size": [3, 3], "stride": [2, 2], "padding": [1, 1], "count_include_pad": 1})
    case("avg_pool2d_nopad_ceil", "avg_pool", [("input", x)],
         F.avg_pool2d(x, 3, 2, 1, ceil_mode=True, count_include_pad=False),
         {"kernel_size": [3, 3], "stride": [2, 2], "padding": [1, 1], "count_include_pad": 0,
          "ceil_mode": 1})
    case("avg_pool3d_k2", "avg_pool", [("input", x3)], F.avg_pool3d(x3, 2),
         {"kernel_size": [2] * 3, "stride": [2] * 3, "padding": [0] * 3})
    case("global_avg_pool3d", "global_avg_pool", [("input", x3)],
         F.adaptive_avg_pool3d(x3, 1))

    x = r(1, 3, 4, 5, 6)
    case("upsample_nearest3d_x2", "upsample_nearest", [("input", x)],
         F.interpolate(x, scale_factor=2, mode="nearest"), {"scale_factor": [2.0] * 3})
    x2 = r(2, 2, 5, 7)
    case("upsample_nearest2d_size", "upsample_nearest", [("input", x2)],
         F.interpolate(x2, size=(8, 10), mode="nearest"), {"size": [8, 10]})
    case("upsample_trilinear_x2", "upsample_linear", [("input", x)],
         F.interpolate(x, scale_factor=2, mode="trilinear", align_corners=False),
         {"scale_factor": [2.0] * 3, "align_corners": 0})
    case("upsample_trilinear_size_ac", "upsample_linear", [("input", x)],
         F.interpolate(x, size=(7, 9, 11), mode="trilinear", align_corners=True),
         {"size": [7, 9, 11], "align_corners": 1})
    case("upsample_bilinear_x2", "upsample_linear", [("input", x2)],
         F.interpolate(x2, scale_factor=2, mode="bilinear", align_corners=False),
         {"scale_factor": [2.0, 2.0], "align_corners": 0})
    case("upsample_bilinear_size", "upsample_linear", [("input", x2)],
         F.interpolate(x2, size=(9, 12), mode="bilinear", align_corners=False),
         {"size": [9, 12], "align_corners": 0})
    x = r(2, 6, 1, 1)
    case("reshape", "reshape", [("input", x)], x.view(2, 6), {"shape": [0, -1]})


def make_bundle(name, model, example, meta):
    out = os.path.join(DATA, name)
    export.export(model, example, out, meta)
    with torch.no_grad():
        logits = model(example)
    export.write_safetensors(os.path.join(out, "io.safetensors"),
                             {"x": example, "logits": logits})
    print("%s: %d params, logits %s" % (name, sum(p.numel() for p in model.parameters()),
                                        tuple(logits.shape)))


def main():
    os.makedirs(DATA, exist_ok=True)
    make_ops()
    export.write_safetensors(os.path.join(DATA, "ops.safetensors"), tensors)
    with open(os.path.join(DATA, "ops.json"), "w") as f:
        json.dump({"cases": cases}, f, indent=1)
    print("ops: %d cases" % len(cases))

    torch.manual_seed(7)
    unet = nets.randomize_norm_stats(nets.UNet3D(1, 3, (8, 16, 32)), 1)
    make_bundle("unet3d", unet, torch.randn(1, 1, 32, 32, 32),
                {"name": "unet3d-test", "modality": "MR", "target_spacing": [1.5, 1.0, 1.0],
                 "normalization": {"type": "zscore", "per_volume": True},
                 "labels": [{"value": 0, "name": "background"},
                            {"value": 1, "name": "liver", "code": "SCT:10200004"},
                            {"value": 2, "name": "spleen", "code": "SCT:78961009"}]})
    torch.manual_seed(8)
    duse = nets.randomize_norm_stats(nets.DuSEUNet2D(1, 3, (8, 16, 32)), 2)
    make_bundle("duseunet2d", duse, torch.randn(1, 1, 64, 64),
                {"name": "duseunet2d-test", "modality": "CBCT", "target_spacing": [1.0, 1.0],
                 "normalization": {"type": "ct", "clip": [-1000, 1000], "mean": 0, "std": 500}})


if __name__ == "__main__":
    main()
