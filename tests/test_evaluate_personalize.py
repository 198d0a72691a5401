"""`mien evaluate --personalize K`, end to end on tiny random nets (CPU, no ../shared): two fake people prepared,
personalised on K photos, generated tuning-free and personalised, scored on their other photos, resumed,
split between processes, summarised."""

import dataclasses
import json
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import tiny_components_pipeline

from mien.errors import MienError
from mien.evaluate import personalize as pz
from mien.evaluate.benchmark import LABELS, Photo
from mien.personalize import LossWeights, PersonalizeConfig
from mien.personalize.inputs import PersonInputs
from mien.settings import GenerationSettings

TWO = ("neutral", "happy")  # labels asked for (all seven in the benchmark): the test stays quick


def stub_scorer(pipe) -> pz.Scorer:
    """face-api and its classifier stood in for: the pipeline's stub descriptor, and a label from mean brightness."""
    def labels(x):
        return [LABELS[int(v) % len(LABELS)] for v in x.mean((1, 2, 3)) // 8]

    return pz.Scorer(pipe.identity.faceapi, labels, pipe.blendshape_net, pipe.device)


def fake_inputs(names, colours) -> PersonInputs:
    g = np.random.default_rng(len(names))
    n = len(names)
    crops = np.clip(np.array(colours)[:, None, None, None] + g.normal(0, 20, (n, 128, 128, 3)), 0, 255).astype(np.uint8)
    feats = np.zeros((n, 1, 16, 16), np.float32)
    feats[..., 5:11, 4:12] = 1
    return PersonInputs(list(names), [""] * n, crops, np.ones((n, 1, 16, 16), np.float32), feats,
                        g.random((n, 55)).astype(np.float32) * 0.3)  # fmt: skip


def fake_benchmark():
    """Two people: 'ann' (4 photos, the second labelled neutral) and 'bob' (2 photos), and a London person with 1."""
    photo = lambda ref, label=None: Photo(ref, True, label)  # noqa: E731
    people = [("ann", "studio", [photo("a0", "happy"), photo("a1", "neutral"), photo("a2"), photo("a3")]),
              ("bob", "wild", [photo("b0"), photo("b1")]), ("cat", "wild", [photo("c0")])]  # fmt: skip
    idents = [SimpleNamespace(id=i, group=g, identity_photos=p[:1], scoring_photos=p[1:]) for i, g, p in people]
    colours = {"a": 90, "b": 160, "c": 200}
    return SimpleNamespace(identities=idents, image=lambda p: np.full((64, 64, 3), colours[p.ref[0]] + int(p.ref[1]), np.uint8))


def prepared(tmp_path, monkeypatch, pipe):
    from mien.personalize import inputs

    def fake_prepare(landmarker, paths, identity_encoder, warn):  # alignment needs MediaPipe: the photo is the crop
        from PIL import Image

        colours = [float(np.asarray(Image.open(p)).mean()) for p in paths]
        return fake_inputs(paths, colours)

    monkeypatch.setattr(inputs, "prepare", fake_prepare)
    return pz.prepare(fake_benchmark(), tmp_path / "inputs", [1, 3], None, stub_scorer(pipe), pipe.identity)


def config() -> PersonalizeConfig:
    return PersonalizeConfig(steps=2, rank=2, alpha=2.0, prior_samples=2, prior_steps=2, batch=2, prior_batch=1,
                             expression_batch=1, losses=LossWeights(expression=0.02))  # fmt: skip


def test_prepare_keeps_people_with_more_photos_than_k_and_puts_neutral_photos_first(tmp_path, monkeypatch):
    pipe = tiny_components_pipeline()
    people = prepared(tmp_path, monkeypatch, pipe)
    assert [p["id"] for p in people] == ["ann", "bob"]  # cat has 1 photo: nothing to hold out at K = 1
    ann = people[0]
    assert ann["photos"][0] == "a1" and ann["neutral"][0] and ann["labels"][:2] == ["neutral", "happy"]
    assert pz.held_out_start(4, [1, 3, 5]) == 3 and pz.held_out_start(2, [1, 3, 5]) == 1
    assert pz.jobs(people, [1, 3]) == [(0, 1), (1, 1), (0, 3)]


def test_personalize_benchmark_runs_resumes_and_summarises(tmp_path, monkeypatch):
    pipe = tiny_components_pipeline()
    prepared(tmp_path, monkeypatch, pipe)
    scorer, settings, out = stub_scorer(pipe), GenerationSettings(steps=2), tmp_path / "run"
    items = pz.run(tmp_path / "inputs", out, [1, 3], pipe, scorer, config(), settings, labels=TWO, progress=False)
    assert [(i["person"], i["K"]) for i in items] == [("ann", 1), ("bob", 1), ("ann", 3)]
    ann3 = items[2]
    assert ann3["train_photos"] == ["a1", "a0", "a2"] and ann3["held_out"] == 1 and ann3["steps"] == 2
    assert [(r["mode"], r["label"]) for r in ann3["rows"]] == [(m, lab) for m in ("tuning_free", "personalised") for lab in TWO]
    assert ann3["adapter_bytes"] > 0 and ann3["train_s"] > 0 and ann3["processes"] == 1
    for r in ann3["rows"]:
        assert all(np.isfinite(r[k]) for k in ("dist", "nearest_train", "nearest_train_latent", "expression_change"))
    assert pipe.person is not None and pipe.person["steps_done"] == 2  # the last person's LoRA made the P rows
    assert sorted((out / "sheets").iterdir())[0].suffix == ".png"
    assert pz.run(tmp_path / "inputs", out, [1, 3], pipe, scorer, config(), settings, labels=TWO, progress=False) == []
    s = pz.report(out)
    assert {(c["group"], c["K"]) for c in s["table"]} == {("studio", 1), ("studio", 3), ("wild", 1)}
    assert s["per_label_faceapi"]["happy"]["n"] == 3 and s["per_label_faceapi"]["sad"]["personalised"] is None
    assert s["per_label_faceapi"].keys() == set(LABELS) and s["adapter_bytes"] == ann3["adapter_bytes"]
    assert s["aims"]["cfp_verification_k5_ge_0.98"] is None  # no CFP group measured: not claimed either way
    assert json.loads((out / "summary.json").read_text())["runs"] == 3
    assert "| studio | 3 | 1 |" in (out / "summary.md").read_text()


def test_shards_split_the_runs_and_the_report_joins_them(tmp_path, monkeypatch):
    pipe = tiny_components_pipeline()
    prepared(tmp_path, monkeypatch, pipe)
    scorer, settings, out = stub_scorer(pipe), GenerationSettings(steps=1), tmp_path / "run"
    kw = dict(sheets=False, labels=TWO[:1], progress=False)
    a = pz.run(tmp_path / "inputs", out, [1], pipe, scorer, config(), settings, shard=(0, 2), **kw)
    b = pz.run(tmp_path / "inputs", out, [1], pipe, scorer, config(), settings, shard=(1, 2), **kw)
    assert [i["person"] for i in a] == ["ann"] and [i["person"] for i in b] == ["bob"]
    assert sorted(f.name for f in out.glob("items*.jsonl")) == ["items-0.jsonl", "items-1.jsonl"]
    assert pz.report(out)["runs"] == 2 and a[0]["processes"] == 2


@pytest.mark.parametrize("flags, message", [(["--personalize", "0"], "every K and --per-group must be at least 1"),
                                            (["--personalize", "3", "--lora-rank", "100"], "--rank 100 is larger")])  # fmt: skip
def test_personalize_flags_are_checked_before_anything_loads(capsys, flags, message):
    from mien.cli.main import main

    assert main(["evaluate", *flags]) != 0
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_each_person_starts_from_the_base_model_without_an_earlier_persons_lora():
    from peft.tuners.lora import LoraLayer

    from mien.personalize import lora

    pipe = tiny_components_pipeline()
    lora.add_lora(pipe.model.backbone.unet, lora.lora_config(2, 2.0, ["to_q", "to_v"]))
    base = pz.base_model(pipe.model)
    assert any(isinstance(m, LoraLayer) for m in pipe.model.modules())
    assert not any(isinstance(m, LoraLayer) for m in base.modules()) and not hasattr(base.backbone.unet, "peft_config")
    lora.add_lora(base.backbone.unet, lora.lora_config(2, 2.0, ["to_q"]))  # a fresh LoRA goes in cleanly


def test_max_runs_stops_and_says_how_many_runs_are_left(tmp_path, monkeypatch, capsys):
    pipe = tiny_components_pipeline()
    prepared(tmp_path, monkeypatch, pipe)
    scorer, settings, out = stub_scorer(pipe), GenerationSettings(steps=1), tmp_path / "run"
    kw = dict(sheets=False, labels=TWO[:1], progress=False)
    first = pz.run(tmp_path / "inputs", out, [1, 3], pipe, scorer, config(), settings, max_runs=1, **kw)
    assert len(first) == 1 and "stopped after 1 runs (--max-runs) with 2 runs left" in capsys.readouterr().err
    rest = pz.run(tmp_path / "inputs", out, [1, 3], pipe, scorer, config(), settings, **kw)
    assert len(rest) == 2 and "runs left" not in capsys.readouterr().err


def test_benchmark_loss_weight_options_set_only_their_own_term():
    default = pz.lora_config(None, None)
    assert default == PersonalizeConfig()
    c = pz.lora_config(50, 4, expression_weight=0.0)
    assert (c.steps, c.rank, c.alpha) == (50, 4, 4.0)
    assert c.losses == LossWeights(expression=0.0)
    assert pz.lora_config(None, None, 3.0, 0.5).losses == LossWeights(identity=3.0, expression=0.5)


def test_benchmark_lora_targets_option_sets_only_the_targets():
    c = pz.lora_config(None, None, targets="attention+conv")
    assert c.targets == ["to_q", "to_k", "to_v", "to_out.0", "conv1", "conv2"]
    assert dataclasses.replace(c, targets=PersonalizeConfig().targets) == PersonalizeConfig()
    with pytest.raises(MienError, match="--lora-targets 'ff' is not a target set; choose one of attention, "):
        pz.lora_config(None, None, targets="ff")
