"""ONNX importer: every supported op, built as a small ONNX graph, imported and run by the
numpy reference (as imported, and after passes.optimize), against onnxruntime on the same
seeded inputs.

Tolerance: max |pysparse - onnxruntime| <= 1e-5 * max(1, max |onnxruntime|) per output
(float32 arithmetic in both; the reference accumulates in float64).
"""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from pysparse import passes, reference
from pysparse.errors import InputShapeError, ModelFormatError, PysparseError, UnsupportedOpError
from pysparse.importers import load_model
from pysparse.importers.onnx import load_onnx

RTOL = 1e-5


def make_model(nodes, inputs: dict, outputs, consts: dict | None = None, opset: int = 17):
    """A model of `nodes`; inputs name -> shape (float32), consts name -> array (initializers)."""
    graph = helper.make_graph(
        nodes, "test",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs.items()],
        [helper.make_empty_tensor_value_info(n) for n in outputs],
        [numpy_helper.from_array(np.asarray(v), n) for n, v in (consts or {}).items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    model = onnx.shape_inference.infer_shapes(model)  # gives the outputs their types
    onnx.checker.check_model(model)
    return model


def feeds_for(model, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    out = {}
    inits = {t.name for t in model.graph.initializer}
    for v in model.graph.input:
        if v.name not in inits:
            shape = [d.dim_value for d in v.type.tensor_type.shape.dim]
            out[v.name] = rng.standard_normal(shape).astype(np.float32) * 2
    return out


def run_ort(model, feeds: dict) -> dict:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, feeds)))


def assert_matches_ort(model, seed: int = 0, rtol: float = RTOL, **load_kw):
    feeds = feeds_for(model, seed)
    expected = run_ort(model, feeds)
    graph = load_onnx(model, **load_kw)
    for g, what in ((graph, "imported"), (passes.optimize(graph), "optimized")):
        got = reference.run(g, feeds)
        assert set(got) == set(expected)
        for name, want in expected.items():
            assert got[name].shape == want.shape, name
            err = float(np.max(np.abs(got[name] - want))) if want.size else 0.0
            assert err <= rtol * max(1.0, float(np.max(np.abs(want)))), f"{what} {name}: max abs error {err}"
    return graph


def rand(*shape, seed=1, scale=0.5):
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(np.float32)


_names = iter(range(1 << 30))


def node(op, inputs, outputs, **attrs):
    return helper.make_node(op, inputs, outputs, name=f"{op.lower()}_{next(_names)}", **attrs)


def conv_model(x_shape, w_shape, groups=1, bias=True, **attrs):
    ins = ["x", "w"] + (["b"] if bias else [])
    consts = {"w": rand(*w_shape)}
    if bias:
        consts["b"] = rand(w_shape[0], seed=2)
    return make_model([node("Conv", ins, ["y"], group=groups, **attrs)], {"x": x_shape}, ["y"], consts)


# -- convolutions ----------------------------------------------------------------------

CONV_CASES = {
    "3x3_pad1": (conv_model((1, 3, 9, 9), (8, 3, 3, 3), pads=[1, 1, 1, 1]), "CONV2D"),
    "grouped": (conv_model((1, 6, 8, 8), (4, 3, 3, 3), groups=2, pads=[1, 1, 1, 1]), "CONV2D"),
    "depthwise_stride2": (conv_model((1, 5, 9, 9), (5, 1, 3, 3), groups=5, strides=[2, 2], pads=[1, 1, 1, 1]), "CONV2D"),
    "asymmetric_pads": (conv_model((1, 3, 7, 8), (4, 3, 3, 3), pads=[0, 1, 2, 1], bias=False), "CONV2D"),
    "same_upper_stride2": (conv_model((1, 3, 8, 8), (4, 3, 3, 3), strides=[2, 2], auto_pad="SAME_UPPER"), "CONV2D"),
    "same_lower_stride2": (conv_model((1, 3, 8, 8), (4, 3, 3, 3), strides=[2, 2], auto_pad="SAME_LOWER"), "CONV2D"),
    "same_upper_5x5": (conv_model((1, 2, 7, 6), (3, 2, 5, 5), auto_pad="SAME_UPPER"), "CONV2D"),
    "valid_dilated": (conv_model((1, 3, 11, 11), (4, 3, 3, 3), dilations=[2, 2], auto_pad="VALID"), "CONV2D"),
    "pointwise": (conv_model((1, 16, 5, 5), (24, 16, 1, 1)), "CONV2D"),
    "conv_transpose": (make_model(
        [node("ConvTranspose", ["x", "w", "b"], ["y"], strides=[2, 2], pads=[1, 1, 1, 1], output_padding=[1, 1])],
        {"x": (1, 4, 5, 5)}, ["y"], {"w": rand(4, 3, 3, 3), "b": rand(3, seed=2)}), "CONV_TRANSPOSE2D"),
    "conv_transpose_2x2": (make_model(
        [node("ConvTranspose", ["x", "w"], ["y"], strides=[2, 2])],
        {"x": (1, 4, 5, 6)}, ["y"], {"w": rand(4, 3, 2, 2)}), "CONV_TRANSPOSE2D"),
}


