"""Graph IR -> TFLite flatbuffer (NHWC), for running a pysparse graph in TFLite's runtimes.

    data = export_tflite(graph)                  # fp32 weights
    data = export_tflite(graph, weights="fp16")  # fp16 weights, each behind a DEQUANTIZE

Covers the ops of MobileNet-style CNNs: CONV2D (regular and depthwise, fused activation),
ADD, MEAN over H and W, FULLY_CONNECTED, RESHAPE, RELU, CLIP(0, 6), PAD. The IR is NCHW;
the file is NHWC, as TFLite wants: 4-D activations are stored as [N, H, W, C], conv
weights as [Cout, KH, KW, Cin] (depthwise [1, KH, KW, Cout]). The file is built with the
flatbuffers object API of the TFLite schema that LiteRT ships (`schema_py_generated`).
"""
from __future__ import annotations

import numpy as np

from ..errors import UnsupportedOpError
from ..ir import Graph, Op
from ..opset import ACT_NONE, ACT_RELU, ACT_RELU6, ACT_RELU_N1_TO_1
from ..reference import same_padding


def _schema():
    try:
        from ai_edge_litert import schema_py_generated as fb
    except ImportError as e:  # pragma: no cover - depends on the installation
        raise ImportError("export_tflite needs the `ai-edge-litert` package (pip install ai-edge-litert)") from e
    return fb


def _nhwc(shape: tuple) -> list[int]:
    return [shape[0], shape[2], shape[3], shape[1]] if len(shape) == 4 else list(shape)


class _Writer:
    """Accumulates tensors, buffers, operator codes and operators of one subgraph."""

    def __init__(self, fb, weights: str):
        self.fb = fb
        self.weights = weights
        self.model = fb.ModelT()
        self.model.version = 3
        self.model.description = "pysparse"
        empty = fb.BufferT()  # buffer 0: the empty buffer every activation points at
        self.model.buffers = [empty]
        self.model.operatorCodes = []
        self.sg = fb.SubGraphT()
        self.sg.tensors, self.sg.operators = [], []
        self.index: dict[str, int] = {}
        self.codes: dict[int, int] = {}

    def tensor(self, name: str, shape, dtype: int, data: np.ndarray | None = None) -> int:
        t = self.fb.TensorT()
        t.name, t.shape, t.type, t.buffer = name, [int(d) for d in shape], dtype, 0
        if data is not None:
            b = self.fb.BufferT()
            b.data = np.frombuffer(np.ascontiguousarray(data).tobytes(), np.uint8)
            self.model.buffers.append(b)
            t.buffer = len(self.model.buffers) - 1
        self.sg.tensors.append(t)
        return len(self.sg.tensors) - 1

    def activation(self, graph: Graph, name: str) -> int:
        if name not in self.index:
            self.index[name] = self.tensor(name, _nhwc(graph.tensors[name].shape), self.fb.TensorType.FLOAT32)
        return self.index[name]

    def constant(self, name: str, data: np.ndarray, weight: bool = False) -> int:
        """A float constant; weights go fp16 + DEQUANTIZE when asked."""
        TT = self.fb.TensorType
        if weight and self.weights == "fp16":
            half = self.tensor(name + "_fp16", data.shape, TT.FLOAT16, data.astype(np.float16))
            out = self.tensor(name, data.shape, TT.FLOAT32)
            self.op(self.fb.BuiltinOperator.DEQUANTIZE, [half], [out])
            return out
        return self.tensor(name, data.shape, TT.FLOAT32, data.astype(np.float32))

    def int32(self, name: str, values) -> int:
        data = np.asarray(values, np.int32)
        return self.tensor(name, data.shape, self.fb.TensorType.INT32, data)

    def op(self, code: int, inputs, outputs, options_type: int = 0, options=None):
        if code not in self.codes:
            oc = self.fb.OperatorCodeT()
            oc.builtinCode, oc.deprecatedBuiltinCode, oc.version = code, min(code, 127), 1
            self.model.operatorCodes.append(oc)
            self.codes[code] = len(self.model.operatorCodes) - 1
        o = self.fb.OperatorT()
        o.opcodeIndex, o.inputs, o.outputs = self.codes[code], list(inputs), list(outputs)
        o.builtinOptionsType, o.builtinOptions = options_type, options
        self.sg.operators.append(o)

    def finish(self, graph: Graph) -> bytes:
        import flatbuffers
        self.sg.inputs = [self.index[n] for n in graph.inputs]
        self.sg.outputs = [self.index[n] for n in graph.outputs]
        self.sg.name = "main"
        self.model.subgraphs = [self.sg]
        b = flatbuffers.Builder(1 << 20)
        b.Finish(self.model.Pack(b), file_identifier=b"TFL3")
        return bytes(b.Output())


def _fused(fb, op: Op) -> int:
    act = int(op.attr("act"))
    A = fb.ActivationFunctionType
    table = {ACT_NONE: A.NONE, ACT_RELU: A.RELU, ACT_RELU6: A.RELU6, ACT_RELU_N1_TO_1: A.RELU_N1_TO_1}
    return table[act]


