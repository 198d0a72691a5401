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

What reads the face is ``blendshape_critic`` (:data:`mien.settings.BLENDSHAPE_CRITICS`): the decoded face on every
guided step (``decoded``, the default: 0.12 s of CPU a step, 7 steps for fearful); mien's blendshape reader
(:mod:`mien.models.latent_reader`, ``kind="blendshape"``), a small net distilled from this critic that reads the
normalised latent without decoding it (``latent``); or the reader on the early guided steps and the decoded face on
the last ``blendshape_decoded_steps`` (``hybrid``), as recogniser guidance's hybrid critic does. Each step's
gradient is normalised (:class:`mien.guidance.gradient.GradientGuide`), so a critic chooses only where a step
points. Figures: docs/performance.md, "A blendshape reader".

``mien evaluate``'s blendshape classifier and AU figures read the same blendshapes, so with this
guidance on they are no longer independent checks of the expression; face-api's expression classifier
still is.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from mien.guidance.base import Correction, Guidance, GuidanceContext
from mien.guidance.gradient import GradientGuide, critic_plan, decoded, in_float32


class BlendshapeGuide(GradientGuide):
    """Blendshape guidance: the score is minus the squared distance between the decoded face's 52
    blendshapes (``measure``: latents -> (B, 52), differentiable) and ``target`` (1 or B, 52).

    ``late_measure``, when given, reads the steps with flow time t <= ``late_until`` instead of ``measure`` (the hybrid
    critic: the blendshape reader early, the decoded face late; :meth:`GradientGuide.score_at` picks the step's closeness)."""

    def __init__(self, measure: Callable[[torch.Tensor], torch.Tensor], target: torch.Tensor, region: torch.Tensor,
                 scale: float, until: float, precision: str = "float32",
                 late_measure: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 late_until: float = -1.0):  # fmt: skip
        super().__init__(self.closeness, region, scale, until, precision,
                         self.late_closeness if late_measure is not None else None, late_until)
        self.measure, self.late_measure, self.target = measure, late_measure, target

    def closeness(self, z: torch.Tensor) -> torch.Tensor:
        """(B,) minus the squared distance between each image's blendshapes (``measure``) and the target
        (MediaPipe's first score, ``_neutral``, is not a movement and stays out)."""
        return self.distance_score(self.measure(z))

    def late_closeness(self, z: torch.Tensor) -> torch.Tensor:
        """:meth:`closeness` with ``late_measure`` reading the blendshapes."""
        return self.distance_score(self.late_measure(z))

    def distance_score(self, shapes: torch.Tensor) -> torch.Tensor:
        """(B,) minus the squared distance between (B, 52) blendshapes and the target, ``_neutral`` left out."""
        return -(shapes - self.target.clone())[:, 1:].pow(2).sum(1)


def latent_blendshapes(model, taef2, blendshapes) -> Callable[[torch.Tensor], torch.Tensor]:
    """z (the built-in model's normalised latents) -> (B, 52) blendshapes of the decoded faces,
    differentiable: ``model.denormalize``, TAEF2 decoding, :class:`mien.models.face_mesh.AlignedBlendshapes`."""

    return decoded(model, taef2, blendshapes)


def reader_blendshapes(reader) -> Callable[[torch.Tensor], torch.Tensor]:
    """z -> the blendshape reader's (B, 52) blendshapes, in float32 (:func:`mien.guidance.gradient.in_float32`)."""
    return in_float32(reader)


class BlendshapeGuidance(Guidance):
    """``--blendshape-guidance`` and ``--blendshape-guidance-until`` (FlowEdit; 0 is off); ``--blendshape-critic``
    chooses what reads the face (module docstring). Its nets (:class:`mien.models.face_mesh.AlignedBlendshapes`)
    are the pipeline's, loaded with it; the blendshape reader is loaded once per process when a critic needs it."""

    name = "blendshape"

    def correction(self, ctx: GuidanceContext) -> Correction | None:
        s = ctx.settings
        if s.blendshape_guidance <= 0:
            return None
        goal = torch.from_numpy(np.asarray(ctx.target_blendshapes, np.float32))[None].to(ctx.device)
        early, late, late_until = self.critics(ctx)
        return BlendshapeGuide(early, goal, ctx.region, s.blendshape_guidance, s.blendshape_guidance_until,
                               s.critic_precision, late, late_until)

    @staticmethod
    def critics(ctx: GuidanceContext):
        """(the early steps' measure, the late steps' measure or None, the flow time from which the late one reads)
        by ``blendshape_critic``."""
        s = ctx.settings

        def decoded_measure():
            return latent_blendshapes(ctx.model, ctx.nets["taef2"], ctx.nets["blendshapes"])

        def reader_measure():
            from mien.models.latent_reader import load_reader

            return reader_blendshapes(load_reader(ctx.device, "blendshape"))

        reader_early, decoded_late, late_until = critic_plan(s.blendshape_critic, s.steps, s.strength,
                                                             s.blendshape_guidance_until, s.blendshape_decoded_steps)
        if not reader_early:
            return decoded_measure(), None, -1.0
        return reader_measure(), decoded_measure() if decoded_late else None, late_until
