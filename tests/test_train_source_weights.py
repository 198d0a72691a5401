"""Per-source sampling weights (TrainConfig.source_weights, mien train --source-weight): a source of weight w
is drawn w times as often per epoch; all weights 1 draw today's batches bit for bit."""

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from mien.builtin import TrainConfig
from mien.cli.main import main
from mien.errors import MienError
from mien.data.faces128 import key_sources
from mien.train.data import SourceDraw
from mien.train.latents import chunk_sources
from mien.train.loop import _batch_indices

ONE = SimpleNamespace(num_processes=1, process_index=0, print=lambda *a: None)
# a tiny pack's keys: 12 CFP, 6 Taiwanese, 6 LAG photos
KEYS = [f"cfp_{i:03d}_1" for i in range(12)] + [f"tw_{i:02d}_smile" for i in range(6)] + [f"lag_x_{i}" for i in range(6)]
SOURCE = key_sources(KEYS)


def todays(n, cfg, step):
    """The batch indices of `_batch_indices` before source weights (its code, kept here as the reference)."""
    per_epoch = n // cfg.batch_size
    epoch, pos = divmod(step, per_epoch)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch))
    return epoch, perm[pos * cfg.batch_size : (pos + 1) * cfg.batch_size]


def drawn(weights, steps, batch=4, seed=3):
    cfg = TrainConfig(batch_size=batch, seed=seed, source_weights=weights)
    batches = _batch_indices(len(SOURCE), cfg, ONE, SOURCE)
    return [batches(s) for s in range(steps)]


def test_sources_are_the_keys_prefixes():
    assert sorted(set(SOURCE)) == ["cfp", "lag", "tw"]
    assert list(key_sources(["celeba_024819", "tw_05_angry_2"])) == ["celeba", "tw"]


@pytest.mark.parametrize("weights", [{}, {"tw": 1, "cfp": 1.0}, {"taiwanese": 1}])
def test_every_weight_1_gives_todays_indices(weights):
    cfg = TrainConfig(batch_size=4, seed=3)
    for step, (epoch, idx) in enumerate(drawn(weights, 20)):
        ref_epoch, ref = todays(len(SOURCE), cfg, step)
        assert epoch == ref_epoch and torch.equal(idx, ref)
    assert SourceDraw.of(SOURCE, weights) is None


def test_weight_0_leaves_a_source_out():
    seen = np.concatenate([idx.numpy() for _, idx in drawn({"tw": 0}, 40)])
    assert not set(SOURCE[seen]) & {"tw"} and set(SOURCE[seen]) == {"cfp", "lag"}


def test_weight_3_triples_a_sources_share():
    draw = SourceDraw(SOURCE, {"tw": 3})
    assert draw.size == 12 + 18 + 6 and draw.draws() == {"cfp": 12, "lag": 6, "tw": 18}
    seen = np.concatenate([idx.numpy() for _, idx in drawn({"tw": 3}, 90)])  # 10 epochs of 9 batches
    share = np.mean(SOURCE[seen] == "tw")
    assert share == pytest.approx(18 / 36) and np.mean(SOURCE[seen] == "lag") == pytest.approx(6 / 36)
    # each Taiwanese photo three times per epoch, the others once
    first = np.concatenate([idx.numpy() for _, idx in drawn({"tw": 3}, 9)])
    assert np.array_equal(np.bincount(first, minlength=24), np.where(SOURCE == "tw", 3, 1))


def test_a_fractional_weight_draws_that_share_of_the_photos_afresh_each_epoch():
    draw = SourceDraw(SOURCE, {"cfp": 0.5, "tw": 2.5}, seed=1)
    assert draw.size == 6 + 6 + 15 and draw.draws() == {"cfp": 6, "lag": 6, "tw": 15}
    epochs = [draw.samples(e) for e in range(4)]
    assert all(len(e) == draw.size for e in epochs)
    cfp = [frozenset(e[SOURCE[e] == "cfp"]) for e in epochs]
    assert all(len(c) == 6 for c in cfp) and len(set(cfp)) > 1  # six distinct photos, not always the same six
    assert np.array_equal(draw.samples(2), SourceDraw(SOURCE, {"cfp": 0.5, "tw": 2.5}, seed=1).samples(2))


def test_an_unknown_source_is_a_one_line_error_naming_the_known_ones():
    with pytest.raises(MienError) as e:
        SourceDraw.of(SOURCE, {"london": 4})
    assert "\n" not in str(e.value) and "london=4" in str(e.value) and "cfp, lag, tw" in str(e.value)
    with pytest.raises(MienError, match="its sources are cfp, lag, tw"):
        SourceDraw.of(SOURCE, {"tww": 1})  # checked at weight 1 too
    with pytest.raises(MienError, match="pack's keys"):
        SourceDraw.of(None, {"tw": 2})
    with pytest.raises(MienError, match="larger than the 6"):
        drawn({"cfp": 0, "lag": 0}, 1, batch=8)
    for bad in ({"tw": -1}, {"tw": float("nan")}, {"tw": "4"}):
        with pytest.raises(MienError, match="must be a number >= 0"):
            TrainConfig(source_weights=bad)


def test_chunk_sources_read_the_keys_in_chunk_order(tmp_path):
    for i, keys in enumerate((KEYS[:10], KEYS[10:])):
        np.savez(tmp_path / f"chunk-0{i}.npz", key=np.array(keys))
    assert list(chunk_sources([tmp_path / "chunk-00.npz", tmp_path / "chunk-01.npz"])) == list(SOURCE)


def test_the_flag_is_repeatable_and_refuses_bad_input_in_one_line(tmp_path, capsys):
    cfg = tmp_path / "train_config.json"
    cfg.write_text(json.dumps({"source_weights": {"cfp": 2, "lag": 0.5}}))
    assert main(["train", "--train-config", str(cfg), "--source-weight", "tw=4", "--source-weight", "cfp=0",
                 "--dry-run"]) == 0  # fmt: skip
    assert json.loads(capsys.readouterr().out)["train"]["source_weights"] == {"cfp": 0.0, "lag": 0.5, "tw": 4.0}
    with pytest.raises(SystemExit):
        main(["train", "--source-weight", "tw", "--dry-run"])
    assert "NAME=NUMBER" in capsys.readouterr().err
    assert main(["train", "--source-weight", "tw=-1", "--dry-run"]) == 2
    assert main(["train", "--preset", "tiny", "--synthetic", "16", "--source-weight", "tw=2", "--out",
                 str(tmp_path / "r")]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert "tw=-1" in err and "pack's keys" in err and not (tmp_path / "r").exists()
