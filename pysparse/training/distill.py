"""Prune a hand landmark model and distil it from the dense original.

    pysparse distill --sparsity 0.87 -o hand_landmark_full.s87.spnn        # CPU or CUDA
    pysparse distill --smoke -o /tmp/smoke.spnn                             # a few steps

Recipe:
1. Per-layer sparsity from sensitivity at a fixed budget of effective multiply-adds
   (`pysparse.prune.allocate`); `--uniform` prunes every layer to the same fraction.
2. Calibrated pruning (`pysparse.prune.reconstruct`): activation-aware masks and a
   least-squares refit, layer by layer.
3. Fine-tuning with the zeros fixed, against the dense model run on the same batch: its four
   outputs (landmarks, world landmarks, presence and handedness logits) and its
   intermediate features (every residual block's output and the pooled features), on a pool
   of augmented images from the training sources (`pysparse.training.sources`), a fresh
   mirror or rotation by quarter turns per batch. Checkpoints every few hundred steps;
   `--resume` goes on from the last one.
4. The result is packed fp16, read back, and evaluated against the dense model on the
   validation sources (no person, drawing style or photo of theirs is trained on).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import time
from pathlib import Path

import numpy as np

from .. import assets
from ..prune.schedule import PolynomialSchedule
from . import augment as A
from . import sources as S
from .evaluate import Outputs, compare, module_outputs

POOL_VERSION = 5
NEGATIVE_SHARE = 0.12  # images without hands in the pool
DRAWING_SHARE = 0.3  # of the images with hands
RAMP_EVERY = 50  # steps between two mask updates while a run prunes further
HAND_SHARE = 0.5  # a hand's size as a share of the crop, roughly, as the tracker frames it


def device_of(name: str):
    import torch
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


class Teacher:
    """The dense model as a batched torch module: outputs, logits and features."""

    def __init__(self, graph, device=None):
        import torch

        from ..torch_module import GraphModule
        self.torch = torch
        self.device = device or torch.device("cpu")
        # channels_last: PyTorch's CPU convolutions (depthwise above all) run 2-3x faster
        self.module = GraphModule(graph).eval().to(self.device, memory_format=torch.channels_last)
        self.features = feature_tensors(graph)
        self.logits = logit_tensors(graph)

    def tensors(self, x):
        """{name: tensor} of the outputs, logits and features for a float batch (no grad)."""
        with self.torch.no_grad():
            v = self.module.values([x])
        names = list(self.module.graph.outputs) + self.logits + self.features
        return {n: v[n] for n in names}

    def __call__(self, x: np.ndarray, batch: int = 32) -> dict:
        """Outputs as numpy arrays (landmarks [N, 21, 3], presence, handedness, world)."""
        return module_outputs(self.module, x, batch, self.device).as_dict()


def feature_tensors(graph) -> list[str]:
    """Every residual block's output and the pooled features: what the student copies."""
    names = [op.outputs[0] for op in graph.ops if op.type == "ADD"]
    names += [op.outputs[0] for op in graph.ops if op.type == "MEAN"]
    return names


def logit_tensors(graph) -> list[str]:
    """The inputs of the output sigmoids (presence and handedness logits)."""
    by_out = {op.outputs[0]: op for op in graph.ops}
    return [by_out[o].inputs[0] for o in graph.outputs if o in by_out and by_out[o].type == "SIGMOID"]


# -- data ------------------------------------------------------------------------------------

def prepare(teacher, sources) -> list:
    """(item, roi, plain landmarks or None) for every item with a hand."""
    out = []
    for s in sources:
        if s.kind == "background":
            continue
        for item in s.items:
            roi = A.find_roi(teacher, item.image, item.box)
            lm = None
            if item.image.mode == "RGB":
                lm = teacher(A.to_input(np.asarray(A.crop(item.image, *roi))[None]))["landmarks"][0]
            out.append((s, item, roi, lm))
    return out


