"""The scripts in scripts/ report bad input as `mien` does (mien.cli.run_script): one line naming the script and the
problem, a non-zero exit, no traceback. The subprocess runs fail at argument checks, before any model loads."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from mien.cli import report_user_errors, run_script
from mien.errors import MienError, WeightsError

ROOT = Path(__file__).resolve().parents[1]


def script(name: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    env.pop("MIEN_DEBUG", None)
    return subprocess.run([sys.executable, str(ROOT / "scripts" / name), *args], capture_output=True, text=True,
                          env=env, timeout=120)


def one_line(run: subprocess.CompletedProcess, prog: str) -> str:
    assert run.returncode == 2, (run.returncode, run.stderr)
    assert "Traceback" not in run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{prog}: error: "), lines
    return lines[0]


def test_a_bad_setting_flag_is_one_line_before_the_model_loads():
    line = one_line(script("profile_edit.py", "--steps", "0"), "profile_edit.py")
    assert "--steps 0" in line


def test_a_missing_input_file_is_one_line():
    line = one_line(script("swap_report_merge.py", "/nonexistent/base.jsonl", "/nonexistent/new.jsonl"),
                    "swap_report_merge.py")
    assert "/nonexistent/base.jsonl: no such file or directory; check the path" in line


def test_report_user_errors(capsys):
    assert report_user_errors("x.py", lambda: None) == 0
    assert report_user_errors("x.py", lambda: 1) == 1

    def bad(error):
        def run():
            raise error
        return run

    assert report_user_errors("x.py", bad(MienError("--n 0 must be at least 1"))) == 2
    assert capsys.readouterr().err == "x.py: error: --n 0 must be at least 1\n"
    assert report_user_errors("x.py", bad(WeightsError("model file is missing"))) == 3  # the error's own code
    with pytest.raises(ValueError):  # not bad input: a bug keeps its traceback
        report_user_errors("x.py", bad(ValueError("bug")))


def test_run_script(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["scripts/tune.py"])
    monkeypatch.delenv("MIEN_DEBUG", raising=False)
    with pytest.raises(SystemExit) as done:
        run_script(lambda: None)
    assert done.value.code == 0

    def missing():
        open("/nonexistent/rows.json")

    with pytest.raises(SystemExit) as done:
        run_script(missing)
    assert done.value.code == 2
    assert capsys.readouterr().err == ("tune.py: error: /nonexistent/rows.json: no such file or directory; "
                                       "check the path\n")
    # raised without a filename, as some libraries do: still one line, with the exception's own message
    for error, said in ((FileNotFoundError("weights.bin is missing."), "weights.bin is missing"),
                        (FileNotFoundError(2, "No such file or directory"), "No such file or directory"),
                        (IsADirectoryError(), "Is a directory")):

        def raising():
            raise error

        with pytest.raises(SystemExit) as done:
            run_script(raising)
        assert done.value.code == 2
        assert capsys.readouterr().err == f"tune.py: error: {said}; check the path\n"
    monkeypatch.setenv("MIEN_DEBUG", "1")  # the traceback, for when the path is the script's own
    with pytest.raises(FileNotFoundError):
        run_script(missing)


def test_every_script_with_a_main_runs_it_through_run_script():
    for path in sorted((ROOT / "scripts").glob("*.py")):
        text = path.read_text()
        if re.search(r'^if __name__ == "__main__":', text, re.M) and re.search(r"^def main\(", text, re.M):
            assert "run_script(main)" in text, path.name
