"""Folding passes: merge constant work into the ops that can absorb it.

Each pass is a plain function Graph -> Graph that returns a rewritten copy and leaves its
argument alone. A fold only happens where it is exact (up to float rounding): the op that
absorbs another must be that op's only input, and the tensor that disappears must not be
a graph output.
"""
from __future__ import annotations

import copy

import numpy as np

from .. import opset, reference
from ..ir import Graph, Op

# Ops with an `act` attribute, applied after everything else the op does.
ACT_OPS = {"CONV2D", "CONV_TRANSPOSE2D", "FULLY_CONNECTED", "ADD", "MUL", "SUB", "DIV", "MAX_POOL2D", "AVG_POOL2D",
           "SUM", "MAX", "MIN", "POW"}


def _sole_consumer(graph: Graph, name: str, consumers: dict) -> Op | None:
    """The one op reading `name`, if exactly one does (once) and it is not a graph output."""
    users = consumers.get(name, [])
    if len(users) != 1 or name in graph.outputs or users[0].inputs.count(name) != 1:
        return None
    return users[0]


def _absorb(graph: Graph, producer: Op, consumer: Op) -> None:
    """Drops `consumer`; `producer` now writes the consumer's output tensor."""
    old = producer.outputs[0]
    producer.outputs = list(consumer.outputs)
    graph.ops.remove(consumer)
    del graph.tensors[old]


def _new_constant(graph: Graph, base: str, data: np.ndarray) -> str:
    return graph.add_constant(graph.unique_name(base), np.asarray(data, np.float32))


def rewrite_until_settled(graph: Graph, rewrite) -> Graph:
    """A copy of `graph` with `rewrite(g, op, consumers)` tried on each op, from the first
    again after every change (it returns True when it changed `g`), until none changes."""
    g = copy.deepcopy(graph)
    changed = True
    while changed:
        consumers = g.consumers()
        changed = any(rewrite(g, op, consumers) for op in list(g.ops))  # stops at the first change
    return g


# -- constant folding -------------------------------------------------------------------

def fold_constants(graph: Graph) -> Graph:
    """Computes, once, every op whose inputs are all constants (with the reference)."""
    g = copy.deepcopy(graph)
    kept = []
    for op in g.ops:
        ins = [i for i in op.inputs if i]
        if ins and all(g.tensors[i].is_constant for i in ins) and not set(op.outputs) & set(g.outputs):
            out = g.tensors[op.outputs[0]]
            out.data = reference.run_op(op.type, [g.tensors[i].data if i else None for i in op.inputs],
                                        op.attrs, out.shape)
        else:
            kept.append(op)
    g.ops = kept
    g.remove_unused_tensors()
    return g


# -- per-channel scale and shift into convolutions and fully connected layers -------------

def _per_channel(c: np.ndarray, out_shape: tuple) -> np.ndarray | None:
    """`c` as one value per channel (axis 1) if it broadcasts against `out_shape` that way."""
    if c.ndim > len(out_shape):
        return None
    c_full = c.reshape((1,) * (len(out_shape) - c.ndim) + c.shape)
    channels = out_shape[1]
    for axis, d in enumerate(c_full.shape):
        if d != 1 and not (axis == 1 and d == channels):
            return None
    return np.broadcast_to(c_full.reshape(-1), (channels,)).astype(np.float64)


def fold_constant_scale_shift(graph: Graph) -> Graph:
    """CONV2D / CONV_TRANSPOSE2D / FULLY_CONNECTED (no activation) followed by a MUL, ADD or
    SUB with a per-channel constant: scale the weights and bias, or shift the bias. This
    folds batch normalisation (MUL then ADD) and separate bias additions."""
    g = rewrite_until_settled(graph, _scale_shift_into)
    g.remove_unused_tensors()
    return g


def _scale_shift_into(g: Graph, op: Op, consumers: dict) -> bool:
    if op.type not in ("CONV2D", "CONV_TRANSPOSE2D", "FULLY_CONNECTED") or op.attr("act") != opset.ACT_NONE:
        return False
    if not g.tensors[op.inputs[1]].is_constant or (len(op.inputs) > 2 and op.inputs[2]
                                                     and not g.tensors[op.inputs[2]].is_constant):
        return False
    nxt = _sole_consumer(g, op.outputs[0], consumers)
    if nxt is None or nxt.type not in ("MUL", "ADD", "SUB"):
        return False
    other = [i for i in nxt.inputs if i != op.outputs[0]]
    if len(other) != 1 or not g.tensors[other[0]].is_constant:
        return False
    if nxt.type == "SUB" and nxt.inputs[1] != other[0]:
        return False  # c - y is not a shift of y
    out_shape = g.tensors[op.outputs[0]].shape
    if g.tensors[nxt.outputs[0]].shape != out_shape:
        return False  # the constant would broadcast the output larger
    c = _per_channel(g.tensors[other[0]].data, out_shape)
    if c is None:
        return False
    _fold_into(g, op, nxt.type, c)
    op.attrs["act"] = nxt.attr("act")
    _absorb(g, op, nxt)
    return True


