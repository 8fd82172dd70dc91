"""`pysparse pack MODEL -o OUT.spnn`: import a model and pack it."""
from __future__ import annotations

import argparse
from pathlib import Path

from . import add_import_limit

RESIZE_MODES = ("stretch", "letterbox")


def _numbers(*counts):
    """An argparse type: comma-separated numbers, as many as one of `counts`."""
    def parse(text: str) -> list[float]:
        try:
            values = [float(v) for v in text.split(",")]
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r}: expected comma-separated numbers") from None
        if len(values) not in counts:
            raise argparse.ArgumentTypeError(f"{text!r}: expected {' or '.join(map(str, counts))} numbers")
        return values
    return parse


def input_metadata(args) -> dict:
    """The metadata `input` fields the --input-* flags give."""
    fields = {}
    if args.input_range is not None:
        if args.input_range[0] == args.input_range[1]:
            raise ValueError("--input-range: LO and HI must differ")
        fields["range"] = args.input_range
    if args.input_mean is not None:
        fields["mean"] = args.input_mean * (3 // len(args.input_mean))
    if args.input_std is not None:
        if 0 in args.input_std:
            raise ValueError("--input-std: a std of 0")
        fields["std"] = args.input_std * (3 // len(args.input_std))
    if args.input_resize is not None:
        fields["resize"] = args.input_resize
    return fields


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
    pix = p.add_argument_group("pixel inputs", "how the runtimes turn an image into the model's input "
                               "(recorded in the file's metadata; the JS run() and `pysparse run` apply it)")
    pix.add_argument("--input-range", type=_numbers(2), metavar="LO,HI",
                     help="the values pixel 0 and 255 map to (default: the model's known range, else 0,1; "
                          "write --input-range=-1,1 when LO is negative)")
    pix.add_argument("--input-mean", type=_numbers(1, 3), metavar="M[,G,B]",
                     help="subtracted per channel after the range mapping")
    pix.add_argument("--input-std", type=_numbers(1, 3), metavar="S[,G,B]",
                     help="divides per channel after the mean")
    pix.add_argument("--input-resize", choices=RESIZE_MODES,
                     help="stretch the image to the input size, or letterbox it (keep its aspect ratio, "
                          "black bars)")
    p.add_argument("--batch", type=int, default=None, metavar="N",
                   help="take N images per run (inputs [N, C, H, W]) from a batch-1 model")
    add_import_limit(p)
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
        if args.batch is not None:
            from ..passes import with_batch
            return with_batch(graph, args.batch)
        return graph

    pixels = input_metadata(args)
    data = pack_file(args.model, args.output, args.weights, args.sparse, metadata={"input": pixels} if pixels else None,
                     graph_hook=note_precision, max_elements=args.max_import_elements)
    f = read_spnn(data)  # what we wrote must read back
    layers = f.metadata.get("layers", [])
    n_sparse = sum(1 for x in layers if x["encoding"] == "sparse")
    src = args.model.stat().st_size
    print(f"wrote {args.output}: {len(data)} bytes ({100 * len(data) / src:.1f}% of {args.model.name}), "
          f"{len(f.graph.ops)} ops, {weights['chosen']} weights, {n_sparse}/{len(layers)} sparse, "
          f"arena {f.arena_bytes} bytes")
    return 0
