"""Reordering passes: the same function computed in a cheaper order.

A 1x1 convolution commutes with a bilinear or nearest-neighbour resize: the convolution
mixes channels pixel by pixel, the resize mixes pixels channel by channel, and every
resized pixel is a weighted sum of input pixels whose weights add up to 1, so the bias
passes through too. After an upsampling resize the convolution does its work on the small
plane and the resize moves its output channels instead of its input channels: BlazePose's
detector resizes 1152 channels from 7x7 to 14x14 and then projects them to 192, which as
projection then resize is a quarter of the multiply-adds and a sixth of the resizing.
The convolution's activation does not commute with the resize, so it follows the resize as
an op of its own. Results are the same up to float rounding.
"""
from __future__ import annotations

from .. import opset
from ..ir import Graph, Op
from .fold import _sole_consumer, rewrite_until_settled
from .memory import RESIZES, _pointwise

RESIZE_MACS_PER_PIXEL = {"RESIZE_BILINEAR": 4, "RESIZE_NEAREST": 1}  # per output pixel and channel


def _activation_op(act: int, x: str, y: str, name: str) -> Op | None:
    """The op that applies fused activation `act` to x, writing y (None for no activation)."""
    if act == opset.ACT_NONE:
        return None
    lo, hi = opset.ACTIVATION_RANGES[act]
    if hi == float("inf"):
        return Op("RELU", [x], [y], {}, name)
    return Op("CLIP", [x], [y], {"min": float(lo), "max": float(hi)}, name)


def pointwise_before_resize(graph: Graph) -> Graph:
    """resize(x) -> 1x1 conv becomes 1x1 conv (no activation) -> resize [-> activation]
    where the resize's output feeds only that convolution and the new order does fewer
    multiply-adds (an upsampling resize; a downsampling one stays first)."""
    return rewrite_until_settled(graph, _pointwise_first)


def _pointwise_first(g: Graph, resize: Op, consumers: dict) -> bool:
    if resize.type not in RESIZES or len(g.tensors[resize.inputs[0]].shape) != 4:
        return False
    conv = _sole_consumer(g, resize.outputs[0], consumers)
    if conv is None or conv.inputs[0] != resize.outputs[0] or not _pointwise(g, conv):
        return False
    n, c_in, h, w = g.tensors[resize.inputs[0]].shape
    _, c_out, oh, ow = g.tensors[conv.outputs[0]].shape
    k = RESIZE_MACS_PER_PIXEL[resize.type]
    before = c_in * c_out * oh * ow + k * c_in * oh * ow
    after = c_in * c_out * h * w + k * c_out * oh * ow + (c_out * oh * ow if conv.attr("act") else 0)
    if after >= before:
        return False
    small = g.unique_name(conv.outputs[0] + "_before_resize")
    g.add_tensor(small, (n, c_out, h, w))
    out = conv.outputs[0]
    act = int(conv.attr("act"))
    big = g.unique_name(out + "_resized") if act != opset.ACT_NONE else out
    if big != out:
        g.add_tensor(big, (n, c_out, oh, ow))
    del g.tensors[resize.outputs[0]]
    conv.inputs[0] = resize.inputs[0]
    conv.outputs = [small]
    conv.attrs["act"] = opset.ACT_NONE
    resize.inputs = [small]
    resize.outputs = [big]
    g.ops.remove(resize)  # the convolution first, then the resize, then the activation
    at = g.ops.index(conv) + 1
    g.ops.insert(at, resize)
    activation = _activation_op(act, big, out, conv.name)
    if activation is not None:
        g.ops.insert(at + 1, activation)
    return True