@pytest.mark.parametrize("case", CONV_CASES)
def test_conv(case):
    model, op_type = CONV_CASES[case]
    graph = assert_matches_ort(model)
    assert [op.type for op in graph.ops] == [op_type]


def test_conv_transpose_output_padding_past_the_end_pads():
    """The rows and columns past the end pad hold the bias alone."""
    model = make_model(
        [node("ConvTranspose", ["x", "w", "b"], ["y"], strides=[3, 2], pads=[1, 0, 0, 0], output_padding=[2, 1])],
        {"x": (2, 4, 5, 5)}, ["y"], {"w": rand(4, 2, 3, 3), "b": rand(2, seed=2)})
    graph = assert_matches_ort(model)
    assert [o.type for o in graph.ops] == ["CONV_TRANSPOSE2D", "PAD", "ADD"]


def test_conv_pads_resolved():
    graph = load_onnx(CONV_CASES["same_upper_stride2"][0])
    a = graph.ops[0].attrs  # 8 -> 4 with k3 s2: total pad 1, SAME_UPPER puts it at the end
    assert (a["pad_top"], a["pad_bottom"], a["pad_left"], a["pad_right"]) == (0, 1, 0, 1)
    graph = load_onnx(CONV_CASES["same_lower_stride2"][0])
    a = graph.ops[0].attrs
    assert (a["pad_top"], a["pad_bottom"], a["pad_left"], a["pad_right"]) == (1, 0, 1, 0)


def test_batchnorm_after_conv():
    c = 6
    rng = np.random.default_rng(3)
    consts = {"w": rand(c, 3, 3, 3), "scale": rng.uniform(0.5, 2, c).astype(np.float32),
              "bias": rng.standard_normal(c).astype(np.float32),
              "mean": rng.standard_normal(c).astype(np.float32),
              "var": rng.uniform(0.2, 3, c).astype(np.float32)}
    model = make_model([node("Conv", ["x", "w"], ["h"], pads=[1, 1, 1, 1]),
                        node("BatchNormalization", ["h", "scale", "bias", "mean", "var"], ["y"], epsilon=1e-3)],
                       {"x": (1, 3, 6, 6)}, ["y"], consts)
    graph = assert_matches_ort(model)
    assert [op.type for op in graph.ops] == ["CONV2D", "MUL", "ADD"]
    assert graph.tensors[graph.ops[1].inputs[1]].shape == (1, c, 1, 1)
    assert [op.type for op in passes.optimize(graph).ops] == ["CONV2D"]  # folded into the conv


# -- matrix products -------------------------------------------------------------------

def test_gemm_trans_b_bias():
    model = make_model([node("Gemm", ["x", "w", "c"], ["y"], transB=1)], {"x": (1, 10)}, ["y"],
                       {"w": rand(7, 10), "c": rand(7, seed=2)})
    graph = assert_matches_ort(model)
    assert [op.type for op in graph.ops] == ["FULLY_CONNECTED"]


def test_gemm_trans_a_alpha_beta():
    model = make_model([node("Transpose", ["x"], ["xt"], perm=[1, 0]),
                        node("Gemm", ["xt", "w", "c"], ["y"], transA=1, alpha=0.5, beta=2.0)],
                       {"x": (1, 10)}, ["y"], {"w": rand(10, 7), "c": rand(1, 7, seed=2)})
    assert_matches_ort(model)


def test_gemm_no_bias_and_runtime_c():
    model = make_model([node("Gemm", ["x", "w"], ["h"]),
                        node("Gemm", ["x", "w2", "h"], ["y"], beta=0.5)],
                       {"x": (1, 10)}, ["y"], {"w": rand(10, 10), "w2": rand(10, 10, seed=3)})
    assert_matches_ort(model)


def test_matmul_constant_weight_2d_and_3d():
    model = make_model([node("MatMul", ["x", "w"], ["y"])], {"x": (1, 12)}, ["y"], {"w": rand(12, 5)})
    assert_matches_ort(model)
    model = make_model([node("MatMul", ["x", "w"], ["y"])], {"x": (1, 4, 12)}, ["y"], {"w": rand(12, 5)})
    graph = assert_matches_ort(model)
    assert [op.type for op in graph.ops] == ["RESHAPE", "FULLY_CONNECTED", "RESHAPE"]


def test_products_of_two_activations():
    model = make_model([node("Reshape", ["z", "shape"], ["z2"]), node("MatMul", ["x", "z2"], ["y"])],
                       {"x": (2, 4), "z": (1, 12)}, ["y"], {"shape": np.array([4, 3], np.int64)})
    assert [o.type for o in assert_matches_ort(model).ops] == ["RESHAPE", "MATMUL"]
    model = make_model([node("Gemm", ["x", "z", "c"], ["y"], transA=1, alpha=0.5, beta=2.0)],
                       {"x": (4, 2), "z": (4, 3), "c": (1, 3)}, ["y"])
    assert [o.type for o in assert_matches_ort(model).ops] == ["TRANSPOSE", "MATMUL", "MUL", "MUL", "ADD"]
    model = make_model([node("Gemm", ["x", "z"], ["y"], transB=1)], {"x": (2, 4), "z": (3, 4)}, ["y"])
    assert [o.type for o in assert_matches_ort(model).ops] == ["TRANSPOSE", "MATMUL"]
    model = make_model([node("MatMul", ["x", "z"], ["y"])], {"x": (2, 2, 4), "z": (2, 4, 3)}, ["y"])
    with pytest.raises(UnsupportedOpError, match="2-D"):
        load_onnx(model)


