"""The numpy reference executor: the executable definition of every op in `pysparse.opset`.

Written to be read: one short function per op, NCHW semantics as in docs/format.md.
Tensors are float32; convolutions and matrix products accumulate in float64 so that the
reference is closer to exact than any engine it checks.

    outputs = run(graph, {"input": x})            # whole graph
    y = run_op("CONV2D", [x, w, b], attrs, shape)  # one op (engine kernel tests)
"""
from __future__ import annotations

import math

import numpy as np

from . import opset
from .errors import InputShapeError
from .ir import Graph, Op

_F32 = np.float32


def _act(y: np.ndarray, code: int) -> np.ndarray:
    lo, hi = opset.ACTIVATION_RANGES[int(code)]
    if code == opset.ACT_NONE:
        return y
    return np.clip(y, lo, hi)


def _pad_hw(x: np.ndarray, a: dict, value: float) -> np.ndarray:
    pads = ((0, 0), (0, 0), (a["pad_top"], a["pad_bottom"]), (a["pad_left"], a["pad_right"]))
    if not any(p for pair in pads for p in pair):
        return x
    return np.pad(x, pads, mode="constant", constant_values=value)


def _windows(x: np.ndarray, kh: int, kw: int, sh: int, sw: int, dh: int = 1, dw: int = 1):
    """Strided view [N, C, OH, OW, KH, KW] of the (already padded) input."""
    n, c, h, w = x.shape
    oh = (h - dh * (kh - 1) - 1) // sh + 1
    ow = (w - dw * (kw - 1) - 1) // sw + 1
    if oh < 1 or ow < 1:
        raise ValueError(f"window {kh}x{kw} does not fit input {h}x{w}")
    s = x.strides
    return np.lib.stride_tricks.as_strided(
        x, (n, c, oh, ow, kh, kw), (s[0], s[1], s[2] * sh, s[3] * sw, s[2] * dh, s[3] * dw), writeable=False)


def _attrs(op_type: str, attrs: dict) -> dict:
    """Attributes with table defaults filled in."""
    d = opset.BY_NAME[op_type]
    return {a.name: attrs.get(a.name, a.default) for a in d.attrs}


# -- convolutions and matrix products --------------------------------------------------

