"""Consistency feedback in training (mien.train.loss_consistency), on a tiny random model and tiny random
judges: each loss's gradient reaches the denoiser, dropped streams get none, and with zero weights the
training run is today's bit for bit."""

import csv

import numpy as np
import pytest
import torch
from torch import nn

from mien.builtin import FlowMatchingLoss, MienModel, ModelConfig, TrainConfig
from mien.builtin.config import EXPRESSION_DIM, IDENTITY_DIM
from mien.train.data import FaceLatentDataset, TrainTensors
from mien.train.loop import train
from mien.train.loss_consistency import ConsistencyFeedback, FeedbackNets, feedback_step

EMBED_DIM = 8


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_nets(seed=0) -> FeedbackNets:
    """Random stand-ins with the real nets' shapes: latents -> 128 px RGB -> 52 scores / unit embeddings."""
    torch.manual_seed(seed)
    decoder = nn.Sequential(nn.Conv2d(32, 3, 3, padding=1), nn.Upsample(scale_factor=8), nn.Sigmoid())
    scores = nn.Sequential(nn.AvgPool2d(16), nn.Flatten(), nn.Linear(3 * 8 * 8, 52), nn.Sigmoid())
    embedder = nn.Sequential(nn.AvgPool2d(16), nn.Flatten(), nn.Linear(3 * 8 * 8, EMBED_DIM))
    for m in (decoder, scores, embedder):
        m.requires_grad_(False)
    return FeedbackNets(decode=decoder, blendshapes=scores,
                        embed=lambda rgb: torch.nn.functional.normalize(embedder(rgb), dim=1))  # fmt: skip


def tensors(n=16, seed=0, embeddings=True) -> TrainTensors:
    g = torch.Generator().manual_seed(seed)
    people = np.arange(n) // 4
    emb = torch.nn.functional.normalize(torch.randn(n, EMBED_DIM, generator=g), dim=1)
    return TrainTensors(
        latents=torch.randn(n, 32, 16, 16, generator=g).half(),
        mask=torch.ones(n, 1, 16, 16).half(),
        identity=torch.randn(n, IDENTITY_DIM, generator=g).half(),
        expression=torch.rand(n, EXPRESSION_DIM, generator=g).half(),
        ref_candidates=[np.flatnonzero((people == people[i]) & (np.arange(n) != i)) for i in range(n)],
        embedding=emb.half() if embeddings else None,
    )


def tiny_model() -> MienModel:
    torch.manual_seed(0)
    model = MienModel(ModelConfig.from_preset("tiny", latent_mean=[0.0] * 32, latent_std=[1.0] * 32))
    # the tiny preset zero-initialises its stream outputs; random ones let the condition reach the output
    for p in model.stream_kv.parameters():
        nn.init.normal_(p, std=0.1)
    return model.train()


def _denoiser_grad(feedback: ConsistencyFeedback, name: str, null_all: bool = False) -> torch.Tensor:
    model = tiny_model()
    batch = FaceLatentDataset(tensors()).batch(torch.arange(8), epoch=0)
    null = {"expression": torch.ones(8, dtype=torch.bool), "identity": torch.ones(8, dtype=torch.bool)} if null_all else None
    torch.manual_seed(1)
    _, parts = feedback_step(FlowMatchingLoss("uniform"), model, model, feedback, batch, null)
    # the step's own parts are detached: recompute the named loss with gradients
    torch.manual_seed(1)
    x0 = model.normalize(batch["latents"])
    null = model.dropout_null(null, 8)
    _, t, x_t, v = FlowMatchingLoss("uniform").parts(model, x0, batch["cond"], batch["mask"], null, dropout=False)
    losses = feedback.losses(model, x_t, t, v, batch["cond"], null, batch["identity_target"])
    assert torch.isclose(losses[name].detach(), parts[name])
    model.zero_grad()
    losses[name].backward()
    return torch.cat([p.grad.flatten() for p in model.unet.parameters() if p.grad is not None])


@pytest.mark.parametrize("name", ["expression", "identity"])
def test_each_consistency_loss_has_a_gradient_that_reaches_the_denoiser(name):
    weights = {"expression_weight": 1.0 if name == "expression" else 0.0,
               "identity_weight": 1.0 if name == "identity" else 0.0}  # fmt: skip
    feedback = ConsistencyFeedback(tiny_nets(), t_max=1.0, samples=8, **weights)
    grad = _denoiser_grad(feedback, name)
    assert torch.isfinite(grad).all() and grad.abs().max() > 0
    # the UNet's first convolution (far from the output) is reached too
    model = tiny_model()
    assert model.unet.conv_in.weight.requires_grad


