"""Every op of the numpy reference against an independent implementation.

torch.nn.functional where it has the op; onnxruntime (a one-node ONNX model) for the
resize coordinate conventions and depth-to-space modes torch lacks. Tolerance: float32
results, |ref - other| <= 1e-5 + 1e-5 * |other| (the reference accumulates in float64,
torch in float32, so only rounding differs).
"""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pysparse import opset, reference
from pysparse.errors import InputShapeError
from pysparse.ir import Graph

RTOL = ATOL = 1e-5


def rng(seed=0):
    return np.random.default_rng(seed)


def randn(*shape, seed=0):
    return rng(seed).standard_normal(shape).astype(np.float32)


def close(ours, theirs, rtol=RTOL, atol=ATOL):
    theirs = theirs.detach().numpy() if isinstance(theirs, torch.Tensor) else np.asarray(theirs)
    assert ours.dtype == np.float32
    assert ours.shape == theirs.shape
    np.testing.assert_allclose(ours, theirs, rtol=rtol, atol=atol)


T = torch.from_numpy


# -- convolutions ----------------------------------------------------------------------

CONV_CASES = [
    # cin, cout, k, stride, dilation, pads (t, l, b, r), groups, hw
    (3, 8, 3, 2, 1, (0, 0, 1, 1), 1, (17, 16)),    # TFLite SAME, stride 2: extra pad at the end
    (16, 24, 1, 1, 1, (0, 0, 0, 0), 1, (9, 9)),    # 1x1
    (8, 8, 3, 1, 1, (1, 1, 1, 1), 8, (10, 12)),    # depthwise 3x3
    (8, 8, 5, 2, 1, (1, 2, 2, 1), 8, (15, 15)),    # depthwise 5x5 stride 2, asymmetric
    (6, 4, 3, 1, 2, (2, 2, 2, 2), 2, (11, 9)),     # grouped, dilated
    (4, 6, (1, 3), (2, 1), 1, (0, 1, 0, 1), 1, (7, 8)),  # non-square kernel and stride
]


