"""Calibrated one-shot pruning (pysparse.prune.reconstruct): masks, least-squares refit."""
import numpy as np
import pytest

from pysparse import reference
from pysparse.ir import Graph
from pysparse.prune import oneshot
from pysparse.prune import masks as M
from pysparse.prune.reconstruct import reconstruct, refit


def test_refit_recovers_sparse_weights_and_bias_exactly():
    rng = np.random.default_rng(0)
    rows, cols, samples = 12, 40, 500
    keep = M.matrix_view(M.layer_mask(rng.standard_normal((rows, cols)), 0.75, block=4))
    w_true = rng.standard_normal((rows, cols)) * keep
    b_true = rng.standard_normal(rows)
    x = rng.standard_normal((cols, samples))
    target = w_true @ x + b_true[:, None]
    w, b = refit(rng.standard_normal((rows, cols)), np.zeros(rows), keep, x, target, damp=1e-9)
    np.testing.assert_allclose(w, w_true, atol=1e-6)
    np.testing.assert_allclose(b, b_true, atol=1e-6)
    assert np.all(w[~keep] == 0)


def net():
    """stem 3x3 -> ReLU -> 1x1 16->64 -> ReLU -> 1x1 64->66: the two 1x1 layers are pruned."""
    rng = np.random.default_rng(3)
    g = Graph()
    g.add_tensor("x", (1, 3, 16, 16))
    g.inputs = ["x"]
    for n, s in {"stem": (16, 3, 3, 3), "pw1": (64, 16, 1, 1), "pw2": (66, 64, 1, 1)}.items():
        g.add_constant(n + "/w", (rng.standard_normal(s) / np.sqrt(np.prod(s[1:]))).astype(np.float32))
        g.add_constant(n + "/b", (0.1 * rng.standard_normal(s[0])).astype(np.float32))
    pads = dict(pad_top=1, pad_left=1, pad_bottom=1, pad_right=1)
    g.add_tensor("a", (1, 16, 16, 16)); g.add_op("CONV2D", ["x", "stem/w", "stem/b"], ["a"], "stem", act=1, **pads)
    g.add_tensor("c", (1, 64, 16, 16)); g.add_op("CONV2D", ["a", "pw1/w", "pw1/b"], ["c"], "pw1", act=1)
    g.add_tensor("d", (1, 66, 16, 16)); g.add_op("CONV2D", ["c", "pw2/w", "pw2/b"], ["d"], "pw2")
    g.outputs = ["d"]
    return g


def output_error(g, pruned, xs):
    err = [np.linalg.norm(reference.run(pruned, {"x": x[None]})["d"] - reference.run(g, {"x": x[None]})["d"])
           / np.linalg.norm(reference.run(g, {"x": x[None]})["d"]) for x in xs]
    return float(np.mean(err))


@pytest.mark.parametrize("block", [1, 4])
def test_reconstruct_beats_magnitude_and_keeps_the_rules(block):
    g = net()
    rng = np.random.default_rng(1)
    calib = rng.standard_normal((24, 3, 16, 16)).astype(np.float32)
    held_out = rng.standard_normal((6, 3, 16, 16)).astype(np.float32)
    rule = dict(min_weights=0)
    p = reconstruct(g, calib, 0.8, block=block, pixels=64, batch=8, progress=False, **rule)
    m = oneshot(g, 0.8, block=block, **rule)
    for n in ("pw1/w", "pw2/w"):
        w = p.tensors[n].data
        assert M.sparsity(w) == pytest.approx(M.sparsity(m.tensors[n].data), abs=block / w.size + 1e-9)
        assert M.units_all_or_nothing(w != 0, block)
    np.testing.assert_array_equal(p.tensors["stem/w"].data, g.tensors["stem/w"].data)  # the stem stays
    assert M.sparsity(g.tensors["pw1/w"].data) == 0.0  # the input graph is not modified
    e_calibrated, e_magnitude = output_error(g, p, held_out), output_error(g, m, held_out)
    assert e_calibrated < 0.7 * e_magnitude, (e_calibrated, e_magnitude)


