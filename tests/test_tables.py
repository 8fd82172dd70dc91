"""The command line's tables: whole cells when piped (plain or Markdown), columns that wrap
into further blocks on a narrow terminal instead of being cut or dropped."""
from __future__ import annotations

import io
import subprocess
import sys

from rich.console import Console

from pysparse import assets
from pysparse.bench import report
from pysparse.tables import Table, column_blocks, emit, markdown, plain

FIGURES = ["1,234,567,890", "98,765,432,101", "55.5%"]


def wide_table() -> Table:
    t = Table("a wide table", ["#", "name", "first figure", "second figure", "share"], right={0, 2, 3, 4})
    for i in range(3):
        t.add(i, "a_rather_long_layer_name/with_a_path/Conv2D", *FIGURES)
    t.footer.append(["", "total", "3,703,703,670", "296,296,296,303", ""])
    return t


def test_plain_keeps_every_cell_whole_at_any_width():
    text = plain(wide_table())
    assert "…" not in text
    lines = text.splitlines()
    assert lines[0] == "a wide table"
    assert lines[1].split() == ["#", "name", "first", "figure", "second", "figure", "share"]
    for figure in FIGURES + ["296,296,296,303"]:
        assert figure in text
    # right-aligned numbers end in the same column
    rows = [line for line in lines if "Conv2D" in line]
    assert len({line.index("98,765,432,101") + len("98,765,432,101") for line in rows}) == 1


def test_markdown_table():
    text = markdown(wide_table())
    lines = text.splitlines()
    assert lines[2] == "| # | name | first figure | second figure | share |"
    assert lines[3] == "|---:|---|---:|---:|---:|"
    assert lines[4].startswith("| 0 | a_rather_long_layer_name/with_a_path/Conv2D | 1,234,567,890 |")


def test_narrow_terminal_wraps_columns_into_blocks():
    t = wide_table()
    assert column_blocks(t, 200) == [[0, 1, 2, 3, 4]]
    blocks = column_blocks(t, 60)
    assert len(blocks) > 1 and all(b[0] == 0 for b in blocks)
    assert sorted({c for b in blocks for c in b}) == [0, 1, 2, 3, 4]
    out = io.StringIO()
    emit(t, "rich", Console(file=out, width=60, force_terminal=False, color_system=None))
    text = out.getvalue()
    assert max(len(line) for line in text.splitlines()) <= 60
    for header in t.columns[1:]:
        assert header in text
    for figure in FIGURES:
        assert figure in text
    assert "…" not in text


def test_auto_is_plain_when_piped():
    out = io.StringIO()
    emit(wide_table(), "auto", Console(file=out, width=40))
    assert out.getvalue().startswith("a wide table\n#")
    assert "98,765,432,101" in out.getvalue()


def test_bench_table_piped():
    record = {"runs": 3, "results": [
        {"model": "m", "threads": 1, "system": "pysparse", "label": "pysparse dense", "load_ms": 12.25,
         "first_ms": 30.5, "median_ms": 10.04, "min_ms": 9.5, "max_ms": 11.0, "speedup_vs_litert_dense": 1.456,
         "speedup_vs_litert_sparse": None, "file_bytes": 2048000},
        {"model": "m", "threads": 1, "system": "litert", "label": "litert sparse 80% b1", "error": "no such runtime"}]}
    out = io.StringIO()
    report.print_table(record, Console(file=out, width=60), "plain")
    lines = out.getvalue().splitlines()
    assert lines[0] == "m, 1 thread (ms; median of 3)"
    assert lines[1].split()[:4] == ["system", "load", "first", "median"]
    assert lines[3].split() == ["pysparse", "dense", "12.2", "30.5", "10.0", "9.5", "11.0", "1.46", "-", "2000"]
    assert "error: no such runtime" in lines[4]


def test_inspect_piped_is_plain_and_whole(tmp_path):
    from pysparse.pack import pack_file
    model = tmp_path / "lite.spnn"
    pack_file(assets.model_path("hand_landmark_lite.tflite"), model)
    out = subprocess.run([sys.executable, "-m", "pysparse.cli", "inspect", str(model)], capture_output=True,
                         text=True, check=True).stdout
    lines = out.splitlines()
    assert lines[1].split()[:3] == ["#", "op", "name"]
    assert "…" not in out and "\x1b" not in out
    assert any(line.split()[0] == "50" for line in lines[3:])  # the last of 51 layers, numbered
    md = subprocess.run([sys.executable, "-m", "pysparse.cli", "inspect", str(model), "--table", "markdown"],
                        capture_output=True, text=True, check=True).stdout
    assert "| # | op | name |" in md
