"""`pysparse pack MODEL -o OUT.spnn`: import a model and pack it."""
from __future__ import annotations

from pathlib import Path


def add_parser(sub) -> None:
    p = sub.add_parser("pack", help="pack a .tflite/.onnx model into a .spnn file",
                       description="Import MODEL, optimise it, choose each layer's weight encoding and "
                                   "write OUT.spnn (atomically; MODEL is never overwritten).")
    p.add_argument("model", type=Path, help="source model (.tflite, .onnx)")
    p.add_argument("-o", "--output", type=Path, required=True, help="the .spnn file to write")
    p.add_argument("--weights", choices=("fp32", "fp16", "int8"), default=None,
                   help="storage of convolution and fully connected weights (biases stay fp32); "
                        "default: the source's precision (fp16 when every weight is a float16 value, "
                        "as in fp16 TFLite models, else fp32)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--sparse", dest="sparse", action="store_const", const=True, default=None,
                      help="store every 1x1 convolution and fully connected weight sparse")
    mode.add_argument("--dense", dest="sparse", action="store_const", const=False,
                      help="store every weight dense")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..format import read_spnn
    from ..pack import pack_file, source_precision
    if not args.model.is_file():
        raise FileNotFoundError(f"{args.model}: no such model file")
    weights = {"chosen": args.weights}

    def note_precision(graph):
        if weights["chosen"] is None:
            weights["chosen"] = f"{source_precision(graph)} (as the source)"

    data = pack_file(args.model, args.output, args.weights, args.sparse, graph_hook=note_precision)
    f = read_spnn(data)  # what we wrote must read back
    layers = f.metadata.get("layers", [])
    n_sparse = sum(1 for x in layers if x["encoding"] == "sparse")
    src = args.model.stat().st_size
    print(f"wrote {args.output}: {len(data)} bytes ({100 * len(data) / src:.1f}% of {args.model.name}), "
          f"{len(f.graph.ops)} ops, {weights['chosen']} weights, {n_sparse}/{len(layers)} sparse, "
          f"arena {f.arena_bytes} bytes")
    return 0
