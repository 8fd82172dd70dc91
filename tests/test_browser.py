"""The JS runtime in headless Chromium, served by `pysparse serve`: a real packed hand model on
a canvas and on a Float32Array against the numpy reference, variant choice with and without
cross-origin isolation, threads, workers and errors."""
from __future__ import annotations

import json

import numpy as np
import pytest

from web_fixtures import b64, chromium, open_page, require_engine_builds, serve, write_case

pytestmark = pytest.mark.slow

# Runs in the page: decode the case, draw the photo on a canvas, load and run the model.
SETUP_JS = """
globalThis.setupCase = (c) => {
  const bytes = (s) => Uint8Array.from(atob(s), (ch) => ch.charCodeAt(0));
  const input = new Float32Array(bytes(c.input).buffer);
  const rgba = new Uint8ClampedArray(bytes(c.pixels).buffer);
  const [, , height, width] = c.shape;
  const canvas = document.createElement('canvas');
  canvas.width = width + 40;  // the photo sits at (17, 9) inside a larger canvas
  canvas.height = height + 30;
  const ctx = canvas.getContext('2d');
  ctx.fillStyle = '#3a7';
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  ctx.putImageData(new ImageData(rgba, width, height), 17, 9);
  const crop = { x: 17, y: 9, width, height };
  return { input, canvas, crop };
};
globalThis.plain = (outputs) => Object.fromEntries(Object.entries(outputs).map(
  ([k, v]) => [k, { data: Array.from(v.data), shape: v.shape }]));
true;  // (a script ending in a function would be called by page.evaluate)
"""


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    require_engine_builds()
    out = tmp_path_factory.mktemp("browser-case")
    meta = write_case(out, "hand_landmark_lite.tflite")
    meta["dir"] = out
    meta["js"] = {"input": b64((out / "input.f32").read_bytes()), "pixels": b64((out / "pixels.rgba").read_bytes()),
                  "shape": meta["input"]["shape"]}
    return meta


@pytest.fixture(scope="module")
def browser():
    with chromium() as b:
        yield b


@pytest.fixture(scope="module")
def isolated_url(case):
    with serve(case["dir"]) as url:
        yield url


@pytest.fixture(scope="module")
def plain_url(case):
    with serve(case["dir"], "--no-isolation") as url:
        yield url


def page_at(browser, base: str):
    page = open_page(browser, base + "/web/test/index.html")
    page.evaluate(SETUP_JS)
    return page


def assert_matches_reference(case, outputs: dict):
    assert sorted(outputs) == sorted(o["name"] for o in case["outputs"])
    for o in case["outputs"]:
        expected = np.fromfile(case["dir"] / o["file"], dtype="<f4").reshape(o["shape"])
        got = np.asarray(outputs[o["name"]]["data"], dtype=np.float32).reshape(outputs[o["name"]]["shape"])
        assert got.shape == expected.shape
        worst = float(np.max(np.abs(got - expected)))
        assert worst <= o["tolerance"], f"{o['name']}: max |diff| {worst} > {o['tolerance']}"


def test_tensor_and_canvas_match_the_reference(browser, isolated_url, case):
    page = page_at(browser, isolated_url)
    result = page.evaluate("""async (c) => {
      const { load } = await import('/web/pysparse.mjs');
      const { input, canvas, crop } = setupCase(c);
      const model = await load('/models/model.spnn', { threads: 1 });
      const out = { info: model.info, tensor: plain(model.run(input)), canvas: plain(model.run(canvas, { crop })) };
      // ImageData and ImageBitmap sources, cropped the same way.
      const ctx = canvas.getContext('2d');
      out.imageData = plain(model.run(ctx.getImageData(crop.x, crop.y, crop.width, crop.height)));
      out.bitmap = plain(model.run(await createImageBitmap(canvas), { crop }));
      model.dispose();
      return out;
    }""", case["js"])
    assert result["info"]["threads"] == 1
    assert result["info"]["variant"] in ("relaxed", "simd")
    for key in ("tensor", "canvas", "imageData", "bitmap"):
        assert_matches_reference(case, result[key])
    assert page.errors == []


