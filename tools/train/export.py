#!/usr/bin/env python3
"""tools/train/export.py — turn a PyTorch module into a segnode model bundle.

The module is traced with torch.fx (symbolic_trace), shapes are propagated with an example
input, and every node is mapped onto an nn/ op (see nn/nn.h). The bundle is a folder with
model.json (graph + labels, modality, spacing, normalisation, patch size) and model.safetensors
(float32 weights). Batch norms are kept as nodes: the runtime folds them into the preceding
convolution at load. Anything the runtime cannot express is refused with the node named.

Library use:  export(model, example_input, out_dir, meta)
Command line: export.py --module pkg.mod:factory --patch 128 128 128 --out DIR [--state W.pt]

Needs only torch (Debian python3-torch is enough); the safetensors file is written here.
"""
import argparse
import importlib
import json
import operator
import os
import struct
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.fx import symbolic_trace
from torch.fx.passes.shape_prop import ShapeProp


class ExportError(Exception):
    pass


def _tup(v, n):
    if isinstance(v, (list, tuple)):
        return [int(x) for x in v]
    return [int(v)] * n


def write_safetensors(path, tensors):
    """tensors: dict name -> torch.Tensor (float32 written as F32)."""
    header, blobs, off = {}, [], 0
    for name in sorted(tensors):
        t = tensors[name].detach().to(torch.float32).contiguous().cpu()
        b = t.numpy().tobytes()
        header[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)
    os.replace(tmp, path)


