"""What every `mien` command promises a newcomer: everything checked before the first second of work
(output folder, device, options), outputs that never overwrite or mix with an earlier run, the batch
rule, --threads, the README's notation, and images written as they are made.

Fast: in-process, with the model loader replaced by one that fails the test if called (no_model_load).
"""

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from mien.cli.analyze import example_path
from mien.cli.main import main
from mien.pipeline import MienPipeline

EX = str(example_path())


@pytest.fixture
def no_model_load(monkeypatch):
    monkeypatch.delenv("MIEN_DEBUG", raising=False)

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the argument error was found")

    monkeypatch.setattr(MienPipeline, "from_pretrained", classmethod(refuse))


def error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("mien: error: "), err
    return err[0][len("mien: error: "):]


def dry(capsys, *args) -> dict:
    assert main(["generate", "--identity", EX, "--dry-run", *args]) == 0
    return json.loads(capsys.readouterr().out)


# --- validation before work -----------------------------------------------------------------------

def test_output_path_that_is_a_file(no_model_load, capsys, tmp_path):
    f = tmp_path / "results.png"
    f.write_bytes(b"x")
    assert main(["generate", "--identity", EX, "--expression", "happy", "--out", str(f)]) == 2
    msg = error_line(capsys)
    assert f"--out {f}: is a file" in msg and "folder" in msg
    assert main(["generate", "--identity", EX, "--expression", "happy", "--out", str(f / "sub")]) == 2
    assert "is a file, so the folder cannot be created" in error_line(capsys)


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc (a folder no one can write in)")
def test_output_folder_where_nothing_can_be_written(no_model_load, capsys, tmp_path):
    """/proc passes a permission check for root; the probe finds out before work, not at the first save."""
    assert main(["generate", "--identity", EX, "--expression", "happy", "--out", "/proc/mien-out"]) == 2
    msg = error_line(capsys)
    assert msg.startswith("--out /proc/mien-out: cannot write in /proc") and "choose a folder" in msg
    from mien.cli.checks import check_out_dir

    check_out_dir(tmp_path / "new" / "run")  # a writable place passes and is left as it was
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("device, words", [("cuda", ["--device cuda", "CUDA is not available", "--device cpu"]),
                                           ("tpu", ["--device tpu", "unknown device"]),
                                           ("cuda:7", ["--device cuda:7"])])
def test_unusable_device_is_refused_before_work(no_model_load, capsys, tmp_path, device, words):
    import torch

    if torch.cuda.is_available() and device != "tpu":
        pytest.skip("this machine has CUDA")
    assert main(["generate", "--identity", EX, "--expression", "happy", "--device", device,
                 "--out", str(tmp_path / "o")]) == 2  # fmt: skip
    msg = error_line(capsys)
    for w in words:
        assert w in msg, msg
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("command", [["personalize", EX, "--steps", "1"], ["ui"],
                                     ["evaluate", "--generator", "copy", "--limit", "1"], ["annotate", "--limit", "1"]])
