"""The JS runtime (web/pysparse.mjs) under Node: runs tests/node/*.test.mjs with `node --test`.

The Python side writes the case (a packed real model, an input from a real photo, the numpy
reference's outputs) into a temp dir; the JS tests compare against it.
"""
from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from web_fixtures import require_engine_builds, write_case

ROOT = Path(__file__).resolve().parent.parent
NODE_TESTS = sorted((ROOT / "tests" / "node").glob("*.test.mjs"))
# Node 20 runs relaxed SIMD only behind a flag; the other files see Node as it ships.
NODE_FLAGS = {"relaxed.test.mjs": ["--experimental-wasm-relaxed-simd"]}


@pytest.fixture(scope="module")
def case_dir(tmp_path_factory) -> Path:
    require_engine_builds(("simd", "simd-threads", "relaxed", "relaxed-threads"))
    out = tmp_path_factory.mktemp("web-case")
    write_case(out, "hand_landmark_full.tflite")
    return out


@pytest.mark.parametrize("test_file", NODE_TESTS, ids=lambda p: p.name)
def test_node(case_dir, test_file):
    env = dict(os.environ, PYSPARSE_WEB_CASE=str(case_dir))
    env.pop("NODE_OPTIONS", None)  # the runtime hands the engine its bytes: no fetch flags needed
    proc = subprocess.run(["node", *NODE_FLAGS.get(test_file.name, []), "--test", "--test-reporter=tap", str(test_file)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    report = proc.stdout + proc.stderr
    passed = re.search(r"^# pass (\d+)", report, re.M)
    failed = re.search(r"^# fail (\d+)", report, re.M)
    assert proc.returncode == 0 and failed and failed.group(1) == "0", report[-6000:]
    assert passed and int(passed.group(1)) > 0, report[-6000:]
