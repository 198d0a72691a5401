"""`mien train` and its subcommands: help, --dry-run, resume and --time-budget on a tiny random model,
bad input as one-line errors; nothing unpickled."""

import json
import re
from pathlib import Path

import pytest
import torch

import mien.train.loop  # noqa: F401 - imported here, so that the time-budget test times training, not imports
from mien.cli.main import main

ROOT = Path(__file__).resolve().parents[1]
TINY = ["train", "--preset", "tiny", "--no-reference", "--batch-size", "8", "--log-every", "1", "--no-bf16"]


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()  # tiny models: 2 threads on a busy machine are slower (test_train.py)
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_help_lists_train_and_its_subcommands(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "train" in capsys.readouterr().out
    for argv, words in ((["train", "--help"], ["--time-budget", "decoder", "expression-space", "examples:"]),
                        (["train", "decoder", "--help"], ["--dev-psnr", "--lr", "examples:"]),
                        (["train", "expression-space", "--help"], ["annotations", "examples:"])):  # fmt: skip
        with pytest.raises(SystemExit) as e:
            main(argv)
        out = capsys.readouterr().out
        assert e.value.code == 0 and all(w in out for w in words), (argv, out)


def test_dry_run_prints_the_resolved_configs_and_trains_nothing(tmp_path, capsys):
    cfg = tmp_path / "train_config.json"
    cfg.write_text(json.dumps({"lr": 5e-5, "steps": 7}))
    out = tmp_path / "run"
    assert main([*TINY, "--train-config", str(cfg), "--steps", "9", "--other-max-pose", "10", "--dry-run",
                 "--out", str(out)]) == 0  # fmt: skip
    resolved = json.loads(capsys.readouterr().out)
    assert resolved["train"]["lr"] == 5e-5 and resolved["train"]["steps"] == 9  # file, then flags over it
    assert resolved["train"]["other_max_pose"] == 10.0 and resolved["train"]["other_max_distance"] is None
    assert resolved["train"]["batch_size"] == 8 and resolved["train"]["bf16"] is False
    assert resolved["model"]["preset"] == "tiny" and resolved["model"]["reference"] is False
    assert not out.exists()
    assert main(["train", "decoder", "--lr", "3e-4", "--dry-run"]) == 0
    assert json.loads(capsys.readouterr().out)["config"]["lr"] == 3e-4


def test_a_run_stopped_and_resumed_equals_the_uninterrupted_one(tmp_path, capsys):
    data = ["--synthetic", "32", "--steps", "6"]
    assert main([*TINY, *data, "--out", str(tmp_path / "whole")]) == 0
    assert main([*TINY, *data, "--out", str(tmp_path / "split"), "--stop-after", "3"]) == 0
    assert "3/6 (stopped" in capsys.readouterr().out
    # a stopped run still leaves a loadable model: the EMA weights at step 3
    assert json.loads((tmp_path / "split" / "summary.json").read_text())["finished"] is False
    assert (tmp_path / "split" / "model" / "model.safetensors").is_file()
    assert main([*TINY, *data, "--out", str(tmp_path / "split"), "--parts-to", str(tmp_path / "parts")]) == 0
    whole = torch.load(tmp_path / "whole" / "checkpoint.pt", weights_only=True)
    split = torch.load(tmp_path / "split" / "checkpoint.pt", weights_only=True)
    assert split["step"] == whole["step"] == 6
    assert all(torch.equal(split["model"][k], v) for k, v in whole["model"].items())
    joined = b"".join(p.read_bytes() for p in sorted((tmp_path / "parts").glob("model.safetensors.part*")))
    assert joined == (tmp_path / "split" / "model" / "model.safetensors").read_bytes()
    assert json.loads((tmp_path / "parts" / "summary.json").read_text())["finished"] is True


def test_time_budget_stops_early_with_a_checkpoint_and_a_model(tmp_path, capsys):
    out = tmp_path / "run"
    assert main([*TINY, "--synthetic", "32", "--steps", "100000", "--time-budget", "3", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert 1 <= summary["step"] < 100000 and not summary["finished"]
    assert torch.load(out / "checkpoint.pt", weights_only=True)["step"] == summary["step"]
    assert (out / "model" / "config.json").is_file()


@pytest.mark.parametrize("argv, message", [
    (["train", "--out", "{tmp}/r"], "no training data"),
    (["train", "--pack", "{tmp}"], "not a training pack"),
    (["train", "--chunks", "{tmp}/missing.npz"], "chunk files not found"),
    (["train", "--synthetic", "1"], "at least 2 samples"),
    (["train", "--synthetic", "8", "--time-budget", "0"], "--time-budget must be > 0"),
    (["train", "--preset", "tiny", "--synthetic", "8", "--identity-weight", "1", "--out", "{tmp}/r"],
     "no identity embeddings"),
    (["train", "--preset", "tiny", "--synthetic", "8", "--train-config", "{tmp}/none.json"], "none.json"),
    (["train", "--preset", "tiny", "--synthetic", "8", "--other-max-pose", "-1", "--out", "{tmp}/r"],
     "other_max_pose -1.0 must be >= 0"),
    (["train", "--preset", "tiny", "--synthetic", "8", "--other-max-distance", "-0.1", "--dry-run"],
     "other_max_distance -0.1 must be >= 0"),
    (["train", "decoder", "--out", "{tmp}/d"], "no training data"),
    (["train", "expression-space", "{tmp}/a.parquet"], "run `mien annotate` first"),
])  # fmt: skip
def test_bad_input_is_a_one_line_error(tmp_path, capsys, argv, message):
    code = main([a.replace("{tmp}", str(tmp_path)) for a in argv])
    err = capsys.readouterr().err
    assert code != 0 and message in err and len(err.strip().splitlines()) == 1, err


def test_nothing_is_unpickled():
    """Checkpoints and caches load with weights_only=True or from safetensors, never a full unpickle."""
    hits = [f"{p.relative_to(ROOT)}:{i}" for p in (ROOT / "src").rglob("*.py")
            for i, line in enumerate(p.read_text().splitlines(), 1)
            if re.search(r"weights_only\s*=\s*False|allow_pickle\s*=\s*True|pickle\.loads?\(", line)]  # fmt: skip
    assert not hits, hits
