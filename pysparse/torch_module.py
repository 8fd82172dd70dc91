"""A pysparse IR graph as a trainable torch.nn.Module, and its trained weights back into IR.

    module = GraphModule(graph)                 # forward == pysparse.reference.run(graph, ...)
    landmarks, presence, ... = module(x)        # x: [B, C, H, W], any batch size B
    ... fine-tune (e.g. with pysparse.prune.GradualPruner(module, ...)) ...
    pruned = module.to_graph()                  # a copy of the graph with the trained weights

Every constant of the graph (conv/FC weights and biases, PReLU slopes, operands of binary
ops) becomes an nn.Parameter in `module.weights`, keyed by its IR name with characters
PyTorch does not allow in parameter names replaced by "_" (`module.ir_name(key)` gives the
IR name back). Each op is a few lines of torch code following the numpy reference
(`pysparse/reference.py`, the definition); the tests hold the two together on real models.
The graph's batch dimension of 1 may be any size here, except through ops that move data
across it (a reshape or transpose of the batch axis, a concat along it), which need B = 1.
"""
from __future__ import annotations

import copy
import re

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import opset, reference
from .errors import InputShapeError, UnsupportedOpError
from .ir import Graph, Op
from .prune.layers import LayerInfo
from .prune.oneshot import ir_layers


def _act(y, code: int):
    if code == opset.ACT_NONE:
        return y
    lo, hi = opset.ACTIVATION_RANGES[int(code)]
    return torch.clamp(y, min=lo, max=None if hi == float("inf") else hi)


def _attrs(op: Op) -> dict:
    return {a.name: op.attrs.get(a.name, a.default) for a in opset.BY_NAME[op.type].attrs}


def _batch_shape(x, shape: tuple) -> tuple:
    """The IR's output shape with the batch dimension of the actual input."""
    return (x.shape[0],) + tuple(shape[1:])


def _need_batch_1(x, what: str):
    if x.shape[0] != 1:
        raise InputShapeError(f"{what} moves data across the batch axis: run it with batch size 1")


# -- one compiler per op: (graph, op, attributes) -> function of the input tensors ----------

def _conv2d(g, op, a):
    pads = (a["pad_left"], a["pad_right"], a["pad_top"], a["pad_bottom"])

    def f(x, w, b=None):
        if any(pads):
            x = F.pad(x, pads)
        y = F.conv2d(x, w, b, (a["stride_h"], a["stride_w"]), 0, (a["dilation_h"], a["dilation_w"]), a["groups"])
        return _act(y, a["act"])
    return f


def _conv_transpose2d(g, op, a):
    def f(x, w, b=None):
        y = F.conv_transpose2d(x, w, None, (a["stride_h"], a["stride_w"]))
        oh = y.shape[2] - a["pad_top"] - a["pad_bottom"]
        ow = y.shape[3] - a["pad_left"] - a["pad_right"]
        y = y[:, :, a["pad_top"]:a["pad_top"] + oh, a["pad_left"]:a["pad_left"] + ow]
        if b is not None:
            y = y + b.reshape(1, -1, 1, 1)
        return _act(y, a["act"])
    return f


def _fully_connected(g, op, a):
    return lambda x, w, b=None: _act(F.linear(x, w, b), a["act"])


def _binary(fn):
    def compile_(g, op, a):
        return lambda x, y: _act(fn(x, y), a["act"])
    return compile_


def _unary(fn):
    def compile_(g, op, a):
        return lambda x: fn(x, a)
    return compile_


def _max_pool2d(g, op, a):
    pads = (a["pad_left"], a["pad_right"], a["pad_top"], a["pad_bottom"])

    def f(x):
        if any(pads):
            x = F.pad(x, pads, value=float("-inf"))
        y = F.max_pool2d(x, (a["kernel_h"], a["kernel_w"]), (a["stride_h"], a["stride_w"]))
        return _act(y, a["act"])
    return f


def _avg_pool2d(g, op, a):
    pads = (a["pad_left"], a["pad_right"], a["pad_top"], a["pad_bottom"])
    k, s = (a["kernel_h"], a["kernel_w"]), (a["stride_h"], a["stride_w"])
    h, w = g.tensors[op.inputs[0]].shape[2:]
    if a["count_include_pad"]:
        count = torch.tensor(float(k[0] * k[1]))
    else:  # how many real pixels each window sees
        count = F.avg_pool2d(F.pad(torch.ones(1, 1, h, w, dtype=torch.float64), pads), k, s, divisor_override=1)

    def f(x):
        total = F.avg_pool2d(F.pad(x, pads) if any(pads) else x, k, s, divisor_override=1)
        return _act(total / count.to(x.dtype), a["act"])
    return f


