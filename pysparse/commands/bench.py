"""`pysparse bench`: pysparse against LiteRT.js (and onnxruntime-web) in headless Chromium."""
from __future__ import annotations

import re
from pathlib import Path

from ..tables import add_format_option
from . import add_import_limit


def _list(kind):
    def parse(text):
        return [kind(v) for v in text.split(",") if v.strip()]
    return parse


def add_parser(sub) -> None:
    from ..bench.browser import SETTLE_MS
    from ..bench.runtimes import ALL_MODELS, DEFAULT_SYSTEMS, SPARSITIES, SYSTEMS
    p = sub.add_parser("bench", help="benchmark pysparse against LiteRT.js and onnxruntime-web in Chromium",
                       description="Build dense and pruned (one-shot) forms of each model for every system "
                                   "(MediaPipe's published sparse models as they are), time them interleaved in "
                                   "headless Chromium (one session per model, thread count and pruning block), "
                                   "and write build/bench/results.json and PNG charts. Ratios are LiteRT.js's "
                                   "time over pysparse's.")
    p.add_argument("files", nargs="*", type=Path, metavar="MODEL",
                   help="your own .spnn/.tflite/.onnx files, timed as given in one session, a .tflite also by "
                        "LiteRT.js and an .onnx by onnxruntime-web (in a page of its own) (then only these "
                        "unless --models is given too)")
    p.add_argument("--models", type=_list(str), default=None,
                   help=f"comma-separated (default: {','.join(ALL_MODELS)})")
    p.add_argument("--threads", type=_list(int), default=[1, 2], help="comma-separated thread counts (default 1,2)")
    p.add_argument("--runs", type=int, default=20, help="timed runs per configuration (default 20)")
    p.add_argument("--warmup", type=int, default=3, help="untimed runs after the first (default 3)")
    p.add_argument("--sessions", type=int, default=1, metavar="N",
                   help="browser sessions per configuration, one after another (default 1); each median "
                        "is then the median of the sessions' medians and each ratio the median of the "
                        "sessions' ratios, its range shown beside it")
    p.add_argument("--settle-ms", type=float, default=SETTLE_MS,
                   help="idle time before each timed run, so that one system's spinning threads do "
                        f"not slow the next system's run (default {SETTLE_MS:g})")
    p.add_argument("--sparsities", type=_list(float), default=None,
                   help="comma-separated fractions of the 1x1 weights pruned (default 0.5,0.7,0.8,0.9 for "
                        "the built-in models); given with your own files, each is also timed pruned "
                        "one-shot at every sparsity and --blocks size, LiteRT.js on the same zeros")
    p.add_argument("--blocks", type=_list(int), default=[1, 4], help="pysparse pruning blocks (default 1,4)")
    p.add_argument("--systems", type=_list(str), default=list(DEFAULT_SYSTEMS),
                   help=f"comma-separated subset of {','.join(SYSTEMS)} (default {','.join(DEFAULT_SYSTEMS)}; "
                        "litert is LiteRT.js, tflite the legacy tfjs-tflite)")
    p.add_argument("--legacy-tflite", action="store_true",
                   help="also time the legacy TFLite-wasm (@tensorflow/tfjs-tflite) on LiteRT.js's files")
    p.add_argument("--out", default="build/bench", help="output folder (default build/bench)")
    p.add_argument("--smoke", action="store_true",
                   help="quick check: hand_landmark_lite, 1 thread, 3 runs, 80%% sparsity, pysparse and litert")
    p.add_argument("--no-profile", action="store_true", help="skip pysparse's per-layer profile")
    p.add_argument("--engine-build", action="append", type=Path, default=[], metavar="DIR",
                   help="also time every pysparse configuration on the engine build in DIR (the "
                        "pysparse-*.mjs/.wasm files of `make -C wasm wasm DIST=DIR`, e.g. from another "
                        "revision), in the same page, rows labelled '@NAME' (DIR's name); repeatable")
    add_import_limit(p)
    add_format_option(p)
    p.set_defaults(func=run)


def engine_builds(dirs) -> dict:
    """NAME -> folder for each --engine-build folder, which must hold every engine variant."""
    out = {}
    for d in dirs:
        files = {f.name for f in d.iterdir()} if d.is_dir() else set()
        missing = [f"pysparse-{v}.{ext}" for v in ("simd", "simd-threads", "relaxed", "relaxed-threads")
                   for ext in ("mjs", "wasm") if f"pysparse-{v}.{ext}" not in files]
        if missing:
            raise FileNotFoundError(f"{d}: not an engine build (missing {', '.join(missing)})")
        name = d.resolve().name
        if name in out or not re.fullmatch(r"[A-Za-z0-9_-]+", name):
            raise ValueError(f"{d}: engine builds need distinct folder names of letters, digits, - and _")
        out[name] = d
    return out


def run(args) -> int:
    import playwright  # noqa: F401  (checked first: without it nothing here can run)
    from rich.console import Console

    from ..bench import report
    from ..bench.runtimes import ALL_MODELS, SPARSITIES, SYSTEMS
    from ..bench.suite import run_benchmark

    pruned_files = args.sparsities is not None  # the user's files are pruned only when asked
    if args.sparsities is None:
        args.sparsities = list(SPARSITIES)
    if args.smoke:
        args.models, args.threads, args.runs, args.warmup = ["hand_landmark_lite"], [1], 3, 1
        args.sparsities, args.blocks, args.systems = [0.8], [1], ["pysparse", "litert"]
    if args.legacy_tflite and "tflite" not in args.systems:
        args.systems.append("tflite")
    if args.models is None:
        args.models = [] if args.files else list(ALL_MODELS)
    for f in args.files:
        if not f.is_file():
            raise FileNotFoundError(f"{f}: no such model file")
    unknown = set(args.models) - set(ALL_MODELS)
    if unknown:
        raise ValueError(f"unknown model(s) {sorted(unknown)}; known: {', '.join(ALL_MODELS)}")
    if set(args.systems) - set(SYSTEMS):
        raise ValueError(f"systems must be among {', '.join(SYSTEMS)}")
    if args.runs < 1 or args.sessions < 1 or any(t < 1 for t in args.threads) \
            or any(not 0 < s < 1 for s in args.sparsities):
        raise ValueError("runs, sessions and threads must be >= 1, sparsities in (0, 1)")
    engines = engine_builds(args.engine_build)
    console = Console()
    record = run_benchmark(args.models, threads=args.threads, runs=args.runs, warmup=args.warmup,
                           sparsities=args.sparsities, blocks=args.blocks, systems=args.systems,
                           out_dir=args.out, profile=not args.no_profile, console=console, files=args.files,
                           settle_ms=args.settle_ms, engines=engines, repeat=args.sessions,
                           file_sparsities=args.sparsities if pruned_files else (),
                           max_import_elements=args.max_import_elements)
    report.print_table(record, console, args.table)
    console.print(f"results: {args.out}/results.json; charts: {', '.join(record['charts'])}", soft_wrap=True)
    problems = report.validate(record)
    for p in problems:
        console.print(f"[yellow]warning:[/yellow] {p}")
    return 0
