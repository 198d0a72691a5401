"""Blendshape guidance (mien.guidance.blendshape): the guidance step on the real TAEF2, face mesh
and blendshape nets (shared weights) moves the decoded face's blendshapes toward a target, only in the
face box, only late; and the hooks compose."""

import numpy as np
import pytest
import torch

from mien.guidance.blendshape import BlendshapeGuide
from mien.guidance import chain


@pytest.fixture(scope="module")
def parts(example_crop):
    from mien.models.face_mesh import AlignedBlendshapes
    from mien.models.taef2 import TAEF2

    taef2, net = TAEF2.from_weights(), AlignedBlendshapes.from_weights()
    with torch.no_grad():
        latent = taef2.encode(example_crop)

    def measure(z):  # raw TAEF2 latents here (the pipeline's are normalised)
        return net(taef2.decode(z, clamp=False).clamp(0, 1))

    return measure, latent


def test_guidance_moves_the_blendshapes_toward_the_target_in_the_face_box_only_late(parts):
    from mien import regions
    from mien.face.blendshape_names import BLENDSHAPE_NAMES

    measure, latent = parts
    with torch.no_grad():
        own = measure(latent)
    target = own.clone()
    for name in ("jawOpen", "browInnerUp", "mouthStretchLeft", "mouthStretchRight"):
        target[0, BLENDSHAPE_NAMES.index(name)] += 0.3  # a fearful-ish movement the photo does not have
    region = 1 - regions.keep_mask("background")
    guide = BlendshapeGuide(measure, target, region, scale=0.2, until=0.3)
    assert guide(latent, 0.5, 0.45) is latent  # above `until`: untouched
    before = -guide.closeness(latent).item()
    # one step down the gradient (RMS 0.01 in raw TAEF2 latents): the landmark net is not smooth in the
    # pixels, so several large steps zig-zag (0.36 -> 0.21 -> 0.44 at scale 1); one small step descends
    out = guide(latent, 0.3, 0.25)
    after = -guide.closeness(out).item()
    assert after < 0.9 * before, (before, after)
    kept = region[0, 0] == 0
    assert torch.equal(out[:, :, kept], latent[:, :, kept])
    assert BlendshapeGuide(measure, target, region, scale=0.0, until=1.0)(latent, 0.2, 0.1) is latent


def test_chain_applies_hooks_in_order_and_skips_none():
    def add(k):
        return lambda z, t, t_next: z * 10 + k

    assert chain() is None and chain(None, None) is None
    one = add(1)
    assert chain(None, one) is one
    assert chain(add(1), None, add(2))(torch.tensor(0.0), 0.1, 0.0).item() == 12
