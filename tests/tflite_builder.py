"""Writes small TFLite models for tests, through the flatbuffer object API of the TFLite
schema that ai-edge-litert ships (`ai_edge_litert.schema_py_generated`)."""
from __future__ import annotations

import flatbuffers
import numpy as np
from ai_edge_litert import schema_py_generated as fb

TYPES = {np.dtype(np.float32): fb.TensorType.FLOAT32, np.dtype(np.float16): fb.TensorType.FLOAT16,
         np.dtype(np.int32): fb.TensorType.INT32, np.dtype(np.int64): fb.TensorType.INT64}


class TFLiteBuilder:
    def __init__(self):
        self.tensors: list = []
        self.buffers = [fb.BufferT()]  # buffer 0: the empty buffer
        self.opcodes: list = []
        self.ops: list = []
        self.inputs: list[int] = []

    def _tensor(self, name, shape, dtype=np.float32, data=None) -> int:
        t = fb.TensorT()
        t.name, t.shape, t.type = name, list(shape), TYPES[np.dtype(dtype)]
        t.buffer = 0
        if data is not None:
            b = fb.BufferT()
            b.data = np.frombuffer(np.ascontiguousarray(data, dtype).tobytes(), np.uint8)
            self.buffers.append(b)
            t.buffer = len(self.buffers) - 1
        self.tensors.append(t)
        return len(self.tensors) - 1

    def input(self, name, shape) -> int:
        i = self._tensor(name, shape)
        self.inputs.append(i)
        return i

    def const(self, name, data, dtype=np.float32) -> int:
        data = np.asarray(data)
        return self._tensor(name, data.shape, dtype, data)

    def tensor(self, name, shape, dtype=np.float32) -> int:
        return self._tensor(name, shape, dtype)

    def _opcode(self, builtin: int, custom: str | None = None) -> int:
        key = (builtin, custom)
        for k, oc in enumerate(self.opcodes):
            if (oc.builtinCode, oc.customCode) == key:
                return k
        oc = fb.OperatorCodeT()
        oc.builtinCode, oc.deprecatedBuiltinCode, oc.customCode, oc.version = builtin, min(builtin, 127), custom, 1
        self.opcodes.append(oc)
        return len(self.opcodes) - 1

    def op(self, opname: str, inputs, outputs, options=None, custom_options: bytes | None = None):
        """`opname`: a BuiltinOperator name, or "CUSTOM:<code>"; `options`: a `fb.XxxOptionsT`."""
        o = fb.OperatorT()
        if opname.startswith("CUSTOM:"):
            o.opcodeIndex = self._opcode(fb.BuiltinOperator.CUSTOM, opname[7:])
            o.customOptions = list(custom_options or b"")
        else:
            o.opcodeIndex = self._opcode(getattr(fb.BuiltinOperator, opname))
        o.inputs, o.outputs = list(inputs), list(outputs)
        if options is not None:
            o.builtinOptionsType = getattr(fb.BuiltinOptions, type(options).__name__[:-1])
            o.builtinOptions = options
        self.ops.append(o)

    def finish(self, outputs) -> bytes:
        sg = fb.SubGraphT()
        sg.tensors, sg.inputs, sg.outputs, sg.operators = self.tensors, self.inputs, list(outputs), self.ops
        m = fb.ModelT()
        m.version, m.operatorCodes, m.subgraphs, m.buffers = 3, self.opcodes, [sg], self.buffers
        m.description = "pysparse test model"
        b = flatbuffers.Builder(1024)
        b.Finish(m.Pack(b), file_identifier=b"TFL3")
        return bytes(b.Output())


def options(name: str, **fields):
    """`options("Conv2DOptions", padding=0, strideW=1, ...)` -> a filled `fb.Conv2DOptionsT`."""
    o = getattr(fb, name + "T")()
    for k, v in fields.items():
        if not hasattr(o, k):
            raise AttributeError(f"{name} has no field {k}")
        setattr(o, k, v)
    return o


def run_litert(model: bytes, inputs: list[np.ndarray], delegates: bool = True, num_threads: int = 1) -> dict[str, np.ndarray]:
    """Runs a model with LiteRT (inputs in the model's own NHWC layout), outputs by name; with
    `delegates=False` on its builtin kernels only (no XNNPACK)."""
    from ai_edge_litert.interpreter import Interpreter
    from ai_edge_litert.interpreter import OpResolverType
    resolver = OpResolverType.AUTO if delegates else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    it = Interpreter(model_content=model, experimental_op_resolver_type=resolver, num_threads=num_threads)
    it.allocate_tensors()
    for d, x in zip(it.get_input_details(), inputs):
        it.set_tensor(d["index"], np.ascontiguousarray(x, np.float32))
    it.invoke()
    return {d["name"]: it.get_tensor(d["index"]) for d in it.get_output_details()}


def prune_1x1_weights(model: bytes, fraction: float) -> bytes:
    """A copy of `model` whose constant 1x1 convolution weights (fp16 or fp32, [Cout,1,1,Cin])
    have their `fraction` smallest-magnitude values set to zero, per tensor."""
    m = fb.ModelT.InitFromPackedBuf(bytearray(model), 0)
    types = {fb.TensorType.FLOAT16: np.float16, fb.TensorType.FLOAT32: np.float32}
    for t in m.subgraphs[0].tensors:
        if t.type in types and t.buffer > 0 and len(t.shape) == 4 and tuple(t.shape[1:3]) == (1, 1) \
                and m.buffers[t.buffer].data is not None:
            w = np.frombuffer(np.asarray(m.buffers[t.buffer].data, np.uint8).tobytes(), types[t.type]).copy()
            k = int(round(fraction * w.size))
            if k:
                w[np.argsort(np.abs(w.astype(np.float32)), kind="stable")[:k]] = 0
            m.buffers[t.buffer].data = np.frombuffer(w.tobytes(), np.uint8)
    b = flatbuffers.Builder(len(model) + 1024)
    b.Finish(m.Pack(b), file_identifier=b"TFL3")
    return bytes(b.Output())


def op_names(model: bytes) -> list[str]:
    """Operator names of subgraph 0 in execution order."""
    m = fb.ModelT.InitFromPackedBuf(bytearray(model), 0)
    names = {v: k for k, v in vars(fb.BuiltinOperator).items() if not k.startswith("_")}
    return [names[max(m.operatorCodes[o.opcodeIndex].builtinCode, m.operatorCodes[o.opcodeIndex].deprecatedBuiltinCode)]
            for o in m.subgraphs[0].operators]
