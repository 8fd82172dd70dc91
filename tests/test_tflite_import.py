"""TFLite import: imported (and optimised) graphs run by the numpy reference match LiteRT
running the original `.tflite`.

Tolerance rule for the real models: for each output, max |ours - LiteRT| <= 1e-4 * scale,
where scale = max(max(x) - min(x), max|x|) over LiteRT's output x (for a one-element output
that is |x|). For the small single-op models below: |ours - LiteRT| <= 1e-5 + 1e-5 * |LiteRT|.
"""
import struct

import numpy as np
import pytest
from PIL import Image

from pysparse import assets, passes, reference
from pysparse.errors import ModelFormatError, UnsupportedOpError
from pysparse.importers import load_model
from pysparse.importers.tflite import load_tflite
from tflite_builder import TFLiteBuilder, options, run_litert

REAL_MODELS = ["hand_landmark_full", "hand_landmark_lite", "palm_detection_full"]
PHOTOS = ["hand_nocurl.jpg", "hand_halfcurl.jpg"]


def to_ir(x):
    return x.transpose(0, 3, 1, 2) if x.ndim == 4 else x


def from_ir(y):
    return y.transpose(0, 2, 3, 1) if y.ndim == 4 else y


def photo_input(name, size):
    """A real photo resized to the model's input (RGB in [0, 1]), NCHW."""
    im = Image.open(assets.photo_path(name)).convert("RGB").resize((size, size), Image.BILINEAR)
    return (np.asarray(im, np.float32) / 255.0).transpose(2, 0, 1)[None].copy()


def assert_matches_litert(graph, model_bytes, x_nchw):
    theirs = run_litert(model_bytes, [x_nchw.transpose(0, 2, 3, 1)])
    ours = reference.run(graph, {graph.inputs[0]: x_nchw})
    assert set(ours) == set(theirs)
    for name, t in theirs.items():
        o = from_ir(ours[name])
        assert o.shape == t.shape, name
        scale = max(float(t.max() - t.min()), float(np.abs(t).max()))
        err = float(np.abs(o - t).max())
        assert err <= 1e-4 * scale, f"{name}: max error {err:.3g} > 1e-4 x {scale:.3g}"


@pytest.fixture(scope="module", params=REAL_MODELS)
def real_model(request):
    data = assets.model_path(request.param + ".tflite").read_bytes()
    return request.param, data, passes.optimize(load_model(data))


def test_real_model_random_inputs(real_model):
    name, data, graph = real_model
    shape = graph.tensors[graph.inputs[0]].shape
    assert shape[:2] == (1, 3)
    for seed in (0, 1):
        x = np.random.default_rng(seed).random(shape, dtype=np.float32)
        assert_matches_litert(graph, data, x)


@pytest.mark.parametrize("photo", PHOTOS)
def test_real_model_photo(real_model, photo):
    name, data, graph = real_model
    size = graph.tensors[graph.inputs[0]].shape[2]
    assert_matches_litert(graph, data, photo_input(photo, size))


def test_hand_landmarks_on_photo_are_plausible():
    """Not a match test: the imported model sees a hand in a real photo of one."""
    g = load_tflite(assets.model_path("hand_landmark_full.tflite"))
    out = reference.run(g, {"input_1": photo_input("hand_nocurl.jpg", 224)})
    assert out["Identity_1"][0, 0] > 0.9
    xy = out["Identity"].reshape(21, 3)[:, :2]
    assert (xy > -20).all() and (xy < 244).all()


def test_graph_input_is_nchw_and_outputs_keep_names():
    g = load_tflite(assets.model_path("palm_detection_lite.tflite"))
    assert g.inputs == ["input_1"] and g.tensors["input_1"].shape == (1, 3, 192, 192)
    assert [g.tensors[o].shape for o in g.outputs] == [(1, 2016, 18), (1, 2016, 1)]
    assert g.metadata["name"] == "palm_detection_lite"


# -- single ops, on small models written here -------------------------------------------