@pytest.mark.parametrize("name", ["expression", "identity"])
def test_samples_whose_stream_was_dropped_or_too_noisy_get_no_feedback(name):
    weights = {"expression_weight": 1.0, "identity_weight": 1.0}
    dropped = _denoiser_grad(ConsistencyFeedback(tiny_nets(), t_max=1.0, samples=8, **weights), name, null_all=True)
    noisy = _denoiser_grad(ConsistencyFeedback(tiny_nets(), t_max=0.0, samples=8, **weights), name)
    assert dropped.abs().max() == 0 and noisy.abs().max() == 0


def test_the_expression_loss_is_zero_when_the_prediction_shows_the_conditioning_blendshapes():
    nets = tiny_nets()
    model = tiny_model()
    x_t, t, v = torch.randn(4, 32, 16, 16), torch.full((4,), 0.2), torch.randn(4, 32, 16, 16)
    shown = nets.blendshapes(nets.decode(model.denormalize(x_t - 0.2 * v)))
    cond = {"expression": torch.cat([shown, torch.zeros(4, 3)], 1)}
    fb = ConsistencyFeedback(nets, expression_weight=1.0, t_max=0.5, samples=4)
    assert fb.losses(model, x_t, t, v, cond, {})["expression"].item() == pytest.approx(0.0, abs=1e-10)
    cond["expression"][:, 10] += 0.5  # one blendshape off by 0.5 on every sample: loss 0.25
    assert fb.losses(model, x_t, t, v, cond, {})["expression"].item() == pytest.approx(0.25, rel=1e-5)


def _configs(**kw):
    model_cfg = ModelConfig.from_preset("tiny", latent_mean=[0.0] * 32, latent_std=[1.0] * 32)
    return model_cfg, TrainConfig(steps=4, batch_size=8, lr=2e-3, warmup_steps=0, ema_decay=0.9, bf16=False,
                                  log_every=1, checkpoint_every=1000, **{"flip_prob": 0.0, **kw})  # fmt: skip


