"""The `pysparse` command line: pack, inspect, run; errors are one line and exit code 2."""
import json
import subprocess
import sys

import numpy as np
import pytest

from pysparse import assets
from pysparse.cli import main
from pysparse.format import read_spnn


@pytest.fixture(scope="module")
def lite_spnn(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "lite.spnn"
    assert main(["pack", str(assets.model_path("hand_landmark_lite.tflite")), "-o", str(out), "--weights", "fp16"]) == 0
    return out


def test_pack_prints_a_summary(lite_spnn, capsys, tmp_path):
    out = tmp_path / "dense.spnn"
    assert main(["pack", str(assets.model_path("hand_landmark_lite.tflite")), "-o", str(out), "--dense"]) == 0
    text = capsys.readouterr().out
    assert f"wrote {out}" in text and "0/" in text
    f = read_spnn(out.read_bytes())
    assert all(w.encoding_name == "dense" for w in f.weights.values())
    sparse_out = tmp_path / "sparse.spnn"
    assert main(["pack", str(assets.model_path("hand_landmark_lite.tflite")), "-o", str(sparse_out), "--sparse"]) == 0
    layers = read_spnn(sparse_out.read_bytes()).metadata["layers"]
    assert sum(x["encoding"] == "sparse" for x in layers) > 20
    batch_out = tmp_path / "batch.spnn"
    assert main(["pack", str(assets.model_path("hand_landmark_lite.tflite")), "-o", str(batch_out), "--batch", "3"]) == 0
    g = read_spnn(batch_out.read_bytes()).graph
    assert all(g.tensors[n].shape[0] == 3 for n in g.inputs + g.outputs)


def test_inspect_table_and_json(lite_spnn, capsys):
    assert main(["inspect", str(lite_spnn)]) == 0
    text = capsys.readouterr().out
    size = lite_spnn.stat().st_size
    assert f"file size: {size:,} bytes" in text
    f = read_spnn(lite_spnn.read_bytes())
    assert f"peak activation memory (arena): {f.arena_bytes:,} bytes" in text
    assert "CONV2D" in text and "FULLY_CONNECTED" in text
    assert main(["inspect", "--json", str(lite_spnn)]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["file_size"] == size and s["arena_bytes"] == f.arena_bytes
    assert len(s["layers"]) == len(f.metadata["layers"])
    assert s["dense_macs"] == sum(x["dense_macs"] for x in f.metadata["layers"])
    assert s["effective_macs"] == sum(x["effective_macs"] for x in f.metadata["layers"])
    assert abs(s["size_ratio"] - size / assets.model_path("hand_landmark_lite.tflite").stat().st_size) < 1e-9


def test_run_on_a_photo_and_an_array(lite_spnn, capsys, tmp_path):
    photo = assets.photo_path("hand_nocurl.jpg")
    assert main(["run", str(lite_spnn), "--input", str(photo), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    outs = {o["name"]: o for o in res["outputs"]}
    assert outs["Identity"]["shape"] == [1, 63]
    assert outs["Identity_1"]["values"][0] > 0.5  # a hand is present in the photo
    # the same input as an array gives the same numbers
    from pysparse.commands.run import load_image
    x = load_image(photo, (1, 3, 224, 224), (0.0, 1.0))
    np.save(tmp_path / "x.npy", x[0])  # without the batch axis: added by `run`
    assert main(["run", str(lite_spnn), "-i", str(tmp_path / "x.npy"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["outputs"] == res["outputs"]
    assert main(["run", str(lite_spnn), "-i", str(photo)]) == 0
    text = capsys.readouterr().out
    assert "Identity_1 (hand presence" in text and "shape [1, 1]" in text


@pytest.mark.parametrize("case", ["missing", "corrupt", "not-spnn", "bad-npy", "bad-image", "self", "bad-model"])
def test_errors_are_one_line_with_exit_code_2(case, lite_spnn, tmp_path, capsys):
    photo = str(assets.photo_path("hand_nocurl.jpg"))
    corrupt = tmp_path / "corrupt.spnn"
    data = bytearray(lite_spnn.read_bytes())
    data[len(data) // 2] ^= 1
    corrupt.write_bytes(bytes(data))
    np.save(tmp_path / "wrong.npy", np.zeros((2, 2), np.float32))
    (tmp_path / "junk.png").write_bytes(b"not a png")
    model = tmp_path / "m.tflite"
    model.write_bytes(assets.model_path("hand_landmark_lite.tflite").read_bytes())
    (tmp_path / "bad.tflite").write_bytes(b"garbage!" * 10)
    argv = {
        "missing": ["inspect", str(tmp_path / "nope.spnn")],
        "corrupt": ["inspect", str(corrupt)],
        "not-spnn": ["run", photo, "-i", photo],
        "bad-npy": ["run", str(lite_spnn), "-i", str(tmp_path / "wrong.npy")],
        "bad-image": ["run", str(lite_spnn), "-i", str(tmp_path / "junk.png")],
        "self": ["pack", str(model), "-o", str(model)],
        "bad-model": ["pack", str(tmp_path / "bad.tflite"), "-o", str(tmp_path / "x.spnn")],
    }[case]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "error" in err and "Traceback" not in err
    assert {"corrupt": "CRC", "not-spnn": "magic", "bad-npy": "shape", "self": "refusing"}.get(case, "") in err
    assert model.read_bytes() == assets.model_path("hand_landmark_lite.tflite").read_bytes()


def test_console_entry_point(lite_spnn):
    r = subprocess.run([sys.executable, "-m", "pysparse.cli", "inspect", str(lite_spnn) + "x"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "Traceback" not in r.stderr and r.stderr.count("\n") == 1


def _zero_1x1(graph, fraction=0.8):
    """Zeroes `fraction` of each 1x1 convolution's weights, smallest magnitudes first."""
    from pysparse import passes
    g = passes.optimize(graph)
    for op in g.ops:
        w = g.tensors[op.inputs[1]].data if op.type == "CONV2D" else None
        if w is not None and w.shape[2:] == (1, 1) and op.attr("groups") == 1:
            k = int(fraction * w.size)
            w[np.abs(w) <= np.sort(np.abs(w).ravel())[k - 1]] = 0
    return g


def test_size_of_a_pruned_hand_model(tmp_path, capsys):
    """hand_landmark_full with 80% of each 1x1 weight zeroed, packed fp16. Its .tflite stores
    fp16 weights already, so the bound is stated against both that file and the model's
    float32 size (4 bytes per weight): measured 38.3% and 19.2%."""
    from pysparse.pack import pack_file
    src = assets.model_path("hand_landmark_full.tflite")
    out = tmp_path / "pruned.spnn"
    pack_file(src, out, "fp16", graph_hook=_zero_1x1)
    assert main(["inspect", str(out)]) == 0
    text = capsys.readouterr().out
    size, source = out.stat().st_size, src.stat().st_size
    assert f"file size: {size:,} bytes ({100 * size / source:.1f}% of hand_landmark_full.tflite" in text
    assert "1x1 convolution weight sparsity: 80.0%" in text
    f = read_spnn(out.read_bytes())
    params = sum(t.size for t in f.graph.tensors.values() if t.is_constant)
    assert size <= 0.40 * source
    assert size <= 0.25 * 4 * params


def test_commands_that_import_take_the_import_bound(tmp_path, capsys):
    """A trusted .onnx that makes its weights with ConstantOfShape past the default bound:
    pack, prune and bench refuse it with a message naming --max-import-elements, and take it
    with the bound raised."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from pysparse.bench.runtimes import prepare
    from pysparse.errors import ResourceLimitError

    value = numpy_helper.from_array(np.array([0.01], np.float32))
    nodes = [helper.make_node("ConstantOfShape", ["wshape"], ["w"], value=value),
             helper.make_node("Conv", ["x", "w"], ["y"])]
    graph = helper.make_graph(nodes, "t", [helper.make_tensor_value_info("x", TensorProto.FLOAT, (1, 1200, 1, 1))],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, (1, 4000, 1, 1))],
                              [numpy_helper.from_array(np.array([4000, 1200, 1, 1], np.int64), "wshape")])
    model = tmp_path / "made.onnx"
    model.write_bytes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString())
    onnx.checker.check_model(str(model))
    for argv in (["pack", str(model), "-o", str(tmp_path / "a.spnn")],
                 ["prune", str(model), "-o", str(tmp_path / "b.spnn"), "--sparsity", "0.5"]):
        assert main(argv) == 2
        assert "--max-import-elements N" in capsys.readouterr().err
        assert main(argv + ["--max-import-elements", "5000000"]) == 0
        assert read_spnn(open(argv[3], "rb").read()).graph.ops
    with pytest.raises(ResourceLimitError, match="max-import-elements"):
        prepare([], tmp_path / "bench", systems=("pysparse",), files=[model])
    (art,) = prepare([], tmp_path / "bench", systems=("pysparse",), files=[model], max_import_elements=5_000_000)
    assert art.path.read_bytes()[:4] == b"SPNN"
