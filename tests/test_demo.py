"""The hand-tracking demo page in headless Chromium, served by `pysparse serve`.

Checks that the page tracks the hand in the bundled clip with both pipelines and records
every frame's timings; that the landmarks it computes are what pysparse's numpy reference
(and LiteRT) give on the very crop the page fed the engine; that the whole pipeline
(preprocessing, anchors, ROI, projection) agrees with MediaPipe's own web solution on a
real photo; that the benchmark's references (MediaPipe Tasks' HandLandmarker on the .task
built from the project's models, and the legacy MediaPipe Hands) run and track offline;
that the webcam path works (Chromium's fake camera); and that threads and sparsity switch. Writes docs/images/demo.png. The pipeline's arithmetic alone is tested
under Node (tests/demo/*.test.mjs).
"""
from __future__ import annotations

import base64
import math
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from pysparse import demo_assets

ROOT = Path(__file__).resolve().parent.parent
SCREENSHOT = ROOT / "docs" / "images" / "demo.png"
FRAMES = 4
# Engine vs the numpy reference on the same crop and weights, in landmark-crop pixels (of
# 224): float32 summation order only.
ENGINE_TOLERANCE_PX = 0.05
# Against LiteRT running the original .tflite on the same crop (its own kernels, its own
# fp16 weight handling).
LITERT_TOLERANCE_PX = 0.5
# Whole pipeline against MediaPipe Hands on a photo: mean landmark distance as a fraction
# of the hand's size (wrist to middle-finger base). Measured: under 0.01 px in a 191 px hand
# (the same crops, the same model); 1% leaves room for other engine builds' rounding.
MEDIAPIPE_TOLERANCE = 0.01
# Whole pipeline against MediaPipe Tasks' HandLandmarker on the same photo and the same
# landmark model (its own crop and resampling), as a fraction of the hand's size.
HANDLANDMARKER_TOLERANCE = 0.03
# The page's landmark crop against the same ROI cut from the clip frame in numpy (PIL's JPEG
# decoding, float64 bilinear), in 0..255 units. Measured: under 1e-5 (the same pixels).
CROP_TOLERANCE = 1.0


def test_pipeline_arithmetic_in_node():
    """web/hands/palm.mjs and web/hands/landmarks.mjs on closed-form cases (tests/demo/*.test.mjs)."""
    node = shutil.which("node")
    assert node, "node is part of the set-up"
    tests = sorted(str(p) for p in (ROOT / "tests" / "demo").glob("*.test.mjs"))
    r = subprocess.run([node, "--test", *tests], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]


def test_bench_summaries_split_tracked_and_detection_frames():
    """The benchmark's MediaPipe summary separates palm-detection frames from tracked ones and
    compares tracked frames; the sparse model's provenance is carried to the result."""
    from pysparse.bench import demo as bench
    mp = [{"frame": k, "ms": 100.0, "found": True, "detected": k == 0} for k in range(3)]  # warm-up, left out
    mp += [{"frame": 3 + k, "ms": 40.0 + k, "found": True, "detected": False} for k in range(5)]
    mp += [{"frame": 8, "ms": 90.0, "found": True, "detected": True}]
    s = bench.summarize_mediapipe(mp)
    assert (s["total"]["n"], s["tracked_frames"]["median"], s["palm_detection_frames"]) == (6, 42.0, 1)
    assert s["detection_frames"]["median"] == 90.0
    frame = lambda ms, det: {"preprocess": 1.0, "palm": 0.0, "landmarks": ms - 1, "postprocess": 0.0, "draw": 0.0,  # noqa: E731
                             "total": ms, "detected": det, "found": True}
    ours = [{"grab": 1.0, "copied": 0.4, "grabber": "VideoFrame", "dense": frame(30.0, k == 5), "sparse": frame(21.0, k == 5)}
            for k in range(8)]
    model = {"file": "hand_landmark_full.s80.spnn", "source": "hand_landmark_full.tflite", "finetuned": False,
             "label": "80% sparse, one-shot pruned, not fine-tuned", "bytes": 1}
    ours[6]["sparse"]["draw"] = 2.0  # drawing is left out of the comparison: the references do not draw
    ours[6]["sparse"]["total"] += 2.0
    result = {"runs": [{"mode": "file", "threads": 1, "info": {"models": {"sparse": model}},
                        "summary": bench.summarize_demo(ours)}],
              "mediapipe": {"summary": s},
              "handlandmarker": {"summary": bench.summarize_mediapipe([{**f, "ms": f["ms"] / 2} for f in mp])}}
    assert result["runs"][0]["summary"]["sparse"]["palm_detection_frames"] == 1
    ratios = bench.compare(result)
    assert ratios["file 1t dense"]["median"] == pytest.approx(30 / 42)
    assert ratios["file 1t sparse"]["median"] == pytest.approx(21 / 42)
    assert ratios["file 1t sparse"]["min"] == pytest.approx(21 / 40)
    assert result["runs"][0]["summary"]["sparse"]["tracked_frames"]["max"] == 23.0
    tasks = bench.compare(result, "handlandmarker")
    assert tasks["file 1t sparse"]["median"] == pytest.approx(21 / 21)
    assert bench.compare({"runs": result["runs"]}, "handlandmarker") == {}
    sm = bench.sparse_model(result)
    assert (sm["finetuned"], sm["file"], sm["same_in_every_run"]) == (False, model["file"], True)


