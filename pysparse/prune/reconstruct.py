"""One-shot pruning with calibration: activation-aware masks and a least-squares refit.

    pruned = reconstruct(graph, images, 0.8, block=4)  # images: [N, C, H, W] model inputs

Plain magnitude pruning (`oneshot`) ignores what flows through a weight and leaves the
kept weights as they were. Here, layer by layer in execution order, for every pruned
weight (the same layers as `oneshot`):

1. The layer's input is captured on the calibration inputs twice: in the dense model (X)
   and in the model pruned so far (Xs). A 1x1 convolution treats pixels independently, so a
   random subset of pixel positions per image (`pixels`) is an unbiased sample of them.
2. Units (block columns, as in `masks`) are dropped in a few rounds of rising sparsity,
   ranked by what removing each costs the layer's output on Xs (the optimal brain surgeon
   estimate w^2 / [H^-1]_jj with H = Xs Xs^T): a small weight on a large or independent
   input can matter more than a large weight on a quiet or redundant one.
3. After each round, the kept weights and the bias are refit by ridge least squares, so
   that the pruned layer on Xs reproduces the dense layer's output (before its activation)
   on X. The error the earlier pruned layers made is corrected where the kept weights can.

Fully connected layers see one sample per input, too few to refit: they are pruned by
|w| x RMS of their inputs, without a refit.
The result is a good starting point for fine-tuning (`pysparse distill`) and much
closer to the dense model than magnitude pruning on its own (see docs/pruning.md).
"""
from __future__ import annotations

import copy

import numpy as np

from ..ir import Graph
from . import masks as M
from .layers import MIN_WEIGHTS
from .oneshot import select


def _sample(x, idx):
    """[C, S] columns of a [B, C, H, W] (or [B, K]) activation at per-image positions `idx`."""
    if x.ndim == 2:  # fully connected: one sample per input
        return x.T
    b, c = x.shape[:2]
    flat = x.reshape(b, c, -1)
    return np.concatenate([flat[i][:, idx[i]] for i in range(b)], axis=1)


def _consumers(graph: Graph, names) -> dict:
    """weight name -> the first CONV2D / FULLY_CONNECTED op reading it."""
    out = {}
    for op in graph.ops:
        if op.type in ("CONV2D", "FULLY_CONNECTED") and len(op.inputs) > 1 and op.inputs[1] in names:
            out.setdefault(op.inputs[1], op)
    return out


def _pending_inputs(graph: Graph, computed) -> set:
    """Tensors read by the ops whose outputs are not computed yet."""
    return {i for op in graph.ops if op.outputs[0] not in computed for i in op.inputs if i}


def _is_pointwise(graph: Graph, op) -> bool:
    if op.type != "CONV2D":
        return False
    w = graph.tensors[op.inputs[1]].shape
    a = {k: op.attrs.get(k, 0) for k in ("stride_h", "stride_w", "pad_top", "pad_left", "pad_bottom", "pad_right")}
    return (tuple(w[2:]) == (1, 1) and int(op.attrs.get("groups", 1)) == 1 and a["stride_h"] in (0, 1)
            and a["stride_w"] in (0, 1) and not any(a[k] for k in ("pad_top", "pad_left", "pad_bottom", "pad_right")))


def normal_equations(xs: np.ndarray, target: np.ndarray, bias: bool) -> tuple[np.ndarray, np.ndarray]:
    """X X^T and X target^T of the least-squares problem (X: xs with a row of ones for the bias)."""
    xa = np.vstack([xs, np.ones((1, xs.shape[1]), xs.dtype)]) if bias else xs
    xa = xa.astype(np.float32)  # float32 products, float64 sums of them: ample for a refit
    return (xa @ xa.T).astype(np.float64), (xa @ target.astype(np.float32).T).astype(np.float64)


