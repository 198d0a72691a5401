"""Recogniser guidance: late in a FlowEdit, small steps up a face recogniser's similarity to the person.

Why: the built-in model draws a requested expression with features it learnt from other people
(deeper folds, darker eye bags, a generic mouth), and recognisers then miss the person — the in-the-wild
CFP dev people verified 0.70 with FlowEdit alone (model card). FlowEdit's state is a clean latent at
every step (:mod:`mien.sampling.flowedit`), so a recogniser can judge its decoded image as it stands;
after each late step the state moves a little along the gradient of the cosine between MobileFaceNet's
embedding of that image and of the identity photos. This is the forward step of universal guidance
(Bansal et al., "Universal Guidance for Diffusion Models", ICLR 2024), on the clean state instead of a
denoised estimate, with the identity loss face editors train with (the ArcFace-cosine loss of pSp,
Richardson et al., CVPR 2021). The embedding is :class:`mien.models.identity.IdentityEncoder`'s, whose
crop of the aligned face is a fixed, differentiable warp.

Choices (figures on benchmarks/dev-wild.yaml in docs/history/model-card-defaults.md):

- Only late (flow time t <= ``until``, 0.3 by default: the last 7 of 25 steps): recognisers are not
  expression-blind, and in a trial at every step (a prototype of this code, not in the repository) the
  guidance pulled the expressions back toward the photo's; late, the expression's layout is already set
  and mostly detail moves. Scale 0.15 by default: on dev-wild it verified as well as 0.3 (CFP 0.95).
- MobileFaceNet, not face-api's descriptor: the identity condition and `mien evaluate`'s verification
  use face-api's, so guiding with another network keeps verification an independent check (the
  MobileFaceNet cosine `mien evaluate` reports is then not independent: the card says so).
- The step is the gradient, zeroed outside the face box (the kept background stays the photo's) and
  normalised to RMS 1 per image over the whole latent, times ``scale * (t - t_next)``, so the total
  move does not depend on the number of steps.
- The hybrid critic by default: ``recogniser_critic="hybrid"`` scores the early guided steps with mien's latent
  reader (:mod:`mien.models.latent_reader`, :func:`reader_embedder`; shipped with the model), which reads the latent
  without decoding it, and the last ``recogniser_decoded_steps`` (2) with the decoded face, where detail, and with it
  the person, settles: a third of the decoded critic's time, verifying within 0.02 of it on the tuning and report
  people (docs/performance.md, "A hybrid critic"). ``"decoded"`` decodes every guided step (0.6-0.9 s of CPU per
  image; a swap's default, mien.settings.SWAP_DEFAULTS, where the hybrid critic kept less of the selfie's person); ``"latent"`` reads every step with the reader (0.03 s), whose gradient agrees with the decoded critic's
  at cosine 0.37 and keeps less of the person (docs/performance.md, "A latent critic: measured, not taken").
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from mien.guidance.base import Correction, Guidance, GuidanceContext
from mien.guidance.gradient import GradientGuide, critic_plan, decoded, in_float32


class RecogniserGuide(GradientGuide):
    """Recogniser guidance: the score is the cosine between MobileFaceNet's embedding of the decoded face
    and the person's.

    ``embed`` maps the sampler's latents to (B, 192) unit embeddings, differentiably; ``target`` (B or 1,
    192) are unit embeddings of the person; ``region`` as in :class:`GradientGuide`. ``late_embed``, when given,
    scores the steps with flow time t <= ``late_until`` instead of ``embed`` (the hybrid critic: the latent reader
    early, the decoded face late; :meth:`GradientGuide.score_at` picks the step's similarity).

    The two critics' steps are comparable as they stand: :class:`GradientGuide` normalises each step's gradient
    to RMS 1 per image, so either critic moves the state by the same length, ``scale * (t - t_next)``, and only
    the direction is the critic's. Switching critics changes where a step points, never how far it goes.
    """

    def __init__(self, embed: Callable[[torch.Tensor], torch.Tensor], target: torch.Tensor, region: torch.Tensor,
                 scale: float, until: float, precision: str = "float32",
                 late_embed: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 late_until: float = -1.0):  # fmt: skip
        super().__init__(self.similarity, region, scale, until, precision,
                         self.late_similarity if late_embed is not None else None, late_until)
        self.embed, self.late_embed, self.target = embed, late_embed, target

    def similarity(self, z: torch.Tensor) -> torch.Tensor:
        """(B,) cosine between each image's embedding (``embed``) and the person's."""
        return self.cosine(self.embed(z))

    def late_similarity(self, z: torch.Tensor) -> torch.Tensor:
        """:meth:`similarity` with ``late_embed`` embedding the face."""
        return self.cosine(self.late_embed(z))

    def cosine(self, embedding: torch.Tensor) -> torch.Tensor:
        """(B,) cosine between (B, 192) unit embeddings and the person's."""
        return (embedding * self.target.clone()).sum(1)  # clone: the target may be an inference tensor


def latent_embedder(model, taef2, identity) -> Callable[[torch.Tensor], torch.Tensor]:
    """z (the built-in model's normalised latents) -> unit MobileFaceNet embeddings of the decoded faces,
    differentiable: ``model.denormalize``, TAEF2 decoding, ``identity.mobilefacenet_unit`` (an
    :class:`mien.models.identity.IdentityEncoder` built with MobileFaceNet)."""

    return decoded(model, taef2, lambda rgb: identity.mobilefacenet_unit(rgb * 255))


def reader_embedder(reader) -> Callable[[torch.Tensor], torch.Tensor]:
    """z -> the latent reader's unit embeddings (:class:`mien.models.latent_reader.LatentReader`, distilled from
    :func:`latent_embedder`), in float32 (:func:`mien.guidance.gradient.in_float32`)."""
    return in_float32(reader)


class RecogniserGuidance(Guidance):
    """``--recogniser-guidance`` and ``--recogniser-guidance-until`` (FlowEdit; 0 is off); ``--recogniser-critic``
    chooses what scores the face (the decoded face, the latent reader, or the reader early and the decoded face on
    the last ``--recogniser-decoded-steps`` guided steps)."""

    name = "recogniser"

    def correction(self, ctx: GuidanceContext) -> Correction | None:
        s = ctx.settings
        if s.recogniser_guidance <= 0:
            return None
        target = ctx.person_rows("embedding")
        if target is None:
            from mien.errors import MienError

            raise MienError("recogniser guidance needs MobileFaceNet in the pipeline's IdentityEncoder (as "
                            "MienPipeline.from_pretrained builds it), or pass recogniser_guidance=0")
        reader_early, decoded_late, late_until = critic_plan(s.recogniser_critic, s.steps, s.strength,
                                                             s.recogniser_guidance_until, s.recogniser_decoded_steps)
        if not reader_early:
            return self.guide(ctx, target, decoded_embedder(ctx))
        from mien.models.latent_reader import load_reader

        return self.guide(ctx, target, reader_embedder(load_reader(ctx.device)),
                          decoded_embedder(ctx) if decoded_late else None, late_until)

    @staticmethod
    def guide(ctx: GuidanceContext, target: torch.Tensor, embed, late_embed=None, late_until: float = -1.0):
        s = ctx.settings
        return RecogniserGuide(embed, target, ctx.region, s.recogniser_guidance, s.recogniser_guidance_until,
                               s.critic_precision, late_embed, late_until)


def decoded_embedder(ctx: GuidanceContext) -> Callable[[torch.Tensor], torch.Tensor]:
    """The decoded critic of a request's nets (:func:`latent_embedder`)."""
    return latent_embedder(ctx.model, ctx.nets["taef2"], ctx.nets["identity"])