class _Exporter:
    def __init__(self, gm):
        self.gm = gm
        self.modules = dict(gm.named_modules())
        self.nodes = []
        self.params = {}
        self.alias = {}        # fx node name -> graph value name
        self.inputs = []

    def name(self, n):
        if isinstance(n, torch.fx.Node):
            return self.alias.get(n.name, n.name)
        raise ExportError("expected a tensor argument, got %r" % (n,))

    def param(self, pname, t):
        if t is None:
            return None
        self.params[pname] = t.detach().float()
        return pname

    def add(self, node, op, inputs, attrs=None):
        shape = list(node.meta["tensor_meta"].shape)
        self.nodes.append({"name": node.name, "op": op, "inputs": inputs,
                           "attrs": attrs or {}, "shape": shape})

    @staticmethod
    def shape_of(n):
        return list(n.meta["tensor_meta"].shape)

    def module(self, node, m):
        x = self.name(node.args[0])
        p = node.target
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            if m.groups != 1:
                raise ExportError("%s: grouped convolutions are not supported" % p)
            if m.padding_mode != "zeros" or isinstance(m.padding, str):
                raise ExportError("%s: only explicit zero padding is supported" % p)
            n = m.weight.dim() - 2
            ins = [x, self.param(p + ".weight", m.weight)]
            if m.bias is not None:
                ins.append(self.param(p + ".bias", m.bias))
            self.add(node, "conv", ins, {"stride": _tup(m.stride, n), "padding": _tup(m.padding, n),
                                         "dilation": _tup(m.dilation, n)})
        elif isinstance(m, (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)):
            if m.groups != 1:
                raise ExportError("%s: grouped convolutions are not supported" % p)
            n = m.weight.dim() - 2
            ins = [x, self.param(p + ".weight", m.weight)]
            if m.bias is not None:
                ins.append(self.param(p + ".bias", m.bias))
            self.add(node, "conv_transpose", ins,
                     {"stride": _tup(m.stride, n), "padding": _tup(m.padding, n),
                      "dilation": _tup(m.dilation, n), "output_padding": _tup(m.output_padding, n)})
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            if m.running_mean is None:
                raise ExportError("%s: batch norm without running statistics" % p)
            ins = [x, self.param(p + ".running_mean", m.running_mean),
                   self.param(p + ".running_var", m.running_var)]
            if m.affine:
                ins += [self.param(p + ".weight", m.weight), self.param(p + ".bias", m.bias)]
            self.add(node, "batch_norm", ins, {"eps": m.eps})
        elif isinstance(m, nn.modules.instancenorm._InstanceNorm):
            if m.track_running_stats:
                raise ExportError("%s: instance norm with running stats is not supported" % p)
            ins = [x]
            if m.affine:
                ins += [self.param(p + ".weight", m.weight), self.param(p + ".bias", m.bias)]
            self.add(node, "instance_norm", ins, {"eps": m.eps})
        elif isinstance(m, nn.GroupNorm):
            ins = [x]
            if m.affine:
                ins += [self.param(p + ".weight", m.weight), self.param(p + ".bias", m.bias)]
            self.add(node, "group_norm", ins, {"eps": m.eps, "groups": m.num_groups})
        elif isinstance(m, nn.ReLU):
            self.add(node, "relu", [x])
        elif isinstance(m, nn.LeakyReLU):
            self.add(node, "leaky_relu", [x], {"negative_slope": m.negative_slope})
        elif isinstance(m, nn.Sigmoid):
            self.add(node, "sigmoid", [x])
        elif isinstance(m, (nn.Softmax,)):
            if m.dim not in (1, -len(self.shape_of(node))):
                raise ExportError("%s: softmax only over dim 1" % p)
            self.add(node, "softmax", [x])
        elif isinstance(m, (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)):
            n = len(self.shape_of(node)) - 2
            if m.return_indices:
                raise ExportError("%s: return_indices is not supported" % p)
            self.add(node, "max_pool", [x], {
                "kernel_size": _tup(m.kernel_size, n),
                "stride": _tup(m.stride if m.stride is not None else m.kernel_size, n),
                "padding": _tup(m.padding, n), "dilation": _tup(m.dilation, n),
                "ceil_mode": int(m.ceil_mode)})
        elif isinstance(m, (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d)):
            n = len(self.shape_of(node)) - 2
            if getattr(m, "divisor_override", None):
                raise ExportError("%s: divisor_override is not supported" % p)
            self.add(node, "avg_pool", [x], {
                "kernel_size": _tup(m.kernel_size, n),
                "stride": _tup(m.stride if m.stride is not None else m.kernel_size, n),
                "padding": _tup(m.padding, n), "ceil_mode": int(m.ceil_mode),
                "count_include_pad": int(m.count_include_pad)})
        elif isinstance(m, (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d)):
            if any(s != 1 for s in self.shape_of(node)[2:]):
                raise ExportError("%s: adaptive pooling only to size 1" % p)
            self.add(node, "global_avg_pool", [x])
        elif isinstance(m, nn.Upsample):
            self.upsample(node, x, m.mode, m.size, m.scale_factor, m.align_corners)
        elif isinstance(m, nn.Linear):
            ins = [x, self.param(p + ".weight", m.weight)]
            if m.bias is not None:
                ins.append(self.param(p + ".bias", m.bias))
            self.add(node, "linear", ins)
        elif isinstance(m, nn.Flatten):
            self.reshape(node, x)
        elif isinstance(m, (nn.Dropout, nn.Dropout2d, nn.Dropout3d, nn.Identity)):
            self.alias[node.name] = x
        else:
            raise ExportError("module %s (%s) has no nn/ op" % (p, type(m).__name__))

    def upsample(self, node, x, mode, size, scale, align_corners):
        n = len(self.shape_of(node)) - 2
        attrs = {}
        if scale is not None:
            attrs["scale_factor"] = [float(s) for s in (scale if isinstance(scale, (list, tuple))
                                                         else [scale] * n)]
        else:
            attrs["size"] = self.shape_of(node)[2:]
        if mode == "nearest":
            self.add(node, "upsample_nearest", [x], attrs)
        elif mode in ("linear", "bilinear", "trilinear"):
            attrs["align_corners"] = int(bool(align_corners))
            self.add(node, "upsample_linear", [x], attrs)
        else:
            raise ExportError("%s: interpolation mode %s is not supported" % (node.name, mode))

    def reshape(self, node, x):
        shape = self.shape_of(node)
        self.add(node, "reshape", [x], {"shape": [0] + shape[1:]})   # 0: keep the batch dim

    def scalar_or_binary(self, node, op):
        a, b = node.args[0], node.args[1]
        ta, tb = isinstance(a, torch.fx.Node), isinstance(b, torch.fx.Node)
        if ta and tb:
            self.add(node, op, [self.name(a), self.name(b)])
            return
        t, c = (a, b) if ta else (b, a)
        c = float(c)
        if op == "add":
            self.add(node, "scale_shift", [self.name(t)], {"alpha": 1.0, "beta": c})
        elif op == "sub":
            if ta:
                self.add(node, "scale_shift", [self.name(t)], {"alpha": 1.0, "beta": -c})
            else:
                self.add(node, "scale_shift", [self.name(t)], {"alpha": -1.0, "beta": c})
        elif op == "mul":
            self.add(node, "scale_shift", [self.name(t)], {"alpha": c, "beta": 0.0})
        elif op == "div" and ta:
            self.add(node, "scale_shift", [self.name(t)], {"alpha": 1.0 / c, "beta": 0.0})
        else:
            raise ExportError("%s: %s with a tensor divisor is not supported" % (node.name, op))

    def function(self, node):
        f, a, kw = node.target, node.args, node.kwargs
        if f in (operator.add, torch.add):
            return self.scalar_or_binary(node, "add")
        if f in (operator.mul, torch.mul):
            return self.scalar_or_binary(node, "mul")
        if f in (operator.sub, torch.sub):
            if all(isinstance(v, torch.fx.Node) for v in a[:2]):
                raise ExportError("%s: tensor - tensor is not supported" % node.name)
            return self.scalar_or_binary(node, "sub")
        if f in (operator.truediv, torch.div):
            return self.scalar_or_binary(node, "div")
        if f is torch.cat:
            tensors = a[0]
            dim = kw.get("dim", a[1] if len(a) > 1 else 0)
            return self.add(node, "concat", [self.name(t) for t in tensors], {"axis": int(dim)})
        if f in (F.relu, torch.relu):
            return self.add(node, "relu", [self.name(a[0])])
        if f is F.leaky_relu:
            slope = kw.get("negative_slope", a[1] if len(a) > 1 else 0.01)
            return self.add(node, "leaky_relu", [self.name(a[0])], {"negative_slope": slope})
        if f in (torch.sigmoid, F.sigmoid):
            return self.add(node, "sigmoid", [self.name(a[0])])
        if f in (F.softmax, torch.softmax):
            dim = kw.get("dim", a[1] if len(a) > 1 else None)
            if dim != 1:
                raise ExportError("%s: softmax only over dim 1" % node.name)
            return self.add(node, "softmax", [self.name(a[0])])
        if f is torch.argmax:
            dim = kw.get("dim", a[1] if len(a) > 1 else None)
            if dim != 1 or not kw.get("keepdim", False):
                raise ExportError("%s: argmax only over dim 1 with keepdim=True" % node.name)
            return self.add(node, "argmax", [self.name(a[0])])
        if f is F.interpolate:
            size = kw.get("size", a[1] if len(a) > 1 else None)
            scale = kw.get("scale_factor", a[2] if len(a) > 2 else None)
            return self.upsample(node, self.name(a[0]), kw.get("mode", "nearest"), size, scale,
                                 kw.get("align_corners", None))
        if f in (F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d):
            if any(s != 1 for s in self.shape_of(node)[2:]):
                raise ExportError("%s: adaptive pooling only to size 1" % node.name)
            return self.add(node, "global_avg_pool", [self.name(a[0])])
        if f in (torch.flatten, torch.reshape):
            return self.reshape(node, self.name(a[0]))
        if f is operator.getitem and not isinstance(a[0], torch.fx.Node):
            return
        raise ExportError("function %s has no nn/ op" % getattr(f, "__name__", f))

    def method(self, node):
        m, a = node.target, node.args
        if m in ("view", "reshape", "flatten"):
            return self.reshape(node, self.name(a[0]))
        if m in ("size", "dim"):
            return                    # shape queries: their uses are rewritten from traced shapes
        if m == "mean":
            dims = a[1] if len(a) > 1 else node.kwargs.get("dim")
            nd = len(self.shape_of(a[0]))
            if sorted(d % nd for d in dims) != list(range(2, nd)) or not node.kwargs.get("keepdim"):
                raise ExportError("%s: mean only over all spatial dims with keepdim" % node.name)
            return self.add(node, "global_avg_pool", [self.name(a[0])])
        if m in ("relu", "sigmoid"):
            return self.add(node, m, [self.name(a[0])])
        if m in ("contiguous", "float"):
            self.alias[node.name] = self.name(a[0])
            return
        if m in ("add", "mul"):
            return self.scalar_or_binary(node, m)
        raise ExportError("method .%s() has no nn/ op" % m)


