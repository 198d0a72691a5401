"""MediaPipe's face mesh (478 3-D landmarks) and blendshapes of aligned crops, differentiably, in PyTorch.

``face_landmarks_detector.tflite`` from ``face_landmarker.task`` is executed by ``TFLiteGraph``: a
256x256 RGB crop in [0, 1] (NHWC; MediaPipe's ImageToTensor range in face_landmarks_detector_graph.cc)
in, 478 x (x, y, z) in pixels of that crop out. With :class:`mien.models.blendshapes.BlendshapeNet` on
top it gives MediaPipe's 52 blendshape scores as a differentiable function of the image, which is what
blendshape guidance (:mod:`mien.guidance.blendshape`) needs.

MediaPipe cuts the 256 px crop around a face it has detected. mien's faces are already aligned to one
128 px template, so :meth:`FaceMeshNet.aligned` cuts one fixed square instead (``ALIGNED_ROI``), a
bilinear resample that gradients pass through. The square was fitted to MediaPipe's own landmarks on 24
dev crops (a grid over centre and side): mean landmark error 0.47 px, mean blendshape difference 0.015
(tests/test_face_mesh.py checks it against MediaPipe on dev crops).
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from mien.models.tflite_graph import TFLiteGraph

MEMBER = "face_landmarks_detector.tflite"  # inside face_landmarker.task (a zip)
INPUT_SIZE = 256
NUM_LANDMARKS = 478
# (centre x, centre y, side) of the square of a 128 px aligned crop fed to the mesh net, in crop pixels;
# it reaches past the crop (zeros there, as MediaPipe's own crop of a small photo does).
ALIGNED_ROI = (64.5, 69.0, 156.0)


class FaceMeshNet(nn.Module):
    """(B, 3, 256, 256) RGB in [0, 1], a face crop -> (B, 478, 3) landmarks in pixels of that crop."""

    def __init__(self, flatbuffer: bytes):
        super().__init__()
        self.graph = TFLiteGraph(flatbuffer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or tuple(x.shape[1:]) != (3, INPUT_SIZE, INPUT_SIZE):
            raise ValueError(f"FaceMeshNet expects (B, 3, 256, 256) RGB in [0, 1], got {tuple(x.shape)}")
        landmarks = self.graph(x.permute(0, 2, 3, 1))[0]  # outputs: landmarks, face presence, (unused)
        return landmarks.reshape(x.shape[0], NUM_LANDMARKS, 3)

    def aligned(self, rgb: torch.Tensor, roi: tuple[float, float, float] = ALIGNED_ROI) -> torch.Tensor:
        """(B, 478, 3) landmarks of aligned crops (B, 3, S, S) in [0, 1], in pixels of those crops (z scaled alike)."""
        size = rgb.shape[-1]
        cx, cy, side = (v * size / 128 for v in roi)
        grid = _square_grid(cx, cy, side, size, rgb.device, rgb.dtype).expand(rgb.shape[0], -1, -1, -1)
        crop = F.grid_sample(rgb, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        points = self(crop) * (side / INPUT_SIZE)
        offset = torch.tensor([cx - side / 2, cy - side / 2, 0.0], device=rgb.device, dtype=points.dtype)
        return points + offset

    @classmethod
    def from_weights(cls, path: str | Path | None = None) -> "FaceMeshNet":
        """The net from ``face_landmarker.task`` (default: ``mien.weights.locate``), in eval mode with frozen
        parameters (a measuring net: gradients, where wanted, are the input's)."""
        if path is None:
            from mien.weights import locate

            path = locate("face_landmarker")
        with zipfile.ZipFile(path) as bundle:
            return cls(bundle.read(MEMBER)).eval().requires_grad_(False)


def _square_grid(cx: float, cy: float, side: float, size: int, device, dtype) -> torch.Tensor:
    """(1, 256, 256, 2) grid_sample grid of the square (cx, cy, side) of a size x size image (pixel centres)."""
    steps = (torch.arange(INPUT_SIZE, device=device, dtype=dtype) + 0.5) / INPUT_SIZE
    xs = (cx - side / 2 + steps * side) / size * 2 - 1
    ys = (cy - side / 2 + steps * side) / size * 2 - 1
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([gx, gy], -1)[None]


class AlignedBlendshapes(nn.Module):
    """(B, 3, S, S) aligned crops in [0, 1] -> (B, 52) MediaPipe blendshape scores, differentiably."""

    def __init__(self, mesh: FaceMeshNet, blendshapes):
        super().__init__()
        self.mesh, self.blendshapes = mesh, blendshapes

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        size = rgb.shape[-1]
        return self.blendshapes.forward_landmarks(self.mesh.aligned(rgb)[..., :2] / size, (size, size))

    @classmethod
    def from_weights(cls, path: str | Path | None = None) -> "AlignedBlendshapes":
        from mien.models.blendshapes import BlendshapeNet

        return cls(FaceMeshNet.from_weights(path), BlendshapeNet.from_weights(path).requires_grad_(False)).eval()


__all__ = ["ALIGNED_ROI", "AlignedBlendshapes", "FaceMeshNet"]
