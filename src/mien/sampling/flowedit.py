"""FlowEdit: editing a clean sample with a flow model by integrating the *difference* of two velocities.

Kulikov, Kleiner, Huberman-Spiegelglas and Michaeli, "FlowEdit: Inversion-Free Text-Based Editing
Using Pre-Trained Flow Models" (ICCV 2025), Algorithm 1. With rectified flow x_t = (1 - t) x0 + t noise
and v = noise - x0 (:mod:`mien.sampling.flow`), the edit state ``z`` starts at the source ``x_src`` and
moves, from flow time ``ts[0]`` to 0, by

    z_src_t = (1 - t) x_src + t eps          eps fresh at every step
    z_tar_t = z_src_t + (z - x_src)          the source's noisy point, moved by the edit so far
    z      <- z + (t_next - t) [v(z_tar_t | target) - v(z_src_t | source)]

where "source" is the condition that describes ``x_src`` (for mien: the identity photo's own expression)
and "target" the requested one. Where the model's two predictions agree, nothing moves, so what the
request does not touch — the person's features, the lighting — stays the photo's own instead of being
redrawn (the paper's Sec. 4: the difference of the two velocities cancels the model's reconstruction
error). ``ts[0]`` plays the role of the paper's n_max (how early the edit may act; larger changes
more); the paper's n_min tail (plain sampling below a time) is not implemented: it would redraw the
fine detail this edit exists to keep.

Like the samplers in :mod:`mien.sampling.samplers` this is a pure function: the model, the conditions
and the noise all come in as arguments.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

# velocity(x, t) -> v for a batch of 2B rows: rows [:B] are the source samples (to be predicted with
# the source condition), rows [B:] the target samples (target condition). One call per step, so the
# two predictions share a forward pass. t is a (2B,) tensor of flow times.
PairVelocity = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
# correct(z, t, t_next) -> z: applied to the edit state after each step. z is a clean sample (not a
# noisy one), so a critic can judge it as it stands.
Correction = Callable[[torch.Tensor, float, float], torch.Tensor]


def sample_flowedit(velocity: PairVelocity, x_src: torch.Tensor, ts: torch.Tensor,
                    noise: Callable[[int], torch.Tensor], keep: torch.Tensor | None = None,
                    n_avg: int = 1, callback=None, correct: Correction | None = None) -> torch.Tensor:  # fmt: skip
    """Edit ``x_src`` (B, C, H, W; the model's normalised latent space) along the flow times ``ts``
    (descending to 0, e.g. :func:`mien.sampling.schedules.flow_times`).

    ``noise(k)`` returns the k-th fresh noise sample, shaped like ``x_src`` (k counts over steps and
    ``n_avg`` draws, so a seeded caller gets the same edit every time). ``keep`` (broadcastable to
    ``x_src``, values in [0, 1]) holds the edit at the source where it is 1 (Blended Latent Diffusion's
    kept region, applied to the velocity difference). ``n_avg`` > 1 averages the velocity difference
    over several noise draws per step (the paper's n_avg). ``callback`` gets {'x', 'i', 't'} each step.
    ``correct(z, t, t_next)``, when given, returns the state after each step's move (guidance by a
    differentiable critic of the clean state, e.g. :mod:`mien.guidance.recogniser`); it comes in as an
    argument, so this function stays pure.
    """
    z = x_src
    k = 0
    for i in range(len(ts) - 1):
        t, t_next = float(ts[i]), float(ts[i + 1])
        tb = torch.full((2 * x_src.shape[0],), t, dtype=x_src.dtype, device=x_src.device)
        delta = torch.zeros_like(x_src)
        for _ in range(n_avg):
            eps = noise(k)
            k += 1
            z_src_t = (1 - t) * x_src + t * eps
            z_tar_t = z_src_t + (z - x_src)  # (exactly z_src_t while nothing has moved)
            v_src, v_tar = velocity(torch.cat([z_src_t, z_tar_t]), tb).chunk(2)
            delta = delta + (v_tar - v_src) / n_avg
        if keep is not None:
            delta = (1 - keep) * delta
        if callback is not None:
            callback({"x": z, "i": i, "t": t})
        z = z + (t_next - t) * delta
        if correct is not None:
            z = correct(z, t, t_next)
    return z
