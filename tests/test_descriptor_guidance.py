"""Descriptor guidance (mien.guidance.descriptor): its gradient reaches the sample, at weight 0 the swap is
exactly what it is without the kind, its swap default resolves only for swaps; and on the real face-api net
and TAEF2 (shared weights) its step raises the descriptor cosine."""

import numpy as np
import pytest
import torch
from conftest import tiny_aligned

from mien.cli.analyze import example_path
from mien.expression.targets import parse_request
from mien.io.image import load_rgb
from mien.settings import SWAP_DEFAULTS
from mien.settings import GenerationSettings as S


@pytest.fixture(scope="module")
def swap_inputs(editor):
    photo = load_rgb(example_path())  # a London Set photo (CC BY 4.0, see the README)
    other = np.ascontiguousarray(photo[:, ::-1, ::-1])  # another identity vector and reference
    subject = editor.subject([other], tiny_aligned(other))
    scene = editor.subject([photo], tiny_aligned(photo))
    return subject, scene


def swap(editor, swap_inputs, **settings):
    subject, scene = swap_inputs
    plain = dict(steps=4, recogniser_guidance=0)
    return editor.edit(subject, parse_request("happy"), S(**{**plain, **settings}), seed=3, into=scene)


def cosine_to_subject(editor, swap_inputs, result) -> float:
    """The stand-in face-api condition of the swapped face against the selfie's identity vector."""
    pipe = editor.pipeline
    x = torch.from_numpy(result.crops[0]).permute(2, 0, 1)[None].float()
    with torch.no_grad():
        return float(pipe.nets["identity"].condition(x)[0] @ swap_inputs[0].identity.vector)


def test_zero_weight_is_the_swap_without_descriptor_guidance(editor, swap_inputs, monkeypatch):
    from mien import guidance

    off = swap(editor, swap_inputs, descriptor_guidance=0.0).generation.latents
    monkeypatch.delitem(guidance.GUIDANCE, "descriptor")
    without = swap(editor, swap_inputs, descriptor_guidance=0.0).generation.latents
    assert torch.equal(off, without)


def test_the_gradient_reaches_the_sample_and_moves_it_toward_the_selfie(editor, swap_inputs):
    off = swap(editor, swap_inputs, descriptor_guidance=0.0)
    on = swap(editor, swap_inputs, descriptor_guidance=3.0)
    assert (on.generation.latents - off.generation.latents).abs().max() > 1e-3
    assert cosine_to_subject(editor, swap_inputs, on) > cosine_to_subject(editor, swap_inputs, off)
    photo = swap_inputs[1].photo
    assert np.array_equal(on.photos[0][:20, :20], photo[:20, :20])  # the scene outside the face is kept
    # acting only at flow times <= until: a window after the last step is no guidance at all
    late = swap(editor, swap_inputs, descriptor_guidance=3.0, descriptor_guidance_until=0.01)
    assert torch.equal(late.generation.latents, off.generation.latents)


@pytest.mark.parametrize("name, edit_default", [("descriptor_guidance", 0.0), ("guidance_identity", 1.0),
                                               ("guidance_contrast", 1.0), ("swap_reference", "identity")])
def test_the_swap_defaults_apply_to_swaps_only(name, edit_default):
    happy = parse_request("surprised" if name == "guidance_contrast" else "happy")  # no swap contrast on happy
    assert getattr(S().resolve(happy), name) == edit_default
    assert getattr(S().resolve(happy, swap=True), name) == SWAP_DEFAULTS[name]
    given = {"swap_reference": "none", "guidance_contrast": 1.2}.get(name, 0.5)
    assert getattr(S(**{name: given}).resolve(happy, swap=True), name) == given  # given: kept
    assert getattr(S(method="sdedit").resolve(happy, swap=True), name) == edit_default


def test_a_swap_takes_no_contrast_floor_on_happy_and_keeps_the_larger_label_policy():
    assert S().resolve(parse_request("happy"), swap=True).guidance_contrast == 1.0
    assert S().resolve(parse_request("sad"), swap=True).guidance_contrast == max(1.5, SWAP_DEFAULTS["guidance_contrast"])


def test_descriptor_guidance_is_flowedit_only():
    with pytest.raises(Exception, match="--descriptor-guidance works with --method flowedit"):
        S(method="sdedit", descriptor_guidance=1.0)


@pytest.mark.shared
def test_on_the_real_nets_the_step_raises_the_descriptor_cosine(example_crop):
    from mien import regions
    from mien.guidance.recogniser import RecogniserGuide
    from mien.models.identity import IdentityEncoder
    from mien.models.taef2 import TAEF2

    taef2, enc = TAEF2.from_weights(), IdentityEncoder.from_weights(mobilefacenet=False)
    with torch.no_grad():
        latent = taef2.encode(example_crop)
        target = enc.condition(example_crop * 255)

    from types import SimpleNamespace

    from mien.guidance.descriptor import latent_descriptor

    embed = latent_descriptor(SimpleNamespace(denormalize=lambda z: z), taef2, enc)  # raw TAEF2 latents here
    region = 1 - regions.keep_mask("background")
    guide = RecogniserGuide(embed, target, region, scale=1.0, until=1.0)
    z = latent + 1.5 * torch.randn(latent.shape, generator=torch.Generator().manual_seed(0)) * region
    before, out = guide.similarity(z).item(), z
    for t in np.linspace(1.0, 0.0, 6)[:-1]:
        out = guide(out, float(t), float(t) - 0.2)
    assert guide.similarity(out).item() > before + 0.02
