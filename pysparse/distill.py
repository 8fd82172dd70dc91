"""Prune a hand landmark model while distilling it from the dense original.

    python -m pysparse.distill --model hand_landmark_full --sparsity 0.8 --block 4 -o out/hand_full_80b4.spnn
    python -m pysparse.distill --smoke -o /tmp/smoke.spnn      # a few steps: proves the pipeline, times a step

The dense model is the teacher: its outputs (landmarks, world landmarks, presence,
handedness) on every training image are computed once and cached. The student is a copy
of the same graph as a torch module (pysparse.torch_module), pruned gradually to the
target sparsity (pysparse.prune.GradualPruner) while it learns to match the teacher. The
result is packed fp16 (`.spnn`), read back, and compared with the dense model on held-out
real images with the numpy reference.

Images come from registry packages only (npm fingerpose@0.1.0, MIT): three 480x640 hand
photos and the 43 frames of fingers-lq.gif. Held out for evaluation, never trained on:
halfcurl.jpg and GIF frames 36-42 (frames 32-35 are skipped, so that no training frame
is a neighbour of an evaluation frame). Training images are crops around the hand (found by
the dense model itself) with rotation, scale, shift, mirror flips, colour jitter, blur,
noise and the background swapped for other content. Flips need no label care: the
teacher's handedness is computed on the flipped image itself.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import assets

SIZE = 224  # the hand landmark models' input
GIF = "fingerpose/assets/fingers-lq.gif"
TRAIN_PHOTOS = ("hand_nocurl.jpg", "hand_fullcurl.jpg")
EVAL_PHOTOS = ("hand_halfcurl.jpg",)
TRAIN_FRAMES = range(0, 32)
EVAL_FRAMES = range(36, 43)
GIF_HAND_BOX = (225.0, 135.0, 150.0)  # centre x, y and side of a first guess at the GIF's hand
# Hand skeleton (MediaPipe's 21 landmarks) for the hand mask used when swapping backgrounds.
FINGERS = ((0, 1, 2, 3, 4), (0, 5, 6, 7, 8), (9, 10, 11, 12), (13, 14, 15, 16), (0, 17, 18, 19, 20))
PALM = (0, 1, 5, 9, 13, 17)
CACHE_VERSION = 1


# -- images and regions of interest ---------------------------------------------------------

def source_images(split: str) -> list[tuple[str, "Image.Image"]]:
    """(name, RGB image) of the training or evaluation split."""
    from PIL import Image, ImageSequence
    photos = TRAIN_PHOTOS if split == "train" else EVAL_PHOTOS
    frames = TRAIN_FRAMES if split == "train" else EVAL_FRAMES
    out = [(p, Image.open(assets.photo_path(p)).convert("RGB")) for p in photos]
    gif = Image.open(assets.node_modules() / GIF)
    for i, frame in enumerate(ImageSequence.Iterator(gif)):
        if i in frames:
            out.append((f"fingers-lq.gif#{i}", frame.convert("RGB")))
    return out


def crop(img, cx: float, cy: float, side: float, angle: float = 0.0, flip: bool = False, size: int = SIZE):
    """The square of `side` pixels centred on (cx, cy), rotated by `angle` degrees, as a
    size x size image (bilinear; outside the image: edge-free black)."""
    from PIL import Image
    s = side / size
    c, n = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    fx = -1.0 if flip else 1.0
    # output pixel (u, v) -> source (x, y): centre + R * S * (u - size/2, v - size/2)
    a, b = c * s * fx, -n * s
    d, e = n * s * fx, c * s
    h = size / 2.0
    coeffs = (a, b, cx - a * h - b * h, d, e, cy - d * h - e * h)
    return img.transform((size, size), Image.AFFINE, coeffs, resample=Image.BILINEAR)


def to_input(images: np.ndarray) -> np.ndarray:
    """uint8 [N, H, W, 3] -> float32 NCHW in [0, 1] (the models' input range)."""
    return (images.astype(np.float32) / 255.0).transpose(0, 3, 1, 2).copy()


def find_roi(teacher, img, box: tuple) -> tuple:
    """(cx, cy, side) around the hand: crop, run the teacher, centre on its landmarks, repeat."""
    cx, cy, side = box
    for _ in range(3):
        x = to_input(np.asarray(crop(img, cx, cy, side))[None])
        lm = teacher(x)["landmarks"][0, :, :2]  # in crop pixels
        lo, hi = lm.min(axis=0), lm.max(axis=0)
        mid = (lo + hi) / 2 * side / SIZE
        cx, cy = cx - side / 2 + mid[0], cy - side / 2 + mid[1]
        side = 1.6 * float((hi - lo).max()) * side / SIZE
    return cx, cy, side


# -- the teacher --------------------------------------------------------------------------------

OUTPUTS = ("landmarks", "presence", "handedness", "world")  # hand_landmark's outputs, in order


class Teacher:
    """The dense model as a batched torch module (equal to the reference; tested)."""

    def __init__(self, graph):
        import torch

        from .torch_module import GraphModule
        # channels_last: PyTorch's CPU convolutions (depthwise above all) run 2-3x faster
        self.module = GraphModule(graph).eval().to(memory_format=torch.channels_last)
        self.torch = torch

    def __call__(self, x: np.ndarray, batch: int = 32) -> dict:
        outs = {k: [] for k in OUTPUTS}
        with self.torch.no_grad():
            for i in range(0, len(x), batch):
                xb = self.torch.from_numpy(x[i:i + batch]).contiguous(memory_format=self.torch.channels_last)
                ys = self.module(xb)
                for k, y in zip(OUTPUTS, ys):
                    outs[k].append(y.numpy())
        res = {k: np.concatenate(v) for k, v in outs.items()}
        res["landmarks"] = res["landmarks"].reshape(-1, 21, 3)
        res["world"] = res["world"].reshape(-1, 21, 3)
        return res


# -- augmentation -----------------------------------------------------------------------------

def backgrounds() -> list:
    """Background photos from the registries: matplotlib's sample photo (the GIF's scene is
    added by the caller; gradients and textures are made on the fly)."""
    from PIL import Image
    import matplotlib
    out = []
    hopper = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    if hopper.exists():
        out.append(Image.open(hopper).convert("RGB"))
    return out


def hand_mask(landmarks: np.ndarray, size: int = SIZE):
    """A soft mask of the hand from its 21 landmarks: thick finger strokes and the palm."""
    from PIL import Image, ImageDraw, ImageFilter
    m = Image.new("L", (size, size), 0)
    d = ImageDraw.Draw(m)
    pts = [tuple(map(float, p)) for p in landmarks[:, :2]]
    span = float(np.ptp(landmarks[:, :2], axis=0).max())
    width = max(4, int(0.16 * span))
    d.polygon([pts[i] for i in PALM], fill=255)
    for f in FINGERS:
        d.line([pts[i] for i in f], fill=255, width=width, joint="curve")
        for i in f:
            r = width / 2
            d.ellipse([pts[i][0] - r, pts[i][1] - r, pts[i][0] + r, pts[i][1] + r], fill=255)
    # the forearm below the wrist stays (MediaPipe's crops show it too)
    wrist, mid = np.array(pts[0]), np.array(pts[9])
    down = wrist + (wrist - mid) * 1.5
    d.line([tuple(wrist), tuple(down)], fill=255, width=int(width * 2.2))
    return m.filter(ImageFilter.GaussianBlur(max(1.0, width / 4)))


def random_background(rng, bgs, size: int = SIZE):
    from PIL import Image
    kind = rng.integers(3)
    if kind == 0 and bgs:
        src = bgs[rng.integers(len(bgs))]
        side = rng.uniform(0.3, 1.0) * min(src.size)
        cx = rng.uniform(side / 2, src.size[0] - side / 2)
        cy = rng.uniform(side / 2, src.size[1] - side / 2)
        return crop(src, cx, cy, side, rng.uniform(-180, 180), bool(rng.integers(2)), size)
    if kind == 1:  # smooth colour gradient
        a, b = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
        t = np.linspace(0, 1, size)[:, None, None]
        g = a * (1 - t) + b * t
        g = np.broadcast_to(g, (size, size, 3))
        if rng.integers(2):
            g = g.transpose(1, 0, 2)
        return Image.fromarray(g.astype(np.uint8))
    blobs = rng.uniform(0, 255, (8, 8, 3)).astype(np.uint8)  # blotchy texture
    return Image.fromarray(blobs).resize((size, size), Image.BICUBIC)


def augment(rng, img, roi: tuple, bgs, teacher_lm: np.ndarray | None):
    """One augmented 224x224 crop (uint8 HWC). `teacher_lm`: the hand's landmarks in the plain
    ROI crop, for the background swap (None: no swap)."""
    from PIL import Image, ImageEnhance, ImageFilter
    cx, cy, side = roi
    scale = math.exp(rng.uniform(math.log(0.8), math.log(1.3)))
    angle = rng.normal(0, 25) if rng.random() < 0.85 else rng.uniform(-180, 180)
    flip = bool(rng.integers(2))
    dx, dy = rng.normal(0, 0.08, 2) * side
    out = crop(img, cx + dx, cy + dy, side * scale, angle, flip)
    if teacher_lm is not None and rng.random() < 0.5:
        # the same transform applied to the plain crop's landmarks gives the hand's mask here
        mask = crop(hand_mask(teacher_lm), SIZE / 2 + dx * SIZE / side, SIZE / 2 + dy * SIZE / side,
                    SIZE * scale, angle, flip)
        out = Image.composite(out, random_background(rng, bgs), mask)
    out = ImageEnhance.Brightness(out).enhance(rng.uniform(0.6, 1.4))
    out = ImageEnhance.Contrast(out).enhance(rng.uniform(0.6, 1.4))
    out = ImageEnhance.Color(out).enhance(rng.uniform(0.5, 1.5))
    if rng.random() < 0.3:
        out = out.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.8)))
    a = np.asarray(out, np.float32)
    a = a * rng.uniform(0.85, 1.15, 3)  # white balance
    if rng.random() < 0.5:
        a = a + rng.normal(0, rng.uniform(2, 10), a.shape)
    return np.clip(a, 0, 255).astype(np.uint8)