def _conv(w: _Writer, graph: Graph, op: Op) -> None:
    fb, BO = w.fb, w.fb.BuiltinOperator
    x = graph.tensors[op.inputs[0]]
    weight = graph.constant(op.inputs[1])
    if weight is None:
        raise UnsupportedOpError("CONV2D", op.name, "weights computed at run time are not exported")
    cout, cin_g, kh, kw = weight.shape
    groups = int(op.attr("groups"))
    cin = x.shape[1]
    depthwise = groups > 1
    if depthwise and not (groups == cin and cin_g == 1):
        raise UnsupportedOpError("CONV2D", op.name, "grouped convolution other than depthwise")
    sh, sw = int(op.attr("stride_h")), int(op.attr("stride_w"))
    dh, dw = int(op.attr("dilation_h")), int(op.attr("dilation_w"))
    pads = tuple(int(op.attr(k)) for k in ("pad_top", "pad_bottom", "pad_left", "pad_right"))
    same = same_padding(x.shape[2], kh, sh, dh) + same_padding(x.shape[3], kw, sw, dw)
    inp = w.activation(graph, op.inputs[0])
    if pads == (0, 0, 0, 0):
        padding = fb.Padding.VALID
    elif pads == tuple(same):
        padding = fb.Padding.SAME
    else:  # e.g. PyTorch's symmetric padding at stride 2: an explicit PAD, then VALID
        padded_shape = [x.shape[0], x.shape[2] + pads[0] + pads[1], x.shape[3] + pads[2] + pads[3], x.shape[1]]
        padded = w.tensor(op.outputs[0] + "_padded_input", padded_shape, fb.TensorType.FLOAT32)
        spec = w.int32(op.outputs[0] + "_paddings", [[0, 0], [pads[0], pads[1]], [pads[2], pads[3]], [0, 0]])
        w.op(BO.PAD, [inp, spec], [padded], fb.BuiltinOptions.PadOptions, fb.PadOptionsT())
        inp, padding = padded, fb.Padding.VALID
    if depthwise:
        wt = w.constant(op.inputs[1], weight.reshape(cout, kh, kw).transpose(1, 2, 0)[None], weight=True)
    else:
        wt = w.constant(op.inputs[1], weight.transpose(0, 2, 3, 1), weight=True)
    bias = graph.constant(op.inputs[2]) if len(op.inputs) > 2 and op.inputs[2] else None
    b = w.constant(op.inputs[2] if bias is not None else op.outputs[0] + "_bias",
                   bias if bias is not None else np.zeros(cout, np.float32))
    out = w.activation(graph, op.outputs[0])
    if depthwise:
        o = fb.DepthwiseConv2DOptionsT()
        o.depthMultiplier = cout // cin
        code, otype = BO.DEPTHWISE_CONV_2D, fb.BuiltinOptions.DepthwiseConv2DOptions
    else:
        o = fb.Conv2DOptionsT()
        code, otype = BO.CONV_2D, fb.BuiltinOptions.Conv2DOptions
    o.padding, o.strideH, o.strideW = padding, sh, sw
    o.dilationHFactor, o.dilationWFactor = dh, dw
    o.fusedActivationFunction = _fused(fb, op)
    w.op(code, [inp, wt, b], [out], otype, o)


def _operand(w: _Writer, graph: Graph, name: str) -> int:
    data = graph.constant(name)
    if data is None:
        return w.activation(graph, name)
    if data.ndim == 4:
        data = data.transpose(0, 2, 3, 1)
    return w.constant(name, data)


def _add(w: _Writer, graph: Graph, op: Op) -> None:
    fb = w.fb
    a, b = (_operand(w, graph, n) for n in op.inputs)
    o = fb.AddOptionsT()
    o.fusedActivationFunction = _fused(fb, op)
    w.op(fb.BuiltinOperator.ADD, [a, b], [w.activation(graph, op.outputs[0])], fb.BuiltinOptions.AddOptions, o)


def _mean(w: _Writer, graph: Graph, op: Op) -> None:
    fb = w.fb
    rank = len(graph.tensors[op.inputs[0]].shape)
    mask = int(op.attr("axes_mask"))
    axes = [i for i in range(rank) if mask >> i & 1]
    if rank == 4:  # NCHW axis -> NHWC axis
        axes = sorted({0: 0, 1: 3, 2: 1, 3: 2}[a] for a in axes)
    keep = bool(op.attr("keepdims"))
    if rank == 4 and keep and 1 in [a for a in range(4) if mask >> a & 1]:
        raise UnsupportedOpError("MEAN", op.name, "over channels with keepdims")
    o = fb.ReducerOptionsT()
    o.keepDims = keep
    out = graph.tensors[op.outputs[0]]
    if rank == 4 and len(out.shape) != 4 and mask != 0b1100:
        raise UnsupportedOpError("MEAN", op.name, "only the spatial mean drops to a non-4-D result")
    w.op(fb.BuiltinOperator.MEAN, [w.activation(graph, op.inputs[0]), w.int32(op.outputs[0] + "_axes", axes)],
         [w.activation(graph, op.outputs[0])], fb.BuiltinOptions.ReducerOptions, o)


