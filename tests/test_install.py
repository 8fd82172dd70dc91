"""Installed outside the checkout, as a new user would: the wheel in a fresh virtual
environment (the command line, `pack`, `serve` with a browser loading a model from it) and
the npm tarball of web/ in a fresh Node project (a script running a model).

The fresh environment gets its dependencies without a package index: the distributions
that the wheel's requirements resolve to in this checkout's environment (and nothing else:
no torch, no Playwright) are linked into a folder on its path, then pip installs the wheel
with `--no-index`, so a requirement the wheel forgot or cannot meet fails the install.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from pysparse import assets
from web_fixtures import stop

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
MEDIAPIPE_MODELS = ("hand_landmark_full", "hand_landmark_lite", "palm_detection_full", "palm_detection_lite")
ENGINE_BUILDS = [f"pysparse-{v}.{ext}" for v in ("simd", "simd-threads", "relaxed", "relaxed-threads")
                 for ext in ("mjs", "wasm")]
# A packed model may be this much larger than the source file (headers, metadata, fp32 biases).
SIZE_SLACK = 1.05


def run(cmd, **kw) -> subprocess.CompletedProcess:
    kw.setdefault("timeout", 300)
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


def requirement_closure(requirements: list[str]) -> list[metadata.Distribution]:
    """The distributions of this environment that satisfy `requirements` (with no extras
    asked for), and theirs in turn."""
    found: dict[str, metadata.Distribution] = {}
    todo = list(requirements)
    while todo:
        req = Requirement(todo.pop())
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        key = canonicalize_name(req.name)
        if key in found:
            continue
        dist = metadata.distribution(req.name)
        assert dist.version in req.specifier or not req.specifier, f"{req} not met here: {dist.version}"
        found[key] = dist
        todo += dist.requires or []
    return list(found.values())


def link_distributions(dists, dest: Path) -> None:
    """Symbolic links in `dest` to each distribution's top-level files and folders."""
    dest.mkdir(parents=True, exist_ok=True)
    for dist in dists:
        site = Path(dist.locate_file(""))
        for top in {Path(f).parts[0] for f in dist.files or [] if not str(f).startswith("..")}:
            if not (dest / top).exists() and (site / top).exists():
                (dest / top).symlink_to(site / top)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    proc = run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(out),
                str(ROOT)], cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (whl,) = out.glob("pysparse_web-*.whl")
    return whl


@pytest.fixture(scope="module")
def fresh(tmp_path_factory, wheel) -> dict:
    """A new virtual environment with the wheel installed, a work folder outside the
    checkout, and an environment for its commands (its own cache, no npm packages)."""
    base = tmp_path_factory.mktemp("fresh")
    venv = base / "venv"
    # Nothing of this checkout's environment leaks in (PYTHONPATH would show pip this checkout).
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith("PYSPARSE_") and k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
    assert run([sys.executable, "-m", "venv", "--without-pip", str(venv)], env=clean).returncode == 0
    py = venv / "bin" / "python"
    site = Path(run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                    env=clean, check=True).stdout.strip())
    with zipfile.ZipFile(wheel) as z:
        meta_name = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        requires = [line.split(":", 1)[1].strip() for line in z.read(meta_name).decode().splitlines()
                    if line.startswith("Requires-Dist:")]
    link_distributions(requirement_closure(requires), base / "deps")
    (site / "_pysparse_test_deps.pth").write_text(str(base / "deps") + "\n")
    proc = run([sys.executable, "-m", "pip", "--python", str(py), "install", "-q", "--no-index", str(wheel)],
               env=clean)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert (venv / "bin" / "pysparse").exists(), proc.stdout[-2000:]
    work = base / "work"
    work.mkdir()
    env = dict(clean, PATH=f"{venv / 'bin'}{os.pathsep}{clean.get('PATH', '')}", PYSPARSE_CACHE=str(base / "cache"),
               # no npm packages here, so nothing is fetched: the demo says what it lacks
               PYSPARSE_NODE_MODULES=str(base / "no-node-modules"))
    return {"bin": venv / "bin", "work": work, "env": env, "base": base}


def pysparse(fresh, *args, **kw) -> subprocess.CompletedProcess:
    return run([str(fresh["bin"] / "pysparse"), *map(str, args)], cwd=fresh["work"], env=fresh["env"], **kw)


# -- the wheel -------------------------------------------------------------------------


