"""The engine's compute kernels against the numpy reference (pysparse.reference).

Cases are generated here, written to one file per kernel family, and run by
wasm/tests/kernel_harness.c built four ways (make -C wasm kernel-tests):
natively over SIMDe with ASan+UBSan (any report fails the run), the same with relaxed-SIMD
FMA, and as WebAssembly SIMD128 (and relaxed SIMD, if clang-16 built it) under Node.
Every case runs as several thread-style work ranges; the harness checks that no range
writes outside itself.

Tolerance: the kernels sum in float32 in their own order; the reference sums in float64.
An output passes when |y - ref| <= 1e-5 * m + 1e-30 where m is the same op evaluated on
absolute values (|x|, |w|, |b|): the size of the terms that were summed.
"""
from __future__ import annotations

import os
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

from pysparse import opset
from pysparse.reference import run_op

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "build" / "kernels"
RTOL = 1e-5

KIND_SPMM, KIND_GEMM, KIND_GEMV, KIND_CONV, KIND_DWCONV = 1, 2, 3, 4, 5

NODE = ["node", "--no-experimental-fetch"]
VARIANTS = {
    "native-asan": lambda: [str(BUILD / "harness_asan")],
    "native-asan-relaxed": lambda: [str(BUILD / "harness_asan_relaxed")],
    "wasm-simd128": lambda: NODE + [str(BUILD / "harness.js")],
    "wasm-relaxed": lambda: NODE + ["--experimental-wasm-relaxed-simd", str(BUILD / "harness_relaxed.js")],
}
BINARY = {"native-asan": "harness_asan", "native-asan-relaxed": "harness_asan_relaxed",
          "wasm-simd128": "harness.js", "wasm-relaxed": "harness_relaxed.js"}


@pytest.fixture(scope="session")
def harnesses() -> Path:
    """Builds the harnesses (a quick no-op when they are up to date)."""
    make = shutil.which("make")
    assert make, "make is needed to build the kernel harnesses"
    subprocess.run([make, "-C", str(ROOT / "wasm"), "-j2", "kernel-tests"], check=True,
                   stdout=subprocess.DEVNULL)
    return BUILD


# ---- case files ---------------------------------------------------------------------------

class Case:
    def __init__(self, kind, params, arrays, bounds, out_min, out_max, expected, magnitude,
                 label):
        self.kind, self.params, self.arrays, self.bounds = kind, params, arrays, bounds
        self.out_min, self.out_max = out_min, out_max
        self.expected, self.magnitude, self.label = expected, magnitude, label


def write_cases(path: Path, cases: list[Case]) -> None:
    parts = [b"SPKH", struct.pack("<I", len(cases))]
    for c in cases:
        parts.append(struct.pack("<II", c.kind, len(c.params)))
        parts.append(np.asarray(c.params, dtype="<i4").tobytes())
        parts.append(struct.pack("<ff", c.out_min, c.out_max))
        parts.append(struct.pack("<I", len(c.bounds) - 1))
        parts.append(np.asarray(c.bounds, dtype="<u4").tobytes())
        parts.append(struct.pack("<I", len(c.arrays)))
        for a in c.arrays:
            a = np.ascontiguousarray(a)
            assert a.dtype in (np.float32, np.uint32)
            parts.append(struct.pack("<I", a.size))
            parts.append(a.astype(a.dtype.newbyteorder("<")).tobytes())
    path.write_bytes(b"".join(parts))


def read_outputs(path: Path, n: int) -> list[np.ndarray]:
    data = path.read_bytes()
    out, pos = [], 0
    for _ in range(n):
        (count,) = struct.unpack_from("<I", data, pos)
        pos += 4
        out.append(np.frombuffer(data, dtype="<f4", count=count, offset=pos))
        pos += 4 * count
    assert pos == len(data), "trailing bytes in the harness output"
    return out


def run_harness(variant: str, cases: list[Case], tmp_path: Path) -> list[np.ndarray]:
    case_file, out_file = tmp_path / "cases.bin", tmp_path / "out.bin"
    write_cases(case_file, cases)
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=1:abort_on_error=0:halt_on_error=1",
               UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1")
    proc = subprocess.run(VARIANTS[variant]() + [str(case_file), str(out_file)], env=env,
                          capture_output=True, text=True, timeout=600)
    report = proc.stderr + proc.stdout
    assert proc.returncode == 0, f"harness failed ({proc.returncode}):\n{report[-4000:]}"
    # Sanitizer reports fail the run even if the process somehow exited 0.
    assert "runtime error" not in report and "AddressSanitizer" not in report, report[-4000:]
    return read_outputs(out_file, len(cases))


