"""PyTorch versions of the TFLite builtin ops that mien's two TFLite graphs use.

``MobileFaceNet.tflite`` needs CONV_2D, DEPTHWISE_CONV_2D, ADD, SUB, MUL, ABS, RELU, RESHAPE (its
PReLUs are spelled ``relu(x) + alpha * (x - |x|)``); ``face_blendshapes.tflite`` (an MLP-Mixer over
the 146 landmarks, layer norms spelled out) needs CONV_2D (1x1), ADD, SUB, MUL, DIV, NEG, SQRT,
RSQRT, SQUARED_DIFFERENCE, MEAN, SUM, TRANSPOSE, RESHAPE, STRIDED_SLICE, CONCATENATION, LOGISTIC
(its DEQUANTIZE ops read constant float16 weights; ``tflite_graph`` folds them at load time);
``face_landmarks_detector.tflite`` (the 478-point face mesh) adds PRELU, MAX_POOL_2D and PAD.

Each op is ``op(args, opts) -> Tensor``. ``args`` are the op's inputs in TFLite order: float tensors,
tuples of Python ints for constant shape/axis operands, ``None`` for an omitted optional input. ``opts``
are the op's builtin options (schema field names: ``Padding``, ``StrideH``, ...) plus ``in_shape``,
the static shape of input 0. Semantics follow the TFLite schema (tensorflow/lite/schema/schema.fbs)
and reference kernels (tensorflow/lite/kernels/internal/reference/). Activations stay NHWC as in
TFLite; convolutions look at them through an NCHW view, which is channels-last in memory.

Batch: a TFLite graph has a fixed batch size. So that any batch runs, dim 0 is taken to be the batch
in the three ops that name it explicitly: RESHAPE, STRIDED_SLICE and CONCATENATION (see each).
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

# schema.fbs enum ActivationFunctionType: NONE, RELU, RELU_N1_TO_1, RELU6, TANH (SIGN_BIT unsupported).
_ACTIVATIONS: dict[int, Callable[[torch.Tensor], torch.Tensor]] = {
    0: lambda x: x,
    1: F.relu,
    2: lambda x: F.hardtanh(x, -1.0, 1.0),
    3: F.relu6,
    4: torch.tanh,
}
_VALID = 1  # schema.fbs enum Padding: SAME = 0, VALID = 1


def _fused(x: torch.Tensor, opts: dict) -> torch.Tensor:
    code = opts.get("FusedActivationFunction", 0)
    if code not in _ACTIVATIONS:
        raise NotImplementedError(f"TFLite fused activation {code} is not implemented")
    return _ACTIVATIONS[code](x)


def same_padding(size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    """(before, after) zero padding of one spatial dim for TFLite SAME padding.

    tensorflow/lite/kernels/padding.h: out = ceil(size / stride), total = max((out - 1) * stride +
    effective_kernel - size, 0), ``total // 2`` before and the odd pixel after. So a stride-2 3x3 conv on
    an even size pads (0, 1), where torch's symmetric ``padding=1`` would shift the sampling grid.
    """
    effective = (kernel - 1) * dilation + 1
    out = -(-size // stride)
    total = max((out - 1) * stride + effective - size, 0)
    return total // 2, total - total // 2


def _conv(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, opts: dict, groups: int) -> torch.Tensor:
    """NHWC ``x``, OIHW ``w``: pad as TFLite does, convolve, apply the fused activation."""
    stride = (opts["StrideH"], opts["StrideW"])
    dilation = (opts["DilationHFactor"], opts["DilationWFactor"])
    if opts["Padding"] == _VALID:
        (top, bottom), (left, right) = (0, 0), (0, 0)
    else:
        top, bottom = same_padding(x.shape[1], w.shape[2], stride[0], dilation[0])
        left, right = same_padding(x.shape[2], w.shape[3], stride[1], dilation[1])
    x = x.permute(0, 3, 1, 2)
    if (top, left) == (bottom, right):
        padding = (top, left)
    else:  # asymmetric: pad explicitly, F.conv2d only pads symmetrically
        x, padding = F.pad(x, (left, right, top, bottom)), (0, 0)
    y = F.conv2d(x, w, b, stride, padding, dilation, groups)
    return _fused(y.permute(0, 2, 3, 1), opts)


def conv_2d(args: list, opts: dict) -> torch.Tensor:
    x, w, b = args
    if w.shape[1:3] == (1, 1) and (opts["StrideH"], opts["StrideW"]) == (1, 1):
        # A 1x1 conv is a matmul over channels (the blendshape net has only these). F.linear keeps NHWC
        # and follows torch's float32 matmul precision, full float32 by default; as cuDNN 1x1 convs
        # (TF32 by default on CUDA) they moved blendshape scores by 2.7e-3 on an H100.
        return _fused(F.linear(x, w[:, 0, 0, :], b), opts)
    return _conv(x, w.permute(0, 3, 1, 2), b, opts, groups=1)  # TFLite filter OHWI -> OIHW


def depthwise_conv_2d(args: list, opts: dict) -> torch.Tensor:
    # Filter 1 x H x W x (C*M): output channel c*M + m filters input channel c, which is exactly torch's
    # grouped conv with groups = C and weight (C*M, 1, H, W).
    x, w, b = args
    return _conv(x, w.permute(3, 0, 1, 2), b, opts, groups=x.shape[3])


def _binary(fn: Callable) -> Callable:
    return lambda args, opts: _fused(fn(args[0], args[1]), opts)


def _unary(fn: Callable) -> Callable:
    return lambda args, opts: fn(args[0])


def _reduce(fn: Callable) -> Callable:
    def op(args: list, opts: dict) -> torch.Tensor:
        x, axes = args
        dims = sorted({a % x.dim() for a in axes})  # axes: a tuple of ints (tflite_graph)
        return fn(x, dim=dims, keepdim=bool(opts["KeepDims"]))

    return op


def transpose(args: list, opts: dict) -> torch.Tensor:
    return args[0].permute(*(int(p) for p in args[1]))


def reshape(args: list, opts: dict) -> torch.Tensor:
    x = args[0]
    shape = [int(s) for s in (args[1] if len(args) > 1 and args[1] is not None else opts["NewShape"])]
    # A target that keeps the input's static dim 0 keeps the batch (MobileFaceNet: [2,1,1,192] ->
    # [2,192]; blendshapes: [1,146,2] -> [1,1,146,2]): use the actual batch there.
    if shape and shape[0] == opts["in_shape"][0]:
        shape[0] = x.shape[0]
    return x.reshape(shape)


def _slice_bounds(begin: int, end: int, stride: int, size: int, d: int, opts: dict) -> tuple[int, int]:
    """Begin and end of one axis, per tensorflow/lite/kernels/internal/strided_slice_logic.h."""
    if opts["ShrinkAxisMask"] >> d & 1:
        begin = begin + size if begin < 0 else begin
        return begin, begin + 1
    begin = 0 if opts["BeginMask"] >> d & 1 else min(max(begin + size if begin < 0 else begin, 0), size)
    end = size if opts["EndMask"] >> d & 1 else min(max(end + size if end < 0 else end, 0), size)
    return begin, end


def strided_slice(args: list, opts: dict) -> torch.Tensor:
    x, begins, ends, strides = args
    if opts["EllipsisMask"] or opts["NewAxisMask"] or opts.get("Offset"):
        raise NotImplementedError("TFLite STRIDED_SLICE with ellipsis/new-axis mask or offset")
    index, squeeze = [], []
    for d, (b, e, s) in enumerate(zip(begins, ends, strides)):
        if s <= 0:
            raise NotImplementedError("TFLite STRIDED_SLICE with a non-positive stride")
        size = opts["in_shape"][d] if d == 0 else x.shape[d]
        lo, hi = _slice_bounds(b, e, s, size, d, opts)
        if d == 0 and (lo, hi, s) == (0, size, 1):
            # Slicing the whole static batch (blendshapes: [1,52] -> [52]) keeps the actual batch,
            # and its batch axis (rows stay apart when B > 1).
            index.append(slice(None))
            continue
        index.append(slice(lo, hi, s))
        if opts["ShrinkAxisMask"] >> d & 1:
            squeeze.append(d)
    y = x[tuple(index)]
    return y.squeeze(squeeze) if squeeze else y


def concatenation(args: list, opts: dict) -> torch.Tensor:
    axis = opts["Axis"] % args[0].dim()
    if axis != 0:
        # Constants carry the graph's static batch (blendshapes: the class token [1,1,1,64] joined to
        # the [B,1,96,64] tokens): broadcast them to the actual batch.
        batch = max(t.shape[0] for t in args)
        args = [t.expand(batch, *t.shape[1:]) for t in args]
    return _fused(torch.cat(args, axis), opts)


def prelu(args: list, opts: dict) -> torch.Tensor:
    # reference/prelu.h: x if x >= 0 else alpha * x, alpha broadcast over the trailing (H, W, C) dims.
    # Spelled as x times its slope (1 or alpha): the values of torch.where(x >= 0, x, x * alpha), forward and
    # backward, bit for bit (x * 1 is x), with a backward of one product where that where's took two wheres
    # and a sum: a tenth less CPU per blendshape-guided step, through the face mesh's 70 PReLUs (docs/performance.md).
    x, alpha = args
    return x * torch.where(x >= 0, 1.0, alpha)


def max_pool_2d(args: list, opts: dict) -> torch.Tensor:
    # reference/pooling.h: SAME pads with out-of-range cells that never win (-inf here), as TFLite skips them.
    x = args[0].permute(0, 3, 1, 2)
    kernel, stride = (opts["FilterHeight"], opts["FilterWidth"]), (opts["StrideH"], opts["StrideW"])
    if opts["Padding"] != _VALID:
        top, bottom = same_padding(x.shape[2], kernel[0], stride[0], 1)
        left, right = same_padding(x.shape[3], kernel[1], stride[1], 1)
        x = F.pad(x, (left, right, top, bottom), value=float("-inf"))
    return _fused(F.max_pool2d(x, kernel, stride).permute(0, 2, 3, 1), opts)


def pad(args: list, opts: dict) -> torch.Tensor:
    # paddings: (before, after) per dim, flattened (tflite_graph keeps constant ints as a tuple); zeros.
    x, paddings = args
    pairs = [tuple(paddings[2 * d: 2 * d + 2]) for d in range(x.dim())]
    if pairs[0] != (0, 0):
        raise NotImplementedError("TFLite PAD along the batch axis")
    flat = [p for pair in reversed(pairs[1:]) for p in pair]  # F.pad wants the last dim first
    return F.pad(x, flat)


OPS: dict[str, Callable[[list, dict], torch.Tensor]] = {
    "CONV_2D": conv_2d,
    "DEPTHWISE_CONV_2D": depthwise_conv_2d,
    "ADD": _binary(torch.add),
    "SUB": _binary(torch.sub),
    "MUL": _binary(torch.mul),
    "DIV": _binary(torch.div),
    "SQUARED_DIFFERENCE": _binary(lambda a, b: (a - b) * (a - b)),
    "ABS": _unary(torch.abs),
    "NEG": _unary(torch.neg),
    "RELU": _unary(F.relu),
    "LOGISTIC": _unary(torch.sigmoid),
    "SQRT": _unary(torch.sqrt),
    "RSQRT": _unary(torch.rsqrt),
    "MEAN": _reduce(torch.mean),
    "SUM": _reduce(torch.sum),
    "TRANSPOSE": transpose,
    "RESHAPE": reshape,
    "STRIDED_SLICE": strided_slice,
    "CONCATENATION": concatenation,
    "PRELU": prelu,
    "MAX_POOL_2D": max_pool_2d,
    "PAD": pad,
}
