"""The latent reader (mien.models.latent_reader) and ``--recogniser-critic``: tiny random-weight readers and stub
critics, CPU, seconds."""

import dataclasses
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from mien import checksums
from mien import weights as W
from conftest import Counting, walk_guided_window
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


def test_int8_storage_is_half_the_size_and_computes_in_float32(tmp_path):
    torch.manual_seed(0)
    reader = LR.LatentReader(LR.LatentReaderConfig(width=16, blocks=1, deep_width=16)).eval()
    reader.save(tmp_path / "f16.safetensors")
    reader.save(tmp_path / "i8.safetensors", storage="int8")
    assert (tmp_path / "i8.safetensors").stat().st_size < 0.6 * (tmp_path / "f16.safetensors").stat().st_size
    back = LR.LatentReader.from_weights(tmp_path / "i8.safetensors")
    assert all(p.dtype == torch.float32 for p in back.state_dict().values())
    z = torch.randn(4, 32, 16, 16)
    assert F.cosine_similarity(back(z), reader(z)).min() > 0.999
    with pytest.raises(ValueError):
        reader.save(tmp_path / "x.safetensors", storage="int4")


@pytest.fixture
def isolated(monkeypatch, tmp_path):
    """A weights folder of the test's own in MIEN_WEIGHTS, an empty cache, no ../shared fallback, and no shipped
    reader (its path points into an empty folder)."""
    monkeypatch.setattr(LR, "packaged_path", lambda kind="recogniser": tmp_path / "model" / LR.PACKAGED)
    yield from weights_folder(monkeypatch, tmp_path)


@pytest.fixture
def folders(monkeypatch, tmp_path):
    """As ``isolated``, with the shipped reader where the package has it."""
    yield from weights_folder(monkeypatch, tmp_path)