# -- elementwise -------------------------------------------------------------------------

X4 = (1, 4, 5, 6)
UNARY_CASES = {
    "Relu": ({}, "RELU"),
    "Sigmoid": ({}, "SIGMOID"),
    "Tanh": ({}, "TANH"),
    "HardSwish": ({}, "HARD_SWISH"),
    "HardSigmoid": ({"alpha": 0.3, "beta": 0.4}, "HARD_SIGMOID"),
    "LeakyRelu": ({"alpha": 0.2}, "LEAKY_RELU"),
    "Softmax": ({"axis": 1}, "SOFTMAX"),
    "GlobalAveragePool": ({}, "MEAN"),
    "GlobalMaxPool": ({}, "MAX_POOL2D"),
    "Abs": ({}, "ABS"),
    "Exp": ({}, "EXP"),
    "Softplus": ({}, "SOFTPLUS"),
    "Elu": ({"alpha": 0.6}, "ELU"),
    "Selu": ({}, "ELU"),
    "LogSoftmax": ({"axis": 1}, "LOG_SOFTMAX"),
}


@pytest.mark.parametrize("op", UNARY_CASES)
def test_unary(op):
    attrs, ir_type = UNARY_CASES[op]
    graph = assert_matches_ort(make_model([node(op, ["x"], ["y"], **attrs)], {"x": X4}, ["y"]))
    assert [o.type for o in graph.ops] == [ir_type]


def test_clip_min_max_inputs():
    model = make_model([node("Clip", ["x", "lo", "hi"], ["y"])], {"x": X4}, ["y"],
                       {"lo": np.array(0, np.float32), "hi": np.array(6, np.float32)})
    graph = assert_matches_ort(model)
    assert graph.ops[0].attrs == {"min": 0.0, "max": 6.0}
    model = make_model([node("Clip", ["x", "", "hi"], ["y"])], {"x": X4}, ["y"], {"hi": np.array(0.5, np.float32)})
    assert_matches_ort(model)


def test_prelu_per_channel_slope():
    model = make_model([node("PRelu", ["x", "s"], ["y"])], {"x": X4}, ["y"], {"s": rand(4, 1, 1, seed=5)})
    graph = assert_matches_ort(model)
    assert [o.type for o in graph.ops] == ["PRELU"]


def test_prelu_before_opset_7_is_per_channel():
    slope = rand(4, seed=5)
    model = make_model([node("PRelu", ["x", "s"], ["y"])], {"x": X4}, ["y"], {"s": slope}, opset=6)
    x = feeds_for(model)["x"]
    got = reference.run(load_onnx(model), {"x": x})["y"]
    np.testing.assert_allclose(got, np.where(x >= 0, x, slope.reshape(4, 1, 1) * x), rtol=1e-6)


@pytest.mark.parametrize("op", ["Add", "Mul", "Sub", "Div"])
def test_binary_broadcast_constant(op):
    c = rand(1, 4, 1, 1, seed=7) + 2  # away from zero for Div
    model = make_model([node(op, ["x", "c"], ["y"])], {"x": X4}, ["y"], {"c": c})
    assert_matches_ort(model)
    model = make_model([node(op, ["c", "x"], ["y"])], {"x": X4}, ["y"], {"c": c})  # constant first
    assert_matches_ort(model)


@pytest.mark.parametrize("op", ["Add", "Mul"])
def test_binary_two_activations_broadcast(op):
    # The squeeze-and-excitation shape: [1, C, H, W] op [1, C, 1, 1].
    model = make_model([node("GlobalAveragePool", ["x"], ["g"]), node(op, ["x", "g"], ["y"])],
                       {"x": X4}, ["y"])
    assert_matches_ort(model)
    model = make_model([node(op, ["x", "z"], ["y"])], {"x": X4, "z": (1, 1, 5, 1)}, ["y"])
    assert_matches_ort(model)


@pytest.mark.parametrize("size", [3, 5])
def test_lrn(size):
    model = make_model([node("LRN", ["x"], ["y"], size=size, alpha=0.2, beta=0.75, bias=2.0)], {"x": X4}, ["y"])
    graph = assert_matches_ort(model)
    assert [o.type for o in graph.ops] == ["LRN"]


def test_sum_same_shapes_is_one_op_and_relu_fuses():
    model = make_model([node("Sum", ["x", "z", "c"], ["s"]), node("Relu", ["s"], ["y"])],
                       {"x": X4, "z": X4}, ["y"], {"c": rand(*X4, seed=3)})
    graph = assert_matches_ort(model)
    assert [o.type for o in graph.ops] == ["SUM", "RELU"]
    assert [o.type for o in passes.optimize(graph).ops] == ["SUM"]


