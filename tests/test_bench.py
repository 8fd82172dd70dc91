"""`pysparse bench`: the harness's smoke run in real headless Chromium gives well-formed
results (not speeds), and the pieces it is built from behave."""
import json
from pathlib import Path

import numpy as np
import pytest

from pysparse.bench import report


@pytest.mark.slow
def test_smoke_run_is_well_formed(tmp_path):
    if not Path("/usr/bin/chromium").exists():
        pytest.skip("needs Debian's chromium")
    from pysparse.cli import main
    out = tmp_path / "bench"
    # two browser sessions, the second loading the configurations in reverse order
    assert main(["bench", "--smoke", "--sessions", "2", "--out", str(out)]) == 0
    record = json.loads((out / "results.json").read_text())
    assert report.validate(record) == []
    assert record["runs"] == 3 and record["environment"]["crossOriginIsolated"] is True
    assert record["sessions_per_configuration"] == 2
    # every file came from the local server: no page error, no request aborted for leaving it
    assert [(s["session"], s["page_errors"]) for s in record["sessions"]] == [(0, []), (1, [])]
    rows = record["results"]
    assert {(r["system"], r["sparsity"]) for r in rows} == {("pysparse", 0.0), ("pysparse", 0.8),
                                                            ("litert", 0.0), ("litert", 0.8)}
    for r in rows:
        assert r["threads"] == 1
        assert all(r[k] > 0 for k in report.TIMES)
        assert r["min_ms"] <= r["median_ms"] <= r["max_ms"]
        assert len(r["samples_ms"]) == 6 and len(r["session_medians_ms"]) == 2
        assert (out / "models" / r["file"]).stat().st_size == r["file_bytes"]
    # the LiteRT row of the pruned model really has its 1x1 weights stored sparse
    sparse_litert = next(r for r in rows if r["system"] == "litert" and r["sparsity"])
    assert sparse_litert["notes"]["stored_sparse"] > 10
    # LiteRT.js ran its relaxed-SIMD build (single-threaded at 1 thread), not the compatibility one
    assert {r["info"]["wasm"] for r in rows if r["system"] == "litert"} == {"litert_wasm_internal.wasm"}
    for r in rows:
        if r["system"] == "pysparse":
            assert r["speedup_vs_litert_dense"] > 0
            assert ("speedup_vs_litert_sparse" in r) == (r["sparsity"] > 0)
            assert len(r["speedup_vs_litert_dense_sessions"]) == 2
    for name in ("time_hand_landmark_lite.png", "layers_hand_landmark_lite.png", "speedup.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_validate_reports_bad_rows():
    row = {"model": "m", "system": "pysparse", "label": "x", "sparsity": 0.0, "threads": 1, "file": "f",
           "file_bytes": 1, "load_ms": 1.0, "first_ms": 1.0, "median_ms": 0.0, "min_ms": 1.0, "max_ms": 1.0,
           "samples_ms": [1.0]}
    record = {"schema_version": 1, "environment": {}, "runs": 1, "results": [row]}
    assert report.validate(record) == ["m/x/1t: median_ms = 0.0"]
    record["results"] = [{**row, "median_ms": 1.0, "error": "boom"}]
    assert report.validate(record) == ["m/x/1t: boom"]


def test_layer_breakdown_sums_the_profile_by_kind_of_kernel():
    layers = [{"name": "a", "op": "CONV2D", "kernel": "spmm_32x1", "us": 10},
              {"name": "b", "op": "CONV2D", "kernel": "spmm_8x4", "us": 5},
              {"name": "c", "op": "CONV2D", "kernel": "dwconv_3x3s1", "us": 7},
              {"name": "d", "op": "CONV2D", "kernel": "conv_im2col", "us": 3},
              {"name": "e", "op": "FULLY_CONNECTED", "kernel": "gemv", "us": 2},
              {"name": "f", "op": "ADD", "kernel": "rows_vv", "us": 1}]
    rows = [{"model": "m", "threads": 1, "label": "pysparse 80% b1", "layers": layers},
            {"model": "m", "threads": 1, "label": "tflite dense"},
            {"model": "other", "threads": 1, "label": "pysparse dense", "layers": layers}]
    assert report.layer_breakdown(rows, "m") == {("pysparse 80% b1", 1): {
        "sparse 1x1 and FC": 15.0, "depthwise": 7.0, "KxK convolution": 3.0,
        "dense 1x1 and FC": 2.0, "other ops": 1.0}}


def test_speedups_are_against_litert_dense_of_the_same_thread_count():
    rows = [{"model": "m", "threads": t, "system": sys_, "label": f"{sys_} dense" if s == 0 else f"{sys_} 80%",
             "sparsity": s, "median_ms": ms}
            for t, sys_, s, ms in ((1, "litert", 0.0, 20.0), (1, "pysparse", 0.8, 10.0), (2, "litert", 0.0, 12.0),
                                   (2, "pysparse", 0.8, 4.0))]
    report.add_speedups(rows)
    assert [r.get("speedup_vs_litert_dense") for r in rows] == [None, 2.0, None, 3.0]
    assert not any("speedup_vs_tflite_dense" in r for r in rows)  # no legacy rows ran


def test_sessions_combine_as_medians_of_session_medians_and_session_ratios():
    def row(session, system, label, ms, samples):
        return {"model": "m", "threads": 1, "system": system, "label": label, "sparsity": 0.8, "block": 1,
                "file": f"{label}.bin", "file_bytes": 1, "session": session, "median_ms": ms, "min_ms": min(samples),
                "max_ms": max(samples), "load_ms": 10.0 + session, "first_ms": 20.0 + session,
                "samples_ms": samples}
    rows = [row(0, "litert", "litert 80%", 12.0, [11.0, 12.0, 13.0]), row(0, "pysparse", "pysparse 80%", 10.0, [9.0, 10.0, 11.0]),
            row(1, "pysparse", "pysparse 80%", 8.0, [8.0, 8.0, 9.0]), row(1, "litert", "litert 80%", 12.0, [12.0, 12.0, 12.0]),
            row(2, "litert", "litert 80%", 9.0, [9.0, 9.0, 9.5]), row(2, "pysparse", "pysparse 80%", 6.0, [5.0, 6.0, 7.0])]
    del rows[4]["median_ms"]
    rows[4]["error"] = "session failed: page crashed"
    for k in range(3):
        report.add_speedups([r for r in rows if r["session"] == k])
    got = report.combine_sessions(rows)
    assert [r["label"] for r in got] == ["litert 80%", "pysparse 80%"]  # first-seen order, one row each
    ref, ours = got
    assert "session" not in ours and ours["session_medians_ms"] == [10.0, 8.0, 6.0]
    assert ours["median_ms"] == 8.0 and ours["min_ms"] == 5.0 and ours["max_ms"] == 11.0
    assert ours["load_ms"] == 11.0 and ours["first_ms"] == 21.0 and len(ours["samples_ms"]) == 9
    # each session's ratio is taken within it; the third session has no LiteRT.js time to compare
    assert ours["speedup_vs_litert_sparse_sessions"] == [1.2, 1.5]
    assert ours["speedup_vs_litert_sparse"] == 1.35
    assert report.ratio_cell(ours, "speedup_vs_litert_sparse") == "1.35 (1.20-1.50)"
    assert ref["session_medians_ms"] == [12.0, 12.0] and ref["sessions_failed"] == ["session failed: page crashed"]
    record = {"schema_version": 2, "environment": {}, "runs": 3, "sessions_per_configuration": 3, "results": got}
    assert report.validate(record) == ["m/litert 80%/1t: one session failed: session failed: page crashed",
                                       "m/litert 80%/1t: 6 samples for 9 runs"]
    # one session: the row as measured, its ratio without a range
    single = report.combine_sessions([r for r in rows if r["session"] == 0])
    assert single[1]["median_ms"] == 10.0 and report.ratio_cell(single[1], "speedup_vs_litert_sparse") == "1.20"


def test_masked_tflite_copy_has_the_pruned_zeros():
    from ai_edge_litert.interpreter import Interpreter

    from pysparse import assets
    from pysparse.bench.runtimes import mask_tflite_weights
    from pysparse.importers import load_model
    from pysparse.prune import oneshot

    original = Path(assets.model_path("hand_landmark_lite.tflite")).read_bytes()
    pruned = oneshot(load_model(original), 0.7)
    data, n = mask_tflite_weights(original, pruned)
    assert n > 10
    # importing the masked copy gives the pruned graph's weights back
    again = load_model(data)
    for name, t in pruned.tensors.items():
        if t.data is not None and name in again.tensors and t.data.ndim == 4:
            np.testing.assert_array_equal(again.tensors[name].data == 0, t.data == 0)
    it = Interpreter(model_content=data)
    it.allocate_tensors()
    it.invoke()  # still a valid model for LiteRT


def test_sparse_speedups_are_against_litert_on_the_same_pruned_weights():
    rows = [{"model": "m", "threads": 1, "system": sys_, "label": lab, "sparsity": s, "block": b, "median_ms": ms}
            for sys_, lab, s, b, ms in (("litert", "litert dense", 0.0, 1, 20.0),
                                         ("litert", "litert 80% sparse b1", 0.8, 1, 9.0),
                                         ("litert", "litert 80% sparse b4", 0.8, 4, 8.0),
                                         ("tflite", "tflite dense", 0.0, 1, 30.0),
                                         ("tflite", "tflite 80% sparse b1", 0.8, 1, 12.0),
                                         ("pysparse", "pysparse 80% b1", 0.8, 1, 6.0),
                                         ("pysparse", "pysparse 80% b4", 0.8, 4, 4.0),
                                         ("pysparse", "pysparse dense", 0.0, 1, 10.0))]
    report.add_speedups(rows)
    got = {r["label"]: (r.get("speedup_vs_litert_dense"), r.get("speedup_vs_litert_sparse")) for r in rows}
    assert got == {"litert dense": (None, None), "litert 80% sparse b1": (None, None),
                   "litert 80% sparse b4": (None, None), "tflite dense": (None, None),
                   "tflite 80% sparse b1": (None, None),
                   "pysparse 80% b1": (20 / 6, 1.5), "pysparse 80% b4": (5.0, 2.0), "pysparse dense": (2.0, None)}
    # the legacy runtime, when it ran, gets its own fields
    legacy = {r["label"]: (r.get("speedup_vs_tflite_dense"), r.get("speedup_vs_tflite_sparse")) for r in rows
              if r["system"] == "pysparse"}
    assert legacy == {"pysparse 80% b1": (5.0, 2.0), "pysparse 80% b4": (7.5, None), "pysparse dense": (3.0, None)}


def test_users_files_are_compared_with_litert_on_the_same_file():
    rows = [{"model": "your files", "threads": 1, "system": sys_, "label": f"{sys_} {f}", "sparsity": s,
             "notes": {"source": f}, "median_ms": ms}
            for sys_, f, s, ms in (("pysparse", "a.tflite", 0.001, 5.0), ("litert", "a.tflite", 0.001, 10.0),
                                   ("pysparse", "b.tflite", 0.9, 2.0), ("litert", "b.tflite", 0.9, 8.0),
                                   ("pysparse", "c.spnn", 0.9, 1.0))]
    report.add_speedups(rows)
    got = {r["label"]: (r.get("speedup_vs_litert_dense"), r.get("speedup_vs_litert_sparse")) for r in rows
           if r["system"] == "pysparse"}
    assert got == {"pysparse a.tflite": (2.0, None), "pysparse b.tflite": (None, 4.0), "pysparse c.spnn": (None, None)}


def test_users_pruned_files_are_compared_with_litert_on_the_same_zeros_and_the_original():
    """A pruned copy of the user's file pairs with LiteRT.js on the same zeros (sparse) and on
    the file it was pruned from, where that file is dense."""
    def row(sys_, label, s, source, ms, dense_source=None):
        notes = {"source": source, **({"dense_source": dense_source} if dense_source else {})}
        return {"model": "your files", "threads": 1, "system": sys_, "label": label, "sparsity": s,
                "notes": notes, "median_ms": ms}
    rows = [row("pysparse", "pysparse a.tflite", 0.0, "a.tflite", 6.0),
            row("litert", "litert a.tflite", 0.0, "a.tflite", 12.0),
            row("pysparse", "pysparse a.tflite 80% b1", 0.8, "a.tflite pruned 80% b1", 3.0, "a.tflite"),
            row("litert", "litert a.tflite 80% b1 sparse", 0.8, "a.tflite pruned 80% b1", 6.0, "a.tflite"),
            row("pysparse", "pysparse b.tflite", 0.3, "b.tflite", 4.0),
            row("litert", "litert b.tflite", 0.3, "b.tflite", 8.0),
            row("pysparse", "pysparse b.tflite 80% b1", 0.8, "b.tflite pruned 80% b1", 2.0, "b.tflite")]
    report.add_speedups(rows)
    got = {r["label"]: (r.get("speedup_vs_litert_dense"), r.get("speedup_vs_litert_sparse")) for r in rows
           if r["system"] == "pysparse"}
    assert got == {"pysparse a.tflite": (2.0, None), "pysparse a.tflite 80% b1": (4.0, 2.0),
                   "pysparse b.tflite": (None, 2.0), "pysparse b.tflite 80% b1": (None, None)}


def test_users_files_pruned_on_request_reach_both_runtimes(tmp_path):
    """`pysparse bench FILE --sparsities S`: the user's .tflite as given and pruned one-shot at S
    for each block; LiteRT.js gets the same zeros in a copy of the file, stored sparse."""
    from pysparse import assets
    from pysparse.bench.runtimes import _pointwise_sparsity, _user_files
    from pysparse.importers import load_model
    lite = assets.model_path("hand_landmark_lite.tflite")
    arts = _user_files([lite], tmp_path, sparsities=[0.8], blocks=[1, 4])
    assert [(a.system, a.label, a.sparsity, a.block) for a in arts] == [
        ("pysparse", "pysparse hand_landmark_lite.tflite", arts[0].sparsity, 1),
        ("litert", "litert hand_landmark_lite.tflite", arts[0].sparsity, 1),
        ("pysparse", "pysparse hand_landmark_lite.tflite 80% b1", 0.8, 1),
        ("litert", "litert hand_landmark_lite.tflite 80% b1 sparse", 0.8, 1),
        ("pysparse", "pysparse hand_landmark_lite.tflite 80% b4", 0.8, 4),
        ("litert", "litert hand_landmark_lite.tflite 80% b4 sparse", 0.8, 4)]
    for ours, theirs in ((arts[2], arts[3]), (arts[4], arts[5])):
        assert ours.notes["source"] == theirs.notes["source"] != arts[0].notes["source"]
        assert ours.notes["dense_source"] == arts[0].notes["source"] == str(lite)
        assert 0.75 < ours.notes["pointwise_sparsity"] < 0.85
        assert theirs.notes["masked_weights"] > 0 and theirs.notes["stored_sparse"] > 0
        # LiteRT's copy, read back, holds the zeros pysparse runs
        assert _pointwise_sparsity(load_model(theirs.path)) == ours.notes["pointwise_sparsity"]
    assert len({a.path for a in arts}) == 6 and all(a.path.exists() for a in arts)
    assert _user_files([lite], tmp_path)[2:] == []  # without sparsities: as given only


def test_users_onnx_files_run_on_onnxruntime_web_as_given(tmp_path):
    """An .onnx the user gives: pysparse runs it packed, onnxruntime-web the file itself, in a
    page of its own (what runs right after ORT in a round is slowed); pruned copies are
    pysparse's only (ORT has no sparse path to take)."""
    import torch
    from pysparse.bench.runtimes import prepare
    from pysparse.bench.suite import sessions_of
    from pysparse.importers.torch import export_onnx

    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 16, 1)).eval()
    f = tmp_path / "tiny.onnx"
    f.write_bytes(export_onnx(net, torch.zeros(1, 3, 16, 16)))
    arts = prepare([], tmp_path / "out", files=[f], file_sparsities=[0.8], blocks=[1])
    assert [(a.system, a.label) for a in arts] == [
        ("pysparse", "pysparse tiny.onnx"), ("ort", "ort tiny.onnx"), ("pysparse", "pysparse tiny.onnx 80% b1")]
    assert arts[1].path.read_bytes() == f.read_bytes() and arts[1].notes["source"] == arts[0].notes["source"]
    assert [[a.label for a in page] for _, page in sessions_of(arts)] == [
        ["pysparse tiny.onnx", "pysparse tiny.onnx 80% b1"], ["ort tiny.onnx"]]
    assert [a.system for a in prepare([], tmp_path / "out", systems=("pysparse",), files=[f])] == ["pysparse"]


