"""Colour hold: FlowEdit's clean state kept at the photo's skin colour over the face it redraws.

Why: the edit changes the colour of still skin (11-13 grey levels in the largest channel over the still face the
model redraws, on the tuning and report people of docs/fullres.md, "the decoder's reconstruction"), and the change is
the sampler's, not the decoder's. Detail transfer removes it at paste time as one colour (the median over still face
pixels), but at the kept region's soft edge the same pixels hold the edit's shading, which the paste cannot tell from
that colour change, so it keeps the photo there and loses part of the shading (docs/fullres.md, "what the surroundings
cost"). Here the change is held back where it arises: after each FlowEdit step the state's per-channel offset from
the photo's latent, the median over the latent cells the model redraws more than half (an expression moves a
minority of them: brows, lids, mouth), is taken out by ``strength``, weighted by the edit region, so the kept
background and the region's soft edge move with it. One offset per channel and image, as the paste's drift removal:
an expression's local shading stays.

``basis`` "latent" takes out the whole per-channel offset; "colour" only its part along the three latent directions
that shift the decoded face's mean colour (red, green, blue), found once per request from the decoder's Jacobian at
the photo's latent: a latent channel's offset also carries texture and contrast, and taking all of it out softens
the face.

Off by default: on the tuning people of docs/fullres.md ("holding the skin's colour in the sampler") the hold halves
the edit's colour change on still skin but leaves its uneven part, so the paste's soft edge costs still skin as before,
and it changes what the model draws (London loses 4-7 of 49 images' expressions with each variant).
"""

from __future__ import annotations

import torch

from mien.guidance.base import Correction, Guidance, GuidanceContext


def colour_offset(z: torch.Tensor, photo: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    """(B, C, 1, 1) median of ``z - photo`` over the cells where ``region`` (1, 1, H, W) is above 0.5, per image and
    channel (zeros where no cell is)."""
    cells = (region[0, 0] > 0.5).flatten()
    if not cells.any():
        return torch.zeros(*z.shape[:2], 1, 1, dtype=z.dtype, device=z.device)
    d = (z - photo).flatten(2)[..., cells]
    return d.median(dim=2).values[..., None, None]


def colour_projection(decode, photo: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    """(B, C, C) projection onto the latent offsets that change the decoded face's mean colour: with J (3, C) the
    Jacobian of the mean RGB over the redrawn face (``region`` above 0.5, at the decoded size) with respect to a
    per-channel offset of ``photo`` weighted by ``region``, J^T (J J^T)^-1 J, per image. ``decode``: normalised
    latents -> RGB (B, 3, h, w), differentiable and not clamped (a clamped pixel has no gradient)."""
    with torch.inference_mode(False), torch.enable_grad():
        x, w = photo.detach().clone(), region.detach().clone()
        offset = torch.zeros(*x.shape[:2], 1, 1, dtype=x.dtype, device=x.device, requires_grad=True)
        rgb = decode(x + offset * w)
        face = torch.nn.functional.interpolate(w, size=rgb.shape[-2:], mode="bilinear", align_corners=False) > 0.5
        mean = (rgb * face).sum((2, 3)) / face.sum().clamp(min=1)  # (B, 3)
        rows = [torch.autograd.grad(mean[:, c].sum(), offset, retain_graph=c < 2)[0].flatten(1) for c in range(3)]
    j = torch.stack(rows, 1).detach()  # (B, 3, C)
    return torch.linalg.pinv(j) @ j  # J^T (J J^T)^-1 J where J has full rank


def colour_hold(photo: torch.Tensor, region: torch.Tensor, strength: float, until: float = 1.0,
                projection: torch.Tensor | None = None) -> Correction:  # fmt: skip
    """``correct(z, t, t_next)``: ``z`` less ``strength`` times :func:`colour_offset`, weighted by ``region``, after
    each step with flow time t <= ``until``; with ``projection`` (:func:`colour_projection`) only the offset's part
    in its span."""

    def correct(z: torch.Tensor, t: float, t_next: float) -> torch.Tensor:
        if t > until + 1e-9:  # (1e-9: grid rounding)
            return z
        offset = colour_offset(z, photo, region)
        if projection is not None:
            offset = (projection @ offset.flatten(1)[..., None]).reshape(offset.shape)
        return z - strength * offset * region

    return correct


class ColourHold(Guidance):
    """``--colour-hold``, ``--colour-hold-until`` and ``--colour-hold-basis`` (FlowEdit; 0 is off)."""

    name = "colour_hold"

    def correction(self, ctx: GuidanceContext) -> Correction | None:
        s = ctx.settings.colour_hold
        if s <= 0 or ctx.source_expression is None or ctx.photo is None:
            return None
        projection = None
        if ctx.settings.colour_hold_basis == "colour":
            taef2 = ctx.nets["taef2"]
            projection = colour_projection(lambda z: taef2.decode(ctx.model.denormalize(z), clamp=False), ctx.photo,
                                           ctx.region)
        return colour_hold(ctx.photo, ctx.region, s, ctx.settings.colour_hold_until, projection)