def test_sum_broadcast_and_single_input():
    model = make_model([node("Sum", ["x", "c", "z"], ["y"])], {"x": X4, "z": (1, 1, 5, 1)}, ["y"],
                       {"c": rand(1, 4, 1, 1, seed=3)})
    graph = assert_matches_ort(model)
    assert [o.type for o in graph.ops] == ["ADD", "ADD"]
    model = make_model([node("Sum", ["x"], ["s"]), node("Relu", ["s"], ["y"])], {"x": X4}, ["y"])
    assert [o.type for o in assert_matches_ort(model).ops] == ["RELU"]


def test_dropout_is_identity_with_a_declared_mask():
    model = make_model([node("Dropout", ["x"], ["d", "mask"]), node("Relu", ["d"], ["y"])], {"x": X4}, ["y"])
    assert [o.type for o in assert_matches_ort(model).ops] == ["RELU"]
    read = make_model([node("Dropout", ["x"], ["d", "mask"]), node("Cast", ["mask"], ["y"], to=TensorProto.FLOAT)],
                      {"x": X4}, ["y"])
    with pytest.raises(UnsupportedOpError, match="mask"):
        load_onnx(read)


def test_weights_built_from_a_shape_need_a_raised_element_bound():
    """ONNX's "light" zoo models make their weights with ConstantOfShape: past the default
    bound an import refuses them, and max_elements lets a trusted file through."""
    from pysparse.errors import ResourceLimitError
    value = numpy_helper.from_array(np.array([0.01], np.float32))
    nodes = [node("ConstantOfShape", ["wshape"], ["w"], value=value), node("Conv", ["x", "w"], ["y"])]
    model = make_model(nodes, {"x": (1, 1200, 1, 1)}, ["y"], {"wshape": np.array([4000, 1200, 1, 1], np.int64)})
    with pytest.raises(ResourceLimitError):
        load_model(model.SerializeToString())
    graph = load_model(model.SerializeToString(), max_elements=5_000_000)
    assert graph.tensors[graph.ops[0].inputs[1]].data.shape == (4000, 1200, 1, 1)


@pytest.mark.parametrize("attrs", [dict(pads=[1, 2]), dict(strides=[2], dilations=[2]), dict(auto_pad="SAME_UPPER")])
def test_conv_1d_as_2d(attrs):
    model = make_model([node("Conv", ["x", "w", "b"], ["y"], group=2, **attrs)], {"x": (2, 4, 11)}, ["y"],
                       {"w": rand(6, 2, 3), "b": rand(6, seed=2)})
    graph = assert_matches_ort(model)
    assert [o.type for o in graph.ops] == ["RESHAPE", "CONV2D", "RESHAPE"]


@pytest.mark.parametrize("attrs", [dict(pads=[1, 0, 1, 2, 1, 0]), dict(strides=[2, 1, 2], dilations=[2, 1, 1]),
                                   dict(group=2, pads=[0, 1, 1, 0, 1, 1])])
