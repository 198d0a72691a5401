"""The training view of the pool: what the built-in model is conditioned on, per sample.

- target: the crop (its latent), its validity mask (fill excluded) and its expression vector
  (52 blendshapes + pose / 90, :func:`mien.expression.targets.expression_vector`);
- identity: the L2-normalised 128-D face-api descriptor of a *different* photo of the same person, drawn anew each time the sample is used (DESIGN.md, "Identity
  conditioning without copy-paste": the expression must come from the expression stream).
- Fallback for people with a single photo, including all of UTKFace (no identity labels): the photo's
  own identity vector. Face-recognition embeddings are trained to ignore expression, so this leaks
  little expression, but it is the weaker signal; ``self_ref`` marks these rows.
Samples whose crop MediaPipe could not analyse are left out (no expression vector).

Why face-api alone conditions identity and MobileFaceNet does not: MobileFaceNet is kept as an
independent judge for evaluation (a generator conditioned on one network's embedding can match that
network's features without looking like the person; a second network trained differently is a
fairer test), and the face-api descriptor is the one with a published verification threshold.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mien.data.faces128 import Sample
from mien.expression.targets import POSE_SCALE


@dataclass
class TrainingView:
    samples: list[Sample]
    identity: np.ndarray  # (N, 128) float32, each sample's OWN identity vector
    expression: np.ndarray  # (N, 55) float32
    group: np.ndarray  # (N,) int: samples of one person share a group
    self_ref: np.ndarray  # (N,) bool: no other photo of this person

    def ref_candidates(self) -> list[np.ndarray]:
        """Per sample, indices of the other samples of the same person (itself when there are none)."""
        order = np.argsort(self.group, kind="stable")
        bounds = np.flatnonzero(np.diff(self.group[order])) + 1
        members = {int(self.group[g[0]]): g for g in np.split(order, bounds)}
        out = []
        for i, g in enumerate(self.group):
            m = members[int(g)]
            others = m[m != i]
            out.append(others if len(others) else np.array([i]))
        return out


def identity_vectors(faceapi: np.ndarray) -> np.ndarray:
    """(N, 128) identity condition: the face-api descriptor, L2-normalised."""
    return (faceapi / np.linalg.norm(faceapi, axis=1, keepdims=True).clip(1e-8)).astype(np.float32)


def build(samples: list[Sample], ann: dict[str, np.ndarray]) -> TrainingView:
    """Join manifest samples with the annotation sidecar (see :func:`mien.data.annotate.load_annotations`)."""
    row = {k: i for i, k in enumerate(ann["key"])}
    keep = [s for s in samples if s.key in row and bool(ann["ok"][row[s.key]])
            and np.isfinite(ann["faceapi"][row[s.key]]).all()]
    idx = np.array([row[s.key] for s in keep], dtype=np.int64)
    pose = np.stack([ann["yaw"][idx], ann["pitch"][idx], ann["roll"][idx]], 1) / POSE_SCALE
    expression = np.concatenate([ann["blendshapes"][idx], pose], 1).astype(np.float32)
    identity = identity_vectors(ann["faceapi"][idx])
    names = [s.identity or f"single:{s.key}" for s in keep]
    _, group = np.unique(np.array(names), return_inverse=True)
    counts = np.bincount(group)
    return TrainingView(keep, identity, expression, group.astype(np.int64), counts[group] == 1)
