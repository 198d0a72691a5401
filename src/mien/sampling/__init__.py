"""Samplers, noise schedules and the flow-matching adapter, all behind one denoiser contract.

``denoise(x, sigma, **extra_args) -> x0_hat`` with x = x0 + sigma * noise (k-diffusion / EDM).
FlowEdit (:mod:`mien.sampling.flowedit`) edits a clean sample with a pair of flow velocities instead;
it is the same kind of pure function.
"""

from mien.sampling.flow import flow_to_denoiser
from mien.sampling.flowedit import sample_flowedit
from mien.sampling.samplers import SAMPLERS, sample_dpmpp_2m, sample_euler, sample_heun, sample_midpoint
from mien.sampling.schedules import (
    EDM_RHO,
    EDM_SIGMA_MAX,
    EDM_SIGMA_MIN,
    FLOW_SIGMA_MAX,
    edm_sigmas,
    flow_sigmas,
    flow_times,
    karras_sigmas,
)

__all__ = [
    "SAMPLERS",
    "EDM_RHO",
    "EDM_SIGMA_MAX",
    "EDM_SIGMA_MIN",
    "FLOW_SIGMA_MAX",
    "edm_sigmas",
    "flow_sigmas",
    "flow_times",
    "flow_to_denoiser",
    "karras_sigmas",
    "sample_dpmpp_2m",
    "sample_euler",
    "sample_flowedit",
    "sample_heun",
    "sample_midpoint",
]
