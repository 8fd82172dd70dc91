"""The Flask server: isolation headers, MIME types, caching, the pack API and its refusals."""
from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from pysparse.format import read_spnn
from pysparse.server import create_app

ROOT = Path(__file__).resolve().parent.parent


def onnx_model(op_type: str = "Conv") -> bytes:
    """A tiny real ONNX model: a 1x1 convolution (or another op) then ReLU, on 1x3x8x8."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((4, 3, 1, 1)).astype(np.float32)
    w[np.abs(w) < 0.8] = 0
    inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.zeros(4, np.float32), "b")]
    if op_type == "Conv":
        first = helper.make_node("Conv", ["x", "w", "b"], ["y"], name="conv")
        out_shape = [1, 4, 8, 8]
    else:
        first = helper.make_node(op_type, ["x"], ["y"], name="odd")
        out_shape = [1, 3, 8, 8]
        inits = []
    graph = helper.make_graph(
        [first, helper.make_node("Relu", ["y"], ["z"], name="relu")], "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, out_shape)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model.SerializeToString()


@pytest.fixture()
def site(tmp_path):
    """A small served tree: web/, demo/, dist/, models/, node_modules/ (whitelisted and not)."""
    root = tmp_path / "site"
    for rel, data in {
        "web/pysparse.mjs": b"export const x = 1;\n",
        "web/index.html": b"<!doctype html><title>web</title>",
        "web/dist/engine.wasm": b"\0asm\1\0\0\0",
        "web/dist/engine.worker.js": b"//",
        "demo/index.html": b"<!doctype html><title>demo</title>",
        "demo/frames.json": b"{}",
        "dist/pysparse-0.1.0-py3-none-any.whl": b"PK\3\4",
        "node_modules/pyodide/pyodide.mjs": b"//",
        "node_modules/pyodide/python_stdlib.zip": b"PK\3\4",
        "node_modules/@mediapipe/hands/hands_solution_packed_assets.data": b"\0\1",
        "node_modules/secret-package/index.js": b"// not served",
        "secret.txt": b"top secret",
    }.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    models = tmp_path / "models"
    models.mkdir()
    (models / "hand.spnn").write_bytes(b"SPNN")
    (models / "hand.tflite").write_bytes(b"....TFL3")
    (models / "notes.txt").write_bytes(b"not a model")
    uploads = tmp_path / "uploads"
    uploads.mkdir()
    return root, models, uploads


@pytest.fixture()
def client(site):
    root, models, uploads = site
    app = create_app(root=root, models_dir=models, max_upload=256 * 1024, temp_root=str(uploads))
    return app.test_client()


ISOLATION = {
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Embedder-Policy": "require-corp",
    "Cross-Origin-Resource-Policy": "same-origin",
}


@pytest.mark.parametrize("url", ["/web/pysparse.mjs", "/demo/", "/models/hand.spnn", "/nope", "/api/models",
                                 "/node_modules/secret-package/index.js"])
def test_isolation_headers_on_every_response(client, url):
    r = client.get(url)
    for key, value in ISOLATION.items():
        assert r.headers[key] == value, (url, key)


def test_isolation_can_be_switched_off(site):
    root, models, _ = site
    r = create_app(root=root, models_dir=models, isolation=False).test_client().get("/web/index.html")
    assert r.status_code == 200
    assert "Cross-Origin-Opener-Policy" not in r.headers
    assert "Cross-Origin-Embedder-Policy" not in r.headers


@pytest.mark.parametrize("url, mime", [
    ("/web/pysparse.mjs", "text/javascript"),
    ("/web/dist/engine.wasm", "application/wasm"),
    ("/web/dist/engine.worker.js", "text/javascript"),
    ("/web/index.html", "text/html"),
    ("/demo/frames.json", "application/json"),
    ("/models/hand.spnn", "application/octet-stream"),
    ("/models/hand.tflite", "application/octet-stream"),
    ("/dist/pysparse-0.1.0-py3-none-any.whl", "application/zip"),
    ("/node_modules/pyodide/pyodide.mjs", "text/javascript"),
    ("/node_modules/@mediapipe/hands/hands_solution_packed_assets.data", "application/octet-stream"),
])
def test_mime_types(client, url, mime):
    r = client.get(url)
    assert r.status_code == 200, url
    assert r.mimetype == mime


def test_caching_headers(client):
    r = client.get("/web/dist/engine.wasm")
    assert r.headers["ETag"] and r.headers["Last-Modified"]
    assert "no-cache" in r.headers["Cache-Control"]
    again = client.get("/web/dist/engine.wasm", headers={"If-None-Match": r.headers["ETag"]})
    assert again.status_code == 304
    assert client.get("/demo/index.html").headers["Cache-Control"] == "no-cache"
    assert "max-age" in client.get("/node_modules/pyodide/pyodide.mjs").headers["Cache-Control"]


def test_root_goes_to_the_demo(client):
    r = client.get("/")
    assert r.status_code == 302 and r.headers["Location"].endswith("/demo/")
    assert b"demo" in client.get("/demo/").data


def test_model_listing(client):
    names = [m["name"] for m in client.get("/api/models").get_json()["models"]]
    assert names == ["hand.spnn", "hand.tflite"]


@pytest.mark.parametrize("url", [
    "/web/../secret.txt",
    "/web/%2e%2e/secret.txt",
    "/web/%2E%2E/%2E%2E/etc/passwd",
    "/web/..%2fsecret.txt",
    "/web//etc/passwd",
    "/web/%2fetc%2fpasswd",
    "/models/../site/secret.txt",
    "/models/%2e%2e/site/secret.txt",
    "/models/notes.txt",
    "/node_modules/secret-package/index.js",
    "/node_modules/pyodide/../secret-package/index.js",
    "/node_modules/pyodide/%2e%2e/secret-package/index.js",
    "/node_modules/pyodide-evil/x.js",
    "/secret.txt",
    "/dist/../secret.txt",
])
def test_paths_outside_the_served_folders_are_refused(client, url):
    r = client.get(url, follow_redirects=True)  # "//" is merged into "/" by a redirect first
    assert r.status_code in (400, 404), url
    assert b"top secret" not in r.data and b"not served" not in r.data


def _upload(client, data: bytes, name="model.onnx", **form):
    return client.post("/api/pack", data={"file": (io.BytesIO(data), name), **form},
                       content_type="multipart/form-data")


def test_pack_upload(client, site):
    uploads = site[2]
    r = _upload(client, onnx_model(), name="../../tiny net.onnx", weights="fp16", sparse="sparse")
    assert r.status_code == 200, r.get_json()
    body = r.get_json()
    assert body["filename"] == "tiny_net.spnn"  # the client's name is sanitised, path dropped
    summary = body["summary"]
    assert summary["inputs"] == {"x": [1, 3, 8, 8]}
    assert summary["sparse_layers"] == 1
    assert summary["layers"][0]["dtype"] == "f16"
    blob = client.get(body["download"])
    assert blob.status_code == 200 and blob.mimetype == "application/octet-stream"
    assert len(blob.data) == body["bytes"]
    f = read_spnn(blob.data)
    assert f.metadata["source"]["format"] == "onnx"
    assert f.metadata["source"]["file"] == "tiny_net.onnx"
    assert "tiny_net.spnn" in blob.headers["Content-Disposition"]
    assert list(uploads.iterdir()) == []
    assert not (ROOT / "tiny net.onnx").exists()


def test_pack_dense_fp32(client):
    r = _upload(client, onnx_model(), sparse="dense")
    assert r.status_code == 200
    assert r.get_json()["summary"]["sparse_layers"] == 0


def test_upload_too_large(client, site):
    r = _upload(client, b"\x08\x08" + b"\0" * (300 * 1024))
    assert r.status_code == 413
    assert r.is_json and "too large" in r.get_json()["error"]
    assert list(site[2].iterdir()) == []


def test_not_a_model(client, site):
    for data, name in ((b"hello, I am text", "model.onnx"), (b"", "model.tflite"), (b"\x89PNG\r\n\x1a\n....", "x.tflite")):
        r = _upload(client, data, name=name)
        assert r.status_code == 400, data
        assert r.get_json()["error"] == "not a TFLite or ONNX model"
    assert list(site[2].iterdir()) == []


def test_corrupt_model_content_is_a_400(client, site):
    r = _upload(client, b"\x08\x08" + os.urandom(64))  # looks like ONNX, is not
    assert r.status_code == 400
    assert r.is_json and r.get_json()["error"]
    assert list(site[2].iterdir()) == []


def test_unsupported_op_is_a_422(client, site):
    r = _upload(client, onnx_model("Erf"))
    assert r.status_code == 422
    body = r.get_json()
    assert body["op"] == "Erf" and "Erf" in body["error"]
    assert list(site[2].iterdir()) == []


def test_bad_form_fields(client):
    assert _upload(client, onnx_model(), weights="fp8").status_code == 400
    assert _upload(client, onnx_model(), sparse="maybe").status_code == 400
    r = client.post("/api/pack", data={}, content_type="multipart/form-data")
    assert r.status_code == 400 and "file" in r.get_json()["error"]


def test_unknown_download_token(client):
    r = client.get("/api/packed/nothing-here")
    assert r.status_code == 404 and r.is_json


def test_serves_the_real_tree():
    """The default app serves this checkout's web/ and the whitelisted npm packages."""
    client = create_app().test_client()
    assert client.get("/web/pysparse.mjs").status_code == 200
    if (ROOT / "node_modules" / "pyodide" / "pyodide.mjs").exists():
        assert client.get("/node_modules/pyodide/pyodide.mjs").status_code == 200
    assert client.get("/node_modules/ws/package.json").status_code == 404


