"""Noise schedules: pure functions returning a descending sigma tensor of length n + 1 ending in 0.

Sigma is the EDM / k-diffusion noise level: x = x0 + sigma * noise (Karras et al. 2022, "Elucidating
the Design Space of Diffusion-Based Generative Models", hereafter EDM). Every sampler in
:mod:`mien.sampling.samplers` takes such a tensor; the trailing 0 makes the last step land on the
denoised sample.
"""

from __future__ import annotations

import torch

# EDM Table 1: sigma_min = 0.002, sigma_max = 80, rho = 7 (data scaled to unit-ish std).
EDM_SIGMA_MIN = 0.002
EDM_SIGMA_MAX = 80.0
EDM_RHO = 7.0

# Rectified flow starts at t = 1 (pure noise), i.e. sigma = t / (1 - t) = infinity. We start at
# t_max = 1000 / 1001 instead; the data share left in the start sample is 1 - t_max < 0.1 %.
FLOW_SIGMA_MAX = 1000.0


def _append_zero(sigmas: torch.Tensor) -> torch.Tensor:
    return torch.cat([sigmas, sigmas.new_zeros(1)])


def karras_sigmas(n: int, sigma_min: float, sigma_max: float, rho: float = EDM_RHO) -> torch.Tensor:
    """EDM Eq. 5: sigma_i = (sigma_max^(1/rho) + i/(n-1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho.

    ``n`` steps: n sigmas from sigma_max down to sigma_min, then 0 (as k-diffusion's
    ``get_sigmas_karras``). rho = 7 spends more steps at low noise, where EDM found errors matter most.
    """
    if n < 1:
        raise ValueError(f"need at least one step, got n={n}")
    if not 0 < sigma_min <= sigma_max:
        raise ValueError(f"need 0 < sigma_min <= sigma_max, got {sigma_min}, {sigma_max}")
    ramp = torch.linspace(0, 1, n, dtype=torch.float64)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return _append_zero((hi + ramp * (lo - hi)) ** rho).float()


def edm_sigmas(n: int) -> torch.Tensor:
    """:func:`karras_sigmas` with the EDM defaults (0.002, 80, rho 7)."""
    return karras_sigmas(n, EDM_SIGMA_MIN, EDM_SIGMA_MAX, EDM_RHO)


def flow_times(n: int, start: float = 1.0) -> torch.Tensor:
    """``n`` uniform steps of flow time from ``start`` (0 < start <= 1) down to 0: n + 1 values, float64.

    The one time grid of mien's flow schedules: :func:`flow_sigmas` maps it to sigma, and FlowEdit
    (:mod:`mien.sampling.flowedit`) steps along it directly. Uniform, because SD3's time shift of FlowEdit's
    grid (fewer steps spaced late) lost expression on the tuning people (docs/performance.md); the shift
    lives in :func:`flow_sigmas` alone.
    """
    if n < 1:
        raise ValueError(f"need at least one step, got n={n}")
    if not 0.0 < start <= 1.0:
        raise ValueError(f"flow schedule: start must be in (0, 1], got {start}")
    return torch.linspace(start, 0, n + 1, dtype=torch.float64)


def flow_sigmas(n: int, shift: float = 1.0, sigma_max: float = FLOW_SIGMA_MAX, start: float = 1.0) -> torch.Tensor:
    """Flow-matching schedule: uniform in flow time t from ``start`` to 0, as sigma = shift * t / (1 - t).

    Rectified flow interpolates x_t = (1 - t) x0 + t noise, which is the EDM variable x / (1 + sigma)
    with sigma = t / (1 - t) (see :mod:`mien.sampling.flow`). The time shift of SD3 (Esser et al.
    2024, Sec. 5.3.2; diffusers ``FlowMatchEulerDiscreteScheduler(shift=...)``),
    t' = shift t / (1 + (shift - 1) t), is exactly sigma' = shift * sigma in this variable, so
    ``shift > 1`` spends more steps at high noise.

    t = 1 would be sigma = infinity: the first sigma is replaced by the finite ``sigma_max``
    (t_max = sigma_max / (1 + sigma_max)), which must exceed the next sigma. ``start`` < 1 is a
    partial start (SDEdit, Meng et al. 2022; mien.editing): all ``n`` steps over [start, 0], the
    first sigma finite (diffusers' img2img instead skips the first steps of the full schedule).
    """
    t = flow_times(n, start)
    if start < 1:
        return (shift * t / (1 - t)).float()
    t = t[1:]
    sigmas = shift * t / (1 - t)
    if n > 1 and sigmas[0] >= sigma_max:
        raise ValueError(
            f"flow_sigmas: second sigma {float(sigmas[0]):.4g} >= sigma_max {sigma_max}; "
            "raise sigma_max or use fewer steps / a smaller shift"
        )
    return torch.cat([sigmas.new_tensor([sigma_max]), sigmas]).float()
