"""The development server: the JS runtime, the demo, models and the pack API, cross-origin isolated.

Every response carries `Cross-Origin-Opener-Policy: same-origin` and
`Cross-Origin-Embedder-Policy: require-corp` (so pages may use SharedArrayBuffer and the
threaded engine) and `Cross-Origin-Resource-Policy: same-origin`. docs/server.md lists the
routes and the `POST /api/pack` API.

Files are only ever served from a fixed set of folders through `safe_join`; uploads are
checked by content, packed inside a TemporaryDirectory under a name the server chooses, and
the result is kept in memory (a small bounded store) until downloaded or evicted.
"""
from __future__ import annotations

import hashlib
import secrets
import tempfile
import threading
from collections import OrderedDict
from pathlib import Path

from flask import Flask, abort, jsonify, redirect, request, send_from_directory
from werkzeug.exceptions import HTTPException
from werkzeug.utils import secure_filename

ROOT = Path(__file__).resolve().parent.parent

# npm packages the demo and the Pyodide front end load in the browser; nothing else under
# node_modules/ is served.
NODE_PACKAGES = ("pyodide", "@mediapipe/hands", "fingerpose",
                 # reference runtimes of the benchmark page (web/bench/) and of `make bench-demo`
                 "@litertjs/core", "@litertjs/wasm-utils", "@mediapipe/tasks-vision",
                 "@tensorflow/tfjs-core", "@tensorflow/tfjs-backend-cpu", "@tensorflow/tfjs-tflite", "onnxruntime-web")

# Extensions the server knows; anything else is served as application/octet-stream.
MIME_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".map": "application/json",
    ".wasm": "application/wasm",
    ".spnn": "application/octet-stream",
    ".tflite": "application/octet-stream",
    ".onnx": "application/octet-stream",
    ".data": "application/octet-stream",
    ".whl": "application/zip",
    ".zip": "application/zip",
    ".tar": "application/x-tar",
    ".ts": "text/plain; charset=utf-8",
    ".md": "text/markdown; charset=utf-8",
    ".txt": "text/plain; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".webm": "video/webm",
    ".mp4": "video/mp4",
    ".ico": "image/x-icon",
}

MODEL_SUFFIXES = (".spnn", ".tflite", ".onnx")
DEMO_BUILT = ("models", "assets")  # demo/ subfolders that pysparse.demo_assets builds
DEFAULT_MAX_UPLOAD = 64 * 1024 * 1024
PACKED_STORE_ITEMS = 16
PACKED_STORE_BYTES = 256 * 1024 * 1024
PACK_WEIGHTS = ("fp32", "fp16", "int8")
SPARSE_MODES = {"auto": None, "sparse": True, "dense": False}  # form value -> pack(sparse=...)


def sniff_model_format(head: bytes) -> str | None:
    """'tflite' or 'onnx' from a file's first bytes, else None.

    TFLite flatbuffers carry the identifier `TFL3` at offset 4. An ONNX file is a protobuf
    ModelProto, written in field order, so it starts with field 1 (`ir_version`, varint,
    tag byte 0x08) holding a small version number.
    """
    if len(head) >= 8 and head[4:8] == b"TFL3":
        return "tflite"
    if len(head) >= 2 and head[0] == 0x08 and 1 <= head[1] <= 64:
        return "onnx"
    return None


class PackedStore:
    """Packed .spnn results kept in memory under random tokens, oldest evicted first."""

    def __init__(self, max_items: int = PACKED_STORE_ITEMS, max_bytes: int = PACKED_STORE_BYTES):
        self.max_items, self.max_bytes = max_items, max_bytes
        self._items: OrderedDict[str, tuple[str, bytes]] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, filename: str, data: bytes) -> str:
        token = secrets.token_urlsafe(16)
        with self._lock:
            self._items[token] = (filename, data)
            while len(self._items) > self.max_items or (
                    len(self._items) > 1 and sum(len(d) for _, d in self._items.values()) > self.max_bytes):
                self._items.popitem(last=False)
        return token

    def get(self, token: str) -> tuple[str, bytes] | None:
        with self._lock:
            return self._items.get(token)


def _json_error(status: int, message: str, **extra):
    response = jsonify({"error": message, **extra})
    response.status_code = status
    return response


