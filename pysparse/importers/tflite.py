"""TFLite importer: a `.tflite` flatbuffer in, a pysparse `Graph` (NCHW semantics) out.

    graph = load_tflite("hand_landmark_full.tflite")

What the translation keeps and changes:
- The graph input is NCHW: a TFLite image input `[1, H, W, 3]` becomes `[1, 3, H, W]`.
  Values are in the model's own range (no normalisation is added): the hand landmark
  models take RGB in [0, 1]; see `pysparse.modelinfo` for what each known model expects.
- Every 4-D tensor becomes NCHW (TFLite's are NHWC); tensors of other ranks keep their
  shape. So the outputs keep TFLite's shapes except 4-D ones, which become NCHW.
- Results are exactly the model's: SAME padding becomes explicit (asymmetric) pads, axes
  of CONCATENATION, MEAN, PAD, SOFTMAX and TRANSPOSE are remapped, and a reshape of a 4-D
  tensor goes through a TRANSPOSE back to NHWC order unless both orders are the same.
- Constant weights behind DEQUANTIZE (fp16, int8) and DENSIFY (TFLite's sparse storage)
  become plain float32 constants; TFLite's sparse tensors are densified.
- Only translation happens here; `pysparse.passes` optimises.

An op or op variant pysparse cannot run raises `UnsupportedOpError` naming the op and its
node (the TFLite output tensor's name); a file that is not a valid TFLite model raises
`ModelFormatError`.
"""
from __future__ import annotations

import os
import struct

import flatbuffers
import numpy as np
import tflite
from tflite.utils import BUILTIN_OPCODE2NAME

from .. import opset
from ..errors import ModelFormatError, PysparseError, UnsupportedOpError
from ..ir import Graph
from .limits import ElementBudget, finish
from ..reference import conv_output_size, same_padding
from .tflite_sparse import densify, read_sparsity

TFLITE_MAGIC = b"TFL3"
NHWC_TO_NCHW = (0, 3, 1, 2)
NCHW_TO_NHWC = (0, 2, 3, 1)
NHWC_AXIS_TO_NCHW = {0: 0, 1: 2, 2: 3, 3: 1}

_FUSED_ACT = {0: opset.ACT_NONE, 1: opset.ACT_RELU, 2: opset.ACT_RELU_N1_TO_1, 3: opset.ACT_RELU6}
_NUMPY_TYPES = {
    tflite.TensorType.FLOAT32: np.float32, tflite.TensorType.FLOAT16: np.float16,
    tflite.TensorType.INT32: np.int32, tflite.TensorType.INT64: np.int64,
    tflite.TensorType.INT8: np.int8, tflite.TensorType.UINT8: np.uint8,
    tflite.TensorType.INT16: np.int16, tflite.TensorType.FLOAT64: np.float64,
    tflite.TensorType.BOOL: np.bool_,
}
_OPTIONS = {  # op name -> options table class
    "CONV_2D": tflite.Conv2DOptions, "DEPTHWISE_CONV_2D": tflite.DepthwiseConv2DOptions,
    "FULLY_CONNECTED": tflite.FullyConnectedOptions, "ADD": tflite.AddOptions, "SUB": tflite.SubOptions,
    "MUL": tflite.MulOptions, "DIV": tflite.DivOptions, "MAX_POOL_2D": tflite.Pool2DOptions,
    "AVERAGE_POOL_2D": tflite.Pool2DOptions, "MEAN": tflite.ReducerOptions,
    "CONCATENATION": tflite.ConcatenationOptions, "RESIZE_BILINEAR": tflite.ResizeBilinearOptions,
    "RESIZE_NEAREST_NEIGHBOR": tflite.ResizeNearestNeighborOptions, "SOFTMAX": tflite.SoftmaxOptions,
    "DEPTH_TO_SPACE": tflite.DepthToSpaceOptions, "TRANSPOSE_CONV": tflite.TransposeConvOptions,
    "LEAKY_RELU": tflite.LeakyReluOptions,
}


def load_tflite(path_or_bytes, max_elements: int | None = None) -> Graph:
    """Imports a TFLite model (a path or the file's bytes) into a Graph; max_elements raises
    the bound on what the import may build (importers.limits) for trusted files."""
    if isinstance(path_or_bytes, (str, os.PathLike)):
        name = os.path.basename(os.fspath(path_or_bytes))
        with open(path_or_bytes, "rb") as f:
            data = f.read()
    else:
        name, data = "model.tflite", bytes(path_or_bytes)
    graph = _Importer(data, max_elements).run()
    graph.metadata.setdefault("name", os.path.splitext(name)[0])
    return finish(graph)