def test_conv_3d_over_depth_slices(attrs):
    groups = attrs.get("group", 1)
    model = make_model([node("Conv", ["x", "w", "b"], ["y"], **attrs)], {"x": (2, 4, 7, 6, 5)}, ["y"],
                       {"w": rand(6, 4 // groups, 3, 2, 3), "b": rand(6, seed=2)})
    assert_matches_ort(model)


@pytest.mark.parametrize("op,attrs", [("MaxPool", dict(kernel_shape=[3, 2, 2], strides=[2, 1, 2], pads=[1, 0, 1, 1, 1, 0])),
                                      ("AveragePool", dict(kernel_shape=[3, 3, 2], pads=[1, 1, 0, 1, 0, 1])),
                                      ("AveragePool", dict(kernel_shape=[2, 2, 2], strides=[2, 2, 2],
                                                           pads=[1, 1, 1, 0, 0, 0], count_include_pad=1))])
def test_pool_3d_over_depth_slices(op, attrs):
    assert_matches_ort(make_model([node(op, ["x"], ["y"], **attrs)], {"x": (2, 3, 6, 5, 7)}, ["y"]))


@pytest.mark.parametrize("shape,attrs", [
    ((2, 3, 13, 14), dict(kernel_shape=[3, 3], dilations=[2, 3], strides=[2, 3], pads=[1, 2, 2, 0])),
    ((1, 2, 23), dict(kernel_shape=[3], dilations=[2], strides=[4], pads=[1, 1], ceil_mode=1))])
def test_dilated_max_pool_with_strides_of_the_dilation(shape, attrs):
    graph = assert_matches_ort(make_model([node("MaxPool", ["x"], ["y"], **attrs)], {"x": shape}, ["y"]))
    assert "SLICE" in [o.type for o in graph.ops]


@pytest.mark.parametrize("op,attrs", [("MaxPool", dict(kernel_shape=[3], strides=[2], pads=[1, 1])),
                                      ("AveragePool", dict(kernel_shape=[2], pads=[0, 1]))])
def test_pool_1d_as_2d(op, attrs):
    assert_matches_ort(make_model([node(op, ["x"], ["y"], **attrs)], {"x": (3, 2, 9)}, ["y"]))


@pytest.mark.parametrize("keepdims", [0, 1])
def test_reduce_sum_and_neg(keepdims):
    model = make_model([node("ReduceSum", ["x", "axes"], ["s"], keepdims=keepdims), node("Neg", ["s"], ["y"])],
                       {"x": X4}, ["y"], {"axes": np.array([1, 3], np.int64)}, opset=13)
    assert_matches_ort(model)


def test_max_min_pow_sqrt():
    model = make_model([node("Max", ["x", "c", "z"], ["m"]), node("Min", ["m", "c"], ["n"]),
                        node("Abs", ["n"], ["a"]), node("Sqrt", ["a"], ["r"]), node("Pow", ["r", "p"], ["y"])],
                       {"x": X4, "z": (1, 1, 5, 1)}, ["y"],
                       {"c": rand(1, 4, 1, 1, seed=3), "p": np.array([1.5], np.float32)})
    graph = assert_matches_ort(model)
    assert [o.type for o in graph.ops] == ["MAX", "MAX", "MIN", "ABS", "SQRT", "POW"]


def slice_split_model(starts, ends):
    return make_model([node("Slice", ["x", "st", "en", "ax", "sp"], ["s"]),
                       node("Split", ["s", "parts"], ["a", "b"], axis=1), node("Add", ["a", "b"], ["y"])],
                      {"x": (2, 6, 5, 7)}, ["y"],
                      {"st": np.array(starts, np.int64), "en": np.array(ends, np.int64),
                       "ax": np.array([0, 1, 3], np.int64), "sp": np.array([1, 1, 2], np.int64),
                       "parts": np.array([2, 2], np.int64)})


def test_slice_and_split():
    graph = assert_matches_ort(slice_split_model([-1, 2, 1], [100, 100, 100]))
    assert [o.type for o in graph.ops] == ["SLICE", "SLICE", "SLICE", "SLICE", "SLICE", "ADD"]
    graph = assert_matches_ort(slice_split_model([0, 2, 0], [2, 100, 7]))  # the batch stays whole
    assert [o.type for o in graph.ops] == ["SLICE", "SLICE", "SLICE", "SLICE", "ADD"]


def test_tile_and_instance_normalization():
    model = make_model([node("Tile", ["x", "r"], ["t"]), node("InstanceNormalization", ["t", "s", "b"], ["y"])],
                       {"x": X4}, ["y"], {"r": np.array([2, 1, 1, 3], np.int64), "s": rand(4, seed=4),
                                          "b": rand(4, seed=5)})
    assert_matches_ort(model)


# -- reductions and pooling --------------------------------------------------------------

def test_reduce_mean_axes_attribute_and_input():
    model = make_model([node("ReduceMean", ["x"], ["y"], axes=[2, 3], keepdims=0)], {"x": X4}, ["y"], opset=17)
    graph = assert_matches_ort(model)
    assert graph.ops[0].attrs == {"axes_mask": 0b1100, "keepdims": 0}
    model = make_model([node("ReduceMean", ["x", "axes"], ["y"])], {"x": X4}, ["y"],
                       {"axes": np.array([-1, 1], np.int64)}, opset=18)
    graph = assert_matches_ort(model)
    assert graph.ops[0].attrs == {"axes_mask": 0b1010, "keepdims": 1}


POOL_CASES = {
    "max_3x3_s2_pad1": ("MaxPool", dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])),
    "max_2x2": ("MaxPool", dict(kernel_shape=[2, 2], strides=[2, 2])),
    "max_same_upper": ("MaxPool", dict(kernel_shape=[3, 3], strides=[2, 2], auto_pad="SAME_UPPER")),
    "max_ceil_mode": ("MaxPool", dict(kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1)),
    "avg_exclude_pad": ("AveragePool", dict(kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1])),
    "avg_include_pad": ("AveragePool", dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 0, 1, 2], count_include_pad=1)),
    "avg_same_lower": ("AveragePool", dict(kernel_shape=[2, 2], strides=[2, 2], auto_pad="SAME_LOWER")),
}


@pytest.mark.parametrize("case", POOL_CASES)
def test_pool(case):
    op, attrs = POOL_CASES[case]
    assert_matches_ort(make_model([node(op, ["x"], ["y"], **attrs)], {"x": (1, 3, 8, 7)}, ["y"]))


def test_avg_pool_ceil_mode_is_unsupported():
    model = make_model([node("AveragePool", ["x"], ["y"], kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1)],
                       {"x": (1, 3, 8, 8)}, ["y"])
    with pytest.raises(UnsupportedOpError, match="ceil_mode"):
        load_onnx(model)


# -- data movement -----------------------------------------------------------------------

def test_concat_with_constant():
    model = make_model([node("Relu", ["x"], ["r"]), node("Concat", ["x", "r", "c"], ["y"], axis=-3)],
                       {"x": X4}, ["y"], {"c": rand(1, 2, 5, 6)})
    graph = assert_matches_ort(model)
    assert graph.ops[-1].attrs == {"axis": 1}


