"""Benchmark results: the JSON record, the terminal table and the PNG charts.

Speedups are a reference runtime's median over pysparse's (same model, thread count and
browser session; > 1: pysparse faster). The reference is LiteRT.js (`litert`); the legacy
TFLite-wasm (`tflite`) gets the same fields when it ran. Per pysparse row:
- `speedup_vs_litert_dense`: against LiteRT on the model's dense original, the reference a
  sparse engine has to beat;
- `speedup_vs_litert_sparse`: against LiteRT on the same sparse weights (same sparsity and
  pruning block, or the same published or user's file), stored in TFLite's sparse format,
  which is where LiteRT may take XNNPACK's own sparse path.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

SCHEMA_VERSION = 2  # 2: LiteRT.js is the reference (speedup_vs_litert_*), tfjs-tflite optional
TIMES = ("load_ms", "first_ms", "median_ms", "min_ms", "max_ms")
REFERENCES = ("litert", "tflite")  # the primary reference first
DENSE_BELOW = 0.05  # a file with fewer zero 1x1 weights than this counts as dense


def _timed_reference(r: dict, row: dict, ref: str) -> bool:
    return r.get("system") == ref and "median_ms" in r and r["model"] == row["model"] \
        and r["threads"] == row["threads"]


def baseline(rows: list[dict], row: dict, ref: str = "litert") -> dict | None:
    """`ref`'s row on the dense original of `row`'s model (same thread count): for a pruned
    copy of the user's file, that file where it is dense."""
    dense_source = row.get("notes", {}).get("dense_source")
    if dense_source is not None:
        return next((r for r in rows if _timed_reference(r, row, ref) and r.get("sparsity", 0) < DENSE_BELOW
                     and r.get("notes", {}).get("source") == dense_source), None)
    return next((r for r in rows if _timed_reference(r, row, ref) and r["label"] == f"{ref} dense"), None)


def same_weights(rows: list[dict], row: dict, ref: str = "litert") -> dict | None:
    """`ref`'s row of the weights a pysparse row runs: the user's same file, else the same
    model, thread count, sparsity and pruning block."""
    if row.get("system") != "pysparse":
        return None
    source = row.get("notes", {}).get("source")
    for r in rows:
        if not _timed_reference(r, row, ref):
            continue
        if source is not None:
            if r.get("notes", {}).get("source") == source:
                return r
        elif r.get("sparsity") == row.get("sparsity") and r.get("block", 1) == row.get("block", 1):
            return r
    return None


def add_speedups(rows: list[dict]) -> None:
    for r in rows:
        if r.get("system") != "pysparse" or "median_ms" not in r:
            continue
        for ref in REFERENCES:
            twin = same_weights(rows, r, ref)
            twin_dense = twin is not None and twin.get("sparsity", 0) < DENSE_BELOW
            dense = twin if twin_dense else baseline(rows, r, ref)
            if dense is not None:
                r[f"speedup_vs_{ref}_dense"] = dense["median_ms"] / r["median_ms"]
            if twin is not None and not twin_dense:
                r[f"speedup_vs_{ref}_sparse"] = twin["median_ms"] / r["median_ms"]


def combine_sessions(rows: list[dict]) -> list[dict]:
    """One row per configuration from its rows of several browser sessions (each row's
    `session`: which one; ratios already taken within each session by `add_speedups`).
    A machine's speed drifts from one session to the next more than within one, so the
    combined row's median is the median of the sessions' medians (`session_medians_ms`),
    each ratio the median of the sessions' ratios (`<ratio>_sessions`); samples, minimum and
    maximum are over all sessions, load and first-run times the sessions' medians. A
    configuration that failed in some sessions keeps the others and lists the failures in
    `sessions_failed`; one that failed in all keeps its first error."""
    from statistics import median

    groups: dict = {}
    for r in rows:
        groups.setdefault((r["model"], r["label"], r["threads"], r["file"]), []).append(r)
    out = []
    for group in groups.values():
        ok = [r for r in group if "median_ms" in r and "error" not in r]
        row = {k: v for k, v in (ok or group)[0].items() if k != "session"}
        if ok:
            row["median_ms"] = median(r["median_ms"] for r in ok)
            row["session_medians_ms"] = [r["median_ms"] for r in ok]
            row["min_ms"] = min(r["min_ms"] for r in ok)
            row["max_ms"] = max(r["max_ms"] for r in ok)
            for key in ("load_ms", "first_ms"):
                row[key] = median(r[key] for r in ok)
            if all("samples_ms" in r for r in ok):
                row["samples_ms"] = [v for r in ok for v in r["samples_ms"]]
                row["mean_ms"] = sum(row["samples_ms"]) / len(row["samples_ms"])
            for key in dict.fromkeys(k for r in ok for k in r if k.startswith("speedup_vs_")):
                values = [r[key] for r in ok if key in r]
                row[key] = median(values)
                row[f"{key}_sessions"] = values
            failed = [r["error"] for r in group if r not in ok and "error" in r]
            if failed:
                row["sessions_failed"] = failed
        out.append(row)
    return out


