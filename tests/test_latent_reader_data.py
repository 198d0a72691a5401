"""The latent reader's data and training scripts (scripts/record_guided_states.py, scripts/train_latent_reader.py):
the people pick, the recording hook, resumable part files, the schedule; tiny random data, CPU, seconds."""

import importlib.util
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]


def script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


record = script("record_guided_states")
train = script("train_latent_reader")


def row(key, split="train", identity=None, fill=0.0):
    return SimpleNamespace(key=key, split=split, identity=identity, fill=fill)


def test_people_are_train_people_with_several_photos_first_then_single_photos():
    samples = [row(f"a{i}", identity="x:a") for i in range(4)] + [row("b0", identity="x:b"), row("b1", identity="x:b")]
    samples += [row("c0", identity="x:c"), row("u0"), row("u1")]  # one-photo person, unlabelled UTKFace crops
    samples += [row("d0", "dev", "x:d"), row("d1", "dev", "x:d")]
    samples += [row("f0", identity="x:f"), row("f1", identity="x:f", fill=0.5)]
    people = record.pick_people(samples, 10, seed=0)
    assert sorted(len(p) for p in people[:2]) == [2, 3] and {p[0][0] for p in people[:2]} == {"a", "b"}
    assert sorted(p[0] for p in people[2:]) == ["c0", "f0", "u0", "u1"]  # f1's fill is too high: f has one photo
    assert not any(k.startswith("d") for p in people for k in p)  # never dev people
    assert record.pick_people(samples, 1, seed=0) == people[:1]  # a larger pick starts with the smaller one


def test_blocks_are_shared_between_shards_and_skipped_once_written(tmp_path):
    assert record.blocks_todo(20, 8, (0, 1), tmp_path) == [0, 1, 2]
    assert record.blocks_todo(20, 8, (1, 2), tmp_path) == [1]
    record.write_part(record.part_path(tmp_path, 1), {"z": torch.zeros(2, 3)})
    assert record.blocks_todo(20, 8, (0, 1), tmp_path) == [0, 2]
    assert [p.name for p in tmp_path.iterdir()] == ["part-00001.safetensors"]  # no temporary file left


def test_the_recorder_returns_the_steps_own_gradient_and_keeps_it_with_its_state():
    from mien.guidance.gradient import GradientGuide
    from mien.guidance.recogniser import RecogniserGuide

    torch.manual_seed(0)
    weight = torch.randn(192, 32 * 16 * 16) / 50
    embed = lambda z: F.normalize(z.flatten(1) @ weight.T, dim=1)  # noqa: E731 - a stand-in critic
    guide = RecogniserGuide(embed, F.normalize(torch.randn(1, 192), dim=1), torch.ones(1, 1, 16, 16), 0.15, 0.3)
    z = torch.randn(3, 32, 16, 16)
    expected = GradientGuide.gradient(guide, z, "float32")
    with record.Recorder() as rec:
        rec.label, rec.person = 4, 7
        rec.step(0.2)
        got = guide.gradient(z, "float32")
    assert RecogniserGuide.gradient is GradientGuide.gradient  # restored
    assert torch.allclose(got, expected, atol=1e-6)
    kept = rec.take()
    assert torch.equal(kept["z"], z) and torch.allclose(kept["gradient"].float(), expected, atol=1e-3)
    assert torch.allclose(kept["embedding"], embed(z), atol=1e-6) and kept["target"].shape == (3, 192)
    assert kept["label"].tolist() == [4] * 3 and kept["person"].tolist() == [7] * 3
    assert torch.allclose(kept["t"], torch.full((3,), 0.2))
    assert rec.take() == {}  # taken once


def test_the_schedule_is_torchs_one_cycle():
    """The documented runs' OneCycleLR, as a function of the share of training done (within 1 % of the peak: torch
    counts whole steps)."""
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([p], lr=2e-3)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 2e-3, total_steps=2000, pct_start=0.05)
    for step in range(2000):
        assert train.one_cycle(step / 2000, 2e-3) == pytest.approx(opt.param_groups[0]["lr"], abs=2e-5)
        opt.step()
        sched.step()


def states(n: int) -> dict:
    z = torch.randn(n, 32, 16, 16)
    unit = lambda: F.normalize(torch.randn(n, 192), dim=1)  # noqa: E731
    return {"z": z, "embedding": unit(), "target": unit(), "gradient": torch.randn(n, 32, 16, 16).half(),
            "label": torch.zeros(n, dtype=torch.int8)}