def test_pad_constant():
    model = make_model([node("Pad", ["x", "p", "v"], ["y"])], {"x": X4}, ["y"],
                       {"p": np.array([0, 0, 1, 2, 0, 0, 3, 0], np.int64), "v": np.array(0.5, np.float32)})
    assert_matches_ort(model)
    model = make_model([node("Pad", ["x", "p", "", "axes"], ["y"])], {"x": X4}, ["y"],
                       {"p": np.array([1, 2, 0, 1], np.int64), "axes": np.array([2, 3], np.int64)}, opset=18)
    assert_matches_ort(model)


@pytest.mark.parametrize("mode", ["reflect", "edge"])
def test_pad_reflect_and_edge(mode):
    model = make_model([node("Pad", ["x", "p"], ["y"], mode=mode)], {"x": X4}, ["y"],
                       {"p": np.array([0, 1, 3, 2, 0, 2, 4, 5], np.int64)})
    graph = assert_matches_ort(model)
    assert [o.type for o in graph.ops] == ["PAD_REFLECT"]


def test_pad_wrap_and_too_wide_reflect_unsupported():
    model = make_model([node("Pad", ["x", "p"], ["y"], mode="wrap")], {"x": X4}, ["y"],
                       {"p": np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64)}, opset=19)
    with pytest.raises(UnsupportedOpError, match="wrap"):
        load_onnx(model)
    model = make_model([node("Pad", ["x", "p"], ["y"], mode="reflect")], {"x": X4}, ["y"],
                       {"p": np.array([0, 0, 5, 0, 0, 0, 0, 0], np.int64)})
    with pytest.raises(UnsupportedOpError, match="reflect"):
        load_onnx(model)


def resize_model(in_hw, mode, ctm, out_hw=None, scale=None, nearest_mode=None):
    attrs = dict(mode=mode, coordinate_transformation_mode=ctm)
    if nearest_mode:
        attrs["nearest_mode"] = nearest_mode
    if out_hw is not None:
        consts = {"sizes": np.array((1, 3) + tuple(out_hw), np.int64)}
        inputs = ["x", "", "", "sizes"]
    else:
        consts = {"scales": np.array([1, 1, scale, scale], np.float32)}
        inputs = ["x", "", "scales"]
    return make_model([node("Resize", inputs, ["y"], **attrs)], {"x": (1, 3) + tuple(in_hw)}, ["y"], consts)


RESIZE_CASES = {
    "linear_half_pixel_x2": (resize_model((5, 6), "linear", "half_pixel", scale=2.0), (0, 1)),
    "linear_pytorch_half_pixel": (resize_model((5, 6), "linear", "pytorch_half_pixel", out_hw=(9, 13)), (0, 1)),
    "linear_align_corners": (resize_model((5, 6), "linear", "align_corners", out_hw=(9, 11)), (1, 0)),
    "linear_asymmetric": (resize_model((5, 6), "linear", "asymmetric", scale=2.0), (0, 0)),
    "linear_half_pixel_down": (resize_model((8, 9), "linear", "half_pixel", out_hw=(5, 4)), (0, 1)),
    "nearest_asymmetric_floor": (resize_model((5, 6), "nearest", "asymmetric", scale=2.0, nearest_mode="floor"), (0, 0)),
    "nearest_half_pixel_x2": (resize_model((5, 6), "nearest", "half_pixel", scale=2.0), (0, 1)),
    # Halving with round_prefer_floor picks pixel 2y, as TFLite's asymmetric sampling does.
    "nearest_half_pixel_down": (resize_model((8, 10), "nearest", "half_pixel", out_hw=(4, 5)), (0, 0)),
    "nearest_tf_half_pixel": (resize_model((5, 6), "nearest", "tf_half_pixel_for_nn", out_hw=(8, 13), nearest_mode="floor"), (0, 1)),
    "nearest_align_corners": (resize_model((5, 6), "nearest", "align_corners", out_hw=(9, 11), nearest_mode="round_prefer_ceil"), (1, 0)),
}


@pytest.mark.parametrize("case", RESIZE_CASES)
def test_resize(case):
    model, (align, half) = RESIZE_CASES[case]
    graph = assert_matches_ort(model)
    (op,) = graph.ops
    assert op.type == ("RESIZE_BILINEAR" if "linear" in case else "RESIZE_NEAREST")
    assert (op.attrs["align_corners"], op.attrs["half_pixel_centers"]) == (align, half)


def test_resize_unsupported_variants():
    with pytest.raises(UnsupportedOpError, match="cubic"):
        load_onnx(resize_model((5, 6), "cubic", "half_pixel", scale=2.0))
    # Rounding y / 2 up at the ties samples like none of TFLite's conventions.
    with pytest.raises(UnsupportedOpError, match="nearest_mode=round_prefer_ceil"):
        load_onnx(resize_model((5, 6), "nearest", "asymmetric", scale=2.0, nearest_mode="round_prefer_ceil"))
    with pytest.raises(UnsupportedOpError, match="tf_crop_and_resize"):
        load_onnx(resize_model((5, 6), "linear", "tf_crop_and_resize", scale=2.0))


