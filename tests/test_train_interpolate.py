"""`mien train interpolate`: the model between a base and its fine-tune, on tiny random models."""

import json

import pytest
import torch

from mien.builtin.config import ModelConfig
from mien.builtin.model import MienModel
from mien.errors import MienError
from mien.cli.main import main
from mien.train.interpolate import interpolate


def _saved(path, seed: int, **overrides):
    torch.manual_seed(seed)
    MienModel(ModelConfig.from_preset("tiny", **overrides)).save_pretrained(path)
    return path


def _weights(path) -> dict:
    return MienModel.from_pretrained(path).state_dict()


@pytest.fixture
def pair(tmp_path):
    return _saved(tmp_path / "base", 0), _saved(tmp_path / "tuned", 1)


def test_the_ends_are_the_two_models_and_the_middle_lies_between(pair, tmp_path):
    base, tuned = pair
    b, t = _weights(base), _weights(tuned)
    interpolate(base, tuned, 0.0, tmp_path / "a0")
    assert all(torch.equal(v, b[k]) for k, v in _weights(tmp_path / "a0").items())
    interpolate(base, tuned, 1.0, tmp_path / "a1")
    assert all(torch.allclose(v, t[k], rtol=1e-3, atol=1e-4) for k, v in _weights(tmp_path / "a1").items())
    record = interpolate(base, tuned, 0.25, tmp_path / "q")
    q = _weights(tmp_path / "q")
    moved = [k for k in q if not torch.equal(b[k], t[k])]
    assert moved  # the two random models differ
    for k in moved:  # a quarter of the way, up to fp16 rounding
        assert torch.allclose(q[k], b[k] + 0.25 * (t[k] - b[k]), rtol=2e-3, atol=2e-4)
    assert json.loads((tmp_path / "q" / "interpolation.json").read_text()) == record
    MienModel.from_pretrained(tmp_path / "q")  # a complete model folder


def test_models_of_different_configs_are_refused_in_one_line(tmp_path, capsys):
    base = _saved(tmp_path / "base", 0)
    other = _saved(tmp_path / "other", 1, reference=True)
    assert main(["train", "interpolate", str(base), str(other), "--alpha", "0.5", "--out", str(tmp_path / "o")]) != 0
    err = capsys.readouterr().err.strip()
    assert "configs differ" in err and "\n" not in err and not (tmp_path / "o").exists()


def test_alpha_outside_the_segment_is_refused(pair, tmp_path, capsys):
    assert main(["train", "interpolate", *map(str, pair), "--alpha", "1.5", "--out", str(tmp_path / "o")]) != 0
    assert "--alpha must lie in [0, 1]" in capsys.readouterr().err


def test_writing_over_one_of_the_models_is_refused(pair, capsys):
    base, tuned = pair
    before = (tuned / "model.safetensors").read_bytes()
    assert main(["train", "interpolate", str(base), str(tuned), "--alpha", "0.5", "--out", str(tuned)]) != 0
    assert "one of the two models" in capsys.readouterr().err
    assert (tuned / "model.safetensors").read_bytes() == before


def test_only_moves_the_named_part(pair, tmp_path):
    from mien.builtin.model import joined_state

    base, tuned = pair
    interpolate(base, tuned, 1.0, tmp_path / "u", only=("unet",))
    b, t, u = (joined_state(_weights(p)) for p in (base, tuned, tmp_path / "u"))
    assert all(torch.equal(u[k], b[k]) for k in u if not k.startswith("unet"))
    assert all(torch.allclose(u[k], t[k], rtol=1e-3, atol=1e-4) for k in u if k.startswith("unet"))
    assert any(not torch.equal(b[k], t[k]) for k in u if k.startswith("unet"))
    with pytest.raises(MienError, match="no weight name starts with it"):
        interpolate(base, tuned, 1.0, tmp_path / "x", only=("nothing",))

