"""Frame timings of the hand-tracking demo in headless Chromium (`make bench-demo`).

    python -m pysparse.bench.demo                      # 60 frames, 1 and 2 threads, both inputs
    python -m pysparse.bench.demo --frames 120 --threads 1 2 4 --sparsity 90

For each thread count, one browser session (Debian's Chromium, its camera faked from the
demo's bundled clip) runs the demo page on the clip's frames read as files ("file" mode)
and from the fake camera ("camera" mode); the page runs the dense and the sparse pipeline
on every frame, alternating which goes first. The first session also runs the references on
the same clip frames, once before and once after its own runs:
- MediaPipe Tasks Vision's HandLandmarker (npm @mediapipe/tasks-vision; CPU delegate, VIDEO
  mode), the primary reference, on a `.task` bundle built into build/bench/ from the
  project's own models (`pysparse.bench.handlandmarker`), served to the page by the driver;
- MediaPipe's legacy web solution (npm @mediapipe/hands, its CPU inference, tracking).
Requests leaving the local server (MediaPipe Tasks posts usage logs) are aborted and listed
in the result. Every system's palm-detection frames are counted, and tracked frames
summarised apart. Writes build/bench/demo.json and build/bench/demo.png, and copies the
chart to docs/images/demo-frame-times.png.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

from .browser import CHROMIUM_ARGS, block_outside, chromium_path
from .handlandmarker import write_task

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "build" / "bench"
CHART_COPY = ROOT / "docs" / "images" / "demo-frame-times.png"
STAGES = ("preprocess", "palm", "landmarks", "postprocess", "draw")
PIPELINES = ("dense", "sparse")
WARMUP = 3  # first frames of every run (compilation, caches) are recorded but not summarised
# Where the HandLandmarker page asks for its bundle (demo/handlandmarker.mjs); the driver answers.
TASK_ROUTE = "**/demo/handlandmarker/hand_landmarker.task"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serve(port: int | None = None, timeout: float = 30.0):
    """`pysparse serve` on a free localhost port; yields its base URL."""
    port = port or free_port()
    proc = subprocess.Popen([sys.executable, "-m", "pysparse.cli", "serve", "--port", str(port)],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                urllib.request.urlopen(base + "/demo/index.html", timeout=2).close()
                break
            except OSError:
                if proc.poll() is not None:
                    raise RuntimeError(f"pysparse serve exited: {proc.stderr.read().decode(errors='replace')[-2000:]}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"pysparse serve did not answer on {base} within {timeout:.0f} s")
                time.sleep(0.2)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def launch(playwright, camera_file: Path | None = None):
    """Debian's Chromium, headless; with camera_file, a fake camera that plays it."""
    args = list(CHROMIUM_ARGS)
    if camera_file is not None:
        args += ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
                 f"--use-file-for-fake-video-capture={camera_file}"]
    return playwright.chromium.launch(executable_path=chromium_path(), args=args)


def wait_for(page, ready_expr: str, count_expr: str | None = None, total: int = 0, timeout: float = 600,
             progress=None, task=None):
    """Poll the page until `ready_expr` is truthy; fail on the page's `error`. Reports
    `count_expr` to a rich progress bar when given."""
    deadline = time.monotonic() + timeout
    while True:
        state = page.evaluate(f"[{ready_expr}, {count_expr or 0}]")
        if progress is not None and task is not None:
            progress.update(task, completed=min(total, state[1] or 0))
        if state[0]:
            return
        if time.monotonic() > deadline:
            status = page.evaluate("document.getElementById('status')?.textContent ?? ''")
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {ready_expr} (page status: {status!r})")
        time.sleep(0.25)


