"""Graphs and packed models for the engine tests: one small graph per op variant, one-shot
pruning of real models, and a cache of packed models under build/test-models/.

The cache key hashes the source model and every pysparse source file, so a change to
the importer, passes or packer repacks."""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from pysparse.ir import Graph

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / "build" / "test-models"


# ---- small graphs, one per op variant ---------------------------------------------------

def _rng(seed):
    return np.random.default_rng(seed)


def _single(op_type, in_shapes, out_shape, consts=(), seed=0, **attrs) -> Graph:
    """x0..xn graph inputs (shapes in_shapes), then constants, one op, one output."""
    rng = _rng(seed)
    g = Graph()
    names = []
    for i, s in enumerate(in_shapes):
        g.add_tensor(f"x{i}", s)
        names.append(f"x{i}")
    g.inputs = list(names)
    for i, c in enumerate(consts):
        if c is None:
            names.append("")
        else:
            names.append(g.add_constant(f"c{i}", np.asarray(c, np.float32)))
    g.add_tensor("y", out_shape)
    g.add_op(op_type, names, ["y"], f"{op_type.lower()}_op", **attrs)
    g.outputs = ["y"]
    g.validate()
    return g


def _w(rng, *shape, zero=0.0):
    a = rng.standard_normal(shape).astype(np.float32) * 0.5
    if zero:
        a[rng.random(shape) < zero] = 0
    return a


