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

Choices (figures on benchmarks/dev-wild.yaml in the model card, "Recogniser guidance"):

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
"""

from __future__ import annotations

from collections.abc import Callable

import torch


class GradientGuide:
    """A ``correct(z, t, t_next)`` hook of :func:`mien.sampling.flowedit.sample_flowedit` that steps up a
    differentiable score of the latents, late in the edit.

    ``score`` maps (B, C, H, W) latents to (B,) scores; ``region`` (1, 1, H, W) weights the latent cells
    allowed to move (1 in the face box, 0 where the photo is kept). After each step with flow time
    t <= ``until`` the state moves by ``scale * (t - t_next)`` along the score's gradient, normalised to
    RMS 1 per image over the whole latent (so the total move does not depend on the number of steps).
    """

    def __init__(self, score: Callable[[torch.Tensor], torch.Tensor], region: torch.Tensor, scale: float,
                 until: float):  # fmt: skip
        self.score, self.region = score, region
        self.scale, self.until = float(scale), float(until)

    def __call__(self, z: torch.Tensor, t: float, t_next: float) -> torch.Tensor:
        if self.scale <= 0 or t > self.until + 1e-9:
            return z
        # callers may run under inference_mode (its tensors cannot enter autograd): step out and clone
        with torch.inference_mode(False), torch.enable_grad():
            zz = z.detach().clone().requires_grad_(True)
            (grad,) = torch.autograd.grad(self.score(zz).sum(), zz)
        grad = grad * self.region
        rms = grad.pow(2).mean((1, 2, 3), keepdim=True).sqrt()  # over the whole latent, zeros outside included
        return z + self.scale * (t - t_next) * grad / (rms + 1e-12)


def edit_region(keep: str, device) -> torch.Tensor:
    """(1, 1, 16, 16) cells an edit with kept region ``keep`` may redraw (:func:`mien.builtin.edit.keep_mask`)."""
    from mien.builtin.edit import keep_mask

    return 1 - keep_mask(keep).to(device)


def chain(*hooks):
    """One ``correct`` hook that applies ``hooks`` in order (None entries skipped); None when there are none."""
    hooks = [h for h in hooks if h is not None]
    if not hooks:
        return None
    if len(hooks) == 1:
        return hooks[0]

    def correct(z: torch.Tensor, t: float, t_next: float) -> torch.Tensor:
        for hook in hooks:
            z = hook(z, t, t_next)
        return z

    return correct


class RecogniserGuide(GradientGuide):
    """Recogniser guidance: the score is the cosine between MobileFaceNet's embedding of the decoded face
    and the person's.

    ``embed`` maps the sampler's latents to (B, 192) unit embeddings, differentiably; ``target`` (B or 1,
    192) are unit embeddings of the person; ``region`` as in :class:`GradientGuide`.
    """

    def __init__(self, embed: Callable[[torch.Tensor], torch.Tensor], target: torch.Tensor, region: torch.Tensor,
                 scale: float, until: float):  # fmt: skip
        super().__init__(self.similarity, region, scale, until)
        self.embed, self.target = embed, target

    @classmethod
    def for_edit(cls, embed: Callable[[torch.Tensor], torch.Tensor], target: torch.Tensor, keep: str, scale: float,
                 until: float) -> "RecogniserGuide":  # fmt: skip
        """The guide of an edit with kept region ``keep``: only the cells the edit may redraw move."""
        return cls(embed, target, edit_region(keep, target.device), scale, until)

    def similarity(self, z: torch.Tensor) -> torch.Tensor:
        """(B,) cosine between each image's embedding and the person's."""
        return (self.embed(z) * self.target.clone()).sum(1)  # clone: the target may be an inference tensor


def latent_embedder(model, taef2, identity) -> Callable[[torch.Tensor], torch.Tensor]:
    """z (the built-in model's normalised latents) -> unit MobileFaceNet embeddings of the decoded faces,
    differentiable: ``model.denormalize``, TAEF2 decoding, ``identity.mobilefacenet_unit`` (an
    :class:`mien.models.identity.IdentityEncoder` built with MobileFaceNet)."""

    def embed(z: torch.Tensor) -> torch.Tensor:
        rgb = taef2.decode(model.denormalize(z), clamp=False).clamp(0, 1)
        return identity.mobilefacenet_unit(rgb * 255)

    return embed
