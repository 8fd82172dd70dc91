"""Runs an Emscripten program linked for the web (`-sENVIRONMENT=web`) in headless Chromium
and prints what it prints: a kernel benchmark as the browser's V8 compiles and runs it.

    python -m pysparse.bench.in_chromium build/kernels/web/dwconv_bench_ab_relaxed.js [ARG...]

The program is served on localhost by pysparse's own app (cross-origin isolated), so that
performance.now(), which the program's clock reads, has 5 µs steps (100 µs without); the
page hands the ARGs to main and ends when main returns. `make -C wasm
bench-dwconv-ab-chromium` builds and runs the depthwise A/B this way.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .browser import CHROMIUM_ARGS, chromium_path, serve_app

PAGE = "/__run__.html"


def page_html(script: str, args: list[str]) -> str:
    """A page that runs `script` (an Emscripten program) with `args` and sets window.__done
    when main has returned (or window.__error if it failed)."""
    return f"""<!doctype html><meta charset="utf-8"><link rel="icon" href="data:,"><script>
window.addEventListener('error', (e) => {{ window.__error = String(e.message); }});
var Module = {{
  arguments: {json.dumps(args)},
  print: (line) => console.log(line),
  printErr: (line) => console.error(line),
  postRun: [() => {{ window.__done = true; }}],
  onAbort: (what) => {{ window.__error = 'aborted: ' + what; }},
}};
</script><script src="{script}"></script>
"""


def _echo(message) -> None:
    """The program's stdout (console.log) to ours, its stderr (console.error) to ours."""
    if message.type == "log":
        print(message.text, flush=True)
    elif message.type == "error":
        print(message.text, file=sys.stderr, flush=True)


def run(program: Path, args: list[str], timeout_s: float = 1800) -> None:
    from playwright.sync_api import sync_playwright

    program = program.resolve()
    if not program.exists():
        raise FileNotFoundError(f"{program}: no such program (build it first)")
    with serve_app(_program_app(program, args)) as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page()
            page.on("console", _echo)
            page.goto(f"{url}{PAGE}")
            page.wait_for_function("window.__done === true || window.__error !== undefined",
                                   timeout=timeout_s * 1000, polling=200)
            failure = page.evaluate("window.__error")
            if failure:
                raise RuntimeError(f"{program.name} failed in Chromium: {failure}")
        finally:
            browser.close()


def _program_app(program: Path, args: list[str]):
    """pysparse's app (cross-origin isolated) with the page at PAGE and the program's .js and
    .wasm beside it."""
    from flask import abort, send_from_directory

    from ..server import MIME_TYPES, create_app
    app = create_app()
    page = page_html(program.name, args)
    files = {program.name, program.with_suffix(".wasm").name}

    def program_file(name: str):
        if name == PAGE.lstrip("/"):
            return page, 200, {"Content-Type": MIME_TYPES[".html"]}
        if name not in files:
            abort(404)
        response = send_from_directory(program.parent, name)
        response.mimetype = MIME_TYPES[Path(name).suffix].split(";")[0]
        return response

    app.add_url_rule("/<name>", "program_file", program_file)
    return app


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("program", type=Path, help="the program's .js (its .wasm beside it)")
    ap.add_argument("args", nargs="*", help="arguments for main")
    a = ap.parse_args(argv)
    try:
        run(a.program, a.args)
    except (FileNotFoundError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
