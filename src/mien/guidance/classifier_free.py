"""Classifier-free guidance with one scale per condition stream.

With the streams taken in a fixed order (identity, then expression) and c_j the prediction with the
first j streams conditioned and the rest at their null tokens (c_0 = unconditional u):

    out = u + g_1 (c_1 - u) + g_2 (c_2 - c_1) + ...
        = u + g_id (c_id - u) + g_expr (c_full - c_id)

This is InstructPix2Pix's two-scale guidance (Brooks et al. 2023, eq. 3: image scale s_I on
c_I - u, text scale s_T on c_full - c_I), with identity in the role of the input image. Expanded,
out = sum_j a_j c_j with a_j = g_j - g_{j+1} (g_0 = 1, g_{k+1} = 0); branches whose weight is 0 are
not evaluated, so g_id = g_expr = 1 costs one forward (the plain conditional prediction),
g_expr = 0 two (identity-only CFG), and g_id = g_expr two (ordinary CFG on both streams). The
needed branches run as one batch.

Guidance mixes velocities; the samplers see a denoiser through ``mien.sampling.flow``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from mien.guidance.base import ExpressionVelocity, Guidance, GuidanceContext
from mien.lora_rows import ROW_SCALE_STREAM, row_scale


def branch_weights(scales: Sequence[float]) -> list[float]:
    """a_j for c_0 .. c_k from the per-stream scales g_1 .. g_k (module docstring)."""
    g = [1.0, *map(float, scales), 0.0]
    return [g[j] - g[j + 1] for j in range(len(scales) + 1)]


def guided(velocity: ExpressionVelocity, order: Sequence[str] = ("identity", "expression"),
           scales: Sequence[float] = (1.0, 1.0), interval: tuple[float, float] | None = None) -> ExpressionVelocity:
    """Per-stream guidance of an expression-conditioned velocity ``velocity(x, t, expression, null)``
    (:mod:`mien.guidance.base`): the needed branches run as one batch.

    ``order`` names the guided streams in nesting order, ``scales`` their guidance scales. Streams not in
    ``order`` stay conditioned in every branch. ``interval`` = (lo, hi) guides only at flow times
    lo < t <= hi and predicts plainly conditioned (every scale 1, one branch) elsewhere: guidance in a
    limited interval (Kynkaenniemi et al., NeurIPS 2024), which finds guidance at low noise levels
    harmful to detail.
    """
    if len(order) != len(scales):
        raise ValueError(f"one guidance scale per stream: order {list(order)}, scales {list(scales)}")
    guided_branches = _branches(scales)
    plain = _branches([1.0] * len(scales))

    def guided_velocity(x: torch.Tensor, t, expression: torch.Tensor | None = None,
                        streams: dict | None = None) -> torch.Tensor:  # fmt: skip
        weights, branches = guided_branches
        if interval is not None:  # one time per call (a step); read only when needed: it syncs a GPU
            t0 = float(torch.as_tensor(t).reshape(-1)[0])
            weights, branches = guided_branches if interval[0] < t0 <= interval[1] else plain
        batch = x.shape[0]
        null = {name: _null_mask(branches, k, batch, x.device) for k, name in enumerate(order)}
        t = torch.as_tensor(t, device=x.device, dtype=torch.float32).reshape(-1).expand(batch)
        extra = {} if streams is None else {"streams": {k: _repeat(v, len(branches)) for k, v in streams.items()}}
        out = velocity(x.repeat(len(branches), 1, 1, 1), t.repeat(len(branches)), _repeat(expression, len(branches)),
                       null=null, **extra)  # fmt: skip
        parts = out.chunk(len(branches))
        result = parts[0] * weights[branches[0]] if weights[branches[0]] != 1 else parts[0]
        for j, part in zip(branches[1:], parts[1:]):
            result = result + weights[j] * part
        return result

    return guided_velocity


def conditioned(model, cond: dict, stream_scales: dict | None = None) -> ExpressionVelocity:
    """``model.velocity`` as an expression-conditioned velocity: every row of ``x`` gets ``cond``'s other
    streams (its B rows repeated to x's rows) and its own ``expression`` row (``cond``'s when None);
    ``streams`` {name: rows} replaces other streams per row the same way (a swap's two identities).
    ``stream_scales`` is passed through (attention scale per stream; 0 removes one). The stream
    :data:`mien.lora_rows.ROW_SCALE_STREAM` (R,) is no model condition: each row's person-LoRA scale,
    applied through :func:`mien.lora_rows.row_scale`."""
    others = {name: c for name, c in cond.items() if name != "expression"}

    def velocity(x: torch.Tensor, t, expression: torch.Tensor | None = None, null: dict | None = None,
                 streams: dict | None = None) -> torch.Tensor:  # fmt: skip
        rows = x.shape[0]
        big = {name: _repeat(c, rows // c.shape[0]) if c is not None else None
               for name, c in {**others, **(streams or {})}.items()}  # fmt: skip
        expr = cond.get("expression") if expression is None else expression
        if expr is not None:
            big["expression"] = _repeat(expr, rows // expr.shape[0])
        lora_scale = big.pop(ROW_SCALE_STREAM, None)  # a person LoRA's scale per row: not a model condition
        if lora_scale is None:
            return model.velocity(x, t, big, scales=stream_scales, null=null)
        with row_scale(lora_scale):
            return model.velocity(x, t, big, scales=stream_scales, null=null)

    return velocity


def guided_velocity(model, cond: dict, order: Sequence[str] = ("identity", "expression"),
                    scales: Sequence[float] = (1.0, 1.0), stream_scales: dict | None = None,
                    interval: tuple[float, float] | None = None) -> Callable:  # fmt: skip
    """A velocity function ``v(x, t)`` that applies per-stream guidance (:func:`guided`) to ``model.velocity``
    for the B samples of ``cond``."""
    return guided(conditioned(model, cond, stream_scales), order, scales, interval)


class ClassifierFreeGuidance(Guidance):
    """``--guidance-identity``, ``--guidance-expression`` and ``--guidance-until`` (module docstring); at both
    scales 1 it is the plain conditional prediction, one branch."""

    name = "classifier_free"

    def velocity(self, ctx: GuidanceContext, velocity: ExpressionVelocity) -> ExpressionVelocity:
        s = ctx.settings
        interval = (s.guidance_until, 1.0) if s.guidance_until > 0 else None  # guidance only while t > guidance_until
        scale = {"identity": s.guidance_identity, "expression": s.guidance_expression}
        # identity first, as the module docstring; expression first (identity guided at the requested expression)
        # was tried for swaps and read the label no more often at less identity (docs/swap.md)
        order = ("identity", "expression")
        return guided(velocity, order, [scale[name] for name in order], interval=interval)


def _branches(scales: Sequence[float]) -> tuple[list[float], list[int]]:
    weights = branch_weights(scales)
    return weights, [j for j, a in enumerate(weights) if a != 0]


def guided_denoiser(model, cond: dict, **kwargs) -> Callable:
    """``guided_velocity`` as a k-diffusion-style denoiser ``denoise(x, sigma) -> x0`` for the samplers."""
    from mien.sampling.flow import flow_to_denoiser

    return flow_to_denoiser(guided_velocity(model, cond, **kwargs))


def _null_mask(branches: list[int], k: int, batch: int, device) -> torch.Tensor:
    """Stream k (0-based) is conditioned in branch c_j iff k < j; null elsewhere."""
    return torch.tensor([k >= j for j in branches], device=device).repeat_interleave(batch)


def _repeat(c: torch.Tensor | None, n: int):
    return None if c is None else c.repeat(n, *([1] * (c.ndim - 1)))
