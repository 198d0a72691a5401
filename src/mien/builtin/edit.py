"""Editing the identity photo rather than drawing a new one.

The built-in model conditions on the identity photo (its face-api descriptor and, spatially, its
latent), but sampled from pure noise it redraws hair, background and face shape, which the
recognisers then miss: 0.725 verification on the 40 London dev people (model card). Published,
training-free tools keep what should not change; mien has two edit methods (``--method``):

- **flowedit** (the default; :mod:`mien.sampling.flowedit`, Kulikov et al., ICCV 2025): the photo is
  moved by the *difference* between the model's predictions for the requested expression and for the
  photo's own (its measured blendshapes and pose), so whatever the two agree on — most of the face —
  stays the photo's. On the in-the-wild CFP dev people this kept 0.81 of outputs verifiable against
  0.59 for sdedit (model card, "Choosing the defaults").
- **sdedit** (session 3's default): start the probability-flow ODE at flow time ``t = strength``
  from the photo's latent noised to that level, ``x_t = (1 - t) x0 + t noise`` (SDEdit, Meng et al.,
  ICLR 2022; diffusers' img2img ``strength``), so coarse layout and colour come from the photo and the
  model redraws the rest. ``strength = 1`` is generation from noise. The schedule is
  ``mien.sampling.flow_sigmas(steps, start=strength)``; the start sample is built by the pipeline.

Kept region (``--keep background``, for either method; Blended Latent Diffusion, Avrahami et al.,
SIGGRAPH 2023, sec. 3): outside a fixed face box the photo is kept at every step — for sdedit the
denoised estimate is replaced by the photo's latent (done on the denoiser, ``denoise(x, sigma) -> x0``,
so every sampler in :mod:`mien.sampling` stays pure), for flowedit the velocity difference is zeroed
there. Every face is aligned to one 128 px template (mien.face.align), so the face region is one fixed
box of latent cells rather than a per-photo mask.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from mien.builtin.guidance import guided_velocity
from mien.errors import MienError
from mien.face.blendshape_names import BLENDSHAPE_NAMES
from mien.settings import KEEP_REGIONS

# Latent cells (8 px each) the model may redraw with keep="background": rows 4-14, columns 3-12 of
# the 16 x 16 grid, i.e. pixels y 32-120, x 24-104 of the template — brows to chin, cheek to cheek,
# with room for an open jaw. Chosen by eye on the template and checked on London quick (model card).
FACE_BOX = (4, 15, 3, 13)


def keep_mask(keep: str, size: int = 16) -> torch.Tensor:
    """(1, 1, size, size) weights in [0, 1]: 1 where the identity photo is kept, 0 where the model draws.

    The box edge is softened over one cell (3x3 box filter) so that the seam is blended, not cut.
    """
    if keep not in KEEP_REGIONS:
        raise MienError(f"unknown keep region '{keep}'; choose one of {', '.join(KEEP_REGIONS)}")
    if keep == "none":
        return torch.zeros(1, 1, size, size)
    m = torch.ones(1, 1, size, size)
    y0, y1, x0, x1 = FACE_BOX
    m[..., y0:y1, x0:x1] = 0
    return F.avg_pool2d(F.pad(m, (1, 1, 1, 1), mode="replicate"), 3, stride=1)


def kept_region_denoiser(denoise: Callable, x0: torch.Tensor, mask: torch.Tensor) -> Callable:
    """``denoise`` with its estimate replaced by ``x0`` where ``mask`` is 1 (Blended Latent Diffusion)."""

    def blended(x: torch.Tensor, sigma, **extra_args) -> torch.Tensor:
        return mask * x0 + (1 - mask) * denoise(x, sigma, **extra_args)

    return blended



# Blendshapes whose rise contrast guidance leaves unamplified (session 9): smile and eye closure. Tried
# against sunglasses drawn on happy requests (they stayed), kept because the runs measured include it.
_NO_AMPLIFIED_RISE = [i for i, n in enumerate(BLENDSHAPE_NAMES)
                      if n.startswith(("mouthSmile", "cheekSquint", "eyeBlink", "eyeSquint"))]  # fmt: skip


def contrast_negative(source_expression: torch.Tensor, target_expression: torch.Tensor) -> torch.Tensor:
    """The expression contrast guidance pushes away from: the photo's own, except that on the smile and
    eye-closure blendshapes it takes max(own, target), so a rise there is not amplified (a fall is)."""
    neg = source_expression.clone()
    i = _NO_AMPLIFIED_RISE
    neg[:, i] = torch.maximum(source_expression[:, i], target_expression[:, i])
    return neg


def flowedit_velocity(model, cond: dict, source_expression: torch.Tensor, scales, interval=None,
                      contrast: float = 1.0) -> Callable:  # fmt: skip
    """The pair velocity :func:`mien.sampling.flowedit.sample_flowedit` needs: rows [:B] predicted with
    ``source_expression`` (B, 55), rows [B:] with ``cond``'s own; both halves share every other stream.

    ``contrast`` w != 1 (*contrast guidance*, session 9): the target rows become
    ``v_tar + (w - 1) [v(z_tar | target) - v(z_tar | negative)]`` with the negative of
    :func:`contrast_negative`: classifier-free guidance's extrapolation (Ho & Salimans 2022), taken
    between the two expressions instead of against the null token, so only what the requested
    expression changes is pushed. One more UNet row per image and step.
    """
    if contrast == 1.0:
        pair = {k: torch.cat([v, v]) for k, v in cond.items()}
        pair["expression"] = torch.cat([source_expression, cond["expression"]])
        return guided_velocity(model, pair, scales=scales, interval=interval)
    three = {k: torch.cat([v, v, v]) for k, v in cond.items()}
    three["expression"] = torch.cat([source_expression, cond["expression"],
                                     contrast_negative(source_expression, cond["expression"])])  # fmt: skip
    v3 = guided_velocity(model, three, scales=scales, interval=interval)

    def velocity(x: torch.Tensor, t) -> torch.Tensor:
        z_src, z_tar = x.chunk(2)
        t3 = torch.as_tensor(t).reshape(-1)[:1].expand(3 * z_src.shape[0])
        v_src, v_tar, v_neg = v3(torch.cat([z_src, z_tar, z_tar]), t3).chunk(3)
        return torch.cat([v_src, v_tar + (contrast - 1.0) * (v_tar - v_neg)])

    return velocity