def export(model, example, out_dir, meta=None):
    """Trace `model` on `example` (N, C, spatial...) and write a bundle to out_dir.

    meta: dict with optional name, modality, patch_size, target_spacing, normalization,
    labels ([{value, name, code}]). Returns the path of model.json."""
    meta = dict(meta or {})
    model = model.eval()
    gm = symbolic_trace(model)
    with torch.no_grad():
        ShapeProp(gm).propagate(example)
    ex = _Exporter(gm)
    outputs = []
    for node in gm.graph.nodes:
        if node.op == "placeholder":
            if ex.inputs:
                raise ExportError("only one input is supported")
            ex.inputs.append({"name": node.name, "shape": ex.shape_of(node)})
        elif node.op == "get_attr":
            t = getattr(gm, node.target) if "." not in node.target else \
                gm.get_parameter(node.target)
            ex.param(node.target, t)
            ex.alias[node.name] = node.target
        elif node.op == "call_module":
            ex.module(node, ex.modules[node.target])
        elif node.op in ("call_function", "call_method") and "tensor_meta" not in node.meta:
            continue              # shape queries (x.shape[0], x.size()): not tensors
        elif node.op == "call_function":
            ex.function(node)
        elif node.op == "call_method":
            ex.method(node)
        elif node.op == "output":
            res = node.args[0]
            res = list(res) if isinstance(res, (list, tuple)) else [res]
            outputs = [ex.name(r) for r in res]
    os.makedirs(out_dir, exist_ok=True)
    in_shape = ex.inputs[0]["shape"]
    with torch.no_grad():
        out = model(example)
    out0 = out[0] if isinstance(out, (list, tuple)) else out
    doc = {
        "format": "segnode-model",
        "version": 1,
        "name": meta.get("name", type(model).__name__),
        "weights": "model.safetensors",
        "modality": meta.get("modality", ""),
        "spatial_dims": len(in_shape) - 2,
        "in_channels": in_shape[1],
        "out_channels": int(out0.shape[1]),
        "patch_size": list(meta.get("patch_size", in_shape[2:])),
        "target_spacing": list(meta.get("target_spacing", [0.0] * (len(in_shape) - 2))),
        "normalization": meta.get("normalization", {"type": "zscore", "per_volume": True}),
        "labels": meta.get("labels", [{"value": i, "name": "class%d" % i}
                                      for i in range(int(out0.shape[1]))]),
        "graph": {
            "inputs": ex.inputs,
            "params": {k: {"shape": list(v.shape), "dtype": "F32"} for k, v in ex.params.items()},
            "nodes": ex.nodes,
            "outputs": outputs,
        },
    }
    # anything else in meta (training configuration, data manifest) is carried through verbatim
    for k, v in meta.items():
        if k not in doc:
            doc[k] = v
    write_safetensors(os.path.join(out_dir, "model.safetensors"), ex.params)
    path = os.path.join(out_dir, "model.json")
    with open(path + ".tmp", "w") as f:
        json.dump(doc, f, indent=1)
    os.replace(path + ".tmp", path)
    return path


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--module", required=True, help="pkg.module:factory returning an nn.Module")
    ap.add_argument("--state", help="state_dict file (torch.save) to load")
    ap.add_argument("--patch", type=int, nargs="+", required=True)
    ap.add_argument("--in-channels", type=int, default=1)
    ap.add_argument("--spacing", type=float, nargs="+")
    ap.add_argument("--modality", default="")
    ap.add_argument("--meta", help="JSON file with labels / normalization / name")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    mod, fn = args.module.split(":")
    sys.path.insert(0, os.getcwd())
    model = getattr(importlib.import_module(mod), fn)()
    if args.state:
        model.load_state_dict(torch.load(args.state, map_location="cpu"))
    meta = json.load(open(args.meta)) if args.meta else {}
    meta.setdefault("modality", args.modality)
    meta["patch_size"] = args.patch
    if args.spacing:
        meta["target_spacing"] = args.spacing
    example = torch.randn(1, args.in_channels, *args.patch)
    try:
        print(export(model, example, args.out, meta))
    except ExportError as e:
        print("export.py: %s" % e, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