def test_with_zero_weights_the_training_run_is_todays_bit_for_bit(tmp_path):
    data = tensors()
    train(*_configs(), tensors(embeddings=False), tmp_path / "today")
    train(*_configs(expression_weight=0.0, identity_weight=0.0), data, tmp_path / "zero", feedback_nets=tiny_nets())
    train(*_configs(expression_weight=1.0, identity_weight=1.0, feedback_t_max=1.0), data, tmp_path / "on",
          feedback_nets=tiny_nets())  # fmt: skip
    ckpt = {k: torch.load(tmp_path / k / "checkpoint.pt", weights_only=True) for k in ("today", "zero", "on")}
    for key, value in ckpt["today"]["model"].items():
        assert torch.equal(ckpt["zero"]["model"][key], value), key
    assert any(not torch.equal(ckpt["on"]["model"][k], v) for k, v in ckpt["today"]["model"].items())
    with open(tmp_path / "today" / "loss.csv") as f:
        assert "expression" not in next(csv.reader(f))
    with open(tmp_path / "on" / "loss.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4 and all(float(r["expression"]) > 0 and 0 < float(r["identity"]) < 2 for r in rows)


def test_batches_carry_the_identity_photos_embedding_mirrored_with_the_sample():
    data = tensors()
    data.latents_mirrored = -data.latents
    data.embedding_mirrored = -data.embedding
    ds = FaceLatentDataset(data, seed=2, flip_prob=0.5)
    ref, flip, _ = ds.plan(0)
    batch = ds.batch(torch.arange(16), 0)
    want = torch.where(flip.view(-1, 1), -data.embedding[ref].float(), data.embedding[ref].float())
    assert torch.equal(batch["identity_target"], want) and flip.any() and (~flip).any()


@pytest.mark.shared
def test_the_real_judges_pass_gradients_from_a_face_to_the_denoiser(shared_dir, example_crop):
    """TAEF2 + MediaPipe's mesh and blendshapes + MobileFaceNet, as training loads them: on the example
    photo's own latent (t = 0, prediction = the photo) both losses are small, and they grow when the
    conditioning expression and identity belong to someone else."""
    from mien.models.taef2 import TAEF2
    from mien.train.loss_consistency import load_feedback_nets

    nets = load_feedback_nets("cpu")
    taef2 = TAEF2.from_weights()
    rgb = example_crop  # (1, 3, 128, 128) in [0, 1]
    with torch.no_grad():
        z = taef2.encode(rgb)
        shown, own = nets.blendshapes(rgb), nets.embed(rgb)
    model = tiny_model()
    x_t = model.normalize(z).requires_grad_(True)
    fb = ConsistencyFeedback(nets, expression_weight=1.0, identity_weight=1.0, t_max=0.5, samples=1)
    v, t = torch.zeros_like(x_t), torch.zeros(1)
    cond = {"expression": torch.cat([shown, torch.zeros(1, 3)], 1)}
    same = fb.losses(model, x_t, t, v, cond, {}, own)
    assert same["expression"].item() < 0.05 and same["identity"].item() < 0.1
    other_cond = {"expression": torch.cat([1 - shown, torch.zeros(1, 3)], 1)}
    other = fb.losses(model, x_t, t, v, other_cond, {}, -own)
    assert other["expression"] > 10 * same["expression"] and other["identity"].item() > 1.5
    (grad,) = torch.autograd.grad(other["expression"] + other["identity"], x_t)
    assert torch.isfinite(grad).all() and grad.abs().max() > 0


def _other_batch(same: bool, ok: bool = True):
    batch = FaceLatentDataset(tensors(), other_photo=True).batch(torch.arange(8), epoch=0)
    if same:  # "another photo" that is the training photo itself, judged against the same embedding as today
        batch["other_latents"] = batch["latents"].clone()
        batch["own_identity_target"] = batch["identity_target"].clone()
    batch["other_ok"] = torch.full((8,), ok)
    return batch


def _losses(start: str, batch: dict, grad: bool = False):
    model = tiny_model()
    feedback = ConsistencyFeedback(tiny_nets(), 1.0, 1.0, t_max=1.0, samples=8, start=start)
    torch.manual_seed(1)
    x0 = model.normalize(batch["latents"])
    null = model.dropout_null(None, 8)
    flow, t, x_t, v = FlowMatchingLoss("uniform").parts(model, x0, batch["cond"], batch["mask"], null, dropout=False)
    if start == "other":
        from mien.train.loss_consistency import _from_other_photo

        losses = _from_other_photo(model, model, feedback, batch, null, x0, t, x_t)
    else:
        losses = feedback.losses(model, x_t, t, v, batch["cond"], null, batch["identity_target"])
    if not grad:
        return losses
    model.zero_grad()
    feedback.weighted(losses).backward()
    return torch.cat([p.grad.flatten() for p in model.unet.parameters() if p.grad is not None])


def test_starting_from_the_training_photo_itself_gives_todays_losses():
    batch = _other_batch(same=True)
    today, other = _losses("photo", batch), _losses("other", batch)
    for name in ("expression", "identity"):
        assert torch.allclose(today[name], other[name], rtol=1e-4, atol=1e-6), name


def test_starting_from_another_photo_changes_the_losses_and_reaches_the_denoiser():
    batch = _other_batch(same=False)
    today, other = _losses("photo", batch), _losses("other", batch)
    assert not torch.allclose(today["expression"], other["expression"])
    grad = _losses("other", batch, grad=True)
    assert torch.isfinite(grad).all() and grad.abs().max() > 0


def test_samples_with_no_other_photo_get_no_feedback_from_another_photo():
    grad = _losses("other", _other_batch(same=False, ok=False), grad=True)
    assert grad.abs().max() == 0


def test_the_dataset_marks_samples_whose_identity_photo_is_their_own():
    data = tensors()
    data.ref_candidates[0] = np.array([], dtype=np.int64)  # sample 0: no other photo of the person
    batch = FaceLatentDataset(data, other_photo=True).batch(torch.arange(4), 0)
    assert not batch["other_ok"][0] and batch["other_ok"][1:].all()
    assert not torch.equal(batch["other_latents"][1], batch["latents"][1])
    assert torch.equal(batch["own_identity_target"], data.embedding[:4].float())  # no flip: each sample's own
    assert not torch.equal(batch["identity_target"][1], batch["own_identity_target"][1])


def test_a_training_run_from_another_photo_logs_its_losses_and_an_unknown_start_is_refused(tmp_path):
    from mien.errors import MienError

    train(*_configs(expression_weight=1.0, identity_weight=1.0, feedback_t_max=1.0, feedback_start="other"),
          tensors(), tmp_path / "other", feedback_nets=tiny_nets())  # fmt: skip
    with open(tmp_path / "other" / "loss.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4 and all(float(r["expression"]) > 0 for r in rows)
    with pytest.raises(MienError, match="feedback_start"):
        train(*_configs(feedback_start="elsewhere"), tensors(), tmp_path / "bad", feedback_nets=tiny_nets())