def test_published_sparse_models_run_as_shipped(tmp_path):
    """MediaPipe's sparse models: pysparse packs the file as imported, LiteRT.js gets the
    original bytes, the pair shares sparsity and block; the legacy runtime the same file."""
    from pysparse import assets
    from pysparse.bench.runtimes import prepare

    arts = prepare(["face_detection_full_range_sparse"], tmp_path, systems=("pysparse", "litert", "tflite"))
    by_label = {a.label: a for a in arts}
    assert set(by_label) == {"pysparse dense", "pysparse as published", "litert as published", "tflite as published"}
    original = assets.model_path("face_detection_full_range_sparse.tflite").read_bytes()
    assert by_label["litert as published"].path.read_bytes() == original
    assert by_label["tflite as published"].path == by_label["litert as published"].path
    ours, theirs = by_label["pysparse as published"], by_label["litert as published"]
    assert (ours.sparsity, ours.block) == (theirs.sparsity, theirs.block) and 0.5 < ours.sparsity < 0.9
    assert ours.path.read_bytes()[:4] == b"SPNN" and ours.path.stat().st_size < len(original)
    assert [a.system for a in prepare(["face_detection_full_range_sparse"], tmp_path)].count("tflite") == 0


def test_table_keeps_every_cell_whole_when_piped():
    import io

    from rich.console import Console

    row = {"model": "face_detection_full_range_sparse", "threads": 2, "system": "pysparse",
           "label": "pysparse as published", "sparsity": 0.7, "file_bytes": 2048, "load_ms": 1.0, "first_ms": 1.0,
           "median_ms": 1.25, "min_ms": 1.0, "max_ms": 2.0, "speedup_vs_litert_sparse": 2.345}
    out = io.StringIO()
    report.print_table({"runs": 3, "results": [row]}, Console(file=out, width=40))
    text = out.getvalue()
    assert "…" not in text and "pysparse as published" in text and "2.35" in text
    assert "× litert dense" in text and "× litert sparse" in text and "× tflite" not in text


