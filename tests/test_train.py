"""Training of the built-in model: data invariants, loss, the loop's checkpoint/resume (CPU, tiny)."""

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from mien.builtin import FlowMatchingLoss, ModelConfig, TrainConfig
from mien.builtin.config import EXPRESSION_DIM, IDENTITY_DIM
from mien.errors import MienError
from mien.train.data import EXPRESSION_NAMES, FaceLatentDataset, TrainTensors, mirror_expression
from mien.train.loop import train


@pytest.fixture(autouse=True)
def one_thread():
    # tiny models gain nothing from 2 threads, and on a busy 2-core machine OpenMP's barriers make
    # 2-thread steps up to 50x slower (measured: 0.1 s vs 7 s per step)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def toy_tensors(n=16, seed=0, offset=0.0) -> TrainTensors:
    """n latents on a 2-D subspace plus ``offset``; 4 photos per person."""
    g = torch.Generator().manual_seed(seed)
    patterns = torch.randn(2, 32, 16, 16, generator=g)
    coef = torch.randn(n, 2, generator=g)
    people = np.arange(n) // 4
    mask = torch.ones(n, 1, 16, 16)
    mask[:, :, :, :2] = 0  # a filled border column: excluded from the loss
    return TrainTensors(
        latents=(0.5 * torch.einsum("nk,kchw->nchw", coef, patterns) + offset).half(),
        mask=mask.half(),
        identity=torch.randn(n, IDENTITY_DIM, generator=g).half(),
        expression=torch.rand(n, EXPRESSION_DIM, generator=g).half(),
        ref_candidates=[np.flatnonzero((people == people[i]) & (np.arange(n) != i)) for i in range(n)],
    )


def test_mirror_swaps_left_right_and_pose_signs_and_is_an_involution():
    names = list(EXPRESSION_NAMES)
    x = torch.zeros(EXPRESSION_DIM)
    x[names.index("mouthSmileLeft")] = 0.9
    x[names.index("jawOpen")] = 0.5
    x[names.index("yaw")], x[names.index("pitch")], x[names.index("roll")] = 0.3, 0.2, -0.1
    m = mirror_expression(x)
    assert m[names.index("mouthSmileRight")] == pytest.approx(0.9) and m[names.index("mouthSmileLeft")] == 0
    assert m[names.index("jawOpen")] == pytest.approx(0.5)
    assert m[names.index("yaw")] == pytest.approx(-0.3) and m[names.index("roll")] == pytest.approx(0.1)
    assert m[names.index("pitch")] == pytest.approx(0.2)
    batch = torch.rand(5, EXPRESSION_DIM)
    assert torch.equal(mirror_expression(mirror_expression(batch)), batch)


def test_identity_comes_from_another_photo_of_the_same_person_and_batches_repeat():
    tensors = toy_tensors()
    data = FaceLatentDataset(tensors, seed=3)
    ref, _, _ = data.plan(0)
    assert all(int(ref[i]) in tensors.ref_candidates[i] for i in range(len(data)))
    idx = torch.arange(8)
    a, b = data.batch(idx, epoch=0), FaceLatentDataset(tensors, seed=3).batch(idx, epoch=0)
    assert torch.equal(a["cond"]["identity"], b["cond"]["identity"])
    assert torch.equal(a["cond"]["identity"], tensors.identity[ref[:8]].float())
    with pytest.raises(MienError, match="latents_mirrored"):
        FaceLatentDataset(tensors, flip_prob=0.5)


def test_mirroring_uses_the_mirrored_photos_latents_mask_and_expression():
    tensors = toy_tensors()
    tensors.latents_mirrored = -tensors.latents  # any stand-in for the mirrored photos' latents
    item = FaceLatentDataset(tensors, flip_prob=1.0).batch(torch.arange(4), epoch=0)
    assert torch.equal(item["latents"], -tensors.latents[:4].float())
    assert torch.equal(item["mask"], tensors.mask[:4].float().flip(-1))
    assert torch.equal(item["cond"]["expression"], mirror_expression(tensors.expression[:4].float()))


def test_mask_of_ones_equals_the_unmasked_loss():
    model = lambda x, t, cond, null=None: x * 0.5  # noqa: E731
    x0 = torch.randn(4, 32, 16, 16)
    loss = FlowMatchingLoss()
    torch.manual_seed(0)
    masked = loss(model, x0, {}, torch.ones(4, 1, 16, 16))
    torch.manual_seed(0)
    assert masked == pytest.approx(loss(model, x0, {}).item(), rel=1e-6)


def _configs(steps, stats=None, **kw):
    mean, std = (None, None) if stats is None else ([stats[0]] * 32, [stats[1]] * 32)
    model_cfg = ModelConfig.from_preset("tiny", latent_mean=mean, latent_std=std)
    return model_cfg, TrainConfig(steps=steps, batch_size=8, lr=2e-3, warmup_steps=0, ema_decay=0.9, bf16=False,
                                  log_every=1, checkpoint_every=1000, **{"flip_prob": 0.0, **kw})  # fmt: skip


def _losses(run: Path) -> list[float]:
    with open(run / "loss.csv") as f:
        return [float(r["loss"]) for r in csv.DictReader(f)]