def check(cases: list[Case], outputs: list[np.ndarray]) -> None:
    bad = []
    for c, y in zip(cases, outputs):
        ref = np.asarray(c.expected, dtype=np.float64).reshape(-1)
        mag = np.asarray(c.magnitude, dtype=np.float64).reshape(-1)
        assert y.shape == ref.shape, c.label
        err = np.abs(y.astype(np.float64) - ref)
        limit = RTOL * mag + 1e-30
        if not np.all(err <= limit):
            i = int(np.argmax(err - limit))
            bad.append(f"{c.label}: element {i} got {y[i]!r} want {ref[i]!r} (limit {limit[i]:.3g})")
    assert not bad, f"{len(bad)} of {len(cases)} cases wrong:\n" + "\n".join(bad[:20])


# ---- generators ---------------------------------------------------------------------------

ACTS = [opset.ACT_NONE, opset.ACT_RELU, opset.ACT_RELU6, 3]


def act_range(code: int) -> tuple[float, float]:
    lo, hi = opset.ACTIVATION_RANGES[code]
    return float(lo), float(hi)


def splits(n: int, rng: np.random.Generator, parts: int) -> list[int]:
    """Work-range bounds [0, .., n]: `parts` ranges of random (possibly empty) sizes."""
    if n == 0 or parts <= 1:
        return [0, n]
    cuts = sorted(int(v) for v in rng.integers(0, n + 1, size=parts - 1))
    return [0, *cuts, n]


def conv_ref(x, w, b, attrs):
    """Reference output and magnitude (the same conv on absolute values)."""
    y = run_op("CONV2D", [x, w, b], attrs)
    m = run_op("CONV2D", [np.abs(x), np.abs(w), None if b is None else np.abs(b)],
               {**attrs, "act": opset.ACT_NONE})
    return y, m


def sparse_weight(rng, rows, cols, block, sparsity, force_empty_dense=True):
    """A random matrix in the .spnn sparse layout (decoded) and its dense form.

    Blocks of `block` rows, then rows % block single-row blocks. A stored column holds all
    the block's rows (zeros included). The first block is empty and the second fully dense
    when there are enough blocks."""
    blocks = [(r, block) for r in range(0, rows - rows % block, block)]
    blocks += [(r, 1) for r in range(rows - rows % block, rows)]
    dense = np.zeros((rows, cols), np.float32)
    counts, columns, values = [], [], []
    for i, (r0, b) in enumerate(blocks):
        keep = rng.random(cols) >= sparsity / 100.0
        if force_empty_dense and len(blocks) >= 3:
            keep[:] = False if i == 0 else keep
            keep[:] = True if i == 1 else keep
        cols_kept = np.flatnonzero(keep)
        vals = rng.uniform(-1, 1, size=(len(cols_kept), b)).astype(np.float32)
        if b > 1 and len(cols_kept):
            vals[rng.random(vals.shape) < 0.2] = 0.0  # explicit zeros inside stored columns
        counts.append(len(cols_kept))
        columns.extend(cols_kept.tolist())
        values.append(vals.reshape(-1))
        for j, c in enumerate(cols_kept):
            dense[r0:r0 + b, c] = vals[j]
    values = np.concatenate(values) if values else np.zeros(0, np.float32)
    return (np.asarray(counts, np.uint32), np.asarray(columns, np.uint32),
            values.astype(np.float32), dense)