def _read_table(buf: bytes, pos: int, slot: int):
    """The position of a table field `slot` of the flatbuffer table at `pos` (0 when absent)."""
    from flatbuffers.table import Table
    t = Table(bytearray(buf), pos)
    return t, t.Offset(4 + 2 * slot)


def _first_of_vector(buf: bytes, pos: int, slot: int) -> int:
    t, o = _read_table(buf, pos, slot)
    assert o, f"no field {slot}"
    return t.Indirect(t.Vector(o))


def test_handlandmarker_task_bundles_both_models_with_their_normalisation():
    """The .task zip: MediaPipe's two file names, stored; each model computes what the
    original does, and carries TFLITE_METADATA whose one input is normalised by mean 0,
    std 255 (read back here field by field, following metadata_schema.fbs)."""
    import io
    import struct
    import zipfile

    from flatbuffers.number_types import Uint8Flags
    from ai_edge_litert import schema_py_generated as fb
    from ai_edge_litert.interpreter import Interpreter

    from pysparse import assets
    from pysparse.bench import handlandmarker

    z = zipfile.ZipFile(io.BytesIO(handlandmarker.task_bytes()))
    assert [i.filename for i in z.infolist()] == ["hand_detector.tflite", "hand_landmarks_detector.tflite"]
    assert all(i.compress_type == zipfile.ZIP_STORED for i in z.infolist())
    for inside, source in handlandmarker.BUNDLE.items():
        data = z.read(inside)
        model = fb.ModelT.InitFromPackedBuf(bytearray(data), 0)
        entries = {(e.name.decode() if isinstance(e.name, bytes) else e.name): e.buffer for e in model.metadata}
        meta = bytes(model.buffers[entries["TFLITE_METADATA"]].data)
        assert meta[4:8] == b"M001"
        root = struct.unpack_from("<I", meta, 0)[0]
        subgraph = _first_of_vector(meta, root, 3)  # ModelMetadata.subgraph_metadata
        tensor = _first_of_vector(meta, subgraph, 2)  # SubGraphMetadata.input_tensor_metadata
        unit = _first_of_vector(meta, tensor, 4)  # TensorMetadata.process_units
        t, o = _read_table(meta, unit, 0)  # ProcessUnit.options_type
        assert t.Get(Uint8Flags, o + t.Pos) == 1  # NormalizationOptions
        t, o = _read_table(meta, unit, 1)
        options = t.Indirect(o + t.Pos)
        mean_std = []
        for slot in (0, 1):
            t, o = _read_table(meta, options, slot)
            start = t.Vector(o)
            assert t.VectorLen(o) == 1
            mean_std.append(struct.unpack_from("<f", meta, start)[0])
        assert mean_std == [0.0, 255.0]
        # the models' own tensors are untouched: same outputs as the original on one input
        outs = []
        for blob in (data, assets.model_path(source).read_bytes()):
            it = Interpreter(model_content=blob)
            it.allocate_tensors()
            d = it.get_input_details()[0]
            it.set_tensor(d["index"], np.random.default_rng(0).random(d["shape"], dtype=np.float32))
            it.invoke()
            outs.append([it.get_tensor(o["index"]) for o in it.get_output_details()])
        for a, b in zip(*outs):
            np.testing.assert_array_equal(a, b)