def run_demo(page, base: str, source: str, threads: int, sparsity: int, frames: int, progress=None, task=None) -> dict:
    url = f"{base}/demo/?source={source}&threads={threads}&sparsity={sparsity}&frames={frames}&pace=0"
    page.goto(url)
    wait_for(page, "window.pysparseDemo && (pysparseDemo.done || pysparseDemo.error)",
             "window.pysparseDemo ? pysparseDemo.processed : 0", frames, progress=progress, task=task)
    err = page.evaluate("pysparseDemo.error")
    if err:
        raise RuntimeError(f"the demo page failed: {err}")
    return page.evaluate("({info: pysparseDemo.info, timings: pysparseDemo.timings})")


def guard(page, base: str, task_file: Path, blocked: list) -> None:
    """Serves the HandLandmarker bundle to `page` and aborts every request that would leave
    the local server (MediaPipe Tasks posts usage logs to a remote endpoint), noting it."""
    block_outside(page, base, blocked)
    page.route(TASK_ROUTE, lambda route: route.fulfill(path=task_file, content_type="application/octet-stream"))


def run_handlandmarker(page, base: str, frames: int, progress=None, task=None) -> dict:
    # Only detectForVideo() is timed; palm detection runs on the first frame and after a frame
    # without a hand (the page's `detected`), otherwise the task tracks the hand.
    page.goto(f"{base}/demo/handlandmarker.html?source=clip&frames={frames}")
    wait_for(page, "window.handLandmarkerReference && (handLandmarkerReference.done || handLandmarkerReference.error)",
             "window.handLandmarkerReference ? handLandmarkerReference.timings.length : 0", frames,
             progress=progress, task=task)
    err = page.evaluate("handLandmarkerReference.error")
    if err:
        raise RuntimeError(f"the HandLandmarker reference page failed: {err}")
    return page.evaluate("({timings: handLandmarkerReference.timings, options: handLandmarkerReference.options, "
                         "version: handLandmarkerReference.version, wasm: handLandmarkerReference.wasm})")


def run_mediapipe(page, base: str, frames: int, progress=None, task=None) -> dict:
    # Only hands.send() is timed; palm detection runs on the first frame and after a frame
    # without a hand (the page's `detected`), otherwise MediaPipe tracks the hand.
    page.goto(f"{base}/demo/reference.html?source=clip&frames={frames}")
    wait_for(page, "window.mediapipeReference && (mediapipeReference.done || mediapipeReference.error)",
             "window.mediapipeReference ? mediapipeReference.timings.length : 0", frames, progress=progress, task=task)
    err = page.evaluate("mediapipeReference.error")
    if err:
        raise RuntimeError(f"the MediaPipe reference page failed: {err}")
    return page.evaluate("({timings: mediapipeReference.timings, options: mediapipeReference.options})")


# -- summaries ---------------------------------------------------------------------------

def _stats(values: list[float]) -> dict:
    if not values:
        return {"n": 0}
    q = statistics.quantiles(values, n=10) if len(values) > 1 else [values[0]] * 9
    return {"n": len(values), "median": statistics.median(values), "mean": statistics.fmean(values),
            "p10": q[0], "p90": q[-1], "min": min(values), "max": max(values)}


def summarize_demo(timings: list[dict]) -> dict:
    frames = timings[WARMUP:]
    out = {}
    for p in PIPELINES:
        rows = [f[p] for f in frames]
        tracked = [r["total"] for r in rows if not r["detected"]]
        out[p] = {
            "total": _stats([r["total"] for r in rows]),
            "tracked_frames": _stats(tracked),  # no palm detection on these
            # the same without drawing the overlay: what the references' timed calls cover
            "tracked_no_draw": _stats([r["total"] - r["draw"] for r in rows if not r["detected"]]),
            "stages": {s: statistics.median([r[s] for r in rows]) if rows else None for s in STAGES},
            # Means add up to the mean frame time, palm detection's rare runs included.
            "stage_means": {s: statistics.fmean([r[s] for r in rows]) if rows else None for s in STAGES},
            "palm_detection_frames": sum(r["detected"] for r in rows),
            "hand_found_frames": sum(r["found"] for r in rows),
        }
    # The frame's pixels (counted in both pipelines' preprocess) and how much of it was read.
    out["grab"] = statistics.median([f["grab"] for f in frames]) if frames else None
    out["copied_fraction"] = statistics.median([f.get("copied", 1) for f in frames]) if frames else None
    out["grabber"] = frames[-1].get("grabber") if frames else None
    d, s = out["dense"], out["sparse"]
    if d["total"]["n"] and s["total"]["n"]:
        out["speedup_landmarks"] = d["stages"]["landmarks"] / s["stages"]["landmarks"]
        out["speedup_total"] = d["total"]["median"] / s["total"]["median"]
    return out


