"""The packer: encodings per layer, metadata, numerics of fp16/int8, memory plan on real
models, and that it never damages files (atomic writes, source never overwritten)."""
import os

import numpy as np
import pytest

from pysparse import assets, passes, reference
from pysparse.format import read_spnn, spec
from pysparse.format.costmodel import spmm_problem
from pysparse.importers import load_model
from pysparse.pack import pack, pack_file
from pysparse.passes.memory import overlapping_live_pairs, plan_memory, tensor_bytes
from spnn_graphs import small_cnn

HAND_MODELS = ["hand_landmark_full", "hand_landmark_lite", "palm_detection_full", "palm_detection_lite"]
# Weight storage against fp32, worst |difference| over an output's scale, on the real photos
# (docs/numerics.md): fp16 measured 0 on the four hand models (their .tflite files store
# fp16 weights) and 2e-4 on synthetic float32 weights; int8 up to 0.083.
FP16_TOLERANCE = 1e-3
INT8_TOLERANCE = 0.1


@pytest.fixture(scope="module")
def optimized():
    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = passes.optimize(load_model(assets.model_path(name + ".tflite")))
        return cache[name]
    return get


def _photo_input(graph, photo="hand_nocurl.jpg"):
    from pysparse.commands.run import load_image
    name = graph.inputs[0]
    return {name: load_image(assets.photo_path(photo), graph.tensors[name].shape, (0.0, 1.0))}


def _relative_error(a: dict, b: dict) -> float:
    """Worst |a - b| per output over that output's scale (its range, or its largest
    magnitude for one-value outputs such as probabilities)."""
    def scale(v):
        return max(float(v.max() - v.min()), float(np.abs(v).max()), 1e-6)
    return max(float(np.abs(a[k] - b[k]).max()) / scale(a[k]) for k in a)


# -- synthetic graphs ----------------------------------------------------------------
@pytest.mark.parametrize("weights", ["fp32", "fp16", "int8"])
@pytest.mark.parametrize("sparse", [None, True, False])
def test_encodings_follow_the_options(weights, sparse):
    g = small_cnn(sparsity=0.8)
    f = read_spnn(pack(g, weights, sparse, optimize=False))
    dense_code = {"fp32": spec.VALUE_F32, "fp16": spec.VALUE_F16, "int8": spec.VALUE_I8}[weights]
    for op in f.graph.ops:
        if op.type not in ("CONV2D", "FULLY_CONNECTED"):
            continue
        w = f.weights[op.inputs[1]]
        eligible = spmm_problem(f.graph, op) is not None
        if sparse is False or not eligible:
            assert w.encoding_name == "dense" and w.dtype == dense_code, op.name
        elif sparse is True:
            assert w.encoding_name == "sparse", op.name
        if w.encoding_name == "sparse":
            assert w.dtype == (spec.VALUE_F32 if weights == "fp32" else spec.VALUE_F16)
        if len(op.inputs) > 2 and op.inputs[2]:
            assert f.weights[op.inputs[2]].dtype == spec.VALUE_F32  # biases stay f32
    assert sparse is not None or any(w.encoding_name == "sparse" for w in f.weights.values())


def test_metadata_has_the_spec_keys():
    g = small_cnn(sparsity=0.8)
    f = read_spnn(pack(g, "fp16", metadata={"name": "tiny", "outputs": [{"name": "probs", "meaning": "classes"}]},
                       optimize=False))
    m = f.metadata
    assert m["name"] == "tiny" and m["pysparse_version"] == "0.1.0"
    assert m["input"] == {"name": "image", "shape": [1, 3, 16, 16], "layout": "NCHW", "color": "RGB",
                          "range": [0.0, 1.0]}
    assert m["outputs"] == [{"name": "probs", "shape": [1, 10], "meaning": "classes"},
                            {"name": "cat", "shape": [1, 32, 8, 8], "meaning": ""}]
    assert m["peak_activation_bytes"] == f.arena_bytes
    layers = {x["name"]: x for x in m["layers"]}
    assert set(layers) == {"conv1", "dwconv", "project", "expand", "fc"}
    for x in layers.values():
        assert set(x) == {"op", "name", "encoding", "block", "sparsity", "dense_macs", "effective_macs", "bytes"}
    assert layers["conv1"]["dense_macs"] == 8 * 3 * 3 * 3 * 8 * 8
    assert layers["fc"]["dense_macs"] == 10 * 256
    project = layers["project"]
    assert project["encoding"] == "sparse" and project["effective_macs"] < project["dense_macs"]
    assert project["effective_macs"] == f.weights["wpw"].nnz * 64
    assert abs(project["sparsity"] - float(np.mean(g.tensors["wpw"].data == 0))) < 1e-6


@pytest.mark.parametrize("sparse", [None, True, False])
def test_fp32_pack_is_bit_exact(sparse):
    g = small_cnn(sparsity=0.6)
    f = read_spnn(pack(g, "fp32", sparse))
    x = {"image": np.random.default_rng(3).standard_normal((1, 3, 16, 16)).astype(np.float32)}
    want = reference.run(passes.optimize(g), x)
    got = reference.run(f.graph, x)
    for k in want:
        assert np.array_equal(got[k], want[k])