def _fully_connected(w: _Writer, graph: Graph, op: Op) -> None:
    fb = w.fb
    weight = graph.constant(op.inputs[1])
    if weight is None or len(graph.tensors[op.inputs[0]].shape) != 2:
        raise UnsupportedOpError("FULLY_CONNECTED", op.name, "needs constant weights and a 2-D input")
    wt = w.constant(op.inputs[1], weight, weight=True)
    inputs = [w.activation(graph, op.inputs[0]), wt]
    if len(op.inputs) > 2 and op.inputs[2]:
        inputs.append(w.constant(op.inputs[2], graph.constant(op.inputs[2])))
    o = fb.FullyConnectedOptionsT()
    o.fusedActivationFunction = _fused(fb, op)
    w.op(fb.BuiltinOperator.FULLY_CONNECTED, inputs, [w.activation(graph, op.outputs[0])],
         fb.BuiltinOptions.FullyConnectedOptions, o)


def _reshape(w: _Writer, graph: Graph, op: Op) -> None:
    """Row-major NCHW reshape: a 4-D side goes through a TRANSPOSE back to NCHW order, unless
    its spatial size is 1 (where NHWC and NCHW orders agree)."""
    fb, BO, TT = w.fb, w.fb.BuiltinOperator, w.fb.TensorType
    src, dst = graph.tensors[op.inputs[0]], graph.tensors[op.outputs[0]]
    x = w.activation(graph, op.inputs[0])
    if len(src.shape) == 4 and src.shape[2] * src.shape[3] > 1:
        t = w.tensor(op.outputs[0] + "_nchw_in", list(src.shape), TT.FLOAT32)
        w.op(BO.TRANSPOSE, [x, w.int32(op.outputs[0] + "_perm_in", [0, 3, 1, 2])], [t],
             fb.BuiltinOptions.TransposeOptions, fb.TransposeOptionsT())
        x = t
    out = w.activation(graph, op.outputs[0])
    back = len(dst.shape) == 4 and dst.shape[2] * dst.shape[3] > 1
    target = w.tensor(op.outputs[0] + "_nchw_out", list(dst.shape), TT.FLOAT32) if back else out
    o = fb.ReshapeOptionsT()
    o.newShape = _nhwc(dst.shape) if len(dst.shape) == 4 and not back else list(dst.shape)
    w.op(BO.RESHAPE, [x, w.int32(op.outputs[0] + "_shape", o.newShape)], [target], fb.BuiltinOptions.ReshapeOptions, o)
    if back:
        w.op(BO.TRANSPOSE, [target, w.int32(op.outputs[0] + "_perm_out", [0, 2, 3, 1])], [out],
             fb.BuiltinOptions.TransposeOptions, fb.TransposeOptionsT())


def _unary(w: _Writer, graph: Graph, op: Op) -> None:
    BO = w.fb.BuiltinOperator
    if op.type == "RELU":
        code = BO.RELU
    elif (float(op.attr("min")), float(op.attr("max"))) == (0.0, 6.0):
        code = BO.RELU6
    elif (float(op.attr("min")), float(op.attr("max"))) == (-1.0, 1.0):
        code = BO.RELU_N1_TO_1
    else:
        raise UnsupportedOpError("CLIP", op.name, "only the ranges [0, 6] and [-1, 1] are exported")
    w.op(code, [w.activation(graph, op.inputs[0])], [w.activation(graph, op.outputs[0])])


def _pad(w: _Writer, graph: Graph, op: Op) -> None:
    fb = w.fb
    if float(op.attr("value")) != 0.0:
        raise UnsupportedOpError("PAD", op.name, "only zero padding is exported")
    p = [[int(op.attr(f"pad{i}_begin")), int(op.attr(f"pad{i}_end"))] for i in range(4)]
    spec = [p[0], p[2], p[3], p[1]]  # NCHW -> NHWC
    w.op(fb.BuiltinOperator.PAD, [w.activation(graph, op.inputs[0]), w.int32(op.outputs[0] + "_paddings", spec)],
         [w.activation(graph, op.outputs[0])], fb.BuiltinOptions.PadOptions, fb.PadOptionsT())


EXPORTERS = {"CONV2D": _conv, "ADD": _add, "MEAN": _mean, "FULLY_CONNECTED": _fully_connected,
             "RESHAPE": _reshape, "RELU": _unary, "CLIP": _unary, "PAD": _pad}


def export_tflite(graph: Graph, weights: str = "fp32") -> bytes:
    """The TFLite flatbuffer of `graph` (batch 1, one subgraph). Raises UnsupportedOpError
    naming the first op that has no TFLite form here."""
    if weights not in ("fp32", "fp16"):
        raise ValueError(f"weights must be 'fp32' or 'fp16', not {weights!r}")
    graph.validate()
    for op in graph.ops:
        if op.type not in EXPORTERS:
            raise UnsupportedOpError(op.type, op.name, "no TFLite export for this op")
    w = _Writer(_schema(), weights)
    for name in graph.inputs:
        w.activation(graph, name)
    for op in graph.ops:
        EXPORTERS[op.type](w, graph, op)
    return w.finish(graph)
