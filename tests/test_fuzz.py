"""A bounded libFuzzer run over spnn_load + spnn_run (ASan+UBSan), seeded with small real
.spnn files of every op: no crash, leak, hang or sanitizer report."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FUZZER = ROOT / "build" / "fuzz" / "fuzz_loader"
SECONDS = int(os.environ.get("SPNN_FUZZ_SECONDS", "30"))


@pytest.mark.slow
def test_fuzz_loader(tmp_path):
    assert FUZZER.exists(), "build/fuzz/fuzz_loader missing: run make -C wasm all"
    sys.path.insert(0, str(ROOT / "wasm" / "fuzz"))
    from make_seeds import write_seeds

    seeds = write_seeds(tmp_path / "seeds")
    assert len(seeds) > 40
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    r = subprocess.run(
        [str(FUZZER), f"-max_total_time={SECONDS}", "-max_len=65536", "-timeout=10", "-rss_limit_mb=2048",
         f"-artifact_prefix={tmp_path}/", "-print_final_stats=1", str(corpus), str(tmp_path / "seeds")],
        capture_output=True, text=True, timeout=SECONDS + 120)
    crashes = [p.name for p in tmp_path.iterdir() if p.name.startswith(("crash-", "leak-", "timeout-", "oom-"))]
    assert r.returncode == 0 and not crashes, (crashes, r.stderr[-4000:])
    assert "stat::number_of_executed_units" in r.stderr
    runs = int(r.stderr.split("stat::number_of_executed_units:")[1].split()[0])
    assert runs > 1000, f"only {runs} inputs in {SECONDS} s"
