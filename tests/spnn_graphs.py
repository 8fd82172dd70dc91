"""Small synthetic graphs for the format, memory planner and packer tests."""
from __future__ import annotations

import numpy as np

from pysparse.ir import Graph


def small_cnn(seed: int = 0, sparsity: float = 0.7) -> Graph:
    """A graph touching most op kinds: convolutions (full, depthwise, 1x1), FC, binary ops,
    pooling, mean, activations, reshape, resize, concat; two outputs."""
    rng = np.random.default_rng(seed)

    def w(*shape, zero=0.0):
        a = rng.standard_normal(shape).astype(np.float32) * 0.3
        if zero:
            a[rng.random(shape) < zero] = 0
        return a

    g = Graph()
    g.add_tensor("image", (1, 3, 16, 16))
    g.inputs = ["image"]
    t = g.add_tensor
    t("c1", (1, 8, 8, 8)); t("dw", (1, 8, 8, 8)); t("pw", (1, 16, 8, 8)); t("pw2", (1, 16, 8, 8))
    t("sum", (1, 16, 8, 8)); t("hs", (1, 16, 8, 8)); t("pool", (1, 16, 4, 4)); t("se", (1, 16, 1, 1))
    t("gate", (1, 16, 1, 1)); t("scaled", (1, 16, 4, 4)); t("pr", (1, 16, 4, 4)); t("flat", (1, 256))
    t("logits", (1, 10)); t("probs", (1, 10)); t("up", (1, 16, 8, 8)); t("cat", (1, 32, 8, 8))
    c = g.add_constant
    g.add_op("CONV2D", ["image", c("w1", w(8, 3, 3, 3)), c("b1", w(8))], ["c1"], "conv1",
             stride_h=2, stride_w=2, pad_top=1, pad_left=1, pad_bottom=0, pad_right=0, act=2)
    g.add_op("CONV2D", ["c1", c("wdw", w(8, 1, 3, 3)), c("bdw", w(8))], ["dw"], "dwconv",
             pad_top=1, pad_left=1, pad_bottom=1, pad_right=1, groups=8, act=1)
    g.add_op("CONV2D", ["dw", c("wpw", w(16, 8, 1, 1, zero=sparsity)), c("bpw", w(16))], ["pw"], "project")
    g.add_op("CONV2D", ["pw", c("wpw2", w(16, 16, 1, 1, zero=sparsity)), ""], ["pw2"], "expand")
    g.add_op("ADD", ["pw", "pw2"], ["sum"], "residual")
    g.add_op("HARD_SWISH", ["sum"], ["hs"], "hswish")
    g.add_op("MAX_POOL2D", ["hs"], ["pool"], "pool", kernel_h=2, kernel_w=2, stride_h=2, stride_w=2)
    g.add_op("MEAN", ["pool"], ["se"], "squeeze", axes_mask=0b1100, keepdims=1)
    g.add_op("SIGMOID", ["se"], ["gate"], "gate")
    g.add_op("MUL", ["pool", "gate"], ["scaled"], "excite")
    g.add_op("PRELU", ["scaled", c("slope", w(1, 16, 1, 1))], ["pr"], "prelu")
    g.add_op("RESHAPE", ["pr"], ["flat"], "flatten")
    g.add_op("FULLY_CONNECTED", ["flat", c("wfc", w(10, 256, zero=sparsity)), c("bfc", w(10))], ["logits"], "fc")
    g.add_op("SOFTMAX", ["logits"], ["probs"], "softmax")
    g.add_op("RESIZE_BILINEAR", ["pool"], ["up"], "upsample", half_pixel_centers=1)
    g.add_op("CONCAT", ["up", "pw"], ["cat"], "concat", axis=1)
    g.outputs = ["probs", "cat"]
    g.validate()
    return g


def random_chain(rng: np.random.Generator, n_ops: int = 20) -> Graph:
    """A random DAG of elementwise ops and 1x1 convolutions with varied channel counts and
    fan-out, for memory planner property tests (shapes valid, values irrelevant)."""
    g = Graph()
    hw = int(rng.integers(1, 9))
    g.add_tensor("in0", (1, int(rng.integers(1, 17)), hw, hw))
    g.inputs = ["in0"]
    live = ["in0"]
    for i in range(n_ops):
        a = live[int(rng.integers(len(live)))]
        shape = g.tensors[a].shape
        out = f"t{i}"
        kind = rng.integers(3)
        if kind == 0:
            cout = int(rng.integers(1, 33))
            g.add_tensor(out, (1, cout, hw, hw))
            wname = g.add_constant(f"w{i}", rng.standard_normal((cout, shape[1], 1, 1)).astype(np.float32))
            g.add_op("CONV2D", [a, wname], [out], f"conv{i}")
        elif kind == 1:
            same = [n for n in live if g.tensors[n].shape == shape]
            b = same[int(rng.integers(len(same)))]
            g.add_tensor(out, shape)
            g.add_op("ADD", [a, b], [out], f"add{i}")
        else:
            g.add_tensor(out, shape)
            g.add_op("RELU", [a], [out], f"relu{i}")
        live.append(out)
        if len(live) > 4 and rng.random() < 0.5:  # let old tensors die
            live.pop(int(rng.integers(len(live) - 1)))
    outs = list(rng.choice(live, size=min(len(live), int(rng.integers(1, 3))), replace=False))
    g.outputs = [str(o) for o in outs]
    g.validate()
    return g