def test_wheel_carries_the_runtime_engines_and_demo_and_declares_the_cli_needs(wheel):
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        meta = z.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    static = "pysparse/_static/"
    assert {static + "web/dist/" + b for b in ENGINE_BUILDS} <= names
    assert {static + f"web/{f}" for f in ("pysparse.mjs", "engine.mjs", "pysparse.d.ts", "hands/index.mjs")} <= names
    assert {static + f"demo/{f}" for f in ("index.html", "demo.mjs", "worker.mjs")} <= names
    requires = [line.split(":", 1)[1].strip() for line in meta.splitlines() if line.startswith("Requires-Dist:")]
    plain = {Requirement(r).name for r in requires if "extra ==" not in r}
    assert {"numpy", "flask", "pillow", "onnx", "tflite", "rich"} <= plain
    # Pyodide (sys_platform "emscripten") installs none of them: the front end needs none.
    assert all("emscripten" in r for r in requires if "extra ==" not in r)
    assert "Name: pysparse-web" in meta


def test_cli_help_and_every_command(fresh):
    proc = pysparse(fresh, "--help")
    assert proc.returncode == 0, proc.stderr
    for command in ("pack", "inspect", "run", "serve", "prune", "bench"):
        assert command in proc.stdout
        sub = pysparse(fresh, command, "--help")
        assert sub.returncode == 0 and "usage:" in sub.stdout, sub.stderr


def test_pack_keeps_fp16_weights_of_every_mediapipe_model(fresh):
    for name in MEDIAPIPE_MODELS:
        src = assets.model_path(f"{name}.tflite")
        out = fresh["work"] / f"{name}.spnn"
        proc = pysparse(fresh, "pack", src, "-o", out)
        assert proc.returncode == 0, proc.stderr
        assert "fp16 (as the source)" in proc.stdout
        ratio = out.stat().st_size / src.stat().st_size
        print(f"{name}: {out.stat().st_size} bytes, {ratio:.3f} x the .tflite")
        assert ratio <= SIZE_SLACK, f"{name}: the .spnn is {ratio:.2f} x the .tflite"
    wide = fresh["work"] / "lite.fp32.spnn"
    assert pysparse(fresh, "pack", assets.model_path("hand_landmark_lite.tflite"), "-o", wide,
                    "--weights", "fp32").returncode == 0
    assert wide.stat().st_size > 1.5 * (fresh["work"] / "hand_landmark_lite.spnn").stat().st_size


def test_optional_parts_say_what_to_install(fresh):
    model = fresh["work"] / "hand_landmark_lite.spnn"
    if not model.exists():
        assert pysparse(fresh, "pack", assets.model_path("hand_landmark_lite.tflite"), "-o", model).returncode == 0
    photo = assets.photo_path("hand_nocurl.jpg")
    calibrate = pysparse(fresh, "prune", model, "--sparsity", "0.5", "--scope", "layer", "--calibrate",
                         "--images", photo, "-o", fresh["work"] / "pruned.spnn")
    bench = pysparse(fresh, "bench", "--smoke")
    for proc, install in ((calibrate, "pysparse-web[torch]"), (bench, "pysparse-web[bench]")):
        assert proc.returncode == 2, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1 and install in proc.stderr, proc.stderr