# -- the dataset: augmented images and cached teacher outputs ----------------------------------

@dataclass
class Dataset:
    images: np.ndarray  # uint8 [N, 224, 224, 3]
    targets: dict  # OUTPUTS -> arrays from the teacher
    names: list


def build_train_set(teacher, n: int, seed: int, progress=True) -> Dataset:
    from tqdm import tqdm
    rng = np.random.default_rng(seed)
    sources = source_images("train")
    bgs = backgrounds() + [img for name, img in sources if name.startswith("fingers")][:1]
    rois, plain_lm = [], []
    for name, img in sources:
        box = GIF_HAND_BOX if name.startswith("fingers") else (img.width / 2, img.height / 2, float(max(img.size)))
        roi = find_roi(teacher, img, box)
        rois.append(roi)
        plain_lm.append(teacher(to_input(np.asarray(crop(img, *roi))[None]))["landmarks"][0])
    images = np.empty((n, SIZE, SIZE, 3), np.uint8)
    names = []
    for i in tqdm(range(n), desc="augmenting", disable=not progress, unit="img"):
        k = int(rng.integers(len(sources)))
        images[i] = augment(rng, sources[k][1], rois[k], bgs, plain_lm[k])
        names.append(sources[k][0])
    targets = {k: [] for k in OUTPUTS}
    for i in tqdm(range(0, n, 64), desc="teacher", disable=not progress, unit="batch"):
        t = teacher(to_input(images[i:i + 64]))
        for k in OUTPUTS:
            targets[k].append(t[k])
    return Dataset(images, {k: np.concatenate(v) for k, v in targets.items()}, names)


