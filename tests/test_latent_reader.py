"""The latent reader (mien.models.latent_reader) and ``--recogniser-critic``: tiny random-weight readers and stub
critics, CPU, seconds."""

import dataclasses
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from mien import weights as W
from mien.errors import MienError, WeightsError
from mien.guidance.recogniser import RecogniserGuidance
from mien.models import latent_reader as LR
from mien.settings import GenerationSettings

TINY = LR.LatentReaderConfig(width=8, blocks=1, deep_width=8)


def test_the_reader_gives_unit_embeddings_and_round_trips_through_its_file(tmp_path):
    torch.manual_seed(0)
    reader = LR.LatentReader(TINY).eval()
    z = torch.randn(3, 32, 16, 16)
    e = reader(z)
    assert e.shape == (3, 192) and torch.allclose(e.norm(dim=1), torch.ones(3), atol=1e-5)
    reader.save(tmp_path / "r.safetensors")
    back = LR.LatentReader.from_weights(tmp_path / "r.safetensors")
    assert back.config == TINY  # the config travels in the file's metadata
    assert torch.allclose(back(z), e, atol=2e-2)  # float16 weights


@pytest.fixture
def isolated(monkeypatch, tmp_path):
    """A weights folder of the test's own in MIEN_WEIGHTS, an empty cache, no ../shared fallback."""
    monkeypatch.setenv(W.ENV_VAR, str(tmp_path / "w"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(W, "_checkout_shared", lambda: None)
    W._VERIFIED.clear()
    LR.load_reader.cache_clear()
    yield tmp_path / "w"
    LR.load_reader.cache_clear()


def test_the_reader_loads_only_with_its_checksum_and_says_so_in_one_line(isolated, monkeypatch):
    path = isolated / LR.WEIGHTS.path
    with pytest.raises(WeightsError) as missing:
        LR.load_reader()
    assert "not found" in str(missing.value) and "--recogniser-critic decoded" in str(missing.value)
    path.parent.mkdir(parents=True)
    LR.LatentReader(TINY).save(path)
    with pytest.raises(WeightsError) as bad:
        LR.load_reader()
    msg = str(bad.value)
    assert "wrong SHA256" in msg and LR.WEIGHTS.path in msg and "\n" not in msg
    monkeypatch.setattr(LR, "WEIGHTS", dataclasses.replace(LR.WEIGHTS, sha256=W.sha256_of(path)))
    assert LR.load_reader().config == TINY


def test_unknown_critic_is_a_one_line_error():
    with pytest.raises(MienError) as e:
        GenerationSettings(recogniser_critic="pixels")
    assert "--recogniser-critic pixels" in str(e.value) and "decoded, latent" in str(e.value)


class Counting:
    """Counts calls of a stand-in net."""

    def __init__(self, fn):
        self.fn, self.calls = fn, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.fn(*args, **kwargs)


def context(critic: str):
    """A request's guidance context with stub decoded-critic nets that count their calls."""
    settings = GenerationSettings(recogniser_critic=critic).resolve(SimpleNamespace(mix={"happy": 1.0}))
    decode = Counting(lambda z, clamp=True: torch.sigmoid(F.interpolate(z[:, :3], size=128)))
    read = Counting(lambda x: F.normalize(x.flatten(1)[:, :192], dim=1))
    nets = {"taef2": SimpleNamespace(decode=decode), "identity": SimpleNamespace(mobilefacenet_unit=read)}
    model = SimpleNamespace(denormalize=lambda z: z)
    identity = SimpleNamespace(embedding=F.normalize(torch.randn(192), dim=0))
    region = torch.ones(1, 1, 16, 16)
    ctx = SimpleNamespace(settings=settings, model=model, nets=nets, identity=identity, region=region,
                          device=torch.device("cpu"))  # fmt: skip
    return ctx, decode


@pytest.mark.parametrize("critic", ["decoded", "latent"])
def test_the_option_chooses_which_critic_scores_the_guided_step(critic, monkeypatch):
    torch.manual_seed(0)
    reader = Counting(LR.LatentReader(TINY).eval().requires_grad_(False))
    monkeypatch.setattr(LR, "load_reader", lambda device: reader)
    ctx, decode = context(critic)
    guide = RecogniserGuidance().correction(ctx)
    z = torch.randn(1, 32, 16, 16)
    moved = guide(z, 0.2, 0.16)
    assert not torch.equal(moved, z)  # a guided step moves the state...
    assert (reader.calls > 0, decode.calls > 0) == ((True, False) if critic == "latent" else (False, True))
    assert torch.equal(guide(z, 0.5, 0.46), z)  # ...and only inside the window, whichever critic


def test_generate_reports_missing_reader_weights_before_loading_anything(isolated, monkeypatch, capsys, tmp_path):
    from mien.cli.analyze import example_path
    from mien.cli.main import main
    from mien.pipeline import MienPipeline

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the missing weights were reported")

    monkeypatch.setattr(MienPipeline, "from_pretrained", classmethod(refuse))
    code = main(["generate", "--identity", str(example_path()), "--expression", "happy", "--recogniser-critic",
                 "latent", "--out", str(tmp_path / "out")])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code == WeightsError.exit_code and len(err.splitlines()) == 1
    assert err.startswith("mien: error: --recogniser-critic latent") and not (tmp_path / "out").exists()