def test_every_command_refuses_an_unusable_device_before_work(no_model_load, capsys, tmp_path, command):
    """Was an internal error (torch's "not compiled with CUDA") after the photos or nets had loaded."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    if command == ["ui"]:
        pytest.importorskip("gradio", reason="the ui extra is not installed")
    assert main([*command, "--device", "cuda", *([] if command == ["ui"] else ["--out", str(tmp_path / "o")])]) == 2
    assert "--device cuda: CUDA is not available" in error_line(capsys)
    assert not (tmp_path / "o").exists()


def test_ui_refuses_a_port_in_use_before_loading(no_model_load, capsys):
    pytest.importorskip("gradio", reason="the ui extra is not installed")
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert main(["ui", "--port", str(port)]) == 2
    msg = error_line(capsys)
    assert msg.startswith(f"cannot listen on 127.0.0.1:{port}") and "another --port" in msg


@pytest.mark.parametrize("flag", ["--n", "--steps"])
def test_count_errors_name_their_flag(no_model_load, capsys, tmp_path, flag):
    assert main(["generate", "--identity", EX, "--expression", "happy", flag, "0", "--out", str(tmp_path / "o")]) == 2
    assert error_line(capsys).startswith(f"{flag} 0 must be at least 1")


def test_no_expression_defaults_visibly(no_model_load, capsys):
    assert main(["generate", "--identity", EX, "--dry-run"]) == 0
    res = capsys.readouterr()
    assert json.loads(res.out)["request"] == "neutral"
    assert "no --expression, --au or --like given" in res.err and "neutral" in res.err
    assert main(["generate", "--identity", EX, "--expression", "happy", "--dry-run"]) == 0
    assert capsys.readouterr().err == ""


def test_dry_run_names_the_like_photo(no_model_load, capsys):
    assert dry(capsys, "--like", EX)["request"] == f"like {EX}"


def test_readme_notation_happy_0_6(no_model_load, capsys):
    """The README writes `happy 0.6`; it means happy at intensity 0.6 like `happy:0.6`."""
    assert dry(capsys, "--expression", "happy 0.6")["request"] == "happy 0.60"
    assert dry(capsys, "--expression", "happy:0.6")["request"] == "happy 0.60"
    assert dry(capsys, "--expression", "happy 0.5+surprised 0.4")["request"] == "happy 0.50, surprised 0.40"
    assert main(["generate", "--identity", EX, "--expression", "happy 1.5", "--dry-run"]) == 2
    assert "intensity 1.5 is out of range" in error_line(capsys)


# --- threads --------------------------------------------------------------------------------------

def test_threads_flag_before_or_after_the_command(no_model_load, capsys, monkeypatch):
    import torch

    before = torch.get_num_threads()
    try:
        assert main(["--threads", "3", "generate", "--identity", EX, "--dry-run"]) == 0
        assert json.loads(capsys.readouterr().out)["threads"] == 3 and torch.get_num_threads() == 3
        assert dry(capsys, "--threads", "1")["threads"] == 1 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    assert main(["generate", "--identity", EX, "--threads", "0", "--dry-run"]) == 2
    assert "--threads 0 must be at least 1" in error_line(capsys)


def test_auto_threads_take_every_core_only_while_nothing_else_runs(monkeypatch):
    from mien import threads

    monkeypatch.setattr(threads, "physical_cores", lambda: 8)
    assert threads.default_threads() == 7
    monkeypatch.setattr(threads, "physical_cores", lambda: 1)
    assert threads.default_threads() == 1
    monkeypatch.setattr(threads, "physical_cores", lambda: 2)
    assert threads.default_threads() == 1
    for name in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", threads.AUTO_MARK):
        monkeypatch.delenv(name, raising=False)
    import torch

    before = torch.get_num_threads()
    others = {"n": 0}
    monkeypatch.setattr(threads, "others_running", lambda: others["n"])
    try:
        assert threads.configure() == 2 and torch.get_num_threads() == 2  # an idle machine: every core
        assert threads.os.environ["GOMP_SPINCOUNT"] == str(threads.SPINCOUNT) and "OMP_WAIT_POLICY" not in threads.os.environ
        others["n"] = 1  # another process is generating
        with threads.generating("cpu"):
            assert torch.get_num_threads() == 1
        others["n"] = 0
        with threads.generating("cpu"):
            assert torch.get_num_threads() == 2
            with threads.generating("cpu"):  # a second request in this process at the same time
                assert torch.get_num_threads() == 1
        assert threads.configure() == 2 and "auto" in threads.rule()  # auto's own OMP_NUM_THREADS is not the user's
        monkeypatch.setenv("OMP_NUM_THREADS", "3")
        assert threads.configure() == 3 and threads.fit() is None  # the user's environment wins: no changes
        with threads.generating("cpu"):
            assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)


def test_a_busy_process_beside_is_seen():
    import subprocess
    import sys
    import time

    from mien import threads

    if threads.others_running() is None:
        pytest.skip("no /proc/stat here")
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)
        assert threads.others_running() >= 1
    finally:
        busy.kill()
        busy.wait()


# --- predictable outputs --------------------------------------------------------------------------

def test_each_run_gets_its_own_numbered_folder(tmp_path):
    from mien.io.output import next_run_dir

    base = tmp_path / "mien-out"
    assert next_run_dir(base) == base / "001"
    (base / "001").mkdir(parents=True)
    (base / "003").mkdir()
    (base / "notes").mkdir()
    assert next_run_dir(base) == base / "004"


def test_second_run_into_the_same_folder_is_refused_without_overwrite(no_model_load, capsys, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "000_seed0.png").write_bytes(b"earlier")
    (out / "sheet.png").write_bytes(b"earlier")
    (out / "000_seed0_photo.jpg").write_bytes(b"earlier")
    (out / "mine.txt").write_text("not mien's")
    (out / "holiday.png").write_text("not mien's")
    assert main(["generate", "--identity", EX, "--expression", "happy", "--out", str(out)]) == 2
    msg = error_line(capsys)
    assert "already holds 3 file(s) of an earlier run" in msg and "--overwrite" in msg
    from mien.io.output import clear_earlier_outputs

    clear_earlier_outputs(out)  # what --overwrite does before the first new image is written
    assert sorted(p.name for p in out.iterdir()) == ["holiday.png", "mine.txt"]


def test_default_output_folder_is_ignored_by_git():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    assert "/mien-out/" in (root / ".gitignore").read_text().split()


class FakeEditor:
    """Editor.edit's interface; the second call is interrupted (Ctrl-C) after reporting its steps."""

    def __init__(self, fail_at: int):
        self.calls, self.fail_at = 0, fail_at

    def edit(self, subject, request, settings, n, seed, paste, callback, into=None):
        from types import SimpleNamespace

        self.calls += 1
        for step in range(settings.steps):
            callback(step + 1, settings.steps, {})
        if self.calls == self.fail_at:
            raise KeyboardInterrupt
        crop = np.full((128, 128, 3), 10 * self.calls, np.uint8)
        return SimpleNamespace(crops=[crop], photos=None, metadata=[{"request": "happy 1.00", "seed": seed}])