@pytest.mark.parametrize("mode", ["DCR", "CRD"])
def test_depth_to_space(mode):
    model = make_model([node("DepthToSpace", ["x"], ["y"], blocksize=2, mode=mode)], {"x": (1, 8, 3, 4)}, ["y"])
    graph = assert_matches_ort(model)
    assert [o.type for o in graph.ops] == ["DEPTH_TO_SPACE"]


def test_reshape_flatten_transpose_squeeze():
    consts = {"shape": np.array([0, -1, 3], np.int64), "axes": np.array([0], np.int64)}
    model = make_model([node("Flatten", ["x"], ["f"], axis=1),
                        node("Reshape", ["f", "shape"], ["r"]),
                        node("Transpose", ["r"], ["t"], perm=[0, 2, 1]),
                        node("Squeeze", ["t", "axes"], ["s"]),
                        node("Unsqueeze", ["s", "axes"], ["u"]),
                        node("Identity", ["u"], ["i"]),
                        helper.make_node("Dropout", ["i"], ["y"], name="drop")],
                       {"x": X4}, ["y"], consts)
    graph = assert_matches_ort(model)
    # Identity and Dropout vanish, but the graph output keeps its name through one copy.
    assert [o.type for o in graph.ops] == ["RESHAPE", "RESHAPE", "TRANSPOSE", "RESHAPE", "RESHAPE", "RESHAPE"]
    assert graph.outputs == ["y"] and graph.ops[-1].outputs == ["y"]


def test_torch_flatten_shape_pattern_is_folded():
    # What torch's exporter writes for x.view(x.size(0), -1): the target shape is computed
    # from Shape at run time; shapes are static, so none of it reaches the IR.
    consts = {"zero": np.array(0, np.int64), "minus1": np.array([-1], np.int64), "ax0": np.array([0], np.int64)}
    model = make_model([
        node("Shape", ["x"], ["s"]),
        helper.make_node("Gather", ["s", "zero"], ["n"], axis=0),
        helper.make_node("Unsqueeze", ["n", "ax0"], ["n1"]),
        helper.make_node("Concat", ["n1", "minus1"], ["target"], axis=0),
        node("Reshape", ["x", "target"], ["y"]),
    ], {"x": X4}, ["y"], consts)
    graph = assert_matches_ort(model)
    assert [o.type for o in graph.ops] == ["RESHAPE"]
    assert graph.tensors["y"].shape == (1, 120)


def test_constant_nodes():
    model = make_model([
        helper.make_node("Constant", [], ["c"], value=numpy_helper.from_array(rand(1, 4, 1, 1))),
        helper.make_node("Constant", [], ["k"], value_float=3.0),
        node("Mul", ["c", "k"], ["c3"]),  # folded: both constants
        node("Add", ["x", "c3"], ["y"]),
    ], {"x": X4}, ["y"])
    graph = assert_matches_ort(model)
    assert [o.type for o in graph.ops] == ["ADD"]


def test_identity_to_output_keeps_the_output_name():
    model = make_model([node("Relu", ["x"], ["r"]), node("Identity", ["r"], ["y"])], {"x": X4}, ["y"])
    graph = assert_matches_ort(model)
    assert graph.outputs == ["y"]


def test_old_opset_is_converted():
    consts = {"w": rand(4, 3, 3, 3)}
    model = make_model([node("Conv", ["x", "w"], ["h"], pads=[1, 1, 1, 1]),
                        node("Clip", ["h"], ["c"], min=0.0, max=6.0),
                        node("Softmax", ["c"], ["y"])],
                       {"x": (1, 3, 5, 5)}, ["y"], consts, opset=9)
    graph = assert_matches_ort(model)
    assert [o.type for o in graph.ops][:2] == ["CONV2D", "CLIP"]


# -- errors ------------------------------------------------------------------------------

def test_unknown_op_names_op_and_node():
    model = make_model([node("Relu", ["x"], ["r"]), helper.make_node("Erf", ["r"], ["y"], name="my_erf")],
                       {"x": X4}, ["y"])
    with pytest.raises(UnsupportedOpError) as e:
        load_onnx(model)
    assert e.value.op == "Erf" and e.value.node == "my_erf"
    assert "Erf" in str(e.value) and "my_erf" in str(e.value)


def test_dynamic_input_dim_needs_input_shapes():
    model = make_model([node("Relu", ["x"], ["y"])], {"x": ("batch", 4, "h", 6)}, ["y"])
    with pytest.raises(InputShapeError, match="input_shapes"):
        load_onnx(model)
    graph = load_onnx(model, input_shapes={"x": (1, 4, 5, 6)})
    assert graph.tensors["x"].shape == (1, 4, 5, 6) and graph.tensors["y"].shape == (1, 4, 5, 6)
    with pytest.raises(InputShapeError):
        load_onnx(model, input_shapes={"x": (1, 5, 5, 6)})  # contradicts the static dim
    with pytest.raises(InputShapeError):
        load_onnx(model, input_shapes={"nope": (1, 4, 5, 6)})


