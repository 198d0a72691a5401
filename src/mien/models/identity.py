"""Identity embeddings of *aligned 128 px crops*, differentiable and GPU-ready.

The training data, the generator's inputs and its outputs are all faces already aligned to the
faces128 template, so the two recognition nets' input crops are fixed warps of the 128 crop: no
detector is needed, the same function serves data annotation, conditioning at generation time and
identity losses, and gradients flow through it.

- MobileFaceNet: the ArcFace 112 crop is the similarity transform TEMPLATE_128 → ARCFACE_112
  (both five-point templates; shared/reference/README.md section 4).
- face-api / dlib: the 150 px dlib chip (padding 0.25) is the similarity transform from dlib's five
  parts *as they sit in an aligned crop* to dlib's chip template. Those positions are the mean of
  MediaPipe's stand-ins for dlib's parts (``align.DLIB_5PT_FROM_MEDIAPIPE``) over dev crops, measured by
  a one-off script kept in the history (``git show c095101:scripts/measure_crop_dlib_points.py``; 246 dev
  crops, per-point std 0.7–1.9 px).

For photos that are not aligned crops, :mod:`mien.analysis` uses each photo's own landmarks instead.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mien.face.align import ARCFACE_112, DLIB_5PT_TEMPLATE, TEMPLATE_128, similarity_transform
from mien.models.faceapi_recognition import FaceRecognitionNet
from mien.models.mobilefacenet import MobileFaceNet

# dlib's five parts (shape_predictor_5 order) in the 128 crop; see the module docstring.
DLIB5_IN_CROP_128 = np.array(
    [[94.17, 52.35], [76.98, 54.07], [33.91, 52.59], [51.24, 54.16], [64.34, 82.48]], dtype=np.float64
)


def _sampling_grid(crop_to_out: np.ndarray, out_size: int, in_size: int) -> torch.Tensor:
    """Grid for ``F.grid_sample(align_corners=True)`` that realises ``cv2.warpAffine(crop, M, out)``."""
    m = np.vstack([crop_to_out, [0, 0, 1]])
    inv = np.linalg.inv(m)[:2]
    r, c = np.meshgrid(np.arange(out_size), np.arange(out_size), indexing="ij")
    pts = np.stack([c, r, np.ones_like(c)], -1).reshape(-1, 3) @ inv.T  # output pixel -> crop pixel
    grid = pts / (in_size - 1) * 2 - 1
    return torch.tensor(grid.reshape(1, out_size, out_size, 2), dtype=torch.float32)


class IdentityEncoder(nn.Module):
    """(B,3,128,128) aligned crops, RGB 0..255 → dict of face-api (128, raw) and MobileFaceNet (192, raw)."""

    def __init__(self, recognition: FaceRecognitionNet, mobilefacenet: MobileFaceNet | None = None, size: int = 128):
        super().__init__()
        self.recognition = recognition
        self.mobilefacenet = mobilefacenet
        s = size / 128.0
        dlib_chip = (0.25 + DLIB_5PT_TEMPLATE) / 1.5 * 150
        self.register_buffer("grid_dlib", _sampling_grid(similarity_transform(DLIB5_IN_CROP_128 * s, dlib_chip), 150, size))
        self.register_buffer("grid_arc", _sampling_grid(similarity_transform(TEMPLATE_128 * s, ARCFACE_112), 112, size))

    @classmethod
    def from_weights(cls, mobilefacenet: bool = True) -> "IdentityEncoder":
        mfn = MobileFaceNet.from_weights() if mobilefacenet else None
        return cls(FaceRecognitionNet.from_weights(), mfn).eval()

    def faceapi(self, x: torch.Tensor) -> torch.Tensor:
        """Raw face-api descriptors (B, 128) of aligned crops."""
        return self.recognition(self.crops(x)[0])

    def crops(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        chip = F.grid_sample(x, self.grid_dlib.expand(x.shape[0], -1, -1, -1), mode="bilinear", align_corners=True)
        return chip, self.arc_crop(x)

    def arc_crop(self, x: torch.Tensor) -> torch.Tensor:
        """The 112 px ArcFace crop MobileFaceNet reads, cut differentiably from aligned crops."""
        return F.grid_sample(x, self.grid_arc.expand(x.shape[0], -1, -1, -1), mode="bilinear", align_corners=True)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        chip, arc = self.crops(x)
        out = {"faceapi": self.recognition(chip)}
        if self.mobilefacenet is not None:
            out["mobilefacenet"] = self.mobilefacenet(arc)
        return out

    def mobilefacenet_unit(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 192) L2-normalised MobileFaceNet embeddings of aligned crops (the ArcFace crop alone, no
        dlib chip: recogniser guidance calls this at every late step, with gradients)."""
        if self.mobilefacenet is None:
            raise ValueError("this IdentityEncoder was built without MobileFaceNet")
        return F.normalize(self.mobilefacenet(self.arc_crop(x)), dim=1)

    def condition(self, x: torch.Tensor) -> torch.Tensor:
        """The built-in model's (B, 128) identity condition: the face-api descriptor, L2-normalised
        (the same as :func:`mien.data.training_view.identity_vectors` on annotated crops)."""
        return F.normalize(self.faceapi(x), dim=1)