def refit(w: np.ndarray, bias: np.ndarray | None, keep: np.ndarray, xs: np.ndarray | None, target: np.ndarray | None,
          damp: float = 1e-3, equations=None) -> tuple[np.ndarray, np.ndarray | None]:
    """Kept weights (and bias) minimising ||w' xs + b' - target||^2 + ridge, zeros elsewhere.

    w, keep: [rows, cols]; xs: [cols, S]; target: [rows, S] (or `equations`, from
    `normal_equations`). Rows with the same kept columns (a block's rows) share one solve."""
    rows, cols = w.shape
    gram, cross = equations if equations is not None else normal_equations(xs, target, bias is not None)
    ridge = damp * float(np.mean(np.diag(gram)[:cols])) + 1e-12
    new_w = np.zeros((rows, cols))
    new_b = None if bias is None else np.array(bias, dtype=np.float64)
    groups: dict[bytes, list[int]] = {}
    for r in range(rows):
        groups.setdefault(keep[r].tobytes(), []).append(r)
    for key, members in groups.items():
        k = np.flatnonzero(keep[members[0]])
        if bias is not None:
            k = np.append(k, cols)
        if k.size == 0:
            continue
        a = gram[np.ix_(k, k)] + ridge * np.eye(k.size)
        sol = np.linalg.solve(a, cross[np.ix_(k, members)])  # [|k|, len(members)]
        if bias is not None:
            new_w[np.ix_(members, k[:-1])] = sol[:-1].T
            new_b[members] = sol[-1]
        else:
            new_w[np.ix_(members, k)] = sol.T
    return new_w, new_b


def prune_layer(w: np.ndarray, bias: np.ndarray | None, xs: np.ndarray, target: np.ndarray, sparsity: float,
                block: int = 1, damp: float = 1e-3, rounds: int = 6) -> tuple[np.ndarray, np.ndarray | None]:
    """Pruned and refit weights of one 1x1 layer, in `rounds` steps of rising sparsity.

    Each step ranks units by what removing them costs the layer's output (the optimal brain
    surgeon estimate w^2 / [H^-1]_jj, H = xs xs^T), from the weights the previous step refit,
    then refits the kept ones. Zeros rank first, so the masks only grow."""
    cols = w.shape[1]
    equations = normal_equations(xs, target, bias is not None)
    h = equations[0][:cols, :cols]
    ridge = damp * float(np.mean(np.diag(h))) + 1e-12
    scale = 1.0 / np.sqrt(np.diag(np.linalg.inv(h + ridge * np.eye(cols))))
    cur = w
    for k in range(1, rounds + 1):
        keep = M.matrix_view(M.layer_mask(cur * scale[None, :], sparsity * k / rounds, block))
        cur, new_b = refit(w, bias, keep, None, None, damp, equations)
    return cur, new_b