def _fold_into(g: Graph, op: Op, kind: str, c: np.ndarray) -> None:
    w = g.tensors[op.inputs[1]].data.astype(np.float64)
    cout = w.shape[1] if op.type == "CONV_TRANSPOSE2D" else w.shape[0]
    bias_name = op.inputs[2] if len(op.inputs) > 2 else ""
    b = g.tensors[bias_name].data.astype(np.float64) if bias_name else np.zeros(cout)
    if kind == "MUL":
        shape = [1] * w.ndim
        shape[1 if op.type == "CONV_TRANSPOSE2D" else 0] = cout
        w = w * c.reshape(shape)
        b = b * c
        op.inputs[1] = _new_constant(g, op.inputs[1] + "_scaled", w)
    else:
        b = b + c if kind == "ADD" else b - c
    new_bias = _new_constant(g, (bias_name or op.outputs[0] + "_bias") + "_folded", b)
    op.inputs = op.inputs[:2] + [new_bias]


# -- fused activations ----------------------------------------------------------------

def _activation_range(op: Op) -> tuple[float, float] | None:
    if op.type == "RELU":
        return (0.0, float("inf"))
    if op.type == "CLIP":
        return (float(op.attr("min")), float(op.attr("max")))
    return None


def fuse_activations(graph: Graph) -> Graph:
    """RELU, CLIP(0, 6), CLIP(-1, 1) after an op with an `act` attribute become that act."""
    return rewrite_until_settled(graph, _activation_into)


def _activation_into(g: Graph, op: Op, consumers: dict) -> bool:
    if op.type not in ACT_OPS:
        return False
    nxt = _sole_consumer(g, op.outputs[0], consumers)
    r = _activation_range(nxt) if nxt is not None else None
    if r is None:
        return False
    lo0, hi0 = opset.ACTIVATION_RANGES[op.attr("act")]
    lo, hi = max(lo0, r[0]), min(hi0, r[1])  # clamp after clamp, when they overlap
    code = {v: k for k, v in opset.ACTIVATION_RANGES.items()}.get((lo, hi)) if lo <= hi else None
    if code is None:
        return False
    op.attrs["act"] = code
    _absorb(g, op, nxt)
    return True


# -- explicit padding into convolutions and average pools --------------------------------

def _takes_pad(op: Op, name: str) -> bool:
    """Whether `op` can read tensor `name` unpadded with a zero padding of its own: a CONV2D
    reading it as its input, or an AVG_POOL2D that counts padding or has none of its own.
    (Max pooling pads with -inf, so a zero PAD never folds into it.)"""
    if op.inputs.count(name) != 1 or op.inputs[0] != name:
        return False
    if op.type == "AVG_POOL2D":
        own = any(op.attr(k) for k in ("pad_top", "pad_left", "pad_bottom", "pad_right"))
        return not own or bool(op.attr("count_include_pad"))
    return op.type == "CONV2D"


def fold_pad(graph: Graph) -> Graph:
    """A zero PAD of H and W only whose every reader can pad by itself (`_takes_pad`: a
    BlazePose-style padded tensor read by two depthwise layers, say) becomes each reader's
    own padding, and the copy goes."""
    g = copy.deepcopy(graph)
    consumers = g.consumers()
    for pad in list(g.ops):
        if pad.type != "PAD" or float(pad.attr("value")) != 0.0 or len(g.tensors[pad.inputs[0]].shape) != 4:
            continue
        if any(pad.attr(f"pad{a}_{e}") for a in (0, 1) for e in ("begin", "end")):
            continue
        out = pad.outputs[0]
        readers = consumers.get(out, [])
        if not readers or out in g.outputs or not all(_takes_pad(op, out) for op in readers):
            continue
        for nxt in readers:
            if nxt.type == "AVG_POOL2D":
                nxt.attrs["count_include_pad"] = 1  # the PAD's zeros were counted as pixels
            for key, (axis, end) in {"pad_top": (2, "begin"), "pad_bottom": (2, "end"),
                                     "pad_left": (3, "begin"), "pad_right": (3, "end")}.items():
                nxt.attrs[key] = nxt.attr(key) + pad.attr(f"pad{axis}_{end}")
            nxt.inputs[0] = pad.inputs[0]
        g.ops.remove(pad)
        del g.tensors[out]
        consumers = g.consumers()
    return g
