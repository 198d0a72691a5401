"""`mien generate` on bad input: one line saying what was wrong and what to do, a non-zero exit, no
traceback, and, for anything the arguments or the photos alone show (a photo with no face included),
no model loading first.

Argument errors run in-process through ``mien.cli.main.main`` with the model loader replaced by one
that fails the test if it is called, so each check is fast and also proves the error comes before
the slow loading. A few run the real command in a subprocess (what a user sees on stderr). Tests
that need the pretrained face models (a photo with no face) are marked ``shared``.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mien.cli.analyze import example_path
from mien.cli.main import main
from mien.pipeline import MienPipeline, default_model_dir


def one_line_error(code: int, err: str) -> str:
    """Assert the CLI's user-error contract and return the message after 'mien: error: '."""
    assert code != 0
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("mien: error: "), err
    return lines[0][len("mien: error: "):]


@pytest.fixture
def no_model_load(monkeypatch):
    """Fail if generate gets as far as loading the model (the error should have come earlier)."""
    monkeypatch.delenv("MIEN_DEBUG", raising=False)
    calls = []

    def refuse(*args, **kwargs):
        calls.append(args)
        raise AssertionError("the model was loaded before the argument error was found")

    monkeypatch.setattr(MienPipeline, "from_pretrained", classmethod(refuse))
    return calls