# The references: result key -> (name in tables, page driver)
REFERENCES = {"handlandmarker": ("HandLandmarker", run_handlandmarker), "mediapipe": ("MediaPipe Hands", run_mediapipe)}


def reference_pass(key: str, page, base: str, frames: int, n: int, result: dict, progress) -> None:
    name, run = REFERENCES[key]
    task = progress.add_task(f"{name}, pass {n}", total=frames)
    data = run(page, base, frames, progress, task)
    ref = result.setdefault(key, {"options": data["options"], "timings": []})
    ref.update({k: data[k] for k in ("version", "wasm") if data.get(k)})
    ref["timings"] += [{**f, "pass": n} for f in data["timings"]]
    ref["summary"] = summarize_mediapipe(ref["timings"])


def summarize_mediapipe(timings: list[dict]) -> dict:
    frames = [f for f in timings if f["frame"] >= WARMUP]  # each pass has its own warm-up
    return {"total": _stats([f["ms"] for f in frames]),
            "tracked_frames": _stats([f["ms"] for f in frames if not f["detected"]]),
            "detection_frames": _stats([f["ms"] for f in frames if f["detected"]]),
            "palm_detection_frames": sum(f["detected"] for f in frames),
            "hand_found_frames": sum(f["found"] for f in frames)}


def compare(result: dict, key: str = "mediapipe") -> dict:
    """Each run's tracked frames against a reference's (`key`: "handlandmarker" or
    "mediapipe"; same session, same clip frames), pysparse's time over the reference's (< 1:
    pysparse faster): the ratio of medians, and of p10s and minimums, which the machine's
    other load skews less. pysparse's frames count without the overlay drawing, which the
    references' timed calls do not include."""
    ref = result.get(key, {}).get("summary", {}).get("tracked_frames", {})
    if not ref.get("n"):
        return {}
    out = {}
    for run in result["runs"]:
        for p in PIPELINES:
            tr = run["summary"][p]["tracked_no_draw"]
            if tr["n"]:
                out[f"{run['mode']} {run['threads']}t {p}"] = {k: tr[k] / ref[k] for k in ("median", "p10", "min")}
    return out


