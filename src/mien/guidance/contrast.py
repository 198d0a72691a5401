"""Contrast guidance: FlowEdit's target pushed away from the photo's own expression.

Why: the model under-draws some requested expressions (sad, angry, fearful, disgusted: face-api reads
them well below their real-photo rates with FlowEdit alone; docs/history/model-card-defaults.md). With
weight w != 1 the target rows' velocity becomes

    v_tar + (w - 1) [v(z_tar | target) - v(z_tar | negative)]

with the negative of :func:`contrast_negative`: classifier-free guidance's extrapolation (Ho & Salimans
2022), taken between the two expressions instead of against the null token, so only what the requested
expression changes is pushed. One more UNet row per image and step. The per-label default is
:data:`mien.settings.LABEL_POLICY`'s ``guidance_contrast``.
"""

from __future__ import annotations

import torch

from mien.face.blendshape_names import BLENDSHAPE_NAMES
from mien.guidance.base import ExpressionVelocity, Guidance, GuidanceContext, PairVelocity

# Blendshapes whose rise contrast guidance leaves unamplified: smile and eye closure. Tried against
# sunglasses drawn on happy requests (they stayed); kept because the measured runs include it.
_NO_AMPLIFIED_RISE = [i for i, n in enumerate(BLENDSHAPE_NAMES)
                      if n.startswith(("mouthSmile", "cheekSquint", "eyeBlink", "eyeSquint"))]  # fmt: skip


def contrast_negative(source_expression: torch.Tensor, target_expression: torch.Tensor) -> torch.Tensor:
    """The expression contrast guidance pushes away from: the photo's own, except that on the smile and
    eye-closure blendshapes it takes max(own, target), so a rise there is not amplified (a fall is)."""
    neg = source_expression.clone()
    i = _NO_AMPLIFIED_RISE
    neg[:, i] = torch.maximum(source_expression[:, i], target_expression[:, i])
    return neg


def contrast_pair(velocity: ExpressionVelocity, source: torch.Tensor, target: torch.Tensor,
                  weight: float, streams: dict | None = None) -> PairVelocity:  # fmt: skip
    """FlowEdit's pair velocity with the target rows pushed by ``weight`` (module docstring); the source,
    target and negative rows share one forward pass. ``streams``: per-row identity streams of those three
    blocks in a swap (:meth:`GuidanceContext.rows`; the negative row is the target person with the
    scene's expression, so only the expression is contrasted)."""
    negative = contrast_negative(source, target)
    expressions = torch.cat([source, target, negative])
    extra = {} if streams is None else {"streams": streams}

    def pair(x: torch.Tensor, t) -> torch.Tensor:
        z_src, z_tar = x.chunk(2)
        t3 = torch.as_tensor(t).reshape(-1)[:1].expand(3 * z_src.shape[0])
        v_src, v_tar, v_neg = velocity(torch.cat([z_src, z_tar, z_tar]), t3, expressions, **extra).chunk(3)
        return torch.cat([v_src, v_tar + (weight - 1.0) * (v_tar - v_neg)])

    return pair


class ContrastGuidance(Guidance):
    """``--guidance-contrast`` (FlowEdit; 1 is off)."""

    name = "contrast"

    def pair(self, ctx: GuidanceContext, velocity: ExpressionVelocity, pair: PairVelocity) -> PairVelocity:
        w = ctx.settings.guidance_contrast
        if w == 1.0 or ctx.source_expression is None:
            return pair
        return contrast_pair(velocity, ctx.source_expression, ctx.target_expression, w,
                             ctx.rows("source", "target", "target"))  # fmt: skip
