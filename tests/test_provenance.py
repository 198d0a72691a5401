"""Provenance: metadata in every written image, the watermark's round trip, `mien verify`."""

import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from mien import watermark
from mien.errors import MienError
from mien.io.image import load_rgb
from mien.io.provenance import COMPOSITE, read_provenance, save_image


@pytest.fixture(scope="module")
def photo():
    from mien.cli.analyze import example_path

    return load_rgb(example_path())  # the bundled London Set photo (CC BY 4.0)


def _jpeg(rgb, quality=75):
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=quality)
    return np.asarray(Image.open(buf).convert("RGB"))


def _half(rgb):
    h, w = rgb.shape[:2]
    return np.asarray(Image.fromarray(rgb).resize((w // 2, h // 2), Image.BICUBIC))


META = {"request": "happy", "seed": 7, "model_hash": "b03767293e85", "face": 0}


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".webp"])
def test_metadata_round_trip(tmp_path, photo, suffix):
    path = save_image(tmp_path / f"out{suffix}", photo, META, source=COMPOSITE)
    prov = read_provenance(path)
    rec = prov.record
    assert rec is not None and {k: rec[k] for k in META} == META
    assert rec["software"] == "mien" and rec["version"] and rec["digital_source_type"] == COMPOSITE
    assert prov.watermark.found
    with Image.open(path) as im:  # the XMP packet other tools read names the IPTC source type
        xmp = im.info.get("xmp") or im.info.get("XML:com.adobe.xmp")
        xmp = xmp.decode() if isinstance(xmp, bytes) else xmp
        assert "digitalsourcetype/compositeWithTrainedAlgorithmicMedia" in xmp


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (a disk that is always full)")
@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_a_full_disk_is_a_one_line_error_and_leaves_no_image(tmp_path, photo, suffix):
    """Was an OSError, an internal error in mien generate with the image computed lost."""
    path = tmp_path / f"out{suffix}"
    path.symlink_to("/dev/full")  # every write fails with ENOSPC
    with pytest.raises(MienError, match=f"out{suffix}: cannot write the image \\(No space left on device\\); free"):
        save_image(path, photo, META)
    assert not path.exists() and not path.is_symlink()


def test_save_refuses_an_unknown_format(tmp_path, photo):
    with pytest.raises(MienError, match=r"\.gif"):
        save_image(tmp_path / "out.gif", photo, META)


def test_watermark_survives_jpeg_resize_and_crop_and_is_invisible(photo):
    marked = watermark.embed(photo)
    psnr = 10 * np.log10(255**2 / np.mean((marked.astype(float) - photo) ** 2))
    assert psnr > 40
    h, w = photo.shape[:2]
    attacked = {
        "jpeg75": _jpeg(marked),
        "half": _half(marked),
        "half+jpeg75": _jpeg(_half(marked)),
        "crop10": marked[h // 20: h - h // 20 - 3, w // 10: w - 1],
    }
    for name, img in attacked.items():
        assert watermark.detect(img).found, name
    # the same edits of the unmarked photo stay below the threshold
    assert not watermark.detect(photo).found
    assert not watermark.detect(_jpeg(_half(photo))).found


def test_watermark_on_a_128px_crop_survives_jpeg_and_half_size(photo):
    crop = np.asarray(Image.fromarray(photo).resize((128, 128), Image.LANCZOS))
    marked = watermark.embed(crop)
    assert watermark.detect(_jpeg(marked)).found and watermark.detect(_half(marked)).found
    assert not watermark.detect(crop).found


def mien(*args):
    return subprocess.run([sys.executable, "-m", "mien", *args], capture_output=True, text=True)


def test_verify_batch_reports_each_image_and_continues_past_bad_files(tmp_path, photo):
    unmarked = tmp_path / "photo.jpg"
    Image.fromarray(photo).save(unmarked, quality=90)
    marked = save_image(tmp_path / "made.png", photo, META)
    stripped = tmp_path / "stripped.jpg"  # metadata gone, pixels re-compressed: the mark still answers
    Image.fromarray(_jpeg(load_rgb(marked))).save(stripped, quality=75)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    r = mien("verify", str(unmarked), str(broken), str(marked), str(stripped))
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 4, r.stdout + r.stderr
    assert lines[0].startswith(f"{unmarked}: not marked")
    assert lines[1] == f"{broken}: error: not an image file mien can read (JPEG, PNG, WebP, BMP, TIFF, GIF)"
    assert "Traceback" not in r.stderr
    assert lines[2].startswith(f"{marked}: marked by mien") and "model b03767293e85" in lines[2]
    assert lines[3].startswith(f"{stripped}: marked by mien") and "no mien metadata" in lines[3]
    assert "4 images: 2 marked, 1 not marked, 0 metadata only, 1 unreadable" in r.stderr
    assert r.returncode == 2


def test_verify_exit_codes_and_json(tmp_path, photo):
    unmarked = tmp_path / "photo.png"
    Image.fromarray(photo).save(unmarked)
    r = mien("verify", str(unmarked))
    assert r.returncode == 1 and "not marked" in r.stdout
    marked = save_image(tmp_path / "made.jpg", photo, META)
    r = mien("verify", "--json", str(marked))
    assert r.returncode == 0
    obj = json.loads(r.stdout)
    assert obj["status"] == "marked" and obj["metadata"]["seed"] == 7
