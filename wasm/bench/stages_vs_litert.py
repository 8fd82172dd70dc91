"""Where pysparse and LiteRT.js differ, stage by stage: MobileNetV2 (pruned one-shot) cut after
features[k] for several k, each cut ending in a global average pool (so XNNPACK still takes
its sparse CHW path), both runtimes on the same weights in one Chromium page per session.
A stage's time is the difference between two consecutive cuts, taken within each session
and then the median over sessions (whole-model times drift by more than a stage takes).

    .venv/bin/python wasm/bench/stages_vs_litert.py [--cuts 2,3,4,5,6,7] [--sessions 12]
        [--threads 1] [--sparsity 0.8] [--runs 30] [--engine-build DIR ...]

The runtimes give no per-layer times of their own (LiteRT.js none at all), so this is the
way to compare them layer group by layer group. Run `make build` first.
"""
from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
from pathlib import Path


def build_cuts(out: Path, cuts: list[int], sparsity: float) -> list[str]:
    import torch

    from pysparse.bench.runtimes import _stored_sparse
    from pysparse.exporters import export_tflite
    from pysparse.importers.torch import from_torch
    from pysparse.pack import pack
    from pysparse.passes import optimize
    from pysparse.zoo.mobilenet_v2 import mobilenet_v2, prune_pointwise

    model = copy.deepcopy(mobilenet_v2(width=1.0, input_size=224, seed=0))
    prune_pointwise(model, sparsity, block=1)
    x = torch.zeros(1, 3, 224, 224)
    names = []
    for k in cuts:
        cut = torch.nn.Sequential(model.features[:k], torch.nn.AdaptiveAvgPool2d(1),
                                  torch.nn.Flatten()).eval()
        graph = optimize(from_torch(cut, x))
        name = f"features{k:02d}"
        (out / f"{name}.spnn").write_bytes(pack(graph))
        (out / f"{name}.tflite").write_bytes(_stored_sparse(export_tflite(graph), sparsity)[0])
        names.append(name)
    return names


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cuts", default="2,3,4,5,6,7", help="each cut keeps features[:k]")
    ap.add_argument("--sessions", type=int, default=12)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--sparsity", type=float, default=0.8)
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--engine-build", action="append", default=[], metavar="DIR",
                    help="also time pysparse on the engine build in DIR (make -C wasm wasm DIST=DIR)")
    args = ap.parse_args()

    from rich.progress import track

    from pysparse.bench.browser import BenchServer, run_session

    cuts = sorted(int(k) for k in args.cuts.split(","))
    engines = {Path(d).name: Path(d) for d in args.engine_build}
    # (column, system, file suffix, engine build)
    columns = [("pysparse", "pysparse", "spnn", None)]
    columns += [(f"@{name}", "pysparse", "spnn", name) for name in engines]
    columns.append(("LiteRT.js", "litert", "tflite", None))
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        names = build_cuts(out, cuts, args.sparsity)
        sessions = []
        for rep in track(range(args.sessions), description="sessions"):
            configs = [{"id": f"{n}:{col}", "system": system, "url": f"/models/{n}.{ext}",
                        "threads": args.threads, "input_shape": [1, 3, 224, 224], "artifact": n,
                        "engine": engine or "", **({"dist": f"/engines/{engine}/"} if engine else {})}
                       for n in names for col, system, ext, engine in columns]
            if rep % 2:
                configs.reverse()
            with BenchServer(out, engines) as url:
                result = run_session(url, configs, runs=args.runs, profile=False)
            errors = [r for r in result["results"] if "error" in r]
            if errors:
                raise SystemExit(f"{errors[0]['id']}: {errors[0]['error']}")
            sessions.append({r["id"]: r["median_ms"] for r in result["results"]})

    med = statistics.median
    print(f"MobileNetV2 {args.sparsity:.0%}, {args.threads} thread(s), {args.sessions} sessions "
          "(ms; a stage = its cut minus the cut before, per session, then the median)")
    head = " ".join(f"{c[0]:>10}" for c in columns)
    print(f"{'cut':>14} {head}   {'stage':>8} {head}")
    for i, n in enumerate(names):
        line = f"{'features[:' + str(cuts[i]) + ']':>14} "
        line += " ".join(f"{med([s[f'{n}:{c[0]}'] for s in sessions]):10.3f}" for c in columns)
        if i:
            p = names[i - 1]
            deltas = [med([s[f"{n}:{c[0]}"] - s[f"{p}:{c[0]}"] for s in sessions]) for c in columns]
            line += f"   {'[' + str(cuts[i - 1]) + ':' + str(cuts[i]) + ']':>8} "
            line += " ".join(f"{d:10.3f}" for d in deltas)
        print(line)


if __name__ == "__main__":
    main()
