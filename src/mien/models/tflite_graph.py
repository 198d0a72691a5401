"""Run a TFLite flatbuffer as a differentiable PyTorch module.

``TFLiteGraph(flatbuffer_bytes)`` parses the model with the ``tflite`` package's generated schema
(``tflite.Model.GetRootAsModel``) and replays its operators in order with the PyTorch ops of
``tflite_ops``. Weights become float32 ``nn.Parameter``s in their TFLite layout (conv filters OHWI,
depthwise 1HW(C*M)), so the module moves with ``.to(device)`` and gradients flow to its inputs.

Loading:
- float16 weights feed DEQUANTIZE ops in MediaPipe's float16 models; those ops are folded here (the
  weight is stored widened to float32, which is exact, under the DEQUANTIZE output's id).
- int8/uint8 weights with quantization parameters are dequantized as ``(q - zero_point) * scale``
  (per channel along ``quantized_dimension``), as tensorflow/lite/kernels/dequantize.h does.
  Quantized activations are not supported.
- Only the ops mien's graphs use are implemented (``tflite_ops.OPS``); any other op is an error at
  load time that names it.

Batch: the graph's fixed batch size is not enforced; dim 0 is the batch (``tflite_ops`` says how the
ops that name dim 0 treat it). A graph that drops its batch-1 axis at the end (the blendshape net's
output is ``[52]``) keeps it here: outputs are ``(B, ...)``.

CUDA: 1x1 convs run as matmuls, in full float32 unless ``torch.set_float32_matmul_precision`` allows
TF32. With TF32 allowed (as cuDNN convs do by default, which is why 1x1 convs avoid them) outputs move
by ~1e-3 relative, over the 1e-3 blendshape tolerance; with PyTorch's defaults an H100 matched CPU to
6e-7 relative (MobileFaceNet) and 2.4e-6 abs (blendshapes) on random-weight stand-ins.
"""

from __future__ import annotations

import importlib

import numpy as np
import torch
from torch import nn

import tflite
from tflite.BuiltinOperator import BuiltinOperator
from tflite.BuiltinOptions import BuiltinOptions
from tflite.TensorType import TensorType

from mien.models.tflite_ops import OPS

_OP_NAMES = {v: k for k, v in vars(BuiltinOperator).items() if not k.startswith("_")}
_OPTION_NAMES = {v: k for k, v in vars(BuiltinOptions).items() if not k.startswith("_")}
_DTYPES = {
    TensorType.FLOAT32: np.dtype("<f4"),
    TensorType.FLOAT16: np.dtype("<f2"),
    TensorType.INT32: np.dtype("<i4"),
    TensorType.INT64: np.dtype("<i8"),
    TensorType.INT8: np.dtype("i1"),
    TensorType.UINT8: np.dtype("u1"),
}


def _op_name(model: tflite.Model, op: tflite.Operator) -> str:
    code = model.OperatorCodes(op.OpcodeIndex())
    # Codes >= 127 live only in builtin_code; older files fill only deprecated_builtin_code
    # (tensorflow/lite/schema/schema_utils.cc, GetBuiltinCode takes the larger of the two).
    number = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
    if number == BuiltinOperator.CUSTOM:
        raise NotImplementedError(f"TFLite custom op '{code.CustomCode().decode()}' is not supported")
    return _OP_NAMES[number]


def _options(op: tflite.Operator) -> dict:
    """The op's builtin options table as ``{schema field name: value}`` (vectors as tuples of Python numbers)."""
    kind = op.BuiltinOptionsType()
    if kind == BuiltinOptions.NONE:
        return {}
    name = _OPTION_NAMES[kind]
    table, options = op.BuiltinOptions(), getattr(importlib.import_module(f"tflite.{name}"), name)()
    options.Init(table.Bytes, table.Pos)
    fields = {}
    for field in dir(options):
        skip = field.startswith(("GetRootAs", "Init")) or field.endswith(("IsNone", "Length", "AsNumpy"))
        if field[0].isupper() and not skip and "BufferHasIdentifier" not in field:
            getter = getattr(options, field + "AsNumpy", None)  # vector fields take an index otherwise
            value = getter() if getter else getattr(options, field)()
            fields[field] = tuple(value.tolist()) if isinstance(value, np.ndarray) else value
    return fields


def _shape(tensor: tflite.Tensor) -> tuple[int, ...]:
    return tuple(int(s) for s in tensor.ShapeAsNumpy()) if tensor.ShapeLength() else ()


