"""Graph passes: each rewrite happens where it should, not where it must not, and the
rewritten graph computes what the original did (reference executor, |diff| <= 1e-5)."""
import numpy as np
import pytest

from pysparse import opset, passes, reference
from pysparse.ir import Graph

TOL = 1e-5


def randn(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


class Builder:
    """Small helper to write test graphs: each call adds one op and returns its output."""

    def __init__(self, shape=(1, 4, 8, 8)):
        self.g = Graph()
        self.g.add_tensor("x", shape)
        self.g.inputs = ["x"]
        self.n = 0

    def const(self, data):
        self.n += 1
        return self.g.add_constant(f"c{self.n}", np.asarray(data, np.float32))

    def op(self, type_, inputs, shape, **attrs):
        self.n += 1
        out = f"t{self.n}"
        self.g.add_tensor(out, shape)
        self.g.add_op(type_, inputs, [out], name=f"{type_.lower()}{self.n}", **attrs)
        return out

    def done(self, *outputs):
        self.g.outputs = list(outputs)
        self.g.validate()
        return self.g


def same_results(a: Graph, b: Graph, seed=0, scaled=False):
    """Both graphs' outputs on the same random input agree to TOL; `scaled`: to TOL * 10 of
    each output's largest magnitude (a whole model, where a rewrite that reorders sums in
    one layer changes the rounding of every layer after it)."""
    x = {n: randn(*a.tensors[n].shape, seed=seed) for n in a.inputs}
    ra, rb = reference.run(a, x), reference.run(b, x)
    assert set(ra) == set(rb)
    for k in ra:
        if scaled:
            assert np.abs(rb[k] - ra[k]).max() <= 10 * TOL * max(np.abs(ra[k]).max(), 1.0), k
        else:
            np.testing.assert_allclose(rb[k], ra[k], atol=TOL, rtol=TOL)


def types(g):
    return [op.type for op in g.ops]


def conv(b, x, cout=6, cin=4, act=0, bias=True, **attrs):
    w = b.const(randn(cout, cin, 3, 3, seed=b.n))
    bias_name = b.const(randn(cout, seed=b.n + 100)) if bias else ""
    hw = b.g.tensors[x].shape[2:]
    pads = dict(pad_top=1, pad_left=1, pad_bottom=1, pad_right=1)
    pads.update(attrs)
    oh = hw[0] + pads["pad_top"] + pads["pad_bottom"] - 2
    ow = hw[1] + pads["pad_left"] + pads["pad_right"] - 2
    return b.op("CONV2D", [x, w, bias_name], (1, cout, oh, ow), act=act, **pads)


def test_batch_norm_as_mul_add_folds_into_conv():
    b = Builder()
    y = conv(b, "x", bias=False)
    y = b.op("MUL", [y, b.const(randn(1, 6, 1, 1, seed=7))], (1, 6, 8, 8))
    y = b.op("ADD", [y, b.const(randn(1, 6, 1, 1, seed=8))], (1, 6, 8, 8))
    y = b.op("RELU", [y], (1, 6, 8, 8))
    g = b.done(y)
    o = passes.optimize(g)
    assert types(o) == ["CONV2D"]
    assert o.ops[0].attr("act") == opset.ACT_RELU and o.outputs == [y] and o.ops[0].outputs == [y]
    same_results(g, o)


@pytest.mark.parametrize("kind,shape", [("ADD", (1, 6, 1, 1)), ("SUB", (1, 6, 1, 1)), ("MUL", (6, 1, 1)), ("ADD", (1,))])
def test_per_channel_constant_folds(kind, shape):
    b = Builder()
    y = conv(b, "x")
    y = b.op(kind, [y, b.const(randn(*shape, seed=3))], (1, 6, 8, 8))
    g = b.done(y)
    o = passes.fold_constant_scale_shift(g)
    assert types(o) == ["CONV2D"]
    same_results(g, o)
    assert types(g) == ["CONV2D", kind]  # the argument is left alone


def test_fully_connected_and_transpose_conv_absorb_scale():
    b = Builder((1, 3, 4, 4))
    w = b.const(randn(3, 5, 2, 2))
    y = b.op("CONV_TRANSPOSE2D", [("x"), w, ""], (1, 5, 8, 8), stride_h=2, stride_w=2)
    y = b.op("MUL", [b.const(randn(1, 5, 1, 1, seed=2)), y], (1, 5, 8, 8))
    f = b.op("RESHAPE", [y], (1, 320))
    f = b.op("FULLY_CONNECTED", [f, b.const(randn(7, 320, seed=3)), ""], (1, 7))
    f = b.op("ADD", [f, b.const(randn(7, seed=4))], (1, 7))
    g = b.done(f)
    o = passes.optimize(g)
    assert types(o) == ["CONV_TRANSPOSE2D", "RESHAPE", "FULLY_CONNECTED"]
    same_results(g, o)


def test_no_fold_when_not_per_channel_or_shared_or_activated():
    b = Builder()
    y1 = conv(b, "x")
    full = b.op("ADD", [y1, b.const(randn(1, 6, 8, 8, seed=5))], (1, 6, 8, 8))  # per pixel
    y2 = conv(b, "x", act=opset.ACT_RELU)
    relu_then_add = b.op("ADD", [y2, b.const(randn(6, 1, 1, seed=6))], (1, 6, 8, 8))  # act comes first
    y3 = conv(b, "x")
    shared_a = b.op("MUL", [y3, b.const(randn(6, 1, 1, seed=7))], (1, 6, 8, 8))
    shared_b = b.op("RELU", [y3], (1, 6, 8, 8))  # y3 has two readers
    g = b.done(full, relu_then_add, shared_a, shared_b)
    o = passes.optimize(g)
    assert types(o) == types(g)
    same_results(g, o)


@pytest.mark.parametrize("act_op,attrs,code", [("RELU", {}, opset.ACT_RELU),
                                                ("CLIP", dict(min=0.0, max=6.0), opset.ACT_RELU6),
                                                ("CLIP", dict(min=-1.0, max=1.0), opset.ACT_RELU_N1_TO_1)])
@pytest.mark.parametrize("producer", ["CONV2D", "ADD", "MAX_POOL2D"])
def test_fuse_activations(act_op, attrs, code, producer):
    b = Builder()
    if producer == "CONV2D":
        y = conv(b, "x")
    elif producer == "ADD":
        y = b.op("ADD", ["x", b.const(randn(1, 4, 8, 8, seed=1))], (1, 4, 8, 8))
    else:
        y = b.op("MAX_POOL2D", ["x"], (1, 4, 4, 4), kernel_h=2, kernel_w=2, stride_h=2, stride_w=2)
    shape = b.g.tensors[y].shape
    z = b.op(act_op, [y], shape, **attrs)
    g = b.done(z)
    o = passes.fuse_activations(g)
    assert types(o) == [producer] and o.ops[0].attr("act") == code and o.outputs == [z]
    same_results(g, o)


def test_relu_then_relu6_composes_and_outputs_are_kept():
    b = Builder()
    y = conv(b, "x", act=opset.ACT_RELU)
    z = b.op("CLIP", [y], (1, 6, 8, 8), min=0.0, max=6.0)
    w = conv(b, "x")
    r = b.op("RELU", [w], (1, 6, 8, 8))
    g = b.done(z, w, r)  # w is a graph output: its ReLU must stay separate
    o = passes.fuse_activations(g)
    assert types(o) == ["CONV2D", "CONV2D", "RELU"]
    assert o.ops[0].attr("act") == opset.ACT_RELU6
    same_results(g, o)


def test_fold_pad_into_conv_and_avg_pool_but_not_max_pool():
    b = Builder((1, 4, 7, 7))
    p = b.op("PAD", ["x"], (1, 4, 8, 9), pad2_begin=0, pad2_end=1, pad3_begin=2, pad3_end=0)
    c = conv(b, p, pad_top=0, pad_left=0, pad_bottom=0, pad_right=0)  # 3x3 valid -> 6x7
    p2 = b.op("PAD", ["x"], (1, 4, 9, 9), pad2_begin=1, pad2_end=1, pad3_begin=1, pad3_end=1)
    a = b.op("AVG_POOL2D", [p2], (1, 4, 4, 4), kernel_h=3, kernel_w=3, stride_h=2, stride_w=2)
    p3 = b.op("PAD", ["x"], (1, 4, 9, 9), pad2_begin=1, pad2_end=1, pad3_begin=1, pad3_end=1)
    m = b.op("MAX_POOL2D", [p3], (1, 4, 4, 4), kernel_h=3, kernel_w=3, stride_h=2, stride_w=2)
    p4 = b.op("PAD", ["x"], (1, 6, 7, 7), pad1_begin=0, pad1_end=2)  # channel padding
    c4 = conv(b, p4, cin=6)
    g = b.done(c, a, m, c4)
    o = passes.fold_pad(g)
    assert types(o) == ["CONV2D", "AVG_POOL2D", "PAD", "MAX_POOL2D", "PAD", "CONV2D"]
    assert (o.ops[0].attr("pad_bottom"), o.ops[0].attr("pad_left")) == (1, 2)
    assert o.ops[1].attr("count_include_pad") == 1
    same_results(g, o)


def test_fold_pad_into_every_reader_or_none():
    b = Builder((1, 4, 7, 7))
    valid = dict(pad_top=0, pad_left=0, pad_bottom=0, pad_right=0)
    p = b.op("PAD", ["x"], (1, 4, 9, 9), pad2_begin=1, pad2_end=1, pad3_begin=1, pad3_end=1)
    c1, c2 = conv(b, p, **valid), conv(b, p, cout=5, **valid)  # two layers read the padded tensor
    p2 = b.op("PAD", ["x"], (1, 4, 9, 9), pad2_begin=1, pad2_end=1, pad3_begin=1, pad3_end=1)
    c3 = conv(b, p2, **valid)
    m = b.op("MAX_POOL2D", [p2], (1, 4, 4, 4), kernel_h=3, kernel_w=3, stride_h=2, stride_w=2)
    g = b.done(c1, c2, c3, m)
    o = passes.fold_pad(g)
    assert types(o) == ["CONV2D", "CONV2D", "PAD", "CONV2D", "MAX_POOL2D"]  # a max pool keeps its PAD
    assert all(o.ops[i].attr("pad_top") == 1 and o.ops[i].inputs[0] == "x" for i in (0, 1))
    same_results(g, o)


def test_fold_pad_keeps_nonzero_value_and_excluding_avg_pool():
    b = Builder((1, 4, 7, 7))
    p = b.op("PAD", ["x"], (1, 4, 9, 9), pad2_begin=1, pad2_end=1, pad3_begin=1, pad3_end=1, value=1.0)
    c = conv(b, p, pad_top=0, pad_left=0, pad_bottom=0, pad_right=0)
    p2 = b.op("PAD", ["x"], (1, 4, 9, 9), pad2_begin=1, pad2_end=1, pad3_begin=1, pad3_end=1)
    a = b.op("AVG_POOL2D", [p2], (1, 4, 5, 5), kernel_h=3, kernel_w=3, stride_h=2, stride_w=2,
             pad_top=1, pad_left=1, pad_bottom=1, pad_right=1, count_include_pad=0)
    g = b.done(c, a)
    assert types(passes.fold_pad(g)) == types(g)


def test_remove_identities_and_unused():
    b = Builder()
    r = b.op("RESHAPE", ["x"], (1, 4, 8, 8))
    t = b.op("TRANSPOSE", [r], (1, 4, 8, 8))  # identity perm by default
    y = conv(b, t)
    f1 = b.op("RESHAPE", [y], (1, 6, 64))
    f2 = b.op("RESHAPE", [f1], (1, 384))
    dead = b.op("SIGMOID", [y], (1, 6, 8, 8))
    out = b.op("RESHAPE", [f2], (1, 384))  # identity whose output is the graph output
    g = b.done(out)
    o = passes.optimize(g)
    assert types(o) == ["CONV2D", "RESHAPE"]
    assert o.outputs == [out] and o.ops[-1].outputs == [out]
    assert dead not in o.tensors and r not in o.tensors
    same_results(g, o)


def test_identity_from_input_to_output_stays():
    b = Builder()
    y = b.op("RESHAPE", ["x"], (1, 4, 8, 8))
    g = b.done(y)
    o = passes.optimize(g)
    assert types(o) == ["RESHAPE"]
    same_results(g, o)


def test_fold_constants():
    b = Builder((1, 6, 8, 8))
    w = b.op("TRANSPOSE", [b.const(randn(6, 6, 1, 1))], (6, 6, 1, 1), perm0=1, perm1=0)
    s = b.op("MUL", [b.const(randn(6, seed=1)), b.const(randn(6, seed=2))], (6,))
    s4 = b.op("RESHAPE", [s], (1, 6, 1, 1))
    y = b.op("MUL", ["x", s4], (1, 6, 8, 8))
    y = b.op("CONV2D", [y, w, ""], (1, 6, 8, 8))
    g = b.done(y)
    o = passes.optimize(g)
    assert types(o) == ["MUL", "CONV2D"]
    assert all(o.tensors[i].is_constant for i in (o.ops[0].inputs[1], o.ops[1].inputs[1]))
    same_results(g, o)


def test_optimize_real_models_unchanged(models_dir):
    from pysparse.importers.tflite import load_tflite
    g = load_tflite(models_dir / "palm_detection_lite.tflite")
    o = passes.optimize(g)
    same_results(g, o, scaled=True)  # its upsampling moved after 1x1 convolutions


def test_onnx_batch_norm_model():
    """An ONNX Conv -> BatchNormalization -> Relu (the importer emits MUL/ADD for BN)
    becomes one CONV2D with ReLU; results match onnxruntime on the original."""
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper, numpy_helper
    from pysparse.importers import load_model
    w, bias = randn(8, 3, 3, 3), randn(8, seed=1)
    scale, shift, mean, var = randn(8, seed=2), randn(8, seed=3), randn(8, seed=4), np.abs(randn(8, seed=5)) + 0.5
    inits = [numpy_helper.from_array(v, n) for n, v in
             [("w", w), ("b", bias), ("s", scale), ("sh", shift), ("m", mean), ("v", var)]]
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("BatchNormalization", ["c", "s", "sh", "m", "v"], ["n"], epsilon=1e-3),
             helper.make_node("Relu", ["n"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 10, 10])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 10, 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 7
    data = model.SerializeToString()
    g = passes.optimize(load_model(data))
    assert types(g) == ["CONV2D"] and g.ops[0].attr("act") == opset.ACT_RELU
    x = randn(1, 3, 10, 10, seed=9)
    ours = reference.run(g, {g.inputs[0]: x})[g.outputs[0]]
    theirs = ort.InferenceSession(data, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(ours, theirs, atol=1e-4, rtol=1e-4)


def test_with_batch_runs_each_image_as_batch_one(models_dir):
    """hand_landmark_lite with a batch of 2: the reference and the engine give each image
    what a batch-1 run gives it (the engine bit for bit)."""
    from engine_native import NativeModel
    from pysparse.importers.tflite import load_tflite
    from pysparse.pack import pack
    g = passes.optimize(load_tflite(models_dir / "hand_landmark_lite.tflite"))
    g2 = passes.with_batch(g, 2)
    name = g.inputs[0]
    assert g2.tensors[name].shape == (2,) + g.tensors[name].shape[1:]
    rng = np.random.default_rng(0)
    xs = [rng.random(g.tensors[name].shape, np.float32) for _ in range(2)]
    x2 = np.concatenate(xs)
    ones = [reference.run(g, {name: x}) for x in xs]
    both = reference.run(g2, {name: x2})
    for out in g.outputs:
        np.testing.assert_allclose(both[out], np.concatenate([o[out] for o in ones]), rtol=1e-6, atol=1e-6)
    with NativeModel(pack(g), 1) as m1, NativeModel(pack(g2), 1) as m2:
        ones = [m1.run([x]) for x in xs]
        both = m2.run([x2])
    for k, b in enumerate(both):
        assert np.array_equal(b.reshape(2, -1), np.concatenate([o[k].reshape(1, -1) for o in ones]))


def test_with_batch_refuses_ops_across_the_batch():
    from pysparse.errors import InputShapeError, UnsupportedOpError
    g = Graph()
    g.add_tensor("x", (1, 3, 4))
    g.inputs = ["x"]
    g.add_tensor("y", (2, 3, 4))
    g.add_op("CONCAT", ["x", "x"], ["y"], name="cat", axis=0)
    g.outputs = ["y"]
    with pytest.raises(InputShapeError, match="batch-1"):
        passes.with_batch(g, 2)
    g.tensors["y"].shape = (1, 6, 4)
    g.ops[0].attrs["axis"] = 1
    assert passes.with_batch(g, 3).tensors["y"].shape == (3, 6, 4)
    g.ops[0].type, g.ops[0].attrs, g.tensors["y"].shape = "MEAN", {"axes_mask": 0b011}, (1, 1, 4)
    g.ops[0].inputs = ["x"]
    with pytest.raises(UnsupportedOpError, match="batch axis"):
        passes.with_batch(g, 2)
    with pytest.raises(ValueError):
        passes.with_batch(g, 0)


def _resize_then_pointwise(resize="RESIZE_BILINEAR", cin=12, cout=5, hw=(4, 6), out_hw=(8, 12), act=2,
                           extra_reader=False, **resize_attrs):
    b = Builder((1, cin) + hw)
    up = b.op(resize, ["x"], (1, cin) + out_hw, **resize_attrs)
    w, bias = b.const(randn(cout, cin, 1, 1, seed=3)), b.const(randn(cout, seed=4))
    y = b.op("CONV2D", [up, w, bias], (1, cout) + out_hw, act=act)
    return b.done(y, up) if extra_reader else b.done(y)


@pytest.mark.parametrize("resize,attrs", [("RESIZE_BILINEAR", dict(half_pixel_centers=1)),
                                          ("RESIZE_BILINEAR", dict(align_corners=1)),
                                          ("RESIZE_BILINEAR", {}), ("RESIZE_NEAREST", {})])
@pytest.mark.parametrize("act,after", [(opset.ACT_RELU6, ["CLIP"]), (opset.ACT_RELU, ["RELU"]),
                                       (opset.ACT_NONE, [])])
def test_pointwise_moves_before_an_upsampling_resize(resize, attrs, act, after):
    """resize -> 1x1 conv becomes 1x1 conv on the small plane -> resize -> the conv's
    activation: the same values (every resized pixel's weights add up to 1, so the bias
    passes through), the same weights, the same output names."""
    g = _resize_then_pointwise(resize, act=act, **attrs)
    o = passes.pointwise_before_resize(g)
    assert types(o) == ["CONV2D", resize] + after
    conv = o.ops[0]
    assert conv.inputs[:2] == ["x", g.ops[1].inputs[1]] and conv.attr("act") == opset.ACT_NONE
    assert o.tensors[conv.outputs[0]].shape == (1, 5, 4, 6) and o.outputs == g.outputs
    o.validate()
    same_results(g, o)


def test_pointwise_stays_after_a_resize_it_would_not_gain_from_or_cannot_move_past():
    cases = {
        "downsampling": _resize_then_pointwise(hw=(8, 12), out_hw=(4, 6)),
        "resize output read elsewhere too": _resize_then_pointwise(extra_reader=True),
        "far more output than input channels": _resize_then_pointwise(cin=2, cout=64, hw=(6, 6), out_hw=(7, 7)),
    }
    b = Builder((1, 4, 4, 4))
    up = b.op("RESIZE_BILINEAR", ["x"], (1, 4, 8, 8))
    cases["3x3 convolution"] = b.done(conv(b, up))
    for why, g in cases.items():
        assert types(passes.pointwise_before_resize(g)) == types(g), why


def test_optimize_moves_blazepose_projections_before_their_upsampling(models_dir):
    """MediaPipe's pose detector upsamples 1152 channels 7x7 -> 14x14 and 192 channels
    14x14 -> 28x28 before 1x1 projections with ReLU6: both move before their resize."""
    from pysparse import assets
    from pysparse.importers import load_model
    g = load_model(assets.model_path("pose_detection.tflite"))
    o = passes.optimize(g)
    moved = [(o.tensors[op.inputs[0]].shape, o.ops[i + 1].type) for i, op in enumerate(o.ops)
             if op.type == "RESIZE_BILINEAR"]
    assert moved == [((1, 192, 7, 7), "CLIP"), ((1, 96, 14, 14), "CLIP")]
    same_results(g, o, scaled=True)