def test_sessions_split_by_pruning_block_with_the_dense_files_in_the_first_and_ort_apart():
    from pysparse.bench.runtimes import Artifact
    from pysparse.bench.suite import sessions_of

    arts = [Artifact(m, sys_, s, b, Path(f"{m}{sys_}{s}{b}"), (1, 3, 8, 8), f"{sys_} {s} b{b}")
            for m in ("a", "b") for sys_ in ("pysparse", "tflite")
            for s, b in ((0.0, 1), (0.8, 1), (0.8, 4), (0.9, 1), (0.9, 4))]
    arts.append(Artifact("a", "ort", 0.0, 1, Path("a.onnx"), (1, 3, 8, 8), "ort dense"))
    got = [(m, sorted((a.system, a.sparsity, a.block) for a in mine)) for m, mine in sessions_of(arts)]
    dense = [("pysparse", 0.0, 1), ("tflite", 0.0, 1)]
    b1 = [(sys_, s, 1) for sys_ in ("pysparse", "tflite") for s in (0.8, 0.9)]
    b4 = [(sys_, s, 4) for sys_ in ("pysparse", "tflite") for s in (0.8, 0.9)]
    assert got == [("a", sorted(dense + b1)), ("a", sorted(b4)), ("a", [("ort", 0.0, 1)]),
                   ("b", sorted(dense + b1)), ("b", sorted(b4))]


