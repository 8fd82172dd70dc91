"""`pysparse evaluate DENSE CANDIDATE...`: how closely hand landmark models follow the dense one."""
from __future__ import annotations

import json
from pathlib import Path

from ..tables import add_format_option
from . import add_import_limit


def add_parser(sub) -> None:
    p = sub.add_parser("evaluate", help="compare hand landmark models with the dense one on hand images",
                       description="Mean and p90 landmark error (fraction of hand size, on crops where the dense "
                                   "model sees a hand), presence agreement and, where there is a hand, handedness agreement of each candidate with "
                                   "the dense model, and of MediaPipe's hand_landmark_lite as the yardstick. "
                                   "Images: a folder (224x224 crops as they are; larger images are searched for "
                                   "the hand with the dense model), or by default the validation sources of "
                                   "`pysparse distill`, which it never trains on.")
    p.add_argument("dense", type=Path, help="the dense model (.tflite, .onnx, .spnn)")
    p.add_argument("candidates", type=Path, nargs="+", help="models to compare with it")
    p.add_argument("--images", type=Path, default=None, help="a folder of hand images")
    p.add_argument("--no-yardstick", action="store_true", help="leave hand_landmark_lite out")
    p.add_argument("--json", type=Path, default=None, help="write the figures here too")
    add_format_option(p)
    add_import_limit(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from .. import assets
    from ..pack import write_atomic
    from ..tables import Table, emit
    from ..training import distill, evaluate as E, sources as S
    from .prune import load_any
    dense = load_any(args.dense, args.max_import_elements)[0]
    teacher = distill.Teacher(dense)
    if args.images:
        images, names = E.image_crops(teacher, E.image_paths(args.images))
    else:
        images, names = distill.validation_set(teacher, S.split(S.all_sources(), "validation"))
    ref = E.run_graph(dense, images)
    candidates = [(str(p), p) for p in args.candidates]
    if not args.no_yardstick:
        try:
            candidates.append(("hand_landmark_lite (yardstick)", assets.model_path("hand_landmark_lite.tflite")))
        except FileNotFoundError:
            pass
    table = Table(f"against {args.dense.name} on {len(images)} crops ({int((ref.presence > 0.5).sum())} with a hand)",
                  ["model", "mean landmark error", "p90", "presence agrees", "handedness agrees"], right={1, 2, 3, 4})
    results = {}
    for label, path in candidates:
        q = E.compare(ref, E.run_graph(load_any(path, args.max_import_elements)[0], images), names, by_source=True)
        results[label] = q
        table.add(*E.line(label, q))
    emit(table, args.table)
    by_source = Table("by source (validation sources are never trained on)",
                      ["model", "source", "crops", "mean landmark error", "p90", "presence agrees", "handedness agrees"],
                      right={2, 3, 4, 5, 6}, keys=(0, 1))
    for label, q in results.items():
        for src, qs in q.get("by_source", {}).items():
            cells = E.line(label, qs)
            by_source.add(cells[0], src, qs["crops"], *cells[1:])
    emit(by_source, args.table)
    if args.json:
        write_atomic(args.json, (json.dumps({"dense": str(args.dense), "crops": names, "results": results},
                                            indent=1) + "\n").encode())
    return 0