@pytest.mark.parametrize("variant", ["simd", "relaxed", "simd-threads", "relaxed-threads"])
def test_every_variant_matches_the_reference(browser, isolated_url, case, variant):
    page = page_at(browser, isolated_url)
    result = page.evaluate("""async ([c, variant]) => {
      const { load } = await import('/web/pysparse.mjs');
      const model = await load('/models/model.spnn', { variant, threads: 2 });
      const out = { info: model.info, outputs: plain(model.run(setupCase(c).input)) };
      model.dispose();
      return out;
    }""", [case["js"], variant])
    assert result["info"]["variant"] == variant
    assert result["info"]["threads"] == (2 if variant.endswith("-threads") else 1)
    assert_matches_reference(case, result["outputs"])


def test_isolated_page_uses_threads(browser, isolated_url, case):
    page = page_at(browser, isolated_url)
    result = page.evaluate("""async (c) => {
      const { load, detectFeatures } = await import('/web/pysparse.mjs');
      const { input } = setupCase(c);
      const model = await load('/models/model.spnn', { threads: 2 });
      const two = plain(model.run(input));
      const info = model.info;
      model.wake();  // the workers start ahead of the run: the same outputs
      const woken = plain(model.run(input));
      model.setThreads(1);
      const one = plain(model.run(input));
      model.dispose();
      let wakeDisposed = 'woke';
      try { model.wake(); } catch (e) { wakeDisposed = e.message; }
      return { isolated: crossOriginIsolated, features: detectFeatures(), info, two, woken, one,
               wakeDisposed };
    }""", case["js"])
    assert result["isolated"] is True
    assert result["features"]["threads"] is True and result["features"]["simd"] is True
    assert result["info"]["variant"] == ("relaxed-threads" if result["features"]["relaxedSimd"] else "simd-threads")
    assert result["info"]["threads"] == 2
    assert_matches_reference(case, result["two"])
    assert result["two"] == result["one"], "outputs with 2 threads differ from 1 thread"
    assert result["woken"] == result["two"]
    assert "disposed" in result["wakeDisposed"]


def test_page_without_isolation_gets_no_threads(browser, plain_url, case):
    page = page_at(browser, plain_url)
    result = page.evaluate("""async (c) => {
      const { load, detectFeatures } = await import('/web/pysparse.mjs');
      const model = await load('/models/model.spnn', { threads: 2 });
      const out = { isolated: crossOriginIsolated, features: detectFeatures(), info: model.info,
                    outputs: plain(model.run(setupCase(c).input)) };
      model.dispose();
      out.forced = await load('/models/model.spnn', { variant: 'simd-threads' }).then(() => 'loaded', (e) => e.message);
      return out;
    }""", case["js"])
    assert result["isolated"] is False
    assert result["features"]["threads"] is False
    assert result["info"]["threads"] == 1
    assert result["info"]["variant"] == ("relaxed" if result["features"]["relaxedSimd"] else "simd")
    assert "cross-origin-isolated" in result["forced"]
    assert_matches_reference(case, result["outputs"])


def test_worker_mode(browser, isolated_url, case):
    page = page_at(browser, isolated_url)
    result = page.evaluate("""async (c) => {
      const { loadInWorker } = await import('/web/pysparse.mjs');
      const { input, canvas, crop } = setupCase(c);
      const model = await loadInWorker('/models/model.spnn', { threads: 2 });
      model.wake();
      const out = { info: model.info, tensor: plain(await model.run(input)),
                    canvas: plain(await model.run(canvas, { crop })) };
      out.wrongSize = await model.run(new Float32Array(10)).then(() => 'ran', (e) => e.message);
      out.callerKeepsInput = input.length;
      await model.dispose();
      return out;
    }""", case["js"])
    assert result["info"]["worker"] is True
    assert result["info"]["variant"] in ("relaxed-threads", "simd-threads")
    assert result["callerKeepsInput"] == int(np.prod(case["input"]["shape"]))
    assert "has 10 values" in result["wrongSize"]
    assert_matches_reference(case, result["tensor"])
    assert_matches_reference(case, result["canvas"])


