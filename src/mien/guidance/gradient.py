"""The critic step that recogniser, descriptor and blendshape guidance share: after each late FlowEdit step, the
clean state moves a little up the gradient of a differentiable score of the decoded face.

FlowEdit's state is a clean latent at every step (:mod:`mien.sampling.flowedit`), so a critic can judge
its decoded image as it stands. This is the forward step of universal guidance (Bansal et al.,
"Universal Guidance for Diffusion Models", ICLR 2024), on the clean state instead of a denoised
estimate. The step is the gradient, zeroed outside the face box (the kept background stays the photo's)
and normalised to RMS 1 per image over the whole latent, times ``scale * (t - t_next)``, so the total
move does not depend on the number of steps.

``precision`` "bfloat16" makes the step cheaper: it runs the decode, the critic and their backward pass under
bfloat16 autocast; the gradient is normalised, so only its direction counts, and a guided step takes 0.6 of
float32's time on a CPU with bfloat16 instructions, with the same identity and expression figures on the tuning
people (docs/performance.md; the default where the device has them, :func:`mien.threads.native_bfloat16`).
Guiding on every other step of the window only (each move twice as long) was measured too and kept less of
the person and of fearful's expression (docs/performance.md), so the critic steps at every step of the window.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from mien.settings import CRITIC_PRECISIONS


class GradientGuide:
    """A ``correct(z, t, t_next)`` hook of :func:`mien.sampling.flowedit.sample_flowedit` that steps up a
    differentiable score of the latents, late in the edit.

    ``score`` maps (B, C, H, W) latents to (B,) scores; ``region`` (1, 1, H, W) weights the latent cells
    allowed to move (1 in the face box, 0 where the photo is kept). After each step with flow time
    t <= ``until`` the state moves by ``scale * (t - t_next)`` along the score's gradient, normalised to
    RMS 1 per image over the whole latent (so the total move does not depend on the number of steps).

    ``precision``: the number format of the score and its gradient (:data:`mien.settings.CRITIC_PRECISIONS`;
    "bfloat16" autocasts, and an image whose bfloat16 gradient is not finite takes that step in float32; a
    gradient still not finite moves nothing).

    ``late_score``, when given, scores the steps with flow time t <= ``late_until`` instead of ``score`` (a hybrid
    critic, :func:`critic_plan`: a latent reader early, the decoded face late); :meth:`score_at` picks the step's.
    """

    def __init__(self, score: Callable[[torch.Tensor], torch.Tensor], region: torch.Tensor, scale: float,
                 until: float, precision: str = "float32",
                 late_score: Callable[[torch.Tensor], torch.Tensor] | None = None, late_until: float = -1.0):  # fmt: skip
        if precision not in CRITIC_PRECISIONS:
            raise ValueError(f"precision {precision!r}: choose one of {', '.join(CRITIC_PRECISIONS)}")
        self.score, self.region = score, region
        self.late_score, self.late_until = late_score, float(late_until)
        self.scale, self.until = float(scale), float(until)
        self.precision = precision

    def __call__(self, z: torch.Tensor, t: float, t_next: float) -> torch.Tensor:
        if self.scale <= 0 or t > self.until + 1e-9:  # off, or outside the window (1e-9: grid rounding)
            return z
        score = self.score_at(t)
        grad = self.gradient(z, self.precision, score)
        bad = ~torch.isfinite(grad).flatten(1).all(1)
        if bad.any() and self.precision != "float32":
            # bfloat16's rounding can leave the critic's gradient not finite (a swap on the CPU came out black,
            # docs/swap.md): those images take this step's gradient in float32 instead (the whole batch is
            # scored again: a score may hold per-image targets)
            grad[bad] = self.gradient(z, "float32", score)[bad]
            bad = ~torch.isfinite(grad).flatten(1).all(1)
        grad[bad] = 0  # still not finite: no move for that image rather than a NaN state
        grad = grad * self.region
        rms = grad.pow(2).mean((1, 2, 3), keepdim=True).sqrt()  # over the whole latent, zeros outside included
        return z + self.scale * (t - t_next) * grad / (rms + 1e-12)

    def score_at(self, t: float) -> Callable[[torch.Tensor], torch.Tensor]:
        """The score of the step at flow time ``t``: ``late_score`` from ``late_until`` on, else ``score``. The guide
        itself never changes between steps, so one guide may serve several edits at once."""
        late = self.late_score is not None and t <= self.late_until + 1e-9  # 1e-9: grid rounding, as ``until``
        return self.late_score if late else self.score

    def gradient(self, z: torch.Tensor, precision: str,
                 score: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:  # fmt: skip
        """The gradient at ``z`` (float32) of ``score`` (``self.score`` when None), its forward and backward in
        ``precision``."""
        score = self.score if score is None else score
        # callers may run under inference_mode (its tensors cannot enter autograd): step out and clone
        with torch.inference_mode(False), torch.enable_grad(), torch.autocast(
                z.device.type, dtype=torch.bfloat16, enabled=precision == "bfloat16"):  # fmt: skip
            zz = z.detach().clone().requires_grad_(True)
            (grad,) = torch.autograd.grad(score(zz).float().sum(), zz)
        return grad.float()


def decoded(model, taef2, read: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[torch.Tensor], torch.Tensor]:
    """z (the built-in model's normalised latents) -> ``read`` of the decoded faces (B, 3, H, W RGB in 0..1),
    differentiable: ``model.denormalize``, TAEF2 decoding without its clamp (its gradient would vanish at the
    bounds), then the clamp. What every critic of this module scores."""

    def scored(z: torch.Tensor) -> torch.Tensor:
        return read(taef2.decode(model.denormalize(z), clamp=False).clamp(0, 1))

    return scored


def in_float32(net: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[torch.Tensor], torch.Tensor]:
    """z -> ``net(z)`` always in float32, whatever autocast is around it: how a latent reader
    (:class:`mien.models.latent_reader.LatentReader`) scores, since the small net gains nothing from bfloat16 and its
    gradient is all the guidance reads."""

    def scored(z: torch.Tensor) -> torch.Tensor:
        with torch.autocast(z.device.type, enabled=False):
            return net(z.float())

    return scored


def guided_times(steps: int, strength: float, until: float) -> list[float]:
    """The flow times t of the FlowEdit steps a critic guidance takes (t <= ``until``), in the order they run:
    FlowEdit's grid (:func:`mien.sampling.flow_times`, as :func:`mien.editing` steps along it)."""
    from mien.sampling import flow_times

    return [float(t) for t in flow_times(steps, strength)[:-1] if float(t) <= until + 1e-9]


def critic_plan(critic: str, steps: int, strength: float, until: float, decoded_steps: int) -> tuple[bool, bool, float]:
    """What reads a guidance's steps for ``critic`` (mien.settings' RECOGNISER_CRITICS and BLENDSHAPE_CRITICS):
    (the latent reader on the early steps, the decoded face on the late ones, the flow time from which the decoded
    face reads; -1: never). "decoded": the decoded face throughout; "latent": the reader throughout; "hybrid": the
    reader, then the decoded face on the last ``decoded_steps`` guided steps — all of them decoded when that is every
    step (the reader is then never read, nor needs its file)."""
    if critic == "latent":
        return True, False, -1.0
    if critic == "hybrid":
        guided = guided_times(steps, strength, until)
        n = min(decoded_steps, len(guided))
        if n < len(guided):
            return True, n > 0, guided[-n] if n else -1.0
    return False, False, -1.0