def test_users_files_share_pages_up_to_a_memory_budget(tmp_path, monkeypatch):
    """The user's files go into as few pages as fit PAGE_FILE_BYTES each, in their order; a
    file larger than that gets a page of its own (every model of a page shares one heap)."""
    from pysparse.bench import suite
    from pysparse.bench.runtimes import Artifact
    monkeypatch.setattr(suite, "PAGE_FILE_BYTES", 100)
    arts = []
    for name, size in (("a", 40), ("b", 50), ("c", 20), ("big", 300), ("d", 10)):
        (tmp_path / name).write_bytes(b"x" * size)
        arts.append(Artifact("your files", "pysparse", 0.0, 1, tmp_path / name, (1, 3, 8, 8), name,
                             notes={"source": name}))
    pages = [[a.label for a in mine] for _, mine in suite.sessions_of(arts)]
    assert pages == [["a", "b"], ["c"], ["big"], ["d"]]


def test_users_files_of_the_same_name_stay_apart(tmp_path):
    """Two files called the same in different folders: two artifacts, each labelled by its
    path, neither overwriting the other's copy."""
    from pysparse import assets
    from pysparse.bench.runtimes import _user_files
    from pysparse.importers import load_model
    from pysparse.pack import pack
    from pysparse.prune import oneshot
    graph = load_model(assets.model_path("hand_landmark_lite.tflite"))
    paths = []
    for folder, sparsity in (("a", 0.5), ("b", 0.9)):
        (tmp_path / folder).mkdir()
        paths.append(tmp_path / folder / "model.spnn")
        paths[-1].write_bytes(pack(oneshot(graph, sparsity)))
    out = tmp_path / "bench"
    out.mkdir()
    arts = _user_files(paths, out)
    assert [a.label for a in arts] == [f"pysparse {p}" for p in paths]
    assert len({a.path for a in arts}) == 2 and all(a.path.exists() for a in arts)
    assert [a.path.read_bytes() for a in arts] == [p.read_bytes() for p in paths]


