"""The pack API under load, over real HTTP on 127.0.0.1: 200 uploads, 20 at a time, valid
and hostile mixed. Every request is answered (200, or 400/413/422 for a bad model, 429 when
the pack jobs are all busy; never 500, never a dropped connection), nothing is left in the
upload folder, no job process outlives the test, and the server's memory stays bounded."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from importer_fuzz import mutate, onnx_seeds, tflite_seeds

ROOT = Path(__file__).resolve().parent.parent
REQUESTS = int(os.environ.get("SPNN_LOAD_REQUESTS", "200"))
CONCURRENCY = 20
MAX_UPLOAD = 1 << 20
SERVER = """
import sys
from werkzeug.serving import make_server
from pysparse.server import create_app
app = create_app(root=sys.argv[1], models_dir=sys.argv[2], temp_root=sys.argv[3], max_upload={max_upload})
server = make_server("127.0.0.1", 0, app, threaded=True)
print(server.server_port, flush=True)
server.serve_forever()
"""


def uploads() -> list[tuple[str, bytes]]:
    from test_importer_fuzz import sparse_rows_model

    seeds = {**tflite_seeds(), **onnx_seeds()}
    rng = np.random.default_rng(11)
    hostile = [("bomb.tflite", sparse_rows_model(11_000_000)), ("garbage.onnx", rng.bytes(3000)),
               ("huge.onnx", bytes(MAX_UPLOAD + 1000)), ("empty.tflite", b"")]
    out = []
    for i in range(REQUESTS):
        kind = i % 5
        if kind < 2:
            name = ("tflite", "onnx")[kind]
            out.append((f"ok{i}.{name}", seeds[name][0]))
        elif kind < 4:
            name = ("tflite_sparse", "onnx")[kind - 2]
            out.append((f"mutated{i}.bin", mutate(*seeds[name], rng)))
        else:
            out.append(hostile[(i // 5) % len(hostile)])
    return out


def post(port: int, name: str, data: bytes, tries: int = 100) -> tuple[int, dict, int]:
    """One upload; on 429 it waits a moment and tries again, up to `tries` times. Returns
    the last status and body, and the number of 429 answers on the way."""
    for busy in range(tries):
        status, body = post_once(port, name, data)
        if status != 429:
            break
        time.sleep(0.2)
    return status, body, busy


def post_once(port: int, name: str, data: bytes) -> tuple[int, dict]:
    boundary = "pysparse-load-test"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n"
            f"Content-Type: application/octet-stream\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}/api/pack", body, method="POST",
                                 headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def tree_rss(pid: int) -> tuple[int, int]:
    """(RSS of the process, RSS of it and all its descendants), bytes."""
    def rss(p):
        try:
            with open(f"/proc/{p}/status") as f:
                return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))
        except (OSError, StopIteration):
            return 0

    def children(p):
        try:
            with open(f"/proc/{p}/task/{p}/children") as f:
                return [int(c) for c in f.read().split()]
        except OSError:
            return []
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        total += rss(p)
        todo += children(p)
    return rss(pid), total


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_pack_api_under_load(tmp_path):
    root, models, temp = tmp_path / "site", tmp_path / "models", tmp_path / "uploads"
    for d in (root / "web", models, temp):
        d.mkdir(parents=True)
    log = open(tmp_path / "server.log", "w")  # its request log: a pipe nobody reads would fill and block it
    server = subprocess.Popen([sys.executable, "-c", SERVER.format(max_upload=MAX_UPLOAD), str(root), str(models),
                               str(temp)], cwd=ROOT, stdout=subprocess.PIPE, stderr=log, text=True)
    try:
        port = int(server.stdout.readline())
        cases = uploads()
        peak = [0, 0]
        done = threading.Event()

        def watch():
            while not done.is_set():
                own, tree = tree_rss(server.pid)
                peak[0], peak[1] = max(peak[0], own), max(peak[1], tree)
                time.sleep(0.05)

        watcher = threading.Thread(target=watch)
        watcher.start()
        t0 = time.perf_counter()
        with ThreadPoolExecutor(CONCURRENCY) as pool:
            answers = list(pool.map(lambda c: post(port, *c), cases))
        seconds = time.perf_counter() - t0
        done.set()
        watcher.join()
        statuses: dict[int, int] = {}
        for status, _, _ in answers:
            statuses[status] = statuses.get(status, 0) + 1
        busy = sum(b for _, _, b in answers)
        print(f"\n{len(cases)} uploads, {CONCURRENCY} at a time, in {seconds:.1f} s: {dict(sorted(statuses.items()))} "
              f"after {busy} answers 429 (retried); "
              f"peak RSS {peak[0] / 2**20:.0f} MB (server), {peak[1] / 2**20:.0f} MB (with job processes)")
        assert len(answers) == len(cases)
        assert set(statuses) <= {200, 400, 413, 422, 429}, statuses
        assert statuses.get(200, 0) > 0 and statuses.get(400, 0) > 0
        for (name, _), (status, body, _) in zip(cases, answers):
            assert "error" in body if status != 200 else "download" in body, (name, status, body)
        assert peak[0] < 512 * 2**20 and peak[1] < 3 * 2**30, peak
        time.sleep(0.5)
        assert list(temp.iterdir()) == []
        # the fork server stays (one process, no children): no job process is left running
        left = [c for c in open(f"/proc/{server.pid}/task/{server.pid}/children").read().split()]
        for c in left:
            assert open(f"/proc/{c}/task/{c}/children").read().split() == [], "a pack job is still running"
    finally:
        server.terminate()
        server.wait(30)
        log.close()
