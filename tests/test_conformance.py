"""The readers agree: one corpus of valid and invalid `.spnn` files (tests/spnn_corpus.py)
through the Python reader, the native engine (and its ASan+UBSan build) and the wasm engine
under Node. Each valid file loads everywhere; each invalid one is rejected by every reader
with the error the corpus names, in bounded time; mutated files get the same answer from
all three."""
from __future__ import annotations

import json
import re
import subprocess
import time
import tracemalloc
from pathlib import Path

import pytest

import spnn_corpus
from engine_native import ASAN_TOOL, load_status
from pysparse.errors import SpnnFormatError
from pysparse.format import read_spnn
from web_fixtures import require_engine_builds

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.timeout(600)
STATUS_NAMES = {0: "OK", 1: "FORMAT", 2: "UNSUPPORTED", 3: "NOMEM", 4: "ARGUMENT"}


@pytest.fixture(scope="module")
def cases() -> dict[str, spnn_corpus.Case]:
    return spnn_corpus.corpus()


@pytest.fixture(scope="module")
def mutations(cases) -> dict[str, bytes]:
    return spnn_corpus.mutated({k: c for k, c in cases.items() if c.python is None})


@pytest.fixture(scope="module")
def files(cases, mutations, tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("corpus")
    paths = {}
    for name, data in [(k, c.data) for k, c in cases.items()] + list(mutations.items()):
        paths[name] = out / f"{name}.spnn"
        paths[name].write_bytes(data)
    return paths


def python_answer(data: bytes) -> tuple[str, str]:
    try:
        read_spnn(data)
        return "OK", ""
    except SpnnFormatError as e:
        return "FORMAT", str(e)


def wasm_answers(paths: list[Path]) -> dict[str, dict]:
    require_engine_builds(("simd",))
    r = subprocess.run(["node", str(ROOT / "wasm" / "tests" / "check_files.mjs"), "simd", *map(str, paths)],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return {Path(j["file"]).stem: j for j in map(json.loads, r.stdout.splitlines())}


def test_corpus_is_broad(cases):
    valid = [k for k, c in cases.items() if c.python is None]
    assert len(valid) > 40 and len(cases) - len(valid) > 50


def test_python_reader(cases):
    for name, c in cases.items():
        t0 = time.perf_counter()
        got, message = python_answer(c.data)
        seconds = time.perf_counter() - t0
        assert got == ("OK" if c.python is None else "FORMAT"), (name, message)
        if c.python:
            assert re.search(c.python, message), (name, message)
        assert seconds < 10, (name, seconds)


def test_python_reader_memory_is_bounded(cases):
    """Peak Python heap while reading each hostile file: a few times the file, whatever it
    declares (the over-limit files are refused before any weight is decoded)."""
    for name in ("arena_0x78000000", "pad_over_memory_limit", "sparse_over_memory_limit",
                 "unread_inputs_overlap", "names_equal_at_two_offsets"):
        data = cases[name].data
        tracemalloc.start()
        python_answer(data)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert peak < (1 << 20) + 64 * len(data), (name, peak)


def test_native_engine(cases):
    for name, c in cases.items():
        t0 = time.perf_counter()
        got, message = load_status(c.data)
        seconds = time.perf_counter() - t0
        assert got == c.engine, (name, got, message)
        assert seconds < 2, (name, seconds)


def test_native_engine_under_sanitizers(cases, files):
    """The same files loaded (and run, when they load) by the ASan+UBSan build."""
    assert ASAN_TOOL.exists(), "build/asan/spnn_tool missing: run make -C wasm native"
    names = list(cases)
    r = subprocess.run([str(ASAN_TOOL), "check", *(str(files[n]) for n in names)], capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0 and "Sanitizer" not in r.stderr and "runtime error" not in r.stderr, r.stderr[-3000:]
    lines = r.stdout.splitlines()
    assert len(lines) == len(names)
    for name, line in zip(names, lines):
        assert STATUS_NAMES.get(int(line.split("\t")[0])) == cases[name].engine, (name, line)


def test_wasm_engine(cases, files):
    answers = wasm_answers([files[n] for n in cases])
    assert set(answers) == set(cases)
    for name, c in cases.items():
        a = answers[name]
        assert a["status"].upper() == c.engine, (name, a)
        assert a["ms"] < 5000, (name, a)


def test_readers_agree_on_mutated_files(mutations, files):
    """Valid files with bytes changed (CRCs made right): the three readers give the same
    answer. An op code the engine does not know is UNSUPPORTED there and a format error in
    the Python reader; nothing else may differ."""
    wasm = wasm_answers([files[n] for n in mutations])
    rejected = 0
    for name, data in mutations.items():
        py, message = python_answer(data)
        native, native_message = load_status(data)
        w = wasm[name]["status"].upper()
        assert native == w, (name, native, native_message, wasm[name])
        if py == "OK":
            assert native in ("OK", "UNSUPPORTED"), (name, native, native_message)
        else:
            assert native in ("FORMAT", "UNSUPPORTED"), (name, message, native_message)
        rejected += py != "OK"
    assert 0 < rejected < len(mutations)