def pack_upload(data: bytes, upload_name: str, weights: str, sparse: str, temp_root: str | None):
    """Imports and packs an uploaded model; returns (spnn bytes, inspect summary).

    Raises ModelFormatError / UnsupportedOpError for bad models (mapped to 400 / 422).
    The upload is written under a server-chosen name inside a TemporaryDirectory that is
    always removed; `upload_name` (already sanitised) only labels the metadata.
    """
    from .commands.inspect import summary
    from .errors import ModelFormatError
    from .format import read_spnn
    from .importers import load_model
    from .pack import pack

    kind = sniff_model_format(data[:16])
    if kind is None:
        raise ModelFormatError("not a TFLite or ONNX model")
    with tempfile.TemporaryDirectory(prefix="pysparse-upload-", dir=temp_root) as tmp:
        path = Path(tmp) / f"model.{kind}"
        path.write_bytes(data)
        graph = load_model(path)
    graph.metadata["name"] = Path(upload_name).stem
    meta = {"source": {"file": upload_name, "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data),
                       "format": kind}}
    blob = pack(graph, weights, SPARSE_MODES[sparse], meta)
    return blob, summary(read_spnn(blob), upload_name)


def serve_folders(root: Path | str | None = None, dist_dir: Path | str | None = None) -> dict[str, Path]:
    """The folders the server serves from: web/, demo/, the demo's built models and clip,
    dist/ and node_modules/. An explicit `root` holds them all; by default they are the
    checkout's, or an installed wheel's (pysparse/_static/) with the demo's built files in the
    cache and node_modules/ found as pysparse.assets finds it."""
    from . import assets, demo_assets
    if root is not None:
        base = Path(root).resolve()
        built, node_modules = base / "demo", base / "node_modules"
    else:
        base = assets.static_root().resolve()
        built, node_modules = demo_assets.BUILD, assets.node_modules()
    return {"root": base, "web": base / "web", "demo": base / "demo", "demo-built": built,
            "dist": Path(dist_dir).resolve() if dist_dir else base / "dist", "node_modules": node_modules}


# Pack jobs: at most MAX_PACK_JOBS at once (more get 429); each runs in a process of its own
# whose data segment may grow by at most JOB_MEMORY_FLOOR + JOB_MEMORY_PER_BYTE * upload size,
# and for at most JOB_SECONDS.
MAX_PACK_JOBS = 2
JOB_MEMORY_FLOOR = 1 << 30
JOB_MEMORY_PER_BYTE = 32
JOB_SECONDS = 600
_JOB_PRELOAD = ["pysparse.server", "pysparse.pack", "pysparse.format", "pysparse.importers.tflite",
                "pysparse.importers.onnx", "pysparse.commands.inspect"]
_job_context = None
_job_context_lock = threading.Lock()


def _jobs():
    """The multiprocessing context of pack jobs: a fork server started once, with pysparse
    and its importers loaded, so a job starts in milliseconds and shares nothing with the
    server's threads."""
    global _job_context
    with _job_context_lock:
        if _job_context is None:
            import multiprocessing
            ctx = multiprocessing.get_context("forkserver")
            ctx.set_forkserver_preload(_JOB_PRELOAD)
            _job_context = ctx
        return _job_context


def _data_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmData:"):
                return int(line.split()[1]) * 1024
    return 0


def _pack_job(conn, data, upload_name, weights, sparse, temp_root, memory):
    """Runs pack_upload in a job process, its data segment capped; sends back ("ok", blob,
    summary), ("error", class name, message, op) for pysparse's errors, or ("memory",)."""
    import resource

    from .errors import PysparseError
    reserve = bytearray(16 << 20)  # given back on MemoryError, so that the answer can be sent
    soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
    if memory is not None:
        cap = _data_bytes() + memory
        resource.setrlimit(resource.RLIMIT_DATA, (cap if hard == resource.RLIM_INFINITY else min(cap, hard), hard))
    try:
        answer = ("ok", *pack_upload(data, upload_name, weights, sparse, temp_root))
    except MemoryError:
        answer = ("memory",)
    except PysparseError as e:
        answer = ("error", type(e).__name__, str(e), getattr(e, "op", None))
    del reserve
    resource.setrlimit(resource.RLIMIT_DATA, (soft, hard))
    conn.send(answer)
    conn.close()