def test_images_are_written_as_they_are_made(tmp_path, capsys):
    """Interrupted while making the second image: the first is on disk and in the sheet, and both were named
    (they were printed only at the end, so an interrupted run did not say where its images went)."""
    from types import SimpleNamespace

    from mien.cli.generate import generate_and_save
    from mien.settings import GenerationSettings

    subject = SimpleNamespace(identity=SimpleNamespace(crops=[np.zeros((128, 128, 3), np.uint8)]))
    args = SimpleNamespace(n=3, seed=5, paste=False, overwrite=False, like=None, photo_format="png")
    with pytest.raises(KeyboardInterrupt):
        generate_and_save(FakeEditor(fail_at=2), subject, None, GenerationSettings(steps=2), args, tmp_path, None)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["000_seed5.png", "sheet.png"]
    assert capsys.readouterr().out.split() == [str(tmp_path / "000_seed5.png"), str(tmp_path / "sheet.png")]


def test_sheet_shows_identity_reference_and_request(tmp_path):
    from PIL import Image

    from mien.io.output import save_sheet

    ident, ref = np.zeros((128, 128, 3), np.uint8), np.full((128, 128, 3), 255, np.uint8)
    crops = [np.full((128, 128, 3), 100, np.uint8)] * 2
    meta = [{"request": "like reference, happy 0.60", "seed": s} for s in (0, 1)]
    with Image.open(save_sheet(tmp_path, ident, crops, meta)) as a:
        w_plain = a.size[0]
    with Image.open(save_sheet(tmp_path, ident, crops, meta, reference=ref, like="smile.jpg")) as b:
        assert b.size[0] == w_plain + 132  # one more tile: the reference
        tiles = np.asarray(b.convert("RGB"))
        top = b.size[1] - 128 - 12 - 8  # the tiles' row
        assert tiles[top + 64, 4 + 132 + 64].tolist() == [255, 255, 255]  # the reference, second
        assert tiles[top + 64, 4 + 64].tolist() == [0, 0, 0]  # the identity, first