def weights_folder(monkeypatch, tmp_path):
    monkeypatch.setenv(W.ENV_VAR, str(tmp_path / "w"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(W, "_checkout_shared", lambda: None)
    W._VERIFIED.clear()
    LR.load_reader.cache_clear()
    yield tmp_path / "w"
    LR.load_reader.cache_clear()


def test_the_shipped_reader_loads_and_matches_its_checksum(folders):
    from mien.checksums import read_sums, sha256_of

    path = LR.locate_weights()
    assert path == LR.packaged_path() and path.parent.name == "model"  # beside the built-in model
    assert sha256_of(path) == LR.WEIGHTS.sha256 == read_sums(path.with_name("SHA256SUMS"))[LR.PACKAGED]
    assert path.stat().st_size <= 1.1e6  # the tracked tree's budget: int8 storage
    assert LR.WEIGHTS.sha256 in (path.parent / "README.md").read_text()  # the model card names it
    reader = LR.load_reader()
    assert reader.config == LR.LatentReaderConfig(width=96, blocks=3, deep_width=192)
    assert all(p.dtype == torch.float32 and not p.requires_grad for p in reader.parameters())
    e = reader(torch.randn(2, 32, 16, 16))
    assert torch.allclose(e.norm(dim=1), torch.ones(2), atol=1e-5)


def test_a_reader_in_a_weights_folder_overrides_the_shipped_one(folders):
    path = folders / LR.WEIGHTS.path
    path.parent.mkdir(parents=True)
    LR.LatentReader(TINY).save(path)
    assert LR.locate_weights() == path and LR.load_reader().config == TINY


def test_a_damaged_shipped_reader_is_a_one_line_error(folders, monkeypatch, tmp_path):
    import shutil

    copy = tmp_path / "model"
    copy.mkdir()
    for name in (LR.PACKAGED, "SHA256SUMS"):
        shutil.copy(LR.packaged_path().with_name(name), copy / name)
    monkeypatch.setattr(LR, "packaged_path", lambda kind="recogniser": copy / LR.PACKAGED)
    assert LR.locate_weights() == copy / LR.PACKAGED
    data = bytearray((copy / LR.PACKAGED).read_bytes())
    data[-1] ^= 1  # one bit of a weight
    (copy / LR.PACKAGED).write_bytes(bytes(data))
    msg = one_line_error()
    assert str(copy / LR.PACKAGED) in msg and "does not match its checksum in SHA256SUMS" in msg
    assert "reinstall mien" in msg
    (copy / "SHA256SUMS").write_text("")
    assert "has no line for latent_reader.safetensors" in one_line_error()


def one_line_error(**kwargs) -> str:
    with pytest.raises(WeightsError) as e:
        LR.load_reader(**kwargs)
    msg = str(e.value)
    assert "\n" not in msg and "--recogniser-critic decoded" in msg
    return msg


def test_a_missing_shipped_reader_is_a_one_line_error_saying_what_to_do(isolated):
    msg = one_line_error()
    assert "the shipped file" in msg and "is missing" in msg and "reinstall mien" in msg
    assert LR.WEIGHTS.path in msg  # where a reader of one's own goes instead


def test_a_rebuilt_reader_loads_by_the_sha256_recorded_beside_it(isolated):
    path = isolated / LR.WEIGHTS.path
    path.parent.mkdir(parents=True)
    digest = LR.LatentReader(TINY).save(path)  # as scripts/train_latent_reader.py saves it
    assert digest != LR.WEIGHTS.sha256 and checksums.recorded_sha256(path) == digest == checksums.sha256_of(path)
    assert checksums.sidecar(path).read_text() == f"{digest}  latent_reader.safetensors\n"  # sha256sum -c reads it
    assert LR.load_reader().config == TINY


def test_a_damaged_reader_is_a_one_line_error(isolated):
    path = isolated / LR.WEIGHTS.path
    path.parent.mkdir(parents=True)
    LR.LatentReader(TINY).save(path)
    path.write_bytes(path.read_bytes()[:-1] + b"?")  # one byte changed after its SHA256 was recorded
    msg = one_line_error()
    assert str(path) in msg and "do not match the SHA256 recorded" in msg and "rebuild" in msg
    checksums.sidecar(path).unlink()  # no recorded SHA256 at all, and not the measured file
    assert "have no latent_reader.safetensors.sha256" in one_line_error()
    assert "remove them to use the shipped reader" in one_line_error()


def test_the_shipped_reader_needs_no_recorded_sha256(isolated, monkeypatch):
    path = isolated / LR.WEIGHTS.path
    path.parent.mkdir(parents=True)
    LR.LatentReader(TINY).save(path)
    checksums.sidecar(path).unlink()
    monkeypatch.setattr(LR, "WEIGHTS", dataclasses.replace(LR.WEIGHTS, sha256=checksums.sha256_of(path)))  # the pinned one
    assert LR.load_reader().config == TINY


def test_an_edit_takes_the_hybrid_critic_and_a_swap_the_decoded_one_unless_asked():
    request = SimpleNamespace(mix={"happy": 1.0})
    assert GenerationSettings().resolve(request).recogniser_critic == "hybrid"
    assert GenerationSettings().resolve(request, swap=True).recogniser_critic == "decoded"
    for critic in ("decoded", "latent", "hybrid"):  # asked for: whatever the request
        for swap in (False, True):
            assert GenerationSettings(recogniser_critic=critic).resolve(request, swap=swap).recogniser_critic == critic


def test_unknown_critic_is_a_one_line_error():
    with pytest.raises(MienError) as e:
        GenerationSettings(recogniser_critic="pixels")
    assert "--recogniser-critic pixels" in str(e.value) and "decoded, latent" in str(e.value)


def context(critic: str, **given):
    """A request's guidance context with stub decoded-critic nets that count their calls."""
    from mien.guidance import GuidanceContext

    settings = GenerationSettings(recogniser_critic=critic, **given).resolve(SimpleNamespace(mix={"happy": 1.0}))
    decode = Counting(lambda z, clamp=True: torch.sigmoid(F.interpolate(z[:, :3], size=128)))
    read = Counting(lambda x: F.normalize(x.flatten(1)[:, :192], dim=1))
    nets = {"taef2": SimpleNamespace(decode=decode), "identity": SimpleNamespace(mobilefacenet_unit=read)}
    model = SimpleNamespace(denormalize=lambda z: z)
    identity = SimpleNamespace(embedding=F.normalize(torch.randn(192), dim=0))
    region = torch.ones(1, 1, 16, 16)
    ctx = GuidanceContext(settings, model, nets, identity, None, torch.zeros(1, 55), None, region, torch.device("cpu"))
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


def test_evaluate_reports_missing_reader_weights_before_reading_the_benchmark(isolated, monkeypatch, capsys, tmp_path):
    from mien.cli.main import main
    from mien.evaluate import benchmark

    def refuse(*args, **kwargs):
        raise AssertionError("the benchmark was read before the missing weights were reported")

    monkeypatch.setattr(benchmark, "load", refuse)
    code = main(["evaluate", "--recogniser-critic", "latent", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code == WeightsError.exit_code and len(err.splitlines()) == 1
    assert err.startswith("mien: error: --recogniser-critic latent") and "reinstall mien" in err


def edit_states(critic: str, monkeypatch, **given) -> tuple[list[torch.Tensor], list[str]]:
    """The states of a stand-in 25-step FlowEdit's guided window (each step a fixed random move, then the guide) and
    which critic scored each guided step ("reader" or "decoded"), with a tiny random reader."""
    from mien.guidance.gradient import guided_times

    torch.manual_seed(0)
    reader = Counting(LR.LatentReader(TINY).eval().requires_grad_(False))
    monkeypatch.setattr(LR, "load_reader", lambda device: reader)
    ctx, decode = context(critic, **given)
    guide = RecogniserGuidance().correction(ctx)
    assert len(guided_times(ctx.settings.steps, 1.0, 0.3)) == 7  # the last 7 of 25 steps, t <= 0.3
    states, who = walk_guided_window(guide, ctx.settings.steps, ctx.settings.strength, reader, decode)
    return states, who


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_hybrid_takes_the_reader_early_and_the_decoded_face_on_the_last_steps(precision, monkeypatch):
    states, who = edit_states("hybrid", monkeypatch, recogniser_decoded_steps=2, critic_precision=precision)
    assert who == ["reader"] * 5 + ["decoded"] * 2
    latent, _ = edit_states("latent", monkeypatch, critic_precision=precision)
    decoded, _ = edit_states("decoded", monkeypatch, critic_precision=precision)
    assert all(torch.equal(a, b) for a, b in zip(states[:-2], latent[:-2]))  # the same as latent up to the switch
    assert not torch.equal(states[-1], latent[-1]) and not torch.equal(states[-1], decoded[-1])


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_hybrid_at_its_ends_is_the_latent_or_the_decoded_critic_bit_for_bit(precision, monkeypatch):
    latent, _ = edit_states("latent", monkeypatch, critic_precision=precision)
    decoded, _ = edit_states("decoded", monkeypatch, critic_precision=precision)
    none, who = edit_states("hybrid", monkeypatch, recogniser_decoded_steps=0, critic_precision=precision)
    assert who == ["reader"] * 7 and all(torch.equal(a, b) for a, b in zip(none, latent))
    for n in (7, 25):  # every guided step, or more than there are
        every, who = edit_states("hybrid", monkeypatch, recogniser_decoded_steps=n, critic_precision=precision)
        assert who == ["decoded"] * 7 and all(torch.equal(a, b) for a, b in zip(every, decoded))


@pytest.mark.parametrize("value", [-1, 1.5, "2"])
def test_a_bad_number_of_decoded_steps_is_a_one_line_error(value):
    with pytest.raises(MienError) as e:
        GenerationSettings(recogniser_critic="hybrid", recogniser_decoded_steps=value)
    assert str(e.value).startswith(f"--recogniser-decoded-steps {value} is out of range") and "\n" not in str(e.value)


def test_the_cli_takes_the_hybrid_critic_and_its_steps(capsys):
    from mien.cli.main import main

    with pytest.raises(SystemExit):
        main(["generate", "--help"])
    out = capsys.readouterr().out
    assert "hybrid" in out and "--recogniser-decoded-steps N" in out
