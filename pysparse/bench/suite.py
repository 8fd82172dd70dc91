"""`pysparse bench`: build every configuration's files, run one browser session per model and
thread count (or several, `repeat`), write build/bench/results.json and the charts, print the
table.

    record = run_benchmark(["hand_landmark_lite"], threads=[1], runs=20)
"""
from __future__ import annotations

import os
import time
from pathlib import Path

from .. import __version__
from . import report
from .browser import SETTLE_MS
from .runtimes import DEFAULT_SYSTEMS, SPARSITIES, prepare

OUT_DIR = Path("build/bench")


def configs_for(artifacts, threads: int, engines=()) -> list[dict]:
    """The page's configurations: each artifact, and each pysparse one again on every other
    engine build in `engines` (names served under /engines/<name>/), id `<id>@<name>`. Each
    names its artifact ("artifact") and engine build ("engine", "" for this checkout's)."""
    out = []
    for a in artifacts:
        cfg = {"id": a.id, "system": a.system, "url": f"/models/{a.path.name}", "threads": threads,
               "input_shape": list(a.input_shape), "artifact": a.id, "engine": ""}
        out.append(cfg)
        if a.system == "pysparse":
            out.extend({**cfg, "id": f"{a.id}@{name}", "dist": f"/engines/{name}/", "engine": name}
                       for name in engines)
    return out


# The files one page holds at most: every model of a page shares its engine's 2 GiB heap,
# which a large dense model fills about three times over (file, packed weights, arena).
PAGE_FILE_BYTES = 256 << 20


def by_memory(artifacts) -> list[list]:
    """The artifacts in order, cut into pages of at most PAGE_FILE_BYTES of files (a larger
    file gets a page of its own)."""
    pages, size = [[]], 0
    for a in artifacts:
        n = a.path.stat().st_size
        if pages[-1] and size + n > PAGE_FILE_BYTES:
            pages.append([])
            size = 0
        pages[-1].append(a)
        size += n
    return pages


def sessions_of(artifacts) -> list[tuple[str, list]]:
    """The browser sessions of one thread count: per model, one per pruning block for
    pysparse and the .tflite runtimes, the dense files in the first, and onnxruntime-web in
    a page of its own (one per file for the user's files). (A page holding the tfjs-tflite
    files of every block at 2 threads, nine instances, hangs in tfjs-tflite's thread
    start-up; five are fine. At 2 threads whatever ran right after onnxruntime-web in a
    round took up to twice its time, for tens of ms after ORT's run, spinning threads or
    not.)"""
    out = []
    for model in dict.fromkeys(a.model for a in artifacts):
        mine = [a for a in artifacts if a.model == model and a.system != "ort"]
        ort = [a for a in artifacts if a.model == model and a.system == "ort"]
        if all(a.notes.get("source") for a in mine + ort):  # the user's files, as given
            out.extend((model, group) for group in by_memory(mine) if group)
            out.extend((model, [a]) for a in ort)  # each alone: ORT slows what runs after it
            continue
        blocks = list(dict.fromkeys(a.block for a in mine if a.sparsity > 0)) or [1]
        for k, b in enumerate(blocks):
            out.append((model, [a for a in mine if (a.sparsity == 0 and k == 0) or (a.sparsity > 0 and a.block == b)]))
        if ort:
            out.append((model, ort))
    return out


