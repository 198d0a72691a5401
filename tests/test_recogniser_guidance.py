"""Recogniser guidance (mien.guidance.recogniser): the differentiable ArcFace crop it embeds
through (mien.models.identity.IdentityEncoder), and the guidance step on the real MobileFaceNet and TAEF2
(shared weights)."""

import cv2
import numpy as np
import pytest
import torch

from mien.guidance.recogniser import RecogniserGuide
from mien.face import align


def test_identity_encoders_arcface_crop_is_the_warp_affine_crop(shared_dir):
    from mien.models.identity import IdentityEncoder

    rng = np.random.default_rng(0)
    img = cv2.GaussianBlur(rng.integers(0, 256, (128, 128, 3)).astype(np.uint8), (5, 5), 0)
    m = align.similarity_transform(align.TEMPLATE_128, align.ARCFACE_112)
    ref = cv2.warpAffine(img, m, (112, 112), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    x = torch.from_numpy(img).permute(2, 0, 1)[None].float()
    out = IdentityEncoder.from_weights(mobilefacenet=False).crops(x)[1]
    diff = (out[0].permute(1, 2, 0).numpy() - ref.astype(np.float32)).__abs__()
    # cv2 rounds to uint8 and quantises its bilinear weights (to 1/32 px); how depends on the version and
    # the CPU's code path: max 1 on some machines, 2.7 (OpenCV 4.14) or a mean offset of 0.24 (OpenCV 5.1)
    # on an AMD EPYC. The grid is exact; a one-pixel shift would differ by several levels on average.
    assert diff.max() <= 3.0 and diff.mean() < 0.5, (diff.max(), diff.mean())


@pytest.fixture(scope="module")
def parts(example_crop):
    from mien.models.identity import IdentityEncoder
    from mien.models.taef2 import TAEF2

    x = example_crop
    taef2, enc = TAEF2.from_weights(), IdentityEncoder.from_weights()
    with torch.no_grad():
        latent = taef2.encode(x)

    def embed(z):  # raw TAEF2 latents here (the pipeline's are normalised: mien.guidance.recogniser)
        return enc.mobilefacenet_unit(taef2.decode(z, clamp=False).clamp(0, 1) * 255)

    return embed, enc, x, latent


def test_guidance_raises_the_similarity_moves_only_the_face_and_only_late(parts):
    from mien import regions

    embed, enc, x, latent = parts
    target = enc.mobilefacenet_unit(x * 255)
    region = 1 - regions.keep_mask("background")
    guide = RecogniserGuide(embed, target, region, scale=1.0, until=0.3)
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
    assert RecogniserGuide(embed, target, region, scale=0.0, until=1.0)(z, 0.2, 0.1) is z


def test_guidance_works_under_inference_mode(parts):
    """Callers such as scripts/bench_generate_cpu.py run the pipeline under torch.inference_mode."""
    from mien import regions

    embed, enc, x, latent = parts
    region = 1 - regions.keep_mask("background")
    with torch.inference_mode():
        target = enc.mobilefacenet_unit(x * 255)
        guide = RecogniserGuide(embed, target, region, 1.0, 0.3)
        out = guide(latent, 0.2, 0.1)
    assert not torch.equal(out, latent)


def _linear_guide(until: float = 0.3):
    """A GradientGuide whose score is linear in z: its normalised gradient is one fixed direction, so each move
    is scale * dt along it and the moves simply add up."""
    from mien.guidance.gradient import GradientGuide

    w = torch.randn(1, 2, 4, 4, generator=torch.Generator().manual_seed(0))
    return GradientGuide(lambda z: (z * w).sum((1, 2, 3)), torch.ones(1, 1, 4, 4), 1.0, until)


def test_the_critic_steps_on_each_window_step_and_moves_scale_times_the_window():
    ts = torch.linspace(1, 0, 26, dtype=torch.float64)  # 25 steps: 7 of them at t <= 0.3
    guide, z, moved = _linear_guide(), torch.zeros(1, 2, 4, 4), []
    for t, t_next in zip(ts[:-1].tolist(), ts[1:].tolist()):
        new = guide(z, t, t_next)
        if new is not z:
            moved.append(round(t, 4))
        z = new
    assert moved == [0.28, 0.24, 0.2, 0.16, 0.12, 0.08, 0.04]
    # one direction, RMS 1 per move: the total move's RMS is scale times the window's flow time, 0.28
    assert z.pow(2).mean().sqrt().item() == pytest.approx(0.28, rel=1e-5)
    # a window with no step in it moves nothing
    empty, z0 = _linear_guide(until=0.01), torch.zeros(1, 2, 4, 4)
    assert all(empty(z0, t, t_next) is z0 for t, t_next in zip(ts[:-1].tolist(), ts[1:].tolist()))


def test_bfloat16_critic_steps_the_same_way(parts):
    """The bfloat16 critic's normalised step points where float32's does (its rounding, not its direction,
    differs)."""
    from mien import regions
    from mien.guidance.gradient import GradientGuide

    embed, enc, x, latent = parts
    target = enc.mobilefacenet_unit(x * 255)
    region = 1 - regions.keep_mask("background")
    z = latent + 1.5 * torch.randn(latent.shape, generator=torch.Generator().manual_seed(0)) * region
    steps = {p: RecogniserGuide(embed, target, region, 1.0, 0.3, precision=p)(z, 0.2, 0.1) - z
             for p in ("float32", "bfloat16")}
    cos = torch.nn.functional.cosine_similarity(steps["float32"].flatten(), steps["bfloat16"].flatten(), dim=0)
    assert 0.9 < cos < 1.0, cos  # the same direction, and bfloat16 did run
    with pytest.raises(ValueError, match="precision"):
        GradientGuide(embed, region, 1.0, 0.3, precision="float16")


def test_a_critic_step_that_is_not_finite_in_bfloat16_is_taken_in_float32_and_never_poisons_the_state():
    """An image whose bfloat16 gradient is not finite takes float32's step; a gradient that is never finite
    moves nothing (a NaN state would decode to a black face)."""
    from mien.guidance.gradient import GradientGuide

    w = torch.randn(16, 1, generator=torch.Generator().manual_seed(1))

    def fragile(z):  # finite in float32, NaN wherever the product comes out in bfloat16
        out = torch.mm(z.flatten(1), w).squeeze(1)
        return out * float("nan") if out.dtype == torch.bfloat16 else out

    region = torch.ones(1, 1, 4, 4)
    z = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(2))
    steps = {p: GradientGuide(fragile, region, 1.0, 0.3, precision=p)(z, 0.2, 0.1) - z
             for p in ("float32", "bfloat16")}
    assert torch.isfinite(steps["bfloat16"]).all()
    assert steps["float32"].abs().sum() > 0
    torch.testing.assert_close(steps["bfloat16"], steps["float32"])
    broken = GradientGuide(lambda z: z.sum((1, 2, 3)) * float("nan"), region, 1.0, 0.3)
    assert torch.equal(broken(z, 0.2, 0.1), z)


