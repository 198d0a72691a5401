"""The one interface every kind of guidance implements, and what it may read about a request.

A generation builds its prediction in three layers, and a guidance kind may change any of them
(:class:`Guidance`, each hook returns its input unchanged by default):

1. ``velocity``: the model's velocity with every row of ``x`` conditioned on the request's identity and on
   its own expression row, ``v(x, t, expression, null=None)``; classifier-free guidance combines several
   such predictions (:mod:`mien.guidance.classifier_free`).
2. ``pair``: FlowEdit's pair velocity ``pair(x, t)`` over the source rows (the photo's own expression) and
   the target rows (the request), :mod:`mien.sampling.flowedit`; contrast guidance replaces it
   (:mod:`mien.guidance.contrast`). In a swap (``mien generate --into``) the source rows are also another
   person: their identity stream (vector and spatial reference) is the scene face's, passed per row as
   ``v(x, t, expression, streams=ctx.rows("source", "target"))``.
3. ``correction``: a ``correct(z, t, t_next) -> z`` step applied to FlowEdit's clean state after each
   step; critic guidance by a differentiable net (:mod:`mien.guidance.recogniser`,
   :mod:`mien.guidance.blendshape`), or a hold on the skin's colour (:mod:`mien.guidance.colour_hold`).

sdedit uses layer 1 only (the settings refuse FlowEdit-only guidance with it). Hooks are built once per
request from a :class:`GuidanceContext` and hold no state between requests, so one pipeline serves
concurrent requests. A kind whose setting is off returns its input (or no correction): its nets are
then not run.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

# v(x, t, expression, null=None[, streams=None]) -> velocity: x (R, C, H, W), t (R,) flow times, expression
# (R, 55), null {stream: (R,) bool} rows predicted without that stream (classifier-free guidance's branches),
# streams {name: (R, ...)} per-row values of other condition streams (a swap's two identities; only passed
# when there are any, so a velocity without the keyword serves every plain edit)
ExpressionVelocity = Callable[..., torch.Tensor]
PairVelocity = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # mien.sampling.flowedit.PairVelocity
Correction = Callable[[torch.Tensor, float, float], torch.Tensor]  # mien.sampling.flowedit.Correction


@dataclass(frozen=True)
class GuidanceContext:
    """One request as guidance sees it (built by :class:`mien.pipeline.MienPipeline` per call)."""

    settings: Any  # mien.settings.GenerationSettings, resolved (every value concrete)
    model: Any  # the denoising backbone: velocity(), normalize(), denormalize()
    nets: Mapping[str, Any]  # nets loaded with the pipeline: "taef2", "identity", "blendshapes"
    identity: Any  # mien.pipeline.IdentityInput; a list of them when one batch edits several people (person_rows)
    target_blendshapes: np.ndarray  # (52,) the request's blendshape target
    target_expression: torch.Tensor  # (n, 55) the target rows' expression condition
    source_expression: torch.Tensor | None  # (n, 55) the photo's own expression (FlowEdit's source); None for sdedit
    region: torch.Tensor  # (1, 1, h, w) latent cells the edit may redraw (mien.regions.edit_region)
    device: torch.device
    # The condition streams that differ between FlowEdit's source and target rows: in a swap the identity streams
    # ({"identity": (n, 128), "reference": (n, C, H, W)}) of the scene's face and of the person put in; with a
    # person's LoRA on the target rows only (--person-rows target) its per-row scale (mien.lora_rows.
    # ROW_SCALE_STREAM, (n,)). None when every stream is the same in both.
    source_streams: Mapping[str, torch.Tensor] | None = None
    target_streams: Mapping[str, torch.Tensor] | None = None
    photo: torch.Tensor | None = None  # (n, C, H, W) the normalised latent the edit starts from (the scene's photo)

    def rows(self, *blocks: str) -> dict[str, torch.Tensor] | None:
        """The per-row streams of a batch made of blocks of n rows, each ``"source"`` or ``"target"`` (FlowEdit's
        pair: ``rows("source", "target")``); None when source and target rows take the same streams, so every
        row takes the request's own."""
        if self.source_streams is None:
            return None
        parts = {"source": self.source_streams, "target": self.target_streams}
        return {name: torch.cat([parts[b][name] for b in blocks]) for name in self.source_streams}

    def person_rows(self, name: str) -> torch.Tensor | None:
        """The person's ``name`` ("vector", "embedding") as a guide's target, (1, d); when the batch edits several
        people (``identity`` a list), (R, d): each row its own person's (their rows come one person after another,
        as many each). None when a person lacks it."""
        people = self.identity if isinstance(self.identity, list) else [self.identity]
        values = [getattr(p, name) for p in people]
        if any(v is None for v in values):
            return None
        rows = torch.stack(values).to(self.device)
        return rows if len(people) == 1 else rows.repeat_interleave(len(self.target_expression) // len(people), 0)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Normalised latents -> RGB in [0, 1], differentiably (what a critic of the clean state judges)."""
        return self.nets["taef2"].decode(self.model.denormalize(z), clamp=False).clamp(0, 1)


class Guidance:
    """One kind of guidance (module docstring). Subclasses set ``name`` and override the hooks they need."""

    name: ClassVar[str] = ""

    def velocity(self, ctx: GuidanceContext, velocity: ExpressionVelocity) -> ExpressionVelocity:
        return velocity

    def pair(self, ctx: GuidanceContext, velocity: ExpressionVelocity, pair: PairVelocity) -> PairVelocity:
        return pair

    def correction(self, ctx: GuidanceContext) -> Correction | None:
        return None


def chain(*hooks: Correction | None) -> Correction | None:
    """One ``correct`` hook that applies ``hooks`` in order (None entries skipped); None when there are none."""
    hooks = tuple(h for h in hooks if h is not None)
    if not hooks:
        return None
    if len(hooks) == 1:
        return hooks[0]

    def correct(z: torch.Tensor, t: float, t_next: float) -> torch.Tensor:
        for hook in hooks:
            z = hook(z, t, t_next)
        return z

    return correct
