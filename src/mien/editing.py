"""Editing the identity photo rather than drawing a new one: the two edit methods (``--method``).

The built-in model conditions on the identity photo (its face-api descriptor and, spatially, its
latent), but sampled from pure noise it redraws hair, background and face shape, which the
recognisers then miss: 0.725 verification on the 40 London dev people (model card). Published,
training-free tools keep what should not change:

- **flowedit** (the default; :mod:`mien.sampling.flowedit`, Kulikov et al., ICCV 2025): the photo is
  moved by the *difference* between the model's predictions for the requested expression and for the
  photo's own (its measured blendshapes and pose), so whatever the two agree on — most of the face —
  stays the photo's. On the in-the-wild CFP dev people this kept 0.81 of outputs verifiable against
  0.59 for sdedit (docs/history/model-card-defaults.md).
- **sdedit**: start the probability-flow ODE at flow time ``t = strength`` from the photo's latent noised
  to that level, ``x_t = (1 - t) x0 + t noise`` (SDEdit, Meng et al., ICLR 2022; diffusers' img2img
  ``strength``), so coarse layout and colour come from the photo and the model redraws the rest.
  ``strength = 1`` is generation from noise, with any sampler of :mod:`mien.sampling`.

Kept region (``--keep background``, :mod:`mien.regions`): for sdedit the denoised estimate is replaced by
the photo's latent there (done on the denoiser, ``denoise(x, sigma) -> x0``, so every sampler stays
pure), for flowedit the velocity difference is zeroed there.

Both functions take the model's prediction as an argument (built with :mod:`mien.guidance`), draw each
seed's noise from its own generator (so image i is the same at any n) and report progress through
``callback(step, total, info)``, called once per step.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from mien.guidance.base import Correction, PairVelocity

ProgressCallback = Callable[[int, int, dict], None]  # (step done, 1-based; steps in all; sampler's info)


def kept_region_denoiser(denoise: Callable, x0: torch.Tensor, mask: torch.Tensor) -> Callable:
    """``denoise`` with its estimate replaced by ``x0`` where ``mask`` is 1 (Blended Latent Diffusion)."""

    def blended(x: torch.Tensor, sigma, **extra_args) -> torch.Tensor:
        return mask * x0 + (1 - mask) * denoise(x, sigma, **extra_args)

    return blended


def _progress(callback: ProgressCallback | None, total: int):
    """A sampler's per-step ``callback(info)`` as ``callback(step, total, info)``; None when there is none."""
    if callback is None:
        return None
    return lambda info: callback(int(info["i"]) + 1, total, info)


def sdedit(denoise: Callable, photo: torch.Tensor, seeds: list[int], steps: int, strength: float, sampler: str,
           keep: torch.Tensor | None = None, callback: ProgressCallback | None = None) -> torch.Tensor:  # fmt: skip
    """SDEdit from ``photo`` (B, C, H, W normalised latents) noised to flow time ``strength`` (pure noise at
    1) with ``sampler``; ``keep`` (1, 1, H, W) holds the photo where it is 1."""
    from mien.sampling import SAMPLERS, flow_sigmas

    noise = torch.stack([torch.randn(*photo.shape[1:], generator=torch.Generator().manual_seed(s)) for s in seeds])
    if keep is not None:
        denoise = kept_region_denoiser(denoise, photo, keep)
    sigmas = flow_sigmas(steps, start=strength).to(photo.device)
    noise = noise.to(photo.device) * sigmas[0]
    return SAMPLERS[sampler](denoise, photo + noise if strength < 1 else noise, sigmas,
                             callback=_progress(callback, steps))  # fmt: skip


def flowedit(pair: PairVelocity, photo: torch.Tensor, seeds: list[int], steps: int, strength: float,
             keep: torch.Tensor | None = None, correct: Correction | None = None,
             callback: ProgressCallback | None = None) -> torch.Tensor:  # fmt: skip
    """FlowEdit of ``photo`` (B, C, H, W normalised latents) with the pair velocity ``pair`` (source rows,
    then target rows) from flow time ``strength`` (:mod:`mien.sampling.flowedit`), along
    :func:`mien.sampling.flow_times`."""
    from mien.sampling import flow_times, sample_flowedit

    gens = [torch.Generator().manual_seed(s) for s in seeds]
    drawn = 0

    def noise(k: int) -> torch.Tensor:  # each seed's own stream, so image i is the same at any n
        nonlocal drawn
        if k != drawn:
            raise RuntimeError(f"noise draws must come in order: asked for {k}, next is {drawn}")
        drawn += 1
        return torch.stack([torch.randn(photo.shape[1:], generator=g) for g in gens]).to(photo.device)

    return sample_flowedit(pair, photo, flow_times(steps, strength), noise, keep=keep, correct=correct,
                           callback=_progress(callback, steps))  # fmt: skip
