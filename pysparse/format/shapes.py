"""Shape rules of the op set: what the output shape of each op must be, given its inputs.

The reader rejects files whose stored shapes disagree with these rules, and the writer
refuses to write such graphs, so every consumer of a `.spnn` file can trust its shapes.
`check_op` raises ValueError with a message; callers add the op's position.
"""
from __future__ import annotations

from .. import opset

_BINARY = {"ADD", "MUL", "SUB", "DIV", "MAX", "MIN", "POW"}
_UNARY = {"RELU", "CLIP", "SIGMOID", "TANH", "HARD_SWISH", "HARD_SIGMOID", "LEAKY_RELU", "ABS", "EXP", "SQRT",
          "ELU", "SOFTPLUS"}


def broadcast(a: tuple, b: tuple) -> tuple:
    n = max(len(a), len(b))
    a = (1,) * (n - len(a)) + tuple(a)
    b = (1,) * (n - len(b)) + tuple(b)
    out = []
    for x, y in zip(a, b):
        if x != y and x != 1 and y != 1:
            raise ValueError(f"shapes {a} and {b} do not broadcast")
        out.append(max(x, y))
    return tuple(out)


def _need(cond: bool, msg: str) -> None:
    if not cond:
        raise ValueError(msg)


def _rank(shape, n: int, what: str) -> None:
    _need(len(shape) == n, f"{what} must be {n}-D, is {tuple(shape)}")


def _window(size: int, k: int, stride: int, dilation: int, pad0: int, pad1: int, axis: str) -> int:
    _need(k >= 1 and stride >= 1 and dilation >= 1, f"kernel, stride and dilation along {axis} must be >= 1")
    _need(pad0 >= 0 and pad1 >= 0, f"padding along {axis} must be >= 0")
    span = size + pad0 + pad1 - dilation * (k - 1) - 1
    _need(span >= 0, f"window {k} (dilation {dilation}) does not fit input {size} + padding along {axis}")
    return span // stride + 1


def _act(a: dict) -> None:
    if "act" in a:
        _need(a["act"] in opset.ACTIVATION_NAMES, f"unknown fused activation {a['act']}")