def spmm_cases(seed=1) -> list[Case]:
    rng = np.random.default_rng(seed)
    cases = []
    shapes = [(1, 5, 3), (3, 7, 8), (17, 16, 9), (33, 11, 13), (49, 24, 10), (196, 40, 18),
              (3136 + 5, 24, 6), (64, 1, 4), (31, 9, 1), (2, 300, 5), (95, 12, 7), (50, 13, 5),
              (51, 20, 6), (99, 17, 5), (35, 9, 4), (49, 700, 9), (130, 1100, 6), (97, 257, 5)]
    for pixels, cols, rows in shapes:
        for block in (1, 2, 4):
            for sparsity in (0, 50, 90, 100):
                counts, columns, values, dense = sparse_weight(rng, rows, cols, block, sparsity)
                with_bias = rng.random() < 0.8
                bias = rng.uniform(-1, 1, rows).astype(np.float32) if with_bias else None
                act = ACTS[int(rng.integers(len(ACTS)))]
                lo, hi = act_range(act)
                x = rng.uniform(-1, 1, (1, cols, 1, pixels)).astype(np.float32)
                attrs = {"act": act}
                y, m = conv_ref(x, dense.reshape(rows, cols, 1, 1), bias, attrs)
                parts = int(rng.integers(1, 5))
                cases.append(Case(
                    KIND_SPMM, [rows, cols, block, pixels],
                    [counts, columns, values,
                     bias if bias is not None else np.zeros(0, np.float32), x.reshape(-1)],
                    splits(pixels, rng, parts), lo, hi, y, m,
                    f"spmm P={pixels} K={cols} N={rows} block={block} sparsity={sparsity}"))
    # Rows written split by column parity (the input of a stride-2 depthwise layer): ranges
    # of whole rows, as the engine's bands are; the harness puts the columns back in order.
    for height, width, cols, rows in [(1, 8, 5, 3), (3, 48, 24, 13), (7, 56, 24, 6), (2, 112, 16, 9),
                                      (5, 64, 200, 4), (4, 40, 7, 17), (3, 96, 9, 5), (2, 104, 30, 7)]:
        for block in (1, 2, 4):
            for sparsity in (0, 50, 90):
                counts, columns, values, dense = sparse_weight(rng, rows, cols, block, sparsity)
                bias = rng.uniform(-1, 1, rows).astype(np.float32)
                act = ACTS[int(rng.integers(len(ACTS)))]
                lo, hi = act_range(act)
                pixels = height * width
                x = rng.uniform(-1, 1, (1, cols, 1, pixels)).astype(np.float32)
                y, m = conv_ref(x, dense.reshape(rows, cols, 1, 1), bias, {"act": act})
                bounds = [b * width for b in splits(height, rng, int(rng.integers(1, 4)))]
                cases.append(Case(
                    KIND_SPMM, [rows, cols, block, pixels, width],
                    [counts, columns, values, bias, x.reshape(-1)], bounds, lo, hi, y, m,
                    f"spmm split rows {height}x{width} K={cols} N={rows} block={block} "
                    f"sparsity={sparsity}"))
    return cases


def gemm_cases(seed=2) -> list[Case]:
    rng = np.random.default_rng(seed)
    cases = []
    for pixels, cols, rows in [(1, 3, 1), (3, 5, 2), (17, 16, 9), (33, 24, 13), (49, 160, 20),
                               (196, 64, 7), (3141, 8, 5), (8, 1, 4), (100, 300, 3),
                               (57, 96, 37), (49, 1030, 6)]:
        w = rng.uniform(-1, 1, (rows, cols)).astype(np.float32)
        bias = rng.uniform(-1, 1, rows).astype(np.float32) if rng.random() < 0.8 else None
        act = ACTS[int(rng.integers(len(ACTS)))]
        lo, hi = act_range(act)
        x = rng.uniform(-1, 1, (1, cols, 1, pixels)).astype(np.float32)
        y, m = conv_ref(x, w.reshape(rows, cols, 1, 1), bias, {"act": act})
        cases.append(Case(KIND_GEMM, [rows, cols, pixels],
                          [w.reshape(-1), bias if bias is not None else np.zeros(0, np.float32),
                           x.reshape(-1)],
                          splits(pixels, rng, int(rng.integers(1, 5))), lo, hi, y, m,
                          f"gemm P={pixels} K={cols} N={rows}"))
    return cases