def test_a_two_critic_guide_picks_each_steps_critic_without_changing_itself():
    """The hybrid critic's guides read the early critic before ``late_until`` and the late one from it on, while the
    guide's own attributes stay as built: a guide never changes between steps."""
    from mien.guidance.blendshape import BlendshapeGuide

    read = []

    def critic(name, width):
        w = torch.randn(width, 2 * 4 * 4, generator=torch.Generator().manual_seed(len(name)))
        return lambda z: read.append(name) or torch.nn.functional.normalize(z.flatten(1) @ w.T, dim=1)

    region, z = torch.ones(1, 1, 4, 4), torch.randn(2, 2, 4, 4, generator=torch.Generator().manual_seed(1))
    for guide in (RecogniserGuide(critic("reader", 8), torch.ones(1, 8) / 8 ** 0.5, region, 1.0, 0.3,
                                  late_embed=critic("decoded", 8), late_until=0.1),
                  BlendshapeGuide(critic("reader", 52), torch.rand(1, 52), region, 1.0, 0.3,
                                  late_measure=critic("decoded", 52), late_until=0.1)):  # fmt: skip
        built, read[:] = dict(vars(guide)), []
        for t in (0.3, 0.2, 0.1, 0.05, 0.2):
            guide(z, t, t - 0.05)
            assert vars(guide).keys() == built.keys() and all(vars(guide)[k] is v for k, v in built.items())
        assert read == ["reader", "reader", "decoded", "decoded", "reader"]