def test_training_reads_folders_of_part_files_and_saves_a_reader_of_the_size_asked(tmp_path, monkeypatch, capsys):
    from safetensors.torch import save_file

    from mien.models.latent_reader import LatentReader

    torch.manual_seed(0)
    (tmp_path / "real").mkdir()
    for i in range(2):
        save_file(states(40), str(tmp_path / "real" / f"part-{i:05d}.safetensors"))
    save_file({k: v for k, v in states(24).items() if k != "label"}, str(tmp_path / "synthetic.safetensors"))
    assert len(train.states_files([tmp_path / "real", tmp_path / "synthetic.safetensors"])) == 3
    out = tmp_path / "reader.safetensors"
    argv = ["train", "--data", str(tmp_path / "real"), str(tmp_path / "synthetic.safetensors"), "--out", str(out),
            "--epochs", "1", "--holdout", "0.4", "--face-only", "--width", "8", "--deep-width", "8", "--blocks", "1"]
    monkeypatch.setattr(sys, "argv", argv)
    train.main()
    lines = capsys.readouterr().out.splitlines()
    assert '"train_states": 72, "held_states": 32' in lines[0] and '"held_gradient_face_cos"' in lines[1]
    reader = LatentReader.from_weights(out)
    assert (reader.config.width, reader.config.deep_width, reader.config.blocks) == (8, 8, 1)
    assert out.with_name(out.name + ".sha256").is_file()


def test_people_in_one_batch_record_what_one_at_a_time_records(tmp_path, monkeypatch):
    """``record --people-per-batch 2`` on tiny random components (tests/conftest.py), two people, every label at
    mien's defaults (7 steps, not 25: seconds): the same states, targets, gradients, labels, times and people, in the
    same order, as one person a batch, up to float rounding (none here)."""
    from functools import partial

    import numpy as np
    from conftest import tiny_aligned, tiny_components_pipeline

    from mien import settings
    from mien.cli.analyze import example_path
    from mien.io.image import load_rgb

    pipe = tiny_components_pipeline()
    photo = load_rgb(example_path())
    people = []
    for k, rgb in enumerate((photo, np.ascontiguousarray(photo[::-1, ::-1]))):
        aligned = tiny_aligned(rgb)
        subject = pipe.identity_input(aligned)
        pose = np.asarray([12.0 * k, -5.0 * k, 3.0 * k], np.float32)
        people.append({"crop": aligned.crops[0], "key": f"p{k}", "identity": f"p{k}", "pose": pose,
                       "blendshapes": np.roll(subject.blendshapes, 7 * k).astype(np.float32),
                       "vector": subject.vector.numpy(), "embedding": subject.embedding.numpy()})
    monkeypatch.setattr(record, "load_people", lambda path: people)
    monkeypatch.setattr(record, "recording_pipeline", lambda device: pipe)
    monkeypatch.setattr(settings, "GenerationSettings", partial(settings.GenerationSettings, steps=7))  # 2 guided
    kept = {}
    for p in (1, 2):
        out = tmp_path / f"p{p}"
        argv = ["record", "record", "--people", "unused.npz", "--out", str(out), "--seeds", "2",
                "--people-per-batch", str(p)]
        monkeypatch.setattr(sys, "argv", argv)
        record.main()
        from safetensors.torch import load_file

        kept[p] = load_file(str(out / "part-00000.safetensors"))
    one, two = kept[1], kept[2]
    assert one.keys() == two.keys() and len(one["z"]) == 2 * 7 * 2 * 2  # people, labels, seeds, guided steps
    for k in ("label", "person", "t"):
        assert torch.equal(one[k], two[k]), k
    assert one["person"].tolist() == [0] * 28 + [1] * 28
    assert not torch.allclose(one["target"][0], one["target"][-1])  # each person's own target
    for k in ("z", "embedding", "target"):
        torch.testing.assert_close(two[k], one[k], atol=1e-4, rtol=0)
    cos = F.cosine_similarity(two["gradient"].float().flatten(1), one["gradient"].float().flatten(1))
    assert cos.min() > 0.999


def test_the_blendshape_recorder_keeps_the_blendshape_steps_and_leaves_the_recogniser_steps_alone():
    """record_blendshape_states.py's recorder is record_guided_states.py's, pointed at blendshape guidance."""
    from mien.guidance.blendshape import BlendshapeGuide
    from mien.guidance.gradient import GradientGuide
    from mien.guidance.recogniser import RecogniserGuide

    torch.manual_seed(0)
    weight = torch.randn(52, 32 * 16 * 16) / 50
    measure = lambda z: torch.sigmoid(z.flatten(1) @ weight.T)  # noqa: E731 - a stand-in critic
    guide = BlendshapeGuide(measure, torch.rand(1, 52), torch.ones(1, 1, 16, 16), 1.0, 0.3)
    z = torch.randn(2, 32, 16, 16)
    expected = GradientGuide.gradient(guide, z, "float32")
    with script("record_blendshape_states").BlendshapeRecorder() as rec:
        assert RecogniserGuide.gradient is GradientGuide.gradient  # only the blendshape guide is wrapped
        rec.person = 3
        rec.step(0.1)
        got = guide.gradient(z, "float32")
    assert BlendshapeGuide.gradient is GradientGuide.gradient  # restored
    kept = rec.take()
    assert torch.allclose(got, expected, atol=1e-6) and kept["gradient"].dtype == torch.float32
    assert torch.equal(kept["gradient"], got) and torch.allclose(kept["blendshapes"], measure(z), atol=1e-6)
    assert kept["label"].tolist() == [4, 4] and kept["person"].tolist() == [3, 3] and kept["target"].shape == (2, 52)