def serve(fresh, *args, env=None):
    """`pysparse serve` from the fresh environment; returns the process, its base URL and
    the lines it printed before serving."""
    proc = subprocess.Popen([str(fresh["bin"] / "pysparse"), "serve", "--port", "0", *map(str, args)],
                            cwd=fresh["work"], env=env or fresh["env"], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    lines = []
    for line in proc.stdout:
        lines.append(line.rstrip("\n"))
        m = re.search(r"at (http://\S+?)/ ", line)
        if m:
            return proc, m.group(1), lines
    proc.wait(timeout=10)
    raise AssertionError(f"pysparse serve did not start (exit {proc.returncode}): {lines}")


LOAD_AND_RUN_JS = """async (url) => {
  const { load } = await import('/web/pysparse.mjs');
  const model = await load(url, { threads: 1 });
  const [input] = model.inputs;
  const out = model.run(new Float32Array(input.shape.reduce((a, b) => a * b, 1)).fill(0.5));
  const result = { variant: model.info.variant, outputs: {} };
  for (const [name, { data, shape }] of Object.entries(out)) {
    result.outputs[name] = { shape, finite: data.every(Number.isFinite) };
  }
  model.dispose();
  return result;
}"""


def test_serve_from_any_folder_runs_a_model_in_chromium(fresh):
    from web_fixtures import chromium, open_page

    models = fresh["base"] / "my-models"
    models.mkdir(exist_ok=True)
    model = models / "hand_landmark_lite.spnn"
    assert pysparse(fresh, "pack", assets.model_path("hand_landmark_lite.tflite"), "-o", model).returncode == 0
    proc, url, lines = serve(fresh, "--models", models)
    try:
        # No hand models and no npm packages: one line says what the demo lacks and how to get it.
        (note,) = [line for line in lines if line.startswith("pysparse serve: demo:")]
        assert "--models" in note and "hand_landmark_full.tflite" in note
        assert "site-packages" in lines[-1] and "/web/" in lines[-1]
        with chromium() as browser:
            page = open_page(browser, url + "/web/index.html")
            result = page.evaluate(LOAD_AND_RUN_JS, "/models/hand_landmark_lite.spnn")
            assert page.errors == []
    finally:
        stop(proc)
    from pysparse.format import read_spnn
    expected = {o["name"]: o["shape"] for o in read_spnn(model.read_bytes()).metadata["outputs"]}
    assert {k: v["shape"] for k, v in result["outputs"].items()} == expected
    assert all(v["finite"] for v in result["outputs"].values())
    assert result["variant"] in ("simd", "relaxed")


def test_serve_makes_the_demo_models_from_the_users_files(fresh):
    """The user's own hand models (and the photos of npm's fingerpose, for the clip) make
    the demo's models in the cache on first use; the next start finds them up to date."""
    import urllib.request

    models = fresh["base"] / "hand-models"
    models.mkdir(exist_ok=True)
    for name in ("hand_landmark_full.tflite", "palm_detection_full.tflite"):
        (models / name).write_bytes(assets.model_path(name).read_bytes())
    env = dict(fresh["env"], PYSPARSE_NODE_MODULES=str(ROOT / "node_modules"))
    for start in range(2):
        proc, url, lines = serve(fresh, "--models", models, env=env)
        try:
            assert not any("demo:" in line and "serving" not in line for line in lines), lines
            assert lines[-1].endswith("/demo/)")
            with urllib.request.urlopen(url + "/demo/models/manifest.json") as r:
                manifest = json.load(r)
            with urllib.request.urlopen(url + "/demo/models/" + manifest["dense"]) as r:
                assert r.read(4) == b"SPNN"
            with urllib.request.urlopen(url + "/demo/assets/clip.json") as r:
                assert json.load(r)["frames"]
        finally:
            stop(proc)
        built = [line for line in lines if line.startswith("packed ")]
        assert (len(built) > 0) == (start == 0), lines
    assert (fresh["base"] / "cache" / "demo" / "models" / "manifest.json").is_file()


# -- the npm tarball ---------------------------------------------------------------------

NODE_SCRIPT = """
import { readFile } from 'node:fs/promises';
import { load } from 'pysparse';

const model = await load(new Uint8Array(await readFile(process.argv[2])));
const [input] = model.inputs;
const out = model.run(new Float32Array(input.shape.reduce((a, b) => a * b, 1)).fill(0.5));
const outputs = Object.fromEntries(Object.entries(out).map(
  ([name, { data, shape }]) => [name, { shape, finite: data.every(Number.isFinite) }]));
console.log(JSON.stringify({ variant: model.info.variant, outputs }));
model.dispose();
process.exit(0);
"""


def test_npm_tarball_runs_a_model_in_node(tmp_path):
    from pysparse.format import read_spnn

    packed = run(["npm", "pack", "--json", "--pack-destination", str(tmp_path), "./web"], cwd=ROOT)
    assert packed.returncode == 0, packed.stderr[-3000:]
    (info,) = json.loads(packed.stdout)
    files = {f["path"] for f in info["files"]}
    assert {f"dist/{b}" for b in ENGINE_BUILDS} | {"pysparse.mjs", "pysparse.d.ts", "package.json",
                                                    "hands/index.mjs", "hands/tracker.mjs", "hands.d.ts"} <= files
    app = tmp_path / "app"
    app.mkdir()
    (app / "package.json").write_text(json.dumps({"name": "app", "private": True, "type": "module"}))
    installed = run(["npm", "install", "--offline", "--no-audit", "--no-fund", str(tmp_path / info["filename"])],
                    cwd=app)
    assert installed.returncode == 0, installed.stderr[-3000:]
    (app / "run.mjs").write_text(NODE_SCRIPT)
    model = tmp_path / "hand_landmark_lite.spnn"
    from pysparse.pack import pack_file
    pack_file(assets.model_path("hand_landmark_lite.tflite"), model)
    env = {k: v for k, v in os.environ.items() if k not in ("NODE_OPTIONS", "NODE_PATH")}
    proc = run(["node", "run.mjs", str(model)], cwd=app, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    expected = {o["name"]: o["shape"] for o in read_spnn(model.read_bytes()).metadata["outputs"]}
    assert {k: v["shape"] for k, v in result["outputs"].items()} == expected
    assert all(v["finite"] for v in result["outputs"].values())