@pytest.mark.parametrize("cin,cout,k,stride,dil,pads,groups,hw", CONV_CASES)
@pytest.mark.parametrize("act", [opset.ACT_NONE, opset.ACT_RELU6])
def test_conv2d(cin, cout, k, stride, dil, pads, groups, hw, act):
    kh, kw = (k, k) if isinstance(k, int) else k
    sh, sw = (stride, stride) if isinstance(stride, int) else stride
    x = randn(1, cin, *hw, seed=1)
    w = randn(cout, cin // groups, kh, kw, seed=2)
    b = randn(cout, seed=3)
    t, l, bo, r = pads
    attrs = dict(stride_h=sh, stride_w=sw, dilation_h=dil, dilation_w=dil, pad_top=t, pad_left=l,
                 pad_bottom=bo, pad_right=r, groups=groups, act=act)
    ours = reference.run_op("CONV2D", [x, w, b], attrs)
    theirs = F.conv2d(F.pad(T(x), (l, r, t, bo)), T(w), T(b), stride=(sh, sw), dilation=dil, groups=groups)
    if act == opset.ACT_RELU6:
        theirs = theirs.clamp(0, 6)
    close(ours, theirs)


def test_conv2d_without_bias():
    x, w = randn(1, 5, 6, 6), randn(7, 5, 3, 3, seed=1)
    close(reference.run_op("CONV2D", [x, w, None], {}), F.conv2d(T(x), T(w)))


@pytest.mark.parametrize("stride,k,pads", [(2, 2, (0, 0, 0, 0)), (2, 3, (1, 1, 1, 1)), (2, 4, (1, 1, 1, 1)),
                                           (2, 3, (0, 0, 1, 1)), (1, 3, (1, 1, 1, 1))])
def test_conv_transpose2d(stride, k, pads):
    x, w, b = randn(1, 6, 5, 7), randn(6, 4, k, k, seed=1), randn(4, seed=2)
    t, l, bo, r = pads
    attrs = dict(stride_h=stride, stride_w=stride, pad_top=t, pad_left=l, pad_bottom=bo, pad_right=r)
    ours = reference.run_op("CONV_TRANSPOSE2D", [x, w, b], attrs)
    full = F.conv_transpose2d(T(x), T(w), T(b), stride=stride)
    theirs = full[:, :, t:full.shape[2] - bo, l:full.shape[3] - r]
    close(ours, theirs)


def test_conv_transpose2d_rejects_wrong_output_shape():
    x, w = randn(1, 2, 4, 4), randn(2, 3, 2, 2)
    with pytest.raises(ValueError):
        reference.run_op("CONV_TRANSPOSE2D", [x, w, None], dict(stride_h=2, stride_w=2), (1, 3, 9, 9))


@pytest.mark.parametrize("act", range(4))
def test_fully_connected(act):
    x, w, b = randn(2, 40), randn(10, 40, seed=1), randn(10, seed=2)
    ours = reference.run_op("FULLY_CONNECTED", [x, w, b], dict(act=act))
    lo, hi = opset.ACTIVATION_RANGES[act]
    close(ours, F.linear(T(x), T(w), T(b)).clamp(lo, hi))


# -- elementwise -----------------------------------------------------------------------

@pytest.mark.parametrize("op,fn", [("ADD", torch.add), ("MUL", torch.mul), ("SUB", torch.sub), ("DIV", torch.div),
                                   ("MAX", torch.maximum), ("MIN", torch.minimum)])
@pytest.mark.parametrize("shape_b", [(1, 4, 5, 6), (1, 4, 1, 1), (1, 1, 1, 6), (1,)])
def test_binary(op, fn, shape_b):
    a = randn(1, 4, 5, 6)
    b = randn(*shape_b, seed=1)
    if op == "DIV":
        b = np.where(np.abs(b) < 0.1, 0.5, b).astype(np.float32)
    close(reference.run_op(op, [a, b], {}), fn(T(a), T(b)))
    close(reference.run_op(op, [a, b], dict(act=opset.ACT_RELU)), F.relu(fn(T(a), T(b))))


X4 = (randn(1, 3, 8, 9) * 4).astype(np.float32)
UNARY_CASES = [
    ("RELU", {}, F.relu),
    ("CLIP", dict(min=0.0, max=6.0), F.relu6),
    ("CLIP", dict(min=-1.0, max=1.0), lambda t: t.clamp(-1, 1)),
    ("SIGMOID", {}, torch.sigmoid),
    ("TANH", {}, torch.tanh),
    ("HARD_SWISH", {}, F.hardswish),
    ("HARD_SIGMOID", dict(alpha=1 / 6, beta=0.5), F.hardsigmoid),
    ("LEAKY_RELU", dict(alpha=0.1), lambda t: F.leaky_relu(t, 0.1)),
    ("SOFTMAX", dict(axis=1), lambda t: torch.softmax(t, 1)),
    ("SOFTMAX", dict(axis=-1, beta=0.5), lambda t: torch.softmax(t * 0.5, -1)),
    ("LOG_SOFTMAX", dict(axis=1), lambda t: torch.log_softmax(t, 1)),
    ("ABS", {}, torch.abs),
    ("EXP", {}, lambda t: torch.exp(t.double()).float()),
    ("SQRT", {}, lambda t: torch.sqrt(t.abs())),
    ("ELU", dict(alpha=0.7), lambda t: F.elu(t, 0.7)),
    ("ELU", dict(alpha=1.6732632423543772, scale=1.0507009873554805), F.selu),
    ("SOFTPLUS", {}, F.softplus),
]


@pytest.mark.parametrize("op,attrs,fn", UNARY_CASES, ids=[f"{c[0]}{i}" for i, c in enumerate(UNARY_CASES)])
def test_unary(op, attrs, fn):
    x = np.abs(X4) if op == "SQRT" else X4
    close(reference.run_op(op, [x], attrs), fn(T(x)), rtol=2e-5 if op == "EXP" else RTOL)


@pytest.mark.parametrize("axis,begin,end,step", [(1, 1, 4, 1), (3, 0, 6, 2), (2, 3, 5, 3), (0, 0, 1, 1)])
def test_slice(axis, begin, end, step):
    x = randn(1, 5, 6, 6)
    index = [slice(None)] * 4
    index[axis] = slice(begin, end, step)
    close(reference.run_op("SLICE", [x], dict(axis=axis, begin=begin, end=end, step=step)),
          T(x)[tuple(index)])


@pytest.mark.parametrize("edge", [0, 1])
def test_pad_reflect(edge):
    x = randn(1, 3, 5, 6)
    a = dict(pad2_begin=4, pad2_end=2, pad3_begin=1, pad3_end=5, edge=edge)
    theirs = F.pad(T(x), (1, 5, 4, 2), mode="replicate" if edge else "reflect")
    close(reference.run_op("PAD_REFLECT", [x], a), theirs)


def test_matmul():
    a, b = randn(3, 5), randn(5, 4, seed=1)
    close(reference.run_op("MATMUL", [a, b], {}), T(a) @ T(b))


def test_pow():
    a, b = np.abs(randn(1, 3, 4, 5)) + 0.1, randn(1, 3, 1, 5, seed=2)
    close(reference.run_op("POW", [a, b], {}), torch.pow(T(a), T(b)))


def test_sigmoid_extremes():
    x = np.array([-1000, -80, 0, 80, 1000], np.float32)
    y = reference.run_op("SIGMOID", [x], {})
    assert np.all(np.isfinite(y))
    close(y, torch.sigmoid(T(x)))


def test_prelu():
    x, slope = randn(1, 5, 4, 4), randn(5, seed=1)
    ours = reference.run_op("PRELU", [x, slope.reshape(5, 1, 1)], {})
    close(ours, F.prelu(T(x), T(slope)))


# -- pooling and reductions ------------------------------------------------------------

@pytest.mark.parametrize("k,s,pads", [(2, 2, (0, 0, 0, 0)), (3, 2, (0, 0, 1, 1)), (3, 1, (1, 1, 1, 1)), (3, 2, (1, 0, 1, 2))])
def test_max_pool2d(k, s, pads):
    x = randn(1, 4, 9, 10)
    t, l, b, r = pads
    ours = reference.run_op("MAX_POOL2D", [x], dict(kernel_h=k, kernel_w=k, stride_h=s, stride_w=s,
                                                     pad_top=t, pad_left=l, pad_bottom=b, pad_right=r))
    theirs = F.max_pool2d(F.pad(T(x), (l, r, t, b), value=-np.inf), k, s)
    close(ours, theirs)


@pytest.mark.parametrize("include", [0, 1])
@pytest.mark.parametrize("k,s,p", [(2, 2, 0), (3, 2, 1), (3, 1, 1), (5, 3, 2)])
def test_avg_pool2d(k, s, p, include):
    x = randn(1, 4, 11, 10)
    attrs = dict(kernel_h=k, kernel_w=k, stride_h=s, stride_w=s, pad_top=p, pad_left=p, pad_bottom=p,
                 pad_right=p, count_include_pad=include)
    theirs = F.avg_pool2d(T(x), k, s, p, count_include_pad=bool(include))
    close(reference.run_op("AVG_POOL2D", [x], attrs), theirs)


def test_avg_pool2d_asymmetric_excludes_padding():
    # TFLite SAME padding with the extra row/column at the end, divisor = real pixels only.
    x = randn(1, 2, 6, 6)
    attrs = dict(kernel_h=3, kernel_w=3, stride_h=2, stride_w=2, pad_bottom=1, pad_right=1)
    ours = reference.run_op("AVG_POOL2D", [x], attrs)
    summed = F.avg_pool2d(F.pad(T(x), (0, 1, 0, 1)), 3, 2, divisor_override=1)
    counts = F.avg_pool2d(F.pad(torch.ones(1, 1, 6, 6), (0, 1, 0, 1)), 3, 2, divisor_override=1)
    close(ours, summed / counts)


@pytest.mark.parametrize("mask,keep", [(0b1100, 1), (0b1100, 0), (0b0010, 1), (0b1110, 0)])
def test_mean(mask, keep):
    x = randn(1, 3, 5, 7)
    dims = [i for i in range(4) if mask >> i & 1]
    close(reference.run_op("MEAN", [x], dict(axes_mask=mask, keepdims=keep)), T(x).mean(dims, keepdim=bool(keep)))


# -- data movement ---------------------------------------------------------------------

@pytest.mark.parametrize("axis", [1, 2, -1])
def test_concat(axis):
    xs = [randn(1, 2, 3, 4, seed=i) for i in range(3)]
    close(reference.run_op("CONCAT", xs, dict(axis=axis)), torch.cat([T(x) for x in xs], axis))


def test_pad():
    x = randn(1, 3, 4, 5)
    attrs = dict(pad1_begin=0, pad1_end=2, pad2_begin=1, pad2_end=0, pad3_begin=2, pad3_end=1, value=-1.5)
    close(reference.run_op("PAD", [x], attrs), F.pad(T(x), (2, 1, 1, 0, 0, 2), value=-1.5))


def test_reshape_and_transpose():
    x = randn(1, 3, 4, 5)
    close(reference.run_op("RESHAPE", [x], {}, (1, 60)), T(x).reshape(1, 60))
    perm = dict(perm0=0, perm1=2, perm2=3, perm3=1)
    close(reference.run_op("TRANSPOSE", [x], perm), T(x).permute(0, 2, 3, 1))
    with pytest.raises(ValueError):
        reference.run_op("TRANSPOSE", [x], dict(perm0=0, perm1=0, perm2=3, perm3=1))


def test_depth_to_space_crd_is_pixel_shuffle():
    x = randn(1, 12, 3, 4)
    close(reference.run_op("DEPTH_TO_SPACE", [x], dict(block=2, mode=opset.D2S_CRD)), F.pixel_shuffle(T(x), 2))


def _ort_one_node(node_kwargs, op_type, x, out_shape, extra_inputs=()):
    """Runs one ONNX node with onnxruntime (an implementation independent of ours)."""
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper, numpy_helper
    inits = [numpy_helper.from_array(v, n) for n, v in extra_inputs]
    names = ["x"] + [n for n, _ in extra_inputs]
    if op_type == "Resize":
        names = ["x", "", ""] + [n for n, _ in extra_inputs]
    node = helper.make_node(op_type, names, ["y"], **node_kwargs)
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x.shape)],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 7
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})[0]