def expected_output(op_type: str, a: dict, ins: list[tuple | None], out: tuple) -> tuple:
    """The output shape the op's semantics give (`out`, the stored shape, is consulted only
    where the op takes its size from the output: RESHAPE, RESIZE_*). `a` holds every attribute."""
    _act(a)
    x = ins[0]
    if op_type == "CONV2D":
        w, b = ins[1], ins[2] if len(ins) > 2 else None
        _rank(x, 4, "input")
        _rank(w, 4, "weight")
        g = a["groups"]
        cout, cin_g, kh, kw = w
        _need(g >= 1 and x[1] % g == 0 and cout % g == 0, f"groups {g} must divide Cin {x[1]} and Cout {cout}")
        _need(cin_g * g == x[1], f"weight {w} needs Cin = {cin_g * g}, input has {x[1]}")
        _need(b is None or b == (cout,), f"bias {b} must be ({cout},)")
        oh = _window(x[2], kh, a["stride_h"], a["dilation_h"], a["pad_top"], a["pad_bottom"], "H")
        ow = _window(x[3], kw, a["stride_w"], a["dilation_w"], a["pad_left"], a["pad_right"], "W")
        return (x[0], cout, oh, ow)
    if op_type == "CONV_TRANSPOSE2D":
        w, b = ins[1], ins[2] if len(ins) > 2 else None
        _rank(x, 4, "input")
        _rank(w, 4, "weight")
        _need(w[0] == x[1], f"weight {w} needs Cin = {w[0]}, input has {x[1]}")
        _need(b is None or b == (w[1],), f"bias {b} must be ({w[1]},)")
        _need(a["stride_h"] >= 1 and a["stride_w"] >= 1, "strides must be >= 1")
        _need(min(a["pad_top"], a["pad_left"], a["pad_bottom"], a["pad_right"]) >= 0, "padding must be >= 0")
        oh = (x[2] - 1) * a["stride_h"] - a["pad_top"] - a["pad_bottom"] + w[2]
        ow = (x[3] - 1) * a["stride_w"] - a["pad_left"] - a["pad_right"] + w[3]
        _need(oh >= 1 and ow >= 1, f"output size {oh}x{ow} is empty")
        return (x[0], w[1], oh, ow)
    if op_type == "FULLY_CONNECTED":
        w, b = ins[1], ins[2] if len(ins) > 2 else None
        _rank(x, 2, "input")
        _rank(w, 2, "weight")
        _need(w[1] == x[1], f"weight {w} needs K = {w[1]}, input has {x[1]}")
        _need(b is None or b == (w[0],), f"bias {b} must be ({w[0]},)")
        return (x[0], w[0])
    if op_type == "MATMUL":
        b = ins[1]
        _rank(x, 2, "a")
        _rank(b, 2, "b")
        _need(x[1] == b[0], f"a {x} and b {b} do not multiply")
        return (x[0], b[1])
    if op_type in _BINARY:
        return broadcast(x, ins[1])
    if op_type in _UNARY:
        return x
    if op_type == "PRELU":
        _need(broadcast(x, ins[1]) == tuple(x), f"slope {ins[1]} does not broadcast to {x}")
        return x
    if op_type in ("MAX_POOL2D", "AVG_POOL2D"):
        _rank(x, 4, "input")
        oh = _window(x[2], a["kernel_h"], a["stride_h"], 1, a["pad_top"], a["pad_bottom"], "H")
        ow = _window(x[3], a["kernel_w"], a["stride_w"], 1, a["pad_left"], a["pad_right"], "W")
        return (x[0], x[1], oh, ow)
    if op_type == "MEAN":
        mask = a["axes_mask"]
        _need(0 < mask < (1 << len(x)), f"axes_mask {mask} does not name axes of a {len(x)}-D input")
        _need(a["keepdims"] in (0, 1), "keepdims must be 0 or 1")
        if a["keepdims"]:
            return tuple(1 if mask >> i & 1 else d for i, d in enumerate(x))
        return tuple(d for i, d in enumerate(x) if not mask >> i & 1)
    if op_type == "CONCAT":
        axis = a["axis"]
        _need(-len(x) <= axis < len(x), f"axis {axis} out of range for {len(x)}-D inputs")
        axis %= len(x)
        total = 0
        for s in ins:
            _need(len(s) == len(x) and all(s[i] == x[i] for i in range(len(x)) if i != axis),
                  f"input {s} does not match {x} outside axis {axis}")
            total += s[axis]
        return tuple(total if i == axis else d for i, d in enumerate(x))
    if op_type in ("PAD", "PAD_REFLECT"):
        _rank(x, 4, "input")
        pads = [(a[f"pad{i}_begin"], a[f"pad{i}_end"]) for i in range(4)]
        _need(all(p >= 0 for pe in pads for p in pe), "padding must be >= 0")
        if op_type == "PAD_REFLECT":
            _need(a["edge"] in (0, 1), f"edge {a['edge']} must be 0 or 1")
            _need(a["edge"] or all(max(pe) <= d - 1 for d, pe in zip(x, pads)),
                  f"reflect pads {pads} must each be below the axis size of {x}")
        return tuple(d + p0 + p1 for d, (p0, p1) in zip(x, pads))
    if op_type in ("RESIZE_BILINEAR", "RESIZE_NEAREST"):
        _rank(x, 4, "input")
        _need(a["align_corners"] in (0, 1) and a["half_pixel_centers"] in (0, 1), "flags must be 0 or 1")
        _need(len(out) == 4, f"output must be 4-D, is {out}")
        return (x[0], x[1], out[2], out[3])
    if op_type == "DEPTH_TO_SPACE":
        _rank(x, 4, "input")
        blk = a["block"]
        _need(blk >= 1 and x[1] % (blk * blk) == 0, f"block {blk}: block^2 must divide C {x[1]}")
        _need(a["mode"] in (opset.D2S_DCR, opset.D2S_CRD), f"unknown mode {a['mode']}")
        return (x[0], x[1] // (blk * blk), x[2] * blk, x[3] * blk)
    if op_type == "RESHAPE":
        n_in = n_out = 1
        for d in x:
            n_in *= d
        for d in out:
            n_out *= d
        _need(n_in == n_out, f"reshape of {n_in} elements to {out} ({n_out} elements)")
        return out
    if op_type == "TRANSPOSE":
        perm = [a[f"perm{i}"] for i in range(len(x))]
        _need(sorted(perm) == list(range(len(x))), f"perm {perm} is not a permutation of 0..{len(x) - 1}")
        return tuple(x[p] for p in perm)
    if op_type == "SUM":
        for s in ins:
            _need(tuple(s) == tuple(x), f"input {s} must have the shape {x} of the first (SUM does not broadcast)")
        return x
    if op_type == "SLICE":
        axis, begin, end, step = a["axis"], a["begin"], a["end"], a["step"]
        _need(0 <= axis < len(x), f"axis {axis} out of range for {len(x)}-D input")
        _need(0 <= begin < end <= x[axis] and step >= 1,
              f"slice {begin}:{end}:{step} of an axis of {x[axis]} (0 <= begin < end <= dim, step >= 1)")
        return tuple((end - begin + step - 1) // step if i == axis else d for i, d in enumerate(x))
    if op_type == "LRN":
        _rank(x, 4, "input")
        _need(a["size"] >= 1, f"size {a['size']} must be >= 1")
        return x
    if op_type in ("SOFTMAX", "LOG_SOFTMAX"):
        _need(-len(x) <= a["axis"] < len(x), f"axis {a['axis']} out of range for {len(x)}-D input")
        return x
    raise ValueError(f"no shape rule for {op_type}")


def check_op(op_type: str, attrs: dict, in_shapes: list[tuple | None], out_shape: tuple) -> None:
    """Raises ValueError unless the op's stored output shape is the one its semantics give."""
    d = opset.BY_NAME[op_type]
    n = len(in_shapes)
    if n < d.min_inputs or (d.max_inputs >= 0 and n > d.max_inputs):
        raise ValueError(f"{n} inputs")
    for i, s in enumerate(in_shapes):
        optional = i < len(d.inputs) and d.inputs[i].endswith("?")
        if s is None and not optional:
            raise ValueError(f"required input {i} is absent")
    full = dict(zip((x.name for x in d.attrs), opset.attr_values(op_type, attrs)))
    expect = tuple(expected_output(op_type, full, [tuple(s) if s is not None else None for s in in_shapes],
                                   tuple(out_shape)))
    if expect != tuple(out_shape):
        raise ValueError(f"output shape {tuple(out_shape)} should be {expect}")
