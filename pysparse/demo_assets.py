"""Build-time assets of the demo: its packed models and its bundled clip.

    python -m pysparse.demo_assets          # a fast no-op when everything is up to date
    python -m pysparse.demo_assets --force  # rebuild everything

Models (demo/models/, build output): palm detection and hand landmarks packed dense
(fp16 and fp32), and the landmark model sparse at 70/80/87/90% of its 1x1 multiply-adds removed.
Fine-tuned sparse models, where committed, are used as they are; otherwise the sparse ones
are pruned one-shot here (magnitude, no retraining) and labelled so on the page.
`demo/models/manifest.json` lists them for the page.

Clip (demo/assets/, build output): a short 640x480 sequence made from real hand photos of
the npm `fingerpose` package (the frames of its animated GIF, then its three stills with
smooth pans, zooms and rotations), as JPEG frames the page steps through one by one, as a
`.y4m` for Chromium's `--use-file-for-fake-video-capture`, and as `.mjpeg`. The stills are
copied next to it.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import math
import os
import sys
from pathlib import Path

from . import assets as _assets
from .fsutil import write_atomic

ROOT = Path(__file__).resolve().parent.parent
DEMO = _assets.static_root() / "demo"
# Where the built models and clip go: demo/ in a checkout; an installed wheel's demo/ may
# not be writable, so there they go to the cache and the server serves them from it.
BUILD = DEMO if _assets.in_checkout() else _assets.cache_dir() / "demo"
MODELS_OUT = BUILD / "models"
ASSETS_OUT = BUILD / "assets"

CLIP_SIZE = (640, 480)
CLIP_FPS = 15
SPARSITIES = (70, 80, 87, 90)
PALM_MODEL = "palm_detection_full.tflite"
LANDMARK_MODEL = "hand_landmark_full.tflite"
PRUNE_BLOCK = 1  # unstructured: what the one-shot magnitude pruning keeps best
STILLS = ("hand_nocurl.jpg", "hand_halfcurl.jpg", "hand_fullcurl.jpg")
GIF_PHOTO = "fingerpose/assets/fingers-lq.gif"
# Committed fine-tuned sparse landmark models, looked for in this order; named
# hand_landmark_full.s{70,80,90}.spnn.
FINETUNED_DIRS = (ROOT / "models" / "sparse", ROOT / "demo" / "finetuned", DEMO / "finetuned")


# -- small helpers ----------------------------------------------------------------------

def _fingerprint(paths: list[Path], extra: str = "") -> str:
    """Hash of the inputs' names, sizes and contents' first and last bytes (cheap, and
    changes whenever a real input changes)."""
    h = hashlib.sha256(extra.encode())
    for p in paths:
        st = p.stat()
        h.update(f"{p.name}:{st.st_size}".encode())
        with open(p, "rb") as f:
            h.update(f.read(65536))
            if st.st_size > 65536:
                f.seek(-65536, os.SEEK_END)
                h.update(f.read())
    return h.hexdigest()


def _up_to_date(manifest: Path, key: str) -> bool:
    try:
        m = json.loads(manifest.read_text())
    except (OSError, ValueError):
        return False
    if m.get("key") != key:
        return False
    return all((manifest.parent / f).is_file() for f in m.get("files", []))


# -- the clip -------------------------------------------------------------------------

def _smooth(t: float) -> float:
    return t * t * (3 - 2 * t)


def _border_color(img):
    import numpy as np
    a = np.asarray(img.convert("RGB"), dtype=np.float32)
    edge = np.concatenate([a[0], a[-1], a[:, 0], a[:, -1]])
    return tuple(int(v) for v in np.median(edge, axis=0))


def _still_frames(photo, n: int, motion: dict):
    """n frames of a still photo placed in the clip frame, moving smoothly: zoom, rotation
    (degrees) and pan (fraction of the frame) go from their first to their second value."""
    from PIL import Image
    W, H = CLIP_SIZE
    fill = _border_color(photo)
    base = H / photo.height  # the whole photo's height fits the frame
    frames = []
    for i in range(n):
        t = _smooth(i / max(1, n - 1))
        lerp = lambda k: motion[k][0] + (motion[k][1] - motion[k][0]) * t  # noqa: E731
        zoom, angle = base * lerp("zoom"), math.radians(lerp("rotate"))
        px, py = lerp("pan_x") * W, lerp("pan_y") * H
        # Inverse map for Image.transform: frame pixel -> photo pixel (rotate about the
        # frame centre, scale, then centre the photo).
        c, s = math.cos(angle) / zoom, math.sin(angle) / zoom
        cx, cy = W / 2 + px, H / 2 + py
        a, b = c, s
        d, e = -s, c
        off_x = photo.width / 2 - (a * cx + b * cy)
        off_y = photo.height / 2 - (d * cx + e * cy)
        frames.append(photo.transform((W, H), Image.Transform.AFFINE, (a, b, off_x, d, e, off_y),
                                      resample=Image.Resampling.BICUBIC, fillcolor=fill))
    return frames


def clip_frames():
    """The bundled clip as a list of RGB PIL images of CLIP_SIZE, and one label per frame."""
    from PIL import Image, ImageSequence

    from . import assets
    frames, labels = [], []
    gif = Image.open(assets.node_modules() / GIF_PHOTO)
    for i, f in enumerate(ImageSequence.Iterator(gif)):
        frames.append(f.convert("RGB").resize(CLIP_SIZE, Image.Resampling.BICUBIC))
        labels.append(f"fingers-lq.gif frame {i}")
    motions = {
        "hand_nocurl.jpg": dict(zoom=(0.9, 1.1), rotate=(-12, 10), pan_x=(-0.12, 0.08), pan_y=(0.0, -0.03)),
        "hand_halfcurl.jpg": dict(zoom=(1.1, 0.9), rotate=(8, -8), pan_x=(0.10, -0.06), pan_y=(-0.03, 0.02)),
        "hand_fullcurl.jpg": dict(zoom=(0.95, 1.05), rotate=(-6, 6), pan_x=(-0.05, 0.05), pan_y=(0.02, 0.0)),
    }
    for name, motion in motions.items():
        photo = Image.open(assets.photo_path(name)).convert("RGB")
        for j, f in enumerate(_still_frames(photo, 20, motion)):
            frames.append(f)
            labels.append(f"{name} frame {j}")
    return frames, labels


def _y4m(frames) -> bytes:
    """YUV4MPEG2, 4:2:0, BT.601 limited range (what Chromium's file capture reads)."""
    import numpy as np
    W, H = CLIP_SIZE
    out = io.BytesIO()
    out.write(f"YUV4MPEG2 W{W} H{H} F{CLIP_FPS}:1 Ip A1:1 C420jpeg\n".encode())
    for img in frames:
        rgb = np.asarray(img, dtype=np.float32)
        r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
        y = 16 + (65.481 * r + 128.553 * g + 24.966 * b) / 255
        u = 128 + (-37.797 * r - 74.203 * g + 112.0 * b) / 255
        v = 128 + (112.0 * r - 93.786 * g - 18.214 * b) / 255
        sub = lambda p: p.reshape(H // 2, 2, W // 2, 2).mean(axis=(1, 3))  # noqa: E731
        out.write(b"FRAME\n")
        for plane in (y, sub(u), sub(v)):
            out.write(np.clip(np.rint(plane), 0, 255).astype(np.uint8).tobytes())
    return out.getvalue()


def build_clip(out: Path = ASSETS_OUT, force: bool = False, quiet: bool = False) -> bool:
    """Writes the clip and stills under `out`; returns whether anything was rebuilt."""
    from . import assets
    inputs = [assets.node_modules() / GIF_PHOTO] + [assets.photo_path(n) for n in STILLS]
    key = _fingerprint(inputs + [Path(__file__)], f"{CLIP_SIZE}{CLIP_FPS}")
    manifest = out / "clip.json"
    if not force and _up_to_date(manifest, key):
        return False
    frames, labels = clip_frames()
    names = []
    mjpeg = io.BytesIO()
    for i, f in enumerate(frames):
        buf = io.BytesIO()
        f.save(buf, "JPEG", quality=90)
        names.append(f"clip/{i:03d}.jpg")
        write_atomic(out / names[-1], buf.getvalue())
        mjpeg.write(buf.getvalue())
    write_atomic(out / "clip.y4m", _y4m(frames))
    write_atomic(out / "clip.mjpeg", mjpeg.getvalue())
    stills = []
    for n in STILLS:
        stills.append(f"stills/{n}")
        write_atomic(out / stills[-1], assets.photo_path(n).read_bytes())
    meta = {"key": key, "width": CLIP_SIZE[0], "height": CLIP_SIZE[1], "fps": CLIP_FPS,
            "frames": names, "labels": labels, "stills": stills,
            "y4m": "clip.y4m", "mjpeg": "clip.mjpeg",
            "source": "photos of the npm package fingerpose@0.1.0 (MIT)",
            "files": names + stills + ["clip.y4m", "clip.mjpeg"]}
    write_atomic(manifest, json.dumps(meta, indent=1).encode())
    if not quiet:
        print(f"built {out}/clip.* ({len(frames)} frames, {CLIP_SIZE[0]}x{CLIP_SIZE[1]})")
    return True


# -- the models -------------------------------------------------------------------------

def _finetuned(sparsity: int) -> Path | None:
    for d in FINETUNED_DIRS:
        p = d / f"hand_landmark_full.s{sparsity}.spnn"
        if p.is_file():
            return p
    return None


def model_plan() -> list[dict]:
    """What demo/models/ holds: file name, source, how it is packed, label for the page."""
    palm = PALM_MODEL.removesuffix(".tflite")
    lm = LANDMARK_MODEL.removesuffix(".tflite")
    plan = [
        dict(file=f"{palm}.fp16.spnn", role="palm", source=PALM_MODEL, weights="fp16", sparsity=0, label="dense fp16"),
        dict(file=f"{palm}.fp32.spnn", role="palm", source=PALM_MODEL, weights="fp32", sparsity=0, label="dense fp32"),
        dict(file=f"{lm}.fp16.spnn", role="landmark", source=LANDMARK_MODEL, weights="fp16", sparsity=0, label="dense fp16"),
        dict(file=f"{lm}.fp32.spnn", role="landmark", source=LANDMARK_MODEL, weights="fp32", sparsity=0, label="dense fp32"),
    ]
    for s in SPARSITIES:
        ft = _finetuned(s)
        plan.append(dict(file=f"{lm}.s{s}.spnn", role="landmark", source=str(ft) if ft else LANDMARK_MODEL,
                         weights="fp16", sparsity=s, finetuned=bool(ft),
                         label=f"{s}% sparse, " + ("fine-tuned" if ft else "one-shot pruned, not fine-tuned")))
    return plan


def _source(name: str, sources: Path | None) -> Path:
    """A source model: from `sources` (the user's folder) when given, else the models cache."""
    from . import assets
    return sources / name if sources is not None else assets.model_path(name)


def _pack_one(entry: dict, sources: Path | None = None) -> bytes:
    if entry.get("finetuned"):
        return Path(entry["source"]).read_bytes()
    from .importers import load_model
    from .pack import pack
    graph = load_model(_source(entry["source"], sources))
    if entry["sparsity"]:
        from .prune import oneshot
        graph = oneshot(graph, entry["sparsity"] / 100, PRUNE_BLOCK)
    meta = {"demo_label": entry["label"]}
    # Dense models stay dense everywhere; pruned ones let the packer's cost model choose
    # each layer's encoding.
    return pack(graph, weights=entry["weights"], sparse=None if entry["sparsity"] else False, metadata=meta)


def build_models(out: Path = MODELS_OUT, force: bool = False, quiet: bool = False,
                 source_dir: Path | None = None) -> bool:
    """Packs the demo's models into `out` from the cached .tflite models (or those in
    `source_dir`); returns whether anything was rebuilt."""
    plan = model_plan()
    sources = sorted({Path(e["source"]) if e.get("finetuned") else _source(e["source"], source_dir) for e in plan})
    # The tool chain's own sources are inputs too: a packer change repacks the models.
    tool_files = sorted(p for d in ("importers", "passes", "prune", "format") for p in (ROOT / "pysparse" / d).glob("*.py"))
    tool_files += [p for p in (ROOT / "pysparse" / "pack.py", ROOT / "pysparse" / "ir.py") if p.is_file()]
    key = _fingerprint(sources + tool_files + [Path(__file__)], json.dumps(plan))
    manifest = out / "manifest.json"
    if not force and _up_to_date(manifest, key):
        return False
    for entry in plan:
        blob = _pack_one(entry, source_dir)
        write_atomic(out / entry["file"], blob)
        entry["bytes"] = len(blob)
        # Where it came from: the .tflite by name, a fine-tuned file by its path in the checkout.
        src = Path(entry["source"])
        if not entry.get("finetuned"):
            entry["source"] = src.name
        else:
            entry["source"] = str(src.relative_to(ROOT) if src.is_relative_to(ROOT) else src)
        if not quiet:
            print(f"packed {out / entry['file']} ({len(blob)} bytes, {entry['label']})")
    meta = {"key": key, "models": plan, "files": [e["file"] for e in plan],
            "palm": plan[0]["file"], "dense": plan[2]["file"],
            "sparse": {str(e["sparsity"]): e["file"] for e in plan if e["sparsity"]}}
    write_atomic(manifest, json.dumps(meta, indent=1).encode())
    return True


def prepare(user_models: Path | None = None, quiet: bool = False) -> str | None:
    """Makes the demo's models and clip where they are missing or stale; returns None when
    the demo is ready, else one line saying why not.

    The source models are the user's (`user_models` holding PALM_MODEL and LANDMARK_MODEL),
    else the models cache, filled from npm's @mediapipe/hands (found locally or fetched from
    the registry); the clip's photos come from npm's fingerpose the same way."""
    from . import assets
    source_dir = None
    if user_models is not None and all((Path(user_models) / m).is_file() for m in (PALM_MODEL, LANDMARK_MODEL)):
        source_dir = Path(user_models)
    try:
        if source_dir is None:
            assets.extract(quiet=quiet, names=assets.HAND_MODELS)
        if not all((assets.node_modules() / p).is_file() for p in assets.PHOTOS.values()) \
                and not assets.in_checkout() and "PYSPARSE_NODE_MODULES" not in os.environ:
            assets.fetch_npm_packages(quiet=quiet)
        build_clip(quiet=quiet)
        build_models(quiet=quiet, source_dir=source_dir)
    except (OSError, ValueError) as e:
        return (f"the demo's models could not be made ({e}); put {LANDMARK_MODEL} and {PALM_MODEL} "
                f"in the --models folder to make them from your own files")
    return None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pysparse.demo_assets", description=__doc__.split("\n\n")[0])
    ap.add_argument("--force", action="store_true", help="rebuild even when up to date")
    ap.add_argument("--clip-only", action="store_true", help="build the clip, not the models")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)
    build_clip(force=args.force, quiet=args.quiet)
    if not args.clip_only:
        build_models(force=args.force, quiet=args.quiet)
    return 0


if __name__ == "__main__":
    sys.exit(main())