def reconstruct(graph: Graph, inputs: np.ndarray, sparsity, block: int = 1, exclude=(), include=(),
                min_weights: int = MIN_WEIGHTS, pixels: int = 256, damp: float = 1e-3, rounds: int = 6,
                batch: int = 16, seed: int = 0, progress: bool = True) -> Graph:
    """A copy of `graph` pruned to `sparsity` per layer with calibrated masks and refit weights.
    `sparsity`: one fraction for every layer, or {layer name: fraction} (layers not named
    stay as they are).

    inputs: calibration inputs of the graph's (single) input, [N, ...] with the model's shape
    after the batch axis. `pixels`: positions sampled per image and layer; `damp`: ridge, as
    a fraction of the mean input energy; `rounds`: steps to the sparsity (`prune_layer`)."""
    import torch
    from tqdm import tqdm

    from ..torch_module import GraphModule
    M.check_block(block)
    per_layer = sparsity if isinstance(sparsity, dict) else None
    for s in (per_layer or {"": sparsity}).values():
        if not 0.0 <= s < 1.0:
            raise ValueError(f"sparsity must be in [0, 1), got {s}")
    if len(graph.inputs) != 1:
        raise ValueError("calibrated pruning needs a graph with one input")
    inputs = np.asarray(inputs, dtype=np.float32)
    chosen = [name for name, why in select(graph, exclude, include, min_weights).items() if why is None]
    if per_layer is not None:
        chosen = [name for name in chosen if name in per_layer]
    ops = _consumers(graph, set(chosen))
    order = [name for name in chosen if name in ops]
    rng = np.random.default_rng(seed)
    teacher = GraphModule(graph).eval()
    student = GraphModule(copy.deepcopy(graph)).eval()
    batches = [inputs[i:i + batch] for i in range(0, len(inputs), batch)]

    # positions sampled per layer and image, the same in both models
    positions = {}
    for name in order:
        shape = graph.tensors[ops[name].inputs[0]].shape
        hw = int(np.prod(shape[2:])) if len(shape) == 4 else 1
        positions[name] = [rng.choice(hw, size=min(pixels, hw), replace=False) for _ in range(len(inputs))]

    # Both models advance through the graph layer by layer, keeping only the activations that
    # later ops still read: one forward pass each in all, whatever the number of layers.
    inputs_t = [torch.from_numpy(xb) for xb in batches]
    states = {id(teacher): [{} for _ in batches], id(student): [{} for _ in batches]}

    def capture(module, name, tensor_name):
        cols, at = [], 0
        with torch.no_grad():
            for i, xb in enumerate(inputs_t):
                v = module.values([xb], wanted={tensor_name}, known=states[id(module)][i])
                cols.append(_sample(v[tensor_name].numpy(), positions[name][at:at + len(xb)]))
                at += len(xb)
                if i == 0:  # every batch stops at the same op
                    needed = [k for k in _pending_inputs(graph, v) if k in v and not graph.tensors[k].is_constant]
                states[id(module)][i] = {k: v[k] for k in needed}
        return np.concatenate(cols, axis=1)

    label = "per-layer sparsity" if per_layer else f"{sparsity:.0%}"
    bar = tqdm(order, desc=f"calibrated pruning to {label} (block {block})", unit="layer", disable=not progress)
    for name in bar:
        layer_sparsity = per_layer[name] if per_layer else sparsity
        op = ops[name]
        x_name = op.inputs[0]
        bias_name = op.inputs[2] if len(op.inputs) > 2 and op.inputs[2] else None
        w_param = student.parameter(name)
        w_dense = teacher.parameter(name).detach().numpy()
        mat = M.matrix_view(w_dense).astype(np.float64)
        b_dense = None if bias_name is None else teacher.parameter(bias_name).detach().numpy().astype(np.float64)
        xs = capture(student, name, x_name)
        if op.type == "FULLY_CONNECTED" or not _is_pointwise(graph, op):
            rms = np.sqrt(np.mean(np.square(xs, dtype=np.float64), axis=1))
            new_w, new_b = mat * M.matrix_view(M.layer_mask(mat * rms[None, :], layer_sparsity, block)), b_dense
        else:
            xd = capture(teacher, name, x_name)
            target = mat @ xd + (0.0 if b_dense is None else b_dense[:, None])
            new_w, new_b = prune_layer(mat, b_dense, xs, target, layer_sparsity, block, damp, rounds)
        with torch.no_grad():
            w_param.copy_(torch.from_numpy(new_w.reshape(w_param.shape).astype(np.float32)))
            if new_b is not None:
                student.parameter(bias_name).copy_(torch.from_numpy(new_b.astype(np.float32)))
    return student.to_graph()


def photo_inputs(graph: Graph, photos, count: int, seed: int = 0) -> np.ndarray:
    """`count` calibration inputs [count, 3, H, W] cut from `photos`: random square crops (60-100%
    of the short side), mirror flips and brightness changes, resized to the model's input and
    mapped to its input range (metadata, or [0, 1])."""
    from PIL import Image, ImageEnhance

    from .sensitivity import photo_to_input
    if not photos:
        raise ValueError("calibration needs at least one photo")
    rng = np.random.default_rng(seed)
    images = [Image.open(p).convert("RGB") for p in photos]
    out = []
    for i in range(count):
        img = images[i % len(images)]
        side = rng.uniform(0.6, 1.0) * min(img.size)
        x0, y0 = rng.uniform(0, img.width - side), rng.uniform(0, img.height - side)
        crop = img.crop((x0, y0, x0 + side, y0 + side))
        if rng.integers(2):
            crop = crop.transpose(Image.FLIP_LEFT_RIGHT)
        out.append(photo_to_input(graph, ImageEnhance.Brightness(crop).enhance(rng.uniform(0.7, 1.3))))
    return np.stack(out)