@pytest.mark.slow
def test_users_own_files_share_one_session(tmp_path):
    if not Path("/usr/bin/chromium").exists():
        pytest.skip("needs Debian's chromium")
    from pysparse import assets
    from pysparse.cli import main
    from pysparse.pack import pack
    from pysparse.prune import oneshot
    from pysparse.importers import load_model
    import torch
    from pysparse.importers.torch import export_onnx
    lite = assets.model_path("hand_landmark_lite.tflite")
    pruned = tmp_path / "lite80.spnn"
    pruned.write_bytes(pack(oneshot(load_model(lite), 0.8)))
    tiny = tmp_path / "tiny.onnx"
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 16, 1)).eval()
    tiny.write_bytes(export_onnx(net, torch.zeros(1, 3, 32, 32)))
    out = tmp_path / "bench"
    assert main(["bench", str(lite), str(pruned), str(tiny), "--threads", "1", "--runs", "2", "--warmup", "0",
                 "--no-profile", "--out", str(out)]) == 0
    record = json.loads((out / "results.json").read_text())
    rows = record["results"]
    assert {(r["system"], r["label"]) for r in rows} == {
        ("pysparse", "pysparse hand_landmark_lite.tflite"), ("litert", "litert hand_landmark_lite.tflite"),
        ("pysparse", "pysparse lite80.spnn"), ("pysparse", "pysparse tiny.onnx"), ("ort", "ort tiny.onnx")}
    # one page for pysparse's and LiteRT.js's rows, one for onnxruntime-web's
    assert len(record["sessions"]) == 2 and all(r["median_ms"] > 0 for r in rows)
    assert next(r for r in rows if r["file"] == "user.lite80.spnn")["notes"]["pointwise_sparsity"] > 0.75