def test_pack_a_real_tflite_model(site):
    from pysparse import assets
    data = assets.model_path("hand_landmark_lite.tflite").read_bytes()
    app = create_app(root=site[0], models_dir=site[1], temp_root=str(site[2]))
    r = _upload(app.test_client(), data, name="hand_landmark_lite.tflite")
    assert r.status_code == 200, r.get_json()
    summary = r.get_json()["summary"]
    assert summary["inputs"] == {"input_1": [1, 3, 224, 224]}
    assert summary["source"]["format"] == "tflite"
    assert summary["dense_macs"] > 100_000_000
    assert list(site[2].iterdir()) == []


def test_serve_command_prints_the_demo_url():
    """`pysparse serve --open-demo` on a free port: prints the page's URL, which answers with isolation."""
    import subprocess
    import sys
    import urllib.request

    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    proc = subprocess.Popen([sys.executable, "-m", "pysparse.cli", "serve", "--port", "0", "--open-demo"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        first, second = proc.stdout.readline(), proc.stdout.readline()
        assert first.startswith("pysparse serving ") and "http://127.0.0.1:" in first
        url = second.split()[-1]
        page = "/demo/" if (ROOT / "demo" / "index.html").exists() else "/web/"
        assert second.startswith("open http://127.0.0.1:") and url.endswith(page)
        with urllib.request.urlopen(url, timeout=10) as r:
            assert r.status == 200 and r.headers["Content-Type"].startswith("text/html")
            assert r.headers["Cross-Origin-Embedder-Policy"] == "require-corp"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_unexpected_errors_are_json_500(site, monkeypatch, caplog):
    """A bug hit while packing answers a generic 500; the details go to the log only."""
    import pysparse.importers

    def broken(path):
        assert Path(path).parent.parent == site[2]  # the upload sits in a temp dir under temp_root
        raise IndexError("a bug in an importer")

    monkeypatch.setattr(pysparse.importers, "load_model", broken)
    root, models, uploads = site
    client = create_app(root=root, models_dir=models, temp_root=str(uploads), isolate_jobs=False).test_client()
    r = _upload(client, onnx_model())
    assert r.status_code == 500
    body = r.get_json()
    assert body["error"] == "internal error" and "IndexError" not in r.get_data(as_text=True)
    assert body["ref"] in caplog.text and "a bug in an importer" in caplog.text
    assert list(site[2].iterdir()) == []


def test_links_out_of_the_served_folders_are_not_followed(site):
    root, models, uploads = site
    secret = root / "secret.txt"
    (models / "evil.spnn").symlink_to(secret)
    (models / "evil_dir").symlink_to(root, target_is_directory=True)
    (root / "web" / "up").symlink_to(root, target_is_directory=True)
    (models / "alias.spnn").symlink_to(models / "hand.spnn")  # inside the folder: served
    client = create_app(root=root, models_dir=models).test_client()
    for url in ("/models/evil.spnn", "/models/evil_dir/secret.spnn", "/web/up/secret.txt"):
        r = client.get(url)
        assert r.status_code == 404 and b"top secret" not in r.data, url
    assert client.get("/models/alias.spnn").data == b"SPNN"
    names = [m["name"] for m in client.get("/api/models").get_json()["models"]]
    assert "evil.spnn" not in names and "alias.spnn" in names


def test_pack_jobs_beyond_the_limit_get_429(site, monkeypatch):
    import threading

    import pysparse.server

    root, models, uploads = site
    release = threading.Event()
    started = threading.Semaphore(0)

    def slow_job(*args, **kw):
        started.release()
        release.wait(30)
        return ("error", "ModelFormatError", "not a model", None)

    monkeypatch.setattr(pysparse.server, "run_pack_job", slow_job)
    app = create_app(root=root, models_dir=models, temp_root=str(uploads), max_pack_jobs=2)
    answers = []
    threads = [threading.Thread(target=lambda: answers.append(_upload(app.test_client(), b"x").status_code))
               for _ in range(2)]
    for t in threads:
        t.start()
    for _ in threads:
        assert started.acquire(timeout=30)
    r = _upload(app.test_client(), onnx_model())
    assert r.status_code == 429 and r.headers["Retry-After"]
    release.set()
    for t in threads:
        t.join(30)
    assert answers == [400, 400]
    assert _upload(app.test_client(), b"x").status_code == 400  # the slots are free again


def test_a_job_over_its_memory_gets_413(site):
    """A job process whose data may grow by only 1 MiB (beyond the free heap it starts with)
    cannot import a model of 4 MB of weights: the server answers 413, and serves the next
    job as usual."""
    root, models, uploads = site
    w = np.ones((1000, 1000), np.float32)
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "w"], ["y"], name="fc", transB=1)], "big",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1000])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1000])], [numpy_helper.from_array(w, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    import pysparse.server
    saved = pysparse.server.JOB_MEMORY_PER_BYTE
    pysparse.server.JOB_MEMORY_PER_BYTE = 0
    try:
        client = create_app(root=root, models_dir=models, temp_root=str(uploads), job_memory=1 << 20,
                            max_upload=64 << 20).test_client()
        r = _upload(client, model.SerializeToString())
    finally:
        pysparse.server.JOB_MEMORY_PER_BYTE = saved
    assert r.status_code == 413, r.get_json()
    assert list(uploads.iterdir()) == []
    assert _upload(create_app(root=root, models_dir=models, temp_root=str(uploads)).test_client(),
                   onnx_model()).status_code == 200
