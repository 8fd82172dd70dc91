"""TFLite's own sparse storage: pysparse writes it (sparsify_tflite) and reads it (densify).

LiteRT runs every sparsified model and must give exactly the dense original's outputs
(DENSIFY restores the same weights, so the arithmetic is the same); the pysparse importer
must match LiteRT on it (|diff| <= 1e-5 + 1e-5 * |LiteRT| for the small models, the rule
of test_tflite_import for the real one).
"""
import numpy as np
import pytest

from pysparse import assets, reference
from pysparse.errors import ModelFormatError
from pysparse.importers.tflite import load_tflite
from pysparse.importers.tflite_sparse import DENSE, SPARSE_CSR, DimMeta, Sparsity, densify, encode_1x1, sparsify_tflite
from tflite_builder import TFLiteBuilder, op_names, options, prune_1x1_weights, run_litert


def sparse_weight(cout, cin, sparsity, seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((cout, 1, 1, cin)).astype(dtype)
    w[rng.random(w.shape) < sparsity] = 0
    return w


def as_plain(sp) -> Sparsity:
    """The writer's SparsityParametersT as the reader's plain data."""
    dims = []
    for d in sp.dimMetadata:
        if d.format == DENSE:
            dims.append(DimMeta(DENSE, d.denseSize))
        else:
            dims.append(DimMeta(SPARSE_CSR, 0, np.array(d.arraySegments.values), np.array(d.arrayIndices.values)))
    return Sparsity(list(sp.traversalOrder), list(sp.blockMap or []), dims)


@pytest.mark.parametrize("block", [1, 2, 4])
@pytest.mark.parametrize("sparsity", [0.0, 0.6, 0.95, 1.0])
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_encode_then_densify_round_trips(block, sparsity, dtype):
    w = sparse_weight(16, 300, sparsity, dtype=dtype)  # 300 columns: u16 indices
    w[3] = 0  # an empty output channel
    values, sp = encode_1x1(w, block)
    assert values.dtype == dtype
    if block == 1:
        assert values.size == max(np.count_nonzero(w), 1)  # an all-zero weight keeps one zero
    np.testing.assert_array_equal(densify(values, w.shape, as_plain(sp)), w)


def test_densify_rejects_malformed_tensors():
    w = sparse_weight(8, 10, 0.5)
    values, sp = encode_1x1(w)
    plain = as_plain(sp)
    with pytest.raises(ModelFormatError):
        densify(values[:-1], w.shape, plain)  # one value short
    bad = as_plain(sp)
    bad.dims[3].indices = bad.dims[3].indices + 10  # columns past the end
    with pytest.raises(ModelFormatError):
        densify(values, w.shape, bad)
    bad = as_plain(sp)
    bad.dims[3].segments = bad.dims[3].segments[:-2]  # segment array too short
    with pytest.raises(ModelFormatError):
        densify(values, w.shape, bad)
    with pytest.raises(ModelFormatError):
        densify(values, w.shape, Sparsity([0, 1, 2], [], plain.dims[:3]))


def one_by_one_model(w: np.ndarray, fp16: bool, act=1):
    """x -> 3x3 conv -> 1x1 conv (weights w) -> output: the 1x1 conv is what gets sparsified."""
    cout, _, _, cin = w.shape
    b = TFLiteBuilder()
    x = b.input("x", (1, 10, 12, 3))
    h = b.tensor("h", (1, 10, 12, cin))
    b.op("CONV_2D", [x, b.const("w0", np.random.default_rng(1).standard_normal((cin, 3, 3, 3))), b.const("b0", np.zeros(cin))], [h],
         options("Conv2DOptions", padding=0, strideW=1, strideH=1, fusedActivationFunction=1))
    if fp16:
        wt = b.tensor("w1", w.shape)
        b.op("DEQUANTIZE", [b.const("w1_f16", w.astype(np.float16), np.float16)], [wt])
    else:
        wt = b.const("w1", w)
    y = b.tensor("y", (1, 10, 12, cout))
    b.op("CONV_2D", [h, wt, b.const("b1", np.arange(cout, dtype=np.float32) / cout)], [y],
         options("Conv2DOptions", padding=0, strideW=1, strideH=1, fusedActivationFunction=act))
    return b.finish([y])


X = np.random.default_rng(7).standard_normal((1, 10, 12, 3)).astype(np.float32)


@pytest.mark.parametrize("fp16,mode", [(False, "keep"), (True, "keep"), (True, "expand")])
@pytest.mark.parametrize("block", [1, 4])
def test_sparsified_model_runs_in_litert_exactly(fp16, mode, block):
    w = sparse_weight(24, 40, 0.8, seed=3, dtype=np.float16 if fp16 else np.float32).astype(np.float32)
    dense = one_by_one_model(w, fp16)
    converted = []
    sparse = sparsify_tflite(dense, min_sparsity=0.7, block=block, converted=converted, fp16=mode)
    assert [name for name, _ in converted] == ["w1_f16" if fp16 else "w1"]
    assert converted[0][1] == pytest.approx(np.mean(w == 0))
    with_dequantize = fp16 and mode == "keep"
    expected = ["DENSIFY", "CONV_2D"] + (["DEQUANTIZE"] if with_dequantize else []) + ["CONV_2D"]
    assert op_names(sparse) == expected
    for delegates in (False, True):  # builtin kernels, and the default XNNPACK delegate
        want = run_litert(dense, [X], delegates)["y"]
        got = run_litert(sparse, [X], delegates)["y"]
        if delegates and fp16 and mode == "expand":
            # XNNPACK may run fp16-stored weights with its own fp16-weight kernels, so fp32
            # storage of the same values can round differently.
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
        else:
            np.testing.assert_array_equal(got, want)
    # the pysparse importer reads the sparse storage back and matches LiteRT
    g = load_tflite(sparse)
    ours = reference.run(g, {"x": X.transpose(0, 3, 1, 2)})["y"].transpose(0, 2, 3, 1)
    np.testing.assert_allclose(ours, want, rtol=1e-5, atol=1e-5)


def test_min_sparsity_is_respected():
    w = sparse_weight(24, 40, 0.5, seed=4)
    dense = one_by_one_model(w, False)
    assert "DENSIFY" not in op_names(sparsify_tflite(dense, min_sparsity=0.7))
    assert "DENSIFY" in op_names(sparsify_tflite(dense, min_sparsity=0.4))


def test_not_a_model():
    with pytest.raises(ModelFormatError):
        sparsify_tflite(b"definitely not a model")


@pytest.mark.slow
def test_real_model_pruned_and_stored_sparse():
    """hand_landmark_full with 80% of every 1x1 weight zeroed: stored sparse, it is smaller,
    LiteRT gives exactly the pruned dense model's outputs, and pysparse imports it."""
    original = assets.model_path("hand_landmark_full.tflite").read_bytes()
    dense = prune_1x1_weights(original, 0.8)
    converted = []
    sparse = sparsify_tflite(dense, min_sparsity=0.75, converted=converted)
    names = op_names(sparse)
    n_1x1 = len(converted)
    assert n_1x1 >= 25 and names.count("DENSIFY") == n_1x1
    assert len(sparse) < 0.6 * len(dense)
    x = np.random.default_rng(0).random((1, 224, 224, 3), dtype=np.float32)
    want = run_litert(dense, [x])
    got = run_litert(sparse, [x])
    for k in want:
        np.testing.assert_array_equal(got[k], want[k])
    g = load_tflite(sparse)
    ours = reference.run(g, {"input_1": x.transpose(0, 3, 1, 2)})
    for k, t in want.items():
        scale = max(float(t.max() - t.min()), float(np.abs(t).max()))
        assert float(np.abs(ours[k] - t).max()) <= 1e-4 * scale


def mobilenet_like(size=96, seed=0, stem=16, blocks=((32, 1), (64, 2), (64, 1), (128, 2), (128, 1))) -> bytes:
    """A MobileNetV1-shaped model (3x3 stride-2 stem, depthwise + fp16 1x1 blocks, global
    mean): the structure XNNPACK's sparse (CHW) inference handles."""
    rng = np.random.default_rng(seed)
    b = TFLiteBuilder()
    x = b.input("x", (1, size, size, 3))
    h = w = size // 2
    c = stem
    y = b.tensor("stem", (1, h, w, c))
    b.op("CONV_2D", [x, b.const("w0", rng.standard_normal((c, 3, 3, 3)) * 0.3), b.const("b0", np.zeros(c))], [y],
         options("Conv2DOptions", padding=0, strideW=2, strideH=2, fusedActivationFunction=3))
    for i, (co, s) in enumerate(blocks):
        h2, w2 = -(-h // s), -(-w // s)
        d = b.tensor(f"dw{i}", (1, h2, w2, c))
        b.op("DEPTHWISE_CONV_2D", [y, b.const(f"dww{i}", rng.standard_normal((1, 3, 3, c)) * 0.3),
                                   b.const(f"dwb{i}", np.zeros(c))], [d],
             options("DepthwiseConv2DOptions", padding=0, strideW=s, strideH=s, depthMultiplier=1,
                     fusedActivationFunction=3))
        wt = b.tensor(f"pw{i}", (co, 1, 1, c))
        b.op("DEQUANTIZE", [b.const(f"pw{i}_f16", (rng.standard_normal((co, 1, 1, c)) * 0.2).astype(np.float16),
                                    np.float16)], [wt])
        p = b.tensor(f"p{i}", (1, h2, w2, co))
        b.op("CONV_2D", [d, wt, b.const(f"pb{i}", rng.standard_normal(co) * 0.1)], [p],
             options("Conv2DOptions", padding=0, strideW=1, strideH=1, fusedActivationFunction=3))
        y, h, w, c = p, h2, w2, co
    m = b.tensor("mean", (1, 1, 1, c))
    b.op("MEAN", [y, b.const("axes", np.array([1, 2], np.int32), np.int32)], [m], options("ReducerOptions", keepDims=True))
    return b.finish([m])


def test_pattern_is_the_one_xnnpack_recognises():
    """TFLite's XNNPACK delegate turns on its sparse inference when a delegated node reads
    the output of a DENSIFY whose single input is a buffer-backed fp16/fp32 tensor with
    sparsity parameters and whose output has the same type (through an fp16 -> fp32
    DEQUANTIZE too). Check exactly that structure on a MobileNet-shaped model."""
    import tflite
    dense = prune_1x1_weights(mobilenet_like(), 0.9)
    sparse = sparsify_tflite(dense, min_sparsity=0.7)
    m = tflite.Model.GetRootAsModel(sparse, 0)
    sg = m.Subgraphs(0)
    ops = [sg.Operators(k) for k in range(sg.OperatorsLength())]
    names = op_names(sparse)
    consumers = {}
    for k, op in enumerate(ops):
        for i in op.InputsAsNumpy():
            consumers.setdefault(int(i), []).append(k)
    densify = [k for k, n in enumerate(names) if n == "DENSIFY"]
    assert len(densify) == 5
    for k in densify:
        op = ops[k]
        assert op.InputsLength() == op.OutputsLength() == 1
        src, out = sg.Tensors(op.Inputs(0)), sg.Tensors(op.Outputs(0))
        assert src.Sparsity() is not None and m.Buffers(src.Buffer()).DataLength() > 0
        assert out.Buffer() == 0 or m.Buffers(out.Buffer()).DataLength() == 0  # computed, not stored
        assert src.Type() == out.Type() == tflite.TensorType.FLOAT16
        (deq,) = consumers[op.Outputs(0)]
        assert names[deq] == "DEQUANTIZE" and deq > k
        assert sg.Tensors(ops[deq].Outputs(0)).Type() == tflite.TensorType.FLOAT32
        (conv,) = consumers[ops[deq].Outputs(0)]
        assert names[conv] == "CONV_2D" and ops[conv].Inputs(1) == ops[deq].Outputs(0)
    x = np.random.default_rng(1).random((1, 96, 96, 3), dtype=np.float32)
    for delegates in (False, True):
        np.testing.assert_array_equal(run_litert(sparse, [x], delegates)["mean"],
                                      run_litert(dense, [x], delegates)["mean"])


def test_command_line(tmp_path):
    from pysparse.importers.tflite_sparse import main
    src = tmp_path / "dense.tflite"
    src.write_bytes(one_by_one_model(sparse_weight(24, 40, 0.8, seed=5), False))
    out = tmp_path / "sparse.tflite"
    assert main([str(src), str(out), "--min-sparsity", "0.7"]) == 0
    assert "DENSIFY" in op_names(out.read_bytes())
    with pytest.raises(SystemExit):
        main([str(src), str(src)])  # never overwrites its input
