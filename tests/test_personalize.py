"""Personalisation mechanics on tiny random components (CPU, seconds, no ../shared): the loss falls, the LoRA
at scale 0 or switched off is the base model, save/load round trip, resume equals the uninterrupted run,
the expression-crafting and identity losses reach the LoRA, a Stable-Diffusion-shaped UNet personalises, bad input."""

import dataclasses
import json

import numpy as np
import pytest
import torch
from conftest import tiny_components_pipeline
from test_backbone_adapter import sd_model

from mien import lora_rows
from mien.builtin import MienModel, ModelConfig
from mien.errors import MienError, NoFaceError
from mien.personalize import LossWeights, PersonalizeConfig, lora, train_person
from mien.personalize.losses import ExpressionLoss, FlowLoss, IdentityLoss, PersonTensors, Step, identity_target

SHA = "ab" * 32
PHOTOS = [{"name": "a.jpg", "sha256": "1" * 64}, {"name": "b.jpg", "sha256": "2" * 64}]


def tiny_model(seed: int = 0) -> MienModel:
    torch.manual_seed(seed)
    model = MienModel(ModelConfig.from_preset("tiny", reference=True)).eval()
    for p in model.adapter.stream_kv.parameters():  # zero-initialised stream values: wake them
        p.data.normal_(0, 0.5)
    model.sha256 = SHA
    return model