def build_eval_set(teacher) -> Dataset:
    """Held-out images: each evaluation source's ROI crop, plus fixed variations of it."""
    sources = source_images("eval")
    crops, names = [], []
    for name, img in sources:
        box = GIF_HAND_BOX if name.startswith("fingers") else (img.width / 2, img.height / 2, float(max(img.size)))
        cx, cy, side = find_roi(teacher, img, box)
        for angle, scale, flip in ((0, 1.0, False), (20, 1.1, False), (-20, 0.9, True)):
            crops.append(np.asarray(crop(img, cx, cy, side * scale, angle, flip)))
            names.append(f"{name} rot{angle} x{scale}{' flip' if flip else ''}")
    images = np.stack(crops)
    return Dataset(images, teacher(to_input(images)), names)


def cached_train_set(teacher, model: str, n: int, seed: int, cache_dir: Path) -> Dataset:
    key = hashlib.sha256(json.dumps([CACHE_VERSION, model, n, seed]).encode()).hexdigest()[:16]
    path = cache_dir / f"{model}-{n}-{seed}-{key}.npz"
    if path.exists():
        z = np.load(path, allow_pickle=False)
        return Dataset(z["images"], {k: z[k] for k in OUTPUTS}, [str(s) for s in z["names"]])
    ds = build_train_set(teacher, n, seed)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, images=ds.images, names=np.array(ds.names), **ds.targets)
    tmp.replace(path)
    return ds


