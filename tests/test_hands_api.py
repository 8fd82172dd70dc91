"""The hand-tracking task API of the npm package (web/hands/): tests/hands/*.test.mjs under
Node with the packed MediaPipe palm and landmark models and a real hand photo."""
from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pysparse import assets
from pysparse.pack import pack_file
from web_fixtures import require_engine_builds, serve

ROOT = Path(__file__).resolve().parent.parent
NODE_TESTS = sorted((ROOT / "tests" / "hands").glob("*.test.mjs"))


@pytest.fixture(scope="module")
def case_dir(tmp_path_factory) -> Path:
    require_engine_builds(("simd", "relaxed"))
    out = tmp_path_factory.mktemp("hands-case")
    pack_file(assets.model_path("palm_detection_full.tflite"), out / "palm.spnn")
    pack_file(assets.model_path("hand_landmark_full.tflite"), out / "landmark.spnn")
    rgb = np.asarray(Image.open(assets.photo_path("hand_nocurl.jpg")).convert("RGB"), dtype=np.uint8)
    rgba = np.concatenate([rgb, np.full(rgb.shape[:2] + (1,), 255, np.uint8)], axis=2)
    (out / "photo.rgba").write_bytes(rgba.tobytes())
    (out / "case.json").write_text(json.dumps({"palm": "palm.spnn", "landmark": "landmark.spnn", "photo": "photo.rgba",
                                               "width": rgb.shape[1], "height": rgb.shape[0]}))
    return out


@pytest.mark.parametrize("test_file", NODE_TESTS, ids=lambda p: p.name)
def test_hands_api_in_node(case_dir, test_file):
    env = dict(os.environ, PYSPARSE_HANDS_CASE=str(case_dir))
    env.pop("NODE_OPTIONS", None)
    proc = subprocess.run(["node", "--test", "--test-reporter=tap", str(test_file)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    report = proc.stdout + proc.stderr
    failed = re.search(r"^# fail (\d+)", report, re.M)
    assert proc.returncode == 0 and failed and failed.group(1) == "0", report[-6000:]


def readme_example_page() -> str:
    text = (ROOT / "web" / "README.md").read_text()
    section = text.split("## Hand landmarks (task API)", 1)[1]
    return re.search(r"```html\n(.*?)```", section, re.S).group(1)


@pytest.mark.slow
def test_the_readme_example_page_tracks_the_clip_in_chromium(case_dir, tmp_path):
    """web/README.md's example page, as written, on Chromium's fake camera playing the demo's clip."""
    from playwright.sync_api import sync_playwright

    from pysparse import demo_assets
    from pysparse.bench.demo import launch

    page_html = readme_example_page()
    assert len(page_html.splitlines()) <= 35
    demo_assets.build_clip(quiet=True)
    models = tmp_path / "models"
    models.mkdir()
    for name in ("palm_detection_full", "hand_landmark_full"):
        (models / f"{name}.spnn").write_bytes((case_dir / ("palm.spnn" if name.startswith("palm") else "landmark.spnn"))
                                              .read_bytes())
    with serve(models) as url, sync_playwright() as pw:
        browser = launch(pw, demo_assets.ASSETS_OUT / "clip.y4m")
        try:
            page = browser.new_page()
            errors = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            # the origin; the example replaces the page once the page's own model list has loaded
            # (else that fetch's handler would find its elements gone)
            page.goto(url + "/web/index.html", wait_until="networkidle")
            page.set_content(page_html)
            page.wait_for_function("/(Left|Right) hand, [0-9.]+ ms/.test(document.getElementById('status').textContent)",
                                   timeout=90_000)
            assert errors == []
        finally:
            browser.close()