def test_tests_write_no_user_cache():
    """conftest points the user cache into a temporary folder for the whole session."""
    from pathlib import Path

    from mien.evaluate.cache import default_cache_dir

    assert not str(default_cache_dir()).startswith(str(Path.home() / ".cache"))


# --- help that teaches ----------------------------------------------------------------------------

def every_parser():
    import argparse

    from mien.cli.main import _all_subparsers, build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return [parser, *_all_subparsers(sub)]


def test_every_command_has_examples_help_for_every_option_and_no_jargon():
    parsers = every_parser()
    assert {"mien data", "mien data pack", "mien annotate", "mien weights"} <= {p.prog for p in parsers}
    for p in parsers[1:]:
        text = p.format_help()
        assert "examples:" in text, p.prog
        assert "lent GPU" not in text and "GPU call" not in text, p.prog
        assert "--threads" in text, p.prog
        for action in p._actions:
            if action.option_strings:
                assert action.help, (p.prog, action.option_strings)
    assert "exit status" in parsers[0].format_help()


def test_weights_shows_licence_and_origin(capsys):
    from mien import weights as W

    code = main(["weights"])
    out = capsys.readouterr().out
    assert code in (0, 3)
    for wf in W.FILES.values():
        assert f"licence: {wf.license}; origin: {wf.url}" in out


def test_weights_dest_needs_download_and_a_writable_folder(capsys, tmp_path):
    """--dest alone was ignored; --dest in a place nothing can be written was an internal error."""
    assert main(["weights", "--dest", str(tmp_path)]) == 2
    assert error_line(capsys) == f"--dest {tmp_path} is where --download fetches to; add --download"
    if Path("/proc/self").is_dir():
        assert main(["weights", "--download", "--dest", "/proc/mien-weights"]) == 2
        assert error_line(capsys).startswith("--dest /proc/mien-weights: cannot write in /proc")


def test_ui_stops_on_ctrl_c_as_a_normal_end(no_model_load, capsys, monkeypatch):
    """Ctrl+C is how `mien ui` stops: exit 0 and its results deleted, not exit 130 and "results were kept"."""
    pytest.importorskip("gradio", reason="the ui extra is not installed")
    from mien.ui import app, service

    closed = []
    monkeypatch.setattr(service.Service, "from_pretrained",
                        classmethod(lambda cls, *a, **k: SimpleNamespace(close=lambda: closed.append(1))))
    monkeypatch.setattr(app, "launch", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
    import socket

    with socket.socket() as s:  # a port free now
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert main(["ui", "--port", str(port)]) == 0
    assert capsys.readouterr().err.splitlines()[-1] == "mien ui: stopped; its results were deleted" and closed


@pytest.mark.parametrize("argv, line", [
    (["generate", "--example", "--expresion", "happy"],
     "mien generate: error: unrecognized arguments: --expresion happy; did you mean --expression? See "
     "`mien generate --help`"),
    (["generate", "--example", "--n", "two"],
     "mien generate: error: argument --n: invalid int value: 'two'; see `mien generate --help`"),
    (["train", "decoder", "--outt", "x"],
     "mien train decoder: error: unrecognized arguments: --outt x; did you mean --out? See `mien train decoder --help`"),
    (["generat", "--example"], "mien: error: argument COMMAND: invalid choice: 'generat' (choose from 'generate', "
     "'personalize', 'analyze', 'expressions', 'evaluate', 'annotate', 'data', 'train', 'weights', 'verify', 'ui'); "
     "did you mean generate? See `mien --help`"),
])
def test_a_mistyped_option_is_one_line_with_the_nearest_name(no_model_load, capsys, argv, line):
    """Was argparse's usage (20 lines for generate) and the error, with no nearest name."""
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2 and capsys.readouterr().err.splitlines() == [line]