def write_json(path: Path, record: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp.", suffix=".json")
    with os.fdopen(fd, "w") as f:
        json.dump(record, f, indent=1, allow_nan=False)
    os.replace(tmp, path)


def validate(record: dict) -> list[str]:
    """Problems with a results record (empty when well formed)."""
    problems = []
    for key in ("schema_version", "environment", "runs", "results"):
        if key not in record:
            problems.append(f"missing {key}")
    for r in record.get("results", []):
        where = f"{r.get('model')}/{r.get('label')}/{r.get('threads')}t"
        for key in ("model", "system", "label", "sparsity", "threads", "file", "file_bytes"):
            if key not in r:
                problems.append(f"{where}: missing {key}")
        if "error" in r:
            problems.append(f"{where}: {r['error']}")
            continue
        for key in TIMES:
            v = r.get(key)
            if not isinstance(v, (int, float)) or not v > 0:
                problems.append(f"{where}: {key} = {v!r}")
        for e in r.get("sessions_failed", []):
            problems.append(f"{where}: one session failed: {e}")
        expected = record.get("runs", 0) * record.get("sessions_per_configuration", 1)
        if len(r.get("samples_ms", [])) != expected:
            problems.append(f"{where}: {len(r.get('samples_ms', []))} samples for {expected} runs")
    return problems


def print_table(record: dict, console=None, fmt: str = "auto") -> None:
    """One table per model and thread count (see pysparse.tables for `fmt`). The legacy
    TFLite-wasm's ratio columns appear only when it ran."""
    from ..tables import Table, emit

    rows = record["results"]
    sessions = record.get("sessions_per_configuration", 1)
    what = f"median of {record['runs']}" if sessions == 1 else \
        f"median of {sessions} sessions' medians of {record['runs']}; ratios: median (range) over the sessions"
    refs = [ref for ref in REFERENCES if any(r.get("system") == ref for r in rows)] or ["litert"]
    ratio_keys = [f"speedup_vs_{ref}_{kind}" for ref in refs for kind in ("dense", "sparse")]
    ratio_names = [f"× {ref} {kind}" for ref in refs for kind in ("dense", "sparse")]
    for model in dict.fromkeys(r["model"] for r in rows):
        for threads in sorted({r["threads"] for r in rows if r["model"] == model}):
            columns = ["system", "load", "first", "median", "min", "max", *ratio_names, "file KiB"]
            t = Table(f"{model}, {threads} thread{'s' if threads > 1 else ''} (ms; {what})",
                      columns, right=set(range(1, len(columns))))
            for r in rows:
                if r["model"] != model or r["threads"] != threads:
                    continue
                if "error" in r:
                    t.add(r["label"], "error: " + r["error"][:60], *[""] * (len(columns) - 2))
                    continue
                ratios = [ratio_cell(r, k) for k in ratio_keys]
                t.add(r["label"], *(f"{r[k]:.1f}" for k in TIMES), *ratios, f"{r['file_bytes'] / 1024:.0f}")
            emit(t, fmt, console)


def ratio_cell(row: dict, key: str) -> str:
    """A ratio as the table shows it: "1.25", or "1.25 (1.21-1.30)" over several sessions."""
    if not row.get(key):
        return "-"
    each = row.get(f"{key}_sessions", [])
    spread = f" ({min(each):.2f}-{max(each):.2f})" if len(each) > 1 else ""
    return f"{row[key]:.2f}{spread}"


# Engine kernels grouped for the per-layer chart: the first matching prefix names the group.
KERNEL_GROUPS = (("spmm", "sparse 1x1 and FC"), ("fc_sparse", "sparse 1x1 and FC"),
                 ("gemm", "dense 1x1 and FC"), ("gemv", "dense 1x1 and FC"), ("fc", "dense 1x1 and FC"),
                 ("dwconv", "depthwise"), ("conv", "KxK convolution"))


def kernel_group(kernel: str) -> str:
    """The chart group of an engine kernel name ("other ops" when no prefix matches)."""
    return next((name for prefix, name in KERNEL_GROUPS if kernel.startswith(prefix)), "other ops")


def layer_breakdown(rows: list[dict], model: str) -> dict:
    """{(label, threads): {group: microseconds}} from the pysparse rows' per-layer profiles."""
    out: dict = {}
    for r in rows:
        if r["model"] == model and r.get("layers"):
            groups = out.setdefault((r["label"], r["threads"]), {})
            for layer in r["layers"]:
                g = kernel_group(layer.get("kernel") or layer["op"])
                groups[g] = groups.get(g, 0.0) + layer["us"]
    return out


def plot(record: dict, out_dir: Path) -> list[Path]:
    """time_<model>.png (median per system and thread count), layers_<model>.png (pysparse's
    per-layer profile summed by kind of kernel) and speedup.png (speedup over LiteRT.js on the
    dense original against sparsity)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in record["results"] if "median_ms" in r]
    written = []
    models = list(dict.fromkeys(r["model"] for r in rows))
    for model in models:
        mine = [r for r in rows if r["model"] == model]
        labels = list(dict.fromkeys(r["label"] for r in mine))
        threads = sorted({r["threads"] for r in mine})
        fig, ax = plt.subplots(figsize=(max(6, 0.6 * len(labels) + 2), 4))
        width = 0.8 / len(threads)
        for k, th in enumerate(threads):
            vals = [next((r["median_ms"] for r in mine if r["label"] == lab and r["threads"] == th), 0) for lab in labels]
            ax.bar([i + k * width for i in range(len(labels))], vals, width, label=f"{th} thread(s)")
        ax.set_xticks([i + width * (len(threads) - 1) / 2 for i in range(len(labels))])
        ax.set_xticklabels(labels, rotation=40, ha="right", fontsize=8)
        ax.set_ylabel("median inference time (ms)")
        ax.set_title(f"{model}: time per system")
        ax.legend()
        fig.tight_layout()
        path = out_dir / f"time_{model}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    for model in models:
        breakdown = layer_breakdown(rows, model)
        if not breakdown:
            continue
        order = dict.fromkeys([name for _, name in KERNEL_GROUPS] + ["other ops"])
        groups = [g for g in order if any(g in v for v in breakdown.values())]
        keys = list(breakdown)
        fig, ax = plt.subplots(figsize=(8, 0.35 * len(keys) + 1.6))
        left = [0.0] * len(keys)
        for g in groups:
            vals = [breakdown[k].get(g, 0.0) / 1000 for k in keys]
            ax.barh(range(len(keys)), vals, left=left, label=g)
            left = [a + b for a, b in zip(left, vals)]
        ax.set_yticks(range(len(keys)))
        ax.set_yticklabels([f"{label}, {th}t" for label, th in keys], fontsize=8)
        ax.invert_yaxis()
        ax.set_xlabel("ms per inference (profiled runs, summed by kind of kernel)")
        ax.set_title(f"{model}: where pysparse's time goes")
        ax.legend(fontsize=7, loc="lower right")
        fig.tight_layout()
        path = out_dir / f"layers_{model}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    fig, axes = plt.subplots(1, max(1, len(models)), figsize=(4.5 * max(1, len(models)), 4), squeeze=False)
    for ax, model in zip(axes[0], models):
        mine = [r for r in rows if r["model"] == model and r.get("speedup_vs_litert_dense")]
        series = dict.fromkeys((r["system"], r.get("block", 1), r["threads"]) for r in mine if r["sparsity"] > 0)
        for system, block, th in series:
            pts = sorted((r["sparsity"], r["speedup_vs_litert_dense"]) for r in mine
                         if r["system"] == system and r.get("block", 1) == block and r["threads"] == th)
            dense = next((r["speedup_vs_litert_dense"] for r in mine if r["system"] == system
                          and r["sparsity"] == 0 and r["threads"] == th), None)
            if dense is not None:
                pts = [(0.0, dense)] + pts
            name = f"{system} b{block}, {th}t"
            ax.plot([p[0] * 100 for p in pts], [p[1] for p in pts], marker="o", label=name)
        ax.axhline(1.0, color="grey", lw=0.8)
        ax.set_title(model, fontsize=9)
        ax.set_xlabel("sparsity of pruned layers (%)")
        ax.set_ylabel("speedup over LiteRT.js dense")
        if ax.get_legend_handles_labels()[0]:  # the user's files have no LiteRT-dense series
            ax.legend(fontsize=7)
    fig.tight_layout()
    path = out_dir / "speedup.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    written.append(path)
    return written