def chart(result: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = result["runs"]
    labels, series, stacks = [], [], []
    for run in runs:
        for p in PIPELINES:
            labels.append(f"{p}\n{run['mode']}, {run['threads']}t")
            series.append([f[p]["total"] for f in run["timings"][WARMUP:]])
            stacks.append([run["summary"][p]["stage_means"][s] for s in STAGES])
    for key, label in (("handlandmarker", "Hand-\nLandmarker,\n1t"), ("mediapipe", "MediaPipe\nHands, 1t")):
        if result.get(key):
            labels.append(label)
            series.append([f["ms"] for f in result[key]["timings"] if f["frame"] >= WARMUP])
    fig, (a, b) = plt.subplots(1, 2, figsize=(max(13.0, 1.3 * len(labels) + 4), 5), gridspec_kw={"width_ratios": [3, 2]})
    colors = ["#10b981" if lab.startswith("dense") else "#f59e0b" if lab.startswith("sparse")
              else "#a78bfa" if lab.startswith("Hand") else "#3b82f6" for lab in labels]
    parts = a.violinplot(series, showmedians=True, widths=0.8)
    for body, c in zip(parts["bodies"], colors):
        body.set_facecolor(c)
        body.set_alpha(0.6)
    a.set_xticks(range(1, len(labels) + 1), labels, fontsize=8)
    a.set_ylabel("ms per frame (whole pipeline)")
    kind = "fine-tuned" if (result.get("sparse_model") or {}).get("finetuned") else "one-shot pruned"
    a.set_title(f"Frame times, {result['frames']} frames per run ({result['sparsity']}% sparse landmark model, {kind})")
    a.grid(axis="y", alpha=0.3)
    stage_colors = ["#a78bfa", "#60a5fa", "#f59e0b", "#f472b6", "#94a3b8"]
    n = len(stacks)
    left = [0.0] * n
    for k, s in enumerate(STAGES):
        vals = [row[k] or 0 for row in stacks]
        b.barh(range(n), vals, left=left, color=stage_colors[k], label=s)
        left = [l + v for l, v in zip(left, vals)]
    b.set_yticks(range(n), [lab.replace("\n", " ") for lab in labels[:n]], fontsize=8)
    b.invert_yaxis()
    b.set_xlabel("mean ms per stage (palm detection's occasional runs included)")
    b.set_title("Per-stage breakdown")
    b.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=len(STAGES), frameon=False)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)


def sparse_model(result: dict) -> dict:
    """Which sparse landmark model the runs used (fine-tuned or one-shot pruned)."""
    infos = [run["info"]["models"]["sparse"] for run in result["runs"]]
    m = infos[0] if infos else {}
    return {"file": m.get("file"), "source": m.get("source"), "finetuned": m.get("finetuned"), "label": m.get("label"),
            "bytes": m.get("bytes"), "same_in_every_run": all(i == m for i in infos)}