def build_pool(teacher, train_sources, n: int, seed: int, progress: bool = True):
    """`n` augmented images (uint8 [n, 224, 224, 3]) from the training sources, and the
    source of each."""
    from tqdm import tqdm
    rng = np.random.default_rng(seed)
    hands = prepare(teacher, train_sources)
    photos = [it.image for s in train_sources if s.kind in ("background", "photo") for it in s.items]
    # by source, each source as likely as any other of its kind: a few photos of many people
    # weigh as much as many frames of one person
    by_source = {}
    for h in hands:
        by_source.setdefault(h[0].name, []).append(h)
    drawings = [g for g in by_source.values() if g[0][0].kind == "drawing"]
    real = [g for g in by_source.values() if g[0][0].kind == "photo"]
    images = np.empty((n, A.SIZE, A.SIZE, 3), np.uint8)
    names = []
    for i in tqdm(range(n), desc="augmenting", unit="img", disable=not progress):
        r = rng.random()
        if r < NEGATIVE_SHARE:
            images[i] = A.negative(rng, photos)
            names.append("no hand")
            continue
        kind = drawings if (r - NEGATIVE_SHARE) / (1 - NEGATIVE_SHARE) < DRAWING_SHARE else real
        group = kind[rng.integers(len(kind))]
        s, item, roi, lm = group[rng.integers(len(group))]
        images[i] = A.augment(rng, item.image, roi, photos, lm)
        names.append(f"{s.name}: {item.name}")
    return images, names


def cached_pool(teacher, train_sources, model: str, n: int, seed: int, cache_dir: Path):
    key = hashlib.sha256(json.dumps([POOL_VERSION, model, n, seed, [(s.name, len(s.items)) for s in train_sources]])
                         .encode()).hexdigest()[:16]
    path = cache_dir / f"pool-{model}-{n}-{seed}-{key}.npz"
    if path.exists():
        z = np.load(path, allow_pickle=False)
        return z["images"], [str(s) for s in z["names"]]
    images, names = build_pool(teacher, train_sources, n, seed)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, images=images, names=np.array(names))
    tmp.replace(path)
    return images, names


def validation_set(teacher, val_sources):
    """Crops of every validation item as a tracker frames them: for photos the hand's square,
    a rotated and tighter one, and a mirrored looser one; for drawings one of the three, on
    white or grey."""
    crops, names = [], []
    for k, (s, item, roi, _) in enumerate(prepare(teacher, val_sources)):
        cx, cy, side = roi
        framings = ((0, 1.0, False), (25, 0.8, False), (-20, 1.2, True))
        if s.kind == "drawing":  # one framing each, on white or grey: drawings are many
            framings = (framings[k % 3],)
        for angle, scale, flip in framings:
            img = A.on_plain(item.image, 255 if k % 2 else 128)
            crops.append(np.asarray(A.crop(img, cx, cy, side * scale, angle, flip)))
            names.append(f"{s.name}: {item.name} rot{angle} x{scale}{' flip' if flip else ''}")
    return np.stack(crops), names


# -- sparsity --------------------------------------------------------------------------------

def per_layer_sparsity(dense, images: np.ndarray, target: float, exclude, cache_dir: Path, model: str,
                       include=()) -> dict:
    """{layer: sparsity} at `target`'s budget of effective multiply-adds (cached sensitivity)."""
    from ..prune import allocate, sensitivity
    levels = (0.5, 0.7, 0.8, 0.9, 0.95, 0.98)
    extra = [list(include)] if include else []  # without it, the key of earlier caches
    key = hashlib.sha256(json.dumps([model, levels, len(images), list(exclude)] + extra).encode()).hexdigest()[:12]
    path = cache_dir / f"sensitivity-{model}-{key}.json"
    if path.exists():
        result = sensitivity.Sensitivity.from_dict(json.loads(path.read_text()))
    else:
        from tqdm import tqdm
        name = dense.inputs[0]
        inputs = [{name: A.to_input(img[None])} for img in images]
        bar = tqdm(desc="sensitivity", unit="run")
        result = sensitivity.analyse(dense, inputs, levels, exclude=exclude, include=include,
                                     progress=lambda k: bar.update(k))
        bar.close()
        cache_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result.as_dict()))
    return allocate.from_sensitivity(dense, result, target)