def test_fp16_on_float32_weights():
    g = small_cnn(sparsity=0.6)
    x = {"image": np.random.default_rng(3).standard_normal((1, 3, 16, 16)).astype(np.float32)}
    want = reference.run(g, x)
    got = reference.run(read_spnn(pack(g, "fp16")).graph, x)
    assert 0 < _relative_error(want, got) <= FP16_TOLERANCE


def test_pack_leaves_the_graph_alone():
    g = small_cnn()
    before = {n: t.data.copy() for n, t in g.tensors.items() if t.is_constant}
    pack(g, "int8", True)
    assert all(np.array_equal(g.tensors[n].data, d) for n, d in before.items())


# -- real models ---------------------------------------------------------------------
@pytest.mark.parametrize("model", HAND_MODELS)
def test_memory_plan_on_real_models(model, optimized):
    g = optimized(model)
    offsets, arena = plan_memory(g)
    total = sum(tensor_bytes(g, n) for n in offsets)
    assert overlapping_live_pairs(g, offsets) == []
    assert arena < 0.3 * total, (arena, total)  # measured 0.08 .. 0.22


@pytest.mark.slow
@pytest.mark.parametrize("model", ["hand_landmark_full", "palm_detection_lite"])
def test_real_model_round_trip_is_bit_exact(model, optimized):
    g = optimized(model)
    f = read_spnn(pack(g, "fp32", optimize=False))
    x = _photo_input(g)
    want, got = reference.run(g, x), reference.run(f.graph, x)
    for k in want:
        assert np.array_equal(got[k], want[k]), k


@pytest.mark.slow
@pytest.mark.parametrize("model", HAND_MODELS)
def test_fp16_and_int8_tolerances(model, optimized):
    g = optimized(model)
    x = _photo_input(g, "hand_fullcurl.jpg")
    want = reference.run(g, x)
    fp16 = reference.run(read_spnn(pack(g, "fp16", optimize=False)).graph, x)
    assert _relative_error(want, fp16) <= FP16_TOLERANCE
    int8 = reference.run(read_spnn(pack(g, "int8", optimize=False)).graph, x)
    assert _relative_error(want, int8) <= INT8_TOLERANCE


def test_real_model_metadata():
    src = assets.model_path("hand_landmark_lite.tflite")
    f = read_spnn(pack(load_model(src), "fp16"))
    m = f.metadata
    assert m["name"] == "hand_landmark_lite"
    assert m["input"]["shape"] == [1, 3, 224, 224] and m["input"]["range"] == [0.0, 1.0]
    assert [o["name"] for o in m["outputs"]] == f.graph.outputs
    assert all(o["meaning"] for o in m["outputs"])
    assert len(m["landmarks"]["names"]) == 21
    assert len(m["layers"]) == sum(op.type in ("CONV2D", "FULLY_CONNECTED") for op in f.graph.ops)


# -- files ---------------------------------------------------------------------------
@pytest.fixture
def lite(tmp_path):
    src = tmp_path / "hand_landmark_lite.tflite"
    src.write_bytes(assets.model_path("hand_landmark_lite.tflite").read_bytes())
    return src


def test_pack_file_writes_and_records_the_source(lite, tmp_path):
    import hashlib
    out = tmp_path / "out.spnn"
    data = pack_file(lite, out, "fp16")
    assert out.read_bytes() == data
    src = read_spnn(data).metadata["source"]
    assert src == {"file": lite.name, "sha256": hashlib.sha256(lite.read_bytes()).hexdigest(),
                   "bytes": lite.stat().st_size, "format": "tflite"}
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_pack_file_never_overwrites_its_source(lite, tmp_path):
    original = lite.read_bytes()
    link = tmp_path / "link.spnn"
    link.symlink_to(lite)
    hard = tmp_path / "hard.spnn"
    os.link(lite, hard)
    for dst in (lite, tmp_path / "." / lite.name, link, hard):
        with pytest.raises(ValueError, match="refusing to overwrite"):
            pack_file(lite, dst)
    assert lite.read_bytes() == original


def test_failing_pack_leaves_the_output_untouched(tmp_path):
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"\0\0\0\0TFL3" + bytes(100))
    out = tmp_path / "out.spnn"
    out.write_bytes(b"previous contents")
    with pytest.raises(Exception):
        pack_file(bad, out)
    assert out.read_bytes() == b"previous contents"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.tflite", "out.spnn"]


def test_write_is_atomic_when_writing_fails(tmp_path, monkeypatch):
    from pysparse import pack as pack_module
    out = tmp_path / "out.spnn"
    out.write_bytes(b"previous contents")

    def broken_fsync(fd):
        raise OSError("disk full")
    monkeypatch.setattr(pack_module.os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="disk full"):
        pack_module.write_atomic(out, b"new contents")
    assert out.read_bytes() == b"previous contents"
    assert [p.name for p in tmp_path.iterdir()] == ["out.spnn"]