def run_benchmark(models, threads=(1, 2), runs: int = 20, warmup: int = 3, sparsities=SPARSITIES,
                  blocks=(1, 4), systems=DEFAULT_SYSTEMS, out_dir: Path = OUT_DIR,
                  profile: bool = True, progress_bar: bool = True, console=None,
                  session_timeout_s: float = 900, files=(), settle_ms: float = SETTLE_MS,
                  engines: dict[str, Path] | None = None, repeat: int = 1, file_sparsities=(),
                  max_import_elements: int | None = None) -> dict:
    """`repeat`: browser sessions per configuration, one after another over the whole set
    (every other one loading the configurations in reverse order, so that none is always
    loaded first); the rows combine them (`report.combine_sessions`)."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from .browser import BenchServer, run_session

    engines = engines or {}
    out_dir = Path(out_dir)
    models_dir = out_dir / "models"
    if console is not None:
        console.print(f"building model files under {models_dir} ...")
    artifacts = prepare(models, models_dir, sparsities, blocks, systems, files, file_sparsities,
                        max_import_elements)
    loadavg_before = os.getloadavg()  # other work on the machine skews every figure
    by_id = {a.id: a for a in artifacts}
    rows, sessions = [], []
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeElapsedColumn(), console=console, disable=not progress_bar, transient=True) as bar:
        for rep, th, (model, mine) in ((rep, th, s) for rep in range(repeat) for th in threads
                                       for s in sessions_of(artifacts)):
            session = f" session {rep + 1}/{repeat}" if repeat > 1 else ""
            name = f"{model} {th}t{session}"
            task = bar.add_task(name, total=None)

            def tick(done, total, what, task=task, shown=[0], th=th, name=name, session=session):
                bar.update(task, completed=done, total=total, description=f"{th}t{session} {what[:48]}")
                if console is not None and not console.is_terminal and done * 10 // total > shown[0]:
                    shown[0] = done * 10 // total  # a line per 10% where no live bar shows
                    console.print(f"{name}: {done}/{total} {what}", soft_wrap=True)  # one line each

            configs = configs_for(mine, th, engines)
            if rep % 2:
                configs.reverse()
            try:
                with BenchServer(models_dir, engines) as url:
                    result = run_session(url, configs, runs=runs, warmup=warmup,
                                         profile=profile, progress=tick, timeout_s=session_timeout_s,
                                         settle_ms=settle_ms)
            except Exception as e:  # a hung or crashed page: record it, go on with the rest
                result = {"environment": {}, "page_errors": [str(e)],
                          "results": [{"id": c["id"], "error": f"session failed: {str(e)[:200]}"}
                                      for c in configs]}
            sessions.append({"model": model, "threads": th, "session": rep,
                             "environment": result["environment"],
                             "browser_version": result.get("browser_version"),
                             "page_errors": result.get("page_errors", [])})
            config_of = {c["id"]: c for c in configs}
            for r in result["results"]:
                cfg = config_of[r["id"]]
                a, engine = by_id[cfg["artifact"]], cfg["engine"]
                row = {"model": a.model, "system": a.system, "label": a.label, "sparsity": a.sparsity,
                       "block": a.block, "threads": th, "session": rep, "file": a.path.name,
                       "file_bytes": a.path.stat().st_size, "notes": a.notes}
                if engine:  # the same file on another engine build
                    row.update(label=f"{a.label} @{engine}", engine_build=str(engines[engine]))
                for key in report.TIMES + ("mean_ms", "samples_ms", "layers", "layers_error", "error", "info"):
                    if key in r:
                        row[key] = r[key]
                rows.append(row)
            # what is measured so far is kept even if a later session fails
            report.write_json(out_dir / "results.partial.json", {"runs": runs, "sessions": sessions, "results": rows})
    for rep in range(repeat):  # ratios within a session, where both systems met the same machine
        report.add_speedups([r for r in rows if r["session"] == rep])
    rows = report.combine_sessions(rows)
    record = {"schema_version": report.SCHEMA_VERSION, "pysparse_version": __version__,
              "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "runs": runs, "warmup": warmup,
              "sessions_per_configuration": repeat,
              "settle_ms": settle_ms,
              "environment": next((x["environment"] for x in sessions if x["environment"]), {}),
              "loadavg_before": loadavg_before, "loadavg_after": os.getloadavg(),
              "sessions": sessions,
              "results": rows}
    report.write_json(out_dir / "results.json", record)
    record["charts"] = [str(p) for p in report.plot(record, out_dir)]
    return record