def op_graphs() -> dict[str, Graph]:
    r = _rng(1)
    gs: dict[str, Graph] = {}

    def conv(name, cin, h, w, cout, k, stride=1, pad=(0, 0, 0, 0), groups=1, dil=1, act=0, bias=True,
             zero=0.0, kw=None, batch=1):
        kw = kw or k
        oh = (h + pad[0] + pad[2] - dil * (k - 1) - 1) // stride + 1
        ow = (w + pad[1] + pad[3] - dil * (kw - 1) - 1) // stride + 1
        consts = [_w(r, cout, cin // groups, k, kw, zero=zero), _w(r, cout) if bias else None]
        gs[name] = _single("CONV2D", [(batch, cin, h, w)], (batch, cout, oh, ow), consts, stride_h=stride, stride_w=stride,
                           dilation_h=dil, dilation_w=dil, pad_top=pad[0], pad_left=pad[1], pad_bottom=pad[2],
                           pad_right=pad[3], groups=groups, act=act)

    conv("conv_1x1_dense", 24, 9, 11, 40, 1, act=2)
    conv("conv_1x1_sparse", 64, 7, 13, 37, 1, zero=0.8, act=1)
    conv("conv_1x1_sparse_nobias", 33, 5, 5, 18, 1, zero=0.7, bias=False)
    conv("conv_3x3_s2_first", 3, 33, 31, 16, 3, stride=2, pad=(0, 0, 1, 1), act=2)
    conv("conv_5x3_pad", 6, 10, 12, 5, 5, pad=(2, 1, 2, 1), kw=3, act=3)
    conv("conv_1x1_stride2", 8, 9, 9, 12, 1, stride=2)
    conv("conv_dilated", 4, 12, 12, 6, 3, dil=2, pad=(2, 2, 2, 2))
    conv("conv_grouped", 8, 8, 8, 12, 3, groups=4, pad=(1, 1, 1, 1))
    conv("dwconv_3x3_s1", 16, 14, 14, 16, 3, pad=(1, 1, 1, 1), groups=16, act=1)
    conv("dwconv_3x3_s2", 16, 15, 15, 16, 3, stride=2, pad=(0, 0, 1, 1), groups=16)
    conv("dwconv_5x5_s1", 8, 11, 9, 8, 5, pad=(2, 2, 2, 2), groups=8, act=2)
    conv("dwconv_5x5_s2", 8, 16, 16, 8, 5, stride=2, pad=(1, 1, 2, 2), groups=8)
    conv("dwconv_7x7", 4, 10, 10, 4, 7, pad=(3, 3, 3, 3), groups=4)
    # batches: N images one after another, every kernel kind
    conv("conv_1x1_sparse_batch3", 64, 7, 13, 37, 1, zero=0.8, act=1, batch=3)
    conv("conv_1x1_sparse_batch2_large", 16, 12, 12, 20, 1, zero=0.7, batch=2)
    conv("conv_1x1_dense_batch2", 24, 12, 12, 40, 1, act=2, batch=2)
    conv("conv_3x3_batch2", 3, 11, 10, 8, 3, stride=2, pad=(1, 1, 1, 1), batch=2)
    conv("dwconv_3x3_s1_batch2", 16, 14, 14, 16, 3, pad=(1, 1, 1, 1), groups=16, act=1, batch=2)

    gs["conv_transpose"] = _single("CONV_TRANSPOSE2D", [(1, 6, 5, 7)], (1, 4, 10, 14),
                                   [_w(r, 6, 4, 4, 4), _w(r, 4)], stride_h=2, stride_w=2, pad_top=1,
                                   pad_left=1, pad_bottom=1, pad_right=1, act=1)
    gs["conv_transpose_batch2"] = _single("CONV_TRANSPOSE2D", [(2, 3, 4, 5)], (2, 4, 8, 10),
                                          [_w(r, 3, 4, 2, 2), _w(r, 4)], stride_h=2, stride_w=2)
    gs["fc_dense"] = _single("FULLY_CONNECTED", [(2, 50)], (2, 21), [_w(r, 21, 50), _w(r, 21)], act=0)
    gs["fc_sparse"] = _single("FULLY_CONNECTED", [(1, 300)], (1, 63), [_w(r, 63, 300, zero=0.85), _w(r, 63)])
    for op in ("ADD", "MUL", "SUB", "DIV"):
        gs[f"{op.lower()}_same"] = _single(op, [(1, 8, 5, 7), (1, 8, 5, 7)], (1, 8, 5, 7), act=1 if op == "ADD" else 0)
    # big enough to be split between threads (one long row cut into spans), odd length
    gs["add_same_large"] = _single("ADD", [(1, 16, 50, 51), (1, 16, 50, 51)], (1, 16, 50, 51), act=1)
    gs["add_per_channel"] = _single("ADD", [(1, 12, 6, 6), (1, 12, 1, 1)], (1, 12, 6, 6), act=2)
    gs["mul_scalar_const"] = _single("MUL", [(1, 5, 3, 9)], (1, 5, 3, 9), [np.full((1,), 0.75)])
    gs["sub_bcast_both"] = _single("SUB", [(1, 4, 1, 6), (1, 1, 5, 1)], (1, 4, 5, 6), act=3)
    gs["div_row_const"] = _single("DIV", [(2, 3, 7)], (2, 3, 7), [_w(r, 7) + 3.0])
    for op in ("RELU", "SIGMOID", "TANH", "HARD_SWISH"):
        gs[op.lower()] = _single(op, [(1, 5, 7, 9)], (1, 5, 7, 9))
    gs["clip"] = _single("CLIP", [(1, 3, 5, 5)], (1, 3, 5, 5), min=-0.5, max=0.25)
    gs["hard_sigmoid"] = _single("HARD_SIGMOID", [(1, 3, 5, 5)], (1, 3, 5, 5), alpha=0.3, beta=0.4)
    gs["leaky_relu"] = _single("LEAKY_RELU", [(1, 3, 5, 5)], (1, 3, 5, 5), alpha=0.1)
    gs["prelu_channel"] = _single("PRELU", [(1, 6, 4, 5)], (1, 6, 4, 5), [_w(r, 1, 6, 1, 1)])
    gs["max_pool"] = _single("MAX_POOL2D", [(1, 4, 9, 9)], (1, 4, 5, 5), kernel_h=3, kernel_w=3, stride_h=2,
                             stride_w=2, pad_top=1, pad_left=1, pad_bottom=1, pad_right=1)
    # 2x2 stride 2 without padding (the vector path), an odd output width for its tail
    gs["max_pool_2x2"] = _single("MAX_POOL2D", [(1, 3, 10, 19)], (1, 3, 5, 9), kernel_h=2, kernel_w=2,
                                 stride_h=2, stride_w=2, act=1)
    gs["avg_pool_excl"] = _single("AVG_POOL2D", [(1, 4, 8, 8)], (1, 4, 4, 4), kernel_h=3, kernel_w=3, stride_h=2,
                                  stride_w=2, pad_top=1, pad_left=1, pad_bottom=1, pad_right=1, act=1)
    gs["avg_pool_incl"] = _single("AVG_POOL2D", [(1, 2, 7, 7)], (1, 2, 7, 7), kernel_h=3, kernel_w=3,
                                  pad_top=1, pad_left=1, pad_bottom=1, pad_right=1, count_include_pad=1)
    gs["mean_hw"] = _single("MEAN", [(1, 16, 7, 7)], (1, 16, 1, 1), axes_mask=0b1100, keepdims=1)
    gs["mean_channels"] = _single("MEAN", [(1, 6, 4, 5)], (1, 4, 5), axes_mask=0b0010, keepdims=0)
    gs["concat_channels"] = _single("CONCAT", [(1, 3, 4, 4), (1, 5, 4, 4), (1, 2, 4, 4)], (1, 10, 4, 4), axis=1)
    gs["concat_last_const"] = _single("CONCAT", [(1, 20, 2)], (1, 20, 3), [_w(r, 1, 20, 1)], axis=-1)
    gs["pad_hw"] = _single("PAD", [(1, 3, 4, 5)], (1, 5, 7, 6), pad1_begin=1, pad1_end=1, pad2_begin=2, pad2_end=1,
                           pad3_end=1, value=-1.5)
    for mode, (ac, hp) in {"plain": (0, 0), "align": (1, 0), "half": (0, 1)}.items():
        gs[f"resize_bilinear_{mode}"] = _single("RESIZE_BILINEAR", [(1, 3, 5, 6)], (1, 3, 11, 8),
                                                align_corners=ac, half_pixel_centers=hp)
        gs[f"resize_nearest_{mode}"] = _single("RESIZE_NEAREST", [(1, 3, 5, 6)], (1, 3, 10, 13),
                                               align_corners=ac, half_pixel_centers=hp)
    gs["resize_bilinear_2x"] = _single("RESIZE_BILINEAR", [(1, 6, 7, 9)], (1, 6, 14, 18), half_pixel_centers=1)
    for w in (1, 2, 3, 4, 5, 7, 8):  # rows doubled four input columns at a time, and their tails
        gs[f"resize_bilinear_2x_w{w}"] = _single("RESIZE_BILINEAR", [(1, 3, 3, w)], (1, 3, 6, 2 * w),
                                                 half_pixel_centers=1)
    gs["resize_bilinear_2x_rows_only"] = _single("RESIZE_BILINEAR", [(1, 2, 5, 6)], (1, 2, 7, 12),
                                                 half_pixel_centers=1)  # x doubled, y not
    gs["resize_bilinear_2x_large"] = _single("RESIZE_BILINEAR", [(1, 1, 70, 300)], (1, 1, 140, 600),
                                             half_pixel_centers=1)  # too large for one plane's buffer
    gs["resize_bilinear_2x_plain"] = _single("RESIZE_BILINEAR", [(1, 3, 4, 6)], (1, 3, 8, 12))
    gs["resize_bilinear_2x_wide"] = _single("RESIZE_BILINEAR", [(1, 2, 2, 1030)], (1, 2, 4, 2060),
                                            half_pixel_centers=1)  # over one span: the scalar rows
    gs["resize_bilinear_wide"] = _single("RESIZE_BILINEAR", [(1, 2, 3, 1100)], (1, 2, 5, 2300), half_pixel_centers=1)
    gs["resize_bilinear_down"] = _single("RESIZE_BILINEAR", [(2, 3, 13, 17)], (2, 3, 5, 7), align_corners=1)
    gs["depth_to_space_dcr"] = _single("DEPTH_TO_SPACE", [(1, 8, 3, 4)], (1, 2, 6, 8), block=2, mode=0)
    gs["depth_to_space_crd_2"] = _single("DEPTH_TO_SPACE", [(2, 12, 3, 5)], (2, 3, 6, 10), block=2, mode=1)
    gs["depth_to_space_dcr_large"] = _single("DEPTH_TO_SPACE", [(1, 64, 9, 14)], (1, 16, 18, 28), block=2, mode=0)
    gs["pad_hw_large"] = _single("PAD", [(1, 24, 30, 30)], (1, 24, 32, 33), pad2_begin=1, pad2_end=1,
                                 pad3_begin=2, pad3_end=1)
    gs["depth_to_space_crd"] = _single("DEPTH_TO_SPACE", [(1, 18, 2, 3)], (1, 2, 6, 9), block=3, mode=1)
    gs["reshape_flatten"] = _single("RESHAPE", [(1, 4, 3, 5)], (1, 60))
    gs["transpose_nhwc"] = _single("TRANSPOSE", [(1, 4, 3, 5)], (1, 3, 5, 4), perm0=0, perm1=2, perm2=3, perm3=1)
    gs["transpose_3d"] = _single("TRANSPOSE", [(2, 3, 4)], (4, 2, 3), perm0=2, perm1=0, perm2=1)
    # NCHW -> NHWC as 4 x 4 blocks, with edges in both directions and a batch
    gs["transpose_nhwc_edges"] = _single("TRANSPOSE", [(2, 6, 7, 7)], (2, 7, 7, 6), perm0=0, perm1=2, perm2=3, perm3=1)
    gs["transpose_nchw"] = _single("TRANSPOSE", [(1, 12, 10, 16)], (1, 16, 12, 10), perm0=0, perm1=3, perm2=1, perm3=2)
    gs["transpose_middle_axes"] = _single("TRANSPOSE", [(2, 3, 4)], (3, 2, 4), perm0=1, perm1=0, perm2=2)
    gs["softmax_last"] = _single("SOFTMAX", [(2, 10)], (2, 10), beta=1.5)
    gs["softmax_channels"] = _single("SOFTMAX", [(1, 5, 3, 3)], (1, 5, 3, 3), axis=1)
    gs["lrn_5"] = _single("LRN", [(1, 7, 5, 6)], (1, 7, 5, 6), size=5, alpha=0.3, bias=1.5)
    for op in ("ABS", "EXP", "SOFTPLUS"):
        gs[op.lower()] = _single(op, [(1, 5, 7, 9)], (1, 5, 7, 9))
    g = _single("ABS", [(1, 5, 7, 9)], (1, 5, 7, 9))  # then SQRT of what is never negative
    g.add_tensor("root", (1, 5, 7, 9))
    g.add_op("SQRT", ["y"], ["root"], "sqrt_op")
    g.outputs = ["root"]
    gs["sqrt_of_abs"] = g
    gs["elu_selu"] = _single("ELU", [(2, 3, 5, 5)], (2, 3, 5, 5), alpha=1.6732632, scale=1.0507010)
    gs["log_softmax"] = _single("LOG_SOFTMAX", [(2, 10)], (2, 10))
    gs["max_bcast"] = _single("MAX", [(1, 4, 5, 6), (1, 4, 1, 1)], (1, 4, 5, 6), act=1)
    gs["min_same"] = _single("MIN", [(2, 3, 7), (2, 3, 7)], (2, 3, 7))
    gs["pow_const"] = _single("POW", [(1, 3, 4, 5)], (1, 3, 4, 5), [np.full((1,), 2.0)])
    gs["slice_channels"] = _single("SLICE", [(2, 7, 3, 4)], (2, 3, 3, 4), axis=1, begin=2, end=7, step=2)
    gs["slice_last"] = _single("SLICE", [(1, 4, 5, 9)], (1, 4, 5, 3), axis=3, begin=1, end=8, step=3)
    gs["pad_reflect"] = _single("PAD_REFLECT", [(2, 3, 4, 5)], (2, 6, 9, 7), pad1_begin=2, pad1_end=1,
                                pad2_begin=3, pad2_end=2, pad3_end=2)
    gs["pad_edge"] = _single("PAD_REFLECT", [(1, 2, 3, 4)], (1, 2, 8, 5), pad2_begin=4, pad2_end=1, pad3_begin=1,
                             edge=1)
    gs["matmul"] = _single("MATMUL", [(3, 7), (7, 9)], (3, 9))
    gs["matmul_const_b"] = _single("MATMUL", [(4, 6)], (4, 5), [_w(r, 6, 5)])
    gs["lrn_batch2"] = _single("LRN", [(2, 6, 3, 5)], (2, 6, 3, 5), size=3, alpha=0.4)
    gs["lrn_even_beta"] = _single("LRN", [(1, 4, 3, 3)], (1, 4, 3, 3), size=2, alpha=0.5, beta=0.6)
    gs["sum_3_relu"] = _single("SUM", [(1, 3, 5, 7), (1, 3, 5, 7)], (1, 3, 5, 7), [_w(r, 1, 3, 5, 7)], act=1)
    return gs


def random_inputs(graph: Graph, seed: int = 0) -> dict[str, np.ndarray]:
    rng = _rng(seed)
    return {n: rng.standard_normal(graph.tensors[n].shape).astype(np.float32) for n in graph.inputs}


# ---- one-shot pruning of 1x1 convolutions -------------------------------------------------

def prune_pointwise(graph: Graph, sparsity: float, block: int = 1) -> Graph:
    """Zeroes, in every 1x1 convolution (groups 1) with a constant weight, the `sparsity`
    fraction of weights of smallest magnitude (block > 1: of blocks of `block` output rows
    in one input column, by L2 norm). Returns a new graph."""
    import copy
    g = copy.deepcopy(graph)
    for op in g.ops:
        if op.type != "CONV2D" or op.attr("groups") != 1:
            continue
        t = g.tensors[op.inputs[1]]
        if t.data is None or t.shape[2:] != (1, 1):
            continue
        w = t.data.reshape(t.shape[0], -1).copy()
        b = block if w.shape[0] >= block else 1  # fewer rows than a block: prune single weights
        rows = (w.shape[0] // b) * b
        if b == 1:
            scores, units = np.abs(w), None
        else:
            units = w[:rows].reshape(rows // b, b, -1)
            scores = np.sqrt((units ** 2).sum(axis=1))
        k = int(round(sparsity * scores.size))
        if k:
            cut = np.partition(scores.ravel(), k - 1)[k - 1]
            if b == 1:
                w[scores <= cut] = 0
            else:
                units[np.broadcast_to((scores <= cut)[:, None, :], units.shape)] = 0
                w[:rows] = units.reshape(rows, -1)
        t.data = w.reshape(t.shape).astype(np.float32)
    return g


# ---- packed real models, cached ------------------------------------------------------------

def _source_hash() -> str:
    h = hashlib.sha256()
    for p in sorted((ROOT / "pysparse").rglob("*.py")):
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


def packed_real_model(name: str, sparsity: float = 0.0, block: int = 1):
    """(original graph after pruning, .spnn bytes) of models/<name>.tflite, pruned one-shot
    when sparsity > 0 and then packed sparse; dense models are packed dense."""
    from pysparse import assets
    from pysparse.importers import load_model
    from pysparse.pack import pack

    src = assets.model_path(f"{name}.tflite")
    graph = load_model(src)
    if sparsity:
        graph = prune_pointwise(graph, sparsity, block)
    key = hashlib.sha256(src.read_bytes()).hexdigest()[:12] + "-" + _source_hash()
    path = CACHE / f"{name}-s{int(sparsity * 100)}-b{block}-{key}.spnn"
    if path.exists():
        return graph, path.read_bytes()
    data = pack(graph, weights="fp32", sparse=bool(sparsity) if sparsity else False)
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
    return graph, data


def photo_input(shape, lo: float = 0.0, hi: float = 1.0) -> np.ndarray:
    """A real hand photo resized to an NCHW input of `shape`, mapped to [lo, hi]."""
    from PIL import Image

    from pysparse import assets
    _, c, h, w = shape
    img = Image.open(assets.photo_path("hand_nocurl.jpg")).convert("RGB").resize((w, h), Image.BILINEAR)
    x = np.asarray(img, np.float32).transpose(2, 0, 1)[None, :c] / 255.0
    return (lo + x * (hi - lo)).astype(np.float32)