@pytest.mark.slow
def test_two_threads_use_litert_threaded_build_and_legacy_row_on_request(tmp_path):
    if not Path("/usr/bin/chromium").exists():
        pytest.skip("needs Debian's chromium")
    from pysparse.cli import main
    out = tmp_path / "bench"
    assert main(["bench", "--models", "face_detection_full_range_sparse", "--threads", "2", "--runs", "2",
                 "--warmup", "0", "--no-profile", "--legacy-tflite", "--out", str(out)]) == 0
    record = json.loads((out / "results.json").read_text())
    assert report.validate(record) == []
    rows = {r["label"]: r for r in record["results"]}
    assert set(rows) == {"pysparse dense", "pysparse as published", "litert as published", "tflite as published"}
    assert rows["litert as published"]["info"]["wasm"] == "litert_wasm_threaded_internal.wasm"
    assert rows["pysparse as published"]["info"]["threads"] == 2
    assert rows["pysparse as published"]["speedup_vs_litert_sparse"] > 0
    assert rows["pysparse as published"]["speedup_vs_tflite_sparse"] > 0


def test_published_models_are_extracted_from_their_own_npm_packages(tmp_path, monkeypatch):
    """The face and pose detectors come from their packages (one a plain file, one packed in
    the assets bundle) byte for byte; the hand models need only @mediapipe/hands, so the demo
    works without the benchmark's packages."""
    from pysparse import assets
    only_hands = tmp_path / "node_modules"
    (only_hands / "@mediapipe").mkdir(parents=True)
    (only_hands / "@mediapipe" / "hands").symlink_to(assets.node_modules() / "@mediapipe" / "hands")
    monkeypatch.setenv("PYSPARSE_NODE_MODULES", str(only_hands))
    out = tmp_path / "models"
    assert {p.name for p in assets.extract(out, quiet=True, names=assets.HAND_MODELS)} == set(assets.HAND_MODELS)
    with pytest.raises(FileNotFoundError, match="@mediapipe/pose"):
        assets.extract(out, quiet=True, names=["pose_detection.tflite"])
    monkeypatch.delenv("PYSPARSE_NODE_MODULES")
    written = assets.extract(out, quiet=True)
    assert {p.name for p in written} == {"face_detection_full_range_sparse.tflite", "pose_detection.tflite"}
    for p in written:
        assert p.read_bytes()[4:8] == b"TFL3"
    face = assets.node_modules() / "@mediapipe" / "face_detection" / "face_detection_full_range_sparse.tflite"
    assert (out / face.name).read_bytes() == face.read_bytes()


