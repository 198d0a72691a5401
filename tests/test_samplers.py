"""Samplers on an analytic Gaussian, where the exact denoiser and the exact ODE solution are known.

Data x0 ~ N(mu, s^2 I). Then x = x0 + sigma * noise ~ N(mu, (s^2 + sigma^2) I) and the exact
denoiser is the posterior mean D(x, sigma) = mu + s^2 / (s^2 + sigma^2) (x - mu). The
probability-flow ODE dx/dsigma = (x - D) / sigma = (x - mu) sigma / (s^2 + sigma^2) has the solution
x(sigma) - mu  proportional to  sqrt(s^2 + sigma^2), so from x_T at sigma_max:
x0 = mu + (x_T - mu) s / sqrt(s^2 + sigma_max^2).
Tolerances come from measured values (noted beside each) with margin.
"""

import pytest
import torch

from mien.sampling import SAMPLERS, edm_sigmas, flow_sigmas, flow_to_denoiser, karras_sigmas

DIM, N = 16, 2048
MU = torch.linspace(-1.0, 1.0, DIM)
S = 0.5
SECOND_ORDER = ["heun", "midpoint", "dpmpp_2m"]


def gaussian_denoiser(x, sigma):
    sigma = torch.as_tensor(sigma, dtype=x.dtype).reshape(-1, 1)
    return MU + S**2 / (S**2 + sigma**2) * (x - MU)


def gaussian_velocity(x_t, t):
    """Rectified-flow velocity for the same Gaussian, derived in flow coordinates on its own:
    x_t = (1-t) x0 + t eps, so E[x0 | x_t] = mu + (1-t) s^2 / ((1-t)^2 s^2 + t^2) (x_t - (1-t) mu)
    and v = E[eps - x0 | x_t] = (x_t - E[x0 | x_t]) / t."""
    t = t.reshape(-1, 1)
    x0 = MU + (1 - t) * S**2 / ((1 - t) ** 2 * S**2 + t**2) * (x_t - (1 - t) * MU)
    return (x_t - x0) / t


def noise(seed=0):
    return torch.randn(N, DIM, generator=torch.Generator().manual_seed(seed))


def start(sigmas, seed=0):
    return MU + sigmas[0] * noise(seed)


def exact(x_T, sigma_max):
    return MU + (x_T - MU) * S / (S**2 + sigma_max**2) ** 0.5


def max_error(name, n, schedule=edm_sigmas):
    sigmas = schedule(n)
    x_T = start(sigmas)
    return (SAMPLERS[name](gaussian_denoiser, x_T, sigmas) - exact(x_T, sigmas[0])).abs().max().item()


def test_schedules_shape_and_ends():
    for sig in (karras_sigmas(7, 0.01, 20.0), edm_sigmas(7), flow_sigmas(7), flow_sigmas(7, shift=3.0)):
        assert sig.shape == (8,) and sig[-1] == 0 and bool((sig[:-1] > sig[1:]).all())
    assert karras_sigmas(7, 0.01, 20.0)[[0, -2]].tolist() == pytest.approx([20.0, 0.01])
    # flow: uniform in t = sigma / (1 + sigma) after the finite start; shift scales sigma
    sig = flow_sigmas(4)
    assert sig[0] == 1000.0
    assert (sig[1:] / (1 + sig[1:])).tolist() == pytest.approx([0.75, 0.5, 0.25, 0.0])
    assert flow_sigmas(4, shift=3.0)[1:].tolist() == pytest.approx((3 * sig[1:]).tolist())
    with pytest.raises(ValueError):
        flow_sigmas(4, sigma_max=2.0)


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_recovers_gaussian(name):
    out = SAMPLERS[name](gaussian_denoiser, start(edm_sigmas(40)), edm_sigmas(40))
    # measured at 40 steps, worst of 16 dimensions: |mean - mu| <= 0.03 (sampling noise of 2048
    # draws: s / sqrt(2048) = 0.011 per dimension), |std - s| <= 0.048 (euler), 0.013 (2nd order)
    assert (out.mean(0) - MU).abs().max() < 0.06
    assert (out.std(0) - S).abs().max() < 0.08


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_deterministic(name):
    sigmas = edm_sigmas(8)
    a = SAMPLERS[name](gaussian_denoiser, start(sigmas), sigmas)
    b = SAMPLERS[name](gaussian_denoiser, start(sigmas), sigmas, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b)


@pytest.mark.parametrize("name", SECOND_ORDER)
def test_second_order_beats_euler_and_converges_faster(name):
    # max |x - exact| at 20 / 40 steps (EDM schedule), measured: euler 0.30 / 0.15,
    # heun 0.095 / 0.021, midpoint 0.033 / 0.0079, dpmpp_2m 0.11 / 0.023
    assert max_error(name, 20) < 0.5 * max_error("euler", 20)
    assert max_error(name, 20) / max_error(name, 40) > 3.0  # ~4 for a 2nd-order method
    assert 1.6 < max_error("euler", 20) / max_error("euler", 40) < 2.5  # ~2: first order


def test_callback_sees_every_step():
    seen = []
    SAMPLERS["heun"](gaussian_denoiser, start(edm_sigmas(5)), edm_sigmas(5), callback=lambda d: seen.append(d["i"]))
    assert seen == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_flow_adapter_matches_denoiser(name):
    # float64: starting at sigma = 1000 leaves float32 rounding of ~1e-4 in either path
    sigmas = flow_sigmas(12, shift=2.0).double()
    x_T = start(sigmas).double()
    via_flow = SAMPLERS[name](flow_to_denoiser(gaussian_velocity), x_T, sigmas)
    direct = SAMPLERS[name](gaussian_denoiser, x_T, sigmas)
    assert (via_flow - direct).abs().max() < 1e-9


# diffusers' own numpy-2 DeprecationWarning (np.array copy keyword), not ours
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_euler_matches_diffusers_euler_discrete():
    diffusers = pytest.importorskip("diffusers")
    sigmas = karras_sigmas(10, 0.01, 20.0)
    x = start(sigmas)
    ours = SAMPLERS["euler"](gaussian_denoiser, x, sigmas)
    sched = diffusers.EulerDiscreteScheduler(prediction_type="sample")
    sched.set_timesteps(sigmas=sigmas.tolist())
    for i, t in enumerate(sched.timesteps):
        x = sched.step(gaussian_denoiser(x, sched.sigmas[i]), t, x).prev_sample
    assert (ours - x).abs().max() < 1e-5  # measured 0.0: the same float32 arithmetic


def test_flow_euler_matches_diffusers_flow_match():
    """Euler in sigma through flow_to_denoiser == diffusers' Euler in flow time t (both are DDIM)."""
    diffusers = pytest.importorskip("diffusers")
    sigmas = flow_sigmas(10, sigma_max=50.0)
    ts = sigmas / (1 + sigmas)
    x_flow = noise()
    ours = SAMPLERS["euler"](flow_to_denoiser(gaussian_velocity), x_flow * (1 + sigmas[0]), sigmas)
    sched = diffusers.FlowMatchEulerDiscreteScheduler()
    sched.set_timesteps(sigmas=ts[:-1].tolist())
    for i, t in enumerate(sched.timesteps):
        v = gaussian_velocity(x_flow, sched.sigmas[i] * torch.ones(N))
        x_flow = sched.step(v, t, x_flow).prev_sample
    assert (ours - x_flow).abs().max() < 1e-5  # measured 9.5e-7