@pytest.mark.parametrize("size", [1, 2, 3, 5, 8])
def test_lrn(size):
    """Odd and even windows (ONNX puts the extra channel after), and windows wider than C."""
    x = randn(2, 6, 4, 5) * 3
    for a in (dict(size=size, alpha=0.3, beta=0.75, bias=1.5), dict(size=size, alpha=0.1, beta=0.4, bias=2.0)):
        ours = reference.run_op("LRN", [x], a)
        if size % 2:  # onnxruntime takes odd sizes only
            close(ours, _ort_one_node(a, "LRN", x, x.shape))
        # the ONNX definition, channel by channel
        want = np.empty_like(x)
        for c in range(x.shape[1]):
            lo, hi = max(0, c - (size - 1) // 2), min(x.shape[1] - 1, c + size // 2)
            sq = np.square(x[:, lo:hi + 1].astype(np.float64)).sum(axis=1)
            want[:, c] = x[:, c] / (a["bias"] + a["alpha"] / size * sq) ** a["beta"]
        close(ours, want)


def test_sum():
    xs = [randn(1, 3, 4, 5, seed=s) for s in range(4)]
    close(reference.run_op("SUM", xs, {}), T(xs[0]) + T(xs[1]) + T(xs[2]) + T(xs[3]))
    close(reference.run_op("SUM", xs[:2], dict(act=opset.ACT_RELU)), torch.relu(T(xs[0]) + T(xs[1])))
    close(reference.run_op("SUM", xs[:1], {}), T(xs[0]))


def test_depth_to_space_dcr():
    x = randn(1, 18, 3, 4)
    theirs = _ort_one_node(dict(blocksize=3, mode="DCR"), "DepthToSpace", x, (1, 2, 9, 12))
    close(reference.run_op("DEPTH_TO_SPACE", [x], dict(block=3, mode=opset.D2S_DCR)), theirs)


RESIZE_SIZES = [((5, 7), (10, 14)), ((6, 6), (4, 9)), ((4, 5), (12, 11)), ((8, 8), (3, 3))]


@pytest.mark.parametrize("src,dst", RESIZE_SIZES)
@pytest.mark.parametrize("align,half", [(0, 0), (1, 0), (0, 1)])
def test_resize_bilinear(src, dst, align, half):
    x = randn(1, 2, *src)
    out = (1, 2) + dst
    ours = reference.run_op("RESIZE_BILINEAR", [x], dict(align_corners=align, half_pixel_centers=half), out)
    if align:
        theirs = F.interpolate(T(x), size=dst, mode="bilinear", align_corners=True)
    elif half:  # torch's align_corners=False is half-pixel with the source clamped at 0
        theirs = F.interpolate(T(x), size=dst, mode="bilinear", align_corners=False)
    else:
        theirs = _ort_one_node(dict(mode="linear", coordinate_transformation_mode="asymmetric"), "Resize", x, out,
                               [("sizes", np.array(out, np.int64))])
    close(ours, theirs)


@pytest.mark.parametrize("src,dst", RESIZE_SIZES)
@pytest.mark.parametrize("align,half", [(0, 0), (1, 0), (0, 1)])
def test_resize_nearest(src, dst, align, half):
    x = randn(1, 2, *src)
    out = (1, 2) + dst
    ours = reference.run_op("RESIZE_NEAREST", [x], dict(align_corners=align, half_pixel_centers=half), out)
    mode = {(0, 0): ("asymmetric", "floor"), (1, 0): ("align_corners", "round_prefer_ceil"),
            (0, 1): ("tf_half_pixel_for_nn", "floor")}[(align, half)]
    theirs = _ort_one_node(dict(mode="nearest", coordinate_transformation_mode=mode[0], nearest_mode=mode[1]),
                           "Resize", x, out, [("sizes", np.array(out, np.int64))])
    close(ours, theirs)
    if (align, half) == (0, 0) and all(d % s == 0 for s, d in zip(src, dst)):
        close(ours, F.interpolate(T(x), size=dst, mode="nearest"))


def test_every_op_is_covered():
    """Each op in the op set appears in at least one test above (by name in this file)."""
    import inspect
    import sys
    text = inspect.getsource(sys.modules[__name__])
    missing = [op.name for op in opset.OPS if f'"{op.name}"' not in text]
    assert not missing


# -- whole-graph runs ------------------------------------------------------------------

def tiny_graph():
    g = Graph()
    g.add_tensor("x", (1, 2, 4, 4))
    g.inputs = ["x"]
    g.add_constant("w", randn(3, 2, 3, 3))
    g.add_tensor("c", (1, 3, 4, 4))
    g.add_op("CONV2D", ["x", "w", ""], ["c"], name="conv", pad_top=1, pad_left=1, pad_bottom=1, pad_right=1)
    g.add_tensor("r", (1, 3, 4, 4))
    g.add_op("RELU", ["c"], ["r"], name="relu")
    g.add_tensor("m", (1, 3, 1, 1))
    g.add_op("MEAN", ["r"], ["m"], name="gap", axes_mask=0b1100)
    g.add_tensor("y", (1, 3))
    g.add_op("RESHAPE", ["m"], ["y"], name="flatten")
    g.outputs = ["y", "c"]
    g.validate()
    return g


def test_run_graph():
    g = tiny_graph()
    x = randn(1, 2, 4, 4)
    out = reference.run(g, {"x": x})
    c = F.conv2d(T(x), T(g.tensors["w"].data), padding=1)
    close(out["c"], c)
    close(out["y"], F.relu(c).mean((2, 3)))
    assert set(reference.run(g, {"x": x}, keep_all=True)) == {"x", "c", "r", "m", "y"}


@pytest.mark.parametrize("bad", [{"x": np.zeros((1, 2, 4, 5), np.float32)}, {}, {"x": np.zeros((1, 2, 4, 4)), "z": 0}])
def test_run_rejects_bad_inputs(bad):
    with pytest.raises(InputShapeError):
        reference.run(tiny_graph(), bad)