def _print_table(result: dict) -> None:
    from ..tables import Table, emit
    sm = result.get("sparse_model") or {}
    kind = "fine-tuned" if sm.get("finetuned") else "one-shot pruned"
    columns = ["run", "pipeline", "total (p10-p90)", "tracked frame", "tracked, no draw", *STAGES, "palm runs",
               "frame read"]
    t = Table(f"demo frame times, ms (median of {result['frames'] - WARMUP} frames; p10-p90); "
              f"sparse = {sm.get('file')} ({kind}, from {sm.get('source')})", columns,
              right=set(range(2, len(columns))), keys=(0, 1))
    for run in result["runs"]:
        for p in PIPELINES:
            s = run["summary"][p]
            tot, tr, nd = s["total"], s["tracked_frames"], s["tracked_no_draw"]
            t.add(f"{run['mode']} {run['threads']}t", p,
                  f"{tot['median']:.1f} ({tot['p10']:.0f}-{tot['p90']:.0f})",
                  f"{tr['median']:.1f}" if tr["n"] else "-", f"{nd['median']:.1f}" if nd["n"] else "-",
                  *(f"{s['stages'][k]:.1f}" for k in STAGES), str(s["palm_detection_frames"]),
                  f"{run['summary']['grab']:.1f} ms, {100 * run['summary']['copied_fraction']:.0f}%"
                  if run["summary"].get("grab") is not None else "-")
    for key, (name, _) in REFERENCES.items():
        ref = result.get(key)
        if ref:
            s = ref["summary"]
            tot, tr = s["total"], s["tracked_frames"]
            tracked = f"{tr['median']:.1f}" if tr["n"] else "-"  # a reference draws nothing in its timed call
            t.add("file 1t", name, f"{tot['median']:.1f} ({tot['p10']:.0f}-{tot['p90']:.0f})", tracked, tracked,
                  *[""] * len(STAGES), str(s["palm_detection_frames"]), "")
    emit(t)
    for key, (name, _) in REFERENCES.items():
        ref = result.get(key)
        if not ref:
            continue
        det = ref["summary"]["detection_frames"]
        call = "detectForVideo()" if key == "handlandmarker" else "hands.send()"
        print(f"{name} {ref.get('version') or ''} {ref.get('wasm') or ''} ({json.dumps(ref.get('options'))}): "
              f"only {call} timed; palm "
              f"detection ran on {ref['summary']['palm_detection_frames']} of {ref['summary']['total']['n']} "
              f"summarised frames" + (f" (median {det['median']:.1f} ms)" if det["n"] else "")
              + ", tracking on the others.")
        for k, v in result.get(f"vs_{key}_tracked", {}).items():
            print(f"  tracked frame (no draw), {k} / {name}: {v['median']:.2f}x (p10 {v['p10']:.2f}x, "
                  f"min {v['min']:.2f}x)")
    if result.get("blocked_requests"):
        print(f"requests to outside the local server, aborted: {sorted(set(result['blocked_requests']))}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pysparse.bench.demo", description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=60, help="frames per run (default 60)")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--modes", nargs="+", choices=("file", "camera"), default=["file", "camera"])
    ap.add_argument("--sparsity", type=int, choices=(70, 80, 87, 90), default=80)
    ap.add_argument("--no-handlandmarker", action="store_true", help="skip the MediaPipe Tasks HandLandmarker reference")
    ap.add_argument("--no-mediapipe", action="store_true", help="skip the legacy MediaPipe Hands reference")
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--no-copy", action="store_true", help=f"do not copy the chart to {CHART_COPY.relative_to(ROOT)}")
    args = ap.parse_args(argv)
    if args.frames <= WARMUP:
        ap.error(f"--frames must be more than {WARMUP}")

    from playwright.sync_api import sync_playwright
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from .. import demo_assets
    demo_assets.main(["--quiet"])
    camera_file = demo_assets.ASSETS_OUT / "clip.y4m"
    task_file = write_task(args.out)
    references = [k for k, skip in (("handlandmarker", args.no_handlandmarker), ("mediapipe", args.no_mediapipe))
                  if not skip]
    blocked: list[str] = []
    result = {"frames": args.frames, "sparsity": args.sparsity, "warmup": WARMUP, "runs": [],
              "chromium": None, "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
              "cpus": os.cpu_count(), "loadavg_before": os.getloadavg()}
    sources = {"file": "clip", "camera": "camera"}
    with serve() as base, sync_playwright() as pw, Progress(
            TextColumn("{task.description:<28}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()) as progress:
        for i, threads in enumerate(args.threads):
            browser = launch(pw, camera_file)
            result["chromium"] = browser.version
            try:
                page = browser.new_page()
                guard(page, base, task_file, blocked)
                # The references run before and after the first session's runs (in mirrored
                # order), so that every system sees the same spread of the machine's load.
                refs = references if i == 0 else []
                for key in refs:
                    reference_pass(key, page, base, args.frames, 1, result, progress)
                for mode in args.modes:
                    task = progress.add_task(f"{mode}, {threads} thread(s)", total=args.frames)
                    data = run_demo(page, base, sources[mode], threads, args.sparsity, args.frames, progress, task)
                    result["runs"].append({"mode": mode, "threads": threads, "info": data["info"],
                                           "timings": data["timings"], "summary": summarize_demo(data["timings"])})
                for key in reversed(refs):
                    reference_pass(key, page, base, args.frames, 2, result, progress)
            finally:
                browser.close()
    result["loadavg_after"] = os.getloadavg()  # other work on the machine skews every figure
    result["sparse_model"] = sparse_model(result)
    result["blocked_requests"] = blocked
    for key in REFERENCES:
        result[f"vs_{key}_tracked"] = compare(result, key)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "demo.json").write_text(json.dumps(result, indent=1))
    chart(result, args.out / "demo.png")
    if not args.no_copy:
        CHART_COPY.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(args.out / "demo.png", CHART_COPY)
    _print_table(result)
    print(f"wrote {args.out / 'demo.json'} and {args.out / 'demo.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