def _is_memory_noop(shape, perm) -> bool:
    """True when transposing `shape` by `perm` keeps every element at its flat position
    (the axes longer than 1 stay in order), so a RESHAPE does the same job."""
    big = [p for p in perm if shape[p] != 1]
    return big == sorted(big)


class _Importer:
    def __init__(self, data: bytes, max_elements: int | None = None):
        if len(data) < 8 or data[4:8] != TFLITE_MAGIC:
            raise ModelFormatError("not a TFLite model (no TFL3 identifier at byte 4)")
        self.data = data
        try:
            self.model = tflite.Model.GetRootAsModel(data, 0)
            if self.model.SubgraphsLength() < 1:
                raise ModelFormatError("TFLite model has no subgraph")
            self.sg = self.model.Subgraphs(0)
            self.opnames = [self._opcode_name(self.model.OperatorCodes(i))
                            for i in range(self.model.OperatorCodesLength())]
            self.tensors = [self.sg.Tensors(i) for i in range(self.sg.TensorsLength())]
        except ModelFormatError:
            raise
        except Exception as e:  # flatbuffers raises assorted errors on garbage
            raise ModelFormatError(f"cannot parse TFLite flatbuffer: {e}") from e
        self.g = Graph()
        self.budget = ElementBudget(len(data), max_elements)  # for densified sparse tensors
        self.names: dict[int, str] = {}  # TFLite tensor index -> IR tensor name
        self.consts: dict[int, np.ndarray] = {}  # constant values in TFLite layout

    # -- reading the flatbuffer ---------------------------------------------------------
    @staticmethod
    def _opcode_name(oc) -> str:
        code = max(oc.BuiltinCode(), oc.DeprecatedBuiltinCode())
        if code == tflite.BuiltinOperator.CUSTOM:
            return "CUSTOM:" + (oc.CustomCode() or b"").decode("utf-8", "replace")
        return BUILTIN_OPCODE2NAME.get(code, f"BUILTIN_{code}")

    def shape(self, i: int) -> tuple[int, ...]:
        s = self.tensors[i].ShapeAsNumpy()
        return tuple(int(d) for d in s) if not isinstance(s, int) else ()

    def tname(self, i: int) -> str:
        return (self.tensors[i].Name() or b"").decode("utf-8", "replace") or f"tensor_{i}"

    def _buffer(self, i: int) -> np.ndarray | None:
        t = self.tensors[i]
        b = t.Buffer()
        if b <= 0 or b >= self.model.BuffersLength():
            return None
        buf = self.model.Buffers(b)
        if buf.Offset() > 1:  # large models keep buffers after the flatbuffer
            start, size = buf.Offset(), buf.Size()
            if start + size > len(self.data):
                raise ModelFormatError(f"tensor {self.tname(i)!r}: buffer outside the file")
            raw = np.frombuffer(self.data, np.uint8, size, start)
        else:
            raw = buf.DataAsNumpy()
            if isinstance(raw, int) or raw.size == 0:
                if t.Sparsity() is None:
                    return None
                raw = np.zeros(0, np.uint8)  # a sparse tensor with no stored values
        dtype = _NUMPY_TYPES.get(t.Type())
        if dtype is None:
            raise UnsupportedOpError("tensor type", self.tname(i), f"type code {t.Type()}")
        if raw.size % np.dtype(dtype).itemsize:
            raise ModelFormatError(f"tensor {self.tname(i)!r}: buffer size does not fit its type")
        values = np.frombuffer(raw.tobytes(), dtype)
        shape = self.shape(i)
        sparsity = t.Sparsity()
        if sparsity is not None:
            return densify(values, shape, read_sparsity(sparsity), self.budget)
        if values.size != int(np.prod(shape, dtype=np.int64)):
            raise ModelFormatError(f"tensor {self.tname(i)!r}: {values.size} values for shape {shape}")
        return values.reshape(shape)

    def const(self, i: int) -> np.ndarray | None:
        """Value of TFLite tensor i in its own layout, if it is a constant (or folded into one)."""
        if i < 0:
            return None
        if i not in self.consts:
            v = self._buffer(i)
            if v is None:
                return None
            self.consts[i] = v
        return self.consts[i]

    def need_const(self, i: int, op: str, node: str, what: str) -> np.ndarray:
        v = self.const(i)
        if v is None:
            raise UnsupportedOpError(op, node, f"{what} must be a constant")
        return v

    def options(self, op, opname: str):
        table = op.BuiltinOptions()
        cls = _OPTIONS[opname]
        if table is None:  # absent options: an empty table, whose fields read as defaults
            b = flatbuffers.Builder(16)
            b.StartObject(0)
            b.Finish(b.EndObject())
            return cls.GetRootAs(b.Output(), 0)
        o = cls()
        o.Init(table.Bytes, table.Pos)
        return o

    # -- IR values ------------------------------------------------------------------------
    def ir_shape(self, i: int) -> tuple[int, ...]:
        s = self.shape(i)
        return tuple(s[p] for p in NHWC_TO_NCHW) if len(s) == 4 else s

    def value(self, i: int) -> str:
        """IR name of TFLite tensor i (constants are materialised in IR layout on first use)."""
        if i in self.names:
            return self.names[i]
        v = self.const(i)
        if v is None:
            raise ModelFormatError(f"tensor {self.tname(i)!r} is read before any op writes it")
        v = v.astype(np.float32)
        if v.ndim == 4:
            v = v.transpose(NHWC_TO_NCHW)
        name = self.g.add_constant(self.g.unique_name(self.tname(i)), v)
        self.names[i] = name
        return name

    def new(self, base: str, shape) -> str:
        name = self.g.unique_name(base)
        self.g.add_tensor(name, shape)
        return name

    def output(self, i: int) -> str:
        """Creates the IR tensor for TFLite output tensor i."""
        name = self.new(self.tname(i), self.ir_shape(i))
        self.names[i] = name
        return name

    def emit(self, type_: str, inputs, out: str, node: str, **attrs) -> str:
        self.g.add_op(type_, inputs, [out], name=node, **attrs)
        return out

    def transpose(self, x: str, perm, node: str) -> str:
        shape = self.g.tensors[x].shape
        out_shape = tuple(shape[p] for p in perm)
        if list(perm) == list(range(len(perm))):
            return x
        out = self.new(x + "_t", out_shape)
        if _is_memory_noop(shape, perm):
            return self.emit("RESHAPE", [x], out, node)
        return self.emit("TRANSPOSE", [x], out, node, **{f"perm{k}": int(p) for k, p in enumerate(perm)})

    def to_tflite_layout(self, i: int, node: str) -> str:
        """IR value of tensor i in TFLite's own axis order (NHWC for 4-D)."""
        x = self.value(i)
        return self.transpose(x, NCHW_TO_NHWC, node) if len(self.shape(i)) == 4 else x

    def from_tflite_layout(self, x: str, out: str, node: str) -> str:
        """Writes `x` (TFLite layout, the shape of `out` before conversion) into `out`."""
        xs = self.g.tensors[x].shape
        if len(xs) == 4:
            perm = NHWC_TO_NCHW
            op = "RESHAPE" if _is_memory_noop(xs, perm) else "TRANSPOSE"
            attrs = {} if op == "RESHAPE" else {f"perm{k}": p for k, p in enumerate(perm)}
            return self.emit(op, [x], out, node, **attrs)
        return self.emit("RESHAPE", [x], out, node)

    def broadcast_operand(self, i: int, out_rank: int, node: str) -> str:
        """Operand i of a broadcasting op whose output has rank 4 (NCHW in the IR)."""
        s = self.shape(i)
        if len(s) == out_rank or out_rank != 4:
            return self.value(i)
        s4 = (1,) * (4 - len(s)) + s
        ir = tuple(s4[p] for p in NHWC_TO_NCHW)
        v = self.const(i)
        if v is not None:
            name = self.g.unique_name(self.tname(i) + "_nchw")
            return self.g.add_constant(name, v.astype(np.float32).reshape(s4).transpose(NHWC_TO_NCHW))
        r = self.new(self.tname(i) + "_4d", s4)
        self.emit("RESHAPE", [self.value(i)], r, node)
        return self.transpose(r, NHWC_TO_NCHW, node) if ir != s4 else r

    def finish_with_act(self, type_: str, inputs, out_index: int, node: str, code: int, **attrs):
        """Emits an op with its fused activation as the IR `act` attribute."""
        self.emit(type_, inputs, self.output(out_index), node, act=_fused_act(code, node), **attrs)

    # -- the translation ------------------------------------------------------------------
    def run(self) -> Graph:
        try:
            graph = self._run()
            graph.validate()
            return graph
        except PysparseError:
            raise
        except Exception as e:  # a corrupt flatbuffer fails in many ways deep inside readers
            raise ModelFormatError(f"malformed TFLite model ({type(e).__name__}: {e})") from e

    def _run(self) -> Graph:
        sg = self.sg
        try:
            inputs = [int(sg.Inputs(k)) for k in range(sg.InputsLength())]
            outputs = [int(sg.Outputs(k)) for k in range(sg.OutputsLength())]
            ops = [sg.Operators(k) for k in range(sg.OperatorsLength())]
        except Exception as e:
            raise ModelFormatError(f"cannot parse TFLite subgraph: {e}") from e
        for i in inputs:
            if not 0 <= i < len(self.tensors):
                raise ModelFormatError(f"input tensor index {i} out of range")
            self.g.inputs.append(self.output(i))
        for op in ops:
            self.translate(op)
        for i in outputs:
            if not 0 <= i < len(self.tensors):
                raise ModelFormatError(f"output tensor index {i} out of range")
            self.g.outputs.append(self.value(i))
        return self.g

    def translate(self, op) -> None:
        try:
            idx = op.OpcodeIndex()
            opname = self.opnames[idx]
            ins = [int(v) for v in op.InputsAsNumpy()] if op.InputsLength() else []
            outs = [int(v) for v in op.OutputsAsNumpy()] if op.OutputsLength() else []
        except IndexError as e:
            raise ModelFormatError(f"operator refers to a missing opcode: {e}") from e
        for i in ins + outs:
            if i >= len(self.tensors):
                raise ModelFormatError(f"{opname}: tensor index {i} out of range")
        node = self.tname(outs[0]) if outs else opname
        handler = _HANDLERS.get(opname)
        if handler is None:
            raise UnsupportedOpError(opname, node)
        handler(self, op, opname, ins, outs, node)