def _mean(g, op, a):
    ndim = len(g.tensors[op.inputs[0]].shape)
    axes = tuple(i for i in range(ndim) if a["axes_mask"] >> i & 1)

    def f(x):
        if 0 in axes:
            _need_batch_1(x, "MEAN over axis 0")
        return x.mean(dim=axes, keepdim=bool(a["keepdims"]))
    return f


def _concat(g, op, a):
    def f(*xs):
        if a["axis"] == 0:
            _need_batch_1(xs[0], "CONCAT along axis 0")
        return torch.cat(xs, dim=a["axis"])
    return f


def _sum(g, op, a):
    def f(*xs):
        y = xs[0]
        for x in xs[1:]:
            y = y + x
        return _act(y, a["act"])
    return f


def _lrn(g, op, a):
    size = a["size"]
    c = g.tensors[op.inputs[0]].shape[1]
    # ONNX's window (c - (size-1)//2 .. c + size//2) from prefix sums over channels
    lo = torch.clamp(torch.arange(c) - (size - 1) // 2, 0, c)
    hi = torch.clamp(torch.arange(c) + size // 2 + 1, 0, c)

    def f(x):
        sq = x * x
        prefix = torch.cat([torch.zeros_like(sq[:, :1]), torch.cumsum(sq, dim=1)], dim=1)
        window = prefix[:, hi] - prefix[:, lo]
        return x / (float(a["bias"]) + float(a["alpha"]) / size * window) ** float(a["beta"])
    return f


def _slice(g, op, a):
    def f(x):
        if a["axis"] == 0:
            _need_batch_1(x, "SLICE along axis 0")
        return x.narrow(a["axis"], a["begin"], a["end"] - a["begin"])[
            (slice(None),) * a["axis"] + (slice(None, None, a["step"]),)]
    return f


def _pad(g, op, a):
    ndim = len(g.tensors[op.inputs[0]].shape)
    if a["pad0_begin"] or a["pad0_end"]:
        raise UnsupportedOpError(f"PAD {op.name!r}: padding the batch axis is not supported by the torch module")
    pads = []
    for i in reversed(range(ndim)):  # F.pad lists the last axis first
        pads += [a[f"pad{i}_begin"], a[f"pad{i}_end"]]
    return lambda x: F.pad(x, pads, value=float(a["value"]))


def _pad_reflect(g, op, a):
    """A gather along each padded axis (torch's own reflect pads only the last axes)."""
    shape = g.tensors[op.inputs[0]].shape
    index = {}
    for i, d in enumerate(shape):
        b, e = a[f"pad{i}_begin"], a[f"pad{i}_end"]
        if b or e:
            src = np.pad(np.arange(d), (b, e), mode="edge" if a["edge"] else "reflect")
            index[i] = torch.from_numpy(src.astype(np.int64))

    def f(x):
        if 0 in index:
            _need_batch_1(x, "PAD_REFLECT of the batch axis")
        for i, idx in index.items():
            x = x.index_select(i, idx.to(x.device))
        return x
    return f


def _resize_bilinear(g, op, a):
    h, w = g.tensors[op.inputs[0]].shape[2:]
    oh, ow = g.tensors[op.outputs[0]].shape[2:]
    align, half = bool(a["align_corners"]), bool(a["half_pixel_centers"])

    def taps(out_size, in_size):  # as the reference: lo/hi source indices and hi's weight
        src = reference._linear_source(out_size, in_size, align, half)
        lo = np.maximum(np.floor(src), 0).astype(np.int64)
        hi = np.minimum(np.ceil(src), in_size - 1).astype(np.int64)
        return torch.from_numpy(lo), torch.from_numpy(hi), torch.from_numpy(src - lo)

    y0, y1, fy = taps(oh, h)
    x0, x1, fx = taps(ow, w)

    def f(x):
        ffx, ffy = fx.to(x.dtype), fy.to(x.dtype)[:, None]
        rows0, rows1 = x[:, :, y0], x[:, :, y1]
        top = rows0[..., x0] * (1 - ffx) + rows0[..., x1] * ffx
        bot = rows1[..., x0] * (1 - ffx) + rows1[..., x1] * ffx
        return top * (1 - ffy) + bot * ffy
    return f


def _resize_nearest(g, op, a):
    h, w = g.tensors[op.inputs[0]].shape[2:]
    out_shape = g.tensors[op.outputs[0]].shape
    # The reference itself says which input pixel each output pixel copies.
    src = reference.resize_nearest(np.arange(h * w, dtype=np.float32).reshape(1, 1, h, w), a, (1, 1) + tuple(out_shape[2:]))
    index = torch.from_numpy(src.reshape(-1).astype(np.int64))

    def f(x):
        n, c = x.shape[:2]
        return x.reshape(n, c, h * w)[:, :, index].reshape(n, c, *out_shape[2:])
    return f


def _depth_to_space(g, op, a):
    b = a["block"]

    def f(x):
        n, c, h, w = x.shape
        if a["mode"] == opset.D2S_DCR:
            y = x.reshape(n, b, b, c // (b * b), h, w).permute(0, 3, 4, 1, 5, 2)
        else:
            y = x.reshape(n, c // (b * b), b, b, h, w).permute(0, 1, 4, 2, 5, 3)
        return y.reshape(n, c // (b * b), h * b, w * b)
    return f


def _reshape(g, op, a):
    in_shape = g.tensors[op.inputs[0]].shape
    out_shape = g.tensors[op.outputs[0]].shape
    keeps_batch = len(in_shape) > 0 and len(out_shape) > 0 and in_shape[0] == out_shape[0] == 1

    def f(x):
        if keeps_batch:
            return x.reshape(_batch_shape(x, out_shape))
        _need_batch_1(x, "RESHAPE across the batch axis")
        return x.reshape(out_shape)
    return f


def _transpose(g, op, a):
    ndim = len(g.tensors[op.inputs[0]].shape)
    perm = [a[f"perm{i}"] for i in range(ndim)]
    if sorted(perm) != list(range(ndim)):
        raise ValueError(f"TRANSPOSE {op.name!r}: {perm} is not a permutation")

    def f(x):
        if perm[0] != 0:
            _need_batch_1(x, "TRANSPOSE of the batch axis")
        return x.permute(perm)
    return f


def _hard_swish(x, a):
    return x * torch.clamp(x + 3, 0, 6) / 6


COMPILERS = {
    "CONV2D": _conv2d,
    "CONV_TRANSPOSE2D": _conv_transpose2d,
    "FULLY_CONNECTED": _fully_connected,
    "ADD": _binary(torch.add), "MUL": _binary(torch.mul), "SUB": _binary(torch.sub), "DIV": _binary(torch.div),
    "RELU": _unary(lambda x, a: torch.relu(x)),
    "CLIP": _unary(lambda x, a: torch.clamp(x, float(a["min"]), float(a["max"]))),
    "SIGMOID": _unary(lambda x, a: torch.sigmoid(x)),
    "TANH": _unary(lambda x, a: torch.tanh(x)),
    "HARD_SWISH": _unary(_hard_swish),
    "HARD_SIGMOID": _unary(lambda x, a: torch.clamp(float(a["alpha"]) * x + float(a["beta"]), 0, 1)),
    "LEAKY_RELU": _unary(lambda x, a: torch.where(x >= 0, x, float(a["alpha"]) * x)),
    "PRELU": lambda g, op, a: (lambda x, slope: torch.where(x >= 0, x, slope * x)),
    "MAX_POOL2D": _max_pool2d,
    "AVG_POOL2D": _avg_pool2d,
    "MEAN": _mean,
    "CONCAT": _concat,
    "PAD": _pad,
    "RESIZE_BILINEAR": _resize_bilinear,
    "RESIZE_NEAREST": _resize_nearest,
    "DEPTH_TO_SPACE": _depth_to_space,
    "RESHAPE": _reshape,
    "TRANSPOSE": _transpose,
    "SOFTMAX": _unary(lambda x, a: torch.softmax(x * float(a["beta"]), dim=a["axis"])),
    "LRN": _lrn,
    "SUM": _sum,
    "ABS": _unary(lambda x, a: torch.abs(x)),
    "EXP": _unary(lambda x, a: torch.exp(x)),
    "SQRT": _unary(lambda x, a: torch.sqrt(x)),
    "ELU": _unary(lambda x, a: float(a["scale"]) * F.elu(x, float(a["alpha"]))),
    "SOFTPLUS": _unary(lambda x, a: F.softplus(x)),
    "LOG_SOFTMAX": _unary(lambda x, a: torch.log_softmax(x, dim=a["axis"])),
    "MAX": _binary(torch.maximum), "MIN": _binary(torch.minimum), "POW": _binary(torch.pow),
    "SLICE": _slice,
    "PAD_REFLECT": _pad_reflect,
    "MATMUL": lambda g, op, a: torch.matmul,
}
assert set(COMPILERS) == set(opset.BY_NAME), "every op of the op set needs a torch version"


def parameter_key(name: str) -> str:
    """An IR tensor name as a parameter name (no dots, not empty)."""
    key = re.sub(r"[^0-9A-Za-z_]", "_", name) or "_"
    return key


class GraphModule(nn.Module):
    def __init__(self, graph: Graph):
        super().__init__()
        graph.validate()
        self.graph = graph
        self.weights = nn.ParameterDict()
        self._key: dict[str, str] = {}  # IR constant name -> parameter key
        self._ir: dict[str, str] = {}   # parameter key -> IR constant name
        used = {i for op in graph.ops for i in op.inputs if i}
        for name, t in graph.tensors.items():
            if not t.is_constant or name not in used:
                continue
            key, k = parameter_key(name), 1
            while key in self._ir:
                key, k = f"{parameter_key(name)}_{k}", k + 1
            self._key[name], self._ir[key] = key, name
            self.weights[key] = nn.Parameter(torch.from_numpy(np.array(t.data, dtype=np.float32, copy=True)))
        self._steps = []
        for op in graph.ops:
            if op.type not in COMPILERS:
                raise UnsupportedOpError(f"op {op.name!r}: {op.type} has no torch version")
            self._steps.append((COMPILERS[op.type](graph, op, _attrs(op)), list(op.inputs), op.outputs[0]))

    def ir_name(self, key: str) -> str:
        return self._ir[key]

    def parameter(self, ir_name: str) -> nn.Parameter:
        """The parameter holding the IR constant `ir_name`."""
        return self.weights[self._key[ir_name]]

    def forward(self, *inputs: torch.Tensor):
        """Graph inputs in order ([B, ...] each); returns the graph outputs (a tuple when
        the graph has several)."""
        values = self.values(inputs)
        outs = tuple(values[o] for o in self.graph.outputs)
        return outs[0] if len(outs) == 1 else outs

    def values(self, inputs, wanted=None, known: dict | None = None) -> dict:
        """Every tensor computed from `inputs` (a sequence of graph inputs), by IR name; with
        `wanted` (IR names), only the ops up to the last of those are run. `known`: tensors
        computed before (a previous call's result), whose ops are not run again."""
        g = self.graph
        if len(inputs) != len(g.inputs):
            raise InputShapeError(f"the graph has {len(g.inputs)} inputs ({g.inputs}), got {len(inputs)}")
        values = {}
        for name, x in zip(g.inputs, inputs):
            expect = g.tensors[name].shape
            if tuple(x.shape[1:]) != tuple(expect[1:]):
                raise InputShapeError(f"input {name!r} has shape {tuple(x.shape)}, the model expects [B]+{list(expect[1:])}")
            values[name] = x
        for name, key in self._key.items():
            values[name] = self.weights[key]
        values.update(known or {})
        missing = None if wanted is None else set(wanted) - set(values)
        for fn, ins, out in self._steps:
            if missing is not None and not missing:
                break
            if out in values:
                continue
            values[out] = fn(*[values[i] if i else None for i in ins])
            if missing is not None:
                missing.discard(out)
        if missing:
            raise KeyError(f"no tensor named {sorted(missing)} in the graph")
        return values

    def prunable_layers(self) -> list[tuple[LayerInfo, nn.Parameter]]:
        """The graph's conv/FC weights for pysparse.prune, named after their IR constants."""
        return [(info, self.parameter(info.name)) for info in ir_layers(self.graph)]

    @torch.no_grad()
    def to_graph(self) -> Graph:
        """A copy of the graph holding the module's current weights (as float32)."""
        out = copy.deepcopy(self.graph)
        for name, key in self._key.items():
            p = self.weights[key].detach().cpu()
            data = p.to(torch.float32).numpy().reshape(out.tensors[name].shape)
            out.tensors[name].data = np.ascontiguousarray(data)
        return out