def _constant(model: tflite.Model, tensor: tflite.Tensor) -> np.ndarray | None:
    """A tensor's stored data (None for activations), float weights dequantized to float32."""
    buffer = model.Buffers(tensor.Buffer())
    if buffer.Offset() > 1:
        raise NotImplementedError("TFLite buffers stored outside the flatbuffer (models > 2 GB)")
    if buffer.DataLength() == 0:
        return None
    if tensor.Type() not in _DTYPES:
        raise NotImplementedError(f"TFLite tensor '{tensor.Name().decode()}' has type {tensor.Type()}")
    data = np.frombuffer(buffer.DataAsNumpy().tobytes(), _DTYPES[tensor.Type()]).reshape(_shape(tensor))
    quant = tensor.Quantization()
    if data.dtype.kind == "f":
        return data.astype(np.float32)
    if quant is not None and quant.ScaleLength() and data.dtype.itemsize == 1:
        axis_shape = [1] * data.ndim
        if quant.ScaleLength() > 1:
            axis_shape[quant.QuantizedDimension()] = -1
        zero = quant.ZeroPointAsNumpy().reshape(axis_shape) if quant.ZeroPointLength() else 0
        scale = quant.ScaleAsNumpy().astype(np.float32).reshape(axis_shape)
        return ((data.astype(np.float32) - zero) * scale).astype(np.float32)
    return data  # integer operands: shapes, axes, permutations


class TFLiteGraph(nn.Module):
    """The first subgraph of a TFLite model, executed with PyTorch ops.

    ``forward(*inputs)`` takes the graph's inputs in order (float32, the graph's layout, any batch)
    and returns its output, or a tuple when it has several.
    """

    def __init__(self, flatbuffer: bytes):
        super().__init__()
        model = tflite.Model.GetRootAsModel(flatbuffer, 0)
        graph = model.Subgraphs(0)
        tensors = [graph.Tensors(i) for i in range(graph.TensorsLength())]
        self.weights = nn.ParameterDict()
        self._ints: dict[int, tuple[int, ...]] = {}  # graph structure, not state
        for i, tensor in enumerate(tensors):
            data = _constant(model, tensor)
            if data is not None and data.dtype == np.float32:
                self.weights[f"t{i}"] = nn.Parameter(torch.from_numpy(data.copy()))
            elif data is not None:
                # Python ints, not numpy: torch.compile traces numpy arrays as tensors, so a shape read
                # from one (RESHAPE's) became data-dependent and stopped the capture.
                self._ints[i] = tuple(int(v) for v in data.reshape(-1))

        self.nodes: list[tuple[str, list[int], int, dict]] = []
        for k in range(graph.OperatorsLength()):
            op = graph.Operators(k)
            name, ins, outs = _op_name(model, op), op.InputsAsNumpy().tolist(), op.OutputsAsNumpy().tolist()
            if name == "DEQUANTIZE" and f"t{ins[0]}" in self.weights:
                self.weights[f"t{outs[0]}"] = self.weights.pop(f"t{ins[0]}")
                continue
            if name not in OPS:
                raise NotImplementedError(f"TFLite op {name} (operator {k}) is not implemented in tflite_ops")
            if len(outs) != 1:
                raise NotImplementedError(f"TFLite op {name} with {len(outs)} outputs")
            opts = {**_options(op), "in_shape": _shape(tensors[ins[0]])}
            self.nodes.append((name, ins, outs[0], opts))

        self.input_ids = graph.InputsAsNumpy().tolist()
        self.output_ids = graph.OutputsAsNumpy().tolist()
        self.input_names = [tensors[i].Name().decode() for i in self.input_ids]
        self.output_names = [tensors[i].Name().decode() for i in self.output_ids]
        self.input_shapes = [_shape(tensors[i]) for i in self.input_ids]
        self._drop_after = self._last_uses()

    def _last_uses(self) -> list[list[int]]:
        """Per node, the activations no later node reads: freed during forward to bound memory."""
        last = {}
        for k, (_, ins, _, _) in enumerate(self.nodes):
            for i in ins:
                last[i] = k
        drop = [[] for _ in self.nodes]
        for i, k in last.items():
            if i not in self.output_ids:
                drop[k].append(i)
        return drop

    def _value(self, i: int, env: dict):
        if i < 0:
            return None  # an omitted optional input (e.g. a conv without bias)
        if i in env:
            return env[i]
        key = f"t{i}"
        return self.weights[key] if key in self.weights else self._ints[i]

    def forward(self, *inputs: torch.Tensor):
        if len(inputs) != len(self.input_ids):
            raise ValueError(f"this TFLite graph takes {len(self.input_ids)} input(s) {self.input_names}")
        env = dict(zip(self.input_ids, inputs))
        for (name, ins, out, opts), drop in zip(self.nodes, self._drop_after):
            env[out] = OPS[name]([self._value(i, env) for i in ins], opts)
            for i in drop:
                env.pop(i, None)
        outputs = tuple(env[i] for i in self.output_ids)
        return outputs[0] if len(outputs) == 1 else outputs