def test_errors(browser, isolated_url, case):
    page = page_at(browser, isolated_url)
    result = page.evaluate("""async () => {
      const { load } = await import('/web/pysparse.mjs');
      const message = (p) => p.then(() => 'no error', (e) => `${e.name}: ${e.message}`);
      const out = {
        corrupt: await message(load('/models/corrupt.spnn')),
        truncated: await message(load('/models/truncated.spnn')),
        missing: await message(load('/models/missing.spnn')),
      };
      const model = await load('/models/model.spnn', { threads: 1 });
      try { model.run(new Float32Array(10)); out.wrongSize = 'no error'; } catch (e) { out.wrongSize = e.message; }
      try { model.run(new Uint8Array(10)); out.wrongType = 'no error'; } catch (e) { out.wrongType = e.name; }
      model.dispose();
      return out;
    }""")
    assert result["corrupt"].startswith("PysparseError: ") and "CRC mismatch" in result["corrupt"]
    assert result["truncated"].startswith("PysparseError: ")
    assert "HTTP 404" in result["missing"]
    assert "has 10 values; the model expects 1x3x224x224" in result["wrongSize"]
    assert result["wrongType"] == "TypeError"


def test_browser_without_simd_gets_a_clear_error(browser, isolated_url):
    page = page_at(browser, isolated_url)
    message = page.evaluate("""async () => {
      WebAssembly.validate = () => false;  // what a browser without wasm SIMD answers
      const { load } = await import('/web/pysparse.mjs');
      return load('/models/model.spnn').then(() => 'loaded', (e) => e.message);
    }""")
    assert "needs WebAssembly SIMD" in message
    assert page.errors == []


def test_runtime_page_packs_an_upload_and_runs_it(browser, isolated_url, case):
    """web/index.html: upload a real TFLite model to POST /api/pack, then load and time the result."""
    from pysparse import assets
    page = open_page(browser, isolated_url + "/web/")
    page.set_input_files("#file", str(assets.model_path("hand_landmark_lite.tflite")))
    page.select_option("#weights", "fp16")
    page.click("#pack")
    page.wait_for_function("document.getElementById('log').textContent.includes('\"download\"')", timeout=60_000)
    packed = json.loads(page.text_content("#log"))
    assert packed["filename"] == "hand_landmark_lite.spnn" and packed["weights"] == "fp16"
    assert page.eval_on_selector("#models", "s => s.value") == packed["download"]
    page.select_option("#threads", "1")
    page.click("#load")
    page.wait_for_function("document.getElementById('log').textContent.includes('median_run_ms')", timeout=60_000)
    timing = json.loads(page.text_content("#log"))
    assert timing["name"] == "hand_landmark_lite"
    assert timing["info"]["threads"] == 1 and timing["median_run_ms"] > 0
    assert page.errors == []


def test_more_threads_than_the_initial_worker_pool(browser, isolated_url, case):
    """Three models of 3 threads each need 6 workers, more than the build starts with: the
    runtime readies them before loading, as a blocked main thread could not start them."""
    page = page_at(browser, isolated_url)
    page.set_default_timeout(60_000)
    result = page.evaluate("""async (c) => {
      const { load } = await import('/web/pysparse.mjs');
      const { input } = setupCase(c);
      const models = [];
      for (let i = 0; i < 3; i++) models.push(await load('/models/model.spnn', { threads: 3 }));
      const out = models.map((m) => ({ threads: m.info.threads, outputs: plain(m.run(input)) }));
      models.forEach((m) => m.dispose());
      return out;
    }""", case["js"])
    assert [r["threads"] for r in result] == [3, 3, 3]
    for r in result:
        assert_matches_reference(case, r["outputs"])