class FixedMasks:
    """Keeps a module's zero weights zero through training: gradients masked, and the
    weights masked again after every optimiser step. `prune_to` zeroes more of them."""

    def __init__(self, params: dict, optimizer):
        import torch
        self.masks = {n: (p.detach() != 0) for n, p in params.items()}
        self.params = params
        self.hooks = [p.register_hook(lambda g, n=n: g * self.masks[n].to(g.dtype)) for n, p in params.items()]
        self.hooks.append(optimizer.register_step_post_hook(lambda *_: self.apply()))
        self.torch = torch

    def apply(self):
        with self.torch.no_grad():
            for n, p in self.params.items():
                p.mul_(self.masks[n].to(p.dtype))

    def prune_to(self, sparsity: dict, block: int):
        """Each named layer's smallest units (by magnitude, the zeros first) dropped until it
        reaches its sparsity: masks only grow."""
        from ..prune import masks as M
        for n, s in sparsity.items():
            w = self.params[n].detach().cpu().numpy()
            self.masks[n] = self.torch.from_numpy(M.layer_mask(w, s, block)).to(self.params[n].device)
        self.apply()

    def remove(self):
        for h in self.hooks:
            h.remove()


def zero_share(params: dict, block: int = 1) -> dict:
    """{name: the fraction of the weight in units (block columns) that are all zero}."""
    from ..prune import masks as M
    out = {}
    for n, p in params.items():
        scores, sizes = M.unit_scores(p.detach().cpu().numpy(), block)
        out[n] = float(((scores == 0) * sizes[:, None]).sum() / max(1, p.numel()))
    return out


# -- the loss --------------------------------------------------------------------------------

def distill_loss(s: dict, t: dict, graph, feature_weight: float, torch, logit_weight: float = 0.05,
                 logit_loss: str = "smooth-l1", landmark_loss: str = "crop") -> tuple:
    """Landmarks (depth weighted down), world landmarks (x10: tens of cm), presence and
    handedness logits, and features (mean squared error relative to the teacher's mean
    square, per tensor). The landmarks are matched in units of the crop over every image
    (`crop`), or as the evaluation measures them (`hand`): in units of the teacher's hand
    size, each image weighted by the teacher's presence (its landmarks on an image without
    a hand mean nothing). The logits are matched by smooth L1 (`smooth-l1`) or by the
    cross-entropy against the teacher's probability less its own entropy (`bce`: zero when
    they agree, largest where the two sides of 0.5 differ)."""
    F = torch.nn.functional
    lm_name, pres_name, hand_name, world_name = graph.outputs
    b = t[lm_name].shape[0]
    lm = s[lm_name].reshape(b, 21, 3) / A.SIZE
    t_lm = t[lm_name].reshape(b, 21, 3) / A.SIZE
    w = torch.tensor([1.0, 1.0, 0.3], dtype=lm.dtype, device=lm.device)
    world = F.smooth_l1_loss(s[world_name].reshape(b, 21, 3) * 10, t[world_name].reshape(b, 21, 3) * 10,
                             reduction="none", beta=0.01)
    if landmark_loss == "hand":
        size = (t_lm[..., :2].amax(dim=1) - t_lm[..., :2].amin(dim=1)).amax(dim=1).clamp(min=0.1)
        hand = t[pres_name].reshape(b)
        share = hand / hand.sum().clamp(min=1e-3)
        # x HAND_SHARE: a hand fills about half the crop, so the term weighs what `crop`'s does
        per_image = (F.smooth_l1_loss(lm / size[:, None, None], t_lm / size[:, None, None], reduction="none",
                                      beta=0.01 / HAND_SHARE) * w).mean(dim=(1, 2)) * 3 * HAND_SHARE
        l_lm = (per_image * share).sum()
        l_world = (world.mean(dim=(1, 2)) * share).sum()
    else:
        l_lm = (F.smooth_l1_loss(lm, t_lm, reduction="none", beta=0.01) * w).mean() * 3
        l_world = world.mean()
    logits = logit_tensors(graph)
    if logit_loss == "bce":
        def logit_term(a, b):
            p = torch.sigmoid(b)
            return (F.binary_cross_entropy_with_logits(a, p) - F.binary_cross_entropy_with_logits(b, p))
    else:
        def logit_term(a, b):
            return F.smooth_l1_loss(a, b.clamp(-12, 12), beta=1.0)
    l_logit = sum(logit_term(s[n], t[n]) for n in logits) / max(1, len(logits))
    feats = feature_tensors(graph)
    l_feat = sum(((s[n] - t[n]) ** 2).mean() / ((t[n] ** 2).mean() + 1e-6) for n in feats) / max(1, len(feats))
    total = l_lm + 0.5 * l_world + logit_weight * l_logit + feature_weight * l_feat
    return total, {"landmarks": l_lm.item(), "world": l_world.item(), "logits": l_logit.item(),
                   "features": l_feat.item()}


