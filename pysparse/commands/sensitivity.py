"""`pysparse sensitivity MODEL -o report.png`: how much each layer tolerates pruning."""
from __future__ import annotations

import json
from pathlib import Path

from . import add_import_limit


def add_parser(sub) -> None:
    p = sub.add_parser("sensitivity", help="prune one layer at a time and measure the output error",
                       description="For every layer the pruning rule selects, prune only that layer one-shot "
                                   "at each level and measure the model's output error relative to the dense "
                                   "model (numpy reference) on real photos and seeded noise. Prints a table, "
                                   "writes a heat map (PNG) and the numbers (JSON).")
    p.add_argument("model", type=Path, help="model (.tflite, .onnx, .spnn)")
    p.add_argument("-o", "--output", type=Path, required=True, help="the chart to write (.png)")
    p.add_argument("--json", type=Path, default=None, help="the numbers (default: OUTPUT with .json)")
    p.add_argument("--images", type=Path, nargs="*", default=None,
                   help="input photos (default: the three hand photos of pysparse.assets)")
    p.add_argument("--noise", type=int, default=2, help="seeded noise inputs besides the photos (default 2)")
    p.add_argument("--levels", default="0.5,0.7,0.8,0.9,0.95", help="comma-separated sparsities")
    p.add_argument("--block", type=int, choices=(1, 2, 4), default=1)
    p.add_argument("--exclude", action="append", default=[], metavar="PATTERN")
    p.add_argument("--include", action="append", default=[], metavar="PATTERN")
    add_import_limit(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from rich.console import Console
    from rich.progress import Progress
    from rich.table import Table

    from .. import assets
    from ..pack import write_atomic
    from ..prune.report import short_name
    from ..prune.sensitivity import analyse, image_inputs, plot
    from .prune import load_any
    levels = [float(v) for v in args.levels.split(",") if v.strip()]
    if not levels or any(not 0.0 < v < 1.0 for v in levels):
        raise ValueError(f"--levels must be sparsities in (0, 1), got {args.levels!r}")
    if args.output.suffix.lower() != ".png":
        raise ValueError(f"the chart is a PNG: {args.output} should end in .png")
    json_path = args.json or args.output.with_suffix(".json")
    for out in (args.output, json_path):
        if not out.parent.is_dir():
            raise FileNotFoundError(f"output folder {out.parent} does not exist")
        if out.resolve() == args.model.resolve():
            raise ValueError(f"refusing to overwrite the model {args.model}")
    photos = args.images if args.images is not None else [assets.photo_path(n) for n in assets.PHOTOS]
    graph, _ = load_any(args.model, args.max_import_elements)
    inputs, names = image_inputs(graph, photos, args.noise)
    if not inputs:
        raise ValueError("no inputs: give --images or --noise N")
    console = Console()
    if not console.is_terminal:  # logs and pipes: do not crop the tables to 80 columns
        console = Console(width=120)
    with Progress(console=console, transient=True) as bar:
        task = bar.add_task("pruning one layer at a time", total=None)

        class Step:
            total = None

            def __call__(self, n):
                bar.update(task, advance=n, total=self.total)
        result = analyse(graph, inputs, levels, args.block, args.exclude, args.include, names, Step())
    table = Table(title=f"{args.model.name}: output error with one layer pruned (block {args.block})",
                  caption=f"relative L2 error of the outputs vs the dense model (mean over the outputs); "
                          f"inputs: {', '.join(names)}")
    table.add_column("layer", no_wrap=True)
    table.add_column("weights", justify="right", no_wrap=True)
    for lv in levels:
        table.add_column(f"{lv:.0%}", justify="right", no_wrap=True)
    for layer in result.layers:
        table.add_row(short_name(layer["name"]), f"{layer['weights']:,}",
                      *[f"{result.error(layer, lv):.4f}" for lv in levels])
    console.print(table)
    plot(result, args.output, f"{args.model.name}: output error with one layer pruned")
    write_atomic(json_path, (json.dumps(result.as_dict(), indent=1) + "\n").encode())
    console.print(f"wrote {args.output} and {json_path}")
    return 0