def conv2d(x, weight, bias, a):
    x = _pad_hw(x.astype(np.float64), a, 0.0)
    g = a["groups"]
    cout, cin_g, kh, kw = weight.shape
    n, cin = x.shape[:2]
    if cin != cin_g * g or cout % g:
        raise ValueError(f"CONV2D: input channels {cin}, weight {weight.shape}, groups {g} do not agree")
    win = _windows(x, kh, kw, a["stride_h"], a["stride_w"], a["dilation_h"], a["dilation_w"])
    oh, ow = win.shape[2:4]
    w = weight.astype(np.float64).reshape(g, cout // g, cin_g, kh, kw)
    y = np.zeros((n, g, cout // g, oh, ow))
    # One (batched) matrix product per kernel tap: y[g] += W[g, :, :, i, j] @ x[g, :, taps].
    for i in range(kh):
        for j in range(kw):
            xs = win[:, :, :, :, i, j].reshape(n, g, cin_g, oh * ow)
            if cin_g == 1 and cout == g:  # depthwise: a per-channel scale
                y[:, :, 0] += w[:, 0, 0, i, j][None, :, None, None] * xs[:, :, 0].reshape(n, g, oh, ow)
            else:
                y += np.matmul(w[:, :, :, i, j], xs).reshape(n, g, cout // g, oh, ow)
    y = y.reshape(n, cout, oh, ow)
    if bias is not None:
        y += bias.astype(np.float64).reshape(1, cout, 1, 1)
    return _act(y, a["act"]).astype(_F32)


def conv_transpose2d(x, weight, bias, a, out_shape=None):
    n, cin, h, w = x.shape
    wcin, cout, kh, kw = weight.shape
    if wcin != cin:
        raise ValueError(f"CONV_TRANSPOSE2D: input channels {cin} but weight {weight.shape}")
    sh, sw = a["stride_h"], a["stride_w"]
    full = np.zeros((n, cout, (h - 1) * sh + kh, (w - 1) * sw + kw))
    xf = x.astype(np.float64).reshape(n, cin, h * w)
    wf = weight.astype(np.float64)
    # Each kernel tap scatters every input pixel to one output pixel (stride apart).
    for i in range(kh):
        for j in range(kw):
            contrib = np.einsum("co,ncp->nop", wf[:, :, i, j], xf).reshape(n, cout, h, w)
            full[:, :, i:i + (h - 1) * sh + 1:sh, j:j + (w - 1) * sw + 1:sw] += contrib
    oh = full.shape[2] - a["pad_top"] - a["pad_bottom"]
    ow = full.shape[3] - a["pad_left"] - a["pad_right"]
    if oh < 1 or ow < 1:
        raise ValueError("CONV_TRANSPOSE2D: padding larger than the output")
    if out_shape is not None and tuple(out_shape[2:]) != (oh, ow):
        raise ValueError(f"CONV_TRANSPOSE2D: pads give {oh}x{ow}, output tensor is {tuple(out_shape[2:])}")
    y = full[:, :, a["pad_top"]:a["pad_top"] + oh, a["pad_left"]:a["pad_left"] + ow]
    if bias is not None:
        y = y + bias.astype(np.float64).reshape(1, cout, 1, 1)
    return _act(y, a["act"]).astype(_F32)


def fully_connected(x, weight, bias, a):
    y = x.astype(np.float64) @ weight.astype(np.float64).T
    if bias is not None:
        y += bias.astype(np.float64)
    return _act(y, a["act"]).astype(_F32)


def matmul(a, b):
    return np.matmul(a.astype(np.float64), b.astype(np.float64)).astype(_F32)


# -- elementwise ---------------------------------------------------------------------

def _binary(fn):
    def op(x, y, a):
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):  # NaN/inf as float32 gives them
            return _act(fn(x.astype(_F32), y.astype(_F32)), a["act"]).astype(_F32)
    return op


def relu(x, a):
    return np.maximum(x, _F32(0))


def clip(x, a):
    return np.clip(x, _F32(a["min"]), _F32(a["max"])).astype(_F32)


def sigmoid(x, a):
    # exp of -|x| never overflows; the two branches are the same function.
    e = np.exp(-np.abs(x.astype(np.float64)))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(_F32)


def tanh(x, a):
    return np.tanh(x).astype(_F32)


def hard_swish(x, a):
    return (x * np.clip(x + _F32(3), _F32(0), _F32(6)) / _F32(6)).astype(_F32)


def hard_sigmoid(x, a):
    return np.clip(_F32(a["alpha"]) * x + _F32(a["beta"]), _F32(0), _F32(1)).astype(_F32)


def leaky_relu(x, a):
    return np.where(x >= 0, x, _F32(a["alpha"]) * x).astype(_F32)


def abs_(x, a):
    return np.abs(x).astype(_F32)


def exp(x, a):
    with np.errstate(over="ignore"):
        return np.exp(x.astype(np.float64)).astype(_F32)


def sqrt(x, a):
    with np.errstate(invalid="ignore"):
        return np.sqrt(x.astype(np.float64)).astype(_F32)


def elu(x, a):
    x64 = x.astype(np.float64)
    return (a["scale"] * np.where(x64 > 0, x64, a["alpha"] * np.expm1(np.minimum(x64, 0)))).astype(_F32)


def softplus(x, a):
    x64 = x.astype(np.float64)  # log(1 + exp(x)) without overflow
    return (np.maximum(x64, 0) + np.log1p(np.exp(-np.abs(x64)))).astype(_F32)


def prelu(x, slope, a):
    return np.where(x >= 0, x, slope * x).astype(_F32)


# -- pooling and reductions -----------------------------------------------------------

def max_pool2d(x, a):
    xp = _pad_hw(x, a, -np.inf)
    win = _windows(xp, a["kernel_h"], a["kernel_w"], a["stride_h"], a["stride_w"])
    return _act(win.max(axis=(4, 5)), a["act"]).astype(_F32)


def avg_pool2d(x, a):
    kh, kw = a["kernel_h"], a["kernel_w"]
    xp = _pad_hw(x.astype(np.float64), a, 0.0)
    total = _windows(xp, kh, kw, a["stride_h"], a["stride_w"]).sum(axis=(4, 5))
    if a["count_include_pad"]:
        count = float(kh * kw)
    else:  # pool a ones-image padded with zeros: how many real pixels each window sees
        ones = _pad_hw(np.ones((1, 1) + x.shape[2:]), a, 0.0)
        count = _windows(ones, kh, kw, a["stride_h"], a["stride_w"]).sum(axis=(4, 5))
    return _act(total / count, a["act"]).astype(_F32)


def mean(x, a):
    axes = tuple(i for i in range(x.ndim) if a["axes_mask"] >> i & 1)
    return x.astype(np.float64).mean(axis=axes, keepdims=bool(a["keepdims"])).astype(_F32)


def lrn(x, a):
    """ONNX LRN: the window of channel c is c - (size-1)//2 .. c + size//2, cut at the edges."""
    size = a["size"]
    sq = np.square(x.astype(np.float64))
    c = x.shape[1]
    lo_off, hi_off = (size - 1) // 2, size // 2
    # prefix sums over channels: window sum = P[hi + 1] - P[lo]
    prefix = np.concatenate([np.zeros_like(sq[:, :1]), np.cumsum(sq, axis=1)], axis=1)
    lo = np.clip(np.arange(c) - lo_off, 0, c)
    hi = np.clip(np.arange(c) + hi_off + 1, 0, c)
    window = prefix[:, hi] - prefix[:, lo]
    return (x / (a["bias"] + a["alpha"] / size * window) ** a["beta"]).astype(_F32)


def log_softmax(x, a):
    z = x.astype(np.float64)
    z = z - z.max(axis=a["axis"], keepdims=True)
    return (z - np.log(np.exp(z).sum(axis=a["axis"], keepdims=True))).astype(_F32)


def softmax(x, a):
    z = x.astype(np.float64) * a["beta"]
    z = np.exp(z - z.max(axis=a["axis"], keepdims=True))
    return (z / z.sum(axis=a["axis"], keepdims=True)).astype(_F32)


# -- data movement --------------------------------------------------------------------

def sum_(xs, a):
    y = xs[0].astype(_F32)
    for x in xs[1:]:
        y = y + x.astype(_F32)
    return _act(y, a["act"]).astype(_F32)


def concat(xs, a):
    return np.concatenate(xs, axis=a["axis"]).astype(_F32)


def pad_reflect(x, a):
    pads = [(a[f"pad{i}_begin"], a[f"pad{i}_end"]) for i in range(x.ndim)]
    return np.pad(x, pads, mode="edge" if a["edge"] else "reflect").astype(_F32)


def slice_(x, a):
    index = [slice(None)] * x.ndim
    index[a["axis"]] = slice(a["begin"], a["end"], a["step"])
    return np.ascontiguousarray(x[tuple(index)]).astype(_F32)


def pad(x, a):
    pads = [(a[f"pad{i}_begin"], a[f"pad{i}_end"]) for i in range(x.ndim)]
    if any(p < 0 for pair in pads for p in pair):
        raise ValueError("PAD: negative padding")
    return np.pad(x, pads, mode="constant", constant_values=_F32(a["value"])).astype(_F32)


def _linear_source(out_size: int, in_size: int, align: bool, half: bool) -> np.ndarray:
    """Source coordinate of each output index (TFLite's conventions), float64."""
    scale = (in_size - 1) / (out_size - 1) if align and out_size > 1 else in_size / out_size
    dst = np.arange(out_size, dtype=np.float64)
    return (dst + 0.5) * scale - 0.5 if half else dst * scale


def resize_bilinear(x, a, out_shape):
    oh, ow = out_shape[2:]
    h, w = x.shape[2:]
    align, half = bool(a["align_corners"]), bool(a["half_pixel_centers"])

    def taps(out_size, in_size):
        src = _linear_source(out_size, in_size, align, half)
        lo = np.maximum(np.floor(src), 0).astype(np.int64)
        hi = np.minimum(np.ceil(src), in_size - 1).astype(np.int64)
        return lo, hi, src - lo  # the weight of `hi`; TFLite measures it from the clamped `lo`

    y0, y1, fy = taps(oh, h)
    x0, x1, fx = taps(ow, w)
    xd = x.astype(np.float64)
    top = xd[:, :, y0][..., x0] * (1 - fx) + xd[:, :, y0][..., x1] * fx
    bot = xd[:, :, y1][..., x0] * (1 - fx) + xd[:, :, y1][..., x1] * fx
    fy = fy[:, None]
    return (top * (1 - fy) + bot * fy).astype(_F32)


def resize_nearest(x, a, out_shape):
    oh, ow = out_shape[2:]
    h, w = x.shape[2:]
    align, half = bool(a["align_corners"]), bool(a["half_pixel_centers"])

    def index(out_size, in_size):
        scale = (in_size - 1) / (out_size - 1) if align and out_size > 1 else in_size / out_size
        src = (np.arange(out_size) + (0.5 if half else 0.0)) * scale
        # TFLite rounds half away from zero with align_corners, else floors.
        idx = np.floor(src + 0.5) if align else np.floor(src)
        idx = np.minimum(idx.astype(np.int64), in_size - 1)
        return np.maximum(idx, 0)

    return x[:, :, index(oh, h)][..., index(ow, w)].astype(_F32)


def depth_to_space(x, a):
    b = a["block"]
    n, c, h, w = x.shape
    if c % (b * b):
        raise ValueError(f"DEPTH_TO_SPACE: {c} channels not divisible by block {b}^2")
    if a["mode"] == opset.D2S_DCR:
        y = x.reshape(n, b, b, c // (b * b), h, w).transpose(0, 3, 4, 1, 5, 2)
    else:
        y = x.reshape(n, c // (b * b), b, b, h, w).transpose(0, 1, 4, 2, 5, 3)
    return np.ascontiguousarray(y.reshape(n, c // (b * b), h * b, w * b), dtype=_F32)


def reshape(x, a, out_shape):
    return np.ascontiguousarray(x, dtype=_F32).reshape(out_shape)


def transpose(x, a):
    perm = [a[f"perm{i}"] for i in range(x.ndim)]
    if sorted(perm) != list(range(x.ndim)):
        raise ValueError(f"TRANSPOSE: {perm} is not a permutation of {x.ndim} axes")
    return np.ascontiguousarray(x.transpose(perm), dtype=_F32)


# -- dispatch -------------------------------------------------------------------------

def run_op(op_type: str, inputs: list, attrs: dict, out_shape: tuple | None = None) -> np.ndarray:
    """Runs one op. `inputs` in table order (None for an absent optional input);
    `out_shape` is needed by the ops whose output size is the output tensor's."""
    if op_type not in opset.BY_NAME:
        raise ValueError(f"unknown op type {op_type!r}")
    a = _attrs(op_type, attrs)
    xs = [None if t is None else np.asarray(t, dtype=_F32) for t in inputs]
    x = xs[0]
    opt = xs[2] if len(xs) > 2 else None
    t = op_type
    if t == "CONV2D":
        return conv2d(x, xs[1], opt, a)
    if t == "CONV_TRANSPOSE2D":
        return conv_transpose2d(x, xs[1], opt, a, out_shape)
    if t == "FULLY_CONNECTED":
        return fully_connected(x, xs[1], opt, a)
    if t in _BINARY:
        return _BINARY[t](x, xs[1], a)
    if t == "PRELU":
        return prelu(x, xs[1], a)
    if t == "MATMUL":
        return matmul(x, xs[1])
    if t == "CONCAT":
        return concat(xs, a)
    if t == "SUM":
        return sum_(xs, a)
    if t in ("RESIZE_BILINEAR", "RESIZE_NEAREST", "RESHAPE"):
        if out_shape is None:
            raise ValueError(f"{t} needs the output shape")
        return _WITH_SHAPE[t](x, a, tuple(out_shape))
    return _UNARY[t](x, a)


_BINARY = {"ADD": _binary(np.add), "MUL": _binary(np.multiply),
           "SUB": _binary(np.subtract), "DIV": _binary(np.divide),
           "MAX": _binary(np.maximum), "MIN": _binary(np.minimum), "POW": _binary(np.power)}
_WITH_SHAPE = {"RESIZE_BILINEAR": resize_bilinear, "RESIZE_NEAREST": resize_nearest, "RESHAPE": reshape}
_UNARY = {
    "RELU": relu, "CLIP": clip, "SIGMOID": sigmoid, "TANH": tanh, "HARD_SWISH": hard_swish,
    "HARD_SIGMOID": hard_sigmoid, "LEAKY_RELU": leaky_relu, "MAX_POOL2D": max_pool2d,
    "AVG_POOL2D": avg_pool2d, "MEAN": mean, "PAD": pad, "DEPTH_TO_SPACE": depth_to_space,
    "TRANSPOSE": transpose, "SOFTMAX": softmax, "LRN": lrn, "ABS": abs_, "EXP": exp, "SQRT": sqrt,
    "ELU": elu, "SOFTPLUS": softplus, "LOG_SOFTMAX": log_softmax, "SLICE": slice_,
    "PAD_REFLECT": pad_reflect,
}
assert set(_BINARY) | set(_WITH_SHAPE) | set(_UNARY) | {
    "CONV2D", "CONV_TRANSPOSE2D", "FULLY_CONNECTED", "PRELU", "CONCAT", "SUM", "MATMUL"} == set(opset.BY_NAME)


def _run_graph_op(graph: Graph, op: Op, values: dict) -> np.ndarray:
    ins = [values[i] if i else None for i in op.inputs]
    out = graph.tensors[op.outputs[0]]
    y = run_op(op.type, ins, op.attrs, out.shape)
    if y.shape != out.shape:
        raise ValueError(f"{op.type} {op.name!r}: computed shape {y.shape}, graph says {out.shape}")
    return y


def run(graph: Graph, inputs: dict, keep_all: bool = False) -> dict:
    """Runs the graph on `inputs` (name -> array of the input tensor's exact shape) and
    returns the graph outputs by name (every tensor with `keep_all`)."""
    values: dict[str, np.ndarray] = {}
    for name in graph.inputs:
        shape = graph.tensors[name].shape
        if name not in inputs:
            raise InputShapeError(f"missing input {name!r} of shape {shape}")
        x = np.asarray(inputs[name])
        if tuple(x.shape) != tuple(shape):
            raise InputShapeError(f"input {name!r} has shape {tuple(x.shape)}, the model expects {shape}")
        values[name] = x.astype(_F32)
    extra = set(inputs) - set(graph.inputs)
    if extra:
        raise InputShapeError(f"unknown inputs {sorted(extra)}; the model's inputs are {graph.inputs}")
    for name, t in graph.tensors.items():
        if t.is_constant:
            values[name] = t.data
    consumers_left = {}
    if not keep_all:
        for op in graph.ops:
            for i in op.inputs:
                if i:
                    consumers_left[i] = consumers_left.get(i, 0) + 1
    keep = set(graph.outputs)
    for op in graph.ops:
        values[op.outputs[0]] = _run_graph_op(graph, op, values)
        if not keep_all:  # free activations nobody reads any more
            for i in op.inputs:
                if i and i not in keep and not graph.tensors[i].is_constant:
                    consumers_left[i] -= 1
                    if consumers_left[i] == 0:
                        del values[i]
    if keep_all:
        return {k: v for k, v in values.items() if not graph.tensors[k].is_constant}
    return {name: values[name] for name in graph.outputs}


def conv_output_size(size: int, kernel: int, stride: int, dilation: int, pad_begin: int, pad_end: int) -> int:
    """Output length of a convolution/pool along one axis (floor mode)."""
    return (size + pad_begin + pad_end - dilation * (kernel - 1) - 1) // stride + 1


def same_padding(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """TFLite/TensorFlow SAME padding (begin, end): the extra pixel goes at the end."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + dilation * (kernel - 1) + 1 - size, 0)
    return total // 2, total - total // 2
