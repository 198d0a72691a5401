"""Prior faces for prior preservation, drawn from the base model itself (DreamBooth, Ruiz et al. 2023, sec.
4.1: "class-specific prior preservation" samples the frozen model before fine-tuning), so that
personalising needs nothing beyond the installed package.

Each face is drawn with the identity stream null (no one in particular: the model's training dropped
it 10 % of the time, so it draws plausible strangers) and a basic label's expression, by plain Euler
steps of the rectified flow from noise (t = 1) to a clean latent (t = 0).
"""

from __future__ import annotations

import numpy as np
import torch

from mien.personalize.losses import PriorSet

PRIOR_LABELS = ("neutral", "happy", "sad", "angry", "fearful", "disgusted", "surprised")


def label_blendshapes() -> dict[str, np.ndarray]:
    """(52,) blendshape target of each basic label at full intensity (the requests generation makes)."""
    from mien.expression.aus import AUCalibration
    from mien.expression.basic import Prototypes
    from mien.expression.targets import ExpressionRequest, blendshape_target

    protos, calib = Prototypes.load(), AUCalibration.load()
    return {label: blendshape_target(ExpressionRequest(mix={label: 1.0}), protos, calib).astype(np.float32)
            for label in PRIOR_LABELS}  # fmt: skip


def prior_expressions(n: int, seed: int = 0, max_yaw: float = 20.0) -> torch.Tensor:
    """(n, 55) expression conditions: the basic labels in turn, a frontal-ish random head pose each."""
    from mien.expression.targets import expression_vector

    bs = list(label_blendshapes().values())
    rng = np.random.default_rng(seed)
    rows = [expression_vector(bs[i % len(bs)], (rng.uniform(-max_yaw, max_yaw), rng.uniform(-8, 8), 0.0)) for i in range(n)]
    return torch.from_numpy(np.stack(rows).astype(np.float32))


@torch.no_grad()
def sample_prior(model, expressions: torch.Tensor, steps: int, g: torch.Generator, batch: int = 16) -> PriorSet:
    """Faces of the base model (``model`` before any LoRA or with it at zero) for ``expressions``."""
    device = next(model.parameters()).device
    c, h, w = model.backbone.latent_shape
    out = []
    for i in range(0, len(expressions), batch):
        e = expressions[i : i + batch].to(device)
        x = torch.randn((len(e), c, h, w), generator=g).to(device)
        null = {"identity": torch.ones(len(e), dtype=torch.bool, device=device)}
        ts = torch.linspace(1.0, 0.0, steps + 1)
        for t, t_next in zip(ts[:-1], ts[1:]):
            x = x + float(t_next - t) * model.velocity(x, float(t), {"expression": e}, null=null)
        out.append(x)
    return PriorSet(torch.cat(out), expressions.to(device))