@pytest.mark.slow
def test_requests_leaving_the_local_server_are_aborted(tmp_path):
    if not Path("/usr/bin/chromium").exists():
        pytest.skip("needs Debian's chromium")
    from playwright.sync_api import sync_playwright

    from pysparse.bench.browser import CHROMIUM_ARGS, BenchServer, block_outside, chromium_path
    with BenchServer(tmp_path) as base, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            blocked = []
            block_outside(page, base, blocked)
            page.goto(f"{base}/web/bench/index.html")
            page.wait_for_function("window.benchReady === true")
            got = page.evaluate("""async (base) => {
                const outside = await fetch('https://odml.pa.googleapis.com/v1/log', {method: 'POST'})
                  .then(() => 'sent', () => 'aborted');
                const local = (await fetch(base + '/web/bench/bench.mjs')).status;
                return [outside, local];
            }""", base)
        finally:
            browser.close()
    assert got == ["aborted", 200]
    assert blocked == ["https://odml.pa.googleapis.com/v1/log"]


def _engine_build(folder: Path) -> Path:
    """A folder shaped like an engine build (the bench checks names, the page loads them)."""
    folder.mkdir()
    for v in ("simd", "simd-threads", "relaxed", "relaxed-threads"):
        for ext in ("mjs", "wasm"):
            (folder / f"pysparse-{v}.{ext}").write_bytes(b"x")
    return folder


def test_engine_builds_must_hold_every_variant(tmp_path):
    from pysparse.commands.bench import engine_builds
    good = _engine_build(tmp_path / "old-build")
    assert engine_builds([good]) == {"old-build": good}
    (good / "pysparse-relaxed.wasm").unlink()
    with pytest.raises(FileNotFoundError, match="pysparse-relaxed.wasm"):
        engine_builds([good])
    with pytest.raises(FileNotFoundError, match="not an engine build"):
        engine_builds([tmp_path / "nowhere"])


def test_pysparse_files_are_timed_again_on_each_engine_build(tmp_path):
    from pysparse.bench.runtimes import Artifact
    from pysparse.bench.suite import configs_for
    mine = [Artifact("m", "pysparse", 0.8, 1, tmp_path / "m.spnn", (1, 3, 8, 8), "pysparse 80%"),
            Artifact("m", "litert", 0.8, 1, tmp_path / "m.tflite", (1, 3, 8, 8), "litert 80%")]
    configs = configs_for(mine, 2, {"old": tmp_path})
    assert [(c["id"], c.get("dist")) for c in configs] == [
        ("m/pysparse 80%", None), ("m/pysparse 80%@old", "/engines/old/"), ("m/litert 80%", None)]
    assert all(c["threads"] == 2 and c["url"] == configs[0]["url"] for c in configs[:2])


