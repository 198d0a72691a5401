"""ODE samplers for the probability-flow ODE dx/dsigma = (x - D(x, sigma)) / sigma (EDM Sec. 2 with sigma(t) = t).

Every sampler is a pure function with one signature, after k-diffusion's ``sample_euler``:

    sample_X(denoise, x, sigmas, extra_args=None, callback=None, generator=None) -> x

- ``denoise(x, sigma, **extra_args) -> x0_hat``: the one model contract (k-diffusion ``Denoiser``,
  EDM's D). ``sigma`` arrives as a (B,) tensor. Flow-matching models go through
  :func:`mien.sampling.flow.flow_to_denoiser`.
- ``x``: the start sample, ``sigmas[0] * noise`` (plus the data mean if it is not zero).
- ``sigmas``: a descending schedule ending in 0 (:mod:`mien.sampling.schedules`).
- ``callback``: called once per step with {'x', 'i', 'sigma', 'sigma_hat', 'denoised'} (k-diffusion's keys).
- ``generator``: for stochastic samplers; all samplers here are deterministic and ignore it, so the
  same noise always gives the same image.

No hidden state, no backbone imports. The functions keep autograd on (wrap calls in
``torch.no_grad()`` for inference), so guidance through the sampler stays possible.
"""

from __future__ import annotations

from typing import Callable

import torch

Denoiser = Callable[..., torch.Tensor]
Callback = Callable[[dict], None] | None


def _denoise(denoise: Denoiser, x: torch.Tensor, sigma: torch.Tensor, extra_args: dict | None) -> torch.Tensor:
    return denoise(x, sigma * x.new_ones(x.shape[0]), **(extra_args or {}))


def _report(callback: Callback, x, i, sigma, denoised) -> None:
    if callback is not None:
        callback({"x": x, "i": i, "sigma": sigma, "sigma_hat": sigma, "denoised": denoised})


def _to_d(x: torch.Tensor, sigma: torch.Tensor, denoised: torch.Tensor) -> torch.Tensor:
    """ODE derivative dx/dsigma = (x - D(x, sigma)) / sigma (EDM Sec. 2, s(t) = 1, sigma(t) = t)."""
    return (x - denoised) / sigma


def sample_euler(denoise: Denoiser, x, sigmas, extra_args=None, callback=None, generator=None):
    """Euler steps in sigma: EDM Algorithm 2 with S_churn = 0 (k-diffusion ``sample_euler``). 1 NFE/step."""
    for i in range(len(sigmas) - 1):
        denoised = _denoise(denoise, x, sigmas[i], extra_args)
        _report(callback, x, i, sigmas[i], denoised)
        x = x + _to_d(x, sigmas[i], denoised) * (sigmas[i + 1] - sigmas[i])
    return x


def sample_heun(denoise: Denoiser, x, sigmas, extra_args=None, callback=None, generator=None):
    """Heun's 2nd-order method: EDM Algorithm 1 (deterministic). 2 NFE/step, 1 on the last step.

    The trapezoidal correction needs d at sigma_{i+1}, undefined at sigma = 0, so the last step is
    Euler (Alg. 1 applies the correction only if t_{i+1} != 0).
    """
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = _denoise(denoise, x, sigma, extra_args)
        _report(callback, x, i, sigma, denoised)
        d = _to_d(x, sigma, denoised)
        x_next = x + d * (sigma_next - sigma)
        if sigma_next > 0:
            d_next = _to_d(x_next, sigma_next, _denoise(denoise, x_next, sigma_next, extra_args))
            x_next = x + (d + d_next) / 2 * (sigma_next - sigma)
        x = x_next
    return x


# Midpoint placement: the rho = 3 mean of sigma_i and sigma_{i+1}, as k-diffusion's sample_dpm_2.
# It lies between the arithmetic (rho = 1) and geometric (log-sigma, rho -> inf) means and, unlike
# the geometric mean, stays defined on the last step to sigma = 0, so no Euler fallback is needed.
_MIDPOINT_RHO = 3.0


def sample_midpoint(denoise: Denoiser, x, sigmas, extra_args=None, callback=None, generator=None):
    """Explicit midpoint method: the alpha = 1/2 member of the 2nd-order Runge-Kutta family that EDM
    evaluates in its appendix (alpha = 1 is Heun, Algorithm 1). 2 NFE/step.

    A half step with Euler to sigma_mid, then the full step with the derivative there. k-diffusion's
    ``sample_dpm_2`` ("inspired by DPM-Solver-2", Lu et al. 2022) is this method with the same
    midpoint. DiffSFSR (CVPR 2024) reports an improved midpoint sampler; its details are not public
    here, so this is the plain method, the baseline it improves on.
    """
    r = 1 / _MIDPOINT_RHO
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = _denoise(denoise, x, sigma, extra_args)
        _report(callback, x, i, sigma, denoised)
        sigma_mid = ((sigma**r + sigma_next**r) / 2) ** _MIDPOINT_RHO
        x_mid = x + _to_d(x, sigma, denoised) * (sigma_mid - sigma)
        d_mid = _to_d(x_mid, sigma_mid, _denoise(denoise, x_mid, sigma_mid, extra_args))
        x = x + d_mid * (sigma_next - sigma)
    return x


def sample_dpmpp_2m(denoise: Denoiser, x, sigmas, extra_args=None, callback=None, generator=None):
    """DPM-Solver++(2M) (Lu et al. 2022, "DPM-Solver++", Alg. 2), as k-diffusion ``sample_dpmpp_2m``.

    Exponential integrator in lambda = -log sigma on the data prediction: with h = lambda_{i+1} -
    lambda_i, x_{i+1} = (sigma_{i+1}/sigma_i) x_i - expm1(-h) D_i. Multistep: D_i is replaced by the
    linear extrapolation (1 + 1/(2r)) D_i - 1/(2r) D_{i-1}, r = h_{i-1}/h_i. The first step is
    first-order (DDIM); the last step to sigma = 0 returns the (extrapolation-free) denoised sample,
    as in k-diffusion. 1 NFE/step. The previous denoised output is a loop variable, not hidden state.
    """
    old_denoised, h_last = None, None
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = _denoise(denoise, x, sigma, extra_args)
        _report(callback, x, i, sigma, denoised)
        if sigma_next == 0:
            x = denoised
            continue
        h = torch.log(sigma) - torch.log(sigma_next)
        d = denoised
        if old_denoised is not None:
            r = h_last / h
            d = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * old_denoised
        x = (sigma_next / sigma) * x - torch.expm1(-h) * d
        old_denoised, h_last = denoised, h
    return x


SAMPLERS: dict[str, Callable[..., torch.Tensor]] = {
    "euler": sample_euler,
    "heun": sample_heun,
    "midpoint": sample_midpoint,
    "dpmpp_2m": sample_dpmpp_2m,
}