def batch_views(x, rng, torch):
    """The batch mirrored and/or turned by quarter turns (the teacher labels the new view)."""
    if rng.random() < 0.5:
        x = torch.flip(x, dims=[3])
    k = int(rng.choice(4, p=(0.7, 0.1, 0.1, 0.1)))
    return torch.rot90(x, k, dims=[2, 3]) if k else x


# -- training --------------------------------------------------------------------------------

def train(start, teacher, pool: np.ndarray, steps: int, batch: int, lr: float, seed: int, device,
          feature_weight: float, log_path: Path, checkpoint: Path, checkpoint_every: int, resume: bool,
          probe=None, probe_every: int = 0, logit_weight: float = 0.05, logit_loss: str = "smooth-l1",
          start_weights: dict | None = None, ramp: tuple | None = None, phase: dict | None = None,
          ema: float = 0.0, landmark_loss: str = "crop"):
    """Fine-tunes the pruned graph `start` with its zeros fixed; returns the trained graph and
    the settings of every run that made it (`phase`, this run's, after those of the runs it
    resumes, which the checkpoint keeps).
    `start_weights`: a state dict to begin from instead of `start`'s weights. `ramp`:
    ({layer: sparsity}, steps, block): over the first `steps` steps each layer is pruned
    further, by magnitude, from its sparsity at step 0 to the given one (a cubic schedule
    that cuts fast at first and gently at the end), masks recomputed every RAMP_EVERY steps.
    `ema`: the decay of an exponential moving average of the weights, which is returned in
    place of the last step's weights (0: none)."""
    import torch
    from tqdm import tqdm

    from ..torch_module import GraphModule
    torch.manual_seed(seed)
    student = GraphModule(start).train().to(device, memory_format=torch.channels_last)
    graph = student.graph
    opt = torch.optim.Adam(student.parameters(), lr=lr)
    warm = min(100, steps // 10 + 1)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda k: min(1.0, (k + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(k, steps) / steps)))
    first = 0
    rng = np.random.default_rng(seed)
    if start_weights is not None:
        student.load_state_dict(start_weights)
    layers = {info.name: p for info, p in student.prunable_layers()}
    ramp_from = zero_share({n: layers[n] for n in ramp[0]}, ramp[2]) if ramp else None
    phases = [phase] if phase else []
    state = {}
    if resume and checkpoint.exists():
        state = torch.load(checkpoint, map_location=device, weights_only=False)
        student.load_state_dict(state["student"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        sched.base_lrs = [lr for _ in sched.base_lrs]  # --lr and --steps of this run shape the rest
        rng.bit_generator.state = state["rng"]
        first = state["step"]
        ramp_from = state.get("ramp_from", ramp_from)
        phases = (state.get("phases") or [{"note": "the runs before this one are not recorded"}]) + phases
        print(f"resumed from {checkpoint} at step {first}", flush=True)
    average = WeightAverage(student, ema) if ema else None  # from the weights this run starts with
    if average is not None and state.get("ema"):
        average.load_state_dict(state["ema"])
    pruned = {n: p for n, p in layers.items() if (p.detach() == 0).any() or (ramp and n in ramp[0])}
    masks = FixedMasks(pruned, opt)
    masks.apply()
    schedules = {}
    if ramp:
        targets, ramp_steps, block = ramp
        schedules = {n: PolynomialSchedule(max(t, ramp_from[n]), ramp_from[n], 0, ramp_steps, RAMP_EVERY)
                     for n, t in targets.items()}
    log = open(log_path, "a")
    bar = tqdm(range(first, steps), initial=first, total=steps, desc="distilling", unit="step")
    for step in bar:
        t0 = time.perf_counter()
        if any(sch.updates_at(step) for sch in schedules.values()):
            masks.prune_to({n: sch.sparsity(step) for n, sch in schedules.items()}, block)
        idx = rng.integers(len(pool), size=batch)
        x = torch.from_numpy(A.to_input(pool[idx])).to(device)
        x = batch_views(x, rng, torch).contiguous(memory_format=torch.channels_last)
        target = teacher.tensors(x)
        values = student.values([x], wanted=set(target))
        loss, parts = distill_loss(values, target, graph, feature_weight, torch, logit_weight, logit_loss,
                                   landmark_loss)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if average is not None:
            average.update()
        bar.set_postfix(loss=f"{loss.item():.4f}", lm=f"{parts['landmarks']:.4f}", feat=f"{parts['features']:.3f}")
        log.write(json.dumps({"step": step, "loss": loss.item(), **parts, "lr": sched.get_last_lr()[0],
                              "seconds": time.perf_counter() - t0}) + "\n")
        log.flush()
        done = step + 1
        if probe is not None and probe_every and done % probe_every == 0:
            student.eval()
            bar.write(f"step {done}: {probe(student)}")
            if average is not None:
                with average.swapped():
                    bar.write(f"step {done}, weights averaged: {probe(student)}")
            student.train()
        if checkpoint_every and (done % checkpoint_every == 0 or done == steps):
            tmp = checkpoint.with_suffix(".tmp")
            torch.save({"step": done, "student": student.state_dict(), "optimizer": opt.state_dict(),
                        "scheduler": sched.state_dict(), "rng": rng.bit_generator.state, "ramp_from": ramp_from,
                        "phases": phases, "ema": average.state_dict() if average is not None else None},
                       tmp)
            tmp.replace(checkpoint)
    log.close()
    masks.remove()
    if average is not None:
        average.copy_to_model()
    masks.apply()  # the final masks (the average still holds weights pruned during a ramp)
    return student.cpu().to_graph(), phases


class WeightAverage:
    """An exponential moving average of a module's floating-point weights; its decay grows
    from 0 to `decay` over the first updates, so that the average starts from recent weights."""

    def __init__(self, module, decay: float):
        self.module, self.decay, self.updates = module, decay, 0
        # the module's own tensors (a state dict shares their storage): read in place every step
        self.live = {k: v for k, v in module.state_dict().items() if v.is_floating_point()}
        self.shadow = {k: v.clone() for k, v in self.live.items()}

    def update(self):
        import torch
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        with torch.no_grad():
            for k, v in self.live.items():
                self.shadow[k].mul_(d).add_(v, alpha=1 - d)

    def copy_to_model(self):
        self.module.load_state_dict(self.shadow, strict=False)

    @contextlib.contextmanager
    def swapped(self):
        """A context in which the module holds the averaged weights."""
        raw = {k: v.clone() for k, v in self.live.items()}
        self.copy_to_model()
        try:
            yield
        finally:
            self.module.load_state_dict(raw, strict=False)

    def state_dict(self) -> dict:
        return {"decay": self.decay, "updates": self.updates, "shadow": self.shadow}

    def load_state_dict(self, state: dict):
        self.updates = state["updates"]
        self.shadow = {k: v.to(self.shadow[k].device) for k, v in state["shadow"].items()}


def validation_probe(images: np.ndarray, dense_out: Outputs, device):
    """The student's agreement with the teacher on the validation crops (torch, float32)."""
    def probe(module) -> str:
        q = compare(dense_out, module_outputs(module, A.to_input(images), 32, device))
        return (f"validation: landmarks {q['mean_landmark_error']:.2%} of hand size (p90 "
                f"{q['p90_landmark_error']:.2%}), presence {q['presence_agreement']:.0%}, "
                f"handedness {q['handedness_agreement']:.0%}")
    return probe


def run(args) -> int:
    """`pysparse distill` (see pysparse/commands/distill.py for the options)."""
    import torch

    from ..format.reader import read_spnn
    from ..importers import load_model
    from ..pack import pack, write_atomic
    from ..passes import optimize
    from ..prune import ir_layers, ir_report, text_table
    from ..prune.oneshot import select
    from ..prune.reconstruct import reconstruct
    from .evaluate import run_graph
    if args.smoke:
        args.steps, args.pool, args.batch, args.calibration = min(args.steps, 4), min(args.pool, 48), 4, 16
        args.ramp = min(args.ramp, 2)
    if not args.output.parent.is_dir():
        raise SystemExit(f"output folder {args.output.parent} does not exist")
    start_weights = None
    if args.start_from:  # before the pool and the sensitivity analysis, not after them
        start_weights = start_weights_of(args.start_from)
        if not 0 < args.ramp < args.steps:
            raise SystemExit(f"--ramp must be between 0 and --steps ({args.steps}), got {args.ramp}")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = device_of(args.device)
    t_start, cpu_start = time.perf_counter(), time.process_time()
    dense = optimize(load_model(args.dense or assets.model_path(args.model + ".tflite")))
    teacher = Teacher(dense, device)
    if start_weights is not None and not same_layout(start_weights, teacher.module):
        raise SystemExit(f"--start-from {args.start_from}: not a model of {args.model} (its weights differ in "
                         "name or shape)")
    sources = S.all_sources()
    train_sources, val_sources = S.split(sources, "train"), S.split(sources, "validation")
    t0 = time.perf_counter()
    if args.smoke:
        pool, _ = build_pool(teacher, train_sources, args.pool, args.seed)
    else:
        pool, _ = cached_pool(teacher, train_sources, args.model, args.pool, args.seed, args.cache)
    val_images, val_names = validation_set(teacher, val_sources)
    dense_val = run_graph(dense, val_images)
    t_data = time.perf_counter() - t0
    exclude = list(args.exclude)
    if not args.prune_heads:  # the heads map features to coordinates directly: every weight counts
        exclude += [layer.name for layer in ir_layers(dense) if layer.kind == "fc"]
    include = list(args.include)
    t0 = time.perf_counter()
    if args.uniform or args.smoke:
        sparsity = args.sparsity
    else:
        sparsity = per_layer_sparsity(dense, pool[:args.sensitivity_images], args.sparsity, exclude, args.cache,
                                      args.model, include)
    t_alloc = time.perf_counter() - t0
    log_path = args.output.with_suffix(".log.jsonl")
    checkpoint = args.output.with_suffix(".ckpt.pt")
    t0 = time.perf_counter()
    ramp = None
    if args.start_from:
        targets = sparsity if isinstance(sparsity, dict) else {
            name: sparsity for name, why in select(dense, exclude, include).items() if why is None}
        ramp = (targets, args.ramp, args.block)
    if args.resume and checkpoint.exists():  # the checkpoint holds the pruned weights
        start, calibrated = dense, None
    elif args.start_from:  # a model of an earlier run, pruned further (or not) while it trains
        start, calibrated = dense, None
    else:
        start = reconstruct(dense, A.to_input(pool[:args.calibration]), sparsity, args.block, exclude=exclude,
                            include=include,
                            seed=args.seed)
        calibrated = compare(dense_val, run_graph(start, val_images))
        print(f"calibrated pruning ({time.perf_counter() - t0:.0f} s): validation landmarks "
              f"{calibrated['mean_landmark_error']:.2%} of hand size", flush=True)
    t_calib = time.perf_counter() - t0
    if not args.resume:
        log_path.unlink(missing_ok=True)
    phase = {"steps": args.steps, "lr": args.lr, "batch": args.batch, "pool": args.pool, "block": args.block,
             "start_from": str(args.start_from) if args.start_from else None,
             "ramp": args.ramp if args.start_from else None, "include": include,
             "feature_weight": args.feature_weight, "logit_weight": args.logit_weight, "logit_loss": args.logit_loss,
             "landmark_loss": args.landmark_loss, "ema": args.ema}
    t0 = time.perf_counter()
    trained, phases = train(start, teacher, pool, args.steps, args.batch, args.lr, args.seed, device,
                            args.feature_weight, log_path, checkpoint, args.checkpoint_every, args.resume,
                            validation_probe(val_images, dense_val, device), args.eval_every, args.logit_weight,
                            args.logit_loss, start_weights, ramp, phase, args.ema,
                            args.landmark_loss)
    t_train = time.perf_counter() - t0
    origin = phases[0]  # the model's start: the first run's
    # every step of this model, resumed runs included: the log has one line per step
    steps_log = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
    t_steps = float(sum(r["seconds"] for r in steps_log))
    report_rows = ir_report(trained, args.block, exclude=exclude, include=include)
    blob = pack(trained, weights="fp16", metadata={
        "source": {"file": args.model + ".tflite", "format": "tflite"},
        "pruning": {"method": f"sensitivity allocation + {start_method(origin)} + distillation",
                    "sparsity": args.sparsity, "per_layer": not args.uniform, "block": args.block,
                    "steps": args.steps, "batch": args.batch, "pool": args.pool, "seed": args.seed}})
    shipped = read_spnn(blob).graph  # evaluate exactly what is shipped (fp16 weights)
    quality = compare(dense_val, run_graph(shipped, val_images), val_names, by_source=True)
    write_atomic(args.output, blob)
    report = {"model": args.model, "output": str(args.output), "bytes": len(blob), "sparsity": args.sparsity,
              "per_layer_sparsity": sparsity if isinstance(sparsity, dict) else None, "block": args.block,
              "steps": args.steps, "batch": args.batch, "pool_images": args.pool, "lr": args.lr,
              "start_from": origin.get("start_from"), "include": include, "ramp_steps": origin.get("ramp"),
              "phases": phases,
              "feature_weight": args.feature_weight, "logit_weight": args.logit_weight,
              "logit_loss": args.logit_loss, "device": str(device),
              "hardware": hardware(device), "seconds_data": t_data, "seconds_allocation": t_alloc,
              "seconds_calibration": t_calib, "seconds_training": t_train,
              "seconds_all_steps": t_steps, "steps_logged": len(steps_log),
              "wall_seconds": time.perf_counter() - t_start, "cpu_seconds": time.process_time() - cpu_start,
              "sources": {s.name: {"split": s.split, "kind": s.kind, "licence": s.licence, "items": len(s.items)}
                          for s in sources},
              "quality_after_calibration": calibrated, "validation": quality,
              "layers": [r.as_dict() for r in report_rows]}
    report_path = args.output.with_suffix(".report.json")
    write_atomic(report_path, (json.dumps(report, indent=1) + "\n").encode())
    print(text_table(report_rows))
    print(f"validation ({len(val_names)} crops of {len(val_sources)} sources never trained on): landmarks "
          f"{quality['mean_landmark_error']:.2%} of hand size (p90 {quality['p90_landmark_error']:.2%}), presence "
          f"{quality['presence_agreement']:.0%}, handedness {quality['handedness_agreement']:.0%}")
    print(f"training {t_steps:.0f} s in {len(steps_log)} steps on {report['hardware']}; wrote {args.output} ({len(blob):,} bytes), "
          f"{report_path}, {log_path}")
    return 0


def start_method(origin: dict) -> str:
    """How the first run of a model began (its settings as `train` records them)."""
    if origin.get("start_from"):
        return f"gradual pruning from {Path(origin['start_from']).name} over {origin['ramp']} steps"
    return "pruning" if "note" in origin else "calibrated pruning"


def shipped_weights(state: dict) -> dict:
    """The weights a checkpoint's model was packed with: the last step's, or their average
    (`--ema`) with the last step's zeros."""
    weights = dict(state["student"])
    if state.get("ema"):
        for k, v in state["ema"]["shadow"].items():
            weights[k] = v * (weights[k] != 0)
    return weights


def start_weights_of(path: Path) -> dict:
    """The weights to begin from: an earlier run's checkpoint (given itself, or its model
    OUT.spnn beside OUT.ckpt.pt), else the weights a `.spnn` holds as shipped (fp16, with the
    zeros of its pruning), so that a shipped model can be trained on without its checkpoint."""
    import torch

    from ..format.reader import read_spnn
    from ..torch_module import GraphModule
    ckpt = path if path.name.endswith(".ckpt.pt") else path.with_suffix(".ckpt.pt")
    if ckpt.exists():
        return shipped_weights(torch.load(ckpt, map_location="cpu", weights_only=False))
    if path.suffix != ".spnn" or not path.is_file():
        raise SystemExit(f"--start-from: no checkpoint {ckpt} and no model {path} (a run of `pysparse distill` "
                         "writes both)")
    return GraphModule(read_spnn(path.read_bytes()).graph).state_dict()


def same_layout(weights: dict, module) -> bool:
    """Whether a state dict has the names and shapes of `module`'s."""
    expected = module.state_dict()
    return expected.keys() == weights.keys() and all(expected[k].shape == weights[k].shape for k in expected)


def hardware(device) -> str:
    import os
    import platform

    import torch
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {torch.get_num_threads()} of {os.cpu_count()} cores"

