"""FlowEdit (mien.sampling.flowedit) on velocity fields whose answer is known exactly."""

import pytest
import torch

from mien.sampling import flow_times, sample_flowedit


def point_mass_velocity(mu_src: torch.Tensor, mu_tar: torch.Tensor):
    """Exact rectified-flow velocity when the data is a single point mu: x_t = (1 - t) mu + t eps, so
    v = eps - mu = (x_t - mu) / t. Rows [:B] are predicted for mu_src, rows [B:] for mu_tar."""

    def velocity(x, t):
        mu = torch.cat([mu_src, mu_tar])
        return (x - mu) / t.reshape(-1, 1, 1, 1)

    return velocity


def noise_source(shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    draws = {}

    def noise(k):
        if k not in draws:
            draws[k] = torch.randn(shape, generator=g)
        return draws[k]

    return noise


@pytest.mark.parametrize("steps,start", [(1, 1.0), (5, 0.8), (25, 0.5)])
def test_point_masses_are_edited_exactly_onto_the_target(steps, start):
    """With v = (x - mu)/t, the edit obeys dz/dt = (z - mu_tar)/t, whose Euler steps shrink z - mu_tar by
    t_next/t: the last step (t_next = 0) lands exactly on the target, whatever the noise."""
    mu_src, mu_tar = torch.randn(2, 4, 3, 3), torch.randn(2, 4, 3, 3)
    for seed in (0, 1):
        out = sample_flowedit(point_mass_velocity(mu_src, mu_tar), mu_src, flow_times(steps, start),
                              noise_source(mu_src.shape, seed))
        torch.testing.assert_close(out, mu_tar, atol=1e-5, rtol=0)


def test_an_edit_to_the_same_condition_changes_nothing():
    """Equal source and target predictions cancel at every step: the source comes back unchanged,
    however wrong the model (here: a random nonlinear field)."""
    w = torch.randn(4, 4)

    def velocity(x, t):
        return torch.tanh(torch.einsum("oc,bchw->bohw", w, x)) * 3 + t.reshape(-1, 1, 1, 1)

    x = torch.randn(2, 4, 5, 5)
    out = sample_flowedit(velocity, x, flow_times(10, 0.9), noise_source(x.shape))
    assert torch.equal(out, x)


def test_kept_region_stays_the_source_and_the_rest_moves():
    mu_src, mu_tar = torch.zeros(1, 2, 4, 4), torch.ones(1, 2, 4, 4)
    keep = torch.zeros(1, 1, 4, 4)
    keep[..., :2, :] = 1
    out = sample_flowedit(point_mass_velocity(mu_src, mu_tar), mu_src, flow_times(6, 1.0),
                          noise_source(mu_src.shape), keep=keep)
    assert torch.equal(out[..., :2, :], mu_src[..., :2, :])
    torch.testing.assert_close(out[..., 2:, :], mu_tar[..., 2:, :], atol=1e-5, rtol=0)


def test_noise_is_drawn_through_the_callers_function_once_per_step_and_average():
    calls = []
    x = torch.zeros(1, 1, 2, 2)

    def noise(k):
        calls.append(k)
        return torch.randn(x.shape)

    sample_flowedit(point_mass_velocity(x, x + 1), x, flow_times(4, 0.8), noise, n_avg=3)
    assert calls == list(range(12))


def test_correction_hook_sees_every_step_and_its_result_is_the_next_state():
    """``correct`` runs after each step's move, with that step's times, and what it returns is carried on
    (here it pins one cell to 5: the edit ends there although the velocity says otherwise)."""
    mu_src, mu_tar = torch.zeros(1, 1, 2, 2), torch.ones(1, 1, 2, 2)
    ts = flow_times(5, 1.0)
    seen = []

    def correct(z, t, t_next):
        seen.append((t, t_next))
        z = z.clone()
        z[..., 0, 0] = 5.0
        return z

    out = sample_flowedit(point_mass_velocity(mu_src, mu_tar), mu_src, ts, noise_source(mu_src.shape), correct=correct)
    assert seen == [(float(ts[i]), float(ts[i + 1])) for i in range(len(ts) - 1)]
    assert out[0, 0, 0, 0] == 5.0
    torch.testing.assert_close(out[0, 0, 1, 1], torch.tensor(1.0), atol=1e-5, rtol=0)


def test_bad_schedules_are_refused():
    with pytest.raises(ValueError, match="start"):
        flow_times(10, 0.0)
    with pytest.raises(ValueError, match="step"):
        flow_times(0, 0.5)
