"""Test data shared by the Node, browser and Pyodide tests of the JS runtime.

`write_case(dir, model)` packs a real model, makes an input from a real hand photo and
writes the numpy reference's outputs for it, as raw little-endian float32 files plus a
`case.json` manifest that the JS tests read.
"""
from __future__ import annotations

import base64
import contextlib
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from pysparse import assets, reference
from pysparse.bench.browser import CHROMIUM_ARGS, chromium_path
from pysparse.format import read_spnn, spec
from pysparse.pack import pack_file

ROOT = Path(__file__).resolve().parent.parent
DIST = ROOT / "web" / "dist"
# Outputs must match the reference within this fraction of each output's range.
RELATIVE_TOLERANCE = 1e-4


def require_engine_builds(variants=("simd", "simd-threads")) -> None:
    names = [f"pysparse-{v}.{ext}" for v in variants for ext in ("mjs", "wasm")]
    missing = [n for n in names if not (DIST / n).exists()]
    if missing:
        raise FileNotFoundError(f"web/dist lacks {', '.join(missing)}: run `make -C wasm all` first")


def run_node(variant: str, jobs: list, tmp_path: Path) -> list[dict]:
    """Runs .spnn models on a wasm build in one Node process (wasm/tests/run_model.mjs):
    jobs are {"model", "input", "out", "threads", "repeat"}; returns one result per job."""
    manifest = tmp_path / f"{variant}.json"
    manifest.write_text(json.dumps({"variant": variant, "jobs": jobs}))
    flags = ["--no-experimental-fetch"]
    if variant.startswith("relaxed"):
        flags.append("--experimental-wasm-relaxed-simd")
    r = subprocess.run(["node", *flags, str(ROOT / "wasm" / "tests" / "run_model.mjs"), str(manifest)],
                       capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    return [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]


def photo_rgba(width: int, height: int, name: str = "hand_nocurl.jpg") -> np.ndarray:
    """A real hand photo resized to width x height, as RGBA uint8 (H, W, 4)."""
    img = Image.open(assets.photo_path(name)).convert("RGB").resize((width, height), Image.BILINEAR)
    rgb = np.asarray(img, dtype=np.uint8)
    return np.concatenate([rgb, np.full(rgb.shape[:2] + (1,), 255, np.uint8)], axis=2)


def pixels_to_input(rgba: np.ndarray, value_range) -> np.ndarray:
    """RGBA uint8 (H, W, 4) -> NCHW float32 with 0..255 mapped to value_range (as the runtime does)."""
    lo, hi = (float(v) for v in value_range)
    rgb = rgba[..., :3].astype(np.float64).transpose(2, 0, 1)[None]
    return (lo + rgb * (hi - lo) / 255.0).astype(np.float32)


def tolerance(expected: np.ndarray) -> float:
    scale = float(np.ptp(expected)) if expected.size > 1 else 0.0
    return RELATIVE_TOLERANCE * max(scale, float(np.max(np.abs(expected))), 1e-6)


def weights_section_middle(blob: bytes) -> int:
    count = spec.HEADER.unpack_from(blob)[5]
    for i in range(count):
        kind, offset, length, _ = spec.SECTION_ENTRY.unpack_from(blob, spec.HEADER_SIZE + i * spec.SECTION_ENTRY_SIZE)
        if kind == spec.SECTION_WEIGHTS:
            return offset + length // 2
    raise ValueError("no WEIGHTS section")


def write_case(out: Path, model: str = "hand_landmark_full.tflite", sparse=None) -> dict:
    """Packs `model` into out/model.spnn and writes input, reference outputs and case.json."""
    out.mkdir(parents=True, exist_ok=True)
    blob = pack_file(assets.model_path(model), out / "model.spnn", sparse=sparse)
    f = read_spnn(blob)
    g = f.graph
    (name,) = g.inputs
    _, _, h, w = g.tensors[name].shape
    value_range = f.metadata["input"]["range"]
    rgba = photo_rgba(w, h)
    x = pixels_to_input(rgba, value_range)
    (out / "pixels.rgba").write_bytes(rgba.tobytes())
    (out / "input.f32").write_bytes(x.astype("<f4").tobytes())
    outputs = reference.run(g, {name: x})
    expected = []
    for i, oname in enumerate(g.outputs):
        y = np.asarray(outputs[oname], dtype=np.float32)
        (out / f"expected_{i}.f32").write_bytes(y.astype("<f4").tobytes())
        expected.append({"name": oname, "shape": list(y.shape), "file": f"expected_{i}.f32",
                         "tolerance": tolerance(y)})
    # A corrupt copy: one byte flipped inside the weights (the section CRC must catch it).
    corrupt = bytearray(blob)
    corrupt[weights_section_middle(blob)] ^= 0x5A
    (out / "corrupt.spnn").write_bytes(bytes(corrupt))
    (out / "truncated.spnn").write_bytes(blob[: len(blob) // 3])
    case = {"model": "model.spnn", "input": {"name": name, "shape": [1, 3, h, w], "file": "input.f32",
                                             "pixels": "pixels.rgba", "range": value_range},
            "outputs": expected, "dist": str(DIST)}
    (out / "case.json").write_text(json.dumps(case, indent=1))
    return case


# -- a real server and a real browser ------------------------------------------------


@contextlib.contextmanager
def serve(models: Path, *extra: str):
    """`pysparse serve` on a free localhost port; yields its base URL."""
    proc = subprocess.Popen([sys.executable, "-m", "pysparse.cli", "serve", "--port", "0", "--models", str(models),
                             *extra], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        line = proc.stdout.readline()
        m = re.search(r"at (http://\S+?)/ ", line)
        if not m:
            raise RuntimeError(f"pysparse serve did not start: {line!r} (exit code {proc.poll()})")
        yield m.group(1)
    finally:
        stop(proc)


def stop(proc) -> None:
    """Ends a server process: politely, then by force after 10 s."""
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextlib.contextmanager
def chromium():
    """Debian's Chromium through Playwright (its own browser downloads do not work here)."""
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


def open_page(browser, url: str):
    """A new page at `url` that fails the test on uncaught page errors."""
    page = browser.new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.errors = errors
    page.goto(url)
    return page


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
