"""Runs the benchmark page (web/bench/) in headless Chromium against a local Flask server.

    with BenchServer(models_dir) as url:
        result = run_session(url, configs, runs=20)

One browser per call: a session holds one thread count, so runtimes that fix their thread
pool at start-up (onnxruntime-web) are never measured with another session's setting.
"""
from __future__ import annotations

import logging
import re
import shutil
import threading
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


# Idle time before each timed run (ms): a runtime whose workers spin after a run (XNNPACK's
# thread pool) must not share the next system's cores; short, because a virtual machine's
# core left idle longer wakes slowly (web/bench/bench.mjs).
SETTLE_MS = 2


def block_outside(page, base_url: str, blocked: list) -> None:
    """Aborts every request of `page` that would leave the local server at `base_url`
    (a runtime posting usage logs, a file fetched from a CDN), noting its URL in `blocked`.
    A pattern rather than a Python callable, so that local requests are not held up."""
    def abort(route):
        blocked.append(route.request.url)
        route.abort()

    page.route(re.compile(rf"^(?!{re.escape(base_url)}/)(https?|wss?)://"), abort)


def chromium_path() -> str:
    for candidate in (CHROMIUM, shutil.which("chromium"), shutil.which("chromium-browser")):
        if candidate and Path(candidate).exists():
            return candidate
    raise FileNotFoundError("no chromium found (looked for /usr/bin/chromium and chromium on PATH)")


ENGINE_FILE = re.compile(r"pysparse-[a-z-]+\.(mjs|wasm|worker\.js)")


class serve_app:
    """A Flask app on a free localhost port, in a thread, for the length of a `with` block,
    which gets the server's base URL."""

    def __init__(self, app):
        self.app = app

    def __enter__(self) -> str:
        from werkzeug.serving import make_server

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request
        self._server = make_server("127.0.0.1", 0, self.app, threaded=True)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return f"http://127.0.0.1:{self._server.server_port}"

    def __exit__(self, *exc):
        self._server.shutdown()
        self._thread.join(timeout=10)


class BenchServer:
    """The pysparse Flask app (cross-origin isolated) on a free localhost port, in a thread;
    `engines` (name -> folder of an engine build) are served under /engines/<name>/."""

    def __init__(self, models_dir: Path, engines: dict[str, Path] | None = None):
        self.models_dir = Path(models_dir)
        self.engines = {k: Path(v).resolve() for k, v in (engines or {}).items()}
        self._serving = None

    def __enter__(self) -> str:
        from flask import abort, send_from_directory

        from ..server import MIME_TYPES, create_app
        app = create_app(models_dir=self.models_dir)

        def engine_file(name: str, path: str):
            if name not in self.engines or not ENGINE_FILE.fullmatch(path):
                abort(404)
            response = send_from_directory(self.engines[name], path)
            response.mimetype = MIME_TYPES.get(Path(path).suffix, "application/octet-stream").split(";")[0]
            return response

        app.add_url_rule("/engines/<name>/<path>", "engine_file", engine_file)
        self._serving = serve_app(app)
        return self._serving.__enter__()

    def __exit__(self, *exc):
        self._serving.__exit__(*exc)


def run_session(base_url: str, configs: list[dict], runs: int, warmup: int = 3, profile: bool = True,
                progress=None, timeout_s: float = 1800, settle_ms: float = SETTLE_MS) -> dict:
    """Opens the page, runs `configs` (all with one thread count) and returns the page's JSON.
    `progress(done, total, what)` is called from the page as it goes."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("response", lambda r: r.status >= 400 and not r.url.endswith("/favicon.ico")
                    and errors.append(f"{r.url}: HTTP {r.status}"))
            page.on("requestfailed", lambda r: errors.append(f"{r.url}: {r.failure}"))
            blocked: list[str] = []  # each also reported as a failed request
            block_outside(page, base_url, blocked)
            if progress is not None:
                page.expose_function("benchProgress", lambda done, total, what: progress(done, total, what))
            page.set_default_timeout(timeout_s * 1000)
            page.goto(f"{base_url}/web/bench/index.html")
            try:
                page.wait_for_function("window.benchReady === true", timeout=30_000)
            except Exception as e:
                raise RuntimeError(f"the benchmark page did not start: {errors or e}") from e
            result = page.evaluate(
                "([configs, opts]) => window.runBench(configs, opts)",
                [configs, {"runs": runs, "warmup": warmup, "profile": profile, "settleMs": settle_ms}])
            result["page_errors"] = errors
            result["browser_version"] = browser.version
            return result
        finally:
            browser.close()