# -- op handlers: (importer, op, name, inputs, outputs, node) ------------------------------

def _fused_act(code: int, node: str) -> int:
    # TFLite's float kernels clamp only for ReLU, ReLU6 and ReLU_N1_TO_1 and silently skip
    # a fused TANH or SIGN_BIT; rather than copy that, such a model is refused.
    if code in _FUSED_ACT:
        return _FUSED_ACT[code]
    raise UnsupportedOpError("fused activation", node, f"code {code} (only ReLU, ReLU6, ReLU_N1_TO_1)")


def _fold_constant(imp: _Importer, value: np.ndarray, out: int) -> None:
    imp.consts[out] = value


def _dequantize(imp, op, opname, ins, outs, node):
    v = imp.const(ins[0])
    if v is None:
        raise UnsupportedOpError(opname, node, "only constant (weight) inputs are supported")
    t = imp.tensors[ins[0]]
    if v.dtype in (np.int8, np.uint8, np.int16, np.int32):
        q = t.Quantization()
        if q is None or q.ScaleLength() == 0:
            raise UnsupportedOpError(opname, node, "integer input without quantization parameters")
        scale = q.ScaleAsNumpy().astype(np.float64)
        zero = q.ZeroPointAsNumpy().astype(np.float64) if q.ZeroPointLength() else np.zeros_like(scale)
        shape = [1] * v.ndim
        if scale.size > 1:
            shape[q.QuantizedDimension()] = scale.size
        v = (v.astype(np.float64) - zero.reshape(shape)) * scale.reshape(shape)
    _fold_constant(imp, v.astype(np.float32), outs[0])


