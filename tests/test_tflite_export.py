"""IR -> TFLite export, checked by running the file in LiteRT against the numpy reference."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("ai_edge_litert")

from ai_edge_litert.interpreter import Interpreter  # noqa: E402

from pysparse import reference  # noqa: E402
from pysparse.errors import UnsupportedOpError  # noqa: E402
from pysparse.exporters import export_tflite  # noqa: E402
from pysparse.importers.tflite_sparse import sparsify_tflite  # noqa: E402
from pysparse.importers.torch import from_torch  # noqa: E402
from pysparse.ir import Graph  # noqa: E402
from pysparse.passes import optimize  # noqa: E402
from pysparse.zoo.mobilenet_v2 import mobilenet_v2, prune_pointwise  # noqa: E402


def litert_run(data: bytes, x_nchw: np.ndarray) -> np.ndarray:
    it = Interpreter(model_content=data)
    it.allocate_tensors()
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    it.set_tensor(inp["index"], np.ascontiguousarray(x_nchw.transpose(0, 2, 3, 1)))
    it.invoke()
    return it.get_tensor(out["index"])


def graph_of(model, size):
    return optimize(from_torch(model, torch.zeros(1, 3, size, size)))


def check(graph, data, x):
    want = reference.run(graph, {graph.inputs[0]: x})[graph.outputs[0]]
    got = litert_run(data, x)
    assert got.shape == want.shape
    scale = float(want.max() - want.min())
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-4 * scale)


@pytest.fixture(scope="module")
def mnv2_small():
    return mobilenet_v2(width=0.5, input_size=96, seed=1)


@pytest.fixture(scope="module")
def x96():
    return np.random.default_rng(0).uniform(-1, 1, (1, 3, 96, 96)).astype(np.float32)


def test_mobilenet_v2_matches_litert(mnv2_small, x96):
    g = graph_of(mnv2_small, 96)
    data = export_tflite(g)
    assert data[4:8] == b"TFL3"
    check(g, data, x96)


def test_fp16_weights_behind_dequantize(mnv2_small, x96):
    g = graph_of(mnv2_small, 96)
    data = export_tflite(g, weights="fp16")
    # the reference with the same fp16-rounded weights
    for op in g.ops:
        if op.type in ("CONV2D", "FULLY_CONNECTED"):
            t = g.tensors[op.inputs[1]]
            t.data = t.data.astype(np.float16).astype(np.float32)
    check(g, data, x96)
    assert len(data) < len(export_tflite(g)) * 0.6


@pytest.mark.slow
@pytest.mark.parametrize("sparsity", [0.5, 0.7, 0.8, 0.9])
def test_sparse_storage_still_matches(sparsity, x96):
    model = mobilenet_v2(width=0.5, input_size=96, seed=2)
    prune_pointwise(model, sparsity, block=4)
    g = graph_of(model, 96)
    converted = []
    data = sparsify_tflite(export_tflite(g), min_sparsity=sparsity - 0.01, converted=converted)
    assert len(converted) >= 30  # every pruned 1x1 conv is stored sparse
    check(g, data, x96)


@pytest.mark.slow
def test_full_size_mobilenet_v2_exports():
    model = mobilenet_v2(width=1.0, input_size=224, seed=0)
    g = graph_of(model, 224)
    x = np.random.default_rng(1).uniform(-1, 1, (1, 3, 224, 224)).astype(np.float32)
    check(g, export_tflite(g), x)


def test_reshape_keeps_nchw_order():
    g = Graph()
    g.add_tensor("x", (1, 4, 3, 2))
    g.inputs = ["x"]
    g.add_tensor("w", (8, 4, 1, 1), np.random.default_rng(3).normal(size=(8, 4, 1, 1)))
    g.add_tensor("y", (1, 8, 3, 2))
    g.add_op("CONV2D", ["x", "w"], ["y"])
    g.add_tensor("flat", (1, 48))
    g.add_op("RESHAPE", ["y"], ["flat"])
    g.add_tensor("back", (1, 6, 4, 2))
    g.add_op("RESHAPE", ["flat"], ["back"])
    g.outputs = ["back"]
    x = np.random.default_rng(4).normal(size=(1, 4, 3, 2)).astype(np.float32)
    want = reference.run(g, {"x": x})["back"]
    got = litert_run(export_tflite(g), x).transpose(0, 3, 1, 2)
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_unsupported_op_is_named():
    g = Graph()
    g.add_tensor("x", (1, 2, 4, 4))
    g.add_tensor("y", (1, 2, 4, 4))
    g.add_op("SIGMOID", ["x"], ["y"], name="gate")
    g.inputs, g.outputs = ["x"], ["y"]
    with pytest.raises(UnsupportedOpError, match="SIGMOID.*gate"):
        export_tflite(g)