def test_batch_of_several_images():
    model = make_model([node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]), node("Relu", ["c"], ["r"]),
                        node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
                        node("Flatten", ["p"], ["f"]), node("Gemm", ["f", "fc"], ["y"], transB=1)],
                       {"x": (3, 4, 6, 6)}, ["y"],
                       {"w": rand(5, 4, 3, 3), "b": rand(5, seed=2), "fc": rand(7, 45, seed=3)})
    graph = assert_matches_ort(model)
    assert graph.tensors["y"].shape == (3, 7)


@pytest.mark.parametrize("data", [b"", b"\x00" * 16, b"garbage bytes, not a protobuf \xff\xfe", bytes(range(256)) * 4])
def test_garbage_is_model_format_error(data):
    with pytest.raises(ModelFormatError):
        load_onnx(data)


def test_truncated_model_is_model_format_error():
    data = conv_model((1, 3, 9, 9), (8, 3, 3, 3)).SerializeToString()
    with pytest.raises(ModelFormatError):
        load_onnx(data[: len(data) // 2])


def test_loads_from_path_and_bytes(tmp_path):
    model = CONV_CASES["3x3_pad1"][0]
    p = tmp_path / "m.onnx"
    p.write_bytes(model.SerializeToString())
    before = p.read_bytes()
    g1, g2 = load_onnx(p), load_onnx(str(p))
    g3 = load_onnx(model.SerializeToString())
    assert [o.type for o in g1.ops] == [o.type for o in g2.ops] == [o.type for o in g3.ops] == ["CONV2D"]
    assert p.read_bytes() == before


def test_corrupted_models_raise_typed_errors():
    # Random byte changes in a valid model: each either still loads or is refused with one
    # of pysparse's errors, never another exception.
    consts = {"w": rand(4, 3, 3, 3), "s": rand(4) + 2, "b": rand(4), "m": rand(4), "v": rand(4) ** 2 + 1,
              "fw": rand(5, 144), "fb": rand(5)}
    model = make_model([node("Conv", ["x", "w"], ["h"], pads=[1, 1, 1, 1]),
                        node("BatchNormalization", ["h", "s", "b", "m", "v"], ["r"]),
                        node("Relu", ["r"], ["f"]), node("Flatten", ["f"], ["g"]),
                        node("Gemm", ["g", "fw", "fb"], ["y"], transB=1)], {"x": (1, 3, 6, 6)}, ["y"], consts)
    data = model.SerializeToString()
    rng = np.random.default_rng(0)
    refused = 0
    for _ in range(400):
        d = bytearray(data)
        for _ in range(rng.integers(1, 4)):
            d[rng.integers(len(d))] = rng.integers(256)
        try:
            load_onnx(bytes(d))
        except PysparseError:
            refused += 1
    assert refused > 20


def test_load_model_dispatches_to_onnx(tmp_path):
    model = CONV_CASES["pointwise"][0]
    p = tmp_path / "pointwise.onnx"
    p.write_bytes(model.SerializeToString())
    graph = load_model(p)
    assert [o.type for o in graph.ops] == ["CONV2D"] and graph.metadata["source_format"] == "onnx"


UNSUPPORTED_CASES = {
    "conv_runtime_weight": (make_model([node("Conv", ["x", "w"], ["y"])], {"x": (1, 3, 5, 5), "w": (1, 3, 3, 3)}, ["y"]),
                            "Conv", "weight must be a constant"),
    "conv_4d": (make_model([node("Conv", ["x", "w"], ["y"])], {"x": (1, 3, 4, 4, 4, 4)}, ["y"],
                           {"w": rand(4, 3, 2, 2, 2, 2)}), "Conv", "4-D"),
    "conv_transpose_groups": (make_model([node("ConvTranspose", ["x", "w"], ["y"], group=2)], {"x": (1, 4, 5, 5)}, ["y"],
                                         {"w": rand(4, 2, 3, 3)}), "ConvTranspose", "group=2"),
    "maxpool_dilated": (make_model([node("MaxPool", ["x"], ["y"], kernel_shape=[2, 2], dilations=[2, 2])],
                                   {"x": (1, 3, 8, 8)}, ["y"]), "MaxPool", "dilations"),
    "pad_3d": (make_model([node("Pad", ["x", "p"], ["y"])], {"x": (1, 3, 8)}, ["y"],
                          {"p": np.array([0, 0, 1, 0, 0, 1], np.int64)}), "Pad", "4-D"),
}


def test_custom_domain_op_is_unsupported():
    graph = helper.make_graph([helper.make_node("Gelu", ["x"], ["y"], domain="com.microsoft", name="gelu")], "t",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, X4)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, X4)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
    with pytest.raises(UnsupportedOpError, match="custom domain") as e:
        load_onnx(model)
    assert e.value.op == "com.microsoft.Gelu" and e.value.node == "gelu"


@pytest.mark.parametrize("case", UNSUPPORTED_CASES)
def test_unsupported_variants_name_the_op(case):
    model, op, detail = UNSUPPORTED_CASES[case]
    with pytest.raises(UnsupportedOpError, match=detail) as e:
        load_onnx(model)
    assert e.value.op == op and e.value.node