def test_bench_server_serves_engine_files_and_nothing_else(tmp_path):
    import urllib.error
    import urllib.request
    from pysparse.bench.browser import BenchServer
    build = _engine_build(tmp_path / "old")
    (build / "notes.txt").write_text("not an engine file")
    with BenchServer(tmp_path, {"old": build}) as url:
        with urllib.request.urlopen(f"{url}/engines/old/pysparse-relaxed.wasm") as r:
            assert r.read() == b"x" and r.headers["Content-Type"] == "application/wasm"
            assert r.headers["Cross-Origin-Embedder-Policy"] == "require-corp"
        for path in ("engines/old/notes.txt", "engines/other/pysparse-relaxed.wasm",
                     "engines/old/..%2Fold%2Fpysparse-simd.mjs"):
            with pytest.raises(urllib.error.HTTPError) as e:
                urllib.request.urlopen(f"{url}/{path}")
            assert e.value.code == 404


@pytest.mark.slow
def test_engine_build_rows_run_beside_this_checkouts(tmp_path):
    if not Path("/usr/bin/chromium").exists():
        pytest.skip("needs Debian's chromium")
    import shutil
    from pysparse import assets
    from pysparse.cli import main
    from pysparse.importers import load_model
    from pysparse.pack import pack
    from pysparse.prune import oneshot
    pruned = tmp_path / "lite80.spnn"
    pruned.write_bytes(pack(oneshot(load_model(assets.model_path("hand_landmark_lite.tflite")), 0.8)))
    other = shutil.copytree(Path(__file__).resolve().parents[1] / "web" / "dist", tmp_path / "other")
    # its relaxed threaded engine is the SIMD128 one, which says so when loaded
    for ext in ("mjs", "wasm"):
        shutil.copy(other / f"pysparse-simd-threads.{ext}", other / f"pysparse-relaxed-threads.{ext}")
    out = tmp_path / "bench"
    assert main(["bench", str(pruned), "--systems", "pysparse", "--threads", "2", "--runs", "2",
                 "--warmup", "0", "--no-profile", "--engine-build", str(other), "--out", str(out)]) == 0
    rows = json.loads((out / "results.json").read_text())["results"]
    assert [r["label"] for r in rows] == ["pysparse lite80.spnn", "pysparse lite80.spnn @other"]
    assert all(r["median_ms"] > 0 and r["info"]["threads"] == 2 for r in rows)
    assert [r["info"]["build"] for r in rows] == ["relaxed-simd-threads", "simd128-threads"]
    assert rows[1]["engine_build"] == str(other)


@pytest.mark.slow
def test_a_web_program_runs_in_chromium_with_its_arguments_and_a_fine_clock(tmp_path, capfd):
    """pysparse.bench.in_chromium: main gets the arguments, its output comes back line by line,
    and the page is cross-origin isolated (performance.now() in steps finer than 100 µs)."""
    import subprocess

    from pysparse.bench import in_chromium

    src = tmp_path / "args.c"
    src.write_text("""
#include <emscripten.h>
#include <stdio.h>
int main(int argc, char** argv) {
  for (int i = 1; i < argc; i++) printf("arg %s\\n", argv[i]);
  double step = 1e9; /* the smallest of 20 steps: a step the thread was descheduled in is long */
  for (int k = 0; k < 20; k++) {
    double t0 = emscripten_get_now(), t1 = t0;
    while (t1 == t0) t1 = emscripten_get_now();
    if (t1 - t0 < step) step = t1 - t0;
  }
  printf("step %.0f us\\n", step * 1000.0);
  return 0;
}
""")
    subprocess.run(["emcc", "-O1", "-sENVIRONMENT=web", str(src), "-o", str(tmp_path / "args.js")],
                   check=True, capture_output=True)
    in_chromium.run(tmp_path / "args.js", ["41", "two words"])
    lines = capfd.readouterr().out.splitlines()
    assert lines[:2] == ["arg 41", "arg two words"]
    step_us = float(lines[2].split()[1])
    assert 0 < step_us < 100


def test_a_missing_web_program_is_a_clear_error(tmp_path, capsys):
    from pysparse.bench import in_chromium

    assert in_chromium.main([str(tmp_path / "none.js")]) == 1
    assert "no such program" in capsys.readouterr().err