def test_finetuned_models_replace_the_one_shot_ones(tmp_path, monkeypatch):
    """A committed fine-tuned sparse model is used as it is and labelled so; the others stay
    one-shot pruned."""
    finetuned = tmp_path / "finetuned"
    finetuned.mkdir()
    (finetuned / "hand_landmark_full.s80.spnn").write_bytes(b"fine-tuned model bytes")
    monkeypatch.setattr(demo_assets, "FINETUNED_DIRS", (tmp_path / "absent", finetuned))
    plan = {e["file"]: e for e in demo_assets.model_plan()}
    s80, s90 = plan["hand_landmark_full.s80.spnn"], plan["hand_landmark_full.s90.spnn"]
    assert s80["finetuned"] and s80["label"] == "80% sparse, fine-tuned"
    assert demo_assets._pack_one(s80) == b"fine-tuned model bytes"
    assert not s90["finetuned"] and "one-shot" in s90["label"]


@pytest.fixture(scope="module")
def built():
    demo_assets.main(["--quiet"])
    if not (ROOT / "web" / "dist").is_dir():
        pytest.fail("web/dist is missing: build the engine first (make -C wasm all)")
    return demo_assets


@pytest.fixture(scope="module")
def base_url(built):
    from pysparse.bench.demo import serve
    with serve() as base:
        yield base


@pytest.fixture(scope="module")
def browser(built):
    from playwright.sync_api import sync_playwright

    from pysparse.bench.demo import launch
    with sync_playwright() as pw:
        b = launch(pw, built.ASSETS_OUT / "clip.y4m")
        yield b
        b.close()


