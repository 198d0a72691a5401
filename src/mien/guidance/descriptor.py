"""Descriptor guidance: during a FlowEdit, small steps up the cosine between face-api's descriptor of the
decoded face and the person's identity vector.

Why: a swap (``mien generate --into``) moves another person's face to the selfie's person, and FlowEdit's
velocity difference between two identities is small for the built-in model, which was trained to keep an
identity, not to change it (docs/swap.md: the swapped face keeps much of the scene person's face shape).
The identity condition *is* face-api's descriptor, L2-normalised
(:meth:`mien.models.identity.IdentityEncoder.condition`), so the model's own notion of the person is a point this guidance can step toward: after each step with flow
time t <= ``until`` the state moves along the gradient of that cosine, through TAEF2 decoding and face-api's
net on its dlib chip (a fixed, differentiable warp of the aligned crop). FlowEdit's state is a clean latent
at every step (:mod:`mien.sampling.flowedit`), so it is its own one-step prediction of the clean image; the
step is :mod:`mien.guidance.gradient`'s (the forward step of universal guidance, Bansal et al., ICLR 2024),
as recogniser guidance's is (:mod:`mien.guidance.recogniser`, MobileFaceNet instead of face-api).

Cosine on unit descriptors is the L2 distance face-api verifies with, up to a monotone map (for raw
descriptors of similar norm). With this guidance on, face-api's verification (``mien evaluate``) is no
longer an independent check of identity: it scores the net the face was pushed up; MobileFaceNet's
similarity still is, unless recogniser guidance is also on (docs/swap.md reports both).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from mien.guidance.base import Correction, Guidance, GuidanceContext
from mien.guidance.gradient import decoded
from mien.guidance.recogniser import RecogniserGuide


def latent_descriptor(model, taef2, identity) -> Callable[[torch.Tensor], torch.Tensor]:
    """z (the built-in model's normalised latents) -> (B, 128) unit face-api descriptors of the decoded faces,
    differentiable: ``model.denormalize``, TAEF2 decoding, ``identity.faceapi`` (an
    :class:`mien.models.identity.IdentityEncoder`), L2-normalised as the identity condition is."""

    return decoded(model, taef2, lambda rgb: F.normalize(identity.faceapi(rgb * 255), dim=1))


class DescriptorGuidance(Guidance):
    """``--descriptor-guidance`` and ``--descriptor-guidance-until`` (FlowEdit; 0 is off): toward the request's
    identity vector (in a swap, the selfie's person)."""

    name = "descriptor"

    def correction(self, ctx: GuidanceContext) -> Correction | None:
        s = ctx.settings
        if s.descriptor_guidance <= 0:
            return None
        embed = latent_descriptor(ctx.model, ctx.nets["taef2"], ctx.nets["identity"])
        target = ctx.person_rows("vector")
        # the cosine score of RecogniserGuide, on face-api's descriptor
        return RecogniserGuide(embed, target, ctx.region, s.descriptor_guidance, s.descriptor_guidance_until,
                               s.critic_precision)