def test_reconstruct_rejects_bad_settings():
    g = net()
    x = np.zeros((2, 3, 16, 16), np.float32)
    with pytest.raises(ValueError):
        reconstruct(g, x, 1.0, progress=False)
    with pytest.raises(ValueError):
        reconstruct(g, x, 0.5, block=3, progress=False)


@pytest.mark.slow
def test_prune_command_calibrated_on_a_real_model(tmp_path, capsys):
    """`pysparse prune --calibrate` on hand_landmark_lite: calibrated on two photos, its landmarks
    on the third are closer to the dense model's than magnitude pruning's."""
    from pysparse import assets
    from pysparse.cli import main
    from pysparse.format.reader import read_spnn_file
    from pysparse.prune.sensitivity import image_inputs
    src = assets.model_path("hand_landmark_lite.tflite")
    calib = [str(assets.photo_path(n)) for n in ("hand_nocurl.jpg", "hand_fullcurl.jpg")]
    common = ["--sparsity", "0.7", "--block", "4"]
    cal, mag = tmp_path / "cal.spnn", tmp_path / "mag.spnn"
    assert main(["prune", str(src), *common, "--calibrate", "--images", *calib, "--calibration-size", "12",
                 "-o", str(cal)]) == 0
    assert main(["prune", str(src), *common, "-o", str(mag)]) == 0
    capsys.readouterr()
    f_cal, f_mag = read_spnn_file(cal), read_spnn_file(mag)
    assert f_cal.metadata["pruning"]["method"].startswith("calibrated")
    from pysparse.commands.prune import load_any
    dense, _ = load_any(src)
    x, _ = image_inputs(dense, [assets.photo_path("hand_halfcurl.jpg")], 0)
    out = dense.outputs[0]  # the 21 landmarks
    ref = reference.run(dense, x[0])[out]
    err_cal = np.abs(reference.run(f_cal.graph, x[0])[out] - ref).mean()
    err_mag = np.abs(reference.run(f_mag.graph, x[0])[out] - ref).mean()
    assert err_cal < 0.7 * err_mag, (err_cal, err_mag)
    from pysparse.prune import ir_report
    rows_cal = {r.name: r for r in ir_report(f_cal.graph, block=4)}
    rows_mag = {r.name: r for r in ir_report(f_mag.graph, block=4)}
    assert {n for n, r in rows_cal.items() if r.status == "pruned"} == {n for n, r in rows_mag.items() if r.status == "pruned"}
    for n, r in rows_cal.items():  # the same layers, each at the target (beyond it only by the
        if r.status == "pruned":     # model's own zeros left inside kept blocks, as with magnitude)
            assert 0.7 - 4 / r.weights <= r.sparsity <= max(0.7, rows_mag[n].sparsity) + 0.01, n


def test_reconstruct_takes_a_sparsity_per_layer():
    g = net()
    xs = np.random.default_rng(5).standard_normal((8, 3, 16, 16)).astype(np.float32)
    pruned = reconstruct(g, xs, {"pw1/w": 0.5, "pw2/w": 0.9}, min_weights=0, progress=False)
    assert np.mean(pruned.tensors["pw1/w"].data == 0) == pytest.approx(0.5, abs=0.01)
    assert np.mean(pruned.tensors["pw2/w"].data == 0) == pytest.approx(0.9, abs=0.01)
    only = reconstruct(g, xs, {"pw2/w": 0.8}, min_weights=0, progress=False)  # a layer not named stays
    np.testing.assert_array_equal(only.tensors["pw1/w"].data, g.tensors["pw1/w"].data)
    with pytest.raises(ValueError):
        reconstruct(g, xs, {"pw1/w": 1.0}, progress=False)