def gemv_cases(seed=3) -> list[Case]:
    rng = np.random.default_rng(seed)
    cases = []
    for rows, cols in [(1, 1), (3, 7), (10, 16), (17, 33), (64, 1280), (5, 1001)]:
        w = rng.uniform(-1, 1, (rows, cols)).astype(np.float32)
        bias = rng.uniform(-1, 1, rows).astype(np.float32) if rng.random() < 0.8 else None
        act = ACTS[int(rng.integers(len(ACTS)))]
        lo, hi = act_range(act)
        x = rng.uniform(-1, 1, (1, cols)).astype(np.float32)
        y = run_op("FULLY_CONNECTED", [x, w, bias], {"act": act})
        m = run_op("FULLY_CONNECTED", [np.abs(x), np.abs(w), None if bias is None else np.abs(bias)], {})
        cases.append(Case(KIND_GEMV, [rows, cols],
                          [w.reshape(-1), bias if bias is not None else np.zeros(0, np.float32),
                           x.reshape(-1)],
                          splits(rows, rng, int(rng.integers(1, 4))), lo, hi, y, m,
                          f"gemv M={rows} K={cols}"))
    return cases


def out_size(n, k, s, d, p0, p1):
    return (n + p0 + p1 - d * (k - 1) - 1) // s + 1


