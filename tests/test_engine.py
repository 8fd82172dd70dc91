"""The native engine against the numpy reference, op by op, and its loader against
truncated and corrupted files (natively and under ASan+UBSan: no sanitizer report)."""
from __future__ import annotations

import struct
import subprocess
import zlib

import numpy as np
import pytest

from pysparse import opset, reference
from pysparse.ir import Graph
from pysparse.format import read_spnn, spec
from pysparse.format.sparse import quantize
from pysparse.pack import pack
from pysparse.passes.memory import fused_bands, plan_memory, tensor_bytes

import engine_graphs as eg
from engine_native import ASAN_TOOL, ROOT, EngineError, NativeModel, load_status

OP_GRAPHS = eg.op_graphs()


def close(out: np.ndarray, ref: np.ndarray, rel: float = 1e-4) -> bool:
    scale = max(float(np.ptp(ref)), float(np.abs(ref).max()), 1e-6)
    return float(np.abs(out - ref).max()) <= rel * scale


def run_both_thread_counts(data: bytes, inputs: list) -> list:
    with NativeModel(data, threads=2) as m:
        m.set_threads(1)
        one = m.run(inputs)
        m.set_threads(2)
        two = m.run(inputs)
    for a, b in zip(one, two):
        assert np.array_equal(a, b, equal_nan=True), "outputs differ between 1 and 2 threads"
    return one


@pytest.mark.parametrize("name", sorted(OP_GRAPHS))
@pytest.mark.parametrize("sparse", [None, True])
def test_op_matches_reference(name, sparse):
    g = OP_GRAPHS[name]
    data = pack(g, sparse=sparse)
    xs = eg.random_inputs(g)
    with NativeModel(data, 1) as m:
        order = m.input_names
    outs = run_both_thread_counts(data, [xs[n] for n in order])
    ref = reference.run(g, xs)
    for n, o in zip(g.outputs, outs):
        assert o.shape == ref[n].shape
        assert close(o, ref[n]), f"{name}: max error {np.abs(o - ref[n]).max()}"


@pytest.mark.parametrize("name,kernel", [("conv_1x1_sparse", "spmm"), ("fc_sparse", "fc_sparse"),
                                         ("conv_1x1_dense", "gemm"), ("dwconv_3x3_s1", "dwconv_3x3s1"),
                                         ("dwconv_3x3_s2", "dwconv_3x3s2_c4"),
                                         ("conv_3x3_s2_first", "conv_im2col"),
                                         ("max_pool_2x2", "maxpool_2x2s2"), ("transpose_nhwc", "transpose_2d"),
                                         ("transpose_nchw", "transpose_2d"),
                                         ("transpose_middle_axes", "transpose_scalar")])
def test_kernel_choice(name, kernel):
    data = pack(OP_GRAPHS[name], sparse=kernel in ("spmm", "fc_sparse"))
    with NativeModel(data, 1) as m:
        m.set_profiling(True)
        m.run([np.zeros(s, np.float32) for s in m.input_shapes])
        kernels = [p["kernel"] for p in m.profile()]
    assert any(k.startswith(kernel) for k in kernels), kernels


@pytest.mark.parametrize("weights", ["fp16", "int8"])
@pytest.mark.parametrize("name", ["conv_1x1_dense", "conv_5x3_pad", "fc_dense", "dwconv_5x5_s1"])
def test_reduced_precision_weights(name, weights):
    """fp16/int8 weights decode exactly as the format says: compare with the reference run
    on weights rounded the same way."""
    import copy
    g = OP_GRAPHS[name]
    data = pack(g, weights=weights)
    q = copy.deepcopy(g)
    wname = g.ops[0].inputs[1]
    w = q.tensors[wname].data
    code = spec.VALUE_CODES["f16" if weights == "fp16" else "i8"]
    q.tensors[wname].data = quantize(w.reshape(w.shape[0], -1), code).reshape(w.shape)
    xs = eg.random_inputs(g)
    outs = run_both_thread_counts(data, [xs[n] for n in g.inputs])
    ref = reference.run(q, xs)
    assert close(outs[0], ref[g.outputs[0]])


def test_api_facts():
    g = OP_GRAPHS["conv_1x1_sparse"]
    data = pack(g, sparse=True, metadata={"name": "tiny"})
    with NativeModel(data, 2) as m:
        assert m.input_names == ["x0"] and m.output_names == ["y"]
        assert m.input_shapes == [(1, 64, 7, 13)] and m.output_shapes == [(1, 37, 7, 13)]
        assert m.metadata["name"] == "tiny"
        assert m.arena_bytes >= 4 * (64 + 37) * 7 * 13
        assert m.weight_bytes > 0
        with pytest.raises(EngineError) as e:
            m.set_threads(3)
        assert e.value.status == "ARGUMENT" and "1..2" in e.value.message
        m.set_profiling(True)
        m.run([np.ones((1, 64, 7, 13), np.float32)])
        prof = m.profile()
        assert [p["op"] for p in prof] == ["CONV2D"] and prof[0]["us"] >= 0


# ---- corrupted files ----------------------------------------------------------------------

def layout(data: bytes) -> dict:
    """Offsets of the parts of a .spnn file that the corruption cases edit."""
    count = struct.unpack_from("<I", data, 16)[0]
    secs = {}
    for i in range(count):
        t, off, ln, _ = struct.unpack_from("<IIII", data, 32 + 16 * i)
        secs[t] = (off, ln, 32 + 16 * i)
    g = secs[spec.SECTION_GRAPH][0]
    nt, nops, ni, no, _ = struct.unpack_from("<5I", data, g)
    ops, pos = [], g + 32 + 40 * nt + 4 * ni + 4 * no
    for _ in range(nops):
        code, na, nin, nout = struct.unpack_from("<HHBB", data, pos)
        ops.append((pos, code, nin, nout, na))
        pos += 12 + 4 * (nin + nout + na)
    return {"sections": secs, "graph": g, "tensors": g + 32, "num_tensors": nt, "ops": ops,
            "io": g + 32 + 40 * nt, "weights": secs[spec.SECTION_WEIGHTS][0]}


def refresh_crcs(buf: bytearray) -> bytearray:
    """Makes the CRCs right again, so a case reaches the check it is about."""
    count = struct.unpack_from("<I", buf, 16)[0]
    for i in range(count):
        e = 32 + 16 * i
        _, off, ln, _ = struct.unpack_from("<IIII", buf, e)
        if off + ln <= len(buf):
            struct.pack_into("<I", buf, e + 12, zlib.crc32(bytes(buf[off:off + ln])))
    struct.pack_into("<I", buf, 20, zlib.crc32(bytes(buf[:20]) + bytes(buf[32:32 + 16 * min(count, 64)])))
    return buf


def edit(data: bytes, fn, crc: bool = True) -> bytes:
    buf = bytearray(data)
    fn(buf, layout(data))
    return bytes(refresh_crcs(buf) if crc else buf)


def put(fmt, where, *values):
    return lambda b, L: struct.pack_into(fmt, b, where(L), *values)


