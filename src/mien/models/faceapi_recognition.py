"""face-api.js FaceRecognitionNet: dlib's ResNet face descriptor (128-D), read from the TF.js weights.

150x150 RGB face chip (0..255) -> 128-D descriptor, *not* unit-normalised, as face-api.js returns it;
same person when the Euclidean distance is below 0.6 (dlib's threshold).

Architecture, from face-api.js ``src/faceRecognitionNet/`` (``FaceRecognitionNet.ts``, ``convLayer.ts``,
``residualLayer.ts``, ``scaleLayer.ts``, ``normalize.ts``); this is our own code, not a copy:

  (x - MEAN_RGB) / divisor
  conv32_down: 7x7/2 valid conv, bias, scale, ReLU; 3x3/2 valid max-pool           150 -> 72 -> 35
  conv32_{1,2,3}, conv64_down, conv64_{1,2,3}, conv128_down, conv128_{1,2},
  conv256_down, conv256_{1,2}, conv256_down_out: residual blocks         35 -> 17 -> 8 -> 4 -> 2
  spatial mean, then a bias-free 256x128 matrix product

Each conv is ``conv + bias`` followed by dlib's affine layer ``* scale.weights + scale.biases`` (the
folded batch norm); we keep the two steps as TF.js runs them rather than folding them into the conv.
A ``*_down`` block starts with a 3x3/2 *valid* conv, and its shortcut is a 2x2/2 average pool whose
channels are zero-padded to the output width. Where the valid conv leaves a smaller map than the pool
(8 -> 3 vs 4, 4 -> 1 vs 2) face-api.js appends zero rows/columns at the bottom/right of the residual
branch before the sum (``residualDown`` in ``residualLayer.ts``); so do we.

Input scaling: face-api.js 0.22.2 (and dlib) divide by 256 after subtracting the mean; the maintained
@vladmandic/face-api 1.7.15 divides by 255. Pick with ``divisor``; the descriptors differ by up to 3e-4
(shared/reference/README.md, section 3).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mien.models.tfjs import load_tfjs_weights

# dlib's per-channel training mean, RGB order (normalize.ts; the same constant in
# faceFeatureExtractor/FaceFeatureExtractor.ts, so the expression net imports it from here).
MEAN_RGB = (122.782, 117.001, 104.298)
INPUT_SIZE = 150

# (name, input channels, output channels, downsamples), in forward order (FaceRecognitionNet.ts).
_BLOCKS = [
    ("conv32_1", 32, 32, False), ("conv32_2", 32, 32, False), ("conv32_3", 32, 32, False),
    ("conv64_down", 32, 64, True), ("conv64_1", 64, 64, False), ("conv64_2", 64, 64, False),
    ("conv64_3", 64, 64, False),
    ("conv128_down", 64, 128, True), ("conv128_1", 128, 128, False), ("conv128_2", 128, 128, False),
    ("conv256_down", 128, 256, True), ("conv256_1", 256, 256, False), ("conv256_2", 256, 256, False),
    ("conv256_down_out", 256, 256, True),
]  # fmt: skip


class _Scale(nn.Module):
    """dlib's affine layer: per-channel ``x * weight + bias`` (scaleLayer.ts)."""

    def __init__(self, ch: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(ch))
        self.bias = nn.Parameter(torch.zeros(ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weight[:, None, None] + self.bias[:, None, None]


class _ConvScale(nn.Module):
    """conv + bias, then scale (convLayer.ts). Stride 2 is 'valid', stride 1 'same' (pad 1 for 3x3)."""

    def __init__(self, n_in: int, n_out: int, k: int = 3, stride: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(n_in, n_out, k, stride, padding=0 if stride == 2 else k // 2)
        self.scale = _Scale(n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale(self.conv(x))


class _Residual(nn.Module):
    """``residual`` / ``residualDown`` of residualLayer.ts."""

    def __init__(self, n_in: int, n_out: int, down: bool):
        super().__init__()
        self.down = down
        self.conv1 = _ConvScale(n_in, n_out, stride=2 if down else 1)
        self.conv2 = _ConvScale(n_out, n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2(F.relu(self.conv1(x)))
        if not self.down:
            return F.relu(out + x)
        skip = F.avg_pool2d(x, 2, 2)
        skip = F.pad(skip, (0, 0, 0, 0, 0, out.shape[1] - skip.shape[1]))  # zero channels
        # Zero rows/columns at the bottom/right where the valid conv came out smaller than the pool.
        out = F.pad(out, (0, skip.shape[3] - out.shape[3], 0, skip.shape[2] - out.shape[2]))
        return F.relu(out + skip)


def _torch_name(tf_name: str) -> str:
    """``conv32_1/conv1/conv/filters`` -> ``conv32_1.conv1.conv.weight`` (module names mirror TF's)."""
    parts = tf_name.split("/")
    parts[-1] = {"filters": "weight", "weights": "weight", "biases": "bias"}.get(parts[-1], parts[-1])
    return ".".join(parts)


class FaceRecognitionNet(nn.Module):
    """(B, 3, 150, 150) RGB in 0..255 -> (B, 128) face descriptor (not normalised)."""

    def __init__(self, divisor: float = 256.0):
        super().__init__()
        self.divisor = float(divisor)
        self.register_buffer("mean_rgb", torch.tensor(MEAN_RGB).view(1, 3, 1, 1), persistent=False)
        self.conv32_down = _ConvScale(3, 32, k=7, stride=2)
        for name, n_in, n_out, down in _BLOCKS:
            self.add_module(name, _Residual(n_in, n_out, down))
        self.fc = nn.Linear(256, 128, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or tuple(x.shape[1:]) != (3, INPUT_SIZE, INPUT_SIZE):
            raise ValueError(f"FaceRecognitionNet expects (B, 3, 150, 150) RGB in 0..255, got {tuple(x.shape)}")
        out = (x - self.mean_rgb) / self.divisor
        out = F.max_pool2d(F.relu(self.conv32_down(out)), 3, 2)
        for name, *_ in _BLOCKS:
            out = getattr(self, name)(out)
        return self.fc(out.mean(dim=(2, 3)))

    def load_tfjs(self, tensors: dict[str, torch.Tensor]) -> None:
        """Copy face-api.js weights (``load_tfjs_weights`` output) into this module, strictly."""
        state = {}
        for tf_name, t in tensors.items():
            if t.ndim == 4:  # TF conv filters are HWIO, torch wants OIHW
                t = t.permute(3, 2, 0, 1)
            elif tf_name == "fc":  # matMul(x, fc) with fc [256, 128]; nn.Linear stores [out, in]
                t, tf_name = t.t(), "fc/weights"
            state[_torch_name(tf_name)] = t.contiguous()
        self.load_state_dict(state, strict=True)

    @classmethod
    def from_weights(cls, divisor: float = 256.0) -> "FaceRecognitionNet":
        """The pretrained net from the verified face-api.js files (``mien.weights``), in eval mode."""
        from mien.weights import locate

        net = cls(divisor)
        shard = locate("faceapi_recognition")
        net.load_tfjs(load_tfjs_weights(locate("faceapi_recognition_manifest"), [shard]))
        return net.eval()
