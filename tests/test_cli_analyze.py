"""`mien analyze` end to end: the JSON schema, bad input, and the batch behaviour.

One subprocess run analyses a folder of good and deliberately broken photos (built here from the
bundled London Set example), so the slow model loading happens once.
"""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mien.cli.analyze import example_path

pytestmark = pytest.mark.shared


def mien(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "mien", *args], capture_output=True, text=True, cwd=cwd)


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("photos")
    im = Image.open(example_path()).convert("RGB")
    im.save(d / "good.jpg", quality=95)
    im.convert("L").save(d / "grey.png")
    im.convert("CMYK").save(d / "cmyk.jpg", quality=95)
    # Stored rotated 90° with an EXIF orientation tag (6 = rotate 90° CW to view) that puts it upright.
    exif = Image.Exif()
    exif[0x0112] = 6
    im.rotate(90, expand=True).save(d / "exif_rotated.jpg", exif=exif, quality=95)
    pair = Image.new("RGB", (1024, 512))
    pair.paste(im, (0, 0))
    pair.paste(im.resize((400, 400)), (560, 56))
    pair.save(d / "two_faces.jpg", quality=95)
    im.resize((48, 48), Image.LANCZOS).save(d / "tiny_face.png")
    Image.fromarray(np.full((300, 300, 3), 128, np.uint8)).save(d / "no_face.png")
    Image.fromarray(np.full((1, 1, 3), 128, np.uint8)).save(d / "one_pixel.png")
    (d / "not_an_image.jpg").write_text("hello, I am text")
    data = (d / "good.jpg").read_bytes()
    (d / "truncated.jpg").write_bytes(data[: len(data) // 3])
    # A 20,000 x 20,000 image (400 MP) that compresses to a few kilobytes: a decompression bomb.
    Image.new("1", (20000, 20000)).save(d / "bomb.png")
    return d


@pytest.fixture(scope="module")
def batch(photos):
    r = mien("analyze", str(photos), "--json", "--out", str(photos.parent / "out"))
    return r, json.loads(r.stdout) if r.stdout.strip() else None


def by_name(doc, name):
    return next(p for p in doc["photos"] if Path(p["path"]).name == name)


def test_batch_continues_past_bad_files_and_exits_one(batch):
    """The batch rule: each bad photo skipped with one message, a summary, exit 1 (some skipped)."""
    r, doc = batch
    assert r.returncode == 1, r.stderr
    assert "Traceback" not in r.stderr
    assert len(doc["photos"]) == 11
    failed = {Path(p["path"]).name for p in doc["photos"] if "error" in p}
    assert failed == {"not_an_image.jpg", "truncated.jpg", "bomb.png", "no_face.png", "tiny_face.png", "one_pixel.png"}
    for name in failed:  # one message each, none repeated
        assert sum(name in line for line in r.stderr.splitlines() if line.startswith("mien: skipped")) == 1, r.stderr
    assert "mien: 6 of 11 photos skipped" in r.stderr.strip().splitlines()[-1]


def test_error_messages_say_what_and_what_to_do(batch):
    _, doc = batch
    assert "not an image" in by_name(doc, "not_an_image.jpg")["error"]
    assert "truncated" in by_name(doc, "truncated.jpg")["error"]
    assert "MP" in by_name(doc, "bomb.png")["error"] and "downscale" in by_name(doc, "bomb.png")["error"]
    assert "no face" in by_name(doc, "no_face.png")["error"]
    assert any(w in by_name(doc, "tiny_face.png")["error"] for w in ("too small", "no face"))
    assert "too small" in by_name(doc, "one_pixel.png")["error"] and "1x1" in by_name(doc, "one_pixel.png")["error"]


def test_json_schema(batch):
    _, doc = batch
    face = by_name(doc, "good.jpg")["faces"][0]
    assert set(face) == {"box", "identity", "expression", "blendshapes", "pose"}
    assert len(face["box"]) == 4 and face["box"][0] < face["box"][2] and face["box"][1] < face["box"][3]
    assert len(face["identity"]["faceapi"]) == 128 and len(face["identity"]["mobilefacenet"]) == 192
    assert set(face["expression"]) == {"neutral", "happy", "sad", "angry", "fearful", "disgusted", "surprised"}
    assert abs(sum(face["expression"].values()) - 1) < 1e-3
    assert len(face["blendshapes"]) == 52 and "jawOpen" in face["blendshapes"]
    assert set(face["pose"]) == {"yaw", "pitch", "roll"}


def test_colour_modes_and_exif_give_the_same_person(batch):
    _, doc = batch
    ref = np.array(by_name(doc, "good.jpg")["faces"][0]["identity"]["faceapi"])
    for name in ("grey.png", "cmyk.jpg", "exif_rotated.jpg"):
        face = by_name(doc, name)["faces"][0]
        d = np.linalg.norm(np.array(face["identity"]["faceapi"]) - ref)
        assert d < 0.6, (name, d)  # dlib's same-person threshold
    # EXIF honoured: the face is upright, so roll is small, as in the original.
    assert abs(by_name(doc, "exif_rotated.jpg")["faces"][0]["pose"]["roll"]) < 10


def test_several_faces_warns_and_uses_largest(batch):
    r, doc = batch
    entry = by_name(doc, "two_faces.jpg")
    assert len(entry["faces"]) == 1
    assert any("faces found" in w for w in entry["warnings"])
    assert entry["faces"][0]["box"][0] < 512  # the larger face is on the left
    assert "two_faces.jpg" in r.stderr and "--all-faces" in r.stderr


def test_out_writes_annotated_image_and_json(batch, photos):
    out = photos.parent / "out"
    assert (out / "good.png").is_file() and (out / "good.json").is_file()
    assert Image.open(out / "good.png").size == Image.open(photos / "good.jpg").size
    assert not (out / "not_an_image.json").exists()


def test_out_follows_generates_rule_refused_when_an_earlier_analysis_is_there_unless_overwrite(photos, tmp_path):
    """A rerun into the same --out wrote good-2.png/json beside the first run's files; it is refused (one line,
    before any model loads) as `mien generate --out` is, and --overwrite replaces the earlier analysis. Two photos
    of one run with the same name still get -2."""
    out = tmp_path / "out"
    (tmp_path / "b").mkdir()
    Image.open(photos / "good.jpg").save(tmp_path / "b" / "good.jpg")
    first = mien("analyze", str(photos / "good.jpg"), str(tmp_path / "b" / "good.jpg"), "--out", str(out))
    assert first.returncode == 0, first.stderr
    assert sorted(p.name for p in out.iterdir()) == ["good-2.json", "good-2.png", "good.json", "good.png"]
    (out / "notes.json").write_text('{"mine": 1}')  # not an analysis: kept
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    again = mien("analyze", str(photos / "good.jpg"), "--out", str(out))
    assert again.returncode == 2 and again.stderr.strip() == (
        f"mien: error: --out {out} already holds 4 file(s) of an earlier analysis (good-2.json, ...); add "
        "--overwrite to replace them, or choose another folder")
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before
    replaced = mien("analyze", str(photos / "good.jpg"), "--out", str(out), "--overwrite")
    assert replaced.returncode == 0, replaced.stderr
    assert sorted(p.name for p in out.iterdir()) == ["good.json", "good.png", "notes.json"]
    assert json.loads((out / "good.json").read_text())["path"] == str(photos / "good.jpg")
    assert mien("analyze", str(photos / "good.jpg"), "--overwrite").returncode == 2  # nothing to replace


def test_out_in_an_input_folder_is_refused_before_it_can_replace_a_photo(photos, tmp_path):
    """`--out` the photos' own folder wrote each annotated PNG over the input PNG of the same name (and --overwrite
    could delete one before it was read); `--out` inside a searched folder was read back as photos on a rerun."""
    Image.open(photos / "good.jpg").save(tmp_path / "face.png")
    before = (tmp_path / "face.png").read_bytes()
    same = mien("analyze", str(tmp_path / "face.png"), "--out", str(tmp_path))
    assert same.returncode == 2 and "Traceback" not in same.stderr and "face.png" in same.stderr
    assert (tmp_path / "face.png").read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["face.png"]
    inside = mien("analyze", str(tmp_path), "--out", str(tmp_path / "sub" / "out"))
    assert inside.returncode == 2 and "searches" in inside.stderr and not (tmp_path / "sub").exists()


def test_all_faces(photos):
    r = mien("analyze", str(photos / "two_faces.jpg"), "--json", "--all-faces")
    assert r.returncode == 0, r.stderr
    assert len(json.loads(r.stdout)["photos"][0]["faces"]) == 2


def test_nothing_analysable_exits_nonzero_without_traceback(photos):
    r = mien("analyze", str(photos / "not_an_image.jpg"), str(photos / "no_face.png"))
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    assert "not_an_image.jpg" in r.stderr


def test_missing_file_and_no_arguments():
    r = mien("analyze", "/nonexistent/photo.jpg")
    assert r.returncode != 0 and "no such file" in r.stderr and "Traceback" not in r.stderr
    r = mien("analyze")
    assert r.returncode != 0 and "--example" in r.stderr and "Traceback" not in r.stderr


def test_a_folder_without_images_is_named(tmp_path):
    """Was "no photos given", though a folder was given."""
    (tmp_path / "notes.txt").write_text("not a photo")
    r = mien("analyze", str(tmp_path))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip() == f"mien: error: no image files in {tmp_path}; mien reads .bmp, .gif, .jpeg, .jpg, " \
                               ".png, .tif, .tiff, .webp (folders are searched, subfolders too)"


def test_help_teaches():
    r = mien("--help")
    assert r.returncode == 0 and "analyze" in r.stdout and "weights" in r.stdout
    r = mien("analyze", "--help")
    assert r.returncode == 0
    for flag in ("--json", "--out", "--all-faces", "--example", "examples:"):
        assert flag in r.stdout