@pytest.fixture(scope="module")
def base() -> bytes:
    """A valid file with a sparse 1x1 conv, a dense conv, a binary op and a pool."""
    g = eg._single("CONV2D", [(1, 16, 6, 6)], (1, 8, 6, 6),
                   [eg._w(np.random.default_rng(3), 8, 16, 1, 1, zero=0.7), np.ones(8)])
    return pack(g, sparse=True)


def sparse_weight(L, data):
    """Byte offset of the sparse weight's descriptor."""
    w = L["weights"]
    n = struct.unpack_from("<I", data, w)[0]
    for i in range(n):
        if data[w + 16 + 32 * i] == spec.ENCODING_SPARSE:
            return w + 16 + 32 * i
    raise AssertionError("no sparse weight")


def corruption_cases(data: bytes) -> dict[str, tuple[bytes, str, str]]:
    """name -> (bytes, expected status, expected words in the message)."""
    L = layout(data)
    sw = sparse_weight(L, data)
    blob = L["weights"] + struct.unpack_from("<I", data, sw + 20)[0]
    conv_op = L["ops"][0][0]
    x_rec = L["tensors"] + 40 * struct.unpack_from("<I", data, conv_op + 12)[0]
    y_rec = L["tensors"] + 40 * struct.unpack_from("<I", data, conv_op + 12 + 4 * L["ops"][0][2])[0]
    c = {
        "empty": (b"", "FORMAT", "shorter than the 32-byte header"),
        "bad_magic": (b"XPNN" + data[4:], "FORMAT", "magic"),
        "version_2": (edit(data, put("<H", lambda L: 4, 2), crc=False), "FORMAT", "version 2"),
        "flags": (edit(data, put("<I", lambda L: 12, 1)), "FORMAT", "flags"),
        "no_sections": (edit(data, put("<I", lambda L: 16, 0)), "FORMAT", "section count"),
        "too_many_sections": (edit(data, put("<I", lambda L: 16, 65)), "FORMAT", "section count"),
        "file_size": (edit(data, put("<Q", lambda L: 24, len(data) + 16)), "FORMAT", "truncated"),
        "header_crc": (edit(data, put("<I", lambda L: 20, 12345), crc=False), "FORMAT", "header CRC"),
        "section_crc": (edit(data, lambda b, L: b.__setitem__(L["graph"] + 40, b[L["graph"] + 40] ^ 1), crc=False),
                        "FORMAT", "section GRAPH CRC"),
        "unknown_section": (edit(data, put("<I", lambda L: L["sections"][4][2], 9)), "FORMAT", "unknown type 9"),
        "duplicate_section": (edit(data, put("<I", lambda L: L["sections"][4][2], 1)), "FORMAT", "twice"),
        "misaligned_section": (edit(data, put("<I", lambda L: L["sections"][4][2] + 4, L["sections"][4][0] + 4)),
                               "FORMAT", "misaligned or outside"),
        "section_past_end": (edit(data, put("<I", lambda L: L["sections"][4][2] + 8, 1 << 30)), "FORMAT",
                             "outside the file"),
        "overlapping_sections": (edit(data, put("<I", lambda L: L["sections"][4][2] + 4, L["sections"][3][0])),
                                 "FORMAT", "overlap"),
        "tensor_name": (edit(data, put("<I", lambda L: L["tensors"] + 28, 1 << 20)), "FORMAT", "not a string"),
        "tensor_ndim": (edit(data, put("<B", lambda L: x_rec + 2, 7)), "FORMAT", "ndim 7"),
        "tensor_dim_zero": (edit(data, put("<I", lambda L: x_rec + 8, 0)), "FORMAT", "dim 1 is 0"),
        "tensor_huge": (edit(data, put("<4I", lambda L: x_rec + 4, 1 << 10, 1 << 10, 1 << 10, 1)), "FORMAT",
                        "2^28"),
        "tensor_kind": (edit(data, put("<B", lambda L: x_rec, 5)), "FORMAT", "unknown kind 5"),
        "tensor_dtype": (edit(data, put("<B", lambda L: x_rec + 1, 1)), "FORMAT", "dtype"),
        "arena_outside": (edit(data, put("<I", lambda L: y_rec + 36, 1 << 24)), "FORMAT", "outside the"),
        "arena_misaligned": (edit(data, put("<I", lambda L: y_rec + 36, 4)), "FORMAT", "misaligned"),
        "arena_too_small": (edit(data, put("<I", lambda L: L["graph"] + 16, 64)), "FORMAT", "arena"),
        "output_over_input": (edit(data, lambda b, L: struct.pack_into("<I", b, y_rec + 36,
                                                                       struct.unpack_from("<I", b, x_rec + 36)[0])),
                              "FORMAT", "while it is live"),
        "op_code": (edit(data, put("<H", lambda L: conv_op, 99)), "UNSUPPORTED", "op code 99"),
        "op_attrs": (edit(data, put("<H", lambda L: conv_op + 2, 9)), "FORMAT", "after its last op"),
        "op_input_id": (edit(data, put("<I", lambda L: conv_op + 12, 1000)), "FORMAT", "input 0 is tensor 1000"),
        "op_absent_required": (edit(data, put("<I", lambda L: conv_op + 16, 0xFFFFFFFF)), "FORMAT",
                               "required input 1 is absent"),
        "op_reads_unwritten": (edit(data, put("<I", lambda L: conv_op + 12,
                                              struct.unpack_from("<I", data, conv_op + 24)[0])),
                               "FORMAT", "before it is written"),
        "op_stride_zero": (edit(data, put("<i", lambda L: conv_op + 12 + 4 * 4, 0)), "FORMAT", "stride_h"),
        "op_act": (edit(data, put("<i", lambda L: conv_op + 12 + 4 * 4 + 36, 7)), "FORMAT", "activation 7"),
        # same element count, so the arena the plan needs is unchanged
        "op_output_shape": (edit(data, put("<2I", lambda L: y_rec + 12, 4, 9)), "FORMAT", "expected [1, 8, 6, 6]"),
        "op_groups": (edit(data, put("<i", lambda L: conv_op + 12 + 4 * 4 + 32, 3)), "FORMAT", "groups 3"),
        "weight_index": (edit(data, put("<I", lambda L: L["tensors"] + 40 * struct.unpack_from(
            "<I", data, conv_op + 16)[0] + 32, 77)), "FORMAT", "weight index 77"),
        "weight_encoding": (edit(data, put("<B", lambda L: sw, 3)), "FORMAT", "unknown encoding 3"),
        "weight_block": (edit(data, put("<B", lambda L: sw + 2, 3)), "FORMAT", "sparse block 3"),
        "weight_i8_sparse": (edit(data, put("<B", lambda L: sw + 1, 2)), "FORMAT", "f32 or f16"),
        "weight_nnz": (edit(data, lambda b, L: struct.pack_into("<I", b, sw + 12,
                                                                struct.unpack_from("<I", b, sw + 12)[0] - 1)),
                       "FORMAT", "header says"),
        "weight_count_too_big": (edit(data, put("<I", lambda L: blob, 1000)), "FORMAT", "block 0 stores 1000"),
        "weight_offset": (edit(data, put("<I", lambda L: sw + 20, 1 << 24)), "FORMAT", "outside the section"),
        "weight_reserved": (edit(data, put("<I", lambda L: sw + 28, 1)), "FORMAT", "reserved"),
        "graph_reserved": (edit(data, put("<I", lambda L: L["graph"] + 28, 1)), "FORMAT", "reserved"),
        "graph_counts": (edit(data, put("<I", lambda L: L["graph"], 1 << 30)), "FORMAT", "do not fit"),
        "graph_input_kind": (edit(data, put("<I", lambda L: L["io"], struct.unpack_from(
            "<I", data, conv_op + 16)[0])), "FORMAT", "not of kind input"),
    }
    # A step that goes backwards: rewrite the second step of the first block to 0.
    counts = struct.unpack_from("<I", data, blob)[0]
    nnz = struct.unpack_from("<I", data, sw + 12)[0]
    rows = struct.unpack_from("<I", data, sw + 4)[0]
    block = data[sw + 2]
    nblocks = rows // block + rows % block
    steps_at = blob + 4 * nblocks + 4 * nnz
    if counts >= 2 and data[sw + 3] == 1:
        c["weight_step_repeat"] = (edit(data, put("<B", lambda L: steps_at + 1, 0)), "FORMAT", "repeats a column")
        c["weight_step_past_cols"] = (edit(data, put("<B", lambda L: steps_at, 200)), "FORMAT", "steps to column")
    return c