@pytest.fixture
def generate(no_model_load, capsys, tmp_path):
    """Run `mien generate ARGS` in-process; returns the error message (after the contract checks)."""

    def run(*args):
        code = main(["generate", *args, "--out", str(tmp_path / "out")])
        out = capsys.readouterr()
        msg = one_line_error(code, out.err)
        assert code == 2, (code, out.err)
        assert not no_model_load, "model loaded before the error"
        assert not (tmp_path / "out").exists()
        return msg

    return run


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("photos")
    (d / "not_an_image.jpg").write_text("hello, I am text")
    data = example_path().read_bytes()
    (d / "truncated.jpg").write_bytes(data[: len(data) // 3])
    Image.fromarray(np.full((300, 300, 3), 128, np.uint8)).save(d / "blank.png")
    (d / "a_folder").mkdir()
    return d


EX = str(example_path())


# --- identity photos ------------------------------------------------------------------------------

def test_example_photo_is_shipped():
    assert example_path().is_file()


@pytest.mark.parametrize("name, words", [
    ("not_an_image.jpg", ["not_an_image.jpg", "not an image", "JPEG"]),
    ("truncated.jpg", ["truncated.jpg", "truncated", "re-export"]),
    ("missing.jpg", ["missing.jpg", "no such file"]),
    ("a_folder", ["a_folder", "is a folder", "name the photo files in it"]),
])
def test_bad_identity_photo(generate, photos, name, words):
    msg = generate("--identity", str(photos / name), "--expression", "happy")
    for w in words:
        assert w in msg, msg


def test_missing_like_photo(generate, photos):
    msg = generate("--identity", EX, "--like", str(photos / "nope.jpg"))
    assert "nope.jpg" in msg and "no such file" in msg


# --- expression terms -----------------------------------------------------------------------------

def test_unknown_term_suggests_close_words(generate):
    msg = generate("--identity", EX, "--expression", "hapy")
    assert "unknown expression 'hapy'" in msg
    assert "did you mean" in msg and "happy" in msg.split("did you mean", 1)[1]
    assert "mien expressions" in msg


def test_unknown_term_with_no_close_word_still_says_where_to_look(generate):
    msg = generate("--identity", EX, "--expression", "qwxzv")
    assert "unknown expression 'qwxzv'" in msg and "did you mean" not in msg
    assert "mien expressions --terms" in msg


@pytest.mark.parametrize("term, words", [
    ("happy:1.5", ["happy:1.5", "from 0 to 1"]),
    ("happy+AU12:9", ["AU12", "from 0 to 5"]),
    ("happy+grumpy:0.5", ["grumpy", "not a basic expression"]),
    ("happily happy", ["twice"]),
])
def test_bad_recipe_or_compound(generate, term, words):
    msg = generate("--identity", EX, "--expression", term)
    for w in words:
        assert w in msg, msg


# --- Action Units ---------------------------------------------------------------------------------

@pytest.mark.parametrize("spec, name", [("AU99=2", "AU99"), ("XYZ=1", "XYZ"), ("AU12=2,AU3=1", "AU3")])
def test_unknown_au_lists_the_known_ones(generate, spec, name):
    msg = generate("--identity", EX, "--au", spec)
    assert f"unknown Action Unit '{name}'" in msg
    assert "AU12" in msg and "AU26" in msg and "mien expressions --aus" in msg


@pytest.mark.parametrize("spec, words", [
    ("AU12", ["cannot read 'AU12'", "AU12=3,AU6=2"]),
    ("AU12:3", ["cannot read 'AU12:3'", "AU=intensity"]),
    ("AU12=abc", ["AU12=abc", "number from 0 to 5"]),
    (",", ["--au is empty", "AU12=3"]),
])
def test_malformed_au_spec(generate, spec, words):
    msg = generate("--identity", EX, "--au", spec)
    for w in words:
        assert w in msg, msg


@pytest.mark.parametrize("spec", ["AU12=7", "AU12=-1", "AU6=2,AU12=5.5", "AU12=nan"])
def test_au_intensity_out_of_range(generate, spec):
    msg = generate("--identity", EX, "--au", spec)
    assert "out of range" in msg and "0–5" in msg


# --- intensity and settings -----------------------------------------------------------------------

@pytest.mark.parametrize("value", ["1.5", "-0.2", "nan", "inf"])
def test_intensity_out_of_range(generate, value):
    msg = generate("--identity", EX, "--expression", "happy", "--intensity", value)
    assert f"--intensity {float(value)}" in msg and "out of range" in msg and "0 to 1" in msg


@pytest.mark.parametrize("flags, words", [
    (["--intensity", "0.5"], ["--intensity 0.5 scales --expression", "add --expression"]),
    (["--au", "AU12=3", "--intensity", "0.3"], ["--intensity 0.3 scales --expression", "--au values are set"]),
    (["--expression", "happy", "--swap-reference", "scene"], ["--swap-reference scene works with --into"]),
    (["--expression", "happy", "--no-paste", "--paste", "crop"], ["--paste crop", "--no-paste", "drop one"]),
    (["--expression", "happy", "--no-paste", "--photo-format", "jpg"], ["--photo-format jpg", "--no-paste"]),
])
def test_options_that_would_do_nothing_together_are_refused(generate, flags, words):
    """Each was ignored without a word (the swap reference refused only once the model had loaded)."""
    msg = generate("--identity", EX, *flags)
    for w in words:
        assert w in msg, msg


def test_seed_beyond_what_the_noise_generator_takes(generate):
    """Was an internal error ("Overflow when unpacking long long") after the model had loaded."""
    msg = generate("--identity", EX, "--expression", "happy", "--seed", str(2**70))
    assert msg.startswith(f"--seed {2**70} is out of range") and "such as 0" in msg


@pytest.mark.parametrize("flag", ["--n", "--steps"])
def test_counts_must_be_positive(generate, flag):
    msg = generate("--identity", EX, flag, "0")
    assert "at least 1" in msg


@pytest.mark.parametrize("value", ["0", "-0.5", "1.2", "nan"])
def test_strength_out_of_range(generate, value):
    msg = generate("--identity", EX, "--strength", value)
    assert f"--strength {float(value)}" in msg and "out of range" in msg and "at most 1" in msg


def test_unknown_keep_region(generate):
    msg = generate("--identity", EX, "--keep", "hair")
    assert "--keep hair" in msg and "background" in msg and "none" in msg


def test_unknown_edit_method(generate):
    msg = generate("--identity", EX, "--method", "inpaint")
    assert "--method inpaint" in msg and "flowedit" in msg and "sdedit" in msg


@pytest.mark.parametrize("value", ["-0.1", "1", "nan"])
def test_guidance_until_out_of_range(generate, value):
    msg = generate("--identity", EX, "--guidance-until", value)
    assert f"--guidance-until {float(value)}" in msg and "out of range" in msg


@pytest.mark.parametrize("value", ["-0.1", "11", "nan"])
def test_recogniser_guidance_out_of_range(generate, value):
    msg = generate("--identity", EX, "--recogniser-guidance", value)
    assert f"--recogniser-guidance {float(value)}" in msg and "out of range" in msg


@pytest.mark.parametrize("value", ["0", "1.5"])
def test_recogniser_guidance_until_out_of_range(generate, value):
    msg = generate("--identity", EX, "--recogniser-guidance-until", value)
    assert f"--recogniser-guidance-until {float(value)}" in msg and "out of range" in msg


@pytest.mark.parametrize("flag,value", [("--blendshape-guidance", "-1"), ("--blendshape-guidance", "nan"),
                                        ("--blendshape-guidance-until", "0"), ("--blendshape-guidance-until", "2")])
def test_blendshape_guidance_out_of_range(generate, flag, value):
    msg = generate("--identity", EX, flag, value)
    assert f"{flag} {float(value)}" in msg and "out of range" in msg


@pytest.mark.parametrize("flag,value", [("--guidance-identity", "-1"), ("--guidance-expression", "-0.5"),
                                        ("--guidance-identity", "nan"), ("--guidance-expression", "inf")])
def test_classifier_free_guidance_scale_out_of_range(generate, flag, value):
    """Negative scales were taken (and run, guiding away from the condition); like every range, one line before
    any work. With --into too, whose default identity scale differs."""
    for swap in ([], ["--into", EX]):
        msg = generate("--identity", EX, *swap, flag, value)
        assert f"{flag} {float(value)} is out of range" in msg and "0" in msg


def test_blendshape_guidance_is_a_flowedit_setting(generate):
    msg = generate("--identity", EX, "--method", "sdedit", "--blendshape-guidance", "0.5")
    assert "--blendshape-guidance works with --method flowedit" in msg


def test_recogniser_guidance_is_a_flowedit_setting(generate, no_model_load, capsys):
    msg = generate("--identity", EX, "--method", "sdedit", "--recogniser-guidance", "0.5")
    assert "--recogniser-guidance works with --method flowedit" in msg
    # left at its default it is simply off for sdedit, and on for flowedit
    import json

    assert main(["generate", "--identity", EX, "--method", "sdedit", "--dry-run"]) == 0
    assert json.loads(capsys.readouterr().out)["recogniser_guidance"] == 0
    assert main(["generate", "--identity", EX, "--dry-run"]) == 0
    from mien.settings import RECOGNISER_GUIDANCE

    assert json.loads(capsys.readouterr().out)["recogniser_guidance"] == RECOGNISER_GUIDANCE


def test_sampler_with_flowedit_is_refused_not_ignored(no_model_load, capsys):
    """FlowEdit steps with Euler: another --sampler with it is a one-line error (it would do nothing)."""
    assert main(["generate", "--identity", EX, "--sampler", "heun", "--dry-run"]) == 2
    assert "--sampler heun works with --method sdedit" in capsys.readouterr().err
    assert main(["generate", "--identity", EX, "--sampler", "heun", "--method", "sdedit", "--dry-run"]) == 0
    assert json.loads(capsys.readouterr().out)["sampler"] == "heun"
    assert main(["generate", "--identity", EX, "--sampler", "euler", "--dry-run"]) == 0
    assert json.loads(capsys.readouterr().out)["sampler"] == "euler"


def test_unknown_sampler(generate):
    msg = generate("--identity", EX, "--sampler", "ddim")
    assert "unknown sampler 'ddim'" in msg and "euler" in msg and "dpmpp_2m" in msg


def test_dry_run_validates_settings_but_reads_no_photo(no_model_load, capsys):
    assert main(["generate", "--identity", EX, "--expression", "elation", "--dry-run"]) == 0
    assert '"request"' in capsys.readouterr().out
    assert main(["generate", "--identity", EX, "--sampler", "ddim", "--dry-run"]) == 2
    assert "unknown sampler" in capsys.readouterr().err
    assert not no_model_load


def test_a_like_request_is_described_in_the_metadata_as_its_dry_run_describes_it(no_model_load, capsys):
    """The dry run said "like ref.jpg, ..." while the images' metadata and sheet said "like reference, ...";
    both name the photo given."""
    from types import SimpleNamespace

    from mien.cli.generate import build_request

    for flags in ([], ["--expression", "happy", "--intensity", "0.5"]):
        assert main(["generate", "--identity", EX, "--like", EX, *flags, "--dry-run"]) == 0
        said = json.loads(capsys.readouterr().out)["request"]
        args = SimpleNamespace(expression=None, intensity=None, au=None, like=EX)
        if flags:
            args.expression, args.intensity = "happy", 0.5
        request = build_request(args, like=np.zeros(52, np.float32))  # the run's, once the photo is measured
        assert request.describe() == said and said.startswith(f"like {EX}")
    assert not no_model_load


def test_dry_run_finds_a_photo_that_is_not_there(no_model_load, capsys, photos):
    """A dry run said all was well for a mistyped path; it reads no photo but checks that each is there, and a
    missing identity photo among several is skipped as the run skips it (exit 1)."""
    missing = str(photos / "mistyped.jpg")
    for flags in (["--identity", missing], ["--identity", EX, "--like", missing], ["--identity", EX, "--into", missing]):
        assert main(["generate", *flags, "--expression", "happy", "--dry-run"]) == 2
        assert one_line_error(2, capsys.readouterr().err) == f"{missing}: no such file; check the path"
    assert main(["generate", "--identity", str(photos / "a_folder"), "--dry-run"]) == 2
    assert "is a folder, not a photo" in capsys.readouterr().err
    assert main(["generate", "--identity", EX, missing, "--expression", "happy", "--dry-run"]) == 1
    res = capsys.readouterr()
    assert json.loads(res.out)["request"] == "happy 1.00"
    assert f"mien: skipped {missing}: no such file" in res.err and "1 of 2 identity photos skipped" in res.err
    assert not no_model_load


# --- the model folder -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Path:
    """Broken copies of the built-in model folder."""
    src = default_model_dir()
    config, weights = (src / "config.json").read_text(), (src / "model.safetensors").read_bytes()
    d = tmp_path_factory.mktemp("models")
    for name in ("truncated", "garbage", "bad_config", "no_weights", "no_config", "extra_bytes"):
        (d / name).mkdir()
    (d / "truncated" / "config.json").write_text(config)
    (d / "truncated" / "model.safetensors").write_bytes(weights[: len(weights) // 2])
    (d / "garbage" / "config.json").write_text(config)
    (d / "garbage" / "model.safetensors").write_bytes(b"this is not a safetensors file")
    (d / "bad_config" / "config.json").write_text(config[: len(config) // 2])
    (d / "bad_config" / "model.safetensors").write_bytes(weights)
    (d / "no_weights" / "config.json").write_text(config)
    (d / "no_config" / "model.safetensors").write_bytes(weights)
    (d / "extra_bytes" / "config.json").write_text(config)
    (d / "extra_bytes" / "model.safetensors").write_bytes(weights + b"\0" * 1000)
    return d


@pytest.mark.parametrize("name, words", [
    ("does_not_exist", ["does_not_exist", "no such folder"]),
    ("no_weights", ["model.safetensors", "missing"]),
    ("no_config", ["config.json", "missing"]),
    ("truncated", ["model.safetensors", "truncated or corrupt"]),
    ("garbage", ["model.safetensors", "truncated or corrupt"]),
    ("extra_bytes", ["model.safetensors", "truncated or corrupt"]),
    ("bad_config", ["config.json", "not valid JSON"]),
])
def test_broken_model_folder(generate, models, name, words):
    msg = generate("--identity", EX, "--expression", "happy", "--model", str(models / name))
    for w in words:
        assert w in msg, msg
    assert "--model" in msg  # what to do


def test_built_in_model_folder_passes_the_check():
    from mien.cli.generate import check_model_dir

    check_model_dir("default")
    check_model_dir(str(default_model_dir()))


# --- the real command -----------------------------------------------------------------------------

def mien(*args):
    env = {k: v for k, v in os.environ.items() if k != "MIEN_DEBUG"}
    return subprocess.run([sys.executable, "-m", "mien", *args], capture_output=True, text=True, env=env)


def test_cli_unknown_term_one_line_no_traceback(tmp_path):
    r = mien("generate", "--identity", EX, "--expression", "elatoin", "--out", str(tmp_path / "out"))
    msg = one_line_error(r.returncode, r.stderr)
    assert r.returncode == 2 and "did you mean elation" in msg and r.stdout == ""


def test_cli_truncated_model_one_line_no_traceback(models, tmp_path):
    r = mien("generate", "--identity", EX, "--model", str(models / "truncated"), "--out", str(tmp_path / "out"))
    msg = one_line_error(r.returncode, r.stderr)
    assert r.returncode == 2 and "truncated or corrupt" in msg and "internal error" not in r.stderr


# --- photos with no face (need the pretrained face models) ----------------------------------------

@pytest.mark.shared
def test_cli_photo_with_no_face(shared_dir, photos, tmp_path):
    r = mien("generate", "--identity", str(photos / "blank.png"), "--expression", "happy", "--steps", "1",
             "--out", str(tmp_path / "out"))
    msg = one_line_error(r.returncode, r.stderr)
    assert "no usable face" in msg and "blank.png" in msg and "frontal" in msg
    assert not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def loaded_pipe(shared_dir):
    pipe = MienPipeline.from_pretrained()
    yield pipe
    pipe.close()


@pytest.fixture
def reuse_pipe(loaded_pipe, monkeypatch, capsys):
    """`mien generate` in-process on one pipeline loaded for the module (loading takes seconds)."""
    monkeypatch.delenv("MIEN_DEBUG", raising=False)
    monkeypatch.setattr(MienPipeline, "from_pretrained", classmethod(lambda cls, *a, **k: loaded_pipe))
    monkeypatch.setattr(loaded_pipe, "close", lambda: None)

    def run(*args):
        code = main(["generate", *args])
        return code, capsys.readouterr()

    return run


@pytest.mark.shared
def test_photo_with_no_face_is_found_before_the_model_loads(shared_dir, generate, photos):
    msg = generate("--identity", str(photos / "blank.png"), "--expression", "happy")
    assert "no usable face" in msg and "blank.png" in msg


@pytest.mark.shared
def test_like_photo_with_no_face_is_named(shared_dir, generate, photos):
    msg = generate("--identity", EX, "--like", str(photos / "blank.png"))
    assert msg.startswith(f"--like {photos / 'blank.png'}: no face found")


@pytest.mark.shared
def test_bad_photos_among_good_ones_are_skipped_by_the_batch_rule(reuse_pipe, photos, tmp_path):
    """A face-less and an unreadable --identity photo beside a good one: each skipped with one message, the
    images made from the good one, a summary line, exit 1 (done, some skipped)."""
    out = tmp_path / "out"
    code, res = reuse_pipe("--identity", str(photos / "blank.png"), str(photos / "not_an_image.jpg"), EX,
                           "--expression", "happy", "--steps", "1", "--out", str(out))  # fmt: skip
    assert code == 1, res.err
    assert "Traceback" not in res.err
    lines = res.err.strip().splitlines()
    skipped = sorted(line for line in lines if line.startswith("mien: skipped"))  # unreadable, then face-less
    assert len(skipped) == 2 and "blank.png" in skipped[0] and "no face" in skipped[0], lines
    assert "not_an_image.jpg" in skipped[1] and "not an image" in skipped[1] and skipped[1].count("not_an_image") == 1
    assert "mien: 2 of 3 identity photos skipped" in lines[-1], lines  # (after the progress bar's last state)
    assert (out / "000_seed0.png").is_file() and (out / "sheet.png").is_file()
    # the face is also put back into the photo it was edited from: the first usable one, not blank.png
    from PIL import Image

    with Image.open(out / "000_seed0_photo.png") as pasted, Image.open(EX) as example:
        assert pasted.size == example.size


# --- several identity photos must show one person (the check mien personalize applies) ------------------

SMILING = str(example_path().with_name("london_001_smiling.jpg"))  # the example person again, smiling


@pytest.fixture(scope="module")
def someone_else(shared_dir, tmp_path_factory) -> str:
    """A London Set photo of another person (london_002, the dev split of ../shared/data/faces128)."""
    import tarfile

    path = tmp_path_factory.mktemp("london") / "london_002.jpg"
    with tarfile.open(shared_dir / "data" / "faces128" / "dev.tar") as tar:
        path.write_bytes(tar.extractfile("london_002_neutral.raw.jpg").read())
    return str(path)


@pytest.mark.shared
def test_identity_photos_of_two_people_are_refused_not_averaged(reuse_pipe, someone_else, tmp_path):
    code, res = reuse_pipe("--identity", EX, someone_else, "--expression", "happy", "--steps", "1",
                           "--out", str(tmp_path / "out"))  # fmt: skip
    msg = one_line_error(code, res.err)
    assert code == 2 and msg.startswith("the photos do not show one person") and "london_002.jpg" in msg, msg
    assert "london_001_neutral.jpg" in msg and "give photos of one person only" in msg
    assert not list((tmp_path / "out").glob("*.png"))


@pytest.mark.shared
def test_a_photo_of_someone_else_is_skipped_as_personalize_skips_it(reuse_pipe, someone_else, tmp_path):
    """Two photos of the example person and one of another: the other is skipped with personalize's own
    message (mien.face.one_person), the images are made from the person's photos, exit 1."""
    out = tmp_path / "out"
    code, res = reuse_pipe("--identity", EX, someone_else, SMILING, "--expression", "happy", "--steps", "1",
                           "--out", str(out))  # fmt: skip
    lines = res.err.strip().splitlines()
    skipped = [line for line in lines if line.startswith("mien: skipped")]
    assert code == 1 and len(skipped) == 1, res.err
    assert skipped[0].startswith(f"mien: skipped {someone_else}: another person (face-api distance "), skipped
    assert skipped[0].endswith(", same person below 0.6)"), skipped
    assert "mien: 1 of 3 identity photos skipped" in lines[-1], lines
    assert (out / "000_seed0.png").is_file()


@pytest.mark.shared
def test_two_photos_of_one_person_pass_the_check(reuse_pipe, loaded_pipe, someone_else, tmp_path):
    from mien.errors import MienError
    from mien.io.image import load_rgb

    code, res = reuse_pipe("--identity", EX, SMILING, "--expression", "happy", "--steps", "1",
                           "--out", str(tmp_path / "out"))  # fmt: skip
    assert code == 0 and "skipped" not in res.err, res.err
    with pytest.raises(MienError, match="do not show one person"):  # the library workflow applies it too
        loaded_pipe.prepare_identity([load_rgb(EX), load_rgb(someone_else)])


def test_contrast_guidance_defaults_per_label_and_bad_values(no_model_load, generate, capsys):
    """--dry-run shows the guidance a request will get: the under-drawn labels (and terms built on them)
    are pushed and get the larger recogniser guidance; --guidance-contrast overrides; bad values and
    sdedit are one-line errors before any model loads."""
    import json

    from mien.settings import RECOGNISER_GUIDANCE, RECOGNISER_GUIDANCE_WITH_CONTRAST

    d = {"recogniser_guidance": RECOGNISER_GUIDANCE, "recogniser_guidance_contrast": RECOGNISER_GUIDANCE_WITH_CONTRAST}

    def dry(*args):
        assert main(["generate", "--identity", EX, "--dry-run", *args]) == 0
        out = json.loads(capsys.readouterr().out)
        return out["guidance_contrast"], out["recogniser_guidance"]

    assert dry("--expression", "angry") == (1.5, d["recogniser_guidance_contrast"])
    assert dry("--expression", "furious") == (1.5, d["recogniser_guidance_contrast"])
    assert dry("--expression", "happy") == (1.0, d["recogniser_guidance"])
    assert dry("--expression", "angry", "--guidance-contrast", "1") == (1.0, d["recogniser_guidance"])
    assert dry("--expression", "happy", "--guidance-contrast", "2", "--recogniser-guidance", "0.1") == (2.0, 0.1)
    assert "out of range" in generate("--identity", EX, "--expression", "sad", "--guidance-contrast", "0.5")
    assert "works with --method flowedit" in generate("--identity", EX, "--method", "sdedit", "--guidance-contrast", "2")
