"""Adapting a flow-matching (rectified flow) velocity model to mien's denoiser contract.

The contract (k-diffusion's ``Denoiser``, EDM's D(x; sigma)): ``denoise(x, sigma, **extra) -> x0_hat``
for x = x0 + sigma * noise. The built-in model is trained with rectified flow / flow matching
(Liu et al. 2022; Lipman et al. 2022; as in SD3, Esser et al. 2024):

    x_t = (1 - t) x0 + t noise,    t in [0, 1],    target velocity v = dx_t/dt = noise - x0.

Derivation of the mapping. Divide x_t by (1 - t):

    x_t / (1 - t) = x0 + t / (1 - t) * noise,

which is the EDM variable with sigma = t / (1 - t). Hence, for an EDM sample x at noise level sigma,

    t = sigma / (1 + sigma),    1 - t = 1 / (1 + sigma),    x_t = (1 - t) x = x / (1 + sigma).

From x_t = (1 - t) x0 + t noise and v = noise - x0:  x_t - t v = x0. So

    denoise(x, sigma) = x_t - t * v_theta(x_t, t)    with x_t = x / (1 + sigma), t = sigma / (1 + sigma).

Every sampler then integrates the same probability-flow ODE as a flow sampler would (on the
rescaled variable); Euler in sigma on x is step-for-step equal to Euler in t on x_t (both are DDIM),
which tests/test_samplers.py checks against diffusers' ``FlowMatchEulerDiscreteScheduler``.
A flow sampler's start x_1 = noise corresponds to x = sigma_max * noise with t_max = sigma_max/(1+sigma_max).
"""

from __future__ import annotations

from typing import Callable

import torch

VelocityFn = Callable[..., torch.Tensor]  # velocity_fn(x_t, t, **extra_args) -> v, t a (B,) tensor in [0, 1]


def flow_to_denoiser(velocity_fn: VelocityFn) -> Callable[..., torch.Tensor]:
    """Wrap ``velocity_fn(x_t, t, **extra_args)`` (v = noise - x0) as ``denoise(x, sigma, **extra_args)``.

    ``t`` reaches the velocity model as a (B,) tensor in [0, 1]; a model trained on t * 1000 scales it
    itself. ``sigma`` may be a scalar or a (B,) tensor.
    """

    def denoise(x: torch.Tensor, sigma, **extra_args) -> torch.Tensor:
        sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).expand(x.shape[0])
        t = sigma / (1 + sigma)
        t_b = t.reshape(-1, *([1] * (x.ndim - 1)))  # broadcast over C, H, W
        x_t = x * (1 - t_b)  # = x / (1 + sigma)
        return x_t - t_b * velocity_fn(x_t, t, **extra_args)

    return denoise
