"""Recogniser guidance (mien.builtin.recogniser_guidance): the differentiable ArcFace crop, and the
guidance step on the real MobileFaceNet and TAEF2 (shared weights)."""

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mien.builtin.recogniser_guidance import RecogniserGuide, arcface_grid, embed
from mien.face import align


def test_arcface_grid_cuts_the_same_crop_as_warp_affine():
    rng = np.random.default_rng(0)
    img = cv2.GaussianBlur(rng.integers(0, 256, (128, 128, 3)).astype(np.uint8), (5, 5), 0)
    m = align.similarity_transform(align.TEMPLATE_128, align.ARCFACE_112)
    ref = cv2.warpAffine(img, m, (112, 112), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    x = torch.from_numpy(img).permute(2, 0, 1)[None].float()
    out = F.grid_sample(x, arcface_grid(1), mode="bilinear", padding_mode="zeros", align_corners=False)
    diff = (out[0].permute(1, 2, 0).numpy() - ref.astype(np.float32)).__abs__()
    assert diff.max() <= 1.0  # cv2 rounds to uint8; the grid is exact


@pytest.fixture(scope="module")
def parts(shared_dir):
    from mien.builtin.recogniser_guidance import no_grad_params
    from mien.cli.analyze import example_path
    from mien.face.landmarker import FaceLandmarker
    from mien.io.image import load_rgb
    from mien.models.mobilefacenet import MobileFaceNet
    from mien.models.taef2 import TAEF2
    from mien.pipeline import align_photo

    with FaceLandmarker() as lm:
        crop, _ = align_photo(lm, load_rgb(example_path()))
    x = torch.from_numpy(crop).permute(2, 0, 1)[None].float() / 255
    taef2, mfn = no_grad_params(TAEF2.from_weights().eval()), no_grad_params(MobileFaceNet.from_weights().eval())
    with torch.no_grad():
        latent = taef2.encode(x)
    return taef2, mfn, x, latent


def test_guidance_raises_the_similarity_moves_only_the_face_and_only_late(parts):
    from mien.builtin import edit

    taef2, mfn, x, latent = parts
    target = embed(mfn, x)
    region = 1 - edit.keep_mask("background")
    decode = lambda z: taef2.decode(z, clamp=False).clamp(0, 1)  # noqa: E731
    guide = RecogniserGuide(mfn, decode, target, region, scale=1.0, until=0.3)
    # a drifted identity: the face box of the photo's latent smeared with noise
    z = latent + 1.5 * torch.randn(latent.shape, generator=torch.Generator().manual_seed(0)) * region
    assert guide(z, 0.5, 0.45) is z  # above `until`: untouched
    before = guide.similarity(z).item()
    out = z
    for t in np.linspace(0.3, 0.0, 7)[:-1]:
        out = guide(out, float(t), float(t) - 0.05)
    after = guide.similarity(out).item()
    assert after > before + 0.05, (before, after)
    kept = region[0, 0] == 0
    assert torch.equal(out[:, :, kept], z[:, :, kept])
    # and no guidance at scale 0
    assert RecogniserGuide(mfn, decode, target, region, scale=0.0, until=1.0)(z, 0.2, 0.1) is z


def test_guidance_works_under_inference_mode(parts):
    """Callers such as scripts/bench_generate_cpu.py run the pipeline under torch.inference_mode."""
    from mien.builtin import edit

    taef2, mfn, x, latent = parts
    region = 1 - edit.keep_mask("background")
    with torch.inference_mode():
        target = embed(mfn, x)
        guide = RecogniserGuide(mfn, lambda z: taef2.decode(z, clamp=False).clamp(0, 1), target, region, 1.0, 0.3)
        out = guide(latent, 0.2, 0.1)
    assert not torch.equal(out, latent)
