"""`pysparse prune MODEL --sparsity 0.8 -o OUT.spnn`: one-shot magnitude pruning, then pack."""
from __future__ import annotations

from pathlib import Path

from . import add_import_limit

SPNN_MAGIC = b"SPNN"


def add_parser(sub) -> None:
    p = sub.add_parser("prune", help="prune a model one-shot by weight magnitude and pack it",
                       description="Import MODEL (.tflite, .onnx or .spnn), zero the smallest weights of its "
                                   "1x1 convolutions and fully connected layers (see docs/pruning.md for the "
                                   "rule), print the per-layer sparsity and write OUT.spnn. Without "
                                   "fine-tuning, accuracy falls quickly beyond 50-70%: check with "
                                   "`pysparse sensitivity`, or fine-tune (pysparse distill).")
    p.add_argument("model", type=Path, help="source model (.tflite, .onnx, .spnn)")
    p.add_argument("-o", "--output", type=Path, required=True, help="the .spnn file to write")
    p.add_argument("--sparsity", type=float, required=True, help="fraction of each pruned layer's weights to zero")
    p.add_argument("--block", type=int, choices=(1, 2, 4), default=1,
                   help="prune blocks of this many consecutive output channels together (default 1)")
    p.add_argument("--scope", choices=("layer", "global"), default="layer",
                   help="rank weights per layer (each layer gets the sparsity) or across all pruned layers")
    p.add_argument("--exclude", action="append", default=[], metavar="PATTERN",
                   help="leave layers whose weight name matches this glob dense (repeatable)")
    p.add_argument("--include", action="append", default=[], metavar="PATTERN",
                   help="prune layers matching this glob even where the default rule would not (repeatable)")
    p.add_argument("--weights", choices=("fp32", "fp16"), default=None,
                   help="storage of the weights (default: the source's precision, as `pysparse pack`)")
    p.add_argument("--calibrate", action="store_true",
                   help="choose the zeros from activations on calibration images and refit the kept weights "
                        "by least squares, layer by layer (much closer to the dense model; needs torch)")
    p.add_argument("--images", type=Path, nargs="+", default=None,
                   help="calibration photos (default: for a hand landmark model, hands framed as the tracker "
                        "frames them, from the training sources of `pysparse distill`; else the hand photos "
                        "of pysparse.assets)")
    p.add_argument("--calibration-size", type=int, default=64,
                   help="calibration inputs (default 64)")
    add_import_limit(p)
    p.set_defaults(func=run)


def load_any(path: Path, max_elements: int | None = None):
    """An optimised graph from a .tflite/.onnx/.spnn file, and the `source` metadata entry
    (`max_elements`: the import bound of `load_model`)."""
    from ..format.reader import read_spnn
    from ..importers import load_model
    from ..pack import SOURCE_FORMATS, sha256_file
    from ..passes import optimize
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such model file")
    data = path.read_bytes()
    if data[:4] == SPNN_MAGIC:
        graph = read_spnn(data).graph
        source = dict(graph.metadata.get("source") or {})
    else:
        graph = load_model(path, max_elements=max_elements)
        source = {"file": path.name, "sha256": sha256_file(path), "bytes": len(data),
                  "format": SOURCE_FORMATS.get(path.suffix.lower(), path.suffix.lstrip("."))}
    return optimize(graph), source


def hand_crops(path: Path, graph, count: int):
    """Calibration inputs for a hand landmark model: `count` augmented hand crops (and images
    without hands) of the distillation training sources, framed as the tracker frames hands
    (docs/pruning.md: they calibrate far better than whole photos). None for other models, or
    when the sources are not installed."""
    from ..modelinfo import info_for
    if info_for(path).get("task") != "hand_landmark":
        return None
    from ..training import augment, distill, sources
    try:
        train = sources.train_sources()
    except (FileNotFoundError, OSError) as e:
        print(f"calibrating on photos: the hand image sources are not installed ({e})")
        return None
    images, _ = distill.build_pool(distill.Teacher(graph), train, count, seed=0)
    return augment.to_input(images)


def run(args) -> int:
    from rich.console import Console

    from ..format.reader import read_spnn
    from ..pack import pack, same_file, source_precision, write_atomic
    from ..prune import ir_report, oneshot, rich_table
    if not 0.0 <= args.sparsity < 1.0:
        raise ValueError(f"--sparsity must be in [0, 1), got {args.sparsity}")
    if same_file(args.model, args.output):
        raise ValueError(f"refusing to overwrite the source model {args.model}")
    if not args.output.parent.is_dir():
        raise FileNotFoundError(f"output folder {args.output.parent} does not exist")
    graph, source = load_any(args.model, args.max_import_elements)
    weights = args.weights or source_precision(graph)  # judged before pruning refits anything
    rule = dict(exclude=args.exclude, include=args.include)
    if args.calibrate:
        import torch  # noqa: F401  (checked first: the refit runs on it)

        from .. import assets
        from ..prune.reconstruct import photo_inputs, reconstruct
        if args.scope != "layer":
            raise ValueError("--calibrate prunes each layer to the sparsity: use it with --scope layer")
        if args.calibration_size < 1:
            raise ValueError(f"--calibration-size must be >= 1, got {args.calibration_size}")
        inputs = hand_crops(args.model, graph, args.calibration_size) if not args.images else None
        if inputs is None:
            photos = args.images or [assets.photo_path(n) for n in assets.PHOTOS]
            inputs = photo_inputs(graph, photos, args.calibration_size)
        pruned = reconstruct(graph, inputs, args.sparsity, args.block, **rule)
        method = "calibrated one-shot (activation-aware masks, least-squares refit)"
    else:
        pruned = oneshot(graph, args.sparsity, args.block, scope=args.scope, **rule)
        method = "one-shot magnitude"
    meta = {"source": source, "pruning": {"method": method, "sparsity": args.sparsity,
                                          "block": args.block, "scope": args.scope}}
    data = pack(pruned, weights=weights, metadata=meta)
    back = read_spnn(data)  # what we write must read back
    write_atomic(args.output, data)
    console = Console()
    if not console.is_terminal:  # logs and pipes: do not crop the tables to 80 columns
        console = Console(width=120)
    console.print(rich_table(ir_report(pruned, args.block, **rule), f"{args.model.name}: per-layer sparsity"))
    layers = back.metadata.get("layers", [])
    n_sparse = sum(1 for x in layers if x["encoding"] == "sparse")
    console.print(f"wrote {args.output}: {len(data):,} bytes, {n_sparse}/{len(layers)} weights stored sparse "
                  f"({weights})")
    return 0