def conv_cases(seed=4) -> list[Case]:
    rng = np.random.default_rng(seed)
    configs = [
        # cin, h, w, cout, kh, kw, stride, dilation, pads (t, l, b, r), groups
        (3, 224, 224, 16, 3, 3, (2, 2), (1, 1), (0, 0, 1, 1), 1),  # TF SAME first conv
        (3, 17, 19, 8, 3, 3, (2, 2), (1, 1), (1, 1, 1, 1), 1),
        (4, 9, 7, 6, 1, 1, (1, 1), (1, 1), (0, 0, 0, 0), 2),
        (5, 11, 13, 7, 5, 5, (1, 1), (1, 1), (2, 2, 2, 2), 1),
        (6, 8, 10, 4, 2, 3, (1, 2), (1, 1), (0, 1, 1, 0), 2),
        (2, 15, 15, 3, 3, 3, (3, 3), (2, 2), (2, 1, 0, 3), 1),
        (8, 6, 6, 8, 3, 3, (1, 1), (1, 1), (1, 1, 1, 1), 4),
        (3, 5, 5, 5, 7, 7, (1, 1), (1, 1), (3, 3, 3, 3), 1),
        (1, 1, 1, 3, 1, 1, (1, 1), (1, 1), (0, 0, 0, 0), 1),
        (9, 12, 4, 2, 1, 1, (2, 1), (1, 1), (0, 0, 0, 0), 1),
    ]
    cases = []
    for cin, h, w, cout, kh, kw, (sh, sw), (dh, dw), (pt, pl, pb, pr), g in configs:
        oh, ow = out_size(h, kh, sh, dh, pt, pb), out_size(w, kw, sw, dw, pl, pr)
        wt = rng.uniform(-1, 1, (cout, cin // g, kh, kw)).astype(np.float32)
        bias = rng.uniform(-1, 1, cout).astype(np.float32) if rng.random() < 0.8 else None
        act = ACTS[int(rng.integers(len(ACTS)))]
        lo, hi = act_range(act)
        x = rng.uniform(-1, 1, (1, cin, h, w)).astype(np.float32)
        attrs = dict(stride_h=sh, stride_w=sw, dilation_h=dh, dilation_w=dw, pad_top=pt,
                     pad_left=pl, pad_bottom=pb, pad_right=pr, groups=g, act=act)
        y, m = conv_ref(x, wt, bias, attrs)
        assert y.shape == (1, cout, oh, ow)
        params = [cin, h, w, cout, oh, ow, kh, kw, sh, sw, dh, dw, pt, pl, g]
        cases.append(Case(KIND_CONV, params,
                          [wt.reshape(-1), bias if bias is not None else np.zeros(0, np.float32),
                           x.reshape(-1)],
                          splits(oh * ow, rng, int(rng.integers(1, 4))), lo, hi, y, m,
                          f"conv {cin}x{h}x{w}->{cout} k={kh}x{kw} s={sh},{sw} d={dh},{dw} "
                          f"pad={pt},{pl},{pb},{pr} g={g}"))
    return cases


# Stride-2 3x3 shapes whose rows a 1x1 layer may write split by column parity: rows a
# multiple of 8 wide, padding before of 0 (TensorFlow's SAME) or 1 (PyTorch's), odd heights.
SPLIT_SPECS = [(3, 3, 2, 2, 1, 1, h, w, pads)
               for h, w in [(8, 8), (5, 16), (14, 24), (56, 56), (17, 40), (112, 112)]
               for pads in [(1, 1, 1, 1), (0, 0, 1, 1), (1, 0, 0, 1), (0, 1, 1, 1)]]


def dwconv_cases(seed=5) -> list[Case]:
    rng = np.random.default_rng(seed)
    cases = []
    specs = []
    for k in (3, 5):
        for s in (1, 2):
            for h, w in [(1, 1), (2, 3), (5, 5), (7, 7), (8, 13), (14, 14), (17, 9), (28, 30),
                         (28, 28), (16, 56), (3, 64), (21, 24), (45, 56), (64, 64), (112, 112),
                         (130, 132)]:
                # Same-size stride-1 outputs with the padding on either side included: the
                # whole-plane kernels cut the taps of each kernel column at the row edges;
                # 130x132 is past their size limit (the row kernel). From 512 pixels, stride 1
                # reads the plane in place (with relaxed SIMD two rows at a time: 45x56 has an
                # odd number of such rows and a 56-wide row ends on a two-vector step; 28x28 and
                # 16x56, a band of a 56-wide block, just over the limit; 21x24 is copied whole
                # and, 5x5, taken two rows at a time too).
                for pads in [(0, 0, 0, 0), (k // 2,) * 4, (0, 0, k // 2, k // 2),
                             (k // 2 - 1 if s == 2 else 0, k // 2 - 1 if s == 2 else 0, k // 2, k // 2),
                             (k, 1, 0, k), (k - 1, 0, 0, k - 1), (0, k - 1, k - 1, 0)]:
                    pads = tuple(max(0, p) for p in pads)
                    if out_size(h, k, s, 1, pads[0], pads[2]) < 1 or out_size(w, k, s, 1, pads[1], pads[3]) < 1:
                        continue
                    if h * w >= 4096 and pads != (k // 2,) * 4:
                        continue
                    specs.append((k, k, s, s, 1, 1, h, w, pads))
    # Others go to the generic kernel.
    specs += [(7, 7, 1, 1, 1, 1, 10, 12, (3, 3, 3, 3)), (3, 5, 1, 2, 1, 1, 9, 11, (1, 2, 1, 2)),
              (3, 3, 1, 1, 2, 2, 9, 9, (2, 2, 2, 2)), (1, 1, 2, 2, 1, 1, 6, 7, (0, 0, 0, 0)),
              (3, 3, 3, 3, 1, 1, 13, 13, (1, 1, 1, 1))]
    # mode 0: the selected kernel over channel ranges; 1: the generic kernel; 2: bands of
    # output rows over every channel (spnn_f32_dwconv_rows); 3: the same from rows split by
    # column parity (spnn_f32_dwconv_split_rows_at), for the shapes that can take them
    for kh, kw, sh, sw, dh, dw, h, w, (pt, pl, pb, pr) in specs + SPLIT_SPECS:
        for mode in (0, 1, 2, 3):
            if (mode == 3) != ((kh, kw, sh, sw, dh, dw, h, w, (pt, pl, pb, pr)) in SPLIT_SPECS):
                continue
            if mode == 1 and h * w >= 4096:
                continue
            c = int(rng.integers(1, 6))
            oh, ow = out_size(h, kh, sh, dh, pt, pb), out_size(w, kw, sw, dw, pl, pr)
            wt = rng.uniform(-1, 1, (c, 1, kh, kw)).astype(np.float32)
            bias = rng.uniform(-1, 1, c).astype(np.float32) if rng.random() < 0.8 else None
            act = ACTS[int(rng.integers(len(ACTS)))]
            lo, hi = act_range(act)
            x = rng.uniform(-1, 1, (1, c, h, w)).astype(np.float32)
            attrs = dict(stride_h=sh, stride_w=sw, dilation_h=dh, dilation_w=dw, pad_top=pt,
                         pad_left=pl, pad_bottom=pb, pad_right=pr, groups=c, act=act)
            y, m = conv_ref(x, wt, bias, attrs)
            params = [c, h, w, oh, ow, kh, kw, sh, sw, dh, dw, pt, pl, mode]
            units = oh if mode in (2, 3) else c
            cases.append(Case(KIND_DWCONV, params,
                              [wt.reshape(-1), bias if bias is not None else np.zeros(0, np.float32),
                               x.reshape(-1)],
                              splits(units, rng, int(rng.integers(1, 4 if mode < 2 else 5))), lo, hi,
                              y, m, f"dwconv c={c} {h}x{w} k={kh}x{kw} s={sh},{sw} d={dh},{dw} "
                              f"pad={pt},{pl},{pb},{pr} mode={mode}"))
    return cases


FAMILIES = {"spmm": spmm_cases, "gemm": gemm_cases, "gemv": gemv_cases, "conv": conv_cases,
            "dwconv": dwconv_cases}
_CACHE: dict[str, list[Case]] = {}


def family_cases(name: str) -> list[Case]:
    if name not in _CACHE:
        _CACHE[name] = FAMILIES[name]()
    return _CACHE[name]


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("family", list(FAMILIES))
def test_kernels_match_reference(family, variant, harnesses, tmp_path):
    if variant == "wasm-relaxed" and not (harnesses / BINARY[variant]).exists():
        pytest.skip("clang-16 not available: no relaxed-SIMD wasm build")
    cases = family_cases(family)
    check(cases, run_harness(variant, cases, tmp_path))


@pytest.mark.parametrize("variant", ["native-asan-relaxed", "wasm-relaxed", "wasm-simd128"])
def test_split_rows_give_the_phase_kernels_bits(variant, harnesses, tmp_path):
    """A stride-2 depthwise layer reading rows split by column parity computes every pixel as
    the phase-copy kernel does: the same bits, not only within tolerance (an engine that
    fuses a block at one thread count and not at another stays bit-identical)."""
    if variant == "wasm-relaxed" and not (harnesses / BINARY[variant]).exists():
        pytest.skip("clang-16 not available: no relaxed-SIMD wasm build")
    rng = np.random.default_rng(11)
    cases = []
    for kh, kw, sh, sw, dh, dw, h, w, (pt, pl, pb, pr) in SPLIT_SPECS:
        c = int(rng.integers(1, 5))
        oh, ow = out_size(h, kh, sh, dh, pt, pb), out_size(w, kw, sw, dw, pl, pr)
        wt = rng.uniform(-1, 1, (c, 1, kh, kw)).astype(np.float32)
        bias = rng.uniform(-1, 1, c).astype(np.float32)
        x = rng.uniform(-1, 1, (1, c, h, w)).astype(np.float32)
        attrs = dict(stride_h=sh, stride_w=sw, dilation_h=dh, dilation_w=dw, pad_top=pt,
                     pad_left=pl, pad_bottom=pb, pad_right=pr, groups=c, act=opset.ACT_RELU6)
        y, m = conv_ref(x, wt, bias, attrs)
        bounds = splits(oh, rng, 3)
        for mode in (2, 3):
            cases.append(Case(KIND_DWCONV, [c, h, w, oh, ow, kh, kw, sh, sw, dh, dw, pt, pl, mode],
                              [wt.reshape(-1), bias, x.reshape(-1)], bounds, 0.0, 6.0, y, m,
                              f"dwconv {h}x{w} pad={pt},{pl},{pb},{pr} mode={mode}"))
    out = run_harness(variant, cases, tmp_path)
    check(cases, out)
    for i in range(0, len(cases), 2):
        assert np.array_equal(out[i].view(np.uint32), out[i + 1].view(np.uint32)), cases[i + 1].label


@pytest.mark.parametrize("variant", ["native-asan-relaxed", "native-asan", "wasm-relaxed",
                                     "wasm-simd128"])
def test_small_plane_depthwise_gives_the_same_bits_for_any_split(variant, harnesses, tmp_path):
    """3x3 depthwise layers on small planes take four channels at a time (a last group of
    fewer in zero-filled lanes): every pixel is the same bits whichever channels share its
    group (channel ranges of threads, chained blocks) and whether the layer runs whole or in
    bands of output rows."""
    if variant == "wasm-relaxed" and not (harnesses / BINARY[variant]).exists():
        pytest.skip("clang-16 not available: no relaxed-SIMD wasm build")
    rng = np.random.default_rng(13)
    shapes = [(7, 7, 1, (1, 1, 1, 1)), (14, 14, 1, (1, 1, 1, 1)), (5, 9, 1, (0, 0, 2, 2)),
              (16, 12, 1, (2, 1, 0, 1)), (14, 14, 2, (1, 1, 1, 1)), (14, 14, 2, (0, 0, 1, 1)),
              (9, 11, 2, (1, 0, 1, 1)), (8, 8, 2, (1, 1, 1, 1))]
    cases = []
    for h, w, st, (pt, pl, pb, pr) in shapes:
        c = 9
        oh, ow = out_size(h, 3, st, 1, pt, pb), out_size(w, 3, st, 1, pl, pr)
        wt = rng.uniform(-1, 1, (c, 1, 3, 3)).astype(np.float32)
        bias = rng.uniform(-1, 1, c).astype(np.float32)
        x = rng.uniform(-1, 1, (1, c, h, w)).astype(np.float32)
        attrs = dict(stride_h=st, stride_w=st, dilation_h=1, dilation_w=1, pad_top=pt,
                     pad_left=pl, pad_bottom=pb, pad_right=pr, groups=c, act=opset.ACT_RELU6)
        y, m = conv_ref(x, wt, bias, attrs)
        label = f"dwconv {h}x{w} s={st} pad={pt},{pl},{pb},{pr}"
        params = [c, h, w, oh, ow, 3, 3, st, st, 1, 1, pt, pl]
        arrays = [wt.reshape(-1), bias, x.reshape(-1)]
        for mode, bounds in ((0, [0, c]), (0, [0, 1, 3, 6, 9]), (0, [0, 2, 7, 9]),
                             (2, [0, oh]), (2, [0, 1, oh // 2, oh])):
            cases.append(Case(KIND_DWCONV, params + [mode], arrays, bounds, 0.0, 6.0, y, m,
                              f"{label} mode={mode} bounds={bounds}"))
    out = run_harness(variant, cases, tmp_path)
    check(cases, out)
    for i in range(0, len(cases), 5):
        for j in range(i + 1, i + 5):
            assert np.array_equal(out[i].view(np.uint32), out[j].view(np.uint32)), cases[j].label


def test_spmm_pack_rejects_bad_columns(harnesses, tmp_path):
    """Columns out of range or not increasing inside a block make packing fail, not crash."""
    x = np.zeros(4 * 3, np.float32)
    for columns in ([0, 4], [2, 1], [1, 1]):
        case = Case(KIND_SPMM, [1, 4, 1, 3],
                    [np.asarray([2], np.uint32), np.asarray(columns, np.uint32),
                     np.ones(2, np.float32), np.zeros(0, np.float32), x],
                    [0, 3], -np.inf, np.inf, np.zeros(3), np.ones(3), "bad columns")
        write_cases(tmp_path / "bad.bin", [case])
        proc = subprocess.run([str(harnesses / "harness_asan"), str(tmp_path / "bad.bin"),
                               str(tmp_path / "out.bin")], capture_output=True, text=True)
        assert proc.returncode == 2 and "spmm pack rejected" in proc.stderr, proc.stderr


# ---- the kernel benchmark's runner ---------------------------------------------------------

def test_kernel_benchmark_runner_on_the_native_build():
    """`make -C wasm bench-kernels-native` path: the benchmark driver built natively runs
    every MobileNetV2 1x1 shape and the runner sums it into the reported totals (this
    checks the bookkeeping, not speeds)."""
    from pysparse.bench import kernels as kbench

    binary = BUILD / "bench_kernels_native"
    subprocess.run(["make", "-C", str(ROOT / "wasm"), str(binary)], check=True,
                   stdout=subprocess.DEVNULL)
    summary = kbench.summarise(kbench.collect([], [binary], repeats=1, rounds=1, target_ms=0.02))
    assert list(summary) == ["native-simd128"]
    s = summary["native-simd128"]
    assert s["peak_gflops_median"] > 0
    shapes = {(l["hw"], l["cin"], l["cout"]) for l in s["layers"]}
    assert len(shapes) == 13 and (7, 320, 1280) in shapes and (112, 32, 16) in shapes
    t = s["totals"]
    assert {"dense@0", "spmm@80", "spmm_block4@80", "spmm@90"} <= set(t)
    # effective flops count the nonzeros: 80% sparse is a fifth of the dense work
    assert abs(t["spmm@80"]["flops"] / t["dense@0"]["flops"] - 0.2) < 0.01
    for v in t.values():
        assert v["gflops_median"] > 0 and v["best_ms"] <= v["median_ms"]
        assert v["speedup_vs_dense_median"] > 0


def test_kernel_benchmark_builds_and_runs_as_webassembly():
    """`make bench-kernels` path: the driver and the SIMD peak probe compile for wasm with
    the kernels' own warnings-as-errors flags, and run under Node."""
    from pysparse.bench import kernels as kbench

    binary = BUILD / "bench_kernels.js"
    subprocess.run(["make", "-C", str(ROOT / "wasm"), str(binary)], check=True,
                   stdout=subprocess.DEVNULL)
    summary = kbench.summarise(kbench.collect([shutil.which("node")], [binary], repeats=1,
                                              rounds=1, target_ms=0.02))
    assert list(summary) == ["simd128"]
    assert summary["simd128"]["peak_gflops_median"] > 0
    assert len({(l["hw"], l["cin"], l["cout"]) for l in summary["simd128"]["layers"]}) == 13


def test_layer_probe_times_the_layer_it_was_asked_for():
    """`make -C wasm layer-probe`: the probe packs the count pattern it is given (80% sparse:
    equal counts are a fifth of the columns per row) and times the layer; bad arguments are
    a usage error."""
    binary = BUILD / "layer_probe.js"
    subprocess.run(["make", "-C", str(ROOT / "wasm"), str(binary)], check=True,
                   stdout=subprocess.DEVNULL)
    node = shutil.which("node")

    def probe(*args):
        return subprocess.run([node, str(binary), *args], capture_output=True, text=True)

    out = probe("spmm", "7", "40", "16", "equal")
    assert out.returncode == 0, out.stderr
    assert "spmm 7x7 40->16 equal (simd128): 128 nonzeros" in out.stdout
    assert float(out.stdout.split("median ")[1].split(" us")[0]) > 0
    out = probe("gemv", "16", "24", "1")
    assert out.returncode == 0 and "gemv 16 x 24 after 1 MB elsewhere (simd128): median" in out.stdout
    out = probe("conv", "3")
    assert out.returncode == 2 and "usage" in out.stderr


def test_depthwise_ab_benchmark_builds_and_runs():
    """`make -C wasm bench-dwconv-ab`: the working tree's depthwise kernels linked beside
    HEAD's, timed shape by shape, the split-row stride-2 kernel on the shapes it takes."""
    proc = subprocess.run(["make", "-s", "-C", str(ROOT / "wasm"), "bench-dwconv-ab",
                           "DW_ROUNDS=1"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [line for line in proc.stdout.splitlines() if "speed-up best" in line]
    variants = 2 if "relaxed SIMD:" in proc.stdout else 1
    # 18 depthwise shapes, two of them also split, three first convolutions
    assert len(rows) == variants * 23, proc.stdout
    assert sum(" s2 split " in r for r in rows) == variants * 2


@pytest.mark.parametrize("rename, sources", [("KBASE_RENAME", "KBASE_SRCS"),
                                              ("KBASE_DW_RENAME", "KBASE_DW_SRCS")])
def test_ab_builds_rename_every_baseline_function(rename, sources):
    """`make -C wasm bench-kernels-ab` and `bench-dwconv-ab` link the working tree's kernels
    beside a baseline revision's, whose external functions they rename (`rename`); one left
    out is defined twice and the A/B no longer links."""
    import re

    mk = (ROOT / "wasm" / "kernels.mk").read_text()
    block = re.search(rf"{rename} := \$\(foreach f,(.*?),-D", mk, re.S).group(1)
    renamed = {"spnn_" + name for name in block.replace("\\", " ").split()}
    defined = set()
    for src in re.search(rf"{sources} := (.*)", mk).group(1).split():
        text = (ROOT / "wasm" / "src" / "kernels" / src).read_text()
        # a definition at the start of a line, not static: "type spnn_name(...) {"
        defined |= set(re.findall(r"^(?!static)[a-z_0-9 ]+[ *](spnn_\w+)\([^;]*?\)\s*\{",
                                  text, re.M | re.S))
        # or one a macro writes: "SPNN_DEFINE_...(spnn_name, ...)"
        defined |= set(re.findall(r"^SPNN_DEFINE_\w+\((spnn_\w+),", text, re.M))
    assert len(defined) >= 10, defined
    assert defined <= renamed, sorted(defined - renamed)
