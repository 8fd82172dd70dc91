"""A seeded mutator over small TFLite and ONNX models, for the importer fuzz test.

Each case is a valid seed model changed in a few places: bit flips, random bytes, a u32
overwritten with a boundary value, a slice repeated or cut, and names (found by their
bytes) turned into bytes that are not UTF-8 or that hold zero bytes. Every case goes
through what the server does with an upload: import, pack, read back.
"""
from __future__ import annotations

import numpy as np

BOUNDARY_U32 = (0, 1, 0x7F, 0xFF, 0x7FFF, 0xFFFF, 0x10000, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 11_000_000)
BAD_NAME_BYTES = (b"\xff\xfe", b"\x00", b"\xc3(", b"a\x00b", b"\xed\xa0\x80")


def mutate(seed: bytes, names: list[bytes], rng: np.random.Generator) -> bytes:
    b = bytearray(seed)
    for _ in range(int(rng.integers(1, 4))):
        kind = int(rng.integers(6))
        if kind == 0:  # bit flip
            b[int(rng.integers(len(b)))] ^= 1 << int(rng.integers(8))
        elif kind == 1:  # random byte
            b[int(rng.integers(len(b)))] = int(rng.integers(256))
        elif kind == 2 and len(b) >= 4:  # a u32 set to a boundary value
            at = int(rng.integers(len(b) - 3))
            b[at:at + 4] = int(BOUNDARY_U32[int(rng.integers(len(BOUNDARY_U32)))]).to_bytes(4, "little")
        elif kind == 3:  # a slice cut out or repeated
            lo = int(rng.integers(len(b)))
            hi = min(len(b), lo + int(rng.integers(1, 64)))
            b[lo:hi] = b"" if rng.random() < 0.5 else b[lo:hi] * 2
        elif kind == 4 and len(b) > 8:  # truncated
            del b[int(rng.integers(8, len(b))):]
        elif names:  # a name made invalid, in place and keeping its length
            name = names[int(rng.integers(len(names)))]
            at = bytes(b).find(name)
            if at >= 0:
                bad = BAD_NAME_BYTES[int(rng.integers(len(BAD_NAME_BYTES)))]
                pos = at + int(rng.integers(max(1, len(name) - len(bad) + 1)))
                b[pos:pos + len(bad)] = bad[:len(name)]
    return bytes(b)


def tflite_seeds() -> dict[str, tuple[bytes, list[bytes]]]:
    """A small CNN (conv, depthwise, add, mean, fully connected) and the same with its 1x1
    weights in TFLite's sparse storage behind DENSIFY."""
    from pysparse.importers.tflite_sparse import sparsify_tflite
    from tflite_builder import TFLiteBuilder, options

    rng = np.random.default_rng(0)
    b = TFLiteBuilder()
    x = b.input("input_image", (1, 8, 8, 3))
    h = b.tensor("stem_out", (1, 8, 8, 8))
    b.op("CONV_2D", [x, b.const("stem_w", rng.standard_normal((8, 3, 3, 3))), b.const("stem_b", np.zeros(8))], [h],
         options("Conv2DOptions", padding=0, strideW=1, strideH=1, fusedActivationFunction=1))
    d = b.tensor("dw_out", (1, 8, 8, 8))
    b.op("DEPTHWISE_CONV_2D", [h, b.const("dw_w", rng.standard_normal((1, 3, 3, 8))), b.const("dw_b", np.zeros(8))],
         [d], options("DepthwiseConv2DOptions", padding=0, strideW=1, strideH=1, depthMultiplier=1,
                      fusedActivationFunction=3))
    w = rng.standard_normal((16, 1, 1, 8)) * (rng.random((16, 1, 1, 8)) < 0.2)
    p = b.tensor("project_out", (1, 8, 8, 16))
    b.op("CONV_2D", [d, b.const("project_w", w), b.const("project_b", np.zeros(16))], [p],
         options("Conv2DOptions", padding=0, strideW=1, strideH=1, fusedActivationFunction=0))
    m = b.tensor("pooled", (1, 16))
    b.op("MEAN", [p, b.const("axes", np.array([1, 2], np.int32), np.int32)], [m], options("ReducerOptions", keepDims=False))
    y = b.tensor("logits", (1, 4))
    b.op("FULLY_CONNECTED", [m, b.const("fc_w", rng.standard_normal((4, 16))), b.const("fc_b", np.zeros(4))], [y],
         options("FullyConnectedOptions", fusedActivationFunction=0))
    dense = b.finish([y])
    names = [n.encode() for n in ("input_image", "stem_out", "dw_out", "project_out", "pooled", "logits",
                                  "stem_w", "project_w", "fc_w")]
    sparse = sparsify_tflite(dense, min_sparsity=0.5)
    return {"tflite": (dense, names), "tflite_sparse": (sparse, names + [b"project_w_sparse"])}


def onnx_seeds() -> dict[str, tuple[bytes, list[bytes]]]:
    """A small CNN in ONNX: conv, batch norm, relu, residual add, pooling, reshape, gemm."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(1)
    c = {"conv_w": rng.standard_normal((8, 3, 3, 3)), "conv_b": np.zeros(8), "bn_s": np.ones(8),
         "bn_b": np.zeros(8), "bn_m": np.zeros(8), "bn_v": np.ones(8), "pw_w": rng.standard_normal((8, 8, 1, 1)),
         "fc_w": rng.standard_normal((4, 8)), "fc_b": np.zeros(4)}
    nodes = [
        helper.make_node("Conv", ["image", "conv_w", "conv_b"], ["conv_out"], "stem_conv", pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["conv_out", "bn_s", "bn_b", "bn_m", "bn_v"], ["bn_out"], "stem_bn"),
        helper.make_node("Relu", ["bn_out"], ["relu_out"], "stem_relu"),
        helper.make_node("Conv", ["relu_out", "pw_w"], ["pw_out"], "pointwise"),
        helper.make_node("Add", ["pw_out", "relu_out"], ["sum_out"], "residual"),
        helper.make_node("GlobalAveragePool", ["sum_out"], ["gap_out"], "pool"),
        helper.make_node("Flatten", ["gap_out"], ["flat_out"], "flatten"),
        helper.make_node("Gemm", ["flat_out", "fc_w", "fc_b"], ["logits"], "classifier", transB=1),
    ]
    graph = helper.make_graph(nodes, "fuzz_seed", [helper.make_tensor_value_info("image", TensorProto.FLOAT, (1, 3, 8, 8))],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, (1, 4))],
                              [numpy_helper.from_array(np.asarray(v, np.float32), n) for n, v in c.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    names = [n.encode() for n in ("stem_conv", "stem_bn", "pointwise", "residual", "classifier", "conv_out",
                                  "relu_out", "pw_out", "sum_out", "logits", "image", "fc_w")]
    return {"onnx": (model.SerializeToString(), names)}


def import_pack_read(data: bytes) -> None:
    """What the server does with an upload."""
    from pysparse.format import read_spnn
    from pysparse.importers import load_model
    from pysparse.pack import pack

    graph = load_model(data)
    read_spnn(pack(graph, "fp16", None, {}))
