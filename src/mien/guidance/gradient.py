"""The critic step that recogniser, descriptor and blendshape guidance share: after each late FlowEdit step, the
clean state moves a little up the gradient of a differentiable score of the decoded face.

FlowEdit's state is a clean latent at every step (:mod:`mien.sampling.flowedit`), so a critic can judge
its decoded image as it stands. This is the forward step of universal guidance (Bansal et al.,
"Universal Guidance for Diffusion Models", ICLR 2024), on the clean state instead of a denoised
estimate. The step is the gradient, zeroed outside the face box (the kept background stays the photo's)
and normalised to RMS 1 per image over the whole latent, times ``scale * (t - t_next)``, so the total
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


def decoded(model, taef2, read: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[torch.Tensor], torch.Tensor]:
    """z (the built-in model's normalised latents) -> ``read`` of the decoded faces (B, 3, H, W RGB in 0..1),
    differentiable: ``model.denormalize``, TAEF2 decoding without its clamp (its gradient would vanish at the
    bounds), then the clamp. What every critic of this module scores."""

    def scored(z: torch.Tensor) -> torch.Tensor:
        return read(taef2.decode(model.denormalize(z), clamp=False).clamp(0, 1))

    return scored
