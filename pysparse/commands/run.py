"""`pysparse run FILE.spnn --input image.png`: run a packed model with the numpy reference."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..errors import InputShapeError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


def add_parser(sub) -> None:
    p = sub.add_parser("run", help="run a .spnn model on an image or .npy array (numpy reference)",
                       description="Run FILE.spnn with the numpy reference executor. An image is resized to "
                                   "the model's input size (stretched or letterboxed) and mapped to the value "
                                   "range, mean and std its metadata gives; "
                                   "a .npy array must have the input's shape (a missing batch axis is added).")
    p.add_argument("file", type=Path, help="a .spnn file")
    p.add_argument("--input", "-i", type=Path, action="append", required=True,
                   help="image (png, jpg, ...) or .npy array; repeat once per model input, in order")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--values", type=int, default=8, help="how many leading values of each output to show")
    p.set_defaults(func=run)


def _fit(im, width: int, height: int, resize: str):
    """`im` resized to width x height: stretched, or letterboxed (aspect ratio kept, centred
    on black, as the JS runtime does)."""
    from PIL import Image
    if resize != "letterbox":
        return im.resize((width, height), Image.BILINEAR)
    scale = min(width / im.width, height / im.height)
    inner = im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))), Image.BILINEAR)
    canvas = Image.new(im.mode, (width, height))
    canvas.paste(inner, ((width - inner.width) // 2, (height - inner.height) // 2))
    return canvas


def load_image(path: Path, shape: tuple, value_range, mean=None, std=None, resize: str = "stretch") -> np.ndarray:
    """NCHW float32 of an image file, resized to shape's H x W (see _fit), RGB mapped
    0..255 -> range, then less `mean`, over `std` per channel (the metadata's `input`)."""
    from PIL import Image, UnidentifiedImageError
    if len(shape) != 4 or shape[1] not in (1, 3):
        raise InputShapeError(f"the model's input {tuple(shape)} is not an NCHW image with 1 or 3 channels")
    try:
        with Image.open(path) as im:
            im = _fit(im.convert("RGB" if shape[1] == 3 else "L"), shape[3], shape[2], resize)
            pixels = np.asarray(im, dtype=np.float32)
    except UnidentifiedImageError:
        raise InputShapeError(f"{path}: not an image Pillow can read") from None
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    lo, hi = (float(v) for v in value_range)
    x = lo + (hi - lo) * pixels / 255.0
    channels = pixels.shape[2]
    x = (x - np.resize(np.asarray(mean if mean is not None else 0.0, np.float32), channels)) \
        / np.resize(np.asarray(std if std is not None else 1.0, np.float32), channels)
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None], dtype=np.float32)


def load_array(path: Path, shape: tuple) -> np.ndarray:
    try:
        x = np.load(path, allow_pickle=False)
    except ValueError as e:
        raise InputShapeError(f"{path}: not a .npy array ({e})") from None
    if x.shape == tuple(shape[1:]) and shape[:1] == (1,):
        x = x[None]
    if x.shape != tuple(shape):
        raise InputShapeError(f"{path}: array of shape {x.shape}, the model expects {tuple(shape)}")
    return x.astype(np.float32)


def run(args) -> int:
    from .. import reference
    from ..format import read_spnn_file
    f = read_spnn_file(args.file)
    g = f.graph
    if len(args.input) != len(g.inputs):
        raise InputShapeError(f"the model has {len(g.inputs)} inputs {g.inputs}, {len(args.input)} given")
    pixel_meta = f.metadata.get("input") or {}
    value_range = pixel_meta.get("range", [0.0, 1.0])
    inputs = {}
    for name, path in zip(g.inputs, args.input):
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such file")
        shape = g.tensors[name].shape
        inputs[name] = load_array(path, shape) if path.suffix.lower() == ".npy" else load_image(
            path, shape, value_range, pixel_meta.get("mean"), pixel_meta.get("std"), pixel_meta.get("resize", "stretch"))
    outputs = reference.run(g, inputs)
    meanings = {o.get("name"): o.get("meaning", "") for o in f.metadata.get("outputs") or [] if isinstance(o, dict)}
    report = []
    for name, y in outputs.items():
        flat = y.reshape(-1)
        report.append({"name": name, "shape": list(y.shape), "meaning": meanings.get(name, ""),
                       "min": float(flat.min()), "max": float(flat.max()), "mean": float(flat.mean()),
                       "values": [float(v) for v in flat[: max(args.values, 0)]]})
    if args.json:
        print(json.dumps({"file": str(args.file), "outputs": report}, indent=1))
    else:
        for r in report:
            head = ", ".join(f"{v:.5g}" for v in r["values"])
            more = ", ..." if int(np.prod(r["shape"])) > len(r["values"]) else ""
            meaning = f" ({r['meaning']})" if r["meaning"] else ""
            print(f"{r['name']}{meaning}: shape {r['shape']}, min {r['min']:.5g}, max {r['max']:.5g}, "
                  f"mean {r['mean']:.5g}: [{head}{more}]")
    return 0
