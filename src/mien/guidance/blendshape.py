"""Blendshape guidance: late in a FlowEdit, small steps toward the requested blendshapes, as MediaPipe reads
the decoded face.

Why: the model draws some requested expressions more weakly than asked (the whole dev benchmark reads
fearful and sad below their real-photo rates to the blendshape classifier, docs/status.md), and the
target it was asked for is a point of the same blendshape space MediaPipe measures. FaceExpr trains with
an "expression-crafting" loss between the requested expression and a classifier's reading of the
generated image; here the loss is used at sampling time instead, as recogniser guidance uses its
identity loss (:mod:`mien.guidance.recogniser`; the step is :mod:`mien.guidance.gradient`'s): after each
late step the state moves along the gradient of minus the squared distance between the blendshapes of
the decoded face (:class:`mien.models.face_mesh.AlignedBlendshapes`: MediaPipe's mesh and blendshape
nets in PyTorch, on a fixed crop of the aligned face) and the request's target.

``mien evaluate``'s blendshape classifier and AU figures read the same blendshapes, so with this
guidance on they are no longer independent checks of the expression; face-api's expression classifier
still is.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from mien.guidance.base import Correction, Guidance, GuidanceContext
from mien.guidance.gradient import GradientGuide, decoded


class BlendshapeGuide(GradientGuide):
    """Blendshape guidance: the score is minus the squared distance between the decoded face's 52
    blendshapes (``measure``: latents -> (B, 52), differentiable) and ``target`` (1 or B, 52)."""

    def __init__(self, measure: Callable[[torch.Tensor], torch.Tensor], target: torch.Tensor, region: torch.Tensor,
                 scale: float, until: float, precision: str = "float32"):  # fmt: skip
        super().__init__(self.closeness, region, scale, until, precision)
        self.measure, self.target = measure, target

    def closeness(self, z: torch.Tensor) -> torch.Tensor:
        """(B,) minus the squared distance between each image's blendshapes and the target (MediaPipe's
        first score, ``_neutral``, is not a movement and stays out)."""
        return -(self.measure(z) - self.target.clone())[:, 1:].pow(2).sum(1)


def latent_blendshapes(model, taef2, blendshapes) -> Callable[[torch.Tensor], torch.Tensor]:
    """z (the built-in model's normalised latents) -> (B, 52) blendshapes of the decoded faces,
    differentiable: ``model.denormalize``, TAEF2 decoding, :class:`mien.models.face_mesh.AlignedBlendshapes`."""

    return decoded(model, taef2, blendshapes)


class BlendshapeGuidance(Guidance):
    """``--blendshape-guidance`` and ``--blendshape-guidance-until`` (FlowEdit; 0 is off). Its nets
    (:class:`mien.models.face_mesh.AlignedBlendshapes`) are the pipeline's, loaded with it."""

    name = "blendshape"

    def correction(self, ctx: GuidanceContext) -> Correction | None:
        s = ctx.settings
        if s.blendshape_guidance <= 0:
            return None
        measure = latent_blendshapes(ctx.model, ctx.nets["taef2"], ctx.nets["blendshapes"])
        goal = torch.from_numpy(np.asarray(ctx.target_blendshapes, np.float32))[None].to(ctx.device)
        return BlendshapeGuide(measure, goal, ctx.region, s.blendshape_guidance, s.blendshape_guidance_until,
                               s.critic_precision)