def person(shape=(32, 16, 16), n: int = 3, seed: int = 1) -> PersonTensors:
    g = torch.Generator().manual_seed(seed)
    # one face, three photos: a shared per-channel pattern (smooth over the grid) plus a little noise each
    ramp = torch.linspace(-1, 1, shape[1])
    pattern = 2 * torch.randn(shape[0], 1, 1, generator=g) + torch.randn(shape[0], 1, 1, generator=g) * ramp[:, None]
    lat = pattern + 0.1 * torch.randn(n, *shape, generator=g)
    feats = torch.zeros(n, 1, *shape[1:])
    feats[..., shape[1] // 4 : shape[1] // 2, 2:-2] = 1
    return PersonTensors(lat, lat.flip(-1) + 0.1, torch.ones(n, 1, *shape[1:]), feats, torch.rand(n, 55, generator=g),
                         torch.nn.functional.normalize(torch.randn(128, generator=g), dim=0))  # fmt: skip


def config(**kw) -> PersonalizeConfig:
    base = dict(steps=6, lr=1e-2, rank=4, alpha=4.0, prior_samples=4, prior_steps=2, checkpoint_every=2,
                losses=LossWeights(expression=0.0))  # fmt: skip
    return PersonalizeConfig(**{**base, **kw})


def held_out_loss(model, p: PersonTensors) -> float:
    """The flow loss on fixed draws (the same generator every call)."""
    with torch.no_grad():
        return float(FlowLoss()(Step(model, p, None, torch.Generator().manual_seed(123), 12, 0.0)))


def velocity(model, p: PersonTensors) -> torch.Tensor:
    g = torch.Generator().manual_seed(7)
    x = torch.randn(2, *model.backbone.latent_shape, generator=g)
    cond = {"identity": p.identity[None].expand(2, -1), "expression": p.expression[:2]}
    if model.backbone.config.reference:
        cond["reference"] = p.latents[1:3]
    with torch.no_grad():
        return model.velocity(x, torch.full((2,), 0.6), cond)


def test_loss_falls_and_lora_at_scale_0_or_off_equals_the_base_model(tmp_path):
    model, p = tiny_model(), person()
    base, before = velocity(model, p), held_out_loss(model, p)
    result = train_person(model, p, config(steps=15, lr=3e-2), tmp_path, base_sha256=SHA, photos=PHOTOS, progress=False)
    assert result.finished and held_out_loss(model, p) < 0.95 * before
    unet = model.backbone.unet
    assert (velocity(model, p) - base).abs().max() > 1e-3
    lora.set_scale(unet, 0.0)
    torch.testing.assert_close(velocity(model, p), base, rtol=0, atol=1e-6)
    lora.set_scale(unet, 1.0)
    lora.enable(unet, False)
    torch.testing.assert_close(velocity(model, p), base, rtol=0, atol=1e-6)
    again = train_person(tiny_model(), p, config(steps=15, lr=3e-2), tmp_path, base_sha256=SHA, photos=PHOTOS,
                         progress=False)  # fmt: skip
    assert again.finished and again.losses == []  # done already: nothing retrained
    card = json.loads((tmp_path / lora.CARD_NAME).read_text())
    assert card["base_model_sha256"] == SHA and card["photos"] == PHOTOS and card["steps_done"] == 15
    assert not (tmp_path / "checkpoint.pt").exists() and (tmp_path / lora.ADAPTER_CONFIG).is_file()


def test_saved_adapter_loads_into_a_fresh_model_and_gives_the_same_output(tmp_path):
    model, p = tiny_model(), person()
    train_person(model, p, config(), tmp_path, base_sha256=SHA, photos=PHOTOS, progress=False)
    trained = velocity(model, p)
    fresh = tiny_model()
    card = lora.load_person(fresh.backbone.unet, tmp_path, SHA)
    assert card["steps_done"] == 6
    torch.testing.assert_close(velocity(fresh, p), trained, rtol=0, atol=2e-3)  # saved in fp16
    with pytest.raises(MienError, match="personalised on base model abababababab, not this model cdcdcdcdcdcd"):
        lora.load_person(tiny_model().backbone.unet, tmp_path, "cd" * 32)


def test_a_resumed_run_ends_where_the_uninterrupted_one_does(tmp_path):
    p = person()
    whole = train_person(tiny_model(), p, config(), tmp_path / "whole", base_sha256=SHA, photos=PHOTOS, progress=False)
    cut = train_person(tiny_model(), p, config(), tmp_path / "cut", base_sha256=SHA, photos=PHOTOS, progress=False,
                       stop_after=3)  # fmt: skip
    assert not cut.finished and (tmp_path / "cut" / "checkpoint.pt").is_file()
    # killed after step 3: the last checkpoint is step 2's (checkpoint_every=2); the rerun starts from it
    resumed = train_person(tiny_model(), p, config(), tmp_path / "cut", base_sha256=SHA, photos=PHOTOS, progress=False)
    assert resumed.finished and resumed.losses[0]["step"] == 4
    from safetensors.torch import load_file

    a, b = (load_file(tmp_path / d / lora.ADAPTER_WEIGHTS) for d in ("whole", "cut"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert [r["total"] for r in whole.losses[3:]] == [r["total"] for r in resumed.losses]
    with pytest.raises(MienError, match="other photos, settings or base model"):
        train_person(tiny_model(), p, config(), tmp_path / "cut2", base_sha256=SHA, photos=PHOTOS, progress=False,
                     stop_after=2)  # fmt: skip
        train_person(tiny_model(), p, config(rank=2), tmp_path / "cut2", base_sha256=SHA, photos=PHOTOS, progress=False)


def test_a_time_budget_stops_with_a_usable_adapter(tmp_path):
    result = train_person(tiny_model(), person(), config(steps=10_000), tmp_path, base_sha256=SHA, photos=PHOTOS,
                          progress=False, time_budget_s=3.0)  # fmt: skip
    assert not result.finished and 0 < result.steps_done < 10_000
    lora.load_person(tiny_model().backbone.unet, tmp_path, SHA)  # usable as it stands
    assert (tmp_path / "checkpoint.pt").is_file()


def test_the_expression_crafting_loss_reaches_the_lora_weights():
    from mien.guidance.blendshape import latent_blendshapes

    pipe = tiny_components_pipeline()
    model = pipe.model
    params = lora.add_lora(model.backbone.unet, lora.lora_config(4, 4.0, ["to_q", "to_k", "to_v", "to_out.0"]))
    for p in params:  # peft starts B at zero, which leaves A without a gradient on the first step: move both
        p.data.normal_(0, 0.1)
    targets = torch.rand(7, 52, generator=torch.Generator().manual_seed(0))
    loss_fn = ExpressionLoss(latent_blendshapes(model, pipe.taef2, pipe.blendshape_net), targets, batch=2)
    loss = loss_fn(Step(model, person(), None, torch.Generator().manual_seed(0), 2, 0.5))
    loss.backward()
    grads = [p.grad for p in params]
    assert all(g is not None for g in grads) and sum(float(g.abs().sum()) for g in grads) > 0
    assert not any(p.grad is not None for p in pipe.taef2.parameters())  # the critic's nets stay frozen


def identity_nets(pipe):
    """The identity loss's nets on the tiny pipeline: its TAEF2 and MobileFaceNet stand-in, frozen as
    :func:`mien.personalize.run.identity_nets` freezes the real ones."""
    from mien.train.loss_consistency import FeedbackNets

    pipe.taef2.requires_grad_(False)
    pipe.identity.requires_grad_(False)
    return FeedbackNets(decode=lambda z: pipe.taef2.decode(z, clamp=False).clamp(0, 1),
                        embed=lambda rgb: pipe.identity.mobilefacenet_unit(rgb * 255))  # fmt: skip


def test_the_identity_loss_reaches_the_lora_weights_and_nothing_else():
    pipe = tiny_components_pipeline()
    model, nets, p = pipe.model, identity_nets(pipe), person()
    params = lora.add_lora(model.backbone.unet, lora.lora_config(4, 4.0, ["to_q", "to_k", "to_v", "to_out.0"]))
    for q in params:  # peft starts B at zero, which leaves A without a gradient on the first step: move both
        q.data.normal_(0, 0.1)
    target = identity_target(nets, p)
    assert target.shape == (192,) and abs(float(target.norm()) - 1) < 1e-5
    step = Step(model, p, None, torch.Generator().manual_seed(0), 4, 0.5)
    loss = IdentityLoss(nets, target, t_max=1.0)(step)  # every sample judged
    assert 0 < float(loss.detach()) < 2
    loss.backward()
    assert sum(float(q.grad.abs().sum()) for q in params if q.grad is not None) > 0
    lora_ids = {id(q) for q in params}
    base = [q for q in model.backbone.unet.parameters() if id(q) not in lora_ids]
    assert base and all(q.grad is None for q in base)  # the backbone stays frozen
    assert all(q.grad is None for q in [*pipe.taef2.parameters(), *pipe.identity.parameters()])  # so do the judges
    # only samples with little noise left count: none at t_max 0 gives 0 (and no gradient to follow)
    assert float(IdentityLoss(nets, target, t_max=0.0)(Step(model, p, None, torch.Generator().manual_seed(0), 4, 0.5)).detach()) == 0


def test_identity_weight_0_leaves_the_run_unchanged_and_a_weight_changes_only_the_lora(tmp_path):
    from safetensors.torch import load_file

    pipe, p = tiny_components_pipeline(), person()
    nets = identity_nets(pipe)

    def trained(name, weight, with_nets=True):
        model = tiny_model()
        base = {k: v.clone() for k, v in model.state_dict().items()}
        c = config(losses=LossWeights(expression=0.0, identity=weight), identity_t_max=0.9)
        res = train_person(model, p, c, tmp_path / name, base_sha256=SHA, photos=PHOTOS, progress=False,
                           identity_nets=nets if with_nets else None)  # fmt: skip
        after = {k: v for k, v in model.state_dict().items() if "lora_" not in k}
        assert all(torch.equal(base[k.replace(".base_layer", "")], v) for k, v in after.items())  # base unchanged
        return res, load_file(tmp_path / name / lora.ADAPTER_WEIGHTS)

    (off, a), (none, b), (on, c) = trained("off", 0.0), trained("none", 0.0, False), trained("on", 2.0)
    assert [r["total"] for r in off.losses] == [r["total"] for r in none.losses]
    assert all(torch.equal(a[k], b[k]) for k in a) and "identity" not in off.losses[0]
    assert all("identity" in r for r in on.losses)
    # the identity term shares the flow batch's draws: the flow loss of step 1 is the same, the weights are not
    assert on.losses[0]["flow"] == off.losses[0]["flow"]
    assert any(not torch.equal(a[k], c[k]) for k in a)


def test_the_edit_identity_loss_reaches_only_the_lora_and_leaves_the_other_terms_draws(tmp_path):
    from mien.personalize.losses import EditIdentityLoss
    from mien.personalize.prior import label_blendshapes

    pipe, p = tiny_components_pipeline(), person()
    nets, model = identity_nets(pipe), pipe.model
    params = lora.add_lora(model.backbone.unet, lora.lora_config(4, 4.0, ["to_q", "to_k", "to_v", "to_out.0"]))
    for q in params:  # B starts at zero (no gradient for A on the first step): move both
        q.data.normal_(0, 0.1)
    targets = torch.from_numpy(np.stack(list(label_blendshapes().values())))
    loss = EditIdentityLoss(nets, identity_target(nets, p), targets, 2)(Step(model, p, None, torch.Generator().manual_seed(0), 4, 0.5))
    assert 0 < float(loss.detach()) < 2
    loss.backward()
    assert sum(float(q.grad.abs().sum()) for q in params if q.grad is not None) > 0
    lora_ids = {id(q) for q in params}
    assert all(q.grad is None for q in model.backbone.unet.parameters() if id(q) not in lora_ids)
    assert all(q.grad is None for q in [*pipe.taef2.parameters(), *pipe.identity.parameters()])
    runs = {w: train_person(tiny_model(), p, config(steps=2, losses=LossWeights(expression=0.0, edit_identity=w)),
                            tmp_path / str(w), base_sha256=SHA, photos=PHOTOS, progress=False, identity_nets=nets)
            for w in (0.0, 1.0)}  # fmt: skip
    assert "edit_identity" in runs[1.0].losses[0] and "edit_identity" not in runs[0.0].losses[0]
    assert all(runs[1.0].losses[0][k] == runs[0.0].losses[0][k] for k in ("flow", "prior"))  # drawn last


def test_the_expression_gate_is_one_at_the_request_small_at_the_photo_s_expression_and_has_no_gradient():
    from mien.personalize.losses import expression_gate

    g = torch.Generator().manual_seed(0)
    goal, own = torch.rand(3, 52, generator=g), torch.rand(3, 52, generator=g)
    shown = goal.clone().requires_grad_(True)
    halfway = (goal + own) / 2
    gate = expression_gate(torch.cat([shown, own, halfway]), goal.repeat(3, 1), own.repeat(3, 1), width=0.25)
    torch.testing.assert_close(gate[:3], torch.ones(3))  # the request met: judged fully
    torch.testing.assert_close(gate[3:6], torch.full((3,), float(np.exp(-4.0))))  # the photo's expression kept
    torch.testing.assert_close(gate[6:], torch.full((3,), float(np.exp(-1.0))))  # half the way: d² is a quarter of d0²
    assert not gate.requires_grad  # no gradient through the gate: it cannot be lowered by undoing the edit


def test_the_gated_edit_identity_loss_ignores_a_prediction_far_from_the_request_and_weights_without_gradient():
    from mien.personalize.losses import EditIdentityLoss, requested_prediction
    from mien.personalize.prior import label_blendshapes

    pipe, p = tiny_components_pipeline(), person()
    nets, model = identity_nets(pipe), pipe.model
    params = lora.add_lora(model.backbone.unet, lora.lora_config(4, 4.0, ["to_q", "to_k", "to_v", "to_out.0"]))
    for q in params:
        q.data.normal_(0, 0.1)
    targets = torch.from_numpy(np.stack(list(label_blendshapes().values()))).float()
    # someone else's embedding: a loss near 1 per row, so a gradient through the gate would show
    dim = identity_target(nets, p).shape
    target = torch.nn.functional.normalize(torch.randn(dim, generator=torch.Generator().manual_seed(5)), dim=0)
    step = lambda: Step(model, p, None, torch.Generator().manual_seed(0), 4, 0.5)  # noqa: E731 - the same draws

    def grads(loss):
        for q in params:
            q.grad = None
        loss.backward()
        return [q.grad.clone() if q.grad is not None else torch.zeros_like(q) for q in params]

    ungated = EditIdentityLoss(nets, target, targets, 2)(step())
    assert float(ungated.detach()) > 0
    far = lambda z: 5 + z.flatten(1)[:, :52]  # noqa: E731 - blendshapes nowhere near any request
    far_loss = EditIdentityLoss(nets, target, targets, 2, measure=far, gate=0.5)(step())
    assert float(far_loss.detach()) < 1e-6 * float(ungated.detach())
    # a prediction part of the way there: the loss and its gradient are those of the same rows weighted by a
    # constant, the gate's value; the gradient does not pass through the blendshape measure
    near = lambda z: torch.sigmoid(z.flatten(1)[:, :52])  # noqa: E731 - depends on the prediction, differentiably
    gated = EditIdentityLoss(nets, target, targets, 2, measure=near, gate=0.1)
    loss = gated(step())
    rows = requested_prediction(step(), targets, 2, gated.t_range)
    d2 = (near(rows["x0_hat"]) - rows["goal"])[:, 1:].square().sum(1).detach()
    d0 = (rows["own"] - rows["goal"])[:, 1:].square().sum(1)
    weight = torch.exp(-d2 / (0.1 * d0))
    assert 0.05 < float(weight.min()) and float(weight.sum()) < 0.95  # below 1: the loss is the weighted sum
    constant = gated.of(step(), requested_prediction(step(), targets, 2, gated.t_range), weight)
    torch.testing.assert_close(loss, constant)
    for a, b in zip(grads(loss), grads(constant)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-9)
    # hold: expression crafting's pull on the same rows and decoded prediction, added to the gated identity loss
    held = EditIdentityLoss(nets, target, targets, 2, measure=near, gate=0.1, hold=0.5)(step())
    torch.testing.assert_close(held.detach(), loss.detach() + 0.5 * d2.mean())
    assert sum(float(g.abs().sum()) for g in grads(held)) > sum(float(g.abs().sum()) for g in grads(gated(step())))
    with pytest.raises(ValueError, match="measure"):
        EditIdentityLoss(nets, target, targets, 2, gate=0.5)


def test_the_edit_identity_gate_needs_the_blendshape_measure_and_a_width_of_at_least_0(tmp_path):
    pipe, p = tiny_components_pipeline(), person()
    c = config(steps=1, losses=LossWeights(expression=0.0, edit_identity=1.0), edit_identity_gate=0.5)
    assert c.reads_blendshapes and not config(losses=LossWeights(expression=0.0, edit_identity=1.0)).reads_blendshapes
    with pytest.raises(MienError, match="edit_identity_gate"):
        train_person(tiny_model(), p, c, tmp_path, base_sha256=SHA, photos=PHOTOS, progress=False,
                     identity_nets=identity_nets(pipe))  # fmt: skip
    with pytest.raises(MienError, match="edit_identity_gate"):
        config(edit_identity_gate=-1.0)


def test_a_stable_diffusion_shaped_unet_is_personalised(tmp_path):
    model, p = sd_model(seed=3), person(shape=(4, 8, 8))
    model.sha256 = SHA
    before = held_out_loss(model, p)
    result = train_person(model, p, config(steps=12), tmp_path, base_sha256=SHA, photos=PHOTOS, progress=False)
    assert result.finished and held_out_loss(model, p) < before
    again = sd_model(seed=3)
    lora.load_person(again.backbone.unet, tmp_path, SHA)
    torch.testing.assert_close(velocity(again, p), velocity(model, p), rtol=0, atol=2e-3)


@pytest.mark.parametrize("name", ["attention", "attention+conv", "attention+time", "attention+conv+time",
                                  "attention+input"])
@pytest.mark.parametrize("make", [tiny_model, sd_model], ids=["built-in", "sd-shaped"])
def test_the_lora_wraps_exactly_the_requested_target_set_and_starts_as_the_base_model(name, make):
    from peft.tuners.lora import LoraLayer

    from mien.personalize.config import lora_targets

    model, p = make(), person(shape=(32, 16, 16) if make is tiny_model else (4, 8, 8))
    base = velocity(model, p)
    suffixes = lora_targets(name)
    want = {n for n, m in model.backbone.unet.named_modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))
            and any(n == s or n.endswith("." + s) for s in suffixes)}  # fmt: skip
    params = lora.add_lora(model.backbone.unet, lora.lora_config(4, 4.0, suffixes))
    wrapped = {n for n, m in model.backbone.unet.named_modules() if isinstance(m, LoraLayer)}
    assert wrapped == want and {n.rsplit(".", 1)[-1] for n in want} >= {s.rsplit(".", 1)[-1] for s in suffixes}
    assert len(params) == 2 * len(want)  # A and B of each wrapped layer, nothing else trains
    torch.testing.assert_close(velocity(model, p), base, rtol=0, atol=1e-6)  # B starts at zero


def test_an_unknown_lora_target_set_is_a_one_line_error(tmp_path, capsys):
    from mien.cli.main import main

    assert main(["personalize", str(tmp_path / "me.jpg"), "--out", str(tmp_path / "me"), "--lora-targets", "mlp"]) != 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--lora-targets 'mlp' is not a target set; choose one of attention," in err
    assert not (tmp_path / "me").exists()


# --- bad input ---------------------------------------------------------------------------------------

class ColourIdentity(torch.nn.Module):
    """face-api stand-in: the descriptor is the crop's mean colour (so colours are people)."""

    def __init__(self):
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def faceapi(self, x):
        return torch.nn.functional.pad(x.mean((2, 3)) / 100, (0, 125))


def crops(*colours) -> np.ndarray:
    return np.stack([np.full((128, 128, 3), c, np.uint8) for c in colours])


def test_a_photo_of_someone_else_is_named_and_left_out_and_two_people_stop():
    from mien.face.one_person import one_person

    warnings = []
    skip = lambda name, reason: warnings.append(f"{name}: {reason}")  # noqa: E731
    keep = one_person(crops(100, 110, 240, 105), ["a.jpg", "b.jpg", "c.jpg", "d.jpg"], ColourIdentity(), skip)
    assert keep == [0, 1, 3] and len(warnings) == 1 and warnings[0].startswith("c.jpg: another person (")
    with pytest.raises(MienError, match="do not show one person.*b.jpg") as e:
        one_person(crops(100, 240), ["a.jpg", "b.jpg"], ColourIdentity(), skip)
    assert "\n" not in str(e.value)


def test_the_pipeline_leaves_photos_of_someone_else_out_of_the_identity():
    """Generation's side of the same check (MienPipeline.one_person, which Editor.prepare and `mien generate`
    take): the photo left out is gone from every list, named in ``skipped`` and through ``skip``."""
    from mien.pipeline import AlignedPhotos

    pipe = tiny_components_pipeline()
    pipe.identity = ColourIdentity()
    c = list(crops(100, 240, 110))
    aligned = AlignedPhotos(c, ["f0", "f1", "f2"], ["x.jpg: no face found"], ["m0", "m1", "m2"], [0, 2, 3])
    calls = []
    kept = pipe.one_person(aligned, ["a.jpg", "x.jpg", "b.jpg", "c.jpg"], lambda *a: calls.append(a))
    assert kept.faces == ["f0", "f2"] and kept.matrices == ["m0", "m2"] and kept.sources == [0, 3]
    assert len(calls) == 1 and calls[0][0] == "b.jpg" and kept.skipped[1] == "b.jpg: " + calls[0][1]
    assert pipe.one_person(AlignedPhotos(c[:1], ["f0"])).crops == c[:1]  # one photo: nothing to compare


def test_unreadable_files_and_photos_without_faces_are_named(tmp_path):
    from mien.personalize.inputs import prepare, read_photos

    from PIL import Image

    good = tmp_path / "good.png"
    Image.fromarray(crops(120)[0]).save(good)
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not a photo")
    warnings = []
    photos, names, skipped = read_photos([good, bad], warnings.append)
    assert names == [str(good)] and len(warnings) == 1 and "bad.jpg" in warnings[0]
    assert skipped == [f"{bad}: not an image file mien can read (JPEG, PNG, WebP, BMP, TIFF, GIF)"]
    with pytest.raises(MienError, match="none of the photos could be read"):
        read_photos([bad], warnings.append)

    class NoFaces:
        def detect(self, rgb, max_faces=None):
            return []

    with pytest.raises(NoFaceError, match="no usable face in any photo.*good.png") as e:
        prepare(NoFaces(), [good, bad], ColourIdentity(), warnings.append)
    assert "\n" not in str(e.value)


def test_an_unreadable_photo_among_good_ones_is_in_the_card_s_skipped_list(tmp_path, monkeypatch):
    """The person folder's card names every photo left out with its reason: an unreadable one too (it was
    reported on the console only), like a photo without a face or of another person."""
    from conftest import tiny_aligned
    from PIL import Image

    import mien.pipeline
    from mien.personalize.inputs import prepare

    good = tmp_path / "good.png"
    Image.fromarray(crops(120)[0]).save(good)
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not a photo")

    def align_all(landmarker, photos, names=None, face=0):  # every readable photo has the stand-in face
        out = tiny_aligned(photos[0])
        out.sources = list(range(len(photos)))
        return out

    monkeypatch.setattr(mien.pipeline, "align_photos", align_all)
    warnings = []
    inputs = prepare(None, [good, bad], ColourIdentity(), warnings.append)
    assert inputs.names == [str(good)] and len(warnings) == 1
    assert inputs.skipped == [f"{bad}: not an image file mien can read (JPEG, PNG, WebP, BMP, TIFF, GIF)"]


def test_generate_with_a_person_folder_from_another_base_model_is_a_one_line_error(tmp_path, capsys):
    from mien.cli.main import main

    model, p = tiny_model(), person()
    train_person(model, p, config(steps=2), tmp_path / "me", base_sha256="ef" * 32, photos=PHOTOS, progress=False)
    pipe = tiny_components_pipeline()
    with pytest.raises(MienError, match="personalised on base model efefefefefef"):
        pipe.load_person(tmp_path / "me")
    assert main(["generate", "--person", str(tmp_path / "nowhere"), "--expression", "happy"]) != 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no such folder" in err


def test_a_loaded_person_is_recorded_in_the_output_metadata(tmp_path):
    from mien.expression.targets import ExpressionRequest
    from mien.personalize.inputs import PersonInputs, stored_subject
    from mien.settings import GenerationSettings

    pipe = tiny_components_pipeline()
    train_person(tiny_model(), person(), config(steps=2), tmp_path, base_sha256=pipe.model.sha256, photos=PHOTOS,
                 progress=False)  # fmt: skip
    c = crops(90, 100)
    PersonInputs([], [], c, np.ones((2, 1, 16, 16), np.float32), np.zeros((2, 1, 16, 16), np.float32),
                 np.zeros((2, 55), np.float32)).save(tmp_path)  # fmt: skip
    pipe.load_person(tmp_path)
    photos, aligned = stored_subject(tmp_path)
    gen = pipe(pipe.identity_input(aligned), ExpressionRequest(mix={"happy": 1.0}), GenerationSettings(steps=2))
    assert gen.metadata(0)["person"] == pipe.person_hash and len(pipe.person_hash) == 12
    assert len(photos) == 2 and np.isfinite(gen.latents.numpy()).all()


@pytest.mark.parametrize("flags, message", [(["--steps", "0"], "--steps 0 must be a whole number"),
                                            (["--rank", "100"], "--rank 100 is larger"),
                                            (["--time-budget", "-5"], "--time-budget -5.0 must be positive")])  # fmt: skip
def test_personalize_flags_are_checked_before_anything_loads(tmp_path, capsys, flags, message):
    from mien.cli.main import main

    assert main(["personalize", str(tmp_path / "me.jpg"), "--out", str(tmp_path / "me"), *flags]) != 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message.split(" must")[0] in err and not (tmp_path / "me").exists()



def test_personalize_exits_one_when_photos_were_left_out(tmp_path, capsys, monkeypatch):
    """The batch rule: a photo left out (unreadable, no face, another person) is named, a summary ends the
    run and the exit status is 1 (was 0, with the skip printed as a warning only)."""
    from types import SimpleNamespace

    from mien.cli.main import main
    from mien.personalize import run as personalize_run

    def fake(photos, out, *args, warn, **kwargs):
        warn(f"skipped {photos[1]}: not an image file mien can read (JPEG, PNG, WebP, BMP, TIFF, GIF)")
        return SimpleNamespace(directory=out, finished=True, steps_done=1, time_s=1.0, adapter_bytes=1000)

    monkeypatch.setattr(personalize_run, "personalize", fake)
    photos = [str(tmp_path / "me.jpg"), str(tmp_path / "notes.jpg")]
    assert main(["personalize", *photos, "--out", str(tmp_path / "me"), "--steps", "1"]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err == [f"mien: skipped {photos[1]}: not an image file mien can read (JPEG, PNG, WebP, BMP, TIFF, GIF)",
                   "mien: 1 of 2 photos left out (named above); the other 1 used"]


# --- the person's LoRA on FlowEdit's target rows only (--person-rows target, --person-scale) ----------------

@pytest.fixture(scope="module")
def pipe_with_person(tmp_path_factory):
    """The tiny pipeline (its expression stream awake) with a trained person loaded and an identity input."""
    from conftest import tiny_aligned

    pipe, folder = tiny_components_pipeline(), tmp_path_factory.mktemp("me")
    torch.manual_seed(0)
    for p in pipe.model.adapter.stream_kv.parameters():  # zero-initialised stream values: wake them (the expression counts)
        p.data.normal_(0, 0.5)
    train_person(tiny_model(), person(), config(steps=4, lr=5e-2), folder, base_sha256=pipe.model.sha256,
                 photos=PHOTOS, progress=False)  # fmt: skip
    pipe.load_person(folder)
    rgb = np.random.default_rng(0).integers(0, 256, (160, 140, 3), dtype=np.uint8)
    return pipe, pipe.identity_input(tiny_aligned(rgb))


def pair_velocity(monkeypatch, pipe, ident, label: str, lora_on: bool = True, **settings) -> torch.Tensor:
    """FlowEdit's pair velocity (source rows, then target rows) of one request, taken at a fixed point."""
    from mien import editing
    from mien.expression.targets import ExpressionRequest
    from mien.settings import GenerationSettings

    seen = {}

    def capture(pair, photo, *args, **kwargs):
        x = torch.randn((2 * len(photo), *photo.shape[1:]), generator=torch.Generator().manual_seed(3))
        seen["v"] = pair(x, torch.full((len(x),), 0.6))
        return photo

    monkeypatch.setattr(editing, "flowedit", capture)
    lora.enable(pipe.model.backbone.unet, lora_on)
    try:
        pipe(ident, ExpressionRequest(mix={label: 1.0}), GenerationSettings(steps=2, **settings))
    finally:
        lora.enable(pipe.model.backbone.unet, True)
    return seen["v"]


@pytest.mark.parametrize("label", ["happy", "sad"])  # sad: contrast guidance's pair (source, target, negative rows)
def test_with_the_lora_on_target_rows_only_the_source_rows_are_the_base_models(monkeypatch, pipe_with_person, label):
    pipe, ident = pipe_with_person
    tf = pair_velocity(monkeypatch, pipe, ident, label, lora_on=False).chunk(2)
    both = pair_velocity(monkeypatch, pipe, ident, label).chunk(2)
    target = pair_velocity(monkeypatch, pipe, ident, label, person_rows="target").chunk(2)
    torch.testing.assert_close(target[0], tf[0], rtol=0, atol=1e-6)  # source rows: the base model
    torch.testing.assert_close(target[1], both[1], rtol=0, atol=1e-6)  # target rows: the person, as with both
    assert (both[0] - tf[0]).abs().max() > 1e-3  # with both rows the source rows take the LoRA
    scaled = pair_velocity(monkeypatch, pipe, ident, label, person_rows="target", person_scale=2.0).chunk(2)
    torch.testing.assert_close(scaled[0], tf[0], rtol=0, atol=1e-6)
    assert (scaled[1] - both[1]).abs().max() > 1e-3
    off = pair_velocity(monkeypatch, pipe, ident, label, person_scale=0.0)
    torch.testing.assert_close(off, torch.cat(tf), rtol=0, atol=1e-6)  # scale 0: tuning-free


def test_with_a_zero_lora_every_row_choice_is_tuning_free_and_a_trained_one_tells_them_apart(pipe_with_person):
    from mien.expression.targets import ExpressionRequest
    from mien.settings import GenerationSettings

    pipe, ident = pipe_with_person
    unet = pipe.model.backbone.unet

    def latents(lora_on: bool = True, **kw) -> torch.Tensor:
        lora.enable(unet, lora_on)
        try:
            return pipe(ident, ExpressionRequest(mix={"happy": 1.0}), GenerationSettings(steps=2, **kw)).latents
        finally:
            lora.enable(unet, True)

    trained = lora.lora_state(unet)
    tf, both, target = latents(False), latents(), latents(person_rows="target")
    assert (both - tf).abs().max() > 1e-3 and (target - tf).abs().max() > 1e-3 and (target - both).abs().max() > 1e-3
    lora.set_lora_state(unet, {k: torch.zeros_like(v) for k, v in trained.items()})
    try:
        for kw in ({}, {"person_rows": "target"}, {"person_rows": "target", "person_scale": 3.0}):
            torch.testing.assert_close(latents(**kw), tf, rtol=0, atol=1e-6)
    finally:
        lora.set_lora_state(unet, trained)


def test_a_row_scale_that_does_not_fit_the_batch_is_an_error(pipe_with_person):
    pipe, _ = pipe_with_person
    x = torch.randn(2, *pipe.model.backbone.latent_shape)
    cond = {"identity": torch.zeros(2, 128), "expression": torch.zeros(2, 55), "reference": torch.zeros_like(x)}
    with lora_rows.row_scale(torch.ones(3)), pytest.raises(ValueError, match="one scale per row"):
        pipe.model.velocity(x, torch.full((2,), 0.5), cond)


def test_person_rows_without_a_person_is_a_one_line_error(tmp_path, capsys):
    from mien.cli.main import main

    assert main(["generate", "--example", "--expression", "happy", "--person-rows", "target"]) != 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "add --person PERSON_DIR" in err


def test_the_direction_loss_is_0_for_a_zero_or_scale_0_lora_reaches_only_the_lora_and_draws_last(tmp_path):
    from mien.personalize.losses import DirectionLoss
    from mien.personalize.prior import label_blendshapes

    model, p = tiny_model(), person()
    targets = torch.from_numpy(np.stack(list(label_blendshapes().values()))).float()
    params = lora.add_lora(model.backbone.unet, lora.lora_config(4, 4.0, ["to_q", "to_k", "to_v", "to_out.0"]))

    def loss():
        return DirectionLoss(targets, 2)(Step(model, p, None, torch.Generator().manual_seed(0), 4, 0.5))

    assert float(loss().detach()) < 1e-10  # peft's B starts at zero: the LoRA changes no direction
    for q in params:  # move both A and B
        q.data.normal_(0, 0.1)
    lora.set_scale(model.backbone.unet, 0.0)
    assert float(loss().detach()) < 1e-10  # at scale 0 the LoRA is the base model
    lora.set_scale(model.backbone.unet, 1.0)
    value = loss()
    assert float(value.detach()) > 0
    value.backward()
    assert sum(float(q.grad.abs().sum()) for q in params if q.grad is not None) > 0
    lora_ids = {id(q) for q in params}
    assert all(q.grad is None for q in model.backbone.unet.parameters() if id(q) not in lora_ids)  # the UNet stays frozen
    runs = {w: train_person(tiny_model(), p, config(steps=2, losses=LossWeights(expression=0.0, direction=w)),
                            tmp_path / str(w), base_sha256=SHA, photos=PHOTOS, progress=False)
            for w in (0.0, 1.0)}  # fmt: skip
    assert "direction" in runs[1.0].losses[1] and "direction" not in runs[0.0].losses[0]
    assert runs[1.0].losses[0]["direction"] < 1e-10  # the LoRA is zero on the first step
    assert all(runs[1.0].losses[0][k] == runs[0.0].losses[0][k] for k in ("flow", "prior"))  # drawn last