def _densify(imp, op, opname, ins, outs, node):
    v = imp.const(ins[0])  # _buffer densifies tensors that carry SparsityParameters
    if v is None:
        raise UnsupportedOpError(opname, node, "only constant sparse inputs are supported")
    _fold_constant(imp, v, outs[0])


def _conv_pads(imp, o, x_shape, kh, kw, node, dh=1, dw=1, out_index=None):
    """Explicit pads and strides of a TFLite convolution or pool; checks the output size."""
    if len(x_shape) != 4:
        raise ModelFormatError(f"{node!r}: input is not 4-D")
    h, w = x_shape[1], x_shape[2]  # NHWC
    sh, sw = o.StrideH(), o.StrideW()
    if min(sh, sw, dh, dw, kh, kw) < 1:
        raise ModelFormatError(f"{node!r}: stride, dilation and kernel size must be at least 1")
    if o.Padding() == tflite.Padding.SAME:
        top, bottom = same_padding(h, kh, sh, dh)
        left, right = same_padding(w, kw, sw, dw)
    elif o.Padding() == tflite.Padding.VALID:
        top = bottom = left = right = 0
    else:
        raise UnsupportedOpError("padding", node, f"mode {o.Padding()}")
    if out_index is not None:
        got = imp.shape(out_index)[1:3]
        want = (conv_output_size(h, kh, sh, dh, top, bottom), conv_output_size(w, kw, sw, dw, left, right))
        if tuple(got) != want:
            raise ModelFormatError(f"{node!r}: output is {tuple(got)} pixels, the op computes {want}")
    return dict(stride_h=sh, stride_w=sw, pad_top=top, pad_left=left, pad_bottom=bottom, pad_right=right)