# -- training -----------------------------------------------------------------------------------

def distill_loss(student_out, target: dict, torch):
    """Landmarks (pixels / 224; depth weighted down), world landmarks (x10: tens of cm),
    presence and handedness as cross-entropy against the teacher's probabilities."""
    lm, presence, handed, world = student_out
    b = lm.shape[0]
    lm = lm.reshape(b, 21, 3) / SIZE
    t_lm = target["landmarks"] / SIZE
    w = torch.tensor([1.0, 1.0, 0.3], dtype=lm.dtype)
    l_lm = (torch.nn.functional.smooth_l1_loss(lm, t_lm, reduction="none", beta=0.01) * w).mean() * 3
    l_world = torch.nn.functional.smooth_l1_loss(world.reshape(b, 21, 3) * 10, target["world"] * 10, beta=0.01)
    eps = 1e-6
    bce = torch.nn.functional.binary_cross_entropy
    l_pres = bce(presence.clamp(eps, 1 - eps), target["presence"])
    l_hand = bce(handed.clamp(eps, 1 - eps), target["handedness"])
    return l_lm + 0.5 * l_world + 0.1 * (l_pres + l_hand), {
        "landmarks": l_lm.item(), "world": l_world.item(), "presence": l_pres.item(), "handedness": l_hand.item()}