def run_pack_job(data: bytes, upload_name: str, weights: str, sparse: str, temp_root: str | None,
                 memory: int | None, seconds: float = JOB_SECONDS):
    """pack_upload in a process of its own (see _pack_job); returns its message. The
    temporary folder is made and removed here, so nothing is left behind even when the
    job is killed. Raises RuntimeError when the job dies or runs out of time."""
    ctx = _jobs()
    with tempfile.TemporaryDirectory(prefix="pysparse-job-", dir=temp_root) as tmp:
        parent, child = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=_pack_job, args=(child, data, upload_name, weights, sparse, tmp, memory),
                           daemon=True)
        proc.start()
        child.close()
        try:
            if not parent.poll(seconds):
                raise RuntimeError(f"pack job ran for more than {seconds} s")
            return parent.recv()
        except EOFError:
            raise RuntimeError(f"pack job ended without an answer (exit code {proc.exitcode})") from None
        finally:
            parent.close()
            proc.join(1)
            if proc.is_alive():
                proc.kill()
                proc.join()


def create_app(root: Path | str | None = None, models_dir: Path | str | None = None, *,
               isolation: bool = True, max_upload: int = DEFAULT_MAX_UPLOAD,
               temp_root: str | None = None, dist_dir: Path | str | None = None,
               max_pack_jobs: int = MAX_PACK_JOBS, job_memory: int | None = JOB_MEMORY_FLOOR,
               isolate_jobs: bool = True) -> Flask:
    """The Flask app serving `root`'s web/, demo/, dist/ (or `dist_dir`) and whitelisted
    node_modules/ packages, and `models_dir` under /models/.
    `root` defaults to the checkout, or to the installed wheel's copy of web/ and demo/ (whose
    built models and clip then come from the cache, see pysparse.demo_assets).
    `isolation=False` leaves out COOP/COEP (to test pages that are not cross-origin isolated).
    Pack jobs: at most `max_pack_jobs` at once, each in a process of its own whose memory may
    grow by `job_memory` + JOB_MEMORY_PER_BYTE per byte of the upload (None: no cap);
    `isolate_jobs=False` runs them in the server's own thread instead."""
    folders = serve_folders(root, dist_dir)
    root = folders["root"]
    models = Path(models_dir).resolve() if models_dir else None
    if models is None:
        from . import assets
        models = assets.models_dir().resolve()
    app = Flask(__name__, static_folder=None)
    app.config["MAX_CONTENT_LENGTH"] = max_upload
    app.config["PYSPARSE_TEMP_ROOT"] = temp_root
    store = PackedStore()
    pack_slots = threading.BoundedSemaphore(max_pack_jobs)

    def send(folder: Path, path: str, max_age: int | None = None):
        """A file under `folder`; without max_age, `no-cache` (revalidate by ETag/Last-Modified)."""
        if not folder.is_dir():
            abort(404)
        # send_from_directory joins safely (no "..", no absolute paths) and 404s otherwise;
        # links are resolved first, and a file whose real path leaves the folder is not served.
        if not inside(folder, folder / path):
            abort(404)
        response = send_from_directory(folder, path, conditional=True, etag=True, max_age=max_age)
        suffix = Path(path).suffix.lower()
        response.mimetype = MIME_TYPES.get(suffix, "application/octet-stream").split(";")[0]
        if suffix in MIME_TYPES and "charset" in MIME_TYPES[suffix]:
            response.charset = "utf-8"
        return response

    def inside(folder: Path, target: Path) -> bool:
        try:
            return target.resolve().is_relative_to(folder.resolve())
        except (OSError, RuntimeError, ValueError):  # a link loop, a name the system refuses
            return False

    @app.after_request
    def headers(response):
        if isolation:
            response.headers["Cross-Origin-Opener-Policy"] = "same-origin"
            response.headers["Cross-Origin-Embedder-Policy"] = "require-corp"
        response.headers["Cross-Origin-Resource-Policy"] = "same-origin"
        response.headers["X-Content-Type-Options"] = "nosniff"
        if "Cache-Control" not in response.headers:
            response.headers["Cache-Control"] = "no-cache"
        return response

    @app.errorhandler(HTTPException)
    def http_error(e: HTTPException):
        if request.path.startswith("/api/"):
            message = "upload too large" if e.code == 413 else e.description
            return _json_error(e.code or 500, message,
                               **({"limit": app.config["MAX_CONTENT_LENGTH"]} if e.code == 413 else {}))
        return e

    @app.errorhandler(Exception)
    def unexpected_error(e: Exception):
        # A model that trips a bug must still get a JSON answer, not a page; what went wrong
        # goes to the server's log only, under a reference the answer gives.
        ref = secrets.token_hex(4)
        app.logger.exception("unexpected error %s on %s", ref, request.path)
        return _json_error(500, "internal error", ref=ref)

    @app.get("/")
    def index():
        if (root / "demo" / "index.html").is_file():
            return redirect("/demo/")
        return redirect("/web/")

    @app.get("/<any(web, demo, dist):area>/")
    @app.get("/<any(web, demo, dist):area>/<path:path>")
    def static_file(area: str, path: str = "index.html"):
        if area == "demo" and path.split("/", 1)[0] in DEMO_BUILT:
            return send(folders["demo-built"], path)
        return send(folders[area], path)

    @app.get("/node_modules/<path:path>")
    def node_module(path: str):
        for package in NODE_PACKAGES:
            if path.startswith(package + "/"):
                # Versioned npm packages may be cached; built files change under the same
                # name during development, so everything else revalidates.
                return send(folders["node_modules"] / package, path[len(package) + 1:], max_age=86400)
        abort(404)

    @app.get("/models/<path:path>")
    def model_file(path: str):
        if Path(path).suffix.lower() not in MODEL_SUFFIXES:
            abort(404)
        return send(models, path)

    @app.get("/api/models")
    def list_models():
        names = sorted(p.name for p in models.iterdir()
                       if p.is_file() and p.suffix.lower() in MODEL_SUFFIXES and inside(models, p)) \
            if models.is_dir() else []
        return jsonify({"models": [{"name": n, "url": f"/models/{n}"} for n in names]})

    @app.post("/api/pack")
    def api_pack():
        from .errors import ModelFormatError, PysparseError, ResourceLimitError, UnsupportedOpError

        upload = request.files.get("file")
        if upload is None:
            return _json_error(400, "no file: send the model as the multipart field 'file'")
        weights = request.form.get("weights", "fp32")
        sparse = request.form.get("sparse", "auto")
        if weights not in PACK_WEIGHTS:
            return _json_error(400, f"weights must be one of {', '.join(PACK_WEIGHTS)}")
        if sparse not in SPARSE_MODES:
            return _json_error(400, f"sparse must be one of {', '.join(SPARSE_MODES)}")
        data = upload.read()
        # The client's name only ever labels the result; it never names a file here.
        upload_name = secure_filename(upload.filename or "") or "model"
        if not pack_slots.acquire(blocking=False):
            response = _json_error(429, f"busy: {max_pack_jobs} models are being packed; try again shortly")
            response.headers["Retry-After"] = "5"
            return response
        try:
            if isolate_jobs:
                memory = None if job_memory is None else job_memory + JOB_MEMORY_PER_BYTE * len(data)
                answer = run_pack_job(data, upload_name, weights, sparse, app.config["PYSPARSE_TEMP_ROOT"], memory)
            else:
                try:
                    answer = ("ok", *pack_upload(data, upload_name, weights, sparse, app.config["PYSPARSE_TEMP_ROOT"]))
                except PysparseError as e:
                    answer = ("error", type(e).__name__, str(e), getattr(e, "op", None))
        finally:
            pack_slots.release()
        if answer[0] == "memory":
            return _json_error(413, "the model needs more memory to pack than a job may use")
        if answer[0] == "error":
            kind, message, op = answer[1:]
            if kind == UnsupportedOpError.__name__:
                return _json_error(422, message, op=op)
            if kind == ModelFormatError.__name__:
                return _json_error(400, message)
            if kind == ResourceLimitError.__name__:
                return _json_error(413, message)
            return _json_error(422, message)
        blob, summary = answer[1:]
        filename = Path(upload_name).stem + ".spnn"
        token = store.put(filename, blob)
        return jsonify({"summary": summary, "filename": filename, "bytes": len(blob),
                        "sha256": hashlib.sha256(blob).hexdigest(),
                        "download": f"/api/packed/{token}", "weights": weights, "sparse": sparse})

    @app.get("/api/packed/<token>")
    def api_packed(token: str):
        item = store.get(token)
        if item is None:
            return _json_error(404, "no such packed model (it may have been evicted)")
        filename, blob = item
        response = app.response_class(blob, mimetype="application/octet-stream")
        response.headers["Content-Disposition"] = f'attachment; filename="{filename}"'
        response.headers["Cache-Control"] = "private, max-age=3600, immutable"
        return response

    return app