def randn(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def check_small(model: bytes, inputs_nhwc, optimize=True):
    theirs = run_litert(model, inputs_nhwc)
    g = load_tflite(model)
    if optimize:
        g = passes.optimize(g)
    ours = reference.run(g, {n: to_ir(x) for n, x in zip(g.inputs, inputs_nhwc)})
    for name, t in theirs.items():
        np.testing.assert_allclose(from_ir(ours[name]), t, rtol=1e-5, atol=1e-5, err_msg=name)
    return g


def conv_model(op="CONV_2D", k=3, stride=2, padding=0, act=3, size=(9, 11), cin=3, mult=1, fp16=False):
    b = TFLiteBuilder()
    x = b.input("x", (1, *size, cin))
    cout = cin * mult if op == "DEPTHWISE_CONV_2D" else 5
    w = randn(*((1, k, k, cout) if op == "DEPTHWISE_CONV_2D" else (cout, k, k, cin)), seed=1)
    if fp16:
        wh = b.const("w16", w.astype(np.float16), np.float16)
        wt = b.tensor("w", w.shape)
        b.op("DEQUANTIZE", [wh], [wt])
    else:
        wt = b.const("w", w)
    bias = b.const("b", randn(cout, seed=2))
    pad = {0: "SAME", 1: "VALID"}[padding]
    oh = -(-size[0] // stride) if pad == "SAME" else (size[0] - k) // stride + 1
    ow = -(-size[1] // stride) if pad == "SAME" else (size[1] - k) // stride + 1
    y = b.tensor("y", (1, oh, ow, cout))
    if op == "CONV_2D":
        o = options("Conv2DOptions", padding=padding, strideW=stride, strideH=stride, fusedActivationFunction=act)
    else:
        o = options("DepthwiseConv2DOptions", padding=padding, strideW=stride, strideH=stride,
                    depthMultiplier=mult, fusedActivationFunction=act)
    b.op(op, [x, wt, bias], [y], o)
    return b.finish([y]), [randn(1, *size, cin, seed=3)]


@pytest.mark.parametrize("kw", [dict(), dict(padding=1, act=1), dict(stride=1, size=(8, 8), act=2), dict(fp16=True),
                                dict(op="DEPTHWISE_CONV_2D", cin=4, mult=2),
                                dict(op="DEPTHWISE_CONV_2D", cin=4, k=5, act=1, size=(10, 7))])
def test_conv(kw):
    check_small(*conv_model(**kw))


def test_fused_tanh_is_refused():
    # TFLite's float kernels silently ignore a fused TANH; pysparse refuses the model.
    with pytest.raises(UnsupportedOpError, match="fused activation"):
        load_tflite(conv_model(act=4)[0])


def unary_model(opname, shape=(1, 5, 6, 4), opts=None):
    b = TFLiteBuilder()
    x = b.input("x", shape)
    y = b.tensor("y", shape)
    b.op(opname, [x], [y], opts)
    return b.finish([y]), [randn(*shape) * 4]


@pytest.mark.parametrize("opname,opts", [("HARD_SWISH", None), ("RELU", None), ("RELU6", None), ("TANH", None),
                                         ("LOGISTIC", None), ("RELU_N1_TO_1", None),
                                         ("SOFTMAX", options("SoftmaxOptions", beta=0.7)),
                                         ("LEAKY_RELU", options("LeakyReluOptions", alpha=0.2))])
def test_unary(opname, opts):
    check_small(*unary_model(opname, opts=opts))


def test_softmax_2d():
    check_small(*unary_model("SOFTMAX", (2, 7), options("SoftmaxOptions", beta=1.0)))


@pytest.mark.parametrize("opname", ["ADD", "SUB", "MUL"])
def test_binary_broadcast_and_squeeze_excite(opname):
    """x * sigmoid(conv(mean(x))): MUL of [1,H,W,C] by [1,1,1,C]; also a [C] constant."""
    b = TFLiteBuilder()
    x = b.input("x", (1, 6, 5, 4))
    axes = b.const("axes", np.array([1, 2], np.int32), np.int32)
    m = b.tensor("m", (1, 1, 1, 4))
    b.op("MEAN", [x, axes], [m], options("ReducerOptions", keepDims=True))
    s = b.tensor("s", (1, 1, 1, 4))
    b.op("LOGISTIC", [m], [s])
    y = b.tensor("y", (1, 6, 5, 4))
    o = {"ADD": options("AddOptions", fusedActivationFunction=1), "SUB": options("SubOptions"),
         "MUL": options("MulOptions")}[opname]
    b.op(opname, [x, s], [y], o)
    c = b.const("c", randn(4, seed=5))
    z = b.tensor("z", (1, 6, 5, 4))
    b.op(opname, [y, c], [z], o)
    check_small(b.finish([z]), [randn(1, 6, 5, 4)])


@pytest.mark.parametrize("opname", ["AVERAGE_POOL_2D", "MAX_POOL_2D"])
@pytest.mark.parametrize("padding,k,stride", [(0, 3, 2), (1, 2, 2), (0, 3, 1)])
def test_pool(opname, padding, k, stride):
    b = TFLiteBuilder()
    x = b.input("x", (1, 9, 8, 3))
    out = (-(-9 // stride), -(-8 // stride)) if padding == 0 else ((9 - k) // stride + 1, (8 - k) // stride + 1)
    y = b.tensor("y", (1, *out, 3))
    b.op(opname, [x], [y], options("Pool2DOptions", padding=padding, strideW=stride, strideH=stride,
                                   filterWidth=k, filterHeight=k))
    check_small(b.finish([y]), [randn(1, 9, 8, 3)])


def test_depth_to_space():
    b = TFLiteBuilder()
    x = b.input("x", (1, 3, 4, 12))
    y = b.tensor("y", (1, 6, 8, 3))
    b.op("DEPTH_TO_SPACE", [x], [y], options("DepthToSpaceOptions", blockSize=2))
    check_small(b.finish([y]), [randn(1, 3, 4, 12)])


@pytest.mark.parametrize("opname,align,half,size", [
    ("RESIZE_BILINEAR", False, True, (10, 14)), ("RESIZE_BILINEAR", True, False, (9, 13)),
    ("RESIZE_BILINEAR", False, False, (10, 7)), ("RESIZE_NEAREST_NEIGHBOR", False, False, (10, 14)),
    ("RESIZE_NEAREST_NEIGHBOR", False, True, (7, 9)), ("RESIZE_NEAREST_NEIGHBOR", True, False, (9, 13))])
def test_resize(opname, align, half, size):
    b = TFLiteBuilder()
    x = b.input("x", (1, 5, 7, 2))
    s = b.const("size", np.array(size, np.int32), np.int32)
    y = b.tensor("y", (1, *size, 2))
    cls = "ResizeBilinearOptions" if opname == "RESIZE_BILINEAR" else "ResizeNearestNeighborOptions"
    b.op(opname, [x, s], [y], options(cls, alignCorners=align, halfPixelCenters=half))
    check_small(b.finish([y]), [randn(1, 5, 7, 2)])


def test_transpose_reshape_concat_pad_mean():
    """Layout-sensitive ops: each must follow TFLite's NHWC axis meaning exactly."""
    b = TFLiteBuilder()
    x = b.input("x", (1, 4, 6, 3))
    t = b.tensor("t", (1, 3, 4, 6))
    b.op("TRANSPOSE", [x, b.const("perm", np.array([0, 3, 1, 2], np.int32), np.int32)], [t])
    r = b.tensor("r", (1, 24, 3))
    b.op("RESHAPE", [x, b.const("shape", np.array([1, 24, 3], np.int32), np.int32)], [r],
         options("ReshapeOptions", newShape=[1, 24, 3]))
    r4 = b.tensor("r4", (1, 2, 12, 3))
    b.op("RESHAPE", [r, b.const("shape4", np.array([1, 2, 12, 3], np.int32), np.int32)], [r4])
    p = b.tensor("p", (1, 5, 8, 5))
    b.op("PAD", [x, b.const("pads", np.array([[0, 0], [1, 0], [0, 2], [0, 2]], np.int32), np.int32)], [p])
    c = b.tensor("c", (1, 4, 6, 6))
    b.op("CONCATENATION", [x, x], [c], options("ConcatenationOptions", axis=3))
    c2 = b.tensor("c2", (1, 24, 6))
    b.op("CONCATENATION", [r, r], [c2], options("ConcatenationOptions", axis=-1))
    m = b.tensor("m", (1, 6, 3))  # mean over H only: the kept axes (N, W, C) must stay in that order
    b.op("MEAN", [x, b.const("ax", np.array([1], np.int32), np.int32)], [m], options("ReducerOptions", keepDims=False))
    m2 = b.tensor("m2", (1, 3))
    b.op("MEAN", [x, b.const("ax2", np.array([1, 2], np.int32), np.int32)], [m2], options("ReducerOptions"))
    check_small(b.finish([t, r, r4, p, c, c2, m, m2]), [randn(1, 4, 6, 3)])


def test_fully_connected_flattens_in_nhwc_order():
    b = TFLiteBuilder()
    x = b.input("x", (1, 3, 2, 4))
    y = b.tensor("y", (1, 5))
    b.op("FULLY_CONNECTED", [x, b.const("w", randn(5, 24, seed=1)), b.const("b", randn(5, seed=2))], [y],
         options("FullyConnectedOptions", fusedActivationFunction=1))
    check_small(b.finish([y]), [randn(1, 3, 2, 4)])


def transpose_conv_model(custom: bool, padding=0, stride=2, k=4, size=(5, 6)):
    b = TFLiteBuilder()
    x = b.input("x", (1, *size, 3))
    w = b.const("w", randn(4, k, k, 3, seed=1))
    bias = b.const("b", randn(4, seed=2))
    out = (size[0] * stride, size[1] * stride) if padding == 0 else ((size[0] - 1) * stride + k, (size[1] - 1) * stride + k)
    y = b.tensor("y", (1, *out, 4))
    if custom:  # MediaPipe's op: options are the raw struct {padding (1 SAME, 2 VALID), stride_w, stride_h}
        b.op("CUSTOM:Convolution2DTransposeBias", [x, w, bias], [y],
             custom_options=struct.pack("<3i", 1 + padding, stride, stride))
    else:
        shape = b.const("out_shape", np.array((1, *out, 4), np.int32), np.int32)
        b.op("TRANSPOSE_CONV", [shape, w, x, bias], [y],
             options("TransposeConvOptions", padding=padding, strideW=stride, strideH=stride))
    return b.finish([y]), [randn(1, *size, 3, seed=3)]


@pytest.mark.parametrize("padding,stride,k", [(0, 2, 4), (0, 2, 3), (1, 2, 3), (0, 1, 3)])
def test_transpose_conv(padding, stride, k):
    check_small(*transpose_conv_model(False, padding, stride, k))


@pytest.mark.parametrize("padding,stride,k", [(0, 2, 4), (1, 2, 3)])
def test_custom_transpose_conv_bias_matches_builtin(padding, stride, k):
    """LiteRT lacks MediaPipe's custom op: compare with the builtin it equals."""
    custom, inputs = transpose_conv_model(True, padding, stride, k)
    builtin, _ = transpose_conv_model(False, padding, stride, k)
    theirs = run_litert(builtin, inputs)["y"]
    g = load_tflite(custom)
    ours = reference.run(g, {"x": to_ir(inputs[0])})["y"]
    np.testing.assert_allclose(from_ir(ours), theirs, rtol=1e-5, atol=1e-5)


# -- errors -------------------------------------------------------------------------------

def test_unsupported_builtin_names_op_and_node():
    b = TFLiteBuilder()
    x = b.input("x", (1, 4, 4, 2))
    y = b.tensor("floor_out", (1, 4, 4, 2))
    b.op("FLOOR", [x], [y])
    model = b.finish([y])
    run_litert(model, [randn(1, 4, 4, 2)])  # a valid model LiteRT runs
    with pytest.raises(UnsupportedOpError) as e:
        load_tflite(model)
    assert e.value.op == "FLOOR" and e.value.node == "floor_out"
    assert "FLOOR" in str(e.value) and "floor_out" in str(e.value)


def test_unsupported_custom_op():
    b = TFLiteBuilder()
    x = b.input("x", (1, 4))
    y = b.tensor("y", (1, 4))
    b.op("CUSTOM:MyMagicOp", [x], [y], custom_options=b"\0")
    with pytest.raises(UnsupportedOpError, match="MyMagicOp"):
        load_tflite(b.finish([y]))


@pytest.mark.parametrize("data", [b"", b"1234TFL3", b"\0\0\0\0TFL3" + b"\xff" * 40, b"not a model at all"])
def test_garbage_is_a_model_format_error(data):
    with pytest.raises(ModelFormatError):
        load_model(data)


def test_truncated_model_is_a_format_error():
    data = assets.model_path("hand_landmark_lite.tflite").read_bytes()
    for cut in (16, 1000, len(data) // 2):
        with pytest.raises(ModelFormatError):
            load_tflite(data[:cut])


def test_load_model_dispatches_by_content(tmp_path):
    model, inputs = conv_model()
    p = tmp_path / "conv.bin"  # the extension does not matter
    p.write_bytes(model)
    g = load_model(p)
    assert [op.type for op in g.ops] == ["CONV2D"] and g.metadata["name"] == "conv"


def test_corrupted_models_raise_typed_errors():
    """Random bytes changed in the flatbuffer's tables (not the weights): the importer
    returns a graph or raises a pysparse error, never anything else."""
    from pysparse.errors import PysparseError
    data = assets.model_path("hand_landmark_lite.tflite").read_bytes()
    rng = np.random.default_rng(0)
    n = len(data)
    outcomes = {"graph": 0, "error": 0}
    for _ in range(60):
        d = bytearray(data)
        for _ in range(4):
            pos = int(rng.integers(0, 4096)) if rng.random() < 0.5 else int(rng.integers(n - 65536, n))
            d[pos] = int(rng.integers(0, 256))
        try:
            load_tflite(bytes(d))
            outcomes["graph"] += 1
        except PysparseError:
            outcomes["error"] += 1
    assert outcomes["error"] > 0


# -- model metadata --------------------------------------------------------------------

@pytest.mark.parametrize("name", ["hand_landmark_full", "hand_landmark_lite", "palm_detection_full", "palm_detection_lite"])
def test_model_info_agrees_with_the_model(name):
    from pysparse import modelinfo
    g = load_tflite(assets.model_path(name + ".tflite"))
    info = modelinfo.info_for(g)
    assert info == modelinfo.info_for(f"/somewhere/{name}.tflite") == modelinfo.info_for(name + "_sparse80.spnn")
    assert info["name"] == name and info["input"]["layout"] == "NCHW" and info["input"]["range"] == [0.0, 1.0]
    assert tuple(info["input"]["shape"]) == g.tensors[g.inputs[0]].shape and info["input"]["name"] == g.inputs[0]
    assert [(o["name"], tuple(o["shape"])) for o in info["outputs"]] == [(o, g.tensors[o].shape) for o in g.outputs]
    if name.startswith("hand"):
        lm = info["landmarks"]
        assert len(lm["names"]) == 21 and lm["names"][0] == "WRIST" and lm["names"][20] == "PINKY_TIP"
        assert len(lm["connections"]) == 21 and all(0 <= i < 21 and 0 <= j < 21 for i, j in lm["connections"])


def test_model_info_unknown():
    from pysparse import modelinfo
    assert modelinfo.info_for("mobilenet_v2.onnx") == {}