def _bias(imp, ins, k, opname, node) -> str:
    """IR constant for the optional bias input ins[k] ("" when absent)."""
    if len(ins) <= k or ins[k] < 0:
        return ""
    b = imp.need_const(ins[k], opname, node, "bias")
    return imp.g.add_constant(imp.g.unique_name(imp.tname(ins[k])), b.astype(np.float32))


def _weight(imp, array, base) -> str:
    return imp.g.add_constant(imp.g.unique_name(base), np.ascontiguousarray(array, dtype=np.float32))


def _check_channels(imp, out_index, channels, node):
    if imp.shape(out_index)[-1] != channels:
        raise ModelFormatError(f"{node!r}: output has {imp.shape(out_index)[-1]} channels, weights give {channels}")


def _conv2d(imp, op, opname, ins, outs, node):
    o = imp.options(op, opname)
    w = imp.need_const(ins[1], opname, node, "filter")  # [Cout, KH, KW, Cin/groups]
    xs = imp.shape(ins[0])
    cout, kh, kw, cin_g = w.shape
    if xs[3] % cin_g:
        raise UnsupportedOpError(opname, node, f"{xs[3]} input channels, filter has {cin_g}")
    dh, dw = o.DilationHFactor(), o.DilationWFactor()
    attrs = _conv_pads(imp, o, xs, kh, kw, node, dh, dw, outs[0])
    attrs.update(dilation_h=dh, dilation_w=dw, groups=xs[3] // cin_g)
    _check_channels(imp, outs[0], cout, node)
    wt = _weight(imp, w.transpose(0, 3, 1, 2), imp.tname(ins[1]))
    imp.finish_with_act("CONV2D", [imp.value(ins[0]), wt, _bias(imp, ins, 2, opname, node)], outs[0], node,
                        o.FusedActivationFunction(), **attrs)


def _depthwise(imp, op, opname, ins, outs, node):
    o = imp.options(op, opname)
    w = imp.need_const(ins[1], opname, node, "filter")  # [1, KH, KW, C * multiplier]
    xs = imp.shape(ins[0])
    _, kh, kw, cout = w.shape
    if cout % xs[3]:
        raise UnsupportedOpError(opname, node, f"{cout} outputs for {xs[3]} input channels")
    dh, dw = o.DilationHFactor(), o.DilationWFactor()
    attrs = _conv_pads(imp, o, xs, kh, kw, node, dh, dw, outs[0])
    attrs.update(dilation_h=dh, dilation_w=dw, groups=xs[3])
    _check_channels(imp, outs[0], cout, node)
    wt = _weight(imp, w.transpose(3, 0, 1, 2), imp.tname(ins[1]))
    imp.finish_with_act("CONV2D", [imp.value(ins[0]), wt, _bias(imp, ins, 2, opname, node)], outs[0], node,
                        o.FusedActivationFunction(), **attrs)


def _transpose_conv_common(imp, x, w_index, bias, out, node, opname, padding, sh, sw, act=0):
    w = imp.need_const(w_index, opname, node, "filter")  # [Cout, KH, KW, Cin]
    cout, kh, kw, cin = w.shape
    xs, os_ = imp.shape(x), imp.shape(out)
    if xs[3] != cin or os_[3] != cout:
        raise UnsupportedOpError(opname, node, "filter channels do not match input/output")
    full_h, full_w = (xs[1] - 1) * sh + kh, (xs[2] - 1) * sw + kw
    if padding == tflite.Padding.SAME:
        # TFLite pads as for a forward convolution from the output size to the input size.
        top = same_padding(os_[1], kh, sh)[0]
        left = same_padding(os_[2], kw, sw)[0]
    else:
        top = left = 0
    bottom, right = full_h - os_[1] - top, full_w - os_[2] - left
    if bottom < 0 or right < 0:
        raise UnsupportedOpError(opname, node, "output larger than the transposed convolution produces")
    wt = _weight(imp, w.transpose(3, 0, 1, 2), imp.tname(w_index))
    imp.finish_with_act("CONV_TRANSPOSE2D", [imp.value(x), wt, bias], out, node, act,
                        stride_h=sh, stride_w=sw, pad_top=top, pad_left=left, pad_bottom=bottom, pad_right=right)


def _transpose_conv(imp, op, opname, ins, outs, node):
    o = imp.options(op, opname)  # inputs: output_shape, filter, x, bias?
    bias = _bias(imp, ins, 3, opname, node)
    act = o.FusedActivationFunction() if hasattr(o, "FusedActivationFunction") else 0
    _transpose_conv_common(imp, ins[2], ins[1], bias, outs[0], node, opname, o.Padding(),
                           o.StrideH(), o.StrideW(), act)


def _transpose_conv_bias(imp, op, opname, ins, outs, node):
    # MediaPipe's custom op: inputs x, filter, bias; options are the raw C struct
    # {int32 padding (1 SAME, 2 VALID); int32 stride_width; int32 stride_height}.
    raw = op.CustomOptionsAsNumpy()
    if isinstance(raw, int) or raw.size < 12:
        raise UnsupportedOpError(opname, node, "missing custom options")
    padding, stride_w, stride_h = struct.unpack("<3i", raw[:12].tobytes())
    padding = {1: tflite.Padding.SAME, 2: tflite.Padding.VALID}.get(padding)
    if padding is None:
        raise UnsupportedOpError(opname, node, "unknown padding")
    _transpose_conv_common(imp, ins[0], ins[1], _bias(imp, ins, 2, opname, node), outs[0], node, opname,
                           padding, stride_h, stride_w)


def _fully_connected(imp, op, opname, ins, outs, node):
    o = imp.options(op, opname)
    w = imp.need_const(ins[1], opname, node, "weights")  # [M, K]
    if o.KeepNumDims() and len(imp.shape(ins[0])) != 2:
        raise UnsupportedOpError(opname, node, "keep_num_dims with a non-2-D input")
    m, k = w.shape
    xs = imp.shape(ins[0])
    x = imp.value(ins[0])
    if len(xs) != 2 or xs[1] != k:
        # TFLite flattens the input in its own (NHWC) order to [-1, K].
        flat = imp.to_tflite_layout(ins[0], node)
        n = int(np.prod(xs)) // k
        x = imp.new(imp.tname(ins[0]) + "_flat", (n, k))
        imp.emit("RESHAPE", [flat], x, node)
    imp.finish_with_act("FULLY_CONNECTED", [x, _weight(imp, w, imp.tname(ins[1])), _bias(imp, ins, 2, opname, node)],
                        outs[0], node, o.FusedActivationFunction())


def _binary(ir_type):
    def handler(imp, op, opname, ins, outs, node):
        o = imp.options(op, opname)
        rank = len(imp.shape(outs[0]))
        a, b = (imp.broadcast_operand(i, rank, node) for i in ins[:2])
        code = o.FusedActivationFunction() if hasattr(o, "FusedActivationFunction") else 0
        imp.finish_with_act(ir_type, [a, b], outs[0], node, code)
    return handler


def _unary(ir_type, **attrs):
    def handler(imp, op, opname, ins, outs, node):
        imp.emit(ir_type, [imp.value(ins[0])], imp.output(outs[0]), node, **attrs)
    return handler


def _leaky_relu(imp, op, opname, ins, outs, node):
    alpha = imp.options(op, opname).Alpha()
    imp.emit("LEAKY_RELU", [imp.value(ins[0])], imp.output(outs[0]), node, alpha=float(alpha))


def _prelu(imp, op, opname, ins, outs, node):
    rank = len(imp.shape(outs[0]))
    slope = imp.broadcast_operand(ins[1], rank, node)
    imp.emit("PRELU", [imp.value(ins[0]), slope], imp.output(outs[0]), node)


def _pool(ir_type):
    def handler(imp, op, opname, ins, outs, node):
        o = imp.options(op, opname)
        kh, kw = o.FilterHeight(), o.FilterWidth()
        attrs = _conv_pads(imp, o, imp.shape(ins[0]), kh, kw, node, out_index=outs[0])
        if ir_type == "AVG_POOL2D":
            attrs["count_include_pad"] = 0  # TFLite divides by the in-bounds count
        imp.finish_with_act(ir_type, [imp.value(ins[0])], outs[0], node, o.FusedActivationFunction(),
                            kernel_h=kh, kernel_w=kw, **attrs)
    return handler


def _mean(imp, op, opname, ins, outs, node):
    o = imp.options(op, opname)
    xs = imp.shape(ins[0])
    axes = sorted({int(a) % len(xs) for a in np.ravel(imp.need_const(ins[1], opname, node, "axes"))})
    keep = bool(o.KeepDims())
    if len(xs) != 4:
        mask = sum(1 << a for a in axes)
        imp.emit("MEAN", [imp.value(ins[0])], imp.output(outs[0]), node, axes_mask=mask, keepdims=int(keep))
        return
    ir_axes = sorted(NHWC_AXIS_TO_NCHW[a] for a in axes)
    mask = sum(1 << a for a in ir_axes)
    if keep:
        imp.emit("MEAN", [imp.value(ins[0])], imp.output(outs[0]), node, axes_mask=mask, keepdims=1)
        return
    # The kept axes come out in NCHW order; TFLite's output has them in NHWC order.
    kept_nhwc = [a for a in range(4) if a not in axes]
    kept_ir = [a for a in range(4) if a not in ir_axes]
    ir_shape = tuple(imp.ir_shape(ins[0])[a] for a in kept_ir)
    perm = [kept_ir.index(NHWC_AXIS_TO_NCHW[a]) for a in kept_nhwc]
    if perm == sorted(perm):
        imp.emit("MEAN", [imp.value(ins[0])], imp.output(outs[0]), node, axes_mask=mask, keepdims=0)
        return
    tmp = imp.new(node + "_mean", ir_shape)
    imp.emit("MEAN", [imp.value(ins[0])], tmp, node, axes_mask=mask, keepdims=0)
    imp.emit("TRANSPOSE", [tmp], imp.output(outs[0]), node, **{f"perm{k}": p for k, p in enumerate(perm)})


def _concat(imp, op, opname, ins, outs, node):
    o = imp.options(op, opname)
    rank = len(imp.shape(outs[0]))
    axis = o.Axis() % rank
    if rank == 4:
        axis = NHWC_AXIS_TO_NCHW[axis]
    act = _fused_act(o.FusedActivationFunction(), node)
    xs = [imp.value(i) for i in ins]
    if act == opset.ACT_NONE:
        imp.emit("CONCAT", xs, imp.output(outs[0]), node, axis=axis)
        return
    tmp = imp.new(node + "_concat", imp.ir_shape(outs[0]))  # CONCAT has no act: clamp after it
    imp.emit("CONCAT", xs, tmp, node, axis=axis)
    lo, hi = opset.ACTIVATION_RANGES[act]
    imp.emit("CLIP", [tmp], imp.output(outs[0]), node, min=lo, max=hi)


def _pad(imp, op, opname, ins, outs, node):
    pads = imp.need_const(ins[1], opname, node, "paddings").astype(np.int64).reshape(-1, 2)
    value = 0.0
    if len(ins) > 2 and ins[2] >= 0:  # PADV2
        value = float(np.ravel(imp.need_const(ins[2], opname, node, "constant value"))[0])
    rank = pads.shape[0]
    if rank > 4 or (pads < 0).any():
        raise UnsupportedOpError(opname, node, "padding of more than 4 axes or negative padding")
    if rank == 4:
        pads = pads[list(NHWC_TO_NCHW)]  # row k: the NHWC axis that NCHW axis k comes from
    attrs = {}
    for k in range(rank):
        attrs[f"pad{k}_begin"], attrs[f"pad{k}_end"] = int(pads[k, 0]), int(pads[k, 1])
    imp.emit("PAD", [imp.value(ins[0])], imp.output(outs[0]), node, value=value, **attrs)


def _resize(ir_type):
    def handler(imp, op, opname, ins, outs, node):
        o = imp.options(op, opname)
        half = o.HalfPixelCenters() if hasattr(o, "HalfPixelCenters") else False
        imp.emit(ir_type, [imp.value(ins[0])], imp.output(outs[0]), node,
                 align_corners=int(o.AlignCorners()), half_pixel_centers=int(half))
    return handler


def _reshape(imp, op, opname, ins, outs, node):
    """RESHAPE, SQUEEZE, EXPAND_DIMS: a row-major reshape in TFLite's own layout."""
    in_shape, out_shape = imp.shape(ins[0]), imp.shape(outs[0])
    if int(np.prod(in_shape)) != int(np.prod(out_shape)):
        raise ModelFormatError(f"{opname} {node!r}: {in_shape} -> {out_shape} changes the element count")
    x = imp.to_tflite_layout(ins[0], node)
    if len(out_shape) == 4:
        flat = imp.new(node + "_nhwc", out_shape) if tuple(imp.g.tensors[x].shape) != out_shape else x
        if flat != x:
            imp.emit("RESHAPE", [x], flat, node)
        imp.from_tflite_layout(flat, imp.output(outs[0]), node)
    else:
        imp.emit("RESHAPE", [x], imp.output(outs[0]), node)


def _transpose(imp, op, opname, ins, outs, node):
    perm = [int(p) for p in np.ravel(imp.need_const(ins[1], opname, node, "perm"))]
    rank = len(perm)
    if sorted(perm) != list(range(rank)) or rank > 6:
        raise UnsupportedOpError(opname, node, f"bad permutation {perm}")
    # IR_out = tfl_out.T(to_ir) = tfl_in.T(perm).T(to_ir) = IR_in.T(from_ir).T(perm).T(to_ir)
    to_ir = NHWC_TO_NCHW if rank == 4 else tuple(range(rank))
    from_ir = NCHW_TO_NHWC if rank == 4 else tuple(range(rank))
    combined = [from_ir[perm[to_ir[k]]] for k in range(rank)]
    x = imp.value(ins[0])
    xs = imp.g.tensors[x].shape
    out = imp.output(outs[0])
    if _is_memory_noop(xs, combined):
        imp.emit("RESHAPE", [x], out, node)
    else:
        imp.emit("TRANSPOSE", [x], out, node, **{f"perm{k}": p for k, p in enumerate(combined)})


def _softmax(imp, op, opname, ins, outs, node):
    beta = imp.options(op, opname).Beta()
    axis = 1 if len(imp.shape(ins[0])) == 4 else -1  # TFLite: the last (channel) axis
    imp.emit("SOFTMAX", [imp.value(ins[0])], imp.output(outs[0]), node, axis=axis, beta=float(beta))


def _depth_to_space(imp, op, opname, ins, outs, node):
    block = imp.options(op, opname).BlockSize()
    # TFLite's NHWC depth-to-space reads channel (i * block + j) * C' + c: ONNX's DCR order.
    imp.emit("DEPTH_TO_SPACE", [imp.value(ins[0])], imp.output(outs[0]), node, block=block, mode=opset.D2S_DCR)


def _relu_n(lo, hi):
    def handler(imp, op, opname, ins, outs, node):
        imp.emit("CLIP", [imp.value(ins[0])], imp.output(outs[0]), node, min=lo, max=hi)
    return handler


_HANDLERS = {
    "DEQUANTIZE": _dequantize,
    "DENSIFY": _densify,
    "CONV_2D": _conv2d,
    "DEPTHWISE_CONV_2D": _depthwise,
    "TRANSPOSE_CONV": _transpose_conv,
    "CUSTOM:Convolution2DTransposeBias": _transpose_conv_bias,
    "FULLY_CONNECTED": _fully_connected,
    "ADD": _binary("ADD"),
    "SUB": _binary("SUB"),
    "MUL": _binary("MUL"),
    "DIV": _binary("DIV"),
    "LOGISTIC": _unary("SIGMOID"),
    "TANH": _unary("TANH"),
    "RELU": _unary("RELU"),
    "RELU6": _relu_n(0.0, 6.0),
    "RELU_N1_TO_1": _relu_n(-1.0, 1.0),
    "HARD_SWISH": _unary("HARD_SWISH"),
    "LEAKY_RELU": _leaky_relu,
    "PRELU": _prelu,
    "MAX_POOL_2D": _pool("MAX_POOL2D"),
    "AVERAGE_POOL_2D": _pool("AVG_POOL2D"),
    "MEAN": _mean,
    "CONCATENATION": _concat,
    "PAD": _pad,
    "PADV2": _pad,
    "RESIZE_BILINEAR": _resize("RESIZE_BILINEAR"),
    "RESIZE_NEAREST_NEIGHBOR": _resize("RESIZE_NEAREST"),
    "RESHAPE": _reshape,
    "SQUEEZE": _reshape,
    "EXPAND_DIMS": _reshape,
    "TRANSPOSE": _transpose,
    "SOFTMAX": _softmax,
    "DEPTH_TO_SPACE": _depth_to_space,
}