def train(graph, data: Dataset, sparsity: float, block: int, steps: int, batch: int, lr: float, seed: int,
          log_path: Path | None, exclude=(), gradual: bool = True, eval_fn=None, eval_every: int = 0):
    """Fine-tunes `graph` against the teacher's outputs in `data`. gradual: prune by the
    polynomial schedule over the first 70% of the steps; otherwise `graph` is already pruned
    (e.g. by `reconstruct`) and its zeros are kept fixed from the first step."""
    import torch
    from tqdm import tqdm

    from .prune import GradualPruner
    from .torch_module import GraphModule
    torch.manual_seed(seed)
    student = GraphModule(graph).train().to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(student.parameters(), lr=lr)
    prune_end = max(1, int(steps * 0.7)) if gradual else 0  # gradual: the last 30% recover at full sparsity
    pruner = GradualPruner(student, target=sparsity, block=block, begin_step=0, end_step=prune_end,
                           frequency=max(1, prune_end // 20), exclude=exclude, optimizer=opt)
    if not gradual:
        pruner.update_masks(sparsity)  # the zeros already there (they rank first)
        pruner.apply_masks()
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    rng = np.random.default_rng(seed)
    log = open(log_path, "a") if log_path else None
    times, cpu = [], []
    bar = tqdm(range(steps), desc=f"distilling to {sparsity:.0%} (block {block})", unit="step")
    for step in bar:
        t0, c0 = time.perf_counter(), time.process_time()
        idx = rng.integers(len(data.images), size=batch)
        x = torch.from_numpy(to_input(data.images[idx])).contiguous(memory_format=torch.channels_last)
        target = {k: torch.from_numpy(v[idx]) for k, v in data.targets.items()}
        out = student(x)
        loss, parts = distill_loss(out, target, torch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        pruner.step()
        sched.step()
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)  # what counts on a shared machine
        bar.set_postfix(loss=f"{loss.item():.4f}", sparsity=f"{pruner.current_sparsity:.2f}")
        if eval_fn is not None and eval_every and (step + 1) % eval_every == 0:
            student.eval()
            bar.write(f"step {step + 1}: {eval_fn(student)}")
            student.train()
        if log:
            log.write(json.dumps({"step": step, "loss": loss.item(), **parts, "sparsity": pruner.current_sparsity,
                                  "lr": sched.get_last_lr()[0], "seconds": times[-1],
                                  "cpu_seconds": cpu[-1]}) + "\n")
            log.flush()
    if log:
        log.close()
    report = pruner.finalize()
    return student.to_graph(), report, times, cpu


# -- evaluation ---------------------------------------------------------------------------------

def landmark_distance(pred: np.ndarray, ref: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per image: mean distance of the 21 (x, y) landmarks [..., 21, 2] to the reference's, in
    pixels and as a fraction of hand size (the longer side of the reference landmarks' box)."""
    dist = np.linalg.norm(pred - ref, axis=-1).mean(axis=-1)
    hand_size = np.ptp(ref, axis=-2).max(axis=-1)
    return dist, dist / np.maximum(hand_size, 1e-6)


def evaluate(dense_graph, pruned_graph, data: Dataset) -> dict:
    """The pruned model (as packed) against the dense one, both run by the numpy reference."""
    from . import reference
    name = dense_graph.inputs[0]
    dists, rel, pres, hand = [], [], [], []
    for img in data.images:
        x = {name: to_input(img[None])}
        d = reference.run(dense_graph, x)
        p = reference.run(pruned_graph, x)
        (dl, dp, dh, _), (pl, pp, ph, _) = ([r[o] for o in dense_graph.outputs] for r in (d, p))
        dl, pl = dl.reshape(21, 3)[:, :2], pl.reshape(21, 3)[:, :2]
        dist, fraction = landmark_distance(pl, dl)
        dists.append(float(dist))
        rel.append(float(fraction))
        pres.append(bool((dp.item() > 0.5) == (pp.item() > 0.5)))
        hand.append(bool((dh.item() > 0.5) == (ph.item() > 0.5)))
    return {"images": data.names, "landmark_px": dists, "landmark_hand_fraction": rel,
            "mean_landmark_px": float(np.mean(dists)), "mean_landmark_hand_fraction": float(np.mean(rel)),
            "presence_agreement": float(np.mean(pres)), "handedness_agreement": float(np.mean(hand))}


def held_out_probe(data: Dataset):
    """A quick check during training: the student's mean landmark distance to the teacher on
    the held-out crops (torch, float32 weights; the report's figures come from the packed file)."""
    import torch
    x = torch.from_numpy(to_input(data.images))
    t = data.targets["landmarks"][:, :, :2]

    def probe(module) -> str:
        with torch.no_grad():
            lm = module(x)[0].reshape(-1, 21, 3)[:, :, :2].numpy()
        dist, fraction = landmark_distance(lm, t)
        return f"held-out landmark distance {dist.mean():.2f} px = {fraction.mean():.2%} of hand size"
    return probe


def quality_line(q: dict) -> str:
    return (f"held-out images ({len(q['images'])}): mean landmark distance {q['mean_landmark_px']:.2f} px at "
            f"224x224 = {q['mean_landmark_hand_fraction']:.2%} of hand size; presence agreement "
            f"{q['presence_agreement']:.0%}, handedness agreement {q['handedness_agreement']:.0%}")


# -- command line -------------------------------------------------------------------------------

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pysparse.distill", description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="hand_landmark_full", choices=("hand_landmark_full", "hand_landmark_lite"))
    ap.add_argument("--sparsity", type=float, default=0.8)
    ap.add_argument("--block", type=int, choices=(1, 2, 4), default=1)
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--batch", type=int, default=12)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--images", type=int, default=1536, help="augmented training images (teacher outputs cached)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument("--exclude", action="append", default=[], metavar="PATTERN", help="layers left dense")
    ap.add_argument("--init", choices=("calibrated", "gradual"), default="calibrated",
                    help="calibrated: prune once with activation-aware masks and a least-squares refit "
                         "(pysparse.prune.reconstruct), then fine-tune with the zeros fixed; gradual: "
                         "magnitude pruning on a schedule during fine-tuning")
    ap.add_argument("--calibration", type=int, default=64, help="training images to calibrate on (--init calibrated)")
    ap.add_argument("--eval-every", type=int, default=100, metavar="STEPS",
                    help="print the held-out landmark distance every STEPS steps (0: never)")
    ap.add_argument("--prune-heads", action="store_true",
                    help="prune the fully connected output heads too (default: the 1x1 convolutions only)")
    ap.add_argument("--cache", type=Path, default=assets.ROOT / "build" / "distill-cache")
    ap.add_argument("-o", "--output", type=Path, required=True, help="the pruned model (.spnn, fp16)")
    ap.add_argument("--smoke", action="store_true", help="a few steps on a few images: check the pipeline, time a step")
    args = ap.parse_args(argv)
    import torch

    from .format.reader import read_spnn
    from .importers import load_model
    from .pack import pack, write_atomic
    from .passes import optimize
    from .prune import ir_layers, ir_report, text_table
    from .prune.reconstruct import reconstruct
    if args.smoke:
        args.steps, args.images, args.batch = min(args.steps, 6), min(args.images, 48), min(args.batch, 8)
    if not args.output.parent.is_dir():
        raise SystemExit(f"output folder {args.output.parent} does not exist")
    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    cpu_start = time.process_time()
    dense = optimize(load_model(assets.model_path(args.model + ".tflite")))
    teacher = Teacher(dense)
    t0 = time.perf_counter()
    data = (build_train_set(teacher, args.images, args.seed) if args.smoke
            else cached_train_set(teacher, args.model, args.images, args.seed, args.cache))
    t_data = time.perf_counter() - t0
    held_out = build_eval_set(teacher)
    log_path = args.output.with_suffix(".log.jsonl")
    log_path.unlink(missing_ok=True)
    exclude = list(args.exclude)
    if not args.prune_heads:  # the heads map features to coordinates directly: every weight counts
        exclude += [layer.name for layer in ir_layers(dense) if layer.kind == "fc"]
    start, calibrated_quality, t_calib = dense, None, 0.0
    if args.init == "calibrated":
        t0 = time.perf_counter()
        start = reconstruct(dense, to_input(data.images[:args.calibration]), args.sparsity, args.block,
                            exclude=exclude, seed=args.seed)
        t_calib = time.perf_counter() - t0
        calibrated_quality = evaluate(dense, start, held_out)
        print(f"calibrated pruning ({t_calib:.0f} s): {quality_line(calibrated_quality)}", flush=True)
    if args.steps > 0:
        trained, layer_report, times, cpu = train(start, data, args.sparsity, args.block, args.steps, args.batch,
                                                  args.lr, args.seed, log_path, exclude,
                                                  gradual=args.init == "gradual", eval_fn=held_out_probe(held_out),
                                                  eval_every=args.eval_every)
    else:
        trained, layer_report, times, cpu = start, ir_report(start, args.block, exclude=exclude), [0.0], [0.0]
    blob = pack(trained, weights="fp16", metadata={
        "source": {"file": args.model + ".tflite", "format": "tflite"},
        "pruning": {"method": "gradual magnitude + distillation", "sparsity": args.sparsity, "block": args.block,
                    "init": args.init, "steps": args.steps, "batch": args.batch, "images": args.images,
                    "seed": args.seed}})
    shipped = read_spnn(blob).graph  # evaluate exactly what is shipped (fp16 weights)
    quality = evaluate(dense, shipped, held_out)
    write_atomic(args.output, blob)
    step_s = float(np.median(times[1:] if len(times) > 1 else times))
    step_cpu = float(np.median(cpu[1:] if len(cpu) > 1 else cpu))
    report = {"model": args.model, "output": str(args.output), "bytes": len(blob), "sparsity": args.sparsity,
              "block": args.block, "steps": args.steps, "batch": args.batch, "train_images": args.images,
              "seconds_per_step": step_s, "cpu_seconds_per_step": step_cpu, "seconds_data": t_data,
              "wall_seconds": time.perf_counter() - t_start, "cpu_seconds": time.process_time() - cpu_start,
              "held_out": {"photos": list(EVAL_PHOTOS), "gif_frames": [EVAL_FRAMES.start, EVAL_FRAMES.stop - 1]},
              "init": args.init, "seconds_calibration": t_calib, "quality_after_calibration": calibrated_quality,
              "quality": quality, "layers": [r.as_dict() for r in layer_report]}
    report_path = args.output.with_suffix(".report.json")
    write_atomic(report_path, (json.dumps(report, indent=1) + "\n").encode())
    print(text_table(layer_report))
    print(quality_line(quality))
    print(f"{step_s:.2f} s ({step_cpu:.2f} CPU-s) per step of {args.batch} images; {args.steps} steps took "
          f"{sum(times):.0f} s ({sum(cpu):.0f} CPU-s); "
          f"data {t_data:.0f} s; wrote {args.output} ({len(blob):,} bytes), {report_path}, {log_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
