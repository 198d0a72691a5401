"""face-api.js FaceExpressionNet: 7 basic-expression probabilities, read from the TF.js weights.

112x112 RGB face crop (0..255) -> logits over ``EXPRESSIONS``; ``predict`` applies the softmax that
face-api.js's ``predictExpressions`` returns.

Architecture, from face-api.js ``src/faceFeatureExtractor/FaceFeatureExtractor.ts`` (``denseBlock``),
``src/common/depthwiseSeparableConv.ts``, ``src/faceProcessor/FaceProcessor.ts`` and
``src/faceExpressionNet/FaceExpressionNet.ts``; this is our own code, not a copy:

  (x - MEAN_RGB) / 255
  dense0..dense3: 4-conv dense blocks, each halving the size          112 -> 56 -> 28 -> 14 -> 7
  7x7/2 valid average pool (-> 1x1), flatten, fully connected 256 -> 7

A dense block: ``o1 = relu(conv0(x))`` with stride 2 (a plain 3x3 conv in dense0, a depthwise-separable
one after), then ``o2 = sep(o1)``, ``o3 = sep(relu(o1+o2))``, ``o4 = sep(relu(o1+o2+o3))`` and output
``relu(o1+o2+o3+o4)``. Every conv has bias and TF "same" padding, which for stride 2 on an even size
pads only the bottom/right (0 before, 1 after) — unlike torch's symmetric ``padding=1``, so we pad
explicitly.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from mien.models.faceapi_recognition import MEAN_RGB
from mien.models.tfjs import load_tfjs_weights

# Label order of the 7 outputs: FACE_EXPRESSION_LABELS in face-api.js
# src/faceExpressionNet/FaceExpressions.ts (also shared/reference/faceapi_reference.json).
EXPRESSIONS = ("neutral", "happy", "sad", "angry", "fearful", "disgusted", "surprised")
INPUT_SIZE = 112
_WIDTHS = (32, 64, 128, 256)  # output channels of dense0..dense3 (face_expression_model manifest)


def _same_pad(x: torch.Tensor, k: int, stride: int) -> torch.Tensor:
    """Zero-pad like TF's 'same': total ``max((ceil(n/s)-1)*s + k - n, 0)``, the extra one after."""
    pads = []
    for n in (x.shape[3], x.shape[2]):  # F.pad order: last dim (W) first
        total = max((math.ceil(n / stride) - 1) * stride + k - n, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads)


class _Conv(nn.Module):
    """3x3 conv with bias and TF 'same' padding (dense0/conv0)."""

    def __init__(self, n_in: int, n_out: int, stride: int):
        super().__init__()
        self.stride = stride
        self.conv = nn.Conv2d(n_in, n_out, 3, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(_same_pad(x, 3, self.stride))


class _SepConv(nn.Module):
    """tf.separableConv2d (3x3 depthwise with stride, then 1x1 pointwise) plus bias."""

    def __init__(self, n_in: int, n_out: int, stride: int):
        super().__init__()
        self.stride = stride
        self.depthwise = nn.Conv2d(n_in, n_in, 3, stride, groups=n_in, bias=False)
        self.pointwise = nn.Conv2d(n_in, n_out, 1)  # its bias is the layer's bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(_same_pad(x, 3, self.stride)))


class _DenseBlock(nn.Module):
    """``denseBlock`` of FaceFeatureExtractor.ts (4 convs, dense sums, stride 2 at the first)."""

    def __init__(self, n_in: int, n_out: int, first: bool):
        super().__init__()
        self.conv0 = (_Conv if first else _SepConv)(n_in, n_out, 2)
        self.conv1 = _SepConv(n_out, n_out, 1)
        self.conv2 = _SepConv(n_out, n_out, 1)
        self.conv3 = _SepConv(n_out, n_out, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        o1 = F.relu(self.conv0(x))
        o2 = self.conv1(o1)
        o3 = self.conv2(F.relu(o1 + o2))
        o4 = self.conv3(F.relu(o1 + (o2 + o3)))
        return F.relu(o1 + (o2 + (o3 + o4)))  # the sums nest as in face-api.js


def _tfjs_to_state(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """face_expression_model names and layouts -> this module's state_dict."""
    state = {}
    for tf_name, t in tensors.items():
        *path, leaf = tf_name.split("/")
        if leaf == "filters":  # plain conv, HWIO -> OIHW
            key, t = "conv.weight", t.permute(3, 2, 0, 1)
        elif leaf == "depthwise_filter":  # [kh, kw, C, 1] -> [C, 1, kh, kw]
            key, t = "depthwise.weight", t.permute(2, 3, 0, 1)
        elif leaf == "pointwise_filter":  # [1, 1, in, out] -> [out, in, 1, 1]
            key, t = "pointwise.weight", t.permute(3, 2, 0, 1)
        elif leaf == "weights":  # fc: matMul(x, W) with W [256, 7]
            key, t = "weight", t.t()
        elif path == ["fc"]:
            key = "bias"
        elif path == ["dense0", "conv0"]:  # the one plain conv
            key = "conv.bias"
        else:  # a separable conv's bias is added after the pointwise step
            key = "pointwise.bias"
        state[".".join([*path, key])] = t.contiguous()
    return state


class FaceExpressionNet(nn.Module):
    """(B, 3, 112, 112) RGB in 0..255 -> (B, 7) logits in ``EXPRESSIONS`` order."""

    def __init__(self):
        super().__init__()
        self.register_buffer("mean_rgb", torch.tensor(MEAN_RGB).view(1, 3, 1, 1), persistent=False)
        widths = (3, *_WIDTHS)
        for i in range(4):
            self.add_module(f"dense{i}", _DenseBlock(widths[i], widths[i + 1], first=i == 0))
        self.fc = nn.Linear(_WIDTHS[-1], len(EXPRESSIONS))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or tuple(x.shape[1:]) != (3, INPUT_SIZE, INPUT_SIZE):
            raise ValueError(f"FaceExpressionNet expects (B, 3, 112, 112) RGB in 0..255, got {tuple(x.shape)}")
        out = (x - self.mean_rgb) / 255.0  # /255 in both face-api.js packages (FaceFeatureExtractor.ts)
        for i in range(4):
            out = getattr(self, f"dense{i}")(out)
        out = F.avg_pool2d(out, 7, 2)  # 7x7 -> 1x1
        return self.fc(out.flatten(1))

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Softmax probabilities (B, 7), what face-api.js's ``predictExpressions`` returns."""
        return self.forward(x).softmax(dim=-1)

    def predict_chip(self, chip: torch.Tensor) -> torch.Tensor:
        """:meth:`predict` on face-api's 150 px dlib chips (B, 3, 150, 150, RGB 0..255; what
        :meth:`mien.models.identity.IdentityEncoder.crops` cuts). The reference input is the chip resized to 112
        with Pillow's (antialiased) bilinear; torch's antialiased bilinear is the closest differentiable match."""
        small = F.interpolate(chip, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", antialias=True).clamp(0, 255)
        return self.predict(small)

    def load_tfjs(self, tensors: dict[str, torch.Tensor]) -> None:
        """Copy face-api.js weights (``load_tfjs_weights`` output) into this module, strictly."""
        self.load_state_dict(_tfjs_to_state(tensors), strict=True)

    @classmethod
    def from_weights(cls) -> "FaceExpressionNet":
        """The pretrained net from the verified face-api.js files (``mien.weights``), in eval mode."""
        from mien.weights import locate

        net = cls()
        shard = locate("faceapi_expression")
        net.load_tfjs(load_tfjs_weights(locate("faceapi_expression_manifest"), [shard]))
        return net.eval()