def test_loss_falls_on_a_toy_set(tmp_path):
    # latents offset by 2 and left unnormalised: an error the first steps can remove (initial loss ~5)
    final = train(*_configs(30, stats=(0.0, 1.0)), toy_tensors(offset=2.0), tmp_path)
    losses = _losses(tmp_path)
    assert len(losses) == 30 and np.mean(losses[-5:]) < 0.6 * np.mean(losses[:5])
    assert (final / "model.safetensors").is_file() and (tmp_path / "loss.png").is_file()


def test_resume_reproduces_the_uninterrupted_run(tmp_path):
    tensors = toy_tensors()
    train(*_configs(6), tensors, tmp_path / "whole")
    assert train(*_configs(6), tensors, tmp_path / "split", stop_after=3) == tmp_path / "split"
    assert torch.load(tmp_path / "split" / "checkpoint.pt", weights_only=True)["step"] == 3
    train(*_configs(6), tensors, tmp_path / "split")
    whole = torch.load(tmp_path / "whole" / "checkpoint.pt", weights_only=True)
    split = torch.load(tmp_path / "split" / "checkpoint.pt", weights_only=True)
    assert split["step"] == whole["step"] == 6
    for key, value in whole["model"].items():
        assert torch.equal(split["model"][key], value), key
    for a, b in zip(whole["ema"]["shadow_params"], split["ema"]["shadow_params"]):
        assert torch.equal(a, b)
    assert _losses(tmp_path / "whole") == _losses(tmp_path / "split")


def test_time_budget_checkpoints_and_stops(tmp_path):
    out = train(*_configs(50), toy_tensors(), tmp_path, time_budget_s=0.0)
    assert out == tmp_path and not (tmp_path / "model").exists()
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["step"] == 1


def test_spatial_reference_is_another_photo_mirrored_with_the_sample_and_zero_for_single_photos():
    tensors = toy_tensors()
    tensors.latents_mirrored = -tensors.latents
    tensors.ref_candidates[5] = np.array([5])  # a person with one photo: the loader's self-reference
    data = FaceLatentDataset(tensors, seed=1, flip_prob=0.5, reference=True)
    ref, flip, _ = data.plan(0)
    assert data.plan(0)[2].sum() == 0  # no own-latent references unless asked for
    item = data.batch(torch.arange(8), epoch=0)
    for i in range(8):
        got = item["cond"]["reference"][i]
        if i == 5:
            assert torch.count_nonzero(got) == 0  # its own latent would teach copying, expression included
        else:
            want = (tensors.latents_mirrored if flip[i] else tensors.latents)[ref[i]].float()
            assert int(ref[i]) != i and torch.equal(got, want)
    assert "reference" not in FaceLatentDataset(tensors, seed=1).batch(torch.arange(4), epoch=0)["cond"]


def test_self_reference_is_the_samples_own_mirrored_latent_and_leaves_the_rest_of_the_plan_alone():
    tensors = toy_tensors()
    tensors.latents_mirrored = -tensors.latents
    tensors.ref_candidates[5] = np.array([5])  # one photo: now it gets its own latent when drawn
    plain = FaceLatentDataset(tensors, seed=3, flip_prob=0.5, reference=True)
    mixed = FaceLatentDataset(tensors, seed=3, flip_prob=0.5, reference=True, self_reference=0.5)
    (ref0, flip0, _), (ref, flip, own) = plain.plan(2), mixed.plan(2)
    assert torch.equal(flip0, flip) and 0 < int(own.sum()) < len(own)
    assert torch.equal(ref[~own], ref0[~own])  # the other samples keep their draws (resumed runs agree)
    item = mixed.batch(torch.arange(16), epoch=2)
    for i in range(16):
        got = item["cond"]["reference"][i]
        if own[i]:
            want = (tensors.latents_mirrored if flip[i] else tensors.latents)[i].float()
            assert torch.equal(got, want) and torch.equal(got, item["latents"][i])  # aligned with the target
            assert torch.equal(item["cond"]["identity"][i], tensors.identity[i].float())  # as at inference
        elif i == 5:
            assert torch.count_nonzero(got) == 0
    with pytest.raises(MienError, match="chance"):
        FaceLatentDataset(tensors, reference=True, self_reference=1.5)


def test_self_reference_needs_a_pooled_reference_model(tmp_path):
    cfg = TrainConfig(steps=1, batch_size=8, bf16=False, self_reference=0.5, flip_prob=0.0)  # toy tensors: not mirrored
    with pytest.raises(MienError, match="reference_pool"):
        train(ModelConfig.from_preset("tiny", reference=True), cfg, toy_tensors(), tmp_path)
    out = train(ModelConfig.from_preset("tiny", reference=True, reference_pool=4), cfg, toy_tensors(), tmp_path / "ok")
    from mien.builtin import MienModel

    assert MienModel.from_pretrained(out).config.reference_pool == 4  # saved beside the weights


def test_a_reference_model_trains_and_its_loss_falls(tmp_path):
    tensors = toy_tensors(n=32)
    model_cfg = ModelConfig.from_preset("tiny", reference=True)
    cfg = TrainConfig(steps=40, batch_size=8, lr=3e-3, warmup_steps=1, log_every=10, checkpoint_every=100,
                      flip_prob=0.0)
    out = train(model_cfg, cfg, tensors, tmp_path / "run")
    rows = list(csv.DictReader(open(tmp_path / "run" / "loss.csv")))
    assert float(rows[-1]["loss"]) < float(rows[0]["loss"])
    from mien.builtin import MienModel

    assert MienModel.from_pretrained(out).config.reference