def open_page(browser, url: str, ready: str, timeout: float = 120):
    """A page at url, its console errors and uncaught exceptions collected, once `ready`."""
    from pysparse.bench.demo import wait_for
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    errors = []
    page.on("console", lambda m: errors.append(f"console.{m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(f"uncaught: {e}"))
    page.goto(url)
    wait_for(page, ready, timeout=timeout)
    return page, errors


def demo_page(browser, base_url, query: str):
    page, errors = open_page(browser, f"{base_url}/demo/?{query}",
                             "window.pysparseDemo && (pysparseDemo.done || pysparseDemo.error)")
    assert page.evaluate("pysparseDemo.error") is None
    return page, errors


def hand_size(landmarks) -> float:
    (x0, y0, _), (x1, y1, _) = landmarks[0], landmarks[9]
    return math.hypot(x1 - x0, y1 - y0)


@pytest.fixture(scope="module")
def clip_run(browser, base_url):
    page, errors = demo_page(browser, base_url, f"source=clip&frames={FRAMES}&pace=0&threads=1&crops=1&loop=0")
    yield page, errors
    page.close()


@pytest.mark.slow
def test_page_tracks_the_clip_and_times_every_frame(clip_run):
    page, errors = clip_run
    assert errors == []
    timings = page.evaluate("pysparseDemo.timings")
    assert len(timings) == FRAMES
    assert [t["index"] for t in timings] == list(range(FRAMES))
    for t in timings:
        for p in ("dense", "sparse"):
            stages = [t[p][k] for k in ("preprocess", "palm", "landmarks", "postprocess", "draw")]
            assert all(math.isfinite(v) and v >= 0 for v in stages)
            assert t[p]["total"] == pytest.approx(sum(stages))
            assert t[p]["landmarks"] > 0
    # The first frame has no hand to track yet: palm detection runs, and finds it.
    assert timings[0]["dense"]["detected"] and timings[0]["dense"]["palm"] > 0
    assert all(t["dense"]["found"] for t in timings)
    # Then the hand is tracked from its landmarks, with no palm detection (as MediaPipe does).
    assert not any(t["dense"]["detected"] for t in timings[1:])
    last = page.evaluate("pysparseDemo.last")
    hand = last["dense"]["hand"]
    assert len(hand["landmarks"]) == 21
    for x, y, _ in hand["landmarks"]:
        assert -0.1 * last["width"] < x < 1.1 * last["width"] and -0.1 * last["height"] < y < 1.1 * last["height"]
    info = page.evaluate("pysparseDemo.info")
    assert info["threads"] == 1 and info["variant"]


def page_crop(page, name: str) -> np.ndarray:
    data = base64.b64decode(page.evaluate(f"pysparseDemo.cropBase64('{name}')"))
    return np.frombuffer(data, dtype=np.float32).reshape(1, 3, 224, 224)


def numpy_crop(rgb: np.ndarray, roi: dict, out: int = 224) -> np.ndarray:
    """The ROI of an HxWx3 image sampled bilinearly (edges replicated) as [3, out, out] in
    [0, 1]: what web/hands/landmarks.mjs cropToTensor computes, written independently."""
    h, w = rgb.shape[:2]
    step, c, s = roi["size"] / out, math.cos(roi["rotation"]), math.sin(roi["rotation"])
    grid = (np.arange(out) + 0.5 - out / 2) * step
    u, v = np.meshgrid(grid, grid)
    x = roi["cx"] + u * c - v * s - 0.5
    y = roi["cy"] + u * s + v * c - 0.5
    x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
    fx, fy = (x - x0)[..., None], (y - y0)[..., None]
    img = rgb.astype(np.float64)
    tap = lambda yy, xx: img[np.clip(yy, 0, h - 1), np.clip(xx, 0, w - 1)]  # noqa: E731
    out_img = ((1 - fx) * (1 - fy) * tap(y0, x0) + fx * (1 - fy) * tap(y0, x0 + 1)
               + (1 - fx) * fy * tap(y0 + 1, x0) + fx * fy * tap(y0 + 1, x0 + 1))
    return (out_img / 255).transpose(2, 0, 1)


@pytest.mark.slow
@pytest.mark.parametrize("pipeline", ["dense", "sparse"])
def test_page_crop_is_the_roi_of_the_frame(clip_run, built, pipeline):
    """The worker's frame read (only the ROIs' rectangle once tracking) and its crop give the
    ROI's pixels of the clip frame."""
    from PIL import Image
    page, _ = clip_run
    last = page.evaluate("pysparseDemo.last")
    frame = np.asarray(Image.open(built.ASSETS_OUT / "clip" / f"{last['index']:03d}.jpg").convert("RGB"))
    want = numpy_crop(frame, last[pipeline]["roi"])
    got = page_crop(page, pipeline)[0]
    assert np.abs(got - want).max() * 255 < CROP_TOLERANCE
    timings = page.evaluate("pysparseDemo.timings")
    assert timings[0]["copied"] == 1  # palm detection: the whole frame
    assert all(0 < t["copied"] < 1 for t in timings[1:])  # tracking: the ROIs' rectangle only
    assert timings[-1]["grabber"] == "VideoFrame"


@pytest.mark.slow
@pytest.mark.parametrize("pipeline", ["dense", "sparse"])
def test_landmarks_equal_the_reference_on_the_page_crop(clip_run, built, pipeline):
    from pysparse import reference
    from pysparse.format.reader import read_spnn_file
    page, _ = clip_run
    crop = page_crop(page, pipeline)
    assert 0.0 <= crop.min() and crop.max() <= 1.0 and crop.std() > 0.05  # a real image, [0, 1]
    raw = page.evaluate(f"pysparseDemo.last.{pipeline}.raw")
    info = page.evaluate(f"pysparseDemo.info.models.{pipeline}")
    graph = read_spnn_file(built.MODELS_OUT / info["file"]).graph
    out = reference.run(graph, {graph.inputs[0]: crop})
    want = out["Identity"].reshape(-1)
    got = np.array(raw["screen"], dtype=np.float32)
    assert np.abs(got - want).max() < ENGINE_TOLERANCE_PX * 10  # z too, which has a wider range
    assert np.abs(got.reshape(21, 3)[:, :2] - want.reshape(21, 3)[:, :2]).max() < ENGINE_TOLERANCE_PX
    assert raw["presence"] == pytest.approx(float(out["Identity_1"].ravel()[0]), abs=1e-3)
    assert raw["handedness"] == pytest.approx(float(out["Identity_2"].ravel()[0]), abs=1e-3)


@pytest.mark.slow
def test_dense_landmarks_equal_litert_on_the_page_crop(clip_run):
    from ai_edge_litert.interpreter import Interpreter

    from pysparse import assets
    page, _ = clip_run
    crop = page_crop(page, "dense")
    it = Interpreter(model_path=str(assets.model_path("hand_landmark_full.tflite")))
    it.allocate_tensors()
    it.set_tensor(it.get_input_details()[0]["index"], crop.transpose(0, 2, 3, 1).copy())
    it.invoke()
    outs = {d["name"]: it.get_tensor(d["index"]) for d in it.get_output_details()}
    want = outs["Identity"].reshape(21, 3)[:, :2]
    got = np.array(page.evaluate("pysparseDemo.last.dense.raw.screen"), dtype=np.float32).reshape(21, 3)[:, :2]
    assert np.abs(got - want).max() < LITERT_TOLERANCE_PX


@pytest.mark.slow
def test_pipeline_agrees_with_mediapipe_on_a_photo(browser, base_url):
    """The page's landmarks on a real photo against MediaPipe's own web solution's."""
    page, errors = demo_page(browser, base_url, "source=still:0&frames=3&pace=0&threads=1")
    ours = page.evaluate("pysparseDemo.last")
    page.close()
    assert errors == []
    ref_page, _ = open_page(browser, f"{base_url}/demo/reference.html?source=still:0&frames=3",
                            "window.mediapipeReference && (mediapipeReference.done || mediapipeReference.error)")
    theirs = ref_page.evaluate("mediapipeReference.last")
    assert ref_page.evaluate("mediapipeReference.error") is None
    ref_page.close()
    assert theirs["hand"] is not None and ours["dense"]["hand"] is not None
    a = np.array(ours["dense"]["hand"]["landmarks"])[:, :2]
    b = np.array(theirs["hand"]["landmarks"])[:, :2]
    size = hand_size(theirs["hand"]["landmarks"])
    assert size > 50  # the photo's hand is large
    mean = np.linalg.norm(a - b, axis=1).mean() / size
    print(f"mean landmark distance to MediaPipe: {mean:.4f} of the hand size ({size:.0f} px), max {np.abs(a - b).max():.4f} px")
    assert mean < MEDIAPIPE_TOLERANCE, f"mean landmark distance {mean:.3f} of the hand size"
    assert ours["dense"]["hand"]["label"] == theirs["hand"]["handedness"]["label"]


@pytest.mark.slow
def test_mediapipe_reference_tracks_the_clip(browser, base_url):
    """The speed reference runs as configured and tracks: palm detection on the first frame
    only, and the hand found on every frame."""
    page, errors = open_page(browser, f"{base_url}/demo/reference.html?source=clip&frames=6&loop=0",
                             "window.mediapipeReference && (mediapipeReference.done || mediapipeReference.error)")
    ref = page.evaluate("mediapipeReference")
    page.close()
    assert ref["error"] is None and errors == []
    assert ref["options"] == {"maxNumHands": 1, "modelComplexity": 1, "minDetectionConfidence": 0.5,
                              "minTrackingConfidence": 0.5, "selfieMode": False, "useCpuInference": True}
    timings = ref["timings"]
    assert [t["index"] for t in timings] == list(range(6))
    assert all(t["found"] for t in timings)
    assert [t["detected"] for t in timings] == [True] + [False] * 5
    assert all(t["ms"] > 0 for t in timings)


def handlandmarker_page(browser, base_url, tmp_path, query: str):
    """The HandLandmarker reference page, its bundle served and outside requests aborted as
    `make bench-demo` does; returns its state, the aborted URLs and the finished requests."""
    from pysparse.bench.demo import guard, wait_for
    from pysparse.bench.handlandmarker import write_task
    page = browser.new_page()
    blocked, finished = [], []
    page.on("requestfinished", lambda r: finished.append(r.url))
    guard(page, base_url, write_task(tmp_path), blocked)
    page.goto(f"{base_url}/demo/handlandmarker.html?{query}")
    wait_for(page, "window.handLandmarkerReference && (handLandmarkerReference.done || handLandmarkerReference.error)",
             timeout=120)
    ref = page.evaluate("handLandmarkerReference")
    page.close()
    return ref, blocked, finished


@pytest.mark.slow
def test_handlandmarker_reference_tracks_the_clip_offline(browser, base_url, tmp_path):
    """MediaPipe Tasks' HandLandmarker on the project's .task: CPU delegate, VIDEO mode, the
    SIMD wasm; palm detection on the first frame only, the hand on every frame; nothing
    reaches beyond the local server."""
    ref, blocked, finished = handlandmarker_page(browser, base_url, tmp_path, "source=clip&frames=6&loop=0")
    assert ref["error"] is None
    assert ref["options"]["baseOptions"]["delegate"] == "CPU" and ref["options"]["runningMode"] == "VIDEO"
    assert ref["wasm"] == "vision_wasm_internal.wasm" and ref["version"]
    timings = ref["timings"]
    assert [t["index"] for t in timings] == list(range(6))
    assert all(t["found"] for t in timings)
    assert [t["detected"] for t in timings] == [True] + [False] * 5
    assert all(t["ms"] > 0 for t in timings)
    assert all(not u.startswith(base_url) for u in blocked)
    assert finished and all(u.startswith(base_url) for u in finished)


@pytest.mark.slow
def test_handlandmarker_agrees_with_the_pipeline_on_a_photo(browser, base_url, tmp_path):
    """The same landmark model in MediaPipe Tasks and in the page (dense) on a real photo:
    the metadata's normalisation is what the model expects."""
    page, errors = demo_page(browser, base_url, "source=still:0&frames=3&pace=0&threads=1")
    ours = page.evaluate("pysparseDemo.last")
    page.close()
    assert errors == []
    ref, _, _ = handlandmarker_page(browser, base_url, tmp_path, "source=still:0&frames=3")
    assert ref["error"] is None and ref["last"]["hand"] is not None
    a = np.array(ours["dense"]["hand"]["landmarks"])[:, :2]
    b = np.array(ref["last"]["hand"]["landmarks"])[:, :2]
    size = hand_size(ref["last"]["hand"]["landmarks"])
    assert size > 50
    mean = np.linalg.norm(a - b, axis=1).mean() / size
    print(f"mean landmark distance to HandLandmarker: {mean:.4f} of the hand size ({size:.0f} px)")
    assert mean < HANDLANDMARKER_TOLERANCE, f"mean landmark distance {mean:.3f} of the hand size"


@pytest.mark.slow
def test_camera_source(browser, base_url):
    """The webcam path, fed by Chromium's fake camera playing the clip's .y4m."""
    page, errors = demo_page(browser, base_url, "source=camera&frames=3&pace=0&threads=1")
    timings = page.evaluate("pysparseDemo.timings")
    assert [t["source"] for t in timings] == ["camera"] * 3
    assert (timings[0]["width"], timings[0]["height"]) == (640, 480)
    assert page.evaluate("pysparseDemo.last.dense.hand") is not None
    page.close()
    assert errors == []


@pytest.mark.slow
def test_file_source(browser, base_url):
    """A user-chosen file (here a photo) replaces the clip."""
    from pysparse import assets
    from pysparse.bench.demo import wait_for
    page, errors = demo_page(browser, base_url, "source=clip&frames=2&pace=0&threads=1")
    photo = assets.photo_path("hand_halfcurl.jpg")
    page.set_input_files("#file", str(photo))
    wait_for(page, "(pysparseDemo.done && pysparseDemo.timings.length >= 4) || pysparseDemo.error", timeout=120)
    last = page.evaluate("pysparseDemo.timings.at(-1)")
    assert (last["source"], last["label"], last["width"], last["height"]) == ("still", photo.name, 480, 640)
    assert page.evaluate("pysparseDemo.last.dense.hand") is not None
    page.close()
    assert errors == []


@pytest.mark.slow
def test_threads_and_sparsity_switch(browser, base_url):
    from pysparse.bench.demo import wait_for
    page, errors = demo_page(browser, base_url, "source=clip&frames=2&pace=0&threads=1&sparsity=80")
    isolated = page.evaluate("crossOriginIsolated")
    assert isolated, "pysparse serve makes the page cross-origin isolated"
    assert page.evaluate("pysparseDemo.info.models.sparse.sparsity") == 80
    page.evaluate("pysparseDemo.setThreads(2)")
    wait_for(page, "(pysparseDemo.done && pysparseDemo.timings.length >= 4) || pysparseDemo.error", timeout=120)
    assert page.evaluate("pysparseDemo.info.threads") == 2
    assert page.evaluate("pysparseDemo.timings.at(-1).threads") == 2
    page.evaluate("pysparseDemo.setThreads(4)")
    wait_for(page, "(pysparseDemo.done && pysparseDemo.timings.length >= 6) || pysparseDemo.error", timeout=120)
    assert page.evaluate("pysparseDemo.info.threads") == 4
    page.evaluate("pysparseDemo.setSparsity(90)")
    wait_for(page, "(pysparseDemo.done && pysparseDemo.timings.length >= 8) || pysparseDemo.error", timeout=120)
    assert page.evaluate("pysparseDemo.info.models.sparse.sparsity") == 90
    assert page.evaluate("pysparseDemo.timings.at(-1).sparsity") == 90
    assert "90%" in page.inner_text("#label-sparse")
    assert page.evaluate("pysparseDemo.error") is None
    page.close()
    assert errors == []


@pytest.mark.slow
def test_screenshot(browser, base_url):
    """docs/images/demo.png: the page on the clip's one-finger photo, overlays drawn."""
    page, errors = demo_page(browser, base_url, "source=clip&start=44&frames=12&pace=0&threads=1")
    assert errors == []
    assert page.evaluate("pysparseDemo.last.dense.hand") is not None
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    tmp = SCREENSHOT.with_suffix(".tmp.png")
    page.screenshot(path=str(tmp), full_page=True)
    os.replace(tmp, SCREENSHOT)
    page.close()
