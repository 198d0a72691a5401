"""MediaPipe's face blendshape model (52 ARKit-style scores from 146 landmarks), in PyTorch.

The network is ``face_blendshapes.tflite`` from ``face_landmarker.task``, executed by ``TFLiteGraph``
(an MLP-Mixer; it centres and scales the points itself). MediaPipe feeds it, per
face_blendshapes_graph.cc, the ``LANDMARK_SUBSET`` of the 478 face landmarks as ``[x * image_width,
y * image_height]`` in pixels of the whole input image (LandmarksToTensorCalculator, attributes X, Y),
and returns its 52 outputs as the scores unchanged (no activation after the graph's own sigmoid).
Reproduces MediaPipe 1.2.2's scores to about 2e-5 (see tests/test_tflite_models.py).
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import torch
from torch import nn

from mien.face.blendshape_names import BLENDSHAPE_NAMES  # the 52 output names, torch-free; re-exported here
from mien.models.tflite_graph import TFLiteGraph

# kLandmarksSubsetIdxs in google-ai-edge/mediapipe mediapipe/tasks/cc/vision/face_landmarker/
# face_blendshapes_graph.cc (commit 97fe07c4): the 146 of the 478 face-mesh landmarks the model reads,
# in input order (the last ten are the iris landmarks 468-477).
LANDMARK_SUBSET = (
    0, 1, 4, 5, 6, 7, 8, 10, 13, 14, 17, 21, 33, 37, 39, 40, 46, 52, 53, 54, 55, 58, 61, 63, 65,
    66, 67, 70, 78, 80, 81, 82, 84, 87, 88, 91, 93, 95, 103, 105, 107, 109, 127, 132, 133, 136,
    144, 145, 146, 148, 149, 150, 152, 153, 154, 155, 157, 158, 159, 160, 161, 162, 163, 168,
    172, 173, 176, 178, 181, 185, 191, 195, 197, 234, 246, 249, 251, 263, 267, 269, 270, 276,
    282, 283, 284, 285, 288, 291, 293, 295, 296, 297, 300, 308, 310, 311, 312, 314, 317, 318,
    321, 323, 324, 332, 334, 336, 338, 356, 361, 362, 365, 373, 374, 375, 377, 378, 379, 380,
    381, 382, 384, 385, 386, 387, 388, 389, 390, 397, 398, 400, 402, 405, 409, 415, 454, 466,
    468, 469, 470, 471, 472, 473, 474, 475, 476, 477,
)  # fmt: skip

MEMBER = "face_blendshapes.tflite"  # inside face_landmarker.task (a zip)


class BlendshapeNet(nn.Module):
    """(B, 146, 2) landmark pixels -> (B, 52) blendshape scores in ``BLENDSHAPE_NAMES`` order."""

    def __init__(self, flatbuffer: bytes):
        super().__init__()
        self.graph = TFLiteGraph(flatbuffer)
        self.register_buffer("subset", torch.tensor(LANDMARK_SUBSET), persistent=False)

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        if points.ndim != 3 or tuple(points.shape[1:]) != (len(LANDMARK_SUBSET), 2):
            raise ValueError(f"BlendshapeNet expects (B, 146, 2) pixel coordinates, got {tuple(points.shape)}")
        return self.graph(points)

    def forward_landmarks(self, landmarks: torch.Tensor, image_size) -> torch.Tensor:
        """Scores from (B, 478, 2 or 3) normalised landmarks (x / W, y / H, [z]) of a W x H image.

        ``image_size`` is ``(W, H)`` or a (B, 2) tensor of per-image sizes.
        """
        if landmarks.ndim != 3 or landmarks.shape[1] != 478 or landmarks.shape[2] not in (2, 3):
            raise ValueError(f"forward_landmarks expects (B, 478, 2|3) landmarks, got {tuple(landmarks.shape)}")
        size = torch.as_tensor(image_size, dtype=landmarks.dtype, device=landmarks.device)
        return self.forward(landmarks[:, self.subset, :2] * size.reshape(-1, 1, 2))

    @classmethod
    def from_weights(cls, path: str | Path | None = None) -> "BlendshapeNet":
        """The net from ``face_landmarker.task`` (default: ``mien.weights.locate``), in eval mode.

        The .task is read as a zip in memory; nothing is extracted to disk.
        """
        if path is None:
            from mien.weights import locate

            path = locate("face_landmarker")
        with zipfile.ZipFile(path) as bundle:
            return cls(bundle.read(MEMBER)).eval()


__all__ = ["BLENDSHAPE_NAMES", "LANDMARK_SUBSET", "MEMBER", "BlendshapeNet"]
