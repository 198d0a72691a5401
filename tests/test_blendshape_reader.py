"""The blendshape reader (mien.models.latent_reader, kind "blendshape") and ``--blendshape-critic``: tiny random-weight
readers and stub decoded critics, CPU, seconds."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import Counting, walk_guided_window
from mien.errors import MienError, WeightsError
from mien.guidance.blendshape import BlendshapeGuidance
from mien.models import latent_reader as LR
from mien.settings import GenerationSettings

TINY = LR.LatentReaderConfig(width=8, blocks=1, deep_width=8, embedding=52, unit=0)


def test_the_blendshape_reader_gives_scores_in_0_1_and_round_trips_through_its_file(tmp_path):
    torch.manual_seed(0)
    reader = LR.LatentReader(TINY).eval()
    b = reader(torch.randn(3, 32, 16, 16))
    assert b.shape == (3, 52) and ((b > 0) & (b < 1)).all() and not torch.allclose(b.norm(dim=1), torch.ones(3))
    reader.save(tmp_path / "b.safetensors", storage="int8")
    assert LR.LatentReader.from_weights(tmp_path / "b.safetensors").config == TINY  # unit=0 travels in the metadata


def edit_states(critic: str, monkeypatch, **given):
    """The states of a stand-in 25-step FlowEdit's guided window for fearful (each step a fixed random move, then
    blendshape guidance) and which critic read each guided step ("reader" or "decoded")."""
    from mien.guidance import GuidanceContext

    torch.manual_seed(0)
    reader = Counting(LR.LatentReader(TINY).eval().requires_grad_(False))
    asked = []
    monkeypatch.setattr(LR, "load_reader", lambda device, kind="recogniser": asked.append(kind) or reader)
    settings = GenerationSettings(blendshape_critic=critic, **given).resolve(SimpleNamespace(mix={"fearful": 1.0}))
    assert settings.blendshape_guidance > 0
    decode = Counting(lambda z, clamp=True: torch.sigmoid(F.interpolate(z[:, :3], size=128)))
    read = lambda rgb: torch.sigmoid(F.avg_pool2d(rgb, 16).flatten(1)[:, :52] * 4 - 2)  # noqa: E731
    nets = {"taef2": SimpleNamespace(decode=decode), "blendshapes": read}
    model = SimpleNamespace(denormalize=lambda z: z)
    target = np.linspace(0, 0.8, 52).astype(np.float32)
    ctx = GuidanceContext(settings, model, nets, None, target, torch.zeros(1, 55), None, torch.ones(1, 1, 16, 16),
                          torch.device("cpu"))
    guide = BlendshapeGuidance().correction(ctx)
    states, who = walk_guided_window(guide, settings.steps, settings.strength, reader, decode)
    assert set(asked) <= {"blendshape"}  # never the recogniser's reader
    return states, who


def test_an_edit_reads_blendshapes_on_the_decoded_face_unless_asked():
    for swap in (False, True):
        assert GenerationSettings().resolve(SimpleNamespace(mix={"fearful": 1.0}), swap=swap).blendshape_critic == \
            "decoded"
    assert GenerationSettings(blendshape_critic="hybrid").resolve(SimpleNamespace(mix={})).blendshape_critic == "hybrid"


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_hybrid_reads_the_latent_early_and_the_decoded_face_on_the_last_steps(precision, monkeypatch):
    states, who = edit_states("hybrid", monkeypatch, critic_precision=precision)
    assert who == ["reader"] * 5 + ["decoded"] * 2  # blendshape_decoded_steps=2 by default
    latent, lwho = edit_states("latent", monkeypatch, critic_precision=precision)
    decoded, dwho = edit_states("decoded", monkeypatch, critic_precision=precision)
    assert lwho == ["reader"] * 7 and dwho == ["decoded"] * 7
    assert all(torch.equal(a, b) for a, b in zip(states[:-2], latent[:-2]))  # the same as latent up to the switch
    assert not torch.equal(states[-1], latent[-1]) and not torch.equal(states[-1], decoded[-1])
    assert not torch.equal(states[-3], decoded[-3])  # the reader's steps point elsewhere than the decoded critic's


def test_hybrid_at_its_ends_is_the_latent_or_the_decoded_critic_bit_for_bit(monkeypatch):
    latent, _ = edit_states("latent", monkeypatch)
    decoded, _ = edit_states("decoded", monkeypatch)
    none, who = edit_states("hybrid", monkeypatch, blendshape_decoded_steps=0)
    assert who == ["reader"] * 7 and all(torch.equal(a, b) for a, b in zip(none, latent))
    every, who = edit_states("hybrid", monkeypatch, blendshape_decoded_steps=7)
    assert who == ["decoded"] * 7 and all(torch.equal(a, b) for a, b in zip(every, decoded))


def test_bad_critic_settings_are_one_line_errors():
    with pytest.raises(MienError) as e:
        GenerationSettings(blendshape_critic="pixels")
    assert "--blendshape-critic pixels" in str(e.value) and "decoded, latent, hybrid" in str(e.value)
    with pytest.raises(MienError) as e:
        GenerationSettings(blendshape_decoded_steps=-1)
    assert str(e.value).startswith("--blendshape-decoded-steps -1 is out of range") and "\n" not in str(e.value)


def test_a_missing_blendshape_reader_is_reported_before_loading_anything(monkeypatch, capsys, tmp_path):
    from mien import weights as W
    from mien.cli.analyze import example_path
    from mien.cli.main import main
    from mien.pipeline import MienPipeline

    monkeypatch.setenv(W.ENV_VAR, str(tmp_path / "w"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(W, "_checkout_shared", lambda: None)
    real = LR.packaged_path
    monkeypatch.setattr(LR, "packaged_path", lambda kind="recogniser": real(kind) if kind == "recogniser" else
                        tmp_path / "model" / LR.BLENDSHAPE_PACKAGED)  # fmt: skip

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the missing weights were reported")

    monkeypatch.setattr(MienPipeline, "from_pretrained", classmethod(refuse))
    code = main(["generate", "--identity", str(example_path()), "--expression", "fearful", "--blendshape-critic",
                 "hybrid", "--out", str(tmp_path / "out")])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code == WeightsError.exit_code and len(err.splitlines()) == 1
    assert err.startswith("mien: error: --blendshape-critic hybrid") and "--blendshape-critic decoded" in err
    assert LR.BLENDSHAPE_WEIGHTS.path in err and not (tmp_path / "out").exists()


def test_the_shipped_blendshape_reader_loads_and_matches_its_checksum(monkeypatch, tmp_path):
    from mien import weights as W
    from mien.checksums import read_sums, sha256_of

    monkeypatch.setenv(W.ENV_VAR, str(tmp_path / "w"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(W, "_checkout_shared", lambda: None)
    path = LR.locate_weights("hybrid", kind="blendshape")
    assert path == LR.packaged_path("blendshape") and path.parent.name == "model"
    assert sha256_of(path) == LR.BLENDSHAPE_WEIGHTS.sha256 == read_sums(path.with_name("SHA256SUMS"))[
        LR.BLENDSHAPE_PACKAGED]
    assert path.stat().st_size <= 1.1e6 and LR.BLENDSHAPE_WEIGHTS.sha256 in (path.parent / "README.md").read_text()
    reader = LR.LatentReader.from_weights(path)
    assert reader.config.embedding == 52 and reader.config.unit == 0
    b = reader(torch.randn(2, 32, 16, 16))
    assert ((b > 0) & (b < 1)).all()
    model = path.parent
    assert sum(f.stat().st_size for f in model.iterdir() if f.is_file()) <= 32e6  # the shipped model folder's budget