def test_truncations_rejected(base):
    for n in list(range(0, 64)) + list(range(64, len(base), max(1, len(base) // 97))) + [len(base) - 1]:
        status, message = load_status(base[:n])
        assert status == "FORMAT", (n, status, message)
        assert message


def test_bit_flips_rejected(base):
    rng = np.random.default_rng(0)
    for pos in rng.choice(len(base), size=200, replace=False):
        buf = bytearray(base)
        buf[pos] ^= 1 << int(rng.integers(8))
        status, message = load_status(bytes(buf))
        # a flip in the padding between sections changes nothing the reader checks
        assert status in ("FORMAT", "OK"), (pos, status, message)
        if status == "OK":
            assert base[pos] == 0


def test_corruptions_have_clear_errors(base):
    assert load_status(base) == ("OK", "")
    for name, (data, status, words) in corruption_cases(base).items():
        got, message = load_status(data)
        assert got == status and words in message, (name, got, message)


def test_corruptions_clean_under_sanitizers(base, tmp_path):
    """The same cases, truncations and random corruptions, each loaded (and, if it loads,
    run) by the engine built with ASan+UBSan: the expected statuses, and no report."""
    assert ASAN_TOOL.exists(), "build/asan/spnn_tool missing: run make -C wasm native"
    files, expected = [], []
    for name, (data, status, words) in corruption_cases(base).items():
        p = tmp_path / f"{name}.spnn"
        p.write_bytes(data)
        files.append(p)
        expected.append(status)
    rng = np.random.default_rng(1)
    for i in range(150):  # random corruptions with the CRCs made right again
        buf = bytearray(base)
        for _ in range(int(rng.integers(1, 4))):
            buf[int(rng.integers(32, len(buf)))] = int(rng.integers(256))
        p = tmp_path / f"random{i}.spnn"
        p.write_bytes(bytes(refresh_crcs(buf)))
        files.append(p)
        expected.append(None)
    r = subprocess.run([str(ASAN_TOOL), "check", *map(str, files)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Sanitizer" not in r.stderr and "runtime error" not in r.stderr, r.stderr[-3000:]
    lines = r.stdout.splitlines()
    assert len(lines) == len(files)
    names = {1: "FORMAT", 2: "UNSUPPORTED", 0: "OK", 3: "NOMEM"}
    for line, want, path in zip(lines, expected, files):
        status, message, _ = line.split("\t")
        got = names.get(int(status), status)
        if want is not None:
            assert got == want, (path.name, line)
        assert got in ("OK", "FORMAT", "UNSUPPORTED"), line
        assert got == "OK" or message, line


def test_thread_counts_bit_identical():
    """A model loaded for 4 threads gives the same bits on 1, 2, 3 and 4 of them."""
    r = np.random.default_rng(5)
    g = eg._single("CONV2D", [(1, 48, 40, 40)], (1, 64, 40, 40), [eg._w(r, 64, 48, 1, 1, zero=0.8), eg._w(r, 64)], act=1)
    data = pack(g, sparse=True)
    x = eg.random_inputs(g)["x0"]
    with NativeModel(data, threads=4) as m:
        outs = []
        for t in (1, 2, 3, 4, 1):
            m.set_threads(t)
            outs.append(m.run([x])[0])
    for o in outs[1:]:
        assert np.array_equal(o, outs[0])
    assert close(outs[0], reference.run(g, {"x0": x})["y"])


def test_models_share_one_thread_pool():
    """Models loaded for 2 and 4 threads share the process's pool (the largest made so far):
    run in turn, each gives the bits it gives alone, and freeing one leaves the other
    running. Two Python threads running two such models at once (the engine call releases
    the GIL) also get the right outputs: a run that finds the pool taken goes on one thread,
    over the same grid, so the bits do not change."""
    import threading

    r = np.random.default_rng(11)
    g = eg._single("CONV2D", [(1, 48, 40, 40)], (1, 64, 40, 40),
                   [eg._w(r, 64, 48, 1, 1, zero=0.8), eg._w(r, 64)], act=1)
    data = pack(g, sparse=True)
    x = eg.random_inputs(g)["x0"]
    with NativeModel(data, threads=2) as alone:
        want = alone.run([x])[0]
    assert close(want, reference.run(g, {"x0": x})["y"])
    a, b = NativeModel(data, threads=2), NativeModel(data, threads=4)
    try:
        for _ in range(3):
            assert np.array_equal(a.run([x])[0], want)
            assert np.array_equal(b.run([x])[0], want)
        outs = {0: [], 1: []}

        def loop(k, m):
            for _ in range(40):
                outs[k].append(m.run([x])[0])

        threads = [threading.Thread(target=loop, args=(k, m)) for k, m in enumerate((a, b))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert all(np.array_equal(o, want) for k in outs for o in outs[k])
        assert len(outs[0]) == len(outs[1]) == 40
        b.close()
        assert np.array_equal(a.run([x])[0], want)
    finally:
        a.close()
        b.close()


def test_thread_pool_under_thread_sanitizer():
    """`make -C wasm threadpool-stress`: pools of 2-4 threads run jobs of random sizes, grain
    and thread counts, with pauses between runs that leave the workers spinning, napping or
    asleep, under ThreadSanitizer, once with workers that nap after every job (as where waking
    a thread is slow) and once with workers that never nap. Every element of every job is
    handled exactly once, no data race is reported, and every pool stops (no lost wake-up:
    a hang fails the timeout)."""
    proc = subprocess.run(["make", "-s", "-C", str(ROOT / "wasm"), "threadpool-stress"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.split() == ["ok", "ok"], proc.stdout
    assert "ThreadSanitizer" not in proc.stderr, proc.stderr


@pytest.mark.parametrize("sparse", [True, False])
@pytest.mark.parametrize("cin,cout,hw", [(960, 160, 7), (160, 960, 7), (96, 70, 10), (64, 37, 5)])
def test_small_plane_1x1_whole_on_one_thread(sparse, cin, cout, hw):
    """1x1 layers on planes under 128 pixels are cut into output-channel parts for threads;
    a model loaded for one thread keeps them whole. The same bits either way, on every thread
    count of the cut model."""
    r = np.random.default_rng(cin + cout + hw)
    g = eg._single("CONV2D", [(1, cin, hw, hw)], (1, cout, hw, hw),
                   [eg._w(r, cout, cin, 1, 1, zero=0.8 if sparse else 0.0), eg._w(r, cout)], act=1)
    data = pack(g, sparse=sparse)
    x = eg.random_inputs(g)["x0"]
    with NativeModel(data, threads=1) as m:
        whole, whole_bytes = m.run([x])[0], m.weight_bytes
    for loaded in (2, 4):
        with NativeModel(data, threads=loaded) as m:
            if sparse:  # each sparse part is packed on its own: the cut shows in the bytes
                assert m.weight_bytes > whole_bytes, (loaded, m.weight_bytes, whole_bytes)
            for t in range(1, loaded + 1):
                m.set_threads(t)
                assert np.array_equal(m.run([x])[0], whole), f"loaded for {loaded}, run on {t}"
    assert close(whole, reference.run(g, {"x0": x})["y"])


@pytest.mark.parametrize("k,stride,hw,pad", [(3, 1, 64, 1), (3, 2, 112, 1), (5, 1, 48, 2), (5, 2, 96, 2),
                                           (3, 1, 61, 0), (3, 2, 151, 1), (5, 2, 131, 1)])
def test_depthwise_row_bands_on_every_thread_count(k, stride, hw, pad):
    """Depthwise layers on large planes split their rows between threads: the same bits on
    1 to 4 threads, and the reference's values."""
    r = np.random.default_rng(k * 100 + hw)
    c = 24
    out = (hw + 2 * pad - k) // stride + 1
    g = eg._single("CONV2D", [(1, c, hw, hw)], (1, c, out, out), [eg._w(r, c, 1, k, k), eg._w(r, c)],
                   groups=c, stride_h=stride, stride_w=stride, dilation_h=1, dilation_w=1,
                   pad_top=pad, pad_left=pad, pad_bottom=pad, pad_right=pad, act=1)
    x = eg.random_inputs(g)["x0"]
    outs = {}
    for t in (4, 3, 2, 1):  # a fresh model each: a row no band wrote cannot keep an earlier run's value
        with NativeModel(pack(g), threads=t) as m:
            outs[t] = m.run([x])[0]
    for t in (2, 3, 4):
        assert np.array_equal(outs[t], outs[1]), f"{t} threads"
    assert close(outs[1], reference.run(g, {"x0": x})["y"])


@pytest.mark.parametrize("batch", [2, 3])
@pytest.mark.parametrize("layer", ["sparse_1x1_large", "sparse_1x1_small", "dense_1x1_large",
                                   "dense_1x1_small", "depthwise", "depthwise_banded", "conv_3x3"])
def test_batch_equals_its_images_on_every_thread_count(layer, batch):
    """Image k of a batch gives the bits of the batch-1 model on image k, whether the
    threads split each image (batch 3 on 2 threads) or take whole images (batch 2)."""
    r = np.random.default_rng(11)
    cin, cout, k, groups, zero, hw = {
        "sparse_1x1_large": (48, 64, 1, 1, 0.8, 19),   # 361 pixels: split by pixels
        "sparse_1x1_small": (64, 96, 1, 1, 0.8, 7),    # 49 pixels: split by channel parts
        "dense_1x1_large": (24, 40, 1, 1, 0.0, 19),
        "dense_1x1_small": (64, 96, 1, 1, 0.0, 7),
        "depthwise": (32, 32, 3, 32, 0.0, 17),
        "depthwise_banded": (16, 16, 3, 16, 0.0, 72),  # rows split between threads
        "conv_3x3": (3, 16, 3, 1, 0.0, 23),
    }[layer]
    consts = [eg._w(r, cout, cin // groups, k, k, zero=zero), eg._w(r, cout)]
    pad = k // 2

    def graph(n):
        return eg._single("CONV2D", [(n, cin, hw, hw)], (n, cout, hw, hw), consts, groups=groups,
                          stride_h=1, stride_w=1, dilation_h=1, dilation_w=1,
                          pad_top=pad, pad_left=pad, pad_bottom=pad, pad_right=pad, act=1)
    images = r.standard_normal((batch, cin, hw, hw)).astype(np.float32)
    sparse = True if zero else None
    with NativeModel(pack(graph(1), sparse=sparse), threads=1) as one:
        want = np.concatenate([one.run([images[i:i + 1]])[0] for i in range(batch)])
    with NativeModel(pack(graph(batch), sparse=sparse), threads=4) as many:
        for t in (4, 3, 2, 1):  # the most threads first, on a fresh arena
            many.set_threads(t)
            assert np.array_equal(many.run([images])[0], want), f"{t} threads"


def _clean_under_asan(data: bytes, x, ref, tmp_path, threads=3):
    """The packed model run on `threads` threads by the ASan/UBSan build of the engine's tool:
    no report, and the reference's values."""
    model, inp, out = tmp_path / "m.spnn", tmp_path / "in.bin", tmp_path / "out.bin"
    model.write_bytes(data)
    x.tofile(inp)
    r = subprocess.run([str(ASAN_TOOL), "run", str(model), str(threads), str(inp), str(out)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "Sanitizer" not in r.stderr and "runtime error" not in r.stderr, r.stderr[-3000:]
    assert close(np.fromfile(out, np.float32).reshape(ref.shape), ref)


def _on_1_to_4_threads(graphs: dict, x, sparse):
    """Each graph (input "x", output "y") packed and run natively on 4, 3, 2 and 1 threads:
    the outputs by (key, threads), the kernels by key and op name, and the reference's output
    (the same for every graph), which the 1-thread run matches."""
    outs, kernels = {}, {}
    for key, g in graphs.items():
        for t in (4, 3, 2, 1):
            with NativeModel(pack(g, sparse=sparse), threads=t) as m:
                m.set_profiling(True)
                outs[key, t] = m.run([x])[0]
                kernels[key] = {p["name"]: p["kernel"] for p in m.profile()}
        ref = reference.run(g, {"x": x})["y"]
        assert close(outs[key, 1], ref), f"{key}: max error {np.abs(outs[key, 1] - ref).max()}"
    return outs, kernels, ref


def _residual_graph(cin, cout, hw, batch, zero, skip_first, act=1, in_place_chain=False):
    """y = ADD(conv1x1(x), RELU(x) or a second conv's output), the skip computed before the
    convolution (the engine folds the add into it) or after it (it cannot)."""
    r = np.random.default_rng(cin * 31 + hw)
    g = Graph()
    g.add_tensor("x", (batch, cin, hw, hw))
    g.inputs = ["x"]
    w = g.add_constant("w", eg._w(r, cout, cin, 1, 1, zero=zero))
    b = g.add_constant("b", eg._w(r, cout))
    conv = dict(stride_h=1, stride_w=1, dilation_h=1, dilation_w=1, pad_top=0, pad_left=0,
                pad_bottom=0, pad_right=0, groups=1, act=0)
    g.add_tensor("t", (batch, cout, hw, hw))
    g.add_tensor("s", (batch, cout, hw, hw))
    g.add_tensor("y", (batch, cout, hw, hw))
    if cin == cout:
        skip_op = ("RELU", ["x"], ["s"], {})
    else:
        w2 = g.add_constant("w2", eg._w(r, cout, cin, 1, 1))
        skip_op = ("CONV2D", ["x", w2], ["s"], dict(conv, act=1))
    steps = [skip_op, ("CONV2D", ["x", w, b], ["t"], conv)]
    if not skip_first:
        steps.reverse()
    for i, (typ, ins, outs, attrs) in enumerate(steps):
        g.add_op(typ, ins, outs, f"op{i}", **attrs)
    g.add_op("ADD", ["t", "s"], ["y"], "residual", act=act)
    g.outputs = ["y"]
    g.validate()
    return g



def _expand_depthwise_graph(cin, c, h, w, k, stride, pads, zero, keep_t):
    """y = depthwise(conv1x1(x)): the engine runs the two band by band where only the depthwise
    layer reads the 1x1 layer's output (keep_t: that output is a graph output too, so it
    cannot)."""
    r = np.random.default_rng(cin * 7 + c + h)
    g = Graph()
    g.add_tensor("x", (1, cin, h, w))
    g.inputs = ["x"]
    pt, pl, pb, pr = pads
    oh, ow = (h + pt + pb - k) // stride + 1, (w + pl + pr - k) // stride + 1
    g.add_tensor("t", (1, c, h, w))
    g.add_tensor("y", (1, c, oh, ow))
    one = dict(stride_h=1, stride_w=1, dilation_h=1, dilation_w=1, pad_top=0, pad_left=0,
               pad_bottom=0, pad_right=0, groups=1)
    g.add_op("CONV2D", ["x", g.add_constant("w", eg._w(r, c, cin, 1, 1, zero=zero)),
                        g.add_constant("b", eg._w(r, c))], ["t"], "expand", act=2, **one)
    g.add_op("CONV2D", ["t", g.add_constant("wd", eg._w(r, c, 1, k, k)), g.add_constant("bd", eg._w(r, c))],
             ["y"], "depthwise", act=0, **dict(one, stride_h=stride, stride_w=stride, pad_top=pt,
                                               pad_left=pl, pad_bottom=pb, pad_right=pr, groups=c))
    g.outputs = ["y", "t"] if keep_t else ["y"]
    g.validate()
    return g


@pytest.mark.parametrize("zero", [0.8, 0.0])
@pytest.mark.parametrize("cin,c,h,w,k,stride,pads", [
    (24, 96, 112, 112, 3, 2, (0, 0, 1, 1)),  # MobileNetV2's first expansion, TF padding
    (16, 112, 72, 72, 3, 1, (1, 1, 1, 1)),
    (16, 128, 71, 69, 3, 2, (1, 1, 1, 1)),
    (8, 80, 97, 80, 5, 2, (2, 2, 2, 2)),
    (12, 80, 90, 84, 5, 1, (2, 2, 2, 2)),
    (8, 1024, 24, 24, 3, 1, (1, 1, 1, 1)),  # many channels: bands of a few rows
    (300, 64, 96, 96, 3, 1, (1, 1, 1, 1)),  # the sparse 1x1 layer in column slices
    (8, 64, 100, 100, 7, 1, (3, 3, 3, 3)),  # a depthwise kernel size without its own kernel
])
def test_expansion_and_depthwise_run_band_by_band(zero, cin, c, h, w, k, stride, pads, tmp_path):
    """A 1x1 layer whose output only a depthwise layer reads runs with it band by band (the
    depthwise row in the profile says "fused"), on 1 to 4 threads, with the same bits as the
    two layers run one after the other (for a stride-2 layer also where it reads split rows),
    and the reference's values; on 3 threads under ASan and UBSan with no report."""
    sparse = True if zero else None
    x = np.random.default_rng(3).standard_normal((1, cin, h, w)).astype(np.float32)
    outs, kernels, ref = _on_1_to_4_threads(
        {keep_t: _expand_depthwise_graph(cin, c, h, w, k, stride, pads, zero, keep_t) for keep_t in (False, True)},
        x, sparse)
    assert kernels[False]["depthwise"] == "fused", kernels[False]
    # a sparse expansion writes rows a multiple of 8 wide split by column parity for a 3x3
    # stride-2 layer, which reads them in place ("_split")
    split = "_split" if zero and k == 3 and stride == 2 and w % 8 == 0 else ""
    assert kernels[False]["expand"].endswith("+" + kernels[True]["depthwise"] + split), kernels
    assert kernels[True]["depthwise"] != "fused", kernels[True]
    for keep_t, t in outs:
        assert np.array_equal(outs[keep_t, t], outs[True, 1]), f"fused: {not keep_t}, {t} threads"
    data = pack(_expand_depthwise_graph(cin, c, h, w, k, stride, pads, zero, False), sparse=sparse)
    _clean_under_asan(data, x, ref, tmp_path)

@pytest.mark.parametrize("zero", [0.8, 0.0])
@pytest.mark.parametrize("cin,cout,hw,batch", [(24, 24, 19, 1), (32, 48, 7, 1), (16, 16, 12, 3),
                                               (40, 40, 7, 2), (300, 40, 9, 1), (520, 520, 7, 2)])
def test_residual_add_folded_into_the_convolution(zero, cin, cout, hw, batch):
    """ADD(conv1x1(x), skip), skip written before the convolution: the convolution adds it
    itself (the add's profile row says "folded"), with the same bits as the two ops run one
    after the other (the same graph with the skip computed after the convolution) on 1 to 4
    threads, and the reference's values."""
    sparse = True if zero else None
    x = np.random.default_rng(7).standard_normal((batch, cin, hw, hw)).astype(np.float32)
    outs, kernels, _ = _on_1_to_4_threads(
        {first: _residual_graph(cin, cout, hw, batch, zero, skip_first=first) for first in (True, False)}, x, sparse)
    assert kernels[True]["residual"] == "folded", kernels[True]
    assert kernels[False]["residual"] != "folded", kernels[False]
    for first, t in outs:
        assert np.array_equal(outs[first, t], outs[False, 1]), f"skip first: {first}, {t} threads"


def _inverted_residual_graph(c, e, hw, stride, zero, residual, keep_d=False, expand=True):
    """MobileNetV2's block: y = conv1x1(depthwise3x3(conv1x1(x))) (+ x). keep_d: the
    depthwise output is a graph output too (second), so no other layer can run with it.
    expand=False: a block with no expansion (BlazeFace's), x of e channels and
    y = conv1x1(depthwise3x3(x))."""
    r = np.random.default_rng(c * 13 + e + hw)
    g = Graph()
    g.add_tensor("x", (1, c if expand else e, hw, hw))
    g.inputs = ["x"]
    oh = (hw + 2 - 3) // stride + 1
    if expand:
        g.add_tensor("t", (1, e, hw, hw))
    g.add_tensor("d", (1, e, oh, oh))
    g.add_tensor("p" if residual else "y", (1, c, oh, oh))
    one = dict(stride_h=1, stride_w=1, dilation_h=1, dilation_w=1, pad_top=0, pad_left=0,
               pad_bottom=0, pad_right=0, groups=1)
    if expand:
        g.add_op("CONV2D", ["x", g.add_constant("we", eg._w(r, e, c, 1, 1, zero=zero)),
                            g.add_constant("be", eg._w(r, e))], ["t"], "expand", act=2, **one)
    g.add_op("CONV2D", ["t" if expand else "x", g.add_constant("wd", eg._w(r, e, 1, 3, 3)),
                        g.add_constant("bd", eg._w(r, e))],
             ["d"], "depthwise", act=2, **dict(one, stride_h=stride, stride_w=stride, pad_top=1, pad_left=1,
                                               pad_bottom=1, pad_right=1, groups=e))
    g.add_op("CONV2D", ["d", g.add_constant("wp", eg._w(r, c, e, 1, 1, zero=zero)),
                        g.add_constant("bp", eg._w(r, c))], ["p" if residual else "y"], "project", act=0, **one)
    if residual:
        g.add_tensor("y", (1, c, oh, oh))
        g.add_op("ADD", ["p", "x"], ["y"], "residual", act=0)
    g.outputs = ["y", "d"] if keep_d else ["y"]
    g.validate()
    return g


@pytest.mark.parametrize("threads", [1, 2])
def test_inputs_keep_their_values_across_runs(threads):
    """The plan lets later tensors reuse a graph input's arena bytes once its last reader
    has run (here the block's input, read by the expansion only), but the engine gives inputs
    buffers of their own: after a run the input still holds what was written, and running it
    again without writing it gives the same outputs."""
    g = _inverted_residual_graph(24, 144, 28, 1, 0.8, False)
    data = pack(g, sparse=True)
    offsets = read_spnn(data).offsets
    ends = {n: offsets[n] + tensor_bytes(g, n) for n in offsets}
    assert any(n != "x" and offsets[n] < ends["x"] and offsets["x"] < ends[n] for n in offsets), \
        "the plan no longer reuses the input's bytes: this test checks nothing"
    x = np.random.default_rng(3).standard_normal((1, 24, 28, 28)).astype(np.float32)
    ref = reference.run(g, {"x": x})["y"]
    with NativeModel(data, threads) as m:
        first = m.run([x])[0]
        assert close(first, ref)
        assert np.array_equal(m.input_values(0), x)
        assert np.array_equal(m.run_in_place()[0], first)


def test_memory_plan_keeps_a_block_apart_for_its_band_walk():
    """The packer's plan keeps the expansion's input and output live through the projection
    where a sparse projection may join the bands (so the projection's output shares bytes
    with neither), the input only through the depthwise op where the pair alone goes band by
    band or a smaller block may run as a channel chain (both write the depthwise output while
    the expansion's input is still read), and nothing where the engine runs the layers one
    after the other: a dense projection on a plane too small for the pair alone."""
    g = _inverted_residual_graph(24, 144, 56, 1, 0.8, residual=False)  # 1.8 MB expanded
    assert fused_bands(g) == fused_bands(g, sparse={"wp"}) == {"x": 2, "t": 2}
    offsets, _ = plan_memory(g)
    for other in ("x", "t", "d"):
        lo, hi = offsets[other], offsets[other] + tensor_bytes(g, other)
        assert offsets["y"] + tensor_bytes(g, "y") <= lo or hi <= offsets["y"], other
    assert fused_bands(g, sparse=set()) == {}
    assert fused_bands(_inverted_residual_graph(24, 144, 56, 1, 0.8, residual=False, keep_d=True)) == {}
    assert fused_bands(_inverted_residual_graph(16, 96, 112, 2, 0.8, residual=False, keep_d=True)) == {"x": 1}
    assert fused_bands(_inverted_residual_graph(16, 96, 112, 2, 0.8, residual=False), sparse=set()) == {"x": 1}
    assert fused_bands(_inverted_residual_graph(24, 144, 28, 1, 0.8, residual=False)) == {"x": 1}
    assert fused_bands(_inverted_residual_graph(24, 144, 28, 1, 0.8, residual=False), sparse=set()) == {}


@pytest.mark.parametrize("c,e,hw,stride,residual", [
    (16, 96, 112, 2, False),   # MobileNetV2's first expansion block
    (24, 144, 56, 1, True),    # its 56x56 block, the residual add folded into the projection
    (24, 144, 56, 2, False),   # a stride-2 block into 28x28
    (20, 120, 57, 1, True),    # odd sizes: rows and pixels that split unevenly
    (40, 600, 48, 1, False),   # the projection in column slices
    (16, 2048, 12, 1, False),  # too few rows for four threads' bands: one by one there
])
def test_inverted_residual_block_runs_band_by_band(c, e, hw, stride, residual, tmp_path):
    """Expansion, depthwise and sparse projection, where each alone reads the one before, run
    as one walk over bands of rows (the expansion's profile kernel names all three, the other
    two rows read "fused") where the model is loaded for two threads, and on one thread only
    where the expansion's output is over 2 MB (as for the pair alone); on 1 to 4 threads with
    the same bits as the layers run one after the other on one thread (the block with the
    depthwise output kept as a graph output, where the projection cannot join), and the
    reference's values; on 3 threads under ASan and UBSan with no report."""
    x = np.random.default_rng(5).standard_normal((1, c, hw, hw)).astype(np.float32)
    graphs = {keep: _inverted_residual_graph(c, e, hw, stride, 0.8, residual, keep_d=keep) for keep in (False, True)}
    outs, kernels, ref = _on_1_to_4_threads(graphs, x, True)
    with NativeModel(pack(graphs[False], sparse=True), threads=2) as m:
        m.set_profiling(True)
        m.run([x])
        two = {p["name"]: p["kernel"] for p in m.profile()}
    assert two["depthwise"] == two["project"] == "fused", two
    assert two["expand"].endswith("+" + kernels[True]["project"]), two
    walked_on_one = e * hw * hw * 4 > 2 * 1024 * 1024
    assert (kernels[False]["depthwise"] == kernels[False]["project"] == "fused") == walked_on_one, kernels
    assert kernels[True]["project"] != "fused", kernels[True]
    for t in (4, 3, 2, 1):  # (loaded for more threads, the projection alone may sum in parts)
        assert np.array_equal(outs[False, t], outs[True, 1]), f"{t} threads"
    _clean_under_asan(pack(graphs[False], sparse=True), x, ref, tmp_path)


@pytest.mark.parametrize("c,e,hw,stride,residual", [
    (32, 192, 28, 1, True),    # MobileNetV2's 28x28 blocks
    (64, 384, 14, 1, True),    # 14x14, the projection in column slices
    (24, 144, 40, 2, False),   # a stride-2 block into 20x20
    (40, 99, 9, 1, True),      # channels that do not divide evenly
])
def test_layers_around_channel_split_depthwise(c, e, hw, stride, residual, tmp_path):
    """Around a depthwise layer whose channels the threads split, the 1x1 layers keep to its
    channels, in one part per thread the model was loaded for: the sparse projection sums its
    input channels per part, then adds the parts. Where each of the three layers alone reads
    the one before, they run as a channel chain, each thread's three parts in one job (the
    expansion's profile kernel names all three, "/<parts>" on the 1x1 layers; the depthwise
    row reads "fused", the projection's "add_parts"); with the depthwise output kept as a graph
    output, the expansion alone, then the depthwise layer with the projection's parts in its job
    (its kernel names both, the projection's ending in "/<parts>"). For each load,
    the same bits on every thread count up to it and in both forms, and the reference's
    values; loaded for one thread, whole layers. On 3 threads under ASan and UBSan with no
    report."""
    graphs = {keep: _inverted_residual_graph(c, e, hw, stride, 0.8, residual, keep_d=keep) for keep in (False, True)}
    packed = {keep: pack(g, sparse=True) for keep, g in graphs.items()}
    data = packed[False]
    x = np.random.default_rng(11).standard_normal((1, c, hw, hw)).astype(np.float32)
    ref = reference.run(graphs[False], {"x": x})["y"]
    for loaded in (1, 2, 3, 4):
        outs, kernels = [], {}
        for keep in graphs:
            with NativeModel(packed[keep], threads=loaded) as m:
                m.set_profiling(True)
                for t in range(loaded, 0, -1):
                    m.set_threads(t)
                    outs.append(m.run([x])[0])
                kernels[keep] = {p["name"]: p["kernel"] for p in m.profile()}
        for o in outs[1:]:
            assert np.array_equal(o, outs[0]), f"loaded for {loaded} threads"
        assert close(outs[0], ref), f"loaded for {loaded}: max error {np.abs(outs[0] - ref).max()}"
        alone, chain = kernels[True], kernels[False]
        if loaded == 1:
            assert "/" not in alone["project"] and "+" not in alone["depthwise"], kernels
            assert chain["depthwise"] != "fused", kernels
            continue
        parts = f"/{loaded}"
        dw, pw = alone["depthwise"].split("+")
        assert pw.startswith("spmm_") and pw.endswith(parts) and alone["project"] == "add_parts", kernels
        assert (chain["depthwise"], chain["project"]) == ("fused", "add_parts"), kernels
        assert chain["expand"] == f"{chain['expand'].split('/')[0]}{parts}+{dw}+{pw}", kernels
    _clean_under_asan(data, x, ref, tmp_path)


@pytest.mark.parametrize("c,cout,hw,stride", [
    (96, 32, 14, 1),   # a 14x14 block
    (128, 48, 24, 2),  # stride 2 into 12x12
    (99, 40, 9, 1),    # channels that do not divide evenly
])
def test_channel_split_depthwise_sums_the_projection_parts_in_its_job(c, cout, hw, stride, tmp_path):
    """A channel-split depthwise layer right before a projection that sums its input channels
    in parts: each thread filters its channels and sums its part of the projection in one job
    (the depthwise row names both kernels, the projection's reads "add_parts"). For each load,
    the same bits on every thread count up to it, and the reference's values; loaded for one
    thread, the two layers as they are. On 3 threads under ASan and UBSan with no report."""
    g = _inverted_residual_graph(cout, c, hw, stride, 0.8, residual=False, expand=False)
    data = pack(g, sparse=True)
    x = np.random.default_rng(13).standard_normal((1, c, hw, hw)).astype(np.float32)
    ref = reference.run(g, {"x": x})["y"]
    for loaded in (1, 2, 3, 4):
        outs = []
        with NativeModel(data, threads=loaded) as m:
            m.set_profiling(True)
            for t in range(loaded, 0, -1):
                m.set_threads(t)
                outs.append(m.run([x])[0])
            kernels = {p["name"]: p["kernel"] for p in m.profile()}
        for o in outs[1:]:
            assert np.array_equal(o, outs[0]), f"loaded for {loaded} threads"
        assert close(outs[0], ref), f"loaded for {loaded}: max error {np.abs(outs[0] - ref).max()}"
        if loaded == 1:
            assert "+" not in kernels["depthwise"] and "/" not in kernels["project"], kernels
            continue
        dw, pw = kernels["depthwise"].split("+")
        assert dw.startswith("dwconv_3x3") and pw.startswith("spmm_") and pw.endswith(f"/{loaded}"), kernels
        assert kernels["project"] == "add_parts", kernels
    _clean_under_asan(data, x, ref, tmp_path)


def _upsample_project_graph(cin, cout, h, w, resize, act, keep_resized):
    """y = act(conv1x1(resize(x))) as an importer writes it; packing moves the 1x1 layer
    before the resize, and the engine then folds the activation into the resize. keep_resized:
    the same computation written in the moved order by hand with the resized plane a graph
    output too, so the activation cannot fold (packed without the passes)."""
    r = np.random.default_rng(cin + 5 * h)
    g = Graph()
    g.add_tensor("x", (1, cin, h, w))
    g.inputs = ["x"]
    wt, b = g.add_constant("w", eg._w(r, cout, cin, 1, 1, zero=0.7)), g.add_constant("b", eg._w(r, cout))
    one = dict(stride_h=1, stride_w=1, dilation_h=1, dilation_w=1, pad_top=0, pad_left=0,
               pad_bottom=0, pad_right=0, groups=1)
    attrs = dict(half_pixel_centers=1) if resize == "RESIZE_BILINEAR" else {}
    if keep_resized:
        g.add_tensor("small", (1, cout, h, w))
        g.add_tensor("big", (1, cout, 2 * h, 2 * w))
        g.add_tensor("y", (1, cout, 2 * h, 2 * w))
        g.add_op("CONV2D", ["x", wt, b], ["small"], "project", act=0, **one)
        g.add_op(resize, ["small"], ["big"], "upsample", **attrs)
        lo, hi = opset.ACTIVATION_RANGES[act]
        if hi == float("inf"):
            g.add_op("RELU", ["big"], ["y"], "project/act")
        else:
            g.add_op("CLIP", ["big"], ["y"], "project/act", min=lo, max=hi)
        g.outputs = ["y", "big"]
    else:
        g.add_tensor("big", (1, cin, 2 * h, 2 * w))
        g.add_tensor("y", (1, cout, 2 * h, 2 * w))
        g.add_op(resize, ["x"], ["big"], "upsample", **attrs)
        g.add_op("CONV2D", ["big", wt, b], ["y"], "project", act=act, **one)
        g.outputs = ["y"]
    g.validate()
    return g


@pytest.mark.parametrize("resize", ["RESIZE_BILINEAR", "RESIZE_NEAREST"])
@pytest.mark.parametrize("act", [opset.ACT_RELU6, opset.ACT_RELU])
@pytest.mark.parametrize("cin,cout,h,w", [(96, 24, 7, 7), (40, 16, 14, 14), (24, 8, 5, 9)])
def test_projection_before_upsampling_with_its_activation_folded(resize, act, cin, cout, h, w, tmp_path):
    """resize -> 1x1 conv + activation runs as 1x1 conv -> resize that clamps each plane (the
    activation's profile row says "folded"): the reference's values, the same bits as the
    unfolded ops and on 1 to 4 threads; under ASan and UBSan with no report."""
    x = np.random.default_rng(11).standard_normal((1, cin, h, w)).astype(np.float32)
    ref = reference.run(_upsample_project_graph(cin, cout, h, w, resize, act, False), {"x": x})["y"]
    outs, kernels = {}, {}
    for keep in (False, True):
        g = _upsample_project_graph(cin, cout, h, w, resize, act, keep)
        for t in (4, 3, 2, 1):
            with NativeModel(pack(g, sparse=True, optimize=not keep), threads=t) as m:
                m.set_profiling(True)
                outs[keep, t] = m.run([x])[0]
                kernels[keep] = [p["kernel"] for p in m.profile()]
    assert kernels[False][0].startswith("spmm") and kernels[False][2] == "folded", kernels[False]
    assert kernels[True][2] != "folded", kernels[True]
    assert close(outs[False, 1], ref), f"max error {np.abs(outs[False, 1] - ref).max()}"
    for keep, t in outs:
        assert np.array_equal(outs[keep, t], outs[True, 1]), f"folded: {not keep}, {t} threads"
    data = pack(_upsample_project_graph(cin, cout, h, w, resize, act, False), sparse=True)
    _clean_under_asan(data, x, ref, tmp_path)


@pytest.mark.parametrize("block", [1, 2, 4])
@pytest.mark.parametrize("rows,cols,batch", [(63, 1152, 1), (66, 37, 2), (5, 9, 1)])
def test_sparse_fully_connected_in_row_blocks(block, rows, cols, batch):
    """A pruned fully connected layer (MediaPipe's landmark heads: 1152 -> 63) whose zeros come
    in blocks of 1, 2 or 4 rows, stored with that block (the last rows % block rows one by
    one, rows with fewer stored columns than a vector): the reference's values on 1 and 2
    threads."""
    from pysparse.format.reader import read_spnn
    r = np.random.default_rng(rows + block)
    keep = r.random((rows // block, cols)) < 0.2
    mask = np.concatenate([np.repeat(keep, block, axis=0), r.random((rows % block, cols)) < 0.2])
    w = (r.standard_normal((rows, cols)) * mask).astype(np.float32)
    g = eg._single("FULLY_CONNECTED", [(batch, cols)], (batch, rows), [w, eg._w(r, rows)], act=0)
    data = pack(g, sparse=True)
    layer = next(x for x in read_spnn(data).metadata["layers"] if x["op"] == "FULLY_CONNECTED")
    assert layer["encoding"] == "sparse" and layer["block"] == block, layer
    x = r.standard_normal((batch, cols)).astype(np.float32)
    out = run_both_thread_counts(data, [x])[0]
    ref = reference.run(g, {"x0": x})[g.outputs[0]]
    assert close(out, ref), f"max error {np.abs(out - ref).max()}"


def _resize_add_graph(cin, cout, h, w, order, skip_first):
    """y = ADD(upsampled, RELU(s)) with the 1x1 layer before the resize (face detection's
    order: conv, resize, add) or after it (pose detection's: resize, conv + ReLU6, add, which
    packing turns into conv, resize, ReLU6, add). skip_first: the skip is computed before the
    resize, so the engine folds the add (and any activation) into the resize; else after it,
    where it cannot."""
    r = np.random.default_rng(cin + h)
    g = Graph()
    g.add_tensor("x", (1, cin, h, w))
    g.add_tensor("s", (1, cout, 2 * h, 2 * w))
    g.inputs = ["x", "s"]
    one = dict(stride_h=1, stride_w=1, dilation_h=1, dilation_w=1, pad_top=0, pad_left=0,
               pad_bottom=0, pad_right=0, groups=1)
    wt, b = g.add_constant("w", eg._w(r, cout, cin, 1, 1, zero=0.7)), g.add_constant("b", eg._w(r, cout))
    for name, shape in (("sk", (1, cout, 2 * h, 2 * w)), ("t", (1, cout, 2 * h, 2 * w)), ("y", (1, cout, 2 * h, 2 * w))):
        g.add_tensor(name, shape)
    steps = []
    if order == "conv first":
        g.add_tensor("small", (1, cout, h, w))
        steps += [("CONV2D", ["x", wt, b], ["small"], "project", dict(one, act=1)),
                  ("RESIZE_BILINEAR", ["small"], ["t"], "upsample", dict(half_pixel_centers=1))]
    else:
        g.add_tensor("big", (1, cin, 2 * h, 2 * w))
        steps += [("RESIZE_BILINEAR", ["x"], ["big"], "upsample", dict(half_pixel_centers=1)),
                  ("CONV2D", ["big", wt, b], ["t"], "project", dict(one, act=2))]
    skip = ("RELU", ["s"], ["sk"], "skip", {})
    steps = [skip] + steps if skip_first else steps + [skip]
    for typ, ins, outs, name, attrs in steps + [("ADD", ["t", "sk"], ["y"], "residual", dict(act=0))]:
        g.add_op(typ, ins, outs, name, **attrs)
    g.outputs = ["y"]
    g.validate()
    return g


@pytest.mark.parametrize("order", ["conv first", "resize first"])
@pytest.mark.parametrize("cin,cout,h,w", [(64, 48, 12, 12), (96, 24, 7, 7), (16, 32, 5, 9)])
def test_residual_add_folded_into_the_resize(order, cin, cout, h, w, tmp_path):
    """ADD(resize(...), skip), skip written before the resize: the resize adds it to each plane
    it writes (the add's profile row says "folded", and pose detection's order folds its ReLU6
    too), with the same bits as the ops run one by one (the skip computed after the resize)
    on 1 to 4 threads, and the reference's values; under ASan and UBSan with no report."""
    r = np.random.default_rng(5)
    x = r.standard_normal((1, cin, h, w)).astype(np.float32)
    s = r.standard_normal((1, cout, 2 * h, 2 * w)).astype(np.float32)
    ref = reference.run(_resize_add_graph(cin, cout, h, w, order, True), {"x": x, "s": s})["y"]
    outs, kernels = {}, {}
    for first in (True, False):
        data = pack(_resize_add_graph(cin, cout, h, w, order, first), sparse=True)
        for t in (4, 3, 2, 1):
            with NativeModel(data, threads=t) as m:
                m.set_profiling(True)
                outs[first, t] = m.run([x, s])[0]
                kernels[first] = {p["name"]: p["kernel"] for p in m.profile()}
    assert kernels[True]["residual"] == "folded" and kernels[False]["residual"] != "folded", kernels
    if order == "resize first":  # the ReLU6 left after the moved projection folds as well
        assert list(kernels[True].values()).count("folded") == 2, kernels[True]
    assert close(outs[True, 1], ref), f"max error {np.abs(outs[True, 1] - ref).max()}"
    for first, t in outs:
        assert np.array_equal(outs[first, t], outs[False, 1]), f"folded: {first}, {t} threads"
    model, out = tmp_path / "m.spnn", tmp_path / "out.bin"
    model.write_bytes(pack(_resize_add_graph(cin, cout, h, w, order, True), sparse=True))
    with NativeModel(model.read_bytes(), 1) as m:
        order_in = m.input_names
    inp = tmp_path / "in.bin"  # the inputs one after the other, in the model's order
    np.concatenate([{"x": x, "s": s}[n].ravel() for n in order_in]).tofile(inp)
    r = subprocess.run([str(ASAN_TOOL), "run", str(model), "3", str(inp), str(out)], capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0 and "Sanitizer" not in r.stderr and "runtime error" not in r.stderr, r.stderr[-3000:]
    assert close(np.fromfile(out, np.float32).reshape(ref.shape), ref)
